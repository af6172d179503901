//! The route cache: which servers hold a user's connections, as last read
//! from `user_servers:<user>`, so a steady conversation costs no lookup per
//! message.
//!
//! Invalidation: a server that registers a user's first connection
//! (`SADD user_servers:<user> <server>`) publishes the user's name on the
//! `routes` channel, and every server drops that entry; a server found dead
//! (pruned, or a publish to its channel reached nobody) is removed from
//! every entry. Removals need no message: publishing to a server that no
//! longer holds the user costs one wasted publish, and entries also expire
//! after a TTL, so a missed invalidation heals by itself.

use crate::names::NameMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most entries kept; past it, expired entries go, then everything.
const MAX_ENTRIES: usize = 1 << 20;

#[derive(Debug)]
struct Entry {
    servers: Arc<[Box<str>]>,
    expires: Instant,
}

/// User → servers, with expiry.
#[derive(Debug)]
pub struct RouteCache {
    entries: NameMap<Box<str>, Entry>,
    ttl: Duration,
}

impl RouteCache {
    pub fn new(ttl: Duration) -> RouteCache {
        RouteCache {
            entries: NameMap::default(),
            ttl,
        }
    }

    /// The servers of `user`, if known and fresh.
    pub fn get(&self, user: &str, now: Instant) -> Option<Arc<[Box<str>]>> {
        self.entries
            .get(user)
            .filter(|e| e.expires > now)
            .map(|e| e.servers.clone())
    }

    /// Records a lookup's answer.
    pub fn insert(&mut self, user: &str, servers: Vec<Box<str>>, now: Instant) -> Arc<[Box<str>]> {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, e| e.expires > now);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        let servers: Arc<[Box<str>]> = servers.into();
        self.entries.insert(
            user.into(),
            Entry {
                servers: servers.clone(),
                expires: now + self.ttl,
            },
        );
        servers
    }

    /// The user's routes changed somewhere.
    pub fn invalidate(&mut self, user: &str) {
        self.entries.remove(user);
    }

    /// `server` is gone: no entry may name it.
    pub fn forget_server(&mut self, server: &str) {
        self.entries
            .retain(|_, e| !e.servers.iter().any(|s| &**s == server));
    }

    /// Forgets everything (after a reconnect to Redis, whose data may have
    /// been lost).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(names: &[&str]) -> Vec<Box<str>> {
        names.iter().map(|s| (*s).into()).collect()
    }

    #[test]
    fn entries_expire_and_are_invalidated() {
        let t0 = Instant::now();
        let mut cache = RouteCache::new(Duration::from_secs(10));
        cache.insert("alice", servers(&["a", "b"]), t0);
        assert_eq!(cache.get("alice", t0).unwrap().len(), 2);
        assert!(cache.get("alice", t0 + Duration::from_secs(11)).is_none());
        cache.invalidate("alice");
        assert!(cache.get("alice", t0).is_none());
    }

    #[test]
    fn a_dead_server_leaves_every_entry_that_names_it() {
        let t0 = Instant::now();
        let mut cache = RouteCache::new(Duration::from_secs(10));
        cache.insert("alice", servers(&["a", "b"]), t0);
        cache.insert("bob", servers(&["a"]), t0);
        cache.forget_server("b");
        assert!(cache.get("alice", t0).is_none());
        assert!(cache.get("bob", t0).is_some());
        cache.clear();
        assert!(cache.get("bob", t0).is_none());
    }
}
