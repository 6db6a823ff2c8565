//! Connectivity matrices: every probe between every ordered pair of peers (workloads and
//! outside namespaces), all sent at once, each compared with `palisade trace`'s verdict for
//! the same packet; printed, so that a failing run shows the whole picture.
//!
//! Reachable means: TCP, the server read the probe's message; UDP, the listener got the
//! datagram; ICMP, the echo reply came back. A reachable probe must also have had its reply
//! (replies of allowed flows pass by connection tracking), or the cell is "ONE-WAY".

use std::net::IpAddr;
use std::thread;
use std::time::Duration;

use crate::Cleanup;
use crate::agent_process::{AgentHome, AgentProcess};
use crate::palisade_cli::Datastore;
use crate::topology::{Outside, Workload, WorkloadSpec, add_outside, add_workload};
use crate::traffic::{Observed, Probe, Services, probe};

/// How long a probe waits before calling its destination unreachable. Allowed probes take
/// well under a millisecond; this only bounds the denied ones (all probes run at once).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// The second chance of a probe that should have got through and did not.
const RETRY_TIMEOUT: Duration = Duration::from_secs(3);

/// One end of the matrix, with its services.
pub struct Peer {
    /// A short name for the printed matrix (db1, app1, outside, ...).
    pub label: &'static str,
    /// The workload endpoint's name, traced by name for IPv4 (by address otherwise).
    pub endpoint: Option<String>,
    pub netns: String,
    pub ips: Vec<IpAddr>,
    pub services: Services,
}

impl Peer {
    pub fn workload(label: &'static str, workload: &Workload, tcp: &[u16], udp: &[u16]) -> Peer {
        Peer {
            label,
            endpoint: Some(workload.name.clone()),
            netns: workload.netns.name.clone(),
            ips: workload.ips.clone(),
            services: Services::start(&workload.netns.name, tcp, udp),
        }
    }

    pub fn outside(outside: &Outside, tcp: &[u16], udp: &[u16]) -> Peer {
        Peer {
            label: "outside",
            endpoint: None,
            netns: outside.netns.name.clone(),
            ips: outside.ips.clone(),
            services: Services::start(&outside.netns.name, tcp, udp),
        }
    }

    pub fn ip(&self, ipv6: bool) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| ip.is_ipv6() == ipv6)
    }

    fn trace_as(&self, ipv6: bool) -> String {
        match (&self.endpoint, self.ip(ipv6)) {
            (Some(name), _) if !ipv6 => name.clone(),
            (_, Some(ip)) => ip.to_string(),
            (_, None) => unreachable!("peers without the family are not probed"),
        }
    }
}

/// Which packet a cell is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    pub src: &'static str,
    pub dst: &'static str,
    pub probe: Probe,
    pub ipv6: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Cell {
    pub observed: Observed,
    pub traced: bool,
}

impl Cell {
    pub fn agrees(&self) -> bool {
        self.observed.reached == self.traced && self.observed.replied == self.traced
    }

    fn show(&self) -> String {
        let word = |allowed: bool| if allowed { "allow" } else { "deny" };
        if self.agrees() {
            return word(self.traced).to_string();
        }
        let seen = match self.observed {
            Observed {
                reached: true,
                replied: false,
            } => "ONE-WAY".to_string(),
            o => word(o.reached).to_uppercase(),
        };
        format!("{seen}(trace:{})", word(self.traced))
    }
}

pub struct Matrix {
    pub cells: Vec<(Case, Cell)>,
}

impl Matrix {
    /// Probes and traces every case, prints the matrix, and panics if the dataplane and
    /// trace differ anywhere.
    pub fn run(
        title: &str,
        store: &Datastore,
        peers: &[Peer],
        probes: &[Probe],
        families: &[bool],
    ) -> Matrix {
        let mut cases: Vec<(&Peer, &Peer, Probe, bool)> = Vec::new();
        for &ipv6 in families {
            for s in peers {
                for d in peers {
                    if s.label != d.label && s.ip(ipv6).is_some() && d.ip(ipv6).is_some() {
                        cases.extend(probes.iter().map(|&p| (s, d, p, ipv6)));
                    }
                }
            }
        }
        let (observed, traced) = thread::scope(|scope| {
            let probing: Vec<_> = cases
                .iter()
                .map(|&(s, d, p, ipv6)| {
                    let (inbox, dst) = (d.services.inbox(), d.ip(ipv6));
                    scope.spawn(move || {
                        let dst = dst.unwrap_or_else(|| unreachable!("checked above"));
                        probe(&s.netns, dst, p, &inbox, PROBE_TIMEOUT)
                    })
                })
                .collect();
            // Tracing is a process per packet: two at a time, beside the probes.
            let tracing: Vec<_> = cases
                .chunks(cases.len().div_ceil(2).max(1))
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|(s, d, p, ipv6)| {
                                store.trace_allows(
                                    &s.trace_as(*ipv6),
                                    &d.trace_as(*ipv6),
                                    *p,
                                    *ipv6,
                                )
                            })
                            .collect::<Vec<bool>>()
                    })
                })
                .collect();
            let traced: Vec<bool> = tracing
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect();
            let observed: Vec<Observed> = probing
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect();
            (observed, traced)
        });
        let cells: Vec<(Case, Cell)> = cases
            .iter()
            .zip(observed.into_iter().zip(traced))
            .map(|(&(s, d, what, ipv6), (mut observed, traced))| {
                // A probe that should have got through and did not gets a second, slower
                // chance: a busy machine can delay a probe past its timeout. One that got
                // through where it should not have is never a matter of time.
                if traced && observed != Observed::BOTH_WAYS {
                    let dst = d.ip(ipv6).unwrap_or_else(|| unreachable!("checked above"));
                    observed = probe(&s.netns, dst, what, &d.services.inbox(), RETRY_TIMEOUT);
                }
                let case = Case {
                    src: s.label,
                    dst: d.label,
                    probe: what,
                    ipv6,
                };
                (case, Cell { observed, traced })
            })
            .collect();
        let matrix = Matrix { cells };
        let table = matrix.render(title, probes);
        println!("{table}");
        let differences: Vec<String> = matrix
            .cells
            .iter()
            .filter(|(_, c)| !c.agrees())
            .map(|(k, c)| {
                let family = if k.ipv6 { "IPv6" } else { "IPv4" };
                format!("{family} {} -> {} {}: {}", k.src, k.dst, k.probe, c.show())
            })
            .collect();
        assert!(
            differences.is_empty(),
            "{title}: the dataplane and palisade trace differ:\n{}\n{table}",
            differences.join("\n")
        );
        matrix
    }

    fn render(&self, title: &str, probes: &[Probe]) -> String {
        let mut table =
            format!("\n{title}: observed, or OBSERVED(trace:verdict) where they differ");
        let mut row = None;
        for (case, cell) in &self.cells {
            if row != Some((case.src, case.dst, case.ipv6)) {
                if row.is_none_or(|(_, _, v6)| v6 != case.ipv6) {
                    let family = if case.ipv6 { "IPv6" } else { "IPv4" };
                    table += &format!("\n{:<20}", format!("{family} src -> dst"));
                    for p in probes {
                        table += &format!(" {:<17}", p.to_string());
                    }
                }
                row = Some((case.src, case.dst, case.ipv6));
                table += &format!("\n{:<20}", format!("{} -> {}", case.src, case.dst));
            }
            table += &format!(" {:<17}", cell.show());
        }
        table + "\n"
    }

    /// The cell of `src -> dst probe` over IPv4 or IPv6.
    pub fn cell(&self, src: &str, dst: &str, probe: Probe, ipv6: bool) -> Cell {
        self.cells
            .iter()
            .find(|(k, _)| k.src == src && k.dst == dst && k.probe == probe && k.ipv6 == ipv6)
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("no cell {src} -> {dst} {probe} (ipv6: {ipv6})"))
    }

    /// Whether `src -> dst probe` is allowed over IPv4 (trace and dataplane agree: checked).
    pub fn allows(&self, src: &str, dst: &str, probe: Probe) -> bool {
        self.cell(src, dst, probe, false).traced
    }

    /// Whether `src -> dst probe` is allowed over IPv6.
    pub fn allows_v6(&self, src: &str, dst: &str, probe: Probe) -> bool {
        self.cell(src, dst, probe, true).traced
    }
}

/// One workload of a [`Scene`]: its label, profiles and addresses.
pub struct WorkloadPlan<'a> {
    pub label: &'static str,
    pub profiles: &'a [&'a str],
    pub ips: &'a [&'a str],
}

/// What a matrix test runs on: a private store, an agent home on node `node`, workloads
/// plumbed into namespaces of their own, an outside namespace, and services on all of
/// them. Dropped in field order: the agent before its home (and with it the pins), the
/// services before the test's cleanup deletes their namespaces.
pub struct Scene {
    pub agent: Option<AgentProcess>,
    pub home: AgentHome,
    pub store: Datastore,
    pub peers: Vec<Peer>,
    pub workloads: Vec<Workload>,
}

impl Scene {
    /// Builds the scene, without an agent. `outside` is the outside namespace's /24 and
    /// /64 (see [`add_outside`]), if there is one; every peer serves `tcp` and `udp`.
    pub fn build(
        cleanup: &mut Cleanup,
        node: &str,
        workloads: &[WorkloadPlan],
        outside: Option<(&str, &str)>,
        tcp: &[u16],
        udp: &[u16],
    ) -> Scene {
        Scene::build_on(
            Datastore::new(),
            cleanup,
            node,
            workloads,
            outside,
            tcp,
            udp,
        )
    }

    /// [`Scene::build`] on `store` rather than a private embedded store.
    pub fn build_on(
        store: Datastore,
        cleanup: &mut Cleanup,
        node: &str,
        workloads: &[WorkloadPlan],
        outside: Option<(&str, &str)>,
        tcp: &[u16],
        udp: &[u16],
    ) -> Scene {
        let home = AgentHome::new(store.url(), node);
        let mut peers = Vec::new();
        let mut plumbed = Vec::new();
        for plan in workloads {
            let spec = WorkloadSpec {
                prefix: &plan.label[..plan.label.len().min(4)],
                ips: plan.ips,
                labels: "",
                profiles: plan.profiles,
            };
            let workload = add_workload(cleanup, &store, node, &spec);
            peers.push(Peer::workload(plan.label, &workload, tcp, udp));
            plumbed.push(workload);
        }
        if let Some((v4, v6)) = outside {
            peers.push(Peer::outside(&add_outside(cleanup, v4, v6), tcp, udp));
        }
        Scene {
            agent: None,
            home,
            store,
            peers,
            workloads: plumbed,
        }
    }

    pub fn peer(&self, label: &str) -> &Peer {
        self.peers
            .iter()
            .find(|p| p.label == label)
            .unwrap_or_else(|| panic!("no peer {label}"))
    }

    /// What `what` from `src` to `dst` (labels) sees now, over IPv4 or IPv6.
    pub fn probe(&self, src: &str, dst: &str, what: Probe, ipv6: bool) -> Observed {
        let (s, d) = (self.peer(src), self.peer(dst));
        let address = d
            .ip(ipv6)
            .unwrap_or_else(|| panic!("{dst} has no address of that family"));
        probe(&s.netns, address, what, &d.services.inbox(), PROBE_TIMEOUT)
    }

    pub fn start_agent(&mut self) {
        self.agent = Some(self.home.start(&[]));
    }

    pub fn agent(&mut self) -> &mut AgentProcess {
        self.agent.as_mut().expect("the agent was started")
    }

    /// The host-side interface of each workload, in order (owned: tests go on to stop
    /// and start the agent, which needs the scene mutably).
    pub fn interfaces(&self) -> Vec<String> {
        self.workloads.iter().map(|w| w.interface.clone()).collect()
    }

    /// Waits until the agent enforces the store's current revision on every workload.
    pub fn wait_for_enforcement(&mut self) {
        let revision = self.store.revision();
        let interfaces: Vec<String> = self.workloads.iter().map(|w| w.interface.clone()).collect();
        let interfaces: Vec<&str> = interfaces.iter().map(String::as_str).collect();
        self.agent().wait_until_enforcing(&interfaces, revision);
    }

    /// [`Matrix::run`] on every peer.
    pub fn matrix(&self, title: &str, probes: &[Probe], families: &[bool]) -> Matrix {
        Matrix::run(title, &self.store, &self.peers, probes, families)
    }
}
