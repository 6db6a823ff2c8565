//! Upgrading across map ABI versions: what an agent does with the pins of an older
//! palisade (`<bpffs>/palisade/<older version>/`).
//!
//! An agent of a new ABI starts with fresh maps of its own; the older programs go on
//! enforcing with theirs until each interface is taken over, and the order keeps every
//! interface enforced at every moment:
//!
//! 1. At start: nothing older is touched ([`OlderAbi::find`] only looks).
//! 2. Once the new maps hold the policy (the first publish): the older conntrack entries
//!    are copied into the new table ([`OlderAbi::carry_conntrack`], where the layout is the
//!    same), so that live connections go on without even a re-pickup; then each local
//!    interface is attached. In TCX mode an interface with older links gets them moved into
//!    this run's pin directory ([`OlderAbi::move_links`]) and switched to the new programs
//!    with `bpf_link_update`; in clsact mode the new filter replaces the older one in place
//!    (same priority and handle). Either way one program or the other runs, never none.
//! 3. Once every local interface runs the new programs: whatever older attachments are left
//!    (TCX links of interfaces no longer local, clsact filters of an older run in the other
//!    mode, found by the older maps their programs use) are detached, and the older pin
//!    directory is removed ([`OlderAbi::remove`]). While both modes' attachments are on an
//!    interface the TCX program decides alone (see [`super::attach`]).
//!
//! Newer ABI versions' pins are left alone: they belong to an agent this one cannot read.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::maps::MapData;
use palisade_common::{ABI_VERSION, CtKey, CtValue, ENDPOINT_NONE, map_names};

use super::attach::link_pin_dir;
use super::conntrack::Conntrack;
use super::load::map_pin_dir;
use super::remnants::{self, Hooked};
use super::{Error, map_batch};

/// The first ABI version whose `PAL_CT` key has the layout of this one's and whose value
/// is this one's or [`NarrowCtValue`]: its entries can be copied. (ABI 4 added a flag bit
/// older entries never have; ABI 5 the endpoint's counter index.)
pub const CT_LAYOUT_SINCE: u32 = 3;

/// The first ABI version whose `PAL_CT` value is [`CtValue`], with
/// [`CtValue::endpoint`].
const CT_ENDPOINT_SINCE: u32 = 5;

/// `PAL_CT` value of ABI versions 3 and 4: [`CtValue`] before `endpoint`, which was added at
/// its end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct NarrowCtValue {
    generation: u32,
    origin: u8,
    flags: u8,
    icmp_type: u8,
    icmp_code: u8,
    last_seen_ns: u64,
}

// SAFETY: `#[repr(C)]`, integers only, no implicit padding (4 + 4 x 1 + 8 bytes).
unsafe impl aya::Pod for NarrowCtValue {}

const _: () = assert!(size_of::<NarrowCtValue>() == 16);

impl NarrowCtValue {
    /// As this ABI's value. The endpoint's index is not known: the entry is re-decided
    /// (carried entries get a stale generation), and the re-check writes it.
    fn widen(self) -> CtValue {
        CtValue {
            generation: self.generation,
            origin: self.origin,
            flags: self.flags,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            last_seen_ns: self.last_seen_ns,
            endpoint: ENDPOINT_NONE,
            forward_ifindex: 0,
        }
    }
}

/// The pins of one older ABI version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OlderAbi {
    pub version: u32,
    pub dir: PathBuf,
}

/// What [`OlderAbi::remove`] took away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub links: usize,
    pub filters: usize,
}

impl OlderAbi {
    /// The older ABI versions' pin directories under `<bpffs>/palisade/`, oldest first.
    pub fn find(bpffs: &Path) -> Result<Vec<OlderAbi>, Error> {
        let root = bpffs.join("palisade");
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::ReadPinDir { path: root, source }),
        };
        let mut older = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::ReadPinDir {
                path: root.clone(),
                source,
            })?;
            let version = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok());
            if let Some(version) = version.filter(|v| *v < ABI_VERSION) {
                older.push(OlderAbi {
                    version,
                    dir: entry.path(),
                });
            }
        }
        older.sort_by_key(|o| o.version);
        Ok(older)
    }

    /// Copies the older conntrack entries into `ct` (this run's `PAL_CT`), each marked as
    /// decided under `stale_generation` (one no packet runs under), so that its next packet
    /// checks it against the new policy. Returns how many; 0 when the older layout differs
    /// (the connections are then picked up by their next packets).
    pub fn carry_conntrack(
        &self,
        ct: &mut Conntrack,
        stale_generation: u32,
    ) -> Result<usize, Error> {
        if self.version < CT_LAYOUT_SINCE {
            return Ok(0);
        }
        let path = map_pin_dir(&self.dir).join(map_names::CT);
        let older = match MapData::from_pin(&path) {
            Ok(map) => map,
            Err(_) if !path.exists() => return Ok(0),
            Err(e) => return Err(pin_error(&path, e)),
        };
        let info = older.info().map_err(|e| pin_error(&path, e))?;
        let value_size = info.value_size() as usize;
        let narrow = self.version < CT_ENDPOINT_SINCE;
        let expected_value_size = if narrow {
            size_of::<NarrowCtValue>()
        } else {
            size_of::<CtValue>()
        };
        if info.key_size() as usize != size_of::<CtKey>() || value_size != expected_value_size {
            return Ok(0);
        }
        let mut entries = Vec::new();
        let read = if narrow {
            map_batch::for_each(older.fd().as_fd(), |key: &CtKey, value: &NarrowCtValue| {
                entries.push((*key, value.widen()));
            })
        } else {
            map_batch::for_each(older.fd().as_fd(), |key: &CtKey, value: &CtValue| {
                entries.push((*key, *value));
            })
        };
        read.map_err(|source| Error::ReadPinDir {
            path: path.clone(),
            source,
        })?;
        let mut carried = 0;
        for (key, mut value) in entries {
            value.generation = stale_generation;
            // A full table or a key the new programs opened meanwhile: the flow is picked
            // up (or already is).
            if ct.insert_new(&key, value) {
                carried += 1;
            }
        }
        Ok(carried)
    }

    /// Moves the older TCX link pins of `ifindex` into `pin_dir` (this run's), where
    /// [`super::attach::Attachments::take_over_moved`] switches them. Returns whether there
    /// were any.
    pub fn move_links(&self, pin_dir: &Path, ifindex: u32) -> Result<bool, Error> {
        let from = link_pin_dir(&self.dir).join(ifindex.to_string());
        if !from.exists() {
            return Ok(false);
        }
        let to_dir = link_pin_dir(pin_dir);
        std::fs::create_dir_all(&to_dir).map_err(|source| Error::CreatePinDir {
            path: to_dir.clone(),
            source,
        })?;
        let to = to_dir.join(ifindex.to_string());
        std::fs::rename(&from, &to).map_err(|source| Error::Pin { path: to, source })?;
        Ok(true)
    }

    /// Detaches what is left of the older ABI's attachments (found through the kernel by
    /// the older maps their programs use) and removes its pins, as `palisade cleanup` does
    /// for every version.
    pub fn remove(&self) -> Result<Removed, Error> {
        let bpffs = self
            .dir
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| Error::ReadPinDir {
                path: self.dir.clone(),
                source: io::Error::other("not under <bpffs>/palisade/"),
            })?;
        let name = self.version.to_string();
        let gone = remnants::find(bpffs)?.remove(|version| version == Some(name.as_str()))?;
        let filters = gone
            .attachments
            .iter()
            .filter(|a| matches!(a.hooked, Hooked::Filter { .. }))
            .count();
        Ok(Removed {
            links: gone.attachments.len() - filters,
            filters,
        })
    }
}

fn pin_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::AdoptLink {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}
