//! Kernel-side debug lines (aya-log), forwarded into the agent's structured log. The
//! programs only produce them while `CONFIG_DEBUG_LOG` is set (`palisade agent
//! --bpf-debug-log`); otherwise the fast path pays one branch.

use aya_log::EbpfLogger;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::log;

/// Hands aya-log's records to [`crate::log`] as "bpf" lines.
pub struct Forwarder;

impl ::log::Log for Forwarder {
    fn enabled(&self, _: &::log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &::log::Record<'_>) {
        let message = record.args().to_string();
        log::info(
            "bpf",
            &[("program", &record.target()), ("message", &message)],
        );
    }

    fn flush(&self) {}
}

/// Starts aya-log for the loaded object (takes its `AYA_LOGS` map).
pub fn init(ebpf: &mut aya::Ebpf) -> Result<EbpfLogger<Forwarder>, aya_log::Error> {
    EbpfLogger::init_with_logger(ebpf, Forwarder)
}

/// Reads the kernel's log records as they come.
pub async fn forward(logger: EbpfLogger<Forwarder>) {
    // SAFETY: the logger owns its ring buffer's fd, which stays open and the same while the
    // `AsyncFd` owns the logger.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::error("cannot watch the kernel log buffer", &[("error", &e)]);
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                log::error("kernel log buffer failed", &[("error", &e)]);
                return;
            }
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
