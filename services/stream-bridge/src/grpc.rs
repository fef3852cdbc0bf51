//! `InventoryStreamService.WatchInventory`: the gRPC (and gRPC-web) face of the watch.

use futures::{Stream, StreamExt as _};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use redstore_inventory::InventoryStore;
use redstore_platform::caller::Caller;
use redstore_proto::stream::inventory_stream_service_server::{InventoryStreamService, InventoryStreamServiceServer};
use redstore_proto::stream::{KeepAlive, WatchInventoryRequest, WatchInventoryResponse, watch_inventory_response};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::LiveStreams;
use crate::feed::{self, Item, LiveFeed, Start};

#[derive(Clone)]
pub struct StreamGrpc {
    inventory: Arc<dyn InventoryStore>,
    feed: LiveFeed,
    streams: LiveStreams,
    shutdown: CancellationToken,
}

impl StreamGrpc {
    pub fn new(
        inventory: Arc<dyn InventoryStore>,
        feed: LiveFeed,
        streams: LiveStreams,
        shutdown: CancellationToken,
    ) -> Self {
        Self { inventory, feed, streams, shutdown }
    }

    pub fn into_server(self) -> InventoryStreamServiceServer<Self> {
        InventoryStreamServiceServer::new(self)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchInventoryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl InventoryStreamService for StreamGrpc {
    type WatchInventoryStream = WatchStream;

    #[tracing::instrument(name = "stream.watch_inventory", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn watch_inventory(&self, req: Request<WatchInventoryRequest>) -> Result<Response<WatchStream>, Status> {
        let (caller, req) = Caller::split(req)?;
        let store_id = caller.store("store_id", &req.store_id)?.to_owned();
        let keep_alive = keep_alive(req.keep_alive_seconds)?;
        let admitted = self.streams.admit()?;
        feed::require_store(self.inventory.as_ref(), &store_id).await?;
        let start = if req.include_snapshot { Start::Snapshot } else { Start::After(req.resume_after) };
        let watch = feed::watch(self.inventory.clone(), &self.feed, store_id, start, self.shutdown.clone());
        // A watch that ends says why (UNAVAILABLE: reconnect and resume); it never just stops.
        let stream = admitted.hold(watch).map(|item| {
            let item = match item.map_err(Status::from)? {
                Item::Snapshot(s) => watch_inventory_response::Item::Snapshot(s),
                Item::Event(e) => watch_inventory_response::Item::Event((*e).clone()),
            };
            Ok(WatchInventoryResponse { item: Some(item) })
        });
        Ok(Response::new(match keep_alive {
            // A quiet `every` yields an Elapsed (and the timer starts again): that is a keep-alive.
            Some(every) => Box::pin(tokio_stream::StreamExt::timeout(stream, every).map(|item| {
                item.unwrap_or_else(|_quiet| {
                    Ok(WatchInventoryResponse { item: Some(watch_inventory_response::Item::KeepAlive(KeepAlive {})) })
                })
            })),
            None => Box::pin(stream),
        }))
    }
}

/// Longest keep-alive interval a watcher may ask for.
const MAX_KEEP_ALIVE_SECONDS: u32 = 300;

fn keep_alive(seconds: u32) -> Result<Option<Duration>, Status> {
    match seconds {
        0 => Ok(None),
        1..=MAX_KEEP_ALIVE_SECONDS => Ok(Some(Duration::from_secs(seconds.into()))),
        _ => Err(redstore_platform::Error::invalid(
            "keep_alive_seconds",
            format!("is at most {MAX_KEEP_ALIVE_SECONDS} (0: no keep-alives), not {seconds}"),
        )
        .into()),
    }
}
