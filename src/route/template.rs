//! `${name}` templates for topics, CloudEvents sources and schema URIs, parsed once at start so a
//! misspelt variable is a configuration error, not a runtime surprise.

/// A parsed template: literal text and variables, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

/// A template that does not parse, or names a variable that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${` without its `}`.
    #[error("template {template:?}: \"${{\" without a closing \"}}\"")]
    Unclosed {
        /// The template.
        template: String,
    },
    /// A variable outside the allowed set.
    #[error("template {template:?}: unknown variable ${{{name}}}; allowed: {allowed}")]
    Unknown {
        /// The template.
        template: String,
        /// The variable.
        name: String,
        /// The allowed variables, comma-separated.
        allowed: String,
    },
}

impl Template {
    /// Parses `text`, allowing only the variables in `allowed`.
    pub fn parse(text: &str, allowed: &[&str]) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| TemplateError::Unclosed {
                template: text.to_owned(),
            })?;
            let name = &after[..end];
            if !allowed.contains(&name) {
                return Err(TemplateError::Unknown {
                    template: text.to_owned(),
                    name: name.to_owned(),
                    allowed: allowed
                        .iter()
                        .map(|a| format!("${{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            parts.push(Part::Variable(name.to_owned()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The text with each variable replaced by `value(name)`; `None` when a variable has no value.
    pub fn render<'a>(&self, value: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(name) => out.push_str(value(name)?),
            }
        }
        Some(out)
    }

    /// Whether the template uses variable `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Variable(v) if v == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_variables_and_literals() {
        let template =
            Template::parse("outbox.event.${aggregatetype}", &["aggregatetype"]).expect("parses");
        assert_eq!(
            template.render(|n| (n == "aggregatetype").then_some("order")),
            Some("outbox.event.order".into())
        );
        assert!(template.uses("aggregatetype"));
        let plain = Template::parse("fixed", &[]).expect("parses");
        assert_eq!(plain.render(|_| None), Some("fixed".into()));
        let two = Template::parse("${a}.${b}", &["a", "b"]).expect("parses");
        assert_eq!(
            two.render(|n| Some(if n == "a" { "x" } else { "y" })),
            Some("x.y".into())
        );
        assert_eq!(two.render(|n| (n == "a").then_some("x")), None);
    }

    #[test]
    fn unknown_or_unclosed_variables_are_errors_naming_the_allowed_ones() {
        let error = Template::parse("t.${aggregate}", &["aggregatetype", "table"])
            .expect_err("unknown variable");
        let text = error.to_string();
        assert!(text.contains("${aggregate}"), "{text}");
        assert!(text.contains("${aggregatetype}, ${table}"), "{text}");
        assert!(matches!(
            Template::parse("t.${table", &["table"]),
            Err(TemplateError::Unclosed { .. })
        ));
    }
}
