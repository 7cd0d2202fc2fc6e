//! The one-shot commands beside `run`: `check` (preflight), `migrate` (database objects) and
//! `status` (where the relay stands).

pub mod check;
pub mod migrate;
pub mod status;

use crate::pg::wire::{Session, WireError};

/// The first row of `sql`'s result as text columns (`None` for NULL), or `None` without rows.
async fn first_row(
    session: &mut Session,
    sql: &str,
) -> Result<Option<Vec<Option<String>>>, WireError> {
    Ok(session.simple_query(sql).await?.into_iter().next())
}

/// `'a', 'b'` for an SQL `IN (...)` list.
fn literal_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| crate::pg::sql::quote_literal(n))
        .collect::<Vec<_>>()
        .join(", ")
}
