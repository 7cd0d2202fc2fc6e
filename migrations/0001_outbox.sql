-- The outbox table, in the shape Debezium's outbox event router expects (DESIGN.md §6).
-- An application inserts one row per event in the same transaction as its state change; outboxd
-- publishes it to `outbox.event.<aggregatetype>` keyed by `aggregateid`.
CREATE TABLE IF NOT EXISTS outbox (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL,
    payload       jsonb,
    timestamp     timestamptz NOT NULL DEFAULT now(),
    traceparent   text
);
