//! Inventory domain types, parsed from requests so that the rest of the code can trust them.

use std::collections::{HashMap, HashSet};

use redstore_platform::barcode::Barcode;
use redstore_platform::error::{Error, Result, identifier};
use redstore_platform::limits;
use redstore_platform::money::Money;
use redstore_platform::text::{quote, text};
use redstore_proto::inventory as pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OversellPolicy {
    Strict,
    AllowNegative,
}

impl OversellPolicy {
    pub fn from_proto(field: &str, value: i32) -> Result<Self> {
        match pb::OversellPolicy::try_from(value) {
            Ok(pb::OversellPolicy::Strict) => Ok(Self::Strict),
            Ok(pb::OversellPolicy::AllowNegative) => Ok(Self::AllowNegative),
            _ => Err(Error::invalid(field, "must be OVERSELL_POLICY_STRICT or OVERSELL_POLICY_ALLOW_NEGATIVE")),
        }
    }

    pub fn as_db(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::AllowNegative => "allow_negative",
        }
    }

    pub fn from_db(value: &str) -> Self {
        if value == "allow_negative" { Self::AllowNegative } else { Self::Strict }
    }

    pub fn to_proto(self) -> pb::OversellPolicy {
        match self {
            Self::Strict => pb::OversellPolicy::Strict,
            Self::AllowNegative => pb::OversellPolicy::AllowNegative,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price: Money,
    pub barcodes: Vec<String>,
    pub active: bool,
}

impl Product {
    pub fn to_proto(&self) -> pb::Product {
        pb::Product {
            sku: self.sku.clone(),
            name: self.name.clone(),
            price: Some(self.price.to_proto()),
            barcodes: self.barcodes.clone(),
            active: self.active,
        }
    }
}

/// A store: its id, name and oversell policy.
#[derive(Clone, Debug)]
pub struct StoreRow {
    pub store_id: String,
    pub name: String,
    pub policy: OversellPolicy,
}

impl StoreRow {
    pub fn to_proto(&self) -> pb::Store {
        pb::Store {
            store_id: self.store_id.clone(),
            name: self.name.clone(),
            oversell_policy: self.policy.to_proto() as i32,
        }
    }
}

/// Parses a list of barcodes (at most [`limits::MAX_BARCODES`]), naming `field[i]` on error, and
/// rejects duplicates within it.
pub fn parse_barcodes(field: &str, codes: &[String]) -> Result<Vec<Barcode>> {
    limits::at_most(field, codes, limits::MAX_BARCODES)?;
    let mut out: Vec<Barcode> = Vec::with_capacity(codes.len());
    let mut seen = HashSet::with_capacity(codes.len());
    for (i, code) in codes.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let b = Barcode::parse(&f, code)?;
        if !seen.insert(b.gtin13().to_owned()) {
            return Err(Error::invalid(f, format!("{} is listed twice", quote(code))));
        }
        out.push(b);
    }
    Ok(out)
}

/// Validates the name of a store or a product: plain text of 1 to [`limits::MAX_NAME_CHARS`]
/// characters.
pub fn product_name(field: &str, name: &str) -> Result<String> {
    text(field, name, limits::MAX_NAME_CHARS)
}

/// Validates a price: a currency and an amount in `0..=MAX_UNIT_PRICE_MINOR`.
pub fn price(field: &str, value: Option<&redstore_proto::common::Money>) -> Result<Money> {
    let price = Money::from_proto(field, value)?;
    if !(0..=limits::MAX_UNIT_PRICE_MINOR).contains(&price.minor) {
        return Err(Error::invalid(
            format!("{field}.units_minor"),
            format!("is {}; a unit price is 0 to {} minor units", price.minor, limits::MAX_UNIT_PRICE_MINOR),
        ));
    }
    Ok(price)
}

/// A change of stock for one sku: positive adds, negative takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockMovement {
    pub sku: String,
    pub delta: i64,
}

/// Parses sale lines (sku, quantity) into movements that take stock, merging repeated skus so the
/// oversell check sees the whole quantity: at most [`limits::MAX_SALE_LINES`] lines, each
/// quantity, and each sku's merged quantity, in `1..=MAX_LINE_QUANTITY`. `field` names the
/// repeated field.
pub fn sale_movements<I>(field: &str, lines: I) -> Result<Vec<StockMovement>>
where
    I: IntoIterator<Item = (String, i64)>,
    I::IntoIter: ExactSizeIterator,
{
    let lines = lines.into_iter();
    if lines.len() > limits::MAX_SALE_LINES {
        return Err(Error::invalid(
            field,
            format!("has {} lines; at most {} are allowed", lines.len(), limits::MAX_SALE_LINES),
        ));
    }
    let mut index: HashMap<String, usize> = HashMap::with_capacity(lines.len());
    let mut merged: Vec<StockMovement> = Vec::with_capacity(lines.len());
    for (i, (sku, quantity)) in lines.enumerate() {
        let sku = identifier(&format!("{field}[{i}].sku"), &sku)?.to_owned();
        let f = format!("{field}[{i}].quantity");
        let quantity = limits::line_quantity(&f, quantity)?;
        match index.get(&sku) {
            Some(&at) => {
                let total = quantity - merged[at].delta;
                if total > limits::MAX_LINE_QUANTITY {
                    return Err(Error::invalid(
                        f,
                        format!(
                            "makes {total} of sku {sku:?} with the earlier lines; at most {} per sku",
                            limits::MAX_LINE_QUANTITY
                        ),
                    ));
                }
                merged[at].delta = -total;
            }
            None => {
                index.insert(sku.clone(), merged.len());
                merged.push(StockMovement { sku, delta: -quantity });
            }
        }
    }
    if merged.is_empty() {
        return Err(Error::invalid(field, "must have at least one line"));
    }
    Ok(merged)
}

/// A sku's stock level after `movement`, or why it is refused: a strict store never takes a sku
/// below zero, and no level leaves `±MAX_STOCK` (`field` names what asked for the change).
pub fn decide_movement(
    policy: OversellPolicy,
    store_id: &str,
    field: &str,
    current: i64,
    movement: &StockMovement,
) -> Result<i64> {
    let delta = movement.delta;
    let after = current
        .checked_add(delta)
        .filter(|after| (-limits::MAX_STOCK..=limits::MAX_STOCK).contains(after))
        .ok_or_else(|| {
            Error::invalid(
                field,
                format!(
                    "would take the stock of sku {:?} from {current} by {delta}, beyond the range of \u{b1}{}",
                    movement.sku,
                    limits::MAX_STOCK
                ),
            )
        })?;
    if policy == OversellPolicy::Strict && delta < 0 && after < 0 {
        return Err(insufficient(store_id, &movement.sku, -delta, current));
    }
    Ok(after)
}

/// A strict store refusing to go below zero.
pub fn insufficient(store_id: &str, sku: &str, requested: i64, available: i64) -> Error {
    Error::precondition(
        "STOCK",
        format!("sku:{sku}"),
        format!(
            "insufficient stock of sku {sku:?} in store {store_id:?}: requested {requested}, \
             available {available} (the store does not sell below zero)"
        ),
    )
}

/// The violation type of a sale refused because the catalog changed since it was priced: a sku's
/// price is now another, or the product is no longer for sale. The seller prices it again.
pub const REPRICE: &str = "PRICE";

/// The unit price a sale charged for a sku. A seller that prices sales from a copy of the catalog
/// sends it with the sale, and inventory takes the stock only while it is still the catalog's
/// price, in the same transaction: no sale goes through at a price that no longer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargedPrice {
    pub sku: String,
    pub price: Money,
}

/// Parses the unit prices of sale lines `(sku, unit price)`: on every line or on none (`None`: not
/// sent), and one price per sku. `field` names the repeated field.
pub fn charged_prices<'a>(
    field: &str,
    lines: impl IntoIterator<Item = (&'a str, Option<&'a redstore_proto::common::Money>)>,
) -> Result<Vec<ChargedPrice>> {
    let lines: Vec<_> = lines.into_iter().collect();
    if lines.iter().all(|(_, price)| price.is_none()) {
        return Ok(Vec::new());
    }
    let mut charged: Vec<ChargedPrice> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(lines.len());
    for (i, (sku, price)) in lines.into_iter().enumerate() {
        let f = format!("{field}[{i}].unit_price");
        let Some(price) = price else {
            return Err(Error::invalid(f, "is missing; send a unit price on every line or on none"));
        };
        let price = Money::from_proto(&f, Some(price))?;
        match index.get(sku) {
            Some(&at) if charged[at].price != price => {
                return Err(Error::invalid(
                    f,
                    format!("is {price}, but an earlier line of sku {sku:?} says {}", charged[at].price),
                ));
            }
            Some(_) => {}
            None => {
                index.insert(sku, charged.len());
                charged.push(ChargedPrice { sku: sku.to_owned(), price });
            }
        }
    }
    Ok(charged)
}

/// Holds a sale to the catalog: refused ([`REPRICE`]) when a sku it charged for is no longer for
/// sale or now costs another price. `product` is a sku's (price, active) in the catalog.
pub fn check_charged(charged: &[ChargedPrice], mut product: impl FnMut(&str) -> Option<(Money, bool)>) -> Result<()> {
    for c in charged {
        let Some((price, active)) = product(&c.sku) else { continue };
        let subject = format!("sku:{}", c.sku);
        if !active {
            return Err(Error::precondition(
                REPRICE,
                subject,
                format!("sku {:?} is no longer for sale (inactive); price the sale again", c.sku),
            ));
        }
        if price != c.price {
            return Err(Error::precondition(
                REPRICE,
                subject,
                format!("sku {:?} now costs {price}, not the {} charged; price the sale again", c.sku, c.price),
            ));
        }
    }
    Ok(())
}

/// A product of an import batch, parsed: the product and its barcodes.
#[derive(Clone, Debug)]
pub struct ImportProduct {
    pub product: Product,
    pub barcodes: Vec<Barcode>,
}

/// At least one and at most [`limits::MAX_IMPORT_RECORDS`] records in an import batch.
fn import_batch_size<T>(field: &str, records: &[T]) -> Result<()> {
    if records.is_empty() {
        return Err(Error::invalid(field, "is required: a batch has at least one record"));
    }
    limits::at_most(field, records, limits::MAX_IMPORT_RECORDS)
}

/// One product of an import batch, its fields named from the record (`sku`, `price.units_minor`,
/// `barcodes[1]`).
pub fn import_product(record: &pb::ImportedProduct) -> Result<ImportProduct> {
    let sku = identifier("sku", &record.sku)?.to_owned();
    let name = product_name("name", &record.name)?;
    let price = price("price", record.price.as_ref())?;
    let barcodes = parse_barcodes("barcodes", &record.barcodes)?;
    let product = Product {
        sku,
        name,
        price,
        barcodes: barcodes.iter().map(|b| b.gtin13().to_owned()).collect(),
        active: record.active,
    };
    Ok(ImportProduct { product, barcodes })
}

/// Parses an import batch of products (`field` names the repeated field): 1 to
/// [`limits::MAX_IMPORT_RECORDS`], each valid, a sku at most once and a barcode on at most one
/// product. The first bad record is named with its index: `products[17].price.units_minor`.
pub fn import_products(field: &str, records: &[pb::ImportedProduct]) -> Result<Vec<ImportProduct>> {
    import_batch_size(field, records)?;
    let mut skus: HashMap<&str, usize> = HashMap::with_capacity(records.len());
    let mut barcodes: HashMap<String, usize> = HashMap::with_capacity(records.len());
    let mut out = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let parsed = import_product(record).map_err(|e| e.scope(&at))?;
        if let Some(first) = skus.insert(record.sku.trim(), i) {
            return Err(Error::invalid(
                format!("{at}.sku"),
                format!("sku {:?} is also {field}[{first}]; a batch lists a sku once", parsed.product.sku),
            ));
        }
        for (j, b) in parsed.barcodes.iter().enumerate() {
            if let Some(first) = barcodes.insert(b.gtin13().to_owned(), i) {
                return Err(Error::invalid(
                    format!("{at}.barcodes[{j}]"),
                    format!("barcode {b} is also on {field}[{first}]; a barcode belongs to one product"),
                ));
            }
        }
        out.push(parsed);
    }
    Ok(out)
}

/// A count of a sku's stock in a store, as an import sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockCount {
    /// The record's index in its batch (errors found by the store name it).
    pub index: usize,
    pub store_id: String,
    pub sku: String,
    pub quantity: i64,
}

/// One count of a stock import batch, its fields named from the record.
pub fn stock_count(index: usize, record: &pb::StockCount) -> Result<StockCount> {
    let (store_id, sku) = check_stock_count(&record.store_id, &record.sku, record.quantity)?;
    Ok(StockCount { index, store_id: store_id.to_owned(), sku: sku.to_owned(), quantity: record.quantity })
}

/// [`stock_count`]'s checks of a count's fields, copying nothing: the store id and sku as they
/// are kept (trimmed).
pub fn check_stock_count<'a>(store_id: &'a str, sku: &'a str, quantity: i64) -> Result<(&'a str, &'a str)> {
    let store_id = identifier("store_id", store_id)?;
    let sku = identifier("sku", sku)?;
    if !(0..=limits::MAX_STOCK).contains(&quantity) {
        return Err(Error::invalid("quantity", format!("is {quantity}; a count is 0 to {}", limits::MAX_STOCK)));
    }
    Ok((store_id, sku))
}

/// Parses an import batch of counts (`field` names the repeated field): 1 to
/// [`limits::MAX_IMPORT_RECORDS`], each valid, a (store, sku) at most once. Returned grouped by
/// store, stores in order (the order their sequences are locked in, so that concurrent batches
/// cannot deadlock), counts in the batch's order.
pub fn import_counts(field: &str, records: &[pb::StockCount]) -> Result<Vec<(String, Vec<StockCount>)>> {
    import_batch_size(field, records)?;
    let mut seen: HashMap<(&str, &str), usize> = HashMap::with_capacity(records.len());
    let mut stores: std::collections::BTreeMap<String, Vec<StockCount>> = std::collections::BTreeMap::new();
    for (i, record) in records.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let count = stock_count(i, record).map_err(|e| e.scope(&at))?;
        if let Some(first) = seen.insert((record.store_id.trim(), record.sku.trim()), i) {
            return Err(Error::invalid(
                format!("{at}.sku"),
                format!(
                    "sku {:?} of store {:?} is also counted at {field}[{first}]; a batch counts it once",
                    count.sku, count.store_id
                ),
            ));
        }
        stores.entry(count.store_id.clone()).or_default().push(count);
    }
    Ok(stores.into_iter().collect())
}

/// The level a count sets: the count itself (a count replaces the level, it is not a delta; it
/// was checked within `0..=MAX_STOCK` when it was parsed).
pub fn counted_level(count: &StockCount) -> i64 {
    count.quantity
}

/// A record of an import batch refused by the store (an unknown store or sku, a barcode of a
/// product outside the batch): INVALID_ARGUMENT naming the record's field, as a malformed record
/// is, so that a client finds the record (and the line it came from) the same way.
pub fn bad_record(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::invalid(field, reason)
}

/// A count of a store that does not exist.
pub fn unknown_store(index: usize, store_id: &str) -> Error {
    bad_record(format!("counts[{index}].store_id"), format!("store {store_id:?} does not exist"))
}

/// A count of a sku that does not exist.
pub fn unknown_sku(index: usize, sku: &str) -> Error {
    bad_record(format!("counts[{index}].sku"), format!("sku {sku:?} does not exist"))
}

/// Refuses a batch of counts (grouped by store) that counts in a store or a sku that does not
/// exist, naming the earliest record of the batch that does (both backends read which exist, in a
/// statement or two, and let this decide).
pub fn check_counted_exist(
    stores: &[(String, Vec<StockCount>)],
    store_exists: impl Fn(&str) -> bool,
    sku_exists: impl Fn(&str) -> bool,
) -> Result<()> {
    let mut first: Option<(usize, Error)> = None;
    let mut note = |index: usize, err: Error| {
        if first.as_ref().is_none_or(|(at, _)| index < *at) {
            first = Some((index, err));
        }
    };
    for (store_id, counts) in stores {
        if !store_exists(store_id) {
            let index = counts.iter().map(|c| c.index).min().unwrap_or(0);
            note(index, unknown_store(index, store_id));
        }
        if let Some(c) = counts.iter().find(|c| !sku_exists(&c.sku)) {
            note(c.index, unknown_sku(c.index, &c.sku));
        }
    }
    match first {
        Some((_, err)) => Err(err),
        None => Ok(()),
    }
}

/// The reason of the `inventory.changed` events a stock import appends.
pub const IMPORT_REASON: &str = "import";

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> redstore_proto::common::Money {
        redstore_proto::common::Money { currency_code: "EUR".into(), units_minor: minor }
    }

    #[test]
    fn unit_prices_go_on_every_line_or_none_and_agree_per_sku() {
        assert_eq!(charged_prices("lines", [("a", None), ("b", None)]).unwrap(), vec![]);
        let (p1, p2) = (eur(100), eur(250));
        let charged = charged_prices("lines", [("a", Some(&p1)), ("b", Some(&p2)), ("a", Some(&p1))]).unwrap();
        assert_eq!(charged.len(), 2);
        assert_eq!(charged[1], ChargedPrice { sku: "b".into(), price: Money::from_proto("p", Some(&p2)).unwrap() });
        let err = charged_prices("lines", [("a", Some(&p1)), ("b", None)]).unwrap_err();
        assert_eq!(err.field(), Some("lines[1].unit_price"));
        let err = charged_prices("lines", [("a", Some(&p1)), ("a", Some(&p2))]).unwrap_err();
        assert_eq!(err.field(), Some("lines[1].unit_price"));
        let bad = redstore_proto::common::Money { currency_code: "eu".into(), units_minor: 1 };
        let err = charged_prices("lines", [("a", Some(&bad))]).unwrap_err();
        assert_eq!(err.field(), Some("lines[0].unit_price.currency_code"));
    }

    #[test]
    fn a_sale_is_held_to_the_catalog_price_and_to_products_for_sale() {
        let price = |minor| Money::from_proto("p", Some(&eur(minor))).unwrap();
        let charged = vec![ChargedPrice { sku: "a".into(), price: price(100) }];
        assert!(check_charged(&charged, |_| Some((price(100), true))).is_ok());
        let changed = check_charged(&charged, |_| Some((price(120), true))).unwrap_err();
        assert!(matches!(changed, Error::FailedPrecondition { kind: REPRICE, .. }), "{changed:?}");
        assert!(changed.to_string().contains("now costs 1.20 EUR, not the 1.00 EUR charged"), "{changed}");
        let gone = check_charged(&charged, |_| Some((price(100), false))).unwrap_err();
        assert!(gone.to_string().contains("no longer for sale"), "{gone}");
        // Unknown skus are another refusal (NOT_FOUND), decided by the caller.
        assert!(check_charged(&charged, |_| None).is_ok());
    }

    #[test]
    fn repeated_skus_merge_into_one_movement() {
        let m = sale_movements("lines", [("a".into(), 2), ("b".into(), 1), ("a".into(), 3)]).unwrap();
        assert_eq!(m, vec![StockMovement { sku: "a".into(), delta: -5 }, StockMovement { sku: "b".into(), delta: -1 }]);
    }

    #[test]
    fn zero_and_negative_quantities_name_the_line() {
        let err = sale_movements("lines", [("a".into(), 1), ("b".into(), 0)]).unwrap_err();
        assert_eq!(err.field(), Some("lines[1].quantity"));
        let err = sale_movements("lines", [("a".into(), -2)]).unwrap_err();
        assert_eq!(err.field(), Some("lines[0].quantity"));
    }

    #[test]
    fn lines_are_capped_in_count_and_quantity_also_once_merged() {
        let many = (0..limits::MAX_SALE_LINES + 1).map(|i| (format!("s{i}"), 1));
        assert_eq!(sale_movements("lines", many).unwrap_err().field(), Some("lines"));
        let over = sale_movements("lines", [("a".into(), limits::MAX_LINE_QUANTITY + 1)]).unwrap_err();
        assert_eq!(over.field(), Some("lines[0].quantity"));
        let half = limits::MAX_LINE_QUANTITY / 2 + 1;
        let merged = sale_movements("lines", [("a".into(), half), ("b".into(), 1), ("a".into(), half)]).unwrap_err();
        assert_eq!(merged.field(), Some("lines[2].quantity"));
        assert_eq!(sale_movements("lines", [("a".into(), i64::MAX)]).unwrap_err().field(), Some("lines[0].quantity"));
    }

    #[test]
    fn stock_moves_within_its_range_and_a_strict_store_not_below_zero() {
        let take = |delta| StockMovement { sku: "a".into(), delta };
        let strict = OversellPolicy::Strict;
        assert_eq!(decide_movement(strict, "s", "lines", 5, &take(-5)).unwrap(), 0);
        let short = decide_movement(strict, "s", "lines", 5, &take(-6)).unwrap_err();
        assert!(matches!(short, Error::FailedPrecondition { kind: "STOCK", .. }), "{short:?}");
        let negative = OversellPolicy::AllowNegative;
        assert_eq!(decide_movement(negative, "s", "lines", 5, &take(-6)).unwrap(), -1);
        let max = limits::MAX_STOCK;
        assert_eq!(decide_movement(negative, "s", "quantity_delta", max - 1, &take(1)).unwrap(), max);
        for (current, delta) in [(max, 1), (-max, -1), (i64::MAX, 1), (0, i64::MIN)] {
            let err = decide_movement(negative, "s", "quantity_delta", current, &take(delta)).unwrap_err();
            assert_eq!(err.field(), Some("quantity_delta"), "{current} {delta}");
        }
    }

    #[test]
    fn no_lines_is_an_error() {
        assert_eq!(sale_movements("lines", []).unwrap_err().field(), Some("lines"));
    }

    #[test]
    fn duplicate_barcodes_are_rejected() {
        let codes = vec!["4006381333931".to_owned(), "4006381333931".to_owned()];
        assert_eq!(parse_barcodes("barcodes", &codes).unwrap_err().field(), Some("barcodes[1]"));
    }
    fn record(sku: &str, barcodes: &[&str]) -> pb::ImportedProduct {
        pb::ImportedProduct {
            sku: sku.into(),
            name: format!("Product {sku}"),
            price: Some(eur(100)),
            barcodes: barcodes.iter().map(|b| (*b).to_owned()).collect(),
            active: true,
        }
    }

    #[test]
    fn an_import_batch_names_its_first_bad_record_and_field() {
        let mut batch = vec![record("a", &["4006381333931"]), record("b", &[])];
        assert_eq!(import_products("products", &batch).unwrap().len(), 2);
        batch[1].price = Some(eur(-1));
        assert_eq!(import_products("products", &batch).unwrap_err().field(), Some("products[1].price.units_minor"));
        batch[1] = record("a", &[]);
        assert_eq!(import_products("products", &batch).unwrap_err().field(), Some("products[1].sku"));
        batch[1] = record("b", &["4006381333931"]);
        assert_eq!(import_products("products", &batch).unwrap_err().field(), Some("products[1].barcodes[0]"));
        assert_eq!(import_products("products", &[]).unwrap_err().field(), Some("products"));
        let many: Vec<_> = (0..=limits::MAX_IMPORT_RECORDS).map(|i| record(&format!("s{i}"), &[])).collect();
        assert_eq!(import_products("products", &many).unwrap_err().field(), Some("products"));
    }

    #[test]
    fn counts_are_grouped_by_store_and_counted_once() {
        let count =
            |store: &str, sku: &str, quantity| pb::StockCount { store_id: store.into(), sku: sku.into(), quantity };
        let grouped =
            import_counts("counts", &[count("s2", "a", 1), count("s1", "a", 2), count("s2", "b", 3)]).unwrap();
        let stores: Vec<_> =
            grouped.iter().map(|(s, c)| (s.as_str(), c.iter().map(|c| c.index).collect::<Vec<_>>())).collect();
        assert_eq!(stores, vec![("s1", vec![1]), ("s2", vec![0, 2])]);
        let twice = import_counts("counts", &[count("s1", "a", 1), count("s1", "a", 2)]).unwrap_err();
        assert_eq!(twice.field(), Some("counts[1].sku"));
        let negative = import_counts("counts", &[count("s1", "a", -1)]).unwrap_err();
        assert_eq!(negative.field(), Some("counts[0].quantity"));
        let over = import_counts("counts", &[count("s1", "a", limits::MAX_STOCK + 1)]).unwrap_err();
        assert_eq!(over.field(), Some("counts[0].quantity"));
        assert_eq!(import_counts("counts", &[count("", "a", 1)]).unwrap_err().field(), Some("counts[0].store_id"));
    }

    proptest::proptest! {
        /// Whatever run of movements a sku sees, each decided against the level the ones before
        /// left: a strict store's level never goes below zero, no level leaves its range, a
        /// movement is refused only for one of those two reasons (and changes nothing), and the
        /// level always equals the sum of the movements accepted.
        #[test]
        fn stock_is_the_sum_of_the_movements_accepted_and_a_strict_store_never_goes_below_zero(
            strict in proptest::bool::ANY,
            deltas in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => -40i64..40,
                    1 => proptest::strategy::Just(limits::MAX_STOCK),
                    1 => proptest::strategy::Just(-limits::MAX_STOCK),
                ],
                0..120,
            ),
        ) {
            let policy = if strict { OversellPolicy::Strict } else { OversellPolicy::AllowNegative };
            let (mut level, mut accepted) = (0i64, 0i64);
            for delta in deltas {
                let movement = StockMovement { sku: "a".into(), delta };
                let wanted = level + delta;
                match decide_movement(policy, "s", "lines", level, &movement) {
                    Ok(after) => {
                        proptest::prop_assert_eq!(after, wanted);
                        level = after;
                        accepted += delta;
                    }
                    Err(Error::FailedPrecondition { kind: "STOCK", .. }) => {
                        proptest::prop_assert!(strict && delta < 0 && wanted < 0, "refused {} at {}", delta, level);
                    }
                    Err(e) => {
                        proptest::prop_assert_eq!(e.field(), Some("lines"));
                        proptest::prop_assert!(wanted.abs() > limits::MAX_STOCK, "refused {} at {}: {:?}", delta, level, e);
                    }
                }
                proptest::prop_assert!(!strict || level >= 0);
                proptest::prop_assert!(level.abs() <= limits::MAX_STOCK);
            }
            proptest::prop_assert_eq!(level, accepted);
        }

        /// Whatever record of a batch is broken, the error names that record (the first broken
        /// one), so that a client can point at the line it came from.
        #[test]
        fn a_broken_record_is_named_by_its_index(len in 1usize..40, broken in proptest::collection::btree_set(0usize..40, 1..4), how in 0u8..4) {
            let mut batch: Vec<_> = (0..len).map(|i| record(&format!("sku-{i}"), &[])).collect();
            let broken: Vec<usize> = broken.into_iter().filter(|&i| i < len).collect();
            proptest::prop_assume!(!broken.is_empty());
            for &i in &broken {
                match how {
                    0 => batch[i].sku = "bad sku".into(),
                    1 => batch[i].name = String::new(),
                    2 => batch[i].price = None,
                    _ => batch[i].barcodes = vec!["123".into()],
                }
            }
            let err = import_products("products", &batch).unwrap_err();
            let field = err.field().unwrap_or_default().to_owned();
            let prefix = format!("products[{}].", broken[0]);
            proptest::prop_assert!(field.starts_with(&prefix), "{}", field);
        }
    }
}
