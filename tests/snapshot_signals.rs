//! On-demand (incremental) snapshots started, paused, resumed and stopped by signals while the
//! relay streams, on real Postgres and Kafka: Debezium's signal table, the `outboxd.signal`
//! logical message and `outboxd snapshot` on the command line. What a `read_committed` consumer
//! must see: every row the snapshot reads (and the writer never touched) read exactly once with
//! `source.snapshot = "incremental"`, no read of a key after a newer change of it, the last record
//! of every key equal to the row's final state, also across SIGKILLs of the relay; a hostile
//! signal refused by name while the stream goes on.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::kafka::create_topic;
use support::postgres::TestDb;
use support::relay::{outboxd, RelayProcess, RelaySpec};
use support::snapshot_topic::{spawn_writer, SnapshotTopic};

/// What the log says once a snapshot is complete.
const COMPLETE: &str = "snapshot complete; streaming goes on";
/// What the log says of a refused signal.
const REFUSED: &str = "snapshot signal refused; streaming goes on";
/// The only `source.snapshot` of an incremental snapshot's reads.
const INCREMENTAL: &[&str] = &["incremental"];

/// A database with `items` (`rows` rows, `color` blue for even ids), Debezium's signal table,
/// a table without a primary key and an outbox table, all published; a relay spec streaming
/// it (no initial snapshot) with `chunk` rows per read and the signal table configured.
async fn setup(prefix: &str, rows: i64, chunk: u32) -> (TestDb, RelaySpec, String) {
    let db = TestDb::create(prefix).await;
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, v bigint NOT NULL,
                 color text NOT NULL DEFAULT 'red');
             INSERT INTO items SELECT i, 0, CASE WHEN i % 2 = 0 THEN 'blue' ELSE 'red' END
                 FROM generate_series(1, {rows}) i;
             CREATE TABLE debezium_signal (id varchar(64) PRIMARY KEY, type varchar(32) NOT NULL,
                 data varchar(2048));
             CREATE TABLE nokey (v text);
             {outbox}
             CREATE PUBLICATION {} FOR TABLE items, debezium_signal, nokey, outbox;",
            db.publication,
            outbox = include_str!("../migrations/0001_outbox.sql"),
        ))
        .await
        .expect("schema");
    let topic = format!("{}.public.items", db.name);
    create_topic(&topic, 3).await;
    let mut spec = RelaySpec::for_db(&db);
    spec.extra = format!(
        "[outbox]\ntables = [\"public.outbox\"]\n[cdc]\ntopic_prefix = \"{}\"\n\
         [snapshot]\nchunk_size = {chunk}\nsignal_table = \"public.debezium_signal\"\n",
        db.name
    );
    (db, spec, topic)
}

/// Inserts a signal row, as Debezium's documentation does.
async fn signal_row(db: &TestDb, kind: &str, data: &str) {
    db.client()
        .await
        .execute(
            "INSERT INTO debezium_signal VALUES ($1, $2, $3)",
            &[&support::unique_name("sig"), &kind, &data],
        )
        .await
        .expect("signal row");
}

/// Runs `outboxd snapshot <args>` with `spec`; its exit success and output.
fn cli(spec: &RelaySpec, args: &[&str]) -> (bool, String) {
    let mut all = vec!["snapshot"];
    all.extend_from_slice(args);
    let output = outboxd(spec, &all, &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Waits until the relay's log says `message` `count` times (summed over `earlier` logs of
/// killed relays too).
async fn wait_logged(relay: &mut RelayProcess, earlier: &[String], message: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen: usize = earlier
            .iter()
            .map(|log| log.matches(message).count())
            .sum::<usize>()
            + relay.log_text().matches(message).count();
        if seen >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {count} × {message:?}:\n{}",
            relay.log_text()
        );
        assert!(
            relay.wait_exit(Duration::ZERO).is_none(),
            "the relay died:\n{}",
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How a scenario sends its `execute-snapshot`.
enum Via {
    /// A row in the signal table.
    Table,
    /// `outboxd snapshot public.items [--filter …]` (a logical message).
    Cli(Option<&'static str>),
}

/// `rows` rows, two writers running from before the signal until the snapshot is complete,
/// `kills` SIGKILLs of the relay during the snapshot. `selected` says which ids the snapshot
/// reads (its filter).
async fn snapshot_while_writing(
    prefix: &str,
    rows: i64,
    chunk: u32,
    kills: u32,
    via: Via,
    selected: fn(i64) -> bool,
) {
    let began = Instant::now();
    let (db, spec, topic) = setup(prefix, rows, chunk).await;
    let mut relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    // Writing once the slot exists: a change before it would reach no topic, and a filtered
    // snapshot would not read it either.
    let stop = Arc::new(AtomicBool::new(false));
    let touched = Arc::new(Mutex::new(BTreeSet::new()));
    let writers = [
        spawn_writer(&db.url, rows, 0, stop.clone(), touched.clone()),
        spawn_writer(&db.url, rows, 1, stop.clone(), touched.clone()),
    ];
    match via {
        Via::Table => {
            signal_row(
                &db,
                "execute-snapshot",
                r#"{"data-collections": ["public.items"], "type": "incremental"}"#,
            )
            .await;
        }
        Via::Cli(filter) => {
            let mut args = vec!["public.items"];
            if let Some(filter) = filter {
                args.extend(["--filter", filter]);
            }
            let (sent, output) = cli(&spec, &args);
            assert!(sent, "outboxd snapshot: {output}");
        }
    }
    let mut logs = Vec::new();
    let mut killed = 0;
    let complete = |logs: &[String], relay: &RelayProcess| {
        logs.iter().any(|log| log.contains(COMPLETE)) || relay.log_text().contains(COMPLETE)
    };
    while killed < kills && !complete(&logs, &relay) {
        logs.push(relay.kill_at_random(300..1200).await);
        killed += 1;
        relay = RelayProcess::start(&spec);
    }
    wait_logged(&mut relay, &logs, COMPLETE, 1).await;
    let snapshot_done = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let touched = touched.lock().expect("touched").clone();
    assert!(
        touched.len() > 20,
        "the writers ran ({} keys)",
        touched.len()
    );

    let state: HashMap<i64, i64> = db
        .client()
        .await
        .query("SELECT id, v FROM items", &[])
        .await
        .expect("final state")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut consumer = SnapshotTopic::new(&topic, 3, INCREMENTAL);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        consumer.catch_up();
        // Every key the topic has and every row now: the last record is the row's state.
        let ids: BTreeSet<i64> = consumer.keys.keys().chain(state.keys()).copied().collect();
        let mismatch = ids.into_iter().find(|id| {
            consumer.keys.get(id).and_then(|h| h.last) != state.get(id).copied()
                && (touched.contains(id) || selected(*id))
        });
        let Some(id) = mismatch else { break };
        assert!(
            Instant::now() < deadline,
            "key {id}: the topic ends with {:?}, the table holds {:?}:\n{}",
            consumer.keys.get(&id),
            state.get(&id),
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        consumer.bad_marks.is_empty(),
        "{:?}",
        &consumer.bad_marks[..1]
    );
    let mut expected_reads = 0;
    for id in 1..=rows {
        let history = consumer.keys.get(&id);
        if touched.contains(&id) {
            continue;
        }
        let reads = history.map_or(0, |h| h.reads);
        if selected(id) {
            expected_reads += 1;
            assert_eq!(reads, 1, "row {id}, never touched, is read exactly once");
            assert!(!history.is_some_and(|h| h.changed), "row {id}: no change");
        } else {
            assert_eq!(reads, 0, "row {id} is not selected by the filter");
        }
    }
    for (id, history) in &consumer.keys {
        assert!(history.reads <= 1, "key {id} read {} times", history.reads);
        assert!(
            !history.read_after_newer_change,
            "key {id} read after a newer change of it"
        );
        if history.reads > 0 {
            assert!(
                selected(*id),
                "key {id} read though the filter leaves it out"
            );
        }
    }
    eprintln!(
        "incremental snapshot of {rows} rows (chunk {chunk}) with {killed} SIGKILLs: complete \
         after {:.1} s; {} keys touched; {expected_reads} untouched rows read once; {} reads; \
         whole test {:.1} s",
        snapshot_done.as_secs_f64(),
        touched.len(),
        consumer.reads(),
        began.elapsed().as_secs_f64()
    );
    assert!(killed >= kills.min(2), "only {killed} SIGKILLs landed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_row_snapshots_a_table_while_it_is_written_each_row_once() {
    snapshot_while_writing("sig_table", 3000, 100, 0, Via::Table, |_| true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_snapshots_the_rows_a_filter_lets_through() {
    snapshot_while_writing(
        "sig_filter",
        3000,
        100,
        0,
        Via::Cli(Some(
            "color = 'blue' AND (id <= 1000 OR id IN (2002, 2004))",
        )),
        |id| id % 2 == 0 && (id <= 1000 || id == 2002 || id == 2004),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_during_an_incremental_snapshot_repeat_no_read() {
    snapshot_while_writing("sig_kill", 6000, 20, 3, Via::Cli(None), |_| true).await;
}

/// Starts a snapshot of `items` and pauses it in one transaction: the pause takes effect before
/// the first read (reads start only between transactions).
async fn start_paused(db: &TestDb) {
    db.client()
        .await
        .batch_execute(
            "BEGIN;
             INSERT INTO debezium_signal VALUES (gen_random_uuid()::text, 'execute-snapshot',
                 '{\"data-collections\": [\"public.items\"]}');
             INSERT INTO debezium_signal VALUES (gen_random_uuid()::text, 'pause-snapshot', NULL);
             COMMIT;",
        )
        .await
        .expect("signals");
}

/// Updates `items` row `id` to `v` and waits until the change is in the topic: the stream flows.
async fn change_flows(db: &TestDb, consumer: &mut SnapshotTopic, id: i64, v: i64) {
    db.client()
        .await
        .execute("UPDATE items SET v = $2 WHERE id = $1", &[&id, &v])
        .await
        .expect("update");
    let deadline = Instant::now() + Duration::from_secs(30);
    consumer.catch_up();
    while consumer.keys.get(&id).and_then(|h| h.last) != Some(v) {
        assert!(
            Instant::now() < deadline,
            "the change of row {id} did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        consumer.catch_up();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_pauses_resumes_and_stops_by_signal_while_the_stream_flows() {
    let rows = 2000;
    let (db, spec, topic) = setup("sig_pause", rows, 50).await;
    let mut relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    let mut consumer = SnapshotTopic::new(&topic, 3, INCREMENTAL);

    // Paused: no read, while changes flow.
    start_paused(&db).await;
    wait_logged(&mut relay, &[], "snapshot paused", 1).await;
    change_flows(&db, &mut consumer, rows, 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    consumer.catch_up();
    assert_eq!(consumer.reads(), 0, "no read while paused");

    // Resumed from the command line, it completes: every row once.
    let (sent, output) = cli(&spec, &["--resume"]);
    assert!(sent, "{output}");
    wait_logged(&mut relay, &[], COMPLETE, 1).await;
    // The log says so at the last chunk's watermark, before its Kafka commit.
    let all = u32::try_from(rows).expect("rows");
    let deadline = Instant::now() + Duration::from_secs(30);
    consumer.catch_up();
    while consumer.reads() < all {
        assert!(Instant::now() < deadline, "{} reads", consumer.reads());
        tokio::time::sleep(Duration::from_millis(200)).await;
        consumer.catch_up();
    }
    for id in 1..=rows {
        assert_eq!(consumer.keys.get(&id).map(|h| h.reads), Some(1), "row {id}");
    }
    assert!(consumer.keys.values().all(|h| !h.read_after_newer_change));

    // Stopped while paused: resuming finds nothing to resume, and nothing is read.
    start_paused(&db).await;
    wait_logged(&mut relay, &[], "snapshot paused", 2).await;
    let (sent, output) = cli(&spec, &["--stop"]);
    assert!(sent, "{output}");
    wait_logged(&mut relay, &[], "snapshot stopped by a signal", 1).await;
    assert!(cli(&spec, &["--resume"]).0);
    wait_logged(&mut relay, &[], REFUSED, 1).await;
    assert!(relay
        .log_text()
        .contains("no snapshot is running to pause or resume"));
    change_flows(&db, &mut consumer, rows, 200).await;
    assert_eq!(consumer.reads(), all, "no read after the stop");
    assert_eq!(relay.log_text().matches(COMPLETE).count(), 1);
    assert!(
        consumer.bad_marks.is_empty(),
        "{:?}",
        &consumer.bad_marks[..1]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_signals_are_refused_by_name_while_the_stream_flows() {
    let (db, spec, topic) = setup("sig_hostile", 50, 100).await;
    let mut relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    let hostile = [
        (
            r#"{"data-collections": ["public.items"], "additional-conditions": [{"data-collection": "public.items", "filter": "id = 1; DROP TABLE items"}]}"#,
            "filter refused at byte 6",
        ),
        (
            r#"{"data-collections": ["public.items"], "additional-conditions": [{"data-collection": "public.items", "filter": "id = 1 OR pg_sleep(5) IS NULL"}]}"#,
            "no function calls",
        ),
        (
            r#"{"data-collections": ["public.items"], "additional-conditions": [{"data-collection": "public.items", "filter": "id = 'x'"}]}"#,
            "invalid input syntax for type bigint",
        ),
        (
            r#"{"data-collections": ["public.items\"; DROP TABLE items; --"]}"#,
            "names no table of the relay's publications",
        ),
        (r#"{"data-collections": ["public.nope"]}"#, "names no table"),
        (
            r#"{"data-collections": ["public.nokey"]}"#,
            "table public.nokey cannot be snapshotted: it has no primary key",
        ),
        (
            r#"{"data-collections": ["public.outbox"]}"#,
            "public.outbox is an outbox table",
        ),
        (
            r#"{"data-collections": ["a)|(.*"]}"#,
            "not a valid regular expression",
        ),
        (
            r#"{"data-collections": ["public.items"], "type": "blocking"}"#,
            "is not supported; outboxd runs incremental snapshots",
        ),
        (r#"not json"#, "its data is not the JSON"),
    ];
    for (data, _) in hostile {
        signal_row(&db, "execute-snapshot", data).await;
    }
    wait_logged(&mut relay, &[], REFUSED, hostile.len()).await;
    let log = relay.log_text();
    for (data, why) in hostile {
        assert!(log.contains(why), "{data}: no {why:?} in\n{log}");
    }
    for (args, why) in [
        (
            &["public.items", "--filter", "id = 1; DROP TABLE items"][..],
            "filter refused",
        ),
        (
            &["public.items'; DROP TABLE items; --"][..],
            "names no table",
        ),
        (&["public.nokey"][..], "has no primary key"),
        (&["public.outbox"][..], "is an outbox table"),
    ] {
        let (sent, output) = cli(&spec, args);
        assert!(!sent, "{args:?} was sent");
        assert!(output.contains(why), "{args:?}: no {why:?} in {output}");
    }
    // Nothing else stopped: the table is there, changes flow, nothing was read.
    db.client()
        .await
        .execute("UPDATE items SET v = 7 WHERE id = 1", &[])
        .await
        .expect("items is still there");
    let mut consumer = SnapshotTopic::new(&topic, 3, INCREMENTAL);
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.keys.get(&1).and_then(|h| h.last) != Some(7) {
        assert!(Instant::now() < deadline, "the change did not arrive");
        tokio::time::sleep(Duration::from_millis(200)).await;
        consumer.catch_up();
    }
    assert_eq!(consumer.reads(), 0);
    assert!(relay.wait_exit(Duration::ZERO).is_none(), "the relay runs");

    // `check` says whether the signal table can carry signals.
    let check = |spec: &RelaySpec| {
        let output = outboxd(spec, &["check"], &[]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let report = check(&spec);
    assert!(
        report.contains("signal table public.debezium_signal is published"),
        "{report}"
    );
    let mut wrong = spec.clone();
    wrong.extra = wrong
        .extra
        .replace("public.debezium_signal", "public.nokey");
    let report = check(&wrong);
    assert!(
        report.contains("signal table public.nokey has 1 columns"),
        "{report}"
    );
}
