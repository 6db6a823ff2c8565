//! The Docker plugin at the protocol level: HTTP requests straight to its socket, as
//! dockerd sends them, against a real `palisade docker-plugin` process and a real
//! datastore. No Docker daemon: requests that need the Docker API are covered by the
//! docker_networks tests.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use palisade::model::{Kind, Resource};
use palisade_tests::docker::{
    PluginProcess, PluginReply, PrivateStore, plugin_call, unique_pool_v4,
};
use palisade_tests::netns::unique_name;
use palisade_tests::{palisade_binary, require_root};
use serde_json::{Value, json};

/// A plugin without Docker on `store`: calls that need the Docker API fail, naming the
/// socket that is not there.
fn plugin(store: &PrivateStore, node: &str) -> PluginProcess {
    PluginProcess::start(
        &unique_name("palproto"),
        &store.url,
        node,
        &store.dir.path().join("no-docker.sock"),
        store.dir.path(),
    )
}

/// The addresses allocated, with the node that allocated each.
fn allocations(store: &PrivateStore) -> Vec<(String, String)> {
    store
        .resources(Kind::IpAllocation)
        .iter()
        .filter_map(|r| match r {
            Resource::IpAllocation(a) => {
                Some((a.metadata.address.to_string(), a.spec.node.clone()))
            }
            _ => None,
        })
        .collect()
}

fn pool_yaml(cidr: &str) -> String {
    format!("apiVersion: v1\nkind: ipPool\nmetadata:\n  cidr: {cidr}\n")
}

fn call(plugin: &PluginProcess, method: &str, body: Value) -> PluginReply {
    plugin_call(&plugin.socket(), method, &body.to_string())
}

fn error_of(reply: &PluginReply, field: &str) -> String {
    reply.body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {reply:?}"))
        .to_string()
}

#[test]
fn activation_capabilities_and_unknown_methods() {
    require_root();
    let store = PrivateStore::new();
    let plugin = plugin(&store, "node1");

    let meta = std::fs::metadata(plugin.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");
    assert_eq!(meta.uid(), 0, "socket owner");

    let activate = plugin_call(&plugin.socket(), "Plugin.Activate", "");
    assert_eq!(activate.status, 200);
    assert_eq!(
        activate.body,
        json!({"Implements": ["NetworkDriver", "IpamDriver"]})
    );
    let caps = call(&plugin, "NetworkDriver.GetCapabilities", json!({}));
    assert_eq!(
        caps.body,
        json!({"Scope": "local", "ConnectivityScope": "local"})
    );
    let ipam_caps = call(&plugin, "IpamDriver.GetCapabilities", json!({}));
    assert_eq!(
        ipam_caps.body,
        json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
    );
    let spaces = call(&plugin, "IpamDriver.GetDefaultAddressSpaces", json!({}));
    assert_eq!(spaces.status, 200);
    assert!(spaces.body["LocalDefaultAddressSpace"].is_string());

    for unknown in [
        "NetworkDriver.GwAllocCheck",
        "NetworkDriver.Bogus",
        "Nothing",
        "VolumeDriver.Create",
    ] {
        let reply = call(&plugin, unknown, json!({}));
        assert_eq!(reply.status, 404, "{unknown}: {reply:?}");
    }
    // Optional methods palisade has nothing to do for still answer.
    for noop in [
        "NetworkDriver.ProgramExternalConnectivity",
        "NetworkDriver.RevokeExternalConnectivity",
        "NetworkDriver.DiscoverNew",
        "NetworkDriver.DeleteNetwork",
        "IpamDriver.ReleasePool",
    ] {
        let reply = call(
            &plugin,
            noop,
            json!({"NetworkID": "n", "EndpointID": "e", "PoolID": "p"}),
        );
        assert_eq!(
            reply,
            PluginReply {
                status: 200,
                body: json!({})
            },
            "{noop}"
        );
    }
}

#[test]
fn bad_requests_get_the_error_reply_and_change_nothing() {
    require_root();
    let store = PrivateStore::new();
    let pool = unique_pool_v4();
    store.apply(&pool_yaml(&pool));
    let plugin = plugin(&store, "node1");
    let before = store.snapshot();

    // Network driver failures answer in `Err`, IPAM driver failures in `Error`.
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "IpamDriver.RequestPool",
            json!({"AddressSpace": "PalisadeLocalAddressSpace", "Pool": "10.250.0.0/16", "SubPool": "", "Options": {}, "V6": false}),
            "Error",
            "The requested subnet 10.250.0.0/16 must match the CIDR of a configured palisade IP pool",
        ),
        (
            "IpamDriver.RequestPool",
            json!({"Pool": pool, "SubPool": pool.replace(".0/24", ".0/25"), "V6": false}),
            "Error",
            "does not support sub pool configuration (--ip-range",
        ),
        (
            "IpamDriver.RequestPool",
            json!({"Pool": "", "SubPool": "", "Options": {"a": "b"}, "V6": false}),
            "Error",
            "does not support options (--ipam-opt a=b)",
        ),
        (
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool, "Address": pool.replace(".0/24", ".1"), "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
            "Error",
            "palisade IPAM does not support specifying a gateway",
        ),
        (
            "IpamDriver.RequestAddress",
            json!({"PoolID": "10.251.0.0/24", "Address": "", "Options": null}),
            "Error",
            "IP pool 10.251.0.0/24 of this network no longer exists",
        ),
        (
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool, "Address": "10.252.0.7", "Options": null}),
            "Error",
            "the requested address 10.252.0.7 is not in pool",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n1", "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {"foo": "bar"}},
                   "IPv4Data": [{"AddressSpace": "x", "Gateway": "0.0.0.0/0", "Pool": "0.0.0.0/0"}], "IPv6Data": []}),
            "Err",
            "The palisade driver does not support the flag foo.",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n1", "Options": {"com.docker.network.internal": true, "com.docker.network.generic": {}},
                   "IPv4Data": [{"Gateway": "0.0.0.0/0", "Pool": "0.0.0.0/0"}], "IPv6Data": []}),
            "Err",
            "The palisade driver does not support the flag --internal.",
        ),
        (
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n1", "Options": {"com.docker.network.generic": {}},
                   "IPv4Data": [{"Gateway": "172.18.0.1/16", "Pool": "172.18.0.0/16"}], "IPv6Data": []}),
            "Err",
            "Non-palisade IPAM driver is used",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": "n1", "EndpointID": "e1", "Interface": {"Address": pool.replace(".0/24", ".9/32"), "AddressIPv6": "", "MacAddress": ""}}),
            "Err",
            "no-docker.sock",
        ),
        (
            "NetworkDriver.Join",
            json!({"NetworkID": "n1", "EndpointID": "e-unknown", "SandboxKey": "/var/run/docker/netns/x"}),
            "Err",
            "endpoint e-unknown is unknown on node node1",
        ),
    ];
    for (method, body, field, expected) in cases {
        let reply = call(&plugin, method, body.clone());
        assert_eq!(reply.status, 200, "{method} {body}: {reply:?}");
        let message = error_of(&reply, field);
        assert!(
            message.contains(expected),
            "{method} {body}: {message:?} should say {expected:?}"
        );
    }

    // Requests that are not the protocol: 4xx, with a message.
    let malformed = plugin_call(&plugin.socket(), "IpamDriver.RequestPool", "{not json");
    assert_eq!(malformed.status, 400);
    assert!(error_of(&malformed, "Error").contains("malformed IpamDriver.RequestPool request"));
    let wrong_type = call(&plugin, "IpamDriver.RequestPool", json!({"V6": "yes"}));
    assert_eq!(wrong_type.status, 400);
    assert!(
        error_of(&wrong_type, "Error").contains("field V6"),
        "{wrong_type:?}"
    );
    let no_ids = call(&plugin, "NetworkDriver.Leave", json!({}));
    assert_eq!(no_ids.status, 400);
    assert!(error_of(&no_ids, "Err").contains("Leave without NetworkID"));

    assert_eq!(
        store.snapshot(),
        before,
        "a bad request changed the datastore"
    );
    assert!(plugin.log().contains("docker plugin request failed"));
}

#[test]
fn default_pools_and_placeholder_gateways() {
    require_root();
    let store = PrivateStore::new();
    let plugin = plugin(&store, "node1");

    let v4 = call(
        &plugin,
        "IpamDriver.RequestPool",
        json!({"Pool": "", "V6": false}),
    );
    assert_eq!(
        v4.body,
        json!({"PoolID": "PalisadePoolIPv4", "Pool": "0.0.0.0/0", "Data": {"com.docker.network.gateway": "0.0.0.0/0"}})
    );
    let v6 = call(
        &plugin,
        "IpamDriver.RequestPool",
        json!({"Pool": "", "V6": true}),
    );
    assert_eq!(
        v6.body,
        json!({"PoolID": "PalisadePoolIPv6", "Pool": "::/0", "Data": {"com.docker.network.gateway": "::/0"}})
    );
    // No pool configured: Calico's default pools.
    let a4 = call(
        &plugin,
        "IpamDriver.RequestAddress",
        json!({"PoolID": "PalisadePoolIPv4", "Address": ""}),
    );
    assert_eq!(a4.body, json!({"Address": "192.168.0.1/32", "Data": {}}));
    let a6 = call(
        &plugin,
        "IpamDriver.RequestAddress",
        json!({"PoolID": "PalisadePoolIPv6", "Address": ""}),
    );
    assert_eq!(
        a6.body,
        json!({"Address": "fd80:24e2:f998:72d6::1/128", "Data": {}})
    );
    assert_eq!(
        allocations(&store),
        [
            ("192.168.0.1".to_string(), "node1".to_string()),
            ("fd80:24e2:f998:72d6::1".to_string(), "node1".to_string())
        ]
    );

    // Docker releases the placeholder gateway too: a no-op.
    for address in ["0.0.0.0", "::"] {
        let reply = call(
            &plugin,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": "PalisadePoolIPv4", "Address": address}),
        );
        assert_eq!(reply.body, json!({}));
    }
    for (pool_id, address) in [
        ("PalisadePoolIPv4", "192.168.0.1"),
        ("PalisadePoolIPv6", "fd80:24e2:f998:72d6::1"),
    ] {
        let reply = call(
            &plugin,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": pool_id, "Address": address}),
        );
        assert_eq!(reply.body, json!({}));
    }
    assert_eq!(allocations(&store), []);

    // Once a pool of the family is configured, it replaces the default.
    let pool = unique_pool_v4();
    store.apply(&pool_yaml(&pool));
    let a4 = call(
        &plugin,
        "IpamDriver.RequestAddress",
        json!({"PoolID": "PalisadePoolIPv4", "Address": ""}),
    );
    assert_eq!(a4.body["Address"], json!(pool.replace(".0/24", ".1/32")));
}

/// Asks `plugin` for `count` addresses of `pool_id`, one request at a time.
fn request_addresses(socket: PathBuf, pool_id: String, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            let reply = plugin_call(
                &socket,
                "IpamDriver.RequestAddress",
                &json!({"PoolID": pool_id, "Address": ""}).to_string(),
            );
            assert_eq!(reply.status, 200, "{reply:?}");
            reply.body["Address"]
                .as_str()
                .unwrap_or_else(|| panic!("no address in {reply:?}"))
                .to_string()
        })
        .collect()
}

#[test]
fn addresses_are_unique_across_two_plugins_and_a_restart() {
    require_root();
    let store = PrivateStore::new();
    let pool = unique_pool_v4();
    store.apply(&pool_yaml(&pool));
    let mut first = plugin(&store, "node1");
    let second = plugin(&store, "node2");

    let requested = call(
        &first,
        "IpamDriver.RequestPool",
        json!({"Pool": pool, "V6": false}),
    );
    assert_eq!(requested.body["PoolID"], json!(pool));
    assert_eq!(requested.body["Pool"], json!(pool));

    // Both plugins at once, from several threads each, on one store.
    let sockets = Arc::new([first.socket(), second.socket()]);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let sockets = Arc::clone(&sockets);
            let pool = pool.clone();
            std::thread::spawn(move || request_addresses(sockets[i % 2].clone(), pool, 15))
        })
        .collect();
    let mut handed_out: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let distinct: BTreeSet<&String> = handed_out.iter().collect();
    assert_eq!(
        distinct.len(),
        60,
        "an address was handed out twice: {handed_out:?}"
    );
    let allocated = allocations(&store);
    assert_eq!(allocated.len(), 60);
    assert!(allocated.iter().any(|(_, node)| node == "node1"));
    assert!(allocated.iter().any(|(_, node)| node == "node2"));
    let prefix = pool.trim_end_matches("0/24");
    assert!(
        handed_out
            .iter()
            .all(|a| a.starts_with(prefix) && a.ends_with("/32"))
    );

    // A taken address cannot be had again, by either plugin.
    let taken = handed_out[0].trim_end_matches("/32").to_string();
    for plugin in [&first, &second] {
        let again = call(
            plugin,
            "IpamDriver.RequestAddress",
            json!({"PoolID": pool, "Address": taken}),
        );
        assert!(
            error_of(&again, "Error").contains("is already in use"),
            "{again:?}"
        );
    }

    // A restarted plugin carries on where the store is.
    first.restart();
    let after_restart = request_addresses(first.socket(), pool.clone(), 10);
    for address in &after_restart {
        assert!(
            !handed_out.contains(address),
            "{address} handed out again after a restart"
        );
    }
    handed_out.extend(after_restart);
    assert_eq!(allocations(&store).len(), 70);

    // Released addresses leave the store, and only they do.
    for address in &handed_out[..5] {
        let address = address.trim_end_matches("/32");
        let reply = call(
            &second,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": pool, "Address": address}),
        );
        assert_eq!(reply.body, json!({}));
    }
    let left: BTreeSet<String> = allocations(&store).into_iter().map(|(a, _)| a).collect();
    let expected: BTreeSet<String> = handed_out[5..]
        .iter()
        .map(|a| a.trim_end_matches("/32").to_string())
        .collect();
    assert_eq!(left, expected);
}

#[test]
fn a_second_plugin_on_a_served_socket_is_refused() {
    require_root();
    let store = PrivateStore::new();
    let plugin = plugin(&store, "node1");
    let out = Command::new(palisade_binary())
        .args([
            "--datastore",
            &store.url,
            "docker-plugin",
            "--node",
            "node1",
            "--socket",
        ])
        .arg(plugin.socket())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another plugin is serving on it"),
        "{stderr}"
    );
    // The running plugin still answers.
    assert_eq!(
        plugin_call(&plugin.socket(), "Plugin.Activate", "").status,
        200
    );
    assert!(Path::new(&plugin.socket()).exists());
}
