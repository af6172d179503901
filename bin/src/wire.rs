//! What one server publishes to another through Redis: a batch of
//! `message` frames, each exactly as local clients get it, behind a small
//! header that says who published the batch and whom each frame is for.
//!
//! ```text
//! batch:  version 2 (1) | origin length (1) | origin | record count (4, BE) | record…
//! record: kind (1: U, T, A) | name length (2, BE) | name | frame length (4, BE) | frame
//! ```
//!
//! The relay gathers everything bound for one channel in a loop turn into
//! one batch, so one PUBLISH carries many messages under load ([`Batch`]
//! caps its size, keeping latency and memory bounded). The origin lets a
//! server drop its own publishes when Redis echoes them back (it subscribes
//! to the topic channels it publishes on). Frames are the encoded JSON
//! text, so a receiving server slices them out of the Redis payload and
//! shares them with its cores, without parsing or copying.
//!
//! Version 1 (one record, no count or frame length: `1 | origin length |
//! origin | kind | name length | name | frame`) is still decoded, so
//! servers of the previous release are understood during a rolling upgrade.

use bytes::{BufMut, Bytes, BytesMut};

const VERSION_1: u8 = 1;
const VERSION: u8 = 2;

/// The payload size past which a batch takes no more records: large enough
/// that a full batch amortises a publish over hundreds of messages, small
/// enough that Redis and every subscriber handle it in tens of microseconds.
pub const MAX_BATCH_BYTES: usize = 128 * 1024;

/// Who a relayed message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    User(&'a str),
    Topic(&'a str),
    Everyone,
}

impl<'a> Audience<'a> {
    fn kind_and_name(self) -> (u8, &'a str) {
        match self {
            Audience::User(u) => (b'U', u),
            Audience::Topic(t) => (b'T', t),
            Audience::Everyone => (b'A', ""),
        }
    }
}

/// One relayed message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub audience: Audience<'a>,
    /// The `message` frame's JSON text, a slice of the payload.
    pub frame: Bytes,
}

/// A decoded payload: every record checked before any is handed out, so a
/// malformed batch delivers nothing rather than a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed<'a> {
    pub origin: &'a str,
    pub records: Vec<Record<'a>>,
}

/// Why a payload was not a relayed batch (a foreign publisher on our
/// channels, a newer version, or damage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown relay format version {0}")]
    Version(u8),
    #[error("truncated relay payload")]
    Truncated,
    #[error("relay header is not UTF-8")]
    NotUtf8,
    #[error("unknown audience kind {0:#x}")]
    Kind(u8),
    #[error("{0} bytes after the last record of a relay batch")]
    Trailing(usize),
}

/// A batch being filled for one channel.
#[derive(Debug)]
pub struct Batch {
    buf: BytesMut,
    count: u32,
}

impl Batch {
    /// An empty batch from `origin` (server ids are capped at 64 bytes, so
    /// the 255-byte cut never happens in practice).
    pub fn new(origin: &str) -> Batch {
        let origin = &origin.as_bytes()[..origin.len().min(255)];
        let mut buf = BytesMut::with_capacity(512);
        buf.put_u8(VERSION);
        buf.put_u8(origin.len() as u8);
        buf.put_slice(origin);
        buf.put_u32(0);
        Batch { buf, count: 0 }
    }

    /// Appends one message. Names are capped at 256 bytes by the protocol,
    /// frames by the message size limit, far below the length fields.
    pub fn push(&mut self, audience: Audience<'_>, frame: &[u8]) {
        let (kind, name) = audience.kind_and_name();
        let name = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
        let frame = &frame[..frame.len().min(u32::MAX as usize)];
        self.buf.reserve(7 + name.len() + frame.len());
        self.buf.put_u8(kind);
        self.buf.put_u16(name.len() as u16);
        self.buf.put_slice(name);
        self.buf.put_u32(frame.len() as u32);
        self.buf.put_slice(frame);
        self.count += 1;
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True once the batch should be published before it takes more.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= MAX_BATCH_BYTES
    }

    /// The payload to publish.
    pub fn finish(mut self) -> Bytes {
        let at = 2 + usize::from(self.buf[1]);
        self.buf[at..at + 4].copy_from_slice(&self.count.to_be_bytes());
        self.buf.freeze()
    }
}

/// Encodes a single message as a batch of one.
pub fn encode(origin: &str, audience: Audience<'_>, frame: &[u8]) -> Bytes {
    let mut batch = Batch::new(origin);
    batch.push(audience, frame);
    batch.finish()
}

/// A cursor over a payload that fails with [`WireError::Truncated`].
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(WireError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn str(&mut self, n: usize) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| WireError::NotUtf8)
    }

    fn audience(&mut self) -> Result<Audience<'a>, WireError> {
        let kind = self.u8()?;
        let len = usize::from(self.u16()?);
        let name = self.str(len)?;
        match kind {
            b'U' => Ok(Audience::User(name)),
            b'T' => Ok(Audience::Topic(name)),
            b'A' => Ok(Audience::Everyone),
            other => Err(WireError::Kind(other)),
        }
    }
}

/// Decodes a payload; every frame is a slice of `payload` (no copy).
pub fn decode(payload: &Bytes) -> Result<Relayed<'_>, WireError> {
    let mut r = Reader {
        bytes: payload,
        at: 0,
    };
    let version = r.u8()?;
    if version != VERSION && version != VERSION_1 {
        return Err(WireError::Version(version));
    }
    let origin_len = usize::from(r.u8()?);
    let origin = r.str(origin_len)?;
    if version == VERSION_1 {
        let audience = r.audience()?;
        let frame = payload.slice(r.at..);
        return Ok(Relayed {
            origin,
            records: vec![Record { audience, frame }],
        });
    }
    let count = r.u32()? as usize;
    // Each record takes at least 7 bytes: a count the payload can't hold
    // is refused before anything is allocated for it.
    if count > (payload.len() - r.at) / 7 {
        return Err(WireError::Truncated);
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let audience = r.audience()?;
        let len = r.u32()? as usize;
        let start = r.at;
        r.take(len)?;
        records.push(Record {
            audience,
            frame: payload.slice(start..r.at),
        });
    }
    match payload.len() - r.at {
        0 => Ok(Relayed { origin, records }),
        extra => Err(WireError::Trailing(extra)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const FRAME: &[u8] = br#"{"type":"message","from":"a","to":"b","data":1,"ts":1}"#;

    #[test]
    fn round_trips_every_audience() {
        for audience in [
            Audience::User("bob"),
            Audience::Topic("room:é"),
            Audience::Everyone,
        ] {
            let bytes = encode("server-1", audience, FRAME);
            let relayed = decode(&bytes).unwrap();
            assert_eq!(relayed.origin, "server-1");
            assert_eq!(relayed.records.len(), 1);
            assert_eq!(relayed.records[0].audience, audience);
            assert_eq!(&relayed.records[0].frame[..], FRAME);
        }
    }

    #[test]
    fn frames_are_slices_of_the_payload() {
        let mut batch = Batch::new("s");
        batch.push(Audience::User("bob"), FRAME);
        batch.push(Audience::Topic("t"), b"{}");
        let payload = batch.finish();
        let relayed = decode(&payload).unwrap();
        let range = payload.as_ptr_range();
        for record in &relayed.records {
            assert!(range.contains(&record.frame.as_ptr()), "copied: {record:?}");
        }
    }

    #[test]
    fn the_previous_version_is_still_understood() {
        let mut v1 = vec![1, 2, b's', b'1', b'U', 0, 3, b'b', b'o', b'b'];
        v1.extend_from_slice(FRAME);
        let v1 = Bytes::from(v1);
        let relayed = decode(&v1).unwrap();
        assert_eq!(relayed.origin, "s1");
        assert_eq!(
            relayed.records,
            vec![Record {
                audience: Audience::User("bob"),
                frame: Bytes::from_static(FRAME),
            }]
        );
    }

    #[test]
    fn foreign_truncated_and_padded_payloads_are_refused() {
        assert_eq!(decode(&Bytes::from_static(b"")), Err(WireError::Truncated));
        assert_eq!(
            decode(&Bytes::from_static(b"hello")),
            Err(WireError::Version(b'h'))
        );
        let mut batch = Batch::new("s");
        batch.push(Audience::User("bob"), b"{}");
        batch.push(Audience::Everyone, b"{}");
        let full = batch.finish();
        for cut in 0..full.len() {
            assert!(decode(&full.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut padded = full.to_vec();
        padded.push(0);
        assert_eq!(decode(&Bytes::from(padded)), Err(WireError::Trailing(1)));
        let mut bad = full.to_vec();
        bad[7] = b'Z'; // the first record's kind
        assert_eq!(decode(&Bytes::from(bad)), Err(WireError::Kind(b'Z')));
        let mut huge = full.to_vec();
        huge[3..7].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&Bytes::from(huge)), Err(WireError::Truncated));
    }

    #[test]
    fn a_batch_is_full_past_its_size_bound() {
        let mut batch = Batch::new("s");
        let frame = vec![b'x'; 1000];
        while !batch.is_full() {
            batch.push(Audience::User("u"), &frame);
        }
        assert!(batch.len() >= MAX_BATCH_BYTES / 1010);
        let payload = batch.finish();
        assert!(payload.len() < MAX_BATCH_BYTES + 1010);
    }

    fn audience() -> impl Strategy<Value = (u8, String)> {
        (
            prop_oneof![Just(b'U'), Just(b'T'), Just(b'A')],
            "\\PC{0,20}",
        )
            .prop_map(|(k, n)| {
                if k == b'A' {
                    (k, String::new())
                } else {
                    (k, n)
                }
            })
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(
            origin in "[a-z0-9-]{0,64}",
            records in prop::collection::vec(
                (audience(), prop::collection::vec(any::<u8>(), 0..200)),
                0..40,
            ),
        ) {
            let mut batch = Batch::new(&origin);
            for ((kind, name), frame) in &records {
                let audience = match kind {
                    b'U' => Audience::User(name),
                    b'T' => Audience::Topic(name),
                    _ => Audience::Everyone,
                };
                batch.push(audience, frame);
            }
            prop_assert_eq!(batch.len(), records.len());
            let payload = batch.finish();
            let relayed = decode(&payload).unwrap();
            prop_assert_eq!(relayed.origin, origin.as_str());
            prop_assert_eq!(relayed.records.len(), records.len());
            for (got, ((kind, name), frame)) in relayed.records.iter().zip(&records) {
                let (k, n) = got.audience.kind_and_name();
                prop_assert_eq!((k, n), (*kind, name.as_str()));
                prop_assert_eq!(&got.frame[..], &frame[..]);
            }
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&Bytes::from(bytes));
        }
    }
}
