//! Cross-core mailboxes: a bounded queue per core, and a way to wake it.
//!
//! The queue is std's bounded channel (a lock-free array queue), so a sender
//! never takes a lock. A core posting to another wakes it with an
//! `IORING_OP_MSG_RING` on its own ring, which costs no extra syscall (it goes
//! out with the sender's next submit); any other thread writes the target's
//! eventfd, on which the target keeps a read armed. A `notified` flag skips
//! the wake while one is already on its way, so a burst costs one.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// Wakes one core's ring from any thread.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    notified: AtomicBool,
    /// The target core's main ring, for MSG_RING wakes (-1: not running).
    ring_fd: AtomicI32,
}

impl Waker {
    /// A non-blocking eventfd.
    pub fn new() -> io::Result<Waker> {
        // SAFETY: plain eventfd(2) call; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker {
            // SAFETY: `raw` is a fresh descriptor nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            notified: AtomicBool::new(false),
            ring_fd: AtomicI32::new(-1),
        })
    }

    /// Publishes (or, with None, withdraws) the core's main ring for
    /// MSG_RING wakes.
    pub fn set_ring_fd(&self, fd: Option<RawFd>) {
        self.ring_fd.store(fd.unwrap_or(-1), Ordering::Release);
    }

    /// Makes the core's pending eventfd read complete, unless a wake is
    /// already on its way.
    pub fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.write_eventfd();
        }
    }

    /// For a sender that has a ring: claims the wake and returns the target
    /// ring to send a MSG_RING to, or None when no wake is needed (or it was
    /// delivered through the eventfd because the target has no ring yet).
    pub fn wake_via_ring(&self) -> Option<RawFd> {
        if self.notified.swap(true, Ordering::AcqRel) {
            return None;
        }
        match self.ring_fd.load(Ordering::Acquire) {
            -1 => {
                self.write_eventfd();
                None
            }
            fd => Some(fd),
        }
    }

    fn write_eventfd(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A failure
        // (counter overflow) still leaves the eventfd readable.
        unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Called by the woken core before it drains, so a post racing with the
    /// drain wakes it again rather than being missed.
    pub fn clear(&self) {
        self.notified.store(false, Ordering::Release);
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Why a post was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The target core's mailbox is full: it is falling behind.
    #[error("the target core's mailbox is full")]
    Full,
    /// The target core has stopped.
    #[error("the target core has stopped")]
    Closed,
    /// No core with that id.
    #[error("no such core")]
    NoSuchCore,
}

/// The sending side of one core's mailbox, cloned to every core.
#[derive(Debug)]
pub struct Outbox<T> {
    tx: SyncSender<T>,
    waker: Arc<Waker>,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Outbox {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl<T> Outbox<T> {
    /// Queues `msg` and wakes the target core.
    pub fn post(&self, msg: T) -> Result<(), PostError> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                // Make sure the consumer is awake to make room.
                self.waker.wake();
                Err(PostError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(PostError::Closed),
        }
    }
}

impl<T> Outbox<T> {
    /// Queues `msg` for a core posting from its own loop: returns the ring
    /// to wake with a MSG_RING, if a wake is needed and the target runs one.
    pub fn post_from_core(&self, msg: T) -> Result<Option<RawFd>, PostError> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(self.waker.wake_via_ring()),
            Err(TrySendError::Full(_)) => {
                self.waker.wake();
                Err(PostError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(PostError::Closed),
        }
    }
}

/// The receiving side, owned by the core.
#[derive(Debug)]
pub struct Inbox<T> {
    rx: Receiver<T>,
    waker: Arc<Waker>,
}

impl<T> Inbox<T> {
    /// The waker whose eventfd the core reads.
    pub fn waker(&self) -> &Arc<Waker> {
        &self.waker
    }

    /// The next queued message, if any.
    pub fn try_recv(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

/// A mailbox holding at most `capacity` messages.
pub fn mailbox<T>(capacity: usize, waker: Arc<Waker>) -> (Outbox<T>, Inbox<T>) {
    let (tx, rx) = sync_channel(capacity);
    (
        Outbox {
            tx,
            waker: waker.clone(),
        },
        Inbox { rx, waker },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(w: &Waker) -> bool {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd.
        let n = unsafe { libc::read(w.as_raw_fd(), (&raw mut v).cast(), 8) };
        n == 8
    }

    #[test]
    fn a_burst_of_posts_wakes_once_and_a_later_post_wakes_again() {
        let waker = Arc::new(Waker::new().unwrap());
        let (tx, rx) = mailbox::<u32>(4, waker.clone());
        tx.post(1).unwrap();
        tx.post(2).unwrap();
        assert!(readable(&waker));
        assert!(!readable(&waker), "second post did not write again");
        waker.clear();
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        tx.post(3).unwrap();
        assert!(readable(&waker));
    }

    #[test]
    fn a_core_sender_gets_the_ring_to_wake_once_per_burst() {
        let waker = Arc::new(Waker::new().unwrap());
        let (tx, rx) = mailbox::<u32>(4, waker.clone());
        // No ring published yet: the eventfd carries the wake.
        assert_eq!(tx.post_from_core(1), Ok(None));
        assert!(readable(&waker));
        waker.clear();
        waker.set_ring_fd(Some(42));
        assert_eq!(tx.post_from_core(2), Ok(Some(42)));
        assert_eq!(tx.post_from_core(3), Ok(None), "a wake is on its way");
        assert!(!readable(&waker));
        waker.clear();
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(tx.post_from_core(4), Ok(Some(42)));
    }

    #[test]
    fn a_full_mailbox_refuses_instead_of_blocking() {
        let waker = Arc::new(Waker::new().unwrap());
        let (tx, rx) = mailbox::<u32>(2, waker);
        tx.post(1).unwrap();
        tx.post(2).unwrap();
        assert_eq!(tx.post(3), Err(PostError::Full));
        drop(rx);
        assert_eq!(tx.post(4), Err(PostError::Closed));
    }

    #[test]
    fn posts_cross_threads() {
        let waker = Arc::new(Waker::new().unwrap());
        let (tx, rx) = mailbox::<u32>(1024, waker);
        let t = std::thread::spawn(move || {
            for i in 0..1000 {
                while tx.post(i).is_err() {
                    std::thread::yield_now();
                }
            }
        });
        let mut got = 0;
        while got < 1000 {
            if let Some(v) = rx.try_recv() {
                assert_eq!(v, got);
                got += 1;
            }
        }
        t.join().unwrap();
    }
}
