//! A producer client whose delivery reports are served by a thread of its own, as rdkafka's
//! `FutureProducer` does, but polled in long waits. The `FutureProducer`'s thread polls in
//! 100 ms cycles and spins through the last fraction of a millisecond of each (its deadline is
//! rounded down to whole milliseconds): at rest that was a sixth of a process's CPU.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{DeliveryResult, Message, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureRecord, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::oneshot;

use crate::producer::Delivered;

/// How long one poll of the delivery reports waits. A report ends the wait at once; the
/// length only bounds how soon a dropped client's thread notices and ends.
const POLL_WAIT: Duration = Duration::from_secs(1);
/// Pause before enqueuing again when librdkafka's local queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// The brokers' answer for one record.
pub type Report = Result<Delivered, KafkaError>;

/// Hands each record's delivery report to whoever awaits it.
#[derive(Debug, Default)]
pub struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<oneshot::Sender<Report>>;

    fn delivery(&self, result: &DeliveryResult<'_>, to: Self::DeliveryOpaque) {
        let report = match result {
            Ok(m) => Ok(Delivered {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => Err(e.clone()),
        };
        // Whoever sent it may have stopped waiting; the record was still delivered.
        let _ = to.send(report);
    }
}

/// A record's delivery report, once the brokers have answered. A client shut down before
/// then answers [`KafkaError::Canceled`].
#[must_use = "a delivery that is never awaited may fail unnoticed"]
#[derive(Debug)]
pub struct Delivery(oneshot::Receiver<Report>);

impl Future for Delivery {
    type Output = Report;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Report> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(KafkaError::Canceled)))
    }
}

/// A producer client and the thread that serves its delivery reports, until it is dropped.
pub struct ProducerClient {
    producer: Arc<BaseProducer<Reports>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for ProducerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerClient").finish_non_exhaustive()
    }
}

impl ProducerClient {
    pub fn create(config: &ClientConfig) -> KafkaResult<Self> {
        let producer = Arc::new(BaseProducer::from_config_and_context(config, Reports)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (Arc::clone(&producer), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("rdk:reports".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    polled.poll(POLL_WAIT);
                }
            })
            .map_err(|_| KafkaError::ClientCreation("no thread for delivery reports".into()))?;
        Ok(Self { producer, stop })
    }

    /// The client itself, for what rdkafka's `Producer` offers: flushes and transactions.
    pub fn base(&self) -> &BaseProducer<Reports> {
        &self.producer
    }

    /// Enqueues `record`, waiting while librdkafka's local queue is full: that is
    /// back-pressure, not failure. Returns once it is queued, not once it is durable.
    pub async fn enqueue<K, P>(&self, record: FutureRecord<'_, K, P>) -> KafkaResult<Delivery>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (to, report) = oneshot::channel();
        let mut record = BaseRecord {
            topic: record.topic,
            partition: record.partition,
            payload: record.payload,
            key: record.key,
            timestamp: record.timestamp,
            headers: record.headers,
            delivery_opaque: Box::new(to),
        };
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(Delivery(report)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Enqueues `record` and waits for the brokers' answer.
    pub async fn send<K, P>(&self, record: FutureRecord<'_, K, P>) -> Report
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        self.enqueue(record).await?.await
    }
}

impl Drop for ProducerClient {
    /// The thread ends within one poll wait, and the client with it: what is still queued
    /// then is purged, and its deliveries answer with an error.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
