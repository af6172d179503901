//! redis-lite against a real standalone `redis-server` (started per test on
//! a free port by ringhub-testkit).

use std::time::Duration;

use bytes::Bytes;
use redis_lite::{BlockingClient, Config, Error, Event, Protocol, SubKind, Value, cmd};
use ringhub_testkit::RedisServer;

fn config(server: &RedisServer, resp3: bool) -> Config {
    let mut c = Config::from_url(&server.url()).unwrap();
    c.resp3 = resp3;
    c.backoff_base = Duration::from_millis(20);
    c.backoff_cap = Duration::from_millis(200);
    c
}

fn bulk(s: &str) -> Value {
    Value::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn pipelines_thousands_of_commands_in_order() {
    let server = RedisServer::start();
    for resp3 in [true, false] {
        let mut client = BlockingClient::connect(config(&server, resp3)).unwrap();
        let n = 20_000;
        let sets = client
            .pipeline((0..n).map(|i| cmd("SET").arg(format!("k{i}")).arg(format!("v{i}-{resp3}"))));
        assert!(
            sets.iter().all(|r| matches!(r, Ok(v) if v.is_ok())),
            "every SET says OK"
        );
        let gets = client.pipeline((0..n).map(|i| cmd("GET").arg(format!("k{i}"))));
        for (i, got) in gets.into_iter().enumerate() {
            assert_eq!(
                got.unwrap(),
                bulk(&format!("v{i}-{resp3}")),
                "reply {i} matched to its request"
            );
        }
        // Errors and values interleave without losing the order.
        let mixed = client.pipeline([
            cmd("INCR").arg("counter"),
            cmd("LPUSH").arg("k1").arg("x"),
            cmd("INCR").arg("counter"),
            cmd("GET").arg("missing"),
        ]);
        assert!(matches!(mixed[0], Ok(Value::Int(_))));
        assert_eq!(
            mixed[1]
                .as_ref()
                .unwrap_err()
                .server_error()
                .unwrap()
                .code(),
            "WRONGTYPE"
        );
        assert!(matches!(mixed[2], Ok(Value::Int(_))));
        assert_eq!(mixed[3].as_ref().unwrap(), &Value::Nil);
        client.query(cmd("DEL").arg("counter")).unwrap();
    }
}

#[test]
fn large_values_cross_many_reads() {
    let server = RedisServer::start();
    let mut client = BlockingClient::connect(config(&server, true)).unwrap();
    let big: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    client.query(cmd("SET").arg("big").arg(&big[..])).unwrap();
    assert_eq!(
        client.query(cmd("GET").arg("big")).unwrap().as_bytes(),
        Some(&big[..])
    );
}

#[test]
fn speaks_resp3_when_asked_and_resp2_otherwise() {
    let server = RedisServer::start();
    let mut c3 = BlockingClient::connect(config(&server, true)).unwrap();
    c3.query(cmd("HSET").arg("h").arg("f").arg("1")).unwrap();
    assert!(
        matches!(c3.query(cmd("HGETALL").arg("h")).unwrap(), Value::Map(_)),
        "RESP3 maps"
    );
    let mut c2 = BlockingClient::connect(config(&server, false)).unwrap();
    assert!(
        matches!(c2.query(cmd("HGETALL").arg("h")).unwrap(), Value::Array(_)),
        "RESP2 arrays"
    );
    let _ = Protocol::Resp3;
}

#[test]
fn authenticates_with_password_and_acl_user_and_selects_db() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let url = |creds: &str, db: u32| format!("redis://{creds}@127.0.0.1:{}/{db}", server.port());

    for resp3 in [true, false] {
        let mut c = Config::from_url(&url(":s3cret", 2)).unwrap();
        c.resp3 = resp3;
        let mut admin = BlockingClient::connect(c).unwrap();
        admin.query(cmd("SET").arg("where").arg("db2")).unwrap();
        admin
            .query(
                cmd("ACL")
                    .arg("SETUSER")
                    .arg("alice")
                    .arg("on")
                    .arg(">wonder")
                    .arg("~*")
                    .arg("+@all"),
            )
            .unwrap();
    }
    let mut db0 = BlockingClient::open(&url(":s3cret", 0)).unwrap();
    assert_eq!(
        db0.query(cmd("GET").arg("where")).unwrap(),
        Value::Nil,
        "SELECT kept db 2 apart"
    );

    let mut c = Config::from_url(&url("alice:wonder", 2)).unwrap();
    c.resp3 = false;
    let mut alice = BlockingClient::connect(c).unwrap();
    assert_eq!(alice.query(cmd("GET").arg("where")).unwrap(), bulk("db2"));
    assert_eq!(
        alice.query(cmd("ACL").arg("WHOAMI")).unwrap(),
        bulk("alice")
    );
    let mut alice3 = BlockingClient::open(&url("alice:wonder", 0)).unwrap();
    assert_eq!(
        alice3.query(cmd("ACL").arg("WHOAMI")).unwrap(),
        bulk("alice")
    );

    let wrong = BlockingClient::open(&url(":nope", 0)).unwrap_err();
    assert!(wrong.to_string().contains("WRONGPASS"), "{wrong}");
    let none = BlockingClient::open(&server.url()).unwrap_err();
    assert!(none.to_string().contains("NOAUTH"), "{none}");
}

fn messages(client: &mut BlockingClient, n: usize) -> Vec<(SubKind, String, String)> {
    (0..n)
        .map(|_| {
            let m = client
                .next_message(Duration::from_secs(5))
                .expect("a message within 5 s");
            (
                m.kind,
                String::from_utf8_lossy(&m.channel).into_owned(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            )
        })
        .collect()
}

#[test]
fn subscribes_and_publishes_in_resp2_and_resp3() {
    let server = RedisServer::start();
    for resp3 in [true, false] {
        let mut sub = BlockingClient::connect(config(&server, resp3)).unwrap();
        let mut publisher = BlockingClient::connect(config(&server, true)).unwrap();
        sub.subscribe(SubKind::Channel, &["news", "sport"]).unwrap();
        sub.subscribe(SubKind::Pattern, &["wea*"]).unwrap();
        // Subscribing again to what is already active returns at once.
        sub.subscribe(SubKind::Channel, &["news"]).unwrap();
        // The subscribing client still runs ordinary commands (on its command connection).
        assert_eq!(
            sub.query(cmd("PING")).unwrap(),
            Value::Status(Bytes::from_static(b"PONG"))
        );
        for (channel, payload) in [("news", "a"), ("sport", "b"), ("weather", "c")] {
            let n = publisher
                .query(cmd("PUBLISH").arg(channel).arg(payload))
                .unwrap();
            assert_eq!(n, Value::Int(1), "one subscriber on {channel}");
        }
        let got = messages(&mut sub, 3);
        assert_eq!(
            got,
            vec![
                (SubKind::Channel, "news".into(), "a".into()),
                (SubKind::Channel, "sport".into(), "b".into()),
                (SubKind::Pattern, "weather".into(), "c".into()),
            ]
        );
        sub.unsubscribe(SubKind::Channel, &["news"]);
        assert!(sub.next_message(Duration::from_millis(200)).is_none());
        assert_eq!(
            publisher
                .query(cmd("PUBLISH").arg("news").arg("x"))
                .unwrap(),
            Value::Int(0)
        );
        assert_eq!(
            publisher
                .query(cmd("PUBLISH").arg("sport").arg("y"))
                .unwrap(),
            Value::Int(1)
        );
        assert_eq!(messages(&mut sub, 1)[0].2, "y");
    }
}

#[test]
fn reconnects_and_resubscribes_after_kill_and_restart() {
    let mut server = RedisServer::start();
    let mut client = BlockingClient::connect(config(&server, true)).unwrap();
    client.subscribe(SubKind::Channel, &["alerts"]).unwrap();
    client.query(cmd("SET").arg("a").arg("1")).unwrap();

    server.kill();
    let err = client.query(cmd("GET").arg("a")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ConnectionLost { .. } | Error::NotConnected { .. }
        ),
        "a dead server fails the request clearly: {err}"
    );
    // The caller learns that messages may have been missed.
    // (Reconnect attempts keep reporting Disconnected meanwhile.)
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let event = client.next_event(Duration::from_millis(500));
        if let Some(Event::MessagesMayBeLost { channels, .. }) = event {
            assert_eq!(channels, [Bytes::from_static(b"alerts")]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no MessagesMayBeLost event for the subscription"
        );
    }

    server.restart();
    // Reconnects with backoff (capped at 200 ms here); nothing was saved.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.query(cmd("GET").arg("a")) {
            Ok(v) => {
                assert_eq!(v, Value::Nil, "a fresh server without persistence");
                break;
            }
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "no reconnect within 10 s: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The subscription is replayed on the new connection (a blocking
    // client makes progress while it is called: wait on it).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client.next_event(left) {
            Some(Event::Subscribed { channel, .. }) if &channel[..] == b"alerts" => break,
            Some(_) => {}
            None => panic!("the subscription was not replayed within 10 s"),
        }
    }
    let mut publisher = BlockingClient::connect(config(&server, true)).unwrap();
    assert_eq!(
        publisher
            .query(cmd("PUBLISH").arg("alerts").arg("back"))
            .unwrap(),
        Value::Int(1)
    );
    assert_eq!(messages(&mut client, 1)[0].2, "back");
}

#[test]
fn connect_refused_is_a_clear_error() {
    let server = RedisServer::start();
    let mut c = config(&server, true);
    drop(server);
    c.connect_timeout = Duration::from_secs(2);
    let err = BlockingClient::connect(c).unwrap_err();
    assert!(matches!(err, Error::NotConnected { .. }), "{err}");
    assert!(err.to_string().contains("refused"), "{err}");
}
