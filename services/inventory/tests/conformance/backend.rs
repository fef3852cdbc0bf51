//! The backends under test: a fresh embedded database in a temporary directory, or a fresh
//! PostgreSQL database (dropped afterwards, even when the test panics).

use std::sync::Arc;
use std::time::Duration;

use redstore_inventory::pg::{PG_SCHEMA, PgInventory};
use redstore_inventory::{InventoryStore, SQLITE_MIGRATIONS, SqliteInventory};
use redstore_platform::Db;
use redstore_platform::pg::scratch::ScratchDb;
use redstore_platform::pg::{self, PgPool};

pub struct Backend {
    store: Arc<dyn InventoryStore>,
    kind: Kind,
}

enum Kind {
    Sqlite {
        db: Db,
        _dir: tempfile::TempDir,
    },
    Postgres {
        /// Connected as the application role.
        pool: PgPool,
        /// `None` once dropped.
        scratch: Option<ScratchDb>,
    },
}

impl Backend {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = Db::open(&dir.path().join("redstore.db"), &[SQLITE_MIGRATIONS]).expect("open the embedded database");
        let store: Arc<dyn InventoryStore> = SqliteInventory::new(db.clone());
        Self { store, kind: Kind::Sqlite { db, _dir: dir } }
    }

    pub async fn postgres() -> Self {
        let scratch = ScratchDb::create(&[&PG_SCHEMA])
            .await
            .expect("create a scratch PostgreSQL database (is PostgreSQL running at 127.0.0.1:5432?)");
        let pool = match pg::connect(&scratch.app_url, 40, Duration::from_secs(10)).await {
            Ok(pool) => pool,
            Err(e) => {
                let _ = scratch.drop_db().await;
                panic!("connect as the application role: {e:#}");
            }
        };
        let store: Arc<dyn InventoryStore> = PgInventory::new(pool.clone());
        Self { store, kind: Kind::Postgres { pool, scratch: Some(scratch) } }
    }

    pub fn store(&self) -> Arc<dyn InventoryStore> {
        self.store.clone()
    }

    /// The application role's pool (PostgreSQL only).
    pub fn app_pool(&self) -> &PgPool {
        match &self.kind {
            Kind::Postgres { pool, .. } => pool,
            Kind::Sqlite { .. } => panic!("not a PostgreSQL backend"),
        }
    }

    /// The scratch database (PostgreSQL only).
    pub fn scratch(&self) -> &ScratchDb {
        match &self.kind {
            Kind::Postgres { scratch: Some(scratch), .. } => scratch,
            _ => panic!("not a PostgreSQL backend"),
        }
    }

    /// Closes the backend and removes its database.
    pub async fn finish(mut self) {
        match &mut self.kind {
            Kind::Sqlite { db, .. } => db.close(),
            Kind::Postgres { pool, scratch } => {
                pool.close().await;
                if let Some(scratch) = scratch.take() {
                    scratch.drop_db().await.expect("drop the scratch database");
                }
            }
        }
    }
}

impl Drop for Backend {
    /// A test that panicked never reached `finish`: drop its scratch database anyway, on a thread
    /// of its own (this may run inside the test's runtime, which must not block on itself).
    fn drop(&mut self) {
        if let Kind::Postgres { scratch, .. } = &mut self.kind
            && let Some(scratch) = scratch.take()
        {
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(scratch.drop_db())
            })
            .join();
        }
    }
}
