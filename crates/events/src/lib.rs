//! BimRide's event contracts and their wire codec.
//!
//! The `.avsc` files in `schemas/` are the source of truth. Every Rust type here derives its
//! Avro schema, and the `contract` tests fail when a type and its file diverge.

pub mod codec;
pub mod contract;
pub mod event;
pub mod topic;

pub use codec::{Codec, CodecError, RegistryConfig, WireHeader};
pub use event::*;
pub use topic::{
    DEFAULT_NAMESPACE, DispatchEvent, RideEvent, SupplyEvent, Topic, TopicValue, Topics,
};
