//! The boundary of a chunk's watermark transaction, held back while the next chunk follows, so
//! that consecutive chunks share one Kafka transaction.
//!
//! The sink commits at a boundary when no input is waiting (`sink::batch`): a chunk's boundary
//! always finds none, the pump being off reading the next chunk, so each chunk would be a Kafka
//! transaction of its own, whose commit (a flush of every record, then the coordinator's round
//! trips) stops the producer for longer than the next read takes. A held boundary is superseded
//! by the next one, so the chunks read meanwhile are committed with the checkpoint whose cursor
//! is past them all: a crash re-reads them all, and delivers none twice (relay::snapshot).
//!
//! A boundary is held only while the snapshot goes on reading, for at most [`HOLD_AT_MOST`], and
//! any other boundary (a streamed transaction's) supersedes it: the stream's latency is not the
//! snapshot's to set. The pump hands a held boundary over as soon as no chunk follows at once
//! (complete, paused, or nothing left to read in a table) and before a graceful stop.

use std::time::{Duration, Instant};

use crate::checkpoint::Checkpoint;

/// How long chunks are gathered into one Kafka transaction at most: what a crash may make the
/// snapshot read again.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(1);

/// The boundary held back, if one is.
#[derive(Debug, Default)]
pub(in crate::relay) struct HeldBoundary {
    /// The latest chunk's boundary, and when the first one of this run of chunks was held.
    held: Option<(Checkpoint, Instant)>,
}

impl HeldBoundary {
    /// A chunk's boundary: `None` if it is held (the snapshot reads on, `more` says so),
    /// otherwise the boundary to hand to the sink now.
    pub fn hold(&mut self, checkpoint: Checkpoint, more: bool) -> Option<Checkpoint> {
        let since = self
            .held
            .take()
            .map_or_else(Instant::now, |(_, since)| since);
        if more && since.elapsed() < HOLD_AT_MOST {
            self.held = Some((checkpoint, since));
            return None;
        }
        Some(checkpoint)
    }

    /// A boundary went to the sink: it supersedes the held one.
    pub fn superseded(&mut self) {
        self.held = None;
    }

    /// The held boundary, to hand over now that no chunk follows at once, carrying the snapshot's
    /// cursor as it is now (a table found empty moved it on; nothing else happened since).
    pub fn release(&mut self, snapshot: &Checkpoint) -> Option<Checkpoint> {
        let (mut checkpoint, _) = self.held.take()?;
        checkpoint.set_snapshot(snapshot.snapshot.clone());
        Some(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::snapshot::{SnapshotCursor, SnapshotKind};
    use crate::pg::Lsn;

    /// A checkpoint at `lsn` of a snapshot running.
    fn at(lsn: u64) -> Checkpoint {
        let json = serde_json::json!({
            "version": 1, "system_id": "1", "timeline": 1, "slot": "s",
            "lsn": format!("0/{lsn:X}"), "events": 0,
        });
        let mut checkpoint: Checkpoint = serde_json::from_value(json).expect("a checkpoint");
        let cursor = SnapshotCursor::new("s".into(), SnapshotKind::Initial, Vec::new());
        checkpoint.set_snapshot(Some(cursor));
        checkpoint
    }

    #[test]
    fn a_held_boundary_is_superseded_by_the_next_and_released_with_the_cursor_of_now() {
        let mut held = HeldBoundary::default();
        assert_eq!(held.hold(at(1), true), None);
        assert_eq!(
            held.hold(at(2), true),
            None,
            "the next chunk's supersedes it"
        );
        let mut now = at(0);
        now.set_snapshot(None); // a table found empty completed the snapshot meanwhile
        let released = held.release(&now).expect("held");
        assert_eq!((released.lsn, released.snapshot), (Lsn(2), None));
        assert_eq!(held.release(&now), None, "released once");

        assert_eq!(held.hold(at(3), true), None);
        let last = at(4);
        assert_eq!(
            held.hold(last.clone(), false),
            Some(last),
            "no chunk follows"
        );
        assert_eq!(held.release(&now), None);

        assert_eq!(held.hold(at(5), true), None);
        held.superseded();
        assert_eq!(
            held.release(&now),
            None,
            "another boundary went to the sink"
        );
    }

    #[test]
    fn chunks_are_gathered_for_a_bounded_time() {
        let mut held = HeldBoundary::default();
        assert_eq!(held.hold(at(1), true), None);
        std::thread::sleep(HOLD_AT_MOST);
        let late = at(2);
        assert_eq!(held.hold(late.clone(), true), Some(late));
        assert_eq!(held.hold(at(3), true), None, "a new run of chunks");
    }
}
