//! A sans-IO, pipelined RESP client for Redis and Redis Cluster with sharded
//! pub/sub, plus small drivers for the engine's ring and for blocking tools.
//!
//! Not built yet: this crate is filled by issue #4.
#![forbid(unsafe_code)]
