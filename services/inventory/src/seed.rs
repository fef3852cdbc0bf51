//! The demo chain a new data directory starts with, so one can sell at once.

use redstore_platform::Db;
use redstore_platform::barcode::{Barcode, ean13_from_payload};
use redstore_platform::error::Result;
use redstore_platform::money::{Currency, Money};
use redstore_platform::time::unix_ms;
use redstore_proto::inventory as pb;

use crate::domain::StoreRow;
use crate::domain::{OversellPolicy, Product, StockMovement};
use crate::repo;

/// (sku, name, price in cents, stock in store-1, stock in store-2)
const PRODUCTS: &[(&str, &str, i64, i64, i64)] = &[
    ("SKU-0001", "Whole milk 1 L", 119, 40, 25),
    ("SKU-0002", "Sourdough bread 800 g", 349, 12, 8),
    ("SKU-0003", "Free-range eggs x12", 429, 30, 20),
    ("SKU-0004", "Salted butter 250 g", 279, 24, 10),
    ("SKU-0005", "Cheddar 400 g", 499, 18, 12),
    ("SKU-0006", "Bananas 1 kg", 189, 50, 30),
    ("SKU-0007", "Apples Gala 1 kg", 249, 45, 30),
    ("SKU-0008", "Orange juice 1 L", 299, 20, 15),
    ("SKU-0009", "Ground coffee 250 g", 599, 16, 6),
    ("SKU-0010", "Green tea x40", 379, 14, 9),
    ("SKU-0011", "Spaghetti 500 g", 139, 60, 40),
    ("SKU-0012", "Tomato passata 690 g", 159, 35, 20),
    ("SKU-0013", "Olive oil 750 ml", 899, 10, 5),
    ("SKU-0014", "Sea salt 1 kg", 99, 25, 15),
    ("SKU-0015", "Dark chocolate 100 g", 229, 40, 25),
    ("SKU-0016", "Sparkling water 1.5 L", 79, 80, 60),
    ("SKU-0017", "Dish soap 500 ml", 199, 22, 12),
    ("SKU-0018", "Toilet paper x9", 549, 15, 10),
    ("SKU-0019", "AA batteries x4", 699, 8, 3),
    ("SKU-0020", "Reusable bag", 150, 100, 50),
];

pub const STORES: &[(&str, &str, OversellPolicy)] = &[
    ("store-1", "Red Store Central (strict stock)", OversellPolicy::Strict),
    ("store-2", "Red Store Harbour (sells below zero)", OversellPolicy::AllowNegative),
];

/// The barcode of the n-th demo product (1-based), a valid EAN-13.
pub fn demo_barcode(n: usize) -> String {
    ean13_from_payload(&format!("400000{n:06}"))
}

/// Seeds the demo chain unless the database already has stores. Returns whether it seeded.
pub async fn seed_demo(db: &Db) -> Result<bool> {
    db.write(|ctx| {
        if !repo::list_stores(ctx.conn, "", 1)?.is_empty() {
            return Ok(false);
        }
        let now = unix_ms(ctx.now);
        let eur = Currency::parse("currency", "EUR")?;
        let mut stores = Vec::new();
        for (id, name, policy) in STORES {
            let store = StoreRow { store_id: (*id).into(), name: (*name).into(), policy: *policy };
            repo::insert_store(ctx.conn, &store, now)?;
            for t in 1..=3 {
                repo::insert_terminal(
                    ctx.conn,
                    &pb::Terminal {
                        store_id: (*id).into(),
                        terminal_id: format!("till-{t}"),
                        name: format!("Till {t}"),
                    },
                )?;
            }
            stores.push(store);
        }
        for (i, (sku, name, price, _, _)) in PRODUCTS.iter().enumerate() {
            let code = demo_barcode(i + 1);
            let barcode = Barcode::parse("barcode", &code)?;
            let product = Product {
                sku: (*sku).into(),
                name: (*name).into(),
                price: Money::new(eur, *price),
                barcodes: vec![code],
                active: true,
            };
            repo::insert_product(ctx.conn, &product, &[barcode], now)?;
        }
        for (s, store) in stores.iter().enumerate() {
            let movements: Vec<StockMovement> = PRODUCTS
                .iter()
                .map(|(sku, _, _, q1, q2)| StockMovement { sku: (*sku).into(), delta: if s == 0 { *q1 } else { *q2 } })
                .collect();
            repo::apply_movements(ctx, store, "received", "demo-seed", "", "quantity_delta", &movements)?;
        }
        Ok(true)
    })
    .await
}

/// Seeds the demo chain through the store API (any backend) unless stores exist already.
/// Returns whether it seeded.
pub async fn seed_demo_via(store: &dyn crate::InventoryStore) -> Result<bool> {
    if !store.list_stores("", 1).await?.is_empty() {
        return Ok(false);
    }
    let eur = Currency::parse("currency", "EUR")?;
    let key = |what: String| crate::store::Idem { key: format!("demo-seed:{what}"), fingerprint: what.into_bytes() };
    for (id, name, policy) in STORES {
        let row = StoreRow { store_id: (*id).into(), name: (*name).into(), policy: *policy };
        store.create_store(key(format!("store:{id}")), row).await?;
        for t in 1..=3 {
            let terminal =
                pb::Terminal { store_id: (*id).into(), terminal_id: format!("till-{t}"), name: format!("Till {t}") };
            store.register_terminal(key(format!("terminal:{id}:{t}")), terminal).await?;
        }
    }
    for (i, (sku, name, price, q1, q2)) in PRODUCTS.iter().enumerate() {
        let code = demo_barcode(i + 1);
        let barcode = Barcode::parse("barcode", &code)?;
        let product = Product {
            sku: (*sku).into(),
            name: (*name).into(),
            price: Money::new(eur, *price),
            barcodes: vec![code],
            active: true,
        };
        store.create_product(key(format!("product:{sku}")), product, vec![barcode]).await?;
        for ((store_id, _, _), quantity) in STORES.iter().zip([q1, q2]) {
            let movement = StockMovement { sku: (*sku).into(), delta: *quantity };
            store.adjust_stock(key(format!("stock:{store_id}:{sku}")), store_id, movement, "received").await?;
        }
    }
    Ok(true)
}
