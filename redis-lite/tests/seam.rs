//! The driver seam, exercised by a second, minimal driver: non-blocking
//! `std::net` sockets in a completion style like the io_uring reactor's
//! (each send owns its `Bytes` until it "completes"; reads complete into
//! `handle_input`; one timer from `poll_timeout`). No mio, no BlockingClient.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use redis_lite::{Action, Client, Config, ConnId, Event, RequestId, SubKind, Value, cmd};
use ringhub_testkit::RedisServer;

struct Socket {
    stream: TcpStream,
    /// Sends "submitted" and not completed yet, each owning its buffer.
    in_flight: VecDeque<Bytes>,
}

/// A poll-style driver: everything a ring driver does, with std sockets.
struct Driver {
    client: Client,
    sockets: HashMap<ConnId, Socket>,
    events: Vec<Event>,
}

impl Driver {
    fn turn(&mut self) {
        let now = Instant::now();
        while let Some(action) = self.client.poll_action() {
            match action {
                Action::Connect { conn, addr } => match TcpStream::connect(&addr) {
                    Ok(stream) => {
                        stream.set_nonblocking(true).unwrap();
                        self.sockets.insert(
                            conn,
                            Socket {
                                stream,
                                in_flight: VecDeque::new(),
                            },
                        );
                        self.client.handle_connected(conn, now);
                    }
                    Err(e) => self.client.handle_disconnected(conn, &e.to_string(), now),
                },
                Action::Close { conn } => {
                    self.sockets.remove(&conn);
                }
            }
        }
        while let Some((conn, bytes)) = self.client.poll_transmit() {
            if let Some(s) = self.sockets.get_mut(&conn) {
                s.in_flight.push_back(bytes);
            }
        }
        let mut failed = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        for (&conn, s) in &mut self.sockets {
            // Send completions (a short send is resubmitted with the rest).
            while let Some(front) = s.in_flight.front_mut() {
                match s.stream.write(front) {
                    Ok(n) => front.advance(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        failed.push((conn, e.to_string()));
                        break;
                    }
                }
                if front.is_empty() {
                    s.in_flight.pop_front();
                }
            }
            // Receive completions.
            loop {
                match s.stream.read(&mut buf) {
                    Ok(0) => {
                        failed.push((conn, "closed by the server".to_owned()));
                        break;
                    }
                    Ok(n) => self.client.handle_input(conn, &buf[..n], now),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        failed.push((conn, e.to_string()));
                        break;
                    }
                }
            }
        }
        for (conn, why) in failed {
            self.sockets.remove(&conn);
            self.client.handle_disconnected(conn, &why, now);
        }
        // The one timer.
        if self
            .client
            .poll_timeout()
            .is_some_and(|t| t <= Instant::now())
        {
            self.client.handle_timeout(Instant::now());
        }
        self.events
            .extend(std::iter::from_fn(|| self.client.poll_event()));
        std::thread::sleep(Duration::from_micros(200));
    }

    fn until<T>(&mut self, what: &str, mut found: impl FnMut(&mut Vec<Event>) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.turn();
            if let Some(v) = found(&mut self.events) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 10 s; events {:?}",
                self.events
            );
        }
    }

    fn reply(&mut self, id: RequestId) -> Result<Value, redis_lite::Error> {
        self.until("a reply", |events| {
            let i = events
                .iter()
                .position(|e| matches!(e, Event::Reply { id: got, .. } if *got == id))?;
            match events.remove(i) {
                Event::Reply { result, .. } => Some(result),
                _ => None,
            }
        })
    }
}

#[test]
fn a_completion_style_driver_runs_the_core() {
    let mut server = RedisServer::start();
    let config = Config {
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
        ..Config::from_url(&server.url()).unwrap()
    };
    let now = Instant::now();
    let mut d = Driver {
        client: Client::new(config, 7, now).unwrap(),
        sockets: HashMap::new(),
        events: Vec::new(),
    };

    // A loop turn's worth of commands, then their replies in order.
    let ids: Vec<RequestId> = (0..1000)
        .map(|_| d.client.send(cmd("INCR").arg("seam"), Instant::now()))
        .collect();
    for (i, id) in ids.into_iter().enumerate() {
        assert_eq!(d.reply(id).unwrap(), Value::Int(i as i64 + 1));
    }

    d.client.subscribe(
        SubKind::Channel,
        [Bytes::from_static(b"seam-ch")],
        Instant::now(),
    );
    d.until("subscribed", |e| {
        e.iter()
            .any(|e| matches!(e, Event::Subscribed { .. }))
            .then_some(())
    });
    let id = d
        .client
        .send(cmd("PUBLISH").arg("seam-ch").arg("hello"), Instant::now());
    assert_eq!(d.reply(id).unwrap(), Value::Int(1));
    d.until("the message", |e| {
        e.iter()
            .any(|e| matches!(e, Event::Message(m) if &m.payload[..] == b"hello"))
            .then_some(())
    });

    // A dead server: the timer drives the reconnect; the subscription comes back.
    server.kill();
    d.until("the loss is reported", |e| {
        e.iter()
            .any(|e| matches!(e, Event::MessagesMayBeLost { .. }))
            .then_some(())
    });
    server.restart();
    d.events.clear();
    d.until("resubscribed", |e| {
        e.iter()
            .any(|e| matches!(e, Event::Subscribed { .. }))
            .then_some(())
    });
    let id = d
        .client
        .send(cmd("PUBLISH").arg("seam-ch").arg("again"), Instant::now());
    assert_eq!(d.reply(id).unwrap(), Value::Int(1));
}
