//! Audits of the retained log: every topic read `read_committed` and reconciled by ride.
//!
//! The checks, each named as in the report:
//! - rides: *requested once*; *decided once* (assigned, or cancelled before a driver);
//!   *drivers assigned only on their accept* (read from driver supply); *completed at most
//!   once*; *charged at most once*; *trip charges only for completed rides*; *completed rides
//!   charged at their quote* (the tariff of its product, with the surge quoted);
//!   *cancellations charged by the rule*; *commission plus payout is the fare*; *every message
//!   sent once* to its rider and driver;
//! - across rides: *notification ids unique*; *idempotency keys book one ride*; *no driver on
//!   two rides at once*;
//! - ETA: *each leg observed once*; *legs observed only of requested rides* (from the
//!   beginning); *trip legs observed only of completed rides*;
//! - where the ride store exists, *ride store agrees with the topics*.
//!
//! The report also counts the records read of each topic, surge's and driver supply's included.

pub mod ledger;
pub mod read;
pub mod report;
pub mod since;
pub mod store;

pub use ledger::Ledger;
pub use read::{AuditError, read_ledger};
pub use report::{Check, Report};
pub use since::{BadSince, Since};
pub use store::check_store;
