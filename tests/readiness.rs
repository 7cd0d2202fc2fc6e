//! Readiness follows progress, in both modes, on real Postgres and a real broker killed with
//! SIGKILL: with changes waiting and no Kafka commit for `metrics.stall_timeout`, `/readyz` answers
//! 503 naming the stall, `outboxd_stalled` is 1 and one WARN line says so, however many attempts
//! fail meanwhile; with the broker back the relay is ready again, says so once, and every change
//! arrives exactly once. An idle relay stays ready however long it commits nothing.

mod support;

use std::time::{Duration, Instant};

use outboxd::relay::{RESUMED, STALLED};
use support::http::{http_get, sample, wait_for_answer, wait_for_readiness};
use support::kafka::{create_topic_at, PrivateKafka};
use support::outbox::{assert_exactly_once_in_order, random_keys, read_all_at, Outbox};
use support::postgres::TestDb;
use support::relay::{outboxd, RelayProcess, RelaySpec};

/// The stall bound of these tests.
const STALL_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logical_mode_reports_a_dead_broker_as_a_stall_and_an_idle_outbox_as_ready() {
    stall_and_recover("logical", "of WAL past the checkpoint at").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poll_mode_reports_a_dead_broker_as_a_stall_and_an_idle_outbox_as_ready() {
    stall_and_recover("poll", "outbox rows wait to be published (a batch of").await;
}

/// The scenario in `mode`; `what_waits` is how `/readyz` names what waits in that mode.
async fn stall_and_recover(mode: &str, what_waits: &str) {
    let kafka = PrivateKafka::start();
    let db = TestDb::create(&format!("ready_{mode}")).await;
    let mut spec = RelaySpec::for_db(&db);
    spec.mode = mode.into();
    spec.bootstrap = kafka.bootstrap.clone();
    // Kafka calls give up after seconds, so attempts fail and restart during the outage: the
    // stall must outlive them and be reported once.
    spec.call_timeout = "2s".into();
    let migrated = outboxd(&spec, &["migrate"], &[]);
    assert!(migrated.status.success(), "migrate: {migrated:?}");
    let outbox = Outbox {
        url: db.url.clone(),
        aggregate_type: spec.name.clone(),
    };
    let client = outbox.client().await;
    client
        .batch_execute(
            "CREATE TABLE key_seq (aggregateid text PRIMARY KEY, n int NOT NULL);
             CREATE TABLE unpublished (n int);",
        )
        .await
        .expect("test tables");
    create_topic_at(&kafka.bootstrap, &outbox.topic(), 3).await;
    let bound = format!("{}s", STALL_TIMEOUT.as_secs());
    let relay = RelayProcess::start_with_env(&spec, &[("OUTBOXD__METRICS__STALL_TIMEOUT", &bound)]);
    let address = relay.metrics_address(Duration::from_secs(60));
    let ready = |timeout| {
        tokio::task::block_in_place(|| wait_for_readiness(&address, 200, timeout));
    };
    ready(Duration::from_secs(60));

    // Idle for three stall bounds while other writes move the server's WAL (and the relay
    // confirms it with checkpoint-only commits): ready throughout.
    let idle_until = Instant::now() + STALL_TIMEOUT * 3;
    while Instant::now() < idle_until {
        client
            .batch_execute("INSERT INTO unpublished VALUES (1)")
            .await
            .expect("unpublished write");
        let answer = http_get(&address, "/readyz");
        assert_eq!(
            answer.as_ref().map(|(code, _)| *code),
            Some(200),
            "an idle relay is ready: {answer:?}\n{}",
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The broker dies; changes commit meanwhile.
    tokio::task::block_in_place(|| kafka.kill());
    for _ in 0..20 {
        outbox.write(&client, &random_keys()[..3]).await;
    }
    // Every row is still in the table: nothing can be published (poll mode deletes them later).
    let ids = outbox.ids().await;
    let (_, reason) = tokio::task::block_in_place(|| {
        wait_for_answer(
            &address,
            "/readyz",
            STALL_TIMEOUT + Duration::from_secs(10),
            |code, body| code == 503 && body.contains("stalled: no Kafka commit for"),
        )
    });
    assert!(reason.contains(what_waits), "{reason}");
    let metrics = || http_get(&address, "/metrics").expect("/metrics answers").1;
    let exposition = metrics();
    assert_eq!(sample(&exposition, "outboxd_stalled"), Some(1.0));
    assert_eq!(sample(&exposition, "outboxd_ready"), Some(0.0));

    // The stall outlives the attempts that fail meanwhile.
    tokio::task::block_in_place(|| {
        wait_for_log(&relay, "relay attempt failed", Duration::from_secs(60));
    });
    let answer = http_get(&address, "/readyz").expect("/readyz answers");
    assert!(
        answer.0 == 503 && answer.1.contains("stalled"),
        "{answer:?}"
    );

    tokio::task::block_in_place(|| kafka.start_again());
    ready(Duration::from_secs(120));
    let records =
        tokio::task::block_in_place(|| read_all_at(&kafka.bootstrap, &outbox.topic(), ids.len()));
    assert_exactly_once_in_order(&records, &ids);
    assert_eq!(sample(&metrics(), "outboxd_stalled"), Some(0.0));
    let log = relay.log_text();
    let stalls = logged(&log, STALLED);
    assert_eq!(stalls.len(), 1, "one WARN per stall:\n{log}");
    assert_eq!(stalls[0]["level"], "WARN", "{}", stalls[0]);
    let said = stalls[0]["fields"]["reason"].as_str().unwrap_or_default();
    assert!(
        said.contains("no Kafka commit for") && said.contains(what_waits),
        "{said}"
    );
    assert_eq!(
        logged(&log, RESUMED).len(),
        1,
        "one INFO when it moves:\n{log}"
    );
}

/// The JSON log entries whose message is `message`.
fn logged(log: &str, message: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["fields"]["message"] == message)
        .collect()
}

/// Waits until the relay's log contains `needle`.
fn wait_for_log(relay: &RelayProcess, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !relay.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log within {timeout:?}:\n{}",
            relay.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
