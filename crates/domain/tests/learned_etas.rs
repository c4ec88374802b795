//! A seeded run of pickups through the city's traffic (a congested centre, rush hours): the
//! pickup ETA from distance alone, against the same ETA corrected by what the model had
//! learned before each pickup, which it then learns from. Both mean absolute errors are
//! printed; the corrected one must be at least 30% lower.

use bimride_domain::City;
use bimride_domain::eta::EtaModel;
use bimride_domain::matching::eta_secs;
use bimride_domain::traffic::Traffic;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

const SEED: u64 = 7;
const PICKUPS: usize = 30_000;

/// A point `metres` from `from` on `heading` (radians from north).
fn offset(from: (f64, f64), metres: f64, heading: f64) -> (f64, f64) {
    let dlat = metres * heading.cos() / 111_320.0;
    let dlng = metres * heading.sin() / (111_320.0 * from.0.to_radians().cos());
    (from.0 + dlat, from.1 + dlng)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut SmallRng) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    let v: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Mean absolute errors, in seconds: (distance only, corrected), and the slots learned.
fn run(seed: u64) -> (f64, f64, usize) {
    let city = City::amsterdam();
    let traffic = Traffic::of(&city);
    let centre = (city.centre_lat, city.centre_lng);
    let radius = city.radius_km * 1_000.0;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut model = EtaModel::default();
    let (mut plain, mut corrected) = (0.0, 0.0);
    let mut minutes = 0.0;
    for _ in 0..PICKUPS {
        minutes += rng.random_range(0.0..6.0);
        let hour = ((minutes / 60.0) as u64 % 24) as u8;
        // Pickups spread evenly over the disc; the driver within the matching distance.
        let pickup = offset(
            centre,
            radius * 0.9 * rng.random_range(0.0f64..1.0).sqrt(),
            rng.random_range(0.0..std::f64::consts::TAU),
        );
        let driver = offset(
            pickup,
            rng.random_range(200.0..2_500.0),
            rng.random_range(0.0..std::f64::consts::TAU),
        );
        let estimated = f64::from(eta_secs(City::distance_m(driver, pickup)));
        // Traffic, and the rest of life: lights, parking, a wrong turn.
        let actual = traffic.travel_secs(driver, pickup, hour) * (0.15 * normal(&mut rng)).exp();
        plain += (estimated - actual).abs();
        corrected += (model.corrected_secs(estimated, pickup, hour) - actual).abs();
        model.observe(pickup, hour, estimated, actual);
    }
    let n = PICKUPS as f64;
    (plain / n, corrected / n, model.slots())
}

#[test]
#[allow(clippy::print_stderr)]
fn corrected_pickup_etas_are_at_least_30_percent_closer_than_distance_alone() {
    let (plain, corrected, slots) = run(SEED);
    eprintln!(
        "seed {SEED}, {PICKUPS} pickups, {slots} cells×hours learned: pickup ETA mean absolute error {plain:.1} s from distance alone, {corrected:.1} s corrected ({:.0}% lower)",
        100.0 * (1.0 - corrected / plain)
    );
    assert!(
        corrected <= 0.7 * plain,
        "corrected MAE {corrected:.1} s is not 30% below {plain:.1} s"
    );
    // The run is deterministic: the same seed gives the same figures.
    assert_eq!(run(SEED), (plain, corrected, slots));
}
