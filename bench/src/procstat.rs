//! The server's footprint from `/proc/<pid>`: resident memory and CPU time.

use std::fs;

use serde::{Deserialize, Serialize};

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSample {
    pub rss_bytes: u64,
    /// utime + stime, in nanoseconds.
    pub cpu_ns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error(
        "cannot read /proc/{pid}: {source} (is --server-pid right, and the server still running?)"
    )]
    Read { pid: u32, source: std::io::Error },
    #[error("/proc/{0} has an unexpected format")]
    Format(u32),
}

/// Reads `/proc/<pid>/status` (VmRSS) and `/proc/<pid>/stat` (utime, stime).
pub fn sample(pid: u32) -> Result<ProcSample, ProcError> {
    let read = |file: &str| {
        fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|source| ProcError::Read { pid, source })
    };
    let rss_bytes = parse_rss(&read("status")?).ok_or(ProcError::Format(pid))?;
    let cpu_ticks = parse_cpu_ticks(&read("stat")?).ok_or(ProcError::Format(pid))?;
    Ok(ProcSample {
        rss_bytes,
        cpu_ns: cpu_ticks * (1_000_000_000 / clock_ticks_per_sec()),
    })
}

/// The host's 1-minute load average: on a shared machine, what else ran.
pub fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `SUnreclaim` of /proc/meminfo in bytes: where sockets and TCP state live.
pub fn unreclaimable_slab() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("SUnreclaim:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPUs online on the host (not the ones this process is pinned to).
pub fn online_cpus() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(1)
}

fn clock_ticks_per_sec() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// utime and stime are fields 14 and 15; the command name (field 2) may
/// hold spaces and parentheses, so count from its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        assert_eq!(
            parse_rss("Name:\tx\nVmRSS:\t  2048 kB\nVmSwap: 0 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_rss("Name:\tx\n"), None);
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(10));
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(matches!(sample(u32::MAX), Err(ProcError::Read { .. })));
    }
}
