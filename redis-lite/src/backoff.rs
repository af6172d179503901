//! Reconnect delays: capped exponential backoff with jitter. The randomness is
//! seeded by the driver so the core stays deterministic under test.

use std::time::Duration;

/// A small xorshift64* generator; good enough to spread reconnects apart.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from the driver's seed (any value; zero is remapped).
    pub fn new(seed: u64) -> Self {
        // splitmix64 spreads nearby seeds (pids, clocks) over the state space.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)).max(1))
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// The delay before reconnect attempt `n`: `min(cap, base * 2^n)`, of which a
/// random half is taken off ("equal jitter"), so that many clients that lost
/// the same node do not come back in lockstep, and no delay is ever zero.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; each call doubles the next one.
    pub fn next_delay(&mut self, rng: &mut Rng) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX));
        let ceiling = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let jitter = rng.below(u64::try_from(half.as_micros()).unwrap_or(u64::MAX) + 1);
        half + Duration::from_micros(jitter)
    }

    /// Call after a connection came up: the next failure starts from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_jitter() {
        let mut rng = Rng::new(7);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<_> = (0..10).map(|_| b.next_delay(&mut rng)).collect();
        for (n, d) in delays.iter().enumerate() {
            let ceiling =
                (Duration::from_millis(100) * 2u32.pow(n as u32)).min(Duration::from_secs(2));
            assert!(
                *d >= ceiling / 2 && *d <= ceiling,
                "attempt {n}: {d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        assert!(delays[9] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_clients() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..20 {
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
            b.next_delay(&mut Rng::new(seed));
            seen.insert(b.next_delay(&mut Rng::new(seed)));
        }
        assert!(
            seen.len() > 10,
            "different seeds should give different delays"
        );
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut rng = Rng::new(1);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..200 {
            assert!(b.next_delay(&mut rng) <= Duration::from_secs(30));
        }
    }
}
