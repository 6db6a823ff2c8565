//! Quiet exit when stdout is a closed pipe (`palisade get wep -o wide | head -1`).
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails and `println!` panics. For the
//! short-lived printing commands, the Unix default (end the process silently) is right,
//! but only for stdout: the commands also talk to etcd over sockets, and a socket that
//! etcd closed (it refused our TLS client certificate, it restarted) must give an error,
//! not kill the process. Not for the agent at all: it must survive any peer going away.

/// Ends the process as SIGPIPE's default would when stdout is a closed pipe; any other
/// broken pipe or socket is left to the failing write's `EPIPE`.
pub fn exit_quietly_on_closed_stdout() {
    // SAFETY: the handler only calls async-signal-safe functions (poll, signal, raise),
    // and it is installed before any other thread starts.
    unsafe {
        libc::signal(
            libc::SIGPIPE,
            on_sigpipe as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

extern "C" fn on_sigpipe(_: libc::c_int) {
    // A pipe whose readers are gone polls as POLLERR on its write end.
    let mut stdout = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: poll, signal and raise are async-signal-safe; `stdout` outlives the call.
    unsafe {
        if libc::poll(&mut stdout, 1, 0) == 1 && stdout.revents & libc::POLLERR != 0 {
            // Die by SIGPIPE itself, as the default disposition would: raised while the
            // handler runs, it is delivered (with the default action) when it returns.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
}
