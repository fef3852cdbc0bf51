//! The tonic adapter: converts requests, calls the repository in the right kind of transaction,
//! converts back. No business rule lives here that the repository or domain does not own.

use redstore_platform::error::{Error, Result, identifier};
use redstore_platform::idempotency::{fingerprint, maybe_once, once};
use redstore_platform::page::Page;
use redstore_platform::{Db, time::unix_ms};
use redstore_proto::inventory::inventory_service_server::{InventoryService, InventoryServiceServer};
use redstore_proto::inventory::*;
use tonic::{Request, Response, Status};

use crate::domain::{self, OversellPolicy, Product, StockMovement};
use crate::repo::{self, StoreRow};

#[derive(Clone)]
pub struct InventoryGrpc {
    db: Db,
}

impl InventoryGrpc {
    pub fn new(db: Db) -> Self {
        Self { db }
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

/// Applies a sale's lines in the caller's transaction: validates the store and every sku, then
/// takes the stock under the store's policy. Used by ApplySale and, in one process, by checkout.
pub fn apply_sale_in(
    ctx: &mut redstore_platform::WriteCtx<'_>,
    store_id: &str,
    terminal_id: &str,
    sale_id: &str,
    movements: &[StockMovement],
) -> Result<repo::Applied> {
    let store = repo::get_store(ctx.conn, store_id)?;
    for m in movements {
        if repo::product_core(ctx.conn, &m.sku)?.is_none() {
            return Err(Error::not_found(format!("sku {:?} does not exist", m.sku)));
        }
    }
    repo::apply_movements(ctx, &store, "sale", sale_id, terminal_id, movements)
}

#[tonic::async_trait]
impl InventoryService for InventoryGrpc {
    #[tracing::instrument(name = "inventory.create_store", skip_all)]
    async fn create_store(&self, req: Request<CreateStoreRequest>) -> Result<Response<CreateStoreResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let store = StoreRow {
                store_id: identifier("store_id", &req.store_id)?.to_owned(),
                name: domain::product_name("name", &req.name)?,
                policy: OversellPolicy::from_proto("oversell_policy", req.oversell_policy)?,
            };
            let key = req.idempotency_key.clone();
            let fp = fingerprint(&req, |r| r.idempotency_key.clear());
            self.db
                .write(move |ctx| {
                    maybe_once(ctx, "inventory.create_store", &key, &fp, |ctx| {
                        repo::insert_store(ctx.conn, &store, unix_ms(ctx.now))?;
                        Ok(CreateStoreResponse { store: Some(store.to_proto()) })
                    })
                })
                .await
        }
        .await;
        ok(result)
    }

    async fn get_store(&self, req: Request<GetStoreRequest>) -> Result<Response<GetStoreResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let id = identifier("store_id", &req.store_id)?.to_owned();
            let store = self.db.read(move |c| repo::get_store(c, &id)).await?;
            Ok(GetStoreResponse { store: Some(store.to_proto()) })
        }
        .await;
        ok(result)
    }

    async fn list_stores(&self, req: Request<ListStoresRequest>) -> Result<Response<ListStoresResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let page = Page::from_proto("page", req.page.as_ref())?;
            let (after, limit) = (page.after.clone(), page.fetch_limit());
            let mut rows = self.db.read(move |c| repo::list_stores(c, &after, limit)).await?;
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
        let req = req.into_inner();
        let result = async {
            let terminal = Terminal {
                store_id: identifier("store_id", &req.store_id)?.to_owned(),
                terminal_id: identifier("terminal_id", &req.terminal_id)?.to_owned(),
                name: if req.name.trim().is_empty() {
                    req.terminal_id.trim().to_owned()
                } else {
                    req.name.trim().to_owned()
                },
            };
            let key = req.idempotency_key.clone();
            let fp = fingerprint(&req, |r| r.idempotency_key.clear());
            self.db
                .write(move |ctx| {
                    maybe_once(ctx, "inventory.register_terminal", &key, &fp, |ctx| {
                        repo::insert_terminal(ctx.conn, &terminal)?;
                        Ok(RegisterTerminalResponse { terminal: Some(terminal) })
                    })
                })
                .await
        }
        .await;
        ok(result)
    }

    async fn list_terminals(
        &self,
        req: Request<ListTerminalsRequest>,
    ) -> Result<Response<ListTerminalsResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let store_id = identifier("store_id", &req.store_id)?.to_owned();
            let page = Page::from_proto("page", req.page.as_ref())?;
            let (after, limit) = (page.after.clone(), page.fetch_limit());
            let mut rows = self.db.read(move |c| repo::list_terminals(c, &store_id, &after, limit)).await?;
            let next = page.finish(&mut rows, |t| t.terminal_id.clone());
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
            let key = req.idempotency_key.clone();
            let fp = fingerprint(&req, |r| r.idempotency_key.clear());
            self.db
                .write(move |ctx| {
                    maybe_once(ctx, "inventory.create_product", &key, &fp, |ctx| {
                        repo::insert_product(ctx.conn, &product, &barcodes, unix_ms(ctx.now))?;
                        Ok(CreateProductResponse {
                            product: Some(repo::get_product(ctx.conn, &product.sku)?.to_proto()),
                        })
                    })
                })
                .await
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.update_product", skip_all)]
    async fn update_product(
        &self,
        req: Request<UpdateProductRequest>,
    ) -> Result<Response<UpdateProductResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let sku = identifier("sku", &req.sku)?.to_owned();
            let name = req.name.as_deref().map(|n| domain::product_name("name", n)).transpose()?;
            let price = req.price.as_ref().map(|p| domain::price("price", Some(p))).transpose()?;
            let barcodes =
                if req.update_barcodes { Some(domain::parse_barcodes("barcodes", &req.barcodes)?) } else { None };
            let active = req.active;
            let key = req.idempotency_key.clone();
            let fp = fingerprint(&req, |r| r.idempotency_key.clear());
            self.db
                .write(move |ctx| {
                    maybe_once(ctx, "inventory.update_product", &key, &fp, |ctx| {
                        let mut product = repo::get_product(ctx.conn, &sku)?;
                        if let Some(name) = name {
                            product.name = name;
                        }
                        if let Some(price) = price {
                            product.price = price;
                        }
                        if let Some(active) = active {
                            product.active = active;
                        }
                        repo::update_product(ctx.conn, &product, barcodes.as_deref(), unix_ms(ctx.now))?;
                        Ok(UpdateProductResponse { product: Some(repo::get_product(ctx.conn, &sku)?.to_proto()) })
                    })
                })
                .await
        }
        .await;
        ok(result)
    }

    async fn get_product(&self, req: Request<GetProductRequest>) -> Result<Response<GetProductResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let sku = identifier("sku", &req.sku)?.to_owned();
            let product = self.db.read(move |c| repo::get_product(c, &sku)).await?;
            Ok(GetProductResponse { product: Some(product.to_proto()) })
        }
        .await;
        ok(result)
    }

    async fn list_products(&self, req: Request<ListProductsRequest>) -> Result<Response<ListProductsResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let page = Page::from_proto("page", req.page.as_ref())?;
            let (after, limit, inactive) = (page.after.clone(), page.fetch_limit(), req.include_inactive);
            let mut rows = self.db.read(move |c| repo::list_products(c, inactive, &after, limit)).await?;
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
            let barcode = redstore_platform::barcode::Barcode::parse("barcode", &req.barcode)?;
            let product = self
                .db
                .read(move |c| {
                    let sku = repo::sku_by_barcode(c, &barcode)?
                        .ok_or_else(|| Error::not_found(format!("no product has barcode {barcode}")))?;
                    repo::get_product(c, &sku)
                })
                .await?;
            Ok(LookupBarcodeResponse { product: Some(product.to_proto()) })
        }
        .await;
        ok(result)
    }

    async fn get_stock(&self, req: Request<GetStockRequest>) -> Result<Response<GetStockResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let store_id = identifier("store_id", &req.store_id)?.to_owned();
            let sku = identifier("sku", &req.sku)?.to_owned();
            let stock = self.db.read(move |c| repo::get_stock(c, &store_id, &sku)).await?;
            Ok(GetStockResponse { stock: Some(stock) })
        }
        .await;
        ok(result)
    }

    async fn list_stock(&self, req: Request<ListStockRequest>) -> Result<Response<ListStockResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let store_id = identifier("store_id", &req.store_id)?.to_owned();
            let page = Page::from_proto("page", req.page.as_ref())?;
            let (after, limit) = (page.after.clone(), page.fetch_limit());
            let mut rows = self
                .db
                .read(move |c| {
                    repo::get_store(c, &store_id)?;
                    repo::list_stock(c, &store_id, &after, limit)
                })
                .await?;
            let next = page.finish(&mut rows, |s| s.sku.clone());
            Ok(ListStockResponse { stock: rows, page: Some(next) })
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.adjust_stock", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn adjust_stock(&self, req: Request<AdjustStockRequest>) -> Result<Response<AdjustStockResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let key = identifier("idempotency_key", &req.idempotency_key)?.to_owned();
            let store_id = identifier("store_id", &req.store_id)?.to_owned();
            let sku = identifier("sku", &req.sku)?.to_owned();
            if req.quantity_delta == 0 {
                return Err(Error::invalid("quantity_delta", "must not be zero"));
            }
            let reason = adjustment_reason(req.reason)?;
            let movement = StockMovement { sku: sku.clone(), delta: req.quantity_delta };
            let fp = fingerprint(&req, |r| r.idempotency_key.clear());
            self.db
                .write(move |ctx| {
                    once(ctx, &format!("inventory.adjust_stock:{store_id}"), &key, &fp, |ctx| {
                        let store = repo::get_store(ctx.conn, &store_id)?;
                        if repo::product_core(ctx.conn, &sku)?.is_none() {
                            return Err(Error::not_found(format!("sku {sku:?} does not exist")));
                        }
                        let adjustment_id = uuid::Uuid::now_v7().to_string();
                        let applied = repo::apply_movements(ctx, &store, reason, &adjustment_id, "", &[movement])?;
                        Ok(AdjustStockResponse { stock: applied.levels.into_iter().next(), adjustment_id })
                    })
                })
                .await
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "inventory.apply_sale", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn apply_sale(&self, req: Request<ApplySaleRequest>) -> Result<Response<ApplySaleResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let sale_id = identifier("sale_id", &req.sale_id)?.to_owned();
            let store_id = identifier("store_id", &req.store_id)?.to_owned();
            let terminal_id = req.terminal_id.trim().to_owned();
            let movements = domain::sale_movements("lines", req.lines.iter().map(|l| (l.sku.clone(), l.quantity)))?;
            let fp = fingerprint(&req, |_| {});
            self.db
                .write(move |ctx| {
                    once(ctx, "inventory.apply_sale", &sale_id, &fp, |ctx| {
                        let applied = apply_sale_in(ctx, &store_id, &terminal_id, &sale_id, &movements)?;
                        Ok(ApplySaleResponse {
                            stock: applied.levels,
                            negative_skus: applied.negative_skus,
                            store_seq: applied.event.store_seq,
                        })
                    })
                })
                .await
        }
        .await;
        ok(result)
    }
}
