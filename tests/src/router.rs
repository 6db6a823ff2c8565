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

    /// The packets the router's IP stack forwarded so far: IPv4 (`IpForwDatagrams`) and
    /// IPv6 (`Ip6OutForwDatagrams`).
    pub fn forwarded(&self) -> (u64, u64) {
        let snmp = self.ns.run_ok("cat", &["/proc/net/snmp"]);
        // Two "Ip:" lines: the field names, then their values.
        let ip: Vec<Vec<&str>> = snmp
            .lines()
            .filter_map(|l| l.strip_prefix("Ip: "))
            .map(|l| l.split_whitespace().collect())
            .collect();
        let v4 = match ip.as_slice() {
            [names, values] => names
                .iter()
                .position(|n| *n == "ForwDatagrams")
                .and_then(|i| values.get(i)?.parse().ok()),
            _ => None,
        };
        let snmp6 = self.ns.run_ok("cat", &["/proc/net/snmp6"]);
        let v6 = snmp6.lines().find_map(|l| {
            l.strip_prefix("Ip6OutForwDatagrams")
                .and_then(|v| v.trim().parse().ok())
        });
        match (v4, v6) {
            (Some(v4), Some(v6)) => (v4, v6),
            _ => panic!("no forwarding counters in /proc/net/snmp{{,6}}:\n{snmp}\n{snmp6}"),
        }
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
