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

use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::maps::MapData;
use palisade_common::{ABI_VERSION, CtKey, CtValue, map_names};

use super::attach::bpf_syscalls::detach_pinned;
use super::attach::clsact::ClsactFilters;
use super::attach::link_pin_dir;
use super::conntrack::Conntrack;
use super::load::map_pin_dir;
use super::{Error, map_batch};

/// The first ABI version whose `PAL_CT` key and value have the layout of this one's: its
/// entries can be copied as they are. (ABI 4 added a flag bit older entries never have.)
pub const CT_LAYOUT_SINCE: u32 = 3;

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
        if info.key_size() as usize != size_of::<CtKey>()
            || info.value_size() as usize != size_of::<CtValue>()
        {
            return Ok(0);
        }
        let mut entries = Vec::new();
        map_batch::for_each(older.fd().as_fd(), |key: &CtKey, value: &CtValue| {
            entries.push((*key, *value));
        })
        .map_err(|source| Error::ReadPinDir {
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

    /// Detaches what is left of the older ABI's attachments and removes its pins.
    pub fn remove(&self) -> Result<Removed, Error> {
        let mut removed = Removed::default();
        let links = link_pin_dir(&self.dir);
        for interface in read_dir(&links)? {
            for pin in read_dir(&interface)? {
                match detach_pinned(&pin) {
                    Ok(()) => removed.links += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // Not a link (nothing palisade pins there): removed below all the same.
                    Err(_) => {}
                }
            }
        }
        let older_maps = self.map_ids()?;
        if !older_maps.is_empty() {
            let filters = ClsactFilters::of_maps(older_maps)?;
            for ifindex in filters.find()? {
                if filters.remove(ifindex)? {
                    removed.filters += 1;
                }
            }
        }
        remove_tree(&self.dir)?;
        Ok(removed)
    }

    /// The ids of the older ABI's pinned maps.
    fn map_ids(&self) -> Result<BTreeSet<u32>, Error> {
        let mut ids = BTreeSet::new();
        for pin in read_dir(&map_pin_dir(&self.dir))? {
            if let Ok(map) = MapData::from_pin(&pin)
                && let Ok(info) = map.info()
            {
                ids.insert(info.id());
            }
        }
        Ok(ids)
    }
}

fn pin_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::AdoptLink {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

/// The entries of `dir`, none if it does not exist.
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::ReadPinDir {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::ReadPinDir {
            path: dir.to_owned(),
            source,
        })?;
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths)
}

/// Removes the pins under `dir`, and `dir`.
fn remove_tree(dir: &Path) -> Result<(), Error> {
    for path in read_dir(dir)? {
        if path.is_dir() {
            remove_tree(&path)?;
        } else {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::RemovePin { path, source }),
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::RemovePin {
            path: dir.to_owned(),
            source,
        }),
    }
}
