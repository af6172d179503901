//! The client side of the HTTP/1.1 upgrade (RFC 6455 §4.1), sans-IO.
//!
//! Every connection of a run sends the same request, so it is written once;
//! the response is parsed with `httparse` and its `Sec-WebSocket-Accept`
//! checked, so a proxy or a plain HTTP server is not mistaken for a peer.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest as _, Sha1};

use crate::target::Target;

/// Appended to the key before hashing (RFC 6455 §1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// A response head larger than this is not a WebSocket server's 101.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("server answered HTTP {0} instead of 101 Switching Protocols")]
    Status(u16),
    #[error("101 response without `{0}`")]
    MissingHeader(&'static str),
    #[error("Sec-WebSocket-Accept does not match the key we sent")]
    BadAccept,
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("response head longer than {MAX_RESPONSE_HEAD} bytes")]
    TooLong,
}

/// The request bytes and the accept value a genuine server must answer with.
#[derive(Debug, Clone)]
pub struct Upgrade {
    request: Vec<u8>,
    /// End of the request target in `request`: a login query goes there.
    path_end: usize,
    /// Whether the request target already has a query (`?`).
    has_query: bool,
    accept: String,
}

impl Upgrade {
    /// `key` is the 16 random bytes of `Sec-WebSocket-Key`.
    pub fn new(target: &Target, key: [u8; 16]) -> Self {
        let key = BASE64.encode(key);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             User-Agent: ringhub-bench\r\n\r\n",
            target.path(),
            target.host(),
        );
        Upgrade {
            request: request.into_bytes(),
            path_end: "GET ".len() + target.path().len(),
            has_query: target.path().contains('?'),
            accept: accept_for(&key),
        }
    }

    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// Appends the request to `out`, with `query` (`user=u1`, `token=…`;
    /// URL-safe already) added to the request target when given.
    pub fn write_request(&self, query: Option<&str>, out: &mut Vec<u8>) {
        let Some(query) = query else {
            out.extend_from_slice(&self.request);
            return;
        };
        let (head, tail) = self.request.split_at(self.path_end);
        out.extend_from_slice(head);
        out.push(if self.has_query { b'&' } else { b'?' });
        out.extend_from_slice(query.as_bytes());
        out.extend_from_slice(tail);
    }

    /// The `Sec-WebSocket-Accept` a genuine server answers with.
    pub fn accept(&self) -> &str {
        &self.accept
    }

    /// Parses the response head at the start of `buf`.
    ///
    /// `Ok(None)` means the head is incomplete: call again with more bytes.
    /// `Ok(Some(n))` means the upgrade succeeded and the first `n` bytes were
    /// the head; anything after them is already WebSocket frames.
    pub fn parse_response(&self, buf: &[u8]) -> Result<Option<usize>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
                return Err(HandshakeError::TooLong);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
        };
        let status = response.code.unwrap_or(0);
        if status != 101 {
            return Err(HandshakeError::Status(status));
        }
        let header = |name: &'static str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
                .ok_or(HandshakeError::MissingHeader(name))
        };
        if !header("upgrade")?.eq_ignore_ascii_case(b"websocket") {
            return Err(HandshakeError::MissingHeader("Upgrade: websocket"));
        }
        if header("sec-websocket-accept")?.trim_ascii() != self.accept.as_bytes() {
            return Err(HandshakeError::BadAccept);
        }
        Ok(Some(len))
    }
}

/// base64(SHA-1(key ++ GUID)), RFC 6455 §4.2.2.
fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID);
    BASE64.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade() -> Upgrade {
        let target: Target = "ws://127.0.0.1:9000/ws".parse().unwrap();
        // RFC 6455 §1.3's example key.
        let key: [u8; 16] = BASE64
            .decode("dGhlIHNhbXBsZSBub25jZQ==")
            .unwrap()
            .try_into()
            .unwrap();
        Upgrade::new(&target, key)
    }

    #[test]
    fn request_is_a_complete_upgrade() {
        let up = upgrade();
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        let status = req.parse(up.request()).unwrap();
        assert!(status.is_complete());
        assert_eq!(req.path, Some("/ws"));
        let key = req
            .headers
            .iter()
            .find(|h| h.name == "Sec-WebSocket-Key")
            .unwrap();
        assert_eq!(key.value, b"dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn a_login_query_joins_the_request_target() {
        let up = upgrade();
        let mut out = Vec::new();
        up.write_request(Some("user=s1"), &mut out);
        assert!(out.starts_with(b"GET /ws?user=s1 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n"));
        assert_eq!(out.len(), up.request().len() + "?user=s1".len());
        let target: Target = "ws://127.0.0.1:9000/ws?v=2".parse().unwrap();
        let up = Upgrade::new(&target, [0; 16]);
        out.clear();
        up.write_request(Some("token=a.b.c"), &mut out);
        assert!(out.starts_with(b"GET /ws?v=2&token=a.b.c HTTP/1.1\r\n"));
        out.clear();
        up.write_request(None, &mut out);
        assert_eq!(out, up.request());
    }

    #[test]
    fn accepts_the_rfc_example_and_keeps_trailing_frames() {
        let up = upgrade();
        let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let mut buf = head.as_bytes().to_vec();
        buf.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(up.parse_response(&buf), Ok(Some(head.len())));
        assert_eq!(up.parse_response(&buf[..head.len() - 3]), Ok(None));
    }

    #[test]
    fn rejects_what_is_not_an_upgrade() {
        let up = upgrade();
        let refused = b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(up.parse_response(refused), Err(HandshakeError::Status(426)));
        let wrong = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: xx\r\n\r\n";
        assert_eq!(up.parse_response(wrong), Err(HandshakeError::BadAccept));
        let bare = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(
            up.parse_response(bare),
            Err(HandshakeError::MissingHeader("sec-websocket-accept"))
        );
        assert!(matches!(
            up.parse_response(b"garbage\r\n\r\n"),
            Err(HandshakeError::Malformed(_))
        ));
        let mut endless = b"HTTP/1.1 101 Switching Protocols\r\nX-Pad: ".to_vec();
        endless.resize(MAX_RESPONSE_HEAD + 1, b'a');
        assert_eq!(up.parse_response(&endless), Err(HandshakeError::TooLong));
    }
}
