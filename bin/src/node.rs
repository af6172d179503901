//! What every core of the process shares: settings, the authenticator,
//! the presence directory, connection ids, the broker and the counters.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ringhub_engine::StatsReader;

use crate::auth::{Authenticator, KeyError};
use crate::broker::Broker;
use crate::config::{BroadcastPolicy, Config};
use crate::connid::{ConnIds, random_server_number};
use crate::latency::Latencies;
use crate::metrics::{Counters, Totals};
use crate::origin::{OriginPatternError, OriginPolicy};
use crate::presence::Presence;
use crate::ratelimit::Rate;
use crate::sources::{SourceCounts, TrustedProxies};

/// Bad input a client may send in a row (refilled at one per second)
/// before it is closed with 1008.
const ERROR_BURST: u32 = 10;

/// Settings the cores read on every message, derived once from [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub server_id: String,
    pub max_connections: usize,
    /// Per connection.
    pub message_rate: Rate,
    /// Per connection: the budget of `error` replies before a 1008 close.
    pub error_rate: Rate,
    /// Per core: the process rate split evenly over the cores.
    pub handshake_rate: Rate,
    pub max_message_bytes: usize,
    pub max_topics: usize,
    pub broadcast: BroadcastPolicy,
    pub api_key: Option<String>,
    /// `/metrics` on the WebSocket port (false when an admin port serves it).
    pub metrics_on_main_port: bool,
}

/// A startup failure of the node (before any socket is opened).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("RINGHUB_ALLOWED_ORIGINS (--allowed-origins): {0}")]
    Origin(#[from] OriginPatternError),
}

/// The process-wide state shared by every core.
#[derive(Debug)]
pub struct Node {
    pub settings: Settings,
    /// `None` in development mode (no auth configured: `?user=`).
    pub auth: Option<Authenticator>,
    pub origins: OriginPolicy,
    pub presence: Presence,
    /// Open connections per source address (the per-IP limit).
    pub sources: SourceCounts,
    pub trusted_proxies: TrustedProxies,
    pub conn_ids: ConnIds,
    pub broker: Broker,
    /// Admitted connections in the process, for the connection limit.
    pub open: AtomicUsize,
    /// One set per core, indexed by core id, and the relay's last.
    pub counters: Vec<Arc<Counters>>,
    /// Latency histograms, laid out like `counters`.
    pub latencies: Vec<Arc<Latencies>>,
    /// The relay while no core hosts it (Redis only).
    pub relay: crate::relay::RelayHost,
    /// The engine's counters, set once the engine has started.
    pub engine_stats: OnceLock<StatsReader>,
    pub started: Instant,
}

impl Node {
    /// Builds the node for `cores` reactor threads.
    pub fn new(
        config: &Config,
        server_id: String,
        cores: u16,
        broker: Broker,
    ) -> Result<Node, NodeError> {
        let cores_u32 = u32::from(cores.max(1));
        let per_core = config.handshake_rate.div_ceil(cores_u32);
        let settings = Settings {
            server_id,
            max_connections: config.max_connections,
            message_rate: Rate::new(config.message_rate, config.message_burst),
            error_rate: Rate::new(1, ERROR_BURST),
            handshake_rate: Rate::new(per_core, per_core),
            max_message_bytes: config.max_message_bytes,
            max_topics: config.max_topics_per_connection,
            broadcast: config.broadcast,
            api_key: config.api_key.clone(),
            metrics_on_main_port: config.metrics_listen.is_none(),
        };
        Ok(Node {
            settings,
            auth: Authenticator::from_config(config)?,
            origins: OriginPolicy::new(&config.allowed_origins)?,
            presence: Presence::default(),
            sources: SourceCounts::new(config.max_connections_per_ip),
            trusted_proxies: TrustedProxies::new(config.trusted_proxies.clone()),
            conn_ids: ConnIds::new(random_server_number()),
            broker,
            open: AtomicUsize::new(0),
            counters: (0..=cores.max(1)).map(|_| Arc::default()).collect(),
            latencies: (0..=cores.max(1)).map(|_| Arc::default()).collect(),
            relay: Default::default(),
            engine_stats: OnceLock::new(),
            started: Instant::now(),
        })
    }

    /// The relay thread's counters.
    pub fn relay_counters(&self) -> &Counters {
        &self.counters[self.counters.len() - 1]
    }

    /// The relay thread's latency histograms.
    pub fn relay_latencies(&self) -> &Latencies {
        &self.latencies[self.latencies.len() - 1]
    }

    /// Every core's counters summed.
    pub fn totals(&self) -> Totals {
        Totals::sum(self.counters.iter().map(|c| &**c))
    }
}
