//! The ride domain: pure rules, no I/O.
//!
//! - [`ride`]: the ride state machine and its transitions.
//! - [`money`]: integer money and the exact commission split.
//! - [`fare`]: fares from distance, time and surge.
//! - [`matching`]: nearest-driver matching, reservations, and the cross-border strategy.
//! - [`city`]: the service area and its H3 zones (dispatch regions and matching cells).
//! - [`traffic`]: speeds that vary by place and hour: a congested centre, and rush hours.
//! - [`eta`]: corrections of distance-only ETAs, learned online per cell and hour.

pub mod city;
pub mod eta;
pub mod fare;
pub mod matching;
pub mod money;
pub mod ride;
pub mod traffic;

pub use city::{City, CityError, Zone};
pub use fare::{Fare, FareParts, Rates};
pub use money::{Split, split_commission};
/// Whether a record is processed live, or replayed to rebuild state after a takeover: a
/// replayed one teaches state, and decides and publishes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Replay,
}

pub use ride::{Applied, RideState, RideStatus, Step, TransitionError};

/// How long a driver's app holds an accepted offer, declining others, while it waits for the
/// ride's outcome (assigned to anyone, or cancelled). Dispatch takes a late accept only while
/// it is well inside this, so a driver it assigns is never on another ride.
pub const ACCEPT_HOLD_MS: i64 = 120_000;
