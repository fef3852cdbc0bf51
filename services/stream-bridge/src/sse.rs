//! `GET /v1/stores/{store_id}/inventory/events` as Server-Sent Events.
//!
//! Each event's `id` is its store sequence, so a browser's `EventSource` resumes after a dropped
//! connection by sending `Last-Event-ID`, and gets exactly the events it missed. Each event's
//! data is the message's JSON after the protobuf JSON mapping (what grpcurl and a gRPC-web client
//! show of the same `WatchInventory` item): an `EventEnvelope`, or an `InventorySnapshot`. `?after=N` does
//! the same for clients that cannot set headers; `?snapshot=true` starts with the store's stock
//! (as an event named `snapshot` whose id is the sequence it reflects); a `snapshot` also comes
//! mid-stream in place of a bulk stock load, which names no levels. Comments keep idle
//! connections alive through proxies. Past the process's cap on live streams the answer is 503
//! with `Retry-After`; `EventSource` does not retry a non-200 answer, so a page does, after it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use parking_lot::Mutex;
use redstore_inventory::InventoryStore;
use redstore_platform::caller::Caller;
use redstore_platform::error::Error;
use redstore_proto::events::EventEnvelope;
use redstore_proto::stream::InventorySnapshot;
use tokio_util::sync::CancellationToken;

use crate::LiveStreams;
use crate::feed::{self, Item, LiveFeed, Start};

#[derive(Clone)]
struct SseState {
    inventory: Arc<dyn InventoryStore>,
    feed: LiveFeed,
    streams: LiveStreams,
    shutdown: CancellationToken,
    keep_alive: Duration,
    memo: JsonMemo,
}

/// The JSON of the live event each store's watchers are being handed, made once for all of them
/// rather than once per connection (a store's watchers share the event's `Arc`). With thousands
/// of terminals on one store, building it per connection was most of the fan-out's work.
#[derive(Clone, Default)]
struct JsonMemo(Arc<Mutex<HashMap<String, Memoized>>>);

/// A store's latest live event and its JSON.
type Memoized = (Arc<EventEnvelope>, Arc<str>);

impl JsonMemo {
    fn json(&self, e: &Arc<EventEnvelope>) -> Arc<str> {
        if let Some((seen, json)) = self.0.lock().get(&e.store_id)
            && Arc::ptr_eq(seen, e)
        {
            return json.clone();
        }
        let json: Arc<str> = event_json(e.as_ref()).into();
        self.0.lock().insert(e.store_id.clone(), (e.clone(), json.clone()));
        json
    }
}

pub fn router(
    inventory: Arc<dyn InventoryStore>,
    feed: LiveFeed,
    streams: LiveStreams,
    shutdown: CancellationToken,
    keep_alive: Duration,
) -> Router {
    Router::new().route("/v1/stores/{store_id}/inventory/events", get(events)).with_state(SseState {
        inventory,
        feed,
        streams,
        shutdown,
        keep_alive,
        memo: JsonMemo::default(),
    })
}

fn error_response(err: Error) -> Response {
    if let Error::ResourceExhausted { retry_after: Some(after), .. } = &err {
        // Whole seconds, rounded up: HTTP has no finer Retry-After.
        let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        return (StatusCode::SERVICE_UNAVAILABLE, [(RETRY_AFTER, seconds.to_string())], format!("{err}\n"))
            .into_response();
    }
    let status = match err.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{err}\n")).into_response()
}

async fn events(
    State(state): State<SseState>,
    Path(store_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> Response {
    // The edge let the caller in for the store of the path as it was sent; checked again as
    // decoded.
    let Some(Extension(caller)) = caller else {
        return error_response(Error::Unauthenticated("sign in first: no checked token or ticket".into()));
    };
    let store_id = match caller.store("store_id", &store_id) {
        Ok(s) => s.to_owned(),
        Err(e) => return error_response(e),
    };
    let last_event_id = match headers.get("last-event-id").map(|v| v.to_str().map(str::trim)) {
        None => None,
        Some(Ok("")) => None,
        Some(Ok(v)) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return error_response(Error::invalid("Last-Event-ID", format!("{v:?} is not a sequence number")));
            }
        },
        Some(Err(_)) => return error_response(Error::invalid("Last-Event-ID", "is not text")),
    };
    let after = match params.get("after").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return error_response(Error::invalid("after", "is not a sequence number")),
    };
    let snapshot = matches!(params.get("snapshot").map(String::as_str), Some("true" | "1"));
    let admitted = match state.streams.admit() {
        Ok(admitted) => admitted,
        Err(e) => return error_response(e),
    };
    if let Err(e) = feed::require_store(state.inventory.as_ref(), &store_id).await {
        return error_response(e);
    }
    let start = match (last_event_id.or(after), snapshot) {
        (Some(seq), _) => Start::After(seq),
        (None, true) => Start::Snapshot,
        (None, false) => Start::After(0),
    };
    let memo = state.memo.clone();
    // An SSE stream that must end just closes: `EventSource` reconnects by itself, with
    // `Last-Event-ID`.
    let watch = feed::watch(state.inventory.clone(), &state.feed, store_id, start, state.shutdown.clone());
    let stream = admitted
        .hold(watch)
        .take_while(|item| std::future::ready(item.is_ok()))
        .filter_map(move |item| std::future::ready(item.ok().map(|item| Ok::<_, Infallible>(to_sse(&item, &memo)))));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(state.keep_alive).text("keep-alive")).into_response()
}

fn to_sse(item: &Item, memo: &JsonMemo) -> Event {
    match item {
        Item::Snapshot(s) => Event::default().event("snapshot").id(s.as_of_seq.to_string()).data(snapshot_json(s)),
        Item::Event(e) => Event::default().event(e.r#type.clone()).id(e.store_seq.to_string()).data(&*memo.json(e)),
    }
}

/// A snapshot's JSON after the protobuf JSON mapping.
pub fn snapshot_json(s: &InventorySnapshot) -> String {
    proto_json("redstore.stream.v1.InventorySnapshot", s)
}

/// An event's JSON after the protobuf JSON mapping (`storeSeq` a string, `occurredAt` RFC 3339,
/// fields at their defaults left out).
pub fn event_json(e: &EventEnvelope) -> String {
    proto_json("redstore.events.v1.EventEnvelope", e)
}

/// `message` as JSON after the protobuf JSON mapping, read through the contracts' descriptors.
fn proto_json(full_name: &str, message: &impl prost::Message) -> String {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        prost_reflect::DescriptorPool::decode(redstore_proto::FILE_DESCRIPTOR_SET).expect("the contracts' descriptors")
    });
    let descriptor = pool.get_message_by_name(full_name).expect("a message of the contracts");
    let dynamic = prost_reflect::DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message decodes as its own type");
    serde_json::to_string(&dynamic).expect("a message serializes")
}

#[cfg(test)]
mod tests {
    use redstore_proto::events::event_envelope::Payload;
    use redstore_proto::events::{InventoryChanged, StockChange};

    use super::*;

    #[test]
    fn an_event_reads_as_grpcurl_shows_it() {
        let event = EventEnvelope {
            event_id: "e1".into(),
            r#type: "inventory.changed".into(),
            store_id: "store-1".into(),
            store_seq: 7,
            occurred_at: Some(prost_types::Timestamp { seconds: 1_796_038_812, nanos: 824_000_000 }),
            payload: Some(Payload::InventoryChanged(InventoryChanged {
                reason: "sale".into(),
                changes: vec![StockChange { sku: "SKU-1".into(), delta: -2, quantity_after: 9, negative: false }],
                ..Default::default()
            })),
            ..Default::default()
        };
        let json: serde_json::Value = serde_json::from_str(&event_json(&event)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "eventId": "e1",
                "type": "inventory.changed",
                "storeId": "store-1",
                "storeSeq": "7",
                "occurredAt": "2026-11-30T11:40:12.824Z",
                "inventoryChanged": {"reason": "sale", "changes": [{"sku": "SKU-1", "delta": "-2", "quantityAfter": "9"}]}
            })
        );
    }
}
