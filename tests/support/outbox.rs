//! Outbox workloads for the exactly-once tests of both modes: writers whose events carry a per-key
//! number taken under the key's lock, and the check that a topic holds each event once, per key in
//! number order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::seq::IndexedRandom;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;

use super::kafka::{read_past_at, value_text};
use super::postgres::connect;

/// An outbox table (migrations 0001 and 0004) with a `key_seq` table of per-key numbers, written
/// by the functions below.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// Superuser URL of the database.
    pub url: String,
    /// The aggregatetype of this test's events, so its topic is its own.
    pub aggregate_type: String,
}

impl Outbox {
    /// A new SQL connection as superuser.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// Creates the outbox table (with poll mode's `seq`) and the per-key sequence table.
    pub async fn create_tables(&self) {
        self.client()
            .await
            .batch_execute(&format!(
                "{}\n{}\nCREATE TABLE key_seq (aggregateid text PRIMARY KEY, n int NOT NULL);",
                include_str!("../../migrations/0001_outbox.sql"),
                include_str!("../../migrations/0004_poll.sql"),
            ))
            .await
            .expect("outbox tables");
    }

    /// The outbox tables of [`Self::create_tables`] in `db`, and `db`'s publication of the outbox;
    /// events of `db`'s own aggregate type (and so topic).
    pub async fn published(db: &super::postgres::TestDb) -> Outbox {
        let outbox = Outbox {
            url: db.url.clone(),
            aggregate_type: db.name.clone(),
        };
        outbox.create_tables().await;
        outbox
            .client()
            .await
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE outbox;",
                db.publication
            ))
            .await
            .expect("publication");
        outbox
    }

    /// The topic of this test's events.
    pub fn topic(&self) -> String {
        format!("outbox.event.{}", self.aggregate_type)
    }

    /// Commits one transaction with one outbox row per key; each row's payload carries the key's
    /// next number, taken under the key's row lock before the row is inserted, so per key the
    /// numbers follow commit order (and so does the row's `seq`).
    pub async fn write(&self, client: &tokio_postgres::Client, keys: &[&str]) {
        client
            .batch_execute(&self.transaction(keys))
            .await
            .expect("writer transaction");
    }

    /// The SQL of [`Self::write`]'s transaction.
    pub fn transaction(&self, keys: &[&str]) -> String {
        let mut sorted = keys.to_vec();
        sorted.sort_unstable(); // one lock order for every writer: no deadlocks
        let mut sql = String::from("BEGIN;");
        for key in sorted {
            sql.push_str(&format!(
                "WITH s AS (INSERT INTO key_seq VALUES ('{key}', 1) ON CONFLICT (aggregateid) \
                   DO UPDATE SET n = key_seq.n + 1 RETURNING n)
                 INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
                   SELECT '{agg}', '{key}', 'counted', jsonb_build_object('key', '{key}', 'n', n) FROM s;",
                agg = self.aggregate_type
            ));
        }
        sql.push_str("COMMIT;");
        sql
    }

    /// Event ids in the outbox table.
    pub async fn ids(&self) -> BTreeSet<String> {
        self.client()
            .await
            .query("SELECT id::text FROM outbox", &[])
            .await
            .expect("select ids")
            .iter()
            .map(|row| row.get(0))
            .collect()
    }
}

/// Keeps committing outbox transactions until told to stop: mostly a few rows, now and then a
/// large one (10,000 rows), so that kills land inside large transactions too. Returns how many
/// transactions it made.
pub fn spawn_writer(outbox: Outbox, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let client = outbox.client().await;
        let mut transactions = 0;
        while !stop.load(Ordering::Relaxed) {
            transactions += 1;
            if transactions % 300 == 0 {
                // A large transaction: 10,000 rows over the keys, numbered in key order.
                client
                    .batch_execute(&format!(
                        "BEGIN;
                         INSERT INTO key_seq SELECT k, 0 FROM unnest(ARRAY['{keys}']) k
                           ON CONFLICT DO NOTHING;
                         SELECT 1 FROM key_seq ORDER BY aggregateid FOR UPDATE;
                         INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
                           SELECT '{agg}', s.aggregateid, 'bulk',
                                  jsonb_build_object('key', s.aggregateid, 'n', s.n + g)
                           FROM key_seq s, generate_series(1, 200) g
                           ORDER BY s.aggregateid, g;
                         UPDATE key_seq SET n = n + 200;
                         COMMIT;",
                        keys = KEYS.join("','"),
                        agg = outbox.aggregate_type
                    ))
                    .await
                    .expect("large transaction");
            } else {
                let keys = random_keys();
                outbox.write(&client, &keys[..3]).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        transactions
    })
}

/// What the consumer got, checked: no duplicate, every id once, per key 1, 2, 3, ... in order.
pub fn assert_exactly_once_in_order(records: &[OwnedMessage], expected_ids: &BTreeSet<String>) {
    let mut ids = BTreeSet::new();
    let mut per_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for record in records {
        let id = record
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "id"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .expect("record has an id header");
        assert!(ids.insert(id.clone()), "duplicate event {id}");
        let payload: serde_json::Value =
            serde_json::from_str(&value_text(record)).expect("payload");
        let key = String::from_utf8_lossy(record.key().expect("keyed")).into_owned();
        assert_eq!(payload["key"], key.as_str(), "key is the aggregateid");
        per_key
            .entry(key)
            .or_default()
            .push(payload["n"].as_i64().expect("n"));
    }
    assert_eq!(ids.len(), expected_ids.len(), "event count");
    assert!(
        &ids == expected_ids,
        "the published ids are the committed ids"
    );
    for (key, numbers) in per_key {
        let expected: Vec<i64> = (1..=i64::try_from(numbers.len()).expect("count")).collect();
        assert_eq!(numbers, expected, "key {key}: commit order");
    }
}

/// Reads `topic` (read_committed) until `count` records arrived and every partition is at its
/// end, then keeps reading a while to catch extras ([`read_past_at`]).
pub fn read_all(topic: &str, count: usize) -> Vec<OwnedMessage> {
    read_all_at(&super::dev_env().kafka_bootstrap, topic, count)
}

/// [`read_all`] on the broker at `bootstrap`.
pub fn read_all_at(bootstrap: &str, topic: &str, count: usize) -> Vec<OwnedMessage> {
    read_past_at(bootstrap, topic, count, Duration::from_secs(5))
}

/// The keys writers use.
pub const KEYS: [&str; 50] = [
    "k00", "k01", "k02", "k03", "k04", "k05", "k06", "k07", "k08", "k09", "k10", "k11", "k12",
    "k13", "k14", "k15", "k16", "k17", "k18", "k19", "k20", "k21", "k22", "k23", "k24", "k25",
    "k26", "k27", "k28", "k29", "k30", "k31", "k32", "k33", "k34", "k35", "k36", "k37", "k38",
    "k39", "k40", "k41", "k42", "k43", "k44", "k45", "k46", "k47", "k48", "k49",
];

/// Ten keys out of fifty, at random.
pub fn random_keys() -> Vec<&'static str> {
    KEYS.choose_multiple(&mut rand::rng(), 10)
        .copied()
        .collect()
}

/// Publishes the `outbox` table of `client`'s database as `publication` and, when given, creates
/// the pgoutput slot `slot` after it: the slot marks where capture begins, so every row committed
/// from then on is a change for it and none before is.
pub async fn publish_outbox(
    client: &tokio_postgres::Client,
    publication: &str,
    slot: Option<&str>,
) {
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {publication} FOR TABLE outbox"
        ))
        .await
        .expect("publication");
    if let Some(slot) = slot {
        super::postgres::create_pgoutput_slot(client, slot).await;
    }
}
