//! Latency histograms with fixed buckets, written by one thread each and
//! merged on read, like [`crate::metrics::Counters`].
//!
//! Fixed buckets (not HDR) because Prometheus wants fixed `le` bounds
//! anyway, a record is one relaxed load and store, and a merge is an add
//! per bucket. The bounds follow a 1-2.5-5 series from 50 µs to 10 s:
//! fine where delivery lives (well under a millisecond on one server, a
//! few milliseconds through Redis) and coarse where only outliers go.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in microseconds; one more bucket counts
/// everything above the last.
pub const BOUNDS_MICROS: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

const BUCKETS: usize = BOUNDS_MICROS.len() + 1;

/// One writer's histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation. Only the owning thread calls this: a plain
    /// load and store, no read-modify-write on the hot path.
    pub fn record(&self, micros: u64) {
        let bucket = BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        bump(&self.buckets[bucket], 1);
        bump(&self.sum_micros, micros);
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Histograms summed over writers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative); the last is the overflow.
    pub buckets: [u64; BUCKETS],
    pub sum_micros: u64,
}

impl HistogramSnapshot {
    /// Sums `histograms`.
    pub fn sum<'a>(histograms: impl IntoIterator<Item = &'a Histogram>) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::default();
        for h in histograms {
            for (total, bucket) in s.buckets.iter_mut().zip(&h.buckets) {
                *total += bucket.load(Ordering::Relaxed);
            }
            s.sum_micros += h.sum_micros.load(Ordering::Relaxed);
        }
        s
    }

    /// What was recorded after `earlier` (a reading of the same writers).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let mut d = *self;
        for (n, before) in d.buckets.iter_mut().zip(&earlier.buckets) {
            *n = n.saturating_sub(*before);
        }
        d.sum_micros = d.sum_micros.saturating_sub(earlier.sum_micros);
        d
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Mean in microseconds (0 without observations).
    pub fn mean_micros(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum_micros as f64 / n as f64,
        }
    }

    /// The `q` quantile (0..=1) in microseconds, interpolated linearly
    /// inside its bucket, as Prometheus' `histogram_quantile` does. `None`
    /// without observations; the overflow bucket answers its lower bound.
    pub fn quantile_micros(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (seen + n) as f64 >= rank {
                let lower = if i == 0 { 0 } else { BOUNDS_MICROS[i - 1] } as f64;
                let Some(&upper) = BOUNDS_MICROS.get(i) else {
                    return Some(lower);
                };
                let within = (rank - seen as f64) / n as f64;
                return Some(lower + (upper as f64 - lower) * within);
            }
            seen += n;
        }
        Some(BOUNDS_MICROS[BOUNDS_MICROS.len() - 1] as f64)
    }

    /// `(upper bound in µs or None for +Inf, cumulative count)` per bucket,
    /// the shape of a Prometheus histogram.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let mut running = 0;
        self.buckets.iter().enumerate().map(move |(i, &n)| {
            running += n;
            (BOUNDS_MICROS.get(i).copied(), running)
        })
    }

    /// Observations and their counts as (value, count) pairs, one per
    /// non-empty bucket, valued at the bucket's midpoint: the
    /// `Values`/`Counts` form CloudWatch takes for a distribution.
    pub fn distribution_micros(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, &n)| {
                let lower = if i == 0 { 0 } else { BOUNDS_MICROS[i - 1] } as f64;
                let value = match BOUNDS_MICROS.get(i) {
                    Some(&upper) => (lower + upper as f64) / 2.0,
                    None => lower,
                };
                (value, n)
            })
    }
}

/// The latencies one core (or the relay) measures.
#[derive(Debug, Default)]
pub struct Latencies {
    /// Routing a parsed message: encoding it once, queueing its frames for
    /// this core's recipients, posting it to other cores' mailboxes and
    /// handing it to the relay for other servers.
    pub local: Histogram,
    /// From the sending server's `ts` stamp to the frame's arrival here
    /// through Redis (millisecond stamps, so millisecond resolution; it
    /// includes the clock difference between the two servers).
    pub remote: Histogram,
    /// What clients report in `latency` frames.
    pub client: Histogram,
}

/// [`Latencies`] summed over writers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LatencySnapshot {
    pub local: HistogramSnapshot,
    pub remote: HistogramSnapshot,
    pub client: HistogramSnapshot,
}

impl LatencySnapshot {
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Latencies> + Clone) -> LatencySnapshot {
        LatencySnapshot {
            local: HistogramSnapshot::sum(all.clone().into_iter().map(|l| &l.local)),
            remote: HistogramSnapshot::sum(all.clone().into_iter().map(|l| &l.remote)),
            client: HistogramSnapshot::sum(all.into_iter().map(|l| &l.client)),
        }
    }
}

/// The `ts` (Unix milliseconds) the sending server stamped on a `message`
/// frame, which always ends with `,"ts":<digits>}`. `None` for anything
/// else, so a foreign frame is simply not measured.
pub fn message_ts(frame: &[u8]) -> Option<u64> {
    let body = frame.strip_suffix(b"}")?;
    let start = body.iter().rposition(|b| !b.is_ascii_digit())? + 1;
    let digits = &body[start..];
    if digits.is_empty() || digits.len() > 19 || !body[..start].ends_with(br#","ts":"#) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_of(values: &[u64]) -> HistogramSnapshot {
        let h = Histogram::default();
        for &v in values {
            h.record(v);
        }
        HistogramSnapshot::sum([&h])
    }

    #[test]
    fn values_land_in_the_bucket_whose_bound_covers_them() {
        let s = snapshot_of(&[0, 50, 51, 100, 10_000_000, 10_000_001, u64::MAX / 4]);
        assert_eq!(s.buckets[0], 2, "0 and 50 are <= 50");
        assert_eq!(s.buckets[1], 2, "51 and 100 are <= 100");
        assert_eq!(s.buckets[BOUNDS_MICROS.len() - 1], 1, "10 s is <= 10 s");
        assert_eq!(s.buckets[BOUNDS_MICROS.len()], 2, "above 10 s: overflow");
        assert_eq!(s.count(), 7);
    }

    #[test]
    fn writers_merge_by_adding() {
        let (a, b) = (Histogram::default(), Histogram::default());
        a.record(10);
        b.record(10);
        b.record(700);
        let s = HistogramSnapshot::sum([&a, &b]);
        assert_eq!(s.count(), 3);
        assert_eq!(s.sum_micros, 720);
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[4], 1, "700 µs is in (500, 1000]");
        assert_eq!(s.mean_micros(), 240.0);
    }

    #[test]
    fn since_subtracts_an_earlier_reading() {
        let h = Histogram::default();
        h.record(10);
        let earlier = HistogramSnapshot::sum([&h]);
        h.record(10);
        h.record(2_000);
        let d = HistogramSnapshot::sum([&h]).since(&earlier);
        assert_eq!(d.count(), 2);
        assert_eq!(d.sum_micros, 2_010);
        assert_eq!(d.buckets[0], 1);
    }

    #[test]
    fn cumulative_counts_end_at_the_total() {
        let s = snapshot_of(&[1, 300, 300, 20_000_000]);
        let cumulative: Vec<_> = s.cumulative().collect();
        assert_eq!(cumulative.len(), BOUNDS_MICROS.len() + 1);
        assert!(cumulative.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(cumulative[0], (Some(50), 1));
        assert_eq!(cumulative[3], (Some(500), 3));
        assert_eq!(*cumulative.last().unwrap(), (None, 4));
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        assert_eq!(snapshot_of(&[]).quantile_micros(0.5), None);
        // 100 values in (100, 250]: the median is half way through it.
        let s = snapshot_of(&[200; 100]);
        assert_eq!(s.quantile_micros(0.5), Some(175.0));
        assert_eq!(s.quantile_micros(1.0), Some(250.0));
        // 99 fast and one slow: p99 stays fast, p100 is the slow bucket.
        let mut values = vec![40; 99];
        values.push(3_000);
        let s = snapshot_of(&values);
        assert!(s.quantile_micros(0.99).unwrap() <= 50.0);
        assert_eq!(s.quantile_micros(1.0), Some(5_000.0));
        // Overflow answers the last bound rather than inventing a value.
        assert_eq!(snapshot_of(&[u64::MAX]).quantile_micros(0.5), Some(1e7));
    }

    #[test]
    fn distribution_has_one_value_per_non_empty_bucket() {
        let s = snapshot_of(&[10, 20, 700, 20_000_000]);
        let d: Vec<_> = s.distribution_micros().collect();
        assert_eq!(d, vec![(25.0, 2), (750.0, 1), (10_000_000.0, 1)]);
    }

    #[test]
    fn message_ts_reads_the_stamp_at_the_end() {
        let frame = br#"{"type":"message","from":"a","to":"b","data":{"ts":1},"ts":1732590000123}"#;
        assert_eq!(message_ts(frame), Some(1_732_590_000_123));
        assert_eq!(message_ts(br#"{"type":"message","data":5}"#), None);
        assert_eq!(message_ts(br#"{"x":"ts":}"#), None);
        assert_eq!(message_ts(br#","ts":99999999999999999999}"#), None);
        assert_eq!(message_ts(b""), None);
        assert_eq!(message_ts(b"}"), None);
    }
}
