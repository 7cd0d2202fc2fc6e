//! A primary fails over to its standby mid-stream: the relay, given both in a multi-host URL,
//! finds the promoted standby by itself. On PostgreSQL 17 and 18 it resumes from the slot's
//! synchronized copy and a read_committed consumer has every committed row once, per key in
//! order; on 15 the slot is gone with the old primary and the relay says so in one line (and,
//! with `snapshot.mode = "when_needed"`, recovers by snapshotting again). A different cluster
//! behind the URL is refused.
//!
//! Each test runs private clusters of its major (`scripts/setup test` prepares 17 and 18:
//! `PG_FAILOVER_MAJORS`) and the dev environment's Kafka.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;

use support::outbox::{assert_exactly_once_in_order, random_keys, read_all, Outbox};
use support::postgres::{pg_bin_of, PrivateCluster};
use support::relay::{outboxd, RelayProcess, RelaySpec};
use support::wait::wait_until_blocking;

const HBA: &[&str] = &[
    "host all all 127.0.0.1/32 trust",
    "host replication all 127.0.0.1/32 trust",
];

/// The physical slot the standby streams through.
const STANDBY_SLOT: &str = "standby_slot";

/// A primary and its streaming standby of PostgreSQL `major` (`None`: the default), with the
/// outbox tables and the relay's publication, and a relay spec over both in a multi-host URL.
struct Pair {
    primary: PrivateCluster,
    standby: PrivateCluster,
    outbox: Outbox,
    spec: RelaySpec,
}

impl Pair {
    fn start(major: Option<u32>) -> Pair {
        let bin = pg_bin_of(major).unwrap_or_else(|| {
            panic!("PostgreSQL {major:?} is not set up: run scripts/setup test")
        });
        let primary = PrivateCluster::start_with(
            &bin,
            "wal_level = logical\nmax_wal_senders = 10\nmax_replication_slots = 10",
            HBA,
        );
        let url = |port: u16| format!("postgresql://postgres@127.0.0.1:{port}/postgres");
        let name = support::unique_name("failover");
        let outbox = Outbox {
            url: url(primary.port),
            aggregate_type: name.clone(),
        };
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(outbox.create_tables());
        // Slot synchronization (17+) wants hot_standby_feedback and a dbname in primary_conninfo
        // (the standby's settings give it one).
        let sync = if major.is_some_and(|m| m >= 17) {
            "sync_replication_slots = on"
        } else {
            ""
        };
        let standby = primary.standby(STANDBY_SLOT, &format!("hot_standby_feedback = on\n{sync}"));
        let mut settings = vec!["ALTER SYSTEM SET synchronous_standby_names = '*'".to_owned()];
        if major.is_some_and(|m| m >= 17) {
            settings.push(format!(
                "ALTER SYSTEM SET synchronized_standby_slots = '{STANDBY_SLOT}'"
            ));
        }
        for sql in settings {
            primary.psql(&sql).expect("primary setting");
        }
        primary.psql("SELECT pg_reload_conf()").expect("reload");
        let spec = RelaySpec::for_url(
            &name,
            &format!(
                "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
                primary.port, standby.port
            ),
        );
        primary
            .psql(&format!(
                "CREATE PUBLICATION {} FOR TABLE outbox",
                spec.publication
            ))
            .expect("publication");
        Pair {
            primary,
            standby,
            outbox,
            spec,
        }
    }
}

/// Writes outbox transactions through a URL naming both servers (read-write) until `stop`,
/// reconnecting across the failover; counts the rows whose commit was acknowledged (the standby
/// is synchronous, so they survive the failover).
fn spawn_writer(
    pair: &Pair,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let outbox = pair.outbox.clone();
    let url = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres \
         target_session_attrs=read-write connect_timeout=2",
        pair.primary.port, pair.standby.port
    );
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            while let Some(client) = support::postgres::connect_retrying(&url, &stop).await {
                while !stop.load(Ordering::Relaxed) {
                    let keys = random_keys();
                    if client
                        .batch_execute(&outbox.transaction(&keys[..3]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    acknowledged.fetch_add(3, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
    })
}

/// Waits until the standby holds a synchronized copy of the relay's slot that is usable after a
/// promotion (persistent, not a temporary one still catching up).
fn wait_for_synced_slot(pair: &Pair) {
    wait_until_blocking(
        Duration::from_secs(60),
        || {
            pair.standby
                .psql(&format!(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = '{}' AND synced \
                       AND NOT temporary AND confirmed_flush_lsn IS NOT NULL",
                    pair.spec.slot
                ))
                .is_ok_and(|out| out.trim() == "1")
        },
        || "the standby did not synchronize the relay's slot".into(),
    );
}

/// `outboxd check`'s report on the pair's relay.
fn check(pair: &Pair) -> String {
    let output = outboxd(&pair.spec, &["check"], &[]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The failover mid-stream of the acceptance test: a writer and the relay running, the primary
/// crashed and the standby promoted; the writer goes on on the new primary.
fn fail_over(pair: &Pair, relay: &RelayProcess) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let writer = spawn_writer(pair, stop.clone(), acknowledged.clone());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(relay.wait_for_commits_past(5));
    if pair.standby.psql("SHOW sync_replication_slots").is_ok() {
        wait_for_synced_slot(pair);
    }
    std::thread::sleep(Duration::from_secs(1));
    pair.primary.crash();
    let failed_over = Instant::now();
    pair.standby.promote();
    eprintln!("promoted the standby in {:?}", failed_over.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    acknowledged.load(Ordering::Relaxed)
}

/// The acceptance run on `major`: every committed row once, per key in order, after the relay
/// resumed on the promoted standby.
fn resumes_on_the_promoted_standby(major: u32) {
    let started = Instant::now();
    let pair = Pair::start(Some(major));
    let relay = RelayProcess::start(&pair.spec);
    relay.wait_streaming(Duration::from_secs(60));
    wait_for_synced_slot(&pair);
    let report = check(&pair);
    for line in [
        format!("slot {:?} is a failover slot", pair.spec.slot),
        format!("synchronized_standby_slots = {STANDBY_SLOT}"),
        format!(
            "standby 127.0.0.1:{}: sync_replication_slots = on",
            pair.standby.port
        ),
        format!(
            "standby 127.0.0.1:{}: hot_standby_feedback = on",
            pair.standby.port
        ),
        format!(
            "standby 127.0.0.1:{} holds a synchronized copy of slot {:?}",
            pair.standby.port, pair.spec.slot
        ),
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("ok") && l.ends_with(&line)),
            "check says {line:?}:\n{report}"
        );
    }
    let acknowledged = fail_over(&pair, &relay);

    let new_primary = Outbox {
        url: format!(
            "postgresql://postgres@127.0.0.1:{}/postgres",
            pair.standby.port
        ),
        aggregate_type: pair.outbox.aggregate_type.clone(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let committed = runtime.block_on(new_primary.ids());
    assert!(
        committed.len() >= acknowledged,
        "the new primary holds {} rows, fewer than the {acknowledged} acknowledged",
        committed.len()
    );
    let records = read_all(&pair.outbox.topic(), committed.len());
    assert_exactly_once_in_order(&records, &committed);
    assert!(
        relay.log_text().contains("resuming on a promoted standby"),
        "the relay resumed on the promoted standby:\n{}",
        relay.log_text()
    );
    // The promoted standby has no standby of its own yet: check names the fix.
    let report = check(&pair);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("WARN") && l.contains("synchronized_standby_slots is empty")),
        "{report}"
    );
    assert!(
        report.contains("fix: ALTER SYSTEM SET synchronized_standby_slots"),
        "{report}"
    );
    eprintln!(
        "PostgreSQL {major}: {} rows exactly once across the failover in {:?}",
        committed.len(),
        started.elapsed()
    );
}

#[test]
fn postgres_17_relay_resumes_on_the_promoted_standby() {
    resumes_on_the_promoted_standby(17);
}

#[test]
fn postgres_18_relay_resumes_on_the_promoted_standby() {
    resumes_on_the_promoted_standby(18);
}

/// Before 17 the slot stays on the old primary: the relay finds the promoted standby and stops
/// with one line saying the slot was lost in the failover and what to do.
#[test]
fn postgres_15_relay_says_the_slot_was_lost_in_the_failover() {
    let started = Instant::now();
    let pair = Pair::start(None);
    let mut relay = RelayProcess::start(&pair.spec);
    relay.wait_streaming(Duration::from_secs(60));
    fail_over(&pair, &relay);
    let status = relay.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the relay stops: {}",
        relay.log_text()
    );
    let lost: Vec<String> = relay
        .log_text()
        .lines()
        .filter(|line| line.contains("THE SLOT WAS LOST IN THE FAILOVER"))
        .map(str::to_owned)
        .collect();
    assert!(
        !lost.is_empty() && lost[0].contains("relay.name"),
        "one line says the slot is gone and what to do:\n{}",
        relay.log_text()
    );
    eprintln!(
        "PostgreSQL 15: lost-slot line after {:?}",
        started.elapsed()
    );
}

/// Before 17 with `snapshot.mode = "when_needed"`: the relay finds the promoted standby, says in
/// one line that the slot was lost and what that costs, recreates the slot there, snapshots the
/// captured table again and streams on: the table's topic ends with the new primary's rows.
#[test]
fn postgres_15_relay_with_when_needed_recovers_by_itself() {
    let started = Instant::now();
    let mut pair = Pair::start(None);
    pair.primary
        .psql(&format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, v bigint NOT NULL);
             INSERT INTO items SELECT i, 0 FROM generate_series(1, 500) i;
             ALTER PUBLICATION {} ADD TABLE items;",
            pair.spec.publication
        ))
        .expect("captured table");
    let topic = format!("{}.public.items", pair.spec.name);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(support::kafka::create_topic(&topic, 1));
    pair.spec.extra = format!(
        "[cdc]\ntopic_prefix = {:?}\n[snapshot]\nmode = \"when_needed\"\nchunk_size = 100\n",
        pair.spec.name
    );
    let relay = RelayProcess::start(&pair.spec);
    relay.wait_streaming(Duration::from_secs(60));
    pair.primary
        .psql("UPDATE items SET v = v + 1 WHERE id <= 50")
        .expect("a change streamed before the failover");
    fail_over(&pair, &relay);
    // Written on the new primary, while the relay finds it or after.
    pair.standby
        .psql("UPDATE items SET v = v + 10 WHERE id % 3 = 0; DELETE FROM items WHERE id = 7")
        .expect("changes on the new primary");

    let rows = pair
        .standby
        .psql("SELECT id || ' ' || v FROM items")
        .expect("the new primary's rows");
    let table: std::collections::BTreeMap<String, Option<i64>> = rows
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(id, v)| (id.to_owned(), v.parse().ok()))
        .chain([("7".to_owned(), None)])
        .collect();
    wait_until_blocking(
        Duration::from_secs(120),
        || {
            let mut last = std::collections::BTreeMap::new();
            for record in support::kafka::read_to_end(&topic) {
                let key: serde_json::Value =
                    serde_json::from_slice(record.key().expect("key")).expect("JSON key");
                let v = record.payload().and_then(|value| {
                    let value: serde_json::Value = serde_json::from_slice(value).ok()?;
                    value["after"]["v"].as_i64()
                });
                last.insert(key["id"].to_string(), v);
            }
            last == table
        },
        || {
            format!(
                "the topic's last record of every key is the new primary's row:\n{}",
                relay.log_text()
            )
        },
    );
    let lost: Vec<String> = relay
        .log_text()
        .lines()
        .filter(|line| line.contains("was lost in the failover"))
        .map(str::to_owned)
        .collect();
    assert!(
        lost.len() == 1 && lost[0].contains("OUTBOX EVENTS WRITTEN MEANWHILE ARE LOST"),
        "one line says the slot was lost and what recovering costs:\n{}",
        relay.log_text()
    );
    eprintln!(
        "PostgreSQL 15 with when_needed: recovered after the failover in {:?}",
        started.elapsed()
    );
}

/// A checkpoint written on one cluster is refused on another one behind the same URL, even with
/// a slot of the same name there.
#[test]
fn another_cluster_behind_the_url_is_refused() {
    let first = PrivateCluster::start("wal_level = logical", HBA);
    let url = |port: u16| format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    let mut spec = RelaySpec::for_url("other_cluster", &url(first.port));
    let publication = format!("CREATE PUBLICATION {} FOR ALL TABLES", spec.publication);
    first.psql(&publication).expect("publication");
    let mut relay = RelayProcess::start(&spec);
    relay.wait_streaming(Duration::from_secs(60));
    // An idle confirmation commits the first checkpoint.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(relay.wait_for_commits_past(0));
    relay.kill();

    let second = PrivateCluster::start("wal_level = logical", HBA);
    second.psql(&publication).expect("publication");
    second
        .psql(&format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
            spec.slot
        ))
        .expect("slot");
    spec.url = url(second.port);
    let mut refused = RelayProcess::start(&spec);
    let status = refused.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| !s.success()),
        "refused: {}",
        refused.log_text()
    );
    assert!(
        refused.log_text().contains("another cluster"),
        "says another cluster: {}",
        refused.log_text()
    );
}

/// A relay whose URL reaches only a standby does not capture there (whatever the major: 16+
/// could decode on a standby, but its slot would not survive a failover): it says why and waits,
/// and takes the standby once it is promoted.
#[test]
fn a_standby_is_refused_with_the_reason_until_promoted() {
    let pair = Pair::start(None);
    let mut spec = pair.spec.clone();
    spec.url = format!(
        "postgresql://postgres@127.0.0.1:{}/postgres",
        pair.standby.port
    );
    let relay = RelayProcess::start(&spec);
    wait_until_blocking(
        Duration::from_secs(60),
        || relay.log_text().contains("reached a standby (in recovery)"),
        || format!("the relay says it reached a standby:\n{}", relay.log_text()),
    );
    assert!(
        !relay.log_text().contains("starting replication"),
        "{}",
        relay.log_text()
    );
    pair.standby.promote();
    relay.wait_streaming(Duration::from_secs(60));
}
