//! The ledger: what billing knows of each ride, and the charges it decides. Pure state: the
//! service feeds it ride events and the charges already on the payments log.
//!
//! A ride is charged at most once. Its charge is derived only from events (the product and
//! surge quoted at request time, carried by the assignment, and the distance and duration of
//! the completed trip), so replaying the same events decides the same charge, with the same
//! event id.

use std::collections::{BTreeSet, HashMap};

use bimride_domain::fare::NO_SURGE;
use bimride_domain::ride::{Applied, RideState, Step, TransitionError};
use bimride_domain::{Fare, Mode, split_commission};
use bimride_events::{ChargeKind, FareCharged, Millis, Money, Product, RideEvent};
use bimride_pricing::{CURRENCY, Cancellation, cancellation_fee, rates};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("ride {0} completed, but its assignment was never seen")]
    UnknownRide(String),
    #[error("ride {ride_id}: {source}")]
    Transition {
        ride_id: String,
        source: TransitionError,
    },
}

impl LedgerError {
    /// The dead-letter reason.
    pub fn reason(&self) -> &'static str {
        match self {
            LedgerError::UnknownRide(_) => "unknown_ride",
            LedgerError::Transition { .. } => "impossible_transition",
        }
    }
}

#[derive(Debug, Clone)]
struct Account {
    partition: i32,
    product: Product,
    surge_milli: i32,
    assigned_at: Option<Millis>,
    arrived: bool,
    state: RideState,
    /// A charge for this ride is on the payments log, or was decided here.
    charged: bool,
    /// Event time of the latest event, for eviction.
    touched: Millis,
}

impl Account {
    fn new(partition: i32, product: Product, surge_milli: i32, touched: Millis) -> Self {
        Self {
            partition,
            product,
            surge_milli,
            assigned_at: None,
            arrived: false,
            state: RideState::default(),
            charged: false,
            touched,
        }
    }
}

/// Counts of what the ledger decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charges {
    pub trips: u64,
    pub cancellation_fees: u64,
    pub duplicates: u64,
}

#[derive(Debug, Default)]
pub struct Ledger {
    commission_bp: u32,
    accounts: HashMap<String, Account>,
    tally: Charges,
}

/// The id of a ride's charge: the same ride always gives the same id, so a duplicate charge
/// from an at-least-once retry is recognisable downstream.
pub fn charge_id(ride_id: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("bimride:charge:{ride_id}").as_bytes(),
    )
    .to_string()
}

impl Ledger {
    pub fn new(commission_bp: u32) -> Self {
        Self {
            commission_bp,
            ..Self::default()
        }
    }

    pub fn tally(&self) -> Charges {
        self.tally
    }

    /// Rides currently held.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Applies one ride event read from `partition`; returns the charge it causes, if any.
    pub fn apply(
        &mut self,
        partition: i32,
        event: &RideEvent,
        mode: Mode,
    ) -> Result<Option<FareCharged>, LedgerError> {
        let ride_id = event.ride_id();
        let at = bimride_events::TopicValue::occurred_at(event);
        if let RideEvent::DriverAssigned(a) = event {
            let account = self.accounts.entry(ride_id.to_owned()).or_insert_with(|| {
                Account::new(
                    partition,
                    a.product.unwrap_or(Product::Economy),
                    a.surge_milli,
                    at,
                )
            });
            if step(account, ride_id, Step::Assigned, at)? {
                account.assigned_at = Some(a.occurred_at);
            }
            return Ok(None);
        }
        let Some(account) = self.accounts.get_mut(ride_id) else {
            return match event {
                RideEvent::TripCompleted(_) => Err(LedgerError::UnknownRide(ride_id.to_owned())),
                // Offers, and cancellations before any assignment, cost nothing; the other
                // steps of a ride assigned before the replay window change no money.
                _ => Ok(None),
            };
        };
        account.touched = account.touched.max(at);
        let charge = match event {
            RideEvent::DriverArrived(_) => {
                let moved = step(account, ride_id, Step::DriverArrived, at)?;
                account.arrived |= moved;
                None
            }
            RideEvent::TripStarted(_) => {
                step(account, ride_id, Step::TripStarted, at)?;
                None
            }
            RideEvent::TripCompleted(c) => {
                if account.charged {
                    self.tally.duplicates += 1;
                    return Ok(None);
                }
                if !step(account, ride_id, Step::Completed, at)? {
                    return Ok(None);
                }
                let fare =
                    rates(account.product).fare(c.distance_m, c.duration_secs, account.surge_milli);
                self.tally.trips += 1;
                Some(charge(
                    self.commission_bp,
                    ChargeKind::Trip,
                    (&c.ride_id, &c.rider_id, &c.driver_id),
                    c.occurred_at,
                    fare,
                ))
            }
            RideEvent::RideCancelled(x) => {
                if account.charged || !step(account, ride_id, Step::Cancelled, at)? {
                    return Ok(None);
                }
                let fee = cancellation_fee(
                    account.product,
                    Cancellation {
                        by: x.by,
                        assigned_at: account.assigned_at,
                        driver_arrived: account.arrived,
                        cancelled_at: x.occurred_at,
                    },
                );
                fee.map(|fee| {
                    self.tally.cancellation_fees += 1;
                    let driver = x.driver_id.as_deref().unwrap_or_default();
                    charge(
                        self.commission_bp,
                        ChargeKind::CancellationFee,
                        (&x.ride_id, &x.rider_id, driver),
                        x.occurred_at,
                        Fare::flat(fee),
                    )
                })
            }
            _ => None,
        };
        if charge.is_some() {
            account.charged = true;
        }
        Ok(charge.filter(|_| mode == Mode::Live))
    }

    /// Records a charge read back from the payments log: its ride is never charged again.
    pub fn charged(&mut self, partition: i32, charge: &FareCharged) {
        // A ride known only from its charge: nothing about it matters but that it is paid.
        let account = self
            .accounts
            .entry(charge.ride_id.clone())
            .or_insert_with(|| {
                Account::new(partition, Product::Economy, NO_SURGE, charge.occurred_at)
            });
        account.charged = true;
        account.touched = account.touched.max(charge.occurred_at);
    }

    /// Drops the rides of partitions this instance no longer owns.
    pub fn revoke(&mut self, partitions: &BTreeSet<i32>) {
        self.accounts
            .retain(|_, a| !partitions.contains(&a.partition));
    }

    /// Drops rides untouched since `cutoff` (event time); the replay window bounds memory.
    pub fn forget_before(&mut self, cutoff: Millis) {
        self.accounts.retain(|_, a| a.touched >= cutoff);
    }
}

/// Applies `s` to the account's state machine: true if it moved, false for a duplicate.
fn step(account: &mut Account, ride_id: &str, s: Step, at: Millis) -> Result<bool, LedgerError> {
    account.touched = account.touched.max(at);
    match account.state.apply(s) {
        Ok(Applied::Changed(_)) => Ok(true),
        Ok(Applied::AlreadyApplied) => Ok(false),
        Err(source) => Err(LedgerError::Transition {
            ride_id: ride_id.to_owned(),
            source,
        }),
    }
}

fn money(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: CURRENCY.to_owned(),
    }
}

fn charge(
    commission_bp: u32,
    kind: ChargeKind,
    (ride_id, rider_id, driver_id): (&str, &str, &str),
    at: Millis,
    Fare {
        parts, total_minor, ..
    }: Fare,
) -> FareCharged {
    let split = split_commission(total_minor, commission_bp);
    FareCharged {
        event_id: charge_id(ride_id),
        occurred_at: at,
        ride_id: ride_id.to_owned(),
        rider_id: rider_id.to_owned(),
        driver_id: (!driver_id.is_empty()).then(|| driver_id.to_owned()),
        kind,
        fare: money(total_minor),
        base_minor: parts.base_minor,
        distance_minor: parts.distance_minor,
        time_minor: parts.time_minor,
        surge_milli: parts.surge_milli,
        commission: money(split.commission_minor),
        payout: money(split.payout_minor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bimride_events::{
        CancelledBy, DriverArrived, DriverAssigned, GeoPoint, RideCancelled, TripCompleted,
        TripStarted, Vehicle,
    };
    use proptest::prelude::*;

    const RIDE: &str = "ride-1";

    fn assigned(at: i64, product: Product, surge_milli: i32) -> RideEvent {
        DriverAssigned {
            event_id: format!("a-{at}"),
            occurred_at: Millis(at),
            ride_id: RIDE.into(),
            rider_id: "rider-1".into(),
            driver_id: "driver-1".into(),
            vehicle: Vehicle {
                plate: "B-1".into(),
                model: "Prius".into(),
                colour: "blue".into(),
            },
            pickup_eta_secs: 120,
            region: "r".into(),
            product: Some(product),
            surge_milli,
            distance_eta_secs: None,
            quoted_duration_secs: None,
        }
        .into()
    }

    fn arrived(at: i64) -> RideEvent {
        DriverArrived {
            event_id: format!("b-{at}"),
            occurred_at: Millis(at),
            ride_id: RIDE.into(),
            driver_id: "driver-1".into(),
            rider_id: "rider-1".into(),
        }
        .into()
    }

    fn started(at: i64) -> RideEvent {
        TripStarted {
            event_id: format!("s-{at}"),
            occurred_at: Millis(at),
            ride_id: RIDE.into(),
            driver_id: "driver-1".into(),
            rider_id: "rider-1".into(),
        }
        .into()
    }

    fn completed(at: i64, distance_m: i64, duration_secs: i64) -> RideEvent {
        TripCompleted {
            event_id: format!("c-{at}"),
            occurred_at: Millis(at),
            ride_id: RIDE.into(),
            rider_id: "rider-1".into(),
            driver_id: "driver-1".into(),
            distance_m,
            duration_secs,
            dropoff: GeoPoint { lat: 0.0, lng: 0.0 },
        }
        .into()
    }

    fn cancelled(at: i64, by: CancelledBy) -> RideEvent {
        RideCancelled {
            event_id: format!("x-{at}"),
            occurred_at: Millis(at),
            ride_id: RIDE.into(),
            rider_id: "rider-1".into(),
            driver_id: Some("driver-1".into()),
            by,
            reason: "changed_mind".into(),
            region: "r".into(),
        }
        .into()
    }

    fn run(ledger: &mut Ledger, events: &[RideEvent]) -> Vec<FareCharged> {
        events
            .iter()
            .filter_map(|e| ledger.apply(0, e, Mode::Live).ok().flatten())
            .collect()
    }

    #[test]
    fn a_completed_trip_is_charged_its_quoted_surge_and_split_exactly() {
        let mut ledger = Ledger::new(2_500);
        let charges = run(
            &mut ledger,
            &[
                assigned(1_000, Product::Economy, 1_500),
                arrived(2_000),
                started(3_000),
                completed(4_000, 5_000, 900),
            ],
        );
        let [c] = charges.as_slice() else {
            panic!("one charge expected, got {charges:?}");
        };
        // 250 + 600 + 450 = 1300, times 1.5.
        assert_eq!(c.fare.amount_minor, 1_950);
        assert_eq!(
            (c.base_minor, c.distance_minor, c.time_minor),
            (250, 600, 450)
        );
        assert_eq!(c.surge_milli, 1_500);
        assert_eq!(c.commission.amount_minor, 488);
        assert_eq!(c.payout.amount_minor, 1_462);
        assert_eq!(c.kind, ChargeKind::Trip);
        assert_eq!(c.event_id, charge_id(RIDE));
        assert_eq!(c.occurred_at, Millis(4_000));
    }

    #[test]
    fn a_second_completion_charges_nothing() {
        let mut ledger = Ledger::new(2_500);
        let mut events = vec![
            assigned(1, Product::Comfort, 1_000),
            arrived(2),
            started(3),
            completed(4, 100, 60),
        ];
        events.push(completed(5, 9_000, 600));
        events.push(events[3].clone());
        let charges = run(&mut ledger, &events);
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[0].fare.amount_minor, 1_000, "the Comfort minimum");
        assert_eq!(ledger.tally().duplicates, 2);
    }

    #[test]
    fn a_ride_on_the_payments_log_is_never_charged_again() {
        let mut ledger = Ledger::new(2_500);
        let mut first = Ledger::new(2_500);
        let events = [
            assigned(1, Product::Xl, 1_000),
            arrived(2),
            started(3),
            completed(4, 100, 60),
        ];
        let charged = run(&mut first, &events);
        ledger.charged(0, &charged[0]);
        assert!(run(&mut ledger, &events).is_empty());
    }

    #[test]
    fn replayed_records_rebuild_state_but_charge_nothing() {
        let mut ledger = Ledger::new(2_500);
        for e in [assigned(1, Product::Economy, 1_000), arrived(2), started(3)] {
            assert_eq!(ledger.apply(0, &e, Mode::Replay), Ok(None));
        }
        assert_eq!(run(&mut ledger, &[completed(4, 1_000, 120)]).len(), 1);
    }

    #[test]
    fn late_rider_cancellations_pay_a_fee_and_others_do_not() {
        let mut ledger = Ledger::new(2_500);
        let fee = run(
            &mut ledger,
            &[
                assigned(0, Product::Economy, 2_000),
                arrived(60_000),
                cancelled(70_000, CancelledBy::Rider),
            ],
        );
        assert_eq!(fee.len(), 1);
        assert_eq!(fee[0].kind, ChargeKind::CancellationFee);
        assert_eq!(fee[0].fare.amount_minor, 500, "fees are not surged");
        assert_eq!(
            fee[0].commission.amount_minor + fee[0].payout.amount_minor,
            500
        );
        assert_eq!(fee[0].driver_id.as_deref(), Some("driver-1"));

        let mut ledger = Ledger::new(2_500);
        let free = run(
            &mut ledger,
            &[
                assigned(0, Product::Economy, 1_000),
                cancelled(30_000, CancelledBy::Rider),
            ],
        );
        assert!(free.is_empty());
        let mut ledger = Ledger::new(2_500);
        let by_driver = run(
            &mut ledger,
            &[
                assigned(0, Product::Economy, 1_000),
                arrived(1),
                cancelled(600_000, CancelledBy::Driver),
            ],
        );
        assert!(by_driver.is_empty());
    }

    #[test]
    fn impossible_and_unknown_rides_are_errors_to_dead_letter() {
        let mut ledger = Ledger::new(2_500);
        let unknown = ledger
            .apply(0, &completed(4, 1, 1), Mode::Live)
            .unwrap_err();
        assert_eq!(unknown.reason(), "unknown_ride");
        ledger
            .apply(0, &assigned(1, Product::Economy, 1_000), Mode::Live)
            .unwrap();
        let skipped = ledger
            .apply(0, &completed(4, 1, 1), Mode::Live)
            .unwrap_err();
        assert_eq!(skipped.reason(), "impossible_transition");
    }

    #[test]
    fn revoked_and_old_rides_are_forgotten() {
        let mut ledger = Ledger::new(2_500);
        ledger
            .apply(3, &assigned(10, Product::Economy, 1_000), Mode::Live)
            .unwrap();
        ledger.forget_before(Millis(5));
        assert_eq!(ledger.len(), 1);
        ledger.revoke(&BTreeSet::from([3]));
        assert!(ledger.is_empty());
        ledger
            .apply(3, &assigned(10, Product::Economy, 1_000), Mode::Live)
            .unwrap();
        ledger.forget_before(Millis(11));
        assert!(ledger.is_empty());
    }

    proptest! {
        /// Whatever the duplicates and their order after the assignment, a ride is charged at
        /// most once, and commission plus payout is always the fare.
        #[test]
        fn at_most_one_charge_per_ride(
            picks in proptest::collection::vec(0usize..6, 0..30),
            bp in 0u32..=10_000,
            surge in 1_000i32..4_000,
        ) {
            let menu = [
                arrived(2), started(3), completed(4, 3_000, 500),
                cancelled(5, CancelledBy::Rider), cancelled(6, CancelledBy::Driver),
                completed(7, 100, 10),
            ];
            let mut ledger = Ledger::new(bp);
            let mut events = vec![assigned(1, Product::Economy, surge)];
            events.extend(picks.iter().map(|&i| menu[i].clone()));
            let charges = run(&mut ledger, &events);
            prop_assert!(charges.len() <= 1);
            for c in &charges {
                prop_assert_eq!(c.commission.amount_minor + c.payout.amount_minor, c.fare.amount_minor);
            }
        }
    }
}
