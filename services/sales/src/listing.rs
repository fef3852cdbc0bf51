//! A store's sales as `ListSales` pages them, oldest first (sale ids are UUIDv7: they sort by
//! time), on the embedded database. The `sales-listing` log consumer files each completed sale
//! under its store a batch at a time (`store_sales`), off the checkout's transaction; a listing
//! reads what is filed and the log's tail after the consumer's offset in one snapshot, so a sale
//! is listed from its commit on.

use std::time::Duration;

use redstore_platform::log_consumer::{self, LogConsumer};
use redstore_platform::{Db, Result, Topic, eventlog};
use redstore_proto::events::{EventEnvelope, event_envelope::Payload};
use redstore_proto::sales::Sale;
use rusqlite::{Connection, params};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::repo;

pub const LISTING_GROUP: &str = "sales-listing";

/// Small batches: a filing job holds the checkouts queued behind it at the one writer (the sizes
/// tried are in docs/benchmarks-history.md).
const LISTING: LogConsumer =
    LogConsumer { group: LISTING_GROUP, topic: Topic::Sales, batch: 250, linger: Duration::from_millis(100) };

/// Files completed sales under their stores until `shutdown`.
pub fn spawn_filing(db: Db, shutdown: CancellationToken) -> JoinHandle<()> {
    log_consumer::spawn(db, LISTING, shutdown, file_sales)
}

fn completed_sale(event: &EventEnvelope) -> Option<&str> {
    match &event.payload {
        Some(Payload::SaleCompleted(sale)) => Some(&sale.sale_id),
        _ => None,
    }
}

fn file_sales(conn: &Connection, events: &[(i64, EventEnvelope)]) -> Result<()> {
    let mut file =
        conn.prepare_cached("INSERT INTO store_sales (store_id, sale_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?;
    for (_, event) in events {
        if let Some(sale_id) = completed_sale(event) {
            file.execute(params![event.store_id, sale_id])?;
        }
    }
    Ok(())
}

/// A store's sales with an id above `after`, oldest first, at most `limit`.
pub fn list_sales(conn: &Connection, store_id: &str, after: &str, limit: u32) -> Result<Vec<Sale>> {
    eventlog::in_snapshot(conn, |conn| {
        let filed_up_to = eventlog::consumer_offset(conn, LISTING_GROUP)?;
        let mut ids = conn
            .prepare_cached(
                "SELECT sale_id FROM store_sales WHERE store_id = ?1 AND sale_id > ?2 ORDER BY sale_id LIMIT ?3",
            )?
            .query_map(params![store_id, after, limit], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for event in eventlog::store_tail(conn, Topic::Sales, store_id, filed_up_to, 0, u32::MAX)? {
            if let Some(sale_id) = completed_sale(&event).filter(|id| *id > after) {
                ids.push(sale_id.to_owned());
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(limit as usize);
        ids.iter().map(|id| repo::get_sale(conn, id)).collect()
    })
}

#[cfg(test)]
mod tests {
    use redstore_proto::sales::SaleStatus;

    use super::*;
    use crate::events::sale_completed;

    async fn sell(db: &Db, store: &'static str, count: usize) -> Vec<String> {
        db.write(move |ctx| {
            let mut ids = Vec::new();
            for _ in 0..count {
                let sale = Sale {
                    sale_id: uuid::Uuid::now_v7().to_string(),
                    store_id: store.to_owned(),
                    terminal_id: "till-1".to_owned(),
                    status: SaleStatus::Completed as i32,
                    ..Default::default()
                };
                repo::insert_sale(ctx.conn, &sale, 0)?;
                eventlog::append(ctx, Topic::Sales, store, sale_completed(&sale))?;
                ids.push(sale.sale_id);
            }
            Ok(ids)
        })
        .await
        .unwrap()
    }

    async fn pages(db: &Db, store: &'static str, size: u32) -> Vec<String> {
        let mut listed: Vec<String> = Vec::new();
        loop {
            let after = listed.last().cloned().unwrap_or_default();
            let page = db.read(move |c| list_sales(c, store, &after, size)).await.unwrap();
            if page.is_empty() {
                return listed;
            }
            assert!(page.iter().all(|s| s.store_id == store));
            listed.extend(page.into_iter().map(|s| s.sale_id));
        }
    }

    #[tokio::test]
    async fn a_store_lists_its_filed_and_its_newest_sales_in_order_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("redstore.db"), &[crate::SQLITE_MIGRATIONS]).unwrap();
        let mut sold = sell(&db, "store-a", 3).await;
        sell(&db, "store-b", 1).await;
        // Listed from its commit on, before anything is filed.
        assert_eq!(pages(&db, "store-a", 2).await, sold);

        let shutdown = CancellationToken::new();
        let filing = spawn_filing(db.clone(), shutdown.clone());
        let head = *db.watch_head().borrow();
        for _ in 0..200 {
            if db.read(|c| eventlog::consumer_offset(c, LISTING_GROUP)).await.unwrap() == head {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(db.read(|c| eventlog::consumer_offset(c, LISTING_GROUP)).await.unwrap(), head);
        shutdown.cancel();
        filing.await.unwrap();

        // Pages cross from the filed sales to the log's tail.
        sold.extend(sell(&db, "store-a", 2).await);
        assert_eq!(pages(&db, "store-a", 2).await, sold);
        assert_eq!(pages(&db, "store-b", 10).await.len(), 1);
    }

    /// A shop's sales from before the listing was filed by the consumer are listed after the
    /// upgrade, from what the upgrade filed.
    #[tokio::test]
    async fn sales_made_before_the_upgrade_are_still_listed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redstore.db");
        let older = [redstore_platform::PLATFORM_MIGRATIONS, &crate::SQLITE_MIGRATIONS[..1]];
        let sold = {
            let conn = Connection::open(&path).unwrap();
            redstore_platform::db::apply_migrations(&conn, older.into_iter()).unwrap();
            drop(conn);
            let db = Db::open(&path, &[]).unwrap();
            sell(&db, "store-a", 2).await
        };
        let db = Db::open(&path, &[crate::SQLITE_MIGRATIONS]).unwrap();
        let head = *db.watch_head().borrow();
        assert_eq!(db.read(|c| eventlog::consumer_offset(c, LISTING_GROUP)).await.unwrap(), head);
        assert_eq!(pages(&db, "store-a", 1).await, sold);
    }
}
