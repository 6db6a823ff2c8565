//! Puts the eBPF object into `$OUT_DIR/palisade-ebpf.o` so that `dataplane::object` can embed
//! it with `include_bytes!`.
//!
//! The object is built by `cargo xtask build-ebpf` (nightly, bpfel-unknown-none), which a
//! build script of a stable crate cannot do itself; `cargo xtask build` passes its path in
//! `PALISADE_EBPF_OBJECT`. A plain `cargo build` embeds an empty file instead, so the
//! workspace still builds (for unit tests, clippy, docs) and the agent says at run time how to
//! get a real object.

use std::{env, fs, path::PathBuf, process::ExitCode};

const OBJECT_ENV: &str = "PALISADE_EBPF_OBJECT";

fn main() -> ExitCode {
    println!("cargo:rerun-if-env-changed={OBJECT_ENV}");
    let Some(out_dir) = env::var_os("OUT_DIR") else {
        eprintln!("error: cargo did not set OUT_DIR for palisade's build script");
        return ExitCode::FAILURE;
    };
    let embedded = PathBuf::from(out_dir).join("palisade-ebpf.o");

    let result = match env::var_os(OBJECT_ENV).filter(|value| !value.is_empty()) {
        Some(object) => {
            let object = PathBuf::from(object);
            if object.is_relative() {
                eprintln!(
                    "error: {OBJECT_ENV} must be an absolute path (build scripts run in the \
                     package directory), got {}",
                    object.display()
                );
                return ExitCode::FAILURE;
            }
            println!("cargo:rerun-if-changed={}", object.display());
            fs::copy(&object, &embedded).map(drop).map_err(|err| {
                format!(
                    "cannot copy the eBPF object {} named by {OBJECT_ENV}: {err}\n\
                     hint: build it with `cargo xtask build-ebpf`, or unset {OBJECT_ENV}",
                    object.display()
                )
            })
        }
        None => fs::write(&embedded, b"")
            .map_err(|err| format!("cannot write {}: {err}", embedded.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
