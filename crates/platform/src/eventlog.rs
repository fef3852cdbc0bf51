//! The durable in-process event log: a table in the embedded database.
//!
//! An event is appended inside the same transaction as the change it describes, with the next
//! sequence number of its (topic, store): no gaps, strictly increasing. Readers page through a
//! store's events after a sequence number (stream resume) or through a topic after a log position
//! (consumers, which keep their offsets in `consumer_offsets` and update them in the same
//! transaction as their effect).

use std::sync::Arc;

use prost::Message as _;
use redstore_proto::events::{EventEnvelope, event_envelope::Payload};
use rusqlite::{Connection, OptionalExtension, params};

use crate::db::{Committed, Topic, WriteCtx};
use crate::error::Result;
use crate::time::{timestamp, unix_ms};

/// Takes the next sequence number of a store's `topic`, in the caller's transaction.
pub fn next_seq(ctx: &WriteCtx<'_>, topic: Topic, store_id: &str) -> Result<u64> {
    let seq: i64 = ctx
        .conn
        .prepare_cached(
            "INSERT INTO store_sequences (topic, store_id, last_seq) VALUES (?1, ?2, 1)
             ON CONFLICT (topic, store_id) DO UPDATE SET last_seq = last_seq + 1
             RETURNING last_seq",
        )?
        .query_row(params![topic.as_str(), store_id], |r| r.get(0))?;
    Ok(seq as u64)
}

/// A store's event: its id, its type (from the payload), its store sequence and when it happened.
/// Every backend's log and outbox write events made here.
pub fn envelope(
    event_id: uuid::Uuid,
    store_id: &str,
    seq: u64,
    occurred_at_ms: i64,
    payload: Payload,
) -> EventEnvelope {
    let event_type = match &payload {
        Payload::InventoryChanged(_) => "inventory.changed",
        Payload::SaleCompleted(_) => "sale.completed",
        Payload::SaleRefunded(_) => "sale.refunded",
        Payload::StockLoaded(_) => "inventory.stock_loaded",
    };
    EventEnvelope {
        event_id: event_id.to_string(),
        r#type: event_type.to_owned(),
        store_id: store_id.to_owned(),
        store_seq: seq,
        occurred_at: Some(timestamp(occurred_at_ms)),
        trace_parent: String::new(),
        payload: Some(payload),
    }
}

/// Whether an event tells consumers to re-read the store's levels (a bulk stock load names none)
/// rather than apply changes.
pub fn is_stock_loaded(event: &EventEnvelope) -> bool {
    matches!(event.payload, Some(Payload::StockLoaded(_)))
}

/// Appends an event to the log in the caller's transaction and returns it with its sequence.
pub fn append(ctx: &mut WriteCtx<'_>, topic: Topic, store_id: &str, payload: Payload) -> Result<Arc<EventEnvelope>> {
    let seq = next_seq(ctx, topic, store_id)?;
    append_at(ctx, topic, store_id, seq, payload)
}

/// Appends an event with a sequence number taken by [`next_seq`] in the same transaction.
pub fn append_at(
    ctx: &mut WriteCtx<'_>,
    topic: Topic,
    store_id: &str,
    seq: u64,
    payload: Payload,
) -> Result<Arc<EventEnvelope>> {
    let now_ms = unix_ms(ctx.now);
    let envelope = envelope(uuid::Uuid::now_v7(), store_id, seq, now_ms, payload);
    let position: i64 = ctx
        .conn
        .prepare_cached(
            "INSERT INTO event_log (topic, store_id, store_seq, event_id, event_type, occurred_at_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING position",
        )?
        .query_row(
            params![
                topic.as_str(),
                store_id,
                seq as i64,
                envelope.event_id,
                envelope.r#type,
                now_ms,
                envelope.encode_to_vec()
            ],
            |r| r.get(0),
        )?;
    let envelope = Arc::new(envelope);
    ctx.events.push(Committed { topic, position, envelope: envelope.clone() });
    Ok(envelope)
}

fn decode(body: Vec<u8>) -> Result<EventEnvelope> {
    EventEnvelope::decode(body.as_slice())
        .map_err(|e| crate::Error::Internal(anyhow::anyhow!("corrupt event in the log: {e}")))
}

// The topic is written out, not bound: only then can SQLite use the index that holds this topic's
// rows alone.
const INVENTORY_EVENTS_AFTER: &str = "SELECT body FROM event_log WHERE topic = 'inventory' AND store_id = ?1
    AND store_seq > ?2 ORDER BY store_seq LIMIT ?3";

/// A store's stock events (the inventory topic, the one read by store: a terminal's stream
/// resuming) with a sequence above `after`, oldest first, at most `limit`.
pub fn inventory_events_after(conn: &Connection, store_id: &str, after: u64, limit: u32) -> Result<Vec<EventEnvelope>> {
    let mut stmt = conn.prepare_cached(INVENTORY_EVENTS_AFTER)?;
    let rows = stmt.query_map(params![store_id, after as i64, limit], |r| r.get::<_, Vec<u8>>(0))?;
    rows.map(|b| decode(b?)).collect()
}

/// The newest sequence number of a store's `topic` (0 when it has none).
pub fn last_seq(conn: &Connection, topic: Topic, store_id: &str) -> Result<u64> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT last_seq FROM store_sequences WHERE topic = ?1 AND store_id = ?2")?
        .query_row(params![topic.as_str(), store_id], |r| r.get(0))
        .optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

/// Events of `topic` at log positions above `after`, in commit order, at most `limit`.
pub fn topic_events_after(
    conn: &Connection,
    topic: Topic,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, EventEnvelope)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT position, body FROM event_log WHERE topic = ?1 AND position > ?2 ORDER BY position LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![topic.as_str(), after, limit], |r| Ok((r.get(0)?, r.get::<_, Vec<u8>>(1)?)))?;
    rows.map(|row| {
        let (pos, body) = row?;
        Ok((pos, decode(body)?))
    })
    .collect()
}

/// A store's events of `topic` at log positions above `after`: what a consumer whose offset is
/// `after` has not reached yet. It reads the topic's whole tail, so it is for short tails.
pub fn store_tail(conn: &Connection, topic: Topic, store_id: &str, after: i64) -> Result<Vec<EventEnvelope>> {
    let mut stmt = conn.prepare_cached(
        "SELECT body FROM event_log WHERE topic = ?1 AND position > ?2 AND store_id = ?3 ORDER BY position",
    )?;
    let rows = stmt.query_map(params![topic.as_str(), after, store_id], |r| r.get::<_, Vec<u8>>(0))?;
    rows.map(|b| decode(b?)).collect()
}

/// The stored offset (last processed log position) of a consumer group.
pub fn consumer_offset(conn: &Connection, group: &str) -> Result<i64> {
    let pos: Option<i64> = conn
        .prepare_cached("SELECT position FROM consumer_offsets WHERE group_name = ?1")?
        .query_row([group], |r| r.get(0))
        .optional()?;
    Ok(pos.unwrap_or(0))
}

/// Stores a consumer group's offset; call in the same transaction as the effect.
pub fn commit_offset(conn: &Connection, group: &str, position: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO consumer_offsets (group_name, position) VALUES (?1, ?2)
         ON CONFLICT (group_name) DO UPDATE SET position = excluded.position",
    )?
    .execute(params![group, position])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use redstore_proto::events::{InventoryChanged, SaleCompleted};

    use super::*;
    use crate::Db;

    #[tokio::test]
    async fn a_store_resumes_its_own_stock_events_in_order_through_the_inventory_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("redstore.db"), &[]).unwrap();
        db.write(|ctx| {
            for store in ["store-a", "store-b", "store-a", "store-a"] {
                append(ctx, Topic::Sales, store, Payload::SaleCompleted(SaleCompleted::default()))?;
                append(ctx, Topic::Inventory, store, Payload::InventoryChanged(InventoryChanged::default()))?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let events = db.read(|c| inventory_events_after(c, "store-a", 1, 10)).await.unwrap();
        let seen: Vec<_> = events.iter().map(|e| (e.store_id.as_str(), e.store_seq, e.r#type.as_str())).collect();
        assert_eq!(seen, [("store-a", 2, "inventory.changed"), ("store-a", 3, "inventory.changed")]);
        // A resume reads the store's rows of the index, not the whole log.
        let plan: Vec<String> = db
            .read(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {INVENTORY_EVENTS_AFTER}"))?;
                let rows = stmt.query_map(params!["store-a", 1, 10], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
            .unwrap();
        assert!(plan.iter().any(|p| p.contains("event_log_inventory_store_seq")), "{plan:?}");
    }
}
