//! What every Red Store service shares: errors, money, barcodes, the embedded database with its
//! event log, idempotency keys, pagination, per-store batching and telemetry.

#![forbid(unsafe_code)]

pub mod access_token;
pub mod audit;
pub mod barcode;
pub mod batch;
pub mod caller;
pub mod datadir;
pub mod db;
pub mod error;
pub mod eventlog;
pub mod idempotency;
pub mod kafka;
pub mod limits;
pub mod log_consumer;
pub mod metrics;
pub mod money;
pub mod page;
pub mod pg;
pub mod retention;
pub mod service_token;
pub mod telemetry;
pub mod text;
pub mod time;
pub mod trace;
pub mod unreachable;

pub use db::{Committed, Db, DbOptions, Migration, Topic, WriteCtx};
pub use error::{Error, Result};

/// The platform's own tables: event log, sequences, consumer offsets, idempotency keys.
pub const PLATFORM_MIGRATIONS: &[Migration] = &[
    Migration { service: "platform", version: 1, sql: include_str!("../migrations/sqlite/0001_platform.sql") },
    Migration { service: "platform", version: 2, sql: include_str!("../migrations/sqlite/0002_key_retention.sql") },
    Migration {
        service: "platform",
        version: 3,
        sql: include_str!("../migrations/sqlite/0003_time_ordered_writes.sql"),
    },
    Migration {
        service: "platform",
        version: 4,
        sql: include_str!("../migrations/sqlite/0004_filed_stock_events.sql"),
    },
];
