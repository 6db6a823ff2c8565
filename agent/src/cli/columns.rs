//! The columns of `get -o ps` and `get -o wide` per kind, and each cell's text as
//! calicoctl's Go templates render it (calicoctl/resourcemgr/*.go, v1.6.5).

use std::fmt::Display;

use crate::model::{Kind, Resource};

/// The headings of a kind's table.
pub fn headings(kind: Kind, wide: bool) -> &'static [&'static str] {
    match (kind, wide) {
        (Kind::Profile, false) => &["NAME"],
        (Kind::Profile, true) => &["NAME", "TAGS"],
        (Kind::Policy, false) => &["NAME"],
        (Kind::Policy, true) => &["NAME", "ORDER", "SELECTOR"],
        (Kind::WorkloadEndpoint, false) => &["NODE", "ORCHESTRATOR", "WORKLOAD", "NAME"],
        (Kind::WorkloadEndpoint, true) => &[
            "NODE",
            "ORCHESTRATOR",
            "WORKLOAD",
            "NAME",
            "NETWORKS",
            "NATS",
            "INTERFACE",
            "PROFILES",
        ],
        (Kind::HostEndpoint, false) => &["NODE", "NAME"],
        (Kind::HostEndpoint, true) => &["NODE", "NAME", "INTERFACE", "IPS", "PROFILES"],
        (Kind::IpPool, false) => &["CIDR"],
        (Kind::IpPool, true) => &["CIDR", "NAT", "IPIP"],
        (Kind::IpAllocation, false) => &["ADDRESS"],
        (Kind::IpAllocation, true) => &["ADDRESS", "POOL", "NODE", "ENDPOINT"],
    }
}

/// One table row for `resource`, matching [`headings`] of its kind.
pub fn cells(resource: &Resource, wide: bool) -> Vec<String> {
    let mut row = match resource {
        Resource::Profile(p) => vec![p.metadata.name.clone()],
        Resource::Policy(p) => vec![p.metadata.name.clone()],
        Resource::WorkloadEndpoint(w) => vec![
            w.metadata.node.clone(),
            w.metadata.orchestrator.clone(),
            w.metadata.workload.clone(),
            w.metadata.name.clone(),
        ],
        Resource::HostEndpoint(h) => vec![h.metadata.node.clone(), h.metadata.name.clone()],
        Resource::IpPool(p) => vec![p.metadata.cidr.to_string()],
        Resource::IpAllocation(a) => vec![a.metadata.address.to_string()],
    };
    if !wide {
        return row;
    }
    match resource {
        Resource::Profile(p) => row.push(p.metadata.tags.join(",")),
        Resource::Policy(p) => {
            // `{{.Spec.Order}}` of a *float64: the number as Go's %v prints it, or <nil>.
            row.push(p.spec.order.map_or("<nil>".to_string(), go_float));
            row.push(p.spec.selector.clone());
        }
        Resource::WorkloadEndpoint(w) => {
            row.push(join(&w.spec.ip_networks));
            // An IPNAT has no String method, so Go prints the struct: `{internal external}`.
            let nats: Vec<String> = w
                .spec
                .ip_nats
                .iter()
                .map(|nat| format!("{{{} {}}}", nat.internal_ip, nat.external_ip))
                .collect();
            row.push(nats.join(","));
            row.push(w.spec.interface_name.clone());
            row.push(w.spec.profiles.join(","));
        }
        Resource::HostEndpoint(h) => {
            row.push(h.spec.interface_name.clone().unwrap_or_default());
            row.push(join(&h.spec.expected_ips));
            row.push(h.spec.profiles.join(","));
        }
        Resource::IpPool(p) => {
            row.push(p.spec.nat_outgoing.to_string());
            let ipip = p.spec.ipip.as_ref().is_some_and(|ipip| ipip.enabled);
            row.push(ipip.to_string());
        }
        Resource::IpAllocation(a) => {
            row.push(a.spec.pool.to_string());
            row.push(a.spec.node.clone());
            row.push(a.spec.endpoint.clone().unwrap_or_default());
        }
    }
    row
}

fn join<T: Display>(items: &[T]) -> String {
    let texts: Vec<String> = items.iter().map(ToString::to_string).collect();
    texts.join(",")
}

/// A float as Go's `%v` prints it: the shortest digits, in exponent form (`1e+06`) when
/// the decimal exponent is below -4 or at least 6.
fn go_float(value: f64) -> String {
    if !value.is_finite() {
        return match value {
            v if v.is_nan() => "NaN".to_string(),
            v if v > 0.0 => "+Inf".to_string(),
            _ => "-Inf".to_string(),
        };
    }
    // Rust's `{:e}` gives the shortest round-tripping digits: `1.234567e6`.
    let scientific = format!("{value:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return value.to_string();
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if value != 0.0 && !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::go_float;

    #[test]
    fn floats_print_as_go_does() {
        assert_eq!(go_float(0.0), "0");
        assert_eq!(go_float(100.0), "100");
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(-2.0), "-2");
        assert_eq!(go_float(999999.0), "999999");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
    }
}
