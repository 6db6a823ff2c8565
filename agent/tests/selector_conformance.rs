//! Runs Calico's own selector test vectors (`shared/conformance/selectors.jsonl`) against the
//! selector module: one test per section, each reporting every failing vector at once.
//!
//! The file is found through `PALISADE_SHARED_DIR`, else `../shared` beside the repository.
//! A missing file, or a section with no vectors, is a failure: these vectors are the
//! acceptance criteria and must never be skipped silently.

use std::collections::BTreeMap;
use std::path::PathBuf;

use palisade::selector::Selector;
use palisade::selector::tokenizer::{tokenize, tokens_to_string};
use serde_json::Value;

fn vectors_path() -> PathBuf {
    let shared = std::env::var("PALISADE_SHARED_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared").to_string());
    PathBuf::from(shared).join("conformance/selectors.jsonl")
}

/// Every vector of `section`, panicking if the file is missing or the section is empty.
fn section(name: &str) -> Vec<Value> {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read the selector vectors at {}: {err} (set PALISADE_SHARED_DIR to the shared/ folder)",
            path.display()
        )
    });
    let vectors: Vec<Value> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|err| panic!("{}:{}: bad JSON: {err}", path.display(), n + 1))
        })
        .filter(|v| v["section"] == name)
        .collect();
    assert!(
        !vectors.is_empty(),
        "section {name} of {} has no vectors: has the format changed?",
        path.display()
    );
    vectors
}

fn field<'v>(vector: &'v Value, key: &str) -> &'v str {
    vector[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector without string field {key:?}: {vector}"))
}

/// Runs `check` on each vector of `section` and fails listing every mismatch.
fn run_section(name: &str, check: fn(&Value) -> Result<(), String>) {
    let vectors = section(name);
    let failures: Vec<String> = vectors
        .iter()
        .filter_map(|vector| {
            check(vector)
                .err()
                .map(|why| format!("  {vector}\n    {why}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "section {name}: {} of {} vectors failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
    eprintln!("section {name}: {} vectors passed", vectors.len());
}

/// `{"sel", "labels", "expect"}` evaluates to `expect`; `{"sel", "valid": false}` must not parse.
fn check_evaluation(vector: &Value) -> Result<(), String> {
    let text = field(vector, "sel");
    if vector["valid"] == Value::Bool(false) {
        return check_invalid(vector);
    }
    let labels: BTreeMap<String, String> = serde_json::from_value(vector["labels"].clone())
        .map_err(|err| format!("bad labels: {err}"))?;
    let expect = vector["expect"]
        .as_bool()
        .ok_or_else(|| "no boolean `expect`".to_string())?;
    let selector = Selector::parse(text).map_err(|err| format!("parse error: {err}"))?;
    let got = selector.matches(&labels);
    if got == expect {
        Ok(())
    } else {
        Err(format!(
            "matched {got}, expected {expect} (parsed as {selector})"
        ))
    }
}

fn check_invalid(vector: &Value) -> Result<(), String> {
    match Selector::parse(field(vector, "sel")) {
        Err(_) => Ok(()),
        Ok(selector) => Err(format!("parsed as {selector}, expected an error")),
    }
}

fn check_canonical(vector: &Value) -> Result<(), String> {
    let selector =
        Selector::parse(field(vector, "input")).map_err(|err| format!("parse error: {err}"))?;
    let canonical = selector.to_string();
    if canonical != field(vector, "canonical") {
        return Err(format!("canonical form {canonical:?}"));
    }
    if let Some(uid) = vector["uid"].as_str() {
        let got = selector.unique_id();
        if got != uid {
            return Err(format!("unique id {got}"));
        }
    }
    Ok(())
}

fn check_tokens(vector: &Value) -> Result<(), String> {
    let got = match tokenize(field(vector, "input")) {
        Ok(tokens) => tokens_to_string(&tokens),
        Err(_) => "ERROR".to_string(),
    };
    if got == field(vector, "tokens") {
        Ok(())
    } else {
        Err(format!("tokens {got}"))
    }
}

fn check_prefixed(vector: &Value) -> Result<(), String> {
    let selector =
        Selector::parse(field(vector, "input")).map_err(|err| format!("parse error: {err}"))?;
    let got = selector.prefix_labels("visited/").to_string();
    if got == field(vector, "output") {
        Ok(())
    } else {
        Err(format!("prefixed {got:?}"))
    }
}

#[test]
fn section_a_evaluation() {
    run_section("A", check_evaluation);
}

#[test]
fn section_b_invalid_selectors() {
    run_section("B", check_invalid);
}

#[test]
fn section_c_canonical_form_and_unique_id() {
    run_section("C", check_canonical);
}

#[test]
fn section_d_tokens() {
    run_section("D", check_tokens);
}

#[test]
fn section_e1_evaluation_of_later_operators() {
    run_section("E.1", check_evaluation);
}

#[test]
fn section_e2_invalid_later_operators() {
    run_section("E.2", check_invalid);
}

#[test]
fn section_e3_canonical_form_of_later_operators() {
    run_section("E.3", check_canonical);
}

#[test]
fn section_e4_tokens_of_later_operators() {
    run_section("E.4", check_tokens);
}

#[test]
fn section_e5_prefixed_labels() {
    run_section("E.5", check_prefixed);
}

#[test]
fn section_f_felix_evaluation() {
    run_section("F", check_evaluation);
}
