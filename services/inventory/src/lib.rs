//! Inventory: stores and terminals, the catalog with verified barcodes, stock per store,
//! adjustments, and applying sales atomically under each store's oversell policy.

#![forbid(unsafe_code)]

pub mod cache;
pub mod client;
pub mod domain;
pub mod grpc;
pub mod local;
pub mod pg;
pub mod projector;
mod repo;
pub mod seed;
pub mod store;

use redstore_platform::Migration;

pub use domain::{OversellPolicy, StockMovement};
pub use grpc::InventoryGrpc;
pub use store::{InventoryStore, SqliteInventory};

pub const SQLITE_MIGRATIONS: &[Migration] =
    &[Migration { service: "inventory", version: 1, sql: include_str!("../migrations/sqlite/0001_inventory.sql") }];
