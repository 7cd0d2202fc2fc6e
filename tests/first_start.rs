//! A relay's first start on real Postgres and Kafka: rows committed to the outbox before the slot
//! existed are published exactly once with `--publish-existing-rows`, together with everything
//! committed meanwhile, and without the option the relay and `check` say loudly that they will
//! never be.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::kafka::create_topic;
use support::outbox::{assert_exactly_once_in_order, random_keys, read_all, spawn_writer, Outbox};
use support::postgres::{create_pgoutput_slot, TestDb};
use support::relay::{outboxd, RelayProcess, RelaySpec};

/// The option, as the environment gives it (a service unit would set it the same way).
const PUBLISH_EXISTING_ROWS: (&str, &str) = ("OUTBOXD_PUBLISH_EXISTING_ROWS", "true");

/// A database with the outbox tables and a publication of the outbox, but no slot yet.
async fn outbox_db(prefix: &str) -> (TestDb, Outbox, RelaySpec) {
    let db = TestDb::create(prefix).await;
    let outbox = Outbox::published(&db).await;
    create_topic(&outbox.topic(), 3).await;
    let spec = RelaySpec::for_db(&db);
    (db, outbox, spec)
}

/// Older rows, then writers that keep committing while the relay starts with the option: every
/// row is either in the snapshot or in the stream, never both, never neither; then a crash, after
/// which the option does nothing more. With `slot_first`, the slot exists before the relay starts
/// (as `migrate` creates it) and captures some of the writes.
async fn publishes_older_rows_once(prefix: &str, slot_first: bool) {
    let (db, outbox, spec) = outbox_db(prefix).await;
    let client = outbox.client().await;
    for _ in 0..20 {
        outbox.write(&client, &random_keys()[..3]).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(outbox.clone(), stop.clone());
    if slot_first {
        create_pgoutput_slot(&client, &db.slot).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut relay = RelayProcess::start_with_env(&spec, &[PUBLISH_EXISTING_ROWS]);
    relay.wait_streaming(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    let ids = outbox.ids().await;
    let records = read_all(&outbox.topic(), ids.len());
    assert_exactly_once_in_order(&records, &ids);
    assert!(
        relay
            .log_text()
            .contains("publishing the rows older than the slot"),
        "the relay says what it published:\n{}",
        relay.log_text()
    );

    relay.kill();
    let relay = RelayProcess::start_with_env(&spec, &[PUBLISH_EXISTING_ROWS]);
    relay.wait_streaming(Duration::from_secs(60));
    outbox.write(&client, &["after-restart"]).await;
    let ids = outbox.ids().await;
    let records = read_all(&outbox.topic(), ids.len());
    assert_exactly_once_in_order(&records, &ids);
    assert!(relay
        .log_text()
        .contains("ignored, the relay has a checkpoint"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_older_than_a_new_slot_are_published_once_with_the_option() {
    publishes_older_rows_once("first_start_new_slot", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_older_than_an_existing_slot_are_published_once_with_the_option() {
    publishes_older_rows_once("first_start_old_slot", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_option_check_and_run_name_the_older_rows_and_the_option() {
    let (db, outbox, spec) = outbox_db("first_start_warn").await;
    let client = outbox.client().await;
    for key in ["a", "b", "c", "d", "e", "f", "g"] {
        outbox.write(&client, &[key]).await;
    }

    let checked = outboxd(&spec, &["check"], &[]);
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(
        report.contains("holds 7 row(s) written before replication slot")
            && report.contains("--publish-existing-rows"),
        "check names the rows and the option:\n{report}"
    );

    // The slot (as `migrate` creates it) captures a new row and a delete. Streaming it from a
    // new snapshot's point would skip what it captured, which is safe for outbox inserts (their
    // rows are in the snapshot) and nothing else: the option stops the relay instead of guessing.
    create_pgoutput_slot(&client, &db.slot).await;
    outbox.write(&client, &["after-slot"]).await;
    client
        .batch_execute("DELETE FROM outbox WHERE aggregateid = 'a';")
        .await
        .expect("delete");
    // With the slot, check peeks it: 7 rows, one of them inserted after the slot.
    let checked = outboxd(&spec, &["check"], &[]);
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(
        report.contains("holds 6 row(s) written before replication slot"),
        "check counts the rows the slot did not capture:\n{report}"
    );
    let mut refused = RelayProcess::start_with_env(&spec, &[PUBLISH_EXISTING_ROWS]);
    let status = refused.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.code() == Some(1)),
        "the option with a slot that captured a delete stops the relay, got {status:?}:\n{}",
        refused.log_text()
    );
    assert!(
        refused
            .log_text()
            .contains("has captured 1 change(s) other than outbox inserts")
            && refused.log_text().contains("pg_drop_replication_slot"),
        "it says why and the ways out:\n{}",
        refused.log_text()
    );

    let relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    // The relay counts while it streams (relay/older_rows.rs): it warns once its stream passed
    // the position of the count, soon after the start.
    let warned = |log: &str| {
        log.lines().any(|line| {
            line.contains("\"level\":\"WARN\"")
                && line.contains("\"rows\":6")
                && line.contains("public.outbox")
                && line.contains("--publish-existing-rows")
        })
    };
    assert!(
        relay.wait_log(Duration::from_secs(30), warned),
        "one WARN names the table, the count and the option:\n{}",
        relay.log_text()
    );
    let records = read_all(&outbox.topic(), 1);
    assert_eq!(records.len(), 1, "only the row written after the slot");
}

/// `check` read that the slot was free, then the relay took it before `check` peeked it: `check`
/// cannot count the older rows then, says nothing of them and fails nothing. Before, the peek's
/// "replication slot … is active for PID" failed `check` as "a catalog query failed", which CI
/// met when eleven checks peeked one slot at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_whose_slot_the_relay_takes_before_the_peek_fails_nothing() {
    let (db, outbox, spec) = outbox_db("first_start_taken").await;
    let client = outbox.client().await;
    outbox.write(&client, &["older"]).await;
    create_pgoutput_slot(&client, &db.slot).await;
    let check_spec = spec.clone();
    let check = std::thread::spawn(move || {
        outboxd(
            &check_spec,
            &["check"],
            &[("FAILPOINTS", "before-older-rows-peek=sleep(15000)")],
        )
    });
    // A row of `query` (given the test's database) exists within a minute.
    let reached = |query: &'static str| {
        let client = &client;
        let db = &db.name;
        support::wait::wait_until(
            Duration::from_secs(60),
            move || async move {
                client
                    .query_opt(query, &[db])
                    .await
                    .expect("pg_stat_activity")
                    .is_some()
            },
            move || format!("never seen: {query}"),
        )
    };
    // The flush wait's statement comes after `check` read `active`, just before the failpoint.
    reached(
        "SELECT 1 FROM pg_stat_activity WHERE datname = $1 \
           AND query LIKE 'SELECT pg_current_wal_flush_lsn()%'",
    )
    .await;
    let relay = RelayProcess::start(&spec);
    reached(
        "SELECT 1 FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid \
         WHERE a.datname = $1 AND a.backend_type = 'walsender'",
    )
    .await;
    assert!(
        !check.is_finished(),
        "the relay took the slot only after check peeked: this run proves nothing:\n{}",
        relay.log_text()
    );
    let checked = check.join().expect("check");
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(
        !report.contains("FAIL  postgres") && !report.contains("written before replication slot"),
        "check neither fails nor counts a slot it cannot peek:\n{report}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        report.contains("outbox table public.outbox is published"),
        "check went through the outbox tables:\n{report}"
    );
}
