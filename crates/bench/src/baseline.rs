//! Baselines measured in the same process and run as the pipeline: raw rdkafka pass-through
//! on the same brokers, and a bare axum handler beside the booking POST.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use bimride_kafka::KafkaConfig;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

/// A baseline measured several times: each trial, and the median and range of its figure.
#[derive(Debug, Clone, Serialize)]
pub struct Trials<T> {
    pub trials: Vec<T>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl<T> Trials<T> {
    /// The trials, summarised by `figure` of each.
    pub fn of(trials: Vec<T>, figure: impl Fn(&T) -> f64) -> Self {
        let mut figures: Vec<f64> = trials.iter().map(figure).collect();
        figures.sort_by(f64::total_cmp);
        let n = figures.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => figures[n / 2],
            _ => (figures[n / 2 - 1] + figures[n / 2]) / 2.0,
        };
        Self {
            trials,
            median,
            min: figures.first().copied().unwrap_or(0.0),
            max: figures.last().copied().unwrap_or(0.0),
        }
    }

    /// The range as a share of the median: how far apart the trials were.
    pub fn spread(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / self.median
        } else {
            0.0
        }
    }
}

/// Records per second through one producer and one consumer, in flight together.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PassThrough {
    pub records: u64,
    pub record_bytes: usize,
    pub seconds: f64,
    pub records_per_s: f64,
}

/// Produces `records` of `record_bytes` to `topic` (one partition, created by the caller) with
/// the pipeline's own producer settings, while a consumer reads them back; times the whole.
pub async fn kafka_pass_through(
    kafka: &KafkaConfig,
    topic: &str,
    records: u64,
    record_bytes: usize,
) -> Result<PassThrough, KafkaError> {
    let producer: FutureProducer = kafka.producer().create()?;
    let consumer: StreamConsumer = kafka
        .consumer(&format!("bimride-bench-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::End)?;
    consumer.assign(&tpl)?;
    // Let the consumer find the end before the first record is sent.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let reader = async {
        let mut seen = 0;
        while seen < records {
            consumer.recv().await?;
            seen += 1;
        }
        Ok::<_, KafkaError>(())
    };
    let payload = vec![b'x'; record_bytes];
    let writer = async {
        let mut in_flight = FuturesUnordered::new();
        for _ in 0..records {
            let record = FutureRecord::to(topic).key("k").payload(&payload);
            in_flight.push(producer.send(record, Duration::from_secs(30)));
            // Many sends in flight, bounded.
            if in_flight.len() >= 10_000
                && let Some(Err((e, _))) = in_flight.next().await
            {
                return Err(e);
            }
        }
        while let Some(done) = in_flight.next().await {
            done.map_err(|(e, _)| e)?;
        }
        Ok(())
    };
    let (read, written) = tokio::join!(reader, writer);
    read?;
    written?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(PassThrough {
        records,
        record_bytes,
        seconds,
        records_per_s: records as f64 / seconds,
    })
}

/// Requests per second a POST endpoint answers under a closed loop of `concurrency` clients.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HttpRate {
    pub requests: u64,
    pub failures: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
}

/// POSTs `body(n)` (a bearer token and a JSON body) to `url` from `concurrency` loops for
/// `duration`, and hands the `ride_id` of every accepted answer to `accepted`.
pub async fn http_rate(
    client: &reqwest::Client,
    url: &str,
    body: impl Fn(u64) -> (String, serde_json::Value) + Send + Sync + 'static,
    accepted: impl Fn(&str) + Send + Sync + 'static,
    concurrency: usize,
    duration: Duration,
) -> HttpRate {
    let (body, accepted) = (Arc::new(body), Arc::new(accepted));
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut loops = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.to_owned());
        let (body, next, failures) = (Arc::clone(&body), Arc::clone(&next), Arc::clone(&failures));
        let accepted = Arc::clone(&accepted);
        loops.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let (token, json) = body(n);
                let answer = match client
                    .post(&url)
                    .bearer_auth(token)
                    .json(&json)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => {
                        r.json::<serde_json::Value>().await.ok()
                    }
                    _ => None,
                };
                match answer.as_ref().and_then(|a| a["ride_id"].as_str()) {
                    Some(ride) => accepted(ride),
                    None => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for l in loops {
        let _ = l.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let requests = next.load(Ordering::Relaxed);
    HttpRate {
        requests,
        failures: failures.load(Ordering::Relaxed),
        seconds,
        requests_per_s: requests as f64 / seconds,
    }
}

/// The bare handler: it parses a JSON body as the booking handler does and answers 202.
pub fn bare_router() -> Router {
    Router::new().route(
        "/v1/rides",
        post(
            |axum::Json(body): axum::Json<serde_json::Value>| async move {
                let ok = body.get("rider_id").is_some();
                (
                    StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({ "ride_id": "bare", "accepted": ok })),
                )
            },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_give_their_median_and_spread() {
        let odd = Trials::of(vec![30.0, 10.0, 20.0], |f| *f);
        assert_eq!((odd.median, odd.min, odd.max), (20.0, 10.0, 30.0));
        assert_eq!(odd.spread(), 1.0);
        assert_eq!(odd.trials, [30.0, 10.0, 20.0]);
        assert_eq!(Trials::of(vec![1.0, 4.0], |f| *f).median, 2.5);
        assert_eq!(Trials::<f64>::of(Vec::new(), |f| *f).spread(), 0.0);
    }
}
