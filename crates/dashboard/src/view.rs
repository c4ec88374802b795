//! The live view: events folded into what an operator watches. Pure: no I/O, no clock.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::str::FromStr;

use bimride_events::{
    DispatchEvent, DriverStatus, EtaLeg, EtaObserved, FareCharged, GeoPoint, RideEvent,
    SupplyEvent, SurgeUpdated, TopicValue,
};
use h3o::CellIndex;
use hdrhistogram::Histogram;
use lru::LruCache;
use serde::Serialize;

/// Latest events kept for the feed.
const FEED_LEN: usize = 40;
/// Event ids remembered to ignore redeliveries.
const SEEN_LEN: NonZeroUsize = NonZeroUsize::new(200_000).unwrap();

/// Ride counts and money over every ride in the ride store, read from it: the live view holds
/// only a recent window, so it cannot count the whole history itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub requested: u64,
    pub assigned: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub charges: u64,
    pub revenue_minor: i64,
    pub commission_minor: i64,
}

/// Booking-to-assignment latency, in event time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub count: u64,
}

/// How far the ETAs of one leg were off, over the dashboard's window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EtaAccuracy {
    pub observations: u64,
    /// Mean absolute error, in seconds.
    pub mae_secs: f64,
    /// Mean of actual minus predicted, in seconds: positive when ETAs are too short.
    pub bias_secs: f64,
    /// The mean absolute error the same ETAs had from distance alone, before the learned
    /// correction.
    pub baseline_mae_secs: f64,
}

/// Running sums behind an [`EtaAccuracy`].
#[derive(Debug, Clone, Copy, Default)]
struct EtaSums {
    observations: u64,
    abs_error: i64,
    error: i64,
    baseline_abs_error: i64,
}

impl EtaSums {
    fn accuracy(&self) -> EtaAccuracy {
        let n = self.observations.max(1) as f64;
        EtaAccuracy {
            observations: self.observations,
            mae_secs: self.abs_error as f64 / n,
            bias_secs: self.error as f64 / n,
            baseline_mae_secs: self.baseline_abs_error as f64 / n,
        }
    }
}

/// A driver on the map: `[lat, lng, state]`, state 0 offline, 1 available, 2 busy.
pub type DriverDot = (f64, f64, u8);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RideLine {
    pub pickup: (f64, f64),
    pub dropoff: (f64, f64),
    /// Where the car is, once a trip reports telemetry.
    pub position: Option<(f64, f64)>,
    pub status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SurgeCell {
    pub cell: String,
    pub multiplier_milli: i32,
    pub demand: i32,
    pub supply: i32,
    /// The cell's outline, `[lat, lng]` pairs.
    pub boundary: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedItem {
    pub at_ms: i64,
    pub kind: &'static str,
    pub text: String,
}

/// What the page draws, pushed whole on every update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub version: u64,
    pub counters: Counters,
    pub latency: Latency,
    /// The pickup ETAs given at assignment.
    pub pickup_eta: EtaAccuracy,
    /// The trip durations quoted.
    pub trip_eta: EtaAccuracy,
    pub drivers: Vec<DriverDot>,
    pub drivers_available: usize,
    pub drivers_busy: usize,
    pub rides: Vec<RideLine>,
    pub surge: Vec<SurgeCell>,
    pub feed: Vec<FeedItem>,
}

#[derive(Debug, Clone)]
struct Ride {
    line: RideLine,
    requested_ms: i64,
}

#[derive(Debug)]
pub struct LiveView {
    version: u64,
    counters: Counters,
    latency: Histogram<u64>,
    pickup_eta: EtaSums,
    trip_eta: EtaSums,
    drivers: HashMap<String, DriverDot>,
    rides: HashMap<String, Ride>,
    surge: HashMap<String, SurgeCell>,
    feed: VecDeque<FeedItem>,
    seen: LruCache<String, ()>,
}

impl Default for LiveView {
    fn default() -> Self {
        Self {
            version: 0,
            counters: Counters::default(),
            // 1 ms to 1 hour at 3 significant figures: bounds that cannot fail.
            latency: Histogram::new_with_bounds(1, 3_600_000, 3)
                .unwrap_or_else(|e| unreachable!("valid histogram bounds: {e}")),
            pickup_eta: EtaSums::default(),
            trip_eta: EtaSums::default(),
            drivers: HashMap::new(),
            rides: HashMap::new(),
            surge: HashMap::new(),
            feed: VecDeque::new(),
            seen: LruCache::new(SEEN_LEN),
        }
    }
}

fn point(p: &GeoPoint) -> (f64, f64) {
    (p.lat, p.lng)
}

fn short(id: &str) -> &str {
    // Ids end in a uuid; its last characters tell rides apart on screen.
    id.get(id.len().saturating_sub(6)..).unwrap_or(id)
}

impl LiveView {
    /// The ride store's totals, as last read.
    pub fn set_counters(&mut self, counters: Counters) {
        if counters != self.counters {
            self.counters = counters;
            self.version += 1;
        }
    }

    /// Drops rides requested before `ms` whose end was never seen (it fell before the window
    /// read at start, or is still to come long after): the map shows active rides only.
    pub fn forget_before(&mut self, ms: i64) {
        let before = self.rides.len();
        self.rides.retain(|_, r| r.requested_ms >= ms);
        if self.rides.len() != before {
            self.version += 1;
        }
    }

    /// Increases with every change, so that unchanged views are not pushed again.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// True the first time an event id is seen.
    fn fresh(&mut self, event: &impl TopicValue) -> bool {
        if self.seen.put(event.event_id().to_owned(), ()).is_some() {
            return false;
        }
        self.version += 1;
        true
    }

    fn log(&mut self, at_ms: i64, kind: &'static str, text: String) {
        self.feed.push_front(FeedItem { at_ms, kind, text });
        self.feed.truncate(FEED_LEN);
    }

    pub fn apply_dispatch(&mut self, e: &DispatchEvent) {
        // Assignments and cancellations arrive on the ride events too.
        let DispatchEvent::Requested(r) = e else {
            return;
        };
        if !self.fresh(e) {
            return;
        }
        self.rides.insert(
            r.ride_id.clone(),
            Ride {
                line: RideLine {
                    pickup: point(&r.pickup),
                    dropoff: point(&r.dropoff),
                    position: None,
                    status: "requested",
                },
                requested_ms: r.occurred_at.0,
            },
        );
        let surge = if r.surge_milli > 1000 {
            format!(" ×{:.2}", f64::from(r.surge_milli) / 1000.0)
        } else {
            String::new()
        };
        self.log(
            r.occurred_at.0,
            "requested",
            format!(
                "ride …{} requested, quote €{:.2}{surge}",
                short(&r.ride_id),
                r.quote.amount_minor as f64 / 100.0
            ),
        );
    }

    pub fn apply_ride(&mut self, e: &RideEvent) {
        if !self.fresh(e) {
            return;
        }
        let ride_id = e.ride_id().to_owned();
        let at = e.occurred_at().0;
        let status = |view: &mut Self, s: &'static str| {
            if let Some(r) = view.rides.get_mut(&ride_id) {
                r.line.status = s;
            }
        };
        match e {
            RideEvent::OfferSent(_) => status(self, "offered"),
            RideEvent::OfferAnswered(_) => {}
            RideEvent::DriverAssigned(a) => {
                status(self, "assigned");
                if let Some(r) = self.rides.get(&ride_id) {
                    let waited = (at - r.requested_ms).max(1) as u64;
                    let _ = self.latency.record(waited.min(3_600_000));
                }
                if let Some(d) = self.drivers.get_mut(&a.driver_id) {
                    d.2 = 2;
                }
                self.log(
                    at,
                    "assigned",
                    format!(
                        "ride …{} assigned to the {} {} {}, pickup in {} s",
                        short(&ride_id),
                        a.vehicle.colour,
                        a.vehicle.model,
                        a.vehicle.plate,
                        a.pickup_eta_secs
                    ),
                );
            }
            RideEvent::DriverArrived(_) => {
                status(self, "arrived");
                self.log(
                    at,
                    "arrived",
                    format!("driver at pickup of …{}", short(&ride_id)),
                );
            }
            RideEvent::TripStarted(_) => {
                status(self, "in_progress");
                self.log(at, "started", format!("trip …{} started", short(&ride_id)));
            }
            RideEvent::TripTelemetry(t) => {
                if let Some(r) = self.rides.get_mut(&ride_id) {
                    r.line.position = Some(point(&t.position));
                }
                if let Some(d) = self.drivers.get_mut(&t.driver_id) {
                    (d.0, d.1) = point(&t.position);
                }
            }
            RideEvent::TripCompleted(c) => {
                self.rides.remove(&ride_id);
                self.log(
                    at,
                    "completed",
                    format!(
                        "trip …{} completed: {:.1} km in {} min",
                        short(&ride_id),
                        c.distance_m as f64 / 1000.0,
                        c.duration_secs / 60
                    ),
                );
            }
            RideEvent::RideCancelled(c) => {
                self.rides.remove(&ride_id);
                self.log(
                    at,
                    "cancelled",
                    format!("ride …{} cancelled: {}", short(&ride_id), c.reason),
                );
            }
        }
    }

    pub fn apply_supply(&mut self, e: &SupplyEvent) {
        if matches!(e, SupplyEvent::Answer(_)) || !self.fresh(e) {
            return;
        }
        match e {
            SupplyEvent::Status(s) => {
                let state = match s.status {
                    DriverStatus::Offline => 0,
                    DriverStatus::Available => 1,
                    DriverStatus::EnRoute | DriverStatus::OnTrip => 2,
                };
                let (lat, lng) = point(&s.position);
                self.drivers.insert(s.driver_id.clone(), (lat, lng, state));
            }
            SupplyEvent::Location(l) => {
                let (lat, lng) = point(&l.position);
                let dot = self
                    .drivers
                    .entry(l.driver_id.clone())
                    .or_insert((lat, lng, 1));
                (dot.0, dot.1) = (lat, lng);
            }
            SupplyEvent::Answer(_) => {}
        }
    }

    pub fn apply_surge(&mut self, u: &SurgeUpdated) {
        if !self.fresh(u) {
            return;
        }
        if u.multiplier_milli <= 1000 {
            self.surge.remove(&u.cell);
            return;
        }
        let boundary = self
            .surge
            .get(&u.cell)
            .map(|c| c.boundary.clone())
            .unwrap_or_else(|| outline(&u.cell));
        if !self.surge.contains_key(&u.cell) {
            self.log(
                u.occurred_at.0,
                "surge",
                format!(
                    "surge ×{:.2} in {} ({} requests, {} drivers)",
                    f64::from(u.multiplier_milli) / 1000.0,
                    u.cell,
                    u.demand,
                    u.supply
                ),
            );
        }
        self.surge.insert(
            u.cell.clone(),
            SurgeCell {
                cell: u.cell.clone(),
                multiplier_milli: u.multiplier_milli,
                demand: u.demand,
                supply: u.supply,
                boundary,
            },
        );
    }

    pub fn apply_charge(&mut self, c: &FareCharged) {
        if !self.fresh(c) {
            return;
        }
        self.log(
            c.occurred_at.0,
            "charged",
            format!(
                "ride …{} charged €{:.2}",
                short(&c.ride_id),
                c.fare.amount_minor as f64 / 100.0
            ),
        );
    }

    pub fn apply_eta(&mut self, o: &EtaObserved) {
        if !self.fresh(o) {
            return;
        }
        let sums = match o.leg {
            EtaLeg::Pickup => &mut self.pickup_eta,
            EtaLeg::Trip => &mut self.trip_eta,
        };
        let error = o.actual_secs - o.predicted_secs;
        sums.observations += 1;
        sums.abs_error += error.abs();
        sums.error += error;
        sums.baseline_abs_error += (o.actual_secs - o.baseline()).abs();
    }

    pub fn snapshot(&self) -> Snapshot {
        let drivers: Vec<DriverDot> = self.drivers.values().copied().collect();
        let mut surge: Vec<SurgeCell> = self.surge.values().cloned().collect();
        surge.sort_by_key(|c| std::cmp::Reverse(c.multiplier_milli));
        let count = self.latency.len();
        Snapshot {
            version: self.version,
            counters: self.counters,
            latency: Latency {
                p50_ms: if count > 0 {
                    self.latency.value_at_quantile(0.5)
                } else {
                    0
                },
                p99_ms: if count > 0 {
                    self.latency.value_at_quantile(0.99)
                } else {
                    0
                },
                count,
            },
            pickup_eta: self.pickup_eta.accuracy(),
            trip_eta: self.trip_eta.accuracy(),
            drivers_available: drivers.iter().filter(|d| d.2 == 1).count(),
            drivers_busy: drivers.iter().filter(|d| d.2 == 2).count(),
            drivers,
            rides: self.rides.values().map(|r| r.line.clone()).collect(),
            surge,
            feed: self.feed.iter().cloned().collect(),
        }
    }
}

/// The outline of an H3 cell, or nothing for a malformed id.
pub fn outline(cell: &str) -> Vec<(f64, f64)> {
    CellIndex::from_str(cell)
        .map(|c| c.boundary().iter().map(|p| (p.lat(), p.lng())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use bimride_events::*;

    use super::*;

    fn at(ms: i64) -> Millis {
        Millis(ms)
    }

    fn request(ride: &str, ms: i64) -> DispatchEvent {
        DispatchEvent::Requested(RideRequested {
            event_id: format!("req-{ride}"),
            occurred_at: at(ms),
            ride_id: ride.into(),
            rider_id: "rider-1".into(),
            product: Product::Economy,
            pickup: GeoPoint {
                lat: 52.37,
                lng: 4.90,
            },
            dropoff: GeoPoint {
                lat: 52.36,
                lng: 4.88,
            },
            region: "861969b0fffffff".into(),
            pickup_cell: "881969b0e1fffff".into(),
            quote: Money {
                amount_minor: 1250,
                currency: "EUR".into(),
            },
            surge_milli: 1000,
            idempotency_key: None,
            quoted_duration_secs: None,
        })
    }

    fn assigned(ride: &str, ms: i64) -> RideEvent {
        RideEvent::DriverAssigned(DriverAssigned {
            event_id: format!("asg-{ride}"),
            occurred_at: at(ms),
            ride_id: ride.into(),
            rider_id: "rider-1".into(),
            driver_id: "driver-1".into(),
            vehicle: Vehicle {
                model: "Toyota Prius".into(),
                plate: "AB-123-C".into(),
                colour: "black".into(),
            },
            pickup_eta_secs: 120,
            region: "861969b0fffffff".into(),
            product: Some(Product::Economy),
            surge_milli: 1000,
            distance_eta_secs: None,
            quoted_duration_secs: None,
        })
    }

    #[test]
    fn eta_accuracy_is_the_mean_error_of_each_leg_once_per_observation() {
        let mut v = LiveView::default();
        let observed =
            |ride: &str, leg: EtaLeg, (predicted, baseline): (i64, i64), actual: i64| EtaObserved {
                event_id: format!("{ride}/{leg:?}"),
                occurred_at: Millis(1),
                ride_id: ride.into(),
                leg,
                region: "r".into(),
                pickup_cell: "c".into(),
                hour: 8,
                predicted_secs: predicted,
                actual_secs: actual,
                baseline_secs: Some(baseline),
            };
        v.apply_eta(&observed("a", EtaLeg::Pickup, (100, 50), 130));
        v.apply_eta(&observed("b", EtaLeg::Pickup, (100, 100), 90));
        // Redelivered: counted once.
        v.apply_eta(&observed("b", EtaLeg::Pickup, (100, 100), 90));
        v.apply_eta(&observed("a", EtaLeg::Trip, (600, 600), 500));
        let s = v.snapshot();
        assert_eq!(s.pickup_eta.observations, 2);
        assert_eq!(s.pickup_eta.mae_secs, 20.0);
        assert_eq!(s.pickup_eta.bias_secs, 10.0);
        assert_eq!(s.pickup_eta.baseline_mae_secs, 45.0);
        assert_eq!(s.trip_eta.observations, 1);
        assert_eq!(s.trip_eta.bias_secs, -100.0);
    }

    #[test]
    fn a_ride_is_counted_once_and_its_wait_measured() {
        let mut view = LiveView::default();
        for _ in 0..2 {
            view.apply_dispatch(&request("ride-a", 1_000));
            view.apply_ride(&assigned("ride-a", 1_040));
        }
        view.apply_dispatch(&request("ride-b", 2_000));
        view.apply_ride(&assigned("ride-b", 2_200));
        let s = view.snapshot();
        assert_eq!(s.latency.count, 2);
        assert_eq!(s.latency.p50_ms, 40);
        assert!((199..=201).contains(&s.latency.p99_ms), "{:?}", s.latency);
        assert_eq!(s.rides.len(), 2);
        assert!(s.rides.iter().all(|r| r.status == "assigned"));
        assert_eq!(s.feed[0].kind, "assigned");
    }

    #[test]
    fn surging_cells_carry_their_outline_and_calm_ones_leave() {
        let mut view = LiveView::default();
        let cell = "881969b0e1fffff";
        let update = |id: &str, m: i32| SurgeUpdated {
            event_id: id.into(),
            occurred_at: at(5),
            cell: cell.into(),
            multiplier_milli: m,
            demand: 12,
            supply: 3,
            window_end: at(5),
        };
        view.apply_surge(&update("s1", 1800));
        let s = view.snapshot();
        assert_eq!(s.surge.len(), 1);
        assert_eq!(s.surge[0].boundary.len(), 6);
        assert!(
            s.surge[0]
                .boundary
                .iter()
                .all(|(lat, _)| (52.0..53.0).contains(lat))
        );
        view.apply_surge(&update("s2", 1000));
        assert!(view.snapshot().surge.is_empty());
    }

    #[test]
    fn revenue_adds_up_and_the_version_moves_only_on_news() {
        let mut view = LiveView::default();
        let charge = FareCharged {
            event_id: "c1".into(),
            occurred_at: at(9),
            ride_id: "ride-a".into(),
            rider_id: "rider-1".into(),
            driver_id: Some("driver-1".into()),
            kind: ChargeKind::Trip,
            fare: Money {
                amount_minor: 1500,
                currency: "EUR".into(),
            },
            base_minor: 300,
            distance_minor: 900,
            time_minor: 300,
            surge_milli: 1000,
            commission: Money {
                amount_minor: 375,
                currency: "EUR".into(),
            },
            payout: Money {
                amount_minor: 1125,
                currency: "EUR".into(),
            },
        };
        view.apply_charge(&charge);
        let v = view.version();
        view.apply_charge(&charge);
        assert_eq!(view.version(), v);
        assert_eq!(view.snapshot().feed.len(), 1);
    }

    #[test]
    fn counters_come_from_the_store_and_stale_rides_leave_the_map() {
        let mut view = LiveView::default();
        view.apply_dispatch(&request("ride-a", 1_000));
        view.apply_dispatch(&request("ride-b", 5_000));
        // Events move the map and the feed, never the totals.
        assert_eq!(view.snapshot().counters, Counters::default());
        let totals = Counters {
            requested: 9,
            revenue_minor: 1_500,
            ..Counters::default()
        };
        view.set_counters(totals);
        let v = view.version();
        view.set_counters(totals);
        assert_eq!(view.version(), v, "unchanged totals push nothing");
        assert_eq!(view.snapshot().counters, totals);
        view.forget_before(2_000);
        assert_eq!(view.snapshot().rides.len(), 1);
        assert!(view.version() > v);
    }
}
