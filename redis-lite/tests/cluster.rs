//! redis-lite against a real 3-master + 3-replica Redis Cluster. One cluster
//! serves every scenario of this file, in order (starting one takes seconds);
//! it is killed when the test ends, however it ends.

use std::time::{Duration, Instant};

use bytes::Bytes;
use redis_lite::{BlockingClient, Config, Error, Value, cmd, key_slot};
use ringhub_testkit::RedisCluster;

fn client(cluster: &RedisCluster) -> BlockingClient {
    let mut config = Config::cluster_from_urls(&cluster.urls()[..2]).unwrap();
    config.backoff_base = Duration::from_millis(20);
    config.backoff_cap = Duration::from_millis(300);
    BlockingClient::connect(config).unwrap()
}

fn bulk(s: &str) -> Value {
    Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

/// Retries `f` until it returns `Some`, for at most `within`.
fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cluster_scenarios() {
    let t = Instant::now();
    let mut cluster = RedisCluster::start();
    let step = |name: &str, t: &mut Instant| {
        eprintln!("{name}: {:?}", t.elapsed());
        *t = Instant::now();
    };
    let mut t = t;
    step("cluster start", &mut t);
    routes_keys_and_pipelines_across_masters(&cluster);
    step("routing", &mut t);
    splits_multi_key_commands_by_slot(&cluster);
    refuses_unroutable_commands(&cluster);
    step("split/unroutable", &mut t);
    follows_moved_after_a_slot_migration(&cluster);
    step("moved", &mut t);
    follows_ask_during_a_migration(&cluster);
    step("ask", &mut t);
    survives_a_manual_failover(&cluster);
    step("manual failover", &mut t);
    survives_a_master_kill_and_restart(&mut cluster);
    step("kill and restart", &mut t);
}

fn routes_keys_and_pipelines_across_masters(cluster: &RedisCluster) {
    let mut c = client(cluster);
    assert_eq!(c.core().masters().len(), 3);
    let n = 5_000;
    let sets = c.pipeline((0..n).map(|i| cmd("SET").arg(format!("key:{i}")).arg(i)));
    assert!(
        sets.iter().all(|r| matches!(r, Ok(v) if v.is_ok())),
        "{:?}",
        sets.iter().find(|r| r.is_err())
    );
    let gets = c.pipeline((0..n).map(|i| cmd("GET").arg(format!("key:{i}"))));
    for (i, g) in gets.into_iter().enumerate() {
        assert_eq!(g.unwrap(), bulk(&i.to_string()));
    }
    // The keys really are spread: every master holds some.
    for port in cluster.master_ports() {
        let size = cluster.node(port).cli(&["DBSIZE"]);
        assert!(
            size.trim().parse::<u64>().unwrap() > 1000,
            "master {port} holds {size}"
        );
    }
    // CLUSTER KEYSLOT agrees with the client's slot function.
    for key in ["foo", "bar", "{user:1}:inbox", "key:42", ""] {
        let slot = c.query(cmd("CLUSTER").arg("KEYSLOT").arg(key)).unwrap();
        assert_eq!(
            slot,
            Value::Int(i64::from(key_slot(key.as_bytes()))),
            "{key}"
        );
    }
}

fn splits_multi_key_commands_by_slot(cluster: &RedisCluster) {
    let mut c = client(cluster);
    let keys: Vec<String> = (0..30).map(|i| format!("multi:{i}")).collect();
    let slots: std::collections::HashSet<u16> =
        keys.iter().map(|k| key_slot(k.as_bytes())).collect();
    assert!(slots.len() > 10, "the keys span many slots");
    let mut mset = cmd("MSET");
    for k in &keys {
        mset.push(k).push(format!("v-{k}"));
    }
    assert!(c.query(mset).unwrap().is_ok());
    let mut mget = cmd("MGET");
    for k in &keys {
        mget.push(k);
    }
    mget.push("multi:missing");
    let Value::Array(values) = c.query(mget).unwrap() else {
        panic!("MGET gives an array")
    };
    assert_eq!(values.len(), keys.len() + 1);
    for (k, v) in keys.iter().zip(&values) {
        assert_eq!(*v, bulk(&format!("v-{k}")), "values come back in key order");
    }
    assert_eq!(values[keys.len()], Value::Nil);
    let mut exists = cmd("EXISTS");
    let mut del = cmd("DEL");
    for k in &keys {
        exists.push(k);
        del.push(k);
    }
    assert_eq!(c.query(exists).unwrap(), Value::Int(30));
    assert_eq!(c.query(del).unwrap(), Value::Int(30));
}

fn refuses_unroutable_commands(cluster: &RedisCluster) {
    let mut c = client(cluster);
    for command in [
        cmd("KEYS").arg("*"),
        cmd("MSETNX").arg("a").arg("1").arg("b").arg("2"),
        cmd("MULTI"),
    ] {
        let err = c.query(command).unwrap_err();
        assert!(matches!(err, Error::Unroutable { .. }), "{err}");
    }
    // A cross-slot script is caught before it reaches a server.
    let err = c
        .query(cmd("EVAL").arg("return 1").arg(2).arg("a").arg("b"))
        .unwrap_err();
    assert!(err.to_string().contains("hash tag"), "{err}");
    // Per-node commands go through query_node.
    for master in c.core().masters() {
        assert!(matches!(
            c.query_node(&master, cmd("DBSIZE")).unwrap(),
            Value::Int(_)
        ));
    }
}

fn follows_moved_after_a_slot_migration(cluster: &RedisCluster) {
    let mut c = client(cluster);
    let slot = key_slot(b"moved-key");
    c.query(cmd("SET").arg("moved-key").arg("before")).unwrap();
    let from = cluster.master_for_slot(slot);
    let to = cluster
        .master_ports()
        .into_iter()
        .find(|&p| p != from)
        .unwrap();
    cluster.migrate_slot(slot, to);
    assert_eq!(
        c.core().node_for_key(b"moved-key"),
        Some(format!("127.0.0.1:{from}").as_str()),
        "stale map"
    );
    // The old owner answers MOVED; the client updates its map and retries.
    assert_eq!(
        c.query(cmd("GET").arg("moved-key")).unwrap(),
        bulk("before")
    );
    assert_eq!(
        c.core().node_for_key(b"moved-key"),
        Some(format!("127.0.0.1:{to}").as_str())
    );
    assert!(
        c.query(cmd("SET").arg("moved-key").arg("after"))
            .unwrap()
            .is_ok()
    );
    assert_eq!(cluster.node(to).cli(&["GET", "moved-key"]).trim(), "after");
}

fn follows_ask_during_a_migration(cluster: &RedisCluster) {
    let mut c = client(cluster);
    // Two keys in one slot: one is moved early, one stays behind.
    let (moved, stays) = ("{ask}:moved", "{ask}:stays");
    let slot = key_slot(b"{ask}");
    c.query(cmd("SET").arg(moved).arg("m")).unwrap();
    c.query(cmd("SET").arg(stays).arg("s")).unwrap();
    let from = cluster.master_for_slot(slot);
    let to = cluster
        .master_ports()
        .into_iter()
        .find(|&p| p != from)
        .unwrap();
    cluster.begin_migration(slot, from, to);
    let out =
        cluster
            .node(from)
            .cli(&["MIGRATE", "127.0.0.1", &to.to_string(), moved, "0", "5000"]);
    assert_eq!(out.trim(), "OK", "{out}");
    // The source answers ASK for the moved key: ASKING + GET on the target.
    assert_eq!(c.query(cmd("GET").arg(moved)).unwrap(), bulk("m"));
    assert_eq!(c.query(cmd("GET").arg(stays)).unwrap(), bulk("s"));
    // ASK does not change the map: the slot still belongs to the source.
    assert_eq!(
        c.core().node_for_key(moved.as_bytes()),
        Some(format!("127.0.0.1:{from}").as_str())
    );
    cluster.move_keys(slot, from, to);
    cluster.finish_migration(slot, to);
    assert_eq!(c.query(cmd("GET").arg(stays)).unwrap(), bulk("s"));
}

fn survives_a_manual_failover(cluster: &RedisCluster) {
    let mut c = client(cluster);
    let key = "failover-key";
    c.query(cmd("SET").arg(key).arg("v1")).unwrap();
    let slot = key_slot(key.as_bytes());
    let old = cluster.master_for_slot(slot);
    let replica = cluster.replica_of(old);
    // A graceful CLUSTER FAILOVER lets the replica catch up first.
    assert_eq!(
        cluster.node(replica).cli(&["CLUSTER", "FAILOVER"]).trim(),
        "OK"
    );
    eventually(
        Duration::from_secs(20),
        "the replica becomes master",
        || (cluster.master_for_slot(slot) == replica).then_some(()),
    );
    cluster.wait_healthy();
    // The demoted master answers MOVED; the client follows it.
    assert_eq!(c.query(cmd("GET").arg(key)).unwrap(), bulk("v1"));
    assert!(c.query(cmd("SET").arg(key).arg("v2")).unwrap().is_ok());
    assert_eq!(
        c.core().node_for_key(key.as_bytes()),
        Some(format!("127.0.0.1:{replica}").as_str())
    );
}

fn survives_a_master_kill_and_restart(cluster: &mut RedisCluster) {
    let mut c = client(cluster);
    let key = "kill-key";
    c.query(cmd("SET").arg(key).arg("k1")).unwrap();
    let slot = key_slot(key.as_bytes());
    let victim = cluster.master_for_slot(slot);
    let replica = cluster.replica_of(victim);
    eventually(Duration::from_secs(10), "the replica has the key", || {
        (get_on_replica(replica, key).as_deref() == Some("k1")).then_some(())
    });
    cluster.kill(victim);
    // Requests fail clearly while the cluster notices (node timeout 2 s) ...
    let err = c.query(cmd("GET").arg(key)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ConnectionLost { .. } | Error::NotConnected { .. } | Error::Server(_)
        ),
        "{err}"
    );
    // ... then the promoted replica serves the slot and the client finds it.
    let v = eventually(
        Duration::from_secs(30),
        "the key is served after failover",
        || c.query(cmd("GET").arg(key)).ok(),
    );
    assert_eq!(v, bulk("k1"));
    assert_eq!(
        c.core().node_for_key(key.as_bytes()),
        Some(format!("127.0.0.1:{replica}").as_str())
    );
    // The old master comes back as a replica.
    cluster.restart(victim);
    assert!(c.query(cmd("SET").arg(key).arg("k2")).unwrap().is_ok());
}

/// `READONLY` + `GET` on one replica, through a standalone connection.
fn get_on_replica(port: u16, key: &str) -> Option<String> {
    let mut c = BlockingClient::open(&format!("redis://127.0.0.1:{port}")).ok()?;
    c.query(cmd("READONLY")).ok()?;
    c.query(cmd("GET").arg(key))
        .ok()?
        .as_str()
        .map(str::to_owned)
}
