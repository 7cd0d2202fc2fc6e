//! `outboxd migrate`: the database objects outboxd expects (`migrations/`), applied once each, in
//! order, in one transaction, under an advisory lock so two concurrent runs cannot interleave.
//!
//! Applied migrations are recorded in `outboxd_migrations` with their text: a migration edited
//! after it was applied is an error rather than silently skipped. The files may use
//! `${publication}` / `${publication_literal}` (postgres.publications[0] as an identifier / a
//! literal) and `${relay_role}` (the user of postgres.url, as an identifier).
//!
//! Beside the versioned migrations, the one object that depends on the configuration: poll
//! mode's notify trigger, attached to each outbox table in poll mode and removed otherwise.

use std::fmt;

use anyhow::Context;

use crate::config::{RelayMode, Settings};
use crate::pg::sql::{quote_identifier, quote_literal};
use crate::pg::wire::Session;
use crate::relay::RelayConfig;
use crate::source::poll::NOTIFY_TRIGGER;

/// A migration: version, name, SQL template.
pub type Migration = (u32, &'static str, &'static str);

/// Every migration, in order (`migrations/NNNN_name.sql`).
pub const MIGRATIONS: &[Migration] = &[
    (
        1,
        "outbox",
        include_str!("../../migrations/0001_outbox.sql"),
    ),
    (
        2,
        "publication",
        include_str!("../../migrations/0002_publication.sql"),
    ),
    (
        3,
        "grants",
        include_str!("../../migrations/0003_grants.sql"),
    ),
    (4, "poll", include_str!("../../migrations/0004_poll.sql")),
];

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The migrations applied now, as `NNNN_name`.
    pub now: Vec<String>,
    /// How many were applied before.
    pub before: usize,
    /// What changed about the notify trigger of poll mode, one line per table.
    pub triggers: Vec<String>,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.triggers {
            writeln!(f, "{line}")?;
        }
        if self.now.is_empty() {
            writeln!(f, "up to date: {} migration(s) applied before", self.before)
        } else {
            for name in &self.now {
                writeln!(f, "applied {name}")?;
            }
            writeln!(
                f,
                "{} migration(s) applied now, {} before",
                self.now.len(),
                self.before
            )
        }
    }
}

/// Applies what is missing, connecting with `admin_url` when given (else postgres.url).
pub async fn run(settings: &Settings, admin_url: Option<&str>) -> anyhow::Result<Applied> {
    let relay = settings.relay_config()?;
    let options = match admin_url {
        Some(url) => url.parse().context("--admin-url")?,
        None => relay.postgres.clone(),
    };
    let publication = relay
        .publications
        .first()
        .context("postgres.publications is empty: name the publication to create")?;
    let variables = [
        ("${publication_literal}", quote_literal(publication)),
        ("${publication}", quote_identifier(publication)),
        ("${relay_role}", quote_identifier(&relay.postgres.user)),
    ];
    let mut session = Session::connect(&options).await.with_context(|| {
        format!(
            "connecting to {}:{}/{}",
            options.host, options.port, options.dbname
        )
    })?;
    session.simple_query("BEGIN").await?;
    let mut outcome = apply(&mut session, &variables).await;
    if let Ok(applied) = &mut outcome {
        match notify_triggers(&mut session, &relay).await {
            Ok(lines) => applied.triggers = lines,
            Err(error) => outcome = Err(error),
        }
    }
    let end = if outcome.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    session
        .simple_query(end)
        .await
        .with_context(|| format!("{end} of the migrations"))?;
    outcome
}

async fn apply(session: &mut Session, variables: &[(&str, String)]) -> anyhow::Result<Applied> {
    session
        .simple_query(
            "SELECT pg_advisory_xact_lock(hashtext('outboxd_migrations')); \
             CREATE TABLE IF NOT EXISTS outboxd_migrations ( \
                 version    integer     PRIMARY KEY, \
                 name       text        NOT NULL, \
                 sql        text        NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .context("creating outboxd_migrations")?;
    let rows = session
        .simple_query("SELECT version::text, sql FROM outboxd_migrations ORDER BY version")
        .await?;
    let mut applied = Applied {
        now: Vec::new(),
        before: rows.len(),
        triggers: Vec::new(),
    };
    for (version, name, template) in MIGRATIONS {
        let label = format!("{version:04}_{name}");
        let stored = rows
            .iter()
            .find(|row| row.first().cloned().flatten() == Some(version.to_string()));
        if let Some(row) = stored {
            anyhow::ensure!(
                row.get(1).cloned().flatten().as_deref() == Some(*template),
                "migration {label} differs from the one applied on this database: migrations \
                 must not change once released (add a new one instead)"
            );
            continue;
        }
        let sql = variables
            .iter()
            .fold((*template).to_owned(), |sql, (name, value)| {
                sql.replace(name, value)
            });
        session
            .simple_query(&sql)
            .await
            .with_context(|| format!("applying migration {label}"))?;
        session
            .simple_query(&format!(
                "INSERT INTO outboxd_migrations (version, name, sql) VALUES ({version}, {}, {})",
                quote_literal(name),
                quote_literal(template)
            ))
            .await?;
        applied.now.push(label);
    }
    Ok(applied)
}

/// Attaches poll mode's notify trigger to every existing outbox table in poll mode with
/// `poll.notify` on, and takes it away otherwise (it costs writers a little and wakes nobody).
async fn notify_triggers(
    session: &mut Session,
    relay: &RelayConfig,
) -> anyhow::Result<Vec<String>> {
    let wanted = relay.mode == RelayMode::Poll && relay.poll.notify;
    let mut lines = Vec::new();
    for table in &relay.poll.tables {
        let present = session
            .simple_query(&format!(
                "SELECT t.tgname IS NOT NULL FROM (SELECT to_regclass({}) AS oid) c \
                 LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = {} \
                 WHERE c.oid IS NOT NULL",
                quote_literal(&table.sql_name()),
                quote_literal(NOTIFY_TRIGGER)
            ))
            .await?;
        let Some(row) = present.first() else {
            continue; // no such table: `check` says so
        };
        let present = row.first().cloned().flatten().as_deref() == Some("t");
        let trigger = quote_identifier(NOTIFY_TRIGGER);
        let sql = match (wanted, present) {
            (true, false) => format!(
                "CREATE TRIGGER {trigger} AFTER INSERT ON {} FOR EACH STATEMENT \
                 EXECUTE FUNCTION outboxd_notify()",
                table.sql_name()
            ),
            (false, true) => format!("DROP TRIGGER {trigger} ON {}", table.sql_name()),
            _ => continue,
        };
        session
            .simple_query(&sql)
            .await
            .with_context(|| format!("{sql:?}"))?;
        lines.push(if wanted {
            format!(
                "attached the poll-mode notify trigger to {}",
                table.qualified()
            )
        } else {
            format!(
                "removed the poll-mode notify trigger from {} (not in poll mode with poll.notify)",
                table.qualified()
            )
        });
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_migrations_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS
            .iter()
            .map(|(version, name, _)| format!("{version:04}_{name}.sql"))
            .collect();
        assert_eq!(files, embedded);
    }
}
