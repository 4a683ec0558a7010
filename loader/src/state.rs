//! State maps: maps the artifact designates as `state` (the NAT connection
//! tables and the per-CPU counters, which only the programs write) outlive
//! generations, so a swap for an unrelated policy change keeps every
//! connection through a gateway and every counter.
//!
//! Where they live: `<root>/state/<map>` ([`PinLayout::state_map`]) is a
//! second pin of the running generation's map of that name
//! (`gen-<N>/maps/<map>`). Each generation still pins every map it uses, so a
//! generation stays self-contained (inspection, deletion and recovery need
//! nothing else).
//!
//! How a new generation N gets them (aya 0.14): `EbpfLoader::map_pin_path`
//! gives every map of the object the path `gen-<N>/maps/<map>`; aya opens a
//! map already pinned there instead of creating one (`bpf_obj_get`, *without
//! checking that it fits*: aya 0.14 `MapData::create_pinned_by_name`) and
//! creates and pins the others. Before loading, [`prepare`] checks each state
//! map's pin under `state/` against the artifact's definition and, when it
//! fits, pins that same map at `gen-<N>/maps/<map>`, so aya reuses it and the
//! programs are relocated against it. Otherwise aya creates a new, empty map
//! there.
//!
//! Compatibility rule ([`compatibility`]): the pinned object is a map with
//! the same kind, key size, value size, capacity (`max_entries`) and flags as
//! the artifact's map image. Anything else — a changed layout, a resized
//! table, a foreign object under that name — gives a new map
//! ([`StateFate::Recreated`], with the reason): old entries would be read with
//! the wrong layout, so they are dropped rather than reinterpreted.
//!
//! When `state/` changes ([`publish`]): only after a swap has completed (and
//! when a restarted loader adopts a generation), from the running generation:
//! each state map of it is pinned at `state/<map>` (a new pin is made at
//! `state/<map>%new` and renamed over the old one, atomically), and pins of
//! maps it does not have as state are removed. A build or swap that fails
//! never touches `state/` — its `gen-<N>/` (second pins included) is deleted,
//! so nothing leaks and N−1 keeps serving with the maps it had.
//!
//! Access from outside the loader ([`StateMap`]): an agent opens a state map
//! of a root by name — `egret_gw_live`, which the agent writes and the
//! classifier reads; `egret_probe_rx`, which `egret_tunnel_in` writes and the
//! agent reads — checked against the map's definition, and reads, writes
//! and deletes whole entries. A pin that is absent (no generation has
//! published that state map yet) is `Ok(None)`, not an error. A handle keeps
//! the map it opened: after a swap that recreated the map the pin names
//! another map, so holders re-open (compare [`StateMap::id`]) rather than
//! keep writing a map no program reads.

use std::collections::BTreeSet;
use std::io;

use egret_bpf::artifact::MapImage;
use egret_bpf::{MapDef, MapKind};
use serde::Serialize;

use crate::check::CheckedArtifact;
use crate::error::LoaderError;
use crate::pins::{self, Generation, PinLayout};
use crate::scan::read_dir_sorted;
use crate::sys::{self, MapHandle, MapInfo};

/// What a new generation did for one of its state maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fate", rename_all = "kebab-case")]
pub enum StateFate {
    /// The running generation's map was reused: entries and counters carry over.
    Reused,
    /// There was none: a new, empty map.
    Created,
    /// There was one that does not fit the new definition: a new, empty map.
    Recreated {
        /// What differs.
        reason: String,
    },
}

/// A state map of a new generation and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateMapReport {
    /// Map name.
    pub map: String,
    /// Reused, created or recreated.
    #[serde(flatten)]
    pub fate: StateFate,
}

/// Why a pinned map cannot serve as `image` (`Ok` if it can): kind, key
/// size, value size, capacity and flags must all be equal.
pub(crate) fn compatibility(info: &MapInfo, image: &MapImage) -> Result<(), String> {
    let kind = MapKind::from_type_id(info.kind).map_or_else(|| format!("type {}", info.kind), |k| k.name().to_owned());
    let fields: [(&str, String, String); 5] = [
        ("kind", kind, image.kind.clone()),
        ("key_size", info.key_size.to_string(), image.key_size.to_string()),
        ("value_size", info.value_size.to_string(), image.value_size.to_string()),
        ("max_entries", info.max_entries.to_string(), image.max_entries.to_string()),
        ("flags", info.flags.to_string(), image.flags.to_string()),
    ];
    let diffs: Vec<String> =
        fields.iter().filter(|(_, old, new)| old != new).map(|(f, old, new)| format!("{f} {old} -> {new}")).collect();
    if diffs.is_empty() { Ok(()) } else { Err(diffs.join(", ")) }
}

/// Decides, for every state map of `checked`, whether the map pinned under
/// `state/` is reused, and pins each reused one at `gen-<n>/maps/<map>`
/// (which must exist and be empty of it) so that aya opens it there.
///
/// # Errors
/// A pin that cannot be made (the caller deletes `gen-<n>/`).
pub(crate) fn prepare(
    layout: &PinLayout,
    n: Generation,
    checked: &CheckedArtifact<'_>,
) -> Result<Vec<StateMapReport>, LoaderError> {
    let artifact = checked.artifact();
    let mut out = Vec::new();
    for image in artifact.manifest.maps.iter().filter(|m| artifact.is_state(&m.name)) {
        let pin = layout.state_map(&image.name);
        let fate = match MapHandle::open(&pin) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => StateFate::Created,
            Err(e) => StateFate::Recreated { reason: format!("`{}` is not a usable map: {e}", pin.display()) },
            Ok(h) => match compatibility(h.info(), image) {
                Err(reason) => StateFate::Recreated { reason },
                Ok(()) => {
                    let at = layout.map(n, &image.name);
                    sys::obj_pin(h.fd(), &at).map_err(|e| LoaderError::bpffs(&at, "pinning a reused state map", e))?;
                    StateFate::Reused
                }
            },
        };
        out.push(StateMapReport { map: image.name.clone(), fate });
    }
    Ok(out)
}

/// Makes `state/` hold exactly the state maps `names` of the running
/// generation `g` (see the module doc).
///
/// # Errors
/// A pin, rename or unlink failure under `state/` (what was done stays done;
/// the next call or the next [`crate::Loader::open`] finishes it).
pub(crate) fn publish(layout: &PinLayout, g: Generation, names: &[String]) -> Result<(), LoaderError> {
    let dir = layout.state_dir();
    if !names.is_empty() {
        std::fs::create_dir_all(&dir).map_err(|e| LoaderError::bpffs(&dir, "creating directory", e))?;
    }
    for name in names {
        let source = layout.map(g, name);
        let map_error = |operation, source| LoaderError::Map { map: name.clone(), operation, source };
        let h = MapHandle::open(&source).map_err(|e| map_error("opening its pin", e))?;
        let pin = layout.state_map(name);
        if MapHandle::open(&pin).is_ok_and(|p| p.info().id == h.info().id) {
            continue;
        }
        let temp = layout.state_map_temp(name);
        remove_pin(&temp)?;
        sys::obj_pin(h.fd(), &temp).map_err(|e| LoaderError::bpffs(&temp, "pinning a state map", e))?;
        std::fs::rename(&temp, &pin).map_err(|e| LoaderError::bpffs(&pin, "replacing a state map", e))?;
    }
    let keep: BTreeSet<String> = names.iter().map(|n| pins::escape_name(n)).collect();
    for (entry, path) in read_dir_sorted(&dir)? {
        if !keep.contains(&entry) {
            remove_pin(&path)?;
        }
    }
    Ok(())
}

/// Removes `state/` and every pin in it.
///
/// # Errors
/// An unlink failure.
pub(crate) fn remove_all(layout: &PinLayout) -> Result<(), LoaderError> {
    let dir = layout.state_dir();
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LoaderError::bpffs(dir, "removing", e)),
    }
}

/// The state pins under the root: (map name, kernel map id) for each pin
/// that is a readable map, sorted by name; temporaries and unreadable pins
/// are left out.
///
/// # Errors
/// A directory read failure.
pub fn pinned(layout: &PinLayout) -> Result<Vec<(String, u32)>, LoaderError> {
    let dir = layout.state_dir();
    let mut out = Vec::new();
    for (entry, path) in read_dir_sorted(&dir)? {
        let Some(name) = pins::unescape_name(&entry) else { continue };
        if let Ok(h) = MapHandle::open(&path) {
            out.push((name, h.info().id));
        }
    }
    Ok(out)
}

/// Why a state map cannot be opened or accessed ([`StateMap`]).
#[derive(Debug, thiserror::Error)]
pub enum StateMapError {
    /// The pin exists but is not a usable map.
    #[error("state map `{map}`: `{path}` is not a usable map: {source}")]
    Open {
        /// Map name.
        map: String,
        /// The pin.
        path: std::path::PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The pinned map does not have the definition's geometry.
    #[error("state map `{map}` does not fit its definition: {reason}")]
    Geometry {
        /// Map name.
        map: String,
        /// What differs (kind, key size, value size, capacity, flags).
        reason: String,
    },
    /// A per-CPU map: entries are one value per CPU, which [`StateMap`] does
    /// not read or write (the counters are read by [`crate::inspect`]).
    #[error("state map `{map}` is per-CPU; its entries are not single values")]
    PerCpu {
        /// Map name.
        map: String,
    },
    /// An element operation failed.
    #[error("state map `{map}`: {operation}: {source}")]
    Access {
        /// Map name.
        map: String,
        /// What was being done (`lookup`, `update`, `delete`, `listing keys`).
        operation: &'static str,
        /// The error (a wrong key or value length is `InvalidInput`).
        source: io::Error,
    },
}

/// One entry of a map, as bytes: key, value.
pub type EntryBytes = (Vec<u8>, Vec<u8>);

/// A state map of a root, opened through its pin `<root>/state/<map>`
/// (see the module doc): whole-entry reads, writes and deletes of a map
/// with single (not per-CPU) values.
#[derive(Debug)]
pub struct StateMap {
    name: String,
    handle: MapHandle,
}

impl StateMap {
    /// Opens the state map `def.name` of `layout`'s root and checks that it
    /// has `def`'s kind, key size, value size, capacity and flags.
    /// `Ok(None)` if nothing is pinned under that name.
    ///
    /// # Errors
    /// A pin that is not a map, a map of another geometry, a per-CPU map.
    pub fn open(layout: &PinLayout, def: &MapDef) -> Result<Option<StateMap>, StateMapError> {
        let path = layout.state_map(&def.name);
        let handle = match MapHandle::open(&path) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateMapError::Open { map: def.name.clone(), path, source }),
        };
        compatibility(handle.info(), &MapImage::of(def))
            .map_err(|reason| StateMapError::Geometry { map: def.name.clone(), reason })?;
        if sys::is_percpu_type(handle.info().kind) {
            return Err(StateMapError::PerCpu { map: def.name.clone() });
        }
        Ok(Some(StateMap { name: def.name.clone(), handle }))
    }

    /// The map's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernel's id of the map opened: a different id under the same
    /// pin means the map was replaced.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.handle.info().id
    }

    fn access(&self, operation: &'static str) -> impl FnOnce(io::Error) -> StateMapError + '_ {
        move |source| StateMapError::Access { map: self.name.clone(), operation, source }
    }

    /// The value under `key`, `None` if absent.
    ///
    /// # Errors
    /// A key of the wrong size, a failed lookup.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateMapError> {
        let values = self.handle.lookup(key).map_err(self.access("lookup"))?;
        Ok(values.and_then(|v| v.into_iter().next()))
    }

    /// Creates or replaces the entry `key` → `value` (`BPF_ANY`).
    ///
    /// # Errors
    /// A key or value of the wrong size, a full map, a failed update.
    pub fn set(&self, key: &[u8], value: &[u8]) -> Result<(), StateMapError> {
        self.handle.update(key, value, sys::BPF_ANY).map_err(self.access("update"))
    }

    /// Deletes the entry `key`; an absent key is not an error.
    ///
    /// # Errors
    /// A key of the wrong size, a failed delete.
    pub fn remove(&self, key: &[u8]) -> Result<(), StateMapError> {
        self.handle.delete(key).map_err(self.access("delete"))
    }

    /// Every key, in the kernel's order (at most `max_entries` + 1 while
    /// the map changes under the walk).
    ///
    /// # Errors
    /// A failed walk.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, StateMapError> {
        self.handle.keys().map_err(self.access("listing keys"))
    }

    /// Every entry (key, value), in the kernel's order: [`StateMap::keys`],
    /// then one lookup per key; a key deleted between the two is left out.
    /// Not a snapshot: entries written during the walk may show either value.
    ///
    /// # Errors
    /// A failed walk or lookup.
    pub fn entries(&self) -> Result<Vec<EntryBytes>, StateMapError> {
        let keys = self.keys()?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = self.get(&key)? {
                out.push((key, value));
            }
        }
        Ok(out)
    }
}

fn remove_pin(path: &std::path::Path) -> Result<(), LoaderError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LoaderError::bpffs(path, "unpinning", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_bpf::MapDef;

    fn info(kind: MapKind, key: u32, value: u32, max: u32, flags: u32) -> MapInfo {
        MapInfo {
            kind: kind.type_id(),
            id: 1,
            key_size: key,
            value_size: value,
            max_entries: max,
            flags,
            name: "m".into(),
        }
    }

    #[test]
    fn compatibility_needs_every_field_equal() {
        let def = MapDef::new("egret_nat_v4", MapKind::LruHash, 16, 32, 65536).expect("def");
        let image = MapImage::of(&def);
        assert_eq!(compatibility(&info(MapKind::LruHash, 16, 32, 65536, 0), &image), Ok(()));
        assert_eq!(
            compatibility(&info(MapKind::LruHash, 16, 32, 1024, 0), &image),
            Err("max_entries 1024 -> 65536".into())
        );
        assert_eq!(
            compatibility(&info(MapKind::Hash, 16, 24, 65536, 0), &image),
            Err("kind hash -> lru_hash, value_size 24 -> 32".into())
        );
        assert_eq!(compatibility(&info(MapKind::LruHash, 16, 32, 65536, 2), &image), Err("flags 2 -> 0".into()));
        let mut unknown = info(MapKind::LruHash, 16, 32, 65536, 0);
        unknown.kind = 99;
        assert_eq!(compatibility(&unknown, &image), Err("kind type 99 -> lru_hash".into()));
    }
}
