//! Frames against an independent implementation: tungstenite, run over an
//! in-memory stream. Its client's masked frames go through our server-side
//! decoder, our server frames through its client, and our masked client
//! frames through its server.

use std::io::{self, Cursor, Read, Write};

use ringhub_proto::{
    CloseCode, Decoded, FrameHead, Limits, Message, MessageAssembler, Opcode, Role,
    encode_close_frame, encode_frame, encode_masked_frame,
};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::protocol::{Role as PeerRole, WebSocket};
use tungstenite::{Bytes, Message as PeerMessage};

/// A byte pipe: the peer reads what we queued and writes into `written`.
#[derive(Default)]
struct Pipe {
    to_peer: Cursor<Vec<u8>>,
    written: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.to_peer.read(buf)? {
            // No more input for now: what a non-blocking socket says.
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn peer(role: PeerRole, to_peer: Vec<u8>) -> WebSocket<Pipe> {
    let pipe = Pipe {
        to_peer: Cursor::new(to_peer),
        written: Vec::new(),
    };
    WebSocket::from_raw_socket(pipe, role, None)
}

/// Our side's view of a message, owned.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// Decodes everything in `wire` as a server would, in reads of `read_size`.
fn server_decode(wire: &[u8], read_size: usize) -> Vec<Got> {
    let limits = Limits::default();
    let mut assembler = MessageAssembler::new();
    let mut pending = Vec::new();
    let mut got = Vec::new();
    for read in wire.chunks(read_size) {
        pending.extend_from_slice(read);
        let mut start = 0;
        while let Decoded::Frame { message, consumed } = assembler
            .decode(&mut pending[start..], Role::Server, &limits, false)
            .expect("tungstenite's frames follow the RFC")
        {
            start += consumed;
            got.extend(message.map(|message| match message {
                Message::Text(text) => Got::Text(text.into_owned()),
                Message::Binary(bytes) => Got::Binary(bytes.into_owned()),
                Message::Ping(payload) => Got::Ping(payload.to_vec()),
                Message::Close(close) => {
                    Got::Close(close.map(|(code, reason)| (code.as_u16(), reason.to_owned())))
                }
                other => panic!("unexpected {other:?}"),
            }));
        }
        pending.drain(..start);
    }
    assert!(pending.is_empty());
    got
}

fn big_binary() -> Vec<u8> {
    (0..70_000u32).map(|i| (i % 253) as u8).collect()
}

#[test]
fn tungstenite_client_frames_decode() {
    let mut client = peer(PeerRole::Client, Vec::new());
    client.send(PeerMessage::text("Hello ✓")).unwrap();
    client.send(PeerMessage::binary(big_binary())).unwrap();
    client
        .send(PeerMessage::Ping(Bytes::from_static(b"are you there")))
        .unwrap();
    // A fragmented text message with a code point split between fragments,
    // and a ping between them.
    let euro = "€".as_bytes();
    let fragments = [
        Frame::message(
            [b"pay ".as_slice(), &euro[..1]].concat(),
            OpCode::Data(Data::Text),
            false,
        ),
        Frame::ping(b"mid".to_vec()),
        Frame::message(euro[1..].to_vec(), OpCode::Data(Data::Continue), false),
        Frame::message(b" 5".to_vec(), OpCode::Data(Data::Continue), true),
    ];
    for frame in fragments {
        client.write(PeerMessage::Frame(frame)).unwrap();
    }
    client
        .send(PeerMessage::Close(Some(CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Away,
            reason: "bye".into(),
        })))
        .unwrap();
    let wire = std::mem::take(&mut client.get_mut().written);

    let expected = vec![
        Got::Text("Hello ✓".into()),
        Got::Binary(big_binary()),
        Got::Ping(b"are you there".to_vec()),
        Got::Ping(b"mid".to_vec()),
        Got::Text("pay € 5".into()),
        Got::Close(Some((1001, "bye".into()))),
    ];
    for read_size in [1, 7, 1500, 65536, wire.len()] {
        assert_eq!(
            server_decode(&wire, read_size),
            expected,
            "reads of {read_size}"
        );
    }
}

#[test]
fn our_server_frames_read_by_tungstenite_client() {
    let mut wire = Vec::new();
    encode_frame(
        &mut wire,
        FrameHead::new(Opcode::Text),
        "Hello ✓".as_bytes(),
    );
    encode_frame(&mut wire, FrameHead::new(Opcode::Binary), &big_binary());
    let start = FrameHead {
        fin: false,
        ..FrameHead::new(Opcode::Text)
    };
    encode_frame(&mut wire, start, b"frag");
    encode_frame(&mut wire, FrameHead::new(Opcode::Ping), b"p");
    encode_frame(&mut wire, FrameHead::new(Opcode::Continuation), b"mented");
    encode_close_frame(&mut wire, CloseCode::Normal, "done");

    let mut client = peer(PeerRole::Client, wire);
    assert_eq!(client.read().unwrap(), PeerMessage::text("Hello ✓"));
    assert_eq!(client.read().unwrap(), PeerMessage::binary(big_binary()));
    assert_eq!(
        client.read().unwrap(),
        PeerMessage::Ping(Bytes::from_static(b"p"))
    );
    assert_eq!(client.read().unwrap(), PeerMessage::text("fragmented"));
    match client.read().unwrap() {
        PeerMessage::Close(Some(close)) => {
            assert_eq!(u16::from(close.code), 1000);
            assert_eq!(close.reason.as_str(), "done");
        }
        other => panic!("expected a close, got {other:?}"),
    }
}

#[test]
fn our_masked_client_frames_read_by_tungstenite_server() {
    let mut wire = Vec::new();
    encode_masked_frame(
        &mut wire,
        FrameHead::new(Opcode::Text),
        "κόσμε".as_bytes(),
        [9, 8, 7, 6],
    );
    encode_masked_frame(
        &mut wire,
        FrameHead::new(Opcode::Binary),
        &big_binary(),
        [1, 2, 3, 4],
    );
    let mut server = peer(PeerRole::Server, wire);
    assert_eq!(server.read().unwrap(), PeerMessage::text("κόσμε"));
    assert_eq!(server.read().unwrap(), PeerMessage::binary(big_binary()));
}
