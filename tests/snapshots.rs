//! Snapshots while streaming, exactly once (`snapshot.mode = "initial"`), on real Postgres and
//! Kafka: a table snapshotted while a writer keeps updating, deleting and inserting its rows, with
//! and without SIGKILLs of the relay. What a `read_committed` consumer must see:
//! - every row present at the start and never touched by the writer: read exactly once;
//! - no key read twice, and no read of a key after a newer change of that key;
//! - for every key, the last record equals the row's final state (or is a tombstone).
//!
//! The row count is lean for CI; `OUTBOXD_SNAPSHOT_ROWS=1000000` (with `OUTBOXD_SNAPSHOT_KILLS=20`
//! for the SIGKILL test, `OUTBOXD_SNAPSHOT_PG_RESTARTS=n` for the Postgres restart test) run the
//! acceptance's size by hand.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::kafka::create_topic;
use support::postgres::{PrivateCluster, TestDb};
use support::relay::{RelayProcess, RelaySpec};
use support::snapshot_topic::{spawn_writer, SnapshotTopic};

/// What the log says once the snapshot is complete.
const COMPLETE: &str = "snapshot complete; streaming goes on";

/// `source.snapshot` of an initial snapshot's reads.
const INITIAL: &[&str] = &[
    "first",
    "true",
    "last",
    "first_in_data_collection",
    "last_in_data_collection",
];

/// A number from the environment, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The chunk size for a snapshot of `rows` rows under SIGKILLs or restarts: about 800 chunks,
/// each its own Kafka transaction, whatever the size (25 rows for CI's 20,000; 1,250 for the
/// acceptance's million, which at 25 would take 40,000 transactions).
fn disturbed_chunk(rows: i64) -> u64 {
    (rows as u64 / 800).clamp(25, 2048)
}

/// The rows of `items`, `v` by `id`.
async fn items(client: &tokio_postgres::Client) -> HashMap<i64, i64> {
    client
        .query("SELECT id, v FROM items", &[])
        .await
        .expect("the table's rows")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// What disturbs the relay while it snapshots.
enum Disturbance<'a> {
    /// Nothing.
    None,
    /// This many SIGKILLs of the relay, each restarted.
    Kills(u64),
    /// This many fast restarts of the cluster the relay reads.
    Restarts(&'a PrivateCluster, u64),
}

/// `items (id, v)` with `rows` rows and the relay's publication of it, in the database at `url`;
/// the relay's spec (with `[snapshot] mode` and `chunk_size`) and the table's topic.
async fn items_relay(
    url: &str,
    mut spec: RelaySpec,
    rows: i64,
    snapshot: &str,
) -> (RelaySpec, String) {
    support::postgres::connect(url)
        .await
        .batch_execute(&format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, v bigint NOT NULL);
             INSERT INTO items SELECT i, 0 FROM generate_series(1, {rows}) i;
             ANALYZE items;
             CREATE PUBLICATION {} FOR TABLE items;",
            spec.publication
        ))
        .await
        .expect("schema");
    let topic = format!("{}.public.items", spec.name);
    create_topic(&topic, 3).await;
    spec.extra = format!(
        "[outbox]\ntables = []\n[cdc]\ntopic_prefix = \"{}\"\n[snapshot]\n{snapshot}\n",
        spec.name
    );
    (spec, topic)
}

/// The scenario in a new database of the shared cluster: `rows` rows, a writer running until the
/// snapshot is complete, `kills` SIGKILLs of the relay while it snapshots.
/// Returns how many SIGKILLs landed before the snapshot completed.
async fn snapshot_while_writing(prefix: &str, rows: i64, chunk: u64, kills: u64) -> u64 {
    let db = TestDb::create(prefix).await;
    let disturbance = if kills > 0 {
        Disturbance::Kills(kills)
    } else {
        Disturbance::None
    };
    scenario(&db.url, RelaySpec::for_db(&db), rows, chunk, disturbance).await
}

/// The scenario on the database at `url`; returns how many disturbances landed before the
/// snapshot completed.
async fn scenario(
    url: &str,
    spec: RelaySpec,
    rows: i64,
    chunk: u64,
    disturbance: Disturbance<'_>,
) -> u64 {
    let began = Instant::now();
    let mode = format!("mode = \"initial\"\nchunk_size = {chunk}");
    let (spec, topic) = items_relay(url, spec, rows, &mode).await;

    let stop = Arc::new(AtomicBool::new(false));
    let touched = Arc::new(Mutex::new(BTreeSet::new()));
    // Two writers, each id range of its own for the inserts, busy before the relay starts.
    let writers = [
        spawn_writer(url, rows, 0, stop.clone(), touched.clone()),
        spawn_writer(url, rows, 1, stop.clone(), touched.clone()),
    ];
    let mut relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    let mut logs = Vec::new();
    let complete = |logs: &[String], relay: &RelayProcess| {
        logs.iter().any(|log| log.contains(COMPLETE)) || relay.log_text().contains(COMPLETE)
    };
    let mut killed = 0;
    match disturbance {
        Disturbance::None => {}
        Disturbance::Kills(kills) => {
            while killed < kills && !complete(&logs, &relay) {
                logs.push(relay.kill_at_random(700..2500).await);
                killed += 1;
                relay = RelayProcess::start(&spec);
            }
        }
        Disturbance::Restarts(cluster, restarts) => {
            while killed < restarts && !complete(&logs, &relay) {
                tokio::time::sleep(Duration::from_millis(rand::random_range(700..2500))).await;
                cluster.restart();
                killed += 1;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30 + rows as u64 / 1000);
    while !complete(&logs, &relay) {
        assert!(
            Instant::now() < deadline,
            "the snapshot did not complete:\n{}",
            relay.log_text()
        );
        assert!(
            relay.wait_exit(Duration::ZERO).is_none(),
            "the relay died:\n{}",
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let snapshot_done = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut transactions = 0;
    for writer in writers {
        transactions += writer.await.expect("writer");
    }
    let touched = touched.lock().expect("touched").clone();

    // The final state, and the topic caught up with it.
    // A new connection: the cluster may have restarted.
    let state = items(&support::postgres::connect(url).await).await;
    let mut topic_keys = SnapshotTopic::new(&topic, 3, INITIAL);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mismatch = |topic: &SnapshotTopic| {
        let all: BTreeSet<i64> = (1..=rows).chain(touched.iter().copied()).collect();
        all.into_iter().find(|id| {
            let last = topic.keys.get(id).and_then(|h| h.last);
            last != state.get(id).copied()
        })
    };
    loop {
        topic_keys.catch_up();
        let Some(id) = mismatch(&topic_keys) else {
            break;
        };
        assert!(
            Instant::now() < deadline,
            "key {id}: the topic ends with {:?}, the table holds {:?}:\n{}",
            topic_keys.keys.get(&id),
            state.get(&id),
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    assert!(
        topic_keys.bad_marks.is_empty(),
        "{:?}",
        &topic_keys.bad_marks[..1]
    );
    let mut untouched = 0;
    for id in 1..=rows {
        let history = topic_keys.keys.get(&id);
        if !touched.contains(&id) {
            untouched += 1;
            let history =
                history.unwrap_or_else(|| panic!("row {id} never touched is not in the topic"));
            assert_eq!(
                (history.reads, history.changed),
                (1, false),
                "row {id}, never touched, is read exactly once and nothing else"
            );
        }
    }
    for (id, history) in &topic_keys.keys {
        assert!(history.reads <= 1, "key {id} read {} times", history.reads);
        assert!(
            !history.read_after_newer_change,
            "key {id} read after a newer change of it"
        );
    }
    let reads: u32 = topic_keys.keys.values().map(|h| h.reads).sum();
    eprintln!(
        "snapshot of {rows} rows (chunk {chunk}) with {killed} disturbances: complete after {:.1} s; \
         {transactions} writer transactions touched {} keys; {untouched} untouched rows each \
         read once; {reads} reads, {} records; whole test {:.1} s",
        snapshot_done.as_secs_f64(),
        touched.len(),
        topic_keys.records,
        began.elapsed().as_secs_f64()
    );
    assert!(
        touched.len() > 100,
        "the writer ran during the snapshot ({} keys)",
        touched.len()
    );
    killed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_snapshotted_while_written_is_read_exactly_once_and_never_over_a_newer_change() {
    let rows = env_or("OUTBOXD_SNAPSHOT_ROWS", 10_000) as i64;
    snapshot_while_writing("snap_write", rows, 200, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_during_a_snapshot_repeat_no_read_and_lose_nothing() {
    let rows = env_or("OUTBOXD_SNAPSHOT_ROWS", 20_000) as i64;
    let kills = env_or("OUTBOXD_SNAPSHOT_KILLS", 5);
    // Small chunks: the snapshot outlives several relays.
    let killed = snapshot_while_writing("snap_kill", rows, disturbed_chunk(rows), kills).await;
    assert!(
        killed >= kills.min(3),
        "only {killed} SIGKILLs landed before the snapshot completed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_without_a_primary_key_is_refused_by_name() {
    let db = TestDb::create("snap_nokey").await;
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE nokey (v text); INSERT INTO nokey VALUES ('a');
             CREATE PUBLICATION {} FOR TABLE nokey;",
            db.publication
        ))
        .await
        .expect("schema");
    let mut spec = RelaySpec::for_db(&db);
    spec.extra = "[outbox]\ntables = []\n[snapshot]\nmode = \"initial\"\n".into();
    let mut relay = RelayProcess::start(&spec);
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .expect("the relay stops");
    assert_eq!(status.code(), Some(1), "{}", relay.log_text());
    assert!(
        relay
            .log_text()
            .contains("table public.nokey cannot be snapshotted: it has no primary key"),
        "{}",
        relay.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarts_during_a_snapshot_repeat_no_read_and_lose_nothing() {
    let rows = env_or("OUTBOXD_SNAPSHOT_ROWS", 20_000) as i64;
    let restarts = env_or("OUTBOXD_SNAPSHOT_PG_RESTARTS", 2);
    let cluster = PrivateCluster::start(
        "wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4",
        &["host all all 127.0.0.1/32 trust"],
    );
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let spec = RelaySpec::for_url("snap_pg_restart", &url);
    let restarted = scenario(
        &url,
        spec,
        rows,
        disturbed_chunk(rows),
        Disturbance::Restarts(&cluster, restarts),
    )
    .await;
    assert!(
        restarted >= 1,
        "no Postgres restart landed before the snapshot completed"
    );
}

/// The text of the `when_needed` line, as the JSON log escapes it.
const SNAPSHOTTING_AGAIN: &str = "snapshot.mode = \\\"when_needed\\\": the slot streams from";

/// The slot dropped while the relay is down, with changes written meanwhile: with
/// `snapshot.mode = "when_needed"` the relay says what happened in one line, recreates the slot,
/// snapshots the table again and streams on; the topic's last record of every key is the row.
#[tokio::test(flavor = "multi_thread")]
async fn when_needed_snapshots_again_after_the_slot_was_dropped() {
    let db = TestDb::create("snap_needed").await;
    let (spec, topic) = items_relay(
        &db.url,
        RelaySpec::for_db(&db),
        2000,
        "mode = \"when_needed\"\nchunk_size = 200",
    )
    .await;
    let client = db.client().await;
    let mut topic_keys = SnapshotTopic::new(&topic, 3, INITIAL);
    let mut relay = RelayProcess::start(&spec);
    support::wait::wait_until(
        Duration::from_secs(60),
        || async { relay.log_text().contains(COMPLETE) },
        || format!("the first snapshot completes:\n{}", relay.log_text()),
    )
    .await;
    client
        .batch_execute(
            "UPDATE items SET v = v + 1 WHERE id <= 100; DELETE FROM items WHERE id = 2000",
        )
        .await
        .expect("streamed changes");
    support::wait::wait_until(
        Duration::from_secs(60),
        || {
            topic_keys.catch_up();
            let deleted = topic_keys.keys.get(&2000).is_some_and(|h| h.deleted);
            async move { deleted }
        },
        || "the streamed changes reach the topic".into(),
    )
    .await;
    relay.kill();
    // The killed relay's walsender notices the closed connection a moment later: until then the
    // slot is active and cannot be dropped.
    support::wait::wait_until(
        Duration::from_secs(60),
        || {
            let client = &client;
            let slot = spec.slot.clone();
            async move {
                client
                    .query_opt(
                        "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active",
                        &[&slot],
                    )
                    .await
                    .expect("slot query")
                    .is_none()
            }
        },
        || "the killed relay's slot is released".into(),
    )
    .await;
    client
        .batch_execute(&format!(
            "SELECT pg_drop_replication_slot('{}');
             UPDATE items SET v = v + 10 WHERE id % 7 = 0;
             INSERT INTO items SELECT i, 5 FROM generate_series(3001, 3100) i;
             DELETE FROM items WHERE id = 1999;",
            spec.slot
        ))
        .await
        .expect("changes while the slot is gone");
    let relay = RelayProcess::start(&spec);
    support::wait::wait_until(
        Duration::from_secs(60),
        || async { relay.log_text().contains(COMPLETE) },
        || format!("the second snapshot completes:\n{}", relay.log_text()),
    )
    .await;
    let lines: Vec<String> = relay
        .log_text()
        .lines()
        .filter(|line| line.contains(SNAPSHOTTING_AGAIN))
        .map(str::to_owned)
        .collect();
    assert!(
        lines.len() == 1
            && lines[0].contains("does not exist (it was dropped)")
            && lines[0].contains("OUTBOX EVENTS WRITTEN MEANWHILE ARE LOST"),
        "one line says what happened and what it costs:\n{}",
        relay.log_text()
    );
    client
        .batch_execute("UPDATE items SET v = v + 100 WHERE id <= 10")
        .await
        .expect("changes after the recovery");

    let state = items(&client).await;
    support::wait::wait_until(
        Duration::from_secs(60),
        || {
            topic_keys.catch_up();
            let ends_with_the_table = state
                .iter()
                .all(|(id, v)| topic_keys.keys.get(id).and_then(|h| h.last) == Some(*v));
            async move { ends_with_the_table }
        },
        || "the topic's last record of every key is the table's row".into(),
    )
    .await;
    assert!(
        topic_keys.bad_marks.is_empty(),
        "{:?}",
        topic_keys.bad_marks
    );
    for (id, history) in &topic_keys.keys {
        assert!(history.reads <= 2, "key {id} read {} times", history.reads);
        assert!(!history.read_after_newer_change, "key {id}");
    }
    // Deleted while streaming: a tombstone. Deleted while the slot was gone: the snapshot reads
    // only the rows that exist, so no tombstone (the log line says so).
    assert_eq!(topic_keys.keys[&2000].last, None, "deleted while streaming");
    assert_eq!(topic_keys.keys[&2000].reads, 1);
    assert_eq!(topic_keys.keys[&1].reads, 2, "read by both snapshots");
    assert_eq!(
        topic_keys.keys[&3001].reads, 1,
        "inserted in the gap, read once"
    );
}

/// `snapshot.mode = "initial_only"`: the relay snapshots, then stops with exit status 0. Stopped
/// mid-snapshot, `status` shows the snapshot's table, rows, cursor and ETA, and the metrics its
/// progress; started again it finishes the snapshot, reading no row twice, and stops; started
/// once more it has nothing to do and stops at once.
#[tokio::test(flavor = "multi_thread")]
async fn initial_only_snapshots_then_stops_and_status_shows_the_progress() {
    let rows = 600;
    let db = TestDb::create("snap_only").await;
    let (spec, topic) = items_relay(
        &db.url,
        RelaySpec::for_db(&db),
        rows,
        "mode = \"initial_only\"\nchunk_size = 10",
    )
    .await;
    // 60 chunks of 100 ms at least: the relay is stopped in the middle, once reads committed.
    let paced = [("FAILPOINTS", "before-snapshot-read=sleep(100)")];
    let mut relay = RelayProcess::start_with_env(&spec, &paced);
    let address = relay.metrics_address(Duration::from_secs(60));
    let metrics =
        || support::http::http_get(&address, "/metrics").map_or_else(String::new, |m| m.1);
    let sample = |metrics: &str, series| support::http::sample(metrics, series);
    support::wait::wait_until(
        Duration::from_secs(60),
        || {
            let read = sample(&metrics(), "outboxd_snapshot_rows_total").unwrap_or(0.0);
            async move { read > 0.0 }
        },
        || format!("reads committed:\n{}", relay.log_text()),
    )
    .await;
    let metrics = metrics();
    assert_eq!(
        sample(&metrics, "outboxd_snapshot_running"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "outboxd_snapshot_estimated_rows"),
        Some(rows as f64),
        "{metrics}"
    );
    let read = sample(&metrics, "outboxd_snapshot_rows_total").expect("rows counted");
    assert!(
        sample(&metrics, "outboxd_snapshot_progress_rows") >= Some(read),
        "{metrics}"
    );
    // Stopped, not killed: `status` reads the checkpoint up to the offsets topic's end, which
    // an open transaction of a killed relay holds back until it times out.
    let stopped = relay.signal_and_wait("TERM", Duration::from_secs(30));
    assert!(stopped.is_some_and(|s| s.success()), "{}", relay.log_text());

    let output = support::relay::outboxd(&spec, &["status", "--json"], &[]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    let snapshot = &status["snapshot"];
    assert_eq!(snapshot["table"], "public.items", "{status}");
    assert_eq!(
        (
            snapshot["table_number"].as_u64(),
            snapshot["tables"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        snapshot["estimated_rows"].as_u64(),
        Some(rows as u64),
        "{status}"
    );
    let done = snapshot["rows"].as_u64().expect("rows");
    assert!(done > 0 && done < rows as u64, "{status}");
    // Chunks that follow one another share a Kafka transaction (one checkpoint record each, the
    // slot's first included): not one transaction per chunk of 10 rows.
    let transactions = support::kafka::read_to_end(&spec.offsets_topic)
        .iter()
        .filter(|r| rdkafka::Message::key(*r) == Some(spec.name.as_bytes()))
        .count() as u64;
    assert!(
        transactions * 2 <= done / 10,
        "{transactions} Kafka transactions for {} chunks",
        done / 10
    );
    assert_eq!(
        snapshot["after"][0].as_str(),
        Some(done.to_string().as_str()),
        "{status}"
    );
    assert!(snapshot["eta_seconds"].is_u64(), "{status}");
    let text = support::relay::outboxd(&spec, &["status"], &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "table public.items (1 of 1), {done} rows read, cursor after key ({done}), of about {rows} rows, ETA"
        )),
        "{text}"
    );

    let mut relay = RelayProcess::start(&spec);
    let status = relay.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        relay.log_text()
    );
    let stopping = "stopping without streaming on";
    assert!(relay.log_text().contains(stopping), "{}", relay.log_text());
    let mut topic_keys = SnapshotTopic::new(&topic, 3, INITIAL);
    topic_keys.catch_up();
    assert_eq!(topic_keys.records, rows as u64);
    assert!((1..=rows).all(|id| topic_keys.keys.get(&id).is_some_and(|h| h.reads == 1)));
    let slot = db
        .client()
        .await
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&spec.slot],
        )
        .await
        .expect("slot");
    assert_eq!(slot.len(), 1, "the slot stays");

    let mut again = RelayProcess::start(&spec);
    let status = again.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        again.log_text()
    );
    assert!(again.log_text().contains(stopping), "{}", again.log_text());
    topic_keys.catch_up();
    assert_eq!(topic_keys.records, rows as u64, "nothing published again");
}

/// A stored generated column, which pgoutput does not send (before PostgreSQL 18, and on 18
/// unless the publication says `publish_generated_columns = stored`): the snapshot's reads,
/// initial and incremental, leave it out like the change events (before: `SELECT *` read it).
#[tokio::test(flavor = "multi_thread")]
async fn reads_carry_the_columns_of_the_change_events_without_a_generated_column() {
    let db = TestDb::create("snap_generated").await;
    let events = support::published_columns::read_update_read(
        &mut RelaySpec::for_db(&db),
        "CREATE TABLE gen (id int PRIMARY KEY, a int,
           doubled int GENERATED ALWAYS AS (a * 2) STORED)",
        "",
    )
    .await;
    let after = |a| serde_json::json!({"id": 1, "a": a});
    assert_eq!(
        events,
        [
            ("r".to_owned(), after(5)),
            ("u".to_owned(), after(6)),
            ("r".to_owned(), after(6)),
        ]
    );
}
