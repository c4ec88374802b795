//! Encode plus decode of one event through the Confluent wire format, after warm-up, beside
//! serde_json on the same value as an in-process baseline.

use bimride_codec::*;
use bimride_events::*;
use bimride_registry::Registry;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tokio_util::sync::CancellationToken;

// The allocator the `bimride` binary runs with: decoding allocates every string it reads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn sample_request() -> DispatchEvent {
    DispatchEvent::Requested(RideRequested {
        event_id: "0195f2a4-7c1e-7d3a-9a61-3c8a2f0e9b11".into(),
        occurred_at: Millis(1_764_000_000_000),
        ride_id: "ride-0195f2a4-7c1e".into(),
        rider_id: "rider-42".into(),
        product: Product::Economy,
        pickup: GeoPoint {
            lat: 52.3702,
            lng: 4.8952,
        },
        dropoff: GeoPoint {
            lat: 52.3584,
            lng: 4.8811,
        },
        region: "851f1d4bfffffff".into(),
        pickup_cell: "891f1d48a63ffff".into(),
        quote: Money {
            amount_minor: 1_480,
            currency: "EUR".into(),
        },
        surge_milli: 1_250,
        idempotency_key: Some("b2c1f1f0".into()),
        quoted_duration_secs: None,
    })
}

fn sample_assigned() -> RideEvent {
    DriverAssigned {
        event_id: "0195f2a4-7c1e-7d3a-9a61-3c8a2f0e9b12".into(),
        occurred_at: Millis(1_764_000_000_500),
        ride_id: "ride-0195f2a4-7c1e".into(),
        rider_id: "rider-42".into(),
        driver_id: "driver-7".into(),
        vehicle: Vehicle {
            plate: "GX-123-B".into(),
            model: "Toyota Prius".into(),
            colour: "white".into(),
        },
        pickup_eta_secs: 240,
        region: "851f1d4bfffffff".into(),
        product: Some(Product::Economy),
        surge_milli: 1_000,
        distance_eta_secs: None,
        quoted_duration_secs: None,
    }
    .into()
}

/// The commonest record: a driver's app says where it is.
fn sample_location() -> SupplyEvent {
    SupplyEvent::Location(DriverLocationUpdated {
        event_id: "0195f2a4-7c1e-7d3a-9a61-3c8a2f0e9b13".into(),
        occurred_at: Millis(1_764_000_000_900),
        driver_id: "driver-7".into(),
        position: GeoPoint {
            lat: 52.3702,
            lng: 4.8952,
        },
        region: "851f1d4bfffffff".into(),
        cell: "891f1d48a63ffff".into(),
    })
}

fn codec(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let codec = rt.block_on(async {
        let server = bimride_registry::serve(
            Registry::in_memory(),
            "127.0.0.1:0".parse().expect("addr"),
            CancellationToken::new(),
        )
        .await
        .expect("registry");
        let codec = Codec::new(&RegistryConfig::new(server.url())).expect("codec");
        codec.register_all().await.expect("register");
        std::mem::forget(server);
        codec
    });
    let request = sample_request();
    let assigned = sample_assigned();
    let location = sample_location();
    // Warm the decoder's cache so the loop measures codec work only.
    rt.block_on(async {
        let b = codec.encode(&request).await.expect("encode");
        codec.decode::<DispatchEvent>(&b).await.expect("decode");
        let b = codec.encode(&assigned).await.expect("encode");
        codec.decode::<RideEvent>(&b).await.expect("decode");
        let b = codec.encode(&location).await.expect("encode");
        codec.decode::<SupplyEvent>(&b).await.expect("decode");
    });

    let mut group = c.benchmark_group("encode+decode");
    group.bench_function("avro_wire/ride_requested", |b| {
        b.to_async(&rt).iter(|| async {
            let bytes = codec.encode(black_box(&request)).await.expect("encode");
            black_box(codec.decode::<DispatchEvent>(&bytes).await.expect("decode"))
        })
    });
    group.bench_function("avro_wire/ride_event_union", |b| {
        b.to_async(&rt).iter(|| async {
            let bytes = codec.encode(black_box(&assigned)).await.expect("encode");
            black_box(codec.decode::<RideEvent>(&bytes).await.expect("decode"))
        })
    });
    group.bench_function("avro_wire/driver_location", |b| {
        b.to_async(&rt).iter(|| async {
            let bytes = codec.encode(black_box(&location)).await.expect("encode");
            black_box(codec.decode::<SupplyEvent>(&bytes).await.expect("decode"))
        })
    });
    // The reference implementation on the same path (schema compiled once, bytes straight to
    // the type), as the codec ran before it moved to serde_avro_fast.
    let schema =
        apache_avro::Schema::parse_str(&Topic::RideRequests.value_schema_json()).expect("schema");
    let resolved = || apache_avro::schema::ResolvedSchema::try_from(&schema).expect("resolves");
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .resolved_schemata(resolved())
        .build()
        .expect("writer");
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .resolved_writer_schemata(resolved())
        .build()
        .expect("reader");
    group.bench_function("baseline_apache_avro_datum/ride_requested", |b| {
        b.iter(|| {
            let mut bytes = Vec::with_capacity(256);
            writer
                .write_ser(&mut bytes, black_box(&request))
                .expect("encode");
            black_box(
                reader
                    .read_deser::<DispatchEvent>(&mut &bytes[..])
                    .expect("decode"),
            )
        })
    });
    // The datum alone, without the wire header, the schema-id lookup or the async call.
    let fast: serde_avro_fast::Schema = Topic::RideRequests
        .value_schema_json()
        .parse()
        .expect("schema");
    group.bench_function("datum_serde_avro_fast/ride_requested", |b| {
        b.iter(|| {
            let mut config = serde_avro_fast::ser::SerializerConfig::new(&fast);
            let bytes = serde_avro_fast::to_datum(
                black_box(&request),
                Vec::with_capacity(256),
                &mut config,
            )
            .expect("encode");
            black_box(
                serde_avro_fast::from_datum_slice::<DispatchEvent>(&bytes, &fast).expect("decode"),
            )
        })
    });
    group.bench_function("baseline_serde_json/ride_requested", |b| {
        b.iter(|| {
            let bytes = serde_json::to_vec(black_box(&request)).expect("encode");
            black_box(serde_json::from_slice::<DispatchEvent>(&bytes).expect("decode"))
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
