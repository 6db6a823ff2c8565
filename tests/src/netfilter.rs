//! Netfilter rulesets in a namespace: Felix's iptables + ipset rendering loaded with
//! `ipset restore` and `iptables-restore --noflush` (legacy or nf_tables backend, as
//! Felix would run them), the nftables rendering with `nft -f`, their updates, and
//! clearing them again.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use palisade_peers::Family;
use palisade_peers::felix::{self, Update};
use palisade_peers::nft::{self, NftUpdate};

use crate::netns::Netns;

/// Which iptables Felix's rules go through: the legacy xtables (what Felix 2.x used) or
/// the nf_tables-backed one (Debian 12's default `iptables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    fn command(self, family: Family, restore: bool) -> &'static str {
        match (self, family, restore) {
            (Backend::Legacy, Family::V4, true) => "iptables-legacy-restore",
            (Backend::Legacy, Family::V6, true) => "ip6tables-legacy-restore",
            (Backend::Nft, Family::V4, true) => "iptables-nft-restore",
            (Backend::Nft, Family::V6, true) => "ip6tables-nft-restore",
            (Backend::Legacy, Family::V4, false) => "iptables-legacy",
            (Backend::Legacy, Family::V6, false) => "ip6tables-legacy",
            (Backend::Nft, Family::V4, false) => "iptables-nft",
            (Backend::Nft, Family::V6, false) => "ip6tables-nft",
        }
    }
}

/// Runs `program args` in `ns` with `input` on its standard input; fails with its output
/// unless it succeeds.
pub fn run_with_input(ns: &Netns, program: &str, args: &[&str], input: &str) -> Result<Output> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program} in {}", ns.name))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("cannot write to {program}"))?;
    }
    let output = child.wait_with_output()?;
    ensure!(
        output.status.success(),
        "{program} {args:?} in {} failed: {}\n{}",
        ns.name,
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

/// Loads a Felix ruleset (its sets first, then its tables) into `ns`.
pub fn load_felix(ns: &Netns, ruleset: &felix::Ruleset, backend: Backend) -> Result<()> {
    let family = ruleset.config.family;
    run_with_input(ns, "ipset", &["restore"], &ruleset.ipset_restore())?;
    run_with_input(
        ns,
        backend.command(family, true),
        &["--noflush"],
        &ruleset.iptables_restore(),
    )?;
    Ok(())
}

/// Applies a Felix update to `ns` as Felix does; returns how long the three steps took.
pub fn apply_felix_update(
    ns: &Netns,
    update: &Update,
    family: Family,
    backend: Backend,
) -> Result<Duration> {
    let started = Instant::now();
    if !update.ipsets_before.is_empty() {
        run_with_input(ns, "ipset", &["restore"], &update.ipsets_before)?;
    }
    if !update.iptables.is_empty() {
        run_with_input(
            ns,
            backend.command(family, true),
            &["--noflush"],
            &update.iptables,
        )?;
    }
    if !update.ipsets_after.is_empty() {
        run_with_input(ns, "ipset", &["restore"], &update.ipsets_after)?;
    }
    Ok(started.elapsed())
}

/// Removes every rule and chain of Felix's tables, IPv4 and IPv6, then every ipset.
pub fn clear_felix(ns: &Netns, backend: Backend) -> Result<()> {
    for family in [Family::V4, Family::V6] {
        let command = backend.command(family, false);
        for table in ["raw", "mangle", "filter", "nat"] {
            for op in ["--flush", "--delete-chain"] {
                run_with_input(ns, command, &["--table", table, op], "")?;
            }
        }
    }
    run_with_input(ns, "ipset", &["destroy"], "")?;
    Ok(())
}

/// Loads the nftables ruleset into `ns` (one transaction).
pub fn load_nft(ns: &Netns, ruleset: &nft::Ruleset) -> Result<()> {
    run_with_input(ns, "nft", &["-f", "-"], &ruleset.script())?;
    Ok(())
}

/// Applies an nftables update (one transaction); returns how long it took.
pub fn apply_nft_update(ns: &Netns, update: &NftUpdate) -> Result<Duration> {
    let started = Instant::now();
    if !update.script.is_empty() {
        run_with_input(ns, "nft", &["-f", "-"], &update.script)?;
    }
    Ok(started.elapsed())
}

/// Removes the nftables table of `family`.
pub fn clear_nft(ns: &Netns, family: Family) -> Result<()> {
    let keyword = match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    run_with_input(ns, "nft", &["delete", "table", keyword, nft::TABLE], "")?;
    Ok(())
}

/// Forgets every connection the namespace's conntrack holds (between runs, so that one
/// run's TIME_WAIT entries do not weigh on the next).
pub fn flush_conntrack(ns: &Netns) -> Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "conntrack", "-F"])
        .output()
        .context("cannot run conntrack (is the conntrack package installed?)")?;
    // conntrack -F says "0 flow entries have been deleted" on stderr, whatever it did.
    ensure!(
        out.status.success(),
        "conntrack -F in {}: {}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
