//! The replication commands on a walsender's session: `IDENTIFY_SYSTEM`,
//! `CREATE_REPLICATION_SLOT`, and `START_REPLICATION`, which turns the connection into a
//! [`ReplicationStream`].

use postgres_protocol::message::backend::Message as Backend;
use postgres_protocol::message::frontend;

use super::{ConnectOptions, ReplicationStream, ServerError, Session, WireError};
use crate::pg::sql::{quote_identifier, quote_literal};
use crate::pg::Lsn;

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

/// How long a new slot lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLife {
    /// Dropped when the connection ends.
    Temporary,
    /// Kept until dropped; with `failover` (PostgreSQL 17+; ignored before), standbys with
    /// `sync_replication_slots` keep a copy in step, so the slot survives a promotion.
    Permanent {
        /// Create it with `FAILOVER true`.
        failover: bool,
    },
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

/// pgoutput's `publication_names` value: the names quoted (pgoutput folds unquoted ones to lower
/// case) and joined by commas.
pub fn publication_names(publications: &[String]) -> String {
    publications
        .iter()
        .map(|p| quote_identifier(p))
        .collect::<Vec<_>>()
        .join(",")
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
    session: Session,
}

impl ReplicationConnection {
    /// Connects as a walsender (`replication=database`), negotiating TLS, authenticating and
    /// waiting for the server to be ready, all within `connect_timeout`.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, WireError> {
        Ok(Self {
            session: Session::connect_as(options, true).await?,
        })
    }

    /// The walsender's session, for SQL (a logical walsender runs it) before `START_REPLICATION`.
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// `server_version_num` of the server.
    pub fn server_version_num(&self) -> u32 {
        self.session.server_version_num()
    }

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, WireError> {
        let rows = self.session.simple_query("IDENTIFY_SYSTEM").await?;
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
        life: SlotLife,
    ) -> Result<CreatedSlot, WireError> {
        self.create_slot(name, life, false).await
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL pgoutput` with `SNAPSHOT 'use'`: the
    /// current transaction (read only, `REPEATABLE READ`, with no query before this one) then
    /// sees exactly what committed before the slot's consistent point.
    pub async fn create_replication_slot_with_snapshot(
        &mut self,
        name: &str,
        life: SlotLife,
    ) -> Result<CreatedSlot, WireError> {
        self.create_slot(name, life, true).await
    }

    async fn create_slot(
        &mut self,
        name: &str,
        life: SlotLife,
        use_snapshot: bool,
    ) -> Result<CreatedSlot, WireError> {
        let temporary = if life == SlotLife::Temporary {
            " TEMPORARY"
        } else {
            ""
        };
        let version = self.server_version_num();
        // FAILOVER exists from 17 on, in the parenthesized options of 15+.
        let failover = if version >= 170_000 && life == (SlotLife::Permanent { failover: true }) {
            ", FAILOVER true"
        } else {
            ""
        };
        let snapshot = match (version >= 150_000, use_snapshot) {
            (true, false) => format!("(SNAPSHOT 'nothing'{failover})"),
            (true, true) => format!("(SNAPSHOT 'use'{failover})"),
            (false, false) => "NOEXPORT_SNAPSHOT".to_owned(),
            (false, true) => "USE_SNAPSHOT".to_owned(),
        };
        let sql = format!(
            "CREATE_REPLICATION_SLOT {}{temporary} LOGICAL pgoutput {snapshot}",
            quote_identifier(name)
        );
        let rows = self.session.simple_query(&sql).await?;
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

    /// `DROP_REPLICATION_SLOT name`.
    pub async fn drop_replication_slot(&mut self, name: &str) -> Result<(), WireError> {
        let sql = format!("DROP_REPLICATION_SLOT {}", quote_identifier(name));
        self.session.simple_query(&sql).await.map(drop)
    }

    /// `START_REPLICATION SLOT slot LOGICAL start (options)`: the connection becomes a stream.
    /// `Lsn::ZERO` starts at the slot's confirmed position.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &PgOutputOptions,
    ) -> Result<ReplicationStream, WireError> {
        let publications = publication_names(&options.publication_names);
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
        frontend::query(&sql, &mut self.session.framed.write)
            .map_err(|e| WireError::Protocol(e.to_string()))?;
        self.session.framed.flush().await?;
        loop {
            if self.session.framed.take_copy_both().await? {
                break;
            }
            match self.session.framed.next().await? {
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
        Ok(ReplicationStream::new(self.session.framed, start))
    }
}
