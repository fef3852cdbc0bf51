//! Refunds: whole or some lines, restocking, idempotent, never more than was sold.

use redstore_proto::sales::{RefundLine, RefundRequest, SaleStatus};
use tonic::Code;

use crate::helpers::*;

fn refund(key: &str, sale_id: &str, lines: &[(&str, i64)]) -> RefundRequest {
    RefundRequest {
        idempotency_key: key.into(),
        sale_id: sale_id.into(),
        lines: lines.iter().map(|(s, q)| RefundLine { sku: (*s).into(), quantity: *q }).collect(),
        reason: "customer changed their mind".into(),
        terminal_id: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_then_whole_refund_restocks_once_and_caps_at_what_was_sold() {
    let app = TestApp::spawn().await;
    let sale = app
        .sales()
        .checkout(checkout(
            &key(),
            "store-1",
            "till-3",
            &[("SKU-0015", 3), ("SKU-0016", 2)],
            vec![card(3 * 229 + 2 * 79)],
        ))
        .await
        .unwrap()
        .into_inner()
        .sale
        .unwrap();
    assert_eq!(app.stock("store-1", "SKU-0015").await, 37);

    let k1 = key();
    let first = app.sales().refund(refund(&k1, &sale.sale_id, &[("SKU-0015", 1)])).await.unwrap().into_inner();
    assert_eq!(first.refund.as_ref().unwrap().amount.clone().unwrap().units_minor, 229);
    assert_eq!(first.sale.as_ref().unwrap().status, SaleStatus::PartiallyRefunded as i32);
    assert_eq!(app.stock("store-1", "SKU-0015").await, 38);

    // The same refund retried changes nothing.
    let retry = app.sales().refund(refund(&k1, &sale.sale_id, &[("SKU-0015", 1)])).await.unwrap().into_inner();
    assert_eq!(retry.refund.unwrap().refund_id, first.refund.unwrap().refund_id);
    assert_eq!(app.stock("store-1", "SKU-0015").await, 38);

    // Three more cannot come back: only two are left to refund.
    let err = app.sales().refund(refund(&key(), &sale.sale_id, &[("SKU-0015", 3)])).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("3 sold, 1 already refunded"), "{}", err.message());
    assert_eq!(app.stock("store-1", "SKU-0015").await, 38);

    // A sku that was not in the sale.
    let err = app.sales().refund(refund(&key(), &sale.sale_id, &[("SKU-0001", 1)])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("lines[0].sku"), "{}", err.message());

    // Everything else.
    let rest = app.sales().refund(refund(&key(), &sale.sale_id, &[])).await.unwrap().into_inner();
    assert_eq!(rest.refund.unwrap().amount.unwrap().units_minor, 2 * 229 + 2 * 79);
    let sale_after = rest.sale.unwrap();
    assert_eq!(sale_after.status, SaleStatus::Refunded as i32);
    assert_eq!(sale_after.refunded.unwrap().units_minor, 3 * 229 + 2 * 79);
    assert_eq!(app.stock("store-1", "SKU-0015").await, 40);
    assert_eq!(app.stock("store-1", "SKU-0016").await, 80);

    let err = app.sales().refund(refund(&key(), &sale.sale_id, &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("fully refunded"), "{}", err.message());

    let err = app.sales().refund(refund(&key(), "no-such-sale", &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Analytics nets the refunds out.
    let mut report = app.report_with_sales("store-1", 1).await;
    for _ in 0..200 {
        if report.totals[0].refund_count == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        report = app.report("store-1").await;
    }
    let t = &report.totals[0];
    assert_eq!(t.refund_count, 2);
    assert_eq!(t.units_refunded, 5);
    assert_eq!(t.gross.clone().unwrap().units_minor, 3 * 229 + 2 * 79);
    assert_eq!(t.net.clone().unwrap().units_minor, 0);
}
