//! Sales: scanning (a bidirectional stream for native scanners and its unary twin for gRPC-web),
//! carts per (store, terminal), checkout with idempotency keys, and refunds.

#![forbid(unsafe_code)]

pub mod catalog;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod listing;
pub mod pg;
pub mod repo;
pub mod store;

use redstore_platform::Migration;

pub use grpc::SalesGrpc;
pub use store::{SalesStore, SqliteSales};

pub const SQLITE_MIGRATIONS: &[Migration] = &[
    Migration { service: "sales", version: 1, sql: include_str!("../migrations/sqlite/0001_sales.sql") },
    Migration { service: "sales", version: 2, sql: include_str!("../migrations/sqlite/0002_store_sales.sql") },
];
