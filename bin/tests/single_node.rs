//! One real `ringhub` process with the embedded broker (no Redis), driven
//! by tungstenite clients and raw HTTP: the client protocol, admission,
//! auth, the HTTP endpoints and graceful shutdown.

mod common;

use common::{Client, Ringhub};
use serde_json::{Value, json};

fn welcome(client: &mut Client) -> Value {
    let w = client.recv();
    assert_eq!(w["type"], "welcome", "{w}");
    w
}

fn user(server: &Ringhub, name: &str) -> Client {
    let mut c = server.connect(&format!("user={name}"), &[]);
    welcome(&mut c);
    c
}

#[test]
fn welcome_names_the_user_a_unique_connection_and_the_server() {
    let server = Ringhub::start(&["--server-id", "node-a"]);
    let mut a = server.connect("user=alice", &[]);
    let mut b = server.connect("user=alice", &[]);
    let (wa, wb) = (welcome(&mut a), welcome(&mut b));
    assert_eq!(wa["user"], "alice");
    assert_eq!(wa["server"], "node-a");
    let (ca, cb) = (wa["conn"].as_u64().unwrap(), wb["conn"].as_u64().unwrap());
    assert_ne!(ca, cb);
    assert!(ca < 1 << 53, "conn ids stay exact in JavaScript");
}

#[test]
fn the_welcome_comes_first_even_when_the_client_talks_at_once() {
    let server = Ringhub::start(&[]);
    let mut alice = user(&server, "alice");
    for _ in 0..20 {
        // Messages race the new connection's welcome: a send to it, and its
        // own first frame written right after the upgrade.
        alice.send(json!({"type": "send", "to": "bob", "data": 1}));
        let mut bob = server.connect("user=bob", &[]);
        bob.send(json!({"type": "ping"}));
        assert_eq!(bob.recv()["type"], "welcome");
    }
}

#[test]
fn send_reaches_every_connection_of_the_user_exactly_once() {
    let server = Ringhub::start(&[]);
    // Enough connections that both cores hold some (SO_REUSEPORT spreads
    // them), so delivery crosses the cores' mailboxes.
    let mut alice: Vec<Client> = (0..6).map(|_| user(&server, "alice")).collect();
    let mut carol = user(&server, "carol");
    let mut bob = user(&server, "bob");
    for i in 0..3 {
        bob.send_text(&format!(
            r#"{{"type":"send","to":"alice","data":{{"n": {i},  "raw" :[true]}},"id":"m{i}"}}"#
        ));
        assert_eq!(bob.recv(), json!({"type": "ack", "id": format!("m{i}")}));
    }
    for conn in &mut alice {
        let got = conn.sync();
        assert_eq!(got.len(), 3, "exactly once each: {got:?}");
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m["type"], "message");
            assert_eq!(m["from"], "bob");
            assert_eq!(m["to"], "alice");
            assert_eq!(m["data"], json!({"n": i, "raw": [true]}));
            assert_eq!(m["id"], format!("m{i}"));
            assert!(m["ts"].as_u64().unwrap() > 1_600_000_000_000);
        }
    }
    assert!(carol.sync().is_empty(), "others get nothing");
    assert!(bob.sync().is_empty(), "the sender gets only its acks");
}

#[test]
fn data_is_relayed_byte_for_byte() {
    let server = Ringhub::start(&[]);
    let mut alice = user(&server, "alice");
    let mut bob = user(&server, "bob");
    bob.send_text(r#"{"type":"send","to":"alice","data":{"b": 1.50, "a":"\u00e9"}}"#);
    let text = loop {
        match alice.ws.read().unwrap() {
            tungstenite::Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    assert!(
        text.contains(r#""data":{"b": 1.50, "a":"\u00e9"}"#),
        "{text}"
    );
}

#[test]
fn topics_deliver_to_subscribers_until_they_unsubscribe() {
    let server = Ringhub::start(&[]);
    let mut subs: Vec<Client> = (0..4).map(|i| user(&server, &format!("s{i}"))).collect();
    let mut publisher = user(&server, "pub");
    for s in &mut subs {
        s.send(json!({"type": "subscribe", "topic": "news"}));
        // Idempotent, and acked when asked.
        s.send(json!({"type": "subscribe", "topic": "news", "id": "s"}));
        assert_eq!(s.recv(), json!({"type": "ack", "id": "s"}));
        assert!(s.sync().is_empty());
    }
    publisher.send(json!({"type": "publish", "topic": "news", "data": "hello", "id": 7}));
    assert_eq!(publisher.recv(), json!({"type": "ack", "id": 7}));
    for s in &mut subs {
        let got = s.sync();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["topic"], "news");
        assert_eq!(got[0]["from"], "pub");
        assert_eq!(got[0]["data"], "hello");
    }
    for (i, s) in subs[1..].iter_mut().enumerate() {
        s.send(json!({"type": "unsubscribe", "topic": "news", "id": i}));
        assert_eq!(s.recv(), json!({"type": "ack", "id": i}));
    }
    // Waiting for the ack orders the delivery before the subscribers' pings.
    publisher.send(json!({"type": "publish", "topic": "news", "data": 2, "id": 8}));
    assert_eq!(publisher.recv()["type"], "ack");
    assert_eq!(subs[0].sync().len(), 1);
    for s in &mut subs[1..] {
        assert!(s.sync().is_empty());
    }
    // A closed subscriber is dropped from the topic.
    drop(subs.remove(0));
    publisher.send(json!({"type": "publish", "topic": "news", "data": 3, "id": "x"}));
    assert_eq!(publisher.recv()["type"], "ack");
}

#[test]
fn every_bad_input_gets_an_error_with_a_stable_code_and_the_connection_lives() {
    let server = Ringhub::start(&["--max-message-bytes", "1024"]);
    let mut c = user(&server, "alice");
    let cases: &[(&str, &str, Option<Value>)] = &[
        ("not json", "bad_json", None),
        ("[1,2]", "bad_json", None),
        (r#"{"type":"send","to":"x","data":1"#, "bad_json", None),
        (r#"{"type":"dance"}"#, "unknown_type", None),
        (r#"{"to":"x"}"#, "missing_field", None),
        (
            r#"{"type":"send","data":1,"id":"a"}"#,
            "missing_field",
            Some(json!("a")),
        ),
        (
            r#"{"type":"send","to":"x","id":2}"#,
            "missing_field",
            Some(json!(2)),
        ),
        (
            r#"{"type":"send","to":5,"data":1,"id":"b"}"#,
            "invalid_field",
            Some(json!("b")),
        ),
        (r#"{"type":"subscribe","topic":""}"#, "invalid_field", None),
        (r#"{"type":"latency","ms":-1}"#, "invalid_field", None),
        (
            r#"{"type":"send","to":"x","data":1,"id":{}}"#,
            "invalid_field",
            None,
        ),
        (
            r#"{"type":"broadcast","data":1,"id":"c"}"#,
            "not_allowed",
            Some(json!("c")),
        ),
    ];
    for (i, (input, code, id)) in cases.iter().enumerate() {
        // Each error costs one of 10 tokens: a fresh connection every 5
        // stays clear of the abuse limit.
        if i % 5 == 4 {
            c = user(&server, "alice");
        }
        c.send_text(input);
        let e = c.recv();
        assert_eq!(e["type"], "error", "{input}: {e}");
        assert_eq!(e["code"], *code, "{input}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        match id {
            Some(id) => assert_eq!(&e["id"], id, "{input}: {e}"),
            None => assert!(e.get("id").is_none(), "{input}: {e}"),
        }
    }
    let mut c = user(&server, "alice");
    let big = format!(
        r#"{{"type":"send","to":"x","data":"{}"}}"#,
        "x".repeat(1500)
    );
    c.send_text(&big);
    assert_eq!(c.recv()["code"], "too_large");
    c.ws.send(tungstenite::Message::binary(vec![1, 2, 3]))
        .unwrap();
    assert_eq!(c.recv()["code"], "bad_json");
    assert!(c.sync().is_empty(), "still open and answering");
}

#[test]
fn repeated_abuse_is_closed_with_1008() {
    let server = Ringhub::start(&[]);
    let mut c = user(&server, "mallory");
    for _ in 0..30 {
        if c.ws.send(tungstenite::Message::text("garbage")).is_err() {
            break;
        }
    }
    assert_eq!(c.recv_close(), Some(1008));
    // Others are unaffected.
    let mut ok = user(&server, "alice");
    assert!(ok.sync().is_empty());
}

#[test]
fn the_message_rate_limit_answers_rate_limited() {
    let server = Ringhub::start(&["--message-rate", "1", "--message-burst", "3"]);
    let mut c = user(&server, "alice");
    for _ in 0..5 {
        c.send(json!({"type": "ping"}));
    }
    let replies: Vec<Value> = (0..5).map(|_| c.recv()).collect();
    let pongs = replies.iter().filter(|v| v["type"] == "pong").count();
    let limited = replies
        .iter()
        .filter(|v| v["type"] == "error" && v["code"] == "rate_limited")
        .count();
    assert_eq!((pongs, limited), (3, 2), "{replies:?}");
}

#[test]
fn latency_reports_are_accepted_silently() {
    let server = Ringhub::start(&[]);
    let mut c = user(&server, "alice");
    c.send(json!({"type": "latency", "ms": 12.5}));
    assert!(c.sync().is_empty());
}

#[test]
fn development_mode_needs_a_user() {
    let server = Ringhub::start(&[]);
    let (status, body) = server.try_connect("/ws", "", &[]).err().unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("user"), "{body}");
    assert!(
        server.log().contains("development mode"),
        "{}",
        server.log()
    );
}

#[test]
fn upgrades_are_served_only_at_ws() {
    let server = Ringhub::start(&[]);
    let (status, _) = server.try_connect("/chat", "user=a", &[]).err().unwrap();
    assert_eq!(status, 404);
}

#[test]
fn the_connection_limit_refuses_with_503() {
    let server = Ringhub::start(&["--max-connections", "2"]);
    let _a = user(&server, "a");
    let b = user(&server, "b");
    let (status, _) = server.try_connect("/ws", "user=c", &[]).err().unwrap();
    assert_eq!(status, 503);
    // A closed connection frees its place.
    drop(b);
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        match server.try_connect("/ws", "user=c", &[]) {
            Ok(_) => break,
            Err((503, _)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// Waits until an upgrade from `source` is admitted again (a closed
/// connection's place comes back once the server has seen the close).
fn admitted_again_from(server: &Ringhub, source: std::net::Ipv4Addr, user: &str) -> Client {
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        match server.try_connect_from(source, &format!("user={user}"), &[]) {
            Ok(c) => return c,
            Err((429, _)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[test]
fn the_per_ip_limit_refuses_with_429_and_counts_each_source_apart() {
    let server = Ringhub::start(&["--max-connections-per-ip", "2"]);
    let a: std::net::Ipv4Addr = "127.0.0.2".parse().unwrap();
    let b: std::net::Ipv4Addr = "127.0.0.3".parse().unwrap();
    let _a1 = server.try_connect_from(a, "user=a1", &[]).unwrap();
    let a2 = server.try_connect_from(a, "user=a2", &[]).unwrap();
    let (status, body) = server.try_connect_from(a, "user=a3", &[]).err().unwrap();
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too many connections"), "{body}");
    // Another address has its own count.
    let _b1 = server.try_connect_from(b, "user=b1", &[]).unwrap();
    // A forwarded address from an untrusted peer changes nothing.
    let spoofed = [("X-Forwarded-For", "203.0.113.9")];
    assert_eq!(
        server
            .try_connect_from(a, "user=a4", &spoofed)
            .err()
            .unwrap()
            .0,
        429
    );
    let (_, metrics) = server.http("GET", "/metrics", &[], "");
    assert!(
        metrics.contains("ringhub_handshakes_rejected_total{reason=\"per_ip\"} 2"),
        "{metrics}"
    );
    // A closed connection gives its place back (retrying meanwhile adds
    // to the count above: it was read first).
    drop(a2);
    let _a3 = admitted_again_from(&server, a, "a3");
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_client_is_counted() {
    // 127.0.0.5 plays the load balancer; its clients are told apart by
    // X-Forwarded-For, while the same header from elsewhere is ignored.
    let server = Ringhub::start(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxies",
        "127.0.0.5/32",
    ]);
    let proxy: std::net::Ipv4Addr = "127.0.0.5".parse().unwrap();
    let c1 = [("X-Forwarded-For", "203.0.113.1")];
    let c2 = [("X-Forwarded-For", "203.0.113.2")];
    let _first = server.try_connect_from(proxy, "user=x", &c1).unwrap();
    let _second = server.try_connect_from(proxy, "user=y", &c2).unwrap();
    assert_eq!(
        server
            .try_connect_from(proxy, "user=z", &c1)
            .err()
            .unwrap()
            .0,
        429,
        "the same client through the proxy again"
    );
    // A client that prepends its own entry is still counted by the proxy's.
    let spoof = [("X-Forwarded-For", "198.51.100.7, 203.0.113.1")];
    assert_eq!(
        server
            .try_connect_from(proxy, "user=w", &spoof)
            .err()
            .unwrap()
            .0,
        429
    );
}

/// Reads one HTTP response (head and `Content-Length` body) off `stream`.
fn read_response(stream: &mut std::io::BufReader<std::net::TcpStream>) -> (u16, String) {
    use std::io::{BufRead, Read};
    let mut status = 0;
    let mut length = 0;
    loop {
        let mut line = String::new();
        assert!(stream.read_line(&mut line).expect("read") > 0, "closed");
        let line = line.trim_end();
        if status == 0 {
            status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        } else if line.is_empty() {
            break;
        } else if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).expect("body");
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn a_backend_publishes_many_times_over_one_kept_alive_connection() {
    use std::io::Write;
    const KEY: &str = "test-api-key-0123456789";
    let server = Ringhub::start(&["--api-key", KEY]);
    let mut alice = user(&server, "alice");
    let stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let request = |n: u32| {
        let body = format!(r#"{{"type":"send","to":"alice","data":{n}}}"#);
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // One at a time, then ten written at once (pipelined): all answered,
    // in order, on the same connection.
    for n in 0..10 {
        writer.write_all(request(n).as_bytes()).unwrap();
        assert_eq!(read_response(&mut reader).0, 202, "request {n}");
    }
    let burst: String = (10..20).map(request).collect();
    writer.write_all(burst.as_bytes()).unwrap();
    for n in 10..20 {
        assert_eq!(read_response(&mut reader).0, 202, "request {n}");
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        got.push(alice.recv_type("message")["data"].as_u64().unwrap());
    }
    assert_eq!(
        got,
        (0..20).collect::<Vec<u64>>(),
        "every publish, in order"
    );
}

#[test]
fn http_endpoints() {
    let server = Ringhub::start(&[]);
    assert_eq!(
        server.http("GET", "/healthz", &[], ""),
        (200, "ok\n".into())
    );
    let (status, body) = server.http("GET", "/readyz", &[], "");
    assert_eq!(status, 200);
    assert!(body.contains("embedded"), "{body}");
    assert_eq!(server.http("GET", "/nope", &[], "").0, 404);
    let (status, body) = server.http("GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(body.contains("ringhub_connections_active 0"), "{body}");
    let (status, body) = server.http("GET", "/", &[], "");
    assert_eq!(status, 200);
    assert!(body.contains("<title>ringhub status</title>"), "{body}");
    // A plain GET of the WebSocket path asks for an upgrade.
    assert_eq!(server.http("GET", "/ws", &[], "").0, 426);
    // Without a configured key the publish API is off.
    let body = r#"{"type":"publish","topic":"t","data":1}"#;
    assert_eq!(server.http("POST", "/api/publish", &[], body).0, 403);
}

#[test]
fn the_publish_api_needs_its_key_and_reaches_users_topics_and_everyone() {
    const KEY: &str = "test-api-key-0123456789";
    let server = Ringhub::start(&["--api-key", KEY]);
    let mut alice = user(&server, "alice");
    let mut bob = user(&server, "bob");
    bob.send(json!({"type": "subscribe", "topic": "news"}));
    bob.sync();
    let auth = format!("Bearer {KEY}");
    let headers = [("Authorization", auth.as_str())];
    let send = r#"{"type":"send","to":"alice","data":{"k":1},"from":"billing"}"#;

    assert_eq!(server.http("POST", "/api/publish", &[], send).0, 401);
    let wrong = [("Authorization", "Bearer nope")];
    assert_eq!(server.http("POST", "/api/publish", &wrong, send).0, 401);
    assert_eq!(server.http("GET", "/api/publish", &headers, "").0, 405);
    let (status, body) = server.http("POST", "/api/publish", &headers, "{oops");
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "bad_json"
    );
    let ping = r#"{"type":"ping"}"#;
    assert_eq!(server.http("POST", "/api/publish", &headers, ping).0, 400);

    assert_eq!(server.http("POST", "/api/publish", &headers, send).0, 202);
    let got = alice.sync();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["from"], "billing");
    assert_eq!(got[0]["data"], json!({"k": 1}));

    let publish = r#"{"type":"publish","topic":"news","data":"extra"}"#;
    assert_eq!(
        server.http("POST", "/api/publish", &headers, publish).0,
        202
    );
    let got = bob.sync();
    assert_eq!((got.len(), &got[0]["from"]), (1, &json!("api")), "{got:?}");

    let broadcast = r#"{"type":"broadcast","data":"all"}"#;
    assert_eq!(
        server.http("POST", "/api/publish", &headers, broadcast).0,
        202
    );
    for c in [&mut alice, &mut bob] {
        let got = c.sync();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["data"], "all");
        assert!(got[0].get("to").is_none() && got[0].get("topic").is_none());
    }
}

mod auth {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn token(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn exp() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600
    }

    #[test]
    fn tokens_are_checked_before_the_upgrade() {
        let server = Ringhub::start(&["--jwt-secret", SECRET]);
        let (status, body) = server.try_connect("/ws", "user=alice", &[]).err().unwrap();
        assert_eq!(status, 401, "?user= is ignored once auth is on");
        assert!(body.contains("token"), "{body}");
        let expired = token(json!({"sub": "a", "exp": 1000}));
        let (status, body) = server
            .try_connect("/ws", &format!("token={expired}"), &[])
            .err()
            .unwrap();
        assert_eq!((status, body.trim()), (401, "token expired"));
        let (status, _) = server
            .try_connect("/ws", "token=abc.def.ghi", &[])
            .err()
            .unwrap();
        assert_eq!(status, 401);

        let good = token(json!({"sub": "alice", "exp": exp()}));
        let mut c = server.connect(&format!("token={good}"), &[]);
        assert_eq!(welcome(&mut c)["user"], "alice");
        let bearer = format!("Bearer {}", token(json!({"sub": "bob", "exp": exp()})));
        let mut c = server.connect("", &[("Authorization", &bearer)]);
        assert_eq!(welcome(&mut c)["user"], "bob");
    }

    #[test]
    fn es256_tokens_verify_against_the_configured_public_key() {
        let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
        let server = Ringhub::start(&["--jwt-public-key", &format!("{keys}/ec-public.pem")]);
        let private = std::fs::read(format!("{keys}/ec-private.pem")).unwrap();
        let key = EncodingKey::from_ec_pem(&private).unwrap();
        let claims = json!({"sub": "erin", "exp": exp()});
        let es = encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
        let mut c = server.connect(&format!("token={es}"), &[]);
        assert_eq!(welcome(&mut c)["user"], "erin");
        // An HS256 token is refused when only a public key is configured.
        let (status, _) = server
            .try_connect("/ws", &format!("token={}", token(claims)), &[])
            .err()
            .unwrap();
        assert_eq!(status, 401);
    }

    #[test]
    fn broadcast_needs_the_claim() {
        let server = Ringhub::start(&["--jwt-secret", SECRET]);
        let plain = token(json!({"sub": "alice", "exp": exp()}));
        let admin = token(json!({"sub": "root", "exp": exp(), "broadcast": true}));
        let mut alice = server.connect(&format!("token={plain}"), &[]);
        welcome(&mut alice);
        let mut root = server.connect(&format!("token={admin}"), &[]);
        welcome(&mut root);
        alice.send(json!({"type": "broadcast", "data": 1, "id": 1}));
        assert_eq!(alice.recv()["code"], "not_allowed");
        root.send(json!({"type": "broadcast", "data": "hi", "id": 2}));
        let got = root.sync();
        assert!(got.iter().any(|v| v["type"] == "ack"), "{got:?}");
        assert!(
            got.iter()
                .any(|v| v["type"] == "message" && v["data"] == "hi")
        );
        assert_eq!(alice.sync().len(), 1);
    }

    #[test]
    fn origins_outside_the_list_get_403() {
        let server = Ringhub::start(&["--allowed-origins", "https://*.example.com"]);
        let (status, _) = server
            .try_connect("/ws", "user=a", &[("Origin", "https://evil.test")])
            .err()
            .unwrap();
        assert_eq!(status, 403);
        let mut ok = server.connect("user=a", &[("Origin", "https://app.example.com")]);
        welcome(&mut ok);
    }
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_0() {
    let mut server = Ringhub::start(&[]);
    let mut clients: Vec<Client> = (0..4).map(|i| user(&server, &format!("u{i}"))).collect();
    server.terminate();
    for c in &mut clients {
        assert_eq!(c.recv_close(), Some(1001));
    }
    assert!(server.wait_exit().success(), "{}", server.log());
}

#[test]
fn a_public_address_without_auth_is_refused() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringhub"))
            .args(args)
            .env_remove("RINGHUB_JWT_SECRET")
            .env_remove("RINGHUB_JWT_PUBLIC_KEY")
            .output()
            .unwrap()
    };
    let output = run(&["--listen", "0.0.0.0:0"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--insecure"), "{stderr}");
}

#[test]
fn a_bad_setting_stops_the_server_with_the_variable_named() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringhub"))
        .env("RINGHUB_MESSAGE_RATE", "fast")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RINGHUB_MESSAGE_RATE"), "{stderr}");
}
