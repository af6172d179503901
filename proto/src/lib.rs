//! Sans-IO WebSocket protocol pieces for ringhub: the HTTP/1.1 upgrade
//! handshake, RFC 6455 frames, RFC 7692 permessage-deflate and the JSON
//! client envelope. Nothing here touches a socket or a clock: callers hand in
//! bytes and get back bytes and events, so every rule is tested without I/O.
#![forbid(unsafe_code)]

mod close;
mod deflate;
mod envelope;
mod error;
mod extension;
mod frame;
mod handshake;
mod http;
mod mask;
mod message;
mod utf8;

pub use close::{
    CloseCode, ClosePayload, MAX_CLOSE_REASON, encode_close_frame, parse_close_payload,
};
pub use deflate::{CompressionPolicy, Compressors, DeflateError, Deflater, InflateError, Inflater};
pub use envelope::{
    ClientMessage, EnvelopeError, EnvelopeErrorKind, MAX_ID_LEN, MAX_NAME_LEN, OutgoingMessage,
    Recipient, write_ack, write_error, write_message, write_pong, write_welcome,
};
pub use error::ProtocolError;
pub use extension::{DeflateConfig, DeflateParams, negotiate_deflate};
pub use frame::{
    EncodedHeader, Frame, FrameHead, Limits, Opcode, ParsedFrame, Role, encode_frame,
    encode_header, encode_masked_frame, parse_frame,
};
pub use handshake::{AcceptKey, WebSocketUpgrade, write_switching_protocols};
pub use http::{
    ErrorResponse, Header, MAX_HEADERS, Parsed, Request, RequestError, RequestLimits, Response,
    StatusCode, parse_request,
};
pub use mask::{apply_mask, apply_mask_at};
pub use message::{Decoded, Message, MessageAssembler};
pub use utf8::{Utf8Validator, validate_utf8};
