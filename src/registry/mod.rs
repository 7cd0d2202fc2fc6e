//! A client of a Confluent-compatible Schema Registry (Confluent's, Apicurio's `/apis/ccompat/v7`,
//! Karapace): registers the Avro schemas records are encoded with and learns their ids.
//!
//! Only registration is needed: `POST /subjects/<subject>/versions` answers the schema's id, the
//! same id again for a schema registered before, so a restarted relay re-registers what it uses
//! and gets the ids it had. Each [`AvroSchema`] keeps its id once known (ids are cached per
//! schema, and a schema per table and Relation message).
//!
//! What the registry says sorts into transient and definite errors ([`RegistryError`]): no answer,
//! a 5xx, 408 or 429 is an outage, retried from the checkpoint; a 409 that repeats is the
//! subject's compatibility refusing the schema, which retrying cannot change: the relay stops
//! before publishing a record of it, naming the subject, its versions and the registry's reason (a
//! 409 for a subject without versions is a race in the registry instead, retried). A 409 or an
//! outage's answer to a registration is first tried again at once, a few times: Apicurio answers
//! 409 to the loser of two registrations racing, and a fresh one 500 ("Timeout trying to lock
//! table") to registrations at once, which a retry from the checkpoint would also get past, but
//! only by publishing the attempt's records again in a new transaction.
//!
//! HTTP/1.1 on hyper (already in the tree for the metrics endpoint), TLS by rustls as for
//! Postgres: no registry client crate is both maintained and free of its own HTTP stack and
//! schema types, and registration is one request.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use url::Url;

use crate::route::avro::AvroSchema;

mod lookup;

pub use lookup::{Registered, Version};

/// The media type of the registry's API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Tries of a registration answered 409 (which may be a race) or 5xx, 408 or 429 (a busy
/// registry), 50 ms apart and doubling, 750 ms in all ([`Registry::register`]): two relays sharing
/// a registry start together.
const REGISTRATION_ATTEMPTS: usize = 5;

/// Where the CA certificates are when `ca_file` is not set (Debian's bundle).
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How to reach the registry.
#[derive(Clone)]
pub struct RegistrySettings {
    /// The API's base URL (Apicurio's ends in `/apis/ccompat/v7`).
    pub url: Url,
    /// Basic authentication's user.
    pub username: Option<String>,
    /// Basic authentication's password.
    pub password: Option<String>,
    /// CA certificates (PEM) an `https` registry's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// How long one request may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("url", &self.url.as_str())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No answer: connection refused, reset, TLS handshake, timeout.
    #[error("the schema registry at {url} did not answer: {reason}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// An answer saying the registry cannot serve now (5xx, 408, 429).
    #[error("the schema registry answered {status} to registering subject {subject}: {message}")]
    Unavailable {
        /// The subject.
        subject: String,
        /// The HTTP status.
        status: u16,
        /// The registry's message.
        message: String,
    },
    /// The subject's compatibility refused the schema.
    #[error(
        "the schema registry refused a new schema for subject {subject} as incompatible with its \
         registered versions {versions:?} (compatibility {compatibility}): {reason}; nothing of it \
         was published. Make the change compatible (a new column with a default, say, or an outbox \
         payload's field keeping its type), or change the subject's compatibility in the \
         registry, then start outboxd again"
    )]
    Incompatible {
        /// The subject.
        subject: String,
        /// Its registered versions.
        versions: Vec<u32>,
        /// Its compatibility level, as the registry reports it.
        compatibility: String,
        /// The registry's message.
        reason: String,
    },
    /// The credentials were refused.
    #[error(
        "the schema registry at {url} refused outboxd's credentials (HTTP {status}); check \
         schema_registry.username and the password (password_file or \
         OUTBOXD__SCHEMA_REGISTRY__PASSWORD)"
    )]
    Unauthorized {
        /// The base URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// Any other refusal (an invalid schema, a malformed request).
    #[error("the schema registry refused the schema of subject {subject} ({status}): {message}")]
    Refused {
        /// The subject.
        subject: String,
        /// The HTTP status.
        status: u16,
        /// The registry's message.
        message: String,
    },
    /// The subject, or the version of it asked for, is not registered (yet). An outage of
    /// sorts: what it depends on is the registry's content, not the event, and registering the
    /// schema ends it; see [`lookup`].
    #[error(
        "the schema registry has no {version} of subject {subject}; register the event's schema \
         under that subject (outboxd asks again from its checkpoint until it is there, publishing \
         nothing after this event meanwhile)"
    )]
    NotFound {
        /// The subject.
        subject: String,
        /// The version asked for.
        version: Version,
    },
    /// The TLS settings cannot be used.
    #[error("schema_registry.ca_file: {0}")]
    Tls(String),
}

impl RegistryError {
    /// Whether a new attempt can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Unavailable { .. } | Self::NotFound { .. } => true,
            Self::Incompatible { .. }
            | Self::Unauthorized { .. }
            | Self::Refused { .. }
            | Self::Tls(_) => false,
        }
    }
}

/// What one registration POST came to, short of an error.
enum Posted {
    /// The schema has its id.
    Registered,
    /// A 409, with the registry's message: a race, or the subject's compatibility refusing it.
    Conflict(String),
    /// An answer meaning the registry is busy or out (5xx, 408, 429): what to report if it lasts.
    Busy(RegistryError),
}

/// A registry client.
#[derive(Clone)]
pub struct Registry {
    settings: Arc<RegistrySettings>,
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("settings", &self.settings)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Registry {
    /// A client of the registry `settings` name (its CA certificates read now for `https`).
    pub fn new(settings: RegistrySettings) -> Result<Self, RegistryError> {
        let tls = match settings.url.scheme() {
            "https" => Some(connector(&settings)?),
            _ => None,
        };
        Ok(Self {
            settings: Arc::new(settings),
            tls,
        })
    }

    /// Registers `schema` under its subject unless it has its id, and records the id.
    ///
    /// A 409 may be a race between registrations rather than a refusal: Apicurio answers 409
    /// "already exists" to the loser of two registrations of one schema at once (two relays, or
    /// two subjects of the same content). Registering the same schema again then returns its id,
    /// so a 409 is tried again at once, a few times, before it counts as the subject's
    /// compatibility refusing the schema (or, on a subject without versions, as an outage). An
    /// outage's answer is tried again the same way before it ends the attempt.
    pub async fn register(&self, schema: &AvroSchema) -> Result<(), RegistryError> {
        if schema.id().is_some() {
            return Ok(());
        }
        let mut pause = Duration::from_millis(50);
        let mut attempts = 1;
        loop {
            let last = attempts == REGISTRATION_ATTEMPTS;
            match self.post(schema).await? {
                Posted::Registered => return Ok(()),
                Posted::Conflict(message) if last => {
                    return Err(self.conflict(&schema.subject, message).await)
                }
                Posted::Busy(error) if last => return Err(error),
                Posted::Conflict(_) | Posted::Busy(_) => {}
            }
            attempts += 1;
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }

    /// POSTs `schema` to its subject once, recording its id when registered.
    async fn post(&self, schema: &AvroSchema) -> Result<Posted, RegistryError> {
        let subject = schema.subject.as_str();
        let body = json!({ "schema": schema.json }).to_string();
        let (status, answer) = self
            .request(Method::POST, &["subjects", subject, "versions"], Some(body))
            .await?;
        if status.is_success() {
            let id = answer
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| RegistryError::Refused {
                    subject: subject.to_owned(),
                    status: status.as_u16(),
                    message: format!("the answer {answer} has no schema id"),
                })?;
            tracing::info!(subject, id, "registered the Avro schema");
            schema.registered(id);
            return Ok(Posted::Registered);
        }
        let message = message_of(&answer);
        // Matched on the status: Apicurio's 409 carries `error_code` 0.
        if status == StatusCode::CONFLICT {
            return Ok(Posted::Conflict(message));
        }
        match refusal(&self.settings.url, status, subject, message) {
            busy @ RegistryError::Unavailable { .. } => Ok(Posted::Busy(busy)),
            refused => Err(refused),
        }
    }

    /// What a 409 that repeated means: the subject's compatibility refusing the schema, named with
    /// its versions and level; or, with no version to be incompatible with, a race in the registry
    /// (Apicurio answers 409 "already exists" when registrations of the same content under two
    /// subjects meet), which a later attempt gets past.
    async fn conflict(&self, subject: &str, message: String) -> RegistryError {
        let versions = self.versions(subject).await;
        if versions.is_empty() {
            return RegistryError::Unavailable {
                subject: subject.to_owned(),
                status: StatusCode::CONFLICT.as_u16(),
                message,
            };
        }
        RegistryError::Incompatible {
            subject: subject.to_owned(),
            versions,
            compatibility: self.compatibility(subject).await,
            reason: message,
        }
    }

    /// Whether the registry answers, and takes outboxd's credentials: `GET /subjects`, for
    /// `outboxd check`.
    pub async fn probe(&self) -> Result<(), RegistryError> {
        let (status, answer) = self.request(Method::GET, &["subjects"], None).await?;
        if status.is_success() {
            return Ok(());
        }
        let message = message_of(&answer);
        Err(refusal(
            &self.settings.url,
            status,
            "(listing subjects)",
            message,
        ))
    }

    /// The registry's base URL.
    pub fn url(&self) -> &Url {
        &self.settings.url
    }

    /// The subject's registered versions, for an error message (empty if they cannot be read).
    async fn versions(&self, subject: &str) -> Vec<u32> {
        match self
            .request(Method::GET, &["subjects", subject, "versions"], None)
            .await
        {
            Ok((status, Value::Array(versions))) if status.is_success() => versions
                .iter()
                .filter_map(|v| v.as_u64().and_then(|v| u32::try_from(v).ok()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The subject's compatibility level, else the global one, for an error message. A refusal
    /// means the level in force is not `NONE`: Apicurio answers `NONE` for a subject without a
    /// level of its own (Confluent a 404), and then the global one is asked.
    async fn compatibility(&self, subject: &str) -> String {
        for path in [&["config", subject][..], &["config"][..]] {
            if let Ok((status, answer)) = self.request(Method::GET, path, None).await {
                let level = answer
                    .get("compatibilityLevel")
                    .or_else(|| answer.get("compatibility"))
                    .and_then(Value::as_str);
                if let (true, Some(level)) = (status.is_success(), level) {
                    if level != "NONE" {
                        return level.to_owned();
                    }
                }
            }
        }
        "unknown".into()
    }

    /// One request to `<url>/<segments>`, its status and JSON answer (`null` if it is not JSON).
    async fn request(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<String>,
    ) -> Result<(StatusCode, Value), RegistryError> {
        let settings = &self.settings;
        let unreachable = |reason: String| RegistryError::Unreachable {
            url: settings.url.to_string(),
            reason,
        };
        let mut url = settings.url.clone();
        url.path_segments_mut()
            .map_err(|()| unreachable("the URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(segments);
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let mut request = Request::builder()
            .method(method)
            .uri(&url[url::Position::BeforePath..])
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .header(hyper::header::ACCEPT, CONTENT_TYPE)
            .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE);
        if let Some(user) = &settings.username {
            let password = settings.password.as_deref().unwrap_or_default();
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request = request.header(hyper::header::AUTHORIZATION, format!("Basic {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            match &self.tls {
                Some(tls) => {
                    let name = ServerName::try_from(host.clone())
                        .map_err(|e| RegistryError::Tls(e.to_string()))?;
                    let stream = tls
                        .connect(name, tcp)
                        .await
                        .map_err(|e| unreachable(format!("TLS handshake failed: {e}")))?;
                    send(TokioIo::new(stream), request).await
                }
                None => send(TokioIo::new(tcp), request).await,
            }
            .map_err(|e| unreachable(e.to_string()))
        };
        let (status, answer) = tokio::time::timeout(settings.timeout, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", settings.timeout)))??;
        Ok((
            status,
            serde_json::from_slice(&answer).unwrap_or(Value::Null),
        ))
    }
}

/// The error of an answer with `status` about `subject` from the registry at `url`, other than
/// the answers a request handles itself.
fn refusal(url: &Url, status: StatusCode, subject: &str, message: String) -> RegistryError {
    match status.as_u16() {
        401 | 403 => RegistryError::Unauthorized {
            url: url.to_string(),
            status: status.as_u16(),
        },
        408 | 429 | 500..=599 => RegistryError::Unavailable {
            subject: subject.to_owned(),
            status: status.as_u16(),
            message,
        },
        _ => RegistryError::Refused {
            subject: subject.to_owned(),
            status: status.as_u16(),
            message,
        },
    }
}

/// The registry's message in an answer: its `message`, else the whole answer.
fn message_of(answer: &Value) -> String {
    answer
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| answer.to_string(), str::to_owned)
}

/// Sends `request` on a new HTTP/1.1 connection over `io`.
async fn send<T>(io: T, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    // Ends when the answer is read and the sender dropped.
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// TLS that trusts the CA certificates of `ca_file` (else the system's).
fn connector(settings: &RegistrySettings) -> Result<TlsConnector, RegistryError> {
    let path = settings
        .ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_FILE));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .and_then(Iterator::collect)
        .map_err(|e| RegistryError::Tls(format!("cannot read {} ({e})", path.display())))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(RegistryError::Tls(format!(
            "no usable CA certificate in {}",
            path.display()
        )));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_transient_and_refusals_definite() {
        let unreachable = RegistryError::Unreachable {
            url: "http://r".into(),
            reason: "refused".into(),
        };
        assert!(unreachable.is_transient());
        let incompatible = RegistryError::Incompatible {
            subject: "p.public.t-value".into(),
            versions: vec![1, 2],
            compatibility: "BACKWARD".into(),
            reason: "qty at /fields/1".into(),
        };
        assert!(!incompatible.is_transient());
        let text = incompatible.to_string();
        for part in ["p.public.t-value", "[1, 2]", "BACKWARD", "qty at /fields/1"] {
            assert!(text.contains(part), "{text}");
        }
        let settings = RegistrySettings {
            url: Url::parse("http://r:8081").expect("URL"),
            username: Some("u".into()),
            password: Some("s3cret-pw".into()),
            ca_file: None,
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{settings:?}").contains("s3cret-pw"));
    }

    /// Serves `answers` (status, JSON body) to one request each, in order, on a new local port;
    /// the base URL and the number of requests served so far.
    async fn canned_registry(
        answers: Vec<(u16, &'static str)>,
    ) -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let url = format!(
            "http://{}/apis/ccompat/v7",
            listener.local_addr().expect("address")
        );
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        tokio::spawn(async move {
            for (status, body) in answers {
                let (mut socket, _) = listener.accept().await.expect("a request");
                // The request: its head, then as many body bytes as it says.
                let mut request = Vec::new();
                let complete = |request: &[u8]| {
                    let text = String::from_utf8_lossy(request).to_lowercase();
                    let head_end = text.find("\r\n\r\n")?;
                    let length: usize = text[..head_end]
                        .split("content-length:")
                        .nth(1)?
                        .lines()
                        .next()?
                        .trim()
                        .parse()
                        .ok()?;
                    (request.len() >= head_end + 4 + length).then_some(())
                };
                while complete(&request).is_none() {
                    let mut buffer = [0; 4096];
                    let read = socket.read(&mut buffer).await.expect("read");
                    assert!(read > 0, "the request ended early");
                    request.extend_from_slice(&buffer[..read]);
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.expect("write");
            }
        });
        (Url::parse(&url).expect("URL"), served)
    }

    fn client(url: Url) -> Registry {
        Registry::new(RegistrySettings {
            url,
            username: None,
            password: None,
            ca_file: None,
            timeout: Duration::from_secs(5),
        })
        .expect("client")
    }

    fn int_schema() -> AvroSchema {
        let connect =
            crate::route::cdc::schema::ConnectSchema::of(crate::route::cdc::schema::Kind::Int32);
        AvroSchema::new(connect, "t-value".into()).expect("valid")
    }

    #[tokio::test]
    async fn a_busy_registry_is_asked_again_before_the_attempt_fails() {
        // What a fresh Apicurio answered two relays registering at once.
        let busy = r#"{"message":"Timeout trying to lock table","error_code":500}"#;
        let (url, served) =
            canned_registry(vec![(500, busy), (503, busy), (200, r#"{"id":7}"#)]).await;
        let schema = int_schema();
        client(url)
            .register(&schema)
            .await
            .expect("registered on the third try");
        assert_eq!(schema.id(), Some(7));
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 3);

        let (url, served) = canned_registry(vec![(500, busy); REGISTRATION_ATTEMPTS]).await;
        let schema = int_schema();
        let error = client(url)
            .register(&schema)
            .await
            .expect_err("busy throughout");
        assert!(error.is_transient(), "{error}");
        assert!(
            error.to_string().contains("Timeout trying to lock table"),
            "{error}"
        );
        assert_eq!(
            served.load(std::sync::atomic::Ordering::SeqCst),
            REGISTRATION_ATTEMPTS
        );
    }

    #[tokio::test]
    async fn a_registry_that_does_not_answer_is_an_outage() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let registry =
            client(Url::parse(&format!("http://127.0.0.1:{port}/apis/ccompat/v7")).expect("URL"));
        let schema = int_schema();
        let error = registry.register(&schema).await.expect_err("no registry");
        assert!(error.is_transient(), "{error}");
        assert!(error.to_string().contains("did not answer"), "{error}");
        assert_eq!(schema.id(), None);
    }
}
