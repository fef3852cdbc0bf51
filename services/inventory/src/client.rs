//! `InventoryStore` over gRPC: how a sales process that does not serve inventory reaches it.
//! Every call has a deadline; only idempotent calls (reads, and applying a sale or refund by its
//! id) are retried, on UNAVAILABLE or a missed deadline, with a short backoff. Every call carries
//! the service token, which inventory's internal RPCs (applying sales and refunds) require.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use redstore_platform::barcode::Barcode;
use redstore_platform::error::{Error, Result};
use redstore_platform::money::Money;
use redstore_platform::service_token::{ServiceToken, WithServiceToken};
use redstore_proto::events::EventEnvelope;
use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
use redstore_proto::inventory::{self as pb};
use redstore_proto::stream::inventory_stream_service_client::InventoryStreamServiceClient;
use redstore_proto::stream::{InventorySnapshot, WatchInventoryRequest, watch_inventory_response::Item};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::domain::StoreRow;
use crate::domain::{ImportProduct, OversellPolicy, Product, StockCount, StockMovement};
use crate::grpc::MAX_SALES_PER_CALL;
use crate::store::{AppliedCheckout, CheckoutsQuery, Idem, Imported, InventoryStore, ProductPatch, SaleOrder};

const DEADLINE: Duration = Duration::from_secs(5);
const ATTEMPTS: u32 = 3;

pub struct GrpcInventory {
    channel: Channel,
    token: ServiceToken,
}

/// A channel whose calls carry the service token.
type Authed = InterceptedService<Channel, WithServiceToken>;

impl GrpcInventory {
    /// Connects lazily: the first call dials, so services may start in any order. `tls` says how
    /// to check an `https://` inventory's certificate.
    pub async fn connect(url: &str, token: ServiceToken, tls: Option<ClientTlsConfig>) -> anyhow::Result<Arc<Self>> {
        let uri: tonic::transport::Uri =
            url.parse().with_context(|| format!("--inventory-url {url:?} is not a URL"))?;
        let host = uri.host().with_context(|| format!("--inventory-url {url:?} names no host"))?.to_owned();
        let endpoint = |url: String, tls: Option<ClientTlsConfig>| -> anyhow::Result<Endpoint> {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .with_context(|| format!("--inventory-url {url:?} is not a URL"))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true);
            if let Some(tls) = tls {
                endpoint = endpoint.tls_config(tls).with_context(|| format!("TLS to --inventory-url {url}"))?;
            }
            Ok(endpoint)
        };
        // An address is one server; a name may stand for several (a headless Service's pods):
        // calls are spread over every address it resolves to, found again as pods come and go.
        let channel = if host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok() {
            endpoint(url.to_owned(), tls)?.connect_lazy()
        } else {
            let https = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tls = tls.map(|tls| tls.domain_name(host.clone()));
            let make = move |addr: std::net::SocketAddr| {
                endpoint(format!("{}://{addr}", if https { "https" } else { "http" }), tls.clone())
            };
            let (channel, changes) = Channel::balance_channel(16);
            tokio::spawn(follow_addresses(host, port, make, changes));
            channel
        };
        Ok(Arc::new(Self { channel, token }))
    }

    fn client(&self) -> InventoryServiceClient<Authed> {
        InventoryServiceClient::with_interceptor(self.channel.clone(), self.token.interceptor())
    }
}

/// How often the inventory URL's name is resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// Keeps the balanced channel's endpoints to the addresses `host` resolves to, until the channel
/// is dropped. A failed lookup keeps the addresses known.
async fn follow_addresses(
    host: String,
    port: u16,
    endpoint: impl Fn(std::net::SocketAddr) -> anyhow::Result<Endpoint>,
    changes: tokio::sync::mpsc::Sender<tonic::transport::channel::Change<std::net::SocketAddr, Endpoint>>,
) {
    use tonic::transport::channel::Change;
    let mut known = std::collections::BTreeSet::new();
    loop {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(found) => {
                let found: std::collections::BTreeSet<_> = found.collect();
                for gone in known.difference(&found) {
                    if changes.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                for new in found.difference(&known) {
                    match endpoint(*new) {
                        Ok(endpoint) => {
                            if changes.send(Change::Insert(*new, endpoint)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(address = %new, error = format!("{e:#}"), "cannot call inventory there")
                        }
                    }
                }
                if found != known {
                    tracing::info!(inventory = %host, addresses = ?found, "inventory's addresses");
                }
                known = found;
            }
            Err(e) => {
                redstore_platform::warn_throttled!(inventory = %host, error = %e, "cannot resolve inventory's name");
            }
        }
        tokio::select! {
            _ = changes.closed() => return,
            _ = tokio::time::sleep(RESOLVE_EVERY) => {}
        }
    }
}

fn request<T>(message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.set_timeout(DEADLINE);
    // Inventory's work continues the caller's trace.
    redstore_platform::trace::inject_metadata(req.metadata_mut());
    req
}

/// Calls an idempotent RPC with `retry`.
macro_rules! retried {
    ($self:ident, $method:ident, $req:expr) => {{
        let req = $req;
        retry(|| {
            let mut client = $self.client();
            let req = req.clone();
            async move { client.$method(request(req)).await }
        })
        .await
    }};
}

/// Runs an idempotent call, retrying transient failures.
async fn retry<T, F, Fut>(call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    use backon::Retryable as _;
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_times(ATTEMPTS as usize - 1)
        .with_jitter();
    call.retry(backoff)
        .when(|s: &Status| matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded))
        .notify(|s: &Status, after: Duration| {
            redstore_platform::warn_throttled!(
                status = %s.message(),
                retry_in_ms = after.as_millis() as u64,
                "inventory call failed; retrying"
            );
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(Error::Remote)
}

/// A call that must not be repeated blindly.
async fn once<T>(call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T> {
    call.await.map(tonic::Response::into_inner).map_err(Error::Remote)
}

fn store_row(s: pb::Store) -> StoreRow {
    let policy = OversellPolicy::from_proto("oversell_policy", s.oversell_policy).unwrap_or(OversellPolicy::Strict);
    StoreRow { store_id: s.store_id, name: s.name, policy }
}

fn product(p: Option<pb::Product>) -> Result<Product> {
    let p = p.ok_or_else(|| Error::Internal(anyhow::anyhow!("inventory answered without a product")))?;
    Ok(Product {
        price: Money::from_proto("price", p.price.as_ref())?,
        sku: p.sku,
        name: p.name,
        barcodes: p.barcodes,
        active: p.active,
    })
}

fn missing(what: &str) -> Error {
    Error::Internal(anyhow::anyhow!("inventory answered without {what}"))
}

fn page(after: &str, limit: u32) -> Option<redstore_proto::common::PageRequest> {
    let page_token = if after.is_empty() { String::new() } else { redstore_platform::page::token_after(after) };
    Some(redstore_proto::common::PageRequest { page_size: limit.min(500), page_token })
}

fn lines(movements: &[StockMovement], sign: i64) -> Vec<pb::SaleLine> {
    movements
        .iter()
        .map(|m| pb::SaleLine {
            sku: m.sku.clone(),
            quantity: sign * m.delta,
            unit_price: None,
            price_overridden: false,
        })
        .collect()
}

/// ApplySale's request for a sale: a line per sku, with the unit price it charged when it says.
/// A sale that charges prices names every sku's but those a supervisor overrode (the seller's
/// `charged` leaves them out), which go as overridden, held to no price.
fn sale_request(store_id: &str, sale: &SaleOrder) -> pb::ApplySaleRequest {
    let mut lines = lines(&sale.movements, -1);
    if !sale.charged.is_empty() {
        for line in &mut lines {
            line.unit_price = sale.charged.iter().find(|c| c.sku == line.sku).map(|c| c.price.to_proto());
            line.price_overridden = line.unit_price.is_none();
        }
    }
    let checkout = sale.checkout.as_ref();
    pb::ApplySaleRequest {
        sale_id: sale.sale_id.clone(),
        store_id: store_id.to_owned(),
        terminal_id: sale.terminal_id.clone(),
        lines,
        checkout_key: checkout.map(|c| c.key.clone()).unwrap_or_default(),
        checkout_fingerprint: checkout.map(|c| c.fingerprint.clone()).unwrap_or_default(),
        sale: checkout.map(|c| c.sale.clone()).unwrap_or_default(),
    }
}

/// One sale's outcome of an ApplySales call: its answer, or its status as ApplySale would have
/// failed with it.
fn sale_outcome(outcome: pb::ApplySaleOutcome) -> Result<pb::ApplySaleResponse> {
    match outcome.outcome {
        Some(pb::apply_sale_outcome::Outcome::Applied(applied)) => Ok(applied),
        Some(pb::apply_sale_outcome::Outcome::Error(e)) => {
            Err(Error::Remote(Status::with_details(Code::from(e.code), e.message, e.details.into())))
        }
        None => Err(Error::Internal(anyhow::anyhow!("inventory answered a sale without an outcome"))),
    }
}

impl GrpcInventory {
    /// One ApplySales call, answered with one outcome per sale: the call's status for each when
    /// the call fails. Idempotent by every sale id: a retry after a lost answer applies nothing
    /// twice.
    /// `sales` in calls of at most [`MAX_SALES_PER_CALL`] naming `store_id`; an outcome per sale.
    async fn apply_sales_chunked(
        &self,
        store_id: &str,
        sales: Vec<pb::ApplySaleRequest>,
    ) -> Vec<Result<pb::ApplySaleResponse>> {
        let mut outcomes = Vec::with_capacity(sales.len());
        let mut sales = sales.into_iter().peekable();
        while sales.peek().is_some() {
            let chunk = sales.by_ref().take(MAX_SALES_PER_CALL).collect();
            let req = pb::ApplySalesRequest { store_id: store_id.to_owned(), sales: chunk };
            outcomes.extend(self.apply_sales_call(req).await);
        }
        outcomes
    }

    async fn apply_sales_call(&self, req: pb::ApplySalesRequest) -> Vec<Result<pb::ApplySaleResponse>> {
        let count = req.sales.len();
        match retried!(self, apply_sales, req) {
            Ok(answer) if answer.outcomes.len() == count => answer.outcomes.into_iter().map(sale_outcome).collect(),
            Ok(answer) => {
                let message = format!("inventory answered {} outcomes for {count} sales", answer.outcomes.len());
                (0..count).map(|_| Err(Error::Internal(anyhow::anyhow!(message.clone())))).collect()
            }
            Err(err) => {
                let status = Status::from(err);
                (0..count).map(|_| Err(Error::Remote(status.clone()))).collect()
            }
        }
    }
}

#[tonic::async_trait]
impl InventoryStore for GrpcInventory {
    async fn create_store(&self, idem: Idem, store: StoreRow) -> Result<pb::Store> {
        let req = pb::CreateStoreRequest {
            idempotency_key: idem.key,
            store_id: store.store_id,
            name: store.name,
            oversell_policy: store.policy.to_proto() as i32,
        };
        once(self.client().create_store(request(req))).await?.store.ok_or_else(|| missing("a store"))
    }

    async fn get_store(&self, store_id: &str) -> Result<StoreRow> {
        let req = pb::GetStoreRequest { store_id: store_id.to_owned() };
        let store = retried!(self, get_store, req)?.store;
        store.map(store_row).ok_or_else(|| missing("a store"))
    }

    async fn list_stores(&self, after: &str, limit: u32) -> Result<Vec<StoreRow>> {
        let req = pb::ListStoresRequest { page: page(after, limit) };
        Ok(retried!(self, list_stores, req)?.stores.into_iter().map(store_row).collect())
    }

    async fn register_terminal(&self, idem: Idem, terminal: pb::Terminal) -> Result<pb::Terminal> {
        let req = pb::RegisterTerminalRequest {
            idempotency_key: idem.key,
            store_id: terminal.store_id,
            terminal_id: terminal.terminal_id,
            name: terminal.name,
        };
        once(self.client().register_terminal(request(req))).await?.terminal.ok_or_else(|| missing("a terminal"))
    }

    /// One GetProducts call per thousand skus (the default asks one sku at a time).
    async fn get_products(&self, skus: &[String]) -> Result<Vec<Option<Product>>> {
        let mut found = std::collections::HashMap::with_capacity(skus.len());
        for chunk in skus.chunks(1000) {
            let req = pb::GetProductsRequest { skus: chunk.to_vec() };
            for product in retried!(self, get_products, req)?.products {
                let product = self::product(Some(product))?;
                found.insert(product.sku.clone(), product);
            }
        }
        Ok(skus.iter().map(|sku| found.get(sku).cloned()).collect())
    }

    async fn require_terminal(&self, store_id: &str, terminal_id: &str) -> Result<()> {
        self.get_terminal(store_id, terminal_id).await.map(|_| ())
    }

    async fn get_terminal(&self, store_id: &str, terminal_id: &str) -> Result<pb::Terminal> {
        let req = pb::GetTerminalRequest { store_id: store_id.to_owned(), terminal_id: terminal_id.to_owned() };
        retried!(self, get_terminal, req)?.terminal.ok_or_else(|| missing("a terminal"))
    }

    async fn list_terminals(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::Terminal>> {
        let req = pb::ListTerminalsRequest { store_id: store_id.to_owned(), page: page(after, limit) };
        Ok(retried!(self, list_terminals, req)?.terminals)
    }

    async fn create_product(&self, idem: Idem, product: Product, _barcodes: Vec<Barcode>) -> Result<pb::Product> {
        let req = pb::CreateProductRequest {
            idempotency_key: idem.key,
            sku: product.sku,
            name: product.name,
            price: Some(product.price.to_proto()),
            barcodes: product.barcodes,
        };
        once(self.client().create_product(request(req))).await?.product.ok_or_else(|| missing("a product"))
    }

    async fn update_product(&self, idem: Idem, patch: ProductPatch) -> Result<pb::Product> {
        let req = pb::UpdateProductRequest {
            idempotency_key: idem.key,
            sku: patch.sku,
            name: patch.name,
            price: patch.price.map(Money::to_proto),
            update_barcodes: patch.barcodes.is_some(),
            barcodes: patch.barcodes.unwrap_or_default().iter().map(|b| b.gtin13().to_owned()).collect(),
            active: patch.active,
        };
        once(self.client().update_product(request(req))).await?.product.ok_or_else(|| missing("a product"))
    }

    async fn get_product(&self, sku: &str) -> Result<Product> {
        let req = pb::GetProductRequest { sku: sku.to_owned() };
        product(retried!(self, get_product, req)?.product)
    }

    async fn list_products(&self, include_inactive: bool, after: &str, limit: u32) -> Result<Vec<Product>> {
        let req = pb::ListProductsRequest { page: page(after, limit), include_inactive };
        let products = retried!(self, list_products, req)?.products;
        products.into_iter().map(|p| product(Some(p))).collect()
    }

    async fn product_by_barcode(&self, barcode: &Barcode) -> Result<Product> {
        let req = pb::LookupBarcodeRequest { barcode: barcode.gtin13().to_owned() };
        product(retried!(self, lookup_barcode, req)?.product)
    }

    async fn get_stock(&self, store_id: &str, sku: &str) -> Result<pb::StockLevel> {
        let req = pb::GetStockRequest { store_id: store_id.to_owned(), sku: sku.to_owned() };
        retried!(self, get_stock, req)?.stock.ok_or_else(|| missing("stock"))
    }

    async fn list_stock(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::StockLevel>> {
        let req = pb::ListStockRequest { store_id: store_id.to_owned(), page: page(after, limit) };
        Ok(retried!(self, list_stock, req)?.stock)
    }

    async fn adjust_stock(
        &self,
        idem: Idem,
        store_id: &str,
        movement: StockMovement,
        reason: &'static str,
    ) -> Result<pb::AdjustStockResponse> {
        let reason = match reason {
            "received" => pb::AdjustmentReason::Received,
            "damaged" => pb::AdjustmentReason::Damaged,
            "lost" => pb::AdjustmentReason::Lost,
            _ => pb::AdjustmentReason::CountCorrection,
        };
        let req = pb::AdjustStockRequest {
            idempotency_key: idem.key,
            store_id: store_id.to_owned(),
            sku: movement.sku,
            quantity_delta: movement.delta,
            reason: reason as i32,
            note: String::new(),
        };
        // Idempotent by its (required) key.
        retried!(self, adjust_stock, req)
    }

    async fn apply_sale(&self, store_id: &str, sale: SaleOrder) -> Result<pb::ApplySaleResponse> {
        // Inventory fingerprints the request it receives.
        let req = sale_request(store_id, &sale);
        // The sale id is the idempotency key: a retry after a lost answer applies nothing twice.
        retried!(self, apply_sale, req)
    }

    async fn apply_sales(&self, store_id: &str, sales: Vec<SaleOrder>) -> Vec<Result<pb::ApplySaleResponse>> {
        self.apply_sales_chunked(store_id, sales.iter().map(|sale| sale_request(store_id, sale)).collect()).await
    }

    async fn apply_chain_sales(&self, sales: Vec<(String, SaleOrder)>) -> Vec<Result<pb::ApplySaleResponse>> {
        // Calls naming no store, whatever its sales' stores (each sale names its own).
        self.apply_sales_chunked("", sales.iter().map(|(store_id, sale)| sale_request(store_id, sale)).collect()).await
    }

    async fn apply_refund(
        &self,
        refund_id: &str,
        store_id: &str,
        terminal_id: &str,
        movements: Vec<StockMovement>,
    ) -> Result<pb::ApplySaleResponse> {
        let req = pb::ApplyRefundRequest {
            refund_id: refund_id.to_owned(),
            store_id: store_id.to_owned(),
            terminal_id: terminal_id.to_owned(),
            lines: lines(&movements, 1),
        };
        let answer = retried!(self, apply_refund, req)?;
        Ok(pb::ApplySaleResponse { stock: answer.stock, store_seq: answer.store_seq, ..Default::default() })
    }

    async fn applied_checkouts(&self, store_id: &str, query: CheckoutsQuery) -> Result<Vec<AppliedCheckout>> {
        let req = pb::ListAppliedCheckoutsRequest {
            store_id: store_id.to_owned(),
            applied_from_ms: query.from_ms,
            applied_before_ms: query.before_ms,
            after: query
                .after
                .map(|(applied_at_ms, checkout_key)| pb::AppliedCheckoutCursor { applied_at_ms, checkout_key }),
            limit: query.limit,
            keys_only: query.keys_only,
            checkout_keys: query.keys,
        };
        let answer = retried!(self, list_applied_checkouts, req)?;
        Ok(answer
            .checkouts
            .into_iter()
            .map(|c| AppliedCheckout {
                key: c.checkout_key,
                fingerprint: c.checkout_fingerprint,
                applied_at_ms: c.applied_at_ms,
                answer: c.answer.unwrap_or_default(),
            })
            .collect())
    }

    async fn snapshot(&self, store_id: &str) -> Result<InventorySnapshot> {
        let req = WatchInventoryRequest {
            store_id: store_id.to_owned(),
            resume_after: 0,
            include_snapshot: true,
            ..Default::default()
        };
        let mut stream = InventoryStreamServiceClient::with_interceptor(self.channel.clone(), self.token.interceptor())
            .watch_inventory(request(req))
            .await
            .map_err(Error::Remote)?
            .into_inner();
        match stream.next().await {
            Some(Ok(resp)) => match resp.item {
                Some(Item::Snapshot(s)) => Ok(s),
                _ => Err(missing("a snapshot")),
            },
            Some(Err(s)) => Err(Error::Remote(s)),
            None => Err(missing("a snapshot")),
        }
    }

    /// One batch, as a stream of one message.
    async fn import_products(&self, idem: Idem, products: Vec<ImportProduct>) -> Result<Imported> {
        let batch = pb::ImportProductsRequest {
            idempotency_key: idem.key,
            products: products
                .into_iter()
                .map(|p| pb::ImportedProduct {
                    sku: p.product.sku,
                    name: p.product.name,
                    price: Some(p.product.price.to_proto()),
                    barcodes: p.product.barcodes,
                    active: p.product.active,
                })
                .collect(),
        };
        let answer = once(self.client().import_products(request(futures::stream::iter([batch])))).await?;
        Ok(Imported { records: answer.records as u32, replayed: answer.replayed_batches > 0 })
    }

    /// One batch, as a stream of one message.
    async fn import_stock(&self, idem: Idem, stores: Vec<(String, Vec<StockCount>)>) -> Result<Imported> {
        let mut counts: Vec<StockCount> = stores.into_iter().flat_map(|(_, counts)| counts).collect();
        counts.sort_by_key(|c| c.index);
        let batch = pb::ImportStockRequest {
            idempotency_key: idem.key,
            counts: counts
                .into_iter()
                .map(|c| pb::StockCount { store_id: c.store_id, sku: c.sku, quantity: c.quantity })
                .collect(),
        };
        let answer = once(self.client().import_stock(request(futures::stream::iter([batch])))).await?;
        Ok(Imported { records: answer.records as u32, replayed: answer.replayed_batches > 0 })
    }

    async fn events_after(&self, _store_id: &str, _after: u64, _limit: u32) -> Result<Vec<EventEnvelope>> {
        Err(Error::unavailable(
            "inventory events are read from the event log or a live stream, not through the inventory client",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_becomes_an_endpoint_per_address_until_the_channel_is_gone() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let make = |addr: std::net::SocketAddr| Ok(Endpoint::from_shared(format!("http://{addr}"))?);
        let following = tokio::spawn(follow_addresses("localhost".to_owned(), 4321, make, tx));
        let mut inserted = Vec::new();
        while let Ok(Some(change)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            match change {
                tonic::transport::channel::Change::Insert(addr, _) => inserted.push(addr),
                tonic::transport::channel::Change::Remove(addr) => panic!("{addr} removed"),
            }
        }
        assert!(inserted.contains(&"127.0.0.1:4321".parse().unwrap()), "{inserted:?}");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(1), following).await.expect("it stops with the channel").unwrap();
    }
}
