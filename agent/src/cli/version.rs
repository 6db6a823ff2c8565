//! `palisade version`.

use std::process::ExitCode;

pub fn run() -> ExitCode {
    println!("palisade {}", env!("CARGO_PKG_VERSION"));
    ExitCode::SUCCESS
}
