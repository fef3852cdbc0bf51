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

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::{Committed, Db, Topic, WriteCtx};
use crate::error::Result;
use crate::log_consumer::{self, LogConsumer};
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
        // The operation that caused it, when traced: consumers continue its trace.
        trace_parent: crate::trace::current_traceparent(),
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

/// The consumer group that files stock events by store.
pub const STOCK_FILING_GROUP: &str = "inventory-by-store";

const STOCK_FILING: LogConsumer = LogConsumer {
    group: STOCK_FILING_GROUP,
    topic: Topic::Inventory,
    batch: 250,
    linger: std::time::Duration::from_millis(100),
};

/// Files stock events by store and sequence until `shutdown`, so a store's stream resumes without
/// the checkouts keeping an index of them.
pub fn spawn_stock_filing(db: Db, shutdown: CancellationToken) -> JoinHandle<()> {
    log_consumer::spawn(db, STOCK_FILING, shutdown, |conn, events| {
        let mut file = conn.prepare_cached(
            "INSERT INTO stock_events_by_store (store_id, store_seq, position) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )?;
        for (position, event) in events {
            file.execute(params![event.store_id, event.store_seq as i64, position])?;
        }
        Ok(())
    })
}

/// A store's stock events (the inventory topic, the one read by store: a terminal's stream
/// resuming) with a sequence above `after`, oldest first, at most `limit`: those filed, then the
/// log's tail after the filing's offset, in one snapshot.
pub fn inventory_events_after(conn: &Connection, store_id: &str, after: u64, limit: u32) -> Result<Vec<EventEnvelope>> {
    in_snapshot(conn, |conn| {
        let filed_up_to = consumer_offset(conn, STOCK_FILING_GROUP)?;
        let mut events = conn
            .prepare_cached(
                "SELECT e.body FROM stock_events_by_store f JOIN event_log e ON e.position = f.position
                 WHERE f.store_id = ?1 AND f.store_seq > ?2 ORDER BY f.store_seq LIMIT ?3",
            )?
            .query_map(params![store_id, after as i64, limit], |r| r.get::<_, Vec<u8>>(0))?
            .map(|b| decode(b?))
            .collect::<Result<Vec<_>>>()?;
        let left = limit.saturating_sub(events.len() as u32);
        if left > 0 {
            // A store's sequence grows with the log's position: the tail follows what is filed.
            events.extend(store_tail(conn, Topic::Inventory, store_id, filed_up_to, after, left)?);
        }
        Ok(events)
    })
}

/// Runs `read` on one snapshot of the database (a savepoint, so inside a transaction or not):
/// a consumer's offset, what it filed and the log's tail after it agree.
pub fn in_snapshot<T>(conn: &Connection, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT snapshot")?;
    let read = read(conn);
    conn.execute_batch("RELEASE snapshot")?;
    read
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

/// A store's events of `topic` at log positions above `after_position` (what a consumer whose
/// offset that is has not reached yet) with a sequence above `after_seq`, oldest first, at most
/// `limit`. It reads the topic's whole tail, so it is for short tails.
pub fn store_tail(
    conn: &Connection,
    topic: Topic,
    store_id: &str,
    after_position: i64,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<EventEnvelope>> {
    let mut stmt = conn.prepare_cached(
        "SELECT body FROM event_log WHERE topic = ?1 AND position > ?2 AND store_id = ?3 AND store_seq > ?4
         ORDER BY position LIMIT ?5",
    )?;
    let rows = stmt.query_map(params![topic.as_str(), after_position, store_id, after_seq as i64, limit], |r| {
        r.get::<_, Vec<u8>>(0)
    })?;
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

    async fn append_stock_events(db: &Db, stores: &'static [&'static str]) {
        db.write(move |ctx| {
            for store in stores {
                append(ctx, Topic::Sales, store, Payload::SaleCompleted(SaleCompleted::default()))?;
                append(ctx, Topic::Inventory, store, Payload::InventoryChanged(InventoryChanged::default()))?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    async fn resumed(db: &Db, store: &'static str, after: u64, page: u32) -> Vec<(String, u64)> {
        let mut seen = Vec::new();
        let mut after = after;
        loop {
            let events = db.read(move |c| inventory_events_after(c, store, after, page)).await.unwrap();
            let Some(last) = events.last() else { return seen };
            after = last.store_seq;
            assert!(events.iter().all(|e| e.r#type == "inventory.changed"));
            seen.extend(events.into_iter().map(|e| (e.store_id, e.store_seq)));
        }
    }

    #[tokio::test]
    async fn a_store_resumes_its_own_stock_events_in_order_from_the_filed_ones_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("redstore.db"), &[]).unwrap();
        append_stock_events(&db, &["store-a", "store-b", "store-a", "store-a"]).await;
        let a = |seqs: &[u64]| seqs.iter().map(|&s| ("store-a".to_owned(), s)).collect::<Vec<_>>();
        // Read from the commit on, before anything is filed.
        assert_eq!(resumed(&db, "store-a", 1, 10).await, a(&[2, 3]));

        let shutdown = CancellationToken::new();
        let filing = spawn_stock_filing(db.clone(), shutdown.clone());
        let head = *db.watch_head().borrow();
        for _ in 0..200 {
            if db.read(|c| consumer_offset(c, STOCK_FILING_GROUP)).await.unwrap() == head {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(db.read(|c| consumer_offset(c, STOCK_FILING_GROUP)).await.unwrap(), head);
        shutdown.cancel();
        filing.await.unwrap();

        // Pages cross from the filed events to the log's tail.
        append_stock_events(&db, &["store-a", "store-a"]).await;
        assert_eq!(resumed(&db, "store-a", 0, 2).await, a(&[1, 2, 3, 4, 5]));
        assert_eq!(resumed(&db, "store-a", 2, 10).await, a(&[3, 4, 5]));
        assert_eq!(resumed(&db, "store-b", 0, 10).await, [("store-b".to_owned(), 1)]);
    }
}
