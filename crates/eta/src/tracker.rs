//! The join of each ride's predictions with what happened, as pure state driven by event time.
//!
//! A ride's records may arrive in any order: each fills in its part of the ride, and a leg is
//! observed once both of its ends, its prediction and its pickup (from the offer) are known,
//! whichever came last. A ride
//! is forgotten once nothing about it has happened for the lateness allowed, in the log's own
//! time; a record later than that starts it afresh and completes no leg it had.

use std::collections::HashMap;

use bimride_events::{EtaLeg, EtaObserved, GeoPoint, Millis, Product, RideEvent};

/// How the tracker reads the log's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// How long after a ride's latest record its state is kept, in event time.
    pub lateness_ms: i64,
    /// Seconds of the city's clock per second of event time: 1 for a real city, the
    /// simulation's speed-up for a simulated one, whose drivers cover distance that much faster.
    pub time_scale: f64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            lateness_ms: 2 * 60 * 60 * 1_000,
            time_scale: 1.0,
        }
    }
}

/// What is known of one ride so far.
#[derive(Debug)]
struct Partial {
    /// The ride events partition it is read from.
    partition: i32,
    latest: Millis,
    pickup: Option<GeoPoint>,
    dropoff: Option<GeoPoint>,
    product: Option<Product>,
    /// When the driver was assigned, and the pickup ETA given then.
    assigned: Option<(Millis, i32)>,
    /// The pickup ETA from distance alone, and the trip duration quoted, where the assignment
    /// carried them.
    distance_eta: Option<i32>,
    quoted_secs: Option<i64>,
    arrived: Option<Millis>,
    started: Option<Millis>,
    completed: Option<Millis>,
    pickup_seen: bool,
    trip_seen: bool,
}

#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    city: bimride_domain::City,
    rides: HashMap<String, Partial>,
    /// The newest event time seen: the log's "now".
    through: Millis,
}

impl Tracker {
    pub fn new(city: bimride_domain::City, config: TrackerConfig) -> Self {
        Self {
            config,
            city,
            rides: HashMap::new(),
            through: Millis(i64::MIN),
        }
    }

    /// Rides with a leg still open.
    pub fn open(&self) -> usize {
        self.rides.len()
    }

    /// Takes one ride event of `partition`; returns the legs it completes.
    pub fn apply(&mut self, partition: i32, event: &RideEvent) -> Vec<EtaObserved> {
        let at = bimride_events::TopicValue::occurred_at(event);
        self.through = self.through.max(at);
        let ride = self
            .rides
            .entry(event.ride_id().to_owned())
            .or_insert_with(|| Partial {
                partition,
                latest: at,
                pickup: None,
                dropoff: None,
                product: None,
                assigned: None,
                distance_eta: None,
                quoted_secs: None,
                arrived: None,
                started: None,
                completed: None,
                pickup_seen: false,
                trip_seen: false,
            });
        ride.latest = ride.latest.max(at);
        match event {
            RideEvent::OfferSent(o) => {
                ride.pickup = ride.pickup.or(o.pickup);
                ride.dropoff = ride.dropoff.or(o.dropoff);
            }
            RideEvent::DriverAssigned(a) => {
                ride.assigned = Some((a.occurred_at, a.pickup_eta_secs));
                ride.distance_eta = a.distance_eta_secs;
                ride.quoted_secs = a.quoted_duration_secs;
                ride.product = a.product.or(ride.product);
            }
            RideEvent::DriverArrived(a) => ride.arrived = Some(a.occurred_at),
            RideEvent::TripStarted(s) => ride.started = Some(s.occurred_at),
            RideEvent::TripCompleted(c) => ride.completed = Some(c.occurred_at),
            RideEvent::RideCancelled(_)
            | RideEvent::OfferAnswered(_)
            | RideEvent::TripTelemetry(_) => {}
        }
        let id = event.ride_id().to_owned();
        self.observe(&id)
    }

    /// Forgets the rides of partitions given up.
    pub fn revoke(&mut self, partitions: &std::collections::BTreeSet<i32>) {
        self.rides.retain(|_, r| !partitions.contains(&r.partition));
    }

    /// Forgets rides with nothing new for longer than the lateness allowed. The log's "now" is
    /// its newest event time, but never past `now` on the clock: a record dated in the future
    /// must not expire every open ride.
    pub fn expire(&mut self, now: Millis) -> usize {
        let through = self.through.min(now);
        let horizon = Millis(through.0.saturating_sub(self.config.lateness_ms));
        let before = self.rides.len();
        self.rides.retain(|_, r| r.latest >= horizon);
        before - self.rides.len()
    }

    fn observe(&mut self, id: &str) -> Vec<EtaObserved> {
        let scale = self.config.time_scale;
        let Some(ride) = self.rides.get_mut(id) else {
            return Vec::new();
        };
        let pickup_ready = !ride.pickup_seen && ride.assigned.is_some() && ride.arrived.is_some();
        let trip_ready = !ride.trip_seen
            && ride.started.is_some()
            && ride.completed.is_some()
            && ride.dropoff.is_some();
        // Both legs are reported where the ride began: its pickup's region and cell, placed by
        // the city, so that labels come from the city's zones and never from a record's text.
        let Some(pickup) = ride.pickup.filter(|_| pickup_ready || trip_ready) else {
            return Vec::new();
        };
        let Ok(zone) = self.city.locate(pickup.lat, pickup.lng) else {
            return Vec::new();
        };
        let (region, cell) = (zone.region.to_string(), zone.cell.to_string());
        // A leg that ends before it begins (clocks of different apps) tells nothing.
        let observation = |leg: EtaLeg, from: Millis, to: Millis, (predicted, baseline)| {
            let took_ms = to.0.checked_sub(from.0).filter(|ms| *ms >= 0)?;
            Some(EtaObserved {
                event_id: format!("{id}/{}", leg_name(leg)),
                occurred_at: to,
                ride_id: id.to_owned(),
                leg,
                region: region.clone(),
                pickup_cell: cell.clone(),
                hour: hour_utc(from),
                predicted_secs: predicted,
                actual_secs: (took_ms as f64 / 1_000.0 * scale).round() as i64,
                baseline_secs: Some(baseline),
            })
        };
        let mut out = Vec::new();
        if !ride.pickup_seen
            && let (Some((assigned, eta)), Some(arrived)) = (ride.assigned, ride.arrived)
        {
            ride.pickup_seen = true;
            let baseline = ride.distance_eta.unwrap_or(eta);
            out.extend(observation(
                EtaLeg::Pickup,
                assigned,
                arrived,
                (i64::from(eta), i64::from(baseline)),
            ));
        }
        if !ride.trip_seen
            && let (Some(started), Some(completed), Some(to)) =
                (ride.started, ride.completed, ride.dropoff)
        {
            let from = pickup;
            ride.trip_seen = true;
            let product = ride.product.unwrap_or(Product::Economy);
            // Quotes before the quoted duration was carried gave the distance-only one.
            let baseline = bimride_pricing::quote(
                product,
                (from.lat, from.lng),
                (to.lat, to.lng),
                bimride_domain::fare::NO_SURGE,
            )
            .duration_s;
            let quoted = ride.quoted_secs.unwrap_or(baseline);
            out.extend(observation(
                EtaLeg::Trip,
                started,
                completed,
                (quoted, baseline),
            ));
        }
        if ride.pickup_seen && ride.trip_seen {
            self.rides.remove(id);
        }
        out
    }
}

pub fn leg_name(leg: EtaLeg) -> &'static str {
    match leg {
        EtaLeg::Pickup => "pickup",
        EtaLeg::Trip => "trip",
    }
}

/// The hour of the day, UTC, of an event time.
pub fn hour_utc(at: Millis) -> i32 {
    (at.0.rem_euclid(86_400_000) / 3_600_000) as i32
}

#[cfg(test)]
pub(crate) mod tests {
    use bimride_events::{
        DriverArrived, DriverAssigned, OfferSent, RideCancelled, TripCompleted, TripStarted,
        Vehicle,
    };

    use super::*;

    const T0: i64 = 1_800_000_000_000;

    fn at(secs: i64) -> Millis {
        Millis(T0 + secs * 1_000)
    }

    fn point(lat: f64, lng: f64) -> GeoPoint {
        GeoPoint { lat, lng }
    }

    pub(crate) fn ride(id: &str) -> Vec<RideEvent> {
        vec![
            RideEvent::OfferSent(OfferSent {
                event_id: format!("{id}-offer"),
                occurred_at: at(0),
                ride_id: id.into(),
                offer_id: "o".into(),
                driver_id: "d".into(),
                attempt: 1,
                pickup_eta_secs: 200,
                expires_at: at(10),
                region: "861969537ffffff".into(),
                pickup: Some(point(52.37, 4.89)),
                dropoff: Some(point(52.35, 4.92)),
            }),
            RideEvent::DriverAssigned(DriverAssigned {
                event_id: format!("{id}-assigned"),
                occurred_at: at(2),
                ride_id: id.into(),
                rider_id: "r".into(),
                driver_id: "d".into(),
                vehicle: Vehicle {
                    plate: "p".into(),
                    model: "m".into(),
                    colour: "c".into(),
                },
                pickup_eta_secs: 200,
                region: "861969537ffffff".into(),
                product: Some(Product::Economy),
                surge_milli: 1_000,
                distance_eta_secs: None,
                quoted_duration_secs: None,
            }),
            RideEvent::DriverArrived(DriverArrived {
                event_id: format!("{id}-arrived"),
                occurred_at: at(12),
                ride_id: id.into(),
                driver_id: "d".into(),
                rider_id: "r".into(),
            }),
            RideEvent::TripStarted(TripStarted {
                event_id: format!("{id}-started"),
                occurred_at: at(13),
                ride_id: id.into(),
                driver_id: "d".into(),
                rider_id: "r".into(),
            }),
            RideEvent::TripCompleted(TripCompleted {
                event_id: format!("{id}-completed"),
                occurred_at: at(33),
                ride_id: id.into(),
                rider_id: "r".into(),
                driver_id: "d".into(),
                distance_m: 3_000,
                duration_secs: 600,
                dropoff: point(52.35, 4.92),
            }),
        ]
    }

    pub(crate) fn tracker(time_scale: f64) -> Tracker {
        Tracker::new(
            bimride_domain::City::amsterdam(),
            TrackerConfig {
                lateness_ms: 60_000,
                time_scale,
            },
        )
    }

    fn quoted() -> i64 {
        bimride_pricing::quote(Product::Economy, (52.37, 4.89), (52.35, 4.92), 1_000).duration_s
    }

    #[test]
    fn each_leg_is_observed_once_in_the_citys_clock() {
        let mut t = tracker(30.0);
        let out: Vec<EtaObserved> = ride("r1").iter().flat_map(|e| t.apply(0, e)).collect();
        assert_eq!(out.len(), 2, "{out:?}");
        let (pickup, trip) = (&out[0], &out[1]);
        assert_eq!(pickup.leg, EtaLeg::Pickup);
        assert_eq!(pickup.event_id, "r1/pickup");
        assert_eq!(pickup.predicted_secs, 200);
        // 10 s of event time at 30 times the speed.
        assert_eq!(pickup.actual_secs, 300);
        assert_eq!(pickup.occurred_at, at(12));
        let zone = bimride_domain::City::amsterdam()
            .locate(52.37, 4.89)
            .expect("in the city");
        assert_eq!(pickup.region, zone.region.to_string());
        assert_eq!(pickup.pickup_cell, zone.cell.to_string());
        assert_eq!(pickup.hour, hour_utc(at(2)));
        assert_eq!(trip.leg, EtaLeg::Trip);
        assert_eq!(trip.predicted_secs, quoted());
        assert_eq!(trip.actual_secs, 600);
        assert_eq!(t.open(), 0, "a ride with both legs seen is forgotten");
        // A redelivered record observes nothing new.
        let again = t.apply(0, &ride("r1")[2]);
        assert!(again.is_empty());
    }

    #[test]
    fn records_in_any_order_give_the_same_observations() {
        let mut forward = tracker(1.0);
        let expected: Vec<EtaObserved> = ride("r1")
            .iter()
            .flat_map(|e| forward.apply(0, e))
            .collect();
        let mut events = ride("r1");
        events.reverse();
        let mut backward = tracker(1.0);
        let mut got: Vec<EtaObserved> = events.iter().flat_map(|e| backward.apply(0, e)).collect();
        got.sort_by_key(|o| o.leg);
        assert_eq!(got, expected);
    }

    #[test]
    fn a_join_left_open_past_the_lateness_is_dropped_and_revoked_partitions_forgotten() {
        let mut t = tracker(1.0);
        let events = ride("r1");
        t.apply(0, &events[1]);
        t.apply(3, &ride("r2")[1]);
        assert_eq!(t.open(), 2);
        t.revoke(&[3].into());
        assert_eq!(t.open(), 1);
        // The log moves on by more than the lateness: r1's arrival never came.
        t.apply(
            1,
            &RideEvent::RideCancelled(RideCancelled {
                event_id: "x".into(),
                occurred_at: at(120),
                ride_id: "r3".into(),
                rider_id: "r".into(),
                driver_id: None,
                by: bimride_events::CancelledBy::Rider,
                reason: "r".into(),
                region: "x".into(),
            }),
        );
        // A clock behind the log holds expiry back: the log's "now" never passes it.
        assert_eq!(t.expire(at(0)), 0);
        assert_eq!(t.expire(at(120)), 1);
        assert_eq!(t.open(), 1);
        // Its arrival, later than the lateness, completes nothing.
        assert!(t.apply(0, &events[2]).is_empty());
    }
}
