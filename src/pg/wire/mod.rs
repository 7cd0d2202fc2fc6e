//! Our connections to PostgreSQL, on `postgres-protocol` and tokio.
//!
//! Upstream tokio-postgres has no replication mode, so outboxd speaks the protocol itself: a
//! [`Session`] (startup with TLS and authentication, then simple queries and notifications), a
//! [`ReplicationConnection`] (a walsender's session: the replication commands, and SQL, which a
//! logical walsender also runs), then CopyBoth for the stream itself ([`ReplicationStream`]).

mod auth;
mod error;
pub mod extended;
mod framed;
mod hosts;
mod options;
mod replication;
mod session;
mod stream;
mod tls;

pub use error::{ServerError, WireError};
pub use hosts::{redacted_url, Endpoint, ServerState, TargetSessionAttrs};
pub use options::{ConnectOptions, OptionsError, SslMode, SESSION_SETTINGS};
pub use replication::{
    max_pgoutput_protocol, publication_names, CreatedSlot, PgOutputOptions, ReplicationConnection,
    SlotLife, Streaming, SystemIdentity,
};
pub use session::{QueryResult, ResultColumn, Session};
pub use stream::{ReplicationEvent, ReplicationStream};

use framed::Framed;
