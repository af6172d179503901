//! A 3-master + 3-replica Redis Cluster on free ports.

use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::server::{RedisServer, cli};

/// Six `redis-server --cluster-enabled yes` nodes joined with
/// `redis-cli --cluster create ... --cluster-replicas 1`. Dropping it kills
/// every node.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// How long cluster-wide waits may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// Starts the six nodes, creates the cluster and waits until every node
    /// reports `cluster_state:ok` and agrees on all 16384 slots.
    pub fn start() -> Self {
        crate::require_redis();
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::spawn(
                    free_port(true),
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                        // Replicas sync at once (the default waits 5 s for
                        // more replicas): a replica that never synced cannot
                        // take over, and failover tests start early.
                        "--repl-diskless-sync-delay",
                        "0",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                )
            })
            .collect();
        for n in &nodes {
            n.wait_ready(Duration::from_secs(10));
        }
        let cluster = Self { nodes };
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(cluster.nodes.iter().map(RedisServer::addr));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(str::to_owned));
        let out = cli(
            cluster.nodes[0].port(),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(
            out.contains("[OK] All 16384 slots covered"),
            "redis-cli --cluster create failed:\n{out}"
        );
        cluster.wait_healthy();
        cluster
    }

    /// All six nodes, masters and replicas alike.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// `redis://127.0.0.1:<port>` of every node, as client seeds.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        self.node_mut(port).kill();
    }

    /// Restarts the node on `port` with its cluster config, and waits until
    /// the cluster is healthy again.
    pub fn restart(&mut self, port: u16) {
        self.node_mut(port).restart();
        self.wait_healthy();
    }

    fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// Ports of the current masters, as the first live node sees them.
    pub fn master_ports(&self) -> Vec<u16> {
        self.cluster_nodes()
            .into_iter()
            .filter(|n| n.master)
            .map(|n| n.port)
            .collect()
    }

    /// The port of the master serving `slot`; panics if none does.
    pub fn master_for_slot(&self, slot: u16) -> u16 {
        self.try_master_for_slot(slot)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The port of the healthy master serving `slot`, if any (none while a
    /// failover is under way).
    pub fn try_master_for_slot(&self, slot: u16) -> Option<u16> {
        self.cluster_nodes()
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|n| n.port)
    }

    /// The node id of the node on `port`.
    pub fn node_id(&self, port: u16) -> String {
        cli(port, &["CLUSTER", "MYID"]).trim().to_owned()
    }

    /// A replica of the master on `master_port`.
    pub fn replica_of(&self, master_port: u16) -> u16 {
        let id = self.node_id(master_port);
        self.cluster_nodes()
            .into_iter()
            .find(|n| n.master_id.as_deref() == Some(id.as_str()))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("master {master_port} has no replica"))
    }

    /// Moves one slot, keys included, from its master to the master on
    /// `to` (`CLUSTER SETSLOT` IMPORTING/MIGRATING, `MIGRATE`, `SETSLOT NODE`).
    pub fn migrate_slot(&self, slot: u16, to: u16) {
        let from = self.master_for_slot(slot);
        if from == to {
            return;
        }
        self.begin_migration(slot, from, to);
        self.move_keys(slot, from, to);
        self.finish_migration(slot, to);
    }

    /// First half of a migration: the target imports, the source migrates.
    /// While it lasts, keys already moved answer `ASK`.
    pub fn begin_migration(&self, slot: u16, from: u16, to: u16) {
        let s = slot.to_string();
        expect_ok(cli(
            to,
            &["CLUSTER", "SETSLOT", &s, "IMPORTING", &self.node_id(from)],
        ));
        expect_ok(cli(
            from,
            &["CLUSTER", "SETSLOT", &s, "MIGRATING", &self.node_id(to)],
        ));
    }

    /// Moves the keys of `slot` that are still on `from` to `to`.
    pub fn move_keys(&self, slot: u16, from: u16, to: u16) {
        let s = slot.to_string();
        loop {
            let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &s, "1000"]);
            let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
            if keys.is_empty() {
                return;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1"];
            let to_s = to.to_string();
            args.extend([to_s.as_str(), "", "0", "5000", "KEYS"]);
            args.extend(&keys);
            expect_ok(cli(from, &args));
        }
    }

    /// Last half: every master learns that `to` owns `slot`.
    pub fn finish_migration(&self, slot: u16, to: u16) {
        let s = slot.to_string();
        let id = self.node_id(to);
        for port in self.master_ports() {
            expect_ok(cli(port, &["CLUSTER", "SETSLOT", &s, "NODE", &id]));
        }
        self.wait_healthy();
    }

    /// Waits until every running node says `cluster_state:ok`, sees all
    /// slots assigned, every running node agrees on who serves them, and
    /// every running replica is in sync with its master (so it can fail over).
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            let live: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.pid().is_some()).collect();
            let infos: Vec<String> = live
                .iter()
                .map(|n| cli(n.port(), &["CLUSTER", "INFO"]))
                .collect();
            let ok = infos.iter().all(|i| {
                i.contains("cluster_state:ok") && i.contains("cluster_slots_assigned:16384")
            });
            let views: Vec<String> = live
                .iter()
                .map(|n| slots_view(&cli(n.port(), &["CLUSTER", "NODES"])))
                .collect();
            // Every node is a master serving slots or a replica whose link is
            // up (right after `--cluster create` future replicas still say
            // role:master for a moment).
            let serving: Vec<u16> = live
                .first()
                .map(|n| cli(n.port(), &["CLUSTER", "NODES"]))
                .unwrap_or_default()
                .lines()
                .filter_map(NodeLine::parse)
                .filter(|n| n.master && !n.slots.is_empty())
                .map(|n| n.port)
                .collect();
            let synced = live.iter().all(|n| {
                let info = cli(n.port(), &["INFO", "replication"]);
                (serving.contains(&n.port()) && info.contains("role:master"))
                    || (info.contains("role:slave") && info.contains("master_link_status:up"))
            });
            if ok && synced && views.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            last = infos.join("\n");
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the cluster did not become healthy within {WAIT:?}; CLUSTER INFO:\n{last}");
    }

    fn cluster_nodes(&self) -> Vec<NodeLine> {
        let port = self
            .nodes
            .iter()
            .find(|n| n.pid().is_some())
            .map(RedisServer::port)
            .expect("no live node");
        cli(port, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(NodeLine::parse)
            .collect()
    }
}

fn expect_ok(out: String) {
    assert!(
        out.trim() == "OK" || out.contains("NOKEY"),
        "expected OK from redis-cli, got: {out}"
    );
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    port: u16,
    master: bool,
    master_id: Option<String>,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = f
            .get(1)?
            .split(['@', ','])
            .next()?
            .rsplit(':')
            .next()?
            .parse()
            .ok()?;
        let flags = f.get(2)?;
        let slots = f
            .iter()
            .skip(8)
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|a| (a, a)),
            })
            .collect();
        Some(Self {
            port,
            master: flags.contains("master") && !flags.contains("fail"),
            master_id: f.get(3).filter(|m| **m != "-").map(|m| (*m).to_owned()),
            failed: flags.contains("fail"),
            slots,
        })
    }
}

/// Who owns which slots, as one node sees it: comparable across nodes.
fn slots_view(nodes: &str) -> String {
    let mut v: Vec<String> = nodes
        .lines()
        .filter_map(NodeLine::parse)
        .filter(|n| n.master && !n.failed)
        .map(|n| format!("{}:{:?}", n.port, n.slots))
        .collect();
    v.sort();
    v.join(" ")
}
