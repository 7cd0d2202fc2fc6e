//! A column's Kafka Connect schema, as Debezium's Postgres connector maps its type
//! (`PostgresValueConverter.schemaBuilder`) under the same value options
//! [`super::super::values`] writes the value by, so that schema and payload agree.
//!
//! Where outboxd writes a value unlike Debezium (docs/debezium.md), the schema describes
//! outboxd's value, not Debezium's.

use crate::pg::types::{TypeCatalog, TypeKind};
use crate::pg::TypeOid;
use crate::route::cdc::values::{
    precision, BinaryMode, DebeziumModes, DecimalMode, TimePrecisionMode,
};

use super::{ConnectSchema, Kind};

/// The largest `varbit` length Debezium reports for one declared without length.
const UNBOUNDED_BITS: i32 = i32::MAX;

/// The required schema of a value of type `oid` with modifier `typmod` (the caller makes it
/// optional for a nullable column).
pub fn column_schema(
    types: &TypeCatalog,
    modes: DebeziumModes,
    oid: TypeOid,
    typmod: i32,
) -> ConnectSchema {
    let plain = ConnectSchema::of;
    match types.kind(oid) {
        TypeKind::Domain { base, typmod } => column_schema(types, modes, base, typmod),
        TypeKind::Array { element, .. } => {
            // Debezium's enum array items are the one element schema it makes required.
            let items = column_schema(types, modes, element, typmod);
            let optional = !matches!(types.kind(element), TypeKind::Enum);
            plain(Kind::Array(Box::new(items.with_optional(optional))))
        }
        TypeKind::Enum => plain(Kind::String)
            .logical("io.debezium.data.Enum", 1)
            .parameter("allowed", types.enum_labels(oid).join(",")),
        // hstore.handling.mode=json.
        TypeKind::Other if types.is_hstore(oid) => {
            plain(Kind::String).logical("io.debezium.data.Json", 1)
        }
        TypeKind::Other | TypeKind::Builtin(_) => builtin(modes, oid, typmod),
    }
}

fn builtin(modes: DebeziumModes, oid: TypeOid, typmod: i32) -> ConnectSchema {
    let plain = ConnectSchema::of;
    match oid.0 {
        16 => plain(Kind::Boolean),
        21 => plain(Kind::Int16),
        23 => plain(Kind::Int32),
        20 | 26 => plain(Kind::Int64),
        700 => plain(Kind::Float32),
        701 => plain(Kind::Float64),
        1700 => decimal(modes.decimal, typmod),
        // money: a decimal of Debezium's `money.fraction.digits` (2), without precision.
        790 => match modes.decimal {
            DecimalMode::Precise => plain(Kind::Bytes)
                .logical("org.apache.kafka.connect.data.Decimal", 1)
                .parameter("scale", "2"),
            DecimalMode::Double => plain(Kind::Float64),
            DecimalMode::String => plain(Kind::String),
        },
        114 | 3802 => plain(Kind::String).logical("io.debezium.data.Json", 1),
        142 => plain(Kind::String).logical("io.debezium.data.Xml", 1),
        2950 => plain(Kind::String).logical("io.debezium.data.Uuid", 1),
        17 => match modes.binary {
            BinaryMode::Bytes => plain(Kind::Bytes),
            BinaryMode::Base64 | BinaryMode::Hex => plain(Kind::String),
        },
        1082 => match modes.time {
            TimePrecisionMode::Connect => {
                plain(Kind::Int32).logical("org.apache.kafka.connect.data.Date", 1)
            }
            _ => plain(Kind::Int32).logical("io.debezium.time.Date", 1),
        },
        1083 => match modes.time {
            TimePrecisionMode::Connect => {
                plain(Kind::Int32).logical("org.apache.kafka.connect.data.Time", 1)
            }
            TimePrecisionMode::Adaptive if precision(typmod) <= 3 => {
                plain(Kind::Int32).logical("io.debezium.time.Time", 1)
            }
            _ => plain(Kind::Int64).logical("io.debezium.time.MicroTime", 1),
        },
        1114 => match modes.time {
            TimePrecisionMode::Connect => {
                plain(Kind::Int64).logical("org.apache.kafka.connect.data.Timestamp", 1)
            }
            _ if precision(typmod) <= 3 => {
                plain(Kind::Int64).logical("io.debezium.time.Timestamp", 1)
            }
            _ => plain(Kind::Int64).logical("io.debezium.time.MicroTimestamp", 1),
        },
        1184 => plain(Kind::String).logical("io.debezium.time.ZonedTimestamp", 1),
        1266 => plain(Kind::String).logical("io.debezium.time.ZonedTime", 1),
        1186 => plain(Kind::Int64).logical("io.debezium.time.MicroDuration", 1),
        1560 if typmod == 1 => plain(Kind::Boolean),
        1560 | 1562 => plain(Kind::Bytes)
            .logical("io.debezium.data.Bits", 1)
            .parameter(
                "length",
                (if typmod < 0 { UNBOUNDED_BITS } else { typmod }).to_string(),
            ),
        600 => ConnectSchema::structure(vec![
            plain(Kind::Float64).field("x"),
            plain(Kind::Float64).field("y"),
            plain(Kind::Bytes).optional().field("wkb"),
            plain(Kind::Int32).optional().field("srid"),
        ])
        .logical("io.debezium.data.geometry.Point", 1)
        .doc("Geometry (POINT)"),
        // text, varchar, char, name, inet, cidr, macaddr, ranges, ...: the text.
        _ => plain(Kind::String),
    }
}

/// numeric by `decimal.handling.mode`: with a declared scale Connect's Decimal (scale and
/// precision as parameters), without one Debezium's VariableScaleDecimal struct.
fn decimal(mode: DecimalMode, typmod: i32) -> ConnectSchema {
    match mode {
        DecimalMode::Double => ConnectSchema::of(Kind::Float64),
        DecimalMode::String => ConnectSchema::of(Kind::String),
        DecimalMode::Precise if typmod >= 4 => {
            let declared = typmod - 4;
            ConnectSchema::of(Kind::Bytes)
                .logical("org.apache.kafka.connect.data.Decimal", 1)
                .parameter("scale", (declared & 0xffff).to_string())
                .parameter("connect.decimal.precision", (declared >> 16).to_string())
        }
        DecimalMode::Precise => ConnectSchema::structure(vec![
            ConnectSchema::of(Kind::Int32).field("scale"),
            ConnectSchema::of(Kind::Bytes).field("value"),
        ])
        .logical("io.debezium.data.VariableScaleDecimal", 1)
        .doc("Variable scaled decimal"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::connect_json;
    use super::*;

    /// `oid(typmod)`'s schema under `modes`, as JSON.
    fn schema_with(modes: DebeziumModes, oid: u32, typmod: i32) -> String {
        connect_json(
            &column_schema(&TypeCatalog::builtin(), modes, TypeOid(oid), typmod).optional(),
        )
    }

    fn schema(oid: u32, typmod: i32) -> String {
        schema_with(DebeziumModes::default(), oid, typmod)
    }

    /// numeric(p,s) carries typmod ((p << 16) | s) + 4.
    fn numeric_typmod(precision: i32, scale: i32) -> i32 {
        ((precision << 16) | scale) + 4
    }

    // Each expected text is the field's schema in Debezium 3.6's output (tests/goldens,
    // json-schemas, public.value_types), without its `"field"`.

    #[test]
    fn integers_floats_and_booleans() {
        assert_eq!(schema(16, -1), r#"{"type":"boolean","optional":true}"#);
        assert_eq!(schema(21, -1), r#"{"type":"int16","optional":true}"#);
        assert_eq!(schema(23, -1), r#"{"type":"int32","optional":true}"#);
        assert_eq!(schema(20, -1), r#"{"type":"int64","optional":true}"#);
        assert_eq!(schema(700, -1), r#"{"type":"float","optional":true}"#);
        assert_eq!(schema(701, -1), r#"{"type":"double","optional":true}"#);
    }

    #[test]
    fn decimals_by_decimal_handling_mode() {
        assert_eq!(
            schema(1700, numeric_typmod(5, 2)),
            r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"5"}}"#
        );
        assert_eq!(
            schema(1700, -1),
            r#"{"type":"struct","fields":[{"type":"int32","optional":false,"field":"scale"},{"type":"bytes","optional":false,"field":"value"}],"optional":true,"name":"io.debezium.data.VariableScaleDecimal","version":1,"doc":"Variable scaled decimal"}"#
        );
        assert_eq!(
            schema(790, -1),
            r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2"}}"#
        );
        for (mode, expected) in [
            (DecimalMode::Double, r#"{"type":"double","optional":true}"#),
            (DecimalMode::String, r#"{"type":"string","optional":true}"#),
        ] {
            let modes = DebeziumModes {
                decimal: mode,
                ..DebeziumModes::default()
            };
            for typmod in [-1, numeric_typmod(5, 2)] {
                assert_eq!(schema_with(modes, 1700, typmod), expected, "{mode:?}");
            }
            assert_eq!(schema_with(modes, 790, -1), expected, "{mode:?}");
        }
    }

    #[test]
    fn texts_uuids_json_and_bytes() {
        for oid in [25, 1043, 1042, 19, 869, 650, 829, 774, 3904] {
            assert_eq!(
                schema(oid, -1),
                r#"{"type":"string","optional":true}"#,
                "{oid}"
            );
        }
        assert_eq!(
            schema(2950, -1),
            r#"{"type":"string","optional":true,"name":"io.debezium.data.Uuid","version":1}"#
        );
        for oid in [114, 3802] {
            assert_eq!(
                schema(oid, -1),
                r#"{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1}"#
            );
        }
        assert_eq!(
            schema(142, -1),
            r#"{"type":"string","optional":true,"name":"io.debezium.data.Xml","version":1}"#
        );
        assert_eq!(schema(17, -1), r#"{"type":"bytes","optional":true}"#);
        for binary in [BinaryMode::Base64, BinaryMode::Hex] {
            let modes = DebeziumModes {
                binary,
                ..DebeziumModes::default()
            };
            assert_eq!(
                schema_with(modes, 17, -1),
                r#"{"type":"string","optional":true}"#
            );
        }
    }

    #[test]
    fn times_by_time_precision_mode() {
        let named = |t: &str, name: &str| {
            format!(r#"{{"type":"{t}","optional":true,"name":"{name}","version":1}}"#)
        };
        assert_eq!(schema(1082, -1), named("int32", "io.debezium.time.Date"));
        assert_eq!(
            schema(1083, -1),
            named("int64", "io.debezium.time.MicroTime")
        );
        assert_eq!(schema(1083, 3), named("int32", "io.debezium.time.Time"));
        assert_eq!(
            schema(1266, -1),
            named("string", "io.debezium.time.ZonedTime")
        );
        assert_eq!(
            schema(1114, -1),
            named("int64", "io.debezium.time.MicroTimestamp")
        );
        assert_eq!(
            schema(1114, 3),
            named("int64", "io.debezium.time.Timestamp")
        );
        assert_eq!(
            schema(1184, -1),
            named("string", "io.debezium.time.ZonedTimestamp")
        );
        assert_eq!(
            schema(1186, -1),
            named("int64", "io.debezium.time.MicroDuration")
        );
        let micros = DebeziumModes {
            time: TimePrecisionMode::AdaptiveTimeMicroseconds,
            ..DebeziumModes::default()
        };
        assert_eq!(
            schema_with(micros, 1083, 3),
            named("int64", "io.debezium.time.MicroTime")
        );
        assert_eq!(
            schema_with(micros, 1114, 3),
            named("int64", "io.debezium.time.Timestamp")
        );
        let connect = DebeziumModes {
            time: TimePrecisionMode::Connect,
            ..DebeziumModes::default()
        };
        assert_eq!(
            schema_with(connect, 1082, -1),
            named("int32", "org.apache.kafka.connect.data.Date")
        );
        assert_eq!(
            schema_with(connect, 1083, -1),
            named("int32", "org.apache.kafka.connect.data.Time")
        );
        assert_eq!(
            schema_with(connect, 1114, -1),
            named("int64", "org.apache.kafka.connect.data.Timestamp")
        );
    }

    #[test]
    fn points_and_hstores_as_debezium_types_them() {
        // Debezium 3.6's schemas (tests/goldens, json-schemas, public.value_types).
        assert_eq!(
            schema(600, -1),
            r#"{"type":"struct","fields":[{"type":"double","optional":false,"field":"x"},{"type":"double","optional":false,"field":"y"},{"type":"bytes","optional":true,"field":"wkb"},{"type":"int32","optional":true,"field":"srid"}],"optional":true,"name":"io.debezium.data.geometry.Point","version":1,"doc":"Geometry (POINT)"}"#
        );
        let mut types = TypeCatalog::builtin();
        types.insert_hstore(TypeOid(9100));
        assert_eq!(
            connect_json(
                &column_schema(&types, DebeziumModes::default(), TypeOid(9100), -1).optional()
            ),
            r#"{"type":"string","optional":true,"name":"io.debezium.data.Json","version":1}"#
        );
    }

    #[test]
    fn bits_are_booleans_or_debeziums_bits() {
        assert_eq!(schema(1560, 1), r#"{"type":"boolean","optional":true}"#);
        assert_eq!(
            schema(1560, 8),
            r#"{"type":"bytes","optional":true,"name":"io.debezium.data.Bits","version":1,"parameters":{"length":"8"}}"#
        );
        assert_eq!(
            schema(1562, -1),
            r#"{"type":"bytes","optional":true,"name":"io.debezium.data.Bits","version":1,"parameters":{"length":"2147483647"}}"#
        );
    }

    #[test]
    fn arrays_have_optional_items_of_the_elements_schema() {
        assert_eq!(
            schema(1007, -1),
            r#"{"type":"array","items":{"type":"int32","optional":true},"optional":true}"#
        );
        assert_eq!(
            schema(1185, -1),
            r#"{"type":"array","items":{"type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp","version":1},"optional":true}"#
        );
        assert_eq!(
            schema(1231, numeric_typmod(5, 2)),
            r#"{"type":"array","items":{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"5"}},"optional":true}"#
        );
    }

    #[test]
    fn enums_domains_and_their_arrays() {
        let mut types = TypeCatalog::builtin();
        let (mood, moods, posint, price) =
            (TypeOid(9001), TypeOid(9002), TypeOid(9003), TypeOid(9004));
        types.insert_enum(mood, vec!["sad".into(), "ok".into(), "happy".into()]);
        types.insert(
            moods,
            TypeKind::Array {
                element: mood,
                delimiter: ',',
            },
        );
        types.insert(
            posint,
            TypeKind::Domain {
                base: TypeOid(23),
                typmod: -1,
            },
        );
        let numeric_10_2 = numeric_typmod(10, 2);
        types.insert(
            price,
            TypeKind::Domain {
                base: TypeOid(1700),
                typmod: numeric_10_2,
            },
        );
        let schema = |oid| {
            connect_json(&column_schema(&types, DebeziumModes::default(), oid, -1).optional())
        };
        assert_eq!(
            schema(mood),
            r#"{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"sad,ok,happy"}}"#
        );
        assert_eq!(
            schema(moods),
            r#"{"type":"array","items":{"type":"string","optional":false,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"sad,ok,happy"}},"optional":true}"#
        );
        assert_eq!(schema(posint), r#"{"type":"int32","optional":true}"#);
        assert_eq!(
            schema(price),
            r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2","connect.decimal.precision":"10"}}"#
        );
    }
}
