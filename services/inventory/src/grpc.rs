//! The tonic adapter: parses requests (naming the bad field), calls the inventory store, converts
//! back. No business rule lives here.

use std::sync::Arc;

use redstore_platform::audit::{self, Entry, Trail};
use redstore_platform::barcode::Barcode;
use redstore_platform::caller::Caller;
use redstore_platform::error::{Error, Result, identifier, optional_identifier};
use redstore_platform::idempotency::fingerprint;
use redstore_platform::limits;
use redstore_platform::page::Page;
use redstore_platform::text::{optional_text, quote};
use redstore_proto::inventory::inventory_service_server::{InventoryService, InventoryServiceServer};
use redstore_proto::inventory::*;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::StoreRow;
use crate::domain::{self, OversellPolicy, Product, StockMovement};
use crate::store::{
    CheckoutKey, CheckoutsQuery, Idem, InventoryStore, MAX_APPLIED_CHECKOUTS, ProductPatch, SaleOrder, StockBatch,
    in_batch,
};

/// The most skus one GetProducts call may ask for.
const MAX_SKUS_PER_CALL: usize = 1000;
/// The most sales one ApplySales call may carry.
pub const MAX_SALES_PER_CALL: usize = 256;

#[derive(Clone)]
pub struct InventoryGrpc {
    store: Arc<dyn InventoryStore>,
}

impl InventoryGrpc {
    pub fn new(store: Arc<dyn InventoryStore>) -> Self {
        Self { store }
    }

    pub fn into_server(self) -> InventoryServiceServer<Self> {
        InventoryServiceServer::new(self)
    }
}

fn ok<T>(r: Result<T>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

fn adjustment_reason(value: i32) -> Result<&'static str> {
    match AdjustmentReason::try_from(value) {
        Ok(AdjustmentReason::Received) => Ok("received"),
        Ok(AdjustmentReason::Damaged) => Ok("damaged"),
        Ok(AdjustmentReason::Lost) => Ok("lost"),
        Ok(AdjustmentReason::CountCorrection) => Ok("count_correction"),
        _ => Err(Error::invalid("reason", "must be ADJUSTMENT_REASON_RECEIVED, _DAMAGED, _LOST or _COUNT_CORRECTION")),
    }
}

/// An optional idempotency key (an identifier when sent) with the request's fingerprint.
fn idem<M: prost::Message + Clone>(key: &str, req: &M, clear: impl FnOnce(&mut M)) -> Result<Idem> {
    let key = optional_identifier("idempotency_key", key)?.to_owned();
    Ok(Idem { key, fingerprint: fingerprint(req, clear) })
}

/// One sale of ApplySale, or of an ApplySales call for `call_store`, checked in ApplySale's order:
/// the sale id, the store id (for ApplySales: empty, or the call's), the lines. Its fingerprint is
/// that of the sale sent alone to ApplySale (the store id filled in), so either RPC replays the
/// other. Returns the store id with the sale.
fn sale_order(mut sale: ApplySaleRequest, call_store: Option<&str>) -> Result<(String, SaleOrder)> {
    let sale_id = identifier("sale_id", &sale.sale_id)?.to_owned();
    let store_id = match call_store {
        None => identifier("store_id", &sale.store_id)?.to_owned(),
        Some(store_id) if sale.store_id.is_empty() => {
            sale.store_id = store_id.to_owned();
            store_id.to_owned()
        }
        Some(store_id) if sale.store_id == store_id => store_id.to_owned(),
        Some(store_id) => {
            return Err(Error::invalid(
                "store_id",
                format!("is {}; it must be empty or the call's {store_id:?}", quote(&sale.store_id)),
            ));
        }
    };
    let movements = domain::sale_movements("lines", sale.lines.iter().map(|l| (l.sku.clone(), l.quantity)))?;
    // A line whose price a supervisor overrode is not held to the catalog.
    let held = sale.lines.iter().filter(|l| !l.price_overridden);
    let charged = domain::charged_prices("lines", held.map(|l| (l.sku.as_str(), l.unit_price.as_ref())))?;
    let checkout = if sale.checkout_key.is_empty() {
        None
    } else {
        let key = identifier("checkout_key", &sale.checkout_key)?.to_owned();
        if sale.checkout_fingerprint.is_empty() {
            return Err(Error::invalid("checkout_fingerprint", "is required with checkout_key"));
        }
        limits::blob("checkout_fingerprint", sale.checkout_fingerprint.len())?;
        limits::blob("sale", sale.sale.len())?;
        Some(CheckoutKey {
            key,
            fingerprint: std::mem::take(&mut sale.checkout_fingerprint),
            sale: std::mem::take(&mut sale.sale),
        })
    };
    let fingerprint = fingerprint(&sale, |_| {});
    let terminal_id = optional_identifier("terminal_id", &sale.terminal_id)?.to_owned();
    Ok((store_id, SaleOrder { sale_id, fingerprint, terminal_id, movements, charged, checkout }))
}

/// An import batch's key with a digest of the batch as its fingerprint: equal batches have equal
/// digests, and the key's stored record stays small whatever the batch's size.
fn batch_idem<M: prost::Message + Clone>(key: &str, batch: &M, clear: impl FnOnce(&mut M)) -> Result<Idem> {
    use sha2::Digest as _;
    let key = identifier("idempotency_key", key)?.to_owned();
    Ok(Idem { key, fingerprint: sha2::Sha256::digest(fingerprint(batch, clear)).to_vec() })
}

/// Reads an import stream's batches one after another, applying each with `apply` (its index, the
/// batch) before reading the next: (batches, records, replayed batches). The first refusal ends
/// the stream, naming its batch; the batches before it stay applied.
async fn import_batches<M, F, Fut>(mut stream: Streaming<M>, mut apply: F) -> Result<(u64, u64, u64)>
where
    M: prost::Message + Default,
    F: FnMut(M) -> Fut,
    Fut: std::future::Future<Output = Result<crate::store::Imported>>,
{
    let (mut batches, mut records, mut replayed) = (0u64, 0u64, 0u64);
    while let Some(batch) = stream.message().await.map_err(Error::Remote)? {
        let imported = apply(batch).await.map_err(|e| in_batch(e, batches))?;
        batches += 1;
        records += u64::from(imported.records);
        replayed += u64::from(imported.replayed);
    }
    Ok((batches, records, replayed))
}

fn sale_outcome(outcome: Result<ApplySaleResponse>) -> ApplySaleOutcome {
    let outcome = match outcome {
        Ok(applied) => apply_sale_outcome::Outcome::Applied(applied),
        Err(err) => {
            let status = Status::from(err);
            apply_sale_outcome::Outcome::Error(SaleError {
                code: status.code() as i32,
                message: status.message().to_owned(),
                details: status.details().to_vec(),
            })
        }
    };
    ApplySaleOutcome { outcome: Some(outcome) }
}

/// An audit entry of an inventory change (`store_id` and `subject` as the request gave them).
fn entry<T>(store_id: &str, action: &'static str, subject: &str, detail: String, result: &Result<T>) -> Entry {
    let bounded = |s: &str| s.chars().take(64).collect::<String>();
    Entry { store_id: bounded(store_id), action, subject: bounded(subject), detail, outcome: audit::outcome(result) }
}

/// A price as the audit log says it: minor units and currency.
fn shown_price(price: Option<&redstore_proto::common::Money>) -> String {
    price.map_or_else(|| "none".to_owned(), |m| format!("{} {} (minor units)", m.units_minor, m.currency_code))
}

#[tonic::async_trait]
impl InventoryService for InventoryGrpc {
    #[tracing::instrument(name = "inventory.create_store", skip_all)]
    async fn create_store(&self, req: Request<CreateStoreRequest>) -> Result<Response<CreateStoreResponse>, Status> {
        let trail = Trail::of(&req);
        let req = req.into_inner();
        let result = async {
            let store = StoreRow {
                store_id: identifier("store_id", &req.store_id)?.to_owned(),
                name: domain::product_name("name", &req.name)?,
                policy: OversellPolicy::from_proto("oversell_policy", req.oversell_policy)?,
            };
            let idem = idem(&req.idempotency_key, &req, |r| r.idempotency_key.clear())?;
            Ok(CreateStoreResponse { store: Some(self.store.create_store(idem, store).await?) })
        }
        .await;
        let entry = entry(&req.store_id, "store.created", &req.store_id, format!("name {:?}", req.name), &result);
        audit::record(&trail, entry).await;
        ok(result)
    }

    async fn get_store(&self, req: Request<GetStoreRequest>) -> Result<Response<GetStoreResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let store = self.store.get_store(caller.store("store_id", &req.store_id)?).await?;
            Ok(GetStoreResponse { store: Some(store.to_proto()) })
        }
        .await;
        ok(result)
    }

    async fn list_stores(&self, req: Request<ListStoresRequest>) -> Result<Response<ListStoresResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let page = Page::from_proto("page", req.page.as_ref())?;
            let mut rows = self.store.list_stores(&page.after, page.fetch_limit()).await?;
            let next = page.finish(&mut rows, |s| s.store_id.clone());
            Ok(ListStoresResponse { stores: rows.iter().map(StoreRow::to_proto).collect(), page: Some(next) })
        }
        .await;
        ok(result)
    }

    async fn register_terminal(
        &self,
        req: Request<RegisterTerminalRequest>,
    ) -> Result<Response<RegisterTerminalResponse>, Status> {
        let trail = Trail::of(&req);
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let store_id = caller.store("store_id", &req.store_id)?.to_owned();
            let terminal_id = identifier("terminal_id", &req.terminal_id)?.to_owned();
            let terminal = Terminal {
                store_id,
                name: match optional_text("name", &req.name, limits::MAX_TERMINAL_NAME_CHARS)? {
                    name if name.is_empty() => terminal_id.clone(),
                    name => name,
                },
                terminal_id,
            };
            let idem = idem(&req.idempotency_key, &req, |r| r.idempotency_key.clear())?;
            Ok(RegisterTerminalResponse { terminal: Some(self.store.register_terminal(idem, terminal).await?) })
        }
        .await;
        let detail = format!("name {:?}", req.name);
        audit::record(&trail, entry(&req.store_id, "terminal.registered", &req.terminal_id, detail, &result)).await;
        ok(result)
    }

    async fn get_terminal(&self, req: Request<GetTerminalRequest>) -> Result<Response<GetTerminalResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let store_id = caller.store("store_id", &req.store_id)?;
            let terminal_id = identifier("terminal_id", &req.terminal_id)?;
            Ok(GetTerminalResponse { terminal: Some(self.store.get_terminal(store_id, terminal_id).await?) })
        }
        .await;
        ok(result)
    }

    async fn list_terminals(
        &self,
        req: Request<ListTerminalsRequest>,
    ) -> Result<Response<ListTerminalsResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let store_id = caller.store("store_id", &req.store_id)?;
            let page = Page::from_proto("page", req.page.as_ref())?;
            let mut rows = self.store.list_terminals(store_id, &page.after, page.fetch_limit()).await?;
            let next = page.finish_within(&mut rows, |t| t.terminal_id.clone(), prost::Message::encoded_len);
            Ok(ListTerminalsResponse { terminals: rows, page: Some(next) })
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.create_product", skip_all)]
    async fn create_product(
        &self,
        req: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        let trail = Trail::of(&req);
        let req = req.into_inner();
        let result = async {
            let barcodes = domain::parse_barcodes("barcodes", &req.barcodes)?;
            let product = Product {
                sku: identifier("sku", &req.sku)?.to_owned(),
                name: domain::product_name("name", &req.name)?,
                price: domain::price("price", req.price.as_ref())?,
                barcodes: barcodes.iter().map(|b| b.gtin13().to_owned()).collect(),
                active: true,
            };
            let idem = idem(&req.idempotency_key, &req, |r| r.idempotency_key.clear())?;
            Ok(CreateProductResponse { product: Some(self.store.create_product(idem, product, barcodes).await?) })
        }
        .await;
        let detail = format!("name {:?}, price {}", req.name, shown_price(req.price.as_ref()));
        audit::record(&trail, entry("", "product.created", &req.sku, detail, &result)).await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.update_product", skip_all)]
    async fn update_product(
        &self,
        req: Request<UpdateProductRequest>,
    ) -> Result<Response<UpdateProductResponse>, Status> {
        let trail = Trail::of(&req);
        let req = req.into_inner();
        let result = async {
            let patch = ProductPatch {
                sku: identifier("sku", &req.sku)?.to_owned(),
                name: req.name.as_deref().map(|n| domain::product_name("name", n)).transpose()?,
                price: req.price.as_ref().map(|p| domain::price("price", Some(p))).transpose()?,
                active: req.active,
                barcodes: if req.update_barcodes {
                    Some(domain::parse_barcodes("barcodes", &req.barcodes)?)
                } else {
                    None
                },
            };
            let idem = idem(&req.idempotency_key, &req, |r| r.idempotency_key.clear())?;
            Ok(UpdateProductResponse { product: Some(self.store.update_product(idem, patch).await?) })
        }
        .await;
        let mut changes = Vec::new();
        if let Some(name) = &req.name {
            changes.push(format!("name {name:?}"));
        }
        if req.price.is_some() {
            changes.push(format!("price {}", shown_price(req.price.as_ref())));
        }
        if let Some(active) = req.active {
            changes.push(format!("active {active}"));
        }
        if req.update_barcodes {
            changes.push(format!("barcodes {:?}", req.barcodes));
        }
        audit::record(&trail, entry("", "product.updated", &req.sku, changes.join(", "), &result)).await;
        ok(result)
    }

    async fn get_product(&self, req: Request<GetProductRequest>) -> Result<Response<GetProductResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let product = self.store.get_product(identifier("sku", &req.sku)?).await?;
            Ok(GetProductResponse { product: Some(product.to_proto()) })
        }
        .await;
        ok(result)
    }

    async fn get_products(&self, req: Request<GetProductsRequest>) -> Result<Response<GetProductsResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            if req.skus.len() > MAX_SKUS_PER_CALL {
                return Err(Error::invalid("skus", format!("at most {MAX_SKUS_PER_CALL} per call")));
            }
            let mut skus = Vec::with_capacity(req.skus.len());
            for (i, sku) in req.skus.iter().enumerate() {
                skus.push(identifier(&format!("skus[{i}]"), sku)?.to_owned());
            }
            let products = self.store.get_products(&skus).await?;
            Ok(GetProductsResponse { products: products.into_iter().flatten().map(|p| p.to_proto()).collect() })
        }
        .await;
        ok(result)
    }

    async fn list_products(&self, req: Request<ListProductsRequest>) -> Result<Response<ListProductsResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let page = Page::from_proto("page", req.page.as_ref())?;
            let mut rows = self.store.list_products(req.include_inactive, &page.after, page.fetch_limit()).await?;
            let next = page.finish(&mut rows, |p| p.sku.clone());
            Ok(ListProductsResponse { products: rows.iter().map(Product::to_proto).collect(), page: Some(next) })
        }
        .await;
        ok(result)
    }

    async fn lookup_barcode(
        &self,
        req: Request<LookupBarcodeRequest>,
    ) -> Result<Response<LookupBarcodeResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let barcode = Barcode::parse("barcode", &req.barcode)?;
            let product = self.store.product_by_barcode(&barcode).await?;
            Ok(LookupBarcodeResponse { product: Some(product.to_proto()) })
        }
        .await;
        ok(result)
    }

    async fn get_stock(&self, req: Request<GetStockRequest>) -> Result<Response<GetStockResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let store_id = caller.store("store_id", &req.store_id)?;
            let sku = identifier("sku", &req.sku)?;
            Ok(GetStockResponse { stock: Some(self.store.get_stock(store_id, sku).await?) })
        }
        .await;
        ok(result)
    }

    async fn list_stock(&self, req: Request<ListStockRequest>) -> Result<Response<ListStockResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let store_id = caller.store("store_id", &req.store_id)?;
            let page = Page::from_proto("page", req.page.as_ref())?;
            let mut rows = self.store.list_stock(store_id, &page.after, page.fetch_limit()).await?;
            let next = page.finish(&mut rows, |s| s.sku.clone());
            Ok(ListStockResponse { stock: rows, page: Some(next) })
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.adjust_stock", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn adjust_stock(&self, req: Request<AdjustStockRequest>) -> Result<Response<AdjustStockResponse>, Status> {
        let trail = Trail::of(&req);
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let store_id = caller.store("store_id", &req.store_id)?;
            identifier("idempotency_key", &req.idempotency_key)?;
            let sku = identifier("sku", &req.sku)?.to_owned();
            if req.quantity_delta == 0 || req.quantity_delta.unsigned_abs() > limits::MAX_STOCK.unsigned_abs() {
                return Err(Error::invalid(
                    "quantity_delta",
                    format!("is {}; it must be non-zero and within \u{b1}{}", req.quantity_delta, limits::MAX_STOCK),
                ));
            }
            let reason = adjustment_reason(req.reason)?;
            optional_text("note", &req.note, limits::MAX_NOTE_CHARS)?;
            let movement = StockMovement { sku, delta: req.quantity_delta };
            let idem = idem(&req.idempotency_key, &req, |r| r.idempotency_key.clear())?;
            self.store.adjust_stock(idem, store_id, movement, reason).await
        }
        .await;
        let reason = adjustment_reason(req.reason).unwrap_or("unknown");
        let detail = format!("{:+} ({reason}); note {:?}", req.quantity_delta, req.note);
        audit::record(&trail, entry(&req.store_id, "stock.adjusted", &req.sku, detail, &result)).await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.apply_sale", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn apply_sale(&self, req: Request<ApplySaleRequest>) -> Result<Response<ApplySaleResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let (store_id, sale) = sale_order(req, None)?;
            self.store.apply_sale(&store_id, sale).await
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.apply_sales", skip_all, fields(store_id = %req.get_ref().store_id, sales = req.get_ref().sales.len()))]
    async fn apply_sales(&self, req: Request<ApplySalesRequest>) -> Result<Response<ApplySalesResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            // Empty: a chain's batch, each sale naming its own store.
            let call_store = match req.store_id.is_empty() {
                true => None,
                false => Some(identifier("store_id", &req.store_id)?),
            };
            if req.sales.is_empty() {
                return Err(Error::invalid("sales", "is required: at least one sale"));
            }
            if req.sales.len() > MAX_SALES_PER_CALL {
                return Err(Error::invalid(
                    "sales",
                    format!("has {} sales; at most {MAX_SALES_PER_CALL} per call", req.sales.len()),
                ));
            }
            let mut orders = Vec::with_capacity(req.sales.len());
            for (i, sale) in req.sales.into_iter().enumerate() {
                orders.push(sale_order(sale, call_store).map_err(|e| e.scope(&format!("sales[{i}]")))?);
            }
            let outcomes = match call_store {
                Some(store_id) => self.store.apply_sales(store_id, orders.into_iter().map(|(_, o)| o).collect()).await,
                None => self.store.apply_chain_sales(orders).await,
            };
            Ok(ApplySalesResponse { outcomes: outcomes.into_iter().map(sale_outcome).collect() })
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.apply_refund", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn apply_refund(&self, req: Request<ApplyRefundRequest>) -> Result<Response<ApplyRefundResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let refund_id = identifier("refund_id", &req.refund_id)?;
            let store_id = identifier("store_id", &req.store_id)?;
            if let Some(i) = req.lines.iter().position(|l| l.unit_price.is_some()) {
                return Err(Error::invalid(format!("lines[{i}].unit_price"), "must be empty: a refund takes no price"));
            }
            let movements: Vec<StockMovement> =
                domain::sale_movements("lines", req.lines.iter().map(|l| (l.sku.clone(), l.quantity)))?
                    .into_iter()
                    .map(|m| StockMovement { sku: m.sku, delta: -m.delta })
                    .collect();
            let terminal_id = optional_identifier("terminal_id", &req.terminal_id)?;
            let applied = self.store.apply_refund(refund_id, store_id, terminal_id, movements).await?;
            Ok(ApplyRefundResponse { stock: applied.stock, store_seq: applied.store_seq })
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.list_applied_checkouts", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn list_applied_checkouts(
        &self,
        req: Request<ListAppliedCheckoutsRequest>,
    ) -> Result<Response<ListAppliedCheckoutsResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let store_id = identifier("store_id", &req.store_id)?;
            if req.applied_before_ms <= req.applied_from_ms {
                return Err(Error::invalid("applied_before_ms", "must be later than applied_from_ms"));
            }
            let limit = match req.limit {
                0 => 500,
                n if n > MAX_APPLIED_CHECKOUTS => {
                    return Err(Error::invalid("limit", format!("is {n}; at most {MAX_APPLIED_CHECKOUTS}")));
                }
                n => n,
            };
            if req.checkout_keys.len() > MAX_APPLIED_CHECKOUTS as usize {
                return Err(Error::invalid(
                    "checkout_keys",
                    format!("has {} keys; at most {MAX_APPLIED_CHECKOUTS}", req.checkout_keys.len()),
                ));
            }
            for (i, key) in req.checkout_keys.iter().enumerate() {
                identifier(&format!("checkout_keys[{i}]"), key)?;
            }
            if let Some(after) = &req.after {
                identifier("after.checkout_key", &after.checkout_key)?;
            }
            let query = CheckoutsQuery {
                from_ms: req.applied_from_ms,
                before_ms: req.applied_before_ms,
                after: req.after.map(|c| (c.applied_at_ms, c.checkout_key)),
                limit,
                keys: req.checkout_keys,
                keys_only: req.keys_only,
            };
            let listed = self.store.applied_checkouts(store_id, query).await?;
            let checkouts = listed
                .into_iter()
                .map(|c| AppliedCheckout {
                    checkout_key: c.key,
                    applied_at_ms: c.applied_at_ms,
                    answer: (!req.keys_only).then_some(c.answer),
                    checkout_fingerprint: c.fingerprint,
                })
                .collect();
            Ok(ListAppliedCheckoutsResponse { checkouts })
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.import_products", skip_all)]
    async fn import_products(
        &self,
        req: Request<Streaming<ImportProductsRequest>>,
    ) -> Result<Response<ImportProductsResponse>, Status> {
        let trail = Trail::of(&req);
        let result = import_batches(req.into_inner(), |batch: ImportProductsRequest| async move {
            let idem = batch_idem(&batch.idempotency_key, &batch, |r| r.idempotency_key.clear())?;
            let products = domain::import_products("products", &batch.products)?;
            self.store.import_products(idem, products).await
        })
        .await
        .map(|(batches, records, replayed_batches)| ImportProductsResponse {
            batches,
            records,
            replayed_batches,
        });
        let detail =
            result.as_ref().map(|r| format!("{} products in {} batches", r.records, r.batches)).unwrap_or_default();
        audit::record(&trail, entry("", "catalog.imported", "", detail, &result)).await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.import_stock", skip_all)]
    async fn import_stock(
        &self,
        req: Request<Streaming<ImportStockRequest>>,
    ) -> Result<Response<ImportStockResponse>, Status> {
        let trail = Trail::of(&req);
        // Each batch parsed as it arrives; the store applies the stream (on PostgreSQL, all of
        // it or none).
        let batches = futures::stream::unfold((req.into_inner(), 0u64), |(mut stream, index)| async move {
            let batch = match stream.message().await {
                Ok(Some(batch)) => batch,
                Ok(None) => return None,
                Err(status) => return Some((Err(Error::Remote(status)), (stream, index + 1))),
            };
            let parsed = (|| -> Result<StockBatch> {
                let idem = batch_idem(&batch.idempotency_key, &batch, |r| r.idempotency_key.clear())?;
                let stores = domain::import_counts("counts", &batch.counts)?;
                Ok(StockBatch { idem, stores })
            })()
            .map_err(|e| in_batch(e, index));
            Some((parsed, (stream, index + 1)))
        });
        let result = self.store.import_stock_stream(Box::pin(batches)).await.map(|totals| ImportStockResponse {
            batches: totals.batches,
            records: totals.records,
            replayed_batches: totals.replayed,
        });
        let detail =
            result.as_ref().map(|r| format!("{} counts in {} batches", r.records, r.batches)).unwrap_or_default();
        audit::record(&trail, entry("", "stock.imported", "", detail, &result)).await;
        ok(result)
    }
}
