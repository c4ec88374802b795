//! Audits of the retained ride log: every topic read `read_committed` and reconciled by ride.
//!
//! Every booked ride is requested once and decided once (assigned, or cancelled before a
//! driver); once completed it is charged exactly once at the tariff of its product with the
//! surge it was quoted, and its rider and driver get each step's message once; a cancelled
//! ride pays the cancellation fee exactly when the rule says; commission plus payout is the
//! fare; no notification id is sent twice; no idempotency key books two rides; no driver holds
//! two rides at once. Where the ride store exists, its rows agree with the topics.

pub mod ledger;
pub mod read;
pub mod report;
pub mod store;

pub use ledger::Ledger;
pub use read::{AuditError, read_ledger};
pub use report::{Check, Report};
pub use store::check_store;
