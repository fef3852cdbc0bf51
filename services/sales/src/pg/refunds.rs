//! Refunds on PostgreSQL: the sale row locked, the stock put back through inventory (idempotent
//! by a refund id derived from the idempotency key, so a retry after a crash re-applies the same
//! refund), then the refund, its event and the key's answer in one transaction.

use prost::Message as _;
use redstore_platform::error::Result;
use redstore_platform::pg::{self, Claim};
use redstore_proto::sales::RefundResponse;

use super::{PgSales, SCHEMA, decode_sale, now_ms, sale_not_found};
use crate::events::sale_refunded;
use crate::store::{RefundOrder, RefundPlan};

/// The idempotency scope of refunds (keys are chain-wide, as in the embedded shape).
const REFUND_SCOPE: &str = "sales.refund";

impl PgSales {
    pub(super) async fn refund_sale(&self, order: RefundOrder) -> Result<RefundResponse> {
        let key = order.idem.key.as_str();
        let mut tx = pg::begin(&self.pool, "BEGIN").await?;
        // Keys first, as in the embedded shape: a retry is answered whatever happened since.
        if let Claim::Replay(stored) = pg::claim(&mut tx, REFUND_SCOPE, key, &order.idem.fingerprint).await? {
            return pg::replay(&stored);
        }
        let store_id = self.store_of_sale(&mut tx, &order.sale_id).await?;
        pg::scope_to_store(&mut tx, &store_id).await?;
        // The row lock orders refunds of one sale: none can refund what another just did.
        let body: Vec<u8> =
            sqlx::query_scalar("SELECT body FROM sales.sales WHERE sale_id = $1 AND status = 'completed' FOR UPDATE")
                .bind(&order.sale_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| sale_not_found(&order.sale_id))?;
        let mut sale = decode_sale(&body)?;
        let plan = RefundPlan::of(&mut sale, &order)?;
        // Derived from the key, so that a retry after a crash between inventory's commit and
        // ours re-applies the same refund, which inventory does once.
        let refund_id = format!("refund-{key}");
        self.inventory.apply_refund(&refund_id, &store_id, &plan.terminal_id, plan.movements.clone()).await?;
        let created = now_ms();
        let refund = plan.record(&mut sale, refund_id, created)?;
        sqlx::query("UPDATE sales.sales SET body = $2 WHERE sale_id = $1")
            .bind(&sale.sale_id)
            .bind(sale.encode_to_vec())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sales.refunds (refund_id, sale_id, store_id, created_at_ms, body) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&refund.refund_id)
        .bind(&refund.sale_id)
        .bind(&store_id)
        .bind(created)
        .bind(refund.encode_to_vec())
        .execute(&mut *tx)
        .await?;
        pg::append_event(&mut tx, SCHEMA, &store_id, sale_refunded(&refund, &plan.terminal_id)).await?;
        let response = RefundResponse { refund: Some(refund), sale: Some(sale) };
        pg::complete(&mut tx, REFUND_SCOPE, key, &response).await?;
        tx.commit().await?;
        Ok(response)
    }
}
