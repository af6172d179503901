//! Connections per source address, counted across the process's cores, and
//! the client address behind a trusted proxy.
//!
//! A source is an IPv4 address or an IPv6 /64 prefix: one host usually
//! holds a whole /64, so counting single IPv6 addresses would let a client
//! dodge the limit by rotating through its own prefix.
//!
//! Behind a load balancer every connection comes from the balancer's
//! address. With `RINGHUB_TRUSTED_PROXIES` set, a connection from one of
//! those networks is counted against the client address the proxy reports
//! in `X-Forwarded-For`: the rightmost entry that is not itself a trusted
//! proxy (entries further left are whatever the client chose to send).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use ipnet::IpNet;

const SHARDS: usize = 64;

/// An IPv4 address or an IPv6 /64, packed in 8 bytes (kept in every
/// connection's state). IPv4 goes into `::ffff:0:0/96`'s upper half, a
/// range no routable IPv6 prefix uses, so the two never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(u64);

impl Default for Source {
    fn default() -> Source {
        Source::NONE
    }
}

impl Source {
    /// Not counted: the limit is off or the address unknown. (An IPv6
    /// multicast prefix: never a peer.)
    pub const NONE: Source = Source(u64::MAX);

    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source(0xffff_0000_0000 | u64::from(u32::from(v4))),
            IpAddr::V6(v6) => Source((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Open connections per source, shared by the cores.
#[derive(Debug)]
pub struct SourceCounts {
    limit: u32,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<Source, u32>>]>,
}

impl SourceCounts {
    /// Counts with at most `limit` connections per source (0: no limit;
    /// nothing is counted then).
    pub fn new(limit: u32) -> SourceCounts {
        SourceCounts {
            limit,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit != 0
    }

    fn shard(&self, source: Source) -> &Mutex<HashMap<Source, u32>> {
        &self.shards[self.hasher.hash_one(source) as usize % SHARDS]
    }

    /// Takes a place for one more connection from `source`; false when it
    /// already holds `limit`.
    pub fn try_add(&self, source: Source) -> bool {
        if !self.enabled() {
            return true;
        }
        let mut map = self
            .shard(source)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(source).or_insert(0);
        if *count >= self.limit {
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back the place of a closed connection.
    pub fn remove(&self, source: Source) {
        if !self.enabled() {
            return;
        }
        let mut map = self
            .shard(source)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                map.remove(&source);
            }
        }
    }

    /// Connections `source` holds now.
    pub fn count(&self, source: Source) -> u32 {
        let map = self
            .shard(source)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(&source).copied().unwrap_or(0)
    }

    /// Sources holding at least one connection.
    pub fn sources(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// The networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer` itself, unless `peer` is a trusted
    /// proxy that said who its client was. `forwarded_for` are the values
    /// of every `X-Forwarded-For` header, in order.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&[u8]]) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Walk from the proxy nearest to us outwards; stop at the first
        // address we don't trust, or at anything unreadable (a client can
        // write junk on the left, never on the right of what a proxy added).
        for value in forwarded_for.iter().rev() {
            for entry in value.rsplit(|b| *b == b',') {
                let Some(ip) = std::str::from_utf8(entry)
                    .ok()
                    .and_then(|s| s.trim().parse::<IpAddr>().ok())
                else {
                    return client;
                };
                client = ip;
                if !self.trusts(ip) {
                    return client;
                }
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
        assert_eq!(Source::of(ip("10.0.0.1")), Source::of(ip("10.0.0.1")));
        assert_ne!(Source::of(ip("10.0.0.1")), Source::of(ip("10.0.0.2")));
        assert_eq!(
            Source::of(ip("::ffff:10.0.0.1")),
            Source::of(ip("10.0.0.1")),
            "a v4-mapped address is its IPv4 source"
        );
        assert_eq!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_ne!(Source::of(ip("0.0.0.1")), Source::of(ip("::1")));
    }

    #[test]
    fn counts_stop_at_the_limit_and_come_back() {
        let counts = SourceCounts::new(2);
        let a = Source::of(ip("127.0.0.2"));
        let b = Source::of(ip("127.0.0.3"));
        assert!(counts.try_add(a));
        assert!(counts.try_add(a));
        assert!(!counts.try_add(a), "third from one source");
        assert!(counts.try_add(b), "another source is not affected");
        assert_eq!(counts.count(a), 2);
        counts.remove(a);
        assert!(counts.try_add(a));
        counts.remove(a);
        counts.remove(a);
        counts.remove(b);
        assert_eq!(counts.sources(), 0, "emptied sources are forgotten");
    }

    #[test]
    fn no_limit_counts_nothing() {
        let counts = SourceCounts::new(0);
        let a = Source::of(ip("127.0.0.2"));
        for _ in 0..10 {
            assert!(counts.try_add(a));
        }
        assert_eq!(counts.sources(), 0);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let header = [&b"6.6.6.6, 203.0.113.7"[..]];
        // From the balancer: the client it reports.
        assert_eq!(proxies.client(ip("10.1.2.3"), &header), ip("203.0.113.7"));
        // From anyone else: the header is the client's own claim.
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &header),
            ip("198.51.100.1")
        );
        // Two trusted hops: the first untrusted from the right.
        let chained = [&b"203.0.113.7"[..], &b"10.9.9.9"[..]];
        assert_eq!(proxies.client(ip("10.1.2.3"), &chained), ip("203.0.113.7"));
        // Junk left of the proxy's entry is ignored, junk right of it stops.
        let junk = [&b"not-an-ip, 203.0.113.7"[..]];
        assert_eq!(proxies.client(ip("10.1.2.3"), &junk), ip("203.0.113.7"));
        let broken = [&b"203.0.113.7, bogus"[..]];
        assert_eq!(proxies.client(ip("10.1.2.3"), &broken), ip("10.1.2.3"));
        // No header from a trusted proxy: the proxy is the source.
        assert_eq!(proxies.client(ip("10.1.2.3"), &[]), ip("10.1.2.3"));
    }
}
