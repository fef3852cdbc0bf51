//! The sales store's conformance suite: the SAME test bodies (`cases`) run against every
//! implementation of `SalesStore` — `sqlite::<case>` with `SqliteSales` and `SqliteInventory` on
//! one embedded database (one transaction per checkout), `postgres::<case>` with `PgSales` on a
//! fresh PostgreSQL database per test, connected as the application role so that row-level
//! security is in force, and `SqliteInventory` on an embedded database of its own as the
//! separate inventory service (the checkout saga only sees the `InventoryStore` trait), and
//! `postgres_remote::<case>` with `PgSales` calling a separate inventory server over real gRPC, and
//! `postgres_local::<case>` with `PgSales` beside `PgInventory` on one PostgreSQL database, as one
//! process runs them (checkouts by group commit: one transaction per batch of a store's checkouts).
//! `postgres_only` holds what only PostgreSQL has: RLS isolation, the outbox, and healing
//! interrupted checkouts.
//!
//! PostgreSQL is found at `postgres://postgres@127.0.0.1:5432/postgres` unless
//! `REDSTORE_TEST_PG_ADMIN_URL` says otherwise.

mod backend;
mod cases;
mod flaky;
mod group_commit;
mod postgres_only;
mod support;

/// Instantiates every shared case once per backend, plus the PostgreSQL-only tests.
macro_rules! conformance {
    (
        shared: [$($case:ident),* $(,)?],
        postgres_only: [$($pg:ident),* $(,)?],
        group_commit: [$($gc:ident),* $(,)?] $(,)?
    ) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::backend::Backend::sqlite().await;
                    crate::cases::$case(backend.sales(), backend.inventory()).await;
                    backend.finish().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::backend::Backend::postgres().await;
                    crate::cases::$case(backend.sales(), backend.inventory()).await;
                    backend.finish().await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $pg() {
                    crate::postgres_only::$pg().await;
                }
            )*
        }

        mod postgres_remote {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::backend::Backend::postgres_remote().await;
                    crate::cases::$case(backend.sales(), backend.inventory()).await;
                    backend.finish().await;
                }
            )*
        }

        mod postgres_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = crate::backend::Backend::postgres_local().await;
                    crate::cases::$case(backend.sales(), backend.inventory()).await;
                    backend.finish().await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $gc() {
                    crate::group_commit::$gc().await;
                }
            )*
        }
    };
}

conformance! {
    shared: [
        scan_adds_to_the_cart_once_per_scan_id,
        cart_items_can_be_added_set_removed_and_cleared,
        checkout_from_lines_prices_settles_and_takes_stock,
        checkout_names_what_is_wrong_and_leaves_no_trace,
        checkouts_charge_the_price_of_the_moment,
        a_price_override_sells_at_its_price_and_refunds_what_was_paid,
        checkout_sells_the_cart_and_empties_it,
        retried_checkout_returns_the_same_sale_and_takes_stock_once,
        concurrent_checkouts_with_one_key_make_one_sale,
        key_reused_for_another_request_is_already_exists,
        strict_oversell_fails_without_trace_and_the_key_can_be_reused,
        last_units_of_a_sku_go_to_exactly_that_many_checkouts,
        allow_negative_store_sells_below_zero_and_says_so,
        refunds_restock_once_and_cap_at_what_was_sold,
        list_sales_pages_in_sale_id_order,
        concurrent_checkouts_of_one_cart_sell_it_once,
        a_chain_batch_larger_than_one_call_applies_every_sale_once,
    ],
    postgres_only: [
        rls_confines_a_transaction_to_its_store,
        outbox_holds_one_sale_completed_per_sale_with_gapless_sequences,
        checkout_interrupted_after_inventory_applied_heals_on_retry,
        pending_checkouts_are_resumed_or_released,
        a_checkout_applied_and_never_recorded_is_recorded_by_the_reconciler,
        items_scanned_during_a_checkout_stay_in_the_cart,
    ],
    group_commit: [
        a_burst_of_checkouts_sells_exactly_the_stock_with_gapless_events,
        checkouts_of_many_stores_share_batches_and_refuse_alone,
    ],
}
