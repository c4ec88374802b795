//! Round-trips every event through the Confluent wire format against a live registry on
//! loopback, and proves that schemas are cached.

use std::sync::{Arc, OnceLock};

use bimride_codec::*;
use bimride_events::*;
use bimride_registry::Registry;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tokio_util::sync::CancellationToken;

struct Fixture {
    rt: tokio::runtime::Runtime,
    registry: Arc<Registry>,
    codec: Codec,
}

/// One registry and codec for the whole file: proptest cases run many times.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(new_fixture)
}

/// A registry and codec of its own, for a test that counts registry calls while the other
/// tests run in parallel.
fn new_fixture() -> Fixture {
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (registry, codec) = rt.block_on(async {
            let server = bimride_registry::serve(
                Registry::in_memory(),
                "127.0.0.1:0".parse().expect("addr"),
                CancellationToken::new(),
            )
            .await
            .expect("registry starts");
            let codec = Codec::new(&RegistryConfig::new(server.url())).expect("codec");
            codec.register_all().await.expect("schemas register");
            (server.registry, codec)
        });
        Fixture {
            rt,
            registry,
            codec,
        }
    }
}

/// The Avro binary datum of `value` as apache-avro, the reference implementation, writes it.
fn reference_datum<T: TopicValue>(value: &T) -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(&T::TOPIC.value_schema_json()).expect("parses");
    let resolved = apache_avro::schema::ResolvedSchema::try_from(&schema).expect("resolves");
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .resolved_schemata(resolved)
        .build()
        .expect("a writer");
    let mut datum = Vec::new();
    writer
        .write_ser(&mut datum, value)
        .expect("apache-avro writes it");
    datum
}

/// Encodes and decodes `value`, and checks the bytes against the reference implementation's,
/// both ways: the wire format is Avro's, whichever library writes it.
fn roundtrip<T: TopicValue + PartialEq + std::fmt::Debug>(value: &T) -> T {
    let f = fixture();
    f.rt.block_on(async {
        let bytes = f.codec.encode(value).await.expect("encodes");
        assert_eq!(bytes[0], 0, "magic byte");
        let reference = reference_datum(value);
        assert_eq!(
            bytes[5..],
            reference[..],
            "the datum differs from apache-avro's"
        );
        let mut written_elsewhere = bytes[..5].to_vec();
        written_elsewhere.extend_from_slice(&reference);
        let decoded = f.codec.decode::<T>(&bytes).await.expect("decodes");
        assert_eq!(
            f.codec
                .decode::<T>(&written_elsewhere)
                .await
                .expect("decodes"),
            decoded
        );
        decoded
    })
}

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,36}"
}
fn text() -> impl Strategy<Value = String> {
    any::<String>()
}
fn millis() -> impl Strategy<Value = Millis> {
    (0i64..4_102_444_800_000).prop_map(Millis)
}
fn point() -> impl Strategy<Value = GeoPoint> {
    (-90.0f64..=90.0, -180.0f64..=180.0).prop_map(|(lat, lng)| GeoPoint { lat, lng })
}
fn money() -> impl Strategy<Value = Money> {
    (any::<i64>(), "[A-Z]{3}").prop_map(|(amount_minor, currency)| Money {
        amount_minor,
        currency,
    })
}
fn product() -> impl Strategy<Value = Product> {
    prop_oneof![
        Just(Product::Economy),
        Just(Product::Comfort),
        Just(Product::Xl)
    ]
}
fn vehicle() -> impl Strategy<Value = Vehicle> {
    (text(), text(), text()).prop_map(|(plate, model, colour)| Vehicle {
        plate,
        model,
        colour,
    })
}

prop_compose! {
    fn ride_requested()(event_id in id(), occurred_at in millis(), ride_id in id(), rider_id in id(),
        product in product(), pickup in point(), dropoff in point(), region in id(), pickup_cell in id(),
        quote in money(), surge_milli in any::<i32>(), idempotency_key in proptest::option::of(text()),
        quoted_duration_secs in proptest::option::of(any::<i64>()))
        -> RideRequested {
        RideRequested { event_id, occurred_at, ride_id, rider_id, product, pickup, dropoff, region,
            pickup_cell, quote, surge_milli, idempotency_key, quoted_duration_secs }
    }
}

prop_compose! {
    fn offer_sent()(event_id in id(), occurred_at in millis(), ride_id in id(), offer_id in id(),
        driver_id in id(), attempt in any::<i32>(), pickup_eta_secs in any::<i32>(), expires_at in millis(),
        region in id(), pickup in proptest::option::of(point()), dropoff in proptest::option::of(point()))
        -> OfferSent {
        OfferSent { event_id, occurred_at, ride_id, offer_id, driver_id, attempt, pickup_eta_secs,
            expires_at, region, pickup, dropoff }
    }
}

prop_compose! {
    fn offer_answered()(event_id in id(), occurred_at in millis(), ride_id in id(), offer_id in id(),
        driver_id in id(),
        answer in prop_oneof![Just(OfferAnswer::Accepted), Just(OfferAnswer::Declined), Just(OfferAnswer::Expired)],
        region in id()) -> OfferAnswered {
        OfferAnswered { event_id, occurred_at, ride_id, offer_id, driver_id, answer, region }
    }
}

prop_compose! {
    fn driver_assigned()(event_id in id(), occurred_at in millis(), ride_id in id(), rider_id in id(),
        driver_id in id(), vehicle in vehicle(), pickup_eta_secs in any::<i32>(), region in id(),
        product in proptest::option::of(product()), surge_milli in any::<i32>(),
        distance_eta_secs in proptest::option::of(any::<i32>()),
        quoted_duration_secs in proptest::option::of(any::<i64>()))
        -> DriverAssigned {
        DriverAssigned { event_id, occurred_at, ride_id, rider_id, driver_id, vehicle, pickup_eta_secs, region,
            product, surge_milli, distance_eta_secs, quoted_duration_secs }
    }
}

prop_compose! {
    fn ride_cancelled()(event_id in id(), occurred_at in millis(), ride_id in id(), rider_id in id(),
        driver_id in proptest::option::of(id()),
        by in prop_oneof![Just(CancelledBy::Rider), Just(CancelledBy::Driver), Just(CancelledBy::System)],
        reason in text(), region in id()) -> RideCancelled {
        RideCancelled { event_id, occurred_at, ride_id, rider_id, driver_id, by, reason, region }
    }
}

prop_compose! {
    fn trip_step()(event_id in id(), occurred_at in millis(), ride_id in id(), driver_id in id())
        -> (String, Millis, String, String) {
        (event_id, occurred_at, ride_id, driver_id)
    }
}

prop_compose! {
    fn trip_telemetry()(head in trip_step(), position in point(), distance_m in any::<i64>()) -> TripTelemetry {
        let (event_id, occurred_at, ride_id, driver_id) = head;
        TripTelemetry { event_id, occurred_at, ride_id, driver_id, position, distance_m }
    }
}

prop_compose! {
    fn trip_completed()(head in trip_step(), rider_id in id(), distance_m in any::<i64>(),
        duration_secs in any::<i64>(), dropoff in point()) -> TripCompleted {
        let (event_id, occurred_at, ride_id, driver_id) = head;
        TripCompleted { event_id, occurred_at, ride_id, rider_id, driver_id, distance_m, duration_secs, dropoff }
    }
}

fn ride_event() -> impl Strategy<Value = RideEvent> {
    prop_oneof![
        offer_sent().prop_map(RideEvent::from),
        offer_answered().prop_map(RideEvent::from),
        driver_assigned().prop_map(RideEvent::from),
        trip_step().prop_map(|(event_id, occurred_at, ride_id, driver_id)| {
            DriverArrived {
                rider_id: format!("rider-of-{ride_id}"),
                event_id,
                occurred_at,
                ride_id,
                driver_id,
            }
            .into()
        }),
        trip_step().prop_map(|(event_id, occurred_at, ride_id, driver_id)| {
            TripStarted {
                rider_id: format!("rider-of-{ride_id}"),
                event_id,
                occurred_at,
                ride_id,
                driver_id,
            }
            .into()
        }),
        trip_telemetry().prop_map(RideEvent::from),
        trip_completed().prop_map(RideEvent::from),
        ride_cancelled().prop_map(RideEvent::from),
    ]
}

fn dispatch_event() -> impl Strategy<Value = DispatchEvent> {
    prop_oneof![
        ride_requested().prop_map(DispatchEvent::from),
        ride_cancelled().prop_map(DispatchEvent::from),
        driver_assigned().prop_map(DispatchEvent::from),
    ]
}

fn supply_event() -> impl Strategy<Value = SupplyEvent> {
    let status = prop_oneof![
        Just(DriverStatus::Offline),
        Just(DriverStatus::Available),
        Just(DriverStatus::EnRoute),
        Just(DriverStatus::OnTrip)
    ];
    let status_changed = (
        id(),
        millis(),
        id(),
        status,
        point(),
        id(),
        product(),
        vehicle(),
    )
        .prop_map(
            |(event_id, occurred_at, driver_id, status, position, region, product, vehicle)| {
                SupplyEvent::from(DriverStatusChanged {
                    event_id,
                    occurred_at,
                    driver_id,
                    status,
                    position,
                    region,
                    product,
                    vehicle,
                })
            },
        );
    let location = (id(), millis(), id(), point(), id(), id()).prop_map(
        |(event_id, occurred_at, driver_id, position, region, cell)| {
            SupplyEvent::from(DriverLocationUpdated {
                event_id,
                occurred_at,
                driver_id,
                position,
                region,
                cell,
            })
        },
    );
    prop_oneof![
        status_changed,
        location,
        offer_answered().prop_map(SupplyEvent::from)
    ]
}

prop_compose! {
    fn surge_updated()(event_id in id(), occurred_at in millis(), cell in id(), multiplier_milli in any::<i32>(),
        demand in any::<i32>(), supply in any::<i32>(), window_end in millis()) -> SurgeUpdated {
        SurgeUpdated { event_id, occurred_at, cell, multiplier_milli, demand, supply, window_end }
    }
}

prop_compose! {
    fn fare_charged()(event_id in id(), occurred_at in millis(), ride_id in id(), rider_id in id(),
        driver_id in proptest::option::of(id()),
        kind in prop_oneof![Just(ChargeKind::Trip), Just(ChargeKind::CancellationFee)],
        fare in money(), parts in (any::<i64>(), any::<i64>(), any::<i64>()), surge_milli in any::<i32>(),
        commission in money(), payout in money()) -> FareCharged {
        FareCharged { event_id, occurred_at, ride_id, rider_id, driver_id, kind, fare, base_minor: parts.0,
            distance_minor: parts.1, time_minor: parts.2, surge_milli, commission, payout }
    }
}

prop_compose! {
    fn notification()(event_id in id(), occurred_at in millis(), notification_id in id(),
        recipient_kind in prop_oneof![Just(RecipientKind::Rider), Just(RecipientKind::Driver)],
        recipient_id in id(), ride_id in proptest::option::of(id()), template in text(), text in text())
        -> Notification {
        Notification { event_id, occurred_at, notification_id, recipient_kind, recipient_id, ride_id, template, text }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn dispatch_events_roundtrip(e in dispatch_event()) { prop_assert_eq!(roundtrip(&e), e); }

    #[test]
    fn ride_events_roundtrip(e in ride_event()) { prop_assert_eq!(roundtrip(&e), e); }

    #[test]
    fn supply_events_roundtrip(e in supply_event()) { prop_assert_eq!(roundtrip(&e), e); }

    #[test]
    fn surge_updated_roundtrips(e in surge_updated()) { prop_assert_eq!(roundtrip(&e), e); }

    #[test]
    fn fare_charged_roundtrips(e in fare_charged()) { prop_assert_eq!(roundtrip(&e), e); }

    #[test]
    fn notification_roundtrips(e in notification()) { prop_assert_eq!(roundtrip(&e), e); }
}

#[test]
fn no_registry_calls_after_warm_up() {
    let f = &new_fixture();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let events: Vec<RideEvent> = (0..200)
        .map(|_| ride_event().new_tree(&mut runner).expect("value").current())
        .collect();
    let requests: Vec<DispatchEvent> = (0..200)
        .map(|_| {
            dispatch_event()
                .new_tree(&mut runner)
                .expect("value")
                .current()
        })
        .collect();
    f.rt.block_on(async {
        // Warm-up: one record of each topic in each direction.
        roundtrip_async(&f.codec, &events[0]).await;
        roundtrip_async(&f.codec, &requests[0]).await;
        let before = f.registry.requests_served();
        for (e, r) in events.iter().zip(&requests) {
            assert_eq!(&roundtrip_async(&f.codec, e).await, e);
            assert_eq!(&roundtrip_async(&f.codec, r).await, r);
        }
        assert_eq!(
            f.registry.requests_served(),
            before,
            "400 records after warm-up must not touch the registry"
        );
    });
}

async fn roundtrip_async<T: TopicValue>(codec: &Codec, v: &T) -> T {
    let bytes = codec.encode(v).await.expect("encodes");
    codec.decode(&bytes).await.expect("decodes")
}

#[test]
fn bad_records_get_precise_errors() {
    let f = fixture();
    f.rt.block_on(async {
        let garbage = f.codec.decode::<RideEvent>(b"not avro at all").await;
        assert!(
            matches!(garbage, Err(CodecError::NotWireFormat(_))),
            "{garbage:?}"
        );
        let short = f.codec.decode::<RideEvent>(&[0, 0]).await;
        assert!(matches!(short, Err(CodecError::NotWireFormat(_))));
        let unknown = f.codec.decode::<RideEvent>(&[0, 0, 0, 0x7f, 0x7f, 2]).await;
        assert!(
            matches!(unknown, Err(CodecError::UnknownSchema(0x7f7f))),
            "{unknown:?}"
        );
        assert_eq!(unknown.expect_err("error").reason(), "unknown_schema_id");
        // A valid header whose datum is cut short.
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let e = DispatchEvent::from(
            ride_requested()
                .new_tree(&mut runner)
                .expect("value")
                .current(),
        );
        let bytes = f.codec.encode(&e).await.expect("encodes");
        let cut = f.codec.decode::<DispatchEvent>(&bytes[..8]).await;
        assert!(
            matches!(cut, Err(CodecError::Undecodable { .. })),
            "{cut:?}"
        );
        // A record of another topic's schema does not fit.
        let wrong = f.codec.decode::<SurgeUpdated>(&bytes).await;
        assert!(
            matches!(wrong, Err(CodecError::Mismatch { .. })),
            "{wrong:?}"
        );
    });
}
