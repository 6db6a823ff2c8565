//! Quiet exit when stdout is a closed pipe (`palisade get wep -o wide | head -1`).
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails and `println!` panics. For the
//! short-lived printing commands, the Unix default (end the process silently) is right.
//! Not for the agent: it writes to sockets and must survive a peer that went away.

/// Restores the default SIGPIPE disposition for this process.
pub fn exit_quietly_on_closed_stdout() {
    // SAFETY: setting a signal disposition to SIG_DFL installs no handler code, and it
    // happens before any thread that could depend on the old disposition is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
