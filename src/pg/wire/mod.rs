//! Our replication connection (`replication=database`), on `postgres-protocol` and tokio.
//!
//! Upstream tokio-postgres has no replication mode, so outboxd speaks the protocol itself:
//! startup with TLS and authentication (trust, password, md5, SCRAM-SHA-256), simple queries for
//! the replication commands (and for SQL, which a logical walsender also runs), then CopyBoth for
//! the stream itself ([`ReplicationStream`]).

mod auth;
mod options;
mod stream;
mod tls;

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorResponseBody, Message as Backend};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

pub use options::{ConnectOptions, OptionsError, SslMode, SESSION_SETTINGS};
pub use stream::{ReplicationEvent, ReplicationStream};

use crate::pg::{Lsn, TypeOid};

/// A replication connection failure, by what a caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed or closed: transient, reconnect.
    #[error("PostgreSQL connection to {target}: {source}")]
    Io {
        /// `host:port`.
        target: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The server answered with an error.
    #[error("{0}")]
    Server(ServerError),
    /// The server refused our credentials, or wants a method we do not speak.
    #[error("authentication of user {user:?} failed: {reason}")]
    Auth {
        /// The role.
        user: String,
        /// Why.
        reason: String,
    },
    /// TLS could not be set up as `sslmode` demands.
    #[error("TLS (sslmode={sslmode}): {reason}")]
    Tls {
        /// The sslmode in force.
        sslmode: &'static str,
        /// Why.
        reason: String,
    },
    /// The server sent something the protocol does not allow here.
    #[error("PostgreSQL protocol violation: {0}")]
    Protocol(String),
    /// Connecting took longer than `connect_timeout`.
    #[error("connecting to PostgreSQL at {target} timed out after {seconds} s")]
    Timeout {
        /// `host:port`.
        target: String,
        /// The limit.
        seconds: u64,
    },
}

impl WireError {
    /// Whether a new connection can succeed: a lost or refused connection and a server going
    /// down or out of resources are transient; wrong credentials, TLS settings or SQL are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Io { .. } | Self::Timeout { .. } | Self::Protocol(_) => true,
            Self::Server(error) => error.is_transient(),
            Self::Auth { .. } | Self::Tls { .. } => false,
        }
    }
}

/// An ErrorResponse, with the fields a person needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// ERROR, FATAL, PANIC.
    pub severity: String,
    /// SQLSTATE.
    pub code: String,
    /// The primary message.
    pub message: String,
    /// Detail, if any.
    pub detail: Option<String>,
    /// Hint, if any.
    pub hint: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PostgreSQL {}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl ServerError {
    /// Whether the error is about the moment rather than the request, by SQLSTATE class:
    /// definite are authorization (28), a missing database (3D) or schema (3F), syntax, access
    /// and missing objects (42), data (22), integrity (23) and unsupported features (0A);
    /// anything else — connection (08), transaction rollback (40), resources (53), object in use
    /// (55 but 55000, e.g. a slot still held by a stopping instance), operator intervention (57, e.g. a
    /// fast shutdown), system (58) and internal (XX) errors — is worth a new attempt.
    pub fn is_transient(&self) -> bool {
        let definite_class = matches!(
            self.code.get(..2),
            Some("28" | "3D" | "3F" | "42" | "22" | "23" | "0A")
        );
        // 55000: e.g. wal_level is not logical; waiting will not change it.
        !(definite_class || self.code == "55000")
    }

    fn parse(body: &ErrorResponseBody) -> Self {
        let mut error = ServerError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        let mut fields = body.fields();
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => error.severity = value,
                b'S' if error.severity.is_empty() => error.severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        error
    }
}

/// A byte stream to the server: TCP, TLS over TCP, or a Unix socket.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The framed connection shared by the command phase and the stream.
struct Framed {
    io: Pin<Box<dyn Io>>,
    read: BytesMut,
    write: BytesMut,
    target: String,
}

impl std::fmt::Debug for Framed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framed")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Bytes asked of the socket per read: large reads keep the per-message cost low.
const READ_CHUNK: usize = 128 * 1024;

impl Framed {
    fn io_error(&self, source: std::io::Error) -> WireError {
        WireError::Io {
            target: self.target.clone(),
            source,
        }
    }

    /// Writes everything buffered. Cancel-safe: what is not yet written stays buffered.
    async fn flush(&mut self) -> Result<(), WireError> {
        while !self.write.is_empty() {
            let written = self
                .io
                .write_buf(&mut self.write)
                .await
                .map_err(|e| self.io_error(e))?;
            if written == 0 {
                return Err(self.io_error(std::io::ErrorKind::WriteZero.into()));
            }
        }
        self.io.flush().await.map_err(|e| self.io_error(e))
    }

    /// The next backend message. Cancel-safe: a partial message stays in the read buffer.
    async fn next(&mut self) -> Result<Backend, WireError> {
        self.fill().await?;
        Backend::parse(&mut self.read)
            .map_err(|e| WireError::Protocol(e.to_string()))?
            .ok_or_else(|| WireError::Protocol("incomplete message after fill".into()))
    }

    /// Consumes a CopyBothResponse ('W') at the head of the buffer, which `postgres-protocol`
    /// does not parse; `false` if the next message is another one.
    async fn take_copy_both(&mut self) -> Result<bool, WireError> {
        let length = self.fill().await?;
        if self.read[0] != b'W' {
            return Ok(false);
        }
        self.read.advance(length);
        Ok(true)
    }

    /// Reads until the buffer holds a whole message; returns its length (tag included).
    async fn fill(&mut self) -> Result<usize, WireError> {
        loop {
            if self.read.len() >= 5 {
                let declared =
                    u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]]);
                let length = usize::try_from(declared)
                    .map_err(|_| WireError::Protocol("message length".into()))?
                    + 1;
                if self.read.len() >= length {
                    return Ok(length);
                }
            }
            self.read.reserve(READ_CHUNK);
            let n = self
                .io
                .read_buf(&mut self.read)
                .await
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(self.io_error(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}

/// What `IDENTIFY_SYSTEM` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's unique system identifier.
    pub system_id: String,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlog_pos: Lsn,
    /// The database connected to.
    pub dbname: Option<String>,
}

/// What `CREATE_REPLICATION_SLOT` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// The slot's name.
    pub slot_name: String,
    /// The first LSN the slot will decode from.
    pub consistent_point: Lsn,
    /// The exported snapshot, if one was requested.
    pub snapshot_name: Option<String>,
}

/// Whether the walsender may send transactions before they commit (pgoutput `streaming`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streaming {
    /// Whole transactions after their commit.
    Off,
    /// In-progress blocks (protocol 2+).
    On,
    /// In-progress blocks, for parallel apply (protocol 4).
    Parallel,
}

/// pgoutput's START_REPLICATION options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOutputOptions {
    /// `proto_version`.
    pub proto_version: u32,
    /// `publication_names`.
    pub publication_names: Vec<String>,
    /// `messages`: include `pg_logical_emit_message`.
    pub messages: bool,
    /// `streaming`.
    pub streaming: Streaming,
    /// `binary`: column values in binary format.
    pub binary: bool,
}

/// The highest pgoutput protocol a server of `server_version_num` speaks.
pub fn max_pgoutput_protocol(server_version_num: u32) -> u32 {
    match server_version_num {
        v if v >= 160_000 => 4,
        v if v >= 150_000 => 3,
        v if v >= 140_000 => 2,
        _ => 1,
    }
}

/// A connection in replication mode, before `START_REPLICATION`.
#[derive(Debug)]
pub struct ReplicationConnection {
    framed: Framed,
    parameters: HashMap<String, String>,
    /// A NotificationResponse (of a `LISTEN`ed channel) arrived and was not yet waited for.
    notified: bool,
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
}

impl ReplicationConnection {
    /// Connects, negotiates TLS, authenticates and waits for the server to be ready, all within
    /// `connect_timeout`.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, WireError> {
        Self::connect_as(options, true).await
    }

    /// Connects as an ordinary session (no walsender): for catalog lookups, preflight checks and
    /// metrics, which must not take one of the server's `max_wal_senders` slots and must work for
    /// a role without REPLICATION. Replication commands are refused on it.
    pub async fn connect_sql(options: &ConnectOptions) -> Result<Self, WireError> {
        Self::connect_as(options, false).await
    }

    async fn connect_as(options: &ConnectOptions, replication: bool) -> Result<Self, WireError> {
        let target = format!("{}:{}", options.host, options.port);
        tokio::time::timeout(
            options.connect_timeout,
            Self::establish(options, target.clone(), replication),
        )
        .await
        .map_err(|_| WireError::Timeout {
            target,
            seconds: options.connect_timeout.as_secs(),
        })?
    }

    async fn establish(
        options: &ConnectOptions,
        target: String,
        replication: bool,
    ) -> Result<Self, WireError> {
        let io_error = |source| WireError::Io {
            target: target.clone(),
            source,
        };
        let io: Pin<Box<dyn Io>> = if options.host.starts_with('/') {
            let path = format!("{}/.s.PGSQL.{}", options.host, options.port);
            Box::pin(UnixStream::connect(path).await.map_err(io_error)?)
        } else {
            let mut tcp = TcpStream::connect((options.host.as_str(), options.port))
                .await
                .map_err(io_error)?;
            tcp.set_nodelay(true).map_err(io_error)?;
            if options.sslmode == SslMode::Disable {
                Box::pin(tcp)
            } else if negotiate_tls(&mut tcp).await.map_err(io_error)? {
                Box::pin(tls::handshake(tcp, options).await?)
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
    /// Replication commands and, on a logical walsender, ordinary SQL are allowed.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, WireError> {
        let result = self.query(sql).await?;
        Ok(result
            .rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|value| value.map(|v| String::from_utf8_lossy(&v).into_owned()))
                    .collect()
            })
            .collect())
    }

    /// Runs a query with the simple protocol and returns its rows with their description. A
    /// notification arriving meanwhile is remembered for [`Self::wait_for_notification`].
    pub async fn query(&mut self, sql: &str) -> Result<QueryResult, WireError> {
        let protocol = |e: std::io::Error| WireError::Protocol(e.to_string());
        frontend::query(sql, &mut self.framed.write).map_err(protocol)?;
        self.framed.flush().await?;
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
                Backend::ReadyForQuery(_) => break,
                Backend::NotificationResponse(_) => self.notified = true,
                Backend::CommandComplete(_)
                | Backend::EmptyQueryResponse
                | Backend::NoticeResponse(_)
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

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, WireError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .first()
            .ok_or_else(|| WireError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(SystemIdentity {
            system_id: field(0),
            timeline: field(1)
                .parse()
                .map_err(|_| WireError::Protocol("IDENTIFY_SYSTEM timeline".into()))?,
            xlog_pos: field(2)
                .parse()
                .map_err(|_| WireError::Protocol("IDENTIFY_SYSTEM xlogpos".into()))?,
            dbname: row.get(3).cloned().flatten(),
        })
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL pgoutput`, exporting no snapshot.
    pub async fn create_replication_slot(
        &mut self,
        name: &str,
        temporary: bool,
    ) -> Result<CreatedSlot, WireError> {
        let temporary = if temporary { " TEMPORARY" } else { "" };
        let snapshot = if self.server_version_num() >= 150_000 {
            "(SNAPSHOT 'nothing')"
        } else {
            "NOEXPORT_SNAPSHOT"
        };
        let sql = format!(
            "CREATE_REPLICATION_SLOT {}{temporary} LOGICAL pgoutput {snapshot}",
            quote_identifier(name)
        );
        let rows = self.simple_query(&sql).await?;
        let row = rows
            .first()
            .ok_or_else(|| WireError::Protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
        let field = |i: usize| row.get(i).cloned().flatten();
        Ok(CreatedSlot {
            slot_name: field(0).unwrap_or_default(),
            consistent_point: field(1).unwrap_or_default().parse().map_err(|_| {
                WireError::Protocol("CREATE_REPLICATION_SLOT consistent_point".into())
            })?,
            snapshot_name: field(2),
        })
    }

    /// `START_REPLICATION SLOT slot LOGICAL start (options)`: the connection becomes a stream.
    /// `Lsn::ZERO` starts at the slot's confirmed position.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &PgOutputOptions,
    ) -> Result<ReplicationStream, WireError> {
        let publications = options
            .publication_names
            .iter()
            .map(|p| quote_identifier(p))
            .collect::<Vec<_>>()
            .join(",");
        let mut sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '{}', publication_names {}",
            quote_identifier(slot),
            options.proto_version,
            quote_literal(&publications),
        );
        if options.messages {
            sql.push_str(", messages 'true'");
        }
        match options.streaming {
            Streaming::Off => {}
            Streaming::On => sql.push_str(", streaming 'on'"),
            Streaming::Parallel => sql.push_str(", streaming 'parallel'"),
        }
        if options.binary {
            sql.push_str(", binary 'true'");
        }
        sql.push(')');
        frontend::query(&sql, &mut self.framed.write)
            .map_err(|e| WireError::Protocol(e.to_string()))?;
        self.framed.flush().await?;
        loop {
            if self.framed.take_copy_both().await? {
                break;
            }
            match self.framed.next().await? {
                Backend::NoticeResponse(_) | Backend::ParameterStatus(_) => {}
                Backend::ErrorResponse(body) => {
                    return Err(WireError::Server(ServerError::parse(&body)))
                }
                _ => {
                    return Err(WireError::Protocol(
                        "unexpected answer to START_REPLICATION".into(),
                    ))
                }
            }
        }
        Ok(ReplicationStream::new(self.framed, start))
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

/// `name` as a double-quoted SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
