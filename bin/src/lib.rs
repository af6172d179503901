//! The ringhub server: configuration, authentication, admission and the
//! client protocol, wired onto the engine by `main.rs`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod origin;
pub mod ratelimit;
