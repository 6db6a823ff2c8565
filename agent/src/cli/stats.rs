//! `palisade stats [ENDPOINT]`: what the programs counted on this host. Per workload endpoint
//! and direction the packets and bytes allowed and denied; per policy/profile rule the new
//! flows it decided; per endpoint its conntrack entries, budget and evictions; and the drop
//! reasons and other kernel-side counters.
//!
//! Reads the maps the agent pinned (it need not be running: the counters are in the
//! kernel) and the rule names the agent wrote beside them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use aya::maps::{Array, MapData};
use clap::Args;
use palisade_common::{Config, STAT_NAMES, capacity, map_names};

use crate::dataplane::attach::interface_index;
use crate::dataplane::conntrack::Conntrack;
use crate::dataplane::counters::CounterMaps;
use crate::dataplane::rule_names::{self, DEFAULT_RUN_DIR};
use crate::dataplane::typed_map;
use crate::dataplane::{BPFFS_ROOT, pin_dir};
use crate::model::{Kind, Resource, WorkloadEndpoint};

use super::endpoint_lookup::{self, ContainerNames, display_name};
use super::store_access::open_for_palisade;
use super::tabwriter::render;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this workload endpoint: its name, NODE/NAME, a Docker container's name or a
    /// unique prefix of its EndpointID.
    pub endpoint: Option<String>,
    /// Where bpffs is mounted (as given to `palisade agent`).
    #[arg(long, default_value = BPFFS_ROOT)]
    pub bpffs: PathBuf,
    /// The agent's run-time directory (as given to `palisade agent`).
    #[arg(long, default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
}

pub async fn run(args: StatsArgs, url: &str) -> ExitCode {
    let pins = pin_dir(&args.bpffs);
    let counters = match CounterMaps::open_pinned(&pins) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("palisade stats: {e}");
            return ExitCode::FAILURE;
        }
    };
    let conntrack = match Conntrack::open_pinned(&pins).and_then(|c| c.usage()) {
        Ok(usage) => usage,
        Err(e) => {
            eprintln!("palisade stats: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The table's size as made (`--map-size`, or the agent's sizing): the "(all)" row's budget.
    let table_size = crate::dataplane::map_memory::pinned_maps_memory(&pins)
        .ok()
        .and_then(|maps| {
            maps.iter()
                .find(|m| m.name == palisade_common::map_names::CT)
                .map(|m| m.max_entries)
        })
        .unwrap_or(capacity::CT);
    let budget = match ct_budget(&pins) {
        Ok(budget) => budget,
        Err(e) => {
            eprintln!("palisade stats: cannot read the conntrack budget: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(store) = open_for_palisade(url).await else {
        return ExitCode::FAILURE;
    };
    let endpoints = match store.list(Some(Kind::WorkloadEndpoint)).await {
        Ok(s) => s.resources,
        Err(e) => {
            eprintln!("palisade stats: cannot list workload endpoints: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The host's interfaces decide which endpoint an ifindex is.
    let local: Vec<(u32, &WorkloadEndpoint)> = endpoints
        .iter()
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(w) => Some((interface_index(&w.spec.interface_name)?, w)),
            _ => None,
        })
        .collect();
    let local_endpoints: Vec<&WorkloadEndpoint> = local.iter().map(|(_, w)| *w).collect();
    let containers = ContainerNames::of(&local_endpoints).await;
    // Endpoints by interface: (name as people know it, interface name).
    let by_ifindex: BTreeMap<u32, (String, String)> = local
        .iter()
        .map(|(index, w)| {
            let names = (display_name(w, &containers), w.spec.interface_name.clone());
            (*index, names)
        })
        .collect();
    let chosen: Option<Vec<String>> = args.endpoint.as_ref().map(|e| {
        endpoint_lookup::find(e, &local_endpoints, &containers)
            .iter()
            .map(|w| display_name(w, &containers))
            .collect()
    });
    let wanted = |name: &str| chosen.as_ref().is_none_or(|c| c.iter().any(|n| n == name));
    if let (Some(e), Some(chosen)) = (&args.endpoint, &chosen)
        && chosen.is_empty()
    {
        eprintln!("palisade stats: no workload endpoint named '{e}' has an interface on this host");
        return ExitCode::FAILURE;
    }

    let tracked = match counters.endpoints() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("palisade stats: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = vec![
        [
            "ENDPOINT",
            "INTERFACE",
            "DIRECTION",
            "ALLOWED PACKETS",
            "ALLOWED BYTES",
            "DENIED PACKETS",
            "DENIED BYTES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (ifindex, s) in &tracked {
        let Some((name, ifname)) = by_ifindex.get(ifindex) else {
            continue;
        };
        if !wanted(name) {
            continue;
        }
        for (direction, counts) in [
            (
                "ingress",
                [
                    s.ingress_allowed_packets,
                    s.ingress_allowed_bytes,
                    s.ingress_denied_packets,
                    s.ingress_denied_bytes,
                ],
            ),
            (
                "egress",
                [
                    s.egress_allowed_packets,
                    s.egress_allowed_bytes,
                    s.egress_denied_packets,
                    s.egress_denied_bytes,
                ],
            ),
        ] {
            let mut row = vec![name.clone(), ifname.clone(), direction.to_string()];
            row.extend(counts.iter().map(u64::to_string));
            rows.push(row);
        }
    }
    print!("{}", render(&rows));

    println!();
    let mut rules = vec![vec![
        "RULE".to_string(),
        "PACKETS".to_string(),
        "BYTES".to_string(),
    ]];
    match rule_names::read(&rule_names::path_in(&args.run_dir)) {
        Ok(names) => {
            for name in names {
                match counters.rule(name.index) {
                    Ok(s) => {
                        rules.push(vec![name.rule, s.packets.to_string(), s.bytes.to_string()])
                    }
                    Err(e) => {
                        eprintln!("palisade stats: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
        Err(e) => eprintln!(
            "palisade stats: no rule names ({e}); is the agent running with --run-dir {}?",
            args.run_dir.display()
        ),
    }
    print!("{}", render(&rules));

    println!();
    let mut flows = vec![
        ["CONNTRACK", "INTERFACE", "ENTRIES", "BUDGET", "EVICTED"]
            .map(String::from)
            .to_vec(),
    ];
    let budget_text = if budget == 0 {
        "none".to_string()
    } else {
        budget.to_string()
    };
    for (ifindex, usage) in &conntrack {
        let Some((name, ifname)) = by_ifindex.get(ifindex) else {
            continue;
        };
        if !wanted(name) {
            continue;
        }
        flows.push(vec![
            name.clone(),
            ifname.clone(),
            usage.entries.to_string(),
            budget_text.clone(),
            usage.evicted.to_string(),
        ]);
    }
    if args.endpoint.is_none() {
        // Every endpoint on the host, the table's size as its budget.
        flows.push(vec![
            "(all)".to_string(),
            "-".to_string(),
            conntrack
                .values()
                .map(|u| u.entries)
                .sum::<u64>()
                .to_string(),
            table_size.to_string(),
            conntrack
                .values()
                .map(|u| u.evicted)
                .sum::<u64>()
                .to_string(),
        ]);
    }
    print!("{}", render(&flows));

    if args.endpoint.is_none() {
        println!();
        let reasons = match counters.reasons() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("palisade stats: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut table = vec![vec!["COUNTER".to_string(), "PACKETS".to_string()]];
        for (name, n) in STAT_NAMES.iter().zip(reasons) {
            table.push(vec![name.to_string(), n.to_string()]);
        }
        print!("{}", render(&table));
    }
    ExitCode::SUCCESS
}

/// The budget the agent set (`PAL_CONFIG`).
fn ct_budget(pins: &std::path::Path) -> Result<u32, Box<dyn std::error::Error>> {
    let config: Array<MapData, Config> = typed_map::open_pinned(pins, map_names::CONFIG)?;
    Ok(config.get(&0, 0)?.ct_budget)
}
