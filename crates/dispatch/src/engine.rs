//! The dispatch decisions for the regions one instance owns: pure state, no I/O.
//!
//! Inputs are the records of the co-partitioned dispatch log (requests, cancellations and
//! dispatch's own assignments) and driver supply (status, location and answers to offers),
//! plus the passing of time. Outputs are ride events and dispatch-log records to publish.
//!
//! - A request is offered to the nearest free driver; a decline or a lapse re-offers it to
//!   the next one. A driver who becomes free goes to the oldest waiting ride it can serve; a
//!   ride that found nobody looks again every [`RETRY_MS`].
//! - An offer lapses in the event time of its region's supply: once its deadline has passed
//!   and the supply partition that carries the answer has been read past that deadline.
//!   An answer given in time is then never missed because this instance lags behind, and a
//!   lagging instance does not lapse every offer and re-offer it, adding to its own lag.
//!   A partition gone silent lets offers lapse [`SILENT_SUPPLY_MS`] after their deadline.
//! - An accept of an offer that lapsed is still taken while the ride waits: the driver's app
//!   still holds the ride. It is taken only while well inside that hold ([`LATE_ACCEPT_MS`]).
//! - A driver is reserved from the offer until the end of the ride, so it is never offered
//!   two rides at once, and a ride holds at most one driver.
//! - A ride still unassigned after `max_wait` is cancelled with the reason `no_driver`.
//! - Assignments and system cancellations are also written to the dispatch log, so that a new
//!   owner of the region learns them by replaying it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bimride_domain::eta::{Learned, Leg};
use bimride_domain::matching::{Driver, Supply};
use bimride_domain::traffic::Traffic;
use bimride_domain::{City, Mode};
use bimride_events::{
    CancelledBy, DispatchEvent, DriverAssigned, DriverStatus, DriverStatusChanged, Millis,
    OfferAnswer, OfferAnswered, OfferSent, Product, RideCancelled, RideEvent, RideRequested,
    SupplyEvent, Vehicle,
};
use h3o::CellIndex;

/// The reason given when no driver could be found in time.
pub const NO_DRIVER: &str = "no_driver";

/// The oldest accept, by its answer time, that is taken for an offer that has lapsed: half of
/// the time a driver's app holds an accepted ride, so clocks and queues have a margin.
pub const LATE_ACCEPT_MS: i64 = bimride_domain::ACCEPT_HOLD_MS / 2;

/// How long after its deadline an offer lapses on the wall clock when its region's supply
/// partition has not been read that far: the partition is silent, or this instance is stuck.
pub const SILENT_SUPPLY_MS: i64 = 30_000;

/// How often a ride that found no free driver looks again. Drivers freed by a lapse, a
/// decline or the end of a ride are offered to the oldest ride they can serve at once.
pub const RETRY_MS: i64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a driver has to answer an offer.
    pub offer_timeout_ms: i64,
    /// How long a ride waits for a driver before it is cancelled with `no_driver`.
    pub max_wait_ms: i64,
}

/// What the engine asks the service to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Ride(RideEvent),
    Log(DispatchEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("ride {ride}: pickup cell {cell:?} is not an H3 cell")]
    BadCell { ride: String, cell: String },
    #[error("driver {driver}: {reason}")]
    BadPosition { driver: String, reason: String },
}

/// Counts of what happened, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decisions {
    pub offers: u64,
    pub declined: u64,
    pub expired: u64,
    pub assigned: u64,
    /// Assignments through an accept that landed after its offer lapsed.
    pub late_accepts: u64,
    pub no_driver: u64,
}

#[derive(Debug, Clone)]
struct Offer {
    offer_id: String,
    driver_id: String,
    expires_at: Millis,
    /// The pickup ETA given, corrected by what was learned, and from distance alone.
    eta_secs: i32,
    distance_eta_secs: i32,
}

#[derive(Debug, Clone)]
enum Phase {
    Waiting {
        offer: Option<Offer>,
        /// Offers that lapsed unanswered; an accept of one may still land.
        lapsed: Vec<Offer>,
        tried: BTreeSet<String>,
        attempt: i32,
        /// When to look for a driver again after finding none.
        retry_at: Millis,
    },
    Assigned {
        driver_id: String,
    },
    Closed,
}

#[derive(Debug, Clone)]
struct Ride {
    request: RideRequested,
    cell: CellIndex,
    partition: i32,
    phase: Phase,
}

#[derive(Debug, Clone)]
struct DriverInfo {
    vehicle: Vehicle,
    product: Product,
    status: DriverStatus,
    partitions: BTreeSet<i32>,
    /// Event time of the last status saying the driver is free of any ride.
    free_since: Millis,
}

#[derive(Debug)]
pub struct Engine {
    city: City,
    timing: Timing,
    supply: Supply,
    drivers: HashMap<String, DriverInfo>,
    rides: HashMap<String, Ride>,
    /// Rides waiting for a driver, oldest first.
    waiting: BTreeSet<(Millis, String)>,
    /// Driver of each assignment in force, with its event time.
    assignments: HashMap<String, (String, Millis)>,
    /// Newest event time read from each supply partition.
    watermarks: HashMap<i32, Millis>,
    /// Corrections of distance-only pickup ETAs, learned from observations.
    learned: Arc<Learned>,
    /// Drivers freed since the last tick.
    freed: BTreeSet<String>,
    tally: Decisions,
}

pub fn product_code(p: Product) -> u8 {
    match p {
        Product::Economy => 0,
        Product::Comfort => 1,
        Product::Xl => 2,
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Engine {
    pub fn new(city: City, timing: Timing) -> Self {
        Self {
            city,
            timing,
            supply: Supply::default(),
            drivers: HashMap::new(),
            rides: HashMap::new(),
            waiting: BTreeSet::new(),
            assignments: HashMap::new(),
            watermarks: HashMap::new(),
            freed: BTreeSet::new(),
            tally: Decisions::default(),
            learned: Arc::default(),
        }
    }

    /// Corrects the pickup ETAs it gives by what `learned` holds.
    pub fn learning_from(mut self, learned: Arc<Learned>) -> Self {
        self.learned = learned;
        self
    }

    pub fn tally(&self) -> Decisions {
        self.tally
    }

    /// When a known ride was requested, in event time.
    pub fn requested_at(&self, ride_id: &str) -> Option<Millis> {
        self.rides.get(ride_id).map(|r| r.request.occurred_at)
    }

    /// Rides waiting for a driver.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn drivers(&self) -> usize {
        self.drivers.len()
    }

    /// How long past its deadline the most overdue offer still out is: kept out because its
    /// supply partition has not been read that far. Zero when no offer is overdue.
    pub fn overdue_ms(&self, now: Millis) -> i64 {
        self.waiting
            .iter()
            .filter_map(|(_, id)| match &self.rides.get(id)?.phase {
                Phase::Waiting { offer: Some(o), .. } => Some(now.0 - o.expires_at.0),
                _ => None,
            })
            .max()
            .unwrap_or(0)
            .max(0)
    }

    /// Applies one dispatch-log record from `partition`.
    pub fn on_dispatch(
        &mut self,
        partition: i32,
        event: DispatchEvent,
        now: Millis,
        mode: Mode,
    ) -> Result<Vec<Output>, EngineError> {
        match event {
            DispatchEvent::Requested(r) => self.on_request(partition, r, now, mode),
            DispatchEvent::Assigned(a) => {
                self.on_assigned_marker(partition, a);
                Ok(Vec::new())
            }
            DispatchEvent::Cancelled(c) => Ok(self.on_cancel(c, now, mode)),
        }
    }

    /// Applies one driver-supply record from `partition`.
    pub fn on_supply(
        &mut self,
        partition: i32,
        event: SupplyEvent,
        now: Millis,
        mode: Mode,
    ) -> Result<Vec<Output>, EngineError> {
        let at = match &event {
            SupplyEvent::Status(s) => s.occurred_at,
            SupplyEvent::Location(l) => l.occurred_at,
            SupplyEvent::Answer(a) => a.occurred_at,
        };
        let mark = self.watermarks.entry(partition).or_insert(at);
        *mark = (*mark).max(at);
        match event {
            SupplyEvent::Status(s) => self.on_status(partition, s),
            SupplyEvent::Location(l) => {
                if let Some(info) = self.drivers.get(&l.driver_id) {
                    let available = info.status == DriverStatus::Available;
                    let product = product_code(info.product);
                    let cell = self.locate(&l.driver_id, l.position.lat, l.position.lng)?;
                    self.put_driver(
                        &l.driver_id,
                        Driver {
                            position: (l.position.lat, l.position.lng),
                            cell,
                            product,
                            available,
                        },
                    );
                }
                Ok(Vec::new())
            }
            // Answers are decisions in flight: a new owner re-offers instead of replaying them.
            SupplyEvent::Answer(a) if mode == Mode::Live => Ok(self.on_answer(a, now)),
            SupplyEvent::Answer(_) => Ok(Vec::new()),
        }
    }

    /// Records a driver's position, keeping it reserved while an assignment is in force.
    fn put_driver(&mut self, id: &str, driver: Driver) {
        self.supply.upsert(id, driver);
        if let Some((ride, _)) = self.assignments.get(id) {
            let _ = self.supply.reserve(ride, id);
        }
    }

    fn locate(&self, driver: &str, lat: f64, lng: f64) -> Result<CellIndex, EngineError> {
        self.city
            .locate(lat, lng)
            .map(|z| z.cell)
            .map_err(|e| EngineError::BadPosition {
                driver: driver.to_owned(),
                reason: e.to_string(),
            })
    }

    fn on_request(
        &mut self,
        partition: i32,
        r: RideRequested,
        now: Millis,
        mode: Mode,
    ) -> Result<Vec<Output>, EngineError> {
        if self.rides.contains_key(&r.ride_id) {
            return Ok(Vec::new());
        }
        let cell: CellIndex = r.pickup_cell.parse().map_err(|_| EngineError::BadCell {
            ride: r.ride_id.clone(),
            cell: r.pickup_cell.clone(),
        })?;
        self.waiting.insert((r.occurred_at, r.ride_id.clone()));
        let ride_id = r.ride_id.clone();
        self.rides.insert(
            ride_id.clone(),
            Ride {
                request: r,
                cell,
                partition,
                phase: Phase::Waiting {
                    offer: None,
                    lapsed: Vec::new(),
                    tried: BTreeSet::new(),
                    attempt: 0,
                    retry_at: Millis(i64::MIN),
                },
            },
        );
        Ok(match mode {
            Mode::Live => self.try_offer(&ride_id, now).into_iter().collect(),
            Mode::Replay => Vec::new(),
        })
    }

    fn on_assigned_marker(&mut self, partition: i32, a: DriverAssigned) {
        let Some(ride) = self.rides.get_mut(&a.ride_id) else {
            // The request is older than the replay window: only the driver's state matters.
            self.hold_driver(&a.driver_id, &a.ride_id, a.occurred_at);
            return;
        };
        ride.partition = partition;
        if let Phase::Assigned { driver_id } = &ride.phase
            && *driver_id == a.driver_id
        {
            return;
        }
        let key = (ride.request.occurred_at, a.ride_id.clone());
        ride.phase = Phase::Assigned {
            driver_id: a.driver_id.clone(),
        };
        self.waiting.remove(&key);
        self.supply.release(&a.ride_id);
        self.hold_driver(&a.driver_id, &a.ride_id, a.occurred_at);
    }

    /// Keeps `driver` reserved for `ride` until a later status says the driver is free.
    fn hold_driver(&mut self, driver: &str, ride: &str, at: Millis) {
        let free_after = self.drivers.get(driver).is_some_and(|d| d.free_since > at);
        if free_after {
            return;
        }
        self.assignments
            .insert(driver.to_owned(), (ride.to_owned(), at));
        // Reserving can fail when the driver is unknown here (supply not replayed yet); the
        // assignment map still keeps the driver out of matching once it appears.
        let _ = self.supply.reserve(ride, driver);
    }

    fn on_cancel(&mut self, c: RideCancelled, now: Millis, mode: Mode) -> Vec<Output> {
        let ride_id = c.ride_id.clone();
        let phase = self.rides.get(&ride_id).map(|r| r.phase.clone());
        let driver = match &phase {
            Some(Phase::Assigned { driver_id }) => Some(driver_id.clone()),
            _ => None,
        };
        self.close(&ride_id);
        if let Some(d) = &driver {
            self.assignments.remove(d);
        }
        // Dispatch's own cancellations are markers; a rider's request is acted on here.
        if mode == Mode::Replay
            || c.by != CancelledBy::Rider
            || matches!(phase, Some(Phase::Closed))
        {
            return Vec::new();
        }
        vec![Output::Ride(RideEvent::RideCancelled(RideCancelled {
            event_id: new_id(),
            occurred_at: now,
            driver_id: driver.or(c.driver_id),
            region: String::new(),
            ..c
        }))]
    }

    /// Takes a ride out of matching and frees whatever it held.
    fn close(&mut self, ride_id: &str) {
        if let Some(ride) = self.rides.get_mut(ride_id) {
            self.waiting
                .remove(&(ride.request.occurred_at, ride_id.to_owned()));
            ride.phase = Phase::Closed;
        }
        self.release(ride_id);
    }

    /// Frees the driver reserved for `ride_id`, to be offered to the oldest ride it can serve.
    fn release(&mut self, ride_id: &str) -> Option<String> {
        let driver = self.supply.release(ride_id)?;
        self.freed.insert(driver.clone());
        Some(driver)
    }

    fn on_status(
        &mut self,
        partition: i32,
        s: DriverStatusChanged,
    ) -> Result<Vec<Output>, EngineError> {
        let free = matches!(s.status, DriverStatus::Available | DriverStatus::Offline);
        if s.status == DriverStatus::Offline {
            self.supply.remove(&s.driver_id);
        } else {
            let cell = self.locate(&s.driver_id, s.position.lat, s.position.lng)?;
            self.put_driver(
                &s.driver_id,
                Driver {
                    position: (s.position.lat, s.position.lng),
                    cell,
                    product: product_code(s.product),
                    available: s.status == DriverStatus::Available,
                },
            );
        }
        let was_available = self
            .drivers
            .get(&s.driver_id)
            .is_some_and(|d| d.status == DriverStatus::Available);
        if s.status == DriverStatus::Available && !was_available {
            self.freed.insert(s.driver_id.clone());
        }
        let info = self
            .drivers
            .entry(s.driver_id.clone())
            .or_insert_with(|| DriverInfo {
                vehicle: s.vehicle.clone(),
                product: s.product,
                status: s.status,
                partitions: BTreeSet::new(),
                free_since: Millis(i64::MIN),
            });
        info.vehicle = s.vehicle;
        info.product = s.product;
        info.status = s.status;
        info.partitions.insert(partition);
        if free {
            info.free_since = info.free_since.max(s.occurred_at);
            // A free status after an assignment means that ride is over for the driver.
            if let Some((ride, at)) = self.assignments.get(&s.driver_id).cloned()
                && at < s.occurred_at
            {
                self.assignments.remove(&s.driver_id);
                if self.supply.ride_of(&s.driver_id) == Some(ride.as_str()) {
                    self.release(&ride);
                }
            }
        }
        Ok(Vec::new())
    }

    fn on_answer(&mut self, a: OfferAnswered, now: Millis) -> Vec<Output> {
        let Some(ride) = self.rides.get(&a.ride_id) else {
            return Vec::new();
        };
        let Phase::Waiting { offer, .. } = &ride.phase else {
            return Vec::new();
        };
        let current = offer.as_ref().is_some_and(|o| o.offer_id == a.offer_id);
        match a.answer {
            OfferAnswer::Accepted if current => self.assign(&a.ride_id, &a.driver_id, now),
            OfferAnswer::Accepted => self.take_late(&a, now),
            OfferAnswer::Declined | OfferAnswer::Expired if current => {
                self.tally.declined += 1;
                let mut out = self.lapse(&a.ride_id, a.answer, now);
                out.extend(self.try_offer(&a.ride_id, now));
                out
            }
            _ => Vec::new(),
        }
    }

    /// Takes an accept of an offer of this instance that lapsed on the clock. An accept of an
    /// offer made by the region's previous owner is not taken: its deadline is unknown here,
    /// and the ride is offered again instead.
    fn take_late(&mut self, a: &OfferAnswered, now: Millis) -> Vec<Output> {
        if now.0 - a.occurred_at.0 > LATE_ACCEPT_MS
            || self.assignments.contains_key(&a.driver_id)
            || !self.drivers.contains_key(&a.driver_id)
        {
            return Vec::new();
        }
        let ours = matches!(
            self.rides.get(&a.ride_id).map(|r| &r.phase),
            Some(Phase::Waiting { lapsed, .. })
                if lapsed.iter().any(|o| o.offer_id == a.offer_id && o.driver_id == a.driver_id)
        );
        if !ours {
            return Vec::new();
        }
        let mut out = Vec::new();
        // Since the lapse the driver may have been offered another ride, which its app, holding
        // this one, declines: that offer ends now and its ride goes to someone else.
        if let Some(other) = self.supply.ride_of(&a.driver_id).map(str::to_owned) {
            let offered = matches!(
                self.rides.get(&other).map(|r| &r.phase),
                Some(Phase::Waiting { offer: Some(o), .. }) if o.driver_id == a.driver_id
            );
            if !offered {
                return out;
            }
            out.extend(self.lapse(&other, OfferAnswer::Declined, now));
            out.extend(self.try_offer(&other, now));
        }
        // Frees the driver of the offer out now, if any; the assignment tells its app. A driver
        // who cannot be reserved (gone offline) leaves that offer as it was.
        let current = self.supply.release(&a.ride_id);
        if self.supply.reserve(&a.ride_id, &a.driver_id).is_err() {
            if let Some(d) = current {
                let _ = self.supply.reserve(&a.ride_id, &d);
            }
            return out;
        }
        self.freed.extend(current);
        self.tally.late_accepts += 1;
        out.extend(self.assign(&a.ride_id, &a.driver_id, now));
        out
    }

    fn assign(&mut self, ride_id: &str, driver_id: &str, now: Millis) -> Vec<Output> {
        let Some(ride) = self.rides.get_mut(ride_id) else {
            return Vec::new();
        };
        let (eta, distance_eta) = match &ride.phase {
            Phase::Waiting { offer, lapsed, .. } => offer
                .iter()
                .chain(lapsed)
                .find(|o| o.driver_id == driver_id)
                .map_or((0, 0), |o| (o.eta_secs, o.distance_eta_secs)),
            _ => (0, 0),
        };
        let Some(info) = self.drivers.get(driver_id) else {
            self.supply.release(ride_id);
            return Vec::new();
        };
        ride.phase = Phase::Assigned {
            driver_id: driver_id.to_owned(),
        };
        self.waiting
            .remove(&(ride.request.occurred_at, ride_id.to_owned()));
        self.assignments
            .insert(driver_id.to_owned(), (ride_id.to_owned(), now));
        self.tally.assigned += 1;
        let assigned = DriverAssigned {
            event_id: new_id(),
            occurred_at: now,
            ride_id: ride_id.to_owned(),
            rider_id: ride.request.rider_id.clone(),
            driver_id: driver_id.to_owned(),
            vehicle: info.vehicle.clone(),
            pickup_eta_secs: eta,
            region: ride.request.region.clone(),
            product: Some(ride.request.product),
            surge_milli: ride.request.surge_milli,
            distance_eta_secs: Some(distance_eta),
            quoted_duration_secs: ride.request.quoted_duration_secs,
        };
        vec![
            Output::Log(DispatchEvent::Assigned(assigned.clone())),
            Output::Ride(RideEvent::DriverAssigned(assigned)),
        ]
    }

    /// Ends the current offer of a waiting ride and frees its driver for others.
    fn lapse(&mut self, ride_id: &str, answer: OfferAnswer, now: Millis) -> Vec<Output> {
        let Some(ride) = self.rides.get_mut(ride_id) else {
            return Vec::new();
        };
        let Phase::Waiting {
            offer,
            lapsed,
            tried,
            ..
        } = &mut ride.phase
        else {
            return Vec::new();
        };
        let Some(o) = offer.take() else {
            return Vec::new();
        };
        tried.insert(o.driver_id.clone());
        if answer == OfferAnswer::Expired {
            lapsed.push(o.clone());
        }
        let region = ride.request.region.clone();
        self.release(ride_id);
        vec![Output::Ride(RideEvent::OfferAnswered(OfferAnswered {
            event_id: new_id(),
            occurred_at: now,
            ride_id: ride_id.to_owned(),
            offer_id: o.offer_id,
            driver_id: o.driver_id,
            answer,
            region,
        }))]
    }

    /// Offers a waiting ride with no offer out to the best driver not yet tried.
    fn try_offer(&mut self, ride_id: &str, now: Millis) -> Option<Output> {
        let ride = self.rides.get(ride_id)?;
        let Phase::Waiting {
            offer: None, tried, ..
        } = &ride.phase
        else {
            return None;
        };
        let r = &ride.request;
        let found = self
            .supply
            .best(
                (r.pickup.lat, r.pickup.lng),
                ride.cell,
                product_code(r.product),
                self.city.match_rings,
                tried,
            )
            .filter(|m| self.supply.reserve(ride_id, &m.driver_id).is_ok());
        let ride = self.rides.get_mut(ride_id)?;
        let Phase::Waiting {
            offer,
            attempt,
            retry_at,
            ..
        } = &mut ride.phase
        else {
            return None;
        };
        let Some(found) = found else {
            *retry_at = Millis(now.0 + RETRY_MS);
            return None;
        };
        *attempt += 1;
        let eta = self.learned.corrected_secs(
            Leg::Pickup,
            i64::from(found.pickup_eta_secs),
            ride.cell,
            Traffic::hour_utc(now.0),
        );
        let eta = i32::try_from(eta).unwrap_or(i32::MAX);
        let sent = OfferSent {
            event_id: new_id(),
            occurred_at: now,
            ride_id: ride_id.to_owned(),
            offer_id: new_id(),
            driver_id: found.driver_id.clone(),
            attempt: *attempt,
            pickup_eta_secs: eta,
            expires_at: Millis(now.0 + self.timing.offer_timeout_ms),
            region: ride.request.region.clone(),
            pickup: Some(ride.request.pickup),
            dropoff: Some(ride.request.dropoff),
        };
        *offer = Some(Offer {
            offer_id: sent.offer_id.clone(),
            driver_id: found.driver_id,
            expires_at: sent.expires_at,
            eta_secs: eta,
            distance_eta_secs: found.pickup_eta_secs,
        });
        self.tally.offers += 1;
        Some(Output::Ride(RideEvent::OfferSent(sent)))
    }

    /// Lapses offers past their deadline, offers freed drivers to the oldest rides they can
    /// serve, gives up on rides that waited too long, and looks again for rides that found
    /// nobody. Oldest rides go first.
    pub fn tick(&mut self, now: Millis) -> Vec<Output> {
        let mut out = Vec::new();
        let due: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, id)| {
                self.rides.get(id).is_some_and(|r| match &r.phase {
                    Phase::Waiting { offer: Some(o), .. } => self.lapses(o, r.partition, now),
                    _ => false,
                })
            })
            .map(|(_, id)| id.clone())
            .collect();
        for ride_id in due {
            self.tally.expired += 1;
            out.extend(self.lapse(&ride_id, OfferAnswer::Expired, now));
        }
        for driver in std::mem::take(&mut self.freed) {
            if let Some(ride_id) = self.oldest_ride_for(&driver, now) {
                out.extend(self.try_offer(&ride_id, now));
            }
        }
        let idle: Vec<(Millis, String)> = self
            .waiting
            .iter()
            .filter(|(_, id)| {
                self.rides.get(id).is_some_and(|r| {
                    matches!(r.phase, Phase::Waiting { offer: None, retry_at, .. } if retry_at <= now)
                })
            })
            .cloned()
            .collect();
        for (requested_at, ride_id) in idle {
            if now.0 - requested_at.0 >= self.timing.max_wait_ms {
                out.extend(self.give_up(&ride_id, now));
            } else {
                out.extend(self.try_offer(&ride_id, now));
            }
        }
        out
    }

    /// Whether an offer has lapsed: its deadline has passed, and the supply partition that
    /// would carry its answer has been read past it, or has been silent for too long.
    fn lapses(&self, offer: &Offer, partition: i32, now: Millis) -> bool {
        let read_past = self
            .watermarks
            .get(&partition)
            .is_some_and(|w| *w >= offer.expires_at);
        offer.expires_at <= now && (read_past || now.0 - offer.expires_at.0 >= SILENT_SUPPLY_MS)
    }

    /// The oldest ride within its wait, with no offer out, that a free `driver` can serve.
    fn oldest_ride_for(&self, driver: &str, now: Millis) -> Option<String> {
        let d = self.supply.driver(driver)?;
        if !d.available || self.supply.ride_of(driver).is_some() {
            return None;
        }
        let rings = i32::try_from(self.city.match_rings).unwrap_or(i32::MAX);
        self.waiting
            .iter()
            .take_while(|(at, _)| now.0 - at.0 < self.timing.max_wait_ms)
            .find(|(_, id)| {
                self.rides.get(id).is_some_and(|r| {
                    matches!(&r.phase, Phase::Waiting { offer: None, tried, .. } if !tried.contains(driver))
                        && product_code(r.request.product) == d.product
                        && r.cell.grid_distance(d.cell).is_ok_and(|k| k <= rings)
                })
            })
            .map(|(_, id)| id.clone())
    }

    fn give_up(&mut self, ride_id: &str, now: Millis) -> Vec<Output> {
        let Some(ride) = self.rides.get(ride_id) else {
            return Vec::new();
        };
        let cancelled = RideCancelled {
            event_id: new_id(),
            occurred_at: now,
            ride_id: ride_id.to_owned(),
            rider_id: ride.request.rider_id.clone(),
            driver_id: None,
            by: CancelledBy::System,
            reason: NO_DRIVER.into(),
            region: ride.request.region.clone(),
        };
        self.close(ride_id);
        self.tally.no_driver += 1;
        vec![
            Output::Log(DispatchEvent::Cancelled(cancelled.clone())),
            Output::Ride(RideEvent::RideCancelled(RideCancelled {
                region: String::new(),
                ..cancelled
            })),
        ]
    }

    /// Forgets the rides and drivers of partitions this instance no longer owns. Their new
    /// owner rebuilds them from the log.
    pub fn revoke(&mut self, partitions: &BTreeSet<i32>) {
        self.watermarks.retain(|p, _| !partitions.contains(p));
        let lost: Vec<String> = self
            .rides
            .iter()
            .filter(|(_, r)| partitions.contains(&r.partition))
            .map(|(id, _)| id.clone())
            .collect();
        for ride_id in lost {
            self.close(&ride_id);
            if let Some(ride) = self.rides.remove(&ride_id)
                && let Phase::Assigned { driver_id } = ride.phase
            {
                self.assignments.remove(&driver_id);
            }
        }
        let gone: Vec<String> = self
            .drivers
            .iter_mut()
            .filter_map(|(id, d)| {
                for p in partitions {
                    d.partitions.remove(p);
                }
                d.partitions.is_empty().then(|| id.clone())
            })
            .collect();
        for id in gone {
            self.drivers.remove(&id);
            self.supply.remove(&id);
            if let Some((ride, _)) = self.assignments.remove(&id) {
                self.supply.release(&ride);
            }
        }
    }

    /// Forgets settled rides requested before `before`; late records about them are ignored.
    pub fn forget_settled(&mut self, before: Millis) {
        self.rides.retain(|_, r| {
            r.request.occurred_at >= before || matches!(r.phase, Phase::Waiting { .. })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bimride_events::{GeoPoint, Money};
    use proptest::prelude::*;

    const TIMING: Timing = Timing {
        offer_timeout_ms: 1_000,
        max_wait_ms: 5_000,
    };

    fn engine() -> Engine {
        Engine::new(City::amsterdam(), TIMING)
    }

    fn request(n: u32, at: i64) -> DispatchEvent {
        let city = City::amsterdam();
        let (lat, lng) = (city.centre_lat, city.centre_lng);
        let zone = city.locate(lat, lng).expect("inside");
        DispatchEvent::Requested(RideRequested {
            event_id: format!("e{n}"),
            occurred_at: Millis(at),
            ride_id: format!("r{n}"),
            rider_id: format!("rider{n}"),
            product: Product::Economy,
            pickup: GeoPoint { lat, lng },
            dropoff: GeoPoint {
                lat: 52.36,
                lng: 4.88,
            },
            region: zone.region.to_string(),
            pickup_cell: zone.cell.to_string(),
            quote: Money {
                amount_minor: 1_000,
                currency: "EUR".into(),
            },
            surge_milli: 1_000,
            idempotency_key: None,
            quoted_duration_secs: None,
        })
    }

    fn status(driver: u32, status: DriverStatus, at: i64) -> SupplyEvent {
        SupplyEvent::Status(DriverStatusChanged {
            event_id: format!("s{driver}-{at}"),
            occurred_at: Millis(at),
            driver_id: format!("d{driver}"),
            status,
            // Driver n waits n * 100 m north of the centre: lower ids are nearer.
            position: GeoPoint {
                lat: 52.3676 + f64::from(driver) * 0.0009,
                lng: 4.9041,
            },
            region: String::new(),
            product: Product::Economy,
            vehicle: Vehicle {
                plate: "P".into(),
                model: "M".into(),
                colour: "C".into(),
            },
        })
    }

    fn answer(o: &OfferSent, answer: OfferAnswer) -> SupplyEvent {
        answered_at(o, answer, o.occurred_at.0)
    }

    fn answered_at(o: &OfferSent, answer: OfferAnswer, at: i64) -> SupplyEvent {
        SupplyEvent::Answer(OfferAnswered {
            event_id: "a".into(),
            occurred_at: Millis(at),
            ride_id: o.ride_id.clone(),
            offer_id: o.offer_id.clone(),
            driver_id: o.driver_id.clone(),
            answer,
            region: o.region.clone(),
        })
    }

    /// A record of another driver's app, read at `at`: the supply is read up to `at`.
    fn supply_read(e: &mut Engine, at: i64) {
        let location = SupplyEvent::Location(bimride_events::DriverLocationUpdated {
            event_id: format!("l{at}"),
            occurred_at: Millis(at),
            driver_id: "elsewhere".into(),
            position: GeoPoint {
                lat: 52.3676,
                lng: 4.9041,
            },
            region: String::new(),
            cell: String::new(),
        });
        live(e, location, at);
    }

    fn offers(out: &[Output]) -> Vec<OfferSent> {
        out.iter()
            .filter_map(|o| match o {
                Output::Ride(RideEvent::OfferSent(s)) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// Ride `n`, requested and read live at `at`.
    fn book(e: &mut Engine, n: u32, at: i64) -> Vec<Output> {
        e.on_dispatch(0, request(n, at), Millis(at), Mode::Live)
            .expect("ok")
    }

    fn live(e: &mut Engine, event: SupplyEvent, at: i64) -> Vec<Output> {
        e.on_supply(0, event, Millis(at), Mode::Live)
            .expect("applies")
    }

    #[test]
    fn the_nearest_driver_is_offered_and_an_accept_assigns_once() {
        let mut e = engine();
        live(&mut e, status(1, DriverStatus::Available, 0), 0);
        live(&mut e, status(2, DriverStatus::Available, 0), 0);
        let out = book(&mut e, 1, 10);
        let offer = offers(&out).pop().expect("an offer");
        assert_eq!(offer.driver_id, "d1");
        // The reserved driver is not offered a second ride.
        let out = book(&mut e, 2, 11);
        assert_eq!(offers(&out).pop().expect("offer").driver_id, "d2");
        let out = live(&mut e, answer(&offer, OfferAnswer::Accepted), 20);
        assert!(
            matches!(&out[..], [Output::Log(DispatchEvent::Assigned(a)), Output::Ride(RideEvent::DriverAssigned(b))] if a == b && a.driver_id == "d1")
        );
        // A duplicate accept changes nothing.
        assert!(live(&mut e, answer(&offer, OfferAnswer::Accepted), 21).is_empty());
        assert_eq!(e.tally().assigned, 1);
    }

    #[test]
    fn a_decline_or_a_lapse_moves_on_and_no_driver_ends_the_wait() {
        let mut e = engine();
        live(&mut e, status(1, DriverStatus::Available, 0), 0);
        live(&mut e, status(2, DriverStatus::Available, 0), 0);
        let out = book(&mut e, 1, 0);
        let first = offers(&out).pop().expect("offer");
        let out = live(&mut e, answer(&first, OfferAnswer::Declined), 100);
        let second = offers(&out).pop().expect("re-offer");
        assert_eq!(second.driver_id, "d2");
        assert_eq!(second.attempt, 2);
        // Nobody answers: the offer lapses, and with everyone tried the ride waits, then ends.
        supply_read(&mut e, 2_000);
        let out = e.tick(Millis(2_000));
        assert!(out.iter().any(|o| matches!(o, Output::Ride(RideEvent::OfferAnswered(a)) if a.answer == OfferAnswer::Expired)));
        assert!(offers(&out).is_empty());
        // An accept older than the app's hold allows: the driver may be on another ride.
        let stale = answered_at(&second, OfferAnswer::Accepted, 2_100 - LATE_ACCEPT_MS - 1);
        assert!(
            live(&mut e, stale, 2_100).is_empty(),
            "a stale accept of a lapsed offer is not taken"
        );
        assert!(e.tick(Millis(4_000)).is_empty());
        let out = e.tick(Millis(5_000));
        assert!(
            matches!(&out[..], [Output::Log(DispatchEvent::Cancelled(c)), Output::Ride(RideEvent::RideCancelled(d))] if c.reason == NO_DRIVER && d.reason == NO_DRIVER && c.by == CancelledBy::System)
        );
        assert!(e.tick(Millis(6_000)).is_empty());
        assert_eq!(e.tally().no_driver, 1);
    }

    #[test]
    fn an_accept_landing_after_its_offer_lapsed_is_taken_while_the_ride_waits() {
        let mut e = engine();
        for d in 1..=3 {
            live(&mut e, status(d, DriverStatus::Available, 0), 0);
        }
        let out = book(&mut e, 1, 0);
        let first = offers(&out).pop().expect("offer");
        assert_eq!(first.driver_id, "d1");
        // Another app's record, read before d1's accept, takes the supply past the deadline:
        // the offer lapses, and the ride goes to d2.
        supply_read(&mut e, 1_400);
        let second = offers(&e.tick(Millis(1_500))).pop().expect("re-offer");
        assert_eq!(second.driver_id, "d2");
        // Another ride arrives and is offered to d1, whose app still holds the first ride.
        let out = book(&mut e, 2, 1_600);
        let other = offers(&out).pop().expect("offer");
        assert_eq!(other.driver_id, "d1");
        // d1's accept, given in time, lands now: d1 gets the first ride, with the first ETA.
        let out = live(
            &mut e,
            answered_at(&first, OfferAnswer::Accepted, 200),
            1_700,
        );
        let assigned: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::Ride(RideEvent::DriverAssigned(a)) => Some(a),
                _ => None,
            })
            .collect();
        assert!(
            matches!(&assigned[..], [a] if a.ride_id == "r1" && a.driver_id == "d1" && a.pickup_eta_secs == first.pickup_eta_secs),
            "{out:?}"
        );
        // d1's offer of the second ride ends and that ride goes to d3, the one driver free.
        assert!(out.iter().any(|o| matches!(o, Output::Ride(RideEvent::OfferAnswered(a)) if a.offer_id == other.offer_id && a.answer == OfferAnswer::Declined)));
        assert_eq!(offers(&out).pop().expect("re-offer").driver_id, "d3");
        assert_eq!(e.tally().late_accepts, 1);
        // d2's accept of the offer out when d1's landed changes nothing.
        assert!(live(&mut e, answer(&second, OfferAnswer::Accepted), 1_800).is_empty());
        assert_eq!(e.tally().assigned, 1);
    }

    #[test]
    fn an_offer_lapses_once_the_supply_is_read_past_its_deadline() {
        let mut e = engine();
        live(&mut e, status(1, DriverStatus::Available, 0), 0);
        live(&mut e, status(2, DriverStatus::Available, 0), 0);
        let out = book(&mut e, 1, 0);
        let first = offers(&out).pop().expect("offer");
        // This instance lags: its clock is past the deadline, its reading of the supply is not.
        supply_read(&mut e, 900);
        assert!(e.tick(Millis(5_000)).is_empty(), "nothing lapses");
        // d1's accept, given in time, is read late and taken as any accept in time.
        let out = live(
            &mut e,
            answered_at(&first, OfferAnswer::Accepted, 500),
            5_100,
        );
        assert!(out.iter().any(
            |o| matches!(o, Output::Ride(RideEvent::DriverAssigned(a)) if a.driver_id == "d1")
        ));
        assert_eq!(e.tally().late_accepts, 0);
        // Read past the deadline, an unanswered offer lapses, and the ride moves on.
        let out = book(&mut e, 2, 5_200);
        let second = offers(&out).pop().expect("offer");
        assert_eq!(second.driver_id, "d2");
        supply_read(&mut e, 6_100);
        assert!(
            e.tick(Millis(6_300)).is_empty(),
            "not read past the deadline yet"
        );
        supply_read(&mut e, 6_200);
        let out = e.tick(Millis(6_300));
        assert!(out.iter().any(|o| matches!(o, Output::Ride(RideEvent::OfferAnswered(a)) if a.offer_id == second.offer_id && a.answer == OfferAnswer::Expired)));
    }

    #[test]
    fn an_offer_lapses_on_the_clock_when_its_supply_falls_silent() {
        let mut e = engine();
        live(&mut e, status(1, DriverStatus::Available, 0), 0);
        let out = book(&mut e, 1, 0);
        let offer = offers(&out).pop().expect("offer");
        let deadline = offer.expires_at.0;
        assert!(e.tick(Millis(deadline + SILENT_SUPPLY_MS - 1)).is_empty());
        assert_eq!(
            e.overdue_ms(Millis(deadline + SILENT_SUPPLY_MS - 1)),
            SILENT_SUPPLY_MS - 1
        );
        let out = e.tick(Millis(deadline + SILENT_SUPPLY_MS));
        assert!(out.iter().any(|o| matches!(o, Output::Ride(RideEvent::OfferAnswered(a)) if a.answer == OfferAnswer::Expired)));
        assert_eq!(e.overdue_ms(Millis(deadline + SILENT_SUPPLY_MS)), 0);
    }

    #[test]
    fn a_freed_driver_goes_to_the_oldest_ride_it_can_serve_at_once() {
        let mut e = engine();
        live(&mut e, status(1, DriverStatus::Available, 0), 0);
        let out = book(&mut e, 1, 0);
        let first = offers(&out).pop().expect("offer");
        // Two more rides find nobody, and would look again only after RETRY_MS.
        for (n, at) in [(2, 10), (3, 20)] {
            let out = book(&mut e, n, at);
            assert!(offers(&out).is_empty());
        }
        assert!(e.tick(Millis(50)).is_empty());
        // d1 declines r1: it is freed, and offered to r2, the oldest ride it has not declined.
        assert!(offers(&live(&mut e, answer(&first, OfferAnswer::Declined), 100)).is_empty());
        let out = e.tick(Millis(150));
        const { assert!(150 < RETRY_MS) };
        assert!(matches!(&offers(&out)[..], [o] if o.ride_id == "r2" && o.driver_id == "d1"));
    }

    #[test]
    fn a_riders_cancellation_is_decided_once() {
        let mut e = engine();
        e.on_dispatch(0, request(1, 0), Millis(0), Mode::Live)
            .expect("ok");
        let cancel = |by| {
            DispatchEvent::Cancelled(RideCancelled {
                event_id: "c".into(),
                occurred_at: Millis(5),
                ride_id: "r1".into(),
                rider_id: "rider1".into(),
                driver_id: None,
                by,
                reason: "rider_request".into(),
                region: "x".into(),
            })
        };
        let out = e
            .on_dispatch(0, cancel(CancelledBy::Rider), Millis(5), Mode::Live)
            .expect("ok");
        assert!(
            matches!(&out[..], [Output::Ride(RideEvent::RideCancelled(c))] if c.by == CancelledBy::Rider)
        );
        assert!(
            e.on_dispatch(0, cancel(CancelledBy::Rider), Millis(6), Mode::Live)
                .expect("ok")
                .is_empty()
        );
        // A driver arriving later does not revive it.
        assert!(live(&mut e, status(1, DriverStatus::Available, 7), 7).is_empty());
        assert!(e.tick(Millis(8)).is_empty());
    }

    #[test]
    fn a_replayed_assignment_keeps_the_ride_and_its_driver_taken() {
        let mut e = engine();
        e.on_supply(
            0,
            status(1, DriverStatus::Available, 0),
            Millis(0),
            Mode::Replay,
        )
        .expect("ok");
        e.on_dispatch(0, request(1, 1), Millis(1), Mode::Replay)
            .expect("ok");
        let assigned = DriverAssigned {
            event_id: "x".into(),
            occurred_at: Millis(2),
            ride_id: "r1".into(),
            rider_id: "rider1".into(),
            driver_id: "d1".into(),
            vehicle: Vehicle {
                plate: "P".into(),
                model: "M".into(),
                colour: "C".into(),
            },
            pickup_eta_secs: 1,
            region: String::new(),
            product: Some(Product::Economy),
            surge_milli: 1_000,
            distance_eta_secs: None,
            quoted_duration_secs: None,
        };
        e.on_dispatch(
            0,
            DispatchEvent::Assigned(assigned),
            Millis(3),
            Mode::Replay,
        )
        .expect("ok");
        // Live again: the ride is settled and d1 is not offered another ride.
        assert!(e.tick(Millis(4)).is_empty());
        let out = book(&mut e, 2, 5);
        assert!(offers(&out).is_empty());
        // Once d1 reports free after the ride, it is offered again.
        live(&mut e, status(1, DriverStatus::Available, 10), 10);
        assert_eq!(
            offers(&e.tick(Millis(11))).pop().expect("offer").driver_id,
            "d1"
        );
    }

    #[test]
    fn revoked_partitions_are_forgotten() {
        let mut e = engine();
        live(&mut e, status(1, DriverStatus::Available, 0), 0);
        e.on_dispatch(0, request(1, 0), Millis(0), Mode::Live)
            .expect("ok");
        e.revoke(&[0].into());
        assert_eq!((e.waiting(), e.drivers()), (0, 0));
        assert!(e.tick(Millis(10_000)).is_empty());
    }

    proptest! {
        /// Whatever drivers answer and whenever time passes, a ride gets at most one driver,
        /// a driver at most one ride, and every ride ends assigned or cancelled in time.
        #[test]
        fn never_double_assigns(
            drivers in 1u32..6,
            rides in 1u32..12,
            steps in proptest::collection::vec((0u8..4, any::<prop::sample::Index>()), 0..80),
        ) {
            let mut e = engine();
            for d in 0..drivers {
                live(&mut e, status(d, DriverStatus::Available, 0), 0);
            }
            let mut open: Vec<OfferSent> = Vec::new();
            let mut assigned: HashMap<String, String> = HashMap::new();
            let mut drivers_busy: BTreeSet<String> = BTreeSet::new();
            let mut ended: BTreeSet<String> = BTreeSet::new();
            let mut now = 0i64;
            let mut record = |out: Vec<Output>, open: &mut Vec<OfferSent>| -> Result<(), TestCaseError> {
                for o in out {
                    match o {
                        Output::Ride(RideEvent::OfferSent(s)) => open.push(s),
                        Output::Ride(RideEvent::DriverAssigned(a)) => {
                            prop_assert!(assigned.insert(a.ride_id.clone(), a.driver_id.clone()).is_none(), "ride assigned twice");
                            prop_assert!(drivers_busy.insert(a.driver_id.clone()), "driver assigned twice");
                        }
                        Output::Ride(RideEvent::RideCancelled(c)) => {
                            prop_assert!(!assigned.contains_key(&c.ride_id));
                            prop_assert!(ended.insert(c.ride_id.clone()), "ride cancelled twice");
                        }
                        _ => {}
                    }
                }
                Ok(())
            };
            for r in 0..rides {
                let out = e.on_dispatch(0, request(r, now), Millis(now), Mode::Live).expect("ok");
                record(out, &mut open)?;
            }
            for (kind, pick) in steps {
                now += 300;
                let out = if open.is_empty() || kind == 0 {
                    supply_read(&mut e, now);
                    e.tick(Millis(now))
                } else {
                    let o = open.remove(pick.index(open.len()));
                    let a = if kind == 1 { OfferAnswer::Declined } else { OfferAnswer::Accepted };
                    live(&mut e, answer(&o, a), now)
                };
                record(out, &mut open)?;
            }
            // Let every wait run out.
            supply_read(&mut e, now + 10_000);
            let out = e.tick(Millis(now + 10_000));
            record(out, &mut open)?;
            supply_read(&mut e, now + 20_000);
            let out = e.tick(Millis(now + 20_000));
            record(out, &mut open)?;
            for r in 0..rides {
                let id = format!("r{r}");
                prop_assert!(assigned.contains_key(&id) ^ ended.contains(&id), "ride {} unsettled", id);
            }
        }
    }
}
