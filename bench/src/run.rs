//! One step of a run from the parent's side: split the connections over
//! worker threads or processes, watch them, read the server's footprint,
//! and turn the merged report into a [`StepResult`].

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::driver::{Link, Snapshot, WorkerEvent, WorkerSpec};
use crate::group::{self, GroupError, Members};
use crate::login::Login;
use crate::procstat::{self, ProcError, ProcSample};
use crate::redis_info::{self, InfoError, Reading, RedisUsage};
use crate::stats::{Counters, Percentiles, WorkerReport};
use crate::sys;
use crate::target::Target;
use crate::workload::Workload;

/// File descriptors a worker process keeps for itself (stdio, poller,
/// pipes): the rest of RLIMIT_NOFILE is for connections.
const FD_RESERVE: u64 = 64;
/// A worker above this CPU share is the bottleneck, not the server.
pub const SATURATED: f64 = 0.9;

/// Everything one step needs.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// The server, or the servers of a cross-server workload.
    pub targets: Vec<Target>,
    pub workload: Workload,
    pub login: Login,
    /// Connections (fan-out: subscribers; direct: pairs) in this step.
    pub connections: usize,
    /// Processes whose footprint is the server's: one per server, summed.
    pub server_pids: Vec<u32>,
    /// Wait between every connection being ready and the go: servers
    /// announce new users and subscriptions to Redis asynchronously.
    pub settle: Duration,
    /// Redis nodes whose command counts are read at the go and the end.
    pub redis_nodes: Vec<std::net::SocketAddr>,
    pub processes: usize,
    pub threads: usize,
    pub sources: usize,
    pub concurrency: usize,
    pub connect_rate: u64,
    pub connect_timeout: Duration,
    pub duration: Duration,
    pub drain: Duration,
    pub messages: u64,
    pub progress: bool,
}

/// The server's footprint over the step, when its PID was given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerUsage {
    /// The server processes; memory and CPU below are their sums.
    pub pids: Vec<u32>,
    pub rss_before_bytes: u64,
    /// With every connection established, before the measured phase.
    pub rss_connected_bytes: u64,
    pub rss_after_bytes: u64,
    /// (connected - before) / established.
    pub rss_per_connection_bytes: f64,
    /// CPU seconds the server used per wall second, in the connect phase
    /// and in the measured phase (1.0 = one core).
    pub cpu_connect: f64,
    pub cpu_run: f64,
    /// Server CPU time per delivery in the measured phase, in nanoseconds:
    /// unlike throughput, barely moved by other load on the host.
    pub cpu_ns_per_delivery: Option<f64>,
    /// Server CPU time per upgrade in the connect phase.
    pub cpu_ns_per_upgrade: Option<f64>,
}

/// Server memory at a number of established connections.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MemorySample {
    pub connections: u64,
    pub rss_bytes: u64,
}

/// The outcome of one step, as printed and as written by `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    pub target: String,
    pub workload: String,
    /// Connections asked for (fan-out: subscribers).
    pub connections: usize,
    /// Sockets opened, publishers included.
    pub opened: usize,
    pub processes: usize,
    pub threads: usize,
    pub counters: Counters,
    pub expected: u64,
    pub lost: u64,
    pub latency: Percentiles,
    pub connect_latency: Percentiles,
    pub connect_secs: f64,
    /// First connect to last upgrade.
    pub connect_active_secs: f64,
    /// Upgrades per second, from the first connect to the last upgrade.
    pub connect_rate: f64,
    pub run_secs: f64,
    /// Distinct deliveries per second, from the go to the last delivery.
    pub throughput: f64,
    /// Busiest generator thread's CPU share; above 0.9 it was the bottleneck.
    pub generator_cpu_max: f64,
    pub generator_cpu_secs: f64,
    /// Generator CPU time per delivery (sending and receiving it), ns.
    pub generator_cpu_ns_per_delivery: Option<f64>,
    pub generator_saturated: bool,
    pub server: Option<ServerUsage>,
    pub memory: Vec<MemorySample>,
    /// CPUs of the host, and its 1-minute load average after the step:
    /// above the CPU count, something else competed for them.
    pub host_cpus: usize,
    pub host_load: Option<f64>,
    /// Growth of the host's unreclaimable kernel slab (socket and TCP
    /// state) per established connection, both ends counted: on loopback
    /// the client's socket is on this host too, so the server's share is
    /// about half. Other activity on the host adds noise.
    pub kernel_bytes_per_connection: Option<f64>,
    pub first_error: Option<String>,
    /// Redis commands over the measured phase, when nodes were given.
    pub redis: Option<RedisUsage>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Payload(#[from] crate::payload::PayloadError),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error(transparent)]
    Redis(#[from] InfoError),
}

/// How a step's connections split: `processes` x `threads` workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub processes: usize,
    pub threads: usize,
}

/// Enough processes that none needs more descriptors than `fd_limit`
/// allows, and at least as many as asked for.
pub fn split(sockets: usize, fd_limit: u64, processes: usize, threads: usize) -> Split {
    let per_process = fd_limit.saturating_sub(FD_RESERVE).max(1) as usize;
    let needed = sockets.div_ceil(per_process).max(1);
    Split {
        processes: processes.max(needed),
        threads: threads.max(1),
    }
}

/// Spreads `sockets` connections over `workers` contiguous slices:
/// `(first, count)` per worker, sizes differing by at most one.
pub fn slices(sockets: usize, workers: usize) -> Vec<(usize, usize)> {
    let workers = workers.max(1);
    let (base, extra) = (sockets / workers, sockets % workers);
    let mut first = 0;
    (0..workers)
        .map(|w| {
            let count = base + usize::from(w < extra);
            let slice = (first, count);
            first += count;
            slice
        })
        .collect()
}

pub fn run_step(plan: &StepPlan) -> Result<StepResult, RunError> {
    plan.workload.templates()?;
    let sockets = plan.workload.connections(plan.connections);
    let split = split(sockets, sys::raise_fd_limit(), plan.processes, plan.threads);
    let workers = split.processes * split.threads;
    let epoch_ns = sys::monotonic_ns();
    let sources: Vec<Ipv4Addr> = (1..=plan.sources.clamp(1, 254) as u8)
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .collect();
    // Echo and chat spread their sends over every worker; publishers and
    // direct senders sit in the first worker, which may use the whole budget.
    let budget = if plan.workload.sends_everywhere() {
        plan.messages.div_ceil(workers as u64)
    } else {
        plan.messages
    };
    let specs: Vec<WorkerSpec> = slices(sockets, workers)
        .into_iter()
        .enumerate()
        .map(|(i, (first, count))| WorkerSpec {
            targets: plan.targets.clone(),
            workload: plan.workload.clone(),
            login: plan.login.clone(),
            alone: workers == 1,
            first,
            count,
            sources: sources.clone(),
            concurrency: plan.concurrency.div_ceil(workers).max(1),
            connect_rate: plan.connect_rate.div_ceil(workers as u64),
            connect_timeout: plan.connect_timeout,
            duration: plan.duration,
            drain: plan.drain,
            send_budget: budget,
            epoch_ns,
            seed: epoch_ns ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        })
        .collect();
    let deadlines = group::deadlines_for(&specs);
    // Read the idle server before any worker starts connecting.
    let before = sample_all(&plan.server_pids)?;
    let mut watch = Watch::new(plan, sockets as u64);
    let members = if split.processes == 1 {
        Members::threads(specs)?
    } else {
        let per = specs.len().div_ceil(split.processes);
        Members::processes(specs.chunks(per).map(<[WorkerSpec]>::to_vec).collect())?
    };

    let report = group::run(members, &mut watch, deadlines);
    watch.bar.finish_and_clear();
    let report = report?;
    let (after, redis_after) = match watch.drained.take() {
        Some((server, redis)) => (server?, redis),
        None => (sample_all(&plan.server_pids)?, None),
    };
    let redis = match (watch.redis_at_go.take(), redis_after) {
        (Some(before), Some(after)) => {
            Some(RedisUsage::new(&before?, &after?, report.counters.unique))
        }
        _ => None,
    };
    let mut result = result(plan, split, sockets, &report, before, &watch, after);
    result.redis = redis;
    Ok(result)
}

fn result(
    plan: &StepPlan,
    split: Split,
    sockets: usize,
    report: &WorkerReport,
    before: Option<ProcSample>,
    watch: &Watch,
    after: Option<ProcSample>,
) -> StepResult {
    let secs = |ns: u64| ns as f64 / 1e9;
    let per_sec = |n: u64, ns: u64| if ns == 0 { 0.0 } else { n as f64 / secs(ns) };
    let established = report.counters.established;
    let server = match (before, watch.connected, after) {
        (Some(before), Some((connected, connect_wall)), Some(after)) => Some(ServerUsage {
            pids: plan.server_pids.clone(),
            rss_before_bytes: before.rss_bytes,
            rss_connected_bytes: connected.rss_bytes,
            rss_after_bytes: after.rss_bytes,
            rss_per_connection_bytes: if established == 0 {
                0.0
            } else {
                connected.rss_bytes.saturating_sub(before.rss_bytes) as f64 / established as f64
            },
            cpu_connect: share(
                connected.cpu_ns - before.cpu_ns.min(connected.cpu_ns),
                connect_wall,
            ),
            cpu_ns_per_delivery: per(
                after.cpu_ns.saturating_sub(connected.cpu_ns),
                report.counters.unique,
            ),
            cpu_ns_per_upgrade: per(connected.cpu_ns.saturating_sub(before.cpu_ns), established),
            cpu_run: share(
                after.cpu_ns.saturating_sub(connected.cpu_ns),
                watch.go_at.map_or(0, |t| t.elapsed().as_nanos() as u64),
            ),
        }),
        _ => None,
    };
    StepResult {
        target: plan
            .targets
            .iter()
            .map(Target::to_string)
            .collect::<Vec<_>>()
            .join(","),
        workload: plan.workload.name().to_owned(),
        connections: plan.connections,
        opened: sockets,
        processes: split.processes,
        threads: split.threads,
        counters: report.counters.clone(),
        expected: report.expected(),
        lost: report.lost(),
        latency: Percentiles::of(&report.latency),
        connect_latency: Percentiles::of(&report.connect_latency),
        connect_secs: secs(report.connect_ns),
        connect_active_secs: secs(report.connect_active_ns),
        connect_rate: per_sec(established, report.connect_active_ns),
        run_secs: secs(report.run_ns),
        throughput: per_sec(report.counters.unique, report.active_ns),
        generator_cpu_max: report.max_cpu_share,
        generator_cpu_secs: secs(report.connect_cpu_ns + report.run_cpu_ns),
        generator_cpu_ns_per_delivery: per(report.run_cpu_ns, report.counters.unique),
        generator_saturated: report.max_cpu_share > SATURATED,
        server,
        memory: watch.memory.clone(),
        host_cpus: procstat::online_cpus(),
        host_load: procstat::load_average(),
        kernel_bytes_per_connection: match watch.slab {
            // Below a thousand connections the host's own churn dominates.
            (Some(before), Some(connected)) if established >= 1000 => {
                Some(connected.saturating_sub(before) as f64 / established as f64)
            }
            _ => None,
        },
        first_error: report.first_error.clone(),
        redis: None,
    }
}

/// The servers' summed footprint, if any PID was given.
fn sample_all(pids: &[u32]) -> Result<Option<ProcSample>, ProcError> {
    let mut total: Option<ProcSample> = None;
    for &pid in pids {
        let s = procstat::sample(pid)?;
        let t = total.get_or_insert(ProcSample {
            rss_bytes: 0,
            cpu_ns: 0,
        });
        t.rss_bytes += s.rss_bytes;
        t.cpu_ns += s.cpu_ns;
    }
    Ok(total)
}

fn per(cpu_ns: u64, count: u64) -> Option<f64> {
    (count > 0).then(|| cpu_ns as f64 / count as f64)
}

fn share(cpu_ns: u64, wall_ns: u64) -> f64 {
    if wall_ns == 0 {
        0.0
    } else {
        cpu_ns as f64 / wall_ns as f64
    }
}

/// Servers' footprint and Redis's counters at the end of the drain.
type DrainedSample = (
    Result<Option<ProcSample>, ProcError>,
    Option<Result<Reading, InfoError>>,
);

/// The parent's view of the group: a progress bar, and server samples.
struct Watch {
    bar: ProgressBar,
    pids: Vec<u32>,
    settle: Duration,
    redis_nodes: Vec<std::net::SocketAddr>,
    /// Redis command counts read at the go, if nodes were given.
    redis_at_go: Option<Result<Reading, InfoError>>,
    /// The servers and Redis read once every worker drained, before the
    /// connections close.
    drained: Option<DrainedSample>,
    started: Instant,
    last_sample: Option<Instant>,
    memory: Vec<MemorySample>,
    /// Server sample when all were connected, and the connect phase's wall time.
    connected: Option<(ProcSample, u64)>,
    /// Host-wide unreclaimable slab before connecting and once connected.
    slab: (Option<u64>, Option<u64>),
    go_at: Option<Instant>,
    duration: Duration,
}

impl Watch {
    fn new(plan: &StepPlan, sockets: u64) -> Self {
        let bar = if plan.progress {
            ProgressBar::with_draw_target(Some(sockets), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix("connect");
        Watch {
            bar,
            pids: plan.server_pids.clone(),
            settle: plan.settle,
            redis_nodes: plan.redis_nodes.clone(),
            redis_at_go: None,
            drained: None,
            started: Instant::now(),
            last_sample: None,
            memory: Vec::new(),
            connected: None,
            slab: (procstat::unreclaimable_slab(), None),
            go_at: None,
            duration: plan.duration,
        }
    }

    fn sample_memory(&mut self, established: u64, force: bool) {
        if self.pids.is_empty() {
            return;
        }
        let due = self
            .last_sample
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(250));
        if !(due || force) {
            return;
        }
        if let Ok(Some(s)) = sample_all(&self.pids) {
            self.memory.push(MemorySample {
                connections: established,
                rss_bytes: s.rss_bytes,
            });
        }
        self.last_sample = Some(Instant::now());
    }
}

impl Link for Watch {
    fn send(&mut self, event: WorkerEvent) {
        let snapshot: Snapshot = match event {
            WorkerEvent::Progress { snapshot }
            | WorkerEvent::Ready { snapshot }
            | WorkerEvent::Drained { snapshot } => snapshot,
            _ => return,
        };
        match self.go_at {
            None => {
                self.bar
                    .set_position(snapshot.established + snapshot.failed);
                self.bar.set_message(format!("{} failed", snapshot.failed));
                self.sample_memory(snapshot.established, false);
            }
            Some(go) => {
                let elapsed = go.elapsed();
                self.bar.set_position(elapsed.as_millis() as u64);
                self.bar.set_message(format!(
                    "{:.1}/{:.1} s  sent {} received {}",
                    elapsed.as_secs_f64(),
                    self.duration.as_secs_f64(),
                    snapshot.sent,
                    snapshot.received
                ));
            }
        }
        if let WorkerEvent::Ready { snapshot } = event {
            self.sample_memory(snapshot.established, true);
        }
    }

    fn wait_go(&mut self) -> bool {
        if self.go_at.is_some() {
            // The second go: every worker drained, connections still open.
            let redis = (!self.redis_nodes.is_empty()).then(|| redis_info::read(&self.redis_nodes));
            self.drained = Some((sample_all(&self.pids), redis));
            return true;
        }
        if !self.settle.is_zero() {
            self.bar
                .set_message(format!("settling {:.1} s", self.settle.as_secs_f64()));
            std::thread::sleep(self.settle);
        }
        let wall = self.started.elapsed().as_nanos() as u64;
        self.slab.1 = procstat::unreclaimable_slab();
        self.connected = sample_all(&self.pids).ok().flatten().map(|s| (s, wall));
        if !self.redis_nodes.is_empty() {
            self.redis_at_go = Some(redis_info::read(&self.redis_nodes));
        }
        self.bar.set_prefix("run");
        self.bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        self.bar.set_length(self.duration.as_millis() as u64);
        self.bar.set_position(0);
        self.go_at = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_into_processes_past_the_fd_limit() {
        assert_eq!(
            split(100, 20_000, 1, 1),
            Split {
                processes: 1,
                threads: 1
            }
        );
        assert_eq!(split(19_936, 20_000, 1, 1).processes, 1);
        assert_eq!(split(19_937, 20_000, 1, 1).processes, 2);
        assert_eq!(
            split(50_000, 20_000, 1, 2),
            Split {
                processes: 3,
                threads: 2
            }
        );
        assert_eq!(
            split(10, 20_000, 4, 0),
            Split {
                processes: 4,
                threads: 1
            }
        );
    }

    #[test]
    fn slices_cover_every_connection_once() {
        let s = slices(10, 3);
        assert_eq!(s, [(0, 4), (4, 3), (7, 3)]);
        assert_eq!(slices(2, 4).iter().map(|s| s.1).sum::<usize>(), 2);
        assert_eq!(slices(5, 0), [(0, 5)]);
    }
}
