//! Ride history in a database, fed from the ride topics the way a sink connector would.
//!
//! - [`view`]: a ride as its rider sees it, folded from its records (pure).
//! - [`db`]: that view, each applied record and each message, on PostgreSQL or SQLite, with
//!   each partition's position in the same transaction as the rows it produced.
//! - [`sink`]: the service that feeds it.

pub mod db;
pub mod sink;
pub mod view;

pub use db::{Backend, Claim, Cursor, KeyClaim, Page, Store, StoreError, Totals};
pub use sink::{DEFAULT_DATA_DIR, Database, SinkError, StoreSettings, redacted};
pub use view::{Change, RideView};
