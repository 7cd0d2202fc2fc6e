//! Log sequence numbers: a byte position in the WAL, shown the way PostgreSQL shows it (`16/B374D848`).

use std::fmt;
use std::str::FromStr;

/// A position in PostgreSQL's write-ahead log.
///
/// Ordered like the WAL; `Lsn::ZERO` is "no position" (the server's `InvalidXLogRecPtr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid position, which the protocol uses for "none".
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A string that is not `X/Y` with two hexadecimal halves of at most 32 bits each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hexadecimal numbers separated by '/', like 16/B374D848")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseLsnError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(invalid)?;
        let half = |part: &str| {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            u32::from_str_radix(part, 16).map_err(|_| invalid())
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

/// Serialized as PostgreSQL shows it (`"16/B374D848"`), so checkpoints read like `pg_replication_slots`.
impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_text() {
        let json = serde_json::to_string(&Lsn(0x16_B374_D848)).expect("serialize");
        assert_eq!(json, r#""16/B374D848""#);
        assert_eq!(
            serde_json::from_str::<Lsn>(&json).expect("deserialize"),
            Lsn(0x16_B374_D848)
        );
        assert!(serde_json::from_str::<Lsn>(r#""16""#).is_err());
    }

    #[test]
    fn shows_like_postgres() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn parses_what_it_shows() {
        for value in [0, 1, 0x16_B374_D848, u64::MAX, 0xFFFF_FFFF] {
            assert_eq!(Lsn(value).to_string().parse::<Lsn>(), Ok(Lsn(value)));
        }
        assert_eq!("0/16b3748".parse::<Lsn>(), Ok(Lsn(0x16B_3748)));
    }

    #[test]
    fn rejects_what_postgres_would() {
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "x/1",
            "1/1/1",
            "100000000/0",
            "-1/0",
            "+1/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }
}
