//! PostgreSQL: positions and identifiers shared by the replication client, the decoder and the source.

mod lsn;
pub mod pgoutput;
pub mod schema;
pub mod sql;
pub mod types;
pub mod wire;

pub use lsn::{Lsn, ParseLsnError};

/// A PostgreSQL transaction id as pgoutput reports it (32 bits; wraparound is the server's business).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Xid(pub u32);

impl std::fmt::Display for Xid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The OID of a table, as pgoutput's Relation message names it; the key of the relation cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelationId(pub u32);

impl std::fmt::Display for RelationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The OID of a data type; decides how a column's text value becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeOid(pub u32);

impl std::fmt::Display for TypeOid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A PostgreSQL timestamp as the replication protocol carries it: microseconds since
/// 2000-01-01 00:00:00 UTC (commit times, keepalive send times).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
    const UNIX_TO_PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

    /// Microseconds since the Unix epoch, the unit Kafka and Debezium use (saturating at the ends).
    pub fn unix_micros(self) -> i64 {
        self.0.saturating_add(Self::UNIX_TO_PG_EPOCH_MICROS)
    }

    /// Milliseconds since the Unix epoch (Debezium's `ts_ms`).
    pub fn unix_millis(self) -> i64 {
        self.unix_micros().div_euclid(1000)
    }

    /// The timestamp for a time given in microseconds since the Unix epoch.
    pub fn from_unix_micros(micros: i64) -> Self {
        Self(micros.saturating_sub(Self::UNIX_TO_PG_EPOCH_MICROS))
    }

    /// The same instant as a calendar time; `None` only beyond chrono's range (±262,000 years).
    pub fn to_utc(self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp_micros(self.unix_micros())
    }

    /// Now, by the system clock.
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self::from_unix_micros(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::PgTimestamp;

    #[test]
    fn pg_epoch_is_2000_01_01_utc() {
        assert_eq!(PgTimestamp(0).unix_millis(), 946_684_800_000);
        assert_eq!(
            PgTimestamp::from_unix_micros(946_684_800_000_001),
            PgTimestamp(1)
        );
        assert_eq!(PgTimestamp(-1).unix_millis(), 946_684_799_999);
        let utc = PgTimestamp(1_500_000).to_utc().expect("in range");
        assert_eq!(utc.to_rfc3339(), "2000-01-01T00:00:01.500+00:00");
    }
}
