//! Folding a batch of events into the embedded rollups; runs in the consumer's transaction.

use redstore_platform::error::Result;
use redstore_proto::events::EventEnvelope;
use rusqlite::{Connection, params};

use crate::fold::Fold;

/// Adds each event of `events` to the rollups unless its id was counted before: one row write
/// per rollup row the batch touches, however many events it holds.
pub fn apply_all(conn: &Connection, events: &[(i64, EventEnvelope)]) -> Result<()> {
    let mut fold = Fold::default();
    let mut processed =
        conn.prepare_cached("INSERT INTO analytics_processed (event_id) VALUES (?1) ON CONFLICT DO NOTHING")?;
    for (_, event) in events {
        if processed.execute([&event.event_id])? == 1 {
            fold.add(event);
        }
    }
    let mut minute = conn.prepare_cached(
        "INSERT INTO analytics_minute (store_id, minute_ms, currency_code, sales_count, units_sold, gross_minor,
                                       refund_count, units_refunded, refunds_minor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (store_id, minute_ms, currency_code) DO UPDATE SET
           sales_count = sales_count + excluded.sales_count, units_sold = units_sold + excluded.units_sold,
           gross_minor = gross_minor + excluded.gross_minor, refund_count = refund_count + excluded.refund_count,
           units_refunded = units_refunded + excluded.units_refunded,
           refunds_minor = refunds_minor + excluded.refunds_minor",
    )?;
    for ((store, at, currency), f) in &fold.minutes {
        minute.execute(params![
            store,
            at,
            currency,
            f.sales,
            f.units_sold,
            f.gross_minor,
            f.refunds,
            f.units_refunded,
            f.refunds_minor
        ])?;
    }
    let mut product = conn.prepare_cached(
        "INSERT INTO analytics_product_minute (store_id, minute_ms, sku, currency_code, name, units_sold, units_refunded, net_minor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (store_id, minute_ms, sku, currency_code) DO UPDATE SET
           name = excluded.name, units_sold = units_sold + excluded.units_sold,
           units_refunded = units_refunded + excluded.units_refunded, net_minor = net_minor + excluded.net_minor",
    )?;
    for ((store, at, sku, currency), p) in &fold.products {
        product.execute(params![store, at, sku, currency, p.name, p.sold, p.refunded, p.net_minor])?;
    }
    Ok(())
}
