//! Routing as an attempt does it: the router's records held to what their topics take (each
//! topic's limit read when the topic first appears), each topic created first when the relay
//! creates topics (`crate::sink::topics`), records of a missing topic as dead letters when the
//! policy says so, and every dead letter counted and logged without flooding the log.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use crate::registry::Registry;
use crate::route::dead_letter::DeadLetterLog;
use crate::route::{Record, RouteContext, Router, SizeLimits};
use crate::sink::kafka::{largest, Refused};
use crate::sink::limits::TopicLimits;
use crate::sink::topics::{MissingTopic, TopicError, Topics};
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
    /// Topics that do not exist, with the broker's reason: with
    /// `kafka.topic_creation.missing_topic = "dead-letter"`, their records become dead letters.
    missing_topics: BTreeMap<String, String>,
}

impl Refusals {
    /// Refusals remembered at most; past that, forgotten all at once (a forgotten record is
    /// refused again, and remembered again).
    const CAPACITY: usize = 10_000;

    /// Takes in a failed transaction's refusals: the largest refused record becomes a dead letter
    /// on the retry. The others may have been refused only for being batched with it; each still
    /// too large alone is the largest of a later refusal.
    pub(super) fn add(&mut self, refused: &[Refused]) {
        self.bound();
        if let Some(largest) = largest(refused) {
            self.records.insert(largest.fingerprint);
        }
        self.topics.extend(refused.iter().map(|r| r.topic.clone()));
    }

    /// Takes in a topic that does not exist: its records become dead letters from now on.
    pub(super) fn add_missing_topic(&mut self, topic: &str, reason: &str) {
        self.bound();
        self.missing_topics
            .insert(topic.to_owned(), reason.to_owned());
    }

    /// Forgets everything once any part reaches [`Self::CAPACITY`].
    fn bound(&mut self) {
        if self.records.len() >= Self::CAPACITY
            || self.topics.len() >= Self::CAPACITY
            || self.missing_topics.len() >= Self::CAPACITY
        {
            self.records.clear();
            self.topics.clear();
            self.missing_topics.clear();
        }
    }
}

/// An attempt's routing state: the topic limits learned, the topics made sure of, the records
/// refused before, and the dead-letter log.
#[derive(Debug)]
pub(super) struct Routing {
    limits: TopicLimits,
    topics: Topics,
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
    pub(super) fn new(
        limits: TopicLimits,
        topics: Topics,
        refusals: Refusals,
        registry: Option<Registry>,
    ) -> Self {
        Self {
            limits,
            topics,
            refusals,
            log: DeadLetterLog::new(SUMMARY_INTERVAL),
            registry,
        }
    }

    /// Appends the records `change` becomes to `out`, each over its topic's limit, of a missing
    /// topic (when the policy says so) or of a poison change as a dead letter; returns how many
    /// dead letters. Fails when a topic is missing and the policy is to stop, when the
    /// dead-letter topic itself is missing, or when the broker does not answer. The Avro schemas
    /// the records need are registered (CDC) or fetched (outbox events) first: a registry that
    /// cannot serve one fails the attempt before any record of the change exists.
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
            if let Some(wanted) = router.outbox().unfetched(change, context) {
                let registered = registry.schema(&wanted.subject, wanted.version).await?;
                router.outbox().fetched(wanted, &registered);
            }
        }
        let first = out.len();
        router.route(change, context, out);
        let dead_letters = router.dead_letters();
        for record in &mut out[first..] {
            if dead_letters.is_letter(record) {
                continue;
            }
            let reason = match self.refusals.missing_topics.get(&record.topic) {
                Some(reason) => reason.clone(),
                None => match self.topics.ensure(&record.topic).await {
                    Ok(()) => continue,
                    Err(TopicError::Missing { topic, reason })
                        if self.topics.missing_topic() == MissingTopic::DeadLetter =>
                    {
                        self.refusals.add_missing_topic(&topic, &reason);
                        reason
                    }
                    Err(error) => return Err(error.into()),
                },
            };
            let failure = dead_letters.missing_topic(record, &reason);
            *record = dead_letters.instead_of(change, record, &failure, context);
        }
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
        if dead > 0 {
            // No dead-letter topic for the dead-letter topic: a missing one stops the relay.
            self.topics.ensure(dead_letters.topic()).await?;
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
