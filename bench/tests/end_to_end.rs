//! Runs the real `ringhub-bench` binary against a small WebSocket server
//! written with `tungstenite` in this test, and checks the bench's counts
//! against what the server saw and did: exact sends, echoes, drops and
//! duplicates, fan-out deliveries, and connections split over processes.

mod common;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{bench, n};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

/// What the test server does to echo traffic, to check the bench counts it.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// Swallow every n-th echo (0: never).
    drop_every: u64,
    /// Send every n-th echo twice (0: never).
    duplicate_every: u64,
}

#[derive(Default)]
struct Seen {
    connections: AtomicU64,
    echoed: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    published: AtomicU64,
}

type Topics = Arc<Mutex<HashMap<String, Vec<Sender<Message>>>>>;

/// The peer protocol of the engine's pub/sub example, thread per connection.
fn start_server(faults: Faults) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("ws://{}/", listener.local_addr().expect("local addr"));
    let seen = Arc::new(Seen::default());
    let topics: Topics = Arc::default();
    let counters = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (seen, topics) = (Arc::clone(&counters), Arc::clone(&topics));
            thread::spawn(move || serve(stream, faults, &seen, &topics));
        }
    });
    (url, seen)
}

fn serve(stream: TcpStream, faults: Faults, seen: &Seen, topics: &Topics) {
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    seen.connections.fetch_add(1, Ordering::Relaxed);
    // Short read timeouts let one thread both read and deliver fan-out.
    let _ = ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(2)));
    let (tx, rx) = mpsc::channel::<Message>();
    let mut echoes = 0u64;
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                let topic = value["topic"].as_str().unwrap_or_default().to_owned();
                match value["type"].as_str() {
                    Some("subscribe") => topics
                        .lock()
                        .unwrap()
                        .entry(topic)
                        .or_default()
                        .push(tx.clone()),
                    Some("publish") => {
                        seen.published.fetch_add(1, Ordering::Relaxed);
                        for sub in topics.lock().unwrap().get(&topic).into_iter().flatten() {
                            let _ = sub.send(Message::Text(text.clone()));
                        }
                    }
                    _ => {
                        echoes += 1;
                        if faults.drop_every > 0 && echoes.is_multiple_of(faults.drop_every) {
                            seen.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        if faults.duplicate_every > 0
                            && echoes.is_multiple_of(faults.duplicate_every)
                        {
                            seen.duplicated.fetch_add(1, Ordering::Relaxed);
                            if send(&mut ws, Message::Text(text.clone())).is_err() {
                                return;
                            }
                        }
                        seen.echoed.fetch_add(1, Ordering::Relaxed);
                        if send(&mut ws, Message::Text(text)).is_err() {
                            return;
                        }
                    }
                }
            }
            Ok(Message::Close(_)) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        while let Ok(message) = rx.try_recv() {
            if send(&mut ws, message).is_err() {
                return;
            }
        }
    }
}

fn send(ws: &mut WebSocket<TcpStream>, message: Message) -> tungstenite::Result<()> {
    ws.send(message)
}

#[test]
fn echo_counts_match_the_server() {
    let (url, seen) = start_server(Faults::default());
    let (code, r) = bench(&[
        "echo",
        "--url",
        &url,
        "-n",
        "4",
        "--in-flight",
        "4",
        "-d",
        "0.5",
        "--messages",
        "2000",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(n(&r, "counters.established"), 4);
    assert_eq!(
        n(&r, "counters.sent"),
        2000,
        "the --messages bound is exact"
    );
    assert_eq!(n(&r, "counters.unique"), 2000);
    assert_eq!(seen.echoed.load(Ordering::Relaxed), 2000);
    assert_eq!(
        (
            n(&r, "lost"),
            n(&r, "counters.duplicates"),
            n(&r, "counters.unexpected")
        ),
        (0, 0, 0)
    );
    assert_eq!(n(&r, "latency.count"), 2000);
}

#[test]
fn drops_and_duplicates_are_counted_exactly() {
    let faults = Faults {
        drop_every: 7,
        duplicate_every: 5,
    };
    let (url, seen) = start_server(faults);
    let (code, r) = bench(&[
        "echo",
        "--url",
        &url,
        "-n",
        "3",
        "--in-flight",
        "64",
        "-d",
        "0.5",
        "--messages",
        "150",
        "--drain",
        "0.5",
    ]);
    assert_eq!(code, 1, "a run with losses exits 1");
    let dropped = seen.dropped.load(Ordering::Relaxed);
    let duplicated = seen.duplicated.load(Ordering::Relaxed);
    assert!(dropped > 0 && duplicated > 0);
    assert_eq!(n(&r, "counters.sent"), 150);
    assert_eq!(n(&r, "lost"), dropped);
    assert_eq!(n(&r, "counters.duplicates"), duplicated);
    assert_eq!(n(&r, "counters.unique"), 150 - dropped);
}

#[test]
fn fanout_delivers_every_publish_to_every_subscriber() {
    let (url, seen) = start_server(Faults::default());
    let (code, r) = bench(&[
        "fanout",
        "--url",
        &url,
        "-n",
        "6",
        "--publishers",
        "2",
        "--rate",
        "200",
        "-d",
        "0.5",
    ]);
    assert_eq!(code, 0, "{r}");
    let published = seen.published.load(Ordering::Relaxed);
    assert!(published > 0);
    assert_eq!(n(&r, "counters.sent"), published);
    assert_eq!(n(&r, "counters.established"), 8);
    assert_eq!(n(&r, "expected"), published * 6);
    assert_eq!(n(&r, "counters.unique"), published * 6);
    assert_eq!(n(&r, "lost"), 0);
}

#[test]
fn fanout_split_over_processes_counts_every_delivery_once() {
    // Publishers sit in the first worker; subscribers spread over four
    // workers in two processes, whose tallies the parent merges.
    let (url, seen) = start_server(Faults::default());
    let (code, r) = bench(&[
        "fanout",
        "--url",
        &url,
        "-n",
        "9",
        "--publishers",
        "3",
        "--topics",
        "1",
        "--rate",
        "150",
        "-d",
        "0.5",
        "--processes",
        "2",
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!((n(&r, "processes"), n(&r, "threads")), (2, 2));
    let published = seen.published.load(Ordering::Relaxed);
    assert_eq!(n(&r, "counters.sent"), published);
    assert_eq!(n(&r, "counters.unique"), published * 9);
    assert_eq!(n(&r, "latency.count"), published * 9);
    assert_eq!((n(&r, "lost"), n(&r, "counters.duplicates")), (0, 0));
}

#[test]
fn a_sweep_draws_one_chart_point_per_step() {
    let (url, _) = start_server(Faults::default());
    let chart = std::env::temp_dir().join(format!("ringhub-bench-{}.svg", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_ringhub-bench"))
        .args([
            "echo",
            "--url",
            &url,
            "-n",
            "2,4",
            "-d",
            "0.2",
            "--messages",
            "200",
            "--chart",
        ])
        .arg(&chart)
        .arg("--json")
        .output()
        .expect("run ringhub-bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let conns: Vec<u64> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| n(r, "connections"))
        .collect();
    assert_eq!(conns, [2, 4]);
    let svg = std::fs::read_to_string(&chart).expect("chart written");
    let _ = std::fs::remove_file(&chart);
    assert!(svg.starts_with("<svg") && svg.contains(&url) && svg.contains("p99.9"));
}

#[test]
fn worker_processes_merge_into_one_result() {
    let (url, seen) = start_server(Faults::default());
    let (code, r) = bench(&[
        "connect",
        "--url",
        &url,
        "-n",
        "30",
        "--hold",
        "0.2",
        "--processes",
        "3",
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!((n(&r, "processes"), n(&r, "threads")), (3, 2));
    assert_eq!(n(&r, "counters.established"), 30);
    assert_eq!(n(&r, "connect_latency.count"), 30);
    assert_eq!(seen.connections.load(Ordering::Relaxed), 30);
}

#[test]
fn refused_connections_are_failures_with_a_reason() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/");
    let (code, r) = bench(&["connect", "--url", &url, "-n", "5", "--hold", "0"]);
    assert_eq!(code, 1);
    assert_eq!(
        (
            n(&r, "counters.established"),
            n(&r, "counters.connect_failed")
        ),
        (0, 5)
    );
    assert!(
        r["first_error"]
            .as_str()
            .unwrap_or_default()
            .contains("refused"),
        "{r}"
    );
}
