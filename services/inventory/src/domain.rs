//! Inventory domain types, parsed from requests so that the rest of the code can trust them.

use std::collections::BTreeMap;

use redstore_platform::barcode::Barcode;
use redstore_platform::error::{Error, Result, identifier};
use redstore_platform::money::Money;
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

/// Parses a list of barcodes, naming `field[i]` on error, and rejects duplicates within it.
pub fn parse_barcodes(field: &str, codes: &[String]) -> Result<Vec<Barcode>> {
    let mut out: Vec<Barcode> = Vec::with_capacity(codes.len());
    for (i, code) in codes.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let b = Barcode::parse(&f, code)?;
        if out.iter().any(|o| o.gtin13() == b.gtin13()) {
            return Err(Error::invalid(f, format!("{code:?} is listed twice")));
        }
        out.push(b);
    }
    Ok(out)
}

/// Validates a product name: 1–200 characters.
pub fn product_name(field: &str, name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if name.chars().count() > 200 {
        return Err(Error::invalid(field, "is longer than 200 characters"));
    }
    Ok(name.to_owned())
}

/// Validates a price: a currency and a non-negative amount.
pub fn price(field: &str, value: Option<&redstore_proto::common::Money>) -> Result<Money> {
    let price = Money::from_proto(field, value)?;
    if price.minor < 0 {
        return Err(Error::invalid(
            format!("{field}.units_minor"),
            format!("must not be negative, got {}", price.minor),
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

/// Parses sale lines (sku, positive quantity) into movements that take stock, merging repeated
/// skus so the oversell check sees the whole quantity. `field` names the repeated field.
pub fn sale_movements(field: &str, lines: impl IntoIterator<Item = (String, i64)>) -> Result<Vec<StockMovement>> {
    let mut merged: BTreeMap<String, i64> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (i, (sku, quantity)) in lines.into_iter().enumerate() {
        let sku = identifier(&format!("{field}[{i}].sku"), &sku)?.to_owned();
        if quantity <= 0 {
            return Err(Error::invalid(format!("{field}[{i}].quantity"), format!("must be positive, got {quantity}")));
        }
        let entry = merged.entry(sku.clone()).or_insert_with(|| {
            order.push(sku.clone());
            0
        });
        *entry = entry
            .checked_add(quantity)
            .ok_or_else(|| Error::invalid(format!("{field}[{i}].quantity"), "is too large"))?;
    }
    if order.is_empty() {
        return Err(Error::invalid(field, "must have at least one line"));
    }
    Ok(order.into_iter().map(|sku| StockMovement { delta: -merged[&sku], sku }).collect())
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
    for (i, (sku, price)) in lines.into_iter().enumerate() {
        let f = format!("{field}[{i}].unit_price");
        let Some(price) = price else {
            return Err(Error::invalid(f, "is missing; send a unit price on every line or on none"));
        };
        let price = Money::from_proto(&f, Some(price))?;
        match charged.iter().find(|c| c.sku == sku) {
            Some(earlier) if earlier.price != price => {
                return Err(Error::invalid(
                    f,
                    format!("is {price}, but an earlier line of sku {sku:?} says {}", earlier.price),
                ));
            }
            Some(_) => {}
            None => charged.push(ChargedPrice { sku: sku.to_owned(), price }),
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
    fn no_lines_is_an_error() {
        assert_eq!(sale_movements("lines", []).unwrap_err().field(), Some("lines"));
    }

    #[test]
    fn duplicate_barcodes_are_rejected() {
        let codes = vec!["4006381333931".to_owned(), "4006381333931".to_owned()];
        assert_eq!(parse_barcodes("barcodes", &codes).unwrap_err().field(), Some("barcodes[1]"));
    }
}
