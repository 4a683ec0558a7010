//! eBPF code generation: a verified plan becomes the `egret_src` classifier
//! (in a section named `classifier`), attached by the loader at tcx ingress of
//! every local pod's host-side veth, plus the images of its maps, as an
//! [`egret_bpf::artifact::Artifact`]. No LLVM: instructions are emitted with
//! [`egret_bpf::ProgramBuilder`].
//!
//! What the classifier does with a frame (SEMANTICS.md, "The decision for one
//! packet", for the endpoints of this node):
//! 1. Ethernet, optionally one 802.1Q tag in the frame (a tag that tc keeps
//!    in `skb->vlan_tci` needs nothing). Not IPv4/IPv6 → pass (`non-ip`); an
//!    IP ethertype with a truncated header → pass (`pass-malformed`). Passing
//!    returns `TC_ACT_UNSPEC` (-1, `TCX_NEXT`), so a CNI's programs keep working.
//! 2. Source address → class; not a local endpoint with rules → pass.
//! 3. Cluster-internal destination → pass.
//! 4. (class, destination) → the longest-prefix-match entry of the plan:
//!    pass; **drop** (`TC_ACT_SHOT`); **redirect**: a TCP SYN's MSS option is
//!    clamped for the tunnel ([`mss`]: `%mss_v4`/`%mss_v6`, 1410/1390 for a
//!    1500-byte underlay), then `bpf_skb_set_tunnel_key`
//!    with `remote_ipv4` = gateway IPv4 in host byte order, `tunnel_id` =
//!    slot (VNI), `tunnel_ttl` = 64, then `bpf_redirect(%tunnel_ifindex, 0)`
//!    into `egret0`; **local egress** (this node is the gateway):
//!    `skb->cb[0]` = slot, tail call of `egret_gw_progs[0]`, where the loader
//!    puts the gateway program. **Until a gateway program is loaded there,
//!    the tail call falls through and local-egress traffic is dropped and
//!    counted as `drop-no-gateway-program`.**
//! 5. Every packet is counted in `egret_reasons` ([`reasons::Reason`]) and,
//!    when a non-`pass` plan entry decided it, in `egret_policy_stats` at
//!    that entry's rule index ([`partition::rules`]). The manifest labels
//!    each rule with its text and, when the artifact was checked against the
//!    cluster, the policies whose traffic it counts (`counters`). Rules are
//!    counted rather than policies because minimized plan entries may serve
//!    several policies with the same action.
//!
//! Two layouts, chosen per node by [`choose_layout`] (a measured threshold,
//! [`INLINE_MAX_LEAVES`], docs/PERFORMANCE.md): [`Layout::Inline`] compiles
//! the tables into compare-and-branch binary search trees (sorted endpoint
//! IPs; per class and family the disjoint interval partition of the LPM
//! table, [`partition::partition`]) with no map lookup; [`Layout::Maps`]
//! finds the source's class with the same tree and the outcome with one
//! lookup in `egret_dst_v4/v6` (LPM tries keyed by class and address whose
//! values are the outcomes, [`tables`]). Map layouts, registers and stack
//! use are in [`tables`] and the emitter's documentation.
//!
//! `egret verify DIR` (and `egret-loader apply`) accept an artifact on disk
//! only whole ([`rederive`]): the node's three files are there and name it;
//! every program, map, image, hole, attach point and tail call equals what
//! this module generates for the plan (`NODE.plan.txt`, read back by
//! [`plan_text`] and verified, or a fresh plan from the cluster, which the
//! stored text must equal); then the static verifier and the equivalence
//! checker run on it.
//!
//! Contract: [`verified_classifier`] returns an artifact only after the static verifier
//! (`egret_bpf::elf::verify_and_write`) and the equivalence checker
//! ([`equiv::check`]) accepted it; [`write()`] takes only that
//! [`equiv::VerifiedArtifact`]. Output is deterministic.

pub mod admit;
pub mod decisions;
mod emit;
pub mod equiv;
pub mod inspect;
pub mod mss;
pub mod node;
pub mod partition;
pub mod plan_text;
pub mod reasons;
pub mod rederive;
pub mod tables;

use crate::plan::{Plan, Verified};
use crate::resolve::World;
use egret_bpf::artifact::{self, Artifact, AttachPoint, HoleSource, HoleSpec, MapImage, ProgramSpec};
use egret_bpf::disasm::{self, Dialect};
use egret_bpf::elf::{self, ElfError};
use egret_bpf::maps::MapDefError;
use egret_bpf::{BuildErrors, MapDef, Program};
use partition::Rules;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The classifier's program (function) name.
pub const PROGRAM: &str = "egret_src";
/// The hole holding `egret0`'s ifindex (the same hole as the gateway templates').
pub use egret_bpf::templates::HOLE_TUNNEL_IFINDEX;
/// egret's tunnel device.
pub const TUNNEL_LINK: &str = "egret0";
/// License of the object (GPL-compatible: every helper is allowed).
pub const LICENSE: &str = elf::DEFAULT_LICENSE;

/// The inline layout is used up to this many tree leaves
/// ([`partition::inline_size`]); above it, the maps layout. Measured with
/// `BPF_PROG_TEST_RUN` by `egret-bench layouts` (docs/PERFORMANCE.md,
/// "Inline trees of any size"): with long jumps (`gotol`) the inline layout
/// has no jump-range limit and is 3–4× faster per packet than the
/// (one-lookup) maps layout at every size measured (up to ~57,000 leaves),
/// but its program, kernel load time (~12–21 µs per leaf) and kernel
/// verifier work (~10 processed instructions per leaf, against the limit of
/// 1,000,000) grow with the tables. At 32,768 leaves an IPv6 program has
/// ~330k instructions, the kernel verifier processes ~1/3 of its limit and
/// loads it in ~0.5–0.7 s (maps: ~0.1 s); IPv6 inline programs pass the
/// 1,000,000-instruction program limit near ~100,000 leaves. If an inline
/// program cannot be built anyway, the automatic choice falls back to the
/// maps layout.
pub const INLINE_MAX_LEAVES: usize = 32_768;

/// How a node's tables are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layout {
    /// Compare-and-branch trees, no map lookups.
    Inline,
    /// The endpoint tree, then one LPM trie lookup per packet.
    Maps,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Inline => "inline",
            Layout::Maps => "maps",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Code generation options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Force a layout (`None`: [`choose_layout`]).
    pub layout: Option<Layout>,
    /// Compare at most this many packets with `eval::decide` in [`verified_classifier`]
    /// (`None`: every packet; see [`equiv::CheckOptions`]).
    pub reference_limit: Option<usize>,
    /// The MSS clamp of redirected TCP SYNs ([`mss`]; default
    /// [`mss::MssClamp::DEFAULT`], for a 1500-byte underlay). `None` emits
    /// no clamping code (for measurements).
    pub mss_clamp: Option<mss::MssClamp>,
}

impl Default for Options {
    fn default() -> Options {
        Options { layout: None, reference_limit: None, mss_clamp: Some(mss::MssClamp::DEFAULT) }
    }
}

/// Why code generation failed (all are compiler bugs or unsupported input,
/// never the user's policies).
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("cannot build the classifier: {source}")]
    Build { source: BuildErrors },
    #[error("invalid map: {source}")]
    Map {
        #[from]
        source: MapDefError,
    },
    #[error("cannot write the object: {source}")]
    Elf {
        #[from]
        source: ElfError,
    },
    #[error("slot id {slot:#x} does not fit the 24-bit VNI")]
    SlotTooWide { slot: u32 },
    #[error("equivalence check failed: {source}")]
    Equivalence {
        #[from]
        source: Box<equiv::EquivError>,
    },
    #[error("{source}")]
    Artifact {
        #[from]
        source: artifact::ArtifactError,
    },
    #[error("cannot write `{path}`: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("map `{map}` is defined by both the classifier and the gateway templates")]
    MapClash { map: String },
    #[error("gateway template `{program}` does not assemble: {message}")]
    Template { program: &'static str, message: String },
}

/// A generated classifier, before verification.
#[derive(Debug, Clone)]
pub struct Generated {
    pub node: String,
    pub layout: Layout,
    pub program: Program,
    /// Every map the object defines, in `.maps` order.
    pub maps: Vec<MapDef>,
    pub images: Vec<MapImage>,
    pub rules: Rules,
    /// Slot index → what the instruction tests or does, in plan terms.
    pub notes: BTreeMap<usize, String>,
    /// The MSS clamp the program applies (its holes' values), if any.
    pub mss_clamp: Option<mss::MssClamp>,
}

/// The layout for a plan: inline up to [`INLINE_MAX_LEAVES`] tree leaves.
pub fn choose_layout(plan: &Plan) -> Layout {
    let rules = partition::rules(plan);
    if partition::inline_size_up_to(plan, &rules, INLINE_MAX_LEAVES) <= INLINE_MAX_LEAVES {
        Layout::Inline
    } else {
        Layout::Maps
    }
}

/// Generates the classifier and map images of a verified plan.
///
/// # Errors
/// [`CodegenError`] (a jump out of range, an invalid map, a slot wider than 24 bits).
pub fn generate(plan: &Verified<Plan>, options: &Options) -> Result<Generated, CodegenError> {
    generate_unchecked(plan, options)
}

/// [`generate`] for a plan whose invariants the caller vouches for (the
/// equivalence checker re-derives the program from a stored plan text).
pub(crate) fn generate_unchecked(plan: &Plan, options: &Options) -> Result<Generated, CodegenError> {
    let rules = partition::rules(plan);
    let clamp = options.mss_clamp.is_some();
    let (layout, emitted) = match options.layout {
        Some(layout) => (layout, emit::emit(plan, &rules, layout, clamp)?),
        None => match choose_layout(plan) {
            Layout::Maps => (Layout::Maps, emit::emit(plan, &rules, Layout::Maps, clamp)?),
            Layout::Inline => match emit::emit(plan, &rules, Layout::Inline, clamp) {
                Ok(e) => (Layout::Inline, e),
                // (long jumps leave none known below the threshold) the maps layout has no tree to lay out
                Err(CodegenError::Build { .. }) => (Layout::Maps, emit::emit(plan, &rules, Layout::Maps, clamp)?),
                Err(e) => return Err(e),
            },
        },
    };
    let maps = tables::map_defs(plan, &rules, layout)?;
    let images = tables::images(plan, &rules, &maps);
    Ok(Generated {
        node: plan.node.clone(),
        layout,
        program: emitted.program,
        maps,
        images,
        rules,
        notes: emitted.notes,
        mss_clamp: options.mss_clamp,
    })
}

impl Generated {
    /// The artifact: the object (statically verified by
    /// [`elf::verify_and_write`]) and its manifest, counter labels without
    /// policy attribution.
    ///
    /// # Errors
    /// Static verification failures (every violation) or writer failures.
    pub fn artifact(&self, plan: &Plan) -> Result<Artifact, CodegenError> {
        let object = elf::verify_and_write(std::slice::from_ref(&self.program), &self.maps, LICENSE)?;
        Ok(Artifact::new(
            &self.node,
            object,
            vec![ProgramSpec::attached(PROGRAM, AttachPoint::PodVethIngress)],
            self.hole_specs(),
            self.images.clone(),
        )
        .with_counters(tables::counter_labels(plan, &self.rules, &BTreeMap::new()))
        .with_state([tables::REASONS])
        .with_decisions(decisions::decision_table(plan, None, self.layout.as_str())))
    }

    /// The manifest's holes: `%tunnel_ifindex` (the ifindex of `egret0`)
    /// and, when the program clamps, `%mss_v4`/`%mss_v6` ([`mss::hole_specs`]).
    pub fn hole_specs(&self) -> Vec<HoleSpec> {
        let mut holes = vec![HoleSpec {
            name: HOLE_TUNNEL_IFINDEX.into(),
            source: HoleSource::Ifindex { link: TUNNEL_LINK.into() },
        }];
        holes.extend(self.mss_clamp.map(mss::hole_specs).unwrap_or_default());
        holes
    }

    /// The program as re-assemblable assembly (`--emit asm`): `.map`
    /// directives, then the instructions as [`disasm::to_asm`] prints them
    /// (labels, `map[name]`, `%holes`), each with its plan annotation as a
    /// `;` comment.
    pub fn asm(&self) -> String {
        asm_text(&self.program, &self.maps, &self.notes)
    }
}

/// `.map` directives for `maps`, then the program's re-assemblable text with
/// `notes` (slot index → text) as end-of-line comments.
pub fn asm_text(program: &Program, maps: &[MapDef], notes: &BTreeMap<usize, String>) -> String {
    let mut s = format!("; egret classifier `{}`\n", program.name);
    for m in maps {
        s.push_str(&format!(
            ".map {}, {}, key_size={}, value_size={}, max_entries={}",
            m.name, m.kind, m.key_size, m.value_size, m.max_entries
        ));
        if m.flags != 0 {
            s.push_str(&format!(", flags={}", m.flags));
        }
        s.push('\n');
    }
    let mut pc = 0;
    while pc < program.insns.len() {
        if let Some(l) = program.labels.get(&pc) {
            s.push_str(&format!("{l}:\n"));
        }
        let n = egret_bpf::insn::decode(&program.insns, pc).map_or(1, |(_, n)| n);
        match (disasm::slot_text(program, pc, Dialect::Llvm14Alu32), notes.get(&pc)) {
            (Some(text), Some(note)) => s.push_str(&format!("\t{text:<40} ; {note}\n")),
            (Some(text), None) => s.push_str(&format!("\t{text}\n")),
            (None, _) => {
                let i = program.insns[pc];
                s.push_str(&format!("\t.insn {:#04x}, {}, {}, {}, {}\n", i.code, i.dst, i.src, i.off, i.imm));
            }
        }
        pc += n;
    }
    if let Some(l) = program.labels.get(&program.insns.len()) {
        s.push_str(&format!("{l}:\n"));
    }
    s
}

/// Generates, statically verifies and equivalence-checks the classifier of
/// a plan; with `reference`, also against [`crate::eval::decide`] (and the
/// manifest then names the policies each rule counts).
///
/// # Errors
/// Any generation, verification or equivalence failure.
pub fn verified_classifier(
    plan: &Verified<Plan>,
    options: &Options,
    reference: Option<&World>,
) -> Result<equiv::VerifiedArtifact, CodegenError> {
    let g = generate(plan, options)?;
    let candidate = g.artifact(plan)?;
    let check = equiv::CheckOptions { reference_limit: options.reference_limit };
    equiv::check_with(candidate, plan, reference, &check).map_err(|e| CodegenError::Equivalence { source: Box::new(e) })
}

/// Writes `NODE.o`, `NODE.artifact.json` and `NODE.plan.txt` into `dir`.
///
/// # Errors
/// I/O failures.
pub fn write(dir: &Path, verified: &equiv::VerifiedArtifact, plan: &Plan) -> Result<(), CodegenError> {
    artifact::write_dir(dir, verified.artifact())?;
    let path = plan_path(dir, &plan.node);
    std::fs::write(&path, plan.to_text()).map_err(|source| CodegenError::Io { path, source })
}

/// `DIR/NODE.plan.txt`.
pub fn plan_path(dir: &Path, node: &str) -> std::path::PathBuf {
    dir.join(format!("{node}.plan.txt"))
}
