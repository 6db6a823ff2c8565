//! The peers bench's load works: TCP_CRR, TCP_RR and the UDP rate between two workloads
//! plumbed into a router namespace complete transactions without errors, pinned to one CPU.

use std::net::SocketAddr;
use std::time::Duration;

use palisade_tests::palisade_cli::Datastore;
use palisade_tests::router::Router;
use palisade_tests::topology::WorkloadSpec;
use palisade_tests::transactions::{self, Kind, Setup};
use palisade_tests::{Cleanup, require_root};

#[test]
fn every_load_completes_transactions_between_two_workloads() {
    require_root();
    let mut cleanup = Cleanup::new();
    let router = Router::create(&mut cleanup);
    let store = Datastore::new();
    let mut add = |prefix: &str, ip: &str| {
        let spec = WorkloadSpec {
            prefix,
            ips: &[ip],
            labels: "",
            profiles: &[],
        };
        router.add_workload(&mut cleanup, &store, "tx-node", &spec)
    };
    let client = add("txc", "10.73.0.1");
    let server = add("txs", "10.73.0.2");
    client
        .netns
        .run_ok("sysctl", &["-q", "-w", "net.ipv4.tcp_tw_reuse=1"]);
    for kind in Kind::ALL {
        let setup = Setup {
            client_netns: client.netns.name.clone(),
            server_netns: server.netns.name.clone(),
            server: SocketAddr::new(server.ips[0], 7300),
            cpu: 0,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
        };
        let outcome = transactions::run(kind, &setup).unwrap();
        assert!(
            outcome.count > 0 && outcome.errors == 0,
            "{}: {outcome:?}",
            kind.name()
        );
        assert!(outcome.cpu.total > 0, "{}: no CPU time read", kind.name());
    }
}
