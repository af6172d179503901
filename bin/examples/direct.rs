//! Cross-server `send` load: `--pairs` senders connected to server A send
//! to their partner user connected to server B, at `--rate` messages per
//! second in total, for `--secs`. Prints throughput, latency percentiles
//! (from the time each message was due to its arrival, both ends in this
//! process: one clock, no coordinated omission), Redis commands per
//! delivered message from `INFO commandstats` (summed over every node given
//! to `--redis a,b,…`), and with `--pids A,B` the CPU
//! time every thread of both servers spent per delivered message (from
//! `/proc/<pid>/task/*/schedstat` and `stat`).
//!
//! `--rate max` runs steps of rising rate until one is not sustained (not
//! every message delivered, p99 over 20 ms, or the generator fell behind)
//! and reports the highest sustained step.
//!
//! ```text
//! ringhub --listen 127.0.0.1:8081 --redis redis://127.0.0.1:6379 --server-id a &
//! ringhub --listen 127.0.0.1:8082 --redis redis://127.0.0.1:6379 --server-id b &
//! cargo run --profile bench -p ringhub --example direct -- \
//!     --a 127.0.0.1:8081 --b 127.0.0.1:8082 --redis 127.0.0.1:6379 \
//!     --pids $(pgrep -d, ringhub) --pairs 4 --rate 10000 --secs 10
//! ```
//! Loopback only; bounded in time; stops by itself.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

/// A `--rate max` step is sustained only below this p99.
const MAX_P99: Duration = Duration::from_millis(20);
/// First rate of `--rate max`, and the factor between steps.
const RAMP_START: u64 = 25_000;
const RAMP_FACTOR: f64 = 1.5;
/// How long receivers wait for stragglers once the senders stop.
const GRACE: Duration = Duration::from_secs(3);

#[derive(Clone)]
struct Args {
    a: SocketAddr,
    b: SocketAddr,
    /// Redis nodes whose `INFO commandstats` is summed (every master and
    /// replica of a cluster).
    redis: Vec<String>,
    pairs: usize,
    /// `None`: find the highest sustained rate.
    rate: Option<u64>,
    secs: u64,
    pids: Vec<u32>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        a: "127.0.0.1:8081".parse().map_err(|e| format!("{e}"))?,
        b: "127.0.0.1:8082".parse().map_err(|e| format!("{e}"))?,
        redis: Vec::new(),
        pairs: 4,
        rate: Some(10_000),
        secs: 10,
        pids: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--a" => args.a = value.parse().map_err(|e| bad(&e))?,
            "--b" => args.b = value.parse().map_err(|e| bad(&e))?,
            "--redis" => args.redis = value.split(',').map(str::to_owned).collect(),
            "--pairs" => args.pairs = value.parse().map_err(|e| bad(&e))?,
            "--rate" if value == "max" => args.rate = None,
            "--rate" => args.rate = Some(value.parse().map_err(|e| bad(&e))?),
            "--secs" => args.secs = value.parse().map_err(|e| bad(&e))?,
            "--pids" => {
                args.pids = value
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?;
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    for addr in [args.a, args.b] {
        if !addr.ip().is_loopback() {
            return Err(format!("{addr}: loopback addresses only"));
        }
    }
    if args.pairs == 0 || args.secs == 0 {
        return Err("--pairs and --secs must be at least 1".into());
    }
    Ok(args)
}

fn connect(addr: SocketAddr, user: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let url = format!("ws://{addr}/ws?user={user}");
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("upgrade");
    let welcome = ws.read().expect("welcome");
    assert!(welcome.to_text().unwrap_or("").contains("welcome"));
    // Short from here on: a receiver checks whether its sender is done.
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    ws
}

/// Commands run so far by every node in `nodes`.
fn redis_calls_all(nodes: &[String]) -> Option<u64> {
    if nodes.is_empty() {
        return None;
    }
    nodes.iter().map(|n| redis_calls(n)).sum()
}

fn redis_calls(addr: &str) -> Option<u64> {
    let mut c = redis_lite::BlockingClient::open(&format!("redis://{addr}")).ok()?;
    let info = c.query(redis_lite::cmd("INFO").arg("commandstats")).ok()?;
    let text = info.as_str()?.to_owned();
    Some(
        text.lines()
            .filter_map(|l| l.split("calls=").nth(1))
            .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// CPU time of one thread: on-CPU nanoseconds (schedstat), and user and
/// system time in clock ticks (stat).
#[derive(Debug, Clone, Copy, Default)]
struct ThreadCpu {
    ns: u64,
    user_ticks: u64,
    system_ticks: u64,
}

/// Every thread of `pid`, by "pid/name".
fn threads(pid: u32) -> BTreeMap<String, ThreadCpu> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let sched = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        // After "(comm) ": state is field 3, utime 14 and stime 15.
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let tick = |i: usize| fields.get(i - 3).and_then(|f| f.parse().ok()).unwrap_or(0);
        let cpu = ThreadCpu {
            ns: sched
                .split(' ')
                .next()
                .and_then(|f| f.parse().ok())
                .unwrap_or(0),
            user_ticks: tick(14),
            system_ticks: tick(15),
        };
        let tid = task.file_name().to_string_lossy().into_owned();
        out.insert(format!("{pid}/{name}/{tid}"), cpu);
    }
    out
}

fn all_threads(pids: &[u32]) -> BTreeMap<String, ThreadCpu> {
    pids.iter().flat_map(|p| threads(*p)).collect()
}

/// One run at one rate.
struct Outcome {
    rate: u64,
    sent: u64,
    received: u64,
    /// Nanoseconds, sorted.
    latencies: Vec<u64>,
    commands: Option<u64>,
    /// Per thread: CPU spent during the run.
    cpu: Vec<(String, ThreadCpu)>,
}

impl Outcome {
    fn percentile_ms(&self, q: f64) -> f64 {
        let lat = &self.latencies;
        let i = ((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1));
        lat.get(i).map_or(f64::NAN, |ns| *ns as f64 / 1e6)
    }

    fn sustained(&self, secs: u64) -> Result<(), String> {
        let due = self.rate * secs;
        if self.sent * 100 < due * 97 {
            return Err(format!(
                "the generator fell behind: {} of {due} sent",
                self.sent
            ));
        }
        if self.received < self.sent {
            return Err(format!("{} of {} delivered", self.received, self.sent));
        }
        let p99 = self.percentile_ms(0.99);
        if p99 > MAX_P99.as_secs_f64() * 1e3 {
            return Err(format!("p99 {p99:.1} ms"));
        }
        Ok(())
    }

    fn print(&self, secs: u64) {
        println!(
            "rate {}: sent {}, received {} ({:.0} msgs/s over {secs} s), lost {}",
            self.rate,
            self.sent,
            self.received,
            self.received as f64 / secs as f64,
            self.sent.saturating_sub(self.received)
        );
        println!(
            "  latency ms: p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            self.percentile_ms(0.5),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.percentile_ms(1.0)
        );
        let delivered = self.received.max(1) as f64;
        if let Some(calls) = self.commands {
            println!(
                "  redis commands: {calls} ({:.4} per delivered message, heartbeats and INFO included)",
                calls as f64 / delivered
            );
        }
        if self.cpu.is_empty() {
            return;
        }
        let total_ns: u64 = self.cpu.iter().map(|(_, c)| c.ns).sum();
        println!(
            "  server CPU: {:.2} µs per delivered message, all threads of both servers",
            total_ns as f64 / 1e3 / delivered
        );
        for (name, c) in self.cpu.iter().filter(|(_, c)| c.ns > 0) {
            println!(
                "    {name:<28} {:>7.2} µs/msg  (user {} + system {} ticks)",
                c.ns as f64 / 1e3 / delivered,
                c.user_ticks,
                c.system_ticks
            );
        }
    }
}

/// What one pair's sender tells its receiver.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    done: AtomicBool,
}

fn run(args: &Args, rate: u64) -> Outcome {
    let start = Instant::now();
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for p in 0..args.pairs {
        let mut rx = connect(args.b, &format!("rx{p}"));
        let tx = connect(args.a, &format!("tx{p}"));
        let progress = Arc::new(Progress::default());
        let seen = progress.clone();
        receivers.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut stopped: Option<Instant> = None;
            loop {
                if seen.done.load(Ordering::Acquire) {
                    let since = *stopped.get_or_insert_with(Instant::now);
                    if lat.len() as u64 >= seen.sent.load(Ordering::Acquire)
                        || since.elapsed() > GRACE
                    {
                        break;
                    }
                }
                match rx.read() {
                    Ok(Message::Text(t)) => {
                        let text = t.as_str();
                        let Some(i) = text.find("\"data\":") else {
                            continue;
                        };
                        let digits = text[i + 7..]
                            .split(|c: char| !c.is_ascii_digit())
                            .next()
                            .unwrap_or("");
                        if let Ok(due) = digits.parse::<u64>() {
                            let now = start.elapsed().as_nanos() as u64;
                            lat.push(now.saturating_sub(due));
                        }
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            let _ = rx.close(None);
            lat
        }));
        senders.push((tx, progress));
    }
    // Give B's route registrations a moment to reach Redis.
    std::thread::sleep(Duration::from_millis(500));
    let before = redis_calls_all(&args.redis);
    let cpu_before = all_threads(&args.pids);
    let per_pair = (rate / args.pairs as u64).max(1);
    let mut send_threads = Vec::new();
    for (p, (mut tx, progress)) in senders.into_iter().enumerate() {
        let secs = args.secs;
        send_threads.push(std::thread::spawn(move || {
            let interval = Duration::from_nanos(1_000_000_000 / per_pair);
            let begin = Instant::now();
            let mut next = begin;
            let mut sent = 0u64;
            let mut frame = String::with_capacity(64);
            while begin.elapsed() < Duration::from_secs(secs) {
                let now = Instant::now();
                if now < next {
                    // Ahead of schedule: what is written goes out now.
                    let _ = tx.flush();
                    progress.sent.store(sent, Ordering::Release);
                    std::thread::sleep(next - now);
                }
                // Stamp the time the message was due (no coordinated omission).
                let due = next.duration_since(start).as_nanos();
                frame.clear();
                use std::fmt::Write;
                let _ = write!(frame, r#"{{"type":"send","to":"rx{p}","data":{due}}}"#);
                if tx.write(Message::text(frame.as_str())).is_err() {
                    break;
                }
                sent += 1;
                next += interval;
            }
            let _ = tx.flush();
            progress.sent.store(sent, Ordering::Release);
            progress.done.store(true, Ordering::Release);
            (sent, tx)
        }));
    }
    let mut sent = 0;
    let mut open = Vec::new();
    for t in send_threads {
        if let Ok((n, tx)) = t.join() {
            sent += n;
            open.push(tx);
        }
    }
    let mut latencies: Vec<u64> = receivers
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    let cpu_after = all_threads(&args.pids);
    let after = redis_calls_all(&args.redis);
    for mut tx in open {
        let _ = tx.close(None);
    }
    latencies.sort_unstable();
    let cpu = cpu_after
        .into_iter()
        .map(|(name, a)| {
            let b = cpu_before.get(&name).copied().unwrap_or_default();
            let delta = ThreadCpu {
                ns: a.ns.saturating_sub(b.ns),
                user_ticks: a.user_ticks.saturating_sub(b.user_ticks),
                system_ticks: a.system_ticks.saturating_sub(b.system_ticks),
            };
            (name, delta)
        })
        .collect();
    Outcome {
        rate,
        sent,
        received: latencies.len() as u64,
        latencies,
        commands: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
        cpu,
    }
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("direct: {e}");
            std::process::exit(2);
        }
    };
    if let Some(rate) = args.rate {
        run(&args, rate).print(args.secs);
        return;
    }
    let mut rate = RAMP_START;
    let mut best: Option<Outcome> = None;
    loop {
        let outcome = run(&args, rate);
        outcome.print(args.secs);
        match outcome.sustained(args.secs) {
            Ok(()) => best = Some(outcome),
            Err(why) => {
                println!("  not sustained: {why}");
                break;
            }
        }
        rate = (rate as f64 * RAMP_FACTOR) as u64;
        // Let queues drain and connections close between steps.
        std::thread::sleep(Duration::from_secs(1));
    }
    match best {
        Some(b) => println!("highest sustained rate: {} msgs/s", b.rate),
        None => println!("no step sustained (the first was {RAMP_START} msgs/s)"),
    }
}
