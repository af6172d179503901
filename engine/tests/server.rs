//! The engine over real sockets on 127.0.0.1, with tungstenite clients and
//! the pub/sub example's handler. Every wait is bounded.

mod common;

use std::io::Write;
use std::time::Duration;

use common::handler;
use common::*;
use tungstenite::Message;

#[test]
fn many_connections_on_several_cores_echo() {
    let server = start(2, |_| {});
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..200).map(|_| client(addr)).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        send(ws, &format!("hello {i}"));
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(recv_text(ws), format!("hello {i}"));
    }
    let per_core = server.core_stats();
    assert_eq!(per_core.iter().map(|s| s.upgraded).sum::<u64>(), 200);
    assert!(
        per_core.iter().all(|s| s.upgraded > 0),
        "SO_REUSEPORT spread connections over every core: {per_core:?}"
    );
    drop(clients);
    let s = wait_for(&server, Duration::from_secs(10), |s| s.open == 0);
    assert_eq!(s.open, 0, "every closed client freed its slot");
    stop(server);
}

#[test]
fn echo_of_fragmented_and_large_messages() {
    let server = start(1, |_| {});
    let mut ws = client(server.local_addr());
    let big = "x".repeat(300_000);
    send(&mut ws, &big);
    assert_eq!(recv_text(&mut ws), big);
    ws.send(Message::binary(vec![7u8; 70_000])).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert_eq!(&b[..], &[7u8; 70_000][..]),
        other => panic!("{other:?}"),
    }
    // A text message in three fragments with a ping in between.
    let mut s = raw_upgraded(server.local_addr());
    s.write_all(&masked_frame(0x01, b"frag")).unwrap();
    s.write_all(&masked_frame(0x89, b"p")).unwrap();
    s.write_all(&masked_frame(0x00, b"men")).unwrap();
    s.write_all(&masked_frame(0x80, b"ted")).unwrap();
    s.write_all(&masked_frame(0x88, &1000u16.to_be_bytes()))
        .unwrap();
    let out = read_to_end(&mut s);
    assert_eq!(&out[..3], b"\x8a\x01p", "pong first");
    assert_eq!(&out[3..15], b"\x81\x0afragmented");
    assert_eq!(close_code_in(&out), Some(1000));

    // A frame sent in the same segment as the upgrade request is not lost.
    let mut s = raw(server.local_addr());
    let mut bytes = UPGRADE.as_bytes().to_vec();
    bytes.extend_from_slice(&masked_frame(0x81, b"eager"));
    s.write_all(&bytes).unwrap();
    assert!(read_http_head(&mut s).starts_with("HTTP/1.1 101"));
    let mut echo = [0u8; 7];
    std::io::Read::read_exact(&mut s, &mut echo).unwrap();
    assert_eq!(&echo, b"\x81\x05eager");
    stop(server);
}

#[test]
fn publish_reaches_subscribers_on_every_core() {
    let server = start(2, |_| {});
    let addr = server.local_addr();
    let mut subs: Vec<Client> = (0..30).map(|_| client(addr)).collect();
    for ws in &mut subs {
        send(ws, r#"{"type":"subscribe","topic":"news"}"#);
    }
    let mut other = client(addr);
    send(&mut other, r#"{"type":"subscribe","topic":"sport"}"#);
    // Subscriptions are processed in order per connection: an echo round
    // trip proves each one is in place.
    for ws in subs.iter_mut().chain(std::iter::once(&mut other)) {
        send(ws, "sync");
        assert_eq!(recv_text(ws), "sync");
    }
    let per_core = server.core_stats();
    assert!(per_core.iter().all(|s| s.upgraded > 0), "{per_core:?}");
    let mut publisher = client(addr);
    let msg = r#"{"type":"publish","topic":"news","data":{"n":1}}"#;
    send(&mut publisher, msg);
    for ws in &mut subs {
        assert_eq!(recv_text(ws), msg);
    }
    send(&mut other, "still here");
    assert_eq!(
        recv_text(&mut other),
        "still here",
        "no news for a sport fan"
    );
    stop(server);
}

#[test]
fn slow_consumer_is_closed_with_1008_while_others_keep_receiving() {
    let server = start(1, |c| {
        c.send_queue_limit = 256 * 1024;
        c.close_timeout = Duration::from_secs(30);
    });
    let addr = server.local_addr();
    let mut slow = client(addr);
    let mut fast = client(addr);
    for ws in [&mut slow, &mut fast] {
        send(ws, r#"{"type":"subscribe","topic":"t"}"#);
        send(ws, "sync");
        assert_eq!(recv_text(ws), "sync");
    }
    let payload = "y".repeat(16 * 1024);
    let msg = format!(r#"{{"type":"publish","topic":"t","data":"{payload}"}}"#);
    let mut publisher = client(addr);
    // Paced by the fast subscriber, so only the one that never reads falls
    // behind: 1000 × 16 KiB is far more than socket buffers plus the limit.
    for _ in 0..1000 {
        publisher.send(Message::text(msg.clone())).unwrap();
        assert_eq!(recv_text(&mut fast).len(), msg.len());
    }
    let s = wait_for(&server, Duration::from_secs(20), |s| s.slow_consumers >= 1);
    assert_eq!(s.slow_consumers, 1, "only the slow subscriber was dropped");
    send(&mut fast, "still open");
    assert_eq!(recv_text(&mut fast), "still open");
    // The slow one, reading at last, finds the policy close after what fitted.
    assert_eq!(recv_close_code(&mut slow), Some(1008));
    stop(server);
}

#[test]
fn a_client_vanishing_mid_frame_frees_its_connection() {
    let server = start(1, |_| {});
    let addr = server.local_addr();
    {
        let mut s = raw_upgraded(addr);
        let frame = masked_frame(0x81, &[b'a'; 1000]);
        s.write_all(&frame[..200]).unwrap();
        let _ = wait_for(&server, Duration::from_secs(5), |s| s.upgraded == 1);
    }
    let s = wait_for(&server, Duration::from_secs(10), |s| s.open == 0);
    assert_eq!(s.open, 0);
    let mut ws = client(addr);
    send(&mut ws, "after");
    assert_eq!(recv_text(&mut ws), "after");
    stop(server);
}

#[test]
fn a_silent_connection_is_dropped_at_the_handshake_deadline() {
    let server = start(1, |c| c.handshake_timeout = Duration::from_millis(300));
    let mut s = raw(server.local_addr());
    // A partial request does not extend the deadline.
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    let out = read_to_end(&mut s);
    assert!(out.is_empty(), "closed without a response");
    let st = wait_for(&server, Duration::from_secs(5), |s| s.open == 0);
    assert_eq!(st.timeouts, 1);
    assert_eq!(st.open, 0);
    stop(server);
}

#[test]
fn an_idle_peer_is_pinged_then_dropped() {
    let server = start(1, |c| {
        c.ping_interval = Duration::from_millis(200);
        c.idle_timeout = Duration::from_millis(300);
    });
    let mut s = raw_upgraded(server.local_addr());
    let out = read_to_end(&mut s);
    assert!(out.starts_with(b"\x89\x00"), "a ping came first: {out:?}");
    let st = wait_for(&server, Duration::from_secs(5), |s| s.open == 0);
    assert_eq!(st.timeouts, 1);
    stop(server);
}

#[test]
fn bad_handshakes_get_http_errors() {
    let server = start(1, |_| {});
    let addr = server.local_addr();
    let cases = [
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 426"),
        (
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
            "HTTP/1.1 400",
        ),
        ("\x16\x03\x01garbage\r\n\r\n", "HTTP/1.1 400"),
    ];
    for (request, status) in cases {
        let mut s = raw(addr);
        s.write_all(request.as_bytes()).unwrap();
        let out = String::from_utf8_lossy(&read_to_end(&mut s)).into_owned();
        assert!(out.starts_with(status), "{request:?} got {out:?}");
    }
    // Whatever follows a refused request is not answered again.
    let mut s = raw(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let out = String::from_utf8_lossy(&read_to_end(&mut s)).into_owned();
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    stop(server);
}

#[test]
fn protocol_errors_get_their_close_codes() {
    let server = start(1, |c| {
        c.limits.max_frame = 1024;
        c.limits.max_message = 1024;
    });
    let addr = server.local_addr();
    let cases: [(Vec<u8>, u16); 9] = [
        (b"\x81\x05hello".to_vec(), 1002),         // unmasked client frame
        (masked_frame(0x83, b"x"), 1002),          // reserved opcode
        (masked_frame(0x81, &[0xff, 0xfe]), 1007), // invalid UTF-8
        (masked_frame(0x82, &[0u8; 2000]), 1009),  // over the frame limit
        (masked_frame(0x80, b"orphan"), 1002),     // continuation with no message
        (masked_frame(0x88, &1005u16.to_be_bytes()), 1002), // reserved close code
        (masked_frame(0x88, &[0x03]), 1002),       // one-byte close payload
        (masked_frame(0x88, &[0x03, 0xe8, 0xff]), 1007), // close reason not UTF-8
        (masked_frame(0x09, b"p"), 1002),          // fragmented ping
    ];
    for (frame, code) in cases {
        let mut s = raw_upgraded(addr);
        s.write_all(&frame).unwrap();
        let out = read_to_end(&mut s);
        assert_eq!(close_code_in(&out), Some(code), "frame {:?}", &frame[..2]);
    }
    // Bad UTF-8 in a text frame fails in the read that brings it, before
    // the rest of the frame arrives (Autobahn 6.4.3).
    let mut s = raw_upgraded(addr);
    let mut payload = vec![b'a'; 1000];
    payload[5] = 0xff;
    let frame = masked_frame(0x81, &payload);
    s.write_all(&frame[..20]).unwrap();
    let out = read_to_end(&mut s);
    assert_eq!(
        close_code_in(&out),
        Some(1007),
        "failed before the frame ended"
    );
    assert_eq!(server.stats().protocol_errors, 10);
    stop(server);
}

#[test]
fn shutdown_sends_1001_to_everyone() {
    let server = start(2, |_| {});
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..20).map(|_| client(addr)).collect();
    for ws in &mut clients {
        send(ws, "ready");
        assert_eq!(recv_text(ws), "ready");
    }
    let handle = server.shutdown_handle();
    let joiner = std::thread::spawn(move || server.join());
    handle.shutdown();
    for ws in &mut clients {
        assert_eq!(recv_close_code(ws), Some(1001));
    }
    joiner.join().unwrap().expect("clean exit");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer listening"
    );
}

#[test]
fn connections_spill_over_into_more_file_tables() {
    // Tables of 512 direct descriptors: 1100 connections need three lanes.
    // Near a table's end fewer accepts are armed than slots remain, and
    // accepting moves on to the next lane once it is full (an accept into a
    // full table would be accepted and dropped with -ENFILE).
    let server = start(1, |c| {
        c.files_per_lane = 512;
        c.max_connections_per_core = 1536;
        c.backlog = 64;
    });
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..1100).map(|_| client(addr)).collect();
    for (i, ws) in clients.iter_mut().enumerate().step_by(7) {
        send(ws, &format!("lane check {i}"));
        assert_eq!(recv_text(ws), format!("lane check {i}"));
    }
    let s = server.stats();
    assert_eq!(s.upgraded, 1100);
    assert_eq!(s.accept_errors, 0, "no accept was dropped for a full table");
    drop(clients);
    let s = wait_for(&server, Duration::from_secs(10), |s| s.open == 0);
    assert_eq!(s.open, 0);
    // Tables emptied: accepting resumed.
    let mut ws = client(addr);
    send(&mut ws, "again");
    assert_eq!(recv_text(&mut ws), "again");
    stop(server);
}

#[test]
fn permessage_deflate_interoperates_with_python_websockets() {
    let python = ringhub_testkit::python_with("websockets");
    let server = start(2, |_| {});
    let script = r#"
import asyncio, sys, websockets
async def main(url):
    async with websockets.connect(url, compression="deflate", max_size=None) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in ext, ext
        big = "abc" * 20000
        await ws.send(big)
        assert await ws.recv() == big
        await ws.send(["part1" * 100, "part2" * 100])
        assert await ws.recv() == "part1" * 100 + "part2" * 100
        await ws.send(b"\x00\x01" * 5000)
        assert await ws.recv() == b"\x00\x01" * 5000
        await ws.send('{"type":"subscribe","topic":"z"}')
        msg = '{"type":"publish","topic":"z","data":"' + "q" * 1000 + '"}'
        await ws.send(msg)
        assert await ws.recv() == msg
    print("ok")
asyncio.run(asyncio.wait_for(main(sys.argv[1]), 20))
"#;
    let url = format!("ws://{}/ws", server.local_addr());
    let out = std::process::Command::new(python)
        .args(["-c", script, &url])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("ok"),
        "python client failed:\n{stdout}\n{stderr}"
    );
    stop(server);
}

#[test]
fn compressible_replies_go_out_compressed_once_negotiated() {
    let server = start(1, |_| {});
    let mut s = raw(server.local_addr());
    let request = UPGRADE.replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    s.write_all(request.as_bytes()).unwrap();
    let head = read_http_head(&mut s);
    assert!(head.contains("permessage-deflate"), "{head}");
    assert!(head.contains("client_no_context_takeover"), "{head}");
    s.write_all(&masked_frame(0x81, &[b'a'; 1000])).unwrap();
    let mut header = [0u8; 2];
    std::io::Read::read_exact(&mut s, &mut header).unwrap();
    assert_eq!(header[0], 0xC1, "FIN | RSV1 | text");
    assert!(
        usize::from(header[1] & 0x7F) < 100,
        "1000 a's compress well"
    );
    stop(server);
}

#[test]
fn an_invalid_config_is_refused_naming_the_field() {
    let config = ringhub_engine::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        cores: 2,
        pin: false,
        recv_buffers: 1000, // not a power of two: the kernel would refuse it
        ..ringhub_engine::Config::default()
    };
    let err = ringhub_engine::Server::start(config, |_| handler::PubSub::default())
        .expect_err("start fails");
    assert!(err.to_string().contains("recv_buffers = 1000"), "{err}");
}

#[test]
fn plain_http_requests_reach_the_handler() {
    let server = start(2, |_| {});
    let addr = server.local_addr();
    let mut s = raw(addr);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = String::from_utf8_lossy(&read_to_end(&mut s)).into_owned();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("ok\n"),
        "{out}"
    );

    let mut sub = client(addr);
    send(&mut sub, r#"{"type":"subscribe","topic":"web"}"#);
    send(&mut sub, "sync");
    assert_eq!(recv_text(&mut sub), "sync");
    // The body arrives after the head, in a separate segment.
    let mut s = raw(addr);
    s.write_all(
        b"POST /publish?topic=web HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 11\r\n\r\nhello",
    )
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b" world").unwrap();
    let out = String::from_utf8_lossy(&read_to_end(&mut s)).into_owned();
    assert!(out.starts_with("HTTP/1.1 202"), "{out}");
    assert_eq!(recv_text(&mut sub), "hello world");

    let mut s = raw(addr);
    s.write_all(b"POST /publish?topic=web HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n")
        .unwrap();
    let out = String::from_utf8_lossy(&read_to_end(&mut s)).into_owned();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert_eq!(server.stats().http_requests, 2);
    stop(server);
}

/// The pub/sub example binary, which `cargo test` builds next to the tests.
fn example_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join("pubsub");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test -p ringhub-engine`, which builds the examples",
        bin.display()
    );
    bin
}

/// The example as a child process, killed when dropped so that a failing
/// test does not leave it running.
struct Example(std::process::Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the example on an ephemeral 127.0.0.1 port with `cores` cores and
/// returns it with the address it printed.
fn spawn_example(cores: usize) -> (Example, std::net::SocketAddr) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let mut child = Command::new(example_binary())
        .args(["--host", "127.0.0.1", "--port", "0", "--no-pin", "--cores"])
        .arg(cores.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let addr: std::net::SocketAddr = first
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    // The example writes to stderr until it exits (a closed pipe would make
    // its last `eprintln!` panic), so the rest is read and dropped.
    std::thread::spawn(move || lines.for_each(drop));
    (Example(child), addr)
}

#[test]
fn sigterm_closes_with_1001_and_exits_zero() {
    use std::process::Command;

    let (mut example, addr) = spawn_example(2);
    let child = &mut example.0;
    let mut ws = client(addr);
    send(&mut ws, "before");
    assert_eq!(recv_text(&mut ws), "before");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(recv_close_code(&mut ws), Some(1001));
    drop(ws);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit status {code}");
}

/// Autobahn 9.1.3-9.6.6: the example echoes a message as large as it accepts
/// (16 MiB) to an idle client, where it used to close the client as a slow
/// consumer (1008) because the echo alone passed the 1 MiB send queue limit.
#[test]
fn the_example_echoes_the_largest_message_it_accepts() {
    let (_example, addr) = spawn_example(1);
    let mut ws = client(addr);
    let largest = ringhub_proto::Limits::default().max_message;
    let big = "*".repeat(largest);
    send(&mut ws, &big);
    let echoed = recv_text(&mut ws);
    assert_eq!(echoed.len(), largest);
    assert!(echoed == big, "the echo differs from the message");
    send(&mut ws, "after");
    assert_eq!(recv_text(&mut ws), "after", "the connection stays open");
}

/// Relays `"<n>:<text>"` to the n-th connection opened, wherever it lives;
/// `"<n>:close"` closes it with 4000.
struct Relay {
    opened: std::sync::Arc<std::sync::Mutex<Vec<ringhub_engine::ConnId>>>,
}

impl ringhub_engine::Handler for Relay {
    type State = ();
    type Post = ();

    fn on_open(
        &mut self,
        _: &mut ringhub_engine::Ctx<'_, Self>,
        conn: ringhub_engine::ConnId,
        _: &ringhub_engine::WebSocketUpgrade<'_, '_>,
    ) -> ringhub_engine::Decision {
        self.opened.lock().unwrap().push(conn);
        ringhub_engine::Decision::accept()
    }

    fn on_opened(&mut self, ctx: &mut ringhub_engine::Ctx<'_, Self>, conn: ringhub_engine::ConnId) {
        ctx.send_text(conn, "welcome").unwrap();
    }

    fn on_message(
        &mut self,
        ctx: &mut ringhub_engine::Ctx<'_, Self>,
        _: ringhub_engine::ConnId,
        message: ringhub_engine::Message<'_>,
    ) {
        let ringhub_engine::Message::Text(text) = message else {
            return;
        };
        let Some((n, body)) = text.split_once(':') else {
            return;
        };
        let target = n
            .parse::<usize>()
            .ok()
            .and_then(|n| self.opened.lock().unwrap().get(n).copied());
        if let Some(target) = target {
            if body == "close" {
                ctx.close(target, ringhub_engine::CloseCode::Other(4000), "relay");
            } else {
                ctx.send_text(target, body).unwrap();
            }
        }
    }
}

#[test]
fn sends_and_closes_reach_connections_on_other_cores() {
    let opened = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let registry = opened.clone();
    let config = ringhub_engine::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        cores: 2,
        pin: false,
        recv_buffers: 256,
        max_connections_per_core: 1024,
        ring_entries: 256,
        ..ringhub_engine::Config::default()
    };
    let server = ringhub_engine::Server::start(config, move |_| Relay {
        opened: registry.clone(),
    })
    .expect("start");
    let addr = server.local_addr();
    // Open connections one at a time so their order in the registry is known,
    // until two of them live on different cores.
    let mut clients = Vec::new();
    let (a, b) = loop {
        let mut ws = client(addr);
        assert_eq!(
            recv_text(&mut ws),
            "welcome",
            "sent from on_opened, after the 101"
        );
        clients.push(ws);
        let ids = opened.lock().unwrap().clone();
        assert_eq!(ids.len(), clients.len());
        let last = ids.len() - 1;
        if let Some(first) = ids.iter().position(|c| c.core != ids[last].core) {
            break (first, last);
        }
        assert!(clients.len() < 200, "every connection landed on one core");
    };
    send(&mut clients[a], &format!("{b}:hello from the other core"));
    assert_eq!(recv_text(&mut clients[b]), "hello from the other core");
    send(&mut clients[b], &format!("{a}:and back"));
    assert_eq!(recv_text(&mut clients[a]), "and back");
    send(&mut clients[a], &format!("{b}:close"));
    assert_eq!(recv_close_code(&mut clients[b]), Some(4000));
    stop(server);
}

#[test]
fn a_peer_that_never_answers_our_close_is_dropped_after_the_close_timeout() {
    let opened = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let registry = opened.clone();
    let config = ringhub_engine::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        cores: 1,
        pin: false,
        recv_buffers: 256,
        max_connections_per_core: 1024,
        ring_entries: 256,
        close_timeout: Duration::from_millis(300),
        ..ringhub_engine::Config::default()
    };
    let server = ringhub_engine::Server::start(config, move |_| Relay {
        opened: registry.clone(),
    })
    .expect("start");
    let addr = server.local_addr();
    let mut silent = raw_upgraded(addr); // connection 0; never replies
    let mut other = client(addr);
    assert_eq!(recv_text(&mut other), "welcome");
    send(&mut other, "0:close");
    let mut out = Vec::new();
    let ended = std::io::Read::read_to_end(&mut silent, &mut out);
    assert!(ended.is_ok(), "the server closed the socket: {ended:?}");
    assert_eq!(close_code_in(&out), Some(4000));
    stop(server);
}

#[test]
fn garbage_from_many_peers_never_hurts_the_others() {
    let server = start(2, |c| {
        c.limits.max_frame = 64 * 1024;
        c.limits.max_message = 64 * 1024;
    });
    let addr = server.local_addr();
    let mut ok = client(addr);
    // A small xorshift: deterministic noise, different for every peer.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for peer in 0..60 {
        let mut s = if peer % 3 == 0 {
            raw(addr) // garbage instead of a request
        } else {
            raw_upgraded(addr)
        };
        let len = 1 + (next() % 20_000) as usize;
        let mut noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if peer % 2 == 0 && noise.len() > 2 {
            // A plausible masked header first, so parsing goes deeper.
            noise[0] = 0x81;
            noise[1] = 0x80 | 126;
        }
        let _ = s.write_all(&noise);
        // Some vanish at once, some wait for the verdict.
        if peer % 4 == 0 {
            let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
            let _ = read_to_end(&mut s);
        }
    }
    send(&mut ok, "still fine");
    assert_eq!(recv_text(&mut ok), "still fine");
    drop(ok);
    let s = wait_for(&server, Duration::from_secs(15), |s| s.open == 0);
    assert_eq!(s.open, 0, "every noisy connection was cleaned up");
    stop(server);
}

/// Makes `io_uring_setup` fail with EPERM in this thread and the threads it
/// starts, the way a container's seccomp profile does.
fn forbid_io_uring_setup() {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const PR_SET_NO_NEW_PRIVS: libc::c_int = 38;
    const PR_SET_SECCOMP: libc::c_int = 22;
    let filter = [
        // Load the syscall number (offset 0 of struct seccomp_data).
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with a valid, live filter program; it only restricts
    // this process (a child started for this test).
    unsafe {
        assert_eq!(libc::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const _),
            0
        );
    }
}

#[test]
fn io_uring_blocked_by_seccomp_is_named_as_such() {
    const CHILD: &str = "RINGHUB_ENGINE_SECCOMP_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // In the child: refuse io_uring, then try to start.
        forbid_io_uring_setup();
        let config = ringhub_engine::Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            cores: 1,
            pin: false,
            ..ringhub_engine::Config::default()
        };
        let err = ringhub_engine::Server::start(config, |_| handler::PubSub::default())
            .expect_err("io_uring is blocked");
        assert!(
            matches!(err, ringhub_engine::EngineError::Forbidden),
            "{err:?}"
        );
        assert!(err.to_string().contains("seccomp"), "{err}");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "io_uring_blocked_by_seccomp_is_named_as_such",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn replies_to_one_read_keep_their_order_and_share_a_send() {
    let server = start(1, |_| {});
    let mut s = raw_upgraded(server.local_addr());
    // Sixteen messages, a ping between them and a subscription (which makes
    // the last published frame a shared one), all in one write.
    let mut burst = Vec::new();
    for i in 0..8 {
        burst.extend(masked_frame(0x81, format!("m{i:02}").as_bytes()));
    }
    burst.extend(masked_frame(0x89, b"p"));
    burst.extend(masked_frame(0x81, br#"{"type":"subscribe","topic":"o"}"#));
    for i in 8..16 {
        burst.extend(masked_frame(0x81, format!("m{i:02}").as_bytes()));
    }
    let publish = br#"{"type":"publish","topic":"o"}"#;
    burst.extend(masked_frame(0x81, publish));
    burst.extend(masked_frame(0x81, b"end"));
    let before = server.stats();
    s.write_all(&burst).unwrap();
    let mut expected = Vec::new();
    for i in 0..8 {
        expected.extend_from_slice(&[0x81, 3]);
        expected.extend_from_slice(format!("m{i:02}").as_bytes());
    }
    expected.extend_from_slice(b"\x8a\x01p");
    for i in 8..16 {
        expected.extend_from_slice(&[0x81, 3]);
        expected.extend_from_slice(format!("m{i:02}").as_bytes());
    }
    expected.extend_from_slice(&[0x81, publish.len() as u8]);
    expected.extend_from_slice(publish);
    expected.extend_from_slice(b"\x81\x03end");
    let mut out = vec![0u8; expected.len()];
    std::io::Read::read_exact(&mut s, &mut out).unwrap();
    assert_eq!(out, expected);
    let after = server.stats();
    assert_eq!(after.frames_out - before.frames_out, 19);
    assert!(
        after.sends - before.sends < 19,
        "frames for one connection share sends: {} sends",
        after.sends - before.sends
    );
    stop(server);
}

/// A refused request's connection is half-closed, read until the peer's FIN,
/// then closed: its fixed-file slot is free for the next accept only once
/// nothing of it is in flight. Closing first let a late operation of the
/// old connection (a `shutdown`, resolved by a kernel worker when it ran)
/// hit the socket of the client that took the slot: about one in a hundred
/// upgrades right after a refusal saw its connection end.
#[test]
fn a_refused_connection_never_touches_the_one_that_takes_its_slot() {
    let server = start(2, |_| {});
    let addr = server.local_addr();
    for i in 0..1000 {
        let mut refused = raw(addr);
        refused
            .write_all(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // Gone as soon as the answer is read, as an HTTP client does: its
        // FIN races the server's half-close.
        let head = read_http_head(&mut refused);
        assert!(head.starts_with("HTTP/1.1 426"), "{head}");
        drop(refused);
        let mut ws = client(addr);
        let text = format!("hello {i}");
        send(&mut ws, &text);
        assert_eq!(recv_text(&mut ws), text, "connection {i} lived");
    }
    stop(server);
}
