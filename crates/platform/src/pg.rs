//! PostgreSQL helpers for the distributed shape: connecting with a clear error, migrations (a
//! schema per service), store-scoped transactions for row-level security, the transactional
//! outbox with per-store sequences, and idempotency keys.
//!
//! Every store-owned table has a policy on `current_setting('redstore.store_id')`; a transaction
//! from [`store_tx`] sets it with `set_config(.., true)` (the `SET LOCAL` form that takes a bind
//! parameter), so a query can only see and change the rows of the store it was opened for. The
//! setting may name several stores, comma-separated (`platform.scoped_stores()`, migration 0004):
//! only a chain's group-commit batches do, for their own stores, inside their SQL functions.

use std::time::Duration;

use anyhow::Context as _;
use prost::Message as _;
use redstore_proto::events::{EventEnvelope, event_envelope::Payload};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, Row as _};
pub use sqlx::{PgPool, Postgres, Transaction};

use crate::error::{Error, Result};
use crate::retention::{self, Retention, SCAN_SCOPES};

mod migrate;
pub use migrate::{PLATFORM_SCHEMA, PgSchema, migrate, pending_migrations};

/// The role services connect as: no superuser, no BYPASSRLS, so row-level security holds.
pub const APP_ROLE: &str = "redstore_app";

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(err).context("postgres"))
    }
}

/// The SQLSTATE of a database error, e.g. "23505" for a unique violation.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    sqlstate(err).as_deref() == Some("23505")
}

/// Whether a statement failed on a unique key that a concurrent transaction took first (an
/// idempotency key, say): run again, it sees what that transaction committed.
pub fn lost_unique_race(err: &Error) -> bool {
    match err {
        Error::Internal(e) => e.chain().filter_map(|c| c.downcast_ref::<sqlx::Error>()).any(is_unique_violation),
        _ => false,
    }
}

/// Connects a pool, failing within `timeout` with an error that names PostgreSQL and the
/// address (never the password) when the server cannot be reached.
pub async fn connect(url: &str, max_connections: u32, timeout: Duration) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url.parse().context("--database-url is not a valid postgres:// URL")?;
    let place = format!(
        "{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    );
    // A plan per execution, never a cached generic one. Generic plans are costed on the
    // statistics of the moment they are first made, with no idea of how many values an array
    // parameter holds: on tables that grow from empty (a new database, a new store) they settled
    // on scanning by the first column of a composite key (every sale of a store, every claim of
    // a scope) and filtering the rest, which made each batch of checkouts slower than the last.
    // The statements here are small; planning each costs far less than one such scan.
    let options = options.options([("plan_cache_mode", "force_custom_plan")]);
    // No ping before each acquire: that is a round trip every time a connection is taken from the
    // pool (several per checkout). A connection that broke while idle fails its next query instead.
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .acquire_timeout(timeout)
        .connect_with(options)
        .await
        .context(crate::unreachable::Unreachable(format!("PostgreSQL at {place}")))?;
    Ok(pool)
}

/// Begins a transaction scoped to one store: row-level security shows it only that store's rows.
///
/// The scope is set in the same round trip as `BEGIN` (one simple-query batch). That splices the
/// store id into SQL text, which is safe only because it is checked here to be an identifier
/// (letters, digits, `-`, `_`, `.`, `:`; at most 64): anything else is INVALID_ARGUMENT.
pub async fn store_tx(pool: &PgPool, store_id: &str) -> Result<Transaction<'static, Postgres>> {
    check_store_id(store_id)?;
    begin(pool, format!("BEGIN; SELECT set_config('redstore.store_id', '{store_id}', true)")).await
}

/// A read-only transaction scoped to a store in which every statement sees one snapshot
/// (REPEATABLE READ): for reads of several statements that must agree with each other, which
/// READ COMMITTED's snapshot per statement would let a commit in between split.
pub async fn store_snapshot(pool: &PgPool, store_id: &str) -> Result<Transaction<'static, Postgres>> {
    check_store_id(store_id)?;
    begin(
        pool,
        format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT set_config('redstore.store_id', '{store_id}', true)"
        ),
    )
    .await
}

/// A query under construction, as `sqlx::query` makes them (for helpers that bind a run of its
/// parameters).
pub type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// A call of `function` with `args` arguments numbered from `$first`: `f($3, $4)`. For statements
/// that call several functions, each with its own run of the parameters.
pub fn call(function: &str, first: usize, args: usize) -> String {
    let args: Vec<String> = (first..first + args).map(|n| format!("${n}")).collect();
    format!("{function}({})", args.join(", "))
}

/// One array argument of a `*_parts` SQL function (a batch of several stores, each store a part):
/// every part's values of `field`, flattened in order, and where each part's run ends (1-based,
/// inclusive, as the functions slice them).
pub fn parts<P, T: Clone>(parts: &[P], field: impl Fn(&P) -> &[T]) -> (Vec<i32>, Vec<T>) {
    let mut ends = Vec::with_capacity(parts.len());
    let mut all = Vec::new();
    for part in parts {
        all.extend_from_slice(field(part));
        ends.push(all.len() as i32);
    }
    (ends, all)
}

/// Begins a transaction with `statement` (`"BEGIN"`, or one with options) on a pooled connection,
/// safely even when the caller is cancelled mid-way (a client that hangs up drops its request's
/// future, a watcher that goes away drops its stream). sqlx 0.8 rolls back nothing for a BEGIN
/// whose future is dropped before it returns: the connection went back to the pool inside a
/// transaction, for the next caller to inherit (its `BEGIN ISOLATION LEVEL …` then failed). Here
/// the BEGIN runs in a task of its own, so it always hands over its transaction, which rolls back
/// when dropped.
pub async fn begin(pool: &PgPool, statement: impl Into<String>) -> Result<Transaction<'static, Postgres>> {
    let (pool, statement) = (pool.clone(), statement.into());
    tokio::spawn(async move { pool.begin_with(statement).await })
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("beginning a transaction: {e}")))?
        .map_err(Error::from)
}

/// Rejects a store id that could not be spliced into SQL text safely (see [`store_tx`]). The empty
/// id is harmless (it scopes to no store) and is let through, to fail as a missing store would.
pub fn check_store_id(store_id: &str) -> Result<()> {
    let bad = store_id.len() > 64
        || store_id.chars().any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')));
    if bad {
        return Err(Error::invalid(
            "store_id",
            "must be at most 64 characters of letters, digits, '-', '_', '.' and ':'",
        ));
    }
    Ok(())
}

/// Scopes the current transaction to a store (`SET LOCAL redstore.store_id`). The id is checked as
/// [`store_tx`] checks it: a comma would scope the transaction to two stores (platform migration
/// 0004).
pub async fn scope_to_store(conn: &mut PgConnection, store_id: &str) -> Result<()> {
    check_store_id(store_id)?;
    sqlx::query("SELECT set_config('redstore.store_id', $1, true)").bind(store_id).execute(conn).await?;
    Ok(())
}

/// Appends an event to `<schema>.outbox` in the caller's transaction with the store's next
/// sequence number, and notifies `redstore_<schema>` listeners on commit. The row lock on the
/// store's sequence row orders the store's commits, so sequences commit without gaps or
/// reordering.
pub async fn append_event(
    conn: &mut PgConnection,
    schema: &'static str,
    store_id: &str,
    payload: Payload,
) -> Result<EventEnvelope> {
    let seq = next_seq(conn, schema, store_id).await?;
    append_event_at(conn, schema, store_id, seq, payload).await
}

/// Takes the store's next sequence number (when the caller needs it before building the event).
pub async fn next_seq(conn: &mut PgConnection, schema: &'static str, store_id: &str) -> Result<u64> {
    let seq: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO {schema}.store_sequences (store_id, last_seq) VALUES ($1, 1)
         ON CONFLICT (store_id) DO UPDATE SET last_seq = {schema}.store_sequences.last_seq + 1
         RETURNING last_seq"
    ))
    .bind(store_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(seq as u64)
}

/// Appends an event with a sequence taken by [`next_seq`] in the same transaction. The outbox row
/// and the notification (sent on commit) are one statement, one round trip.
pub async fn append_event_at(
    conn: &mut PgConnection,
    schema: &'static str,
    store_id: &str,
    seq: u64,
    payload: Payload,
) -> Result<EventEnvelope> {
    insert_event(conn, schema, store_id, seq, payload, true).await
}

/// [`append_event_at`] without the notification in the transaction, for a writer that notifies
/// its stores after its commit ([`notify_committed_soon_many`]) rather than serialise its commit
/// behind every notifying one.
pub async fn append_event_unnotified(
    conn: &mut PgConnection,
    schema: &'static str,
    store_id: &str,
    seq: u64,
    payload: Payload,
) -> Result<EventEnvelope> {
    insert_event(conn, schema, store_id, seq, payload, false).await
}

async fn insert_event(
    conn: &mut PgConnection,
    schema: &'static str,
    store_id: &str,
    seq: u64,
    payload: Payload,
    notify: bool,
) -> Result<EventEnvelope> {
    let event_id = uuid::Uuid::now_v7();
    let now_ms = crate::time::unix_ms(std::time::SystemTime::now());
    let envelope = crate::eventlog::envelope(event_id, store_id, seq, now_ms, payload);
    let insert = format!(
        "INSERT INTO {schema}.outbox (event_id, store_id, store_seq, event_type, occurred_at_ms, body)
         VALUES ($1, $2, $3, $4, $5, $6)"
    );
    let sql = match notify {
        true => format!("WITH appended AS ({insert} RETURNING store_seq) SELECT pg_notify($7, $8) FROM appended"),
        false => insert,
    };
    let mut query = sqlx::query(&sql)
        .bind(event_id)
        .bind(store_id)
        .bind(seq as i64)
        .bind(&envelope.r#type)
        .bind(now_ms)
        .bind(envelope.encode_to_vec());
    if notify {
        query = query.bind(format!("redstore_{schema}")).bind(format!("{store_id}:{seq}"));
    }
    query.execute(&mut *conn).await?;
    Ok(envelope)
}

/// Wakes `redstore_<schema>` listeners for an event committed without a notification (the hot
/// paths' server-side functions append their events so), right after the commit.
///
/// Why not notify in the transaction: PostgreSQL serialises the commits of all transactions that
/// NOTIFY (a database-wide lock held from pre-commit until the commit record is flushed), so each
/// sale's commits would queue behind every other's WAL flush. A notification is a wake-up hint
/// (listeners read the outbox after their own position, watchers refill gaps by sequence, and
/// every consumer sweeps), and this one runs in a transaction of its own that writes nothing and
/// so flushes nothing. The event is committed whatever happens here, so a failure is logged, not
/// returned: listeners find the event on their next wake-up or sweep.
pub async fn notify_committed(pool: &PgPool, schema: &'static str, store_id: &str, seq: u64) {
    notify_committed_many(pool, &[(schema, store_id.to_owned(), seq)]).await;
}

/// [`notify_committed`] for the newest events of several stores and schemas (one commit wrote to
/// several outboxes, or several stores'), in one round trip: a notifying commit takes a lock every
/// other notifying commit of the database waits for, so one for a batch beats one per store.
pub async fn notify_committed_many(pool: &PgPool, events: &[(&'static str, String, u64)]) {
    let channels: Vec<String> = events.iter().map(|(schema, _, _)| format!("redstore_{schema}")).collect();
    let payloads: Vec<String> = events.iter().map(|(_, store_id, seq)| format!("{store_id}:{seq}")).collect();
    let sent = sqlx::query(
        "SELECT pg_notify(u.channel, u.payload) FROM unnest($1::text[], $2::text[]) AS u (channel, payload)",
    )
    .bind(&channels)
    .bind(&payloads)
    .execute(pool)
    .await;
    if let Err(e) = sent {
        crate::warn_throttled!(error = %e, events = ?payloads, "cannot notify listeners of committed events");
    }
}

/// [`notify_committed`] in a task of its own, so that the caller (answering a batch, starting the
/// next) does not wait for a wake-up hint.
pub fn notify_committed_soon(pool: &PgPool, schema: &'static str, store_id: &str, seq: u64) {
    notify_committed_soon_many(pool, vec![(schema, store_id.to_owned(), seq)]);
}

/// [`notify_committed_many`] in a task of its own.
pub fn notify_committed_soon_many(pool: &PgPool, events: Vec<(&'static str, String, u64)>) {
    if events.is_empty() {
        return;
    }
    let pool = pool.clone();
    tokio::spawn(async move { notify_committed_many(&pool, &events).await });
}

/// A store's events in `<schema>.outbox` after a sequence, oldest first. Call inside a
/// transaction scoped to the store.
pub async fn events_after(
    conn: &mut PgConnection,
    schema: &'static str,
    store_id: &str,
    after: u64,
    limit: u32,
) -> Result<Vec<EventEnvelope>> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT store_seq, body FROM {schema}.outbox WHERE store_id = $1 AND store_seq > $2 ORDER BY store_seq LIMIT $3"
    ))
    .bind(store_id)
    .bind(after as i64)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|(seq, body)| {
            outbox_event(*seq, body)
                .map_err(|e| Error::Internal(anyhow::anyhow!("corrupt event in {schema}.outbox: {e}")))
        })
        .collect()
}

/// The event an outbox row holds: its body, with the store sequence of the row's `store_seq`
/// column. A body may leave its sequence out (sales numbers its events in the statement that
/// writes them, and no SQL encodes protocol buffers); one that has it has the same.
pub fn outbox_event(store_seq: i64, body: &[u8]) -> std::result::Result<EventEnvelope, prost::DecodeError> {
    let mut event = EventEnvelope::decode(body)?;
    event.store_seq = store_seq as u64;
    Ok(event)
}

/// The store's newest sequence in `<schema>` (0 when it has none).
pub async fn last_seq(conn: &mut PgConnection, schema: &'static str, store_id: &str) -> Result<u64> {
    let seq: Option<i64> =
        sqlx::query_scalar(&format!("SELECT last_seq FROM {schema}.store_sequences WHERE store_id = $1"))
            .bind(store_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(seq.unwrap_or(0) as u64)
}

/// What an idempotency key says about a request.
pub enum Claim {
    /// First time: do the work, then [`complete`] the key in the same transaction.
    Fresh,
    /// Done before with the same request: answer with this stored response.
    Replay(Vec<u8>),
}

/// Claims `(scope, key)` in the caller's transaction. A concurrent request with the same key
/// waits on the key's unique index until the first commits (then replays its answer) or rolls
/// back (then runs itself). The same key with a different request is ALREADY_EXISTS.
pub async fn claim(conn: &mut PgConnection, scope: &str, key: &str, request: &[u8]) -> Result<Claim> {
    let inserted = sqlx::query(
        "INSERT INTO platform.idempotency_keys (scope, key, request) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(request)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let row = sqlx::query("SELECT request, response FROM platform.idempotency_keys WHERE scope = $1 AND key = $2")
        .bind(scope)
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    let stored_request: Vec<u8> = row.try_get(0)?;
    if stored_request != request {
        return Err(crate::idempotency::key_reused(scope, key));
    }
    let response: Option<Vec<u8>> = row.try_get(1)?;
    response.map(Claim::Replay).ok_or_else(|| crate::idempotency::key_unanswered(scope, key))
}

/// Stores the answer of a claimed key, in the same transaction as the work.
pub async fn complete(conn: &mut PgConnection, scope: &str, key: &str, response: &impl prost::Message) -> Result<()> {
    sqlx::query("UPDATE platform.idempotency_keys SET response = $3 WHERE scope = $1 AND key = $2")
        .bind(scope)
        .bind(key)
        .bind(response.encode_to_vec())
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes expired keys and scan ids of every store (the table has no row-level security: a
/// key's scope names its store), at most [`retention::CHUNK`]; how many it deleted.
pub async fn expire_keys(pool: &PgPool, retention: &Retention) -> Result<u64> {
    let now = std::time::SystemTime::now();
    let (keys, scans) = (retention.keys_before_ms(now), retention.scans_before_ms(now));
    let [scan, cart] = SCAN_SCOPES;
    let deleted = sqlx::query(
        "WITH cutoff AS (SELECT to_timestamp($1::float8 / 1000) AS keys, to_timestamp($2::float8 / 1000) AS scans)
         DELETE FROM platform.idempotency_keys WHERE ctid IN (
             SELECT k.ctid FROM platform.idempotency_keys k, cutoff c
             WHERE k.created_at < greatest(c.keys, c.scans)
               AND CASE WHEN k.scope LIKE $3 OR k.scope LIKE $4 THEN k.created_at < c.scans
                        ELSE k.created_at < c.keys END
             LIMIT $5)",
    )
    .bind(keys)
    .bind(scans)
    .bind(scan)
    .bind(cart)
    .bind(i64::from(retention::CHUNK))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(deleted)
}

/// Runs one chunk of a store's retention sweep: `sql` in a transaction scoped to the store, with
/// `$1` the store, `$2` the cut-off in unix milliseconds and `$3` the chunk size; how many rows it
/// changed.
pub async fn expire_in_store(pool: &PgPool, store_id: &str, sql: &'static str, before_ms: i64) -> Result<u64> {
    let mut tx = store_tx(pool, store_id).await?;
    let changed = sqlx::query(sql)
        .bind(store_id)
        .bind(before_ms)
        .bind(i64::from(retention::CHUNK))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(changed)
}

/// A store whose sequence head is past a consumer's position (see [`stores_behind`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behind {
    pub store_id: String,
    /// The store's newest sequence in the schema.
    pub head: u64,
    /// The consumer's offset for the store (0 when it has none).
    pub position: u64,
}

/// The stores whose `schema` (`inventory` or `sales`) sequence head is past `group`'s offset in
/// `platform.consumer_offsets` (topic = the schema), in one statement across the chain: the
/// stores a consumer has work in, and no others (`platform.stores_behind`, platform migration
/// 0003; it reads one head row per store, under its owner's rights, and returns ids and numbers
/// only). What every chain-wide safety sweep starts from, instead of a transaction per store.
pub async fn stores_behind(pool: &PgPool, schema: &str, group: &str) -> Result<Vec<Behind>> {
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT o_store_id, o_head, o_position FROM platform.stores_behind($1, $2)")
            .bind(schema)
            .bind(group)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(store_id, head, position)| Behind {
            store_id,
            head: head.max(0) as u64,
            position: position.max(0) as u64,
        })
        .collect())
}

/// The newest sequence of each of `stores` in `schema` (`inventory` or `sales`) that has one, in
/// one statement (`platform.store_heads`, platform migration 0003; ids and numbers only).
pub async fn store_heads(
    pool: &PgPool,
    schema: &str,
    stores: &[String],
) -> Result<std::collections::HashMap<String, u64>> {
    if stores.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT o_store_id, o_head FROM platform.store_heads($1, $2)")
        .bind(schema)
        .bind(stores)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(store, head)| (store, head.max(0) as u64)).collect())
}

/// Moves `group`'s offsets (topic `topic`) forward to the given sequences, for many stores in one
/// statement (never backwards). For a consumer whose real position lives elsewhere (the stock
/// cache's in Redis), it records how far a sweep found the store caught up, so that
/// [`stores_behind`] stops naming it. Commits without waiting for the WAL flush: a mark lost in a
/// crash only makes a sweep look at the store again.
pub async fn advance_offsets(pool: &PgPool, group: &str, topic: &str, positions: &[(String, u64)]) -> Result<()> {
    if positions.is_empty() {
        return Ok(());
    }
    let stores: Vec<&str> = positions.iter().map(|(s, _)| s.as_str()).collect();
    let seqs: Vec<i64> = positions.iter().map(|(_, seq)| (*seq).min(i64::MAX as u64) as i64).collect();
    let mut tx = begin(pool, "BEGIN; SELECT set_config('synchronous_commit', 'off', true)").await?;
    sqlx::query(
        "INSERT INTO platform.consumer_offsets AS c (group_name, topic, store_id, last_seq)
         SELECT $1, $2, s, q FROM unnest($3::TEXT[], $4::BIGINT[]) AS u (s, q)
         ON CONFLICT (group_name, topic, store_id) DO UPDATE SET last_seq = greatest(c.last_seq, excluded.last_seq)",
    )
    .bind(group)
    .bind(topic)
    .bind(&stores)
    .bind(&seqs)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Decodes a replayed answer.
pub fn replay<T: prost::Message + Default>(stored: &[u8]) -> Result<T> {
    T::decode(stored).map_err(|e| Error::Internal(anyhow::anyhow!("stored idempotent answer is corrupt: {e}")))
}

/// Throw-away databases for tests: each test gets its own, migrated as the admin, used as the
/// application role (so row-level security is in force), and dropped afterwards.
pub mod scratch {
    use sqlx::error::BoxDynError;
    use sqlx::migrate::{Migration, MigrationSource, Migrator};

    use super::*;

    /// Where tests find PostgreSQL as an admin; `REDSTORE_TEST_PG_ADMIN_URL` overrides.
    pub fn admin_url() -> String {
        std::env::var("REDSTORE_TEST_PG_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
    }

    /// `url` with its database replaced by `db`.
    pub fn with_database(url: &str, db: &str) -> String {
        match url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{db}"),
            None => format!("{url}/{db}"),
        }
    }

    /// `schema` with only its migrations up to `version`: a database as an older release left it.
    /// Leaked, to be `'static` like every [`PgSchema`]'s: for tests.
    pub async fn up_to(schema: &PgSchema, version: i64) -> anyhow::Result<&'static PgSchema> {
        #[derive(Debug)]
        struct Listed(Vec<Migration>);
        impl MigrationSource<'static> for Listed {
            fn resolve(self) -> futures::future::BoxFuture<'static, std::result::Result<Vec<Migration>, BoxDynError>> {
                Box::pin(async move { Ok(self.0) })
            }
        }
        let older = schema.migrator.iter().filter(|m| m.version <= version).cloned().collect();
        let migrator = Migrator::new(Listed(older)).await?;
        Ok(Box::leak(Box::new(PgSchema { name: schema.name, migrator: Box::leak(Box::new(migrator)) })))
    }

    pub struct ScratchDb {
        pub name: String,
        /// Connection URL as the admin (migrations, test set-up that must bypass RLS).
        pub admin_url: String,
        /// Connection URL as the application role.
        pub app_url: String,
    }

    impl ScratchDb {
        /// Creates a fresh database that nothing has migrated.
        pub async fn empty() -> anyhow::Result<Self> {
            let admin = admin_url();
            let name = format!("rs_test_{}", uuid::Uuid::now_v7().simple());
            let server = connect(&admin, 1, Duration::from_secs(10)).await?;
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&server).await?;
            server.close().await;
            let admin_url = with_database(&admin, &name);
            let app_url = with_database(&admin.replacen("postgres@", &format!("{APP_ROLE}@"), 1), &name);
            Ok(Self { name, admin_url, app_url })
        }

        /// Creates a fresh database and applies the platform's and `schemas`' migrations to it.
        pub async fn create(schemas: &[&PgSchema]) -> anyhow::Result<Self> {
            let db = Self::empty().await?;
            let pool = connect(&db.admin_url, 2, Duration::from_secs(10)).await?;
            let migrated = migrate(&pool, schemas).await;
            pool.close().await;
            if let Err(e) = migrated {
                let _ = db.drop_db().await;
                return Err(e);
            }
            Ok(db)
        }

        /// Drops the database (closing whatever is still connected to it).
        pub async fn drop_db(self) -> anyhow::Result<()> {
            let server = connect(&admin_url(), 1, Duration::from_secs(10)).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&server).await?;
            server.close().await;
            Ok(())
        }
    }
}
