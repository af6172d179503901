//! A registered provided-buffer ring: the kernel picks a buffer for each
//! multishot receive completion, so an idle connection holds no read buffer.
//!
//! The ring of descriptors and the buffers are two anonymous mappings. Buffers
//! are handed back with [`BufRing::recycle`] and published to the kernel in one
//! `Release` store of the tail per loop turn ([`BufRing::commit`]).

use io_uring::types::BufRingEntry;
use io_uring::{IoUring, cqueue};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// An anonymous private mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes; with `prefault`, faulted in now, so the pool is a
    /// fixed cost of the process rather than one that appears as traffic
    /// arrives. Without it pages are backed as the kernel first fills them.
    fn new(len: usize, prefault: bool) -> io::Result<Mapping> {
        let populate = if prefault { libc::MAP_POPULATE } else { 0 };
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | populate,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One buffer group registered with a ring.
///
/// The owning ring must be dropped (or the group unregistered) before this
/// value, because the kernel writes into the buffers until then: keep the
/// `IoUring` field declared before the `BufRing` field.
#[derive(Debug)]
pub struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    entries: u16,
    buf_size: u32,
    /// Our tail: buffers handed back but not yet published.
    local_tail: u16,
    bgid: u16,
}

impl BufRing {
    /// Allocates `entries` buffers of `buf_size` bytes and registers them as
    /// group `bgid` of `ring`. `entries` must be a power of two (≤ 32768).
    /// `prefault` backs the buffers with memory now; a pool that may never
    /// see traffic (a spare lane's) passes false and costs nothing until used.
    pub fn register(
        ring: &IoUring,
        bgid: u16,
        entries: u16,
        buf_size: u32,
        prefault: bool,
    ) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 1 << 15 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring entries must be a power of two no larger than 32768",
            ));
        }
        let ring_len = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        let ring_map = Mapping::new(ring_len, true)?;
        let bufs = Mapping::new(usize::from(entries) * buf_size as usize, prefault)?;
        let mut this = BufRing {
            ring: ring_map,
            bufs,
            entries,
            buf_size,
            local_tail: 0,
            bgid,
        };
        for bid in 0..entries {
            this.recycle(bid);
        }
        this.commit();
        // SAFETY: the descriptor ring is page-aligned (mmap), `entries` long,
        // and lives in `this`, which the caller keeps until the ring is gone.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                this.ring.ptr.as_ptr() as u64,
                entries,
                bgid,
                0,
            )?;
        }
        Ok(this)
    }

    /// The buffer group id to put in receive SQEs.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The buffer id a completion carries, if the kernel picked one.
    pub fn buffer_id(flags: u32) -> Option<u16> {
        cqueue::buffer_select(flags)
    }

    /// The first `len` bytes of buffer `bid`, as filled by the kernel.
    ///
    /// Only valid between the completion naming `bid` and its [`recycle`]:
    /// the caller must not hold the slice across a recycle.
    ///
    /// [`recycle`]: BufRing::recycle
    pub fn data(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let bid = usize::from(bid % self.entries);
        let len = len.min(self.buf_size as usize);
        let start = bid * self.buf_size as usize;
        // SAFETY: `start + len` is within the buffer mapping (bid < entries,
        // len ≤ buf_size). The kernel handed this buffer to us with the
        // completion and does not touch it again until it is recycled, and
        // `&mut self` keeps this the only live view.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.ptr.as_ptr().add(start), len) }
    }

    /// Hands buffer `bid` back; the kernel sees it after [`BufRing::commit`].
    pub fn recycle(&mut self, bid: u16) {
        let bid = bid % self.entries;
        let mask = self.entries - 1;
        let slot = usize::from(self.local_tail & mask);
        let addr = self.bufs.ptr.as_ptr() as u64 + u64::from(bid) * u64::from(self.buf_size);
        // SAFETY: `slot < entries`, so the entry is inside the descriptor
        // mapping; the kernel only reads entries between its head and the
        // published tail, and this slot is past the published tail.
        unsafe {
            let entry = &mut *self.ring.ptr.as_ptr().cast::<BufRingEntry>().add(slot);
            entry.set_addr(addr);
            entry.set_len(self.buf_size);
            entry.set_bid(bid);
        }
        self.local_tail = self.local_tail.wrapping_add(1);
    }

    /// Publishes every recycled buffer to the kernel in one store.
    pub fn commit(&mut self) {
        let base = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY: the tail field overlays the `resv` field of entry 0, which
        // is valid, aligned and shared with the kernel only through atomics.
        unsafe {
            let tail = BufRingEntry::tail(base).cast_mut().cast::<AtomicU16>();
            (*tail).store(self.local_tail, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::build_ring;

    #[test]
    fn rejects_sizes_the_kernel_would_refuse() {
        let (ring, _) = build_ring(8).expect("ring");
        assert!(BufRing::register(&ring, 0, 3, 64, true).is_err());
        assert!(BufRing::register(&ring, 0, 16, 64, true).is_ok());
    }

    #[test]
    fn recycled_buffers_are_published_in_order() {
        let (ring, _) = build_ring(8).expect("ring");
        let mut pool = BufRing::register(&ring, 1, 4, 32, false).expect("register");
        pool.data(2, 5).copy_from_slice(b"hello");
        assert_eq!(&pool.data(2, 5)[..], b"hello");
        assert_eq!(pool.data(2, 1000).len(), 32, "clamped to the buffer size");
        pool.recycle(2);
        pool.commit();
        assert_eq!(pool.local_tail, 5);
    }
}
