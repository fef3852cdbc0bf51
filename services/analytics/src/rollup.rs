//! Folding one event into the rollups; runs in the consumer's transaction.

use redstore_platform::error::Result;
use redstore_platform::time::timestamp_ms;
use redstore_proto::events::{EventEnvelope, SaleLineFact, event_envelope::Payload};
use rusqlite::{Connection, params};

const MINUTE_MS: i64 = 60_000;

fn minor(m: Option<&redstore_proto::common::Money>) -> (String, i64) {
    m.map_or((String::new(), 0), |m| (m.currency_code.clone(), m.units_minor))
}

/// Adds one event to the rollups unless its id was counted before. Returns whether it counted.
pub fn apply(conn: &Connection, event: &EventEnvelope) -> Result<bool> {
    let fresh = conn
        .prepare_cached("INSERT INTO analytics_processed (event_id) VALUES (?1) ON CONFLICT DO NOTHING")?
        .execute([&event.event_id])?;
    if fresh == 0 {
        return Ok(false);
    }
    let at = event.occurred_at.as_ref().map_or(0, timestamp_ms);
    let minute = at - at.rem_euclid(MINUTE_MS);
    let store = &event.store_id;
    match &event.payload {
        Some(Payload::SaleCompleted(sale)) => {
            let (currency, gross) = minor(sale.total.as_ref());
            let units: i64 = sale.lines.iter().map(|l| l.quantity).sum();
            conn.prepare_cached(
                "INSERT INTO analytics_minute (store_id, minute_ms, currency_code, sales_count, units_sold, gross_minor)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5)
                 ON CONFLICT (store_id, minute_ms, currency_code) DO UPDATE SET
                   sales_count = sales_count + 1, units_sold = units_sold + excluded.units_sold,
                   gross_minor = gross_minor + excluded.gross_minor",
            )?
            .execute(params![store, minute, currency, units, gross])?;
            for line in &sale.lines {
                product(conn, store, minute, line, 1)?;
            }
        }
        Some(Payload::SaleRefunded(refund)) => {
            let (currency, amount) = minor(refund.amount.as_ref());
            let units: i64 = refund.lines.iter().map(|l| l.quantity).sum();
            conn.prepare_cached(
                "INSERT INTO analytics_minute (store_id, minute_ms, currency_code, refund_count, units_refunded, refunds_minor)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5)
                 ON CONFLICT (store_id, minute_ms, currency_code) DO UPDATE SET
                   refund_count = refund_count + 1, units_refunded = units_refunded + excluded.units_refunded,
                   refunds_minor = refunds_minor + excluded.refunds_minor",
            )?
            .execute(params![store, minute, currency, units, amount])?;
            for line in &refund.lines {
                product(conn, store, minute, line, -1)?;
            }
        }
        _ => {}
    }
    Ok(true)
}

/// `sign` is 1 for a sale line, -1 for a refund line.
fn product(conn: &Connection, store: &str, minute: i64, line: &SaleLineFact, sign: i64) -> Result<()> {
    let (currency, total) = minor(line.line_total.as_ref());
    let (sold, refunded) = if sign > 0 { (line.quantity, 0) } else { (0, line.quantity) };
    conn.prepare_cached(
        "INSERT INTO analytics_product_minute (store_id, minute_ms, sku, currency_code, name, units_sold, units_refunded, net_minor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (store_id, minute_ms, sku, currency_code) DO UPDATE SET
           name = excluded.name, units_sold = units_sold + excluded.units_sold,
           units_refunded = units_refunded + excluded.units_refunded, net_minor = net_minor + excluded.net_minor",
    )?
    .execute(params![store, minute, line.sku, currency, line.name, sold, refunded, sign * total])?;
    Ok(())
}
