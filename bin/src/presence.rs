//! The process-wide presence directory: which cores hold a user's
//! connections, and which cores have subscribers of a topic.
//!
//! A `send` or `publish` on one core reads it to know which other cores to
//! post the frame to, so it never goes through Redis inside one process.
//!
//! Why a sharded `RwLock` and not per-core replicas updated by mailbox:
//! a replica per core multiplies the directory's memory by the core count,
//! and a replica that lags its mailbox would miss a user who connected a
//! moment ago. Here a core writes only when its own count for a name goes
//! from 0 to 1 or from 1 to 0 (a user's first or last connection on that
//! core), reads take a shared lock on one of 64 shards, and the critical
//! sections are a hash lookup. The transition callbacks run under the shard
//! lock, so the order of "first on this server" and "last on this server"
//! events for one name is the order they happened in: the Redis broker
//! relies on it to keep `SADD` and `SREM` of a route in order.

use std::hash::BuildHasher;

use crate::names::{NameHasher, NameMap};
use std::sync::{PoisonError, RwLock};

/// The most cores a process may run (the width of [`CoreSet`]).
pub const MAX_CORES: usize = 256;

const SHARDS: usize = 64;

/// A set of core ids below [`MAX_CORES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreSet([u64; MAX_CORES / 64]);

impl CoreSet {
    /// Every core below `count`.
    pub fn all(count: u16) -> CoreSet {
        let mut set = CoreSet::default();
        for core in 0..count.min(MAX_CORES as u16) {
            set.insert(core);
        }
        set
    }

    pub fn insert(&mut self, core: u16) {
        if let Some(word) = self.0.get_mut(usize::from(core) / 64) {
            *word |= 1 << (core % 64);
        }
    }

    pub fn remove(&mut self, core: u16) {
        if let Some(word) = self.0.get_mut(usize::from(core) / 64) {
            *word &= !(1 << (core % 64));
        }
    }

    pub fn contains(&self, core: u16) -> bool {
        self.0
            .get(usize::from(core) / 64)
            .is_some_and(|w| w & (1 << (core % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The cores in the set, lowest first. Walks the set bits only: every
    /// routed message iterates a set, and testing all 256 bits showed as a
    /// tenth of a sending core's time.
    pub fn iter(self) -> impl Iterator<Item = u16> {
        self.0.into_iter().enumerate().flat_map(|(word, mut bits)| {
            std::iter::from_fn(move || {
                let bit = (bits != 0).then(|| bits.trailing_zeros())?;
                bits &= bits - 1;
                Some((word * 64) as u16 + bit as u16)
            })
        })
    }
}

/// One shard of a [`Directory`].
type Shard = RwLock<NameMap<Box<str>, CoreSet>>;

/// Names (users or topics) to the cores that hold them.
#[derive(Debug)]
pub struct Directory {
    shards: Box<[Shard]>,
    hasher: NameHasher,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: NameHasher::default(),
        }
    }
}

impl Directory {
    fn shard(&self, name: &str) -> &Shard {
        let i = self.hasher.hash_one(name) as usize % self.shards.len();
        &self.shards[i]
    }

    /// Records that `core` holds `name`. When no core held it before (the
    /// first on this server), `first` runs under the shard's lock.
    pub fn add(&self, name: &str, core: u16, first: impl FnOnce()) {
        // A poisoned lock means another core panicked mid-update of a plain
        // map; the map itself is still consistent, so carry on.
        let mut map = self
            .shard(name)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(name) {
            Some(set) => set.insert(core),
            None => {
                let mut set = CoreSet::default();
                set.insert(core);
                map.insert(name.into(), set);
                first();
            }
        }
    }

    /// Records that `core` no longer holds `name`. When no core holds it
    /// any more (the last on this server), `last` runs under the lock.
    pub fn remove(&self, name: &str, core: u16, last: impl FnOnce()) {
        let mut map = self
            .shard(name)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(set) = map.get_mut(name) else {
            return;
        };
        set.remove(core);
        if set.is_empty() {
            map.remove(name);
            last();
        }
    }

    /// The cores holding `name`.
    pub fn cores(&self, name: &str) -> CoreSet {
        let map = self
            .shard(name)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(name).copied().unwrap_or_default()
    }

    /// Every name held by some core (for re-registering after a Redis
    /// reconnect), shard by shard: not a consistent snapshot.
    pub fn names(&self) -> Vec<Box<str>> {
        let mut names = Vec::new();
        for shard in &*self.shards {
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            names.extend(map.keys().cloned());
        }
        names
    }
}

/// Users and topics of this process.
#[derive(Debug, Default)]
pub struct Presence {
    pub users: Directory,
    pub topics: Directory,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_sets_hold_any_core_below_the_limit() {
        let mut s = CoreSet::default();
        s.insert(0);
        s.insert(63);
        s.insert(64);
        s.insert(255);
        s.insert(256); // out of range: ignored
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 63, 64, 255]);
        s.remove(63);
        assert!(!s.contains(63) && s.contains(64));
        assert_eq!(CoreSet::all(3).iter().count(), 3);
    }

    #[test]
    fn first_and_last_fire_on_the_server_wide_transitions_only() {
        let d = Directory::default();
        let mut events = Vec::new();
        d.add("alice", 0, || events.push("first"));
        d.add("alice", 1, || events.push("first again"));
        d.add("alice", 1, || events.push("first again"));
        assert_eq!(d.cores("alice").iter().collect::<Vec<_>>(), vec![0, 1]);
        d.remove("alice", 0, || events.push("last"));
        assert_eq!(d.cores("alice").iter().collect::<Vec<_>>(), vec![1]);
        d.remove("alice", 1, || events.push("last"));
        d.remove("alice", 1, || events.push("last again"));
        assert_eq!(events, vec!["first", "last"]);
        assert!(d.cores("alice").is_empty());
        assert!(d.names().is_empty());
    }
}
