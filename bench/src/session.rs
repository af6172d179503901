//! One client connection's protocol, sans-IO: bytes from the socket in,
//! frames to write out, counts and latencies recorded into the worker's
//! [`Shared`] state. The driver owns the sockets and the clock.

use hdrhistogram::Histogram;
use ringhub_proto::{FrameHead, Limits, Opcode, ParsedFrame, ProtocolError, Role as FrameRole};

use crate::handshake::{HandshakeError, Upgrade};
use crate::payload::{self, PROBE_STREAM, Stamp};
use crate::seq::{Arrival, SeqTracker};
use crate::stats::{Counters, latency_histogram, record_ns};
use crate::workload::{Role, Templates, Workload};

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
    pub upgrade: Upgrade,
    pub templates: Templates,
    /// Subscribe frame per topic.
    pub subscribe: Vec<Vec<u8>>,
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
    pub fn new(
        workload: &Workload,
        upgrade: Upgrade,
        seed: u64,
        send_budget: u64,
    ) -> Result<Self, payload::PayloadError> {
        let topics = workload.topics();
        let subscribe = (0..topics as u32)
            .map(|t| payload::subscribe(&workload.topic_name(t)))
            .collect::<Result<_, _>>()?;
        let (publishers, in_flight) = match *workload {
            Workload::Fanout { publishers, .. } => (publishers, 0),
            Workload::Echo { in_flight, .. } => (0, in_flight),
            Workload::Connect => (0, 0),
        };
        Ok(Shared {
            upgrade,
            templates: workload.templates()?,
            subscribe,
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
    /// Subscribed; waiting for the echo of the probe sent after it, which
    /// proves the server processed the subscription.
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
    next_seq: u64,
    outstanding: u32,
}

impl Session {
    /// A session whose socket just connected: writes the upgrade request.
    pub fn start(role: Role, shared: &Shared, out: &mut Vec<u8>) -> Self {
        out.extend_from_slice(shared.upgrade.request());
        Session {
            role,
            phase: Phase::Upgrading,
            partial: Vec::new(),
            trackers: Box::default(),
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
                let Some(n) = shared.upgrade.parse_response(rest)? else {
                    break;
                };
                used += n;
                progress.upgraded = true;
                self.on_upgraded(shared, out, progress);
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
                let key = shared.mask.next();
                if let Some(frame) = shared.subscribe.get(topic as usize) {
                    encode(Opcode::Text, frame, key, out);
                }
                self.send_echo(PROBE_STREAM, 0, 0, shared, out);
                self.phase = Phase::Subscribing;
            }
            Role::Echo { .. } => {
                self.trackers = vec![SeqTracker::default()].into();
                self.phase = Phase::Ready;
                progress.ready = true;
            }
            Role::Idle | Role::Publisher { .. } => {
                self.phase = Phase::Ready;
                progress.ready = true;
            }
        }
    }

    fn on_message(
        &mut self,
        message: &[u8],
        shared: &mut Shared,
        now_ns: u64,
        out: &mut Vec<u8>,
        progress: &mut Progress,
    ) {
        let Some(stamp) = payload::find_stamp(message) else {
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
        let Some(tracker) = tracker else {
            shared.counters.unexpected += 1;
            return;
        };
        shared.counters.received += 1;
        if tracker.record(stamp.seq) == Arrival::Duplicate {
            shared.counters.duplicates += 1;
            return;
        }
        shared.counters.unique += 1;
        record_ns(&mut shared.latency, now_ns.saturating_sub(stamp.sent_ns));
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

    /// Sends one publish stamped with `intended_ns`, the time it was due:
    /// a late send then shows as latency instead of hiding it (coordinated
    /// omission). Returns false when the run's bounds say stop.
    pub fn publish(&mut self, shared: &mut Shared, intended_ns: u64, out: &mut Vec<u8>) -> bool {
        let Role::Publisher { stream, topic } = self.role else {
            return false;
        };
        if self.phase != Phase::Ready
            || !shared.sending
            || shared.send_budget == 0
            || self.next_seq > payload::MAX_SEQ
        {
            return false;
        }
        let Some(template) = shared.templates.publish.get_mut(topic as usize) else {
            return false;
        };
        let message = template.stamp(Stamp {
            stream,
            seq: self.next_seq,
            sent_ns: intended_ns,
        });
        encode(Opcode::Text, message, shared.mask.next(), out);
        self.next_seq += 1;
        shared.send_budget -= 1;
        shared.counters.sent += 1;
        shared.published_per_topic[topic as usize] += 1;
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
        if let Some(template) = shared.templates.echo.as_mut() {
            let message = template.stamp(Stamp {
                stream,
                seq,
                sent_ns: now_ns,
            });
            encode(Opcode::Text, message, shared.mask.next(), out);
        }
    }

    fn send(&mut self, opcode: Opcode, payload: &[u8], shared: &mut Shared, out: &mut Vec<u8>) {
        encode(opcode, payload, shared.mask.next(), out);
    }
}

#[cfg(test)]
mod tests {
    use ringhub_proto::{Role as FrameRole, encode_frame};

    use super::*;

    fn shared(workload: &Workload) -> Shared {
        let target = "ws://127.0.0.1:9/".parse().unwrap();
        Shared::new(workload, Upgrade::new(&target, [1; 16]), 42, 1_000).unwrap()
    }

    fn switching(shared: &Shared) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            shared.upgrade.accept()
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
        let mut s = Session::start(Role::Echo { stream: 9 }, &shared, &mut out);
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
        let mut s = Session::start(Role::Subscriber { topic: 0 }, &shared, &mut out);
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
        let mut s = Session::start(Role::Subscriber { topic: 1 }, &shared, &mut out);
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

    #[test]
    fn pings_are_answered_and_a_close_is_returned() {
        let mut shared = shared(&Workload::Connect);
        let mut out = Vec::new();
        let mut s = Session::start(Role::Idle, &shared, &mut out);
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
        let mut s = Session::start(Role::Idle, &shared, &mut out);
        let refused = b"HTTP/1.1 403 Forbidden\r\n\r\n".to_vec();
        assert!(matches!(
            s.on_data(&mut refused.clone(), &mut shared, 0, &mut out),
            Err(SessionError::Handshake(HandshakeError::Status(403)))
        ));
        let mut s = Session::start(Role::Idle, &shared, &mut out);
        let mut input = switching(&shared);
        encode(Opcode::Text, b"masked", [1, 2, 3, 4], &mut input);
        assert!(matches!(
            s.on_data(&mut input, &mut shared, 0, &mut out),
            Err(SessionError::Frame(_))
        ));
    }
}
