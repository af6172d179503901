//! Command line: one subcommand per workload, shared options flattened in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::target::Target;

#[derive(Debug, Parser)]
#[command(
    name = "ringhub-bench",
    version,
    about = "Load generator for WebSocket servers on this host: connection density, echo and fan-out latency",
    after_help = "Targets must be on this host (127.0.0.0/8). Pin the server and the generator to separate cores, e.g.\n  \
                  taskset -c 0 <server> & taskset -c 1 ringhub-bench echo --url ws://127.0.0.1:9000/ --server-pid $!"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open connections, hold them idle, report connect rate, failures and
    /// the server's memory per connection.
    Connect {
        #[command(flatten)]
        common: Common,
        /// Connections to hold; a list (10000,20000) runs one step each.
        #[arg(long, short = 'n', value_delimiter = ',', default_value = "10000")]
        connections: Vec<usize>,
        /// Seconds to hold them once all are up.
        #[arg(long, default_value = "5", value_parser = seconds)]
        hold: Duration,
    },
    /// Every connection sends stamped messages and waits for their echo.
    Echo {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
        /// Connections; a list (100,1000,5000) runs one step each.
        #[arg(long, short = 'n', value_delimiter = ',', default_value = "100")]
        connections: Vec<usize>,
        /// Messages each connection keeps in flight.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
        in_flight: u32,
    },
    /// Publishers send to topics at a fixed rate; every subscriber receives
    /// each message of its topic.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
        /// Subscribers; a list (1000,5000) runs one step each.
        #[arg(long, short = 'n', value_delimiter = ',', default_value = "1000")]
        subscribers: Vec<usize>,
        /// Publishing connections (each subscriber tracks every publisher of its topic).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
        publishers: u32,
        /// Topics; subscribers and publishers spread over them round-robin.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        topics: u32,
        /// Messages per second, all publishers together.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        rate: u64,
    },
    /// ringhub servers: `--pairs` users `s<i>` on the first `--target` send
    /// to their partners `r<i>` on the second, through Redis.
    #[command(after_help = RINGHUB_NOTE)]
    Direct {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        servers: Servers,
        /// Sender/receiver pairs (two connections each).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        pairs: u32,
        /// Messages per second, all senders together (open loop).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        rate: u64,
    },
    /// ringhub servers: a chat of `--users` users spread over the targets,
    /// each in `--rooms-per-user` rooms; room publishes and direct messages
    /// at a total rate. Deterministic for a given `--seed`.
    #[command(after_help = RINGHUB_NOTE)]
    Mixed {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        servers: Servers,
        /// Users, one connection each, round-robin over the targets.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        users: u32,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rooms: u32,
        /// Rooms each user joins (at most the servers' topics per connection).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=256))]
        rooms_per_user: u32,
        /// Share of messages that are room publishes (0 to 1); the rest are
        /// direct messages to a user chosen at random.
        #[arg(long, default_value_t = 0.5, value_parser = share)]
        publish_share: f64,
        /// Messages per second, all users together (open loop).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        rate: u64,
        /// Picks the rooms and every message's recipient.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Internal: a worker process started by the bench itself.
    #[command(hide = true)]
    Worker,
}

/// Options of every workload.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Server to drive.
    #[arg(long, default_value = "ws://127.0.0.1:9000/")]
    pub url: Target,
    /// Run the same workload against each of these servers instead, one
    /// after another, and report them side by side.
    #[arg(long, value_delimiter = ',', conflicts_with = "url")]
    pub compare: Vec<Target>,
    /// PID of the server (one per --compare URL): its memory and CPU are
    /// read from /proc.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Print results as JSON on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG chart of latency and server memory against connections.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Worker processes (raised automatically so that none holds more
    /// connections than RLIMIT_NOFILE allows).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub processes: u32,
    /// Worker threads per process, each with its own epoll.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// Source addresses 127.0.0.1..=127.0.0.N to connect from.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=254))]
    pub sources: u32,
    /// Upgrades in progress at once, all workers together.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub concurrency: u32,
    /// New connections per second, all workers together (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub connect_rate: u64,
    /// Seconds a connection may take to connect and upgrade.
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub connect_timeout: Duration,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

const RINGHUB_NOTE: &str = "\
The servers rate-limit each connection (RINGHUB_MESSAGE_RATE, default 100 msgs/s,
burst 200): start them with --message-rate/--message-burst above the rate per
sender, or use enough senders. Rejected messages come back as `error` frames and
are counted by code. Example, two servers on one Redis:
  ringhub --listen 127.0.0.1:8081 --redis redis://127.0.0.1:6379 --message-rate 1000000 --message-burst 1000000 &
  ringhub --listen 127.0.0.1:8082 --redis redis://127.0.0.1:6379 --message-rate 1000000 --message-burst 1000000 &
  ringhub-bench direct --target ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws --pairs 100 --rate 10000";

/// The ringhub servers of a cross-server workload.
#[derive(Debug, Args, Clone)]
pub struct Servers {
    /// ringhub servers' WebSocket URLs (`ws://127.0.0.1:8081/ws`), comma
    /// separated; `--server-pid` then lists their PIDs, summed in reports.
    #[arg(long = "target", value_delimiter = ',', required = true)]
    pub targets: Vec<Target>,
    /// The servers' HS256 secret (their RINGHUB_JWT_SECRET): each user logs
    /// in with a token minted here instead of `?user=` (development mode).
    #[arg(long, env = "RINGHUB_BENCH_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Seconds between every user being connected and the first send, for
    /// the servers to announce their users and rooms to Redis.
    #[arg(long, default_value = "1", value_parser = seconds)]
    pub settle: Duration,
    /// Redis nodes (`127.0.0.1:6379`, every node of a cluster), comma
    /// separated: their `INFO commandstats` at the go and at the end give
    /// the Redis commands per delivered message.
    #[arg(long, value_delimiter = ',', value_parser = loopback_addr)]
    pub redis_nodes: Vec<SocketAddr>,
}

fn loopback_addr(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("`{s}` is not an address like 127.0.0.1:6379"))?;
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!(
            "{addr}: the bench only talks to this host (127.0.0.0/8)"
        ))
    }
}

/// Options of workloads that send messages.
#[derive(Debug, Args, Clone)]
pub struct Load {
    /// Message size in bytes, JSON envelope included [default: 64; direct
    /// and mixed: 100].
    #[arg(long)]
    pub size: Option<usize>,
    /// Seconds of the measured phase.
    #[arg(long, short = 'd', default_value = "10", value_parser = seconds)]
    pub duration: Duration,
    /// Upper bound on messages sent in a step, whatever the duration.
    #[arg(long, default_value_t = 100_000_000)]
    pub messages: u64,
    /// Longest wait, in seconds, for messages still in flight at the end.
    #[arg(long, default_value = "5", value_parser = seconds)]
    pub drain: Duration,
}

/// A share between 0 and 1.
fn share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0..=1"))
    }
}

/// Seconds as a decimal number: `10`, `0.5`. At most a day, to keep runs bounded.
fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{secs} s is outside 0..=86400"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Common {
    /// Servers to run against, each with its PID if one was given.
    pub fn targets(&self) -> Result<Vec<(Target, Option<u32>)>, String> {
        let targets = if self.compare.is_empty() {
            vec![self.url.clone()]
        } else {
            self.compare.clone()
        };
        if !self.server_pid.is_empty() && self.server_pid.len() != targets.len() {
            return Err(format!(
                "--server-pid has {} PIDs for {} servers: give one per server, in the same order",
                self.server_pid.len(),
                targets.len()
            ));
        }
        Ok(targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, self.server_pid.get(i).copied()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringhub-bench").chain(args.split_whitespace()))
    }

    #[test]
    fn defaults_match_the_readme_runs() {
        let Command::Echo {
            common,
            load,
            connections,
            in_flight,
        } = parse("echo").unwrap().command
        else {
            panic!("not echo")
        };
        assert_eq!((connections, in_flight, load.size), (vec![100], 16, None));
        assert_eq!(load.duration, Duration::from_secs(10));
        assert_eq!(
            common.targets().unwrap(),
            vec![("ws://127.0.0.1:9000/".parse().unwrap(), None)]
        );
    }

    #[test]
    fn lists_and_compare() {
        let cli = parse(
            "fanout -n 1000,5000 --rate 50 --compare ws://127.0.0.1:9000/,ws://127.0.0.1:9001/ --server-pid 10,11 --json",
        )
        .unwrap();
        let Command::Fanout {
            common,
            subscribers,
            rate,
            ..
        } = cli.command
        else {
            panic!("not fanout")
        };
        assert_eq!((subscribers, rate), (vec![1000, 5000], 50));
        let targets = common.targets().unwrap();
        assert_eq!(
            targets[1],
            ("ws://127.0.0.1:9001/".parse().unwrap(), Some(11))
        );
        assert!(common.json);
    }

    #[test]
    fn cross_server_workloads_take_several_targets() {
        let cli = parse(
            "direct --target ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws --pairs 50 --rate 20000 --server-pid 3,4 --token-secret s3cret --settle 0.5",
        )
        .unwrap();
        let Command::Direct {
            common,
            servers,
            pairs,
            rate,
            ..
        } = cli.command
        else {
            panic!("not direct")
        };
        assert_eq!((pairs, rate), (50, 20_000));
        assert_eq!(servers.targets.len(), 2);
        assert_eq!(servers.targets[1].path(), "/ws");
        assert_eq!(common.server_pid, [3, 4]);
        assert_eq!(servers.token_secret.as_deref(), Some("s3cret"));
        assert_eq!(servers.settle, Duration::from_millis(500));

        let cli =
            parse("mixed --target ws://127.0.0.1:1/ws --publish-share 0.25 --seed 9").unwrap();
        let Command::Mixed {
            users,
            rooms_per_user,
            publish_share,
            seed,
            load,
            ..
        } = cli.command
        else {
            panic!("not mixed")
        };
        assert_eq!((users, rooms_per_user, seed, load.size), (1000, 4, 9, None));
        assert!((publish_share - 0.25).abs() < 1e-9);

        assert!(parse("direct").is_err(), "a target is required");
        assert!(parse("direct --target ws://127.0.0.1:1/ws --redis-nodes 10.0.0.1:6379").is_err());
        let cli = parse(
            "direct --target ws://127.0.0.1:1/ws --redis-nodes 127.0.0.1:7000,127.0.0.1:7001",
        )
        .unwrap();
        let Command::Direct { servers, .. } = cli.command else {
            panic!("not direct")
        };
        assert_eq!(servers.redis_nodes.len(), 2);
        assert!(parse("direct --target ws://10.0.0.1:1/ws").is_err());
        assert!(parse("direct --target ws://127.0.0.1:1/ws --pairs 0").is_err());
        assert!(parse("mixed --target ws://127.0.0.1:1/ws --publish-share 1.5").is_err());
        assert!(parse("mixed --target ws://127.0.0.1:1/ws --rooms-per-user 257").is_err());
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert!(parse("echo --url ws://10.1.2.3:80/").is_err());
        assert!(parse("echo --in-flight 0").is_err());
        assert!(parse("connect --hold -1").is_err());
        assert!(parse("connect --hold soon").is_err());
        assert!(parse("echo --url ws://127.0.0.1:1/ --compare ws://127.0.0.1:2/").is_err());
        let cli =
            parse("connect --compare ws://127.0.0.1:1/,ws://127.0.0.1:2/ --server-pid 5").unwrap();
        let Command::Connect { common, .. } = cli.command else {
            panic!("not connect")
        };
        assert!(common.targets().unwrap_err().contains("one per server"));
    }
}
