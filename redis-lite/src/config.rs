//! Client settings, and `redis://user:pass@host:port/db` URLs.

use std::time::Duration;

use crate::error::Error;

/// Everything a client needs to reach Redis. Build it from URLs
/// ([`Config::from_url`], [`Config::cluster_from_urls`]) and adjust fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` of the server, or of the cluster's seed nodes.
    pub seeds: Vec<String>,
    /// Redis Cluster (slot routing, sharded pub/sub) or a single server.
    pub cluster: bool,
    /// ACL user name (`AUTH user pass`); `None` authenticates as `default`.
    pub username: Option<String>,
    /// Password; `None` skips AUTH.
    pub password: Option<String>,
    /// Database selected on standalone servers (a cluster has only 0).
    pub db: u32,
    /// Try `HELLO 3` (RESP3) and fall back to RESP2 if the server refuses.
    pub resp3: bool,
    /// `CLIENT SETNAME`, shown in `CLIENT LIST`.
    pub client_name: Option<String>,
    /// Connect and handshake must finish within this.
    pub connect_timeout: Duration,
    /// A reply must arrive within this, or the connection is recycled.
    /// `None` for connections that run blocking commands.
    pub request_timeout: Option<Duration>,
    /// A connection quiet for this long is sent a `PING`, whose reply is
    /// subject to the request timeout: a half-open TCP connection (a
    /// subscriber that only listens) is noticed. `None` to disable.
    pub health_check_interval: Option<Duration>,
    /// The largest reply buffered while it is incomplete; a peer that sends
    /// more is cut off with a protocol error instead of growing memory.
    /// Redis itself caps a bulk string at 512 MiB (`proto-max-bulk-len`).
    pub max_reply_bytes: usize,
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_cap: Duration,
    /// How many MOVED/ASK redirects one command may follow.
    pub max_redirects: u8,
    /// Shortest interval between two slot-map refreshes.
    pub min_refresh_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seeds: vec!["127.0.0.1:6379".to_owned()],
            cluster: false,
            username: None,
            password: None,
            db: 0,
            resp3: true,
            client_name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(5)),
            health_check_interval: Some(Duration::from_secs(10)),
            max_reply_bytes: 512 * 1024 * 1024 + 64 * 1024,
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(5),
            max_redirects: 5,
            min_refresh_interval: Duration::from_millis(100),
        }
    }
}

/// The parts of one `redis://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `host:port`.
    pub addr: String,
    /// User name, percent-decoded.
    pub username: Option<String>,
    /// Password, percent-decoded.
    pub password: Option<String>,
    /// Database number from the path.
    pub db: u32,
}

impl RedisUrl {
    /// Parses `redis://[[user]:pass@]host[:port][/db]`.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Config(format!("redis URL `{}`: {why}", redact(url)));
        let rest = match url.split_once("://") {
            Some(("redis", rest)) => rest,
            Some(("rediss", _)) => {
                return Err(bad("TLS (rediss://) is not supported; use redis://"));
            }
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "unknown scheme `{scheme}`, expected redis://"
                )));
            }
            None => return Err(bad("expected redis://host:port")),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (non_empty(decode(user, &bad)?), Some(decode(pass, &bad)?)),
                // `redis://secret@host`: a lone word is the password, as in redis-cli.
                None => (None, Some(decode(u, &bad)?)),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed `[` in IPv6 host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port: u16 = match port {
            Some(p) => p
                .parse()
                .map_err(|_| bad(&format!("port `{p}` is not a number 0-65535")))?,
            None => 6379,
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        let db = if path.is_empty() {
            0
        } else {
            path.parse()
                .map_err(|_| bad(&format!("database `{path}` is not a number")))?
        };
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Self {
            addr,
            username,
            password,
            db,
        })
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn decode(s: &str, bad: &impl Fn(&str) -> Error) -> Result<String, Error> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next(), bytes.next()];
            let [Some(h), Some(l)] = hex else {
                return Err(bad("truncated %-escape"));
            };
            let v = std::str::from_utf8(&[h, l])
                .ok()
                .and_then(|t| u8::from_str_radix(t, 16).ok());
            out.push(v.ok_or_else(|| bad("invalid %-escape"))?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| bad("credentials are not UTF-8"))
}

/// The URL with its password hidden, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl Config {
    /// A standalone server from one URL.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let u = RedisUrl::parse(url)?;
        Ok(Self {
            seeds: vec![u.addr],
            username: u.username,
            password: u.password,
            db: u.db,
            ..Self::default()
        })
    }

    /// A cluster from one or more seed URLs; credentials come from the first
    /// URL that has them, and every seed must agree with it.
    pub fn cluster_from_urls<S: AsRef<str>>(urls: &[S]) -> Result<Self, Error> {
        let parsed = urls
            .iter()
            .map(|u| RedisUrl::parse(u.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let first = parsed
            .first()
            .ok_or_else(|| Error::Config("no cluster seed URL given".to_owned()))?;
        if parsed.iter().any(|u| u.db != 0) {
            return Err(Error::Config(
                "Redis Cluster has only database 0; remove the /db from the URLs".to_owned(),
            ));
        }
        let creds = parsed
            .iter()
            .find(|u| u.password.is_some())
            .unwrap_or(first);
        if parsed.iter().any(|u| {
            u.password.is_some() && (u.password != creds.password || u.username != creds.username)
        }) {
            return Err(Error::Config(
                "cluster seed URLs carry different credentials".to_owned(),
            ));
        }
        Ok(Self {
            seeds: parsed.iter().map(|u| u.addr.clone()).collect(),
            cluster: true,
            username: creds.username.clone(),
            password: creds.password.clone(),
            ..Self::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = RedisUrl::parse("redis://alice:p%40ss@cache.local:6380/3").unwrap();
        assert_eq!(u.addr, "cache.local:6380");
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.db, 3);
        let u = RedisUrl::parse("redis://:secret@127.0.0.1").unwrap();
        assert_eq!(
            (u.username, u.password.as_deref(), u.addr.as_str()),
            (None, Some("secret"), "127.0.0.1:6379")
        );
        let u = RedisUrl::parse("redis://[::1]:7000/").unwrap();
        assert_eq!(u.addr, "[::1]:7000");
        assert_eq!(RedisUrl::parse("redis://h").unwrap().db, 0);
    }

    #[test]
    fn rejects_bad_urls_without_leaking_passwords() {
        for bad in [
            "http://h",
            "rediss://h",
            "h:6379",
            "redis://h:99999",
            "redis://h/x",
            "redis://",
            "redis://u:%zz@h",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
        let e = RedisUrl::parse("redis://u:hunter2@h:x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn cluster_seeds() {
        let c = Config::cluster_from_urls(&["redis://:pw@a:1", "redis://b:2"]).unwrap();
        assert_eq!(c.seeds, ["a:1", "b:2"]);
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert!(c.cluster);
        assert!(Config::cluster_from_urls(&["redis://a:1/2"]).is_err());
        assert!(Config::cluster_from_urls::<&str>(&[]).is_err());
    }
}
