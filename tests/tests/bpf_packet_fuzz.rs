//! Packet fuzzing through the real programs: valid frames of random policies' endpoints
//! and peers, mutated (`packet_mutation`: cut short at every offset, bits flipped, IHL,
//! lengths, options, IPv6 extension chains, fragments, protocols), run through
//! `palisade_from_wl` / `palisade_to_wl` with BPF_PROG_TEST_RUN. The programs may drop what
//! they like, but never pass a frame that the reference (`reference_packet`, written from
//! the RFCs, plus `policy::Model::evaluate`) refuses, or an IP packet it denies: not from an
//! address that is not the endpoint's own, not a later fragment whose datagram's first
//! fragment the reference did not allow through the same point, not a packet the policy
//! denies. Anything passed is checked, so each case starts without conntrack state.
//!
//! 100,000 mutated frames run by default, always the same ones; `PALISADE_FUZZ_PACKETS` sets
//! another count and `PALISADE_FUZZ_SEED` other frames (`cargo xtask fuzz` sends 1,000,000
//! from a fresh seed each run, and a failure names the seed that reproduces it).
//! Privileged: run through `cargo xtask test` as root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing unwrap is a failing test

#[path = "../../agent/tests/common/random_world.rs"]
mod random_world;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use aya::maps::{HashMap as BpfHashMap, MapData};
use palisade::compile::{Capacities, compile};
use palisade::dataplane::{self, writer::PolicyMaps, writer::Writer};
use palisade::model::ResourceKey;
use palisade::policy::{Direction, Model, Verdict};
use palisade_common::{CtKey, CtValue, map_names, program_names};
use palisade_tests::bpf_run::{self, SkbContext, TC_ACT_OK, TC_ACT_SHOT};
use palisade_tests::packet::{
    Frame, IPPROTO_ICMPV6, IPPROTO_TCP, IPV6_DESTINATION_OPTIONS, IPV6_HOP_BY_HOP, IPV6_ROUTING,
    TCP_ACK, arp_request,
};
use palisade_tests::packet_mutation::{self, Mutation};
use palisade_tests::reference_packet::{self, Fragment, Reading};
use palisade_tests::require_root;
use random_world::{Rng, V4_ENDPOINT, V4_OTHER, V6_ENDPOINT, V6_OTHER, random_packet, world};

const INTERFACES: usize = 8;
/// Where forwarded packets came in (not 0, which means "made by the host").
const UPLINK: u32 = 1;
const PACKETS_ENV: &str = "PALISADE_FUZZ_PACKETS";
const DEFAULT_PACKETS: u64 = 100_000;
const SEED_ENV: &str = "PALISADE_FUZZ_SEED";
/// CI's seed: the same frames every run, so that a failure there is never a matter of luck.
const DEFAULT_SEED: u64 = 0x5EED_F022;
/// Bypasses shown in full when the test fails.
const SHOWN: usize = 20;

/// A first fragment the reference allowed through an enforcement point: its later
/// fragments may pass there too.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Datagram {
    ifindex: u32,
    egress: bool,
    src: IpAddr,
    dst: IpAddr,
    id: u32,
}

#[derive(Default, Debug)]
struct Tally {
    /// Frames the programs ran on (the counts below split them).
    frames: u64,
    /// Frames BPF_PROG_TEST_RUN would not run (shorter than the fixed IP header), not in
    /// `frames`; the reference refuses each of them too.
    refused_by_test_runner: u64,
    passed: u64,
    dropped: u64,
    refused_by_reference: u64,
    link_control: u64,
    later_fragments: u64,
    denied_by_policy: u64,
    worlds: u64,
    bypasses: u64,
}

struct Fuzzer {
    loaded: dataplane::LoadedObject,
    writer: Writer,
    ct: BpfHashMap<MapData, CtKey, CtValue>,
    ifaces: Vec<u32>,
    rng: Rng,
    tally: Tally,
    allowed_firsts: BTreeSet<Datagram>,
    shown: Vec<String>,
}

impl Fuzzer {
    fn new(seed: u64) -> Fuzzer {
        let ifaces = private_interfaces();
        let object = dataplane::ebpf_object().expect("run the tests through `cargo xtask test`");
        let mut loaded = dataplane::load(object, None).expect("cannot load the eBPF object");
        let ebpf = loaded.ebpf_mut();
        let maps = PolicyMaps::take(ebpf).expect("policy maps");
        let ct = BpfHashMap::try_from(ebpf.take_map(map_names::CT).expect("PAL_CT")).unwrap();
        let writer = Writer::adopt(maps).expect("adopt fresh maps");
        Fuzzer {
            loaded,
            writer,
            ct,
            ifaces,
            rng: Rng(seed),
            tally: Tally::default(),
            allowed_firsts: BTreeSet::new(),
            shown: Vec::new(),
        }
    }

    /// A random world, published; then mutated frames of its endpoints until `until`
    /// frames have run in all.
    fn world(&mut self, until: u64) {
        let values = world(&mut self.rng);
        let resources = random_world::to_resources(&values);
        let model = Model::new(resources.clone());
        let image = compile(resources, &Capacities::UNLIMITED).unwrap();
        let endpoints: Vec<_> = model.workload_endpoints().cloned().collect();
        assert!(endpoints.len() <= self.ifaces.len());
        let ifindex_of: BTreeMap<ResourceKey, u32> = endpoints
            .iter()
            .zip(&self.ifaces)
            .map(|(e, &i)| (e.key(), i))
            .collect();
        self.writer
            .publish(&image, &ifindex_of, |_| Ok(()))
            .unwrap();
        self.tally.worlds += 1;
        for endpoint in &endpoints {
            let key = endpoint.key();
            let ifindex = ifindex_of[&key];
            let own: Vec<IpAddr> = endpoint.spec.ip_networks.iter().map(|n| n.addr()).collect();
            for &local in &own {
                for direction in [Direction::Egress, Direction::Ingress] {
                    for _ in 0..8 {
                        if self.tally.frames >= until {
                            return;
                        }
                        let base = self.base_frame(local, direction);
                        let mut cases: Vec<(Vec<u8>, Vec<Mutation>)> = Vec::new();
                        if self.rng.chance(1) {
                            cases.extend(
                                packet_mutation::truncations(&base).map(|(f, m)| (f, vec![m])),
                            );
                        } else {
                            let rng = &mut self.rng;
                            cases.push(packet_mutation::mutate(&base, &mut || rng.next()));
                        }
                        for (frame, mutations) in cases {
                            self.check(&model, &key, &own, ifindex, direction, &frame, &mutations);
                        }
                    }
                }
            }
        }
    }

    /// A valid frame between `local` and a peer of its family: a new flow's first packet
    /// of a random protocol, sometimes a TCP segment of no flow, IPv6 discovery or ARP,
    /// sometimes with IPv4 options, IPv6 extension headers or as a fragment.
    fn base_frame(&mut self, local: IpAddr, direction: Direction) -> Vec<u8> {
        let rng = &mut self.rng;
        let peers: Vec<IpAddr> = if local.is_ipv4() {
            V4_ENDPOINT
                .iter()
                .chain(&V4_OTHER)
                .map(|s| s.parse().unwrap())
                .collect()
        } else {
            V6_ENDPOINT
                .iter()
                .chain(&V6_OTHER)
                .map(|s| s.parse().unwrap())
                .collect()
        };
        let peer = rng.pick(&peers);
        let packet = random_packet(rng, local, peer, direction);
        let (src, dst) = (packet.src, packet.dst);
        let mut frame = match rng.below(20) {
            0 if local.is_ipv4() => {
                return arp_request("10.0.0.1".parse().unwrap(), "169.254.1.1".parse().unwrap());
            }
            0 => {
                let link: IpAddr = "fe80::1".parse().unwrap();
                let all_nodes: IpAddr = "ff02::1".parse().unwrap();
                let (s, d) = rng.pick(&[(link, all_nodes), (src, all_nodes), (src, dst)]);
                Frame::icmp(s, d, 133 + rng.below(5) as u8, 0, 0)
            }
            1 => Frame::tcp(
                SocketAddr::new(src, 40000),
                SocketAddr::new(dst, 80),
                TCP_ACK,
            ),
            _ => {
                let (a, b) = match packet.l4 {
                    palisade::policy::L4::Ports { src, dst } => (src, dst),
                    palisade::policy::L4::Icmp { icmp_type, code } => {
                        (u16::from(icmp_type), u16::from(code))
                    }
                    palisade::policy::L4::None => (0, 0),
                };
                Frame::for_keys(src, dst, packet.protocol, a, b)
            }
        };
        if local.is_ipv4() && rng.chance(15) {
            frame = frame.ipv4_options(1 + rng.below(10));
        }
        if local.is_ipv6() && rng.chance(20) {
            let chain: Vec<u8> = (0..1 + rng.below(5))
                .map(|_| rng.pick(&[IPV6_HOP_BY_HOP, IPV6_DESTINATION_OPTIONS, IPV6_ROUTING]))
                .collect();
            frame = frame.ipv6_extensions(&chain);
        }
        if rng.chance(10) {
            let id = rng.below(4) as u32;
            frame = if rng.chance(50) {
                frame.fragment(id, 0, true)
            } else {
                let protocol = rng.pick(&[IPPROTO_TCP, 17, IPPROTO_ICMPV6, 1]);
                Frame::raw(src, dst, protocol, vec![0xab; 16]).fragment(
                    id,
                    1 + rng.below(3) as u16,
                    rng.chance(50),
                )
            };
        }
        frame.build()
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        model: &Model,
        key: &ResourceKey,
        own: &[IpAddr],
        ifindex: u32,
        direction: Direction,
        frame: &[u8],
        mutations: &[Mutation],
    ) {
        let reading = reference_packet::read(frame, direction);
        let program = match direction {
            Direction::Egress => program_names::FROM_WORKLOAD,
            Direction::Ingress => program_names::TO_WORKLOAD,
        };
        let ctx = SkbContext {
            ifindex,
            ingress_ifindex: UPLINK,
        };
        let action = match bpf_run::try_run(self.loaded.program(program).unwrap(), frame, ctx) {
            Ok(action) => action,
            Err(err) => {
                assert!(
                    matches!(reading, Reading::Refused(_)),
                    "the test runner refused a {}-byte frame the reference reads as {reading}: {err}",
                    frame.len()
                );
                self.tally.refused_by_test_runner += 1;
                return;
            }
        };
        self.tally.frames += 1;
        let egress = direction == Direction::Egress;
        let passed = match action {
            TC_ACT_OK => true,
            TC_ACT_SHOT => false,
            other => panic!("unexpected TC action {other}"),
        };
        // What the reference says of it: `Ok` may pass, `Err` must be dropped (and why).
        let may_pass: Result<(), String> = match &reading {
            Reading::LinkControl(_) => {
                self.tally.link_control += 1;
                Ok(())
            }
            Reading::Refused(why) => {
                self.tally.refused_by_reference += 1;
                Err(format!("the reference refuses it: {why}"))
            }
            Reading::Ip(ip) => {
                let packet = &ip.packet;
                let own_addr = if egress { packet.src } else { packet.dst };
                if let Fragment::Later { id } = ip.fragment {
                    self.tally.later_fragments += 1;
                    let datagram = Datagram {
                        ifindex,
                        egress,
                        src: packet.src,
                        dst: packet.dst,
                        id,
                    };
                    if self.allowed_firsts.contains(&datagram) {
                        Ok(())
                    } else {
                        Err(format!(
                            "a later fragment of {datagram:?}, whose first fragment was not allowed here"
                        ))
                    }
                } else if !own.contains(&own_addr) {
                    Err(format!("{own_addr} is not the endpoint's ({own:?})"))
                } else {
                    let decision = model.evaluate(key, direction, packet).unwrap();
                    if decision.verdict == Verdict::Allow {
                        Ok(())
                    } else {
                        self.tally.denied_by_policy += 1;
                        Err(format!("policy denies it: {}", decision.reason))
                    }
                }
            }
        };
        if passed {
            self.tally.passed += 1;
            if let Err(why) = &may_pass {
                self.tally.bypasses += 1;
                if self.shown.len() < SHOWN {
                    self.shown.push(format!(
                        "{key} {direction} on ifindex {ifindex}: {reading}\n  passed, but {why}\n  \
                         mutations {mutations:?}\n  frame {:02x?}",
                        &frame[..frame.len().min(160)]
                    ));
                }
            }
            if let (Reading::Ip(ip), Ok(())) = (&reading, &may_pass)
                && let Fragment::First { id } = ip.fragment
            {
                self.allowed_firsts.insert(Datagram {
                    ifindex,
                    egress,
                    src: ip.packet.src,
                    dst: ip.packet.dst,
                    id,
                });
            }
            // Forget the flow, so that no later case passes as its reply.
            let keys: Vec<CtKey> = self.ct.keys().map(Result::unwrap).collect();
            for k in keys {
                self.ct.remove(&k).unwrap();
            }
        } else {
            self.tally.dropped += 1;
        }
    }
}

/// Moves the calling thread into a fresh network namespace holding `INTERFACES` interfaces;
/// returns their indexes. The namespace vanishes with the thread.
fn private_interfaces() -> Vec<u32> {
    // SAFETY: unshare(2) with CLONE_NEWNET changes only the calling thread's namespace.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare(CLONE_NEWNET)"
    );
    for pair in 0..INTERFACES / 2 {
        let (a, b) = (
            format!("pfuzz{}", 2 * pair),
            format!("pfuzz{}", 2 * pair + 1),
        );
        let status = Command::new("ip")
            .args(["link", "add", &a, "type", "veth", "peer", "name", &b])
            .status()
            .expect("ip");
        assert!(status.success(), "ip link add {a}");
    }
    (0..INTERFACES)
        .map(|i| {
            let c = CString::new(format!("pfuzz{i}")).unwrap();
            // SAFETY: a valid NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
            assert_ne!(index, 0);
            index
        })
        .collect()
}

#[test]
fn mutated_packets_never_pass_what_the_reference_drops() {
    require_root();
    let number = |name: &str, default: u64| {
        std::env::var(name).ok().map_or(default, |v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} is a number, not {v:?}"))
        })
    };
    let packets = number(PACKETS_ENV, DEFAULT_PACKETS);
    let seed = number(SEED_ENV, DEFAULT_SEED);
    let mut fuzzer = Fuzzer::new(seed);
    while fuzzer.tally.frames < packets {
        fuzzer.world(packets);
    }
    let tally = &fuzzer.tally;
    eprintln!("seed {seed}: {tally:#?}");
    assert!(
        fuzzer.shown.is_empty(),
        "{} of {} mutated frames passed although the reference drops them \
         (reproduce with {SEED_ENV}={seed} {PACKETS_ENV}={packets}); the first:\n{}",
        tally.bypasses,
        tally.frames,
        fuzzer.shown.join("\n")
    );
    // The mix must exercise every kind of verdict, or the fuzzer proves little.
    for (what, count) in [
        ("passed", tally.passed),
        ("refused by the reference", tally.refused_by_reference),
        ("denied by policy", tally.denied_by_policy),
        ("later fragments", tally.later_fragments),
        ("link control", tally.link_control),
    ] {
        assert!(
            count * 200 >= tally.frames,
            "only {count} of {} frames {what}",
            tally.frames
        );
    }
}
