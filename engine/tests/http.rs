//! The HTTP phase of a connection over real sockets: the peer's address as
//! the handler sees it, and plain requests kept alive and pipelined.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{READ_TIMEOUT, raise_nofile, read_http_head, recv_text, send};
use ringhub_engine::{
    Config, ConnId, Ctx, Decision, Handler, HttpResponse, Message, Request, Server,
    WebSocketUpgrade,
};

/// What the handler saw, per callback.
#[derive(Debug, Default)]
struct Seen {
    on_request: Vec<Option<SocketAddr>>,
    on_open: Vec<Option<SocketAddr>>,
    on_opened: Vec<Option<SocketAddr>>,
}

/// Answers every request with `<path> from <peer>`; echoes a message as the
/// address `peer_addr` gives while open (expected: none).
struct Who {
    seen: Arc<Mutex<Seen>>,
}

impl Handler for Who {
    type State = ();
    type Post = ();

    fn on_request(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        request: &Request<'_>,
        body: &[u8],
    ) -> Option<HttpResponse> {
        let peer = ctx.peer_addr(conn);
        self.seen.lock().unwrap().on_request.push(peer);
        let body = format!(
            "{} {} from {peer:?}",
            request.path(),
            String::from_utf8_lossy(body)
        );
        Some(HttpResponse::new(200, "text/plain", body))
    }

    fn on_open(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _: &WebSocketUpgrade<'_, '_>,
    ) -> Decision {
        self.seen.lock().unwrap().on_open.push(ctx.peer_addr(conn));
        Decision::accept()
    }

    fn on_opened(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        self.seen
            .lock()
            .unwrap()
            .on_opened
            .push(ctx.peer_addr(conn));
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _: Message<'_>) {
        let now = format!("{:?}", ctx.peer_addr(conn));
        let _ = ctx.send_text(conn, &now);
    }
}

fn start_who(listen: &str, tweak: impl FnOnce(&mut Config)) -> (Server, Arc<Mutex<Seen>>) {
    raise_nofile();
    let mut config = Config {
        addr: listen.parse().unwrap(),
        cores: 1,
        pin: false,
        recv_buffers: 256,
        max_connections_per_core: 1024,
        ring_entries: 256,
        close_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    tweak(&mut config);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    let server = Server::start(config, move |_| Who {
        seen: shared.clone(),
    })
    .expect("server starts");
    (server, seen)
}

/// A TCP connection to `to` from address `from` (port chosen by the kernel).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let from: SocketAddr = from.parse().unwrap();
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket.bind(&from.into()).expect("bind the source address");
    socket.connect(&to.into()).expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

#[test]
fn the_peer_address_reaches_on_request_and_on_open() {
    let (server, seen) = start_who("127.0.0.1:0", |_| {});
    let addr = server.local_addr();

    // A plain request from 127.0.0.2.
    let mut s = connect_from("127.0.0.2:0", addr);
    let plain = s.local_addr().unwrap();
    assert_eq!(plain.ip().to_string(), "127.0.0.2");
    s.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with(&format!("/who  from Some({plain})")), "{out}");

    // An upgrade from 127.0.0.3: on_open and on_opened get the address; the
    // open connection keeps none.
    let s = connect_from("127.0.0.3:0", addr);
    let me = s.local_addr().unwrap();
    let uri: tungstenite::http::Uri = format!("ws://{addr}/ws").parse().unwrap();
    let (mut ws, _) =
        tungstenite::client::client(tungstenite::ClientRequestBuilder::new(uri), s).unwrap();
    send(&mut ws, "who?");
    assert_eq!(recv_text(&mut ws), "None");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.on_request, [Some(plain)]);
    assert_eq!(seen.on_open, [Some(me)]);
    assert_eq!(seen.on_opened, [Some(me)]);
    drop(seen);
    common::stop(server);
}

#[test]
fn the_peer_address_of_an_ipv6_client() {
    let (server, seen) = start_who("[::1]:0", |_| {});
    let mut s = connect_from("[::1]:0", server.local_addr());
    let me = s.local_addr().unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let head = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(seen.lock().unwrap().on_request, [Some(me)]);
    common::stop(server);
}

/// Reads one response: its head and a body of `Content-Length` bytes.
fn read_response(s: &mut TcpStream) -> (String, String) {
    let head = read_http_head(s);
    assert!(!head.is_empty(), "the connection ended before a response");
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("the whole body");
    (head, String::from_utf8(body).unwrap())
}

/// True once the server has closed `s` (read returns end of file).
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).is_ok() && rest.is_empty()
}

#[test]
fn plain_requests_reuse_one_connection() {
    let (server, seen) = start_who("127.0.0.1:0", |_| {});
    let mut s = connect_from("127.0.0.1:0", server.local_addr());
    let me = s.local_addr().unwrap();
    for i in 0..3 {
        let body = format!("n={i}");
        write!(
            s,
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let (head, text) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!head.contains("Connection: close"), "{head}");
        assert_eq!(text, format!("/api/publish {body} from Some({me})"));
    }
    // The client ends it.
    s.write_all(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (head, text) = read_response(&mut s);
    assert!(head.contains("Connection: close"), "{head}");
    assert!(text.starts_with("/last "), "{text}");
    assert!(closed_by_server(&mut s));
    assert_eq!(seen.lock().unwrap().on_request.len(), 4);
    assert_eq!(
        server.stats().accepted,
        1,
        "one connection for four requests"
    );
    common::stop(server);
}

#[test]
fn pipelined_requests_are_answered_in_order_then_an_upgrade() {
    let (server, _) = start_who("127.0.0.1:0", |_| {});
    let mut s = connect_from("127.0.0.1:0", server.local_addr());
    // Three requests in one write, the second with a body split from its
    // head only by the pipeline, the third a HEAD (no body in its answer).
    s.write_all(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody\
          HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let (_, a) = read_response(&mut s);
    assert!(a.starts_with("/a  from"), "{a}");
    let (_, b) = read_response(&mut s);
    assert!(b.starts_with("/b body from"), "{b}");
    let head = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Length: "), "HEAD gets GET's headers");
    // The same connection then becomes a WebSocket.
    s.write_all(common::UPGRADE.as_bytes()).unwrap();
    let head = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(&common::masked_frame(0x81, b"hi")).unwrap();
    let mut frame = [0u8; 6];
    s.read_exact(&mut frame).unwrap();
    assert_eq!(&frame, b"\x81\x04None");
    common::stop(server);
}

#[test]
fn keep_alive_is_bounded_in_requests_and_idle_time() {
    let (server, _) = start_who("127.0.0.1:0", |c| {
        c.max_requests_per_connection = 3;
        c.handshake_timeout = Duration::from_millis(300);
        c.tick = Duration::from_millis(20);
    });
    let addr = server.local_addr();
    // The third request is the last: its answer says so and the server
    // closes; a fourth pipelined behind it is never answered.
    let mut s = connect_from("127.0.0.1:0", addr);
    s.write_all(&b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4))
        .unwrap();
    for i in 1..=3 {
        let (head, _) = read_response(&mut s);
        assert_eq!(head.contains("Connection: close"), i == 3, "{i}: {head}");
    }
    assert!(closed_by_server(&mut s), "no answer after the last one");

    // A kept connection that sends nothing more is closed at the deadline.
    let mut s = connect_from("127.0.0.1:0", addr);
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut s);
    assert!(!head.contains("Connection: close"), "{head}");
    assert!(closed_by_server(&mut s), "closed after the idle deadline");
    let stats = common::wait_for(&server, Duration::from_secs(10), |s| s.open == 0);
    assert_eq!(stats.open, 0);
    assert_eq!(stats.timeouts, 1);
    common::stop(server);
}

#[test]
fn http_1_0_and_error_answers_close() {
    let (server, _) = start_who("127.0.0.1:0", |_| {});
    let addr = server.local_addr();
    let mut s = connect_from("127.0.0.1:0", addr);
    s.write_all(b"GET /old HTTP/1.0\r\n\r\n").unwrap();
    let (head, _) = read_response(&mut s);
    assert!(head.contains("Connection: close"), "{head}");
    assert!(closed_by_server(&mut s));
    let mut s = connect_from("127.0.0.1:0", addr);
    s.write_all(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(closed_by_server(&mut s));
    common::stop(server);
}
