//! The server under test, from a `ws://` URL.
//!
//! The generator only drives servers on this host: every target must resolve
//! to 127.0.0.0/8. Load from the same machine, with server and generator
//! pinned to separate cores, is what the README's figures are measured with.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where the load goes: address, and the `Host` and path of the upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Target {
    addr: SocketAddrV4,
    host: String,
    path: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error(
        "`{0}` is not a ws:// URL (wss:// is not supported: run the bench against the plain port)"
    )]
    Scheme(String),
    #[error("`{0}` has no port: write it out, e.g. ws://127.0.0.1:9000/")]
    MissingPort(String),
    #[error("`{0}` has a bad port")]
    BadPort(String),
    #[error("`{0}`: the bench only targets this host (127.0.0.0/8 or localhost)")]
    NotLoopback(String),
}

impl Target {
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// `host:port` as sent in the `Host` header.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Request target of the upgrade, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(url: &str) -> Result<Self, TargetError> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| TargetError::Scheme(url.to_owned()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| TargetError::MissingPort(url.to_owned()))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| TargetError::BadPort(url.to_owned()))?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Ipv4Addr::LOCALHOST
        } else {
            host.parse::<Ipv4Addr>()
                .ok()
                .filter(Ipv4Addr::is_loopback)
                .ok_or_else(|| TargetError::NotLoopback(url.to_owned()))?
        };
        Ok(Target {
            addr: SocketAddrV4::new(ip, port),
            host: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl TryFrom<String> for Target {
    type Error = TargetError;
    fn try_from(url: String) -> Result<Self, TargetError> {
        url.parse()
    }
}

impl From<Target> for String {
    fn from(target: Target) -> String {
        target.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ws://{}{}", self.host, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls() {
        let t: Target = "ws://127.0.0.1:9000/ws?x=1".parse().unwrap();
        assert_eq!(t.addr(), SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000));
        assert_eq!(t.host(), "127.0.0.1:9000");
        assert_eq!(t.path(), "/ws?x=1");
        let t: Target = "ws://localhost:80".parse().unwrap();
        assert_eq!(t.path(), "/");
        assert_eq!(t.to_string(), "ws://localhost:80/");
        let t: Target = "ws://127.9.8.7:1".parse().unwrap();
        assert_eq!(*t.addr().ip(), Ipv4Addr::new(127, 9, 8, 7));
    }

    #[test]
    fn refuses_anything_off_this_host() {
        for url in [
            "ws://10.0.0.1:9000/",
            "ws://example.com:80/",
            "ws://[::1]:80/",
        ] {
            assert!(
                matches!(url.parse::<Target>(), Err(TargetError::NotLoopback(_))),
                "{url}"
            );
        }
        assert!(matches!(
            "wss://127.0.0.1:1/".parse::<Target>(),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            "ws://127.0.0.1/".parse::<Target>(),
            Err(TargetError::MissingPort(_))
        ));
        assert!(matches!(
            "ws://127.0.0.1:0/".parse::<Target>(),
            Err(TargetError::BadPort(_))
        ));
        assert!(matches!(
            "ws://127.0.0.1:99999/".parse::<Target>(),
            Err(TargetError::BadPort(_))
        ));
    }
}
