//! Terminals' carts on PostgreSQL: scans and lines added under their idempotency keys, quantities
//! set, carts cleared, each answered with the cart as it is now; and, for checkouts that sell a
//! cart, reading carts under lock and the guard that sells a cart once.

use std::collections::HashMap;

use redstore_inventory::domain::Product;
use redstore_platform::batch as platform_batch;
use redstore_platform::error::{Error, Result};
use redstore_platform::idempotency::Idem;
use redstore_platform::money::Money;
use redstore_platform::pg::{self, Claim};
use redstore_proto::sales::{AddCartItemResponse, Cart, CartLine, ScanResponse, scan_response};
use sqlx::{PgConnection, Row as _};

use super::{PgSales, for_sale, known};
use crate::domain;
use crate::store::{CheckoutOrder, ScanOrder, cart_refusal, empty_cart};

/// Adds units of a sku to a terminal's cart and returns the line's new quantity; refused when the
/// cart has no room for another line or the line would pass `MAX_LINE_QUANTITY`.
async fn cart_add(conn: &mut PgConnection, store_id: &str, terminal_id: &str, sku: &str, quantity: i64) -> Result<i64> {
    let (lines, in_cart): (i64, bool) = sqlx::query_as(
        "SELECT count(*), coalesce(bool_or(sku = $3), false) FROM sales.cart_items
         WHERE store_id = $1 AND terminal_id = $2",
    )
    .bind(store_id)
    .bind(terminal_id)
    .bind(sku)
    .fetch_one(&mut *conn)
    .await?;
    domain::cart_has_room(store_id, terminal_id, usize::try_from(lines).unwrap_or(usize::MAX), in_cart)?;
    let total: Option<i64> = sqlx::query_scalar(
        "INSERT INTO sales.cart_items (store_id, terminal_id, sku, quantity) VALUES ($1, $2, $3, $4)
         ON CONFLICT (store_id, terminal_id, sku)
         DO UPDATE SET quantity = sales.cart_items.quantity + excluded.quantity
             WHERE sales.cart_items.quantity + excluded.quantity <= $5
         RETURNING quantity",
    )
    .bind(store_id)
    .bind(terminal_id)
    .bind(sku)
    .bind(quantity)
    .bind(redstore_platform::limits::MAX_LINE_QUANTITY)
    .fetch_optional(&mut *conn)
    .await?;
    total.ok_or_else(|| domain::cart_line_too_large(sku, quantity))
}

/// Sets a line's quantity; 0 removes it. Returns whether the sku was in the cart.
async fn cart_set(
    conn: &mut PgConnection,
    store_id: &str,
    terminal_id: &str,
    sku: &str,
    quantity: i64,
) -> Result<bool> {
    let done = if quantity == 0 {
        sqlx::query("DELETE FROM sales.cart_items WHERE store_id = $1 AND terminal_id = $2 AND sku = $3")
            .bind(store_id)
            .bind(terminal_id)
            .bind(sku)
            .execute(&mut *conn)
            .await?
    } else {
        sqlx::query("UPDATE sales.cart_items SET quantity = $4 WHERE store_id = $1 AND terminal_id = $2 AND sku = $3")
            .bind(store_id)
            .bind(terminal_id)
            .bind(sku)
            .bind(quantity)
            .execute(&mut *conn)
            .await?
    };
    Ok(done.rows_affected() > 0)
}

async fn cart_clear(conn: &mut PgConnection, store_id: &str, terminal_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM sales.cart_items WHERE store_id = $1 AND terminal_id = $2")
        .bind(store_id)
        .bind(terminal_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The cart's (sku, quantity) lines in the order they were first added.
pub(super) async fn cart_items(
    conn: &mut PgConnection,
    store_id: &str,
    terminal_id: &str,
) -> Result<Vec<(String, i64)>> {
    let rows =
        sqlx::query("SELECT sku, quantity FROM sales.cart_items WHERE store_id = $1 AND terminal_id = $2 ORDER BY id")
            .bind(store_id)
            .bind(terminal_id)
            .fetch_all(&mut *conn)
            .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

impl PgSales {
    /// A cart line priced from the catalog, with the stock on hand in the store.
    async fn cart_line(&self, store_id: &str, product: &Product, quantity: i64) -> Result<CartLine> {
        let stock = self.inventory.get_stock(store_id, &product.sku).await?;
        let total = domain::cart_line_total(product.price, &product.sku, quantity)?;
        Ok(CartLine {
            sku: product.sku.clone(),
            name: product.name.clone(),
            unit_price: Some(product.price.to_proto()),
            quantity,
            line_total: Some(total.to_proto()),
            stock_available: stock.quantity,
        })
    }

    /// The terminal's cart as the caller's transaction sees it.
    async fn load_cart(&self, conn: &mut PgConnection, store_id: &str, terminal_id: &str) -> Result<Cart> {
        let items = cart_items(conn, store_id, terminal_id).await?;
        let mut lines = Vec::with_capacity(items.len());
        for (sku, quantity) in items {
            let product = known(&sku, self.inventory.get_product(&sku).await)?;
            lines.push(self.cart_line(store_id, &product, quantity).await?);
        }
        let amounts: Option<Vec<Money>> =
            lines.iter().map(|l| Money::from_proto("line_total", l.line_total.as_ref()).ok()).collect();
        let total = amounts
            .and_then(|a| a.first().copied().and_then(|first| Money::sum(first.currency, a)))
            .map(Money::to_proto);
        Ok(Cart { store_id: store_id.to_owned(), terminal_id: terminal_id.to_owned(), lines, total })
    }

    /// Adds a sellable product to the cart in the caller's transaction; returns its line.
    async fn add_to_cart(
        &self,
        conn: &mut PgConnection,
        store_id: &str,
        terminal_id: &str,
        product: &Product,
        quantity: i64,
    ) -> Result<CartLine> {
        let total = cart_add(conn, store_id, terminal_id, &product.sku, quantity).await?;
        self.cart_line(store_id, product, total).await
    }

    pub(super) async fn scan_into_cart(&self, order: ScanOrder) -> Result<ScanResponse> {
        let (store_id, terminal_id) = (order.store_id.as_str(), order.terminal_id.as_str());
        let scope = format!("sales.scan:{store_id}:{terminal_id}");
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        // The scan's own answer (its line) is what is kept for a retry; the cart is answered as
        // it is now, so what a scan id keeps does not grow with the cart.
        if let Claim::Replay(stored) = pg::claim(&mut tx, &scope, &order.scan_id, &order.fingerprint).await? {
            let mut answer: ScanResponse = pg::replay(&stored)?;
            answer.cart = Some(self.load_cart(&mut tx, store_id, terminal_id).await?);
            tx.commit().await?;
            return Ok(answer);
        }
        self.require_terminal(store_id, terminal_id).await?;
        let product = match self.inventory.product_by_barcode(&order.barcode).await {
            Ok(p) => p,
            Err(e) if e.code() == tonic::Code::NotFound => {
                return Err(Error::not_found(format!("code: no product has barcode {}", order.barcode)));
            }
            Err(e) => return Err(e),
        };
        let product = for_sale(product)?;
        let line = self.add_to_cart(&mut tx, store_id, terminal_id, &product, order.quantity).await?;
        let mut response = ScanResponse {
            scan_id: order.scan_id.clone(),
            result: Some(scan_response::Result::Line(line)),
            cart: None,
        };
        pg::complete(&mut tx, &scope, &order.scan_id, &response).await?;
        response.cart = Some(self.load_cart(&mut tx, store_id, terminal_id).await?);
        tx.commit().await?;
        Ok(response)
    }

    pub(super) async fn cart_of(&self, store_id: &str, terminal_id: &str) -> Result<Cart> {
        self.require_terminal(store_id, terminal_id).await?;
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        let cart = self.load_cart(&mut tx, store_id, terminal_id).await?;
        tx.commit().await?;
        Ok(cart)
    }

    pub(super) async fn add_item(
        &self,
        idem: Idem,
        store_id: &str,
        terminal_id: &str,
        sku: &str,
        quantity: i64,
    ) -> Result<AddCartItemResponse> {
        let scope = format!("sales.cart:{store_id}:{terminal_id}");
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        // As for a scan: the line is kept for a retry, the cart is answered as it is now.
        if let Claim::Replay(stored) = pg::claim(&mut tx, &scope, &idem.key, &idem.fingerprint).await? {
            let mut answer: AddCartItemResponse = pg::replay(&stored)?;
            answer.cart = Some(self.load_cart(&mut tx, store_id, terminal_id).await?);
            tx.commit().await?;
            return Ok(answer);
        }
        self.require_terminal(store_id, terminal_id).await?;
        let product = for_sale(known(sku, self.inventory.get_product(sku).await)?)?;
        let line = self.add_to_cart(&mut tx, store_id, terminal_id, &product, quantity).await?;
        let mut response = AddCartItemResponse { line: Some(line), cart: None };
        pg::complete(&mut tx, &scope, &idem.key, &response).await?;
        response.cart = Some(self.load_cart(&mut tx, store_id, terminal_id).await?);
        tx.commit().await?;
        Ok(response)
    }

    pub(super) async fn set_item_quantity(
        &self,
        store_id: &str,
        terminal_id: &str,
        sku: &str,
        quantity: i64,
    ) -> Result<Cart> {
        self.require_terminal(store_id, terminal_id).await?;
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        if !cart_set(&mut tx, store_id, terminal_id, sku, quantity).await? && quantity > 0 {
            return Err(Error::not_found(format!("sku {sku:?} is not in the cart of terminal {terminal_id:?}")));
        }
        let cart = self.load_cart(&mut tx, store_id, terminal_id).await?;
        tx.commit().await?;
        Ok(cart)
    }

    pub(super) async fn empty_cart_of(&self, store_id: &str, terminal_id: &str) -> Result<Cart> {
        self.require_terminal(store_id, terminal_id).await?;
        let mut tx = pg::store_tx(&self.pool, store_id).await?;
        cart_clear(&mut tx, store_id, terminal_id).await?;
        let cart = self.load_cart(&mut tx, store_id, terminal_id).await?;
        tx.commit().await?;
        Ok(cart)
    }
}

/// The carts of the checkouts without lines, by store and terminal, in the order their lines were
/// added; `lock` row-locks them until the caller's transaction ends (so that a cart is sold once).
/// Each store's are read under its own scope: the transaction ends up scoped to the last.
pub(super) async fn read_carts(conn: &mut PgConnection, orders: &[&CheckoutOrder], lock: bool) -> Result<Carts> {
    let mut carts = Carts::new();
    let of_carts = platform_batch::by_store(orders.iter().map(|o| o.store_id.as_str()));
    for (store_id, members) in of_carts {
        let terminals: Vec<&str> =
            members.iter().map(|&i| orders[i]).filter(|o| o.lines.is_empty()).map(|o| o.terminal_id.as_str()).collect();
        if terminals.is_empty() {
            continue;
        }
        pg::scope_to_store(&mut *conn, store_id).await?;
        for (terminal, lines) in cart_lines(conn, store_id, &terminals, lock).await? {
            carts.insert((store_id.to_owned(), terminal), lines);
        }
    }
    Ok(carts)
}

/// Carts' lines by (store, terminal).
pub(super) type Carts = HashMap<(String, String), Vec<(String, i64)>>;

/// The terminals' carts, by terminal, in the order their lines were added; `lock` row-locks them,
/// in line id order as every cart lock does, so that cart locks never deadlock.
async fn cart_lines(
    conn: &mut PgConnection,
    store_id: &str,
    terminals: &[&str],
    lock: bool,
) -> Result<HashMap<String, Vec<(String, i64)>>> {
    let mut carts: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    let sql = if lock {
        "SELECT terminal_id, sku, quantity FROM sales.cart_items
         WHERE store_id = $1 AND terminal_id = ANY ($2) ORDER BY id FOR UPDATE"
    } else {
        "SELECT terminal_id, sku, quantity FROM sales.cart_items
         WHERE store_id = $1 AND terminal_id = ANY ($2) ORDER BY id"
    };
    for row in &sqlx::query(sql).bind(store_id).bind(terminals).fetch_all(&mut *conn).await? {
        carts.entry(row.try_get(0)?).or_default().push((row.try_get(1)?, row.try_get(2)?));
    }
    Ok(carts)
}

/// A checkout that sells its terminal's cart, as drafted.
#[derive(Clone, Copy)]
pub(super) struct CartSale<'a> {
    pub terminal_id: &'a str,
    /// The checkout's idempotency key.
    pub key: &'a str,
    /// The cart's lines when the checkout was drafted.
    pub lines: &'a [(String, i64)],
}

/// The saga's guard that a cart is sold once, run in the transaction that records checkouts as
/// pending (the cart is cleared only when a sale completes, after inventory answered). Row-locks
/// the carts ([`cart_lines`]), then refuses a checkout whose cart another request is checking out
/// (a pending sale of that cart under another key: its transaction committed before this one got
/// the lock) or whose cart changed since it was drafted (sold meanwhile: empty). A retry of a pending checkout's own key passes, for the
/// claim to resume it. One refusal (or none) per cart sale, in order.
pub(super) async fn guard_carts(
    conn: &mut PgConnection,
    store_id: &str,
    sales: &[CartSale<'_>],
) -> Result<Vec<Option<Error>>> {
    let terminals: Vec<&str> = sales.iter().map(|c| c.terminal_id).collect();
    let carts = cart_lines(conn, store_id, &terminals, true).await?;
    let mut checking_out: HashMap<String, Vec<String>> = HashMap::new();
    let rows = sqlx::query(
        "SELECT terminal_id, idempotency_key FROM sales.sales
         WHERE store_id = $1 AND status = 'pending' AND from_cart AND terminal_id = ANY ($2)",
    )
    .bind(store_id)
    .bind(&terminals)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        checking_out.entry(row.try_get(0)?).or_default().push(row.try_get(1)?);
    }
    Ok(sales
        .iter()
        .map(|sale| {
            let others = checking_out.get(sale.terminal_id).is_some_and(|keys| keys.iter().any(|k| k != sale.key));
            let now = carts.get(sale.terminal_id).map_or(&[][..], Vec::as_slice);
            if others {
                Some(cart_in_checkout(store_id, sale.terminal_id))
            } else if now.is_empty() {
                Some(empty_cart(store_id, sale.terminal_id))
            } else if now != sale.lines {
                Some(cart_changed(store_id, sale.terminal_id))
            } else {
                None
            }
        })
        .collect())
}

fn cart_in_checkout(store_id: &str, terminal_id: &str) -> Error {
    cart_refusal(
        store_id,
        terminal_id,
        "is being checked out by another request; when that finishes the cart is sold (empty) or \
         unchanged: look at the cart, then check out again",
    )
}

fn cart_changed(store_id: &str, terminal_id: &str) -> Error {
    cart_refusal(
        store_id,
        terminal_id,
        "changed while it was being checked out; look at the cart, then check out again",
    )
}
