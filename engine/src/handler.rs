//! The application's side of the engine: a [`Handler`] per core, called with
//! a [`Ctx`] through which it sends, closes, broadcasts and posts to other
//! cores. The engine knows WebSocket, not what the messages mean.

use bytes::Bytes;
use ringhub_proto::{CloseCode, Request, WebSocketUpgrade};

use crate::io::Io;
use crate::mailbox::PostError;

/// A connection, valid on the core that owns it. A stale id (the connection
/// closed, its slot reused) is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The owning core.
    pub core: u16,
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// The handler's answer to an upgrade request, given before the 101 is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Open the WebSocket, naming the subprotocol picked from the client's
    /// offer (see [`WebSocketUpgrade::select_protocol`]).
    Accept { protocol: Option<String> },
    /// Answer with an HTTP error and close.
    Reject { status: u16, body: String },
}

impl Decision {
    /// Accept without a subprotocol.
    pub fn accept() -> Decision {
        Decision::Accept { protocol: None }
    }
}

/// The answer to a plain HTTP request (health checks, metrics, a status
/// page, small API calls) on the WebSocket port. The connection stays open
/// for the client's next request when it asks (HTTP/1.1 keep-alive), up to
/// `Config::max_requests_per_connection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with a body.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse {
            status,
            content_type,
            body: body.into(),
        }
    }
}

/// A whole message received, borrowing the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, already validated as UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// Why a connection closed, as told to [`Handler::on_close`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent a close frame with this code (None: no code).
    Peer(Option<u16>),
    /// The application closed it with this code.
    Local(CloseCode),
    /// The peer broke the protocol; it was sent this code.
    Protocol(CloseCode),
    /// Its send queue passed the limit: closed with `Config::slow_consumer_code`.
    SlowConsumer,
    /// No byte and no pong within the idle timeout.
    Timeout,
    /// The server is shutting down: closed with 1001.
    Shutdown,
    /// The TCP connection ended or failed without a close handshake.
    Vanished,
}

/// What travels between cores: the application's posts, and sends or
/// closes for connections the target core owns.
#[derive(Debug)]
pub(crate) enum Mail<P> {
    App(P),
    Send(ConnId, SharedFrame),
    SendMany(Vec<ConnId>, SharedFrame),
    Close(ConnId, CloseCode),
}

/// Why a send was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is gone or closing (or its core's mailbox is full).
    #[error("the connection is closed, or its core is not taking mail")]
    Closed,
    /// The connection's send queue overflowed: it is being closed with 1008.
    #[error("the connection is too slow and is being closed")]
    SlowConsumer,
}

/// A frame encoded once and shared by reference count, so one message to a
/// thousand subscribers costs one encoding (and one compression).
#[derive(Debug, Clone)]
pub struct SharedFrame {
    /// Header and payload, uncompressed.
    pub(crate) plain: Bytes,
    /// Header and compressed payload, for connections with permessage-deflate;
    /// `None` when compression does not pay (small or incompressible).
    pub(crate) deflated: Option<Bytes>,
    pub(crate) text: bool,
    pub(crate) payload: Bytes,
    pub(crate) deflate_done: bool,
}

impl SharedFrame {
    /// A text message.
    pub fn text(payload: impl Into<Bytes>) -> SharedFrame {
        SharedFrame::new(true, payload.into())
    }

    /// A binary message.
    pub fn binary(payload: impl Into<Bytes>) -> SharedFrame {
        SharedFrame::new(false, payload.into())
    }

    fn new(text: bool, payload: Bytes) -> SharedFrame {
        let plain = crate::io::encode_data_frame(text, false, &payload);
        SharedFrame {
            plain,
            deflated: None,
            text,
            payload,
            deflate_done: false,
        }
    }

    /// The encoded bytes sent to connections without compression.
    pub fn as_bytes(&self) -> &Bytes {
        &self.plain
    }
}

/// The application: one instance per core, never shared between threads.
pub trait Handler: Sized + 'static {
    /// Per-connection state, stored inline in the connection's slot: keep it
    /// small, as every idle connection pays for it.
    type State: Default;
    /// What cores post to each other (e.g. a frame for a topic).
    type Post: Send + 'static;

    /// A request that does not ask for a WebSocket upgrade arrived, with its
    /// body (at most `Config::max_request_body` bytes). Answer it, or return
    /// None to have it refused with 426 Upgrade Required.
    fn on_request(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        request: &Request<'_>,
        body: &[u8],
    ) -> Option<HttpResponse> {
        let _ = (ctx, conn, request, body);
        None
    }

    /// An upgrade request arrived; decide before the 101 is sent.
    fn on_open(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        upgrade: &WebSocketUpgrade<'_, '_>,
    ) -> Decision;

    /// The 101 for `conn` is queued and it is open: messages sent now
    /// (a welcome) go out right behind the 101.
    fn on_opened(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        let _ = (ctx, conn);
    }

    /// A whole message arrived.
    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, message: Message<'_>);

    /// The connection left the open state (once per opened connection);
    /// it can no longer be sent to, but `ctx.state(conn)` still reads its
    /// state during this call, for cleanup.
    fn on_close(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, reason: CloseReason) {
        let _ = (ctx, conn, reason);
    }

    /// Another core posted `post` to this one.
    fn on_post(&mut self, ctx: &mut Ctx<'_, Self>, post: Self::Post) {
        let _ = (ctx, post);
    }

    /// The server is shutting down; connections are about to get 1001.
    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, Self>) {
        let _ = ctx;
    }

    /// The descriptor watched as `key` (see [`Ctx::watch_readable`]) is
    /// readable. Read it until it would block: the watch reports new data,
    /// not data left unread.
    fn on_readable(&mut self, ctx: &mut Ctx<'_, Self>, key: u16) {
        let _ = (ctx, key);
    }

    /// Every completion of this loop turn has been handled and the core is
    /// about to submit its sends and wait. Work batched over a turn (e.g. a
    /// pipeline of commands for a database) goes out here, in the same
    /// syscall as the turn's sends. Called on every turn: keep it cheap.
    fn on_turn_end(&mut self, ctx: &mut Ctx<'_, Self>) {
        let _ = ctx;
    }
}

/// What a handler can do, borrowed from its core for one callback.
pub struct Ctx<'a, H: Handler> {
    pub(crate) io: &'a mut Io<H>,
}

impl<H: Handler> std::fmt::Debug for Ctx<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("core", &self.io.core_id)
            .finish()
    }
}

impl<H: Handler> Ctx<'_, H> {
    /// This core's id.
    pub fn core(&self) -> u16 {
        self.io.core_id
    }

    /// How many cores the server runs.
    pub fn cores(&self) -> u16 {
        self.io.outboxes.len() as u16
    }

    /// Open connections on this core.
    pub fn connections(&self) -> usize {
        self.io.conns.len()
    }

    /// The address `conn` connected from, during its HTTP phase: in
    /// [`Handler::on_request`], [`Handler::on_open`] and
    /// [`Handler::on_opened`]. The engine keeps no address per open
    /// WebSocket (it would cost every idle connection), so None afterwards:
    /// keep what you need (e.g. the IP for a per-source limit) in the
    /// connection's state. A dual-stack listener reports IPv4 peers as
    /// IPv4-mapped IPv6 addresses (see [`std::net::Ipv6Addr::to_canonical`]).
    pub fn peer_addr(&self, conn: ConnId) -> Option<std::net::SocketAddr> {
        self.io.peer_addr(conn)
    }

    /// The connection's application state, if it is still open here.
    pub fn state(&mut self, conn: ConnId) -> Option<&mut H::State> {
        self.io.conn_mut(conn).map(|c| &mut c.state)
    }

    /// Sends a text message. To a connection on another core it goes
    /// through that core's mailbox: `Ok` then means handed over, not sent.
    pub fn send_text(&mut self, conn: ConnId, text: &str) -> Result<(), SendError> {
        if conn.core != self.io.core_id {
            return self.forward(
                conn.core,
                Mail::Send(conn, SharedFrame::text(text.to_owned())),
            );
        }
        self.io.send_data(conn, true, text.as_bytes())
    }

    /// Sends a binary message (to any core, like [`Ctx::send_text`]).
    pub fn send_binary(&mut self, conn: ConnId, data: &[u8]) -> Result<(), SendError> {
        if conn.core != self.io.core_id {
            let frame = SharedFrame::binary(Bytes::copy_from_slice(data));
            return self.forward(conn.core, Mail::Send(conn, frame));
        }
        self.io.send_data(conn, false, data)
    }

    /// Sends a frame encoded once for many connections (to any core).
    pub fn send_shared(&mut self, conn: ConnId, frame: &mut SharedFrame) -> Result<(), SendError> {
        if conn.core != self.io.core_id {
            return self.forward(conn.core, Mail::Send(conn, frame.clone()));
        }
        self.io.send_shared(conn, frame)
    }

    /// Sends `frame` to every connection in `conns`, on this core directly
    /// and on other cores with one mailbox message per core. Returns how many
    /// local connections took it plus how many were handed to other cores.
    /// Closed ids are skipped; slow consumers are closed.
    pub fn broadcast<I>(&mut self, conns: I, frame: &mut SharedFrame) -> usize
    where
        I: IntoIterator<Item = ConnId>,
    {
        let here = self.io.core_id;
        let mut remote: Vec<Vec<ConnId>> = Vec::new();
        let mut count = 0;
        for conn in conns {
            if conn.core == here {
                count += usize::from(self.io.send_shared(conn, frame).is_ok());
            } else {
                let core = usize::from(conn.core);
                if remote.len() <= core {
                    remote.resize_with(core + 1, Vec::new);
                }
                remote[core].push(conn);
            }
        }
        for (core, ids) in remote.into_iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            let n = ids.len();
            if self
                .forward(core as u16, Mail::SendMany(ids, frame.clone()))
                .is_ok()
            {
                count += n;
            }
        }
        count
    }

    /// Starts the close handshake with `code` (on any core).
    pub fn close(&mut self, conn: ConnId, code: CloseCode, reason: &str) {
        if conn.core != self.io.core_id {
            let _ = self.forward(conn.core, Mail::Close(conn, code));
            return;
        }
        self.io
            .close_with(conn, code, reason, CloseReason::Local(code));
    }

    /// Hands engine mail to another core.
    fn forward(&mut self, core: u16, mail: Mail<H::Post>) -> Result<(), SendError> {
        self.deliver_mail(core, mail).map_err(|_| SendError::Closed)
    }

    fn deliver_mail(&mut self, core: u16, mail: Mail<H::Post>) -> Result<(), PostError> {
        let result = match self.io.outboxes.get(usize::from(core)) {
            Some(outbox) => outbox.post_from_core(mail).map(|ring| {
                if let Some(ring) = ring {
                    self.io.wake_core(ring);
                }
            }),
            None => Err(PostError::NoSuchCore),
        };
        if result == Err(PostError::Full) {
            crate::stats::CoreStats::add(&self.io.stats.mailbox_full, 1);
        }
        result
    }

    /// Posts `msg` to core `core`'s [`Handler::on_post`]. Never blocks: a full
    /// mailbox is an error the caller decides about.
    pub fn post(&mut self, core: u16, msg: H::Post) -> Result<(), PostError> {
        self.deliver_mail(core, Mail::App(msg))
    }

    /// Stops reading from `conn` (on this core) until
    /// [`Ctx::resume_reading`]: its socket buffer fills and TCP slows the
    /// peer down. Backpressure for a sender whose messages cannot be taken
    /// on now: frames already received but not yet handled wait too, and
    /// reach the handler once it resumes. A paused connection is not timed
    /// out as idle; closing it resumes reading, for the close handshake.
    pub fn pause_reading(&mut self, conn: ConnId) {
        self.io.pause_reading(conn);
    }

    /// Reads from `conn` again after [`Ctx::pause_reading`].
    pub fn resume_reading(&mut self, conn: ConnId) {
        self.io.resume_reading(conn);
    }

    /// Calls [`Handler::on_readable`] with `key` each time `fd` becomes
    /// readable, until [`Ctx::unwatch`] or the descriptor fails. For the few
    /// descriptors an application drives next to its connections (a
    /// database client's sockets, or the epoll set holding them), so their
    /// I/O runs on this core instead of waking another thread per message.
    /// `fd` must stay open while watched; watching a key again replaces it.
    /// If polling it fails, the handler is called once more and the watch
    /// ends.
    pub fn watch_readable(&mut self, fd: std::os::fd::RawFd, key: u16) {
        self.unwatch(key);
        self.io.watches.push((key, fd));
        self.io.arm_watch(key, fd);
    }

    /// Stops the watch `key` (no effect if there is none).
    pub fn unwatch(&mut self, key: u16) {
        if let Some(i) = self.io.watches.iter().position(|&(k, _)| k == key) {
            self.io.watches.swap_remove(i);
            let sqe = io_uring::opcode::AsyncCancel::new(crate::token::Token::watch(key))
                .build()
                .user_data(crate::token::Token::ring(crate::token::RingOp::Cancel));
            self.io.push(0, sqe);
        }
    }

    /// Makes this core's loop turn (and call [`Handler::on_turn_end`]) by
    /// `at` even if nothing else happens: the deadline of the handler's own
    /// timers. The earliest request wins; asking every turn is cheap, as a
    /// timer is armed only for a deadline earlier than the one armed.
    pub fn wake_at(&mut self, at: std::time::Instant) {
        if self.io.wake_request.is_none_or(|r| at < r) {
            self.io.wake_request = Some(at);
        }
    }
}
