//! One connection to one Redis node, as a state machine without sockets.
//!
//! The driver connects a socket, then feeds what it reads to
//! [`Connection::handle_input`], writes what [`Connection::poll_transmit`]
//! returns, and arms a timer for [`Connection::poll_timeout`]. Replies come
//! out of [`Connection::poll_event`] in request order, each with the caller's
//! tag; pushes come out as they arrive.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::cmd::{Cmd, cmd};
use crate::codec::{self, Frame, Protocol};
use crate::config::Config;
use crate::error::{Error, ServerError};
use crate::pubsub_kind::{Message, SubKind};
use crate::scan::{FrameScanner, Scan};
use crate::value::Value;

/// Something the connection tells its owner.
#[derive(Debug)]
pub enum ConnEvent<T> {
    /// The handshake (HELLO/AUTH/SELECT) finished; commands flow now.
    Ready,
    /// The reply to the request sent with `tag`. `cmd` is the command, when
    /// it was sent with `retain`, so that the owner can retry it elsewhere.
    Reply {
        /// The caller's tag.
        tag: T,
        /// The reply or why there is none.
        result: Result<Value, Error>,
        /// The command, if it was retained.
        cmd: Option<Cmd>,
    },
    /// A pub/sub message.
    Message(Message),
    /// The server confirmed (or, unasked, announced) a subscription change.
    /// `solicited` is false when the server dropped a subscription on its
    /// own, as it does with sharded channels whose slot moved away.
    Subscription {
        /// The kind of subscription.
        kind: SubKind,
        /// The channel or pattern.
        channel: Bytes,
        /// Subscribed (true) or unsubscribed.
        subscribed: bool,
        /// Whether we asked for it.
        solicited: bool,
    },
    /// Another RESP3 push (client-side caching invalidations, ...).
    Push(Value),
    /// The connection is finished; every request on it has already been
    /// answered with an error event. The driver closes the socket.
    Closed(Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Handshake,
    Ready,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Hello,
    Auth,
    Select,
    SetName,
}

#[derive(Debug)]
struct SubRequest {
    kind: SubKind,
    subscribe: bool,
    remaining: Vec<Bytes>,
}

#[derive(Debug)]
struct Pending<T> {
    /// `None` for the connection's own health-check `PING`.
    tag: Option<T>,
    deadline: Option<Instant>,
    sub: Option<SubRequest>,
    cmd: Option<Cmd>,
}

/// A pipelined connection: any number of requests in flight, matched to
/// replies in order, pushes told apart from replies in RESP2 and RESP3.
#[derive(Debug)]
pub struct Connection<T> {
    addr: String,
    config: Arc<Config>,
    state: State,
    protocol: Protocol,
    /// Bytes to write now.
    out: BytesMut,
    /// Commands issued before the handshake finished; they follow it.
    held: BytesMut,
    /// Bytes received and not decoded yet (at most one partial frame).
    input: BytesMut,
    /// How much of a partial aggregate in `input` is known well formed.
    scanner: FrameScanner,
    handshake: VecDeque<Step>,
    pending: VecDeque<Pending<T>>,
    events: VecDeque<ConnEvent<T>>,
    connect_deadline: Instant,
    /// When bytes last arrived (or the socket connected).
    last_input: Instant,
    /// Subscription requests in flight plus confirmed subscriptions: while
    /// non-zero a RESP2 connection is in subscribed mode.
    subs_in_flight: usize,
    subscribed: [i64; 2],
}

impl<T> Connection<T> {
    /// A connection to `addr` whose socket is being connected now.
    pub fn new(addr: String, config: Arc<Config>, now: Instant) -> Self {
        let protocol = if config.resp3 {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        };
        Self {
            addr,
            connect_deadline: now + config.connect_timeout,
            last_input: now,
            config,
            state: State::Connecting,
            protocol,
            out: BytesMut::new(),
            held: BytesMut::new(),
            input: BytesMut::new(),
            scanner: FrameScanner::default(),
            handshake: VecDeque::new(),
            pending: VecDeque::new(),
            events: VecDeque::new(),
            subs_in_flight: 0,
            subscribed: [0; 2],
        }
    }

    /// The node's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The protocol negotiated (RESP3 after a successful `HELLO 3`).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// True once the handshake is done.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// True once the connection failed or was closed.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Requests sent (or held) and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The socket is connected: the handshake goes out.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.state != State::Connecting {
            return;
        }
        self.last_input = now;
        self.state = State::Handshake;
        if self.config.resp3 {
            let mut hello = cmd("HELLO").arg("3");
            if let Some(pass) = &self.config.password {
                hello = hello
                    .arg("AUTH")
                    .arg(self.config.username.as_deref().unwrap_or("default"))
                    .arg(pass);
            }
            if let Some(name) = &self.config.client_name {
                hello = hello.arg("SETNAME").arg(name);
            }
            hello.write_to(&mut self.out);
            self.handshake.push_back(Step::Hello);
        } else {
            self.queue_resp2_handshake(true);
        }
        self.finish_handshake_if_done();
    }

    /// AUTH/SELECT/SETNAME as separate commands (RESP2, or after `HELLO`
    /// took care of only some of them).
    fn queue_resp2_handshake(&mut self, auth_and_name: bool) {
        let config = Arc::clone(&self.config);
        if auth_and_name && let Some(pass) = &config.password {
            let mut auth = cmd("AUTH");
            if let Some(user) = &config.username {
                auth = auth.arg(user);
            }
            auth.arg(pass).write_to(&mut self.out);
            self.handshake.push_back(Step::Auth);
        }
        if config.db != 0 {
            cmd("SELECT").arg(config.db).write_to(&mut self.out);
            self.handshake.push_back(Step::Select);
        }
        if auth_and_name && let Some(name) = &config.client_name {
            cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .write_to(&mut self.out);
            self.handshake.push_back(Step::SetName);
        }
    }

    fn finish_handshake_if_done(&mut self) {
        if self.state == State::Handshake && self.handshake.is_empty() {
            self.state = State::Ready;
            let held = self.held.split();
            self.out.unsplit(held);
            self.events.push_back(ConnEvent::Ready);
        }
    }

    /// Where a new command is encoded: straight out once the handshake is
    /// done, behind it (in `held`) until then, so order is kept either way.
    fn command_buffer(&mut self) -> &mut BytesMut {
        if self.state == State::Ready {
            &mut self.out
        } else {
            &mut self.held
        }
    }

    /// Answers `tag` at once with `error` (the connection is closed, or the
    /// command could never be sent).
    fn refuse(&mut self, tag: T, error: Error, cmd: Option<Cmd>) {
        self.events.push_back(ConnEvent::Reply {
            tag,
            result: Err(error),
            cmd,
        });
    }

    /// Queues a command. Its reply comes back as [`ConnEvent::Reply`] with
    /// `tag`; with `retain` the command comes back too.
    pub fn send(&mut self, tag: T, command: Cmd, retain: bool, now: Instant) {
        if self.state == State::Closed {
            let error = self.closed_error();
            return self.refuse(tag, error, Some(command));
        }
        command.write_to(self.command_buffer());
        let deadline = self.config.request_timeout.map(|t| now + t);
        self.pending.push_back(Pending {
            tag: Some(tag),
            deadline,
            sub: None,
            cmd: retain.then_some(command),
        });
    }

    /// Queues a command the caller keeps (and may send again): it is
    /// encoded from the reference and not retained.
    pub fn send_ref(&mut self, tag: T, command: &Cmd, now: Instant) {
        if self.state == State::Closed {
            let error = self.closed_error();
            return self.refuse(tag, error, None);
        }
        command.write_to(self.command_buffer());
        let deadline = self.config.request_timeout.map(|t| now + t);
        self.pending.push_back(Pending {
            tag: Some(tag),
            deadline,
            sub: None,
            cmd: None,
        });
    }

    /// Queues `(S|P)(UN)SUBSCRIBE` for `channels`, which must be non-empty.
    /// The server confirms each channel with a push; `tag`'s reply (the
    /// subscription count) comes after the last one, or an error instead.
    pub fn send_subscription(
        &mut self,
        tag: T,
        kind: SubKind,
        subscribe: bool,
        channels: Vec<Bytes>,
        now: Instant,
    ) {
        let name = if subscribe {
            kind.subscribe_command()
        } else {
            kind.unsubscribe_command()
        };
        let mut command = cmd(name);
        for c in &channels {
            command.push(c);
        }
        if channels.is_empty() || self.state == State::Closed {
            let error = if channels.is_empty() {
                Error::Config(format!("{name} needs at least one channel"))
            } else {
                self.closed_error()
            };
            return self.refuse(tag, error, Some(command));
        }
        command.write_to(self.command_buffer());
        self.subs_in_flight += 1;
        let deadline = self.config.request_timeout.map(|t| now + t);
        let sub = SubRequest {
            kind,
            subscribe,
            remaining: channels,
        };
        self.pending.push_back(Pending {
            tag: Some(tag),
            deadline,
            sub: Some(sub),
            cmd: None,
        });
    }

    fn closed_error(&self) -> Error {
        Error::NotConnected {
            addr: self.addr.clone(),
            reason: "the connection is closed".to_owned(),
        }
    }

    /// The bytes to write now, if any. Everything queued since the last call
    /// comes out as one buffer, so a loop turn's commands go out in one write.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// True if [`Connection::poll_transmit`] would return bytes.
    pub fn has_transmit(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event; call until `None` after every `handle_*` call.
    pub fn poll_event(&mut self) -> Option<ConnEvent<T>> {
        self.events.pop_front()
    }

    /// When [`Connection::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Connecting | State::Handshake => Some(self.connect_deadline),
            State::Ready => match self.pending.front() {
                Some(p) => p.deadline,
                None => self
                    .config
                    .health_check_interval
                    .map(|i| self.last_input + i),
            },
            State::Closed => None,
        }
    }

    /// Fails the connection if the handshake or the oldest request is late.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Connecting | State::Handshake if now >= self.connect_deadline => {
                let reason = format!(
                    "connect and handshake did not finish within {:?}",
                    self.config.connect_timeout
                );
                self.close(Error::NotConnected {
                    addr: self.addr.clone(),
                    reason,
                });
            }
            State::Ready
                if self
                    .pending
                    .front()
                    .and_then(|p| p.deadline)
                    .is_some_and(|d| now >= d) =>
            {
                let timeout = self.config.request_timeout.unwrap_or_default();
                self.close(Error::Timeout {
                    addr: self.addr.clone(),
                    timeout,
                });
            }
            State::Ready
                if self.pending.is_empty()
                    && self
                        .config
                        .health_check_interval
                        .is_some_and(|i| now >= self.last_input + i) =>
            {
                // Quiet for a while: make sure someone is still there.
                cmd("PING").write_to(&mut self.out);
                let wait = self
                    .config
                    .request_timeout
                    .or(self.config.health_check_interval);
                let deadline = wait.map(|t| now + t);
                self.pending.push_back(Pending {
                    tag: None,
                    deadline,
                    sub: None,
                    cmd: None,
                });
            }
            _ => {}
        }
    }

    /// The socket failed or reached EOF: everything in flight fails.
    pub fn handle_disconnected(&mut self, reason: &str) {
        if self.state == State::Closed {
            return;
        }
        let error = if self.state == State::Ready {
            Error::ConnectionLost {
                addr: self.addr.clone(),
                reason: reason.to_owned(),
            }
        } else {
            Error::NotConnected {
                addr: self.addr.clone(),
                reason: reason.to_owned(),
            }
        };
        self.close(error);
    }

    /// Closes the connection on purpose (shutdown, or the node left the cluster).
    pub fn close(&mut self, error: Error) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.out.clear();
        self.held.clear();
        self.input.clear();
        self.handshake.clear();
        for p in self.pending.drain(..) {
            if let Some(tag) = p.tag {
                let result = Err(error.clone());
                self.events.push_back(ConnEvent::Reply {
                    tag,
                    result,
                    cmd: p.cmd,
                });
            }
        }
        self.events.push_back(ConnEvent::Closed(error));
    }

    /// Bytes read from the socket. Decodes every complete frame in them.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if !data.is_empty() {
            self.last_input = self.last_input.max(now);
        }
        self.input.extend_from_slice(data);
        self.decode_input();
    }

    /// Decodes every complete frame buffered.
    fn decode_input(&mut self) {
        while self.state != State::Closed {
            // An aggregate is decoded once it is whole, not re-parsed from
            // its start after every read.
            let aggregate = matches!(self.input.first(), Some(b'*' | b'%' | b'~' | b'>' | b'|'));
            if aggregate && self.scanner.scan(&self.input) == Scan::Incomplete {
                if self.input.len() > self.config.max_reply_bytes {
                    let limit = self.config.max_reply_bytes;
                    self.protocol_error(format!("a reply exceeds max_reply_bytes ({limit} bytes)"));
                }
                break;
            }
            match codec::decode(&mut self.input, self.protocol) {
                Ok(Some(frame)) => {
                    self.scanner.reset();
                    self.handle_frame(frame);
                }
                Ok(None) if self.input.len() > self.config.max_reply_bytes => {
                    let limit = self.config.max_reply_bytes;
                    let detail = format!("a reply exceeds max_reply_bytes ({limit} bytes)");
                    self.protocol_error(detail);
                }
                Ok(None) => break,
                Err(detail) => {
                    let detail = format!("malformed reply: {detail}");
                    self.close(Error::Protocol {
                        addr: self.addr.clone(),
                        detail,
                    });
                }
            }
        }
    }

    fn protocol_error(&mut self, detail: String) {
        self.close(Error::Protocol {
            addr: self.addr.clone(),
            detail,
        });
    }

    fn handle_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Push(items) => self.handle_push(items),
            Frame::Reply(reply) if self.state == State::Handshake => {
                self.handle_handshake_reply(reply)
            }
            Frame::Reply(Ok(Value::Array(items))) if self.is_resp2_push(&items) => {
                self.handle_push(items)
            }
            Frame::Reply(reply) => self.handle_reply(reply.map_err(Error::Server)),
        }
    }

    /// In RESP2 a subscribed connection gets messages and confirmations as
    /// plain arrays whose first element names the kind.
    fn is_resp2_push(&self, items: &[Value]) -> bool {
        self.protocol == Protocol::Resp2
            && (self.subs_in_flight > 0 || self.subscribed.iter().any(|&n| n > 0))
            && items.first().and_then(Value::as_bytes).is_some_and(|name| {
                matches!(name, b"message" | b"pmessage" | b"smessage")
                    || SubKind::from_confirmation(name).is_some()
            })
    }

    fn handle_reply(&mut self, result: Result<Value, Error>) {
        let Some(p) = self.pending.pop_front() else {
            return self
                .protocol_error("a reply arrived with no request waiting for it".to_owned());
        };
        if p.sub.is_some() {
            self.subs_in_flight -= 1;
        }
        if let Some(tag) = p.tag {
            self.events.push_back(ConnEvent::Reply {
                tag,
                result,
                cmd: p.cmd,
            });
        }
    }

    fn handle_handshake_reply(&mut self, reply: Result<Value, ServerError>) {
        let Some(step) = self.handshake.pop_front() else {
            return self.protocol_error(
                "a reply arrived during the handshake with nothing asked".to_owned(),
            );
        };
        match (step, reply) {
            (Step::Hello, Ok(_)) => {
                self.protocol = Protocol::Resp3;
                self.queue_resp2_handshake(false);
            }
            (Step::Hello, Err(e)) if !matches!(e.code(), "NOAUTH" | "WRONGPASS" | "NOPERM") => {
                // Before Redis 6 there is no HELLO: speak RESP2, authenticate separately.
                self.protocol = Protocol::Resp2;
                self.queue_resp2_handshake(true);
            }
            (_, Ok(_)) => {}
            (step, Err(e)) => {
                let reason = format!("{step:?} failed during the handshake: {e}");
                return self.close(Error::NotConnected {
                    addr: self.addr.clone(),
                    reason,
                });
            }
        }
        self.finish_handshake_if_done();
    }

    fn handle_push(&mut self, items: Vec<Value>) {
        let mut it = items.into_iter();
        let Some(name) = it.next() else {
            return self.protocol_error("empty push".to_owned());
        };
        let name_bytes = name
            .as_bytes()
            .map(<[u8]>::to_ascii_lowercase)
            .unwrap_or_default();
        let rest: Vec<Value> = it.collect();
        let bulk = |v: &Value| v.as_bytes().map(Bytes::copy_from_slice);
        let take = |v: Value| match v {
            Value::Bulk(b) | Value::Status(b) => Some(b),
            _ => None,
        };
        match (&name_bytes[..], rest.len()) {
            (b"message" | b"smessage", 2) => {
                let kind = if name_bytes == b"message" {
                    SubKind::Channel
                } else {
                    SubKind::Shard
                };
                let mut rest = rest.into_iter();
                let (Some(channel), Some(payload)) =
                    (rest.next().and_then(take), rest.next().and_then(take))
                else {
                    return self.protocol_error(
                        "pub/sub message with a non-string channel or payload".to_owned(),
                    );
                };
                self.events.push_back(ConnEvent::Message(Message {
                    kind,
                    channel,
                    pattern: None,
                    payload,
                }));
            }
            (b"pmessage", 3) => {
                let mut rest = rest.into_iter();
                let (Some(pattern), Some(channel), Some(payload)) = (
                    rest.next().and_then(take),
                    rest.next().and_then(take),
                    rest.next().and_then(take),
                ) else {
                    return self.protocol_error("pmessage with non-string parts".to_owned());
                };
                let message = Message {
                    kind: SubKind::Pattern,
                    channel,
                    pattern: Some(pattern),
                    payload,
                };
                self.events.push_back(ConnEvent::Message(message));
            }
            (name, 2) if SubKind::from_confirmation(name).is_some() => {
                let Some((kind, subscribed)) = SubKind::from_confirmation(name) else {
                    return;
                };
                let channel = bulk(&rest[0]).unwrap_or_default();
                let count = rest[1].as_int().unwrap_or(0);
                self.subscribed[usize::from(kind == SubKind::Shard)] = count;
                self.handle_confirmation(kind, subscribed, channel, count);
            }
            _ => {
                let mut all = vec![name];
                all.extend(rest);
                self.events.push_back(ConnEvent::Push(Value::Array(all)));
            }
        }
    }

    fn handle_confirmation(&mut self, kind: SubKind, subscribed: bool, channel: Bytes, count: i64) {
        let mut solicited = false;
        if let Some(head) = self.pending.front_mut()
            && let Some(sub) = &mut head.sub
            && sub.kind == kind
            && sub.subscribe == subscribed
            && let Some(i) = sub.remaining.iter().position(|c| *c == channel)
        {
            solicited = true;
            sub.remaining.swap_remove(i);
            if sub.remaining.is_empty()
                && let Some(p) = self.pending.pop_front()
            {
                self.subs_in_flight -= 1;
                if let Some(tag) = p.tag {
                    let result = Ok(Value::Int(count));
                    self.events.push_back(ConnEvent::Reply {
                        tag,
                        result,
                        cmd: p.cmd,
                    });
                }
            }
        }
        self.events.push_back(ConnEvent::Subscription {
            kind,
            channel,
            subscribed,
            solicited,
        });
    }
}
