//! Free TCP ports on 127.0.0.1, optionally with `port + 10000` free too (the
//! cluster bus), reserved across processes.
//!
//! Test binaries run side by side (nextest runs one process per test), and
//! "bind, see it is free, let go" alone races: two processes can both find a
//! port free before either server binds it, and two clusters that share a port
//! gossip into one. So every port handed out is also locked (`flock` on a file
//! named after it in a shared directory) for as long as its server lives. The
//! ports come from below the kernel's ephemeral range, so outgoing client
//! sockets never take one between the check and the server's bind.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports 10000..22000; bus ports 20000..32000. Both stay below 32768, where
/// Linux's default ephemeral range starts.
const LOW: u16 = 10_000;
const SPAN: u16 = 12_000;
const BUS_OFFSET: u16 = 10_000;

/// Next candidate index. Starts at a per-process spread so that test
/// processes side by side rarely probe the same ports first.
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A port (and its bus port) reserved for this process until dropped.
#[derive(Debug)]
pub(crate) struct PortLease {
    port: u16,
    _locks: Vec<File>,
}

impl PortLease {
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

fn candidate() -> u16 {
    let spread = std::process::id().wrapping_mul(2_654_435_761) % u32::from(SPAN);
    let _ = NEXT.compare_exchange(u32::MAX, spread, Ordering::Relaxed, Ordering::Relaxed);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    LOW + (n % u32::from(SPAN)) as u16
}

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("ringhub-testkit-ports");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Takes the cross-process lock for `port`, if nobody holds it.
fn lock(port: u16) -> Option<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_dir().join(port.to_string()))
        .ok()?;
    file.try_lock().ok()?;
    Some(file)
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port nobody listens on or has reserved (and, with `bus`, whose `+10000`
/// too), held until the lease is dropped.
pub(crate) fn free_port(bus: bool) -> PortLease {
    for _ in 0..SPAN {
        let port = candidate();
        let Some(port_lock) = lock(port) else {
            continue;
        };
        let mut locks = vec![port_lock];
        // Every lease locks its would-be bus port as well, so a standalone
        // server never lands on a cluster node's bus port or the reverse.
        let Some(bus_lock) = lock(port + BUS_OFFSET) else {
            continue;
        };
        locks.push(bus_lock);
        if is_free(port) && (!bus || is_free(port + BUS_OFFSET)) {
            return PortLease {
                port,
                _locks: locks,
            };
        }
    }
    panic!(
        "no free TCP port on 127.0.0.1 between {LOW} and {}",
        LOW + SPAN
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_exclusive_until_dropped() {
        let a = free_port(true);
        assert!(
            lock(a.port()).is_none(),
            "a leased port can't be locked again"
        );
        assert!(lock(a.port() + BUS_OFFSET).is_none());
        let port = a.port();
        drop(a);
        assert!(lock(port).is_some(), "dropping the lease frees the port");
    }

    #[test]
    fn ports_stay_below_the_ephemeral_range() {
        for _ in 0..100 {
            let lease = free_port(true);
            assert!((LOW..LOW + SPAN).contains(&lease.port()));
            assert!(lease.port() + BUS_OFFSET < 32_768);
        }
    }
}
