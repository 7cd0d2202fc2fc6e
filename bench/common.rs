//! What the benchmarks share: their size from the environment, the outbox database and its
//! backlogs, the two ceilings (`pg_recvlogical` for the walsender, Kafka's transactional
//! `ProducerPerformance` for the broker), the outboxd binary as a user starts it, a relay's drain
//! time, the steady workload's latencies, and the report with the machine it ran on.
#![allow(dead_code)] // each benchmark uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use serde_json::{json, Value};

use super::support::debezium::DebeziumServer;
use super::support::kafka::{consume_topic_at, Isolation};
use super::support::outbox::publish_outbox;
use super::support::postgres::connect;
use super::support::relay::{RelayProcess, RelaySpec};
use super::support::{self, dev_env, postgres::TestDb};

#[path = "stages.rs"]
mod stages;

/// `DRAIN_TRANSACTIONS`, or 200,000.
pub fn transactions() -> usize {
    std::env::var("DRAIN_TRANSACTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// A fresh database with the outbox table of `migrations/`, a publication of it, and the `fill`
/// procedure of [`fill_sql`].
pub async fn outbox_db(prefix: &str) -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::create(prefix).await;
    let client = db.client().await;
    client
        .batch_execute(include_str!("../migrations/0001_outbox.sql"))
        .await
        .expect("outbox table");
    publish_outbox(&client, &db.publication, None).await;
    client
        .batch_execute(
            "CREATE PROCEDURE fill(agg text, txns int, nrows int, first bigint) LANGUAGE plpgsql AS $$
             DECLARE n bigint := first;
             BEGIN
               FOR t IN 1..txns LOOP
                 FOR r IN 1..nrows LOOP
                   INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
                   VALUES (agg, 'order-' || (n % 1000), 'OrderCreated',
                           jsonb_build_object('id', n, 'note', repeat('x', 475)));
                   n := n + 1;
                 END LOOP;
                 COMMIT;
               END LOOP;
             END $$;",
        )
        .await
        .expect("fill procedure");
    (db, client)
}

/// Poll mode's additions to an [`outbox_db`] outbox: migration 0004 (the `seq` column and its
/// index, the notify function) and, with `trigger`, the notify trigger attached as `outboxd migrate`
/// attaches it in poll mode with `poll.notify` on (and leaves off otherwise).
pub async fn add_poll_mode(client: &tokio_postgres::Client, trigger: bool) {
    client
        .batch_execute(include_str!("../migrations/0004_poll.sql"))
        .await
        .expect("migration 0004");
    if trigger {
        client
            .batch_execute(
                "CREATE TRIGGER outboxd_notify AFTER INSERT ON outbox \
                 FOR EACH STATEMENT EXECUTE FUNCTION outboxd_notify()",
            )
            .await
            .expect("notify trigger");
    }
}

/// SQL committing `transactions` transactions of `rows` outbox rows each, all of aggregate type
/// `aggregate` (so on one topic). Each payload is `{"id": n, "note": "x…"}`, about 500 bytes, with
/// `n` counting rows from `first`; keys cycle over 1,000 aggregate ids. Run it as a simple query:
/// the procedure commits, which the extended protocol does not allow everywhere.
pub fn fill_sql(aggregate: &str, transactions: usize, rows: usize, first: u64) -> String {
    format!("CALL fill('{aggregate}', {transactions}, {rows}, {first})")
}

/// Writes a backlog with [`fill_sql`] (ids from 1); returns how long it took.
pub async fn fill(
    client: &tokio_postgres::Client,
    aggregate: &str,
    transactions: usize,
    rows: usize,
) -> Duration {
    let started = Instant::now();
    client
        .batch_execute(&fill_sql(aggregate, transactions, rows, 1))
        .await
        .expect("backlog");
    started.elapsed()
}

/// The server's current WAL position, as text.
pub async fn current_lsn(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("current lsn")
        .get(0)
}

/// The mean length of the outbox payloads' JSON text: the record size for the broker ceiling.
pub async fn payload_bytes(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT avg(length(payload::text))::int FROM outbox", &[])
        .await
        .expect("payload size")
        .get(0)
}

/// `pg_recvlogical` from `slot`'s start to `end` (an LSN as text), output discarded: how fast the
/// walsender itself can send the backlog.
pub fn pg_recvlogical(db: &TestDb, slot: &str, end: &str) -> Duration {
    let started = Instant::now();
    let status = Command::new(support::dev_env().pg_bin.join("pg_recvlogical"))
        .args([
            "-d",
            &db.url,
            "--slot",
            slot,
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
        ])
        .arg(format!("--endpos={end}"))
        .args(["-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={}", db.publication))
        .status()
        .expect("run pg_recvlogical");
    assert!(status.success(), "pg_recvlogical failed");
    started.elapsed()
}

/// Kafka's own `ProducerPerformance` tool, transactional (1 s transactions, `acks=all`, lz4), writing
/// `records` records of `record_bytes` to `topic` as fast as it can: how fast the broker takes
/// exactly-once writes. Returns its records/s.
pub fn producer_performance(topic: &str, records: usize, record_bytes: i32) -> f64 {
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/libs/*", kafka_home()))
        .args([
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
        ])
        .args(["--num-records", &records.to_string()])
        .args(["--record-size", &record_bytes.to_string()])
        .args(["--throughput", "-1", "--transactional-id"])
        .arg(format!("{topic}-perf"))
        .args(["--transaction-duration-ms", "1000", "--producer-props"])
        .arg(format!(
            "bootstrap.servers={}",
            support::dev_env().kafka_bootstrap
        ))
        .args(["acks=all", "compression.type=lz4"])
        .output()
        .expect("ProducerPerformance");
    let text = String::from_utf8_lossy(&out.stdout);
    // The summary line: "200000 records sent, 16882.0 records/sec (8.05 MB/sec), ...".
    text.lines()
        .last()
        .and_then(|line| line.split(" records/sec").next())
        .and_then(|head| head.rsplit(['(', ',']).next())
        .and_then(|n| n.trim().split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("unparsed ProducerPerformance output: {text}"))
}

/// Where the Kafka jars are: the dev environment's, else where `scripts/setup` caches them.
pub fn kafka_home() -> String {
    if let Ok(home) = std::env::var("OUTBOXD_DEV_KAFKA_HOME") {
        return home;
    }
    let out = Command::new("bash")
        .args(["-c", "source scripts/common.sh && echo $KAFKA_HOME"])
        .current_dir(support::repo_root())
        .output()
        .expect("common.sh");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A memory figure of process `pid` from `/proc/<pid>/status` in MiB (`field` is `VmRSS` for the
/// resident set now, `VmHWM` for its peak); `None` once the process is gone.
pub fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// The CPU time process `pid` has used so far, user and system, in seconds (`/proc/<pid>/stat`'s
/// `utime` and `stime`, in USER_HZ ticks, which Linux fixes at 100 a second); `None` once the
/// process is gone.
pub fn cpu_seconds(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis,
    // where `state` is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let mut next = || {
        fields
            .next()?
            .parse::<f64>()
            .ok()
            .map(|ticks| ticks / 100.0)
    };
    Some(CpuTime {
        user: next()?,
        system: next()?,
    })
}

/// CPU seconds, as [`cpu_seconds`] reads them; the default is a process' start.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// In user space.
    pub user: f64,
    /// In the kernel on the process' behalf.
    pub system: f64,
}

impl CpuTime {
    /// The CPU time spent between `earlier` and `self`, and what it comes to for `events`.
    pub fn since(self, earlier: CpuTime, events: usize) -> Value {
        let (user, system) = (self.user - earlier.user, self.system - earlier.system);
        json!({
            "user": user,
            "system": system,
            "events_per_cpu_s": events as f64 / (user + system),
            "cpu_s_per_million": (user + system) * 1e6 / events as f64,
        })
    }
}

/// A non-empty environment variable.
pub fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// `OUTBOXD_BENCH_SCALE`, or 1: the factor on every count (and on the steady workload's length),
/// 0.05 for a quick try.
pub fn scale() -> f64 {
    env("OUTBOXD_BENCH_SCALE").map_or(1.0, |v| v.parse().expect("a number"))
}

/// `n` times [`scale`], at least 1.
pub fn scaled(n: usize) -> usize {
    // Counts of at most a million, scaled: no truncation.
    #[allow(clippy::cast_possible_truncation)]
    let scaled = (n as f64 * scale()).round() as usize;
    scaled.max(1)
}

/// Writes `report` as JSON to the file `OUTBOXD_BENCH_OUT` names, or to stdout.
pub fn write_report(report: &Value) {
    let text = serde_json::to_string_pretty(report).expect("json");
    match env("OUTBOXD_BENCH_OUT") {
        Some(path) => std::fs::write(&path, text + "\n").expect("write results"),
        None => println!("{text}"),
    }
}

/// The machine and versions, with the load average before (`load_before`, from [`loadavg`]) and
/// now (others may be compiling). Variables `OUTBOXD_BENCH_META_<KEY>` land in it as `<key>`.
pub async fn environment(load_before: String) -> Value {
    let client = connect(&dev_env().pg_url).await;
    let postgres: String = client
        .query_one("SHOW server_version", &[])
        .await
        .expect("server_version")
        .get(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let mut environment = json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "memory_gib": memory_gib(),
        "postgres": postgres,
        "outboxd": env!("CARGO_PKG_VERSION"),
        "load_average_before": load_before,
        "load_average_after": loadavg(),
    });
    for (key, value) in std::env::vars() {
        if let Some(name) = key.strip_prefix("OUTBOXD_BENCH_META_") {
            environment[name.to_lowercase()] = json!(value);
        }
    }
    environment
}

/// MemTotal, in GiB.
fn memory_gib() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: f64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts the `outboxd` binary with `spec` the way a user runs it: every batch, producer and timing
/// setting at its default. For experiments (profiling a missed target), `OUTBOXD_BENCH_OUTBOXD_TOML`
/// is appended to its config file (sections included) and `OUTBOXD_BENCH_RUST_LOG` is its log
/// filter (`outboxd=debug` logs each Kafka transaction's size and timing; default `info`).
/// `OUTBOXD_BENCH_BINARY` runs another build instead of this checkout's (an A/B of two builds in
/// alternating runs).
pub fn start_outboxd(mut spec: RelaySpec) -> RelayProcess {
    spec.test_timings = false;
    spec.extra
        .push_str(&std::env::var("OUTBOXD_BENCH_OUTBOXD_TOML").unwrap_or_default());
    let log = std::env::var("OUTBOXD_BENCH_RUST_LOG").unwrap_or_else(|_| "info".into());
    let env = [("RUST_LOG", log.as_str())];
    match std::env::var_os("OUTBOXD_BENCH_BINARY") {
        Some(binary) => RelayProcess::start_program(Path::new(&binary), &spec, &env),
        None => RelayProcess::start_with_env(&spec, &env),
    }
}

/// Where `bench/run` unpacked Debezium Server (`OUTBOXD_BENCH_DEBEZIUM_HOME`), if it did.
pub fn debezium_home() -> Option<PathBuf> {
    std::env::var_os("OUTBOXD_BENCH_DEBEZIUM_HOME").map(PathBuf::from)
}

/// Starts Debezium Server on `db`'s publication and `slot` (created by it if missing) the way its
/// user starts it: its own `run.sh` with an `application.properties` of the connector keys of
/// RECIPES.md, plain JSON keys and values, the database's name as topic prefix, otherwise its
/// defaults; `workload` adds the keys that differ between benchmarks (snapshot mode, tables,
/// transforms).
pub fn start_debezium(db: &TestDb, slot: &str, workload: &str) -> DebeziumServer {
    let url = url::Url::parse(&db.url).expect("database URL");
    let bootstrap = &dev_env().kafka_bootstrap;
    let properties = format!(
        "debezium.sink.type=kafka
debezium.sink.kafka.producer.bootstrap.servers={bootstrap}
debezium.sink.kafka.producer.key.serializer=org.apache.kafka.common.serialization.StringSerializer
debezium.sink.kafka.producer.value.serializer=org.apache.kafka.common.serialization.StringSerializer
debezium.format.key=json
debezium.format.key.schemas.enable=false
debezium.format.value=json
debezium.format.value.schemas.enable=false
debezium.source.connector.class=io.debezium.connector.postgresql.PostgresConnector
debezium.source.offset.storage.file.filename={offsets}
debezium.source.database.hostname={host}
debezium.source.database.port={port}
debezium.source.database.user={user}
debezium.source.database.password=unused
debezium.source.database.dbname={dbname}
debezium.source.topic.prefix={dbname}
debezium.source.plugin.name=pgoutput
debezium.source.slot.name={slot}
debezium.source.publication.name={publication}
debezium.source.publication.autocreate.mode=disabled
{workload}quarkus.http.port=0
quarkus.log.console.json=false
",
        offsets = DebeziumServer::OFFSETS,
        host = url.host_str().expect("host"),
        port = url.port().unwrap_or(5432),
        user = url.username(),
        dbname = db.name,
        publication = db.publication,
    );
    DebeziumServer::start(
        &debezium_home().expect("OUTBOXD_BENCH_DEBEZIUM_HOME"),
        std::env::var_os("OUTBOXD_BENCH_JAVA_HOME")
            .map(PathBuf::from)
            .as_deref(),
        &properties,
    )
}

/// A relay's drain of `events` into `topic`: waits until a `read_committed` consumer has them all
/// and reports the time since `started` (the relay's process start, so its startup is included, as
/// a user restarting it on a backlog would see), the rate, and the peak RSS and CPU time of process
/// `pid` (startup included too).
/// Panics, naming `relay`, if the events do not all arrive within 15 minutes.
pub async fn drained(relay: &str, topic: &str, events: usize, started: Instant, pid: u32) -> Value {
    let received = {
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || count_records(&topic, events))
            .await
            .expect("consumer")
    };
    let elapsed = started.elapsed();
    let peak_rss = memory_mib(pid, "VmHWM");
    let cpu = cpu_seconds(pid);
    assert!(
        received >= events,
        "{relay}: {received} of {events} events delivered"
    );
    let mut figures = rate(events, elapsed);
    figures["peak_rss_mib"] = json!(peak_rss);
    figures["cpu"] = json!(cpu.map(|cpu| cpu.since(CpuTime::default(), events)));
    figures
}

/// `events` in `elapsed`: the seconds and events/s.
pub fn rate(events: usize, elapsed: Duration) -> Value {
    json!({
        "seconds": elapsed.as_secs_f64(),
        "events_per_s": events as f64 / elapsed.as_secs_f64(),
    })
}

/// Counts the committed records of `topic` until there are `events` (or 15 minutes pass).
pub fn count_records(topic: &str, events: usize) -> usize {
    let mut seen = 0;
    consume_topic_at(
        &dev_env().kafka_bootstrap,
        topic,
        Isolation::ReadCommitted,
        Duration::from_secs(900),
        |_| {
            seen += 1;
            seen >= events
        },
    );
    seen
}

/// A steady workload: single-row outbox transactions at a fixed rate.
#[derive(Debug, Clone, Copy)]
pub struct Steady {
    /// Events (= transactions) per second.
    pub rate: usize,
    /// Seconds measured, after a warm-up of [`WARM_UP`].
    pub seconds: u64,
}

/// Written at the same rate before the measured phase and not counted: a JVM's JIT, librdkafka's
/// connections and the walsender settle.
pub const WARM_UP: Duration = Duration::from_secs(5);
/// Events are committed in groups of this many every `1 / (rate / TICK_EVENTS)` s, each in its own
/// transaction over one of [`WRITERS`] connections.
const TICK_EVENTS: usize = 2;
const WRITERS: usize = 4;

/// Runs `steady` on the outbox of `db` ([`outbox_db`], events of aggregate type `aggregate`) while
/// a relay, process `pid`, publishes them to `topic`: each event's latency from its commit to its
/// receipt by a `read_committed` consumer, and the relay's memory meanwhile; given the relay's
/// metrics address, where the time goes ([`stages`]).
///
/// The commit time is when the writer's `COMMIT` returned (on loopback, within a fraction of a
/// millisecond after Postgres' own commit timestamp, which would need `track_commit_timestamp` and
/// a server restart); the receipt time is when the consumer's poll returned the record. Both are
/// read from one monotonic clock in this process. Each event's payload `id` joins the two. Event 0
/// is a probe: once it arrives the relay runs; then come the warm-up and the measured phase.
pub async fn steady_latency(
    steady: Steady,
    db: &TestDb,
    aggregate: &str,
    topic: &str,
    pid: u32,
    metrics: Option<&str>,
) -> Value {
    let warm_up = steady.rate * usize::try_from(WARM_UP.as_secs()).expect("seconds");
    let measured = steady.rate * usize::try_from(steady.seconds).expect("seconds");
    let total = 1 + warm_up + measured;
    let received = Arc::new(AtomicUsize::new(0));
    // The consumer gives up a minute after the last event was due, should some never arrive.
    let patience = Duration::from_secs(180 + 60 + steady.seconds) + WARM_UP;
    let consumer = {
        let (topic, received) = (topic.to_owned(), received.clone());
        tokio::task::spawn_blocking(move || receipts(&topic, total, &received, patience))
    };
    let client = db.client().await;
    client
        .batch_execute(&fill_sql(aggregate, 1, 1, 0))
        .await
        .expect("probe event");
    let ready_by = Instant::now() + Duration::from_secs(180);
    while received.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < ready_by, "no probe event in {topic}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let writers = writers(&db.url).await;
    write(&writers, aggregate, steady.rate, 1, warm_up).await;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_rss(pid, sampling.clone()));
    let before = metrics.map(stages::Scrape::take);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let commits = write(&writers, aggregate, steady.rate, 1 + warm_up, measured).await;
    let wrote_for = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let rss = sampler.await.expect("sampler");
    let receipts = consumer.await.expect("consumer");
    let after = metrics.map(stages::Scrape::take);
    let cpu = cpu_before
        .zip(cpu_seconds(pid))
        .map(|(before, after)| after.since(before, measured));
    let peak_rss = memory_mib(pid, "VmHWM");

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
    json!({
        "events": measured,
        "received": latencies.len(),
        "achieved_rate": measured as f64 / wrote_for.as_secs_f64(),
        "latency_ms": {
            "p50": percentile(&latencies, 0.50),
            "p95": percentile(&latencies, 0.95),
            "p99": percentile(&latencies, 0.99),
            "max": percentile(&latencies, 1.0),
        },
        "steady_rss_mib": {
            "max": rss.iter().copied().fold(0.0, f64::max),
            "median": median(rss),
        },
        "peak_rss_mib": peak_rss,
        "cpu": cpu,
        "stages_ms": before.zip(after).map(|(b, a)| stages::stage_table(&b, &a)),
    })
}

/// The `p` quantile of `sorted` (nearest rank); `None` when it is empty.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    // A rank between 1 and the number of values: no truncation.
    #[allow(clippy::cast_possible_truncation)]
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
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
            let sql = fill_sql(aggregate, 1, 1, id as u64);
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
        samples.extend(memory_mib(pid, "VmRSS"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    samples
}

/// The median of `values` (the upper one of an even count); 0 when there are none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
