//! The whole-artifact check behind `egret verify DIR` and `egret-loader
//! apply`: an artifact on disk is accepted only if it is, byte for byte, what
//! egret generates for its plan.
//!
//! The manifest's digest ([`egret_bpf::artifact`], SHA-256) only tells that
//! object and manifest belong together: it authenticates nothing, since
//! anyone who can write the directory can recompute it. What catches a
//! change of behaviour is re-derivation: from the plan (the stored
//! `NODE.plan.txt`, or a fresh plan from the cluster) and the compile choices
//! the artifact records (its classifier layout, its MSS clamp), [`Expected`]
//! regenerates every program egret would write for that node — the
//! classifier and the gateway templates — with their map images, holes,
//! attach points and tail-call slots, and [`Expected::compare`] lists every
//! difference, naming the program and instruction (expected vs found), the
//! map and entry, or the manifest field. Equal programs, maps and manifest
//! fields with any other byte of the object different is still a difference
//! (the object's first differing offset), so no edit of the object passes.
//!
//! What is compared:
//! 1. the node named in the manifest equals the file name's (by [`check_dir`]);
//! 2. the object parses; its programs (names, order, every instruction slot
//!    with its map reference and hole), its maps (kind, sizes, capacity,
//!    flags, order) and license equal the regenerated object's, and so do
//!    the object's bytes;
//! 3. the manifest's programs (attach points, tail-call slots), holes
//!    (sources), map images (geometry, every entry's key, value and late
//!    fields), state maps and counter labels (names; the policies they count
//!    with a world) equal the regenerated manifest's;
//! 4. the decision table (inspection only, no program reads it) equals the
//!    regenerated one; egress addresses of slots the node does not serve
//!    come from the cluster, so without a world they are not checked.
//!
//! The compile choices the manifest records are trusted only as far as
//! egret itself could have made them: the layout is `inline` or `maps` (both
//! are regenerated exactly), and the MSS clamp must be the one of a single
//! underlay MTU for both families ([`MssClamp::for_underlay_mtu`]), or of the
//! MTU the caller names.

use super::{CodegenError, Layout, Options, decisions, mss, node, tables};
use crate::plan::{Plan, Verified};
use crate::resolve::World;
use egret_bpf::artifact::{Artifact, CounterMap, DecisionTable, Entry, MapImage};
use egret_bpf::disasm::{self, Dialect};
use egret_bpf::elf::{self, ParsedObject};
use egret_bpf::{MapDef, Program};
use mss::MssClamp;
use std::collections::BTreeMap;
use std::fmt;

/// How many differences are listed per program or map image (the count of
/// the rest is given).
pub const LISTED_PER_ITEM: usize = 4;
/// How many differences a [`Differences`] renders in total.
pub const LISTED: usize = 12;

/// One way an artifact differs from what egret generates for its plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Difference {
    /// The object does not parse as egret's BPF object.
    #[error("the object does not parse: {reason}")]
    Object { reason: String },
    /// A program egret generates for the node is not in the object.
    #[error("program `{program}` is missing")]
    MissingProgram { program: String },
    /// A program egret does not generate for this node.
    #[error("program `{program}` is not one egret generates for this node")]
    ExtraProgram { program: String },
    /// An instruction slot differs (with its map reference and hole).
    #[error("program `{program}`, instruction {index}: expected `{expected}`, found `{found}`")]
    Instruction { program: String, index: usize, expected: String, found: String },
    /// A program's length differs.
    #[error("program `{program}`: {expected} instruction slots expected, {found} found")]
    Length { program: String, expected: usize, found: usize },
    /// More differences in one program or image than are listed.
    #[error("{item}: {count} more differences")]
    More { item: String, count: usize },
    /// A map of the object differs.
    #[error("object map `{map}`: expected {expected}, found {found}")]
    MapDef { map: String, expected: String, found: String },
    /// A map image of the manifest differs.
    #[error("map image `{map}`: {detail}")]
    Image { map: String, detail: String },
    /// A field of the manifest differs.
    #[error("manifest {field}: expected {expected}, found {found}")]
    Manifest { field: String, expected: String, found: String },
    /// Programs, maps and license are equal but the object's bytes are not.
    #[error("object byte {offset:#x} differs ({expected} bytes expected, {found} found)")]
    Bytes { offset: usize, expected: usize, found: usize },
}

/// Every [`Difference`] of one artifact (non-empty), rendered as a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Differences(pub Vec<Difference>);

impl fmt::Display for Differences {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "the artifact differs from what egret generates for its plan ({n} difference{})", plural(n))?;
        for d in self.0.iter().take(LISTED) {
            write!(f, "\n  - {d}")?;
        }
        if n > LISTED {
            write!(f, "\n  - … and {} more", n - LISTED)?;
        }
        Ok(())
    }
}

impl std::error::Error for Differences {}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// What egret generates for a plan, with the compile choices an artifact records.
#[derive(Debug, Clone)]
pub struct Expected {
    artifact: Artifact,
    object: ParsedObject,
    /// Whether remote slots' egress addresses are known (a world was given).
    with_world: bool,
    /// Whether the counters' policies are known ([`Expected::with_counters`]).
    with_policies: bool,
    /// The slots the node serves (their egress addresses are in the plan).
    served: Vec<u32>,
    layout: Layout,
    mss_clamp: MssClamp,
}

/// The MSS clamp `found` records, if it is one egret makes (the clamp of one
/// underlay MTU, `mtu` when given).
///
/// # Errors
/// A [`Difference`] saying why not.
pub fn recorded_clamp(found: &Artifact, mtu: Option<u16>) -> Result<MssClamp, Difference> {
    let manifest =
        |expected: String, found: String| Difference::Manifest { field: "MSS holes".into(), expected, found };
    let clamp = match mss::from_holes(&found.manifest.holes) {
        Some(Ok(c)) => c,
        Some(Err(detail)) => return Err(manifest("16-bit constants".into(), detail)),
        None => return Err(manifest(format!("%{} and %{}", mss::HOLE_MSS_V4, mss::HOLE_MSS_V6), "none".into())),
    };
    // v4 = MTU − tunnel − 40: the MTU that clamp would come from
    let implied = clamp.v4.checked_add(mss::TUNNEL_OVERHEAD + 40);
    let want_mtu = mtu.or(implied);
    match want_mtu.and_then(MssClamp::for_underlay_mtu) {
        Some(want) if want == clamp => Ok(clamp),
        Some(want) => {
            Err(manifest(format!("{want} (underlay MTU {})", want_mtu.unwrap_or_default()), clamp.to_string()))
        }
        None => Err(manifest("the clamp of an underlay MTU".into(), clamp.to_string())),
    }
}

impl Expected {
    /// Regenerates the artifact of `plan` with `found`'s layout and MSS clamp
    /// (checked by [`recorded_clamp`]); with `world`, the decision table's
    /// remote egress addresses are checked too; the counters' policies
    /// only once given by [`Expected::with_counters`].
    ///
    /// # Errors
    /// The recorded choices are not egret's ([`Difference`], boxed as
    /// [`RederiveError::Choice`]) or code generation fails.
    pub fn derive(
        plan: &Verified<Plan>,
        found: &Artifact,
        world: Option<&World>,
        mtu: Option<u16>,
    ) -> Result<Expected, RederiveError> {
        let mss_clamp = recorded_clamp(found, mtu).map_err(|d| RederiveError::Choice { difference: Box::new(d) })?;
        let layout = tables::layout_of(found.manifest.maps.iter().map(|m| m.name.as_str()));
        let options = Options { layout: Some(layout), reference_limit: None, mss_clamp: Some(mss_clamp) };
        let g = super::generate(plan, &options).map_err(|source| RederiveError::Generate { source })?;
        let mut artifact = node::node_artifact(plan, &g).map_err(|source| RederiveError::Generate { source })?;
        if world.is_some() {
            artifact = artifact.with_decisions(decisions::decision_table(plan, world, layout.as_str()));
        }
        let object = elf::read_object(&artifact.object)
            .map_err(|source| RederiveError::Generate { source: CodegenError::Elf { source } })?;
        let served = plan.slots.iter().map(|s| s.id.0).collect();
        Ok(Expected { artifact, object, with_world: world.is_some(), with_policies: false, served, layout, mss_clamp })
    }

    /// The expected counter labels, policies included (as the equivalence
    /// checker attributes them against the world).
    #[must_use]
    pub fn with_counters(mut self, counters: Vec<CounterMap>) -> Expected {
        self.artifact = self.artifact.with_counters(counters);
        self.with_policies = true;
        self
    }

    /// The regenerated artifact.
    #[must_use]
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    /// The layout regenerated.
    #[must_use]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The MSS clamp regenerated.
    #[must_use]
    pub fn mss_clamp(&self) -> MssClamp {
        self.mss_clamp
    }

    /// Every difference between `found` and the regenerated artifact (empty: equal).
    #[must_use]
    pub fn compare(&self, found: &Artifact) -> Vec<Difference> {
        let mut out = Vec::new();
        match elf::read_object(&found.object) {
            Ok(object) => compare_objects(&self.object, &object, &mut out),
            Err(e) => out.push(Difference::Object { reason: e.to_string() }),
        }
        if out.is_empty() && self.artifact.object != found.object {
            let (e, f) = (&self.artifact.object, &found.object);
            let offset = e.iter().zip(f.iter()).position(|(a, b)| a != b).unwrap_or(e.len().min(f.len()));
            out.push(Difference::Bytes { offset, expected: e.len(), found: f.len() });
        }
        self.compare_manifest(found, &mut out);
        out
    }

    fn compare_manifest(&self, found: &Artifact, out: &mut Vec<Difference>) {
        let (e, f) = (&self.artifact.manifest, &found.manifest);
        let mut field = |name: &str, expected: String, found: String| {
            if expected != found {
                out.push(Difference::Manifest { field: name.into(), expected, found });
            }
        };
        field("format", e.format.clone(), f.format.clone());
        field("node", e.node.clone(), f.node.clone());
        field("programs", json(&e.programs), json(&f.programs));
        field("holes", json(&e.holes), json(&f.holes));
        field("state maps", json(&e.state), json(&f.state));
        let counters = |c: &[CounterMap]| {
            let mut c = c.to_vec();
            if !self.with_policies {
                c.iter_mut().flat_map(|m| &mut m.labels).for_each(|l| l.policies.clear());
            }
            c
        };
        for (i, (ce, cf)) in counters(&e.counters).iter().zip(counters(&f.counters).iter()).enumerate() {
            field(&format!("counters[{i}]"), json(ce), json(cf));
        }
        field("counter maps", e.counters.len().to_string(), f.counters.len().to_string());
        let decisions = |d: Option<&DecisionTable>| {
            let mut d = d.cloned();
            if !self.with_world
                && let Some(d) = d.as_mut()
            {
                d.egress.retain(|s, _| self.served.contains(s));
                d.egress6.retain(|s, _| self.served.contains(s));
            }
            d
        };
        field("decisions", json(&decisions(e.decisions.as_ref())), json(&decisions(f.decisions.as_ref())));
        compare_images(&e.maps, &f.maps, out);
    }
}

/// Why an artifact cannot be regenerated.
#[derive(Debug, thiserror::Error)]
pub enum RederiveError {
    /// The manifest records a compile choice egret does not make.
    #[error("{difference}")]
    Choice { difference: Box<Difference> },
    /// Code generation failed for the plan.
    #[error("cannot regenerate the artifact from its plan: {source}")]
    Generate {
        #[source]
        source: CodegenError,
    },
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("(unprintable: {e})"))
}

fn compare_objects(e: &ParsedObject, f: &ParsedObject, out: &mut Vec<Difference>) {
    for p in &e.programs {
        match f.program(&p.program.name) {
            Some(found) => compare_programs(&p.program, found, out),
            None => out.push(Difference::MissingProgram { program: p.program.name.clone() }),
        }
    }
    for p in f.programs.iter().filter(|p| e.program(&p.program.name).is_none()) {
        out.push(Difference::ExtraProgram { program: p.program.name.clone() });
    }
    let names = |o: &ParsedObject| o.programs.iter().map(|p| p.program.name.clone()).collect::<Vec<_>>();
    if out.is_empty() && names(e) != names(f) {
        out.push(Difference::Manifest {
            field: "object program order".into(),
            expected: names(e).join(", "),
            found: names(f).join(", "),
        });
    }
    let def = |m: &MapDef| {
        format!(
            "{} key {} value {} max_entries {} flags {}",
            m.kind.name(),
            m.key_size,
            m.value_size,
            m.max_entries,
            m.flags
        )
    };
    for m in &e.maps {
        match f.maps.iter().find(|x| x.name == m.name) {
            Some(x) if x == m => {}
            Some(x) => out.push(Difference::MapDef { map: m.name.clone(), expected: def(m), found: def(x) }),
            None => out.push(Difference::MapDef { map: m.name.clone(), expected: def(m), found: "no such map".into() }),
        }
    }
    for x in f.maps.iter().filter(|x| !e.maps.iter().any(|m| m.name == x.name)) {
        out.push(Difference::MapDef { map: x.name.clone(), expected: "no such map".into(), found: def(x) });
    }
    let map_names = |o: &ParsedObject| o.maps.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    if map_names(e) != map_names(f) && e.maps.len() == f.maps.len() {
        out.push(Difference::Manifest {
            field: "object map order".into(),
            expected: map_names(e).join(", "),
            found: map_names(f).join(", "),
        });
    }
    if e.license != f.license {
        out.push(Difference::Manifest {
            field: "license".into(),
            expected: e.license.clone(),
            found: f.license.clone(),
        });
    }
}

/// An instruction slot as the disassembler prints it (map reference and
/// hole by name), or its raw fields where it does not decode.
fn slot(p: &Program, refs: &BTreeMap<usize, String>, i: usize) -> String {
    let raw = p.insns[i];
    let text = disasm::slot_text(p, i, Dialect::Llvm14Alu32)
        .unwrap_or_else(|| format!(".insn {:#04x}, {}, {}, {}, {}", raw.code, raw.dst, raw.src, raw.off, raw.imm));
    // the text names jump targets by label: add the raw slot so any bit shows
    match refs.get(&i) {
        Some(r) => format!("{text} [{}{r}]", hex8(&raw.to_bytes())),
        None => format!("{text} [{}]", hex8(&raw.to_bytes())),
    }
}

fn hex8(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Map references and holes per slot, as text.
fn side_tables(p: &Program) -> BTreeMap<usize, String> {
    let mut m: BTreeMap<usize, String> = BTreeMap::new();
    for r in &p.map_relocs {
        m.entry(r.insn).or_default().push_str(&format!(" map {}", r.map));
    }
    for h in &p.holes {
        m.entry(h.insn).or_default().push_str(&format!(" hole {} {}", h.kind.name(), h.name));
    }
    m
}

fn compare_programs(e: &Program, f: &Program, out: &mut Vec<Difference>) {
    let (re, rf) = (side_tables(e), side_tables(f));
    let mut listed = 0;
    let mut more = 0;
    for i in 0..e.insns.len().min(f.insns.len()) {
        if e.insns[i] == f.insns[i] && re.get(&i) == rf.get(&i) {
            continue;
        }
        if listed < LISTED_PER_ITEM {
            listed += 1;
            out.push(Difference::Instruction {
                program: e.name.clone(),
                index: i,
                expected: slot(e, &re, i),
                found: slot(f, &rf, i),
            });
        } else {
            more += 1;
        }
    }
    if e.insns.len() != f.insns.len() {
        out.push(Difference::Length { program: e.name.clone(), expected: e.insns.len(), found: f.insns.len() });
    }
    // relocations or holes beyond the shorter program
    if listed == 0 && e.insns.len() == f.insns.len() && (e.map_relocs != f.map_relocs || e.holes != f.holes) {
        out.push(Difference::Instruction {
            program: e.name.clone(),
            index: e.insns.len(),
            expected: format!("{} map references, {} holes", e.map_relocs.len(), e.holes.len()),
            found: format!("{} map references, {} holes", f.map_relocs.len(), f.holes.len()),
        });
    }
    if more > 0 {
        out.push(Difference::More { item: format!("program `{}`", e.name), count: more });
    }
}

fn entry_text(e: &Entry) -> String {
    let late = if e.late.is_empty() { String::new() } else { format!(" late {}", json(&e.late)) };
    format!("{} => {}{late}", e.key, e.value)
}

fn compare_images(e: &[MapImage], f: &[MapImage], out: &mut Vec<Difference>) {
    for img in e {
        let Some(found) = f.iter().find(|x| x.name == img.name) else {
            out.push(Difference::Image { map: img.name.clone(), detail: "missing from the manifest".into() });
            continue;
        };
        let geometry = |m: &MapImage| {
            format!(
                "{} key {} value {} max_entries {} flags {}",
                m.kind, m.key_size, m.value_size, m.max_entries, m.flags
            )
        };
        if geometry(img) != geometry(found) {
            out.push(Difference::Image {
                map: img.name.clone(),
                detail: format!("expected {}, found {}", geometry(img), geometry(found)),
            });
        }
        let mut listed = 0;
        let mut more = 0;
        let n = img.entries.len().max(found.entries.len());
        for i in 0..n {
            let (a, b) = (img.entries.get(i), found.entries.get(i));
            if a == b {
                continue;
            }
            if listed < LISTED_PER_ITEM {
                listed += 1;
                let text = |x: Option<&Entry>| x.map_or_else(|| "no entry".to_string(), entry_text);
                out.push(Difference::Image {
                    map: img.name.clone(),
                    detail: format!("entry {i}: expected {}, found {}", text(a), text(b)),
                });
            } else {
                more += 1;
            }
        }
        if more > 0 {
            out.push(Difference::More { item: format!("map image `{}`", img.name), count: more });
        }
    }
    for x in f.iter().filter(|x| !e.iter().any(|m| m.name == x.name)) {
        out.push(Difference::Image { map: x.name.clone(), detail: "not a map egret generates for this node".into() });
    }
    let names = |v: &[MapImage]| v.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    if names(e) != names(f) && e.len() == f.len() {
        out.push(Difference::Manifest {
            field: "map image order".into(),
            expected: names(e).join(", "),
            found: names(f).join(", "),
        });
    }
}

/// The files of one node's artifact in a directory, as `egret compile -o` writes them.
pub const NODE_FILES: [&str; 3] = ["o", "artifact.json", "plan.txt"];

/// Every node that has any of its artifact files ([`NODE_FILES`]) in `dir`,
/// with the extensions present, sorted. A node missing any of them is
/// reported by [`check_node`], never skipped.
///
/// # Errors
/// The directory cannot be read.
pub fn artifact_files(dir: &std::path::Path) -> std::io::Result<BTreeMap<String, Vec<&'static str>>> {
    let mut nodes: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let Some(name) = e.file_name().to_str().map(str::to_owned) else { continue };
        for ext in NODE_FILES {
            if let Some(node) = name.strip_suffix(&format!(".{ext}")).filter(|n| !n.is_empty()) {
                nodes.entry(node.to_owned()).or_default().push(ext);
            }
        }
    }
    Ok(nodes)
}

/// What [`check_node`] checks against, besides the stored plan text.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions<'a> {
    /// A freshly resolved cluster: the node's plan is compiled from it (and
    /// must equal the stored plan text), and every packet is also compared
    /// with the reference evaluator.
    pub world: Option<&'a World>,
    /// The underlay MTU the artifact was compiled for (`None`: any one MTU,
    /// read from the manifest's MSS holes).
    pub underlay_mtu: Option<u16>,
    /// See [`super::equiv::CheckOptions`].
    pub reference_limit: Option<usize>,
}

/// A node's artifact that passed [`check_node`].
#[derive(Debug, Clone)]
pub struct CheckedNode {
    /// The artifact, statically verified and equivalence-checked.
    pub verified: super::equiv::VerifiedArtifact,
    /// The MSS clamp it was regenerated with.
    pub mss_clamp: MssClamp,
}

/// Why a node's artifact in a directory is refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeCheckError {
    /// A file of the node's artifact is missing.
    #[error("`{}` is missing (a node's artifact is NODE.o, NODE.artifact.json and NODE.plan.txt)", path.display())]
    MissingFile { path: std::path::PathBuf },
    /// Reading the artifact failed, or its format or digest is wrong.
    #[error("{source}")]
    Read { source: egret_bpf::artifact::ArtifactError },
    /// The manifest or plan text names another node than its file name.
    #[error("`{}` is the artifact of node `{inside}`, not of `{node}`", path.display())]
    NodeName { path: std::path::PathBuf, node: String, inside: String },
    /// The stored plan text does not read.
    #[error("`{}`: {source}", path.display())]
    PlanText { path: std::path::PathBuf, source: super::plan_text::PlanTextError },
    /// The stored plan violates the plan's invariants.
    #[error("the stored plan violates its invariants: {detail}")]
    PlanInvariants { detail: String },
    /// The node does not compile from the cluster.
    #[error("cannot compile node `{node}` from the cluster: {detail}")]
    Compile { node: String, detail: String },
    /// The stored plan text is not the fresh plan.
    #[error("the stored plan text differs from the fresh plan at line {line}: expected `{expected}`, found `{found}`")]
    StalePlan { line: usize, expected: String, found: String },
    /// The artifact cannot be regenerated.
    #[error("{source}")]
    Rederive { source: RederiveError },
    /// The artifact differs from the regenerated one.
    #[error("{source}")]
    Differs { source: Differences },
    /// The static verifier or the equivalence checker rejects it.
    #[error("{source}")]
    Equivalence { source: Box<super::equiv::EquivError> },
}

/// The whole check of node `node`'s artifact in `dir` (see the module
/// doc): its three files exist and name the node; the plan is the stored
/// plan text (verified), or with a world the fresh plan, which the stored
/// text must equal; the artifact equals what egret generates for that
/// plan ([`Expected`]); and the static verifier and the equivalence checker
/// accept it. `egret verify` and `egret-loader apply` both call it.
///
/// # Errors
/// The first failing step, with every difference where the artifact differs.
pub fn check_node(
    dir: &std::path::Path,
    node: &str,
    options: &CheckOptions<'_>,
) -> Result<CheckedNode, NodeCheckError> {
    let path = |ext: &str| dir.join(format!("{node}.{ext}"));
    for ext in NODE_FILES {
        if !path(ext).is_file() {
            return Err(NodeCheckError::MissingFile { path: path(ext) });
        }
    }
    let found = egret_bpf::artifact::read_dir(dir, node).map_err(|source| NodeCheckError::Read { source })?;
    if found.manifest.node != node {
        return Err(NodeCheckError::NodeName {
            path: path("artifact.json"),
            node: node.into(),
            inside: found.manifest.node.clone(),
        });
    }
    let plan_path = path("plan.txt");
    let text = std::fs::read_to_string(&plan_path).map_err(|source| NodeCheckError::Read {
        source: egret_bpf::artifact::ArtifactError::Io { path: plan_path.clone(), source },
    })?;
    let stored = super::plan_text::parse(&text)
        .map_err(|source| NodeCheckError::PlanText { path: plan_path.clone(), source })?;
    if stored.node != node {
        return Err(NodeCheckError::NodeName { path: plan_path, node: node.into(), inside: stored.node });
    }
    let plan = match options.world {
        Some(w) => {
            let fresh = crate::planner::plan_node(w, node)
                .map_err(|e| NodeCheckError::Compile { node: node.into(), detail: e.to_string() })?;
            let want = fresh.to_text();
            if want != text {
                let (w, t): (Vec<&str>, Vec<&str>) = (want.lines().collect(), text.lines().collect());
                let n = w.len().max(t.len());
                let line = (0..n).find(|&i| w.get(i) != t.get(i)).unwrap_or(n);
                let end = if line == n { "(a different line ending)" } else { "(end of text)" };
                return Err(NodeCheckError::StalePlan {
                    line: line + 1,
                    expected: w.get(line).map_or("(end of text)", |l| l).to_owned(),
                    found: t.get(line).map_or(end, |l| l).to_owned(),
                });
            }
            fresh
        }
        None => crate::plan::verify::verify(stored).map_err(|v| NodeCheckError::PlanInvariants {
            detail: v.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        })?,
    };
    let expected = Expected::derive(&plan, &found, options.world, options.underlay_mtu)
        .map_err(|source| NodeCheckError::Rederive { source })?;
    let mss_clamp = expected.mss_clamp();
    let differences = expected.compare(&found);
    if !differences.is_empty() {
        return Err(NodeCheckError::Differs { source: Differences(differences) });
    }
    let check = super::equiv::CheckOptions { reference_limit: options.reference_limit };
    let verified = super::equiv::check_with(found.clone(), &plan, options.world, &check)
        .map_err(|e| NodeCheckError::Equivalence { source: Box::new(e) })?;
    if options.world.is_some() {
        // the policies each counter counts, as the check attributes them
        let expected = expected.with_counters(verified.artifact().manifest.counters.clone());
        let differences = expected.compare(&found);
        if !differences.is_empty() {
            return Err(NodeCheckError::Differs { source: Differences(differences) });
        }
    }
    Ok(CheckedNode { verified, mss_clamp })
}
