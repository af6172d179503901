//! The human summary of a run, and the table that puts servers side by side.

use std::fmt::Write as _;

use crate::run::StepResult;
use crate::stats::Percentiles;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn latency_line(label: &str, p: &Percentiles) -> String {
    format!(
        "  {label:<18} p50 {:>9.1} µs  p90 {:>9.1}  p99 {:>9.1}  p99.9 {:>9.1}  max {:>9.1}  ({} samples)\n",
        p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us, p.count
    )
}

/// One step in words.
pub fn summary(r: &StepResult) -> String {
    let c = &r.counters;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} {} x{} ({} sockets, {} process(es) x {} thread(s))",
        r.workload, r.target, r.connections, r.opened, r.processes, r.threads
    );
    let _ = writeln!(
        s,
        "  connections        {} established, {} failed (connect {}, upgrade {}, timeout {}), {} dropped later",
        c.established,
        c.failed(),
        c.connect_failed,
        c.handshake_failed,
        c.timed_out,
        c.dropped
    );
    let _ = writeln!(
        s,
        "  connect rate       {:.0} /s ({} upgrades in {:.2} s; connect phase {:.2} s)",
        r.connect_rate, c.established, r.connect_active_secs, r.connect_secs
    );
    s.push_str(&latency_line("upgrade latency", &r.connect_latency));
    if r.workload != "connect" {
        let _ = writeln!(
            s,
            "  messages           sent {}, expected {}, received {} ({} unique), lost {}, duplicated {}, unexpected {}",
            c.sent, r.expected, c.received, c.unique, r.lost, c.duplicates, c.unexpected
        );
        let _ = writeln!(
            s,
            "  throughput         {:.0} deliveries/s over {:.2} s",
            r.throughput, r.run_secs
        );
        s.push_str(&latency_line("delivery latency", &r.latency));
        if !c.errors.is_empty() {
            let codes: Vec<String> = c.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(s, "  error frames       {}", codes.join(", "));
        }
    }
    if let Some(server) = &r.server {
        let _ = writeln!(
            s,
            "  server pid {:<6} RSS {:.1} MiB idle -> {:.1} MiB connected ({:.0} B/connection), CPU {:.0}% connecting, {:.0}% measured",
            server
                .pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join("+"),
            mib(server.rss_before_bytes),
            mib(server.rss_connected_bytes),
            server.rss_per_connection_bytes,
            server.cpu_connect * 100.0,
            server.cpu_run * 100.0
        );
        let ns = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ns"));
        let _ = writeln!(
            s,
            "  server CPU         {} per upgrade, {} per delivery",
            ns(server.cpu_ns_per_upgrade),
            ns(server.cpu_ns_per_delivery)
        );
    }
    let _ = writeln!(
        s,
        "  generator          busiest thread at {:.0}% of a core, {:.2} CPU s in all{}",
        r.generator_cpu_max * 100.0,
        r.generator_cpu_secs,
        r.generator_cpu_ns_per_delivery
            .map_or(String::new(), |v| format!(", {v:.0} ns per delivery"))
    );
    if let Some(kernel) = r.kernel_bytes_per_connection {
        let _ = writeln!(
            s,
            "  kernel memory      {kernel:.0} B/connection of unreclaimable slab, both ends (host-wide)"
        );
    }
    if let Some(load) = r.host_load {
        let _ = writeln!(
            s,
            "  host               {} CPUs, load average {load:.2}",
            r.host_cpus
        );
    }
    if r.generator_saturated {
        s.push_str("  WARNING: the generator saturated its core: these figures measure the bench, not the server.\n           Add --threads/--processes, or give the generator more cores.\n");
    }
    if let Some(redis) = &r.redis {
        let top: Vec<String> = redis
            .by_command
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "  redis              {} commands in the measured phase, {} per delivery ({}); Redis CPU {} per delivery",
            redis.commands,
            redis
                .per_delivery
                .map_or("-".to_owned(), |v| format!("{v:.3}")),
            top.join(", "),
            redis
                .cpu_ns_per_delivery
                .map_or("-".to_owned(), |v| format!("{v:.0} ns"))
        );
    }
    if let Some(e) = &r.first_error {
        let _ = writeln!(s, "  first error        {e}");
    }
    s
}

/// A compact row per step, for `--compare` and sweeps.
pub fn table(results: &[StepResult]) -> String {
    let mut s = String::from(
        "target                      conns   estab  failed  conn/s    deliv/s    lost   dup    p50µs    p99µs  p99.9µs  srv MiB  srv B/conn  srv ns/op  gen CPU\n",
    );
    for r in results {
        let p = if r.workload == "connect" {
            &r.connect_latency
        } else {
            &r.latency
        };
        let server = r.server.as_ref();
        let rss = server.map_or("-".to_owned(), |sv| {
            format!("{:.1}", mib(sv.rss_connected_bytes))
        });
        let per_conn = server.map_or("-".to_owned(), |sv| {
            format!("{:.0}", sv.rss_per_connection_bytes)
        });
        // CPU per unit of work: per upgrade for connect, per delivery otherwise.
        let per_op = server
            .and_then(|sv| {
                if r.workload == "connect" {
                    sv.cpu_ns_per_upgrade
                } else {
                    sv.cpu_ns_per_delivery
                }
            })
            .map_or("-".to_owned(), |v| format!("{v:.0}"));
        let _ = writeln!(
            s,
            "{:<26} {:>6} {:>7} {:>7} {:>7.0} {:>10.0} {:>7} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8} {:>11} {:>10} {:>7.0}%",
            r.target,
            r.connections,
            r.counters.established,
            r.counters.failed(),
            r.connect_rate,
            r.throughput,
            r.lost,
            r.counters.duplicates,
            p.p50_us,
            p.p99_us,
            p.p999_us,
            rss,
            per_conn,
            per_op,
            r.generator_cpu_max * 100.0
        );
    }
    s
}
