//! One connection's state in the core's slab, kept small: an idle open
//! connection owns no buffer (its send queue and leftover bytes are empty
//! collections, which do not allocate).

use ringhub_proto::MessageAssembler;

use crate::sendq::{MAX_IOVECS, SendQueue};
use crate::timer::Tick;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; waiting for the HTTP upgrade request.
    Handshake,
    /// WebSocket open.
    Open,
    /// A close frame was sent or received; waiting for the rest of the close
    /// handshake or for the send queue to drain.
    Closing,
    /// The descriptor is being cancelled and closed; the slot is freed when
    /// the last in-flight operation completes.
    Gone,
}

/// Flag bits of [`Conn::flags`].
pub mod flag {
    /// The multishot receive is armed.
    pub const RECV_ARMED: u16 = 1 << 0;
    /// A sendmsg is in flight.
    pub const SENDING: u16 = 1 << 1;
    /// In the core's dirty list (has bytes to send once nothing is in flight).
    pub const DIRTY: u16 = 1 << 2;
    /// We sent a close frame.
    pub const CLOSE_SENT: u16 = 1 << 3;
    /// The peer sent a close frame.
    pub const CLOSE_RECEIVED: u16 = 1 << 4;
    /// Close the socket once the send queue is empty.
    pub const CLOSE_AFTER_FLUSH: u16 = 1 << 5;
    /// A ping is out and no byte has arrived since.
    pub const PING_OUT: u16 = 1 << 6;
    /// permessage-deflate was negotiated.
    pub const DEFLATE: u16 = 1 << 7;
    /// Half-closed after the last byte went out: reading (and dropping)
    /// until the peer's FIN, so the close never turns into a reset.
    pub const LINGER: u16 = 1 << 8;
    /// The application paused reading (backpressure): no receive is armed
    /// until it resumes.
    pub const PAUSED: u16 = 1 << 9;
    /// The close of the descriptor is submitted: its table slot is freed
    /// when that completes.
    pub const FD_CLOSING: u16 = 1 << 10;
}

/// The memory behind one in-flight `sendmsg`: the header and its iovecs
/// must stay put until the completion arrives, so they live in a box taken
/// from a per-core pool for just that long.
#[derive(Debug)]
pub struct SendOp {
    pub msg: libc::msghdr,
    pub iovs: [libc::iovec; MAX_IOVECS],
}

impl SendOp {
    pub fn new() -> Box<SendOp> {
        Box::new(SendOp {
            // SAFETY: msghdr is plain old data; all-zero is valid (no name, no control).
            msg: unsafe { std::mem::zeroed() },
            iovs: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOVECS],
        })
    }
}

/// A connection owned by one core.
#[derive(Debug)]
pub struct Conn<S> {
    /// Index in its lane's fixed file table.
    pub fd: u32,
    /// The lane (ring) whose file table holds the socket.
    pub lane: u8,
    /// Distinguishes this connection from earlier users of its slab slot.
    pub generation: u32,
    pub phase: Phase,
    pub flags: u16,
    /// Operations whose completions have not arrived yet.
    pub inflight: u8,
    /// permessage-deflate: the server window the client allowed.
    pub window_bits: u8,
    /// The tick this connection's timer entry fires at.
    pub armed_at: Tick,
    /// When the current phase (or outstanding ping) started.
    pub mark: Tick,
    /// The last tick bytes arrived.
    pub last_rx: Tick,
    pub sendq: SendQueue,
    /// Set while a sendmsg is in flight.
    pub send_op: Option<Box<SendOp>>,
    /// Bytes of an incomplete request head or frame, copied out of the
    /// receive buffer; empty (no allocation) otherwise.
    pub leftover: Vec<u8>,
    /// Reassembly of fragmented messages; holds no buffer between messages.
    pub assembler: MessageAssembler,
    /// The application's per-connection state.
    pub state: S,
}

impl<S: Default> Conn<S> {
    pub fn new(lane: u8, fd: u32, generation: u32, now: Tick) -> Conn<S> {
        Conn {
            fd,
            lane,
            generation,
            phase: Phase::Handshake,
            flags: 0,
            inflight: 0,
            window_bits: 15,
            armed_at: 0,
            mark: now,
            last_rx: now,
            sendq: SendQueue::default(),
            send_op: None,
            leftover: Vec::new(),
            assembler: MessageAssembler::new(),
            state: S::default(),
        }
    }
}

impl<S> Conn<S> {
    pub fn has(&self, bit: u16) -> bool {
        self.flags & bit != 0
    }

    pub fn set(&mut self, bit: u16) {
        self.flags |= bit;
    }

    pub fn clear(&mut self, bit: u16) {
        self.flags &= !bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_is_small() {
        let size = std::mem::size_of::<Conn<()>>();
        // The budget is 300 B of user space per idle connection, all included
        // (slab slot, timer entry, the application's state).
        assert!(size <= 128, "Conn<()> grew to {size} bytes");
    }
}
