//! A connection's outgoing bytes: a bounded queue of shared `Bytes` chunks,
//! sent as one `sendmsg` with an iovec per chunk.
//!
//! Chunks stay in the queue while the kernel reads them and are released only
//! when the send completes, so the iovecs handed to the kernel stay valid.
//! An empty queue owns no allocation: its buffer goes back to a per-core
//! [`Spares`] pool, so an idle connection costs nothing here and a busy core
//! does not allocate a queue per message.

use bytes::{Buf, Bytes};
use std::collections::VecDeque;

/// The most chunks one `sendmsg` carries (Linux's UIO_MAXIOV is 1024).
pub const MAX_IOVECS: usize = 64;

/// Empty queue buffers kept for reuse by one core.
#[derive(Debug, Default)]
pub struct Spares(Vec<VecDeque<Bytes>>);

/// Spare buffers a core keeps; more are freed.
const MAX_SPARES: usize = 1024;

impl Spares {
    fn take(&mut self) -> VecDeque<Bytes> {
        self.0.pop().unwrap_or_default()
    }

    fn give(&mut self, mut q: VecDeque<Bytes>) {
        q.clear();
        if q.capacity() > 0 && q.capacity() <= 64 && self.0.len() < MAX_SPARES {
            self.0.push(q);
        }
    }
}

/// Adding a chunk would pass the queue's byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// Queued outgoing chunks and their total length.
#[derive(Debug, Default)]
pub struct SendQueue {
    chunks: VecDeque<Bytes>,
    queued: usize,
}

/// Whether `len` more bytes on top of `queued` pass `limit`. An empty
/// queue always takes one message, however large: its reader is not slow,
/// the message is big (Autobahn 9.x echoes 16 MiB).
pub fn overflows(queued: usize, len: usize, limit: usize) -> bool {
    queued > 0 && queued + len > limit
}

impl SendQueue {
    /// Bytes waiting to be sent (including those in flight).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Appends `chunk` unless the queue would then hold more than `limit` bytes.
    pub fn push(
        &mut self,
        chunk: Bytes,
        limit: usize,
        spares: &mut Spares,
    ) -> Result<(), Overflow> {
        if overflows(self.queued, chunk.len(), limit) {
            return Err(Overflow);
        }
        self.push_unbounded(chunk, spares);
        Ok(())
    }

    /// Appends `chunk` whatever the limit (close frames must always go out).
    pub fn push_unbounded(&mut self, chunk: Bytes, spares: &mut Spares) {
        if chunk.is_empty() {
            return;
        }
        if self.chunks.capacity() == 0 {
            self.chunks = spares.take();
        }
        self.queued += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Points `iovs` at the first chunks; returns how many were filled.
    pub fn fill_iovecs(&self, iovs: &mut [libc::iovec]) -> usize {
        let mut n = 0;
        for (iov, chunk) in iovs.iter_mut().zip(self.chunks.iter()) {
            iov.iov_base = chunk.as_ptr().cast_mut().cast();
            iov.iov_len = chunk.len();
            n += 1;
        }
        n
    }

    /// Drops `sent` bytes from the front, after the kernel reported them sent.
    pub fn consume(&mut self, mut sent: usize, spares: &mut Spares) {
        sent = sent.min(self.queued);
        self.queued -= sent;
        while sent > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= sent {
                sent -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(sent);
                sent = 0;
            }
        }
        if self.chunks.is_empty() {
            // An idle connection keeps no queue allocation.
            spares.give(std::mem::take(&mut self.chunks));
        }
    }

    /// The only queued chunk, when exactly one waits (sent without iovecs).
    pub fn single(&self) -> Option<&Bytes> {
        match self.chunks.len() {
            1 => self.chunks.front(),
            _ => None,
        }
    }

    /// Capacity of the chunk queue (zero when idle).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.chunks.capacity()
    }

    /// Releases every chunk (the connection is gone; nothing is in flight).
    pub fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.queued = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_iov() -> libc::iovec {
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }
    }

    #[test]
    fn push_respects_the_byte_limit() {
        let sp = &mut Spares::default();
        let mut q = SendQueue::default();
        q.push(Bytes::from_static(b"abcd"), 6, sp).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"efg"), 6, sp), Err(Overflow));
        q.push(Bytes::from_static(b"ef"), 6, sp).unwrap();
        q.push_unbounded(Bytes::from_static(b"close"), sp);
        assert_eq!(q.queued(), 11);
    }

    #[test]
    fn an_empty_queue_takes_one_chunk_larger_than_the_limit() {
        let sp = &mut Spares::default();
        let mut q = SendQueue::default();
        q.push(Bytes::from(vec![0u8; 100]), 6, sp).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"a"), 6, sp), Err(Overflow));
        q.consume(100, sp);
        q.push(Bytes::from(vec![0u8; 100]), 6, sp).unwrap();
    }

    #[test]
    fn an_emptied_queue_lends_its_buffer_to_the_next_one() {
        let sp = &mut Spares::default();
        let mut a = SendQueue::default();
        a.push(Bytes::from_static(b"x"), 10, sp).unwrap();
        a.consume(1, sp);
        assert_eq!(a.capacity(), 0);
        assert_eq!(sp.0.len(), 1);
        let mut b = SendQueue::default();
        b.push(Bytes::from_static(b"y"), 10, sp).unwrap();
        assert!(sp.0.is_empty(), "reused, not allocated");
        assert!(b.capacity() > 0);
    }

    #[test]
    fn partial_sends_resume_mid_chunk() {
        let sp = &mut Spares::default();
        let mut q = SendQueue::default();
        for c in [&b"hello"[..], b" ", b"world"] {
            q.push(Bytes::copy_from_slice(c), 100, sp).unwrap();
        }
        assert!(q.single().is_none());
        q.consume(3, sp);
        let mut iovs = [empty_iov(); 4];
        let n = q.fill_iovecs(&mut iovs);
        assert_eq!(n, 3);
        let mut out = Vec::new();
        for iov in &iovs[..n] {
            // SAFETY: the iovecs point into chunks `q` still owns.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(iov.iov_base.cast::<u8>(), iov.iov_len)
            });
        }
        assert_eq!(out, b"lo world");
        q.consume(8, sp);
        assert!(q.is_empty());
        assert_eq!(q.capacity(), 0, "the drained queue released its buffer");
        assert_eq!(q.fill_iovecs(&mut iovs), 0);
    }

    #[test]
    fn shared_chunks_are_not_copied() {
        let sp = &mut Spares::default();
        let frame = Bytes::from(vec![1u8; 64]);
        let mut a = SendQueue::default();
        let mut b = SendQueue::default();
        a.push(frame.clone(), 1024, sp).unwrap();
        b.push(frame.clone(), 1024, sp).unwrap();
        let mut ia = [empty_iov(); 1];
        let mut ib = [empty_iov(); 1];
        a.fill_iovecs(&mut ia);
        b.fill_iovecs(&mut ib);
        assert_eq!(ia[0].iov_base, ib[0].iov_base);
    }
}
