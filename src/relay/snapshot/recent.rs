//! The transactions the stream committed lately, for the snapshot's race guard (`super`'s doc):
//! a read whose snapshot still sees one of them in progress is read again.

use std::collections::{HashSet, VecDeque};

use crate::pg::Xid;

/// The most commits kept. A transaction stays invisible to new snapshots only between writing
/// its commit record and leaving the process array (microseconds), so one this many commits back
/// is long visible; the bound keeps memory flat while a snapshot is paused or none runs (a
/// signal may start one at any commit).
const KEPT: usize = 16_384;

/// The transaction ids of the stream's latest commits, at most [`KEPT`].
#[derive(Debug, Default)]
pub struct RecentCommits {
    ids: HashSet<Xid>,
    order: VecDeque<Xid>,
}

impl RecentCommits {
    /// A commit the stream carried.
    pub fn push(&mut self, xid: Xid) {
        if self.ids.insert(xid) {
            self.order.push_back(xid);
        }
        if self.order.len() > KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
    }

    /// Whether `xid` committed lately.
    pub fn contains(&self, xid: Xid) -> bool {
        self.ids.contains(&xid)
    }

    /// Forgets them all: a read's snapshot saw every one committed, so every later one does.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_commits_are_kept_and_no_more() {
        let mut recent = RecentCommits::default();
        let kept = u32::try_from(KEPT).expect("small");
        for xid in 0..=kept {
            recent.push(Xid(xid));
        }
        assert!(!recent.contains(Xid(0)) && recent.contains(Xid(1)));
        assert!(recent.contains(Xid(kept)));
        recent.clear();
        assert!(!recent.contains(Xid(1)));
    }
}
