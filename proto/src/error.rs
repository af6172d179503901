//! Why a peer's frames were rejected, and the close code each reason earns.

use crate::close::CloseCode;

/// A violation of RFC 6455 (or of our limits) by the peer's frames.
///
/// Every variant ends the connection: send a close frame with
/// [`close_code`](Self::close_code), then stop reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV2/RSV3 set, or RSV1 without permessage-deflate negotiated.
    #[error("reserved bits set in frame header without a negotiated extension")]
    ReservedBits,
    /// RSV1 on a control frame or a continuation frame (RFC 7692 §6.1).
    #[error("compressed bit set on a control or continuation frame")]
    CompressedNonFirstFrame,
    /// Opcodes 3-7 and 0xB-0xF are reserved.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// Control frames carry at most 125 bytes (RFC 6455 §5.5).
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLong,
    /// Control frames must not be fragmented (RFC 6455 §5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A client sent an unmasked frame to a server (RFC 6455 §5.1).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A server sent a masked frame to a client (RFC 6455 §5.1).
    #[error("server frame is masked")]
    MaskedFrame,
    /// The most significant bit of a 64-bit length must be 0 (RFC 6455 §5.2).
    #[error("64-bit payload length has its most significant bit set")]
    LengthMsbSet,
    /// A frame's declared payload exceeds `Limits::max_frame`.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    FrameTooBig {
        /// Declared payload length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message, counted across its fragments, exceeds `Limits::max_message`.
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooBig {
        /// The configured limit.
        max: usize,
    },
    /// A continuation frame arrived with no fragmented message open.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message was open.
    #[error("new data frame before the previous message was finished")]
    ExpectedContinuation,
    /// A text message (or a close reason) is not valid UTF-8.
    #[error("invalid UTF-8 in text message or close reason")]
    InvalidUtf8,
    /// A close frame payload of exactly one byte (RFC 6455 §5.5.1).
    #[error("close frame payload of one byte")]
    CloseTooShort,
    /// A close code an endpoint must never send (RFC 6455 §7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
}

impl ProtocolError {
    /// The close code to send back for this error (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::FrameTooBig { .. } | ProtocolError::MessageTooBig { .. } => {
                CloseCode::TooBig
            }
            ProtocolError::InvalidUtf8 => CloseCode::Invalid,
            ProtocolError::ReservedBits
            | ProtocolError::CompressedNonFirstFrame
            | ProtocolError::ReservedOpcode(_)
            | ProtocolError::ControlFrameTooLong
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::UnmaskedFrame
            | ProtocolError::MaskedFrame
            | ProtocolError::LengthMsbSet
            | ProtocolError::UnexpectedContinuation
            | ProtocolError::ExpectedContinuation
            | ProtocolError::CloseTooShort
            | ProtocolError::InvalidCloseCode(_) => CloseCode::Protocol,
        }
    }
}
