//! What the servers cost Redis: `INFO cpu commandstats` of every node
//! (commands by name, and the CPU time Redis used), read when the measured
//! phase starts and when it ends. One inline command and one bulk reply, so
//! a plain blocking socket does.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest wait for a node's answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest INFO reply accepted: commandstats is a few KiB.
const MAX_REPLY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("Redis at {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("Redis at {addr} answered INFO with `{line}`")]
    Reply { addr: SocketAddr, line: String },
}

/// Calls per command (`publish`, `spublish`, ...), summed over nodes.
pub type CommandCalls = BTreeMap<String, u64>;

/// One reading of a set of nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub calls: CommandCalls,
    /// `used_cpu_user + used_cpu_sys` of every node, in nanoseconds.
    pub cpu_ns: u64,
}

/// Reads `INFO cpu commandstats` (Redis 7+) of each node and adds them up.
pub fn read(nodes: &[SocketAddr]) -> Result<Reading, InfoError> {
    let mut total = Reading::default();
    for &addr in nodes {
        let text = info(addr)?;
        for (name, calls) in parse_commandstats(&text) {
            *total.calls.entry(name).or_default() += calls;
        }
        total.cpu_ns += parse_cpu_ns(&text);
    }
    Ok(total)
}

/// What changed between two readings, without the INFO calls that took them.
pub fn delta(before: &CommandCalls, after: &CommandCalls) -> CommandCalls {
    after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .filter_map(|(name, &calls)| {
            let d = calls.saturating_sub(before.get(name).copied().unwrap_or(0));
            (d > 0).then(|| (name.clone(), d))
        })
        .collect()
}

fn info(addr: SocketAddr) -> Result<String, InfoError> {
    let io = |source| InfoError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.write_all(b"INFO cpu commandstats\r\n").map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    let len = line
        .strip_prefix('$')
        .and_then(|n| n.trim_end().parse::<usize>().ok())
        .filter(|&n| n <= MAX_REPLY)
        .ok_or_else(|| InfoError::Reply {
            addr,
            line: line.trim_end().to_owned(),
        })?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).map_err(io)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `used_cpu_sys` + `used_cpu_user` (seconds, all of Redis's threads).
fn parse_cpu_ns(text: &str) -> u64 {
    let seconds: f64 = text
        .lines()
        .filter_map(|line| {
            let value = line
                .strip_prefix("used_cpu_sys:")
                .or_else(|| line.strip_prefix("used_cpu_user:"))?;
            value.trim().parse::<f64>().ok()
        })
        .sum();
    (seconds * 1e9) as u64
}

/// `cmdstat_<name>:calls=<n>,...` lines into (name, n); subcommands such
/// as `cmdstat_client|setname` keep their full name.
fn parse_commandstats(text: &str) -> impl Iterator<Item = (String, u64)> + '_ {
    text.lines().filter_map(|line| {
        let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
        let calls = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))?
            .parse()
            .ok()?;
        Some((name.to_owned(), calls))
    })
}

/// The servers' Redis traffic over a measured phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisUsage {
    /// Commands of every kind but the INFO that measured them.
    pub commands: u64,
    /// `commands` per distinct delivery.
    pub per_delivery: Option<f64>,
    pub by_command: CommandCalls,
    /// CPU time Redis used (every node), and per distinct delivery, in ns.
    pub cpu_ns: u64,
    pub cpu_ns_per_delivery: Option<f64>,
}

impl RedisUsage {
    pub fn new(before: &Reading, after: &Reading, deliveries: u64) -> Self {
        let by_command = delta(&before.calls, &after.calls);
        let commands = by_command.values().sum();
        let cpu_ns = after.cpu_ns.saturating_sub(before.cpu_ns);
        let per = |n: u64| (deliveries > 0).then(|| n as f64 / deliveries as f64);
        RedisUsage {
            commands,
            per_delivery: per(commands),
            by_command,
            cpu_ns,
            cpu_ns_per_delivery: per(cpu_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# Commandstats\r\n\
        cmdstat_spublish:calls=1000,usec=900,usec_per_call=0.90,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=4,usec=200,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setname:calls=2,usec=1,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_broken:usec=1\r\n";

    #[test]
    fn parses_every_command_line() {
        let calls: Vec<_> = parse_commandstats(SAMPLE).collect();
        assert_eq!(
            calls,
            [
                ("spublish".to_owned(), 1000),
                ("info".to_owned(), 4),
                ("client|setname".to_owned(), 2),
            ]
        );
    }

    #[test]
    fn delta_leaves_out_the_measuring_and_the_unchanged() {
        let before: CommandCalls = [
            ("spublish".into(), 1000),
            ("info".into(), 4),
            ("zadd".into(), 7),
        ]
        .into_iter()
        .collect();
        let after: CommandCalls = [
            ("spublish".into(), 1500),
            ("info".into(), 9),
            ("zadd".into(), 7),
            ("smembers".into(), 3),
        ]
        .into_iter()
        .collect();
        let d = delta(&before, &after);
        assert_eq!(
            d.into_iter().collect::<Vec<_>>(),
            [("smembers".to_owned(), 3), ("spublish".to_owned(), 500)]
        );
        let usage = RedisUsage::new(
            &Reading {
                calls: before,
                cpu_ns: 1_000,
            },
            &Reading {
                calls: after,
                cpu_ns: 6_000,
            },
            500,
        );
        assert_eq!(usage.commands, 503);
        assert_eq!(usage.per_delivery, Some(503.0 / 500.0));
        assert_eq!(usage.cpu_ns_per_delivery, Some(10.0));
        let none = RedisUsage::new(&Reading::default(), &Reading::default(), 0);
        assert_eq!((none.per_delivery, none.cpu_ns_per_delivery), (None, None));
    }

    #[test]
    fn cpu_is_user_plus_system() {
        let text = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:0.250000\r\n\
                    used_cpu_sys_children:9.000000\r\nused_cpu_sys_main_thread:1.400000\r\n";
        assert_eq!(parse_cpu_ns(text), 1_750_000_000);
        assert_eq!(parse_cpu_ns(""), 0);
    }
}
