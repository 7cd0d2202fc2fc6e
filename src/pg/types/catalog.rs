//! What each type OID is: a built-in, an array of something, a domain over something, an enum.
//! Built-ins are known without asking; other types are read from `pg_type` once.

use std::collections::{HashMap, HashSet};

use super::Builtin;
use crate::pg::wire::{extended::array_literal, Session, WireError};
use crate::pg::TypeOid;

/// How values of a type convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeKind {
    /// A built-in base type.
    Builtin(Builtin),
    /// An array of `element`, written with `delimiter` between elements.
    Array {
        /// The element type.
        element: TypeOid,
        /// `typdelim` of the element type (`,` except for box).
        delimiter: char,
    },
    /// A domain: values convert as the base type.
    Domain {
        /// The base type.
        base: TypeOid,
        /// The base type's modifier the domain declares (`typtypmod`, -1 for none): a domain
        /// over `numeric(10,2)` has the scale 2.
        typmod: i32,
    },
    /// An enum: its label.
    Enum,
    /// Anything else (ranges, geometry, composites, unknown OIDs): its text.
    Other,
}

/// Type OID to [`TypeKind`], and the labels of enums.
#[derive(Debug, Clone)]
pub struct TypeCatalog {
    kinds: HashMap<TypeOid, TypeKind>,
    /// Each enum's labels in their sort order (Debezium's `io.debezium.data.Enum` lists them).
    enum_labels: HashMap<TypeOid, Vec<String>>,
    /// The `hstore` extension's type (in any schema): Debezium writes its values as a JSON map.
    hstore: HashSet<TypeOid>,
}

/// Built-in scalar types and their array types: (type, array type, conversion).
const BUILTINS: &[(u32, u32, Builtin)] = &[
    (16, 1000, Builtin::Bool),
    (21, 1005, Builtin::Integer),
    (23, 1007, Builtin::Integer),
    (20, 1016, Builtin::Integer),
    (26, 1028, Builtin::Integer),
    (700, 1021, Builtin::Float),
    (701, 1022, Builtin::Float),
    (1700, 1231, Builtin::Numeric),
    (114, 199, Builtin::Json),
    (3802, 3807, Builtin::Json),
    (17, 1001, Builtin::Bytea),
    (1114, 1115, Builtin::Timestamp),
    (1184, 1185, Builtin::TimestampTz),
    (1266, 1270, Builtin::Text),
    (25, 1009, Builtin::Text),
    (1043, 1015, Builtin::Text),
    (1042, 1014, Builtin::Text),
    (19, 1003, Builtin::Text),
    (18, 1002, Builtin::Text),
    (2950, 2951, Builtin::Text),
    (1082, 1182, Builtin::Text),
    (1083, 1183, Builtin::Text),
    (1186, 1187, Builtin::Text),
    (869, 1041, Builtin::Text),
    (650, 651, Builtin::Text),
    (829, 1040, Builtin::Text),
    (774, 775, Builtin::Text),
];

impl TypeCatalog {
    /// The built-in types and their arrays.
    pub fn builtin() -> Self {
        let mut kinds = HashMap::new();
        for &(oid, array, builtin) in BUILTINS {
            kinds.insert(TypeOid(oid), TypeKind::Builtin(builtin));
            kinds.insert(
                TypeOid(array),
                TypeKind::Array {
                    element: TypeOid(oid),
                    delimiter: ',',
                },
            );
        }
        Self {
            kinds,
            enum_labels: HashMap::new(),
            hstore: HashSet::new(),
        }
    }

    /// How `oid` converts; [`TypeKind::Other`] for a type not known (yet).
    pub fn kind(&self, oid: TypeOid) -> TypeKind {
        self.kinds.get(&oid).copied().unwrap_or(TypeKind::Other)
    }

    /// Whether `oid` is known.
    pub fn contains(&self, oid: TypeOid) -> bool {
        self.kinds.contains_key(&oid)
    }

    /// The labels of the enum `oid` in their sort order; empty for another type.
    pub fn enum_labels(&self, oid: TypeOid) -> &[String] {
        self.enum_labels.get(&oid).map_or(&[], Vec::as_slice)
    }

    /// Whether `oid` is the `hstore` extension's type.
    pub fn is_hstore(&self, oid: TypeOid) -> bool {
        self.hstore.contains(&oid)
    }

    /// Records what `oid` is (tests).
    #[cfg(test)]
    pub fn insert(&mut self, oid: TypeOid, kind: TypeKind) {
        self.kinds.insert(oid, kind);
    }

    /// Records the enum `oid` with its labels (tests).
    #[cfg(test)]
    pub fn insert_enum(&mut self, oid: TypeOid, labels: Vec<String>) {
        self.kinds.insert(oid, TypeKind::Enum);
        self.enum_labels.insert(oid, labels);
    }

    /// Records `oid` as the `hstore` type (tests).
    #[cfg(test)]
    pub fn insert_hstore(&mut self, oid: TypeOid) {
        self.kinds.insert(oid, TypeKind::Other);
        self.hstore.insert(oid);
    }

    /// Reads the types among `oids` that are not known from `pg_type`, following arrays to their
    /// elements and domains to their bases.
    pub async fn load(
        &mut self,
        connection: &mut Session,
        oids: &[TypeOid],
    ) -> Result<(), WireError> {
        let mut wanted: Vec<TypeOid> = oids
            .iter()
            .copied()
            .filter(|o| !self.contains(*o))
            .collect();
        let mut enums = Vec::new();
        while !wanted.is_empty() {
            let list = wanted.iter().map(|o| o.0.to_string()).collect::<Vec<_>>();
            let rows = connection
                .query_params_text(
                    "SELECT t.oid, t.typtype, t.typelem, coalesce(e.typdelim, ','), t.typbasetype, t.typcategory, \
                     t.typtypmod, t.typname FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem \
                     WHERE t.oid = ANY($1::oid[])",
                    &[&array_literal(&list)],
                )
                .await?;
            let mut next = Vec::new();
            for row in rows {
                let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
                let oid = TypeOid(field(0).parse().unwrap_or(0));
                let element = TypeOid(field(2).parse().unwrap_or(0));
                let base = TypeOid(field(4).parse().unwrap_or(0));
                let kind = match (field(1).as_str(), field(5).as_str()) {
                    ("d", _) => TypeKind::Domain {
                        base,
                        typmod: field(6).parse().unwrap_or(-1),
                    },
                    ("e", _) => TypeKind::Enum,
                    (_, "A") if element.0 != 0 => TypeKind::Array {
                        element,
                        delimiter: field(3).chars().next().unwrap_or(','),
                    },
                    _ => TypeKind::Other,
                };
                for dependency in [element, base] {
                    if dependency.0 != 0
                        && !self.contains(dependency)
                        && !wanted.contains(&dependency)
                    {
                        next.push(dependency);
                    }
                }
                if kind == TypeKind::Enum {
                    enums.push(oid.0.to_string());
                }
                if kind == TypeKind::Other && field(7) == "hstore" {
                    self.hstore.insert(oid);
                }
                self.kinds.insert(oid, kind);
            }
            // OIDs pg_type does not know stay Other; never ask for them again.
            for oid in &wanted {
                self.kinds.entry(*oid).or_insert(TypeKind::Other);
            }
            next.retain(|o| !self.contains(*o));
            next.dedup();
            wanted = next;
        }
        self.load_enum_labels(connection, &enums).await
    }

    /// Reads the labels of the enums `oids` (decimal OIDs) in their sort order.
    async fn load_enum_labels(
        &mut self,
        connection: &mut Session,
        oids: &[String],
    ) -> Result<(), WireError> {
        if oids.is_empty() {
            return Ok(());
        }
        let rows = connection
            .query_params_text(
                "SELECT enumtypid, enumlabel FROM pg_catalog.pg_enum \
                 WHERE enumtypid = ANY($1::oid[]) ORDER BY enumtypid, enumsortorder",
                &[&array_literal(oids)],
            )
            .await?;
        for row in rows {
            let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let oid = TypeOid(field(0).parse().unwrap_or(0));
            self.enum_labels.entry(oid).or_default().push(field(1));
        }
        Ok(())
    }
}
