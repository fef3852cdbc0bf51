//! An inventory that fails `apply_sale` on demand, as a network or a crash would: before the
//! call reaches inventory (nothing applied), or after inventory applied it (the answer is lost).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use redstore_inventory::domain::StoreRow;
use redstore_inventory::domain::{ImportProduct, Product, StockCount};
use redstore_inventory::store::{AppliedCheckout, CheckoutsQuery, Idem, Imported, ProductPatch, SaleOrder};
use redstore_inventory::{InventoryStore, StockMovement};
use redstore_platform::barcode::Barcode;
use redstore_platform::error::{Error, Result};
use redstore_proto::events::EventEnvelope;
use redstore_proto::inventory as pb;
use redstore_proto::stream::InventorySnapshot;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    None = 0,
    /// Every `apply_sale` fails without reaching inventory.
    Down = 1,
    /// The next `apply_sale` is applied, then its answer is lost.
    LoseNextAnswer = 2,
    /// The next `apply_sale` waits, before reaching inventory, until [`Flaky::release`].
    HoldNext = 3,
}

pub struct Flaky {
    inner: Arc<dyn InventoryStore>,
    fault: AtomicU8,
    held: tokio::sync::Notify,
    released: tokio::sync::Notify,
}

impl Flaky {
    pub fn new(inner: Arc<dyn InventoryStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fault: AtomicU8::new(Fault::None as u8),
            held: tokio::sync::Notify::new(),
            released: tokio::sync::Notify::new(),
        })
    }

    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    /// Returns once an `apply_sale` is held (see [`Fault::HoldNext`]).
    pub async fn wait_held(&self) {
        self.held.notified().await;
    }

    /// Lets the held `apply_sale` go on.
    pub fn release(&self) {
        self.released.notify_one();
    }
}

fn unreachable_inventory() -> Error {
    Error::unavailable("inventory is unreachable (injected fault)")
}

#[tonic::async_trait]
impl InventoryStore for Flaky {
    async fn create_store(&self, idem: Idem, store: StoreRow) -> Result<pb::Store> {
        self.inner.create_store(idem, store).await
    }
    async fn get_store(&self, store_id: &str) -> Result<StoreRow> {
        self.inner.get_store(store_id).await
    }
    async fn list_stores(&self, after: &str, limit: u32) -> Result<Vec<StoreRow>> {
        self.inner.list_stores(after, limit).await
    }
    async fn register_terminal(&self, idem: Idem, terminal: pb::Terminal) -> Result<pb::Terminal> {
        self.inner.register_terminal(idem, terminal).await
    }
    async fn require_terminal(&self, store_id: &str, terminal_id: &str) -> Result<()> {
        self.inner.require_terminal(store_id, terminal_id).await
    }
    async fn list_terminals(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::Terminal>> {
        self.inner.list_terminals(store_id, after, limit).await
    }
    async fn create_product(&self, idem: Idem, product: Product, barcodes: Vec<Barcode>) -> Result<pb::Product> {
        self.inner.create_product(idem, product, barcodes).await
    }
    async fn update_product(&self, idem: Idem, patch: ProductPatch) -> Result<pb::Product> {
        self.inner.update_product(idem, patch).await
    }
    async fn get_product(&self, sku: &str) -> Result<Product> {
        self.inner.get_product(sku).await
    }
    async fn list_products(&self, include_inactive: bool, after: &str, limit: u32) -> Result<Vec<Product>> {
        self.inner.list_products(include_inactive, after, limit).await
    }
    async fn product_by_barcode(&self, barcode: &Barcode) -> Result<Product> {
        self.inner.product_by_barcode(barcode).await
    }
    async fn get_stock(&self, store_id: &str, sku: &str) -> Result<pb::StockLevel> {
        self.inner.get_stock(store_id, sku).await
    }
    async fn list_stock(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<pb::StockLevel>> {
        self.inner.list_stock(store_id, after, limit).await
    }
    async fn adjust_stock(
        &self,
        idem: Idem,
        store_id: &str,
        movement: StockMovement,
        reason: &'static str,
    ) -> Result<pb::AdjustStockResponse> {
        self.inner.adjust_stock(idem, store_id, movement, reason).await
    }
    async fn apply_sale(&self, store_id: &str, sale: SaleOrder) -> Result<pb::ApplySaleResponse> {
        if self.fault.load(Ordering::SeqCst) == Fault::Down as u8 {
            return Err(unreachable_inventory());
        }
        let hold = Fault::HoldNext as u8;
        if self.fault.compare_exchange(hold, Fault::None as u8, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.held.notify_one();
            self.released.notified().await;
        }
        let applied = self.inner.apply_sale(store_id, sale).await;
        let lose = Fault::LoseNextAnswer as u8;
        if self.fault.compare_exchange(lose, Fault::None as u8, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            applied?;
            return Err(unreachable_inventory());
        }
        applied
    }
    async fn apply_refund(
        &self,
        refund_id: &str,
        store_id: &str,
        terminal_id: &str,
        movements: Vec<StockMovement>,
    ) -> Result<pb::ApplySaleResponse> {
        self.inner.apply_refund(refund_id, store_id, terminal_id, movements).await
    }
    async fn applied_checkouts(&self, store_id: &str, query: CheckoutsQuery) -> Result<Vec<AppliedCheckout>> {
        self.inner.applied_checkouts(store_id, query).await
    }
    async fn import_products(&self, idem: Idem, products: Vec<ImportProduct>) -> Result<Imported> {
        self.inner.import_products(idem, products).await
    }
    async fn import_stock(&self, idem: Idem, stores: Vec<(String, Vec<StockCount>)>) -> Result<Imported> {
        self.inner.import_stock(idem, stores).await
    }
    async fn snapshot(&self, store_id: &str) -> Result<InventorySnapshot> {
        self.inner.snapshot(store_id).await
    }
    async fn events_after(&self, store_id: &str, after: u64, limit: u32) -> Result<Vec<EventEnvelope>> {
        self.inner.events_after(store_id, after, limit).await
    }
}
