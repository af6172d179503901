//! A fake Redis over real TCP that answers the handshake, then misbehaves.
//! The client must turn every misbehaviour into an error, never a panic or a hang.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Duration;

use redis_lite::{BlockingClient, Config, Error, cmd};

/// Serves one connection: answers `HELLO` with a RESP3 map, then writes
/// `reply` after the first command and either closes or stays silent.
fn fake_peer(reply: &'static [u8], close_after: bool) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf); // HELLO 3
        s.write_all(b"%2\r\n$6\r\nserver\r\n$4\r\nfake\r\n$5\r\nproto\r\n:3\r\n")
            .unwrap();
        let _ = s.read(&mut buf); // the command
        let _ = s.write_all(reply);
        if !close_after {
            // Silent until the client gives up and closes.
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    (addr, handle)
}

fn client(addr: &str) -> BlockingClient {
    let config = Config {
        seeds: vec![addr.to_owned()],
        request_timeout: Some(Duration::from_millis(300)),
        connect_timeout: Duration::from_secs(2),
        backoff_base: Duration::from_secs(5),
        ..Config::default()
    };
    BlockingClient::connect(config).unwrap()
}

#[test]
fn garbage_is_a_protocol_error() {
    let (addr, peer) = fake_peer(b"!!this is not RESP\r\n", false);
    let err = client(&addr).query(cmd("GET").arg("k")).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    peer.join().unwrap();
}

#[test]
fn a_negative_length_is_a_protocol_error() {
    let (addr, peer) = fake_peer(b"$-7\r\nabc\r\n", false);
    let err = client(&addr).query(cmd("GET").arg("k")).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    peer.join().unwrap();
}

#[test]
fn a_truncated_reply_then_close_is_a_lost_connection() {
    let (addr, peer) = fake_peer(b"$100\r\nonly a few bytes", true);
    let err = client(&addr).query(cmd("GET").arg("k")).unwrap_err();
    assert!(matches!(err, Error::ConnectionLost { .. }), "{err}");
    assert!(err.to_string().contains("may or may not have run"), "{err}");
    peer.join().unwrap();
}

#[test]
fn an_endless_reply_is_cut_off() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        s.write_all(b"%1\r\n$5\r\nproto\r\n:3\r\n").unwrap();
        let _ = s.read(&mut buf);
        // A bulk string that claims to be huge, then bytes until the client hangs up.
        let _ = s.write_all(b"$999999999999\r\n");
        let chunk = [b'x'; 64 * 1024];
        while s.write_all(&chunk).is_ok() {}
    });
    let config = Config {
        seeds: vec![addr],
        max_reply_bytes: 1024 * 1024,
        ..Config::default()
    };
    let err = BlockingClient::connect(config)
        .unwrap()
        .query(cmd("GET").arg("k"))
        .unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("max_reply_bytes"), "{err}");
    peer.join().unwrap();
}

#[test]
fn a_silent_peer_times_out() {
    let (addr, peer) = fake_peer(b"", false);
    let err = client(&addr).query(cmd("GET").arg("k")).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    peer.join().unwrap();
}

#[test]
fn an_unexpected_push_shape_is_handled() {
    // A push that looks like a message but has no payload, then the real reply.
    let (addr, peer) = fake_peer(b">2\r\n$7\r\nmessage\r\n$1\r\nc\r\n+OK\r\n", false);
    let mut c = client(&addr);
    // A two-element "message" is not a valid message: it is surfaced as a
    // generic push and the reply still matches.
    assert!(c.query(cmd("SET").arg("k").arg("v")).unwrap().is_ok());
    drop(c);
    peer.join().unwrap();
}

#[test]
fn a_handshake_that_never_finishes_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 512];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let config = Config {
        seeds: vec![addr],
        connect_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let err = BlockingClient::connect(config).unwrap_err();
    assert!(matches!(err, Error::NotConnected { .. }), "{err}");
    peer.join().unwrap();
}
