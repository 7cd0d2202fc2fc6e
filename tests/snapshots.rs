//! Snapshots while streaming, exactly once (`snapshot.mode = "initial"`), on real Postgres and
//! Kafka: a table snapshotted while a writer keeps updating, deleting and inserting its rows, with
//! and without SIGKILLs of the relay. What a `read_committed` consumer must see:
//! - every row present at the start and never touched by the writer: read exactly once;
//! - no key read twice, and no read of a key after a newer change of that key;
//! - for every key, the last record equals the row's final state (or is a tombstone).
//!
//! The row count is lean for CI; `OUTBOXD_SNAPSHOT_ROWS=1000000` (and `OUTBOXD_SNAPSHOT_KILLS=20`)
//! run the acceptance's size by hand.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::kafka::create_topic;
use support::postgres::TestDb;
use support::relay::{RelayProcess, RelaySpec};
use support::snapshot_topic::{spawn_writer, SnapshotTopic};

/// What the log says once the snapshot is complete.
const COMPLETE: &str = "snapshot complete; streaming goes on";
/// The `source.snapshot` markers of an initial snapshot's reads.
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

/// The scenario: `rows` rows, a writer running until the snapshot is complete, `kills` SIGKILLs of
/// the relay while it snapshots.
/// Returns how many SIGKILLs landed before the snapshot completed.
async fn snapshot_while_writing(prefix: &str, rows: i64, chunk: u64, kills: u64) -> u64 {
    let began = Instant::now();
    let db = TestDb::create(prefix).await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, v bigint NOT NULL);
             INSERT INTO items SELECT i, 0 FROM generate_series(1, {rows}) i;
             CREATE PUBLICATION {} FOR TABLE items;",
            db.publication
        ))
        .await
        .expect("schema");
    let topic = format!("{}.public.items", db.name);
    create_topic(&topic, 3).await;
    let mut spec = RelaySpec::for_db(&db);
    spec.extra = format!(
        "[outbox]\ntables = []\n[cdc]\ntopic_prefix = \"{}\"\n\
         [snapshot]\nmode = \"initial\"\nchunk_size = {chunk}\n",
        db.name
    );

    let stop = Arc::new(AtomicBool::new(false));
    let touched = Arc::new(Mutex::new(BTreeSet::new()));
    // Two writers, each id range of its own for the inserts, busy before the relay starts.
    let writers = [
        spawn_writer(&db, rows, 0, stop.clone(), touched.clone()),
        spawn_writer(&db, rows, 1, stop.clone(), touched.clone()),
    ];
    let mut relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    let mut logs = Vec::new();
    let complete = |logs: &[String], relay: &RelayProcess| {
        logs.iter().any(|log| log.contains(COMPLETE)) || relay.log_text().contains(COMPLETE)
    };
    let mut killed = 0;
    while killed < kills && !complete(&logs, &relay) {
        logs.push(relay.kill_at_random(700..2500).await);
        killed += 1;
        relay = RelayProcess::start(&spec);
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
    let state: HashMap<i64, i64> = client
        .query("SELECT id, v FROM items", &[])
        .await
        .expect("final state")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
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
        "snapshot of {rows} rows (chunk {chunk}) with {killed} SIGKILLs: complete after {:.1} s; \
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
    let killed = snapshot_while_writing("snap_kill", rows, 25, kills).await;
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
