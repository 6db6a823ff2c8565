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
//! The second test runs random flows through conntrack, both ways, across policy changes
//! (new generations), time passing (entries aged) and lost entries, against the reference
//! model of conntrack in `palisade_tests::conntrack_model` over the same evaluator: pickup,
//! revocation, revoked flows held and expired, re-checks, with every counter and event.
//!
//! Privileged: run through `cargo xtask test` as root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing unwrap is a failing test

#[path = "../../agent/tests/common/random_world.rs"]
mod random_world;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::net::IpAddr;
use std::process::Command;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use palisade::compile::{Capacities, Image, compile};
use palisade::dataplane::conntrack::monotonic_coarse_ns;
use palisade::dataplane::{self, writer::PolicyMaps, writer::Writer};
use palisade::model::ResourceKey;
use palisade::policy::{Decision, Direction, L4, Model, Packet, Reason, Verdict};
use palisade_common::{
    Counter, CtKey, CtValue, DROP_POLICY, DROP_REVOKED, EVENT_DROP, EVENT_LOG, Event, STAT_COUNT,
    STAT_CT_ESTABLISHED, STAT_CT_NEW, STAT_CT_PICKED_UP, STAT_CT_RECHECKED, STAT_NAMES, map_names,
    program_names,
};
use palisade_tests::bpf_run::{self, SkbContext};
use palisade_tests::conntrack_model::{
    ConntrackModel, Crossing, Outcome as ConntrackOutcome, key_of,
};
use palisade_tests::packet::Frame;
use palisade_tests::packet::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
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

/// What the conntrack differential saw, by the model's outcome.
#[derive(Default, Debug)]
struct FlowsSeen {
    packets: usize,
    established: usize,
    rechecked: usize,
    new_allowed: usize,
    new_denied: usize,
    picked_up: usize,
    pickup_denied: usize,
    revoked_by_recheck: usize,
    revoked_held: usize,
    /// Packets of a flow revoked earlier that policy decided, its entry expired.
    after_revoked_expired: usize,
    generations: usize,
    agings: usize,
    forgets: usize,
}

/// One flow of a conntrack scenario: its endpoint and opening packet.
struct PlannedFlow {
    endpoint: usize,
    origin: Direction,
    opening: Packet,
    echo_id: u16,
}

/// World changes that keep every endpoint where it is, with its addresses: policy,
/// profiles and endpoint labels (what a re-check is about).
fn change_policy_only(world: &mut random_world::World, rng: &mut Rng) -> &'static str {
    loop {
        let before = world.values.clone();
        let what = world.change(rng);
        if what.starts_with("endpoint") && what != "endpoint labels changed" {
            world.values = before;
            continue;
        }
        return what;
    }
}

/// Ages of the idle times the scenarios jump by: around each timeout, half a second off
/// the whole seconds the timeouts are, so that no idle time comes within a clock tick of
/// one.
const AGINGS_NS: [u64; 5] = [
    4_500_000_000,
    10_500_000_000,
    30_500_000_000,
    60_500_000_000,
    6 * 3600 * 1_000_000_000 + 500_000_000,
];

/// A random first packet of a flow: ICMP mostly an echo request.
fn random_opening(rng: &mut Rng, local: IpAddr, peer: IpAddr, origin: Direction) -> Packet {
    let mut opening = random_packet(rng, local, peer, origin);
    if let L4::Icmp { code, .. } = opening.l4
        && rng.chance(60)
    {
        let request = if local.is_ipv4() { 8 } else { 128 };
        opening.l4 = L4::Icmp {
            icmp_type: request,
            code,
        };
    }
    if opening.protocol == 136 {
        // The programs see no ports in UDP-Lite, and rules have none for it.
        opening.l4 = L4::Ports { src: 0, dst: 0 };
    }
    opening
}

fn packet_of(flow: &PlannedFlow, forward: bool) -> (Direction, Packet, u16) {
    let p = flow.opening;
    if forward {
        return (flow.origin, p, flow.echo_id);
    }
    let direction = match flow.origin {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    };
    let l4 = match p.l4 {
        L4::Ports { src, dst } => L4::Ports { src: dst, dst: src },
        // The echo reply of a request, or the same message the other way.
        L4::Icmp { icmp_type, code } => L4::Icmp {
            icmp_type: match icmp_type {
                8 => 0,
                128 => 129,
                other => other,
            },
            code,
        },
        L4::None => L4::None,
    };
    let reverse = Packet {
        src: p.dst,
        dst: p.src,
        protocol: p.protocol,
        l4,
    };
    (direction, reverse, flow.echo_id)
}

fn frame_of(packet: &Packet, tcp_flags: u8, echo_id: u16) -> Vec<u8> {
    let sock = |ip, port| std::net::SocketAddr::new(ip, port);
    match packet.l4 {
        L4::Ports { src, dst } => match packet.protocol {
            6 => Frame::tcp(sock(packet.src, src), sock(packet.dst, dst), tcp_flags),
            17 => Frame::udp(sock(packet.src, src), sock(packet.dst, dst)),
            132 => Frame::sctp(sock(packet.src, src), sock(packet.dst, dst)),
            other => Frame::raw(packet.src, packet.dst, other, vec![0u8; 8]),
        },
        L4::Icmp { icmp_type, code } => {
            Frame::icmp(packet.src, packet.dst, icmp_type, code, echo_id)
        }
        L4::None => Frame::raw(packet.src, packet.dst, packet.protocol, vec![0u8; 8]),
    }
    .build()
}

/// `PAL_STATS`, summed over the CPUs.
fn stat_sums(stats: &PerCpuArray<MapData, Counter>) -> Vec<u64> {
    (0..STAT_COUNT)
        .map(|i| stats.get(&i, 0).unwrap().iter().map(|c| c.packets).sum())
        .collect()
}

/// Moves every `PAL_CT` entry's clock back by `by`: as if that much time passed.
fn age_kernel_entries(ct: &mut BpfHashMap<MapData, CtKey, CtValue>, by: u64) {
    let entries: Vec<(CtKey, CtValue)> = ct.iter().map(Result::unwrap).collect();
    for (key, mut value) in entries {
        value.last_seen_ns = value.last_seen_ns.wrapping_sub(by);
        ct.insert(key, value, 0).unwrap();
    }
}

fn forget_kernel_entries(ct: &mut BpfHashMap<MapData, CtKey, CtValue>) {
    let keys: Vec<CtKey> = ct.keys().map(Result::unwrap).collect();
    for key in keys {
        ct.remove(&key).unwrap();
    }
}

/// A random world, then random packets of a few random flows both ways, with policy
/// changes (new generations), time passing and lost entries in between; every packet's
/// verdict, reason and events must be the model's.
fn check_flows(
    dp: &mut Dataplane,
    stats: &PerCpuArray<MapData, Counter>,
    ifaces: &[u32],
    rng: &mut Rng,
    seen: &mut FlowsSeen,
) {
    let mut world = random_world::World::new(world(rng));
    let mut model = Model::new(random_world::to_resources(&world.values));
    let endpoints: Vec<_> = model.workload_endpoints().cloned().collect();
    if endpoints.is_empty() {
        return;
    }
    let ifindex_of: BTreeMap<ResourceKey, u32> = endpoints
        .iter()
        .zip(ifaces)
        .map(|(e, &i)| (e.key(), i))
        .collect();
    let mut image = compile(
        random_world::to_resources(&world.values),
        &Capacities::UNLIMITED,
    )
    .unwrap();
    let mut generation = dp
        .writer
        .publish(&image, &ifindex_of, |_| Ok(()))
        .unwrap()
        .generation;
    forget_kernel_entries(&mut dp.ct);
    drain_events(&mut dp.events);
    let mut conntrack = ConntrackModel::default();
    // The model's clock runs `aged` ahead of the programs' (whose entries are aged instead).
    let mut aged = 0u64;

    let addressed: Vec<usize> = (0..endpoints.len())
        .filter(|&i| !endpoints[i].spec.ip_networks.is_empty())
        .collect();
    if addressed.is_empty() {
        return;
    }
    let flows: Vec<PlannedFlow> = (0..6)
        .map(|_| {
            let endpoint = rng.pick(&addressed);
            let local = rng.pick(&endpoints[endpoint].spec.ip_networks).addr();
            let peer = rng.pick(
                &random_world::peers(local.is_ipv4())
                    .into_iter()
                    .chain(
                        if local.is_ipv4() {
                            V4_ENDPOINT.to_vec()
                        } else {
                            V6_ENDPOINT.to_vec()
                        }
                        .iter()
                        .map(|s| s.parse::<IpAddr>().unwrap()),
                    )
                    .collect::<Vec<_>>(),
            );
            let origin = rng.pick(&[Direction::Ingress, Direction::Egress]);
            // Most random packets are denied; flows policy allows are where conntrack has
            // work to do, so a few tries look for one.
            let mut opening = random_opening(rng, local, peer, origin);
            for _ in 0..8 {
                let allowed = model
                    .evaluate(&endpoints[endpoint].key(), origin, &opening)
                    .is_some_and(|d| d.verdict == Verdict::Allow);
                if allowed {
                    break;
                }
                opening = random_opening(rng, local, peer, origin);
            }
            PlannedFlow {
                endpoint,
                origin,
                opening,
                echo_id: rng.next() as u16,
            }
        })
        .collect();
    // A world whose policy allows none of the flows tests policy, which the first test does.
    let allows = |flow: &PlannedFlow| {
        model
            .evaluate(&endpoints[flow.endpoint].key(), flow.origin, &flow.opening)
            .is_some_and(|d| d.verdict == Verdict::Allow)
    };
    if !flows.iter().any(allows) {
        return;
    }

    for _ in 0..80 {
        let roll = rng.below(100);
        if roll < 8 {
            change_policy_only(&mut world, rng);
            model = Model::new(random_world::to_resources(&world.values));
            image = compile(
                random_world::to_resources(&world.values),
                &Capacities::UNLIMITED,
            )
            .unwrap();
            generation = dp
                .writer
                .publish(&image, &ifindex_of, |_| Ok(()))
                .unwrap()
                .generation;
            seen.generations += 1;
            continue;
        }
        if roll < 14 {
            let by = rng.pick(&AGINGS_NS);
            age_kernel_entries(&mut dp.ct, by);
            aged = aged.wrapping_add(by);
            seen.agings += 1;
            continue;
        }
        if roll < 19 {
            forget_kernel_entries(&mut dp.ct);
            conntrack.forget_all();
            seen.forgets += 1;
            continue;
        }
        let flow = &flows[rng.below(flows.len())];
        let endpoint = endpoints[flow.endpoint].key();
        let ifindex = ifindex_of[&endpoint];
        let (direction, packet, echo_id) = packet_of(flow, rng.chance(50));
        let tcp_flags = rng.pick(&[
            TCP_SYN,
            TCP_SYN | TCP_ACK,
            TCP_ACK,
            TCP_ACK,
            TCP_ACK,
            TCP_FIN | TCP_ACK,
            TCP_RST,
        ]);
        let crossing = Crossing {
            endpoint: &endpoint,
            ifindex,
            direction,
            packet,
            tcp_flags,
            echo_id,
        };
        let now = monotonic_coarse_ns();
        let after_revoked = key_of(&crossing)
            .is_some_and(|k| conntrack.revoked_and_expired(&k, now.wrapping_add(aged)));
        let want = conntrack.cross(&model, generation, now.wrapping_add(aged), &crossing);

        let before = stat_sums(stats);
        let data = frame_of(&packet, tcp_flags, echo_id);
        let ctx = SkbContext {
            ifindex,
            ingress_ifindex: UPLINK,
        };
        let program = match direction {
            Direction::Egress => program_names::FROM_WORKLOAD,
            Direction::Ingress => program_names::TO_WORKLOAD,
        };
        let action = bpf_run::run(dp.loaded.program(program).unwrap(), &data, ctx);
        let after = stat_sums(stats);
        let grown: Vec<u32> = (0..STAT_COUNT)
            .filter(|&i| after[i as usize] != before[i as usize])
            .collect();
        let events = drain_events(&mut dp.events);
        let context = || {
            format!(
                "\n{endpoint} on ifindex {ifindex}, {direction} {packet} tcp flags {tcp_flags:#x} \
                 echo id {echo_id}, generation {generation}\nexpected {want:?}\ncounted {:?}, \
                 events {events:?}\nresources: {}",
                grown
                    .iter()
                    .map(|&i| STAT_NAMES[i as usize])
                    .collect::<Vec<_>>(),
                serde_json::to_string_pretty(&world.values).unwrap()
            )
        };
        assert_eq!(action == TC_ACT_OK, want.passes(), "verdict{}", context());
        let drop = events.iter().find(|e| e.kind == EVENT_DROP);
        let log = events.iter().find(|e| e.kind == EVENT_LOG);
        let (stat, logged, decided_by) = match &want {
            ConntrackOutcome::Established => (STAT_CT_ESTABLISHED, false, None),
            ConntrackOutcome::Rechecked => (STAT_CT_RECHECKED, false, None),
            ConntrackOutcome::Revoked(decision) => (DROP_REVOKED, false, decision.as_ref()),
            ConntrackOutcome::Decided {
                decision,
                picked_up,
            } => {
                let stat = match (decision.verdict, *picked_up) {
                    (Verdict::Deny, _) => DROP_POLICY,
                    (Verdict::Allow, true) => STAT_CT_PICKED_UP,
                    (Verdict::Allow, false) => STAT_CT_NEW,
                };
                (stat, !decision.logged.is_empty(), Some(decision))
            }
        };
        assert_eq!(grown, vec![stat], "counter{}", context());
        assert_eq!(log.is_some(), logged, "log event{}", context());
        assert_eq!(drop.is_some(), !want.passes(), "drop event{}", context());
        if let Some(event) = drop {
            assert_eq!(event.reason, stat, "drop reason{}", context());
            match decided_by {
                Some(decision) => {
                    assert_eq!(&outcome_of(&image, event), decision, "outcome{}", context())
                }
                None => assert_eq!(event.outcome, u32::MAX, "outcome{}", context()),
            }
        }
        if let Some(event) = log {
            let decision = decided_by.expect("a log event for a decided packet");
            assert_eq!(&outcome_of(&image, event), decision, "outcome{}", context());
        }

        seen.packets += 1;
        match &want {
            ConntrackOutcome::Established => seen.established += 1,
            ConntrackOutcome::Rechecked => seen.rechecked += 1,
            ConntrackOutcome::Revoked(Some(_)) => seen.revoked_by_recheck += 1,
            ConntrackOutcome::Revoked(None) => seen.revoked_held += 1,
            ConntrackOutcome::Decided {
                decision,
                picked_up,
            } => {
                match (decision.verdict, picked_up) {
                    (Verdict::Allow, true) => seen.picked_up += 1,
                    (Verdict::Deny, true) => seen.pickup_denied += 1,
                    (Verdict::Allow, false) => seen.new_allowed += 1,
                    (Verdict::Deny, false) => seen.new_denied += 1,
                }
                if after_revoked {
                    seen.after_revoked_expired += 1;
                }
            }
        }
    }
}

#[test]
fn random_flows_through_conntrack_agree_with_the_reference_model() {
    require_root();
    let ifaces = private_interfaces();
    let mut dp = load();
    let stats: PerCpuArray<MapData, Counter> = PerCpuArray::try_from(
        dp.loaded
            .ebpf_mut()
            .take_map(map_names::STATS)
            .expect("PAL_STATS"),
    )
    .unwrap();
    let mut rng = Rng(0x0C7F_10E5);
    let mut seen = FlowsSeen::default();
    while seen.packets < 40_000 {
        check_flows(&mut dp, &stats, &ifaces, &mut rng, &mut seen);
    }
    eprintln!("{seen:?}");
    // Floors of coverage (the seed is fixed, so these are what it gives, with margin):
    // revocations need a random change to deny a flow that was allowed.
    for (what, n, floor) in [
        ("established", seen.established, 1_000),
        ("re-checked", seen.rechecked, 500),
        ("new, allowed", seen.new_allowed, 1_000),
        ("new, denied", seen.new_denied, 1_000),
        ("picked up", seen.picked_up, 300),
        ("pickups denied", seen.pickup_denied, 300),
        ("revoked by a re-check", seen.revoked_by_recheck, 80),
        ("held by a revoked flow", seen.revoked_held, 50),
        ("of expired revoked flows", seen.after_revoked_expired, 50),
    ] {
        assert!(n >= floor, "only {n} packets {what}: {seen:?}");
    }
}
