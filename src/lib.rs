//! The `redstore` binary's library: the server that composes every service, and the benchmarks.

#![forbid(unsafe_code)]

pub mod access;
pub mod auth;
pub mod bench;
pub mod client_auth;
pub mod config_file;
pub mod connections;
pub mod drain;
pub mod edge;
pub mod forwarded;
pub mod health;
pub mod import;
pub mod kafka_security;
pub mod kafka_worker;
pub mod metrics;
pub mod observe;
pub mod oversized;
pub mod server;
pub mod terminal;
pub mod tls;

pub use server::{Running, ServerConfig, start};
