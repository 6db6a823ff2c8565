//! Loading the eBPF object into the kernel.

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{ProgramError, SchedClassifier},
};

use super::Error;

/// The TC classifier that enforces policy on a workload's host-side veth.
pub const TC_PROGRAM: &str = "palisade_tc";

/// The object once it is in the kernel: its maps, and its programs already verified.
///
/// Dropping it unloads everything that is not pinned.
pub struct LoadedObject {
    ebpf: Ebpf,
}

/// Loads `object` (normally [`super::ebpf_object`]) with the running kernel's BTF, and loads
/// the TC program into the kernel so that it is verified before anything is attached.
pub fn load(object: &[u8]) -> Result<LoadedObject, Error> {
    // `EbpfLoader::new` silently goes without BTF when the kernel has none; ask for it
    // explicitly so that a kernel without BTF is reported here rather than as an obscure
    // relocation failure later.
    let btf = Btf::from_sys_fs().map_err(Error::KernelBtf)?;
    let ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(object)
        .map_err(Error::LoadObject)?;
    let mut loaded = LoadedObject { ebpf };
    loaded
        .tc_program()?
        .load()
        .map_err(|source| Error::LoadProgram {
            name: TC_PROGRAM,
            source,
        })?;
    Ok(loaded)
}

impl LoadedObject {
    /// The [`TC_PROGRAM`] classifier.
    pub fn tc_program(&mut self) -> Result<&mut SchedClassifier, Error> {
        let program = self
            .ebpf
            .program_mut(TC_PROGRAM)
            .ok_or(Error::MissingProgram(TC_PROGRAM))?;
        program
            .try_into()
            .map_err(|source: ProgramError| Error::ProgramType {
                name: TC_PROGRAM,
                source,
            })
    }

    /// Pins the TC program as `<dir>/palisade_tc`, replacing a pin left by an earlier agent
    /// (whose attachments keep their own reference to the old program).
    pub fn pin_tc_program(&mut self, dir: &std::path::Path) -> Result<std::path::PathBuf, Error> {
        let path = dir.join(TC_PROGRAM);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Pin { path, source }),
        }
        self.tc_program()?.pin(&path).map_err(|e| Error::Pin {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        Ok(path)
    }

    /// The underlying aya handle, for maps and for programs not wrapped here yet.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}
