//! The ride store on both of its backends: SQLite in a temporary file, and the run's real
//! PostgreSQL server. Each test gets a database of its own.

use bimride_domain::ride::RideStatus;
use bimride_events::{
    ChargeKind, DriverArrived, DriverAssigned, FareCharged, GeoPoint, Millis, Money, Notification,
    Product, RecipientKind, RideEvent, RideRequested, Topic, TripCompleted, TripStarted, Vehicle,
};
use bimride_kafka::partitioned::At;
use bimride_store::{Change, Cursor, Store, Totals};
use bimride_tests::{Broker, Pipeline, completed_trip, databases, join_all, ride_requested};

/// Every backend, as (name, URL of a fresh database).
async fn backends() -> Vec<(&'static str, String)> {
    vec![
        ("sqlite", databases::fresh_sqlite()),
        ("postgres", databases::fresh_postgres().await),
    ]
}

fn at(topic: Topic, offset: i64) -> At {
    At {
        topic,
        partition: 2,
        offset,
    }
}

fn point() -> GeoPoint {
    GeoPoint {
        lat: 52.37,
        lng: 4.89,
    }
}

fn requested(ride: &str, rider: &str, ms: i64) -> Change {
    Change::Requested(RideRequested {
        event_id: format!("{ride}-requested"),
        occurred_at: Millis(ms),
        ride_id: ride.into(),
        rider_id: rider.into(),
        product: Product::Economy,
        pickup: point(),
        dropoff: point(),
        region: "861969537ffffff".into(),
        pickup_cell: "881969536dfffff".into(),
        quote: Money {
            amount_minor: 1_250,
            currency: "EUR".into(),
        },
        surge_milli: 1_200,
        idempotency_key: None,
        quoted_duration_secs: None,
    })
}

fn assigned(ride: &str, ms: i64) -> Change {
    Change::Event(RideEvent::DriverAssigned(DriverAssigned {
        event_id: format!("{ride}-assigned"),
        occurred_at: Millis(ms),
        ride_id: ride.into(),
        rider_id: "rider-1".into(),
        driver_id: "driver-7".into(),
        vehicle: Vehicle {
            plate: "XX-1".into(),
            model: "Prius".into(),
            colour: "white".into(),
        },
        pickup_eta_secs: 60,
        region: "861969537ffffff".into(),
        product: Some(Product::Economy),
        surge_milli: 1_200,
        distance_eta_secs: None,
        quoted_duration_secs: None,
    }))
}

fn arrived(ride: &str, ms: i64) -> Change {
    Change::Event(RideEvent::DriverArrived(DriverArrived {
        event_id: format!("{ride}-arrived"),
        occurred_at: Millis(ms),
        ride_id: ride.into(),
        driver_id: "driver-7".into(),
        rider_id: "rider-1".into(),
    }))
}

fn started(ride: &str, ms: i64) -> Change {
    Change::Event(RideEvent::TripStarted(TripStarted {
        event_id: format!("{ride}-started"),
        occurred_at: Millis(ms),
        ride_id: ride.into(),
        driver_id: "driver-7".into(),
        rider_id: "rider-1".into(),
    }))
}

fn completed(ride: &str, ms: i64) -> Change {
    Change::Event(RideEvent::TripCompleted(TripCompleted {
        event_id: format!("{ride}-completed"),
        occurred_at: Millis(ms),
        ride_id: ride.into(),
        rider_id: "rider-1".into(),
        driver_id: "driver-7".into(),
        distance_m: 3_000,
        duration_secs: 600,
        dropoff: point(),
    }))
}

fn charged(ride: &str, ms: i64) -> Change {
    let money = |amount_minor| Money {
        amount_minor,
        currency: "EUR".into(),
    };
    Change::Charged(FareCharged {
        event_id: format!("{ride}-charged"),
        occurred_at: Millis(ms),
        ride_id: ride.into(),
        rider_id: "rider-1".into(),
        driver_id: Some("driver-7".into()),
        kind: ChargeKind::Trip,
        fare: money(1_500),
        base_minor: 300,
        distance_minor: 700,
        time_minor: 250,
        surge_milli: 1_200,
        commission: money(375),
        payout: money(1_125),
    })
}

fn receipt(ride: &str, ms: i64) -> Change {
    Change::Sent(Notification {
        event_id: format!("{ride}-note-event"),
        occurred_at: Millis(ms),
        notification_id: format!("{ride}-receipt"),
        recipient_kind: RecipientKind::Rider,
        recipient_id: "rider-1".into(),
        ride_id: Some(ride.into()),
        template: "receipt".into(),
        text: "EUR 15.00".into(),
    })
}

#[tokio::test]
async fn a_ride_folds_from_its_records_once_on_both_backends() {
    for (backend, url) in backends().await {
        let store = Store::connect(&url).await.expect("connects and migrates");
        // The same migrations again are a no-op.
        Store::connect(&url).await.expect("migrates again");
        let records = [
            (
                at(Topic::RideRequests, 0),
                requested("r1", "rider-1", 1_000),
            ),
            (at(Topic::RideEvents, 0), assigned("r1", 2_000)),
            (at(Topic::RideEvents, 1), arrived("r1", 2_500)),
            (at(Topic::RideEvents, 2), started("r1", 2_600)),
            (at(Topic::RideEvents, 3), completed("r1", 3_000)),
            (at(Topic::Payments, 0), charged("r1", 3_100)),
            (at(Topic::Notifications, 0), receipt("r1", 3_200)),
        ];
        for (at, change) in &records {
            assert!(
                store.apply(*at, "c1", Some(change)).await.expect("applies"),
                "{backend}"
            );
        }
        let view = store.ride("r1").await.expect("reads").expect("stored");
        assert_eq!(view.status, RideStatus::Completed, "{backend}");
        assert_eq!(view.rider_id.as_deref(), Some("rider-1"));
        assert_eq!(view.driver_id.as_deref(), Some("driver-7"));
        let fare = view.fare.as_ref().expect("fare");
        assert_eq!(
            (fare.amount_minor, fare.commission_minor, fare.payout_minor),
            (1_500, 375, 1_125)
        );
        assert_eq!(view.notifications.len(), 1);
        let steps: Vec<&str> = view.history.iter().map(|h| h.event.as_str()).collect();
        assert_eq!(
            steps,
            [
                "requested",
                "DriverAssigned",
                "DriverArrived",
                "TripStarted",
                "TripCompleted"
            ],
            "{backend}"
        );

        // Redelivered: at an offset already applied, or the same event at a later offset.
        let (first_at, first) = &records[1];
        assert!(
            !store
                .apply(*first_at, "c1", Some(first))
                .await
                .expect("skips")
        );
        assert!(
            !store
                .apply(at(Topic::RideEvents, 9), "c1", Some(first))
                .await
                .expect("skips")
        );
        assert_eq!(
            store.ride("r1").await.expect("reads"),
            Some(view),
            "{backend}"
        );
        assert_eq!(
            store.event_ids("r1").await.expect("ids").len(),
            records.len()
        );
        assert_eq!(store.ride("nope").await.expect("reads"), None);
        let counts = store.counts().await.expect("counts");
        assert_eq!(counts.get("completed"), Some(&1), "{backend}");
    }
}

/// SQLite takes one writer at a time. A sink that writes batch after batch must not starve
/// the API's idempotency claims on the same file: each waits its turn, not past the store's
/// five seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_keep_their_turn_beside_a_busy_sink_on_sqlite() {
    let url = databases::fresh_sqlite();
    let (sink, api) = (
        Store::connect(&url).await.expect("connects"),
        Store::connect(&url).await.expect("connects"),
    );
    let busy = tokio_util::sync::CancellationToken::new();
    let writing = {
        let busy = busy.clone();
        tokio::spawn(async move {
            let mut offset = 0;
            while !busy.is_cancelled() {
                let batch: Vec<_> = (0..200)
                    .map(|i| {
                        let ride = format!("sink-{}", offset + i);
                        let change = requested(&ride, "rider-sink", 1_000 + offset + i);
                        (at(Topic::RideRequests, offset + i), Some(change))
                    })
                    .collect();
                sink.apply_all("c1", &batch).await.expect("the sink writes");
                offset += 200;
            }
            offset
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let claims = futures::future::join_all((0..64).map(|n| {
        let api = api.clone();
        async move {
            let (rider, key, ride) = (
                format!("rider-{n}"),
                format!("key-{n}"),
                format!("ride-{n}"),
            );
            api.claim_key(&bimride_store::KeyClaim {
                rider_id: &rider,
                key: &key,
                ride_id: &ride,
                request: "{}",
                answer: "{}",
            })
            .await
        }
    }))
    .await;
    busy.cancel();
    let written = writing.await.expect("the sink joins");
    let failed: Vec<_> = claims.iter().filter_map(|c| c.as_ref().err()).collect();
    assert!(failed.is_empty(), "claims failed: {failed:?}");
    assert!(written > 0, "the sink wrote while the claims were made");
}

#[tokio::test]
async fn a_batch_folds_every_ride_it_touches_once_and_skips_what_it_repeats() {
    for (backend, url) in backends().await {
        let store = Store::connect(&url).await.expect("connects");
        let batch = vec![
            (
                at(Topic::RideRequests, 0),
                Some(requested("r1", "rider-1", 1_000)),
            ),
            (
                at(Topic::RideRequests, 1),
                Some(requested("r2", "rider-2", 1_100)),
            ),
            (at(Topic::RideEvents, 0), Some(assigned("r1", 2_000))),
            (at(Topic::RideEvents, 1), None),
            (at(Topic::RideEvents, 2), Some(arrived("r1", 2_500))),
            // The same event again at a later offset, within the batch.
            (at(Topic::RideEvents, 3), Some(assigned("r1", 2_000))),
            (at(Topic::RideEvents, 4), Some(assigned("r2", 2_100))),
            (at(Topic::Notifications, 0), Some(receipt("r2", 3_200))),
        ];
        assert_eq!(
            store.apply_all("c1", &batch).await.expect("applies"),
            6,
            "{backend}"
        );
        // The whole batch again: below every position, so nothing changes.
        assert_eq!(
            store.apply_all("c1", &batch).await.expect("applies"),
            0,
            "{backend}"
        );
        let r1 = store.ride("r1").await.expect("reads").expect("stored");
        assert_eq!(r1.status, RideStatus::DriverArrived, "{backend}");
        assert_eq!(r1.history.len(), 3, "{backend}");
        let r2 = store.ride("r2").await.expect("reads").expect("stored");
        assert_eq!(r2.status, RideStatus::Assigned, "{backend}");
        assert_eq!(r2.notifications.len(), 1, "{backend}");
        assert_eq!(store.event_ids("r1").await.expect("ids").len(), 3);
        let positions = store.positions("c1").await.expect("positions");
        assert_eq!(
            positions.get(&(Topic::RideEvents, 2)),
            Some(&5),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn totals_count_rides_by_how_far_they_got_and_sum_their_fares() {
    for (backend, url) in backends().await {
        let store = Store::connect(&url).await.expect("connects");
        assert_eq!(
            store.totals().await.expect("totals"),
            Totals::default(),
            "{backend}"
        );
        let batch = vec![
            (
                at(Topic::RideRequests, 0),
                Some(requested("r1", "rider-1", 1_000)),
            ),
            (
                at(Topic::RideRequests, 1),
                Some(requested("r2", "rider-2", 1_100)),
            ),
            (
                at(Topic::RideRequests, 2),
                Some(requested("r3", "rider-3", 1_200)),
            ),
            (at(Topic::RideEvents, 0), Some(assigned("r1", 2_000))),
            (at(Topic::RideEvents, 1), Some(arrived("r1", 2_500))),
            (at(Topic::RideEvents, 2), Some(started("r1", 2_600))),
            (at(Topic::RideEvents, 3), Some(completed("r1", 3_000))),
            (at(Topic::RideEvents, 4), Some(assigned("r2", 2_100))),
            (at(Topic::Payments, 0), Some(charged("r1", 3_100))),
        ];
        store.apply_all("c1", &batch).await.expect("applies");
        assert_eq!(
            store.totals().await.expect("totals"),
            Totals {
                requested: 3,
                assigned: 2,
                completed: 1,
                cancelled: 0,
                charges: 1,
                revenue_minor: 1_500,
                commission_minor: 375,
            },
            "{backend}"
        );
    }
}

#[tokio::test]
async fn positions_resume_and_a_new_cluster_keeps_the_rows_and_starts_over() {
    for (backend, url) in backends().await {
        let store = Store::connect(&url).await.expect("connects");
        store
            .apply(
                at(Topic::RideRequests, 41),
                "c1",
                Some(&requested("r1", "rider-1", 1)),
            )
            .await
            .expect("applies");
        // A record that changes no ride still moves the position.
        store
            .apply(at(Topic::RideEvents, 7), "c1", None)
            .await
            .expect("applies");
        let positions = store.positions("c1").await.expect("positions");
        assert_eq!(
            positions.get(&(Topic::RideRequests, 2)),
            Some(&42),
            "{backend}"
        );
        assert_eq!(
            positions.get(&(Topic::RideEvents, 2)),
            Some(&8),
            "{backend}"
        );

        let reopened = Store::connect(&url).await.expect("reconnects");
        assert!(
            reopened
                .positions("c2")
                .await
                .expect("positions")
                .is_empty(),
            "{backend}"
        );
        assert!(
            reopened.ride("r1").await.expect("reads").is_some(),
            "rows stay"
        );
        // On the new cluster the log starts again at 0, and its records are new.
        assert!(
            reopened
                .apply(at(Topic::RideEvents, 0), "c2", Some(&assigned("r1", 2)))
                .await
                .expect("applies")
        );
    }
}

#[tokio::test]
async fn a_riders_rides_come_newest_first_a_page_at_a_time() {
    for (backend, url) in backends().await {
        let store = Store::connect(&url).await.expect("connects");
        for n in 0..5 {
            store
                .apply(
                    at(Topic::RideRequests, n),
                    "c1",
                    Some(&requested(&format!("r{n}"), "rider-1", 1_000 + n)),
                )
                .await
                .expect("applies");
        }
        store
            .apply(
                at(Topic::RideRequests, 5),
                "c1",
                Some(&requested("x", "rider-2", 9_999)),
            )
            .await
            .expect("applies");
        let first = store.rides_of("rider-1", None, 2).await.expect("page");
        let ids = |p: &bimride_store::Page| -> Vec<String> {
            p.rides.iter().map(|r| r.ride_id.clone()).collect()
        };
        assert_eq!(ids(&first), ["r4", "r3"], "{backend}");
        let next = first.next.clone().expect("more");
        assert_eq!(
            next,
            Cursor {
                requested_at: 1_003,
                ride_id: "r3".into()
            }
        );
        let second = store
            .rides_of("rider-1", Some(&next), 2)
            .await
            .expect("page");
        assert_eq!(ids(&second), ["r2", "r1"]);
        let last = store
            .rides_of("rider-1", second.next.as_ref(), 2)
            .await
            .expect("page");
        assert_eq!(ids(&last), ["r0"]);
        assert_eq!(last.next, None, "{backend}");
    }
}

/// Waits until every record of ride `n` (its request and its completed trip) is stored.
/// The request and the trip lie on different topics, read in no set order, so a completed
/// ride may be stored a moment before its request.
async fn wait_stored(store: &Store, n: u32, deadline: tokio::time::Instant, what: &str) {
    let id = ride_requested(n).ride_id;
    let expected = 1 + completed_trip(n).len();
    loop {
        let completed = store
            .ride(&id)
            .await
            .expect("reads")
            .is_some_and(|v| v.status == RideStatus::Completed);
        let stored = store.event_ids(&id).await.expect("ids").len();
        assert!(
            stored <= expected,
            "{id}: {stored} records stored, {expected} sent"
        );
        if completed && stored == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} {what}: completed {completed}, {stored} of {expected} records stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The store as a service on both brokers: records in, rows out; stopped and started again,
/// it resumes from its positions and repeats no row.
async fn sink_resumes(broker: Broker) {
    let p = Pipeline::start(&broker).await;
    let database = bimride_store::Database {
        database_url: Some(databases::fresh_sqlite()),
        ..Default::default()
    };
    let settings = bimride_store::StoreSettings {
        database: database.clone(),
        group: p.group("store"),
    };
    let store = Store::connect(&database.url()).await.expect("store");
    let publish = |range: std::ops::Range<u32>| {
        let producer = p.producer.clone();
        async move {
            for n in range {
                producer
                    .send_and_wait(&bimride_events::DispatchEvent::from(ride_requested(n)))
                    .await
                    .expect("request");
                for e in completed_trip(n) {
                    producer.send_and_wait(&e).await.expect("event");
                }
            }
        }
    };
    let wait_for = |rides: std::ops::Range<u32>| {
        let store = store.clone();
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
            for n in rides {
                wait_stored(&store, n, deadline, "never stored").await;
            }
        }
    };
    publish(0..10).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let sink = p.spawn(settings.clone(), stop.clone());
    wait_for(0..10).await;
    stop.cancel();
    join_all(vec![sink]).await;

    publish(10..20).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let sink = p.spawn(settings, stop.clone());
    // The first ten again: resuming read nothing twice and skipped nothing.
    wait_for(0..20).await;
    stop.cancel();
    join_all(vec![sink]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_resumes_from_its_positions_on_apache_kafka() {
    sink_resumes(Broker::kafka()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_resumes_from_its_positions_on_the_embedded_cluster() {
    sink_resumes(Broker::embedded()).await;
}

/// A store whose positions lie past the end of the log (the topics were deleted and created
/// again) keeps its rows, reads the new log from its start, and misses none of it.
async fn sink_starts_a_recreated_log_over(broker: Broker) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let p = Pipeline::start(&broker).await;
    let database = bimride_store::Database {
        database_url: Some(databases::fresh_sqlite()),
        ..Default::default()
    };
    let store = Store::connect(&database.url()).await.expect("store");
    let client: BaseConsumer = p.config.client().create().expect("client");
    let requests = p.config.topics().name(Topic::RideRequests).to_owned();
    let (cluster, partitions) = tokio::task::spawn_blocking(move || {
        let wait = std::time::Duration::from_secs(30);
        let metadata = client
            .fetch_metadata(Some(&requests), wait)
            .expect("metadata");
        let partitions = metadata.topics()[0].partitions().len() as i32;
        (client.client().fetch_cluster_id(wait), partitions)
    })
    .await
    .expect("joins");
    let cluster = cluster.expect("cluster id");
    assert!(partitions > 0, "the topics exist");
    // The old log's rides, and positions far past anything the new log holds.
    store
        .apply(
            at(Topic::RideRequests, 999),
            &cluster,
            Some(&requested("old-ride", "rider-1", 1)),
        )
        .await
        .expect("applies");
    let mut old = bimride_kafka::partitioned::Positions::new();
    for topic in [
        Topic::RideRequests,
        Topic::RideEvents,
        Topic::Payments,
        Topic::Notifications,
    ] {
        for partition in 0..partitions {
            old.insert((topic, partition), 1_000);
        }
    }
    store.start_at(&cluster, &old).await.expect("positions");

    for n in 0..10 {
        p.producer
            .send_and_wait(&bimride_events::DispatchEvent::from(ride_requested(n)))
            .await
            .expect("request");
        for e in completed_trip(n) {
            p.producer.send_and_wait(&e).await.expect("event");
        }
    }
    let settings = bimride_store::StoreSettings {
        database,
        group: p.group("store"),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let sink = p.spawn(settings, stop.clone());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    for n in 0..10 {
        wait_stored(&store, n, deadline, "of the new log never stored").await;
    }
    assert!(
        store.ride("old-ride").await.expect("reads").is_some(),
        "the old log's rides stay"
    );
    let positions = store.positions(&cluster).await.expect("positions");
    assert!(
        positions.values().all(|next| *next < 1_000),
        "positions follow the new log: {positions:?}"
    );
    stop.cancel();
    join_all(vec![sink]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_starts_a_recreated_log_over_on_apache_kafka() {
    sink_starts_a_recreated_log_over(Broker::kafka()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_starts_a_recreated_log_over_on_the_embedded_cluster() {
    sink_starts_a_recreated_log_over(Broker::embedded()).await;
}

/// Started before its topics exist, as on a cluster still being provisioned, the store waits
/// for them: it neither reads them as topics with no partitions nor gives up while their
/// first leaders are elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_waits_for_topics_created_after_it_starts_on_apache_kafka() {
    let broker = Broker::kafka();
    let p = Pipeline::start(&broker).await;
    let mut later = p.config.clone();
    later.namespace = format!("{}-later", p.config.namespace);
    let codec = bimride_tests::codec(&p.registry, &later);
    let database = bimride_store::Database {
        database_url: Some(databases::fresh_sqlite()),
        ..Default::default()
    };
    let store = Store::connect(&database.url()).await.expect("store");
    let stop = tokio_util::sync::CancellationToken::new();
    let cx = bimride_kafka::service::Context {
        kafka: later.clone(),
        codec: std::sync::Arc::clone(&codec),
        city: bimride_domain::City::amsterdam(),
        shutdown: stop.clone(),
    };
    let settings = bimride_store::StoreSettings {
        database,
        group: p.group("store-later"),
    };
    let sink =
        tokio::spawn(async move { Ok(bimride_kafka::service::run(Box::new(settings), cx).await?) });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    broker.provision(&later).await;
    let producer = bimride_kafka::EventProducer::new(&later, codec).expect("producer");
    for n in 0..5 {
        producer
            .send_and_wait(&bimride_events::DispatchEvent::from(ride_requested(n)))
            .await
            .expect("request");
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    for n in 0..5 {
        let id = ride_requested(n).ride_id;
        while store.ride(&id).await.expect("reads").is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id}, booked once its topic existed, never stored"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    stop.cancel();
    join_all(vec![sink]).await;
}

/// The business dashboard's SQL panels, run as Grafana runs them: as the read-only login that
/// `deploy/postgres` creates, with the time range in place of Grafana's macros.
#[tokio::test]
async fn the_business_panels_give_rides_and_revenue_per_hour_and_zone_from_the_store() {
    use sqlx::postgres::PgConnectOptions;
    use sqlx::{ConnectOptions, Row};
    let url = databases::fresh_postgres().await;
    let owner: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(user, _)| user.split_once(':'))
        .map_or("", |(_, password)| password);
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let script = deploy.join("postgres/grafana-reader.sh");
    let status = std::process::Command::new("sh")
        .arg(&script)
        .env("POSTGRES_USER", owner.get_username())
        .env("POSTGRES_DB", owner.get_database().expect("a database"))
        .env("GRAFANA_DB_PASSWORD", "reader-test")
        .env("PGHOST", owner.get_host())
        .env("PGPORT", owner.get_port().to_string())
        .env("PGPASSWORD", password)
        .status()
        .expect("sh runs the reader's set-up");
    assert!(status.success(), "{script:?}: {status}");
    // As in compose: the database and its reader first, then the migrations.
    let store = Store::connect(&url).await.expect("connects");
    let hour = 3_600_000;
    let in_zone = |ride: &str, zone: &str, ms: i64| match requested(ride, "rider-1", ms) {
        Change::Requested(r) => Change::Requested(RideRequested {
            region: zone.into(),
            ..r
        }),
        other => other,
    };
    let batch = vec![
        (
            at(Topic::RideRequests, 0),
            Some(in_zone("r1", "zone-a", 10 * hour + 5)),
        ),
        (
            at(Topic::RideRequests, 1),
            Some(in_zone("r2", "zone-a", 10 * hour + 900_000)),
        ),
        (
            at(Topic::RideRequests, 2),
            Some(in_zone("r3", "zone-b", 11 * hour + 1)),
        ),
        (
            at(Topic::Payments, 0),
            Some(charged("r1", 10 * hour + 2_000_000)),
        ),
        (
            at(Topic::Payments, 1),
            Some(charged("r3", 11 * hour + 2_000_000)),
        ),
    ];
    store.apply_all("c1", &batch).await.expect("applies");

    let mut reader = owner
        .clone()
        .username("grafana_reader")
        .password("reader-test")
        .connect()
        .await
        .expect("the reader logs in");
    assert!(
        sqlx::query("DELETE FROM rides")
            .execute(&mut reader)
            .await
            .is_err(),
        "the reader cannot write"
    );
    let text = std::fs::read_to_string(deploy.join("grafana/dashboards/business.json"))
        .expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["datasource"]["uid"] != "bimride-postgres" {
            continue;
        }
        let sql = panel["targets"][0]["rawSql"]
            .as_str()
            .expect("rawSql")
            .replace("$__unixEpochFrom()", "0")
            .replace("$__unixEpochTo()", "4102444800");
        // Each panel gives (time, metric, value): Grafana's time series in long form.
        let rows = sqlx::query(&format!(
            "SELECT extract(epoch FROM p.t)::bigint, p.metric, p.value::float8 \
             FROM ({sql}) AS p (t, metric, value)"
        ))
        .fetch_all(&mut reader)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", panel["title"]));
        let got: Vec<(i64, String, f64)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        panels.push(got);
    }
    let at_hour = |h: i64| h * 3_600;
    assert_eq!(
        panels,
        [
            // Rides per hour per zone.
            vec![
                (at_hour(10), "zone-a".to_owned(), 2.0),
                (at_hour(11), "zone-b".to_owned(), 1.0)
            ],
            // Revenue in euros: only charged rides bring any.
            vec![
                (at_hour(10), "zone-a".to_owned(), 15.0),
                (at_hour(11), "zone-b".to_owned(), 15.0)
            ],
        ]
    );
}
