//! Token buckets: per connection for messages, per core for handshakes.
//!
//! A connection's bucket is 8 bytes, since it lives in every connection;
//! the rate and burst are shared settings passed in on each call.

/// A token bucket in thousandths of a token, refilled lazily from a
/// millisecond clock the caller supplies (sans-IO: no clock inside).
/// `Default` is an empty bucket at time 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenBucket {
    milli_tokens: u32,
    last_ms: u32,
}

/// Rate (tokens per second) and burst (bucket size) of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_second: u32,
    burst: u32,
}

impl Rate {
    /// Both are clamped to at least 1 and the burst to at most 4 million,
    /// so the arithmetic below stays in u32/u64 without overflow.
    pub fn new(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: per_second.max(1),
            burst: burst.clamp(1, 4_000_000),
        }
    }
}

impl TokenBucket {
    /// A full bucket at time `now_ms`.
    pub fn full(rate: Rate, now_ms: u32) -> TokenBucket {
        TokenBucket {
            milli_tokens: rate.burst * 1000,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one. `now_ms` may wrap (u32 milliseconds
    /// is 49 days); time that goes backwards adds nothing.
    pub fn try_take(&mut self, rate: Rate, now_ms: u32) -> bool {
        let elapsed = now_ms.wrapping_sub(self.last_ms);
        // A "negative" elapsed (clock from another core, or wrap confusion)
        // shows up as a huge value: treat anything over ~24 days as zero.
        let elapsed = if elapsed > u32::MAX / 2 { 0 } else { elapsed };
        let cap = u64::from(rate.burst) * 1000;
        let refill = u64::from(elapsed) * u64::from(rate.per_second);
        let tokens = (u64::from(self.milli_tokens) + refill).min(cap);
        if elapsed > 0 {
            self.last_ms = now_ms;
        }
        if tokens >= 1000 {
            self.milli_tokens = (tokens - 1000) as u32;
            true
        } else {
            self.milli_tokens = tokens as u32;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_rate() {
        let rate = Rate::new(10, 5);
        let mut b = TokenBucket::full(rate, 0);
        assert_eq!((0..10).filter(|_| b.try_take(rate, 0)).count(), 5);
        // 10/s: one token per 100 ms.
        assert!(!b.try_take(rate, 99));
        assert!(b.try_take(rate, 100));
        assert!(!b.try_take(rate, 150));
        // A long pause refills only up to the burst.
        assert_eq!((0..10).filter(|_| b.try_take(rate, 100_000)).count(), 5);
    }

    #[test]
    fn partial_refills_accumulate() {
        let rate = Rate::new(1, 1);
        let mut b = TokenBucket::full(rate, 0);
        assert!(b.try_take(rate, 0));
        for t in (100..1000).step_by(100) {
            assert!(!b.try_take(rate, t), "at {t}");
        }
        assert!(b.try_take(rate, 1000));
    }

    #[test]
    fn clock_wrap_and_backwards_time() {
        let rate = Rate::new(1000, 1);
        let mut b = TokenBucket::full(rate, u32::MAX - 1);
        assert!(b.try_take(rate, u32::MAX - 1));
        assert!(b.try_take(rate, 1), "2 ms across the wrap refills");
        assert!(!b.try_take(rate, 0), "time going back adds nothing");
    }

    #[test]
    fn state_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<TokenBucket>(), 8);
    }
}
