//! BimRide's event contracts: the events, their topics and their Avro schemas. No I/O: the
//! wire codec and the registry client live in `bimride-codec`.
//!
//! The `.avsc` files in `schemas/` are the source of truth. Every Rust type here derives its
//! Avro schema, and the `contract` tests fail when a type and its file diverge.

pub mod contract;
pub mod event;
pub mod topic;

pub use event::*;
pub use topic::{
    DEFAULT_NAMESPACE, DispatchEvent, RideEvent, SupplyEvent, Topic, TopicValue, Topics,
};
