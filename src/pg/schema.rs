//! What the router needs to know about tables beyond pgoutput's Relation message: primary keys
//! (Debezium keys change events by the primary key, while pgoutput flags the replica identity, which
//! is every column under `REPLICA IDENTITY FULL`) and the types of the columns.
//!
//! Read over SQL on a replication connection (a logical walsender runs SQL too): once for every
//! published table before replication starts, and again for a table first seen mid-stream.

use std::collections::HashMap;

use crate::pg::types::TypeCatalog;
use crate::pg::wire::{extended::array_literal, Session, WireError};
use crate::pg::{RelationId, TypeOid};

/// Primary keys and column types of the tables the relay has seen.
#[derive(Debug, Clone)]
pub struct Schema {
    /// Type OID to conversion.
    pub types: TypeCatalog,
    /// Primary key column names of each table, in key order; absent when the table has none.
    primary_keys: HashMap<RelationId, Vec<String>>,
    /// Tables whose primary key has been looked up (with or without one).
    known: std::collections::HashSet<RelationId>,
    /// The `NOT NULL` columns of each table (Kafka Connect schemas make the others optional).
    not_null: HashMap<RelationId, std::collections::HashSet<String>>,
    /// Each table's column `DEFAULT` expressions as Postgres prints them (Debezium puts constant
    /// ones in the Kafka Connect schemas).
    defaults: HashMap<RelationId, HashMap<String, String>>,
}

impl Default for Schema {
    fn default() -> Self {
        Self {
            types: TypeCatalog::builtin(),
            primary_keys: HashMap::new(),
            known: std::collections::HashSet::new(),
            not_null: HashMap::new(),
            defaults: HashMap::new(),
        }
    }
}

impl Schema {
    /// The primary key column names of `table`, or `None` when it has none.
    pub fn primary_key(&self, table: RelationId) -> Option<&[String]> {
        self.primary_keys.get(&table).map(Vec::as_slice)
    }

    /// Whether `column` of `table` is declared `NOT NULL` (false for a table not loaded).
    pub fn is_not_null(&self, table: RelationId, column: &str) -> bool {
        self.not_null
            .get(&table)
            .is_some_and(|columns| columns.contains(column))
    }

    /// The `DEFAULT` expression of `column` of `table` (`pg_get_expr`), if it has one.
    pub fn column_default(&self, table: RelationId, column: &str) -> Option<&str> {
        self.defaults.get(&table)?.get(column).map(String::as_str)
    }

    /// Records the `DEFAULT` expression of `column` of `table` (tests).
    #[cfg(test)]
    pub fn set_default(&mut self, table: RelationId, column: &str, expression: &str) {
        self.defaults
            .entry(table)
            .or_default()
            .insert(column.to_owned(), expression.to_owned());
    }

    /// Records the `NOT NULL` columns of `table` (tests).
    #[cfg(test)]
    pub fn set_not_null(&mut self, table: RelationId, columns: &[&str]) {
        let columns = columns.iter().map(|c| (*c).to_owned()).collect();
        self.not_null.insert(table, columns);
    }

    /// Whether `table` and all of `types` have been looked up.
    pub fn knows(&self, table: RelationId, types: &[TypeOid]) -> bool {
        self.known.contains(&table) && types.iter().all(|t| self.types.contains(*t))
    }

    /// Records `table`'s primary key (tests and callers that know it already).
    pub fn set_primary_key(&mut self, table: RelationId, key: Option<Vec<String>>) {
        self.known.insert(table);
        match key {
            Some(key) => self.primary_keys.insert(table, key),
            None => self.primary_keys.remove(&table),
        };
    }

    /// Loads the primary keys and column types of every table in `publications`.
    pub async fn load_publications(
        &mut self,
        connection: &mut Session,
        publications: &[String],
    ) -> Result<(), WireError> {
        let tables = connection
            .query_params_text(
                "SELECT DISTINCT c.oid FROM pg_catalog.pg_publication_tables p \
                 JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname \
                 JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
                 WHERE p.pubname = ANY($1::name[])",
                &[&array_literal(publications)],
            )
            .await?;
        self.load_tables(connection, &tables).await
    }

    /// Loads the primary key and column types of `table`.
    pub async fn load_table(
        &mut self,
        connection: &mut Session,
        table: RelationId,
    ) -> Result<(), WireError> {
        self.load_tables(connection, &[vec![Some(table.0.to_string())]])
            .await
    }

    /// Loads keys and types of the tables whose OIDs are the first column of `table_oids`.
    async fn load_tables(
        &mut self,
        connection: &mut Session,
        table_oids: &[Vec<Option<String>>],
    ) -> Result<(), WireError> {
        let list: Vec<u32> = table_oids
            .iter()
            .filter_map(|row| row.first()?.as_deref()?.parse().ok())
            .collect();
        if list.is_empty() {
            return Ok(());
        }
        let oids = array_literal(&list.iter().map(u32::to_string).collect::<Vec<_>>());
        let keys = connection
            .query_params_text(
                "SELECT i.indrelid, a.attname FROM pg_catalog.pg_index i \
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indisprimary AND i.indrelid = ANY($1::oid[]) \
                 ORDER BY i.indrelid, k.position",
                &[&oids],
            )
            .await?;
        for oid in &list {
            self.set_primary_key(RelationId(*oid), None);
        }
        for row in keys {
            let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let Ok(table) = field(0).parse::<u32>() else {
                continue;
            };
            self.primary_keys
                .entry(RelationId(table))
                .or_default()
                .push(field(1));
        }
        let columns = connection
            .query_params_text(
                "SELECT a.atttypid, a.attrelid, a.attname, a.attnotnull, \
                 pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attribute a \
                 LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                 WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&oids],
            )
            .await?;
        for oid in &list {
            self.not_null.remove(&RelationId(*oid));
            self.defaults.remove(&RelationId(*oid));
        }
        let mut types: Vec<TypeOid> = Vec::new();
        for row in &columns {
            let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            if let Ok(oid) = field(0).parse() {
                types.push(TypeOid(oid));
            }
            if let (Ok(table), "t") = (field(1).parse::<u32>(), field(3).as_str()) {
                self.not_null
                    .entry(RelationId(table))
                    .or_default()
                    .insert(field(2));
            }
            if let (Ok(table), Some(Some(default))) = (field(1).parse::<u32>(), row.get(4)) {
                self.defaults
                    .entry(RelationId(table))
                    .or_default()
                    .insert(field(2), default.clone());
            }
        }
        types.sort_unstable_by_key(|t| t.0);
        types.dedup();
        self.types.load(connection, &types).await
    }
}
