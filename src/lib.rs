//! outboxd moves committed PostgreSQL changes into Apache Kafka exactly once.
//!
//! # Layout
//! The pipeline reads in one direction, and only the checkpoint flows back:
//!
//! ```text
//! walsender --pgoutput--> pg::wire --> pg::pgoutput --> source --> route --> sink (Kafka)
//!     ^                                                                        |
//!     +---------- standby status: flush = end LSN of the last committed txn <---+
//! ```
//!
//! - [`pg`]: everything that speaks PostgreSQL: LSNs and ids, the replication connection, the pgoutput
//!   decoder, column values to JSON, primary keys and column types of published tables.
//! - [`source`]: the replication stream as ordered Postgres transactions of changes.
//! - [`route`]: what a change becomes in Kafka, a [`route::Record`]: outbox events (Debezium outbox
//!   or CloudEvents envelope), Debezium change events for other tables, dead letters.
//! - [`sink`]: the transactional Kafka producer and the batching of Postgres transactions into
//!   Kafka transactions.
//! - [`checkpoint`]: the resume position, stored in Kafka with the events it covers.
//! - [`config`]: the TOML file and its environment overrides, validated into a relay configuration.
//! - [`relay`]: the exactly-once loop joining source, router and sink.
//! - [`service`]: systemd's readiness and watchdog notifications.
//!
//! # Delivery contract
//! A change that PostgreSQL reports committed appears exactly once to a `read_committed` Kafka
//! consumer, in commit order per key. The slot is confirmed only up to the end LSN of the last
//! PostgreSQL transaction whose events and checkpoint were committed together in one Kafka transaction;
//! see `../shared/DESIGN.md` §4 for the algorithm.

pub mod checkpoint;
pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod pg;
pub mod relay;
pub mod route;
pub mod service;
pub mod sink;
pub mod source;
