//! Incremental HTTP/1.1 request parsing (with `httparse`) and small response
//! writers.
//!
//! One port serves WebSocket upgrades and a few plain HTTP endpoints, so the
//! parser yields a general [`Request`]; [`crate::WebSocketUpgrade`] is a
//! validated view on it. Everything borrows from the caller's receive buffer.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

/// How many header lines a request may carry. A browser sends about 15; the
/// rest of the array is headroom for proxies. More is answered with 431.
pub const MAX_HEADERS: usize = 64;

/// Limits applied while parsing a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest request line plus header block, in bytes, including the final
    /// blank line. Larger heads are answered with 431.
    pub max_head_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 8 * 1024,
        }
    }
}

/// An HTTP status code with the reason phrase this crate writes for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode(u16);

impl StatusCode {
    /// 101: the connection becomes a WebSocket.
    pub const SWITCHING_PROTOCOLS: Self = Self(101);
    /// 200.
    pub const OK: Self = Self(200);
    /// 202: accepted for delivery (e.g. `POST /api/publish`).
    pub const ACCEPTED: Self = Self(202);
    /// 204.
    pub const NO_CONTENT: Self = Self(204);
    /// 400: the request is malformed.
    pub const BAD_REQUEST: Self = Self(400);
    /// 401: no or bad credentials.
    pub const UNAUTHORIZED: Self = Self(401);
    /// 403: credentials fine, access refused (e.g. `Origin` not allowed).
    pub const FORBIDDEN: Self = Self(403);
    /// 404.
    pub const NOT_FOUND: Self = Self(404);
    /// 405: the path exists, the method does not.
    pub const METHOD_NOT_ALLOWED: Self = Self(405);
    /// 413: the body is larger than the endpoint accepts.
    pub const PAYLOAD_TOO_LARGE: Self = Self(413);
    /// 426: a WebSocket upgrade (version 13) is required.
    pub const UPGRADE_REQUIRED: Self = Self(426);
    /// 431: the request head is too large or has too many headers.
    pub const HEADERS_TOO_LARGE: Self = Self(431);
    /// 500.
    pub const INTERNAL_SERVER_ERROR: Self = Self(500);
    /// 503: overloaded or shutting down; see `Retry-After`.
    pub const SERVICE_UNAVAILABLE: Self = Self(503);

    /// A status code from its number; `None` outside 100..=599.
    pub fn new(code: u16) -> Option<Self> {
        (100..=599).contains(&code).then_some(Self(code))
    }

    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// The reason phrase written on the status line.
    pub fn reason_phrase(self) -> &'static str {
        match self.0 {
            101 => "Switching Protocols",
            200 => "OK",
            202 => "Accepted",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            411 => "Length Required",
            413 => "Content Too Large",
            426 => "Upgrade Required",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            _ => "Unknown",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason_phrase())
    }
}

/// Why a request is refused, with the status to answer it with.
///
/// The message is what a person reading the response body (or a log line)
/// needs to fix their client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The head did not end within the limit.
    #[error("request head is larger than {max} bytes; send fewer or shorter headers")]
    HeadTooLarge {
        /// The configured limit, in bytes.
        max: usize,
    },
    /// More header lines than [`MAX_HEADERS`].
    #[error("request has more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    /// `httparse` refused the request line or a header.
    #[error("malformed HTTP request: {0}")]
    Malformed(httparse::Error),
    /// `Content-Length` is not a number, or appears twice with different values.
    #[error("invalid Content-Length header")]
    BadContentLength,
    /// Chunked (or any other transfer-coded) bodies are not accepted.
    #[error("Transfer-Encoding is not supported; send the body with Content-Length")]
    TransferEncoding,
    /// A header that must appear at most once appeared more than once.
    #[error("header {0} must appear only once")]
    DuplicateHeader(&'static str),
    /// The WebSocket endpoint was asked with a method other than GET.
    #[error("WebSocket upgrades use GET")]
    MethodNotGet,
    /// The request is HTTP/1.0; WebSocket needs HTTP/1.1.
    #[error("WebSocket upgrades need HTTP/1.1")]
    NotHttp11,
    /// No `Host` header (required by HTTP/1.1).
    #[error("missing Host header")]
    MissingHost,
    /// `Upgrade` does not list `websocket`: a plain HTTP request to a
    /// WebSocket endpoint.
    #[error("this endpoint only speaks WebSocket: send Upgrade: websocket")]
    NotWebSocket,
    /// `Connection` does not list `upgrade`.
    #[error("Connection header must contain the token \"upgrade\"")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` is missing or not 13.
    #[error("unsupported WebSocket version; this server speaks Sec-WebSocket-Version: 13")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing or not the base64 of 16 bytes.
    #[error("Sec-WebSocket-Key must be the base64 encoding of 16 bytes")]
    BadKey,
}

impl RequestError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::HeadTooLarge { .. } | Self::TooManyHeaders => StatusCode::HEADERS_TOO_LARGE,
            Self::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotWebSocket | Self::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            Self::Malformed(_)
            | Self::BadContentLength
            | Self::TransferEncoding
            | Self::DuplicateHeader(_)
            | Self::NotHttp11
            | Self::MissingHost
            | Self::MissingConnectionUpgrade
            | Self::BadKey => StatusCode::BAD_REQUEST,
        }
    }

    /// Writes the full error response (status, headers, the message as body).
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let mut reason = Vec::with_capacity(96);
        // Writing to a Vec cannot fail.
        let _ = write!(reason, "{self}");
        let response = ErrorResponse::new(self.status(), &reason);
        match self {
            Self::MethodNotGet => response.allow("GET").write(out),
            _ => response.write(out),
        }
    }
}

/// Outcome of feeding bytes to [`parse_request`].
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a request lives briefly on the stack while it is routed; boxing would cost an allocation per handshake"
)]
pub enum Parsed<'a> {
    /// The head has not ended yet: append more bytes and call again with the
    /// whole buffer.
    Incomplete,
    /// A full request head.
    Complete {
        /// The request, borrowing from the buffer.
        request: Request<'a>,
        /// Bytes of the buffer the head used. Bytes after it (a body, or a
        /// client's first frame sent before the 101 arrived) are not part of
        /// the request and must be kept.
        head_len: usize,
    },
}

/// One header line. The value is raw bytes: HTTP allows non-UTF-8 octets.
///
/// `Debug` hides the values of credential headers, so a logged request does
/// not leak tokens.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Name as sent; compare case-insensitively.
    pub name: &'a str,
    /// Value without surrounding whitespace.
    pub value: &'a [u8],
}

const EMPTY_HEADER: Header<'static> = Header {
    name: "",
    value: b"",
};

/// A parsed HTTP/1.x request head, borrowing from the receive buffer.
///
/// About 2 KiB on the stack (the header slots); it lives only while a request
/// is being routed.
#[derive(Clone)]
pub struct Request<'a> {
    method: &'a str,
    target: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    minor_version: u8,
    headers: [Header<'a>; MAX_HEADERS],
    header_count: usize,
}

/// Headers whose values are credentials.
const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

impl fmt::Debug for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = SECRET_HEADERS
            .iter()
            .any(|s| self.name.eq_ignore_ascii_case(s));
        let mut header = f.debug_struct("Header");
        header.field("name", &self.name);
        if secret {
            header.field(
                "value",
                &format_args!("<{} bytes hidden>", self.value.len()),
            );
        } else {
            header.field("value", &String::from_utf8_lossy(self.value));
        }
        header.finish()
    }
}

/// `Debug` shows the path but not the query, which may carry `?token=`.
impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "query",
                &self.query.map(|q| format!("<{} bytes hidden>", q.len())),
            )
            .field("version", &format_args!("HTTP/1.{}", self.minor_version))
            .field("headers", &self.headers())
            .finish()
    }
}

/// Parses a request head from the start of `buf`.
///
/// Call it again with the grown buffer after [`Parsed::Incomplete`]. Heads
/// over `limits.max_head_bytes` fail with [`RequestError::HeadTooLarge`] as
/// soon as the buffer passes the limit, so a client cannot make the caller
/// buffer more than that.
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &RequestLimits,
) -> Result<Parsed<'a>, RequestError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut raw = httparse::Request::new(&mut slots);
    let head_len = match raw.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= limits.max_head_bytes {
                return Err(RequestError::HeadTooLarge {
                    max: limits.max_head_bytes,
                });
            }
            return Ok(Parsed::Incomplete);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(e) => return Err(RequestError::Malformed(e)),
    };
    if head_len > limits.max_head_bytes {
        return Err(RequestError::HeadTooLarge {
            max: limits.max_head_bytes,
        });
    }
    // A complete parse always fills method, path and version.
    let (Some(method), Some(target), Some(minor_version)) = (raw.method, raw.path, raw.version)
    else {
        return Err(RequestError::Malformed(httparse::Error::Token));
    };
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let header_count = raw.headers.len();
    for (slot, h) in headers.iter_mut().zip(raw.headers.iter()) {
        *slot = Header {
            name: h.name,
            value: h.value,
        };
    }
    let (path, query) = split_target(target);
    Ok(Parsed::Complete {
        request: Request {
            method,
            target,
            path,
            query,
            minor_version,
            headers,
            header_count,
        },
        head_len,
    })
}

/// Splits a request target into path and query. Servers must accept the
/// absolute form (`GET http://host/ws HTTP/1.1`, RFC 9112 §3.2.2) as well as
/// the usual origin form (`GET /ws`); an empty absolute path means `/`.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let origin_form = match ["http://", "https://", "ws://", "wss://"]
        .iter()
        .find_map(|scheme| target.strip_prefix(scheme))
    {
        Some(rest) => match rest.find(['/', '?']) {
            Some(i) => &rest[i..],
            None => "",
        },
        None => target,
    };
    let (path, query) = match origin_form.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (origin_form, None),
    };
    (if path.is_empty() { "/" } else { path }, query)
}

impl<'a> Request<'a> {
    /// The method token, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request target as sent (path and query).
    pub fn target(&self) -> &'a str {
        self.target
    }

    /// The path, still percent-encoded.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The query string after `?`, still percent-encoded.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// True for HTTP/1.1, false for HTTP/1.0.
    pub fn is_http11(&self) -> bool {
        self.minor_version == 1
    }

    /// Every header line, in order.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers[..self.header_count]
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.header_values(name).next()
    }

    /// The values of every header line named `name` (case-insensitive).
    pub fn header_values<'r>(&'r self, name: &'r str) -> impl Iterator<Item = &'a [u8]> + 'r {
        self.headers()
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The single value of a header that must not repeat.
    pub(crate) fn unique_header(
        &self,
        name: &'static str,
    ) -> Result<Option<&'a [u8]>, RequestError> {
        let mut values = self.header_values(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(RequestError::DuplicateHeader(name));
        }
        Ok(first)
    }

    /// The comma-separated elements of every `name` header line, trimmed,
    /// with empty elements skipped (RFC 9110 §5.6.1).
    pub fn header_list<'r>(&'r self, name: &'r str) -> impl Iterator<Item = &'a [u8]> + 'r {
        self.header_values(name).flat_map(split_list)
    }

    /// True if the `name` list headers contain `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_list(name)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The raw (still percent-encoded) value of query parameter `name`. A
    /// parameter without `=` has the empty value.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        query_param(self.query?, name)
    }

    /// The query parameter `name`, percent-decoded. `None` when absent or when
    /// its escapes are malformed or decode to invalid UTF-8. `+` is kept as is
    /// (RFC 3986, not form encoding).
    pub fn query_param_decoded(&self, name: &str) -> Option<Cow<'a, str>> {
        percent_decode(self.query_param(name)?)
    }

    /// The `Origin` header, as sent. Raw bytes, so a non-UTF-8 origin is never
    /// confused with a missing one.
    pub fn origin(&self) -> Option<&'a [u8]> {
        self.header("origin")
    }

    /// The `Authorization` header, as sent.
    pub fn authorization(&self) -> Option<&'a [u8]> {
        self.header("authorization")
    }

    /// The token of an `Authorization: Bearer <token>` header (scheme
    /// case-insensitive). `None` for another scheme or a non-UTF-8 token.
    pub fn bearer_token(&self) -> Option<&'a str> {
        let value = self.authorization()?;
        let (scheme, rest) = value.split_at_checked(6)?;
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return None;
        }
        let token = trim(rest);
        // The scheme must be followed by whitespace, and a token must remain.
        if token.is_empty() || rest.first().is_none_or(|b| *b != b' ' && *b != b'\t') {
            return None;
        }
        std::str::from_utf8(token).ok()
    }

    /// The body length announced by `Content-Length` (0 when absent).
    ///
    /// `Transfer-Encoding` is refused rather than parsed: the endpoints that
    /// take a body are small API calls.
    pub fn content_length(&self) -> Result<u64, RequestError> {
        if self.header("transfer-encoding").is_some() {
            return Err(RequestError::TransferEncoding);
        }
        let mut length = None;
        for value in self.header_list("content-length") {
            let n = parse_decimal(value).ok_or(RequestError::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(RequestError::BadContentLength);
            }
            length = Some(n);
        }
        Ok(length.unwrap_or(0))
    }

    /// Whether the client allows the connection to stay open after the
    /// response (HTTP/1.1 default unless `Connection: close`).
    pub fn keep_alive(&self) -> bool {
        if self.is_http11() {
            !self.has_token("connection", "close")
        } else {
            self.has_token("connection", "keep-alive")
        }
    }
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// Splits one header value at commas, trimming optional whitespace.
pub(crate) fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

pub(crate) fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// True for an RFC 9110 `token` (the grammar of methods, header names,
/// subprotocols and extension names).
pub(crate) fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A complete small response for the plain HTTP endpoints (`/healthz`,
/// `/metrics`, `/`, `/api/publish`).
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    status: StatusCode,
    content_type: &'a str,
    body: &'a [u8],
    keep_alive: bool,
    head_only: bool,
}

impl<'a> Response<'a> {
    /// A response with `body` of `content_type`, closing the connection
    /// afterwards unless [`Response::keep_alive`] says otherwise.
    pub fn new(status: StatusCode, content_type: &'a str, body: &'a [u8]) -> Self {
        Self {
            status,
            content_type,
            body,
            keep_alive: false,
            head_only: false,
        }
    }

    /// Keep the connection open for another request (pass
    /// [`Request::keep_alive`]).
    pub fn keep_alive(mut self, keep_alive: bool) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Answer a `HEAD` request: the headers a `GET` would get, no body.
    pub fn head_only(mut self, head_only: bool) -> Self {
        self.head_only = head_only;
        self
    }

    /// Appends the response to `out`.
    ///
    /// 1xx, 204 and 304 responses carry neither `Content-Length` nor a body
    /// (RFC 9110 §8.6, §6.4.1). A content type that could split the header
    /// is replaced by `application/octet-stream`.
    pub fn write(&self, out: &mut Vec<u8>) {
        write_status_line(out, self.status);
        let content_type = if is_header_safe(self.content_type.as_bytes()) {
            self.content_type
        } else {
            "application/octet-stream"
        };
        let bodiless = matches!(self.status.0, 100..=199 | 204 | 304);
        if !bodiless {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(content_type.as_bytes());
            out.extend_from_slice(b"\r\n");
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        if !self.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !bodiless && !self.head_only {
            out.extend_from_slice(self.body);
        }
    }
}

/// An error response: short plain-text body, `Connection: close`, plus the
/// headers its status calls for.
///
/// 426 always carries `Upgrade: websocket` and `Sec-WebSocket-Version: 13`
/// (RFC 6455 §4.4, RFC 9110 §15.5.22); 401 carries `WWW-Authenticate:
/// Bearer`.
#[derive(Debug, Clone, Copy)]
pub struct ErrorResponse<'a> {
    status: StatusCode,
    reason: &'a [u8],
    retry_after_secs: Option<u32>,
    allow: Option<&'a str>,
}

impl<'a> ErrorResponse<'a> {
    /// An error response whose body is `reason` followed by a newline.
    pub fn new(status: StatusCode, reason: &'a [u8]) -> Self {
        Self {
            status,
            reason,
            retry_after_secs: None,
            allow: None,
        }
    }

    /// Adds `Retry-After: <secs>` (for 503 or 429).
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Adds `Allow: <methods>` (for 405), e.g. `"GET"` or `"POST"`.
    pub fn allow(mut self, methods: &'a str) -> Self {
        self.allow = Some(methods);
        self
    }

    /// Appends the response to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        write_status_line(out, self.status);
        out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
        match self.status {
            StatusCode::UPGRADE_REQUIRED => {
                out.extend_from_slice(b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n")
            }
            StatusCode::UNAUTHORIZED => out.extend_from_slice(b"WWW-Authenticate: Bearer\r\n"),
            _ => {}
        }
        if let Some(secs) = self.retry_after_secs {
            let _ = write!(out, "Retry-After: {secs}\r\n");
        }
        if let Some(methods) = self.allow.filter(|m| is_header_safe(m.as_bytes())) {
            out.extend_from_slice(b"Allow: ");
            out.extend_from_slice(methods.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let reason = if is_body_safe(self.reason) {
            self.reason
        } else {
            self.status.reason_phrase().as_bytes()
        };
        let _ = write!(out, "Content-Length: {}\r\n", reason.len() + 1);
        // A sender of `Upgrade` must name it in `Connection` (RFC 9110 §7.8).
        if self.status == StatusCode::UPGRADE_REQUIRED {
            out.extend_from_slice(b"Connection: upgrade, close\r\n\r\n");
        } else {
            out.extend_from_slice(b"Connection: close\r\n\r\n");
        }
        out.extend_from_slice(reason);
        out.push(b'\n');
    }
}

fn write_status_line(out: &mut Vec<u8>, status: StatusCode) {
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status.0, status.reason_phrase());
}

/// No CR, LF or other control byte that could split a header.
pub(crate) fn is_header_safe(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Error bodies are for people: printable text on one line.
fn is_body_safe(reason: &[u8]) -> bool {
    std::str::from_utf8(reason).is_ok() && is_header_safe(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse_request(buf, &RequestLimits::default()) {
            Ok(Parsed::Complete { request, head_len }) => (request, head_len),
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn splits_path_and_query() {
        let (req, _) = complete(b"GET /ws?token=a%20b&x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(req.path(), "/ws");
        assert_eq!(req.query(), Some("token=a%20b&x"));
        assert_eq!(req.query_param("token"), Some("a%20b"));
        assert_eq!(req.query_param_decoded("token").as_deref(), Some("a b"));
        assert_eq!(req.query_param("x"), Some(""));
        assert_eq!(req.query_param("y"), None);
    }

    #[test]
    fn percent_decoding_rejects_bad_escapes() {
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("a%zz"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(percent_decode("%C3%A9+").as_deref(), Some("é+"));
        assert!(matches!(
            percent_decode("plain"),
            Some(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn bearer_token_needs_the_scheme_and_a_separator() {
        let cases: [(&[u8], Option<&str>); 6] = [
            (b"Bearer abc.def", Some("abc.def")),
            (b"bearer   abc ", Some("abc")),
            (b"Bearerabc", None),
            (b"Bearer ", None),
            (b"Basic dXNlcjpw", None),
            (b"Bear", None),
        ];
        for (value, want) in cases {
            let mut buf = b"GET / HTTP/1.1\r\nAuthorization: ".to_vec();
            buf.extend_from_slice(value);
            buf.extend_from_slice(b"\r\n\r\n");
            let (req, _) = complete(&buf);
            assert_eq!(
                req.bearer_token(),
                want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn content_length_rules() {
        let (req, _) = complete(b"POST /api/publish HTTP/1.1\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(req.content_length(), Ok(12));
        let (req, _) =
            complete(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(req.content_length(), Err(RequestError::BadContentLength));
        let (req, _) = complete(b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n");
        assert_eq!(req.content_length(), Ok(3));
        let (req, _) = complete(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n");
        assert_eq!(req.content_length(), Err(RequestError::BadContentLength));
        let (req, _) = complete(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(req.content_length(), Err(RequestError::TransferEncoding));
        let (req, _) = complete(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(req.content_length(), Ok(0));
    }

    #[test]
    fn keep_alive_follows_the_version_default() {
        assert!(complete(b"GET / HTTP/1.1\r\n\r\n").0.keep_alive());
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive()
        );
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive());
        assert!(
            complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .keep_alive()
        );
    }

    #[test]
    fn absolute_form_targets_route_like_origin_form() {
        let (req, _) = complete(b"GET http://example.com:8080/ws?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!((req.path(), req.query()), ("/ws", Some("x=1")));
        let (req, _) = complete(b"GET https://example.com HTTP/1.1\r\n\r\n");
        assert_eq!((req.path(), req.query()), ("/", None));
        let (req, _) = complete(b"GET http://example.com?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!((req.path(), req.query()), ("/", Some("x=1")));
        let (req, _) = complete(b"OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!(req.path(), "*");
    }

    #[test]
    fn header_values_come_without_surrounding_whitespace() {
        let (req, _) = complete(b"GET / HTTP/1.1\r\nSec-WebSocket-Version: \t 13 \t\r\n\r\n");
        assert_eq!(req.header("SEC-WEBSOCKET-VERSION"), Some(&b"13"[..]));
    }

    #[test]
    fn debug_output_hides_credentials() {
        let (req, _) = complete(
            b"GET /ws?token=sekrit HTTP/1.1\r\nAuthorization: Bearer sekrit\r\nCookie: s=sekrit\r\nHost: h\r\n\r\n",
        );
        let debug = format!("{req:?}");
        assert!(!debug.contains("sekrit"), "{debug}");
        assert!(debug.contains("/ws") && debug.contains("\"h\""), "{debug}");
    }

    #[test]
    fn tokens() {
        assert!(is_token(b"permessage-deflate"));
        assert!(!is_token(b""));
        assert!(!is_token(b"a b"));
        assert!(!is_token(b"a\"b"));
    }
}
