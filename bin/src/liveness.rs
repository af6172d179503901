//! When a server counts as dead: the timing rules behind pruning.
//!
//! Every server beats (`ZADD servers <now-ms> <id>`) four times per
//! heartbeat period P, and with each beat looks for servers whose last beat
//! is older than P/2. A server killed right after a beat is seen silent by
//! the first scan after P/2, at most P/4 later: pruned within 3P/4 of its
//! last beat, so within one period of being killed, with P/4 to spare for a
//! scan that runs late.
//!
//! A live server is not pruned unless its beats stop for P/4 beyond their
//! schedule (1.25 s with the default 5 s): its relay thread stalled, or its
//! link to Redis broke for that long. Should that happen, it heals within a
//! beat: a beat whose `ZADD` *adds* the server (rather than updating its
//! score) tells it that it was pruned (or that Redis lost its data), and it
//! writes every route of its users again. Scores are each server's wall
//! clock, so clocks must agree (NTP) to well within P/4.
//!
//! A server scans only once its own beats have gone through for
//! [`Liveness::prune_bound`]: when the node holding `servers` fails over or
//! restarts, every score is old at once, and the others need a beat to
//! renew theirs before anyone counts as silent.

use std::time::Duration;

/// Beats, and scans for silent servers, per heartbeat period.
pub const BEATS_PER_PERIOD: u32 = 4;

/// The heartbeat timing of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    period: Duration,
}

impl Liveness {
    pub fn new(period: Duration) -> Liveness {
        Liveness { period }
    }

    /// Time between two beats (and two scans) of this server.
    pub fn beat_every(&self) -> Duration {
        self.period / BEATS_PER_PERIOD
    }

    /// A server whose last beat is older than this is dead.
    pub fn silent_after(&self) -> Duration {
        self.period / 2
    }

    /// The scan's cut-off: beats at or before this time (ms) are older
    /// than [`Liveness::silent_after`].
    pub fn silent_since_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.silent_after().as_millis() as u64 + 1)
    }

    /// The longest from a server's last beat to its prune, given survivors
    /// that scan on schedule.
    pub fn prune_bound(&self) -> Duration {
        self.silent_after() + self.beat_every()
    }

    /// How late a live server's beat may be before it is pruned.
    pub fn tolerance(&self) -> Duration {
        self.silent_after() - self.beat_every()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_server_is_pruned_within_one_period() {
        for secs in [1, 5, 30] {
            let period = Duration::from_secs(secs);
            let l = Liveness::new(period);
            assert!(l.prune_bound() <= period * 3 / 4, "{l:?}");
            assert!(l.tolerance() >= period / 4, "{l:?}");
        }
    }

    /// A survivor scanning every `beat_every` sees a server that beat at
    /// `last` as dead at the first scan past `silent_after`.
    #[test]
    fn scans_find_a_silent_server_in_time_and_spare_a_live_one() {
        let l = Liveness::new(Duration::from_millis(1000));
        let last_beat = 10_000;
        let mut scans = (0..).map(|i| last_beat + 1 + i * 250);
        let pruned_at = scans
            .find(|&now| last_beat <= l.silent_since_ms(now))
            .unwrap();
        assert!(pruned_at - last_beat <= l.prune_bound().as_millis() as u64);
        // A server that beats on time, or up to the tolerance late, stays.
        for late in [0, 100, l.tolerance().as_millis() as u64 - 1] {
            let next_beat = last_beat + 250 + late;
            assert!(last_beat > l.silent_since_ms(next_beat));
        }
    }
}
