//! The ride log folded by ride and checked. No I/O: records go in decoded, a report comes out.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bimride_events::{
    ChargeKind, DispatchEvent, DriverAssigned, EtaLeg, EtaObserved, FareCharged, Millis,
    Notification, OfferAnswer, Product, RecipientKind, RideCancelled, RideEvent, RideRequested,
    SupplyEvent, SurgeUpdated, Topic, TopicValue, TripCompleted,
};
use bimride_pricing::Cancellation;

use crate::report::{Check, Report};

/// Messages every completed ride sends, once each: to the rider, then to the driver.
const RIDER_MESSAGES: [&str; 4] = [
    "booking_confirmed",
    "driver_arrived",
    "trip_started",
    "receipt",
];
const DRIVER_MESSAGES: [&str; 2] = ["ride_assigned", "payout"];

/// One ride as the topics tell it.
#[derive(Debug, Default)]
pub struct Ride {
    pub requests: Vec<RideRequested>,
    pub assignments: Vec<DriverAssigned>,
    pub arrived: bool,
    pub completions: Vec<TripCompleted>,
    pub cancellations: Vec<RideCancelled>,
    pub charges: Vec<FareCharged>,
    pub messages: Vec<Notification>,
    /// The ids of every record that changes the ride (telemetry changes none): what the ride
    /// store must hold of it.
    pub ids: BTreeSet<String>,
    /// Its ride events' kinds in log order, to show how a ride ended.
    pub trail: Vec<&'static str>,
    /// The newest event time of its records.
    pub last_at: Option<Millis>,
}

impl Ride {
    fn ended_at(&self) -> Option<Millis> {
        let completed = self.completions.iter().map(|c| c.occurred_at);
        let cancelled = self.cancellations.iter().map(|c| c.occurred_at);
        completed.chain(cancelled).min()
    }

    /// Assignments, and cancellations made before any driver was assigned: each decides the
    /// ride, and a ride is decided once.
    fn decisions(&self) -> usize {
        let undriven = self
            .cancellations
            .iter()
            .filter(|c| c.driver_id.is_none())
            .count();
        self.assignments.len() + undriven
    }
}

/// Every record of every topic, folded by ride.
#[derive(Debug, Default)]
pub struct Ledger {
    rides: BTreeMap<String, Ride>,
    /// Event ids already taken: a record written twice (a producer's retry) is one event, as
    /// every consumer takes it.
    seen: HashSet<String>,
    redelivered: usize,
    notification_ids: BTreeMap<String, usize>,
    /// The newest event time read: the log's "now".
    through: Option<Millis>,
    /// Records read of each topic.
    read: BTreeMap<Topic, usize>,
    /// ETA observations by ride and leg, each distinct record once.
    observed: BTreeMap<(String, EtaLeg), Vec<EtaObserved>>,
    /// The drivers who accepted an offer of each ride.
    accepted: BTreeMap<String, BTreeSet<String>>,
    /// The oldest driver supply record read: accepts before it may have left the log.
    supply_from: Option<Millis>,
}

impl Ledger {
    fn first(&mut self, event_id: &str, at: Millis) -> bool {
        self.through = self.through.max(Some(at));
        if self.seen.insert(event_id.to_owned()) {
            true
        } else {
            self.redelivered += 1;
            false
        }
    }

    /// The ride `id`, noting one more of its records, and the record's id where it changes the
    /// ride (telemetry changes none).
    fn ride(&mut self, id: &str, record: Option<&str>, at: Millis) -> &mut Ride {
        let ride = self.rides.entry(id.to_owned()).or_default();
        if let Some(record) = record {
            ride.ids.insert(record.to_owned());
        }
        ride.last_at = ride.last_at.max(Some(at));
        ride
    }

    fn tally<T: TopicValue>(&mut self) {
        *self.read.entry(T::TOPIC).or_default() += 1;
    }

    /// Every ride read, by id.
    pub fn rides(&self) -> &BTreeMap<String, Ride> {
        &self.rides
    }

    /// The newest event time read: the log's "now".
    pub fn through(&self) -> Millis {
        self.through.unwrap_or(Millis(0))
    }

    pub fn request(&mut self, e: DispatchEvent) {
        self.tally::<DispatchEvent>();
        if let DispatchEvent::Requested(r) = e
            && self.first(&r.event_id, r.occurred_at)
        {
            let (id, event) = (r.ride_id.clone(), r.event_id.clone());
            self.ride(&id, Some(&event), r.occurred_at).requests.push(r);
        }
    }

    pub fn ride_event(&mut self, e: RideEvent) {
        self.tally::<RideEvent>();
        let (id, at) = (e.event_id().to_owned(), e.occurred_at());
        if !self.first(&id, at) {
            return;
        }
        let changes = !matches!(e, RideEvent::TripTelemetry(_));
        let ride = self.ride(e.ride_id(), changes.then_some(id.as_str()), at);
        ride.trail.push(e.kind());
        match e {
            RideEvent::DriverAssigned(a) => ride.assignments.push(a),
            RideEvent::DriverArrived(_) => ride.arrived = true,
            RideEvent::TripCompleted(c) => ride.completions.push(c),
            RideEvent::RideCancelled(c) => ride.cancellations.push(c),
            _ => {}
        }
    }

    pub fn charge(&mut self, c: FareCharged) {
        self.tally::<FareCharged>();
        if self.first(&c.event_id, c.occurred_at) {
            let (id, event) = (c.ride_id.clone(), c.event_id.clone());
            self.ride(&id, Some(&event), c.occurred_at).charges.push(c);
        }
    }

    pub fn message(&mut self, n: Notification) {
        self.tally::<Notification>();
        if !self.first(&n.event_id, n.occurred_at) {
            return;
        }
        *self
            .notification_ids
            .entry(n.notification_id.clone())
            .or_default() += 1;
        if let Some(ride) = n.ride_id.clone() {
            let id = n.notification_id.clone();
            self.ride(&ride, Some(&id), n.occurred_at).messages.push(n);
        }
    }

    // ETA, surge and supply records leave the log's "now" to the records that tell rides,
    // which hold a ride to its outcome: drivers' apps and surge's windows run on other clocks.

    /// An ETA observation: its event id is its ride and leg, so a tracker that observes a leg
    /// again writes the very same record, which counts as written twice.
    pub fn eta(&mut self, o: EtaObserved) {
        self.tally::<EtaObserved>();
        let key = (o.ride_id.clone(), o.leg);
        self.redelivered += usize::from(!distinct(&mut self.observed, key, o));
    }

    /// A surge update, counted only: a recompute after a fix to the engine publishes other
    /// multipliers for the same windows, as it is meant to.
    pub fn surge(&mut self, _: SurgeUpdated) {
        self.tally::<SurgeUpdated>();
    }

    /// A driver supply record; of them only accepted offers are kept, to check assignments.
    pub fn supply(&mut self, e: SupplyEvent) {
        self.tally::<SupplyEvent>();
        let at = e.occurred_at();
        self.supply_from = Some(self.supply_from.map_or(at, |from| from.min(at)));
        if let SupplyEvent::Answer(a) = e
            && a.answer == OfferAnswer::Accepted
        {
            self.accepted
                .entry(a.ride_id)
                .or_default()
                .insert(a.driver_id);
        }
    }

    /// Reconciles every ride. A ride is held to its outcome only once `settle_ms` of the
    /// log's own time has passed since it was requested or completed; younger rides may
    /// still be on their way. `from_beginning` says whether a record about a ride with no
    /// request (an ETA observation too) is a discrepancy, or merely a ride requested before
    /// the window.
    pub fn audit(&self, settle_ms: i64, from_beginning: bool) -> Report {
        let through = self.through();
        let settled = |at: Millis| through.0 - at.0 >= settle_ms;
        let mut checks = Checks::default();
        let mut undecided = 0;
        for (id, ride) in &self.rides {
            // A ride requested before the window may have been completed before it too.
            if !ride.charges.is_empty() && (from_beginning || !ride.requests.is_empty()) {
                let trips_done = ride.charges.iter().all(|c| c.kind != ChargeKind::Trip)
                    || !ride.completions.is_empty();
                checks.judge("trip charges only for completed rides", id, trips_done);
            }
            let Some(request) = ride.requests.first() else {
                if from_beginning {
                    checks.fail("requested once", id);
                }
                continue;
            };
            checks.judge("requested once", id, ride.requests.len() == 1);
            let decisions = ride.decisions();
            if decisions == 0 && !settled(request.occurred_at) {
                undecided += 1;
            } else {
                checks.judge("decided once", id, decisions == 1);
            }
            // Dispatch assigns a driver only on their accept, read from driver supply; the
            // busiest topic, its older segments may be gone while the ride's request is kept.
            let accepted = self.accepted.get(id);
            let answers_kept = self
                .supply_from
                .is_none_or(|from| request.occurred_at >= from);
            for a in ride.assignments.iter().filter(|_| answers_kept) {
                checks.judge(
                    "drivers assigned only on their accept",
                    &format!("{id}: {}", a.driver_id),
                    accepted.is_some_and(|drivers| drivers.contains(&a.driver_id)),
                );
            }
            checks.judge("completed at most once", id, ride.completions.len() <= 1);
            checks.judge("charged at most once", id, ride.charges.len() <= 1);
            for charge in &ride.charges {
                let split = charge.commission.amount_minor + charge.payout.amount_minor
                    == charge.fare.amount_minor;
                checks.judge("commission plus payout is the fare", id, split);
            }
            if let Some(done) = ride.completions.first() {
                if settled(done.occurred_at) {
                    checks.judge(
                        "completed rides charged at their quote",
                        id,
                        trip_charged(request, done, &ride.charges),
                    );
                    checks.judge("every message sent once", id, messages_sent(&ride.messages));
                }
            } else if let Some(cancelled) = ride.cancellations.first()
                && settled(cancelled.occurred_at)
            {
                let fee = cancellation_fee(request.product, ride, cancelled);
                checks.judge(
                    "cancellations charged by the rule",
                    id,
                    fee_charged(fee, &ride.charges),
                );
            }
        }
        let mut rides_of_key: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
        for (id, ride) in &self.rides {
            for r in &ride.requests {
                if let Some(key) = &r.idempotency_key {
                    rides_of_key
                        .entry((&r.rider_id, key))
                        .or_default()
                        .insert(id);
                }
            }
        }
        for ((rider, key), rides) in rides_of_key {
            let subject = format!(
                "{rider}/{key}: {}",
                Vec::from_iter(rides.iter().copied()).join(", ")
            );
            checks.judge("idempotency keys book one ride", &subject, rides.len() == 1);
        }
        for (notification, sent) in &self.notification_ids {
            checks.judge("notification ids unique", notification, *sent == 1);
        }
        for (driver, overlap) in self.overlaps() {
            let subject = match &overlap {
                Some((held, given)) => format!("{driver}: {held} and {given}"),
                None => driver,
            };
            checks.judge(
                "no driver on two rides at once",
                &subject,
                overlap.is_none(),
            );
        }
        for ((ride_id, leg), records) in &self.observed {
            let subject = format!("{ride_id}/{}", leg_name(*leg));
            let ride = self.rides.get(ride_id);
            let requested = ride.is_some_and(|r| !r.requests.is_empty());
            checks.judge("each leg observed once", &subject, records.len() == 1);
            if from_beginning {
                checks.judge("legs observed only of requested rides", &subject, requested);
            }
            if *leg == EtaLeg::Trip
                && let Some(ride) = ride
                && (requested || from_beginning)
            {
                checks.judge(
                    "trip legs observed only of completed rides",
                    &subject,
                    !ride.completions.is_empty(),
                );
            }
        }
        let records = Topic::ALL
            .iter()
            .map(|t| (t.suffix(), self.read.get(t).copied().unwrap_or(0)))
            .collect();
        Report::new(
            checks.0.into_values().collect(),
            self.rides.len(),
            undecided,
            self.redelivered,
            through,
            records,
        )
    }

    /// Every assigned driver, with the first two rides of theirs that overlap, if any: the
    /// ride they held, and the ride they were given during it.
    pub fn overlaps(&self) -> Vec<(String, Option<(String, String)>)> {
        let mut by_driver: BTreeMap<&str, Vec<Stint<'_>>> = BTreeMap::new();
        for (id, ride) in &self.rides {
            for a in &ride.assignments {
                by_driver.entry(a.driver_id.as_str()).or_default().push((
                    a.occurred_at,
                    id.as_str(),
                    ride.ended_at(),
                ));
            }
        }
        by_driver
            .into_iter()
            .map(|(driver, mut rides)| {
                rides.sort();
                let overlap = rides.windows(2).find_map(|pair| {
                    let ((_, earlier, ended), (assigned, later, _)) = (pair[0], pair[1]);
                    ended
                        .is_none_or(|end| end > assigned)
                        .then(|| (earlier.to_owned(), later.to_owned()))
                });
                (driver.to_owned(), overlap)
            })
            .collect()
    }
}

/// Puts `record` under `key` unless the very same record is there: whether it was new.
fn distinct<K: Ord, T: PartialEq>(map: &mut BTreeMap<K, Vec<T>>, key: K, record: T) -> bool {
    let records = map.entry(key).or_default();
    let new = !records.contains(&record);
    if new {
        records.push(record);
    }
    new
}

/// The leg's name, as the tracker writes it in the observation's event id.
fn leg_name(leg: EtaLeg) -> &'static str {
    match leg {
        EtaLeg::Pickup => "pickup",
        EtaLeg::Trip => "trip",
    }
}

/// A driver's ride: when it was assigned, which, and when it ended, if it has.
type Stint<'a> = (Millis, &'a str, Option<Millis>);

/// One trip charge, at the tariff of the product requested, with the surge quoted.
fn trip_charged(request: &RideRequested, done: &TripCompleted, charges: &[FareCharged]) -> bool {
    let fare = bimride_pricing::rates(request.product).fare(
        done.distance_m,
        done.duration_secs,
        request.surge_milli,
    );
    matches!(charges, [c] if c.kind == ChargeKind::Trip
        && c.fare.amount_minor == fare.total_minor
        && c.surge_milli == request.surge_milli
        && c.driver_id.as_deref() == Some(done.driver_id.as_str()))
}

fn cancellation_fee(product: Product, ride: &Ride, cancelled: &RideCancelled) -> Option<i64> {
    bimride_pricing::cancellation_fee(
        product,
        Cancellation {
            by: cancelled.by,
            assigned_at: ride.assignments.first().map(|a| a.occurred_at),
            driver_arrived: ride.arrived,
            cancelled_at: cancelled.occurred_at,
        },
    )
}

fn fee_charged(fee: Option<i64>, charges: &[FareCharged]) -> bool {
    match (fee, charges) {
        (None, []) => true,
        (Some(fee), [c]) => c.kind == ChargeKind::CancellationFee && c.fare.amount_minor == fee,
        _ => false,
    }
}

/// Each step's message to the rider and the driver, once.
fn messages_sent(messages: &[Notification]) -> bool {
    let sent = |kind: RecipientKind, template: &str| {
        messages
            .iter()
            .filter(|n| n.recipient_kind == kind && n.template == template)
            .count()
    };
    RIDER_MESSAGES
        .iter()
        .all(|t| sent(RecipientKind::Rider, t) == 1)
        && DRIVER_MESSAGES
            .iter()
            .all(|t| sent(RecipientKind::Driver, t) == 1)
        && messages
            .iter()
            .map(|n| &n.notification_id)
            .collect::<BTreeSet<_>>()
            .len()
            == messages.len()
}

/// Checks by name, in a stable order.
#[derive(Debug, Default)]
struct Checks(BTreeMap<&'static str, Check>);

impl Checks {
    fn judge(&mut self, name: &'static str, subject: &str, held: bool) {
        let check = self.0.entry(name).or_insert_with(|| Check::new(name));
        check.checked += 1;
        if !held {
            check.failed.push(subject.to_owned());
        }
    }

    fn fail(&mut self, name: &'static str, subject: &str) {
        self.judge(name, subject, false);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use bimride_events::{
        CancelledBy, DriverLocationUpdated, GeoPoint, Money, OfferAnswered, Vehicle,
    };

    use super::*;

    const MIN: i64 = 60_000;
    pub(crate) const SETTLE: i64 = 2 * MIN;

    fn eur(amount_minor: i64) -> Money {
        Money {
            amount_minor,
            currency: "EUR".into(),
        }
    }

    fn at(minutes: i64) -> Millis {
        Millis(1_800_000_000_000 + minutes * MIN)
    }

    pub(crate) fn requested(ride: &str, minutes: i64) -> DispatchEvent {
        DispatchEvent::Requested(RideRequested {
            event_id: format!("{ride}-requested"),
            occurred_at: at(minutes),
            ride_id: ride.into(),
            rider_id: format!("rider-{ride}"),
            product: Product::Economy,
            pickup: GeoPoint {
                lat: 52.37,
                lng: 4.89,
            },
            dropoff: GeoPoint {
                lat: 52.36,
                lng: 4.88,
            },
            region: "r".into(),
            pickup_cell: "c".into(),
            quote: eur(700),
            surge_milli: 1_200,
            idempotency_key: None,
            quoted_duration_secs: None,
        })
    }

    fn assigned(ride: &str, driver: &str, minutes: i64) -> RideEvent {
        RideEvent::DriverAssigned(DriverAssigned {
            event_id: format!("{ride}-assigned-{driver}"),
            occurred_at: at(minutes),
            ride_id: ride.into(),
            rider_id: format!("rider-{ride}"),
            driver_id: driver.into(),
            vehicle: Vehicle {
                plate: "B-1".into(),
                model: "m".into(),
                colour: "c".into(),
            },
            pickup_eta_secs: 120,
            region: "r".into(),
            product: Some(Product::Economy),
            surge_milli: 1_200,
            distance_eta_secs: None,
            quoted_duration_secs: None,
        })
    }

    /// A driver's answer to an offer of `ride`, as their app writes it to driver supply.
    fn answered(ride: &str, driver: &str, answer: OfferAnswer, minutes: i64) -> SupplyEvent {
        SupplyEvent::Answer(OfferAnswered {
            event_id: format!("{ride}-answer-{driver}"),
            occurred_at: at(minutes),
            ride_id: ride.into(),
            offer_id: format!("{ride}-offer-{driver}"),
            driver_id: driver.into(),
            answer,
            region: "r".into(),
        })
    }

    /// `driver` accepts `ride` and dispatch assigns it to them.
    /// A driver's app reporting in before anything else: driver supply is read from here.
    fn online(ledger: &mut Ledger, driver: &str, minutes: i64) {
        ledger.supply(SupplyEvent::Location(DriverLocationUpdated {
            event_id: format!("{driver}-moved-{minutes}"),
            occurred_at: at(minutes),
            driver_id: driver.into(),
            position: GeoPoint {
                lat: 52.36,
                lng: 4.88,
            },
            region: "r".into(),
            cell: "c".into(),
        }));
    }

    fn assign(ledger: &mut Ledger, ride: &str, driver: &str, minutes: i64) {
        ledger.supply(answered(ride, driver, OfferAnswer::Accepted, minutes));
        ledger.ride_event(assigned(ride, driver, minutes));
    }

    fn completed(ride: &str, driver: &str, minutes: i64) -> RideEvent {
        RideEvent::TripCompleted(TripCompleted {
            event_id: format!("{ride}-completed"),
            occurred_at: at(minutes),
            ride_id: ride.into(),
            rider_id: format!("rider-{ride}"),
            driver_id: driver.into(),
            distance_m: 4_000,
            duration_secs: 600,
            dropoff: GeoPoint {
                lat: 52.36,
                lng: 4.88,
            },
        })
    }

    fn cancelled(ride: &str, driver: Option<&str>, by: CancelledBy, minutes: i64) -> RideEvent {
        RideEvent::RideCancelled(RideCancelled {
            event_id: format!("{ride}-cancelled"),
            occurred_at: at(minutes),
            ride_id: ride.into(),
            rider_id: format!("rider-{ride}"),
            driver_id: driver.map(str::to_owned),
            by,
            reason: "r".into(),
            region: "r".into(),
        })
    }

    /// The charge billing makes: `total` split 20/80.
    fn charge(ride: &str, driver: &str, kind: ChargeKind, total: i64, n: u32) -> FareCharged {
        FareCharged {
            event_id: format!("{ride}-charged-{n}"),
            occurred_at: at(30),
            ride_id: ride.into(),
            rider_id: format!("rider-{ride}"),
            driver_id: Some(driver.into()),
            kind,
            fare: eur(total),
            base_minor: 0,
            distance_minor: 0,
            time_minor: 0,
            surge_milli: 1_200,
            commission: eur(total / 5),
            payout: eur(total - total / 5),
        }
    }

    fn tariff() -> i64 {
        bimride_pricing::rates(Product::Economy)
            .fare(4_000, 600, 1_200)
            .total_minor
    }

    fn messages(ledger: &mut Ledger, ride: &str, driver: &str) {
        let sends = RIDER_MESSAGES
            .iter()
            .map(|t| (RecipientKind::Rider, *t, format!("rider-{ride}")))
            .chain(
                DRIVER_MESSAGES
                    .iter()
                    .map(|t| (RecipientKind::Driver, *t, driver.to_owned())),
            );
        for (kind, template, to) in sends {
            ledger.message(Notification {
                event_id: format!("{ride}-{template}-event"),
                occurred_at: at(30),
                notification_id: format!("{ride}-{template}"),
                recipient_kind: kind,
                recipient_id: to,
                ride_id: Some(ride.into()),
                template: template.into(),
                text: "t".into(),
            });
        }
    }

    /// A ride booked at minute 0, driven by `driver`, completed at 20, charged and messaged.
    pub(crate) fn completed_ride(ledger: &mut Ledger, ride: &str, driver: &str) {
        ledger.request(requested(ride, 0));
        assign(ledger, ride, driver, 1);
        ledger.ride_event(completed(ride, driver, 20));
        ledger.charge(charge(ride, driver, ChargeKind::Trip, tariff(), 0));
        messages(ledger, ride, driver);
    }

    /// What the ETA tracker observes of a leg of `ride`, which took `actual_secs`.
    fn observed(ride: &str, leg: EtaLeg, actual_secs: i64) -> EtaObserved {
        EtaObserved {
            event_id: format!("{ride}/{}", leg_name(leg)),
            occurred_at: at(20),
            ride_id: ride.into(),
            leg,
            region: "r".into(),
            pickup_cell: "c".into(),
            hour: 8,
            predicted_secs: 600,
            actual_secs,
            baseline_secs: Some(660),
        }
    }

    /// Surge's update of `cell` for the window ending at `minutes`.
    fn surge(cell: &str, minutes: i64, multiplier_milli: i32) -> SurgeUpdated {
        SurgeUpdated {
            event_id: format!("{cell}-{minutes}"),
            occurred_at: at(minutes),
            cell: cell.into(),
            multiplier_milli,
            demand: 13,
            supply: 10,
            window_end: at(minutes),
        }
    }

    fn failed<'a>(report: &'a Report, check: &str) -> &'a [String] {
        report.check(check).map_or(&[], |c| c.failed.as_slice())
    }

    #[test]
    fn an_idempotency_key_that_booked_two_rides_is_named() {
        let mut ledger = Ledger::default();
        let keyed = |ride: &str, key: &str| match requested(ride, 0) {
            DispatchEvent::Requested(mut r) => {
                r.rider_id = "rider-k".into();
                r.idempotency_key = Some(key.into());
                DispatchEvent::Requested(r)
            }
            other => other,
        };
        ledger.request(keyed("ride-a", "key-1"));
        ledger.request(keyed("ride-b", "key-1"));
        ledger.request(keyed("ride-c", "key-2"));
        let report = ledger.audit(SETTLE, true);
        assert_eq!(
            failed(&report, "idempotency keys book one ride"),
            ["rider-k/key-1: ride-a, ride-b"]
        );
        assert_eq!(
            report
                .check("idempotency keys book one ride")
                .map(|c| c.checked),
            Some(2)
        );
    }

    #[test]
    fn each_ride_keeps_the_ids_of_its_records_and_its_trail() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-1", "driver-1");
        let ride = &ledger.rides()["ride-1"];
        // Request, assignment, completion, charge and six messages.
        assert_eq!(ride.ids.len(), 10, "{:?}", ride.ids);
        assert_eq!(ride.trail, ["DriverAssigned", "TripCompleted"]);
        assert_eq!(ride.last_at, Some(at(30)));
    }

    #[test]
    fn a_clean_log_is_clean_and_every_check_counted_its_rides() {
        let mut ledger = Ledger::default();
        online(&mut ledger, "driver-1", -1);
        completed_ride(&mut ledger, "ride-1", "driver-1");
        completed_ride(&mut ledger, "ride-2", "driver-2");
        // A ride nobody could take, and a rider who changed their mind at once: no fee.
        ledger.request(requested("ride-3", 5));
        ledger.ride_event(cancelled("ride-3", None, CancelledBy::System, 6));
        ledger.request(requested("ride-4", 5));
        assign(&mut ledger, "ride-4", "driver-3", 6);
        ledger.ride_event(cancelled("ride-4", Some("driver-3"), CancelledBy::Rider, 6));
        // The same record twice, as a producer's retry writes it: one event.
        ledger.charge(charge("ride-1", "driver-1", ChargeKind::Trip, tariff(), 0));
        let report = ledger.audit(SETTLE, true);
        assert!(report.clean, "{}", report.table());
        assert_eq!(report.rides, 4);
        assert_eq!(report.redelivered, 1);
        assert_eq!(report.check("requested once").map(|c| c.checked), Some(4));
        assert_eq!(
            report
                .check("completed rides charged at their quote")
                .map(|c| c.checked),
            Some(2)
        );
        assert_eq!(
            report
                .check("trip charges only for completed rides")
                .map(|c| c.checked),
            Some(2)
        );
        assert_eq!(
            report
                .check("drivers assigned only on their accept")
                .map(|c| c.checked),
            Some(3)
        );
    }

    #[test]
    fn a_second_charge_a_wrong_fare_and_a_lost_ride_are_named() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-twice", "driver-1");
        ledger.charge(charge(
            "ride-twice",
            "driver-1",
            ChargeKind::Trip,
            tariff(),
            1,
        ));
        ledger.request(requested("ride-cheap", 0));
        ledger.ride_event(assigned("ride-cheap", "driver-2", 1));
        ledger.ride_event(completed("ride-cheap", "driver-2", 20));
        ledger.charge(charge(
            "ride-cheap",
            "driver-2",
            ChargeKind::Trip,
            tariff() - 1,
            0,
        ));
        messages(&mut ledger, "ride-cheap", "driver-2");
        ledger.request(requested("ride-lost", 0));
        // The log runs on to minute 30 (the charges); a ride booked then is merely young.
        ledger.request(requested("ride-young", 29));
        let report = ledger.audit(SETTLE, true);
        assert!(!report.clean);
        assert_eq!(failed(&report, "charged at most once"), ["ride-twice"]);
        assert_eq!(
            failed(&report, "completed rides charged at their quote"),
            ["ride-cheap", "ride-twice"]
        );
        assert_eq!(failed(&report, "decided once"), ["ride-lost"]);
        assert_eq!(report.undecided_recent, 1);
        assert!(report.table().contains("DISCREPANCIES FOUND"));
    }

    #[test]
    fn a_driver_on_two_rides_a_missing_fee_and_a_repeated_message_are_named() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-a", "driver-1");
        // Assigned at minute 1 while ride-a runs until minute 20.
        ledger.request(requested("ride-b", 0));
        ledger.ride_event(assigned("ride-b", "driver-1", 1));
        // Cancelled by the rider 10 minutes after assignment: the fee is due, and missing.
        ledger.ride_event(cancelled(
            "ride-b",
            Some("driver-1"),
            CancelledBy::Rider,
            11,
        ));
        // One message sent again under a new event.
        let mut again = Notification {
            event_id: "ride-a-receipt-again".into(),
            occurred_at: at(31),
            notification_id: "ride-a-receipt".into(),
            recipient_kind: RecipientKind::Rider,
            recipient_id: "rider-ride-a".into(),
            ride_id: Some("ride-a".into()),
            template: "receipt".into(),
            text: "t".into(),
        };
        ledger.message(again.clone());
        again.event_id = "ride-a-receipt-again".into();
        ledger.message(again);
        let report = ledger.audit(SETTLE, true);
        assert_eq!(
            failed(&report, "no driver on two rides at once"),
            ["driver-1: ride-a and ride-b"]
        );
        assert_eq!(
            failed(&report, "cancellations charged by the rule"),
            ["ride-b"]
        );
        assert_eq!(failed(&report, "every message sent once"), ["ride-a"]);
        assert_eq!(
            failed(&report, "notification ids unique"),
            ["ride-a-receipt"]
        );
        assert_eq!(report.redelivered, 1, "the same event twice is one");
    }

    #[test]
    fn records_of_a_ride_requested_before_the_window_count_only_from_the_beginning() {
        let mut ledger = Ledger::default();
        ledger.charge(charge(
            "ride-old",
            "driver-1",
            ChargeKind::Trip,
            tariff(),
            0,
        ));
        assert!(ledger.audit(SETTLE, false).clean);
        assert_eq!(
            failed(&ledger.audit(SETTLE, true), "requested once"),
            ["ride-old"]
        );
    }

    #[test]
    fn a_charge_whose_commission_and_payout_are_not_the_fare_is_named() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-fair", "driver-1");
        ledger.request(requested("ride-split", 0));
        assign(&mut ledger, "ride-split", "driver-2", 1);
        ledger.ride_event(completed("ride-split", "driver-2", 20));
        let mut split = charge("ride-split", "driver-2", ChargeKind::Trip, tariff(), 0);
        split.payout.amount_minor += 1;
        ledger.charge(split);
        let report = ledger.audit(SETTLE, true);
        assert_eq!(
            failed(&report, "commission plus payout is the fare"),
            ["ride-split"]
        );
        assert_eq!(
            report
                .check("commission plus payout is the fare")
                .map(|c| c.checked),
            Some(2)
        );
    }

    #[test]
    fn a_ride_completed_twice_is_named() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-once", "driver-1");
        completed_ride(&mut ledger, "ride-twice", "driver-2");
        let RideEvent::TripCompleted(mut again) = completed("ride-twice", "driver-2", 21) else {
            unreachable!("a completion")
        };
        again.event_id = "ride-twice-completed-again".into();
        ledger.ride_event(RideEvent::TripCompleted(again));
        let report = ledger.audit(SETTLE, true);
        assert_eq!(failed(&report, "completed at most once"), ["ride-twice"]);
        assert_eq!(
            report.redelivered, 0,
            "another event, not the same one again"
        );
    }

    #[test]
    fn a_ride_requested_twice_is_named() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-once", "driver-1");
        completed_ride(&mut ledger, "ride-twice", "driver-2");
        let DispatchEvent::Requested(mut again) = requested("ride-twice", 1) else {
            unreachable!("a request")
        };
        again.event_id = "ride-twice-requested-again".into();
        ledger.request(DispatchEvent::Requested(again));
        let report = ledger.audit(SETTLE, true);
        assert_eq!(failed(&report, "requested once"), ["ride-twice"]);
    }

    #[test]
    fn a_ride_assigned_twice_is_named() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-once", "driver-1");
        completed_ride(&mut ledger, "ride-twice", "driver-2");
        assign(&mut ledger, "ride-twice", "driver-3", 2);
        let report = ledger.audit(SETTLE, true);
        assert_eq!(failed(&report, "decided once"), ["ride-twice"]);
        assert!(failed(&report, "drivers assigned only on their accept").is_empty());
    }

    #[test]
    fn a_trip_charged_at_a_surge_other_than_quoted_is_named() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-quoted", "driver-1");
        ledger.request(requested("ride-surged", 0));
        assign(&mut ledger, "ride-surged", "driver-2", 1);
        ledger.ride_event(completed("ride-surged", "driver-2", 20));
        // The fare of the quote, but a surge that was not quoted.
        let mut surged = charge("ride-surged", "driver-2", ChargeKind::Trip, tariff(), 0);
        surged.surge_milli = 1_500;
        ledger.charge(surged);
        messages(&mut ledger, "ride-surged", "driver-2");
        let report = ledger.audit(SETTLE, true);
        assert_eq!(
            failed(&report, "completed rides charged at their quote"),
            ["ride-surged"]
        );
    }

    #[test]
    fn a_trip_charge_of_a_ride_never_completed_is_named() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-done", "driver-1");
        // Cancelled by the rider after assignment, and charged a trip fare for it.
        ledger.request(requested("ride-cancelled", 0));
        assign(&mut ledger, "ride-cancelled", "driver-2", 1);
        ledger.ride_event(cancelled(
            "ride-cancelled",
            Some("driver-2"),
            CancelledBy::Rider,
            11,
        ));
        ledger.charge(charge(
            "ride-cancelled",
            "driver-2",
            ChargeKind::Trip,
            tariff(),
            0,
        ));
        // Still on its way, and charged already.
        ledger.request(requested("ride-running", 25));
        assign(&mut ledger, "ride-running", "driver-3", 26);
        ledger.charge(charge(
            "ride-running",
            "driver-3",
            ChargeKind::Trip,
            tariff(),
            0,
        ));
        // A cancellation fee needs no completion.
        ledger.request(requested("ride-fee", 0));
        assign(&mut ledger, "ride-fee", "driver-4", 1);
        ledger.ride_event(cancelled(
            "ride-fee",
            Some("driver-4"),
            CancelledBy::Rider,
            11,
        ));
        let fee = cancellation_fee(
            Product::Economy,
            &ledger.rides()["ride-fee"],
            &ledger.rides()["ride-fee"].cancellations[0],
        )
        .expect("a fee is due");
        ledger.charge(charge(
            "ride-fee",
            "driver-4",
            ChargeKind::CancellationFee,
            fee,
            0,
        ));
        let report = ledger.audit(SETTLE, true);
        assert_eq!(
            failed(&report, "trip charges only for completed rides"),
            ["ride-cancelled", "ride-running"]
        );
        assert_eq!(
            report
                .check("trip charges only for completed rides")
                .map(|c| c.checked),
            Some(4)
        );
        assert!(
            failed(&report, "cancellations charged by the rule").contains(&"ride-cancelled".into())
        );
        assert!(!failed(&report, "cancellations charged by the rule").contains(&"ride-fee".into()));
    }

    #[test]
    fn an_assignment_no_driver_accepted_is_named() {
        let mut ledger = Ledger::default();
        online(&mut ledger, "driver-1", -1);
        completed_ride(&mut ledger, "ride-accepted", "driver-1");
        // Declined by one driver, accepted by another, and given to the one who declined.
        ledger.request(requested("ride-imposed", 0));
        ledger.supply(answered(
            "ride-imposed",
            "driver-2",
            OfferAnswer::Declined,
            1,
        ));
        ledger.supply(answered(
            "ride-imposed",
            "driver-3",
            OfferAnswer::Accepted,
            1,
        ));
        ledger.ride_event(assigned("ride-imposed", "driver-2", 1));
        // Requested before the oldest driver supply read: its answer may have left the log.
        ledger.request(requested("ride-early", -10));
        ledger.ride_event(assigned("ride-early", "driver-4", -9));
        let report = ledger.audit(SETTLE, true);
        assert_eq!(
            failed(&report, "drivers assigned only on their accept"),
            ["ride-imposed: driver-2"]
        );
    }

    #[test]
    fn each_leg_observed_once_of_a_requested_ride_and_a_repeat_is_one() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-1", "driver-1");
        ledger.eta(observed("ride-1", EtaLeg::Pickup, 100));
        ledger.eta(observed("ride-1", EtaLeg::Trip, 540));
        // The tracker observing the trip again, as after a replay: the same record.
        ledger.eta(observed("ride-1", EtaLeg::Trip, 540));
        let report = ledger.audit(SETTLE, true);
        assert!(report.clean, "{}", report.table());
        assert_eq!(report.redelivered, 1);
        assert_eq!(
            report.check("each leg observed once").map(|c| c.checked),
            Some(2)
        );
        assert_eq!(
            report
                .check("trip legs observed only of completed rides")
                .map(|c| c.checked),
            Some(1)
        );
    }

    #[test]
    fn a_leg_observed_twice_unlike_of_no_ride_or_of_a_ride_not_completed_is_named() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-1", "driver-1");
        ledger.eta(observed("ride-1", EtaLeg::Pickup, 100));
        // The same leg under the same id with another figure.
        ledger.eta(observed("ride-1", EtaLeg::Pickup, 130));
        // And under another id.
        ledger.eta(observed("ride-1", EtaLeg::Trip, 540));
        let mut other = observed("ride-1", EtaLeg::Trip, 540);
        other.event_id = "ride-1/trip-again".into();
        ledger.eta(other);
        // A ride never requested in the log.
        ledger.eta(observed("ride-ghost", EtaLeg::Pickup, 100));
        // A trip observed of a ride still under way.
        ledger.request(requested("ride-running", 5));
        assign(&mut ledger, "ride-running", "driver-2", 6);
        ledger.eta(observed("ride-running", EtaLeg::Trip, 300));
        let report = ledger.audit(SETTLE, true);
        assert_eq!(
            failed(&report, "each leg observed once"),
            ["ride-1/pickup", "ride-1/trip"]
        );
        assert_eq!(
            failed(&report, "legs observed only of requested rides"),
            ["ride-ghost/pickup"]
        );
        assert_eq!(
            failed(&report, "trip legs observed only of completed rides"),
            ["ride-running/trip"]
        );
        assert_eq!(report.redelivered, 0);
        // Within a window, the ghost may have been requested before it.
        let windowed = ledger.audit(SETTLE, false);
        assert_eq!(
            failed(&windowed, "each leg observed once"),
            ["ride-1/pickup", "ride-1/trip"]
        );
        assert!(
            windowed
                .check("legs observed only of requested rides")
                .is_none()
        );
    }

    #[test]
    fn the_report_counts_the_records_read_of_every_topic() {
        let mut ledger = Ledger::default();
        completed_ride(&mut ledger, "ride-1", "driver-1");
        // Written twice: both read, one taken.
        ledger.charge(charge("ride-1", "driver-1", ChargeKind::Trip, tariff(), 0));
        online(&mut ledger, "driver-1", 21);
        ledger.eta(observed("ride-1", EtaLeg::Trip, 540));
        ledger.surge(surge("cell-a", 0, 1_300));
        let report = ledger.audit(SETTLE, true);
        let read = |topic: &str| report.records.get(topic).copied();
        assert_eq!(read("ride-requests"), Some(1));
        assert_eq!(read("driver-supply"), Some(2));
        assert_eq!(read("ride-events"), Some(2));
        assert_eq!(read("surge"), Some(1));
        assert_eq!(read("payments"), Some(2));
        assert_eq!(read("notifications"), Some(6));
        assert_eq!(read("eta"), Some(1));
        assert_eq!(report.records.len(), Topic::ALL.len());
        assert!(
            report.table().contains(
                "records read: 1 ride-requests, 2 driver-supply, 2 ride-events, 1 surge, \
                 2 payments, 6 notifications, 1 eta"
            ),
            "{}",
            report.table()
        );
        let json = serde_json::to_value(&report).expect("serialises");
        assert_eq!(json["records"]["driver-supply"], 2);
    }
}
