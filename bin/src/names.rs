//! Hashing for the maps keyed by names clients choose (users, topics,
//! channels), looked up several times per message: foldhash's quality
//! variant, seeded at random per map like std's, at a fraction of SipHash's
//! cost.

/// A hasher builder with a random seed.
pub type NameHasher = foldhash::quality::RandomState;

/// A map keyed by client-chosen names.
pub type NameMap<K, V> = std::collections::HashMap<K, V, NameHasher>;
