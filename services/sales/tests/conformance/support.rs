//! Building store requests as the gRPC adapter does (same parsing, same fingerprints), and small
//! reads the cases share.

use std::sync::Arc;

use redstore_inventory::InventoryStore;
use redstore_platform::barcode::Barcode;
use redstore_platform::error::Error;
use redstore_platform::idempotency::{Idem, fingerprint};
use redstore_proto::common;
use redstore_proto::sales::{
    AddCartItemRequest, CheckoutLine, CheckoutRequest, RefundLine, RefundRequest, ScanRequest, Tender, TenderType,
};
use redstore_sales::domain::parse_tenders;
use redstore_sales::store::{CheckoutOrder, RefundOrder, ScanOrder};

pub fn key() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub fn eur(minor: i64) -> common::Money {
    common::Money { currency_code: "EUR".into(), units_minor: minor }
}

pub fn cash(minor: i64) -> Tender {
    Tender { r#type: TenderType::Cash as i32, amount: Some(eur(minor)) }
}

pub fn card(minor: i64) -> Tender {
    Tender { r#type: TenderType::Card as i32, amount: Some(eur(minor)) }
}

/// A checkout of `lines` (none: the terminal's cart).
pub fn checkout(key: &str, store: &str, terminal: &str, lines: &[(&str, i64)], tenders: Vec<Tender>) -> CheckoutOrder {
    let req = CheckoutRequest {
        idempotency_key: key.into(),
        store_id: store.into(),
        terminal_id: terminal.into(),
        lines: lines
            .iter()
            .map(|(s, q)| CheckoutLine { sku: (*s).into(), quantity: *q, ..Default::default() })
            .collect(),
        tenders,
    };
    CheckoutOrder {
        idem: Idem { key: key.into(), fingerprint: fingerprint(&req, |r| r.idempotency_key.clear()) },
        store_id: store.into(),
        terminal_id: terminal.into(),
        lines: req.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect(),
        overrides: Default::default(),
        tenders: parse_tenders(&req.tenders).expect("valid tenders"),
    }
}

pub fn scan(scan_id: &str, store: &str, terminal: &str, code: &str, quantity: i64) -> ScanOrder {
    let req = ScanRequest {
        store_id: store.into(),
        terminal_id: terminal.into(),
        scan_id: scan_id.into(),
        code: code.into(),
        quantity,
    };
    ScanOrder {
        scan_id: scan_id.into(),
        fingerprint: fingerprint(&req, |_| {}),
        store_id: store.into(),
        terminal_id: terminal.into(),
        barcode: Barcode::parse("code", code).expect("valid barcode"),
        quantity,
    }
}

/// The idempotency of an AddCartItem request.
pub fn add_idem(key: &str, store: &str, terminal: &str, sku: &str, quantity: i64) -> Idem {
    let req = AddCartItemRequest {
        idempotency_key: key.into(),
        store_id: store.into(),
        terminal_id: terminal.into(),
        sku: sku.into(),
        quantity,
    };
    Idem { key: key.into(), fingerprint: fingerprint(&req, |r| r.idempotency_key.clear()) }
}

/// A refund of `lines` (none: everything not refunded yet) on the sale's own terminal.
pub fn refund(key: &str, sale_id: &str, lines: &[(&str, i64)]) -> RefundOrder {
    let req = RefundRequest {
        idempotency_key: key.into(),
        sale_id: sale_id.into(),
        lines: lines.iter().map(|(s, q)| RefundLine { sku: (*s).into(), quantity: *q }).collect(),
        reason: "customer changed their mind".into(),
        terminal_id: String::new(),
    };
    RefundOrder {
        idem: Idem { key: key.into(), fingerprint: fingerprint(&req, |r| r.idempotency_key.clear()) },
        sale_id: sale_id.into(),
        lines: req.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect(),
        terminal_id: String::new(),
    }
}

pub async fn stock(inventory: &Arc<dyn InventoryStore>, store: &str, sku: &str) -> i64 {
    inventory.get_stock(store, sku).await.expect("read stock").quantity
}

/// Asserts an error's gRPC code and returns its message.
#[track_caller]
pub fn expect_code(err: &Error, code: tonic::Code) -> String {
    assert_eq!(err.code(), code, "unexpected error: {err}");
    err.to_string()
}

pub fn minor(m: &Option<common::Money>) -> i64 {
    m.as_ref().expect("an amount").units_minor
}
