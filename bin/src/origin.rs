//! The `Origin` allow-list, checked before the upgrade.
//!
//! Browsers always send `Origin` on a WebSocket handshake, so the list stops
//! another site's page from opening a connection with the user's cookies or
//! token (cross-site WebSocket hijacking). Non-browser clients may omit the
//! header and could forge it anyway; they are let through and left to the
//! token check.

use thiserror::Error;

/// One allow-list entry: `*`, `scheme://host[:port]`, or
/// `scheme://*.domain[:port]` for any subdomain (at any depth) of `domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    Any,
    Exact {
        scheme: String,
        host: String,
        port: Option<u16>,
    },
    Subdomains {
        scheme: String,
        domain: String,
        port: Option<u16>,
    },
}

/// An allow-list entry that can't be used.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "origin pattern {pattern:?}: {reason} (expected e.g. https://app.example.com or https://*.example.com)"
)]
pub struct OriginPatternError {
    pattern: String,
    reason: &'static str,
}

impl OriginPattern {
    pub fn parse(pattern: &str) -> Result<OriginPattern, OriginPatternError> {
        let err = |reason| OriginPatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        let pattern = pattern.trim();
        if pattern == "*" {
            return Ok(OriginPattern::Any);
        }
        let (scheme, host, port) =
            split_origin(pattern).ok_or_else(|| err("not scheme://host[:port]"))?;
        if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(err("a wildcard must be a leading '*.' before a domain"));
            }
            return Ok(OriginPattern::Subdomains {
                scheme,
                domain: domain.to_owned(),
                port,
            });
        }
        if host.contains('*') {
            return Err(err("a wildcard must be a leading '*.' before a domain"));
        }
        Ok(OriginPattern::Exact { scheme, host, port })
    }

    fn matches(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact {
                scheme: s,
                host: h,
                port: p,
            } => s == scheme && h == host && effective_port(s, *p) == effective_port(scheme, port),
            OriginPattern::Subdomains {
                scheme: s,
                domain,
                port: p,
            } => {
                s == scheme
                    && effective_port(s, *p) == effective_port(scheme, port)
                    && host.len() > domain.len() + 1
                    && host.ends_with(domain.as_str())
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            }
        }
    }
}

/// The configured allow-list.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    patterns: Vec<OriginPattern>,
}

impl OriginPolicy {
    pub fn new(patterns: &[String]) -> Result<OriginPolicy, OriginPatternError> {
        let patterns = patterns
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| OriginPattern::parse(p))
            .collect::<Result<_, _>>()?;
        Ok(OriginPolicy { patterns })
    }

    /// Whether a handshake with this `Origin` header (if any) may proceed.
    /// An empty list allows every origin.
    pub fn allows(&self, origin: Option<&[u8]>) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let Some(origin) = origin else {
            return true;
        };
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        // Sandboxed frames and file:// pages send the opaque origin "null".
        let Some((scheme, host, port)) = split_origin(origin.trim()) else {
            return false;
        };
        self.patterns
            .iter()
            .any(|p| p.matches(&scheme, &host, port))
    }
}

/// Splits `scheme://host[:port]` into lower-case scheme and host and a port.
fn split_origin(origin: &str) -> Option<(String, String, Option<u16>)> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
    {
        return None;
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = if rest.starts_with('[') {
        // IPv6 literal: [::1]:8080
        let end = rest.find(']')?;
        let host = &rest[..=end];
        match &rest[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?.parse().ok()?)),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse().ok()?)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase(), port))
}

fn effective_port(scheme: &str, port: Option<u16>) -> Option<u16> {
    port.or(match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn empty_list_allows_all() {
        assert!(policy(&[]).allows(Some(b"https://evil.example")));
        assert!(policy(&[]).allows(None));
    }

    #[test]
    fn exact_match_respects_scheme_host_and_port() {
        let p = policy(&["https://app.example.com"]);
        assert!(p.allows(Some(b"https://app.example.com")));
        assert!(p.allows(Some(b"https://APP.Example.com")));
        assert!(p.allows(Some(b"https://app.example.com:443")));
        assert!(!p.allows(Some(b"http://app.example.com")));
        assert!(!p.allows(Some(b"https://app.example.com:8443")));
        assert!(!p.allows(Some(b"https://app.example.com.evil.net")));
        assert!(!p.allows(Some(b"https://evilapp.example.com")));
        assert!(!p.allows(Some(b"null")));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let p = policy(&["https://*.example.com"]);
        assert!(p.allows(Some(b"https://a.example.com")));
        assert!(p.allows(Some(b"https://a.b.example.com")));
        assert!(!p.allows(Some(b"https://example.com")));
        assert!(!p.allows(Some(b"https://badexample.com")));
        assert!(!p.allows(Some(b"https://example.com.evil.net")));
        assert!(!p.allows(Some(b"http://a.example.com")));
    }

    #[test]
    fn ports_and_ipv6_literals() {
        let p = policy(&["http://localhost:3000", "http://[::1]:8080"]);
        assert!(p.allows(Some(b"http://localhost:3000")));
        assert!(!p.allows(Some(b"http://localhost:3001")));
        assert!(!p.allows(Some(b"http://localhost")));
        assert!(p.allows(Some(b"http://[::1]:8080")));
    }

    #[test]
    fn missing_origin_is_left_to_auth_but_garbage_is_refused() {
        let p = policy(&["https://app.example.com"]);
        assert!(p.allows(None));
        assert!(!p.allows(Some(b"\xff\xfe")));
        assert!(!p.allows(Some(b"https://")));
        assert!(!p.allows(Some(b"https://a.example.com/path")));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "example.com",
            "https://*",
            "https://a.*.com",
            "https://*example.com",
            "https://x:port",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(OriginPattern::parse("*").unwrap(), OriginPattern::Any);
    }
}
