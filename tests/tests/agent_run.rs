//! `palisade agent` as a real process: it loads and pins the eBPF program in its bpffs,
//! follows the datastore as the CLI writes to it, and stops cleanly on SIGTERM.

use std::process::Command;

use palisade_tests::agent_process::AgentHome;
use palisade_tests::palisade_cli::Datastore;
use palisade_tests::require_root;

#[test]
fn agent_loads_pins_follows_the_store_and_stops() {
    require_root();
    let store = Datastore::new();
    let home = AgentHome::new(store.url(), "node1");
    let mut agent = home.start(&[]);

    let loaded = agent.wait_for(&["eBPF programs loaded"]);
    let programs =
        palisade::dataplane::program_pin_dir(&palisade::dataplane::pin_dir(home.bpffs.path()));
    assert!(loaded.contains(&programs.display().to_string()), "{loaded}");
    let pin = programs.join("palisade_from_wl");
    let shown = Command::new("bpftool")
        .args(["--json", "prog", "show", "pinned"])
        .arg(&pin)
        .output()
        .unwrap();
    assert!(shown.status.success(), "bpftool: {shown:?}");
    let prog: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(prog["name"], "palisade_from_wl");
    assert_eq!(prog["type"], "sched_cls");

    agent.wait_for(&["policy view updated", "revision=0"]);
    // The conntrack sweep is housekeeping: it runs below the threads that enforce policy
    // (once it has started, which the agent does not wait for).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while niceness(agent.pid(), "conntrack-sweep") != [10] {
        assert!(
            std::time::Instant::now() < deadline,
            "conntrack-sweep's niceness: {:?}",
            niceness(agent.pid(), "conntrack-sweep")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Every other thread enforces or serves and keeps the default niceness. Short-lived
    // unnamed threads (they carry the process's name) come and go, so no count is asserted.
    let others = thread_niceness(agent.pid());
    assert!(
        others.iter().any(|(name, _)| name == "palisade"),
        "{others:?}"
    );
    for (name, nice) in &others {
        assert!(name == "conntrack-sweep" || *nice == 0, "{others:?}");
    }
    store.apply(
        "- apiVersion: v1\n  kind: profile\n  metadata: {name: databases, labels: {role: database}}\n",
    );
    agent.wait_for(&["policy view updated", "revision=1", "profiles=1"]);
    store.apply(
        "- apiVersion: v1\n  kind: workloadEndpoint\n  metadata: {name: db1, node: node1, orchestrator: o, workload: w}\n  spec: {interfaceName: calidb1, ipNetworks: [10.0.0.1/32], profiles: [databases]}\n",
    );
    agent.wait_for(&["policy view updated", "revision=2", "local_endpoints=1"]);

    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status}");
}

/// The niceness of each thread of `pid` named `name`.
fn niceness(pid: libc::pid_t, name: &str) -> Vec<i64> {
    thread_niceness(pid)
        .into_iter()
        .filter(|(comm, _)| comm == name)
        .map(|(_, nice)| nice)
        .collect()
}

/// The name and niceness of each thread of `pid` (threads that end while being read are
/// left out).
fn thread_niceness(pid: libc::pid_t) -> Vec<(String, i64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the agent's threads");
    let mut found = Vec::new();
    for task in tasks {
        let Ok(stat) = std::fs::read_to_string(task.expect("a thread").path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: the name may hold spaces, so fields count after the `)`.
        let (head, tail) = stat.rsplit_once(')').expect("a stat line");
        let comm = head.split_once('(').expect("a stat line").1;
        // Field 19 of stat(5), the 17th after the `)`.
        let nice = tail.split_whitespace().nth(16).expect("the nice field");
        found.push((comm.to_string(), nice.parse().expect("a number")));
    }
    found
}

/// Deleting a profile that endpoints list is allowed, as in calicoctl, but both the command
/// and the agent say how many endpoints still list it.
#[test]
fn deleting_a_profile_in_use_is_reported() {
    require_root();
    let store = Datastore::new();
    let home = AgentHome::new(store.url(), "node1");
    let mut agent = home.start(&[]);
    store.apply(
        "- apiVersion: v1\n  kind: profile\n  metadata: {name: databases, labels: {role: database}}\n\
         - apiVersion: v1\n  kind: workloadEndpoint\n  metadata: {name: db1, node: node1, orchestrator: o, workload: w}\n  spec: {interfaceName: calidb1, ipNetworks: [10.0.0.1/32], profiles: [databases]}\n\
         - apiVersion: v1\n  kind: workloadEndpoint\n  metadata: {name: db2, node: node2, orchestrator: o, workload: w}\n  spec: {interfaceName: calidb2, ipNetworks: [10.0.0.2/32], profiles: [databases]}\n",
    );
    agent.wait_for(&["policy view updated", "revision=1", "local_endpoints=1"]);
    let deleted = store.palisade(&["delete", "profile", "databases"], "");
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(
        String::from_utf8_lossy(&deleted.stdout),
        "Successfully deleted 1 'profile' resource(s)\n"
    );
    let warning = String::from_utf8_lossy(&deleted.stderr);
    assert!(
        warning.contains("2 workload endpoint(s) still list profile 'databases'"),
        "{warning}"
    );
    // The agent counts its own node's endpoints.
    agent.wait_for(&[
        "local endpoints list a profile that does not exist",
        "profile=databases",
        "endpoints=1",
    ]);
    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status}");
}
