//! Arbitrary bytes as compressed messages, through one inflater as a
//! connection (or a thread's shared inflater) would use it: nothing may
//! panic, and no message may come out larger than the limit or leave the
//! buffer larger than the limit allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringhub_proto::{CloseCode, Inflater};

fuzz_target!(|data: &[u8]| {
    // First byte: limit and context takeover; the rest is split into
    // messages at 0xA5 bytes, so the window carries across messages too.
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let limit = usize::from(control >> 1) * 256;
    let mut inflater = Inflater::new(control & 1 != 0);
    let mut out = Vec::new();
    for message in stream.split(|&b| b == 0xA5) {
        out.clear();
        match inflater.inflate(message, &mut out, limit) {
            Ok(()) => assert!(out.len() <= limit),
            Err(error) => {
                assert!(out.is_empty());
                assert!(matches!(
                    error.close_code(),
                    CloseCode::TooBig | CloseCode::Invalid
                ));
            }
        }
        assert!(out.capacity() <= limit.max(1) + 1);
    }
});
