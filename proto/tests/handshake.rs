//! The opening handshake end to end: parsing in pieces, every validation
//! rule with the status it answers, the responses as an HTTP client reads
//! them, and a real client (`tungstenite`) accepting our 101.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};

use proptest::prelude::*;
use ringhub_proto::{
    DeflateConfig, ErrorResponse, Parsed, Request, RequestError, RequestLimits, Response,
    StatusCode, WebSocketUpgrade, negotiate_deflate, parse_request,
};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /ws?token=abc&room=a%2Fb HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

fn parse(buf: &[u8]) -> Result<(Request<'_>, usize), RequestError> {
    match parse_request(buf, &RequestLimits::default())? {
        Parsed::Complete { request, head_len } => Ok((request, head_len)),
        Parsed::Incomplete => panic!("request should be complete"),
    }
}

fn validate(raw: &str) -> Result<(), RequestError> {
    let (request, _) = parse(raw.as_bytes())?;
    WebSocketUpgrade::from_request(&request).map(|_| ())
}

/// Splits a response into status, headers (lowercased names) and body, as a
/// client would, checking Content-Length against the body.
fn read_response(bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(bytes).expect("valid response")
    else {
        panic!("incomplete response: {:?}", String::from_utf8_lossy(bytes));
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8(h.value.to_vec()).expect("ASCII header"),
            )
        })
        .collect();
    let body = bytes[head_len..].to_vec();
    if let Some((_, len)) = headers.iter().find(|(n, _)| n == "content-length") {
        assert_eq!(
            len.parse::<usize>().expect("number"),
            body.len(),
            "Content-Length"
        );
    }
    (response.code.expect("status"), headers, body)
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn valid_upgrade_exposes_borrowed_fields() {
    let raw = upgrade_request(
        "Origin: https://app.example\r\nAuthorization: Bearer eyJ.x.y\r\n\
         Sec-WebSocket-Protocol: chat.v2, chat.v1\r\nSec-WebSocket-Protocol: bad token\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    );
    let (request, head_len) = parse(raw.as_bytes()).expect("parse");
    assert_eq!(head_len, raw.len());
    let upgrade = WebSocketUpgrade::from_request(&request).expect("valid upgrade");
    assert_eq!(upgrade.path(), "/ws");
    assert_eq!(upgrade.query(), Some("token=abc&room=a%2Fb"));
    assert_eq!(upgrade.query_param("token"), Some("abc"));
    assert_eq!(upgrade.query_param("room"), Some("a%2Fb"));
    assert_eq!(request.query_param_decoded("room").as_deref(), Some("a/b"));
    assert_eq!(upgrade.origin(), Some(&b"https://app.example"[..]));
    assert_eq!(upgrade.authorization(), Some(&b"Bearer eyJ.x.y"[..]));
    assert_eq!(upgrade.bearer_token(), Some("eyJ.x.y"));
    assert_eq!(upgrade.key(), KEY);
    let protocols: Vec<_> = upgrade.protocols().collect();
    assert_eq!(protocols, ["chat.v2", "chat.v1"], "non-tokens skipped");
    assert_eq!(
        upgrade.select_protocol(&["chat.v1", "chat.v2"]),
        Some("chat.v2")
    );
    assert_eq!(upgrade.select_protocol(&["other"]), None);
    assert_eq!(upgrade.protocol_headers().count(), 2);
    let extensions: Vec<_> = upgrade.extension_headers().collect();
    assert_eq!(
        extensions,
        [&b"permessage-deflate; client_max_window_bits"[..]]
    );

    // Borrowed, not copied: the slices point into the receive buffer.
    let range = raw.as_bytes().as_ptr_range();
    assert!(range.contains(&upgrade.key().as_ptr()));
    assert!(range.contains(&upgrade.path().as_ptr()));
}

#[test]
fn accept_response_matches_rfc6455_example() {
    let raw = upgrade_request("");
    let (request, _) = parse(raw.as_bytes()).expect("parse");
    let upgrade = WebSocketUpgrade::from_request(&request).expect("valid");
    let params = negotiate_deflate([&b"permessage-deflate"[..]], &DeflateConfig::default());
    let mut out = b"previous bytes stay".to_vec();
    upgrade.write_accept(&mut out, Some("chat"), params.as_ref());
    let written = String::from_utf8(out).expect("ASCII");
    assert_eq!(
        written,
        "previous bytes stayHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
         Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate; \
         server_no_context_takeover; client_no_context_takeover\r\n\r\n"
    );
}

#[test]
fn a_protocol_that_is_not_a_token_is_never_echoed() {
    let mut out = Vec::new();
    ringhub_proto::write_switching_protocols(&mut out, KEY, Some("x\r\nSet-Cookie: a"), None);
    let (status, headers, _) = read_response(&out);
    assert_eq!(status, 101);
    assert_eq!(header(&headers, "sec-websocket-protocol"), None);
    assert_eq!(header(&headers, "set-cookie"), None);
}

#[test]
fn incremental_parse_keeps_bytes_after_the_head() {
    let raw = upgrade_request("");
    let mut buf = raw.clone().into_bytes();
    // A client may send its first frame right behind the request.
    buf.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4]);
    for end in 0..raw.len() {
        match parse_request(&buf[..end], &RequestLimits::default()) {
            Ok(Parsed::Incomplete) => {}
            other => panic!("prefix of {end} bytes: {other:?}"),
        }
    }
    for end in raw.len()..=buf.len() {
        match parse_request(&buf[..end], &RequestLimits::default()) {
            Ok(Parsed::Complete { head_len, .. }) => assert_eq!(head_len, raw.len()),
            other => panic!("{end} bytes: {other:?}"),
        }
    }
}

#[test]
fn connection_and_upgrade_are_token_lists() {
    assert_eq!(
        validate(
            &upgrade_request("").replace("Connection: Upgrade", "Connection: keep-alive, UPGRADE")
        ),
        Ok(())
    );
    assert_eq!(
        validate(
            &upgrade_request("Connection: upgrade\r\n")
                .replace("Connection: Upgrade", "Connection: keep-alive")
        ),
        Ok(()),
        "token on a second Connection line"
    );
    assert_eq!(
        validate(&upgrade_request("").replace("Upgrade: websocket", "Upgrade: h2c, WebSocket")),
        Ok(())
    );
    assert_eq!(
        validate(&upgrade_request("").replace("Connection: Upgrade", "Connection: upgraded")),
        Err(RequestError::MissingConnectionUpgrade),
        "tokens match whole"
    );
}

#[test]
fn every_validation_rule_has_its_status() {
    let base = upgrade_request("");
    let cases: Vec<(String, RequestError, u16)> = vec![
        (
            base.replacen("GET", "POST", 1),
            RequestError::MethodNotGet,
            405,
        ),
        (
            base.replace("HTTP/1.1", "HTTP/1.0"),
            RequestError::NotHttp11,
            400,
        ),
        (
            base.replace("Host: example.com\r\n", ""),
            RequestError::MissingHost,
            400,
        ),
        (
            upgrade_request("Host: other\r\n"),
            RequestError::DuplicateHeader("host"),
            400,
        ),
        (
            base.replace("Upgrade: websocket\r\n", ""),
            RequestError::NotWebSocket,
            426,
        ),
        (
            base.replace("Upgrade: websocket", "Upgrade: h2c"),
            RequestError::NotWebSocket,
            426,
        ),
        (
            base.replace("Connection: Upgrade", "Connection: keep-alive"),
            RequestError::MissingConnectionUpgrade,
            400,
        ),
        (
            base.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            RequestError::UnsupportedVersion,
            426,
        ),
        (
            base.replace("Sec-WebSocket-Version: 13\r\n", ""),
            RequestError::UnsupportedVersion,
            426,
        ),
        (
            upgrade_request("Sec-WebSocket-Version: 13\r\n"),
            RequestError::UnsupportedVersion,
            426,
        ),
        (base.replace(KEY, "c2hvcnQ="), RequestError::BadKey, 400),
        (
            base.replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
            RequestError::BadKey,
            400,
        ),
        (
            upgrade_request(&format!("Sec-WebSocket-Key: {KEY}\r\n")),
            RequestError::DuplicateHeader("sec-websocket-key"),
            400,
        ),
    ];
    for (raw, error, status) in cases {
        let got = validate(&raw);
        assert_eq!(got.as_ref(), Err(&error), "{raw:?}");
        assert_eq!(error.status().as_u16(), status, "{error}");
    }
}

#[test]
fn malformed_requests_are_400() {
    for raw in [
        &b"GET /ws HTTP/1.1\r\nHost example.com\r\n\r\n"[..],
        b"GET /ws HTTP/2.0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /ws HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
    ] {
        let err = parse_request(raw, &RequestLimits::default()).expect_err("malformed");
        assert!(matches!(err, RequestError::Malformed(_)), "{err:?}");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
}

#[test]
fn oversized_heads_are_431_as_soon_as_they_pass_the_limit() {
    let limits = RequestLimits {
        max_head_bytes: 256,
    };
    // Incomplete and already past the limit: refuse without waiting for more.
    let long = format!("GET /ws HTTP/1.1\r\nX-Filler: {}", "a".repeat(300));
    assert_eq!(
        parse_request(long.as_bytes(), &limits).expect_err("too large"),
        RequestError::HeadTooLarge { max: 256 }
    );
    // Complete in one read, but larger than the limit.
    let complete = format!("{long}\r\n\r\n");
    let err = parse_request(complete.as_bytes(), &limits).expect_err("too large");
    assert_eq!(err.status(), StatusCode::HEADERS_TOO_LARGE);
    // Exactly at the limit is fine.
    let exact = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(256 - 23));
    assert_eq!(exact.len(), 256);
    assert!(matches!(
        parse_request(exact.as_bytes(), &limits),
        Ok(Parsed::Complete { .. })
    ));
}

#[test]
fn too_many_headers_is_431() {
    let mut raw = String::from("GET / HTTP/1.1\r\n");
    for i in 0..=ringhub_proto::MAX_HEADERS {
        raw.push_str(&format!("X-{i}: 1\r\n"));
    }
    raw.push_str("\r\n");
    let err = parse_request(raw.as_bytes(), &RequestLimits::default()).expect_err("too many");
    assert_eq!(err, RequestError::TooManyHeaders);
    assert_eq!(err.status(), StatusCode::HEADERS_TOO_LARGE);
}

#[test]
fn error_responses_are_complete_http() {
    for status in [400, 401, 403, 404, 405, 426, 431, 503] {
        let status = StatusCode::new(status).expect("valid");
        let mut out = Vec::new();
        ErrorResponse::new(status, b"reason you can act on").write(&mut out);
        let (code, headers, body) = read_response(&out);
        assert_eq!(code, status.as_u16());
        let connection = header(&headers, "connection");
        let want = if code == 426 {
            "upgrade, close"
        } else {
            "close"
        };
        assert_eq!(connection, Some(want));
        assert_eq!(
            header(&headers, "upgrade"),
            (code == 426).then_some("websocket")
        );
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(body, b"reason you can act on\n");
        let version = header(&headers, "sec-websocket-version");
        assert_eq!(version, (code == 426).then_some("13"));
        let auth = header(&headers, "www-authenticate");
        assert_eq!(auth, (code == 401).then_some("Bearer"));
    }
}

#[test]
fn retry_after_and_allow() {
    let mut out = Vec::new();
    ErrorResponse::new(StatusCode::SERVICE_UNAVAILABLE, b"draining")
        .retry_after(5)
        .write(&mut out);
    let (code, headers, _) = read_response(&out);
    assert_eq!(code, 503);
    assert_eq!(header(&headers, "retry-after"), Some("5"));

    let mut out = Vec::new();
    RequestError::MethodNotGet.write_response(&mut out);
    let (code, headers, body) = read_response(&out);
    assert_eq!(code, 405);
    assert_eq!(header(&headers, "allow"), Some("GET"));
    assert_eq!(body, b"WebSocket upgrades use GET\n");
}

#[test]
fn every_error_writes_its_own_status_and_reason() {
    let errors = [
        RequestError::HeadTooLarge { max: 8192 },
        RequestError::TooManyHeaders,
        RequestError::MissingHost,
        RequestError::NotWebSocket,
        RequestError::UnsupportedVersion,
        RequestError::BadKey,
    ];
    for error in errors {
        let mut out = Vec::new();
        error.write_response(&mut out);
        let (code, _, body) = read_response(&out);
        assert_eq!(code, error.status().as_u16());
        assert_eq!(String::from_utf8(body).expect("text"), format!("{error}\n"));
    }
}

#[test]
fn a_reason_with_line_breaks_cannot_inject_headers() {
    let mut out = Vec::new();
    ErrorResponse::new(StatusCode::FORBIDDEN, b"nope\r\nSet-Cookie: x").write(&mut out);
    let (_, headers, body) = read_response(&out);
    assert_eq!(header(&headers, "set-cookie"), None);
    assert_eq!(body, b"Forbidden\n");
}

#[test]
fn plain_responses_for_http_endpoints() {
    let mut out = Vec::new();
    Response::new(StatusCode::OK, "text/plain; version=0.0.4", b"up 1\n").write(&mut out);
    let (code, headers, body) = read_response(&out);
    assert_eq!(code, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/plain; version=0.0.4")
    );
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert_eq!(body, b"up 1\n");

    let mut out = Vec::new();
    Response::new(StatusCode::NO_CONTENT, "text/plain", b"ignored")
        .keep_alive(true)
        .write(&mut out);
    let (code, headers, body) = read_response(&out);
    assert_eq!(code, 204);
    assert_eq!(header(&headers, "connection"), None);
    assert_eq!(header(&headers, "content-length"), None, "RFC 9110 §8.6");
    assert!(body.is_empty());

    // HEAD: the GET's headers, no body.
    let mut out = Vec::new();
    Response::new(StatusCode::OK, "text/plain", b"ok\n")
        .head_only(true)
        .write(&mut out);
    assert!(out.ends_with(b"Content-Length: 3\r\nConnection: close\r\n\r\n"));

    // A content type cannot inject a header.
    let mut out = Vec::new();
    Response::new(StatusCode::OK, "text/plain\r\nSet-Cookie: x", b"").write(&mut out);
    let (_, headers, _) = read_response(&out);
    assert_eq!(header(&headers, "set-cookie"), None);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/octet-stream")
    );
}

#[test]
fn post_body_after_the_head_is_left_for_the_caller() {
    let raw = b"POST /api/publish HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
    let Ok(Parsed::Complete { request, head_len }) = parse_request(raw, &RequestLimits::default())
    else {
        panic!("complete");
    };
    assert_eq!(request.method(), "POST");
    assert_eq!(request.content_length(), Ok(7));
    assert_eq!(&raw[head_len..], b"{\"a\":1}");
}

/// A real client: tungstenite's handshake must accept our 101 (it checks
/// the accept key, `Upgrade` and `Connection`).
#[test]
fn tungstenite_accepts_our_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "client closed before the request ended");
            buf.extend_from_slice(&chunk[..n]);
            match parse_request(&buf, &RequestLimits::default()).expect("valid request") {
                Parsed::Incomplete => continue,
                Parsed::Complete { request, .. } => {
                    let upgrade = WebSocketUpgrade::from_request(&request).expect("upgrade");
                    let protocol = upgrade.select_protocol(&["ringhub.v1"]);
                    let mut out = Vec::new();
                    upgrade.write_accept(&mut out, protocol, None);
                    stream.write_all(&out).expect("write");
                    return upgrade.path().to_owned();
                }
            }
        }
    });
    let stream = TcpStream::connect(addr).expect("connect");
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{addr}/ws?token=t"
    ))
    .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "ringhub.v1".parse().expect("header value"),
    );
    let (_socket, response) = tungstenite::client::client(request, stream).expect("handshake");
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"ringhub.v1"[..])
    );
    assert_eq!(server.join().expect("server thread"), "/ws");
}

proptest! {
    /// Any bytes, split anywhere: parsing and validation never panic, and a
    /// prefix never succeeds with a different head length than the whole.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), split in 0usize..2048) {
        let split = split.min(bytes.len());
        let limits = RequestLimits::default();
        for buf in [&bytes[..split], &bytes[..]] {
            if let Ok(Parsed::Complete { request, head_len }) = parse_request(buf, &limits) {
                prop_assert!(head_len <= buf.len());
                let _ = WebSocketUpgrade::from_request(&request);
                let _ = request.bearer_token();
                let _ = request.query_param_decoded("token");
                let _ = request.content_length();
            }
        }
    }

    /// A valid request split at any point parses to the same request.
    #[test]
    fn valid_request_split_anywhere(split in 0usize..400, junk in proptest::collection::vec(any::<u8>(), 0..64)) {
        let raw = upgrade_request("Origin: https://a.example\r\n");
        let split = split.min(raw.len());
        let mut buf = raw.as_bytes()[..split].to_vec();
        let limits = RequestLimits::default();
        if split < raw.len() {
            prop_assert!(matches!(parse_request(&buf, &limits), Ok(Parsed::Incomplete)));
        }
        buf.extend_from_slice(&raw.as_bytes()[split..]);
        buf.extend_from_slice(&junk);
        match parse_request(&buf, &limits) {
            Ok(Parsed::Complete { request, head_len }) => {
                prop_assert_eq!(head_len, raw.len());
                prop_assert!(WebSocketUpgrade::from_request(&request).is_ok());
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
