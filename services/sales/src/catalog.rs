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

use parking_lot::Mutex;
use redstore_inventory::InventoryStore;
use redstore_inventory::domain::{ChargedPrice, Product};
use redstore_platform::error::{Error, Result};
use redstore_proto::sales::Sale;
use tokio::time::Instant;

pub use redstore_inventory::domain::REPRICE;

/// How long a product read from inventory is used before it is read again.
const PRODUCT_TTL: Duration = Duration::from_secs(5);

/// How long a terminal seen registered is remembered without a checkout: a chain's quiet stores
/// leave nothing here, and a terminal back at work costs one question to inventory.
const TERMINAL_IDLE: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct Catalog {
    products: Mutex<HashMap<String, (Product, Instant)>>,
    /// (store, terminal) pairs seen registered, with when they were last used. Nothing unregisters
    /// a terminal (the API has no such call), so once seen it stays registered; pairs idle for
    /// [`TERMINAL_IDLE`] are forgotten ([`Catalog::forget_idle`]).
    terminals: Mutex<HashMap<(String, String), Instant>>,
    /// When [`Catalog::forget_idle`] last ran.
    pruned: Mutex<Option<Instant>>,
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
        let now = Instant::now();
        self.forget_idle(now);
        if let Some(used) = self.terminals.lock().get_mut(&pair) {
            *used = now;
            return Ok(());
        }
        inventory.require_terminal(store_id, terminal_id).await?;
        self.terminals.lock().insert(pair, now);
        Ok(())
    }

    /// At most once per [`TERMINAL_IDLE`], drops the terminals unused for that long and the
    /// products past their [`PRODUCT_TTL`], so that what the copy holds follows the stores at work,
    /// not the chain's size.
    fn forget_idle(&self, now: Instant) {
        {
            let mut pruned = self.pruned.lock();
            match *pruned {
                Some(at) if now.duration_since(at) < TERMINAL_IDLE => return,
                _ => *pruned = Some(now),
            }
        }
        self.terminals.lock().retain(|_, used| now.duration_since(*used) < TERMINAL_IDLE);
        self.products.lock().retain(|_, (_, read)| now.duration_since(*read) < PRODUCT_TTL);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_idle_for_long_are_forgotten_and_the_others_kept() {
        let catalog = Catalog::default();
        let start = Instant::now();
        catalog.terminals.lock().insert(("store-1".into(), "till-1".into()), start);
        catalog.forget_idle(start);
        assert_eq!(catalog.terminals.lock().len(), 1, "a terminal just used stays");
        let later = start + TERMINAL_IDLE + Duration::from_secs(1);
        catalog.terminals.lock().insert(("store-2".into(), "till-1".into()), later);
        catalog.forget_idle(later);
        let kept: Vec<(String, String)> = catalog.terminals.lock().keys().cloned().collect();
        assert_eq!(kept, vec![("store-2".to_owned(), "till-1".to_owned())]);
    }
}
