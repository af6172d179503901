//! The admin port (`RINGHUB_METRICS_LISTEN`): `/metrics` and `/healthz` on
//! an address of their own, so a scraper can reach them on a private
//! interface while the WebSocket port faces the internet.
//!
//! A plain blocking thread: scrapes are rare, small and answered from the
//! atomics, so one request at a time is plenty, and it never touches a core.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use crate::node::Node;
use crate::snapshot::Snapshot;

/// Longest a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// Binds `addr` and serves it from a thread of its own; returns the bound
/// address (port 0 picks one).
pub fn start(node: Arc<Node>, addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("ringhub-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = serve(&node, stream) {
                            debug!("admin request failed: {e}");
                        }
                    }
                    Err(e) => debug!("admin accept failed: {e}"),
                }
            }
        })?;
    info!("metrics on http://{local}/metrics");
    Ok(local)
}

fn serve(node: &Node, mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => {
            let mut text = String::with_capacity(8 * 1024);
            crate::prometheus::render(&mut text, &Snapshot::read(node));
            ("200 OK", crate::prometheus::CONTENT_TYPE, text)
        }
        (b"GET" | b"HEAD", b"/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: this port serves /metrics and /healthz\n".to_owned(),
        ),
    };
    let length = body.len();
    let body = if method == b"HEAD" { "" } else { body.as_str() };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\
         Connection: close\r\n\r\n{body}"
    )
}
