//! A plain echo and pub/sub WebSocket server on the engine, for benchmarks
//! and conformance runs:
//!
//! ```text
//! cargo run --release -p ringhub-engine --example pubsub -- --port 9000 [--cores N] [--no-deflate]
//! ```

mod handler;

use std::net::SocketAddr;
use std::process::ExitCode;

use ringhub_engine::{Config, Server, block_termination_signals};

/// Small, frequent allocations (frames, queue nodes) are the engine's
/// pattern; mimalloc's per-thread heaps serve them without contention.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn usage() -> ExitCode {
    eprintln!(
        "usage: pubsub [--port P] [--host IP] [--cores N] [--cpu-offset C] [--max-conns-per-core N] [--no-pin] [--no-deflate]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut config = Config {
        // As the Bun peer (`backpressureLimit`): room for a burst of
        // fan-out to queue rather than close subscribers while the server
        // itself is the bottleneck. Frames for many connections are shared,
        // so this counts each subscriber's view, not memory held 1,000 times.
        send_queue_limit: 16 << 20,
        ..Config::default()
    };
    let mut host = "0.0.0.0".to_string();
    let mut port = 9000u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next();
        match arg.as_str() {
            "--port" => match value().and_then(|v| v.parse().ok()) {
                Some(p) => port = p,
                None => return usage(),
            },
            "--host" => match value() {
                Some(h) => host = h,
                None => return usage(),
            },
            "--cores" => match value().and_then(|v| v.parse().ok()) {
                Some(n) => config.cores = n,
                None => return usage(),
            },
            "--cpu-offset" => match value().and_then(|v| v.parse().ok()) {
                Some(n) => config.cpu_offset = n,
                None => return usage(),
            },
            "--max-conns-per-core" => match value().and_then(|v| v.parse().ok()) {
                Some(n) => config.max_connections_per_core = n,
                None => return usage(),
            },
            "--no-pin" => config.pin = false,
            "--no-deflate" => config.deflate = false,
            _ => return usage(),
        }
    }
    config.addr = match format!("{host}:{port}").parse::<SocketAddr>() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pubsub: bad --host/--port: {e}");
            return ExitCode::from(2);
        }
    };
    block_termination_signals();
    let server = match Server::start(config, |_core| handler::PubSub::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pubsub: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("pubsub: listening on {}", server.local_addr());
    let stats = server.stats_reader();
    match server.run_until_signal() {
        Ok(()) => {
            eprintln!("pubsub: stopped; {:?}", stats.snapshot());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pubsub: {e}");
            ExitCode::FAILURE
        }
    }
}
