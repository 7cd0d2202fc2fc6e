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
//! - [`pg`]: everything that speaks PostgreSQL: LSNs and ids, the wire client (a plain SQL
//!   [`pg::wire::Session`] with bind parameters, the replication connection), the pgoutput decoder,
//!   column values to JSON, primary keys and column types of published tables, SQL quoting.
//! - [`source`]: [`source::Change`], the currency of both modes; the replication stream as ordered
//!   Postgres transactions (logical mode), or outbox rows claimed in an open transaction (poll mode).
//! - [`route`]: what a change becomes in Kafka, a [`route::Record`]: outbox events (Debezium outbox
//!   or CloudEvents envelope), Debezium change events for other tables, dead letters.
//! - [`sink`]: the transactional Kafka producer, the batching of Postgres transactions into
//!   Kafka transactions with their checkpoint (one writer for both modes), and the offsets topic.
//! - [`checkpoint`]: the resume position as values (a leaf: it depends only on [`pg`]).
//! - [`relay`]: the exactly-once loop joining source, router and sink; errors sorted into transient
//!   (retry from the checkpoint) and definite (stop with the reason).
//! - [`progress`]: whether the relay makes progress: what waits to be published, the last Kafka
//!   commit, and when that gap is a stall (readiness).
//! - [`settings`]: what one relay runs with, as values ([`settings::RelayConfig`]); built by
//!   config, read by the relay.
//! - [`config`]: the composition root: the TOML file and its environment overrides, validated into
//!   the runtime settings; used only by `main.rs` and [`ops`], and never importing the relay.
//! - [`ops`]: the one-shot commands `check`, `migrate` and `status`.
//! - [`http`], [`metrics`], [`service`], [`logging`]: `/metrics` `/healthz` `/readyz`, the
//!   Prometheus metrics, systemd's readiness and watchdog, JSON or text logs.
//!
//! Every module is public because the integration tests and benchmarks drive them directly; the
//! binary's interface is the command line and the configuration file, not this crate's API.
//!
//! # Delivery contract
//! A change that PostgreSQL reports committed appears exactly once to a `read_committed` Kafka
//! consumer, in commit order per key. The slot is confirmed only up to the end LSN of the last
//! PostgreSQL transaction whose events and checkpoint were committed together in one Kafka transaction;
//! see `docs/architecture.md` for the algorithm of both modes.

pub mod checkpoint;
pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod pg;
pub mod progress;
pub mod registry;
pub mod relay;
pub mod route;
pub mod service;
pub mod settings;
pub mod sink;
pub mod source;
