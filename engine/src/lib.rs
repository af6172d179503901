//! The io_uring reactor of ringhub: one ring and one thread per core,
//! `SO_REUSEPORT` listeners, the connection slab, provided-buffer rings, send
//! queues, timers, cross-core mailboxes and graceful shutdown.
//!
//! It knows sockets, bytes and WebSocket framing (through `ringhub-proto`),
//! not chat: applications plug in through [`Handler`].

mod bufring;
mod error;
mod listener;
mod mailbox;
mod ring;
mod sendq;
mod timer;
mod token;

pub use error::EngineError;
pub use mailbox::PostError;
pub use ring::RingMode;
