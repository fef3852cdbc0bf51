//! A Kafka producer whose sends resolve to their deliveries, as rdkafka's `FutureProducer` does,
//! but polled by a thread that sleeps a second at a time while nothing happens. `FutureProducer`'s
//! thread polls every 100 ms, and rdkafka 0.39 spins through the last millisecond of each poll
//! (it rounds the time left down to whole milliseconds, then polls without waiting until the
//! deadline passes): about 1 % of a core for an idle process. A delivery report wakes the thread
//! at once, so a delivery is reported as soon as with `FutureProducer`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext as _};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Message as _, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, FutureRecord, Producer as _, ProducerContext};
use tokio::sync::oneshot;

/// Where a message landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// How long the polling thread waits for a delivery report before it looks whether to stop.
const POLL: Duration = Duration::from_secs(1);

/// A producer handle; clones share one client and its polling thread, which stops (within
/// [`POLL`]) once the last handle is dropped.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

struct Shared {
    base: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The producer's context: hands each delivery report to the send that waits for it.
pub struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<oneshot::Sender<KafkaResult<Delivered>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(message) => Ok(Delivered { partition: message.partition(), offset: message.offset() }),
            Err((e, _)) => Err(e.clone()),
        };
        let _ = waiting.send(outcome);
    }
}

/// A message the local queue refused, given back with why.
type Refused<'a, K, P> = Box<(KafkaError, FutureRecord<'a, K, P>)>;

/// A message on its way: resolves to where it landed, or why it was not delivered.
pub struct Delivery(oneshot::Receiver<KafkaResult<Delivered>>);

impl std::future::Future for Delivery {
    type Output = KafkaResult<Delivered>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Err(KafkaError::Canceled)))
    }
}

impl Producer {
    /// A producer with these settings, and its polling thread.
    pub fn from_config(config: &ClientConfig) -> KafkaResult<Self> {
        let base = Arc::new(BaseProducer::from_config_and_context(config, Deliveries)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (base.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kafka producer poll".to_owned())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    polled.poll(POLL);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("cannot start the producer's polling thread: {e}")))?;
        Ok(Self { shared: Arc::new(Shared { base, stop }) })
    }

    /// Queues a message; the returned [`Delivery`] resolves once the broker has it (or it failed).
    /// Refused at once when the local queue is full.
    pub fn send_result<K, P>(&self, record: FutureRecord<'_, K, P>) -> KafkaResult<Delivery>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        self.enqueue(record).map_err(|refused| refused.0)
    }

    /// Sends a message and waits for its delivery; a full local queue is waited out for up to
    /// `queue_timeout`.
    pub async fn send<K, P>(
        &self,
        mut record: FutureRecord<'_, K, P>,
        queue_timeout: Duration,
    ) -> KafkaResult<Delivered>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let until = tokio::time::Instant::now() + queue_timeout;
        loop {
            match self.enqueue(record) {
                Ok(delivery) => return delivery.await,
                Err(refused) => match *refused {
                    (KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)
                        if tokio::time::Instant::now() < until =>
                    {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    (e, _) => return Err(e),
                },
            }
        }
    }

    /// Queues a message, or gives it back with why it was refused.
    fn enqueue<'a, K, P>(&self, record: FutureRecord<'a, K, P>) -> Result<Delivery, Refused<'a, K, P>>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (tx, rx) = oneshot::channel();
        let base = BaseRecord {
            topic: record.topic,
            partition: record.partition,
            payload: record.payload,
            key: record.key,
            timestamp: record.timestamp,
            headers: record.headers,
            delivery_opaque: Box::new(tx),
        };
        self.shared.base.send(base).map(|()| Delivery(rx)).map_err(|(e, back)| {
            let record = FutureRecord {
                topic: back.topic,
                partition: back.partition,
                payload: back.payload,
                key: back.key,
                timestamp: back.timestamp,
                headers: back.headers,
            };
            Box::new((e, record))
        })
    }

    /// The client, for its state (`fatal_error`, metadata).
    pub fn client(&self) -> &Client<Deliveries> {
        self.shared.base.client()
    }

    /// Waits up to `timeout` for every queued message to be delivered.
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.shared.base.flush(timeout)
    }
}
