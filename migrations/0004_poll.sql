-- Poll mode (relay.mode = "poll", poll.order_by = "seq") publishes rows in the order of this
-- sequence. A writer draws its number when it inserts, so writers that take an aggregate's lock
-- before inserting its events get numbers in lock order: per key, poll order is commit order.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS seq bigserial;
CREATE INDEX IF NOT EXISTS outbox_seq ON outbox (seq);
-- Poll mode's wake-up: one notification per inserting statement, delivered at commit.
-- `outboxd migrate` attaches it (trigger outboxd_notify) to the outbox tables in poll mode only:
-- notifications serialize committing transactions a little, which logical mode does not need.
CREATE OR REPLACE FUNCTION outboxd_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outboxd', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
    RETURN NULL;
END
$$;
