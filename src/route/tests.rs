//! [`Router::route`]: which router a change goes to, and the dead letters of what fails.

use bytes::Bytes;

use super::fixtures::{
    cdc_router, context, header, items_table, key, outbox_router, outbox_table, row, schema, value,
};
use super::*;
use crate::pg::pgoutput::OldTuple;

const DLQ: &str = "app.dlq";

fn cdc() -> CdcRouter {
    CdcRouter {
        truncate_events: true,
        messages: true,
        ..cdc_router()
    }
}

fn router(cdc: Option<CdcRouter>, max_record_bytes: usize) -> Router {
    Router::new(
        outbox_router(),
        cdc,
        DeadLetters::new(DLQ, max_record_bytes),
    )
}

const EVENT_ID: &str = "5d1c3a6e-8a34-4d8b-9a4f-0c6b6f1d2e3a";

/// An inserted outbox row of aggregate `order`, id `o-1`, with `payload`.
fn outbox_insert(aggregate_type: Option<&str>, payload: &str) -> Change {
    Change::Insert {
        relation: outbox_table(),
        new: row(&[
            Some(EVENT_ID),
            aggregate_type,
            Some("o-1"),
            Some("OrderCreated"),
            Some(payload),
        ]),
    }
}

/// Routes `change` into `out`; returns the dead-letter count.
fn route(router: &Router, change: &Change, out: &mut Vec<Record>) -> u32 {
    let schema = schema();
    router.route(change, &context(&schema), out)
}

#[test]
fn an_inserted_outbox_row_becomes_one_event_on_its_aggregates_topic() {
    let mut out = Vec::new();
    let dead = route(
        &router(Some(cdc()), 1 << 20),
        &outbox_insert(Some("order"), r#"{"total": 5}"#),
        &mut out,
    );
    assert_eq!(dead, 0);
    assert_eq!(out.len(), 1, "{out:?}");
    let event = &out[0];
    assert_eq!(event.topic, "outbox.event.order");
    assert_eq!(key(event), Some("o-1"));
    assert_eq!(header(event, "id"), Some(EVENT_ID));
    // Without expand_json_payload the payload is a JSON string, as Debezium's default.
    assert_eq!(value(event), serde_json::json!(r#"{"total": 5}"#));
}

#[test]
fn updates_and_deletes_of_outbox_rows_are_not_events_not_even_cdc_ones() {
    let router = router(Some(cdc()), 1 << 20);
    let new = row(&[
        Some(EVENT_ID),
        Some("order"),
        Some("o-1"),
        Some("T"),
        Some("{}"),
    ]);
    let changes = [
        Change::Update {
            relation: outbox_table(),
            old: None,
            new: new.clone(),
        },
        Change::Delete {
            relation: outbox_table(),
            old: OldTuple::Key(new),
        },
    ];
    for change in &changes {
        let mut out = Vec::new();
        assert_eq!(route(&router, change, &mut out), 0);
        assert!(out.is_empty(), "{change:?} made {out:?}");
    }
}

#[test]
fn outbox_messages_become_events_and_other_prefixes_cdc_message_events() {
    let router = router(Some(cdc()), 1 << 20);
    let message = |prefix: &str| {
        Change::Message {
        prefix: prefix.into(),
        content: Bytes::from_static(
            br#"{"aggregatetype": "invoice", "aggregateid": "i-9", "type": "Paid", "payload": {"x": 1}}"#,
        ),
        lsn: Lsn(0x16_0000_0200),
    }
    };
    let mut out = Vec::new();
    assert_eq!(route(&router, &message("outbox"), &mut out), 0);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].topic, "outbox.event.invoice");
    assert_eq!(key(&out[0]), Some("i-9"));

    out.clear();
    assert_eq!(route(&router, &message("audit"), &mut out), 0);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].topic, "srv.message");
    assert_eq!(value(&out[0])["message"]["prefix"], "audit");
}

#[test]
fn other_tables_become_cdc_events_only_when_cdc_is_on() {
    let insert = Change::Insert {
        relation: items_table(),
        new: row(&[Some("1"), Some("pen"), None]),
    };
    let mut out = Vec::new();
    assert_eq!(route(&router(None, 1 << 20), &insert, &mut out), 0);
    assert!(out.is_empty(), "without CDC: {out:?}");

    assert_eq!(route(&router(Some(cdc()), 1 << 20), &insert, &mut out), 0);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].topic, "srv.public.items");
    assert_eq!(value(&out[0])["op"], "c");
}

#[test]
fn an_outbox_row_without_routing_value_becomes_a_dead_letter_after_what_came_before() {
    let router = router(None, 1 << 20);
    let mut out = Vec::new();
    route(&router, &outbox_insert(Some("order"), "{}"), &mut out);
    let before = out.clone();

    let dead = route(&router, &outbox_insert(None, "{}"), &mut out);
    assert_eq!(dead, 1);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        out[..1],
        before[..],
        "the records before it stay as they were"
    );
    let letter = &out[1];
    assert_eq!(letter.topic, DLQ);
    assert_eq!(header(letter, "outboxd.dlq.reason"), Some("missing-field"));
    assert_eq!(header(letter, "outboxd.dlq.source"), Some("public.outbox"));
    assert_eq!(header(letter, "outboxd.dlq.lsn"), Some("16/100"));
    assert_eq!(header(letter, "outboxd.dlq.xid"), Some("7"));
    // The row itself, to repair and replay.
    assert_eq!(value(letter)["aggregateid"], "o-1");
    assert_eq!(value(letter)["aggregatetype"], serde_json::Value::Null);
}

/// One limit for every topic, and nothing refused before.
struct Uniform(usize);

impl SizeLimits for Uniform {
    fn max_bytes(&self, _topic: &str) -> usize {
        self.0
    }

    fn refused(&self, _record: &Record) -> bool {
        false
    }
}

/// The records `change` becomes, held to `limits` as the relay does; and how many are letters.
fn route_capped(router: &Router, change: &Change, limits: &Uniform) -> (Vec<Record>, usize) {
    let schema = schema();
    let context = context(&schema);
    let mut out = Vec::new();
    router.route(change, &context, &mut out);
    router.cap(change, &context, &mut out, limits);
    let letters = out
        .iter()
        .filter(|record| router.dead_letters().is_letter(record))
        .count();
    (out, letters)
}

#[test]
fn a_record_over_the_size_limit_is_replaced_by_its_dead_letter() {
    let router = router(None, 1024);
    let limits = Uniform(1024);
    let (small, letters) = route_capped(&router, &outbox_insert(Some("order"), "{}"), &limits);
    assert_eq!((small.len(), letters), (1, 0), "a small event fits");
    let big = format!(r#"{{"note": "{}"}}"#, "x".repeat(2000));
    let (out, letters) = route_capped(&router, &outbox_insert(Some("order"), &big), &limits);
    assert_eq!(letters, 1);
    assert_eq!(out.len(), 1, "the event is replaced, not kept: {out:?}");
    let letter = &out[0];
    assert_eq!(letter.topic, DLQ);
    assert_eq!(header(letter, "outboxd.dlq.reason"), Some("too-large"));
    assert_eq!(
        header(letter, "outboxd.dlq.topic"),
        Some("outbox.event.order")
    );
    assert_eq!(header(letter, "outboxd.dlq.event_id"), Some(EVENT_ID));
    // The row is over the limit too: the dead letter says so instead of carrying it.
    assert_eq!(letter.value, None);
    assert!(header(letter, "outboxd.dlq.value").is_some(), "{letter:?}");
}

#[test]
fn a_cdc_change_that_fails_leaves_only_its_dead_letter() {
    let router = router(Some(cdc()), 1 << 20);
    let change = Change::Insert {
        relation: items_table(),
        new: row(&[Some("not a number"), Some("pen"), None]),
    };
    let mut out = Vec::new();
    assert_eq!(route(&router, &change, &mut out), 1);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].topic, DLQ);
    assert_eq!(header(&out[0], "outboxd.dlq.reason"), Some("invalid-value"));
    assert_eq!(header(&out[0], "outboxd.dlq.source"), Some("public.items"));
}

#[test]
fn poll_mode_dead_letters_claim_no_wal_position() {
    let router = router(None, 1 << 20);
    let schema = schema();
    let context = RouteContext {
        lsn: None,
        ..context(&schema)
    };
    let mut out = Vec::new();
    assert_eq!(
        router.route(&outbox_insert(None, "{}"), &context, &mut out),
        1
    );
    assert_eq!(header(&out[0], "outboxd.dlq.lsn"), None, "{out:?}");
    assert_eq!(header(&out[0], "outboxd.dlq.xid"), Some("7"));
}
