//! What the commands that touch the kernel need, checked before they start, so that a user
//! without them reads which capabilities are missing instead of a bare "Operation not
//! permitted" from half way through.
//!
//! CAP_SYS_ADMIN stands for the BPF ones too: the kernel lets it do everything CAP_BPF and
//! CAP_PERFMON allow, and mounting bpffs and looking programs up by id need it anyway.

use std::process::ExitCode;

use super::Command;
use super::workload::WorkloadCommand;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    pub name: &'static str,
    bit: u32,
}

pub const CAP_NET_ADMIN: Capability = Capability {
    name: "CAP_NET_ADMIN",
    bit: 12,
};
pub const CAP_SYS_ADMIN: Capability = Capability {
    name: "CAP_SYS_ADMIN",
    bit: 21,
};
pub const CAP_BPF: Capability = Capability {
    name: "CAP_BPF",
    bit: 39,
};

/// What a command needs: every one of `all`, and one of `any` (if it names any); `what`
/// says which command and why.
struct Needs {
    what: &'static str,
    all: &'static [Capability],
    any: &'static [Capability],
}

fn needs_of(command: &Command) -> Option<Needs> {
    match command {
        Command::Agent(_) => Some(Needs {
            what: "palisade agent needs root: it loads and attaches eBPF programs and mounts bpffs",
            all: &[CAP_SYS_ADMIN, CAP_NET_ADMIN],
            any: &[],
        }),
        Command::Cleanup(_) => Some(Needs {
            what: "palisade cleanup needs root: it detaches eBPF programs and removes their pins",
            all: &[CAP_SYS_ADMIN, CAP_NET_ADMIN],
            any: &[],
        }),
        Command::Stats(_) => Some(Needs {
            what: "palisade stats needs root: it reads the kernel's maps",
            all: &[],
            any: &[CAP_BPF, CAP_SYS_ADMIN],
        }),
        Command::Workload(args) => {
            let what = match args.command {
                WorkloadCommand::Add(_) => {
                    "palisade workload add needs root: it plumbs network namespaces and veths"
                }
                WorkloadCommand::Remove(_) => {
                    "palisade workload remove needs root: it plumbs network namespaces and veths"
                }
            };
            Some(Needs {
                what,
                all: &[CAP_SYS_ADMIN, CAP_NET_ADMIN],
                any: &[],
            })
        }
        _ => None,
    }
}

/// The effective capability set of this process, from `/proc/self/status`.
fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn has(set: u64, cap: Capability) -> bool {
    set & (1 << cap.bit) != 0
}

/// The message for a process with the capabilities `set` that lacks what `needs` asks,
/// or `None` if it has it all.
fn refusal(needs: &Needs, set: u64, uid: u32) -> Option<String> {
    let mut missing: Vec<String> = needs
        .all
        .iter()
        .filter(|c| !has(set, **c))
        .map(|c| c.name.to_string())
        .collect();
    if !needs.any.is_empty() && !needs.any.iter().any(|c| has(set, *c)) {
        let names: Vec<&str> = needs.any.iter().map(|c| c.name).collect();
        missing.push(names.join(" or "));
    }
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "{}; this process (uid {uid}) lacks {}. Run it as root, or in a privileged \
         container",
        needs.what,
        missing.join(" and ")
    ))
}

/// Refuses, with a message naming what is missing, unless this process may run `command`.
pub fn check(command: &Command) -> Result<(), ExitCode> {
    let Some(needs) = needs_of(command) else {
        return Ok(());
    };
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    match refusal(&needs, effective(), uid) {
        None => Ok(()),
        Some(message) => {
            eprintln!("{message}");
            Err(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: Needs = Needs {
        what: "palisade agent",
        all: &[CAP_SYS_ADMIN, CAP_NET_ADMIN],
        any: &[],
    };
    const STATS: Needs = Needs {
        what: "palisade stats",
        all: &[],
        any: &[CAP_BPF, CAP_SYS_ADMIN],
    };

    #[test]
    fn names_what_is_missing() {
        let none = refusal(&AGENT, 0, 1000).unwrap();
        assert!(
            none.contains("uid 1000") && none.contains("lacks CAP_SYS_ADMIN and CAP_NET_ADMIN"),
            "{none}"
        );
        let net_only = refusal(&AGENT, 1 << 12, 0).unwrap();
        assert!(net_only.contains("lacks CAP_SYS_ADMIN."), "{net_only}");
        assert_eq!(refusal(&AGENT, (1 << 12) | (1 << 21), 0), None);
        let stats = refusal(&STATS, 0, 1000).unwrap();
        assert!(stats.contains("lacks CAP_BPF or CAP_SYS_ADMIN"), "{stats}");
        assert_eq!(refusal(&STATS, 1 << 39, 1000), None);
    }
}
