//! The `palisade` command line.
//!
//! PLACEHOLDER: being written.

use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
