//! The engine handler of one core: admission and auth before the upgrade,
//! the client protocol, delivery to this core's connections and posts to
//! the other cores.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ringhub_engine::{
    CloseCode, CloseReason, ConnId, Ctx, Decision, Handler, HttpResponse, Message, Request,
    SharedFrame, WebSocketUpgrade,
};
use ringhub_proto::{ClientMessage, OutgoingMessage, Recipient};
use serde_json::value::RawValue;
use tracing::{debug, warn};

use crate::auth::{AuthError, Identity, dev_identity};
use crate::broker::{Audience, Forward, Forwarded, ReplyTo};
use crate::config::BroadcastPolicy;
use crate::hub::{Change, LocalHub, SubscribeError};
use crate::latency::Latencies;
use crate::metrics::Counters;
use crate::node::Node;
use crate::presence::CoreSet;
use crate::ratelimit::TokenBucket;
use crate::relay::Relay;
use crate::sources::Source;

/// The only path that upgrades to WebSocket.
pub const WS_PATH: &str = "/ws";

/// A connection's state, inline in the engine's slab: every idle
/// connection pays for it, so it is 48 bytes (topics live in the hub, only
/// for connections that have any).
#[derive(Debug, Default)]
pub struct ConnState {
    /// The user, interned by this core's hub. `None` until admitted.
    user: Option<Arc<str>>,
    /// Messages the connection may send.
    messages: TokenBucket,
    /// `error` replies it may earn before it is closed with 1008.
    errors: TokenBucket,
    /// The token allowed `broadcast` (or the policy allows everyone).
    may_broadcast: bool,
    /// Welcomed and in the hub.
    joined: bool,
    /// Not read until the relay catches up (in `CoreHandler::paused`).
    paused: bool,
    /// Where it came from, for the per-source limit (`Source::NONE` when
    /// not counted).
    source: Source,
}

/// Who a message is for, owned so it can cross cores.
#[derive(Debug, Clone)]
pub enum Target {
    User(Arc<str>),
    Topic(Arc<str>),
    Everyone,
}

/// What cores post to each other.
#[derive(Debug)]
pub enum Post {
    /// The 101 of this connection is queued: send its `welcome`. Posted by
    /// a core to itself from `on_open`, which runs before the 101.
    Welcome(ConnId),
    /// Deliver an encoded `message` frame (of `bytes` payload bytes) to
    /// this core's connections of `target`.
    Deliver {
        target: Target,
        frame: SharedFrame,
        bytes: usize,
    },
    /// Messages from other servers for this core's connections: one post
    /// per received batch, whatever the number of messages in it.
    DeliverMany(Vec<Delivery>),
    /// The relay finished forwarding messages this core's connections
    /// sent: how each went, gathered over one relay loop turn.
    Outcomes(Vec<(ReplyTo, bool)>),
    /// Host the relay waiting in [`Node::relay`] (to the relay's core).
    HostRelay,
}

/// One message for this core's connections of `target`.
#[derive(Debug)]
pub struct Delivery {
    pub target: Target,
    pub frame: SharedFrame,
    /// Payload bytes, for the counters.
    pub bytes: usize,
}

/// A `message` about to be routed: who sent it, to whom, and what.
struct Outgoing<'a> {
    from: &'a str,
    to: Recipient<'a>,
    data: &'a RawValue,
    id: Option<&'a RawValue>,
}

/// One core's handler.
#[derive(Debug)]
pub struct CoreHandler {
    node: Arc<Node>,
    core: u16,
    hub: LocalHub<ConnId>,
    counters: Arc<Counters>,
    latencies: Arc<Latencies>,
    handshakes: TokenBucket,
    epoch: Instant,
    /// Scratch for frames written by this core.
    out: Vec<u8>,
    /// The relay, on the core that hosts it.
    relay: Option<Box<Relay>>,
    /// Scratch for the relay's posts.
    relay_posts: Vec<(u16, Post)>,
    /// Connections not read until Redis catches up.
    paused: Vec<ConnId>,
}

/// How often a core with paused senders checks whether Redis caught up.
const RELIEF_CHECK: std::time::Duration = std::time::Duration::from_millis(1);

/// The watch key of the relay's epoll set.
const RELAY_WATCH: u16 = 0;

impl CoreHandler {
    pub fn new(node: Arc<Node>, core: u16) -> CoreHandler {
        let counters = node.counters[usize::from(core) % node.counters.len()].clone();
        let latencies = node.latencies[usize::from(core) % node.latencies.len()].clone();
        let handshakes = TokenBucket::full(node.settings.handshake_rate, 0);
        CoreHandler {
            node,
            core,
            hub: LocalHub::default(),
            counters,
            latencies,
            handshakes,
            epoch: Instant::now(),
            out: Vec::with_capacity(1024),
            relay: None,
            relay_posts: Vec::new(),
            paused: Vec::new(),
        }
    }

    /// Stops reading `conn` until the relay's queue drains: its client is
    /// slowed by TCP rather than told `remote_unavailable`.
    fn pause(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        let Some(state) = ctx.state(conn) else {
            return;
        };
        if state.paused {
            return;
        }
        state.paused = true;
        ctx.pause_reading(conn);
        self.paused.push(conn);
        self.count(|c| &c.senders_paused);
    }

    /// Reads the paused connections again once the relay caught up, or
    /// looks again shortly.
    fn resume_senders(&mut self, ctx: &mut Ctx<'_, Self>) {
        if !self.node.broker.relieved() {
            ctx.wake_at(Instant::now() + RELIEF_CHECK);
            return;
        }
        for conn in self.paused.drain(..) {
            if let Some(state) = ctx.state(conn) {
                state.paused = false;
                ctx.resume_reading(conn);
            }
        }
    }

    /// Runs what the hosted relay has due and hands its posts on: this
    /// core's own directly, the others' through their mailboxes.
    fn step_relay(&mut self, ctx: &mut Ctx<'_, Self>) {
        let Some(relay) = &mut self.relay else {
            return;
        };
        if !relay.is_due(Instant::now()) {
            return;
        }
        if !relay.step() {
            // Only `main` asks the relay to stop, after the cores stopped.
            warn!("the relay stopped while hosted");
        }
        relay.take_posts(&mut self.relay_posts);
        if let Some(at) = relay.next_wake() {
            ctx.wake_at(at);
        }
        let mut posts = std::mem::take(&mut self.relay_posts);
        for (core, post) in posts.drain(..) {
            if core == self.core {
                self.on_post(ctx, post);
            } else if ctx.post(core, post).is_err() {
                self.count(|c| &c.mailbox_full);
            }
        }
        self.relay_posts = posts;
    }

    /// Milliseconds since this core started, for its token buckets.
    fn now_ms(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }

    fn count(&self, counter: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) {
        Counters::add(counter(&self.counters), 1);
    }

    /// Checks the request before the 101: path, admission, origin, token.
    fn admit(
        &mut self,
        upgrade: &WebSocketUpgrade<'_, '_>,
        peer: Option<IpAddr>,
    ) -> Result<(Identity, Source), Decision> {
        let reject = |status: u16, body: &str| Decision::Reject {
            status,
            body: body.to_owned(),
        };
        if upgrade.path() != WS_PATH {
            return Err(reject(
                404,
                "not found: WebSocket upgrades are served at /ws",
            ));
        }
        let now = self.now_ms();
        if !self
            .handshakes
            .try_take(self.node.settings.handshake_rate, now)
        {
            self.count(|c| &c.rejected_handshake_rate);
            return Err(reject(503, "too many handshakes right now: retry shortly"));
        }
        if !self.node.origins.allows(upgrade.origin()) {
            self.count(|c| &c.rejected_origin);
            return Err(reject(403, "origin not allowed"));
        }
        let identity = match &self.node.auth {
            Some(auth) => match upgrade
                .query_param("token")
                .or_else(|| upgrade.bearer_token())
            {
                Some(token) => auth.verify(token),
                None => Err(AuthError::MissingToken),
            },
            None => dev_identity(upgrade.request().query_param_decoded("user").as_deref()),
        };
        let identity = identity.map_err(|e| {
            self.count(|c| &c.rejected_auth);
            reject(401, &e.to_string())
        })?;
        // Counted last, so a refused handshake never holds a place.
        let source = self.take_source_place(upgrade, peer).map_err(|()| {
            self.count(|c| &c.rejected_per_ip);
            reject(
                429,
                "too many connections from your address: close some first",
            )
        })?;
        let open = self.node.open.fetch_add(1, Ordering::Relaxed);
        if open >= self.node.settings.max_connections {
            self.release(source);
            self.count(|c| &c.rejected_capacity);
            return Err(reject(
                503,
                "server at its connection limit: retry elsewhere",
            ));
        }
        Ok((identity, source))
    }

    /// Takes a place for one more connection from the client's source, if
    /// the per-source limit is on and the address is known.
    fn take_source_place(
        &self,
        upgrade: &WebSocketUpgrade<'_, '_>,
        peer: Option<IpAddr>,
    ) -> Result<Source, ()> {
        let sources = &self.node.sources;
        let Some(peer) = peer.filter(|_| sources.enabled()) else {
            return Ok(Source::NONE);
        };
        let proxies = &self.node.trusted_proxies;
        let client = if proxies.is_empty() {
            peer
        } else {
            let forwarded: Vec<&[u8]> =
                upgrade.request().header_values("x-forwarded-for").collect();
            proxies.client(peer, &forwarded)
        };
        let source = Source::of(client);
        if sources.try_add(source) {
            Ok(source)
        } else {
            Err(())
        }
    }

    /// Gives back what admission took: the connection's place in the
    /// process and its source's count.
    fn release(&self, source: Source) {
        self.node.open.fetch_sub(1, Ordering::Relaxed);
        if source != Source::NONE {
            self.node.sources.remove(source);
        }
    }

    /// Sets up an admitted connection's state. It joins the hub only with
    /// its welcome, so nothing can reach it before the welcome does.
    fn admitted(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        identity: Identity,
        source: Source,
    ) {
        let settings = &self.node.settings;
        let now = self.now_ms();
        if let Some(state) = ctx.state(conn) {
            state.user = Some(Arc::from(identity.user));
            state.source = source;
            state.messages = TokenBucket::full(settings.message_rate, now);
            state.errors = TokenBucket::full(settings.error_rate, now);
            state.may_broadcast = match settings.broadcast {
                BroadcastPolicy::None => false,
                BroadcastPolicy::Claim => identity.broadcast_claim,
                BroadcastPolicy::All => true,
            };
        }
        self.count(|c| &c.connections_opened);
    }

    /// Sends the welcome and adds the connection to the hub and the
    /// directory (once; it may come from the posted welcome or from a
    /// message the client sent before that post was read).
    fn join(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        let Some(state) = ctx.state(conn) else {
            return;
        };
        let Some(user) = state.user.as_ref().filter(|_| !state.joined).cloned() else {
            return;
        };
        state.joined = true;
        let (interned, change) = self.hub.join(&user, conn);
        state.user = Some(interned);
        if change == Change::First {
            let broker = &self.node.broker;
            self.node
                .presence
                .users
                .add(&user, self.core, || broker.user_online(&user));
        }
        self.out.clear();
        let id = self.node.conn_ids.next();
        ringhub_proto::write_welcome(&mut self.out, &user, id, &self.node.settings.server_id);
        // One line per connection: debug only, a busy server opens thousands a second.
        debug!(user = %user, conn = id, core = self.core, "connection opened");
        self.reply(ctx, conn);
    }

    /// Sends the frame in `self.out` to `conn`.
    fn reply(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        // Every writer of `out` writes JSON from `&str`s: always UTF-8.
        if let Ok(text) = std::str::from_utf8(&self.out) {
            let _ = ctx.send_text(conn, text);
        }
    }

    /// Answers bad input with an `error` frame. Bad input costs the
    /// connection one of its error tokens: one that keeps sending it is
    /// closed with 1008 instead.
    fn error(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        code: &str,
        message: &str,
        id: Option<&RawValue>,
    ) {
        let now = self.now_ms();
        let rate = self.node.settings.error_rate;
        let within_budget = ctx
            .state(conn)
            .is_some_and(|s| s.errors.try_take(rate, now));
        if !within_budget {
            self.count(|c| &c.abuse_closes);
            ctx.close(conn, CloseCode::Policy, "too many bad messages");
            return;
        }
        self.report(ctx, conn, code, message, id);
    }

    /// Sends an `error` frame that is not the client's fault (no strike).
    fn report(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        code: &str,
        message: &str,
        id: Option<&RawValue>,
    ) {
        self.count(|c| &c.errors_sent);
        self.out.clear();
        ringhub_proto::write_error(&mut self.out, code, message, id);
        self.reply(ctx, conn);
    }

    fn ack(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, id: Option<&RawValue>) {
        if let Some(id) = id {
            self.out.clear();
            ringhub_proto::write_ack(&mut self.out, id);
            self.reply(ctx, conn);
        }
    }

    fn on_text(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, text: &str) {
        let (user, may_broadcast) = {
            let now = self.now_ms();
            let rate = self.node.settings.message_rate;
            let Some(state) = ctx.state(conn) else {
                return;
            };
            let Some(user) = state.user.clone() else {
                return;
            };
            if !state.messages.try_take(rate, now) {
                self.count(|c| &c.rate_limited);
                return self.error(
                    ctx,
                    conn,
                    "rate_limited",
                    "slow down: message rate limit",
                    None,
                );
            }
            (user, state.may_broadcast)
        };
        if text.len() > self.node.settings.max_message_bytes {
            let message = format!(
                "message of {} bytes is over the limit of {}",
                text.len(),
                self.node.settings.max_message_bytes
            );
            return self.error(ctx, conn, "too_large", &message, None);
        }
        let message = match ClientMessage::parse(text) {
            Ok(m) => m,
            Err(e) => {
                let text = e.to_string();
                return self.error(ctx, conn, e.code(), &text, e.id);
            }
        };
        match message {
            ClientMessage::Send { to, data, id } => {
                let out = Outgoing {
                    from: &user,
                    to: Recipient::User(&to),
                    data,
                    id,
                };
                self.route(ctx, &out, Some(conn));
            }
            ClientMessage::Publish { topic, data, id } => {
                let out = Outgoing {
                    from: &user,
                    to: Recipient::Topic(&topic),
                    data,
                    id,
                };
                self.route(ctx, &out, Some(conn));
            }
            ClientMessage::Broadcast { data, id } => {
                if !may_broadcast {
                    let why = "broadcast needs the \"broadcast\" claim in your token";
                    return self.error(ctx, conn, "not_allowed", why, id);
                }
                let out = Outgoing {
                    from: &user,
                    to: Recipient::Everyone,
                    data,
                    id,
                };
                self.route(ctx, &out, Some(conn));
            }
            ClientMessage::Subscribe { topic, id } => self.subscribe(ctx, conn, &topic, id),
            ClientMessage::Unsubscribe { topic, id } => {
                self.unsubscribe(conn, &topic);
                self.ack(ctx, conn, id);
            }
            ClientMessage::Ping => {
                self.out.clear();
                ringhub_proto::write_pong(&mut self.out);
                self.reply(ctx, conn);
            }
            ClientMessage::Latency { ms } => {
                self.count(|c| &c.latency_reports);
                let micros = (ms * 1000.0) as u64;
                Counters::add(&self.counters.latency_micros_sum, micros);
                self.latencies.client.record(micros);
            }
        }
    }

    /// Subscribes `conn`; with an `id`, acks once publishes from every
    /// server reach it (this server's Redis subscription is confirmed).
    fn subscribe(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        topic: &str,
        id: Option<&RawValue>,
    ) {
        match self
            .hub
            .subscribe(conn, topic, self.node.settings.max_topics)
        {
            Ok(change) => {
                if change == Change::First {
                    let broker = &self.node.broker;
                    self.node
                        .presence
                        .topics
                        .add(topic, self.core, || broker.topic_wanted(topic));
                }
                let Some(id) = id else {
                    return;
                };
                let reply = ReplyTo {
                    conn,
                    id: Some(id.get().into()),
                };
                match self.node.broker.confirm_topic(topic, reply) {
                    Forwarded::NotNeeded => self.ack(ctx, conn, Some(id)),
                    // The relay acks once Redis confirmed.
                    Forwarded::Queued => {}
                    Forwarded::Unavailable => {
                        let why = "subscribed on this server; publishes from other servers \
                                   arrive once Redis is reachable again";
                        self.report(ctx, conn, "remote_unavailable", why, Some(id));
                    }
                }
            }
            Err(SubscribeError::TooMany) => {
                let why = format!(
                    "a connection may hold at most {} topics",
                    self.node.settings.max_topics
                );
                self.error(ctx, conn, "not_allowed", &why, id);
            }
        }
    }

    fn unsubscribe(&mut self, conn: ConnId, topic: &str) {
        if self.hub.unsubscribe(conn, topic) == Change::Last {
            self.topic_left(topic);
        }
    }

    fn topic_left(&self, topic: &str) {
        let broker = &self.node.broker;
        self.node
            .presence
            .topics
            .remove(topic, self.core, || broker.topic_unwanted(topic));
    }

    /// Encodes `message` once and hands it to every connection it is for:
    /// on this core directly, on the other cores through their mailboxes,
    /// on other servers through the broker. Acks `sender` (when it gave an
    /// id) once every part is handed on, or tells it what failed. Returns
    /// false if some part could not be handed on.
    fn route(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        message: &Outgoing<'_>,
        sender: Option<ConnId>,
    ) -> bool {
        let started = Instant::now();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.out.clear();
        ringhub_proto::write_message(
            &mut self.out,
            &OutgoingMessage {
                from: message.from,
                to: message.to,
                data: message.data,
                id: message.id,
                ts,
            },
        );
        let encoded = Bytes::copy_from_slice(&self.out);
        // The WebSocket frame is built only if someone in this process
        // gets it: a send to a user on another server needs none.
        let mut frame = None;
        let shared = |frame: &mut Option<SharedFrame>| -> SharedFrame {
            frame
                .get_or_insert_with(|| SharedFrame::text(encoded.clone()))
                .clone()
        };
        let presence = &self.node.presence;
        let (local, cores): (&[ConnId], CoreSet) = match message.to {
            Recipient::User(user) => (self.hub.user(user), presence.users.cores(user)),
            Recipient::Topic(topic) => (self.hub.topic(topic), presence.topics.cores(topic)),
            Recipient::Everyone => (&[], CoreSet::all(ctx.cores())),
        };
        let mut delivered = 0;
        if !local.is_empty() {
            let frame = frame.get_or_insert_with(|| SharedFrame::text(encoded.clone()));
            delivered = ctx.broadcast(local.iter().copied(), frame);
        }
        let dropped = local.len().saturating_sub(delivered);
        if matches!(message.to, Recipient::Everyone) {
            let frame = frame.get_or_insert_with(|| SharedFrame::text(encoded.clone()));
            delivered += ctx.broadcast(self.hub.everyone(), frame);
        }
        self.delivered(delivered, dropped, encoded.len());
        let mut target = None;
        let mut refused = false;
        for core in cores.iter().filter(|c| *c != self.core) {
            let target = target.get_or_insert_with(|| match message.to {
                Recipient::User(u) => Target::User(Arc::from(u)),
                Recipient::Topic(t) => Target::Topic(Arc::from(t)),
                Recipient::Everyone => Target::Everyone,
            });
            let post = Post::Deliver {
                target: target.clone(),
                frame: shared(&mut frame),
                bytes: encoded.len(),
            };
            if ctx.post(core, post).is_err() {
                self.count(|c| &c.mailbox_full);
                refused = true;
            }
        }
        let forwarded = self.node.broker.forward(self.core, || Forward {
            audience: match message.to {
                Recipient::User(u) => Audience::User(u.into()),
                Recipient::Topic(t) => Audience::Topic(t.into()),
                Recipient::Everyone => Audience::Everyone,
            },
            frame: encoded,
            reply: sender.map(|conn| ReplyTo {
                conn,
                id: message.id.map(|id| id.get().into()),
            }),
        });
        if forwarded == Forwarded::Unavailable {
            self.count(|c| &c.remote_failures);
        }
        if forwarded == Forwarded::Queued
            && let Some(sender) = sender
            && self.node.broker.congested()
        {
            self.pause(ctx, sender);
        }
        let micros = started.elapsed().as_micros();
        self.latencies.local.record(micros as u64);
        if let Some(sender) = sender {
            if refused {
                let why = "the server is overloaded: not every recipient was reached";
                self.report(ctx, sender, "overloaded", why, message.id);
            } else {
                match forwarded {
                    Forwarded::NotNeeded => self.ack(ctx, sender, message.id),
                    // The relay posts the outcome when Redis has answered.
                    Forwarded::Queued => {}
                    Forwarded::Unavailable => {
                        let why = "delivered on this server only: other servers are unreachable";
                        self.report(ctx, sender, "remote_unavailable", why, message.id);
                    }
                }
            }
        }
        !refused && forwarded != Forwarded::Unavailable
    }

    /// Acks or reports a forward the relay finished.
    fn outcome(&mut self, ctx: &mut Ctx<'_, Self>, reply: ReplyTo, ok: bool) {
        let id = reply
            .id
            .and_then(|id| RawValue::from_string(id.into_string()).ok());
        if ok {
            self.ack(ctx, reply.conn, id.as_deref());
        } else {
            let why = "not every server could be reached: Redis failed or is unreachable";
            self.report(ctx, reply.conn, "remote_unavailable", why, id.as_deref());
        }
    }

    fn deliver(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        target: &Target,
        frame: &mut SharedFrame,
        bytes: usize,
    ) {
        let (delivered, wanted) = match target {
            Target::User(user) => {
                let conns = self.hub.user(user);
                (ctx.broadcast(conns.iter().copied(), frame), conns.len())
            }
            Target::Topic(topic) => {
                let conns = self.hub.topic(topic);
                (ctx.broadcast(conns.iter().copied(), frame), conns.len())
            }
            Target::Everyone => (ctx.broadcast(self.hub.everyone(), frame), 0),
        };
        self.delivered(delivered, wanted.saturating_sub(delivered), bytes);
    }

    /// Counts frames of `bytes` queued for `delivered` local connections,
    /// and `dropped` more that could not take them.
    fn delivered(&self, delivered: usize, dropped: usize, bytes: usize) {
        let c = &self.counters;
        Counters::add(&c.messages_delivered, delivered as u64);
        Counters::add(&c.bytes_out, (delivered * bytes) as u64);
        if dropped > 0 {
            Counters::add(&c.dropped_slow_consumer, dropped as u64);
        }
    }
}

impl Handler for CoreHandler {
    type State = ConnState;
    type Post = Post;

    fn on_request(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        _conn: ConnId,
        request: &Request<'_>,
        body: &[u8],
    ) -> Option<HttpResponse> {
        crate::http::respond(self, ctx, request, body)
    }

    fn on_open(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        upgrade: &WebSocketUpgrade<'_, '_>,
    ) -> Decision {
        let peer = ctx.peer_addr(conn).map(|a| a.ip());
        let (identity, source) = match self.admit(upgrade, peer) {
            Ok(admitted) => admitted,
            Err(decision) => return decision,
        };
        // The welcome can only be queued once the 101 is: post it to this
        // core, whose mailbox is read after this callback returns.
        if ctx.post(self.core, Post::Welcome(conn)).is_err() {
            self.release(source);
            self.count(|c| &c.mailbox_full);
            return Decision::Reject {
                status: 503,
                body: "server overloaded: retry shortly".into(),
            };
        }
        self.admitted(ctx, conn, identity, source);
        Decision::accept()
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, message: Message<'_>) {
        self.count(|c| &c.messages_in);
        let len = match message {
            Message::Text(text) => text.len(),
            Message::Binary(bytes) => bytes.len(),
        };
        Counters::add(&self.counters.bytes_in, len as u64);
        // A client may send before its posted welcome is read: welcome first.
        self.join(ctx, conn);
        match message {
            Message::Text(text) => self.on_text(ctx, conn, text),
            Message::Binary(_) => self.error(
                ctx,
                conn,
                "bad_json",
                "binary frames are not accepted: send JSON text frames",
                None,
            ),
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, reason: CloseReason) {
        let Some((user, joined, source)) = ctx
            .state(conn)
            .and_then(|s| Some((s.user.take()?, s.joined, s.source)))
        else {
            return;
        };
        self.release(source);
        self.count(|c| &c.connections_closed);
        debug!(user = %user, core = self.core, reason = ?reason, "connection closed");
        let c = &self.counters;
        let by_reason = match reason {
            CloseReason::Peer(_) => &c.closed_peer,
            CloseReason::Local(_) => &c.closed_local,
            CloseReason::Protocol(_) => &c.closed_protocol,
            CloseReason::SlowConsumer => &c.closed_slow_consumer,
            CloseReason::Timeout => &c.closed_timeout,
            CloseReason::Shutdown => &c.closed_shutdown,
            CloseReason::Vanished => &c.closed_vanished,
        };
        Counters::add(by_reason, 1);
        if !matches!(
            reason,
            CloseReason::Peer(_) | CloseReason::Local(_) | CloseReason::Shutdown
        ) {
            self.count(|c| &c.unexpected_disconnects);
        }
        if !joined {
            return;
        }
        let (change, emptied) = self.hub.leave(&user, conn);
        if change == Change::Last {
            let broker = &self.node.broker;
            self.node
                .presence
                .users
                .remove(&user, self.core, || broker.user_offline(&user));
        }
        for topic in emptied {
            self.topic_left(&topic);
        }
    }

    fn on_post(&mut self, ctx: &mut Ctx<'_, Self>, post: Post) {
        match post {
            Post::Welcome(conn) => self.join(ctx, conn),
            Post::Deliver {
                target,
                mut frame,
                bytes,
            } => self.deliver(ctx, &target, &mut frame, bytes),
            Post::DeliverMany(deliveries) => {
                for mut d in deliveries {
                    self.deliver(ctx, &d.target, &mut d.frame, d.bytes);
                }
            }
            Post::Outcomes(outcomes) => {
                for (reply, ok) in outcomes {
                    self.outcome(ctx, reply, ok);
                }
            }
            Post::HostRelay => {
                if let Some(relay) = self.node.relay.take() {
                    ctx.watch_readable(relay.poll_fd(), RELAY_WATCH);
                    self.relay = Some(relay);
                    self.step_relay(ctx);
                }
            }
        }
    }

    fn on_readable(&mut self, _: &mut Ctx<'_, Self>, key: u16) {
        if key == RELAY_WATCH
            && let Some(relay) = &mut self.relay
        {
            // The turn's end steps it and delivers its posts.
            relay.on_io();
        }
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, Self>) {
        // This core may stop long before the others (it stops once its own
        // connections are gone): the relay goes on on a thread.
        if let Some(relay) = self.relay.take() {
            ctx.unwatch(RELAY_WATCH);
            self.node.relay.release(relay);
        }
    }

    fn on_turn_end(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.step_relay(ctx);
        if !self.paused.is_empty() {
            self.resume_senders(ctx);
        }
    }
}

impl Drop for CoreHandler {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.take() {
            self.node.relay.release(relay);
        }
    }
}

/// Routing entry points for the HTTP API, which speaks the same JSON.
impl CoreHandler {
    /// Routes an API message from `from`; false if a core refused it.
    pub(crate) fn route_api(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        from: &str,
        to: Recipient<'_>,
        data: &RawValue,
    ) -> bool {
        self.count(|c| &c.api_publishes);
        let out = Outgoing {
            from,
            to,
            data,
            id: None,
        };
        self.route(ctx, &out, None)
    }

    pub(crate) fn node(&self) -> &Node {
        &self.node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_state_stays_small() {
        assert!(std::mem::size_of::<ConnState>() <= 48);
    }
}
