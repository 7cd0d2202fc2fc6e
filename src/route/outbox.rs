//! The outbox router: an inserted outbox row (or an outbox logical message) becomes one record.
//!
//! Debezium's outbox convention: topic `outbox.event.<aggregatetype>`, key = `aggregateid`,
//! value = `payload` as its JSON text, header `id` = the event id. Updates and deletes of outbox rows
//! are not events (the insert-then-delete pattern publishes once).

use bytes::Bytes;

use crate::pg::pgoutput::{ColumnValue, Relation, TupleData};
use crate::route::{Header, Record};
use crate::source::logical::Change;

/// A table that holds outbox events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxTable {
    /// Schema of the table.
    pub schema: String,
    /// Name of the table.
    pub table: String,
}

/// Why a change could not become a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A routing column is missing, NULL, or not text.
    #[error("outbox event from {source_name}: column {column:?} is {problem}")]
    Field {
        /// `schema.table` or `message <prefix>`.
        source_name: String,
        /// The column.
        column: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An outbox message whose content is not the expected JSON object.
    #[error("outbox message with prefix {prefix:?} is not a JSON object with the outbox fields: {reason}")]
    Message {
        /// The message prefix.
        prefix: String,
        /// What is wrong.
        reason: String,
    },
}

/// Routes outbox rows and outbox messages to records.
#[derive(Debug, Clone)]
pub struct OutboxRouter {
    tables: Vec<OutboxTable>,
    message_prefix: String,
    topic_prefix: String,
}

impl OutboxRouter {
    /// A router for `tables` and for logical messages with `message_prefix`.
    pub fn new(tables: Vec<OutboxTable>, message_prefix: impl Into<String>) -> Self {
        Self {
            tables,
            message_prefix: message_prefix.into(),
            topic_prefix: "outbox.event.".into(),
        }
    }

    /// The record for `change`, or `None` when the change is not an outbox event.
    pub fn route(&self, change: &Change) -> Result<Option<Record>, RouteError> {
        match change {
            Change::Insert { relation, new } if self.is_outbox(relation) => {
                self.route_row(relation, new).map(Some)
            }
            Change::Message {
                prefix, content, ..
            } if *prefix == self.message_prefix => self.route_message(prefix, content).map(Some),
            _ => Ok(None),
        }
    }

    fn is_outbox(&self, relation: &Relation) -> bool {
        self.tables
            .iter()
            .any(|t| t.schema == relation.namespace && t.table == relation.name)
    }

    fn route_row(&self, relation: &Relation, row: &TupleData) -> Result<Record, RouteError> {
        let field = |column: &'static str, required: bool| -> Result<Option<Bytes>, RouteError> {
            let problem = |problem| RouteError::Field {
                source_name: format!("{}.{}", relation.namespace, relation.name),
                column,
                problem,
            };
            let Some(index) = relation.columns.iter().position(|c| c.name == column) else {
                return if required {
                    Err(problem("missing"))
                } else {
                    Ok(None)
                };
            };
            match row.0.get(index) {
                Some(ColumnValue::Text(text)) => Ok(Some(text.clone())),
                Some(ColumnValue::Null) if !required => Ok(None),
                Some(ColumnValue::Null) => Err(problem("NULL")),
                _ => Err(problem("not sent as text")),
            }
        };
        let aggregate_type = field("aggregatetype", true)?.unwrap_or_default();
        Ok(self.record(
            &aggregate_type,
            field("aggregateid", true)?,
            field("payload", false)?,
            field("id", false)?,
        ))
    }

    fn route_message(&self, prefix: &str, content: &[u8]) -> Result<Record, RouteError> {
        let invalid = |reason: String| RouteError::Message {
            prefix: prefix.to_owned(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(content).map_err(|e| invalid(e.to_string()))?;
        let text = |name: &str| -> Option<Bytes> {
            match value.get(name)? {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(Bytes::from(s.clone())),
                other => Some(Bytes::from(other.to_string())),
            }
        };
        let aggregate_type =
            text("aggregatetype").ok_or_else(|| invalid("no \"aggregatetype\"".into()))?;
        let aggregate_id =
            text("aggregateid").ok_or_else(|| invalid("no \"aggregateid\"".into()))?;
        let payload = value.get("payload").map(|p| Bytes::from(p.to_string()));
        Ok(self.record(&aggregate_type, Some(aggregate_id), payload, text("id")))
    }

    fn record(
        &self,
        aggregate_type: &[u8],
        key: Option<Bytes>,
        value: Option<Bytes>,
        id: Option<Bytes>,
    ) -> Record {
        let headers = id
            .map(|id| Header {
                name: "id".into(),
                value: Some(id),
            })
            .into_iter()
            .collect();
        Record {
            topic: format!(
                "{}{}",
                self.topic_prefix,
                String::from_utf8_lossy(aggregate_type)
            ),
            partition: None,
            key,
            value,
            headers,
        }
    }
}
