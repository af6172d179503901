//! permessage-deflate: negotiation rules (RFC 7692 §5, §7.1), the RFC's
//! §7.2.3 examples, round trips at every window size, the output limit
//! against a 1 GiB bomb, and properties over arbitrary input.

use flate2::{Decompress, FlushDecompress};
use proptest::prelude::*;
use ringhub_proto::{
    CloseCode, CompressionPolicy, Compressors, DeflateConfig, DeflateParams, Deflater,
    InflateError, Inflater, negotiate_deflate,
};

const SHARED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn negotiate_with(lines: &[&str], config: &DeflateConfig) -> Option<String> {
    negotiate_deflate(lines.iter().map(|l| l.as_bytes()), config).map(|params| {
        let mut out = Vec::new();
        params.write_response_value(&mut out);
        String::from_utf8(out).expect("ASCII")
    })
}

fn negotiate(lines: &[&str]) -> Option<String> {
    negotiate_with(lines, &DeflateConfig::default())
}

fn shared_with_window(bits: u8) -> String {
    format!("{SHARED}; server_max_window_bits={bits}")
}

#[test]
fn accepted_offers() {
    let cases: &[(&[&str], String)] = &[
        (&["permessage-deflate"], SHARED.into()),
        (&["PerMessage-Deflate"], SHARED.into()),
        (
            &["permessage-deflate; client_max_window_bits"],
            SHARED.into(),
        ),
        (
            &["permessage-deflate; client_max_window_bits=10"],
            SHARED.into(),
        ),
        (
            &["permessage-deflate; client_max_window_bits=8"],
            SHARED.into(),
        ),
        (
            &["permessage-deflate; client_max_window_bits=\"12\""],
            SHARED.into(),
        ),
        (
            &["permessage-deflate; server_no_context_takeover"],
            SHARED.into(),
        ),
        (
            &["permessage-deflate;client_no_context_takeover"],
            SHARED.into(),
        ),
        (
            &["permessage-deflate; server_max_window_bits=10"],
            shared_with_window(10),
        ),
        (
            &["permessage-deflate; server_max_window_bits=\"9\""],
            shared_with_window(9),
        ),
        (
            &["permessage-deflate ; server_max_window_bits = 15 "],
            shared_with_window(15),
        ),
        (
            &[
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12",
            ],
            shared_with_window(12),
        ),
    ];
    for (lines, want) in cases {
        assert_eq!(
            negotiate(lines).as_deref(),
            Some(want.as_str()),
            "{lines:?}"
        );
    }
}

#[test]
fn bad_offers_are_declined_and_the_next_one_taken() {
    let bad = [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=\"1 0\"",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; unknown_parameter",
        "permessage-deflate; x-custom=1",
        "permessage-deflate; =10",
        // zlib cannot compress with an 8-bit window, so this cannot be honoured.
        "permessage-deflate; server_max_window_bits=8",
    ];
    for offer in bad {
        assert_eq!(negotiate(&[offer]), None, "{offer}");
        // Same line, followed by a good offer: the good one wins.
        let line = format!("{offer}, permessage-deflate; server_max_window_bits=11");
        assert_eq!(negotiate(&[&line]), Some(shared_with_window(11)), "{line}");
    }
}

#[test]
fn offers_across_lines_and_other_extensions() {
    assert_eq!(
        negotiate(&["x-webkit-deflate-frame", "permessage-deflate"]),
        Some(SHARED.into())
    );
    assert_eq!(
        negotiate(&["foo; bar=\"a,b\", permessage-deflate; server_max_window_bits=13"]),
        Some(shared_with_window(13)),
        "a comma inside quotes does not split"
    );
    assert_eq!(
        negotiate(&[
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
            "permessage-deflate; server_max_window_bits=12",
        ]),
        Some(shared_with_window(10)),
        "first acceptable offer wins"
    );
    assert_eq!(negotiate(&[",, ,permessage-deflate,"]), Some(SHARED.into()));
    assert_eq!(negotiate(&["foo, bar"]), None);
    assert_eq!(negotiate(&[]), None);
    assert_eq!(
        negotiate(&["permessage-deflate;;"]),
        None,
        "empty parameter"
    );
    // An unterminated quote runs to the end of its line; the next line counts.
    let unterminated = "permessage-deflate; server_max_window_bits=\"10, permessage-deflate";
    assert_eq!(negotiate(&[unterminated]), None);
    assert_eq!(
        negotiate(&[unterminated, "permessage-deflate"]),
        Some(SHARED.into())
    );
}

#[test]
fn context_takeover_config_only_adds_what_the_client_asked_for() {
    let config = DeflateConfig {
        enabled: true,
        context_takeover: true,
    };
    assert_eq!(
        negotiate_with(&["permessage-deflate"], &config).as_deref(),
        Some("permessage-deflate")
    );
    assert_eq!(
        negotiate_with(&["permessage-deflate; server_no_context_takeover"], &config).as_deref(),
        Some("permessage-deflate; server_no_context_takeover")
    );
    assert_eq!(
        negotiate_with(&["permessage-deflate; client_no_context_takeover"], &config).as_deref(),
        Some("permessage-deflate; client_no_context_takeover")
    );
    let params = negotiate_deflate([&b"permessage-deflate"[..]], &config).expect("accepted");
    assert!(!params.shares_compressor() && !params.shares_decompressor());
    let params = negotiate_deflate([&b"permessage-deflate"[..]], &DeflateConfig::default())
        .expect("accepted");
    assert!(params.shares_compressor() && params.shares_decompressor());
}

fn inflate(inflater: &mut Inflater, compressed: &[u8]) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    inflater
        .inflate(compressed, &mut out, 1 << 20)
        .map(|()| out)
}

// RFC 7692 §7.2.3.1: "Hello" compressed, in one frame and in two fragments.
#[test]
fn rfc7692_hello() {
    let mut inflater = Inflater::new(false);
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(inflate(&mut inflater, &hello).expect("inflate"), b"Hello");
    // Two fragments: the receiver joins the payloads, then inflates.
    let joined = [&[0xf2, 0x48, 0xcd][..], &[0xc9, 0xc9, 0x07, 0x00][..]].concat();
    assert_eq!(inflate(&mut inflater, &joined).expect("inflate"), b"Hello");
}

// RFC 7692 §7.2.3.2: the second "Hello" refers back into the first message.
#[test]
fn rfc7692_shared_window() {
    let first = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let second = [0xf2, 0x00, 0x11, 0x00, 0x00];
    let mut takeover = Inflater::new(true);
    assert_eq!(inflate(&mut takeover, &first).expect("inflate"), b"Hello");
    assert_eq!(inflate(&mut takeover, &second).expect("inflate"), b"Hello");
    // Without context takeover the back-reference points at nothing.
    let mut fresh = Inflater::new(false);
    assert_eq!(inflate(&mut fresh, &first).expect("inflate"), b"Hello");
    let err = inflate(&mut fresh, &second).expect_err("reference before the window");
    assert_eq!(err, InflateError::Corrupt);
}

// RFC 7692 §7.2.3.3: a stored (uncompressed) DEFLATE block.
#[test]
fn rfc7692_stored_block() {
    let stored = [
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(
        inflate(&mut Inflater::new(false), &stored).expect("inflate"),
        b"Hello"
    );
}

// RFC 7692 §7.2.3.4: a final (BFINAL=1) block, padded; the appended tail is
// ignored and the next message starts afresh.
#[test]
fn rfc7692_bfinal_block() {
    let mut inflater = Inflater::new(true);
    let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    assert_eq!(inflate(&mut inflater, &bfinal).expect("inflate"), b"Hello");
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(inflate(&mut inflater, &hello).expect("inflate"), b"Hello");
}

// An empty message compresses to an empty payload once the tail is
// stripped (RFC 7692 §7.2.3.6), or to an empty fixed block.
#[test]
fn empty_messages() {
    let mut inflater = Inflater::new(false);
    assert_eq!(inflate(&mut inflater, &[]).expect("inflate"), b"");
    assert_eq!(inflate(&mut inflater, &[0x02, 0x00]).expect("inflate"), b"");
    assert_eq!(inflate(&mut inflater, &[0x00]).expect("inflate"), b"");
    let mut out = Vec::new();
    inflater
        .inflate(&[], &mut out, 0)
        .expect("limit 0 fits an empty message");
}

#[test]
fn corrupt_data_maps_to_1007() {
    let mut inflater = Inflater::new(false);
    // BTYPE=11 is reserved.
    let err = inflate(&mut inflater, &[0xff, 0xff, 0xff]).expect_err("corrupt");
    assert_eq!(err, InflateError::Corrupt);
    assert_eq!(err.close_code(), CloseCode::Invalid);
    // A stored block whose length check fails.
    let err = inflate(&mut inflater, &[0x00, 0x05, 0x00, 0x00, 0x00]).expect_err("corrupt");
    assert_eq!(err, InflateError::Corrupt);
    // The shared inflater is usable again for the next connection's message.
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(inflate(&mut inflater, &hello).expect("inflate"), b"Hello");
}

/// Bits in DEFLATE order: header fields LSB first, Huffman codes MSB first.
struct BitWriter {
    bytes: Vec<u8>,
    bit: u32,
}

impl BitWriter {
    fn bits(&mut self, value: u32, count: u32) {
        for i in 0..count {
            if self.bit == 0 {
                self.bytes.push(0);
            }
            let last = self.bytes.len() - 1;
            self.bytes[last] |= (((value >> i) & 1) as u8) << self.bit;
            self.bit = (self.bit + 1) % 8;
        }
    }

    fn code(&mut self, code: u32, count: u32) {
        self.bits(code.reverse_bits() >> (32 - count), count);
    }
}

/// A message that inflates to `1 + 258 * matches` zero bytes: one fixed
/// Huffman block of a literal 0 and `matches` copies of (length 258,
/// distance 1), 13 bits each, ended like a sync flush without the tail.
fn zero_bomb(matches: usize) -> Vec<u8> {
    let mut w = BitWriter {
        bytes: Vec::new(),
        bit: 0,
    };
    w.bits(0, 1); // BFINAL = 0
    w.bits(1, 2); // BTYPE = 01, fixed Huffman
    w.code(0b0011_0000, 8); // literal 0
    for _ in 0..matches {
        w.code(0b1100_0101, 8); // length code 285: 258 bytes
        w.code(0, 5); // distance code 0: distance 1
    }
    w.code(0, 7); // end of block
    w.bits(0, 3); // empty stored block header; LEN/NLEN come from the tail
    w.bytes
}

#[test]
fn bomb_generator_is_sound() {
    let bomb = zero_bomb(1000);
    let out = inflate(&mut Inflater::new(false), &bomb).expect("inflate");
    assert_eq!(out.len(), 1 + 258 * 1000);
    assert!(out.iter().all(|&b| b == 0));
}

#[test]
fn a_one_gib_bomb_stops_at_the_limit() {
    // ≈ 1 GiB of output from ≈ 6.5 MiB of input: deflate tops out near 1032:1.
    let bomb = zero_bomb((1 << 30) / 258);
    let limit = 1 << 20;
    let mut inflater = Inflater::new(false);
    let mut out = Vec::new();
    let err = inflater.inflate(&bomb, &mut out, limit).expect_err("bomb");
    assert_eq!(err, InflateError::TooBig { limit });
    assert_eq!(err.close_code(), CloseCode::TooBig);
    assert!(out.is_empty(), "a failed message leaves nothing behind");
    assert!(
        out.capacity() <= limit + 1,
        "buffer grew to {} bytes, past the {limit} limit",
        out.capacity()
    );
    // The inflater is reset and serves the next message.
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(inflate(&mut inflater, &hello).expect("inflate"), b"Hello");
}

#[test]
fn limit_is_exact() {
    let bomb = zero_bomb(10); // 2581 bytes
    let mut out = Vec::new();
    Inflater::new(false)
        .inflate(&bomb, &mut out, 2581)
        .expect("exactly at the limit");
    assert_eq!(out.len(), 2581);
    let mut out = vec![1, 2, 3];
    let err = Inflater::new(false)
        .inflate(&bomb, &mut out, 2580)
        .expect_err("one over");
    assert_eq!(err, InflateError::TooBig { limit: 2580 });
    assert_eq!(out, [1, 2, 3], "bytes before the message are kept");
}

fn json_like(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!(r#"{{"type":"message","from":"user{}","topic":"prices","data":{{"sym":"X{}","px":{}.{}}},"ts":{}}},"#, i % 17, i % 5, 100 + i * 7 % 13, i % 100, 1_700_000_000_000 + i)
                .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

#[test]
fn round_trip_at_every_window_size_and_honours_the_window() {
    let message = json_like(64 * 1024);
    let mut compressors = Compressors::new(CompressionPolicy::default());
    for bits in 9..=15 {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: bits,
            announce_server_window: true,
        };
        let mut compressed = Vec::new();
        let len = compressors
            .compress(&params, &message, &mut compressed)
            .expect("deflate")
            .expect("JSON shrinks");
        assert_eq!(len, compressed.len());
        assert!(len < message.len() / 3, "window {bits}: {len} bytes");
        // A client that allocated only the agreed window must decode it.
        let mut strict = Decompress::new_with_window_bits(false, bits);
        let mut input = compressed.clone();
        input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
        let mut out = Vec::with_capacity(message.len() + 1);
        strict
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .expect("strict inflate");
        assert_eq!(out, message, "window {bits}");
        // And our own inflater, which always uses the largest window.
        let mut ours = Vec::new();
        Inflater::new(false)
            .inflate(&compressed, &mut ours, message.len())
            .expect("inflate");
        assert_eq!(ours, message);
    }
}

#[test]
fn no_context_takeover_compresses_a_broadcast_to_identical_bytes() {
    let message = json_like(4096);
    let params = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
        announce_server_window: false,
    };
    let mut compressors = Compressors::new(CompressionPolicy::default());
    let mut first = Vec::new();
    let mut second = Vec::new();
    compressors
        .compress(&params, &message, &mut first)
        .expect("deflate");
    compressors
        .compress(&params, &message, &mut second)
        .expect("deflate");
    assert_eq!(first, second);
}

#[test]
fn context_takeover_reuses_the_window_across_messages() {
    let message = json_like(2048);
    let mut deflater = Deflater::new(CompressionPolicy::default(), 15, true);
    let mut inflater = Inflater::new(true);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let mut compressed = Vec::new();
        let len = deflater
            .compress(&message, &mut compressed)
            .expect("deflate")
            .expect("shrinks");
        sizes.push(len);
        let mut out = Vec::new();
        inflater
            .inflate(&compressed, &mut out, message.len())
            .expect("inflate");
        assert_eq!(out, message);
    }
    assert!(sizes[1] < sizes[0] / 4, "repeat refers back: {sizes:?}");
}

#[test]
fn takeover_survives_an_uncompressed_message_in_between() {
    // The compressor resets when it gives up on a message, so the peer's
    // window (which never saw that message) still matches.
    let mut deflater = Deflater::new(
        CompressionPolicy {
            min_size: 0,
            level: 6,
        },
        15,
        true,
    );
    let mut inflater = Inflater::new(true);
    for message in [json_like(1000), b"tiny".to_vec(), json_like(1000)] {
        let mut compressed = Vec::new();
        match deflater
            .compress(&message, &mut compressed)
            .expect("deflate")
        {
            Some(_) => {
                let mut out = Vec::new();
                inflater
                    .inflate(&compressed, &mut out, 4096)
                    .expect("inflate");
                assert_eq!(out, message);
            }
            None => assert!(compressed.is_empty()),
        }
    }
}

proptest! {
    /// Whatever the bytes, inflating never panics and never returns more than
    /// the limit.
    #[test]
    fn inflate_never_exceeds_the_limit(
        input in proptest::collection::vec(any::<u8>(), 0..512),
        limit in 0usize..4096,
        takeover in any::<bool>(),
    ) {
        let mut inflater = Inflater::new(takeover);
        let mut out = Vec::new();
        match inflater.inflate(&input, &mut out, limit) {
            Ok(()) => prop_assert!(out.len() <= limit),
            Err(_) => prop_assert!(out.is_empty()),
        }
        prop_assert!(out.capacity() <= limit + 1);
    }

    /// Valid streams of any expansion: accepted exactly when they fit.
    #[test]
    fn bombs_fit_or_fail_at_the_limit(matches in 0usize..2000, limit in 0usize..600_000) {
        let bomb = zero_bomb(matches);
        let size = 1 + 258 * matches;
        let mut out = Vec::new();
        match Inflater::new(false).inflate(&bomb, &mut out, limit) {
            Ok(()) => prop_assert!(size <= limit && out.len() == size),
            Err(err) => {
                prop_assert!(size > limit);
                prop_assert_eq!(err, InflateError::TooBig { limit });
            }
        }
        prop_assert!(out.capacity() <= limit + 1);
    }

    /// Compress then inflate gives the message back, whatever it is.
    #[test]
    fn round_trip(message in proptest::collection::vec(any::<u8>(), 0..8192), bits in 9u8..=15) {
        let mut deflater = Deflater::new(CompressionPolicy { min_size: 0, level: 6 }, bits, false);
        let mut compressed = Vec::new();
        if deflater.compress(&message, &mut compressed).expect("deflate").is_some() {
            prop_assert!(compressed.len() < message.len());
            let mut out = Vec::new();
            Inflater::new(false).inflate(&compressed, &mut out, message.len()).expect("inflate");
            prop_assert_eq!(out, message);
        } else {
            prop_assert!(compressed.is_empty());
        }
    }
}

/// A real RFC 7692 peer: Python `websockets` (strict about windows and
/// `no_context_takeover`) sends JSON messages of many sizes through a server
/// built from this crate, which inflates each one and echoes it compressed.
mod interop {
    use std::io::{Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};
    use std::process::Command;

    use ringhub_proto::{
        CompressionPolicy, Compressors, DeflateConfig, Deflater, FrameHead, Inflater, Limits,
        Opcode, Parsed, ParsedFrame, RequestLimits, Role, WebSocketUpgrade, encode_frame,
        negotiate_deflate, parse_frame, parse_request,
    };

    /// What the server saw.
    #[derive(Debug, Default)]
    struct Seen {
        extension_response: Option<String>,
        compressed_in: usize,
        compressed_out: usize,
        messages: usize,
    }

    /// Serves one connection: handshake, then echo every data message until
    /// the client closes.
    fn serve_one(listener: TcpListener, config: DeflateConfig) -> Seen {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut seen = Seen::default();
        let (params, mut used) = loop {
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "client left during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            let Parsed::Complete { request, head_len } =
                parse_request(&buf, &RequestLimits::default()).expect("request")
            else {
                continue;
            };
            let upgrade = WebSocketUpgrade::from_request(&request).expect("upgrade");
            let params = negotiate_deflate(upgrade.extension_headers(), &config);
            let mut out = Vec::new();
            upgrade.write_accept(&mut out, None, params.as_ref());
            stream.write_all(&out).expect("write 101");
            seen.extension_response = params.map(|p| {
                let mut value = Vec::new();
                p.write_response_value(&mut value);
                String::from_utf8(value).expect("ASCII")
            });
            break (params, head_len);
        };
        let limits = Limits::default();
        // Shared state for what the client agreed not to keep, per-connection
        // state otherwise, as a server would choose from the parameters.
        let mut compressors = Compressors::new(CompressionPolicy::default());
        let mut own_deflater = params
            .filter(|p| !p.shares_compressor())
            .map(|p| Deflater::new(CompressionPolicy::default(), p.server_max_window_bits, true));
        let mut inflater = Inflater::new(params.is_some_and(|p| !p.shares_decompressor()));
        loop {
            match parse_frame(&mut buf[used..], Role::Server, &limits, params.is_some())
                .expect("a valid frame")
            {
                ParsedFrame::Incomplete { .. } => {
                    buf.drain(..used);
                    used = 0;
                    let n = stream.read(&mut chunk).expect("read");
                    assert!(n > 0, "client left without a close frame");
                    buf.extend_from_slice(&chunk[..n]);
                }
                ParsedFrame::Complete { frame, consumed } => {
                    used += consumed;
                    assert!(frame.fin, "this test's client does not fragment");
                    let mut out = Vec::new();
                    match frame.opcode {
                        Opcode::Text | Opcode::Binary => {
                            let mut message = Vec::new();
                            let payload = if frame.rsv1 {
                                seen.compressed_in += 1;
                                inflater
                                    .inflate(frame.payload, &mut message, limits.max_message)
                                    .expect("inflate");
                                &message[..]
                            } else {
                                frame.payload
                            };
                            seen.messages += 1;
                            let mut compressed = Vec::new();
                            let deflated = match (params, own_deflater.as_mut()) {
                                (Some(_), Some(own)) => own.compress(payload, &mut compressed),
                                (Some(p), None) => {
                                    compressors.compress(&p, payload, &mut compressed)
                                }
                                (None, _) => Ok(None),
                            }
                            .expect("deflate")
                            .is_some();
                            let head = FrameHead {
                                fin: true,
                                rsv1: deflated,
                                opcode: frame.opcode,
                            };
                            if deflated {
                                seen.compressed_out += 1;
                                encode_frame(&mut out, head, &compressed);
                            } else {
                                encode_frame(&mut out, head, payload);
                            }
                        }
                        Opcode::Close => {
                            encode_frame(&mut out, FrameHead::new(Opcode::Close), frame.payload);
                            stream.write_all(&out).expect("write close");
                            return seen;
                        }
                        Opcode::Ping => {
                            encode_frame(&mut out, FrameHead::new(Opcode::Pong), frame.payload)
                        }
                        _ => {}
                    }
                    stream.write_all(&out).expect("write");
                }
            }
        }
    }

    const CLIENT: &str = r#"
import json, sys
from websockets.sync.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

url, window = sys.argv[1], sys.argv[2]
extensions = [ClientPerMessageDeflateFactory(
    server_max_window_bits=int(window) if window != "none" else None,
    client_max_window_bits=True,
)]
with connect(url, extensions=extensions, compression=None, max_size=2**22) as ws:
    for i in range(60):
        message = json.dumps({"type": "publish", "topic": "prices", "id": i,
                              "data": [{"sym": "X%d" % (j % 7), "px": j * 1.25} for j in range(i * i)]})
        ws.send(message)
        assert ws.recv() == message, i
    ws.send(b"\x00\x01" * 4096)
    assert ws.recv() == b"\x00\x01" * 4096
"#;

    fn python() -> std::path::PathBuf {
        ringhub_testkit::python_with("websockets")
    }

    fn round_trip(window: Option<u8>, config: DeflateConfig) -> Seen {
        let python = python();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || serve_one(listener, config));
        let window = window.map_or("none".to_owned(), |w| w.to_string());
        let client = Command::new(python)
            .args(["-c", CLIENT, &format!("ws://{addr}/ws"), &window])
            .output()
            .expect("run the Python client");
        assert!(
            client.status.success(),
            "Python client failed:\n{}",
            String::from_utf8_lossy(&client.stderr)
        );
        // Dropped client stream: make sure the server thread cannot hang.
        drop(TcpStream::connect(addr));
        server.join().expect("server thread")
    }

    #[test]
    fn python_websockets_round_trips_compressed_messages() {
        let seen = round_trip(None, DeflateConfig::default());
        assert_eq!(
            seen.extension_response.as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert_eq!(seen.messages, 61);
        assert!(seen.compressed_in >= 50, "{seen:?}");
        assert!(seen.compressed_out >= 50, "{seen:?}");
    }

    #[test]
    fn python_websockets_with_a_small_server_window() {
        // Python inflates with exactly the window it asked for: a distance
        // past 2^10 bytes would fail its decompressor.
        let seen = round_trip(Some(10), DeflateConfig::default());
        assert_eq!(
            seen.extension_response.as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10"
            )
        );
        assert_eq!(seen.messages, 61);
        assert!(seen.compressed_out >= 50, "{seen:?}");
    }

    #[test]
    fn python_websockets_with_context_takeover() {
        let config = DeflateConfig {
            enabled: true,
            context_takeover: true,
        };
        let seen = round_trip(None, config);
        assert_eq!(
            seen.extension_response.as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(seen.messages, 61);
        assert!(
            seen.compressed_in >= 50 && seen.compressed_out >= 50,
            "{seen:?}"
        );
    }
}
