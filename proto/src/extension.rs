//! RFC 7692 permessage-deflate negotiation: a pure function from the
//! client's `Sec-WebSocket-Extensions` offers to the parameters the server
//! answers with.

use std::io::Write as _;

use crate::http;

/// The smallest LZ77 window, in bits, we can honour when compressing. zlib's
/// raw deflate silently turns 8 into 9, which a client that asked for 8 could
/// not decode, so an offer demanding `server_max_window_bits=8` is declined.
const MIN_SERVER_WINDOW_BITS: u8 = 9;
const MAX_WINDOW_BITS: u8 = 15;

/// What the server is willing to negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Accept permessage-deflate offers at all.
    pub enabled: bool,
    /// Keep the LZ77 window between messages of a connection, in both
    /// directions, when the client allows it. Better ratios on chatty
    /// connections, but every connection then owns a compressor and a
    /// decompressor: about 325 KiB + 46 KiB resident per connection, measured
    /// by the deflate bench (see [`crate::Deflater`]). Off by
    /// default: one compressor and one decompressor per thread then serve
    /// every connection, and a broadcast is compressed once.
    pub context_takeover: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            context_takeover: false,
        }
    }
}

/// The agreed parameters of one connection, as written in the 101 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// The server starts every message with an empty window.
    pub server_no_context_takeover: bool,
    /// The client starts every message with an empty window, so the server's
    /// decompressor may be reset (and shared) between messages.
    pub client_no_context_takeover: bool,
    /// The window the server compresses with (9..=15).
    pub server_max_window_bits: u8,
    /// Whether `server_max_window_bits` is written in the response (it must be
    /// when the client offered it).
    pub announce_server_window: bool,
}

impl DeflateParams {
    /// Appends the `Sec-WebSocket-Extensions` response value (without the
    /// header name or CRLF).
    pub fn write_response_value(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"permessage-deflate");
        if self.server_no_context_takeover {
            out.extend_from_slice(b"; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.extend_from_slice(b"; client_no_context_takeover");
        }
        if self.announce_server_window {
            let _ = write!(
                out,
                "; server_max_window_bits={}",
                self.server_max_window_bits
            );
        }
    }

    /// True when the server side needs no per-connection compressor.
    pub fn shares_compressor(&self) -> bool {
        self.server_no_context_takeover
    }

    /// True when the server side needs no per-connection decompressor.
    pub fn shares_decompressor(&self) -> bool {
        self.client_no_context_takeover
    }
}

/// Picks the first acceptable permessage-deflate offer (RFC 7692 §5, §7.1).
///
/// `header_values` are the `Sec-WebSocket-Extensions` lines in order, each a
/// comma-separated list of offers. An offer with an unknown or repeated
/// parameter, or a bad value, is declined and the next one considered, as
/// §5.1 asks. `None` means: answer without the extension.
///
/// The response always carries `server_no_context_takeover;
/// client_no_context_takeover` unless `config.context_takeover` is set (the
/// RFC lets the server add both unasked, §7.1.1). `client_max_window_bits` is
/// never sent back: our decompressor always uses the 15-bit window, which
/// decodes any smaller one, and it must not be sent when not offered (§7.1.2.2).
pub fn negotiate_deflate<'a, I>(header_values: I, config: &DeflateConfig) -> Option<DeflateParams>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    if !config.enabled {
        return None;
    }
    header_values
        .into_iter()
        .flat_map(Offers::new)
        .filter_map(|offer| offer.ok())
        .filter(|offer| offer.name.eq_ignore_ascii_case(b"permessage-deflate"))
        .find_map(|offer| accept_offer(offer.params, config))
}

/// Evaluates one permessage-deflate offer's parameters.
fn accept_offer(params: &[u8], config: &DeflateConfig) -> Option<DeflateParams> {
    let mut server_no_context_takeover = false;
    let mut client_no_context_takeover = false;
    let mut server_max_window_bits = None;
    let mut client_max_window_bits = None;
    for param in Params::new(params) {
        let Param { name, value } = param.ok()?;
        let seen = match name {
            n if n.eq_ignore_ascii_case(b"server_no_context_takeover") => {
                value.is_none().then_some(())?;
                std::mem::replace(&mut server_no_context_takeover, true)
            }
            n if n.eq_ignore_ascii_case(b"client_no_context_takeover") => {
                value.is_none().then_some(())?;
                std::mem::replace(&mut client_no_context_takeover, true)
            }
            n if n.eq_ignore_ascii_case(b"server_max_window_bits") => {
                let bits = window_bits(value?)?;
                server_max_window_bits.replace(bits).is_some()
            }
            n if n.eq_ignore_ascii_case(b"client_max_window_bits") => {
                // Without a value the client only says it understands the
                // parameter; with one it caps its own window. Either way our
                // 15-bit decompressor reads what it sends.
                let bits = match value {
                    None => MAX_WINDOW_BITS,
                    Some(v) => window_bits(v)?,
                };
                client_max_window_bits.replace(bits).is_some()
            }
            _ => return None,
        };
        if seen {
            return None;
        }
    }
    let server_window = server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
    if server_window < MIN_SERVER_WINDOW_BITS {
        return None;
    }
    Some(DeflateParams {
        server_no_context_takeover: server_no_context_takeover || !config.context_takeover,
        client_no_context_takeover: client_no_context_takeover || !config.context_takeover,
        server_max_window_bits: server_window,
        announce_server_window: server_max_window_bits.is_some(),
    })
}

/// A window-bits value: decimal 8..=15 without leading zeros (RFC 7692
/// §7.1.2.1).
fn window_bits(value: Value<'_>) -> Option<u8> {
    let (digits, len) = value.unquoted()?;
    let bits = match &digits[..len] {
        [d @ b'8'..=b'9'] => d - b'0',
        [b'1', d @ b'0'..=b'5'] => 10 + (d - b'0'),
        _ => return None,
    };
    Some(bits)
}

/// One element of the extension list: a name and its raw `;params` tail.
#[derive(Debug)]
struct Offer<'a> {
    name: &'a [u8],
    params: &'a [u8],
}

/// Syntax error in one list element; the element is skipped.
#[derive(Debug)]
struct Malformed;

/// Splits one header value into offers at commas outside quoted strings.
struct Offers<'a> {
    rest: &'a [u8],
}

impl<'a> Offers<'a> {
    fn new(value: &'a [u8]) -> Self {
        Self { rest: value }
    }
}

impl<'a> Iterator for Offers<'a> {
    type Item = Result<Offer<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let end = end_of_element(self.rest, b',');
            let element = &self.rest[..end];
            self.rest = self.rest.get(end + 1..).unwrap_or_default();
            let element = http::trim(element);
            if element.is_empty() {
                continue; // `a,,b` and leading/trailing commas: empty elements
            }
            let name_end = end_of_element(element, b';');
            let name = http::trim(&element[..name_end]);
            if !http::is_token(name) {
                return Some(Err(Malformed));
            }
            let params = element.get(name_end..).unwrap_or_default();
            return Some(Ok(Offer { name, params }));
        }
    }
}

/// Index of the first `sep` outside a quoted string, or the length.
fn end_of_element(bytes: &[u8], sep: u8) -> usize {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if in_quotes {
            match b {
                b'\\' => escaped = true,
                b'"' => in_quotes = false,
                _ => {}
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == sep {
            return i;
        }
    }
    bytes.len()
}

/// A parameter value as sent: a token, or a quoted string (RFC 7692 §7.1
/// lets clients quote values).
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Token(&'a [u8]),
    Quoted(&'a [u8]),
}

impl Value<'_> {
    /// The value with quotes and escapes removed, if it fits in two bytes
    /// (every value we accept does) and is a token, as §7.1 requires.
    fn unquoted(self) -> Option<([u8; 2], usize)> {
        let mut out = [0u8; 2];
        let mut len = 0;
        let mut push = |b: u8| -> Option<()> {
            *out.get_mut(len)? = b;
            len += 1;
            Some(())
        };
        match self {
            Value::Token(t) => t.iter().try_for_each(|&b| push(b))?,
            Value::Quoted(q) => {
                let mut bytes = q.iter();
                while let Some(&b) = bytes.next() {
                    let b = if b == b'\\' { *bytes.next()? } else { b };
                    push(b)?;
                }
            }
        }
        http::is_token(&out[..len]).then_some((out, len))
    }
}

#[derive(Debug)]
struct Param<'a> {
    name: &'a [u8],
    value: Option<Value<'a>>,
}

/// The `; name[=value]` parameters after an extension name.
struct Params<'a> {
    rest: &'a [u8],
}

impl<'a> Params<'a> {
    fn new(params: &'a [u8]) -> Self {
        Self { rest: params }
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Result<Param<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        // `rest` is empty or starts with `;`.
        let after_semicolon = self.rest.strip_prefix(b";")?;
        let end = end_of_element(after_semicolon, b';');
        let raw = &after_semicolon[..end];
        self.rest = &after_semicolon[end..];
        Some(parse_param(raw))
    }
}

fn parse_param(raw: &[u8]) -> Result<Param<'_>, Malformed> {
    let (name, value) = match raw.iter().position(|&b| b == b'=') {
        None => (http::trim(raw), None),
        Some(eq) => (http::trim(&raw[..eq]), Some(http::trim(&raw[eq + 1..]))),
    };
    if !http::is_token(name) {
        return Err(Malformed);
    }
    let value = match value {
        None => None,
        Some(v) => Some(match v {
            [b'"', inner @ .., b'"'] if is_quoted_content(inner) => Value::Quoted(inner),
            token if http::is_token(token) => Value::Token(token),
            _ => return Err(Malformed),
        }),
    };
    Ok(Param { name, value })
}

/// The inside of a quoted string: no bare `"`, every `\` escapes one byte.
fn is_quoted_content(inner: &[u8]) -> bool {
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'"' => return false,
            b'\\' if bytes.next().is_none() => return false,
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(lines: &[&str]) -> Option<DeflateParams> {
        negotiate_deflate(
            lines.iter().map(|l| l.as_bytes()),
            &DeflateConfig::default(),
        )
    }

    fn response(params: Option<DeflateParams>) -> Option<String> {
        params.map(|p| {
            let mut out = Vec::new();
            p.write_response_value(&mut out);
            String::from_utf8(out).expect("ASCII")
        })
    }

    const SHARED: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn plain_offer_gets_both_no_context_takeover() {
        assert_eq!(
            response(negotiate(&["permessage-deflate"])).as_deref(),
            Some(SHARED)
        );
    }

    #[test]
    fn window_values_parse_strictly() {
        let value = |v: &'static [u8]| window_bits(Value::Token(v));
        assert_eq!(value(b"8"), Some(8));
        assert_eq!(value(b"15"), Some(15));
        assert_eq!(value(b"16"), None);
        assert_eq!(value(b"7"), None);
        assert_eq!(value(b"09"), None, "leading zero");
        assert_eq!(value(b"100"), None);
        assert_eq!(window_bits(Value::Quoted(b"1\\2")), Some(12));
        assert_eq!(window_bits(Value::Quoted(b"")), None);
    }

    #[test]
    fn quoted_commas_do_not_split_offers() {
        let offers: Vec<_> = Offers::new(b"a; x=\"1,2\", b").collect();
        assert_eq!(offers.len(), 2);
    }

    #[test]
    fn disabled_config_declines_everything() {
        let config = DeflateConfig {
            enabled: false,
            ..DeflateConfig::default()
        };
        assert_eq!(
            negotiate_deflate([&b"permessage-deflate"[..]], &config),
            None
        );
    }
}
