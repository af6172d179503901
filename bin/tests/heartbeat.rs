//! Heartbeat traffic does not grow with connections: a real `ringhub` on a
//! real `redis-server`, its Redis commands counted with `INFO commandstats`
//! over the same window of heartbeats with few and with many idle
//! connections. (The 100k figure is in bin/README.md, measured with the
//! bench, which holds more sockets than one test process may.)

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Client, Ringhub};
use ringhub_testkit::{RedisServer, require_redis};

const FEW: usize = 100;
const MANY: usize = 3_000;
/// Heartbeats in a window (one per second).
const BEATS: u64 = 4;

/// Calls per command since the last `CONFIG RESETSTAT`.
fn command_calls(redis: &RedisServer) -> BTreeMap<String, u64> {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// The commands Redis received during `BEATS` heartbeats of idle time.
fn idle_window(redis: &RedisServer) -> BTreeMap<String, u64> {
    // Let the routes of the last connections reach Redis first.
    std::thread::sleep(Duration::from_millis(500));
    assert!(redis.cli(&["CONFIG", "RESETSTAT"]).contains("OK"));
    std::thread::sleep(Duration::from_secs(BEATS));
    let mut calls = command_calls(redis);
    // Our own INFO call.
    calls.remove("info");
    calls
}

fn connect(server: &Ringhub, clients: &mut Vec<Client>, upto: usize) {
    while clients.len() < upto {
        let mut c = server.connect(&format!("user=idle{}", clients.len()), &[]);
        assert_eq!(c.recv()["type"], "welcome");
        clients.push(c);
    }
}

#[test]
fn heartbeat_commands_do_not_grow_with_idle_connections() {
    require_redis();
    let redis = RedisServer::start();
    let server = Ringhub::start_on_redis(&redis.url(), "hb-1", &[]);
    let mut clients = Vec::new();
    connect(&server, &mut clients, FEW);
    let few = idle_window(&redis);
    connect(&server, &mut clients, MANY);
    let many = idle_window(&redis);
    eprintln!(
        "commands in {BEATS} heartbeats: {FEW} connections {few:?}, {MANY} connections {many:?}"
    );

    // Four beats per period, so a dead server is pruned within one.
    let beats = few.get("zadd").copied().unwrap_or(0);
    assert!(
        (4 * BEATS - 2..=4 * BEATS + 2).contains(&beats),
        "four ZADDs per heartbeat period: {few:?}"
    );
    for (command, &calls) in &many {
        // Each user's route TTL is refreshed once per ten heartbeats,
        // spread over them: at most a tenth of the users per beat.
        if command == "expire" {
            let most = (BEATS as usize + 1) * MANY.div_ceil(10);
            assert!((calls as usize) <= most, "a burst of EXPIREs: {many:?}");
            continue;
        }
        let before = few.get(command).copied().unwrap_or(0);
        assert!(
            calls <= before + 2,
            "{command}: {calls} calls with {MANY} connections, {before} with {FEW}"
        );
    }
    assert_eq!(clients.len(), MANY);
}
