//! The sans-IO core driven by hand: no sockets, no sleeps, a fake clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use redis_lite::{
    Action, Client, Config, ConnEvent, Connection, Error, Event, SubKind, Value, cmd,
};

fn config(resp3: bool) -> Arc<Config> {
    Arc::new(Config {
        resp3,
        ..Config::default()
    })
}

/// A connection past its (empty, RESP2) handshake, or past `HELLO 3`.
fn ready(resp3: bool) -> (Connection<u32>, Instant) {
    let now = Instant::now();
    let mut c = Connection::new("127.0.0.1:6379".into(), config(resp3), now);
    c.handle_connected(now);
    if resp3 {
        let hello = c.poll_transmit().unwrap();
        assert!(hello.starts_with(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"));
        c.handle_input(b"%1\r\n$5\r\nproto\r\n:3\r\n", now);
    }
    assert!(matches!(c.poll_event(), Some(ConnEvent::Ready)));
    (c, now)
}

fn events(c: &mut Connection<u32>) -> Vec<ConnEvent<u32>> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn reply_tags(evs: &[ConnEvent<u32>]) -> Vec<(u32, Result<Value, String>)> {
    evs.iter()
        .filter_map(|e| match e {
            ConnEvent::Reply { tag, result, .. } => {
                Some((*tag, result.clone().map_err(|e| e.to_string())))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn batches_one_write_and_matches_replies_in_order() {
    let (mut c, now) = ready(false);
    for i in 0..3 {
        c.send(i, cmd("INCR").arg("n"), false, now);
    }
    let out = c.poll_transmit().unwrap();
    assert_eq!(
        out.iter().filter(|&&b| b == b'*').count(),
        3,
        "three commands, one buffer"
    );
    assert!(c.poll_transmit().is_none());
    c.handle_input(b":1\r\n:2\r\n-ERR no\r\n", now);
    let got = reply_tags(&events(&mut c));
    assert_eq!(got[0], (0, Ok(Value::Int(1))));
    assert_eq!(got[1], (1, Ok(Value::Int(2))));
    assert_eq!(got[2].0, 2);
    assert!(got[2].1.as_ref().unwrap_err().contains("ERR no"));
}

#[test]
fn resp3_pushes_interleave_without_breaking_matching() {
    let (mut c, now) = ready(true);
    c.send(7, cmd("GET").arg("a"), false, now);
    c.send(8, cmd("GET").arg("b"), false, now);
    c.handle_input(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n$1\r\nA\r\n>2\r\n$10\r\ninvalidate\r\n*0\r\n_\r\n", now);
    let evs = events(&mut c);
    assert!(
        matches!(&evs[0], ConnEvent::Message(m) if &m.payload[..] == b"hi" && m.kind == SubKind::Channel)
    );
    assert!(
        matches!(&evs[1], ConnEvent::Reply { tag: 7, result: Ok(Value::Bulk(b)), .. } if &b[..] == b"A")
    );
    assert!(matches!(&evs[2], ConnEvent::Push(_)));
    assert!(matches!(
        &evs[3],
        ConnEvent::Reply {
            tag: 8,
            result: Ok(Value::Nil),
            ..
        }
    ));
}

#[test]
fn resp2_subscribed_mode_tells_pushes_from_replies() {
    let (mut c, now) = ready(false);
    c.send_subscription(
        1,
        SubKind::Shard,
        true,
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
        now,
    );
    c.send(2, cmd("PING"), false, now);
    c.handle_input(b"*3\r\n$10\r\nssubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$8\r\nsmessage\r\n$1\r\na\r\n$1\r\nx\r\n", now);
    c.handle_input(
        b"*3\r\n$10\r\nssubscribe\r\n$1\r\nb\r\n:2\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n",
        now,
    );
    // The server drops `a` on its own (its slot moved).
    c.handle_input(b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\na\r\n:1\r\n", now);
    let evs = events(&mut c);
    let kinds: Vec<String> = evs
        .iter()
        .map(|e| match e {
            ConnEvent::Subscription {
                channel,
                subscribed,
                solicited,
                ..
            } => {
                format!(
                    "sub {} {subscribed} {solicited}",
                    String::from_utf8_lossy(channel)
                )
            }
            ConnEvent::Message(m) => format!("msg {}", String::from_utf8_lossy(&m.payload)),
            ConnEvent::Reply { tag, result, .. } => format!("reply {tag} {result:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "sub a true true",
            "msg x",
            "reply 1 Ok(Int(2))",
            "sub b true true",
            "reply 2 Ok(Array([Bulk(b\"pong\"), Bulk(b\"\")]))",
            "sub a false false",
        ]
    );
}

#[test]
fn a_refused_subscription_fails_its_request() {
    let (mut c, now) = ready(true);
    c.send_subscription(
        1,
        SubKind::Shard,
        true,
        vec![Bytes::from_static(b"foo")],
        now,
    );
    c.send(2, cmd("PING"), false, now);
    c.handle_input(b"-MOVED 12182 127.0.0.1:7002\r\n+PONG\r\n", now);
    let got = reply_tags(&events(&mut c));
    assert!(got[0].1.as_ref().unwrap_err().contains("MOVED 12182"));
    assert_eq!(got[1].0, 2);
}

#[test]
fn hello_falls_back_to_auth_on_old_servers_and_fails_on_bad_passwords() {
    let now = Instant::now();
    let cfg = Arc::new(Config {
        password: Some("pw".into()),
        db: 3,
        ..Config::default()
    });
    let mut c: Connection<u32> = Connection::new("h:1".into(), cfg.clone(), now);
    c.send(1, cmd("GET").arg("k"), false, now);
    c.handle_connected(now);
    let hello = c.poll_transmit().unwrap();
    assert!(hello.windows(4).any(|w| w == b"AUTH"), "HELLO carries AUTH");
    assert!(
        !hello.windows(3).any(|w| w == b"GET"),
        "commands wait for the handshake"
    );
    c.handle_input(b"-ERR unknown command 'HELLO'\r\n", now);
    let auth = c.poll_transmit().unwrap();
    assert_eq!(
        &auth[..],
        b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"
    );
    c.handle_input(b"+OK\r\n+OK\r\n", now);
    assert!(matches!(c.poll_event(), Some(ConnEvent::Ready)));
    assert!(
        c.poll_transmit()
            .unwrap()
            .ends_with(b"$3\r\nGET\r\n$1\r\nk\r\n")
    );
    assert_eq!(c.protocol(), redis_lite::Protocol::Resp2);

    let mut c: Connection<u32> = Connection::new("h:1".into(), cfg, now);
    c.send(1, cmd("GET").arg("k"), false, now);
    c.handle_connected(now);
    c.handle_input(b"-WRONGPASS invalid username-password pair\r\n", now);
    let evs = events(&mut c);
    assert!(
        matches!(&evs[0], ConnEvent::Reply { tag: 1, result: Err(Error::NotConnected { reason, .. }), .. } if reason.contains("WRONGPASS"))
    );
    assert!(matches!(evs.last(), Some(ConnEvent::Closed(_))));
}

#[test]
fn a_late_reply_times_out_everything_in_flight() {
    let (mut c, now) = ready(false);
    c.send(1, cmd("GET").arg("a"), false, now);
    c.send(2, cmd("GET").arg("b"), true, now + Duration::from_secs(1));
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(5)));
    c.handle_timeout(now + Duration::from_secs(4));
    assert!(c.poll_event().is_none(), "not yet");
    c.handle_timeout(now + Duration::from_secs(5));
    let evs = events(&mut c);
    assert!(matches!(
        &evs[0],
        ConnEvent::Reply {
            tag: 1,
            result: Err(Error::Timeout { .. }),
            cmd: None
        }
    ));
    assert!(
        matches!(
            &evs[1],
            ConnEvent::Reply {
                tag: 2,
                result: Err(Error::Timeout { .. }),
                cmd: Some(_)
            }
        ),
        "retained command returned"
    );
    assert!(matches!(&evs[2], ConnEvent::Closed(Error::Timeout { .. })));
    assert!(c.is_closed());
}

#[test]
fn a_quiet_connection_is_pinged_and_closed_if_nobody_answers() {
    let (mut c, now) = ready(false);
    let interval = Config::default().health_check_interval.unwrap();
    let timeout = Config::default().request_timeout.unwrap();
    assert_eq!(c.poll_timeout(), Some(now + interval));
    c.handle_timeout(now + interval);
    assert_eq!(&c.poll_transmit().unwrap()[..], b"*1\r\n$4\r\nPING\r\n");
    // Answered: nothing surfaces; the next check is an interval after the answer.
    c.handle_input(b"+PONG\r\n", now + interval);
    assert!(
        c.poll_event().is_none(),
        "the health check's reply is the connection's own"
    );
    assert_eq!(c.poll_timeout(), Some(now + interval * 2));
    // Not answered: the connection is declared dead.
    c.handle_timeout(now + interval * 2);
    assert!(c.poll_transmit().is_some());
    assert_eq!(c.poll_timeout(), Some(now + interval * 2 + timeout));
    c.handle_timeout(now + interval * 2 + timeout);
    assert!(matches!(
        c.poll_event(),
        Some(ConnEvent::Closed(Error::Timeout { .. }))
    ));
}

#[test]
fn a_dead_socket_fails_every_request_clearly() {
    let (mut c, now) = ready(true);
    for i in 0..100 {
        c.send(i, cmd("GET").arg("a"), false, now);
    }
    c.handle_input(b"$1\r\nx\r\n$1\r\n", now);
    c.handle_disconnected("connection reset by peer");
    let got = reply_tags(&events(&mut c));
    assert_eq!(got.len(), 100, "none dropped silently");
    assert_eq!(got[0].1, Ok(Value::Bulk(Bytes::from_static(b"x"))));
    assert!(
        got[1..]
            .iter()
            .all(|(_, r)| r.as_ref().unwrap_err().contains("connection reset by peer"))
    );
}

#[test]
fn a_reply_nobody_asked_for_is_a_protocol_error() {
    let (mut c, now) = ready(false);
    c.handle_input(b"+OK\r\n", now);
    assert!(matches!(
        events(&mut c).last(),
        Some(ConnEvent::Closed(Error::Protocol { .. }))
    ));
}

proptest! {
    /// However the replies are cut into reads, each request gets its own reply.
    #[test]
    fn replies_match_across_any_read_boundaries(values in proptest::collection::vec(0i64..1_000_000, 1..60), cuts in proptest::collection::vec(1usize..30, 1..200)) {
        let (mut c, now) = ready(false);
        let mut wire = Vec::new();
        for (i, v) in values.iter().enumerate() {
            c.send(i as u32, cmd("GET").arg(i), false, now);
            wire.extend_from_slice(format!("${}\r\n{v}\r\n", v.to_string().len()).as_bytes());
        }
        let mut rest = &wire[..];
        for cut in cuts.iter().cycle() {
            if rest.is_empty() { break; }
            let n = (*cut).min(rest.len());
            c.handle_input(&rest[..n], now);
            rest = &rest[n..];
        }
        let got = reply_tags(&events(&mut c));
        prop_assert_eq!(got.len(), values.len());
        for (i, (tag, r)) in got.into_iter().enumerate() {
            prop_assert_eq!(tag as usize, i);
            prop_assert_eq!(r.unwrap(), Value::Bulk(Bytes::from(values[i].to_string())));
        }
    }

    /// Arbitrary bytes from a peer end in replies or a protocol error, never a panic.
    #[test]
    fn garbage_never_panics(resp3 in any::<bool>(), noise in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (mut c, now) = ready(resp3);
        for i in 0..4 {
            c.send(i, cmd("GET").arg("k"), false, now);
        }
        c.send_subscription(9, SubKind::Channel, true, vec![Bytes::from_static(b"c")], now);
        c.handle_input(&noise, now);
        let _ = events(&mut c);
    }

    /// Structured but hostile frames (wrong push shapes, huge lengths).
    #[test]
    fn hostile_frames_never_panic(frames in proptest::collection::vec(prop_oneof![
        Just(&b">0\r\n"[..]), Just(&b">1\r\n:1\r\n"[..]), Just(&b">3\r\n:1\r\n:2\r\n:3\r\n"[..]),
        Just(&b">3\r\n$7\r\nmessage\r\n:1\r\n_\r\n"[..]), Just(&b">3\r\n$9\r\nsubscribe\r\n_\r\n_\r\n"[..]),
        Just(&b"*3\r\n$7\r\nmessage\r\n*0\r\n:1\r\n"[..]), Just(&b"$99999999999\r\n"[..]), Just(&b"*-5\r\n"[..]),
        Just(&b"%1\r\n:1\r\n"[..]), Just(&b"|1\r\n+a\r\n+b\r\n+OK\r\n"[..]), Just(&b"+OK\r\n"[..]),
    ], 0..12)) {
        for resp3 in [false, true] {
            let (mut c, now) = ready(resp3);
            c.send_subscription(1, SubKind::Pattern, true, vec![Bytes::from_static(b"p*")], now);
            for i in 2..6 { c.send(i, cmd("GET").arg("k"), false, now); }
            for f in &frames { c.handle_input(f, now); }
            let _ = events(&mut c);
        }
    }
}

// ----- the multi-node client, driven by hand --------------------------------

struct Harness {
    client: Client,
    now: Instant,
}

impl Harness {
    fn cluster() -> Self {
        let now = Instant::now();
        let config = Config {
            cluster: true,
            resp3: false,
            seeds: vec!["10.0.0.1:7000".into()],
            ..Config::default()
        };
        Self {
            client: Client::new(config, 1, now).unwrap(),
            now,
        }
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.client.poll_action()).collect()
    }

    /// Connects every pending socket (no handshake in RESP2 without auth).
    fn connect_all(&mut self) -> Vec<(redis_lite::ConnId, String)> {
        let mut conns = Vec::new();
        for a in self.actions() {
            if let Action::Connect { conn, addr } = a {
                self.client.handle_connected(conn, self.now);
                conns.push((conn, addr));
            }
        }
        conns
    }

    fn transmits(&mut self) -> Vec<(redis_lite::ConnId, String)> {
        std::iter::from_fn(|| self.client.poll_transmit())
            .map(|(c, b)| (c, String::from_utf8_lossy(&b).into_owned()))
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }
}

fn shards_reply(owner_of_all: &str, port: u16) -> String {
    let _ = owner_of_all;
    format!(
        "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*8\r\n$4\r\nport\r\n:{port}\r\n$2\r\nip\r\n$8\r\n10.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n"
    )
}

#[test]
fn cluster_client_loads_the_map_then_follows_moved_and_ask() {
    let mut h = Harness::cluster();
    let now = h.now;
    let conns = h.connect_all();
    assert_eq!(conns.len(), 1);
    let seed = conns[0].0;
    let id = h.client.send(cmd("GET").arg("foo"), now);
    let tx = h.transmits();
    assert!(
        tx[0].1.contains("CLUSTER") && tx[0].1.contains("SHARDS"),
        "asks for the map first: {tx:?}"
    );
    h.client
        .handle_input(seed, shards_reply("", 7000).as_bytes(), now);
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, Event::SlotMapUpdated { masters: 1 }))
    );
    assert!(
        h.transmits()[0].1.contains("GET"),
        "the queued command goes out once the map is known"
    );

    // MOVED: a connection to the new owner, the retry there, the map updated.
    h.client
        .handle_input(seed, b"-MOVED 12182 10.0.0.2:7001\r\n", now);
    let conns = h.connect_all();
    assert_eq!(conns[0].1, "10.0.0.2:7001");
    let tx = h.transmits();
    let to_new: Vec<_> = tx.iter().filter(|(c, _)| *c == conns[0].0).collect();
    assert!(to_new[0].1.contains("GET"));
    assert_eq!(h.client.node_for_key(b"foo"), Some("10.0.0.2:7001"));
    assert!(
        !tx.iter().any(|(_, t)| t.contains("SHARDS")),
        "the map was loaded a moment ago: the refresh waits"
    );
    let interval = h.client.config().min_refresh_interval;
    assert_eq!(
        h.client.poll_timeout(),
        Some(now + interval),
        "a refresh is scheduled"
    );
    h.client.handle_input(conns[0].0, b"$3\r\nbar\r\n", now);
    let evs = h.events();
    assert!(evs.iter().any(|e| matches!(e, Event::Reply { id: i, result: Ok(Value::Bulk(b)) } if *i == id && &b[..] == b"bar")));

    // ASK: ASKING then the command on the target, the map untouched.
    let id = h.client.send(cmd("GET").arg("bar"), now);
    let _ = h.transmits();
    h.client
        .handle_input(seed, b"-ASK 5061 10.0.0.3:7002\r\n", now);
    let conns = h.connect_all();
    let tx = h.transmits();
    let to_target = &tx.iter().find(|(c, _)| *c == conns[0].0).unwrap().1;
    assert!(
        to_target.find("ASKING").unwrap() < to_target.find("GET").unwrap(),
        "{to_target}"
    );
    assert_eq!(h.client.node_for_key(b"bar"), Some("10.0.0.1:7000"));
    h.client.handle_input(conns[0].0, b"+OK\r\n:5\r\n", now);
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, Event::Reply { id: i, result: Ok(Value::Int(5)) } if *i == id))
    );
}

#[test]
fn cluster_client_bounds_redirects() {
    let mut h = Harness::cluster();
    let now = h.now;
    let seed = h.connect_all()[0].0;
    let id = h.client.send(cmd("GET").arg("foo"), now);
    let _ = h.transmits();
    h.client
        .handle_input(seed, shards_reply("", 7000).as_bytes(), now);
    for _ in 0..=h.client.config().max_redirects {
        for (conn, text) in h.transmits() {
            if text.contains("ASKING") {
                h.client
                    .handle_input(conn, b"+OK\r\n-ASK 12182 10.0.0.1:7000\r\n", now);
            } else if text.contains("GET") {
                h.client
                    .handle_input(conn, b"-ASK 12182 10.0.0.1:7000\r\n", now);
            }
        }
        let _ = h.actions();
    }
    let evs = h.events();
    assert!(evs.iter().any(|e| matches!(e, Event::Reply { id: i, result: Err(Error::TooManyRedirects(_)) } if *i == id)), "{evs:?}");
}

#[test]
fn reconnects_with_backoff_from_the_drivers_clock() {
    let now = Instant::now();
    let config = Config {
        resp3: false,
        backoff_base: Duration::from_millis(100),
        ..Config::default()
    };
    let mut client = Client::new(config, 42, now).unwrap();
    let Some(Action::Connect { conn, .. }) = client.poll_action() else {
        panic!()
    };
    client.handle_disconnected(conn, "connection refused", now);
    assert!(matches!(client.poll_action(), Some(Action::Close { .. })));
    let retry = client.poll_timeout().unwrap();
    assert!(
        retry > now && retry <= now + Duration::from_millis(100),
        "{:?}",
        retry - now
    );
    let id = client.send(cmd("PING"), now);
    assert!(
        matches!(client.poll_event(), Some(Event::Disconnected { .. })),
        "the failure is reported"
    );
    match client.poll_event() {
        Some(Event::Reply {
            id: i,
            result: Err(Error::NotConnected { reason, .. }),
        }) => {
            assert_eq!(i, id);
            assert!(reason.contains("refused"), "{reason}");
        }
        other => panic!("a request during backoff fails at once: {other:?}"),
    }
    client.handle_timeout(retry);
    assert!(
        matches!(client.poll_action(), Some(Action::Connect { .. })),
        "reconnects when the backoff ends"
    );
}

fn count(tx: &[(redis_lite::ConnId, String)], needle: &str) -> usize {
    tx.iter().map(|(_, t)| t.matches(needle).count()).sum()
}

#[test]
fn cluster_refreshes_are_coalesced_and_rate_limited() {
    let mut h = Harness::cluster();
    let t0 = h.now;
    let seed = h.connect_all()[0].0;
    let ids: Vec<_> = (0..10)
        .map(|i| h.client.send(cmd("GET").arg(format!("k{i}")), t0))
        .collect();
    assert_eq!(
        count(&h.transmits(), "SHARDS"),
        1,
        "one map request however many commands wait"
    );
    h.client
        .handle_input(seed, shards_reply("", 7000).as_bytes(), t0);
    assert_eq!(count(&h.transmits(), "$3\r\nGET"), 10);
    // Ten MOVED answers in one burst: the map is patched at once, and one
    // refresh follows after the minimum interval.
    let moved: String = (0..10)
        .map(|i| {
            format!(
                "-MOVED {} 10.0.0.2:7001\r\n",
                redis_lite::key_slot(format!("k{i}").as_bytes())
            )
        })
        .collect();
    h.client.handle_input(seed, moved.as_bytes(), t0);
    let new = h.connect_all();
    assert_eq!(new.len(), 1, "one connection to the new owner");
    let tx = h.transmits();
    assert_eq!(count(&tx, "$3\r\nGET"), 10, "all ten retried there");
    assert_eq!(
        count(&tx, "SHARDS"),
        0,
        "no refresh before the minimum interval"
    );
    let interval = h.client.config().min_refresh_interval;
    assert_eq!(h.client.poll_timeout(), Some(t0 + interval));
    h.client.handle_timeout(t0 + interval);
    assert_eq!(count(&h.transmits(), "SHARDS"), 1);
    h.client.handle_timeout(t0 + interval * 3);
    assert_eq!(
        count(&h.transmits(), "SHARDS"),
        0,
        "none while one is in flight"
    );
    let replies: String = (0..10).map(|i| format!("$1\r\n{i}\r\n")).collect();
    h.client
        .handle_input(new[0].0, replies.as_bytes(), t0 + interval);
    let answered = h
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Reply { result: Ok(_), .. }))
        .count();
    assert_eq!(answered, ids.len());
}

#[test]
fn a_sharded_subscription_follows_its_slot() {
    let mut h = Harness::cluster();
    let now = h.now;
    let seed = h.connect_all()[0].0;
    let id = h.client.send(cmd("PING"), now);
    let _ = h.transmits();
    h.client
        .handle_input(seed, shards_reply("", 7000).as_bytes(), now);
    let _ = h.transmits();
    h.client.handle_input(seed, b"+PONG\r\n", now);
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, Event::Reply { id: i, .. } if *i == id))
    );

    // The subscription goes on a dedicated connection to the slot's master.
    h.client
        .subscribe(SubKind::Shard, [Bytes::from_static(b"server:1")], now);
    let sub_a = h.connect_all();
    assert_eq!(sub_a[0].1, "10.0.0.1:7000");
    let tx = h.transmits();
    assert!(
        tx.iter()
            .any(|(c, t)| *c == sub_a[0].0 && t.contains("SSUBSCRIBE") && t.contains("server:1"))
    );
    h.client.handle_input(
        sub_a[0].0,
        b"*3\r\n$10\r\nssubscribe\r\n$8\r\nserver:1\r\n:1\r\n",
        now,
    );
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, Event::Subscribed { .. }))
    );
    assert!(h.client.is_subscribed(SubKind::Shard, b"server:1"));

    // The slot migrates: the old owner drops the subscription unasked.
    h.client.handle_input(
        sub_a[0].0,
        b"*3\r\n$12\r\nsunsubscribe\r\n$8\r\nserver:1\r\n:0\r\n",
        now,
    );
    let events = h.events();
    assert!(
        events.iter().any(|e| matches!(e, Event::MessagesMayBeLost { channels, .. } if channels[..] == [Bytes::from_static(b"server:1")])),
        "{events:?}"
    );
    // Replayed at once on the node the map names; that node redirects.
    let tx = h.transmits();
    assert!(
        tx.iter()
            .any(|(c, t)| *c == sub_a[0].0 && t.contains("SSUBSCRIBE")),
        "{tx:?}"
    );
    let slot = redis_lite::key_slot(b"server:1");
    h.client.handle_input(
        sub_a[0].0,
        format!("-MOVED {slot} 10.0.0.2:7001\r\n").as_bytes(),
        now,
    );
    let sub_b = h.connect_all();
    assert_eq!(sub_b[0].1, "10.0.0.2:7001");
    let tx = h.transmits();
    assert!(
        tx.iter()
            .any(|(c, t)| *c == sub_b[0].0 && t.contains("SSUBSCRIBE") && t.contains("server:1"))
    );
    h.client.handle_input(
        sub_b[0].0,
        b"*3\r\n$10\r\nssubscribe\r\n$8\r\nserver:1\r\n:1\r\n",
        now,
    );
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, Event::Subscribed { .. }))
    );
    // Messages on the new owner reach the caller.
    h.client.handle_input(
        sub_b[0].0,
        b"*3\r\n$8\r\nsmessage\r\n$8\r\nserver:1\r\n$2\r\nhi\r\n",
        now,
    );
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, Event::Message(m) if &m.payload[..] == b"hi"))
    );
}
