//! Values that parse but that Postgres, Kafka or the relay's timers cannot work with: refused at
//! load, naming the key and what is allowed, rather than passing `check` and then panicking or
//! retrying forever in `run`.

use std::time::Duration;

use super::sections::{ColumnsSection, EnvelopeName, Settings, ValueConventionName};
use super::ConfigError;
use crate::settings::RelayMode;

/// Postgres truncates longer identifiers (NAMEDATALEN - 1): a longer name would silently refer to
/// another, truncated one.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Kafka's longest topic name.
const MAX_TOPIC_CHARS: usize = 249;

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

impl Settings {
    /// `outbox.schemas` describes Debezium's outbox records: not CloudEvents, and not a value
    /// wrapped with `envelope` fields (whose struct schema outboxd does not derive).
    fn validate_outbox_schemas(&self) -> Result<(), ConfigError> {
        if !self.outbox.schemas {
            return Ok(());
        }
        if self.outbox.envelope != EnvelopeName::DebeziumOutbox {
            return Err(invalid(
                "outbox.schemas",
                "must go with outbox.envelope = \"debezium-outbox\" (CloudEvents have no Kafka \
                 Connect schemas), or be false",
            ));
        }
        if self.places_in_envelope() {
            return Err(invalid(
                "outbox.schemas",
                "must be false when an additional field is placed in the envelope (its value's \
                 schema is not derived); place it as a header",
            ));
        }
        Ok(())
    }

    /// Whether `[outbox]` or an override places an additional field in the envelope.
    pub(super) fn places_in_envelope(&self) -> bool {
        let placements = std::iter::once(&self.outbox.additional_placement).chain(
            self.outbox
                .overrides
                .iter()
                .filter_map(|o| o.additional_placement.as_ref()),
        );
        placements
            .flatten()
            .any(|p| p.split(':').nth(1).map(str::trim) == Some("envelope"))
    }

    /// Checks every value the sections alone decide.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.relay.name.trim().is_empty() {
            return Err(invalid(
                "relay.name",
                "must not be empty: it keys the relay's checkpoint and its Kafka transactional id",
            ));
        }
        self.validate_durations()?;
        slot_name(&self.postgres.slot)?;
        if self.relay.mode == RelayMode::Logical && self.postgres.publications.is_empty() {
            return Err(invalid(
                "postgres.publications",
                "must name at least one publication in logical mode",
            ));
        }
        for publication in &self.postgres.publications {
            identifier("postgres.publications", publication)?;
        }
        for table in &self.outbox.tables {
            if let Some((schema, name)) = table.split_once('.') {
                identifier("outbox.tables", schema)?;
                identifier("outbox.tables", name)?;
            }
        }
        columns("outbox.columns", &self.outbox.columns)?;
        for table in &self.outbox.overrides {
            columns("outbox.overrides.columns", &table.columns)?;
        }
        identifier("poll.order_by", &self.poll.order_by)?;
        identifier("poll.mark_column", &self.poll.mark_column)?;
        topic("kafka.offsets_topic", &self.kafka.offsets_topic)?;
        topic("dead_letter.topic", &self.dead_letter.topic)?;
        if self.cdc.schemas && self.cdc.value_convention == ValueConventionName::Natural {
            return Err(invalid(
                "cdc.schemas",
                "must go with cdc.value_convention = \"debezium\" (Kafka Connect schemas describe \
                 Debezium's values), or be false",
            ));
        }
        self.validate_outbox_schemas()?;
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(invalid(
                "kafka.bootstrap_servers",
                "must name at least one broker (host:port)",
            ));
        }
        if self.batch.max_events == 0 || self.batch.max_bytes == 0 {
            return Err(invalid(
                if self.batch.max_events == 0 {
                    "batch.max_events"
                } else {
                    "batch.max_bytes"
                },
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Intervals and timeouts: a zero one panics a timer, spins, or fails every call at once.
    fn validate_durations(&self) -> Result<(), ConfigError> {
        let positive: [(&'static str, Duration); 9] = [
            ("relay.status_interval", self.relay.status_interval),
            (
                "relay.idle_confirm_interval",
                self.relay.idle_confirm_interval,
            ),
            ("relay.backoff_min", self.relay.backoff_min),
            ("metrics.wal_poll_interval", self.metrics.wal_poll_interval),
            ("metrics.stall_timeout", self.metrics.stall_timeout),
            ("kafka.call_timeout", self.kafka.call_timeout),
            ("kafka.transaction_timeout", self.kafka.transaction_timeout),
            ("poll.interval", self.poll.interval),
            ("batch.max_age", self.batch.max_age),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return Err(invalid(key, "must be above zero (e.g. \"1s\")"));
            }
        }
        if self.relay.backoff_max < self.relay.backoff_min {
            return Err(invalid(
                "relay.backoff_max",
                format!(
                    "must be at least relay.backoff_min ({:?})",
                    self.relay.backoff_min
                ),
            ));
        }
        Ok(())
    }
}

/// A replication slot name as Postgres accepts it.
fn slot_name(slot: &str) -> Result<(), ConfigError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if slot.is_empty() || slot.len() > MAX_IDENTIFIER_BYTES || !slot.chars().all(allowed) {
        return Err(invalid(
            "postgres.slot",
            format!(
                "{slot:?} is not a replication slot name: PostgreSQL allows 1 to \
                 {MAX_IDENTIFIER_BYTES} lower case letters, digits and underscores"
            ),
        ));
    }
    Ok(())
}

/// A name Postgres keeps as it is: not empty, at most 63 bytes.
fn identifier(key: &'static str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER_BYTES {
        return Err(invalid(
            key,
            format!(
                "{name:?} must be 1 to {MAX_IDENTIFIER_BYTES} bytes long: PostgreSQL truncates \
                 longer names"
            ),
        ));
    }
    Ok(())
}

/// Every column name an `[outbox.columns]` section sets.
fn columns(key: &'static str, section: &ColumnsSection) -> Result<(), ConfigError> {
    let names = [
        &section.id,
        &section.aggregate_type,
        &section.aggregate_id,
        &section.event_type,
        &section.payload,
        &section.timestamp,
        &section.traceparent,
        &section.tracing_span_context,
        &section.correlation_id,
        &section.causation_id,
        &section.schema_version,
    ];
    names
        .into_iter()
        .flatten()
        .try_for_each(|name| identifier(key, name))
}

/// A topic name Kafka accepts.
fn topic(key: &'static str, name: &str) -> Result<(), ConfigError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > MAX_TOPIC_CHARS
        || name == "."
        || name == ".."
        || !name.chars().all(legal)
    {
        return Err(invalid(
            key,
            format!(
                "{name:?} is not a Kafka topic name: 1 to {MAX_TOPIC_CHARS} letters, digits, \
                 '.', '_' and '-' (not \".\" or \"..\")"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_what_postgres_accepts() {
        for good in ["outboxd", "a_1", &"s".repeat(63)] {
            assert!(slot_name(good).is_ok(), "{good}");
        }
        for bad in ["", "bad-slot", "Upper", "sp ace", "é", &"s".repeat(64)] {
            let error = slot_name(bad).expect_err(bad).to_string();
            assert!(error.contains("postgres.slot"), "{error}");
            assert!(error.contains("lower case letters"), "{error}");
        }
    }

    #[test]
    fn topic_names_are_what_kafka_accepts() {
        assert!(topic("k", "outboxd.offsets-1_a").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"t".repeat(250)] {
            assert!(topic("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifiers_fit_postgres() {
        assert!(identifier("k", &"ü".repeat(31)).is_ok());
        assert!(identifier("k", &"ü".repeat(32)).is_err());
        assert!(identifier("k", "").is_err());
    }
}
