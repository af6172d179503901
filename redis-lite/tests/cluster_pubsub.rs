//! Sharded pub/sub (`SSUBSCRIBE`/`SPUBLISH`) on a real 3-master + 3-replica
//! Redis Cluster: delivery across shards, and subscriptions that follow
//! their slot when it migrates or when its master fails over. One cluster
//! serves every scenario of this file, in order.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis_lite::{BlockingClient, Config, Event, SubKind, Value, cmd, key_slot};
use ringhub_testkit::RedisCluster;

fn client(cluster: &RedisCluster, resp3: bool) -> BlockingClient {
    let mut config = Config::cluster_from_urls(&cluster.urls()).unwrap();
    config.resp3 = resp3;
    config.backoff_base = Duration::from_millis(20);
    config.backoff_cap = Duration::from_millis(300);
    BlockingClient::connect(config).unwrap()
}

/// Channel names whose slots belong to `port`.
fn channels_on(cluster: &RedisCluster, port: u16, n: usize, prefix: &str) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|c| cluster.master_for_slot(key_slot(c.as_bytes())) == port)
        .take(n)
        .collect()
}

/// Events until one matches `want`, at most `within`.
fn wait_for(
    c: &mut BlockingClient,
    within: Duration,
    what: &str,
    mut want: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(e) = c.next_event(left) else {
            panic!("{what}: not within {within:?}; events: {seen:?}")
        };
        let done = want(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

/// Publishes until someone receives it (subscriptions may still be moving).
fn spublish_until_received(publisher: &mut BlockingClient, channel: &str, payload: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match publisher.query(cmd("SPUBLISH").arg(channel).arg(payload)) {
            Ok(Value::Int(n)) if n >= 1 => return,
            other => assert!(
                Instant::now() < deadline,
                "nobody receives {channel}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sharded_pubsub_scenarios() {
    let mut cluster = RedisCluster::start();
    delivers_sharded_messages_across_shards(&cluster);
    resubscribes_after_its_slot_moves(&cluster);
    resubscribes_after_a_failover(&mut cluster);
}

fn delivers_sharded_messages_across_shards(cluster: &RedisCluster) {
    let masters = cluster.master_ports();
    let channels: Vec<String> = masters
        .iter()
        .flat_map(|&p| channels_on(cluster, p, 3, "server"))
        .collect();
    assert_eq!(channels.len(), 9);
    for resp3 in [true, false] {
        let mut sub = client(cluster, resp3);
        sub.subscribe(SubKind::Shard, &channels).unwrap();
        let mut publisher = client(cluster, true);
        for (i, ch) in channels.iter().enumerate() {
            let receivers = publisher
                .query(cmd("SPUBLISH").arg(ch).arg(format!("m{i}")))
                .unwrap();
            assert_eq!(
                receivers,
                Value::Int(1),
                "SPUBLISH {ch} reaches the subscriber on its shard"
            );
        }
        let mut got = BTreeSet::new();
        for _ in 0..channels.len() {
            let m = sub
                .next_message(Duration::from_secs(5))
                .expect("a message within 5 s");
            assert_eq!(m.kind, SubKind::Shard);
            got.insert((
                String::from_utf8_lossy(&m.channel).into_owned(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            ));
        }
        let want: BTreeSet<_> = channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), format!("m{i}")))
            .collect();
        assert_eq!(got, want);
        // Every master carries the subscriptions of its own slots.
        for &port in &masters {
            let numsub = cluster.node(port).cli(&[
                "PUBSUB",
                "SHARDNUMSUB",
                &channels_on(cluster, port, 1, "server")[0],
            ]);
            assert!(
                numsub.lines().nth(1).is_some_and(|n| n.trim() == "1"),
                "{port}: {numsub}"
            );
        }
        sub.unsubscribe(SubKind::Shard, &channels[..1]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while publisher
            .query(cmd("SPUBLISH").arg(&channels[0]).arg("gone"))
            .unwrap()
            != Value::Int(0)
        {
            assert!(
                Instant::now() < deadline,
                "SUNSUBSCRIBE did not take effect"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn resubscribes_after_its_slot_moves(cluster: &RedisCluster) {
    let masters = cluster.master_ports();
    let channel = channels_on(cluster, masters[0], 1, "moving")[0].clone();
    let slot = key_slot(channel.as_bytes());
    let mut sub = client(cluster, true);
    let mut publisher = client(cluster, true);
    sub.subscribe(SubKind::Shard, &[&channel]).unwrap();
    spublish_until_received(&mut publisher, &channel, "before");
    assert_eq!(
        &sub.next_message(Duration::from_secs(5)).unwrap().payload[..],
        b"before"
    );

    cluster.migrate_slot(slot, masters[1]);
    // The old owner drops the subscription on its own (an unsolicited
    // `sunsubscribe`); the client says messages may have been lost ...
    let ch = Bytes::from(channel.clone());
    wait_for(
        &mut sub,
        Duration::from_secs(10),
        "MessagesMayBeLost",
        |e| matches!(e, Event::MessagesMayBeLost { channels, .. } if channels.contains(&ch)),
    );
    // ... and subscribes again on the new owner.
    wait_for(
        &mut sub,
        Duration::from_secs(10),
        "Subscribed again",
        |e| matches!(e, Event::Subscribed { channel, .. } if *channel == ch),
    );
    let numsub = cluster
        .node(masters[1])
        .cli(&["PUBSUB", "SHARDNUMSUB", &channel]);
    assert!(
        numsub.lines().nth(1).is_some_and(|n| n.trim() == "1"),
        "on the new owner: {numsub}"
    );
    spublish_until_received(&mut publisher, &channel, "after");
    assert_eq!(
        &sub.next_message(Duration::from_secs(5)).unwrap().payload[..],
        b"after"
    );
}

fn resubscribes_after_a_failover(cluster: &mut RedisCluster) {
    let victim = cluster.master_ports()[2];
    let replica = cluster.replica_of(victim);
    let channel = channels_on(cluster, victim, 1, "failover")[0].clone();
    let mut sub = client(cluster, false);
    let mut publisher = client(cluster, true);
    sub.subscribe(SubKind::Shard, &[&channel]).unwrap();
    spublish_until_received(&mut publisher, &channel, "before");
    assert_eq!(
        &sub.next_message(Duration::from_secs(5)).unwrap().payload[..],
        b"before"
    );

    cluster.kill(victim);
    let ch = Bytes::from(channel.clone());
    wait_for(
        &mut sub,
        Duration::from_secs(10),
        "MessagesMayBeLost",
        |e| matches!(e, Event::MessagesMayBeLost { channels, .. } if channels.contains(&ch)),
    );
    // The replica takes over (node timeout 2 s); the subscription follows.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.try_master_for_slot(key_slot(channel.as_bytes())) != Some(replica) {
        assert!(
            Instant::now() < deadline,
            "no failover: {}",
            cluster.node(replica).log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(
        &mut sub,
        Duration::from_secs(30),
        "Subscribed on the new master",
        |e| matches!(e, Event::Subscribed { channel, .. } if *channel == ch),
    );
    assert_eq!(
        cluster.master_for_slot(key_slot(channel.as_bytes())),
        replica
    );
    spublish_until_received(&mut publisher, &channel, "after");
    let m = sub.next_message(Duration::from_secs(5)).unwrap();
    assert_eq!(&m.payload[..], b"after");
    cluster.restart(victim);
}
