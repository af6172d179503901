//! The io_uring reactor of ringhub: one ring and one thread per core,
//! `SO_REUSEPORT` listeners, the connection slab, provided-buffer rings, send
//! queues, timers, cross-core mailboxes and graceful shutdown.
//!
//! Not built yet: this crate is filled by issue #3. It knows sockets and
//! bytes, not chat.
#![forbid(unsafe_code)]
