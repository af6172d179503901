//! The ringhub server: configuration, authentication, admission, the local
//! hub and presence directory, the client protocol and the brokers between
//! servers, wired onto the engine by `main.rs`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod batcher;
pub mod broker;
pub mod cloudwatch;
#[cfg(feature = "cloudwatch")]
pub mod cloudwatch_push;
pub mod config;
pub mod connid;
pub mod handler;
mod http;
pub mod hub;
pub mod latency;
pub mod liveness;
pub mod metrics;
pub mod names;
pub mod node;
pub mod origin;
pub mod presence;
pub mod prometheus;
pub mod ratelimit;
pub mod relay;
pub mod retry;
pub mod routes;
pub mod snapshot;
pub mod sources;
pub mod wire;
