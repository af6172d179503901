//! Where messages for other servers go.
//!
//! `Embedded` is the single node: with no Redis configured every user and
//! topic is local, so there is nothing to forward and everything is ready.
//! `Redis` hands route changes and messages to the relay thread
//! ([`crate::relay`]), which owns the Redis connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError};

use bytes::Bytes;
use ringhub_engine::ConnId;

/// Messages the cores may have queued for the relay before they are told
/// `remote_unavailable`.
pub const FORWARD_QUEUE: usize = 65_536;

/// Queued forwards past which a connection that forwards one more is
/// paused (its socket no longer read, so TCP slows the client down): Redis
/// is behind, and slowing senders loses nothing where failing them would.
pub const PAUSE_SENDERS_AT: usize = 8_192;

/// Queued forwards below which paused senders are read again.
pub const RESUME_SENDERS_AT: usize = 1_024;

/// The broker between this server and the others.
#[derive(Debug)]
pub enum Broker {
    /// A single node with nothing beyond this process.
    Embedded,
    /// Other servers through Redis.
    Redis(RedisLink),
}

/// Who a forwarded message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    User(Box<str>),
    Topic(Box<str>),
    Everyone,
}

/// Whom to tell how a forward went: the sending connection, and the
/// message id (raw JSON) if it asked for an `ack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub conn: ConnId,
    pub id: Option<Box<str>>,
}

/// A message for the other servers: the encoded `message` frame.
#[derive(Debug)]
pub struct Forward {
    pub audience: Audience,
    pub frame: Bytes,
    pub reply: Option<ReplyTo>,
}

/// Route and subscription changes, in the order they happened. Never
/// dropped (unbounded): they come at the handshake rate at most.
#[derive(Debug, PartialEq, Eq)]
pub enum Control {
    UserOnline(Box<str>),
    UserOffline(Box<str>),
    TopicWanted(Box<str>),
    TopicUnwanted(Box<str>),
    /// Tell `reply` once this server's subscription to the topic is
    /// confirmed by Redis (at once if it already is).
    ConfirmTopic(Box<str>, ReplyTo),
    /// Remove this server from Redis and stop.
    Shutdown,
}

/// What became of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// No other server can need it: the caller acks now.
    NotNeeded,
    /// Queued: the relay reports the outcome to `reply`.
    Queued,
    /// Redis is unreachable or the queue is full.
    Unavailable,
}

/// Wakes the relay's poll loop; the flag skips the syscall while a wake is
/// already pending, so a burst of forwards costs one.
#[derive(Debug)]
pub struct Wake {
    waker: mio::Waker,
    notified: AtomicBool,
}

impl Wake {
    pub fn new(waker: mio::Waker) -> Wake {
        Wake {
            waker,
            notified: AtomicBool::new(false),
        }
    }

    pub fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    /// A wake is pending: something was queued since the last drain.
    pub fn is_pending(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }

    /// Called by the relay before it drains its queues.
    pub fn clear(&self) {
        self.notified.store(false, Ordering::Release);
    }
}

/// The cores' side of the relay.
#[derive(Debug)]
pub struct RedisLink {
    control: Sender<Control>,
    forwards: SyncSender<Forward>,
    wake: Arc<Wake>,
    ready: Arc<AtomicBool>,
    accepting: Arc<AtomicBool>,
    hosted: Arc<AtomicBool>,
    queued: Arc<AtomicUsize>,
}

/// The relay's side of the link.
#[derive(Debug)]
pub struct RelayInbox {
    pub control: Receiver<Control>,
    pub forwards: Receiver<Forward>,
    pub wake: Arc<Wake>,
    /// Every Redis connection is up (`/readyz`).
    pub ready: Arc<AtomicBool>,
    /// Some forward may succeed: the standalone server, or at least one
    /// cluster master, is reachable. Off, forwards fail at once instead of
    /// waiting for a timeout.
    pub accepting: Arc<AtomicBool>,
    /// The relay runs at the end of every loop turn of core
    /// [`RELAY_CORE`], so that core's forwards need no wake.
    pub hosted: Arc<AtomicBool>,
    /// Forwards queued and not yet taken by the relay.
    pub queued: Arc<AtomicUsize>,
}

/// The core whose thread hosts the relay.
pub const RELAY_CORE: u16 = 0;

impl RedisLink {
    /// A link and the relay's end of it.
    pub fn new(waker: mio::Waker) -> (RedisLink, RelayInbox) {
        let (control_tx, control_rx) = std::sync::mpsc::channel();
        let (forward_tx, forward_rx) = std::sync::mpsc::sync_channel(FORWARD_QUEUE);
        let wake = Arc::new(Wake::new(waker));
        let ready = Arc::new(AtomicBool::new(false));
        let accepting = Arc::new(AtomicBool::new(false));
        let hosted = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let link = RedisLink {
            control: control_tx,
            forwards: forward_tx,
            wake: wake.clone(),
            ready: ready.clone(),
            accepting: accepting.clone(),
            hosted: hosted.clone(),
            queued: queued.clone(),
        };
        let inbox = RelayInbox {
            control: control_rx,
            forwards: forward_rx,
            wake,
            ready,
            accepting,
            hosted,
            queued,
        };
        (link, inbox)
    }

    fn control(&self, c: Control) {
        // Fails only once the relay has stopped, at shutdown.
        if self.control.send(c).is_ok() {
            self.wake.wake();
        }
    }
}

impl Broker {
    /// True when the server can deliver to every server it should reach.
    pub fn is_ready(&self) -> bool {
        match self {
            Broker::Embedded => true,
            Broker::Redis(link) => link.ready.load(Ordering::Relaxed),
        }
    }

    /// A name for logs and `/readyz`.
    pub fn kind(&self) -> &'static str {
        match self {
            Broker::Embedded => "embedded",
            Broker::Redis(_) => "redis",
        }
    }

    /// This server got its first connection of `user`.
    pub fn user_online(&self, user: &str) {
        if let Broker::Redis(link) = self {
            link.control(Control::UserOnline(user.into()));
        }
    }

    /// This server's last connection of `user` closed.
    pub fn user_offline(&self, user: &str) {
        if let Broker::Redis(link) = self {
            link.control(Control::UserOffline(user.into()));
        }
    }

    /// This server got its first subscriber of `topic`.
    pub fn topic_wanted(&self, topic: &str) {
        if let Broker::Redis(link) = self {
            link.control(Control::TopicWanted(topic.into()));
        }
    }

    /// This server's last subscriber of `topic` left.
    pub fn topic_unwanted(&self, topic: &str) {
        if let Broker::Redis(link) = self {
            link.control(Control::TopicUnwanted(topic.into()));
        }
    }

    /// Arranges for `reply` to hear once publishes to `topic` from every
    /// server reach this one.
    pub fn confirm_topic(&self, topic: &str, reply: ReplyTo) -> Forwarded {
        let Broker::Redis(link) = self else {
            return Forwarded::NotNeeded;
        };
        if !link.accepting.load(Ordering::Relaxed) {
            return Forwarded::Unavailable;
        }
        link.control(Control::ConfirmTopic(topic.into(), reply));
        Forwarded::Queued
    }

    /// Hands a message from core `core` to the other servers that should
    /// get it.
    pub fn forward(&self, core: u16, forward: impl FnOnce() -> Forward) -> Forwarded {
        let Broker::Redis(link) = self else {
            return Forwarded::NotNeeded;
        };
        if !link.accepting.load(Ordering::Relaxed) {
            return Forwarded::Unavailable;
        }
        match link.forwards.try_send(forward()) {
            Ok(()) => {
                link.queued.fetch_add(1, Ordering::Relaxed);
                // The hosting core runs the relay at the end of this turn.
                if core != RELAY_CORE || !link.hosted.load(Ordering::Relaxed) {
                    link.wake.wake();
                }
                Forwarded::Queued
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Forwarded::Unavailable,
        }
    }

    /// Redis is behind: the sender of a forward should be paused.
    pub fn congested(&self) -> bool {
        match self {
            Broker::Embedded => false,
            Broker::Redis(link) => link.queued.load(Ordering::Relaxed) > PAUSE_SENDERS_AT,
        }
    }

    /// Redis caught up: paused senders may be read again.
    pub fn relieved(&self) -> bool {
        match self {
            Broker::Embedded => true,
            Broker::Redis(link) => link.queued.load(Ordering::Relaxed) < RESUME_SENDERS_AT,
        }
    }

    /// Asks the relay to remove this server from Redis and stop.
    pub fn shutdown(&self) {
        if let Broker::Redis(link) = self {
            link.control(Control::Shutdown);
        }
    }
}
