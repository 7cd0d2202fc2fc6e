//! Each table's Avro key and value schemas, made from its Connect schemas
//! ([`crate::route::cdc::schema::tables`]) when those are derived (once per Relation message), so
//! that a changed table gets new schemas to register, and an unchanged one keeps its ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::pg::RelationId;
use crate::route::cdc::schema::tables::{MessageSchemas, TableSchemas};
use crate::route::cdc::schema::ConnectSchema;

use super::schema::record_name;
use super::{AvroSchema, SubjectStrategy};

/// A table's Avro schemas.
#[derive(Debug)]
pub struct AvroTable {
    /// The Connect schemas they were made from.
    source: Arc<TableSchemas>,
    /// The key's; `None` without a primary key.
    pub key: Option<Arc<AvroSchema>>,
    /// The envelope's.
    pub value: Arc<AvroSchema>,
}

/// A key and a value schema.
type Pair = (Arc<AvroSchema>, Arc<AvroSchema>);

/// The Avro schemas of every table seen and of logical-message events, shared by clones of the
/// router (and so their ids, across the relay's attempts).
#[derive(Debug, Clone, Default)]
pub struct AvroSchemas {
    strategy: SubjectStrategy,
    tables: Arc<Mutex<HashMap<RelationId, Arc<AvroTable>>>>,
    message: Arc<OnceLock<Result<Pair, String>>>,
}

impl AvroSchemas {
    /// An empty cache naming subjects by `strategy`.
    pub fn new(strategy: SubjectStrategy) -> Self {
        Self {
            strategy,
            ..Self::default()
        }
    }

    /// The Avro schemas of `relation`'s current Connect schemas `tables` (topic `topic`), or why
    /// they are not valid Avro.
    pub fn table(
        &self,
        relation: RelationId,
        tables: &Arc<TableSchemas>,
        topic: &str,
    ) -> Result<Arc<AvroTable>, String> {
        let mut cache = self
            .tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cached) = cache.get(&relation) {
            if Arc::ptr_eq(&cached.source, tables) {
                return Ok(Arc::clone(cached));
            }
        }
        let key = match &tables.key {
            Some(key) => Some(self.schema(&key.schema, topic, true)?),
            None => None,
        };
        let table = Arc::new(AvroTable {
            source: Arc::clone(tables),
            key,
            value: self.schema(&tables.envelope.schema, topic, false)?,
        });
        cache.insert(relation, Arc::clone(&table));
        Ok(table)
    }

    /// The key and value schemas of logical-message events on `topic`.
    pub fn message(&self, topic: &str, schemas: &MessageSchemas) -> Result<Pair, String> {
        self.message
            .get_or_init(|| {
                Ok((
                    self.schema(&schemas.key.schema, topic, true)?,
                    self.schema(&schemas.value.schema, topic, false)?,
                ))
            })
            .clone()
    }

    fn schema(
        &self,
        connect: &ConnectSchema,
        topic: &str,
        key: bool,
    ) -> Result<Arc<AvroSchema>, String> {
        let record = record_name(connect).unwrap_or_default();
        let subject = self.strategy.subject(topic, key, &record);
        AvroSchema::new(connect.clone(), subject).map(Arc::new)
    }
}
