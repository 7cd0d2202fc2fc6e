//! WAL retention with an idle outbox, measured alone.
//!
//! Retained WAL is a server-wide quantity: the slot's `restart_lsn` can only move as fast as the
//! walsender decodes the busy table's WAL, which needs a core. This test is its own test binary so
//! that no other test runs in its process: beside the parallel million-row test it measured 67 MB
//! against the 64 MB bound, which is a measurement of the neighbour, not of outboxd. Its two tests
//! take turns ([`alone`]) for the same reason: each writes ~10 MB/s of WAL into a cluster of its
//! own. `scripts/test` runs three test binaries at a time, so neither bound may depend on when the
//! machine's disk lets a checkpoint finish either: on 14 and 15 the writer logs the server's
//! records itself, on 16+ the relay does.

mod support;

use std::process::Output;
use std::time::Duration;

use support::postgres::{pg_bin_of, PrivateCluster};
use support::relay::{outboxd, RelayProcess, RelaySpec};

/// The most WAL the relay may leave unconfirmed behind what the walsender decoded: ~2.4 s of the
/// writer's WAL, against idle confirmations every 200 ms (the tests' interval) and a Kafka commit
/// each (3.4-6.7 MB measured, in CI too).
const RELAYS_SHARE: i64 = 24 * 1024 * 1024;

/// Statements (2.5 MB of WAL each) between two checkpoints of the test on 14 and 15: 20 MB, within
/// the 16-32 MB at which `max_wal_size = 32MB` made the server checkpoint. The slot then retains
/// one interval and the relay's share: 26.0 MB measured twice, 23.4 MB twice beside a writer that
/// fsyncs 200 MB at a time and two busy loops (36.4 MB with the server's own checkpoints; 44.2 MB
/// when a transaction is held open across each `CHECKPOINT`, which moves restart_lsn only to the
/// record before it).
const CHECKPOINT_EVERY: usize = 8;

/// Held by each test while it runs: cargo runs a binary's tests in parallel.
async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// Settings of a cluster of its own: retained WAL depends on every transaction running in it.
const CLUSTER: &str = "wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_outbox_does_not_pin_the_wal_of_busy_tables() {
    let _alone = alone().await;
    // A slot's restart_lsn can only move to a running-transactions record, which PostgreSQL 14
    // and 15 log at checkpoints and after 15 s of activity. A busy server checkpoints every few
    // tens of MB; here the writer runs a CHECKPOINT itself every CHECKPOINT_EVERY statements,
    // between two of them, because the server's own cadence would measure the machine and not
    // outboxd: a checkpoint started by WAL volume logs its record once its writes and fsyncs are
    // done, at a moment that depends on the disk, and a record logged while a transaction is
    // open moves restart_lsn only to the record before that transaction. CI measured 70.2 MB that
    // way, against 36.4 MB usually (the relay 5.2 MB behind and the walsender 48 bytes, so one
    // whole extra checkpoint interval). A large max_wal_size and checkpoint_timeout keep the
    // server from starting checkpoints of its own.
    let cluster = PrivateCluster::start(
        &format!("{CLUSTER}\nmax_wal_size = 4GB\ncheckpoint_timeout = 1h"),
        &["host all all 127.0.0.1/32 trust"],
    );
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let spec = RelaySpec::for_url("relay_idle", &url);
    // The product's own migration: outbox table, publication and slot.
    succeeded(&outboxd(&spec, &["migrate"], &[]), "migrate");
    let (_relay, measured) = retained_while_idle(&url, &spec, 220, Some(CHECKPOINT_EVERY)).await;
    measured.holds(
        "the dev environment's PostgreSQL",
        500_000_000,
        64 * 1024 * 1024,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_16_and_later_an_idle_slot_follows_its_confirmations_without_checkpoints() {
    let _alone = alone().await;
    // The dev environment's major when it has pg_log_standby_snapshot(), else the newest.
    let major = std::env::var("OUTBOXD_PG_MAJOR")
        .ok()
        .and_then(|m| m.parse().ok())
        .filter(|m| *m >= 16)
        .unwrap_or(18);
    let bin = pg_bin_of(Some(major))
        .unwrap_or_else(|| panic!("PostgreSQL {major} is not set up: run scripts/setup test"));
    // The default checkpoint settings (one every 5 min or 1 GB): without the relay's records
    // restart_lsn would move only at the server's own, every 15 s, 150 MB at this rate.
    let cluster = PrivateCluster::start_with(&bin, CLUSTER, &["host all all 127.0.0.1/32 trust"]);
    let admin = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let spec = RelaySpec::for_url(
        "relay_idle16",
        &admin.replacen("postgres@", "relay_idle@", 1),
    );
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute("CREATE ROLE relay_idle LOGIN REPLICATION")
        .await
        .expect("relay role");
    // migrate, as a superuser, grants the relay's role the function; check sees it.
    let migrated = outboxd(&spec, &["migrate", "--admin-url", &admin], &[]);
    succeeded(&migrated, "migrate");
    let said = String::from_utf8_lossy(&migrated.stdout);
    assert!(
        said.contains("granted EXECUTE on pg_catalog.pg_log_standby_snapshot() to \"relay_idle\""),
        "{said}"
    );
    let checked = outboxd(&spec, &["check"], &[]);
    let report = succeeded(&checked, "check");
    assert!(
        report.contains(
            "ok    postgres  role relay_idle may call pg_catalog.pg_log_standby_snapshot()"
        ),
        "{report}"
    );
    // Without the grant check warns and names it; its fix runs as printed.
    client
        .batch_execute(
            "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_log_standby_snapshot() FROM relay_idle",
        )
        .await
        .expect("revoke");
    let report = succeeded(&outboxd(&spec, &["check"], &[]), "check");
    assert!(
        report.contains("WARN  postgres  role relay_idle may not call"),
        "{report}"
    );
    let fix = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("fix: GRANT EXECUTE"))
        .and_then(|rest| rest.split_once(';'))
        .map(|(grant, _)| format!("GRANT EXECUTE{grant}"))
        .unwrap_or_else(|| panic!("the grant as the fix:\n{report}"));
    client.batch_execute(&fix).await.expect("the fix runs");

    let (_relay, measured) = retained_while_idle(&admin, &spec, 120, None).await;
    measured.holds(
        &format!("PostgreSQL {major}"),
        270_000_000,
        32 * 1024 * 1024,
    );
}

/// Asserts that an `outboxd` command succeeded; its standard output.
fn succeeded(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What one run of [`retained_while_idle`] measured.
struct Retention {
    /// WAL written meanwhile, in bytes.
    written: i64,
    /// The sample at which the slot retained the most WAL.
    peak: Sample,
    /// The most the relay left unconfirmed at any sample: its own share, whatever the server's
    /// checkpoints do.
    most_unconfirmed: i64,
}

impl Retention {
    /// Asserts that at least `written` bytes of WAL were written, that the relay's share stayed
    /// under [`RELAYS_SHARE`] and the slot's retained WAL under `retained`; prints the figures.
    fn holds(&self, server: &str, written: i64, retained: i64) {
        assert!(
            self.written >= written,
            "{server}: only {} bytes of WAL written",
            self.written
        );
        assert!(
            self.most_unconfirmed < RELAYS_SHARE,
            "{server}: the relay confirmed too slowly: {self}"
        );
        assert!(
            self.peak.retained < retained,
            "{server}: the slot retained too much WAL while the outbox was idle: {self}"
        );
        eprintln!("{server}: {self}");
    }
}

/// Where the slot's WAL sat at one moment, in bytes behind the server's current position: what
/// the walsender has not decoded yet is the server's share, what it decoded but the relay has not
/// confirmed is the relay's, and what lies behind the confirmed position is the slot's wait for a
/// running-transactions record.
#[derive(Clone, Copy, Default)]
struct Sample {
    retained: i64,
    undecoded: i64,
    unconfirmed: i64,
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Sample {
            retained,
            undecoded,
            unconfirmed,
        } = self.peak;
        write!(
            f,
            "{} bytes of WAL written; the slot retained at most {retained}, when the walsender \
             had {undecoded} bytes left to decode and the relay had not confirmed \
             {unconfirmed} bytes more; the relay left at most {} bytes unconfirmed",
            self.written, self.most_unconfirmed
        )
    }
}

/// Runs the relay of `spec` (whose outbox, publication and slot exist) while a table outside the
/// publication writes `statements` x 2.5 MB of WAL through the superuser URL `url`, with a
/// `CHECKPOINT` after every `checkpoint_every` of them when given: the relay, still running (a
/// failing assertion prints its log), and what was measured.
async fn retained_while_idle(
    url: &str,
    spec: &RelaySpec,
    statements: usize,
    checkpoint_every: Option<usize>,
) -> (RelayProcess, Retention) {
    let relay = RelayProcess::start(spec);
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE filler (x text); ALTER TABLE filler ALTER x SET STORAGE EXTERNAL",
        )
        .await
        .expect("unpublished table");
    let sample = || async {
        let row = client
            .query_one(
                "SELECT coalesce(pg_wal_lsn_diff(now, s.restart_lsn), -1)::bigint,
                        coalesce(pg_wal_lsn_diff(now, r.sent_lsn), -1)::bigint,
                        coalesce(pg_wal_lsn_diff(r.sent_lsn, s.confirmed_flush_lsn), -1)::bigint
                 FROM (SELECT pg_current_wal_lsn() AS now) c
                 JOIN pg_replication_slots s ON s.slot_name = $1
                 LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid",
                &[&spec.slot],
            )
            .await
            .expect("slot row");
        Sample {
            retained: row.get(0),
            undecoded: row.get(1),
            unconfirmed: row.get(2),
        }
    };
    // The relay takes the slot migrate created.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active",
            &[&spec.slot],
        )
        .await
        .expect("slot query")
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never took its slot"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // WAL (values stored uncompressed) on a table outside the publication.
    let start_lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    let mut peak = Sample::default();
    let mut most_unconfirmed = 0;
    // 2.5 MB per statement, at most ~10 MB/s: the rate of a busy server, and slow enough that
    // the walsender decodes it as it comes on a loaded two-core machine, so the test measures
    // outboxd's confirmations and not how far the server's decoding falls behind.
    for statement in 1..=statements {
        client
            .batch_execute(
                "INSERT INTO filler SELECT repeat(md5(g::text), 300) FROM generate_series(1, 250) g",
            )
            .await
            .expect("filler");
        if checkpoint_every.is_some_and(|every| statement % every == 0) {
            client
                .batch_execute("CHECKPOINT")
                .await
                .expect("checkpoint");
        }
        let now = sample().await;
        if now.retained > peak.retained {
            peak = now;
        }
        most_unconfirmed = most_unconfirmed.max(now.unconfirmed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let written: i64 = client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint",
            &[&start_lsn],
        )
        .await
        .expect("written")
        .get(0);
    (
        relay,
        Retention {
            written,
            peak,
            most_unconfirmed,
        },
    )
}
