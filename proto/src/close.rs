//! Close codes (RFC 6455 §7.4) and close frame payloads (§5.5.1).

use bytes::BufMut;

use crate::error::ProtocolError;
use crate::frame::{FrameHead, MAX_CONTROL_PAYLOAD, Opcode, encode_frame};
use crate::utf8::validate_utf8;

/// The longest reason that fits in a close frame next to its 2-byte code.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// Why a connection is being closed, as sent in a close frame.
///
/// Every protocol error in this crate maps to one of these in one place, so the
/// wire code a peer sees is decided once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    Normal,
    /// 1001: the server is going down or the client navigated away.
    Away,
    /// 1002: the peer broke the protocol.
    Protocol,
    /// 1003: a data type this endpoint cannot accept.
    Unsupported,
    /// 1007: payload inconsistent with its type (bad UTF-8 in text, bad deflate data).
    Invalid,
    /// 1008: a policy was violated (e.g. a slow consumer, abuse).
    Policy,
    /// 1009: a frame or message was larger than the configured limit.
    TooBig,
    /// 1010: the client expected an extension the server did not negotiate.
    Extension,
    /// 1011: the server met an unexpected condition.
    Internal,
    /// 1012: the server is restarting.
    Restart,
    /// 1013: try again later (overload).
    TryAgain,
    /// Any other code valid on the wire (3000-4999, or a registered one).
    Other(u16),
}

impl CloseCode {
    /// The numeric code carried in the close frame.
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::Away => 1001,
            CloseCode::Protocol => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::Invalid => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::Extension => 1010,
            CloseCode::Internal => 1011,
            CloseCode::Restart => 1012,
            CloseCode::TryAgain => 1013,
            CloseCode::Other(code) => code,
        }
    }

    /// The code for a number a peer may send, or `None` for one it must not:
    /// below 1000, 1004-1006, 1015-2999 and 5000 up (RFC 6455 §7.4.1-2). The
    /// later-registered 1012-1014 are accepted.
    pub fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            1000 => CloseCode::Normal,
            1001 => CloseCode::Away,
            1002 => CloseCode::Protocol,
            1003 => CloseCode::Unsupported,
            1007 => CloseCode::Invalid,
            1008 => CloseCode::Policy,
            1009 => CloseCode::TooBig,
            1010 => CloseCode::Extension,
            1011 => CloseCode::Internal,
            1012 => CloseCode::Restart,
            1013 => CloseCode::TryAgain,
            1014 | 3000..=4999 => CloseCode::Other(code),
            _ => return None,
        })
    }
}

/// Reads a close frame's payload: `None` when it is empty (no code given),
/// else the code and the reason.
///
/// Refuses a 1-byte payload and codes a peer must not send (close code 1002),
/// and a reason that is not UTF-8 (1007). The 125-byte bound is the frame
/// parser's.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, ProtocolError> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return match payload.is_empty() {
            true => Ok(None),
            false => Err(ProtocolError::CloseTooShort),
        };
    };
    let code = u16::from_be_bytes(*code);
    let code = CloseCode::from_u16(code).ok_or(ProtocolError::InvalidCloseCode(code))?;
    Ok(Some((code, validate_utf8(reason)?)))
}

/// A close frame payload to send: a code and a reason of at most
/// [`MAX_CLOSE_REASON`] bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClosePayload {
    bytes: [u8; MAX_CONTROL_PAYLOAD],
    len: u8,
}

impl ClosePayload {
    /// The payload for `code` and `reason`. A longer reason is cut at the last
    /// character boundary that fits, since the limit is the protocol's and the
    /// reason is only for people to read.
    pub fn new(code: CloseCode, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; MAX_CONTROL_PAYLOAD];
        bytes[..2].copy_from_slice(&code.as_u16().to_be_bytes());
        bytes[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
        ClosePayload {
            bytes,
            // At most 125, by MAX_CLOSE_REASON.
            len: (2 + end) as u8,
        }
    }

    /// The payload bytes: the code, big-endian, then the reason.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for ClosePayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = u16::from_be_bytes([self.bytes[0], self.bytes[1]]);
        let reason = String::from_utf8_lossy(&self.bytes[2..usize::from(self.len)]);
        f.debug_struct("ClosePayload")
            .field("code", &code)
            .field("reason", &reason)
            .finish()
    }
}

/// Appends an unmasked (server) close frame with `code` and `reason` to
/// `out`; see [`ClosePayload::new`] for how a long reason is cut.
pub fn encode_close_frame(out: &mut impl BufMut, code: CloseCode, reason: &str) {
    let payload = ClosePayload::new(code, reason);
    encode_frame(out, FrameHead::new(Opcode::Close), payload.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_a_peer_may_send() {
        for code in (1000..=1003).chain(1007..=1014).chain(3000..=4999) {
            let parsed = CloseCode::from_u16(code).expect("valid code");
            assert_eq!(parsed.as_u16(), code);
        }
        // Autobahn 7.9.x and 7.13.x, and the rest of the reserved ranges.
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(CloseCode::from_u16(code), None, "{code}");
        }
    }

    #[test]
    fn parses_payloads() {
        assert_eq!(parse_close_payload(b""), Ok(None));
        assert_eq!(
            parse_close_payload(b"\x03\xE8"),
            Ok(Some((CloseCode::Normal, "")))
        );
        assert_eq!(
            parse_close_payload(&[b"\x0F\xA0", "bye ✓".as_bytes()].concat()),
            Ok(Some((CloseCode::Other(4000), "bye ✓")))
        );
        assert_eq!(
            parse_close_payload(b"\x03"),
            Err(ProtocolError::CloseTooShort)
        );
        assert_eq!(
            parse_close_payload(b"\x03\xED"),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        // Autobahn 7.5.1: a reason that is not UTF-8.
        let err = parse_close_payload(b"\x03\xE8\xCE\xBA\xE1\xBD").unwrap_err();
        assert_eq!(err, ProtocolError::InvalidUtf8);
        assert_eq!(err.close_code(), CloseCode::Invalid);
        assert_eq!(
            ProtocolError::InvalidCloseCode(999).close_code(),
            CloseCode::Protocol
        );
    }

    #[test]
    fn encodes_and_cuts_long_reasons_on_a_character_boundary() {
        let payload = ClosePayload::new(CloseCode::TooBig, "too big");
        assert_eq!(payload.as_bytes(), b"\x03\xF1too big");

        // 61 two-byte characters plus one: 124 bytes, one over.
        let reason = "é".repeat(62);
        let payload = ClosePayload::new(CloseCode::Normal, &reason);
        assert_eq!(payload.as_bytes().len(), 2 + 122);
        assert_eq!(
            parse_close_payload(payload.as_bytes()),
            Ok(Some((CloseCode::Normal, &reason[..122])))
        );

        let mut out = Vec::new();
        encode_close_frame(&mut out, CloseCode::Away, "");
        assert_eq!(out, [0x88, 0x02, 0x03, 0xE9]);
    }
}
