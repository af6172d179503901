//! ringhub-bench: a load generator cheap enough not to be the bottleneck on
//! a small machine. Each worker thread drives thousands of connections from
//! one `mio` poll, with no allocation per message; runs past the fd limit
//! re-execute the binary as worker processes and merge their results.
//!
//! Layers, bottom up: [`payload`] and [`seq`] (what a message carries and
//! how loss is counted), [`handshake`] and [`session`] (one connection's
//! protocol, sans-IO), [`driver`] (a worker's sockets and clock), [`group`]
//! (threads and processes as one), [`run`] (a step from the parent's side),
//! then [`report`] and [`chart`]. The ringhub workloads add [`login`]
//! (who a connection is), [`inbound`] (what a server frame is) and
//! [`chat`] (the `mixed` workload's rooms and picks).
#![forbid(unsafe_code)]

pub mod chart;
pub mod chat;
pub mod cli;
pub mod driver;
pub mod group;
pub mod handshake;
pub mod inbound;
pub mod login;
pub mod payload;
pub mod procstat;
pub mod redis_info;
pub mod report;
pub mod run;
pub mod seq;
pub mod session;
pub mod stats;
pub mod sys;
pub mod target;
pub mod workload;
