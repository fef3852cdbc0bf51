//! The inventory store's conformance suite: the SAME test bodies (`cases`) run against every
//! implementation of `InventoryStore` — `sqlite::<case>` on the embedded database,
//! `postgres::<case>` on a fresh PostgreSQL database per test, connected as the application role
//! so that row-level security is in force. `postgres_only` holds what only PostgreSQL has: RLS
//! isolation, the role's rights, and migrations.
//!
//! PostgreSQL is found at `postgres://postgres@127.0.0.1:5432/postgres` unless
//! `REDSTORE_TEST_PG_ADMIN_URL` says otherwise.

mod backend;
mod cases;
mod postgres_only;

/// Instantiates every shared case once per backend, plus the PostgreSQL-only tests.
macro_rules! conformance {
    (shared: [$($case:ident),* $(,)?], postgres_only: [$($pg:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let backend = crate::backend::Backend::sqlite().await;
                    crate::cases::$case(backend.store()).await;
                    backend.finish().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let backend = crate::backend::Backend::postgres().await;
                    crate::cases::$case(backend.store()).await;
                    backend.finish().await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $pg() {
                    let backend = crate::backend::Backend::postgres().await;
                    crate::postgres_only::$pg(&backend).await;
                    backend.finish().await;
                }
            )*
        }
    };
}

conformance! {
    shared: [
        stores_crud_paging_and_errors,
        create_store_is_idempotent_by_key,
        terminals_crud_paging_and_errors,
        products_crud_paging_and_errors,
        product_updates_patch_and_replace_barcodes,
        barcode_lookup_finds_ean13_by_upc_a,
        stock_reads_default_to_zero_and_name_missing_things,
        adjust_stock_is_idempotent_by_key,
        concurrent_repeats_of_one_adjustment_apply_it_once,
        apply_refund_returns_stock_once_by_refund_id,
        apply_sale_is_idempotent_by_sale_id,
        apply_sale_under_a_checkout_key_applies_it_once_and_keeps_the_sale,
        apply_sale_is_held_to_the_prices_it_charged,
        apply_sale_rejects_unknown_store_and_sku_without_effect,
        strict_store_fails_the_whole_sale,
        allow_negative_store_flags_negative,
        events_are_gapless_and_snapshot_matches,
        strict_store_never_oversells,
        concurrent_sales_in_any_sku_order_all_apply,
        imports_apply_whole_batches_once_and_counts_set_levels_with_an_event_per_store,
    ],
    postgres_only: [
        rls_hides_and_protects_other_stores_rows,
        app_role_is_not_superuser_and_cannot_bypass_rls,
        migrations_are_idempotent,
        a_database_the_old_runner_migrated_is_taken_over_without_applying_anything_again,
        an_edited_migration_is_refused_naming_its_schema_and_version,
        pending_migrations_counts_each_schemas_unapplied_and_only_reads,
        migrations_started_at_once_take_turns,
        relay_cursor_migration_keeps_what_was_sent,
        a_request_dropped_mid_begin_leaves_its_connection_clean,
        a_mixed_store_batch_scopes_each_part_and_refuses_alone,
    ],
}
