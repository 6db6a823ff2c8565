//! Splits a selector into tokens, as libcalico-go's tokenizer does.
//!
//! The v1 rules (reference §2.1) are kept exactly, including their quirks: only space and tab
//! separate tokens, string literals have no escapes, and the word patterns are tried in the
//! order `has(...)`, `not in`, `in`, `all()`, label — so a label spelled `in` or starting with
//! `in` followed by a non-word character (`in-x`) comes out as the `in` operator.
//!
//! Later Calico added `global()` and the operators `contains`, `starts with`, `ends with`.
//! Those words are only operators right after a label (so `contains contains "x"` is a label,
//! then the operator), and right after a label nothing but an operator may follow: an unknown
//! word there (`label squiggles "v"`, `label starts foo "v"`) is a tokenizer error.

use std::fmt;

use super::error::ParseError;

/// Longest label key the tokenizer takes in one token (`[a-zA-Z0-9_./-]{1,512}`).
pub const MAX_LABEL_LEN: usize = 512;

/// What a token is, borrowing its text from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind<'a> {
    Label(&'a str),
    StringLiteral(&'a str),
    /// `has(label)`, carrying the label.
    Has(&'a str),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    Not,
    And,
    Or,
    LParen,
    RParen,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    All,
    Global,
    Eof,
}

/// A token and the byte offset where it starts in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind<'a>,
    pub position: usize,
}

/// The notation of the conformance vectors: `Label(a)`, `StringLiteral(b)`, `Has(x)`, `Eq`, `EOF`.
impl fmt::Display for TokenKind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::Label(label) => write!(f, "Label({label})"),
            TokenKind::StringLiteral(value) => write!(f, "StringLiteral({value})"),
            TokenKind::Has(label) => write!(f, "Has({label})"),
            TokenKind::LBrace => f.write_str("LBrace"),
            TokenKind::RBrace => f.write_str("RBrace"),
            TokenKind::Comma => f.write_str("Comma"),
            TokenKind::Eq => f.write_str("Eq"),
            TokenKind::Ne => f.write_str("Ne"),
            TokenKind::Not => f.write_str("Not"),
            TokenKind::And => f.write_str("And"),
            TokenKind::Or => f.write_str("Or"),
            TokenKind::LParen => f.write_str("LParen"),
            TokenKind::RParen => f.write_str("RParen"),
            TokenKind::In => f.write_str("In"),
            TokenKind::NotIn => f.write_str("NotIn"),
            TokenKind::Contains => f.write_str("Contains"),
            TokenKind::StartsWith => f.write_str("StartsWith"),
            TokenKind::EndsWith => f.write_str("EndsWith"),
            TokenKind::All => f.write_str("All"),
            TokenKind::Global => f.write_str("Global"),
            TokenKind::Eof => f.write_str("EOF"),
        }
    }
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

/// Renders tokens space-separated, as the conformance vectors write them.
pub fn tokens_to_string(tokens: &[Token<'_>]) -> String {
    let rendered: Vec<String> = tokens.iter().map(ToString::to_string).collect();
    rendered.join(" ")
}

/// Tokenizes `input`; the result always ends with an `Eof` token positioned at `input.len()`.
pub fn tokenize(input: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let bytes = input.as_bytes();
    let mut tokens: Vec<Token<'_>> = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_separator(bytes[pos]) {
            pos += 1;
        }
        let Some(&first) = bytes.get(pos) else {
            tokens.push(Token {
                kind: TokenKind::Eof,
                position: input.len(),
            });
            return Ok(tokens);
        };
        let rest = &bytes[pos..];
        let (kind, len) = match first {
            b'(' => (TokenKind::LParen, 1),
            b')' => (TokenKind::RParen, 1),
            b'{' => (TokenKind::LBrace, 1),
            b'}' => (TokenKind::RBrace, 1),
            b',' => (TokenKind::Comma, 1),
            b'"' | b'\'' => {
                // No escapes: the literal ends at the next identical quote.
                let Some(close) = rest[1..].iter().position(|&b| b == first) else {
                    return Err(ParseError::new(pos, "unterminated string"));
                };
                let value = &input[pos + 1..pos + 1 + close];
                (TokenKind::StringLiteral(value), close + 2)
            }
            b'=' => match rest.get(1) {
                Some(b'=') => (TokenKind::Eq, 2),
                _ => return Err(ParseError::new(pos, "expected ==")),
            },
            b'!' => match rest.get(1) {
                Some(b'=') => (TokenKind::Ne, 2),
                _ => (TokenKind::Not, 1),
            },
            b'&' => match rest.get(1) {
                Some(b'&') => (TokenKind::And, 2),
                _ => return Err(ParseError::new(pos, "expected &&")),
            },
            b'|' => match rest.get(1) {
                Some(b'|') => (TokenKind::Or, 2),
                _ => return Err(ParseError::new(pos, "expected ||")),
            },
            _ => match tokens.last().map(|t| t.kind) {
                Some(TokenKind::Label(label)) => match operator_after_label(rest) {
                    Some(found) => found,
                    None => {
                        return Err(ParseError::new(
                            pos,
                            format!(
                                "unexpected characters after label '{label}', was expecting an operator"
                            ),
                        ));
                    }
                },
                _ => match word(input, pos) {
                    Some(found) => found,
                    None => return Err(ParseError::new(pos, "unexpected characters")),
                },
            },
        };
        tokens.push(Token {
            kind,
            position: pos,
        });
        pos += len;
    }
}

/// Whitespace between tokens: space and tab only, as upstream.
fn is_separator(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Go's `\s` (used inside upstream's `has(...)`, `all()`, `not in` patterns): wider than the
/// separator set, so `has(\na)` is accepted while a newline between tokens is not.
fn is_regex_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

/// Go's `\b` is an ASCII word boundary; `[a-zA-Z0-9_]` are the word characters.
fn is_word_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Length of the run of label characters at the start of `bytes` (not capped).
fn label_run(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|&&b| is_label_char(b)).count()
}

fn skip_regex_space(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && is_regex_space(bytes[at]) {
        at += 1;
    }
    at
}

/// Matches `keyword` at `at`; returns the offset just after it.
fn keyword(bytes: &[u8], at: usize, keyword: &str) -> Option<usize> {
    let end = at + keyword.len();
    (bytes.get(at..end)? == keyword.as_bytes()).then_some(end)
}

/// True if a word boundary (`\b` after a word character) is at `at`.
fn word_ends_at(bytes: &[u8], at: usize) -> bool {
    bytes.get(at).is_none_or(|&b| !is_word_char(b))
}

/// `not\s*in\b`; returns the matched length.
fn not_in(bytes: &[u8]) -> Option<usize> {
    let after_not = keyword(bytes, 0, "not")?;
    let end = keyword(bytes, skip_regex_space(bytes, after_not), "in")?;
    word_ends_at(bytes, end).then_some(end)
}

/// `in\b`.
fn in_op(bytes: &[u8]) -> Option<usize> {
    let end = keyword(bytes, 0, "in")?;
    word_ends_at(bytes, end).then_some(end)
}

/// `name\(\s*\)`, for `all()` and `global()`.
fn empty_call(bytes: &[u8], name: &str) -> Option<usize> {
    let open = keyword(bytes, 0, name)?;
    let after_open = keyword(bytes, open, "(")?;
    keyword(bytes, skip_regex_space(bytes, after_open), ")")
}

/// `has\(\s*(label)\s*\)`; returns the label's range and the matched length.
fn has(bytes: &[u8]) -> Option<(usize, usize, usize)> {
    let open = keyword(bytes, 0, "has(")?;
    let label_start = skip_regex_space(bytes, open);
    let label_len = label_run(&bytes[label_start..]);
    // A longer run cannot be shortened to fit: the next character would not be `\s` or `)`.
    if label_len == 0 || label_len > MAX_LABEL_LEN {
        return None;
    }
    let label_end = label_start + label_len;
    let end = keyword(bytes, skip_regex_space(bytes, label_end), ")")?;
    Some((label_start, label_end, end))
}

/// A word-like token where an operand may start, trying upstream's patterns in its order.
fn word(input: &str, pos: usize) -> Option<(TokenKind<'_>, usize)> {
    let rest = &input.as_bytes()[pos..];
    if let Some((start, end, len)) = has(rest) {
        return Some((TokenKind::Has(&input[pos + start..pos + end]), len));
    }
    if let Some(len) = not_in(rest) {
        return Some((TokenKind::NotIn, len));
    }
    if let Some(len) = in_op(rest) {
        return Some((TokenKind::In, len));
    }
    if let Some(len) = empty_call(rest, "all") {
        return Some((TokenKind::All, len));
    }
    if let Some(len) = empty_call(rest, "global") {
        return Some((TokenKind::Global, len));
    }
    let len = label_run(rest).min(MAX_LABEL_LEN);
    (len > 0).then(|| (TokenKind::Label(&input[pos..pos + len]), len))
}

/// The operator words allowed right after a label.
fn operator_after_label(rest: &[u8]) -> Option<(TokenKind<'static>, usize)> {
    if let Some(len) = not_in(rest) {
        return Some((TokenKind::NotIn, len));
    }
    if let Some(len) = in_op(rest) {
        return Some((TokenKind::In, len));
    }
    if let Some(len) = operator_word(rest, "contains", None) {
        return Some((TokenKind::Contains, len));
    }
    if let Some(len) = operator_word(rest, "starts", Some("with")) {
        return Some((TokenKind::StartsWith, len));
    }
    if let Some(len) = operator_word(rest, "ends", Some("with")) {
        return Some((TokenKind::EndsWith, len));
    }
    None
}

/// `first` (then any whitespace, then `second`), not run on into a longer label: `containsx`
/// is not `contains` followed by `x`.
fn operator_word(bytes: &[u8], first: &str, second: Option<&str>) -> Option<usize> {
    let mut end = keyword(bytes, 0, first)?;
    if let Some(second) = second {
        end = keyword(bytes, skip_regex_space(bytes, end), second)?;
    }
    bytes
        .get(end)
        .is_none_or(|&b| !is_label_char(b))
        .then_some(end)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn render(input: &str) -> String {
        match tokenize(input) {
            Ok(tokens) => tokens_to_string(&tokens),
            Err(err) => format!("ERROR {err}"),
        }
    }

    #[test]
    fn label_starting_with_in_and_a_non_word_char_is_the_in_operator() {
        assert_eq!(render("in-x"), "In Label(-x) EOF");
        assert_eq!(render("index"), "Label(index) EOF");
        assert_eq!(render("a in-x"), "Label(a) In Label(-x) EOF");
    }

    #[test]
    fn has_uses_its_own_pattern_and_falls_back_to_a_label() {
        assert_eq!(render("has( a.b/c )"), "Has(a.b/c) EOF");
        assert_eq!(render("has(\na)"), "Has(a) EOF");
        // Not a `has(...)`: `has` becomes a label, `(` a paren, and `b` is a word after a label.
        assert_eq!(
            render("has(a b)"),
            "ERROR unexpected characters after label 'a', was expecting an operator at position 6"
        );
    }

    #[test]
    fn labels_are_cut_at_512_characters() {
        let long = "x".repeat(MAX_LABEL_LEN + 3);
        let tokens = tokenize(&long).unwrap_err();
        // The second chunk of the label follows a label, where only an operator may stand.
        assert_eq!(tokens.position, MAX_LABEL_LEN);
        let has_long = format!("has({long})");
        assert!(tokenize(&has_long).is_err());
    }

    #[test]
    fn newline_is_not_a_separator() {
        let err = tokenize("a == \"b\"\n").unwrap_err();
        assert_eq!(
            (err.position, err.message.as_str()),
            (8, "unexpected characters")
        );
    }

    #[test]
    fn error_positions() {
        let cases: &[(&str, usize, &str)] = &[
            ("a == \"b", 5, "unterminated string"),
            ("a == 'b\"", 5, "unterminated string"),
            ("a = \"b\"", 2, "expected =="),
            ("has(a) & has(b)", 7, "expected &&"),
            ("has(a) | has(b)", 7, "expected ||"),
            ("a == \"b\" && %", 12, "unexpected characters"),
            (
                "label starts foo \"v\"",
                6,
                "unexpected characters after label 'label', was expecting an operator",
            ),
        ];
        for &(input, position, message) in cases {
            let err = tokenize(input).unwrap_err();
            assert_eq!(
                (err.position, err.message.as_str()),
                (position, message),
                "{input}"
            );
        }
    }

    #[test]
    fn eof_is_at_the_end_of_input() {
        let tokens = tokenize("a == 'b'  ").unwrap();
        assert_eq!(tokens.last().map(|t| t.position), Some(10));
    }
}
