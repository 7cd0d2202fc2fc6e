//! [`CdcRouter::route`]: Debezium's change events for each kind of change.

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::pg::pgoutput::TupleData;
use crate::pg::{Lsn, RelationId};
use crate::route::fixtures::{
    cdc_router, context, header, items_table, key, outbox_table, relation, row, schema, value,
    ITEMS, OUTBOX, TEXT,
};

fn cdc() -> CdcRouter {
    CdcRouter {
        unavailable_value_placeholder: "__unavailable".into(),
        ..cdc_router()
    }
}

/// The records `change` becomes, with `public.outbox` as the one outbox table.
fn route(router: &CdcRouter, change: &Change) -> RouteResult<Vec<Record>> {
    let schema = schema();
    let mut out = Vec::new();
    router.route(
        change,
        &|r: &Relation| r.id == OUTBOX,
        &context(&schema),
        &mut out,
    )?;
    Ok(out)
}

fn ops(records: &[Record]) -> Vec<Option<String>> {
    records
        .iter()
        .map(|r| {
            r.value
                .as_ref()
                .map(|_| value(r)["op"].as_str().expect("op").to_owned())
        })
        .collect()
}

#[test]
fn an_insert_is_a_create_keyed_by_the_primary_key_with_debeziums_source() {
    let records = route(
        &cdc(),
        &Change::Insert {
            relation: items_table(),
            new: row(&[Some("1"), Some("pen"), None]),
        },
    )
    .expect("routes");
    assert_eq!(records.len(), 1);
    let event = &records[0];
    assert_eq!(event.topic, "srv.public.items");
    assert_eq!(key(event), Some(r#"{"id":1}"#));
    assert_eq!(event.partition, None);
    assert_eq!(event.timestamp_ms, Some(1_700_000_000_000));
    let value = value(event);
    assert_eq!(value["op"], "c");
    assert_eq!(value["before"], json!(null));
    assert_eq!(
        value["after"],
        json!({"id": 1, "name": "pen", "note": null})
    );
    let source = &value["source"];
    assert_eq!(source["connector"], "postgresql");
    assert_eq!(source["name"], "srv");
    assert_eq!(source["db"], "app");
    assert_eq!(
        (&source["schema"], &source["table"]),
        (&json!("public"), &json!("items"))
    );
    assert_eq!(source["txId"], 7);
    assert_eq!(source["lsn"], 0x16_0000_0100_u64);
    assert_eq!(source["ts_ms"], 1_700_000_000_000_i64);
    assert_eq!(
        source["sequence"],
        json!([
            0x16_0000_0000_u64.to_string(),
            0x16_0000_0100_u64.to_string()
        ])
        .to_string()
    );
}

#[test]
fn a_null_in_a_column_with_a_default_is_the_default_unless_switched_off() {
    // Debezium's converters write a null field as its schema's default; `name` has none.
    let mut schema = schema();
    schema.set_default(ITEMS, "note", "'none'::text");
    let insert = Change::Insert {
        relation: items_table(),
        new: row(&[Some("1"), None, None]),
    };
    let after = |router: CdcRouter| {
        let mut out = Vec::new();
        router
            .route(&insert, &|_| false, &context(&schema), &mut out)
            .expect("routes");
        value(&out[0])["after"].clone()
    };
    assert_eq!(after(cdc()), json!({"id": 1, "name": null, "note": "none"}));
    let null = json!({"id": 1, "name": null, "note": null});
    let off = CdcRouter {
        replace_null_with_default: false,
        ..cdc()
    };
    assert_eq!(after(off), null);
    let natural = CdcRouter {
        values: ValueConvention::Natural,
        ..cdc()
    };
    assert_eq!(after(natural), null);
}

#[test]
fn a_table_without_primary_key_gives_keyless_events() {
    let keyless = relation(RelationId(300), "public", "log", &[("line", TEXT)]);
    let records = route(
        &cdc(),
        &Change::Insert {
            relation: keyless,
            new: row(&[Some("hello")]),
        },
    )
    .expect("routes");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, None);
}

#[test]
fn an_update_has_before_and_after_and_fills_unchanged_toast_from_the_full_old_row() {
    let mut new = row(&[Some("1"), Some("pencil"), None]);
    new.0[2] = ColumnValue::UnchangedToast;
    let old = row(&[Some("1"), Some("pen"), Some("long note")]);
    let update = |old| Change::Update {
        relation: items_table(),
        old,
        new: new.clone(),
    };

    let records = route(&cdc(), &update(Some(OldTuple::Full(old)))).expect("routes");
    assert_eq!(ops(&records), [Some("u".to_owned())]);
    let value = value(&records[0]);
    assert_eq!(value["before"]["name"], "pen");
    assert_eq!(
        value["after"],
        json!({"id": 1, "name": "pencil", "note": "long note"})
    );

    // Without the old row the value Postgres did not send shows as the placeholder.
    let records = route(&cdc(), &update(None)).expect("routes");
    let value = self::value(&records[0]);
    assert_eq!(value["before"], json!(null));
    assert_eq!(value["after"]["note"], "__unavailable");
    assert_eq!(key(&records[0]), Some(r#"{"id":1}"#));
}

#[test]
fn a_primary_key_change_is_delete_tombstone_and_create_naming_each_other() {
    let records = route(
        &cdc(),
        &Change::Update {
            relation: items_table(),
            old: Some(OldTuple::Key(row(&[Some("1"), None, None]))),
            new: row(&[Some("2"), Some("pen"), None]),
        },
    )
    .expect("routes");
    assert_eq!(
        ops(&records),
        [Some("d".to_owned()), None, Some("c".to_owned())]
    );
    let (old, new) = (r#"{"id":1}"#, r#"{"id":2}"#);
    assert_eq!(key(&records[0]), Some(old));
    assert_eq!(header(&records[0], "__debezium.newkey"), Some(new));
    assert_eq!(key(&records[1]), Some(old));
    assert_eq!(header(&records[1], "__debezium.newkey"), Some(new));
    assert_eq!(key(&records[2]), Some(new));
    assert_eq!(header(&records[2], "__debezium.oldkey"), Some(old));
}

#[test]
fn a_delete_is_followed_by_a_tombstone_unless_switched_off() {
    let delete = Change::Delete {
        relation: items_table(),
        old: OldTuple::Key(row(&[Some("1"), None, None])),
    };
    let records = route(&cdc(), &delete).expect("routes");
    assert_eq!(ops(&records), [Some("d".to_owned()), None]);
    assert_eq!(value(&records[0])["before"]["id"], 1);
    assert_eq!(value(&records[0])["after"], json!(null));
    assert_eq!(key(&records[1]), Some(r#"{"id":1}"#));

    let quiet = CdcRouter {
        tombstones_on_delete: false,
        ..cdc()
    };
    assert_eq!(
        ops(&route(&quiet, &delete).expect("routes")),
        [Some("d".to_owned())]
    );
}

#[test]
fn truncates_are_events_of_the_other_tables_only_when_switched_on() {
    let truncate = Change::Truncate {
        relations: vec![outbox_table(), items_table()],
        cascade: false,
        restart_identity: false,
    };
    assert!(route(&cdc(), &truncate).expect("routes").is_empty());

    let on = CdcRouter {
        truncate_events: true,
        ..cdc()
    };
    let records = route(&on, &truncate).expect("routes");
    assert_eq!(ops(&records), [Some("t".to_owned())], "none for the outbox");
    assert_eq!(records[0].topic, "srv.public.items");
    assert_eq!(records[0].key, None);
}

#[test]
fn messages_are_events_only_when_switched_on() {
    let message = Change::Message {
        prefix: "audit".into(),
        content: Bytes::from_static(b"hi"),
        lsn: Lsn(0x16_0000_0200),
    };
    assert!(route(&cdc(), &message).expect("routes").is_empty());

    let on = CdcRouter {
        messages: true,
        ..cdc()
    };
    let records = route(&on, &message).expect("routes");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].topic, "srv.message");
    assert_eq!(key(&records[0]), Some(r#"{"prefix":"audit"}"#));
    let value = value(&records[0]);
    assert_eq!(value["op"], "m");
    assert_eq!(
        value["message"],
        json!({"prefix": "audit", "content": "aGk="})
    );
}

#[test]
fn changes_of_outbox_tables_are_not_cdc_events() {
    let outbox_row = row(&[Some("x"), Some("order"), Some("o-1"), Some("T"), Some("{}")]);
    for change in [
        Change::Insert {
            relation: outbox_table(),
            new: outbox_row.clone(),
        },
        Change::Delete {
            relation: outbox_table(),
            old: OldTuple::Key(outbox_row),
        },
    ] {
        assert!(
            route(&cdc(), &change).expect("routes").is_empty(),
            "{change:?}"
        );
    }
}

#[test]
fn values_that_are_not_text_or_not_their_type_fail_naming_the_column() {
    let with_value = |value: ColumnValue| Change::Insert {
        relation: items_table(),
        new: TupleData(vec![value, ColumnValue::Null, ColumnValue::Null]),
    };
    for (value, problem) in [
        (
            ColumnValue::Binary(Bytes::from_static(b"\0\0\0\x01")),
            "binary format",
        ),
        (
            ColumnValue::Text(Bytes::from_static(b"\xff")),
            "not valid UTF-8",
        ),
        (
            ColumnValue::Text(Bytes::from_static(b"one")),
            "public.items.id:",
        ),
    ] {
        let failure = route(&cdc(), &with_value(value)).expect_err("fails");
        assert_eq!(failure.reason, Reason::InvalidValue);
        assert!(failure.message.contains("public.items.id"), "{failure:?}");
        assert!(failure.message.contains(problem), "{failure:?}");
    }
}
