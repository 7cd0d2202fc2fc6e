//! A column's `DEFAULT` as the `default` of its Kafka Connect field schema, as Debezium's
//! Postgres connector derives it (`PostgresDefaultValueConverter`) from the expression Postgres
//! prints (`pg_get_expr`): a literal (`42`, `'abc'::text`, `'2024-01-31'::date`) is converted as
//! a value of the column's type; a function call (`nextval(...)`, `now()`, `gen_random_uuid()`) or
//! `CURRENT_TIMESTAMP` and its kin give the type's placeholder (0, `""`, the epoch, the zero
//! uuid), as Debezium does; `NULL::type` gives none.
//!
//! Types Debezium has no default for (bytea, money, inet, geometry, ranges, arrays, domains,
//! ...), values it cannot parse and defaults that convert to a struct (`numeric` without scale:
//! Connect cannot hold a struct default) have none; nor has a generated `interval` default
//! (Debezium's placeholder `epoch` is no interval pgjdbc's `PGInterval` parses).

use serde_json::Value;

use crate::pg::types::{TypeCatalog, TypeKind};
use crate::pg::TypeOid;
use crate::route::cdc::values::{DebeziumModes, ValueConvention};

/// Debezium's `default` for a column of type `oid` (modifier `typmod`) whose default expression
/// is `expression`; `None` when Debezium writes none.
pub fn default_value(
    types: &TypeCatalog,
    modes: DebeziumModes,
    oid: TypeOid,
    typmod: i32,
    expression: &str,
) -> Option<Value> {
    let expression = expression.trim();
    if expression.starts_with("NULL::") {
        return None;
    }
    let generated = is_function(expression)
        || matches!(
            expression.to_ascii_lowercase().as_str(),
            "current_timestamp" | "current_time" | "current_date" | "localtime" | "localtimestamp"
        );
    let convert = |text: &str| {
        ValueConvention::Debezium(modes)
            .convert(types, oid, typmod, text)
            .ok()
            .filter(|v| !v.is_object())
    };
    if types.kind(oid) == TypeKind::Enum {
        let (literal, cast) = expression.rsplit_once("::")?;
        let cast = cast.rsplit('.').next()?.trim_matches('"');
        let label = literal.strip_prefix('\'')?.strip_suffix('\'')?;
        return (!generated
            && types.enum_labels(oid).iter().any(|l| l == label)
            && !cast.is_empty())
        .then(|| Value::from(label));
    }
    let placeholder = match oid.0 {
        16 => "false",
        21 | 23 | 20 => "0",
        700 | 701 | 1700 => "0.0",
        25 | 1043 | 1042 => "",
        114 | 3802 => "{}",
        142 => "",
        1083 => "00:00:00",
        1186 if generated => return None,
        1186 => "",
        // Debezium's placeholders: bit "00", varbit "0".
        1560 => "00",
        1562 => "0",
        2950 => "00000000-0000-0000-0000-000000000000",
        1082 | 1114 => "1970-01-01",
        1184 => "1970-01-01",
        _ => return None,
    };
    let text = if generated {
        placeholder
    } else {
        literal(expression)?
    };
    match oid.0 {
        // Java's Boolean.parseBoolean.
        16 => Some(Value::Bool(text.eq_ignore_ascii_case("true"))),
        // Strings as written (a char(n) default unpadded, as Debezium has it).
        25 | 1043 | 1042 | 114 | 3802 | 142 => Some(Value::from(text)),
        // Debezium reads a one-digit bit default as a boolean, a longer one as bits.
        1560 if text.len() == 1 => Some(Value::Bool(text == "1")),
        21 | 23 | 20 => Some(Value::from(text.parse::<i64>().ok()?)),
        700 | 701 => serde_json::Number::from_f64(text.parse().ok()?).map(Value::Number),
        2950 => Some(Value::from(text.to_ascii_lowercase())),
        // A timestamp with time zone without offset is read in UTC.
        1184 if generated => convert("1970-01-01 00:00:00+00"),
        1114 if generated => convert("1970-01-01 00:00:00"),
        _ => convert(text),
    }
}

/// Debezium's `FUNCTION_DEFAULT_PATTERN`: `^[(]?[A-Za-z0-9_.]+\(.*\)`, a call at the start.
fn is_function(expression: &str) -> bool {
    let body = expression.strip_prefix('(').unwrap_or(expression);
    let name_len = body
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
        .count();
    name_len > 0 && body[name_len..].starts_with('(') && body[name_len..].contains(')')
}

/// Debezium's `extractDefault`: without a quote the expression itself (`42`, `true`), else the
/// text between the first two quotes (`'abc'::text`: `abc`).
fn literal(expression: &str) -> Option<&str> {
    if !expression.contains('\'') {
        return Some(expression);
    }
    let start = expression.find('\'')? + 1;
    let end = start + expression[start..].find('\'')?;
    Some(&expression[start..end])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn default(oid: u32, typmod: i32, expression: &str) -> Option<Value> {
        default_value(
            &TypeCatalog::builtin(),
            DebeziumModes::default(),
            TypeOid(oid),
            typmod,
            expression,
        )
    }

    #[test]
    fn literals_convert_as_values_of_the_column() {
        assert_eq!(default(23, -1, "42"), Some(json!(42)));
        assert_eq!(default(23, -1, "'-1'::integer"), Some(json!(-1)));
        assert_eq!(
            default(20, -1, "'9000000000'::bigint"),
            Some(json!(9_000_000_000_i64))
        );
        assert_eq!(default(16, -1, "true"), Some(json!(true)));
        assert_eq!(default(25, -1, "'it''s'::text"), Some(json!("it")));
        assert_eq!(default(1042, 7, "'ab'::bpchar"), Some(json!("ab")));
        assert_eq!(default(701, -1, "1.5"), Some(json!(1.5)));
        // numeric(5,2): Connect's Decimal, padded to the scale (150 = 0x0096).
        assert_eq!(default(1700, (5 << 16 | 2) + 4, "1.5"), Some(json!("AJY=")));
        // numeric without scale is a struct: no default.
        assert_eq!(default(1700, -1, "2.5"), None);
        assert_eq!(default(1082, -1, "'2024-01-31'::date"), Some(json!(19753)));
        assert_eq!(default(3802, -1, "'{}'::jsonb"), Some(json!("{}")));
        assert_eq!(default(142, -1, "'<a/>'::xml"), Some(json!("<a/>")));
        assert_eq!(
            default(1083, -1, "'12:34:56'::time without time zone"),
            Some(json!(45_296_000_000_i64))
        );
        // The session's IntervalStyle is iso_8601.
        assert_eq!(
            default(1186, -1, "'P1DT2H'::interval"),
            Some(json!(93_600_000_000_i64))
        );
        assert_eq!(default(1560, 1, "'1'::\"bit\""), Some(json!(true)));
        assert_eq!(default(1560, 3, "'101'::\"bit\""), Some(json!("BQ==")));
        assert_eq!(default(1562, -1, "'110'::\"bit\""), Some(json!("Bg==")));
    }

    #[test]
    fn generated_defaults_are_placeholders_and_null_is_none() {
        assert_eq!(
            default(23, -1, "nextval('t_id_seq'::regclass)"),
            Some(json!(0))
        );
        assert_eq!(
            default(2950, -1, "gen_random_uuid()"),
            Some(json!("00000000-0000-0000-0000-000000000000"))
        );
        assert_eq!(default(1082, -1, "CURRENT_DATE"), Some(json!(0)));
        assert_eq!(default(1114, -1, "now()"), Some(json!(0)));
        assert_eq!(default(1083, -1, "LOCALTIME"), Some(json!(0)));
        assert_eq!(default(1186, -1, "make_interval(days => 1)"), None);
        assert_eq!(default(25, -1, "NULL::text"), None);
        assert_eq!(default(17, -1, "'\\x00'::bytea"), None);
        assert_eq!(default(23, -1, "(-5)"), None);
    }

    #[test]
    fn enum_defaults_are_their_label() {
        let mut types = TypeCatalog::builtin();
        types.insert_enum(TypeOid(9001), vec!["sad".into(), "ok".into()]);
        let default = |e| default_value(&types, DebeziumModes::default(), TypeOid(9001), -1, e);
        assert_eq!(default("'ok'::mood"), Some(json!("ok")));
        assert_eq!(default("'ok'::public.mood"), Some(json!("ok")));
        assert_eq!(default("'nope'::mood"), None);
    }
}
