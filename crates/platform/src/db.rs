//! The embedded database: one SQLite file in WAL mode.
//!
//! Every write runs on one writer thread that commits in groups: it takes every job waiting in its
//! queue, runs each inside its own SAVEPOINT (a failed job rolls back alone and leaves no trace),
//! and commits them all with one fsync. Readers use a small pool of read-only connections, which
//! WAL lets run beside the writer. Each committed batch of events is published after the commit,
//! so nothing is ever announced that is not durable.

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
const READERS: usize = 4;

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

type Done = Box<dyn FnOnce(std::result::Result<(), Arc<anyhow::Error>>) + Send>;
type Job = Box<dyn FnOnce(&mut WriteCtx<'_>) -> (bool, Done) + Send>;

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    readers: Mutex<Vec<Connection>>,
    commits: broadcast::Sender<Arc<[Committed]>>,
    head: watch::Sender<i64>,
}

/// Handle to the embedded database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(())
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies `migrations`.
    pub fn open(path: &Path, migrations: &[&[Migration]]) -> anyhow::Result<Self> {
        let conn = Connection::open(path).with_context(|| format!("cannot open database {}", path.display()))?;
        configure(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before any client hears "done". Group commit pays for it.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // A background thread (`checkpoint_loop`) copies the log into the database continuously,
        // so the writer's own automatic checkpoint, which lets the log restart from its
        // beginning, finds little left to do.
        conn.pragma_update(None, "wal_autocheckpoint", 2000)?;
        migrate(&conn, migrations)?;
        let head: i64 = conn.query_row("SELECT COALESCE(MAX(position), 0) FROM event_log", [], |r| r.get(0))?;

        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r =
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
            configure(&r)?;
            readers.push(r);
        }
        let (commits, _) = broadcast::channel(4096);
        let (head, _) = watch::channel(head);
        let (tx, rx) = mpsc::channel::<Job>();
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            writer: Mutex::new(Some(tx)),
            readers: Mutex::new(readers),
            commits,
            head,
        });
        let publisher = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("redstore-db-writer".into())
            .spawn(move || writer_loop(conn, rx, publisher))
            .context("cannot start the database writer thread")?;
        let checkpointer = Connection::open(path)?;
        configure(&checkpointer)?;
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
    /// rolled back and its events are never published.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |ctx| {
            let result = f(ctx);
            let ok = result.is_ok();
            let done: Done = Box::new(move |committed| {
                let result = match committed {
                    Ok(()) => result,
                    Err(e) => Err(Error::Internal(anyhow::anyhow!("commit failed: {e:#}"))),
                };
                let _ = tx.send(result);
            });
            (ok, done)
        });
        let sender = self.inner.writer.lock().clone();
        let sender =
            sender.ok_or_else(|| Error::Unavailable("the database is closed; the server is shutting down".into()))?;
        sender.send(job).map_err(|_| Error::Unavailable("the database writer has stopped".into()))?;
        rx.await.map_err(|_| Error::Internal(anyhow::anyhow!("the database writer dropped a job (it panicked)")))?
    }

    /// Runs `f` on a read-only connection (a consistent snapshot for its duration when `f` opens a
    /// transaction; each statement is consistent on its own otherwise).
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.readers.lock().pop();
            let conn = match conn {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &inner.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    configure(&c)?;
                    c
                }
            };
            let result = f(&conn);
            let mut pool = inner.readers.lock();
            if pool.len() < READERS {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("read task failed: {e}")))?
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
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            service TEXT NOT NULL, version INTEGER NOT NULL, applied_at_ms INTEGER NOT NULL,
            PRIMARY KEY (service, version))",
    )?;
    let all = std::iter::once(crate::PLATFORM_MIGRATIONS).chain(sets.iter().copied());
    for set in all {
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

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>, inner: std::sync::Weak<Inner>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (dones, events, result) = run_group(&conn, &mut batch);
        let result = result.map_err(Arc::new);
        if result.is_ok()
            && !events.is_empty()
            && let Some(inner) = inner.upgrade()
        {
            let head = events.last().map_or(0, |e| e.position);
            let _ = inner.commits.send(events.into());
            inner.head.send_replace(head);
        }
        for done in dones {
            done(result.clone());
        }
    }
    tracing::debug!("database writer stopped");
}

fn run_group(conn: &Connection, batch: &mut Vec<Job>) -> (Vec<Done>, Vec<Committed>, anyhow::Result<()>) {
    let mut dones = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let err = anyhow::Error::new(e).context("cannot begin a write transaction");
        // Run nothing; every job hears the error.
        for job in batch.drain(..) {
            let mut ctx = WriteCtx { conn, now: SystemTime::now(), events: Vec::new() };
            let _ = exec(conn, "SAVEPOINT job");
            let (_, done) = job(&mut ctx);
            let _ = exec(conn, "ROLLBACK TO job");
            dones.push(done);
        }
        return (dones, events, Err(err));
    }
    for job in batch.drain(..) {
        let now = SystemTime::now();
        let mut ctx = WriteCtx { conn, now, events: Vec::new() };
        let outcome = exec(conn, "SAVEPOINT job").map_err(anyhow::Error::new).and_then(|()| {
            std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut ctx)))
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
    }
    match exec(conn, "COMMIT") {
        Ok(()) => (dones, events, Ok(())),
        Err(e) => {
            let _ = exec(conn, "ROLLBACK");
            (dones, Vec::new(), Err(anyhow::Error::new(e).context("commit failed")))
        }
    }
}
