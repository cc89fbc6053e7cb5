//! OData `$filter`, as far as the simulator understands it: `property eq 'literal'` clauses joined
//! by `or`, optionally in parentheses — the lookups Graph supports on directory objects without
//! advanced query parameters (<https://learn.microsoft.com/en-us/graph/aad-advanced-queries>, "Option 1").
//!
//! String literals are single-quoted and a quote inside is written twice (`'O''Brien'`), as OData
//! specifies. Keywords (`eq`, `or`) and property names are matched ignoring case, as Graph does.
//! Anything else well-formed (`and`, `ne`, `startsWith(…)`, `in`, non-string literals) is
//! refused as unsupported rather than guessed at.

use std::fmt;

/// One `property eq 'value'` comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause {
    /// The property as written.
    pub(crate) property: String,
    /// The literal, unescaped.
    pub(crate) value: String,
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FilterError {
    /// Not a well-formed expression: Graph answers 400 `BadRequest` "Invalid filter clause".
    Syntax(String),
    /// Well-formed, but beyond what the simulator (or Graph without advanced query parameters)
    /// supports: 400 `Request_UnsupportedQuery`.
    Unsupported(String),
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax(d) | Self::Unsupported(d) => f.write_str(d),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
    Comma,
}

fn tokenize(input: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            ',' => tokens.push(Token::Comma),
            '\'' => {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\'')) if chars.peek().is_some_and(|(_, n)| *n == '\'') => {
                            chars.next();
                            value.push('\'');
                        }
                        Some((_, '\'')) => break,
                        Some((_, ch)) => value.push(ch),
                        None => {
                            return Err(FilterError::Syntax(format!(
                                "unterminated string literal at position {at}"
                            )));
                        }
                    }
                }
                tokens.push(Token::Str(value));
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '.' | '/' | '$' | '-' | ':' | '@') => {
                let mut word = String::from(c);
                while let Some(&(_, n)) = chars.peek() {
                    if n.is_alphanumeric() || matches!(n, '_' | '.' | '/' | '$' | '-' | ':' | '@') {
                        word.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(word));
            }
            other => {
                return Err(FilterError::Syntax(format!(
                    "unexpected character '{other}' at position {at}"
                )));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    /// `term ('or' term)*`
    fn disjunction(&mut self, out: &mut Vec<Clause>) -> Result<(), FilterError> {
        self.term(out)?;
        loop {
            if self.keyword("or") {
                self.next();
                self.term(out)?;
            } else if self.keyword("and") {
                return Err(FilterError::Unsupported("the 'and' operator".into()));
            } else {
                return Ok(());
            }
        }
    }

    /// `'(' disjunction ')' | property 'eq' literal`
    fn term(&mut self, out: &mut Vec<Clause>) -> Result<(), FilterError> {
        match self.next() {
            Some(Token::Open) => {
                self.disjunction(out)?;
                match self.next() {
                    Some(Token::Close) => Ok(()),
                    _ => Err(FilterError::Syntax("missing ')'".into())),
                }
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("not") => {
                Err(FilterError::Unsupported("the 'not' operator".into()))
            }
            Some(Token::Word(property)) => {
                if self.peek() == Some(&Token::Open) {
                    return Err(FilterError::Unsupported(format!("the function '{property}'")));
                }
                let operator = match self.next() {
                    Some(Token::Word(op)) => op,
                    _ => return Err(FilterError::Syntax(format!("no operator after '{property}'"))),
                };
                if !operator.eq_ignore_ascii_case("eq") {
                    return match operator.to_ascii_lowercase().as_str() {
                        "ne" | "gt" | "ge" | "lt" | "le" | "in" | "has" => {
                            Err(FilterError::Unsupported(format!("the '{operator}' operator")))
                        }
                        _ => Err(FilterError::Syntax(format!("unknown operator '{operator}'"))),
                    };
                }
                match self.next() {
                    Some(Token::Str(value)) => {
                        out.push(Clause { property, value });
                        Ok(())
                    }
                    Some(Token::Word(literal)) => Err(FilterError::Unsupported(format!(
                        "the non-string literal '{literal}' compared with '{property}'"
                    ))),
                    _ => Err(FilterError::Syntax(format!("no value after '{property} eq'"))),
                }
            }
            Some(Token::Str(_)) => Err(FilterError::Syntax("a literal where a property was expected".into())),
            Some(Token::Close | Token::Comma) | None => Err(FilterError::Syntax("an incomplete expression".into())),
        }
    }
}

/// Parses `p eq 'v' or q eq 'w' …` into its clauses, in order.
pub(crate) fn parse(filter: &str) -> Result<Vec<Clause>, FilterError> {
    let mut parser = Parser {
        tokens: tokenize(filter)?,
        at: 0,
    };
    let mut clauses = Vec::new();
    parser.disjunction(&mut clauses)?;
    if parser.at < parser.tokens.len() {
        return Err(FilterError::Syntax("unexpected text after the expression".into()));
    }
    Ok(clauses)
}

/// Writes `value` as an OData string literal: quoted, with `'` doubled.
#[cfg(test)]
pub(crate) fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(p: &str, v: &str) -> Clause {
        Clause {
            property: p.into(),
            value: v.into(),
        }
    }

    #[test]
    fn eq_clauses_joined_by_or_parse_with_doubled_quotes() {
        assert_eq!(
            parse("displayName eq 'Golf Assist'"),
            Ok(vec![clause("displayName", "Golf Assist")])
        );
        assert_eq!(
            parse("userPrincipalName eq 'a@b.com' OR (mail eq 'a@b.com')"),
            Ok(vec![clause("userPrincipalName", "a@b.com"), clause("mail", "a@b.com")])
        );
        assert_eq!(
            parse(&format!("displayName eq {}", literal("Women's Network"))),
            Ok(vec![clause("displayName", "Women's Network")])
        );
        assert_eq!(parse("displayName eq ''''"), Ok(vec![clause("displayName", "'")]));
    }

    #[test]
    fn malformed_filters_are_syntax_errors() {
        for bad in [
            "",
            "displayName eq 'open",
            "displayName eq",
            "displayName 'x'",
            "(displayName eq 'x'",
            "displayName eq 'x' trailing",
            "displayName eq 'x' or",
            "'x' eq displayName",
        ] {
            assert!(matches!(parse(bad), Err(FilterError::Syntax(_))), "{bad:?}");
        }
    }

    #[test]
    fn other_operators_and_functions_are_unsupported() {
        for other in [
            "displayName ne 'x'",
            "startswith(displayName,'x')",
            "displayName eq 'x' and mail eq 'y'",
            "not (displayName eq 'x')",
            "accountEnabled eq true",
        ] {
            assert!(matches!(parse(other), Err(FilterError::Unsupported(_))), "{other:?}");
        }
    }
}
