//! Loading the eBPF object into the kernel, adopting the maps an earlier agent pinned.

use std::path::{Path, PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapInfo, ProgramArray},
    programs::{ProgramError, SchedClassifier},
};
use palisade_common::{DELIVER_SLOT, map_names, program_names};

use super::Error;
use super::map_sizes::MapSizes;

/// The TC classifiers, both attached to every local workload's host-side veth.
pub const PROGRAMS: [&str; 2] = [program_names::FROM_WORKLOAD, program_names::TO_WORKLOAD];

/// The object once it is in the kernel: its maps, and its programs already verified.
///
/// Dropping it unloads everything that is not pinned or attached.
pub struct LoadedObject {
    ebpf: Ebpf,
    sizes: MapSizes,
    kept_sizes: Vec<KeptSize>,
}

/// A pinned map adopted with another size than the one asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSize {
    pub map: &'static str,
    pub asked: u32,
    pub pinned: u32,
}

/// Where the maps of the pin directory `dir` live: `<dir>/maps/<map name>`.
pub fn map_pin_dir(dir: &Path) -> PathBuf {
    dir.join("maps")
}

/// Where the programs of the pin directory `dir` live: `<dir>/programs/<program name>`.
pub fn program_pin_dir(dir: &Path) -> PathBuf {
    dir.join("programs")
}

/// [`load_sized`] with the sizes the object declares.
pub fn load(object: &[u8], pin_dir: Option<&Path>) -> Result<LoadedObject, Error> {
    load_sized(object, pin_dir, &MapSizes::declared())
}

/// Loads `object` (normally [`super::ebpf_object`]) with the running kernel's BTF and its
/// maps made with `sizes`, and loads every TC program so that it is verified before
/// anything is attached.
///
/// With `pin_dir`, every map is pinned under [`map_pin_dir`]; a map already pinned there
/// (by an earlier agent, also one killed with SIGKILL) is adopted with its contents instead
/// of created, so conntrack, counters and the policy in force survive a restart. A pinned
/// map keeps the size it has (the programs attached now use it, and making it again would
/// drop the policy, flows and counters it holds): [`LoadedObject::kept_sizes`] says which
/// differ from `sizes`, [`LoadedObject::sizes`] what every map has.
pub fn load_sized(
    object: &[u8],
    pin_dir: Option<&Path>,
    sizes: &MapSizes,
) -> Result<LoadedObject, Error> {
    // `EbpfLoader::new` silently goes without BTF when the kernel has none; ask for it
    // explicitly so that a kernel without BTF is reported here rather than as an obscure
    // relocation failure later.
    let btf = Btf::from_sys_fs().map_err(Error::KernelBtf)?;
    let mut loader = EbpfLoader::new();
    loader.btf(Some(&btf));
    if let Some(dir) = pin_dir {
        let maps = map_pin_dir(dir);
        std::fs::create_dir_all(&maps).map_err(|source| Error::CreatePinDir {
            path: maps.clone(),
            source,
        })?;
        for name in map_names::ALL {
            loader.map_pin_path(name, maps.join(name));
        }
    }
    let mut sizes = sizes.clone();
    let mut kept_sizes = Vec::new();
    if let Some(dir) = pin_dir {
        for (map, asked) in sizes.clone().iter() {
            let Some(pinned) = pinned_size(&map_pin_dir(dir).join(map)) else {
                continue;
            };
            if pinned != asked {
                sizes.keep(map, pinned);
                kept_sizes.push(KeptSize { map, asked, pinned });
            }
        }
    }
    for (map, entries) in sizes.iter() {
        loader.map_max_entries(map, entries);
    }
    let ebpf = loader.load(object).map_err(Error::LoadObject)?;
    let mut loaded = LoadedObject {
        ebpf,
        sizes,
        kept_sizes,
    };
    for name in PROGRAMS.into_iter().chain([program_names::DELIVER]) {
        loaded
            .program(name)?
            .load()
            .map_err(|source| Error::LoadProgram { name, source })?;
    }
    loaded.fill_deliver()?;
    Ok(loaded)
}

/// The size of the map pinned at `path`, if one is.
fn pinned_size(path: &Path) -> Option<u32> {
    if !path.exists() {
        return None;
    }
    MapInfo::from_pin(path).ok().map(|info| info.max_entries())
}

impl LoadedObject {
    /// The size every sized map has in the kernel.
    pub fn sizes(&self) -> &MapSizes {
        &self.sizes
    }

    /// Pinned maps adopted with another size than the one asked for.
    pub fn kept_sizes(&self) -> &[KeptSize] {
        &self.kept_sizes
    }

    /// One of the [`PROGRAMS`].
    pub fn program(&mut self, name: &'static str) -> Result<&mut SchedClassifier, Error> {
        let program = self
            .ebpf
            .program_mut(name)
            .ok_or(Error::MissingProgram(name))?;
        program
            .try_into()
            .map_err(|source: ProgramError| Error::ProgramType { name, source })
    }

    /// Pins every program as `<dir>/programs/<name>`, replacing pins left by an earlier
    /// agent (whose attachments keep their own reference to the old program).
    pub fn pin_programs(&mut self, dir: &Path) -> Result<Vec<PathBuf>, Error> {
        let programs = program_pin_dir(dir);
        std::fs::create_dir_all(&programs).map_err(|source| Error::CreatePinDir {
            path: programs.clone(),
            source,
        })?;
        let mut pinned = Vec::new();
        for name in PROGRAMS {
            let path = programs.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Pin { path, source }),
            }
            self.program(name)?.pin(&path).map_err(|e| Error::Pin {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
            pinned.push(path);
        }
        Ok(pinned)
    }

    /// Puts this object's `palisade_deliver` into `PAL_DELIVER`, which `palisade_from_wl`
    /// tail-calls for packets it delivers to another local workload. A pinned array an
    /// earlier agent filled gets this agent's program: its programs, still attached until
    /// this agent replaces them, share the map ABI and so this program's.
    fn fill_deliver(&mut self) -> Result<(), Error> {
        let name = program_names::DELIVER;
        let program_array_error = |source| Error::ProgramArray {
            program: name,
            map: map_names::DELIVER,
            source,
        };
        let fd = self
            .program(name)?
            .fd()
            .map_err(|source| Error::LoadProgram { name, source })?
            .try_clone()
            .map_err(|e| Error::LoadProgram {
                name,
                source: ProgramError::IOError(e),
            })?;
        let map = self
            .ebpf
            .map_mut(map_names::DELIVER)
            .ok_or(Error::MissingMap(map_names::DELIVER))?;
        let mut array = ProgramArray::try_from(map).map_err(program_array_error)?;
        array.set(DELIVER_SLOT, &fd, 0).map_err(program_array_error)
    }

    /// The underlying aya handle, for maps.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}
