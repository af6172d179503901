//! What the generator sends: small JSON text frames that carry a stamp
//! (stream, sequence number, send time) in fixed-width hex, so a message is
//! stamped by overwriting 28 bytes of a template and read back by scanning
//! for one key, with no allocation either way.
//!
//! The frames follow the peer protocol of the engine's pub/sub example
//! (`{"type":"publish","topic":T,...}`, anything else echoed) and pad with
//! JSON whitespace, so the sizes asked for are exact and the JSON stays valid.

const KEY: &[u8] = b"\"k\":\"";
const SEQ_DIGITS: usize = 9;
const TIME_DIGITS: usize = 12;
const STREAM_DIGITS: usize = 6;
/// Hex digits of a stamp inside the payload: with topic `t` a publish fits
/// in 64 bytes.
pub const STAMP_LEN: usize = SEQ_DIGITS + TIME_DIGITS + STREAM_DIGITS;
/// Largest sequence number a stamp holds (36 bits).
pub const MAX_SEQ: u64 = (1 << (4 * SEQ_DIGITS)) - 1;
/// Stream of the probe a subscriber sends to learn that its subscribe took
/// effect; no workload numbers a real stream this high.
pub const PROBE_STREAM: u32 = (1 << (4 * STREAM_DIGITS)) - 1;

/// Identity and send time of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Who sent it: a connection (echo) or a publisher (fan-out).
    pub stream: u32,
    pub seq: u64,
    /// Nanoseconds since the run's epoch on CLOCK_MONOTONIC (48 bits: 78 h).
    pub sent_ns: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("--size {size} is too small: this workload's messages need at least {min} bytes")]
    TooSmall { size: usize, min: usize },
    #[error("topic `{0}` must be 1-64 characters of [A-Za-z0-9_.-]")]
    BadTopic(String),
}

/// A message template of exactly the requested size.
#[derive(Debug, Clone)]
pub struct Payload {
    bytes: Vec<u8>,
    stamp_at: usize,
}

impl Payload {
    /// A frame the peer echoes back.
    pub fn echo(size: usize) -> Result<Self, PayloadError> {
        Self::build(r#"{"type":"echo","#, size)
    }

    /// A frame the peer delivers to every subscriber of `topic`.
    pub fn publish(topic: &str, size: usize) -> Result<Self, PayloadError> {
        check_topic(topic)?;
        Self::build(&format!(r#"{{"type":"publish","topic":"{topic}","#), size)
    }

    /// Smallest size `echo` accepts.
    pub fn min_echo_size() -> usize {
        r#"{"type":"echo","#.len() + KEY.len() + STAMP_LEN + 2
    }

    fn build(head: &str, size: usize) -> Result<Self, PayloadError> {
        let min = head.len() + KEY.len() + STAMP_LEN + 2;
        if size < min {
            return Err(PayloadError::TooSmall { size, min });
        }
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend_from_slice(KEY);
        let stamp_at = bytes.len();
        bytes.resize(stamp_at + STAMP_LEN, b'0');
        bytes.push(b'"');
        bytes.resize(size - 1, b' ');
        bytes.push(b'}');
        Ok(Payload { bytes, stamp_at })
    }

    /// Writes `stamp` into the template and returns the message.
    pub fn stamp(&mut self, stamp: Stamp) -> &[u8] {
        let field = &mut self.bytes[self.stamp_at..self.stamp_at + STAMP_LEN];
        let (seq, rest) = field.split_at_mut(SEQ_DIGITS);
        let (time, stream) = rest.split_at_mut(TIME_DIGITS);
        write_hex(seq, stamp.seq);
        write_hex(time, stamp.sent_ns);
        write_hex(stream, u64::from(stamp.stream));
        &self.bytes
    }
}

/// `{"type":"subscribe","topic":T}`.
pub fn subscribe(topic: &str) -> Result<Vec<u8>, PayloadError> {
    check_topic(topic)?;
    Ok(format!(r#"{{"type":"subscribe","topic":"{topic}"}}"#).into_bytes())
}

fn check_topic(topic: &str) -> Result<(), PayloadError> {
    let ok = (1..=64).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PayloadError::BadTopic(topic.to_owned()))
    }
}

/// Finds the stamp in a received message, wherever the server put it (a
/// server may wrap the payload in an envelope of its own).
pub fn find_stamp(message: &[u8]) -> Option<Stamp> {
    let at = message.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let field = message.get(at..at + STAMP_LEN)?;
    let (seq, rest) = field.split_at(SEQ_DIGITS);
    let (time, stream) = rest.split_at(TIME_DIGITS);
    Some(Stamp {
        seq: read_hex(seq)?,
        sent_ns: read_hex(time)?,
        stream: u32::try_from(read_hex(stream)?).ok()?,
    })
}

fn write_hex(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

fn read_hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc << 4 | u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact_and_json_stays_valid() {
        for size in [Payload::min_echo_size(), 64, 100, 4096] {
            let mut p = Payload::echo(size).unwrap();
            let msg = p.stamp(Stamp {
                stream: 7,
                seq: 3,
                sent_ns: 99,
            });
            assert_eq!(msg.len(), size);
            let v: serde_json::Value = serde_json::from_slice(msg).unwrap();
            assert_eq!(v["type"], "echo");
        }
        let mut p = Payload::publish("t", 64).unwrap();
        let msg = p.stamp(Stamp {
            stream: 1,
            seq: 1,
            sent_ns: 1,
        });
        assert_eq!(msg.len(), 64);
        let v: serde_json::Value = serde_json::from_slice(msg).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["topic"].as_str()),
            (Some("publish"), Some("t"))
        );
    }

    #[test]
    fn stamps_round_trip_at_their_limits() {
        let mut p = Payload::publish("room-1", 200).unwrap();
        for stamp in [
            Stamp {
                stream: 0,
                seq: 0,
                sent_ns: 0,
            },
            Stamp {
                stream: PROBE_STREAM,
                seq: MAX_SEQ,
                sent_ns: (1 << 48) - 1,
            },
            Stamp {
                stream: 0xabcdef,
                seq: 0x1_2345_6789,
                sent_ns: 0x1234_5678_9abc,
            },
        ] {
            assert_eq!(find_stamp(p.stamp(stamp)), Some(stamp));
        }
    }

    #[test]
    fn finds_a_stamp_inside_an_envelope() {
        let mut p = Payload::echo(64).unwrap();
        let stamp = Stamp {
            stream: 5,
            seq: 42,
            sent_ns: 1_000_000,
        };
        let inner = String::from_utf8(p.stamp(stamp).to_vec()).unwrap();
        let wrapped = format!(r#"{{"type":"message","topic":"t","data":{inner},"ts":1}}"#);
        assert_eq!(find_stamp(wrapped.as_bytes()), Some(stamp));
    }

    #[test]
    fn rejects_what_it_cannot_stamp() {
        assert_eq!(find_stamp(b"hello"), None);
        assert_eq!(find_stamp(br#"{"k":"000000001"}"#), None);
        assert_eq!(find_stamp(br#"{"k":"zz0000000000000000000000000"}"#), None);
        let min = Payload::min_echo_size();
        assert_eq!(
            Payload::echo(min - 1).unwrap_err(),
            PayloadError::TooSmall { size: min - 1, min }
        );
        assert!(Payload::publish("a\"b", 64).is_err());
        assert!(subscribe("").is_err());
        assert_eq!(
            subscribe("t").unwrap(),
            br#"{"type":"subscribe","topic":"t"}"#
        );
    }
}
