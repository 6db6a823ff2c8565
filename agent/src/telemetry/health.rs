//! Judging the agent: live (`/healthz`) while its main loop keeps running, ready
//! (`/readyz`) once the maps hold the latest policy it has seen and every local endpoint
//! whose interface exists has the programs attached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::status::Status;

/// How long the main loop may go without a beat before the agent counts as stuck, unless
/// `--liveness-timeout` says otherwise. The loop beats every [`BEAT_INTERVAL`] when idle;
/// a full compile of a large policy runs inside one turn of the loop, and takes seconds
/// at most.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the idle main loop beats.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(1);

/// The main loop's last sign of life. Starts beating at creation, so that start-up counts
/// against the same timeout.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds from `origin` to the last beat.
    last: AtomicU64,
    timeout: Duration,
}

impl Heartbeat {
    pub fn new(timeout: Duration) -> Heartbeat {
        Heartbeat::beaten_at(Instant::now(), timeout)
    }

    /// A heartbeat whose only beat so far was at `origin`.
    pub fn beaten_at(origin: Instant, timeout: Duration) -> Heartbeat {
        Heartbeat {
            origin,
            last: AtomicU64::new(0),
            timeout,
        }
    }

    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, now: Instant) {
        let since = now.saturating_duration_since(self.origin).as_millis();
        self.last
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Live if the last beat is within the timeout; either way, how long ago it was.
    pub fn judge(&self) -> Result<Duration, Duration> {
        self.judge_at(Instant::now())
    }

    fn judge_at(&self, now: Instant) -> Result<Duration, Duration> {
        let last = self.origin + Duration::from_millis(self.last.load(Ordering::Relaxed));
        let silent = now.saturating_duration_since(last);
        if silent <= self.timeout {
            Ok(silent)
        } else {
            Err(silent)
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// `/healthz`'s answer: whether live, and a line saying why.
pub fn liveness(heartbeat: &Heartbeat) -> (bool, String) {
    match heartbeat.judge() {
        Ok(silent) => (
            true,
            format!(
                "ok: the agent's main loop ran {} ms ago",
                silent.as_millis()
            ),
        ),
        Err(silent) => (
            false,
            format!(
                "stuck: the agent's main loop has not run for {:.1} s (the limit is {} s)",
                silent.as_secs_f64(),
                heartbeat.timeout().as_secs()
            ),
        ),
    }
}

/// `/readyz`'s answer: whether ready, and lines saying why (or why not).
pub fn readiness(status: &Status) -> (bool, Vec<String>) {
    let mut missing = Vec::new();
    let enforcement = &status.enforcement;
    match (status.datastore_revision, enforcement.policy_revision) {
        (None, _) => missing.push(format!(
            "no view of the datastore yet (datastore {})",
            status.datastore.name()
        )),
        (Some(_), None) => missing.push("no policy published yet".to_string()),
        (Some(seen), Some(held)) if held != seen => missing.push(format!(
            "the maps hold the policy of revision {held}; the datastore is at revision {seen}"
        )),
        (Some(_), Some(_)) => {}
    }
    for endpoint in &enforcement.endpoints {
        if endpoint.ifindex.is_some() && !endpoint.attached {
            missing.push(format!(
                "not attached to interface {} (workload endpoint {})",
                endpoint.interface, endpoint.name
            ));
        }
    }
    if !missing.is_empty() {
        return (false, missing);
    }
    let present = enforcement
        .endpoints
        .iter()
        .filter(|e| e.ifindex.is_some())
        .count();
    let revision = enforcement.policy_revision.unwrap_or_default();
    (
        true,
        vec![format!(
            "ready: the policy of revision {revision} is in force; programs attached to {present} \
             of {} local workload endpoints (the others have no interface yet)",
            enforcement.endpoints.len()
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::status::{DatastoreState, Enforcement, LocalEndpoint};

    fn endpoint(name: &str, ifindex: Option<u32>, attached: bool) -> LocalEndpoint {
        LocalEndpoint {
            name: name.to_string(),
            interface: format!("cali{name}"),
            ifindex,
            attached,
        }
    }

    fn status(seen: Option<u64>, held: Option<u64>, endpoints: Vec<LocalEndpoint>) -> Status {
        Status {
            datastore: DatastoreState::InSync,
            datastore_revision: seen,
            enforcement: Enforcement {
                policy_revision: held,
                endpoints,
                ..Enforcement::default()
            },
            updates_refused: 0,
        }
    }

    #[test]
    fn a_heartbeat_is_live_within_the_timeout_of_its_last_beat() {
        let origin = Instant::now();
        let at = |ms| origin + Duration::from_millis(ms);
        let heartbeat = Heartbeat::beaten_at(origin, Duration::from_secs(30));
        assert_eq!(heartbeat.judge_at(at(30_000)), Ok(Duration::from_secs(30)));
        assert_eq!(
            heartbeat.judge_at(at(30_001)),
            Err(Duration::from_millis(30_001))
        );
        heartbeat.beat_at(at(40_000));
        assert_eq!(heartbeat.judge_at(at(41_000)), Ok(Duration::from_secs(1)));
        assert!(heartbeat.judge_at(at(70_001)).is_err());
    }

    #[test]
    fn healthz_says_how_long_a_stuck_loop_has_been_silent() {
        let long_ago = Instant::now() - Duration::from_secs(100);
        let (live, why) = liveness(&Heartbeat::beaten_at(long_ago, Duration::from_secs(30)));
        assert!(!live);
        assert!(
            why.starts_with("stuck: the agent's main loop has not run for 10"),
            "{why}"
        );
        assert!(why.ends_with("(the limit is 30 s)"), "{why}");
    }

    #[test]
    fn not_ready_before_the_first_view_and_before_the_first_publish() {
        let (ready, why) = readiness(&Status::default());
        assert!(!ready);
        assert_eq!(why, ["no view of the datastore yet (datastore connecting)"]);
        let (ready, why) = readiness(&status(Some(3), None, vec![]));
        assert!(!ready);
        assert_eq!(why, ["no policy published yet"]);
    }

    #[test]
    fn not_ready_while_the_maps_lag_the_datastore() {
        let (ready, why) = readiness(&status(Some(9), Some(7), vec![]));
        assert!(!ready);
        assert_eq!(
            why,
            ["the maps hold the policy of revision 7; the datastore is at revision 9"]
        );
    }

    #[test]
    fn not_ready_while_an_existing_interface_lacks_the_programs() {
        let endpoints = vec![
            endpoint("a", Some(4), true),
            endpoint("b", Some(5), false),
            endpoint("c", None, false),
        ];
        let (ready, why) = readiness(&status(Some(2), Some(2), endpoints));
        assert!(!ready);
        assert_eq!(
            why,
            ["not attached to interface calib (workload endpoint b)"]
        );
    }

    #[test]
    fn ready_when_the_latest_policy_is_in_force_everywhere_it_can_be() {
        let endpoints = vec![endpoint("a", Some(4), true), endpoint("c", None, false)];
        let (ready, why) = readiness(&status(Some(2), Some(2), endpoints));
        assert!(ready, "{why:?}");
        assert!(why[0].contains("revision 2"), "{why:?}");
        assert!(why[0].contains("attached to 1 of 2"), "{why:?}");
    }
}
