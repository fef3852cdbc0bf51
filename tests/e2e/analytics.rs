//! Analytics: reports at every granularity, and a restart that resumes from the stored offset
//! without counting anything twice.

use redstore_proto::analytics::{GetSalesReportRequest, Granularity};
use tonic::Code;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_stored_offset_and_counts_nothing_twice() {
    let app = TestApp::spawn().await;
    for _ in 0..2 {
        app.sales().checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0012", 2)], vec![card(318)])).await.unwrap();
    }
    app.report_with_sales("store-1", 2).await;
    let app = app.restart().await;
    // The demo seed is not applied twice either.
    assert_eq!(app.stock("store-1", "SKU-0012").await, 35 - 4);
    app.sales().checkout(checkout(&key(), "store-1", "till-1", &[("SKU-0012", 1)], vec![card(159)])).await.unwrap();
    let report = app.report_with_sales("store-1", 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let report_later = app.report("store-1").await;
    assert_eq!(report.totals[0].sales_count, 3);
    assert_eq!(report_later.totals[0].sales_count, 3);
    assert_eq!(report_later.totals[0].units_sold, 5);
    assert_eq!(report_later.totals[0].gross.clone().unwrap().units_minor, 5 * 159);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_group_by_minute_hour_and_day_and_rank_top_products() {
    let app = TestApp::spawn().await;
    app.sales()
        .checkout(checkout(&key(), "store-2", "till-1", &[("SKU-0020", 5), ("SKU-0014", 1)], vec![cash(1000)]))
        .await
        .unwrap();
    app.sales().checkout(checkout(&key(), "store-2", "till-1", &[("SKU-0014", 2)], vec![cash(1000)])).await.unwrap();
    app.report_with_sales("store-2", 2).await;
    for g in [Granularity::Minute, Granularity::Hour, Granularity::Day] {
        let report = app
            .analytics()
            .get_sales_report(GetSalesReportRequest {
                store_id: "store-2".into(),
                from: None,
                to: None,
                granularity: g as i32,
                top_products_limit: 1,
            })
            .await
            .unwrap()
            .into_inner();
        let counted: i64 = report.buckets.iter().map(|b| b.figures.clone().unwrap().sales_count).sum();
        assert_eq!(counted, 2, "{g:?}");
        assert!(!report.buckets.is_empty() && report.buckets.len() <= 2, "{g:?}: {:?}", report.buckets);
        assert_eq!(report.top_products.len(), 1);
        assert_eq!(report.top_products[0].sku, "SKU-0020");
        assert_eq!(report.top_products[0].units_sold, 5);
        assert_eq!(report.totals[0].gross.clone().unwrap().units_minor, 5 * 150 + 3 * 99);
    }
    // Store-1 sold nothing.
    assert!(app.report("store-1").await.totals.is_empty());

    let bad = |g: Granularity| GetSalesReportRequest {
        store_id: "store-2".into(),
        from: None,
        to: None,
        granularity: g as i32,
        top_products_limit: 0,
    };
    let err = app.analytics().get_sales_report(bad(Granularity::Unspecified)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("granularity"));
    let mut inverted = bad(Granularity::Hour);
    inverted.from = Some(prost_types::Timestamp { seconds: 2_000_000_000, nanos: 0 });
    inverted.to = Some(prost_types::Timestamp { seconds: 1_000_000_000, nanos: 0 });
    let err = app.analytics().get_sales_report(inverted).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("from"));
    let mut unknown = bad(Granularity::Day);
    unknown.store_id = "nowhere".into();
    assert_eq!(app.analytics().get_sales_report(unknown).await.unwrap_err().code(), Code::NotFound);
}
