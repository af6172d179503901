//! A blocking client for tools, tests and the server's side thread.
//!
//! It is a complete driver of the sans-IO [`Client`]: non-blocking
//! `std::net` sockets (through mio's readiness polling), one loop that
//! carries out [`Action`]s, writes [`Client::poll_transmit`] buffers, feeds
//! reads to [`Client::handle_input`] and sleeps until the next
//! [`Client::poll_timeout`]. The io_uring driver does the same with ring
//! operations instead of readiness.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::client::{Action, Client, ConnId, Event, RequestId};
use crate::cmd::Cmd;
use crate::config::Config;
use crate::error::Error;
use crate::pubsub_kind::{Message, SubKind};
use crate::reply_slots::ReplySlots;
use crate::value::Value;

#[derive(Debug)]
struct Socket {
    conn: ConnId,
    stream: TcpStream,
    connected: bool,
    out: VecDeque<Bytes>,
}

/// A blocking Redis / Redis Cluster client: pipelines, pub/sub with
/// receive timeouts, cluster routing, reconnects.
#[derive(Debug)]
pub struct BlockingClient {
    core: Client,
    poll: Poll,
    events: Events,
    sockets: Slab<Socket>,
    by_conn: HashMap<ConnId, usize>,
    replies: ReplySlots<Result<Value, Error>>,
    inbox: VecDeque<Event>,
    read_buf: Box<[u8]>,
}

impl BlockingClient {
    /// Connects to a standalone server: `redis://[user:pass@]host:port[/db]`.
    pub fn open(url: &str) -> Result<Self, Error> {
        Self::connect(Config::from_url(url)?)
    }

    /// Connects, and waits until commands can be routed (the handshake is
    /// done, or the cluster's slot map is loaded), at most the connect timeout.
    pub fn connect(config: Config) -> Result<Self, Error> {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        let timeout = config.connect_timeout;
        let cluster = config.cluster;
        let core = Client::new(config, seed, Instant::now())?;
        let poll =
            Poll::new().map_err(|e| Error::Config(format!("cannot create a poller: {e}")))?;
        let mut client = Self {
            core,
            poll,
            events: Events::with_capacity(64),
            sockets: Slab::new(),
            by_conn: HashMap::new(),
            replies: ReplySlots::default(),
            inbox: VecDeque::new(),
            read_buf: vec![0; 256 * 1024].into_boxed_slice(),
        };
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        while !client.core.is_ready() {
            if Instant::now() >= deadline {
                let addr = client.core.config().seeds.join(",");
                let reason = last_error.map_or_else(
                    || format!("not ready within {timeout:?}"),
                    |e: Error| e.to_string(),
                );
                return Err(Error::NotConnected { addr, reason });
            }
            client.turn(Some(deadline));
            for e in &client.inbox {
                if let Event::Disconnected { error, .. } = e {
                    last_error = Some(error.clone());
                }
            }
            if !cluster && let Some(e) = last_error.take() {
                return Err(e);
            }
        }
        Ok(client)
    }

    /// The sans-IO core, for inspection (slot map, subscriptions).
    pub fn core(&self) -> &Client {
        &self.core
    }

    /// Runs one command and waits for its reply.
    pub fn query(&mut self, command: Cmd) -> Result<Value, Error> {
        let id = self.send(command);
        self.wait(id)
    }

    /// Sends a command to one node (no routing, no redirects) and waits.
    pub fn query_node(&mut self, addr: &str, command: Cmd) -> Result<Value, Error> {
        let id = self.core.send_to(addr, command, Instant::now());
        self.replies.expect(id);
        self.wait(id)
    }

    /// Runs many commands in one pipeline and returns their replies in order.
    pub fn pipeline<I: IntoIterator<Item = Cmd>>(
        &mut self,
        commands: I,
    ) -> Vec<Result<Value, Error>> {
        let now = Instant::now();
        let ids: Vec<RequestId> = commands
            .into_iter()
            .map(|c| self.core.send(c, now))
            .collect();
        for &id in &ids {
            self.replies.expect(id);
        }
        ids.into_iter().map(|id| self.wait(id)).collect()
    }

    /// Queues a command without waiting; it is written by the next call that
    /// waits ([`BlockingClient::wait`], [`BlockingClient::flush`], ...).
    pub fn send(&mut self, command: Cmd) -> RequestId {
        let id = self.core.send(command, Instant::now());
        self.replies.expect(id);
        id
    }

    /// Queues a command that the caller keeps and sends again (see
    /// [`Client::send_ref`]).
    pub fn send_ref(&mut self, command: &Cmd) -> RequestId {
        let id = self.core.send_ref(command, Instant::now());
        self.replies.expect(id);
        id
    }

    /// Writes whatever is queued without waiting for replies.
    pub fn flush(&mut self) {
        let _ = self.carry_out();
    }

    /// Waits for the reply to `id`. Bounded: every request has the
    /// configured request timeout, plus time for redirects and reconnects.
    pub fn wait(&mut self, id: RequestId) -> Result<Value, Error> {
        if let Some(result) = self.replies.take(id) {
            return result;
        }
        let config = self.core.config();
        let guard = (config.request_timeout.unwrap_or(Duration::from_secs(3600))
            + config.connect_timeout)
            * 3;
        let deadline = Instant::now() + guard;
        loop {
            if let Some(result) = self.replies.take(id) {
                return result;
            }
            if Instant::now() >= deadline {
                let addr = self.core.config().seeds.join(",");
                return Err(Error::Timeout {
                    addr,
                    timeout: guard,
                });
            }
            self.turn(Some(deadline));
        }
    }

    /// Subscribes and waits until the server confirmed every channel (or
    /// refused one). The subscriptions are replayed after reconnects and
    /// slot moves.
    pub fn subscribe<C: AsRef<[u8]>>(
        &mut self,
        kind: SubKind,
        channels: &[C],
    ) -> Result<(), Error> {
        let channels: Vec<Bytes> = channels
            .iter()
            .map(|c| Bytes::copy_from_slice(c.as_ref()))
            .collect();
        let mut waiting: HashSet<Bytes> = channels
            .iter()
            .filter(|c| !self.core.is_subscribed(kind, c))
            .cloned()
            .collect();
        self.core.subscribe(kind, channels, Instant::now());
        let timeout = self.core.config().connect_timeout
            + self.core.config().request_timeout.unwrap_or_default();
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        while !waiting.is_empty() {
            for event in self.inbox.iter().skip(seen) {
                match event {
                    Event::Subscribed { kind: k, channel } if *k == kind => {
                        waiting.remove(channel);
                    }
                    Event::SubscribeFailed {
                        kind: k,
                        channel,
                        error,
                    } if *k == kind && waiting.contains(channel) => {
                        return Err(error.clone());
                    }
                    _ => {}
                }
            }
            seen = self.inbox.len();
            if waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let addr = self.core.config().seeds.join(",");
                return Err(Error::Timeout { addr, timeout });
            }
            self.turn(Some(deadline));
        }
        Ok(())
    }

    /// Stops wanting these subscriptions (does not wait for confirmations).
    pub fn unsubscribe<C: AsRef<[u8]>>(&mut self, kind: SubKind, channels: &[C]) {
        let channels = channels.iter().map(|c| Bytes::copy_from_slice(c.as_ref()));
        self.core.unsubscribe(kind, channels, Instant::now());
        let _ = self.carry_out();
    }

    /// The next event other than a reply (messages, subscription changes,
    /// connection changes), waiting at most `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.inbox.pop_front() {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.turn(Some(deadline));
        }
    }

    /// The next pub/sub message, waiting at most `timeout`; other events
    /// before it are dropped.
    pub fn next_message(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                Event::Message(m) => return Some(m),
                _ => continue,
            }
        }
    }

    /// Fails everything in flight and closes every connection.
    pub fn shutdown(&mut self) {
        self.core.shutdown(Instant::now());
        let _ = self.carry_out();
    }

    /// One loop turn: write, sleep until readiness or the next deadline, read.
    fn turn(&mut self, deadline: Option<Instant>) {
        // If something was answered without I/O (a routing error, a request
        // refused during backoff), only look at sockets and timers, don't sleep.
        let delivered = self.carry_out();
        let now = Instant::now();
        let wake = [self.core.poll_timeout(), deadline]
            .into_iter()
            .flatten()
            .min();
        let timeout = if delivered {
            Some(Duration::ZERO)
        } else {
            wake.map(|w| w.saturating_duration_since(now))
        };
        if let Err(e) = self.poll.poll(&mut self.events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            // The poller itself failed: nothing to wait on; avoid spinning.
            std::thread::sleep(
                timeout
                    .unwrap_or(Duration::from_millis(10))
                    .min(Duration::from_millis(10)),
            );
        }
        let ready: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                    e.is_writable(),
                )
            })
            .collect();
        for (key, readable, writable) in ready {
            self.on_ready(key, readable, writable);
        }
        let now = Instant::now();
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        let _ = self.carry_out();
    }

    fn on_ready(&mut self, key: usize, readable: bool, writable: bool) {
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
                    self.core.handle_connected(conn, Instant::now());
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(key, &format!("connect failed: {e}")),
            }
            let _ = self.carry_out();
        }
        if writable {
            self.write_out(key);
        }
        if readable {
            self.read_in(key);
        }
    }

    fn read_in(&mut self, key: usize) {
        loop {
            let Some(socket) = self.sockets.get_mut(key) else {
                return;
            };
            let conn = socket.conn;
            match socket.stream.read(&mut self.read_buf) {
                Ok(0) => return self.fail(key, "the server closed the connection"),
                Ok(n) => self
                    .core
                    .handle_input(conn, &self.read_buf[..n], Instant::now()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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
                Ok(n) => {
                    bytes::Buf::advance(front, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(key, &format!("write failed: {e}")),
            }
        }
    }

    fn fail(&mut self, key: usize, reason: &str) {
        let Some(socket) = self.sockets.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut { socket.stream });
        self.by_conn.remove(&socket.conn);
        self.core
            .handle_disconnected(socket.conn, reason, Instant::now());
    }

    /// Carries out the core's actions, queues its transmits and writes them,
    /// and sorts its events, until it has nothing more to say. True if it
    /// delivered any event.
    fn carry_out(&mut self) -> bool {
        let mut delivered = false;
        loop {
            let mut progressed = false;
            while let Some(action) = self.core.poll_action() {
                progressed = true;
                match action {
                    Action::Connect { conn, addr } => self.open_socket(conn, &addr),
                    Action::Close { conn } => {
                        if let Some(key) = self.by_conn.remove(&conn)
                            && let Some(socket) = self.sockets.try_remove(key)
                        {
                            let _ = self.poll.registry().deregister(&mut { socket.stream });
                        }
                    }
                }
            }
            let mut touched = Vec::new();
            while let Some((conn, bytes)) = self.core.poll_transmit() {
                progressed = true;
                if let Some(&key) = self.by_conn.get(&conn) {
                    self.sockets[key].out.push_back(bytes);
                    touched.push(key);
                }
            }
            for key in touched {
                self.write_out(key);
            }
            while let Some(event) = self.core.poll_event() {
                delivered = true;
                match event {
                    Event::Reply { id, result } => {
                        self.replies.insert(id, result);
                    }
                    other => self.inbox.push_back(other),
                }
            }
            if !progressed {
                return delivered;
            }
        }
    }

    fn open_socket(&mut self, conn: ConnId, addr: &str) {
        let resolved = addr.to_socket_addrs().map(|mut a| a.next());
        let stream = match resolved {
            Ok(Some(sa)) => TcpStream::connect(sa),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the name resolved to no address",
            )),
            Err(e) => Err(e),
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                return self.core.handle_disconnected(
                    conn,
                    &format!("cannot connect to {addr}: {e}"),
                    Instant::now(),
                );
            }
        };
        let entry = self.sockets.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.core.handle_disconnected(
                conn,
                &format!("cannot poll the socket: {e}"),
                Instant::now(),
            );
        }
        entry.insert(Socket {
            conn,
            stream,
            connected: false,
            out: VecDeque::new(),
        });
        self.by_conn.insert(conn, key);
    }
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        self.core.shutdown(Instant::now());
    }
}
