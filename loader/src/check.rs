//! Pure checks of an artifact before anything touches the kernel: the
//! manifest agrees with the object (programs, attach points, map geometry,
//! hole sources). A generation is built only from a [`CheckedArtifact`].
//!
//! Checked, in order (the first failure is returned):
//! 1. `Artifact::check`: format, digest, map image entry sizes and counts;
//! 2. the node, if the loader serves a named node;
//! 3. the object parses (`egret_bpf::elf::read_object`);
//! 4. programs: every manifest program is in the object, every object program
//!    is in the manifest, at most one program per attach point, every program
//!    has an attach point or a tail-call slot (or both);
//! 5. maps: one image per object map, none for maps the object lacks, and each
//!    image's kind, key size, value size, capacity and flags equal the object's;
//!    `prog_array` images are empty (their slots hold program fds, which only
//!    the loader knows);
//! 6. tail-call slots: each names a `prog_array` map of the object, an index
//!    below its capacity, and no slot is named twice;
//! 7. holes: every hole of every program has exactly one source.

use std::collections::{BTreeMap, BTreeSet};

use egret_bpf::artifact::{Artifact, AttachPoint, HoleSource, ImageMismatch, TailCallSlot, check_images};
use egret_bpf::elf::{ParsedObject, read_object};
use egret_bpf::maps::MapKind;

use crate::error::LoaderError;
use crate::pins::attach_point_name;

/// A map image's entries, decoded: (key bytes, value bytes).
pub type ImageEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// A map image, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedImage {
    /// Map name.
    pub name: String,
    /// Entries in manifest order.
    pub entries: ImageEntries,
}

/// An artifact that passed every check, with what the checks computed.
#[derive(Debug, Clone)]
pub struct CheckedArtifact<'a> {
    artifact: &'a Artifact,
    /// Program per attach point.
    programs: BTreeMap<AttachPoint, String>,
    /// Every program of the manifest, in manifest order (attached or not).
    all_programs: Vec<String>,
    /// Tail-call slot → the program that fills it.
    tail_calls: BTreeMap<TailCallSlot, String>,
    /// Decoded map images in manifest order.
    images: Vec<DecodedImage>,
    /// Hole name → source.
    holes: BTreeMap<String, HoleSource>,
}

impl<'a> CheckedArtifact<'a> {
    /// The artifact.
    #[must_use]
    pub fn artifact(&self) -> &'a Artifact {
        self.artifact
    }

    /// Program name per attach point.
    #[must_use]
    pub fn programs(&self) -> &BTreeMap<AttachPoint, String> {
        &self.programs
    }

    /// Every program to load, in manifest order (attached and tail-call targets).
    #[must_use]
    pub fn all_programs(&self) -> &[String] {
        &self.all_programs
    }

    /// Tail-call slots and the program each is filled with.
    #[must_use]
    pub fn tail_calls(&self) -> &BTreeMap<TailCallSlot, String> {
        &self.tail_calls
    }

    /// Decoded map images, in manifest order.
    #[must_use]
    pub fn images(&self) -> &[DecodedImage] {
        &self.images
    }

    /// Sources of the holes the object's programs contain.
    #[must_use]
    pub fn holes(&self) -> &BTreeMap<String, HoleSource> {
        &self.holes
    }
}

/// Checks an artifact (see the module doc). `node`: the node this loader
/// serves, if it is pinned to one.
///
/// # Errors
/// The first failed check, as its own [`LoaderError`] variant.
pub fn check_artifact<'a>(artifact: &'a Artifact, node: Option<&str>) -> Result<CheckedArtifact<'a>, LoaderError> {
    artifact.check().map_err(|source| LoaderError::InvalidArtifact { source })?;
    let m = &artifact.manifest;
    if let Some(node) = node
        && node != m.node
    {
        return Err(LoaderError::WrongNode { artifact: m.node.clone(), loader: node.to_owned() });
    }
    let parsed = read_object(&artifact.object).map_err(|source| LoaderError::CorruptObject { source })?;
    let programs = check_programs(artifact, &parsed)?;
    let images = check_maps(artifact, &parsed)?;
    let tail_calls = check_tail_calls(artifact, &parsed)?;
    let holes = check_holes(artifact, &parsed)?;
    let all_programs = m.programs.iter().map(|p| p.name.clone()).collect();
    Ok(CheckedArtifact { artifact, programs, all_programs, tail_calls, images, holes })
}

fn check_programs(artifact: &Artifact, parsed: &ParsedObject) -> Result<BTreeMap<AttachPoint, String>, LoaderError> {
    let in_object: BTreeSet<&str> = parsed.programs.iter().map(|p| p.program.name.as_str()).collect();
    let mut by_attach: BTreeMap<AttachPoint, String> = BTreeMap::new();
    for spec in &artifact.manifest.programs {
        if !in_object.contains(spec.name.as_str()) {
            return Err(LoaderError::ProgramMissing { program: spec.name.clone() });
        }
        let Some(attach) = spec.attach else {
            if spec.tail_call.is_none() {
                return Err(LoaderError::ProgramUnused { program: spec.name.clone() });
            }
            continue;
        };
        if let Some(first) = by_attach.get(&attach) {
            return Err(LoaderError::DuplicateAttachPoint {
                attach: attach_point_name(attach),
                first: first.clone(),
                second: spec.name.clone(),
            });
        }
        by_attach.insert(attach, spec.name.clone());
    }
    let listed: BTreeSet<&str> = artifact.manifest.programs.iter().map(|p| p.name.as_str()).collect();
    if let Some(extra) = in_object.iter().find(|p| !listed.contains(*p)) {
        return Err(LoaderError::ProgramUnlisted { program: (*extra).to_owned() });
    }
    Ok(by_attach)
}

fn check_maps(artifact: &Artifact, parsed: &ParsedObject) -> Result<Vec<DecodedImage>, LoaderError> {
    check_images(&artifact.manifest.maps, &parsed.maps).map_err(|e| match e {
        ImageMismatch::Unknown { map } => LoaderError::MapImageUnknown { map },
        ImageMismatch::Missing { map } => LoaderError::MapImageMissing { map },
        ImageMismatch::Field { map, field, image, object } => {
            LoaderError::MapImageMismatch { map, field, image, object }
        }
    })?;
    let mut images = Vec::new();
    for img in &artifact.manifest.maps {
        let entries = img.decoded().map_err(|source| LoaderError::InvalidArtifact { source })?;
        let prog_array = parsed.maps.iter().any(|d| d.name == img.name && d.kind == MapKind::ProgArray);
        if prog_array && !entries.is_empty() {
            return Err(LoaderError::ProgArrayImage { map: img.name.clone(), entries: entries.len() });
        }
        images.push(DecodedImage { name: img.name.clone(), entries });
    }
    Ok(images)
}

fn check_tail_calls(artifact: &Artifact, parsed: &ParsedObject) -> Result<BTreeMap<TailCallSlot, String>, LoaderError> {
    let mut slots = BTreeMap::new();
    for spec in &artifact.manifest.programs {
        let Some(slot) = &spec.tail_call else { continue };
        let invalid = |reason: String| LoaderError::TailCallInvalid {
            program: spec.name.clone(),
            map: slot.map.clone(),
            index: slot.index,
            reason,
        };
        let Some(def) = parsed.maps.iter().find(|d| d.name == slot.map) else {
            return Err(invalid("the object has no such map".into()));
        };
        if def.kind != MapKind::ProgArray {
            return Err(invalid(format!("the map is a {}, not a prog_array", def.kind.name())));
        }
        if slot.index >= def.max_entries {
            return Err(invalid(format!("index out of range (max_entries {})", def.max_entries)));
        }
        if let Some(first) = slots.insert(slot.clone(), spec.name.clone()) {
            return Err(invalid(format!("the slot is already filled by `{first}`")));
        }
    }
    Ok(slots)
}

fn check_holes(artifact: &Artifact, parsed: &ParsedObject) -> Result<BTreeMap<String, HoleSource>, LoaderError> {
    let mut sources: BTreeMap<String, HoleSource> = BTreeMap::new();
    for h in &artifact.manifest.holes {
        if sources.insert(h.name.clone(), h.source.clone()).is_some() {
            return Err(LoaderError::HoleDuplicate { hole: h.name.clone() });
        }
    }
    let used: BTreeSet<&str> =
        parsed.programs.iter().flat_map(|p| p.program.holes.iter().map(|h| h.name.as_str())).collect();
    if let Some(hole) = used.iter().find(|h| !sources.contains_key(**h)) {
        return Err(LoaderError::HoleUnsourced { hole: (*hole).to_owned() });
    }
    // sources for holes the object does not have are harmless but unused
    sources.retain(|name, _| used.contains(name.as_str()));
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{DemoSpec, TAIL_MAP, TAIL_TARGET_PROGRAM, Verdict, demo_artifact, tail_call_artifact};
    use egret_bpf::artifact::{HoleSpec, MapImage, ProgramSpec};
    use std::net::Ipv4Addr;

    fn sample() -> Artifact {
        demo_artifact(&DemoSpec::new("n1", 0xa).verdict(Ipv4Addr::new(203, 0, 113, 1), Verdict::Pass))
            .expect("demo builds")
    }

    /// Rebuilds an artifact with a changed manifest (recomputing the digest).
    fn remade(a: &Artifact, f: impl FnOnce(&mut Vec<ProgramSpec>, &mut Vec<HoleSpec>, &mut Vec<MapImage>)) -> Artifact {
        let mut programs = a.manifest.programs.clone();
        let mut holes = a.manifest.holes.clone();
        let mut maps = a.manifest.maps.clone();
        f(&mut programs, &mut holes, &mut maps);
        Artifact::new(&a.manifest.node, a.object.clone(), programs, holes, maps)
    }

    #[test]
    fn demo_artifact_passes() {
        let a = sample();
        let c = check_artifact(&a, Some("n1")).expect("checks");
        assert_eq!(c.programs().len(), 2);
        assert_eq!(c.images().len(), 2);
        assert!(c.holes().contains_key("gen_tag"));
        assert!(c.holes().contains_key("marker_ifindex"));
    }

    #[test]
    fn tail_call_targets_are_checked() {
        let a = tail_call_artifact("n1", 1).expect("demo builds");
        let c = check_artifact(&a, None).expect("checks");
        assert_eq!(c.programs().len(), 1, "only the entry is attached");
        assert_eq!(c.all_programs().len(), 2);
        let slot = TailCallSlot { map: TAIL_MAP.into(), index: 0 };
        assert_eq!(c.tail_calls().get(&slot).map(String::as_str), Some(TAIL_TARGET_PROGRAM));

        let r = remade(&a, |p, _, _| p[1].tail_call = Some(TailCallSlot { map: "nope".into(), index: 0 }));
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::TailCallInvalid { map, .. }) if map == "nope"));
        let r = remade(&a, |p, _, _| p[1].tail_call = Some(TailCallSlot { map: TAIL_MAP.into(), index: 2 }));
        assert!(
            matches!(check_artifact(&r, None), Err(LoaderError::TailCallInvalid { reason, .. }) if reason.contains("range"))
        );
        let r = remade(&a, |p, _, _| p[0].tail_call = Some(TailCallSlot { map: TAIL_MAP.into(), index: 0 }));
        assert!(
            matches!(check_artifact(&r, None), Err(LoaderError::TailCallInvalid { reason, .. }) if reason.contains("already"))
        );
        // a slot written as raw bytes would be an fd of nobody knows what
        let r = remade(&a, |_, _, m| m[0].push(&0u32.to_le_bytes(), &3u32.to_le_bytes()));
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::ProgArrayImage { entries: 1, .. })));
        let r = remade(&a, |p, _, _| p[1].tail_call = None);
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::ProgramUnused { .. })));

        // a target that is not a prog_array
        let d = sample();
        let r = remade(&d, |p, _, _| p[1].tail_call = Some(TailCallSlot { map: "verdicts".into(), index: 0 }));
        assert!(
            matches!(check_artifact(&r, None), Err(LoaderError::TailCallInvalid { reason, .. }) if reason.contains("not a prog_array"))
        );
    }

    #[test]
    fn each_failure_has_its_variant() {
        let a = sample();
        assert!(matches!(check_artifact(&a, Some("n2")), Err(LoaderError::WrongNode { .. })));

        let mut tampered = a.clone();
        tampered.object[0] ^= 1;
        assert!(matches!(check_artifact(&tampered, None), Err(LoaderError::InvalidArtifact { .. })));

        let garbage = Artifact::new("n1", b"not an elf".to_vec(), vec![], vec![], vec![]);
        assert!(matches!(check_artifact(&garbage, None), Err(LoaderError::CorruptObject { .. })));

        let r = remade(&a, |p, _, _| p.push(ProgramSpec::attached("nope", AttachPoint::EgressIngress)));
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::ProgramMissing { program }) if program == "nope"));

        let r = remade(&a, |p, _, _| {
            p.pop();
        });
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::ProgramUnlisted { .. })));

        let r = remade(&a, |p, _, _| p[1].attach = p[0].attach);
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::DuplicateAttachPoint { .. })));

        // entries sized for the old geometry fail the artifact's own check first
        let r = remade(&a, |_, _, m| m[0].value_size += 4);
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::InvalidArtifact { .. })));
        let r = remade(&a, |_, _, m| m[1].value_size += 4);
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::MapImageMismatch { field: "value_size", .. })));

        let r = remade(&a, |_, _, m| m[0].max_entries += 1);
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::MapImageMismatch { field: "max_entries", .. })));

        let r = remade(&a, |_, _, m| m[0].kind = "lru_hash".into());
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::MapImageMismatch { field: "kind", .. })));

        let r = remade(&a, |_, _, m| m[0].name = "other_plan".into());
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::MapImageUnknown { map }) if map == "other_plan"));

        let r = remade(&a, |_, _, m| {
            m.pop();
        });
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::MapImageMissing { .. })));

        let r = remade(&a, |p, _, _| p[1].attach = None);
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::ProgramUnused { .. })));

        let r = remade(&a, |_, h, _| h.retain(|h| h.name != "gen_tag"));
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::HoleUnsourced { hole }) if hole == "gen_tag"));

        let r = remade(&a, |_, h, _| {
            let dup = h[0].clone();
            h.push(dup);
        });
        assert!(matches!(check_artifact(&r, None), Err(LoaderError::HoleDuplicate { .. })));
    }
}
