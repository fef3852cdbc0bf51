//! Stream bridge: live stock changes of a store for its terminals, as Server-Sent Events
//! (`GET /v1/stores/{store_id}/inventory/events`, resumable with `Last-Event-ID`) and as the
//! gRPC server stream `InventoryStreamService.WatchInventory` (works over gRPC-web).
//!
//! Both are one mechanism ([`feed::watch`]): subscribe to the store's live fan-out first, then
//! catch up from the durable event log after the client's last sequence, then deliver live
//! events in sequence order, refilling from the log whenever a gap or lag shows. A terminal never
//! misses, duplicates or reorders a change.

#![forbid(unsafe_code)]

pub mod admission;
pub mod feed;
pub mod grpc;
pub mod redis;
pub mod sse;

pub use admission::LiveStreams;
pub use feed::LiveFeed;
pub use grpc::StreamGrpc;
