//! Billing on real brokers: exactly once through transactions, on Apache Kafka and on the
//! embedded cluster, through aborted transactions and a crash; where transactions are refused,
//! a clear refusal; and the at-least-once mode with charges deduplicated by ride.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bimride_billing::{BillingSettings, Guarantee};
use bimride_events::{FareCharged, RideEvent, Topic};
use bimride_kafka::service;
use bimride_tests::{
    Broker, Pipeline, completed_trip, counter_total, decode_all, fare_charged, join_all, read_back,
};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio_util::sync::CancellationToken;

use crate::group;

fn settings(delivery: Guarantee) -> BillingSettings {
    BillingSettings {
        group: group("billing"),
        delivery,
        transactional_id: group("billing-txn"),
        commit_ms: 20,
        ..BillingSettings::default()
    }
}

/// Publishes the trips of `rides` a few at a time, so that billing sees a stream.
async fn stream_trips(p: &Pipeline, rides: std::ops::Range<u32>) {
    let rides: Vec<u32> = rides.collect();
    for chunk in rides.chunks(10) {
        let events: Vec<RideEvent> = chunk.iter().copied().flat_map(completed_trip).collect();
        p.producer
            .send_all(&events)
            .await
            .expect("ride events published");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Publishes the trips of `rides` and kills `billing` `after` into it: the task is dropped
/// where it stands, with no graceful shutdown.
async fn crash_mid_stream(
    p: &Pipeline,
    rides: std::ops::Range<u32>,
    billing: tokio::task::JoinHandle<anyhow::Result<()>>,
    after: Duration,
) {
    let streaming = stream_trips(p, rides);
    let crash = async {
        tokio::time::sleep(after).await;
        billing.abort();
    };
    tokio::join!(streaming, crash);
    assert!(
        billing.await.is_err_and(|e| e.is_cancelled()),
        "billing was killed"
    );
}

/// Starts billing again, publishes the trips of `rides`, waits until `count` rides are
/// charged, stops billing, and returns every committed charge.
async fn restart_and_settle(
    p: &Pipeline,
    settings: BillingSettings,
    rides: std::ops::Range<u32>,
    count: usize,
) -> Vec<FareCharged> {
    let stop = CancellationToken::new();
    let billing = p.spawn(settings, stop.clone());
    stream_trips(p, rides).await;
    let committed = committed_charges(p, count).await;
    stop.cancel();
    join_all(vec![billing]).await;
    committed
}

/// Waits until a `read_committed` reader sees charges for `count` distinct rides; returns
/// every charge it saw.
async fn committed_charges(p: &Pipeline, count: usize) -> Vec<FareCharged> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let records = read_payments(p, "read_committed").await;
        let charges: Vec<FareCharged> = decode_all(&p.codec, &records).await;
        let rides: BTreeSet<&str> = charges.iter().map(|c| c.ride_id.as_str()).collect();
        if rides.len() >= count || tokio::time::Instant::now() > deadline {
            return charges;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every record of the payments topic, as a reader with `isolation` sees it.
async fn read_payments(p: &Pipeline, isolation: &'static str) -> Vec<(i32, Vec<u8>)> {
    let config = p.config.clone();
    tokio::task::spawn_blocking(move || {
        read_back(&config, config.topics().name(Topic::Payments), isolation)
    })
    .await
    .expect("reader joins")
}

/// Charges by ride; fails the test if a ride was charged twice with different charges.
fn by_ride(charges: &[FareCharged]) -> BTreeMap<String, Vec<FareCharged>> {
    let mut rides: BTreeMap<String, Vec<FareCharged>> = BTreeMap::new();
    for c in charges {
        rides.entry(c.ride_id.clone()).or_default().push(c.clone());
    }
    rides
}

/// Fails the test unless `charges` charge every ride of `expected`, and only those, once.
fn charged_exactly_once(charges: &[FareCharged], expected: BTreeSet<String>) {
    let rides = by_ride(charges);
    assert_eq!(rides.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let twice: Vec<_> = rides
        .iter()
        .filter(|(_, c)| c.len() > 1)
        .map(|(r, _)| r)
        .collect();
    assert!(twice.is_empty(), "charged twice: {twice:?}");
}

fn expected_rides(rides: std::ops::Range<u32>) -> BTreeSet<String> {
    rides.map(|n| format!("ride-{n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_and_a_crash_charge_every_ride_exactly_once() {
    let broker = Broker::embedded();
    let Broker::Embedded(cluster) = &broker else {
        unreachable!()
    };
    let p = Pipeline::start(&broker).await;
    let s = settings(Guarantee::ExactlyOnce);

    let first_stop = CancellationToken::new();
    let first = p.spawn(s.clone(), first_stop.clone());
    stream_trips(&p, 0..100).await;
    assert_eq!(committed_charges(&p, 100).await.len(), 100);
    let aborted_before = aborted_transactions();
    // The next transaction fails to add its offsets: billing must abort it, rewind, and charge
    // those rides again in a transaction that commits.
    cluster
        .fail_requests(
            RDKafkaApiKey::AddOffsetsToTxn,
            vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED],
        )
        .expect("error injected");
    stream_trips(&p, 100..200).await;
    assert_eq!(committed_charges(&p, 200).await.len(), 200);

    crash_mid_stream(&p, 200..400, first, Duration::from_millis(150)).await;
    drop(first_stop);
    // The restart takes the same transactional id: it fences the dead instance and aborts
    // whatever it left open.
    let committed = restart_and_settle(&p, s, 400..450, 450).await;

    charged_exactly_once(&committed, expected_rides(0..450));
    for c in &committed {
        assert_eq!(
            c.commission.amount_minor + c.payout.amount_minor,
            c.fare.amount_minor
        );
        assert_eq!(c.surge_milli, 1_200, "the surge quoted at request time");
    }
    assert!(
        aborted_transactions() > aborted_before,
        "the injected failure aborted no transaction"
    );
}

fn aborted_transactions() -> u64 {
    counter_total("bimride_transactions_total", Some("aborted")) as u64
}

/// Brokers that refuse transactions: exactly-once billing refuses to start, and says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_transactions_exactly_once_billing_refuses_to_start() {
    let broker = Broker::embedded();
    let Broker::Embedded(cluster) = &broker else {
        unreachable!()
    };
    let p = Pipeline::start(&broker).await;
    // The pipeline's idempotent producers (and the registry's) ask for their ids first, so
    // that the one refusal goes to billing.
    p.producer
        .send_and_wait(&completed_trip(0)[0])
        .await
        .expect("a record written");
    cluster
        .fail_requests(
            RDKafkaApiKey::InitProducerId,
            vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED],
        )
        .expect("error injected");
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        service::run(
            Box::new(settings(Guarantee::ExactlyOnce)),
            p.context(CancellationToken::new()),
        ),
    )
    .await
    .expect("billing gives up within a minute");
    let error = outcome
        .expect_err("billing must not start without transactions")
        .to_string();
    assert!(error.contains("transactions are not available"), "{error}");
    assert!(
        error.contains("--billing-delivery at-least-once"),
        "{error}"
    );
}

/// Billing's at-least-once mode, for brokers without transactions: charges are deduplicated
/// by ride, through duplicate completions and a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_mode_charges_each_ride_once() {
    let broker = Broker::kafka();
    let p = Pipeline::start(&broker).await;
    let s = settings(Guarantee::AtLeastOnce);
    let first = p.spawn(s.clone(), CancellationToken::new());
    stream_trips(&p, 0..60).await;
    // A driver app that retries its completion, with a new event id.
    let mut again: Vec<RideEvent> = (0..20).filter_map(|n| completed_trip(n).pop()).collect();
    for e in &mut again {
        if let RideEvent::TripCompleted(c) = e {
            c.event_id = uuid::Uuid::new_v4().to_string();
        }
    }
    p.producer
        .send_all(&again)
        .await
        .expect("duplicates published");
    let streaming = stream_trips(&p, 60..100);
    let crash = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        first.abort();
    };
    tokio::join!(streaming, crash);
    let stop = CancellationToken::new();
    let second = p.spawn(s, stop.clone());
    stream_trips(&p, 100..110).await;
    let charges = committed_charges(&p, 110).await;
    stop.cancel();
    join_all(vec![second]).await;

    let rides = by_ride(&charges);
    assert_eq!(
        rides.keys().cloned().collect::<BTreeSet<_>>(),
        expected_rides(0..110)
    );
    for (ride, copies) in &rides {
        // A crash may repeat a charge; a repeat is the same charge, which readers drop by id.
        let distinct: BTreeSet<_> = copies
            .iter()
            .map(|c| (&c.event_id, c.fare.amount_minor))
            .collect();
        assert_eq!(distinct.len(), 1, "{ride} charged differently: {copies:?}");
    }
}

/// On Apache Kafka: a charge in a transaction that aborts reaches no money reader, and billing
/// killed mid-stream and restarted under its transactional id charges every ride exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_aborted_transactions_and_a_crash_charge_every_ride_exactly_once() {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let broker = Broker::kafka();
    let p = Pipeline::start(&broker).await;
    let services = CancellationToken::new();
    let api = p
        .serve_api(bimride_domain::City::amsterdam(), services.clone())
        .await;
    let s = settings(Guarantee::ExactlyOnce);

    // A forged charge, written in a transaction that aborts, then a real one that commits.
    let txn: FutureProducer = p
        .config
        .producer()
        .set("transactional.id", p.group("forger"))
        .create()
        .expect("transactional producer");
    let (forged, honest) = (fare_charged(9_999), fare_charged(9_998));
    let payments = p.topic(Topic::Payments);
    for (charge, commit) in [(&forged, false), (&honest, true)] {
        let bytes = p.codec.encode(charge).await.expect("encoded");
        let (txn, payments, key) = (txn.clone(), payments.clone(), charge.ride_id.clone());
        tokio::task::spawn_blocking(move || {
            let t = Duration::from_secs(30);
            if commit {
                txn.begin_transaction()?;
            } else {
                txn.init_transactions(t)?;
                txn.begin_transaction()?;
            }
            txn.send_result(FutureRecord::to(&payments).key(&key).payload(&bytes))
                .map_err(|(e, _)| e)?;
            txn.flush(t)?;
            if commit {
                txn.commit_transaction(t)
            } else {
                txn.abort_transaction(t)
            }
        })
        .await
        .expect("joins")
        .expect("transaction ends");
    }

    let first = p.spawn(s.clone(), CancellationToken::new());
    stream_trips(&p, 0..100).await;
    assert_eq!(committed_charges(&p, 101).await.len(), 101);
    // With transactions open: the restart fences the dead instance and the coordinator
    // aborts what it left.
    crash_mid_stream(&p, 100..300, first, Duration::from_millis(300)).await;
    let committed = restart_and_settle(&p, s, 300..350, 351).await;

    let mut expected = expected_rides(0..350);
    expected.insert(honest.ride_id.clone());
    charged_exactly_once(&committed, expected);

    // The aborted record is in the log, for readers that ask for uncommitted data only.
    let uncommitted: Vec<FareCharged> =
        decode_all(&p.codec, &read_payments(&p, "read_uncommitted").await).await;
    assert!(
        uncommitted.iter().any(|c| c.ride_id == forged.ride_id),
        "the aborted charge was written"
    );
    // The API reads payments committed only: it shows the honest charge and not the forged one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api
        .store
        .ride(&honest.ride_id)
        .await
        .expect("store")
        .and_then(|v| v.fare)
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the API never saw the committed charge"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        api.store
            .ride(&forged.ride_id)
            .await
            .expect("store")
            .and_then(|v| v.fare)
            .is_none(),
        "the API applied an aborted charge"
    );
    services.cancel();
    join_all(api.tasks).await;
}
