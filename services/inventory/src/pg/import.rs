//! Import batches on PostgreSQL: a batch of products or of stock counts in one transaction, each
//! table written with one array statement (`unnest`), decided in Rust
//! ([`crate::domain::decide_count`]). Products and barcodes are chain-wide (no row-level
//! security); a stock batch scopes its transaction to each store it counts in, in turn, before it
//! touches that store's rows.

use prost::Message as _;
use redstore_platform::error::Result;
use redstore_platform::pg::{self, Claim, PgPool};
use redstore_proto::events::{InventoryChanged, StockChange, event_envelope::Payload};
use redstore_proto::inventory as pb;
use std::collections::HashSet;

use sqlx::{PgConnection, Row as _};

use super::{SCHEMA, now_ms};
use crate::domain::{self, ImportProduct, StockCount};
use crate::store::{IMPORT_PRODUCTS_SCOPE, IMPORT_STOCK_SCOPE, Idem, Imported};

/// Claims a batch's key in the transaction: `Some` when the batch was applied before (its stored
/// answer, as a replay).
async fn claim(conn: &mut PgConnection, scope: &str, idem: &Idem) -> Result<Option<Imported>> {
    match pg::claim(conn, scope, &idem.key, &idem.fingerprint).await? {
        Claim::Fresh => Ok(None),
        Claim::Replay(stored) => {
            let answer: pb::ImportBatchResult = pg::replay(&stored)?;
            Ok(Some(Imported { records: answer.records, replayed: true }))
        }
    }
}

/// Creates or replaces a batch of products with exactly their barcodes: one transaction, four
/// statements after the key's claim (products upserted, the batch's barcodes cleared, the new
/// ones inserted, the answer stored).
pub async fn import_products(pool: &PgPool, idem: &Idem, products: &[ImportProduct]) -> Result<Imported> {
    let mut tx = pg::begin(pool, "BEGIN").await?;
    if let Some(replayed) = claim(&mut tx, IMPORT_PRODUCTS_SCOPE, idem).await? {
        return Ok(replayed);
    }
    let skus: Vec<&str> = products.iter().map(|p| p.product.sku.as_str()).collect();
    let names: Vec<&str> = products.iter().map(|p| p.product.name.as_str()).collect();
    let currencies: Vec<&str> = products.iter().map(|p| p.product.price.currency.as_str()).collect();
    let prices: Vec<i64> = products.iter().map(|p| p.product.price.minor).collect();
    let active: Vec<bool> = products.iter().map(|p| p.product.active).collect();
    sqlx::query(
        "INSERT INTO inventory.products (sku, name, currency_code, price_minor, active, updated_at_ms)
         SELECT u.sku, u.name, u.currency, u.price, u.active, $6
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bool[]) AS u (sku, name, currency, price, active)
         ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, currency_code = EXCLUDED.currency_code,
             price_minor = EXCLUDED.price_minor, active = EXCLUDED.active, updated_at_ms = EXCLUDED.updated_at_ms",
    )
    .bind(&skus)
    .bind(&names)
    .bind(&currencies)
    .bind(&prices)
    .bind(&active)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM inventory.product_barcodes WHERE sku = ANY($1)").bind(&skus).execute(&mut *tx).await?;
    // Where each barcode goes: (product index, barcode index), to name a refused one.
    let mut codes = Vec::new();
    let mut owners = Vec::new();
    let mut at = std::collections::HashMap::new();
    for (i, p) in products.iter().enumerate() {
        for (j, b) in p.barcodes.iter().enumerate() {
            codes.push(b.gtin13());
            owners.push(p.product.sku.as_str());
            at.insert(b.gtin13(), (i, j));
        }
    }
    if !codes.is_empty() {
        // A barcode another product holds keeps its owner (the no-op update returns it, waiting
        // for a concurrent insert of it to commit first), and refuses the batch.
        let rows = sqlx::query(
            "INSERT INTO inventory.product_barcodes (gtin13, sku)
             SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT (gtin13) DO UPDATE SET sku = inventory.product_barcodes.sku
             RETURNING gtin13, sku",
        )
        .bind(&codes)
        .bind(&owners)
        .fetch_all(&mut *tx)
        .await?;
        let mut refused: Option<(usize, usize, String)> = None;
        for row in &rows {
            let (code, owner): (&str, &str) = (row.try_get(0)?, row.try_get(1)?);
            let Some(&(i, j)) = at.get(code) else { continue };
            if owner != products[i].product.sku && refused.as_ref().is_none_or(|(fi, fj, _)| (i, j) < (*fi, *fj)) {
                refused = Some((i, j, owner.to_owned()));
            }
        }
        if let Some((i, j, owner)) = refused {
            return Err(crate::repo::barcode_taken(i, j, &products[i].barcodes[j], &owner));
        }
    }
    let answer = pb::ImportBatchResult { records: products.len() as u32 };
    pg::complete(&mut tx, IMPORT_PRODUCTS_SCOPE, &idem.key, &answer).await?;
    tx.commit().await?;
    Ok(Imported { records: answer.records, replayed: false })
}

/// Sets a batch of counts, store by store in the given (lock) order, in one transaction; each
/// store's listeners are notified after the commit. Per store: its scope, its next sequence (the
/// store's writers queue on it, as sales do, before any stock row), its stock rows read and
/// locked, one upsert of every count, one outbox event.
pub async fn import_stock(pool: &PgPool, idem: &Idem, stores: &[(String, Vec<StockCount>)]) -> Result<Imported> {
    for (store_id, _) in stores {
        pg::check_store_id(store_id)?;
    }
    let mut tx = pg::begin(pool, "BEGIN").await?;
    if let Some(replayed) = claim(&mut tx, IMPORT_STOCK_SCOPE, idem).await? {
        return Ok(replayed);
    }
    check_exist(&mut tx, stores).await?;
    let mut notify = Vec::with_capacity(stores.len());
    let mut records = 0;
    for (store_id, counts) in stores {
        pg::scope_to_store(&mut tx, store_id).await?;
        let seq = pg::next_seq(&mut tx, SCHEMA, store_id).await?;
        let skus: Vec<&str> = counts.iter().map(|c| c.sku.as_str()).collect();
        let rows =
            sqlx::query("SELECT sku, quantity FROM inventory.stock WHERE store_id = $1 AND sku = ANY($2) FOR UPDATE")
                .bind(store_id)
                .bind(&skus)
                .fetch_all(&mut *tx)
                .await?;
        let mut current = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            current.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
        }
        let mut quantities = Vec::with_capacity(counts.len());
        let mut changes = Vec::with_capacity(counts.len());
        for c in counts {
            let (movement, quantity) = domain::decide_count(current.get(&c.sku).copied().unwrap_or(0), c);
            quantities.push(quantity);
            changes.push(StockChange {
                sku: movement.sku,
                delta: movement.delta,
                quantity_after: quantity,
                negative: false,
            });
        }
        let occurred_at_ms = now_ms();
        let event_id = uuid::Uuid::now_v7();
        let payload = Payload::InventoryChanged(InventoryChanged {
            reason: domain::IMPORT_REASON.to_owned(),
            reference_id: idem.key.clone(),
            terminal_id: String::new(),
            changes,
        });
        let envelope = redstore_platform::eventlog::envelope(event_id, store_id, seq, occurred_at_ms, payload);
        // The counts and the event in one statement.
        sqlx::query(
            "WITH counted AS (
                 INSERT INTO inventory.stock (store_id, sku, quantity, last_seq)
                 SELECT $1, u.sku, u.quantity, $4 FROM unnest($2::text[], $3::bigint[]) AS u (sku, quantity)
                 ON CONFLICT (store_id, sku) DO UPDATE SET quantity = EXCLUDED.quantity, last_seq = EXCLUDED.last_seq)
             INSERT INTO inventory.outbox (event_id, store_id, store_seq, event_type, occurred_at_ms, body)
             VALUES ($5, $1, $4, $6, $7, $8)",
        )
        .bind(store_id)
        .bind(&skus)
        .bind(&quantities)
        .bind(seq as i64)
        .bind(event_id)
        .bind(&envelope.r#type)
        .bind(occurred_at_ms)
        .bind(envelope.encode_to_vec())
        .execute(&mut *tx)
        .await?;
        records += counts.len() as u32;
        notify.push((store_id.as_str(), seq));
    }
    let answer = pb::ImportBatchResult { records };
    pg::complete(&mut tx, IMPORT_STOCK_SCOPE, &idem.key, &answer).await?;
    tx.commit().await?;
    for (store_id, seq) in notify {
        pg::notify_committed_soon(pool, SCHEMA, store_id, seq);
    }
    Ok(Imported { records, replayed: false })
}

/// Refuses a batch that counts in a store or a sku that does not exist
/// ([`domain::check_counted_exist`]), reading which exist in two statements.
async fn check_exist(conn: &mut PgConnection, stores: &[(String, Vec<StockCount>)]) -> Result<()> {
    let store_ids: Vec<&str> = stores.iter().map(|(s, _)| s.as_str()).collect();
    let found: Vec<String> = sqlx::query_scalar("SELECT store_id FROM inventory.stores WHERE store_id = ANY($1)")
        .bind(&store_ids)
        .fetch_all(&mut *conn)
        .await?;
    let found: HashSet<&str> = found.iter().map(String::as_str).collect();
    let mut skus: Vec<&str> = stores.iter().flat_map(|(_, counts)| counts.iter().map(|c| c.sku.as_str())).collect();
    skus.sort_unstable();
    skus.dedup();
    let known: Vec<String> = sqlx::query_scalar("SELECT sku FROM inventory.products WHERE sku = ANY($1)")
        .bind(&skus)
        .fetch_all(&mut *conn)
        .await?;
    let known: HashSet<&str> = known.iter().map(String::as_str).collect();
    domain::check_counted_exist(stores, |s| found.contains(s), |s| known.contains(s))
}
