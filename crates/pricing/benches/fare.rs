//! Pricing one trip, beside an in-process baseline: the great-circle distance alone, which
//! every quote computes first.

use std::hint::black_box;

use bimride_domain::City;
use bimride_events::Product;
use criterion::{Criterion, criterion_group, criterion_main};

fn fare(c: &mut Criterion) {
    let from = (52.3731, 4.8922);
    let to = (52.3584, 4.8811);
    let mut group = c.benchmark_group("fare");
    group.bench_function("pricing::quote (distance, time, surge, minimum)", |b| {
        b.iter(|| {
            black_box(bimride_pricing::quote(
                black_box(Product::Comfort),
                black_box(from),
                black_box(to),
                black_box(1_350),
            ))
        });
    });
    group.bench_function("baseline: City::distance_m", |b| {
        b.iter(|| black_box(City::distance_m(black_box(from), black_box(to))));
    });
    group.finish();
}

criterion_group!(benches, fare);
criterion_main!(benches);
