//! Sans-IO WebSocket protocol pieces for ringhub: the HTTP/1.1 upgrade
//! handshake, RFC 6455 frames, RFC 7692 permessage-deflate and the JSON
//! client envelope. Nothing here touches a socket or a clock: callers hand in
//! bytes and get back bytes and events, so every rule is tested without I/O.
#![forbid(unsafe_code)]

mod close;

pub use close::CloseCode;
