//! Sinks: where records go. Kafka, transactionally; the batching policy decides when a Kafka
//! transaction closes.

pub mod batch;
pub mod deliveries;
pub mod handoff;
pub mod kafka;
pub mod limits;
pub mod offsets;
pub mod topics;
