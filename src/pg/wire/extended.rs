//! The extended query protocol on an ordinary SQL session: a statement with `$1, $2, …` and its
//! values sent apart from it, so no value is ever spliced into SQL text (configuration names,
//! table names given as values, ids of rows).
//!
//! One round trip: Parse (unnamed statement), Bind (unnamed portal, every parameter and result
//! in text format), Describe, Execute, Sync. Postgres infers each parameter's type from the
//! statement, as `psql`'s `\bind` does; cast where it cannot (`$1::text`). A walsender refuses
//! the extended protocol ("extended query protocol not supported in a replication connection"):
//! run such statements on a session from [`Session::connect`].

use bytes::BufMut;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

use super::{QueryResult, Session, WireError};

impl Session {
    /// Runs one statement with `params` bound to `$1, $2, …` (text format; Postgres infers their
    /// types) and returns its rows as [`Self::query`] does. A notification arriving meanwhile is
    /// remembered for [`Self::wait_for_notification`].
    pub async fn query_params(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> Result<QueryResult, WireError> {
        let protocol = |e: std::io::Error| WireError::Protocol(e.to_string());
        let write = &mut self.framed.write;
        frontend::parse("", sql, std::iter::empty(), write).map_err(protocol)?;
        frontend::bind(
            "",
            "",
            std::iter::empty(), // no format codes: every parameter in text
            params,
            |value, buf| {
                buf.put_slice(value.as_bytes());
                Ok(IsNull::No)
            },
            std::iter::empty(), // every result column in text
            write,
        )
        .map_err(|e| match e {
            frontend::BindError::Conversion(e) => WireError::Protocol(e.to_string()),
            frontend::BindError::Serialization(e) => protocol(e),
        })?;
        frontend::describe(b'P', "", write).map_err(protocol)?;
        frontend::execute("", 0, write).map_err(protocol)?;
        frontend::sync(write);
        self.framed.flush().await?;
        self.read_result(sql).await
    }

    /// [`Self::query_params`] with the rows as text (`None` for NULL), as
    /// [`Self::simple_query`] returns them.
    pub async fn query_params_text(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> Result<Vec<Vec<Option<String>>>, WireError> {
        Ok(self.query_params(sql, params).await?.text_rows())
    }
}

/// `values` as one Postgres array value (`{"a","b\"c"}`), for a single parameter such as
/// `id = ANY($1)`: every element quoted, `"` and `\` escaped, so any text round-trips.
pub fn array_literal<T: AsRef<str>>(values: &[T]) -> String {
    let mut array = String::from("{");
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            array.push(',');
        }
        array.push('"');
        for c in value.as_ref().chars() {
            if c == '"' || c == '\\' {
                array.push('\\');
            }
            array.push(c);
        }
        array.push('"');
    }
    array.push('}');
    array
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literal_quotes_every_element() {
        assert_eq!(array_literal::<&str>(&[]), "{}");
        assert_eq!(array_literal(&["1", "2"]), r#"{"1","2"}"#);
        assert_eq!(
            array_literal(&[r#"a"b"#, r"c\d", "{,} NULL"]),
            r#"{"a\"b","c\\d","{,} NULL"}"#
        );
    }
}
