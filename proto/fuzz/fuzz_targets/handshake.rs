//! Arbitrary bytes, cut into arbitrary reads, through the request parser,
//! the upgrade checks, deflate negotiation and every response writer:
//! nothing may panic, the head length must stay inside the buffer, and the
//! parser must never need more than the head limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringhub_proto::{
    DeflateConfig, Parsed, RequestLimits, WebSocketUpgrade, negotiate_deflate, parse_request,
};

const LIMITS: RequestLimits = RequestLimits {
    max_head_bytes: 2048,
};

fuzz_target!(|data: &[u8]| {
    // First byte: read size and whether context takeover is configured.
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(control >> 1) + 1;
    let config = DeflateConfig {
        enabled: true,
        context_takeover: control & 1 != 0,
    };

    let mut buf = Vec::new();
    for read in stream.chunks(read_size) {
        buf.extend_from_slice(read);
        match parse_request(&buf, &LIMITS) {
            Ok(Parsed::Incomplete) => assert!(buf.len() < LIMITS.max_head_bytes),
            Ok(Parsed::Complete { request, head_len }) => {
                assert!(head_len <= buf.len() && head_len <= LIMITS.max_head_bytes);
                let _ = request.content_length();
                let _ = request.keep_alive();
                let _ = request.query_param_decoded("token");
                let _ = request.bearer_token();
                // Negotiation sees any extension header, valid upgrade or not.
                if let Some(params) =
                    negotiate_deflate(request.header_values("sec-websocket-extensions"), &config)
                {
                    assert!((9..=15).contains(&params.server_max_window_bits));
                }
                let mut out = Vec::new();
                match WebSocketUpgrade::from_request(&request) {
                    Ok(upgrade) => {
                        let deflate = negotiate_deflate(upgrade.extension_headers(), &config);
                        let protocol = upgrade.protocols().next();
                        upgrade.write_accept(&mut out, protocol, deflate.as_ref());
                        assert!(out.ends_with(b"\r\n\r\n"));
                    }
                    Err(error) => error.write_response(&mut out),
                }
                // Exactly one header block, whatever the input echoed.
                let blank_lines = out.windows(4).filter(|w| w == b"\r\n\r\n").count();
                assert_eq!(blank_lines, 1);
                return;
            }
            Err(error) => {
                let mut out = Vec::new();
                error.write_response(&mut out);
                return;
            }
        }
    }
});
