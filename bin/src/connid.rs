//! Connection ids that are unique across the cluster and exact in
//! JavaScript.
//!
//! The `welcome` frame's `conn` is a JSON number, and browsers read numbers
//! as doubles: anything above 2^53 would be rounded. So an id is 53 bits:
//! a 21-bit server number in the high bits and a 32-bit sequence below.
//! With Redis the server number comes from `INCR` on a shared counter, so
//! servers never share one; without Redis (a single node) it is random.
//! The sequence is per process and wraps after 4 billion connections.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the per-process sequence.
const SEQUENCE_BITS: u32 = 32;
/// Bits of the server number.
const SERVER_BITS: u32 = 21;

/// Hands out connection ids for one process; shared by every core.
#[derive(Debug)]
pub struct ConnIds {
    prefix: AtomicU64,
    next: AtomicU64,
}

impl ConnIds {
    /// Ids for server number `server` (only its low 21 bits are used).
    pub fn new(server: u64) -> ConnIds {
        ConnIds {
            prefix: AtomicU64::new(Self::prefix_of(server)),
            next: AtomicU64::new(0),
        }
    }

    fn prefix_of(server: u64) -> u64 {
        (server & ((1 << SERVER_BITS) - 1)) << SEQUENCE_BITS
    }

    /// Switches to a server number assigned later (by Redis); ids already
    /// given out keep theirs.
    pub fn set_server(&self, server: u64) {
        self.prefix
            .store(Self::prefix_of(server), Ordering::Relaxed);
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        let seq = self.next.fetch_add(1, Ordering::Relaxed) & ((1 << SEQUENCE_BITS) - 1);
        self.prefix.load(Ordering::Relaxed) | seq
    }
}

/// A random 21-bit server number, for single nodes: std's hasher keys are
/// seeded from the OS, which is all the randomness this needs.
pub fn random_server_number() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() & ((1 << SERVER_BITS) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_fit_a_javascript_number_and_carry_the_server() {
        let ids = ConnIds::new(u64::MAX);
        let a = ids.next();
        let b = ids.next();
        assert!(a < (1 << 53) && b < (1 << 53));
        assert_ne!(a, b);
        assert_eq!(a >> SEQUENCE_BITS, (1 << SERVER_BITS) - 1);
        ids.set_server(5);
        assert_eq!(ids.next() >> SEQUENCE_BITS, 5);
    }

    #[test]
    fn different_servers_never_share_an_id() {
        let (a, b) = (ConnIds::new(1), ConnIds::new(2));
        assert_ne!(a.next(), b.next());
        assert!(random_server_number() < (1 << SERVER_BITS));
    }
}
