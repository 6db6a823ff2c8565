//! The Docker plugin with a real (private) dockerd: `docker network create` makes
//! profiles, `docker run` makes endpoints with the container's labels, veths and host
//! routes, containers reach each other through the host, bad networks are refused with
//! the plugin's message, restarts keep everything, and removal leaves nothing behind.
//! No agent runs here, so nothing is filtered.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use palisade::docker::{default_network_profile, derived_mac};
use palisade::model::{Kind, Resource, WorkloadEndpoint};
use palisade::netplumb::host_interface_name;
use palisade_tests::docker::{
    BUSYBOX_IMAGE, Dockerd, PluginProcess, PrivateStore, unique_pool_v4, unique_pool_v6,
};
use palisade_tests::netns::unique_name;
use palisade_tests::require_root;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(20);

/// A private dockerd with a palisade plugin on a private store.
struct Setup {
    // Fields drop in order: the daemon removes its containers and networks while the
    // plugin still runs to undo its part.
    docker: Dockerd,
    plugin: PluginProcess,
    store: PrivateStore,
}

impl Setup {
    fn new(pools: &[&str]) -> Setup {
        require_root();
        let store = PrivateStore::new();
        for pool in pools {
            store.apply(&format!(
                "apiVersion: v1\nkind: ipPool\nmetadata:\n  cidr: {pool}\n"
            ));
        }
        let docker = Dockerd::start();
        let plugin = PluginProcess::start(
            &unique_name("paldock"),
            &store.url,
            "node1",
            docker.socket(),
            store.dir.path(),
        );
        Setup {
            docker,
            plugin,
            store,
        }
    }

    fn create_network(&self, name: &str, extra: &[&str]) {
        let driver = self.plugin.name();
        let mut args = vec![
            "network",
            "create",
            "--driver",
            driver,
            "--ipam-driver",
            driver,
        ];
        args.extend_from_slice(extra);
        args.push(name);
        self.docker.docker_ok(&args);
    }

    fn run(&self, name: &str, network: &str, labels: &[&str]) -> Container {
        let mut args = vec!["run", "-d", "--name", name, "--network", network];
        for label in labels {
            args.extend_from_slice(&["--label", label]);
        }
        args.extend_from_slice(&[BUSYBOX_IMAGE, "sleep", "100000"]);
        self.docker.docker_ok(&args);
        let inspect = self.inspect(&["network", "inspect", network]);
        let entry = inspect[0]["Containers"]
            .as_object()
            .and_then(|containers| containers.values().find(|c| c["Name"] == name))
            .unwrap_or_else(|| panic!("{name} is not in network {network}: {inspect}"));
        let v4 = entry["IPv4Address"].as_str().unwrap_or_default();
        let v6 = entry["IPv6Address"].as_str().unwrap_or_default();
        let addresses = [v4, v6]
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| a.split('/').next().unwrap().parse().unwrap())
            .collect();
        Container {
            name: name.to_string(),
            endpoint_id: entry["EndpointID"].as_str().unwrap().to_string(),
            addresses,
        }
    }

    fn inspect(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.docker.docker_ok(args)).unwrap()
    }

    fn exec(&self, container: &Container, command: &[&str]) -> std::process::Output {
        let mut args = vec!["exec", container.name.as_str()];
        args.extend_from_slice(command);
        self.docker.docker(&args)
    }

    fn endpoint(&self, endpoint_id: &str) -> WorkloadEndpoint {
        self.store
            .resources(Kind::WorkloadEndpoint)
            .into_iter()
            .find_map(|r| match r {
                Resource::WorkloadEndpoint(w) if w.metadata.name == endpoint_id => Some(w),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no workloadEndpoint {endpoint_id}"))
    }

    /// Waits for the plugin to have created (or kept) the profile of a new network.
    fn wait_for_profile(&self, name: &str) -> Resource {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            let placed = self.plugin.log().lines().any(|l| {
                l.contains("network profile in place") && l.contains(&format!("network={name} "))
            });
            let profile = self
                .store
                .resources(Kind::Profile)
                .into_iter()
                .find(|r| matches!(r, Resource::Profile(p) if p.metadata.name == name));
            if let (true, Some(profile)) = (placed, profile) {
                return profile;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no profile for network {name}; plugin log:\n{}",
            self.plugin.log()
        );
    }

    /// Nothing of `containers` left: no endpoint, allocation, veth or host route.
    fn assert_nothing_left(&self, containers: &[Container]) {
        assert_eq!(self.store.resources(Kind::WorkloadEndpoint), []);
        assert_eq!(self.store.resources(Kind::IpAllocation), []);
        for container in containers {
            let iface = host_interface_name(&container.endpoint_id);
            assert!(
                !link_exists(&iface),
                "{iface} of {} left behind",
                container.name
            );
            for address in &container.addresses {
                let routes = ip(&["route", "show", "table", "all", &address.to_string()]);
                assert!(
                    routes.trim().is_empty(),
                    "route to {address} left: {routes}"
                );
            }
        }
        let temps = ip(&["-o", "link", "show"]);
        for container in containers {
            let suffix = &host_interface_name(&container.endpoint_id)[3..];
            assert!(
                !temps.contains(&format!("tmp{suffix}")),
                "temporary veth end left behind"
            );
        }
    }
}

struct Container {
    name: String,
    endpoint_id: String,
    addresses: Vec<IpAddr>,
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run ip");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .output()
        .expect("cannot run ip")
        .status
        .success()
}

fn ping(setup: &Setup, from: &Container, to: IpAddr) -> bool {
    let target = to.to_string();
    let mut args = vec!["ping", "-c", "1", "-W", "2"];
    if to.is_ipv6() {
        args.push("-6");
    }
    args.push(&target);
    setup.exec(from, &args).status.success()
}

#[test]
fn networks_profiles_endpoints_labels_and_removal() {
    let pool = unique_pool_v4();
    let setup = Setup::new(&[&pool]);
    let net = unique_name("net");
    let custom = unique_name("custom");

    // A new network gets Calico's default profile.
    setup.create_network(&net, &["--subnet", &pool]);
    assert_eq!(
        setup.wait_for_profile(&net),
        Resource::Profile(default_network_profile(&net))
    );

    // A profile written before its network is kept exactly.
    let custom_yaml = format!(
        "apiVersion: v1\nkind: profile\nmetadata:\n  name: {custom}\n  labels:\n    role: database\n\
         spec:\n  ingress:\n  - action: allow\n    protocol: tcp\n    destination:\n      ports: [3306]\n"
    );
    setup.store.apply(&custom_yaml);
    let custom_before = setup
        .store
        .palisade_ok(&["get", "profile", &custom, "-o", "yaml"]);
    setup.create_network(&custom, &["--subnet", &pool]);
    setup.wait_for_profile(&custom);
    assert_eq!(
        setup
            .store
            .palisade_ok(&["get", "profile", &custom, "-o", "yaml"]),
        custom_before
    );

    // A container: endpoint, labels, veth, host route, routes inside.
    let c1 = setup.run(
        &unique_name("c"),
        &net,
        &[
            "palisade.label.role=db",
            "palisade.label.tier=backend",
            "other=ignored",
        ],
    );
    let endpoint = setup.endpoint(&c1.endpoint_id);
    assert_eq!(endpoint.metadata.node, "node1");
    assert_eq!(endpoint.metadata.orchestrator, "libnetwork");
    assert_eq!(endpoint.metadata.workload, "libnetwork");
    assert_eq!(endpoint.spec.profiles, std::slice::from_ref(&net));
    let iface = host_interface_name(&c1.endpoint_id);
    assert_eq!(endpoint.spec.interface_name, iface);
    assert_eq!(
        endpoint.metadata.labels,
        [("role", "db"), ("tier", "backend")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    );
    let address = c1.addresses[0];
    assert_eq!(endpoint.spec.ip_networks, [ipnet::IpNet::from(address)]);
    assert!(ipnet_contains(&pool, address), "{address} not in {pool}");
    let mac = derived_mac(&c1.endpoint_id);
    assert_eq!(endpoint.spec.mac.as_deref(), Some(mac.as_str()));
    let allocation = setup
        .store
        .resources(Kind::IpAllocation)
        .into_iter()
        .find_map(|r| match r {
            Resource::IpAllocation(a) if a.metadata.address == address => Some(a),
            _ => None,
        })
        .expect("no allocation for the container's address");
    assert_eq!(
        allocation.spec.endpoint.as_deref(),
        Some(c1.endpoint_id.as_str())
    );

    assert!(link_exists(&iface), "no host veth {iface}");
    let route = ip(&["route", "show", &address.to_string()]);
    assert!(
        route.contains(&format!("dev {iface}")),
        "host route: {route}"
    );
    let inside = setup.exec(&c1, &["ip", "-o", "addr", "show", "eth0"]);
    let inside = String::from_utf8_lossy(&inside.stdout);
    assert!(inside.contains(&format!("{address}/32")), "{inside}");
    let routes = String::from_utf8_lossy(&setup.exec(&c1, &["ip", "route"]).stdout).to_string();
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    let links = String::from_utf8_lossy(&setup.exec(&c1, &["ip", "link", "show", "eth0"]).stdout)
        .to_string();
    assert!(links.contains(&mac), "container MAC: {links}");

    // The seed's commands on the endpoint Docker shows.
    let show = setup
        .store
        .palisade_ok(&["endpoint", &c1.endpoint_id, "profile", "show"]);
    assert!(show.contains(&format!("| {net} ")), "{show}");
    let rules = setup.store.palisade_ok(&["profile", &net, "rule", "show"]);
    assert_eq!(
        rules,
        format!("Inbound rules:\n   1 allow from tag {net}\nOutbound rules:\n   1 allow\n")
    );

    // One palisade network per container: a second one is refused, and undone.
    let endpoints = setup.store.resources(Kind::WorkloadEndpoint);
    let allocations = setup.store.resources(Kind::IpAllocation);
    let stderr = setup
        .docker
        .docker_fails(&["network", "connect", &custom, &c1.name]);
    assert!(
        stderr.contains(&format!(
            "container {} is on the palisade network {net} already",
            c1.name
        )),
        "{stderr}"
    );
    assert_eq!(setup.store.resources(Kind::WorkloadEndpoint), endpoints);
    assert_eq!(setup.store.resources(Kind::IpAllocation), allocations);

    // A second container, reached through the host's routing.
    let c2 = setup.run(&unique_name("c"), &net, &[]);
    assert_ne!(c2.addresses, c1.addresses);
    assert!(ping(&setup, &c2, address), "c2 cannot reach c1");
    assert_eq!(setup.endpoint(&c2.endpoint_id).metadata.labels.len(), 0);

    // Removal undoes everything but the profiles.
    setup.docker.docker_ok(&["rm", "-f", &c1.name, &c2.name]);
    setup.docker.docker_ok(&["network", "rm", &net, &custom]);
    setup.assert_nothing_left(&[c1, c2]);
    let profiles = setup.store.resources(Kind::Profile);
    assert_eq!(
        profiles.len(),
        2,
        "profiles stay after their networks: {profiles:?}"
    );
}

#[test]
fn bad_networks_are_refused_with_the_plugins_message_and_change_nothing() {
    let pool = unique_pool_v4();
    let setup = Setup::new(&[&pool]);
    let before = setup.store.snapshot();
    let driver = setup.plugin.name().to_string();
    let name = unique_name("bad");
    let cases: [(&[&str], &str); 6] = [
        (
            &["--subnet", "10.254.254.0/24"],
            "The requested subnet 10.254.254.0/24 must match the CIDR of a configured palisade IP pool",
        ),
        (
            &["--subnet", &pool, "--gateway", &pool.replace(".0/24", ".1")],
            "palisade IPAM does not support specifying a gateway",
        ),
        (
            &[
                "--subnet",
                &pool,
                "--ip-range",
                &pool.replace(".0/24", ".0/25"),
            ],
            "does not support sub pool configuration",
        ),
        (
            &["-o", "foo=bar"],
            "The palisade driver does not support the flag foo.",
        ),
        (
            &["--internal"],
            "The palisade driver does not support the flag --internal.",
        ),
        (
            &["--ipam-opt", "x=y"],
            "does not support options (--ipam-opt x=y)",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec![
            "network",
            "create",
            "--driver",
            &driver,
            "--ipam-driver",
            &driver,
        ];
        args.extend_from_slice(extra);
        args.push(&name);
        let stderr = setup.docker.docker_fails(&args);
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
    }
    // The palisade network driver with Docker's own IPAM.
    let stderr = setup.docker.docker_fails(&[
        "network",
        "create",
        "--driver",
        &driver,
        "--subnet",
        "10.254.253.0/24",
        &name,
    ]);
    assert!(
        stderr.contains("Non-palisade IPAM driver is used"),
        "{stderr}"
    );

    assert_eq!(
        setup.store.snapshot(),
        before,
        "a refused network changed the datastore"
    );
    let networks = setup
        .docker
        .docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!networks.contains(&name), "{networks}");
}

#[test]
fn restarting_the_plugin_keeps_containers_and_their_addresses() {
    let pool = unique_pool_v4();
    let mut setup = Setup::new(&[&pool]);
    let net = unique_name("net");
    setup.create_network(&net, &["--subnet", &pool]);
    let c1 = setup.run(&unique_name("c"), &net, &["palisade.label.role=db"]);
    let c2 = setup.run(&unique_name("c"), &net, &[]);
    let endpoints_before = setup.store.resources(Kind::WorkloadEndpoint);

    setup.plugin.restart();

    // The running containers keep their addresses, endpoints and connectivity.
    for container in [&c1, &c2] {
        let inside = setup.exec(container, &["ip", "-o", "addr", "show", "eth0"]);
        let inside = String::from_utf8_lossy(&inside.stdout);
        assert!(
            inside.contains(&format!("{}/32", container.addresses[0])),
            "{inside}"
        );
    }
    assert_eq!(
        setup.store.resources(Kind::WorkloadEndpoint),
        endpoints_before
    );
    assert!(ping(&setup, &c1, c2.addresses[0]));

    // A new container gets a fresh address and reaches the old ones.
    let c3 = setup.run(&unique_name("c"), &net, &[]);
    assert!(
        !c3.addresses
            .iter()
            .any(|a| c1.addresses.contains(a) || c2.addresses.contains(a))
    );
    assert!(ping(&setup, &c3, c1.addresses[0]));
    assert_eq!(setup.store.resources(Kind::IpAllocation).len(), 3);

    setup
        .docker
        .docker_ok(&["rm", "-f", &c1.name, &c2.name, &c3.name]);
    setup.docker.docker_ok(&["network", "rm", &net]);
    setup.assert_nothing_left(&[c1, c2, c3]);
}

#[test]
fn dual_stack_networks_route_both_families() {
    let pool4 = unique_pool_v4();
    let pool6 = unique_pool_v6();
    let setup = Setup::new(&[&pool4, &pool6]);
    let net = unique_name("net");
    setup.create_network(&net, &["--ipv6", "--subnet", &pool4, "--subnet", &pool6]);
    let c1 = setup.run(&unique_name("c"), &net, &[]);
    let c2 = setup.run(&unique_name("c"), &net, &[]);
    assert_eq!(c1.addresses.len(), 2, "{:?}", c1.addresses);
    let v6 = c2.addresses.iter().copied().find(IpAddr::is_ipv6).unwrap();
    assert!(ipnet_contains(&pool6, v6));
    let endpoint = setup.endpoint(&c2.endpoint_id);
    assert_eq!(endpoint.spec.ip_networks.len(), 2);

    let routes =
        String::from_utf8_lossy(&setup.exec(&c1, &["ip", "-6", "route"]).stdout).to_string();
    assert!(
        routes.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
        "{routes}"
    );
    // Give duplicate address detection its time: the container's link-local address
    // must not clash with the host side's.
    let deadline = Instant::now() + PATIENCE;
    while !ping(&setup, &c1, v6) {
        assert!(
            Instant::now() < deadline,
            "no IPv6 connectivity between containers"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(ping(&setup, &c2, c1.addresses[0]));

    setup.docker.docker_ok(&["rm", "-f", &c1.name, &c2.name]);
    setup.docker.docker_ok(&["network", "rm", &net]);
    setup.assert_nothing_left(&[c1, c2]);
}

fn ipnet_contains(cidr: &str, address: IpAddr) -> bool {
    cidr.parse::<ipnet::IpNet>().unwrap().contains(&address)
}
