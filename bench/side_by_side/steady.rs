//! The steady workload (W3): single-row outbox transactions at a fixed rate, each event's latency
//! from its commit to its receipt by a `read_committed` consumer, and the relay's memory meanwhile.
//!
//! The commit time is when the writer's `COMMIT` returned (on loopback, within a fraction of a
//! millisecond after Postgres' own commit timestamp, which would need `track_commit_timestamp` and a
//! server restart); the receipt time is when the consumer's poll returned the record. Both are read
//! from one monotonic clock in this process. Each event's payload `id` joins the two.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use serde_json::{json, Value};

use crate::common;
use crate::subjects::Kind;
use crate::support::dev_env;
use crate::support::kafka::{consume_topic_at, Isolation};
use crate::support::postgres::{connect, create_pgoutput_slot};

/// Rate and length of the measured phase.
#[derive(Debug, Clone, Copy)]
pub struct Steady {
    /// Events (= transactions) per second.
    pub rate: usize,
    /// Seconds measured, after a warm-up of [`WARM_UP`].
    pub seconds: u64,
}

/// Written at the same rate before the measured phase and not counted: a JVM's JIT, librdkafka's
/// connections and the walsender settle.
const WARM_UP: Duration = Duration::from_secs(5);
/// Events are committed in groups of this many every `1 / (rate / TICK_EVENTS)` s, each in its own
/// transaction over one of [`WRITERS`] connections.
const TICK_EVENTS: usize = 2;
const WRITERS: usize = 4;

/// Runs the steady workload against each relay of `kinds` in turn, each on a database of its own.
pub async fn run(steady: Steady, kinds: &[Kind]) -> Value {
    let mut report = json!({ "rate": steady.rate, "seconds": steady.seconds });
    for &kind in kinds {
        let figures = measure(steady, kind).await;
        eprintln!("[w3] {} {figures}", kind.name());
        report[kind.name()] = figures;
    }
    report
}

async fn measure(steady: Steady, kind: Kind) -> Value {
    let (db, client) = common::outbox_db("bench_w3").await;
    let aggregate = db.name.clone();
    create_pgoutput_slot(&client, &kind.slot(&db)).await;
    kind.create_topic(&aggregate).await;
    let relay = kind.start(&db);
    let pid = relay.pid();

    // Event 0 is the probe: once it arrives the relay streams. Then the warm-up, then the measured.
    let warm_up = steady.rate * usize::try_from(WARM_UP.as_secs()).expect("seconds");
    let measured = steady.rate * usize::try_from(steady.seconds).expect("seconds");
    let total = 1 + warm_up + measured;
    let received = Arc::new(AtomicUsize::new(0));
    // The consumer gives up a minute after the last event was due, should some never arrive.
    let patience = Duration::from_secs(180 + 60 + steady.seconds) + WARM_UP;
    let consumer = {
        let (topic, received) = (kind.topic(&aggregate), received.clone());
        tokio::task::spawn_blocking(move || receipts(&topic, total, &received, patience))
    };
    client
        .batch_execute(&common::fill_sql(&aggregate, 1, 1, 0))
        .await
        .expect("probe event");
    let ready_by = Instant::now() + Duration::from_secs(180);
    while received.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < ready_by, "{} did not start", kind.name());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let writers = writers(&db.url).await;
    let commits_warm = write(&writers, &aggregate, steady.rate, 1, warm_up).await;
    drop(commits_warm);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_rss(pid, sampling.clone()));
    let started = Instant::now();
    let commits = write(&writers, &aggregate, steady.rate, 1 + warm_up, measured).await;
    let wrote_for = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let rss = sampler.await.expect("sampler");
    let receipts = consumer.await.expect("consumer");
    let peak_rss = common::memory_mib(pid, "VmHWM");
    relay.stop();

    let first = 1 + warm_up;
    let mut latencies: Vec<f64> = commits
        .iter()
        .enumerate()
        .filter_map(|(i, committed)| {
            let receipt = receipts.get(first + i).copied().flatten()?;
            Some(receipt.saturating_duration_since(*committed).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    // A rank between 1 and the number of events: no truncation.
    #[allow(clippy::cast_possible_truncation)]
    let percentile = |p: f64| {
        let at = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len());
        latencies[at - 1]
    };
    json!({
        "events": measured,
        "received": latencies.len(),
        "achieved_rate": measured as f64 / wrote_for.as_secs_f64(),
        "latency_ms": {
            "p50": percentile(0.50),
            "p95": percentile(0.95),
            "p99": percentile(0.99),
            "max": percentile(1.0),
        },
        "steady_rss_mib": {
            "max": rss.iter().copied().fold(0.0, f64::max),
            "median": median(rss),
        },
        "peak_rss_mib": peak_rss,
    })
}

async fn writers(url: &str) -> Vec<tokio_postgres::Client> {
    let mut writers = Vec::with_capacity(WRITERS);
    for _ in 0..WRITERS {
        writers.push(connect(url).await);
    }
    writers
}

/// Commits events `first..first + count` at `rate` per second, one transaction each; returns when
/// each commit returned, in id order. A tick that falls behind is caught up at once, so the rate
/// holds on average.
async fn write(
    writers: &[tokio_postgres::Client],
    aggregate: &str,
    rate: usize,
    first: usize,
    count: usize,
) -> Vec<Instant> {
    let period = Duration::from_secs_f64(TICK_EVENTS as f64 / rate as f64);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut committed = Vec::with_capacity(count);
    for start in (first..first + count).step_by(TICK_EVENTS) {
        ticks.tick().await;
        let group = (start..(start + TICK_EVENTS).min(first + count)).map(|id| async move {
            let sql = common::fill_sql(aggregate, 1, 1, id as u64);
            writers[id % writers.len()]
                .batch_execute(&sql)
                .await
                .expect("event");
            Instant::now()
        });
        committed.extend(futures_util::future::join_all(group).await);
    }
    committed
}

/// Reads `topic` until `total` events arrived or `patience` ran out, counting them in `received`;
/// returns each id's receipt time.
fn receipts(
    topic: &str,
    total: usize,
    received: &AtomicUsize,
    patience: Duration,
) -> Vec<Option<Instant>> {
    let mut at = vec![None; total];
    consume_topic_at(
        &dev_env().kafka_bootstrap,
        topic,
        Isolation::ReadCommitted,
        patience,
        |message| {
            let now = Instant::now();
            let id = message
                .payload()
                .and_then(|value| serde_json::from_slice::<Value>(value).ok())
                .and_then(|value| value["id"].as_u64())
                .and_then(|id| usize::try_from(id).ok())
                .expect("payload with an id");
            if let Some(slot @ None) = at.get_mut(id) {
                *slot = Some(now);
                received.fetch_add(1, Ordering::Relaxed) + 1 == total
            } else {
                false
            }
        },
    );
    at
}

/// The process's resident set every 250 ms while `running`, in MiB.
async fn sample_rss(pid: u32, running: Arc<AtomicBool>) -> Vec<f64> {
    let mut samples = Vec::new();
    while running.load(Ordering::Relaxed) {
        samples.extend(common::memory_mib(pid, "VmRSS"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    samples
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
