//! What `check` reads from the catalog once and every Postgres check uses: server settings,
//! the names as SQL spells them, and each outbox table's state.

use std::collections::HashMap;

use crate::pg::sql::quote_identifier;
use crate::pg::wire::extended::array_literal;
use crate::pg::wire::{Session, WireError};
use crate::relay::RelayConfig;
use crate::source::poll::{AfterPublish, PollTable, NOTIFY_TRIGGER};

/// Server-wide facts both modes' checks use.
#[derive(Debug)]
pub(super) struct ServerFacts {
    pub(super) wal_level: String,
    pub(super) may_replicate: bool,
    pub(super) max_slots: u64,
    pub(super) used_slots: u64,
}

impl ServerFacts {
    pub(super) async fn read(session: &mut Session) -> Result<Self, WireError> {
        let row = crate::ops::first_row(
            session,
            "SELECT current_setting('wal_level'), \
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
                    current_setting('max_replication_slots'), \
                    (SELECT count(*) FROM pg_replication_slots)",
            &[],
        )
        .await?
        .unwrap_or_default();
        let column = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(Self {
            wal_level: column(0),
            may_replicate: column(1) == "t",
            max_slots: column(2).parse().unwrap_or(0),
            used_slots: column(3).parse().unwrap_or(0),
        })
    }
}

/// The names a fix may print, as SQL spells them: `public.outbox` stays bare, `Odd Name` is
/// quoted.
#[derive(Debug)]
pub(super) struct Spelling(HashMap<String, String>);

impl Spelling {
    pub(super) async fn read(
        session: &mut Session,
        config: &RelayConfig,
    ) -> Result<Self, WireError> {
        let mut names = vec![config.postgres.user.clone()];
        names.extend(config.publications.iter().cloned());
        for table in &config.poll.tables {
            names.extend([
                table.schema.clone(),
                table.table.clone(),
                table.id_column.clone(),
                table.order_by.clone(),
            ]);
        }
        if let AfterPublish::Mark { column } = &config.poll.after_publish {
            names.push(column.clone());
        }
        let rows = session
            .query_params_text(
                "SELECT n, quote_ident(n) FROM unnest($1::text[]) n",
                &[&array_literal(&names)],
            )
            .await?;
        Ok(Self(
            rows.into_iter()
                .filter_map(|row| {
                    let mut row = row.into_iter();
                    Some((row.next()??, row.next()??))
                })
                .collect(),
        ))
    }

    /// `name` as an SQL identifier.
    pub(super) fn ident(&self, name: &str) -> String {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| quote_identifier(name))
    }

    /// `schema.table` as SQL names it.
    pub(super) fn table(&self, table: &PollTable) -> String {
        format!("{}.{}", self.ident(&table.schema), self.ident(&table.table))
    }
}

/// One outbox table: whether it exists, whether the role may poll it, whether a publication
/// of the relay's publishes it, whether it has poll mode's notify trigger. One query for both
/// modes' checks.
#[derive(Debug)]
pub(super) struct TableFacts {
    pub(super) exists: bool,
    pub(super) may_poll: bool,
    pub(super) published: bool,
    pub(super) notify_trigger: bool,
}

impl TableFacts {
    pub(super) async fn read(
        session: &mut Session,
        config: &RelayConfig,
        table: &PollTable,
    ) -> Result<Self, WireError> {
        let row = crate::ops::first_row(
            session,
            "SELECT c.oid IS NOT NULL, \
                    c.oid IS NOT NULL AND has_table_privilege(c.oid, 'SELECT') \
                      AND has_table_privilege(c.oid, $2::text), \
                    EXISTS (SELECT 1 FROM pg_publication_tables \
                            WHERE pubname = ANY($3::name[]) \
                              AND schemaname = $4::text AND tablename = $5::text), \
                    EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = c.oid AND tgname = $6::text) \
             FROM (SELECT to_regclass($1::text) AS oid) c",
            &[
                &table.sql_name(),
                take_away(config),
                &array_literal(&config.publications),
                &table.schema,
                &table.table,
                NOTIFY_TRIGGER,
            ],
        )
        .await?
        .unwrap_or_default();
        let flag = |i: usize| row.get(i).cloned().flatten().as_deref() == Some("t");
        Ok(Self {
            exists: flag(0),
            may_poll: flag(1),
            published: flag(2),
            notify_trigger: flag(3),
        })
    }
}

/// The privilege poll mode needs beside SELECT.
pub(super) fn take_away(config: &RelayConfig) -> &'static str {
    match config.poll.after_publish {
        AfterPublish::Delete => "DELETE",
        AfterPublish::Mark { .. } => "UPDATE",
    }
}
