//! Staff sign-in: one-time codes traded for sessions, whose signed access tokens name the staff
//! member, role, store and terminal, and whose refresh tokens rotate.

#![forbid(unsafe_code)]

pub mod domain;
pub mod grpc;
pub mod pg;
pub mod revoked;
pub mod secret;
pub mod seed;
pub mod sender;
pub mod sqlite;
pub mod store;

use redstore_platform::Migration;

pub use grpc::AuthGrpc;
pub use sender::{CodeSender, LogSender};
pub use store::AuthStore;

pub const SQLITE_MIGRATIONS: &[Migration] = &[
    Migration { service: "auth", version: 1, sql: include_str!("../migrations/sqlite/0001_auth.sql") },
    Migration { service: "auth", version: 2, sql: include_str!("../migrations/sqlite/0002_idle_lock.sql") },
];
