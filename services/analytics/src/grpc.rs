//! AnalyticsService: reports read the per-minute rollups, grouped to the asked granularity.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redstore_inventory::local as inventory;
use redstore_platform::Db;
use redstore_platform::caller::Caller;
use redstore_platform::error::{Error, Result};
use redstore_platform::time::{timestamp, timestamp_ms, unix_ms};
use redstore_proto::analytics::analytics_service_server::{AnalyticsService, AnalyticsServiceServer};
use redstore_proto::analytics::*;
use redstore_proto::common::Money;
use rusqlite::params;
use tonic::{Request, Response, Status};

/// Most buckets one report may span, so a minute report over years is refused, not computed.
const MAX_BUCKETS: i64 = 10_000;

/// Where reports come from: the rollups of one backend.
#[tonic::async_trait]
pub trait Reports: Send + Sync + 'static {
    /// Buckets of `size` ms, totals and top products for a store over `[from_ms, to_ms)`.
    async fn report(&self, store_id: &str, from_ms: i64, to_ms: i64, size: i64, top: u32) -> Result<Report>;
}

pub type Report = (Vec<SalesBucket>, Vec<SalesFigures>, Vec<ProductFigures>);

/// Reports from the embedded database.
pub struct SqliteReports(pub Db);

#[tonic::async_trait]
impl Reports for SqliteReports {
    async fn report(&self, store_id: &str, from_ms: i64, to_ms: i64, size: i64, top: u32) -> Result<Report> {
        let sid = store_id.to_owned();
        self.0.read(move |c| report(c, &sid, from_ms, to_ms, size, top)).await
    }
}

#[derive(Clone)]
pub struct AnalyticsGrpc {
    reports: Arc<dyn Reports>,
}

impl AnalyticsGrpc {
    pub fn new(reports: Arc<dyn Reports>) -> Self {
        Self { reports }
    }

    pub fn into_server(self) -> AnalyticsServiceServer<Self> {
        AnalyticsServiceServer::new(self)
    }
}

fn bucket_ms(granularity: i32) -> Result<i64> {
    match Granularity::try_from(granularity) {
        Ok(Granularity::Minute) => Ok(60_000),
        Ok(Granularity::Hour) => Ok(3_600_000),
        Ok(Granularity::Day) => Ok(86_400_000),
        _ => Err(Error::invalid("granularity", "must be GRANULARITY_MINUTE, GRANULARITY_HOUR or GRANULARITY_DAY")),
    }
}

fn money(currency: &str, minor: i64) -> Option<Money> {
    Some(Money { currency_code: currency.to_owned(), units_minor: minor })
}

fn figures(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<SalesFigures> {
    let currency: String = r.get(first)?;
    let gross: i64 = r.get(first + 3)?;
    let refunds: i64 = r.get(first + 6)?;
    Ok(SalesFigures {
        sales_count: r.get(first + 1)?,
        units_sold: r.get(first + 2)?,
        gross: money(&currency, gross),
        refund_count: r.get(first + 4)?,
        units_refunded: r.get(first + 5)?,
        refunds: money(&currency, refunds),
        net: money(&currency, gross - refunds),
    })
}

const SUMS: &str = "currency_code, SUM(sales_count), SUM(units_sold), SUM(gross_minor), SUM(refund_count), \
                    SUM(units_refunded), SUM(refunds_minor)";

pub fn report(
    conn: &rusqlite::Connection,
    store_id: &str,
    from_ms: i64,
    to_ms: i64,
    size: i64,
    top: u32,
) -> Result<Report> {
    inventory::require_store(conn, store_id)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT (minute_ms / ?4) * ?4 AS bucket, {SUMS} FROM analytics_minute
         WHERE store_id = ?1 AND minute_ms >= ?2 AND minute_ms < ?3
         GROUP BY bucket, currency_code ORDER BY bucket, currency_code"
    ))?;
    let buckets = stmt
        .query_map(params![store_id, from_ms, to_ms, size], |r| {
            Ok(SalesBucket { start: Some(timestamp(r.get(0)?)), figures: Some(figures(r, 1)?) })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SUMS} FROM analytics_minute WHERE store_id = ?1 AND minute_ms >= ?2 AND minute_ms < ?3
         GROUP BY currency_code ORDER BY currency_code"
    ))?;
    let totals =
        stmt.query_map(params![store_id, from_ms, to_ms], |r| figures(r, 0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT sku, MAX(name), SUM(units_sold) AS sold, SUM(units_refunded), SUM(net_minor), currency_code
         FROM analytics_product_minute WHERE store_id = ?1 AND minute_ms >= ?2 AND minute_ms < ?3
         GROUP BY sku, currency_code ORDER BY sold DESC, sku LIMIT ?4",
    )?;
    let products = stmt
        .query_map(params![store_id, from_ms, to_ms, top], |r| {
            let currency: String = r.get(5)?;
            Ok(ProductFigures {
                sku: r.get(0)?,
                name: r.get(1)?,
                units_sold: r.get(2)?,
                units_refunded: r.get(3)?,
                net: money(&currency, r.get(4)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((buckets, totals, products))
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsGrpc {
    #[tracing::instrument(name = "analytics.sales_report", skip_all, fields(store_id = %req.get_ref().store_id))]
    async fn get_sales_report(
        &self,
        req: Request<GetSalesReportRequest>,
    ) -> Result<Response<GetSalesReportResponse>, Status> {
        let (caller, req) = Caller::split(req)?;
        let result = async {
            let store_id = caller.store("store_id", &req.store_id)?.to_owned();
            let size = bucket_ms(req.granularity)?;
            let to_ms = req.to.as_ref().map_or_else(|| unix_ms(SystemTime::now()), timestamp_ms);
            let from_ms =
                req.from.as_ref().map_or_else(|| to_ms - Duration::from_secs(86_400).as_millis() as i64, timestamp_ms);
            if from_ms >= to_ms {
                return Err(Error::invalid("from", "must be before `to`"));
            }
            // Rollups are per minute: a range is widened to whole minutes.
            let from_ms = from_ms - from_ms.rem_euclid(60_000);
            if (to_ms - from_ms) / size > MAX_BUCKETS {
                return Err(Error::invalid(
                    "granularity",
                    format!(
                        "the range spans more than {MAX_BUCKETS} buckets at this granularity; choose a coarser one"
                    ),
                ));
            }
            let top = if req.top_products_limit == 0 { 10 } else { req.top_products_limit.min(100) };
            let (buckets, totals, top_products) = self.reports.report(&store_id, from_ms, to_ms, size, top).await?;
            Ok(GetSalesReportResponse { store_id, granularity: req.granularity, buckets, totals, top_products })
        }
        .await;
        r_ok(result)
    }
}

fn r_ok<T>(r: Result<T>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}
