//! One core's local hub: which of its connections belong to a user, which
//! are subscribed to a topic, and the topics each connection holds.
//!
//! Generic over the connection id so it is tested without an engine. Names
//! are interned: a user's `Arc<str>` is shared by the map key and every one
//! of that user's connection states.

use crate::names::NameMap;
use std::hash::Hash;
use std::sync::Arc;

/// Why a subscribe was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The connection holds the most topics it may.
    TooMany,
}

/// What a membership change meant for this core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The first connection of this core for the name.
    First,
    /// The last connection of this core for the name left.
    Last,
    /// Neither: other connections of this core still hold it, or nothing
    /// changed (already subscribed, or not subscribed).
    Same,
}

/// One core's users and topics.
#[derive(Debug)]
pub struct LocalHub<K> {
    users: NameMap<Arc<str>, Vec<K>>,
    topics: NameMap<Arc<str>, Vec<K>>,
    /// The topics of each connection that has any (most have none and are
    /// not in the map, so an idle connection pays nothing for topics).
    subscriptions: NameMap<K, Vec<Arc<str>>>,
    connections: usize,
}

impl<K> Default for LocalHub<K> {
    fn default() -> Self {
        LocalHub {
            users: NameMap::default(),
            topics: NameMap::default(),
            subscriptions: NameMap::default(),
            connections: 0,
        }
    }
}

impl<K: Copy + Eq + Hash> LocalHub<K> {
    /// Adds `conn` as a connection of `user`; returns the interned name.
    pub fn join(&mut self, user: &str, conn: K) -> (Arc<str>, Change) {
        self.connections += 1;
        if let Some((name, _)) = self.users.get_key_value(user) {
            let name = name.clone();
            if let Some(conns) = self.users.get_mut(&name) {
                conns.push(conn);
            }
            return (name, Change::Same);
        }
        let name: Arc<str> = Arc::from(user);
        self.users.insert(name.clone(), vec![conn]);
        (name, Change::First)
    }

    /// Removes `conn` from `user` and from every topic it held. Returns the
    /// user's change and each topic whose last local subscriber this was.
    pub fn leave(&mut self, user: &str, conn: K) -> (Change, Vec<Arc<str>>) {
        let mut user_change = Change::Same;
        if let Some(conns) = self.users.get_mut(user)
            && let Some(i) = conns.iter().position(|c| *c == conn)
        {
            conns.swap_remove(i);
            self.connections -= 1;
            if conns.is_empty() {
                self.users.remove(user);
                user_change = Change::Last;
            }
        }
        let mut emptied = Vec::new();
        for topic in self.subscriptions.remove(&conn).unwrap_or_default() {
            if remove_member(&mut self.topics, &topic, conn) {
                emptied.push(topic);
            }
        }
        (user_change, emptied)
    }

    /// Subscribes `conn` to `topic`, allowing it at most `max` topics.
    pub fn subscribe(
        &mut self,
        conn: K,
        topic: &str,
        max: usize,
    ) -> Result<Change, SubscribeError> {
        let held = self.subscriptions.get(&conn);
        if held.is_some_and(|t| t.iter().any(|t| &**t == topic)) {
            return Ok(Change::Same);
        }
        if held.map_or(0, Vec::len) >= max {
            return Err(SubscribeError::TooMany);
        }
        let (name, change) = match self.topics.get_key_value(topic) {
            Some((name, _)) => (name.clone(), Change::Same),
            None => (Arc::from(topic), Change::First),
        };
        self.topics.entry(name.clone()).or_default().push(conn);
        self.subscriptions.entry(conn).or_default().push(name);
        Ok(change)
    }

    /// Unsubscribes `conn` from `topic`.
    pub fn unsubscribe(&mut self, conn: K, topic: &str) -> Change {
        let Some(held) = self.subscriptions.get_mut(&conn) else {
            return Change::Same;
        };
        let Some(i) = held.iter().position(|t| &**t == topic) else {
            return Change::Same;
        };
        held.swap_remove(i);
        if held.is_empty() {
            self.subscriptions.remove(&conn);
        }
        if remove_member(&mut self.topics, topic, conn) {
            Change::Last
        } else {
            Change::Same
        }
    }

    /// This core's connections of `user`.
    pub fn user(&self, user: &str) -> &[K] {
        self.users.get(user).map_or(&[], Vec::as_slice)
    }

    /// This core's subscribers of `topic`.
    pub fn topic(&self, topic: &str) -> &[K] {
        self.topics.get(topic).map_or(&[], Vec::as_slice)
    }

    /// Every connection on this core.
    pub fn everyone(&self) -> impl Iterator<Item = K> + '_ {
        self.users.values().flatten().copied()
    }

    /// Connections on this core.
    pub fn connections(&self) -> usize {
        self.connections
    }
}

/// Removes `conn` from `name`'s members; true if that emptied it.
fn remove_member<K: Eq>(map: &mut NameMap<Arc<str>, Vec<K>>, name: &str, conn: K) -> bool {
    let Some(members) = map.get_mut(name) else {
        return false;
    };
    if let Some(i) = members.iter().position(|c| *c == conn) {
        members.swap_remove(i);
    }
    if members.is_empty() {
        map.remove(name);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_with_two_connections_is_first_once_and_last_once() {
        let mut hub = LocalHub::default();
        let (a, first) = hub.join("alice", 1);
        let (b, again) = hub.join("alice", 2);
        assert_eq!((first, again), (Change::First, Change::Same));
        assert!(Arc::ptr_eq(&a, &b), "the name is interned");
        assert_eq!(hub.user("alice"), &[1, 2]);
        assert_eq!(hub.leave("alice", 1).0, Change::Same);
        assert_eq!(hub.leave("alice", 2).0, Change::Last);
        assert!(hub.user("alice").is_empty());
        assert_eq!(hub.connections(), 0);
    }

    #[test]
    fn topics_track_their_subscribers_and_a_limit_per_connection() {
        let mut hub = LocalHub::default();
        hub.join("a", 1);
        hub.join("b", 2);
        assert_eq!(hub.subscribe(1, "news", 2), Ok(Change::First));
        assert_eq!(hub.subscribe(1, "news", 2), Ok(Change::Same));
        assert_eq!(hub.subscribe(2, "news", 2), Ok(Change::Same));
        assert_eq!(hub.subscribe(1, "sport", 2), Ok(Change::First));
        assert_eq!(hub.subscribe(1, "weather", 2), Err(SubscribeError::TooMany));
        assert_eq!(hub.topic("news"), &[1, 2]);
        assert_eq!(hub.unsubscribe(1, "news"), Change::Same);
        assert_eq!(hub.unsubscribe(1, "news"), Change::Same);
        assert_eq!(hub.unsubscribe(2, "news"), Change::Last);
        assert!(hub.topic("news").is_empty());
    }

    #[test]
    fn leaving_drops_every_subscription_and_reports_emptied_topics() {
        let mut hub = LocalHub::default();
        hub.join("a", 1);
        hub.join("b", 2);
        hub.subscribe(1, "x", 10).unwrap();
        hub.subscribe(1, "y", 10).unwrap();
        hub.subscribe(2, "y", 10).unwrap();
        let (change, mut emptied) = hub.leave("a", 1);
        emptied.sort();
        assert_eq!(change, Change::Last);
        assert_eq!(emptied, vec![Arc::<str>::from("x")]);
        assert_eq!(hub.topic("y"), &[2]);
        assert_eq!(hub.everyone().collect::<Vec<_>>(), vec![2]);
    }
}
