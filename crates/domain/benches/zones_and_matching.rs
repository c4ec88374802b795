//! Zone lookup and driver matching, each beside an in-process baseline: the bare H3 index
//! for lookup, and a scan of every driver for matching.

use std::collections::BTreeSet;
use std::hint::black_box;

use bimride_domain::City;
use bimride_domain::matching::{Driver, Supply};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use h3o::{LatLng, Resolution};

/// Deterministic points spread over the city (a simple LCG: no randomness crate needed).
fn points(city: &City, n: usize) -> Vec<(f64, f64)> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let span = city.radius_km / 111.0 * 0.7;
    (0..n)
        .map(|_| {
            (
                city.centre_lat + (next() * 2.0 - 1.0) * span,
                city.centre_lng + (next() * 2.0 - 1.0) * span * 1.6,
            )
        })
        .collect()
}

fn zones(c: &mut Criterion) {
    let city = City::amsterdam();
    let pts = points(&city, 1024);
    let mut group = c.benchmark_group("zone lookup");
    let mut i = 0;
    group.bench_function("City::locate (validate, cell, region)", |b| {
        b.iter(|| {
            i = (i + 1) % pts.len();
            let (lat, lng) = pts[i];
            black_box(city.locate(black_box(lat), black_box(lng)).expect("inside"))
        });
    });
    group.bench_function("baseline: h3o LatLng::to_cell", |b| {
        b.iter(|| {
            i = (i + 1) % pts.len();
            let (lat, lng) = pts[i];
            black_box(
                LatLng::new(black_box(lat), black_box(lng))
                    .expect("valid")
                    .to_cell(Resolution::Eight),
            )
        });
    });
    group.finish();
}

fn matching(c: &mut Criterion) {
    let city = City::amsterdam();
    let none = BTreeSet::new();
    let mut group = c.benchmark_group("matching");
    for drivers in [300usize, 3_000] {
        let mut supply = Supply::default();
        let fleet = points(&city, drivers);
        for (n, &(lat, lng)) in fleet.iter().enumerate() {
            let zone = city.locate(lat, lng).expect("inside");
            supply.upsert(
                &format!("driver-{n}"),
                Driver {
                    position: (lat, lng),
                    cell: zone.cell,
                    product: 0,
                    available: true,
                },
            );
        }
        let pickups: Vec<_> = points(&city, 256)
            .into_iter()
            .map(|(lat, lng)| ((lat, lng), city.locate(lat, lng).expect("inside").cell))
            .collect();
        let mut i = 0;
        group.bench_with_input(
            BenchmarkId::new("Supply::best, 3 rings", drivers),
            &drivers,
            |b, _| {
                b.iter(|| {
                    i = (i + 1) % pickups.len();
                    let (p, cell) = pickups[i];
                    black_box(supply.best(p, cell, 0, 3, &none))
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new("baseline: scan every driver", drivers),
            &drivers,
            |b, _| {
                b.iter(|| {
                    i = (i + 1) % pickups.len();
                    let (p, _) = pickups[i];
                    black_box(
                        fleet
                            .iter()
                            .map(|&d| City::distance_m(p, d))
                            .fold(f64::INFINITY, f64::min),
                    )
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, zones, matching);
criterion_main!(benches);
