//! The networks the enforcement tests build: workloads plumbed by `palisade workload add`
//! into namespaces of their own, and an "outside" namespace palisade does not manage,
//! routed through the host like any machine beyond it. Everything is undone by the test's
//! [`Cleanup`] guard.

use std::net::IpAddr;

use palisade::netplumb::host_interface_name;

use crate::Cleanup;
use crate::netns::{Netns, create_veth, run, run_ok, unique_name};
use crate::palisade_cli::Datastore;

/// A workload: its namespace, its endpoint's name and host-side interface, its addresses.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub netns: Netns,
    pub interface: String,
    pub ips: Vec<IpAddr>,
}

/// What `palisade workload add` is told about one workload.
pub struct WorkloadSpec<'a> {
    /// A short prefix for its (unique) name.
    pub prefix: &'a str,
    pub ips: &'a [&'a str],
    /// `k=v,k2=v2`, or empty.
    pub labels: &'a str,
    pub profiles: &'a [&'a str],
}

/// Makes a namespace and plumbs it with `palisade workload add` on node `node`; the host
/// side goes when the test ends (with it the host routes; the endpoint stays in the
/// test's private store).
pub fn add_workload(
    cleanup: &mut Cleanup,
    store: &Datastore,
    node: &str,
    spec: &WorkloadSpec,
) -> Workload {
    add_workload_on(cleanup, store, node, spec, None)
}

/// [`add_workload`] with the host side in the namespace `host` (a namespace that plays
/// the node), or in this process's namespace for `None`.
pub fn add_workload_on(
    cleanup: &mut Cleanup,
    store: &Datastore,
    node: &str,
    spec: &WorkloadSpec,
    host: Option<&Netns>,
) -> Workload {
    let netns = Netns::create(cleanup, "pe");
    let name = unique_name(spec.prefix);
    let mut args = vec!["workload", "add", &name, "--netns", &netns.name];
    for ip in spec.ips {
        args.extend(["--ip", ip]);
    }
    if !spec.labels.is_empty() {
        args.extend(["--labels", spec.labels]);
    }
    for profile in spec.profiles {
        args.extend(["--profile", profile]);
    }
    args.extend(["--node", node]);
    let host_ns = host.map(|h| h.name.clone());
    store.palisade_ok_in(host_ns.as_deref(), &args, "");
    let interface = host_interface_name(&name);
    let host = interface.clone();
    cleanup.defer(
        format!("delete the host side of workload {name}"),
        move || {
            // `ip -n NS` works in that namespace; `-n` of nothing is this one's.
            let mut ip_in: Vec<&str> = match &host_ns {
                Some(ns) => vec!["-n", ns],
                None => vec![],
            };
            let exists = run(
                "ip",
                &[&ip_in[..], &["link", "show", "dev", &host]].concat(),
            )
            .status
            .success();
            if exists {
                ip_in.extend(["link", "del", &host]);
                let out = run("ip", &ip_in);
                anyhow::ensure!(
                    out.status.success(),
                    "ip link del {host}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        },
    );
    Workload {
        name,
        netns,
        interface,
        ips: spec
            .ips
            .iter()
            .map(|ip| ip.parse().unwrap_or_else(|e| panic!("--ip {ip}: {e}")))
            .collect(),
    }
}

/// A namespace beyond the host: a veth to the host, addresses `<v4_net>.2/24` and
/// `<v6_net>::2/64` with the host's end at `.1` and `::1`, default routes through the host.
#[derive(Debug, Clone)]
pub struct Outside {
    pub netns: Netns,
    pub ips: Vec<IpAddr>,
}

/// `v4_net` like "10.241.250" (a /24), `v6_net` like "fd41:250" (a /64).
pub fn add_outside(cleanup: &mut Cleanup, v4_net: &str, v6_net: &str) -> Outside {
    let netns = Netns::create(cleanup, "po");
    let (host, peer) = (unique_name("poh"), unique_name("pop"));
    create_veth(cleanup, &host, &peer);
    run_ok("ip", &["link", "set", &peer, "netns", &netns.name]);
    run_ok(
        "ip",
        &["addr", "add", &format!("{v4_net}.1/24"), "dev", &host],
    );
    run_ok(
        "ip",
        &[
            "addr",
            "add",
            &format!("{v6_net}::1/64"),
            "dev",
            &host,
            "nodad",
        ],
    );
    run_ok("ip", &["link", "set", &host, "up"]);
    netns.run_ok("ip", &["link", "set", "lo", "up"]);
    netns.run_ok(
        "ip",
        &["addr", "add", &format!("{v4_net}.2/24"), "dev", &peer],
    );
    netns.run_ok(
        "ip",
        &[
            "addr",
            "add",
            &format!("{v6_net}::2/64"),
            "dev",
            &peer,
            "nodad",
        ],
    );
    netns.run_ok("ip", &["link", "set", &peer, "up"]);
    netns.run_ok(
        "ip",
        &["route", "add", "default", "via", &format!("{v4_net}.1")],
    );
    netns.run_ok(
        "ip",
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("{v6_net}::1"),
        ],
    );
    let ips = [format!("{v4_net}.2"), format!("{v6_net}::2")]
        .iter()
        .map(|ip| ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")))
        .collect();
    Outside { netns, ips }
}
