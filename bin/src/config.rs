//! Server configuration: command-line flags, `RINGHUB_*` environment variables
//! and a `.env.local` file, in that order of precedence.
//!
//! Every flag has a variable, so a container or a systemd unit can configure
//! the server without a command line. A bad value stops the server with a
//! message that names both the flag and the variable.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, ValueEnum};
use thiserror::Error;

/// Who may send a `broadcast` to every connection of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BroadcastPolicy {
    /// Nobody (the HTTP API can still broadcast).
    None,
    /// Only tokens carrying `"broadcast": true`.
    Claim,
    /// Every authenticated user (demos and trusted clients only).
    All,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// ringhub: an io_uring WebSocket messaging server.
///
/// Every option can also be set with the environment variable shown, or in a
/// `.env.local` file in the working directory (see `.env.example`).
#[derive(Debug, Clone, Parser)]
#[command(name = "ringhub", version, about, long_about = None)]
pub struct Config {
    /// Address and port to serve WebSockets (`/ws`) and HTTP on.
    #[arg(long, env = "RINGHUB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Redis seed URLs (`redis://[user:pass@]host:port[/db]`), comma separated.
    /// Standalone or Cluster is detected. Absent: a single node with an
    /// in-process broker.
    #[arg(long, env = "RINGHUB_REDIS", value_delimiter = ',')]
    pub redis: Vec<String>,

    /// This server's ID, unique in the cluster (letters, digits, `.`, `_`, `-`).
    /// Default: hostname and a random suffix.
    #[arg(long, env = "RINGHUB_SERVER_ID", value_parser = parse_server_id)]
    pub server_id: Option<String>,

    /// Reactor threads (one io_uring each). Default: one per CPU.
    #[arg(long, env = "RINGHUB_THREADS")]
    pub threads: Option<NonZeroUsize>,

    /// Shared secret for HS256 tokens.
    #[arg(long, env = "RINGHUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key file for RS256 (RSA) or ES256 (P-256) tokens.
    #[arg(long, env = "RINGHUB_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `aud` claim, if set.
    #[arg(long, env = "RINGHUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim, if set.
    #[arg(long, env = "RINGHUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "RINGHUB_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,

    /// Allowed `Origin`s, comma separated: `https://app.example.com`,
    /// `https://*.example.com` (any subdomain) or `*`. Empty: any origin.
    #[arg(long, env = "RINGHUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// API key for `POST /api/publish` (`Authorization: Bearer KEY`). Unset:
    /// the endpoint answers 403.
    #[arg(long, env = "RINGHUB_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Allow listening on a non-loopback address without authentication.
    #[arg(long, env = "RINGHUB_INSECURE")]
    pub insecure: bool,

    /// Who may use the `broadcast` frame.
    #[arg(long, env = "RINGHUB_BROADCAST", value_enum, default_value_t = BroadcastPolicy::Claim)]
    pub broadcast: BroadcastPolicy,

    /// Most connections this process holds; beyond it upgrades get 503.
    #[arg(long, env = "RINGHUB_MAX_CONNECTIONS", default_value_t = 1_000_000)]
    pub max_connections: usize,

    /// Most connections from one source (an IPv4 address or an IPv6 /64;
    /// 0: no limit). Behind a load balancer, set RINGHUB_TRUSTED_PROXIES so
    /// the client's address is counted, not the balancer's.
    #[arg(long, env = "RINGHUB_MAX_CONNECTIONS_PER_IP", default_value_t = 10_000)]
    pub max_connections_per_ip: u32,

    /// Networks of the load balancers in front of this server, comma
    /// separated (`10.0.0.0/8`, `192.0.2.7`): connections from them are
    /// counted against the client address in their `X-Forwarded-For`.
    /// Empty: the peer address is the source.
    #[arg(long, env = "RINGHUB_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Handshakes accepted per second by the process (a reconnect storm is
    /// spread out, not served all at once).
    #[arg(long, env = "RINGHUB_HANDSHAKE_RATE", default_value_t = 20_000)]
    pub handshake_rate: u32,

    /// Messages per second one connection may send (token bucket rate).
    #[arg(long, env = "RINGHUB_MESSAGE_RATE", default_value_t = 100)]
    pub message_rate: u32,

    /// Burst of messages one connection may send at once (token bucket size).
    #[arg(long, env = "RINGHUB_MESSAGE_BURST", default_value_t = 200)]
    pub message_burst: u32,

    /// Topics one connection may be subscribed to at once.
    #[arg(long, env = "RINGHUB_MAX_TOPICS_PER_CONNECTION", default_value_t = 256)]
    pub max_topics_per_connection: usize,

    /// Largest client message, in bytes, after decompression.
    #[arg(long, env = "RINGHUB_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Bytes queued for one connection before it is closed as a slow consumer.
    #[arg(long, env = "RINGHUB_SEND_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub send_queue_bytes: usize,

    /// Offer permessage-deflate to clients.
    #[arg(long, env = "RINGHUB_COMPRESSION", default_value_t = true, action = clap::ArgAction::Set)]
    pub compression: bool,

    /// Seconds a client has to finish its handshake.
    #[arg(long, env = "RINGHUB_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// Seconds between server pings on a quiet connection.
    #[arg(long, env = "RINGHUB_PING_INTERVAL_SECS", default_value_t = 30)]
    pub ping_interval_secs: u64,

    /// Seconds without any frame from a client before it is closed.
    #[arg(long, env = "RINGHUB_IDLE_TIMEOUT_SECS", default_value_t = 90)]
    pub idle_timeout_secs: u64,

    /// Heartbeat period in seconds: a server killed without a goodbye is
    /// pruned from Redis by the others within one period (it beats four times
    /// a period and is dead once silent for half of one).
    #[arg(long, env = "RINGHUB_HEARTBEAT_SECS", default_value_t = 5)]
    pub heartbeat_secs: u64,

    /// Seconds a message for another server is retried while Redis fails
    /// over (a lost connection, CLUSTERDOWN, a server resubscribing) before
    /// its sender is answered `remote_unavailable`. Cover your Redis
    /// failover time (cluster-node-timeout plus a second or two); 0: no retry.
    #[arg(long, env = "RINGHUB_REMOTE_RETRY_SECS", default_value_t = 5)]
    pub remote_retry_secs: u64,

    /// Log filter (`info`, `ringhub=debug`, ...).
    #[arg(long, env = "RINGHUB_LOG", default_value = "info")]
    pub log: String,

    /// Log line format.
    #[arg(long, env = "RINGHUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve `/metrics` on this address (an admin port) instead of the
    /// WebSocket port. Unset: on the WebSocket port.
    #[arg(long, env = "RINGHUB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Push metrics to CloudWatch (needs a build with the `cloudwatch`
    /// feature, the default). Credentials and region: the standard AWS chain.
    #[arg(long, env = "RINGHUB_CLOUDWATCH", default_value_t = false, action = clap::ArgAction::Set)]
    pub cloudwatch: bool,

    /// CloudWatch namespace of the pushed metrics.
    #[arg(long, env = "RINGHUB_CLOUDWATCH_NAMESPACE", default_value = "Ringhub")]
    pub cloudwatch_namespace: String,

    /// Seconds between two CloudWatch pushes.
    #[arg(long, env = "RINGHUB_CLOUDWATCH_INTERVAL_SECS", default_value_t = 60)]
    pub cloudwatch_interval_secs: u64,

    /// CloudWatch endpoint URL other than AWS's (a VPC endpoint, a test
    /// double). Unset: the region's.
    #[arg(long, env = "RINGHUB_CLOUDWATCH_ENDPOINT")]
    pub cloudwatch_endpoint: Option<String>,
}

/// A configuration the server refuses to start with.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A flag or variable has a value that doesn't parse.
    #[error("{variable} (--{flag}): {message}")]
    BadValue {
        flag: String,
        variable: String,
        message: String,
    },
    /// A flag or variable is fine alone but not with the rest.
    #[error("{0}")]
    Conflict(String),
    /// `.env.local` exists but can't be read.
    #[error(".env.local: {0}")]
    EnvFile(String),
    /// `--help`, `--version` or a usage error: clap has the text.
    #[error("{0}")]
    Usage(#[from] clap::Error),
}

impl ConfigError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Usage(e) => e.exit_code(),
            _ => 2,
        }
    }
}

impl Config {
    /// Reads `.env.local` (if present) into the environment without overriding
    /// variables already set, then parses the command line and environment.
    pub fn load() -> Result<Config, ConfigError> {
        match dotenvy::from_filename(".env.local") {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(ConfigError::EnvFile(e.to_string())),
        }
        Self::from_args(std::env::args_os())
    }

    /// Parses the given arguments (and the environment), then checks the
    /// combination.
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = Config::try_parse_from(args).map_err(name_the_variable)?;
        config.validate()?;
        Ok(config)
    }

    /// True when tokens are checked (a secret or a public key is set).
    pub fn auth_enabled(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.auth_enabled() && !self.listen.ip().is_loopback() && !self.insecure {
            return Err(ConfigError::Conflict(format!(
                "RINGHUB_LISTEN (--listen) is {} but no authentication is configured: set \
                 RINGHUB_JWT_SECRET or RINGHUB_JWT_PUBLIC_KEY, or pass --insecure \
                 (RINGHUB_INSECURE=true) to let anyone connect as any user",
                self.listen
            )));
        }
        if let Some(secret) = &self.jwt_secret
            && secret.len() < 32
        {
            return Err(bad(
                "jwt-secret",
                "RINGHUB_JWT_SECRET",
                "too short: use at least 32 random bytes for HS256",
            ));
        }
        if self.message_burst == 0 || self.message_rate == 0 {
            return Err(ConfigError::Conflict(
                "RINGHUB_MESSAGE_RATE and RINGHUB_MESSAGE_BURST must be at least 1".into(),
            ));
        }
        if self.cloudwatch_interval_secs == 0 {
            return Err(bad(
                "cloudwatch-interval-secs",
                "RINGHUB_CLOUDWATCH_INTERVAL_SECS",
                "must be at least 1",
            ));
        }
        if self.handshake_rate == 0 {
            return Err(bad(
                "handshake-rate",
                "RINGHUB_HANDSHAKE_RATE",
                "must be at least 1",
            ));
        }
        if self.max_message_bytes < 125 {
            return Err(bad(
                "max-message-bytes",
                "RINGHUB_MAX_MESSAGE_BYTES",
                "must be at least 125",
            ));
        }
        if self.idle_timeout_secs <= self.ping_interval_secs {
            return Err(ConfigError::Conflict(format!(
                "RINGHUB_IDLE_TIMEOUT_SECS ({}) must be larger than RINGHUB_PING_INTERVAL_SECS ({}), \
                 or idle clients are closed before they are pinged",
                self.idle_timeout_secs, self.ping_interval_secs
            )));
        }
        if self.heartbeat_secs == 0 {
            return Err(bad(
                "heartbeat-secs",
                "RINGHUB_HEARTBEAT_SECS",
                "must be at least 1",
            ));
        }
        for origin in &self.allowed_origins {
            crate::origin::OriginPattern::parse(origin)
                .map_err(|e| bad("allowed-origins", "RINGHUB_ALLOWED_ORIGINS", &e.to_string()))?;
        }
        for url in &self.redis {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(bad(
                    "redis",
                    "RINGHUB_REDIS",
                    &format!("{url:?} is not a redis:// URL"),
                ));
            }
        }
        Ok(())
    }
}

/// A network in CIDR notation, or one address.
fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not a network (10.0.0.0/8) or an address (192.0.2.7)"))
}

fn bad(flag: &str, variable: &str, message: &str) -> ConfigError {
    ConfigError::BadValue {
        flag: flag.into(),
        variable: variable.into(),
        message: message.into(),
    }
}

/// Rewrites clap's "invalid value for '--flag <X>'" into an error that also
/// names the `RINGHUB_*` variable, since the value often came from there.
fn name_the_variable(err: clap::Error) -> ConfigError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return ConfigError::Usage(err);
    }
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return ConfigError::Usage(err);
    };
    let flag = arg
        .trim_start_matches("--")
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let command = Config::command();
    let Some(variable) = command
        .get_arguments()
        .find(|a| a.get_long() == Some(flag.as_str()))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
    else {
        return ConfigError::Usage(err);
    };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => String::new(),
    };
    let reason = err
        .source()
        .map(|s| s.to_string())
        .unwrap_or_else(|| "not an accepted value".into());
    ConfigError::BadValue {
        flag,
        variable,
        message: format!("invalid value {value:?}: {reason}"),
    }
}

fn parse_server_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("use 1 to 64 letters, digits, '.', '_' or '-'".into())
    }
}

use std::error::Error as _;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut all = vec!["ringhub"];
        all.extend_from_slice(args);
        Config::from_args(all)
    }

    #[test]
    fn defaults_are_a_safe_local_node() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(c.redis.is_empty());
        assert!(!c.auth_enabled());
        assert!(c.compression);
        assert_eq!(c.broadcast, BroadcastPolicy::Claim);
    }

    #[test]
    fn public_address_without_auth_is_refused() {
        let err = parse(&["--listen", "0.0.0.0:8080"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("RINGHUB_LISTEN"), "{text}");
        assert!(text.contains("--insecure"), "{text}");
        assert!(parse(&["--listen", "0.0.0.0:8080", "--insecure"]).is_ok());
        let secret = "x".repeat(32);
        assert!(parse(&["--listen", "0.0.0.0:8080", "--jwt-secret", &secret]).is_ok());
    }

    #[test]
    fn bad_value_names_flag_and_variable() {
        let err = parse(&["--threads", "many"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("RINGHUB_THREADS"), "{text}");
        assert!(text.contains("--threads"), "{text}");
        assert!(text.contains("many"), "{text}");
    }

    #[test]
    fn server_id_is_restricted_to_channel_safe_characters() {
        assert!(parse(&["--server-id", "eu-1.a_b"]).is_ok());
        let err = parse(&["--server-id", "a b"]).unwrap_err().to_string();
        assert!(err.contains("RINGHUB_SERVER_ID"), "{err}");
        assert!(parse(&["--server-id", ""]).is_err());
    }

    #[test]
    fn redis_urls_split_on_commas() {
        let c = parse(&["--redis", "redis://a:1,redis://b:2"]).unwrap();
        assert_eq!(c.redis, vec!["redis://a:1", "redis://b:2"]);
        let err = parse(&["--redis", "a:1"]).unwrap_err().to_string();
        assert!(err.contains("RINGHUB_REDIS"), "{err}");
    }

    #[test]
    fn weak_secret_and_inconsistent_timeouts_are_refused() {
        assert!(parse(&["--jwt-secret", "short"]).is_err());
        let err = parse(&["--idle-timeout-secs", "10", "--ping-interval-secs", "30"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("RINGHUB_IDLE_TIMEOUT_SECS"), "{err}");
        assert!(parse(&["--message-rate", "0"]).is_err());
    }

    #[test]
    fn bad_origin_pattern_is_refused() {
        let err = parse(&["--allowed-origins", "example.com"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("RINGHUB_ALLOWED_ORIGINS"), "{err}");
        assert!(
            parse(&[
                "--allowed-origins",
                "https://*.example.com,http://localhost:3000"
            ])
            .is_ok()
        );
    }

    #[test]
    fn compression_can_be_switched_off() {
        assert!(!parse(&["--compression", "false"]).unwrap().compression);
    }

    /// `.env.example` lists every variable, with the default where there is
    /// one, so it can't drift from the flags.
    #[test]
    fn env_example_lists_every_variable_with_its_default() {
        let example = include_str!("../../.env.example");
        let command = Config::command();
        for arg in command.get_arguments() {
            let Some(var) = arg.get_env() else { continue };
            let var = var.to_string_lossy();
            let line = example
                .lines()
                .map(|l| l.trim_start_matches("# "))
                .find(|l| l.starts_with(&format!("{var}=")))
                .unwrap_or_else(|| panic!(".env.example lacks {var}"));
            let value = &line[var.len() + 1..];
            match arg.get_default_values() {
                [] => {}
                [default] => assert_eq!(value, default.to_string_lossy(), "{var}"),
                many => panic!("{var}: several defaults {many:?}"),
            }
        }
    }
}
