//! The three kinds of pub/sub subscription and the messages they deliver.

use bytes::Bytes;

/// Plain, pattern or sharded (Redis 7+) subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubKind {
    /// `SUBSCRIBE` / `PUBLISH`: cluster-wide broadcast.
    Channel,
    /// `PSUBSCRIBE`.
    Pattern,
    /// `SSUBSCRIBE` / `SPUBLISH`: the channel lives on the shard owning its slot.
    Shard,
}

impl SubKind {
    pub(crate) fn subscribe_command(self) -> &'static str {
        match self {
            SubKind::Channel => "SUBSCRIBE",
            SubKind::Pattern => "PSUBSCRIBE",
            SubKind::Shard => "SSUBSCRIBE",
        }
    }

    pub(crate) fn unsubscribe_command(self) -> &'static str {
        match self {
            SubKind::Channel => "UNSUBSCRIBE",
            SubKind::Pattern => "PUNSUBSCRIBE",
            SubKind::Shard => "SUNSUBSCRIBE",
        }
    }

    /// Parses the first element of a confirmation push (`ssubscribe`, ...):
    /// the kind and whether it subscribes (true) or unsubscribes.
    pub(crate) fn from_confirmation(name: &[u8]) -> Option<(SubKind, bool)> {
        Some(match name {
            b"subscribe" => (SubKind::Channel, true),
            b"unsubscribe" => (SubKind::Channel, false),
            b"psubscribe" => (SubKind::Pattern, true),
            b"punsubscribe" => (SubKind::Pattern, false),
            b"ssubscribe" => (SubKind::Shard, true),
            b"sunsubscribe" => (SubKind::Shard, false),
            _ => return None,
        })
    }
}

/// A published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// How it was subscribed to.
    pub kind: SubKind,
    /// The channel it was published on.
    pub channel: Bytes,
    /// The matching pattern, for [`SubKind::Pattern`].
    pub pattern: Option<Bytes>,
    /// The payload.
    pub payload: Bytes,
}
