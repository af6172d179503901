//! The sans-IO client: one node or a whole cluster, as seen by the driver.
//!
//! The client owns the state of every connection (a [`Connection`] each),
//! decides which node a command goes to, follows redirects, refreshes the
//! slot map, replays subscriptions and schedules reconnects. The driver only
//! moves bytes and time; see the crate docs for the loop.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;

use crate::backoff::{Backoff, Rng};
use crate::cluster::{Fanout, Route, route};
use crate::cmd::{Cmd, cmd};
use crate::config::Config;
use crate::conn::{ConnEvent, Connection};
use crate::error::{Error, RedirectKind};
use crate::pubsub::{SubState, Subscriptions};
use crate::pubsub_kind::{Message, SubKind};
use crate::slot::key_slot;
use crate::slot_map::{SlotTable, Topology, host_of};
use crate::value::Value;

/// Names a request; its reply comes back as [`Event::Reply`] with this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Names one socket the driver holds for the client. A reconnect gets a new
/// `ConnId`, so bytes from a stale socket can never reach a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

/// What the driver must do with sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to `addr` (`host:port`), then call
    /// [`Client::handle_connected`] or [`Client::handle_disconnected`].
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
        /// The id [`Client::send`] returned.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Command = 0,
    PubSub = 1,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Dest {
    User(RequestId),
    Part { fanout: usize, part: usize },
}

/// What a reply on a connection is for.
#[derive(Debug)]
pub(crate) enum Tag {
    Request {
        dest: Dest,
        redirects: u8,
        direct: bool,
    },
    Asking,
    Refresh {
        shards: bool,
    },
    Sub {
        kind: SubKind,
        subscribe: bool,
        channels: Vec<Bytes>,
    },
}

#[derive(Debug)]
struct Link {
    node: usize,
    role: Role,
    generation: u32,
    conn: Option<Connection<Tag>>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    last_error: String,
    /// Reconnect after a failure (false for nodes that left the cluster).
    wanted: bool,
    dirty: bool,
}

#[derive(Debug)]
struct Node {
    addr: String,
    links: [Option<usize>; 2],
    in_topology: bool,
}

#[derive(Debug, Default)]
struct Refresh {
    in_flight: bool,
    again: bool,
    last: Option<Instant>,
    scheduled: Option<Instant>,
    use_slots: bool,
    last_error: String,
}

/// A Redis (or Redis Cluster) client without I/O. See the crate docs.
#[derive(Debug)]
pub struct Client {
    config: Arc<Config>,
    rng: Rng,
    links: Vec<Link>,
    nodes: Vec<Node>,
    by_addr: HashMap<String, usize>,
    slots: SlotTable,
    topology: Option<Topology>,
    refresh: Refresh,
    waiting: VecDeque<(Dest, Cmd, Instant)>,
    fanouts: Slab<(RequestId, Fanout)>,
    subs: Subscriptions,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    dirty: Vec<usize>,
    next_id: u64,
    any_cursor: usize,
}

impl Client {
    /// A client for `config`. `seed` feeds the reconnect jitter (pass
    /// something that differs between processes). Connections start at once:
    /// drain [`Client::poll_action`].
    pub fn new(config: Config, seed: u64, now: Instant) -> Result<Self, Error> {
        if config.seeds.is_empty() {
            return Err(Error::Config("no Redis address given".to_owned()));
        }
        if config.cluster && config.db != 0 {
            return Err(Error::Config(
                "Redis Cluster has only database 0".to_owned(),
            ));
        }
        let mut client = Self {
            rng: Rng::new(seed),
            links: Vec::new(),
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            slots: SlotTable::new(),
            topology: None,
            refresh: Refresh::default(),
            waiting: VecDeque::new(),
            fanouts: Slab::new(),
            subs: Subscriptions::default(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            dirty: Vec::new(),
            next_id: 0,
            any_cursor: 0,
            config: Arc::new(config),
        };
        let seeds = if client.config.cluster {
            client.config.seeds.clone()
        } else {
            client.config.seeds[..1].to_vec()
        };
        for addr in seeds {
            let node = client.node_for(&addr);
            client.nodes[node].in_topology = !client.config.cluster;
            let link = client.link_for(node, Role::Command);
            client.ensure_connecting(link, now);
        }
        Ok(client)
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// True once commands can be routed: the standalone connection is up,
    /// or the cluster slot map is known.
    pub fn is_ready(&self) -> bool {
        if self.config.cluster {
            self.topology.is_some()
        } else {
            self.links
                .first()
                .and_then(|l| l.conn.as_ref())
                .is_some_and(Connection::is_ready)
        }
    }

    /// The cluster's masters, as last loaded (empty for standalone).
    pub fn masters(&self) -> Vec<String> {
        self.topology
            .as_ref()
            .map(|t| t.shards.iter().map(|s| s.master.clone()).collect())
            .unwrap_or_default()
    }

    /// The node a key's slot is routed to right now.
    pub fn node_for_key(&self, key: &[u8]) -> Option<&str> {
        if !self.config.cluster {
            return self.nodes.first().map(|n| n.addr.as_str());
        }
        self.slots
            .get(key_slot(key))
            .map(|n| self.nodes[n].addr.as_str())
    }

    /// The subscriptions wanted right now.
    pub fn subscriptions(&self) -> Vec<(SubKind, Bytes)> {
        let mut v: Vec<_> = self.subs.iter().map(|(k, c, _)| (k, c.clone())).collect();
        v.sort();
        v
    }

    /// Queues a command; its reply comes back as [`Event::Reply`].
    /// Commands queued in one loop turn go out in one write per node.
    pub fn send(&mut self, command: Cmd, now: Instant) -> RequestId {
        let id = self.next_request_id();
        if self.config.cluster {
            self.route_and_submit(Dest::User(id), command, now);
        } else {
            let link = self.link_for(0, Role::Command);
            self.submit(
                link,
                Tag::Request {
                    dest: Dest::User(id),
                    redirects: 0,
                    direct: true,
                },
                command,
                false,
                now,
            );
        }
        id
    }

    /// Like [`Client::send`] for a command the caller keeps and sends again
    /// (a benchmark, a heartbeat): on a standalone server it is encoded
    /// straight from the reference, without a copy of the command.
    pub fn send_ref(&mut self, command: &Cmd, now: Instant) -> RequestId {
        if self.config.cluster {
            return self.send(command.clone(), now);
        }
        let id = self.next_request_id();
        let link = self.link_for(0, Role::Command);
        let tag = Tag::Request {
            dest: Dest::User(id),
            redirects: 0,
            direct: true,
        };
        if let Some(error) = self.unavailable(link) {
            self.complete(link, tag, Err(error), None, now);
            return id;
        }
        self.ensure_connecting(link, now);
        if let Some(c) = self.links[link].conn.as_mut() {
            c.send_ref(tag, command, now);
        }
        self.drain(link, now);
        id
    }

    /// Sends a command to one node, with no routing and no redirects
    /// (`FLUSHALL`, `KEYS`, `CLUSTER ...` on a given master).
    pub fn send_to(&mut self, addr: &str, command: Cmd, now: Instant) -> RequestId {
        let id = self.next_request_id();
        let node = self.node_for(addr);
        let link = self.link_for(node, Role::Command);
        self.submit(
            link,
            Tag::Request {
                dest: Dest::User(id),
                redirects: 0,
                direct: true,
            },
            command,
            false,
            now,
        );
        id
    }

    /// Wants these subscriptions (kept and replayed until unsubscribed).
    /// Sharded channels go to the master of their slot.
    pub fn subscribe<I: IntoIterator<Item = Bytes>>(
        &mut self,
        kind: SubKind,
        channels: I,
        now: Instant,
    ) {
        let added: Vec<_> = channels
            .into_iter()
            .filter(|c| self.subs.want(kind, c.clone()))
            .map(|c| (kind, c))
            .collect();
        self.reconcile(added, now);
    }

    /// Stops wanting these subscriptions.
    pub fn unsubscribe<I: IntoIterator<Item = Bytes>>(
        &mut self,
        kind: SubKind,
        channels: I,
        now: Instant,
    ) {
        let mut by_link: BTreeMap<usize, Vec<Bytes>> = BTreeMap::new();
        for c in channels {
            if let Some(SubState::Active(l) | SubState::Pending(l)) = self.subs.unwant(kind, &c) {
                by_link.entry(l).or_default().push(c);
            }
        }
        for (link, channels) in by_link {
            if self.links[link]
                .conn
                .as_ref()
                .is_some_and(|c| !c.is_closed())
            {
                self.submit_sub(link, kind, false, channels, now);
            }
        }
    }

    /// Fails everything in flight with [`Error::Shutdown`] and closes every connection.
    pub fn shutdown(&mut self, now: Instant) {
        for link in 0..self.links.len() {
            self.links[link].wanted = false;
            self.links[link].retry_at = None;
            if let Some(c) = self.links[link].conn.as_mut() {
                c.close(Error::Shutdown);
            }
            self.drain(link, now);
        }
        for (dest, _, _) in std::mem::take(&mut self.waiting) {
            self.finish(dest, Err(Error::Shutdown));
        }
    }

    // ----- the driver's side -------------------------------------------------

    /// The next socket operation for the driver; call until `None` after
    /// every call into the client.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next bytes to write: the whole pending output of one connection.
    /// Call until `None`; write each buffer fully, in order, to `conn`.
    pub fn poll_transmit(&mut self) -> Option<(ConnId, Bytes)> {
        while let Some(link) = self.dirty.pop() {
            let l = &mut self.links[link];
            l.dirty = false;
            if let Some(bytes) = l.conn.as_mut().and_then(Connection::poll_transmit) {
                return Some((
                    ConnId {
                        index: link as u32,
                        generation: l.generation,
                    },
                    bytes,
                ));
            }
        }
        None
    }

    /// The next event for the user; call until `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Client::handle_timeout`] must be called next (connect and
    /// request deadlines, reconnect backoff, a delayed slot-map refresh).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let links = self.links.iter().filter_map(|l| match &l.conn {
            Some(c) => c.poll_timeout(),
            None => l.retry_at.filter(|_| l.wanted),
        });
        links
            .chain(self.refresh.scheduled)
            .chain(self.waiting.front().map(|w| w.2))
            .min()
    }

    /// Time passed: expire deadlines, start due reconnects and refreshes.
    pub fn handle_timeout(&mut self, now: Instant) {
        for link in 0..self.links.len() {
            let l = &mut self.links[link];
            match &mut l.conn {
                Some(c) if c.poll_timeout().is_some_and(|t| t <= now) => {
                    c.handle_timeout(now);
                    self.drain(link, now);
                }
                None if l.retry_at.is_some_and(|t| t <= now) => {
                    l.retry_at = None;
                    if l.wanted {
                        self.ensure_connecting(link, now);
                    }
                }
                _ => {}
            }
        }
        if self.refresh.scheduled.is_some_and(|t| t <= now) && !self.refresh.in_flight {
            self.start_refresh(now);
        }
        while self.waiting.front().is_some_and(|w| w.2 <= now) {
            if let Some((dest, _, _)) = self.waiting.pop_front() {
                let reason = format!(
                    "the cluster slot map is not known yet ({})",
                    self.refresh.last_error
                );
                self.finish(
                    dest,
                    Err(Error::NotConnected {
                        addr: self.config.seeds.join(","),
                        reason,
                    }),
                );
            }
        }
    }

    /// The socket of `conn` connected.
    pub fn handle_connected(&mut self, conn: ConnId, now: Instant) {
        if let Some(link) = self.live(conn) {
            if let Some(c) = self.links[link].conn.as_mut() {
                c.handle_connected(now);
            }
            self.drain(link, now);
        }
    }

    /// Bytes read from `conn`.
    pub fn handle_input(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        if let Some(link) = self.live(conn) {
            if let Some(c) = self.links[link].conn.as_mut() {
                c.handle_input(data);
            }
            self.drain(link, now);
        }
    }

    /// `conn` failed to connect, hit an error or reached EOF.
    pub fn handle_disconnected(&mut self, conn: ConnId, reason: &str, now: Instant) {
        if let Some(link) = self.live(conn) {
            if let Some(c) = self.links[link].conn.as_mut() {
                c.handle_disconnected(reason);
            }
            self.drain(link, now);
        }
    }

    // ----- links -------------------------------------------------------------

    fn live(&self, conn: ConnId) -> Option<usize> {
        let link = conn.index as usize;
        self.links
            .get(link)
            .filter(|l| l.generation == conn.generation && l.conn.is_some())
            .map(|_| link)
    }

    fn next_request_id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    fn node_for(&mut self, addr: &str) -> usize {
        if let Some(&n) = self.by_addr.get(addr) {
            return n;
        }
        self.nodes.push(Node {
            addr: addr.to_owned(),
            links: [None, None],
            in_topology: false,
        });
        self.by_addr.insert(addr.to_owned(), self.nodes.len() - 1);
        self.nodes.len() - 1
    }

    fn link_for(&mut self, node: usize, role: Role) -> usize {
        if let Some(l) = self.nodes[node].links[role as usize] {
            return l;
        }
        self.links.push(Link {
            node,
            role,
            generation: 0,
            conn: None,
            retry_at: None,
            backoff: Backoff::new(self.config.backoff_base, self.config.backoff_cap),
            last_error: String::new(),
            wanted: self.nodes[node].in_topology || !self.config.cluster,
            dirty: false,
        });
        let link = self.links.len() - 1;
        self.nodes[node].links[role as usize] = Some(link);
        link
    }

    fn addr(&self, link: usize) -> &str {
        &self.nodes[self.links[link].node].addr
    }

    fn ensure_connecting(&mut self, link: usize, now: Instant) {
        let addr = self.addr(link).to_owned();
        let l = &mut self.links[link];
        if l.conn.is_some() || l.retry_at.is_some() {
            return;
        }
        l.generation = l.generation.wrapping_add(1);
        l.conn = Some(Connection::new(addr.clone(), Arc::clone(&self.config), now));
        let conn = ConnId {
            index: link as u32,
            generation: l.generation,
        };
        self.actions.push_back(Action::Connect { conn, addr });
    }

    /// The link cannot take a command: it waits out a reconnect backoff.
    fn unavailable(&self, link: usize) -> Option<Error> {
        let l = &self.links[link];
        let down = l.conn.as_ref().is_none_or(Connection::is_closed) && l.retry_at.is_some();
        down.then(|| Error::NotConnected {
            addr: self.addr(link).to_owned(),
            reason: l.last_error.clone(),
        })
    }

    fn submit(&mut self, link: usize, tag: Tag, command: Cmd, retain: bool, now: Instant) {
        if let Some(error) = self.unavailable(link) {
            return self.complete(link, tag, Err(error), Some(command), now);
        }
        self.ensure_connecting(link, now);
        if let Some(c) = self.links[link].conn.as_mut() {
            c.send(tag, command, retain, now);
        }
        self.drain(link, now);
    }

    fn submit_sub(
        &mut self,
        link: usize,
        kind: SubKind,
        subscribe: bool,
        channels: Vec<Bytes>,
        now: Instant,
    ) {
        if let Some(error) = self.unavailable(link) {
            let tag = Tag::Sub {
                kind,
                subscribe,
                channels,
            };
            return self.complete(link, tag, Err(error), None, now);
        }
        self.ensure_connecting(link, now);
        if let Some(c) = self.links[link].conn.as_mut() {
            let tag = Tag::Sub {
                kind,
                subscribe,
                channels: channels.clone(),
            };
            c.send_subscription(tag, kind, subscribe, channels, now);
        }
        self.drain(link, now);
    }

    /// Handles everything the link's connection has to say.
    fn drain(&mut self, link: usize, now: Instant) {
        while let Some(event) = self.links[link]
            .conn
            .as_mut()
            .and_then(Connection::poll_event)
        {
            self.on_conn_event(link, event, now);
        }
        let l = &mut self.links[link];
        if !l.dirty && l.conn.as_ref().is_some_and(Connection::has_transmit) {
            l.dirty = true;
            self.dirty.push(link);
        }
    }

    fn on_conn_event(&mut self, link: usize, event: ConnEvent<Tag>, now: Instant) {
        let pubsub = self.links[link].role == Role::PubSub;
        match event {
            ConnEvent::Ready => {
                let l = &mut self.links[link];
                l.backoff.reset();
                l.last_error.clear();
                let addr = self.addr(link).to_owned();
                self.events.push_back(Event::Connected { addr, pubsub });
                if pubsub {
                    self.reconcile_all(now);
                } else if self.config.cluster
                    && (self.topology.is_none() || self.refresh.scheduled.is_some())
                    && !self.refresh.in_flight
                {
                    self.start_refresh(now);
                }
            }
            ConnEvent::Reply { tag, result, cmd } => self.complete(link, tag, result, cmd, now),
            ConnEvent::Message(m) => self.events.push_back(Event::Message(m)),
            ConnEvent::Subscription {
                kind,
                channel,
                subscribed,
                solicited,
            } => self.on_subscription(link, kind, channel, subscribed, solicited, now),
            ConnEvent::Push(value) => {
                let addr = self.addr(link).to_owned();
                self.events.push_back(Event::Push { addr, value });
            }
            ConnEvent::Closed(error) => self.on_link_closed(link, error, now),
        }
    }

    fn on_link_closed(&mut self, link: usize, error: Error, now: Instant) {
        let addr = self.addr(link).to_owned();
        let l = &mut self.links[link];
        let conn = ConnId {
            index: link as u32,
            generation: l.generation,
        };
        l.conn = None;
        l.last_error = error.to_string();
        if l.wanted {
            l.retry_at = Some(now + l.backoff.next_delay(&mut self.rng));
        }
        let pubsub = l.role == Role::PubSub;
        self.actions.push_back(Action::Close { conn });
        self.events.push_back(Event::Disconnected {
            addr,
            pubsub,
            error: error.clone(),
        });
        if pubsub {
            let lost = self.subs.link_lost(link);
            self.report_lost(lost, &format!("the pub/sub connection failed: {error}"));
        }
        if self.config.cluster {
            self.request_refresh(now);
        }
    }

    fn report_lost(&mut self, lost: Vec<(SubKind, Bytes)>, reason: &str) {
        let mut by_kind: BTreeMap<SubKind, Vec<Bytes>> = BTreeMap::new();
        for (kind, channel) in lost {
            by_kind.entry(kind).or_default().push(channel);
        }
        for (kind, channels) in by_kind {
            self.events.push_back(Event::MessagesMayBeLost {
                kind,
                channels,
                reason: reason.to_owned(),
            });
        }
    }

    // ----- requests ----------------------------------------------------------

    fn route_and_submit(&mut self, dest: Dest, command: Cmd, now: Instant) {
        if self.topology.is_none() {
            self.waiting
                .push_back((dest, command, now + self.config.connect_timeout));
            if !self.refresh.in_flight {
                self.start_refresh(now);
            }
            return;
        }
        let tag = |dest| Tag::Request {
            dest,
            redirects: 0,
            direct: false,
        };
        match route(&command) {
            Route::Any => match self.any_master() {
                Some(node) => {
                    let link = self.link_for(node, Role::Command);
                    self.submit(link, tag(dest), command, true, now);
                }
                None => self.finish(dest, Err(Error::SlotUnassigned(0))),
            },
            Route::Slot(slot) => match self.slots.get(slot) {
                Some(node) => {
                    let link = self.link_for(node, Role::Command);
                    self.submit(link, tag(dest), command, true, now);
                }
                None => {
                    self.request_refresh(now);
                    self.finish(dest, Err(Error::SlotUnassigned(slot)));
                }
            },
            Route::Split(split) => {
                let Dest::User(id) = dest else {
                    return self.finish(
                        dest,
                        Err(Error::Unroutable {
                            command: command.name_upper(),
                            reason: "nested split",
                        }),
                    );
                };
                let fanout = self.fanouts.insert((id, Fanout::new(&split)));
                for (part, (slot, sub, _)) in split.parts.into_iter().enumerate() {
                    let dest = Dest::Part { fanout, part };
                    match self.slots.get(slot) {
                        Some(node) => {
                            let link = self.link_for(node, Role::Command);
                            self.submit(link, tag(dest), sub, true, now);
                        }
                        None => self.finish(dest, Err(Error::SlotUnassigned(slot))),
                    }
                }
            }
            Route::Unroutable(reason) => self.finish(
                dest,
                Err(Error::Unroutable {
                    command: command.name_upper(),
                    reason,
                }),
            ),
        }
    }

    fn any_master(&mut self) -> Option<usize> {
        let masters: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].in_topology)
            .collect();
        if masters.is_empty() {
            return None;
        }
        self.any_cursor = self.any_cursor.wrapping_add(1);
        let ready = |n: &usize| {
            self.nodes[*n].links[0]
                .and_then(|l| self.links[l].conn.as_ref())
                .is_some_and(Connection::is_ready)
        };
        let up: Vec<usize> = masters.iter().copied().filter(ready).collect();
        let pool = if up.is_empty() { &masters } else { &up };
        Some(pool[self.any_cursor % pool.len()])
    }

    fn complete(
        &mut self,
        link: usize,
        tag: Tag,
        result: Result<Value, Error>,
        command: Option<Cmd>,
        now: Instant,
    ) {
        match tag {
            Tag::Request {
                dest,
                redirects,
                direct,
            } => {
                let redirect = match &result {
                    Err(Error::Server(e)) if !direct && self.config.cluster => e.redirect(),
                    _ => None,
                };
                match (redirect, command) {
                    (Some(r), Some(command)) => {
                        if redirects >= self.config.max_redirects {
                            return self.finish(dest, Err(Error::TooManyRedirects(redirects)));
                        }
                        let addr = self.resolve(&r.addr, link);
                        let node = self.node_for(&addr);
                        let target = self.link_for(node, Role::Command);
                        let retry = Tag::Request {
                            dest,
                            redirects: redirects + 1,
                            direct: false,
                        };
                        if r.kind == RedirectKind::Moved {
                            self.slots.set(r.slot, node);
                            self.request_refresh(now);
                        } else {
                            self.submit(target, Tag::Asking, cmd("ASKING"), false, now);
                        }
                        self.submit(target, retry, command, true, now);
                    }
                    _ => {
                        if let Err(Error::Server(e)) = &result
                            && matches!(e.code(), "CLUSTERDOWN" | "TRYAGAIN")
                        {
                            self.request_refresh(now);
                        }
                        self.finish(dest, result);
                    }
                }
            }
            Tag::Asking => {}
            Tag::Refresh { shards } => self.on_refresh(link, shards, result, now),
            Tag::Sub {
                kind,
                subscribe,
                channels,
            } => self.on_sub_reply(link, kind, subscribe, channels, result, now),
        }
    }

    /// `host:port` from a redirect; an empty host means the replying node's.
    fn resolve(&self, addr: &str, link: usize) -> String {
        match addr.strip_prefix(':') {
            Some(port) => format!("{}:{port}", host_of(self.addr(link))),
            None => addr.to_owned(),
        }
    }

    fn finish(&mut self, dest: Dest, result: Result<Value, Error>) {
        match dest {
            Dest::User(id) => self.events.push_back(Event::Reply { id, result }),
            Dest::Part { fanout, part } => {
                let done = self
                    .fanouts
                    .get_mut(fanout)
                    .and_then(|(id, f)| Some((*id, f.add(part, result)?)));
                if let Some((id, result)) = done {
                    self.fanouts.remove(fanout);
                    self.events.push_back(Event::Reply { id, result });
                }
            }
        }
    }

    // ----- the slot map ------------------------------------------------------

    /// Asks for a fresh slot map: at once, or after the minimum interval
    /// since the last one; requests made while one is in flight coalesce.
    fn request_refresh(&mut self, now: Instant) {
        if !self.config.cluster {
            return;
        }
        if self.refresh.in_flight {
            self.refresh.again = true;
            return;
        }
        let earliest = self
            .refresh
            .last
            .map_or(now, |l| l + self.config.min_refresh_interval);
        if now < earliest {
            self.refresh.scheduled =
                Some(self.refresh.scheduled.map_or(earliest, |s| s.min(earliest)));
        } else {
            self.start_refresh(now);
        }
    }

    fn start_refresh(&mut self, now: Instant) {
        self.refresh.scheduled = None;
        let ready: Vec<usize> = (0..self.links.len())
            .filter(|&l| self.links[l].role == Role::Command)
            .filter(|&l| {
                self.links[l]
                    .conn
                    .as_ref()
                    .is_some_and(Connection::is_ready)
            })
            .collect();
        if ready.is_empty() {
            // Nothing is up: reconnect seeds and masters; the first to come
            // up asks (see `ConnEvent::Ready`).
            self.refresh.scheduled = Some(now + self.config.min_refresh_interval);
            let mut addrs = self.config.seeds.clone();
            addrs.extend(self.masters());
            for addr in addrs {
                let node = self.node_for(&addr);
                let link = self.link_for(node, Role::Command);
                self.ensure_connecting(link, now);
            }
            return;
        }
        let link = ready[self.rng.below(ready.len() as u64) as usize];
        self.refresh.in_flight = true;
        self.refresh.last = Some(now);
        let shards = !self.refresh.use_slots;
        let command = cmd("CLUSTER").arg(if shards { "SHARDS" } else { "SLOTS" });
        self.submit(link, Tag::Refresh { shards }, command, false, now);
    }

    fn on_refresh(
        &mut self,
        link: usize,
        shards: bool,
        result: Result<Value, Error>,
        now: Instant,
    ) {
        self.refresh.in_flight = false;
        let host = host_of(self.addr(link)).to_owned();
        let parsed = match result {
            Ok(v) if shards => Topology::from_cluster_shards(&v, &host),
            Ok(v) => Topology::from_cluster_slots(&v, &host),
            Err(Error::Server(e)) if shards && !self.refresh.use_slots => {
                // Before Redis 7 there is no CLUSTER SHARDS.
                self.refresh.use_slots = true;
                self.refresh.last_error = e.to_string();
                return self.start_refresh(now);
            }
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(t) if t.covered_slots() > 0 => self.apply_topology(t, now),
            Ok(_) => self.refresh_failed("no slot is assigned to any master".to_owned(), now),
            Err(e) => self.refresh_failed(e, now),
        }
        if std::mem::take(&mut self.refresh.again) {
            self.request_refresh(now);
        }
    }

    fn refresh_failed(&mut self, error: String, now: Instant) {
        self.refresh.last_error = error;
        self.refresh.scheduled = Some(now + self.config.min_refresh_interval);
    }

    fn apply_topology(&mut self, topology: Topology, now: Instant) {
        self.slots.clear();
        for n in &mut self.nodes {
            n.in_topology = false;
        }
        for shard in &topology.shards {
            let node = self.node_for(&shard.master);
            self.nodes[node].in_topology = true;
            for &(a, b) in &shard.slots {
                for slot in a..=b {
                    self.slots.set(slot, node);
                }
            }
        }
        let masters = topology.shards.len();
        let changed = self.topology.as_ref() != Some(&topology);
        self.topology = Some(topology);
        self.refresh.last_error.clear();
        for node in 0..self.nodes.len() {
            let in_topology = self.nodes[node].in_topology;
            if in_topology {
                let link = self.link_for(node, Role::Command);
                self.links[link].wanted = true;
                self.ensure_connecting(link, now);
            }
            for link in self.nodes[node].links.into_iter().flatten() {
                self.links[link].wanted = in_topology;
                if in_topology {
                    continue;
                }
                self.links[link].retry_at = None;
                let idle = self.links[link]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.in_flight() == 0);
                if idle || self.links[link].role == Role::PubSub {
                    if let Some(c) = self.links[link].conn.as_mut() {
                        let reason = "the node is no longer a master serving slots".to_owned();
                        c.close(Error::NotConnected {
                            addr: c.addr().to_owned(),
                            reason,
                        });
                    }
                    self.drain(link, now);
                }
            }
        }
        if changed {
            self.events.push_back(Event::SlotMapUpdated { masters });
        }
        for (dest, command, _) in std::mem::take(&mut self.waiting) {
            self.route_and_submit(dest, command, now);
        }
        self.reconcile_all(now);
    }

    // ----- pub/sub -----------------------------------------------------------

    fn sub_target(&self, kind: SubKind, channel: &[u8]) -> Option<usize> {
        if !self.config.cluster {
            return Some(0);
        }
        let _ = kind;
        self.slots.get(key_slot(channel))
    }

    fn reconcile_all(&mut self, now: Instant) {
        let all = self.subscriptions();
        self.reconcile(all, now);
    }

    /// Sends `SUBSCRIBE`s so that each of `candidates` that is wanted ends
    /// up active on the node that should carry it. Sharded channels are
    /// grouped by slot: one `SSUBSCRIBE` may not span slots.
    fn reconcile(&mut self, candidates: Vec<(SubKind, Bytes)>, now: Instant) {
        if self.config.cluster && self.topology.is_none() {
            return;
        }
        let mut groups: BTreeMap<(usize, SubKind, u16), Vec<Bytes>> = BTreeMap::new();
        let mut moves: BTreeMap<(usize, SubKind), Vec<Bytes>> = BTreeMap::new();
        for (kind, channel) in candidates {
            let Some(state) = self.subs.state(kind, &channel) else {
                continue;
            };
            let Some(node) = self.sub_target(kind, &channel) else {
                continue;
            };
            match state {
                SubState::Pending(_) => continue,
                SubState::Active(l) if self.links[l].node == node => continue,
                SubState::Active(l) => moves.entry((l, kind)).or_default().push(channel.clone()),
                SubState::Idle => {}
            }
            let link = self.link_for(node, Role::PubSub);
            if self.unavailable(link).is_some() {
                self.subs.set(kind, &channel, SubState::Idle);
                continue;
            }
            let slot = if kind == SubKind::Shard {
                key_slot(&channel)
            } else {
                0
            };
            groups.entry((node, kind, slot)).or_default().push(channel);
        }
        for ((link, kind), channels) in moves {
            if self.links[link]
                .conn
                .as_ref()
                .is_some_and(Connection::is_ready)
            {
                self.submit_sub(link, kind, false, channels, now);
            }
        }
        for ((node, kind, _), channels) in groups {
            let link = self.link_for(node, Role::PubSub);
            self.links[link].wanted = true;
            for chunk in channels.chunks(256) {
                for c in chunk {
                    self.subs.set(kind, c, SubState::Pending(link));
                }
                self.submit_sub(link, kind, true, chunk.to_vec(), now);
            }
        }
    }

    fn on_subscription(
        &mut self,
        link: usize,
        kind: SubKind,
        channel: Bytes,
        subscribed: bool,
        solicited: bool,
        now: Instant,
    ) {
        let state = self.subs.state(kind, &channel);
        if subscribed {
            match state {
                Some(_) => {
                    self.subs.set(kind, &channel, SubState::Active(link));
                    self.events.push_back(Event::Subscribed { kind, channel });
                }
                // Unsubscribed while the subscribe was in flight.
                None => self.submit_sub(link, kind, false, vec![channel], now),
            }
        } else if !solicited
            && matches!(state, Some(SubState::Active(l) | SubState::Pending(l)) if l == link)
        {
            // The server dropped it: with sharded channels, the slot moved.
            self.subs.set(kind, &channel, SubState::Idle);
            let reason = "the server dropped the subscription (its slot moved to another node)";
            self.report_lost(vec![(kind, channel.clone())], reason);
            self.request_refresh(now);
            self.reconcile(vec![(kind, channel)], now);
        }
    }

    fn on_sub_reply(
        &mut self,
        link: usize,
        kind: SubKind,
        subscribe: bool,
        channels: Vec<Bytes>,
        result: Result<Value, Error>,
        now: Instant,
    ) {
        if !subscribe {
            return;
        }
        let error = match result {
            Ok(_) => return,
            Err(e) => e,
        };
        let still_pending: Vec<Bytes> = channels
            .into_iter()
            .filter(|c| self.subs.state(kind, c) == Some(SubState::Pending(link)))
            .collect();
        let redirect = error.server_error().and_then(|e| e.redirect());
        match (&error, redirect) {
            (Error::Server(_), Some(r)) => {
                let moved = r.kind == RedirectKind::Moved;
                if moved {
                    let addr = self.resolve(&r.addr, link);
                    let node = self.node_for(&addr);
                    self.slots.set(r.slot, node);
                }
                self.request_refresh(now);
                let mut retry = Vec::new();
                for c in still_pending {
                    if moved && self.subs.redirected(kind, &c) > self.config.max_redirects {
                        self.subs.unwant(kind, &c);
                        let error = Error::TooManyRedirects(self.config.max_redirects);
                        self.events.push_back(Event::SubscribeFailed {
                            kind,
                            channel: c,
                            error,
                        });
                    } else {
                        // ASK: the slot is migrating; retried when the refreshed map arrives.
                        self.subs.set(kind, &c, SubState::Idle);
                        retry.push((kind, c));
                    }
                }
                if moved {
                    self.reconcile(retry, now);
                }
            }
            (Error::Server(_), None) => {
                for c in still_pending {
                    self.subs.unwant(kind, &c);
                    self.events.push_back(Event::SubscribeFailed {
                        kind,
                        channel: c,
                        error: error.clone(),
                    });
                }
            }
            // The connection went away: replayed when it (or the map) comes back.
            _ => {
                for c in still_pending {
                    self.subs.set(kind, &c, SubState::Idle);
                }
            }
        }
    }
}
