//! Attaching the TC programs to a real veth as clsact filters (the fallback where TCX is
//! missing, forced here: this kernel has TCX): the filters sit at palisade's priority and
//! handle, stay when the loader goes away, and a new load finds them and replaces their
//! programs in place; detaching removes exactly ours; another dataplane's filters (another
//! bpffs) are left alone; and switching mode between loads leaves exactly one set.

use palisade::dataplane::attach::interface_index;
use palisade::dataplane::{self, AttachMode, Attachments, interface_pin_dir};
use palisade_common::program_names::FROM_WORKLOAD;
use palisade_tests::attachments::{
    OnInterface, embedded_object, private_pin_dir, program_ids, tc_filter_kinds, tc_filters,
};
use palisade_tests::netns::{run_ok, veth_pair};
use palisade_tests::{Cleanup, require_root};

#[test]
fn auto_mode_picks_tcx_on_this_kernel() {
    // Linux 6.18 here; the clsact tests below force the fallback.
    assert_eq!(AttachMode::detect(), AttachMode::Tcx);
}

#[test]
fn clsact_filters_outlive_the_loader_and_are_replaced_in_place() {
    require_root();
    let mut cleanup = Cleanup::new();
    let pin_dir = private_pin_dir(&mut cleanup);
    let (host, _, ifindex) = veth_pair(&mut cleanup, "pch", "pcp");
    // Someone else's filter on the same hook, behind ours: it must survive all of this.
    // (This kernel's classic classifiers are cls_bpf and cls_u32.)
    run_ok("tc", &["qdisc", "add", "dev", &host, "clsact"]);
    run_ok(
        "tc",
        &[
            "filter", "add", "dev", &host, "ingress", "pref", "7", "u32", "match", "u32", "0", "0",
            "classid", "1:1",
        ],
    );

    let mut first = dataplane::load(embedded_object(), Some(&pin_dir)).unwrap();
    let (mut attachments, adopted) =
        Attachments::adopt(&mut first, &pin_dir, AttachMode::Clsact).unwrap();
    assert_eq!(adopted, Default::default());
    assert_eq!(attachments.mode(), AttachMode::Clsact);
    attachments.attach(&mut first, &host, ifindex).unwrap();
    attachments.attach(&mut first, &host, ifindex).unwrap(); // again: nothing changes
    assert_eq!(attachments.attached().collect::<Vec<_>>(), [ifindex]);
    let (from_prog, to_prog) = program_ids(&mut first);
    let on = ours_only(&host);
    assert_eq!(on.programs(), (from_prog, to_prog));
    assert!(
        !interface_pin_dir(&pin_dir, ifindex).exists(),
        "clsact pins nothing"
    );

    // Another dataplane (its own bpffs, as a parallel test or another agent) on another
    // interface: not ours to adopt or remove.
    let other_pin_dir = private_pin_dir(&mut cleanup);
    let (other, _, other_index) = veth_pair(&mut cleanup, "pco", "pcq");
    let mut other_loaded = dataplane::load(embedded_object(), Some(&other_pin_dir)).unwrap();
    let (mut other_attachments, _) =
        Attachments::adopt(&mut other_loaded, &other_pin_dir, AttachMode::Clsact).unwrap();
    other_attachments
        .attach(&mut other_loaded, &other, other_index)
        .unwrap();
    let other_programs = OnInterface::read(&other).programs();

    // The loader goes away (as an agent that exits or is killed): the filters stay.
    drop(attachments);
    drop(first);
    assert_eq!(ours_only(&host).programs(), (from_prog, to_prog));

    // A new load finds its filters by place, name and maps, and swaps their programs.
    let mut second = dataplane::load(embedded_object(), Some(&pin_dir)).unwrap();
    let (new_from, new_to) = program_ids(&mut second);
    assert_ne!(new_from, from_prog, "a new load must give new programs");
    let (mut attachments, adopted) =
        Attachments::adopt(&mut second, &pin_dir, AttachMode::Clsact).unwrap();
    assert_eq!(adopted.kept, [ifindex], "{adopted:?}");
    assert_eq!(adopted.converted, Vec::<u32>::new());
    assert_eq!(ours_only(&host).programs(), (new_from, new_to));
    assert_eq!(OnInterface::read(&other).programs(), other_programs);

    // Detach: our two filters go; the other filter and the qdisc stay.
    assert!(attachments.detach(ifindex).unwrap());
    OnInterface::read(&host).assert_empty(&host);
    assert_eq!(
        tc_filter_kinds(&host, "ingress"),
        [(7, "u32".to_string())].into(),
        "only the u32 filter should be left"
    );
    assert!(
        run_ok("tc", &["qdisc", "show", "dev", &host]).contains("clsact"),
        "the clsact qdisc was removed"
    );
    assert!(!attachments.detach(ifindex).unwrap());
    assert_eq!(attachments.attached().count(), 0);
    OnInterface::read(&other).assert_clsact_only(&other);

    // The other dataplane cleans up after itself too.
    assert!(other_attachments.detach(other_index).unwrap());
    OnInterface::read(&other).assert_empty(&other);
}

/// `host`'s hooks, which must have palisade's filters and (not `bpf`, so not listed) the
/// foreign u32 filter.
fn ours_only(host: &str) -> OnInterface {
    let on = OnInterface::read(host);
    on.assert_clsact_only(host);
    assert!(tc_filter_kinds(host, "ingress").contains(&(7, "u32".to_string())));
    on
}

#[test]
fn switching_modes_between_loads_leaves_one_set_of_attachments() {
    require_root();
    let mut cleanup = Cleanup::new();
    let pin_dir = private_pin_dir(&mut cleanup);
    let (host, _, ifindex) = veth_pair(&mut cleanup, "pcs", "pct");
    // An interface that goes away while clsact holds it: nothing to convert there.
    let (gone, _, gone_index) = veth_pair(&mut cleanup, "pcg", "pcf");

    let mut loaded = dataplane::load(embedded_object(), Some(&pin_dir)).unwrap();
    let (mut attachments, _) = Attachments::adopt(&mut loaded, &pin_dir, AttachMode::Tcx).unwrap();
    attachments.attach(&mut loaded, &host, ifindex).unwrap();
    OnInterface::read(&host).assert_tcx_only(&host);
    drop((attachments, loaded));

    // tcx -> clsact: the filters go on, then the links come off and their pins go.
    let mut loaded = dataplane::load(embedded_object(), Some(&pin_dir)).unwrap();
    let (mut attachments, adopted) =
        Attachments::adopt(&mut loaded, &pin_dir, AttachMode::Clsact).unwrap();
    assert_eq!(adopted.converted, [ifindex], "{adopted:?}");
    assert_eq!(adopted.kept, Vec::<u32>::new());
    assert!(!interface_pin_dir(&pin_dir, ifindex).exists());
    let on = OnInterface::read(&host);
    on.assert_clsact_only(&host);
    assert_eq!(on.programs(), program_ids(&mut loaded));
    attachments.attach(&mut loaded, &gone, gone_index).unwrap();
    drop((attachments, loaded));
    run_ok("ip", &["link", "del", &gone]);

    // clsact -> tcx: the links go on, then the filters come off.
    let mut loaded = dataplane::load(embedded_object(), Some(&pin_dir)).unwrap();
    let (attachments, adopted) =
        Attachments::adopt(&mut loaded, &pin_dir, AttachMode::Tcx).unwrap();
    assert_eq!(adopted.converted, [ifindex], "{adopted:?}");
    assert_eq!(attachments.attached().collect::<Vec<_>>(), [ifindex]);
    let on = OnInterface::read(&host);
    on.assert_tcx_only(&host);
    assert_eq!(on.programs(), program_ids(&mut loaded));
    assert_eq!(tc_filters(&host, "ingress"), []);
    assert!(
        interface_pin_dir(&pin_dir, ifindex)
            .join("from_wl")
            .exists()
    );
}

/// Why converting in either direction may attach the new mode before removing the old one:
/// with a TCX program and a clsact filter on the same hook, the kernel runs the TCX program
/// first, and palisade's verdicts (pass or drop, never "next") are final, so the filter
/// behind it does not run at all. Each packet is judged, and counted, once.
#[test]
fn with_both_modes_attached_only_the_tcx_program_runs() {
    require_root();
    let mut cleanup = Cleanup::new();
    let (host, peer, ifindex) = veth_pair(&mut cleanup, "pco", "pcv");
    run_ok("ip", &["link", "set", &host, "up"]);
    run_ok("ip", &["link", "set", &peer, "up"]);
    // Two dataplanes, so that the two attachments run programs that can be told apart.
    let (tcx_dir, clsact_dir) = (private_pin_dir(&mut cleanup), private_pin_dir(&mut cleanup));
    let mut by_tcx = dataplane::load(embedded_object(), Some(&tcx_dir)).unwrap();
    let mut by_clsact = dataplane::load(embedded_object(), Some(&clsact_dir)).unwrap();
    let (mut tcx, _) = Attachments::adopt(&mut by_tcx, &tcx_dir, AttachMode::Tcx).unwrap();
    let (mut clsact, _) =
        Attachments::adopt(&mut by_clsact, &clsact_dir, AttachMode::Clsact).unwrap();
    clsact.attach(&mut by_clsact, &host, ifindex).unwrap();
    tcx.attach(&mut by_tcx, &host, ifindex).unwrap();

    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).unwrap();
    let runs = |loaded: &mut dataplane::LoadedObject| {
        let program = loaded.program(FROM_WORKLOAD).unwrap();
        program.info().unwrap().run_count()
    };
    let before = (runs(&mut by_tcx), runs(&mut by_clsact));
    send_frames(&peer, 50);
    let both = (
        runs(&mut by_tcx) - before.0,
        runs(&mut by_clsact) - before.1,
    );
    assert!(both.0 >= 50, "the TCX program ran {} times", both.0);
    assert_eq!(both.1, 0, "the clsact filter ran behind the TCX program");

    // Without the TCX program, the filter takes every packet.
    tcx.detach(ifindex).unwrap();
    let before = runs(&mut by_clsact);
    send_frames(&peer, 50);
    assert!(runs(&mut by_clsact) - before >= 50);
    clsact.detach(ifindex).unwrap();
}

/// Sends `count` Ethernet frames (broadcast, IPv4 type, junk header) out of `ifname`: they
/// arrive on the ingress of its veth peer.
fn send_frames(ifname: &str, count: usize) {
    let ifindex = interface_index(ifname).unwrap();
    // SAFETY: plain socket(2); the descriptor is owned right below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new descriptor nothing else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_ifindex = ifindex as i32;
    address.sll_halen = 6;
    address.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45]);
    frame.resize(60, 0);
    for _ in 0..count {
        // SAFETY: the frame and address outlive the call; their sizes are passed along.
        let sent = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            sent,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}
