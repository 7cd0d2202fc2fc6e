//! Backlog workloads (W1, W2, W4): the backlog is committed while every reader's slot waits at the
//! same point, then `pg_recvlogical` (the walsender's ceiling) and each relay drain it in turn. A
//! relay's drain time runs from its process start until a `read_committed` consumer has every
//! event, so its startup is included, as a user restarting it on a backlog would see.

use std::time::Instant;

use serde_json::{json, Value};

use crate::common;
use crate::subjects::Kind;
use crate::support::postgres::create_pgoutput_slot;

/// A backlog of `transactions` Postgres transactions of `rows` outbox rows each.
#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    /// Its name in the results (`w1`, ...).
    pub name: &'static str,
    /// Postgres transactions.
    pub transactions: usize,
    /// Outbox rows in each.
    pub rows: usize,
}

impl Backlog {
    fn events(&self) -> usize {
        self.transactions * self.rows
    }
}

/// Runs `backlog` through `pg_recvlogical` and every relay of `kinds`; with `broker_ceiling`, also
/// measures the broker's transactional ceiling for the same record size.
pub async fn run(backlog: Backlog, kinds: &[Kind], broker_ceiling: bool) -> Value {
    let events = backlog.events();
    eprintln!(
        "[{}] {} transactions x {} rows",
        backlog.name, backlog.transactions, backlog.rows
    );
    let (db, client) = common::outbox_db(&format!("bench_{}", backlog.name)).await;
    let aggregate = db.name.clone();
    let ceiling_slot = format!("{}_recvlogical", db.slot);
    create_pgoutput_slot(&client, &ceiling_slot).await;
    for kind in kinds {
        create_pgoutput_slot(&client, &kind.slot(&db)).await;
        kind.create_topic(&aggregate).await;
    }
    let fill = common::fill(&client, &aggregate, backlog.transactions, backlog.rows).await;
    let end = common::current_lsn(&client).await;
    let record_bytes = common::payload_bytes(&client).await;

    let walsender = common::pg_recvlogical(&db, &ceiling_slot, &end);
    let mut report = json!({
        "transactions": backlog.transactions,
        "rows_per_transaction": backlog.rows,
        "events": events,
        "record_bytes": record_bytes,
        "fill_seconds": fill.as_secs_f64(),
        "pg_recvlogical": common::rate(events, walsender),
    });
    eprintln!(
        "[{}] pg_recvlogical {:.1} s",
        backlog.name,
        walsender.as_secs_f64()
    );
    if broker_ceiling {
        let perf_topic = db.topic("perf");
        crate::support::kafka::create_topic(&perf_topic, 3).await;
        let records_per_s = common::producer_performance(&perf_topic, events, record_bytes);
        report["kafka_producer_performance"] = json!({ "events_per_s": records_per_s });
        eprintln!(
            "[{}] ProducerPerformance {records_per_s:.0} records/s",
            backlog.name
        );
    }
    for &kind in kinds {
        let started = Instant::now();
        let relay = kind.start(&db);
        let topic = kind.topic(&aggregate);
        let figures = common::drained(kind.name(), &topic, events, started, relay.pid()).await;
        relay.stop();
        eprintln!("[{}] {} {figures}", backlog.name, kind.name());
        report[kind.name()] = figures;
    }
    report
}
