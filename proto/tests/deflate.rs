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
