//! What only the PostgreSQL backend has: row-level security for the application role, the role's
//! own rights, and migrations: run again, at once, over a database the old runner migrated, or
//! with a migration edited since it was applied.

use std::time::Duration;

use redstore_inventory::OversellPolicy;
use redstore_inventory::domain::StoreRow;
use redstore_inventory::pg::PG_SCHEMA;
use redstore_inventory::store::Idem;
use redstore_platform::pg::scratch::ScratchDb;
use redstore_platform::pg::{self, APP_ROLE, PLATFORM_SCHEMA, PgPool, PgSchema};
use sqlx::Row as _;

use crate::backend::Backend;

async fn set_up_two_stores(backend: &Backend) {
    let store = backend.store();
    for id in ["store-a", "store-b"] {
        let row = StoreRow { store_id: id.to_owned(), name: id.to_owned(), policy: OversellPolicy::Strict };
        store.create_store(Idem::default(), row).await.unwrap();
        store
            .register_terminal(
                Idem::default(),
                redstore_proto::inventory::Terminal {
                    store_id: id.to_owned(),
                    terminal_id: "t1".into(),
                    name: "Till".into(),
                },
            )
            .await
            .unwrap();
    }
    let product = redstore_inventory::domain::Product {
        sku: "sku-1".into(),
        name: "Milk".into(),
        price: redstore_platform::money::Money::new(
            redstore_platform::money::Currency::parse("currency_code", "EUR").unwrap(),
            129,
        ),
        barcodes: vec![],
        active: true,
    };
    store.create_product(Idem::default(), product, vec![]).await.unwrap();
    for (id, qty) in [("store-a", 3), ("store-b", 7)] {
        let idem = Idem { key: format!("recv-{id}"), fingerprint: vec![1] };
        store
            .adjust_stock(idem, id, redstore_inventory::StockMovement { sku: "sku-1".into(), delta: qty }, "received")
            .await
            .unwrap();
    }
}

async fn count(conn: &mut sqlx::PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

pub async fn rls_hides_and_protects_other_stores_rows(backend: &Backend) {
    set_up_two_stores(backend).await;
    let pool = backend.app_pool();

    let mut tx = pg::store_tx(pool, "store-a").await.unwrap();
    // Store A sees its own rows, and none of store B's, in every store-owned table.
    assert_eq!(count(&mut tx, "SELECT count(*) FROM inventory.stock").await, 1);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM inventory.stock WHERE store_id = 'store-b'").await, 0);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM inventory.terminals WHERE store_id = 'store-b'").await, 0);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM inventory.store_sequences WHERE store_id = 'store-b'").await, 0);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM inventory.outbox WHERE store_id = 'store-b'").await, 0);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM inventory.outbox").await, 1);
    // Nor can it change them.
    let updated = sqlx::query("UPDATE inventory.stock SET quantity = 999 WHERE store_id = 'store-b'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(updated, 0);
    let deleted =
        sqlx::query("DELETE FROM inventory.terminals WHERE store_id = 'store-b'").execute(&mut *tx).await.unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    tx.commit().await.unwrap();

    // Writing a row for another store violates the policy (insufficient_privilege).
    let mut tx = pg::store_tx(pool, "store-a").await.unwrap();
    let err = sqlx::query(
        "INSERT INTO inventory.stock (store_id, sku, quantity, last_seq) VALUES ('store-b', 'sku-1', 1, 1)",
    )
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert_eq!(pg::sqlstate(&err).as_deref(), Some("42501"), "{err}");
    drop(tx);
    // Moving a row of its own into another store, too.
    let mut tx = pg::store_tx(pool, "store-a").await.unwrap();
    let err = sqlx::query("UPDATE inventory.stock SET store_id = 'store-b' WHERE store_id = 'store-a'")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(pg::sqlstate(&err).as_deref(), Some("42501"), "{err}");
    drop(tx);

    // A transaction scoped to no store sees no store-owned rows at all.
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(count(&mut tx, "SELECT count(*) FROM inventory.stock").await, 0);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM inventory.outbox").await, 0);
    // Chain-wide tables are not store-owned.
    assert_eq!(count(&mut tx, "SELECT count(*) FROM inventory.stores").await, 2);
    assert_eq!(count(&mut tx, "SELECT count(*) FROM inventory.products").await, 1);
    tx.commit().await.unwrap();

    // Store B is untouched, as its own API tells.
    let store = backend.store();
    assert_eq!(store.get_stock("store-b", "sku-1").await.unwrap().quantity, 7);
    assert_eq!(store.get_stock("store-a", "sku-1").await.unwrap().quantity, 3);
    store.require_terminal("store-b", "t1").await.unwrap();
    assert_eq!(store.events_after("store-b", 0, 10).await.unwrap().len(), 1);
}

pub async fn app_role_is_not_superuser_and_cannot_bypass_rls(backend: &Backend) {
    let pool = backend.app_pool();
    let row =
        sqlx::query("SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(pool)
            .await
            .unwrap();
    let (user, superuser, bypass): (String, bool, bool) =
        (row.try_get(0).unwrap(), row.try_get(1).unwrap(), row.try_get(2).unwrap());
    assert_eq!(user, APP_ROLE);
    assert!(!superuser, "the application role must not be a superuser");
    assert!(!bypass, "the application role must not have BYPASSRLS");

    // Nor does it own the tables (an owner is exempt unless FORCE is set; FORCE is set anyway).
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'inventory' AND tableowner = current_user",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(owned, 0);
    // Every store-owned table has RLS enabled and forced.
    let forced: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'inventory' AND c.relkind = 'r' AND c.relrowsecurity AND c.relforcerowsecurity
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(forced, ["checkouts", "outbox", "stock", "store_sequences", "terminals"]);
    // And it cannot change the schema.
    let err = sqlx::query("ALTER TABLE inventory.stock DISABLE ROW LEVEL SECURITY").execute(pool).await.unwrap_err();
    assert_eq!(pg::sqlstate(&err).as_deref(), Some("42501"), "{err}");
}

pub async fn migrations_are_idempotent(backend: &Backend) {
    // One connection: were the migration's `search_path` left on a pooled connection, the query
    // after it would get that connection.
    let admin = pg::connect(&backend.scratch().admin_url, 1, Duration::from_secs(10)).await.unwrap();
    // ScratchDb::create migrated once already; twice more changes nothing and fails nothing.
    pg::migrate(&admin, &[&PG_SCHEMA]).await.unwrap();
    pg::migrate(&admin, &[&PG_SCHEMA]).await.unwrap();
    assert_eq!(recorded(&admin, "inventory").await, versions(&PG_SCHEMA, ..));
    let path: String = sqlx::query_scalar("SHOW search_path").fetch_one(&admin).await.unwrap();
    assert_eq!(path, "\"$user\", public");
    admin.close().await;

    // The application role still works after the re-grants.
    set_up_two_stores(backend).await;
    assert_eq!(backend.store().get_stock("store-a", "sku-1").await.unwrap().quantity, 3);
}

/// The versions `schema`'s `_sqlx_migrations` records as applied.
async fn recorded(pool: &PgPool, schema: &str) -> Vec<i64> {
    sqlx::query_scalar(&format!("SELECT version FROM {schema}._sqlx_migrations WHERE success ORDER BY version"))
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The versions of `schema`'s migrations within `range`.
fn versions(schema: &PgSchema, range: impl std::ops::RangeBounds<i64>) -> Vec<i64> {
    schema.migrator.iter().map(|m| m.version).filter(|v| range.contains(v)).collect()
}

/// Applies the first migrations of each schema (up to the version given) as the runner before
/// sqlx's did: the SQL as it is, recorded as `(service, version)` in `platform.schema_migrations`
/// (at a time the test knows).
async fn migrate_the_old_way(admin: &PgPool, applied: &[(&PgSchema, i64)]) {
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS platform;
         CREATE TABLE IF NOT EXISTS platform.schema_migrations (
            service TEXT NOT NULL, version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (service, version))",
    )
    .execute(admin)
    .await
    .unwrap();
    for (schema, up_to) in applied {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", schema.name)).execute(admin).await.unwrap();
        for m in schema.migrator.iter().filter(|m| m.version <= *up_to) {
            sqlx::raw_sql(&m.sql).execute(admin).await.unwrap();
            sqlx::query(
                "INSERT INTO platform.schema_migrations (service, version, applied_at)
                 VALUES ($1, $2, '2025-01-02 03:04:05+00')",
            )
            .bind(schema.name)
            .bind(i32::try_from(m.version).unwrap())
            .execute(admin)
            .await
            .unwrap();
        }
    }
}

/// `(version, checksum, execution_time, installed at the old runner's time)` of each of
/// `schema`'s records.
async fn records(pool: &PgPool, schema: &str) -> Vec<(i64, Vec<u8>, i64, bool)> {
    sqlx::query_as(&format!(
        "SELECT version, checksum, execution_time, installed_on = '2025-01-02 03:04:05+00'
         FROM {schema}._sqlx_migrations ORDER BY version"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// What a record moved from the old runner's table must be: this release's checksum, no time of
/// its own, and the time it was applied then.
fn moved(schema: &PgSchema, version: i64) -> (i64, Vec<u8>, i64, bool) {
    let m = schema.migrator.iter().find(|m| m.version == version).unwrap();
    (version, m.checksum.to_vec(), 0, true)
}

async fn old_table_exists(pool: &PgPool) -> bool {
    let old: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('platform.schema_migrations')::text").fetch_one(pool).await.unwrap();
    old.is_some()
}

/// A database the runner before sqlx's migrated is taken over without applying anything again:
/// each schema's records move to its `_sqlx_migrations` with this release's checksums, the old
/// table keeps the rows of schemas not migrated yet (they count as applied) and goes once empty,
/// and only the later migrations are applied.
pub async fn a_database_the_old_runner_migrated_is_taken_over_without_applying_anything_again(_backend: &Backend) {
    let db = ScratchDb::empty().await.unwrap();
    let admin = pg::connect(&db.admin_url, 2, Duration::from_secs(10)).await.unwrap();
    migrate_the_old_way(&admin, &[(&PLATFORM_SCHEMA, 2), (&PG_SCHEMA, 3)]).await;
    // Rows written since: applying 0001 again would fail ("already exists") or lose them.
    sqlx::query(
        "INSERT INTO inventory.stores (store_id, name, oversell_policy, created_at_ms) VALUES ('store-old', 'Old', 'strict', 0)",
    )
    .execute(&admin)
    .await
    .unwrap();
    let old_count = |schema: &PgSchema, applied| schema.migrator.iter().count() - applied;
    let pending = pg::pending_migrations(&admin, &[&PG_SCHEMA]).await.unwrap();
    assert_eq!(pending, [("platform", old_count(&PLATFORM_SCHEMA, 2)), ("inventory", old_count(&PG_SCHEMA, 3))]);

    // The platform's alone (as a release migrating no service would): inventory's rows stay.
    pg::migrate(&admin, &[]).await.unwrap();
    let platform = records(&admin, "platform").await;
    assert_eq!(platform[..2], [moved(&PLATFORM_SCHEMA, 1), moved(&PLATFORM_SCHEMA, 2)]);
    assert_eq!(platform.iter().map(|r| r.0).collect::<Vec<_>>(), versions(&PLATFORM_SCHEMA, ..));
    assert!(platform[2..].iter().all(|(_, _, time, old)| *time > 0 && !old), "applied now: {platform:?}");
    let left: Vec<(String, i32)> =
        sqlx::query_as("SELECT service, version FROM platform.schema_migrations ORDER BY 1, 2")
            .fetch_all(&admin)
            .await
            .unwrap();
    assert_eq!(left, [("inventory".to_owned(), 1), ("inventory".to_owned(), 2), ("inventory".to_owned(), 3)]);
    let pending = pg::pending_migrations(&admin, &[&PG_SCHEMA]).await.unwrap();
    assert_eq!(pending, [("inventory", old_count(&PG_SCHEMA, 3))]);

    pg::migrate(&admin, &[&PG_SCHEMA]).await.unwrap();
    let inventory = records(&admin, "inventory").await;
    assert_eq!(inventory[..3], [moved(&PG_SCHEMA, 1), moved(&PG_SCHEMA, 2), moved(&PG_SCHEMA, 3)]);
    assert_eq!(inventory.iter().map(|r| r.0).collect::<Vec<_>>(), versions(&PG_SCHEMA, ..));
    assert!(inventory[3..].iter().all(|(_, _, time, old)| *time > 0 && !old), "applied now: {inventory:?}");
    assert!(!old_table_exists(&admin).await, "the old table goes once empty");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM inventory.stores WHERE store_id = 'store-old'")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(kept, 1);
    let pending = pg::pending_migrations(&admin, &[&PG_SCHEMA]).await.unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    admin.close().await;
    db.drop_db().await.unwrap();
}

/// A migration whose file changed after it was applied is refused (sqlx's checksum), naming the
/// schema, the version and what it is.
pub async fn an_edited_migration_is_refused_naming_its_schema_and_version(backend: &Backend) {
    let admin = pg::connect(&backend.scratch().admin_url, 2, Duration::from_secs(10)).await.unwrap();
    // As if 0003's file had been edited since: the checksum recorded then is not the file's.
    sqlx::query("UPDATE inventory._sqlx_migrations SET checksum = sha384('as it was'::bytea) WHERE version = 3")
        .execute(&admin)
        .await
        .unwrap();
    let err = pg::migrate(&admin, &[&PG_SCHEMA]).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("postgres schema `inventory`: migration 3 (lock stock)"), "{message}");
    assert!(message.contains("edited"), "{message}");
    let mismatch = err.chain().filter_map(|e| e.downcast_ref::<sqlx::migrate::MigrateError>()).next();
    assert!(matches!(mismatch, Some(sqlx::migrate::MigrateError::VersionMismatch(3))), "{err:?}");
    admin.close().await;
}

/// `pending_migrations` (what `redstore migrate --wait` polls, as the application role) counts
/// per schema what is not applied, on a database nothing migrated too, and writes nothing.
pub async fn pending_migrations_counts_each_schemas_unapplied_and_only_reads(_backend: &Backend) {
    let db = ScratchDb::empty().await.unwrap();
    let admin = pg::connect(&db.admin_url, 2, Duration::from_secs(10)).await.unwrap();
    // Sessions that may not write: asking must not need to.
    let read_only = |url: &str| {
        let then = if url.contains('?') { '&' } else { '?' };
        format!("{url}{then}options[default_transaction_read_only]=on")
    };
    let reader = pg::connect(&read_only(&db.admin_url), 1, Duration::from_secs(10)).await.unwrap();
    let all = |schema: &PgSchema| schema.migrator.iter().count();
    let pending = pg::pending_migrations(&reader, &[&PG_SCHEMA]).await.unwrap();
    assert_eq!(pending, [("platform", all(&PLATFORM_SCHEMA)), ("inventory", all(&PG_SCHEMA))]);

    pg::migrate(&admin, &[]).await.unwrap();
    // And as the application role, which that migration made.
    let app = pg::connect(&read_only(&db.app_url), 1, Duration::from_secs(10)).await.unwrap();
    for pool in [&reader, &app] {
        let pending = pg::pending_migrations(pool, &[&PG_SCHEMA]).await.unwrap();
        assert_eq!(pending, [("inventory", all(&PG_SCHEMA))]);
    }

    pg::migrate(&admin, &[&PG_SCHEMA]).await.unwrap();
    for pool in [&reader, &app] {
        let pending = pg::pending_migrations(pool, &[&PG_SCHEMA]).await.unwrap();
        assert!(pending.is_empty(), "{pending:?}");
    }
    for pool in [reader, app, admin] {
        pool.close().await;
    }
    db.drop_db().await.unwrap();
}

/// Processes migrating one database at once (a migration Job beside servers that start, or
/// tests) take turns: each succeeds, and each migration is applied once.
pub async fn migrations_started_at_once_take_turns(_backend: &Backend) {
    let db = ScratchDb::empty().await.unwrap();
    let runs = (0..4).map(|_| {
        let url = db.admin_url.clone();
        tokio::spawn(async move {
            let pool = pg::connect(&url, 2, Duration::from_secs(10)).await?;
            let migrated = pg::migrate(&pool, &[&PG_SCHEMA]).await;
            pool.close().await;
            migrated
        })
    });
    for run in futures::future::join_all(runs).await {
        run.unwrap().unwrap();
    }
    let admin = pg::connect(&db.admin_url, 1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(recorded(&admin, "platform").await, versions(&PLATFORM_SCHEMA, ..));
    assert_eq!(recorded(&admin, "inventory").await, versions(&PG_SCHEMA, ..));
    admin.close().await;
    db.drop_db().await.unwrap();
}

/// A database from before the relay cursor (events marked `sent_at` one by one) is migrated to a
/// cursor per store that resends nothing delivered and skips nothing undelivered: the cursor stops
/// before a store's first unsent event, even when later ones were marked sent.
pub async fn relay_cursor_migration_keeps_what_was_sent(_backend: &Backend) {
    // 0004 introduces the cursor.
    let before_cursor = pg::scratch::up_to(&PG_SCHEMA, 3).await.unwrap();
    let db = ScratchDb::create(&[before_cursor]).await.unwrap();
    let admin = pg::connect(&db.admin_url, 2, Duration::from_secs(10)).await.unwrap();
    // store-a: 1..=3 sent, 4 unsent, 5 sent (a delivery order the old relay allowed); store-b: all
    // sent; store-c: none sent.
    for (store, seq, sent) in [
        ("store-a", 1, true),
        ("store-a", 2, true),
        ("store-a", 3, true),
        ("store-a", 4, false),
        ("store-a", 5, true),
        ("store-b", 1, true),
        ("store-b", 2, true),
        ("store-c", 1, false),
    ] {
        sqlx::query(
            "INSERT INTO inventory.outbox (event_id, store_id, store_seq, event_type, occurred_at_ms, body, sent_at)
             VALUES ($1, $2, $3, 'inventory.changed', 0, '', CASE WHEN $4 THEN now() END)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(store)
        .bind(seq as i64)
        .bind(sent)
        .execute(&admin)
        .await
        .unwrap();
    }
    pg::migrate(&admin, &[&PG_SCHEMA]).await.unwrap();
    let cursors: Vec<(String, i64)> = sqlx::query_as(
        "SELECT store_id, last_seq FROM platform.consumer_offsets
         WHERE group_name = 'outbox-relay' AND topic = 'inventory' ORDER BY store_id",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(cursors, [("store-a".to_owned(), 3), ("store-b".to_owned(), 2), ("store-c".to_owned(), 0)]);
    let columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns
         WHERE table_schema = 'inventory' AND table_name = 'outbox' AND column_name = 'sent_at'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(columns, 0, "the per-event mark is gone");
    admin.close().await;
    db.drop_db().await.unwrap();
}

/// A caller that goes away mid-request (a client hanging up drops its request's future) leaves no
/// transaction open on the connection it had: the next caller of that connection starts afresh.
/// sqlx 0.8 alone does not roll back a BEGIN dropped before it answered.
pub async fn a_request_dropped_mid_begin_leaves_its_connection_clean(backend: &Backend) {
    set_up_two_stores(backend).await;
    // One connection, so that every call below gets the one the dropped calls used.
    let pool = pg::connect(&backend.scratch().app_url, 1, Duration::from_secs(10)).await.unwrap();
    let inventory = redstore_inventory::pg::PgInventory::new(pool.clone());
    for attempt in 0..40 {
        // Polled a few times (it has sent its BEGIN, or is about to), then dropped.
        // A call that finished before it was dropped hands over its transaction, dropped too.
        let mut dropped = Box::pin(pg::store_tx(&pool, "store-a"));
        for poll in 0..=attempt % 4 {
            if poll > 0 {
                tokio::task::yield_now().await;
            }
            if futures::FutureExt::now_or_never(&mut dropped).is_some() {
                break;
            }
        }
        drop(dropped);
        // A snapshot begins with BEGIN ISOLATION LEVEL, which fails inside an open transaction.
        let snapshot = redstore_inventory::InventoryStore::snapshot(inventory.as_ref(), "store-a").await;
        assert_eq!(snapshot.expect("a snapshot on the connection the dropped call had").items[0].quantity, 3);
    }
    pool.close().await;
}

/// A batch of several stores' sales in one transaction (the chain's group commit): its statements
/// run under row-level security for the batch's stores, one store's refused sale leaves the
/// others' sales applied, a retry of the whole mixed batch is answered as the first time, and the
/// transaction is never widened to other stores: a crafted write beside the batch is refused, and
/// once the batch is done the transaction has its scope from before.
pub async fn a_mixed_store_batch_scopes_each_part_and_refuses_alone(backend: &Backend) {
    use redstore_inventory::StockMovement;
    use redstore_inventory::pg::{PartsWrite, SaleToApply, StoreSales, decide_parts};

    set_up_two_stores(backend).await;
    let pool = backend.app_pool();
    let movements = |delta: i64| vec![StockMovement { sku: "sku-1".into(), delta: -delta }];
    let (five, two, four) = (movements(5), movements(2), movements(4));
    let sale = |sale_id: &'static str, movements: &'static [StockMovement]| SaleToApply {
        sale_id,
        request: sale_id.as_bytes(),
        terminal_id: "t1",
        movements,
        charged: &[],
        checkout: None,
    };
    // 'static for the closure: the vectors live to the end of the test.
    let (five, two, four): (&'static [StockMovement], &'static [StockMovement], &'static [StockMovement]) =
        (five.leak(), two.leak(), four.leak());
    let a_sales = [sale("sale-a-5", five), sale("sale-a-2", two)];
    let b_sales = [sale("sale-b-4", four)];
    // Parts given out of store order: the batch orders them itself.
    let parts =
        [StoreSales { store_id: "store-b", sales: &b_sales }, StoreSales { store_id: "store-a", sales: &a_sales }];

    let mut tx = pool.begin().await.unwrap();
    let decided = decide_parts(&mut tx, &parts).await.unwrap();
    PartsWrite::new(&decided).write(&mut tx).await.unwrap();
    // Beside the batch, another store's rows stay out of reach: no row of store A (one of the
    // batch's stores) can be changed once the batch is done, and none of a store outside it written.
    let updated = sqlx::query("UPDATE inventory.stock SET quantity = 999 WHERE store_id = 'store-a'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(updated, 0, "a mixed batch's transaction must not reach a store it is not scoped to");
    tx.commit().await.unwrap();

    let [b, a] = <[_; 2]>::try_from(decided).ok().unwrap();
    // Store A had 3: the sale of 5 is refused (strict), the sale of 2 applies; store B's applies.
    let a_outcomes: Vec<_> = a.applied.outcomes.iter().map(|o| o.as_ref().map(|r| r.store_seq)).collect();
    assert_eq!(a_outcomes[0].as_ref().unwrap_err().code(), tonic::Code::FailedPrecondition);
    assert!(a_outcomes[1].is_ok(), "{:?}", a_outcomes[1]);
    let b_answer = b.applied.outcomes[0].as_ref().unwrap().clone();
    let store = backend.store();
    assert_eq!(store.get_stock("store-a", "sku-1").await.unwrap().quantity, 1);
    assert_eq!(store.get_stock("store-b", "sku-1").await.unwrap().quantity, 3);
    // One event each for the sales applied (after each store's receipt), none for the refusal.
    assert_eq!(store.events_after("store-a", 0, 10).await.unwrap().len(), 2);
    assert_eq!(store.events_after("store-b", 0, 10).await.unwrap().len(), 2);

    // The whole mixed batch again (a retry after a lost answer): the same answers, nothing applied
    // twice; the refused sale is decided afresh (and refused again).
    let mut tx = pool.begin().await.unwrap();
    let again = decide_parts(&mut tx, &parts).await.unwrap();
    PartsWrite::new(&again).write(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again[0].applied.outcomes[0].as_ref().unwrap(), &b_answer);
    assert_eq!(
        again[1].applied.outcomes[1].as_ref().unwrap().store_seq,
        *a_outcomes[1].as_ref().unwrap(),
        "a retried sale is answered with its first answer"
    );
    assert!(again[1].applied.outcomes[0].is_err());
    assert_eq!(store.get_stock("store-a", "sku-1").await.unwrap().quantity, 1);
    assert_eq!(store.get_stock("store-b", "sku-1").await.unwrap().quantity, 3);
    assert_eq!(store.events_after("store-b", 0, 10).await.unwrap().len(), 2);

    // A crafted write inside a mixed batch's transaction, to a store outside it, is refused.
    let mut tx = pool.begin().await.unwrap();
    decide_parts(&mut tx, &parts).await.unwrap();
    let err = sqlx::query(
        "INSERT INTO inventory.stock (store_id, sku, quantity, last_seq) VALUES ('store-c', 'sku-1', 1, 1)",
    )
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert_eq!(pg::sqlstate(&err).as_deref(), Some("42501"), "{err}");
    drop(tx);

    // A transaction scoped to store B that runs a mixed batch is scoped to B alone afterwards.
    let mut tx = pool.begin().await.unwrap();
    pg::scope_to_store(&mut tx, "store-b").await.unwrap();
    decide_parts(&mut tx, &parts).await.unwrap();
    let updated = sqlx::query("UPDATE inventory.stock SET quantity = 999 WHERE store_id = 'store-a'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(updated, 0, "a batch must give its transaction back the scope it had");
    let scope: String =
        sqlx::query_scalar("SELECT current_setting('redstore.store_id')").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(scope, "store-b");
    drop(tx);

    // A store id that could name two stores never scopes a transaction.
    let mut tx = pool.begin().await.unwrap();
    let err =
        sqlx::query("SELECT platform.scope_to_stores(ARRAY['store-a,store-c'])").execute(&mut *tx).await.unwrap_err();
    assert_eq!(pg::sqlstate(&err).as_deref(), Some("42501"), "{err}");
}
