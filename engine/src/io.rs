//! A core's I/O state apart from the ring and the handler: the connection
//! slab, the queue of submissions, send flushing and the close paths. The
//! handler reaches it through [`crate::Ctx`]; whatever it asks for becomes
//! submissions pushed at the end of the loop turn.

use bytes::{BufMut, Bytes, BytesMut};
use io_uring::types::{CancelBuilder, Fixed};
use io_uring::{opcode, squeue};
use ringhub_proto::{
    CloseCode, ClosePayload, Compressors, DeflateParams, FrameHead, Inflater, Opcode, encode_header,
};
use slab::Slab;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::conn::{Conn, Phase, SendOp, flag};
use crate::handler::{CloseReason, ConnId, Handler, Mail, SendError, SharedFrame};
use crate::mailbox::Outbox;
use crate::sendq::{MAX_IOVECS, Spares};
use crate::stats::CoreStats;
use crate::timer::{Tick, TimerWheel};
use crate::token::{ConnOp, GEN_MASK, Token};

/// Spare sendmsg headers kept for reuse; more are freed.
const SEND_OP_POOL: usize = 256;
/// The first capacity of the open buffer (see [`Io::enqueue_frame`]): room
/// for a burst of small replies to one connection.
const OPEN_CAPACITY: usize = 2048;

/// Encodes one frame as a single shared buffer (header then payload).
fn encode(head: FrameHead, payload: &[u8]) -> Bytes {
    let header = encode_header(head, payload.len());
    let mut buf = BytesMut::with_capacity(header.len() + payload.len());
    buf.put_slice(&header);
    buf.put_slice(payload);
    buf.freeze()
}

/// Encodes a whole data message, compressed (RSV1) or not.
pub(crate) fn encode_data_frame(text: bool, compressed: bool, payload: &[u8]) -> Bytes {
    let opcode = if text { Opcode::Text } else { Opcode::Binary };
    let head = FrameHead {
        fin: true,
        rsv1: compressed,
        opcode,
    };
    encode(head, payload)
}

/// Encodes a control frame (payload ≤ 125 bytes).
pub(crate) fn encode_control(opcode: Opcode, payload: &[u8]) -> Bytes {
    encode(FrameHead::new(opcode), payload)
}

/// A connection's state while it speaks HTTP (before an upgrade, or
/// between kept-alive plain requests).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HttpPhase {
    /// Where it connected from, if the kernel said.
    pub peer: Option<SocketAddr>,
    /// Plain requests answered on it so far.
    pub served: u32,
}

/// Everything of a core that handlers may touch.
pub struct Io<H: Handler> {
    pub(crate) core_id: u16,
    pub(crate) config: Arc<Config>,
    pub(crate) conns: Slab<Conn<H::State>>,
    next_generation: u32,
    /// Submissions made this turn, per lane (ring), pushed before the rings
    /// are entered.
    pub(crate) sqes: Vec<Vec<squeue::Entry>>,
    /// Connections with queued bytes to flush at the end of the turn.
    dirty: Vec<u32>,
    /// Boxes for in-flight sendmsg headers, reused. Boxed because the
    /// kernel holds their address while a send is in flight.
    #[allow(clippy::vec_box)]
    send_ops: Vec<Box<SendOp>>,
    /// Empty send-queue buffers for reuse.
    spares: Spares,
    pub(crate) wheel: TimerWheel,
    pub(crate) now: Tick,
    /// Close notifications for the handler, delivered after the current
    /// callback returns (so a handler is never re-entered).
    pub(crate) closed: Vec<(ConnId, CloseReason)>,
    pub(crate) outboxes: Vec<Outbox<Mail<H::Post>>>,
    pub(crate) stats: Arc<CoreStats>,
    pub(crate) compressors: Compressors,
    /// Scratch for compression output.
    pub(crate) scratch: Vec<u8>,
    /// One inflater per core: permessage-deflate is negotiated without
    /// client context takeover, so no connection keeps zlib state.
    pub(crate) inflater: Inflater,
    /// Scratch for inflated messages.
    pub(crate) inflated: Vec<u8>,
    pub(crate) shutting_down: bool,
    /// What connections in their HTTP phase carry (the peer's address, the
    /// requests served), by slab index; an open WebSocket keeps none of it,
    /// so idle connections don't pay for it.
    pub(crate) http: HashMap<u32, HttpPhase>,
    /// The connection whose frames `open_buf` holds, not yet in its send
    /// queue; sealed into the queue before anything else touches a queue.
    open: Option<u32>,
    open_buf: BytesMut,
    /// Each lane's buffer group, by lane.
    pub(crate) bgids: Vec<u16>,
    /// Connections resumed this turn, whose held bytes are handled at the
    /// turn's end.
    pub(crate) resumed: Vec<u32>,
    /// Descriptors the handler watches, by key (see `Ctx::watch_readable`).
    pub(crate) watches: Vec<(u16, std::os::fd::RawFd)>,
    /// The earliest `Ctx::wake_at` asked for this turn.
    pub(crate) wake_request: Option<std::time::Instant>,
    /// When the alarm armed last fires (None: none is armed).
    pub(crate) alarm: Option<std::time::Instant>,
}

impl<H: Handler> Io<H> {
    pub(crate) fn new(
        core_id: u16,
        config: Arc<Config>,
        outboxes: Vec<Outbox<Mail<H::Post>>>,
        stats: Arc<CoreStats>,
    ) -> Io<H> {
        Io {
            core_id,
            // Reserved up front: address space only, touched as slots fill,
            // and never moved by a growth.
            conns: Slab::with_capacity(config.max_connections_per_core as usize),
            next_generation: 1,
            sqes: Vec::new(),
            dirty: Vec::new(),
            send_ops: Vec::new(),
            spares: Spares::default(),
            wheel: TimerWheel::new(4096),
            now: 0,
            closed: Vec::new(),
            outboxes,
            stats,
            compressors: Compressors::new(ringhub_proto::CompressionPolicy::default()),
            scratch: Vec::new(),
            inflater: Inflater::new(false),
            inflated: Vec::new(),
            shutting_down: false,
            http: HashMap::new(),
            open: None,
            open_buf: BytesMut::new(),
            bgids: Vec::new(),
            resumed: Vec::new(),
            watches: Vec::new(),
            wake_request: None,
            alarm: None,
            config,
        }
    }

    /// Inserts a connection from `peer` accepted into fixed slot `fd` of
    /// lane `lane`.
    pub(crate) fn insert(&mut self, lane: u8, fd: u32, peer: Option<SocketAddr>) -> u32 {
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & GEN_MASK;
        let conn = Conn::new(lane, fd, generation, self.now);
        let index = self.conns.insert(conn) as u32;
        self.http.insert(index, HttpPhase { peer, served: 0 });
        index
    }

    /// The address of `id`'s peer, while it is in its HTTP phase.
    pub(crate) fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        let c = self.conns.get(id.index as usize)?;
        if id.core != self.core_id || c.generation != id.generation {
            return None;
        }
        self.http.get(&id.index)?.peer
    }

    /// Wakes the core whose main ring is `ring` with a MSG_RING from ours:
    /// it goes out with this turn's submit, no syscall of its own.
    pub(crate) fn wake_core(&mut self, ring: std::os::fd::RawFd) {
        let sqe = opcode::MsgRingData::new(
            io_uring::types::Fd(ring),
            0,
            Token::ring(crate::token::RingOp::Mail),
            None,
        )
        .build()
        .user_data(Token::ring(crate::token::RingOp::Cancel));
        self.push(0, sqe);
    }

    /// Arms the multishot readiness poll of the handler's watch `key`.
    pub(crate) fn arm_watch(&mut self, key: u16, fd: std::os::fd::RawFd) {
        let sqe = opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(Token::watch(key));
        self.push(0, sqe);
    }

    /// Queues a submission for lane `lane`.
    pub(crate) fn push(&mut self, lane: u8, sqe: squeue::Entry) {
        self.sqes[usize::from(lane)].push(sqe);
    }

    pub(crate) fn id(&self, index: u32) -> ConnId {
        let generation = self.conns.get(index as usize).map_or(0, |c| c.generation);
        ConnId {
            core: self.core_id,
            index,
            generation,
        }
    }

    /// The connection `id` names, if it still exists on this core.
    pub(crate) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn<H::State>> {
        if id.core != self.core_id {
            return None;
        }
        self.conns
            .get_mut(id.index as usize)
            .filter(|c| c.generation == id.generation)
    }

    pub(crate) fn token(&self, op: ConnOp, index: u32) -> u64 {
        let generation = self.conns.get(index as usize).map_or(0, |c| c.generation);
        Token::conn(op, index, generation)
    }

    /// Arms (or re-arms) the connection's timer at `at`.
    pub(crate) fn arm_timer(&mut self, index: u32, at: Tick) {
        let key = self.token(ConnOp::Recv, index);
        let at = self.wheel.schedule(key, at);
        if let Some(c) = self.conns.get_mut(index as usize) {
            c.armed_at = at;
        }
    }

    /// Arms the multishot receive of `index`, from its lane's buffer pool.
    pub(crate) fn arm_recv(&mut self, index: u32) {
        let token = self.token(ConnOp::Recv, index);
        let Some(c) = self.conns.get_mut(index as usize) else {
            return;
        };
        if c.has(flag::RECV_ARMED) || c.has(flag::PAUSED) || c.phase == Phase::Gone {
            return;
        }
        c.set(flag::RECV_ARMED);
        c.inflight += 1;
        let bgid = self.bgids[usize::from(c.lane)];
        let sqe = opcode::RecvMulti::new(Fixed(c.fd), bgid)
            .build()
            .user_data(token);
        let lane = c.lane;
        self.push(lane, sqe);
    }

    /// Stops receiving for `id` (cancels its multishot receive) until
    /// [`Io::resume_reading`]; only an open connection is paused. Frames
    /// already received and not yet handled wait in its leftover.
    pub(crate) fn pause_reading(&mut self, id: ConnId) {
        let recv = self.token(ConnOp::Recv, id.index);
        let cancel = self.token(ConnOp::Cancel, id.index);
        let Some(c) = self.conn_mut(id) else {
            return;
        };
        if c.phase != Phase::Open || c.has(flag::PAUSED) {
            return;
        }
        c.set(flag::PAUSED);
        if c.has(flag::RECV_ARMED) {
            // The receive completes with ECANCELED and is not re-armed.
            c.inflight += 1;
            let lane = c.lane;
            let sqe = opcode::AsyncCancel::new(recv).build().user_data(cancel);
            self.push(lane, sqe);
        }
    }

    /// Receives for `id` again after [`Io::pause_reading`].
    pub(crate) fn resume_reading(&mut self, id: ConnId) {
        let Some(c) = self.conn_mut(id) else {
            return;
        };
        if !c.has(flag::PAUSED) {
            return;
        }
        c.clear(flag::PAUSED);
        if !c.leftover.is_empty() {
            self.resumed.push(id.index);
        }
        self.arm_recv(id.index);
    }

    pub(crate) fn mark_dirty(&mut self, index: u32) {
        if let Some(c) = self.conns.get_mut(index as usize)
            && !c.has(flag::DIRTY)
        {
            c.set(flag::DIRTY);
            self.dirty.push(index);
        }
    }

    /// Queues `bytes` for an open connection, closing it as a slow consumer
    /// if its queue would pass the limit.
    pub(crate) fn enqueue(&mut self, index: u32, bytes: Bytes) -> Result<(), SendError> {
        self.seal();
        let limit = self.config.send_queue_limit;
        let Some(c) = self.conns.get_mut(index as usize) else {
            return Err(SendError::Closed);
        };
        if c.phase != Phase::Open {
            return Err(SendError::Closed);
        }
        if c.sendq.push(bytes, limit, &mut self.spares).is_err() {
            return Err(self.overflow(index));
        }
        CoreStats::add(&self.stats.frames_out, 1);
        self.mark_dirty(index);
        Ok(())
    }

    /// Closes a slow consumer whose queue would pass the limit.
    fn overflow(&mut self, index: u32) -> SendError {
        CoreStats::add(&self.stats.slow_consumers, 1);
        let id = self.id(index);
        let code = self.config.slow_consumer_code;
        self.close_with(id, code, "send queue overflow", CloseReason::SlowConsumer);
        SendError::SlowConsumer
    }

    /// Queues one frame for this connection alone, encoded into the core's
    /// open buffer: consecutive frames for one connection (the replies to
    /// everything one read brought) share one allocation and go out in one
    /// plain `send`.
    fn enqueue_frame(
        &mut self,
        index: u32,
        head: FrameHead,
        payload: &[u8],
    ) -> Result<(), SendError> {
        if self.open.is_some_and(|i| i != index) {
            self.seal();
        }
        let limit = self.config.send_queue_limit;
        let header = encode_header(head, payload.len());
        let len = header.len() + payload.len();
        let Some(c) = self.conns.get_mut(index as usize) else {
            return Err(SendError::Closed);
        };
        if c.phase != Phase::Open {
            return Err(SendError::Closed);
        }
        let open = if self.open == Some(index) {
            self.open_buf.len()
        } else {
            0
        };
        if crate::sendq::overflows(c.sendq.queued() + open, len, limit) {
            self.seal();
            return Err(self.overflow(index));
        }
        if self.open_buf.capacity() - self.open_buf.len() < len {
            self.open_buf.reserve(len.max(OPEN_CAPACITY));
        }
        self.open = Some(index);
        self.open_buf.put_slice(&header);
        self.open_buf.put_slice(payload);
        CoreStats::add(&self.stats.frames_out, 1);
        self.mark_dirty(index);
        Ok(())
    }

    /// Moves the open buffer into its connection's send queue. Everything
    /// else that touches a send queue calls this first, so bytes stay in
    /// the order they were queued.
    ///
    /// The bytes leave as a slice of the open buffer, whose spare room the
    /// next connection's frames use; a short run in a mostly empty buffer is
    /// copied out instead, so a chunk waiting behind a slow reader never
    /// pins much more memory than it holds.
    pub(crate) fn seal(&mut self) {
        let Some(index) = self.open.take() else {
            return;
        };
        let buf = &mut self.open_buf;
        let bytes = if buf.capacity() > 2 * buf.len() + 64 {
            let bytes = Bytes::copy_from_slice(buf);
            buf.clear();
            bytes
        } else {
            buf.split().freeze()
        };
        if let Some(c) = self.conns.get_mut(index as usize)
            && c.phase != Phase::Gone
        {
            c.sendq.push_unbounded(bytes, &mut self.spares);
        }
    }

    /// Queues bytes regardless of the limit (handshake replies, control frames).
    pub(crate) fn enqueue_unbounded(&mut self, index: u32, bytes: Bytes) {
        self.seal();
        if let Some(c) = self.conns.get_mut(index as usize)
            && c.phase != Phase::Gone
        {
            c.sendq.push_unbounded(bytes, &mut self.spares);
            self.mark_dirty(index);
        }
    }

    /// Sends one data message to one connection.
    pub(crate) fn send_data(
        &mut self,
        id: ConnId,
        text: bool,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let Some(c) = self.conn_mut(id).filter(|c| c.phase == Phase::Open) else {
            return Err(SendError::Closed);
        };
        if c.has(flag::DEFLATE) {
            let bits = c.window_bits;
            if let Some(frame) = self.compress_frame(text, payload, bits) {
                return self.enqueue(id.index, frame);
            }
        }
        let opcode = if text { Opcode::Text } else { Opcode::Binary };
        self.enqueue_frame(id.index, FrameHead::new(opcode), payload)
    }

    /// Compresses `payload` into a frame with RSV1 set, if that pays.
    fn compress_frame(&mut self, text: bool, payload: &[u8], window_bits: u8) -> Option<Bytes> {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: window_bits,
            announce_server_window: false,
        };
        self.scratch.clear();
        match self
            .compressors
            .compress(&params, payload, &mut self.scratch)
        {
            Ok(Some(_)) => Some(encode_data_frame(text, true, &self.scratch)),
            _ => None,
        }
    }

    /// Sends a shared frame, compressing it once per core for deflate peers.
    pub(crate) fn send_shared(
        &mut self,
        id: ConnId,
        frame: &mut SharedFrame,
    ) -> Result<(), SendError> {
        let Some(c) = self.conn_mut(id).filter(|c| c.phase == Phase::Open) else {
            return Err(SendError::Closed);
        };
        let bytes = if c.has(flag::DEFLATE) {
            let bits = c.window_bits;
            if bits != 15 {
                // A client that limited our window gets its own compression.
                self.compress_frame(frame.text, &frame.payload, bits)
                    .unwrap_or_else(|| frame.plain.clone())
            } else {
                if !frame.deflate_done {
                    frame.deflated = self.compress_frame(frame.text, &frame.payload, 15);
                    frame.deflate_done = true;
                }
                frame
                    .deflated
                    .clone()
                    .unwrap_or_else(|| frame.plain.clone())
            }
        } else {
            frame.plain.clone()
        };
        self.enqueue(id.index, bytes)
    }

    /// Starts a close handshake from our side: queue the close frame, stop
    /// taking messages, and give the peer `close_timeout` to answer.
    pub(crate) fn close_with(
        &mut self,
        id: ConnId,
        code: CloseCode,
        reason: &str,
        why: CloseReason,
    ) {
        let close_timeout = self.config.ticks(self.config.close_timeout);
        let now = self.now;
        let Some(c) = self.conn_mut(id) else {
            return;
        };
        match c.phase {
            Phase::Open => {}
            Phase::Handshake => {
                self.teardown(id.index);
                return;
            }
            Phase::Closing | Phase::Gone => return,
        }
        c.phase = Phase::Closing;
        c.mark = now;
        c.set(flag::CLOSE_SENT);
        if c.has(flag::CLOSE_RECEIVED) {
            c.set(flag::CLOSE_AFTER_FLUSH);
        }
        let frame = encode_control(Opcode::Close, ClosePayload::new(code, reason).as_bytes());
        self.closed.push((id, why));
        self.enqueue_unbounded(id.index, frame);
        self.arm_timer(id.index, now + close_timeout);
        // The close handshake needs the peer's answer read.
        self.resume_reading(id);
    }

    /// Cancels the connection's operations, then closes its descriptor once
    /// none is in flight; the slot is freed when the close completes.
    ///
    /// The close must come last: it frees the fixed-file slot at once, and
    /// the next accept may take it, while an operation still in flight (one
    /// the kernel punted to a worker resolves its fixed file only when it
    /// runs) would then act on the new connection's socket: a late
    /// `shutdown` half-closed a client just upgraded, a late send would
    /// write to the wrong peer.
    pub(crate) fn teardown(&mut self, index: u32) {
        self.seal();
        let cancel = self.token(ConnOp::Cancel, index);
        let id = self.id(index);
        let Some(c) = self.conns.get_mut(index as usize) else {
            return;
        };
        if c.phase == Phase::Gone {
            return;
        }
        let was_open = c.phase == Phase::Open;
        c.phase = Phase::Gone;
        if was_open {
            self.closed.push((id, CloseReason::Vanished));
        }
        if c.inflight == 0 {
            self.close_fd(index);
            return;
        }
        let (fd, lane) = (c.fd, c.lane);
        c.inflight += 1;
        self.push(
            lane,
            opcode::AsyncCancel2::new(CancelBuilder::fd(Fixed(fd)).all())
                .build()
                .user_data(cancel),
        );
    }

    /// Submits the close of a torn-down connection's descriptor.
    fn close_fd(&mut self, index: u32) {
        let close = self.token(ConnOp::Close, index);
        let Some(c) = self.conns.get_mut(index as usize) else {
            return;
        };
        c.set(flag::FD_CLOSING);
        c.inflight += 1;
        let (fd, lane) = (c.fd, c.lane);
        self.push(lane, opcode::Close::new(Fixed(fd)).build().user_data(close));
    }

    /// The last byte is out: half-close, then read and drop until the peer's
    /// FIN or the close timeout. Closing a socket with unread input makes
    /// the kernel send a reset, which can destroy the close frame (or HTTP
    /// error) still in flight to the peer.
    pub(crate) fn linger(&mut self, index: u32) {
        let token = self.token(ConnOp::Shutdown, index);
        let now = self.now;
        let close_timeout = self.config.ticks(self.config.close_timeout);
        let Some(c) = self.conns.get_mut(index as usize) else {
            return;
        };
        if c.phase == Phase::Gone || c.has(flag::LINGER) {
            return;
        }
        if !c.has(flag::RECV_ARMED) {
            self.teardown(index);
            return;
        }
        c.set(flag::LINGER);
        c.phase = Phase::Closing;
        c.mark = now;
        c.inflight += 1;
        let (fd, lane) = (c.fd, c.lane);
        self.push(
            lane,
            opcode::Shutdown::new(Fixed(fd), libc::SHUT_WR)
                .build()
                .user_data(token),
        );
        self.arm_timer(index, now + close_timeout);
    }

    /// Once nothing of a torn-down `index` is in flight: closes its
    /// descriptor, or, that done, frees its slot. Returns the lane whose
    /// file table it left.
    pub(crate) fn reap(&mut self, index: u32) -> Option<u8> {
        match self.conns.get(index as usize) {
            Some(c) if c.phase == Phase::Gone && c.inflight == 0 => {
                if !c.has(flag::FD_CLOSING) {
                    self.close_fd(index);
                    return None;
                }
            }
            _ => return None,
        }
        let mut c = self.conns.remove(index as usize);
        self.http.remove(&index);
        if let Some(op) = c.send_op.take()
            && self.send_ops.len() < SEND_OP_POOL
        {
            self.send_ops.push(op);
        }
        c.sendq.clear();
        Some(c.lane)
    }

    /// Submits one sendmsg for every connection with queued bytes and none
    /// in flight; closes connections whose final flush is done.
    pub(crate) fn flush(&mut self) {
        self.seal();
        let mut dirty = std::mem::take(&mut self.dirty);
        for index in dirty.drain(..) {
            let token = self.token(ConnOp::Send, index);
            let Some(c) = self.conns.get_mut(index as usize) else {
                continue;
            };
            c.clear(flag::DIRTY);
            if c.phase == Phase::Gone || c.has(flag::SENDING) {
                continue;
            }
            if c.sendq.is_empty() {
                if c.has(flag::CLOSE_AFTER_FLUSH) {
                    self.linger(index);
                }
                continue;
            }
            let sqe = if let Some(chunk) = c.sendq.single() {
                // One chunk (the common case: a handshake reply, one frame)
                // needs no msghdr: the chunk itself stays queued until the
                // completion.
                opcode::Send::new(Fixed(c.fd), chunk.as_ptr(), chunk.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(token)
            } else {
                let mut op = self.send_ops.pop().unwrap_or_else(SendOp::new);
                let n = c.sendq.fill_iovecs(&mut op.iovs[..MAX_IOVECS]);
                op.msg.msg_iov = op.iovs.as_mut_ptr();
                op.msg.msg_iovlen = n;
                let sqe = opcode::SendMsg::new(Fixed(c.fd), &raw const op.msg)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
                    .user_data(token);
                c.send_op = Some(op);
                sqe
            };
            c.set(flag::SENDING);
            c.inflight += 1;
            let lane = c.lane;
            self.push(lane, sqe);
            CoreStats::add(&self.stats.sends, 1);
        }
        // Keep the allocation for the next turn.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// A sendmsg completed with `res`.
    pub(crate) fn on_send(&mut self, index: u32, res: i32) {
        let Some(c) = self.conns.get_mut(index as usize) else {
            return;
        };
        c.inflight = c.inflight.saturating_sub(1);
        c.clear(flag::SENDING);
        if let Some(op) = c.send_op.take()
            && self.send_ops.len() < SEND_OP_POOL
        {
            self.send_ops.push(op);
        }
        if c.phase == Phase::Gone {
            return;
        }
        if res > 0 {
            c.sendq.consume(res as usize, &mut self.spares);
            self.mark_dirty(index);
        } else {
            self.teardown(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{Ctx, Decision, Message};

    struct Nothing;

    impl Handler for Nothing {
        type State = ();
        type Post = ();
        fn on_open(
            &mut self,
            _: &mut Ctx<'_, Self>,
            _: ConnId,
            _: &ringhub_proto::WebSocketUpgrade<'_, '_>,
        ) -> Decision {
            Decision::accept()
        }
        fn on_message(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: Message<'_>) {}
    }

    fn io_with_open_conns(n: usize) -> (Io<Nothing>, Vec<ConnId>) {
        let mut io = Io::new(
            0,
            Arc::new(Config::default()),
            Vec::new(),
            Arc::new(CoreStats::default()),
        );
        io.sqes = vec![Vec::new()];
        let ids = (0..n)
            .map(|i| {
                let index = io.insert(0, i as u32, None);
                io.conns[index as usize].phase = Phase::Open;
                io.id(index)
            })
            .collect();
        (io, ids)
    }

    /// The bytes queued for `id`, as one vector per chunk.
    fn chunks(io: &Io<Nothing>, id: ConnId) -> Vec<Vec<u8>> {
        let q = &io.conns[id.index as usize].sendq;
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 8];
        let n = q.fill_iovecs(&mut iovs);
        iovs[..n]
            .iter()
            .map(|iov| {
                // SAFETY: the iovecs point into chunks the queue still holds.
                unsafe { std::slice::from_raw_parts(iov.iov_base.cast::<u8>(), iov.iov_len) }
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn replies_to_one_connection_become_one_chunk_in_order() {
        let (mut io, ids) = io_with_open_conns(2);
        let (a, b) = (ids[0], ids[1]);
        io.send_data(a, true, b"one").unwrap();
        io.send_data(a, true, b"two").unwrap();
        // A frame for another connection seals a's run.
        io.send_data(b, false, b"x").unwrap();
        // A shared frame for b goes behind b's own run.
        io.send_shared(b, &mut SharedFrame::text("shared")).unwrap();
        io.send_data(a, true, b"three").unwrap();
        io.seal();
        assert_eq!(
            chunks(&io, a),
            [
                b"\x81\x03one\x81\x03two".to_vec(),
                b"\x81\x05three".to_vec()
            ]
        );
        assert_eq!(
            chunks(&io, b),
            [b"\x82\x01x".to_vec(), b"\x81\x06shared".to_vec()]
        );
        assert_eq!(
            io.stats
                .frames_out
                .load(std::sync::atomic::Ordering::Relaxed),
            5
        );
    }

    #[test]
    fn a_short_run_is_copied_out_and_the_arena_kept() {
        let (mut io, ids) = io_with_open_conns(1);
        io.send_data(ids[0], true, b"tiny").unwrap();
        io.seal();
        assert!(io.open_buf.is_empty());
        assert!(
            io.open_buf.capacity() >= OPEN_CAPACITY,
            "the arena stays for the next run"
        );
        // A run that fills most of the arena leaves as a slice of it.
        let payload = [b'p'; 1500];
        io.send_data(ids[0], false, &payload).unwrap();
        io.seal();
        assert!(io.open_buf.capacity() < OPEN_CAPACITY, "handed over");
        assert_eq!(chunks(&io, ids[0]).len(), 2);
    }

    #[test]
    fn a_run_past_the_limit_closes_the_slow_consumer() {
        let (mut io, ids) = io_with_open_conns(1);
        let limit = io.config.send_queue_limit;
        let big = vec![0u8; limit / 2];
        io.send_data(ids[0], false, &big).unwrap();
        assert_eq!(
            io.send_data(ids[0], false, &big),
            Err(SendError::SlowConsumer),
            "the open run counts toward the limit"
        );
        assert_eq!(io.conns[ids[0].index as usize].phase, Phase::Closing);
    }
}
