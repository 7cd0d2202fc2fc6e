//! Whether the relay makes progress: what it owes Kafka, when it last paid, and whether that gap
//! has become a stall (README, readiness).
//!
//! A relay can look healthy while it moves nothing: a dead broker leaves the producer retrying for
//! minutes while the replication stream and Postgres answer. Progress is what a `read_committed`
//! consumer would notice: a Kafka commit, which also advances the checkpoint and, in logical mode,
//! the slot. The relay is *stalled* when something waits to be published and no commit happened
//! for the stall bound, counted from the later of the last commit and the moment the wait began.
//! Nothing waiting is never a stall: an idle relay commits nothing and is fine.
//!
//! What "waiting" means is the source's to say, because only it sees the changes:
//! - logical mode: records of a change at some LSN were handed to the sink, and no committed
//!   checkpoint covers that LSN yet. Not the server's WAL position: other databases and the
//!   relay's own idle confirmations move it while the outbox is idle.
//! - poll mode: the last claim found rows; a commit or an empty claim ends the wait.
//!
//! The wait outlives an attempt: changes read but not committed are read again after a reconnect,
//! and claimed rows roll back into the table, so a relay that cannot even reach Kafka stays stalled.
//!
//! This module only keeps the state and decides; [`crate::metrics`] holds the process's one copy,
//! the relay's stall watch logs the changes and `/readyz` reads the verdict.

use std::time::{Duration, Instant};

use crate::pg::Lsn;

/// What waits to be published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owed {
    /// Logical mode: changes up to this LSN were routed and handed to the sink.
    Wal {
        /// The LSN of the last change handed over; a checkpoint at or past it covers the wait.
        through: Lsn,
    },
    /// Poll mode: the last claim took this many outbox rows.
    Rows {
        /// Rows of the claimed batch.
        claimed: usize,
    },
}

/// A stall: something waits and nothing was committed since `quiet_since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// The last commit, or when the wait began if that was later.
    pub quiet_since: Instant,
    /// What waits.
    pub owed: Owed,
}

/// A change of the verdict, to be logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The relay just became stalled.
    Stalled(Stall),
    /// A stall ended after `lasted`: a commit came, or nothing waits any more.
    Resumed {
        /// How long the relay went without progress.
        lasted: Duration,
    },
}

/// The progress state of one relay.
#[derive(Debug, Default)]
pub struct Progress {
    /// When the last Kafka transaction committed.
    last_commit: Option<Instant>,
    /// What waits, and since when.
    owed: Option<(Instant, Owed)>,
    /// The stall last decided by [`Progress::check`], if any.
    stall: Option<Stall>,
}

impl Progress {
    /// The source handed `owed` to the sink at `now` (logical mode: a later LSN extends the wait;
    /// poll mode: a claimed batch replaces it).
    pub fn owe(&mut self, now: Instant, owed: Owed) {
        match (&mut self.owed, owed) {
            (
                Some((_, Owed::Wal { through })),
                Owed::Wal {
                    through: additional,
                },
            ) => *through = (*through).max(additional),
            (Some((_, waiting)), owed) => *waiting = owed,
            (None, owed) => self.owed = Some((now, owed)),
        }
    }

    /// Poll mode: a claim found no rows, so nothing waits.
    pub fn owe_nothing(&mut self) {
        self.owed = None;
    }

    /// The checkpoint at `lsn` (logical mode) is in Kafka: read back at the start of an attempt,
    /// or just committed. A wait it covers is over.
    pub fn covered(&mut self, lsn: Lsn) {
        if let Some((_, Owed::Wal { through })) = self.owed {
            if through <= lsn {
                self.owed = None;
            }
        }
    }

    /// A Kafka transaction committed at `now`, with a checkpoint at `lsn` in logical mode (`None` in
    /// poll mode, where the commit covers the claimed batch).
    pub fn committed(&mut self, now: Instant, lsn: Option<Lsn>) {
        self.last_commit = Some(now);
        match lsn {
            Some(lsn) => self.covered(lsn),
            None => self.owe_nothing(),
        }
    }

    /// Decides at `now` whether the relay is stalled with this `bound`, remembers the verdict for
    /// [`Progress::stall`], and returns the change, if the verdict changed.
    pub fn check(&mut self, now: Instant, bound: Duration) -> Option<Transition> {
        let current = self.owed.and_then(|(since, owed)| {
            let quiet_since = self.last_commit.map_or(since, |commit| commit.max(since));
            (now.saturating_duration_since(quiet_since) >= bound)
                .then_some(Stall { quiet_since, owed })
        });
        let transition = match (self.stall, current) {
            (None, Some(stall)) => Some(Transition::Stalled(stall)),
            (Some(stall), None) => {
                // Ended by a commit, or by nothing waiting any more (noticed now).
                let end = self
                    .last_commit
                    .filter(|commit| *commit > stall.quiet_since)
                    .unwrap_or(now);
                Some(Transition::Resumed {
                    lasted: end.saturating_duration_since(stall.quiet_since),
                })
            }
            _ => None,
        };
        self.stall = current;
        transition
    }

    /// The stall found by the last [`Progress::check`], if any.
    pub fn stall(&self) -> Option<Stall> {
        self.stall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(30);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn an_idle_relay_is_never_stalled() {
        let start = Instant::now();
        let mut progress = Progress::default();
        assert_eq!(progress.check(at(start, 3600), BOUND), None);
        // Idle confirmations commit without anything owed.
        progress.committed(at(start, 10), Some(Lsn(100)));
        assert_eq!(progress.check(at(start, 7200), BOUND), None);
        assert_eq!(progress.stall(), None);
    }

    #[test]
    fn a_wait_without_a_commit_stalls_once_and_resumes_once() {
        let start = Instant::now();
        let mut progress = Progress::default();
        // The last commit was long ago: the stall counts from when the wait began.
        progress.committed(start, Some(Lsn(10)));
        progress.owe(at(start, 1000), Owed::Wal { through: Lsn(50) });
        assert_eq!(progress.check(at(start, 1029), BOUND), None);
        let stalled = progress.check(at(start, 1030), BOUND);
        let expected = Stall {
            quiet_since: at(start, 1000),
            owed: Owed::Wal { through: Lsn(50) },
        };
        assert_eq!(stalled, Some(Transition::Stalled(expected)));
        assert_eq!(progress.check(at(start, 1100), BOUND), None, "said once");
        assert_eq!(progress.stall(), Some(expected));
        // A later change extends the wait but not its start.
        progress.owe(at(start, 1101), Owed::Wal { through: Lsn(70) });
        // A commit short of the wait is progress all the same.
        progress.committed(at(start, 1120), Some(Lsn(60)));
        assert_eq!(
            progress.check(at(start, 1121), BOUND),
            Some(Transition::Resumed {
                lasted: Duration::from_secs(120)
            })
        );
        assert_eq!(progress.check(at(start, 1140), BOUND), None);
        // ... but the rest still waits: 30 s after that commit it is a new stall.
        assert!(matches!(
            progress.check(at(start, 1150), BOUND),
            Some(Transition::Stalled(Stall { quiet_since, .. })) if quiet_since == at(start, 1120)
        ));
        progress.committed(at(start, 1151), Some(Lsn(70)));
        assert!(matches!(
            progress.check(at(start, 1152), BOUND),
            Some(Transition::Resumed { .. })
        ));
        assert_eq!(progress.check(at(start, 9999), BOUND), None, "nothing owed");
    }

    #[test]
    fn a_checkpoint_read_back_covers_what_was_sent_before_a_reconnect() {
        let start = Instant::now();
        let mut progress = Progress::default();
        progress.owe(start, Owed::Wal { through: Lsn(50) });
        progress.covered(Lsn(49));
        assert!(progress.check(at(start, 31), BOUND).is_some());
        progress.covered(Lsn(50));
        assert!(matches!(
            progress.check(at(start, 32), BOUND),
            Some(Transition::Resumed { .. })
        ));
    }

    #[test]
    fn poll_mode_waits_from_a_claim_to_its_commit() {
        let start = Instant::now();
        let mut progress = Progress::default();
        progress.owe(start, Owed::Rows { claimed: 12 });
        progress.committed(at(start, 1), None);
        assert_eq!(progress.check(at(start, 100), BOUND), None);
        progress.owe(at(start, 200), Owed::Rows { claimed: 3 });
        assert!(progress.check(at(start, 231), BOUND).is_some());
        // Someone else emptied the table: nothing waits any more.
        progress.owe_nothing();
        assert!(matches!(
            progress.check(at(start, 232), BOUND),
            Some(Transition::Resumed { lasted }) if lasted == Duration::from_secs(32)
        ));
    }
}
