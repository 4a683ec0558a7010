//! `egret compile`, `egret explain`, `egret diff`: the compiler core for CI.

use super::exit::{self, Exit};
use super::{Inputs, eprint_diagnostics, is_unreadable};
use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use egret_compiler::driver::{self, CompileError, Driver};
use egret_compiler::resolve::{self, World};
use egret_compiler::{cilium, codegen, diff, explain, ir, planner};
use egret_lang::ast::Bundle;
use egret_lang::diag;
use egret_lang::load::{self, Loaded};
use egret_lang::net::Cidr;
use egret_lang::source::SourceMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Emit {
    /// The policies as read (canonical `.egret`) and a summary of the snapshot.
    Ast,
    /// The lowered IR.
    Ir,
    /// The IR after every pass.
    IrOpt,
    /// The per-node plan (tables and slots).
    Plan,
    /// What `cilium-dbg bpf egress list` would print on the node.
    Cilium,
    /// The generated classifier as re-assemblable BPF assembly.
    Asm,
}

/// The Cilium release whose `cilium-dbg bpf egress list` `--emit cilium` mirrors.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CiliumVersion {
    /// Cilium ≤ 1.17: the IPv4 map only (IPv6 entries left out).
    #[value(name = "1.17")]
    V1_17,
    /// Cilium 1.20: the IPv4 and the IPv6 map.
    #[value(name = "1.20")]
    V1_20,
}

impl CiliumVersion {
    fn release(self) -> cilium::Release {
        match self {
            CiliumVersion::V1_17 => cilium::Release::V1_17,
            CiliumVersion::V1_20 => cilium::Release::V1_20,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LayoutChoice {
    /// By the measured threshold on the plan's size.
    Auto,
    /// Compare-and-branch trees.
    Inline,
    /// Hash, LPM trie and action array.
    Maps,
}

impl LayoutChoice {
    fn layout(self) -> Option<codegen::Layout> {
        match self {
            LayoutChoice::Auto => None,
            LayoutChoice::Inline => Some(codegen::Layout::Inline),
            LayoutChoice::Maps => Some(codegen::Layout::Maps),
        }
    }
}

/// What `egret compile` produces.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    /// The view to print (`None`: the plan, or nothing extra with `-o`).
    pub emit: Option<Emit>,
    pub format: DataFormat,
    /// The Cilium release `--emit cilium` mirrors.
    pub cilium_version: CiliumVersion,
    pub layout: LayoutChoice,
    /// Compare at most this many packets per node with the reference evaluator.
    pub reference_limit: Option<usize>,
    /// The MSS clamp of redirected TCP SYNs (from `--underlay-mtu`).
    pub mss_clamp: codegen::mss::MssClamp,
    /// Write verified artifacts here.
    pub out_dir: Option<&'a Path>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DataFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DiffFormat {
    Human,
    Json,
    Markdown,
}

/// Resolves the inputs ([`driver::resolve`]) and refuses to go on when they
/// have errors (rendered on stderr, so stdout stays the command's data; exit 3).
fn world(sources: &SourceMap, loaded: &Loaded, service_cidrs: &[Cidr]) -> Result<World, ExitCode> {
    driver::resolve(loaded, &resolve::Options { service_cidrs: service_cidrs.to_vec() }).map_err(|e| {
        let mut errors = e.diagnostics().to_vec();
        diag::sort_dedup(&mut errors);
        eprint_diagnostics(&errors, sources);
        Exit::Input.into()
    })
}

fn read(inputs: &Inputs) -> (SourceMap, Loaded) {
    let r = super::read(inputs);
    (r.sources, r.loaded)
}

pub fn compile(inputs: &Inputs, node: Option<&str>, all_nodes: bool, out: Output<'_>) -> Result<ExitCode> {
    let Output { emit, format, cilium_version, layout, reference_limit, mss_clamp, out_dir } = out;
    let options = codegen::Options { layout: layout.layout(), reference_limit, mss_clamp: Some(mss_clamp) };
    let view = emit.unwrap_or(Emit::Plan);
    if format == DataFormat::Json && !matches!(view, Emit::Cilium | Emit::Plan) {
        return Ok(exit::usage("--format json is available with --emit plan and --emit cilium only"));
    }
    let (sources, loaded) = read(inputs);
    if view == Emit::Ast {
        out!("{}", ast_text(&loaded.bundle));
        return Ok(ExitCode::SUCCESS);
    }
    let w = match world(&sources, &loaded, &inputs.service_cidrs) {
        Ok(w) => w,
        Err(code) => return Ok(code),
    };
    let nodes: Vec<String> = match (node, all_nodes) {
        (Some(n), false) => vec![n.to_string()],
        (None, true) => w.nodes().iter().map(|n| n.name.clone()).collect(),
        _ => return Ok(exit::usage("give exactly one of --node NAME and --all-nodes")),
    };
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    let mut driver = Driver::new(options);
    for n in &nodes {
        if let Some(dir) = out_dir {
            // the node's complete artifact, as the agent builds it:
            // generated, statically verified, equivalence-checked, then written
            let (p, v) = match driver.compile(&w, n) {
                Ok(c) => (c.plan, c.artifact),
                Err(e) => return report(&sources, &e),
            };
            codegen::write(dir, &v, &p).with_context(|| format!("node `{n}`: writing the artifact"))?;
            let r = v.report();
            let templates = if r.programs > 1 { " + gateway templates" } else { "" };
            eprintln!(
                "{n}: {} layout, {} instructions{templates}, {} packets equivalent ({} also against the reference evaluator){} -> {}",
                v.layout(),
                v.program().insns.len(),
                r.cases,
                r.reference_checks,
                clamp_text(&r),
                egret_bpf::artifact::object_path(dir, n).display()
            );
            if emit.is_none() || view == Emit::Plan {
                continue;
            }
        }
        let text = match view {
            Emit::Ast => unreachable_ast(),
            Emit::Ir | Emit::IrOpt => {
                let stage = if view == Emit::Ir { ir::Stage::Lowered } else { ir::Stage::Minimized };
                match planner::emit_ir(&w, n, stage) {
                    Ok(m) => ir::text::emit(&m),
                    Err(e) => return report(&sources, &e),
                }
            }
            Emit::Plan => match driver.plan(&w, n) {
                Ok(p) if format == DataFormat::Json => {
                    let mut t = serde_json::to_string_pretty(&p.to_json())?;
                    t.push('\n');
                    t
                }
                Ok(p) => p.to_text(),
                Err(e) => return report(&sources, &e),
            },
            Emit::Asm => match driver.plan(&w, n) {
                Ok(p) => codegen::generate(&p, driver.options())
                    .with_context(|| format!("node `{n}`: code generation"))?
                    .asm(),
                Err(e) => return report(&sources, &e),
            },
            Emit::Cilium => {
                let f = if format == DataFormat::Json { cilium::Format::Json } else { cilium::Format::Text };
                match cilium::view_for(&w, n, cilium_version.release()) {
                    Ok(v) => {
                        for r in &v.refused {
                            eprintln!(
                                "note: Cilium {} refuses policy `{}` (no entries): {}",
                                v.release, r.policy, r.reason
                            );
                        }
                        cilium::render_view(&v, f)
                    }
                    Err(d) => {
                        eprint_diagnostics(&[d], &sources);
                        return Ok(Exit::Input.into());
                    }
                }
            }
        };
        match out_dir {
            Some(dir) => {
                let ext = match view {
                    Emit::Ast => "txt",
                    Emit::Ir => "ir.txt",
                    Emit::IrOpt => "ir-opt.txt",
                    Emit::Plan if format == DataFormat::Json => "plan.json",
                    Emit::Plan => "plan.txt",
                    Emit::Asm => "s",
                    Emit::Cilium if format == DataFormat::Json => "cilium.json",
                    Emit::Cilium => "cilium.txt",
                };
                let path = dir.join(format!("{n}.{ext}"));
                std::fs::write(&path, text).with_context(|| format!("cannot write `{}`", path.display()))?;
            }
            None => {
                if nodes.len() > 1 {
                    outln!("# node {n}");
                }
                out!("{text}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `egret verify DIR [--cluster SNAPSHOT POLICY...]`: every node that has
/// any artifact file in DIR is checked whole ([`codegen::rederive::check_node`]).
pub fn verify(
    dir: &Path,
    cluster: &[PathBuf],
    service_cidrs: &[Cidr],
    policies: &[PathBuf],
    reference_limit: Option<usize>,
    underlay_mtu: Option<u16>,
) -> Result<ExitCode> {
    if cluster.is_empty() != policies.is_empty() {
        return Ok(exit::usage("give both --cluster and policies (to check against a fresh plan), or neither"));
    }
    let fresh = if policies.is_empty() {
        None
    } else {
        let inputs =
            Inputs { cluster: cluster.to_vec(), service_cidrs: service_cidrs.to_vec(), policies: policies.to_vec() };
        let (sources, loaded) = read(&inputs);
        match world(&sources, &loaded, service_cidrs) {
            Ok(w) => Some(w),
            Err(code) => return Ok(code),
        }
    };
    let nodes = match codegen::rederive::artifact_files(dir) {
        Ok(n) => n,
        Err(e) => return Ok(exit::input(format_args!("cannot list `{}`: {e}", dir.display()))),
    };
    if nodes.is_empty() {
        return Ok(exit::input(format_args!(
            "no artifact (NODE.o, NODE.artifact.json, NODE.plan.txt) in `{}`",
            dir.display()
        )));
    }
    let options = codegen::rederive::CheckOptions { world: fresh.as_ref(), underlay_mtu, reference_limit };
    let mut failed = 0;
    for n in nodes.keys() {
        match codegen::rederive::check_node(dir, n, &options) {
            Ok(checked) => outln!("ok {n}: {}", verified_line(&checked, fresh.is_some())),
            Err(e) => {
                failed += 1;
                outln!("FAILED {n}: {}", egret_lang::diag::error_chain(&e));
            }
        }
    }
    Ok(if failed == 0 { Exit::Ok } else { Exit::Findings }.into())
}

fn verified_line(checked: &codegen::rederive::CheckedNode, against_world: bool) -> String {
    let v = &checked.verified;
    let r = v.report();
    let programs = if r.programs == 1 { "1 program".to_string() } else { format!("{} programs", r.programs) };
    let against = if against_world { "the fresh plan and the reference evaluator" } else { "the stored plan text" };
    format!(
        "equal to what egret generates for its plan ({programs}, {} layout, MSS {}); static verifier ok ({} instructions processed); {} packets equivalent to {against}{}{}",
        v.layout(),
        checked.mss_clamp,
        r.verifier_insns,
        r.cases,
        if against_world {
            format!(" ({} compared with the reference evaluator)", r.reference_checks)
        } else {
            String::new()
        },
        clamp_text(&r)
    )
}

/// `, N SYNs clamped to MSS V4/V6` when the program clamps and the check clamped some.
fn clamp_text(r: &codegen::equiv::Report) -> String {
    match r.mss_clamp {
        Some(c) if r.mss_clamped > 0 => format!(", {} SYNs clamped to MSS {}/{}", r.mss_clamped, c.v4, c.v6),
        _ => String::new(),
    }
}

/// `egret inspect NODE.o`.
pub fn inspect(object: &Path) -> Result<ExitCode> {
    let bytes = std::fs::read(object).with_context(|| format!("cannot read `{}`", object.display()))?;
    let dir = object.parent().unwrap_or_else(|| Path::new("."));
    let node = object.file_name().and_then(|f| f.to_str()).and_then(|f| f.strip_suffix(".o"));
    let manifest = node.and_then(|n| {
        let text = std::fs::read_to_string(egret_bpf::artifact::manifest_path(dir, n)).ok()?;
        serde_json::from_str::<egret_bpf::artifact::Manifest>(&text).ok()
    });
    let plan = node.and_then(|n| {
        let text = std::fs::read_to_string(codegen::plan_path(dir, n)).ok()?;
        codegen::plan_text::parse(&text).ok()
    });
    let text = codegen::inspect::inspect(&bytes, manifest.as_ref(), plan.as_ref())?;
    out!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn unreachable_ast() -> String {
    String::new()
}

/// Renders an input error on stderr (exit 3); an internal error is the command's error.
fn report(sources: &SourceMap, e: &CompileError) -> Result<ExitCode> {
    if let CompileError::Codegen { node, source } = e {
        return Err(anyhow::Error::new(source.clone()).context(format!("node `{node}`: code generation")));
    }
    if e.diagnostics().is_empty() {
        bail!("{e}");
    }
    eprint_diagnostics(e.diagnostics(), sources);
    Ok(Exit::Input.into())
}

/// The AST stage: policies in canonical `.egret` form, then the snapshot's objects.
fn ast_text(b: &Bundle) -> String {
    let mut out = egret_lang::egret::print(&b.policies);
    let c = &b.cluster;
    out.push_str(&format!(
        "# snapshot: {} nodes, {} namespaces, {} pods, {} workloads, {} NodeNetworks\n",
        c.nodes.len(),
        c.namespaces.len(),
        c.pods.len(),
        c.workloads.len(),
        c.node_networks.len()
    ));
    for n in &c.nodes {
        let ips: Vec<String> = n.internal_ips.iter().map(ToString::to_string).collect();
        out.push_str(&format!("# node {} ips [{}] ready {:?}\n", n.name.value, ips.join(", "), n.ready));
    }
    for p in &c.pods {
        let ips: Vec<String> = p.pod_ips.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "# pod {} on {} ips [{}]\n",
            p.key(),
            p.node_name.as_deref().unwrap_or("-"),
            ips.join(", ")
        ));
    }
    out
}

pub fn explain(inputs: &Inputs, from: &str, to: &str, format: DataFormat) -> Result<ExitCode> {
    let (sources, loaded) = read(inputs);
    let w = match world(&sources, &loaded, &inputs.service_cidrs) {
        Ok(w) => w,
        Err(code) => return Ok(code),
    };
    match explain::explain(&w, from, to) {
        Ok(e) => {
            let f = if format == DataFormat::Json { explain::Format::Json } else { explain::Format::Human };
            out!("{}", explain::render(&e, f));
            Ok(ExitCode::SUCCESS)
        }
        Err(d) => {
            eprint_diagnostics(&[d], &sources);
            Ok(Exit::Input.into())
        }
    }
}

/// Reads a side of a diff: files/directories, or `git:REV:PATH`.
fn load_side(sources: &mut SourceMap, spec: &str) -> Result<Loaded> {
    if let Some(rest) = spec.strip_prefix("git:") {
        let (rev, path) = rest.split_once(':').with_context(|| format!("`{spec}`: expected git:REV:PATH"))?;
        let list = std::process::Command::new("git")
            .args(["ls-tree", "-r", "--name-only", rev, "--", if path.is_empty() { "." } else { path }])
            .output()
            .context("cannot run git")?;
        if !list.status.success() {
            bail!("git ls-tree {rev} {path}: {}", String::from_utf8_lossy(&list.stderr).trim());
        }
        let mut out = Loaded::default();
        let names: Vec<String> = String::from_utf8_lossy(&list.stdout).lines().map(str::to_string).collect();
        for name in names.iter().filter(|n| load::is_input_file(Path::new(n))) {
            let show = std::process::Command::new("git")
                .args(["show", &format!("{rev}:{name}")])
                .output()
                .context("cannot run git")?;
            if !show.status.success() {
                bail!("git show {rev}:{name}: {}", String::from_utf8_lossy(&show.stderr).trim());
            }
            let text = String::from_utf8(show.stdout).with_context(|| format!("{rev}:{name} is not UTF-8"))?;
            out.extend(load::parse_text(sources, &format!("{rev}:{name}"), text));
        }
        if names.is_empty() {
            bail!("`{spec}`: no files at that revision and path");
        }
        return Ok(out);
    }
    Ok(load::load(sources, &[PathBuf::from(spec)]))
}

pub fn diff(cluster: &[PathBuf], service_cidrs: &[Cidr], old: &str, new: &str, format: DiffFormat) -> Result<ExitCode> {
    let f = match format {
        DiffFormat::Human => diff::Format::Human,
        DiffFormat::Json => diff::Format::Json,
        DiffFormat::Markdown => diff::Format::Markdown,
    };
    let mut sources = SourceMap::new();
    let snapshot = load::load(&mut sources, cluster);
    let mut sides = Vec::new();
    for side in [old, new] {
        match load_side(&mut sources, side) {
            Ok(l) => sides.push(l),
            Err(e) => return Ok(exit::input(egret_lang::diag::error_chain(e.as_ref()))),
        }
    }
    // An unreadable path on either side or in the snapshot: nothing to compare (exit 3).
    let unreadable: Vec<diag::Diagnostic> = std::iter::once(&snapshot)
        .chain(&sides)
        .flat_map(|l| &l.diagnostics)
        .filter(|d| is_unreadable(d))
        .cloned()
        .collect();
    if !unreadable.is_empty() {
        eprint_diagnostics(&unreadable, &sources);
        return Ok(Exit::Input.into());
    }
    let mut worlds = Vec::new();
    for l in &sides {
        let mut l = Loaded { bundle: l.bundle.clone(), diagnostics: l.diagnostics.clone(), files: l.files.clone() };
        l.extend(Loaded {
            bundle: snapshot.bundle.clone(),
            diagnostics: snapshot.diagnostics.clone(),
            files: Vec::new(),
        });
        match world(&sources, &l, service_cidrs) {
            Ok(w) => worlds.push(w),
            Err(code) => return Ok(code),
        }
    }
    if cluster.is_empty() {
        // No pods to compare over: compare the policies themselves, and
        // report any difference as a possible change (never "no change").
        let d = diff::policy_diff(&sides[0].bundle.policies, &sides[1].bundle.policies);
        out!("{}", diff::render_policy_diff(&d, f));
        return Ok(if d.is_empty() { Exit::Ok } else { Exit::Findings }.into());
    }
    let d = diff::compute(&worlds[0], &worlds[1]);
    out!("{}", diff::render(&d, f));
    Ok(if d.is_empty() { Exit::Ok } else { Exit::Findings }.into())
}
