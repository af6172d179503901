//! The status page in a real headless Chromium, driven over the DevTools
//! protocol (a WebSocket, so tungstenite drives it; no Selenium needed):
//! the page loads and draws, its demo client connects with
//! permessage-deflate negotiated by the browser, a message sent from the
//! page reaches a tungstenite client, and a screenshot is saved.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Ringhub, WAIT};
use serde_json::{Value, json};
use tungstenite::Message;

/// A headless Chromium with its own profile, killed by PID when dropped.
struct Browser {
    child: Child,
    devtools_port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(url: &str) -> Browser {
        let program = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|p| {
                Command::new(p)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .expect(
                "no Chromium found: install it with `apt-get install -y chromium chromium-driver`",
            );
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + WAIT;
        let devtools_port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next()?.parse().ok())
            {
                break port;
            }
            assert!(Instant::now() < deadline, "Chromium did not open DevTools");
            std::thread::sleep(Duration::from_millis(50));
        };
        Browser {
            child,
            devtools_port,
            _profile: profile,
        }
    }

    /// The DevTools WebSocket URL of the first page.
    fn page_url(&self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut s = TcpStream::connect(("127.0.0.1", self.devtools_port)).expect("devtools");
            s.set_read_timeout(Some(WAIT)).expect("timeout");
            let request = format!(
                "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.devtools_port
            );
            s.write_all(request.as_bytes()).expect("request");
            let mut response = String::new();
            let _ = s.read_to_string(&mut response);
            let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let pages: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let url = pages.as_array().and_then(|pages| {
                pages
                    .iter()
                    .find(|p| p["type"] == "page")
                    .and_then(|p| p["webSocketDebuggerUrl"].as_str())
                    .map(str::to_owned)
            });
            if let Some(url) = url {
                return url;
            }
            assert!(Instant::now() < deadline, "no page in {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One DevTools session on a page.
struct Page {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    fn open(url: &str) -> Page {
        let (ws, _) = tungstenite::connect(url).expect("devtools websocket");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
        }
        Page { ws, next_id: 1 }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(request.to_string()))
            .expect("send");
        loop {
            let Message::Text(text) = self.ws.read().expect("devtools reply") else {
                continue;
            };
            let reply: Value = serde_json::from_str(text.as_str()).expect("json");
            if reply["id"] == id {
                assert!(reply["error"].is_null(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("status_page.png")
}

#[test]
fn the_status_page_draws_and_its_demo_client_talks_to_a_tungstenite_client() {
    let server = Ringhub::start(&[]);
    let mut bob = server.connect("user=bob", &[]);
    assert_eq!(bob.recv()["type"], "welcome");
    // Some traffic for the charts to show.
    let mut carol = server.connect("user=carol", &[]);
    assert_eq!(carol.recv()["type"], "welcome");
    carol.send(json!({"type": "subscribe", "topic": "lobby"}));
    carol.sync();

    let browser = Browser::start(&format!("http://{}/", server.addr));
    let mut page = Page::open(&browser.page_url());
    let wait_until = |cond: &str| {
        format!(
            "new Promise((ok, fail) => {{ const t0 = Date.now(); (function poll() {{ \
               if ({cond}) return ok(true); \
               if (Date.now() - t0 > 10000) return fail(new Error('timed out: ' + {cond:?})); \
               setTimeout(poll, 50); }})(); }})"
        )
    };
    // The page loaded and its first /metrics poll went through.
    page.eval(&wait_until(
        "document.getElementById('state').textContent === 'live'",
    ));
    let server_line = page.eval("document.getElementById('server').textContent");
    assert!(
        server_line.as_str().unwrap_or("").contains("embedded"),
        "{server_line}"
    );

    // Connect as alice from the page and send to bob.
    page.eval(
        "document.getElementById('user').value = 'alice'; \
         document.getElementById('to').value = 'bob'; \
         document.getElementById('text').value = 'hello bob'; \
         document.getElementById('connect').click(); true",
    );
    page.eval(&wait_until("!document.getElementById('send').disabled"));
    let extensions = page.eval("ws.extensions");
    assert!(
        extensions
            .as_str()
            .unwrap_or("")
            .starts_with("permessage-deflate"),
        "the browser negotiated no compression: {extensions}"
    );
    page.eval("document.getElementById('send').click(); true");
    let message = bob.recv_type("message");
    assert_eq!(message["from"], "alice");
    assert_eq!(message["data"], json!({"text": "hello bob"}));
    // The page shows the ack, then publishes to a topic and measures latency.
    page.eval(&wait_until(
        "document.getElementById('log').textContent.includes('\"ack\"')",
    ));
    page.eval("document.getElementById('publish').click(); true");
    assert_eq!(carol.recv_type("message")["from"], "alice");
    page.eval("document.getElementById('ping').click(); true");
    page.eval(&wait_until(
        "document.getElementById('log').textContent.includes('pong in')",
    ));
    // Let the charts draw some points, with a little load for them.
    for i in 0..100 {
        bob.send(json!({"type": "publish", "topic": "lobby", "data": i}));
        std::thread::sleep(Duration::from_millis(50));
    }
    page.eval(&wait_until("series.rate[0].length >= 5"));

    let shot = page.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("base64");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshot_path(), &png).expect("save the screenshot");
    eprintln!("screenshot: {}", screenshot_path().display());
}
