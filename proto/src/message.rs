//! Turns a connection's frames into messages: reassembly of fragments,
//! interleaved control frames, UTF-8 of text, and the message size limit.

use std::borrow::Cow;

use crate::close::{CloseCode, parse_close_payload};
use crate::error::ProtocolError;
use crate::frame::{Frame, FrameHead, HeaderStatus, Limits, Opcode, Role, parse_header};
use crate::mask::apply_mask_at;
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

/// The outcome of [`MessageAssembler::decode`] on bytes that broke no rule.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A frame was consumed from the start of the buffer.
    Frame {
        /// The message it completed, or the control frame it was; `None` for
        /// a fragment of a message still arriving.
        message: Option<Message<'a>>,
        /// Bytes of the buffer the frame occupied.
        consumed: usize,
    },
    /// The buffer holds the start of a frame. Keep its bytes exactly as they
    /// are now (the payload may have been unmasked in place) and call again
    /// with them followed by at least `needed` more.
    Incomplete {
        /// The least number of extra bytes that can make progress. Once the
        /// length field has arrived, this is exactly what the frame lacks.
        needed: usize,
    },
}

/// Per-connection receive state: 24 bytes, plus a buffer allocated only
/// while a fragmented message is arriving.
///
/// Either hand it the receive buffer with [`decode`](Self::decode), which
/// also checks text before its frame is complete, or parse frames yourself
/// with [`parse_frame`](crate::parse_frame) and feed each to
/// [`push`](Self::push); don't mix the two on one connection. After an error,
/// send the close code it maps to and drop the connection.
#[derive(Debug, Default)]
pub struct MessageAssembler {
    fragmented: Option<Box<Fragmented>>,
    /// Payload bytes of a frame still arriving that are already unmasked and,
    /// for text, checked.
    frame_progress: usize,
    /// UTF-8 state at the end of those bytes.
    frame_utf8: Utf8Validator,
}

/// A fragmented message in progress.
#[derive(Debug)]
struct Fragmented {
    kind: Kind,
    buffer: Vec<u8>,
    utf8: Utf8Validator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
    Compressed { text: bool },
}

impl Kind {
    fn of(opcode: Opcode, rsv1: bool) -> Self {
        match (opcode, rsv1) {
            (Opcode::Text, false) => Kind::Text,
            (_, false) => Kind::Binary,
            (opcode, true) => Kind::Compressed {
                text: opcode == Opcode::Text,
            },
        }
    }

    /// A message that arrived in one frame, borrowing it.
    fn borrowed(self, payload: &[u8]) -> Result<Message<'_>, ProtocolError> {
        Ok(match self {
            Kind::Text => Message::Text(Cow::Borrowed(validate_utf8(payload)?)),
            Kind::Binary => Message::Binary(Cow::Borrowed(payload)),
            Kind::Compressed { text } => Message::Compressed {
                text,
                payload: Cow::Borrowed(payload),
            },
        })
    }
}

impl MessageAssembler {
    /// An assembler between messages.
    pub const fn new() -> Self {
        MessageAssembler {
            fragmented: None,
            frame_progress: 0,
            frame_utf8: Utf8Validator::new(),
        }
    }

    /// Decodes the frame at the start of `buf`, the connection's unread bytes,
    /// unmasking it in place, and feeds it in.
    ///
    /// Like [`parse_frame`](crate::parse_frame), but it also refuses what the
    /// header alone shows to be wrong in context (a continuation with no
    /// message, a message over the limit), and it checks the text of a frame
    /// still arriving, so bad UTF-8 fails in the read that brings it
    /// (Autobahn 6.4.3-4) rather than when the frame ends.
    ///
    /// On error the assembler is reset and its buffer freed.
    ///
    /// A receive loop over one read:
    ///
    /// ```
    /// use ringhub_proto::{
    ///     Decoded, FrameHead, Limits, Message, MessageAssembler, Opcode, Role,
    ///     encode_masked_frame,
    /// };
    ///
    /// let mut read = Vec::new();
    /// encode_masked_frame(&mut read, FrameHead::new(Opcode::Text), b"Hello", [1, 2, 3, 4]);
    /// encode_masked_frame(&mut read, FrameHead::new(Opcode::Ping), b"", [5, 6, 7, 8]);
    /// read.extend_from_slice(&[0x81, 0x85]); // the next frame's first bytes
    ///
    /// let (mut assembler, limits) = (MessageAssembler::new(), Limits::default());
    /// let mut start = 0;
    /// loop {
    ///     match assembler.decode(&mut read[start..], Role::Server, &limits, false)? {
    ///         Decoded::Frame { message, consumed } => {
    ///             start += consumed;
    ///             match message {
    ///                 Some(Message::Text(text)) => assert_eq!(text, "Hello"),
    ///                 Some(Message::Ping(payload)) => assert!(payload.is_empty()),
    ///                 _ => {}
    ///             }
    ///         }
    ///         Decoded::Incomplete { needed } => {
    ///             // Keep `read[start..]` for the next read, with room for `needed` more.
    ///             assert_eq!((read.len() - start, needed), (2, 9));
    ///             break;
    ///         }
    ///     }
    /// }
    /// # Ok::<(), ringhub_proto::ProtocolError>(())
    /// ```
    pub fn decode<'a>(
        &mut self,
        buf: &'a mut [u8],
        role: Role,
        limits: &Limits,
        rsv1_allowed: bool,
    ) -> Result<Decoded<'a>, ProtocolError> {
        let result = self.decode_inner(buf, role, limits, rsv1_allowed);
        if result.is_err() {
            *self = MessageAssembler::new();
        }
        result
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
        self.fragmented.is_some()
    }

    /// Bytes of a fragmented message held so far.
    pub fn buffered(&self) -> usize {
        self.fragmented.as_ref().map_or(0, |f| f.buffer.len())
    }

    /// Memory held for reassembly: zero between messages.
    pub fn capacity(&self) -> usize {
        self.fragmented.as_ref().map_or(0, |f| f.buffer.capacity())
    }

    fn decode_inner<'a>(
        &mut self,
        buf: &'a mut [u8],
        role: Role,
        limits: &Limits,
        rsv1_allowed: bool,
    ) -> Result<Decoded<'a>, ProtocolError> {
        let header = match parse_header(buf, role, limits, rsv1_allowed)? {
            HeaderStatus::Complete(header) => header,
            HeaderStatus::Incomplete(needed) => return Ok(Decoded::Incomplete { needed }),
        };
        let head = header.head;
        self.check_header(head.opcode, head.rsv1, header.payload_len, limits)?;
        let frame_len = header.len + header.payload_len;
        if buf.len() < frame_len {
            self.advance_partial(&mut buf[header.len..], head, header.mask)?;
            return Ok(Decoded::Incomplete {
                needed: frame_len - buf.len(),
            });
        }
        let payload = &mut buf[header.len..frame_len];
        // Whatever a partial check looked at is checked again with the whole
        // frame, by `push`, which is what turns the bytes into a `&str`.
        let done = std::mem::take(&mut self.frame_progress).min(payload.len());
        self.frame_utf8 = Utf8Validator::new();
        if let Some(key) = header.mask {
            apply_mask_at(&mut payload[done..], key, done);
        }
        let frame = Frame {
            fin: head.fin,
            rsv1: head.rsv1,
            opcode: head.opcode,
            payload,
        };
        let message = self.push_inner(frame, limits)?;
        Ok(Decoded::Frame {
            message,
            consumed: frame_len,
        })
    }

    /// Unmasks and checks the newly arrived part of an incomplete text frame.
    fn advance_partial(
        &mut self,
        partial: &mut [u8],
        head: FrameHead,
        mask: Option<[u8; 4]>,
    ) -> Result<(), ProtocolError> {
        let start_state = match (head.opcode, &self.fragmented) {
            // Compressed text is checked once inflated, by the caller.
            (Opcode::Text, None) if !head.rsv1 => Utf8Validator::new(),
            (Opcode::Continuation, Some(f)) if f.kind == Kind::Text => f.utf8,
            // Only text has anything to check before the frame is whole.
            _ => return Ok(()),
        };
        if self.frame_progress == 0 {
            self.frame_utf8 = start_state;
        }
        let done = self.frame_progress.min(partial.len());
        let fresh = &mut partial[done..];
        if let Some(key) = mask {
            apply_mask_at(fresh, key, done);
        }
        self.frame_utf8.feed(fresh)?;
        self.frame_progress = partial.len();
        Ok(())
    }

    /// The rules a frame header alone can break, given the message state.
    fn check_header(
        &self,
        opcode: Opcode,
        rsv1: bool,
        payload_len: usize,
        limits: &Limits,
    ) -> Result<(), ProtocolError> {
        if rsv1 && (opcode.is_control() || opcode == Opcode::Continuation) {
            return Err(ProtocolError::CompressedNonFirstFrame);
        }
        let message_len = match (opcode, &self.fragmented) {
            (Opcode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (Opcode::Text | Opcode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            (Opcode::Continuation, Some(f)) => f.buffer.len().checked_add(payload_len),
            (Opcode::Text | Opcode::Binary, None) => Some(payload_len),
            (Opcode::Close | Opcode::Ping | Opcode::Pong, _) => return Ok(()),
        };
        match message_len {
            Some(len) if len <= limits.max_message => Ok(()),
            _ => Err(ProtocolError::MessageTooBig {
                max: limits.max_message,
            }),
        }
    }

    fn push_inner<'a>(
        &mut self,
        frame: Frame<'a>,
        limits: &Limits,
    ) -> Result<Option<Message<'a>>, ProtocolError> {
        self.check_header(frame.opcode, frame.rsv1, frame.payload.len(), limits)?;
        match frame.opcode {
            Opcode::Ping => Ok(Some(Message::Ping(frame.payload))),
            Opcode::Pong => Ok(Some(Message::Pong(frame.payload))),
            Opcode::Close => Ok(Some(Message::Close(parse_close_payload(frame.payload)?))),
            Opcode::Continuation => self.continue_message(frame, limits),
            Opcode::Text | Opcode::Binary => {
                let kind = Kind::of(frame.opcode, frame.rsv1);
                if frame.fin {
                    // The whole message is in this frame: hand it out in place.
                    return kind.borrowed(frame.payload).map(Some);
                }
                let mut fragmented = Box::new(Fragmented {
                    kind,
                    buffer: Vec::new(),
                    utf8: Utf8Validator::new(),
                });
                fragmented.append(frame.payload, limits)?;
                self.fragmented = Some(fragmented);
                Ok(None)
            }
        }
    }

    fn continue_message<'a>(
        &mut self,
        frame: Frame<'a>,
        limits: &Limits,
    ) -> Result<Option<Message<'a>>, ProtocolError> {
        let Some(fragmented) = self.fragmented.as_mut() else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        fragmented.append(frame.payload, limits)?;
        if !frame.fin {
            return Ok(None);
        }
        let Some(fragmented) = self.fragmented.take() else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        let Fragmented {
            kind,
            buffer,
            mut utf8,
        } = *fragmented;
        Ok(Some(match kind {
            Kind::Text => {
                utf8.finish()?;
                // Already checked piece by piece; std checks again because
                // only `unsafe` could skip it, and only fragmented text pays.
                let text = String::from_utf8(buffer).map_err(|_| ProtocolError::InvalidUtf8)?;
                Message::Text(Cow::Owned(text))
            }
            Kind::Binary => Message::Binary(Cow::Owned(buffer)),
            Kind::Compressed { text } => Message::Compressed {
                text,
                payload: Cow::Owned(buffer),
            },
        }))
    }
}

impl Fragmented {
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
        if self.kind == Kind::Text {
            self.utf8.feed(fragment)?;
        }
        if needed > self.buffer.capacity() {
            // Grow geometrically, but never past the limit.
            let target = needed
                .max(self.buffer.capacity().saturating_mul(2))
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

    const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

    fn masked(head: crate::FrameHead, payload: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        crate::encode_masked_frame(&mut wire, head, payload, KEY);
        wire
    }

    fn decode<'a>(
        a: &mut MessageAssembler,
        buf: &'a mut [u8],
        limits: &Limits,
    ) -> Result<Decoded<'a>, ProtocolError> {
        a.decode(buf, Role::Server, limits, false)
    }

    #[test]
    fn decode_fails_fast_inside_a_frame() {
        // Autobahn 6.4.3: one text frame, sent in chops; the second chop makes
        // it invalid (U+110000 is out of range). Refused in that read, with the
        // frame still incomplete.
        let mut text = "κόσμε".as_bytes().to_vec();
        text.extend_from_slice(b"\xF4\x90\x80\x80");
        text.extend_from_slice(b"edited");
        let wire = masked(crate::FrameHead::new(Opcode::Text), &text);
        let limits = Limits::default();
        let first_chop = 6 + "κόσμε".len();

        let mut a = MessageAssembler::new();
        let mut buf = wire[..first_chop].to_vec();
        assert!(matches!(
            decode(&mut a, &mut buf, &limits),
            Ok(Decoded::Incomplete { needed: 10 })
        ));
        // The engine keeps the (now partly unmasked) bytes and appends more.
        buf.extend_from_slice(&wire[first_chop..first_chop + 2]);
        let err = decode(&mut a, &mut buf, &limits).unwrap_err();
        assert_eq!(err, ProtocolError::InvalidUtf8);
        assert_eq!(err.close_code(), CloseCode::Invalid);

        // The same inside a continuation frame, with the code point split
        // between the fragments.
        let mut a = MessageAssembler::new();
        let start = crate::FrameHead {
            fin: false,
            ..crate::FrameHead::new(Opcode::Text)
        };
        let mut buf = masked(start, b"ok \xF4");
        assert!(matches!(
            decode(&mut a, &mut buf, &limits),
            Ok(Decoded::Frame { message: None, .. })
        ));
        let wire = masked(
            crate::FrameHead::new(Opcode::Continuation),
            b"\x90 and more",
        );
        let mut buf = wire[..6].to_vec();
        assert!(decode(&mut a, &mut buf, &limits).is_ok());
        buf.push(wire[6]);
        assert_eq!(
            decode(&mut a, &mut buf, &limits).unwrap_err(),
            ProtocolError::InvalidUtf8
        );
    }

    #[test]
    fn decode_leaves_compressed_text_to_the_inflater() {
        // Deflate output is not UTF-8; a compressed text frame still arriving
        // must not be checked as text.
        let head = crate::FrameHead {
            rsv1: true,
            ..crate::FrameHead::new(Opcode::Text)
        };
        let wire = masked(head, b"\xF2\x48\xCD\xC9\xC9\x07\x00");
        let mut a = MessageAssembler::new();
        let mut buf = wire[..8].to_vec();
        let limits = Limits::default();
        assert!(matches!(
            a.decode(&mut buf, Role::Server, &limits, true),
            Ok(Decoded::Incomplete { needed: 5 })
        ));
        buf.extend_from_slice(&wire[8..]);
        assert!(matches!(
            a.decode(&mut buf, Role::Server, &limits, true),
            Ok(Decoded::Frame {
                message: Some(Message::Compressed { text: true, .. }),
                ..
            })
        ));
    }

    #[test]
    fn decode_unmasks_a_frame_that_arrives_byte_by_byte_once() {
        let text = "a€b𝄞c, and some more text to cross a word or two";
        let wire = masked(crate::FrameHead::new(Opcode::Text), text.as_bytes());
        let limits = Limits::default();
        let mut a = MessageAssembler::new();
        let mut buf = Vec::new();
        for (i, &byte) in wire.iter().enumerate() {
            buf.push(byte);
            match decode(&mut a, &mut buf, &limits).unwrap() {
                Decoded::Incomplete { .. } => assert!(i + 1 < wire.len()),
                Decoded::Frame { message, consumed } => {
                    assert_eq!(consumed, wire.len());
                    assert_eq!(message, Some(Message::Text(Cow::Borrowed(text))));
                    return;
                }
            }
        }
        panic!("never completed");
    }

    #[test]
    fn decode_refuses_from_the_header_alone() {
        let limits = Limits {
            max_frame: 100,
            max_message: 150,
        };
        // A continuation with nothing to continue: refused before its payload.
        let mut a = MessageAssembler::new();
        let wire = masked(crate::FrameHead::new(Opcode::Continuation), &[0; 50]);
        let err = decode(&mut a, &mut wire[..6].to_vec(), &limits).unwrap_err();
        assert_eq!(err, ProtocolError::UnexpectedContinuation);

        // A fragment that would take the message past the limit.
        let start = crate::FrameHead {
            fin: false,
            ..crate::FrameHead::new(Opcode::Binary)
        };
        let mut first = masked(start, &[0; 100]);
        decode(&mut a, &mut first, &limits).unwrap();
        let wire = masked(crate::FrameHead::new(Opcode::Continuation), &[0; 51]);
        let err = decode(&mut a, &mut wire[..6].to_vec(), &limits).unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooBig { max: 150 });
        assert_eq!(a.capacity(), 0, "reset after the error");
    }

    #[test]
    fn idle_state_is_small() {
        assert_eq!(std::mem::size_of::<MessageAssembler>(), 24);
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
