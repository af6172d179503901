//! One worker: a thread with its own `mio` poll driving a slice of the
//! run's connections through connect, a measured phase and a drain.
//!
//! The worker does the socket I/O and keeps time; everything the protocol
//! decides happens in [`Session`]. Reads land in one 64 KiB scratch buffer
//! per worker, and a connection keeps bytes only for a partial frame or an
//! unsent tail, so idle connections cost a socket and a small struct.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read as _, Write as _};
use std::net::Ipv4Addr;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::handshake::Upgrade;
use crate::login::Login;
use crate::session::{Session, Shared};
use crate::stats::{WorkerReport, record_ns};
use crate::sys;
use crate::target::Target;
use crate::workload::{Role, Workload};

/// Everything a worker needs; crosses to worker processes as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Servers to connect to; the workload says which connection goes where.
    pub targets: Vec<Target>,
    pub workload: Workload,
    /// How ringhub workloads log their users in.
    pub login: Login,
    /// Whether this worker holds every connection of the run, so that it
    /// alone can tell when every owed delivery has arrived.
    pub alone: bool,
    /// Global indices of this worker's connections: `first..first + count`.
    pub first: usize,
    pub count: usize,
    /// Source addresses, used round-robin.
    pub sources: Vec<Ipv4Addr>,
    /// Upgrades in progress at once.
    pub concurrency: usize,
    /// New connections per second for this worker (0: as fast as possible).
    pub connect_rate: u64,
    pub connect_timeout: Duration,
    /// Length of the measured phase (connect: how long to hold).
    pub duration: Duration,
    /// Longest wait for messages still in flight after sending stops.
    pub drain: Duration,
    /// Messages this worker may send in the whole run.
    pub send_budget: u64,
    /// CLOCK_MONOTONIC of the run's start; stamps count from it.
    pub epoch_ns: u64,
    pub seed: u64,
}

/// Running totals sent to the parent while a worker works.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub established: u64,
    pub failed: u64,
    pub sent: u64,
    pub received: u64,
}

impl Snapshot {
    pub fn add(&mut self, o: &Snapshot) {
        self.established += o.established;
        self.failed += o.failed;
        self.sent += o.sent;
        self.received += o.received;
    }
}

/// What a worker tells its parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerEvent {
    Progress {
        snapshot: Snapshot,
    },
    /// Every connection is up (or failed): waiting for the go.
    Ready {
        snapshot: Snapshot,
    },
    /// Sending and draining are over, connections still open: waiting for
    /// a second go to close them.
    Drained {
        snapshot: Snapshot,
    },
    Done {
        report: Box<WorkerReport>,
    },
    Failed {
        error: String,
    },
}

/// The worker's line to its parent: a channel for a thread, stdin/stdout
/// for a process.
pub trait Link {
    fn send(&mut self, event: WorkerEvent);
    /// Blocks until every worker is ready and the measured phase starts
    /// (false means abort); called again once every worker has drained, and
    /// returns when they may close.
    fn wait_go(&mut self) -> bool;
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot create the poller: {0}")]
    Poll(io::Error),
    #[error(transparent)]
    Payload(#[from] crate::payload::PayloadError),
    #[error("the parent went away before the measured phase")]
    Aborted,
}

const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Fan-out drain ends after this long without a delivery.
const QUIET: Duration = Duration::from_millis(500);
const SCRATCH: usize = 64 * 1024;
/// A sender whose socket holds more unsent bytes than this waits for the
/// server to read; its missed sends go out later with their due stamps.
const MAX_UNSENT: usize = 256 * 1024;
/// Sends between two looks at the sockets when senders are behind.
const SEND_BATCH: usize = 256;
/// Poll token of the send timer (connections use their index).
const ALARM: Token = Token(usize::MAX);

/// Due time and connection index of each scheduled sender.
type Schedule = BinaryHeap<Reverse<(u64, usize)>>;

struct Conn {
    stream: mio::net::TcpStream,
    /// `None` until the TCP connect completes.
    session: Option<Session>,
    role: Role,
    /// Index of the server in the spec's targets.
    target: usize,
    /// Bytes the socket did not take yet.
    unsent: Vec<u8>,
    started_ns: u64,
    /// Counted in `in_progress` until upgraded and ready (or failed).
    pending: bool,
    upgraded: bool,
}

/// A worker's state between phases.
struct Worker<'s> {
    spec: &'s WorkerSpec,
    poll: Poll,
    events: Events,
    conns: Vec<Option<Conn>>,
    shared: Shared,
    report: WorkerReport,
    scratch: Vec<u8>,
    out: Vec<u8>,
    in_progress: usize,
    last_delivery_ns: u64,
    last_upgrade_ns: u64,
    /// Wakes the poll when the next send is due.
    alarm: sys::Alarm,
    /// Senders with frames queued in this turn (kept for its allocation).
    touched: Vec<usize>,
}

/// Runs a worker to completion: connect, report ready, wait for the go,
/// measure, drain, close. Errors of single connections are counted, not
/// returned.
pub fn run(spec: &WorkerSpec, link: &mut dyn Link) -> Result<WorkerReport, DriverError> {
    let poll = Poll::new().map_err(DriverError::Poll)?;
    let key = websocket_key(spec.seed);
    let upgrades = spec.targets.iter().map(|t| Upgrade::new(t, key)).collect();
    let shared = Shared::new(&spec.workload, upgrades, spec.seed, spec.send_budget)?;
    let alarm = sys::Alarm::new().map_err(DriverError::Poll)?;
    poll.registry()
        .register(
            &mut mio::unix::SourceFd(&alarm.raw_fd()),
            ALARM,
            Interest::READABLE,
        )
        .map_err(DriverError::Poll)?;
    let mut w = Worker {
        spec,
        poll,
        events: Events::with_capacity(1024),
        conns: (0..spec.count).map(|_| None).collect(),
        shared,
        report: WorkerReport::new(spec.workload.topics()),
        scratch: vec![0; SCRATCH],
        out: Vec::with_capacity(SCRATCH),
        in_progress: 0,
        last_delivery_ns: 0,
        last_upgrade_ns: 0,
        alarm,
        touched: Vec::new(),
    };

    let (t0, c0) = (sys::monotonic_ns(), sys::thread_cpu_ns());
    w.connect_all(link);
    w.report.connect_ns = sys::monotonic_ns() - t0;
    w.report.connect_cpu_ns = sys::thread_cpu_ns() - c0;
    link.send(WorkerEvent::Ready {
        snapshot: w.snapshot(),
    });
    if !link.wait_go() {
        return Err(DriverError::Aborted);
    }

    let (t1, c1) = (sys::monotonic_ns(), sys::thread_cpu_ns());
    w.measure(link);
    w.report.run_ns = sys::monotonic_ns() - t1;
    w.report.run_cpu_ns = sys::thread_cpu_ns() - c1;
    // Every connection is still open: the parent reads the servers (and
    // Redis) now, so closing them is not counted in the run.
    link.send(WorkerEvent::Drained {
        snapshot: w.snapshot(),
    });
    link.wait_go();
    w.finish();
    let share = |cpu: u64, wall: u64| {
        if wall == 0 {
            0.0
        } else {
            cpu as f64 / wall as f64
        }
    };
    w.report.max_cpu_share = share(w.report.connect_cpu_ns, w.report.connect_ns)
        .max(share(w.report.run_cpu_ns, w.report.run_ns));
    Ok(w.report)
}

impl Worker<'_> {
    fn now(&self) -> u64 {
        sys::monotonic_ns().saturating_sub(self.spec.epoch_ns)
    }

    fn snapshot(&self) -> Snapshot {
        let c = &self.shared.counters;
        Snapshot {
            established: c.established,
            failed: c.failed(),
            sent: c.sent,
            received: c.received,
        }
    }

    /// Opens every connection, at most `concurrency` upgrading at once and
    /// at most `connect_rate` new ones per second, until each is ready,
    /// failed or timed out.
    fn connect_all(&mut self, link: &mut dyn Link) {
        let spec = self.spec;
        let start = self.now();
        let mut next = 0;
        let mut last_progress = start;
        let mut last_sweep = start;
        let gap_ns = 1_000_000_000u64.checked_div(spec.connect_rate).unwrap_or(0);
        while next < spec.count || self.in_progress > 0 {
            let now = self.now();
            // Open as many as the concurrency and rate limits allow now.
            while next < spec.count
                && self.in_progress < spec.concurrency
                && (gap_ns == 0 || start + next as u64 * gap_ns <= now)
            {
                self.open(next, now);
                next += 1;
            }
            let wait = if next < spec.count && gap_ns > 0 {
                Duration::from_nanos(gap_ns.min(10_000_000))
            } else {
                Duration::from_millis(50)
            };
            self.poll_once(Some(wait));
            let now = self.now();
            if now - last_sweep > 100_000_000 {
                self.expire_slow_connects(now);
                last_sweep = now;
            }
            if now - last_progress > PROGRESS_EVERY.as_nanos() as u64 {
                link.send(WorkerEvent::Progress {
                    snapshot: self.snapshot(),
                });
                last_progress = now;
            }
        }
        self.report.connect_active_ns = self.last_upgrade_ns.saturating_sub(start);
    }

    fn open(&mut self, local: usize, now: u64) {
        let spec = self.spec;
        let global = spec.first + local;
        let source = spec.sources[global % spec.sources.len()];
        let target = spec.workload.target_of(global, spec.targets.len());
        let Some(addr) = spec.targets.get(target).map(Target::addr) else {
            return;
        };
        self.shared.counters.attempted += 1;
        let stream = sys::connect_from(source, addr).and_then(|mut stream| {
            self.poll
                .registry()
                .register(
                    &mut stream,
                    Token(local),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map(|()| stream)
        });
        match stream {
            Ok(stream) => {
                self.in_progress += 1;
                self.conns[local] = Some(Conn {
                    stream,
                    session: None,
                    role: spec.workload.role(global),
                    target,
                    unsent: Vec::new(),
                    started_ns: now,
                    pending: true,
                    upgraded: false,
                });
            }
            Err(e) => {
                self.shared.counters.connect_failed += 1;
                self.note_error(format!("connect from {source}: {e}"));
            }
        }
    }

    fn expire_slow_connects(&mut self, now: u64) {
        let timeout = self.spec.connect_timeout.as_nanos() as u64;
        for local in 0..self.conns.len() {
            let expired =
                matches!(&self.conns[local], Some(c) if c.pending && now - c.started_ns > timeout);
            if expired {
                self.shared.counters.timed_out += 1;
                self.note_error(format!("no upgrade within {:?}", self.spec.connect_timeout));
                self.drop_conn(local);
            }
        }
    }

    /// The measured phase, then the drain.
    fn measure(&mut self, link: &mut dyn Link) {
        let spec = self.spec;
        self.shared.sending = true;
        let start = self.now();
        let end = start + spec.duration.as_nanos() as u64;
        self.last_delivery_ns = start;

        let interval = spec
            .workload
            .publish_interval()
            .map(|d| d.as_nanos() as u64);
        // Senders start staggered over one interval so their sends do not
        // all land in the same instant.
        let senders = u64::from(spec.workload.senders().max(1));
        let mut schedule = Schedule::new();
        for local in 0..self.conns.len() {
            let Some(conn) = self.conns[local].as_mut() else {
                continue;
            };
            if let Some(session) = conn.session.as_mut() {
                session.begin(&mut self.shared, start, &mut self.out);
            }
            self.flush(local);
            if let (Some(index), Some(every)) = (self.role_of(local).sender_index(), interval) {
                let offset = every * u64::from(index) / senders;
                schedule.push(Reverse((start + offset, local)));
            }
        }
        // Senders waiting for their socket to drain, with their due times.
        let mut blocked: Vec<(u64, usize)> = Vec::new();

        let mut last_progress = start;
        loop {
            let now = self.now();
            let sends_done =
                self.shared.send_budget == 0 && schedule.is_empty() && blocked.is_empty();
            if now >= end || (sends_done && spec.workload != Workload::Connect) {
                break;
            }
            if let Some(every) = interval {
                self.send_due(&mut schedule, &mut blocked, now, end, every);
            }
            let mut wake = end.min(last_progress + PROGRESS_EVERY.as_nanos() as u64);
            if let Some(&Reverse((due, _))) = schedule.peek() {
                wake = wake.min(due);
            }
            let now = self.now();
            if wake > now {
                if self.alarm.arm_at(spec.epoch_ns + wake).is_err() {
                    // Without the timer, epoll's millisecond timeout still bounds the wait.
                    self.note_error("cannot arm the send timer".into());
                }
                self.poll_once(Some(Duration::from_nanos(wake - now)));
            } else {
                self.poll_once(Some(Duration::ZERO));
            }
            // Senders whose sockets drained go back on the schedule.
            blocked.retain(|&(due, local)| {
                let drained = self.conns[local]
                    .as_ref()
                    .is_none_or(|c| c.unsent.len() < MAX_UNSENT);
                if drained {
                    schedule.push(Reverse((due, local)));
                }
                !drained
            });
            let now = self.now();
            if now - last_progress >= PROGRESS_EVERY.as_nanos() as u64 {
                link.send(WorkerEvent::Progress {
                    snapshot: self.snapshot(),
                });
                last_progress = now;
            }
        }

        // Drain: no new sends; wait for what is in flight.
        self.shared.sending = false;
        let drain_end = self.now() + spec.drain.as_nanos() as u64;
        let quiet = QUIET.as_nanos() as u64;
        loop {
            let now = self.now();
            let c = &self.shared.counters;
            let echo_done =
                matches!(spec.workload, Workload::Echo { .. }) && c.unique >= c.expected_local;
            // Deliveries owed to other workers' connections cannot be
            // counted here: a quiet spell ends the drain instead.
            let all_delivered =
                spec.workload.is_ringhub() && spec.alone && c.unique >= c.expected_local;
            let fanout_quiet = matches!(
                spec.workload,
                Workload::Fanout { .. } | Workload::Direct { .. } | Workload::Mixed { .. }
            ) && now - self.last_delivery_ns > quiet;
            if now >= drain_end
                || echo_done
                || all_delivered
                || fanout_quiet
                || matches!(spec.workload, Workload::Connect)
            {
                break;
            }
            self.poll_once(Some(Duration::from_millis(20)));
        }
        self.report.active_ns = self.last_delivery_ns.saturating_sub(start);
    }

    /// Sends what is due by `now` (at most [`SEND_BATCH`] messages, so a
    /// sender far behind does not starve the reads), each stamped with the
    /// time it was due. A sender's messages of one batch go out in one write.
    fn send_due(
        &mut self,
        schedule: &mut Schedule,
        blocked: &mut Vec<(u64, usize)>,
        now: u64,
        end: u64,
        every: u64,
    ) {
        let mut touched = std::mem::take(&mut self.touched);
        for _ in 0..SEND_BATCH {
            let Some(&Reverse((due, local))) = schedule.peek() else {
                break;
            };
            if due > now || due >= end {
                break;
            }
            schedule.pop();
            let Some(conn) = self.conns[local].as_mut() else {
                continue;
            };
            if conn.unsent.len() >= MAX_UNSENT {
                blocked.push((due, local));
                continue;
            }
            // Frames queue behind what the socket has not taken yet.
            let was_empty = conn.unsent.is_empty();
            // A sender that cannot send (closed, or the count bound
            // reached) leaves the schedule instead of spinning on it.
            let sent = conn
                .session
                .as_mut()
                .is_some_and(|s| s.send_scheduled(&mut self.shared, due, &mut conn.unsent));
            if sent {
                if was_empty {
                    touched.push(local);
                }
                schedule.push(Reverse((due + every, local)));
            }
        }
        for &local in &touched {
            self.flush(local);
        }
        touched.clear();
        self.touched = touched;
    }

    fn role_of(&self, local: usize) -> Role {
        self.conns[local].as_ref().map_or(Role::Idle, |c| c.role)
    }

    /// Counts who is still subscribed, closes every connection politely and
    /// moves the counters into the report.
    fn finish(&mut self) {
        for local in 0..self.conns.len() {
            let Some(conn) = self.conns[local].as_mut() else {
                continue;
            };
            if let (Role::Subscriber { topic }, Some(s)) = (conn.role, conn.session.as_ref())
                && s.is_ready()
            {
                self.report.subscribers_per_topic[topic as usize] += 1;
            }
            if let Some(session) = conn.session.as_mut() {
                session.close(&mut self.shared, &mut self.out);
            }
            // Best effort: one write of the close frame, then the socket goes.
            if !self.out.is_empty() {
                let _ = conn.stream.write(&self.out);
                self.out.clear();
            }
            self.conns[local] = None;
        }
        self.report.counters = std::mem::take(&mut self.shared.counters);
        std::mem::swap(&mut self.report.latency, &mut self.shared.latency);
        self.report.published_per_topic = std::mem::take(&mut self.shared.published_per_topic);
    }

    fn poll_once(&mut self, timeout: Option<Duration>) {
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                self.note_error(format!("poll: {e}"));
            }
            return;
        }
        // The events buffer is moved out while handlers borrow the worker.
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in &events {
            if event.token() == ALARM {
                continue;
            }
            let closing = event.is_read_closed() || event.is_error();
            let readable = event.is_readable() || closing;
            self.on_event(event.token().0, readable, closing, event.is_writable());
        }
        self.events = events;
    }

    /// `closing`: the event says the peer closed or the socket failed, so
    /// reads go on to the end of the stream.
    fn on_event(&mut self, local: usize, readable: bool, closing: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(local).and_then(Option::as_mut) else {
            return;
        };
        if conn.session.is_none() {
            if !writable && !readable {
                return;
            }
            // The connect finished: an error, or a peer address.
            match conn.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.fail_connect(local, format!("connect: {e}")),
            }
            match conn.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail_connect(local, format!("connect: {e}")),
            }
            let query = match conn.role.user().map(|user| self.spec.login.query(user)) {
                None => None,
                Some(Ok(query)) => Some(query),
                Some(Err(e)) => return self.fail_connect(local, e.to_string()),
            };
            conn.session = Some(Session::start(
                conn.role,
                conn.target,
                query.as_deref(),
                &self.shared,
                &mut self.out,
            ));
            self.flush(local);
        }
        if writable {
            self.flush(local);
        }
        if readable {
            self.read(local, closing);
        }
    }

    /// Reads what the socket holds. A read that does not fill the scratch
    /// buffer emptied the socket, and with edge-triggered polling any byte
    /// arriving later raises a new event, so the read that would only
    /// return `WouldBlock` is skipped: one `recv` per event instead of two
    /// (tokio's `PollEvented` clears readiness on a short read the same
    /// way). `to_end` keeps reading until then anyway, for an end of stream
    /// that arrived before the event was reported and raises no new one.
    fn read(&mut self, local: usize, to_end: bool) {
        loop {
            let now = self.now();
            let Some(conn) = self.conns[local].as_mut() else {
                return;
            };
            let n = match conn.stream.read(&mut self.scratch) {
                Ok(0) => return self.lost_conn(local, "server closed the connection".into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.lost_conn(local, format!("read: {e}")),
            };
            let Some(session) = conn.session.as_mut() else {
                return;
            };
            let before = self.shared.counters.unique;
            let result =
                session.on_data(&mut self.scratch[..n], &mut self.shared, now, &mut self.out);
            if self.shared.counters.unique != before {
                self.last_delivery_ns = now;
            }
            let drained = n < self.scratch.len() && !to_end;
            match result {
                Ok(progress) => {
                    if progress.upgraded {
                        conn.upgraded = true;
                        self.last_upgrade_ns = now;
                        self.shared.counters.established += 1;
                        record_ns(&mut self.report.connect_latency, now - conn.started_ns);
                    }
                    if progress.ready && conn.pending {
                        conn.pending = false;
                        self.in_progress -= 1;
                    }
                    self.flush(local);
                    if progress.closed {
                        return self.lost_conn(local, "server sent a close frame".into());
                    }
                    if drained {
                        return;
                    }
                }
                Err(e) => {
                    let upgraded = !matches!(e, crate::session::SessionError::Handshake(_));
                    if upgraded {
                        return self.lost_conn(local, e.to_string());
                    }
                    self.shared.counters.handshake_failed += 1;
                    self.note_error(e.to_string());
                    return self.drop_conn(local);
                }
            }
        }
    }

    /// Writes `self.out` (frames just produced) and any earlier tail.
    fn flush(&mut self, local: usize) {
        let Some(conn) = self.conns[local].as_mut() else {
            self.out.clear();
            return;
        };
        if !self.out.is_empty() {
            if conn.unsent.is_empty() {
                match write_some(&mut conn.stream, &self.out) {
                    Ok(n) => conn.unsent.extend_from_slice(&self.out[n..]),
                    Err(e) => {
                        self.out.clear();
                        return self.lost_conn(local, format!("write: {e}"));
                    }
                }
            } else {
                conn.unsent.extend_from_slice(&self.out);
            }
            self.out.clear();
        }
        if !conn.unsent.is_empty() {
            match write_some(&mut conn.stream, &conn.unsent) {
                Ok(n) => {
                    conn.unsent.drain(..n);
                }
                Err(e) => self.lost_conn(local, format!("write: {e}")),
            }
        }
    }

    fn fail_connect(&mut self, local: usize, why: String) {
        self.shared.counters.connect_failed += 1;
        self.note_error(why);
        self.drop_conn(local);
    }

    /// A connection ended on the server's side (or broke).
    fn lost_conn(&mut self, local: usize, why: String) {
        let Some(conn) = self.conns[local].as_ref() else {
            return;
        };
        if conn.upgraded {
            self.shared.counters.dropped += 1;
        } else if conn.session.is_some() {
            self.shared.counters.handshake_failed += 1;
        } else {
            self.shared.counters.connect_failed += 1;
        }
        self.note_error(why);
        self.drop_conn(local);
    }

    fn drop_conn(&mut self, local: usize) {
        if let Some(mut conn) = self.conns[local].take() {
            if conn.pending {
                self.in_progress -= 1;
            }
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    fn note_error(&mut self, why: String) {
        if self.report.first_error.is_none() {
            self.report.first_error = Some(why);
        }
    }
}

/// The 16 `Sec-WebSocket-Key` bytes, from the worker's seed: servers check
/// the key's form, not its randomness.
fn websocket_key(seed: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..].copy_from_slice(&seed.rotate_left(29).to_le_bytes());
    key
}

/// Writes as much of `buf` as the socket takes now.
fn write_some(stream: &mut mio::net::TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < buf.len() {
        match stream.write(&buf[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
