//! What the core says to its driver and to its user.

use bytes::Bytes;

use crate::error::Error;
use crate::pubsub_kind::{Message, SubKind};
use crate::value::Value;

/// Names a request; its reply comes back as [`Event::Reply`] with this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Names one socket the driver holds for the client. A reconnect gets a new
/// `ConnId`, so bytes from a stale socket can never reach a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(super) index: u32,
    pub(super) generation: u32,
}

/// What the driver must do with sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to `addr` (`host:port`), then call
    /// [`Client::handle_connected`](super::Client::handle_connected) or [`Client::handle_disconnected`](super::Client::handle_disconnected).
    Connect {
        /// The socket's name in later calls.
        conn: ConnId,
        /// `host:port` to connect to.
        addr: String,
    },
    /// Close this socket; nothing more will be sent on it.
    Close {
        /// The socket to close.
        conn: ConnId,
    },
}

/// What the client tells its user.
#[derive(Debug, Clone)]
pub enum Event {
    /// The reply to a request (or why there will be none).
    Reply {
        /// The id [`Client::send`](super::Client::send) returned.
        id: RequestId,
        /// The reply.
        result: Result<Value, Error>,
    },
    /// A pub/sub message.
    Message(Message),
    /// A subscription is confirmed by the server (also after replays).
    Subscribed {
        /// Its kind.
        kind: SubKind,
        /// The channel or pattern.
        channel: Bytes,
    },
    /// The server refused a subscription for good; it is no longer wanted.
    SubscribeFailed {
        /// Its kind.
        kind: SubKind,
        /// The channel or pattern.
        channel: Bytes,
        /// The server's answer.
        error: Error,
    },
    /// These subscriptions were interrupted (connection lost, or the server
    /// dropped them when their slot moved): messages published until the
    /// next [`Event::Subscribed`] for them may have been missed. They are
    /// being re-established.
    MessagesMayBeLost {
        /// Their kind.
        kind: SubKind,
        /// The channels or patterns.
        channels: Vec<Bytes>,
        /// What happened.
        reason: String,
    },
    /// A connection finished its handshake.
    Connected {
        /// The node.
        addr: String,
        /// True for the connection that carries subscriptions.
        pubsub: bool,
    },
    /// A connection failed or closed; a reconnect is scheduled if the node
    /// is still needed.
    Disconnected {
        /// The node.
        addr: String,
        /// True for the connection that carries subscriptions.
        pubsub: bool,
        /// Why.
        error: Error,
    },
    /// The cluster slot map was loaded, or reloaded and found changed.
    SlotMapUpdated {
        /// How many masters serve slots.
        masters: usize,
    },
    /// Some other RESP3 push (for example a client-side-caching invalidation).
    Push {
        /// The node it came from.
        addr: String,
        /// The push, its kind first.
        value: Value,
    },
}
