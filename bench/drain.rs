//! Drain benchmark: a backlog of single-row outbox transactions read from a slot by
//! `pg_recvlogical` (the ceiling: the walsender's own speed, a C client writing to /dev/null) and
//! by outboxd's replication client, decoder, source and router into a null sink, in the same run
//! on two slots created at the same point.
//!
//! Each is run `DRAIN_ROUNDS` times (default 3), alternating, each on its own slot over the same
//! backlog; the medians are compared, so one noisy run does not decide the ratio.
//!
//! `cargo bench --bench drain` (set `DRAIN_TRANSACTIONS` to change the 200,000).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use outboxd::config::Settings;
use outboxd::pg::schema::Schema;
use outboxd::pg::wire::{ConnectOptions, PgOutputOptions, ReplicationConnection, Streaming};
use outboxd::pg::{Lsn, PgTimestamp};
use outboxd::route::{RouteContext, Router};
use outboxd::source::logical::{LogicalSource, SourceEvent};
use support::postgres::{create_pgoutput_slot, TestDb};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let transactions = common::transactions();
    let (db, client) = common::outbox_db("bench_drain").await;
    let rounds: usize = std::env::var("DRAIN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let slots: Vec<(String, String)> = (0..rounds)
        .map(|i| (format!("{}_a{i}", db.slot), format!("{}_b{i}", db.slot)))
        .collect();
    for slot in slots.iter().flat_map(|(a, b)| [a, b]) {
        create_pgoutput_slot(&client, slot).await;
    }
    client
        .batch_execute(
            "CREATE PROCEDURE fill(n int) LANGUAGE plpgsql AS $$
             BEGIN
               FOR i IN 1..n LOOP
                 INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
                 VALUES ('order', 'order-' || (i % 1000), 'OrderCreated',
                         jsonb_build_object('id', i, 'customer', 'customer-' || (i % 977),
                           'lines', jsonb_build_array(jsonb_build_object('sku', 'sku-1', 'qty', 1),
                                                      jsonb_build_object('sku', 'sku-2', 'qty', 2)),
                           'note', repeat('x', 330)));
                 COMMIT;
               END LOOP;
             END $$;",
        )
        .await
        .expect("procedure");
    let filling = Instant::now();
    client
        .batch_execute(&format!("CALL fill({transactions})"))
        .await
        .expect("backlog");
    let fill_time = filling.elapsed();
    let end: Lsn = common::current_lsn(&client).await.parse().expect("lsn");

    let (mut ceiling, mut ours) = (Vec::new(), Vec::new());
    for (ceiling_slot, our_slot) in &slots {
        ceiling.push(common::pg_recvlogical(&db, ceiling_slot, &end.to_string()));
        let (elapsed, events) = outboxd_drain(&db, our_slot, end).await;
        assert_eq!(events, transactions, "every row became a record");
        ours.push(elapsed);
    }
    let rate = |d: &Duration| transactions as f64 / d.as_secs_f64();
    let median = |runs: &mut Vec<Duration>| {
        runs.sort();
        runs[runs.len() / 2]
    };
    let (ceiling_median, our_median) = (median(&mut ceiling), median(&mut ours));
    let report = serde_json::json!({
        "benchmark": "drain",
        "transactions": transactions,
        "rounds": rounds,
        "backlog_fill_seconds": fill_time.as_secs_f64(),
        "pg_recvlogical_txn_per_s": ceiling.iter().map(rate).collect::<Vec<_>>(),
        "outboxd_txn_per_s": ours.iter().map(rate).collect::<Vec<_>>(),
        "pg_recvlogical_median_txn_per_s": rate(&ceiling_median),
        "outboxd_median_txn_per_s": rate(&our_median),
        "ratio": rate(&our_median) / rate(&ceiling_median),
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
}

/// The router of the default configuration (outbox `public.outbox`, Debezium envelope).
fn default_router() -> Router {
    let file = tempfile::NamedTempFile::with_suffix(".toml").expect("temp file");
    std::fs::write(
        file.path(),
        "[postgres]\nurl = \"postgresql://u@h/db\"\n[kafka]\nbootstrap_servers = \"b:9092\"\n",
    )
    .expect("write config");
    Settings::load(file.path())
        .expect("config loads")
        .router("db")
        .expect("router")
}

/// outboxd's path from the slot to records, dropped at the end: returns the time and the records.
async fn outboxd_drain(db: &TestDb, slot: &str, end: Lsn) -> (Duration, usize) {
    let router = default_router();
    let schema = Schema::default();
    let mut routed = Vec::new();
    let started = Instant::now();
    let options: ConnectOptions = db.url.parse().expect("url");
    let stream = ReplicationConnection::connect(&options)
        .await
        .expect("connect")
        .start_replication(
            slot,
            Lsn::ZERO,
            &PgOutputOptions {
                proto_version: 1,
                publication_names: vec![db.publication.clone()],
                messages: true,
                streaming: Streaming::Off,
                binary: false,
            },
        )
        .await
        .expect("start");
    let mut source = LogicalSource::new(stream, 1);
    let mut records = 0;
    loop {
        match source.next().await.expect("stream").expect("not ended") {
            SourceEvent::Change { lsn, change } => {
                let context = RouteContext {
                    schema: &schema,
                    xid: None,
                    commit_ts: PgTimestamp::now(),
                    lsn: Some(lsn),
                    last_commit_lsn: Some(Lsn::ZERO),
                };
                assert_eq!(
                    router.route(&change, &context, &mut routed),
                    0,
                    "no dead letter"
                );
                records += routed.len();
                routed.clear();
            }
            SourceEvent::Commit(commit) if commit.end_lsn >= end => break,
            SourceEvent::Keepalive { wal_end } if wal_end >= end => break,
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    source.into_stream().stop().await.expect("stop");
    (elapsed, records)
}
