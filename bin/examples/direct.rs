//! Cross-server `send` load: `--pairs` senders connected to server A send
//! to their partner user connected to server B, at `--rate` messages per
//! second in total, for `--secs`. Prints throughput, latency percentiles
//! (send to receive, both ends in this process, so one clock) and Redis
//! commands per delivered message from `INFO commandstats`.
//!
//! ```text
//! ringhub --listen 127.0.0.1:8081 --redis redis://127.0.0.1:6379 &
//! ringhub --listen 127.0.0.1:8082 --redis redis://127.0.0.1:6379 &
//! cargo run --profile bench -p ringhub --example direct -- \
//!     --a 127.0.0.1:8081 --b 127.0.0.1:8082 --redis 127.0.0.1:6379 --pairs 4 --rate 10000 --secs 10
//! ```
//! Loopback only; bounded in time; stops by itself.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

struct Args {
    a: SocketAddr,
    b: SocketAddr,
    redis: Option<String>,
    pairs: usize,
    rate: u64,
    secs: u64,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        a: "127.0.0.1:8081".parse().map_err(|e| format!("{e}"))?,
        b: "127.0.0.1:8082".parse().map_err(|e| format!("{e}"))?,
        redis: None,
        pairs: 4,
        rate: 10_000,
        secs: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--a" => args.a = value.parse().map_err(|e| bad(&e))?,
            "--b" => args.b = value.parse().map_err(|e| bad(&e))?,
            "--redis" => args.redis = Some(value),
            "--pairs" => args.pairs = value.parse().map_err(|e| bad(&e))?,
            "--rate" => args.rate = value.parse().map_err(|e| bad(&e))?,
            "--secs" => args.secs = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    for addr in [args.a, args.b] {
        if !addr.ip().is_loopback() {
            return Err(format!("{addr}: loopback addresses only"));
        }
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
    ws
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

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("direct: {e}");
            std::process::exit(2);
        }
    };
    let start = Arc::new(Instant::now());
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for p in 0..args.pairs {
        let mut rx = connect(args.b, &format!("rx{p}"));
        let tx = connect(args.a, &format!("tx{p}"));
        let start = start.clone();
        let expected_secs = args.secs;
        receivers.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(expected_secs + 5);
            while Instant::now() < deadline {
                match rx.read() {
                    Ok(Message::Text(t)) => {
                        let text = t.as_str();
                        let Some(i) = text.find("\"data\":") else {
                            continue;
                        };
                        let digits: String = text[i + 7..]
                            .chars()
                            .take_while(char::is_ascii_digit)
                            .collect();
                        if let Ok(sent) = digits.parse::<u64>() {
                            let now = start.elapsed().as_nanos() as u64;
                            lat.push(now.saturating_sub(sent));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            lat
        }));
        senders.push(tx);
    }
    // Give B's route registrations a moment to reach Redis.
    std::thread::sleep(Duration::from_millis(500));
    let before = args.redis.as_deref().and_then(redis_calls);
    let per_pair = (args.rate / args.pairs as u64).max(1);
    let mut send_threads = Vec::new();
    for (p, mut tx) in senders.into_iter().enumerate() {
        let start = start.clone();
        let secs = args.secs;
        send_threads.push(std::thread::spawn(move || {
            let interval = Duration::from_nanos(1_000_000_000 / per_pair);
            let begin = Instant::now();
            let mut next = begin;
            let mut sent = 0u64;
            while begin.elapsed() < Duration::from_secs(secs) {
                let now = Instant::now();
                if now < next {
                    // Ahead of schedule: what is written goes out now.
                    let _ = tx.flush();
                    std::thread::sleep(next - now);
                }
                // Stamp the time the message was due (no coordinated omission).
                let due = next.duration_since(*start).as_nanos();
                let frame = format!(r#"{{"type":"send","to":"rx{p}","data":{due}}}"#);
                if tx.write(Message::text(frame)).is_err() {
                    break;
                }
                sent += 1;
                next += interval;
            }
            let _ = tx.flush();
            sent
        }));
    }
    let sent: u64 = send_threads
        .into_iter()
        .map(|t| t.join().unwrap_or(0))
        .sum();
    let mut lat: Vec<u64> = receivers
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    let after = args.redis.as_deref().and_then(redis_calls);
    lat.sort_unstable();
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |ns| *ns as f64 / 1e6)
    };
    println!(
        "sent {sent}, received {} ({:.0} msgs/s over {} s), lost {}",
        lat.len(),
        lat.len() as f64 / args.secs as f64,
        args.secs,
        sent.saturating_sub(lat.len() as u64)
    );
    println!(
        "latency ms: p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    if let (Some(b), Some(a)) = (before, after) {
        let calls = a.saturating_sub(b);
        println!(
            "redis commands: {calls} ({:.2} per delivered message, heartbeats and INFO included)",
            calls as f64 / lat.len().max(1) as f64
        );
    }
}
