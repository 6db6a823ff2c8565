//! The parsed form of a selector and its evaluation against labels.

use super::Labels;

/// A selector expression, as the parser builds it.
///
/// Runs of `!` are already collapsed (at most one `Not` wraps an operand), `And`/`Or` hold at
/// least two operands each, and set values are sorted and de-duplicated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// `all()`, also what the empty selector means.
    All,
    /// `global()`: in this dataplane every endpoint is "global", so it matches like `all()`.
    Global,
    /// `has(label)`: the label is present, whatever its value (even `""`).
    Has(String),
    /// `label <op> "value"`.
    Compare {
        label: String,
        op: CompareOp,
        value: String,
    },
    /// `label in {...}` / `label not in {...}`; `values` sorted, without duplicates.
    Set {
        label: String,
        op: SetOp,
        values: Vec<String>,
    },
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

/// Operators comparing one label with one string literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetOp {
    In,
    NotIn,
}

impl Node {
    /// Whether `labels` satisfy this expression. Never allocates: it sits in the policy
    /// compiler's innermost loop.
    pub fn evaluate(&self, labels: &dyn Labels) -> bool {
        match self {
            Node::All | Node::Global => true,
            Node::Has(label) => labels.get(label).is_some(),
            Node::Compare { label, op, value } => {
                let actual = labels.get(label);
                match op {
                    // The negative forms are true when the label is absent.
                    CompareOp::Ne => actual != Some(value.as_str()),
                    CompareOp::Eq => actual == Some(value.as_str()),
                    CompareOp::Contains => actual.is_some_and(|a| a.contains(value.as_str())),
                    CompareOp::StartsWith => actual.is_some_and(|a| a.starts_with(value.as_str())),
                    CompareOp::EndsWith => actual.is_some_and(|a| a.ends_with(value.as_str())),
                }
            }
            Node::Set { label, op, values } => {
                let member = labels.get(label).is_some_and(|actual| {
                    values.binary_search_by(|v| v.as_str().cmp(actual)).is_ok()
                });
                match op {
                    SetOp::In => member,
                    SetOp::NotIn => !member,
                }
            }
            Node::Not(operand) => !operand.evaluate(labels),
            Node::And(operands) => operands.iter().all(|o| o.evaluate(labels)),
            Node::Or(operands) => operands.iter().any(|o| o.evaluate(labels)),
        }
    }

    /// Calls `visit` with every label key the expression reads, in textual order (repeats
    /// included).
    pub fn for_each_label<'a>(&'a self, visit: &mut dyn FnMut(&'a str)) {
        match self {
            Node::All | Node::Global => {}
            Node::Has(label) | Node::Compare { label, .. } | Node::Set { label, .. } => {
                visit(label)
            }
            Node::Not(operand) => operand.for_each_label(visit),
            Node::And(operands) | Node::Or(operands) => {
                for operand in operands {
                    operand.for_each_label(visit);
                }
            }
        }
    }

    /// Rewrites every label key in place with `rename`.
    pub fn rename_labels(&mut self, rename: &mut dyn FnMut(&str) -> String) {
        match self {
            Node::All | Node::Global => {}
            Node::Has(label) | Node::Compare { label, .. } | Node::Set { label, .. } => {
                *label = rename(label);
            }
            Node::Not(operand) => operand.rename_labels(rename),
            Node::And(operands) | Node::Or(operands) => {
                for operand in operands {
                    operand.rename_labels(rename);
                }
            }
        }
    }
}
