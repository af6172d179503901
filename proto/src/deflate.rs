//! permessage-deflate message compression (RFC 7692 §7.2) over `flate2`'s
//! raw deflate (zlib-rs backend).
//!
//! With no context takeover (the default) every message starts from an empty
//! window, so one [`Compressors`] and one [`Inflater`] per thread serve every
//! connection: an idle connection holds no zlib state, and a broadcast is
//! compressed once and the same bytes go to every subscriber.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::close::CloseCode;
use crate::extension::DeflateParams;

/// The empty stored block a sync flush ends with. Senders strip it, receivers
/// put it back (RFC 7692 §7.2.1, §7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// How messages are compressed on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionPolicy {
    /// Messages shorter than this are sent as they are. Every compressed
    /// message pays a fixed cost besides its bytes: without context takeover
    /// the compressor is reset, and zlib-rs clears its 128 KiB hash table on
    /// reset (a few µs; see the deflate bench at 256 B), which a small frame
    /// does not earn back.
    pub min_size: usize,
    /// zlib level 0..=9. Level 1 already takes JSON to a quarter of its size
    /// at 4 KiB (see the deflate bench), at a fraction of level 6's CPU.
    pub level: u32,
}

impl Default for CompressionPolicy {
    fn default() -> Self {
        Self {
            min_size: 256,
            level: 1,
        }
    }
}

/// A failed compression; zlib only fails on a broken internal state.
#[derive(Debug, thiserror::Error)]
#[error("deflate failed: {0}")]
pub struct DeflateError(#[from] flate2::CompressError);

impl DeflateError {
    /// The close code to end the connection with.
    pub fn close_code(&self) -> CloseCode {
        CloseCode::Internal
    }
}

/// One raw-deflate compressor with a fixed window.
///
/// Memory: a 15-bit compressor holds about 325 KiB resident once it has
/// compressed a large message (zlib-rs window, hash chains and pending
/// buffer; measured by `cargo bench -p ringhub-proto --bench deflate`), which
/// is why per-connection compressors are only made for context takeover.
#[derive(Debug)]
pub struct Deflater {
    compress: Compress,
    policy: CompressionPolicy,
    context_takeover: bool,
}

impl Deflater {
    /// A compressor for messages of one connection (`context_takeover`) or of
    /// any connection that agreed on `window_bits` (no context takeover).
    ///
    /// `window_bits` outside 9..=15 is clamped into it.
    pub fn new(policy: CompressionPolicy, window_bits: u8, context_takeover: bool) -> Self {
        let level = Compression::new(policy.level.min(9));
        Self {
            compress: Compress::new_with_window_bits(level, false, window_bits.clamp(9, 15)),
            policy,
            context_takeover,
        }
    }

    /// Compresses one whole message, appending the payload of the compressed
    /// frame (RSV1 set) to `out`.
    ///
    /// Returns `Ok(None)` and leaves `out` as it was when the message is
    /// under the size threshold or would not shrink: send it uncompressed
    /// (RSV1 clear). Otherwise `Ok(Some(len))`, the compressed length.
    pub fn compress(
        &mut self,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, DeflateError> {
        if message.len() < self.policy.min_size {
            return Ok(None);
        }
        let start = out.len();
        let result = self.deflate_sync(message, out);
        let len = out.len() - start;
        let useful = result.is_ok() && len >= SYNC_TAIL.len() && out[out.len() - 4..] == SYNC_TAIL;
        if !useful || len - SYNC_TAIL.len() >= message.len() {
            out.truncate(start);
            // The peer never sees this output, so the window we just built
            // must go; a reset is always allowed for the sender.
            self.compress.reset();
            return result.map(|()| None);
        }
        out.truncate(out.len() - SYNC_TAIL.len());
        if !self.context_takeover {
            self.compress.reset();
        }
        Ok(Some(out.len() - start))
    }

    fn deflate_sync(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<(), DeflateError> {
        let start_in = self.compress.total_in();
        loop {
            // Incompressible input grows by 5 bytes per 16 KiB stored block.
            let consumed = (self.compress.total_in() - start_in) as usize;
            let remaining = message.len() - consumed;
            out.reserve(remaining + remaining / 1024 + 64);
            self.compress
                .compress_vec(&message[consumed..], out, FlushCompress::Sync)?;
            let consumed = (self.compress.total_in() - start_in) as usize;
            // The flush is complete once zlib stopped with room to spare.
            if consumed == message.len() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// The per-thread compressors shared by every connection without server
/// context takeover: one per window size clients asked for, made on first
/// use.
#[derive(Debug)]
pub struct Compressors {
    policy: CompressionPolicy,
    by_window: [Option<Deflater>; 7],
}

impl Compressors {
    /// No compressor is allocated until a message needs one.
    pub fn new(policy: CompressionPolicy) -> Self {
        Self {
            policy,
            by_window: Default::default(),
        }
    }

    /// Compresses a message for connections that agreed on `params`; see
    /// [`Deflater::compress`]. Messages with the same `params.server_max_window_bits`
    /// compress to the same bytes, so a broadcast is compressed once.
    pub fn compress(
        &mut self,
        params: &DeflateParams,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, DeflateError> {
        let bits = params.server_max_window_bits.clamp(9, 15);
        let policy = self.policy;
        self.by_window[usize::from(bits - 9)]
            .get_or_insert_with(|| Deflater::new(policy, bits, false))
            .compress(message, out)
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// The message inflates past the configured limit (a "zip bomb" ends here,
    /// having allocated at most the limit).
    #[error("compressed message inflates to more than {limit} bytes")]
    TooBig {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The payload is not valid deflate data.
    #[error("compressed message is not valid deflate data")]
    Corrupt,
}

impl InflateError {
    /// The close code to end the connection with: 1009 for too big; 1007 for
    /// corrupt data, since the payload is inconsistent with the RSV1 bit that
    /// says it is compressed, the same class of fault as bad UTF-8 in text.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::TooBig { .. } => CloseCode::TooBig,
            Self::Corrupt => CloseCode::Invalid,
        }
    }
}

/// A raw-deflate decompressor: one per thread for clients without context
/// takeover, one per connection otherwise (about 46 KiB resident once used:
/// the 32 KiB window plus zlib's state; measured by the deflate bench).
#[derive(Debug)]
pub struct Inflater {
    decompress: Decompress,
    context_takeover: bool,
}

/// Output room is zeroed before zlib writes into it, so it is handed out as
/// needed: first a guess from the input (JSON inflates about fourfold), then
/// doubling up to the maximum step.
const MIN_INFLATE_STEP: usize = 256;
const MAX_INFLATE_STEP: usize = 64 * 1024;

impl Inflater {
    /// A decompressor that keeps its window between messages only if
    /// `context_takeover` (the client did not agree to
    /// `client_no_context_takeover`).
    pub fn new(context_takeover: bool) -> Self {
        Self {
            decompress: Decompress::new(false),
            context_takeover,
        }
    }

    /// Inflates one whole compressed message (the payloads of all its
    /// fragments, joined), appending at most `limit` bytes to `out`.
    ///
    /// A message that would inflate past `limit` stops there with
    /// [`InflateError::TooBig`]; `out` then holds at most `limit` extra bytes.
    /// On error the connection must be closed; the inflater is reset, ready
    /// for another connection's message.
    pub fn inflate(
        &mut self,
        compressed: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        let start = out.len();
        let result = self.inflate_into(compressed, out, start, limit);
        if result.is_err() || !self.context_takeover {
            self.decompress.reset(false);
        }
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn inflate_into(
        &mut self,
        compressed: &[u8],
        out: &mut Vec<u8>,
        start: usize,
        limit: usize,
    ) -> Result<(), InflateError> {
        let mut step = compressed
            .len()
            .saturating_mul(4)
            .clamp(MIN_INFLATE_STEP, MAX_INFLATE_STEP);
        for (input, flush) in [
            (compressed, FlushDecompress::None),
            (&SYNC_TAIL[..], FlushDecompress::Sync),
        ] {
            let mut consumed = 0;
            loop {
                let produced = out.len() - start;
                // One byte of room past the limit tells "exactly at the
                // limit" from "over it".
                let room = (limit - produced).saturating_add(1).min(step);
                let filled = out.len();
                reserve_capped(
                    out,
                    filled + room,
                    start.saturating_add(limit).saturating_add(1),
                );
                out.resize(filled + room, 0);
                let before_in = self.decompress.total_in();
                let before_out = self.decompress.total_out();
                let status =
                    self.decompress
                        .decompress(&input[consumed..], &mut out[filled..], flush);
                let read = (self.decompress.total_in() - before_in) as usize;
                let wrote = (self.decompress.total_out() - before_out) as usize;
                out.truncate(filled + wrote);
                consumed += read;
                if out.len() - start > limit {
                    return Err(InflateError::TooBig { limit });
                }
                match status {
                    // A sender may end with a BFINAL block (RFC 7692 §7.2.3.4);
                    // whatever follows, including our tail, is padding, and
                    // its next message starts a new stream.
                    Ok(Status::StreamEnd) => {
                        self.decompress.reset(false);
                        return Ok(());
                    }
                    Ok(Status::Ok | Status::BufError) => {
                        let output_full = wrote == room;
                        if consumed == input.len() && !output_full {
                            break;
                        }
                        if output_full {
                            step = (step * 2).min(MAX_INFLATE_STEP);
                        }
                        if read == 0 && wrote == 0 {
                            // No progress with input and room left: the data
                            // ends mid-block.
                            return Err(InflateError::Corrupt);
                        }
                    }
                    Err(_) => return Err(InflateError::Corrupt),
                }
            }
        }
        Ok(())
    }
}

/// Grows `out` to hold `needed` bytes, doubling as `Vec` would but never
/// past `cap`, so a bomb cannot make the buffer larger than the limit.
fn reserve_capped(out: &mut Vec<u8>, needed: usize, cap: usize) {
    if out.capacity() < needed {
        let target = out
            .capacity()
            .saturating_mul(2)
            .clamp(needed, cap.max(needed));
        out.reserve_exact(target - out.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_shrinks_repetitive_json() {
        let message = br#"{"type":"message","from":"alice","data":{"n":1}}"#.repeat(20);
        let mut deflater = Deflater::new(CompressionPolicy::default(), 15, false);
        let mut compressed = Vec::new();
        let len = deflater
            .compress(&message, &mut compressed)
            .expect("deflate");
        assert_eq!(len, Some(compressed.len()));
        assert!(compressed.len() < message.len() / 4);
        assert_ne!(compressed[compressed.len() - 4..], SYNC_TAIL);
        let mut inflated = Vec::new();
        Inflater::new(false)
            .inflate(&compressed, &mut inflated, message.len())
            .expect("inflate");
        assert_eq!(inflated, message);
    }

    #[test]
    fn small_or_incompressible_messages_are_left_alone() {
        let mut deflater = Deflater::new(CompressionPolicy::default(), 15, false);
        let mut out = vec![7];
        assert_eq!(
            deflater.compress(b"short", &mut out).expect("deflate"),
            None
        );
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                // xorshift64: incompressible enough for deflate.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert_eq!(deflater.compress(&noise, &mut out).expect("deflate"), None);
        assert_eq!(out, [7], "output untouched");
    }
}
