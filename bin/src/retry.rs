//! Bounded retry of publishes during a failover: a cluster master dying
//! (until its replica is promoted) or a standalone Redis restarting.
//!
//! Only failures that say the command did not run, or that its node went
//! away, are retried: no connection, the connection lost before the reply,
//! no reply in time, a slot with no master, `CLUSTERDOWN`, `TRYAGAIN`,
//! `MASTERDOWN`, `LOADING`. A lost connection may, rarely, have delivered
//! the publish before it broke; a retry then delivers it twice, which we
//! prefer to losing it (a node that died took its subscribers with it, so
//! they never saw the first copy). Past the bound, the sender hears
//! `remote_unavailable`; either way the outcome is counted.
//!
//! A publish to a server's channel that reached no subscriber is retried
//! within the same bound: the server may be resubscribing at a promoted
//! replica. If it is dead instead, its users are offline: once the bound is
//! spent, the sender is acked, as for any offline user.
//!
//! The bound: 5 s, which covers a replica promotion with a
//! `cluster-node-timeout` of 2 s (failure detection, the election, this
//! server's reconnect and the receiver's resubscription: 4-5 s measured on
//! the loopback cluster of the tests) or a restart of a local Redis; and at most
//! [`RetryPolicy::max_bytes`] of payloads held, so memory stays bounded
//! whatever the message rate.

use std::time::{Duration, Instant};

/// When to try a failed publish again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// No attempt starts later than this after the first.
    pub window: Duration,
    /// Attempts after the first.
    pub max_retries: u32,
    /// The wait before the first retry; it doubles up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Payload bytes that may wait for a retry at once; past it a failure
    /// is reported at once.
    pub max_bytes: usize,
}

impl Default for RetryPolicy {
    /// Covers a replica promotion with a 2 s cluster node timeout, and a
    /// local Redis restart.
    fn default() -> Self {
        RetryPolicy {
            window: Duration::from_secs(5),
            max_retries: 16,
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(400),
            max_bytes: 64 << 20,
        }
    }
}

impl RetryPolicy {
    /// The default policy with a retry window of `window` (zero: publishes
    /// are not retried). Tries scale with the window, so the backoff's
    /// ceiling, not the count, is what spaces them.
    pub fn within(window: Duration) -> RetryPolicy {
        let default = RetryPolicy::default();
        let spaced = window.as_millis() / default.max_delay.as_millis().max(1);
        RetryPolicy {
            window,
            max_retries: if window.is_zero() {
                0
            } else {
                (spaced as u32).saturating_add(8).max(default.max_retries)
            },
            ..default
        }
    }

    /// When retry number `retries + 1` of a publish first sent at `first`
    /// should go, or `None` if the budget is spent.
    pub fn next(&self, retries: u32, first: Instant, now: Instant) -> Option<Instant> {
        if retries >= self.max_retries {
            return None;
        }
        let delay = self
            .first_delay
            .saturating_mul(1 << retries.min(16))
            .min(self.max_delay);
        let at = now + delay;
        (at <= first + self.window).then_some(at)
    }
}

/// Whether a failed publish may succeed if sent again soon.
pub fn retryable(error: &redis_lite::Error) -> bool {
    use redis_lite::Error as E;
    match error {
        E::NotConnected { .. }
        | E::ConnectionLost { .. }
        | E::Timeout { .. }
        | E::SlotUnassigned(_)
        | E::TooManyRedirects(_) => true,
        E::Server(e) => retryable_reply(e.code()),
        _ => false,
    }
}

/// Whether an error reply with this code says "not now, soon".
fn retryable_reply(code: &str) -> bool {
    matches!(code, "CLUSTERDOWN" | "TRYAGAIN" | "MASTERDOWN" | "LOADING")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_stop_at_the_window() {
        let policy = RetryPolicy::default();
        let first = Instant::now();
        let mut now = first;
        let mut waits = Vec::new();
        let mut retries = 0;
        while let Some(at) = policy.next(retries, first, now) {
            assert!(at > now);
            waits.push(at - now);
            now = at;
            retries += 1;
        }
        assert!(now <= first + policy.window);
        assert_eq!(waits[0], policy.first_delay);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= policy.max_delay));
        assert!(
            retries >= 8,
            "a failover of ~3 s gets several tries: {waits:?}"
        );
    }

    #[test]
    fn the_retry_count_is_bounded_too() {
        let policy = RetryPolicy {
            window: Duration::from_secs(3600),
            ..RetryPolicy::default()
        };
        let first = Instant::now();
        assert!(policy.next(policy.max_retries - 1, first, first).is_some());
        assert!(policy.next(policy.max_retries, first, first).is_none());
    }

    #[test]
    fn a_configured_window_is_used_whole_and_zero_means_no_retry() {
        let first = Instant::now();
        let last_try = |policy: &RetryPolicy| {
            let (mut now, mut retries) = (first, 0);
            while let Some(at) = policy.next(retries, first, now) {
                now = at;
                retries += 1;
            }
            now - first
        };
        let long = RetryPolicy::within(Duration::from_secs(20));
        assert!(
            last_try(&long) > Duration::from_secs(19),
            "tries reach the end of a 20 s window, not just 16 of them"
        );
        assert_eq!(last_try(&RetryPolicy::within(Duration::from_secs(5))), {
            last_try(&RetryPolicy::default())
        });
        let none = RetryPolicy::within(Duration::ZERO);
        assert_eq!(none.next(0, first, first), None);
    }

    #[test]
    fn only_failures_of_a_failover_are_retried() {
        for code in ["CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING"] {
            assert!(retryable_reply(code));
        }
        for code in ["ERR", "NOPERM", "WRONGTYPE", "MOVED"] {
            assert!(!retryable_reply(code));
        }
        assert!(retryable(&redis_lite::Error::SlotUnassigned(7)));
        assert!(retryable(&redis_lite::Error::ConnectionLost {
            addr: "127.0.0.1:7000".into(),
            reason: "reset".into(),
        }));
        assert!(!retryable(&redis_lite::Error::Shutdown));
    }
}
