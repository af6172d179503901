//! What the generator sends: small JSON text frames that carry a stamp
//! (stream, sequence number, send time) in fixed-width hex, so a message is
//! stamped by overwriting 27 digits of a template and read back from where
//! the template put them (or by scanning for their key when a server moved
//! them), with no allocation either way. Digits are written and read eight
//! at a time in a `u64` (SWAR): the generator handles every delivery, so its
//! per-message work is what bounds the rate one core can measure.
//!
//! The frames follow the peer protocol of the engine's pub/sub example
//! (`{"type":"publish","topic":T,...}`, anything else echoed) and pad with
//! JSON whitespace, so the sizes asked for are exact and the JSON stays valid.
//! Against the ringhub server the stamp rides in `data` ([`write_send`],
//! [`write_publish`]), which the server forwards byte for byte.

use ringhub_proto::{FrameHead, Opcode};

const KEY: &[u8; 5] = b"\"k\":\"";
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

/// A message template of exactly the requested size, kept as the whole
/// text frame that carries it (masked with a zero key, so still plain).
#[derive(Debug, Clone)]
pub struct Payload {
    frame: Vec<u8>,
    /// Where the message starts in `frame`; the masking key is just before.
    payload_at: usize,
    /// Where the stamp's digits start in the message.
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
        let mut frame = Vec::new();
        ringhub_proto::encode_masked_frame(
            &mut frame,
            FrameHead::new(Opcode::Text),
            &bytes,
            [0; 4],
        );
        Ok(Payload {
            payload_at: frame.len() - size,
            frame,
            stamp_at,
        })
    }

    /// Where the stamp's digits start in the message.
    pub fn stamp_offset(&self) -> usize {
        self.stamp_at
    }

    /// Writes `stamp` into the template and returns the message.
    pub fn stamp(&mut self, stamp: Stamp) -> &[u8] {
        let message = &mut self.frame[self.payload_at..];
        write_stamp_field(&mut message[self.stamp_at..], stamp);
        message
    }

    /// Appends the message stamped with `stamp` to `out` as a text frame
    /// masked with `key`: the template frame is copied once, then its key
    /// and stamp are written and its payload masked where it lies in `out`.
    pub fn write_frame(&self, stamp: Stamp, key: [u8; 4], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.frame);
        let (head, message) = out[start..].split_at_mut(self.payload_at);
        head[self.payload_at - 4..].copy_from_slice(&key);
        write_stamp_field(&mut message[self.stamp_at..], stamp);
        ringhub_proto::apply_mask(message, key);
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
    read_stamp_field(message.get(find_key(message)?..)?)
}

/// Finds the stamp of a message whose template put it at `at`: read there
/// when the key precedes it (a server that passes messages on unchanged, so
/// no scan), searched for like [`find_stamp`] otherwise.
pub fn find_stamp_at(message: &[u8], at: usize) -> Option<Stamp> {
    at.checked_sub(KEY.len())
        .and_then(|key_at| message.get(key_at..))
        .filter(|from_key| from_key.first_chunk() == Some(KEY))
        .and_then(|from_key| read_stamp_field(&from_key[KEY.len()..]))
        .or_else(|| find_stamp(message))
}

/// Index just past the first `"k":"` in `message`.
fn find_key(message: &[u8]) -> Option<usize> {
    let mut from = 1;
    loop {
        // `k` is rarer in these messages than `"`: look for it, then around it.
        let k = from + message.get(from..)?.iter().position(|&b| b == b'k')?;
        if message[k - 1..].first_chunk() == Some(KEY) {
            return Some(k + KEY.len() - 1);
        }
        from = k + 1;
    }
}

// Digits of the stamp: sequence number [0, 9), send time [9, 21), stream
// [21, 27). They are handled as four runs of eight, [0, 8), [8, 16),
// [16, 24) and [19, 27): the last overlaps the third, so every run is one
// `u64` and its digits are written twice, alike.
const _: () = assert!(SEQ_DIGITS == 9 && TIME_DIGITS == 12 && STREAM_DIGITS == 6);
const SEQ_MASK: u64 = (1 << (4 * SEQ_DIGITS)) - 1;
const TIME_MASK: u64 = (1 << (4 * TIME_DIGITS)) - 1;
const STREAM_MASK: u64 = (1 << (4 * STREAM_DIGITS)) - 1;

/// Reads a stamp from the first `STAMP_LEN` bytes of `field`; `None` unless
/// they are all lowercase hex digits (the only ones the bench writes).
fn read_stamp_field(field: &[u8]) -> Option<Stamp> {
    let digits: &[u8; STAMP_LEN] = field.first_chunk()?;
    let a = unhex8(run_at(digits, 0))?;
    let b = unhex8(run_at(digits, 8))?;
    let c = unhex8(run_at(digits, 16))?;
    let d = unhex8(run_at(digits, 19))?;
    Some(Stamp {
        seq: a << 4 | b >> 28,
        sent_ns: (b & 0x0fff_ffff) << 20 | c >> 12,
        stream: (d & STREAM_MASK) as u32,
    })
}

fn run_at(digits: &[u8; STAMP_LEN], at: usize) -> [u8; 8] {
    let mut run = [0; 8];
    run.copy_from_slice(&digits[at..at + 8]);
    run
}

/// Writes a stamp into its `STAMP_LEN` hex digits; each number keeps its
/// low digits if it has more than its field holds.
fn write_stamp_field(field: &mut [u8], stamp: Stamp) {
    let seq = stamp.seq & SEQ_MASK;
    let time = stamp.sent_ns & TIME_MASK;
    let stream = u64::from(stamp.stream) & STREAM_MASK;
    let runs = [
        (0, seq >> 4),
        (8, (seq & 0xf) << 28 | time >> 20),
        (16, (time & 0xf_ffff) << 12 | stream >> 12),
        (19, (time & 0xff) << 24 | stream),
    ];
    for (at, run) in runs {
        // Each run holds exactly 32 bits by construction.
        field[at..at + 8].copy_from_slice(&hex8(run as u32));
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW_NIBBLES: u64 = 0x0f0f_0f0f_0f0f_0f0f;

/// Eight lowercase hex digits of `value`, most significant first: each
/// nibble spread into a byte of its own, then turned into its digit.
fn hex8(value: u32) -> [u8; 8] {
    let mut x = u64::from(value);
    x = (x | x << 16) & 0x0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
    x = (x | x << 4) & LOW_NIBBLES;
    // Nibbles of 10 and more become letters: `'a' - '0' - 10` = 39 further.
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    (x + u64::from(b'0') * ONES + letters * 39).to_be_bytes()
}

/// The value of eight lowercase hex digits, `None` if any byte is not one.
fn unhex8(digits: [u8; 8]) -> Option<u64> {
    let x = u64::from_be_bytes(digits);
    // `0`-`9` are 0x30-0x39, `a`-`f` 0x61-0x66: bit 6 tells a letter, whose
    // value is its low nibble plus 9.
    let letters = (x >> 6) & ONES;
    let n = (x & LOW_NIBBLES) + letters * 9;
    // Every byte a digit: high nibble 3 (6 for a letter), value below 16,
    // and 10 or more exactly for letters. No step carries across bytes.
    let valid = x & !LOW_NIBBLES == 0x30 * ONES + letters * 0x30
        && n & !LOW_NIBBLES == 0
        && ((n + 6 * ONES) >> 4) & ONES == letters;
    // Pack the eight nibbles: pairs into bytes, bytes into 16 bits, then 32.
    let mut n = n;
    n = (n | n >> 4) & 0x00ff_00ff_00ff_00ff;
    n = (n | n >> 8) & 0x0000_ffff_0000_ffff;
    valid.then_some((n | n >> 16) & 0xffff_ffff)
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
    fn hex_runs_match_the_formatter_and_reject_every_other_byte() {
        let mut x = 0x9e37_79b9u32;
        for value in [0, 1, 9, 10, 15, 16, 0xabcd_ef01, u32::MAX]
            .into_iter()
            .chain((0..10_000).map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x
            }))
        {
            let digits = hex8(value);
            assert_eq!(digits, *format!("{value:08x}").as_bytes());
            assert_eq!(unhex8(digits), Some(u64::from(value)));
        }
        let valid = hex8(0x0123_4567);
        for at in 0..8 {
            for byte in 0..=255u8 {
                let mut digits = valid;
                digits[at] = byte;
                let want = (byte as char)
                    .to_digit(16)
                    .filter(|_| !byte.is_ascii_uppercase());
                assert_eq!(
                    unhex8(digits).is_some(),
                    want.is_some(),
                    "{byte:#x} at {at}"
                );
            }
        }
    }

    #[test]
    fn a_stamp_with_any_digit_not_hex_is_no_stamp() {
        let mut p = Payload::echo(64).unwrap();
        let at = p.stamp_offset();
        let stamp = Stamp {
            stream: 0x12_3456,
            seq: 0x9_8765_4321,
            sent_ns: 0xfedc_ba98_7654,
        };
        let good = p.stamp(stamp).to_vec();
        assert_eq!(read_stamp_field(&good[at..]), Some(stamp));
        for digit in 0..STAMP_LEN {
            for bad in [b'g', b'G', b'A', b'/', b':', b'`', b' ', 0x80 | b'1'] {
                let mut message = good.clone();
                message[at + digit] = bad;
                assert_eq!(
                    read_stamp_field(&message[at..]),
                    None,
                    "{bad:#x} at {digit}"
                );
            }
        }
        assert_eq!(read_stamp_field(&good[at..at + STAMP_LEN - 1]), None);
    }

    #[test]
    fn frames_are_masked_text_frames_of_the_stamped_message() {
        use ringhub_proto::{Limits, ParsedFrame, Role, parse_frame};
        let limits = Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
        };
        // One size per length encoding: 7-bit, 16-bit, 64-bit.
        for size in [64, 126, 300, 70_000] {
            let mut p = Payload::echo(size).unwrap();
            let stamp = Stamp {
                stream: 3,
                seq: 77,
                sent_ns: 123_456,
            };
            let mut out = b"before".to_vec();
            p.write_frame(stamp, [0x12, 0x34, 0x56, 0x78], &mut out);
            let ParsedFrame::Complete { frame, consumed } =
                parse_frame(&mut out[6..], Role::Server, &limits, false).unwrap()
            else {
                panic!("incomplete frame of {size}");
            };
            assert_eq!((frame.opcode, frame.fin), (Opcode::Text, true));
            let payload = frame.payload.to_vec();
            assert_eq!(consumed, out.len() - 6);
            assert_eq!(payload, p.stamp(stamp));
            assert_eq!(find_stamp_at(&payload, p.stamp_offset()), Some(stamp));
        }
    }

    #[test]
    fn a_stamp_moved_by_the_server_is_still_found() {
        let mut p = Payload::publish("t", 64).unwrap();
        let stamp = Stamp {
            stream: 0,
            seq: 5,
            sent_ns: 6,
        };
        let at = p.stamp_offset();
        let inner = String::from_utf8(p.stamp(stamp).to_vec()).unwrap();
        let wrapped = format!(r#"{{"type":"message","data":{inner}}}"#);
        assert_eq!(find_stamp_at(wrapped.as_bytes(), at), Some(stamp));
        // A stamp that does not parse where the template put it is looked for.
        let mut moved = inner.clone().into_bytes();
        moved[at] = b'X';
        assert_eq!(find_stamp_at(&moved, at), None);
        assert_eq!(find_stamp_at(b"", at), None);
        assert_eq!(find_stamp_at(br#"{"k":"#, 0), None);
        // No hint (0) is a scan.
        assert_eq!(find_stamp_at(inner.as_bytes(), 0), Some(stamp));
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
