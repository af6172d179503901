//! The hooks that let an application run its own I/O on a core: watched
//! descriptors, a wake-up deadline and the end of a loop turn. Real sockets
//! on 127.0.0.1, tungstenite clients, every wait bounded.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ringhub_engine::{Config, ConnId, Ctx, Decision, Handler, Message, Server, WebSocketUpgrade};

const PIPE: u16 = 7;

/// Echoes what arrives on a socketpair to the last connection opened, and
/// answers a few commands about its hooks.
#[derive(Default)]
struct Hooks {
    pipe: Option<Arc<UnixStream>>,
    conn: Option<ConnId>,
    /// `wake_at` deadline asked for by "later", reported at the turn's end.
    deadline: Option<Instant>,
    readable_calls: usize,
}

impl Handler for Hooks {
    type State = ();
    type Post = ();

    fn on_open(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _: &WebSocketUpgrade<'_, '_>,
    ) -> Decision {
        Decision::accept()
    }

    fn on_opened(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId) {
        self.conn = Some(conn);
        if let Some(pipe) = &self.pipe {
            ctx.watch_readable(pipe.as_raw_fd(), PIPE);
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, message: Message<'_>) {
        let Message::Text(text) = message else { return };
        match text {
            "later" => {
                let at = Instant::now() + Duration::from_millis(200);
                self.deadline = Some(at);
                ctx.wake_at(at);
            }
            "unwatch" => {
                ctx.unwatch(PIPE);
                self.readable_calls = 0;
                let _ = ctx.send_text(conn, "unwatched");
            }
            "calls" => {
                let _ = ctx.send_text(conn, &self.readable_calls.to_string());
            }
            _ => {}
        }
    }

    fn on_readable(&mut self, ctx: &mut Ctx<'_, Self>, key: u16) {
        assert_eq!(key, PIPE);
        self.readable_calls += 1;
        let (Some(pipe), Some(conn)) = (&self.pipe, self.conn) else {
            return;
        };
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        loop {
            match (&**pipe).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading the pipe: {e}"),
            }
        }
        if !got.is_empty() {
            let _ = ctx.send_text(conn, &String::from_utf8_lossy(&got));
        }
    }

    fn on_turn_end(&mut self, ctx: &mut Ctx<'_, Self>) {
        if let (Some(at), Some(conn)) = (self.deadline, self.conn)
            && Instant::now() >= at
        {
            self.deadline = None;
            let _ = ctx.send_text(conn, "woke");
        }
    }
}

fn start_hooks(pipe: Option<Arc<UnixStream>>, tweak: impl FnOnce(&mut Config)) -> Server {
    raise_nofile();
    let mut config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        cores: 1,
        pin: false,
        recv_buffers: 64,
        max_connections_per_core: 256,
        ring_entries: 128,
        close_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    tweak(&mut config);
    let pipe = Mutex::new(pipe);
    Server::start(config, move |_| Hooks {
        pipe: pipe.lock().unwrap().take(),
        ..Hooks::default()
    })
    .expect("server starts")
}

#[test]
fn a_watched_descriptor_is_read_on_the_core_each_time_data_arrives() {
    let (mut writer, reader) = UnixStream::pair().unwrap();
    reader.set_nonblocking(true).unwrap();
    let server = start_hooks(Some(Arc::new(reader)), |_| {});
    let mut ws = client(server.local_addr());
    // The watch is armed when the connection opens; prove it with a reply.
    send(&mut ws, "calls");
    assert_eq!(recv_text(&mut ws), "0");
    for word in ["first", "second", "third"] {
        writer.write_all(word.as_bytes()).unwrap();
        assert_eq!(
            recv_text(&mut ws),
            word,
            "the watch fires again (multishot)"
        );
    }

    send(&mut ws, "unwatch");
    assert_eq!(recv_text(&mut ws), "unwatched");
    writer.write_all(b"ignored").unwrap();
    // Give a (wrong) readiness completion time to arrive before asking.
    std::thread::sleep(Duration::from_millis(200));
    send(&mut ws, "calls");
    assert_eq!(recv_text(&mut ws), "0", "no call after unwatch");
    stop(server);
}

#[test]
fn wake_at_turns_an_otherwise_idle_loop_at_the_deadline() {
    // A tick ten times the deadline: without the alarm the loop would not
    // turn before the next tick.
    let server = start_hooks(None, |c| c.tick = Duration::from_secs(2));
    let mut ws = client(server.local_addr());
    // Twice: a request after the first alarm fired is armed anew.
    for _ in 0..2 {
        let asked = Instant::now();
        send(&mut ws, "later");
        assert_eq!(recv_text(&mut ws), "woke");
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(200),
            "never before the deadline"
        );
        assert!(
            waited < Duration::from_millis(1500),
            "woken by the alarm, not the 2 s tick (waited {waited:?})"
        );
    }
    stop(server);
}
