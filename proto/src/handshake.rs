//! The server side of the RFC 6455 §4.2 opening handshake: validating an
//! upgrade request and writing the `101 Switching Protocols` answer.

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest as _, Sha1};

use crate::extension::DeflateParams;
use crate::http::{self, Request, RequestError, StatusCode};

/// The GUID every `Sec-WebSocket-Accept` is derived with (RFC 6455 §1.3).
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A request that passed every RFC 6455 §4.2.1 check, as a view on the
/// [`Request`] it came from.
///
/// Everything it exposes borrows from the receive buffer: routing, origin and
/// auth checks happen before anything is copied.
///
/// ```
/// use ringhub_proto::{
///     DeflateConfig, Parsed, RequestLimits, WebSocketUpgrade, negotiate_deflate, parse_request,
/// };
///
/// let received = b"GET /ws?token=t HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
///     Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
/// let Parsed::Complete { request, head_len } = parse_request(received, &RequestLimits::default())?
/// else {
///     return Ok(()); // keep the bytes, read more, call again
/// };
/// let mut out = Vec::new();
/// match WebSocketUpgrade::from_request(&request) {
///     Ok(upgrade) => {
///         // Route on upgrade.path(), check upgrade.origin() and the token here.
///         let deflate = negotiate_deflate(upgrade.extension_headers(), &DeflateConfig::default());
///         let protocol = upgrade.select_protocol(&["chat.v1"]);
///         upgrade.write_accept(&mut out, protocol, deflate.as_ref());
///     }
///     Err(refused) => refused.write_response(&mut out),
/// }
/// assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
/// // Frames start at received[head_len..].
/// assert_eq!(head_len, received.len());
/// # Ok::<(), ringhub_proto::RequestError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct WebSocketUpgrade<'r, 'a> {
    request: &'r Request<'a>,
    key: &'a str,
}

impl<'r, 'a> WebSocketUpgrade<'r, 'a> {
    /// Validates `request` as a WebSocket opening handshake.
    ///
    /// Checks, in order: method GET (405), HTTP/1.1 (400), one `Host` (400),
    /// `Upgrade` lists `websocket` (426), `Connection` lists `upgrade` (400),
    /// one `Sec-WebSocket-Version` of exactly `13` (426), one
    /// `Sec-WebSocket-Key` that is the base64 of 16 bytes (400).
    pub fn from_request(request: &'r Request<'a>) -> Result<Self, RequestError> {
        if request.method() != "GET" {
            return Err(RequestError::MethodNotGet);
        }
        if !request.is_http11() {
            return Err(RequestError::NotHttp11);
        }
        if request.unique_header("host")?.is_none() {
            return Err(RequestError::MissingHost);
        }
        if !request.has_token("upgrade", "websocket") {
            return Err(RequestError::NotWebSocket);
        }
        if !request.has_token("connection", "upgrade") {
            return Err(RequestError::MissingConnectionUpgrade);
        }
        match request.unique_header("sec-websocket-version") {
            Ok(Some(b"13")) => {}
            _ => return Err(RequestError::UnsupportedVersion),
        }
        let key = request
            .unique_header("sec-websocket-key")?
            .ok_or(RequestError::BadKey)?;
        let key = std::str::from_utf8(key).map_err(|_| RequestError::BadKey)?;
        if !is_valid_key(key) {
            return Err(RequestError::BadKey);
        }
        Ok(Self { request, key })
    }

    /// The request this view validated.
    pub fn request(&self) -> &'r Request<'a> {
        self.request
    }

    /// The path, still percent-encoded.
    pub fn path(&self) -> &'a str {
        self.request.path()
    }

    /// The query string, still percent-encoded.
    pub fn query(&self) -> Option<&'a str> {
        self.request.query()
    }

    /// The raw query parameter `name` (see [`Request::query_param`]).
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.request.query_param(name)
    }

    /// The `Origin` header, as sent (browsers always send one).
    pub fn origin(&self) -> Option<&'a [u8]> {
        self.request.origin()
    }

    /// The `Authorization` header, as sent.
    pub fn authorization(&self) -> Option<&'a [u8]> {
        self.request.authorization()
    }

    /// The bearer token of `Authorization`, if that is its scheme.
    pub fn bearer_token(&self) -> Option<&'a str> {
        self.request.bearer_token()
    }

    /// The client's key, validated.
    pub fn key(&self) -> &'a str {
        self.key
    }

    /// The `Sec-WebSocket-Protocol` header lines, as sent.
    pub fn protocol_headers(&self) -> impl Iterator<Item = &'a [u8]> + 'r {
        self.request.header_values("sec-websocket-protocol")
    }

    /// The offered subprotocols in the client's order of preference. Elements
    /// that are not RFC 9110 tokens are skipped, so whatever the server picks
    /// from here is safe to echo.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + 'r {
        self.request
            .header_list("sec-websocket-protocol")
            .filter(|t| http::is_token(t))
            .filter_map(|t| std::str::from_utf8(t).ok())
    }

    /// The first offered subprotocol the server supports (client preference
    /// wins, as RFC 6455 §4.2.2 suggests).
    pub fn select_protocol(&self, supported: &[&str]) -> Option<&'a str> {
        self.protocols().find(|p| supported.contains(p))
    }

    /// The `Sec-WebSocket-Extensions` header lines, as sent: feed them to
    /// [`crate::negotiate_deflate`].
    pub fn extension_headers(&self) -> impl Iterator<Item = &'a [u8]> + 'r {
        self.request.header_values("sec-websocket-extensions")
    }

    /// Appends the `101 Switching Protocols` response for this request.
    pub fn write_accept(
        &self,
        out: &mut Vec<u8>,
        protocol: Option<&str>,
        deflate: Option<&DeflateParams>,
    ) {
        write_switching_protocols(out, self.key, protocol, deflate);
    }
}

/// True if `key` is the base64 of exactly 16 bytes (RFC 6455 §4.2.1 item 5):
/// 22 characters of the alphabet and `==`, with zero padding bits.
fn is_valid_key(key: &str) -> bool {
    let mut decoded = [0u8; 18];
    key.len() == 24 && matches!(BASE64.decode_slice(key, &mut decoded), Ok(16))
}

/// The `Sec-WebSocket-Accept` value for a client key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AcceptKey([u8; 28]);

impl AcceptKey {
    /// Derives the accept value: base64(SHA-1(key ++ GUID)) (RFC 6455 §4.2.2).
    pub fn from_key(key: &[u8]) -> Self {
        let mut sha = Sha1::new();
        sha.update(key);
        sha.update(WEBSOCKET_GUID);
        let digest = sha.finalize();
        let mut encoded = [0u8; 28];
        // base64 of 20 bytes is exactly 28 bytes; the buffer cannot be short.
        let _ = BASE64.encode_slice(digest, &mut encoded);
        Self(encoded)
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        // Base64 output is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for AcceptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AcceptKey").field(&self.as_str()).finish()
    }
}

/// Appends the `101 Switching Protocols` response for `key`.
///
/// `protocol` must be one the client offered (see
/// [`WebSocketUpgrade::select_protocol`]); a value that is not a token is left
/// out rather than risk splitting the header. `deflate` is the outcome of
/// [`crate::negotiate_deflate`].
pub fn write_switching_protocols(
    out: &mut Vec<u8>,
    key: &str,
    protocol: Option<&str>,
    deflate: Option<&DeflateParams>,
) {
    let accept = AcceptKey::from_key(key.as_bytes());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        StatusCode::SWITCHING_PROTOCOLS.as_u16(),
        StatusCode::SWITCHING_PROTOCOLS.reason_phrase(),
        accept.as_str(),
    );
    if let Some(protocol) = protocol.filter(|p| http::is_token(p.as_bytes())) {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(params) = deflate {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        params.write_response_value(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_accept_example() {
        // RFC 6455 §1.3.
        let accept = AcceptKey::from_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept.as_str(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn key_must_decode_to_sixteen_bytes() {
        assert!(is_valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZQ"), "unpadded");
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZWU="), "17 bytes");
        assert!(
            !is_valid_key("dGhlIHNhbXBsZSBub25jZR=="),
            "non-zero padding bits"
        );
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25j!Q=="), "not base64");
        assert!(!is_valid_key(""));
    }
}
