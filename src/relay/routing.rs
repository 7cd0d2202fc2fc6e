//! Routing as an attempt does it: the router's records held to what their topics take (each
//! topic's limit read when the topic first appears), and every dead letter counted and logged
//! without flooding the log.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use crate::registry::Registry;
use crate::route::dead_letter::DeadLetterLog;
use crate::route::{Record, RouteContext, Router, SizeLimits};
use crate::sink::kafka::{largest, Refused};
use crate::sink::limits::TopicLimits;
use crate::source::Change;

use super::RelayError;

/// How often held-back dead-letter lines are summed up.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// What the broker refused as too large during the relay's life, kept across attempts: the
/// retry from the checkpoint routes those records to the dead-letter topic.
#[derive(Debug, Clone, Default)]
pub(super) struct Refusals {
    /// Fingerprints of the records to make dead letters: of each refusal, the largest record.
    records: HashSet<u64>,
    /// Topics that refused a record: the next producer's batches stay within their limits.
    pub(super) topics: BTreeSet<String>,
}

impl Refusals {
    /// Refusals remembered at most; past that, forgotten all at once (a forgotten record is
    /// refused again, and remembered again).
    const CAPACITY: usize = 10_000;

    /// Takes in a failed transaction's refusals: the largest refused record becomes a dead letter
    /// on the retry. The others may have been refused only for being batched with it; each still
    /// too large alone is the largest of a later refusal.
    pub(super) fn add(&mut self, refused: &[Refused]) {
        if self.records.len() >= Self::CAPACITY || self.topics.len() >= Self::CAPACITY {
            self.records.clear();
            self.topics.clear();
        }
        if let Some(largest) = largest(refused) {
            self.records.insert(largest.fingerprint);
        }
        self.topics.extend(refused.iter().map(|r| r.topic.clone()));
    }
}

/// An attempt's routing state: the topic limits learned, the records refused before, and the
/// dead-letter log.
#[derive(Debug)]
pub(super) struct Routing {
    limits: TopicLimits,
    refusals: Refusals,
    log: DeadLetterLog,
    /// Where Avro records' schemas are registered.
    registry: Option<Registry>,
}

/// The limits as [`Router::cap`] asks for them.
struct Known<'a> {
    limits: &'a TopicLimits,
    refusals: &'a Refusals,
    /// For a topic not learned (never: every topic is learned before `cap`).
    fallback: usize,
}

impl SizeLimits for Known<'_> {
    fn max_bytes(&self, topic: &str) -> usize {
        self.limits.get(topic).unwrap_or(self.fallback)
    }

    fn refused(&self, record: &Record) -> bool {
        !self.refusals.records.is_empty() && self.refusals.records.contains(&record.fingerprint())
    }
}

impl Routing {
    /// Routing with the limits [`super::fence`] read and the refusals of earlier attempts.
    pub(super) fn new(limits: TopicLimits, refusals: Refusals, registry: Option<Registry>) -> Self {
        Self {
            limits,
            refusals,
            log: DeadLetterLog::new(SUMMARY_INTERVAL),
            registry,
        }
    }

    /// Appends the records `change` becomes to `out`, each over its topic's limit (or a poison
    /// change) as a dead letter; returns how many dead letters. The Avro schemas the records need
    /// are registered first: a registry that cannot register one fails the attempt before any
    /// record of the change exists.
    pub(super) async fn route(
        &mut self,
        router: &Router,
        change: &Change,
        context: &RouteContext<'_>,
        out: &mut Vec<Record>,
    ) -> Result<u32, RelayError> {
        if let Some(registry) = &self.registry {
            for schema in router.unregistered(change, context) {
                registry.register(&schema).await?;
            }
        }
        let first = out.len();
        router.route(change, context, out);
        let dead_letters = router.dead_letters();
        self.limits.learn(dead_letters.topic()).await;
        for record in &out[first..] {
            self.limits.learn(&record.topic).await;
        }
        let known = Known {
            limits: &self.limits,
            refusals: &self.refusals,
            fallback: router.max_record_bytes(),
        };
        router.cap(change, context, &mut out[first..], &known);
        let mut dead = 0;
        for record in &out[first..] {
            if dead_letters.is_letter(record) {
                self.log.report(record);
                dead += 1;
            }
        }
        Ok(dead)
    }

    /// Sums up the dead-letter lines held back, once their interval is over.
    pub(super) fn flush_due(&mut self) {
        self.log.flush_due();
    }

    /// Sums up what is held back; returns the dead letters of the attempt.
    pub(super) fn finish(&mut self) -> u64 {
        self.log.flush();
        self.log.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(topic: &str, fingerprint: u64, bytes: usize) -> Refused {
        Refused {
            topic: topic.into(),
            fingerprint,
            bytes,
        }
    }

    #[test]
    fn a_refusal_makes_only_its_largest_record_a_dead_letter() {
        let mut refusals = Refusals::default();
        refusals.add(&[
            refused("a", 1, 100),
            refused("a", 2, 50_000),
            refused("b", 3, 10),
        ]);
        assert_eq!(refusals.records, HashSet::from([2]));
        assert_eq!(refusals.topics, BTreeSet::from(["a".into(), "b".into()]));
        refusals.add(&[refused("a", 1, 100)]);
        assert_eq!(
            refusals.records,
            HashSet::from([1, 2]),
            "refused alone: too large"
        );
    }
}
