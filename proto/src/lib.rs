//! Sans-IO WebSocket protocol pieces for ringhub: the HTTP/1.1 upgrade
//! handshake, RFC 6455 frames, RFC 7692 permessage-deflate and the JSON
//! client envelope. Nothing here touches a socket or a clock: callers hand in
//! bytes and get back bytes and events, so every rule is tested without I/O.
#![forbid(unsafe_code)]

mod close;
mod error;
mod frame;
mod mask;
mod message;
mod utf8;

pub use close::{
    CloseCode, ClosePayload, MAX_CLOSE_REASON, encode_close_frame, parse_close_payload,
};
pub use error::ProtocolError;
pub use frame::{
    EncodedHeader, Frame, FrameHead, Limits, Opcode, ParsedFrame, Role, encode_frame,
    encode_header, encode_masked_frame, parse_frame,
};
pub use mask::{apply_mask, apply_mask_at};
pub use message::{Message, MessageAssembler};
pub use utf8::{Utf8Validator, validate_utf8};
