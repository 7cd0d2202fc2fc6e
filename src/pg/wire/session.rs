//! A session with the server: startup with TLS and authentication (trust, password, md5,
//! SCRAM-SHA-256), then simple queries.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message as Backend;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::framed::{Framed, Io, READ_CHUNK};
use super::hosts::{Endpoint, ServerState, TargetSessionAttrs};
use super::{auth, tls, ConnectOptions, ServerError, SslMode, WireError, SESSION_SETTINGS};
use crate::pg::TypeOid;

/// A plain SQL session (or, inside a [`super::ReplicationConnection`], a walsender's before
/// `START_REPLICATION`): simple queries, and waiting for notifications.
#[derive(Debug)]
pub struct Session {
    pub(super) framed: Framed,
    pub(super) parameters: HashMap<String, String>,
    /// A NotificationResponse (of a `LISTEN`ed channel) arrived and was not yet waited for.
    pub(super) notified: bool,
}

/// A column of a query's result, as its RowDescription describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultColumn {
    /// Column name (its alias, if one was given).
    pub name: String,
    /// OID of the table it comes from, 0 for a computed column.
    pub table_oid: u32,
    /// Data type.
    pub type_oid: TypeOid,
    /// Type modifier (`atttypmod`).
    pub type_modifier: i32,
}

/// What a simple query returned: the last result's columns and every row, values in text format
/// (`None` for NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// The columns of the last statement that returned rows.
    pub columns: Vec<ResultColumn>,
    /// The rows of every statement, in order.
    pub rows: Vec<Vec<Option<Bytes>>>,
    /// The WARNINGs the server sent meanwhile (PostgreSQL 18 decodes past a missing publication
    /// with one, where older versions fail).
    pub warnings: Vec<ServerError>,
}

impl QueryResult {
    /// The rows as text (`None` for NULL); invalid UTF-8 is replaced, not an error.
    pub fn text_rows(self) -> Vec<Vec<Option<String>>> {
        self.rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|value| value.map(|v| String::from_utf8_lossy(&v).into_owned()))
                    .collect()
            })
            .collect()
    }
}

impl Session {
    /// Connects as an ordinary session (no walsender), negotiating TLS, authenticating and
    /// waiting for the server to be ready, all within `connect_timeout`: for catalog lookups,
    /// preflight checks, metrics and poll mode, which must not take one of the server's
    /// `max_wal_senders` slots and must work for a role without REPLICATION.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, WireError> {
        Self::connect_as(options, false).await
    }

    /// Connects, as a walsender (`replication=database`) when `replication`, to the first server
    /// of `options.hosts` that `target_session_attrs` accepts (libpq's order: each host in turn;
    /// `prefer-standby` looks for a standby first).
    pub(super) async fn connect_as(
        options: &ConnectOptions,
        replication: bool,
    ) -> Result<Self, WireError> {
        let mut attempts = Vec::new();
        let mut transient = false;
        for &wanted in options.target_session_attrs.passes() {
            for endpoint in &options.hosts {
                match Self::connect_to(options, endpoint, replication).await {
                    Ok(session) if wanted == TargetSessionAttrs::Any => return Ok(session),
                    Ok(mut session) => match session.state().await {
                        Ok(state) if wanted.accepts(state) => return Ok(session),
                        Ok(state) => {
                            transient = true;
                            attempts.push(format!(
                                "{endpoint} is {}",
                                if state.in_recovery {
                                    "a standby"
                                } else {
                                    "read-only"
                                }
                            ));
                        }
                        Err(error) => {
                            transient |= error.is_transient();
                            attempts.push(format!("{endpoint}: {error}"));
                        }
                    },
                    // One server, any role: its own error, as before multi-host URLs.
                    Err(error)
                        if options.hosts.len() == 1
                            && options.target_session_attrs == TargetSessionAttrs::Any =>
                    {
                        return Err(error)
                    }
                    Err(error) => {
                        transient |= error.is_transient();
                        attempts.push(format!("{endpoint}: {error}"));
                    }
                }
            }
        }
        Err(WireError::NoServer {
            targets: options.targets(),
            wanted: options.target_session_attrs.as_str(),
            attempts: attempts.join("; "),
            transient,
        })
    }

    /// Connects to one server within `connect_timeout`.
    async fn connect_to(
        options: &ConnectOptions,
        endpoint: &Endpoint,
        replication: bool,
    ) -> Result<Self, WireError> {
        let target = endpoint.to_string();
        tokio::time::timeout(
            options.connect_timeout,
            Self::establish(options, endpoint, target.clone(), replication),
        )
        .await
        .map_err(|_| WireError::Timeout {
            target,
            seconds: options.connect_timeout.as_secs(),
        })?
    }

    /// Whether the server is a standby or read-only: from the startup's parameters (14+), else
    /// asked.
    pub async fn state(&mut self) -> Result<ServerState, WireError> {
        if let Some(state) = ServerState::from_parameters(&self.parameters) {
            return Ok(state);
        }
        let rows = self
            .simple_query(
                "SELECT pg_catalog.pg_is_in_recovery(), \
                        pg_catalog.current_setting('default_transaction_read_only') = 'on'",
            )
            .await?;
        let flag = |i: usize| {
            rows.first()
                .and_then(|row| row.get(i).cloned().flatten())
                .is_some_and(|v| v == "t")
        };
        Ok(ServerState {
            in_recovery: flag(0),
            read_only: flag(1),
        })
    }

    async fn establish(
        options: &ConnectOptions,
        endpoint: &Endpoint,
        target: String,
        replication: bool,
    ) -> Result<Self, WireError> {
        let io_error = |source| WireError::Io {
            target: target.clone(),
            source,
        };
        let io: Pin<Box<dyn Io>> = if endpoint.host.starts_with('/') {
            let path = format!("{}/.s.PGSQL.{}", endpoint.host, endpoint.port);
            Box::pin(UnixStream::connect(path).await.map_err(io_error)?)
        } else {
            let mut tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(io_error)?;
            tcp.set_nodelay(true).map_err(io_error)?;
            if options.sslmode == SslMode::Disable {
                Box::pin(tcp)
            } else if negotiate_tls(&mut tcp).await.map_err(io_error)? {
                Box::pin(tls::handshake(tcp, &endpoint.host, options).await?)
            } else if options.sslmode == SslMode::Prefer {
                Box::pin(tcp)
            } else {
                return Err(WireError::Tls {
                    sslmode: options.sslmode.as_str(),
                    reason: format!("the server at {target} does not accept TLS (ssl = off)"),
                });
            }
        };
        let mut framed = Framed {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: BytesMut::new(),
            target,
        };
        let mut parameters: Vec<(&str, &str)> = vec![
            ("user", &options.user),
            ("database", &options.dbname),
            ("application_name", &options.application_name),
        ];
        if replication {
            parameters.push(("replication", "database"));
        }
        parameters.extend_from_slice(SESSION_SETTINGS);
        frontend::startup_message(parameters, &mut framed.write)
            .map_err(|e| WireError::Protocol(e.to_string()))?;
        framed.flush().await?;
        auth::authenticate(&mut framed, options).await?;

        let mut parameters = HashMap::new();
        loop {
            match framed.next().await? {
                Backend::ParameterStatus(p) => {
                    let name = p.name().map_err(|e| WireError::Protocol(e.to_string()))?;
                    let value = p.value().map_err(|e| WireError::Protocol(e.to_string()))?;
                    parameters.insert(name.to_owned(), value.to_owned());
                }
                Backend::BackendKeyData(_) | Backend::NoticeResponse(_) => {}
                Backend::ReadyForQuery(_) => break,
                Backend::ErrorResponse(body) => {
                    return Err(WireError::Server(ServerError::parse(&body)))
                }
                _ => {
                    return Err(WireError::Protocol(
                        "unexpected message during startup".into(),
                    ))
                }
            }
        }
        Ok(Self {
            framed,
            parameters,
            notified: false,
        })
    }

    /// `server_version_num` of the server (e.g. 150004), from its startup parameters.
    pub fn server_version_num(&self) -> u32 {
        let version = self
            .parameters
            .get("server_version")
            .map_or("", String::as_str);
        let mut parts = version
            .split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let major = parts.next().unwrap_or(0);
        let minor = parts.next().unwrap_or(0);
        if major >= 10 {
            major * 10_000 + minor
        } else {
            major * 10_000 + minor * 100 + parts.next().unwrap_or(0)
        }
    }

    /// Runs a query with the simple protocol and returns its rows as text (`None` for NULL).
    /// On a walsender's session, replication commands too.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, WireError> {
        Ok(self.query(sql).await?.text_rows())
    }

    /// Runs a query with the simple protocol and returns its rows with their description. A
    /// notification arriving meanwhile is remembered for [`Self::wait_for_notification`].
    pub async fn query(&mut self, sql: &str) -> Result<QueryResult, WireError> {
        frontend::query(sql, &mut self.framed.write)
            .map_err(|e| WireError::Protocol(e.to_string()))?;
        self.framed.flush().await?;
        self.read_result(sql).await
    }

    /// Reads the answer to a query (simple, or extended up to its Sync) until ReadyForQuery: its
    /// rows with their description, or the error it ended with. A notification arriving meanwhile
    /// is remembered for [`Self::wait_for_notification`].
    pub(super) async fn read_result(&mut self, sql: &str) -> Result<QueryResult, WireError> {
        let protocol = |e: std::io::Error| WireError::Protocol(e.to_string());
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            let message = match self.framed.next().await {
                Ok(message) => message,
                // A FATAL error (a fast shutdown's 57P01) comes before the server closes the
                // connection: it says why, not the closed socket.
                Err(closed) => return Err(error.map_or(closed, WireError::Server)),
            };
            match message {
                Backend::DataRow(row) => {
                    let buffer = row.buffer();
                    let mut ranges = row.ranges();
                    let mut values = Vec::new();
                    while let Some(range) = ranges.next().map_err(protocol)? {
                        values.push(range.map(|r| Bytes::copy_from_slice(&buffer[r])));
                    }
                    result.rows.push(values);
                }
                Backend::RowDescription(description) => {
                    result.columns = description
                        .fields()
                        .map(|field| {
                            Ok(ResultColumn {
                                name: field.name().to_owned(),
                                table_oid: field.table_oid(),
                                type_oid: TypeOid(field.type_oid()),
                                type_modifier: field.type_modifier(),
                            })
                        })
                        .collect()
                        .map_err(protocol)?;
                }
                Backend::ErrorResponse(body) => error = Some(ServerError::parse(&body)),
                Backend::NoticeResponse(body) => {
                    let notice = ServerError::parse_notice(&body);
                    if notice.severity == "WARNING" {
                        result.warnings.push(notice);
                    }
                }
                Backend::ReadyForQuery(_) => break,
                Backend::NotificationResponse(_) => self.notified = true,
                // The extended protocol's acknowledgements carry nothing the caller needs.
                Backend::ParseComplete
                | Backend::BindComplete
                | Backend::NoData
                | Backend::CommandComplete(_)
                | Backend::EmptyQueryResponse
                | Backend::ParameterStatus(_) => {}
                _ => {
                    return Err(WireError::Protocol(format!(
                        "unexpected message answering {sql:?}"
                    )))
                }
            }
        }
        match error {
            Some(error) => Err(WireError::Server(error)),
            None => Ok(result),
        }
    }

    /// Waits up to `limit` for a notification of a channel this session `LISTEN`s on; `true` if
    /// one arrived (also one that arrived during an earlier query). Between queries only: the
    /// server sends nothing else unasked but notices, parameter changes and a terminating error,
    /// which ends the wait with that error, so a server shutdown is noticed at once.
    pub async fn wait_for_notification(&mut self, limit: Duration) -> Result<bool, WireError> {
        if std::mem::take(&mut self.notified) {
            return Ok(true);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let Ok(message) = tokio::time::timeout_at(deadline, self.framed.next()).await else {
                return Ok(false);
            };
            match message? {
                Backend::NotificationResponse(_) => return Ok(true),
                Backend::NoticeResponse(_) | Backend::ParameterStatus(_) => {}
                Backend::ErrorResponse(body) => {
                    return Err(WireError::Server(ServerError::parse(&body)))
                }
                _ => {
                    return Err(WireError::Protocol(
                        "unexpected message between queries".into(),
                    ))
                }
            }
        }
    }
}

/// SSLRequest: `true` if the server agrees to TLS.
async fn negotiate_tls(tcp: &mut TcpStream) -> std::io::Result<bool> {
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => Ok(true),
        b'N' => Ok(false),
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected answer {other:#04x} to SSLRequest"),
        )),
    }
}
