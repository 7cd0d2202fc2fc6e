//! The one-shot commands beside `run`: `check` (preflight), `migrate` (database objects) and
//! `status` (where the relay stands).

pub mod check;
pub mod migrate;
pub mod status;

use crate::pg::wire::{ReplicationConnection, WireError};

/// The first row of `sql`'s result with `params` bound to `$1, $2, …`, as text columns (`None`
/// for NULL), or `None` without rows.
async fn first_row(
    session: &mut ReplicationConnection,
    sql: &str,
    params: &[&str],
) -> Result<Option<Vec<Option<String>>>, WireError> {
    Ok(session
        .query_params_text(sql, params)
        .await?
        .into_iter()
        .next())
}
