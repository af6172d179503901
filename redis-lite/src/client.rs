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

mod events;
mod requests;
mod slot_refresh;
mod subscriptions;

pub use events::{Action, ConnId, Event, RequestId};

use crate::backoff::{Backoff, Rng};
use crate::cluster::Fanout;
use crate::cmd::Cmd;
use crate::config::Config;
use crate::conn::{ConnEvent, Connection};
use crate::error::Error;
use crate::pubsub::{SubState, Subscriptions};
use crate::pubsub_kind::SubKind;
use crate::slot::key_slot;
use crate::slot_map::{SlotTable, Topology};

/// A node gets up to two connections: one for commands, and one for
/// subscriptions, which a RESP2 connection cannot mix with other commands
/// and which should not queue behind a long pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Command = 0,
    PubSub = 1,
}

/// Whose reply it is: the caller's, or one part of a split command's.
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
        /// MOVED/ASK followed so far.
        redirects: u8,
        /// Sent to a named node: its redirects go back to the caller.
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

/// One connection slot of a node: the connection if any, and the state
/// of its reconnects. Its index is the `ConnId` the driver sees.
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

/// One Redis node by address, with its connections.
#[derive(Debug)]
struct Node {
    addr: String,
    links: [Option<usize>; 2],
    in_topology: bool,
}

/// Slot-map refreshes: at most one in flight, at most one per
/// `min_refresh_interval`; requests in between coalesce.
#[derive(Debug, Default)]
struct Refresh {
    in_flight: bool,
    /// A refresh found no connection up: the first one to come up asks.
    waiting_for_link: bool,
    /// Asked for while one was in flight.
    again: bool,
    /// When the last one was sent.
    last: Option<Instant>,
    /// When the next one is due.
    scheduled: Option<Instant>,
    /// The server has no `CLUSTER SHARDS` (before Redis 7).
    use_slots: bool,
    /// Why the last one failed, for the errors of requests waiting on it.
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

    /// True if the server confirmed this subscription and it is still up.
    pub fn is_subscribed(&self, kind: SubKind, channel: &[u8]) -> bool {
        let channel = Bytes::copy_from_slice(channel);
        matches!(self.subs.state(kind, &channel), Some(SubState::Active(_)))
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
                c.handle_input(data, now);
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
                    && (self.topology.is_none() || self.refresh.waiting_for_link)
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
}
