//! Cross-core mailboxes: a bounded queue per core plus an eventfd the core's
//! ring keeps a read armed on.
//!
//! The queue is std's bounded channel (a lock-free array queue), so a sender
//! never takes a lock. A `notified` flag skips the eventfd write while a wake
//! is already pending, so a burst of posts costs one syscall.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// Wakes one core's ring from any thread.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
    notified: AtomicBool,
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
        })
    }

    /// Makes the core's pending eventfd read complete, unless a wake is
    /// already on its way.
    pub fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd. A failure
            // (counter overflow) still leaves the eventfd readable.
            unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
        }
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
