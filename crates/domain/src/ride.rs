//! The ride state machine. Every event moves a ride one step; the machine says whether a step
//! is new, already applied (a duplicate to ignore) or impossible (to dead-letter).

/// Where a ride is in its life.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RideStatus {
    #[default]
    Requested,
    Offered,
    Assigned,
    DriverArrived,
    InProgress,
    Completed,
    Cancelled,
}

impl RideStatus {
    pub const ALL: [RideStatus; 7] = [
        RideStatus::Requested,
        RideStatus::Offered,
        RideStatus::Assigned,
        RideStatus::DriverArrived,
        RideStatus::InProgress,
        RideStatus::Completed,
        RideStatus::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, RideStatus::Completed | RideStatus::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RideStatus::Requested => "requested",
            RideStatus::Offered => "offered",
            RideStatus::Assigned => "assigned",
            RideStatus::DriverArrived => "driver_arrived",
            RideStatus::InProgress => "in_progress",
            RideStatus::Completed => "completed",
            RideStatus::Cancelled => "cancelled",
        }
    }
}

/// What happened to a ride, stripped of payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Requested,
    OfferSent,
    /// The offer was declined or expired: the ride waits for another offer.
    OfferLapsed,
    Assigned,
    DriverArrived,
    TripStarted,
    Telemetry,
    Completed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a ride that is {from:?} cannot take the step {step:?}")]
pub struct TransitionError {
    pub from: RideStatus,
    pub step: Step,
}

/// The outcome of applying a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The ride moved (or stayed, for telemetry) and the step should take effect.
    Changed(RideStatus),
    /// The ride is already at or past this step: a duplicate or late event, ignored.
    AlreadyApplied,
}

/// The state of one ride as its events arrive; a new one is requested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RideState {
    pub status: RideStatus,
}

impl RideState {
    /// Validates `step` against the current status and applies it.
    pub fn apply(&mut self, step: Step) -> Result<Applied, TransitionError> {
        use RideStatus as S;
        let from = self.status;
        let next = match (from, step) {
            (S::Requested | S::Offered, Step::OfferSent) => S::Offered,
            (S::Offered, Step::OfferLapsed) => S::Requested,
            (S::Requested | S::Offered, Step::Assigned) => S::Assigned,
            (S::Assigned, Step::DriverArrived) => S::DriverArrived,
            (S::DriverArrived, Step::TripStarted) => S::InProgress,
            (S::InProgress, Step::Telemetry) => S::InProgress,
            (S::InProgress, Step::Completed) => S::Completed,
            (s, Step::Cancelled) if !s.is_terminal() => S::Cancelled,
            // Already there or beyond: a redelivery, or a lapse that lost a race to an accept.
            (s, step) if reached(s, step) => return Ok(Applied::AlreadyApplied),
            _ => return Err(TransitionError { from, step }),
        };
        self.status = next;
        Ok(Applied::Changed(next))
    }
}

/// True when a ride in `status` has already passed `step`.
fn reached(status: RideStatus, step: Step) -> bool {
    use RideStatus as S;
    let done = match step {
        Step::Requested => return true,
        Step::OfferSent | Step::OfferLapsed => S::Offered,
        Step::Assigned => S::Assigned,
        Step::DriverArrived => S::DriverArrived,
        Step::TripStarted | Step::Telemetry => S::InProgress,
        Step::Completed => S::Completed,
        Step::Cancelled => S::Cancelled,
    };
    match (status, done) {
        (S::Cancelled, S::Cancelled) | (S::Completed, S::Completed) => true,
        // A cancelled ride ignores the late steps of the trip it never finished.
        (S::Cancelled, _) => true,
        (S::Completed, d) => d != S::Cancelled,
        // A repeated lapse finds the ride already back to waiting for an offer.
        (S::Requested, S::Offered) => step == Step::OfferLapsed,
        (s, d) => s >= d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HAPPY: [Step; 7] = [
        Step::OfferSent,
        Step::Assigned,
        Step::DriverArrived,
        Step::TripStarted,
        Step::Telemetry,
        Step::Telemetry,
        Step::Completed,
    ];

    #[test]
    fn a_ride_goes_from_request_to_completion() {
        let mut ride = RideState::default();
        for step in HAPPY {
            assert!(
                matches!(ride.apply(step), Ok(Applied::Changed(_))),
                "{step:?}"
            );
        }
        assert_eq!(ride.status, RideStatus::Completed);
    }

    #[test]
    fn duplicates_are_ignored_and_impossible_steps_refused() {
        let mut ride = RideState::default();
        ride.apply(Step::Assigned).expect("assign");
        assert_eq!(ride.apply(Step::Assigned), Ok(Applied::AlreadyApplied));
        assert_eq!(ride.apply(Step::OfferSent), Ok(Applied::AlreadyApplied));
        assert_eq!(
            ride.apply(Step::Completed),
            Err(TransitionError {
                from: RideStatus::Assigned,
                step: Step::Completed
            })
        );
        ride.apply(Step::Cancelled).expect("cancel");
        assert_eq!(ride.apply(Step::Cancelled), Ok(Applied::AlreadyApplied));
        assert_eq!(ride.apply(Step::DriverArrived), Ok(Applied::AlreadyApplied));
    }

    #[test]
    fn a_completed_ride_cannot_be_cancelled() {
        let mut ride = RideState::default();
        HAPPY.iter().for_each(|s| {
            ride.apply(*s).expect("happy path");
        });
        assert!(ride.apply(Step::Cancelled).is_err());
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::OfferSent),
            Just(Step::OfferLapsed),
            Just(Step::Assigned),
            Just(Step::DriverArrived),
            Just(Step::TripStarted),
            Just(Step::Telemetry),
            Just(Step::Completed),
            Just(Step::Cancelled),
        ]
    }

    proptest! {
        #[test]
        fn terminal_states_are_final(steps in proptest::collection::vec(step(), 0..40)) {
            let mut ride = RideState::default();
            let mut terminal = None;
            for s in steps {
                let _ = ride.apply(s);
                if let Some(t) = terminal {
                    prop_assert_eq!(ride.status, t);
                } else if ride.status.is_terminal() {
                    terminal = Some(ride.status);
                }
            }
        }

        #[test]
        fn replaying_an_applied_step_changes_nothing(steps in proptest::collection::vec(step(), 0..40)) {
            let mut ride = RideState::default();
            for s in steps {
                if let Ok(Applied::Changed(_)) = ride.apply(s)
                    && s != Step::Telemetry && s != Step::OfferSent
                {
                    let before = ride;
                    let again = ride.apply(s);
                    prop_assert!(again == Ok(Applied::AlreadyApplied) || s == Step::OfferLapsed, "{s:?} -> {again:?}");
                    if s != Step::OfferLapsed { prop_assert_eq!(ride, before); }
                }
            }
        }
    }
}
