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
