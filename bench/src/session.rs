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
    /// Publisher streams in the run (a subscriber tracks each).
    pub publishers: u32,
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
                self.trackers = vec![SeqTracker::default(); shared.publishers as usize].into();
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
            Role::Subscriber { .. } => self.trackers.get_mut(stamp.stream as usize),
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
