//! The agent's health and metrics, as Felix offers them: `/healthz` and `/readyz` (default
//! `127.0.0.1:9099`) and Prometheus' `/metrics` (default `127.0.0.1:9091`).
//!
//! The agent's main loop and its enforcer report to a [`Telemetry`] (a heartbeat, their
//! [`status::Status`], latencies); the server (`server`), on a thread and runtime of its
//! own so that it answers even when the agent's loop is stuck, judges health from it
//! (`health`), reads the kernel's counters at scrape time (`sample`) and writes them out
//! (`exposition`). `listen` is the address options.

pub mod exposition;
pub mod health;
pub mod listen;
pub mod sample;
pub mod server;
pub mod status;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::store::Revision;
use health::Heartbeat;
use status::{DatastoreState, Enforcement, Status};

/// Upper bounds of the latency histograms' buckets, in seconds: from an in-place update of
/// one endpoint (well under a millisecond) to a full compile of thousands of policies.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The compile kind label: `full` or `in_place`.
pub type CompileLabels = [(&'static str, &'static str); 1];

/// How long policy updates took. Cloning shares the histograms.
#[derive(Debug, Clone)]
pub struct Latencies {
    pub compile: Family<CompileLabels, Histogram, fn() -> Histogram>,
    pub publish: Histogram,
}

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies {
            compile: Family::new_with_constructor(latency_histogram),
            publish: latency_histogram(),
        }
    }
}

/// What the agent reports about itself, shared with the health and metrics server.
#[derive(Debug)]
pub struct Telemetry {
    heartbeat: Heartbeat,
    status: Mutex<Status>,
    latencies: Latencies,
}

impl Telemetry {
    /// `liveness_timeout`: how long the main loop may go without a beat before `/healthz`
    /// says it is stuck ([`health::LIVENESS_TIMEOUT`] in the agent).
    pub fn new(liveness_timeout: Duration) -> Telemetry {
        Telemetry::with_heartbeat(Heartbeat::new(liveness_timeout))
    }

    pub fn with_heartbeat(heartbeat: Heartbeat) -> Telemetry {
        Telemetry {
            heartbeat,
            status: Mutex::new(Status::default()),
            latencies: Latencies::default(),
        }
    }

    fn status_mut(&self) -> MutexGuard<'_, Status> {
        // A panic elsewhere while holding the lock leaves plain data behind: still usable.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The main loop is alive.
    pub fn beat(&self) {
        self.heartbeat.beat();
    }

    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// The agent has a view of the datastore at `revision`.
    pub fn datastore_in_sync(&self, revision: Revision) {
        let mut status = self.status_mut();
        status.datastore = DatastoreState::InSync;
        status.datastore_revision = Some(revision);
    }

    /// The datastore cannot be read.
    pub fn datastore_degraded(&self) {
        self.status_mut().datastore = DatastoreState::Degraded;
    }

    /// What the enforcer did last.
    pub fn enforcement(&self, enforcement: Enforcement) {
        self.status_mut().enforcement = enforcement;
    }

    pub fn compiled(&self, full: bool, took: Duration) {
        let kind = if full { "full" } else { "in_place" };
        self.latencies
            .compile
            .get_or_create(&[("compile", kind)])
            .observe(took.as_secs_f64());
    }

    pub fn published(&self, took: Duration) {
        self.latencies.publish.observe(took.as_secs_f64());
    }

    /// A policy update did not fit or could not be written.
    pub fn update_refused(&self) {
        self.status_mut().updates_refused += 1;
    }

    /// A copy of everything reported.
    pub fn status(&self) -> Status {
        self.status_mut().clone()
    }

    pub fn latencies(&self) -> &Latencies {
        &self.latencies
    }
}
