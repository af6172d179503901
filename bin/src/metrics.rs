//! Counters of the server, written by one core each and summed on read, so
//! the hot path never contends on a shared cache line. Issue #8 turns them
//! into `/metrics` and CloudWatch; for now `/readyz` and the tests read them.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[doc = $doc:literal] $name:ident,)*) => {
        /// One core's counters; only that core writes them.
        #[derive(Debug, Default)]
        pub struct Counters {
            $(#[doc = $doc] pub $name: AtomicU64,)*
        }

        /// Counters summed over cores.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct Totals {
            $(#[doc = $doc] pub $name: u64,)*
        }

        impl Totals {
            /// Sums `cores`.
            pub fn sum<'a>(cores: impl IntoIterator<Item = &'a Counters>) -> Totals {
                let mut t = Totals::default();
                for c in cores {
                    $(t.$name += c.$name.load(Ordering::Relaxed);)*
                }
                t
            }
        }
    };
}

counters! {
    /// WebSocket connections admitted (welcome sent or about to be).
    connections_opened,
    /// Connections that closed after being admitted.
    connections_closed,
    /// Closes that were not a clean close handshake (timeouts, resets, slow consumers).
    unexpected_disconnects,
    /// Upgrades refused because the process holds its maximum.
    rejected_capacity,
    /// Upgrades refused because their source holds its maximum.
    rejected_per_ip,
    /// Upgrades refused by the handshake rate limit.
    rejected_handshake_rate,
    /// Upgrades refused for a missing or bad token.
    rejected_auth,
    /// Upgrades refused for their `Origin`.
    rejected_origin,
    /// Client messages received.
    messages_in,
    /// Messages handed to local connections.
    messages_delivered,
    /// `error` frames sent.
    errors_sent,
    /// Messages refused by a connection's rate limit.
    rate_limited,
    /// Connections closed with 1008 for repeated bad input.
    abuse_closes,
    /// Remote deliveries that failed (Redis unreachable or a publish refused).
    remote_failures,
    /// Remote deliveries published again after a failure during a failover.
    remote_retries,
    /// Deliveries to another core refused because its mailbox was full.
    mailbox_full,
    /// Connections paused (not read) because Redis was behind.
    senders_paused,
    /// `latency` reports received.
    latency_reports,
    /// Sum of reported latencies, in microseconds.
    latency_micros_sum,
    /// Messages accepted by `POST /api/publish`.
    api_publishes,
    /// Closes by the peer's close frame.
    closed_peer,
    /// Closes the server started (abuse, policy).
    closed_local,
    /// Closes for a protocol error.
    closed_protocol,
    /// Closes of slow consumers (send queue full).
    closed_slow_consumer,
    /// Closes by the handshake or idle timer.
    closed_timeout,
    /// Closes by a server shutdown (1001).
    closed_shutdown,
    /// Connections that ended without a close frame.
    closed_vanished,
    /// Bytes of client messages received.
    bytes_in,
    /// Bytes of message frames queued for local recipients.
    bytes_out,
    /// Frames a local recipient could not take (queue full or closing).
    dropped_slow_consumer,
    /// Commands sent to Redis.
    redis_commands,
    /// Redis commands that failed.
    redis_errors,
}

impl Counters {
    /// Adds to a counter this core owns (a plain store: one writer).
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}
