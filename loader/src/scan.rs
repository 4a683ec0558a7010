//! Reading the pinned state under a root (generations, their markers and
//! program ids, links and what they run) and deciding, as a pure function,
//! what a restarted loader does with it ([`plan_recovery`]).
//!
//! The kernel's link state is the truth about what serves traffic: a link
//! runs the program it runs, whatever any file says. A generation is
//! *complete* when its marker decodes (it is pinned last when building and
//! unpinned first when deleting), so a generation without one is a crash
//! leftover.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use egret_bpf::artifact::AttachPoint;

use crate::error::LoaderError;
use crate::meta::{self, GenerationMeta, META_VALUE_SIZE};
use crate::pins::{self, Generation, PinLayout};
use crate::sys::{self, LinkInfo, MapHandle};

/// One generation directory as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationScan {
    /// Its number.
    pub generation: Generation,
    /// The decoded marker, or why there is none (`None` marker = incomplete).
    pub meta: Result<GenerationMeta, String>,
    /// Pinned programs: name → kernel program id.
    pub programs: BTreeMap<String, u32>,
}

impl GenerationScan {
    /// True if the marker is present and decodes to this generation.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        matches!(&self.meta, Ok(m) if m.generation == self.generation)
    }

    /// Program id per attach point, for a complete generation.
    #[must_use]
    pub fn program_ids(&self) -> BTreeMap<AttachPoint, u32> {
        let Ok(m) = &self.meta else { return BTreeMap::new() };
        m.programs.iter().filter_map(|p| Some((p.attach?, *self.programs.get(&p.name)?))).collect()
    }
}

/// One link pin as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkScan {
    /// The pin.
    pub path: PathBuf,
    /// Attach point from the pin name.
    pub attach: AttachPoint,
    /// Ifindex from the pin name.
    pub ifindex: u32,
    /// The kernel's view, or why it could not be read.
    pub info: Result<LinkInfo, String>,
}

impl LinkScan {
    /// A link whose device is gone (the kernel reports ifindex 0).
    #[must_use]
    pub fn is_defunct(&self) -> bool {
        matches!(&self.info, Ok(i) if i.ifindex == 0)
    }
}

/// Everything under a root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    /// Generations, ascending.
    pub generations: Vec<GenerationScan>,
    /// Links, in pin name order.
    pub links: Vec<LinkScan>,
    /// Entries the loader did not create (unknown names under the root or `links/`).
    pub foreign: Vec<PathBuf>,
}

/// `(file name, path)` of every entry of `dir`, sorted; a missing directory is empty.
pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<(String, PathBuf)>, LoaderError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LoaderError::bpffs(dir, "reading directory", e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| LoaderError::bpffs(dir, "reading directory", e))?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    out.sort();
    Ok(out)
}

/// Reads a generation's marker.
pub fn read_meta(path: &Path) -> Result<GenerationMeta, String> {
    let h = MapHandle::open(path).map_err(|e| format!("no marker: {e}"))?;
    if h.info().value_size != META_VALUE_SIZE || h.info().key_size != 4 {
        return Err(format!("marker map has {}+{} bytes", h.info().key_size, h.info().value_size));
    }
    let v = h.lookup(&0u32.to_le_bytes()).map_err(|e| format!("reading marker: {e}"))?;
    let v = v.and_then(|mut v| v.pop()).ok_or("empty marker")?;
    meta::decode(&v).map_err(|e| e.to_string())
}

fn scan_generation(layout: &PinLayout, n: Generation) -> Result<GenerationScan, LoaderError> {
    let meta = read_meta(&layout.meta(n));
    let mut programs = BTreeMap::new();
    for (name, path) in read_dir_sorted(&layout.programs_dir(n))? {
        let Some(name) = pins::unescape_name(&name) else { continue };
        if let Ok(fd) = sys::obj_get(&path)
            && let Ok(id) = sys::prog_id(fd.as_fd())
        {
            programs.insert(name, id);
        }
    }
    Ok(GenerationScan { generation: n, meta, programs })
}

fn scan_link(path: &Path) -> Result<LinkInfo, String> {
    let fd = sys::obj_get(path).map_err(|e| format!("opening: {e}"))?;
    let info = sys::link_info(fd.as_fd()).map_err(|e| format!("link info: {e}"))?;
    if info.kind != sys::LINK_TYPE_TCX || info.attach_type != sys::TCX_INGRESS {
        return Err(format!("link type {} attach type {} is not tcx ingress", info.kind, info.attach_type));
    }
    Ok(info)
}

/// A link pin by name only (no syscalls): what a swap walks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPin {
    /// The pin.
    pub path: PathBuf,
    /// Attach point from the pin name.
    pub attach: AttachPoint,
    /// Ifindex from the pin name.
    pub ifindex: u32,
}

/// The link pins under `layout`'s root, in name order, without asking the kernel.
///
/// # Errors
/// Directory read failures.
pub fn link_pins(layout: &PinLayout) -> Result<Vec<LinkPin>, LoaderError> {
    Ok(read_dir_sorted(&layout.links_dir())?
        .into_iter()
        .filter_map(|(name, path)| {
            pins::parse_link_name(&name).map(|(attach, ifindex)| LinkPin { path, attach, ifindex })
        })
        .collect())
}

/// Reads the state under `layout`'s root. A missing root reads as empty.
///
/// # Errors
/// Directory read failures.
pub fn scan(layout: &PinLayout) -> Result<Scan, LoaderError> {
    let mut s = Scan::default();
    for (name, path) in read_dir_sorted(layout.root())? {
        if name == pins::LINKS_DIR || name == pins::STATE_DIR {
            continue;
        }
        match pins::parse_generation_dir(&name) {
            Some(n) => s.generations.push(scan_generation(layout, n)?),
            None => s.foreign.push(path),
        }
    }
    s.generations.sort_by_key(|g| g.generation);
    for (name, path) in read_dir_sorted(&layout.links_dir())? {
        match pins::parse_link_name(&name) {
            Some((attach, ifindex)) => {
                let info = scan_link(&path);
                s.links.push(LinkScan { path, attach, ifindex, info });
            }
            None => s.foreign.push(path),
        }
    }
    Ok(s)
}

/// What a restarted loader does with the state it found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryPlan {
    /// The generation to adopt as running.
    pub running: Option<Generation>,
    /// Links (indexes into [`Scan::links`]) running another generation's
    /// program, to be moved to the running one (finishing an interrupted swap).
    pub roll_forward: Vec<usize>,
    /// Links to release: their device is gone, or the running generation has
    /// no program for their attach point (an interrupted swap was about to
    /// release them).
    pub release: Vec<usize>,
    /// Generations to delete: every one but the running one, unless a link
    /// that stays as it is still runs it.
    pub delete: Vec<Generation>,
}

/// Which generation a program id belongs to.
#[must_use]
pub fn generation_of(scan: &Scan, prog_id: u32) -> Option<Generation> {
    scan.generations.iter().find(|g| g.programs.values().any(|id| *id == prog_id)).map(|g| g.generation)
}

/// The generation that serves traffic: the newest complete generation that a
/// live link runs; with no such link, the newest complete generation.
#[must_use]
pub fn running_generation(scan: &Scan) -> Option<Generation> {
    let complete: BTreeSet<Generation> =
        scan.generations.iter().filter(|g| g.is_complete()).map(|g| g.generation).collect();
    let referenced = scan
        .links
        .iter()
        .filter(|l| !l.is_defunct())
        .filter_map(|l| l.info.as_ref().ok())
        .filter_map(|i| generation_of(scan, i.prog_id))
        .filter(|g| complete.contains(g))
        .max();
    referenced.or_else(|| complete.last().copied())
}

/// The number the next generation gets: one past every generation found
/// (complete or not), 1 under an empty root. Numbers of deleted generations
/// may be reused after a restart; numbers of pinned ones never are.
#[must_use]
pub fn next_generation(scan: &Scan) -> Generation {
    scan.generations.iter().map(|g| g.generation).max().unwrap_or(Generation(0)).next()
}

/// Decides recovery (pure). Never detaches a live link that the running
/// generation has a program for; links the kernel cannot describe are left alone.
#[must_use]
pub fn plan_recovery(scan: &Scan) -> RecoveryPlan {
    let mut plan = RecoveryPlan { running: running_generation(scan), ..RecoveryPlan::default() };
    let running_programs = plan
        .running
        .and_then(|r| scan.generations.iter().find(|g| g.generation == r))
        .map(GenerationScan::program_ids)
        .unwrap_or_default();
    let mut still_used = BTreeSet::new();
    for (i, l) in scan.links.iter().enumerate() {
        let Ok(info) = &l.info else {
            continue;
        };
        if l.is_defunct() {
            plan.release.push(i);
            continue;
        }
        let current = generation_of(scan, info.prog_id);
        match plan.running {
            Some(r) if current == Some(r) => {}
            Some(_) if running_programs.contains_key(&l.attach) => plan.roll_forward.push(i),
            Some(_) => plan.release.push(i),
            None => {
                if let Some(g) = current {
                    still_used.insert(g);
                }
            }
        }
    }
    plan.delete = scan
        .generations
        .iter()
        .map(|g| g.generation)
        .filter(|g| Some(*g) != plan.running && !still_used.contains(g))
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::META_FORMAT;
    use egret_bpf::artifact::ProgramSpec;

    const POD: AttachPoint = AttachPoint::PodVethIngress;
    const TUN: AttachPoint = AttachPoint::TunnelIngress;

    /// Generation `n` with programs `pod` (id n*10+1) and `tun` (id n*10+2) at the given points.
    fn generation(n: u64, complete: bool, points: &[AttachPoint]) -> GenerationScan {
        let programs: Vec<ProgramSpec> =
            points.iter().map(|a| ProgramSpec::attached(pins::attach_point_name(*a).replace('-', "_"), *a)).collect();
        let ids = programs.iter().enumerate().map(|(i, p)| (p.name.clone(), (n * 10 + 1 + i as u64) as u32)).collect();
        let meta = if complete {
            Ok(GenerationMeta {
                format: META_FORMAT.into(),
                generation: Generation(n),
                node: "n".into(),
                digest: format!("d{n}"),
                programs,
                maps: vec![],
                state: vec![],
            })
        } else {
            Err("no marker".into())
        };
        GenerationScan { generation: Generation(n), meta, programs: ids }
    }

    fn link(attach: AttachPoint, ifindex: u32, prog_id: u32, live: bool) -> LinkScan {
        LinkScan {
            path: PathBuf::from(format!("/r/links/{}", pins::link_name(attach, ifindex))),
            attach,
            ifindex,
            info: Ok(LinkInfo {
                kind: sys::LINK_TYPE_TCX,
                id: ifindex + 100,
                prog_id,
                ifindex: if live { ifindex } else { 0 },
                attach_type: sys::TCX_INGRESS,
            }),
        }
    }

    fn scan_of(generations: Vec<GenerationScan>, links: Vec<LinkScan>) -> Scan {
        Scan { generations, links, foreign: vec![] }
    }

    #[test]
    fn empty_root() {
        assert_eq!(plan_recovery(&Scan::default()), RecoveryPlan::default());
        assert_eq!(next_generation(&Scan::default()), Generation(1));
    }

    #[test]
    fn next_generation_skips_every_pinned_number() {
        let s = scan_of(vec![generation(3, true, &[POD]), generation(9, false, &[POD])], vec![]);
        assert_eq!(next_generation(&s), Generation(10));
    }

    #[test]
    fn steady_state_keeps_everything() {
        let s = scan_of(vec![generation(3, true, &[POD, TUN])], vec![link(POD, 5, 31, true), link(TUN, 2, 32, true)]);
        let p = plan_recovery(&s);
        assert_eq!(p, RecoveryPlan { running: Some(Generation(3)), ..RecoveryPlan::default() });
    }

    #[test]
    fn half_built_generation_is_deleted() {
        let s = scan_of(vec![generation(3, true, &[POD]), generation(4, false, &[POD])], vec![link(POD, 5, 31, true)]);
        let p = plan_recovery(&s);
        assert_eq!(p.running, Some(Generation(3)));
        assert_eq!(p.delete, vec![Generation(4)]);
        assert!(p.roll_forward.is_empty() && p.release.is_empty());
    }

    #[test]
    fn complete_but_unswapped_generation_is_deleted() {
        let s = scan_of(
            vec![generation(3, true, &[POD]), generation(4, true, &[POD])],
            vec![link(POD, 5, 31, true), link(POD, 6, 31, true)],
        );
        let p = plan_recovery(&s);
        assert_eq!(p.running, Some(Generation(3)));
        assert_eq!(p.delete, vec![Generation(4)]);
    }

    #[test]
    fn interrupted_swap_rolls_forward() {
        let s = scan_of(
            vec![generation(3, true, &[POD, TUN]), generation(4, true, &[POD])],
            vec![link(POD, 5, 41, true), link(POD, 6, 31, true), link(TUN, 2, 32, true)],
        );
        let p = plan_recovery(&s);
        assert_eq!(p.running, Some(Generation(4)));
        assert_eq!(p.roll_forward, vec![1]);
        // generation 4 has no tunnel program: the swap was about to release that link
        assert_eq!(p.release, vec![2]);
        assert_eq!(p.delete, vec![Generation(3)]);
    }

    #[test]
    fn interrupted_delete_is_finished() {
        // generation 3's marker went first; all links already run 4
        let s = scan_of(vec![generation(3, false, &[POD]), generation(4, true, &[POD])], vec![link(POD, 5, 41, true)]);
        let p = plan_recovery(&s);
        assert_eq!(p.running, Some(Generation(4)));
        assert_eq!(p.delete, vec![Generation(3)]);
    }

    #[test]
    fn defunct_links_are_released() {
        let s = scan_of(vec![generation(3, true, &[POD])], vec![link(POD, 5, 31, false), link(POD, 6, 31, true)]);
        let p = plan_recovery(&s);
        assert_eq!(p.release, vec![0]);
        assert!(p.roll_forward.is_empty());
    }

    #[test]
    fn no_links_adopts_the_newest_complete_generation() {
        let s = scan_of(
            vec![generation(3, true, &[POD]), generation(4, true, &[POD]), generation(5, false, &[POD])],
            vec![],
        );
        let p = plan_recovery(&s);
        assert_eq!(p.running, Some(Generation(4)));
        assert_eq!(p.delete, vec![Generation(3), Generation(5)]);
    }

    #[test]
    fn unknown_programs_roll_forward_and_unreadable_links_are_left_alone() {
        let mut unreadable = link(POD, 7, 0, true);
        unreadable.info = Err("link type 1 is not tcx".into());
        let s = scan_of(vec![generation(3, true, &[POD])], vec![link(POD, 5, 999, true), unreadable]);
        let p = plan_recovery(&s);
        assert_eq!(p.running, Some(Generation(3)));
        assert_eq!(p.roll_forward, vec![0]);
        assert!(p.release.is_empty());
    }

    #[test]
    fn without_a_complete_generation_nothing_referenced_is_deleted() {
        let s = scan_of(vec![generation(3, false, &[POD]), generation(4, false, &[POD])], vec![link(POD, 5, 31, true)]);
        let p = plan_recovery(&s);
        assert_eq!(p.running, None);
        assert_eq!(p.delete, vec![Generation(4)]);
    }

    #[test]
    fn marker_for_another_generation_is_incomplete() {
        let mut g = generation(3, true, &[POD]);
        if let Ok(m) = &mut g.meta {
            m.generation = Generation(9);
        }
        assert!(!g.is_complete());
    }
}
