//! Catalog changes under a running relay, on real Postgres and Kafka: a renamed outbox table and a
//! dropped and recreated publication stop the relay with the reason, never rerouting events or
//! retrying forever.

mod support;

use std::time::Duration;

use support::kafka::{create_topic, read_topic, Isolation};
use support::outbox::{read_all, Outbox};
use support::postgres::{create_pgoutput_slot, TestDb};
use support::relay::{outboxd, RelayProcess, RelaySpec};

/// A database with the outbox tables, a publication of the outbox, and a slot; CDC events go to
/// topics of this test's own prefix.
async fn outbox_db(prefix: &str) -> (TestDb, Outbox, RelaySpec) {
    let db = TestDb::create(prefix).await;
    let outbox = Outbox::published(&db).await;
    create_pgoutput_slot(&outbox.client().await, &db.slot).await;
    let mut spec = RelaySpec::for_db(&db);
    spec.extra = format!("[cdc]\ntopic_prefix = {:?}\n", db.name);
    create_topic(&outbox.topic(), 1).await;
    (db, outbox, spec)
}

/// Waits for `relay` to stop with exit status 1 (a definite error); its log.
fn stopped(relay: &mut RelayProcess) -> String {
    let status = relay.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.code() == Some(1)),
        "the relay stops with exit status 1, got {status:?}:\n{}",
        relay.log_text()
    );
    relay.log_text()
}

/// A relay streaming `spec`, with one event of `outbox` published through it; and a client.
async fn streaming_relay(
    spec: &RelaySpec,
    outbox: &Outbox,
) -> (RelayProcess, tokio_postgres::Client) {
    let relay = RelayProcess::start(spec);
    relay.wait_streaming(Duration::from_secs(60));
    let client = outbox.client().await;
    outbox.write(&client, &["k1"]).await;
    read_all(&outbox.topic(), 1);
    (relay, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_outbox_table_stops_the_relay_instead_of_becoming_cdc_events() {
    let (db, outbox, spec) = outbox_db("renamed_outbox").await;
    let (mut relay, client) = streaming_relay(&spec, &outbox).await;

    client
        .batch_execute(
            "ALTER TABLE outbox RENAME TO outbox_old;
             INSERT INTO outbox_old (aggregatetype, aggregateid, type, payload)
               VALUES ('renamed', 'k2', 'after-rename', '{}');",
        )
        .await
        .expect("rename and write");

    let log = stopped(&mut relay);
    assert!(
        log.contains("outbox table public.outbox")
            && log.contains("was renamed to public.outbox_old")
            && log.contains("add public.outbox_old to outbox.tables"),
        "the relay names the rename and the way out:\n{log}"
    );
    let cdc = read_topic(
        &format!("{}.public.outbox_old", db.name),
        Isolation::ReadCommitted,
        Duration::from_secs(5),
        |records| !records.is_empty(),
    );
    assert!(
        cdc.is_empty(),
        "no CDC event of the renamed outbox: {cdc:?}"
    );
    assert_eq!(
        read_all(&outbox.topic(), 1).len(),
        1,
        "no extra outbox event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_publication_stops_the_relay_with_the_ways_out_and_fails_check() {
    let (db, outbox, spec) = outbox_db("recreated_publication").await;
    let (mut relay, client) = streaming_relay(&spec, &outbox).await;

    client
        .batch_execute(&format!("DROP PUBLICATION {};", db.publication))
        .await
        .expect("drop publication");
    outbox.write(&client, &["k2"]).await;
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {} FOR TABLE outbox;",
            db.publication
        ))
        .await
        .expect("create publication again");
    outbox.write(&client, &["k3"]).await;

    let log = stopped(&mut relay);
    assert!(
        log.contains(&format!(
            "publication \\\"{}\\\" was dropped and created again",
            db.publication
        )) && log.contains("Ways out"),
        "the relay says what happened and the ways out:\n{log}"
    );
    let checked = outboxd(&spec, &["check"], &[]);
    let report = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(1), "check fails:\n{report}");
    assert!(
        report.contains(&format!(
            "publication \"{}\" was dropped and created again",
            db.publication
        )) && report.contains("Ways out"),
        "check names it:\n{report}"
    );
    // check changed nothing: the relay stops the same way again.
    let mut again = RelayProcess::start(&spec);
    assert!(
        again.wait_exit(Duration::from_secs(60)).is_some(),
        "the relay stops again"
    );
    assert!(again.log_text().contains("was dropped and created again"));
    assert_eq!(
        read_all(&outbox.topic(), 1).len(),
        1,
        "nothing more was published"
    );
}
