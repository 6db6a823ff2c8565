//! The real programs against the reference evaluator: random resource sets are compiled,
//! written into the kernel maps by the agent's writer, and random packets run through
//! `palisade_from_wl` / `palisade_to_wl` with BPF_PROG_TEST_RUN. Every verdict must equal
//! `policy::Model::evaluate`'s; for denied and logged packets the event the program emits
//! must name the outcome the evaluator gives (deciding rule or default, log rules).
//!
//! Each policed endpoint sits on its own (veth) interface in a private network namespace
//! (the test thread's own, so nothing outside sees it), as the kernel finds endpoints by
//! (ifindex, own address).
//!
//! Privileged: run through `cargo xtask test` as root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing unwrap is a failing test

#[path = "../../agent/tests/common/random_world.rs"]
mod random_world;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::net::IpAddr;
use std::process::Command;

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use palisade::compile::{Capacities, Image, compile};
use palisade::dataplane::{self, writer::PolicyMaps, writer::Writer};
use palisade::model::ResourceKey;
use palisade::policy::{Decision, Direction, L4, Model, Packet, Reason, Verdict};
use palisade_common::{CtKey, CtValue, EVENT_DROP, EVENT_LOG, Event, map_names, program_names};
use palisade_tests::bpf_run::{self, SkbContext};
use palisade_tests::packet::Frame;
use palisade_tests::require_root;
use random_world::{Rng, V4_ENDPOINT, V4_OTHER, V6_ENDPOINT, V6_OTHER, random_packet, world};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const INTERFACES: usize = 8;
/// Where forwarded packets came in (any index other than 0, which means "from the host").
const UPLINK: u32 = 1;

struct Dataplane {
    loaded: dataplane::LoadedObject,
    writer: Writer,
    ct: BpfHashMap<MapData, CtKey, CtValue>,
    events: RingBuf<MapData>,
}

fn load() -> Dataplane {
    let object = dataplane::ebpf_object().expect("run the tests through `cargo xtask test`");
    let mut loaded = dataplane::load(object, None).expect("cannot load the eBPF object");
    let ebpf = loaded.ebpf_mut();
    let maps = PolicyMaps::take(ebpf).expect("policy maps");
    let ct = BpfHashMap::try_from(ebpf.take_map(map_names::CT).expect("PAL_CT")).unwrap();
    let events = RingBuf::try_from(ebpf.take_map(map_names::EVENTS).expect("PAL_EVENTS")).unwrap();
    let mut writer = Writer::adopt(maps).expect("adopt fresh maps");
    // Report every drop, so each denial names its outcome.
    writer.set_switches(0, 0).unwrap();
    Dataplane {
        loaded,
        writer,
        ct,
        events,
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
    // The kernel here has no dummy driver: veth pairs, both ends used.
    for pair in 0..INTERFACES / 2 {
        let (a, b) = (
            format!("pdiff{}", 2 * pair),
            format!("pdiff{}", 2 * pair + 1),
        );
        // Children inherit the calling thread's namespace.
        let status = Command::new("ip")
            .args(["link", "add", &a, "type", "veth", "peer", "name", &b])
            .status()
            .expect("ip");
        assert!(status.success(), "ip link add {a}");
    }
    (0..INTERFACES)
        .map(|i| {
            let c = CString::new(format!("pdiff{i}")).unwrap();
            // SAFETY: a valid NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
            assert_ne!(index, 0);
            index
        })
        .collect()
}

fn l4_keys(packet: &Packet) -> (u16, u16) {
    match packet.l4 {
        L4::Ports { src, dst } => (src, dst),
        L4::Icmp { icmp_type, code } => (u16::from(icmp_type), u16::from(code)),
        L4::None => (0, 0),
    }
}

#[derive(Default, Debug)]
struct Seen {
    cases: usize,
    allowed: usize,
    denied_by_rule: usize,
    denied_by_default: usize,
    logged: usize,
    worlds: usize,
}

fn drain_events(events: &mut RingBuf<MapData>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(item) = events.next() {
        assert_eq!(item.len(), size_of::<Event>(), "event size");
        // SAFETY: the ring buffer holds `Event`s written by the program, size checked.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
    }
    out
}

/// The outcome `event` names, as the evaluator would state it.
fn outcome_of(image: &Image, event: &Event) -> Decision {
    let slot = event.generation % 2;
    let base = slot * palisade_common::capacity::OUTCOMES / 2;
    let id = event
        .outcome
        .checked_sub(base)
        .expect("outcome in the event's slot");
    let outcome = image
        .outcomes
        .get(id as usize)
        .expect("outcome index in range");
    outcome.to_decision()
}

fn check_world(
    dp: &mut Dataplane,
    ifaces: &[u32],
    rng: &mut Rng,
    packets_each: usize,
    seen: &mut Seen,
) {
    let values = world(rng);
    let resources = random_world::to_resources(&values);
    let model = Model::new(resources.clone());
    let image = compile(resources, &Capacities::UNLIMITED).unwrap();
    let endpoints: Vec<_> = model.workload_endpoints().cloned().collect();
    let ifindex_of: BTreeMap<ResourceKey, u32> = endpoints
        .iter()
        .zip(ifaces)
        .map(|(e, &i)| (e.key(), i))
        .collect();
    assert!(
        endpoints.len() <= ifaces.len(),
        "more endpoints than interfaces"
    );
    dp.writer.publish(&image, &ifindex_of, |_| Ok(())).unwrap();
    drain_events(&mut dp.events);
    seen.worlds += 1;

    let peers = |v4: bool| -> Vec<IpAddr> {
        let (a, b): (&[&str], &[&str]) = if v4 {
            (&V4_ENDPOINT, &V4_OTHER)
        } else {
            (&V6_ENDPOINT, &V6_OTHER)
        };
        a.iter().chain(b).map(|s| s.parse().unwrap()).collect()
    };
    for endpoint in &endpoints {
        let key = endpoint.key();
        let ifindex = ifindex_of[&key];
        for net in &endpoint.spec.ip_networks {
            let local = net.addr();
            let peers = peers(local.is_ipv4());
            for direction in [Direction::Ingress, Direction::Egress] {
                for _ in 0..packets_each {
                    let peer = rng.pick(&peers);
                    let packet = random_packet(rng, local, peer, direction);
                    let want = model.evaluate(&key, direction, &packet).unwrap();
                    let (a, b) = l4_keys(&packet);
                    let data =
                        Frame::for_keys(packet.src, packet.dst, packet.protocol, a, b).build();
                    let ctx = SkbContext {
                        ifindex,
                        ingress_ifindex: UPLINK,
                    };
                    let program = match direction {
                        Direction::Egress => program_names::FROM_WORKLOAD,
                        Direction::Ingress => program_names::TO_WORKLOAD,
                    };
                    let verdict = bpf_run::run(dp.loaded.program(program).unwrap(), &data, ctx);
                    let got = match verdict {
                        TC_ACT_OK => Verdict::Allow,
                        TC_ACT_SHOT => Verdict::Deny,
                        other => panic!("unexpected return value {other}"),
                    };
                    let context = || {
                        format!(
                            "\n{key} {direction} {packet} on ifindex {ifindex}\nresources: {}",
                            serde_json::to_string_pretty(&values).unwrap()
                        )
                    };
                    assert_eq!(got, want.verdict, "verdict{}", context());
                    let events = drain_events(&mut dp.events);
                    let drop = events.iter().find(|e| e.kind == EVENT_DROP);
                    let log = events.iter().find(|e| e.kind == EVENT_LOG);
                    assert_eq!(
                        log.is_some(),
                        !want.logged.is_empty(),
                        "log event{}",
                        context()
                    );
                    if let Some(event) = drop.or(log) {
                        assert_eq!(outcome_of(&image, event), want, "outcome{}", context());
                    }
                    assert_eq!(
                        drop.is_some(),
                        want.verdict == Verdict::Deny,
                        "drop event{}",
                        context()
                    );
                    seen.cases += 1;
                    seen.logged += usize::from(!want.logged.is_empty());
                    match (want.verdict, &want.reason) {
                        (Verdict::Allow, _) => {
                            seen.allowed += 1;
                            // Forget the flow, so no later case is taken for its reply.
                            let keys: Vec<CtKey> = dp.ct.keys().map(Result::unwrap).collect();
                            for k in keys {
                                dp.ct.remove(&k).unwrap();
                            }
                        }
                        (Verdict::Deny, Reason::Rule(_)) => seen.denied_by_rule += 1,
                        (Verdict::Deny, _) => seen.denied_by_default += 1,
                    }
                }
            }
        }
    }
}

#[test]
fn random_policies_and_packets_agree_with_the_evaluator() {
    require_root();
    let ifaces = private_interfaces();
    let mut dp = load();
    let mut rng = Rng(0x0B9F_D1FF);
    let mut seen = Seen::default();
    while seen.cases < 100_000 {
        check_world(&mut dp, &ifaces, &mut rng, 12, &mut seen);
    }
    eprintln!("{seen:?}");
    for (what, n) in [
        ("allowed", seen.allowed),
        ("denied by a rule", seen.denied_by_rule),
        ("denied by default", seen.denied_by_default),
        ("logged", seen.logged),
    ] {
        assert!(n >= 1_000, "only {n} cases {what}");
    }
}
