//! Sources: where changes come from. Logical replication (pgoutput), or, for a role without
//! REPLICATION, polling of outbox tables.

pub mod logical;
pub mod poll;
