//! `check`'s first Kafka step: the broker's metadata, or why the broker could not be reached.
//!
//! A TLS or SASL failure never reaches a request's result, which only times out: librdkafka
//! reports it through the client context's error callback, again on every reconnect. This
//! context keeps those reports, so that `check` fails with the real reason (an unknown CA, a
//! hostname mismatch, a wrong password, a mechanism the broker does not enable) as soon as one
//! arrives, instead of "no broker answered".

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

use super::certificate;
use crate::sink::kafka::KafkaSettings;

/// How long each round serves the client's queued events after a failed metadata request.
const EVENTS_WAIT: Duration = Duration::from_millis(100);

/// Why the broker's metadata could not be read, with the fix.
#[derive(Debug)]
pub(super) struct Unreachable {
    /// What happened, with librdkafka's or the broker's words.
    pub(super) problem: String,
    /// What to change.
    pub(super) fix: &'static str,
}

/// The broker's metadata of all topics, waiting at most `timeout`; a TLS or SASL failure ends
/// the wait at once.
pub(super) fn metadata(kafka: &KafkaSettings, timeout: Duration) -> Result<Metadata, Unreachable> {
    // A producer, not an admin client: librdkafka serves the error callback from the main queue,
    // which only a producer's or consumer's poll serves.
    let producer: BaseProducer<ConnectionErrors> = kafka
        .client_config(&[])
        .create_with_context(ConnectionErrors::default())
        .map_err(|error| Unreachable {
            problem: format!("the Kafka settings are not accepted: {error}"),
            fix: "correct [kafka.tls], [kafka.sasl] or [kafka.properties] (librdkafka property \
                  names and values)",
        })?;
    let deadline = Instant::now() + timeout;
    loop {
        let step = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(500));
        let error = match producer.client().fetch_metadata(None, step) {
            Ok(metadata) => return Ok(metadata),
            Err(error) => error,
        };
        // One poll serves one event, and librdkafka queues a log line before each error it
        // reports (more when a name resolves to several addresses): served one per failed fetch,
        // the error waited behind them past the deadline. Polling for a while serves them all.
        producer.poll(EVENTS_WAIT);
        if let Some(refusal) = producer.context().refusal() {
            return Err(refusal.unreachable(&kafka.bootstrap_servers));
        }
        if Instant::now() >= deadline {
            return Err(Unreachable {
                problem: format!(
                    "no broker at {} answered within {timeout:?}: {error}",
                    kafka.bootstrap_servers
                ),
                fix: "check kafka.bootstrap_servers, that the broker runs and is reachable from \
                      here, and the security settings ([kafka.tls], [kafka.sasl])",
            });
        }
    }
}

/// A connection the broker or librdkafka refused, by its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// The TLS handshake failed (the broker's certificate, or ours).
    Tls(String),
    /// SASL authentication failed.
    Sasl(String),
}

impl Refusal {
    /// Sorts one error report; `None` for the ones that say nothing about security (a broker
    /// that is down, a timeout).
    fn of(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<Self> {
        let tls = reason.contains("SSL") || reason.contains("certificate");
        match code {
            Some(RDKafkaErrorCode::Authentication) if tls => Some(Self::Tls(reason.into())),
            Some(RDKafkaErrorCode::Authentication) => Some(Self::Sasl(reason.into())),
            Some(RDKafkaErrorCode::SSL) => Some(Self::Tls(reason.into())),
            // A client certificate the broker refuses ends the connection with a TLS alert.
            _ if reason.contains("SSL alert") => Some(Self::Tls(reason.into())),
            _ if reason.contains("SASL") => Some(Self::Sasl(reason.into())),
            _ => None,
        }
    }

    fn unreachable(self, bootstrap: &str) -> Unreachable {
        match self {
            Self::Tls(reason) => {
                // librdkafka words an expired certificate as any it could not verify: its dates
                // are read apart (from the first server, which librdkafka dials first).
                let first = bootstrap.split(',').next().unwrap_or(bootstrap).trim();
                let dates = reason
                    .contains("certificate verify failed")
                    .then(|| certificate::out_of_date(first))
                    .flatten();
                match dates {
                    Some(dates) => Unreachable {
                        problem: format!(
                            "the TLS handshake with {bootstrap} failed: the broker's certificate \
                             {dates} ({reason})"
                        ),
                        fix: "renew the broker's certificate (signed by the CA in \
                              kafka.tls.ca_file, for the same host names); if its dates are \
                              right, set this host's and the broker's clocks right (NTP)",
                    },
                    None => Unreachable {
                        problem: format!("the TLS handshake with {bootstrap} failed: {reason}"),
                        fix: "check that kafka.tls.ca_file holds the CA that signed the broker's \
                              certificate, that the certificate names the host or IP in \
                              kafka.bootstrap_servers (kafka.tls.verify_hostname), is not \
                              expired, and, where the broker wants a client certificate, \
                              kafka.tls.certificate_file and key_file",
                    },
                }
            }
            Self::Sasl(reason) => Unreachable {
                problem: format!("SASL authentication with {bootstrap} failed: {reason}"),
                fix: "check kafka.sasl.username and its password (kafka.sasl.password_file or \
                      OUTBOXD__KAFKA__SASL__PASSWORD), and that the broker enables \
                      kafka.sasl.mechanism (its sasl.enabled.mechanisms) on this listener",
            },
        }
    }
}

/// A client context keeping the first security failure librdkafka reports.
#[derive(Debug, Default)]
struct ConnectionErrors {
    refusal: Mutex<Option<Refusal>>,
}

impl ConnectionErrors {
    fn refusal(&self) -> Option<Refusal> {
        self.refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for ConnectionErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "Kafka client error while checking");
        if let Some(refusal) = Refusal::of(error.rdkafka_error_code(), reason) {
            self.refusal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(refusal);
        }
    }
}

/// Nothing is produced: the producer is only the client whose poll serves the error callback.
impl ProducerContext for ConnectionErrors {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, (): ()) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafkas_reports_are_sorted_into_tls_and_sasl_failures() {
        let cases = [
            (
                Some(RDKafkaErrorCode::Authentication),
                "sasl_ssl://127.0.0.1:9/bootstrap: SASL authentication error: Authentication \
                 failed during authentication due to invalid credentials with SASL mechanism \
                 SCRAM-SHA-512",
                "sasl",
            ),
            (
                Some(RDKafkaErrorCode::SSL),
                "ssl://127.0.0.1:9/bootstrap: SSL handshake failed: certificate verify failed",
                "tls",
            ),
            (
                Some(RDKafkaErrorCode::BrokerTransportFailure),
                "ssl://127.0.0.1:9/bootstrap: Receive failed: sslv3 alert bad certificate: SSL \
                 alert number 42",
                "tls",
            ),
            (
                Some(RDKafkaErrorCode::BrokerTransportFailure),
                "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused",
                "none",
            ),
        ];
        for (code, reason, kind) in cases {
            let sorted = match Refusal::of(code, reason) {
                Some(Refusal::Tls(r)) if r == reason => "tls",
                Some(Refusal::Sasl(r)) if r == reason => "sasl",
                Some(_) => "changed",
                None => "none",
            };
            assert_eq!(sorted, kind, "{reason}");
        }
    }
}
