//! Poll-mode benchmark (issue 6), in one run on the dev environment's Postgres and broker:
//!
//! - Drain: a backlog of 200,000 single-row outbox transactions (~500-byte JSON payloads), committed
//!   while a pgoutput slot waits before it. outboxd drains it in logical mode first (from the slot;
//!   it leaves the rows), then in poll mode from the same rows (which it deletes), each with its own
//!   relay name and topic. A drain runs from the relay's process start until a `read_committed`
//!   consumer holds every event. `OUTBOXD_BENCH_ROUNDS` rounds (default 3), each on a backlog of its
//!   own: single drains vary by ±20% and more on a shared 2-core machine, so medians are compared.
//!   Reported: events/s of each mode and poll ÷ logical, per round and of the medians.
//! - Latency: 1,000 single-row transactions/s for 30 s (after a 5 s warm-up) in poll mode, once
//!   with the notify trigger and `poll.notify = true`, once without the trigger and with
//!   `poll.notify = false` (as `outboxd migrate` leaves the table for each), each on a fresh
//!   database: p50/p95/p99 from the writer's commit to the consumer's receipt.
//!
//! outboxd runs with only the required keys, the mode and the topic template set: every `[poll]`
//! and `[batch]` setting at its default (batch of 1,000 rows, `min_interval` 10 ms, `interval` 1 s).
//!
//! `cargo bench --bench poll`. `OUTBOXD_BENCH_SCALE=0.05` shrinks the backlog and the measured
//! phase for a quick try; `OUTBOXD_BENCH_OUT` names the JSON file (default: stdout).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::Steady;
use support::kafka::create_topic;
use support::postgres::{create_pgoutput_slot, TestDb};
use support::relay::{RelayProcess, RelaySpec};

/// The backlog, before scaling.
const BACKLOG: usize = 200_000;
/// The steady workload, before scaling its length.
const RATE: usize = 1_000;
const SECONDS: usize = 30;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let load_before = common::loadavg();

    let rounds = common::env("OUTBOXD_BENCH_ROUNDS").map_or(3, |v| v.parse().expect("a count"));
    let drain = drain(common::scaled(BACKLOG), rounds).await;
    let steady = Steady {
        rate: RATE,
        seconds: common::scaled(SECONDS) as u64,
    };
    let latency = latency(steady).await;

    common::write_report(&json!({
        "benchmark": "poll",
        "started_at": started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "duration_seconds": started.elapsed().as_secs_f64(),
        "scale": common::scale(),
        "environment": common::environment(load_before).await,
        "drain": drain,
        "latency": latency,
    }));
}

/// outboxd in `mode` over `db`, with a relay name, offsets topic and topic template of the mode's
/// own (`<mode>.<aggregate type>`), and `extra` TOML.
fn relay(db: &TestDb, mode: &str, extra: &str) -> RelayProcess {
    let mut spec = RelaySpec::for_db(db);
    spec.name = format!("{}_{mode}", db.name);
    spec.mode = mode.into();
    spec.offsets_topic = db.topic(&format!("{mode}_offsets"));
    spec.extra = format!("[outbox]\ntopic = \"{mode}.${{routedByValue}}\"\n{extra}");
    common::start_outboxd(spec)
}

/// The topic `relay(_, mode, _)` writes the events of aggregate type `aggregate` to.
fn topic(mode: &str, aggregate: &str) -> String {
    format!("{mode}.{aggregate}")
}

/// `rounds` rounds of [`drain_round`]; the median rate of each mode and their ratio.
async fn drain(transactions: usize, rounds: usize) -> Value {
    let mut runs = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        runs.push(drain_round(transactions, round).await);
    }
    let median = |mode: &str| {
        common::median(
            runs.iter()
                .filter_map(|run| run[mode]["events_per_s"].as_f64())
                .collect(),
        )
    };
    let mut report = json!({
        "transactions": transactions,
        "events": transactions,
        "logical": { "events_per_s": median("logical") },
        "poll": { "events_per_s": median("poll") },
    });
    report["poll_over_logical"] = json!(ratio(&report, "poll", "logical", "/events_per_s"));
    report["rounds"] = json!(runs);
    eprintln!(
        "[drain] medians: logical {:.0}/s, poll {:.0}/s, poll/logical {:.2}",
        median("logical"),
        median("poll"),
        median("poll") / median("logical")
    );
    report
}

/// Logical then poll mode on one backlog of `transactions` single-row transactions.
async fn drain_round(transactions: usize, round: usize) -> Value {
    let events = transactions;
    eprintln!("[drain {round}] {transactions} single-row transactions");
    let (db, client) = common::outbox_db("bench_poll_drain").await;
    // No notify trigger: a backlog is drained in full batches, which never wait for a wake-up.
    common::add_poll_mode(&client, false).await;
    let aggregate = db.name.clone();
    create_pgoutput_slot(&client, &db.slot).await;
    for mode in ["logical", "poll"] {
        create_topic(&topic(mode, &aggregate), 3).await;
    }
    let fill = common::fill(&client, &aggregate, transactions, 1).await;
    eprintln!("[drain {round}] filled in {:.1} s", fill.as_secs_f64());

    let mut report = json!({
        "record_bytes": common::payload_bytes(&client).await,
        "fill_seconds": fill.as_secs_f64(),
    });
    // Logical mode leaves the rows; poll mode then takes them away.
    for mode in ["logical", "poll"] {
        let started = Instant::now();
        let mut relay = relay(&db, mode, "");
        let topic = topic(mode, &aggregate);
        let figures = common::drained(mode, &topic, events, started, relay.pid()).await;
        relay.signal_and_wait("TERM", Duration::from_secs(30));
        eprintln!("[drain {round}] {mode} {figures}");
        report[mode] = figures;
    }
    let left: i64 = client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .expect("rows left")
        .get(0);
    report["poll"]["rows_left"] = json!(left);
    report["poll_over_logical"] = json!(ratio(&report, "poll", "logical", "/events_per_s"));
    report
}

/// Poll mode under `steady`, with and without the notify wake-up.
async fn latency(steady: Steady) -> Value {
    let mut report = json!({
        "rate": steady.rate,
        "seconds": steady.seconds,
        "warm_up_seconds": common::WARM_UP.as_secs(),
    });
    for (name, notify) in [("notify_on", true), ("notify_off", false)] {
        let (db, client) = common::outbox_db(&format!("bench_poll_{name}")).await;
        common::add_poll_mode(&client, notify).await;
        let aggregate = db.name.clone();
        let topic = topic("poll", &aggregate);
        create_topic(&topic, 3).await;
        let mut relay = relay(&db, "poll", &format!("[poll]\nnotify = {notify}\n"));
        // No stage table: poll mode knows no Postgres commit times.
        let figures =
            common::steady_latency(steady, &db, &aggregate, &topic, relay.pid(), None).await;
        let listening = listens(&relay);
        relay.signal_and_wait("TERM", Duration::from_secs(30));
        assert_eq!(listening, Some(notify), "{name}: whether the relay LISTENs");
        eprintln!("[latency] {name} {figures}");
        report[name] = figures;
    }
    report["notify_off_over_on"] = json!({
        "p50": ratio(&report, "notify_off", "notify_on", "/latency_ms/p50"),
        "p95": ratio(&report, "notify_off", "notify_on", "/latency_ms/p95"),
        "p99": ratio(&report, "notify_off", "notify_on", "/latency_ms/p99"),
    });
    report
}

/// Whether the relay said it `LISTEN`s for the notify trigger when it started to poll.
fn listens(relay: &RelayProcess) -> Option<bool> {
    relay.log_text().lines().find_map(|line| {
        let entry: Value = serde_json::from_str(line).ok()?;
        let fields = &entry["fields"];
        (fields["message"] == "starting to poll").then(|| fields["notify"].as_bool())?
    })
}

/// `report[a]` ÷ `report[b]` at JSON `pointer`.
fn ratio(report: &Value, a: &str, b: &str, pointer: &str) -> Option<f64> {
    let figure = |side: &str| report[side].pointer(pointer).and_then(Value::as_f64);
    Some(figure(a)? / figure(b)?)
}
