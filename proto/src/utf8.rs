//! UTF-8 validation for text messages, whole or fragment by fragment.
//!
//! A fragmented text message is validated as its fragments arrive, so an
//! invalid byte sequence fails the connection as soon as it is seen (Autobahn
//! cases 6.x), not when the message ends. The bulk work is `simdutf8`'s; the
//! only state carried between fragments is a code point cut in two.

use simdutf8::compat::from_utf8;

use crate::error::ProtocolError;

/// Checks that `bytes` is UTF-8 and returns it as a `&str`.
pub fn validate_utf8(bytes: &[u8]) -> Result<&str, ProtocolError> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| ProtocolError::InvalidUtf8)
}

/// Validates a text message delivered in pieces.
///
/// Carries at most the 3 leading bytes of a code point that a fragment
/// boundary split. Reset it (or make a new one) for each message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    partial: [u8; 3],
    partial_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Utf8Validator {
            partial: [0; 3],
            partial_len: 0,
        }
    }

    /// Validates the next piece of the message. Fails as soon as the bytes
    /// seen so far cannot be the start of valid UTF-8.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ProtocolError> {
        if self.partial_len > 0 {
            bytes = self.complete_partial(bytes)?;
            if self.partial_len > 0 {
                return Ok(());
            }
        }
        match from_utf8(bytes) {
            Ok(_) => Ok(()),
            // A sequence that is wrong whatever follows it.
            Err(e) if e.error_len().is_some() => Err(ProtocolError::InvalidUtf8),
            // A valid start of a code point cut off by the end of the piece:
            // one to three bytes, by construction.
            Err(e) => self.keep_partial(&bytes[e.valid_up_to()..]),
        }
    }

    /// Checks the message ended on a code point boundary. The validator is
    /// ready for the next message after this, whatever it returns.
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        let complete = self.partial_len == 0;
        *self = Utf8Validator::new();
        if complete {
            Ok(())
        } else {
            Err(ProtocolError::InvalidUtf8)
        }
    }

    /// Feeds the start of `bytes` into the split code point; returns the rest.
    fn complete_partial<'a>(&mut self, bytes: &'a [u8]) -> Result<&'a [u8], ProtocolError> {
        let have = usize::from(self.partial_len);
        let mut code_point = [0u8; 4];
        code_point[..have].copy_from_slice(&self.partial[..have]);
        let take = (sequence_len(code_point[0]) - have).min(bytes.len());
        code_point[have..have + take].copy_from_slice(&bytes[..take]);
        match from_utf8(&code_point[..have + take]) {
            Ok(_) => {
                self.partial_len = 0;
                Ok(&bytes[take..])
            }
            Err(e) if e.error_len().is_some() => Err(ProtocolError::InvalidUtf8),
            // Still short: `bytes` was all consumed.
            Err(_) => {
                self.keep_partial(&code_point[..have + take])?;
                Ok(&[])
            }
        }
    }

    fn keep_partial(&mut self, tail: &[u8]) -> Result<(), ProtocolError> {
        let Some(partial) = self.partial.get_mut(..tail.len()) else {
            return Err(ProtocolError::InvalidUtf8);
        };
        partial.copy_from_slice(tail);
        // `tail` fits in 3 bytes, checked above.
        self.partial_len = tail.len() as u8;
        Ok(())
    }
}

/// The length of the sequence a lead byte starts. Only called on lead bytes
/// the validator already accepted as a valid start.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xF0.. => 4,
        0xE0.. => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed_all(pieces: &[&[u8]]) -> Result<(), ProtocolError> {
        let mut v = Utf8Validator::new();
        for piece in pieces {
            v.feed(piece)?;
        }
        v.finish()
    }

    #[test]
    fn one_shot() {
        assert_eq!(validate_utf8("κόσμε".as_bytes()), Ok("κόσμε"));
        assert_eq!(
            validate_utf8(b"\xCE\xBA\xE1\xBD"),
            Err(ProtocolError::InvalidUtf8)
        );
        assert_eq!(validate_utf8(b""), Ok(""));
    }

    #[test]
    fn code_points_split_at_every_position() {
        for s in ["é", "€", "𝄞", "a€b𝄞c"] {
            let bytes = s.as_bytes();
            for cut in 0..=bytes.len() {
                assert_eq!(
                    feed_all(&[&bytes[..cut], &bytes[cut..]]),
                    Ok(()),
                    "{s} at {cut}"
                );
            }
            // One byte at a time.
            let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(feed_all(&pieces), Ok(()));
        }
    }

    #[test]
    fn fails_fast_mid_message() {
        // Autobahn 6.4.1: "κόσμε" then 0xF4 0x90 (beyond U+10FFFF): wrong as
        // soon as 0x90 arrives, before the message ends.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed("κόσμε".as_bytes()), Ok(()));
        assert_eq!(v.feed(b"\xF4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(ProtocolError::InvalidUtf8));

        // Invalid in the bulk of a piece.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok \xFF and more"), Err(ProtocolError::InvalidUtf8));

        // A surrogate (U+D800) encoding is wrong from its second byte.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xED"), Ok(()));
        assert_eq!(v.feed(b"\xA0"), Err(ProtocolError::InvalidUtf8));

        // Overlong encodings are wrong from their first byte.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xC0"), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn a_message_cannot_end_inside_a_code_point() {
        assert_eq!(feed_all(&[b"ab\xE2\x82"]), Err(ProtocolError::InvalidUtf8));
        assert_eq!(
            feed_all(&[b"ab\xE2", b"\x82"]),
            Err(ProtocolError::InvalidUtf8)
        );
        // And the validator is clean for the next message.
        let mut v = Utf8Validator::new();
        v.feed(b"\xE2").unwrap();
        assert!(v.finish().is_err());
        assert_eq!(v, Utf8Validator::new());
    }

    #[test]
    fn empty_pieces_change_nothing() {
        assert_eq!(
            feed_all(&[b"", b"\xE2", b"", b"\x82", b"", b"\xAC", b""]),
            Ok(())
        );
    }

    proptest! {
        #[test]
        fn agrees_with_std_for_any_split(bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(0x80u8), Just(0xE2u8), Just(0xF0u8), Just(0x9Fu8)], 0..40),
                cuts in proptest::collection::vec(any::<usize>(), 0..5)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.extend([0, bytes.len()]);
            cuts.sort_unstable();
            let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            prop_assert_eq!(feed_all(&pieces).is_ok(), std::str::from_utf8(&bytes).is_ok());
        }

        #[test]
        fn fails_exactly_when_the_prefix_can_no_longer_be_valid(bytes in proptest::collection::vec(
                prop_oneof![0u8..0x80, 0x80u8..0xC0, 0xC2u8..0xF5, any::<u8>()], 0..24),
                piece in 1usize..5) {
            // After each piece, the validator has failed iff no continuation
            // could make the bytes so far valid, which is what std reports as
            // an error with a known length.
            let mut v = Utf8Validator::new();
            let mut failed = false;
            let mut end = 0;
            for chunk in bytes.chunks(piece) {
                end += chunk.len();
                if !failed {
                    failed = v.feed(chunk).is_err();
                }
                let doomed = matches!(std::str::from_utf8(&bytes[..end]), Err(e) if e.error_len().is_some());
                prop_assert_eq!(failed, doomed, "after {} bytes", end);
            }
        }

        #[test]
        fn fails_at_the_first_bad_byte(s in "\\PC{0,20}", junk in 0x80u8..=0xBF, cut in any::<usize>()) {
            // A lone continuation byte right after valid text fails in the
            // piece that carries it, even when more pieces would follow.
            let mut bytes = s.into_bytes();
            bytes.push(junk);
            let cut = cut % bytes.len();
            let mut v = Utf8Validator::new();
            prop_assert!(v.feed(&bytes[..cut]).is_ok());
            prop_assert!(v.feed(&bytes[cut..]).is_err());
        }
    }
}
