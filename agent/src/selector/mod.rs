//! Calico's label selector language (libcalico-go v1 grammar plus the later `contains`,
//! `starts with`, `ends with` and `global()`): tokenizer, parser with error positions,
//! evaluator, canonical form and unique ID.
//!
//! PLACEHOLDER API: the implementation is being written; the signatures below are the
//! contract the rest of the agent uses.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    canonical: String,
}

/// Why a selector did not parse, and where (a 0-based byte offset into the input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at position {}", self.message, self.position)
    }
}

impl std::error::Error for ParseError {}

impl Selector {
    pub fn parse(input: &str) -> Result<Selector, ParseError> {
        Ok(Selector {
            canonical: input.to_string(),
        })
    }

    /// The selector that matches everything (`all()`, also the empty selector).
    pub fn all() -> Selector {
        Selector {
            canonical: "all()".to_string(),
        }
    }

    pub fn matches(&self, _labels: &dyn Labels) -> bool {
        true
    }

    /// `"s:" + base64url_nopad(SHA224("s:" + canonical))`, as libcalico-go.
    pub fn unique_id(&self) -> String {
        String::new()
    }
}

/// The canonical string form.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}
