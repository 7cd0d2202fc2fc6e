//! A checkpoint `status` cannot read yet: the offsets topic's last stable offset is held back by
//! an open Kafka transaction. `read_committed` reading cannot pass it, and only the broker ends a
//! killed instance's transaction (it aborts it `kafka.transaction_timeout` after it began), so
//! `status` says so after its bounded wait instead of failing with a timeout.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::sink::offsets::OffsetsError;

/// Why the checkpoint is unknown for now, and until when at most.
#[derive(Debug, Clone, Serialize)]
pub struct PendingCheckpoint {
    /// The offsets topic's last stable offset, where reading stopped.
    pub stable_offset: i64,
    /// Its end offset: the records in between belong to the open transaction (or follow it).
    pub end_offset: i64,
    /// How long `status` waited for the transaction to end.
    pub waited_seconds: f64,
    /// `kafka.transaction_timeout`: the broker aborts the transaction at the latest this long
    /// after it began.
    pub transaction_timeout_seconds: f64,
}

impl PendingCheckpoint {
    /// The pending checkpoint that `error` reports, if it reports one.
    pub fn from_error(error: &anyhow::Error, transaction_timeout: Duration) -> Option<Self> {
        match error.downcast_ref::<OffsetsError>()? {
            OffsetsError::OpenTransaction {
                stable,
                end,
                timeout,
                ..
            } => Some(Self {
                stable_offset: *stable,
                end_offset: *end,
                waited_seconds: timeout.as_secs_f64(),
                transaction_timeout_seconds: transaction_timeout.as_secs_f64(),
            }),
            _ => None,
        }
    }

    /// What holds the checkpoint back, `check`'s words as well as `status`'s.
    pub fn what(&self) -> String {
        format!(
            "the checkpoint is behind an open Kafka transaction, still undecided after {:?} \
             (offsets topic records {} to {}), most likely of a previous instance killed \
             mid-transaction",
            Duration::from_secs_f64(self.waited_seconds),
            self.stable_offset,
            self.end_offset,
        )
    }

    /// When it ends by itself.
    pub fn ends(&self) -> String {
        format!(
            "the broker aborts it within kafka.transaction_timeout ({:?})",
            Duration::from_secs_f64(self.transaction_timeout_seconds),
        )
    }
}

impl fmt::Display for PendingCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "UNKNOWN for now: {}; {}: run status again then",
            self.what(),
            self.ends()
        )
    }
}
