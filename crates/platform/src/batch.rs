//! Per-store queues for group commit: the jobs waiting for one store are taken in batches by one
//! worker task, so that a batch pays for one transaction (one lock of the store's sequence, one
//! commit) instead of one each. A store has at most `in_flight` batches running at once: one when
//! batches queue on the store's locks anyway (a second beside it only made both smaller and
//! slower), more when a batch mostly waits on calls and commits that hold no lock of the store;
//! different stores' run in parallel.
//!
//! A worker starts with its store's first job and ends after `idle` without work, so a store
//! that is not selling costs nothing and an id that names no store leaves nothing behind.
//!
//! Starting the next batch the moment one ends, with whatever is queued, splits a busy store's
//! callers into groups that take turns: those answered by a batch come back while the next one,
//! made of the others, is already running, and wait for it to end. Each caller then waits for two
//! batches, and each batch pays its fixed cost for half the callers. With a `linger`, after a
//! batch of several jobs the next one waits up to that long (and no longer than it takes) for as
//! many jobs as the last batch answered plus those queued when it ended: the groups merge into one
//! batch per round (measured in docs/benchmarks-history.md, 9th machine). A store whose batches hold one
//! job never waits, and neither does a batch whose jobs are all there.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::Instrument as _;

/// The queue of a store's jobs when batches take several stores' jobs: the stores are spread over
/// `lanes` queues, each with its worker, so that a chain whose stores each sell now and then still
/// fills batches, and lanes run side by side. A store always goes to the same lane, so its jobs
/// keep their order and two batches never hold the same store's locks at once.
pub fn lane(store_id: &str, lanes: usize) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    store_id.hash(&mut hasher);
    format!("lane-{}", hasher.finish() % lanes.max(1) as u64)
}

/// A batch's items grouped by their store: stores in id order (the order a batch of several
/// stores locks them in), each store's items (their indexes) in the order given.
pub fn by_store<'a>(stores: impl Iterator<Item = &'a str>) -> Vec<(&'a str, Vec<usize>)> {
    let mut groups: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, store_id) in stores.enumerate() {
        groups.entry(store_id).or_default().push(i);
    }
    groups.into_iter().collect()
}

/// Runs one batch of a store's jobs (every job answers its caller itself) and returns the jobs it
/// put off: they lead the next batch.
pub type RunBatch<J> = dyn Fn(String, Vec<J>) -> BoxFuture<'static, Vec<J>> + Send + Sync;

pub struct StoreBatcher<J> {
    inner: Arc<Inner<J>>,
}

struct Inner<J> {
    /// The queue of each store with a worker, and that worker's number.
    queues: Mutex<Queues<J>>,
    workers: AtomicU64,
    run: Box<RunBatch<J>>,
    max_batch: usize,
    /// How many of one store's batches may run at once.
    in_flight: usize,
    idle: Duration,
    /// How long a batch after a batch of several jobs may wait for more (zero: it does not).
    linger: Duration,
}

impl<J: Send + 'static> StoreBatcher<J> {
    /// Batches of at most `max_batch` jobs, at most `in_flight` of one store's at once; a worker
    /// stops after `idle` without jobs; when no batch of the store runs, a batch after one of
    /// several jobs waits up to `linger` for more (see the module's documentation).
    pub fn new(
        max_batch: usize,
        in_flight: usize,
        idle: Duration,
        linger: Duration,
        run: impl Fn(String, Vec<J>) -> BoxFuture<'static, Vec<J>> + Send + Sync + 'static,
    ) -> Self {
        let inner = Inner {
            queues: Mutex::new(HashMap::new()),
            workers: AtomicU64::new(0),
            run: Box::new(run),
            max_batch: max_batch.max(1),
            in_flight: in_flight.max(1),
            idle,
            linger,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Queues a job for its store, starting the store's worker when it has none. Call from within
    /// a Tokio runtime.
    pub fn submit(&self, store_id: &str, job: J) {
        self.submit_all(store_id, [job]);
    }

    /// Queues several jobs for one store, in order, all at once: an idle worker mostly takes them
    /// in one batch.
    pub fn submit_all(&self, store_id: &str, jobs: impl IntoIterator<Item = J>) {
        // Sending under the lock is what lets an idle worker retire safely (see `work`).
        let mut queues = self.inner.queues.lock();
        for job in jobs {
            self.send_locked(&mut queues, store_id, job);
        }
    }

    fn send_locked(&self, queues: &mut Queues<J>, store_id: &str, job: J) {
        // The caller's span goes with its job: the batch that takes it continues its trace.
        let job = (job, crate::trace::span_to_carry());
        let job = match queues.get(store_id) {
            Some((_, queue)) => match queue.send(job) {
                Ok(()) => return,
                // Its worker is gone (it panicked): start another.
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (queue, jobs) = mpsc::unbounded_channel();
        let _ = queue.send(job);
        let number = self.inner.workers.fetch_add(1, Ordering::Relaxed);
        queues.insert(store_id.to_owned(), (number, queue));
        tokio::spawn(work(self.inner.clone(), store_id.to_owned(), number, jobs));
    }
}

/// A job and the span of the caller that submitted it.
type Queued<J> = (J, tracing::Span);

/// Each store's queue with a worker, and that worker's number.
type Queues<J> = HashMap<String, (u64, mpsc::UnboundedSender<Queued<J>>)>;

/// A batch's span: a child of its first job's caller, following from the others'.
fn batch_span(spans: &[tracing::Span]) -> tracing::Span {
    let Some(first) = spans.first() else { return tracing::Span::none() };
    let span = tracing::info_span!(
        target: "redstore::trace",
        parent: first,
        "batch",
        otel.name = "write batch",
        redstore.batch.size = spans.len(),
    );
    for other in &spans[1..] {
        span.follows_from(other);
    }
    span
}

async fn work<J: Send + 'static>(
    inner: Arc<Inner<J>>,
    store_id: String,
    number: u64,
    mut jobs: mpsc::UnboundedReceiver<Queued<J>>,
) {
    let mut running = FuturesUnordered::new();
    let mut put_off: Vec<Queued<J>> = Vec::new();
    // How many jobs the next batch waits for (up to `linger`): none after a batch of one.
    let mut expected = 0;
    loop {
        // Start a batch when a slot is free and there is work: what a finished batch put off
        // first, then whatever is queued, up to the limit.
        if running.len() < inner.in_flight && !(put_off.is_empty() && jobs.is_empty()) {
            if running.is_empty() && !inner.linger.is_zero() {
                let until = tokio::time::Instant::now() + inner.linger;
                while put_off.len() + jobs.len() < expected.min(inner.max_batch) {
                    tokio::select! {
                        job = jobs.recv() => match job {
                            Some(job) => put_off.push(job),
                            None => break,
                        },
                        () = tokio::time::sleep_until(until) => break,
                    }
                }
            }
            let mut batch = std::mem::take(&mut put_off);
            while batch.len() < inner.max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let size = batch.len();
            let (batch, spans): (Vec<J>, Vec<tracing::Span>) = batch.into_iter().unzip();
            let run = (inner.run)(store_id.clone(), batch).instrument(batch_span(&spans));
            running.push(run.map(move |off| (size, off)));
            continue;
        }
        if running.is_empty() {
            let idle_since = tokio::time::Instant::now();
            match tokio::time::timeout(inner.idle, jobs.recv()).await {
                Ok(Some(job)) => {
                    // Callers that stayed away longer than the linger are not coming back as one.
                    if idle_since.elapsed() > inner.linger {
                        expected = 0;
                    }
                    put_off.push(job);
                }
                Ok(None) => return,
                Err(_) => {
                    // Retire, unless a job arrived meanwhile: jobs are sent under this lock, so
                    // none can be sent to this queue once it is out of the map.
                    let mut queues = inner.queues.lock();
                    if jobs.is_empty() {
                        if queues.get(&store_id).is_some_and(|(n, _)| *n == number) {
                            queues.remove(&store_id);
                        }
                        return;
                    }
                }
            }
            continue;
        }
        tokio::select! {
            Some((size, off)) = running.next() => {
                // The callers it answered (or put off) are likely to come back beside the ones
                // waiting already.
                expected = if size > 1 { size + put_off.len() + jobs.len() } else { 0 };
                put_off.extend(off.into_iter().map(|job| (job, tracing::Span::none())));
            }
            job = jobs.recv(), if running.len() < inner.in_flight => match job {
                Some(job) => put_off.push(job),
                // Every sender is gone: finish what runs (and what it puts off), then stop.
                None => {
                    while let Some((_, off)) = running.next().await {
                        put_off.extend(off.into_iter().map(|job| (job, tracing::Span::none())));
                    }
                    if put_off.is_empty() {
                        return;
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    type Job = (u32, oneshot::Sender<usize>);

    fn batcher(max: usize, idle: Duration, seen: Arc<Mutex<Vec<Vec<u32>>>>) -> StoreBatcher<Job> {
        lingering(max, idle, Duration::ZERO, seen)
    }

    fn lingering(max: usize, idle: Duration, linger: Duration, seen: Arc<Mutex<Vec<Vec<u32>>>>) -> StoreBatcher<Job> {
        StoreBatcher::new(max, 1, idle, linger, move |_store, jobs: Vec<Job>| {
            let seen = seen.clone();
            async move {
                // Long enough for the other jobs to queue behind this batch.
                tokio::time::sleep(Duration::from_millis(20)).await;
                seen.lock().push(jobs.iter().map(|(n, _)| *n).collect());
                let size = jobs.len();
                for (_, reply) in jobs {
                    let _ = reply.send(size);
                }
                Vec::new()
            }
            .boxed()
        })
    }

    #[tokio::test]
    async fn jobs_queued_behind_a_batch_share_the_next_one_up_to_the_limit() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batcher = batcher(4, Duration::from_secs(5), seen.clone());
        let mut replies = Vec::new();
        for n in 0..9 {
            let (tx, rx) = oneshot::channel();
            batcher.submit("store-1", (n, tx));
            replies.push(rx);
        }
        for rx in replies {
            rx.await.expect("every job is answered");
        }
        // The first job starts a batch alone; the rest queue and go at most four at a time, in order.
        let batches = seen.lock().clone();
        assert_eq!(batches.concat(), (0..9).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        assert!(batches.len() <= 4, "queued jobs were not batched: {batches:?}");
    }

    #[tokio::test]
    async fn an_idle_worker_retires_and_a_later_job_starts_a_new_one() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batcher = batcher(4, Duration::from_millis(50), seen.clone());
        let (tx, rx) = oneshot::channel();
        batcher.submit("store-1", (1, tx));
        rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(batcher.inner.queues.lock().is_empty(), "the idle worker did not retire");
        let (tx, rx) = oneshot::channel();
        batcher.submit("store-1", (2, tx));
        assert_eq!(rx.await.unwrap(), 1);
        assert_eq!(seen.lock().concat(), vec![1, 2]);
    }

    /// Submits jobs `numbers` to store-1, each `apart` after the one before, and waits for every
    /// answer.
    async fn submit_apart(batcher: &StoreBatcher<Job>, numbers: std::ops::Range<u32>, apart: Duration) {
        let mut replies = Vec::new();
        for n in numbers {
            if !replies.is_empty() {
                tokio::time::sleep(apart).await;
            }
            let (tx, rx) = oneshot::channel();
            batcher.submit("store-1", (n, tx));
            replies.push(rx);
        }
        for rx in replies {
            rx.await.expect("every job is answered");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_batch_of_several_the_next_waits_up_to_the_linger_for_as_many() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batcher = lingering(8, Duration::from_secs(5), Duration::from_millis(100), seen.clone());
        batcher.submit_all("store-1", (0..2).map(|n| (n, oneshot::channel().0)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*seen.lock(), vec![vec![0, 1]]);
        // Its two callers come back 30 ms apart: the next batch waits for the second.
        submit_apart(&batcher, 2..4, Duration::from_millis(30)).await;
        // Only one comes back: the batch goes at the end of the linger, alone.
        submit_apart(&batcher, 4..5, Duration::ZERO).await;
        // After a batch of one, nothing waits: two jobs 30 ms apart go in two batches.
        submit_apart(&batcher, 5..7, Duration::from_millis(30)).await;
        assert_eq!(*seen.lock(), vec![vec![0, 1], vec![2, 3], vec![4], vec![5], vec![6]]);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_back_after_more_than_the_linger_are_not_waited_for() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batcher = lingering(8, Duration::from_secs(5), Duration::from_millis(100), seen.clone());
        submit_apart(&batcher, 0..2, Duration::ZERO).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        submit_apart(&batcher, 2..4, Duration::from_millis(30)).await;
        assert_eq!(*seen.lock(), vec![vec![0, 1], vec![2], vec![3]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_batch_goes_as_soon_as_every_expected_job_is_there() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batcher = lingering(8, Duration::from_secs(5), Duration::from_secs(60), seen.clone());
        submit_apart(&batcher, 0..3, Duration::ZERO).await;
        let began = tokio::time::Instant::now();
        submit_apart(&batcher, 3..6, Duration::from_millis(10)).await;
        assert_eq!(*seen.lock(), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        // In virtual time: the last job came 20 ms in, and its batch took 20 ms; no linger of a minute.
        assert!(began.elapsed() < Duration::from_secs(1), "{:?}", began.elapsed());
    }
}
