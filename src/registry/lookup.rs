//! Reading a registered schema: `GET /subjects/<subject>/versions/<version|latest>`, for outbox
//! events encoded with schemas their owners registered (`crate::route::avro::outbox`).
//!
//! A subject or version that is not there (404) is transient, like an outage: the answer depends
//! on the registry's content, not on the event, and the usual cause is an order of deployment
//! (the application wrote events before its schema was registered). Retrying from the checkpoint
//! keeps every event and the order of each aggregate's events, and ends by itself once the schema
//! is registered; meanwhile nothing after the event is published, the relay reports itself
//! stalled (`/readyz`, `outboxd_stalled`) and logs the subject and version at each attempt. A dead
//! letter instead would publish the aggregate's later events before this one.

use std::fmt;

use hyper::{Method, StatusCode};
use serde_json::Value;

use super::{message_of, refusal, Registry, RegistryError};

/// Which version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The newest.
    Latest,
    /// This one (from 1).
    Number(u32),
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest version"),
            Self::Number(n) => write!(f, "version {n}"),
        }
    }
}

/// A schema as the registry serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Its id, written into each record.
    pub id: u32,
    /// Its version under the subject.
    pub version: u32,
    /// Its type: `AVRO` (the registry's default when it says none), `JSON`, `PROTOBUF`.
    pub kind: String,
    /// The schema's text.
    pub schema: String,
}

impl Registry {
    /// The schema registered as `version` of `subject`.
    pub async fn schema(
        &self,
        subject: &str,
        version: Version,
    ) -> Result<Registered, RegistryError> {
        let number;
        let segment = match version {
            Version::Latest => "latest",
            Version::Number(n) => {
                number = n.to_string();
                &number
            }
        };
        let (status, answer) = self
            .request(
                Method::GET,
                &["subjects", subject, "versions", segment],
                None,
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                subject: subject.to_owned(),
                version,
            });
        }
        if !status.is_success() {
            return Err(refusal(
                &self.settings.url,
                status,
                subject,
                message_of(&answer),
            ));
        }
        registered(&answer).ok_or_else(|| RegistryError::Refused {
            subject: subject.to_owned(),
            status: status.as_u16(),
            message: format!("the answer {answer} has no schema id, version and schema"),
        })
    }
}

/// The schema an answer describes.
fn registered(answer: &Value) -> Option<Registered> {
    let number = |name: &str| {
        answer
            .get(name)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    Some(Registered {
        id: number("id")?,
        version: number("version")?,
        kind: answer
            .get("schemaType")
            .and_then(Value::as_str)
            .unwrap_or("AVRO")
            .to_owned(),
        schema: answer.get("schema")?.as_str()?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_answer_names_id_version_kind_and_schema() {
        let answer = json!({"subject": "s", "version": 2, "id": 7, "schema": "\"int\""});
        assert_eq!(
            registered(&answer),
            Some(Registered {
                id: 7,
                version: 2,
                kind: "AVRO".into(),
                schema: "\"int\"".into(),
            })
        );
        assert_eq!(registered(&json!({"id": 7, "schema": "\"int\""})), None);
        let missing = RegistryError::NotFound {
            subject: "orders-value".into(),
            version: Version::Number(3),
        };
        assert!(missing.is_transient());
        assert!(
            missing
                .to_string()
                .contains("has no version 3 of subject orders-value"),
            "{missing}"
        );
    }
}
