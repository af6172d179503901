//! A server that writes its last echoes and closes its end in one go. The
//! bench reads a socket once per event when the read comes back short (the
//! socket is then empty, and later bytes raise a new event), but an end of
//! stream that arrived with the data raises no new event: it must read on to
//! the end then, count every echo that came before it, and count the
//! connection as dropped.

mod common;

use std::io::Write as _;
use std::net::{Shutdown, TcpListener};
use std::thread;

use common::{bench, n};
use tungstenite::Message;

const CONNECTIONS: u64 = 4;
const IN_FLIGHT: u64 = 8;

/// Echoes each connection's first window as one write, then shuts its
/// sending side; reads (and drops) whatever comes after, until the bench
/// closes, so no unread byte turns the close into a reset.
fn start_closing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("ws://{}/", listener.local_addr().expect("local addr"));
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                let (mut last, mut echoes) = (Vec::new(), 0);
                while echoes < IN_FLIGHT {
                    match ws.read() {
                        Ok(Message::Text(text)) => {
                            echoes += 1;
                            // A server frame: final text, unmasked, 7-bit length.
                            let len = u8::try_from(text.len()).expect("bench messages are short");
                            last.extend_from_slice(&[0x81, len]);
                            last.extend_from_slice(text.as_bytes());
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
                let socket = ws.get_mut();
                if socket.write_all(&last).is_err() || socket.shutdown(Shutdown::Write).is_err() {
                    return;
                }
                while ws.read().is_ok() {}
            });
        }
    });
    url
}

#[test]
fn echoes_that_arrive_with_the_end_of_the_stream_are_all_counted() {
    let url = start_closing_server();
    let (code, r) = bench(&[
        "echo",
        "--url",
        &url,
        "-n",
        &CONNECTIONS.to_string(),
        "--in-flight",
        &IN_FLIGHT.to_string(),
        "-d",
        "0.5",
        "--drain",
        "0.5",
    ]);
    assert_eq!(code, 1, "messages sent after the close are lost: {r}");
    assert_eq!(n(&r, "counters.established"), CONNECTIONS);
    assert_eq!(
        (n(&r, "counters.unique"), n(&r, "counters.dropped")),
        (CONNECTIONS * IN_FLIGHT, CONNECTIONS),
        "{r}"
    );
    assert_eq!(n(&r, "counters.duplicates"), 0);
    assert_eq!(r["first_error"], "server closed the connection", "{r}");
}
