//! Several real `ringhub` processes on one real standalone `redis-server`
//! (started by ringhub-testkit on a free port): cross-server delivery
//! exactly once, pruning of a killed server, a Redis restart in the middle
//! of a conversation, and clean removal on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Ringhub, WAIT};
use ringhub_testkit::{RedisServer, require_redis};
use serde_json::{Value, json};

/// The heartbeat period `Ringhub::start_on_redis` gives every server.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a receiver must stay silent after its last expected message.
const QUIET: Duration = Duration::from_millis(300);

fn server(redis: &RedisServer, id: &str) -> Ringhub {
    Ringhub::start_on_redis(&redis.url(), id, &[])
}

fn user(server: &Ringhub, name: &str) -> Client {
    let mut c = server.connect(&format!("user={name}"), &[]);
    let w = c.recv();
    assert_eq!(w["type"], "welcome", "{w}");
    c
}

/// Polls `check` until it holds, at most `WAIT`.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn members(redis: &RedisServer, key: &str) -> Vec<String> {
    let mut m: Vec<String> = redis
        .cli(&["SMEMBERS", key])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    m.sort();
    m
}

fn wait_route(redis: &RedisServer, user: &str, servers: &[&str]) {
    let key = format!("user_servers:{user}");
    eventually(&format!("{key} = {servers:?}"), || {
        members(redis, &key) == servers
    });
}

fn wait_subscribers(redis: &RedisServer, topic: &str, n: usize) {
    let channel = format!("topic:{topic}");
    eventually(&format!("{n} subscribers of {channel}"), || {
        let out = redis.cli(&["PUBSUB", "NUMSUB", &channel]);
        out.lines().nth(1).and_then(|l| l.trim().parse().ok()) == Some(n)
    });
}

fn messages(got: &[Value]) -> Vec<&Value> {
    got.iter().filter(|v| v["type"] == "message").collect()
}

#[test]
fn two_servers_deliver_sends_and_publishes_exactly_once() {
    require_redis();
    let redis = RedisServer::start();
    let a = server(&redis, "a");
    let b = server(&redis, "b");
    let mut alice = vec![
        user(&a, "alice"),
        user(&a, "alice"),
        user(&b, "alice"),
        user(&b, "alice"),
    ];
    let mut bob_a = user(&a, "bob");
    let mut bob_b = user(&b, "bob");
    wait_route(&redis, "alice", &["a", "b"]);

    bob_a.send(json!({"type": "send", "to": "alice", "data": 1, "id": "x1"}));
    assert_eq!(bob_a.recv(), json!({"type": "ack", "id": "x1"}));
    bob_b.send(json!({"type": "send", "to": "alice", "data": 2, "id": "x2"}));
    assert_eq!(bob_b.recv(), json!({"type": "ack", "id": "x2"}));
    for c in &mut alice {
        // Two messages, each once, whatever the order of arrival.
        let mut got: Vec<Value> = (0..2).map(|_| c.recv()["data"].clone()).collect();
        got.sort_by_key(|v| v.as_i64());
        assert_eq!(got, vec![json!(1), json!(2)]);
        c.expect_quiet(QUIET);
    }
    // bob's two connections are a user too: a send to bob reaches both.
    alice[0].send(json!({"type": "send", "to": "bob", "data": "hi"}));
    for c in [&mut bob_a, &mut bob_b] {
        assert_eq!(c.recv()["data"], "hi");
    }

    // Topics: subscribers on both servers, the publisher subscribed too.
    for c in alice.iter_mut().chain([&mut bob_b]) {
        c.send(json!({"type": "subscribe", "topic": "room"}));
        c.sync();
    }
    wait_subscribers(&redis, "room", 2);
    bob_b.send(json!({"type": "publish", "topic": "room", "data": "t", "id": 9}));
    // The ack comes once Redis took the publish; the local copy before it.
    let mut got = Vec::new();
    while got.last() != Some(&json!({"type": "ack", "id": 9})) {
        got.push(bob_b.recv());
    }
    got.extend(bob_b.sync());
    let echoes = messages(&got).len();
    assert_eq!(echoes, 1, "the publisher's echo is not doubled: {got:?}");
    for c in &mut alice {
        // From the other server it may arrive after a local pong: wait.
        assert_eq!(c.recv()["topic"], "room");
        c.expect_quiet(QUIET);
    }
    assert!(bob_a.sync().is_empty(), "not subscribed");

    // A server holds a topic's channel only while it has local subscribers:
    // one of a's two leaves (a keeps the channel), then the other closes
    // (a unsubscribes; b still listens).
    alice[0].send(json!({"type": "unsubscribe", "topic": "room"}));
    alice[0].sync();
    wait_subscribers(&redis, "room", 2);
    drop(alice.remove(1));
    wait_subscribers(&redis, "room", 1);
}

#[test]
fn three_servers_and_the_publish_api() {
    require_redis();
    let redis = RedisServer::start();
    let servers: Vec<Ringhub> = ["s1", "s2", "s3"]
        .iter()
        .map(|id| Ringhub::start_on_redis(&redis.url(), id, &["--api-key", "k-0123456789"]))
        .collect();
    let mut alice: Vec<Client> = servers.iter().map(|s| user(s, "alice")).collect();
    wait_route(&redis, "alice", &["s1", "s2", "s3"]);
    let mut bob = user(&servers[1], "bob");
    for i in 0..5 {
        bob.send(json!({"type": "send", "to": "alice", "data": i, "id": i}));
        assert_eq!(bob.recv()["type"], "ack");
    }
    for c in &mut alice {
        let got: Vec<Value> = (0..5).map(|_| c.recv()["data"].clone()).collect();
        let mut sorted = got.clone();
        sorted.sort_by_key(|v| v.as_i64());
        assert_eq!(sorted, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
        c.expect_quiet(QUIET);
    }
    let auth = [("Authorization", "Bearer k-0123456789")];
    let body = r#"{"type":"broadcast","data":"all","from":"ops"}"#;
    assert_eq!(servers[2].http("POST", "/api/publish", &auth, body).0, 202);
    for c in alice.iter_mut().chain([&mut bob]) {
        let got = c.recv();
        assert_eq!((&got["from"], &got["data"]), (&json!("ops"), &json!("all")));
        c.expect_quiet(QUIET);
    }
}

#[test]
fn a_killed_server_is_pruned_and_its_users_reconnect_elsewhere() {
    require_redis();
    let redis = RedisServer::start();
    let a = server(&redis, "a");
    let mut b = server(&redis, "b");
    let _alice_b = user(&b, "alice");
    let mut bob = user(&a, "bob");
    wait_route(&redis, "alice", &["b"]);
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &b.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Pruned by the survivor within one heartbeat period (1 s here): it
    // scans four times a period for servers silent for half of one.
    wait_route(&redis, "alice", &[]);
    let pruned = killed.elapsed();
    assert!(
        pruned <= HEARTBEAT,
        "pruned {pruned:?} after the kill, over the heartbeat period of {HEARTBEAT:?}"
    );
    eventually("b out of servers", || {
        redis.cli(&["ZSCORE", "servers", "b"]).trim().is_empty()
    });
    b.wait_exit();
    assert!(members(&redis, "server_users:b").is_empty());
    // Sending to alice meanwhile is not an error: she is offline.
    bob.send(json!({"type": "send", "to": "alice", "data": 0, "id": 1}));
    assert_eq!(bob.recv()["type"], "ack");
    // She reconnects to the survivor and is reachable again.
    let mut alice = user(&a, "alice");
    bob.send(json!({"type": "send", "to": "alice", "data": 1, "id": 2}));
    assert_eq!(bob.recv()["type"], "ack");
    assert_eq!(alice.recv()["data"], 1);
}

#[test]
fn a_redis_restart_mid_conversation_is_survived() {
    require_redis();
    let mut redis = RedisServer::start();
    let a = server(&redis, "a");
    let b = server(&redis, "b");
    let mut alice = user(&b, "alice");
    let mut local = user(&a, "local");
    let mut bob = user(&a, "bob");
    wait_route(&redis, "alice", &["b"]);
    bob.send(json!({"type": "send", "to": "alice", "data": "before"}));
    assert_eq!(alice.recv()["data"], "before");

    redis.kill();
    eventually("a not ready", || a.http("GET", "/readyz", &[], "").0 == 503);
    // Local delivery goes on; the remote part is reported, not dropped.
    bob.send(json!({"type": "send", "to": "local", "data": "still here", "id": "l"}));
    let got = bob.recv();
    assert_eq!(
        (&got["code"], &got["id"]),
        (&json!("remote_unavailable"), &json!("l")),
        "{got}"
    );
    assert_eq!(local.recv()["data"], "still here");

    // Redis comes back empty: the servers re-register and resubscribe.
    redis.restart();
    eventually("a ready", || a.http("GET", "/readyz", &[], "").0 == 200);
    eventually("b ready", || b.http("GET", "/readyz", &[], "").0 == 200);
    wait_route(&redis, "alice", &["b"]);
    eventually("b resubscribed", || {
        redis
            .cli(&["PUBSUB", "NUMSUB", "server:b"])
            .lines()
            .nth(1)
            .map(str::trim)
            == Some("1")
    });
    bob.send(json!({"type": "send", "to": "alice", "data": "after", "id": "z"}));
    assert_eq!(bob.recv(), json!({"type": "ack", "id": "z"}));
    assert_eq!(alice.recv()["data"], "after");
}

#[test]
fn sigterm_removes_the_server_and_its_routes() {
    require_redis();
    let redis = RedisServer::start();
    let mut a = server(&redis, "a");
    let mut alice = user(&a, "alice");
    wait_route(&redis, "alice", &["a"]);
    eventually("a heartbeats", || {
        !redis.cli(&["ZSCORE", "servers", "a"]).trim().is_empty()
    });
    a.terminate();
    assert_eq!(alice.recv_close(), Some(1001));
    assert!(a.wait_exit().success(), "{}", a.log());
    // The engine waited for alice's FIN (she holds the socket) while core 0,
    // with nothing to close, stopped at once: the relay must go on serving
    // Redis in the meantime.
    assert!(!a.log().contains("no reply"), "{}", a.log());
    assert!(members(&redis, "user_servers:alice").is_empty());
    assert!(members(&redis, "server_users:a").is_empty());
    assert!(redis.cli(&["ZSCORE", "servers", "a"]).trim().is_empty());
}

#[test]
fn a_server_pruned_while_alive_registers_its_routes_again() {
    require_redis();
    let redis = RedisServer::start();
    let a = server(&redis, "a");
    let _alice = user(&a, "alice");
    wait_route(&redis, "alice", &["a"]);
    // What a survivor does to a server it believes dead (one whose beats
    // were late past the tolerance).
    redis.cli(&["SREM", "user_servers:alice", "a"]);
    redis.cli(&["DEL", "server_users:a"]);
    redis.cli(&["ZREM", "servers", "a"]);
    let pruned = Instant::now();
    // Its next beat adds it back rather than updating it: it re-registers.
    wait_route(&redis, "alice", &["a"]);
    let healed = pruned.elapsed();
    assert!(
        healed <= HEARTBEAT,
        "routes back {healed:?} after a false prune, over one period"
    );
    eventually("alice back in server_users:a", || {
        members(&redis, "server_users:a") == ["alice"]
    });
    assert!(
        a.log().contains("pruned from Redis while alive"),
        "{}",
        a.log()
    );
}

/// The value of an unlabelled counter in `/metrics`.
fn counter(server: &Ringhub, name: &str) -> u64 {
    let (status, body) = server.http("GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn a_stalled_redis_slows_the_senders_down_and_loses_nothing() {
    require_redis();
    let mut redis = RedisServer::start();
    // Alice may send as fast as she can; bob, a debug-built test client
    // reading 20 MB, may fall far behind without being dropped.
    let fast = [
        "--message-rate",
        "1000000",
        "--message-burst",
        "1000000",
        "--send-queue-bytes",
        "268435456",
    ];
    let a = Ringhub::start_on_redis(&redis.url(), "a", &fast);
    let b = Ringhub::start_on_redis(&redis.url(), "b", &fast);
    let mut bob = user(&b, "bob");
    wait_route(&redis, "bob", &["b"]);
    let mut alice = user(&a, "alice");
    alice.send(json!({"type": "send", "to": "bob", "data": 0, "id": "first"}));
    assert_eq!(alice.recv_type("ack")["id"], "first");
    assert_eq!(bob.recv_type("message")["data"], 0);

    // Stopped, Redis answers nothing: the relay holds at most 4 MiB of
    // publishes unanswered, then the forward queue grows past the point
    // where alice's connection is paused. Redis comes back in a second,
    // well inside the reply timeout.
    const N: u64 = 20_000;
    // Bob reads all along, so only Redis is slow.
    let reader = std::thread::spawn(move || {
        for i in 1..=N {
            let m = bob.recv_type("message");
            assert_eq!(m["data"][0], i, "in order, none lost, none twice");
        }
        assert_eq!(bob.recv_type("message")["data"], "last");
        bob.expect_quiet(QUIET);
    });
    let pid = redis.pid().expect("redis runs");
    signal(pid, "-STOP");
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        signal(pid, "-CONT");
    });
    let pad = "x".repeat(1000);
    for i in 1..=N {
        // Blocks while alice is paused: that is the point.
        alice.send(json!({"type": "send", "to": "bob", "data": [i, pad]}));
    }
    resume.join().unwrap();
    alice.send(json!({"type": "send", "to": "bob", "data": "last", "id": "last"}));
    let ack = alice.recv();
    assert_eq!(ack["type"], "ack", "no error before the last ack: {ack}");
    assert_eq!(ack["id"], "last");

    reader.join().expect("bob got every message once, in order");
    assert!(
        counter(&a, "ringhub_senders_paused_total") > 0,
        "alice was paused"
    );
    let dropped = {
        let (_, body) = a.http("GET", "/metrics", &[], "");
        body.lines()
            .filter(|l| l.starts_with("ringhub_messages_dropped_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    assert_eq!(dropped, 0, "nothing was dropped");
    redis.kill();
}

#[test]
fn an_acked_subscribe_gets_every_later_publish_from_any_server() {
    require_redis();
    let redis = RedisServer::start();
    let a = server(&redis, "a");
    let b = server(&redis, "b");
    let mut reader = user(&b, "reader");
    let mut writer = user(&a, "writer");
    // Both relays are connected (a subscribe before that is answered
    // `remote_unavailable`, as a busy machine showed).
    wait_route(&redis, "reader", &["b"]);
    wait_route(&redis, "writer", &["a"]);
    // Fresh topics, so each ack waits for Redis to confirm b's subscription;
    // the publish leaves a right after it.
    for i in 0..20 {
        let topic = format!("fresh-{i}");
        reader.send(json!({"type": "subscribe", "topic": topic, "id": i}));
        assert_eq!(reader.recv(), json!({"type": "ack", "id": i}));
        let numsub = redis.cli(&["PUBSUB", "NUMSUB", &format!("topic:{topic}")]);
        assert_eq!(
            numsub.lines().nth(1).map(str::trim),
            Some("1"),
            "subscribed once acked"
        );
        writer.send(json!({"type": "publish", "topic": topic, "data": i}));
        let m = reader.recv();
        assert_eq!(
            (m["type"].as_str(), &m["data"]),
            (Some("message"), &json!(i))
        );
    }
    // Unsubscribed and acked: nothing more arrives.
    reader.send(json!({"type": "unsubscribe", "topic": "fresh-0", "id": "u"}));
    assert_eq!(reader.recv(), json!({"type": "ack", "id": "u"}));
    wait_subscribers(&redis, "fresh-0", 0);
    writer.send(json!({"type": "publish", "topic": "fresh-0", "data": "late", "id": "p"}));
    assert_eq!(writer.recv(), json!({"type": "ack", "id": "p"}));
    reader.expect_quiet(QUIET);
}

#[test]
fn a_redis_named_by_host_name_is_resolved_off_the_core() {
    require_redis();
    let redis = RedisServer::start();
    // The name goes to a helper thread (resolve, then connect address by
    // address); the core never waits for DNS.
    let by_name = format!("redis://localhost:{}", redis.port());
    let a = Ringhub::start_on_redis(&by_name, "a", &[]);
    let b = server(&redis, "b");
    let mut alice = user(&a, "alice");
    let mut bob = user(&b, "bob");
    wait_route(&redis, "alice", &["a"]);
    wait_route(&redis, "bob", &["b"]);
    alice.send(json!({"type": "send", "to": "bob", "data": 1, "id": 1}));
    assert_eq!(alice.recv(), json!({"type": "ack", "id": 1}));
    assert_eq!(bob.recv_type("message")["data"], 1);
    bob.send(json!({"type": "send", "to": "alice", "data": 2, "id": 2}));
    assert_eq!(bob.recv(), json!({"type": "ack", "id": 2}));
    assert_eq!(alice.recv_type("message")["data"], 2);
}
