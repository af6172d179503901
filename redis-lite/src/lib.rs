//! A sans-IO, pipelined RESP client for Redis and Redis Cluster, with sharded
//! pub/sub.
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
