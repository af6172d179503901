//! What the server pushes to CloudWatch, computed from two [`Snapshot`]s:
//! plain data, no SDK, so it is tested without a network. The pusher
//! (`cloudwatch_push.rs`, cargo feature `cloudwatch`) turns each
//! [`Datum`] into a `MetricDatum` with the `ServerId` dimension.
//!
//! Counters are sent as the change since the last push that CloudWatch
//! accepted, so a failed push loses nothing: the next one carries it.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::latency::HistogramSnapshot;
use crate::node::Node;
use crate::snapshot::Snapshot;

/// The running pusher (nothing in a build without the feature).
#[derive(Debug)]
pub struct Running(#[cfg(feature = "cloudwatch")] crate::cloudwatch_push::Pusher);

impl Running {
    /// Makes a last push and stops.
    pub fn stop(self) {
        #[cfg(feature = "cloudwatch")]
        self.0.stop();
    }
}

/// Starts pushing if the configuration asks for it.
pub fn start(node: &Arc<Node>, config: &Config) -> std::io::Result<Option<Running>> {
    if !config.cloudwatch {
        return Ok(None);
    }
    #[cfg(feature = "cloudwatch")]
    {
        let push = crate::cloudwatch_push::PushConfig {
            namespace: config.cloudwatch_namespace.clone(),
            interval: Duration::from_secs(config.cloudwatch_interval_secs),
            endpoint: config.cloudwatch_endpoint.clone(),
        };
        crate::cloudwatch_push::Pusher::start(node.clone(), push).map(|p| Some(Running(p)))
    }
    #[cfg(not(feature = "cloudwatch"))]
    {
        let _ = node;
        tracing::warn!(
            "RINGHUB_CLOUDWATCH is on but this binary was built without the `cloudwatch` \
             feature: no metrics are pushed"
        );
        Ok(None)
    }
}

/// CloudWatch's unit of a datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

/// One metric of one push.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: &'static str,
    pub unit: Unit,
    pub value: Value,
}

/// A single value, or a distribution as CloudWatch's `Values`/`Counts`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Single(f64),
    Distribution { values: Vec<f64>, counts: Vec<f64> },
}

/// The data of one push: what happened between `since` and `now`.
pub fn metric_data(since: &Snapshot, now: &Snapshot) -> Vec<Datum> {
    let (a, b) = (&since.totals, &now.totals);
    let count = |name, n: u64| Datum {
        name,
        unit: Unit::Count,
        value: Value::Single(n as f64),
    };
    let mut data = vec![
        count("MessagesTotal", b.messages_in.saturating_sub(a.messages_in)),
        count(
            "MessagesDelivered",
            b.messages_delivered.saturating_sub(a.messages_delivered),
        ),
        count("ActiveConnections", now.active_connections),
        count(
            "UnexpectedDisconnects",
            b.unexpected_disconnects
                .saturating_sub(a.unexpected_disconnects),
        ),
    ];
    let client = now.latency.client.since(&since.latency.client);
    if client.count() > 0 {
        data.push(Datum {
            name: "AverageLatencyMs",
            unit: Unit::Milliseconds,
            value: Value::Single(client.mean_micros() / 1000.0),
        });
        data.push(distribution("LatencyMs", &client));
    }
    let local = now.latency.local.since(&since.latency.local);
    if local.count() > 0 {
        data.push(distribution("DeliveryLatencyMs", &local));
    }
    data
}

fn distribution(name: &'static str, h: &HistogramSnapshot) -> Datum {
    let (values, counts) = h
        .distribution_micros()
        .map(|(micros, n)| (micros / 1000.0, n as f64))
        .unzip();
    Datum {
        name,
        unit: Unit::Milliseconds,
        value: Value::Distribution { values, counts },
    }
}

/// When to try again after failed pushes: doubling from one second, never
/// longer than the push interval, so a long outage costs one attempt per
/// interval and a short one is bridged quickly.
pub fn retry_delay(failures: u32, interval: Duration) -> Duration {
    let doubled = Duration::from_secs(1).saturating_mul(1 << failures.min(16).saturating_sub(1));
    doubled.min(interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::Histogram;

    fn single(data: &[Datum], name: &str) -> f64 {
        match data.iter().find(|d| d.name == name).map(|d| &d.value) {
            Some(Value::Single(v)) => *v,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn counters_are_sent_as_changes_and_gauges_as_they_are() {
        let mut since = Snapshot::default();
        since.totals.messages_in = 100;
        since.totals.messages_delivered = 300;
        since.totals.unexpected_disconnects = 2;
        let mut now = since.clone();
        now.totals.messages_in = 130;
        now.totals.messages_delivered = 390;
        now.totals.unexpected_disconnects = 5;
        now.active_connections = 17;
        let data = metric_data(&since, &now);
        assert_eq!(single(&data, "MessagesTotal"), 30.0);
        assert_eq!(single(&data, "MessagesDelivered"), 90.0);
        assert_eq!(single(&data, "UnexpectedDisconnects"), 3.0);
        assert_eq!(single(&data, "ActiveConnections"), 17.0);
        assert!(
            !data.iter().any(|d| d.name == "AverageLatencyMs"),
            "no latency without reports"
        );
    }

    #[test]
    fn latency_is_an_average_and_a_distribution_of_the_interval() {
        let h = Histogram::default();
        h.record(90_000); // before the last push: not in this one
        let mut since = Snapshot::default();
        since.latency.client = HistogramSnapshot::sum([&h]);
        for micros in [3_000, 4_000, 29_000] {
            h.record(micros);
        }
        let mut now = since.clone();
        now.latency.client = HistogramSnapshot::sum([&h]);
        let data = metric_data(&since, &now);
        assert_eq!(single(&data, "AverageLatencyMs"), 12.0);
        let latency = data.iter().find(|d| d.name == "LatencyMs").unwrap();
        assert_eq!(latency.unit, Unit::Milliseconds);
        assert_eq!(
            latency.value,
            Value::Distribution {
                values: vec![3.75, 37.5],
                counts: vec![2.0, 1.0]
            }
        );
    }

    #[test]
    fn retries_double_up_to_the_interval() {
        let interval = Duration::from_secs(60);
        let delays: Vec<u64> = (1..=8)
            .map(|n| retry_delay(n, interval).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(retry_delay(u32::MAX, interval), interval);
    }
}
