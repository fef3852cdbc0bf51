//! What sales keeps of inventory's catalog between checkouts, so that a checkout batch need not ask
//! inventory before it prices: the terminals seen registered, and products for a few seconds.
//!
//! A copy of the catalog can be stale, but a sale priced from it cannot go through at a stale
//! price: each sale carries the unit prices it charged to inventory, which takes the stock only
//! while those are still the catalog's prices and the products are for sale, in the same
//! transaction ([`redstore_inventory::domain::check_charged`]); otherwise it refuses the sale
//! ([`REPRICE`]) and sales forgets those products and prices the sale again. What the copy may get
//! wrong for a few seconds is only a product's name on a receipt.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use parking_lot::Mutex;
use redstore_inventory::InventoryStore;
use redstore_inventory::domain::{ChargedPrice, Product};
use redstore_platform::error::{Error, Result};
use redstore_proto::sales::Sale;
use tokio::time::Instant;

pub use redstore_inventory::domain::REPRICE;

/// How long a product read from inventory is used before it is read again.
const PRODUCT_TTL: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Catalog {
    products: Mutex<HashMap<String, (Product, Instant)>>,
    /// (store, terminal) pairs seen registered. Nothing unregisters a terminal (the API has no such
    /// call), so once seen it stays registered.
    terminals: Mutex<HashSet<(String, String)>>,
}

impl Catalog {
    /// The products of `skus` that exist: from the copy, and what it lacks (or holds for too long)
    /// from inventory in one call.
    pub async fn products(&self, inventory: &dyn InventoryStore, skus: &[String]) -> Result<HashMap<String, Product>> {
        let now = Instant::now();
        let mut found = HashMap::with_capacity(skus.len());
        let mut missing = Vec::new();
        {
            let products = self.products.lock();
            for sku in skus {
                match products.get(sku) {
                    Some((product, read)) if now.duration_since(*read) < PRODUCT_TTL => {
                        found.insert(sku.clone(), product.clone());
                    }
                    _ => missing.push(sku.clone()),
                }
            }
        }
        if !missing.is_empty() {
            let read = inventory.get_products(&missing).await?;
            let mut products = self.products.lock();
            for product in read.into_iter().flatten() {
                products.insert(product.sku.clone(), (product.clone(), now));
                found.insert(product.sku.clone(), product);
            }
        }
        Ok(found)
    }

    /// Forgets what the copy holds of these skus: inventory refused a sale priced from it.
    pub fn forget<'a>(&self, skus: impl IntoIterator<Item = &'a str>) {
        let mut products = self.products.lock();
        for sku in skus {
            products.remove(sku);
        }
    }

    /// `InventoryStore::require_terminal`, asked once per terminal that exists.
    pub async fn require_terminal(
        &self,
        inventory: &dyn InventoryStore,
        store_id: &str,
        terminal_id: &str,
    ) -> Result<()> {
        let pair = (store_id.to_owned(), terminal_id.to_owned());
        if self.terminals.lock().contains(&pair) {
            return Ok(());
        }
        inventory.require_terminal(store_id, terminal_id).await?;
        self.terminals.lock().insert(pair);
        Ok(())
    }
}

/// The unit prices a drafted sale charged, one per sku, for inventory to hold it to.
pub fn charged(sale: &Sale) -> Vec<ChargedPrice> {
    let mut charged: Vec<ChargedPrice> = Vec::with_capacity(sale.lines.len());
    for line in &sale.lines {
        if charged.iter().any(|c| c.sku == line.sku) {
            continue;
        }
        if let Ok(price) = redstore_platform::money::Money::from_proto("unit_price", line.unit_price.as_ref()) {
            charged.push(ChargedPrice { sku: line.sku.clone(), price });
        }
    }
    charged
}

/// Whether inventory refused a sale because the catalog changed since it was priced.
pub fn is_reprice(err: &Error) -> bool {
    err.violation_type().as_deref() == Some(REPRICE)
}
