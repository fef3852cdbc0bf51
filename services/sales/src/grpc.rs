//! The tonic adapter for SalesService, and the write jobs behind each RPC.

use std::pin::Pin;

use crate::events::{sale_completed, sale_refunded};
use futures::{Stream, StreamExt as _};
use redstore_inventory::domain::sale_movements;
use redstore_inventory::repo as inventory;
use redstore_inventory::store::apply_sale_in;
use redstore_platform::barcode::Barcode;
use redstore_platform::error::{Error, Result, identifier};
use redstore_platform::idempotency::{fingerprint, once};
use redstore_platform::money::Money;
use redstore_platform::page::Page;
use redstore_platform::time::{timestamp, unix_ms};
use redstore_platform::{Db, Topic, eventlog};
use redstore_proto::sales::sales_service_server::{SalesService, SalesServiceServer};
use redstore_proto::sales::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::{self, PricedLine};
use crate::repo;

#[derive(Clone)]
pub struct SalesGrpc {
    db: Db,
}

impl SalesGrpc {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn into_server(self) -> SalesServiceServer<Self> {
        SalesServiceServer::new(self)
    }

    /// One scan: adds the scanned item to the terminal's cart, once per scan_id.
    pub async fn scan(&self, req: ScanRequest) -> Result<ScanResponse> {
        let store_id = identifier("store_id", &req.store_id)?.to_owned();
        let terminal_id = identifier("terminal_id", &req.terminal_id)?.to_owned();
        let scan_id = identifier("scan_id", &req.scan_id)?.to_owned();
        let barcode = Barcode::parse("code", &req.code)?;
        let quantity = match req.quantity {
            0 => 1,
            q if q < 0 => return Err(Error::invalid("quantity", format!("must be positive, got {q}"))),
            q => q,
        };
        let fp = fingerprint(&req, |_| {});
        let scope = format!("sales.scan:{store_id}:{terminal_id}");
        self.db
            .write(move |ctx| {
                once(ctx, &scope, &scan_id, &fp, |ctx| {
                    inventory::require_terminal(ctx.conn, &store_id, &terminal_id)?;
                    let sku = inventory::sku_by_barcode(ctx.conn, &barcode)?
                        .ok_or_else(|| Error::not_found(format!("code: no product has barcode {barcode}")))?;
                    let line = add_to_cart(ctx.conn, &store_id, &terminal_id, &sku, quantity)?;
                    let cart = repo::load_cart(ctx.conn, &store_id, &terminal_id)?;
                    Ok(ScanResponse {
                        scan_id: scan_id.clone(),
                        result: Some(scan_response::Result::Line(line)),
                        cart: Some(cart),
                    })
                })
            })
            .await
    }
}

fn add_to_cart(
    conn: &rusqlite::Connection,
    store_id: &str,
    terminal_id: &str,
    sku: &str,
    quantity: i64,
) -> Result<CartLine> {
    let product =
        inventory::product_core(conn, sku)?.ok_or_else(|| Error::not_found(format!("sku {sku:?} does not exist")))?;
    if !product.active {
        return Err(Error::precondition(
            "PRODUCT",
            format!("sku:{sku}"),
            format!("sku {sku:?} is not for sale (inactive)"),
        ));
    }
    let total = repo::cart_add(conn, store_id, terminal_id, sku, quantity)?;
    repo::cart_line(conn, store_id, sku, total)
}

fn ok<T>(r: Result<T>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

fn scan_error(err: Error) -> ScanError {
    let field = err.field().unwrap_or_default().to_owned();
    let status = Status::from(err);
    ScanError { code: format!("{:?}", status.code()).to_uppercase_snake(), message: status.message().to_owned(), field }
}

trait UpperSnake {
    fn to_uppercase_snake(&self) -> String;
}

impl UpperSnake for String {
    /// "InvalidArgument" → "INVALID_ARGUMENT", the canonical gRPC code name.
    fn to_uppercase_snake(&self) -> String {
        let mut out = String::with_capacity(self.len() + 4);
        for (i, c) in self.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        out
    }
}

/// Loads the sale's lines and prices them from the catalog; names the line at fault.
fn price_lines(conn: &rusqlite::Connection, field: &str, lines: &[(String, i64)]) -> Result<Vec<PricedLine>> {
    lines
        .iter()
        .enumerate()
        .map(|(i, (sku, quantity))| {
            let f = format!("{field}[{i}]");
            let product = inventory::product_core(conn, sku)?
                .ok_or_else(|| Error::not_found(format!("{f}.sku: sku {sku:?} does not exist")))?;
            if !product.active {
                return Err(Error::precondition(
                    "PRODUCT",
                    format!("sku:{sku}"),
                    format!("{f}.sku: sku {sku:?} is not for sale (inactive)"),
                ));
            }
            domain::price_line(&f, sku, &product.name, *quantity, product.price)
        })
        .collect()
}

type ScanStreamOut = Pin<Box<dyn Stream<Item = Result<ScanResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SalesService for SalesGrpc {
    type ScanStreamStream = ScanStreamOut;

    async fn scan_stream(&self, req: Request<Streaming<ScanRequest>>) -> Result<Response<ScanStreamOut>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(next) = inbound.next().await {
                let Ok(scan) = next else { break };
                let scan_id = scan.scan_id.clone();
                let store_id = scan.store_id.clone();
                let terminal_id = scan.terminal_id.clone();
                let reply = match this.scan(scan).await {
                    Ok(resp) => resp,
                    Err(err) => {
                        // A bad scan answers with its error and leaves the stream open.
                        let cart = match (identifier("store_id", &store_id), identifier("terminal_id", &terminal_id)) {
                            (Ok(s), Ok(t)) => {
                                let (s, t) = (s.to_owned(), t.to_owned());
                                this.db.read(move |c| repo::load_cart(c, &s, &t)).await.ok()
                            }
                            _ => None,
                        };
                        ScanResponse { scan_id, result: Some(scan_response::Result::Error(scan_error(err))), cart }
                    }
                };
                if tx.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(name = "sales.scan", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        ok(SalesGrpc::scan(self, req.into_inner()).await)
    }

    async fn get_cart(&self, req: Request<GetCartRequest>) -> Result<Response<GetCartResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let store_id = identifier("store_id", &req.store_id)?.to_owned();
            let terminal_id = identifier("terminal_id", &req.terminal_id)?.to_owned();
            let cart = self
                .db
                .read(move |c| {
                    inventory::require_terminal(c, &store_id, &terminal_id)?;
                    repo::load_cart(c, &store_id, &terminal_id)
                })
                .await?;
            Ok(GetCartResponse { cart: Some(cart) })
        }
        .await;
        ok(result)
    }

    async fn add_cart_item(&self, req: Request<AddCartItemRequest>) -> Result<Response<AddCartItemResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let key = identifier("idempotency_key", &req.idempotency_key)?.to_owned();
            let store_id = identifier("store_id", &req.store_id)?.to_owned();
            let terminal_id = identifier("terminal_id", &req.terminal_id)?.to_owned();
            let sku = identifier("sku", &req.sku)?.to_owned();
            let quantity = match req.quantity {
                0 => 1,
                q if q < 0 => return Err(Error::invalid("quantity", format!("must be positive, got {q}"))),
                q => q,
            };
            let fp = fingerprint(&req, |r| r.idempotency_key.clear());
            let scope = format!("sales.cart:{store_id}:{terminal_id}");
            self.db
                .write(move |ctx| {
                    once(ctx, &scope, &key, &fp, |ctx| {
                        inventory::require_terminal(ctx.conn, &store_id, &terminal_id)?;
                        let line = add_to_cart(ctx.conn, &store_id, &terminal_id, &sku, quantity)?;
                        let cart = repo::load_cart(ctx.conn, &store_id, &terminal_id)?;
                        Ok(AddCartItemResponse { line: Some(line), cart: Some(cart) })
                    })
                })
                .await
        }
        .await;
        ok(result)
    }

    async fn set_cart_item_quantity(
        &self,
        req: Request<SetCartItemQuantityRequest>,
    ) -> Result<Response<SetCartItemQuantityResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let store_id = identifier("store_id", &req.store_id)?.to_owned();
            let terminal_id = identifier("terminal_id", &req.terminal_id)?.to_owned();
            let sku = identifier("sku", &req.sku)?.to_owned();
            if req.quantity < 0 {
                return Err(Error::invalid("quantity", format!("must not be negative, got {}", req.quantity)));
            }
            let quantity = req.quantity;
            // Setting a quantity is idempotent by nature; the key is accepted but not required.
            self.db
                .write(move |ctx| {
                    inventory::require_terminal(ctx.conn, &store_id, &terminal_id)?;
                    if !repo::cart_set(ctx.conn, &store_id, &terminal_id, &sku, quantity)? && quantity > 0 {
                        return Err(Error::not_found(format!(
                            "sku {sku:?} is not in the cart of terminal {terminal_id:?}"
                        )));
                    }
                    Ok(SetCartItemQuantityResponse { cart: Some(repo::load_cart(ctx.conn, &store_id, &terminal_id)?) })
                })
                .await
        }
        .await;
        ok(result)
    }

    async fn remove_cart_item(
        &self,
        req: Request<RemoveCartItemRequest>,
    ) -> Result<Response<RemoveCartItemResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let store_id = identifier("store_id", &req.store_id)?.to_owned();
            let terminal_id = identifier("terminal_id", &req.terminal_id)?.to_owned();
            let sku = identifier("sku", &req.sku)?.to_owned();
            // Removing is idempotent by nature: removing a line that is gone already is fine.
            self.db
                .write(move |ctx| {
                    inventory::require_terminal(ctx.conn, &store_id, &terminal_id)?;
                    repo::cart_set(ctx.conn, &store_id, &terminal_id, &sku, 0)?;
                    Ok(RemoveCartItemResponse { cart: Some(repo::load_cart(ctx.conn, &store_id, &terminal_id)?) })
                })
                .await
        }
        .await;
        ok(result)
    }

    async fn clear_cart(&self, req: Request<ClearCartRequest>) -> Result<Response<ClearCartResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let store_id = identifier("store_id", &req.store_id)?.to_owned();
            let terminal_id = identifier("terminal_id", &req.terminal_id)?.to_owned();
            self.db
                .write(move |ctx| {
                    inventory::require_terminal(ctx.conn, &store_id, &terminal_id)?;
                    repo::cart_clear(ctx.conn, &store_id, &terminal_id)?;
                    Ok(ClearCartResponse { cart: Some(repo::load_cart(ctx.conn, &store_id, &terminal_id)?) })
                })
                .await
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "sales.checkout", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn checkout(&self, req: Request<CheckoutRequest>) -> Result<Response<CheckoutResponse>, Status> {
        ok(checkout(&self.db, req.into_inner()).await)
    }

    async fn get_sale(&self, req: Request<GetSaleRequest>) -> Result<Response<GetSaleResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let sale_id = identifier("sale_id", &req.sale_id)?.to_owned();
            let sale = self.db.read(move |c| repo::get_sale(c, &sale_id)).await?;
            Ok(GetSaleResponse { sale: Some(sale) })
        }
        .await;
        ok(result)
    }

    async fn list_sales(&self, req: Request<ListSalesRequest>) -> Result<Response<ListSalesResponse>, Status> {
        let req = req.into_inner();
        let result = async {
            let store_id = identifier("store_id", &req.store_id)?.to_owned();
            let page = Page::from_proto("page", req.page.as_ref())?;
            let (after, limit) = (page.after.clone(), page.fetch_limit());
            let mut rows = self
                .db
                .read(move |c| {
                    inventory::get_store(c, &store_id)?;
                    repo::list_sales(c, &store_id, &after, limit)
                })
                .await?;
            let next = page.finish(&mut rows, |s| s.sale_id.clone());
            Ok(ListSalesResponse { sales: rows, page: Some(next) })
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "sales.refund", skip_all)]
    async fn refund(&self, req: Request<RefundRequest>) -> Result<Response<RefundResponse>, Status> {
        ok(refund(&self.db, req.into_inner()).await)
    }
}

/// Checkout: one sale, its stock change and its events in one transaction, or nothing.
pub async fn checkout(db: &Db, req: CheckoutRequest) -> Result<CheckoutResponse> {
    let key = identifier("idempotency_key", &req.idempotency_key)?.to_owned();
    let store_id = identifier("store_id", &req.store_id)?.to_owned();
    let terminal_id = identifier("terminal_id", &req.terminal_id)?.to_owned();
    let explicit: Vec<(String, i64)> = req.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
    if !explicit.is_empty() {
        // Validate the request shape before touching the database.
        sale_movements("lines", explicit.iter().cloned())?;
    }
    let tenders = domain::parse_tenders(&req.tenders)?;
    let fp = fingerprint(&req, |r| r.idempotency_key.clear());
    let scope = format!("sales.checkout:{store_id}");
    db.write(move |ctx| {
        once(ctx, &scope, &key, &fp, |ctx| {
            inventory::require_terminal(ctx.conn, &store_id, &terminal_id)?;
            let (field, from_cart, lines) = if explicit.is_empty() {
                let items = repo::cart_items(ctx.conn, &store_id, &terminal_id)?;
                if items.is_empty() {
                    return Err(Error::precondition(
                        "CART",
                        format!("terminal:{terminal_id}"),
                        format!(
                            "the cart of terminal {terminal_id:?} in store {store_id:?} is empty and the request has \
                             no lines; scan items or send lines"
                        ),
                    ));
                }
                ("cart", true, items)
            } else {
                ("lines", false, explicit)
            };
            let priced = price_lines(ctx.conn, field, &lines)?;
            let total = domain::total(field, &priced)?;
            let change = domain::settle(total, &tenders)?;
            let movements = sale_movements(field, lines.iter().cloned())?;
            let sale_id = uuid::Uuid::now_v7().to_string();
            let applied = apply_sale_in(ctx, &store_id, &terminal_id, &sale_id, &movements)?;
            let created = unix_ms(ctx.now);
            let sale = Sale {
                sale_id: sale_id.clone(),
                store_id: store_id.clone(),
                terminal_id: terminal_id.clone(),
                status: SaleStatus::Completed as i32,
                lines: priced.iter().map(PricedLine::to_proto).collect(),
                total: Some(total.to_proto()),
                tenders: tenders.iter().map(|t| t.to_proto()).collect(),
                change: Some(change.to_proto()),
                created_at: Some(timestamp(created)),
                negative_stock_skus: applied.negative_skus,
                refunded: Some(Money::zero(total.currency).to_proto()),
            };
            repo::insert_sale(ctx.conn, &sale, created)?;
            eventlog::append(ctx, Topic::Sales, &store_id, sale_completed(&sale))?;
            if from_cart {
                repo::cart_clear(ctx.conn, &store_id, &terminal_id)?;
            }
            Ok(CheckoutResponse { sale: Some(sale) })
        })
    })
    .await
}

/// Refund of a completed sale, whole or some lines: restocks, and never returns more than sold.
pub async fn refund(db: &Db, req: RefundRequest) -> Result<RefundResponse> {
    let key = identifier("idempotency_key", &req.idempotency_key)?.to_owned();
    let sale_id = identifier("sale_id", &req.sale_id)?.to_owned();
    for (i, l) in req.lines.iter().enumerate() {
        identifier(&format!("lines[{i}].sku"), &l.sku)?;
        if l.quantity <= 0 {
            return Err(Error::invalid(
                format!("lines[{i}].quantity"),
                format!("must be positive, got {}", l.quantity),
            ));
        }
    }
    let fp = fingerprint(&req, |r| r.idempotency_key.clear());
    db.write(move |ctx| {
        once(ctx, "sales.refund", &key, &fp, |ctx| {
            let mut sale = repo::get_sale(ctx.conn, &sale_id)?;
            let wanted: Vec<(String, i64)> = if req.lines.is_empty() {
                let rest: Vec<(String, i64)> = sale
                    .lines
                    .iter()
                    .filter(|l| l.quantity > l.quantity_refunded)
                    .map(|l| (l.sku.clone(), l.quantity - l.quantity_refunded))
                    .collect();
                if rest.is_empty() {
                    return Err(Error::precondition(
                        "REFUND",
                        format!("sale:{sale_id}"),
                        format!("sale {sale_id:?} is already fully refunded"),
                    ));
                }
                rest
            } else {
                req.lines.iter().map(|l| (l.sku.trim().to_owned(), l.quantity)).collect()
            };
            let currency = Money::from_proto("total", sale.total.as_ref())?.currency;
            let mut refund_lines = Vec::with_capacity(wanted.len());
            for (i, (sku, quantity)) in wanted.iter().enumerate() {
                let line = sale
                    .lines
                    .iter_mut()
                    .find(|l| &l.sku == sku)
                    .ok_or_else(|| Error::invalid(format!("lines[{i}].sku"), format!("{sku:?} was not sold in sale {sale_id:?}")))?;
                let left = line.quantity - line.quantity_refunded;
                if *quantity > left {
                    return Err(Error::precondition(
                        "REFUND",
                        format!("sku:{sku}"),
                        format!(
                            "lines[{i}].quantity: cannot refund {quantity} of sku {sku:?}: {} sold, {} already refunded",
                            line.quantity, line.quantity_refunded
                        ),
                    ));
                }
                line.quantity_refunded += quantity;
                let unit = Money::from_proto("unit_price", line.unit_price.as_ref())?;
                let priced = domain::price_line(&format!("lines[{i}]"), sku, &line.name, *quantity, unit)?;
                refund_lines.push(priced);
            }
            let amount = Money::sum(currency, refund_lines.iter().map(|l| l.line_total))
                .ok_or_else(|| Error::invalid("lines", "the refund amount is too large"))?;
            let refund_id = uuid::Uuid::now_v7().to_string();
            let terminal_id = if req.terminal_id.trim().is_empty() { sale.terminal_id.clone() } else { req.terminal_id.trim().to_owned() };
            let store = inventory::get_store(ctx.conn, &sale.store_id)?;
            let movements: Vec<_> = refund_lines
                .iter()
                .map(|l| redstore_inventory::StockMovement { sku: l.sku.clone(), delta: l.quantity })
                .collect();
            inventory::apply_movements(ctx, &store, "refund", &refund_id, &terminal_id, &movements)?;
            let refunded = Money::from_proto("refunded", sale.refunded.as_ref())
                .unwrap_or(Money::zero(currency))
                .checked_add(amount)
                .ok_or_else(|| Error::invalid("lines", "the refund amount is too large"))?;
            sale.refunded = Some(refunded.to_proto());
            let all_back = sale.lines.iter().all(|l| l.quantity_refunded >= l.quantity);
            sale.status = if all_back { SaleStatus::Refunded } else { SaleStatus::PartiallyRefunded } as i32;
            repo::update_sale(ctx.conn, &sale)?;
            let created = unix_ms(ctx.now);
            let refund = Refund {
                refund_id,
                sale_id: sale_id.clone(),
                lines: refund_lines.iter().map(PricedLine::to_proto).collect(),
                amount: Some(amount.to_proto()),
                created_at: Some(timestamp(created)),
            };
            repo::insert_refund(ctx.conn, &refund, created)?;
            eventlog::append(ctx, Topic::Sales, &sale.store_id, sale_refunded(&refund, &terminal_id))?;
            Ok(RefundResponse { refund: Some(refund), sale: Some(sale) })
        })
    })
    .await
}
