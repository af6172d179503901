//! The Prometheus text exposition format (version 0.0.4) of a [`Snapshot`].
//!
//! Names are `ringhub_*` with the unit in the name (`_seconds`, `_bytes`,
//! `_total` for counters); latencies are real histograms (`_bucket{le}`,
//! `_sum`, `_count`), so `histogram_quantile()` works across servers.

use std::fmt::Write;

use crate::latency::HistogramSnapshot;
use crate::snapshot::Snapshot;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes the exposition of `s` into `out`.
pub fn render(out: &mut String, s: &Snapshot) {
    let t = &s.totals;
    let mut w = Writer { out };

    w.family(
        "ringhub_info",
        "gauge",
        "Constant 1, labelled with this server's ID and broker.",
    );
    let labels = format!(
        "server_id=\"{}\",broker=\"{}\",version=\"{}\"",
        escape(&s.server_id),
        s.broker,
        env!("CARGO_PKG_VERSION")
    );
    w.sample("ringhub_info", &labels, 1);
    w.single(
        "ringhub_uptime_seconds",
        "gauge",
        "Seconds since the process started.",
        s.uptime_secs,
    );

    w.single(
        "ringhub_connections_active",
        "gauge",
        "Admitted WebSocket connections now open.",
        s.active_connections,
    );
    w.single(
        "ringhub_connections_opened_total",
        "counter",
        "WebSocket connections admitted.",
        t.connections_opened,
    );
    w.family(
        "ringhub_disconnects_total",
        "counter",
        "Closed connections by reason: peer (its close frame), local (server's, e.g. 1008 abuse), \
         shutdown (1001) are clean; protocol (1002/1007/1009), slow_consumer (1008/1013), \
         timeout and vanished (1006, no close frame) are unexpected.",
    );
    for (reason, clean, n) in [
        ("peer", true, t.closed_peer),
        ("local", true, t.closed_local),
        ("shutdown", true, t.closed_shutdown),
        ("protocol", false, t.closed_protocol),
        ("slow_consumer", false, t.closed_slow_consumer),
        ("timeout", false, t.closed_timeout),
        ("vanished", false, t.closed_vanished),
    ] {
        w.sample(
            "ringhub_disconnects_total",
            &format!("reason=\"{reason}\",clean=\"{clean}\""),
            n,
        );
    }
    w.single(
        "ringhub_unexpected_disconnects_total",
        "counter",
        "Connections that ended without a clean close handshake.",
        t.unexpected_disconnects,
    );
    w.family(
        "ringhub_handshakes_rejected_total",
        "counter",
        "WebSocket upgrades refused, by reason.",
    );
    for (reason, n) in [
        ("capacity", t.rejected_capacity),
        ("per_ip", t.rejected_per_ip),
        ("handshake_rate", t.rejected_handshake_rate),
        ("auth", t.rejected_auth),
        ("origin", t.rejected_origin),
    ] {
        w.sample(
            "ringhub_handshakes_rejected_total",
            &format!("reason=\"{reason}\""),
            n,
        );
    }

    w.single(
        "ringhub_messages_received_total",
        "counter",
        "Messages received from clients.",
        t.messages_in,
    );
    w.single(
        "ringhub_messages_delivered_total",
        "counter",
        "Message frames queued for this server's connections (one per recipient).",
        t.messages_delivered,
    );
    w.family(
        "ringhub_messages_dropped_total",
        "counter",
        "Messages not delivered, by reason: rate_limit (sender over its rate), slow_consumer \
         (recipient's queue full or closing), remote_failure (Redis refused or unreachable), \
         overloaded (a core's mailbox full).",
    );
    for (reason, n) in [
        ("rate_limit", t.rate_limited),
        ("slow_consumer", t.dropped_slow_consumer),
        ("remote_failure", t.remote_failures),
        ("overloaded", t.mailbox_full),
    ] {
        w.sample(
            "ringhub_messages_dropped_total",
            &format!("reason=\"{reason}\""),
            n,
        );
    }
    w.single(
        "ringhub_senders_paused_total",
        "counter",
        "Times a connection was paused (its socket not read, so TCP slows its client) because \
         Redis was behind on this server's messages.",
        t.senders_paused,
    );
    w.single(
        "ringhub_message_bytes_received_total",
        "counter",
        "Bytes of client messages received (after decompression).",
        t.bytes_in,
    );
    w.single(
        "ringhub_message_bytes_delivered_total",
        "counter",
        "Bytes of message frames queued for this server's connections (before compression).",
        t.bytes_out,
    );
    w.single(
        "ringhub_errors_sent_total",
        "counter",
        "error frames sent to clients.",
        t.errors_sent,
    );
    w.single(
        "ringhub_abuse_closes_total",
        "counter",
        "Connections closed with 1008 for repeated bad input.",
        t.abuse_closes,
    );
    w.single(
        "ringhub_api_publishes_total",
        "counter",
        "Messages accepted by POST /api/publish.",
        t.api_publishes,
    );
    w.single(
        "ringhub_redis_commands_total",
        "counter",
        "Commands sent to Redis by the relay.",
        t.redis_commands,
    );
    w.single(
        "ringhub_redis_errors_total",
        "counter",
        "Redis commands that failed (error reply, timeout or lost connection).",
        t.redis_errors,
    );
    w.single(
        "ringhub_remote_retries_total",
        "counter",
        "Publishes to other servers sent again after a failover-type failure (each \
         either arrives later or ends as a remote_failure drop).",
        t.remote_retries,
    );

    w.family(
        "ringhub_delivery_latency_seconds",
        "histogram",
        "local: from a message's arrival to its frames queued for this server's recipients; \
         remote: from the sending server's ts stamp to arrival here through Redis (ms stamps).",
    );
    w.histogram(
        "ringhub_delivery_latency_seconds",
        "path=\"local\"",
        &s.latency.local,
    );
    w.histogram(
        "ringhub_delivery_latency_seconds",
        "path=\"remote\"",
        &s.latency.remote,
    );
    w.family(
        "ringhub_client_latency_seconds",
        "histogram",
        "Latency clients measured and reported in latency frames.",
    );
    w.histogram("ringhub_client_latency_seconds", "", &s.latency.client);

    if let Some(e) = &s.engine {
        w.single(
            "ringhub_engine_sockets_open",
            "gauge",
            "TCP connections held by the engine (upgraded or not).",
            e.open,
        );
        w.single(
            "ringhub_engine_accepted_total",
            "counter",
            "TCP connections accepted.",
            e.accepted,
        );
        w.single(
            "ringhub_engine_http_requests_total",
            "counter",
            "Plain HTTP requests answered.",
            e.http_requests,
        );
        w.single(
            "ringhub_engine_frames_sent_total",
            "counter",
            "WebSocket frames queued for sending (messages, acks, errors, control).",
            e.frames_out,
        );
        w.single(
            "ringhub_engine_slow_consumers_total",
            "counter",
            "Connections closed for overflowing their send queue.",
            e.slow_consumers,
        );
        w.single(
            "ringhub_engine_protocol_errors_total",
            "counter",
            "Connections closed for a WebSocket protocol error.",
            e.protocol_errors,
        );
        w.single(
            "ringhub_engine_timeouts_total",
            "counter",
            "Connections closed by the handshake or idle timer.",
            e.timeouts,
        );
        w.single(
            "ringhub_engine_accept_errors_total",
            "counter",
            "Accepts the kernel failed (e.g. file table full).",
            e.accept_errors,
        );
    }
}

struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }

    fn histogram(&mut self, name: &str, labels: &str, h: &HistogramSnapshot) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in h.cumulative() {
            let le = match bound {
                Some(micros) => seconds(micros),
                None => "+Inf".to_owned(),
            };
            self.sample(
                &format!("{name}_bucket"),
                &format!("{labels}{sep}le=\"{le}\""),
                count,
            );
        }
        self.sample(&format!("{name}_sum"), labels, seconds(h.sum_micros));
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

/// Microseconds as decimal seconds, exactly (`2500` → `0.0025`).
fn seconds(micros: u64) -> String {
    let (whole, frac) = (micros / 1_000_000, micros % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::latency::Histogram;

    fn sample_snapshot() -> Snapshot {
        let mut s = Snapshot {
            server_id: "node-\"1\"".into(),
            broker: "embedded",
            active_connections: 3,
            engine: Some(ringhub_engine::StatsSnapshot::default()),
            ..Snapshot::default()
        };
        s.totals.messages_delivered = 42;
        s.totals.closed_timeout = 2;
        let h = Histogram::default();
        for micros in [30, 400, 400, 2_000_000, 60_000_000] {
            h.record(micros);
        }
        s.latency.local = HistogramSnapshot::sum([&h]);
        s
    }

    /// Parses the text format strictly enough to catch mistakes: every
    /// sample belongs to a family declared before it with a known type,
    /// and every value is a number.
    fn parse(text: &str) -> HashMap<String, f64> {
        let mut types = HashMap::new();
        let mut samples = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(
                    types.insert(name.to_owned(), kind).is_none(),
                    "twice: {name}"
                );
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("ringhub_"), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f) == Some(&"histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "no TYPE before {line}");
            if types[family] == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {name}");
            }
            let value: f64 = value.parse().expect("numeric value");
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "twice: {series}"
            );
        }
        samples
    }

    #[test]
    fn exposition_is_well_formed_and_carries_the_values() {
        let mut text = String::new();
        render(&mut text, &sample_snapshot());
        let samples = parse(&text);
        assert_eq!(samples["ringhub_messages_delivered_total"], 42.0);
        assert_eq!(samples["ringhub_connections_active"], 3.0);
        assert_eq!(
            samples["ringhub_disconnects_total{reason=\"timeout\",clean=\"false\"}"],
            2.0
        );
        assert!(text.contains(r#"server_id="node-\"1\"""#), "label escaped");
        assert!(samples.contains_key("ringhub_engine_sockets_open"));
    }

    #[test]
    fn histograms_are_cumulative_with_le_in_seconds() {
        let mut text = String::new();
        render(&mut text, &sample_snapshot());
        let samples = parse(&text);
        let bucket = |le: &str| {
            samples
                [&format!("ringhub_delivery_latency_seconds_bucket{{path=\"local\",le=\"{le}\"}}")]
        };
        assert_eq!(bucket("0.00005"), 1.0);
        assert_eq!(bucket("0.0005"), 3.0);
        assert_eq!(bucket("2.5"), 4.0);
        assert_eq!(bucket("10"), 4.0);
        assert_eq!(bucket("+Inf"), 5.0);
        assert_eq!(
            samples["ringhub_delivery_latency_seconds_count{path=\"local\"}"],
            5.0
        );
        assert_eq!(
            samples["ringhub_delivery_latency_seconds_sum{path=\"local\"}"],
            62.00083
        );
        assert_eq!(samples["ringhub_client_latency_seconds_count"], 0.0);
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(50), "0.00005");
        assert_eq!(seconds(2_500), "0.0025");
        assert_eq!(seconds(10_000_000), "10");
        assert_eq!(seconds(1_000_001), "1.000001");
    }
}
