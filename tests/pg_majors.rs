//! The core on the oldest and the newest supported PostgreSQL major (the default one runs the
//! whole suite): the type fixture through the replication path, and the exactly-once relay under
//! SIGKILLs. Each test runs a private cluster of its major (`scripts/setup test` prepares them:
//! `PG_TEST_MAJORS`) and the dev environment's Kafka. `scripts/test-majors` runs the whole suite
//! on every major.

// One scenario of them runs here.
#[allow(dead_code)]
mod scenarios;
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::kafka::read_exactly;
use support::mode::{Mode, ModeDb};
use support::postgres::{connect, pg_bin_of, PrivateCluster};
use support::relay::{RelayProcess, RelaySpec};
use support::seen::Seen;

/// A private cluster of `major` for logical decoding, reachable over TCP.
fn cluster(major: u32) -> PrivateCluster {
    let bin = pg_bin_of(Some(major))
        .unwrap_or_else(|| panic!("PostgreSQL {major} is not set up: run scripts/setup test"));
    PrivateCluster::start_with(
        &bin,
        "wal_level = logical\nmax_wal_senders = 20\nmax_replication_slots = 20",
        &["host all all 127.0.0.1/32 trust"],
    )
}

/// The core on `major`: types, then five SIGKILLs under a writer.
async fn core(major: u32) {
    let started = Instant::now();
    let cluster = cluster(major);
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let name = support::unique_name(&format!("pg{major}_types"));
    support::all_types::round_trip(&url, &format!("{name}_slot"), &format!("{name}_pub")).await;
    let types = started.elapsed();
    let db = ModeDb::on_cluster(Mode::Logical, &cluster, &format!("pg{major}_kill")).await;
    scenarios::sigkill_rounds(&db, 5).await;
    eprintln!(
        "PostgreSQL {major}: types in {types:?}, with five SIGKILLs exactly once in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_14_types_and_exactly_once_under_sigkills() {
    core(14).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_18_types_and_exactly_once_under_sigkills() {
    core(18).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_18_stored_generated_columns_reach_the_change_events() {
    // A publication WITH (publish_generated_columns = stored) sends stored generated columns
    // like any other; a virtual one (18's default kind) never travels.
    let cluster = cluster(18);
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let mut spec = RelaySpec::for_url("pg18_generated", &url);
    let prefix = spec.name.clone();
    spec.extra = format!("[outbox]\ntables = []\n[cdc]\ntopic_prefix = {prefix:?}\n");
    let client = connect(&url).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE gen (id int PRIMARY KEY, a int,
               doubled int GENERATED ALWAYS AS (a * 2) STORED,
               plus1 int GENERATED ALWAYS AS (a + 1) VIRTUAL);
             CREATE PUBLICATION {} FOR TABLE gen WITH (publish_generated_columns = stored)",
            spec.publication
        ))
        .await
        .expect("table and publication");
    let relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    client
        .batch_execute("INSERT INTO gen (id, a) VALUES (1, 5); UPDATE gen SET a = 6 WHERE id = 1")
        .await
        .expect("changes");
    let topic = format!("{prefix}.public.gen");
    let records = tokio::task::block_in_place(|| read_exactly(&topic, 2));
    let afters: Vec<_> = records
        .iter()
        .map(|r| Seen::of(r).json()["after"].clone())
        .collect();
    assert_eq!(
        afters,
        [
            json!({"id": 1, "a": 5, "doubled": 10}),
            json!({"id": 1, "a": 6, "doubled": 12}),
        ]
    );
}
