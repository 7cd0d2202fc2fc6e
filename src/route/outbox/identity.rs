//! Outbox tables known by their OID as well as their name, so that a renamed outbox table never
//! silently becomes a CDC table.
//!
//! The router recognises an outbox table by the schema and name in pgoutput's Relation message.
//! After `ALTER TABLE outbox RENAME TO outbox_old` the same table (same OID) arrives under the
//! new name: routed by name, its inserts would become CDC events of `outbox_old` and the events
//! would never reach their outbox topics. So the relay remembers the OID of every table that
//! was an outbox (found by name before replication starts, and in every Relation message), and
//! a Relation message that shows one of those OIDs under another name stops the relay. So does a
//! table shaped like an outbox (its routing, key and payload columns) while a configured outbox
//! table was never found: the likeliest reading is a rename made while the relay was stopped.
//!
//! Stopping, not following the OID: a rename is a deliberate change (often "keep the old table,
//! create a new outbox"), and publishing what is written to the renamed table as outbox events
//! could publish an archive copy a second time. The operator decides, by configuration.

use std::collections::HashMap;

use crate::pg::pgoutput::Relation;
use crate::pg::RelationId;
use crate::route::qualified;

use super::OutboxRouter;

/// A change of a table that was, or looks like, a configured outbox table under another name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxMoved {
    /// The OID of a configured outbox table now has another name.
    #[error(
        "outbox table {configured} (OID {oid}) was renamed to {now}, and a change of it is in \
         the stream: routed by its new name it would become a CDC event, so the relay stops. \
         To publish its rows as outbox events, add {now} to outbox.tables; to stop capturing \
         it, remove it from the publication and give the relay a new name (the change already \
         in the WAL would stop this relay again)"
    )]
    Renamed {
        /// The configured `schema.table`.
        configured: String,
        /// The table's OID.
        oid: RelationId,
        /// Its `schema.table` now.
        now: String,
    },
    /// A table with an outbox's columns while a configured outbox table was never found.
    #[error(
        "table {now} has the columns of an outbox ({columns}) while the configured outbox table \
         {configured} does not exist: was it renamed? Routed by name its rows would become CDC \
         events, so the relay stops. Add {now} to outbox.tables, or restore the name {configured}"
    )]
    LooksLike {
        /// The configured `schema.table` that was never found.
        configured: String,
        /// The look-alike's `schema.table`.
        now: String,
        /// The outbox columns it has.
        columns: String,
    },
}

/// The OIDs the configured outbox tables have had, and which of them were never found.
#[derive(Debug, Clone, Default)]
pub struct OutboxIdentities {
    /// OID to the index of the configured table it was.
    known: HashMap<RelationId, usize>,
    /// Per configured table: found by name yet (before the start or in the stream).
    found: Vec<bool>,
}

impl OutboxIdentities {
    /// Identities of `router`'s tables, given the OIDs their names have now (`None` for a table
    /// that does not exist), in the order of [`OutboxRouter::tables`].
    pub fn new(router: &OutboxRouter, oids: &[Option<RelationId>]) -> Self {
        let mut identities = Self {
            known: HashMap::new(),
            found: vec![false; router.tables().len()],
        };
        for (index, oid) in oids.iter().enumerate() {
            if let Some(oid) = oid {
                identities.known.insert(*oid, index);
                identities.found[index] = true;
            }
        }
        identities
    }

    /// Checks a table described anew by a Relation message; learns the OID of an outbox table.
    pub fn check(&mut self, router: &OutboxRouter, relation: &Relation) -> Result<(), OutboxMoved> {
        let tables = router.tables();
        if let Some(index) = router.table_index(relation) {
            self.known.insert(relation.id, index);
            self.found[index] = true;
            return Ok(());
        }
        let now = qualified(relation);
        if let Some(&index) = self.known.get(&relation.id) {
            return Err(OutboxMoved::Renamed {
                configured: tables[index].qualified(),
                oid: relation.id,
                now,
            });
        }
        let has = |name: &str| relation.columns.iter().any(|c| c.name == name);
        for (index, table) in tables.iter().enumerate() {
            let columns = &table.spec.columns;
            let shape = [
                &columns.aggregate_type,
                &columns.aggregate_id,
                &columns.payload,
            ];
            if !self.found[index] && shape.iter().all(|c| has(c)) {
                return Err(OutboxMoved::LooksLike {
                    configured: table.qualified(),
                    now,
                    columns: shape.map(String::as_str).join(", "),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::pgoutput::{RelationColumn, ReplicaIdentity};
    use crate::pg::TypeOid;
    use crate::route::fixtures::outbox_router;

    fn relation(oid: u32, name: &str, columns: &[&str]) -> Relation {
        Relation {
            xid: None,
            id: RelationId(oid),
            namespace: "public".into(),
            name: name.into(),
            replica_identity: ReplicaIdentity::Default,
            columns: columns
                .iter()
                .map(|c| RelationColumn {
                    is_key: false,
                    name: (*c).into(),
                    type_oid: TypeOid(25),
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    const OUTBOX: &[&str] = &["id", "aggregatetype", "aggregateid", "type", "payload"];

    #[test]
    fn a_renamed_outbox_stops_the_relay_and_other_tables_pass() {
        let router = outbox_router();
        let mut known = OutboxIdentities::new(&router, &[Some(RelationId(10))]);
        assert_eq!(
            known.check(&router, &relation(10, "outbox", OUTBOX)),
            Ok(())
        );
        // A new table under the configured name is the outbox too.
        assert_eq!(
            known.check(&router, &relation(11, "outbox", OUTBOX)),
            Ok(())
        );
        // A look-alike is fine while the configured outbox exists.
        assert_eq!(known.check(&router, &relation(12, "copy", OUTBOX)), Ok(()));
        assert_eq!(
            known.check(&router, &relation(13, "users", &["id"])),
            Ok(())
        );
        let moved = known.check(&router, &relation(11, "outbox_old", OUTBOX));
        assert!(
            matches!(&moved, Err(OutboxMoved::Renamed { configured, now, .. })
                if configured == "public.outbox" && now == "public.outbox_old"),
            "{moved:?}"
        );
    }

    #[test]
    fn an_outbox_shape_while_the_outbox_was_never_found_stops_the_relay() {
        let router = outbox_router();
        let mut unknown = OutboxIdentities::new(&router, &[None]);
        assert_eq!(
            unknown.check(&router, &relation(13, "users", &["id"])),
            Ok(())
        );
        let moved = unknown.check(&router, &relation(12, "outbox_old", OUTBOX));
        assert!(
            matches!(&moved, Err(OutboxMoved::LooksLike { configured, .. })
                if configured == "public.outbox"),
            "{moved:?}"
        );
        // Once the outbox shows up by name, it was never renamed.
        assert_eq!(
            unknown.check(&router, &relation(14, "outbox", OUTBOX)),
            Ok(())
        );
        assert_eq!(
            unknown.check(&router, &relation(12, "outbox_old", OUTBOX)),
            Ok(())
        );
    }
}
