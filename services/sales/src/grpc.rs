//! The tonic adapter for SalesService: parses requests (naming the bad field), calls the sales
//! store, converts back.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use redstore_inventory::domain::sale_movements;
use redstore_platform::audit::{self, Entry, Trail};
use redstore_platform::barcode::Barcode;
use redstore_platform::caller::Caller;
use redstore_platform::error::{Error, Result, identifier, optional_identifier};
use redstore_platform::idempotency::{Idem, fingerprint};
use redstore_platform::limits;
use redstore_platform::page::Page;
use redstore_platform::text::optional_text;
use redstore_proto::sales::sales_service_server::{SalesService, SalesServiceServer};
use redstore_proto::sales::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::domain;
use crate::store::{CheckoutOrder, RefundOrder, SalesStore, ScanOrder};

#[derive(Clone)]
pub struct SalesGrpc {
    store: Arc<dyn SalesStore>,
}

impl SalesGrpc {
    pub fn new(store: Arc<dyn SalesStore>) -> Self {
        Self { store }
    }

    pub fn into_server(self) -> SalesServiceServer<Self> {
        SalesServiceServer::new(self)
    }

    /// One scan by `caller`: adds the scanned item to the terminal's cart, once per scan_id.
    pub async fn scan(&self, caller: &Caller, req: ScanRequest) -> Result<ScanResponse> {
        let (store_id, terminal_id) = caller.terminal(&req.store_id, &req.terminal_id)?;
        let order = ScanOrder {
            store_id: store_id.to_owned(),
            terminal_id: terminal_id.to_owned(),
            scan_id: identifier("scan_id", &req.scan_id)?.to_owned(),
            barcode: Barcode::parse("code", &req.code)?,
            quantity: positive_or_one(req.quantity)?,
            fingerprint: fingerprint(&req, |_| {}),
        };
        self.store.scan(order).await
    }

    /// A stream's answer to one scan: its line, or its error with the cart as it is (when the
    /// caller may see it); a bad scan leaves the stream open.
    async fn answer_scan(&self, caller: &Caller, scan: ScanRequest) -> ScanResponse {
        let (scan_id, store_id, terminal_id) = (scan.scan_id.clone(), scan.store_id.clone(), scan.terminal_id.clone());
        match self.scan(caller, scan).await {
            Ok(resp) => resp,
            Err(err) => {
                let cart = match caller.terminal(&store_id, &terminal_id) {
                    Ok((s, t)) => self.store.get_cart(s, t).await.ok(),
                    Err(_) => None,
                };
                ScanResponse { scan_id, result: Some(scan_response::Result::Error(scan_error(err))), cart }
            }
        }
    }
}

/// A quantity to add: 0 means 1; otherwise `1..=MAX_LINE_QUANTITY`.
fn positive_or_one(quantity: i64) -> Result<i64> {
    match quantity {
        0 => Ok(1),
        q => limits::line_quantity("quantity", q),
    }
}

fn ok<T>(r: Result<T>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

/// "InvalidArgument" → "INVALID_ARGUMENT", the canonical gRPC code name.
fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn scan_error(err: Error) -> ScanError {
    let field = err.field().unwrap_or_default().to_owned();
    let status = Status::from(err);
    ScanError { code: code_name(status.code()), message: status.message().to_owned(), field }
}

type ScanStreamOut = Pin<Box<dyn Stream<Item = Result<ScanResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SalesService for SalesGrpc {
    type ScanStreamStream = ScanStreamOut;

    async fn scan_stream(&self, req: Request<Streaming<ScanRequest>>) -> Result<Response<ScanStreamOut>, Status> {
        let (caller, inbound) = Caller::split(req)?;
        let caller = Arc::new(caller);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let this = self.clone();
        let at_once = self.store.scans_at_once().max(1);
        let answers = inbound.map(move |next| {
            let (this, caller) = (this.clone(), caller.clone());
            async move {
                match next {
                    Ok(scan) => Ok(this.answer_scan(&caller, scan).await),
                    // The client's stream broke, or a scan was over the size limit: the answer
                    // ends the stream with a status, never OK.
                    Err(status) => Err(match status.code() {
                        tonic::Code::OutOfRange => Status::resource_exhausted(status.message()),
                        _ => status,
                    }),
                }
            }
        });
        tokio::spawn(async move {
            // Where the store keeps a stream's scans in the order they came while several are in
            // it, they are taken up as they arrive, not each after the last one's answer. The
            // answers go back in that order.
            let mut answers = std::pin::pin!(answers.buffered(at_once));
            while let Some(answer) = answers.next().await {
                let last = answer.is_err();
                if tx.send(answer).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(name = "sales.scan", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        ok(SalesGrpc::scan(self, &caller, req).await)
    }

    async fn get_cart(&self, req: Request<GetCartRequest>) -> Result<Response<GetCartResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let (s, t) = caller.terminal(&req.store_id, &req.terminal_id)?;
            Ok(GetCartResponse { cart: Some(self.store.get_cart(s, t).await?) })
        }
        .await;
        ok(result)
    }

    async fn add_cart_item(&self, req: Request<AddCartItemRequest>) -> Result<Response<AddCartItemResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let key = identifier("idempotency_key", &req.idempotency_key)?.to_owned();
            let (s, t) = caller.terminal(&req.store_id, &req.terminal_id)?;
            let sku = identifier("sku", &req.sku)?;
            let quantity = positive_or_one(req.quantity)?;
            let idem = Idem { key, fingerprint: fingerprint(&req, |r| r.idempotency_key.clear()) };
            self.store.add_cart_item(idem, s, t, sku, quantity).await
        }
        .await;
        ok(result)
    }

    async fn set_cart_item_quantity(
        &self,
        req: Request<SetCartItemQuantityRequest>,
    ) -> Result<Response<SetCartItemQuantityResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let (s, t) = caller.terminal(&req.store_id, &req.terminal_id)?;
            let sku = identifier("sku", &req.sku)?;
            if req.quantity != 0 {
                limits::line_quantity("quantity", req.quantity)?;
            }
            // Setting a quantity is idempotent by nature; the key is accepted but not required.
            Ok(SetCartItemQuantityResponse {
                cart: Some(self.store.set_cart_item_quantity(s, t, sku, req.quantity).await?),
            })
        }
        .await;
        ok(result)
    }

    async fn remove_cart_item(
        &self,
        req: Request<RemoveCartItemRequest>,
    ) -> Result<Response<RemoveCartItemResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let (s, t) = caller.terminal(&req.store_id, &req.terminal_id)?;
            let sku = identifier("sku", &req.sku)?;
            // Removing a line that is gone already is fine: idempotent by nature.
            Ok(RemoveCartItemResponse { cart: Some(self.store.set_cart_item_quantity(s, t, sku, 0).await?) })
        }
        .await;
        ok(result)
    }

    async fn clear_cart(&self, req: Request<ClearCartRequest>) -> Result<Response<ClearCartResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let (s, t) = caller.terminal(&req.store_id, &req.terminal_id)?;
            Ok(ClearCartResponse { cart: Some(self.store.clear_cart(s, t).await?) })
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "sales.checkout", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn checkout(&self, req: Request<CheckoutRequest>) -> Result<Response<CheckoutResponse>, Status> {
        // Only a checkout that overrides a price is recorded.
        let overriding = req.get_ref().lines.iter().any(|l| l.unit_price_override.is_some());
        let trail = if overriding { Trail::of(&req) } else { None };
        let (caller, req) = Caller::split(req)?;
        // Parsed first: a refused override is recorded too.
        let overrides = domain::parse_overrides(&req.lines)?;
        let result = async {
            domain::may_override(&caller, &overrides)?;
            let key = identifier("idempotency_key", &req.idempotency_key)?.to_owned();
            let (s, t) = caller.terminal(&req.store_id, &req.terminal_id)?;
            // Validated before storage is touched; a sku on several lines is sold as one line.
            let lines: Vec<(String, i64)> = if req.lines.is_empty() {
                Vec::new()
            } else {
                sale_movements("lines", req.lines.iter().map(|l| (l.sku.clone(), l.quantity)))?
                    .into_iter()
                    .map(|m| (m.sku, -m.delta))
                    .collect()
            };
            let order = CheckoutOrder {
                idem: Idem { key, fingerprint: fingerprint(&req, |r| r.idempotency_key.clear()) },
                store_id: s.to_owned(),
                terminal_id: t.to_owned(),
                lines,
                overrides: overrides.clone(),
                tenders: domain::parse_tenders(&req.tenders)?,
            };
            Ok(CheckoutResponse { sale: Some(self.store.checkout(order).await?) })
        }
        .await;
        metrics::counter!("redstore_checkouts_total", "outcome" => redstore_platform::metrics::outcome(&result))
            .increment(1);
        if !overrides.is_empty() {
            let sale_id = result.as_ref().ok().and_then(|r| r.sale.as_ref()).map(|s| s.sale_id.clone());
            for (sku, o) in &overrides {
                let detail = format!("sku {sku}: {} (minor units); reason {:?}", o.price, o.reason);
                let entry = Entry {
                    store_id: req.store_id.chars().take(64).collect(),
                    action: "sale.price_overridden",
                    subject: sale_id.clone().unwrap_or_default(),
                    detail,
                    outcome: audit::outcome(&result),
                };
                audit::record(&trail, entry).await;
            }
        }
        ok(result)
    }

    async fn get_sale(&self, req: Request<GetSaleRequest>) -> Result<Response<GetSaleResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let sale = self.store.get_sale(identifier("sale_id", &req.sale_id)?).await?;
            caller.may_act_in(&sale.store_id)?;
            Ok(GetSaleResponse { sale: Some(sale) })
        }
        .await;
        ok(result)
    }

    async fn list_sales(&self, req: Request<ListSalesRequest>) -> Result<Response<ListSalesResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let store_id = caller.store("store_id", &req.store_id)?;
            let page = Page::from_proto("page", req.page.as_ref())?;
            // Sale ids are UUIDv7s, ordered by the time they were made: a start time is a cursor.
            let after = match req.created_from.as_ref().map(domain::first_sale_id_from).transpose()? {
                Some(from) if from > page.after => from,
                _ => page.after.clone(),
            };
            let mut rows = self.store.list_sales(store_id, &after, page.fetch_limit()).await?;
            let next = page.finish_within(&mut rows, |s| s.sale_id.clone(), prost::Message::encoded_len);
            Ok(ListSalesResponse { sales: rows, page: Some(next) })
        }
        .await;
        ok(result)
    }

    #[tracing::instrument(name = "sales.refund", skip_all)]
    async fn refund(&self, req: Request<RefundRequest>) -> Result<Response<RefundResponse>, Status> {
        let trail = Trail::of(&req);
        let (caller, req) = Caller::split(req)?;
        let mut store_of_sale = String::new();
        let result = async {
            let key = identifier("idempotency_key", &req.idempotency_key)?.to_owned();
            let sale_id = identifier("sale_id", &req.sale_id)?.to_owned();
            limits::at_most("lines", &req.lines, limits::MAX_SALE_LINES)?;
            let mut lines = Vec::with_capacity(req.lines.len());
            for (i, l) in req.lines.iter().enumerate() {
                let sku = identifier(&format!("lines[{i}].sku"), &l.sku)?.to_owned();
                lines.push((sku, limits::line_quantity(&format!("lines[{i}].quantity"), l.quantity)?));
            }
            optional_text("reason", &req.reason, limits::MAX_NOTE_CHARS)?;
            let terminal_id = optional_identifier("terminal_id", &req.terminal_id)?.to_owned();
            // The sale's store is the refund's: the caller must work there (at the terminal,
            // when one is named).
            let store_id = self.store.get_sale(&sale_id).await?.store_id;
            store_of_sale.clone_from(&store_id);
            match terminal_id.as_str() {
                "" => caller.may_act_in(&store_id)?,
                terminal => caller.may_use_terminal(&store_id, terminal)?,
            }
            let order = RefundOrder {
                idem: Idem { key, fingerprint: fingerprint(&req, |r| r.idempotency_key.clear()) },
                sale_id,
                lines,
                terminal_id,
            };
            self.store.refund(order).await
        }
        .await;
        let lines: Vec<String> = req.lines.iter().map(|l| format!("{} x{}", l.sku, l.quantity)).collect();
        let detail = format!("{}; reason {:?}", lines.join(", "), req.reason);
        let entry = Entry {
            store_id: store_of_sale,
            action: "sale.refunded",
            subject: req.sale_id.chars().take(64).collect(),
            detail,
            outcome: audit::outcome(&result),
        };
        audit::record(&trail, entry).await;
        ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_canonical() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::FailedPrecondition), "FAILED_PRECONDITION");
    }

    #[test]
    fn zero_means_one_and_negative_is_refused() {
        assert_eq!(positive_or_one(0).unwrap(), 1);
        assert_eq!(positive_or_one(3).unwrap(), 3);
        assert_eq!(positive_or_one(-1).unwrap_err().field(), Some("quantity"));
    }
}
