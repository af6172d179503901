//! Two real `ringhub` servers on a real 6-node Redis Cluster (3 masters, 3
//! replicas, started by ringhub-testkit): sharded pub/sub, routes in the
//! cluster, and a master killed in the middle of a conversation.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Client, Ringhub, WAIT};
use redis_lite::{BlockingClient, Config, cmd, key_slot};
use ringhub_testkit::RedisCluster;
use serde_json::{Value, json};

const QUIET: Duration = Duration::from_millis(300);

fn server(seeds: &str, id: &str) -> Ringhub {
    Ringhub::start_on_redis(seeds, id, &[])
}

fn user(server: &Ringhub, name: &str) -> Client {
    let mut c = server.connect(&format!("user={name}"), &[]);
    assert_eq!(c.recv()["type"], "welcome");
    c
}

fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The members of a set, read through the cluster's routing.
fn members(redis: &mut BlockingClient, key: &str) -> Vec<String> {
    let mut m: Vec<String> = redis
        .query(cmd("SMEMBERS").arg(key))
        .ok()
        .and_then(|v| {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default();
    m.sort();
    m
}

/// Subscribers of a shard channel, asked of the master that owns it.
fn shard_subscribers(cluster: &RedisCluster, channel: &str) -> Option<i64> {
    let port = cluster.try_master_for_slot(key_slot(channel.as_bytes()))?;
    let out = cluster.node(port).cli(&["PUBSUB", "SHARDNUMSUB", channel]);
    out.lines().nth(1).and_then(|l| l.trim().parse().ok())
}

#[test]
fn two_servers_on_a_cluster_deliver_exactly_once_through_a_master_failover() {
    let mut cluster = RedisCluster::start();
    let seeds = cluster.urls().join(",");
    let mut redis = BlockingClient::connect(Config::cluster_from_urls(&cluster.urls()).unwrap())
        .expect("cluster client");
    let a = server(&seeds, "a");
    let b = server(&seeds, "b");
    assert!(a.log().contains("cluster=true"), "{}", a.log());

    let mut alice_a = user(&a, "alice");
    let mut alice_b = user(&b, "alice");
    let mut bob = user(&a, "bob");
    eventually("alice's routes", WAIT, || {
        members(&mut redis, "user_servers:alice") == ["a", "b"]
    });
    for i in 0..3 {
        bob.send(json!({"type": "send", "to": "alice", "data": i, "id": i}));
        assert_eq!(bob.recv(), json!({"type": "ack", "id": i}));
    }
    for c in [&mut alice_a, &mut alice_b] {
        let got: Vec<Value> = (0..3).map(|_| c.recv()["data"].clone()).collect();
        assert_eq!(got, vec![json!(0), json!(1), json!(2)]);
        c.expect_quiet(QUIET);
    }

    // Sharded topic channels, subscribed from both servers.
    for (i, c) in [&mut alice_a, &mut alice_b].into_iter().enumerate() {
        // Acked once the shard's master confirmed the server's SSUBSCRIBE.
        c.send(json!({"type": "subscribe", "topic": "room", "id": i}));
        assert_eq!(c.recv(), json!({"type": "ack", "id": i}));
    }
    assert_eq!(
        shard_subscribers(&cluster, "topic:room"),
        Some(2),
        "both servers' subscriptions are in place once acked"
    );
    bob.send(json!({"type": "publish", "topic": "room", "data": "t", "id": "p"}));
    assert_eq!(bob.recv(), json!({"type": "ack", "id": "p"}));
    for c in [&mut alice_a, &mut alice_b] {
        assert_eq!(c.recv()["topic"], "room");
        c.expect_quiet(QUIET);
    }

    // Kill the master that carries server b's channel, mid-conversation.
    let master = cluster.master_for_slot(key_slot(b"server:b"));
    cluster.kill(master);
    let started = Instant::now();
    let mut replies: HashMap<i64, Value> = HashMap::new();
    let mut n = 100;
    while Instant::now() < started + Duration::from_secs(4) {
        bob.send(json!({"type": "send", "to": "alice", "data": n, "id": n}));
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every send is answered: acked, or reported as remote_unavailable;
    // nothing is dropped silently. Publishes that fail while the replica
    // takes over are retried (up to 5 s), so most are delivered.
    while replies.len() < (n - 100) as usize {
        let r = bob.recv();
        let id = r["id"].as_i64().expect("every reply carries its id");
        assert!(
            r["type"] == "ack" || r["code"] == "remote_unavailable",
            "{r}"
        );
        assert!(replies.insert(id, r).is_none(), "one reply per send");
    }
    let sent = replies.len();
    let failed = replies.values().filter(|r| r["type"] == "error").count();
    eventually("a replica took over", Duration::from_secs(20), || {
        cluster
            .try_master_for_slot(key_slot(b"server:b"))
            .is_some_and(|p| p != master)
    });
    for s in [&a, &b] {
        eventually("ready again", Duration::from_secs(20), || {
            s.http("GET", "/readyz", &[], "").0 == 200
        });
    }
    eventually(
        "b resubscribed at the new master",
        Duration::from_secs(20),
        || shard_subscribers(&cluster, "server:b") == Some(1),
    );
    // What arrived during the failover: alice on a (bob's server) got every
    // message; on b, every message not reported failed, bar those sent
    // before b had resubscribed whose retries ran out (acked as if alice
    // were offline there), and each at most once.
    let during = |got: Vec<Value>| -> Vec<i64> {
        let mut ids: Vec<i64> = got
            .iter()
            .filter(|v| v["type"] == "message")
            .filter_map(|v| v["data"].as_i64())
            .collect();
        ids.sort_unstable();
        ids
    };
    let on_a = during(alice_a.sync());
    let on_b = during(alice_b.sync());
    alice_a.expect_quiet(QUIET);
    alice_b.expect_quiet(QUIET);
    eprintln!(
        "during the failover: {sent} sends, {failed} reported remote_unavailable, {} delivered through Redis",
        on_b.len()
    );
    assert_eq!(on_a, (100..n).collect::<Vec<_>>(), "local delivery");
    let mut unique = on_b.clone();
    unique.dedup();
    assert_eq!(unique, on_b, "each message once at most");
    for id in &on_b {
        assert!(
            replies[id]["type"] == "ack",
            "{id} was delivered yet reported failed"
        );
    }
    // 64 to 80 of 80 in three runs on an idle host; half leaves room for a
    // loaded one.
    assert!(
        on_b.len() * 2 > sent,
        "most messages sent during the failover are delivered: {} of {sent}",
        on_b.len()
    );
    for i in 0..5 {
        let id = 1000 + i;
        bob.send(json!({"type": "send", "to": "alice", "data": id, "id": id}));
        assert_eq!(bob.recv(), json!({"type": "ack", "id": id}));
    }
    for c in [&mut alice_a, &mut alice_b] {
        let got: Vec<Value> = (0..5).map(|_| c.recv()["data"].clone()).collect();
        assert_eq!(got, (1000..1005).map(|i| json!(i)).collect::<Vec<_>>());
        c.expect_quiet(QUIET);
    }
}
