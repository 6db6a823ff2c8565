//! `/metrics`: one scrape (the agent's [`Status`] and a [`KernelSample`]) and the latency
//! histograms, in Prometheus' text format or OpenMetrics, through prometheus-client.
//!
//! Counter names end in `_total` (the encoder adds it), values are in base units (bytes,
//! seconds). Families are declared in tables (per endpoint, per `STAT_*` counter), so that
//! a new kernel counter is a new row, or needs no code at all: a `STAT_NAMES` entry
//! `dropped_<reason>` becomes a `palisade_dropped_packets_total{reason="<reason>"}` series.

use std::fmt;

use palisade_common::{ABI_VERSION, STAT_NAMES, map_names};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::Latencies;
use super::health::readiness;
use super::sample::{EndpointSample, KernelSample};
use super::status::{DatastoreState, Status};

/// The text formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' text format 0.0.4: for `curl` and older scrapers.
    Prometheus,
    /// OpenMetrics 1.0 text, for clients that ask for it (Prometheus does).
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// One scrape's data, encoded when the registry collects it.
#[derive(Debug)]
pub struct Scrape {
    pub status: Status,
    pub kernel: KernelSample,
}

/// The whole exposition of one scrape.
pub fn render(format: Format, scrape: Scrape, latencies: &Latencies) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register(
        "palisade_build",
        "The running palisade: its version and map ABI version",
        Info::new([
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("abi", ABI_VERSION.to_string()),
        ]),
    );
    registry.register(
        "palisade_policy_compile_duration_seconds",
        "Time to compile a policy update, full or in place (compile=\"full\", \"in_place\")",
        latencies.compile.clone(),
    );
    registry.register(
        "palisade_policy_publish_duration_seconds",
        "Time to write a compiled update into the maps and flip the generation",
        latencies.publish.clone(),
    );
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    match format {
        Format::Prometheus => prometheus_text::encode(&mut out, &registry)?,
        Format::OpenMetrics => text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.endpoints(&mut encoder)?;
        self.rules(&mut encoder)?;
        self.stat_counters(&mut encoder)?;
        self.maps(&mut encoder)?;
        self.agent(&mut encoder)
    }
}

/// A family of per-endpoint series: each endpoint's `values`, under its `endpoint` and
/// `interface` labels plus the labels of each value.
struct EndpointFamily {
    name: &'static str,
    help: &'static str,
    metric_type: MetricType,
    values: fn(&EndpointSample) -> Vec<(Labels, u64)>,
}

type Labels = Vec<(&'static str, &'static str)>;

const ENDPOINT_FAMILIES: [EndpointFamily; 4] = [
    EndpointFamily {
        name: "palisade_endpoint_packets",
        help: "Packets to (ingress) and from (egress) a local workload endpoint, allowed and \
               denied, counted on its host veth.",
        metric_type: MetricType::Counter,
        values: |e| directional(e, false),
    },
    EndpointFamily {
        name: "palisade_endpoint_bytes",
        help: "Bytes of the packets palisade_endpoint_packets_total counts.",
        metric_type: MetricType::Counter,
        values: |e| directional(e, true),
    },
    EndpointFamily {
        name: "palisade_endpoint_conntrack_entries",
        help: "Conntrack entries (flows) a local workload endpoint holds against its budget \
               (palisade agent --conntrack-budget); counted by the programs, recounted by \
               the agent's sweep every 10 s.",
        metric_type: MetricType::Gauge,
        values: |e| vec![(Vec::new(), e.conntrack.entries)],
    },
    EndpointFamily {
        name: "palisade_endpoint_conntrack_evicted",
        help: "Conntrack entries of a local workload endpoint that vanished without the \
               agent deleting them (evicted by a full table), as the agent's sweeps found.",
        metric_type: MetricType::Counter,
        values: |e| vec![(Vec::new(), e.conntrack.evicted)],
    },
];

fn directional(e: &EndpointSample, bytes: bool) -> Vec<(Labels, u64)> {
    let s = &e.stats;
    let [ia, id, ea, ed] = if bytes {
        [
            s.ingress_allowed_bytes,
            s.ingress_denied_bytes,
            s.egress_allowed_bytes,
            s.egress_denied_bytes,
        ]
    } else {
        [
            s.ingress_allowed_packets,
            s.ingress_denied_packets,
            s.egress_allowed_packets,
            s.egress_denied_packets,
        ]
    };
    let labels = |direction, verdict| vec![("direction", direction), ("verdict", verdict)];
    vec![
        (labels("ingress", "allowed"), ia),
        (labels("ingress", "denied"), id),
        (labels("egress", "allowed"), ea),
        (labels("egress", "denied"), ed),
    ]
}

/// How a `STAT_*` counter is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatFamily {
    /// `palisade_dropped_packets_total{reason}`.
    Dropped(&'static str),
    /// `palisade_events_lost_total`.
    EventsLost,
    /// `palisade_datapath_packets_total{counter}`: everything else the programs count.
    Datapath(&'static str),
}

fn stat_family(name: &'static str) -> StatFamily {
    match name {
        "events_lost" => StatFamily::EventsLost,
        _ => match name.strip_prefix("dropped_") {
            Some(reason) => StatFamily::Dropped(reason),
            None => StatFamily::Datapath(name),
        },
    }
}

impl Scrape {
    fn endpoints(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        // Counters of interfaces that are not (or no longer) local endpoints are left out.
        let named: Vec<(&str, &str, &EndpointSample)> = self
            .status
            .enforcement
            .endpoints
            .iter()
            .filter_map(|e| {
                let sample = self.kernel.endpoints.get(&e.ifindex?)?;
                Some((e.name.as_str(), e.interface.as_str(), sample))
            })
            .collect();
        for family in &ENDPOINT_FAMILIES {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.metric_type)?;
            for (name, interface, sample) in &named {
                for (extra, value) in (family.values)(sample) {
                    let mut labels: Vec<(&str, &str)> =
                        vec![("endpoint", *name), ("interface", *interface)];
                    labels.extend(extra);
                    let series = metric.encode_family(&labels)?;
                    match family.metric_type {
                        MetricType::Counter => ConstCounter::new(value).encode(series)?,
                        _ => ConstGauge::new(value).encode(series)?,
                    }
                }
            }
        }
        Ok(())
    }

    fn rules(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let counts: std::collections::HashMap<u32, _> = self.kernel.rules.iter().copied().collect();
        let rules: Vec<_> = self
            .status
            .enforcement
            .rules
            .iter()
            .filter_map(|r| {
                let labels = [
                    ("kind", r.kind),
                    ("name", r.owner.as_str()),
                    ("direction", r.direction.as_str()),
                    ("rule", r.rule.as_str()),
                    ("action", r.action.as_str()),
                ];
                Some((labels, counts.get(&r.index)?))
            })
            .collect();
        counters(
            encoder,
            "palisade_rule_packets",
            "Packets a policy's or profile's rule decided by a policy lookup: the packets that \
             open flows, and every denied packet (packets of established flows pass by \
             conntrack and are not counted here).",
            rules
                .iter()
                .map(|(labels, stats)| (labels.as_slice(), stats.packets)),
        )?;
        counters(
            encoder,
            "palisade_rule_bytes",
            "Bytes of the packets palisade_rule_packets_total counts.",
            rules
                .iter()
                .map(|(labels, stats)| (labels.as_slice(), stats.bytes)),
        )
    }

    fn stat_counters(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let stats = || {
            STAT_NAMES
                .iter()
                .zip(&self.kernel.reasons)
                .map(|(name, n)| (stat_family(name), *n))
        };
        counters(
            encoder,
            "palisade_dropped_packets",
            "Packets the programs dropped, by reason (policy: denied by policy).",
            stats().filter_map(|(family, n)| match family {
                StatFamily::Dropped(reason) => Some(([("reason", reason)], n)),
                _ => None,
            }),
        )?;
        counters(
            encoder,
            "palisade_datapath_packets",
            "Other packets the programs counted, by what they were.",
            stats().filter_map(|(family, n)| match family {
                StatFamily::Datapath(counter) => Some(([("counter", counter)], n)),
                _ => None,
            }),
        )?;
        let lost = stats()
            .filter(|(family, _)| *family == StatFamily::EventsLost)
            .map(|(_, n)| n)
            .sum::<u64>();
        let metric = encoder.encode_descriptor(
            "palisade_events_lost",
            "Drop and log events the programs could not report (the ring buffer was full).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(lost).encode(metric)
    }

    fn maps(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let counted = |map: &str| {
            self.kernel
                .counted
                .iter()
                .find(|(name, _)| *name == map)
                .map(|(_, n)| *n)
        };
        gauge(
            encoder,
            "palisade_conntrack_entries",
            "Flows in the conntrack map (PAL_CT), counted at most 30 s ago.",
            counted(map_names::CT),
        )?;
        let entries = self
            .status
            .enforcement
            .occupancy
            .iter()
            .chain(&self.kernel.counted)
            .map(|(map, n)| ([("map", *map)], *n));
        gauges(
            encoder,
            "palisade_map_entries",
            "Entries in each BPF map: as the agent wrote them (policy maps, both slots; arrays: \
             the entries in use), or counted (PAL_CT and PAL_FRAGS at most 30 s ago).",
            entries,
        )?;
        gauges(
            encoder,
            "palisade_map_capacity",
            "The most entries each BPF map can hold (max_entries).",
            self.kernel
                .capacities
                .iter()
                .map(|(map, n)| ([("map", *map)], u64::from(*n))),
        )
    }

    fn agent(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let status = &self.status;
        gauges(
            encoder,
            "palisade_datastore_state",
            "1 for the agent's state with its datastore: connecting (no view yet), in_sync, or \
             degraded (unreachable; the last policy stays in force).",
            DatastoreState::ALL
                .iter()
                .map(|s| ([("state", s.name())], u64::from(*s == status.datastore))),
        )?;
        gauge(
            encoder,
            "palisade_datastore_revision",
            "The latest datastore revision the agent has seen.",
            status.datastore_revision,
        )?;
        gauge(
            encoder,
            "palisade_policy_revision",
            "The datastore revision whose policy the maps hold.",
            status.enforcement.policy_revision,
        )?;
        let metric = encoder.encode_descriptor(
            "palisade_policy_updates_refused",
            "Policy updates that did not fit the maps or could not be written; the policy in \
             force stayed.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(status.updates_refused).encode(metric)?;
        let endpoints = &status.enforcement.endpoints;
        let count = |f: fn(&&super::status::LocalEndpoint) -> bool| {
            endpoints.iter().filter(f).count() as u64
        };
        gauges(
            encoder,
            "palisade_local_endpoints",
            "This node's workload endpoints: attached (programs on the interface), \
             no_interface (not on the host yet), not_attached (attaching failed).",
            [
                ([("state", "attached")], count(|e| e.attached)),
                (
                    [("state", "no_interface")],
                    count(|e| !e.attached && e.ifindex.is_none()),
                ),
                (
                    [("state", "not_attached")],
                    count(|e| !e.attached && e.ifindex.is_some()),
                ),
            ],
        )?;
        gauge(
            encoder,
            "palisade_ready",
            "1 when /readyz answers 200: the latest policy is in the maps and attached to every \
             local endpoint's interface.",
            Some(u64::from(readiness(status).0)),
        )
    }
}

fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of one series, left out when there is no value.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Option<u64>,
) -> fmt::Result {
    match value {
        Some(value) => {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use palisade_common::{
        CtUsage, DROP_POLICY, EndpointStats, RuleStats, STAT_COUNT, STAT_EVENTS_LOST,
    };

    use super::*;
    use crate::telemetry::status::{Enforcement, LocalEndpoint, RuleLabels};

    fn scrape() -> Scrape {
        let mut reasons = vec![0; STAT_COUNT as usize];
        reasons[DROP_POLICY as usize] = 7;
        reasons[STAT_EVENTS_LOST as usize] = 2;
        let stats = EndpointStats {
            ingress_allowed_packets: 10,
            ingress_allowed_bytes: 1000,
            ingress_denied_packets: 3,
            ingress_denied_bytes: 180,
            egress_allowed_packets: 11,
            egress_allowed_bytes: 1100,
            egress_denied_packets: 0,
            egress_denied_bytes: 0,
        };
        let rule = RuleLabels {
            index: 0,
            kind: "profile",
            owner: "data\"bases".to_string(),
            direction: "ingress".to_string(),
            rule: "1".to_string(),
            action: "allow".to_string(),
        };
        Scrape {
            status: Status {
                datastore: DatastoreState::InSync,
                datastore_revision: Some(12),
                enforcement: Enforcement {
                    policy_revision: Some(12),
                    endpoints: vec![
                        LocalEndpoint {
                            name: "db1".to_string(),
                            interface: "calidb1".to_string(),
                            ifindex: Some(40),
                            attached: true,
                        },
                        LocalEndpoint {
                            name: "later".to_string(),
                            interface: "calilater".to_string(),
                            ifindex: None,
                            attached: false,
                        },
                    ],
                    rules: Arc::from(vec![rule]),
                    occupancy: vec![(map_names::LOCAL, 4), (map_names::RULE_STATS, 1)],
                },
                updates_refused: 1,
            },
            kernel: KernelSample {
                endpoints: [
                    (
                        40,
                        EndpointSample {
                            stats,
                            conntrack: CtUsage {
                                entries: 12,
                                evicted: 2,
                            },
                        },
                    ),
                    (41, EndpointSample::default()),
                ]
                .into_iter()
                .collect(),
                rules: vec![(
                    0,
                    RuleStats {
                        packets: 5,
                        bytes: 300,
                    },
                )],
                reasons,
                capacities: vec![(map_names::CT, 262_144), (map_names::LOCAL, 16_384)],
                counted: vec![(map_names::CT, 9), (map_names::EP_STATS, 2)],
            },
        }
    }

    fn rendered(format: Format) -> String {
        let latencies = Latencies::default();
        latencies
            .compile
            .get_or_create(&[("compile", "full")])
            .observe(0.003);
        latencies.publish.observe(0.0007);
        render(format, scrape(), &latencies).unwrap()
    }

    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }

    #[test]
    fn endpoints_are_labelled_with_name_interface_direction_and_verdict() {
        let text = rendered(Format::Prometheus);
        has(&text, "# TYPE palisade_endpoint_packets_total counter");
        has(
            &text,
            "palisade_endpoint_packets_total{endpoint=\"db1\",interface=\"calidb1\",direction=\"ingress\",verdict=\"denied\"} 3",
        );
        has(
            &text,
            "palisade_endpoint_bytes_total{endpoint=\"db1\",interface=\"calidb1\",direction=\"egress\",verdict=\"allowed\"} 1100",
        );
        // ifindex 41 is no local endpoint (any more): left out.
        assert_eq!(text.matches("palisade_endpoint_packets_total{").count(), 4);
        has(&text, "# TYPE palisade_endpoint_conntrack_entries gauge");
        has(
            &text,
            "palisade_endpoint_conntrack_entries{endpoint=\"db1\",interface=\"calidb1\"} 12",
        );
        has(
            &text,
            "palisade_endpoint_conntrack_evicted_total{endpoint=\"db1\",interface=\"calidb1\"} 2",
        );
    }

    #[test]
    fn every_kernel_counter_is_exposed_once_drops_by_reason() {
        let text = rendered(Format::Prometheus);
        has(&text, "palisade_dropped_packets_total{reason=\"policy\"} 7");
        has(&text, "palisade_events_lost_total 2");
        has(
            &text,
            "palisade_datapath_packets_total{counter=\"conntrack_new\"} 0",
        );
        for name in STAT_NAMES {
            let series = match stat_family(name) {
                StatFamily::Dropped(reason) => {
                    format!("palisade_dropped_packets_total{{reason=\"{reason}\"}} ")
                }
                StatFamily::EventsLost => "palisade_events_lost_total ".to_string(),
                StatFamily::Datapath(counter) => {
                    format!("palisade_datapath_packets_total{{counter=\"{counter}\"}} ")
                }
            };
            let found = text.lines().filter(|l| l.starts_with(&series)).count();
            assert_eq!(found, 1, "{name}: {series}\n{text}");
        }
    }

    #[test]
    fn rules_maps_datastore_and_build_are_exposed() {
        let text = rendered(Format::Prometheus);
        has(
            &text,
            "palisade_rule_packets_total{kind=\"profile\",name=\"data\\\"bases\",direction=\"ingress\",rule=\"1\",action=\"allow\"} 5",
        );
        has(&text, "palisade_conntrack_entries 9");
        has(&text, "palisade_map_entries{map=\"PAL_CT\"} 9");
        has(&text, "palisade_map_entries{map=\"PAL_LOCAL\"} 4");
        has(&text, "palisade_map_capacity{map=\"PAL_CT\"} 262144");
        has(&text, "palisade_datastore_state{state=\"in_sync\"} 1");
        has(&text, "palisade_datastore_state{state=\"degraded\"} 0");
        has(&text, "palisade_datastore_revision 12");
        has(&text, "palisade_policy_revision 12");
        has(&text, "palisade_policy_updates_refused_total 1");
        has(&text, "palisade_local_endpoints{state=\"attached\"} 1");
        has(&text, "palisade_local_endpoints{state=\"no_interface\"} 1");
        has(&text, "palisade_ready 1");
        let build = format!(
            "palisade_build_info{{version=\"{}\",abi=\"{ABI_VERSION}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        has(&text, &build);
    }

    #[test]
    fn latencies_are_histograms_in_seconds() {
        let text = rendered(Format::Prometheus);
        has(
            &text,
            "# TYPE palisade_policy_compile_duration_seconds histogram",
        );
        has(
            &text,
            "palisade_policy_compile_duration_seconds_bucket{compile=\"full\",le=\"0.005\"} 1",
        );
        has(
            &text,
            "palisade_policy_compile_duration_seconds_bucket{compile=\"full\",le=\"0.0025\"} 0",
        );
        has(&text, "palisade_policy_publish_duration_seconds_count 1");
    }

    #[test]
    fn openmetrics_when_asked_for_the_classic_format_otherwise() {
        let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/\
                                 openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;\
                                 q=0.5,*/*;q=0.1";
        assert_eq!(
            Format::negotiate(Some(prometheus_accept)),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        let open = rendered(Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        has(&open, "# TYPE palisade_endpoint_packets counter");
        has(&open, "palisade_dropped_packets_total{reason=\"policy\"} 7");
        assert!(!rendered(Format::Prometheus).contains("# EOF"));
    }

    #[test]
    fn not_ready_and_no_revisions_before_the_first_view() {
        let mut scrape = scrape();
        scrape.status = Status::default();
        let text = render(Format::Prometheus, scrape, &Latencies::default()).unwrap();
        has(&text, "palisade_ready 0");
        has(&text, "palisade_datastore_state{state=\"connecting\"} 1");
        assert!(!text.contains("palisade_datastore_revision"), "{text}");
        assert!(!text.contains("palisade_policy_revision"), "{text}");
    }
}
