//! `palisade version`.

use std::process::ExitCode;

pub fn run() -> ExitCode {
    println!(
        "palisade {} (map ABI {})",
        env!("CARGO_PKG_VERSION"),
        palisade_common::ABI_VERSION
    );
    ExitCode::SUCCESS
}
