//! Analytics: consumes sale and refund events from the log into per-minute rollups, with a
//! stored consumer offset, and reports per store and time range at minute, hour or day.

#![forbid(unsafe_code)]

pub mod consumer;
pub mod fold;
pub mod grpc;
pub mod kafka;
pub mod pg;
pub mod rollup;

use redstore_platform::Migration;

pub use consumer::spawn_consumer;
pub use grpc::{AnalyticsGrpc, Reports, SqliteReports};

pub const SQLITE_MIGRATIONS: &[Migration] =
    &[Migration { service: "analytics", version: 1, sql: include_str!("../migrations/sqlite/0001_analytics.sql") }];

/// The consumer group whose offset the analytics consumer keeps.
pub const CONSUMER_GROUP: &str = "analytics-rollups";
