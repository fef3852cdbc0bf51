//! Imports on PostgreSQL: a batch of products in one transaction, a stream of stock batches in one
//! transaction; each table written with array statements (`unnest`), decided in Rust. Products
//! and barcodes are chain-wide (no row-level security); a stock load scopes its transaction to
//! each store it counts in, in turn, before it touches that store's rows.

use std::collections::{HashMap, HashSet};

use futures::StreamExt as _;
use prost::Message as _;
use redstore_platform::error::Result;
use redstore_platform::idempotency::{key_reused, key_unanswered};
use redstore_platform::pg::{self, Claim, PgPool};
use redstore_proto::events::{StockLoaded, event_envelope::Payload};
use redstore_proto::inventory as pb;

use sqlx::{PgConnection, Row as _};

use super::{SCHEMA, now_ms};
use crate::domain::{self, ImportProduct, StockCount};
use crate::store::{
    IMPORT_PRODUCTS_SCOPE, IMPORT_STOCK_SCOPE, Idem, ImportTotals, Imported, StockBatch, StockBatches, in_batch,
};

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

/// Sets a batch of counts: a stream of one batch ([`import_stock_stream`]), its errors named
/// from the batch (`counts[1].sku`).
pub async fn import_stock(pool: &PgPool, idem: &Idem, stores: &[(String, Vec<StockCount>)]) -> Result<Imported> {
    let batch = StockBatch { idem: idem.clone(), stores: stores.to_vec() };
    let totals = load(pool, futures::stream::iter([Ok(batch)]).boxed()).await.map_err(|(_, e)| e)?;
    Ok(Imported { records: totals.records as u32, replayed: totals.replayed > 0 })
}

/// Sets a stream of stock batches in ONE transaction, so that a refusal anywhere (a bad record, an
/// unknown store or sku, a key reused for another batch, a dropped stream) leaves nothing of the
/// stream applied; each batch's key is claimed in it, so a batch applied before is a replay.
/// Errors name their batch (`batches[3].counts[17].sku`).
///
/// Per store, the first time the load counts in it: its scope, its next sequence (which row-locks
/// the store's sequence until the commit, so the store's other writers wait for the load, as they
/// wait for a sale) and one `inventory.stock_loaded` event: consumers re-read the store's levels
/// rather than applying a change per count. Stores are locked in the order the stream first
/// counts in them: a client sends its counts sorted by store (as `redstore import stock` does), the
/// order sales lock stores in, so that a load and a batch of sales never wait for each other in
/// a circle.
pub async fn import_stock_stream(pool: &PgPool, batches: StockBatches<'_>) -> Result<ImportTotals> {
    load(pool, batches).await.map_err(|(index, e)| match index {
        Some(index) => in_batch(e, index),
        None => e,
    })
}

/// How many counts a stock load gathers before it writes them: fewer, larger statements.
const FLUSH_COUNTS: usize = 20_000;

/// An error of a stock load with the index of the batch it refuses (none: the stream's own error,
/// named in its batch already).
type Refusal = (Option<u64>, redstore_platform::Error);

async fn load(pool: &PgPool, mut batches: StockBatches<'_>) -> std::result::Result<ImportTotals, Refusal> {
    let tx = pg::begin(pool, "BEGIN").await.map_err(|e| (None, e))?;
    let mut load = StockLoad { tx, state: LoadState::default() };
    let mut next_index = 0u64;
    let mut pending: Vec<(u64, StockBatch)> = Vec::new();
    let mut pending_counts = 0;
    while let Some(batch) = batches.next().await {
        let index = next_index;
        next_index += 1;
        let batch = batch.map_err(|e| (None, e))?;
        for (store_id, _) in &batch.stores {
            pg::check_store_id(store_id).map_err(|e| (Some(index), e))?;
        }
        pending_counts += batch.stores.iter().map(|(_, counts)| counts.len()).sum::<usize>();
        pending.push((index, batch));
        if pending_counts >= FLUSH_COUNTS {
            load.flush(std::mem::take(&mut pending)).await?;
            pending_counts = 0;
        }
    }
    load.flush(pending).await?;
    load.finish(pool).await.map_err(|e| (None, e))
}

/// A store's counts to write: skus, levels, and where each sku is in them.
type StoreCounts = (Vec<String>, Vec<i64>, HashMap<String, usize>);

/// A database error of a stock load, at the batch it was writing.
fn db(index: u64) -> impl Fn(sqlx::Error) -> Refusal {
    move |e| (Some(index), e.into())
}

/// One stock load: its transaction and what it has done in it.
struct StockLoad {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    state: LoadState,
}

#[derive(Default)]
struct LoadState {
    /// Every key of the load with its fingerprint and what it answers.
    keys: HashMap<String, (Vec<u8>, Imported)>,
    /// The keys this load claimed, with the records of their batches: answered at the end.
    claimed: Vec<(String, u32)>,
    known_stores: HashSet<String>,
    known_skus: HashSet<String>,
    /// The stores counted in, each with the sequence of its `inventory.stock_loaded` event.
    locked_at: HashMap<String, u64>,
    /// The store the transaction is scoped to now.
    scoped: Option<String>,
    totals: ImportTotals,
}

impl StockLoad {
    /// Claims the batches' keys, checks that their stores and skus exist, and writes the counts
    /// of the batches not applied before: one statement per store.
    async fn flush(&mut self, pending: Vec<(u64, StockBatch)>) -> std::result::Result<(), Refusal> {
        if pending.is_empty() {
            return Ok(());
        }
        let fresh = self.claim(pending).await?;
        self.check_exist(&fresh).await?;
        // Each store's counts in the order the load first counts in it; a sku counted again by a
        // later batch of the load takes the later count.
        let mut order: Vec<(String, u64)> = Vec::new();
        let mut rows: HashMap<String, StoreCounts> = HashMap::new();
        for (index, batch) in fresh {
            let mut records = 0u32;
            for (store_id, counts) in batch.stores {
                records += counts.len() as u32;
                let (skus, quantities, at) = rows.entry(store_id.clone()).or_insert_with(|| {
                    order.push((store_id, index));
                    Default::default()
                });
                for count in counts {
                    let level = domain::counted_level(&count);
                    match at.get(&count.sku) {
                        Some(&i) => quantities[i] = level,
                        None => {
                            at.insert(count.sku.clone(), skus.len());
                            skus.push(count.sku);
                            quantities.push(level);
                        }
                    }
                }
            }
            self.state.claimed.push((batch.idem.key.clone(), records));
            let imported = Imported { records, replayed: false };
            self.state.keys.insert(batch.idem.key, (batch.idem.fingerprint, imported));
            self.state.totals.add(imported);
        }
        for (store_id, index) in order {
            let (skus, quantities, _) = rows.remove(&store_id).unwrap_or_default();
            let seq = self.lock(&store_id).await.map_err(|e| (Some(index), e))?;
            self.write(&store_id, seq, &skus, &quantities).await.map_err(|e| (Some(index), e))?;
        }
        Ok(())
    }

    /// Claims the keys of the batches in two statements and returns the batches to apply: a key
    /// applied before (in this load or committed) is a replay, another batch under it refuses.
    async fn claim(&mut self, pending: Vec<(u64, StockBatch)>) -> std::result::Result<Vec<(u64, StockBatch)>, Refusal> {
        let first = pending.first().map_or(0, |(index, _)| *index);
        let mut new_keys: Vec<&str> = Vec::new();
        let mut new_requests: Vec<&[u8]> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for (index, batch) in &pending {
            if let Some((fingerprint, _)) = self.state.keys.get(&batch.idem.key) {
                if *fingerprint != batch.idem.fingerprint {
                    return Err((Some(*index), key_reused(IMPORT_STOCK_SCOPE, &batch.idem.key)));
                }
            } else if seen.insert(&batch.idem.key) {
                new_keys.push(&batch.idem.key);
                new_requests.push(&batch.idem.fingerprint);
            }
        }
        let inserted: Vec<String> = if new_keys.is_empty() {
            Vec::new()
        } else {
            sqlx::query_scalar(
                "INSERT INTO platform.idempotency_keys (scope, key, request)
                 SELECT $1, u.key, u.request FROM unnest($2::text[], $3::bytea[]) AS u (key, request)
                 ON CONFLICT DO NOTHING RETURNING key",
            )
            .bind(IMPORT_STOCK_SCOPE)
            .bind(&new_keys)
            .bind(&new_requests)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(db(first))?
        };
        let inserted: HashSet<&str> = inserted.iter().map(String::as_str).collect();
        let before: Vec<&str> = new_keys.iter().copied().filter(|k| !inserted.contains(k)).collect();
        let mut stored: HashMap<String, (Vec<u8>, Option<Vec<u8>>)> = HashMap::new();
        if !before.is_empty() {
            let rows = sqlx::query(
                "SELECT key, request, response FROM platform.idempotency_keys WHERE scope = $1 AND key = ANY($2)",
            )
            .bind(IMPORT_STOCK_SCOPE)
            .bind(&before)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(db(first))?;
            for row in &rows {
                let (key, request, response) = (
                    row.try_get(0).map_err(db(first))?,
                    row.try_get(1).map_err(db(first))?,
                    row.try_get(2).map_err(db(first))?,
                );
                stored.insert(key, (request, response));
            }
        }
        let inserted: HashSet<String> = inserted.into_iter().map(str::to_owned).collect();
        // The keys claimed by batches of this flush: a later batch under one is a replay or refused.
        let mut taken: HashMap<String, Vec<u8>> = HashMap::new();
        let mut fresh = Vec::with_capacity(pending.len());
        for (index, batch) in pending {
            let key = &batch.idem.key;
            if let Some((fingerprint, imported)) = self.state.keys.get(key) {
                // Applied earlier in this load (or refused above when it differs).
                debug_assert_eq!(*fingerprint, batch.idem.fingerprint);
                let replay = Imported { records: imported.records, replayed: true };
                self.state.totals.add(replay);
                continue;
            }
            if let Some(fingerprint) = taken.get(key) {
                if *fingerprint != batch.idem.fingerprint {
                    return Err((Some(index), key_reused(IMPORT_STOCK_SCOPE, key)));
                }
                let records = batch.stores.iter().map(|(_, counts)| counts.len() as u32).sum();
                self.state.totals.add(Imported { records, replayed: true });
                continue;
            }
            if inserted.contains(key) {
                taken.insert(key.clone(), batch.idem.fingerprint.clone());
                fresh.push((index, batch));
                continue;
            }
            let Some((request, response)) = stored.remove(key) else {
                return Err((Some(index), key_unanswered(IMPORT_STOCK_SCOPE, key)));
            };
            if request != batch.idem.fingerprint {
                return Err((Some(index), key_reused(IMPORT_STOCK_SCOPE, key)));
            }
            let Some(response) = response else {
                return Err((Some(index), key_unanswered(IMPORT_STOCK_SCOPE, key)));
            };
            let answer: pb::ImportBatchResult = pg::replay(&response).map_err(|e| (Some(index), e))?;
            let replay = Imported { records: answer.records, replayed: true };
            self.state.keys.insert(batch.idem.key, (batch.idem.fingerprint, replay));
            self.state.totals.add(replay);
        }
        Ok(fresh)
    }

    /// Refuses the first batch that counts in a store or a sku that does not exist
    /// ([`domain::check_counted_exist`]); each store and sku is looked up once per load.
    async fn check_exist(&mut self, fresh: &[(u64, StockBatch)]) -> std::result::Result<(), Refusal> {
        let Some(first) = fresh.first().map(|(index, _)| *index) else { return Ok(()) };
        let state = &mut self.state;
        let mut stores: Vec<&str> = Vec::new();
        let mut skus: Vec<&str> = Vec::new();
        for (_, batch) in fresh {
            for (store_id, counts) in &batch.stores {
                if !state.known_stores.contains(store_id) {
                    stores.push(store_id);
                }
                skus.extend(counts.iter().map(|c| c.sku.as_str()).filter(|s| !state.known_skus.contains(*s)));
            }
        }
        stores.sort_unstable();
        stores.dedup();
        skus.sort_unstable();
        skus.dedup();
        if !stores.is_empty() {
            let found: Vec<String> =
                sqlx::query_scalar("SELECT store_id FROM inventory.stores WHERE store_id = ANY($1)")
                    .bind(&stores)
                    .fetch_all(&mut *self.tx)
                    .await
                    .map_err(db(first))?;
            state.known_stores.extend(found);
        }
        if !skus.is_empty() {
            let found: Vec<String> = sqlx::query_scalar("SELECT sku FROM inventory.products WHERE sku = ANY($1)")
                .bind(&skus)
                .fetch_all(&mut *self.tx)
                .await
                .map_err(db(first))?;
            state.known_skus.extend(found);
        }
        for (index, batch) in fresh {
            domain::check_counted_exist(
                &batch.stores,
                |s| state.known_stores.contains(s),
                |s| state.known_skus.contains(s),
            )
            .map_err(|e| (Some(*index), e))?;
        }
        Ok(())
    }

    /// Scopes the transaction to the store, and the first time: takes the store's next sequence
    /// and appends its `inventory.stock_loaded` event.
    async fn lock(&mut self, store_id: &str) -> Result<u64> {
        if self.state.scoped.as_deref() != Some(store_id) {
            pg::scope_to_store(&mut self.tx, store_id).await?;
            self.state.scoped = Some(store_id.to_owned());
        }
        if let Some(&seq) = self.state.locked_at.get(store_id) {
            return Ok(seq);
        }
        let seq = pg::next_seq(&mut self.tx, SCHEMA, store_id).await?;
        let reference_id = self.state.claimed.last().map(|(key, _)| key.clone()).unwrap_or_default();
        let payload = Payload::StockLoaded(StockLoaded { reason: domain::IMPORT_REASON.to_owned(), reference_id });
        // Listeners are woken after the commit (`finish`), once per store.
        pg::append_event_unnotified(&mut self.tx, SCHEMA, store_id, seq, payload).await?;
        self.state.locked_at.insert(store_id.to_owned(), seq);
        Ok(seq)
    }

    /// Sets a store's levels: one array statement.
    async fn write(&mut self, store_id: &str, seq: u64, skus: &[String], quantities: &[i64]) -> Result<()> {
        sqlx::query(
            "INSERT INTO inventory.stock (store_id, sku, quantity, last_seq)
             SELECT $1, u.sku, u.quantity, $4 FROM unnest($2::text[], $3::bigint[]) AS u (sku, quantity)
             ON CONFLICT (store_id, sku) DO UPDATE SET quantity = EXCLUDED.quantity, last_seq = EXCLUDED.last_seq",
        )
        .bind(store_id)
        .bind(skus)
        .bind(quantities)
        .bind(seq as i64)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Stores each claimed key's answer, commits, and notifies each store's listeners.
    async fn finish(mut self, pool: &PgPool) -> Result<ImportTotals> {
        if !self.state.claimed.is_empty() {
            let keys: Vec<&str> = self.state.claimed.iter().map(|(k, _)| k.as_str()).collect();
            let answers: Vec<Vec<u8>> = self
                .state
                .claimed
                .iter()
                .map(|(_, records)| pb::ImportBatchResult { records: *records }.encode_to_vec())
                .collect();
            sqlx::query(
                "UPDATE platform.idempotency_keys k SET response = u.response
                 FROM unnest($2::text[], $3::bytea[]) AS u (key, response)
                 WHERE k.scope = $1 AND k.key = u.key",
            )
            .bind(IMPORT_STOCK_SCOPE)
            .bind(&keys)
            .bind(&answers)
            .execute(&mut *self.tx)
            .await?;
        }
        self.tx.commit().await?;
        let notify = self.state.locked_at.into_iter().map(|(store_id, seq)| (SCHEMA, store_id, seq)).collect();
        pg::notify_committed_soon_many(pool, notify);
        Ok(self.state.totals)
    }
}
