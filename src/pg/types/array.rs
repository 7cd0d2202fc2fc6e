//! PostgreSQL array literals (`{1,2,NULL}`, `{{"a b","c\"d"},{e,f}}`, `[0:1]={x,y}`) to nested
//! lists of element texts.

/// One parsed element: NULL, a text to convert by the element type, or a nested array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    /// The unquoted word NULL.
    Null,
    /// An element's text, unquoted and unescaped.
    Text(String),
    /// A sub-array of a multi-dimensional array.
    Array(Vec<Element>),
}

/// Parses an array literal with element delimiter `delim`; `None` if it is malformed.
pub fn parse(text: &str, delim: char) -> Option<Vec<Element>> {
    // Explicit bounds, `[1:3]={...}` or `[0:1][1:2]={...}`: the elements are what follows `=`.
    let body = if text.starts_with('[') {
        &text[text.find('=')? + 1..]
    } else {
        text
    };
    let mut chars = body.chars().peekable();
    let elements = parse_array(&mut chars, delim)?;
    chars.next().is_none().then_some(elements)
}

fn parse_array(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    delim: char,
) -> Option<Vec<Element>> {
    if chars.next()? != '{' {
        return None;
    }
    let mut elements = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(elements);
    }
    loop {
        let element = match chars.peek()? {
            '{' => Element::Array(parse_array(chars, delim)?),
            '"' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => text.push(chars.next()?),
                        c => text.push(c),
                    }
                }
                Element::Text(text)
            }
            _ => {
                let mut text = String::new();
                while let Some(&c) = chars.peek() {
                    if c == delim || c == '}' {
                        break;
                    }
                    chars.next();
                    if c == '\\' {
                        text.push(chars.next()?);
                    } else {
                        text.push(c);
                    }
                }
                let text = text.trim().to_owned();
                if text.eq_ignore_ascii_case("NULL") {
                    Element::Null
                } else {
                    Element::Text(text)
                }
            }
        };
        elements.push(element);
        match chars.next()? {
            '}' => return Some(elements),
            c if c == delim => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Element::{Array, Null, Text};
    use super::*;

    fn t(s: &str) -> Element {
        Text(s.into())
    }

    #[test]
    fn parses_flat_nested_quoted_and_null_elements() {
        assert_eq!(parse("{}", ','), Some(vec![]));
        assert_eq!(parse("{1,2,NULL}", ','), Some(vec![t("1"), t("2"), Null]));
        assert_eq!(
            parse(r#"{"a b","c\"d","NULL",e\,f}"#, ','),
            Some(vec![t("a b"), t("c\"d"), t("NULL"), t("e,f")])
        );
        assert_eq!(
            parse("{{1,2},{3,4}}", ','),
            Some(vec![
                Array(vec![t("1"), t("2")]),
                Array(vec![t("3"), t("4")])
            ])
        );
        assert_eq!(parse("[0:1]={x,y}", ','), Some(vec![t("x"), t("y")]));
        assert_eq!(
            parse("{(1,2),(0,0);(3,3),(1,1)}", ';'),
            Some(vec![t("(1,2),(0,0)"), t("(3,3),(1,1)")])
        );
        assert_eq!(parse("{é,\"ü ß\"}", ','), Some(vec![t("é"), t("ü ß")]));
    }

    #[test]
    fn refuses_malformed_literals() {
        for bad in ["", "{", "{1,2", "{\"a}", "1,2", "{1}x"] {
            assert_eq!(parse(bad, ','), None, "{bad:?}");
        }
    }
}
