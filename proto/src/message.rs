//! Turns a connection's frames into messages: reassembly of fragments,
//! interleaved control frames, UTF-8 of text, and the message size limit.

use std::borrow::Cow;

use crate::close::{CloseCode, parse_close_payload};
use crate::error::ProtocolError;
use crate::frame::{Frame, Limits, Opcode};
use crate::utf8::{Utf8Validator, validate_utf8};

/// A message or control frame received from the peer.
///
/// A message that arrived in one frame borrows that frame's payload from the
/// receive buffer; a fragmented one is handed over as an owned buffer, so the
/// assembler holds no memory once the message is out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// An uncompressed text message, checked to be UTF-8.
    Text(Cow<'a, str>),
    /// An uncompressed binary message.
    Binary(Cow<'a, [u8]>),
    /// A message whose first frame had RSV1 set (permessage-deflate): inflate
    /// it, and for text then check it with
    /// [`validate_utf8`](crate::validate_utf8).
    Compressed {
        /// Whether it is a text message.
        text: bool,
        /// The compressed bytes as sent: the sender dropped the `00 00 ff ff`
        /// tail, which the inflater adds back (RFC 7692 §7.2.2).
        payload: Cow<'a, [u8]>,
    },
    /// A ping: answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The peer is closing, with a code and reason if it gave one: reply with
    /// a close frame, then stop sending.
    Close(Option<(CloseCode, &'a str)>),
}

/// Per-connection reassembly state: 32 bytes, plus a buffer that is only
/// allocated while a fragmented message is arriving.
///
/// Feed it every frame from [`parse_frame`](crate::parse_frame), in order.
/// After an error, send the close code it maps to and drop the connection.
#[derive(Debug, Default)]
pub struct MessageAssembler {
    buffer: Vec<u8>,
    utf8: Utf8Validator,
    open: Open,
}

/// The fragmented message in progress, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Open {
    #[default]
    None,
    Text,
    Binary,
    Compressed {
        text: bool,
    },
}

impl MessageAssembler {
    /// An assembler between messages.
    pub const fn new() -> Self {
        MessageAssembler {
            buffer: Vec::new(),
            utf8: Utf8Validator::new(),
            open: Open::None,
        }
    }

    /// Takes the next frame. Returns a message when one is complete or the
    /// frame is a control frame, and `None` while fragments are still coming.
    ///
    /// On error the assembler is reset and its buffer freed.
    pub fn push<'a>(
        &mut self,
        frame: Frame<'a>,
        limits: &Limits,
    ) -> Result<Option<Message<'a>>, ProtocolError> {
        let result = self.push_inner(frame, limits);
        if result.is_err() {
            *self = MessageAssembler::new();
        }
        result
    }

    /// Whether a fragmented message is in progress.
    pub fn is_assembling(&self) -> bool {
        self.open != Open::None
    }

    /// Bytes of a fragmented message held so far.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Memory held for reassembly: zero between messages.
    pub fn capacity(&self) -> usize {
        self.buffer.capacity()
    }

    fn push_inner<'a>(
        &mut self,
        frame: Frame<'a>,
        limits: &Limits,
    ) -> Result<Option<Message<'a>>, ProtocolError> {
        if frame.rsv1 && (frame.opcode.is_control() || frame.opcode == Opcode::Continuation) {
            return Err(ProtocolError::CompressedNonFirstFrame);
        }
        let open = match (frame.opcode, frame.rsv1) {
            (Opcode::Ping, _) => return Ok(Some(Message::Ping(frame.payload))),
            (Opcode::Pong, _) => return Ok(Some(Message::Pong(frame.payload))),
            (Opcode::Close, _) => {
                return Ok(Some(Message::Close(parse_close_payload(frame.payload)?)));
            }
            (Opcode::Continuation, _) => return self.continue_message(frame, limits),
            (Opcode::Text, false) => Open::Text,
            (Opcode::Binary, false) => Open::Binary,
            (opcode, true) => Open::Compressed {
                text: opcode == Opcode::Text,
            },
        };
        if self.open != Open::None {
            return Err(ProtocolError::ExpectedContinuation);
        }
        if frame.payload.len() > limits.max_message {
            return Err(ProtocolError::MessageTooBig {
                max: limits.max_message,
            });
        }
        if frame.fin {
            // The whole message is in this frame: hand it out in place.
            let payload = frame.payload;
            return Ok(Some(match open {
                Open::Text => Message::Text(Cow::Borrowed(validate_utf8(payload)?)),
                Open::Binary | Open::None => Message::Binary(Cow::Borrowed(payload)),
                Open::Compressed { text } => Message::Compressed {
                    text,
                    payload: Cow::Borrowed(payload),
                },
            }));
        }
        self.open = open;
        self.append(frame.payload, limits)?;
        Ok(None)
    }

    fn continue_message<'a>(
        &mut self,
        frame: Frame<'a>,
        limits: &Limits,
    ) -> Result<Option<Message<'a>>, ProtocolError> {
        if self.open == Open::None {
            return Err(ProtocolError::UnexpectedContinuation);
        }
        self.append(frame.payload, limits)?;
        if !frame.fin {
            return Ok(None);
        }
        let open = std::mem::take(&mut self.open);
        let payload = std::mem::take(&mut self.buffer);
        Ok(Some(match open {
            Open::Text => {
                self.utf8.finish()?;
                // Already validated piece by piece; std checks again because
                // only `unsafe` could skip it, and only fragmented text pays.
                let text = String::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?;
                Message::Text(Cow::Owned(text))
            }
            Open::Binary | Open::None => Message::Binary(Cow::Owned(payload)),
            Open::Compressed { text } => Message::Compressed {
                text,
                payload: Cow::Owned(payload),
            },
        }))
    }

    /// Adds a fragment, refusing to grow past the message limit. Text is
    /// checked as it arrives so bad UTF-8 fails before the message ends.
    fn append(&mut self, fragment: &[u8], limits: &Limits) -> Result<(), ProtocolError> {
        let len = self.buffer.len();
        let needed = match len.checked_add(fragment.len()) {
            Some(needed) if needed <= limits.max_message => needed,
            _ => {
                return Err(ProtocolError::MessageTooBig {
                    max: limits.max_message,
                });
            }
        };
        if self.open == Open::Text {
            self.utf8.feed(fragment)?;
        }
        if needed > self.buffer.capacity() {
            // Grow geometrically, but never past the limit.
            let target = needed
                .max(self.buffer.capacity() * 2)
                .min(limits.max_message);
            self.buffer.reserve_exact(target - len);
        }
        self.buffer.extend_from_slice(fragment);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: Opcode, fin: bool, payload: &[u8]) -> Frame<'_> {
        Frame {
            fin,
            rsv1: false,
            opcode,
            payload,
        }
    }

    fn push<'a>(
        assembler: &mut MessageAssembler,
        frame: Frame<'a>,
    ) -> Result<Option<Message<'a>>, ProtocolError> {
        assembler.push(frame, &Limits::default())
    }

    #[test]
    fn idle_state_is_small() {
        assert!(std::mem::size_of::<MessageAssembler>() <= 32);
    }

    #[test]
    fn single_frame_messages_borrow_the_frame() {
        let mut a = MessageAssembler::new();
        let msg = push(&mut a, frame(Opcode::Text, true, b"Hello")).unwrap();
        assert!(matches!(msg, Some(Message::Text(Cow::Borrowed("Hello")))));
        let msg = push(&mut a, frame(Opcode::Binary, true, &[0, 255])).unwrap();
        assert!(matches!(
            msg,
            Some(Message::Binary(Cow::Borrowed(&[0, 255])))
        ));
        assert_eq!(a.capacity(), 0);
    }

    #[test]
    fn fragments_with_control_frames_between_them() {
        let mut a = MessageAssembler::new();
        assert_eq!(push(&mut a, frame(Opcode::Text, false, b"Hel")), Ok(None));
        assert!(a.is_assembling());
        assert_eq!(
            push(&mut a, frame(Opcode::Ping, true, b"p")),
            Ok(Some(Message::Ping(b"p")))
        );
        assert_eq!(
            push(&mut a, frame(Opcode::Continuation, false, b"")),
            Ok(None)
        );
        assert_eq!(
            push(&mut a, frame(Opcode::Pong, true, b"")),
            Ok(Some(Message::Pong(b"")))
        );
        let msg = push(&mut a, frame(Opcode::Continuation, true, b"lo")).unwrap();
        assert_eq!(msg, Some(Message::Text(Cow::Owned("Hello".into()))));
        assert!(!a.is_assembling());
        assert_eq!(a.capacity(), 0, "no memory held between messages");
    }

    #[test]
    fn continuation_without_a_message_is_a_protocol_error() {
        let mut a = MessageAssembler::new();
        let err = push(&mut a, frame(Opcode::Continuation, true, b"x")).unwrap_err();
        assert_eq!(err, ProtocolError::UnexpectedContinuation);
        assert_eq!(err.close_code(), CloseCode::Protocol);
    }

    #[test]
    fn a_new_message_inside_a_fragmented_one_is_a_protocol_error() {
        for opcode in [Opcode::Text, Opcode::Binary] {
            let mut a = MessageAssembler::new();
            push(&mut a, frame(Opcode::Binary, false, b"a")).unwrap();
            let err = push(&mut a, frame(opcode, true, b"b")).unwrap_err();
            assert_eq!(err, ProtocolError::ExpectedContinuation);
            assert_eq!(err.close_code(), CloseCode::Protocol);
            // Reset: the buffer is gone.
            assert!(!a.is_assembling());
            assert_eq!(a.capacity(), 0);
        }
    }

    #[test]
    fn bad_utf8_fails_in_the_fragment_that_carries_it() {
        let mut a = MessageAssembler::new();
        push(&mut a, frame(Opcode::Text, false, "κόσμε".as_bytes())).unwrap();
        push(&mut a, frame(Opcode::Continuation, false, b"\xF4")).unwrap();
        let err = push(&mut a, frame(Opcode::Continuation, false, b"\x90")).unwrap_err();
        assert_eq!(err.close_code(), CloseCode::Invalid);

        // A message may not end inside a code point.
        let mut a = MessageAssembler::new();
        push(&mut a, frame(Opcode::Text, false, b"\xE2\x82")).unwrap();
        let err = push(&mut a, frame(Opcode::Continuation, true, b"")).unwrap_err();
        assert_eq!(err, ProtocolError::InvalidUtf8);

        // And not in a single frame either.
        let err = push(&mut a, frame(Opcode::Text, true, b"\xE2\x82")).unwrap_err();
        assert_eq!(err.close_code(), CloseCode::Invalid);

        // Binary is not text.
        let msg = push(&mut a, frame(Opcode::Binary, true, b"\xFF")).unwrap();
        assert!(matches!(msg, Some(Message::Binary(_))));
    }

    #[test]
    fn message_limit_counts_all_fragments_and_bounds_memory() {
        let limits = Limits {
            max_frame: 100,
            max_message: 250,
        };
        let chunk = [b'a'; 100];
        let mut a = MessageAssembler::new();
        assert_eq!(
            a.push(frame(Opcode::Text, false, &chunk), &limits),
            Ok(None)
        );
        assert_eq!(
            a.push(frame(Opcode::Continuation, false, &chunk), &limits),
            Ok(None)
        );
        assert!(a.capacity() <= 250);
        let err = a
            .push(frame(Opcode::Continuation, true, &chunk[..51]), &limits)
            .unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooBig { max: 250 });
        assert_eq!(err.close_code(), CloseCode::TooBig);

        // Exactly at the limit is fine.
        a.push(frame(Opcode::Text, false, &chunk), &limits).unwrap();
        a.push(frame(Opcode::Continuation, false, &chunk), &limits)
            .unwrap();
        let msg = a
            .push(frame(Opcode::Continuation, true, &chunk[..50]), &limits)
            .unwrap();
        assert!(matches!(msg, Some(Message::Text(text)) if text.len() == 250));
    }

    #[test]
    fn compressed_messages_skip_utf8_and_keep_the_flag() {
        let mut a = MessageAssembler::new();
        let first = Frame {
            rsv1: true,
            ..frame(Opcode::Text, false, b"\xF2\x48")
        };
        assert_eq!(push(&mut a, first), Ok(None));
        let msg = push(&mut a, frame(Opcode::Continuation, true, b"\xCD\xC9")).unwrap();
        assert_eq!(
            msg,
            Some(Message::Compressed {
                text: true,
                payload: Cow::Owned(vec![0xF2, 0x48, 0xCD, 0xC9])
            })
        );
        let single = Frame {
            rsv1: true,
            ..frame(Opcode::Binary, true, b"\x00")
        };
        assert!(matches!(
            push(&mut a, single),
            Ok(Some(Message::Compressed {
                text: false,
                payload: Cow::Borrowed(b"\x00")
            }))
        ));
        // RSV1 belongs on the first frame only.
        push(&mut a, first).unwrap();
        let err = push(
            &mut a,
            Frame {
                rsv1: true,
                ..frame(Opcode::Continuation, true, b"")
            },
        )
        .unwrap_err();
        assert_eq!(err, ProtocolError::CompressedNonFirstFrame);
    }

    #[test]
    fn close_frames_are_parsed_and_checked() {
        let mut a = MessageAssembler::new();
        assert_eq!(
            push(&mut a, frame(Opcode::Close, true, b"")),
            Ok(Some(Message::Close(None)))
        );
        assert_eq!(
            push(&mut a, frame(Opcode::Close, true, b"\x03\xE8bye")),
            Ok(Some(Message::Close(Some((CloseCode::Normal, "bye")))))
        );
        let err = push(&mut a, frame(Opcode::Close, true, b"\x03\xEE")).unwrap_err();
        assert_eq!(err, ProtocolError::InvalidCloseCode(1006));
        assert_eq!(err.close_code(), CloseCode::Protocol);
        let err = push(&mut a, frame(Opcode::Close, true, b"\x03\xE8\xFF")).unwrap_err();
        assert_eq!(err.close_code(), CloseCode::Invalid);
        let err = push(&mut a, frame(Opcode::Close, true, b"\x03")).unwrap_err();
        assert_eq!(err.close_code(), CloseCode::Protocol);
    }
}
