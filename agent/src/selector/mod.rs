//! Calico's label selector language: the libcalico-go v1 grammar plus the later `contains`,
//! `starts with`, `ends with` and `global()`.
//!
//! [`Selector::parse`] runs the [`tokenizer`], then the [`parser`], giving an [`ast::Node`];
//! [`Selector::matches`] evaluates it; `Display` prints the canonical form, which is also what
//! equality, hashing and [`Selector::unique_id`] are based on.

pub mod ast;
mod canonical;
mod error;
pub mod parser;
pub mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::OnceLock;

pub use ast::Node;
pub use error::ParseError;

/// A source of labels: a plain map, or an endpoint's effective labels computed lazily.
pub trait Labels {
    fn get(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl Labels for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
}

/// A parsed selector.
///
/// Two selectors are equal (and hash alike) exactly when their canonical forms are equal, so
/// `a=='x'` and `(a == "x")` are the same selector.
#[derive(Clone)]
pub struct Selector {
    root: Node,
    canonical: String,
    /// Computed on first use: most selectors are only ever matched.
    unique_id: OnceLock<String>,
}

impl Selector {
    /// Parses selector text; empty or blank text is `all()`.
    pub fn parse(input: &str) -> Result<Selector, ParseError> {
        parser::parse(input).map(Selector::from_node)
    }

    /// The selector that matches everything (`all()`, also the empty selector).
    pub fn all() -> Selector {
        Selector::from_node(Node::All)
    }

    fn from_node(root: Node) -> Selector {
        let canonical = root.to_string();
        Selector {
            root,
            canonical,
            unique_id: OnceLock::new(),
        }
    }

    /// Whether `labels` satisfy the selector. Allocation-free.
    pub fn matches(&self, labels: &dyn Labels) -> bool {
        self.root.evaluate(labels)
    }

    /// `"s:" + base64url_nopad(SHA224("s:" + canonical))`, as libcalico-go.
    pub fn unique_id(&self) -> String {
        self.unique_id
            .get_or_init(|| canonical::unique_id(&self.canonical))
            .clone()
    }

    /// True when the selector is literally `all()` or `global()` (after dropping parentheses
    /// and double negations), i.e. matches every label set without looking at any. A selector
    /// that is always true only by logic, such as `has(a) || !has(a)`, is not detected.
    pub fn is_all(&self) -> bool {
        matches!(self.root, Node::All | Node::Global)
    }

    /// Every label key the selector reads, sorted and without repeats. Labels not listed here
    /// cannot change the selector's verdict.
    pub fn label_keys(&self) -> impl Iterator<Item = &str> + '_ {
        let mut keys = Vec::new();
        self.root.for_each_label(&mut |key| keys.push(key));
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
    }

    /// The same selector with `prefix` put in front of every label key, as libcalico-go's
    /// `PrefixVisitor` (e.g. `k == "v"` with `visited/` gives `visited/k == "v"`).
    pub fn prefix_labels(&self, prefix: &str) -> Selector {
        let mut root = self.root.clone();
        root.rename_labels(&mut |key| format!("{prefix}{key}"));
        Selector::from_node(root)
    }

    /// The parsed expression.
    pub fn root(&self) -> &Node {
        &self.root
    }
}

/// The canonical string form.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Selector").field(&self.canonical).finish()
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Selector) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for Selector {}

impl Hash for Selector {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

impl FromStr for Selector {
    type Err = ParseError;

    fn from_str(input: &str) -> Result<Selector, ParseError> {
        Selector::parse(input)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn all_and_empty_are_the_same_selector() {
        let empty = Selector::parse("").unwrap();
        assert_eq!(empty, Selector::all());
        assert_eq!(empty.to_string(), "all()");
        assert_eq!(
            empty.unique_id(),
            "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
        );
        assert!(empty.is_all());
    }

    #[test]
    fn equality_follows_the_canonical_form() {
        let a = Selector::parse("a=='x'").unwrap();
        let b = Selector::parse(" ( a == \"x\" ) ").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, Selector::parse("a == 'y'").unwrap());
    }

    #[test]
    fn is_all_sees_through_parentheses_and_double_negation() {
        for text in ["all()", "(all())", "!!all()", "global()"] {
            assert!(Selector::parse(text).unwrap().is_all(), "{text}");
        }
        for text in ["!all()", "has(a) || all()"] {
            assert!(!Selector::parse(text).unwrap().is_all(), "{text}");
        }
    }

    #[test]
    fn label_keys_are_sorted_and_unique() {
        let sel =
            Selector::parse("(z == 'a' || has(b)) && !z in {'q'} && m starts with 'x'").unwrap();
        assert_eq!(sel.label_keys().collect::<Vec<_>>(), ["b", "m", "z"]);
        assert_eq!(Selector::all().label_keys().count(), 0);
    }

    #[test]
    fn has_is_true_for_an_empty_value_and_negatives_for_absent_labels() {
        let l = labels(&[("a", "")]);
        assert!(Selector::parse("has(a)").unwrap().matches(&l));
        assert!(Selector::parse("a == ''").unwrap().matches(&l));
        assert!(Selector::parse("b != 'x'").unwrap().matches(&l));
        assert!(Selector::parse("b not in {'x'}").unwrap().matches(&l));
        assert!(!Selector::parse("b contains ''").unwrap().matches(&l));
        assert!(Selector::parse("a contains ''").unwrap().matches(&l));
    }

    #[test]
    fn works_with_hash_maps_too() {
        let l: HashMap<String, String> = labels(&[("a", "b")]).into_iter().collect();
        assert!(Selector::parse("a == 'b'").unwrap().matches(&l));
    }

    #[test]
    fn prefix_labels_keeps_values() {
        let sel = Selector::parse("a in {'b'} || has(c)").unwrap();
        assert_eq!(
            sel.prefix_labels("p/").to_string(),
            "(p/a in {\"b\"} || has(p/c))"
        );
    }
}
