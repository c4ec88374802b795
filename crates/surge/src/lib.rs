//! Surge: demand against supply per H3 cell over event-time windows, published as smoothed
//! multipliers to the compacted surge topic.

pub mod engine;
