//! Routing: what a captured change becomes in Kafka.
//!
//! The router's output, [`Record`], is the sink's only input: the sink knows nothing of Postgres
//! rows, and the router nothing of Kafka transactions.

pub mod outbox;

use bytes::Bytes;

/// One Kafka record, ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Destination topic.
    pub topic: String,
    /// Explicit partition; `None` lets the producer's partitioner (murmur2, as the Java client)
    /// choose from the key.
    pub partition: Option<i32>,
    /// Record key; a `None` key spreads records over partitions.
    pub key: Option<Bytes>,
    /// Record value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers in order; a header may repeat, as Kafka allows.
    pub headers: Vec<Header>,
}

/// A Kafka record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value; `None` is a null header value.
    pub value: Option<Bytes>,
}

impl Record {
    /// Bytes the record occupies on the wire, roughly: what batching limits count.
    pub fn size(&self) -> usize {
        let header_bytes: usize = self
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.as_ref().map_or(0, Bytes::len))
            .sum();
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + header_bytes
    }
}
