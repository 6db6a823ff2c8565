//! Property tests of the selector module against an independent model.
//!
//! Random expression trees are rendered to selector text in many equivalent spellings (extra
//! whitespace, redundant parentheses, `!!`, either quote, `notin` / `startswith`, shuffled and
//! repeated set members, trailing commas) and checked against a small evaluator written here:
//! (a) the canonical form parses back to a selector with the same verdicts;
//! (b) the canonical form is a fixed point, with the same unique ID;
//! (c) the parsed selector agrees with the direct evaluation of the tree;
//! and labels outside `label_keys()` never change a verdict. Arbitrary text must never make
//! the parser panic, and its errors must point inside the input.
#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use palisade::selector::Selector;
use proptest::prelude::*;

const KEYS: &[&str] = &["a", "b", "c", "x/y"];
/// Literal values: no value may hold both quote characters, since no literal could spell it.
const VALUES: &[&str] = &["", "v", "w", "vw", "wv", "'", "\"", "v'w", "a\"b", "v w"];
/// Label values may be anything; these overlap the literals so that matches happen.
const LABEL_VALUES: &[&str] = &["", "v", "w", "vw", "vvw", "'", "\"", "v'w", "a\"b", "'\""];

#[derive(Debug, Clone, Copy)]
enum Op {
    Eq,
    Ne,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone)]
enum Expr {
    All,
    Global,
    Has(&'static str),
    Compare(&'static str, Op, &'static str),
    In(&'static str, Vec<&'static str>),
    NotIn(&'static str, Vec<&'static str>),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

type LabelSet = BTreeMap<String, String>;

/// The model: Calico's evaluation rules, written as plainly as possible.
fn evaluate(expr: &Expr, labels: &LabelSet) -> bool {
    let get = |key: &str| labels.get(key).map(String::as_str);
    match expr {
        Expr::All | Expr::Global => true,
        Expr::Has(key) => get(key).is_some(),
        Expr::Compare(key, op, value) => match (get(key), op) {
            (None, Op::Ne) => true,
            (None, _) => false,
            (Some(actual), Op::Eq) => actual == *value,
            (Some(actual), Op::Ne) => actual != *value,
            (Some(actual), Op::Contains) => actual.contains(value),
            (Some(actual), Op::StartsWith) => actual.starts_with(value),
            (Some(actual), Op::EndsWith) => actual.ends_with(value),
        },
        Expr::In(key, values) => get(key).is_some_and(|actual| values.contains(&actual)),
        Expr::NotIn(key, values) => !get(key).is_some_and(|actual| values.contains(&actual)),
        Expr::Not(inner) => !evaluate(inner, labels),
        Expr::And(operands) => operands.iter().all(|o| evaluate(o, labels)),
        Expr::Or(operands) => operands.iter().any(|o| evaluate(o, labels)),
    }
}

/// Where an expression is written, which decides the parentheses it cannot do without.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    /// Top level or inside parentheses: anything goes.
    Anywhere,
    /// An operand of `||` or `&&`: an `||` group needs parentheses.
    Operand,
    /// Right after `!`: only a primary (or more `!`), so `&&` / `||` groups need parentheses.
    Negated,
}

/// Renders trees to text, making its spelling choices from a seeded generator.
struct Renderer {
    state: u64,
}

impl Renderer {
    fn chance(&mut self, one_in: u64) -> bool {
        // xorshift64*: deterministic per seed, so a failing case replays.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state
            .wrapping_mul(0x2545_f491_4f6c_dd1d)
            .is_multiple_of(one_in)
    }

    fn pick<'s>(&mut self, choices: &[&'s str]) -> &'s str {
        for choice in &choices[..choices.len() - 1] {
            if self.chance(2) {
                return choice;
            }
        }
        choices[choices.len() - 1]
    }

    /// Optional whitespace between tokens: only space and tab separate tokens.
    fn gap(&mut self) -> &'static str {
        self.pick(&["", " ", "  ", "\t", " \t "])
    }

    /// Whitespace where at least some is needed (a label before an operator word).
    fn space(&mut self) -> &'static str {
        self.pick(&[" ", "  ", "\t"])
    }

    fn literal(&mut self, value: &str) -> String {
        let quote = if value.contains('"') {
            '\''
        } else if value.contains('\'') || self.chance(2) {
            '"'
        } else {
            '\''
        };
        format!("{quote}{value}{quote}")
    }

    fn render(&mut self, expr: &Expr, place: Place) -> String {
        if self.chance(8) {
            let (g1, g2) = (self.gap(), self.gap());
            return format!("!!{g1}{}{g2}", self.render(expr, Place::Negated));
        }
        if self.chance(8) {
            let (g1, g2) = (self.gap(), self.gap());
            return format!("({g1}{}{g2})", self.render(expr, Place::Anywhere));
        }
        match expr {
            Expr::All => format!("all({})", self.gap()),
            Expr::Global => format!("global({})", self.gap()),
            Expr::Has(key) => {
                let (g1, g2) = (self.gap(), self.gap());
                format!("has({g1}{key}{g2})")
            }
            Expr::Compare(key, op, value) => {
                let (before, op_text) = match op {
                    Op::Eq => (self.gap(), "=="),
                    Op::Ne => (self.gap(), "!="),
                    Op::Contains => (self.space(), "contains"),
                    Op::StartsWith => (
                        self.space(),
                        self.pick(&["starts with", "startswith", "starts \t with"]),
                    ),
                    Op::EndsWith => (
                        self.space(),
                        self.pick(&["ends with", "endswith", "ends  with"]),
                    ),
                };
                let after = self.gap();
                format!("{key}{before}{op_text}{after}{}", self.literal(value))
            }
            Expr::In(key, values) => self.render_set(key, "in", values),
            Expr::NotIn(key, values) => {
                let op = self.pick(&["not in", "notin", "not\tin"]);
                self.render_set(key, op, values)
            }
            Expr::Not(inner) => {
                let gap = self.gap();
                format!("!{gap}{}", self.render(inner, Place::Negated))
            }
            Expr::And(operands) => {
                let text = self.join(operands, "&&");
                if place == Place::Negated {
                    format!("({text})")
                } else {
                    text
                }
            }
            Expr::Or(operands) => {
                let text = self.join(operands, "||");
                if place == Place::Anywhere {
                    text
                } else {
                    format!("({text})")
                }
            }
        }
    }

    fn join(&mut self, operands: &[Expr], operator: &str) -> String {
        let mut text = String::new();
        for (i, operand) in operands.iter().enumerate() {
            if i > 0 {
                let (g1, g2) = (self.gap(), self.gap());
                text.push_str(&format!("{g1}{operator}{g2}"));
            }
            text.push_str(&self.render(operand, Place::Operand));
        }
        text
    }

    fn render_set(&mut self, key: &str, op: &str, values: &[&str]) -> String {
        // Members in a shuffled order, some repeated: the set is the same.
        let mut members: Vec<String> = Vec::new();
        for value in values {
            members.push(self.literal(value));
            if self.chance(4) {
                members.push(self.literal(value));
            }
        }
        for i in (1..members.len()).rev() {
            if self.chance(2) {
                members.swap(i, i - 1);
            }
        }
        let separator = format!("{},{}", self.gap(), self.gap());
        let mut inside = members.join(&separator);
        if !members.is_empty() && self.chance(4) {
            inside.push(',');
        }
        let (g1, g2, g3, g4) = (self.space(), self.gap(), self.gap(), self.gap());
        format!("{key}{g1}{op}{g2}{{{g3}{inside}{g4}}}")
    }
}

fn key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(KEYS)
}

fn value() -> impl Strategy<Value = &'static str> {
    prop::sample::select(VALUES)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Eq),
        Just(Op::Ne),
        Just(Op::Contains),
        Just(Op::StartsWith),
        Just(Op::EndsWith),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        1 => Just(Expr::All),
        1 => Just(Expr::Global),
        3 => key().prop_map(Expr::Has),
        6 => (key(), op(), value()).prop_map(|(k, o, v)| Expr::Compare(k, o, v)),
        2 => (key(), prop::collection::vec(value(), 0..4)).prop_map(|(k, vs)| Expr::In(k, vs)),
        2 => (key(), prop::collection::vec(value(), 0..4)).prop_map(|(k, vs)| Expr::NotIn(k, vs)),
    ];
    leaf.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

fn label_set() -> impl Strategy<Value = LabelSet> {
    prop::collection::btree_map(
        key().prop_map(str::to_string),
        prop::sample::select(LABEL_VALUES).prop_map(str::to_string),
        0..=KEYS.len(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsed_text_agrees_with_the_model(
        expr in expr(),
        seed in any::<u64>(),
        label_sets in prop::collection::vec(label_set(), 1..12),
    ) {
        let text = Renderer { state: seed | 1 }.render(&expr, Place::Anywhere);
        let selector = Selector::parse(&text)
            .map_err(|err| TestCaseError::fail(format!("{text:?}: {err}")))?;
        let canonical = selector.to_string();
        let reparsed = Selector::parse(&canonical)
            .map_err(|err| TestCaseError::fail(format!("canonical {canonical:?}: {err}")))?;

        // (b) the canonical form is a fixed point, and so is the unique ID.
        prop_assert_eq!(&reparsed.to_string(), &canonical);
        prop_assert_eq!(reparsed.unique_id(), selector.unique_id());
        prop_assert_eq!(&reparsed, &selector);

        for labels in &label_sets {
            let expected = evaluate(&expr, labels);
            // (c) the parsed text agrees with the model.
            prop_assert_eq!(selector.matches(labels), expected,
                "text {:?} (canonical {:?}) on {:?}", text, canonical, labels);
            // (a) so does the canonical form, parsed back.
            prop_assert_eq!(reparsed.matches(labels), expected,
                "canonical {:?} on {:?}", canonical, labels);
        }

        // Labels the selector does not read cannot change its verdict: keeping only the keys
        // `label_keys` lists, and adding an unrelated one, leaves every verdict as it was.
        let read: Vec<&str> = selector.label_keys().collect();
        for labels in &label_sets {
            let mut restricted: LabelSet = labels
                .iter()
                .filter(|(key, _)| read.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            restricted.insert("unrelated".to_string(), "v".to_string());
            prop_assert_eq!(selector.matches(&restricted), selector.matches(labels),
                "{:?} reads {:?}; labels {:?}", canonical, read, labels);
        }
    }

    #[test]
    fn arbitrary_text_never_panics_and_errors_point_inside_the_input(
        text in prop_oneof![
            any::<String>(),
            prop::collection::vec(
                prop::sample::select(vec![
                    "a", "in", "not", " ", "\t", "(", ")", "{", "}", ",", "'", "\"", "=", "==",
                    "!", "!=", "&&", "&", "||", "|", "has(", "all()", "global()", "contains",
                    "starts", "with", "ends", "x/y", "\n", "é",
                ]),
                0..16,
            ).prop_map(|parts| parts.concat()),
        ],
    ) {
        match Selector::parse(&text) {
            Ok(selector) => {
                let canonical = selector.to_string();
                let reparsed = Selector::parse(&canonical)
                    .map_err(|err| TestCaseError::fail(format!("canonical {canonical:?}: {err}")))?;
                prop_assert_eq!(reparsed.to_string(), canonical);
            }
            Err(err) => {
                prop_assert!(err.position <= text.len(), "{:?}: {}", text, err);
                prop_assert!(text.is_char_boundary(err.position), "{:?}: {}", text, err);
            }
        }
    }
}

/// Counts allocations made by the current thread, so that a test can show that
/// `Selector::matches` allocates nothing (it runs millions of times in the policy compiler).
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn matching_does_not_allocate(
        expr in expr(),
        seed in any::<u64>(),
        label_sets in prop::collection::vec(label_set(), 1..8),
    ) {
        let text = Renderer { state: seed | 1 }.render(&expr, Place::Anywhere);
        let selector = Selector::parse(&text).unwrap();
        let before = ALLOCATIONS.with(Cell::get);
        let mut matched = 0;
        for labels in &label_sets {
            matched += usize::from(selector.matches(labels));
        }
        let allocations = ALLOCATIONS.with(Cell::get) - before;
        prop_assert_eq!(allocations, 0, "{} allocated ({} matched)", text, matched);
    }
}
