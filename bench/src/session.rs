//! One client connection's protocol, sans-IO: bytes from the socket in,
//! frames to write out, counts and latencies recorded into the worker's
//! [`Shared`] state. The driver owns the sockets and the clock.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use ringhub_proto::{FrameHead, Limits, Opcode, ParsedFrame, ProtocolError, Role as FrameRole};

use crate::chat::{self, Pick, Rng, Rooms};
use crate::handshake::{HandshakeError, Upgrade};
use crate::inbound::{self, Inbound};
use crate::payload::{self, Name, PROBE_STREAM, Payload, Stamp};
use crate::seq::{Arrival, SeqTracker};
use crate::stats::{Counters, latency_histogram, record_ns};
use crate::workload::{Role, Templates, Workload, room_name};

const PING: &[u8] = br#"{"type":"ping"}"#;

/// Server frames the bench accepts: its own messages are small, and a
/// server sending more than this is misbehaving.
const LIMITS: Limits = Limits {
    max_frame: 16 << 20,
    max_message: 16 << 20,
};

fn encode(opcode: Opcode, payload: &[u8], key: [u8; 4], out: &mut Vec<u8>) {
    ringhub_proto::encode_masked_frame(out, FrameHead::new(opcode), payload, key);
}

/// State every session of a worker shares: templates, counters, histogram.
#[derive(Debug)]
pub struct Shared {
    /// The upgrade request of each target server (one key, one accept).
    pub upgrades: Vec<Upgrade>,
    pub templates: Templates,
    /// Subscribe frame per topic (fan-out) or room (chat).
    pub subscribe: Vec<Vec<u8>>,
    /// Whether sessions speak the ringhub client protocol.
    pub ringhub: bool,
    /// Message size of the ringhub workloads.
    pub size: usize,
    /// The chat (`mixed` only): users, rooms, share of publishes, and the
    /// seed every user's picks derive from.
    pub users: u32,
    pub rooms: Option<Rooms>,
    pub publish_permille: u32,
    pub chat_seed: u64,
    /// Where a ringhub message is written before it is framed.
    scratch: Vec<u8>,
    /// Publisher streams in the run, and topics they spread over: publisher
    /// `p` publishes on topic `p % topics`.
    pub publishers: u32,
    pub topics: u32,
    pub in_flight: u32,
    pub counters: Counters,
    pub latency: Histogram<u64>,
    pub published_per_topic: Vec<u64>,
    /// Whether new messages may be sent (false while draining).
    pub sending: bool,
    /// Messages this worker may still send: the run's count bound.
    pub send_budget: u64,
    mask: MaskKeys,
}

impl Shared {
    /// `upgrades` has one entry per target server, all with the same key.
    pub fn new(
        workload: &Workload,
        upgrades: Vec<Upgrade>,
        seed: u64,
        send_budget: u64,
    ) -> Result<Self, payload::PayloadError> {
        let topics = workload.topics();
        let subscribe = workload
            .topic_names()
            .iter()
            .map(|t| payload::subscribe(t))
            .collect::<Result<_, _>>()?;
        let (publishers, in_flight) = match *workload {
            Workload::Fanout { publishers, .. } => (publishers, 0),
            Workload::Echo { in_flight, .. } => (0, in_flight),
            _ => (0, 0),
        };
        let (size, users, rooms, publish_permille, chat_seed) = match *workload {
            Workload::Direct { size, .. } => (size, 0, None, 0, 0),
            Workload::Mixed {
                size,
                users,
                rooms,
                rooms_per_user,
                publish_permille,
                seed,
                ..
            } => (
                size,
                users,
                Some(Rooms::new(users, rooms, rooms_per_user, seed)),
                publish_permille,
                seed,
            ),
            _ => (0, 0, None, 0, 0),
        };
        Ok(Shared {
            upgrades,
            templates: workload.templates()?,
            subscribe,
            ringhub: workload.is_ringhub(),
            size,
            users,
            rooms,
            publish_permille,
            chat_seed,
            scratch: Vec::with_capacity(size),
            publishers,
            topics: topics.max(1) as u32,
            in_flight,
            counters: Counters::default(),
            latency: latency_histogram(),
            published_per_topic: vec![0; topics],
            sending: false,
            send_budget,
            mask: MaskKeys(seed | 1),
        })
    }
}

/// Masking keys from xorshift64*: RFC 6455 wants them unpredictable to
/// proxies, which any generator we seed per worker satisfies for a bench.
#[derive(Debug)]
struct MaskKeys(u64);

impl MaskKeys {
    fn next(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let [a, b, c, d, ..] = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        [a, b, c, d]
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("upgrade failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("bad frame from server: {0}")]
    Frame(#[from] ProtocolError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Upgrade request sent, waiting for the 101.
    Upgrading,
    /// Upgraded to a ringhub server, waiting for its `welcome` (the
    /// server has registered the user once it is sent).
    Welcoming,
    /// Subscribed; waiting for the echo of the probe (a `pong` from a
    /// ringhub server) sent after it, which proves the server processed the
    /// subscription.
    Subscribing,
    Ready,
    Closed,
}

/// What a call to [`Session::on_data`] moved forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub upgraded: bool,
    pub ready: bool,
    pub closed: bool,
}

#[derive(Debug)]
pub struct Session {
    role: Role,
    phase: Phase,
    /// Bytes of a frame (or response head) not complete yet. Empty, and so
    /// unallocated, for an idle connection.
    partial: Vec<u8>,
    trackers: Box<[SeqTracker]>,
    /// A chat user's trackers, one per user heard from (chat only).
    peers: HashMap<u32, SeqTracker>,
    /// Which of the run's servers this session talks to.
    target: usize,
    /// Where the stamp of an expected message starts when the server
    /// passes it on unchanged (0: no such place, search for it).
    stamp_at: usize,
    /// Picks a chat user's messages.
    rng: Rng,
    next_seq: u64,
    outstanding: u32,
}

impl Session {
    /// A session whose socket to server `target` just connected: writes
    /// the upgrade request, with the login `query` if the role has a user.
    pub fn start(
        role: Role,
        target: usize,
        query: Option<&str>,
        shared: &Shared,
        out: &mut Vec<u8>,
    ) -> Self {
        let target = target.min(shared.upgrades.len().saturating_sub(1));
        if let Some(upgrade) = shared.upgrades.get(target) {
            upgrade.write_request(query, out);
        }
        let rng = match role {
            Role::Chatter { user } => Rng::new(shared.chat_seed, u64::from(user)),
            _ => Rng::new(0, 0),
        };
        Session {
            role,
            phase: Phase::Upgrading,
            partial: Vec::new(),
            trackers: Box::default(),
            peers: HashMap::new(),
            target,
            stamp_at: 0,
            rng,
            next_seq: 0,
            outstanding: 0,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Handles bytes read from the socket; frames to send go to `out`.
    pub fn on_data(
        &mut self,
        data: &mut [u8],
        shared: &mut Shared,
        now_ns: u64,
        out: &mut Vec<u8>,
    ) -> Result<Progress, SessionError> {
        let mut progress = Progress::default();
        if self.partial.is_empty() {
            let used = self.consume(data, shared, now_ns, out, &mut progress)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let used = self.consume(&mut buf, shared, now_ns, out, &mut progress)?;
            buf.drain(..used);
            self.partial = buf;
        }
        Ok(progress)
    }

    fn consume(
        &mut self,
        buf: &mut [u8],
        shared: &mut Shared,
        now_ns: u64,
        out: &mut Vec<u8>,
        progress: &mut Progress,
    ) -> Result<usize, SessionError> {
        let mut used = 0;
        while self.phase != Phase::Closed {
            let rest = &mut buf[used..];
            if self.phase == Phase::Upgrading {
                let Some(upgrade) = shared.upgrades.get(self.target) else {
                    break;
                };
                let Some(n) = upgrade.parse_response(rest)? else {
                    break;
                };
                used += n;
                progress.upgraded = true;
                self.on_upgraded(shared, out, progress);
                continue;
            }
            if let Some((message, consumed)) = short_text_frame(rest) {
                used += consumed;
                self.on_message(message, shared, now_ns, out, progress);
                continue;
            }
            let (frame, consumed) =
                match ringhub_proto::parse_frame(rest, FrameRole::Client, &LIMITS, false)? {
                    ParsedFrame::Complete { frame, consumed } => (frame, consumed),
                    ParsedFrame::Incomplete { .. } => break,
                };
            used += consumed;
            match frame.opcode {
                Opcode::Text | Opcode::Binary => {
                    self.on_message(frame.payload, shared, now_ns, out, progress)
                }
                // Messages this bench sends fit in one frame; a server that
                // fragments them has its pieces counted as unexpected.
                Opcode::Continuation => shared.counters.unexpected += 1,
                Opcode::Ping => self.send(Opcode::Pong, frame.payload, shared, out),
                Opcode::Pong => {}
                Opcode::Close => {
                    let code = frame.payload.get(..2).unwrap_or(&[]);
                    self.send(Opcode::Close, code, shared, out);
                    self.phase = Phase::Closed;
                    progress.closed = true;
                }
            }
        }
        Ok(used)
    }

    fn on_upgraded(&mut self, shared: &mut Shared, out: &mut Vec<u8>, progress: &mut Progress) {
        match self.role {
            Role::Subscriber { topic } => {
                // One tracker per publisher of this topic: p = topic + i * topics.
                let on_topic = shared
                    .publishers
                    .saturating_sub(topic)
                    .div_ceil(shared.topics);
                self.trackers = vec![SeqTracker::default(); on_topic as usize].into();
                self.stamp_at = shared
                    .templates
                    .publish
                    .get(topic as usize)
                    .map_or(0, Payload::stamp_offset);
                let key = shared.mask.next();
                if let Some(frame) = shared.subscribe.get(topic as usize) {
                    encode(Opcode::Text, frame, key, out);
                }
                self.send_echo(PROBE_STREAM, 0, 0, shared, out);
                self.phase = Phase::Subscribing;
            }
            Role::Echo { .. } => {
                self.trackers = vec![SeqTracker::default()].into();
                self.stamp_at = shared
                    .templates
                    .echo
                    .as_ref()
                    .map_or(0, Payload::stamp_offset);
                self.phase = Phase::Ready;
                progress.ready = true;
            }
            Role::Idle | Role::Publisher { .. } => {
                self.phase = Phase::Ready;
                progress.ready = true;
            }
            Role::DirectReceiver { .. } => {
                self.trackers = vec![SeqTracker::default()].into();
                self.phase = Phase::Welcoming;
            }
            Role::DirectSender { .. } | Role::Chatter { .. } => self.phase = Phase::Welcoming,
        }
    }

    /// A frame from a ringhub server.
    fn on_server_frame(
        &mut self,
        frame: &[u8],
        shared: &mut Shared,
        now_ns: u64,
        out: &mut Vec<u8>,
        progress: &mut Progress,
    ) {
        match inbound::classify(frame) {
            Inbound::Message => self.on_delivery(frame, shared, now_ns),
            Inbound::Welcome if self.phase == Phase::Welcoming => {
                if let (Role::Chatter { user }, Some(rooms)) = (self.role, shared.rooms.as_ref()) {
                    // Join the rooms; the pong to the ping after them says
                    // the server applied every subscribe.
                    for &room in rooms.of(user) {
                        if let Some(frame) = shared.subscribe.get(room as usize) {
                            encode(Opcode::Text, frame, shared.mask.next(), out);
                        }
                    }
                    encode(Opcode::Text, PING, shared.mask.next(), out);
                    self.phase = Phase::Subscribing;
                } else {
                    self.phase = Phase::Ready;
                    progress.ready = true;
                }
            }
            Inbound::Pong if self.phase == Phase::Subscribing => {
                self.phase = Phase::Ready;
                progress.ready = true;
            }
            Inbound::Pong | Inbound::Ack => {}
            Inbound::Error { code } => shared.counters.note_error(code),
            Inbound::Welcome | Inbound::Other => shared.counters.unexpected += 1,
        }
    }

    /// A `message` frame: whose stamp, seen before or not, how late.
    fn on_delivery(&mut self, frame: &[u8], shared: &mut Shared, now_ns: u64) {
        let Some(stamp) = payload::find_stamp(frame) else {
            shared.counters.unexpected += 1;
            return;
        };
        let tracker = match self.role {
            Role::DirectReceiver { pair } if stamp.stream == pair => self.trackers.first_mut(),
            Role::Chatter { .. } if stamp.stream < shared.users => {
                Some(self.peers.entry(stamp.stream).or_default())
            }
            _ => None,
        };
        count_arrival(tracker, stamp, shared, now_ns);
    }

    fn on_message(
        &mut self,
        message: &[u8],
        shared: &mut Shared,
        now_ns: u64,
        out: &mut Vec<u8>,
        progress: &mut Progress,
    ) {
        if shared.ringhub {
            return self.on_server_frame(message, shared, now_ns, out, progress);
        }
        let Some(stamp) = payload::find_stamp_at(message, self.stamp_at) else {
            shared.counters.unexpected += 1;
            return;
        };
        if stamp.stream == PROBE_STREAM {
            if self.phase == Phase::Subscribing {
                self.phase = Phase::Ready;
                progress.ready = true;
            } else {
                shared.counters.unexpected += 1;
            }
            return;
        }
        let tracker = match self.role {
            Role::Echo { stream } if stamp.stream == stream => self.trackers.first_mut(),
            Role::Subscriber { topic } if stamp.stream % shared.topics == topic => self
                .trackers
                .get_mut((stamp.stream / shared.topics) as usize),
            _ => None,
        };
        if !count_arrival(tracker, stamp, shared, now_ns) {
            return;
        }
        if let Role::Echo { stream } = self.role {
            self.outstanding = self.outstanding.saturating_sub(1);
            self.echo_next(stream, shared, now_ns, out);
        }
    }

    /// Starts the measured phase: an echo connection fills its window.
    pub fn begin(&mut self, shared: &mut Shared, now_ns: u64, out: &mut Vec<u8>) {
        if let (Role::Echo { stream }, Phase::Ready) = (self.role, self.phase) {
            while self.outstanding < shared.in_flight && self.echo_next(stream, shared, now_ns, out)
            {
            }
        }
    }

    fn echo_next(
        &mut self,
        stream: u32,
        shared: &mut Shared,
        now_ns: u64,
        out: &mut Vec<u8>,
    ) -> bool {
        if !shared.sending || shared.send_budget == 0 || self.next_seq > payload::MAX_SEQ {
            return false;
        }
        shared.send_budget -= 1;
        shared.counters.sent += 1;
        shared.counters.expected_local += 1;
        self.outstanding += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.send_echo(stream, seq, now_ns, shared, out);
        true
    }

    /// Sends the next scheduled message (a publish, a direct send or a chat
    /// message) stamped with `intended_ns`, the time it was due: a late send
    /// then shows as latency instead of hiding it (coordinated omission).
    /// Returns false when the run's bounds say stop.
    pub fn send_scheduled(
        &mut self,
        shared: &mut Shared,
        intended_ns: u64,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(stream) = self.role.sender_index() else {
            return false;
        };
        if self.phase != Phase::Ready
            || !shared.sending
            || shared.send_budget == 0
            || self.next_seq > payload::MAX_SEQ
        {
            return false;
        }
        let stamp = Stamp {
            stream,
            seq: self.next_seq,
            sent_ns: intended_ns,
        };
        let size = shared.size;
        match self.role {
            Role::Publisher { topic, .. } => {
                let key = shared.mask.next();
                let Some(template) = shared.templates.publish.get(topic as usize) else {
                    return false;
                };
                template.write_frame(stamp, key, out);
                shared.published_per_topic[topic as usize] += 1;
            }
            Role::DirectSender { pair } => {
                let to = Name {
                    prefix: "r",
                    number: pair,
                };
                payload::write_send(&mut shared.scratch, to, stamp, size);
                encode(Opcode::Text, &shared.scratch, shared.mask.next(), out);
                shared.counters.expected_local += 1;
            }
            Role::Chatter { user } => {
                let Some(rooms) = shared.rooms.as_ref() else {
                    return false;
                };
                let mine = rooms.of(user);
                let pick = chat::pick(
                    &mut self.rng,
                    user,
                    shared.users,
                    mine,
                    shared.publish_permille,
                );
                match pick {
                    Pick::Publish { room } => {
                        payload::write_publish(&mut shared.scratch, room_name(room), stamp, size);
                        shared.counters.expected_local += u64::from(rooms.size(room));
                    }
                    Pick::Send { to } => {
                        let to = Name {
                            prefix: "u",
                            number: to,
                        };
                        payload::write_send(&mut shared.scratch, to, stamp, size);
                        shared.counters.expected_local += 1;
                    }
                }
                encode(Opcode::Text, &shared.scratch, shared.mask.next(), out);
            }
            _ => return false,
        }
        self.next_seq += 1;
        shared.send_budget -= 1;
        shared.counters.sent += 1;
        true
    }

    /// Writes a close frame (1000, normal closure) unless the session is
    /// already closed.
    pub fn close(&mut self, shared: &mut Shared, out: &mut Vec<u8>) {
        if !matches!(self.phase, Phase::Closed | Phase::Upgrading) {
            self.send(Opcode::Close, &1000u16.to_be_bytes(), shared, out);
        }
        self.phase = Phase::Closed;
    }

    /// Deliveries this session still waits for (echo only).
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    fn send_echo(
        &mut self,
        stream: u32,
        seq: u64,
        now_ns: u64,
        shared: &mut Shared,
        out: &mut Vec<u8>,
    ) {
        let key = shared.mask.next();
        if let Some(template) = shared.templates.echo.as_ref() {
            let stamp = Stamp {
                stream,
                seq,
                sent_ns: now_ns,
            };
            template.write_frame(stamp, key, out);
        }
    }

    fn send(&mut self, opcode: Opcode, payload: &[u8], shared: &mut Shared, out: &mut Vec<u8>) {
        encode(opcode, payload, shared.mask.next(), out);
    }
}

/// The frame at the start of `buf` if it is a complete, final, unmasked text
/// frame of at most 125 bytes: every message of the echo and fan-out
/// workloads, read without the general parser. Anything else (longer,
/// fragmented, control, masked, reserved bits set, incomplete) is left to
/// `parse_frame`, which checks it.
fn short_text_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    let [0x81, len @ 0..=125, ..] = *buf else {
        return None;
    };
    let end = 2 + usize::from(len);
    Some((buf.get(2..end)?, end))
}

/// Counts a stamped message for the sequence `tracker` it belongs to (None:
/// nothing this session expects) and records its latency; true for a first
/// arrival.
fn count_arrival(
    tracker: Option<&mut SeqTracker>,
    stamp: Stamp,
    shared: &mut Shared,
    now_ns: u64,
) -> bool {
    let Some(tracker) = tracker else {
        shared.counters.unexpected += 1;
        return false;
    };
    shared.counters.received += 1;
    if tracker.record(stamp.seq) == Arrival::Duplicate {
        shared.counters.duplicates += 1;
        return false;
    }
    shared.counters.unique += 1;
    record_ns(&mut shared.latency, now_ns.saturating_sub(stamp.sent_ns));
    true
}

#[cfg(test)]
mod tests {
    use ringhub_proto::{Role as FrameRole, encode_frame};

    use super::*;

    fn shared(workload: &Workload) -> Shared {
        let target = "ws://127.0.0.1:9/".parse().unwrap();
        Shared::new(workload, vec![Upgrade::new(&target, [1; 16])], 42, 1_000).unwrap()
    }

    fn switching(shared: &Shared) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            shared.upgrades[0].accept()
        )
        .into_bytes()
    }

    /// What a server makes of the client's bytes: each frame unmasked, as
    /// (opcode, payload).
    fn client_frames(mut bytes: Vec<u8>) -> Vec<(Opcode, Vec<u8>)> {
        let mut frames = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            match ringhub_proto::parse_frame(&mut bytes[at..], FrameRole::Server, &LIMITS, false)
                .unwrap()
            {
                ParsedFrame::Complete { frame, consumed } => {
                    frames.push((frame.opcode, frame.payload.to_vec()));
                    at += consumed;
                }
                ParsedFrame::Incomplete { .. } => panic!("client wrote half a frame"),
            }
        }
        frames
    }

    fn server_frame(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, FrameHead::new(opcode), payload);
        out
    }

    #[test]
    fn echo_session_keeps_its_window_full_and_times_each_echo() {
        let workload = Workload::Echo {
            size: 64,
            in_flight: 3,
        };
        let mut shared = shared(&workload);
        let mut out = Vec::new();
        let mut s = Session::start(Role::Echo { stream: 9 }, 0, None, &shared, &mut out);
        assert!(out.starts_with(b"GET / HTTP/1.1\r\n"));
        out.clear();

        let progress = s
            .on_data(&mut switching(&shared), &mut shared, 0, &mut out)
            .unwrap();
        assert_eq!(
            progress,
            Progress {
                upgraded: true,
                ready: true,
                closed: false
            }
        );
        shared.sending = true;
        s.begin(&mut shared, 1_000, &mut out);
        let sent = client_frames(std::mem::take(&mut out));
        assert_eq!(sent.len(), 3);
        assert_eq!(s.outstanding(), 3);

        // Echo the second message back, split over two reads: one
        // delivery 4 µs after it was sent, and one new send.
        let echo = server_frame(Opcode::Text, &sent[1].1);
        let (a, b) = echo.split_at(5);
        s.on_data(&mut a.to_vec(), &mut shared, 3_000, &mut out)
            .unwrap();
        assert_eq!(shared.counters.unique, 0);
        s.on_data(&mut b.to_vec(), &mut shared, 5_000, &mut out)
            .unwrap();
        assert_eq!(
            (
                shared.counters.unique,
                shared.counters.sent,
                s.outstanding()
            ),
            (1, 4, 3)
        );
        assert_eq!(
            shared.latency.max(),
            shared.latency.highest_equivalent(4_000)
        );
        assert_eq!(client_frames(std::mem::take(&mut out)).len(), 1);

        // The same echo again is a duplicate and sends nothing.
        s.on_data(&mut echo.clone(), &mut shared, 6_000, &mut out)
            .unwrap();
        assert_eq!((shared.counters.duplicates, shared.counters.sent), (1, 4));
        assert!(out.is_empty());
    }

    #[test]
    fn subscriber_is_ready_only_after_its_probe_returns() {
        let workload = Workload::Fanout {
            size: 64,
            topics: 1,
            publishers: 2,
            rate: 10,
        };
        let mut shared = shared(&workload);
        let mut out = Vec::new();
        let mut s = Session::start(Role::Subscriber { topic: 0 }, 0, None, &shared, &mut out);
        out.clear();
        let progress = s
            .on_data(&mut switching(&shared), &mut shared, 0, &mut out)
            .unwrap();
        assert!(progress.upgraded && !progress.ready);
        let sent = client_frames(std::mem::take(&mut out));
        assert_eq!(sent[0].1, br#"{"type":"subscribe","topic":"t"}"#);
        let probe = server_frame(Opcode::Text, &sent[1].1);
        assert!(
            s.on_data(&mut probe.clone(), &mut shared, 0, &mut out)
                .unwrap()
                .ready
        );

        // Publisher 1's message 0 arrives; publisher 5 does not exist.
        let mut template = crate::payload::Payload::publish("t", 64).unwrap();
        let msg = template
            .stamp(Stamp {
                stream: 1,
                seq: 0,
                sent_ns: 10,
            })
            .to_vec();
        s.on_data(
            &mut server_frame(Opcode::Text, &msg),
            &mut shared,
            30,
            &mut out,
        )
        .unwrap();
        let stray = template
            .stamp(Stamp {
                stream: 5,
                seq: 0,
                sent_ns: 10,
            })
            .to_vec();
        s.on_data(
            &mut server_frame(Opcode::Text, &stray),
            &mut shared,
            30,
            &mut out,
        )
        .unwrap();
        assert_eq!((shared.counters.unique, shared.counters.unexpected), (1, 1));
    }

    #[test]
    fn subscriber_tracks_only_the_publishers_of_its_topic() {
        // Publishers 0..5 over 2 topics: topic 1 has publishers 1 and 3.
        let workload = Workload::Fanout {
            size: 100,
            topics: 2,
            publishers: 5,
            rate: 10,
        };
        let mut shared = shared(&workload);
        let mut out = Vec::new();
        let mut s = Session::start(Role::Subscriber { topic: 1 }, 0, None, &shared, &mut out);
        out.clear();
        s.on_data(&mut switching(&shared), &mut shared, 0, &mut out)
            .unwrap();
        let probe = client_frames(std::mem::take(&mut out)).remove(1).1;
        s.on_data(
            &mut server_frame(Opcode::Text, &probe),
            &mut shared,
            0,
            &mut out,
        )
        .unwrap();
        assert!(s.is_ready());
        let mut template = crate::payload::Payload::publish("t1", 100).unwrap();
        for stream in 0..6 {
            let msg = template
                .stamp(Stamp {
                    stream,
                    seq: 0,
                    sent_ns: 0,
                })
                .to_vec();
            s.on_data(
                &mut server_frame(Opcode::Text, &msg),
                &mut shared,
                1,
                &mut out,
            )
            .unwrap();
        }
        assert_eq!((shared.counters.unique, shared.counters.unexpected), (2, 4));
    }

    fn text(payload: &str) -> Vec<u8> {
        server_frame(Opcode::Text, payload.as_bytes())
    }

    const WELCOME: &str = r#"{"type":"welcome","user":"x","conn":1,"server":"a"}"#;

    /// A delivery as the server writes it, around a client's frame.
    fn delivery(from: &str, client_frame: &[u8]) -> Vec<u8> {
        let v: serde_json::Value = serde_json::from_slice(client_frame).unwrap();
        let data = serde_json::to_string(&v["data"]).unwrap();
        text(&format!(
            r#"{{"type":"message","from":"{from}","to":"x","data":{data},"ts":1}}"#
        ))
    }

    fn stamped(stream: u32, seq: u64, sent_ns: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let to = Name {
            prefix: "r",
            number: stream,
        };
        payload::write_send(
            &mut buf,
            to,
            Stamp {
                stream,
                seq,
                sent_ns,
            },
            100,
        );
        buf
    }

    #[test]
    fn direct_sender_logs_in_waits_for_welcome_and_sends_to_its_partner() {
        let workload = Workload::Direct {
            size: 100,
            pairs: 2,
            rate: 10,
        };
        let mut shared = shared(&workload);
        shared.sending = true;
        let mut out = Vec::new();
        let role = Role::DirectSender { pair: 1 };
        let mut s = Session::start(role, 0, Some("user=s1"), &shared, &mut out);
        assert!(out.starts_with(b"GET /?user=s1 HTTP/1.1\r\n"));
        out.clear();
        let progress = s
            .on_data(&mut switching(&shared), &mut shared, 0, &mut out)
            .unwrap();
        assert!(progress.upgraded && !progress.ready);
        assert!(
            !s.send_scheduled(&mut shared, 0, &mut out),
            "not before welcome"
        );
        assert!(
            s.on_data(&mut text(WELCOME), &mut shared, 0, &mut out)
                .unwrap()
                .ready
        );

        assert!(s.send_scheduled(&mut shared, 777, &mut out));
        let sent = client_frames(std::mem::take(&mut out));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.len(), 100);
        let v: serde_json::Value = serde_json::from_slice(&sent[0].1).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["to"].as_str()),
            (Some("send"), Some("r1"))
        );
        assert_eq!(
            payload::find_stamp(&sent[0].1),
            Some(Stamp {
                stream: 1,
                seq: 0,
                sent_ns: 777
            })
        );
        assert_eq!(
            (shared.counters.sent, shared.counters.expected_local),
            (1, 1)
        );

        // Errors are counted by code; an ack or a pong changes nothing.
        let refused = r#"{"type":"error","code":"rate_limited","message":"slow down"}"#;
        s.on_data(&mut text(refused), &mut shared, 0, &mut out)
            .unwrap();
        s.on_data(&mut text(refused), &mut shared, 0, &mut out)
            .unwrap();
        s.on_data(&mut text(r#"{"type":"pong"}"#), &mut shared, 0, &mut out)
            .unwrap();
        assert_eq!(shared.counters.errors["rate_limited"], 2);
        assert_eq!(shared.counters.error_frames(), 2);
        assert_eq!(shared.counters.unexpected, 0);
        // The run's count bound stops it.
        shared.send_budget = 0;
        assert!(!s.send_scheduled(&mut shared, 1, &mut out));
    }

    #[test]
    fn direct_receiver_counts_its_partner_once_and_nothing_else() {
        let workload = Workload::Direct {
            size: 100,
            pairs: 2,
            rate: 10,
        };
        let mut shared = shared(&workload);
        let mut out = Vec::new();
        let mut s = Session::start(Role::DirectReceiver { pair: 1 }, 0, None, &shared, &mut out);
        out.clear();
        s.on_data(&mut switching(&shared), &mut shared, 0, &mut out)
            .unwrap();
        s.on_data(&mut text(WELCOME), &mut shared, 0, &mut out)
            .unwrap();
        assert!(s.is_ready());

        let first = delivery("s1", &stamped(1, 0, 1_000));
        s.on_data(&mut first.clone(), &mut shared, 6_000, &mut out)
            .unwrap();
        s.on_data(&mut first.clone(), &mut shared, 7_000, &mut out)
            .unwrap();
        // Another pair's message, and a message without a stamp.
        s.on_data(
            &mut delivery("s0", &stamped(0, 0, 0)),
            &mut shared,
            7_000,
            &mut out,
        )
        .unwrap();
        s.on_data(
            &mut text(r#"{"type":"message","from":"s1","to":"r1","data":{},"ts":1}"#),
            &mut shared,
            7_000,
            &mut out,
        )
        .unwrap();
        let c = &shared.counters;
        assert_eq!(
            (c.received, c.unique, c.duplicates, c.unexpected),
            (2, 1, 1, 2)
        );
        assert_eq!(shared.latency.len(), 1);
        assert_eq!(
            shared.latency.max(),
            shared.latency.highest_equivalent(5_000)
        );
        assert!(out.is_empty(), "a receiver only listens");
    }

    #[test]
    fn chat_user_joins_its_rooms_then_sends_what_the_seed_picks() {
        let workload = Workload::Mixed {
            size: 100,
            users: 4,
            rooms: 3,
            rooms_per_user: 2,
            publish_permille: 500,
            rate: 10,
            seed: 5,
        };
        let rooms = Rooms::new(4, 3, 2, 5);
        let run = || {
            let mut shared = shared(&workload);
            let mut out = Vec::new();
            let mut s = Session::start(Role::Chatter { user: 2 }, 0, None, &shared, &mut out);
            out.clear();
            s.on_data(&mut switching(&shared), &mut shared, 0, &mut out)
                .unwrap();
            let progress = s
                .on_data(&mut text(WELCOME), &mut shared, 0, &mut out)
                .unwrap();
            assert!(!progress.ready, "ready only once the rooms are joined");
            let joined: Vec<_> = client_frames(std::mem::take(&mut out))
                .into_iter()
                .map(|(_, p)| String::from_utf8(p).unwrap())
                .collect();
            let mut want: Vec<String> = rooms
                .of(2)
                .iter()
                .map(|r| format!(r#"{{"type":"subscribe","topic":"room{r}"}}"#))
                .collect();
            want.push(r#"{"type":"ping"}"#.to_owned());
            assert_eq!(joined, want);
            assert!(
                s.on_data(&mut text(r#"{"type":"pong"}"#), &mut shared, 0, &mut out)
                    .unwrap()
                    .ready
            );
            shared.sending = true;
            for i in 0..200 {
                assert!(s.send_scheduled(&mut shared, i, &mut out));
            }
            let sent = client_frames(std::mem::take(&mut out));
            (s, shared, sent)
        };
        let (mut s, mut shared, sent) = run();
        let mut owed = 0;
        let mut publishes = 0;
        for (_, frame) in &sent {
            let v: serde_json::Value = serde_json::from_slice(frame).unwrap();
            assert_eq!(frame.len(), 100);
            match v["type"].as_str() {
                Some("publish") => {
                    let room: u32 = v["topic"].as_str().unwrap()[4..].parse().unwrap();
                    assert!(rooms.of(2).contains(&room));
                    owed += u64::from(rooms.size(room));
                    publishes += 1;
                }
                Some("send") => {
                    assert_ne!(v["to"], "u2");
                    owed += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!((60..140).contains(&publishes), "{publishes} of 200");
        assert_eq!(shared.counters.expected_local, owed);
        // The same seed, the same messages.
        let (_, _, again) = run();
        assert_eq!(sent, again);

        // Deliveries from any user are tracked apart; a stranger is not.
        let mut out = Vec::new();
        for (stream, seq) in [(3, 0), (0, 0), (3, 1), (3, 1), (4, 0)] {
            let frame = delivery("u", &stamped(stream, seq, 0));
            s.on_data(&mut frame.clone(), &mut shared, 10, &mut out)
                .unwrap();
        }
        let c = &shared.counters;
        assert_eq!((c.unique, c.duplicates, c.unexpected), (3, 1, 1));
    }

    #[test]
    fn only_short_final_unmasked_text_frames_take_the_fast_path() {
        let frame = server_frame(Opcode::Text, &[b'x'; 125]);
        assert_eq!(short_text_frame(&frame), Some((&frame[2..], 127)));
        assert_eq!(short_text_frame(&frame[..126]), None, "incomplete");
        let long = server_frame(Opcode::Text, &[b'x'; 126]);
        let binary = server_frame(Opcode::Binary, b"x");
        // A text frame without FIN: the first piece of a fragmented message.
        let mut fragment = server_frame(Opcode::Text, b"x");
        fragment[0] &= 0x7f;
        let mut masked = Vec::new();
        encode(Opcode::Text, b"x", [1, 2, 3, 4], &mut masked);
        for other in [&long, &binary, &fragment, &masked] {
            assert_eq!(short_text_frame(other), None);
        }
        // The general parser reads the first three; the masked one is an
        // error there, as the next test shows.
        for mut other in [long, binary, fragment] {
            assert!(matches!(
                ringhub_proto::parse_frame(&mut other, FrameRole::Client, &LIMITS, false),
                Ok(ParsedFrame::Complete { .. })
            ));
        }
    }

    #[test]
    fn pings_are_answered_and_a_close_is_returned() {
        let mut shared = shared(&Workload::Connect);
        let mut out = Vec::new();
        let mut s = Session::start(Role::Idle, 0, None, &shared, &mut out);
        out.clear();
        let mut input = switching(&shared);
        input.extend(server_frame(Opcode::Ping, b"hi"));
        input.extend(server_frame(Opcode::Close, &1001u16.to_be_bytes()));
        input.extend(server_frame(Opcode::Text, b"after close: ignored"));
        let progress = s.on_data(&mut input, &mut shared, 0, &mut out).unwrap();
        assert!(progress.ready && progress.closed);
        let sent = client_frames(out);
        assert_eq!(
            sent,
            [
                (Opcode::Pong, b"hi".to_vec()),
                (Opcode::Close, 1001u16.to_be_bytes().to_vec())
            ]
        );
        assert_eq!(shared.counters.unexpected, 0);
    }

    #[test]
    fn a_bad_upgrade_or_a_masked_server_frame_is_an_error() {
        let mut shared = shared(&Workload::Connect);
        let mut out = Vec::new();
        let mut s = Session::start(Role::Idle, 0, None, &shared, &mut out);
        let refused = b"HTTP/1.1 403 Forbidden\r\n\r\n".to_vec();
        assert!(matches!(
            s.on_data(&mut refused.clone(), &mut shared, 0, &mut out),
            Err(SessionError::Handshake(HandshakeError::Status(403)))
        ));
        let mut s = Session::start(Role::Idle, 0, None, &shared, &mut out);
        let mut input = switching(&shared);
        encode(Opcode::Text, b"masked", [1, 2, 3, 4], &mut input);
        assert!(matches!(
            s.on_data(&mut input, &mut shared, 0, &mut out),
            Err(SessionError::Frame(_))
        ));
    }
}
