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

use std::collections::BTreeSet;
use std::io;

use egret_bpf::MapKind;
use egret_bpf::artifact::MapImage;
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
        unknown.kind = 27;
        assert_eq!(compatibility(&unknown, &image), Err("kind type 27 -> lru_hash".into()));
    }
}
