//! The sales store: carts, checkout, refunds and sales, as one trait with an implementation per
//! backend. Requests arrive parsed and validated; stores enforce what needs the data.

use std::collections::BTreeMap;
use std::sync::Arc;

use redstore_inventory::domain::sale_movements;
use redstore_inventory::local as inventory;
use redstore_inventory::store::checkout_key_scope;
use redstore_platform::barcode::Barcode;
use redstore_platform::error::{Error, Result};
use redstore_platform::idempotency::{Idem, once};
use redstore_platform::money::Money;
use redstore_platform::time::{timestamp, unix_ms};
use redstore_platform::{Db, Topic, eventlog};
use redstore_proto::sales::*;

use crate::domain::{self, PriceOverride, PricedLine, Tender};
use crate::events::{sale_completed, sale_refunded};
use crate::repo;

/// A parsed scan.
#[derive(Clone, Debug)]
pub struct ScanOrder {
    pub scan_id: String,
    pub fingerprint: Vec<u8>,
    pub store_id: String,
    pub terminal_id: String,
    pub barcode: Barcode,
    pub quantity: i64,
}

/// A parsed checkout. Empty `lines` sells the terminal's cart.
#[derive(Clone, Debug)]
pub struct CheckoutOrder {
    pub idem: Idem,
    pub store_id: String,
    pub terminal_id: String,
    pub lines: Vec<(String, i64)>,
    /// Supervisors' prices of skus of `lines`, checked against the caller's role already.
    pub overrides: BTreeMap<String, PriceOverride>,
    pub tenders: Vec<Tender>,
}

/// A parsed refund. Empty `lines` refunds everything not refunded yet.
#[derive(Clone, Debug)]
pub struct RefundOrder {
    pub idem: Idem,
    pub sale_id: String,
    pub lines: Vec<(String, i64)>,
    /// Empty means the sale's terminal.
    pub terminal_id: String,
}

#[tonic::async_trait]
pub trait SalesStore: Send + Sync + 'static {
    async fn scan(&self, order: ScanOrder) -> Result<ScanResponse>;
    /// How many scans of one stream may be in [`SalesStore::scan`] at once: more than one only
    /// where the store applies them in the order they were called, whatever their timing.
    fn scans_at_once(&self) -> usize {
        1
    }
    async fn get_cart(&self, store_id: &str, terminal_id: &str) -> Result<Cart>;
    async fn add_cart_item(
        &self,
        idem: Idem,
        store_id: &str,
        terminal_id: &str,
        sku: &str,
        quantity: i64,
    ) -> Result<AddCartItemResponse>;
    /// Sets a line's quantity; 0 removes it. NOT_FOUND when a positive quantity names a sku not
    /// in the cart.
    async fn set_cart_item_quantity(&self, store_id: &str, terminal_id: &str, sku: &str, quantity: i64)
    -> Result<Cart>;
    async fn clear_cart(&self, store_id: &str, terminal_id: &str) -> Result<Cart>;
    /// One sale, its stock change and its events, or nothing.
    async fn checkout(&self, order: CheckoutOrder) -> Result<Sale>;
    /// Restocks and records a refund; never more than was sold.
    async fn refund(&self, order: RefundOrder) -> Result<RefundResponse>;
    async fn get_sale(&self, sale_id: &str) -> Result<Sale>;
    async fn list_sales(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<Sale>>;
}

/// The embedded (SQLite) implementation: sales and inventory share one database, so a checkout
/// is one transaction.
#[derive(Clone)]
pub struct SqliteSales {
    db: Db,
}

impl SqliteSales {
    pub fn new(db: Db) -> Arc<Self> {
        Arc::new(Self { db })
    }
}

/// Adds `quantity` of `sku` (`product`, looked up already) to the terminal's cart: its line, and
/// the whole cart as it is now.
fn add_to_cart(
    conn: &rusqlite::Connection,
    store_id: &str,
    terminal_id: &str,
    sku: &str,
    product: &inventory::ProductCore,
    quantity: i64,
) -> Result<(CartLine, Cart)> {
    if !product.active {
        return Err(Error::precondition(
            "PRODUCT",
            format!("sku:{sku}"),
            format!("sku {sku:?} is not for sale (inactive)"),
        ));
    }
    repo::cart_add(conn, store_id, terminal_id, sku, quantity)?;
    let cart = repo::load_cart(conn, store_id, terminal_id)?;
    let line = cart
        .lines
        .iter()
        .find(|l| l.sku == sku)
        .cloned()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("the cart has no line of {sku} just added")))?;
    Ok((line, cart))
}

/// The cart to answer an add with: the one the add read, or, when its key was seen before and
/// nothing was added, the cart as it is now.
fn cart_after(conn: &rusqlite::Connection, read: Option<Cart>, store_id: &str, terminal_id: &str) -> Result<Cart> {
    match read {
        Some(cart) => Ok(cart),
        None => repo::load_cart(conn, store_id, terminal_id),
    }
}

/// Prices the sale's lines from the catalog; names the line at fault.
fn price_lines(
    conn: &rusqlite::Connection,
    field: &str,
    lines: &[(String, i64)],
    overrides: &BTreeMap<String, PriceOverride>,
) -> Result<Vec<PricedLine>> {
    lines
        .iter()
        .enumerate()
        .map(|(i, (sku, quantity))| {
            let f = format!("{field}[{i}]");
            let product = inventory::product(conn, sku)?
                .ok_or_else(|| Error::not_found(format!("{f}.sku: sku {sku:?} does not exist")))?;
            if !product.active {
                return Err(Error::precondition(
                    "PRODUCT",
                    format!("sku:{sku}"),
                    format!("{f}.sku: sku {sku:?} is not for sale (inactive)"),
                ));
            }
            domain::price_line(&f, sku, &product.name, *quantity, product.price, overrides.get(sku))
        })
        .collect()
}

/// The error for a checkout with neither lines nor a cart.
pub fn empty_cart(store_id: &str, terminal_id: &str) -> Error {
    cart_refusal(store_id, terminal_id, "is empty and the request has no lines; scan items or send lines")
}

/// FAILED_PRECONDITION about a terminal's cart: "the cart of terminal … in store … <state>".
pub(crate) fn cart_refusal(store_id: &str, terminal_id: &str, state: &str) -> Error {
    Error::precondition(
        "CART",
        format!("terminal:{terminal_id}"),
        format!("the cart of terminal {terminal_id:?} in store {store_id:?} {state}"),
    )
}

/// Works out which lines a refund returns, against what the sale has left; updates the sale's
/// refunded quantities. Shared by every backend.
pub fn refund_lines(sale: &mut Sale, wanted: &[(String, i64)]) -> Result<Vec<PricedLine>> {
    let sale_id = sale.sale_id.clone();
    let wanted: Vec<(String, i64)> = if wanted.is_empty() {
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
        wanted.to_vec()
    };
    let mut out = Vec::with_capacity(wanted.len());
    for (i, (sku, quantity)) in wanted.iter().enumerate() {
        let line = sale.lines.iter_mut().find(|l| &l.sku == sku).ok_or_else(|| {
            Error::invalid(format!("lines[{i}].sku"), format!("{sku:?} was not sold in sale {sale_id:?}"))
        })?;
        if *quantity > line.quantity - line.quantity_refunded {
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
        out.push(domain::price_line(&format!("lines[{i}]"), sku, &line.name, *quantity, unit, None)?);
    }
    Ok(out)
}

/// A refund decided against its sale ([`RefundPlan::of`]): the lines it returns, their amount, the
/// terminal it is recorded at and the stock it puts back. Shared by every backend, which puts the
/// stock back and then records the refund ([`RefundPlan::record`]).
pub struct RefundPlan {
    pub lines: Vec<PricedLine>,
    pub amount: Money,
    pub terminal_id: String,
    pub movements: Vec<redstore_inventory::StockMovement>,
}

impl RefundPlan {
    /// Decides `order` against `sale` ([`refund_lines`], which marks the lines refunded in it).
    pub fn of(sale: &mut Sale, order: &RefundOrder) -> Result<Self> {
        let lines = refund_lines(sale, &order.lines)?;
        let currency = Money::from_proto("total", sale.total.as_ref())?.currency;
        let amount = Money::sum(currency, lines.iter().map(|l| l.line_total))
            .ok_or_else(|| Error::invalid("lines", "the refund amount is too large"))?;
        let terminal_id =
            if order.terminal_id.is_empty() { sale.terminal_id.clone() } else { order.terminal_id.clone() };
        let movements =
            lines.iter().map(|l| redstore_inventory::StockMovement { sku: l.sku.clone(), delta: l.quantity }).collect();
        Ok(Self { lines, amount, terminal_id, movements })
    }

    /// Records the refund on its sale ([`record_refund`]) and returns it, as `refund_id`, made at
    /// `created_ms`.
    pub fn record(&self, sale: &mut Sale, refund_id: String, created_ms: i64) -> Result<Refund> {
        record_refund(sale, self.amount)?;
        Ok(Refund {
            refund_id,
            sale_id: sale.sale_id.clone(),
            lines: self.lines.iter().map(PricedLine::to_proto).collect(),
            amount: Some(self.amount.to_proto()),
            created_at: Some(timestamp(created_ms)),
        })
    }
}

/// Marks a sale refunded by `amount` and sets its status from its lines.
fn record_refund(sale: &mut Sale, amount: Money) -> Result<()> {
    let refunded = Money::from_proto("refunded", sale.refunded.as_ref())
        .unwrap_or(Money::zero(amount.currency))
        .checked_add(amount)
        .ok_or_else(|| Error::invalid("lines", "the refund amount is too large"))?;
    sale.refunded = Some(refunded.to_proto());
    let all_back = sale.lines.iter().all(|l| l.quantity_refunded >= l.quantity);
    sale.status = if all_back { SaleStatus::Refunded } else { SaleStatus::PartiallyRefunded } as i32;
    Ok(())
}

#[tonic::async_trait]
impl SalesStore for SqliteSales {
    /// The writer takes writes in the order they were queued, and a scan is queued when first
    /// polled: a scanner's burst shares a commit instead of waiting one per scan.
    fn scans_at_once(&self) -> usize {
        16
    }

    async fn scan(&self, order: ScanOrder) -> Result<ScanResponse> {
        let scope = format!("sales.scan:{}:{}", order.store_id, order.terminal_id);
        self.db
            .write(move |ctx| {
                let (store_id, terminal_id) = (&order.store_id, &order.terminal_id);
                // The scan's own answer (its line) is what is kept for a retry; the cart is
                // answered as it is now, so what a scan id keeps does not grow with the cart.
                let mut cart = None;
                let mut answer = once(ctx, &scope, &order.scan_id, &order.fingerprint, |ctx| {
                    inventory::require_terminal(ctx.conn, store_id, terminal_id)?;
                    let (sku, product) = inventory::product_by_barcode(ctx.conn, &order.barcode)?
                        .ok_or_else(|| Error::not_found(format!("code: no product has barcode {}", order.barcode)))?;
                    let (line, now) = add_to_cart(ctx.conn, store_id, terminal_id, &sku, &product, order.quantity)?;
                    cart = Some(now);
                    Ok(ScanResponse {
                        scan_id: order.scan_id.clone(),
                        result: Some(scan_response::Result::Line(line)),
                        cart: None,
                    })
                })?;
                answer.cart = Some(cart_after(ctx.conn, cart, store_id, terminal_id)?);
                Ok(answer)
            })
            .await
    }

    async fn get_cart(&self, store_id: &str, terminal_id: &str) -> Result<Cart> {
        let (s, t) = (store_id.to_owned(), terminal_id.to_owned());
        self.db
            .read(move |c| {
                inventory::require_terminal(c, &s, &t)?;
                repo::load_cart(c, &s, &t)
            })
            .await
    }

    async fn add_cart_item(
        &self,
        idem: Idem,
        store_id: &str,
        terminal_id: &str,
        sku: &str,
        quantity: i64,
    ) -> Result<AddCartItemResponse> {
        let (s, t, k) = (store_id.to_owned(), terminal_id.to_owned(), sku.to_owned());
        let scope = format!("sales.cart:{s}:{t}");
        self.db
            .write(move |ctx| {
                // As for a scan: the line is kept for a retry, the cart is answered as it is now.
                let mut cart = None;
                let mut answer = once(ctx, &scope, &idem.key, &idem.fingerprint, |ctx| {
                    inventory::require_terminal(ctx.conn, &s, &t)?;
                    let product = inventory::product(ctx.conn, &k)?
                        .ok_or_else(|| Error::not_found(format!("sku {k:?} does not exist")))?;
                    let (line, now) = add_to_cart(ctx.conn, &s, &t, &k, &product, quantity)?;
                    cart = Some(now);
                    Ok(AddCartItemResponse { line: Some(line), cart: None })
                })?;
                answer.cart = Some(cart_after(ctx.conn, cart, &s, &t)?);
                Ok(answer)
            })
            .await
    }

    async fn set_cart_item_quantity(
        &self,
        store_id: &str,
        terminal_id: &str,
        sku: &str,
        quantity: i64,
    ) -> Result<Cart> {
        let (s, t, k) = (store_id.to_owned(), terminal_id.to_owned(), sku.to_owned());
        self.db
            .write(move |ctx| {
                inventory::require_terminal(ctx.conn, &s, &t)?;
                if !repo::cart_set(ctx.conn, &s, &t, &k, quantity)? && quantity > 0 {
                    return Err(Error::not_found(format!("sku {k:?} is not in the cart of terminal {t:?}")));
                }
                repo::load_cart(ctx.conn, &s, &t)
            })
            .await
    }

    async fn clear_cart(&self, store_id: &str, terminal_id: &str) -> Result<Cart> {
        let (s, t) = (store_id.to_owned(), terminal_id.to_owned());
        self.db
            .write(move |ctx| {
                inventory::require_terminal(ctx.conn, &s, &t)?;
                repo::cart_clear(ctx.conn, &s, &t)?;
                repo::load_cart(ctx.conn, &s, &t)
            })
            .await
    }

    async fn checkout(&self, order: CheckoutOrder) -> Result<Sale> {
        let scope = checkout_key_scope(&order.store_id);
        self.db
            .write(move |ctx| {
                // The key keeps the sale's id only; the sale is in the sales table (a replay reads
                // it there, as it is now), so a sale is not stored twice.
                let mut made = None;
                let kept = once(ctx, &scope, &order.idem.key, &order.idem.fingerprint, |ctx| {
                    let (store_id, terminal_id) = (order.store_id.as_str(), order.terminal_id.as_str());
                    inventory::require_terminal(ctx.conn, store_id, terminal_id)?;
                    let (field, from_cart, lines) = if order.lines.is_empty() {
                        let items = repo::cart_items(ctx.conn, store_id, terminal_id)?;
                        if items.is_empty() {
                            return Err(empty_cart(store_id, terminal_id));
                        }
                        ("cart", true, items)
                    } else {
                        ("lines", false, order.lines.clone())
                    };
                    let priced = price_lines(ctx.conn, field, &lines, &order.overrides)?;
                    let total = domain::total(field, &priced)?;
                    let change = domain::settle(total, &order.tenders)?;
                    let movements = sale_movements(field, lines.iter().cloned())?;
                    let sale_id = uuid::Uuid::now_v7().to_string();
                    // Priced in this transaction: nothing to hold the prices to.
                    let applied = inventory::apply_sale(ctx, store_id, terminal_id, &sale_id, &movements, &[])?;
                    let created = unix_ms(ctx.now);
                    let sale = Sale {
                        sale_id,
                        store_id: store_id.to_owned(),
                        terminal_id: terminal_id.to_owned(),
                        status: SaleStatus::Completed as i32,
                        lines: priced.iter().map(PricedLine::to_proto).collect(),
                        total: Some(total.to_proto()),
                        tenders: order.tenders.iter().map(|t| t.to_proto()).collect(),
                        change: Some(change.to_proto()),
                        created_at: Some(timestamp(created)),
                        negative_stock_skus: applied.negative_skus,
                        refunded: Some(Money::zero(total.currency).to_proto()),
                    };
                    repo::insert_sale(ctx.conn, &sale, created)?;
                    eventlog::append(ctx, Topic::Sales, store_id, sale_completed(&sale))?;
                    if from_cart {
                        repo::cart_clear(ctx.conn, store_id, terminal_id)?;
                    }
                    let kept = Sale { sale_id: sale.sale_id.clone(), ..Default::default() };
                    made = Some(sale);
                    Ok(CheckoutResponse { sale: Some(kept) })
                })?;
                match (made, kept.sale) {
                    (Some(sale), _) => Ok(sale),
                    (None, Some(kept)) => repo::get_sale(ctx.conn, &kept.sale_id),
                    (None, None) => Err(Error::Internal(anyhow::anyhow!("stored checkout answer has no sale"))),
                }
            })
            .await
    }

    async fn refund(&self, order: RefundOrder) -> Result<RefundResponse> {
        self.db
            .write(move |ctx| {
                once(ctx, "sales.refund", &order.idem.key, &order.idem.fingerprint, |ctx| {
                    let mut sale = repo::get_sale(ctx.conn, &order.sale_id)?;
                    let plan = RefundPlan::of(&mut sale, &order)?;
                    let refund_id = uuid::Uuid::now_v7().to_string();
                    inventory::return_refunded(ctx, &sale.store_id, &refund_id, &plan.terminal_id, &plan.movements)?;
                    let created = unix_ms(ctx.now);
                    let refund = plan.record(&mut sale, refund_id, created)?;
                    repo::update_sale(ctx.conn, &sale)?;
                    repo::insert_refund(ctx.conn, &refund, created)?;
                    eventlog::append(ctx, Topic::Sales, &sale.store_id, sale_refunded(&refund, &plan.terminal_id))?;
                    Ok(RefundResponse { refund: Some(refund), sale: Some(sale) })
                })
            })
            .await
    }

    async fn get_sale(&self, sale_id: &str) -> Result<Sale> {
        let id = sale_id.to_owned();
        self.db.read(move |c| repo::get_sale(c, &id)).await
    }

    async fn list_sales(&self, store_id: &str, after: &str, limit: u32) -> Result<Vec<Sale>> {
        let (s, a) = (store_id.to_owned(), after.to_owned());
        self.db
            .read(move |c| {
                inventory::require_store(c, &s)?;
                crate::listing::list_sales(c, &s, &a, limit)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redstore_platform::money::Currency;

    fn sale(sold: &[i64]) -> Sale {
        let unit = Money::new(Currency::parse("currency_code", "EUR").expect("EUR"), 250);
        Sale {
            sale_id: "sale-1".to_owned(),
            lines: sold
                .iter()
                .enumerate()
                .map(|(i, &quantity)| SaleLine {
                    sku: format!("sku-{i}"),
                    name: format!("Product {i}"),
                    quantity,
                    unit_price: Some(unit.to_proto()),
                    line_total: Some(Money::new(unit.currency, 250 * quantity).to_proto()),
                    ..SaleLine::default()
                })
                .collect(),
            ..Sale::default()
        }
    }

    proptest::proptest! {
        /// Any run of refunds of a sale, each line asked for by sku (an empty request: all that is
        /// left): no line is ever refunded beyond what it sold, a refund is refused exactly when it
        /// asks for more than is left (and then changes nothing), and what was refunded of each
        /// line is the sum of the refunds accepted.
        #[test]
        fn refunds_never_exceed_what_was_sold(
            sold in proptest::collection::vec(1i64..6, 1..4),
            asks in proptest::collection::vec(proptest::collection::vec((0usize..4, 1i64..4), 0..3), 0..12),
        ) {
            let mut current = sale(&sold);
            let mut refunded = vec![0i64; sold.len()];
            for ask in asks {
                let wanted: Vec<(String, i64)> = ask.iter().map(|&(i, q)| (format!("sku-{i}"), q)).collect();
                // What the request would leave refunded, line by line, if it can be granted.
                let mut after = refunded.clone();
                let mut grantable = true;
                if ask.is_empty() {
                    grantable = refunded.iter().zip(&sold).any(|(r, s)| r < s);
                    after.clone_from(&sold);
                }
                for &(i, q) in &ask {
                    match after.get_mut(i) {
                        Some(r) if *r + q <= sold[i] => *r += q,
                        _ => grantable = false,
                    }
                }
                let mut attempt = current.clone();
                match refund_lines(&mut attempt, &wanted) {
                    Ok(lines) => {
                        proptest::prop_assert!(grantable, "granted {:?} with {:?} refunded of {:?}", ask, refunded, sold);
                        let units: i64 = lines.iter().map(|l| l.quantity).sum();
                        let asked: i64 = after.iter().sum::<i64>() - refunded.iter().sum::<i64>();
                        proptest::prop_assert_eq!(units, asked);
                        current = attempt;
                        refunded = after;
                    }
                    Err(_) => proptest::prop_assert!(!grantable, "refused {:?} with {:?} refunded of {:?}", ask, refunded, sold),
                }
                for (line, (&r, &s)) in current.lines.iter().zip(refunded.iter().zip(&sold)) {
                    proptest::prop_assert_eq!(line.quantity_refunded, r);
                    proptest::prop_assert!(line.quantity_refunded <= s);
                }
            }
        }
    }
}
