//! Poll mode's source (docs/architecture.md, poll mode): outbox rows read with plain SQL, for a role without the
//! REPLICATION attribute.
//!
//! A batch is *claimed* in a Postgres transaction that stays open until its events are committed
//! to Kafka:
//!
//! ```text
//! BEGIN; DELETE the oldest N rows ... RETURNING them     (or UPDATE ... SET <mark> = now())
//!        -> router -> Kafka txn: events + checkpoint naming the N ids -> Kafka COMMIT
//! COMMIT                                                 (the rows are gone for everyone else)
//! ```
//!
//! Deleting inside the open transaction rather than after the Kafka commit changes nothing anyone
//! can see — no other session sees the rows gone before the Postgres commit — and it needs only
//! SELECT and DELETE: `SELECT ... FOR UPDATE` would need UPDATE too. A crash before the Postgres
//! commit rolls the delete back; the restart deletes the rows of the last committed checkpoint
//! first ([`PollSource::settle`]), so rows published but not yet deleted are never published again.
//!
//! One poller per relay name: a session advisory lock ([`PollSource::lock`]) keeps a second
//! instance waiting (it fenced the first one's producer already) until the first has gone, so two
//! pollers never publish the same outbox side by side and out of order.

use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::PollCheckpoint;
use crate::pg::pgoutput::{ColumnValue, Relation, RelationColumn, ReplicaIdentity, TupleData};
use crate::pg::schema::Schema;
use crate::pg::sql::quote_identifier;
use crate::pg::wire::{extended::array_literal, ConnectOptions, Session, WireError};
use crate::pg::RelationId;

/// The notification channel of the trigger `outboxd migrate` installs in poll mode.
pub const NOTIFY_CHANNEL: &str = "outboxd";

/// The name of that trigger (and of its function).
pub const NOTIFY_TRIGGER: &str = "outboxd_notify";

/// One outbox table as poll mode reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTable {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// The event id column: unique, named in checkpoints.
    pub id_column: String,
    /// The column rows are published in order of (then the id).
    pub order_by: String,
}

impl PollTable {
    /// `schema.table`, as in the configuration and in checkpoints.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// The quoted name for SQL.
    pub fn sql_name(&self) -> String {
        format!(
            "{}.{}",
            quote_identifier(&self.schema),
            quote_identifier(&self.table)
        )
    }

    /// `"order_by", "id"`: the total order rows are published in.
    fn order(&self) -> String {
        format!(
            "{}, {}",
            quote_identifier(&self.order_by),
            quote_identifier(&self.id_column)
        )
    }
}

/// What happens to a published row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterPublish {
    /// It is deleted.
    Delete,
    /// Its timestamp column `column` is set; rows where it is set are not polled.
    Mark {
        /// The timestamp column.
        column: String,
    },
}

/// Poll mode's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollSettings {
    /// The outbox tables, polled in turn.
    pub tables: Vec<PollTable>,
    /// Rows per batch.
    pub batch_size: usize,
    /// Longest wait between polls of an idle outbox.
    pub interval: Duration,
    /// First wait after a poll that found less than a full batch; doubles up to `interval`.
    pub min_interval: Duration,
    /// Delete or mark.
    pub after_publish: AfterPublish,
    /// Whether to `LISTEN` for the notify trigger's wake-ups.
    pub notify: bool,
}

impl PollSettings {
    /// The largest batch: its checkpoint names every id (a UUID's text is 36 bytes), and 10,000
    /// of them stay well within Kafka's default 1 MB record limit.
    pub const MAX_BATCH_SIZE: usize = 10_000;
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            batch_size: 1000,
            interval: Duration::from_secs(1),
            min_interval: Duration::from_millis(10),
            after_publish: AfterPublish::Delete,
            notify: true,
        }
    }
}

/// Why a batch could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The session failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The table has no column of the configured id name.
    #[error(
        "outbox table {table} has no id column {column:?}: add it, or name the table's id column \
         with outbox.columns.id"
    )]
    NoIdColumn {
        /// The table, `schema.table`.
        table: String,
        /// The configured id column.
        column: String,
    },
    /// A row's id is NULL, so no checkpoint could name it.
    #[error(
        "outbox table {table}: a row has a NULL {column:?}; the id column must be NOT NULL \
         (ALTER TABLE ... ALTER COLUMN ... SET NOT NULL after fixing the row)"
    )]
    NullId {
        /// The table, `schema.table`.
        table: String,
        /// The id column.
        column: String,
    },
}

impl PollError {
    /// Whether a new attempt can succeed: the table's shape and rows stay what they are until
    /// someone changes them.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Wire(error) => error.is_transient(),
            Self::NoIdColumn { .. } | Self::NullId { .. } => false,
        }
    }
}

/// Rows claimed from one table, in publication order, inside an open Postgres transaction.
#[derive(Debug)]
pub struct Batch {
    /// The table, as a Relation built from the result's columns (so a column added since the
    /// last batch is seen at once).
    pub relation: Arc<Relation>,
    /// The rows, values in text format.
    pub rows: Vec<TupleData>,
    /// Each row's id, as text.
    pub ids: Vec<String>,
}

/// A plain SQL session that claims, settles and waits for outbox rows.
#[derive(Debug)]
pub struct PollSource {
    connection: Session,
    settings: PollSettings,
    /// Table OIDs, in the order of `settings.tables`.
    table_oids: Vec<RelationId>,
}

impl PollSource {
    /// Connects and finds the outbox tables.
    pub async fn connect(
        options: &ConnectOptions,
        settings: &PollSettings,
    ) -> Result<Self, WireError> {
        let mut connection = Session::connect(options).await?;
        let mut table_oids = Vec::new();
        for table in &settings.tables {
            let rows = connection
                .query_params_text("SELECT $1::regclass::oid::text", &[&table.sql_name()])
                .await?;
            let oid = rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|oid| oid.parse().ok())
                .unwrap_or(0);
            table_oids.push(RelationId(oid));
        }
        Ok(Self {
            connection,
            settings: settings.clone(),
            table_oids,
        })
    }

    /// Takes relay `relay_name`'s advisory lock for this session, waiting while another session
    /// holds it (a previous instance that has not noticed it was fenced, or is still closing).
    pub async fn lock(&mut self, relay_name: &str) -> Result<(), WireError> {
        let sql = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))::text";
        let key = format!("outboxd poll {relay_name}");
        let mut waiting = false;
        loop {
            let rows = self.connection.query_params_text(sql, &[&key]).await?;
            if rows.first().and_then(|r| r.first().cloned().flatten()) == Some("true".into()) {
                return Ok(());
            }
            if !std::mem::replace(&mut waiting, true) {
                tracing::warn!(
                    relay = relay_name,
                    "another session polls for this relay name (an instance that was just fenced, \
                     or a second one running); waiting for it to end"
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// `LISTEN`s for the notify trigger when `poll.notify` is on and a table has the trigger;
    /// returns whether it does.
    pub async fn listen(&mut self) -> Result<bool, WireError> {
        if !self.settings.notify {
            return Ok(false);
        }
        let oids: Vec<String> = self.table_oids.iter().map(|o| o.0.to_string()).collect();
        let rows = self
            .connection
            .query_params_text(
                "SELECT count(*)::text FROM pg_trigger WHERE tgname = $1 AND tgenabled <> 'D' \
                 AND tgrelid = ANY($2::oid[])",
                &[NOTIFY_TRIGGER, &array_literal(&oids)],
            )
            .await?;
        let triggers: usize = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if triggers == 0 {
            tracing::info!(
                "no outbox table has the notify trigger (`outboxd migrate` installs it in poll \
                 mode): polling every poll.interval when idle"
            );
            return Ok(false);
        }
        self.connection
            .simple_query(&format!("LISTEN {}", quote_identifier(NOTIFY_CHANNEL)))
            .await?;
        Ok(true)
    }

    /// Deletes (or marks) the rows a committed checkpoint names: published, but maybe not yet
    /// deleted when the previous run ended. Returns how many rows it took away.
    pub async fn settle(&mut self, checkpoint: &PollCheckpoint) -> Result<usize, WireError> {
        let Some(table) = self
            .settings
            .tables
            .iter()
            .find(|t| t.qualified() == checkpoint.table)
            .cloned()
        else {
            tracing::warn!(
                table = %checkpoint.table,
                "the last checkpoint names a table that is no longer in outbox.tables; its rows \
                 are left as they are"
            );
            return Ok(0);
        };
        if checkpoint.ids.is_empty() {
            return Ok(0);
        }
        // The ids as one array parameter, of the id column's type (`$1` takes it from the column).
        let matching = format!("{} = ANY($1)", quote_identifier(&table.id_column));
        let rows = self
            .connection
            .query_params_text(
                &format!("{} RETURNING 1", self.take_away(&table, &matching)),
                &[&array_literal(&checkpoint.ids)],
            )
            .await?;
        Ok(rows.len())
    }

    /// Begins a Postgres transaction and claims (deletes or marks, not yet committed) the oldest
    /// rows of table `index`, at most a batch.
    pub async fn claim(&mut self, index: usize, schema: &mut Schema) -> Result<Batch, PollError> {
        let table = &self.settings.tables[index];
        let oldest = format!(
            "ctid = ANY(ARRAY(SELECT ctid FROM {name}{unpublished} ORDER BY {order} LIMIT {n}))",
            name = table.sql_name(),
            unpublished = match &self.settings.after_publish {
                AfterPublish::Delete => String::new(),
                AfterPublish::Mark { column } =>
                    format!(" WHERE {} IS NULL", quote_identifier(column)),
            },
            order = table.order(),
            n = self.settings.batch_size,
        );
        let sql = format!(
            "BEGIN; WITH claimed AS ({} RETURNING *) SELECT * FROM claimed ORDER BY {}",
            self.take_away(table, &oldest),
            table.order()
        );
        let result = self.connection.query(&sql).await?;
        let id_index = result
            .columns
            .iter()
            .position(|c| c.name == table.id_column)
            .ok_or_else(|| PollError::NoIdColumn {
                table: table.qualified(),
                column: table.id_column.clone(),
            })?;
        let relation = Arc::new(Relation {
            xid: None,
            id: self.table_oids[index],
            namespace: table.schema.clone(),
            name: table.table.clone(),
            replica_identity: ReplicaIdentity::Default,
            columns: result
                .columns
                .iter()
                .map(|c| RelationColumn {
                    is_key: c.name == table.id_column,
                    name: c.name.clone(),
                    type_oid: c.type_oid,
                    type_modifier: c.type_modifier,
                })
                .collect(),
        });
        let types: Vec<_> = relation.columns.iter().map(|c| c.type_oid).collect();
        if !types.iter().all(|t| schema.types.contains(*t)) {
            schema.types.load(&mut self.connection, &types).await?;
        }
        let mut ids = Vec::with_capacity(result.rows.len());
        let mut rows = Vec::with_capacity(result.rows.len());
        for row in result.rows {
            let id = row
                .get(id_index)
                .cloned()
                .flatten()
                .ok_or_else(|| PollError::NullId {
                    table: table.qualified(),
                    column: table.id_column.clone(),
                })?;
            ids.push(String::from_utf8_lossy(&id).into_owned());
            rows.push(TupleData(
                row.into_iter()
                    .map(|value| value.map_or(ColumnValue::Null, ColumnValue::Text))
                    .collect(),
            ));
        }
        Ok(Batch {
            relation,
            rows,
            ids,
        })
    }

    /// Commits the claim: the published rows are gone (or marked) for everyone.
    pub async fn commit(&mut self) -> Result<(), WireError> {
        self.connection.simple_query("COMMIT").await.map(drop)
    }

    /// Rolls the claim back: the rows are there again, for the next batch.
    pub async fn rollback(&mut self) -> Result<(), WireError> {
        self.connection.simple_query("ROLLBACK").await.map(drop)
    }

    /// Waits up to `limit` for a notification (without `LISTEN`, just the time); `true` if one came.
    pub async fn wait(&mut self, limit: Duration) -> Result<bool, WireError> {
        self.connection.wait_for_notification(limit).await
    }

    /// The statement that takes published rows matching `condition` away.
    fn take_away(&self, table: &PollTable, condition: &str) -> String {
        match &self.settings.after_publish {
            AfterPublish::Delete => format!("DELETE FROM {} WHERE {condition}", table.sql_name()),
            AfterPublish::Mark { column } => format!(
                "UPDATE {name} SET {column} = now() WHERE {condition} AND {column} IS NULL",
                name = table.sql_name(),
                column = quote_identifier(column),
            ),
        }
    }
}
