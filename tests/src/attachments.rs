//! What runs on an interface's TC hooks, as the kernel reports it to tools other than
//! palisade: the TCX programs (aya's query of the kernel; bpftool 7.1 does not list TCX)
//! and the classic `bpf` filters, read twice, with `tc -json filter show` and with
//! `bpftool --json net show`, which must agree.

use aya::programs::{SchedClassifier, TcAttachType};
use palisade::dataplane::attach::clsact::{HANDLE, PRIORITY};
use palisade_common::program_names::{FROM_WORKLOAD, TO_WORKLOAD};

use crate::netns::run_ok;

/// One `bpf` filter of `tc filter show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcFilter {
    pub priority: u64,
    pub handle: String,
    pub name: String,
    pub program_id: u64,
    pub direct_action: bool,
}

/// Everything on the two hooks of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnInterface {
    pub tcx_ingress: Vec<u64>,
    pub tcx_egress: Vec<u64>,
    pub filters_ingress: Vec<TcFilter>,
    pub filters_egress: Vec<TcFilter>,
}

impl OnInterface {
    /// Reads the hooks of `ifname` (in the test's namespace).
    pub fn read(ifname: &str) -> OnInterface {
        let on = OnInterface {
            tcx_ingress: tcx_programs(ifname, TcAttachType::Ingress),
            tcx_egress: tcx_programs(ifname, TcAttachType::Egress),
            filters_ingress: tc_filters(ifname, "ingress"),
            filters_egress: tc_filters(ifname, "egress"),
        };
        let by_bpftool = bpftool_filters(ifname);
        let by_tc: Vec<(String, u64)> = on
            .filters_ingress
            .iter()
            .map(|f| ("clsact/ingress".to_string(), f.program_id))
            .chain(
                on.filters_egress
                    .iter()
                    .map(|f| ("clsact/egress".to_string(), f.program_id)),
            )
            .collect();
        assert_eq!(
            sorted(by_bpftool),
            sorted(by_tc),
            "bpftool and tc disagree on {ifname}: {on:#?}"
        );
        on
    }

    /// Palisade's TCX programs and nothing else: one per hook, no filter.
    pub fn assert_tcx_only(&self, ifname: &str) {
        assert!(
            self.tcx_ingress.len() == 1
                && self.tcx_egress.len() == 1
                && self.filters_ingress.is_empty()
                && self.filters_egress.is_empty(),
            "{ifname} should have one TCX program per hook and no filter: {self:#?}"
        );
    }

    /// Palisade's clsact filters and nothing else: one per hook at its place, direct
    /// action, named after its program, no TCX program.
    pub fn assert_clsact_only(&self, ifname: &str) {
        let ours = |filters: &[TcFilter], name: &str| {
            matches!(filters, [f] if f.priority == u64::from(PRIORITY)
                && f.handle == format!("{HANDLE:#x}")
                && f.name == name
                && f.direct_action)
        };
        assert!(
            self.tcx_ingress.is_empty()
                && self.tcx_egress.is_empty()
                && ours(&self.filters_ingress, FROM_WORKLOAD)
                && ours(&self.filters_egress, TO_WORKLOAD),
            "{ifname} should have palisade's clsact filter on each hook and nothing else: \
             {self:#?}"
        );
    }

    /// Nothing at all.
    pub fn assert_empty(&self, ifname: &str) {
        assert!(
            self.tcx_ingress.is_empty()
                && self.tcx_egress.is_empty()
                && self.filters_ingress.is_empty()
                && self.filters_egress.is_empty(),
            "{ifname} should have nothing attached: {self:#?}"
        );
    }

    /// The ids of the programs palisade runs there: (ingress, egress), in whichever mode.
    pub fn programs(&self) -> (u64, u64) {
        let first = |tcx: &[u64], filters: &[TcFilter]| {
            tcx.first()
                .copied()
                .or(filters.first().map(|f| f.program_id))
                .unwrap_or_else(|| panic!("nothing attached: {self:#?}"))
        };
        (
            first(&self.tcx_ingress, &self.filters_ingress),
            first(&self.tcx_egress, &self.filters_egress),
        )
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The ids of the programs TCX runs on `ifname` in `direction`.
pub fn tcx_programs(ifname: &str, direction: TcAttachType) -> Vec<u64> {
    let (_, programs) = SchedClassifier::query_tcx(ifname, direction)
        .unwrap_or_else(|e| panic!("query TCX on {ifname}: {e}"));
    programs.iter().map(|p| u64::from(p.id())).collect()
}

/// `tc -json filter show dev IFNAME HOOK`, as a list of entries.
fn tc_show(ifname: &str, hook: &str) -> Vec<serde_json::Value> {
    let out = run_ok("tc", &["-json", "filter", "show", "dev", ifname, hook]);
    if out.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str(&out) {
        Ok(serde_json::Value::Array(listed)) => listed,
        _ => panic!("tc filter show: not a JSON list: {out}"),
    }
}

/// The (priority, kind) of every filter on `hook` of `ifname`, whoever put it there.
/// Whether `ifname` has a clsact qdisc (palisade adds it at an interface's first attach in
/// either mode, so that a later switch to clsact mode never creates one under traffic).
pub fn has_clsact_qdisc(ifname: &str) -> bool {
    run_ok("tc", &["qdisc", "show", "dev", ifname])
        .lines()
        .any(|line| line.starts_with("qdisc clsact "))
}

pub fn tc_filter_kinds(ifname: &str, hook: &str) -> std::collections::BTreeSet<(u64, String)> {
    tc_show(ifname, hook)
        .iter()
        .map(|f| {
            (
                f["pref"].as_u64().unwrap_or_default(),
                f["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The `bpf` filters on `hook` of `ifname` (tc also lists each priority on its own, without
/// options: those are left out).
pub fn tc_filters(ifname: &str, hook: &str) -> Vec<TcFilter> {
    tc_show(ifname, hook)
        .iter()
        .filter(|f| f["kind"] == "bpf" && f["options"].is_object())
        .map(|f| TcFilter {
            priority: f["pref"].as_u64().unwrap_or_default(),
            handle: f["options"]["handle"].as_str().unwrap_or_default().into(),
            name: f["options"]["bpf_name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            program_id: f["options"]["prog"]["id"].as_u64().unwrap_or_default(),
            direct_action: f["options"]["direct-action"].as_bool() == Some(true),
        })
        .collect()
}

/// `bpftool --json net show dev IFNAME`: (kind, program id) of each classic TC program.
fn bpftool_filters(ifname: &str) -> Vec<(String, u64)> {
    let out = run_ok("bpftool", &["--json", "net", "show", "dev", ifname]);
    let shown: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("bpftool net show: bad JSON {e}: {out}"));
    shown
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|section| section["tc"].as_array())
        .flatten()
        .map(|entry| {
            (
                entry["kind"].as_str().unwrap_or_default().to_string(),
                entry["id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no program id: {out}")),
            )
        })
        .collect()
}

/// The eBPF object embedded in the palisade library under test.
pub fn embedded_object() -> &'static [u8] {
    palisade::dataplane::ebpf_object().unwrap_or_else(|err| {
        panic!("{err}\n(the tests must run through `cargo xtask test`, which embeds it)")
    })
}

/// A bpffs of the test's own, unmounted by the cleanup (which releases whatever is still
/// pinned in it); returns the pin directory in it.
pub fn private_pin_dir(cleanup: &mut crate::Cleanup) -> std::path::PathBuf {
    let root = tempfile::tempdir().expect("a temporary directory").keep();
    assert!(
        palisade::dataplane::ensure_bpffs_mounted(&root).expect("mount bpffs"),
        "a bpffs was already mounted at {}",
        root.display()
    );
    let unmounted = root.clone();
    cleanup.defer(format!("unmount {}", root.display()), move || {
        let path = std::ffi::CString::new(unmounted.as_os_str().as_encoded_bytes())?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        std::fs::remove_dir(&unmounted)?;
        Ok(())
    });
    palisade::dataplane::ensure_pin_dir(&root).expect("the pin directory")
}

/// The kernel's id of the program `name` of `loaded`.
pub fn program_id(loaded: &mut palisade::dataplane::LoadedObject, name: &'static str) -> u64 {
    let program = loaded.program(name).expect("the program");
    u64::from(program.info().expect("the program's info").id())
}

/// The ids of `loaded`'s two TC programs: (FROM_WORKLOAD, TO_WORKLOAD).
pub fn program_ids(loaded: &mut palisade::dataplane::LoadedObject) -> (u64, u64) {
    use palisade_common::program_names::{FROM_WORKLOAD, TO_WORKLOAD};
    (
        program_id(loaded, FROM_WORKLOAD),
        program_id(loaded, TO_WORKLOAD),
    )
}

/// The ids of the programs the agent on the bpffs `bpffs` pinned last: (FROM_WORKLOAD,
/// TO_WORKLOAD), as bpftool reads them.
pub fn pinned_programs(bpffs: &std::path::Path) -> (u64, u64) {
    pinned_programs_in(&palisade::dataplane::pin_dir(bpffs))
}

/// [`pinned_programs`] of the pin directory `pin_dir` (of any map ABI version).
pub fn pinned_programs_in(pin_dir: &std::path::Path) -> (u64, u64) {
    let programs = palisade::dataplane::program_pin_dir(pin_dir);
    let id = |name: &str| {
        let path = programs.join(name);
        let out = run_ok(
            "bpftool",
            &[
                "--json",
                "prog",
                "show",
                "pinned",
                &path.display().to_string(),
            ],
        );
        let shown: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("bpftool prog show: bad JSON {e}: {out}"));
        shown["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no program id: {out}"))
    };
    (id(FROM_WORKLOAD), id(TO_WORKLOAD))
}

/// Checks that each of `interfaces` has the programs pinned on `bpffs` attached in `mode`
/// ("tcx" or "clsact") and nothing else.
pub fn assert_enforcing_in(mode: &str, interfaces: &[&str], bpffs: &std::path::Path) {
    assert_enforcing_from(mode, interfaces, &palisade::dataplane::pin_dir(bpffs));
}

/// [`assert_enforcing_in`] with the programs pinned in `pin_dir` (of any map ABI version).
pub fn assert_enforcing_from(mode: &str, interfaces: &[&str], pin_dir: &std::path::Path) {
    let programs = pinned_programs_in(pin_dir);
    for interface in interfaces {
        let on = OnInterface::read(interface);
        match mode {
            "tcx" => on.assert_tcx_only(interface),
            "clsact" => on.assert_clsact_only(interface),
            other => panic!("no attach mode {other}"),
        }
        assert_eq!(
            on.programs(),
            programs,
            "{interface} does not run the programs the agent pinned last"
        );
    }
}
