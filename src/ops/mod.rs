//! The one-shot commands beside `run`: `check` (preflight), `migrate` (database objects),
//! `status` (where the relay stands) and `snapshot` (a signal to the running relay).

pub mod check;
pub mod migrate;
pub mod snapshot;
pub mod status;

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;

use crate::checkpoint::StoredCheckpoint;
use crate::pg::wire::{Session, WireError};
use crate::relay::RelayConfig;
use crate::sink::offsets::OffsetsTopic;

/// The first row of `sql`'s result with `params` bound to `$1, $2, …`, as text columns (`None`
/// for NULL), or `None` without rows.
async fn first_row(
    session: &mut Session,
    sql: &str,
    params: &[&str],
) -> Result<Option<Vec<Option<String>>>, WireError> {
    Ok(session
        .query_params_text(sql, params)
        .await?
        .into_iter()
        .next())
}

/// An admin client for the relay's cluster that never makes a broker create a topic.
fn admin_client(
    relay: &RelayConfig,
) -> Result<AdminClient<DefaultClientContext>, rdkafka::error::KafkaError> {
    crate::sink::limits::admin_client(&relay.kafka)
}

/// The relay's last committed checkpoint, waiting at most about `limit` for Kafka; `None` when
/// none was committed (also when the offsets topic does not exist yet, which only the relay
/// creates). Blocking.
fn read_checkpoint(
    relay: &RelayConfig,
    limit: Duration,
) -> anyhow::Result<Option<StoredCheckpoint>> {
    let admin = admin_client(relay).context("the Kafka settings are not accepted")?;
    let metadata = admin.inner().fetch_metadata(None, limit).with_context(|| {
        format!(
            "no Kafka broker at {} answered within {limit:?}",
            relay.kafka.bootstrap_servers
        )
    })?;
    if !metadata
        .topics()
        .iter()
        .any(|t| t.name() == relay.offsets_topic && t.error().is_none())
    {
        return Ok(None);
    }
    OffsetsTopic::new(relay.kafka.clone(), &relay.offsets_topic)
        .read_last(&relay.name, limit)
        .with_context(|| format!("reading the offsets topic {:?}", relay.offsets_topic))
}
