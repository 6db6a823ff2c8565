//! The seed, step by step, with real containers: Docker networks made by the palisade
//! plugin, the seed's policy applied with palisade, the agent enforcing it, and the
//! connectivity matrix checked with busybox `nc` and `ping` between containers and to a
//! listener in a namespace palisade does not manage.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use palisade::netplumb::host_interface_name;
use palisade_tests::docker::{
    AgentProcess, BUSYBOX_IMAGE, Dockerd, PluginProcess, PrivateStore, unique_pool_v4,
};
use palisade_tests::netns::{Netns, create_veth, run_ok, unique_name};
use palisade_tests::{Cleanup, require_root};
use serde_json::Value;

#[allow(dead_code)]
#[path = "../../agent/tests/common/seeds.rs"]
mod seeds;

/// The ports the containers listen on.
const DB_PORT: u16 = 3306;
const DB_OTHER_PORT: u16 = 3307;
const APP_PORT: u16 = 8080;
const BACKUP_PORT: u16 = 9100;
const OUTSIDE_PORT: u16 = 9000;

struct Container {
    name: String,
    endpoint_id: String,
    address: IpAddr,
}

impl Container {
    fn interface(&self) -> String {
        host_interface_name(&self.endpoint_id)
    }
}

/// dockerd, the plugin and the agent on one private store, and a listener outside.
/// Fields drop in order: containers go while the plugin and the agent still run.
struct Seed {
    docker: Dockerd,
    plugin: PluginProcess,
    agent: AgentProcess,
    store: PrivateStore,
    outside: Outside,
}

impl Seed {
    fn new() -> Seed {
        require_root();
        let store = PrivateStore::new();
        let pool = unique_pool_v4();
        store.apply(&format!(
            "apiVersion: v1\nkind: ipPool\nmetadata:\n  cidr: {pool}\n"
        ));
        let docker = Dockerd::start();
        let plugin = PluginProcess::start(
            &unique_name("palseed"),
            &store.url,
            "node1",
            docker.socket(),
            store.dir.path(),
        );
        let agent = AgentProcess::start(&store.url, "node1", store.dir.path());
        let outside = Outside::new();
        Seed {
            docker,
            plugin,
            agent,
            store,
            outside,
        }
    }

    fn create_networks(&self, names: &[&str]) {
        let driver = self.plugin.name();
        for name in names {
            self.docker.docker_ok(&[
                "network",
                "create",
                "--driver",
                driver,
                "--ipam-driver",
                driver,
                name,
            ]);
        }
    }

    /// Runs a container on `network` listening on `ports` (each answers its own name).
    fn run(&self, prefix: &str, network: &str, ports: &[u16]) -> Container {
        let name = unique_name(prefix);
        self.docker.docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            network,
            BUSYBOX_IMAGE,
            "sleep",
            "100000",
        ]);
        for port in ports {
            let port = port.to_string();
            let reply = format!("{name}-{port}");
            self.docker.docker_ok(&[
                "exec", "-d", &name, "nc", "-ll", "-p", &port, "-e", "echo", &reply,
            ]);
        }
        let inspect: Value =
            serde_json::from_str(&self.docker.docker_ok(&["inspect", &name])).unwrap();
        let settings = &inspect[0]["NetworkSettings"]["Networks"][network];
        let container = Container {
            name: name.clone(),
            endpoint_id: settings["EndpointID"].as_str().unwrap().to_string(),
            address: settings["IPAddress"].as_str().unwrap().parse().unwrap(),
        };
        for port in ports {
            assert!(
                tcp(
                    &self.docker,
                    &container,
                    "127.0.0.1".parse().unwrap(),
                    *port
                ),
                "{name} does not listen on {port}"
            );
        }
        container
    }

    /// Waits until the agent enforces the current policy on every one of `containers`.
    fn wait_enforcing(&self, containers: &[&Container]) {
        let interfaces: Vec<String> = containers.iter().map(|c| c.interface()).collect();
        self.agent
            .wait_enforcing(&interfaces, self.store.snapshot().revision);
    }

    /// Checks every expectation, in parallel (a denied connection takes its timeout).
    fn check(&self, expectations: &[Expect]) {
        let docker = &self.docker;
        let failures: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = expectations
                .iter()
                .map(|e| {
                    scope.spawn(move || {
                        let reached = match e.what {
                            Probe::Tcp(port) => tcp(docker, e.from, e.to, port),
                            Probe::Ping => ping(docker, e.from, e.to),
                        };
                        (reached != e.allowed).then(|| {
                            format!(
                                "{} -> {} {:?}: expected {}, got {}",
                                e.from.name,
                                e.to,
                                e.what,
                                verdict(e.allowed),
                                verdict(reached)
                            )
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect()
        });
        assert!(
            failures.is_empty(),
            "connectivity differs from the policy:\n{}\n--- agent log ---\n{}",
            failures.join("\n"),
            self.agent.log()
        );
    }
}

/// Whether `from` connects to `address:port` and gets the listener's answer.
fn tcp(docker: &Dockerd, from: &Container, address: IpAddr, port: u16) -> bool {
    let script = format!("nc -w 2 {address} {port} </dev/null");
    let out = docker.docker(&["exec", &from.name, "sh", "-c", &script]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&format!("-{port}"))
}

fn ping(docker: &Dockerd, from: &Container, address: IpAddr) -> bool {
    let target = address.to_string();
    docker
        .docker(&["exec", &from.name, "ping", "-c", "1", "-W", "2", &target])
        .status
        .success()
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "denied" }
}

#[derive(Debug, Clone, Copy)]
enum Probe {
    Tcp(u16),
    Ping,
}

struct Expect<'a> {
    from: &'a Container,
    to: IpAddr,
    what: Probe,
    allowed: bool,
}

fn expect(from: &Container, to: IpAddr, what: Probe, allowed: bool) -> Expect<'_> {
    Expect {
        from,
        to,
        what,
        allowed,
    }
}

/// A namespace palisade does not manage, routed through the host, with a listener.
struct Outside {
    address: IpAddr,
    listener: Child,
    // Dropped last: the namespace and veth go after the listener is stopped.
    _cleanup: Cleanup,
    _netns: Netns,
}

impl Outside {
    fn new() -> Outside {
        let mut cleanup = Cleanup::new();
        let netns = Netns::create(&mut cleanup, "out");
        let pool = unique_pool_v4();
        let address: IpAddr = pool.replace(".0/24", ".1").parse().unwrap();
        let host = unique_name("vo");
        let peer = unique_name("vi");
        create_veth(&mut cleanup, &host, &peer);
        run_ok("ip", &["link", "set", &peer, "netns", &netns.name]);
        let with_prefix = format!("{address}/32");
        netns.run_ok("ip", &["link", "set", "lo", "up"]);
        netns.run_ok("ip", &["addr", "add", &with_prefix, "dev", &peer]);
        netns.run_ok("ip", &["link", "set", &peer, "up"]);
        netns.run_ok(
            "ip",
            &["route", "add", "169.254.1.1", "dev", &peer, "scope", "link"],
        );
        netns.run_ok("ip", &["route", "add", "default", "via", "169.254.1.1"]);
        run_ok("ip", &["link", "set", &host, "up"]);
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp"), "1").unwrap();
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        run_ok("ip", &["route", "add", &with_prefix, "dev", &host]);
        let port = OUTSIDE_PORT.to_string();
        let reply = format!("outside-{port}");
        let listener = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns.name,
                "busybox",
                "nc",
                "-ll",
                "-p",
                &port,
            ])
            .args(["-e", "busybox", "echo", &reply])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The host itself is not policed: it proves the listener answers.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("busybox")
                .args(["nc", "-w", "2", &address.to_string(), &port])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(&reply) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the outside listener does not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Outside {
            address,
            listener,
            _cleanup: cleanup,
            _netns: netns,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
    }
}

/// The seed's matrix for two databases and two apps.
fn seed_matrix<'a>(
    dbs: [&'a Container; 2],
    apps: [&'a Container; 2],
    outside: IpAddr,
) -> Vec<Expect<'a>> {
    let mut all = Vec::new();
    for app in apps {
        for db in dbs {
            all.push(expect(app, db.address, Probe::Tcp(DB_PORT), true));
            all.push(expect(app, db.address, Probe::Tcp(DB_OTHER_PORT), false));
            all.push(expect(app, db.address, Probe::Ping, false));
            all.push(expect(db, app.address, Probe::Tcp(APP_PORT), false));
        }
        all.push(expect(app, outside, Probe::Tcp(OUTSIDE_PORT), true));
    }
    let [db1, db2] = dbs;
    all.push(expect(db1, db2.address, Probe::Tcp(DB_OTHER_PORT), true));
    all.push(expect(db2, db1.address, Probe::Tcp(DB_PORT), true));
    all.push(expect(db1, db2.address, Probe::Ping, true));
    for db in dbs {
        all.push(expect(db, outside, Probe::Tcp(OUTSIDE_PORT), false));
    }
    all
}

fn run_seed_containers(seed: &Seed) -> ([Container; 2], [Container; 2]) {
    let db_ports = [DB_PORT, DB_OTHER_PORT];
    let dbs = [
        seed.run("db", "databases", &db_ports),
        seed.run("db", "databases", &db_ports),
    ];
    let apps = [
        seed.run("app", "apps", &[APP_PORT]),
        seed.run("app", "apps", &[APP_PORT]),
    ];
    (dbs, apps)
}

#[test]
fn profiles_with_rules_isolate_databases_from_apps() {
    let seed = Seed::new();
    seed.create_networks(&["databases", "apps"]);
    seed.store.apply(seeds::PROFILES_WITH_RULES);
    let (dbs, apps) = run_seed_containers(&seed);
    let all: Vec<&Container> = dbs.iter().chain(&apps).collect();
    seed.wait_enforcing(&all);
    seed.check(&seed_matrix(
        [&dbs[0], &dbs[1]],
        [&apps[0], &apps[1]],
        seed.outside.address,
    ));

    // The seed's inspection commands on what Docker shows.
    let shown = seed
        .store
        .palisade_ok(&["endpoint", &dbs[0].endpoint_id, "profile", "show"]);
    assert!(shown.contains("| databases |"), "{shown}");
    let rules = seed
        .store
        .palisade_ok(&["profile", "databases", "rule", "show"]);
    assert!(
        rules.starts_with("Inbound rules:\n   1 allow tcp from selector"),
        "{rules}"
    );
    containers_go_by_their_names(&seed, &dbs[0], &apps[0]);
}

/// `palisade ARGS` where Docker's API answers (DOCKER_HOST), which must succeed.
fn palisade_with_docker(seed: &Seed, args: &[&str]) -> String {
    let out = Command::new(palisade_tests::palisade_binary())
        .args(["--datastore", &seed.store.url])
        .args(args)
        .env(
            "DOCKER_HOST",
            format!("unix://{}", seed.docker.socket().display()),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "palisade {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Containers are named as Docker names them: by the short ID `docker network inspect`
/// prints and by their names, in `endpoint`, `trace`, `get wep`, `stats`, `matrix` and
/// `flows`.
fn containers_go_by_their_names(seed: &Seed, db: &Container, app: &Container) {
    let (db_short, app_short) = (&db.endpoint_id[..12], &app.endpoint_id[..12]);
    for id in [db_short, db.name.as_str()] {
        let shown = palisade_with_docker(seed, &["endpoint", id, "profile", "show"]);
        assert!(shown.contains("| databases |"), "{id}: {shown}");
    }
    let traced = palisade_with_docker(
        seed,
        &[
            "trace",
            "--src",
            &app.name,
            "--dst",
            &db.name,
            "--protocol",
            "tcp",
            "--dport",
            "3306",
        ],
    );
    assert!(
        traced.contains(&format!(
            "source: workloadEndpoint {} ({app_short})",
            app.name
        )) && traced.ends_with("verdict: allow\n"),
        "{traced}"
    );
    let listed = palisade_with_docker(seed, &["get", "wep", &db.name]);
    assert!(
        listed
            .lines()
            .next()
            .unwrap()
            .trim_end()
            .ends_with("CONTAINER")
            && listed.contains(&db.endpoint_id)
            && listed.contains(&db.name),
        "{listed}"
    );
    let bpffs = seed.agent.bpffs().display().to_string();
    let run_dir = seed.agent.run_dir().display().to_string();
    let stats = palisade_with_docker(
        seed,
        &["stats", &db.name, "--bpffs", &bpffs, "--run-dir", &run_dir],
    );
    assert!(
        stats.contains(&format!("{} ({db_short})", db.name)) && !stats.contains(&app.name),
        "{stats}"
    );
    let matrix = palisade_with_docker(seed, &["matrix", "--protocol", "tcp", "--port", "3306"]);
    assert!(
        matrix.contains(&format!("{} ({db_short})", db.name)),
        "{matrix}"
    );
    flows_name_containers(seed, db, app);
}

/// `palisade flows` shows the matrix's traffic between the two containers by their names:
/// the connection to the database port allowed by the databases profile's rule, the other
/// port denied by the default.
fn flows_name_containers(seed: &Seed, db: &Container, app: &Container) {
    let (db_short, app_short) = (&db.endpoint_id[..12], &app.endpoint_id[..12]);
    let run_dir = seed.agent.run_dir().display().to_string();
    let records: Vec<Value> = palisade_with_docker(
        seed,
        &[
            "flows",
            "--endpoint",
            &db.name,
            "--run-dir",
            &run_dir,
            "-o",
            "json",
        ],
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let between = |port: u16, event: &str| {
        records.iter().find(|r| {
            r["event"] == event
                && r["direction"] == "ingress"
                && r["src"]["endpoint"] == format!("{} ({app_short})", app.name).as_str()
                && r["dst"]["endpoint"] == format!("{} ({db_short})", db.name).as_str()
                && r["dst"]["port"] == u64::from(port)
        })
    };
    let all = || {
        records
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let allowed = between(DB_PORT, "new_flow").unwrap_or_else(|| panic!("{}", all()));
    assert_eq!(allowed["protocol"], "tcp");
    assert_eq!(allowed["rule"], "profile databases ingress rule 1 (allow)");
    let denied = between(DB_OTHER_PORT, "drop").unwrap_or_else(|| panic!("{}", all()));
    assert_eq!(denied["verdict"], "deny");
    assert_eq!(denied["rule"], "default deny: no profile rule matched");
}

#[test]
fn labelled_profiles_and_global_policies_isolate_databases_from_apps() {
    let seed = Seed::new();
    seed.create_networks(&["databases", "apps"]);
    seed.store.apply(seeds::PROFILES_LABELS_ONLY);
    let created = seed
        .store
        .palisade(&["create", "-f", "-"], seeds::GLOBAL_POLICIES);
    assert!(created.status.success(), "{created:?}");
    let (dbs, apps) = run_seed_containers(&seed);
    let all: Vec<&Container> = dbs.iter().chain(&apps).collect();
    seed.wait_enforcing(&all);
    seed.check(&seed_matrix(
        [&dbs[0], &dbs[1]],
        [&apps[0], &apps[1]],
        seed.outside.address,
    ));
}

#[test]
fn multiple_networks_through_labels_and_a_backup_policy() {
    let seed = Seed::new();
    seed.create_networks(&["databases", "apps", "backups", "database-backup"]);
    seed.store.apply(seeds::PROFILES_LABELS_ONLY);
    let created = seed
        .store
        .palisade(&["create", "-f", "-"], seeds::GLOBAL_POLICIES);
    assert!(created.status.success(), "{created:?}");
    seed.store.apply(seeds::MULTIPLE_NETWORKS);
    let db = seed.run("db", "databases", &[DB_PORT, DB_OTHER_PORT]);
    let app = seed.run("app", "apps", &[APP_PORT]);
    let backup = seed.run("bk", "backups", &[BACKUP_PORT]);
    let db_backup = seed.run("dbb", "database-backup", &[DB_PORT, DB_OTHER_PORT]);
    seed.wait_enforcing(&[&db, &app, &backup, &db_backup]);
    seed.check(&[
        // The backup network: everything labelled backup = true.
        expect(&db_backup, backup.address, Probe::Tcp(BACKUP_PORT), true),
        expect(&backup, db_backup.address, Probe::Tcp(DB_OTHER_PORT), true),
        // ... and the database lock-down as well.
        expect(&app, db_backup.address, Probe::Tcp(DB_PORT), true),
        expect(&app, db_backup.address, Probe::Tcp(DB_OTHER_PORT), false),
        expect(&db_backup, db.address, Probe::Tcp(DB_OTHER_PORT), true),
        expect(&db, db_backup.address, Probe::Tcp(DB_PORT), true),
        // Plain databases and apps are not on the backup network.
        expect(&db, backup.address, Probe::Tcp(BACKUP_PORT), false),
        expect(&backup, db.address, Probe::Tcp(DB_OTHER_PORT), false),
        expect(&app, backup.address, Probe::Tcp(BACKUP_PORT), false),
        expect(&backup, app.address, Probe::Tcp(APP_PORT), false),
        expect(
            &db_backup,
            seed.outside.address,
            Probe::Tcp(OUTSIDE_PORT),
            false,
        ),
    ]);
}

#[test]
fn restarting_plugin_and_agent_keeps_addresses_and_policy() {
    let mut seed = Seed::new();
    seed.create_networks(&["databases", "apps"]);
    seed.store.apply(seeds::PROFILES_WITH_RULES);
    let db = seed.run("db", "databases", &[DB_PORT, DB_OTHER_PORT]);
    let app = seed.run("app", "apps", &[APP_PORT]);
    seed.wait_enforcing(&[&db, &app]);
    let lockdown = |seed: &Seed, app: &Container| {
        seed.check(&[
            expect(app, db.address, Probe::Tcp(DB_PORT), true),
            expect(app, db.address, Probe::Tcp(DB_OTHER_PORT), false),
            expect(&db, app.address, Probe::Tcp(APP_PORT), false),
        ]);
    };
    lockdown(&seed, &app);

    seed.plugin.stop();
    seed.agent.stop();
    // With neither running, the pinned programs go on enforcing.
    lockdown(&seed, &app);
    seed.plugin.restart();
    seed.agent.restart();
    seed.wait_enforcing(&[&db, &app]);
    lockdown(&seed, &app);

    for container in [&db, &app] {
        let inside =
            seed.docker
                .docker_ok(&["exec", &container.name, "ip", "-o", "addr", "show", "eth0"]);
        assert!(
            inside.contains(&format!("{}/32", container.address)),
            "{inside}"
        );
    }
    // A new container: a fresh address, and the same policy.
    let app2 = seed.run("app", "apps", &[APP_PORT]);
    assert!(app2.address != app.address && app2.address != db.address);
    seed.wait_enforcing(&[&db, &app, &app2]);
    lockdown(&seed, &app2);
}
