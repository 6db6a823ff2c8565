//! The canonical string form of a selector (libcalico-go's `String()`) and its unique ID.
//!
//! Two selectors with the same canonical form are the same selector: the form drops
//! whitespace, redundant parentheses and double negations, sorts set literals, and always
//! parenthesises `&&` / `||` groups so that it parses back to the same tree.

use std::fmt::{self, Write};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha224};

use super::ast::{CompareOp, Node, SetOp};

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::All => f.write_str("all()"),
            Node::Global => f.write_str("global()"),
            Node::Has(label) => write!(f, "has({label})"),
            Node::Compare { label, op, value } => {
                write!(f, "{label} {} ", compare_op_text(*op))?;
                write_literal(f, value)
            }
            Node::Set { label, op, values } => {
                let op = match op {
                    SetOp::In => "in",
                    SetOp::NotIn => "not in",
                };
                write!(f, "{label} {op} {{")?;
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_literal(f, value)?;
                }
                f.write_char('}')
            }
            // No parentheses of its own: an operand that needs them (And/Or) brings them.
            Node::Not(operand) => write!(f, "!{operand}"),
            Node::And(operands) => write_group(f, operands, " && "),
            Node::Or(operands) => write_group(f, operands, " || "),
        }
    }
}

fn compare_op_text(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "==",
        CompareOp::Ne => "!=",
        CompareOp::Contains => "contains",
        CompareOp::StartsWith => "starts with",
        CompareOp::EndsWith => "ends with",
    }
}

/// Literals have no escapes, so a value containing `"` must be single-quoted. (A value cannot
/// hold both quote characters: no literal could have produced it.)
fn write_literal(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    let quote = if value.contains('"') { '\'' } else { '"' };
    write!(f, "{quote}{value}{quote}")
}

fn write_group(f: &mut fmt::Formatter<'_>, operands: &[Node], separator: &str) -> fmt::Result {
    f.write_char('(')?;
    for (i, operand) in operands.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        write!(f, "{operand}")?;
    }
    f.write_char(')')
}

/// `"s:" + base64url_nopad(SHA224("s:" + canonical))`, libcalico-go's `hash.MakeUniqueID("s", ..)`.
pub fn unique_id(canonical: &str) -> String {
    let mut hasher = Sha224::new();
    hasher.update(b"s:");
    hasher.update(canonical.as_bytes());
    format!("s:{}", URL_SAFE_NO_PAD.encode(hasher.finalize()))
}
