//! The core on the oldest and the newest supported PostgreSQL major (the default one runs the
//! whole suite): the type fixture through the replication path, and the exactly-once relay under
//! SIGKILLs. Each test runs a private cluster of its major (`scripts/setup test` prepares them:
//! `PG_TEST_MAJORS`) and the dev environment's Kafka. `scripts/test-majors` runs the whole suite
//! on every major.

// One scenario of them runs here.
#[allow(dead_code)]
mod scenarios;
mod support;

use std::time::Instant;

use serde_json::json;
use support::mode::{Mode, ModeDb};
use support::postgres::{connect, pg_bin_of, PrivateCluster};
use support::relay::RelaySpec;

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
async fn postgres_18_stored_generated_columns_reach_the_change_and_read_events() {
    // A publication WITH (publish_generated_columns = stored) sends stored generated columns
    // like any other, and the snapshot reads them; a virtual one (18's default kind) never
    // travels, and the snapshot leaves it out too.
    let cluster = cluster(18);
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let mut spec = RelaySpec::for_url("pg18_generated", &url);
    let events = support::published_columns::read_update_read(
        &mut spec,
        "CREATE TABLE gen (id int PRIMARY KEY, a int,
           doubled int GENERATED ALWAYS AS (a * 2) STORED,
           plus1 int GENERATED ALWAYS AS (a + 1) VIRTUAL)",
        "WITH (publish_generated_columns = stored)",
    )
    .await;
    assert_eq!(
        events,
        [
            ("r".to_owned(), json!({"id": 1, "a": 5, "doubled": 10})),
            ("u".to_owned(), json!({"id": 1, "a": 6, "doubled": 12})),
            ("r".to_owned(), json!({"id": 1, "a": 6, "doubled": 12})),
        ]
    );

    // Under REPLICA IDENTITY FULL the virtual column is in the replica identity but never
    // published: 18 refuses the table's UPDATEs (and DELETEs), and `check` says so with the fix.
    let client = connect(&url).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE vfull (id int PRIMARY KEY, a int,
               plus1 int GENERATED ALWAYS AS (a + 1) VIRTUAL);
             INSERT INTO vfull (id, a) VALUES (1, 1);
             ALTER TABLE vfull REPLICA IDENTITY FULL;
             ALTER PUBLICATION {} ADD TABLE vfull",
            spec.publication
        ))
        .await
        .expect("vfull");
    let update = "UPDATE vfull SET a = 2";
    let refused = client.batch_execute(update).await.expect_err("refused");
    assert_eq!(
        refused.as_db_error().and_then(|e| e.detail()),
        Some("Replica identity must not contain unpublished generated columns."),
        "{refused}"
    );
    let problem = "published table public.vfull: REPLICA IDENTITY FULL holds the generated \
                   column(s) plus1, which publication";
    let report = check_report(&spec);
    let line = report
        .lines()
        .position(|l| l.starts_with("FAIL") && l.contains(problem))
        .unwrap_or_else(|| panic!("no FAIL line with {problem:?}:\n{report}"));
    let fix = report.lines().nth(line + 1).unwrap_or_default();
    assert!(
        fix.contains("fix: ALTER TABLE public.vfull REPLICA IDENTITY DEFAULT"),
        "{report}"
    );
    client
        .batch_execute(&format!(
            "ALTER TABLE vfull REPLICA IDENTITY DEFAULT; {update}"
        ))
        .await
        .expect("the fix lets updates through");
    let report = check_report(&spec);
    assert!(!report.contains(problem), "{report}");
}

/// `outboxd check`'s report.
fn check_report(spec: &RelaySpec) -> String {
    String::from_utf8_lossy(&support::relay::outboxd(spec, &["check"], &[]).stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_18_check_suggests_a_replica_identity_that_takes_updates() {
    // Tables without replica identity: `check`'s fix is the table's primary key, else a unique
    // index it can use (not `uniq_a_key`: a nullable column), and REPLICA IDENTITY FULL only where 18 would not refuse it (FULL holds a
    // virtual column, which is never published). Each fix, applied, lets an UPDATE through.
    let started = Instant::now();
    let cluster = cluster(18);
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let spec = RelaySpec::for_url("pg18_identity", &url);
    let client = connect(&url).await;
    let virtual_ = "v int GENERATED ALWAYS AS (a + 1) VIRTUAL";
    client
        .batch_execute(&format!(
            "CREATE TABLE pk_nothing (a int PRIMARY KEY); ALTER TABLE pk_nothing REPLICA IDENTITY NOTHING;
             CREATE TABLE uniq (a int UNIQUE, z int NOT NULL UNIQUE, {virtual_});
             CREATE TABLE bare (a int, {virtual_});
             CREATE TABLE plain (a int);
             INSERT INTO pk_nothing VALUES (1); INSERT INTO uniq (a, z) VALUES (1, 1);
             INSERT INTO bare (a) VALUES (1); INSERT INTO plain VALUES (1);
             CREATE PUBLICATION {} FOR TABLE pk_nothing, uniq, bare, plain",
            spec.publication
        ))
        .await
        .expect("tables");
    let report = check_report(&spec);
    let fix_of = |table: &str| {
        let problem = format!("published table public.{table} has no replica identity");
        let line = report
            .lines()
            .position(|l| l.starts_with("FAIL") && l.contains(&problem))
            .unwrap_or_else(|| panic!("no FAIL line with {problem:?}:\n{report}"));
        let fix = report.lines().nth(line + 1).unwrap_or_default();
        let sql = fix.trim().strip_prefix("fix: ").unwrap_or_default();
        sql[..=sql.find(';').unwrap_or_else(|| panic!("{fix:?}"))].to_owned()
    };
    let fixes = ["pk_nothing", "uniq", "bare", "plain"].map(fix_of);
    assert_eq!(
        fixes,
        [
            "ALTER TABLE public.pk_nothing REPLICA IDENTITY DEFAULT;",
            "ALTER TABLE public.uniq REPLICA IDENTITY USING INDEX uniq_z_key;",
            "ALTER TABLE public.bare ADD PRIMARY KEY (<published columns>);",
            "ALTER TABLE public.plain REPLICA IDENTITY FULL;",
        ],
        "{report}"
    );
    let [pk_nothing, uniq, _, plain] = fixes;
    client
        .batch_execute(&format!(
            "{pk_nothing} {uniq} {plain} ALTER TABLE bare ADD PRIMARY KEY (a);
             UPDATE pk_nothing SET a = 2; UPDATE uniq SET a = 2; UPDATE bare SET a = 2;
             UPDATE plain SET a = 2"
        ))
        .await
        .expect("the fixes let updates through");
    let report = check_report(&spec);
    assert!(!report.contains("has no replica identity"), "{report}");
    eprintln!("replica identity fixes on 18 in {:?}", started.elapsed());
}
