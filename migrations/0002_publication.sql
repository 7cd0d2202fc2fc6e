-- The publication the relay's slot streams (postgres.publications[0]), publishing the outbox table.
-- Tables whose changes should become CDC events are added to it by hand:
--   ALTER PUBLICATION <publication> ADD TABLE <schema>.<table>;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = ${publication_literal}) THEN
        CREATE PUBLICATION ${publication} FOR TABLE outbox;
    END IF;
END
$$;
