//! `outboxd migrate`: the database objects outboxd expects (`migrations/`), applied once each, in
//! order, in one transaction, under an advisory lock so two concurrent runs cannot interleave.
//!
//! Applied migrations are recorded in `outboxd_migrations` with their text: a migration edited
//! after it was applied is an error rather than silently skipped. The files may use
//! `${publication}` / `${publication_literal}` (postgres.publications[0] as an identifier / a
//! literal) and `${relay_role}` (the user of postgres.url, as an identifier).
//!
//! Those names come from the configuration, so they are substituted as inert text (see
//! [`substitute`]): in one pass, never re-read, and spelled so that no quote, backslash or `$`
//! of theirs reaches the SQL — a `$$` in a name must not end a `DO $$ … $$` body around it. The
//! templates themselves cannot change (see above), so they keep their variables; everything else
//! migrate sends takes its values as parameters.
//!
//! Beside the versioned migrations, the objects that depend on the configuration: poll mode's
//! notify trigger, attached to each outbox table in poll mode and removed otherwise, and in
//! logical mode the relay's replication slot, created if missing. Without it, rows the
//! application writes between `migrate` and the relay's first start would never be published:
//! a slot only decodes what commits after it exists.

use std::fmt;

use anyhow::Context;

use crate::pg::sql::quote_identifier;
use crate::pg::wire::{Session, WireError};
use crate::relay::{RelayConfig, RelayMode};
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
    /// Logical mode: the slot created now, if it was missing.
    pub slot: Option<String>,
    /// Logical mode: the grant of `pg_log_standby_snapshot()` to the relay's role, if made now.
    pub standby_snapshot: Option<String>,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self
            .triggers
            .iter()
            .chain(&self.slot)
            .chain(&self.standby_snapshot)
        {
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
pub async fn run(relay: &RelayConfig, admin_url: Option<&str>) -> anyhow::Result<Applied> {
    let options = match admin_url {
        Some(url) => url.parse().context("--admin-url")?,
        None => relay.postgres.clone(),
    };
    let publication = relay
        .publications
        .first()
        .context("postgres.publications is empty: name the publication to create")?;
    let variables = [
        ("publication_literal", inert_literal(publication)),
        ("publication", inert_identifier(publication)),
        ("relay_role", inert_identifier(&relay.postgres.user)),
    ];
    let mut session = Session::connect(&options)
        .await
        .with_context(|| format!("connecting to {}/{}", options.targets(), options.dbname))?;
    session.simple_query("BEGIN").await?;
    let mut outcome = apply(&mut session, &variables).await;
    if let Ok(applied) = &mut outcome {
        match notify_triggers(&mut session, relay).await {
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
    let mut applied = outcome?;
    if relay.mode == RelayMode::Logical {
        applied.slot = create_slot(&mut session, &relay.slot).await?;
        let role = &relay.postgres.user;
        if crate::relay::standby_snapshot::grant(&mut session, role).await? {
            applied.standby_snapshot = Some(format!(
                "granted EXECUTE on {} to {}: the relay lets its slot's restart_lsn follow the \
                 confirmed position while the outbox is idle (PostgreSQL 16+)",
                crate::relay::standby_snapshot::FUNCTION,
                quote_identifier(role)
            ));
        }
    }
    Ok(applied)
}

/// Logical mode: creates the relay's slot if it is missing, so that the events written from now
/// on are kept for the relay even before its first start (the slot only sees what commits after
/// it exists). Outside the migrations' transaction: Postgres creates no slot in a transaction
/// that has written. A line saying what was done, if anything.
async fn create_slot(session: &mut Session, slot: &str) -> anyhow::Result<Option<String>> {
    let exists = !session
        .query_params_text(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[slot],
        )
        .await?
        .is_empty();
    if exists {
        return Ok(None);
    }
    let created = match session
        .query_params_text(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[slot],
        )
        .await
    {
        Ok(created) => created,
        // The migrations are in; the slot is what the relay would create anyway, only later.
        Err(WireError::Server(error)) => {
            return Ok(Some(format!(
                "WARNING: could not create replication slot {slot}: {error}. The relay creates \
                 it on its first start, and rows written before then will never be published: \
                 give the role migrate connects as REPLICATION, or start the relay before the \
                 application writes events"
            )))
        }
        Err(error) => return Err(error.into()),
    };
    let at = created
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
        .unwrap_or_default();
    Ok(Some(format!(
        "created replication slot {slot} at {at}: events written from now on wait for the relay \
         (the slot keeps their WAL until the relay confirms them; drop it if no relay will run)"
    )))
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
        slot: None,
        standby_snapshot: None,
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
        let sql = substitute(template, variables).with_context(|| format!("migration {label}"))?;
        session
            .simple_query(&sql)
            .await
            .with_context(|| format!("applying migration {label}"))?;
        session
            .query_params(
                "INSERT INTO outboxd_migrations (version, name, sql) VALUES ($1, $2, $3)",
                &[&version.to_string(), name, template],
            )
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
            .query_params_text(
                "SELECT t.tgname IS NOT NULL FROM (SELECT to_regclass($1) AS oid) c \
                 LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = $2 \
                 WHERE c.oid IS NOT NULL",
                &[&table.sql_name(), NOTIFY_TRIGGER],
            )
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

/// `template` with every `${name}` replaced by its value in `variables`, in one pass: a value is
/// never scanned again, so a name that itself contains `${…}` stays text. An unknown or unclosed
/// variable is an error (a broken template, not a configuration problem).
fn substitute(template: &str, variables: &[(&str, String)]) -> anyhow::Result<String> {
    let mut sql = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        sql.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .context("a `${` without its `}` in the template")?;
        let name = &after[..end];
        let (_, value) = variables
            .iter()
            .find(|(known, _)| *known == name)
            .with_context(|| format!("unknown variable ${{{name}}} in the template"))?;
        sql.push_str(value);
        rest = &after[end + 1..];
    }
    sql.push_str(rest);
    Ok(sql)
}

/// `name` as a quoted identifier made of letters, digits, `_`, space and `\` escapes only
/// (`U&"…"`, every other character as its code point), so it stays inert inside any quoting
/// of the template around it, a dollar-quoted `DO` body included.
fn inert_identifier(name: &str) -> String {
    format!("U&\"{}\"", unicode_escaped(name))
}

/// `text` as an expression of its value made of hex digits only:
/// `convert_from(decode('…', 'hex'), 'UTF8')`, inert inside any quoting around it.
fn inert_literal(text: &str) -> String {
    let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    format!("convert_from(decode('{hex}', 'hex'), 'UTF8')")
}

/// `text` with everything but ASCII letters, digits, `_` and space as `\XXXX` or `\+XXXXXX`.
fn unicode_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | ' ' => escaped.push(c),
            c if u32::from(c) <= 0xFFFF => escaped.push_str(&format!("\\{:04X}", u32::from(c))),
            c => escaped.push_str(&format!("\\+{:06X}", u32::from(c))),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_is_one_pass() {
        let hostile = "') THEN ALTER ROLE outboxd SUPERUSER; END IF; IF true THEN --${publication}";
        let variables = [
            ("publication_literal", inert_literal(hostile)),
            ("publication", inert_identifier(hostile)),
        ];
        let sql = substitute(
            "IF x = ${publication_literal} THEN CREATE PUBLICATION ${publication}",
            &variables,
        )
        .expect("substitutes");
        assert!(!sql.contains("${"), "{sql}");
        // Only the quotes of the renderings themselves: decode('…', 'hex'), 'UTF8' and U&"…".
        assert_eq!(sql.matches('\'').count(), 6, "{sql}");
        assert_eq!(sql.matches('"').count(), 2, "{sql}");
        assert!(!sql.contains('$'), "{sql}");
        assert_eq!(
            substitute("a ${nope} b", &variables)
                .expect_err("unknown")
                .to_string(),
            "unknown variable ${nope} in the template"
        );
        assert!(substitute("a ${publication", &variables).is_err());
    }

    #[test]
    fn inert_values_carry_no_quote_or_dollar() {
        for name in [
            "x$$; DROP TABLE t; $$",
            "a\"b'c\\d",
            "Ünï 😀",
            "${relay_role}",
        ] {
            for rendered in [inert_identifier(name), inert_literal(name)] {
                let inner = rendered
                    .trim_start_matches("U&\"")
                    .trim_end_matches('"')
                    .replace("convert_from(decode('", "")
                    .replace("', 'hex'), 'UTF8')", "");
                assert!(
                    inner
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_ \\+".contains(c)),
                    "{name:?} rendered as {rendered:?}"
                );
            }
        }
        assert_eq!(inert_identifier("a\"b"), "U&\"a\\0022b\"");
        assert_eq!(inert_identifier("😀"), "U&\"\\+01F600\"");
        assert_eq!(
            inert_literal("ab"),
            "convert_from(decode('6162', 'hex'), 'UTF8')"
        );
    }

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
