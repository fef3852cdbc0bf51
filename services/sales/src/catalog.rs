//! What sales keeps of inventory's catalog between checkouts, so that a checkout batch need not ask
//! inventory before it prices: the terminals seen registered, and products for a few seconds.
//!
//! A copy of the catalog can be stale, but a sale priced from it cannot go through at a stale
//! price: each sale carries the unit prices it charged to inventory, which takes the stock only
//! while those are still the catalog's prices and the products are for sale, in the same
//! transaction ([`redstore_inventory::domain::check_charged`]); otherwise it refuses the sale
//! ([`REPRICE`]) and sales forgets those products and prices the sale again. What the copy may get
//! wrong for a few seconds is only a product's name on a receipt.

use std::collections::HashMap;
use std::time::Duration;

use moka::sync::Cache;
use redstore_inventory::InventoryStore;
use redstore_inventory::domain::{ChargedPrice, Product};
use redstore_platform::error::{Error, Result};
use redstore_proto::sales::Sale;

pub use redstore_inventory::domain::REPRICE;

/// How long a product read from inventory is used before it is read again.
const PRODUCT_TTL: Duration = Duration::from_secs(5);
/// Most products kept: a chain's whole catalog at work, and no more whatever is asked.
const MAX_PRODUCTS: u64 = 200_000;

/// How long a terminal seen registered is remembered without a checkout: a chain's quiet stores
/// leave nothing here, and a terminal back at work costs one question to inventory.
const TERMINAL_IDLE: Duration = Duration::from_secs(600);
/// Most terminals remembered.
const MAX_TERMINALS: u64 = 1_000_000;

/// Bounded copies (moka), which drop what is past its time by themselves.
pub struct Catalog {
    products: Cache<String, Product>,
    /// (store, terminal) pairs seen registered. Nothing unregisters a terminal (the API has no
    /// such call), so once seen it stays registered while it is used.
    terminals: Cache<(String, String), ()>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            products: Cache::builder().max_capacity(MAX_PRODUCTS).time_to_live(PRODUCT_TTL).build(),
            terminals: Cache::builder().max_capacity(MAX_TERMINALS).time_to_idle(TERMINAL_IDLE).build(),
        }
    }
}

impl Catalog {
    /// The products of `skus` that exist: from the copy, and what it lacks (or holds for too long)
    /// from inventory in one call.
    pub async fn products(&self, inventory: &dyn InventoryStore, skus: &[String]) -> Result<HashMap<String, Product>> {
        let mut found = HashMap::with_capacity(skus.len());
        let mut missing = Vec::new();
        for sku in skus {
            match self.products.get(sku) {
                Some(product) => {
                    found.insert(sku.clone(), product);
                }
                None => missing.push(sku.clone()),
            }
        }
        if !missing.is_empty() {
            for product in inventory.get_products(&missing).await?.into_iter().flatten() {
                self.products.insert(product.sku.clone(), product.clone());
                found.insert(product.sku.clone(), product);
            }
        }
        Ok(found)
    }

    /// Forgets what the copy holds of these skus: inventory refused a sale priced from it.
    pub fn forget<'a>(&self, skus: impl IntoIterator<Item = &'a str>) {
        for sku in skus {
            self.products.invalidate(sku);
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
        // A read, unlike contains_key: it resets the idle timer.
        if self.terminals.get(&pair).is_some() {
            return Ok(());
        }
        inventory.require_terminal(store_id, terminal_id).await?;
        self.terminals.insert(pair, ());
        Ok(())
    }
}

/// The unit prices a drafted sale charged, one per sku, for inventory to hold it to; not those
/// a supervisor overrode.
pub fn charged(sale: &Sale) -> Vec<ChargedPrice> {
    let mut charged: Vec<ChargedPrice> = Vec::with_capacity(sale.lines.len());
    for line in &sale.lines {
        if !line.override_reason.is_empty() || charged.iter().any(|c| c.sku == line.sku) {
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
