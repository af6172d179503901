//! Pub/sub: sending the subscriptions that are wanted to the node that
//! should carry them, and reacting to confirmations, refusals and losses.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

use super::{Client, Event, Role};
use crate::conn::Connection;
use crate::error::{Error, RedirectKind};
use crate::pubsub::SubState;
use crate::pubsub_kind::SubKind;
use crate::slot::key_slot;
use crate::value::Value;

impl Client {
    /// The node a subscription belongs on: the only one, or on a cluster the
    /// master of the slot of its name (sharded channels must be there; plain
    /// channels and patterns may be anywhere, and spread this way).
    pub(super) fn sub_target(&self, channel: &[u8]) -> Option<usize> {
        if !self.config.cluster {
            return Some(0);
        }
        self.slots.get(key_slot(channel))
    }

    pub(super) fn reconcile_all(&mut self, now: Instant) {
        let all = self.subscriptions();
        self.reconcile(all, now);
    }

    /// Sends `SUBSCRIBE`s so that each of `candidates` that is wanted ends
    /// up active on the node that should carry it. Sharded channels are
    /// grouped by slot: one `SSUBSCRIBE` may not span slots.
    pub(super) fn reconcile(&mut self, candidates: Vec<(SubKind, Bytes)>, now: Instant) {
        if self.config.cluster && self.topology.is_none() {
            return;
        }
        let mut groups: BTreeMap<(usize, SubKind, u16), Vec<Bytes>> = BTreeMap::new();
        let mut moves: BTreeMap<(usize, SubKind), Vec<Bytes>> = BTreeMap::new();
        for (kind, channel) in candidates {
            let Some(state) = self.subs.state(kind, &channel) else {
                continue;
            };
            let Some(node) = self.sub_target(&channel) else {
                continue;
            };
            match state {
                SubState::Pending(_) => continue,
                SubState::Active(l) if self.links[l].node == node => continue,
                SubState::Active(l) => moves.entry((l, kind)).or_default().push(channel.clone()),
                SubState::Idle => {}
            }
            let link = self.link_for(node, Role::PubSub);
            if self.unavailable(link).is_some() {
                self.subs.set(kind, &channel, SubState::Idle);
                continue;
            }
            let slot = if kind == SubKind::Shard {
                key_slot(&channel)
            } else {
                0
            };
            groups.entry((node, kind, slot)).or_default().push(channel);
        }
        for ((link, kind), channels) in moves {
            if self.links[link]
                .conn
                .as_ref()
                .is_some_and(Connection::is_ready)
            {
                self.submit_sub(link, kind, false, channels, now);
            }
        }
        for ((node, kind, _), channels) in groups {
            let link = self.link_for(node, Role::PubSub);
            self.links[link].wanted = true;
            for chunk in channels.chunks(256) {
                for c in chunk {
                    self.subs.set(kind, c, SubState::Pending(link));
                }
                self.submit_sub(link, kind, true, chunk.to_vec(), now);
            }
        }
    }

    pub(super) fn on_subscription(
        &mut self,
        link: usize,
        kind: SubKind,
        channel: Bytes,
        subscribed: bool,
        solicited: bool,
        now: Instant,
    ) {
        let state = self.subs.state(kind, &channel);
        if subscribed {
            match state {
                Some(_) => {
                    self.subs.set(kind, &channel, SubState::Active(link));
                    self.events.push_back(Event::Subscribed { kind, channel });
                }
                // Unsubscribed while the subscribe was in flight.
                None => self.submit_sub(link, kind, false, vec![channel], now),
            }
        } else if !solicited
            && matches!(state, Some(SubState::Active(l) | SubState::Pending(l)) if l == link)
        {
            // The server dropped it: with sharded channels, the slot moved.
            self.subs.set(kind, &channel, SubState::Idle);
            let reason = "the server dropped the subscription (its slot moved to another node)";
            self.report_lost(vec![(kind, channel.clone())], reason);
            self.request_refresh(now);
            self.reconcile(vec![(kind, channel)], now);
        }
    }

    pub(super) fn on_sub_reply(
        &mut self,
        link: usize,
        kind: SubKind,
        subscribe: bool,
        channels: Vec<Bytes>,
        result: Result<Value, Error>,
        now: Instant,
    ) {
        if !subscribe {
            return;
        }
        let error = match result {
            Ok(_) => return,
            Err(e) => e,
        };
        let still_pending: Vec<Bytes> = channels
            .into_iter()
            .filter(|c| self.subs.state(kind, c) == Some(SubState::Pending(link)))
            .collect();
        let redirect = error.server_error().and_then(|e| e.redirect());
        match (&error, redirect) {
            (Error::Server(_), Some(r)) => {
                let moved = r.kind == RedirectKind::Moved;
                if moved {
                    let addr = self.resolve(&r.addr, link);
                    let node = self.node_for(&addr);
                    self.slots.set(r.slot, node);
                }
                self.request_refresh(now);
                let mut retry = Vec::new();
                for c in still_pending {
                    if moved && self.subs.redirected(kind, &c) > self.config.max_redirects {
                        self.subs.unwant(kind, &c);
                        let error = Error::TooManyRedirects(self.config.max_redirects);
                        self.events.push_back(Event::SubscribeFailed {
                            kind,
                            channel: c,
                            error,
                        });
                    } else {
                        // ASK: the slot is migrating; retried when the refreshed map arrives.
                        self.subs.set(kind, &c, SubState::Idle);
                        retry.push((kind, c));
                    }
                }
                if moved {
                    self.reconcile(retry, now);
                }
            }
            (Error::Server(_), None) => {
                for c in still_pending {
                    self.subs.unwant(kind, &c);
                    self.events.push_back(Event::SubscribeFailed {
                        kind,
                        channel: c,
                        error: error.clone(),
                    });
                }
            }
            // The connection went away: replayed when it (or the map) comes back.
            _ => {
                for c in still_pending {
                    self.subs.set(kind, &c, SubState::Idle);
                }
            }
        }
    }
}
