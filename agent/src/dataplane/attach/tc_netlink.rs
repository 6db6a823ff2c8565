//! The route-netlink requests of classic TC that the clsact attachment needs: add the
//! clsact qdisc, create-or-replace a direct-action `cls_bpf` filter, delete one, and list
//! the `bpf` filters of a hook (see `linux/pkt_sched.h`, `linux/pkt_cls.h`).
//!
//! aya 0.14 has the first three, but creates with `NLM_F_EXCL` and replaces only without
//! `NLM_F_CREATE`, and cannot list; one request that creates the filter where it is missing
//! and swaps its program where it is present (what `tc filter replace` sends) is what lets a
//! restarted agent take over without a window in which no program runs.
//!
//! Synchronous, one socket per [`TcSocket`], one request at a time; the kernel's extended
//! acknowledgement text (e.g. "Filter with specified priority/protocol not found") is kept
//! in the error.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use crate::dataplane::links::wire::{self, NLMSG_DONE, NLMSG_ERROR, NLMSGHDR_LEN};

const RTM_NEWQDISC: u16 = 36;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
/// On an acknowledgement: extended-ack attributes follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

const TCMSG_LEN: usize = 20;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_ID: u16 = 11;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;

/// `TC_H_CLSACT` (= `TC_H_INGRESS`): the clsact qdisc's parent; its handle is `ffff:0`.
const TC_H_CLSACT: u32 = 0xffff_fff1;
const CLSACT_HANDLE: u32 = 0xffff_0000;
const ETH_P_ALL: u16 = 0x0003;

/// Which of clsact's two filter lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    /// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS or TC_H_MIN_EGRESS)`.
    fn parent(self) -> u32 {
        match self {
            Hook::Ingress => 0xffff_fff2,
            Hook::Egress => 0xffff_fff3,
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        })
    }
}

/// A `bpf` filter as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfFilter {
    pub priority: u16,
    pub handle: u32,
    /// The name given when it was attached (`TCA_BPF_NAME`), empty if none.
    pub name: String,
    /// The program it runs, if the kernel said.
    pub program_id: Option<u32>,
}

/// Where a filter sits: interface, hook, priority and handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterPlace {
    pub ifindex: u32,
    pub hook: Hook,
    pub priority: u16,
    pub handle: u32,
}

/// A request the kernel refused: its errno, and its extended-ack text if it gave one.
#[derive(Debug)]
pub struct Refused {
    pub errno: i32,
    pub detail: Option<String>,
}

impl Refused {
    fn io(error: std::io::Error) -> Refused {
        Refused {
            errno: error.raw_os_error().unwrap_or(libc::EIO),
            detail: None,
        }
    }

    fn protocol(detail: &str) -> Refused {
        Refused {
            errno: libc::EPROTO,
            detail: Some(detail.to_string()),
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.errno))?;
        match &self.detail {
            Some(detail) => write!(f, " ({detail})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Refused {}

/// A route-netlink socket for TC requests.
pub struct TcSocket {
    socket: Socket,
    sequence: std::cell::Cell<u32>,
}

impl TcSocket {
    pub fn open() -> Result<TcSocket, Refused> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(Refused::io)?;
        socket.bind_auto().map_err(Refused::io)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(Refused::io)?;
        // Best effort: without them the errors only lose the kernel's explanation.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(TcSocket {
            socket,
            sequence: std::cell::Cell::new(0),
        })
    }

    /// Adds the clsact qdisc to `ifindex`; one that is there already is fine (whoever
    /// added it: clsact has no settings that could differ).
    pub fn add_clsact(&self, ifindex: u32) -> Result<(), Refused> {
        let mut request = Request::new(
            RTM_NEWQDISC,
            NLM_F_CREATE | NLM_F_EXCL,
            ifindex,
            CLSACT_HANDLE,
            TC_H_CLSACT,
            0,
        );
        request.attribute(TCA_KIND, b"clsact\0");
        match self.acknowledged(request) {
            Err(refused) if refused.errno == libc::EEXIST => Ok(()),
            other => other,
        }
    }

    /// Creates the direct-action filter at `place` running `program` (named `name`), or,
    /// if it exists, switches it to `program` in place: the kernel swaps the filter's
    /// program under RCU, so every packet meets the old one or the new one.
    pub fn replace_filter(
        &self,
        place: FilterPlace,
        program: BorrowedFd<'_>,
        name: &str,
    ) -> Result<(), Refused> {
        let fd = u32::try_from(program.as_raw_fd())
            .map_err(|_| Refused::protocol("negative program descriptor"))?;
        let mut request = Request::for_filter(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_REPLACE, place);
        request.attribute(TCA_KIND, b"bpf\0");
        let options = request.begin_nested(TCA_OPTIONS);
        request.attribute(TCA_BPF_FD, &fd.to_ne_bytes());
        let mut name_bytes = name.as_bytes().to_vec();
        name_bytes.push(0);
        request.attribute(TCA_BPF_NAME, &name_bytes);
        request.attribute(TCA_BPF_FLAGS, &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes());
        request.end_nested(options);
        self.acknowledged(request)
    }

    /// Deletes the filter at `place`.
    pub fn delete_filter(&self, place: FilterPlace) -> Result<(), Refused> {
        self.acknowledged(Request::for_filter(RTM_DELTFILTER, 0, place))
    }

    /// The `bpf` filters on `hook` of `ifindex` (none if it has no clsact qdisc).
    pub fn bpf_filters(&self, ifindex: u32, hook: Hook) -> Result<Vec<BpfFilter>, Refused> {
        let request = Request::new(RTM_GETTFILTER, NLM_F_DUMP, ifindex, 0, hook.parent(), 0);
        let sequence = self.send(request)?;
        let mut found = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(Refused::io)?;
            for message in wire::messages(&datagram) {
                if message.sequence != sequence {
                    continue;
                }
                match message.kind {
                    NLMSG_DONE => return done_status(message.body).map(|()| found),
                    NLMSG_ERROR => {
                        return Err(ack_status(message.flags, message.body)
                            .err()
                            .unwrap_or_else(|| {
                                Refused::protocol("an acknowledgement in the middle of a dump")
                            }));
                    }
                    RTM_NEWTFILTER => found.extend(bpf_filter(message.body)),
                    _ => {}
                }
            }
        }
    }

    fn send(&self, request: Request) -> Result<u32, Refused> {
        let sequence = self.sequence.get().wrapping_add(1);
        self.sequence.set(sequence);
        let bytes = request.finish(sequence);
        self.socket.send(&bytes, 0).map_err(Refused::io)?;
        Ok(sequence)
    }

    /// Sends `request` and waits for its acknowledgement.
    fn acknowledged(&self, request: Request) -> Result<(), Refused> {
        let sequence = self.send(request)?;
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(Refused::io)?;
            for message in wire::messages(&datagram) {
                if message.sequence == sequence && message.kind == NLMSG_ERROR {
                    return ack_status(message.flags, message.body);
                }
            }
        }
    }
}

/// One request being built: header, `struct tcmsg`, attributes.
struct Request {
    bytes: Vec<u8>,
}

impl Request {
    fn new(kind: u16, flags: u16, ifindex: u32, handle: u32, parent: u32, info: u32) -> Request {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set by `finish`
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
        bytes.extend_from_slice(&[0u8; 4]); // family AF_UNSPEC, padding
        bytes.extend_from_slice(&ifindex.to_ne_bytes());
        bytes.extend_from_slice(&handle.to_ne_bytes());
        bytes.extend_from_slice(&parent.to_ne_bytes());
        bytes.extend_from_slice(&info.to_ne_bytes());
        Request { bytes }
    }

    /// `tcm_info` carries the priority (upper half) and the protocol in network order
    /// (lower half): every protocol, as `tc ... protocol all`.
    fn for_filter(kind: u16, flags: u16, place: FilterPlace) -> Request {
        let info = (u32::from(place.priority) << 16) | u32::from(ETH_P_ALL.to_be());
        Request::new(
            kind,
            flags,
            place.ifindex,
            place.handle,
            place.hook.parent(),
            info,
        )
    }

    fn attribute(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.bytes.extend_from_slice(&(len as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.bytes.resize(wire::align(self.bytes.len()), 0);
    }

    /// Starts a nested attribute; returns where its header is, for `end_nested`.
    fn begin_nested(&mut self, kind: u16) -> usize {
        let at = self.bytes.len();
        self.attribute(kind | NLA_F_NESTED, &[]);
        at
    }

    fn end_nested(&mut self, at: usize) {
        let len = (self.bytes.len() - at) as u16;
        self.bytes[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, sequence: u32) -> Vec<u8> {
        let len = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes[8..12].copy_from_slice(&sequence.to_ne_bytes());
        self.bytes
    }
}

/// `struct nlmsgerr`: the error (0 for success), the request's header, then (with
/// `NLM_F_ACK_TLVS`) attributes, among them the kernel's message.
fn ack_status(flags: u16, body: &[u8]) -> Result<(), Refused> {
    if body.len() < 4 {
        return Err(Refused::protocol("a truncated acknowledgement"));
    }
    let error = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
    if error == 0 {
        return Ok(());
    }
    // With NETLINK_CAP_ACK only the request's header is echoed, not its payload.
    let attributes_at = 4 + NLMSGHDR_LEN;
    let detail = (flags & NLM_F_ACK_TLVS != 0 && body.len() > attributes_at)
        .then(|| {
            wire::attributes(&body[attributes_at..])
                .find(|(kind, _)| *kind == NLMSGERR_ATTR_MSG)
                .map(|(_, text)| c_string(text))
        })
        .flatten();
    Err(Refused {
        errno: error.saturating_neg(),
        detail,
    })
}

/// The end of a dump: its first four bytes are 0 or a negative errno.
fn done_status(body: &[u8]) -> Result<(), Refused> {
    match body.get(..4) {
        Some(&[a, b, c, d]) if i32::from_ne_bytes([a, b, c, d]) < 0 => Err(Refused {
            errno: i32::from_ne_bytes([a, b, c, d]).saturating_neg(),
            detail: None,
        }),
        _ => Ok(()),
    }
}

/// RTM_NEWTFILTER: `struct tcmsg` (handle at byte 8, info at byte 16), then attributes.
/// Only `bpf` filters with a handle (not the bare priority entries) are returned.
fn bpf_filter(body: &[u8]) -> Option<BpfFilter> {
    if body.len() < TCMSG_LEN {
        return None;
    }
    let handle = wire::u32_at(body, 8);
    let priority = (wire::u32_at(body, 16) >> 16) as u16;
    let mut kind = None;
    let mut options = None;
    for (attribute, value) in wire::attributes(&body[TCMSG_LEN..]) {
        match attribute {
            TCA_KIND => kind = Some(c_string(value)),
            TCA_OPTIONS => options = Some(value),
            _ => {}
        }
    }
    if kind.as_deref() != Some("bpf") || handle == 0 {
        return None;
    }
    let mut filter = BpfFilter {
        priority,
        handle,
        name: String::new(),
        program_id: None,
    };
    for (attribute, value) in wire::attributes(options.unwrap_or_default()) {
        match attribute {
            TCA_BPF_NAME => filter.name = c_string(value),
            TCA_BPF_ID if value.len() >= 4 => filter.program_id = Some(wire::u32_at(value, 0)),
            _ => {}
        }
    }
    Some(filter)
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_message(handle: u32, info: u32, kind: &[u8], options: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut request = Request::new(RTM_NEWTFILTER, 0, 7, handle, Hook::Egress.parent(), info);
        request.attribute(TCA_KIND, kind);
        let at = request.begin_nested(TCA_OPTIONS);
        for (kind, value) in options {
            request.attribute(*kind, value);
        }
        request.end_nested(at);
        request.finish(1)[NLMSGHDR_LEN..].to_vec()
    }

    #[test]
    fn reads_a_bpf_filter_and_skips_other_kinds_and_bare_priorities() {
        let place = FilterPlace {
            ifindex: 7,
            hook: Hook::Egress,
            priority: 1,
            handle: 0x70616c,
        };
        let info = wire::u32_at(&Request::for_filter(0, 0, place).bytes, NLMSGHDR_LEN + 16);
        assert_eq!(
            info, 0x0001_0300,
            "priority 1, protocol all in network order"
        );
        let body = filter_message(
            0x70616c,
            info,
            b"bpf\0",
            &[
                (TCA_BPF_NAME, b"palisade_to_wl\0".to_vec()),
                (TCA_BPF_FLAGS, 1u32.to_ne_bytes().to_vec()),
                (TCA_BPF_ID, 42u32.to_ne_bytes().to_vec()),
            ],
        );
        assert_eq!(
            bpf_filter(&body),
            Some(BpfFilter {
                priority: 1,
                handle: 0x70616c,
                name: "palisade_to_wl".into(),
                program_id: Some(42),
            })
        );
        assert_eq!(bpf_filter(&filter_message(1, info, b"u32\0", &[])), None);
        assert_eq!(bpf_filter(&filter_message(0, info, b"bpf\0", &[])), None);
        assert_eq!(bpf_filter(&body[..TCMSG_LEN - 1]), None);
    }

    #[test]
    fn an_acknowledgement_carries_the_errno_and_the_kernel_s_message() {
        let mut body = (-libc::ENOENT).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; NLMSGHDR_LEN]);
        let mut text = Request { bytes: Vec::new() };
        text.attribute(NLMSGERR_ATTR_MSG, b"Filter not found\0");
        body.extend_from_slice(&text.bytes);
        let refused = ack_status(NLM_F_ACK_TLVS, &body).unwrap_err();
        assert_eq!(refused.errno, libc::ENOENT);
        assert_eq!(refused.detail.as_deref(), Some("Filter not found"));
        assert!(ack_status(0, &0i32.to_ne_bytes()).is_ok());
        assert_eq!(ack_status(0, &body).unwrap_err().detail, None);
        assert!(done_status(&(-libc::EINVAL).to_ne_bytes()).is_err());
        assert!(done_status(&0i32.to_ne_bytes()).is_ok());
    }
}
