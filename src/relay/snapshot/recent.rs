//! The transactions the stream committed lately, for the snapshot's race guard (`super`'s doc):
//! a read whose snapshot still sees one of them in progress is read again.

use std::collections::{HashSet, VecDeque};

use crate::pg::Xid;

/// The most commits kept. A transaction stays invisible to new snapshots only between writing
/// its commit record and leaving the process array (microseconds), so one this many commits back
/// is long visible; the bound keeps memory flat while a snapshot is paused or none runs (a
/// signal may start one at any commit).
const KEPT: usize = 16_384;

/// The transaction ids of the stream's latest commits, at most [`KEPT`], oldest first. A queue
/// and no set: every commit of the stream is pushed and only a snapshot's read asks, once per
/// chunk, so the question takes one pass and the push none of the hashing a set costs per
/// transaction (2 % of the relay's CPU on a stream of one-row transactions).
#[derive(Debug, Default)]
pub struct RecentCommits {
    order: VecDeque<Xid>,
}

impl RecentCommits {
    /// A commit the stream carried.
    pub fn push(&mut self, xid: Xid) {
        if self.order.len() == KEPT {
            self.order.pop_front();
        }
        self.order.push_back(xid);
    }

    /// Whether any of `xids` (a read's transactions in progress) committed lately.
    pub fn any_of(&self, xids: &[Xid]) -> bool {
        if xids.is_empty() {
            return false;
        }
        let asked: HashSet<Xid> = xids.iter().copied().collect();
        self.order.iter().any(|xid| asked.contains(xid))
    }

    /// Forgets them all: a read's snapshot saw every one committed, so every later one does.
    pub fn clear(&mut self) {
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
        assert!(!recent.any_of(&[Xid(0)]) && recent.any_of(&[Xid(1)]));
        assert!(recent.any_of(&[Xid(kept)]));
        assert!(recent.any_of(&[Xid(kept + 7), Xid(0), Xid(kept)]));
        assert!(!recent.any_of(&[]) && !recent.any_of(&[Xid(kept + 1)]));
        recent.clear();
        assert!(!recent.any_of(&[Xid(1)]));
    }
}
