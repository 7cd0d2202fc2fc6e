//! The relays compared, each started the way its user starts it: the `outboxd` release binary with a
//! config file that sets only what is required, and Debezium Server's own `run.sh` with an
//! `application.properties` (Postgres connector on pgoutput, the outbox event router, Kafka sink),
//! otherwise at its defaults. Both read an existing slot over the same publication and write the
//! same records (key = aggregate id, value = the payload JSON) to topics of their own.

use std::time::Duration;

use crate::common;
use crate::support::debezium::DebeziumServer;
use crate::support::kafka::create_topic;
use crate::support::postgres::TestDb;
use crate::support::relay::{RelayProcess, RelaySpec};

/// Which relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `target/release/outboxd run --config outboxd.toml`: exactly-once, transactional producer.
    Outboxd,
    /// Debezium Server: at-least-once, its Kafka sink does not use transactions.
    Debezium,
}

impl Kind {
    /// outboxd, and Debezium Server when `bench/run` resolved one (`OUTBOXD_BENCH_DEBEZIUM_HOME`).
    pub fn selected() -> Vec<Kind> {
        let mut kinds = vec![Kind::Outboxd];
        if common::debezium_home().is_some() {
            kinds.push(Kind::Debezium);
        } else {
            eprintln!("OUTBOXD_BENCH_DEBEZIUM_HOME is not set: Debezium Server is left out (bench/run sets it)");
        }
        kinds
    }

    /// Its name in the results.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Outboxd => "outboxd",
            Kind::Debezium => "debezium",
        }
    }

    /// The topic its events of aggregate type `aggregate` go to.
    pub fn topic(self, aggregate: &str) -> String {
        match self {
            Kind::Outboxd => format!("outbox.event.{aggregate}"),
            Kind::Debezium => format!("debezium.outbox.event.{aggregate}"),
        }
    }

    /// The slot it reads in `db` (create it before the backlog is written).
    pub fn slot(self, db: &TestDb) -> String {
        format!("{}_{}", db.slot, self.name())
    }

    /// Creates its topic for `aggregate` with 3 partitions, as an operator would beforehand (both
    /// relays hash keys over partitions the same way).
    pub async fn create_topic(self, aggregate: &str) {
        create_topic(&self.topic(aggregate), 3).await;
    }

    /// Starts it on `db` and its slot.
    pub fn start(self, db: &TestDb) -> Relay {
        match self {
            Kind::Outboxd => {
                let mut spec = RelaySpec::for_db(db);
                spec.slot = self.slot(db);
                Relay::Outboxd(common::start_outboxd(spec))
            }
            Kind::Debezium => Relay::Debezium(common::start_debezium(
                db,
                &self.slot(db),
                &outbox_properties(),
            )),
        }
    }
}

/// A running relay; stopped when dropped.
#[derive(Debug)]
pub enum Relay {
    /// The outboxd process.
    Outboxd(RelayProcess),
    /// The Debezium Server JVM.
    Debezium(DebeziumServer),
}

impl Relay {
    /// The process whose memory is measured (for Debezium the JVM: `run.sh` execs it).
    pub fn pid(&self) -> u32 {
        match self {
            Relay::Outboxd(process) => process.pid(),
            Relay::Debezium(server) => server.pid(),
        }
    }

    /// Where outboxd serves `/metrics` (Debezium Server exports no comparable histograms).
    pub fn metrics_address(&self) -> Option<String> {
        match self {
            Relay::Outboxd(process) => Some(process.metrics_address(Duration::from_secs(30))),
            Relay::Debezium(_) => None,
        }
    }

    /// SIGTERM and wait for the exit (the events are in Kafka by then, so this is not timed).
    pub fn stop(self) {
        match self {
            Relay::Outboxd(mut process) => {
                process.signal_and_wait("TERM", Duration::from_secs(30));
            }
            Relay::Debezium(server) => drop(server),
        }
    }
}

/// The workload's keys of Debezium Server's configuration ([`common::start_debezium`] adds the
/// connection's): no snapshot (the backlog is in the slot), the outbox router with the payload
/// expanded as JSON (as outboxd's default). `\\${` keeps Quarkus from expanding the router's
/// `${routedByValue}` itself.
fn outbox_properties() -> String {
    format!(
        "debezium.source.snapshot.mode=no_data
debezium.source.table.include.list=public.outbox
debezium.source.tombstones.on.delete=false
debezium.transforms=outbox
debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
debezium.transforms.outbox.table.expand.json.payload=true
debezium.transforms.outbox.route.topic.replacement={topic}
",
        topic = Kind::Debezium.topic("\\\\${routedByValue}"),
    )
}
