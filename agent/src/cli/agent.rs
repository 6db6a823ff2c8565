//! `palisade agent`: the node agent.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::agent::{ResourceView, SyncEvent, follow};
use crate::model::{Kind, Resource};
use crate::{dataplane, log};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's name: the agent is responsible for the workload endpoints whose
    /// `node` is this name (default: the host name).
    #[arg(long, env = "PALISADE_NODE")]
    pub node: Option<String>,
    /// Where bpffs is (or gets) mounted; palisade pins under <BPFFS>/palisade/<abi-version>/.
    #[arg(long, default_value = crate::dataplane::BPFFS_ROOT)]
    pub bpffs: std::path::PathBuf,
}

pub async fn run(args: AgentArgs, datastore_url: String) -> ExitCode {
    let node = args.node.unwrap_or_else(host_name);
    let store = match crate::store::open(&datastore_url).await {
        Ok(s) => s,
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
    // Kept for the agent's lifetime: dropping it would unload what is not pinned.
    let _dataplane = match load_dataplane(&args.bpffs) {
        Ok(d) => d,
        Err(e) => {
            log::error("cannot set up the eBPF dataplane", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };

    let (tx, mut rx) = mpsc::channel(16);
    let follower = tokio::spawn(follow(store, tx));
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            log::error("cannot install signal handlers", &[("error", &e)]);
            return ExitCode::FAILURE;
        }
    };
    let mut degraded = false;
    loop {
        tokio::select! {
            event = rx.recv() => match event {
                Some(SyncEvent::Updated(view)) => {
                    if degraded {
                        log::info("datastore reachable again", &[]);
                        degraded = false;
                    }
                    report(&view, &node);
                }
                Some(SyncEvent::Degraded(error)) => {
                    degraded = true;
                    log::warn("datastore unavailable; keeping the last known policy", &[("error", &error)]);
                }
                None => break,
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    follower.abort();
    log::info("agent stopped", &[("node", &node)]);
    ExitCode::SUCCESS
}

/// Mounts bpffs if needed, loads the embedded eBPF object (adopting pinned maps) and pins
/// its programs.
fn load_dataplane(bpffs: &std::path::Path) -> Result<dataplane::LoadedObject, dataplane::Error> {
    let dir = dataplane::ensure_pin_dir(bpffs)?;
    let mut loaded = dataplane::load(dataplane::ebpf_object()?, Some(&dir))?;
    loaded.pin_programs(&dir)?;
    let pinned = dataplane::program_pin_dir(&dir);
    log::info("eBPF programs loaded", &[("pinned", &pinned.display())]);
    Ok(loaded)
}

fn report(view: &Arc<ResourceView>, node: &str) {
    let local = view
        .resources
        .values()
        .filter(|r| matches!(r, Resource::WorkloadEndpoint(w) if w.metadata.node == node))
        .count();
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
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}
