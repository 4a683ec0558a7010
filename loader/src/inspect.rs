//! Node-side inspection, read-only from the pins (usable from any process
//! while a loader runs; it takes no lock and changes nothing):
//! - [`status`]: generations, which one runs, every attachment and what it
//!   runs, and the running generation's map fill levels;
//! - [`maps`]: the live decision tables of the running generation, as a
//!   generic key/value dump per map (decoding them needs the classifier's
//!   layouts, which live in the compiler; a decoded view comes later).
//!
//! Interface names are resolved in the calling thread's network namespace.

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use egret_bpf::MapKind;
use egret_bpf::artifact::{AttachPoint, TailCallSlot, hex};
use serde::Serialize;

use crate::error::LoaderError;
use crate::netdev;
use crate::pins::{self, Generation, PinLayout, attach_point_name};
use crate::scan;
use crate::sys::{self, MapHandle};

/// One generation under the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenerationStatus {
    /// Its number.
    pub generation: Generation,
    /// True if its marker is present (it was built completely).
    pub complete: bool,
    /// True for the generation that serves traffic.
    pub running: bool,
    /// Node name from the marker.
    pub node: Option<String>,
    /// Artifact digest from the marker.
    pub digest: Option<String>,
    /// Programs: (name, attach point, kernel id).
    pub programs: Vec<ProgramStatus>,
    /// Why it is incomplete.
    pub problem: Option<String>,
}

/// A program of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramStatus {
    /// Program name.
    pub name: String,
    /// Where it attaches (`None`: a tail-call target only).
    pub attach: Option<AttachPoint>,
    /// The `prog_array` slot it fills, if any.
    pub tail_call: Option<TailCallSlot>,
    /// Kernel id, if its pin is there.
    pub id: Option<u32>,
}

/// One attachment (pinned link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachmentStatus {
    /// The link's pin.
    pub pin: PathBuf,
    /// Attach point.
    pub attach: AttachPoint,
    /// Ifindex (from the pin name).
    pub ifindex: u32,
    /// Interface name, if it exists.
    pub interface: Option<String>,
    /// Kernel link id.
    pub link_id: Option<u32>,
    /// Program it runs.
    pub prog_id: Option<u32>,
    /// Generation of that program.
    pub generation: Option<Generation>,
    /// Its device is gone.
    pub defunct: bool,
    /// Why the kernel could not describe it.
    pub problem: Option<String>,
}

/// A map's fill level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapFill {
    /// Map name.
    pub name: String,
    /// Map kind (`hash`, `percpu_array`, ...).
    pub kind: String,
    /// Entries present (arrays: always `max_entries`).
    pub entries: usize,
    /// Capacity.
    pub max_entries: u32,
    /// A state map (kept across generations, pinned under `state/` too).
    pub state: bool,
}

/// A pin under `<root>/state/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatePin {
    /// Map name.
    pub map: String,
    /// Kernel map id.
    pub map_id: u32,
    /// True if it is the running generation's map of that name.
    pub running: bool,
}

/// The node's loader state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The root.
    pub root: PathBuf,
    /// The generation serving traffic.
    pub running: Option<Generation>,
    /// Every generation found.
    pub generations: Vec<GenerationStatus>,
    /// Every attachment.
    pub attachments: Vec<AttachmentStatus>,
    /// Fill levels of the running generation's maps.
    pub maps: Vec<MapFill>,
    /// The state maps pinned under `<root>/state/`.
    pub state: Vec<StatePin>,
    /// Entries under the root the loader did not create.
    pub foreign: Vec<PathBuf>,
}

impl Status {
    /// Pretty JSON, newline-terminated.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// Name of a kernel map type.
#[must_use]
pub fn map_kind_name(type_id: u32) -> String {
    MapKind::from_type_id(type_id).map_or_else(|| format!("type {type_id}"), |k| k.name().to_owned())
}

/// Reads the state under `root`.
///
/// # Errors
/// Directory read failures; a missing root reads as empty.
pub fn status(root: &Path) -> Result<Status, LoaderError> {
    let layout = PinLayout::new(root);
    let found = scan::scan(&layout)?;
    let running = scan::running_generation(&found);
    let generations = found
        .generations
        .iter()
        .map(|g| {
            let (node, digest, programs, problem) = match &g.meta {
                Ok(m) => (
                    Some(m.node.clone()),
                    Some(m.digest.clone()),
                    m.programs
                        .iter()
                        .map(|p| ProgramStatus {
                            name: p.name.clone(),
                            attach: p.attach,
                            tail_call: p.tail_call.clone(),
                            id: g.programs.get(&p.name).copied(),
                        })
                        .collect(),
                    None,
                ),
                Err(e) => (None, None, Vec::new(), Some(e.clone())),
            };
            GenerationStatus {
                generation: g.generation,
                complete: g.is_complete(),
                running: Some(g.generation) == running,
                node,
                digest,
                programs,
                problem,
            }
        })
        .collect();
    let mut attachments = Vec::new();
    for l in &found.links {
        let (link_id, prog_id, problem) = match &l.info {
            Ok(i) => (Some(i.id), Some(i.prog_id), None),
            Err(e) => (None, None, Some(e.clone())),
        };
        attachments.push(AttachmentStatus {
            pin: l.path.clone(),
            attach: l.attach,
            ifindex: l.ifindex,
            interface: netdev::ifname(l.ifindex)?,
            link_id,
            prog_id,
            generation: prog_id.and_then(|id| scan::generation_of(&found, id)),
            defunct: l.is_defunct(),
            problem,
        });
    }
    let mut maps = Vec::new();
    let mut running_ids = std::collections::BTreeMap::new();
    if let Some(r) = running
        && let Some(Ok(meta)) = found.generations.iter().find(|g| g.generation == r).map(|g| &g.meta)
    {
        for name in &meta.maps {
            let path = layout.map(r, name);
            let h = MapHandle::open(&path).map_err(|e| LoaderError::Map {
                map: name.clone(),
                operation: "opening its pin",
                source: e,
            })?;
            let entries =
                h.keys().map_err(|e| LoaderError::Map { map: name.clone(), operation: "iterating", source: e })?;
            running_ids.insert(name.clone(), h.info().id);
            maps.push(MapFill {
                name: name.clone(),
                kind: map_kind_name(h.info().kind),
                entries: entries.len(),
                max_entries: h.info().max_entries,
                state: meta.state.contains(name),
            });
        }
    }
    let state = crate::state::pinned(&layout)?
        .into_iter()
        .map(|(map, map_id)| StatePin { running: running_ids.get(&map) == Some(&map_id), map, map_id })
        .collect();
    Ok(Status { root: root.to_path_buf(), running, generations, attachments, maps, state, foreign: found.foreign })
}

/// One entry of a map dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DumpEntry {
    /// Key bytes, hex.
    pub key: String,
    /// Value bytes, hex: one per CPU for per-CPU maps, else one.
    pub values: Vec<String>,
}

/// A map's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapDump {
    /// Map name.
    pub name: String,
    /// Map kind.
    pub kind: String,
    /// Key size.
    pub key_size: u32,
    /// Value size.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// Entries, sorted by key bytes.
    pub entries: Vec<DumpEntry>,
}

impl MapDump {
    /// The value bytes of `key` (first CPU for per-CPU maps), if present.
    #[must_use]
    pub fn value(&self, key: &[u8]) -> Option<&str> {
        let k = hex(key);
        self.entries.iter().find(|e| e.key == k).and_then(|e| e.values.first()).map(String::as_str)
    }

    /// The entries of a counter map — key `u32` LE index, value `{u64
    /// packets, u64 bytes}` LE (egret's per-CPU counters) — each summed over
    /// CPUs: index → (packets, bytes). Entries that do not have that shape
    /// are skipped.
    #[must_use]
    pub fn counters(&self) -> std::collections::BTreeMap<u32, (u64, u64)> {
        let unhex = |s: &str| -> Vec<u8> {
            (0..s.len() / 2).filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()).collect()
        };
        let counter = |v: &str| egret_bpf::layout::Counter::from_bytes(&unhex(v)).unwrap_or_default();
        self.entries
            .iter()
            .filter_map(|e| {
                let index = egret_bpf::layout::index::INDEX.get_u32(&unhex(&e.key))?;
                let sum = e.values.iter().map(|v| counter(v)).fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
                Some((index, sum))
            })
            .collect()
    }
}

/// Dumps the pinned map at `path` under `name`.
///
/// # Errors
/// [`LoaderError::Map`] if it cannot be opened or read.
pub fn dump_map(path: &Path, name: &str) -> Result<MapDump, LoaderError> {
    let err = |operation, e| LoaderError::Map { map: name.to_owned(), operation, source: e };
    let h = MapHandle::open(path).map_err(|e| err("opening its pin", e))?;
    let mut entries = Vec::new();
    for k in h.keys().map_err(|e| err("iterating", e))? {
        // an entry deleted between iteration and lookup is skipped
        if let Some(values) = h.lookup(&k).map_err(|e| err("reading", e))? {
            entries.push(DumpEntry { key: hex(&k), values: values.iter().map(|v| hex(v)).collect() });
        }
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let i = h.info();
    Ok(MapDump {
        name: name.to_owned(),
        kind: map_kind_name(i.kind),
        key_size: i.key_size,
        value_size: i.value_size,
        max_entries: i.max_entries,
        entries,
    })
}

/// The running generation and every one of its maps, dumped.
///
/// # Errors
/// Scan or map read failures. No running generation gives `(None, [])`.
pub fn maps(root: &Path) -> Result<(Option<Generation>, Vec<MapDump>), LoaderError> {
    let layout = PinLayout::new(root);
    let found = scan::scan(&layout)?;
    let Some(r) = scan::running_generation(&found) else { return Ok((None, Vec::new())) };
    let Some(Ok(meta)) = found.generations.iter().find(|g| g.generation == r).map(|g| &g.meta) else {
        return Ok((Some(r), Vec::new()));
    };
    let dumps = meta.maps.iter().map(|name| dump_map(&layout.map(r, name), name)).collect::<Result<_, _>>()?;
    Ok((Some(r), dumps))
}

/// Counts every pin (file) under `root`, recursively: what the loader would
/// leak if it left anything behind.
///
/// # Errors
/// Directory read failures.
pub fn count_pins(root: &Path) -> Result<usize, LoaderError> {
    let mut n = 0;
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(LoaderError::bpffs(root, "reading directory", e)),
    };
    for e in rd {
        let e = e.map_err(|e| LoaderError::bpffs(root, "reading directory", e))?;
        let ft = e.file_type().map_err(|err| LoaderError::bpffs(e.path(), "stat", err))?;
        if ft.is_dir() {
            n += count_pins(&e.path())?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

/// The program id a pinned link runs (for tests and tools).
///
/// # Errors
/// [`LoaderError::Link`] if the pin is not a readable link.
pub fn link_program(pin: &Path) -> Result<u32, LoaderError> {
    let fd = sys::obj_get(pin).map_err(|e| LoaderError::Link {
        path: pin.to_path_buf(),
        operation: "opening",
        source: e,
    })?;
    let info = sys::link_info(fd.as_fd()).map_err(|e| LoaderError::Link {
        path: pin.to_path_buf(),
        operation: "reading info",
        source: e,
    })?;
    Ok(info.prog_id)
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "root: {}", self.root.display())?;
        match self.running {
            Some(g) => writeln!(f, "running: generation {g}")?,
            None => writeln!(f, "running: none")?,
        }
        writeln!(f, "generations:")?;
        if self.generations.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for g in &self.generations {
            let state = match (g.running, g.complete) {
                (true, _) => "running",
                (false, true) => "complete",
                (false, false) => "incomplete",
            };
            write!(f, "  {}{}  {state}", pins::GENERATION_PREFIX, g.generation)?;
            if let (Some(node), Some(digest)) = (&g.node, &g.digest) {
                write!(f, "  node {node}  digest {digest}")?;
            }
            if let Some(p) = &g.problem {
                write!(f, "  ({p})")?;
            }
            writeln!(f)?;
            for p in &g.programs {
                let id = p.id.map_or_else(|| "-".to_owned(), |i| i.to_string());
                let place = match (&p.attach, &p.tail_call) {
                    (Some(a), _) => attach_point_name(*a).to_owned(),
                    (None, Some(t)) => format!("{}[{}]", t.map, t.index),
                    (None, None) => "-".to_owned(),
                };
                writeln!(f, "    {:<20} {:<17} prog id {id}", p.name, place)?;
            }
        }
        writeln!(f, "attachments:")?;
        if self.attachments.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for a in &self.attachments {
            let iface = a.interface.clone().unwrap_or_else(|| "?".into());
            let g = a.generation.map_or_else(|| "?".to_owned(), |g| g.to_string());
            let link = a.link_id.map_or_else(|| "-".to_owned(), |i| i.to_string());
            let prog = a.prog_id.map_or_else(|| "-".to_owned(), |i| i.to_string());
            write!(
                f,
                "  {:<17} {iface}({})  link {link}  prog {prog}  generation {g}",
                attach_point_name(a.attach),
                a.ifindex
            )?;
            if a.defunct {
                write!(f, "  DEFUNCT (device gone)")?;
            }
            if let Some(p) = &a.problem {
                write!(f, "  ({p})")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "maps:")?;
        if self.maps.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for m in &self.maps {
            let state = if m.state { "  state" } else { "" };
            writeln!(f, "  {:<20} {:<13} {}/{}{state}", m.name, m.kind, m.entries, m.max_entries)?;
        }
        if !self.state.is_empty() {
            writeln!(f, "state maps (kept across generations):")?;
        }
        for p in &self.state {
            let note = if p.running { "" } else { "  (not the running generation's)" };
            writeln!(f, "  {:<20} map id {}{note}", p.map, p.map_id)?;
        }
        for p in &self.foreign {
            writeln!(f, "foreign entry: {}", p.display())?;
        }
        Ok(())
    }
}

impl fmt::Display for MapDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "map {} ({}, key {} B, value {} B, {}/{} entries)",
            self.name,
            self.kind,
            self.key_size,
            self.value_size,
            self.entries.len(),
            self.max_entries
        )?;
        for e in &self.entries {
            if e.values.len() == 1 {
                writeln!(f, "  {} -> {}", e.key, e.values[0])?;
            } else {
                writeln!(f, "  {} -> [{}]", e.key, e.values.join(" "))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_packets_and_bytes_over_cpus() {
        let value = |p: u64, b: u64| hex(&[p.to_le_bytes(), b.to_le_bytes()].concat());
        let d = MapDump {
            name: "egret_gw_stats".into(),
            kind: "percpu_array".into(),
            key_size: 4,
            value_size: 16,
            max_entries: 32,
            entries: vec![
                DumpEntry { key: hex(&3u32.to_le_bytes()), values: vec![value(2, 100), value(5, 7)] },
                DumpEntry { key: hex(&[1, 2]), values: vec![value(9, 9)] },
            ],
        };
        let c = d.counters();
        assert_eq!(c.get(&3), Some(&(7, 107)));
        assert_eq!(c.len(), 1, "a key that is no u32 index is skipped");
    }
}
