//! The io_uring reactor of ringhub: one ring and one thread per core,
//! `SO_REUSEPORT` listeners, the connection slab, provided-buffer rings, send
//! queues, timers, cross-core mailboxes and graceful shutdown.
//!
//! It knows sockets, bytes and WebSocket framing (through `ringhub-proto`),
//! not chat: applications plug in through [`Handler`].

mod accept;
mod bufring;
mod config;
mod conn;
mod core;
mod deadline;
mod error;
mod handler;
mod io;
mod lane;
mod listener;
mod mailbox;
mod ring;
mod sendq;
mod server;
mod stats;
mod timer;
mod token;
mod ws;

pub use config::Config;
pub use error::EngineError;
pub use handler::{
    CloseReason, ConnId, Ctx, Decision, Handler, HttpResponse, Message, SendError, SharedFrame,
};
pub use mailbox::PostError;
pub use ring::{RingMode, build_ring};
pub use ringhub_proto::{CloseCode, Request, WebSocketUpgrade};
pub use server::{Poster, Server, ShutdownHandle, StatsReader, block_termination_signals};
pub use stats::{CoreStats, StatsSnapshot};
