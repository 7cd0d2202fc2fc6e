//! A snapshot's read events carry exactly the columns the change events of the same table carry:
//! those pgoutput publishes (no generated column before PostgreSQL 18; on 18 the stored ones
//! when the publication says so, never the virtual ones).

use serde_json::Value;

use super::kafka::read_exactly;
use super::postgres::connect;
use super::relay::{outboxd, RelayProcess, RelaySpec};
use super::seen::Seen;

/// Runs a relay with `snapshot.mode = "initial"` on `gen`, made by `create_table` (`id int
/// PRIMARY KEY, a int` and generated columns) and published `WITH publication_options` in the
/// database at `spec.url`: the initial snapshot reads row 1 (`a` = 5), an update sets `a` to 6,
/// and `outboxd snapshot` reads the row again. The three events' `op` and `after`, in order
/// (the relay has stopped).
pub async fn read_update_read(
    spec: &mut RelaySpec,
    create_table: &str,
    publication_options: &str,
) -> Vec<(String, Value)> {
    let prefix = spec.name.clone();
    spec.extra = format!(
        "[outbox]\ntables = []\n[cdc]\ntopic_prefix = {prefix:?}\n[snapshot]\nmode = \"initial\"\n"
    );
    let client = connect(&spec.url).await;
    client
        .batch_execute(&format!(
            "{create_table};
             INSERT INTO gen (id, a) VALUES (1, 5);
             CREATE PUBLICATION {} FOR TABLE gen {publication_options}",
            spec.publication
        ))
        .await
        .expect("table, row and publication");
    let topic = format!("{prefix}.public.gen");
    let _relay = RelayProcess::start(spec);
    // The read is in the topic before the update, which would otherwise take its place.
    tokio::task::block_in_place(|| read_exactly(&topic, 1));
    client
        .batch_execute("UPDATE gen SET a = 6 WHERE id = 1")
        .await
        .expect("update");
    let output = outboxd(spec, &["snapshot", "public.gen"], &[]);
    assert!(
        output.status.success(),
        "outboxd snapshot: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records = tokio::task::block_in_place(|| read_exactly(&topic, 3));
    records
        .iter()
        .map(|record| {
            let event = Seen::of(record).json();
            (
                event["op"].as_str().unwrap_or_default().to_owned(),
                event["after"].clone(),
            )
        })
        .collect()
}
