//! A table with a column of every type outboxd converts, rows that exercise them, and the JSON
//! PostgreSQL's `to_jsonb` gives for a row with outboxd's deliberate differences applied (numeric
//! as exact strings, bytea as base64): the reference for the natural value convention.

/// The schema: an enum, a domain, and the table `all_types`.
pub const TABLE: &str = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posnum AS numeric CHECK (VALUE > 0);
CREATE TABLE all_types (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric,
  t text, vc varchar(10), bp char(3), nm name, u uuid, j json, jb jsonb, by bytea,
  d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
  ine inet, ci cidr, mac macaddr, mac8 macaddr8, e mood, dom posnum,
  ai int[], at text[], an numeric[], atz timestamptz[], au uuid[], ajb jsonb[], ae mood[],
  a2 int[], big text);";

/// PostgreSQL's JSON of row `$1` with outboxd's deliberate differences applied.
pub const EXPECTED: &str = "SELECT (to_jsonb(x) || jsonb_build_object(
    'n', x.n::text, 'dom', x.dom::text, 'by', encode(x.by, 'base64'),
    'an', CASE WHEN x.an IS NOT NULL
               THEN coalesce((SELECT jsonb_agg(v::text) FROM unnest(x.an) v), '[]') END))::text
  FROM all_types x WHERE id = $1";

/// Statements, each with the id of the row it writes (0: none).
pub const STATEMENTS: &[(&str, i32)] = &[
    ("INSERT INTO all_types VALUES (1, true, -32768, 2147483647, -9223372036854775808, 1.1, 1.5e300,
       123456789012345678901234567890.000001, 'ünïcode \"q\" \\ back', 'short', 'ab', 'pg_name',
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2.5, null]}', '{\"b\": {\"c\": true}}',
       '\\x0001ff', '2024-02-29', '23:59:59.999999', '12:00:00+05:30', '2024-01-31 12:34:56.789',
       '2024-01-31 12:34:56.789+02', '1 year 2 months 3 days 04:05:06.5', '192.168.0.1/24',
       '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', 'happy', 12.50,
       '{1,NULL,3}', '{\"a,b\",NULL,\"\\\"q\\\"\"}', '{1.50,NaN}', '{\"2024-01-31 00:00:00+00\"}',
       '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{\"{\\\"x\\\": 1}\"}', '{sad,ok}', '{{1,2},{3,4}}',
       repeat('toast me ', 20000))", 1),
    ("INSERT INTO all_types VALUES (2, false, 0, 0, 0, 'NaN', '-Infinity', 'NaN', '', '', '', '',
       '00000000-0000-0000-0000-000000000000', 'null', '[]', '\\x', '0044-03-15 BC', '00:00', '00:00:00-03',
       '0044-03-15 12:00:00 BC', 'infinity', '-1 day -00:00:01', '::1', '::/0', '00:00:00:00:00:00',
       '00:00:00:00:00:00:00:00', 'sad', 0.0001, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', NULL)", 2),
    ("INSERT INTO all_types (id) VALUES (3)", 3),
    ("UPDATE all_types SET i4 = 7 WHERE id = 1", 1),
    ("ALTER TABLE all_types REPLICA IDENTITY FULL", 0),
    ("UPDATE all_types SET t = 'changed' WHERE id = 2", 2),
    ("DELETE FROM all_types WHERE id = 3", 3),
];
