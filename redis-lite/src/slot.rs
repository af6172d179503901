//! Cluster key slots: CRC16 (XMODEM) of the key, or of its `{hash tag}`, mod 16384.

/// The number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC16: [u16; 256] = crc16_table();

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The part of a key that is hashed: the text between the first `{` and the
/// next `}` if that is non-empty, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The slot a key (or a sharded channel name) belongs to.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOT_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_slots() {
        // Values from `redis-cli CLUSTER KEYSLOT` and the Redis Cluster spec.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"foo{}{bar}"),
            "empty tag hashes the whole key"
        );
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(key_slot(b"8xjx7vWrfPq54mKfFD3Y1CcjjofpnAcQ"), 5458);
    }

    proptest::proptest! {
        /// redis-protocol ships an independent implementation: both must agree.
        #[test]
        fn agrees_with_redis_protocol(key in proptest::collection::vec(proptest::num::u8::ANY, 0..48)) {
            proptest::prop_assert_eq!(key_slot(&key), redis_protocol::redis_keyslot(&key));
        }

        #[test]
        fn tags_share_slots(tag in "[a-z0-9]{1,12}", a in "[a-z]{0,8}", b in "[a-z]{0,8}") {
            let k1 = format!("{a}{{{tag}}}x");
            let k2 = format!("{b}{{{tag}}}y");
            proptest::prop_assert_eq!(key_slot(k1.as_bytes()), key_slot(k2.as_bytes()));
        }
    }
}
