//! A namespace that plays the node: workloads are plumbed into it by `palisade workload
//! add` run there, an agent can run there, and netfilter rulesets are loaded there, so
//! nothing touches the machine's own namespace. Deleted, with every interface in it, by
//! the test's cleanup guard.

use crate::Cleanup;
use crate::netns::{Netns, unique_name};
use crate::palisade_cli::Datastore;
use crate::topology::{Workload, WorkloadSpec, add_workload_on};

pub struct Router {
    pub ns: Netns,
}

impl Router {
    /// A fresh router namespace: loopback up, IPv4 and IPv6 forwarding on, and a default
    /// route into a veth that leads nowhere (proxy ARP answers the workloads' gateway
    /// only for addresses the node has a route to).
    pub fn create(cleanup: &mut Cleanup) -> Router {
        let ns = Netns::create(cleanup, "prt");
        ns.run_ok("ip", &["link", "set", "lo", "up"]);
        let (sink, peer) = (unique_name("snk"), unique_name("snp"));
        ns.run_ok(
            "ip",
            &["link", "add", &sink, "type", "veth", "peer", "name", &peer],
        );
        for end in [&sink, &peer] {
            ns.run_ok("ip", &["link", "set", end, "up"]);
        }
        ns.run_ok("ip", &["addr", "add", "169.254.255.1/30", "dev", &sink]);
        ns.run_ok("ip", &["route", "add", "default", "dev", &sink]);
        let router = Router { ns };
        router.sysctl("net.ipv4.ip_forward", "1");
        router.sysctl("net.ipv6.conf.all.forwarding", "1");
        router
    }

    /// Sets a sysctl of this namespace (`/proc/sys/net` shows the reader's namespace).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.ns
            .run_ok("sysctl", &["-q", "-w", &format!("{key}={value}")]);
    }

    /// `palisade workload add` run in the router: the workload's host side is here.
    pub fn add_workload(
        &self,
        cleanup: &mut Cleanup,
        store: &Datastore,
        node: &str,
        spec: &WorkloadSpec,
    ) -> Workload {
        add_workload_on(cleanup, store, node, spec, Some(&self.ns))
    }

    /// A veth pair `name` / `<peer>` in the router, both ends up: the host side of a
    /// workload that sends nothing, so that dispatch runs at a node's scale.
    pub fn idle_interface(&self, name: &str) {
        let peer = unique_name("idl");
        self.ns.run_ok(
            "ip",
            &["link", "add", name, "type", "veth", "peer", "name", &peer],
        );
        self.ns.run_ok("ip", &["link", "set", name, "up"]);
        self.ns.run_ok("ip", &["link", "set", &peer, "up"]);
    }
}
