//! The embedded database: one SQLite file in WAL mode.
//!
//! Every write runs on one writer thread that commits in groups: it takes every job waiting in its
//! queue, runs each inside its own SAVEPOINT (a failed job rolls back alone and leaves no trace),
//! and commits them all with one fsync. Reads run on a few reader threads, each with its own
//! read-only connection (more reads wait in a queue), which WAL lets run beside the writer. Each
//! committed batch of events is published after the commit, so nothing is ever announced that is
//! not durable.
//!
//! Another program may hold the database's write lock (an operator's `sqlite3` shell, a backup
//! tool). The writer then waits up to the busy timeout, answers the waiting writes UNAVAILABLE with
//! a retry hint (nothing of them was written), reports itself unwritable (health turns
//! NOT_SERVING) and keeps trying, and takes writes again as soon as the lock is released. Its queue
//! is bounded: past it, writes are refused with RESOURCE_EXHAUSTED rather than held in memory.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use parking_lot::Mutex;
use redstore_proto::events::EventEnvelope;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{broadcast, oneshot, watch};

use crate::error::{Error, Result};

/// Most jobs one commit takes; bounds the latency a long queue adds to its first job.
const MAX_GROUP: usize = 512;
/// Reader threads, each with its own read-only connection: reads beyond them wait in a queue
/// rather than each taking a thread and opening a connection of its own (thousands of live
/// streams opening at once would).
const READERS: usize = 4;
/// How often an unwritable database is tried again while no write is waiting.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long a write waits for the lock while the database is known to be unwritable: callers
/// hear at once instead of each waiting out the whole busy timeout.
const UNWRITABLE_WAIT: Duration = Duration::from_millis(100);
/// How long a caller refused for a full queue is told to wait.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(200);

/// How the embedded database behaves under contention.
#[derive(Clone, Copy, Debug)]
pub struct DbOptions {
    /// How long a write waits for a lock held by another program (a backup tool, an operator's
    /// `sqlite3` shell) before its callers hear UNAVAILABLE.
    pub busy_timeout: Duration,
    /// Most writes waiting for the writer; more are refused with RESOURCE_EXHAUSTED.
    pub write_queue: usize,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self { busy_timeout: Duration::from_secs(5), write_queue: 4096 }
    }
}

/// Which stream of the event log an event belongs to; each has its own per-store sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Stock changes: what terminals watch.
    Inventory,
    /// Completed sales and refunds: what analytics consumes.
    Sales,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inventory => "inventory",
            Self::Sales => "sales",
        }
    }
}

/// An event that has been committed to the log.
#[derive(Clone, Debug)]
pub struct Committed {
    pub topic: Topic,
    /// Position in the whole log (commit order).
    pub position: i64,
    pub envelope: Arc<EventEnvelope>,
}

/// A schema migration of one service; applied once, in version order, never edited once landed.
pub struct Migration {
    pub service: &'static str,
    pub version: u32,
    pub sql: &'static str,
}

/// What a write job sees: the connection inside the group's transaction, the clock, and the
/// events it appends (published only once the group commits).
pub struct WriteCtx<'a> {
    pub conn: &'a Connection,
    pub now: SystemTime,
    pub(crate) events: Vec<Committed>,
}

/// Why a group of writes was not committed; every write of the group hears it.
#[derive(Clone, Debug)]
struct GroupFailed {
    message: String,
}

impl GroupFailed {
    fn to_error(&self) -> Error {
        Error::Unavailable { message: self.message.clone(), retry_after: crate::error::DEFAULT_RETRY_AFTER }
    }
}

/// Answers a job's caller once its group's fate is known.
type Done = Box<dyn FnOnce(std::result::Result<(), &GroupFailed>) + Send>;

/// A write waiting for the writer.
trait Job: Send {
    /// Runs it inside the group's transaction: whether it succeeded, and how to answer its caller.
    fn run(self: Box<Self>, ctx: &mut WriteCtx<'_>) -> (bool, Done);
    /// Answers its caller without running it: nothing of it was written.
    fn refuse(self: Box<Self>, err: Error);
}

struct WriteJob<T, F> {
    f: F,
    tx: oneshot::Sender<Result<T>>,
    /// The caller's span: what the write records (its events) continues the caller's trace.
    span: tracing::Span,
}

impl<T, F> Job for WriteJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut WriteCtx<'_>) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, ctx: &mut WriteCtx<'_>) -> (bool, Done) {
        let WriteJob { f, tx, span } = *self;
        let result = span.in_scope(|| f(ctx));
        let ok = result.is_ok();
        let done: Done = Box::new(move |group| {
            let _ = tx.send(match group {
                Ok(()) => result,
                Err(failed) => Err(failed.to_error()),
            });
        });
        (ok, done)
    }

    fn refuse(self: Box<Self>, err: Error) {
        let _ = self.tx.send(Err(err));
    }
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::SyncSender<Box<dyn Job>>>>,
    write_queue: usize,
    /// Reads waiting for a reader thread; the threads stop when the database is dropped.
    reads: mpsc::Sender<ReadJob>,
    commits: broadcast::Sender<Arc<[Committed]>>,
    head: watch::Sender<i64>,
    writable: watch::Sender<bool>,
}

/// Handle to the embedded database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

fn configure(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(())
}

/// A read waiting for a reader thread; it answers its caller itself.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// A reader thread: runs queued reads on its connection until the database is dropped.
fn read_loop(conn: &Connection, queued: &Mutex<mpsc::Receiver<ReadJob>>) {
    loop {
        // The lock is held while waiting: one idle reader waits for the queue, the others for it.
        let job = queued.lock().recv();
        let Ok(job) = job else { break };
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(conn))).is_err() {
            tracing::error!("a database read panicked");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
}

fn open_reader(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    configure(&conn, busy_timeout)?;
    Ok(conn)
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies `migrations`.
    pub fn open(path: &Path, migrations: &[&[Migration]]) -> anyhow::Result<Self> {
        Self::open_with(path, migrations, DbOptions::default())
    }

    /// [`Db::open`] with explicit options.
    pub fn open_with(path: &Path, migrations: &[&[Migration]], options: DbOptions) -> anyhow::Result<Self> {
        let busy = options.busy_timeout;
        let conn = Connection::open(path).with_context(|| format!("cannot open database {}", path.display()))?;
        configure(&conn, busy)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before any client hears "done". Group commit pays for it.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // A background thread (`checkpoint_loop`) copies the log into the database continuously,
        // so the writer's own automatic checkpoint, which lets the log restart from its
        // beginning, finds little left to do.
        conn.pragma_update(None, "wal_autocheckpoint", 2000)?;
        // Every job runs in a SAVEPOINT, and SQLite keeps the pages a savepoint changes in a
        // sub-journal, which spills to a temporary file past 64 KiB: a group of jobs touching many
        // stores' pages wrote it to disk, and the writer spent its time there. In memory, it is
        // dropped with the group.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        migrate(&conn, migrations)?;
        let head: i64 = conn.query_row("SELECT COALESCE(MAX(position), 0) FROM event_log", [], |r| r.get(0))?;

        let (reads, queued) = mpsc::channel::<ReadJob>();
        let queued = Arc::new(Mutex::new(queued));
        for n in 0..READERS {
            let (conn, queued) = (open_reader(path, busy)?, queued.clone());
            std::thread::Builder::new()
                .name(format!("redstore-db-reader-{n}"))
                .spawn(move || read_loop(&conn, &queued))
                .context("cannot start a database reader thread")?;
        }
        let (commits, _) = broadcast::channel(4096);
        let (head, _) = watch::channel(head);
        let (writable, _) = watch::channel(true);
        let write_queue = options.write_queue.max(1);
        let (tx, rx) = mpsc::sync_channel::<Box<dyn Job>>(write_queue);
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            writer: Mutex::new(Some(tx)),
            write_queue,
            reads,
            commits,
            head,
            writable,
        });
        let publisher = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("redstore-db-writer".into())
            .spawn(move || Writer { conn, busy_timeout: busy, writable: true }.run(rx, publisher))
            .context("cannot start the database writer thread")?;
        let checkpointer = Connection::open(path)?;
        configure(&checkpointer, busy)?;
        let watched = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("redstore-db-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, watched))
            .context("cannot start the database checkpoint thread")?;
        Ok(Self { inner })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in the writer's next group transaction. If `f` fails, everything it wrote is
    /// rolled back and its events are never published. When the database cannot be written (its
    /// lock held by another program past the busy timeout, a failed commit) nothing of `f` is
    /// written and the caller hears UNAVAILABLE; when too many writes wait already,
    /// RESOURCE_EXHAUSTED.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(WriteJob { f, tx, span: crate::trace::span_to_carry() });
        let sender = self.inner.writer.lock().clone();
        let sender = sender.ok_or_else(|| Error::unavailable("the database is closed; the server is shutting down"))?;
        sender.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => Error::exhausted(
                format!("{} writes are waiting for the database already; retry shortly", self.inner.write_queue),
                Some(QUEUE_FULL_RETRY),
            ),
            mpsc::TrySendError::Disconnected(_) => Error::unavailable("the database writer has stopped"),
        })?;
        rx.await.map_err(|_| Error::Internal(anyhow::anyhow!("the database writer dropped a job (it panicked)")))?
    }

    /// Whether writes can be committed now; `false` while another program holds the database's
    /// lock past the busy timeout, or commits fail. Health reports NOT_SERVING meanwhile.
    pub fn watch_writable(&self) -> watch::Receiver<bool> {
        self.inner.writable.subscribe()
    }

    /// Runs `f` on a read-only connection (a consistent snapshot for its duration when `f` opens a
    /// transaction; each statement is consistent on its own otherwise). Reads run on a few
    /// reader threads; more wait in their queue, holding no thread and no connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.inner.reads.send(job).map_err(|_| Error::unavailable("the database's readers have stopped"))?;
        rx.await.map_err(|_| Error::Internal(anyhow::anyhow!("a database read panicked")))?
    }

    /// Every committed batch of events, in commit order. A receiver that lags must re-read the log.
    pub fn subscribe_commits(&self) -> broadcast::Receiver<Arc<[Committed]>> {
        self.inner.commits.subscribe()
    }

    /// The position of the newest committed event; changes after every commit that appended one.
    pub fn watch_head(&self) -> watch::Receiver<i64> {
        self.inner.head.subscribe()
    }

    /// Stops accepting writes; jobs already queued still commit.
    pub fn close(&self) {
        self.inner.writer.lock().take();
    }
}

fn migrate(conn: &Connection, sets: &[&[Migration]]) -> anyhow::Result<()> {
    apply_migrations(conn, std::iter::once(crate::PLATFORM_MIGRATIONS).chain(sets.iter().copied()))
}

/// Applies, in order, each migration of `sets` not applied yet. [`Db::open`] applies the
/// platform's and the services' own; a test of an upgrade applies the older ones alone first.
pub fn apply_migrations<'a>(conn: &Connection, sets: impl Iterator<Item = &'a [Migration]>) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            service TEXT NOT NULL, version INTEGER NOT NULL, applied_at_ms INTEGER NOT NULL,
            PRIMARY KEY (service, version))",
    )?;
    for set in sets {
        for m in set {
            let applied: bool = conn.query_row(
                "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE service = ?1 AND version = ?2)",
                rusqlite::params![m.service, m.version],
                |r| r.get(0),
            )?;
            if applied {
                continue;
            }
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(m.sql).with_context(|| format!("migration {} v{} failed", m.service, m.version))?;
            tx.execute(
                "INSERT INTO schema_migrations (service, version, applied_at_ms) VALUES (?1, ?2, ?3)",
                rusqlite::params![m.service, m.version, crate::time::unix_ms(SystemTime::now())],
            )?;
            tx.commit()?;
            tracing::info!(service = m.service, version = m.version, "migration applied");
        }
    }
    Ok(())
}

/// Copies the write-ahead log into the database file in the background (PASSIVE: it never blocks
/// the writer or readers), so commits rarely pay for a checkpoint. Stops when the database is
/// dropped or closed.
fn checkpoint_loop(conn: Connection, inner: std::sync::Weak<Inner>) {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        match inner.upgrade() {
            Some(inner) if inner.writer.lock().is_some() => {}
            _ => break,
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "wal checkpoint failed");
        }
    }
    // A last full checkpoint leaves a compact database behind.
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// The writer thread's connection and what it knows of the database's state.
struct Writer {
    conn: Connection,
    busy_timeout: Duration,
    /// Whether the last attempt to begin or commit succeeded.
    writable: bool,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Box<dyn Job>>, inner: std::sync::Weak<Inner>) {
        let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
        loop {
            // While the database cannot be written, it is tried again now and then even when no
            // write waits, so health turns SERVING again as soon as the lock is released.
            let first = if self.writable {
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            } else {
                match rx.recv_timeout(PROBE_INTERVAL) {
                    Ok(job) => job,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if self.begin().is_ok() {
                            let _ = exec(&self.conn, "ROLLBACK");
                        }
                        self.report(&inner);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            batch.push(first);
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            metrics::histogram!("redstore_write_batch_size", "writer" => "embedded").record(batch.len() as f64);
            let (dones, events, result) = self.run_group(&mut batch);
            self.report(&inner);
            if result.is_ok()
                && !events.is_empty()
                && let Some(inner) = inner.upgrade()
            {
                let head = events.last().map_or(0, |e| e.position);
                let _ = inner.commits.send(events.into());
                inner.head.send_replace(head);
            }
            for done in dones {
                done(result.as_ref().map(|_| ()));
            }
        }
        tracing::debug!("database writer stopped");
    }

    /// Publishes whether the database is writable, logging each change once.
    fn report(&self, inner: &std::sync::Weak<Inner>) {
        let Some(inner) = inner.upgrade() else { return };
        let changed = inner.writable.send_if_modified(|w| std::mem::replace(w, self.writable) != self.writable);
        match (changed, self.writable) {
            (true, true) => tracing::info!("the database is writable again"),
            (true, false) => tracing::error!(
                "the database cannot be written (another program holds its lock, or commits fail); \
                 writes are refused with UNAVAILABLE until it can"
            ),
            _ => {}
        }
    }

    /// Begins the group's transaction. A transaction left open by anything (SQLite rolls some
    /// errors back by itself, others not) is rolled back first, so no job ever runs in a
    /// transaction it does not belong to.
    fn begin(&mut self) -> std::result::Result<(), GroupFailed> {
        if !self.conn.is_autocommit() {
            tracing::warn!("a write transaction was left open; rolling it back");
            let _ = exec(&self.conn, "ROLLBACK");
        }
        // Known unwritable: try briefly, so waiting callers hear at once.
        let wait = if self.writable { self.busy_timeout } else { UNWRITABLE_WAIT.min(self.busy_timeout) };
        let _ = self.conn.busy_timeout(wait);
        let begun = exec(&self.conn, "BEGIN IMMEDIATE");
        let _ = self.conn.busy_timeout(self.busy_timeout);
        match begun {
            Ok(()) => {
                self.writable = true;
                Ok(())
            }
            Err(e) => {
                self.writable = false;
                tracing::debug!(error = %e, "cannot begin a write transaction");
                Err(GroupFailed { message: unwritable_message(&e) })
            }
        }
    }

    fn run_group(
        &mut self,
        batch: &mut Vec<Box<dyn Job>>,
    ) -> (Vec<Done>, Vec<Committed>, std::result::Result<(), GroupFailed>) {
        if let Err(failed) = self.begin() {
            // Nothing runs: no transaction is open, and every job hears why.
            for job in batch.drain(..) {
                job.refuse(failed.to_error());
            }
            return (Vec::new(), Vec::new(), Err(failed));
        }
        let conn = &self.conn;
        let mut dones = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let mut jobs = batch.drain(..);
        for job in jobs.by_ref() {
            let now = SystemTime::now();
            let mut ctx = WriteCtx { conn, now, events: Vec::new() };
            let outcome = exec(conn, "SAVEPOINT job").map_err(anyhow::Error::new).and_then(|()| {
                std::panic::catch_unwind(AssertUnwindSafe(|| job.run(&mut ctx)))
                    .map_err(|_| anyhow::anyhow!("a write job panicked"))
            });
            match outcome {
                Ok((true, done)) => {
                    let _ = exec(conn, "RELEASE job");
                    events.append(&mut ctx.events);
                    dones.push(done);
                }
                Ok((false, done)) => {
                    let _ = exec(conn, "ROLLBACK TO job");
                    let _ = exec(conn, "RELEASE job");
                    dones.push(done);
                }
                Err(e) => {
                    // The job's sender was dropped with it; its caller hears that the writer dropped it.
                    tracing::error!(error = %e, "write job failed");
                    let _ = exec(conn, "ROLLBACK TO job");
                    let _ = exec(conn, "RELEASE job");
                }
            }
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back by itself (a full disk, an I/O error):
                // what ran before is gone, and nothing more may run outside a transaction.
                let failed = GroupFailed {
                    message: "the database could not write (disk full or an I/O error); nothing was written".into(),
                };
                tracing::error!("the group's transaction was rolled back by the database");
                self.writable = false;
                for job in jobs {
                    job.refuse(failed.to_error());
                }
                return (dones, Vec::new(), Err(failed));
            }
        }
        drop(jobs);
        match exec(conn, "COMMIT") {
            Ok(()) => (dones, events, Ok(())),
            Err(e) => {
                tracing::error!(error = %e, "commit failed; the group was rolled back");
                let _ = exec(conn, "ROLLBACK");
                self.writable = false;
                (dones, Vec::new(), Err(GroupFailed { message: unwritable_message(&e) }))
            }
        }
    }
}

/// What callers hear when the database cannot take their writes: no SQLite detail beyond the kind.
fn unwritable_message(e: &rusqlite::Error) -> String {
    if crate::error::lock_held(e) {
        "the database is locked by another program (a backup or a shell?); nothing was written, retry shortly".into()
    } else {
        "the database cannot be written right now; nothing was written, retry shortly".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shop's database from before the platform's third migration: its keys still answer and
    /// its events are still read, by position and by store.
    #[tokio::test]
    async fn an_older_database_keeps_its_keys_and_events_through_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redstore.db");
        {
            let conn = Connection::open(&path).unwrap();
            apply_migrations(&conn, std::iter::once(&crate::PLATFORM_MIGRATIONS[..2])).unwrap();
            conn.execute_batch(
                "INSERT INTO idempotency_keys VALUES ('sales.checkout:s1', 'k1', x'01', x'02', 5);
                 INSERT INTO event_log (topic, store_id, store_seq, event_id, event_type, occurred_at_ms, body)
                     VALUES ('inventory', 's1', 1, 'e1', 'inventory.changed', 5, x''),
                            ('sales', 's1', 1, 'e2', 'sale.completed', 5, x''),
                            ('inventory', 's1', 2, 'e3', 'inventory.changed', 5, x'');",
            )
            .unwrap();
        }
        let db = Db::open(&path, &[]).unwrap();
        let (key, positions, resumed) = db
            .read(|c| {
                let key: Vec<u8> = c.query_row(
                    "SELECT response FROM idempotency_keys WHERE scope = 'sales.checkout:s1' AND key = 'k1'",
                    [],
                    |r| r.get(0),
                )?;
                let positions = crate::eventlog::topic_events_after(c, Topic::Sales, 0, 10)?.len();
                let resumed = crate::eventlog::inventory_events_after(c, "s1", 1, 10)?.len();
                Ok((key, positions, resumed))
            })
            .await
            .unwrap();
        assert_eq!((key, positions, resumed), (vec![2], 1, 1));
    }
}
