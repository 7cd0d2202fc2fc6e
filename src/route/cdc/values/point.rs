//! `point` values as Debezium writes them: its `io.debezium.data.geometry.Point` struct,
//! `{"x", "y", "wkb", "srid"}`, with the point's well-known binary (little-endian) and no SRID.

use base64::Engine;
use serde_json::{json, Value};

/// The struct of the point `text` (`(1.5,-2)`); `None` when `text` is not a point.
pub(super) fn point(text: &str) -> Option<Value> {
    let (x, y) = text
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')?
        .split_once(',')?;
    let (x, y): (f64, f64) = (x.trim().parse().ok()?, y.trim().parse().ok()?);
    // WKB: byte order 1 (little-endian), geometry type 1 (point), then x and y.
    let mut wkb = vec![1_u8];
    wkb.extend_from_slice(&1_u32.to_le_bytes());
    wkb.extend_from_slice(&x.to_le_bytes());
    wkb.extend_from_slice(&y.to_le_bytes());
    Some(json!({
        "x": coordinate(x),
        "y": coordinate(y),
        "wkb": base64::engine::general_purpose::STANDARD.encode(wkb),
        "srid": null,
    }))
}

/// A coordinate as a JSON number; NaN and the infinities, which JSON numbers cannot hold, as
/// their Java names, as the floats of other columns are written.
fn coordinate(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or_else(
        || {
            Value::from(if v.is_nan() {
                "NaN"
            } else if v > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            })
        },
        Value::Number,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_debeziums_struct_with_wkb() {
        // Debezium 3.6's output (tests/goldens, public.value_types).
        assert_eq!(
            point("(1.5,-2)"),
            Some(json!({"x": 1.5, "y": -2.0, "wkb": "AQEAAAAAAAAAAAD4PwAAAAAAAADA", "srid": null}))
        );
        assert_eq!(
            point("(0,0)"),
            Some(json!({"x": 0.0, "y": 0.0, "wkb": "AQEAAAAAAAAAAAAAAAAAAAAAAAAA", "srid": null}))
        );
        assert_eq!(point("(NaN,1)").expect("point")["x"], json!("NaN"));
        assert_eq!(point("1,2"), None);
        assert_eq!(point("(a,2)"), None);
    }
}
