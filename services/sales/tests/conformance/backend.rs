//! The backends under test, each seeded with the demo chain: SqliteSales and SqliteInventory on
//! one embedded database; PgSales on a fresh PostgreSQL database (dropped afterwards, even when
//! the test panics) with SqliteInventory on an embedded database of its own (the saga); or PgSales
//! and PgInventory on one fresh PostgreSQL database (group commit).

use std::sync::Arc;
use std::time::Duration;

use redstore_inventory::pg::PgInventory;
use redstore_inventory::{InventoryStore, SqliteInventory};
use redstore_platform::Db;
use redstore_platform::pg::scratch::ScratchDb;
use redstore_platform::pg::{self, PgPool};
use redstore_proto::inventory::inventory_service_server::InventoryServiceServer;
use redstore_sales::pg::{PG_SCHEMA, PgSales};
use redstore_sales::{SalesStore, SqliteSales};

pub struct Backend {
    sales: Arc<dyn SalesStore>,
    inventory: Arc<dyn InventoryStore>,
    /// The inventory's embedded database (shared with sales in the SQLite shape; none when
    /// inventory is on PostgreSQL too).
    db: Option<Db>,
    _dir: tempfile::TempDir,
    pg: Option<Pg>,
}

struct Pg {
    /// Connected as the application role.
    pool: PgPool,
    sales: Arc<PgSales>,
    /// `None` once dropped.
    scratch: Option<ScratchDb>,
}

async fn seeded_db(dir: &tempfile::TempDir, migrations: &[&[redstore_platform::Migration]]) -> Db {
    let db = Db::open(&dir.path().join("redstore.db"), migrations).expect("open the embedded database");
    redstore_inventory::seed::seed_demo(&db).await.expect("seed the demo chain");
    db
}

/// A fresh PostgreSQL database with these migrations, and a pool on it as the application role.
async fn scratch_db(schemas: &[&pg::PgSchema]) -> (ScratchDb, PgPool) {
    let scratch = ScratchDb::create(schemas)
        .await
        .expect("create a scratch PostgreSQL database (is PostgreSQL running at 127.0.0.1:5432?)");
    match pg::connect(&scratch.app_url, 16, Duration::from_secs(30)).await {
        Ok(pool) => (scratch, pool),
        Err(e) => {
            let _ = scratch.drop_db().await;
            panic!("connect as the application role: {e:#}");
        }
    }
}

impl Backend {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = seeded_db(&dir, &[redstore_inventory::SQLITE_MIGRATIONS, redstore_sales::SQLITE_MIGRATIONS]).await;
        Self {
            sales: SqliteSales::new(db.clone()),
            inventory: SqliteInventory::new(db.clone()),
            db: Some(db),
            _dir: dir,
            pg: None,
        }
    }

    pub async fn postgres() -> Self {
        Self::postgres_with(|inventory| inventory).await
    }

    /// PgSales over the SQLite inventory as `wrap` returns it (e.g. one that fails on purpose).
    pub async fn postgres_with(wrap: impl FnOnce(Arc<dyn InventoryStore>) -> Arc<dyn InventoryStore>) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = seeded_db(&dir, &[redstore_inventory::SQLITE_MIGRATIONS]).await;
        let inventory = wrap(SqliteInventory::new(db.clone()));
        let (scratch, pool) = scratch_db(&[&PG_SCHEMA]).await;
        let sales = PgSales::new(pool.clone(), inventory.clone());
        Self::on_postgres(sales, inventory, Some(db), dir, scratch, pool)
    }

    /// PgSales calling a separate inventory service over real gRPC (`GrpcInventory` against an
    /// inventory server on a free port, SQLite behind it), as `redstore serve sales` does: errors
    /// come back as gRPC statuses, and the saga must read them as such.
    pub async fn postgres_remote() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = seeded_db(&dir, &[redstore_inventory::SQLITE_MIGRATIONS]).await;
        let served: Arc<dyn InventoryStore> = SqliteInventory::new(db.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(InventoryServiceServer::with_interceptor(
                    redstore_inventory::InventoryGrpc::new(served),
                    as_a_service,
                ))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let inventory: Arc<dyn InventoryStore> =
            redstore_inventory::client::GrpcInventory::connect(&format!("http://{addr}"), test_token(), None)
                .await
                .expect("an inventory client");
        let (scratch, pool) = scratch_db(&[&PG_SCHEMA]).await;
        let sales = PgSales::new(pool.clone(), inventory.clone());
        Self::on_postgres(sales, inventory, Some(db), dir, scratch, pool)
    }

    /// PgSales beside PgInventory on one fresh PostgreSQL database, as one process runs them:
    /// checkouts go by group commit, sales and stock in one transaction per batch.
    pub async fn postgres_local() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (scratch, pool) = scratch_db(&[&redstore_inventory::pg::PG_SCHEMA, &PG_SCHEMA]).await;
        let pg_inventory = PgInventory::new(pool.clone());
        redstore_inventory::seed::seed_demo_via(pg_inventory.as_ref()).await.expect("seed the demo chain");
        let sales = PgSales::with_local_inventory(pool.clone(), pg_inventory.clone());
        Self::on_postgres(sales, pg_inventory, None, dir, scratch, pool)
    }

    fn on_postgres(
        sales: Arc<PgSales>,
        inventory: Arc<dyn InventoryStore>,
        db: Option<Db>,
        dir: tempfile::TempDir,
        scratch: ScratchDb,
        pool: PgPool,
    ) -> Self {
        Self { sales: sales.clone(), inventory, db, _dir: dir, pg: Some(Pg { pool, sales, scratch: Some(scratch) }) }
    }

    pub fn sales(&self) -> Arc<dyn SalesStore> {
        self.sales.clone()
    }

    pub fn inventory(&self) -> Arc<dyn InventoryStore> {
        self.inventory.clone()
    }

    fn pg(&self) -> &Pg {
        self.pg.as_ref().expect("not a PostgreSQL backend")
    }

    /// The application role's pool (PostgreSQL only).
    pub fn app_pool(&self) -> &PgPool {
        &self.pg().pool
    }

    /// The PostgreSQL sales store itself (PostgreSQL only).
    pub fn pg_sales(&self) -> Arc<PgSales> {
        self.pg().sales.clone()
    }

    /// Closes the backend and removes its databases.
    pub async fn finish(mut self) {
        if let Some(pg) = &mut self.pg {
            pg.pool.close().await;
            if let Some(scratch) = pg.scratch.take() {
                scratch.drop_db().await.expect("drop the scratch database");
            }
        }
        if let Some(db) = &self.db {
            db.close();
        }
    }
}

impl Drop for Backend {
    /// A test that panicked never reached `finish`: drop its scratch database anyway, on a thread
    /// of its own (this may run inside the test's runtime, which must not block on itself).
    fn drop(&mut self) {
        if let Some(pg) = &mut self.pg
            && let Some(scratch) = pg.scratch.take()
        {
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(scratch.drop_db())
            })
            .join();
        }
    }
}

/// A service token for a client of a test's inventory server (which does not check it).
fn test_token() -> redstore_platform::service_token::ServiceToken {
    redstore_platform::service_token::ServiceToken::parse("conformance-test-service-token-0123456789").expect("a token")
}

/// What Red Store's edge does for a call with the service token: lets it through as a service.
fn as_a_service(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let presented = req.metadata().get("authorization").map(|v| v.as_bytes().to_vec()).unwrap_or_default();
    if !test_token().matches(&presented) {
        return Err(tonic::Status::unauthenticated("not the service token"));
    }
    req.extensions_mut().insert(redstore_platform::caller::Caller::Service);
    Ok(req)
}
