//! outboxd against real Debezium output (issue 15).
//!
//! `tests/goldens/debezium-<version>/` holds what Debezium Server wrote for the fixture workload
//! of `tests/goldens/fixture/` (keys, values, headers, partitions, record timestamps, per topic), in
//! two runs: its default converter (JSON with schemas) and JSON with `schemas.enable=false`.
//! `bench/goldens` records them (not in CI: it needs Debezium Server and Java 21) by running the
//! ignored [`record_debezium_goldens`]. [`outboxd_matches_debeziums_goldens`] runs the `outboxd`
//! binary over the same workload with the settings that mirror Debezium's and compares record by
//! record, after normalising only what must differ ([`normalise`]); every difference left is either
//! in [`KNOWN_DIFFERENCES`] or fails the test, and a known difference that no longer shows fails it
//! too, so the list stays true.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use support::goldens::{
    check_known, debezium_properties, diff_values, fixture_db, golden_dir, normalise, paired,
    read_goldens, recorded_properties, run_relays, run_workload, topics_of, wait_done,
    write_goldens, Difference, PLACEHOLDER,
};
use support::kafka::read_to_end;
use support::postgres::{create_pgoutput_slot, TestDb};
use support::relay::{RelayProcess, RelaySpec};
use support::seen::Seen;

/// Debezium Server's converter settings, one golden directory each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Converter {
    /// Its default: JsonConverter with schemas, `{"schema": ..., "payload": ...}` everywhere.
    JsonSchemas,
    /// `debezium.format.{key,value,header}.schemas.enable=false`.
    Json,
}

impl Converter {
    const ALL: [Converter; 2] = [Converter::JsonSchemas, Converter::Json];

    fn name(self) -> &'static str {
        match self {
            Converter::JsonSchemas => "json-schemas",
            Converter::Json => "json",
        }
    }

    fn dir(self) -> PathBuf {
        golden_dir(self.name())
    }

    /// Debezium Server's `application.properties` for a run over `db` from `slot`
    /// ([`debezium_properties`]) with this converter: JsonConverter, with or without schemas.
    fn properties(self, db: &TestDb, slot: &str) -> String {
        let schemas = match self {
            Converter::JsonSchemas => "",
            Converter::Json => {
                "debezium.format.key.schemas.enable=false
debezium.format.value.schemas.enable=false
debezium.format.header.schemas.enable=false
"
            }
        };
        debezium_properties(db, slot, "StringSerializer", schemas)
    }
}

/// One record as a consumer sees it: a line of a golden file.
type Golden = Seen;

/// Records per topic (the name after the prefix), each topic's in partition and offset order.
type Topics = BTreeMap<String, Vec<Golden>>;

/// The topics under `<name>.` with their records, `name` replaced by [`PLACEHOLDER`]; empty
/// topics are left out.
fn read_prefix(name: &str) -> Topics {
    topics_of(name)
        .into_iter()
        .filter_map(|topic| {
            let records: Vec<Golden> = read_to_end(&format!("{name}.{topic}"))
                .iter()
                .map(|m| Seen::replacing(m, name, PLACEHOLDER))
                .collect();
            (!records.is_empty()).then_some((topic, records))
        })
        .collect()
}

/// Records the goldens: for each converter a fresh fixture database, a slot, the workload, then
/// Debezium Server from the slot until the workload's last change is in Kafka. Run by
/// `bench/goldens`, which resolves Debezium Server and Java into `OUTBOXD_DEBEZIUM_HOME` and
/// `OUTBOXD_DEBEZIUM_JAVA_HOME`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Debezium Server: run bench/goldens"]
async fn record_debezium_goldens() {
    let home = PathBuf::from(
        std::env::var_os("OUTBOXD_DEBEZIUM_HOME").expect("OUTBOXD_DEBEZIUM_HOME (bench/goldens)"),
    );
    let java = std::env::var_os("OUTBOXD_DEBEZIUM_JAVA_HOME").map(PathBuf::from);
    for converter in Converter::ALL {
        let db = fixture_db("goldens").await;
        create_pgoutput_slot(&db.client().await, &db.slot).await;
        run_workload(&db).await;
        let properties = converter.properties(&db, &db.slot);
        let server = support::debezium::DebeziumServer::start(&home, java.as_deref(), &properties);
        wait_done(&db.name, Duration::from_secs(300), || server.log_text());
        // Debezium Server's sink does not write in transactions: give what it sent before the
        // last change time to land, then stop it.
        std::thread::sleep(Duration::from_secs(3));
        drop(server);
        let topics = read_prefix(&db.name);
        let properties = recorded_properties(&db, &properties);
        write_goldens(&converter.dir(), &topics, &properties);
        eprintln!(
            "{}: {} records in {} topics",
            converter.name(),
            topics.values().map(Vec::len).sum::<usize>(),
            topics.len()
        );
    }
}

/// A key, value or header as compared: the `payload` of a `{"schema", "payload"}` envelope and
/// its schema, or the text and no schema.
fn without_schema(text: &str) -> (String, Option<Value>) {
    #[derive(Deserialize)]
    struct Enveloped<'a> {
        schema: Value,
        #[serde(borrow)]
        payload: &'a RawValue,
    }
    match serde_json::from_str::<Enveloped<'_>>(text) {
        Ok(e) => (e.payload.get().to_owned(), Some(e.schema)),
        Err(_) => (text.to_owned(), None),
    }
}

/// A Kafka Connect schema as compared: a struct as an object of its fields by name (so that a
/// difference names the field), with `(struct)` its own attributes and `(fields)` their order;
/// any other schema as its JSON text (a difference shows the whole field's schema).
fn schema_tree(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Some(object) = schema.as_object_mut() {
        object.remove("field");
        if let Some(Value::Array(fields)) = object.remove("fields") {
            let mut tree = serde_json::Map::new();
            let names: Vec<&str> = fields
                .iter()
                .map(|f| f["field"].as_str().unwrap_or("?"))
                .collect();
            tree.insert("(fields)".into(), json!(names.join(",")));
            tree.insert(
                "(struct)".into(),
                json!(Value::Object(object.clone()).to_string()),
            );
            for field in &fields {
                let name = field["field"].as_str().unwrap_or("?").to_owned();
                tree.insert(name, schema_tree(field));
            }
            return Value::Object(tree);
        }
    }
    json!(schema.to_string())
}

/// A text as JSON when it is JSON (keys, values, header values), else as a JSON string.
fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A record's parts as compared.
#[derive(Debug)]
struct Compared {
    partition: i32,
    /// The key's bytes as written (with its schema, if any): they choose the partition.
    key_bytes: Option<String>,
    /// The key's payload.
    key_text: Option<String>,
    key: Value,
    value: Value,
    /// The text of each column value of the payload's `before` and `after` ([`row_texts`]).
    row_texts: BTreeMap<String, String>,
    headers: Vec<(String, Value)>,
    /// The schema of each enveloped part (`key`, `value`, `header <name>`).
    schemas: BTreeMap<String, Value>,
    /// Whether Debezium Server's `__debezium.context.*` headers were there.
    context_headers: bool,
    /// Whether the record has no value: a tombstone, which compaction acts on, is not the JSON
    /// `null` value (both read as `null` in `value`).
    tombstone: bool,
}

/// Parts of `record` as compared.
fn compared(record: &Golden) -> Compared {
    let mut schemas = BTreeMap::new();
    let mut strip = |text: &Option<String>, part: String| {
        text.as_deref().map(|t| {
            let (inner, schema) = without_schema(t);
            if let Some(schema) = schema {
                schemas.insert(part, schema);
            }
            inner
        })
    };
    let key_text = strip(&record.key, "key".into());
    let value_text = strip(&record.value, "value".into());
    let row_texts = value_text.as_deref().map(row_texts).unwrap_or_default();
    let mut value = value_text.as_deref().map_or(Value::Null, parsed);
    normalise(&mut value);
    let mut context_headers = false;
    let headers = record
        .headers
        .iter()
        .filter(|(name, _)| {
            let context = name.starts_with("__debezium.context.");
            context_headers |= context;
            !context
        })
        .map(|(name, v)| {
            // The payload's bytes as written: JsonConverter quotes a string header value,
            // Kafka Connect's SimpleHeaderConverter does not.
            let text = strip(v, format!("header {name}"));
            (name.clone(), text.map_or(Value::Null, Value::String))
        })
        .collect();
    Compared {
        partition: record.partition,
        key_bytes: record.key.clone(),
        key: key_text.as_deref().map_or(Value::Null, parsed),
        key_text,
        value,
        row_texts,
        headers,
        schemas,
        context_headers,
        tombstone: record.value.is_none(),
    }
}

/// The text of each column value of a change event's `before` and `after` as written
/// (`after.f` → `1.5`), keyed by its path: what a consumer's parser reads, where comparing parsed
/// JSON would take `1.5` and `1.50`, or `9000000000` and `9.0E9`, for the same value.
fn row_texts(payload: &str) -> BTreeMap<String, String> {
    type Fields = BTreeMap<String, Box<RawValue>>;
    let mut texts = BTreeMap::new();
    let Ok(envelope) = serde_json::from_str::<Fields>(payload) else {
        return texts;
    };
    for part in ["before", "after"] {
        let row = envelope
            .get(part)
            .map(|raw| serde_json::from_str::<Fields>(raw.get()));
        for (column, text) in row.and_then(Result::ok).into_iter().flatten() {
            texts.insert(format!("{part}.{column}"), text.get().to_owned());
        }
    }
    texts
}

/// Compares the records of one topic: grouped by their key as JSON (so that keys written with
/// fields in another order still meet), in offset order within a key; records without key in
/// the order of their normalised value. Notes in `context_headers` whether the golden had
/// Debezium Server's context headers.
fn compare_topic(
    file: &str,
    golden: &[Golden],
    outboxd: &[Golden],
    context_headers: &mut bool,
    out: &mut BTreeSet<Difference>,
) {
    let group = |records: &[Golden]| {
        let mut groups: BTreeMap<String, Vec<Compared>> = BTreeMap::new();
        for record in records {
            let c = compared(record);
            groups.entry(c.key.to_string()).or_default().push(c);
        }
        if let Some(keyless) = groups.get_mut("null") {
            keyless.sort_by_key(|c| c.value.to_string());
        }
        groups
    };
    let golden = group(golden);
    let outboxd = group(outboxd);
    let mut push = |what: String, g: String, o: String| {
        out.insert(Difference {
            file: file.to_owned(),
            what,
            golden: g,
            outboxd: o,
        });
    };
    let mut counts = BTreeSet::new();
    for (key, g, o) in paired(file, &golden, &outboxd, &mut counts) {
        for (g, o) in g.iter().zip(o) {
            *context_headers |= g.context_headers;
            if g.key_text != o.key_text {
                push(
                    "key bytes".into(),
                    format!("{:?}", g.key_text),
                    format!("{:?}", o.key_text),
                );
            }
            // Both with a schema: the bytes too (JsonConverter's key order picks the partition).
            let both_enveloped = g.schemas.contains_key("key") && o.schemas.contains_key("key");
            if both_enveloped && g.key_text == o.key_text && g.key_bytes != o.key_bytes {
                push(
                    "key bytes with schema".into(),
                    format!("{:?}", g.key_bytes),
                    format!("{:?}", o.key_bytes),
                );
            }
            // Without a key the producer's partitioner picks any partition; with other key
            // bytes (a schema where the other has none) the partition may differ too, and so
            // it may where the key's schema names the run's topic (`<name>.public.t.Key`, read
            // as [`PLACEHOLDER`]): its bytes were not the same.
            if key != "null"
                && g.key_bytes == o.key_bytes
                && !g.key_bytes.as_deref().unwrap_or("").contains(PLACEHOLDER)
                && g.partition != o.partition
            {
                push(
                    format!("partition of key {key}"),
                    g.partition.to_string(),
                    o.partition.to_string(),
                );
            }
            let parts: BTreeSet<&String> = g.schemas.keys().chain(o.schemas.keys()).collect();
            for part in parts {
                match (g.schemas.get(part), o.schemas.get(part)) {
                    (Some(gs), Some(os)) => {
                        let mut schemas = Vec::new();
                        diff_values(
                            &format!("{part} schema"),
                            &schema_tree(gs),
                            &schema_tree(os),
                            &mut schemas,
                        );
                        for (path, gv, ov) in schemas {
                            push(path, gv.to_string(), ov.to_string());
                        }
                    }
                    (gs, os) => {
                        let shown = |s: Option<&Value>| {
                            if s.is_some() {
                                "{\"schema\": ..., \"payload\": ...}"
                            } else {
                                "the payload alone"
                            }
                        };
                        push(format!("{part} schema"), shown(gs).into(), shown(os).into());
                    }
                }
            }
            if g.tombstone != o.tombstone {
                push(
                    "tombstone".into(),
                    g.tombstone.to_string(),
                    o.tombstone.to_string(),
                );
            }
            let mut values = Vec::new();
            diff_values("value", &g.value, &o.value, &mut values);
            for (path, gv, ov) in values {
                push(path, gv.to_string(), ov.to_string());
            }
            // Scalar column values equal as JSON: their bytes too. (A struct's or array's
            // members, like the envelope's fields, are compared as JSON: outboxd's JSON objects
            // are written with their members sorted.)
            for (path, gt) in &g.row_texts {
                match o.row_texts.get(path) {
                    Some(ot)
                        if ot != gt
                            && parsed(ot) == parsed(gt)
                            && !matches!(parsed(gt), Value::Object(_) | Value::Array(_)) =>
                    {
                        push(format!("value bytes of {path}"), gt.clone(), ot.clone());
                    }
                    _ => {}
                }
            }
            if g.headers != o.headers {
                push(
                    "headers".into(),
                    json!(g.headers).to_string(),
                    json!(o.headers).to_string(),
                );
            }
        }
    }
    out.extend(counts);
}

/// Every difference between a converter's goldens and outboxd's records.
fn compare(converter: Converter, golden: &Topics, outboxd: &Topics) -> BTreeSet<Difference> {
    let mut out = BTreeSet::new();
    let mut context_headers = false;
    let topics: BTreeSet<&String> = golden.keys().chain(outboxd.keys()).collect();
    for topic in topics {
        let file = format!("{}/{topic}", converter.name());
        compare_topic(
            &file,
            golden.get(topic).map_or(&[][..], Vec::as_slice),
            outboxd.get(topic).map_or(&[][..], Vec::as_slice),
            &mut context_headers,
            &mut out,
        );
    }
    if context_headers {
        out.insert(Difference {
            file: format!("{}/*", converter.name()),
            what: "headers __debezium.context.*".into(),
            golden: "Debezium Server's context headers".into(),
            outboxd: "none".into(),
        });
    }
    out
}

/// A difference from Debezium not fixed yet: `(file, what, golden, outboxd, issue 15 item)`, as
/// [`Difference`] prints them.
#[rustfmt::skip]
const KNOWN_DIFFERENCES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "json-schemas/*", "headers __debezium.context.*", "Debezium Server's context headers", "none",
        "deliberate: Debezium Server's __debezium.context.* describe its process, not the change (docs/debezium.md)",
    ),
    (
        "json-schemas/public.value_types", "value bytes of after.f8", "1.5E300", "1.5e+300",
        "to fix: Jackson writes a double as Java's Double.toString (1.5E300, 1.0E7), outboxd as serde_json does; the same number",
    ),
    (
        "json-schemas/public.value_types", "value.after.an", "null", "[{\"scale\":1,\"value\":\"Dw==\"},null]",
        "deliberate: Debezium nulls a numeric[] holding NaN; outboxd keeps the elements",
    ),
    (
        "json-schemas/public.value_types", "value.after.nm", "null", "\"\"",
        "deliberate: Debezium does not map `name` (null); outboxd writes the text",
    ),
    (
        "json-schemas/public.value_types", "value.after.nm", "null", "\"pg_name\"",
        "deliberate: Debezium does not map `name` (null); outboxd writes the text",
    ),
    (
        "json/*", "headers __debezium.context.*", "Debezium Server's context headers", "none",
        "deliberate: Debezium Server's __debezium.context.* describe its process, not the change (docs/debezium.md)",
    ),
    (
        "json/outbox.expanded.order", "value.k", "\"<absent>\"", "null",
        "deliberate: with expand.json.payload Debezium drops null fields of the payload",
    ),
    (
        "json/public.value_types", "value bytes of after.f8", "1.5E300", "1.5e+300",
        "to fix: Jackson writes a double as Java's Double.toString (1.5E300, 1.0E7), outboxd as serde_json does; the same number",
    ),
    (
        "json/public.value_types", "value.after.an", "null", "[{\"scale\":1,\"value\":\"Dw==\"},null]",
        "deliberate: Debezium nulls a numeric[] holding NaN; outboxd keeps the elements",
    ),
    (
        "json/public.value_types", "value.after.nm", "null", "\"\"",
        "deliberate: Debezium does not map `name` (null); outboxd writes the text",
    ),
    (
        "json/public.value_types", "value.after.nm", "null", "\"pg_name\"",
        "deliberate: Debezium does not map `name` (null); outboxd writes the text",
    ),];

/// outboxd's configuration for a golden run: what mirrors Debezium Server's
/// `application.properties` of [`Converter::properties`] (docs/debezium.md has the table): its
/// JsonConverter (`key_format` and `header_format` `json`), the router's defaults
/// (`tombstone_on_empty_payload = false`), and `cdc.schemas` and `outbox.schemas` as the
/// converter's `schemas.enable`.
fn mirror_specs(db: &TestDb, converter: Converter) -> [RelaySpec; 2] {
    let base = RelaySpec::for_db(db);
    let spec = |suffix: &str, publication: String, extra: String| RelaySpec {
        name: format!("{}_{suffix}", db.name),
        slot: format!("{}_{suffix}", db.slot),
        publication,
        offsets_topic: format!("outboxd_offsets_{}_{suffix}", db.name),
        extra,
        ..base.clone()
    };
    [
        spec(
            "main",
            format!("{}_main", db.publication),
            format!(
                "[outbox]\ntables = [\"public.outbox\"]\nexpand_json_payload = false\n\
                 key_format = \"json\"\ntopic = \"{db}.outbox.event.${{routedByValue}}\"\n\
                 schemas = {schemas}\ntombstone_on_empty_payload = false\n\
                 header_format = \"json\"\n\
                 [cdc]\ntopic_prefix = \"{db}\"\ntruncate_events = true\nschemas = {schemas}\n",
                db = db.name,
                schemas = converter == Converter::JsonSchemas,
            ),
        ),
        spec(
            "expanded",
            format!("{}_expanded", db.publication),
            format!(
                "[outbox]\ntables = [\"public.outbox_expanded\"]\nexpand_json_payload = true\n\
                 key_format = \"json\"\ntopic = \"{db}.outbox.expanded.${{routedByValue}}\"\n\
                 schemas = {schemas}\ntombstone_on_empty_payload = false\n\
                 header_format = \"json\"\n[cdc]\nenabled = false\n",
                db = db.name,
                schemas = converter == Converter::JsonSchemas,
            ),
        ),
    ]
}

/// outboxd's records for the fixture workload, mirroring `converter`'s run into a database of its
/// own, complete as far as `golden` has records.
async fn outboxd_run(converter: Converter, golden: &Topics) -> Topics {
    let db = fixture_db(&format!(
        "goldens_cmp_{}",
        converter.name().replace('-', "_")
    ))
    .await;
    let _relays = run_relays(&db, &mirror_specs(&db, converter)).await;
    // The expanded outbox's relay is another slot: wait until its topics are complete too.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let topics = read_prefix(&db.name);
        let complete = golden
            .iter()
            .all(|(topic, records)| topics.get(topic).map_or(0, Vec::len) >= records.len());
        if complete || Instant::now() > deadline {
            return topics;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn outboxd_matches_debeziums_goldens() {
    let mut found = BTreeSet::new();
    for converter in Converter::ALL {
        let golden: Topics = read_goldens(&converter.dir());
        let outboxd = outboxd_run(converter, &golden).await;
        found.extend(compare(converter, &golden, &outboxd));
    }
    check_known(&found, KNOWN_DIFFERENCES);
}

/// PostgreSQL 15+'s negative scales (`numeric(3,-2)` rounds to hundreds): the type modifier keeps
/// the scale in 11 bits, which Debezium reads with pgjdbc's `TypeInfoCache.getScale`
/// (`(typmod - 4) & 0xFFFF`) as 2046, so it writes Decimal `scale` "2046" and every value padded
/// with 2046 zeros (851 bytes for 1200), column defaults alike. outboxd writes the same bytes: the
/// rows of `negative-scale/workload.sql` through outboxd (initial snapshot, then the stream)
/// against what Debezium Server wrote for them (`negative-scale/public.neg.jsonl`, recorded by
/// hand), record by record: `op`, `before`, `after` and the columns' schemas.
#[tokio::test(flavor = "multi_thread")]
async fn negative_scale_numerics_are_debeziums_bytes() {
    let dir = golden_dir("negative-scale");
    let golden: Vec<Value> = std::fs::read_to_string(dir.join("public.neg.jsonl"))
        .expect("negative-scale goldens")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a golden value"))
        .collect();
    let db = TestDb::create("negscale").await;
    let client = db.client().await;
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .expect("server version")
        .get(0);
    if version.parse::<u32>().unwrap_or(0) < 150_000 {
        eprintln!("PostgreSQL {version} has no negative numeric scales: nothing to compare");
        return;
    }
    client
        .batch_execute(&format!(
            "CREATE TABLE neg (id int PRIMARY KEY, n numeric(3,-2),
               m numeric(5,-3) DEFAULT 12000, p numeric(4,1));
             ALTER TABLE neg REPLICA IDENTITY FULL;
             INSERT INTO neg VALUES (1, 1234, 9999999, 123.45);
             CREATE PUBLICATION {} FOR TABLE neg",
            db.publication
        ))
        .await
        .expect("table");
    let mut spec = RelaySpec::for_db(&db);
    spec.extra = format!(
        "[outbox]\ntables = []\n[cdc]\ntopic_prefix = \"{}\"\nschemas = true\n\
         [snapshot]\nmode = \"initial\"\n",
        db.name
    );
    let topic = format!("{}.public.neg", db.name);
    let _relay = RelayProcess::start(&spec);
    // The snapshot's read is in the topic before the update, which would take its place.
    tokio::task::block_in_place(|| support::kafka::read_exactly(&topic, 1));
    client
        .batch_execute(
            "INSERT INTO neg VALUES (2, -150, -49999, -0.04), (3, 0, NULL, NULL);
             UPDATE neg SET n = 99940 WHERE id = 1",
        )
        .await
        .expect("changes");
    let records = tokio::task::block_in_place(|| support::kafka::read_exactly(&topic, 4));
    // The row's fields (of `before` and `after`), without the struct's name, which names the run.
    let fields = |value: &Value| {
        value["schema"]["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["field"] == "after" || f["field"] == "before")
            .map(|f| f["fields"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(golden.len(), records.len(), "records in the goldens");
    for (i, (record, golden)) in records.iter().zip(&golden).enumerate() {
        // Row 3's explicit NULL in `m` is the column's DEFAULT in both (JsonConverter's
        // `replace.null.with.default`).
        let ours = Seen::of(record).json();
        for part in ["op", "before", "after"] {
            assert_eq!(
                ours["payload"][part], golden["payload"][part],
                "record {i}: payload.{part}"
            );
        }
        assert_eq!(
            fields(&ours),
            fields(golden),
            "record {i}: the row's schema"
        );
    }
}
