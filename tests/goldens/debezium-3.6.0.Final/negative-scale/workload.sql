-- Recorded by hand (2026-11-30) with Debezium Server 3.6.0.Final against PostgreSQL 15.19
-- (application.properties next to this file; records read with Kafka's console consumer, one
-- value a line in public.neg.jsonl). Before Debezium started (it snapshots row 1):
CREATE TABLE neg (id int PRIMARY KEY, n numeric(3,-2), m numeric(5,-3) DEFAULT 12000, p numeric(4,1));
ALTER TABLE neg REPLICA IDENTITY FULL;
INSERT INTO neg VALUES (1, 1234, 9999999, 123.45);
CREATE PUBLICATION neg_pub FOR TABLE neg;
SELECT pg_create_logical_replication_slot('neg_slot', 'pgoutput');
-- Once it streamed:
INSERT INTO neg VALUES (2, -150, -49999, -0.04), (3, 0, NULL, NULL);
UPDATE neg SET n = 99940 WHERE id = 1;
