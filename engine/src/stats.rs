//! Counters a core publishes for the rest of the process (metrics, tests),
//! as relaxed atomics written only by their core.

use std::sync::atomic::{AtomicU64, Ordering};

/// One core's counters.
#[derive(Debug, Default)]
pub struct CoreStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections currently in the slab.
    pub open: AtomicU64,
    /// WebSocket handshakes completed.
    pub upgraded: AtomicU64,
    /// Handshakes refused (bad request or the handler said no).
    pub rejected: AtomicU64,
    /// Plain HTTP requests the handler answered.
    pub http_requests: AtomicU64,
    /// Messages received.
    pub messages_in: AtomicU64,
    /// Frames queued for sending.
    pub frames_out: AtomicU64,
    /// Send operations submitted (frames_out / sends: frames per syscall).
    pub sends: AtomicU64,
    /// Receive completions that carried bytes.
    pub recvs: AtomicU64,
    /// Loop turns (one `io_uring_enter` each on the main ring).
    pub turns: AtomicU64,
    /// Connections closed for overflowing their send queue.
    pub slow_consumers: AtomicU64,
    /// Connections closed for a protocol error.
    pub protocol_errors: AtomicU64,
    /// Connections closed by the handshake or idle timers.
    pub timeouts: AtomicU64,
    /// Accepts the kernel failed (e.g. -ENFILE when a file table is full).
    pub accept_errors: AtomicU64,
    /// Posts refused because a mailbox was full.
    pub mailbox_full: AtomicU64,
}

impl CoreStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }
}

/// A plain copy of counters, summed over cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub accepted: u64,
    pub open: u64,
    pub upgraded: u64,
    pub rejected: u64,
    pub http_requests: u64,
    pub messages_in: u64,
    pub frames_out: u64,
    pub sends: u64,
    pub recvs: u64,
    pub turns: u64,
    pub slow_consumers: u64,
    pub protocol_errors: u64,
    pub timeouts: u64,
    pub accept_errors: u64,
    pub mailbox_full: u64,
}

impl StatsSnapshot {
    /// Sums the counters of `cores`.
    pub fn sum<'a>(cores: impl IntoIterator<Item = &'a CoreStats>) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for c in cores {
            s.accepted += get(&c.accepted);
            s.open += get(&c.open);
            s.upgraded += get(&c.upgraded);
            s.rejected += get(&c.rejected);
            s.http_requests += get(&c.http_requests);
            s.messages_in += get(&c.messages_in);
            s.frames_out += get(&c.frames_out);
            s.sends += get(&c.sends);
            s.recvs += get(&c.recvs);
            s.turns += get(&c.turns);
            s.slow_consumers += get(&c.slow_consumers);
            s.protocol_errors += get(&c.protocol_errors);
            s.timeouts += get(&c.timeouts);
            s.accept_errors += get(&c.accept_errors);
            s.mailbox_full += get(&c.mailbox_full);
        }
        s
    }
}
