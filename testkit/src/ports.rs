//! Free TCP ports on 127.0.0.1, optionally with `port + 10000` free too (the
//! cluster bus).

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// Next port to try. Starts at a per-process offset so that test binaries
/// running side by side rarely probe the same ports.
static NEXT: AtomicU16 = AtomicU16::new(0);

const LOW: u16 = 20_000;
const SPAN: u16 = 25_000; // up to 45_000, so the bus port stays below 55_000

fn candidate() -> u16 {
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % u32::from(SPAN)) as u16 + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    LOW + n % SPAN
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port nobody listens on right now (and, with `bus`, whose `+10000` is free too).
pub(crate) fn free_port(bus: bool) -> u16 {
    for _ in 0..SPAN {
        let port = candidate();
        if is_free(port) && (!bus || is_free(port + 10_000)) {
            return port;
        }
    }
    panic!(
        "no free TCP port on 127.0.0.1 between {LOW} and {}",
        LOW + SPAN
    );
}
