//! What can go wrong talking to the server, sorted by what a caller does about it.

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorFields, ErrorResponseBody, NoticeResponseBody};

/// A connection failure, by what a caller does about it.
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
    /// No server of a multi-host URL was what `target_session_attrs` asks for (or reachable).
    #[error("no PostgreSQL server of {targets} is {wanted} (target_session_attrs): {attempts}")]
    NoServer {
        /// The servers tried.
        targets: String,
        /// `target_session_attrs`.
        wanted: &'static str,
        /// What each attempt found.
        attempts: String,
        /// Whether an attempt may succeed later: a server was down or had the wrong role (a
        /// failover under way), rather than refusing our credentials or TLS.
        transient: bool,
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
            Self::NoServer { transient, .. } => *transient,
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

    pub(super) fn parse(body: &ErrorResponseBody) -> Self {
        Self::from_fields(body.fields())
    }

    /// A notice (a WARNING, NOTICE …) read as an error would be: the same fields.
    pub(super) fn parse_notice(body: &NoticeResponseBody) -> Self {
        Self::from_fields(body.fields())
    }

    fn from_fields(mut fields: ErrorFields<'_>) -> Self {
        let mut error = ServerError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
        };
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
