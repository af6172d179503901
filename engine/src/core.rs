//! One core: a thread's ring, its listener, buffer pool, connections and
//! handler, and the loop that turns completions into handler calls.

use io_uring::types::{Fd, TimeoutFlags, Timespec};
use io_uring::{cqueue, opcode, types};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ringhub_proto::Opcode;

use crate::accept::accepts_to_arm;
use crate::bufring::BufRing;
use crate::config::Config;
use crate::conn::{Phase, flag};
use crate::deadline::{Timeouts, TimerAction, TimerView, on_deadline};
use crate::error::EngineError;
use crate::handler::{CloseReason, Ctx, Handler, Mail};
use crate::io::Io;
use crate::lane::Lane;
use crate::listener::Listener;
use crate::mailbox::Inbox;
use crate::stats::CoreStats;
use crate::token::{ConnOp, RingOp, Token};

/// The smallest fixed file table a lane registers.
const MIN_TABLE: u32 = 256;

/// Ring-wide state shared with the server (shutdown flag).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub shutdown: std::sync::atomic::AtomicBool,
}

/// The soft `RLIMIT_NOFILE`: no fixed file table may be larger.
fn nofile_limit() -> u32 {
    // SAFETY: getrlimit writes into a live rlimit struct.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur.min(1 << 20) as u32
}

/// How one core's connections are split into fixed file tables: the table
/// size and the number of lanes.
pub(crate) fn lane_plan(max_connections: u32, files_per_lane: u32, nofile: u32) -> (u32, usize) {
    let table = max_connections
        .min(files_per_lane)
        .min(nofile)
        .max(MIN_TABLE);
    let lanes = max_connections.div_ceil(table).clamp(1, 64);
    (table, lanes as usize)
}

pub(crate) struct Core<H: Handler> {
    // Field order matters: the lanes (rings) go before anything the kernel
    // may still point into.
    lanes: Vec<Lane>,
    handler: H,
    io: Io<H>,
    listener: Option<Listener>,
    inbox: Inbox<Mail<H::Post>>,
    shared: Arc<Shared>,
    started: Instant,
    tick_spec: Box<Timespec>,
    /// The alarm's relative timeout, read by the kernel when it is submitted.
    alarm_spec: Box<Timespec>,
    wake_buf: Box<u64>,
    timeouts: Timeouts,
    /// Tick by which a shutdown must be finished.
    shutdown_deadline: Option<u32>,
    due: Vec<u64>,
    cqes: Vec<(u64, i32, u32)>,
}

impl<H: Handler> Core<H> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        core_id: u16,
        config: Arc<Config>,
        listener: Listener,
        handler: H,
        inbox: Inbox<Mail<H::Post>>,
        outboxes: Vec<crate::mailbox::Outbox<Mail<H::Post>>>,
        shared: Arc<Shared>,
        stats: Arc<CoreStats>,
    ) -> Result<Core<H>, EngineError> {
        let (table, lane_count) = lane_plan(
            config.max_connections_per_core,
            config.files_per_lane,
            nofile_limit(),
        );
        let mut lanes = Vec::with_capacity(lane_count);
        for i in 0..lane_count {
            let entries = if i == 0 {
                config.ring_entries
            } else {
                (config.ring_entries / 4).max(64)
            };
            lanes.push(Lane::new(
                i,
                entries,
                table,
                config.recv_buffers,
                config.recv_buffer_size,
            )?);
        }
        let tick = config.tick;
        let timeouts = Timeouts::from_config(&config);
        let mut io = Io::new(core_id, config, outboxes, stats);
        io.bgids = lanes.iter().map(Lane::bgid).collect();
        io.sqes = (0..lane_count).map(|_| Vec::with_capacity(256)).collect();
        Ok(Core {
            lanes,
            handler,
            io,
            listener: Some(listener),
            inbox,
            shared,
            started: Instant::now(),
            tick_spec: Box::new(
                Timespec::new()
                    .sec(tick.as_secs())
                    .nsec(tick.subsec_nanos()),
            ),
            alarm_spec: Box::new(Timespec::new()),
            wake_buf: Box::new(0),
            timeouts,
            shutdown_deadline: None,
            due: Vec::new(),
            cqes: Vec::with_capacity(1024),
        })
    }

    fn config(&self) -> &Config {
        &self.io.config
    }

    /// The lane accepting now, if any: only one does at a time, so tables
    /// fill in order.
    fn accepting_lane(&self) -> Option<usize> {
        self.lanes.iter().position(|l| l.accept.in_flight() > 0)
    }

    /// Keeps [`crate::accept::ACCEPTS_IN_FLIGHT`] accepts armed on the accepting lane (fewer
    /// near the end of its table), moving on to the next lane with room once
    /// its last accept is in.
    fn arm_accept(&mut self) {
        if self.io.shutting_down {
            return;
        }
        let Some(fd) = self.listener.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        let Some(lane) = self
            .accepting_lane()
            .or_else(|| self.lanes.iter().position(|l| l.room() > 0))
        else {
            return;
        };
        let l = &mut self.lanes[lane];
        for _ in 0..accepts_to_arm(l.room(), l.accept.in_flight()) {
            let Some((slot, addr, len)) = l.accept.arm() else {
                break;
            };
            // The kernel writes the peer's address into the lane's slot
            // and the socket into a free slot of the lane's file table.
            let sqe = opcode::Accept::new(Fd(fd), addr, len)
                .file_index(Some(types::DestinationSlot::auto_target()))
                .build()
                .user_data(Token::accept(slot));
            self.io.push(lane as u8, sqe);
        }
    }

    /// Cancels every accept (shutdown), by `user_data`: the listener is
    /// closed before these are submitted, so it cannot be named by fd.
    fn cancel_accepts(&mut self) {
        for lane in 0..self.lanes.len() {
            let slots: Vec<u16> = self.lanes[lane].accept.armed().collect();
            for slot in slots {
                let sqe = opcode::AsyncCancel::new(Token::accept(slot))
                    .build()
                    .user_data(Token::ring(RingOp::Cancel));
                self.io.push(lane as u8, sqe);
            }
        }
    }

    fn arm_wake(&mut self) {
        let sqe = opcode::Read::new(
            Fd(self.inbox.waker().as_raw_fd()),
            (&raw mut *self.wake_buf).cast::<u8>(),
            8,
        )
        .build()
        .user_data(Token::ring(RingOp::Wake));
        self.io.push(0, sqe);
    }

    fn arm_tick(&mut self) {
        let sqe = opcode::Timeout::new(&raw const *self.tick_spec)
            .flags(TimeoutFlags::MULTISHOT)
            .build()
            .user_data(Token::ring(RingOp::Tick));
        self.io.push(0, sqe);
    }

    /// Lane 0 watches lane `lane`'s completion eventfd.
    fn arm_lane_poll(&mut self, lane: usize) {
        if let Some(fd) = self.lanes[lane].eventfd() {
            let sqe = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(Token::lane_ready(lane as u8));
            self.io.push(0, sqe);
        }
    }

    /// Runs until shutdown has drained.
    pub(crate) fn run(mut self) -> Result<(), EngineError> {
        let waker = self.inbox.waker().clone();
        waker.set_ring_fd(Some(self.lanes[0].ring.as_raw_fd()));
        let result = self.turns();
        // Senders fall back to the eventfd; our ring fd is about to close.
        waker.set_ring_fd(None);
        result
    }

    fn turns(&mut self) -> Result<(), EngineError> {
        self.arm_accept();
        self.arm_wake();
        self.arm_tick();
        for lane in 1..self.lanes.len() {
            self.arm_lane_poll(lane);
        }
        loop {
            self.deliver_closes();
            self.end_turn();
            self.handle_resumed();
            self.io.flush();
            self.deliver_closes();
            self.io.flush();
            self.submit_and_wait()?;
            CoreStats::add(&self.io.stats.turns, 1);
            for lane in 0..self.lanes.len() {
                self.reap_lane(lane);
            }
            if self.finished() {
                return Ok(());
            }
        }
    }

    /// Lets the handler flush what it batched over the turn, and arms an
    /// alarm for the earliest wake it asked for, unless one armed earlier
    /// already covers it.
    fn end_turn(&mut self) {
        {
            let mut ctx = Ctx { io: &mut self.io };
            self.handler.on_turn_end(&mut ctx);
        }
        let Some(at) = self.io.wake_request.take() else {
            return;
        };
        if self.io.alarm.is_some_and(|armed| armed <= at) {
            return;
        }
        let wait = at.saturating_duration_since(Instant::now());
        *self.alarm_spec = Timespec::new()
            .sec(wait.as_secs())
            .nsec(wait.subsec_nanos().max(1000));
        let sqe = opcode::Timeout::new(&raw const *self.alarm_spec)
            .build()
            .user_data(Token::ring(RingOp::Alarm));
        self.io.push(0, sqe);
        self.io.alarm = Some(at);
    }

    /// Hands the handler the frames resumed connections held while paused
    /// (they may pause again part way).
    fn handle_resumed(&mut self) {
        while !self.io.resumed.is_empty() {
            for index in std::mem::take(&mut self.io.resumed) {
                crate::ws::on_bytes(&mut self.io, &mut self.handler, index, &mut []);
            }
            self.deliver_closes();
        }
    }

    /// Publishes recycled buffers and pushes this turn's submissions to
    /// every lane, then waits on lane 0 for at least one completion.
    fn submit_and_wait(&mut self) -> Result<(), EngineError> {
        for lane in (0..self.lanes.len()).rev() {
            self.lanes[lane].bufs.commit();
            let wait = usize::from(lane == 0);
            let mut pending = std::mem::take(&mut self.io.sqes[lane]);
            let pushed = self.lanes[lane].submit(&pending, wait)?;
            pending.drain(..pushed);
            // Leftovers (after EBUSY) go first next turn.
            pending.append(&mut self.io.sqes[lane]);
            self.io.sqes[lane] = pending;
        }
        Ok(())
    }

    /// Handles every completion lane `lane` has posted.
    fn reap_lane(&mut self, lane: usize) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(
            self.lanes[lane]
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(user_data, res, flags) in &cqes {
            self.dispatch(lane, user_data, res, flags);
        }
        self.cqes = cqes;
    }

    fn now_tick(&self) -> u32 {
        let tick = self.config().tick.as_nanos().max(1);
        (self.started.elapsed().as_nanos() / tick) as u32
    }

    fn dispatch(&mut self, lane: usize, user_data: u64, res: i32, flags: u32) {
        match Token::decode(user_data) {
            Token::Conn {
                op,
                index,
                generation,
            } => {
                let live = self
                    .io
                    .conns
                    .get(index as usize)
                    .is_some_and(|c| c.generation == generation);
                if !live {
                    // A stale completion: give back any buffer it carries.
                    if let Some(bid) = BufRing::buffer_id(flags) {
                        self.lanes[lane].bufs.recycle(bid);
                    }
                    return;
                }
                match op {
                    ConnOp::Recv => self.on_recv(lane, index, res, flags),
                    ConnOp::Send => self.io.on_send(index, res),
                    ConnOp::Close | ConnOp::Cancel | ConnOp::Shutdown => {
                        if let Some(c) = self.io.conns.get_mut(index as usize) {
                            c.inflight = c.inflight.saturating_sub(1);
                        }
                    }
                }
                self.reap(index);
            }
            Token::Accept(slot) => self.on_accept(lane, slot, res),
            Token::Ring(RingOp::Tick) => self.on_tick(flags),
            Token::Ring(RingOp::Wake) => {
                self.arm_wake();
                self.on_mail();
            }
            Token::Ring(RingOp::Mail) => self.on_mail(),
            // The turn this completion ends calls `on_turn_end`; an alarm
            // still in flight for a later deadline only costs a spare turn.
            Token::Ring(RingOp::Alarm) => self.io.alarm = None,
            Token::Watch(key) => self.on_watch(key, res, flags),
            Token::LaneReady(ready) => {
                let ready = usize::from(ready);
                if ready < self.lanes.len() {
                    self.lanes[ready].reset_eventfd();
                    if !cqueue::more(flags) {
                        self.arm_lane_poll(ready);
                    }
                }
            }
            Token::Ring(RingOp::Cancel) | Token::Unknown(_) => {}
        }
    }

    fn reap(&mut self, index: u32) {
        if let Some(lane) = self.io.reap(index) {
            let lane = usize::from(lane);
            self.lanes[lane].conns = self.lanes[lane].conns.saturating_sub(1);
            CoreStats::set(&self.io.stats.open, self.io.conns.len() as u64);
            // Room again in a file table: resume accepting if stopped.
            self.arm_accept();
        }
    }

    fn on_accept(&mut self, lane: usize, slot: u16, res: i32) {
        let peer = self.lanes[lane].accept.complete(slot, res >= 0);
        if res >= 0 {
            let fd = res as u32;
            CoreStats::add(&self.io.stats.accepted, 1);
            if self.io.shutting_down {
                let sqe = opcode::Close::new(types::Fixed(fd))
                    .build()
                    .user_data(Token::ring(RingOp::Cancel));
                self.io.push(lane as u8, sqe);
                return;
            }
            let index = self.io.insert(lane as u8, fd, peer);
            self.lanes[lane].conns += 1;
            CoreStats::set(&self.io.stats.open, self.io.conns.len() as u64);
            let deadline = self.io.now + self.config().ticks(self.config().handshake_timeout);
            self.io.arm_timer(index, deadline);
            self.io.arm_recv(index);
        } else if res == -libc::EINVAL || res == -libc::EBADF {
            // The listener itself is unusable (or closed for shutdown):
            // re-arming would spin.
            CoreStats::add(&self.io.stats.accept_errors, 1);
            return;
        } else if res != -libc::ECANCELED {
            CoreStats::add(&self.io.stats.accept_errors, 1);
        }
        self.arm_accept();
    }

    fn on_recv(&mut self, lane: usize, index: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        if !more && let Some(c) = self.io.conns.get_mut(index as usize) {
            c.clear(flag::RECV_ARMED);
            c.inflight = c.inflight.saturating_sub(1);
        }
        if res > 0 {
            let Some(bid) = BufRing::buffer_id(flags) else {
                return;
            };
            CoreStats::add(&self.io.stats.recvs, 1);
            if let Some(c) = self.io.conns.get_mut(index as usize) {
                c.last_rx = self.io.now;
                c.clear(flag::PING_OUT);
            }
            let bufs = &mut self.lanes[lane].bufs;
            let data = bufs.data(bid, res as usize);
            crate::ws::on_bytes(&mut self.io, &mut self.handler, index, data);
            bufs.recycle(bid);
        } else if res == 0 {
            // The peer closed (or shut down writing): nothing more will come.
            self.io.teardown(index);
            return;
        } else if res != -libc::ENOBUFS && res != -libc::ECANCELED {
            self.io.teardown(index);
            return;
        }
        let live = self
            .io
            .conns
            .get(index as usize)
            .is_some_and(|c| c.phase != Phase::Gone && !c.has(flag::RECV_ARMED));
        if live {
            self.io.arm_recv(index);
        }
    }

    fn on_tick(&mut self, flags: u32) {
        if !cqueue::more(flags) {
            self.arm_tick();
        }
        let now = self.now_tick();
        self.io.now = now;
        let mut due = std::mem::take(&mut self.due);
        self.io.wheel.advance(now, &mut due);
        for key in due.drain(..) {
            if let Token::Conn {
                index, generation, ..
            } = Token::decode(key)
            {
                self.on_timer(index, generation, now);
            }
        }
        self.due = due;
        if let Some(deadline) = self.shutdown_deadline
            && now >= deadline
        {
            let indexes: Vec<u32> = self.io.conns.iter().map(|(i, _)| i as u32).collect();
            for index in indexes {
                self.io.teardown(index);
            }
        }
    }

    /// A connection's timer entry fired: act on its real deadline.
    fn on_timer(&mut self, index: u32, generation: u32, now: u32) {
        let id = self.io.id(index);
        let Some(c) = self.io.conns.get_mut(index as usize) else {
            return;
        };
        if c.generation != generation || c.armed_at > now {
            // Stale, or a later entry for this connection exists.
            return;
        }
        if c.has(flag::PAUSED) {
            // Silent because we stopped reading it, not idle.
            c.last_rx = now;
            c.clear(flag::PING_OUT);
        }
        let view = TimerView {
            phase: c.phase,
            ping_out: c.has(flag::PING_OUT),
            mark: c.mark,
            last_rx: c.last_rx,
        };
        match on_deadline(view, now, &self.timeouts) {
            TimerAction::Nothing => {}
            TimerAction::Rearm(at) => self.io.arm_timer(index, at),
            TimerAction::Ping { next } => {
                c.set(flag::PING_OUT);
                c.mark = now;
                self.io
                    .enqueue_unbounded(index, crate::io::encode_control(Opcode::Ping, b""));
                self.io.arm_timer(index, next);
            }
            TimerAction::HandshakeExpired => {
                CoreStats::add(&self.io.stats.timeouts, 1);
                self.io.teardown(index);
            }
            TimerAction::IdleExpired => {
                CoreStats::add(&self.io.stats.timeouts, 1);
                self.io.closed.push((id, CloseReason::Timeout));
                c.phase = Phase::Closing;
                self.io.teardown(index);
            }
            TimerAction::CloseExpired => self.io.teardown(index),
        }
    }

    /// A watched descriptor is readable (or its poll ended).
    fn on_watch(&mut self, key: u16, res: i32, flags: u32) {
        let Some(&(_, fd)) = self.io.watches.iter().find(|&&(k, _)| k == key) else {
            return; // Unwatched: the cancel's or a late completion.
        };
        if res < 0 {
            // The descriptor failed or was closed: the handler hears once
            // more (its read reports why), then the watch is gone.
            self.io.watches.retain(|&(k, _)| k != key);
        } else if !cqueue::more(flags) {
            self.io.arm_watch(key, fd);
        }
        let mut ctx = Ctx { io: &mut self.io };
        self.handler.on_readable(&mut ctx, key);
    }

    /// Mail is waiting (eventfd read or another core's MSG_RING).
    fn on_mail(&mut self) {
        self.inbox.waker().clear();
        while let Some(mail) = self.inbox.try_recv() {
            match mail {
                Mail::App(post) => {
                    let mut ctx = Ctx { io: &mut self.io };
                    self.handler.on_post(&mut ctx, post);
                }
                Mail::Send(conn, mut frame) => {
                    let _ = self.io.send_shared(conn, &mut frame);
                }
                Mail::SendMany(conns, mut frame) => {
                    for conn in conns {
                        let _ = self.io.send_shared(conn, &mut frame);
                    }
                }
                Mail::Close(conn, code) => {
                    self.io.close_with(conn, code, "", CloseReason::Local(code));
                }
            }
        }
        if self.shared.shutdown.load(Ordering::Acquire) && !self.io.shutting_down {
            self.begin_shutdown();
        }
    }

    /// Stops accepting, tells the handler, and sends 1001 to every open
    /// connection; the loop ends when they are gone or the grace has passed.
    fn begin_shutdown(&mut self) {
        self.io.shutting_down = true;
        self.cancel_accepts();
        // Closing our listener makes the kernel route new connections to the
        // siblings (or refuse them once all are closed).
        self.listener = None;
        {
            let mut ctx = Ctx { io: &mut self.io };
            self.handler.on_shutdown(&mut ctx);
        }
        let ids: Vec<_> = self
            .io
            .conns
            .iter()
            .map(|(i, c)| (i as u32, c.phase))
            .collect();
        for (index, phase) in ids {
            match phase {
                Phase::Open => {
                    let id = self.io.id(index);
                    self.io.close_with(
                        id,
                        ringhub_proto::CloseCode::Away,
                        "server shutting down",
                        CloseReason::Shutdown,
                    );
                    // Don't wait for the peer's close reply beyond the flush.
                    if let Some(c) = self.io.conns.get_mut(index as usize) {
                        c.set(flag::CLOSE_AFTER_FLUSH);
                    }
                }
                Phase::Handshake => self.io.teardown(index),
                Phase::Closing | Phase::Gone => {}
            }
        }
        let grace = self.config().ticks(self.config().shutdown_grace);
        self.shutdown_deadline = Some(self.now_tick() + grace);
    }

    fn finished(&self) -> bool {
        // Accepts still in flight could write into their lane's address
        // slots: wait for their cancellations too.
        let accepting = self.lanes.iter().any(|l| l.accept.in_flight() > 0);
        self.io.shutting_down && self.io.conns.is_empty() && !accepting
            || self.shutdown_deadline.is_some_and(|d| {
                self.now_tick() > d + self.config().ticks(self.config().close_timeout)
            })
    }

    /// Tells the handler about connections that left the open state.
    fn deliver_closes(&mut self) {
        while !self.io.closed.is_empty() {
            let closed = std::mem::take(&mut self.io.closed);
            for (id, reason) in closed {
                let mut ctx = Ctx { io: &mut self.io };
                self.handler.on_close(&mut ctx, id, reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_split_connections_into_tables_the_fd_limit_allows() {
        // 100k per core with nofile at 20,000: seven tables of 16,384.
        assert_eq!(lane_plan(100_000, 16_384, 20_000), (16_384, 7));
        // A low nofile shrinks the tables and adds lanes.
        assert_eq!(lane_plan(100_000, 16_384, 10_000), (10_000, 10));
        // Small servers use one table sized to need.
        assert_eq!(lane_plan(1_000, 16_384, 20_000), (1_000, 1));
        // Tables never go below what the accept headroom needs.
        assert_eq!(lane_plan(1_024, 10, 20_000), (256, 4));
    }
}
