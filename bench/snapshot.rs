//! Snapshot benchmark (issue 17), in one run on the same Postgres, broker and table:
//!
//! - a table of 1,000,000 rows (~200 bytes each) read by the ceiling, `COPY (SELECT * FROM items
//!   ORDER BY id) TO STDOUT` (the server's own fastest way out, in the snapshot's key order, to a
//!   client that only counts bytes), measured before and after the relays (the better one counts);
//! - outboxd snapshotting it (`snapshot.mode = "initial"`, exactly once: each chunk's reads in the
//!   Kafka transaction of the checkpoint that moves the cursor), at each chunk size of
//!   `OUTBOXD_BENCH_SNAPSHOT_CHUNKS` (default `2048,8192`): rows/s from the process start until a
//!   `read_committed` consumer has every read, and the peak RSS, which follows the chunk size and
//!   not the table's;
//! - the other ceiling, Kafka's transactional `ProducerPerformance` writing as many records of the
//!   read events' mean size (the snapshot cannot outrun the broker any more than it can COPY);
//! - Debezium Server's initial snapshot of the same table (at-least-once, its defaults);
//! - W3 (2,000 single-row outbox transactions/s) through outboxd with no snapshot, then while it
//!   snapshots the table: the stream's latency during a snapshot.
//!
//! `bench/run snapshot` resolves Debezium Server, runs this and renders the table in
//! bench/README.md; run alone it benchmarks outboxd only. `OUTBOXD_BENCH_SCALE` shrinks the table
//! and W3, `OUTBOXD_BENCH_OUT` names the JSON file (default: stdout).

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use common::{scaled, Steady};
use support::kafka::create_topic;
use support::postgres::TestDb;
use support::relay::RelaySpec;

/// W3's rate.
const W3_RATE: usize = 2_000;
/// W3's measured seconds (after the warm-up), unscaled: short enough to fall within the snapshot
/// it runs beside.
const W3_SECONDS: usize = 10;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = scaled(1_000_000);
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let load_before = common::loadavg();
    let chunks: Vec<usize> = common::env("OUTBOXD_BENCH_SNAPSHOT_CHUNKS")
        .unwrap_or_else(|| "2048,8192".into())
        .split(',')
        .map(|c| c.trim().parse().expect("chunk sizes"))
        .collect();

    let (db, client) = common::outbox_db("bench_snap").await;
    let fill = Instant::now();
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, customer bigint NOT NULL, status text NOT NULL,
                                 note text NOT NULL, created timestamptz NOT NULL);
             INSERT INTO items
               SELECT i, i % 10000, (ARRAY['new', 'paid', 'shipped'])[i % 3 + 1],
                      md5(i::text) || repeat('x', 100), '2026-11-30'::timestamptz + i * interval '1 s'
               FROM generate_series(1, {rows}) i;
             ALTER PUBLICATION {} ADD TABLE items;",
            db.publication
        ))
        .await
        .expect("the table");
    // A statement of its own: VACUUM cannot run in the implicit transaction of several.
    client
        .batch_execute("VACUUM ANALYZE items")
        .await
        .expect("vacuum");
    let fill = fill.elapsed();
    eprintln!(
        "[snapshot] {rows} rows written in {:.1} s",
        fill.as_secs_f64()
    );

    let copy_before = copy_ceiling(&client, rows).await;
    let mut outboxd = Vec::new();
    let mut producer = Value::Null;
    for &chunk in &chunks {
        let (figures, topic) = outboxd_snapshot(&db, rows, chunk).await;
        eprintln!("[snapshot] outboxd chunk_size {chunk}: {figures}");
        outboxd.push(figures);
        if producer.is_null() {
            producer = producer_ceiling(&db, &topic, rows).await;
        }
    }
    let debezium = if common::debezium_home().is_some() {
        let figures = debezium_snapshot(&db, rows).await;
        eprintln!("[snapshot] debezium: {figures}");
        figures
    } else {
        eprintln!("OUTBOXD_BENCH_DEBEZIUM_HOME is not set: Debezium Server is left out");
        Value::Null
    };
    let copy_after = copy_ceiling(&client, rows).await;

    let steady = Steady {
        rate: W3_RATE,
        seconds: scaled(W3_SECONDS) as u64,
    };
    let w3_alone = w3(&db, steady, rows, "never").await;
    eprintln!("[snapshot] W3 alone: {w3_alone}");
    let w3_during = w3(&db, steady, rows, "initial").await;
    eprintln!("[snapshot] W3 during a snapshot: {w3_during}");

    common::write_report(&json!({
        "benchmark": "snapshot",
        "started_at": started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "duration_seconds": started.elapsed().as_secs_f64(),
        "scale": common::scale(),
        "environment": common::environment(load_before).await,
        "rows": rows,
        "table_bytes": table_bytes(&client).await,
        "fill_seconds": fill.as_secs_f64(),
        "copy": [copy_before, copy_after],
        "kafka_producer_performance": producer,
        "outboxd": outboxd,
        "debezium": debezium,
        "w3_alone": w3_alone,
        "w3_during_snapshot": w3_during,
    }));
}

/// The ceiling: `COPY (SELECT * FROM items ORDER BY id) TO STDOUT`, every byte received.
async fn copy_ceiling(client: &tokio_postgres::Client, rows: usize) -> Value {
    let started = Instant::now();
    let stream = client
        .copy_out("COPY (SELECT * FROM items ORDER BY id) TO STDOUT")
        .await
        .expect("COPY");
    let mut stream = std::pin::pin!(stream);
    let mut bytes = 0;
    while let Some(data) = stream.next().await {
        bytes += data.expect("COPY data").len();
    }
    let mut figures = common::rate(rows, started.elapsed());
    figures["bytes"] = json!(bytes);
    eprintln!("[snapshot] COPY: {figures}");
    figures
}

/// The other ceiling: Kafka's transactional producer writing as many records as the snapshot's,
/// of the mean size (key and value) of the first of `topic`'s (outboxd's read events).
async fn producer_ceiling(db: &TestDb, topic: &str, rows: usize) -> Value {
    const SAMPLE: usize = 10_000;
    let (mut count, mut bytes) = (0, 0);
    support::kafka::consume_topic_at(
        &support::dev_env().kafka_bootstrap,
        topic,
        support::kafka::Isolation::ReadCommitted,
        Duration::from_secs(120),
        |record| {
            use rdkafka::Message;
            count += 1;
            bytes += record.key().map_or(0, <[u8]>::len) + record.payload().map_or(0, <[u8]>::len);
            count >= SAMPLE.min(rows)
        },
    );
    let record_bytes = i32::try_from(bytes / count.max(1)).expect("record size");
    let perf_topic = db.topic("perf");
    create_topic(&perf_topic, 3).await;
    let records_per_s = common::producer_performance(&perf_topic, rows, record_bytes);
    eprintln!(
        "[snapshot] ProducerPerformance {records_per_s:.0} records/s of {record_bytes} bytes"
    );
    json!({ "events_per_s": records_per_s, "record_bytes": record_bytes })
}

/// `items`' size on disk, its indexes included.
async fn table_bytes(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT pg_total_relation_size('items')", &[])
        .await
        .expect("table size")
        .get(0)
}

/// A relay of its own over `db` (name, slot, offsets topic and topic prefix `label`), capturing
/// `items` with `[snapshot]` `snapshot` and the outbox at its defaults; the topic of `items`,
/// created with 3 partitions as for Debezium.
async fn relay_spec(db: &TestDb, label: &str, snapshot: &str) -> (RelaySpec, String) {
    let mut spec = RelaySpec::for_db(db);
    spec.name = format!("{}_{label}", db.name);
    spec.slot = format!("{}_{label}", db.slot);
    spec.offsets_topic = db.topic(&format!("offsets_{label}"));
    spec.extra = format!(
        "[cdc]\ntopic_prefix = \"{}\"\n[snapshot]\n{snapshot}\n",
        spec.name
    );
    let topic = format!("{}.public.items", spec.name);
    create_topic(&topic, 3).await;
    (spec, topic)
}

/// outboxd's first start with `snapshot.mode = "initial"` and `chunk_size = chunk`: from its
/// process start until a `read_committed` consumer has all `rows` reads; and the reads' topic.
async fn outboxd_snapshot(db: &TestDb, rows: usize, chunk: usize) -> (Value, String) {
    let (spec, topic) = relay_spec(
        db,
        &format!("chunk{chunk}"),
        &format!("mode = \"initial\"\nchunk_size = {chunk}"),
    )
    .await;
    let started = Instant::now();
    let mut relay = common::start_outboxd(spec);
    let mut figures = common::drained("outboxd", &topic, rows, started, relay.pid()).await;
    relay.signal_and_wait("TERM", Duration::from_secs(30));
    figures["chunk_size"] = json!(chunk);
    (figures, topic)
}

/// Debezium Server's `snapshot.mode=initial` of `items`, on a slot it creates: from its process
/// start until a consumer has all `rows` reads.
async fn debezium_snapshot(db: &TestDb, rows: usize) -> Value {
    let topic = format!("{}.public.items", db.name);
    create_topic(&topic, 3).await;
    let started = Instant::now();
    let server = common::start_debezium(
        db,
        &format!("{}_debezium", db.slot),
        "debezium.source.snapshot.mode=initial\ndebezium.source.table.include.list=public.items\n",
    );
    let figures = common::drained("debezium", &topic, rows, started, server.pid()).await;
    drop(server);
    figures
}

/// W3 on the outbox through a new outboxd relay with `snapshot.mode = snapshot`: with `initial`
/// it snapshots `items` meanwhile. Says when the snapshot completed and when W3 ended, both from
/// the relay's start, so that the reader sees that W3 ran within the snapshot.
async fn w3(db: &TestDb, steady: Steady, rows: usize, snapshot: &str) -> Value {
    let label = format!("w3_{snapshot}");
    let (spec, items_topic) = relay_spec(db, &label, &format!("mode = \"{snapshot}\"")).await;
    let aggregate = format!("{}_{label}", db.name);
    let topic = format!("outbox.event.{aggregate}");
    create_topic(&topic, 3).await;
    let started = Instant::now();
    let mut relay = common::start_outboxd(spec);
    // Its slot exists from here on: W3's first event (the probe) is not older than the slot.
    relay.wait_streaming(Duration::from_secs(120));
    let snapshot_done = (snapshot != "never").then(|| {
        tokio::task::spawn_blocking(move || {
            let read = common::count_records(&items_topic, rows);
            (read, started.elapsed())
        })
    });
    let metrics = relay.metrics_address(Duration::from_secs(30));
    let mut figures =
        common::steady_latency(steady, db, &aggregate, &topic, relay.pid(), Some(&metrics)).await;
    figures["w3_ended_after_s"] = json!(started.elapsed().as_secs_f64());
    figures["rate"] = json!(steady.rate);
    figures["seconds"] = json!(steady.seconds);
    if let Some(done) = snapshot_done {
        let (read, after) = done.await.expect("snapshot reads");
        assert!(
            read >= rows,
            "the snapshot beside W3 read {read} of {rows} rows"
        );
        figures["snapshot_complete_after_s"] = json!(after.as_secs_f64());
    }
    relay.signal_and_wait("TERM", Duration::from_secs(30));
    figures
}
