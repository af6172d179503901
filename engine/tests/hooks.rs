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
            "pause" => {
                let _ = ctx.send_text(conn, "paused");
                ctx.pause_reading(conn);
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
        if got == b"resume" {
            ctx.resume_reading(conn);
        } else if !got.is_empty() {
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

/// A server watching one end of a socketpair, the other end to write to,
/// and a client connected to it.
fn start_with_pipe() -> (UnixStream, Server, Client) {
    let (writer, reader) = UnixStream::pair().unwrap();
    reader.set_nonblocking(true).unwrap();
    let server = start_hooks(Some(Arc::new(reader)), |_| {});
    let ws = client(server.local_addr());
    (writer, server, ws)
}

#[test]
fn a_watched_descriptor_is_read_on_the_core_each_time_data_arrives() {
    let (mut writer, server, mut ws) = start_with_pipe();
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

#[test]
fn a_paused_connection_is_not_read_until_resumed_and_loses_nothing() {
    let (mut writer, server, mut ws) = start_with_pipe();
    send(&mut ws, "pause");
    assert_eq!(recv_text(&mut ws), "paused");
    for _ in 0..3 {
        send(&mut ws, "calls");
    }
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    match ws.read() {
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("a paused connection answered: {other:?}"),
    }
    ws.get_mut().set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    // The resume arrives through the watched socketpair (the paused
    // connection itself is not read).
    writer.write_all(b"resume").unwrap();
    for _ in 0..3 {
        assert_eq!(
            recv_text(&mut ws),
            "1",
            "every message sent while paused is read"
        );
    }
    stop(server);
}

#[test]
fn a_paused_connection_pushes_back_on_its_peer_through_tcp() {
    let server = start_hooks(None, |_| {});
    let mut raw = raw_upgraded(server.local_addr());
    raw.write_all(&masked_frame(0x81, b"pause")).unwrap();
    let mut head = [0u8; 8];
    raw.read_exact(&mut head).unwrap();
    assert_eq!(&head[2..], b"paused");
    raw.set_nonblocking(true).unwrap();
    let frame = masked_frame(0x82, &[7u8; 60_000]);
    let mut written = 0usize;
    // Bounded: the socket buffers of a loopback pair hold a few MiB.
    let blocked = loop {
        if written > 256 << 20 {
            break false;
        }
        match raw.write(&frame) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
            Err(e) => panic!("write failed: {e}"),
        }
    };
    assert!(
        blocked,
        "{written} bytes went in without the server reading"
    );
    stop(server);
}

#[test]
fn frames_behind_a_pause_in_the_same_read_wait_for_the_resume() {
    let (writer, reader) = UnixStream::pair().unwrap();
    reader.set_nonblocking(true).unwrap();
    let server = start_hooks(Some(Arc::new(reader)), |_| {});
    let mut raw = raw_upgraded(server.local_addr());
    // One write, so one read on the server: the pause comes first.
    let mut burst = masked_frame(0x81, b"pause");
    for _ in 0..3 {
        burst.extend_from_slice(&masked_frame(0x81, b"calls"));
    }
    raw.write_all(&burst).unwrap();
    let mut head = [0u8; 8];
    raw.read_exact(&mut head).unwrap();
    assert_eq!(&head[2..], b"paused");
    raw.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut more = [0u8; 1];
    let early = raw.read(&mut more);
    assert!(
        early.is_err(),
        "a frame behind the pause was handled: {early:?}"
    );
    raw.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    (&writer).write_all(b"resume").unwrap();
    // Three replies of "1" (the resume was the one readable call).
    let mut replies = [0u8; 9];
    raw.read_exact(&mut replies).unwrap();
    assert_eq!(replies, *b"\x81\x011\x81\x011\x81\x011");
    stop(server);
}
