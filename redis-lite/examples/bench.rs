//! Pipelined throughput of redis-lite next to `redis-benchmark` from the
//! same package, on the same fresh server, with the same commands, number
//! of connections (one) and pipeline depth.
//!
//!     cargo run --profile bench -p redis-lite --example bench -- [requests] [pipeline] [rounds]
//!
//! Both clients send a batch of `pipeline` commands, wait for all the
//! replies, and repeat (redis-benchmark's `-P`). Needs `redis-server` and
//! `redis-benchmark` (`apt-get install redis-server redis-tools`).

use std::process::Command;
use std::time::Instant;

use redis_lite::{BlockingClient, Cmd, Config};
use ringhub_testkit::{RedisCluster, RedisServer};

fn main() {
    let mut args = std::env::args().skip(1);
    let requests: usize = args
        .next()
        .map_or(500_000, |a| a.parse().expect("requests: a number"));
    let depth: usize = args
        .next()
        .map_or(64, |a| a.parse().expect("pipeline: a number"));
    let rounds: usize = args
        .next()
        .map_or(5, |a| a.parse().expect("rounds: a number"));
    let server = RedisServer::start();
    let port = server.port().to_string();
    let version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    println!("redis: {}", String::from_utf8_lossy(&version).trim());
    println!(
        "requests: {requests} per run, pipeline: {depth}, connections: 1, rounds: {rounds} (median)\n"
    );
    println!(
        "| command | redis-benchmark ops/s | redis-lite ops/s | ratio | redis-benchmark CPU ns/op | redis-lite CPU ns/op |"
    );
    println!("|---|---|---|---|---|---|");
    let cases: [(&str, &[&str]); 3] = [
        ("SET", &["SET", "key", "xxx"]),
        ("GET", &["GET", "key"]),
        ("SPUBLISH", &["SPUBLISH", "channel", "xxx"]),
    ];
    let mut client = BlockingClient::open(&server.url()).expect("connect to the benchmark server");
    for (name, words) in cases {
        // Alternate the two clients so that both see the same machine load.
        let (mut reference, mut ours, mut reference_cpu, mut ours_cpu) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let before = cpu_seconds();
            reference.push(redis_benchmark(&port, requests, depth, words));
            let middle = cpu_seconds();
            ours.push(redis_lite(&mut client, requests, depth, words));
            let after = cpu_seconds();
            reference_cpu.push((middle.1 - before.1) / requests as f64 * 1e9);
            ours_cpu.push((after.0 - middle.0) / requests as f64 * 1e9);
        }
        let (reference, ours) = (median(reference), median(ours));
        println!(
            "| {name} | {reference:.0} | {ours:.0} | {:.2} | {:.0} | {:.0} |",
            ours / reference,
            median(reference_cpu),
            median(ours_cpu)
        );
    }
    println!(
        "\nreference: redis-benchmark -h 127.0.0.1 -p <port> -c 1 -P {depth} -n {requests} --csv <command...>"
    );
    drop(client);
    drop(server);
    cluster_spublish(requests, depth, rounds);
}

/// CPU seconds (user + system) used so far by this process, and by its
/// waited-for children (redis-benchmark), from `/proc/self/stat`.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let f: Vec<f64> = after_comm
        .split(' ')
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14-17 of proc(5): utime, stime, cutime, cstime, in clock ticks
    // (100 per second on Linux).
    let tick = 100.0;
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0) / tick;
    (get(11) + get(12), get(13) + get(14))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// SPUBLISH on a 3-master cluster: redis-benchmark with one client per
/// master (`--cluster -c 3`, its `{tag}` placing each client's channel on
/// that client's master) against one redis-lite cluster client that sends
/// `depth` SPUBLISHes to each master per round.
fn cluster_spublish(requests: usize, depth: usize, rounds: usize) {
    let cluster = RedisCluster::start();
    let port = cluster.master_ports()[0].to_string();
    let mut config = Config::cluster_from_urls(&cluster.urls()).expect("cluster URLs");
    // Every SPUBLISH must reach its channel's master at once: no redirects.
    config.max_redirects = 0;
    let mut client = BlockingClient::connect(config).expect("connect to the cluster");
    let masters = client.core().masters();
    let channels: Vec<String> = masters
        .iter()
        .map(|m| {
            (0..)
                .map(|i| format!("channel:{i}"))
                .find(|c| client.core().node_for_key(c.as_bytes()) == Some(m.as_str()))
                .expect("a channel on every master")
        })
        .collect();
    let commands: Vec<Cmd> = channels
        .iter()
        .map(|c| Cmd::new("SPUBLISH").arg(c).arg("xxx"))
        .collect();
    let (mut reference, mut ours, mut reference_cpu, mut ours_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let before = cpu_seconds();
        let out = Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "--cluster",
                "-c",
                &masters.len().to_string(),
            ])
            .args([
                "-P",
                &depth.to_string(),
                "-n",
                &requests.to_string(),
                "--csv",
            ])
            .args(["SPUBLISH", "channel:{tag}", "xxx"])
            .output()
            .expect("run redis-benchmark");
        let middle = cpu_seconds();
        reference.push(csv_rate(&String::from_utf8_lossy(&out.stdout)));
        let start = Instant::now();
        let mut ids = Vec::with_capacity(depth * commands.len());
        let mut done = 0;
        while done < requests {
            ids.clear();
            for _ in 0..depth {
                for c in &commands {
                    ids.push(client.send_ref(c));
                }
            }
            for id in ids.drain(..) {
                client.wait(id).expect("a reply");
            }
            done += depth * commands.len();
        }
        ours.push(done as f64 / start.elapsed().as_secs_f64());
        let after = cpu_seconds();
        reference_cpu.push((middle.1 - before.1) / requests as f64 * 1e9);
        ours_cpu.push((after.0 - middle.0) / done as f64 * 1e9);
    }
    let (reference, ours) = (median(reference), median(ours));
    println!(
        "\nRedis Cluster, {} masters, one connection per master, {depth} in flight on each:\n",
        masters.len()
    );
    println!(
        "| command | redis-benchmark ops/s | redis-lite ops/s | ratio | redis-benchmark CPU ns/op | redis-lite CPU ns/op |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| SPUBLISH | {reference:.0} | {ours:.0} | {:.2} | {:.0} | {:.0} |",
        ours / reference,
        median(reference_cpu),
        median(ours_cpu)
    );
    println!(
        "\nreference: redis-benchmark -h 127.0.0.1 -p <master port> --cluster -c {} -P {depth} -n {requests} --csv SPUBLISH 'channel:{{tag}}' xxx",
        masters.len()
    );
}

fn csv_rate(text: &str) -> f64 {
    // "test","rps",...\n"SET key xxx","123456.79",...
    let line = text
        .lines()
        .find(|l| l.starts_with("\"SPUBLISH") || l.starts_with("\"SET") || l.starts_with("\"GET"));
    let line = line.unwrap_or_else(|| panic!("unexpected redis-benchmark output: {text}"));
    line.split(',')
        .nth(1)
        .and_then(|f| f.trim_matches('"').parse().ok())
        .expect("a rate in the CSV")
}

/// Requests per second as `redis-benchmark` reports them.
fn redis_benchmark(port: &str, requests: usize, depth: usize, words: &[&str]) -> f64 {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-c",
            "1",
            "-P",
            &depth.to_string(),
            "-n",
            &requests.to_string(),
        ])
        .arg("--csv")
        .args(words)
        .output()
        .expect("run redis-benchmark: apt-get install redis-tools");
    csv_rate(&String::from_utf8_lossy(&out.stdout))
}

/// Requests per second of redis-lite doing the same.
fn redis_lite(client: &mut BlockingClient, requests: usize, depth: usize, words: &[&str]) -> f64 {
    // Built once and sent by reference, as redis-benchmark builds its
    // pipeline once.
    let mut command = Cmd::new(words[0]);
    for w in &words[1..] {
        command.push(*w);
    }
    // Warm up the connection and the allocator.
    for r in client.pipeline((0..depth).map(|_| command.clone())) {
        r.expect("warm-up reply");
    }
    let mut ids = Vec::with_capacity(depth);
    let start = Instant::now();
    let mut done = 0;
    while done < requests {
        let batch = depth.min(requests - done);
        ids.clear();
        ids.extend((0..batch).map(|_| client.send_ref(&command)));
        for id in ids.drain(..) {
            client.wait(id).expect("a reply");
        }
        done += batch;
    }
    requests as f64 / start.elapsed().as_secs_f64()
}
