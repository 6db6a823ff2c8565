//! Loading the eBPF object into the kernel, adopting the maps an earlier agent pinned.

use std::path::{Path, PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{ProgramError, SchedClassifier},
};
use palisade_common::{map_names, program_names};

use super::Error;

/// The TC classifiers, both attached to every local workload's host-side veth.
pub const PROGRAMS: [&str; 2] = [program_names::FROM_WORKLOAD, program_names::TO_WORKLOAD];

/// The object once it is in the kernel: its maps, and its programs already verified.
///
/// Dropping it unloads everything that is not pinned or attached.
pub struct LoadedObject {
    ebpf: Ebpf,
}

/// Where the maps of the pin directory `dir` live: `<dir>/maps/<map name>`.
pub fn map_pin_dir(dir: &Path) -> PathBuf {
    dir.join("maps")
}

/// Where the programs of the pin directory `dir` live: `<dir>/programs/<program name>`.
pub fn program_pin_dir(dir: &Path) -> PathBuf {
    dir.join("programs")
}

/// Loads `object` (normally [`super::ebpf_object`]) with the running kernel's BTF, and loads
/// every TC program so that it is verified before anything is attached.
///
/// With `pin_dir`, every map is pinned under [`map_pin_dir`]; a map already pinned there
/// (by an earlier agent, also one killed with SIGKILL) is adopted with its contents instead
/// of created, so conntrack, counters and the policy in force survive a restart.
pub fn load(object: &[u8], pin_dir: Option<&Path>) -> Result<LoadedObject, Error> {
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
    let ebpf = loader.load(object).map_err(Error::LoadObject)?;
    let mut loaded = LoadedObject { ebpf };
    for name in PROGRAMS {
        loaded
            .program(name)?
            .load()
            .map_err(|source| Error::LoadProgram { name, source })?;
    }
    Ok(loaded)
}

impl LoadedObject {
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

    /// The underlying aya handle, for maps.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}
