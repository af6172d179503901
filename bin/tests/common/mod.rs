//! Starting real `ringhub` processes and talking to them with tungstenite
//! and plain HTTP, every wait bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use ringhub_testkit::RinghubProcess;
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::{Message, WebSocket};

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `ringhub` process, killed when dropped.
pub struct Ringhub {
    process: RinghubProcess,
    pub addr: SocketAddr,
}

impl Ringhub {
    /// Starts the binary on a free loopback port with two cores and the
    /// given extra flags, and waits until it listens.
    pub fn start(args: &[&str]) -> Ringhub {
        Self::start_with_env(args, &[])
    }

    /// A server joined to Redis at `redis` (a URL or comma-separated seeds)
    /// as `id`, heartbeating every second so pruning fits a test, plus `extra`
    /// flags.
    pub fn start_on_redis(redis: &str, id: &str, extra: &[&str]) -> Ringhub {
        let mut args = vec!["--redis", redis, "--server-id", id, "--heartbeat-secs", "1"];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Ringhub {
        let mut all_args = vec!["--threads", "2"];
        all_args.extend_from_slice(args);
        let mut all_env = vec![("RINGHUB_LOG", "info")];
        all_env.extend_from_slice(env);
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ringhub"));
        let process = RinghubProcess::start(binary, &all_args, &all_env, WAIT);
        Ringhub {
            addr: process.addr,
            process,
        }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `WAIT`.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.process.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ringhub did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Opens `/ws?query` (query without the `?`), with extra headers.
    pub fn connect(&self, query: &str, headers: &[(&str, &str)]) -> Client {
        self.try_connect("/ws", query, headers)
            .unwrap_or_else(|(status, body)| panic!("upgrade refused: {status} {body}"))
    }

    /// Opens `path?query`; on refusal, the HTTP status and body.
    pub fn try_connect(
        &self,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, String)> {
        let stream = TcpStream::connect(self.addr).expect("tcp connect");
        self.try_upgrade(stream, path, query, headers)
    }

    /// Opens `/ws?query` from the loopback address `source` (127.0.0.0/8).
    pub fn try_connect_from(
        &self,
        source: std::net::Ipv4Addr,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, String)> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let from = std::net::SocketAddr::from((source, 0));
        socket.bind(&from.into()).expect("bind the source address");
        socket.connect(&self.addr.into()).expect("tcp connect");
        self.try_upgrade(socket.into(), "/ws", query, headers)
    }

    fn try_upgrade(
        &self,
        stream: TcpStream,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, (u16, String)> {
        let url = format!("ws://{}{path}?{query}", self.addr);
        let mut request = url.into_client_request().expect("request");
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes()).expect("header name");
            request
                .headers_mut()
                .insert(name, HeaderValue::from_str(v).expect("header"));
        }
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        match tungstenite::client(request, stream) {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err((status, body))
            }
            Err(e) => panic!("handshake failed: {e}"),
        }
    }

    /// One HTTP/1.1 request; returns the status and the body.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).expect("tcp connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).expect("write request");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

/// A WebSocket client of the JSON protocol.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

impl Client {
    pub fn send(&mut self, value: Value) {
        self.send_text(&value.to_string());
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    /// The next text frame as JSON (pings are answered by tungstenite).
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read a frame") {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("server sent JSON");
                }
                Message::Close(frame) => panic!("closed by the server: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame whose type is `kind`, skipping others.
    pub fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv();
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Sends a ping and waits for the pong: everything the server had
    /// queued for this connection before it arrives first.
    pub fn sync(&mut self) -> Vec<Value> {
        self.send(serde_json::json!({"type": "ping"}));
        let mut before = Vec::new();
        loop {
            let v = self.recv();
            if v["type"] == "pong" {
                return before;
            }
            before.push(v);
        }
    }

    /// Asserts that no text frame arrives for `quiet` (a late duplicate
    /// through another server would show up here).
    pub fn expect_quiet(&mut self, quiet: Duration) {
        self.ws
            .get_ref()
            .set_read_timeout(Some(quiet))
            .expect("timeout");
        let deadline = Instant::now() + quiet;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(text)) => panic!("unexpected frame: {text}"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
        self.ws
            .get_ref()
            .set_read_timeout(Some(WAIT))
            .expect("timeout");
    }

    /// Reads until the server closes; returns the close code.
    pub fn recv_close(&mut self) -> Option<u16> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return None;
                }
                Err(e) => panic!("read while waiting for a close: {e}"),
            }
        }
    }
}
