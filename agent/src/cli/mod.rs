//! The `palisade` command line.
//!
//! PLACEHOLDER: being written.

pub mod agent;
pub mod trace;

use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
