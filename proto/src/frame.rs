//! RFC 6455 §5 frames: the header checks, in-place parsing, and encoding.
//!
//! Parsing works on the caller's receive buffer: a complete frame is unmasked
//! where it lies and handed back as a borrow, and an incomplete one says how
//! many more bytes it needs so the caller can size its buffer. Every header
//! rule is checked as soon as the bytes it depends on are present, so a bad or
//! oversized frame is refused before any of its payload is buffered.

use bytes::BufMut;

use crate::error::ProtocolError;
use crate::mask::apply_mask;

/// The largest frame header: 2 bytes, an 8-byte length and a 4-byte mask key.
const MAX_HEADER_LEN: usize = 14;
/// Control frames carry at most this many payload bytes (RFC 6455 §5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// The frame type (RFC 6455 §5.2). Reserved opcodes are rejected while parsing,
/// so they have no variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// 0x0: a later fragment of a text or binary message.
    Continuation,
    /// 0x1: the first frame of a UTF-8 text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close the connection.
    Close,
    /// 0x9: a ping, to be answered with a pong carrying the same payload.
    Ping,
    /// 0xA: a pong, solicited or not.
    Pong,
}

impl Opcode {
    /// The 4-bit value on the wire.
    pub const fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes, and allowed
    /// between the fragments of a message.
    pub const fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }

    fn from_wire(bits: u8) -> Result<Self, ProtocolError> {
        match bits {
            0x0 => Ok(Opcode::Continuation),
            0x1 => Ok(Opcode::Text),
            0x2 => Ok(Opcode::Binary),
            0x8 => Ok(Opcode::Close),
            0x9 => Ok(Opcode::Ping),
            0xA => Ok(Opcode::Pong),
            reserved => Err(ProtocolError::ReservedOpcode(reserved)),
        }
    }
}

/// Which end of the connection is parsing, which decides the masking rule
/// (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Parses client frames: every frame must be masked.
    Server,
    /// Parses server frames: no frame may be masked.
    Client,
}

/// Size limits on what a peer may send. A frame or message over a limit ends
/// the connection with close code 1009 before its payload is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest payload of one frame. A data frame is also held to
    /// `max_message`, since it can be no bigger than its message.
    pub max_frame: usize,
    /// The largest message, summed over its fragments.
    pub max_message: usize,
}

impl Default for Limits {
    /// 16 MiB for both: roomy for a messaging server, and the most memory one
    /// connection can make us hold for a message.
    fn default() -> Self {
        Limits {
            max_frame: 16 << 20,
            max_message: 16 << 20,
        }
    }
}

/// A complete frame, its payload unmasked in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The final fragment of its message (always set on control frames).
    pub fin: bool,
    /// RSV1: with permessage-deflate, the message is compressed. Only ever set
    /// on the first frame of a data message; checked by [`parse_frame`].
    pub rsv1: bool,
    /// The frame type.
    pub opcode: Opcode,
    /// The unmasked payload.
    pub payload: &'a [u8],
}

/// The outcome of [`parse_frame`] on a buffer that broke no rule.
#[derive(Debug, PartialEq, Eq)]
pub enum ParsedFrame<'a> {
    /// A whole frame starts the buffer. Its `consumed` bytes (header and
    /// payload) have been unmasked in place and must not be parsed again.
    Complete {
        /// The frame, borrowing its payload from the buffer.
        frame: Frame<'a>,
        /// Bytes of the buffer the frame occupied.
        consumed: usize,
    },
    /// The buffer holds the start of a frame. Call again with the same bytes
    /// followed by at least `needed` more; the buffer was not modified.
    Incomplete {
        /// The least number of extra bytes that can make progress. Once the
        /// length field has arrived, this is exactly what the frame lacks.
        needed: usize,
    },
}

/// Parses the frame at the start of `buf`, unmasking its payload in place.
///
/// `rsv1_allowed` is whether permessage-deflate was negotiated. Header rules
/// are checked in wire order, each as soon as its bytes have arrived: an error
/// never waits for the mask key or the payload.
pub fn parse_frame<'a>(
    buf: &'a mut [u8],
    role: Role,
    limits: &Limits,
    rsv1_allowed: bool,
) -> Result<ParsedFrame<'a>, ProtocolError> {
    let header = match parse_header(buf, role, limits, rsv1_allowed)? {
        HeaderStatus::Complete(header) => header,
        HeaderStatus::Incomplete(needed) => return Ok(ParsedFrame::Incomplete { needed }),
    };
    let frame_len = header.len + header.payload_len;
    let available = buf.len();
    let Some(frame) = buf.get_mut(..frame_len) else {
        return Ok(ParsedFrame::Incomplete {
            needed: frame_len - available,
        });
    };
    let payload = &mut frame[header.len..];
    if let Some(key) = header.mask {
        apply_mask(payload, key);
    }
    Ok(ParsedFrame::Complete {
        frame: Frame {
            fin: header.head.fin,
            rsv1: header.head.rsv1,
            opcode: header.head.opcode,
            payload,
        },
        consumed: frame_len,
    })
}

/// A header that passed every check.
pub(crate) struct Header {
    pub(crate) head: FrameHead,
    pub(crate) mask: Option<[u8; 4]>,
    /// At most the applicable limit, so it fits in memory.
    pub(crate) payload_len: usize,
    /// Encoded length of the header (lengths need not be minimally encoded).
    pub(crate) len: usize,
}

pub(crate) enum HeaderStatus {
    Complete(Header),
    Incomplete(usize),
}

pub(crate) fn parse_header(
    buf: &[u8],
    role: Role,
    limits: &Limits,
    rsv1_allowed: bool,
) -> Result<HeaderStatus, ProtocolError> {
    let Some((&[b0, b1], rest)) = buf.split_first_chunk::<2>() else {
        return Ok(HeaderStatus::Incomplete(2 - buf.len()));
    };

    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 || (rsv1 && !rsv1_allowed) {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = Opcode::from_wire(b0 & 0x0F)?;
    if rsv1 && (opcode.is_control() || opcode == Opcode::Continuation) {
        return Err(ProtocolError::CompressedNonFirstFrame);
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlFrameTooLong);
        }
    }
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
        (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
        _ => {}
    }

    let len_bytes = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
    let incomplete = || Ok(HeaderStatus::Incomplete(header_len - buf.len()));
    let (payload_len, rest) = match len7 {
        126 => match rest.split_first_chunk::<2>() {
            Some((bytes, rest)) => (u64::from(u16::from_be_bytes(*bytes)), rest),
            None => return incomplete(),
        },
        127 => match rest.split_first_chunk::<8>() {
            Some((bytes, rest)) => (u64::from_be_bytes(*bytes), rest),
            None => return incomplete(),
        },
        short => (u64::from(short), rest),
    };
    if payload_len >> 63 != 0 {
        return Err(ProtocolError::LengthMsbSet);
    }
    // A data frame is at most a whole message, so the message limit bounds it too.
    let max = if opcode.is_control() {
        MAX_CONTROL_PAYLOAD
    } else {
        limits.max_frame.min(limits.max_message)
    };
    let payload_len = match usize::try_from(payload_len) {
        Ok(len) if len <= max && len <= usize::MAX - MAX_HEADER_LEN => len,
        _ => {
            return Err(ProtocolError::FrameTooBig {
                len: payload_len,
                max,
            });
        }
    };

    let mask = if masked {
        match rest.first_chunk::<4>() {
            Some(key) => Some(*key),
            // The length is known: ask for the whole frame at once.
            None => {
                return Ok(HeaderStatus::Incomplete(
                    header_len + payload_len - buf.len(),
                ));
            }
        }
    } else {
        None
    };
    Ok(HeaderStatus::Complete(Header {
        head: FrameHead { fin, rsv1, opcode },
        mask,
        payload_len,
        len: header_len,
    }))
}

/// The first byte of an outgoing frame: its type and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHead {
    /// The final fragment of its message.
    pub fin: bool,
    /// With permessage-deflate: the message is compressed. Set it on the first
    /// frame of a data message only.
    pub rsv1: bool,
    /// The frame type.
    pub opcode: Opcode,
}

impl FrameHead {
    /// A whole, uncompressed message (or control frame) of type `opcode`.
    pub const fn new(opcode: Opcode) -> Self {
        FrameHead {
            fin: true,
            rsv1: false,
            opcode,
        }
    }
}

/// An encoded frame header: 2 to 10 bytes for a server, up to 14 masked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EncodedHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl EncodedHeader {
    /// The header bytes, to be followed on the wire by the payload.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::ops::Deref for EncodedHeader {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for EncodedHeader {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for EncodedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EncodedHeader")
            .field(&self.as_bytes())
            .finish()
    }
}

/// The unmasked (server) header for a payload of `payload_len` bytes, with the
/// shortest length encoding.
///
/// For sending a header and a shared payload (`bytes::Bytes`) as two iovecs,
/// so one encoded payload can go to many connections.
pub fn encode_header(head: FrameHead, payload_len: usize) -> EncodedHeader {
    encode_header_with_mask(head, payload_len, None)
}

/// Appends an unmasked (server) frame carrying `payload` to `out`.
pub fn encode_frame(out: &mut impl BufMut, head: FrameHead, payload: &[u8]) {
    out.put_slice(&encode_header(head, payload.len()));
    out.put_slice(payload);
}

/// Appends a frame masked with `key` (client to server) carrying `payload`.
///
/// The key must be fresh and unpredictable for each frame (RFC 6455 §5.3);
/// choosing it is the caller's job, as this crate has no randomness. `out` is
/// a `Vec<u8>` or a `BytesMut`: the payload is masked where it was appended.
pub fn encode_masked_frame<B>(out: &mut B, head: FrameHead, payload: &[u8], key: [u8; 4])
where
    B: BufMut + AsMut<[u8]>,
{
    out.put_slice(&encode_header_with_mask(head, payload.len(), Some(key)));
    let start = out.as_mut().len();
    out.put_slice(payload);
    apply_mask(&mut out.as_mut()[start..], key);
}

fn encode_header_with_mask(
    head: FrameHead,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) -> EncodedHeader {
    debug_assert!(
        !head.opcode.is_control() || (head.fin && !head.rsv1 && payload_len <= MAX_CONTROL_PAYLOAD),
        "control frames are final, uncompressed and at most 125 bytes"
    );
    let mut bytes = [0u8; MAX_HEADER_LEN];
    bytes[0] = u8::from(head.fin) << 7 | u8::from(head.rsv1) << 6 | head.opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut len = 2;
    match payload_len {
        // The match arm bounds each cast.
        0..=125 => bytes[1] = mask_bit | payload_len as u8,
        126..=0xFFFF => {
            bytes[1] = mask_bit | 126;
            bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            len = 4;
        }
        _ => {
            bytes[1] = mask_bit | 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            len = 10;
        }
    }
    if let Some(key) = mask {
        bytes[len..len + 4].copy_from_slice(&key);
        len += 4;
    }
    EncodedHeader {
        bytes,
        len: len as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

    fn parse(bytes: &[u8], role: Role) -> Result<(FrameHead, Vec<u8>, usize), ProtocolError> {
        parse_with(bytes, role, &Limits::default(), false)
    }

    fn parse_with(
        bytes: &[u8],
        role: Role,
        limits: &Limits,
        rsv1_allowed: bool,
    ) -> Result<(FrameHead, Vec<u8>, usize), ProtocolError> {
        let mut buf = bytes.to_vec();
        match parse_frame(&mut buf, role, limits, rsv1_allowed)? {
            ParsedFrame::Complete { frame, consumed } => Ok((
                FrameHead {
                    fin: frame.fin,
                    rsv1: frame.rsv1,
                    opcode: frame.opcode,
                },
                frame.payload.to_vec(),
                consumed,
            )),
            ParsedFrame::Incomplete { needed } => panic!("incomplete, needs {needed}"),
        }
    }

    fn needed(bytes: &[u8], role: Role) -> Result<usize, ProtocolError> {
        let mut buf = bytes.to_vec();
        match parse_frame(&mut buf, role, &Limits::default(), false)? {
            ParsedFrame::Incomplete { needed } => {
                assert_eq!(buf, bytes, "an incomplete parse must not touch the buffer");
                Ok(needed)
            }
            ParsedFrame::Complete { .. } => panic!("unexpectedly complete"),
        }
    }

    #[test]
    fn opcodes_round_trip_and_reserved_ones_are_refused() {
        for bits in 0..16u8 {
            match Opcode::from_wire(bits) {
                Ok(op) => assert_eq!(op.as_u8(), bits),
                Err(e) => {
                    assert!(matches!(bits, 3..=7 | 0xB..=0xF));
                    assert_eq!(e, ProtocolError::ReservedOpcode(bits));
                }
            }
        }
    }

    #[test]
    fn reserved_bits_are_refused_before_anything_else() {
        // RSV2 and RSV3, on an otherwise broken frame (unmasked, reserved opcode).
        for b0 in [0xA1, 0x91, 0xBF] {
            assert_eq!(
                parse(&[b0, 0x00], Role::Server),
                Err(ProtocolError::ReservedBits)
            );
        }
        // RSV1 only when an extension uses it.
        assert_eq!(
            parse(&[0xC1, 0x80, 0, 0, 0, 0], Role::Server),
            Err(ProtocolError::ReservedBits)
        );
        let (head, _, _) = parse_with(
            &[0xC1, 0x80, 0, 0, 0, 0],
            Role::Server,
            &Limits::default(),
            true,
        )
        .unwrap();
        assert!(head.rsv1);
    }

    #[test]
    fn rsv1_is_refused_on_control_and_continuation_frames() {
        for b0 in [0xC0, 0xC8, 0xC9, 0xCA, 0x40] {
            assert_eq!(
                parse_with(
                    &[b0, 0x80, 0, 0, 0, 0],
                    Role::Server,
                    &Limits::default(),
                    true
                ),
                Err(ProtocolError::CompressedNonFirstFrame),
                "first byte {b0:#x}"
            );
        }
    }

    #[test]
    fn control_frame_rules() {
        assert_eq!(
            parse(&[0x09, 0x80], Role::Server),
            Err(ProtocolError::FragmentedControlFrame)
        );
        for len in [126, 127] {
            assert_eq!(
                parse(&[0x89, 0x80 | len], Role::Server),
                Err(ProtocolError::ControlFrameTooLong)
            );
        }
        let mut frame = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
        frame.extend([0u8; 125]);
        assert_eq!(parse(&frame, Role::Server).unwrap().1.len(), 125);
    }

    #[test]
    fn masking_rule_depends_on_role() {
        assert_eq!(
            parse(&[0x81, 0x00], Role::Server),
            Err(ProtocolError::UnmaskedFrame)
        );
        assert_eq!(
            parse(&[0x81, 0x80, 0, 0, 0, 0], Role::Client),
            Err(ProtocolError::MaskedFrame)
        );
    }

    #[test]
    fn length_msb_must_be_clear() {
        let mut frame = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse(&frame, Role::Server),
            Err(ProtocolError::LengthMsbSet)
        );
        frame[2] = 0x7F;
        assert!(matches!(
            parse(&frame, Role::Server),
            Err(ProtocolError::FrameTooBig { .. })
        ));
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header_alone() {
        let limits = Limits {
            max_frame: 1000,
            max_message: 4000,
        };
        // 16-bit length 1001, no mask key or payload yet.
        assert_eq!(
            parse_with(&[0x82, 0xFE, 0x03, 0xE9], Role::Server, &limits, false),
            Err(ProtocolError::FrameTooBig {
                len: 1001,
                max: 1000
            })
        );
        // The message limit bounds a single frame too.
        let limits = Limits {
            max_frame: 4000,
            max_message: 1000,
        };
        assert_eq!(
            parse_with(&[0x82, 0xFE, 0x03, 0xE9], Role::Server, &limits, false),
            Err(ProtocolError::FrameTooBig {
                len: 1001,
                max: 1000
            })
        );
        // Exactly at the limit is fine: it waits for the mask and payload.
        assert_eq!(
            needed(&[0x82, 0xFE, 0x03, 0xE8], Role::Server),
            Ok(4 + 1000)
        );
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        // "Hi" with a 16-bit and a 64-bit length field.
        let (_, payload, consumed) = parse(&[0x81, 0x7E, 0, 2, b'H', b'i'], Role::Client).unwrap();
        assert_eq!((payload.as_slice(), consumed), (&b"Hi"[..], 6));
        let (_, payload, consumed) = parse(
            &[0x81, 0x7F, 0, 0, 0, 0, 0, 0, 0, 2, b'H', b'i'],
            Role::Client,
        )
        .unwrap();
        assert_eq!((payload.as_slice(), consumed), (&b"Hi"[..], 12));
    }

    #[test]
    fn incomplete_reports_what_is_missing() {
        assert_eq!(needed(&[], Role::Server), Ok(2));
        assert_eq!(needed(&[0x81], Role::Server), Ok(1));
        // Header needs a mask key: 6 bytes, then the payload.
        assert_eq!(needed(&[0x81, 0x85], Role::Server), Ok(4 + 5));
        assert_eq!(needed(&[0x81, 0x85, 1, 2], Role::Server), Ok(2 + 5));
        assert_eq!(needed(&[0x81, 0x85, 1, 2, 3, 4, b'a'], Role::Server), Ok(4));
        // 64-bit length: first wait for the rest of the header.
        assert_eq!(needed(&[0x82, 0xFF, 0, 0], Role::Server), Ok(10));
        assert_eq!(
            needed(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0], Role::Client),
            Ok(65536)
        );
    }

    #[test]
    fn checks_fire_before_the_bytes_they_do_not_need() {
        // A too-long 16-bit length is refused without waiting for the mask key.
        let limits = Limits {
            max_frame: 10,
            max_message: 10,
        };
        assert!(matches!(
            parse_with(&[0x82, 0xFE, 0, 11], Role::Server, &limits, false),
            Err(ProtocolError::FrameTooBig { len: 11, .. })
        ));
        // An unmasked client frame is refused from its first two bytes.
        assert_eq!(
            parse(&[0x82, 0x7F], Role::Server),
            Err(ProtocolError::UnmaskedFrame)
        );
    }

    #[test]
    fn encoded_headers_use_the_shortest_length() {
        let text = FrameHead::new(Opcode::Text);
        assert_eq!(encode_header(text, 0).as_bytes(), [0x81, 0x00]);
        assert_eq!(encode_header(text, 125).as_bytes(), [0x81, 125]);
        assert_eq!(encode_header(text, 126).as_bytes(), [0x81, 126, 0, 126]);
        assert_eq!(
            encode_header(text, 65535).as_bytes(),
            [0x81, 126, 0xFF, 0xFF]
        );
        assert_eq!(
            encode_header(text, 65536).as_bytes(),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
        let compressed_start = FrameHead {
            fin: false,
            rsv1: true,
            opcode: Opcode::Binary,
        };
        assert_eq!(encode_header(compressed_start, 3).as_bytes(), [0x42, 3]);
    }

    #[test]
    fn masked_frames_round_trip_through_the_server_parser() {
        for len in [0, 1, 125, 126, 511, 512, 513, 1500, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut wire = Vec::new();
            encode_masked_frame(&mut wire, FrameHead::new(Opcode::Binary), &payload, KEY);
            if len > 0 {
                assert_ne!(&wire[wire.len() - len..], payload.as_slice(), "len {len}");
            }
            let (head, parsed, consumed) = parse(&wire, Role::Server).unwrap();
            assert_eq!(head, FrameHead::new(Opcode::Binary));
            assert_eq!(parsed, payload);
            assert_eq!(consumed, wire.len());
        }
    }

    #[test]
    fn parses_only_the_first_frame_of_a_buffer() {
        let mut wire = Vec::new();
        encode_frame(&mut wire, FrameHead::new(Opcode::Text), b"one");
        encode_frame(&mut wire, FrameHead::new(Opcode::Ping), b"two");
        let (head, payload, consumed) = parse(&wire, Role::Client).unwrap();
        assert_eq!(
            (head.opcode, payload.as_slice(), consumed),
            (Opcode::Text, &b"one"[..], 5)
        );
        let (head, payload, _) = parse(&wire[consumed..], Role::Client).unwrap();
        assert_eq!(
            (head.opcode, payload.as_slice()),
            (Opcode::Ping, &b"two"[..])
        );
    }
}
