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

#[cfg(test)]
mod tests {
    use super::*;

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
