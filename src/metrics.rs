//! What the relay exports to Prometheus (README, metrics), and the state `/readyz` decides on:
//! the relay and the sink report into it, `/readyz` and `/metrics` only read.
//!
//! One process runs one relay, so the metrics live in one process-wide set ([`metrics`]) in a
//! registry of their own (not the `prometheus` crate's default one, which any dependency may fill).
//! Published means committed: events and bytes are counted when their Kafka transaction commits, so
//! `outboxd_events_published_total` equals what a `read_committed` consumer can read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::pg::Lsn;
use crate::progress::{Owed, Progress, Stall, Transition};

/// The relay's metrics and readiness inputs.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// 1 while the process runs (a scrape that finds nothing means it is down).
    pub up: IntGauge,
    /// 1 while `/readyz` would answer 200.
    pub ready: IntGauge,
    /// 1 while something waits to be published and nothing was committed for the stall bound.
    pub stalled: IntGauge,
    /// Unix time of the last Kafka commit (0 before the first).
    pub last_progress: IntGauge,
    /// Constant 1, labelled with the version.
    pub info: IntGaugeVec,
    /// Records committed to Kafka, by topic (dead letters under the dead-letter topic; the
    /// checkpoint records are not counted).
    pub events_published: IntCounterVec,
    /// Bytes (key + value + headers) of those records, by topic.
    pub bytes_published: IntCounterVec,
    /// Kafka transactions by `result`: `committed` or `aborted`.
    pub kafka_transactions: IntCounterVec,
    /// Records per committed Kafka transaction.
    pub batch_events: Histogram,
    /// Postgres commit timestamp to Kafka commit, per Postgres transaction with records.
    pub end_to_end_latency: Histogram,
    /// Postgres commit timestamp to an earlier point of the path, per Postgres transaction with
    /// records, by `reached` ([`Reached`]): with [`Self::end_to_end_latency`], where the time goes.
    /// This is [`Reached::Decoded`]'s series, looked up once: finding a series by its label
    /// hashes the label, 1.8 % of the relay's CPU on a stream of one-row transactions.
    decoded_since_commit: Histogram,
    /// [`Self::decoded_since_commit`]'s series for [`Reached::Produced`].
    produced_since_commit: Histogram,
    /// The server's current WAL position minus the last committed checkpoint.
    pub replication_lag_bytes: IntGauge,
    /// WAL the slot keeps on the server (current position minus the slot's `restart_lsn`).
    pub slot_retained_wal_bytes: IntGauge,
    /// The LSN of the last committed checkpoint, as a number.
    pub checkpoint_lsn: IntGauge,
    /// Changes routed to the dead-letter topic, by reason.
    pub dead_letters: IntCounterVec,
    /// Relay attempts restarted after a transient failure.
    pub reconnects: IntCounter,
    /// 1 for this instance's [`Role`] (`role="active"` or `role="standby"`), 0 for the other.
    pub role: IntGaugeVec,
    /// Snapshot read events committed to Kafka.
    pub snapshot_rows: IntCounter,
    /// 1 while a snapshot runs.
    pub snapshot_running: IntGauge,
    /// Read events the running snapshot has committed (its cursor's rows).
    pub snapshot_progress_rows: IntGauge,
    /// The planner's estimate of the rows of the running snapshot's tables (-1: unknown).
    pub snapshot_estimated_rows: IntGauge,
    /// Every metric's name, as registered.
    names: Vec<String>,
    health: Health,
    /// What the relay owes Kafka and whether that became a stall.
    progress: Mutex<Progress>,
}

/// Inputs of readiness that are not metrics themselves.
#[derive(Debug, Default)]
struct Health {
    /// Replication streams and the Kafka producer is initialised (an attempt is running).
    streaming: AtomicBool,
    /// The last look at the server's WAL position succeeded.
    postgres_reachable: AtomicBool,
    /// The largest lag at which the relay still counts as caught up.
    max_ready_lag: AtomicU64,
    /// The [`Role`], as its discriminant.
    role: AtomicU8,
    /// A standby's last wait for the lease got an answer from Postgres.
    lease_reachable: AtomicBool,
}

/// What this instance does for its relay name (`crate::relay::lease`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Waits for the standby lease.
    Standby = 0,
    /// Holds the lease and relays.
    Active = 1,
}

impl Role {
    /// The `role` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Active => "active",
        }
    }
}

/// A point a Postgres transaction reaches on its way to Kafka, for
/// [`Metrics::latency_since_commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Its Commit message was read from the slot: the walsender decoded it and we received it.
    Decoded,
    /// Its last record was handed to the Kafka producer (the sink thread took it off the queue).
    Produced,
}

impl Reached {
    /// The `reached` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reached::Decoded => "decoded",
            Reached::Produced => "produced",
        }
    }
}

/// Buckets of the latency histograms: 0.5 ms to ~40 s, 25 % apart, so that a quantile read from
/// them (Prometheus' `histogram_quantile`, the bench's stage table) is within a few percent.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0005, 1.25, 51).expect("valid buckets")
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let names = std::cell::RefCell::new(Vec::new());
        let register = |collector: Box<dyn prometheus::core::Collector>| {
            names
                .borrow_mut()
                .extend(collector.desc().iter().map(|d| d.fq_name.clone()));
            registry
                .register(collector)
                .expect("metric names are unique and valid");
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid metric");
            register(Box::new(gauge.clone()));
            gauge
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let counter =
                IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            register(Box::new(counter.clone()));
            counter
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            register(Box::new(histogram.clone()));
            histogram
        };
        let info = IntGaugeVec::new(
            Opts::new(
                "outboxd_build_info",
                "Constant 1, labelled with the outboxd version.",
            ),
            &["version"],
        )
        .expect("valid metric");
        register(Box::new(info.clone()));
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let latency_since_commit = HistogramVec::new(
            HistogramOpts::new(
                "outboxd_latency_since_commit_seconds",
                "Postgres commit timestamp to the point `reached` (decoded: its Commit message \
                 read from the slot; produced: its last record handed to the Kafka producer), per \
                 Postgres transaction with records. The Kafka commit is \
                 outboxd_end_to_end_latency_seconds.",
            )
            .buckets(latency_buckets()),
            &["reached"],
        )
        .expect("valid metric");
        register(Box::new(latency_since_commit.clone()));
        let series = |point: Reached| latency_since_commit.with_label_values(&[point.as_str()]);
        let (decoded_since_commit, produced_since_commit) =
            (series(Reached::Decoded), series(Reached::Produced));
        let reconnects = IntCounter::new(
            "outboxd_reconnects_total",
            "Relay attempts restarted from the checkpoint after a transient failure.",
        )
        .expect("valid metric");
        register(Box::new(reconnects.clone()));
        let role = IntGaugeVec::new(
            Opts::new(
                "outboxd_role",
                "1 for this instance's role: active (holds the standby lease and relays) or \
                 standby (waits for the lease).",
            ),
            &["role"],
        )
        .expect("valid metric");
        register(Box::new(role.clone()));
        let snapshot_rows = IntCounter::new(
            "outboxd_snapshot_rows_total",
            "Snapshot read events (op r) committed to Kafka.",
        )
        .expect("valid metric");
        register(Box::new(snapshot_rows.clone()));

        let mut metrics = Self {
            up: gauge("outboxd_up", "1 while the outboxd process runs."),
            ready: gauge(
                "outboxd_ready",
                "1 while the relay streams from Postgres into Kafka, is caught up and not stalled.",
            ),
            stalled: gauge(
                "outboxd_stalled",
                "1 while changes wait to be published and no Kafka transaction committed for \
                 metrics.stall_timeout.",
            ),
            last_progress: gauge(
                "outboxd_last_progress_timestamp_seconds",
                "Unix time of the last Kafka commit (0 before the first).",
            ),
            info,
            events_published: counter_vec(
                "outboxd_events_published_total",
                "Records committed to Kafka, by topic.",
                "topic",
            ),
            bytes_published: counter_vec(
                "outboxd_bytes_published_total",
                "Bytes (key, value and headers) of the records committed to Kafka, by topic.",
                "topic",
            ),
            kafka_transactions: counter_vec(
                "outboxd_kafka_transactions_total",
                "Kafka transactions by result (committed, aborted).",
                "result",
            ),
            batch_events: histogram(
                "outboxd_batch_events",
                "Records per committed Kafka transaction.",
                exponential_buckets(1.0, 4.0, 10).expect("valid buckets"),
            ),
            end_to_end_latency: histogram(
                "outboxd_end_to_end_latency_seconds",
                "Postgres commit timestamp to Kafka commit, per Postgres transaction with records.",
                latency_buckets(),
            ),
            decoded_since_commit,
            produced_since_commit,
            replication_lag_bytes: gauge(
                "outboxd_replication_lag_bytes",
                "The server's current WAL position minus the last committed checkpoint.",
            ),
            slot_retained_wal_bytes: gauge(
                "outboxd_slot_retained_wal_bytes",
                "WAL the replication slot keeps on the server.",
            ),
            checkpoint_lsn: gauge(
                "outboxd_checkpoint_lsn",
                "LSN of the last checkpoint committed to Kafka.",
            ),
            dead_letters: counter_vec(
                "outboxd_dead_letters_total",
                "Changes routed to the dead-letter topic, by reason.",
                "reason",
            ),
            reconnects,
            role,
            snapshot_rows,
            snapshot_running: gauge("outboxd_snapshot_running", "1 while a snapshot runs."),
            snapshot_progress_rows: gauge(
                "outboxd_snapshot_progress_rows",
                "Read events the running snapshot has committed to Kafka.",
            ),
            snapshot_estimated_rows: gauge(
                "outboxd_snapshot_estimated_rows",
                "The planner's estimate (pg_class.reltuples) of the rows of the running \
                 snapshot's tables; -1 when a table was never analyzed.",
            ),
            registry,
            names: Vec::new(),
            health: Health::default(),
            progress: Mutex::default(),
        };
        metrics.names = names.into_inner();
        for result in ["committed", "aborted"] {
            metrics.kafka_transactions.with_label_values(&[result]);
        }
        metrics.set_role(Role::Standby);
        metrics.up.set(1);
        metrics
    }

    /// The name of every exported metric (a labelled one is exported once it has a sample).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The Prometheus text exposition of every metric, with readiness brought up to date.
    pub fn render(&self) -> String {
        self.ready.set(i64::from(self.readiness().is_ok()));
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("encoding into memory cannot fail");
        String::from_utf8(text).expect("the text format is UTF-8")
    }

    /// Whether the relay makes progress and streams from a reachable Postgres into Kafka with a lag
    /// within the bound, or, standing by, reaches Postgres to take over (`crate::http` says why a
    /// standby counts as ready); if not, why.
    pub fn readiness(&self) -> Result<(), String> {
        if self.role() == Role::Standby {
            return if self.health.lease_reachable.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err(
                    "standing by, but Postgres does not answer the wait for the lease: this \
                     instance could not take over"
                        .into(),
                )
            };
        }
        if let Some(stall) = self.progress().stall() {
            return Err(self.stall_reason(&stall));
        }
        if !self.health.streaming.load(Ordering::Relaxed) {
            return Err("not streaming: the relay is starting or reconnecting".into());
        }
        if !self.health.postgres_reachable.load(Ordering::Relaxed) {
            return Err("Postgres did not answer the last WAL position query".into());
        }
        let lag = u64::try_from(self.replication_lag_bytes.get()).unwrap_or(0);
        let bound = self.health.max_ready_lag.load(Ordering::Relaxed);
        if lag > bound {
            return Err(format!(
                "lagging: {lag} bytes of WAL behind, over metrics.ready_max_lag ({bound} bytes)"
            ));
        }
        Ok(())
    }

    /// This instance's role.
    pub fn role(&self) -> Role {
        if self.health.role.load(Ordering::Relaxed) == Role::Active as u8 {
            Role::Active
        } else {
            Role::Standby
        }
    }

    /// Becomes `role` (`crate::relay::lease`).
    pub fn set_role(&self, role: Role) {
        self.health.role.store(role as u8, Ordering::Relaxed);
        for each in [Role::Standby, Role::Active] {
            self.role
                .with_label_values(&[each.as_str()])
                .set(i64::from(each == role));
        }
    }

    /// A Postgres transaction committed at `committed` (Postgres' clock) reached `point` now.
    pub fn reached(&self, point: Reached, committed: DateTime<Utc>) {
        let elapsed = (Utc::now() - committed).to_std().unwrap_or_default();
        let series = match point {
            Reached::Decoded => &self.decoded_since_commit,
            Reached::Produced => &self.produced_since_commit,
        };
        series.observe(elapsed.as_secs_f64());
    }

    /// Whether a standby's last wait for the lease got an answer from Postgres.
    pub fn set_lease_reachable(&self, reachable: bool) {
        self.health
            .lease_reachable
            .store(reachable, Ordering::Relaxed);
    }

    /// Sets the lag up to which the relay counts as caught up.
    pub fn set_max_ready_lag(&self, bytes: u64) {
        self.health.max_ready_lag.store(bytes, Ordering::Relaxed);
    }

    /// Replication started (`true`) or the attempt ended (`false`).
    pub fn set_streaming(&self, streaming: bool) {
        self.health.streaming.store(streaming, Ordering::Relaxed);
    }

    /// Whether Postgres answered the last query of poll mode, which watches no WAL position.
    pub fn set_postgres_reachable(&self, reachable: bool) {
        self.health
            .postgres_reachable
            .store(reachable, Ordering::Relaxed);
    }

    /// The result of the last look at the server's WAL position: its position and the slot's
    /// `restart_lsn`, or `None` when Postgres could not be asked.
    pub fn observe_server(&self, positions: Option<(Lsn, Lsn)>) {
        self.health
            .postgres_reachable
            .store(positions.is_some(), Ordering::Relaxed);
        if let Some((current, restart)) = positions {
            self.slot_retained_wal_bytes.set(lsn_diff(current, restart));
            let checkpoint = Lsn(u64::try_from(self.checkpoint_lsn.get()).unwrap_or(0));
            self.replication_lag_bytes
                .set(lsn_diff(current, checkpoint).max(0));
        }
    }

    /// The source handed `owed` to the sink: it waits to be published.
    pub fn owe(&self, owed: Owed) {
        self.progress().owe(Instant::now(), owed);
    }

    /// Poll mode: a claim found no rows.
    pub fn owe_nothing(&self) {
        self.progress().owe_nothing();
    }

    /// Logical mode: an attempt resumes from the checkpoint at `lsn`, read back from Kafka.
    pub fn resumed_at(&self, lsn: Lsn) {
        self.checkpoint_lsn
            .set(i64::try_from(lsn.0).unwrap_or(i64::MAX));
        self.progress().covered(lsn);
    }

    /// Decides whether the relay is stalled, with `bound` as `metrics.stall_timeout`; returns the
    /// change of the verdict, if any, for the caller to log.
    pub fn check_stall(&self, bound: Duration) -> Option<Transition> {
        let mut progress = self.progress();
        let transition = progress.check(Instant::now(), bound);
        self.stalled.set(i64::from(progress.stall().is_some()));
        transition
    }

    /// What a stall means, for `/readyz` and the log: `stalled: no Kafka commit for N s while ...`.
    pub fn stall_reason(&self, stall: &Stall) -> String {
        let quiet = stall.quiet_since.elapsed().as_secs();
        let waiting = match stall.owed {
            Owed::Wal { .. } => format!(
                "changes wait to be published ({} of WAL past the checkpoint at {})",
                human_bytes(u64::try_from(self.replication_lag_bytes.get()).unwrap_or(0)),
                Lsn(u64::try_from(self.checkpoint_lsn.get()).unwrap_or(0)),
            ),
            Owed::Rows { claimed } => {
                format!("outbox rows wait to be published (a batch of {claimed} claimed)")
            }
        };
        format!("stalled: no Kafka commit for {quiet} s while {waiting}")
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        // The state stays consistent through a panic elsewhere: each update is one assignment.
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A Kafka transaction committed with these records (`(topic, count, bytes)`) and checkpoint.
    pub fn committed(&self, topics: &HashMap<String, (u64, u64)>, checkpoint: Option<Lsn>) {
        self.progress().committed(Instant::now(), checkpoint);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_progress
            .set(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
        let mut events = 0;
        for (topic, (count, bytes)) in topics {
            self.events_published
                .with_label_values(&[topic])
                .inc_by(*count);
            self.bytes_published
                .with_label_values(&[topic])
                .inc_by(*bytes);
            events += count;
        }
        self.kafka_transactions
            .with_label_values(&["committed"])
            .inc();
        #[allow(clippy::cast_precision_loss)] // a batch is far below 2^52 records
        self.batch_events.observe(events as f64);
        if let Some(checkpoint) = checkpoint {
            self.checkpoint_lsn
                .set(i64::try_from(checkpoint.0).unwrap_or(i64::MAX));
        }
    }

    /// A Kafka transaction was aborted.
    pub fn aborted(&self) {
        self.kafka_transactions
            .with_label_values(&["aborted"])
            .inc();
    }
}

/// `bytes` for a person: `512 bytes`, `12.3 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `a - b` in bytes, saturating into an `i64`.
fn lsn_diff(a: Lsn, b: Lsn) -> i64 {
    if a.0 >= b.0 {
        i64::try_from(a.0 - b.0).unwrap_or(i64::MAX)
    } else {
        -i64::try_from(b.0 - a.0).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_a_person_would_say_them() {
        assert_eq!(human_bytes(800), "800 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 * 1024 * 1024 + 100), "12.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }
}
