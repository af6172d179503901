//! Close codes (RFC 6455 §7.4) and close frame payloads (§5.5.1).

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
}
