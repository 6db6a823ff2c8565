//! The selector language: any text either parses or fails with a position inside it; a
//! parsed selector's canonical form is a fixed point (it parses to the same canonical form
//! and unique ID) with the same verdicts on label sets made from the selector's own keys
//! and literals (so that they match some of the time).

use std::collections::BTreeMap;

use palisade::selector::{Node, Selector};

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let selector = match Selector::parse(text) {
        Ok(selector) => selector,
        Err(err) => {
            assert!(
                err.position <= text.len(),
                "error position {} beyond the input's {} bytes: {err}",
                err.position,
                text.len()
            );
            assert!(!err.message.is_empty(), "an error without a message");
            return;
        }
    };
    let canonical = selector.to_string();
    let again = Selector::parse(&canonical)
        .unwrap_or_else(|err| panic!("canonical form {canonical:?} does not parse: {err}"));
    assert_eq!(
        again.to_string(),
        canonical,
        "the canonical form of {text:?} is not a fixed point"
    );
    assert_eq!(again.unique_id(), selector.unique_id());
    for labels in label_sets(&selector) {
        assert_eq!(
            selector.matches(&labels),
            again.matches(&labels),
            "{text:?} and its canonical form {canonical:?} disagree on {labels:?}"
        );
    }
}

/// Label sets over the selector's keys: every key absent, then each key in turn given each
/// literal the selector holds (and a few values around them), the others absent or set to
/// the first literal.
fn label_sets(selector: &Selector) -> Vec<BTreeMap<String, String>> {
    let keys: Vec<String> = selector.label_keys().map(str::to_string).collect();
    let mut values = vec![String::new(), "x".to_string()];
    literals(selector.root(), &mut values);
    let extra: Vec<String> = values
        .iter()
        .flat_map(|v| {
            [
                format!("{v}x"),
                format!("x{v}"),
                v.chars().skip(1).collect(),
            ]
        })
        .collect();
    values.extend(extra);
    values.sort();
    values.dedup();
    // Bound the work on huge selectors: the property is about the form, not the size.
    values.truncate(24);
    let mut sets = vec![BTreeMap::new()];
    for (i, key) in keys.iter().enumerate().take(16) {
        for value in &values {
            for others_set in [false, true] {
                let mut labels = BTreeMap::new();
                if others_set {
                    for other in keys.iter().filter(|k| *k != key) {
                        labels.insert(other.clone(), values[i % values.len()].clone());
                    }
                }
                labels.insert(key.clone(), value.clone());
                sets.push(labels);
            }
        }
    }
    sets
}

fn literals(node: &Node, out: &mut Vec<String>) {
    match node {
        Node::All | Node::Global | Node::Has(_) => {}
        Node::Compare { value, .. } => out.push(value.clone()),
        Node::Set { values, .. } => out.extend(values.iter().cloned()),
        Node::Not(inner) => literals(inner, out),
        Node::And(operands) | Node::Or(operands) => {
            for operand in operands {
                literals(operand, out);
            }
        }
    }
}
