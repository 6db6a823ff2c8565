//! Events from the programs (`PAL_EVENTS`): new flows allowed (sampled), drops with their
//! reason (sampled), and packets that passed `log` rules. Read asynchronously, each one
//! becomes a [`Flow`] record: the kernel's timestamp as wall-clock time, the rules named by
//! the outcomes of the generation that decided (in memory, or from the files an earlier
//! agent wrote, see [`super::outcome_names`]). Records go to the [`FlowHub`] for `palisade
//! flows`; drops and `log` hits are also logged. Losses in the ring buffer
//! (`STAT_EVENTS_LOST`) become records of their own.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aya::maps::{MapData, RingBuf};
use palisade_common::{
    DIR_EGRESS, DROP_CT_BUDGET, DROP_FRAGMENT, DROP_MALFORMED, DROP_NOT_LOCAL, DROP_POLICY,
    DROP_REVOKED, DROP_SPOOFED, DROP_TO_HOST, DROP_UNKNOWN_ETHERTYPE, EVENT_ALLOW, EVENT_DROP,
    EVENT_LOG, EVENT_POLL_INTERVAL_MS, Event, FAMILY_V4, STAT_EVENTS_LOST, STAT_HOST_TO_WORKLOAD,
    map_names,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::counters::CounterMaps;
use super::kernel_clock::{KernelClock, unix_ns};
use super::names_writer::NamesHandle;
use super::outcome_names::{self, GenerationNames, NamesCache, OutcomeName};
use crate::compile::Outcome;
use crate::flows::record::{Flow, FlowEvent, Lost, LostSource, Peer, StreamItem, Verdict};
use crate::flows::{FlowHub, record::rfc3339_ns};
use crate::log;

/// The outcome names of the generations events may still refer to: the last three
/// (published by this agent, or read back) in memory, older ones (an earlier agent's) read from the run directory on
/// demand. Shared between the writer's side and the event reader.
#[derive(Clone)]
pub struct RecentOutcomes {
    inner: Arc<Mutex<VecDeque<Arc<GenerationNames>>>>,
    /// Where the names are written for agents to come; `None`: memory only.
    run_dir: Option<PathBuf>,
    /// The last generation found in neither place, so that a flood of its events does not
    /// read the directory once per event (this agent's own generations are in memory).
    missing: Arc<Mutex<Option<u32>>>,
    /// The names of the last published outcomes, extended publish by publish.
    cache: Arc<Mutex<NamesCache>>,
    /// Writes the files in `run_dir`.
    files: Option<NamesHandle>,
}

/// How many generations are kept in memory: the one in force and the two before it (their
/// events may still wait in the ring buffer), or generations read back from an earlier
/// agent's files while this agent has published fewer.
const KEPT: usize = 3;

impl RecentOutcomes {
    /// `files`: writes the names into `run_dir` (`None`: memory only).
    pub fn new(run_dir: Option<PathBuf>, files: Option<NamesHandle>) -> RecentOutcomes {
        RecentOutcomes {
            inner: Arc::default(),
            run_dir,
            missing: Arc::default(),
            cache: Arc::default(),
            files,
        }
    }

    /// `generation` is in force, its outcomes from index `base` of `PAL_OUTCOMES` on.
    /// `appended`: `outcomes` extend those of the last publish (no full compile since).
    pub fn published(&self, generation: u32, base: u32, outcomes: &[Outcome], appended: bool) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.update(outcomes, appended);
        let names = Arc::new(cache.generation(generation, base));
        if let (Some(dir), Some(files)) = (&self.run_dir, &self.files) {
            files.outcomes(dir.clone(), generation, base, cache.epoch(), cache.lines());
        }
        self.keep(names);
    }

    fn keep(&self, names: Arc<GenerationNames>) {
        let mut recent = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|n| n.generation != names.generation);
        recent.push_back(names);
        while recent.len() > KEPT {
            recent.pop_front();
        }
    }

    fn get(&self, generation: u32) -> Option<Arc<GenerationNames>> {
        let found = {
            let recent = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            recent.iter().find(|n| n.generation == generation).cloned()
        };
        if found.is_some() {
            return found;
        }
        let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        if *missing == Some(generation) {
            return None;
        }
        let Some(names) = self
            .run_dir
            .as_ref()
            .and_then(|dir| outcome_names::read(dir, generation).ok())
        else {
            *missing = Some(generation);
            return None;
        };
        drop(missing);
        let names = Arc::new(names);
        // Kept at the front: it is older than anything this agent published.
        let mut recent = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEPT {
            return Some(names);
        }
        recent.push_front(Arc::clone(&names));
        Some(names)
    }
}

pub fn drop_reason_name(reason: u32) -> &'static str {
    match reason {
        DROP_POLICY => "policy",
        DROP_MALFORMED => "malformed",
        DROP_SPOOFED => "spoofed source",
        DROP_NOT_LOCAL => "not a workload address",
        DROP_FRAGMENT => "fragment without its first",
        DROP_REVOKED => "revoked by a policy change",
        DROP_TO_HOST => "workload to host",
        DROP_UNKNOWN_ETHERTYPE => "unknown ethertype",
        DROP_CT_BUDGET => "conntrack budget used up",
        _ => "unknown",
    }
}

fn addr(family: u8, bytes: [u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    }
}

/// How often ring-buffer losses are looked for (and the clocks' offset measured again).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Counts `STAT_EVENTS_LOST` and turns its growth into [`Lost`] records.
struct LossWatch {
    counters: Option<CounterMaps>,
    seen: u64,
    checked_ns: u64,
}

impl LossWatch {
    fn new(counters: Option<CounterMaps>) -> LossWatch {
        let mut watch = LossWatch {
            counters,
            seen: 0,
            checked_ns: unix_ns(SystemTime::now()),
        };
        watch.seen = watch.total().unwrap_or(0);
        if watch.seen > 0 {
            // Losses of earlier agents' time (or while none ran): logged, not streamed, as
            // when they happened is not known.
            log::warn(
                "events were lost before this agent started (the ring buffer was full)",
                &[("events", &watch.seen)],
            );
        }
        watch
    }

    fn total(&self) -> Option<u64> {
        let reasons = self.counters.as_ref()?.reasons().ok()?;
        reasons.get(STAT_EVENTS_LOST as usize).copied()
    }

    fn check(&mut self) -> Option<Lost> {
        let now = unix_ns(SystemTime::now());
        let total = self.total()?;
        let since = std::mem::replace(&mut self.checked_ns, now);
        let lost = total.checked_sub(self.seen).filter(|&n| n > 0);
        self.seen = total;
        let events = lost?;
        log::warn(
            "events lost: the ring buffer was full",
            &[("events", &events), ("map", &map_names::EVENTS)],
        );
        Some(Lost {
            time: rfc3339_ns(now),
            time_ns: now,
            source: LostSource::Kernel,
            events,
            since: Some(rfc3339_ns(since)),
        })
    }
}

/// Reads `PAL_EVENTS` until the map goes away: each event is logged (drops and `log` hits)
/// and pushed to `hub`, when the ring wakes the reader and every `EVENT_POLL_INTERVAL_MS`;
/// losses are looked for every [`CHECK_INTERVAL`] (`counters`: the
/// pinned counter maps, `None` if they cannot be opened).
pub async fn read_events(
    ring: RingBuf<MapData>,
    outcomes: RecentOutcomes,
    hub: Arc<FlowHub>,
    counters: Option<CounterMaps>,
) {
    // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long as
    // the `AsyncFd` owns the ring buffer.
    let registered = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::error(
                "cannot watch the event ring buffer; log and drop events will not be reported",
                &[("map", &map_names::EVENTS), ("error", &e)],
            );
            return;
        }
    };
    let mut clock = KernelClock::measure();
    let mut losses = LossWatch::new(counters);
    let mut checks = tokio::time::interval(CHECK_INTERVAL);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Most events are submitted without waking this reader (`EVENT_WAKEUP_MASK`): they
    // are read at the next poll.
    let mut polls = tokio::time::interval(Duration::from_millis(EVENT_POLL_INTERVAL_MS));
    polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = checks.tick() => {
                clock = KernelClock::measure();
                if let Some(lost) = losses.check() {
                    hub.push(StreamItem::Lost(lost));
                }
            }
            _ = polls.tick() => drain(fd.get_mut(), &outcomes, &hub, &clock),
            readable = fd.readable_mut() => {
                let mut guard = match readable {
                    Ok(g) => g,
                    Err(e) => {
                        log::error("event ring buffer failed", &[("error", &e)]);
                        return;
                    }
                };
                drain(guard.get_inner_mut(), &outcomes, &hub, &clock);
                guard.clear_ready();
            }
        }
    }
}

/// Reads every event the ring buffer holds: each is logged (drops and `log` hits) and
/// pushed to `hub`.
fn drain(
    ring: &mut RingBuf<MapData>,
    outcomes: &RecentOutcomes,
    hub: &FlowHub,
    clock: &KernelClock,
) {
    while let Some(item) = ring.next() {
        if item.len() < size_of::<Event>() {
            continue;
        }
        // SAFETY: records are `Event`s written by the program; length checked.
        let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
        if let Some(flow) = flow_of(&event, outcomes, clock) {
            report(&flow);
            hub.push(StreamItem::Flow(Box::new(flow)));
        }
    }
}

fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".to_string(),
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        58 => "icmpv6".to_string(),
        n => n.to_string(),
    }
}

/// The record of an event (`None` for kinds this agent does not know).
pub fn flow_of(event: &Event, outcomes: &RecentOutcomes, clock: &KernelClock) -> Option<Flow> {
    let (kind, verdict) = match event.kind {
        EVENT_ALLOW => (FlowEvent::NewFlow, Verdict::Allow),
        EVENT_DROP => (FlowEvent::Drop, Verdict::Deny),
        // A log event carries the drop reason of a packet dropped, u32::MAX otherwise.
        EVENT_LOG if event.reason == u32::MAX => (FlowEvent::Log, Verdict::Allow),
        EVENT_LOG => (FlowEvent::Log, Verdict::Deny),
        _ => return None,
    };
    let time_ns = unix_ns(clock.wall_time(event.time_ns));
    let (ports, icmp) = match event.protocol {
        6 | 17 => ((Some(event.a), Some(event.b)), None),
        1 | 58 => ((None, None), Some((event.a as u8, event.b as u8))),
        _ => ((None, None), None),
    };
    let named = decided_by(event, outcomes);
    let rule = match (&named, kind) {
        (Some(n), _) => n.rule.clone(),
        (None, FlowEvent::NewFlow) if event.reason == STAT_HOST_TO_WORKLOAD => {
            "host to workload (--host-to-endpoint accept)".to_string()
        }
        (None, _) => "-".to_string(),
    };
    Some(Flow {
        time: rfc3339_ns(time_ns),
        time_ns,
        event: kind,
        verdict,
        direction: if event.direction == DIR_EGRESS {
            "egress"
        } else {
            "ingress"
        }
        .to_string(),
        ifindex: event.ifindex,
        protocol: protocol_name(event.protocol),
        src: Peer {
            address: addr(event.family, event.src),
            port: ports.0,
            endpoint: None,
        },
        dst: Peer {
            address: addr(event.family, event.dst),
            port: ports.1,
            endpoint: None,
        },
        icmp,
        rule,
        policy: named.as_ref().and_then(|n| n.owner.clone()),
        reason: (verdict == Verdict::Deny).then(|| drop_reason_name(event.reason).to_string()),
        logged_by: named.map(|n| n.logged).unwrap_or_default(),
        generation: event.generation,
        bytes: event.len,
    })
}

/// The log line of a drop or `log` hit (new flows allowed go to the stream only).
fn report(flow: &Flow) {
    let port = |p: Option<u16>| p.map_or("-".to_string(), |p| p.to_string());
    let logged = if flow.logged_by.is_empty() {
        "-".to_string()
    } else {
        flow.logged_by.join("; ")
    };
    let fields: [(&str, &dyn std::fmt::Display); 11] = [
        ("time", &flow.time),
        ("ifindex", &flow.ifindex),
        ("direction", &flow.direction),
        ("src", &flow.src.address),
        ("dst", &flow.dst.address),
        ("protocol", &flow.protocol),
        ("src_port", &port(flow.src.port)),
        ("dst_port", &port(flow.dst.port)),
        ("rule", &flow.rule),
        ("logged_by", &logged),
        ("generation", &flow.generation),
    ];
    match flow.event {
        FlowEvent::Log => log::info("packet logged", &fields),
        FlowEvent::Drop => {
            let reason = flow.reason.as_deref().unwrap_or("unknown");
            let mut with_reason: Vec<(&str, &dyn std::fmt::Display)> = vec![("reason", &reason)];
            with_reason.extend_from_slice(&fields);
            log::warn("packet dropped", &with_reason);
        }
        FlowEvent::NewFlow => {}
    }
}

/// The name of the event's outcome, if it names one of a generation still known.
fn decided_by(event: &Event, outcomes: &RecentOutcomes) -> Option<OutcomeName> {
    if event.outcome == u32::MAX {
        return None;
    }
    outcomes.get(event.generation)?.name(event.outcome).cloned()
}
