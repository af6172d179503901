//! One core: a thread's ring, its listener, buffer pool, connections and
//! handler, and the loop that turns completions into handler calls.

use io_uring::types::{Fd, TimeoutFlags, Timespec};
use io_uring::{IoUring, cqueue, opcode, types};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::bufring::BufRing;
use crate::config::Config;
use crate::conn::{Phase, flag};
use crate::error::EngineError;
use crate::handler::{CloseReason, Ctx, Handler};
use crate::io::Io;
use crate::listener::Listener;
use crate::mailbox::Inbox;
use crate::ring::build_ring;
use crate::stats::CoreStats;
use crate::token::{ConnOp, RingOp, Token};

/// Connections the accept path keeps free in the fixed file table: a
/// multishot accept may land a few more before its cancel takes effect, and
/// a full table makes the kernel accept and then drop (-ENFILE).
const TABLE_HEADROOM: u32 = 64;

/// Ring-wide state shared with the server (shutdown flag).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub shutdown: std::sync::atomic::AtomicBool,
}

pub(crate) struct Core<H: Handler> {
    // Field order matters: the ring is dropped before the buffers the kernel
    // may still write into.
    ring: IoUring,
    bufs: BufRing,
    handler: H,
    io: Io<H>,
    listener: Option<Listener>,
    inbox: Inbox<H::Post>,
    shared: Arc<Shared>,
    started: Instant,
    tick_spec: Box<Timespec>,
    wake_buf: Box<u64>,
    table_size: u32,
    accepting: bool,
    /// Tick by which a shutdown must be finished.
    shutdown_deadline: Option<u32>,
    due: Vec<u64>,
}

impl<H: Handler> Core<H> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        core_id: u16,
        config: Arc<Config>,
        listener: Listener,
        handler: H,
        inbox: Inbox<H::Post>,
        outboxes: Vec<crate::mailbox::Outbox<H::Post>>,
        shared: Arc<Shared>,
        stats: Arc<CoreStats>,
    ) -> Result<Core<H>, EngineError> {
        let (ring, _mode) = build_ring(config.ring_entries)?;
        let table_size = config.max_connections_per_core.max(TABLE_HEADROOM * 2);
        ring.submitter()
            .register_files_sparse(table_size)
            .map_err(|source| EngineError::Io {
                what: "registering the fixed file table (is max_connections_per_core above RLIMIT_NOFILE?)",
                source,
            })?;
        let bufs = BufRing::register(&ring, 0, config.recv_buffers, config.recv_buffer_size)
            .map_err(EngineError::io("registering the provided-buffer ring"))?;
        let tick = config.tick;
        Ok(Core {
            ring,
            bufs,
            handler,
            io: Io::new(core_id, config, outboxes, stats),
            listener: Some(listener),
            inbox,
            shared,
            started: Instant::now(),
            tick_spec: Box::new(
                Timespec::new()
                    .sec(tick.as_secs())
                    .nsec(tick.subsec_nanos()),
            ),
            wake_buf: Box::new(0),
            table_size,
            accepting: false,
            shutdown_deadline: None,
            due: Vec::new(),
        })
    }

    fn config(&self) -> &Config {
        &self.io.config
    }

    fn arm_accept(&mut self) {
        if let Some(l) = &self.listener
            && !self.accepting
        {
            self.accepting = true;
            let sqe = opcode::AcceptMulti::new(Fd(l.as_raw_fd()))
                .allocate_file_index(true)
                .build()
                .user_data(Token::ring(RingOp::Accept));
            self.io.sqes.push(sqe);
        }
    }

    fn cancel_accept(&mut self) {
        if self.accepting {
            let sqe = opcode::AsyncCancel::new(Token::ring(RingOp::Accept))
                .build()
                .user_data(Token::ring(RingOp::Cancel));
            self.io.sqes.push(sqe);
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
        self.io.sqes.push(sqe);
    }

    fn arm_tick(&mut self) {
        let sqe = opcode::Timeout::new(&raw const *self.tick_spec)
            .flags(TimeoutFlags::MULTISHOT)
            .build()
            .user_data(Token::ring(RingOp::Tick));
        self.io.sqes.push(sqe);
    }

    /// Runs until shutdown has drained.
    pub(crate) fn run(mut self) -> Result<(), EngineError> {
        self.arm_accept();
        self.arm_wake();
        self.arm_tick();
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            self.io.flush();
            self.deliver_closes();
            self.io.flush();
            self.bufs.commit();
            self.submit_and_wait()?;
            cqes.clear();
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, res, flags) in &cqes {
                self.dispatch(user_data, res, flags);
            }
            if self.finished() {
                return Ok(());
            }
        }
    }

    /// Pushes this turn's submissions and waits for at least one completion.
    fn submit_and_wait(&mut self) -> Result<(), EngineError> {
        let mut pending = std::mem::take(&mut self.io.sqes);
        let mut start = 0;
        loop {
            {
                let mut sq = self.ring.submission();
                while start < pending.len() {
                    // SAFETY: every entry points only at memory that outlives
                    // its completion: boxed send headers held by the
                    // connection, the boxed tick timespec and wake buffer, or
                    // nothing at all.
                    if unsafe { sq.push(&pending[start]) }.is_err() {
                        break;
                    }
                    start += 1;
                }
            }
            let want = if start == pending.len() { 1 } else { 0 };
            match self.ring.submitter().submit_and_wait(want) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // The completion queue is full: reap before submitting more.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break,
                Err(source) => {
                    return Err(EngineError::Io {
                        what: "io_uring_enter",
                        source,
                    });
                }
            }
            if start == pending.len() {
                break;
            }
        }
        pending.drain(..start);
        // Leftovers (after EBUSY) go first next turn.
        pending.append(&mut self.io.sqes);
        self.io.sqes = pending;
        Ok(())
    }

    fn now_tick(&self) -> u32 {
        let tick = self.config().tick.as_nanos().max(1);
        (self.started.elapsed().as_nanos() / tick) as u32
    }

    fn dispatch(&mut self, user_data: u64, res: i32, flags: u32) {
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
                        self.bufs.recycle(bid);
                    }
                    return;
                }
                match op {
                    ConnOp::Recv => self.on_recv(index, res, flags),
                    ConnOp::Send => self.io.on_send(index, res),
                    ConnOp::Close | ConnOp::Cancel => {
                        if let Some(c) = self.io.conns.get_mut(index as usize) {
                            c.inflight = c.inflight.saturating_sub(1);
                        }
                    }
                }
                self.reap(index);
            }
            Token::Ring(RingOp::Accept) => self.on_accept(res, flags),
            Token::Ring(RingOp::Tick) => self.on_tick(flags),
            Token::Ring(RingOp::Wake) => self.on_wake(),
            Token::Ring(RingOp::Cancel) | Token::Unknown(_) => {}
        }
    }

    fn reap(&mut self, index: u32) {
        if self.io.reap(index) {
            let open = self.io.conns.len() as u64;
            CoreStats::set(&self.io.stats.open, open);
            // Room again in the file table: resume accepting.
            if !self.accepting
                && !self.io.shutting_down
                && (self.io.conns.len() as u32) < self.table_size - 2 * TABLE_HEADROOM
            {
                self.arm_accept();
            }
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accepting = false;
        }
        if res >= 0 {
            let fd = res as u32;
            CoreStats::add(&self.io.stats.accepted, 1);
            if self.io.shutting_down {
                self.io.sqes.push(
                    opcode::Close::new(types::Fixed(fd))
                        .build()
                        .user_data(Token::ring(RingOp::Cancel)),
                );
                return;
            }
            let index = self.io.insert(fd);
            CoreStats::set(&self.io.stats.open, self.io.conns.len() as u64);
            let deadline = self.io.now + self.config().ticks(self.config().handshake_timeout);
            self.io.arm_timer(index, deadline);
            self.io.arm_recv(index, self.bufs.bgid());
            if self.io.conns.len() as u32 + TABLE_HEADROOM >= self.table_size {
                self.cancel_accept();
            }
        } else if res == -libc::EINVAL || res == -libc::EBADF {
            // The listener itself is unusable (or closed for shutdown):
            // re-arming would spin.
            CoreStats::add(&self.io.stats.accept_errors, 1);
            return;
        } else if res != -libc::ECANCELED {
            CoreStats::add(&self.io.stats.accept_errors, 1);
        }
        if !self.accepting
            && !self.io.shutting_down
            && (self.io.conns.len() as u32) + TABLE_HEADROOM < self.table_size
        {
            self.arm_accept();
        }
    }

    fn on_recv(&mut self, index: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        if !more && let Some(c) = self.io.conns.get_mut(index as usize) {
            c.clear(flag::RECV_ARMED);
            c.inflight = c.inflight.saturating_sub(1);
        }
        if res > 0 {
            let Some(bid) = BufRing::buffer_id(flags) else {
                return;
            };
            if let Some(c) = self.io.conns.get_mut(index as usize) {
                c.last_rx = self.io.now;
                c.clear(flag::PING_OUT);
            }
            let data = self.bufs.data(bid, res as usize);
            crate::ws::on_bytes(&mut self.io, &mut self.handler, index, data);
            self.bufs.recycle(bid);
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
            self.io.arm_recv(index, self.bufs.bgid());
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
        let cfg = self.io.config.clone();
        let Some(c) = self.io.conns.get_mut(index as usize) else {
            return;
        };
        if c.generation != generation || c.armed_at > now {
            // Stale, or a later entry for this connection exists.
            return;
        }
        let id = self.io.id(index);
        let Some(c) = self.io.conns.get_mut(index as usize) else {
            return;
        };
        match c.phase {
            Phase::Gone => {}
            Phase::Handshake => {
                let deadline = c.mark + cfg.ticks(cfg.handshake_timeout);
                if now >= deadline {
                    CoreStats::add(&self.io.stats.timeouts, 1);
                    self.io.teardown(index);
                } else {
                    self.io.arm_timer(index, deadline);
                }
            }
            Phase::Closing => {
                let deadline = c.mark + cfg.ticks(cfg.close_timeout);
                if now >= deadline {
                    self.io.teardown(index);
                } else {
                    self.io.arm_timer(index, deadline);
                }
            }
            Phase::Open => {
                if c.has(flag::PING_OUT) {
                    let deadline = c.mark + cfg.ticks(cfg.idle_timeout);
                    if now >= deadline {
                        CoreStats::add(&self.io.stats.timeouts, 1);
                        self.io.closed.push((id, CloseReason::Timeout));
                        c.phase = Phase::Closing;
                        self.io.teardown(index);
                    } else {
                        self.io.arm_timer(index, deadline);
                    }
                } else {
                    let due = c.last_rx + cfg.ticks(cfg.ping_interval);
                    if now >= due {
                        c.set(flag::PING_OUT);
                        c.mark = now;
                        self.io.enqueue_unbounded(
                            index,
                            crate::io::encode_control(ringhub_proto::Opcode::Ping, b""),
                        );
                        self.io.arm_timer(index, now + cfg.ticks(cfg.idle_timeout));
                    } else {
                        self.io.arm_timer(index, due);
                    }
                }
            }
        }
    }

    fn on_wake(&mut self) {
        self.inbox.waker().clear();
        self.arm_wake();
        while let Some(post) = self.inbox.try_recv() {
            let mut ctx = Ctx { io: &mut self.io };
            self.handler.on_post(&mut ctx, post);
        }
        if self.shared.shutdown.load(Ordering::Acquire) && !self.io.shutting_down {
            self.begin_shutdown();
        }
    }

    /// Stops accepting, tells the handler, and sends 1001 to every open
    /// connection; the loop ends when they are gone or the grace has passed.
    fn begin_shutdown(&mut self) {
        self.io.shutting_down = true;
        self.cancel_accept();
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
        self.io.shutting_down && self.io.conns.is_empty()
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
