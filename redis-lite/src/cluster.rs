//! Which node a command goes to on a Redis Cluster, and how multi-key
//! commands whose keys span slots are split and their replies merged.

use std::collections::BTreeMap;

use crate::cmd::{Cmd, cmd};
use crate::error::Error;
use crate::slot::key_slot;
use crate::value::Value;

/// Where a command goes.
#[derive(Debug)]
pub(crate) enum Route {
    /// No key: any master will do.
    Any,
    /// The master of this slot.
    Slot(u16),
    /// Keys in several slots: one sub-command per slot.
    Split(Split),
    /// Cannot go to one node; the reason says what to do instead.
    Unroutable(&'static str),
}

/// How the replies of a split command become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merge {
    /// `MGET`: values back in key order.
    Positional,
    /// `DEL`, `EXISTS`, `UNLINK`, `TOUCH`: counts added up.
    Sum,
    /// `MSET`: `OK` if every part said `OK`.
    AllOk,
}

/// A multi-key command cut along slot boundaries.
#[derive(Debug)]
pub(crate) struct Split {
    pub merge: Merge,
    /// Total number of keys (the length of a positional result).
    pub keys: usize,
    /// Per slot: the sub-command and the positions of its keys in the original.
    pub parts: Vec<(u16, Cmd, Vec<usize>)>,
}

/// Decides where `command` goes.
pub(crate) fn route(command: &Cmd) -> Route {
    let mut words = command.args();
    let Some(raw_name) = words.next() else {
        return Route::Any;
    };
    // Upper-cased on the stack: routing allocates only for multi-key commands.
    let mut buf = [0u8; 16];
    let Some(upper) = buf.get_mut(..raw_name.len()) else {
        // No command has a name this long: route by its first argument.
        return words
            .next()
            .map_or(Route::Any, |k| Route::Slot(key_slot(k)));
    };
    upper.copy_from_slice(raw_name);
    upper.make_ascii_uppercase();
    let name = std::str::from_utf8(upper).unwrap_or("");
    let all_args = || command.args().skip(1).collect::<Vec<&[u8]>>();
    match name {
        "MGET" => split(name, &all_args(), 1, Merge::Positional),
        "DEL" | "UNLINK" | "EXISTS" | "TOUCH" => split(name, &all_args(), 1, Merge::Sum),
        "MSET" => split(name, &all_args(), 2, Merge::AllOk),
        "MSETNX" => same_slot(words.step_by(2)),
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" | "FCALL" | "FCALL_RO" => {
            let args = all_args();
            let Some(n) = args
                .get(1)
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok())
            else {
                return Route::Unroutable(
                    "the script's numkeys argument is missing or not a number",
                );
            };
            match args.get(2..2 + n) {
                Some([]) => Route::Any,
                Some(keys) => same_slot(keys.iter().copied()),
                None => Route::Unroutable("the script declares more keys than it passes"),
            }
        }
        "XREAD" | "XREADGROUP" => {
            let args = all_args();
            match args.iter().position(|a| a.eq_ignore_ascii_case(b"STREAMS")) {
                Some(i) => {
                    let rest = &args[i + 1..];
                    same_slot(rest[..rest.len() / 2].iter().copied())
                }
                None => Route::Unroutable("XREAD without STREAMS"),
            }
        }
        "OBJECT" | "MEMORY" | "XINFO" => words
            .nth(1)
            .map_or(Route::Any, |k| Route::Slot(key_slot(k))),
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE"
        | "SUNSUBSCRIBE" => Route::Unroutable(
            "subscriptions go through Client::subscribe, which routes and replays them",
        ),
        "MULTI" | "EXEC" | "DISCARD" | "WATCH" | "UNWATCH" => Route::Unroutable(
            "transactions need one connection; send them to one node with send_to",
        ),
        "SELECT" => Route::Unroutable("Redis Cluster has only database 0"),
        "KEYS" | "SCAN" | "DBSIZE" | "FLUSHALL" | "FLUSHDB" | "RANDOMKEY" | "SCRIPT"
        | "FUNCTION" | "WAIT" => {
            Route::Unroutable("it acts on one node's data; send it to each master with send_to")
        }
        "PING" | "ECHO" | "TIME" | "INFO" | "CLUSTER" | "COMMAND" | "PUBLISH" | "PUBSUB"
        | "CONFIG" | "CLIENT" | "HELLO" | "LASTSAVE" | "ROLE" | "LOLWUT" | "ACL" => Route::Any,
        _ => words
            .next()
            .map_or(Route::Any, |k| Route::Slot(key_slot(k))),
    }
}

fn same_slot<'a>(mut keys: impl Iterator<Item = &'a [u8]>) -> Route {
    let Some(first) = keys.next() else {
        return Route::Any;
    };
    let slot = key_slot(first);
    if keys.all(|k| key_slot(k) == slot) {
        Route::Slot(slot)
    } else {
        Route::Unroutable("its keys are in different slots; give them a common {hash tag}")
    }
}

fn split(name: &str, args: &[&[u8]], step: usize, merge: Merge) -> Route {
    if args.is_empty() || !args.len().is_multiple_of(step) {
        return Route::Unroutable("wrong number of arguments");
    }
    let mut by_slot: BTreeMap<u16, (Cmd, Vec<usize>)> = BTreeMap::new();
    for (i, group) in args.chunks_exact(step).enumerate() {
        let (part, positions) = by_slot
            .entry(key_slot(group[0]))
            .or_insert_with(|| (cmd(name), Vec::new()));
        for a in group {
            part.push(*a);
        }
        positions.push(i);
    }
    if by_slot.len() == 1 {
        return by_slot.into_keys().next().map_or(Route::Any, Route::Slot);
    }
    let parts = by_slot
        .into_iter()
        .map(|(slot, (c, p))| (slot, c, p))
        .collect();
    Route::Split(Split {
        merge,
        keys: args.len() / step,
        parts,
    })
}

/// Collects the replies of a split command.
#[derive(Debug)]
pub(crate) struct Fanout {
    merge: Merge,
    remaining: usize,
    values: Vec<Value>,
    sum: i64,
    error: Option<Error>,
    positions: Vec<Vec<usize>>,
}

impl Fanout {
    pub(crate) fn new(split: &Split) -> Self {
        Self {
            merge: split.merge,
            remaining: split.parts.len(),
            values: if split.merge == Merge::Positional {
                vec![Value::Nil; split.keys]
            } else {
                Vec::new()
            },
            sum: 0,
            error: None,
            positions: split.parts.iter().map(|(_, _, p)| p.clone()).collect(),
        }
    }

    /// Adds the reply of part `part`; returns the merged result after the last one.
    pub(crate) fn add(
        &mut self,
        part: usize,
        result: Result<Value, Error>,
    ) -> Option<Result<Value, Error>> {
        self.remaining -= 1;
        match result {
            Err(e) => {
                self.error.get_or_insert(e);
            }
            Ok(v) => match self.merge {
                Merge::Positional => match v {
                    Value::Array(items) if items.len() == self.positions[part].len() => {
                        for (pos, item) in self.positions[part].iter().zip(items) {
                            self.values[*pos] = item;
                        }
                    }
                    other => {
                        self.error.get_or_insert(Error::Protocol {
                            addr: String::new(),
                            detail: format!("a split MGET part answered {other:?}"),
                        });
                    }
                },
                Merge::Sum => self.sum += v.as_int().unwrap_or(0),
                Merge::AllOk if !v.is_ok() => {
                    self.error.get_or_insert(Error::Protocol {
                        addr: String::new(),
                        detail: format!("a split MSET part answered {v:?}"),
                    });
                }
                Merge::AllOk => {}
            },
        }
        if self.remaining > 0 {
            return None;
        }
        Some(match (self.error.take(), self.merge) {
            (Some(e), _) => Err(e),
            (None, Merge::Positional) => Ok(Value::Array(std::mem::take(&mut self.values))),
            (None, Merge::Sum) => Ok(Value::Int(self.sum)),
            (None, Merge::AllOk) => Ok(Value::Status(bytes::Bytes::from_static(b"OK"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_single_key_commands_by_slot() {
        assert!(matches!(route(&cmd("GET").arg("foo")), Route::Slot(12182)));
        assert!(matches!(
            route(&cmd("SPUBLISH").arg("foo").arg("m")),
            Route::Slot(12182)
        ));
        assert!(matches!(route(&cmd("PING")), Route::Any));
        assert!(matches!(route(&cmd("EVAL").arg("s").arg(0)), Route::Any));
        assert!(matches!(
            route(&cmd("EVAL").arg("s").arg(2).arg("{a}1").arg("{a}2")),
            Route::Slot(_)
        ));
        assert!(matches!(
            route(&cmd("EVAL").arg("s").arg(2).arg("a").arg("b")),
            Route::Unroutable(_)
        ));
        assert!(matches!(
            route(&cmd("EVAL").arg("s").arg(3).arg("a")),
            Route::Unroutable(_)
        ));
        assert!(matches!(route(&cmd("KEYS").arg("*")), Route::Unroutable(_)));
        assert!(matches!(
            route(
                &cmd("XREAD")
                    .arg("STREAMS")
                    .arg("{s}1")
                    .arg("{s}2")
                    .arg("0")
                    .arg("0")
            ),
            Route::Slot(_)
        ));
    }

    #[test]
    fn splits_and_merges_mget() {
        let Route::Split(s) = route(&cmd("MGET").arg("foo").arg("bar").arg("{foo}x")) else {
            panic!()
        };
        assert_eq!(s.parts.len(), 2);
        let mut f = Fanout::new(&s);
        let reply = |part: usize| {
            Value::Array(
                s.parts[part]
                    .2
                    .iter()
                    .map(|p| Value::Int(*p as i64))
                    .collect(),
            )
        };
        assert!(f.add(1, Ok(reply(1))).is_none());
        let merged = f.add(0, Ok(reply(0))).unwrap().unwrap();
        assert_eq!(
            merged,
            Value::Array(vec![Value::Int(0), Value::Int(1), Value::Int(2)])
        );
    }

    #[test]
    fn splits_mset_pairs_and_sums_del() {
        let Route::Split(s) = route(&cmd("MSET").arg("foo").arg("1").arg("bar").arg("2")) else {
            panic!()
        };
        assert!(s.parts.iter().all(|(_, c, _)| c.len() == 3));
        let Route::Split(s) = route(&cmd("DEL").arg("foo").arg("bar")) else {
            panic!()
        };
        let mut f = Fanout::new(&s);
        f.add(0, Ok(Value::Int(1)));
        assert_eq!(f.add(1, Ok(Value::Int(1))).unwrap().unwrap(), Value::Int(2));
        assert!(matches!(route(&cmd("MSET").arg("a")), Route::Unroutable(_)));
        assert!(matches!(
            route(&cmd("MSET").arg("{t}a").arg("1").arg("{t}b").arg("2")),
            Route::Slot(_)
        ));
    }
}
