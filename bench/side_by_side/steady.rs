//! The steady workload (W3): single-row outbox transactions at a fixed rate, each event's latency
//! from its commit to its receipt by a `read_committed` consumer, and the relay's memory meanwhile
//! (measured by [`common::steady_latency`], which says how).

use serde_json::{json, Value};

use crate::common::{self, Steady};
use crate::subjects::Kind;
use crate::support::postgres::create_pgoutput_slot;

/// Runs the steady workload against each relay of `kinds` in turn, each on a database of its own.
pub async fn run(steady: Steady, kinds: &[Kind]) -> Value {
    let mut report = json!({ "rate": steady.rate, "seconds": steady.seconds });
    for &kind in kinds {
        let figures = measure(steady, kind).await;
        eprintln!("[w3] {} {figures}", kind.name());
        report[kind.name()] = figures;
    }
    report
}

async fn measure(steady: Steady, kind: Kind) -> Value {
    let (db, client) = common::outbox_db("bench_w3").await;
    let aggregate = db.name.clone();
    create_pgoutput_slot(&client, &kind.slot(&db)).await;
    kind.create_topic(&aggregate).await;
    let relay = kind.start(&db);
    let topic = kind.topic(&aggregate);
    let metrics = relay.metrics_address();
    let figures = common::steady_latency(
        steady,
        &db,
        &aggregate,
        &topic,
        relay.pid(),
        metrics.as_deref(),
    )
    .await;
    relay.stop();
    figures
}
