//! RFC 6455 framing end to end through the public API: the §5.7 examples,
//! every error path with the close code it earns, and properties over
//! arbitrary streams fed in arbitrary pieces, as a receive loop would.

use std::borrow::Cow;

use proptest::prelude::*;
use ringhub_proto::{
    CloseCode, Decoded, FrameHead, Limits, Message, MessageAssembler, Opcode, ParsedFrame,
    ProtocolError, Role, encode_close_frame, encode_frame, encode_header, encode_masked_frame,
    parse_frame,
};

/// What a message looks like once it no longer borrows the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Compressed(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl From<Message<'_>> for Owned {
    fn from(message: Message<'_>) -> Self {
        match message {
            Message::Text(text) => Owned::Text(text.into_owned()),
            Message::Binary(bytes) => Owned::Binary(bytes.into_owned()),
            Message::Compressed { text, payload } => Owned::Compressed(text, payload.into_owned()),
            Message::Ping(payload) => Owned::Ping(payload.to_vec()),
            Message::Pong(payload) => Owned::Pong(payload.to_vec()),
            Message::Close(close) => {
                Owned::Close(close.map(|(code, reason)| (code.as_u16(), reason.to_owned())))
            }
        }
    }
}

/// A receive loop as the engine runs it: parse frames from what has arrived,
/// keep the partial frame at the end for the next read.
struct Receiver {
    /// `MessageAssembler::decode`, or `parse_frame` then `push`.
    via_decode: bool,
    role: Role,
    limits: Limits,
    compression: bool,
    pending: Vec<u8>,
    assembler: MessageAssembler,
    /// The most `pending` ever held, to check memory stays bounded.
    peak_pending: usize,
    peak_reassembly: usize,
}

impl Receiver {
    fn new(role: Role, limits: Limits, compression: bool) -> Self {
        Receiver {
            via_decode: true,
            role,
            limits,
            compression,
            pending: Vec::new(),
            assembler: MessageAssembler::new(),
            peak_pending: 0,
            peak_reassembly: 0,
        }
    }

    fn receive(&mut self, bytes: &[u8], out: &mut Vec<Owned>) -> Result<(), ProtocolError> {
        self.pending.extend_from_slice(bytes);
        self.peak_pending = self.peak_pending.max(self.pending.len());
        let mut start = 0;
        let result = loop {
            let buf = &mut self.pending[start..];
            let step = if self.via_decode {
                self.assembler
                    .decode(buf, self.role, &self.limits, self.compression)
                    .map(|decoded| match decoded {
                        Decoded::Frame { message, consumed } => Ok((message, consumed)),
                        Decoded::Incomplete { needed } => Err(needed),
                    })
            } else {
                match parse_frame(buf, self.role, &self.limits, self.compression) {
                    Ok(ParsedFrame::Complete { frame, consumed }) => self
                        .assembler
                        .push(frame, &self.limits)
                        .map(|message| Ok((message, consumed))),
                    Ok(ParsedFrame::Incomplete { needed }) => Ok(Err(needed)),
                    Err(e) => Err(e),
                }
            };
            match step {
                Ok(Ok((message, consumed))) => {
                    start += consumed;
                    out.extend(message.map(Owned::from));
                    self.peak_reassembly = self.peak_reassembly.max(self.assembler.capacity());
                }
                Ok(Err(needed)) => {
                    // The driver may size its buffer from this: it must stay
                    // within one maximal frame.
                    assert!(needed > 0);
                    assert!(self.pending.len() - start + needed <= self.limits.max_frame + 14);
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        self.pending.drain(..start);
        result
    }

    fn receive_all(&mut self, bytes: &[u8]) -> Result<Vec<Owned>, ProtocolError> {
        let mut out = Vec::new();
        self.receive(bytes, &mut out)?;
        assert!(self.pending.is_empty(), "left over: {:?}", self.pending);
        Ok(out)
    }
}

fn server() -> Receiver {
    Receiver::new(Role::Server, Limits::default(), false)
}

fn client() -> Receiver {
    Receiver::new(Role::Client, Limits::default(), false)
}

const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

// RFC 6455 §5.7, byte for byte.

#[test]
fn rfc_single_frame_unmasked_text() {
    let wire = [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F];
    assert_eq!(
        client().receive_all(&wire),
        Ok(vec![Owned::Text("Hello".into())])
    );
    let mut encoded = Vec::new();
    encode_frame(&mut encoded, FrameHead::new(Opcode::Text), b"Hello");
    assert_eq!(encoded, wire);
}

#[test]
fn rfc_single_frame_masked_text() {
    let wire = [
        0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58,
    ];
    assert_eq!(
        server().receive_all(&wire),
        Ok(vec![Owned::Text("Hello".into())])
    );
    let mut encoded = Vec::new();
    encode_masked_frame(&mut encoded, FrameHead::new(Opcode::Text), b"Hello", KEY);
    assert_eq!(encoded, wire);
    // The other side of the rule: a client refuses it.
    assert_eq!(client().receive_all(&wire), Err(ProtocolError::MaskedFrame));
}

#[test]
fn rfc_fragmented_unmasked_text() {
    let wire = [0x01, 0x03, 0x48, 0x65, 0x6C, 0x80, 0x02, 0x6C, 0x6F];
    assert_eq!(
        client().receive_all(&wire),
        Ok(vec![Owned::Text("Hello".into())])
    );
    let mut encoded = Vec::new();
    let start = FrameHead {
        fin: false,
        ..FrameHead::new(Opcode::Text)
    };
    encode_frame(&mut encoded, start, b"Hel");
    encode_frame(&mut encoded, FrameHead::new(Opcode::Continuation), b"lo");
    assert_eq!(encoded, wire);
}

#[test]
fn rfc_ping_and_masked_pong() {
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F];
    assert_eq!(
        client().receive_all(&ping),
        Ok(vec![Owned::Ping(b"Hello".to_vec())])
    );
    let pong = [
        0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58,
    ];
    assert_eq!(
        server().receive_all(&pong),
        Ok(vec![Owned::Pong(b"Hello".to_vec())])
    );
}

#[test]
fn rfc_256_byte_and_64_kib_binary() {
    for (len, header) in [
        (256usize, vec![0x82, 0x7E, 0x01, 0x00]),
        (65536, vec![0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]),
    ] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        assert_eq!(
            encode_header(FrameHead::new(Opcode::Binary), len).as_bytes(),
            header
        );
        let mut wire = header.clone();
        wire.extend_from_slice(&payload);
        assert_eq!(
            client().receive_all(&wire),
            Ok(vec![Owned::Binary(payload)])
        );
    }
}

#[test]
fn a_single_frame_message_is_not_copied() {
    let mut wire = Vec::new();
    encode_masked_frame(&mut wire, FrameHead::new(Opcode::Binary), b"in place", KEY);
    let range = wire.as_ptr_range();
    let ParsedFrame::Complete { frame, .. } =
        parse_frame(&mut wire, Role::Server, &Limits::default(), false).unwrap()
    else {
        panic!("complete frame expected")
    };
    let mut assembler = MessageAssembler::new();
    match assembler.push(frame, &Limits::default()) {
        Ok(Some(Message::Binary(Cow::Borrowed(payload)))) => {
            assert_eq!(payload, b"in place");
            assert!(
                range.contains(&payload.as_ptr()),
                "payload points into the receive buffer"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn close_frames_round_trip() {
    let mut wire = Vec::new();
    encode_close_frame(&mut wire, CloseCode::Policy, "slow consumer");
    assert_eq!(
        client().receive_all(&wire),
        Ok(vec![Owned::Close(Some((1008, "slow consumer".into())))])
    );
}

/// Every way a client can break the rules, and the code the server closes with.
#[test]
fn every_error_path_has_its_close_code() {
    let masked = |b0: u8, payload: &[u8]| {
        let mut wire = vec![b0, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        wire.extend_from_slice(payload);
        wire
    };
    let long = |b0: u8, len: u64| {
        let mut wire = vec![b0, 0xFF];
        wire.extend_from_slice(&len.to_be_bytes());
        wire
    };
    let cases: Vec<(&str, Vec<u8>, ProtocolError, u16)> = vec![
        ("RSV2", masked(0xA1, b""), ProtocolError::ReservedBits, 1002),
        ("RSV3", masked(0x91, b""), ProtocolError::ReservedBits, 1002),
        (
            "RSV1 without deflate",
            masked(0xC1, b""),
            ProtocolError::ReservedBits,
            1002,
        ),
        (
            "opcode 3",
            masked(0x83, b""),
            ProtocolError::ReservedOpcode(3),
            1002,
        ),
        (
            "opcode 0xB",
            masked(0x8B, b""),
            ProtocolError::ReservedOpcode(0xB),
            1002,
        ),
        (
            "fragmented ping",
            masked(0x09, b""),
            ProtocolError::FragmentedControlFrame,
            1002,
        ),
        (
            "126-byte ping",
            vec![0x89, 0xFE, 0, 126],
            ProtocolError::ControlFrameTooLong,
            1002,
        ),
        (
            "unmasked",
            vec![0x81, 0x00],
            ProtocolError::UnmaskedFrame,
            1002,
        ),
        (
            "length MSB",
            long(0x82, 1 << 63),
            ProtocolError::LengthMsbSet,
            1002,
        ),
        (
            "frame over the limit",
            long(0x82, 16 << 20 | 1),
            ProtocolError::FrameTooBig {
                len: 16 << 20 | 1,
                max: 16 << 20,
            },
            1009,
        ),
        (
            "lone continuation",
            masked(0x80, b"x"),
            ProtocolError::UnexpectedContinuation,
            1002,
        ),
        (
            "text inside a fragmented message",
            [masked(0x01, b"a"), masked(0x81, b"b")].concat(),
            ProtocolError::ExpectedContinuation,
            1002,
        ),
        (
            "bad UTF-8",
            masked(0x81, b"\xC0\xAF"),
            ProtocolError::InvalidUtf8,
            1007,
        ),
        (
            "bad UTF-8 across fragments",
            [masked(0x01, b"\xE2\x82"), masked(0x80, b"\x28")].concat(),
            ProtocolError::InvalidUtf8,
            1007,
        ),
        (
            "1-byte close",
            masked(0x88, b"\x03"),
            ProtocolError::CloseTooShort,
            1002,
        ),
        (
            "close code 1005",
            masked(0x88, b"\x03\xED"),
            ProtocolError::InvalidCloseCode(1005),
            1002,
        ),
        (
            "close code 5000",
            masked(0x88, b"\x13\x88"),
            ProtocolError::InvalidCloseCode(5000),
            1002,
        ),
        (
            "close reason not UTF-8",
            masked(0x88, b"\x03\xE8\xFF"),
            ProtocolError::InvalidUtf8,
            1007,
        ),
    ];
    for (name, wire, error, code) in cases {
        let got = server().receive_all(&wire);
        assert_eq!(got.as_ref().err(), Some(&error), "{name}");
        assert_eq!(error.close_code().as_u16(), code, "{name}");
    }

    // Compression on: RSV1 is fine on a first frame, never on the others.
    let mut deflating = Receiver::new(Role::Server, Limits::default(), true);
    assert!(deflating.receive_all(&masked(0xC1, b"x")).is_ok());
    for b0 in [0xC0, 0xC9] {
        let err = Receiver::new(Role::Server, Limits::default(), true)
            .receive_all(&[masked(0x41, b"x"), masked(b0, b"")].concat())
            .unwrap_err();
        assert_eq!(err, ProtocolError::CompressedNonFirstFrame);
        assert_eq!(err.close_code(), CloseCode::Protocol);
    }

    // A message over the limit across fragments.
    let limits = Limits {
        max_frame: 100,
        max_message: 150,
    };
    let mut small = Receiver::new(Role::Server, limits, false);
    let wire = [masked(0x02, &[0; 100]), masked(0x80, &[0; 51])].concat();
    let err = small.receive_all(&wire).unwrap_err();
    assert_eq!(err, ProtocolError::MessageTooBig { max: 150 });
    assert_eq!(err.close_code(), CloseCode::TooBig);
}

#[test]
fn oversized_frame_is_refused_before_its_payload() {
    // Only the 10-byte header of a 1 GiB frame: refused at once.
    let mut wire = vec![0x82, 0xFF];
    wire.extend_from_slice(&(1u64 << 30).to_be_bytes());
    let err = server().receive_all(&wire).unwrap_err();
    assert_eq!(err.close_code(), CloseCode::TooBig);
}

/// A frame as a test wants it on the wire.
#[derive(Debug, Clone)]
struct WireFrame {
    head: FrameHead,
    payload: Vec<u8>,
    key: Option<[u8; 4]>,
}

impl WireFrame {
    fn encode(&self, out: &mut Vec<u8>) {
        match self.key {
            Some(key) => encode_masked_frame(out, self.head, &self.payload, key),
            None => encode_frame(out, self.head, &self.payload),
        }
    }
}

fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..140, 120usize..135, 65530usize..65540, 0usize..3000]
}

fn any_frame() -> impl Strategy<Value = WireFrame> {
    let control = (
        prop_oneof![Just(Opcode::Ping), Just(Opcode::Pong), Just(Opcode::Close)],
        0usize..=125,
    )
        .prop_map(|(opcode, len)| (FrameHead::new(opcode), len));
    let data = (
        prop_oneof![
            Just(Opcode::Text),
            Just(Opcode::Binary),
            Just(Opcode::Continuation)
        ],
        any::<bool>(),
        any::<bool>(),
        payload_len(),
    )
        .prop_map(|(opcode, fin, rsv1, len)| {
            let rsv1 = rsv1 && opcode != Opcode::Continuation;
            (FrameHead { fin, rsv1, opcode }, len)
        });
    (
        prop_oneof![control, data],
        any::<u8>(),
        proptest::option::of(any::<[u8; 4]>()),
    )
        .prop_map(|((head, len), seed, key)| WireFrame {
            head,
            payload: (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect(),
            key,
        })
}

fn split_points(len: usize, cuts: &[usize]) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    points.extend([0, len]);
    points.sort_unstable();
    points
}

/// Splits a message into fragments at the given cut points.
fn fragments(text: bool, payload: &[u8], cuts: &[usize], key: [u8; 4]) -> Vec<WireFrame> {
    let points = split_points(payload.len(), cuts);
    let last = points.len() - 2;
    points
        .windows(2)
        .enumerate()
        .map(|(i, w)| WireFrame {
            head: FrameHead {
                fin: i == last,
                rsv1: false,
                opcode: match (i, text) {
                    (0, true) => Opcode::Text,
                    (0, false) => Opcode::Binary,
                    _ => Opcode::Continuation,
                },
            },
            payload: payload[w[0]..w[1]].to_vec(),
            key: Some([key[0], key[1], key[2], key[3].wrapping_add(i as u8)]),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any frame, masked or not, encoded then parsed from a buffer that grows
    /// in two steps, comes back the same; before it is whole the parser says
    /// how much is missing and leaves the buffer alone.
    #[test]
    fn encode_then_parse_round_trips(frame in any_frame(), split in any::<usize>()) {
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        let role = if frame.key.is_some() { Role::Server } else { Role::Client };
        let split = split % (wire.len() + 1);

        let mut partial = wire[..split].to_vec();
        if split < wire.len() {
            match parse_frame(&mut partial, role, &Limits::default(), true) {
                Ok(ParsedFrame::Incomplete { needed }) => {
                    prop_assert!(needed >= 1 && split + needed <= wire.len());
                    prop_assert_eq!(&partial[..], &wire[..split]);
                }
                other => prop_assert!(false, "expected incomplete, got {:?}", other),
            }
        }
        let mut whole = wire.clone();
        let ParsedFrame::Complete { frame: parsed, consumed } =
            parse_frame(&mut whole, role, &Limits::default(), true).unwrap()
        else {
            panic!("complete frame expected");
        };
        prop_assert_eq!(consumed, wire.len());
        prop_assert_eq!(
            FrameHead { fin: parsed.fin, rsv1: parsed.rsv1, opcode: parsed.opcode },
            frame.head
        );
        prop_assert_eq!(parsed.payload, &frame.payload[..]);
    }

    /// Messages fragmented anywhere, with pings between fragments, sent as one
    /// stream cut into arbitrary reads, come out whole and in order.
    #[test]
    fn fragmented_streams_reassemble(
        messages in proptest::collection::vec(
            (any::<bool>(), "\\PC{0,60}", proptest::collection::vec(any::<usize>(), 0..4), any::<bool>()),
            1..6),
        key in any::<[u8; 4]>(),
        reads in proptest::collection::vec(any::<usize>(), 0..12),
        via_decode in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for (text, body, cuts, ping) in &messages {
            let frames = fragments(*text, body.as_bytes(), cuts, key);
            for (i, frame) in frames.iter().enumerate() {
                frame.encode(&mut wire);
                if *ping && i + 1 < frames.len() {
                    encode_masked_frame(&mut wire, FrameHead::new(Opcode::Ping), &[i as u8], key);
                    expected.push(Owned::Ping(vec![i as u8]));
                }
            }
            expected.push(if *text {
                Owned::Text(body.clone())
            } else {
                Owned::Binary(body.clone().into_bytes())
            });
        }
        let mut receiver = server();
        receiver.via_decode = via_decode;
        let mut out = Vec::new();
        for w in split_points(wire.len(), &reads).windows(2) {
            receiver.receive(&wire[w[0]..w[1]], &mut out).unwrap();
        }
        prop_assert_eq!(out, expected);
        prop_assert!(receiver.pending.is_empty());
        prop_assert_eq!(receiver.assembler.capacity(), 0);
    }

    /// Arbitrary bytes, in arbitrary reads, never panic, and memory stays
    /// within the limits whatever they claim.
    #[test]
    fn arbitrary_bytes_stay_within_limits(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        reads in proptest::collection::vec(any::<usize>(), 0..10),
        role_is_server in any::<bool>(),
        compression in any::<bool>(),
        via_decode in any::<bool>(),
    ) {
        let role = if role_is_server { Role::Server } else { Role::Client };
        check_bounded(role, compression, via_decode, &bytes, &reads);
    }

    /// The same with frame-shaped input, which gets much further: random
    /// first bytes (flags and opcodes), lengths near the limits, random masks.
    #[test]
    fn frame_shaped_bytes_stay_within_limits(
        frames in proptest::collection::vec(
            (first_byte(), prop_oneof![0usize..130, 240usize..260],
             prop_oneof![9 => Just(true), 1 => Just(false)],
             prop_oneof![3 => 0x20u8..0x7F, 1 => any::<u8>()]),
            0..20),
        reads in proptest::collection::vec(any::<usize>(), 0..10),
        compression in any::<bool>(),
        via_decode in any::<bool>(),
    ) {
        let wire = frame_shaped(&frames);
        check_bounded(Role::Server, compression, via_decode, &wire, &reads);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// `decode` and `parse_frame` + `push` agree on every stream: the same
    /// messages and the same error. `decode` may only fail sooner, on a frame
    /// still arriving, whose header or text already breaks a rule.
    #[test]
    fn decode_agrees_with_parse_and_push(
        frames in proptest::collection::vec(
            (first_byte(), prop_oneof![0usize..130, 240usize..260],
             prop_oneof![9 => Just(true), 1 => Just(false)],
             prop_oneof![3 => 0x20u8..0x7F, 1 => any::<u8>()]),
            0..12),
        reads in proptest::collection::vec(any::<usize>(), 0..10),
        compression in any::<bool>(),
    ) {
        let wire = frame_shaped(&frames);
        let limits = Limits { max_frame: 250, max_message: 400 };
        let run = |via_decode: bool| {
            let mut receiver = Receiver::new(Role::Server, limits, compression);
            receiver.via_decode = via_decode;
            let mut out = Vec::new();
            let mut error = None;
            for w in split_points(wire.len(), &reads).windows(2) {
                if let Err(e) = receiver.receive(&wire[w[0]..w[1]], &mut out) {
                    error = Some(e);
                    break;
                }
            }
            (out, error, receiver.pending.is_empty())
        };
        let (decoded, decode_error, _) = run(true);
        let (pushed, push_error, push_drained) = run(false);
        prop_assert_eq!(decoded, pushed);
        match (decode_error, push_error) {
            (a, Some(b)) => prop_assert_eq!(a, Some(b)),
            (Some(_), None) => prop_assert!(!push_drained, "decode failed on a complete stream"),
            (None, None) => {}
        }
    }
}

/// Mostly legal first bytes (FIN, a sometimes-set RSV1, a known opcode) so
/// streams get past the header checks, and now and then any byte.
fn first_byte() -> impl Strategy<Value = u8> {
    let legal = (
        any::<bool>(),
        prop_oneof![4 => Just(false), 1 => Just(true)],
        prop_oneof![Just(0u8), Just(1), Just(2), Just(8), Just(9), Just(0xA)],
    )
        .prop_map(|(fin, rsv1, opcode)| u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode);
    prop_oneof![9 => legal, 1 => any::<u8>()]
}

/// Frame-shaped bytes from (first byte, length, masked, fill) tuples.
fn frame_shaped(frames: &[(u8, usize, bool, u8)]) -> Vec<u8> {
    let mut wire = Vec::new();
    for &(b0, len, masked, fill) in frames {
        wire.push(b0);
        let mask_bit = if masked { 0x80 } else { 0 };
        if len < 126 {
            wire.push(mask_bit | len as u8);
        } else {
            wire.push(mask_bit | 126);
            wire.extend_from_slice(&(len as u16).to_be_bytes());
        }
        if masked {
            wire.extend_from_slice(&[fill, 1, 2, 3]);
        }
        wire.extend(std::iter::repeat_n(fill, len));
    }
    wire
}

fn check_bounded(role: Role, compression: bool, via_decode: bool, bytes: &[u8], reads: &[usize]) {
    let limits = Limits {
        max_frame: 250,
        max_message: 400,
    };
    let mut receiver = Receiver::new(role, limits, compression);
    receiver.via_decode = via_decode;
    let mut out = Vec::new();
    for w in split_points(bytes.len(), reads).windows(2) {
        let result = receiver.receive(&bytes[w[0]..w[1]], &mut out);
        assert!(receiver.peak_reassembly <= limits.max_message);
        if let Err(e) = result {
            // Whatever went wrong maps to a code a peer may receive.
            assert!(CloseCode::from_u16(e.close_code().as_u16()).is_some());
            return;
        }
    }
}
