//! The bodies of palisade's fuzz targets: what each one feeds to palisade and which
//! properties it checks beyond "no panic". A failed property panics, which libFuzzer
//! reports as a crash with the input that caused it.
//!
//! The same bodies run in two ways: under libFuzzer (`fuzz/libfuzzer`, one
//! `fuzz_target!` per target, driven by `cargo xtask fuzz`), and in the ordinary test
//! suite (`tests/corpora.rs`), which replays every committed input of `corpus/<target>/`
//! and `regressions/<target>/` on stable Rust, without cargo-fuzz.

pub mod docker_requests;
pub mod etcd_layout;
pub mod resources;
pub mod selector;
pub mod store_log;

/// One fuzz target: its name (also its corpus directory and its libFuzzer binary) and its
/// body.
pub struct Target {
    pub name: &'static str,
    pub check: fn(&[u8]),
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "selector",
        check: selector::check,
    },
    Target {
        name: "resources",
        check: resources::check,
    },
    Target {
        name: "etcd_layout",
        check: etcd_layout::check,
    },
    Target {
        name: "docker_requests",
        check: docker_requests::check,
    },
    Target {
        name: "store_log",
        check: store_log::check,
    },
];
