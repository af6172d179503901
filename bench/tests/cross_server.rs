//! `direct` and `mixed` against two real `ringhub` servers joined through a
//! real standalone `redis-server`: the bench binary drives them, and every
//! message must arrive exactly once, with no `error` frame.
//!
//! The server binary is the one cargo builds next to this test
//! (`target/<profile>/ringhub`); `cargo test --workspace` builds it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{bench, n};
use ringhub_testkit::{RedisServer, RinghubProcess};
use serde_json::Value;

/// The `ringhub` binary of this build profile.
fn ringhub_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = profile_dir.join("ringhub");
    assert!(
        bin.exists(),
        "{} is missing: build the server first with `cargo build -p ringhub` (same profile \
         as the tests), or run `cargo test --workspace`, which builds it",
        bin.display()
    );
    bin
}

/// A `ringhub` process joined to Redis, killed when dropped.
struct Ringhub(RinghubProcess);

impl Ringhub {
    fn start(redis_url: &str, id: &str, extra: &[&str]) -> Ringhub {
        let mut args = vec!["--threads", "1", "--redis", redis_url, "--server-id", id];
        // The bench's senders go well past the default 100 msgs/s.
        args.extend_from_slice(&["--message-rate", "100000", "--message-burst", "100000"]);
        args.extend_from_slice(extra);
        let wait = Duration::from_secs(20);
        Ringhub(RinghubProcess::start(&ringhub_binary(), &args, &[], wait))
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.0.addr)
    }
}

/// Every message sent arrived once, nothing was refused, and the traffic
/// went through Redis.
fn assert_exactly_once(r: &Value) {
    let sent = n(r, "counters.sent");
    assert!(sent > 0, "nothing sent: {r}");
    assert_eq!(n(r, "lost"), 0, "{r}");
    assert_eq!(n(r, "counters.unique"), n(r, "expected"), "{r}");
    assert_eq!(n(r, "counters.received"), n(r, "expected"), "{r}");
    assert_eq!(n(r, "counters.duplicates"), 0, "{r}");
    assert_eq!(n(r, "counters.unexpected"), 0, "{r}");
    assert_eq!(r["counters"]["errors"], serde_json::json!({}), "{r}");
    let by_command = &r["redis"]["by_command"];
    assert!(
        by_command["publish"].as_u64().unwrap_or(0) + by_command["spublish"].as_u64().unwrap_or(0)
            > 0,
        "no publish reached Redis: {r}"
    );
}

#[test]
fn direct_and_mixed_deliver_every_message_exactly_once() {
    let redis = RedisServer::start();
    let a = Ringhub::start(&redis.url(), "bench-a", &[]);
    let b = Ringhub::start(&redis.url(), "bench-b", &[]);
    let targets = format!("{},{}", a.url(), b.url());
    let pids = format!("{},{}", a.0.child.id(), b.0.child.id());
    let redis_addr = redis.addr();
    let common = [
        "--target",
        &targets,
        "--server-pid",
        &pids,
        "--redis-nodes",
        &redis_addr,
        "-d",
        "2",
        "--drain",
        "10",
    ];

    let mut args = vec!["direct", "--pairs", "20", "--rate", "2000"];
    args.extend_from_slice(&common);
    let (code, r) = bench(&args);
    assert_exactly_once(&r);
    // Each pair's sender is on A and its receiver on B: one delivery per send.
    assert_eq!(n(&r, "expected"), n(&r, "counters.sent"), "{r}");
    assert_eq!(n(&r, "opened"), 40);
    // Redis and the servers are read before the connections close: no
    // user's disconnect (SREM of its route) is counted in the run.
    assert!(r["redis"]["by_command"]["srem"].is_null(), "{r}");
    assert!(r["server"]["cpu_ns_per_delivery"].as_f64().is_some(), "{r}");
    assert_eq!(code, 0, "{r}");

    let mut args = vec![
        "mixed",
        "--users",
        "40",
        "--rooms",
        "6",
        "--rooms-per-user",
        "2",
        "--publish-share",
        "0.5",
        "--rate",
        "1000",
        "--seed",
        "7",
    ];
    args.extend_from_slice(&common);
    let (code, r) = bench(&args);
    assert_exactly_once(&r);
    // Room publishes fan out: more deliveries than sends.
    assert!(n(&r, "expected") > n(&r, "counters.sent"), "{r}");
    assert_eq!(code, 0, "{r}");

    // Split over two worker processes, each sender still knows what its
    // publishes owe (the rooms follow from the seed), and the sum is exact.
    args.extend_from_slice(&["--processes", "2"]);
    let (code, r) = bench(&args);
    assert_exactly_once(&r);
    assert_eq!(n(&r, "processes"), 2);
    assert_eq!(code, 0, "{r}");
}

#[test]
fn users_log_in_with_tokens_minted_from_the_servers_secret() {
    // The server wants at least 32 bytes for HS256.
    const SECRET: &str = "bench-test-secret-of-at-least-32-bytes";
    let redis = RedisServer::start();
    let a = Ringhub::start(&redis.url(), "auth-a", &["--jwt-secret", SECRET]);
    let b = Ringhub::start(&redis.url(), "auth-b", &["--jwt-secret", SECRET]);
    let targets = format!("{},{}", a.url(), b.url());
    let redis_addr = redis.addr();
    let run = |secret: &str| {
        bench(&[
            "direct",
            "--pairs",
            "5",
            "--rate",
            "500",
            "-d",
            "1",
            "--target",
            &targets,
            "--redis-nodes",
            &redis_addr,
            "--token-secret",
            secret,
        ])
    };
    let (code, r) = run(SECRET);
    assert_exactly_once(&r);
    assert_eq!(code, 0, "{r}");

    // A wrong secret: every upgrade refused with 401, and the run fails.
    let (code, r) = run("not-the-secret");
    assert_eq!(n(&r, "counters.handshake_failed"), 10, "{r}");
    assert_eq!(n(&r, "counters.established"), 0, "{r}");
    assert!(
        r["first_error"].as_str().unwrap_or("").contains("401"),
        "{r}"
    );
    assert_eq!(code, 1, "{r}");
}
