//! `palisade agent`: the node agent. Follows the datastore and the host's interfaces and
//! addresses, keeps the eBPF dataplane enforcing this node's workload endpoints, and serves
//! the Docker network and IPAM plugin.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, RingBuf};
use clap::{Args, ValueEnum};
use palisade_common::{
    CONFIG_ALLOW_EVENTS, CONFIG_DEBUG_LOG, CONFIG_HOST_TO_WORKLOAD_POLICY, CONFIG_LOCAL_REDIRECT,
    CONFIG_WORKLOAD_TO_HOST_ACCEPT, map_names,
};
use tokio::sync::mpsc;

use super::docker_plugin::PluginFlags;
use super::stop_signals::StopSignals;
use crate::agent::{Enforcer, ResourceView, SyncEvent, follow};
use crate::dataplane::attach::{AttachMode, Attachments};
use crate::dataplane::conntrack::{self, Conntrack};
use crate::dataplane::counters::CounterMaps;
use crate::dataplane::events::read_events;
use crate::dataplane::host_lock;
use crate::dataplane::links::{AddressEvent, LinkEvent, watch_addresses, watch_links};
use crate::dataplane::map_memory;
use crate::dataplane::map_sizes::{MapSizeOverride, MapSizes, SizeError, SizedFor};
use crate::dataplane::older_abi::OlderAbi;
use crate::dataplane::rule_names::{self, DEFAULT_RUN_DIR};
use crate::dataplane::writer::{PolicyMaps, Writer};
use crate::docker::PluginServer;
use crate::flows::{FlowHub, socket as flows_socket};
use crate::model::{Kind, Resource};
use crate::store::etcd::{self, EtcdStore};
use crate::store::{Datastore, StoreError};
use crate::telemetry::health::{BEAT_INTERVAL, LIVENESS_TIMEOUT};
use crate::telemetry::listen::{
    DEFAULT_HEALTH_ADDRESS, DEFAULT_METRICS_ADDRESS, ListenAddress, Listener,
};
use crate::telemetry::sample::Sampler;
use crate::telemetry::server::TelemetryServer;
use crate::telemetry::{Telemetry, listen, server};
use crate::{dataplane, log};

/// What happens to a workload's packets to the host itself once its egress policy allowed
/// them (Felix's `DefaultEndpointToHostAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EndpointToHost {
    Drop,
    Accept,
}

/// Whether the host's own packets to its workloads go through their ingress policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostToEndpoint {
    /// Always allowed (Felix's behaviour: the host may reach its workloads).
    Accept,
    /// Subject to the workload's ingress policy like any other peer.
    Policy,
}

/// How the programs are attached to workload interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttachModeArg {
    /// TCX where the kernel has it (Linux 6.6 and later), clsact otherwise.
    Auto,
    /// TCX links, pinned.
    Tcx,
    /// Direct-action filters on the clsact qdisc (netlink).
    Clsact,
}

impl AttachModeArg {
    fn resolve(self) -> AttachMode {
        match self {
            AttachModeArg::Auto => AttachMode::detect(),
            AttachModeArg::Tcx => AttachMode::Tcx,
            AttachModeArg::Clsact => AttachMode::Clsact,
        }
    }
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name: the agent is responsible for the workload endpoints whose
    /// `node` is this name (default: the host name).
    #[arg(long, env = "PALISADE_NODE")]
    pub node: Option<String>,
    /// Where bpffs is (or gets) mounted; palisade pins under <BPFFS>/palisade/<abi-version>/.
    #[arg(long, default_value = crate::dataplane::BPFFS_ROOT)]
    pub bpffs: PathBuf,
    /// Run-time state that is not a BPF object: the rule counter names `palisade stats`
    /// reads, the outcome names of recent policy generations, the `palisade flows` socket.
    #[arg(long, default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// Workload-to-host traffic after egress policy allowed it.
    #[arg(long, value_enum, default_value_t = EndpointToHost::Drop)]
    pub endpoint_to_host_action: EndpointToHost,
    /// Host-to-workload traffic.
    #[arg(long, value_enum, default_value_t = HostToEndpoint::Accept)]
    pub host_to_endpoint: HostToEndpoint,
    /// Report one denied packet in 2^N as an event (0: every one).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=31))]
    pub drop_event_sampling: u8,
    /// Report the first packet of one new flow in 2^N that policy allows as an event (for
    /// `palisade flows`; 0: every one), or `off`. Packets of flows conntrack knows are
    /// never reported.
    #[arg(long, default_value = "0", value_name = "N|off")]
    pub allow_event_sampling: AllowEventSampling,
    /// How to attach to workload interfaces; a run in one mode takes over and converts
    /// what a run in the other left.
    #[arg(long, value_enum, default_value_t = AttachModeArg::Auto)]
    pub attach_mode: AttachModeArg,
    /// Size the maps for this many workload endpoints in the whole cluster (each node's
    /// maps know every endpoint as a peer; this node's own share is taken as at most 256).
    #[arg(long, env = "PALISADE_MAX_ENDPOINTS", default_value_t = SizedFor::DEFAULT.endpoints)]
    pub max_endpoints: u32,
    /// Size the maps for this many policies.
    #[arg(long, env = "PALISADE_MAX_POLICIES", default_value_t = SizedFor::DEFAULT.policies)]
    pub max_policies: u32,
    /// One map's size over what --max-endpoints and --max-policies give, as NAME=ENTRIES
    /// (e.g. PAL_CT=65536; bytes for the ring buffer PAL_EVENTS); repeatable, comma-separated
    /// in the environment. Maps pinned by an earlier agent keep their size until their pins
    /// are removed.
    #[arg(
        long = "map-size",
        value_name = "NAME=ENTRIES",
        env = "PALISADE_MAP_SIZES",
        value_delimiter = ','
    )]
    pub map_sizes: Vec<MapSizeOverride>,
    /// How many conntrack entries (flows) each workload endpoint may hold, both directions
    /// together; a new flow beyond it is dropped (`dropped_conntrack_budget`), so that no
    /// workload can fill the table and evict others' flows. 0: no budget. Default: a quarter
    /// of the conntrack table (`PAL_CT`'s size).
    #[arg(long, env = "PALISADE_CONNTRACK_BUDGET")]
    pub conntrack_budget: Option<u32>,
    /// Kernel-side debug logging through aya-log (costly; for debugging only).
    #[arg(long)]
    pub bpf_debug_log: bool,
    /// Do not serve the Docker network and IPAM plugin (e.g. when `palisade docker-plugin`
    /// runs on its own, or on hosts without Docker).
    #[arg(long)]
    pub no_docker_plugin: bool,
    /// Let the host's IP stack forward packets between this node's workloads, as it does
    /// other traffic, instead of the eBPF programs (the default, which skips the host's
    /// netfilter and routing for the packets of a flow after its first, unless the host
    /// NATs the flow). For hosts whose own netfilter rules must see every packet of it.
    #[arg(long)]
    pub no_local_redirect: bool,
    /// Where to serve `/healthz` (the agent's loop is alive) and `/readyz` (the latest
    /// policy is in force on every local endpoint), or `off`. Loopback unless configured.
    #[arg(
        long,
        env = "PALISADE_HEALTH_ADDRESS",
        default_value = DEFAULT_HEALTH_ADDRESS,
        value_name = "ADDR:PORT|off"
    )]
    pub health_address: ListenAddress,
    /// Where to serve Prometheus metrics (`/metrics`), or `off`. Loopback unless
    /// configured; the same address as --health-address serves all three paths.
    #[arg(
        long,
        env = "PALISADE_METRICS_ADDRESS",
        default_value = DEFAULT_METRICS_ADDRESS,
        value_name = "ADDR:PORT|off"
    )]
    pub metrics_address: ListenAddress,
    /// Seconds the agent's main loop may go without turning before `/healthz` answers 503
    /// (it turns at least once a second).
    #[arg(
        long,
        env = "PALISADE_LIVENESS_TIMEOUT",
        default_value_t = LIVENESS_TIMEOUT.as_secs(),
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(2..=3600)
    )]
    pub liveness_timeout: u64,
    #[command(flatten)]
    pub plugin: PluginFlags,
}

pub async fn run(args: AgentArgs, datastore_url: String) -> ExitCode {
    let node = args.node.clone().unwrap_or_else(host_name);
    let sizes = match map_sizes(&args) {
        Ok(sizes) => sizes,
        Err(e) => {
            log::error("invalid map size", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };
    // First of all: nothing is loaded, pinned, attached or written, and the plugin socket
    // is not touched, unless this is the only agent on the dataplane.
    let locked = dataplane::ensure_bpffs_mounted(&args.bpffs)
        .map_err(|e| e.to_string())
        .and_then(|_| host_lock::lock(&args.bpffs).map_err(|e| e.to_string()));
    let _host_lock = match locked {
        Ok(lock) => lock,
        Err(e) => {
            log::error("cannot start the agent", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };
    let (store, down) = match open_store(&datastore_url).await {
        Ok(opened) => opened,
        Err(e) => {
            log::error(
                "cannot open the datastore",
                &[("url", &datastore_url), ("error", &e)],
            );
            return ExitCode::FAILURE;
        }
    };
    log::info(
        "agent starting",
        &[("node", &node), ("datastore", &datastore_url)],
    );
    let telemetry = Arc::new(Telemetry::new(Duration::from_secs(args.liveness_timeout)));
    // Down at start is an outage like any other: the dataplane below adopts what the last
    // agent pinned and goes on enforcing it, and the follower retries until etcd answers.
    let mut degraded = false;
    if let Some(e) = down {
        degraded = true;
        telemetry.datastore_degraded();
        log::warn(DEGRADED, &[("error", &e)]);
    }
    // Bound before the dataplane is touched: an address in use is a configuration error.
    let listeners = match listen::bind(args.health_address, args.metrics_address) {
        Ok(l) => l,
        Err(e) => {
            log::error("cannot serve health and metrics", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };
    let mut enforcer = match start_dataplane(&args, &node, &sizes) {
        Ok(e) => e,
        Err(e) => {
            log::error("cannot set up the eBPF dataplane", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };
    enforcer.report_to(Arc::clone(&telemetry));
    let telemetry_server = match serve_telemetry(&args, listeners, &telemetry) {
        Ok(server) => server,
        Err(e) => {
            log::error("cannot serve health and metrics", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };

    let (stop_plugin, plugin_stopped) = tokio::sync::oneshot::channel::<()>();
    let plugin = if args.no_docker_plugin {
        None
    } else {
        match PluginServer::bind(args.plugin.options(&node), Arc::clone(&store)) {
            Ok(server) => Some(tokio::spawn(server.run(async {
                let _ = plugin_stopped.await;
            }))),
            Err(e) => {
                log::error(
                    "cannot serve the docker plugin; enforcing without it",
                    &[("error", &e)],
                );
                None
            }
        }
    };

    let (tx, mut rx) = mpsc::channel(16);
    let follower = tokio::spawn(follow(store, tx));
    let mut links = match watch_links() {
        Ok(l) => l,
        Err(e) => {
            log::error("cannot follow the host's interfaces", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };
    let mut addresses = match watch_addresses() {
        Ok(a) => a,
        Err(e) => {
            log::error("cannot follow the host's addresses", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };
    let mut stop = match StopSignals::install() {
        Ok(stop) => stop,
        Err(e) => {
            log::error("cannot install signal handlers", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };
    let mut map_check = tokio::time::interval(MAP_CHECK_INTERVAL);
    map_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // A loop that stops turning stops the beats, and /healthz says so.
    let mut beats = tokio::time::interval(BEAT_INTERVAL);
    loop {
        // Once the slot a flip retired may be written, the last publish goes into it too,
        // unless the next change comes first (whose publish then writes both).
        let catch_up = enforcer.catch_up_due();
        let due = tokio::time::Instant::from_std(catch_up.unwrap_or_else(Instant::now));
        tokio::select! {
            _ = map_check.tick() => enforcer.verify_maps(),
            _ = tokio::time::sleep_until(due), if catch_up.is_some() => enforcer.catch_up(),
            _ = beats.tick() => telemetry.beat(),
            event = rx.recv() => match event {
                Some(SyncEvent::Updated(view)) => {
                    if degraded {
                        log::info("datastore reachable again", &[]);
                        degraded = false;
                    }
                    report(&view, &node);
                    telemetry.datastore_in_sync(view.revision);
                    enforcer.view_updated(view);
                }
                Some(SyncEvent::Degraded(error)) => {
                    degraded = true;
                    telemetry.datastore_degraded();
                    log::warn(DEGRADED, &[("error", &error)]);
                }
                None => break,
            },
            event = links.recv() => match event {
                Some(LinkEvent::Present { ifindex, name }) => enforcer.link_added(name, ifindex),
                Some(LinkEvent::Removed { ifindex, name }) => enforcer.link_removed(&name, ifindex),
                Some(LinkEvent::Synced) => enforcer.links_synced(),
                None => {
                    log::warn("interface events ended; subscribing again", &[]);
                    match watch_links() {
                        Ok(l) => links = l,
                        Err(e) => {
                            log::error("cannot follow the host's interfaces", &[("error", &e)]);
                            break;
                        }
                    }
                }
            },
            event = addresses.recv() => match event {
                Some(AddressEvent::Added { ifindex, address }) => enforcer.host_address(address, ifindex, true),
                Some(AddressEvent::Removed { ifindex, address }) => enforcer.host_address(address, ifindex, false),
                Some(AddressEvent::Synced) => {}
                None => {
                    log::warn("address events ended; subscribing again", &[]);
                    match watch_addresses() {
                        Ok(a) => addresses = a,
                        Err(e) => {
                            log::error("cannot follow the host's addresses", &[("error", &e)]);
                            break;
                        }
                    }
                }
            },
            _ = stop.recv() => break,
        }
    }
    follower.abort();
    drop(telemetry_server);
    let _ = stop_plugin.send(());
    if let Some(plugin) = plugin {
        let _ = plugin.await;
    }
    // No one answers on it any more.
    let _ = std::fs::remove_file(flows_socket::path_in(&args.run_dir));
    // The programs, links and maps stay pinned: enforcement goes on without the agent, and
    // the next agent adopts them.
    log::info("agent stopped", &[("node", &node)]);
    ExitCode::SUCCESS
}

/// How often the agent checks that nobody else moved the pinned generation (one map read).
const MAP_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What the agent says while the datastore cannot be read.
const DEGRADED: &str = "datastore unavailable; keeping the last known policy";

/// Opens the datastore; an etcd that is down is returned with the reason rather than
/// refused (see [`EtcdStore::open_even_if_down`]).
async fn open_store(url: &str) -> Result<(Arc<dyn Datastore>, Option<StoreError>), StoreError> {
    if url.starts_with(etcd::SCHEME) {
        let (store, down) = EtcdStore::open_even_if_down(url).await?;
        return Ok((Arc::new(store), down));
    }
    Ok((crate::store::open(url).await?, None))
}

/// The map sizes the flags ask for.
fn map_sizes(args: &AgentArgs) -> Result<MapSizes, SizeError> {
    let scale = SizedFor {
        endpoints: args.max_endpoints,
        policies: args.max_policies,
    };
    MapSizes::for_scale(&scale)?.with_overrides(&args.map_sizes)
}

/// Serves health and metrics on `listeners` (none: nothing to serve), reading the
/// counters from the maps the dataplane pinned.
fn serve_telemetry(
    args: &AgentArgs,
    listeners: Vec<Listener>,
    telemetry: &Arc<Telemetry>,
) -> Result<Option<TelemetryServer>, Box<dyn std::error::Error>> {
    if listeners.is_empty() {
        return Ok(None);
    }
    let sampler = match args.metrics_address {
        ListenAddress::Off => None,
        ListenAddress::At(_) => Some(Sampler::open(&dataplane::pin_dir(&args.bpffs))?),
    };
    Ok(Some(server::start(
        listeners,
        Arc::clone(telemetry),
        sampler,
    )?))
}

/// Mounts bpffs if needed, loads the embedded eBPF object (adopting pinned maps), pins its
/// programs, adopts the pinned links, and starts reporting events.
fn start_dataplane(
    args: &AgentArgs,
    node: &str,
    sizes: &MapSizes,
) -> Result<Enforcer, Box<dyn std::error::Error>> {
    let dir = dataplane::ensure_pin_dir(&args.bpffs)?;
    let older = OlderAbi::find(&args.bpffs)?;
    for o in &older {
        log::info(
            "found the pins of an older map ABI; taking its interfaces over once the policy is published",
            &[("version", &o.version), ("pins", &o.dir.display())],
        );
    }
    let mut loaded = dataplane::load_sized(dataplane::ebpf_object()?, Some(&dir), sizes)?;
    report_sizes(&loaded, &dir);
    loaded.pin_programs(&dir)?;
    let pinned = dataplane::program_pin_dir(&dir);
    log::info("eBPF programs loaded", &[("pinned", &pinned.display())]);

    let sizes_made = loaded.sizes().clone();
    let ebpf = loaded.ebpf_mut();
    let policy_maps = PolicyMaps::take(ebpf)?;
    let mut writer = Writer::adopt(policy_maps)?;
    let mut flags = 0;
    if args.bpf_debug_log {
        flags |= CONFIG_DEBUG_LOG;
    }
    if args.host_to_endpoint == HostToEndpoint::Policy {
        flags |= CONFIG_HOST_TO_WORKLOAD_POLICY;
    }
    if args.endpoint_to_host_action == EndpointToHost::Accept {
        flags |= CONFIG_WORKLOAD_TO_HOST_ACCEPT;
    }
    if args.allow_event_sampling.0.is_some() {
        flags |= CONFIG_ALLOW_EVENTS;
    }
    if !args.no_local_redirect {
        flags |= CONFIG_LOCAL_REDIRECT;
    }
    let drop_mask = (1u32 << args.drop_event_sampling) - 1;
    let allow_mask = (1u32 << args.allow_event_sampling.0.unwrap_or(0)) - 1;
    writer.set_switches(flags, drop_mask, allow_mask)?;
    let ct_table = sizes_made
        .get(map_names::CT)
        .unwrap_or(palisade_common::capacity::CT);
    writer.set_ct_budget(
        args.conntrack_budget
            .unwrap_or_else(|| conntrack::default_budget(ct_table)),
    )?;
    log::info(
        "maps adopted",
        &[
            ("generation", &writer.generation()),
            ("maps", &dataplane::map_pin_dir(&dir).display()),
        ],
    );
    let counters = CounterMaps::take(ebpf)?;
    let conntrack = Conntrack::take(ebpf)?;
    spawn_conntrack_sweeper(&dir)?;
    let host_addrs = BpfHashMap::try_from(
        ebpf.take_map(map_names::HOST_ADDRS)
            .ok_or("the eBPF object has no PAL_HOST_ADDRS map")?,
    )?;
    let events = RingBuf::try_from(
        ebpf.take_map(map_names::EVENTS)
            .ok_or("the eBPF object has no PAL_EVENTS map")?,
    )?;
    if args.bpf_debug_log {
        match dataplane::bpf_log::init(ebpf) {
            Ok(logger) => {
                tokio::spawn(dataplane::bpf_log::forward(logger));
            }
            Err(e) => log::warn("kernel-side debug logging unavailable", &[("error", &e)]),
        }
    }
    let mode = args.attach_mode.resolve();
    let (attachments, adopted) = Attachments::adopt(&mut loaded, &dir, mode)?;
    log::info(
        "attachments adopted",
        &[
            ("mode", &mode),
            ("interfaces", &adopted.kept.len()),
            ("converted", &adopted.converted.len()),
            ("removed", &adopted.removed.len()),
        ],
    );
    let loaded_sizes = &loaded.sizes().clone();
    let enforcer = Enforcer::new(
        node.to_string(),
        loaded,
        writer,
        counters,
        conntrack,
        host_addrs,
        attachments,
        dataplane::slot_image::slot_capacities(loaded_sizes),
        rule_names::path_in(&args.run_dir),
        dir.clone(),
        older,
    );
    let flows = FlowHub::new();
    let lost_counters = match CounterMaps::open_pinned(&dir) {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn(
                "cannot read the events-lost counter; `palisade flows` will not show losses",
                &[("error", &e)],
            );
            None
        }
    };
    tokio::spawn(read_events(
        events,
        enforcer.outcomes.clone(),
        Arc::clone(&flows),
        lost_counters,
    ));
    let socket = flows_socket::bind(&args.run_dir).map_err(|e| {
        format!(
            "cannot serve `palisade flows` in {}: {e}",
            args.run_dir.display()
        )
    })?;
    log::info(
        "serving palisade flows",
        &[("socket", &flows_socket::path_in(&args.run_dir).display())],
    );
    tokio::spawn(flows_socket::serve(socket, flows));
    Ok(enforcer)
}

/// Says what the maps cost, and which pinned maps kept another size than asked.
fn report_sizes(loaded: &dataplane::LoadedObject, dir: &std::path::Path) {
    for kept in loaded.kept_sizes() {
        log::warn(
            "a pinned map keeps its size; the size asked for takes effect once its pin is removed",
            &[
                ("map", &kept.map),
                ("asked", &kept.asked),
                ("pinned", &kept.pinned),
            ],
        );
    }
    match map_memory::pinned_maps_memory(dir) {
        Ok(maps) => log::info(
            "maps sized",
            &[
                ("sizes", loaded.sizes()),
                (
                    "memory_mib",
                    &format!("{:.1}", map_memory::total_mib(&maps)),
                ),
            ],
        ),
        Err(e) => log::warn("cannot read the maps' memory", &[("error", &e)]),
    }
}

/// Sweeps conntrack every [`conntrack::SWEEP_INTERVAL`] on a thread of its own (a full
/// table takes a moment to read), with its own handles on the pinned maps.
fn spawn_conntrack_sweeper(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut table = Conntrack::open_pinned(dir)?;
    std::thread::Builder::new()
        .name("conntrack-sweep".to_string())
        .spawn(move || {
            yield_to_policy();
            loop {
                std::thread::sleep(conntrack::SWEEP_INTERVAL);
                match table.sweep(conntrack::monotonic_coarse_ns()) {
                    Ok(swept) if swept.evicted > 0 => log::warn(
                        "conntrack entries were evicted (the table is full); see `palisade stats`",
                        &[
                            ("evicted", &swept.evicted),
                            ("live", &swept.live),
                            ("expired", &swept.expired),
                        ],
                    ),
                    Ok(_) => {}
                    Err(e) => log::warn("cannot sweep conntrack", &[("error", &e)]),
                }
            }
        })?;
    Ok(())
}

/// The niceness of the conntrack sweep's thread: housekeeping, which a policy change must
/// not wait for. A sweep after a burst of short connections reads and deletes some 100,000
/// entries, tens of milliseconds of CPU; at the same priority, a compile that came
/// meanwhile on the same CPU would get only half of it.
const SWEEP_NICENESS: libc::c_int = 10;

/// Lowers the calling thread's priority to [`SWEEP_NICENESS`] (raising niceness needs no
/// privilege); a failure only costs the policy its precedence.
fn yield_to_policy() {
    // SAFETY: `gettid` has no preconditions; `setpriority` on the calling thread's own id
    // changes only its scheduling.
    let rc = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            SWEEP_NICENESS,
        )
    };
    if rc != 0 {
        log::warn(
            "cannot lower the conntrack sweep's priority",
            &[("error", &std::io::Error::last_os_error())],
        );
    }
}

fn report(view: &Arc<ResourceView>, node: &str) {
    let local = view.workload_endpoints_on(node).count();
    log::info(
        "policy view updated",
        &[
            ("revision", &view.revision),
            ("profiles", &view.count(Kind::Profile)),
            ("policies", &view.count(Kind::Policy)),
            ("workload_endpoints", &view.count(Kind::WorkloadEndpoint)),
            ("local_endpoints", &local),
        ],
    );
    warn_missing_profiles(view, node);
}

/// A profile that local endpoints list but that does not exist denies all their traffic
/// (as in Calico); say so on every update, since deleting a profile in use is allowed.
fn warn_missing_profiles(view: &ResourceView, node: &str) {
    let local: Vec<&Resource> = view.workload_endpoints_on(node).collect();
    let listed: std::collections::BTreeSet<&str> = local
        .iter()
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(w) => Some(w.spec.profiles.iter().map(String::as_str)),
            _ => None,
        })
        .flatten()
        .collect();
    for profile in listed {
        let key = crate::model::ResourceKey::Profile {
            name: profile.to_string(),
        };
        if !view.resources().contains_key(&key) {
            let endpoints = crate::model::endpoints_listing(local.iter().copied(), profile);
            log::warn(
                "local endpoints list a profile that does not exist: it denies all their traffic",
                &[("profile", &profile), ("endpoints", &endpoints)],
            );
        }
    }
}

/// `--allow-event-sampling`: one in 2^N, or `None` for `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowEventSampling(pub Option<u8>);

impl std::str::FromStr for AllowEventSampling {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "off" {
            return Ok(AllowEventSampling(None));
        }
        match text.parse::<u8>() {
            Ok(n) if n <= 31 => Ok(AllowEventSampling(Some(n))),
            _ => Err(format!(
                "'{text}' is neither `off` nor a number from 0 to 31"
            )),
        }
    }
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}
