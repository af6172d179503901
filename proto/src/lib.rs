//! Sans-IO WebSocket protocol pieces for ringhub: the HTTP/1.1 upgrade
//! handshake, RFC 6455 frames, RFC 7692 permessage-deflate and the JSON
//! client envelope. Nothing here touches a socket or a clock: callers hand in
//! bytes and get back bytes and events, so every rule is tested without I/O.
#![forbid(unsafe_code)]

mod close;
mod error;
mod frame;
mod mask;

pub use close::CloseCode;
pub use error::ProtocolError;
pub use frame::{
    EncodedHeader, Frame, FrameHead, Limits, Opcode, ParsedFrame, Role, encode_frame,
    encode_header, encode_masked_frame, parse_frame,
};
pub use mask::{apply_mask, apply_mask_at};
