//! The exactly-once scenarios both modes pass, each written once: `relay_logical.rs` and
//! `relay_poll.rs` run every one with their [`Mode`] and add what only their mode has to show.
//! Every scenario ends with the same proof: each committed outbox row is in its topic once, per
//! key in commit order, for a `read_committed` consumer ([`ModeDb::assert_delivered`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use outboxd::pg::Lsn;

use crate::support::dev_env;
use crate::support::kafka::{create_topic, create_topic_at, read_topic, Isolation, PrivateKafka};
use crate::support::mode::{Mode, ModeDb};
use crate::support::outbox::{random_keys, spawn_writer};
use crate::support::postgres::PrivateCluster;
use crate::support::relay::RelayProcess;
use crate::support::wait::wait_until;

/// The LSN a log line or `pg_replication_slots` shows as text.
pub fn lsn(text: &str) -> Lsn {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not an LSN: {e}"))
}

/// A writer committing outbox transactions until [`Writer::stop`].
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Writer {
    fn start(db: &ModeDb) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let task = spawn_writer(db.outbox.clone(), stop.clone());
        Writer { stop, task }
    }

    /// Stops the writer; how many transactions it committed.
    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer")
    }
}

/// 10 writers x 100 transactions x 10 rows = 10,000 rows in 1,000 transactions, committed while
/// the relay streams. Returns the relay, for what its mode has to show in its log.
pub async fn concurrent_writers(db: &ModeDb) -> RelayProcess {
    create_topic(&db.topic(), 3).await;
    let relay = RelayProcess::start(&db.spec);
    relay.wait_streaming(Duration::from_secs(60));
    let writers: Vec<_> = (0..10)
        .map(|_| {
            let outbox = db.outbox.clone();
            tokio::spawn(async move {
                let client = outbox.client().await;
                for _ in 0..100 {
                    outbox.write(&client, &random_keys()).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    assert_eq!(db.inserted().await.len(), 10_000, "rows written");
    db.assert_delivered(&dev_env().kafka_bootstrap).await;
    relay
}

/// Twenty SIGKILLs at random moments while a writer commits, now and then 10,000 rows at once.
/// What follows each Kafka commit (the slot's confirmation, poll mode's Postgres commit) is held
/// back 300 ms, so that many kills land between the two. Returns the log of every relay, the last
/// (which lives and delivers everything) included.
pub async fn sigkills(db: &ModeDb) -> Vec<String> {
    sigkill_rounds(db, 20).await
}

/// [`sigkills`] with `rounds` kills.
pub async fn sigkill_rounds(db: &ModeDb, rounds: usize) -> Vec<String> {
    create_topic(&db.topic(), 3).await;
    let failpoints = [("FAILPOINTS", "after-kafka-commit=sleep(300)")];
    let writer = Writer::start(db);
    let mut logs = Vec::new();
    for round in 0..rounds {
        let mut relay = RelayProcess::start_with_env(&db.spec, &failpoints);
        // The scenario: a kill at a random moment of the relay's life. Every fourth lands during
        // startup; the others once it streams, so that most land while it publishes: its startup
        // (the lease, the producer fencing its predecessor) takes from one second to several on
        // a loaded machine, and kills timed from the process start then all landed in it.
        if round % 4 == 3 {
            logs.push(relay.kill_at_random(0..1500).await);
        } else {
            relay.wait_streaming(Duration::from_secs(120));
            logs.push(relay.kill_at_random(0..2500).await);
        }
    }
    let transactions = writer.stop().await;
    assert!(transactions > 300, "the writer made a large transaction");

    let relay = RelayProcess::start(&db.spec);
    db.assert_delivered(&dev_env().kafka_bootstrap).await;
    logs.push(relay.log_text());
    logs
}

/// An operator takes over (`outboxd run --take-over`) while the first relay publishes: the first
/// stops publishing, fenced (exit status 3) or, having lost its lease first, standing by; the
/// second takes over; nothing is lost or repeated.
pub async fn an_explicit_takeover_fences_the_first(db: &ModeDb) {
    create_topic(&db.topic(), 3).await;
    let writer = Writer::start(db);
    let mut first = RelayProcess::start(&db.spec);
    first.wait_for_commits_past(0).await;
    let second = RelayProcess::start_with_env(&db.spec, &[("OUTBOXD_TAKE_OVER", "true")]);
    let stopped = |first: &mut RelayProcess| match first.wait_exit(Duration::from_millis(50)) {
        Some(status) => {
            assert_eq!(status.code(), Some(3), "exit status of a fenced relay");
            assert!(first.log_text().contains("fenced"), "{}", first.log_text());
            true
        }
        None => first.log_text().contains(outboxd::relay::lease::LOST),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !stopped(&mut first) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first relay went on:\n{}",
            first.log_text()
        );
    }
    second.wait_streaming(Duration::from_secs(60));
    // The writer goes on until the second relay publishes too.
    second.wait_for_commits_past(0).await;
    writer.stop().await;
    db.assert_delivered(&dev_env().kafka_bootstrap).await;
}

/// Three rounds of 200 transactions on a cluster of the test's own, restarted after the first two
/// while the relay holds a connection, so each restart cuts a live one: the relay reconnects by
/// itself and delivers everything once.
pub async fn postgres_restarts(cluster: &PrivateCluster, db: &ModeDb) {
    create_topic(&db.topic(), 3).await;
    let mut relay = RelayProcess::start(&db.spec);
    for round in 0..3 {
        // A new session each round: a restart ends the old one.
        let client = db.client().await;
        for _ in 0..200 {
            db.write(&client, &random_keys()[..3]).await;
        }
        if round < 2 {
            wait_until(
                Duration::from_secs(60),
                || db.relay_connected(),
                || format!("the relay never connected:\n{}", relay.log_text()),
            )
            .await;
            cluster.restart();
        }
    }
    db.assert_delivered(&dev_env().kafka_bootstrap).await;
    assert!(
        relay.wait_exit(Duration::ZERO).is_none(),
        "the relay kept running"
    );
    // The restart reached the relay: through its stream (the attempt fails and resumes from the
    // checkpoint) or, when the lease's session noticed first, through the lease (it stands by,
    // takes the lease again and resumes from the checkpoint the same way).
    let log = relay.log_text();
    assert!(
        log.contains("resuming from the checkpoint") || log.contains(outboxd::relay::lease::LOST),
        "{log}"
    );
    // A fast shutdown ends a walsender's stream with a bare CommandComplete: a reconnect, not a
    // protocol violation.
    assert!(!log.contains("protocol violation"), "{log}");
}

/// The broker of the test's own restarts twice while the relay publishes a writer's
/// transactions: the relay goes on by itself and delivers everything once. `db.spec` points at
/// `kafka`.
pub async fn broker_restarts(kafka: &PrivateKafka, db: &ModeDb) {
    assert_eq!(
        db.spec.bootstrap, kafka.bootstrap,
        "the relay uses the broker"
    );
    create_topic_at(&kafka.bootstrap, &db.topic(), 3).await;
    let writer = Writer::start(db);
    let mut relay = RelayProcess::start(&db.spec);
    for _ in 0..2 {
        relay.wait_for_commits_past(relay.commits()).await;
        tokio::task::block_in_place(|| kafka.restart());
    }
    relay.wait_for_commits_past(relay.commits()).await;
    writer.stop().await;
    db.assert_delivered(&kafka.bootstrap).await;
    assert!(
        relay.wait_exit(Duration::ZERO).is_none(),
        "the relay kept running"
    );
}

/// `confirmed_flush_lsn` of the relay's slot.
pub async fn slot_confirmed(db: &ModeDb) -> Lsn {
    let text: String = db
        .client()
        .await
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&db.spec.slot],
        )
        .await
        .expect("slot")
        .get(0);
    lsn(&text)
}

/// The relay dies right after its first Kafka commit, before what makes the commit final in
/// Postgres: the slot's confirmation (logical) or the deletion of the published rows (poll).
/// The restart repeats nothing of what Kafka holds and loses nothing of what it does not.
pub async fn a_crash_right_after_the_kafka_commit(db: &ModeDb) {
    create_topic(&db.topic(), 3).await;
    let client = db.client().await;
    for _ in 0..100 {
        db.write(&client, &random_keys()[..3]).await;
    }
    let mut relay =
        RelayProcess::start_with_env(&db.spec, &[("FAILPOINTS", "after-kafka-commit=panic")]);
    let status = relay
        .wait_exit(Duration::from_secs(60))
        .expect("the relay crashes at the failpoint");
    assert!(!status.success());
    assert!(
        relay
            .log_text()
            .contains("failpoint after-kafka-commit panic"),
        "the crash is the failpoint's:\n{}",
        relay.log_text()
    );
    let committed = read_topic(
        &db.topic(),
        Isolation::ReadCommitted,
        Duration::from_secs(10),
        |r| !r.is_empty(),
    );
    assert!(!committed.is_empty(), "the first batch reached Kafka");

    // The crash fell in the window: Kafka has the batch, Postgres does not know it.
    let checkpoint = match db.mode {
        Mode::Logical => {
            let checkpoints = relay.logged("committed a Kafka transaction", "lsn");
            let [checkpoint] = checkpoints.as_slice() else {
                panic!("one Kafka commit before the crash: {checkpoints:?}");
            };
            let checkpoint = lsn(checkpoint);
            let confirmed = slot_confirmed(db).await;
            assert!(
                confirmed < checkpoint,
                "the slot was confirmed at {confirmed}, not before the checkpoint {checkpoint}"
            );
            Some(checkpoint)
        }
        Mode::Poll => {
            assert_eq!(
                db.ids().await.len(),
                300,
                "the crash rolled the claim back: the published rows are still there"
            );
            None
        }
    };

    for _ in 0..100 {
        db.write(&client, &random_keys()[..3]).await;
    }
    let relay = RelayProcess::start(&db.spec);
    db.assert_delivered(&dev_env().kafka_bootstrap).await;
    match (db.mode, checkpoint) {
        (Mode::Logical, Some(checkpoint)) => {
            // It resumed from Kafka's checkpoint, not from the slot's older position, and
            // confirmed the slot past it once it went on.
            let started = relay.logged("starting replication", "checkpoint");
            assert_eq!(started, [checkpoint.to_string()], "{}", relay.log_text());
            wait_until(
                Duration::from_secs(30),
                || async { slot_confirmed(db).await > checkpoint },
                || format!("the slot was not confirmed past {checkpoint}"),
            )
            .await;
        }
        _ => assert!(
            relay.log_text().contains("\"settled\":300"),
            "the restart deleted the rows of the committed checkpoint:\n{}",
            relay.log_text()
        ),
    }
}
