//! Every listed type through the real replication path (our connection, the pgoutput decoder,
//! the source, the type conversion) against PostgreSQL's own `to_jsonb` of the same rows.
//!
//! Deliberate differences are applied to PostgreSQL's side in SQL, one per type, so that any other
//! difference fails: numeric (and the domain over it, and numeric arrays) as exact strings, bytea
//! as base64. The round trip itself is `support::all_types::round_trip`, which `pg_majors` also
//! runs on the oldest and the newest supported major.

mod support;

use support::postgres::TestDb;

#[tokio::test(flavor = "multi_thread")]
async fn decoded_values_equal_postgres_to_jsonb() {
    let db = TestDb::create("types").await;
    support::all_types::round_trip(&db.url, &db.slot, &db.publication).await;
}
