//! Connections: many live streams opening at once cost no database connections or threads
//! beyond the server's own.

use crate::helpers::*;

/// Open files of this process that are the database file itself (not its journal or lock).
fn open_database_files(db: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|fds| fds.filter_map(Result::ok).filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == db)).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_opening_at_once_take_no_more_database_connections_or_threads() {
    if on_postgres() {
        return; // PostgreSQL connections come from sqlx's pool, bounded by --db-pool-size
    }
    let app = TestApp::spawn().await;
    let db = app.dir.path().join("redstore.db").canonicalize().unwrap();
    let at_rest = open_database_files(&db);
    assert!(at_rest > 0, "the database is open");
    let threads_at_rest = threads();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (stop, db) = (stop.clone(), db.clone());
        move || {
            let mut most = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(open_database_files(&db));
            }
            most
        }
    });
    // Each stream reads the store, its stock and its log as it opens.
    let streams = futures::future::join_all((0..200).map(|_| async {
        let mut sse = SseClient::connect(&app, "store-1", "?snapshot=true", None).await;
        sse.next().await.expect("a snapshot")
    }))
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().unwrap();
    assert!(streams.iter().all(|e| e.event.as_deref() == Some("snapshot")));
    assert!(most <= at_rest, "{most} database connections while streams opened, {at_rest} at rest");
    // Reads wait for the reader threads rather than each taking one of its own (the test's
    // sampler thread has ended).
    let threads_after = threads();
    assert!(
        threads_after <= threads_at_rest,
        "{threads_after} threads after streams opened, {threads_at_rest} at rest"
    );
}

/// Threads of this process: the test's runtime and the server's.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(Iterator::count).unwrap_or(0)
}
