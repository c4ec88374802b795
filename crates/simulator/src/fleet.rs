//! The drivers: where they are, what they are doing, and the events their apps send.
//! Pure state: the caller feeds it time and ride events, and publishes what it returns.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use bimride_domain::City;
use bimride_domain::matching::regions_touched;
use bimride_domain::traffic::Traffic;
use bimride_events::{
    CancelledBy, DriverArrived, DriverLocationUpdated, DriverStatus, DriverStatusChanged, GeoPoint,
    Millis, OfferAnswer, OfferAnswered, Product, RideCancelled, RideEvent, SupplyEvent,
    TripCompleted, TripStarted, TripTelemetry, Vehicle,
};
use lru::LruCache;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// What the fleet asks to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Supply(SupplyEvent),
    Ride(RideEvent),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetSettings {
    pub drivers: usize,
    /// Share of offers an idle driver accepts.
    pub accept_ratio: f64,
    /// Simulated seconds per real second.
    pub speedup: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Offline {
        until: f64,
    },
    Idle {
        heading: f64,
    },
    /// Accepted an offer; waiting for dispatch to confirm.
    Accepted {
        ride: String,
        since: f64,
    },
    ToPickup {
        ride: String,
        rider: String,
    },
    AtPickup {
        ride: String,
        rider: String,
        until: f64,
    },
    OnTrip {
        ride: String,
        rider: String,
        started: f64,
        metres: f64,
        last_telemetry: f64,
    },
}

#[derive(Debug, Clone)]
struct SimDriver {
    id: String,
    vehicle: Vehicle,
    product: Product,
    at: (f64, f64),
    phase: Phase,
    /// Pickup and drop-off of the rides this driver was offered, by ride.
    offers: HashMap<String, (GeoPoint, GeoPoint)>,
    next_beat: f64,
    beats: u32,
    /// Where the last supply record put this driver.
    told: Option<(f64, f64)>,
}

#[derive(Debug)]
pub struct Fleet {
    city: City,
    /// How fast each driver moves: by where it is and the hour of the events' clock.
    traffic: Traffic,
    settings: FleetSettings,
    drivers: Vec<SimDriver>,
    index: HashMap<String, usize>,
    rng: SmallRng,
    /// Prefix of the drivers' ids.
    prefix: String,
    /// Real seconds since the fleet started.
    clock: f64,
    /// Ride events already handled, newest last: a redelivered one is ignored, as an app
    /// ignores a push it has already shown.
    handled: LruCache<String, ()>,
}

/// Ride events remembered as handled; far more than a rebalance redelivers.
const HANDLED_CAPACITY: NonZeroUsize = NonZeroUsize::new(100_000).unwrap();

/// Real seconds between location updates of one driver.
const BEAT_SECS: f64 = 2.0;
/// A location update says something new only once the driver has moved this far, or into
/// another cell, since its last supply record: a parked or crawling driver's app stays quiet
/// between its status repeats, and cuts most of the supply topic at a demo's speed-up.
const MOVED_M: f64 = 200.0;
/// Every this many beats an idle driver repeats its full status, so a new owner of a region
/// learns the driver from a short replay.
const STATUS_EVERY: u32 = 5;
/// How long a driver waits for the outcome of an accepted offer, in real seconds. Every ride
/// ends assigned or cancelled and the app hears of it, so this only covers an outcome it never
/// read; a driver who gave up sooner could be assigned while on another ride.
const CONFIRM_SECS: f64 = bimride_domain::ACCEPT_HOLD_MS as f64 / 1_000.0;
/// Simulated seconds a rider takes to get in.
const BOARDING_SECS: f64 = 30.0;
/// Simulated mean time between an idle driver's breaks.
const SHIFT_SECS: f64 = 3_600.0;

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn geo(p: (f64, f64)) -> GeoPoint {
    GeoPoint { lat: p.0, lng: p.1 }
}

/// Moves `from` up to `metres` towards `to`; returns the new point and whether it arrived.
fn step_towards(from: (f64, f64), to: (f64, f64), metres: f64) -> ((f64, f64), bool) {
    let left = City::distance_m(from, to);
    if left <= metres || left < 1.0 {
        return (to, true);
    }
    let f = metres / left;
    (
        (from.0 + (to.0 - from.0) * f, from.1 + (to.1 - from.1) * f),
        false,
    )
}

fn offset(from: (f64, f64), metres: f64, heading: f64) -> (f64, f64) {
    let dlat = metres * heading.cos() / 111_320.0;
    let dlng = metres * heading.sin() / (111_320.0 * from.0.to_radians().cos());
    (from.0 + dlat, from.1 + dlng)
}

impl Fleet {
    pub fn new(city: City, settings: FleetSettings, prefix: &str) -> Self {
        let mut fleet = Self {
            traffic: Traffic::of(&city),
            city,
            settings,
            drivers: Vec::with_capacity(settings.drivers),
            index: HashMap::new(),
            rng: SmallRng::seed_from_u64(settings.seed),
            prefix: prefix.to_owned(),
            clock: 0.0,
            handled: LruCache::new(HANDLED_CAPACITY),
        };
        fleet.grow(settings.drivers);
        fleet
    }

    /// Drivers in the fleet, whatever they are doing.
    pub fn len(&self) -> usize {
        self.drivers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.drivers.is_empty()
    }

    /// Adds drivers until there are `drivers`; each comes online at the next tick.
    pub fn grow(&mut self, drivers: usize) {
        const MODELS: [&str; 4] = ["Toyota Prius", "Skoda Octavia", "Tesla Model 3", "Kia Niro"];
        const COLOURS: [&str; 4] = ["white", "black", "grey", "blue"];
        for i in self.drivers.len()..drivers {
            let product = match i % 10 {
                0 => Product::Xl,
                1 | 2 => Product::Comfort,
                _ => Product::Economy,
            };
            let driver = SimDriver {
                id: format!("{}-driver-{i:04}", self.prefix),
                vehicle: Vehicle {
                    plate: format!("BR-{:03}-{}", i % 1000, (b'A' + (i % 26) as u8) as char),
                    model: MODELS[i % MODELS.len()].into(),
                    colour: COLOURS[(i / 4) % COLOURS.len()].into(),
                },
                product,
                at: random_point(&self.city, &mut self.rng, 0.8),
                phase: Phase::Offline { until: 0.0 },
                offers: HashMap::new(),
                next_beat: self.clock + self.rng.random_range(0.0..BEAT_SECS),
                beats: 0,
                told: None,
            };
            self.index.insert(driver.id.clone(), i);
            self.drivers.push(driver);
        }
    }

    /// Drivers online and free to take an offer.
    pub fn idle(&self) -> usize {
        self.drivers
            .iter()
            .filter(|d| matches!(d.phase, Phase::Idle { .. }))
            .count()
    }

    /// Drivers by status, for logs and tests.
    pub fn busy(&self) -> usize {
        self.drivers
            .iter()
            .filter(|d| !matches!(d.phase, Phase::Idle { .. } | Phase::Offline { .. }))
            .count()
    }

    /// Whether `d` has moved far enough, or into another cell, to be worth a location update.
    fn moved(&self, d: &SimDriver) -> bool {
        let Some(told) = d.told else {
            return true;
        };
        let cell = |at: (f64, f64)| self.city.locate(at.0, at.1).ok().map(|z| z.cell);
        City::distance_m(told, d.at) >= MOVED_M || cell(told) != cell(d.at)
    }

    fn supply(&self, d: &SimDriver, status: Option<DriverStatus>) -> Vec<Out> {
        let Ok(zone) = self.city.locate(d.at.0, d.at.1) else {
            return Vec::new();
        };
        let now = Millis::now();
        // Published to every region the matching disc touches: the cross-border strategy.
        regions_touched(zone.cell, self.city.match_rings, self.city.region_res())
            .into_iter()
            .map(|region| {
                let region = region.to_string();
                Out::Supply(match status {
                    Some(status) => SupplyEvent::Status(DriverStatusChanged {
                        event_id: new_id(),
                        occurred_at: now,
                        driver_id: d.id.clone(),
                        status,
                        position: geo(d.at),
                        region,
                        product: d.product,
                        vehicle: d.vehicle.clone(),
                    }),
                    None => SupplyEvent::Location(DriverLocationUpdated {
                        event_id: new_id(),
                        occurred_at: now,
                        driver_id: d.id.clone(),
                        position: geo(d.at),
                        region,
                        cell: zone.cell.to_string(),
                    }),
                })
            })
            .collect()
    }

    /// Advances the city by `real` time.
    pub fn tick(&mut self, real: Duration) -> Vec<Out> {
        let dt = real.as_secs_f64();
        self.clock += dt;
        let now = self.clock;
        let sim_dt = dt * self.settings.speedup;
        // Traffic runs on the hour of the events' clock, the hour ETAs are learned for.
        let hour = Traffic::hour_utc(Millis::now().0);
        let mut out = Vec::new();
        for i in 0..self.drivers.len() {
            let mut status = None;
            let mut d = self.drivers[i].clone();
            let metres = self.traffic.speed_kmh(d.at, hour) / 3.6 * sim_dt;
            match d.phase.clone() {
                Phase::Offline { until } if now >= until => {
                    d.phase = Phase::Idle {
                        heading: self.rng.random_range(0.0..std::f64::consts::TAU),
                    };
                    status = Some(DriverStatus::Available);
                }
                Phase::Offline { .. } => {}
                Phase::Idle { heading } => {
                    if self.rng.random_bool((sim_dt / SHIFT_SECS).min(1.0)) {
                        let pause = self.rng.random_range(120.0..600.0) / self.settings.speedup;
                        d.phase = Phase::Offline { until: now + pause };
                        status = Some(DriverStatus::Offline);
                    } else {
                        let next = offset(d.at, metres * 0.3, heading);
                        if City::distance_m(next, (self.city.centre_lat, self.city.centre_lng))
                            < self.city.radius_km * 900.0
                        {
                            d.at = next;
                        } else {
                            d.phase = Phase::Idle {
                                heading: heading + std::f64::consts::PI,
                            };
                        }
                    }
                }
                Phase::Accepted { since, .. } if now - since > CONFIRM_SECS => {
                    d.phase = Phase::Idle { heading: 0.0 };
                }
                Phase::Accepted { .. } => {}
                Phase::ToPickup { ride, rider } => {
                    let pickup = d.offers.get(&ride).map(|o| o.0);
                    if let Some(pickup) = pickup {
                        let (at, arrived) = step_towards(d.at, (pickup.lat, pickup.lng), metres);
                        d.at = at;
                        if arrived {
                            out.push(Out::Ride(RideEvent::DriverArrived(DriverArrived {
                                event_id: new_id(),
                                occurred_at: Millis::now(),
                                ride_id: ride.clone(),
                                driver_id: d.id.clone(),
                                rider_id: rider.clone(),
                            })));
                            d.phase = Phase::AtPickup {
                                ride,
                                rider,
                                until: now + BOARDING_SECS / self.settings.speedup,
                            };
                        }
                    }
                }
                Phase::AtPickup { ride, rider, until } if now >= until => {
                    out.push(Out::Ride(RideEvent::TripStarted(TripStarted {
                        event_id: new_id(),
                        occurred_at: Millis::now(),
                        ride_id: ride.clone(),
                        driver_id: d.id.clone(),
                        rider_id: rider.clone(),
                    })));
                    d.phase = Phase::OnTrip {
                        ride,
                        rider,
                        started: now,
                        metres: 0.0,
                        last_telemetry: now,
                    };
                    status = Some(DriverStatus::OnTrip);
                }
                Phase::AtPickup { .. } => {}
                Phase::OnTrip {
                    ride,
                    rider,
                    started,
                    metres: driven,
                    last_telemetry,
                } => {
                    let dropoff = d.offers.get(&ride).map(|o| o.1).unwrap_or(geo(d.at));
                    let (at, arrived) = step_towards(d.at, (dropoff.lat, dropoff.lng), metres);
                    let driven = driven + City::distance_m(d.at, at);
                    d.at = at;
                    if arrived {
                        out.push(Out::Ride(RideEvent::TripCompleted(TripCompleted {
                            event_id: new_id(),
                            occurred_at: Millis::now(),
                            ride_id: ride.clone(),
                            rider_id: rider,
                            driver_id: d.id.clone(),
                            distance_m: driven.round() as i64,
                            duration_secs: ((now - started) * self.settings.speedup).round() as i64,
                            dropoff,
                        })));
                        d.offers.remove(&ride);
                        d.phase = Phase::Idle { heading: 0.0 };
                        status = Some(DriverStatus::Available);
                    } else {
                        let telemetry = now - last_telemetry >= BEAT_SECS;
                        if telemetry {
                            out.push(Out::Ride(RideEvent::TripTelemetry(TripTelemetry {
                                event_id: new_id(),
                                occurred_at: Millis::now(),
                                ride_id: ride.clone(),
                                driver_id: d.id.clone(),
                                position: geo(d.at),
                                distance_m: driven.round() as i64,
                            })));
                        }
                        d.phase = Phase::OnTrip {
                            ride,
                            rider,
                            started,
                            metres: driven,
                            last_telemetry: if telemetry { now } else { last_telemetry },
                        };
                    }
                }
            }
            let online = !matches!(d.phase, Phase::Offline { .. });
            if status.is_none() && online && now >= d.next_beat {
                d.next_beat = now + BEAT_SECS;
                d.beats += 1;
                // Only an idle driver repeats its status: any other would free it too early.
                if d.beats.is_multiple_of(STATUS_EVERY) && matches!(d.phase, Phase::Idle { .. }) {
                    status = Some(DriverStatus::Available);
                } else if self.moved(&d) {
                    out.extend(self.supply(&d, None));
                    d.told = Some(d.at);
                }
            }
            if let Some(s) = status {
                out.extend(self.supply(&d, Some(s)));
                d.told = Some(d.at);
            }
            self.drivers[i] = d;
        }
        out
    }

    /// Reacts to a ride event that concerns one of this fleet's drivers.
    pub fn on_ride_event(&mut self, event: &RideEvent) -> Vec<Out> {
        let id = bimride_events::TopicValue::event_id(event);
        if self.handled.put(id.to_owned(), ()).is_some() {
            return Vec::new();
        }
        match event {
            RideEvent::OfferSent(o) => {
                // The ride offered to someone else after our accept is not an outcome: dispatch
                // may still take our accept if it arrived late, so the driver keeps waiting.
                let Some(&i) = self.index.get(&o.driver_id) else {
                    return Vec::new();
                };
                let accept = match &self.drivers[i].phase {
                    // Offered again by a new owner of the region, which never saw the first
                    // offer: still taken.
                    Phase::Accepted { ride, .. } => *ride == o.ride_id,
                    Phase::Idle { .. } => self.rng.random_bool(self.settings.accept_ratio),
                    _ => false,
                };
                let d = &mut self.drivers[i];
                if accept {
                    d.phase = Phase::Accepted {
                        ride: o.ride_id.clone(),
                        since: self.clock,
                    };
                    if let (Some(p), Some(q)) = (o.pickup, o.dropoff) {
                        d.offers.insert(o.ride_id.clone(), (p, q));
                    }
                }
                vec![Out::Supply(SupplyEvent::Answer(OfferAnswered {
                    event_id: new_id(),
                    occurred_at: Millis::now(),
                    ride_id: o.ride_id.clone(),
                    offer_id: o.offer_id.clone(),
                    driver_id: o.driver_id.clone(),
                    answer: if accept {
                        OfferAnswer::Accepted
                    } else {
                        OfferAnswer::Declined
                    },
                    region: o.region.clone(),
                }))]
            }
            RideEvent::DriverAssigned(a) => {
                let mut out = Vec::new();
                for i in 0..self.drivers.len() {
                    let mine = self.drivers[i].id == a.driver_id;
                    let waiting_for = matches!(&self.drivers[i].phase, Phase::Accepted { ride, .. } if *ride == a.ride_id);
                    if mine {
                        out.extend(self.confirm(i, &a.ride_id, &a.rider_id));
                    } else if waiting_for {
                        // The ride went to someone else.
                        self.drivers[i].phase = Phase::Idle { heading: 0.0 };
                    }
                }
                out
            }
            RideEvent::RideCancelled(c) => {
                let holder = self.drivers.iter().position(|d| match &d.phase {
                    Phase::Accepted { ride, .. }
                    | Phase::ToPickup { ride, .. }
                    | Phase::AtPickup { ride, .. } => *ride == c.ride_id,
                    _ => false,
                });
                let Some(i) = holder else {
                    return Vec::new();
                };
                let was_assigned = !matches!(self.drivers[i].phase, Phase::Accepted { .. });
                self.drivers[i].phase = Phase::Idle { heading: 0.0 };
                self.drivers[i].offers.remove(&c.ride_id);
                if was_assigned {
                    let d = self.drivers[i].clone();
                    self.supply(&d, Some(DriverStatus::Available))
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    /// Dispatch confirmed driver `i` for a ride: drive to it, or hand it back if busy.
    fn confirm(&mut self, i: usize, ride: &str, rider: &str) -> Vec<Out> {
        let d = &self.drivers[i];
        let free = match &d.phase {
            Phase::Accepted { ride: r, .. } => r == ride,
            Phase::Idle { .. } => true,
            _ => false,
        };
        if free && d.offers.contains_key(ride) {
            let d = &mut self.drivers[i];
            d.phase = Phase::ToPickup {
                ride: ride.to_owned(),
                rider: rider.to_owned(),
            };
            let d = d.clone();
            return self.supply(&d, Some(DriverStatus::EnRoute));
        }
        vec![Out::Ride(RideEvent::RideCancelled(RideCancelled {
            event_id: new_id(),
            occurred_at: Millis::now(),
            ride_id: ride.to_owned(),
            rider_id: rider.to_owned(),
            driver_id: Some(d.id.clone()),
            by: CancelledBy::Driver,
            reason: "driver_unavailable".into(),
            region: String::new(),
        }))]
    }
}

/// A random point inside `share` of the service area, denser towards the centre.
pub fn random_point(city: &City, rng: &mut SmallRng, share: f64) -> (f64, f64) {
    let r = city.radius_km * 1000.0 * share * rng.random::<f64>().powf(1.5);
    let heading = rng.random_range(0.0..std::f64::consts::TAU);
    offset((city.centre_lat, city.centre_lng), r, heading)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bimride_events::{DriverAssigned, OfferSent};

    fn fleet(drivers: usize, accept_ratio: f64) -> Fleet {
        Fleet::new(
            City::amsterdam(),
            FleetSettings {
                drivers,
                accept_ratio,
                speedup: 60.0,
                seed: 1,
            },
            "t",
        )
    }

    fn offer(driver: &str) -> RideEvent {
        offer_of(driver, "e", "r1")
    }

    /// An offer of `ride` to `driver`, sent as event `event`.
    fn offer_of(driver: &str, event: &str, ride: &str) -> RideEvent {
        RideEvent::OfferSent(OfferSent {
            event_id: event.into(),
            occurred_at: Millis(0),
            ride_id: ride.into(),
            offer_id: format!("offer-{event}"),
            driver_id: driver.into(),
            attempt: 1,
            pickup_eta_secs: 60,
            expires_at: Millis(0),
            region: "861969537ffffff".into(),
            pickup: Some(GeoPoint {
                lat: 52.3676,
                lng: 4.9041,
            }),
            dropoff: Some(GeoPoint {
                lat: 52.36,
                lng: 4.88,
            }),
        })
    }

    fn kinds(out: &[Out]) -> Vec<&'static str> {
        out.iter()
            .map(|o| match o {
                Out::Supply(s) => s.kind(),
                Out::Ride(r) => r.kind(),
            })
            .collect()
    }

    #[test]
    fn a_driver_goes_online_takes_a_ride_and_completes_it() {
        let mut f = fleet(1, 1.0);
        let online = f.tick(Duration::from_millis(100));
        assert!(kinds(&online).contains(&"Status"));
        let answer = f.on_ride_event(&offer("t-driver-0000"));
        assert!(matches!(
            &answer[..],
            [Out::Supply(SupplyEvent::Answer(a))] if a.answer == OfferAnswer::Accepted && a.region == "861969537ffffff"
        ));
        let assigned = RideEvent::DriverAssigned(DriverAssigned {
            event_id: "a".into(),
            occurred_at: Millis(0),
            ride_id: "r1".into(),
            rider_id: "rider".into(),
            driver_id: "t-driver-0000".into(),
            vehicle: f.drivers[0].vehicle.clone(),
            pickup_eta_secs: 60,
            region: "861969537ffffff".into(),
            product: Some(Product::Economy),
            surge_milli: 1_000,
            distance_eta_secs: None,
            quoted_duration_secs: None,
        });
        assert!(kinds(&f.on_ride_event(&assigned)).contains(&"Status"));
        let mut seen = Vec::new();
        for _ in 0..2_000 {
            seen.extend(kinds(&f.tick(Duration::from_millis(250))));
            if seen.contains(&"TripCompleted") {
                break;
            }
        }
        let order: Vec<&str> = seen
            .iter()
            .copied()
            .filter(|k| ["DriverArrived", "TripStarted", "TripCompleted"].contains(k))
            .collect();
        assert_eq!(order, ["DriverArrived", "TripStarted", "TripCompleted"]);
        assert!(seen.contains(&"TripTelemetry"));
        assert_eq!(f.busy(), 0);
        // The assignment redelivered after a rebalance does not start the trip again.
        assert!(f.on_ride_event(&assigned).is_empty());
        let again: Vec<&str> = (0..400)
            .flat_map(|_| kinds(&f.tick(Duration::from_millis(250))))
            .collect();
        assert!(!again.contains(&"TripCompleted"), "{again:?}");
    }

    #[test]
    fn a_grown_fleet_brings_its_new_drivers_online_at_the_next_tick() {
        let mut f = fleet(2, 1.0);
        f.tick(Duration::from_millis(100));
        assert_eq!((f.len(), f.idle()), (2, 2));
        f.grow(5);
        assert_eq!((f.len(), f.idle()), (5, 2));
        let online = f.tick(Duration::from_millis(100));
        assert_eq!(f.idle(), 5);
        // Each new driver says it is available, under an id of its own.
        let came: std::collections::BTreeSet<&str> = online
            .iter()
            .filter_map(|o| match o {
                Out::Supply(SupplyEvent::Status(s)) => Some(s.driver_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            came.into_iter().collect::<Vec<_>>(),
            ["t-driver-0002", "t-driver-0003", "t-driver-0004"]
        );
        // Never shrinks.
        f.grow(3);
        assert_eq!(f.len(), 5);
    }

    #[test]
    fn a_driver_that_has_not_moved_far_sends_no_location() {
        let mut f = fleet(1, 1.0);
        let locations = |out: &[Out]| {
            out.iter()
                .filter(|o| matches!(o, Out::Supply(SupplyEvent::Location(_))))
                .count()
        };
        f.tick(Duration::from_millis(100));
        // Waiting for an accepted offer's outcome, the driver stands still: its beats carry
        // nothing new.
        f.on_ride_event(&offer("t-driver-0000"));
        let standing: usize = (0..20)
            .map(|_| locations(&f.tick(Duration::from_millis(250))))
            .sum();
        assert_eq!(standing, 0);
        // Moved on by more than the threshold, the next beat tells where.
        let at = f.drivers[0].at;
        f.drivers[0].at = offset(at, MOVED_M + 1.0, 0.0);
        let moved: usize = (0..8)
            .map(|_| locations(&f.tick(Duration::from_millis(250))))
            .sum();
        assert_eq!(moved, regions(&f));
    }

    /// Regions a record of driver 0 fans out to.
    fn regions(f: &Fleet) -> usize {
        let d = &f.drivers[0];
        let zone = f.city.locate(d.at.0, d.at.1).expect("in town");
        regions_touched(zone.cell, f.city.match_rings, f.city.region_res()).len()
    }

    #[test]
    fn a_busy_driver_declines_and_a_confirmation_it_cannot_take_is_handed_back() {
        let mut f = fleet(1, 1.0);
        f.tick(Duration::from_millis(100));
        f.on_ride_event(&offer("t-driver-0000"));
        let answer = f.on_ride_event(&offer_of("t-driver-0000", "e2", "r2"));
        assert!(matches!(
            &answer[..],
            [Out::Supply(SupplyEvent::Answer(a))] if a.answer == OfferAnswer::Declined
        ));
        let wrong = RideEvent::DriverAssigned(DriverAssigned {
            event_id: "a".into(),
            occurred_at: Millis(0),
            ride_id: "r2".into(),
            rider_id: "rider".into(),
            driver_id: "t-driver-0000".into(),
            vehicle: f.drivers[0].vehicle.clone(),
            pickup_eta_secs: 60,
            region: String::new(),
            product: Some(Product::Economy),
            surge_milli: 1_000,
            distance_eta_secs: None,
            quoted_duration_secs: None,
        });
        assert_eq!(kinds(&f.on_ride_event(&wrong)), ["RideCancelled"]);
    }

    #[test]
    fn an_accepted_offer_holds_the_driver_until_its_outcome_is_heard() {
        let mut f = fleet(2, 1.0);
        f.tick(Duration::from_millis(100));
        f.on_ride_event(&offer("t-driver-0000"));
        // Long past a broker fault's delay, the driver still waits, taking nothing else.
        for _ in 0..240 {
            f.tick(Duration::from_millis(250));
        }
        assert!(matches!(
            &f.on_ride_event(&offer_of("t-driver-0000", "e2", "r2"))[..],
            [Out::Supply(SupplyEvent::Answer(a))] if a.answer == OfferAnswer::Declined
        ));
        // The same ride offered again is taken again.
        assert!(matches!(
            &f.on_ride_event(&offer_of("t-driver-0000", "e3", "r1"))[..],
            [Out::Supply(SupplyEvent::Answer(a))] if a.answer == OfferAnswer::Accepted
        ));
        // Offered to someone else: dispatch may still take our late accept, so keep waiting.
        f.on_ride_event(&offer_of("t-driver-0001", "e4", "r1"));
        assert!(matches!(&f.drivers[0].phase, Phase::Accepted { ride, .. } if ride == "r1"));
        // Assigned to someone else: that is the outcome, and the driver is free again.
        let elsewhere = RideEvent::DriverAssigned(DriverAssigned {
            event_id: "e5".into(),
            occurred_at: Millis(0),
            ride_id: "r1".into(),
            rider_id: "rider".into(),
            driver_id: "t-driver-0001".into(),
            vehicle: f.drivers[1].vehicle.clone(),
            pickup_eta_secs: 60,
            region: String::new(),
            product: Some(Product::Economy),
            surge_milli: 1_000,
            distance_eta_secs: None,
            quoted_duration_secs: None,
        });
        f.on_ride_event(&elsewhere);
        assert!(matches!(f.drivers[0].phase, Phase::Idle { .. }));
    }
}
