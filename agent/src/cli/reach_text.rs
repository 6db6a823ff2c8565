//! Reachability for people and for programs: ranges of packets, flow decisions and flow
//! ends, as `diff`, `--dry-run` and `matrix` print them (text and JSON).

use serde_json::{Value, json};

use crate::model::{ResourceKey, WorkloadEndpoint};
use crate::reach::grid::protocol_name;
use crate::reach::{FlowState, Keys, Place, PlaceKind, SideDecision};

use super::endpoint_lookup::{ContainerNames, display_name};

/// `tcp/3306`, `tcp/1000-2000`, `tcp sport 0-79 dport 3306`, `icmp type 8`, `proto 47`.
pub fn describe_cells(protocol: Option<u8>, keys: Keys, a: (u16, u16), b: (u16, u16)) -> String {
    let name = protocol_name(protocol);
    let span = |(lo, hi): (u16, u16)| {
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        }
    };
    match keys {
        Keys::Ports => {
            let all = (0, u16::MAX);
            match (a == all, b == all) {
                (true, true) => format!("{name} (every port)"),
                (true, false) => format!("{name}/{}", span(b)),
                (false, true) => format!("{name} sport {} (any dport)", span(a)),
                (false, false) => format!("{name} sport {} dport {}", span(a), span(b)),
            }
        }
        Keys::Icmp => {
            let all = (0, 255);
            let types = |t: (u16, u16)| {
                if t.0 == t.1 {
                    format!("type {}", t.0)
                } else {
                    format!("types {}", span(t))
                }
            };
            let codes = |c: (u16, u16)| {
                if c.0 == c.1 {
                    format!("code {}", c.0)
                } else {
                    format!("codes {}", span(c))
                }
            };
            match (a == all, b == all) {
                (true, true) => name,
                (false, true) => format!("{name} {}", types(a)),
                (true, false) => format!("{name} {}", codes(b)),
                (false, false) => format!("{name} {} {}", types(a), codes(b)),
            }
        }
        Keys::None => name,
    }
}

pub fn describe_side(side: &SideDecision) -> String {
    format!("{} by {}", side.verdict, side.reason)
}

/// `allow (egress: ...; ingress: ...)`, or why there is no flow.
pub fn describe_flow(state: &FlowState) -> String {
    let Some(flow) = state else {
        return "no flow (an endpoint does not exist)".to_string();
    };
    let mut sides = Vec::new();
    if let Some(e) = &flow.egress {
        sides.push(format!("egress {}", describe_side(e)));
    }
    if let Some(i) = &flow.ingress {
        sides.push(format!("ingress {}", describe_side(i)));
    }
    format!("{} ({})", flow.verdict, sides.join("; "))
}

pub fn verdict_word(state: &FlowState) -> &'static str {
    match state {
        None => "absent",
        Some(f) => match f.verdict {
            crate::policy::Verdict::Allow => "allow",
            crate::policy::Verdict::Deny => "deny",
        },
    }
}

fn side_json(side: &Option<SideDecision>) -> Value {
    match side {
        None => Value::Null,
        Some(s) => json!({"verdict": s.verdict.to_string(), "reason": s.reason.to_string()}),
    }
}

pub fn flow_json(state: &FlowState) -> Value {
    match state {
        None => Value::Null,
        Some(f) => json!({
            "verdict": f.verdict.to_string(),
            "egress": side_json(&f.egress),
            "ingress": side_json(&f.ingress),
        }),
    }
}

/// The ranges of a cell range as JSON fields.
pub fn cells_json(protocol: Option<u8>, keys: Keys, a: (u16, u16), b: (u16, u16)) -> Value {
    let mut v = json!({"protocol": protocol_name(protocol), "protocolNumber": protocol});
    let range = |r: (u16, u16)| json!([r.0, r.1]);
    match keys {
        Keys::Ports => {
            v["sourcePorts"] = range(a);
            v["destinationPorts"] = range(b);
        }
        Keys::Icmp => {
            v["icmpTypes"] = range(a);
            v["icmpCodes"] = range(b);
        }
        Keys::None => {}
    }
    v
}

/// Names flow ends: endpoints by name (containers by theirs), with the address where an
/// endpoint has several.
pub struct PlaceNames<'a> {
    pub endpoints: &'a [&'a WorkloadEndpoint],
    pub containers: &'a ContainerNames,
}

impl PlaceNames<'_> {
    fn endpoint(&self, key: &ResourceKey) -> Option<&WorkloadEndpoint> {
        self.endpoints.iter().copied().find(|w| w.key() == *key)
    }

    pub fn text(&self, place: &Place) -> String {
        match &place.kind {
            PlaceKind::Workload(key) => {
                let (name, several) = match self.endpoint(key) {
                    Some(w) => (
                        display_name(w, self.containers),
                        w.spec.ip_networks.len() > 1,
                    ),
                    None => (key_name(key), false),
                };
                if several {
                    format!("{name} ({})", place.address)
                } else {
                    name
                }
            }
            PlaceKind::Host(key) => format!("hostEndpoint {} ({})", key_name(key), place.address),
            PlaceKind::Outside { within: Some(net) } => {
                format!("other addresses in {net} (e.g. {})", place.address)
            }
            PlaceKind::Outside { within: None } => {
                let family = if place.address.is_ipv4() {
                    "IPv4"
                } else {
                    "IPv6"
                };
                format!("other {family} addresses (e.g. {})", place.address)
            }
        }
    }

    pub fn json(&self, place: &Place) -> Value {
        let address = place.address.to_string();
        match &place.kind {
            PlaceKind::Workload(key) => {
                let mut v = serde_json::to_value(key).unwrap_or(Value::Null);
                v["address"] = json!(address);
                if let Some(container) = self
                    .endpoint(key)
                    .and_then(|w| self.containers.of_endpoint(w))
                {
                    v["container"] = json!(container);
                }
                v
            }
            PlaceKind::Host(key) => {
                let mut v = serde_json::to_value(key).unwrap_or(Value::Null);
                v["address"] = json!(address);
                v
            }
            PlaceKind::Outside { within } => json!({
                "kind": "outside",
                "within": within.map(|n| n.to_string()),
                "example": address,
            }),
        }
    }
}

fn key_name(key: &ResourceKey) -> String {
    match key {
        ResourceKey::WorkloadEndpoint { name, .. } | ResourceKey::HostEndpoint { name, .. } => {
            name.clone()
        }
        other => other.to_string(),
    }
}
