//! One reading of everything the server counts: the handler's counters, the
//! engine's, the latency histograms and the gauges, summed over cores. What
//! `/metrics`, the status page and the CloudWatch push are made from.

use std::sync::atomic::Ordering;

use ringhub_engine::StatsSnapshot;

use crate::latency::LatencySnapshot;
use crate::metrics::Totals;
use crate::node::Node;

/// Everything a metrics reader needs, copied out of the atomics.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub server_id: String,
    /// `embedded` or `redis`.
    pub broker: &'static str,
    pub uptime_secs: f64,
    /// Admitted connections now.
    pub active_connections: u64,
    pub totals: Totals,
    /// `None` before the engine has started.
    pub engine: Option<StatsSnapshot>,
    pub latency: LatencySnapshot,
}

impl Snapshot {
    /// Reads the node's counters now. Cheap (a few hundred relaxed loads),
    /// never blocks a core, so any thread may call it at any time.
    pub fn read(node: &Node) -> Snapshot {
        Snapshot {
            server_id: node.settings.server_id.clone(),
            broker: node.broker.kind(),
            uptime_secs: node.started.elapsed().as_secs_f64(),
            active_connections: node.open.load(Ordering::Relaxed) as u64,
            totals: node.totals(),
            engine: node.engine_stats.get().map(|s| s.snapshot()),
            latency: LatencySnapshot::sum(node.latencies.iter().map(|l| &**l)),
        }
    }
}
