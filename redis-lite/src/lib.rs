//! A sans-IO, pipelined RESP client for Redis and Redis Cluster, with sharded
//! pub/sub, built on the `redis-protocol` crate.
//!
//! The core, [`Client`], has no sockets and no clock: it is told what
//! happened (bytes arrived, a socket connected or died, time passed) and
//! says what to do (open or close a socket, write these bytes, wake me at
//! this instant) and what the user should learn (replies, messages, lost
//! subscriptions). [`BlockingClient`] drives it over std sockets for tools
//! and tests; the ringhub server drives it the same way on a reactor core,
//! stepping it at the end of each loop turn with socket readiness from the
//! core's io_uring ring.
//!
//! # What it does
//!
//! - Pipelining: any number of requests in flight per connection, replies
//!   matched in order; the commands of one loop turn leave in one buffer per
//!   node ([`Client::poll_transmit`]).
//! - RESP3 via `HELLO 3` (with `AUTH user pass` and `SETNAME` in the same
//!   round trip), RESP2 fallback, `SELECT`; pushes told apart from replies in
//!   both protocols.
//! - Redis Cluster: CRC16 slots with hash tags, the slot map from
//!   `CLUSTER SHARDS` (or `CLUSTER SLOTS` before Redis 7), one command
//!   connection per master, `MOVED` (map updated, retried) and `ASK`
//!   (`ASKING` + retry) within a redirect budget, coalesced and rate-limited
//!   map refreshes, `MGET`/`MSET`/`DEL`/`EXISTS`/`UNLINK`/`TOUCH` split by
//!   slot and merged, a clear [`Error::Unroutable`] for commands that cannot
//!   go to one node.
//! - Pub/sub: `SUBSCRIBE`/`PSUBSCRIBE`, and `SSUBSCRIBE` routed to the
//!   master of each channel's slot on a dedicated connection per node
//!   (grouped by slot: one `SSUBSCRIBE` may not span slots; confirmations are
//!   pushes and are matched by channel, never counted as replies). Wanted
//!   subscriptions are kept as a set and replayed after reconnects,
//!   failovers and the server's own `sunsubscribe` when a slot migrates;
//!   [`Event::MessagesMayBeLost`] says when messages may have been missed.
//! - Failure: connect/request timeouts, every in-flight request answered
//!   with an error when its connection dies (never dropped), reconnects
//!   with capped exponential backoff and jitter from a driver-provided seed.
//!
//! # Driving the core (the seam for the io_uring driver)
//!
//! ```text
//! client = Client::new(config, seed, now)
//! loop {
//!     while let Some(action) = client.poll_action() {
//!         Connect { conn, addr } => start a connect to addr; later call
//!                                   handle_connected(conn) or
//!                                   handle_disconnected(conn, why)
//!         Close { conn }         => close that socket (ignore its late completions)
//!     }
//!     while let Some((conn, bytes)) = client.poll_transmit() {
//!         send `bytes` (an owned `Bytes`: the ring may keep it until the
//!         send completes), in order per conn; a short send is resent
//!     }
//!     arm a timer for client.poll_timeout()
//!     wait for completions:
//!         received data on conn  => client.handle_input(conn, &data, now)
//!         EOF or error on conn   => client.handle_disconnected(conn, why, now)
//!         the timer              => client.handle_timeout(now)
//!     while let Some(event) = client.poll_event() { deliver it }
//! }
//! ```
//!
//! A [`ConnId`] carries a generation: completions of a socket that the core
//! already replaced are ignored. Requests ([`Client::send`],
//! [`Client::send_ref`], [`Client::send_to`]) and subscriptions
//! ([`Client::subscribe`]) may be issued at any point; their bytes come out
//! of the next `poll_transmit`. Everything is single-threaded and
//! allocation-light; one `Client` per reactor core.
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_lite::{BlockingClient, Config, SubKind, cmd};
//!
//! let mut redis = BlockingClient::connect(Config::cluster_from_urls(&["redis://127.0.0.1:7000"])?)?;
//! redis.query(cmd("SET").arg("user:1").arg("alice"))?;
//! let replies = redis.pipeline((0..100).map(|i| cmd("INCR").arg(format!("n:{i}"))));
//! redis.subscribe(SubKind::Shard, &["server:42"])?;
//! if let Some(message) = redis.next_message(Duration::from_secs(1)) {
//!     println!("{:?}", message.payload);
//! }
//! # let _ = replies;
//! # Ok::<(), redis_lite::Error>(())
//! ```
#![forbid(unsafe_code)]

mod backoff;
mod blocking;
mod client;
mod cluster;
mod cmd;
mod codec;
mod config;
mod conn;
mod error;
mod pubsub;
mod pubsub_kind;
mod reply_slots;
mod scan;
mod slot;
mod slot_map;
mod value;

pub use backoff::{Backoff, Rng};
pub use blocking::BlockingClient;
pub use client::{Action, Client, ConnId, Event, RequestId};
pub use cmd::{Arg, Args, Cmd, cmd};
pub use codec::Protocol;
pub use config::{Config, RedisUrl};
pub use conn::{ConnEvent, Connection};
pub use error::{Error, Redirect, RedirectKind, ServerError};
pub use pubsub_kind::{Message, SubKind};
pub use slot::{SLOT_COUNT, crc16, hash_tag, key_slot};
pub use slot_map::{Shard, Topology};
pub use value::Value;
