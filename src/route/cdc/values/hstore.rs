//! `hstore` values as Debezium writes them under its default `hstore.handling.mode=json`: a JSON
//! object of the map, as a string (`{"a":"1","b c":null}`), schema `io.debezium.data.Json`.
//!
//! Debezium reads the map with pgjdbc's `HStoreConverter.fromString` into a `java.util.HashMap`
//! and writes it in that map's iteration order; the same keys in the same order are what make
//! the string's bytes equal, so [`java_hash_map_order`] reproduces that order.

use serde_json::Value;

/// The JSON text of the hstore output `text` (`"a"=>"1", "b c"=>NULL`), in the order Debezium
/// writes its keys; `None` when `text` is not hstore's output.
pub(super) fn hstore_json(text: &str) -> Option<String> {
    let pairs = parse(text)?;
    let order = java_hash_map_order(pairs.iter().map(|(k, _)| k.as_str()));
    let mut out = String::from("{");
    for (n, i) in order.into_iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let (key, value) = &pairs[i];
        out.push_str(&Value::from(key.as_str()).to_string());
        out.push(':');
        out.push_str(
            &value
                .as_deref()
                .map_or(Value::Null, Value::from)
                .to_string(),
        );
    }
    out.push('}');
    Some(out)
}

/// The pairs of hstore's output form: `"key"=>"value"` or `"key"=>NULL`, separated by `, `,
/// keys and values double-quoted with `\` escaping `"` and `\`. Postgres writes no key twice.
fn parse(text: &str) -> Option<Vec<(String, Option<String>)>> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (key, after) = quoted(rest)?;
        let after = after.trim_start().strip_prefix("=>")?.trim_start();
        let (value, after) = match after.strip_prefix("NULL") {
            Some(after) => (None, after),
            None => {
                let (value, after) = quoted(after)?;
                (Some(value), after)
            }
        };
        pairs.push((key, value));
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(next) => next.trim_start(),
            None if after.is_empty() => after,
            None => return None,
        };
    }
    Some(pairs)
}

/// A double-quoted string at the start of `text`, unescaped, and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &body[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// The order in which a `java.util.HashMap` filled with `keys` (in this order, all distinct)
/// iterates them, as indexes into `keys`: by bucket (`(h ^ h >>> 16) & (capacity - 1)` of
/// `String.hashCode`), then by insertion within a bucket. The capacity starts at 16 and doubles
/// whenever the size exceeds three quarters of it; a resize keeps each bucket's relative order.
fn java_hash_map_order<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<usize> {
    let hashes: Vec<u32> = keys.map(java_string_hash).collect();
    let mut capacity: usize = 16;
    while hashes.len() * 4 > capacity * 3 {
        capacity *= 2;
    }
    let mut order: Vec<usize> = (0..hashes.len()).collect();
    order.sort_by_key(|&i| {
        let h = hashes[i];
        ((h ^ (h >> 16)) as usize & (capacity - 1), i)
    });
    order
}

/// Java's `String.hashCode`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, wrapping.
fn java_string_hash(s: &str) -> u32 {
    s.encode_utf16().fold(0_u32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(u32::from(unit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hstore_is_a_json_map_in_java_hash_map_order() {
        // Debezium 3.6's output (tests/goldens, public.value_types).
        assert_eq!(
            hstore_json(r#""a"=>"1", "b c"=>NULL"#).as_deref(),
            Some(r#"{"a":"1","b c":null}"#)
        );
        assert_eq!(hstore_json("").as_deref(), Some("{}"));
        // Escapes inside quotes; JSON escapes on the way out.
        assert_eq!(
            hstore_json(r#""q\"k"=>"back\\slash""#).as_deref(),
            Some(r#"{"q\"k":"back\\slash"}"#)
        );
        assert_eq!(hstore_json(r#""a"=>1"#), None);
        assert_eq!(hstore_json(r#""a"=>"1" "b"=>"2""#), None);
    }

    #[test]
    fn keys_follow_java_hash_map_iteration() {
        // Values checked against Java: "Aa" and "BB" share hashCode 2112 (bucket 0, insertion
        // order), "a" is 97 (bucket 1), "p" is 112 (bucket 0).
        assert_eq!(java_string_hash("Aa"), 2112);
        assert_eq!(java_string_hash("BB"), 2112);
        assert_eq!(java_string_hash("ü"), 252);
        assert_eq!(
            java_hash_map_order(["a", "BB", "p", "Aa"].into_iter()),
            vec![1, 2, 3, 0]
        );
        // 13 keys exceed 12 = 16 * 0.75: 32 buckets, so "p" (112 & 31 = 16) follows "a" (97 & 31 = 1).
        let many: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = ["p", "a"]
            .into_iter()
            .chain(many.iter().map(String::as_str))
            .collect();
        let order = java_hash_map_order(keys.iter().copied());
        let position = |key: &str| order.iter().position(|&i| keys[i] == key).expect("present");
        assert!(position("a") < position("p"));
    }
}
