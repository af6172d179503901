//! ringhub: the WebSocket messaging server.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use redis_lite::BlockingClient;
use ringhub::broker::{Broker, RELAY_CORE, RedisLink};
use ringhub::config::{Config, ConfigError, LogFormat};
use ringhub::handler::{CoreHandler, Post};
use ringhub::node::Node;
use ringhub::presence::MAX_CORES;
use ringhub::relay::{Relay, RelaySetup, WAKE};
use ringhub_engine::{Server, block_termination_signals};
use tracing::{error, info, warn};

/// Frames, queue nodes and small strings are allocated and freed on every
/// core all the time; mimalloc's per-thread heaps serve them without locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(ConfigError::Usage(e)) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
        Err(e) => {
            eprintln!("ringhub: {e}");
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    if let Err(e) = init_logs(&config) {
        eprintln!("ringhub: {e}");
        return ExitCode::from(2);
    }
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let cores = config
        .threads
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .min(MAX_CORES);
    let server_id = config.server_id.clone().unwrap_or_else(default_server_id);

    let (broker, relay) = if config.redis.is_empty() {
        (Broker::Embedded, None)
    } else {
        let redis = redis_setup(&config.redis, &server_id)?;
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        let (link, inbox) = RedisLink::new(waker);
        let setup = RelaySetup {
            redis,
            server_id: server_id.clone(),
            heartbeat: Duration::from_secs(config.heartbeat_secs),
            retry: ringhub::retry::RetryPolicy::within(Duration::from_secs(
                config.remote_retry_secs,
            )),
            poll,
            inbox,
        };
        (Broker::Redis(link), Some(setup))
    };
    let broker_kind = broker.kind();
    let node = Arc::new(Node::new(config, server_id.clone(), cores as u16, broker)?);
    if node.auth.is_none() {
        warn!(
            "development mode: no authentication is configured, so anyone who can reach {} \
             connects as any user with ?user=ID; set RINGHUB_JWT_SECRET or \
             RINGHUB_JWT_PUBLIC_KEY before exposing this server",
            config.listen
        );
    }

    block_termination_signals();
    let handlers = node.clone();
    let (server, poster) = Server::start_with_poster(engine_config(config, cores), move |core| {
        CoreHandler::new(handlers.clone(), core)
    })?;
    let _ = node.engine_stats.set(server.stats_reader());
    let cloudwatch = ringhub::cloudwatch::start(&node, config)?;
    if let Some(addr) = config.metrics_listen {
        ringhub::admin::start(node.clone(), addr)?;
    }
    // The relay runs on core 0's thread: one wake less per message each
    // way than a relay thread of its own.
    if let Some(setup) = relay {
        let relay = Relay::new(node.clone(), cores as u16, setup)?;
        node.relay.park(Box::new(relay), poster.clone());
        if poster.post(RELAY_CORE, Post::HostRelay).is_err() {
            return Err("core 0 did not take the relay (its mailbox is closed)".into());
        }
    }
    info!(
        server_id = %server_id,
        cores,
        broker = broker_kind,
        "listening on {}",
        server.local_addr()
    );
    server.run_until_signal()?;
    if let Some(pusher) = cloudwatch {
        pusher.stop();
    }
    // Every connection got its 1001 and left the hub, so the relay has
    // queued their route removals; now the server's own entries go.
    node.broker.shutdown();
    node.relay.finish();
    info!(totals = ?node.totals(), "stopped");
    Ok(())
}

/// Decides standalone or Cluster: with one URL, `INFO cluster` tells;
/// several URLs are cluster seeds. If Redis can't be reached now, the
/// server still starts (local delivery works) and the relay keeps trying.
fn redis_setup(urls: &[String], server_id: &str) -> Result<redis_lite::Config, redis_lite::Error> {
    let timeout = Duration::from_secs(2);
    let cluster = urls.len() > 1 || {
        let mut probe = redis_lite::Config::from_url(&urls[0])?;
        probe.connect_timeout = timeout;
        match BlockingClient::connect(probe)
            .and_then(|mut c| c.query(redis_lite::cmd("INFO").arg("cluster")))
        {
            Ok(info) => info
                .as_str()
                .is_some_and(|s| s.contains("cluster_enabled:1")),
            Err(e) => {
                warn!("Redis is not reachable yet ({e}); assuming a standalone server");
                false
            }
        }
    };
    let mut config = if cluster {
        redis_lite::Config::cluster_from_urls(urls)?
    } else {
        redis_lite::Config::from_url(&urls[0])?
    };
    config.client_name = Some(format!("ringhub:{server_id}"));
    config.connect_timeout = timeout;
    config.request_timeout = Some(timeout);
    info!(cluster, "using Redis at {}", urls.join(","));
    Ok(config)
}

/// The engine's settings from ours.
fn engine_config(config: &Config, cores: usize) -> ringhub_engine::Config {
    // Messages up to twice the limit reach the handler, which answers
    // `too_large` and keeps the connection; larger ones are closed with
    // 1009 by the engine before they are buffered.
    let frame_limit = config.max_message_bytes.saturating_mul(2).max(4096);
    let per_core = config.max_connections.div_ceil(cores.max(1));
    ringhub_engine::Config {
        addr: config.listen,
        cores,
        max_connections_per_core: u32::try_from(per_core.max(1024)).unwrap_or(u32::MAX),
        send_queue_limit: config.send_queue_bytes,
        limits: ringhub_proto::Limits {
            max_frame: frame_limit,
            max_message: frame_limit,
        },
        max_request_body: frame_limit.max(64 * 1024),
        deflate: config.compression,
        handshake_timeout: Duration::from_secs(config.handshake_timeout_secs),
        ping_interval: Duration::from_secs(config.ping_interval_secs),
        // The engine counts the idle timeout from the ping it sends.
        idle_timeout: Duration::from_secs(config.idle_timeout_secs - config.ping_interval_secs),
        ..ringhub_engine::Config::default()
    }
}

/// `hostname-xxxx`: readable in logs, unique enough across restarts.
fn default_server_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let suffix = ringhub::connid::random_server_number() & 0xffff;
    if host.is_empty() {
        format!("ringhub-{suffix:04x}")
    } else {
        format!("{host}-{suffix:04x}")
    }
}

fn init_logs(config: &Config) -> Result<(), String> {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter: Targets = config
        .log
        .parse()
        .map_err(|e| format!("RINGHUB_LOG (--log): {e}"))?;
    let text = (config.log_format == LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = (config.log_format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(text)
        .with(json)
        .with(filter)
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))
}
