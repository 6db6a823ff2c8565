//! Recursive-descent parser over the tokenizer's output (reference §2.2), with libcalico-go's
//! error messages and the byte position of the offending token.
//!
//! ```text
//! selector := <empty> | or EOF
//! or       := and ( "||" and )*
//! and      := op ( "&&" op )*
//! op       := "!"* primary                 -- the run of "!" collapses to its parity
//! primary  := has(l) | all() | global()
//!           | l ("==" | "!=" | contains | starts with | ends with) STRING
//!           | l ("in" | "not in") "{" [ STRING ("," STRING)* [","] ] "}"
//!           | "(" or ")"
//! ```

use super::ast::{CompareOp, Node, SetOp};
use super::error::ParseError;
use super::tokenizer::{Token, TokenKind, tokenize};

/// Deepest nesting of parentheses accepted. Evaluation, printing and dropping recurse over the
/// tree, so a hostile selector of a million `(` must be refused rather than overflow the stack.
pub const MAX_NESTING: usize = 128;

/// Parses a selector; empty or blank input means `all()`.
pub fn parse(input: &str) -> Result<Node, ParseError> {
    let tokens = tokenize(input)?;
    let mut parser = Parser {
        tokens: &tokens,
        next: 0,
        depth: 0,
    };
    if parser.peek().kind == TokenKind::Eof {
        return Ok(Node::All);
    }
    let node = parser.or_expression()?;
    let rest = parser.peek();
    if rest.kind != TokenKind::Eof {
        return Err(ParseError::new(
            rest.position,
            "unexpected content at end of selector",
        ));
    }
    Ok(node)
}

struct Parser<'t, 'a> {
    /// Always ends with `Eof`; `next` never moves past it.
    tokens: &'t [Token<'a>],
    next: usize,
    depth: usize,
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Token<'a> {
        self.peek_at(0)
    }

    /// The token `ahead` places on, or the final `Eof` if that is past the end.
    fn peek_at(&self, ahead: usize) -> Token<'a> {
        let last = self.tokens.len() - 1;
        self.tokens[(self.next + ahead).min(last)]
    }

    fn advance(&mut self, count: usize) {
        self.next = (self.next + count).min(self.tokens.len() - 1);
    }

    fn or_expression(&mut self) -> Result<Node, ParseError> {
        let mut operands = vec![self.and_expression()?];
        while self.peek().kind == TokenKind::Or {
            self.advance(1);
            operands.push(self.and_expression()?);
        }
        Ok(single_or(operands, Node::Or))
    }

    fn and_expression(&mut self) -> Result<Node, ParseError> {
        let mut operands = vec![self.operation()?];
        while self.peek().kind == TokenKind::And {
            self.advance(1);
            operands.push(self.operation()?);
        }
        Ok(single_or(operands, Node::And))
    }

    fn operation(&mut self) -> Result<Node, ParseError> {
        let mut negated = false;
        while self.peek().kind == TokenKind::Not {
            negated = !negated;
            self.advance(1);
        }
        let node = self.primary()?;
        Ok(match (negated, node) {
            (false, node) => node,
            // `!(!x)`: the parentheses hid the second `!` from the collapse above. Upstream
            // keeps both and prints `!!x`, which reparses as `x` and so is not canonical;
            // cancelling them here keeps the canonical form a fixed point.
            (true, Node::Not(inner)) => *inner,
            (true, node) => Node::Not(Box::new(node)),
        })
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let token = self.peek();
        match token.kind {
            TokenKind::Has(label) => {
                self.advance(1);
                Ok(Node::Has(label.to_string()))
            }
            TokenKind::All => {
                self.advance(1);
                Ok(Node::All)
            }
            TokenKind::Global => {
                self.advance(1);
                Ok(Node::Global)
            }
            TokenKind::Label(label) => self.label_operation(label),
            TokenKind::LParen => {
                if self.depth == MAX_NESTING {
                    return Err(ParseError::new(
                        token.position,
                        format!("parentheses nested more than {MAX_NESTING} deep"),
                    ));
                }
                self.depth += 1;
                self.advance(1);
                let inner = self.or_expression()?;
                self.depth -= 1;
                let close = self.peek();
                if close.kind != TokenKind::RParen {
                    return Err(ParseError::new(close.position, "Expected )"));
                }
                self.advance(1);
                Ok(inner)
            }
            other => Err(ParseError::new(
                token.position,
                format!("Unexpected token: {other}"),
            )),
        }
    }

    /// `label <op> <operand>`, with the label at the current token.
    fn label_operation(&mut self, label: &str) -> Result<Node, ParseError> {
        // Upstream checks for the three tokens of an operation up front (EOF counts as one).
        if self.tokens.len() - self.next < 3 {
            let eof = self.tokens[self.tokens.len() - 1];
            return Err(ParseError::new(
                eof.position,
                "Unexpected end of string in middle of op",
            ));
        }
        let operator = self.peek_at(1);
        let compare = match operator.kind {
            TokenKind::Eq => Some(CompareOp::Eq),
            TokenKind::Ne => Some(CompareOp::Ne),
            TokenKind::Contains => Some(CompareOp::Contains),
            TokenKind::StartsWith => Some(CompareOp::StartsWith),
            TokenKind::EndsWith => Some(CompareOp::EndsWith),
            _ => None,
        };
        if let Some(op) = compare {
            let operand = self.peek_at(2);
            let TokenKind::StringLiteral(value) = operand.kind else {
                return Err(ParseError::new(operand.position, "Expected string"));
            };
            self.advance(3);
            return Ok(Node::Compare {
                label: label.to_string(),
                op,
                value: value.to_string(),
            });
        }
        let op = match operator.kind {
            TokenKind::In => SetOp::In,
            TokenKind::NotIn => SetOp::NotIn,
            other => {
                return Err(ParseError::new(
                    operator.position,
                    format!("Expected == or != not {other}"),
                ));
            }
        };
        let open = self.peek_at(2);
        if open.kind != TokenKind::LBrace {
            return Err(ParseError::new(open.position, "Expected set literal"));
        }
        self.advance(3);
        let values = self.set_values()?;
        Ok(Node::Set {
            label: label.to_string(),
            op,
            values,
        })
    }

    /// The inside of a set literal up to and including `}`: strings separated by commas, a
    /// trailing comma allowed. Returns the values sorted and de-duplicated.
    fn set_values(&mut self) -> Result<Vec<String>, ParseError> {
        let mut values = Vec::new();
        while let TokenKind::StringLiteral(value) = self.peek().kind {
            values.push(value.to_string());
            self.advance(1);
            if self.peek().kind != TokenKind::Comma {
                break;
            }
            self.advance(1);
        }
        let close = self.peek();
        if close.kind != TokenKind::RBrace {
            return Err(ParseError::new(close.position, "Expected }"));
        }
        self.advance(1);
        values.sort_unstable();
        values.dedup();
        Ok(values)
    }
}

/// A one-operand group is just that operand.
fn single_or(mut operands: Vec<Node>, group: fn(Vec<Node>) -> Node) -> Node {
    if operands.len() == 1
        && let Some(only) = operands.pop()
    {
        return only;
    }
    group(operands)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn error(input: &str) -> (usize, String) {
        let err = parse(input).expect_err(input);
        (err.position, err.message)
    }

    #[test]
    fn every_error_message_with_its_position() {
        let cases: &[(&str, usize, &str)] = &[
            // Tokenizer errors surface through the parser unchanged.
            ("\"FOO", 0, "unterminated string"),
            ("a == 'b", 5, "unterminated string"),
            ("a = 'b'", 2, "expected =="),
            ("%", 0, "unexpected characters"),
            ("a == \"b\" || %", 12, "unexpected characters"),
            ("foo == \"bar\" &", 13, "expected &&"),
            ("foo == \"bar\" |", 13, "expected ||"),
            // Parser errors.
            ("a ", 2, "Unexpected end of string in middle of op"),
            ("a", 1, "Unexpected end of string in middle of op"),
            ("a ==", 4, "Expected string"),
            ("foo != ||", 7, "Expected string"),
            ("a == has(b)", 5, "Expected string"),
            ("b contains b", 11, "Expected string"),
            ("foo in \"\"", 7, "Expected set literal"),
            ("a not in (", 9, "Expected set literal"),
            ("foo in {\"\", ||", 12, "Expected }"),
            ("a in {,}", 6, "Expected }"),
            ("a in {'x' 'y'}", 10, "Expected }"),
            ("a ( b", 2, "Expected == or != not LParen"),
            ("a, b", 1, "Expected == or != not Comma"),
            ("(a == \"foo\"", 11, "Expected )"),
            ("(has(a) has(b))", 8, "Expected )"),
            ("(", 1, "Unexpected token: EOF"),
            ("()", 1, "Unexpected token: RParen"),
            (")", 0, "Unexpected token: RParen"),
            ("!", 1, "Unexpected token: EOF"),
            ("has(foo) &&", 11, "Unexpected token: EOF"),
            ("'b1' == b", 0, "Unexpected token: StringLiteral(b1)"),
            ("has(a) has(b)", 7, "unexpected content at end of selector"),
            ("all() )", 6, "unexpected content at end of selector"),
        ];
        for &(input, position, message) in cases {
            assert_eq!(error(input), (position, message.to_string()), "{input:?}");
        }
    }

    #[test]
    fn display_puts_message_then_position() {
        let err = parse("a == 'b").unwrap_err();
        assert_eq!(err.to_string(), "unterminated string at position 5");
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!(
            "{}has(a){}",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert_eq!(parse(&ok), Ok(Node::Has("a".to_string())));
        let deep = format!(
            "{}has(a){}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert_eq!(error(&deep).0, MAX_NESTING);
        let hostile = "(".repeat(100_000);
        assert!(parse(&hostile).is_err());
    }

    #[test]
    fn runs_of_not_collapse_by_parity() {
        let has_a = Node::Has("a".to_string());
        assert_eq!(parse("!!has(a)"), Ok(has_a.clone()));
        assert_eq!(parse("! ! !has(a)"), Ok(Node::Not(Box::new(has_a.clone()))));
        assert_eq!(parse("!(!has(a))"), Ok(has_a.clone()));
        assert_eq!(parse("!(!(!has(a)))"), Ok(Node::Not(Box::new(has_a))));
    }

    #[test]
    fn set_literals_sort_dedup_and_allow_trailing_comma() {
        let node = parse("a in {'b', \"a\", 'b',}").unwrap();
        let Node::Set { values, .. } = node else {
            panic!("not a set: {node:?}")
        };
        assert_eq!(values, ["a", "b"]);
        assert!(parse("a not in {}").is_ok());
    }

    #[test]
    fn blank_input_is_all() {
        assert_eq!(parse(""), Ok(Node::All));
        assert_eq!(parse(" \t "), Ok(Node::All));
    }
}
