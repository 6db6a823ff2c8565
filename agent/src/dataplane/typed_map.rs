//! A map as its aya type (`HashMap`, `PerCpuArray`, ...): taken out of a loaded object, or
//! opened from the pin an agent left under its pin directory.

use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData, MapError};

use super::load::map_pin_dir;

#[derive(Debug, thiserror::Error)]
pub enum MapOpenError {
    #[error("palisade's eBPF object has no map `{0}`; is the object stale?")]
    MissingMap(&'static str),
    #[error(
        "cannot open the pinned map {path}: {source}\nhint: is `palisade agent` running (or has \
         it run) on this host, with the same --bpffs?"
    )]
    Pinned {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error("cannot use map `{name}`: {source}")]
    Type {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

/// Takes map `name` out of a loaded object, as `M`.
pub fn take<M>(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<M, MapOpenError>
where
    M: TryFrom<Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(MapOpenError::MissingMap(name))?;
    M::try_from(map).map_err(|source| MapOpenError::Type { name, source })
}

/// Opens map `name` pinned by an agent whose pin directory is `pin_dir`, as `M`.
pub fn open_pinned<M>(pin_dir: &Path, name: &'static str) -> Result<M, MapOpenError>
where
    M: TryFrom<Map, Error = MapError>,
{
    let path = map_pin_dir(pin_dir).join(name);
    let data = match MapData::from_pin(&path) {
        Ok(data) => data,
        Err(source) => return Err(MapOpenError::Pinned { path, source }),
    };
    let map = Map::from_map_data(data).map_err(|source| MapOpenError::Type { name, source })?;
    M::try_from(map).map_err(|source| MapOpenError::Type { name, source })
}

#[cfg(test)]
mod tests {
    use aya::maps::HashMap;

    use super::*;

    #[test]
    fn a_missing_pin_is_named_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let Err(error) = open_pinned::<HashMap<MapData, u32, u32>>(dir.path(), "PAL_CT") else {
            panic!("opened a map that was never pinned");
        };
        let said = error.to_string();
        let path = map_pin_dir(dir.path()).join("PAL_CT");
        assert!(said.contains(&path.display().to_string()), "{said}");
        assert!(said.contains("is `palisade agent` running"), "{said}");
    }
}
