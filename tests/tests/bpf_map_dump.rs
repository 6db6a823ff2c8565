//! Every map of the ABI is a BTF map: `bpftool --json map dump` prints its keys and values
//! field by field (per CPU for the per-CPU maps), which is what an operator debugging a node
//! sees. The ring buffer has no dump; `map show` describes it.
//!
//! Privileged: run through `cargo xtask test` as root.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::Command,
};

use palisade::dataplane;
use palisade_common::{DIR_EGRESS, map_names, program_names};
use palisade_tests::{
    Cleanup,
    bpf_maps::{ALLOW, Dataplane},
    bpf_scenario::{
        IFINDEX, LOCAL_ID, PEER_ID, PEER_V4, WORKLOAD_V4, expect, install_workload, sock,
        uniform_policy,
    },
    packet::{Frame, TCP_SYN},
    require_root,
};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;

/// The first element of a JSON array, the rest skipped unparsed: the array maps have up to
/// half a million entries, and one shows the format.
struct FirstElement;

impl<'de> Visitor<'de> for FirstElement {
    type Value = Option<Value>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element::<Value>()?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(first)
    }
}

fn bpftool_json(args: &[&str], pin: &Path) -> Vec<u8> {
    let output = Command::new("bpftool")
        .arg("--json")
        .args(args)
        .arg(pin)
        .output()
        .unwrap_or_else(|err| panic!("cannot run bpftool: {err}"));
    assert!(
        output.status.success(),
        "bpftool {args:?} {} failed: {}",
        pin.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The first record of `bpftool --json map dump pinned <pin>`, as bpftool formats it with BTF.
fn first_formatted_record(pin: &Path) -> Value {
    let json = bpftool_json(&["map", "dump", "pinned"], pin);
    let first = serde_json::Deserializer::from_slice(&json)
        .deserialize_seq(FirstElement)
        .unwrap_or_else(|err| panic!("bpftool printed no JSON array for {}: {err}", pin.display()));
    let record = first.unwrap_or_else(|| panic!("{} dumped no entry", pin.display()));
    record.get("formatted").cloned().unwrap_or_else(|| {
        panic!(
            "{} is dumped without BTF formatting: {record}",
            pin.display()
        )
    })
}

/// The id of the program in slot 0 of the program array pinned at `pin`: bpftool prints
/// it as the entry's value (formatted, or as little-endian bytes in hex).
fn program_id_in(pin: &Path) -> u64 {
    let dump: Value = serde_json::from_slice(&bpftool_json(&["map", "dump", "pinned"], pin))
        .unwrap_or_else(|err| panic!("bpftool map dump printed no JSON: {err}"));
    let entry = &dump[0];
    if let Some(id) = entry["formatted"]["value"].as_u64() {
        return id;
    }
    let bytes: Vec<u8> = entry["value"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no entry: {dump}", pin.display()))
        .iter()
        .map(|b| {
            b.as_str()
                .and_then(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).ok())
                .unwrap_or_else(|| panic!("{}: not a byte: {b}", pin.display()))
        })
        .collect();
    let bytes: [u8; 4] = bytes
        .try_into()
        .unwrap_or_else(|_| panic!("{}: not a program id: {dump}", pin.display()));
    u64::from(u32::from_le_bytes(bytes))
}

fn unmount(path: &Path) -> anyhow::Result<()> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};
    let path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// A pinned dataplane with at least one entry in every hash and LPM map.
fn populated_dataplane(pin_dir: &Path) -> Dataplane {
    let mut dp = Dataplane::load_with_pins(Some(pin_dir));
    install_workload(&mut dp, 0);
    uniform_policy(&mut dp, 0, DIR_EGRESS, 1, ALLOW.rule(3));
    // The peer in a group of its own, with the same table.
    dp.peer(0, DIR_EGRESS, LOCAL_ID, PEER_ID, 1);
    dp.group(0, DIR_EGRESS, LOCAL_ID, 1, 1);
    dp.host_addr(IpAddr::V4(Ipv4Addr::new(10, 65, 255, 254)));
    dp.endpoint_stats_entry(IFINDEX);
    dp.ct_usage_entry(IFINDEX);
    let first_fragment = Frame::tcp(sock(WORKLOAD_V4, 40000), sock(PEER_V4, 80), TCP_SYN)
        .fragment(9, 0, true)
        .build();
    expect(
        &mut dp,
        DIR_EGRESS,
        &first_fragment,
        true,
        "a first fragment",
    );
    dp
}

#[test]
fn bpftool_prints_every_map_by_field() {
    require_root();
    // Declared before `cleanup`, so removed after the unmount.
    let mount_point = tempfile::tempdir().unwrap_or_else(|err| panic!("no temp dir: {err}"));
    let mut cleanup = Cleanup::new();
    let root = mount_point.path().to_owned();
    assert!(
        dataplane::ensure_bpffs_mounted(&root)
            .unwrap_or_else(|err| panic!("cannot mount bpffs at {}: {err}", root.display())),
        "a fresh directory cannot hold a bpffs already"
    );
    cleanup.defer(format!("unmount {}", root.display()), {
        let root = root.clone();
        move || unmount(&root)
    });
    let pin_dir = dataplane::ensure_pin_dir(&root)
        .unwrap_or_else(|err| panic!("cannot create the pin directory: {err}"));
    let _dp = populated_dataplane(&pin_dir);
    let pin = |name: &str| -> PathBuf { dataplane::map_pin_dir(&pin_dir).join(name) };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);

    // (map, a field of its key or None for array indexes, a field of its value)
    let plain = [
        (map_names::CONFIG, None, "generation"),
        (map_names::LOCAL, Some("ifindex"), "local_id"),
        (map_names::REMOTE, Some("addr"), "remote_id"),
        (map_names::LPM, Some("prefix_len"), "remote_id"),
        (map_names::PEERS, Some("remote_id"), "group"),
        (map_names::POLICY, Some("group"), "table_id"),
        (map_names::TABLE, Some("protocol"), "first_row"),
        (map_names::ROWS, None, "first_cell"),
        (map_names::CELLS, None, "outcome"),
        (map_names::OUTCOMES, None, "rule_counter"),
        (map_names::CT, Some("local_port"), "last_seen_ns"),
        (map_names::CT_USAGE, Some("ifindex"), "entries"),
        (map_names::EP_INDEX, Some("ifindex"), "index"),
        (map_names::FRAGS, Some("id"), "verdict"),
        (map_names::HOST_ADDRS, Some("family"), "present"),
    ];
    let per_cpu: [(&str, Option<&str>, &str); 3] = [
        (map_names::EP_STATS, None, "egress_allowed_packets"),
        (map_names::RULE_STATS, None, "packets"),
        (map_names::STATS, None, "packets"),
    ];
    let mut checked = Vec::new();

    for (name, key_field, value_field) in plain {
        let record = first_formatted_record(&pin(name));
        if let Some(field) = key_field {
            assert!(record["key"].get(field).is_some(), "{name} key: {record}");
        }
        assert!(
            record["value"].get(value_field).is_some(),
            "{name} value: {record}"
        );
        checked.push(name);
    }
    for (name, key_field, value_field) in per_cpu {
        let record = first_formatted_record(&pin(name));
        if let Some(field) = key_field {
            assert!(record["key"].get(field).is_some(), "{name} key: {record}");
        }
        let values = record["values"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no per-CPU values: {record}"));
        assert_eq!(values.len(), cpus, "{name}: one value per CPU: {record}");
        for (cpu, value) in values.iter().enumerate() {
            assert_eq!(value["cpu"], cpu, "{name}: {record}");
            assert!(
                value["value"].get(value_field).is_some(),
                "{name}: {record}"
            );
        }
        checked.push(name);
    }

    let show: Value = serde_json::from_slice(&bpftool_json(
        &["map", "show", "pinned"],
        &pin(map_names::EVENTS),
    ))
    .unwrap_or_else(|err| panic!("bpftool map show printed no JSON: {err}"));
    assert_eq!(show["type"], "ringbuf", "{show}");
    assert_eq!(show["name"], map_names::EVENTS, "{show}");
    assert_eq!(show["max_entries"], 1 << 20, "{show}");
    checked.push(map_names::EVENTS);

    // The program array holds the agent's `palisade_deliver`, by program id.
    let show: Value = serde_json::from_slice(&bpftool_json(
        &["map", "show", "pinned"],
        &pin(map_names::DELIVER),
    ))
    .unwrap_or_else(|err| panic!("bpftool map show printed no JSON: {err}"));
    assert_eq!(show["type"], "prog_array", "{show}");
    assert_eq!(show["max_entries"], 1, "{show}");
    let id = program_id_in(&pin(map_names::DELIVER));
    let program: Value = serde_json::from_slice(&bpftool_json(
        &["prog", "show", "id"],
        std::path::Path::new(&id.to_string()),
    ))
    .unwrap_or_else(|err| panic!("bpftool prog show printed no JSON: {err}"));
    assert!(
        program_names::DELIVER.starts_with(program["name"].as_str().unwrap_or("?")),
        "{}[0] is not palisade_deliver: {program}",
        map_names::DELIVER
    );
    checked.push(map_names::DELIVER);

    checked.sort_unstable();
    let mut all = map_names::ALL.to_vec();
    all.sort_unstable();
    assert_eq!(checked, all, "every map of the ABI is checked");
}
