//! Attaching the TC programs to a real veth as pinned TCX links: they survive the loader
//! going away, a new load adopts them by switching the program inside the same link, pins
//! of vanished interfaces are cleaned up, and detaching removes everything. Also the
//! netlink subscriptions the agent attaches by: link and host address events.

use std::path::Path;
use std::time::Duration;

use aya::programs::TcAttachType;
use palisade::dataplane::attach::interface_index;
use palisade::dataplane::links::{AddressEvent, LinkEvent, watch_addresses, watch_links};
use palisade::dataplane::{self, AttachMode, Attachments, interface_pin_dir};
use palisade_tests::attachments::{embedded_object, private_pin_dir, program_ids, tcx_programs};
use palisade_tests::netns::{run, run_ok, veth_pair};
use palisade_tests::{Cleanup, require_root};

/// An upper bound for a netlink event to arrive; not a speed requirement.
const PATIENCE: Duration = Duration::from_secs(10);

/// `bpftool --json link show pinned PATH`: the link's id, type and program id.
fn pinned_link(path: &Path) -> (u64, u64, u64) {
    let out = run_ok(
        "bpftool",
        &[
            "--json",
            "link",
            "show",
            "pinned",
            &path.display().to_string(),
        ],
    );
    let link: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        link["id"].as_u64().unwrap(),
        link["type"]
            .as_u64()
            .unwrap_or_else(|| panic!("link type not numeric: {link}")),
        link["prog_id"].as_u64().unwrap(),
    )
}

/// bpftool 7.1 predates the name "tcx" and shows the link type as its number.
const BPF_LINK_TYPE_TCX: u64 = 11;

#[test]
fn pinned_tcx_links_survive_the_loader_and_are_adopted_without_a_gap() {
    require_root();
    let mut cleanup = Cleanup::new();
    let pin_dir = private_pin_dir(&mut cleanup);
    let (host, _, ifindex) = veth_pair(&mut cleanup, "pah", "pap");

    let mut first = dataplane::load(embedded_object(), Some(&pin_dir)).unwrap();
    let (mut attachments, adopted) =
        Attachments::adopt(&mut first, &pin_dir, AttachMode::Tcx).unwrap();
    assert_eq!(adopted, Default::default());
    attachments.attach(&mut first, &host, ifindex).unwrap();
    attachments.attach(&mut first, &host, ifindex).unwrap(); // again: nothing changes
    assert_eq!(attachments.attached().collect::<Vec<_>>(), [ifindex]);

    let pins = interface_pin_dir(&pin_dir, ifindex);
    let (from_pin, to_pin) = (pins.join("from_wl"), pins.join("to_wl"));
    let (from_link, from_type, from_prog) = pinned_link(&from_pin);
    let (to_link, to_type, to_prog) = pinned_link(&to_pin);
    assert_eq!((from_type, to_type), (BPF_LINK_TYPE_TCX, BPF_LINK_TYPE_TCX));
    assert_eq!((from_prog, to_prog), program_ids(&mut first));
    assert_eq!(tcx_programs(&host, TcAttachType::Ingress), [from_prog]);
    assert_eq!(tcx_programs(&host, TcAttachType::Egress), [to_prog]);

    // The loader goes away (as an agent that exits or is killed): the links stay.
    drop(attachments);
    drop(first);
    assert_eq!(
        pinned_link(&from_pin),
        (from_link, BPF_LINK_TYPE_TCX, from_prog)
    );
    assert_eq!(tcx_programs(&host, TcAttachType::Ingress), [from_prog]);
    assert_eq!(tcx_programs(&host, TcAttachType::Egress), [to_prog]);

    // An interface that goes away while nobody watches leaves stale pins behind.
    let (gone, _, gone_index) = veth_pair(&mut cleanup, "pag", "paq");
    {
        let mut loaded = dataplane::load(embedded_object(), Some(&pin_dir)).unwrap();
        let (mut attachments, _) =
            Attachments::adopt(&mut loaded, &pin_dir, AttachMode::Tcx).unwrap();
        attachments.attach(&mut loaded, &gone, gone_index).unwrap();
    }
    run_ok("ip", &["link", "del", &gone]);

    // A new load adopts: same links, new programs, switched in place.
    let mut second = dataplane::load(embedded_object(), Some(&pin_dir)).unwrap();
    let (new_from, new_to) = program_ids(&mut second);
    assert_ne!(new_from, from_prog, "a new load must give new programs");
    let (mut attachments, adopted) =
        Attachments::adopt(&mut second, &pin_dir, AttachMode::Tcx).unwrap();
    assert_eq!(adopted.kept, [ifindex]);
    assert_eq!(adopted.removed, [gone_index]);
    assert!(!interface_pin_dir(&pin_dir, gone_index).exists());
    assert_eq!(
        pinned_link(&from_pin),
        (from_link, BPF_LINK_TYPE_TCX, new_from)
    );
    assert_eq!(pinned_link(&to_pin), (to_link, BPF_LINK_TYPE_TCX, new_to));
    // One program per hook: the link was updated, not a second one added.
    assert_eq!(tcx_programs(&host, TcAttachType::Ingress), [new_from]);
    assert_eq!(tcx_programs(&host, TcAttachType::Egress), [new_to]);
    assert_eq!(attachments.attached().collect::<Vec<_>>(), [ifindex]);

    // Detach: no pins, no programs on the interface, and the adopted links do not linger
    // in the loaded object.
    assert!(attachments.detach(ifindex).unwrap());
    assert!(!pins.exists());
    assert_eq!(
        tcx_programs(&host, TcAttachType::Ingress),
        Vec::<u64>::new()
    );
    assert_eq!(tcx_programs(&host, TcAttachType::Egress), Vec::<u64>::new());
    assert_eq!(attachments.attached().count(), 0);
    assert!(!attachments.detach(ifindex).unwrap());
    let shown = run("bpftool", &["link", "show", "id", &from_link.to_string()]);
    assert!(!shown.status.success(), "link {from_link} still exists");
}

#[test]
fn attaching_to_a_stale_interface_index_fails_and_leaves_nothing() {
    require_root();
    let mut cleanup = Cleanup::new();
    let pin_dir = private_pin_dir(&mut cleanup);
    let (host, _, ifindex) = veth_pair(&mut cleanup, "pas", "pat");
    let mut loaded = dataplane::load(embedded_object(), Some(&pin_dir)).unwrap();
    let (mut attachments, _) = Attachments::adopt(&mut loaded, &pin_dir, AttachMode::Tcx).unwrap();
    let wrong = ifindex + 100_000;
    let err = attachments.attach(&mut loaded, &host, wrong).unwrap_err();
    assert!(err.to_string().contains(&host), "{err}");
    assert!(!interface_pin_dir(&pin_dir, wrong).exists());
    assert_eq!(
        tcx_programs(&host, TcAttachType::Ingress),
        Vec::<u64>::new()
    );
}

async fn next_matching<E: std::fmt::Debug>(
    events: &mut tokio::sync::mpsc::Receiver<E>,
    seen: &mut Vec<String>,
    wanted: impl Fn(&E) -> bool,
) {
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(event) = events.recv().await {
            seen.push(format!("{event:?}"));
            if wanted(&event) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "the expected event did not arrive; seen: {seen:#?}"
    );
}

#[tokio::test]
async fn link_events_report_existing_new_and_deleted_interfaces() {
    require_root();
    let mut cleanup = Cleanup::new();
    let mut events = watch_links().unwrap();
    let mut seen = Vec::new();
    let lo = interface_index("lo").unwrap();
    next_matching(&mut events, &mut seen, |e| {
        *e == LinkEvent::Present {
            ifindex: lo,
            name: "lo".into(),
        }
    })
    .await;
    next_matching(&mut events, &mut seen, |e| *e == LinkEvent::Synced).await;

    let (host, _, ifindex) = veth_pair(&mut cleanup, "pae", "paf");
    next_matching(&mut events, &mut seen, |e| {
        *e == LinkEvent::Present {
            ifindex,
            name: host.clone(),
        }
    })
    .await;
    run_ok("ip", &["link", "del", &host]);
    next_matching(&mut events, &mut seen, |e| {
        *e == LinkEvent::Removed {
            ifindex,
            name: host.clone(),
        }
    })
    .await;
}

#[tokio::test]
async fn address_events_report_host_addresses_added_and_removed_on_an_interface() {
    require_root();
    let mut cleanup = Cleanup::new();
    // One end of a veth stands in for a dummy interface (this kernel has no dummy driver).
    let (dummy, _, ifindex) = veth_pair(&mut cleanup, "pad", "pab");
    run_ok("ip", &["addr", "add", "10.231.9.1/32", "dev", &dummy]);
    run_ok("ip", &["link", "set", &dummy, "up"]);

    let mut events = watch_addresses().unwrap();
    let mut seen = Vec::new();
    let existing = "10.231.9.1".parse().unwrap();
    next_matching(&mut events, &mut seen, |e| {
        *e == AddressEvent::Added {
            ifindex,
            address: existing,
        }
    })
    .await;
    next_matching(&mut events, &mut seen, |e| *e == AddressEvent::Synced).await;

    run_ok("ip", &["addr", "add", "10.231.9.2/32", "dev", &dummy]);
    run_ok(
        "ip",
        &["addr", "add", "fd31:9::2/128", "dev", &dummy, "nodad"],
    );
    for address in ["10.231.9.2", "fd31:9::2"] {
        let address = address.parse().unwrap();
        next_matching(&mut events, &mut seen, |e| {
            *e == AddressEvent::Added { ifindex, address }
        })
        .await;
    }
    run_ok("ip", &["addr", "del", "10.231.9.2/32", "dev", &dummy]);
    run_ok("ip", &["addr", "del", "fd31:9::2/128", "dev", &dummy]);
    for address in ["10.231.9.2", "fd31:9::2"] {
        let address = address.parse().unwrap();
        next_matching(&mut events, &mut seen, |e| {
            *e == AddressEvent::Removed { ifindex, address }
        })
        .await;
    }
}
