//! Events from the programs (`PAL_EVENTS`): packets that passed `log` rules, and sampled
//! drops with their reason. Read asynchronously and turned into structured log lines that
//! name the rules, using the image the event's generation was decided under.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use palisade_common::{
    DIR_EGRESS, DROP_CT_BUDGET, DROP_FRAGMENT, DROP_MALFORMED, DROP_NOT_LOCAL, DROP_POLICY,
    DROP_REVOKED, DROP_SPOOFED, DROP_TO_HOST, DROP_UNKNOWN_ETHERTYPE, EVENT_DROP, EVENT_LOG, Event,
    FAMILY_V4, map_names,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::compile::Outcome;
use crate::log;

/// The outcomes of the generations events may still refer to (the current one and the one
/// before it), shared between the writer's side and the event reader.
#[derive(Default, Clone)]
pub struct RecentOutcomes {
    inner: Arc<Mutex<VecDeque<OutcomesOfGeneration>>>,
}

/// A generation, where its slot's outcomes start in `PAL_OUTCOMES`, and its outcomes.
type OutcomesOfGeneration = (u32, u32, Arc<[Outcome]>);

impl RecentOutcomes {
    /// `generation` is in force, its outcomes from index `base` of `PAL_OUTCOMES` on.
    pub fn published(&self, generation: u32, base: u32, outcomes: Arc<[Outcome]>) {
        let mut recent = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        recent.push_back((generation, base, outcomes));
        while recent.len() > 2 {
            recent.pop_front();
        }
    }

    fn get(&self, generation: u32) -> Option<(u32, Arc<[Outcome]>)> {
        let recent = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .find(|(g, _, _)| *g == generation)
            .map(|(_, base, o)| (*base, o.clone()))
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

/// Reads `PAL_EVENTS` until the map goes away, logging each event.
pub async fn log_events(ring: RingBuf<MapData>, outcomes: RecentOutcomes) {
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
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                log::error("event ring buffer failed", &[("error", &e)]);
                return;
            }
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if item.len() < size_of::<Event>() {
                continue;
            }
            // SAFETY: records are `Event`s written by the program; length checked above.
            let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
            report(&event, &outcomes);
        }
        guard.clear_ready();
    }
}

fn report(event: &Event, outcomes: &RecentOutcomes) {
    let src = addr(event.family, event.src);
    let dst = addr(event.family, event.dst);
    let direction = if event.direction == DIR_EGRESS {
        "egress"
    } else {
        "ingress"
    };
    let (rule, logged) = decided_by(event, outcomes);
    let fields: [(&str, &dyn std::fmt::Display); 9] = [
        ("ifindex", &event.ifindex),
        ("direction", &direction),
        ("src", &src),
        ("dst", &dst),
        ("protocol", &event.protocol),
        ("a", &event.a),
        ("b", &event.b),
        ("rule", &rule),
        ("logged_by", &logged),
    ];
    match event.kind {
        EVENT_LOG => log::info("packet logged", &fields),
        EVENT_DROP => {
            let reason = drop_reason_name(event.reason);
            let mut with_reason: Vec<(&str, &dyn std::fmt::Display)> = vec![("reason", &reason)];
            with_reason.extend_from_slice(&fields);
            log::warn("packet dropped", &with_reason);
        }
        _ => {}
    }
}

/// The deciding rule (or default) and the `log` rules passed, if the event names an outcome
/// of an image still known.
fn decided_by(event: &Event, outcomes: &RecentOutcomes) -> (String, String) {
    let unknown = || ("-".to_string(), "-".to_string());
    if event.outcome == u32::MAX {
        return unknown();
    }
    let Some((base, outcomes)) = outcomes.get(event.generation) else {
        return unknown();
    };
    let Some(outcome) = event
        .outcome
        .checked_sub(base)
        .and_then(|i| outcomes.get(i as usize))
    else {
        return unknown();
    };
    let rule = match outcome.rule() {
        Some(r) => r.to_string(),
        None => outcome.reason.to_string(),
    };
    let logged = if outcome.logged.is_empty() {
        "-".to_string()
    } else {
        outcome
            .logged
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    (rule, logged)
}
