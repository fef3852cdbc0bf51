//! Analytics on PostgreSQL: a consumer that folds each store's sale events from the sales outbox
//! into rollups (offset per store, stored in the same transaction as the effect), woken by
//! LISTEN/NOTIFY with a slow sweep as a safety net; and reports over the rollups.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redstore_inventory::InventoryStore;
use redstore_platform::error::Result;
use redstore_platform::pg::{self, PgPool};
use redstore_platform::time::timestamp;
use redstore_proto::analytics::{ProductFigures, SalesBucket, SalesFigures};
use redstore_proto::common::Money;
use redstore_proto::events::EventEnvelope;
use sqlx::postgres::{PgListener, PgRow};
use sqlx::{PgConnection, Row as _};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::CONSUMER_GROUP;
use crate::fold::{Fold, MinuteFigures};
use crate::grpc::{Report, Reports};

/// Analytics' PostgreSQL migrations (`migrations/postgres`), in schema `analytics`.
pub static PG_SCHEMA: pg::PgSchema =
    pg::PgSchema { name: "analytics", migrator: &sqlx::migrate!("migrations/postgres") };

pub(crate) const BATCH: u32 = 500;
const SWEEP: Duration = Duration::from_secs(5);

/// Counts events into the rollups, each once per event id, in the caller's transaction (scoped to
/// the events' store): three statements however many events, the figures added up here first.
pub async fn apply_all(conn: &mut PgConnection, events: &[EventEnvelope]) -> Result<()> {
    let mut ids = Vec::with_capacity(events.len());
    for event in events {
        let id = uuid::Uuid::parse_str(&event.event_id)
            .map_err(|e| redstore_platform::Error::Internal(anyhow::anyhow!("bad event id {}: {e}", event.event_id)))?;
        ids.push(id);
    }
    let stores: Vec<&str> = events.iter().map(|e| e.store_id.as_str()).collect();
    // A redelivered event (or one twice in `events`) is counted once.
    let fresh: HashSet<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO analytics.processed (event_id, store_id) SELECT * FROM unnest($1::uuid[], $2::text[])
         ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(&ids)
    .bind(&stores)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let mut fold = Fold::default();
    let mut counted = HashSet::with_capacity(fresh.len());
    for (event, id) in events.iter().zip(&ids) {
        if fresh.contains(id) && counted.insert(*id) {
            fold.add(event);
        }
    }
    if fold.is_empty() {
        return Ok(());
    }
    let Fold { minutes, products } = fold;
    let column = |f: fn(&MinuteFigures) -> i64| minutes.values().map(f).collect::<Vec<i64>>();
    sqlx::query(
        "INSERT INTO analytics.minute AS m (store_id, minute_ms, currency_code, sales_count, units_sold, gross_minor,
                                           refund_count, units_refunded, refunds_minor)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
                              $7::bigint[], $8::bigint[], $9::bigint[])
         ON CONFLICT (store_id, minute_ms, currency_code) DO UPDATE SET
           sales_count = m.sales_count + excluded.sales_count, units_sold = m.units_sold + excluded.units_sold,
           gross_minor = m.gross_minor + excluded.gross_minor, refund_count = m.refund_count + excluded.refund_count,
           units_refunded = m.units_refunded + excluded.units_refunded,
           refunds_minor = m.refunds_minor + excluded.refunds_minor",
    )
    .bind(minutes.keys().map(|k| k.0).collect::<Vec<_>>())
    .bind(minutes.keys().map(|k| k.1).collect::<Vec<_>>())
    .bind(minutes.keys().map(|k| k.2.as_str()).collect::<Vec<_>>())
    .bind(column(|f| f.sales))
    .bind(column(|f| f.units_sold))
    .bind(column(|f| f.gross_minor))
    .bind(column(|f| f.refunds))
    .bind(column(|f| f.units_refunded))
    .bind(column(|f| f.refunds_minor))
    .execute(&mut *conn)
    .await?;
    if products.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO analytics.product_minute AS p (store_id, minute_ms, sku, currency_code, name, units_sold,
                                                   units_refunded, net_minor)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                              $7::bigint[], $8::bigint[])
         ON CONFLICT (store_id, minute_ms, sku, currency_code) DO UPDATE SET
           name = excluded.name, units_sold = p.units_sold + excluded.units_sold,
           units_refunded = p.units_refunded + excluded.units_refunded, net_minor = p.net_minor + excluded.net_minor",
    )
    .bind(products.keys().map(|k| k.0).collect::<Vec<_>>())
    .bind(products.keys().map(|k| k.1).collect::<Vec<_>>())
    .bind(products.keys().map(|k| k.2).collect::<Vec<_>>())
    .bind(products.keys().map(|k| k.3.as_str()).collect::<Vec<_>>())
    .bind(products.values().map(|p| p.name).collect::<Vec<_>>())
    .bind(products.values().map(|p| p.sold).collect::<Vec<_>>())
    .bind(products.values().map(|p| p.refunded).collect::<Vec<_>>())
    .bind(products.values().map(|p| p.net_minor).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The store's offset (every sale event up to this sequence is counted), row-locked for the
/// caller's transaction (scoped to the store): the lock serialises whoever folds the store's
/// events, in any process.
pub(crate) async fn lock_offset(conn: &mut PgConnection, store_id: &str) -> Result<u64> {
    sqlx::query(
        "INSERT INTO platform.consumer_offsets (group_name, topic, store_id, last_seq) VALUES ($1, 'sales', $2, 0)
         ON CONFLICT DO NOTHING",
    )
    .bind(CONSUMER_GROUP)
    .bind(store_id)
    .execute(&mut *conn)
    .await?;
    let offset: i64 = sqlx::query_scalar(
        "SELECT last_seq FROM platform.consumer_offsets WHERE group_name = $1 AND topic = 'sales' AND store_id = $2
         FOR UPDATE",
    )
    .bind(CONSUMER_GROUP)
    .bind(store_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(offset.max(0) as u64)
}

/// Moves the store's offset (locked by [`lock_offset`] in the same transaction) to `seq`.
pub(crate) async fn set_offset(conn: &mut PgConnection, store_id: &str, seq: u64) -> Result<()> {
    sqlx::query(
        "UPDATE platform.consumer_offsets SET last_seq = $3 WHERE group_name = $1 AND topic = 'sales' AND store_id = $2",
    )
    .bind(CONSUMER_GROUP)
    .bind(store_id)
    .bind(seq as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The store's sale events after `after` up to `until`, at most `limit`, in sequence order, with
/// the sequence of the last row read (`None`: there was none). A row whose body is not an event
/// envelope is left out with a warning (its Kafka copy was dead-lettered) rather than stopping
/// every later event of the store behind it.
pub(crate) async fn outbox_page(
    conn: &mut PgConnection,
    store_id: &str,
    after: u64,
    until: u64,
    limit: u32,
) -> Result<(Vec<EventEnvelope>, Option<u64>)> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT store_seq, body FROM sales.outbox WHERE store_id = $1 AND store_seq > $2 AND store_seq <= $3
         ORDER BY store_seq LIMIT $4",
    )
    .bind(store_id)
    .bind(after as i64)
    .bind(until.min(i64::MAX as u64) as i64)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    let last = rows.last().map(|(seq, _)| *seq as u64);
    let mut events = Vec::with_capacity(rows.len());
    for (seq, body) in rows {
        match pg::outbox_event(seq, &body) {
            Ok(event) => events.push(event),
            Err(e) => {
                redstore_platform::warn_throttled!(store_id, store_seq = seq, error = %e, "sales outbox row is not an event; not counted")
            }
        }
    }
    Ok((events, last))
}

pub async fn consume_store(pool: &PgPool, store_id: &str) -> Result<usize> {
    let mut total = 0;
    loop {
        let mut tx = pg::store_tx(pool, store_id).await?;
        let offset = lock_offset(&mut tx, store_id).await?;
        let events = pg::events_after(&mut tx, "sales", store_id, offset, BATCH).await?;
        let Some(last) = events.last().map(|e| e.store_seq) else {
            tx.commit().await?;
            return Ok(total);
        };
        apply_all(&mut tx, &events).await?;
        set_offset(&mut tx, store_id, last).await?;
        tx.commit().await?;
        total += events.len();
        if events.len() < BATCH as usize {
            return Ok(total);
        }
    }
}

/// Runs the consumer until `shutdown`: woken per store by `NOTIFY redstore_sales`, and every few
/// seconds sweeping the stores whose sales outbox is ahead of their offset (one statement,
/// [`pg::stores_behind`]), so a missed notification only delays, never loses, an event.
pub fn spawn_consumer(pool: PgPool, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "analytics consumer cannot listen for notifications");
                return;
            }
        };
        if let Err(e) = listener.listen("redstore_sales").await {
            tracing::error!(error = %e, "analytics consumer cannot LISTEN redstore_sales");
            return;
        }
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            let mut dirty = BTreeSet::new();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sweep.tick() => match pg::stores_behind(&pool, "sales", CONSUMER_GROUP).await {
                    Ok(behind) => dirty.extend(behind.into_iter().map(|b| b.store_id)),
                    Err(e) => tracing::warn!(error = %e, "analytics sweep cannot list stores"),
                },
                n = listener.recv() => match n {
                    Ok(n) => {
                        if let Some((store, _)) = n.payload().rsplit_once(':') {
                            dirty.insert(store.to_owned());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "analytics notification stream interrupted"),
                },
            }
            for store in dirty {
                if let Err(e) = consume_store(&pool, &store).await {
                    redstore_platform::warn_throttled!(error = %e, store_id = %store, "analytics consumer will retry the store");
                }
            }
        }
    })
}

/// Reports from the PostgreSQL rollups.
pub struct PgReports {
    pub pool: PgPool,
    pub inventory: Arc<dyn InventoryStore>,
}

fn figures(r: &PgRow, first: usize) -> std::result::Result<SalesFigures, sqlx::Error> {
    let currency: String = r.try_get(first)?;
    let gross: i64 = r.try_get(first + 3)?;
    let refunds: i64 = r.try_get(first + 6)?;
    let money = |minor| Some(Money { currency_code: currency.clone(), units_minor: minor });
    Ok(SalesFigures {
        sales_count: r.try_get(first + 1)?,
        units_sold: r.try_get(first + 2)?,
        gross: money(gross),
        refund_count: r.try_get(first + 4)?,
        units_refunded: r.try_get(first + 5)?,
        refunds: money(refunds),
        net: money(gross - refunds),
    })
}

const SUMS: &str = "currency_code, SUM(sales_count)::BIGINT, SUM(units_sold)::BIGINT, SUM(gross_minor)::BIGINT, \
                    SUM(refund_count)::BIGINT, SUM(units_refunded)::BIGINT, SUM(refunds_minor)::BIGINT";

#[tonic::async_trait]
impl Reports for PgReports {
    async fn report(&self, store_id: &str, from_ms: i64, to_ms: i64, size: i64, top: u32) -> Result<Report> {
        self.inventory.get_store(store_id).await?;
        // The buckets, the totals and the top products from one snapshot: a fold committed
        // between two of them would show a sale in one and not in the other.
        let mut tx = pg::store_snapshot(&self.pool, store_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT (minute_ms / $4) * $4 AS bucket, {SUMS} FROM analytics.minute
             WHERE store_id = $1 AND minute_ms >= $2 AND minute_ms < $3
             GROUP BY bucket, currency_code ORDER BY bucket, currency_code"
        ))
        .bind(store_id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(size)
        .fetch_all(&mut *tx)
        .await?;
        let buckets = rows
            .iter()
            .map(|r| Ok(SalesBucket { start: Some(timestamp(r.try_get(0)?)), figures: Some(figures(r, 1)?) }))
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
        let rows = sqlx::query(&format!(
            "SELECT {SUMS} FROM analytics.minute WHERE store_id = $1 AND minute_ms >= $2 AND minute_ms < $3
             GROUP BY currency_code ORDER BY currency_code"
        ))
        .bind(store_id)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&mut *tx)
        .await?;
        let totals = rows.iter().map(|r| figures(r, 0)).collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
        let rows = sqlx::query(
            "SELECT sku, MAX(name), SUM(units_sold)::BIGINT AS sold, SUM(units_refunded)::BIGINT,
                    SUM(net_minor)::BIGINT, currency_code
             FROM analytics.product_minute WHERE store_id = $1 AND minute_ms >= $2 AND minute_ms < $3
             GROUP BY sku, currency_code ORDER BY sold DESC, sku LIMIT $4",
        )
        .bind(store_id)
        .bind(from_ms)
        .bind(to_ms)
        .bind(i64::from(top))
        .fetch_all(&mut *tx)
        .await?;
        let products = rows
            .iter()
            .map(|r| {
                let currency: String = r.try_get(5)?;
                Ok(ProductFigures {
                    sku: r.try_get(0)?,
                    name: r.try_get(1)?,
                    units_sold: r.try_get(2)?,
                    units_refunded: r.try_get(3)?,
                    net: Some(Money { currency_code: currency, units_minor: r.try_get(4)? }),
                })
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
        tx.commit().await?;
        Ok((buckets, totals, products))
    }
}
