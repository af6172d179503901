//! Runs a group of workers (threads here, or worker processes) as one:
//! every member connects, the group reports ready once all are, one go
//! starts them together, and their reports merge into one.
//!
//! The same code runs in a worker process (members are its threads, the
//! parent is upstream over stdio) and in the parent (members are threads or
//! processes, upstream is the progress display), so a run split over
//! processes behaves like one that is not.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::driver::{self, Link, Snapshot, WorkerEvent, WorkerSpec};
use crate::stats::WorkerReport;

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("worker {member} failed: {error}")]
    Worker { member: usize, error: String },
    #[error("workers did not {0} in time")]
    Timeout(&'static str),
    #[error("cannot start a worker: {0}")]
    Spawn(std::io::Error),
    #[error("aborted before the measured phase")]
    Aborted,
}

/// Members of a group, seen through their events and their go switches.
pub struct Members {
    events: Receiver<(usize, WorkerEvent)>,
    go: Vec<Box<dyn FnMut(bool) + Send>>,
    children: Vec<Child>,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field("count", &self.go.len())
            .finish()
    }
}

impl Members {
    /// One thread per spec, in this process.
    pub fn threads(specs: Vec<WorkerSpec>) -> Result<Self, GroupError> {
        let (tx, events) = mpsc::channel();
        let mut go = Vec::new();
        for (member, spec) in specs.into_iter().enumerate() {
            let (go_tx, go_rx) = mpsc::channel::<bool>();
            let tx = tx.clone();
            go.push(Box::new(move |start| {
                let _ = go_tx.send(start);
            }) as Box<dyn FnMut(bool) + Send>);
            thread::Builder::new()
                .name(format!("bench-worker-{member}"))
                .spawn(move || {
                    let mut link = ChannelLink {
                        member,
                        tx,
                        go: go_rx,
                    };
                    let event = match driver::run(&spec, &mut link) {
                        Ok(report) => WorkerEvent::Done {
                            report: Box::new(report),
                        },
                        Err(e) => WorkerEvent::Failed {
                            error: e.to_string(),
                        },
                    };
                    link.send(event);
                })
                .map_err(GroupError::Spawn)?;
        }
        Ok(Members {
            events,
            go,
            children: Vec::new(),
        })
    }

    /// One process per spec list: this binary re-executed as `worker`.
    pub fn processes(groups: Vec<Vec<WorkerSpec>>) -> Result<Self, GroupError> {
        let exe = std::env::current_exe().map_err(GroupError::Spawn)?;
        let (tx, events) = mpsc::channel();
        let mut go = Vec::new();
        let mut children = Vec::new();
        for (member, specs) in groups.into_iter().enumerate() {
            let mut child = Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(GroupError::Spawn)?;
            let mut stdin: ChildStdin = child
                .stdin
                .take()
                .ok_or_else(|| GroupError::Spawn(std::io::ErrorKind::BrokenPipe.into()))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| GroupError::Spawn(std::io::ErrorKind::BrokenPipe.into()))?;
            let line = serde_json::to_string(&specs).map_err(|e| GroupError::Spawn(e.into()))?;
            writeln!(stdin, "{line}").map_err(GroupError::Spawn)?;
            go.push(Box::new(move |start: bool| {
                let _ = writeln!(stdin, "{}", if start { "go" } else { "abort" });
                let _ = stdin.flush();
            }) as Box<dyn FnMut(bool) + Send>);
            let tx = tx.clone();
            thread::spawn(move || forward_child_events(member, stdout, &tx));
            children.push(child);
        }
        Ok(Members {
            events,
            go,
            children,
        })
    }

    pub fn len(&self) -> usize {
        self.go.len()
    }

    pub fn is_empty(&self) -> bool {
        self.go.is_empty()
    }
}

impl Drop for Members {
    /// Closes every member's go line (a waiting worker then aborts) and
    /// reaps worker processes; by now they have reported or failed, so
    /// any still running is stopped rather than waited for.
    fn drop(&mut self) {
        self.go.clear();
        for child in &mut self.children {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Parses a worker process's stdout into events; its end without a `done`
/// is a failure.
fn forward_child_events(
    member: usize,
    stdout: std::process::ChildStdout,
    tx: &Sender<(usize, WorkerEvent)>,
) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let event =
            serde_json::from_str::<WorkerEvent>(&line).unwrap_or_else(|e| WorkerEvent::Failed {
                error: format!("unreadable worker output ({e}): {line}"),
            });
        let finished = matches!(event, WorkerEvent::Done { .. } | WorkerEvent::Failed { .. });
        if tx.send((member, event)).is_err() || finished {
            return;
        }
    }
    let _ = tx.send((
        member,
        WorkerEvent::Failed {
            error: "worker process exited early".into(),
        },
    ));
}

/// How long each phase may take before the group gives up.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub ready: Duration,
    pub done: Duration,
}

/// Runs `members` as one worker reporting to `up`; returns the merged report.
pub fn run(
    mut members: Members,
    up: &mut dyn Link,
    deadlines: Deadlines,
) -> Result<WorkerReport, GroupError> {
    let n = members.len();
    let mut snapshots = vec![Snapshot::default(); n];
    let mut ready = vec![false; n];
    let sum = |s: &[Snapshot]| {
        s.iter().fold(Snapshot::default(), |mut acc, x| {
            acc.add(x);
            acc
        })
    };

    let deadline = Instant::now() + deadlines.ready;
    while !ready.iter().all(|&r| r) {
        let (member, event) =
            recv_until(&members.events, deadline).ok_or(GroupError::Timeout("connect"))?;
        match event {
            WorkerEvent::Progress { snapshot } => {
                snapshots[member] = snapshot;
                up.send(WorkerEvent::Progress {
                    snapshot: sum(&snapshots),
                });
            }
            WorkerEvent::Ready { snapshot } => {
                snapshots[member] = snapshot;
                ready[member] = true;
            }
            WorkerEvent::Failed { error } => return Err(abort(&mut members, member, error)),
            WorkerEvent::Done { .. } | WorkerEvent::Drained { .. } => {
                return Err(abort(&mut members, member, "finished before the go".into()));
            }
        }
    }
    up.send(WorkerEvent::Ready {
        snapshot: sum(&snapshots),
    });
    let start = up.wait_go();
    for go in &mut members.go {
        go(start);
    }
    if !start {
        return Err(GroupError::Aborted);
    }

    let deadline = Instant::now() + deadlines.done;
    let mut merged: Option<WorkerReport> = None;
    let mut done = 0;
    let mut drained = vec![false; n];
    while done < n {
        let (member, event) =
            recv_until(&members.events, deadline).ok_or(GroupError::Timeout("finish"))?;
        match event {
            WorkerEvent::Progress { snapshot } | WorkerEvent::Ready { snapshot } => {
                snapshots[member] = snapshot;
                up.send(WorkerEvent::Progress {
                    snapshot: sum(&snapshots),
                });
            }
            WorkerEvent::Drained { snapshot } => {
                snapshots[member] = snapshot;
                drained[member] = true;
                // The last one to drain: upstream reads the servers, then
                // everyone closes.
                if drained.iter().all(|&d| d) {
                    up.send(WorkerEvent::Drained {
                        snapshot: sum(&snapshots),
                    });
                    let close = up.wait_go();
                    for go in &mut members.go {
                        go(close);
                    }
                }
            }
            WorkerEvent::Done { report } => {
                done += 1;
                match merged.as_mut() {
                    Some(m) => m.merge(&report),
                    None => merged = Some(*report),
                }
            }
            WorkerEvent::Failed { error } => return Err(GroupError::Worker { member, error }),
        }
    }
    merged.ok_or(GroupError::Timeout("finish"))
}

fn abort(members: &mut Members, member: usize, error: String) -> GroupError {
    for go in &mut members.go {
        go(false);
    }
    GroupError::Worker { member, error }
}

fn recv_until<T>(rx: &Receiver<T>, deadline: Instant) -> Option<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    rx.recv_timeout(left).ok()
}

/// A worker thread's link: events over a channel, the go from another.
struct ChannelLink {
    member: usize,
    tx: Sender<(usize, WorkerEvent)>,
    go: Receiver<bool>,
}

impl Link for ChannelLink {
    fn send(&mut self, event: WorkerEvent) {
        let _ = self.tx.send((self.member, event));
    }

    fn wait_go(&mut self) -> bool {
        self.go.recv().unwrap_or(false)
    }
}

/// A worker process's link to its parent: JSON lines on stdout, the go as
/// a line on stdin.
#[derive(Debug, Default)]
pub struct StdioLink;

impl Link for StdioLink {
    fn send(&mut self, event: WorkerEvent) {
        let mut out = std::io::stdout().lock();
        if let Ok(line) = serde_json::to_string(&event) {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    fn wait_go(&mut self) -> bool {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).is_ok() && line.trim() == "go"
    }
}

/// Entry point of `ringhub-bench worker`: reads its specs from stdin, runs
/// them as threads, and reports to the parent over stdio.
pub fn worker_process_main() -> Result<(), GroupError> {
    crate::sys::raise_fd_limit();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(GroupError::Spawn)?;
    let specs: Vec<WorkerSpec> =
        serde_json::from_str(&line).map_err(|e| GroupError::Spawn(e.into()))?;
    let deadlines = deadlines_for(&specs);
    let mut up = StdioLink;
    match Members::threads(specs).and_then(|members| run(members, &mut up, deadlines)) {
        Ok(report) => up.send(WorkerEvent::Done {
            report: Box::new(report),
        }),
        Err(e) => up.send(WorkerEvent::Failed {
            error: e.to_string(),
        }),
    }
    Ok(())
}

/// Bounds no healthy run reaches: the connect ramp plus every batch of
/// `concurrency` connections taking the full timeout, and the measured
/// phase plus the drain.
pub fn deadlines_for(specs: &[WorkerSpec]) -> Deadlines {
    let slack = Duration::from_secs(30);
    let ready = specs
        .iter()
        .map(|s| {
            let ramp = if s.connect_rate == 0 {
                0.0
            } else {
                s.count as f64 / s.connect_rate as f64
            };
            let batches = s.count.div_ceil(s.concurrency.max(1)).max(1) as u32;
            Duration::from_secs_f64(ramp) + s.connect_timeout.saturating_mul(batches)
        })
        .max()
        .unwrap_or_default();
    let done = specs
        .iter()
        .map(|s| s.duration + s.drain)
        .max()
        .unwrap_or_default();
    Deadlines {
        ready: ready + slack,
        done: done + slack,
    }
}
