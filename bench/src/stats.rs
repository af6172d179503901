//! What a worker measured, and how the parent adds workers together.
//!
//! Everything here merges by addition (counters, histograms, per-topic
//! tallies), so a run split over threads and processes reports the same
//! figures as one that was not.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::{Deserialize, Serialize};

/// Highest latency recorded: longer is a stall, and clamps here.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Latency histogram in nanoseconds, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy hdrhistogram's rules (low >= 1,
    // high >= 2 * low, sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant bounds are valid")
}

/// Counts of one run, or of a merged set of runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Connections the worker tried to open.
    pub attempted: u64,
    /// Upgrades that completed.
    pub established: u64,
    /// `connect()` refused or failed (no listener, no source port, ...).
    pub connect_failed: u64,
    /// The server answered, but not with a valid 101.
    pub handshake_failed: u64,
    /// Neither connected nor upgraded within `--connect-timeout`.
    pub timed_out: u64,
    /// Established connections the server closed or reset during the run.
    pub dropped: u64,
    /// Stamped messages sent.
    pub sent: u64,
    /// Stamped messages received, duplicates included.
    pub received: u64,
    /// Distinct stamped messages received.
    pub unique: u64,
    pub duplicates: u64,
    /// Deliveries owed to this worker that it can count alone (echo: its
    /// own sends). Fan-out's are computed from the per-topic tallies.
    pub expected_local: u64,
    /// Frames without a stamp, or with one this worker never sent.
    pub unexpected: u64,
    /// `error` frames from a ringhub server, by code (`rate_limited`,
    /// `remote_unavailable`, ...): counted, never ignored.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.attempted += o.attempted;
        self.established += o.established;
        self.connect_failed += o.connect_failed;
        self.handshake_failed += o.handshake_failed;
        self.timed_out += o.timed_out;
        self.dropped += o.dropped;
        self.sent += o.sent;
        self.received += o.received;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.expected_local += o.expected_local;
        self.unexpected += o.unexpected;
        for (code, n) in &o.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }

    /// Counts one `error` frame with `code`.
    pub fn note_error(&mut self, code: &str) {
        match self.errors.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                self.errors.insert(code.to_owned(), 1);
            }
        }
    }

    /// `error` frames of every code.
    pub fn error_frames(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn failed(&self) -> u64 {
        self.connect_failed + self.handshake_failed + self.timed_out
    }
}

/// Everything one worker (thread) reports at the end of a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    pub counters: Counters,
    /// Messages published to topic `i`.
    pub published_per_topic: Vec<u64>,
    /// Subscribers of topic `i` that stayed connected to the end.
    pub subscribers_per_topic: Vec<u64>,
    #[serde(with = "histogram_serde")]
    pub latency: Histogram<u64>,
    /// From `connect()` to the 101, per connection.
    #[serde(with = "histogram_serde")]
    pub connect_latency: Histogram<u64>,
    /// Wall time of the connect phase and of the measured phase.
    pub connect_ns: u64,
    pub run_ns: u64,
    /// From the start of the measured phase to the last delivery: the
    /// window throughput is computed over.
    pub active_ns: u64,
    /// From the first connect to the last upgrade: the connect rate's window.
    pub connect_active_ns: u64,
    /// CPU time the worker thread used in each phase.
    pub connect_cpu_ns: u64,
    pub run_cpu_ns: u64,
    /// Busiest worker's CPU share (0..1) in its busiest phase.
    pub max_cpu_share: f64,
    pub workers: u32,
    /// The first failure, word for word, to tell the user why.
    pub first_error: Option<String>,
}

impl WorkerReport {
    pub fn new(topics: usize) -> Self {
        WorkerReport {
            counters: Counters::default(),
            published_per_topic: vec![0; topics],
            subscribers_per_topic: vec![0; topics],
            latency: latency_histogram(),
            connect_latency: latency_histogram(),
            connect_ns: 0,
            run_ns: 0,
            active_ns: 0,
            connect_active_ns: 0,
            connect_cpu_ns: 0,
            run_cpu_ns: 0,
            max_cpu_share: 0.0,
            workers: 1,
            first_error: None,
        }
    }

    /// Adds `other` into `self`. Wall times take the longest worker, CPU
    /// times add up.
    pub fn merge(&mut self, other: &WorkerReport) {
        self.counters.add(&other.counters);
        add_elementwise(&mut self.published_per_topic, &other.published_per_topic);
        add_elementwise(
            &mut self.subscribers_per_topic,
            &other.subscribers_per_topic,
        );
        // Both histograms share the same bounds, and values above them are
        // clamped when recorded, so adding cannot fail on range; saturate
        // the count rather than lose the merge if it ever did.
        let _ = self.latency.add(&other.latency);
        let _ = self.connect_latency.add(&other.connect_latency);
        self.connect_ns = self.connect_ns.max(other.connect_ns);
        self.run_ns = self.run_ns.max(other.run_ns);
        self.active_ns = self.active_ns.max(other.active_ns);
        self.connect_active_ns = self.connect_active_ns.max(other.connect_active_ns);
        self.connect_cpu_ns += other.connect_cpu_ns;
        self.run_cpu_ns += other.run_cpu_ns;
        self.max_cpu_share = self.max_cpu_share.max(other.max_cpu_share);
        self.workers += other.workers;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// Deliveries the servers owed: local (echo) plus, per topic, every
    /// message published times every subscriber that stayed.
    pub fn expected(&self) -> u64 {
        let fanout: u64 = self
            .published_per_topic
            .iter()
            .zip(&self.subscribers_per_topic)
            .map(|(p, s)| p * s)
            .sum();
        self.counters.expected_local + fanout
    }

    /// Owed deliveries that never arrived.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.counters.unique)
    }
}

/// Records `ns` into `h`, clamping outliers to the top bucket.
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
}

fn add_elementwise(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// Histograms cross the process boundary as base64 of the V2 encoding,
/// which keeps every bucket (percentiles do not merge; buckets do).
mod histogram_serde {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use super::*;

    pub fn serialize<S: serde::Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut bytes)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = BASE64.decode(text).map_err(serde::de::Error::custom)?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| serde::de::Error::custom(format!("histogram: {e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(values_us: &[u64], counters: Counters) -> WorkerReport {
        let mut r = WorkerReport::new(2);
        for &v in values_us {
            record_ns(&mut r.latency, v * 1000);
        }
        r.counters = counters;
        r
    }

    #[test]
    fn merged_histograms_give_the_percentiles_of_all_samples() {
        let mut a = report(&(1..=500).collect::<Vec<_>>(), Counters::default());
        let b = report(&(501..=1000).collect::<Vec<_>>(), Counters::default());
        a.merge(&b);
        let p = Percentiles::of(&a.latency);
        assert_eq!(p.count, 1000);
        // 3 significant digits: within 0.1 % of the exact order statistic.
        assert!((p.p50_us - 500.0).abs() <= 0.5, "{p:?}");
        assert!((p.p99_us - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.max_us - 1000.0).abs() <= 1.0, "{p:?}");
    }

    #[test]
    fn echo_loss_is_sent_minus_unique_across_workers() {
        let c = |sent, unique, dup| Counters {
            sent,
            received: unique + dup,
            unique,
            duplicates: dup,
            expected_local: sent,
            ..Counters::default()
        };
        let mut a = report(&[], c(100, 100, 0));
        a.merge(&report(&[], c(50, 47, 2)));
        assert_eq!((a.expected(), a.lost(), a.counters.duplicates), (150, 3, 2));
        assert_eq!(a.workers, 2);
    }

    #[test]
    fn fanout_expected_is_published_times_subscribers_per_topic() {
        // Worker A publishes 10 to topic 0 and 4 to topic 1; worker B holds
        // the subscribers: 3 on topic 0, 2 on topic 1.
        let mut a = report(&[], Counters::default());
        a.published_per_topic = vec![10, 4];
        let mut b = report(
            &[],
            Counters {
                unique: 37,
                ..Counters::default()
            },
        );
        b.subscribers_per_topic = vec![3, 2];
        a.merge(&b);
        assert_eq!(a.expected(), 10 * 3 + 4 * 2);
        assert_eq!(a.lost(), 1);
    }

    #[test]
    fn reports_survive_the_trip_between_processes() {
        let mut r = report(
            &[5, 50, 500, 5000],
            Counters {
                sent: 9,
                ..Counters::default()
            },
        );
        r.first_error = Some("connect: refused".into());
        let json = serde_json::to_string(&r).unwrap();
        let back: WorkerReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back.counters, r.counters);
        assert_eq!(back.latency, r.latency);
        assert_eq!(Percentiles::of(&back.latency), Percentiles::of(&r.latency));
        assert_eq!(back.first_error.as_deref(), Some("connect: refused"));
    }

    #[test]
    fn outliers_clamp_instead_of_vanishing() {
        let mut h = latency_histogram();
        record_ns(&mut h, 0);
        record_ns(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_LATENCY_NS);
    }
}
