//! `/metrics` of a real `ringhub` process scraped during and after a load
//! of real WebSocket clients: the server's counts must equal what the
//! clients counted themselves.

mod common;

use std::collections::HashMap;
use std::thread;

use common::{Client, Ringhub};
use serde_json::json;

/// Parses the exposition into `series → value`, checking each sample line.
fn scrape(server: &Ringhub) -> HashMap<String, f64> {
    let (status, body) = server.http("GET", "/metrics", &[], "");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series value");
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {l}"));
            (series.to_owned(), value)
        })
        .collect()
}

fn joined(server: &Ringhub, query: &str) -> Client {
    let mut c = server.connect(query, &[]);
    assert_eq!(c.recv()["type"], "welcome");
    c
}

/// Waits (bounded) until `series` reaches `want`; returns the last scrape.
fn wait_for(server: &Ringhub, series: &str, want: f64) -> HashMap<String, f64> {
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let m = scrape(server);
        if m.get(series) == Some(&want) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} is {:?}, want {want}",
            m.get(series)
        );
        thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn delivered_counts_match_what_the_clients_received() {
    const USERS: usize = 6;
    const SUBSCRIBERS: usize = 6;
    const PUBLISHERS: usize = 3;
    const ROUNDS: usize = 150;

    let server = Ringhub::start(&["--message-rate", "100000", "--message-burst", "100000"]);
    let before = scrape(&server);
    assert_eq!(before["ringhub_messages_delivered_total"], 0.0);

    // Two connections per user, so the two cores deliver to each other.
    let mut receivers = Vec::new();
    for u in 0..USERS {
        for _ in 0..2 {
            let want = ROUNDS * PUBLISHERS / USERS;
            receivers.push((joined(&server, &format!("user=u{u}")), want));
        }
    }
    let mut frames_sent = 0;
    for s in 0..SUBSCRIBERS {
        let mut c = joined(&server, &format!("user=s{s}"));
        c.send(json!({"type": "subscribe", "topic": "load"}));
        c.sync();
        frames_sent += 2;
        receivers.push((c, ROUNDS * PUBLISHERS));
    }
    // Every receiver counts its own messages on its own thread.
    let readers: Vec<_> = receivers
        .into_iter()
        .map(|(mut c, want)| {
            thread::spawn(move || {
                let mut got = 0;
                while got < want {
                    if c.recv()["type"] == "message" {
                        got += 1;
                    }
                }
                c.expect_quiet(std::time::Duration::from_millis(100));
                (c, got)
            })
        })
        .collect();

    // Each round a publisher sends to one user and publishes to the topic;
    // it waits for both acks, so nothing is still in flight at the end.
    // Publisher 0 pauses halfway until the test has scraped, so that scrape
    // falls inside the load however fast the machine is.
    let (halfway_tx, halfway) = std::sync::mpsc::channel::<()>();
    let (resume, resume_rx) = std::sync::mpsc::channel::<()>();
    let mut pause = Some((halfway_tx, resume_rx));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let mut c = joined(&server, &format!("user=p{p}"));
            let pause = if p == 0 { pause.take() } else { None };
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    if round == ROUNDS / 2
                        && let Some((halfway, resume)) = &pause
                    {
                        halfway.send(()).expect("test waits");
                        resume.recv().expect("test resumes");
                    }
                    let to = format!("u{}", (round + p) % USERS);
                    c.send(json!({"type": "send", "to": to, "data": round, "id": 1}));
                    c.send(json!({"type": "publish", "topic": "load", "data": round, "id": 2}));
                    c.recv_type("ack");
                    c.recv_type("ack");
                }
                2 * ROUNDS
            })
        })
        .collect();

    // A scrape in the middle of the load is well formed and moving.
    halfway.recv().expect("publisher 0 got halfway");
    let during = scrape(&server);
    resume.send(()).expect("publisher 0 waits");
    assert!(during["ringhub_connections_active"] >= (USERS * 2 + SUBSCRIBERS) as f64);

    frames_sent += publishers
        .into_iter()
        .map(|p| p.join().expect("publisher"))
        .sum::<usize>();
    let mut clients = Vec::new();
    let mut received = 0;
    for reader in readers {
        let (c, got) = reader.join().expect("receiver");
        received += got;
        clients.push(c);
    }
    // A send reaches the user's 2 connections, a publish every subscriber.
    let routed = PUBLISHERS * ROUNDS;
    assert_eq!(received, routed * 2 + routed * SUBSCRIBERS);
    assert!(
        received as f64 > during["ringhub_messages_delivered_total"],
        "the mid-load scrape saw part of the load"
    );

    let after = scrape(&server);
    assert_eq!(
        after["ringhub_messages_delivered_total"], received as f64,
        "the server delivered exactly what the clients received"
    );
    assert_eq!(
        after["ringhub_messages_received_total"], frames_sent as f64,
        "every client frame (subscribes, pings, sends, publishes) is counted once"
    );
    assert_eq!(
        after["ringhub_delivery_latency_seconds_count{path=\"local\"}"],
        (2 * routed) as f64,
        "one local routing latency per routed message"
    );
    assert_eq!(
        after["ringhub_delivery_latency_seconds_bucket{path=\"local\",le=\"+Inf\"}"],
        (2 * routed) as f64
    );
    assert!(after["ringhub_message_bytes_delivered_total"] > received as f64 * 40.0);
    assert!(after["ringhub_message_bytes_received_total"] > frames_sent as f64 * 15.0);
    for reason in [
        "rate_limit",
        "slow_consumer",
        "remote_failure",
        "overloaded",
    ] {
        assert_eq!(
            after[&format!("ringhub_messages_dropped_total{{reason=\"{reason}\"}}")],
            0.0
        );
    }

    // Half the receivers close cleanly, half just vanish.
    let total = clients.len();
    for (i, mut c) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            c.ws.close(None).expect("close");
            // Read until the server's answer to our close arrives.
            let _ = c.recv_close();
        } else {
            let _ = c.ws.get_ref().shutdown(std::net::Shutdown::Both);
        }
    }
    // The publishers' sockets were dropped (vanished) when their threads ended.
    let m = wait_for(&server, "ringhub_connections_active", 0.0);
    let peer = m["ringhub_disconnects_total{reason=\"peer\",clean=\"true\"}"];
    let vanished = m["ringhub_disconnects_total{reason=\"vanished\",clean=\"false\"}"];
    let clean = total.div_ceil(2);
    assert_eq!(peer, clean as f64, "every clean close is a peer close");
    assert_eq!(
        vanished,
        (total - clean + PUBLISHERS) as f64,
        "every dropped socket is a vanished peer"
    );
    assert_eq!(m["ringhub_unexpected_disconnects_total"], vanished);
}

#[test]
fn client_reported_latency_lands_in_its_histogram() {
    let server = Ringhub::start(&[]);
    let mut c = joined(&server, "user=lat");
    for ms in [0.2, 3.0, 3.0, 40.0] {
        c.send(json!({"type": "latency", "ms": ms}));
    }
    c.sync();
    let m = scrape(&server);
    let bucket = |le: &str| m[&format!("ringhub_client_latency_seconds_bucket{{le=\"{le}\"}}")];
    assert_eq!(bucket("0.00025"), 1.0, "0.2 ms");
    assert_eq!(bucket("0.0025"), 1.0);
    assert_eq!(bucket("0.005"), 3.0, "and two of 3 ms");
    assert_eq!(bucket("0.05"), 4.0, "and 40 ms");
    assert_eq!(m["ringhub_client_latency_seconds_count"], 4.0);
    assert!((m["ringhub_client_latency_seconds_sum"] - 0.0462).abs() < 1e-9);
}

#[test]
fn an_admin_port_serves_metrics_instead_of_the_websocket_port() {
    let server = Ringhub::start(&["--metrics-listen", "127.0.0.1:0"]);
    let log = server.log();
    let admin: std::net::SocketAddr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in the log:\n{log}"));
    let _c = joined(&server, "user=x");

    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(admin).expect("connect to the admin port");
        s.set_read_timeout(Some(common::WAIT)).expect("timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut response = String::new();
        let _ = s.read_to_string(&mut response);
        response
    };
    let metrics = get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("\nringhub_connections_active 1\n"),
        "{metrics}"
    );
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
    let (status, body) = server.http("GET", "/metrics", &[], "");
    assert_eq!(status, 404, "not on the public port: {body}");
}

#[test]
fn cross_server_deliveries_are_timed_and_redis_commands_counted() {
    ringhub_testkit::require_redis();
    let redis = ringhub_testkit::RedisServer::start();
    let start = |id: &str| Ringhub::start_on_redis(&redis.url(), id, &[]);
    let (a, b) = (start("m-a"), start("m-b"));
    let mut bob = joined(&b, "user=bob");
    let mut alice = joined(&a, "user=alice");
    // Until b's route for bob is in Redis, a answers remote_unavailable or
    // finds nobody; retry (bounded) until a message gets through.
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        alice.send(json!({"type": "send", "to": "bob", "data": 1, "id": 1}));
        alice.sync();
        bob.ws
            .get_ref()
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        if let Ok(tungstenite::Message::Text(text)) = bob.ws.read() {
            assert!(text.as_str().contains("\"from\":\"alice\""), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nothing reached bob");
    }
    // Every message b delivered came through Redis and was timed.
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let on_b = scrape(&b);
        let delivered = on_b["ringhub_messages_delivered_total"];
        let timed = on_b["ringhub_delivery_latency_seconds_count{path=\"remote\"}"];
        if delivered >= 1.0 && timed == delivered {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivered {delivered}, timed {timed}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let on_a = scrape(&a);
    assert!(on_a["ringhub_redis_commands_total"] > 0.0);
    assert_eq!(on_a["ringhub_redis_errors_total"], 0.0);
    assert_eq!(
        on_a["ringhub_delivery_latency_seconds_count{path=\"remote\"}"], 0.0,
        "a received nothing through Redis"
    );
}

/// A client that sends a close frame and waits for the answer is a clean,
/// expected close, never a vanished peer, whatever it does with its socket
/// afterwards.
#[test]
fn clean_closes_are_counted_as_peer_closes() {
    let server = Ringhub::start(&["--message-rate", "100000", "--message-burst", "100000"]);
    let clients: Vec<Client> = (0..40)
        .map(|i| joined(&server, &format!("user=clean{i}")))
        .collect();
    // Messages still unread on the clients' side when they close.
    let mut sender = joined(&server, "user=sender");
    for i in 0..40 {
        for n in 0..50 {
            sender.send(json!({"type": "send", "to": format!("clean{i}"), "data": n}));
        }
    }
    for mut c in clients {
        c.ws.close(None).expect("close");
        let _ = c.recv_close();
    }
    sender.ws.close(None).expect("close");
    let _ = sender.recv_close();
    let m = wait_for(&server, "ringhub_connections_active", 0.0);
    assert_eq!(
        m["ringhub_disconnects_total{reason=\"vanished\",clean=\"false\"}"],
        0.0
    );
    assert_eq!(
        m["ringhub_disconnects_total{reason=\"peer\",clean=\"true\"}"],
        41.0
    );
    assert_eq!(m["ringhub_unexpected_disconnects_total"], 0.0);
}
