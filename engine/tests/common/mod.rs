//! Shared setup for the engine's socket tests: a server on 127.0.0.1 with
//! the pub/sub example's handler, tungstenite clients and raw sockets, every
//! read bounded by a timeout so no test can hang.

#![allow(dead_code)]

#[path = "../../examples/pubsub/handler.rs"]
pub mod handler;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringhub_engine::{Config, Server, StatsSnapshot};
use tungstenite::protocol::WebSocket;
use tungstenite::{ClientRequestBuilder, Message};

/// Longest any single read waits.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub type Client = WebSocket<TcpStream>;

/// Raises the soft open-file limit to the hard one: the clients of these
/// tests hold up to a few thousand sockets.
pub fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit read and write a live rlimit struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Starts a pub/sub server on an ephemeral port with `cores` cores.
pub fn start(cores: usize, tweak: impl FnOnce(&mut Config)) -> Server {
    raise_nofile();
    let mut config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        cores,
        pin: false,
        recv_buffers: 256,
        max_connections_per_core: 4096,
        ring_entries: 512,
        // Lingering closes wait at most this for a client's FIN.
        close_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    tweak(&mut config);
    Server::start(config, |_| handler::PubSub::default()).expect("server starts")
}

/// A WebSocket client connected to `addr`.
pub fn client(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let uri: tungstenite::http::Uri = format!("ws://{addr}/ws").parse().unwrap();
    let (ws, response) =
        tungstenite::client::client(ClientRequestBuilder::new(uri), stream).expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// Sends a text message.
pub fn send(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

/// The next text message, skipping pings and pongs.
pub fn recv_text(ws: &mut Client) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame and returns its code.
pub fn recv_close_code(ws: &mut Client) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

/// A raw TCP connection with a read timeout.
pub fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s
}

pub const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// A raw connection past the upgrade.
pub fn raw_upgraded(addr: SocketAddr) -> TcpStream {
    let mut s = raw(addr);
    s.write_all(UPGRADE.as_bytes()).unwrap();
    let head = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Reads up to the end of an HTTP response head.
pub fn read_http_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Everything until the peer closes (or the read times out).
pub fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A client frame, masked with a fixed key.
pub fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![first_byte];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// The close code of the first close frame in raw server output.
pub fn close_code_in(bytes: &[u8]) -> Option<u16> {
    let mut rest = bytes;
    while rest.len() >= 2 {
        let opcode = rest[0] & 0x0F;
        let (len, hdr) = match rest[1] & 0x7F {
            126 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(rest[2..10].try_into().ok()?) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let payload = rest.get(hdr..hdr + len)?;
        if opcode == 0x8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
        rest = &rest[hdr + len..];
    }
    None
}

/// Polls `cond` on the server's counters until it holds or `limit` passes.
pub fn wait_for(
    server: &Server,
    limit: Duration,
    cond: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let start = Instant::now();
    loop {
        let s = server.stats();
        if cond(&s) || start.elapsed() > limit {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Shuts the server down and waits for it, failing the test if that hangs.
pub fn stop(server: Server) {
    server.shutdown_handle().shutdown();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.join());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("server stops within 20 s")
        .expect("server stops cleanly");
}
