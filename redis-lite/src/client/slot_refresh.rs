//! The cluster slot map: coalesced, rate-limited refreshes from
//! `CLUSTER SHARDS` (or `CLUSTER SLOTS`), and applying a new map.

use std::time::Instant;

use super::{Client, Event, Role, Tag};
use crate::cmd::cmd;
use crate::conn::Connection;
use crate::error::Error;
use crate::slot_map::{Topology, host_of};
use crate::value::Value;

impl Client {
    /// Asks for a fresh slot map: at once, or after the minimum interval
    /// since the last one; requests made while one is in flight coalesce.
    pub(super) fn request_refresh(&mut self, now: Instant) {
        if !self.config.cluster {
            return;
        }
        if self.refresh.in_flight {
            self.refresh.again = true;
            return;
        }
        let earliest = self
            .refresh
            .last
            .map_or(now, |l| l + self.config.min_refresh_interval);
        if now < earliest {
            self.refresh.scheduled =
                Some(self.refresh.scheduled.map_or(earliest, |s| s.min(earliest)));
        } else {
            self.start_refresh(now);
        }
    }

    pub(super) fn start_refresh(&mut self, now: Instant) {
        self.refresh.scheduled = None;
        let ready: Vec<usize> = (0..self.links.len())
            .filter(|&l| self.links[l].role == Role::Command)
            .filter(|&l| {
                self.links[l]
                    .conn
                    .as_ref()
                    .is_some_and(Connection::is_ready)
            })
            .collect();
        if ready.is_empty() {
            // Nothing is up: reconnect seeds and masters; the first to come
            // up asks (see `ConnEvent::Ready`).
            self.refresh.scheduled = Some(now + self.config.min_refresh_interval);
            self.refresh.waiting_for_link = true;
            let mut addrs = self.config.seeds.clone();
            addrs.extend(self.masters());
            for addr in addrs {
                let node = self.node_for(&addr);
                let link = self.link_for(node, Role::Command);
                self.ensure_connecting(link, now);
            }
            return;
        }
        self.refresh.waiting_for_link = false;
        let link = ready[self.rng.below(ready.len() as u64) as usize];
        self.refresh.in_flight = true;
        self.refresh.last = Some(now);
        let shards = !self.refresh.use_slots;
        let command = cmd("CLUSTER").arg(if shards { "SHARDS" } else { "SLOTS" });
        self.submit(link, Tag::Refresh { shards }, command, false, now);
    }

    pub(super) fn on_refresh(
        &mut self,
        link: usize,
        shards: bool,
        result: Result<Value, Error>,
        now: Instant,
    ) {
        self.refresh.in_flight = false;
        let host = host_of(self.addr(link)).to_owned();
        let parsed = match result {
            Ok(v) if shards => Topology::from_cluster_shards(&v, &host),
            Ok(v) => Topology::from_cluster_slots(&v, &host),
            Err(Error::Server(e)) if shards && !self.refresh.use_slots => {
                // Before Redis 7 there is no CLUSTER SHARDS.
                self.refresh.use_slots = true;
                self.refresh.last_error = e.to_string();
                return self.start_refresh(now);
            }
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(t) if t.covered_slots() > 0 => self.apply_topology(t, now),
            Ok(_) => self.refresh_failed("no slot is assigned to any master".to_owned(), now),
            Err(e) => self.refresh_failed(e, now),
        }
        if std::mem::take(&mut self.refresh.again) {
            self.request_refresh(now);
        }
    }

    pub(super) fn refresh_failed(&mut self, error: String, now: Instant) {
        self.refresh.last_error = error;
        self.refresh.scheduled = Some(now + self.config.min_refresh_interval);
    }

    pub(super) fn apply_topology(&mut self, topology: Topology, now: Instant) {
        self.slots.clear();
        for n in &mut self.nodes {
            n.in_topology = false;
        }
        for shard in &topology.shards {
            let node = self.node_for(&shard.master);
            self.nodes[node].in_topology = true;
            for &(a, b) in &shard.slots {
                for slot in a..=b {
                    self.slots.set(slot, node);
                }
            }
        }
        let masters = topology.shards.len();
        let changed = self.topology.as_ref() != Some(&topology);
        self.topology = Some(topology);
        self.refresh.last_error.clear();
        for node in 0..self.nodes.len() {
            let in_topology = self.nodes[node].in_topology;
            if in_topology {
                let link = self.link_for(node, Role::Command);
                self.links[link].wanted = true;
                self.ensure_connecting(link, now);
            }
            for link in self.nodes[node].links.into_iter().flatten() {
                self.links[link].wanted = in_topology;
                if in_topology {
                    continue;
                }
                self.links[link].retry_at = None;
                let idle = self.links[link]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.in_flight() == 0);
                if idle || self.links[link].role == Role::PubSub {
                    if let Some(c) = self.links[link].conn.as_mut() {
                        let reason = "the node is no longer a master serving slots".to_owned();
                        c.close(Error::NotConnected {
                            addr: c.addr().to_owned(),
                            reason,
                        });
                    }
                    self.drain(link, now);
                }
            }
        }
        if changed {
            self.events.push_back(Event::SlotMapUpdated { masters });
        }
        for (dest, command, _) in std::mem::take(&mut self.waiting) {
            self.route_and_submit(dest, command, now);
        }
        self.reconcile_all(now);
    }
}
