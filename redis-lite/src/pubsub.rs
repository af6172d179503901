//! The subscriptions the caller wants, and where each one stands. Desired
//! state is kept as a set so that it can be replayed after a reconnect, a
//! failover or a slot migration, whatever the server forgot.

use std::collections::HashMap;

use bytes::Bytes;

use crate::pubsub_kind::SubKind;

/// Where one wanted subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubState {
    /// Not on any connection: to be (re)sent when its node is reachable.
    Idle,
    /// Sent on this link, not confirmed yet.
    Pending(usize),
    /// Confirmed on this link.
    Active(usize),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: SubState,
    /// MOVED answers followed since it was last active.
    redirects: u8,
}

/// Desired subscriptions, keyed by kind and channel (or pattern).
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    wanted: HashMap<(SubKind, Bytes), Entry>,
}

impl Subscriptions {
    /// Adds a wanted subscription; false if it was already wanted.
    pub(crate) fn want(&mut self, kind: SubKind, channel: Bytes) -> bool {
        let mut added = false;
        self.wanted.entry((kind, channel)).or_insert_with(|| {
            added = true;
            Entry {
                state: SubState::Idle,
                redirects: 0,
            }
        });
        added
    }

    /// Drops a wanted subscription, returning where it stood.
    pub(crate) fn unwant(&mut self, kind: SubKind, channel: &Bytes) -> Option<SubState> {
        self.wanted
            .remove(&(kind, channel.clone()))
            .map(|e| e.state)
    }

    pub(crate) fn state(&self, kind: SubKind, channel: &Bytes) -> Option<SubState> {
        self.wanted.get(&(kind, channel.clone())).map(|e| e.state)
    }

    pub(crate) fn set(&mut self, kind: SubKind, channel: &Bytes, state: SubState) {
        if let Some(e) = self.wanted.get_mut(&(kind, channel.clone())) {
            e.state = state;
            if matches!(state, SubState::Active(_)) {
                e.redirects = 0;
            }
        }
    }

    /// Counts one redirect for the channel; returns the count so far.
    pub(crate) fn redirected(&mut self, kind: SubKind, channel: &Bytes) -> u8 {
        self.wanted
            .get_mut(&(kind, channel.clone()))
            .map_or(0, |e| {
                e.redirects = e.redirects.saturating_add(1);
                e.redirects
            })
    }

    /// Every subscription on `link` becomes idle; returns them, for the
    /// caller to learn that messages may have been missed.
    pub(crate) fn link_lost(&mut self, link: usize) -> Vec<(SubKind, Bytes)> {
        let mut lost = Vec::new();
        for ((kind, channel), e) in &mut self.wanted {
            if matches!(e.state, SubState::Active(l) | SubState::Pending(l) if l == link) {
                if matches!(e.state, SubState::Active(_)) {
                    lost.push((*kind, channel.clone()));
                }
                e.state = SubState::Idle;
            }
        }
        lost.sort();
        lost
    }

    /// Every wanted subscription and where it stands.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SubKind, &Bytes, SubState)> {
        self.wanted.iter().map(|((k, c), e)| (*k, c, e.state))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.wanted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_and_loses_links() {
        let mut s = Subscriptions::default();
        let a = Bytes::from_static(b"a");
        let b = Bytes::from_static(b"b");
        assert!(s.want(SubKind::Shard, a.clone()));
        assert!(!s.want(SubKind::Shard, a.clone()));
        s.want(SubKind::Channel, b.clone());
        s.set(SubKind::Shard, &a, SubState::Active(3));
        s.set(SubKind::Channel, &b, SubState::Pending(3));
        assert_eq!(s.link_lost(3), vec![(SubKind::Shard, a.clone())]);
        assert_eq!(s.state(SubKind::Channel, &b), Some(SubState::Idle));
        assert_eq!(s.redirected(SubKind::Shard, &a), 1);
        s.set(SubKind::Shard, &a, SubState::Active(4));
        assert_eq!(
            s.redirected(SubKind::Shard, &a),
            1,
            "activation resets the redirect count"
        );
        assert_eq!(s.unwant(SubKind::Shard, &a), Some(SubState::Active(4)));
        assert_eq!(s.len(), 1);
    }
}
