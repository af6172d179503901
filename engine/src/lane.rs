//! A lane: one ring with its own fixed file table and receive buffer pool.
//!
//! A fixed file table cannot be larger than `RLIMIT_NOFILE`, so a core that
//! must hold more connections than that runs several lanes on its thread.
//! Lane 0 is the ring the thread waits on; every other lane signals an
//! eventfd when it posts completions, and lane 0 keeps a multishot poll on
//! that eventfd, so one wait covers every lane.

use io_uring::IoUring;
use io_uring::squeue;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::accept::Acceptor;
use crate::bufring::BufRing;
use crate::error::EngineError;
use crate::ring::{build_extra_ring, build_ring};

/// Buffer group id used in every lane (each ring has its own namespace).
const BGID: u16 = 0;

pub(crate) struct Lane {
    // Field order matters: the ring is dropped before the buffers the kernel
    // may still write into.
    pub ring: IoUring,
    pub bufs: BufRing,
    /// The accepts armed on this lane, with the addresses they write.
    pub accept: Acceptor,
    /// Set on extra lanes: signalled when the lane posts a completion.
    pub eventfd: Option<OwnedFd>,
    pub table_size: u32,
    /// Connections whose socket is in this lane's table.
    pub conns: u32,
}

impl Lane {
    /// Builds lane `index` with a table of `table_size` direct descriptors.
    pub fn new(
        index: usize,
        entries: u32,
        table_size: u32,
        buffers: u16,
        buffer_size: u32,
    ) -> Result<Lane, EngineError> {
        let (ring, _mode) = if index == 0 {
            build_ring(entries)?
        } else {
            build_extra_ring(entries)?
        };
        ring.submitter()
            .register_files_sparse(table_size)
            .map_err(|source| EngineError::Io {
                what: "registering a fixed file table (larger than RLIMIT_NOFILE?)",
                source,
            })?;
        // The first lane's pool is faulted in at start; the others, which
        // see traffic only once earlier tables fill, are backed on first use
        // (a server sized for a million connections would otherwise hold
        // 60-odd pools of buffers from the start).
        let bufs = BufRing::register(&ring, BGID, buffers, buffer_size, index == 0)
            .map_err(EngineError::io("registering the provided-buffer ring"))?;
        let eventfd = if index == 0 {
            None
        } else {
            // SAFETY: plain eventfd(2) call; the result is checked.
            let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if raw < 0 {
                return Err(EngineError::io("creating a lane eventfd")(
                    io::Error::last_os_error(),
                ));
            }
            // SAFETY: `raw` is a fresh descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            ring.submitter()
                .register_eventfd(fd.as_raw_fd())
                .map_err(EngineError::io("registering a lane eventfd"))?;
            Some(fd)
        };
        Ok(Lane {
            ring,
            bufs,
            eventfd,
            table_size,
            conns: 0,
            accept: Acceptor::default(),
        })
    }

    /// The lane's eventfd, for lane 0 to poll.
    pub fn eventfd(&self) -> Option<RawFd> {
        self.eventfd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Empties the eventfd counter after its poll fired.
    pub fn reset_eventfd(&self) {
        if let Some(fd) = &self.eventfd {
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from a non-blocking
            // eventfd; EAGAIN (already empty) is fine.
            unsafe { libc::read(fd.as_raw_fd(), (&raw mut v).cast(), 8) };
        }
    }

    /// The buffer group receives on this lane use.
    pub fn bgid(&self) -> u16 {
        self.bufs.bgid()
    }

    /// Table slots no connection holds (accepts in flight will take some).
    pub fn room(&self) -> u32 {
        self.table_size.saturating_sub(self.conns)
    }

    /// Pushes `pending` into the submission queue, entering the kernel when
    /// it fills, and waits for `wait` completions once all are in.
    /// Returns how many entries were pushed (the rest stay for next turn,
    /// after EBUSY: the completion queue must be reaped first).
    pub fn submit(&mut self, pending: &[squeue::Entry], wait: usize) -> Result<usize, EngineError> {
        let mut pushed = 0;
        loop {
            {
                let mut sq = self.ring.submission();
                while pushed < pending.len() {
                    // SAFETY: every entry points only at memory that outlives
                    // its completion: boxed send headers or queued chunks
                    // held by the connection, the core's boxed timespec and
                    // wake buffer, or nothing at all.
                    if unsafe { sq.push(&pending[pushed]) }.is_err() {
                        break;
                    }
                    pushed += 1;
                }
            }
            let all_in = pushed == pending.len();
            let want = if all_in { wait } else { 0 };
            if want == 0 && self.ring.submission().is_empty() {
                return Ok(pushed);
            }
            match self.ring.submitter().submit_and_wait(want) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(pushed),
                Err(source) => {
                    return Err(EngineError::Io {
                        what: "io_uring_enter",
                        source,
                    });
                }
            }
            if all_in {
                return Ok(pushed);
            }
        }
    }
}
