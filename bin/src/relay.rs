//! The relay: the one owner of a process's Redis connections.
//!
//! It drains what the cores queued (route changes, messages for other
//! servers), turns it into commands that leave as one pipeline per loop
//! turn (redis-lite writes everything queued for a node in one write),
//! and posts what arrives from other servers into the cores' mailboxes.
//!
//! It runs on core 0's thread ([`crate::handler::CoreHandler`] hosts it):
//! the readiness of its sockets comes through that core's ring (it watches
//! the relay's epoll set), [`Relay::step`] runs at the end of every one of
//! the core's loop turns and [`Relay::next_wake`] sets the core's alarm.
//! A message from a connection on core 0 to a server costs no thread wake
//! on the way out and one on the way in, as in a single-threaded server;
//! other cores reach it through a queue and the epoll set's waker. From
//! the start of a shutdown (the cores' last route removals, then this
//! server's own entries) [`Relay::run`] drives it on a thread of its own;
//! see [`RelayHost`].
//!
//! Batching: everything bound for one channel (`server:<id>`,
//! `topic:<name>`, `broadcast`) in one loop turn leaves as one publish of a
//! [`wire::Batch`]; one reply settles every record in it. On receipt, a
//! batch becomes one mailbox post per core that holds any of its
//! recipients. Under load a loop turn sees many messages, so commands and
//! wakes per message fall well below one; an idle relay publishes each
//! message at once, so batching adds no latency.
//! The Redis schema (DESIGN.md, "Across servers"):
//!
//! - `user_servers:<user>`: the servers holding a user (SADD on its first
//!   connection here, SREM on its last, a TTL refreshed in bulk);
//!   `server_users:<server>`: the reverse, so survivors can prune a dead
//!   server's routes.
//! - `servers`: a sorted set of heartbeat times, a ZADD four times per
//!   heartbeat interval per server (O(servers) traffic); a server silent
//!   for half an interval is pruned by whichever survivor sees it first
//!   (see [`Liveness`]).
//! - channels `server:<id>` (messages for users here), `topic:<name>`
//!   (subscribed while a topic has local subscribers), `broadcast`, and
//!   `routes` (route cache invalidations, see [`crate::routes`]). Sharded
//!   (SSUBSCRIBE/SPUBLISH) on a cluster, plain on a standalone server.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use redis_lite::{Action, Client, Event, RequestId, SubKind, Value, cmd};
use ringhub_engine::{Poster, SharedFrame};
use slab::Slab;
use std::os::fd::{AsRawFd, RawFd};
use tracing::{debug, info, warn};

use crate::batcher::{Batcher, Ready};
use crate::broker::{Audience, Control, Forward, RelayInbox, ReplyTo};
use crate::handler::{Delivery, Post, Target};
use crate::liveness::{BEATS_PER_PERIOD, Liveness};
use crate::metrics::Counters;
use crate::node::Node;
use crate::presence::CoreSet;
use crate::retry::{RetryPolicy, retryable};
use crate::routes::RouteCache;
use crate::wire;

/// The poll token of the cores' waker.
pub const WAKE: Token = Token(usize::MAX);

/// Longest a shutdown waits for Redis to confirm this server's removal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Published payload bytes Redis may owe replies for before the relay stops
/// taking forwards from the cores. A few milliseconds of Redis's work: enough
/// for full throughput over a loopback or in-VPC round trip, small enough
/// that a heartbeat or a lookup queued behind it is never late. Past it the
/// cores' forward queue grows, senders are paused (see
/// [`crate::broker::PAUSE_SENDERS_AT`]) and, past its bound, told
/// `remote_unavailable`, instead of Redis falling seconds behind until its
/// replies time out.
const MAX_UNANSWERED_BYTES: usize = 4 << 20;

/// Route writes sent per step at most: a reconnect re-registers every user
/// and a prune removes every user of the dead server, and the relay runs on
/// a core, which must not stall its connections on one long step.
const ROUTE_WRITES_PER_STEP: usize = 4096;

/// Readiness events taken per epoll wait.
const EVENTS: usize = 256;

/// Heartbeats over which one round of route TTL refreshes is spread.
const TTL_REFRESH_EVERY: u64 = 10;

/// Who drives the relay when: `main` leaves it here and posts
/// [`Post::HostRelay`] to core [`crate::broker::RELAY_CORE`], which takes it
/// and steps it every loop turn; when that core starts shutting down it
/// hands the relay to a thread of its own (the cores' last route removals
/// still have to go out, and a core with no connections left stops long
/// before the others), which `main` tells to leave Redis once every core
/// has stopped, and joins.
#[derive(Debug, Default)]
pub struct RelayHost {
    parked: std::sync::Mutex<Option<Box<Relay>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    poster: std::sync::OnceLock<Poster<Post>>,
}

impl RelayHost {
    /// Parks `relay` for a core to take, posting through `poster` once it
    /// leaves the cores.
    pub fn park(&self, relay: Box<Relay>, poster: Poster<Post>) {
        let _ = self.poster.set(poster);
        relay.inbox.hosted.store(false, Ordering::Relaxed);
        *lock(&self.parked) = Some(relay);
    }

    /// The parked relay, for the hosting core.
    pub fn take(&self) -> Option<Box<Relay>> {
        let relay = lock(&self.parked).take()?;
        relay.inbox.hosted.store(true, Ordering::Relaxed);
        Some(relay)
    }

    /// The hosting core is stopping: the relay goes on on a thread.
    pub fn release(&self, relay: Box<Relay>) {
        relay.inbox.hosted.store(false, Ordering::Relaxed);
        let Some(poster) = self.poster.get().cloned() else {
            *lock(&self.parked) = Some(relay);
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("ringhub-relay".into())
            .spawn(move || relay.run(&poster));
        match spawned {
            Ok(handle) => *lock(&self.thread) = Some(handle),
            Err(e) => warn!("cannot start the relay's shutdown thread: {e}"),
        }
    }

    /// After the cores stopped and the broker was told to shut down:
    /// waits for the relay to leave Redis (driving it here if no core ever
    /// took it). Nothing to do without Redis (no relay was parked).
    pub fn finish(&self) {
        if let Some(relay) = lock(&self.parked).take()
            && let Some(poster) = self.poster.get()
        {
            relay.run(poster);
        }
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the relay needs to start.
#[derive(Debug)]
pub struct RelaySetup {
    pub redis: redis_lite::Config,
    pub server_id: String,
    pub heartbeat: Duration,
    /// How long failed publishes are tried again (`RINGHUB_REMOTE_RETRY_SECS`).
    pub retry: RetryPolicy,
    pub poll: Poll,
    pub inbox: RelayInbox,
}

#[derive(Debug)]
struct Socket {
    conn: redis_lite::ConnId,
    stream: TcpStream,
    connected: bool,
    out: VecDeque<Bytes>,
}

/// A node name resolved and connected to off the core: the connection, the
/// name, the connected socket or why there is none.
type Resolved = (
    redis_lite::ConnId,
    String,
    Result<std::net::TcpStream, String>,
);

/// What a socket's readiness event says about reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readable {
    No,
    Data,
    /// The peer closed or the socket failed: read until the error or EOF.
    Closing,
}

/// What a reply is for.
#[derive(Debug)]
enum Pending {
    /// SMEMBERS user_servers:<user> for the forwards waiting on it.
    Lookup(Box<str>),
    /// The publish of a batch of messages.
    Batch(Box<InFlight>),
    /// This server's heartbeat ZADD, sent during registration number
    /// `registration`. Adding the server, rather than updating its score,
    /// means it was pruned (or Redis lost its data), unless `first` (the
    /// beat that registers it) or sent before the current registration.
    Beat { first: bool, registration: u64 },
    /// ZRANGEBYSCORE of servers silent too long.
    DeadServers,
    /// SMEMBERS server_users:<dead>.
    DeadUsers(Box<str>),
    /// INCR of the shared counter that numbers servers for connection ids.
    ServerNumber,
    /// Fire and forget (route writes, heartbeats): failures are repaired by
    /// the re-registration after a reconnect.
    Ignore,
}

/// A published batch awaiting its reply, kept whole so it can be retried.
#[derive(Debug)]
struct InFlight {
    ready: Ready,
    first_sent: Instant,
    retries: u32,
}

/// The outstanding replies of one forward: its sender hears once all are in.
#[derive(Debug)]
struct Group {
    reply: ReplyTo,
    remaining: u32,
    failed: bool,
}

/// The relay's state.
pub struct Relay {
    node: Arc<Node>,
    cores: u16,
    /// What this step posts to the cores, delivered by the driver.
    posts: Vec<(u16, Post)>,
    client: Client,
    poll: Poll,
    events: Events,
    /// Sockets were handled since the last step.
    io_seen: bool,
    /// Route writes (fire and forget) waiting to be sent, in order.
    route_writes: VecDeque<redis_lite::Cmd>,
    /// Connections whose node name is being resolved on a helper thread
    /// (the relay runs on a core, which must never wait for DNS).
    resolving: HashSet<redis_lite::ConnId>,
    resolved_tx: std::sync::mpsc::Sender<Resolved>,
    resolved_rx: std::sync::mpsc::Receiver<Resolved>,
    /// When the last step said the next must run (see [`Relay::next_wake`]).
    due_at: Option<Instant>,
    inbox: RelayInbox,
    sockets: Slab<Socket>,
    by_conn: HashMap<redis_lite::ConnId, usize>,
    server_id: Box<str>,
    sub_kind: SubKind,
    publish: &'static str,
    cache: RouteCache,
    lookups: HashMap<Box<str>, Vec<Forward>>,
    pending: HashMap<RequestId, Pending>,
    groups: Slab<Group>,
    /// Messages not published yet, per channel.
    batcher: Batcher,
    /// Publishes awaiting their reply, per channel: a channel's next batch
    /// waits for the reply to its last one (it fills meanwhile), so under
    /// load batches grow with Redis's round trip instead of going out
    /// every loop turn, and an idle channel still publishes at once.
    channel_flights: crate::names::NameMap<Bytes, u32>,
    /// Batches waiting to be published again, with when.
    retries: Vec<(Instant, Box<InFlight>)>,
    /// Payload bytes in `retries`.
    retry_bytes: usize,
    /// Payload bytes of publishes sent and not answered yet.
    unanswered_bytes: usize,
    retry: RetryPolicy,
    /// Subscribers waiting for the confirmation of a topic channel.
    topic_waiters: HashMap<Bytes, Vec<ReplyTo>>,
    /// This loop turn's outcomes for the senders, per core.
    outcomes: Vec<Vec<(ReplyTo, bool)>>,
    /// Connections (node, carries pub/sub) that are down.
    down: HashSet<(String, bool)>,
    /// Whether this server's routes are known to be in Redis.
    registered: bool,
    /// Registrations so far (the first, and one after each reconnect or
    /// prune).
    registrations: u64,
    /// Since when this server's heartbeats have all succeeded.
    beating_since: Option<Instant>,
    /// Whether Redis gave this server its number for connection ids.
    numbered: bool,
    liveness: Liveness,
    route_ttl_secs: u64,
    next_beat: Instant,
    beats: u64,
    /// Users whose route TTL this round still has to refresh: taken every
    /// `TTL_REFRESH_EVERY` beats, sent a tenth per beat.
    ttl_due: Vec<Box<str>>,
    stopping: Option<Instant>,
    read_buf: Box<[u8]>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("server_id", &self.server_id)
            .field("pending", &self.pending.len())
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn key(prefix: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + name.len());
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

impl Relay {
    /// A relay for `cores` cores; it subscribes to this server's channels
    /// as soon as it is first driven.
    pub fn new(node: Arc<Node>, cores: u16, setup: RelaySetup) -> Result<Relay, redis_lite::Error> {
        let cluster = setup.redis.cluster;
        let seed = now_ms() ^ u64::from(std::process::id()).rotate_left(32);
        let mut client = Client::new(setup.redis, seed, Instant::now())?;
        let hb = setup.heartbeat;
        let sub_kind = if cluster {
            SubKind::Shard
        } else {
            SubKind::Channel
        };
        let channels = [
            Bytes::from(key("server:", &setup.server_id)),
            Bytes::from_static(b"broadcast"),
            Bytes::from_static(b"routes"),
        ];
        client.subscribe(sub_kind, channels, Instant::now());
        let batcher = Batcher::new(&setup.server_id);
        let cores_n = usize::from(cores);
        let (resolved_tx, resolved_rx) = std::sync::mpsc::channel();
        Ok(Relay {
            node,
            cores,
            posts: Vec::new(),
            client,
            poll: setup.poll,
            events: Events::with_capacity(EVENTS),
            io_seen: true,
            route_writes: VecDeque::new(),
            resolving: HashSet::new(),
            resolved_tx,
            resolved_rx,
            due_at: None,
            inbox: setup.inbox,
            sockets: Slab::new(),
            by_conn: HashMap::new(),
            server_id: setup.server_id.into(),
            sub_kind,
            publish: if cluster { "SPUBLISH" } else { "PUBLISH" },
            cache: RouteCache::new(hb * 6),
            lookups: HashMap::new(),
            pending: HashMap::new(),
            groups: Slab::new(),
            batcher,
            channel_flights: Default::default(),
            retries: Vec::new(),
            retry_bytes: 0,
            unanswered_bytes: 0,
            retry: setup.retry,
            topic_waiters: HashMap::new(),
            outcomes: (0..cores_n).map(|_| Vec::new()).collect(),
            down: HashSet::new(),
            registered: false,
            registrations: 0,
            beating_since: None,
            numbered: false,
            liveness: Liveness::new(hb),
            route_ttl_secs: (hb.as_secs() * TTL_REFRESH_EVERY * 3).max(60),
            next_beat: Instant::now(),
            beats: 0,
            ttl_due: Vec::new(),
            stopping: None,
            read_buf: vec![0; 256 * 1024].into_boxed_slice(),
        })
    }

    /// The epoll set holding the relay's sockets and its waker: readable
    /// when [`Relay::on_io`] has work.
    pub fn poll_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    /// Whether [`Relay::step`] has anything to do: sockets were handled, the
    /// cores queued something, or a deadline passed. Checked on every loop
    /// turn of the hosting core, so it reads only atomics and the clock.
    pub fn is_due(&self, now: Instant) -> bool {
        self.io_seen
            || !self.route_writes.is_empty()
            || self.inbox.queued.load(Ordering::Relaxed) > 0
            || self.inbox.wake.is_pending()
            || self.due_at.is_some_and(|t| now >= t)
    }

    /// Does everything due without blocking: what the cores queued, timers,
    /// and the pipelines and events that follow. False once a shutdown has
    /// been carried out (Redis confirmed or the grace passed).
    pub fn step(&mut self) -> bool {
        let go_on = self.step_once();
        self.io_seen = false;
        self.due_at = self.deadline();
        go_on
    }

    fn step_once(&mut self) -> bool {
        let now = Instant::now();
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        self.inbox.wake.clear();
        self.drain_inbox();
        self.send_route_writes(ROUTE_WRITES_PER_STEP);
        self.timers();
        self.carry_out();
        if let Some(deadline) = self.stopping
            && (self.pending.is_empty() || Instant::now() >= deadline)
        {
            self.client.shutdown(Instant::now());
            self.carry_out();
            info!("left Redis");
            return false;
        }
        true
    }

    /// When [`Relay::step`] must run next if no socket becomes ready, as
    /// of the last step.
    pub fn next_wake(&self) -> Option<Instant> {
        self.due_at
    }

    /// The earliest of the relay's own deadlines.
    fn deadline(&self) -> Option<Instant> {
        [
            Some(self.next_beat),
            (!self.route_writes.is_empty()).then(Instant::now),
            self.client.poll_timeout(),
            self.stopping,
            self.retries.iter().map(|(at, _)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles the sockets that are ready, without blocking.
    pub fn on_io(&mut self) {
        self.io_seen = true;
        self.wait_io(Some(Duration::ZERO));
    }

    /// What this step posted to the cores, for the driver to deliver.
    pub fn take_posts(&mut self, into: &mut Vec<(u16, Post)>) {
        into.append(&mut self.posts);
    }

    /// Waits up to `timeout` (None: until something happens) for the
    /// sockets, then handles what is ready.
    fn wait_io(&mut self, timeout: Option<Duration>) {
        let mut timeout = timeout;
        loop {
            if let Err(e) = self.poll.poll(&mut self.events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                warn!("relay poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            let ready: Vec<(usize, Readable, bool)> = self
                .events
                .iter()
                .filter(|e| e.token() != WAKE)
                .map(|e| {
                    let readable = if e.is_read_closed() || e.is_error() {
                        Readable::Closing
                    } else if e.is_readable() {
                        Readable::Data
                    } else {
                        Readable::No
                    };
                    (e.token().0, readable, e.is_writable())
                })
                .collect();
            let full = self.events.iter().count() == EVENTS;
            for (key, readable, writable) in ready {
                self.on_ready(key, readable, writable);
            }
            // A full batch may leave events queued, which would raise no
            // new readiness on the epoll set: take them now.
            if !full {
                return;
            }
            timeout = Some(Duration::ZERO);
        }
    }

    /// Drives the relay on the calling thread until a shutdown has been
    /// carried out, posting through `poster`: the cores are not hosting it
    /// (before they start, or after they stopped).
    pub fn run(mut self, poster: &Poster<Post>) {
        let mut posts = Vec::new();
        loop {
            let go_on = self.step();
            self.take_posts(&mut posts);
            for (core, post) in posts.drain(..) {
                if poster.post(core, post).is_err() {
                    Counters::add(&self.node.relay_counters().mailbox_full, 1);
                }
            }
            if !go_on {
                return;
            }
            let timeout = self
                .next_wake()
                .map(|t| t.saturating_duration_since(Instant::now()));
            self.wait_io(timeout);
        }
    }

    /// Queues a route write; they leave in order, a bounded number per step.
    fn queue_route(&mut self, command: redis_lite::Cmd) {
        self.route_writes.push_back(command);
    }

    fn send_route_writes(&mut self, at_most: usize) {
        for _ in 0..at_most.min(self.route_writes.len()) {
            if let Some(command) = self.route_writes.pop_front() {
                self.send(command, Pending::Ignore);
            }
        }
    }

    fn send(&mut self, command: redis_lite::Cmd, why: Pending) {
        let id = self.client.send(command, Instant::now());
        Counters::add(&self.node.relay_counters().redis_commands, 1);
        self.pending.insert(id, why);
    }

    // ----- from the cores ----------------------------------------------------

    fn drain_inbox(&mut self) {
        while let Ok(control) = self.inbox.control.try_recv() {
            self.on_control(control);
        }
        while let Ok((conn, addr, result)) = self.resolved_rx.try_recv() {
            // Closed by the client while it was being resolved: drop it.
            if self.resolving.remove(&conn) {
                let stream = result.and_then(|s| {
                    s.set_nonblocking(true)
                        .map(|()| TcpStream::from_std(s))
                        .map_err(|e| format!("cannot use the socket to {addr}: {e}"))
                });
                match stream {
                    Ok(stream) => self.add_socket(conn, stream),
                    Err(reason) => self
                        .client
                        .handle_disconnected(conn, &reason, Instant::now()),
                }
            }
        }
        // One clock read for the route cache per drain, not per message.
        let now = Instant::now();
        while self.unanswered_bytes < MAX_UNANSWERED_BYTES
            && let Ok(forward) = self.inbox.forwards.try_recv()
        {
            self.inbox.queued.fetch_sub(1, Ordering::Relaxed);
            self.on_forward(forward, now);
        }
    }

    fn on_control(&mut self, control: Control) {
        let now = Instant::now();
        match control {
            Control::UserOnline(user) => {
                self.register_user(&user);
                // Other servers' caches must learn about this server.
                let publish = cmd(self.publish).arg("routes").arg(&*user);
                self.queue_route(publish);
            }
            Control::UserOffline(user) => {
                let id = &*self.server_id;
                let srem = cmd("SREM").arg(key("user_servers:", &user)).arg(id);
                let back = cmd("SREM").arg(key("server_users:", id)).arg(&*user);
                self.queue_route(srem);
                self.queue_route(back);
            }
            Control::TopicWanted(topic) => {
                let channel = Bytes::from(key("topic:", &topic));
                self.client.subscribe(self.sub_kind, [channel], now);
            }
            Control::TopicUnwanted(topic) => {
                let channel = Bytes::from(key("topic:", &topic));
                // Whoever waited for it has left it: nothing to confirm.
                self.answer_topic_waiters(&channel, true);
                self.client.unsubscribe(self.sub_kind, [channel], now);
            }
            Control::ConfirmTopic(topic, reply) => {
                let channel = Bytes::from(key("topic:", &topic));
                if self.client.is_subscribed(self.sub_kind, &channel)
                    || self.node.presence.topics.cores(&topic).is_empty()
                {
                    // Confirmed already, or its subscribers left.
                    self.answer(reply, true);
                } else {
                    // The wanting core's TopicWanted may still be behind
                    // this in the queue: subscribing again is a no-op.
                    self.client.subscribe(self.sub_kind, [channel.clone()], now);
                    self.topic_waiters.entry(channel).or_default().push(reply);
                }
            }
            Control::Shutdown => {
                // The cores are stopped: their last connections' SREMs are
                // queued ahead of this. Send them all, then remove the
                // server itself.
                self.send_route_writes(usize::MAX);
                let id = &*self.server_id;
                let zrem = cmd("ZREM").arg("servers").arg(id);
                let del = cmd("DEL").arg(key("server_users:", id));
                self.send(zrem, Pending::Ignore);
                self.send(del, Pending::Ignore);
                self.stopping = Some(Instant::now() + SHUTDOWN_GRACE);
            }
        }
    }

    fn register_user(&mut self, user: &str) {
        let id = &*self.server_id;
        let route = key("user_servers:", user);
        let sadd = cmd("SADD").arg(&route[..]).arg(id);
        let expire = cmd("EXPIRE").arg(&route[..]).arg(self.route_ttl_secs);
        let back = cmd("SADD").arg(key("server_users:", id)).arg(user);
        self.queue_route(sadd);
        self.queue_route(expire);
        self.queue_route(back);
    }

    fn on_forward(&mut self, forward: Forward, now: Instant) {
        match &forward.audience {
            Audience::User(user) => {
                if let Some(waiting) = self.lookups.get_mut(user) {
                    waiting.push(forward);
                    return;
                }
                match self.cache.get(user, now) {
                    Some(servers) => self.publish_to_servers(forward, &servers),
                    None => {
                        let user = user.clone();
                        let lookup = cmd("SMEMBERS").arg(key("user_servers:", &user));
                        self.send(lookup, Pending::Lookup(user.clone()));
                        self.lookups.insert(user, vec![forward]);
                    }
                }
            }
            Audience::Topic(topic) => {
                let group = self.group(forward.reply, 1);
                let audience = wire::Audience::Topic(topic);
                let full = self
                    .batcher
                    .push("topic:", topic, audience, &forward.frame, group);
                self.publish_batch(full);
            }
            Audience::Everyone => {
                let group = self.group(forward.reply, 1);
                let audience = wire::Audience::Everyone;
                let full = self
                    .batcher
                    .push("broadcast", "", audience, &forward.frame, group);
                self.publish_batch(full);
            }
        }
    }

    /// Queues a user's message for every other server holding the user.
    fn publish_to_servers(&mut self, forward: Forward, servers: &[Box<str>]) {
        let Audience::User(user) = &forward.audience else {
            return;
        };
        let me = &*self.server_id;
        let parts = servers.iter().filter(|s| &***s != me).count() as u32;
        if parts == 0 {
            if let Some(reply) = forward.reply {
                self.tell(reply, true);
            }
            return;
        }
        let group = self.group(forward.reply, parts);
        let audience = wire::Audience::User(user);
        for server in servers {
            if *server == self.server_id {
                continue;
            }
            let full = self
                .batcher
                .push("server:", server, audience, &forward.frame, group);
            self.publish_batch(full);
        }
    }

    /// Publishes the batches of this loop turn.
    fn flush_batches(&mut self) {
        if self.batcher.is_empty() {
            return;
        }
        let now = Instant::now();
        let flights = &self.channel_flights;
        let ready: Vec<Ready> = self
            .batcher
            .drain_where(|channel| !flights.contains_key(channel))
            .collect();
        for ready in ready {
            self.send_batch(Box::new(InFlight {
                ready,
                first_sent: now,
                retries: 0,
            }));
        }
    }

    /// Publishes a batch that filled up before the end of the loop turn.
    fn publish_batch(&mut self, full: Option<Ready>) {
        if let Some(ready) = full {
            self.send_batch(Box::new(InFlight {
                ready,
                first_sent: Instant::now(),
                retries: 0,
            }));
        }
    }

    fn send_batch(&mut self, flight: Box<InFlight>) {
        self.unanswered_bytes += flight.ready.payload.len();
        *self
            .channel_flights
            .entry(flight.ready.channel.clone())
            .or_default() += 1;
        let publish = cmd(self.publish)
            .arg(&flight.ready.channel[..])
            .arg(&flight.ready.payload[..]);
        self.send(publish, Pending::Batch(flight));
    }

    /// Settles every record of a batch: its groups, and the failures of
    /// records nobody waits for.
    fn settle(&mut self, ready: &Ready, ok: bool) {
        for &group in &ready.groups {
            self.part_done(Some(group), ok);
        }
        if !ok {
            let unwaited = ready.records as usize - ready.groups.len();
            Counters::add(&self.node.relay_counters().remote_failures, unwaited as u64);
        }
    }

    fn group(&mut self, reply: Option<ReplyTo>, parts: u32) -> Option<usize> {
        reply.map(|reply| {
            self.groups.insert(Group {
                reply,
                remaining: parts,
                failed: false,
            })
        })
    }

    fn part_done(&mut self, group: Option<usize>, ok: bool) {
        let Some(key) = group else {
            if !ok {
                self.count_failure();
            }
            return;
        };
        let Some(g) = self.groups.get_mut(key) else {
            return;
        };
        g.remaining -= 1;
        g.failed |= !ok;
        if g.remaining == 0 {
            let g = self.groups.remove(key);
            self.tell(g.reply, !g.failed);
        }
    }

    /// Tells a connection's core how a request (not a delivery) went.
    fn answer(&mut self, reply: ReplyTo, ok: bool) {
        if let Some(outcomes) = self.outcomes.get_mut(usize::from(reply.conn.core)) {
            outcomes.push((reply, ok));
        }
    }

    /// Answers everyone waiting for the subscription to `channel`.
    fn answer_topic_waiters(&mut self, channel: &[u8], ok: bool) {
        for reply in self.topic_waiters.remove(channel).unwrap_or_default() {
            self.answer(reply, ok);
        }
    }

    /// Tells a sender's core how its forward went.
    fn tell(&mut self, reply: ReplyTo, ok: bool) {
        if !ok {
            self.count_failure();
        }
        if ok && reply.id.is_none() {
            return;
        }
        if let Some(outcomes) = self.outcomes.get_mut(usize::from(reply.conn.core)) {
            outcomes.push((reply, ok));
        }
    }

    /// Posts this loop turn's outcomes, one post per core.
    fn flush_outcomes(&mut self) {
        for (core, outcomes) in self.outcomes.iter_mut().enumerate() {
            if outcomes.is_empty() {
                continue;
            }
            let post = Post::Outcomes(std::mem::take(outcomes));
            self.posts.push((core as u16, post));
        }
    }

    fn count_failure(&self) {
        Counters::add(&self.node.relay_counters().remote_failures, 1);
    }

    // ----- replies and messages ---------------------------------------------

    fn on_reply(&mut self, id: RequestId, result: Result<Value, redis_lite::Error>) {
        let Some(why) = self.pending.remove(&id) else {
            return;
        };
        if result.is_err() {
            Counters::add(&self.node.relay_counters().redis_errors, 1);
        }
        match why {
            Pending::Ignore => {
                if let Err(e) = result {
                    debug!("redis command failed: {e}");
                    self.registered = false;
                }
            }
            Pending::Beat {
                first,
                registration,
            } => match result {
                Ok(Value::Int(added))
                    if added > 0
                        && !first
                        && self.registered
                        && registration == self.registrations =>
                {
                    warn!(
                        "this server was pruned from Redis while alive: registering its routes again"
                    );
                    self.registered = false;
                    self.update_ready();
                }
                Ok(_) => {
                    self.beating_since.get_or_insert_with(Instant::now);
                }
                Err(e) => {
                    debug!("heartbeat failed: {e}");
                    self.beating_since = None;
                    self.registered = false;
                }
            },
            Pending::Lookup(user) => {
                let waiting = self.lookups.remove(&user).unwrap_or_default();
                match result {
                    Ok(value) => {
                        let servers: Vec<Box<str>> = value
                            .as_array()
                            .unwrap_or_default()
                            .iter()
                            .filter_map(Value::as_str)
                            .map(Into::into)
                            .collect();
                        let servers = self.cache.insert(&user, servers, Instant::now());
                        for forward in waiting {
                            self.publish_to_servers(forward, &servers);
                        }
                    }
                    Err(e) => {
                        debug!("route lookup for a user failed: {e}");
                        for forward in waiting {
                            if let Some(reply) = forward.reply {
                                self.tell(reply, false);
                            } else {
                                self.count_failure();
                            }
                        }
                    }
                }
            }
            Pending::Batch(flight) => self.on_batch_reply(flight, result),
            Pending::ServerNumber => match result.ok().and_then(|v| v.as_int()) {
                // Until this answer, ids carry a random server number.
                Some(n) => {
                    self.numbered = true;
                    self.node.conn_ids.set_server(n as u64);
                }
                None => warn!("no server number from Redis: connection ids use a random one"),
            },
            Pending::DeadServers => {
                let Ok(value) = result else { return };
                let dead: Vec<Box<str>> = value
                    .as_array()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|s| **s != *self.server_id)
                    .map(Into::into)
                    .collect();
                for server in dead {
                    self.cache.forget_server(&server);
                    let members = cmd("SMEMBERS").arg(key("server_users:", &server));
                    self.send(members, Pending::DeadUsers(server));
                }
            }
            Pending::DeadUsers(server) => {
                let Ok(value) = result else { return };
                let users = value.as_array().unwrap_or_default();
                for user in users.iter().filter_map(Value::as_str) {
                    let srem = cmd("SREM").arg(key("user_servers:", user)).arg(&*server);
                    self.queue_route(srem);
                }
                let del = cmd("DEL").arg(key("server_users:", &server));
                let zrem = cmd("ZREM").arg("servers").arg(&*server);
                self.queue_route(del);
                self.queue_route(zrem);
                info!(server = %server, routes = users.len(), "pruned a server that stopped heartbeating");
            }
        }
    }

    fn on_batch_reply(&mut self, flight: Box<InFlight>, result: Result<Value, redis_lite::Error>) {
        self.unanswered_bytes -= flight.ready.payload.len();
        if let Some(n) = self.channel_flights.get_mut(&flight.ready.channel) {
            *n -= 1;
            if *n == 0 {
                self.channel_flights.remove(&flight.ready.channel);
            }
        }
        match result {
            // Nobody listens on a server's channel: it is gone, or
            // resubscribing after a failover. Stop routing its users there
            // until the routes say otherwise, and try again within the
            // retry bound; past it, they count as offline.
            Ok(Value::Int(0)) if flight.ready.channel.starts_with(b"server:") => {
                if let Ok(batch) = wire::decode(&flight.ready.payload) {
                    for record in &batch.records {
                        if let wire::Audience::User(user) = record.audience {
                            self.cache.invalidate(user);
                        }
                    }
                }
                if let Some(flight) = self.try_again(flight) {
                    debug!(
                        "{} had no subscriber until the retry bound: its users are offline",
                        String::from_utf8_lossy(&flight.ready.channel)
                    );
                    self.settle(&flight.ready, true);
                }
            }
            Ok(_) => self.settle(&flight.ready, true),
            Err(e) if retryable(&e) => {
                if let Some(flight) = self.try_again(flight) {
                    debug!("publish failed ({e}) until the retry bound: senders told");
                    self.settle(&flight.ready, false);
                }
            }
            Err(e) => {
                debug!("publish failed ({e}): senders told");
                self.settle(&flight.ready, false);
            }
        }
    }

    /// Schedules a batch to be published again, or hands it back when the
    /// retry bound (time, count, memory) is spent or the server is stopping.
    fn try_again(&mut self, mut flight: Box<InFlight>) -> Option<Box<InFlight>> {
        let size = flight.ready.payload.len();
        if self.stopping.is_some() || self.retry_bytes + size > self.retry.max_bytes {
            return Some(flight);
        }
        let Some(at) = self
            .retry
            .next(flight.retries, flight.first_sent, Instant::now())
        else {
            return Some(flight);
        };
        flight.retries += 1;
        let records = u64::from(flight.ready.records);
        Counters::add(&self.node.relay_counters().remote_retries, records);
        self.retry_bytes += size;
        self.retries.push((at, flight));
        None
    }

    fn on_message(&mut self, channel: &[u8], payload: Bytes) {
        if channel == b"routes" {
            if let Ok(user) = std::str::from_utf8(&payload) {
                self.cache.invalidate(user);
            }
            return;
        }
        let relayed = match wire::decode(&payload) {
            Ok(r) => r,
            Err(e) => {
                debug!("ignored a foreign message on our channels: {e}");
                return;
            }
        };
        if relayed.origin == &*self.server_id {
            // Our own publish, echoed back on a topic we also subscribe to:
            // its local recipients already have it.
            return;
        }
        let presence = &self.node.presence;
        let cores = self.cores;
        let now = now_ms();
        let remote = &self.node.relay_latencies().remote;
        // One post per core per batch, holding every record for it.
        let mut per_core: Vec<Vec<Delivery>> = (0..cores).map(|_| Vec::new()).collect();
        // Consecutive records for one user or topic (the common case in a
        // conversation) share one name and one directory lookup.
        let mut last: Option<(wire::Audience<'_>, Target, CoreSet)> = None;
        for record in relayed.records {
            let (target, holders) = match &last {
                Some((audience, target, holders)) if *audience == record.audience => {
                    (target.clone(), *holders)
                }
                _ => {
                    let (target, holders) = match record.audience {
                        wire::Audience::User(u) => {
                            (Target::User(u.into()), presence.users.cores(u))
                        }
                        wire::Audience::Topic(t) => {
                            (Target::Topic(t.into()), presence.topics.cores(t))
                        }
                        wire::Audience::Everyone => (Target::Everyone, CoreSet::all(cores)),
                    };
                    last = Some((record.audience, target.clone(), holders));
                    (target, holders)
                }
            };
            if holders.is_empty() {
                continue;
            }
            if let Some(ts) = crate::latency::message_ts(&record.frame) {
                remote.record(now.saturating_sub(ts) * 1000);
            }
            let bytes = record.frame.len();
            let frame = SharedFrame::text(record.frame);
            for core in holders.iter() {
                if let Some(deliveries) = per_core.get_mut(usize::from(core)) {
                    deliveries.push(Delivery {
                        target: target.clone(),
                        frame: frame.clone(),
                        bytes,
                    });
                }
            }
        }
        for (core, deliveries) in per_core.into_iter().enumerate() {
            if deliveries.is_empty() {
                continue;
            }
            self.posts
                .push((core as u16, Post::DeliverMany(deliveries)));
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Reply { id, result } => self.on_reply(id, result),
            Event::Message(m) => self.on_message(&m.channel, m.payload),
            Event::Connected { addr, pubsub } => {
                self.down.remove(&(addr, pubsub));
                self.update_ready();
            }
            Event::Disconnected {
                addr,
                pubsub,
                error,
            } => {
                if self.down.insert((addr.clone(), pubsub)) {
                    warn!("lost Redis node {addr}: {error}; reconnecting");
                }
                self.registered = false;
                self.update_ready();
            }
            Event::SlotMapUpdated { .. } => {
                let masters: HashSet<String> = self.client.masters().into_iter().collect();
                self.down.retain(|(a, _)| masters.contains(a));
                self.update_ready();
            }
            Event::MessagesMayBeLost {
                channels, reason, ..
            } => {
                debug!("{} subscriptions interrupted: {reason}", channels.len());
            }
            Event::SubscribeFailed { channel, error, .. } => {
                warn!(
                    "subscribing to {} failed: {error}",
                    String::from_utf8_lossy(&channel)
                );
                self.answer_topic_waiters(&channel, false);
            }
            Event::Subscribed { channel, .. } => self.answer_topic_waiters(&channel, true),
            Event::Push { .. } => {}
        }
    }

    /// Publishes readiness; after (re)connecting, puts this server's
    /// routes and heartbeat back, since Redis may have lost them.
    fn update_ready(&mut self) {
        let ready = self.client.is_ready() && self.down.is_empty();
        // On a cluster, commands for the masters that are up still work
        // while one fails over; those for the failed one fail on their own.
        let masters = self.client.masters();
        let accepting = if masters.is_empty() {
            ready
        } else {
            self.client.is_ready()
                && masters
                    .iter()
                    .any(|m| !self.down.contains(&(m.clone(), false)))
        };
        self.inbox.accepting.store(accepting, Ordering::Relaxed);
        let was = self.inbox.ready.swap(ready, Ordering::Relaxed);
        if ready && !was {
            info!("Redis reachable");
        }
        if ready && !self.registered && self.stopping.is_none() {
            self.registered = true;
            self.registrations += 1;
            self.cache.clear();
            if !self.numbered {
                self.send(cmd("INCR").arg("ringhub:server_seq"), Pending::ServerNumber);
            }
            let users = self.node.presence.users.names();
            for user in &users {
                self.register_user(user);
            }
            self.beat(true);
            if !users.is_empty() {
                info!(users = users.len(), "re-registered routes in Redis");
            }
        }
    }

    // ----- timers -------------------------------------------------------------

    fn timers(&mut self) {
        let now = Instant::now();
        if self.retries.iter().any(|(at, _)| *at <= now) {
            let (due, later) = std::mem::take(&mut self.retries)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            self.retries = later;
            for (_, flight) in due {
                self.retry_bytes -= flight.ready.payload.len();
                self.send_batch(flight);
            }
        }
        if now < self.next_beat || self.stopping.is_some() {
            return;
        }
        self.next_beat = now + self.liveness.beat_every();
        self.beat(false);
        // Prune only once this server's own beats have gone through for a
        // while: after the node holding `servers` failed over or restarted,
        // every server's score is old, and the others need a beat to renew
        // theirs before anyone counts as silent.
        let trusted = self
            .beating_since
            .is_some_and(|t| now.duration_since(t) >= self.liveness.prune_bound());
        if trusted {
            let silent = self.liveness.silent_since_ms(now_ms());
            let scan = cmd("ZRANGEBYSCORE").arg("servers").arg("-inf").arg(silent);
            self.send(scan, Pending::DeadServers);
        }
        self.beats += 1;
        if self.beats.is_multiple_of(u64::from(BEATS_PER_PERIOD)) {
            self.refresh_route_ttls();
        }
    }

    /// Refreshes the route TTLs of this server's users, spread over
    /// `TTL_REFRESH_EVERY` beats, so Redis sees a steady trickle of EXPIREs
    /// (one pipeline per beat) instead of one burst per round.
    fn refresh_route_ttls(&mut self) {
        let round = (self.beats / u64::from(BEATS_PER_PERIOD)) % TTL_REFRESH_EVERY;
        if round == 0 {
            self.ttl_due = self.node.presence.users.names();
        }
        let beats_left = (TTL_REFRESH_EVERY - round) as usize;
        let now = self.ttl_due.len().div_ceil(beats_left);
        let ttl = self.route_ttl_secs;
        let start = self.ttl_due.len() - now;
        for user in self.ttl_due.split_off(start) {
            let expire = cmd("EXPIRE").arg(key("user_servers:", &user)).arg(ttl);
            self.queue_route(expire);
        }
    }

    fn beat(&mut self, first: bool) {
        let zadd = cmd("ZADD")
            .arg("servers")
            .arg(now_ms())
            .arg(&*self.server_id);
        let registration = self.registrations;
        self.send(
            zadd,
            Pending::Beat {
                first,
                registration,
            },
        );
    }

    // ----- sockets --------------------------------------------------------------

    /// Carries out the client's actions, writes its output and handles its
    /// events until it has nothing more to say.
    fn carry_out(&mut self) {
        loop {
            self.flush_batches();
            let mut progressed = false;
            while let Some(action) = self.client.poll_action() {
                progressed = true;
                match action {
                    Action::Connect { conn, addr } => self.open_socket(conn, &addr),
                    Action::Close { conn } => {
                        self.resolving.remove(&conn);
                        if let Some(key) = self.by_conn.remove(&conn)
                            && let Some(mut socket) = self.sockets.try_remove(key)
                        {
                            let _ = self.poll.registry().deregister(&mut socket.stream);
                        }
                    }
                }
            }
            let mut touched = Vec::new();
            while let Some((conn, bytes)) = self.client.poll_transmit() {
                progressed = true;
                if let Some(&key) = self.by_conn.get(&conn) {
                    self.sockets[key].out.push_back(bytes);
                    touched.push(key);
                }
            }
            for key in touched {
                self.write_out(key);
            }
            while let Some(event) = self.client.poll_event() {
                progressed = true;
                self.on_event(event);
            }
            if !progressed {
                self.flush_outcomes();
                return;
            }
        }
    }

    /// Connects to `addr`: at once (non-blocking) if it is an IP address;
    /// a name is resolved and connected to by a helper thread, address by
    /// address as `std` does (a name may give `::1` before `127.0.0.1`),
    /// and the socket comes back through the inbox, with a wake.
    fn open_socket(&mut self, conn: redis_lite::ConnId, addr: &str) {
        if let Ok(sa) = addr.parse::<SocketAddr>() {
            return match TcpStream::connect(sa) {
                Ok(stream) => self.add_socket(conn, stream),
                Err(e) => {
                    let reason = format!("cannot connect to {addr}: {e}");
                    self.client
                        .handle_disconnected(conn, &reason, Instant::now());
                }
            };
        }
        let tx = self.resolved_tx.clone();
        let wake = self.inbox.wake.clone();
        let name = addr.to_owned();
        let timeout = self.client.config().connect_timeout;
        let spawned = std::thread::Builder::new()
            .name("ringhub-resolve".into())
            .spawn(move || {
                let result = connect_by_name(&name, timeout);
                let _ = tx.send((conn, name, result));
                wake.wake();
            });
        match spawned {
            Ok(_) => {
                self.resolving.insert(conn);
            }
            Err(e) => {
                let reason = format!("cannot resolve {addr}: no thread for it ({e})");
                self.client
                    .handle_disconnected(conn, &reason, Instant::now());
            }
        }
    }

    fn add_socket(&mut self, conn: redis_lite::ConnId, mut stream: TcpStream) {
        let now = Instant::now();
        let entry = self.sockets.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            let reason = format!("cannot poll a socket: {e}");
            return self.client.handle_disconnected(conn, &reason, now);
        }
        entry.insert(Socket {
            conn,
            stream,
            connected: false,
            out: VecDeque::new(),
        });
        self.by_conn.insert(conn, key);
    }

    fn on_ready(&mut self, key: usize, readable: Readable, writable: bool) {
        let Some(socket) = self.sockets.get_mut(key) else {
            return;
        };
        let conn = socket.conn;
        if !socket.connected {
            match socket.stream.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(key, &format!("connect failed: {e}")),
                Ok(None) => {}
            }
            match socket.stream.peer_addr() {
                Ok(_) => {
                    socket.connected = true;
                    let _ = socket.stream.set_nodelay(true);
                    self.client.handle_connected(conn, Instant::now());
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(key, &format!("connect failed: {e}")),
            }
            self.carry_out();
        }
        if writable {
            self.write_out(key);
        }
        if readable != Readable::No {
            self.read_in(key, readable == Readable::Closing);
        }
        self.carry_out();
    }

    /// Reads what the socket holds; `closing`: until the end of the stream.
    fn read_in(&mut self, key: usize, closing: bool) {
        loop {
            let Some(socket) = self.sockets.get_mut(key) else {
                return;
            };
            let conn = socket.conn;
            match socket.stream.read(&mut self.read_buf) {
                Ok(0) => return self.fail(key, "Redis closed the connection"),
                Ok(n) => {
                    self.client
                        .handle_input(conn, &self.read_buf[..n], Instant::now());
                    // A short read emptied the socket: bytes arriving later
                    // raise a new (edge-triggered) event, so the read that
                    // would only say WouldBlock is saved, once per wake.
                    if n < self.read_buf.len() && !closing {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(key, &format!("read failed: {e}")),
            }
        }
    }

    fn write_out(&mut self, key: usize) {
        let Some(socket) = self.sockets.get_mut(key) else {
            return;
        };
        if !socket.connected {
            return;
        }
        while let Some(front) = socket.out.front_mut() {
            match socket.stream.write(front) {
                Ok(n) if n == front.len() => {
                    socket.out.pop_front();
                }
                Ok(n) => bytes::Buf::advance(front, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(key, &format!("write failed: {e}")),
            }
        }
    }

    fn fail(&mut self, key: usize, reason: &str) {
        let Some(mut socket) = self.sockets.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut socket.stream);
        self.by_conn.remove(&socket.conn);
        self.client
            .handle_disconnected(socket.conn, reason, Instant::now());
    }
}

/// Resolves `name` (host:port) and connects to its addresses in turn, each
/// within `timeout`. Blocking: for a helper thread.
fn connect_by_name(name: &str, timeout: Duration) -> Result<std::net::TcpStream, String> {
    let addrs = name
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {name}: {e}"))?;
    let mut last = format!("cannot connect to {name}: it resolves to no address");
    for sa in addrs {
        match std::net::TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("cannot connect to {name} ({sa}): {e}"),
        }
    }
    Err(last)
}
