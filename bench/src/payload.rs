//! What the generator sends: small JSON text frames that carry a stamp
//! (stream, sequence number, send time) in fixed-width hex, so a message is
//! stamped by overwriting 28 bytes of a template and read back by scanning
//! for one key, with no allocation either way.
//!
//! The frames follow the peer protocol of the engine's pub/sub example
//! (`{"type":"publish","topic":T,...}`, anything else echoed) and pad with
//! JSON whitespace, so the sizes asked for are exact and the JSON stays valid.
//! Against the ringhub server the stamp rides in `data` ([`write_send`],
//! [`write_publish`]), which the server forwards byte for byte.

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
    #[error("--size {size} is too small: `{what}` messages need at least {min} bytes")]
    TooSmallFor {
        size: usize,
        min: usize,
        what: String,
    },
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
        write_stamp_field(
            &mut self.bytes[self.stamp_at..self.stamp_at + STAMP_LEN],
            stamp,
        );
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

/// Closes the `data` object, then the frame.
const CLOSE_DATA: &[u8] = b"}}";

/// Size of the smallest ringhub frame whose head (everything before the
/// stamp's key) is `head_len` bytes.
pub fn min_stamped_len(head_len: usize) -> usize {
    head_len + KEY.len() + STAMP_LEN + 1 + CLOSE_DATA.len()
}

/// Writes `{"type":"send","to":"<to>","data":{"k":"<stamp>"}}` padded to
/// `size` bytes into `buf` (cleared first). `to` is a user name the caller
/// made (letters and digits: nothing to escape). Never allocates once
/// `buf` has grown to `size`.
pub fn write_send(buf: &mut Vec<u8>, to: Name<'_>, stamp: Stamp, size: usize) {
    buf.clear();
    buf.extend_from_slice(br#"{"type":"send","to":""#);
    to.write(buf);
    buf.extend_from_slice(br#"","data":{"#);
    write_stamp_and_close(buf, stamp, size);
}

/// Writes `{"type":"publish","topic":"<topic>","data":{"k":"<stamp>"}}`
/// padded to `size` bytes, like [`write_send`].
pub fn write_publish(buf: &mut Vec<u8>, topic: Name<'_>, stamp: Stamp, size: usize) {
    buf.clear();
    buf.extend_from_slice(br#"{"type":"publish","topic":""#);
    topic.write(buf);
    buf.extend_from_slice(br#"","data":{"#);
    write_stamp_and_close(buf, stamp, size);
}

/// Head length of [`write_send`] / [`write_publish`] for a name, to check
/// `--size` before anything connects.
pub fn send_head_len(to: Name<'_>) -> usize {
    br#"{"type":"send","to":""#.len() + to.len() + br#"","data":{"#.len()
}

pub fn publish_head_len(topic: Name<'_>) -> usize {
    br#"{"type":"publish","topic":""#.len() + topic.len() + br#"","data":{"#.len()
}

/// A generated name: a short prefix and a number (`r12`, `u7`, `room3`),
/// written without formatting machinery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name<'a> {
    pub prefix: &'a str,
    pub number: u32,
}

impl Name<'_> {
    fn write(self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.prefix.as_bytes());
        buf.extend_from_slice(itoa::Buffer::new().format(self.number).as_bytes());
    }

    pub fn len(self) -> usize {
        self.prefix.len() + self.number.checked_ilog10().unwrap_or(0) as usize + 1
    }

    pub fn is_empty(self) -> bool {
        false
    }
}

impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.prefix, self.number)
    }
}

fn write_stamp_and_close(buf: &mut Vec<u8>, stamp: Stamp, size: usize) {
    buf.extend_from_slice(KEY);
    let at = buf.len();
    buf.resize(at + STAMP_LEN, b'0');
    write_stamp_field(&mut buf[at..], stamp);
    buf.push(b'"');
    let padded = size.saturating_sub(CLOSE_DATA.len()).max(buf.len());
    buf.resize(padded, b' ');
    buf.extend_from_slice(CLOSE_DATA);
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

/// Writes a stamp into its `STAMP_LEN` hex digits.
fn write_stamp_field(field: &mut [u8], stamp: Stamp) {
    let (seq, rest) = field.split_at_mut(SEQ_DIGITS);
    let (time, stream) = rest.split_at_mut(TIME_DIGITS);
    write_hex(seq, stamp.seq);
    write_hex(time, stamp.sent_ns);
    write_hex(stream, u64::from(stamp.stream));
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
    fn ringhub_frames_are_exact_valid_json_with_the_stamp_in_data() {
        let stamp = Stamp {
            stream: 12,
            seq: 345,
            sent_ns: 6789,
        };
        let to = Name {
            prefix: "r",
            number: 1203,
        };
        let mut buf = Vec::new();
        let min = min_stamped_len(send_head_len(to));
        for size in [min, min + 1, 100, 500] {
            write_send(&mut buf, to, stamp, size);
            assert_eq!(buf.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
            assert_eq!(
                (v["type"].as_str(), v["to"].as_str()),
                (Some("send"), Some("r1203"))
            );
            assert!(v["data"]["k"].is_string());
            assert_eq!(find_stamp(&buf), Some(stamp));
        }
        // Too small a size still makes a valid frame, just a longer one.
        write_send(&mut buf, to, stamp, 10);
        assert_eq!(buf.len(), min);

        let room = Name {
            prefix: "room",
            number: 0,
        };
        write_publish(&mut buf, room, stamp, 100);
        assert_eq!(buf.len(), 100);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["topic"], "room0");
        assert_eq!(
            publish_head_len(room) + 5 + STAMP_LEN + 3,
            min_stamped_len(publish_head_len(room))
        );

        // As the server delivers it: data byte for byte inside its envelope.
        let data = &buf[buf.iter().position(|&b| b == b'{').unwrap() + 1..];
        let data = &data[data.iter().position(|&b| b == b'{').unwrap()..data.len() - 1];
        let delivered = [
            &br#"{"type":"message","from":"u1","topic":"room0","data":"#[..],
            data,
            br#","ts":1764129600000}"#,
        ]
        .concat();
        assert_eq!(find_stamp(&delivered), Some(stamp));
    }

    #[test]
    fn names_write_their_digits() {
        let mut buf = Vec::new();
        for (number, text) in [(0, "u0"), (7, "u7"), (10, "u10"), (u32::MAX, "u4294967295")] {
            let name = Name {
                prefix: "u",
                number,
            };
            buf.clear();
            name.write(&mut buf);
            assert_eq!(buf, text.as_bytes());
            assert_eq!(name.len(), text.len());
            assert_eq!(name.to_string(), text);
        }
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
