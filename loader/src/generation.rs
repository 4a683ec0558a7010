//! Building, opening and deleting one generation's pins (aya does the loading).
//!
//! [`build`] contract: on success, `gen-N/` holds every map (created from the
//! object and filled from its image, or — for a state map whose definition is
//! unchanged — the running generation's map, see [`crate::state`]), every program (loaded: the kernel verifier
//! accepted it; tail-call targets included) and, pinned last, the marker;
//! every `prog_array` slot a program names holds that program of generation
//! N (so tail calls never cross generations); nothing is attached. On failure
//! it removes `gen-N/` entirely (best effort, and a leftover without a marker is
//! removed by the next start) and nothing outside `gen-N/` was touched.
//!
//! [`delete`] unpins the marker first, so a crash while deleting leaves an
//! incomplete generation, never a complete-looking partial one.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::EbpfLoader;
use aya::pin::PinError;
use aya::programs::{ProgramError, SchedClassifier};
use egret_bpf::artifact::AttachPoint;

use crate::check::CheckedArtifact;
use crate::error::LoaderError;
use crate::meta::{self, GenerationMeta, META_MAP_NAME, META_VALUE_SIZE};
use crate::pins::{Generation, PinLayout};
use crate::state::StateMapReport;
use crate::sys::{self, BPF_ANY, MapHandle};

/// A program of a generation, opened from its pin.
#[derive(Debug)]
pub(crate) struct LoadedProgram {
    /// Program name.
    pub name: String,
    /// Kernel id.
    pub id: u32,
    /// aya's handle (links are never kept in it: see `links.rs`).
    pub prog: SchedClassifier,
}

/// A complete generation with handles on its programs.
#[derive(Debug)]
pub(crate) struct LoadedGeneration {
    /// Its metadata (as in its marker).
    pub meta: GenerationMeta,
    /// Programs by attach point.
    pub programs: BTreeMap<AttachPoint, LoadedProgram>,
}

impl LoadedGeneration {
    pub fn generation(&self) -> Generation {
        self.meta.generation
    }
}

fn pin_error(path: &Path, e: PinError) -> LoaderError {
    match e {
        PinError::SyscallError(s) if s.io_error.kind() == io::ErrorKind::AlreadyExists => {
            LoaderError::PinConflict { path: path.to_path_buf() }
        }
        PinError::SyscallError(s) => LoaderError::bpffs(path, "pinning", s.io_error),
        other => LoaderError::bpffs(path, "pinning", io::Error::other(other.to_string())),
    }
}

fn create_dir(path: &Path) -> Result<(), LoaderError> {
    std::fs::create_dir(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            LoaderError::PinConflict { path: path.to_path_buf() }
        } else {
            LoaderError::bpffs(path, "creating directory", e)
        }
    })
}

/// Removes `gen-N/` if dropped while armed.
struct Undo<'a> {
    layout: &'a PinLayout,
    n: Generation,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = delete(self.layout, self.n);
        }
    }
}

/// aya's program errors, with the verifier's log for a rejected load.
fn program_error(program: &str, e: ProgramError) -> LoaderError {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => LoaderError::VerifierRejected {
            program: program.to_owned(),
            source: io_error,
            log: verifier_log.to_string(),
        },
        other => LoaderError::Program { program: program.to_owned(), source: Box::new(other) },
    }
}

/// Builds generation `n` from a checked artifact whose maps are filled from
/// `images` (its images with late fields resolved) and whose holes take `values`
/// (see the module doc for the contract), with `ebpf_loader` (configured once
/// per [`crate::Loader`]: see [`ebpf_loader`]). Returns the generation and
/// what happened to each of its state maps.
///
/// # Errors
/// Hole filling, object load (maps), verifier rejection, map fill and pin
/// failures; `PinConflict` if `gen-N/` already exists.
pub(crate) fn build(
    ebpf_loader: &mut EbpfLoader<'static>,
    layout: &PinLayout,
    n: Generation,
    checked: &CheckedArtifact<'_>,
    images: &[crate::check::DecodedImage],
    values: &BTreeMap<String, i64>,
    node: &str,
) -> Result<(LoadedGeneration, Vec<StateMapReport>), LoaderError> {
    let artifact = checked.artifact();
    // fill holes before creating anything: a value that does not fit touches nothing
    let filled =
        egret_bpf::elf::fill_holes(&artifact.object, values).map_err(|source| LoaderError::HoleFill { source })?;
    create_dir(&layout.generation_dir(n))?;
    let mut undo = Undo { layout, n, armed: true };
    create_dir(&layout.maps_dir(n))?;
    create_dir(&layout.programs_dir(n))?;

    // every map gets its pin path in gen-N: aya opens what is pinned there
    // (the reused state maps, pinned by `state::prepare`) and creates and
    // pins the rest. Set for every map on every build, so no path of an
    // earlier build (aya keeps them per loader) is ever consulted.
    for img in images {
        ebpf_loader.map_pin_path(static_name(&img.name), layout.map(n, &img.name));
    }
    let state = crate::state::prepare(layout, n, checked)?;
    let mut ebpf = ebpf_loader.load(&filled).map_err(|e| LoaderError::ObjectLoad { source: Box::new(e) })?;
    for crate::check::DecodedImage { name, entries } in images {
        let path = layout.map(n, name);
        if ebpf.map(name).is_none() {
            return Err(LoaderError::MapImageUnknown { map: name.clone() });
        }
        let handle = MapHandle::open(&path).map_err(|e| LoaderError::Map {
            map: name.clone(),
            operation: "opening its pin",
            source: e,
        })?;
        for (k, v) in entries {
            handle.update(k, v, BPF_ANY).map_err(|e| LoaderError::Map {
                map: name.clone(),
                operation: "filling from its image",
                source: e,
            })?;
        }
    }
    for name in checked.all_programs() {
        let program = ebpf.program_mut(name).ok_or_else(|| LoaderError::ProgramMissing { program: name.clone() })?;
        let prog: &mut SchedClassifier = program.try_into().map_err(|e| program_error(name, e))?;
        prog.load().map_err(|e| program_error(name, e))?;
        let path = layout.program(n, name);
        prog.pin(&path).map_err(|e| pin_error(&path, e))?;
    }
    // tail-call slots: the fd of the target of this generation (the kernel
    // takes its own reference), written before the marker
    for (slot, name) in checked.tail_calls() {
        let program = ebpf.program(name).ok_or_else(|| LoaderError::ProgramMissing { program: name.clone() })?;
        let prog: &SchedClassifier = program.try_into().map_err(|e| program_error(name, e))?;
        let fd = prog.fd().map_err(|e| program_error(name, e))?.as_fd().as_raw_fd();
        let map_error = |operation, source| LoaderError::Map { map: slot.map.clone(), operation, source };
        let handle = MapHandle::open(&layout.map(n, &slot.map)).map_err(|e| map_error("opening its pin", e))?;
        let fd =
            u32::try_from(fd).map_err(|_| map_error("filling a tail-call slot", io::Error::other("negative fd")))?;
        handle
            .update(&slot.index.to_le_bytes(), &fd.to_le_bytes(), BPF_ANY)
            .map_err(|e| map_error("filling a tail-call slot", e))?;
    }

    write_info(layout, n, artifact)?;
    let meta = GenerationMeta {
        format: meta::META_FORMAT.to_owned(),
        generation: n,
        node: node.to_owned(),
        digest: artifact.digest().to_owned(),
        programs: artifact.manifest.programs.clone(),
        maps: artifact.manifest.maps.iter().map(|m| m.name.clone()).collect(),
        state: artifact.manifest.state.clone(),
    };
    let marker_path = layout.meta(n);
    let value = meta::encode(&meta).map_err(|source| LoaderError::Meta { path: marker_path.clone(), source })?;
    let marker = MapHandle::create_array(META_MAP_NAME, META_VALUE_SIZE, 1).map_err(|e| LoaderError::Map {
        map: META_MAP_NAME.into(),
        operation: "creating",
        source: e,
    })?;
    marker.update(&0u32.to_le_bytes(), &value, BPF_ANY).map_err(|e| LoaderError::Map {
        map: META_MAP_NAME.into(),
        operation: "writing",
        source: e,
    })?;
    // the commit point: from here on, gen-N is complete
    sys::obj_pin(marker.fd(), &marker_path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            LoaderError::PinConflict { path: marker_path.clone() }
        } else {
            LoaderError::bpffs(&marker_path, "pinning the marker", e)
        }
    })?;
    drop(ebpf);
    let loaded = open(layout, meta)?;
    undo.armed = false;
    Ok((loaded, state))
}

/// Pins `gen-N/info` (counter labels and decision table) if the artifact
/// has either: an ARRAY map created read-only for programs
/// (`BPF_F_RDONLY_PROG`), written, then frozen.
fn write_info(layout: &PinLayout, n: Generation, artifact: &egret_bpf::artifact::Artifact) -> Result<(), LoaderError> {
    let info = meta::GenerationInfo {
        counters: artifact.manifest.counters.clone(),
        decisions: artifact.manifest.decisions.clone(),
    };
    if info == meta::GenerationInfo::default() {
        return Ok(());
    }
    let path = layout.info(n);
    let chunks = meta::encode_info(&info).map_err(|source| LoaderError::Meta { path: path.clone(), source })?;
    let map_error = |operation, source| LoaderError::Map { map: meta::INFO_MAP_NAME.into(), operation, source };
    let count = u32::try_from(chunks.len()).map_err(|_| map_error("creating", io::Error::other("too large")))?;
    let h = MapHandle::create_array_flags(meta::INFO_MAP_NAME, meta::INFO_CHUNK, count, sys::BPF_F_RDONLY_PROG)
        .map_err(|e| map_error("creating", e))?;
    for (i, c) in chunks.iter().enumerate() {
        h.update(&(i as u32).to_le_bytes(), c, BPF_ANY).map_err(|e| map_error("writing", e))?;
    }
    h.freeze().map_err(|e| map_error("freezing", e))?;
    sys::obj_pin(h.fd(), &path).map_err(|e| LoaderError::bpffs(&path, "pinning", e))
}

/// `name` with a `'static` lifetime, as aya 0.14's `EbpfLoader<'static>`
/// requires for `map_pin_path`: each distinct map name is leaked once and
/// reused, so memory is bounded by the number of distinct names ever loaded.
fn static_name(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<BTreeSet<&'static str>> = std::sync::Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(s) = names.get(name) {
        return s;
    }
    let s: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(s);
    s
}

/// The aya loader the loader keeps: without target BTF. `EbpfLoader::new`
/// parses the kernel's BTF (`/sys/kernel/btf/vmlinux`, ~5 MB, ~25 ms here) for
/// CO-RE relocations, which egret's objects never have; creating it once and
/// dropping that BTF keeps it out of every swap.
pub(crate) fn ebpf_loader() -> EbpfLoader<'static> {
    let mut l = EbpfLoader::new();
    l.btf(None);
    l
}

/// Opens a complete generation's programs from their pins.
///
/// # Errors
/// A program pin that cannot be opened.
pub(crate) fn open(layout: &PinLayout, meta: GenerationMeta) -> Result<LoadedGeneration, LoaderError> {
    let n = meta.generation;
    let mut programs = BTreeMap::new();
    for spec in &meta.programs {
        // tail-call targets stay pinned (and referenced by their slots); only
        // attached programs need a handle, for links
        let Some(attach) = spec.attach else { continue };
        let path = layout.program(n, &spec.name);
        let prog = SchedClassifier::from_pin(&path).map_err(|e| program_error(&spec.name, e))?;
        let id = prog.info().map_err(|e| program_error(&spec.name, e))?.id();
        programs.insert(attach, LoadedProgram { name: spec.name.clone(), id, prog });
    }
    Ok(LoadedGeneration { meta, programs })
}

/// Deletes generation `n`: the marker first, then every other pin, then the
/// directories. Missing entries are fine (deleting twice is a no-op).
///
/// # Errors
/// A pin or directory that cannot be removed.
pub(crate) fn delete(layout: &PinLayout, n: Generation) -> Result<(), LoaderError> {
    let marker = layout.meta(n);
    match std::fs::remove_file(&marker) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(LoaderError::bpffs(&marker, "unpinning", e)),
    }
    let dir = layout.generation_dir(n);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LoaderError::bpffs(&dir, "removing", e)),
    }
}
