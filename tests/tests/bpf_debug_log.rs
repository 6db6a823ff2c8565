//! The kernel side's aya-log debug lines reach the agent side's `aya_log::EbpfLogger`
//! (aya-log-ebpf 0.2.0 in the object, aya-log 0.3.0 here), only under `CONFIG_DEBUG_LOG`.
//!
//! Privileged: run through `cargo xtask test` as root.

use std::sync::{Arc, Mutex};

use aya_log::EbpfLogger;
use palisade_common::{CONFIG_DEBUG_LOG, Config, DIR_EGRESS, DROP_POLICY};
use palisade_tests::{
    bpf_maps::DENY,
    bpf_scenario::{PEER_V4, WORKLOAD_V4, dataplane_with_workload, expect, sock, uniform_policy},
    packet::{Frame, TCP_SYN},
    require_root,
};

/// Keeps every record it is given.
#[derive(Clone, Default)]
struct Capture {
    lines: Arc<Mutex<Vec<(log::Level, String)>>>,
}

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((record.level(), record.args().to_string()));
    }

    fn flush(&self) {}
}

impl Capture {
    fn take(&self) -> Vec<(log::Level, String)> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[test]
fn debug_lines_reach_the_user_side_logger_only_when_switched_on() {
    require_root();
    let mut dp = dataplane_with_workload(0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, DENY);
    let capture = Capture::default();
    let mut logger = EbpfLogger::init_with_logger(dp.ebpf(), capture.clone())
        .unwrap_or_else(|err| panic!("aya-log cannot read the object's log buffer: {err}"));
    let frame = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN).build();

    expect(
        &mut dp,
        DIR_EGRESS,
        &frame,
        false,
        "a denied SYN, logging off",
    );
    logger.flush();
    assert_eq!(
        capture.take(),
        [],
        "no debug lines while CONFIG_DEBUG_LOG is off"
    );

    dp.set_config(Config {
        flags: CONFIG_DEBUG_LOG,
        ..Config::default()
    });
    expect(
        &mut dp,
        DIR_EGRESS,
        &frame,
        false,
        "a denied SYN, logging on",
    );
    logger.flush();
    let lines = capture.take();
    let expected = format!(
        "palisade ifindex=1 direction={DIR_EGRESS} generation=0 len={} pass=0 stat={DROP_POLICY}",
        frame.len()
    );
    assert!(
        lines
            .iter()
            .any(|(level, line)| *level == log::Level::Debug && line.starts_with(&expected)),
        "no debug line starting with {expected:?} in {lines:?}"
    );
}
