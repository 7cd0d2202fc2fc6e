//! Sources: where changes come from. Logical replication (pgoutput) for now; polling of outbox
//! tables later.

pub mod logical;
