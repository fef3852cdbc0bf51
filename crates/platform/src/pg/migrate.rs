//! PostgreSQL migrations: one `sqlx::migrate!` migrator per schema, each recording what it applied
//! in its own schema's `_sqlx_migrations` (with sqlx's checksums, so an edited migration is
//! refused), and the move from the runner before it (`platform.schema_migrations`).

use std::collections::HashSet;

use anyhow::Context as _;
use sqlx::migrate::{Migrate as _, MigrateError, Migration, Migrator};
use sqlx::{Connection as _, PgConnection, PgPool};

use super::{APP_ROLE, is_unique_violation, sqlstate};

/// A schema and the migrations that make it (`sqlx::migrate!` of the crate's
/// `migrations/postgres`). The SQL names its objects schema-qualified; sqlx's records go to the
/// schema's own `_sqlx_migrations`.
#[derive(Debug, Clone, Copy)]
pub struct PgSchema {
    pub name: &'static str,
    pub migrator: &'static Migrator,
}

/// The platform's schema (idempotency keys, consumer offsets, store scoping): migrated before
/// every service's.
pub static PLATFORM_SCHEMA: PgSchema = PgSchema { name: "platform", migrator: &sqlx::migrate!("migrations/postgres") };

/// The advisory lock every `migrate` of a database holds throughout. It is the key the runner
/// before sqlx's took in its transaction: an old and a new release migrating at once take turns too.
const LOCK: i64 = 7265727374;

/// Applies the platform's migrations, then each of `schemas`' in the order given, each set in
/// its own schema; then (re)grants the application role. Processes starting together take turns,
/// and a database the old runner migrated has its records moved first, so nothing runs twice.
/// Each migration is its own transaction (sqlx's): a failure keeps those applied before it.
pub async fn migrate(pool: &PgPool, schemas: &[&PgSchema]) -> anyhow::Result<()> {
    // A connection of its own, closed at the end rather than returned to the pool: `search_path`
    // is changed on it, and the lock belongs to its session (so it goes with it, whatever fails).
    let mut conn = pool.acquire().await?.detach();
    let migrated = migrate_on(&mut conn, &with_platform(schemas)).await;
    if let Err(e) = conn.close().await {
        tracing::debug!(error = %e, "closing the migration connection");
    }
    migrated
}

/// Per schema (the platform's first), how many of its migrations are not recorded as applied,
/// either by sqlx or, not yet moved, by the old runner; schemas with none are left out, so empty
/// means migrated. Reads only: what `redstore migrate --wait` polls as the application role.
pub async fn pending_migrations(pool: &PgPool, schemas: &[&PgSchema]) -> anyhow::Result<Vec<(&'static str, usize)>> {
    let mut conn = pool.acquire().await?;
    let mut pending = Vec::new();
    for schema in with_platform(schemas) {
        let recorded = recorded(&mut conn, schema.name).await?;
        let count = unapplied(schema, &recorded).count();
        if count > 0 {
            pending.push((schema.name, count));
        }
    }
    Ok(pending)
}

fn with_platform<'a>(schemas: &[&'a PgSchema]) -> Vec<&'a PgSchema> {
    std::iter::once(&PLATFORM_SCHEMA).chain(schemas.iter().copied()).collect()
}

async fn migrate_on(conn: &mut PgConnection, schemas: &[&PgSchema]) -> anyhow::Result<()> {
    // Every run's `CREATE … IF NOT EXISTS` (the schema, sqlx's table) would log a notice per schema.
    sqlx::query("SET client_min_messages = warning").execute(&mut *conn).await?;
    sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK).execute(&mut *conn).await?;
    adopt_old_records(conn, schemas).await?;
    for schema in schemas {
        run(conn, schema).await?;
    }
    sqlx::query("RESET search_path").execute(&mut *conn).await?;
    let mut tx = conn.begin().await?;
    grant_app_role(&mut tx, schemas).await?;
    tx.commit().await?;
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK).execute(&mut *conn).await?;
    Ok(())
}

/// Runs one schema's migrator. sqlx names its table unqualified, so the connection's
/// `search_path` is the schema alone while it runs: the records land in `<schema>._sqlx_migrations`.
async fn run(conn: &mut PgConnection, schema: &PgSchema) -> anyhow::Result<()> {
    let name = ident(schema.name);
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {name}"))
        .execute(&mut *conn)
        .await
        .with_context(|| format!("creating postgres schema `{}`", schema.name))?;
    sqlx::query("SELECT set_config('search_path', $1, false)").bind(&name).execute(&mut *conn).await?;
    let recorded = recorded(conn, schema.name).await?;
    // `run_direct` is `run` on a connection at hand (public, if undocumented): `run`'s
    // `Acquire<'a>` bound makes every future awaiting it not `Send` (sqlx issue #2016).
    schema.migrator.run_direct(conn).await.map_err(|e| refused(schema, e))?;
    for m in unapplied(schema, &recorded) {
        tracing::info!(schema = schema.name, version = m.version, description = %m.description, "postgres migration applied");
    }
    Ok(())
}

/// sqlx's error, naming the schema; an edited migration also by what it is.
fn refused(schema: &PgSchema, err: MigrateError) -> anyhow::Error {
    let name = schema.name;
    let context = match &err {
        MigrateError::VersionMismatch(version) => {
            let what = schema.migrator.iter().find(|m| m.version == *version).map(|m| m.description.to_string());
            format!(
                "postgres schema `{name}`: migration {version} ({}) was applied and has been edited since; \
                 an applied migration must stay as it was (restore it, and make the change a new migration)",
                what.unwrap_or_default()
            )
        }
        MigrateError::VersionMissing(version) => format!(
            "postgres schema `{name}`: migration {version} is applied, but this release does not have it \
             (was the database migrated by a newer release?)"
        ),
        _ => format!("migrating postgres schema `{name}`"),
    };
    anyhow::Error::new(err).context(context)
}

/// Moves what the runner before sqlx's recorded (`platform.schema_migrations`, a row per service
/// and version) into each schema's `_sqlx_migrations`, with the checksum of this release's
/// migration of that version, so that the migrator applies only the rest. In one transaction,
/// under the lock; the old table is dropped once empty (a schema not migrated here keeps its rows
/// there, and they still count as applied).
async fn adopt_old_records(conn: &mut PgConnection, schemas: &[&PgSchema]) -> anyhow::Result<()> {
    let old: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('platform.schema_migrations')::text").fetch_one(&mut *conn).await?;
    if old.is_none() {
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    for schema in schemas {
        let versions: Vec<i32> =
            sqlx::query_scalar("SELECT version FROM platform.schema_migrations WHERE service = $1 ORDER BY version")
                .bind(schema.name)
                .fetch_all(&mut *tx)
                .await?;
        if versions.is_empty() {
            continue;
        }
        // sqlx's table made by sqlx's own statement, which names it unqualified: for the rest of
        // this transaction (`true`), the schema's.
        sqlx::query("SELECT set_config('search_path', $1, true)").bind(ident(schema.name)).execute(&mut *tx).await?;
        tx.ensure_migrations_table().await.with_context(|| format!("postgres schema `{}`", schema.name))?;
        let insert = format!(
            "INSERT INTO {}._sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
             SELECT $1, $2, applied_at, TRUE, $3, 0 FROM platform.schema_migrations WHERE service = $4 AND version = $5
             ON CONFLICT (version) DO NOTHING",
            ident(schema.name)
        );
        for &version in &versions {
            let migration = schema
                .migrator
                .iter()
                .find(|m| m.version == i64::from(version) && !m.migration_type.is_down_migration())
                .with_context(|| {
                    format!(
                        "postgres schema `{}`: migration {version} was applied by the runner before sqlx's, \
                         but this release does not have it",
                        schema.name
                    )
                })?;
            sqlx::query(&insert)
                .bind(migration.version)
                .bind(&*migration.description)
                .bind(&*migration.checksum)
                .bind(schema.name)
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM platform.schema_migrations WHERE service = $1")
            .bind(schema.name)
            .execute(&mut *tx)
            .await?;
        tracing::info!(
            schema = schema.name,
            versions = versions.len(),
            "postgres migrations recorded by the old runner moved to sqlx's table"
        );
    }
    let left: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM platform.schema_migrations)").fetch_one(&mut *tx).await?;
    if !left {
        sqlx::query("DROP TABLE platform.schema_migrations").execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The versions recorded as applied in `schema`: by sqlx, or still in the old runner's table. A
/// table this role may not read records nothing yet: the migration that grants it is under way.
async fn recorded(conn: &mut PgConnection, schema: &str) -> anyhow::Result<HashSet<i64>> {
    let mut versions = HashSet::new();
    if readable(conn, schema, "_sqlx_migrations").await? {
        let select = format!("SELECT version FROM {}._sqlx_migrations WHERE success", ident(schema));
        versions.extend(sqlx::query_scalar::<_, i64>(&select).fetch_all(&mut *conn).await?);
    }
    if readable(conn, "platform", "schema_migrations").await? {
        let old: Vec<i32> = sqlx::query_scalar("SELECT version FROM platform.schema_migrations WHERE service = $1")
            .bind(schema)
            .fetch_all(&mut *conn)
            .await?;
        versions.extend(old.into_iter().map(i64::from));
    }
    Ok(versions)
}

/// Whether `schema.table` exists and this role may read it (asked of the catalogs, which anyone
/// may read: naming a schema without USAGE would be an error, not an answer).
async fn readable(conn: &mut PgConnection, schema: &str, table: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2
           AND has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'))",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(&mut *conn)
    .await?)
}

fn unapplied<'a>(schema: &'a PgSchema, recorded: &'a HashSet<i64>) -> impl Iterator<Item = &'a Migration> {
    schema.migrator.iter().filter(|m| !m.migration_type.is_down_migration() && !recorded.contains(&m.version))
}

/// A schema name as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the application role when missing (cluster-wide) and grants it the data rights it
/// needs in every service schema of this database: no DDL, no superuser, no BYPASSRLS.
async fn grant_app_role(conn: &mut PgConnection, schemas: &[&PgSchema]) -> anyhow::Result<()> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS(SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(APP_ROLE)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        // Another database's migration may create it at the same moment.
        sqlx::query("SAVEPOINT create_role").execute(&mut *conn).await?;
        let created =
            sqlx::query(&format!("CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS")).execute(&mut *conn).await;
        match created {
            Ok(_) => sqlx::query("RELEASE SAVEPOINT create_role").execute(&mut *conn).await.map(|_| ())?,
            Err(e) if sqlstate(&e).as_deref() == Some("42710") || is_unique_violation(&e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT create_role").execute(&mut *conn).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut *conn).await?;
    sqlx::query(&format!("GRANT CONNECT ON DATABASE \"{db}\" TO {APP_ROLE}")).execute(&mut *conn).await?;
    for schema in schemas {
        let schema = ident(schema.name);
        for stmt in [
            format!("GRANT USAGE ON SCHEMA {schema} TO {APP_ROLE}"),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {APP_ROLE}"),
            // The records are read by `migrate --wait`, and written by migrations only.
            format!("REVOKE INSERT, UPDATE, DELETE ON {schema}._sqlx_migrations FROM {APP_ROLE}"),
            format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {APP_ROLE}"),
            format!("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {APP_ROLE}"),
        ] {
            sqlx::query(&stmt).execute(&mut *conn).await?;
        }
    }
    Ok(())
}
