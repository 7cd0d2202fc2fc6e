//! Row filters of an incremental snapshot: Debezium's `additional-conditions` are SQL text, which
//! outboxd never splices into its queries. A filter is parsed instead, in a small grammar; its
//! columns are checked against the table's catalog columns and quoted, and every literal is bound
//! as a parameter. Anything outside the grammar is refused with the token it stopped at.
//!
//! ```text
//! filter    = or
//! or        = and { OR and }
//! and       = not { AND not }
//! not       = NOT not | "(" or ")" | predicate
//! predicate = column ( cmp literal
//!                    | [NOT] IN "(" literal { "," literal } ")"
//!                    | [NOT] BETWEEN literal AND literal
//!                    | [NOT] LIKE string
//!                    | IS [NOT] NULL )
//! cmp       = "=" | "<>" | "!=" | "<" | "<=" | ">" | ">="
//! column    = name | "quoted name"
//! literal   = 'string' | number | TRUE | FALSE
//! ```
//! Keywords are case-insensitive; an unquoted column name folds to lower case, as in SQL.

use crate::pg::sql::quote_identifier;

/// The longest filter accepted, in bytes.
const MAX_LENGTH: usize = 4096;
/// The deepest nesting of parentheses and NOTs accepted.
const MAX_DEPTH: usize = 32;

/// A filter that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Outside the grammar.
    #[error(
        "filter refused at byte {at} ({found}): {expected}. A filter compares columns with \
         literals ('text', numbers, true, false) using = <> != < <= > >=, IN (...), BETWEEN ... \
         AND ..., LIKE '...', IS [NOT] NULL, joined by AND, OR, NOT and parentheses; nothing \
         else (no functions, casts, subqueries, comments or semicolons)"
    )]
    Syntax {
        /// Byte offset in the filter.
        at: usize,
        /// What was there.
        found: String,
        /// What the grammar allows there.
        expected: &'static str,
    },
    /// Too long or too deep.
    #[error("filter refused: {0}")]
    TooBig(&'static str),
    /// A column the table does not have.
    #[error("filter refused: table {table} has no column {column:?}")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The column as the filter names it (folded).
        column: String,
    },
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter(Expr);

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    /// `column op literal`.
    Compare(String, &'static str, String),
    /// `column [NOT] IN (literals)`.
    In(String, bool, Vec<String>),
    /// `column [NOT] BETWEEN low AND high`.
    Between(String, bool, String, String),
    /// `column [NOT] LIKE pattern`.
    Like(String, bool, String),
    /// `column IS [NOT] NULL`.
    IsNull(String, bool),
}

impl Filter {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.len() > MAX_LENGTH {
            return Err(FilterError::TooBig("longer than 4096 bytes"));
        }
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            next: 0,
            depth: 0,
            end: text.len(),
        };
        let expr = parser.or()?;
        match parser.peek() {
            None => Ok(Self(expr)),
            Some(_) => Err(parser.unexpected("AND, OR or the end of the filter")),
        }
    }

    /// The filter as SQL over the columns `known` (the table's, as the catalog spells them), its
    /// literals as `$first`, `$first + 1`, … and their values in that order.
    pub fn to_sql(
        &self,
        table: &str,
        known: &[String],
        first: usize,
    ) -> Result<(String, Vec<String>), FilterError> {
        let mut out = Sql {
            table,
            known,
            text: String::new(),
            params: Vec::new(),
            first,
        };
        out.expr(&self.0)?;
        Ok((out.text, out.params))
    }
}

/// One token, and where it starts.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A keyword or unquoted name, as written.
    Word(String),
    /// A quoted name, unescaped.
    Quoted(String),
    /// A string literal, unescaped.
    Text(String),
    Number(String),
    Symbol(&'static str),
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let syntax = |at: usize, expected| FilterError::Syntax {
        at,
        found: describe(text, at),
        expected,
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let token = if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            Token::Word(text[start..i].to_owned())
        } else if c == b'"' || c == b'\'' {
            let (value, end) =
                quoted(text, i, c).ok_or_else(|| syntax(start, "a closing quote"))?;
            i = end;
            if value.contains('\0') {
                return Err(syntax(start, "no NUL character"));
            }
            if c == b'"' {
                if value.is_empty() {
                    return Err(syntax(start, "a column name"));
                }
                Token::Quoted(value)
            } else {
                Token::Text(value)
            }
        } else if c.is_ascii_digit()
            || (c == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            i += 1;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                i += 1;
                if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
                    i += 1;
                }
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let number = &text[start..i];
            if number.matches('.').count() > 1 || !number.ends_with(|c: char| c.is_ascii_digit()) {
                return Err(syntax(start, "a number"));
            }
            Token::Number(number.to_owned())
        } else {
            let symbol = ["<=", ">=", "<>", "!=", "=", "<", ">", "(", ")", ","]
                .into_iter()
                .find(|s| text[i..].starts_with(s))
                .ok_or_else(|| syntax(start, "a column, literal, operator or parenthesis"))?;
            i += symbol.len();
            Token::Symbol(symbol)
        };
        tokens.push((start, token));
    }
    Ok(tokens)
}

/// The text of a quoted token opening at `start` with `quote` (doubled inside), and the offset
/// past it; `None` if it does not close.
fn quoted(text: &str, start: usize, quote: u8) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let mut value = Vec::new();
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                value.push(quote);
                i += 2;
                continue;
            }
            return Some((String::from_utf8(value).ok()?, i + 1));
        }
        value.push(bytes[i]);
        i += 1;
    }
    None
}

/// A short quote of `text` at `at`, for an error.
fn describe(text: &str, at: usize) -> String {
    let rest: String = text
        .get(at..)
        .unwrap_or_default()
        .chars()
        .take(12)
        .collect();
    if rest.is_empty() {
        "the end".to_owned()
    } else {
        format!("{rest:?}")
    }
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    depth: usize,
    /// The filter's length: where "the end" is.
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, t)| t)
    }

    fn unexpected(&self, expected: &'static str) -> FilterError {
        let (at, found) = match self.tokens.get(self.next) {
            Some((at, token)) => (*at, format!("{token:?}")),
            None => (self.end, "the end".to_owned()),
        };
        FilterError::Syntax {
            at,
            found,
            expected,
        }
    }

    /// Takes the keyword `word` if it comes next.
    fn keyword(&mut self, word: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word));
        if found {
            self.next += 1;
        }
        found
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol);
        if found {
            self.next += 1;
        }
        found
    }

    fn expect_symbol(&mut self, symbol: &str, expected: &'static str) -> Result<(), FilterError> {
        if self.symbol(symbol) {
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.and()?];
        while self.keyword("OR") {
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.not()?];
        while self.keyword("AND") {
            terms.push(self.not()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    fn not(&mut self) -> Result<Expr, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::TooBig("nested deeper than 32"));
        }
        let expr = if self.keyword("NOT") {
            Expr::Not(Box::new(self.not()?))
        } else if self.symbol("(") {
            let inner = self.or()?;
            self.expect_symbol(")", "a closing parenthesis")?;
            inner
        } else {
            self.predicate()?
        };
        self.depth -= 1;
        Ok(expr)
    }

    fn predicate(&mut self) -> Result<Expr, FilterError> {
        let column = match self.peek() {
            Some(Token::Word(word)) if !is_keyword(word) => word.to_ascii_lowercase(),
            Some(Token::Quoted(name)) => name.clone(),
            _ => return Err(self.unexpected("a column name")),
        };
        self.next += 1;
        if let Some(Token::Symbol(op)) = self.peek() {
            let op = *op;
            if !matches!(op, "(" | ")" | ",") {
                self.next += 1;
                let op = if op == "!=" { "<>" } else { op };
                return Ok(Expr::Compare(column, op, self.literal()?));
            }
            if op == "(" {
                return Err(self.unexpected("an operator after the column (no function calls)"));
            }
        }
        if self.keyword("IS") {
            let negated = self.keyword("NOT");
            if !self.keyword("NULL") {
                return Err(self.unexpected("NULL"));
            }
            return Ok(Expr::IsNull(column, negated));
        }
        let negated = self.keyword("NOT");
        if self.keyword("IN") {
            self.expect_symbol("(", "a parenthesis opening the IN list")?;
            let mut values = vec![self.literal()?];
            while self.symbol(",") {
                values.push(self.literal()?);
            }
            self.expect_symbol(")", "a comma or the parenthesis closing the IN list")?;
            return Ok(Expr::In(column, negated, values));
        }
        if self.keyword("BETWEEN") {
            let low = self.literal()?;
            if !self.keyword("AND") {
                return Err(self.unexpected("AND"));
            }
            return Ok(Expr::Between(column, negated, low, self.literal()?));
        }
        if self.keyword("LIKE") {
            return match self.peek() {
                Some(Token::Text(pattern)) => {
                    let pattern = pattern.clone();
                    self.next += 1;
                    Ok(Expr::Like(column, negated, pattern))
                }
                _ => Err(self.unexpected("a 'string' pattern")),
            };
        }
        Err(self.unexpected("an operator, IN, BETWEEN, LIKE or IS after the column"))
    }

    /// A literal, as the text bound for it.
    fn literal(&mut self) -> Result<String, FilterError> {
        let value = match self.peek() {
            Some(Token::Text(text) | Token::Number(text)) => text.clone(),
            Some(Token::Word(word))
                if word.eq_ignore_ascii_case("true") || word.eq_ignore_ascii_case("false") =>
            {
                word.to_ascii_lowercase()
            }
            _ => return Err(self.unexpected("a literal: 'text', a number, true or false")),
        };
        self.next += 1;
        Ok(value)
    }
}

/// Words that cannot be a column name unquoted.
fn is_keyword(word: &str) -> bool {
    [
        "and", "or", "not", "in", "is", "null", "between", "like", "true", "false",
    ]
    .iter()
    .any(|k| word.eq_ignore_ascii_case(k))
}

/// Renders an expression.
struct Sql<'a> {
    table: &'a str,
    known: &'a [String],
    text: String,
    params: Vec<String>,
    first: usize,
}

impl Sql<'_> {
    fn column(&mut self, column: &str) -> Result<(), FilterError> {
        if !self.known.iter().any(|k| k == column) {
            return Err(FilterError::UnknownColumn {
                table: self.table.to_owned(),
                column: column.to_owned(),
            });
        }
        self.text.push_str(&quote_identifier(column));
        Ok(())
    }

    fn param(&mut self, value: &str) {
        self.text
            .push_str(&format!("${}", self.first + self.params.len()));
        self.params.push(value.to_owned());
    }

    fn joined(&mut self, terms: &[Expr], by: &str) -> Result<(), FilterError> {
        self.text.push('(');
        for (i, term) in terms.iter().enumerate() {
            if i > 0 {
                self.text.push_str(by);
            }
            self.expr(term)?;
        }
        self.text.push(')');
        Ok(())
    }

    fn expr(&mut self, expr: &Expr) -> Result<(), FilterError> {
        let not = |negated: bool| if negated { " NOT" } else { "" };
        match expr {
            Expr::Or(terms) => self.joined(terms, " OR ")?,
            Expr::And(terms) => self.joined(terms, " AND ")?,
            Expr::Not(inner) => {
                self.text.push_str("(NOT ");
                self.expr(inner)?;
                self.text.push(')');
            }
            Expr::Compare(column, op, value) => {
                self.text.push('(');
                self.column(column)?;
                self.text.push_str(&format!(" {op} "));
                self.param(value);
                self.text.push(')');
            }
            Expr::In(column, negated, values) => {
                self.text.push('(');
                self.column(column)?;
                self.text.push_str(&format!("{} IN (", not(*negated)));
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        self.text.push_str(", ");
                    }
                    self.param(value);
                }
                self.text.push_str("))");
            }
            Expr::Between(column, negated, low, high) => {
                self.text.push('(');
                self.column(column)?;
                self.text.push_str(&format!("{} BETWEEN ", not(*negated)));
                self.param(low);
                self.text.push_str(" AND ");
                self.param(high);
                self.text.push(')');
            }
            Expr::Like(column, negated, pattern) => {
                self.text.push('(');
                self.column(column)?;
                self.text.push_str(&format!("{} LIKE ", not(*negated)));
                self.param(pattern);
                self.text.push(')');
            }
            Expr::IsNull(column, negated) => {
                self.text.push('(');
                self.column(column)?;
                self.text.push_str(&format!(" IS{} NULL)", not(*negated)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(filter: &str) -> Result<(String, Vec<String>), FilterError> {
        let known = ["id", "color", "Brand", "v"].map(String::from);
        Filter::parse(filter)?.to_sql("public.t", &known, 3)
    }

    #[test]
    fn debezium_style_conditions_become_bound_parameters() {
        assert_eq!(
            sql("color='blue' AND \"Brand\" = 'It''s'").expect("parses"),
            (
                r#"(("color" = $3) AND ("Brand" = $4))"#.to_owned(),
                vec!["blue".to_owned(), "It's".to_owned()]
            )
        );
        assert_eq!(
            sql("NOT (v >= -1.5e3 OR id IN (1, 2)) and color is not null or v not between 1 and 2 or color not like 'b%' or v != TRUE").expect("parses").0,
            r#"(((NOT (("v" >= $3) OR ("id" IN ($4, $5)))) AND ("color" IS NOT NULL)) OR ("v" NOT BETWEEN $6 AND $7) OR ("color" NOT LIKE $8) OR ("v" <> $9))"#
        );
        assert_eq!(sql("ID = 1").expect("folds").0, r#"("id" = $3)"#);
    }

    #[test]
    fn anything_outside_the_grammar_is_refused_by_what_it_is() {
        for hostile in [
            "id = 1; DROP TABLE t",
            "id = 1 --",
            "id = 1 /* x */",
            "id = (SELECT 1)",
            "pg_sleep(10) IS NULL",
            "id = 1::int",
            "id = E'\\x'",
            "id = $1",
            "id = $$x$$",
            "1 = 1",
            "id = 'open",
            "id = 1 OR",
            "(id = 1",
            "id",
            "",
            "id IN ()",
            "id = 1.2.3",
            "true",
        ] {
            let refused = sql(hostile).expect_err(hostile);
            assert!(
                matches!(refused, FilterError::Syntax { .. }),
                "{hostile}: {refused}"
            );
            assert!(refused.to_string().starts_with("filter refused at byte"));
        }
        assert_eq!(
            sql("Brand = 'x'"),
            Err(FilterError::UnknownColumn {
                table: "public.t".into(),
                column: "brand".into()
            }),
            "unquoted folds to lower case"
        );
        assert!(sql("\"id\"\"; --\" = 1").is_err());
        assert!(matches!(sql(&"(".repeat(40)), Err(FilterError::TooBig(_))));
        assert!(matches!(
            sql(&format!("color = '{}'", "x".repeat(5000))),
            Err(FilterError::TooBig(_))
        ));
    }
}
