//! A Kafka record as a consumer sees it, as plain values: what the routing tests compare field by
//! field and what the golden files of `tests/goldens/` store, one JSON line each.

use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Partition, key, value, headers and timestamp of a record, its bytes as UTF-8 text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// The partition it landed on.
    pub partition: i32,
    /// The key; `None` for a record without one.
    pub key: Option<String>,
    /// The value; `None` for a tombstone.
    pub value: Option<String>,
    /// The headers in order, each a name and a value (`None` for a null value).
    pub headers: Vec<(String, Option<String>)>,
    /// The record's timestamp in milliseconds.
    pub timestamp: Option<i64>,
}

impl Seen {
    /// `message` as it is (panics on bytes that are not UTF-8).
    pub fn of(message: &OwnedMessage) -> Seen {
        Self::with_text(message, |text| text)
    }

    /// `message` with `name` (a run's database, which names its topics and sources) replaced by
    /// `placeholder` in every text, so that runs compare.
    pub fn replacing(message: &OwnedMessage, name: &str, placeholder: &str) -> Seen {
        Self::with_text(message, |text| text.replace(name, placeholder))
    }

    fn with_text(message: &OwnedMessage, edit: impl Fn(String) -> String) -> Seen {
        let text = |b: &[u8]| edit(String::from_utf8(b.to_vec()).expect("UTF-8"));
        Seen {
            partition: message.partition(),
            key: message.key().map(text),
            value: message.payload().map(text),
            headers: message
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(text)))
                        .collect()
                })
                .unwrap_or_default(),
            timestamp: message.timestamp().to_millis(),
        }
    }

    /// The value as JSON (panics on a tombstone or a value that is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.value.as_deref().expect("a value")).expect("JSON value")
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
}
