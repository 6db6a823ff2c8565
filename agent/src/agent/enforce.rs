//! Enforcement: the resource view and the host's interfaces in, maps and attachments out.
//!
//! Every change (a new view, an interface appearing or going) leads to one `reconcile`:
//! compile the view for this node, publish the image into the maps (incremental, atomic;
//! see [`crate::dataplane::writer`]), then attach the programs to local workload interfaces
//! that are not yet attached and detach from those that are no longer local workloads.
//! Publishing before attaching means a program never runs on an interface whose endpoint
//! the maps do not know yet. A compile that does not fit the maps is refused whole: the
//! policy in force stays, and the agent says so loudly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData};
use palisade_common::{HostAddrKey, HostAddrValue, map_names};

use crate::agent::ResourceView;
use crate::agent::thread_usage::ThreadUsage;
use crate::compile::{Capacities, Changes, Compiler, Locals};
use crate::dataplane::attach::{AttachMode, Attachments};
use crate::dataplane::conntrack::Conntrack;
use crate::dataplane::counters::CounterMaps;
use crate::dataplane::events::RecentOutcomes;
use crate::dataplane::names_writer::NamesWriter;
use crate::dataplane::older_abi::OlderAbi;
use crate::dataplane::rule_names::RuleNamesCache;
use crate::dataplane::slot_image::EncodeError;
use crate::dataplane::slot_image::{addr_bytes, family_of};
use crate::dataplane::writer::{WriteError, Writer};
use crate::dataplane::{LoadedObject, rule_names};
use crate::log::{self, Millis};
use crate::model::{Resource, ResourceKey};
use crate::store::Revision;
use crate::telemetry::Telemetry;
use crate::telemetry::status::{Enforcement, LocalEndpoint, RuleLabels};

/// An update that changes neither the image nor the bindings publishes nothing.
struct LastPublish {
    bindings: BTreeMap<ResourceKey, u32>,
}

/// How far one reconcile got, for its publish's log line.
#[derive(Clone, Copy)]
struct Timing {
    started: Instant,
    /// The compiler's own time (both compiles, when an in-place one did not fit).
    compiled: Duration,
    /// What the compiles used of their thread meanwhile.
    compile_usage: ThreadUsage,
}

pub struct Enforcer {
    pub node: String,
    pub loaded: LoadedObject,
    pub writer: Writer,
    pub counters: CounterMaps,
    /// Each endpoint's conntrack entries, against its budget.
    pub conntrack: Conntrack,
    pub host_addrs: BpfHashMap<MapData, HostAddrKey, HostAddrValue>,
    pub attachments: Attachments,
    pub outcomes: RecentOutcomes,
    /// Keeps the last compilation, so that most changes are compiled in place.
    compiler: Compiler,
    /// Where the rule counter names go, for `palisade stats`.
    pub rule_names_path: PathBuf,
    /// Their file's contents, named rule by rule as counters are added.
    rule_names: RuleNamesCache,
    /// Writes the name files off this loop; `None` if its thread could not start.
    name_files: Option<NamesWriter>,
    /// This run's pin directory.
    pin_dir: PathBuf,
    /// Pins of older map ABIs still enforcing, taken over after the first publish.
    older: Vec<OlderAbi>,
    /// Whether their conntrack entries were copied over.
    older_carried: bool,
    /// The host's interfaces, by name.
    links: BTreeMap<String, u32>,
    view: Arc<ResourceView>,
    /// This node's workload endpoints in `view`, with their interface names.
    locals: BTreeMap<ResourceKey, String>,
    /// What the last publish wrote, if it succeeded.
    published: Option<LastPublish>,
    /// Which interfaces carry each host address (an address may be on several).
    host_addresses: BTreeMap<IpAddr, BTreeSet<u32>>,
    /// Whether the view and the interface list have been seen in full: before both, a
    /// reconcile could detach interfaces adopted from an earlier agent.
    view_synced: bool,
    links_synced: bool,
    /// What each interface this agent attached to was attached for (endpoint, name), to
    /// name them when enforcement stops.
    enforcing: BTreeMap<u32, (ResourceKey, String)>,
    /// The revision whose policy this agent last put in force (published, or found
    /// already there).
    policy_revision: Option<Revision>,
    /// Where to report what it does, if anywhere.
    telemetry: Option<Arc<Telemetry>>,
    /// The rule counters' labels, as last reported (indexes are only ever appended).
    rule_labels: Arc<[RuleLabels]>,
}

impl Enforcer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: String,
        loaded: LoadedObject,
        writer: Writer,
        counters: CounterMaps,
        conntrack: Conntrack,
        host_addrs: BpfHashMap<MapData, HostAddrKey, HostAddrValue>,
        attachments: Attachments,
        capacities: Capacities,
        rule_names_path: PathBuf,
        pin_dir: PathBuf,
        older: Vec<OlderAbi>,
    ) -> Enforcer {
        let node_name = node.clone();
        let name_files = NamesWriter::start()
            .inspect_err(|e| {
                log::error(
                    "cannot start the name files' writer; `palisade stats` shows indexes \
                     instead of rule names",
                    &[("error", &e)],
                )
            })
            .ok();
        let run_dir = rule_names_path.parent().map(PathBuf::from);
        Enforcer {
            node,
            loaded,
            writer,
            counters,
            conntrack,
            host_addrs,
            attachments,
            outcomes: RecentOutcomes::new(run_dir, name_files.as_ref().map(NamesWriter::handle)),
            compiler: Compiler::new(Locals::Node(&node_name), capacities),
            rule_names_path,
            rule_names: RuleNamesCache::default(),
            name_files,
            pin_dir,
            older,
            older_carried: false,
            links: BTreeMap::new(),
            view: Arc::new(ResourceView::default()),
            locals: BTreeMap::new(),
            published: None,
            host_addresses: BTreeMap::new(),
            view_synced: false,
            links_synced: false,
            enforcing: BTreeMap::new(),
            policy_revision: None,
            telemetry: None,
            rule_labels: Arc::from(Vec::new()),
        }
    }

    /// Reports compile and publish times, refusals and the state of enforcement to
    /// `telemetry` from now on.
    pub fn report_to(&mut self, telemetry: Arc<Telemetry>) {
        self.telemetry = Some(telemetry);
        self.report();
    }

    pub fn view_updated(&mut self, view: Arc<ResourceView>) {
        self.locals = local_interfaces(&view, &self.node);
        self.view = view;
        self.view_synced = true;
        self.reconcile();
    }

    /// Every interface that existed when the agent subscribed has been reported.
    pub fn links_synced(&mut self) {
        self.links_synced = true;
        self.reconcile();
    }

    pub fn link_added(&mut self, name: String, ifindex: u32) {
        // A renamed interface keeps its index: forget its old name.
        self.links.retain(|n, i| *i != ifindex || *n == name);
        if self.links.insert(name.clone(), ifindex) != Some(ifindex) && self.is_local(&name) {
            self.reconcile();
        }
    }

    pub fn link_removed(&mut self, name: &str, ifindex: u32) {
        self.links.retain(|_, i| *i != ifindex);
        if self.is_local(name) || self.attachments.attached().any(|i| i == ifindex) {
            self.reconcile();
        }
    }

    /// An address of the host appeared on (or left) interface `ifindex`.
    pub fn host_address(&mut self, addr: IpAddr, ifindex: u32, present: bool) {
        let holders = self.host_addresses.entry(addr).or_default();
        if present {
            holders.insert(ifindex);
        } else {
            holders.remove(&ifindex);
        }
        let present = !holders.is_empty();
        if !present {
            self.host_addresses.remove(&addr);
        }
        let key = HostAddrKey {
            family: family_of(addr),
            _pad: [0; 3],
            addr: addr_bytes(addr),
        };
        let result = if present {
            self.host_addrs.insert(key, HostAddrValue { present: 1 }, 0)
        } else {
            match self.host_addrs.remove(&key) {
                Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                other => other,
            }
        };
        if let Err(e) = result {
            log::error(
                "cannot update the host address map",
                &[("address", &addr), ("error", &e)],
            );
        }
        self.report();
    }

    fn is_local(&self, ifname: &str) -> bool {
        self.locals.values().any(|n| n == ifname)
    }

    pub fn reconcile(&mut self) {
        if !(self.view_synced && self.links_synced) {
            return;
        }
        let started = Instant::now();
        // Owned: publishing and attaching below need `self` mutably.
        let locals = self.locals.clone();
        let ifindex_of = self.bound_interfaces();

        let compiling = Instant::now();
        let usage = ThreadUsage::now();
        match self.compiler.update(self.view.resources()) {
            Ok(changes) => {
                let compiled = compiling.elapsed();
                let timing = Timing {
                    started,
                    compiled,
                    compile_usage: ThreadUsage::now() - usage,
                };
                let full = matches!(changes, Changes::All);
                self.observe(|t| t.compiled(full, compiled));
                if self.publish(&changes, &ifindex_of, timing) {
                    self.policy_revision = Some(self.view.revision);
                }
            }
            Err(e) => {
                self.observe(Telemetry::update_refused);
                log::error(
                    "POLICY UPDATE REFUSED: the new policy does not fit; the policy in force is unchanged",
                    &[("revision", &self.view.revision), ("error", &e)],
                )
            }
        }

        let wanted: BTreeSet<u32> = ifindex_of.values().copied().collect();
        if !self.older.is_empty() {
            if self.published.is_none() {
                // The older programs go on enforcing with their maps until the new maps
                // hold a policy.
                return;
            }
            self.carry_older_conntrack();
        }
        for (key, ifindex) in &ifindex_of {
            if self.attachments.attached().any(|i| i == *ifindex) {
                continue;
            }
            let name = locals.get(key).map(String::as_str).unwrap_or_default();
            if let Err(e) = self.counters.track_endpoint(*ifindex) {
                log::warn(
                    "cannot count for an interface",
                    &[("interface", &name), ("error", &e)],
                );
            }
            if let Err(e) = self.conntrack.track_endpoint(*ifindex) {
                log::warn(
                    "cannot count an interface's conntrack entries; its flows have no budget",
                    &[("interface", &name), ("error", &e)],
                );
            }
            match self.attach(name, *ifindex) {
                Ok(()) => {
                    log::info(
                        "enforcing on workload interface",
                        &[
                            ("endpoint", key),
                            ("interface", &name),
                            ("ifindex", ifindex),
                            ("mode", &self.attachments.mode()),
                        ],
                    );
                    self.enforcing
                        .insert(*ifindex, (key.clone(), name.to_string()));
                }
                Err(e) => log::error(
                    "cannot attach to a workload interface",
                    &[("endpoint", key), ("interface", &name), ("error", &e)],
                ),
            }
        }
        if !self.older.is_empty()
            && wanted
                .iter()
                .all(|i| self.attachments.attached().any(|a| a == *i))
        {
            self.remove_older();
        }
        let stale: Vec<u32> = self
            .attachments
            .attached()
            .filter(|i| !wanted.contains(i))
            .collect();
        for ifindex in stale {
            // Named by what it was attached for; an interface adopted from an earlier
            // agent by its current name, if it still exists.
            let (endpoint, interface) = match self.enforcing.remove(&ifindex) {
                Some((key, name)) => (key.to_string(), name),
                None => (
                    "-".to_string(),
                    self.links
                        .iter()
                        .find(|(_, i)| **i == ifindex)
                        .map(|(n, _)| n.clone())
                        .unwrap_or_else(|| "(gone)".to_string()),
                ),
            };
            match self.attachments.detach(ifindex) {
                Ok(_) => log::info(
                    "stopped enforcing",
                    &[
                        ("endpoint", &endpoint),
                        ("interface", &interface),
                        ("ifindex", &ifindex),
                    ],
                ),
                Err(e) => log::error(
                    "cannot detach from an interface",
                    &[("ifindex", &ifindex), ("error", &e)],
                ),
            }
            if let Err(e) = self.counters.forget_endpoint(ifindex) {
                log::warn("cannot drop an interface's counters", &[("error", &e)]);
            }
            if let Err(e) = self.conntrack.forget_endpoint(ifindex) {
                log::warn(
                    "cannot drop an interface's conntrack count",
                    &[("error", &e)],
                );
            }
        }
        self.report();
    }

    /// When the maps' inactive slot is due to be brought up to the last publish
    /// ([`Enforcer::catch_up`]), if it is behind.
    pub fn catch_up_due(&self) -> Option<Instant> {
        self.published.as_ref()?;
        self.writer.catch_up_due()
    }

    /// Writes the last publish into the slot packets no longer use, so that the next
    /// change has only itself to write before its flip (see [`crate::dataplane::writer`]).
    pub fn catch_up(&mut self) {
        // Another writer may have flipped since, making the slot this agent retired the
        // one packets use: as in `verify_maps`, the maps are then written afresh.
        if self.maps_moved() {
            self.published = None;
            self.reconcile();
            return;
        }
        let (Some(last), Some(image)) = (&self.published, self.compiler.image()) else {
            return;
        };
        if let Err(e) = self.writer.catch_up(image, &last.bindings) {
            log::warn(
                "cannot bring the inactive slot of the policy maps up to date; the next \
                 change writes it in full",
                &[("error", &e)],
            );
        }
        // The map occupancy counts both slots.
        self.report();
    }

    /// Defence in depth against a second writer of the maps (the host lock keeps other
    /// agents of this release and later ones out; an older release or a tool does not
    /// take it): if the pinned generation is not the one this agent wrote last, it says so
    /// loudly and rewrites the maps in full.
    pub fn verify_maps(&mut self) {
        if self.maps_moved() {
            self.published = None;
            self.reconcile();
        }
    }

    /// Whether someone else wrote `PAL_CONFIG` since this agent did; the writer then
    /// writes the next slot in full.
    fn maps_moved(&mut self) -> bool {
        let expected = self.writer.config();
        match self.writer.check_config() {
            Ok(None) => false,
            Ok(Some(found)) => {
                log::error(
                    "THE POLICY MAPS WERE WRITTEN BY ANOTHER PROCESS; rewriting them in full",
                    &[
                        ("expected_generation", &expected.generation),
                        ("found_generation", &found.generation),
                        (
                            "hint",
                            &"another palisade agent (an old release?) or a tool is writing \
                              PAL_CONFIG: stop it",
                        ),
                    ],
                );
                true
            }
            Err(e) => {
                log::warn("cannot check the policy maps", &[("error", &e)]);
                false
            }
        }
    }

    /// Attaches to a local interface: in TCX mode in the place of an older map ABI's
    /// links, where there are any.
    fn attach(&mut self, name: &str, ifindex: u32) -> Result<(), crate::dataplane::Error> {
        if self.attachments.mode() == AttachMode::Tcx {
            for older in &self.older {
                if older.move_links(&self.pin_dir, ifindex)? {
                    return self
                        .attachments
                        .take_over_moved(&mut self.loaded, name, ifindex);
                }
            }
        }
        self.attachments.attach(&mut self.loaded, name, ifindex)
    }

    /// Copies the older map ABIs' conntrack entries into the new table, once, before the
    /// first interface is taken over.
    fn carry_older_conntrack(&mut self) {
        if self.older_carried {
            return;
        }
        self.older_carried = true;
        // A generation no packet runs under: each carried flow is checked again.
        let stale = self.writer.generation().wrapping_sub(1);
        for older in &self.older {
            match older.carry_conntrack(&mut self.conntrack, stale) {
                Ok(carried) => log::info(
                    "conntrack carried over from an older map ABI",
                    &[("version", &older.version), ("flows", &carried)],
                ),
                Err(e) => log::warn(
                    "cannot carry conntrack over from an older map ABI; its connections are \
                     picked up by their next packets",
                    &[("version", &older.version), ("error", &e)],
                ),
            }
        }
    }

    /// Every local interface runs the new programs: what is left of the older map ABIs
    /// goes.
    fn remove_older(&mut self) {
        let run_dir = self.rule_names_path.parent().map(std::path::Path::to_owned);
        let mut kept = Vec::new();
        for older in std::mem::take(&mut self.older) {
            match older.remove() {
                Ok(removed) => {
                    if let Some(dir) = &run_dir {
                        let _ =
                            std::fs::remove_file(rule_names::path_of_version(dir, older.version));
                    }
                    log::info(
                        "older map ABI removed",
                        &[
                            ("version", &older.version),
                            ("links", &removed.links),
                            ("filters", &removed.filters),
                            ("pins", &older.dir.display()),
                        ],
                    );
                }
                Err(e) => {
                    log::error(
                        "cannot remove an older map ABI's pins and attachments",
                        &[("version", &older.version), ("error", &e)],
                    );
                    kept.push(older);
                }
            }
        }
        self.older = kept;
    }

    /// The local endpoints whose interfaces the host has, with their indexes.
    fn bound_interfaces(&self) -> BTreeMap<ResourceKey, u32> {
        self.locals
            .iter()
            .filter_map(|(key, name)| self.links.get(name).map(|&i| (key.clone(), i)))
            .collect()
    }

    fn observe(&self, what: impl FnOnce(&Telemetry)) {
        if let Some(telemetry) = &self.telemetry {
            what(telemetry);
        }
    }

    /// Tells the telemetry where enforcement stands.
    fn report(&mut self) {
        let Some(telemetry) = &self.telemetry else {
            return;
        };
        let bound = self.bound_interfaces();
        let attached: BTreeSet<u32> = self.attachments.attached().collect();
        let endpoints = self
            .locals
            .iter()
            .map(|(key, interface)| {
                let ifindex = bound.get(key).copied();
                LocalEndpoint {
                    name: match key {
                        ResourceKey::WorkloadEndpoint { name, .. } => name.clone(),
                        other => other.to_string(),
                    },
                    interface: interface.clone(),
                    ifindex,
                    attached: ifindex.is_some_and(|i| attached.contains(&i)),
                }
            })
            .collect();
        let counters = self.writer.rule_counters();
        if counters.len() as usize != self.rule_labels.len() {
            self.rule_labels = counters
                .iter()
                .map(|(index, rule)| RuleLabels::new(index, rule))
                .collect();
        }
        let mut occupancy = self.writer.occupancy();
        occupancy.push((map_names::HOST_ADDRS, self.host_addresses.len() as u64));
        telemetry.enforcement(Enforcement {
            policy_revision: self.policy_revision,
            endpoints,
            rules: Arc::clone(&self.rule_labels),
            occupancy,
        });
    }

    /// Publishes what the compiler holds; `true` if the maps hold it afterwards (also when
    /// nothing needed writing).
    fn publish(
        &mut self,
        changes: &Changes,
        ifindex_of: &BTreeMap<ResourceKey, u32>,
        timing: Timing,
    ) -> bool {
        if self.compiler.image().is_none() {
            return false;
        }
        let writing = Instant::now();
        self.maps_moved();
        let Some(image) = self.compiler.image() else {
            return false;
        };
        let unchanged = matches!(changes, Changes::Keys(keys) if keys.is_empty());
        if let Some(last) = &self.published
            && unchanged
            && last.bindings == *ifindex_of
        {
            return true;
        }
        let counters = &mut self.counters;
        let zero_counters = |indexes| counters.zero_rules(indexes).map_err(|e| e.to_string());
        match self
            .writer
            .publish_changes(image, changes, ifindex_of, zero_counters)
        {
            Ok(published) => {
                let written = writing.elapsed();
                let flipped = timing.started.elapsed();
                self.observe(|t| t.published(written));
                let (bases, _) = self.writer.array_layout(self.writer.active_slot());
                self.outcomes.published(
                    published.generation,
                    bases.outcomes,
                    &image.outcomes,
                    !matches!(changes, Changes::All),
                );
                if self.rule_names.update(self.writer.rule_counters())
                    && let Some(files) = &self.name_files
                {
                    files
                        .handle()
                        .rules(self.rule_names_path.clone(), self.rule_names.elements());
                }
                let stats = image.stats();
                log::info(
                    "policy published",
                    &[
                        ("revision", &self.view.revision),
                        ("generation", &published.generation),
                        (
                            "compiled",
                            &if matches!(changes, Changes::All) {
                                "full"
                            } else {
                                "in-place"
                            },
                        ),
                        ("local_endpoints", &ifindex_of.len()),
                        ("local_ids", &stats.local_ids),
                        ("remote_ids", &stats.remote_ids),
                        ("tables", &stats.tables),
                        ("written", &published.written),
                        ("deleted", &published.deleted),
                        // The compiler alone; the maps checked, the inactive slot written,
                        // new counters zeroed and the generation flipped; from the start
                        // of the reconcile (endpoint bindings, compile, write) to the flip;
                        // to this line (the new outcomes and rules named, after the flip).
                        // The compiler's CPU time and page faults tell a compile that
                        // waited for the CPU or for memory from one that had more to do.
                        ("compile_ms", &Millis(timing.compiled)),
                        ("compile_cpu_ms", &Millis(timing.compile_usage.cpu)),
                        ("compile_page_faults", &timing.compile_usage.page_faults),
                        ("write_ms", &Millis(written)),
                        ("flip_ms", &Millis(flipped)),
                        ("total_ms", &Millis(timing.started.elapsed())),
                    ],
                );
                self.published = Some(LastPublish {
                    bindings: ifindex_of.clone(),
                });
                true
            }
            // What does not fit may be the garbage of in-place updates (tables nothing uses
            // any more): a full compile drops it.
            Err(WriteError::Encode(EncodeError::ArrayFull { .. }))
                if !matches!(changes, Changes::All) =>
            {
                self.published = None;
                self.compiler.forget();
                let compiling = Instant::now();
                let usage = ThreadUsage::now();
                match self.compiler.update(self.view.resources()) {
                    Ok(changes) => {
                        let compiled = compiling.elapsed();
                        self.observe(|t| t.compiled(true, compiled));
                        let timing = Timing {
                            compiled: timing.compiled + compiled,
                            compile_usage: timing.compile_usage + (ThreadUsage::now() - usage),
                            ..timing
                        };
                        self.publish(&changes, ifindex_of, timing)
                    }
                    Err(e) => {
                        self.observe(Telemetry::update_refused);
                        log::error(
                            "POLICY UPDATE REFUSED: the new policy does not fit; the policy in force is unchanged",
                            &[("revision", &self.view.revision), ("error", &e)],
                        );
                        false
                    }
                }
            }
            Err(e) => {
                self.published = None;
                self.observe(Telemetry::update_refused);
                log::error(
                    "POLICY UPDATE REFUSED: cannot write the maps; the policy in force is unchanged",
                    &[("revision", &self.view.revision), ("error", &e)],
                );
                false
            }
        }
    }
}

/// Interface names of `node`'s workload endpoints.
fn local_interfaces(view: &ResourceView, node: &str) -> BTreeMap<ResourceKey, String> {
    view.workload_endpoints_on(node)
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(w) => Some((w.key(), w.spec.interface_name.clone())),
            _ => None,
        })
        .collect()
}
