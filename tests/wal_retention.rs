//! WAL retention with an idle outbox, measured alone.
//!
//! Retained WAL is a server-wide quantity: the slot's `restart_lsn` can only move as fast as the
//! walsender decodes the busy table's WAL, which needs a core. This test is its own test binary so
//! that no other test of the suite shares the machine with it while it measures (cargo runs test
//! binaries one after another); under a parallel million-row test it measured 67 MB against the
//! 64 MB bound, which is a measurement of the neighbour, not of outboxd.

mod support;

use std::time::Duration;

use support::postgres::PrivateCluster;
use support::relay::{outboxd, RelayProcess, RelaySpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_outbox_does_not_pin_the_wal_of_busy_tables() {
    // A cluster of its own: retained WAL depends on every transaction running in the cluster.
    // A slot's restart_lsn can only move to a running-transactions record, which Postgres logs
    // at checkpoints and every 15 s; small max_wal_size makes checkpoints frequent, as on a busy
    // server, and checkpoint_completion_target = 0 logs that record at once instead of after a
    // spread-out flush, so what is measured is outboxd's confirmation and not that cadence.
    let cluster = PrivateCluster::start(
        "wal_level = logical\nmax_wal_size = 32MB\nmin_wal_size = 32MB\ncheckpoint_completion_target = 0\nmax_replication_slots = 4\nmax_wal_senders = 4",
        &["host all all 127.0.0.1/32 trust"],
    );
    let url = format!("postgresql://postgres@127.0.0.1:{}/postgres", cluster.port);
    let spec = RelaySpec::for_url("relay_idle", &url);
    // The product's own migration: outbox table, publication and slot.
    let migrated = outboxd(&spec, &["migrate"], &[]);
    assert!(
        migrated.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let _relay = RelayProcess::start(&spec);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE filler (x text); ALTER TABLE filler ALTER x SET STORAGE EXTERNAL",
        )
        .await
        .expect("unpublished table");
    let retained = || async {
        let row = client
            .query_one(
                "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), -1)::bigint
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&spec.slot],
            )
            .await
            .expect("slot row");
        row.get::<_, i64>(0)
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

    // Over 500 MB of WAL (values stored uncompressed) on a table outside the publication.
    let start_lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    let mut max_retained = 0;
    // 2.5 MB per statement, at most ~10 MB/s: the rate of a busy server, and slow enough that
    // the walsender decodes it as it comes on a loaded two-core machine, so the test measures
    // outboxd's confirmations and not how far the server's decoding falls behind.
    for _ in 0..220 {
        client
            .batch_execute(
                "INSERT INTO filler SELECT repeat(md5(g::text), 300) FROM generate_series(1, 250) g",
            )
            .await
            .expect("filler");
        max_retained = max_retained.max(retained().await);
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
    assert!(
        written >= 500_000_000,
        "only {written} bytes of WAL written"
    );
    assert!(
        max_retained < 64 * 1024 * 1024,
        "the slot retained {max_retained} bytes of WAL while the outbox was idle"
    );
    eprintln!("{written} bytes of WAL written; the slot retained at most {max_retained}");
}
