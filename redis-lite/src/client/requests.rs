//! Requests: where each goes, redirects, and multi-key fan-in.

use std::time::Instant;

use super::{Client, Dest, Event, Role, Tag};
use crate::cluster::{Fanout, Route, route};
use crate::cmd::{Cmd, cmd};
use crate::conn::Connection;
use crate::error::{Error, RedirectKind};
use crate::slot_map::host_of;
use crate::value::Value;

impl Client {
    pub(super) fn route_and_submit(&mut self, dest: Dest, command: Cmd, now: Instant) {
        if self.topology.is_none() {
            self.waiting
                .push_back((dest, command, now + self.config.connect_timeout));
            if !self.refresh.in_flight {
                self.start_refresh(now);
            }
            return;
        }
        let tag = |dest| Tag::Request {
            dest,
            redirects: 0,
            direct: false,
        };
        match route(&command) {
            Route::Any => match self.any_master() {
                Some(node) => {
                    let link = self.link_for(node, Role::Command);
                    self.submit(link, tag(dest), command, true, now);
                }
                None => self.finish(dest, Err(Error::SlotUnassigned(0))),
            },
            Route::Slot(slot) => match self.slots.get(slot) {
                Some(node) => {
                    let link = self.link_for(node, Role::Command);
                    self.submit(link, tag(dest), command, true, now);
                }
                None => {
                    self.request_refresh(now);
                    self.finish(dest, Err(Error::SlotUnassigned(slot)));
                }
            },
            Route::Split(split) => {
                let Dest::User(id) = dest else {
                    return self.finish(
                        dest,
                        Err(Error::Unroutable {
                            command: command.name_upper(),
                            reason: "nested split",
                        }),
                    );
                };
                let fanout = self.fanouts.insert((id, Fanout::new(&split)));
                for (part, (slot, sub, _)) in split.parts.into_iter().enumerate() {
                    let dest = Dest::Part { fanout, part };
                    match self.slots.get(slot) {
                        Some(node) => {
                            let link = self.link_for(node, Role::Command);
                            self.submit(link, tag(dest), sub, true, now);
                        }
                        None => self.finish(dest, Err(Error::SlotUnassigned(slot))),
                    }
                }
            }
            Route::Unroutable(reason) => self.finish(
                dest,
                Err(Error::Unroutable {
                    command: command.name_upper(),
                    reason,
                }),
            ),
        }
    }

    pub(super) fn any_master(&mut self) -> Option<usize> {
        let masters: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].in_topology)
            .collect();
        if masters.is_empty() {
            return None;
        }
        self.any_cursor = self.any_cursor.wrapping_add(1);
        let ready = |n: &usize| {
            self.nodes[*n].links[0]
                .and_then(|l| self.links[l].conn.as_ref())
                .is_some_and(Connection::is_ready)
        };
        let up: Vec<usize> = masters.iter().copied().filter(ready).collect();
        let pool = if up.is_empty() { &masters } else { &up };
        Some(pool[self.any_cursor % pool.len()])
    }

    pub(super) fn complete(
        &mut self,
        link: usize,
        tag: Tag,
        result: Result<Value, Error>,
        command: Option<Cmd>,
        now: Instant,
    ) {
        match tag {
            Tag::Request {
                dest,
                redirects,
                direct,
            } => {
                let redirect = match &result {
                    Err(Error::Server(e)) if !direct && self.config.cluster => e.redirect(),
                    _ => None,
                };
                match (redirect, command) {
                    (Some(r), Some(command)) => {
                        if redirects >= self.config.max_redirects {
                            return self.finish(dest, Err(Error::TooManyRedirects(redirects)));
                        }
                        let addr = self.resolve(&r.addr, link);
                        let node = self.node_for(&addr);
                        let target = self.link_for(node, Role::Command);
                        let retry = Tag::Request {
                            dest,
                            redirects: redirects + 1,
                            direct: false,
                        };
                        if r.kind == RedirectKind::Moved {
                            self.slots.set(r.slot, node);
                            self.request_refresh(now);
                        } else {
                            self.submit(target, Tag::Asking, cmd("ASKING"), false, now);
                        }
                        self.submit(target, retry, command, true, now);
                    }
                    _ => {
                        if let Err(Error::Server(e)) = &result
                            && matches!(e.code(), "CLUSTERDOWN" | "TRYAGAIN")
                        {
                            self.request_refresh(now);
                        }
                        self.finish(dest, result);
                    }
                }
            }
            Tag::Asking => {}
            Tag::Refresh { shards } => self.on_refresh(link, shards, result, now),
            Tag::Sub {
                kind,
                subscribe,
                channels,
            } => self.on_sub_reply(link, kind, subscribe, channels, result, now),
        }
    }

    /// `host:port` from a redirect; an empty host means the replying node's.
    pub(super) fn resolve(&self, addr: &str, link: usize) -> String {
        match addr.strip_prefix(':') {
            Some(port) => format!("{}:{port}", host_of(self.addr(link))),
            None => addr.to_owned(),
        }
    }

    pub(super) fn finish(&mut self, dest: Dest, result: Result<Value, Error>) {
        match dest {
            Dest::User(id) => self.events.push_back(Event::Reply { id, result }),
            Dest::Part { fanout, part } => {
                let done = self
                    .fanouts
                    .get_mut(fanout)
                    .and_then(|(id, f)| Some((*id, f.add(part, result)?)));
                if let Some((id, result)) = done {
                    self.fanouts.remove(fanout);
                    self.events.push_back(Event::Reply { id, result });
                }
            }
        }
    }
}
