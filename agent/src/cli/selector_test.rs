//! `palisade selector test SELECTOR --labels JSON`: parse a selector and evaluate it on a
//! set of labels, to check a policy's selector before writing it.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::selector::{ParseError, Selector};

/// Work with label selectors.
#[derive(Debug, Args)]
pub struct SelectorArgs {
    #[command(subcommand)]
    pub command: SelectorCommand,
}

#[derive(Debug, Subcommand)]
pub enum SelectorCommand {
    /// Parse SELECTOR, print its canonical form, then `true` or `false` (the last line)
    /// for whether it matches the labels. An invalid selector exits with status 1 and
    /// shows where parsing failed.
    Test(TestArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A selector, e.g. "role == 'db' && has(backup)".
    pub selector: String,
    /// The labels to test, as a JSON object of strings, e.g. '{"role": "db"}'.
    #[arg(long, default_value = "{}", value_name = "JSON_OBJECT")]
    pub labels: String,
}

pub fn run(args: SelectorArgs) -> ExitCode {
    let SelectorCommand::Test(args) = args.command;
    let labels: BTreeMap<String, String> = match serde_json::from_str(&args.labels) {
        Ok(labels) => labels,
        Err(err) => {
            eprintln!(
                "Invalid --labels: expected a JSON object of string values, like '{{\"role\": \"db\"}}': {err}"
            );
            return ExitCode::FAILURE;
        }
    };
    let selector = match Selector::parse(&args.selector) {
        Ok(selector) => selector,
        Err(err) => {
            eprint!("{}", describe_parse_error(&args.selector, &err));
            return ExitCode::FAILURE;
        }
    };
    println!("selector: {selector}");
    println!("{}", selector.matches(&labels));
    ExitCode::SUCCESS
}

/// The error, then the selector with a caret under the failing position.
fn describe_parse_error(input: &str, err: &ParseError) -> String {
    // `position` is a byte offset; the caret goes under the character there.
    let column = input
        .get(..err.position)
        .map_or(input.chars().count(), |prefix| prefix.chars().count());
    format!(
        "Invalid selector: {err}\n  {input}\n  {}^\n",
        " ".repeat(column)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_points_at_the_position() {
        let err = ParseError {
            position: 8,
            message: "unexpected end of input".into(),
        };
        assert_eq!(
            describe_parse_error("role == ", &err),
            "Invalid selector: unexpected end of input at position 8\n  role == \n          ^\n"
        );
    }
}
