//! The cluster's shape: which master serves which slots, parsed from
//! `CLUSTER SHARDS` (Redis 7+) or `CLUSTER SLOTS`.

use crate::slot::SLOT_COUNT;
use crate::value::Value;

/// One master and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// `host:port` of the master.
    pub master: String,
    /// `host:port` of its replicas.
    pub replicas: Vec<String>,
    /// Inclusive slot ranges it serves.
    pub slots: Vec<(u16, u16)>,
}

/// Every shard that serves at least one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// The shards, in the order the server listed them.
    pub shards: Vec<Shard>,
}

impl Topology {
    /// Parses a `CLUSTER SHARDS` reply. `asked_host` replaces empty or
    /// unknown (`?`) endpoints: the host of the node that answered.
    pub fn from_cluster_shards(reply: &Value, asked_host: &str) -> Result<Self, String> {
        let shards = reply
            .as_array()
            .ok_or("CLUSTER SHARDS reply is not an array")?;
        let mut out = Vec::new();
        for shard in shards {
            let slots = shard
                .get("slots")
                .and_then(Value::as_array)
                .ok_or("a shard without `slots`")?;
            let nums = slots
                .iter()
                .map(|v| v.as_int().and_then(|n| u16::try_from(n).ok()))
                .collect::<Option<Vec<_>>>();
            let nums = nums.ok_or("`slots` holds something other than slot numbers")?;
            if nums.len() % 2 != 0 {
                return Err("`slots` is not a list of start/end pairs".to_owned());
            }
            let ranges: Vec<(u16, u16)> = nums.chunks_exact(2).map(|p| (p[0], p[1])).collect();
            check_ranges(&ranges)?;
            let nodes = shard
                .get("nodes")
                .and_then(Value::as_array)
                .ok_or("a shard without `nodes`")?;
            let mut master = None;
            let mut replicas = Vec::new();
            for node in nodes {
                let field = |k: &str| node.get(k).and_then(Value::as_str).unwrap_or("");
                let port = node
                    .get("port")
                    .and_then(Value::as_int)
                    .ok_or("a node without a port")?;
                let host = [field("endpoint"), field("ip")]
                    .into_iter()
                    .find(|h| !h.is_empty() && *h != "?");
                let addr = join_host_port(host.unwrap_or(asked_host), port);
                let online = field("health") != "fail" && field("health") != "failed";
                match field("role") {
                    "master" if online || master.is_none() => master = Some(addr),
                    "master" => {}
                    _ => replicas.push(addr),
                }
            }
            if ranges.is_empty() {
                continue;
            }
            let master = master.ok_or("a shard with slots and no master")?;
            out.push(Shard {
                master,
                replicas,
                slots: ranges,
            });
        }
        Ok(Self { shards: out })
    }

    /// Parses a `CLUSTER SLOTS` reply (`[start, end, [host, port, id], replicas...]`).
    pub fn from_cluster_slots(reply: &Value, asked_host: &str) -> Result<Self, String> {
        let entries = reply
            .as_array()
            .ok_or("CLUSTER SLOTS reply is not an array")?;
        let mut out: Vec<Shard> = Vec::new();
        for entry in entries {
            let e = entry
                .as_array()
                .filter(|e| e.len() >= 3)
                .ok_or("a CLUSTER SLOTS entry is too short")?;
            let slot = |v: &Value| {
                v.as_int()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or("a slot is not a number")
            };
            let range = (slot(&e[0])?, slot(&e[1])?);
            check_ranges(&[range])?;
            let addr = |v: &Value| -> Result<String, String> {
                let n = v
                    .as_array()
                    .filter(|n| n.len() >= 2)
                    .ok_or("a node entry is too short")?;
                let host = n[0]
                    .as_str()
                    .filter(|h| !h.is_empty() && *h != "?")
                    .unwrap_or(asked_host);
                Ok(join_host_port(
                    host,
                    n[1].as_int().ok_or("a node port is not a number")?,
                ))
            };
            let master = addr(&e[2])?;
            let replicas = e[3..].iter().map(addr).collect::<Result<Vec<_>, _>>()?;
            match out.iter_mut().find(|s| s.master == master) {
                Some(s) => s.slots.push(range),
                None => out.push(Shard {
                    master,
                    replicas,
                    slots: vec![range],
                }),
            }
        }
        Ok(Self { shards: out })
    }

    /// The master serving `slot`.
    pub fn master_of(&self, slot: u16) -> Option<&str> {
        self.shards
            .iter()
            .find(|s| s.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|s| s.master.as_str())
    }

    /// How many of the 16384 slots some master serves.
    pub fn covered_slots(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| &s.slots)
            .map(|&(a, b)| usize::from(b - a) + 1)
            .sum()
    }
}

fn check_ranges(ranges: &[(u16, u16)]) -> Result<(), String> {
    match ranges.iter().find(|&&(a, b)| a > b || b >= SLOT_COUNT) {
        Some((a, b)) => Err(format!("invalid slot range {a}-{b}")),
        None => Ok(()),
    }
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Host part of `host:port` (brackets of IPv6 kept off).
pub(crate) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Slot → node index, for O(1) routing.
#[derive(Debug, Clone)]
pub(crate) struct SlotTable {
    owners: Box<[u32]>,
}

impl SlotTable {
    const NONE: u32 = u32::MAX;

    pub(crate) fn new() -> Self {
        Self {
            owners: vec![Self::NONE; usize::from(SLOT_COUNT)].into_boxed_slice(),
        }
    }

    pub(crate) fn get(&self, slot: u16) -> Option<usize> {
        self.owners
            .get(usize::from(slot))
            .copied()
            .filter(|&n| n != Self::NONE)
            .map(|n| n as usize)
    }

    pub(crate) fn set(&mut self, slot: u16, node: usize) {
        if let Some(o) = self.owners.get_mut(usize::from(slot)) {
            *o = u32::try_from(node).unwrap_or(Self::NONE);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.owners.fill(Self::NONE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn s(x: &str) -> Value {
        Value::Bulk(Bytes::copy_from_slice(x.as_bytes()))
    }

    fn node(ip: &str, port: i64, role: &str, health: &str) -> Value {
        Value::Map(vec![
            (s("id"), s("abc")),
            (s("port"), Value::Int(port)),
            (s("ip"), s(ip)),
            (s("endpoint"), s(ip)),
            (s("role"), s(role)),
            (s("health"), s(health)),
        ])
    }

    #[test]
    fn parses_cluster_shards_resp3_and_resp2() {
        let shard = Value::Map(vec![
            (
                s("slots"),
                Value::Array(vec![
                    Value::Int(0),
                    Value::Int(5460),
                    Value::Int(6000),
                    Value::Int(6001),
                ]),
            ),
            (
                s("nodes"),
                Value::Array(vec![
                    node("127.0.0.1", 7001, "replica", "online"),
                    node("127.0.0.1", 7000, "master", "online"),
                ]),
            ),
        ]);
        let t = Topology::from_cluster_shards(&Value::Array(vec![shard.clone()]), "h").unwrap();
        assert_eq!(t.shards[0].master, "127.0.0.1:7000");
        assert_eq!(t.shards[0].replicas, ["127.0.0.1:7001"]);
        assert_eq!(t.master_of(6001), Some("127.0.0.1:7000"));
        assert_eq!(t.master_of(6002), None);
        assert_eq!(t.covered_slots(), 5463);
        // RESP2 sends the maps as flat arrays.
        let Value::Map(pairs) = shard else {
            unreachable!()
        };
        let flat = Value::Array(
            pairs
                .into_iter()
                .flat_map(|(k, v)| [k, flatten(v)])
                .collect(),
        );
        assert_eq!(
            Topology::from_cluster_shards(&Value::Array(vec![flat]), "h").unwrap(),
            t
        );
    }

    fn flatten(v: Value) -> Value {
        match v {
            Value::Map(p) => {
                Value::Array(p.into_iter().flat_map(|(k, v)| [k, flatten(v)]).collect())
            }
            Value::Array(a) => Value::Array(a.into_iter().map(flatten).collect()),
            v => v,
        }
    }

    #[test]
    fn parses_cluster_slots_with_unknown_endpoints() {
        let entry = |a, b, port| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                Value::Array(vec![s(""), Value::Int(port), s("id")]),
                Value::Array(vec![s("10.0.0.2"), Value::Int(port + 1), s("id2")]),
            ])
        };
        let reply = Value::Array(vec![
            entry(0, 99, 7000),
            entry(100, 16383, 7002),
            entry(50000, 1, 7004),
        ]);
        assert!(Topology::from_cluster_slots(&reply, "seed").is_err());
        let reply = Value::Array(vec![entry(0, 99, 7000), entry(100, 16383, 7002)]);
        let t = Topology::from_cluster_slots(&reply, "seed").unwrap();
        assert_eq!(t.master_of(5), Some("seed:7000"));
        assert_eq!(t.shards[1].replicas, ["10.0.0.2:7003"]);
        assert_eq!(t.covered_slots(), 16384);
    }

    #[test]
    fn rejects_malformed_replies() {
        for bad in [
            Value::Int(1),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Map(vec![])]),
        ] {
            assert!(Topology::from_cluster_shards(&bad, "h").is_err());
            assert!(Topology::from_cluster_slots(&bad, "h").is_err());
        }
    }

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7000"), "::1");
    }
}
