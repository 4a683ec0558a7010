//! `egret-bench codegen`: generating and verifying (static verifier +
//! equivalence checker, the latter also against the reference evaluator)
//! the classifier of the busiest node of the large synthetic cluster
//! (`egret_compiler::synth::LARGE`), and the node's complete artifact on
//! the default path, `codegen::node::verified_node` with the world (what
//! `egret compile -o`, `egret verify --cluster` and the agent run). Target:
//! < 100 ms for the busiest node on the default path.
//!
//! Also, for scale: a stress node hosting one pod of each of 1,000 apps, so
//! that all 1,000 policies apply to it (1,000+ classes, maps layout).

use crate::report::{Table, median, ms};
use egret_compiler::codegen::{self, Options, equiv};
use egret_compiler::plan::{Plan, Verified};
use egret_compiler::planner::Planner;
use egret_compiler::resolve::{Options as ResolveOptions, World};
use egret_compiler::synth::{self, labels, sp, v4};
use egret_lang::ast::Bundle;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

const SHAPE: synth::Shape = synth::LARGE;

/// One pod of each of 1,000 apps on `node-00000` (policy j selects apps 2j
/// and 2j+1, so every policy applies to this node).
fn add_stress_pods(b: &mut Bundle) {
    for k in 0..SHAPE.policies {
        let mut p = synth::pod(&SHAPE, k);
        p.name = sp(format!("stress-{k:04}"));
        p.uid = format!("stress-{k}");
        p.node_name = Some("node-00000".into());
        p.labels = labels(&[("app", format!("app-{:04}", 2 * k)), ("tier", "db".into())]);
        p.pod_ips = vec![IpAddr::V4(Ipv4Addr::new(10, 200, (k / 250) as u8, (k % 250 + 2) as u8))];
        b.cluster.pods.push(p);
    }
}

/// What the equivalence checker compares with the reference evaluator.
#[derive(Debug, Clone, Copy)]
enum Reference {
    PlanOnly,
    Limit(usize),
    Every,
}

fn measure(
    t: &mut Table,
    name: &str,
    w: &World,
    plan: &Verified<Plan>,
    runs: usize,
    reference: Reference,
) -> anyhow::Result<()> {
    let (world, reference_limit) = match reference {
        Reference::PlanOnly => (None, None),
        Reference::Limit(n) => (Some(w), Some(n)),
        Reference::Every => (Some(w), None),
    };
    let options = Options { reference_limit, ..Options::default() };
    let (mut generate, mut stat, mut eq, mut total, mut node) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        let g = codegen::generate(plan, &options)?;
        let t1 = Instant::now();
        let a = g.artifact(plan)?;
        let t2 = Instant::now();
        let check = equiv::CheckOptions { reference_limit };
        let v = equiv::check_with(a, plan, world, &check)?;
        let t3 = Instant::now();
        let n = codegen::node::verified_node(plan, &options, world)?;
        let t4 = Instant::now();
        anyhow::ensure!(n.report().reference_checks == v.report().reference_checks, "{name}: the same checks");
        generate.push(t1 - t0);
        stat.push(t2 - t1);
        eq.push(t3 - t2);
        total.push(t3 - t0);
        node.push(t4 - t3);
        last = Some((g.layout, g.program.insns.len(), v.report()));
    }
    let Some((layout, insns, r)) = last else { return Ok(()) };
    let c = plan.counts();
    t.row(vec![
        name.into(),
        format!("{} / {} / {}", c.endpoints, c.classes, c.class_entries),
        format!("{layout} ({insns})"),
        format!("{} ({})", r.cases, r.reference_checks),
        ms(median(generate)),
        ms(median(stat)),
        ms(median(eq)),
        ms(median(total)),
        ms(median(node)),
    ]);
    Ok(())
}

/// Runs the benchmark (`runs` per case; the stress node at most 3).
///
/// # Errors
/// A generation or verification failure (a bug).
pub fn run(runs: usize) -> anyhow::Result<Vec<Table>> {
    let mut b = synth::bundle(&SHAPE);
    let w = World::new(&b, &ResolveOptions { service_cidrs: vec![v4(10, 96, 0, 0, 12)] });
    let plans = Planner::new().plan_all(&w).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (busiest, plan) = plans
        .iter()
        .max_by_key(|(n, p)| (p.counts().class_entries, std::cmp::Reverse((*n).clone())))
        .ok_or_else(|| anyhow::anyhow!("no nodes"))?;
    let mut t = Table::new(
        format!("Code generation and verification, median of {runs} runs (stress node: of {})", runs.clamp(1, 3)),
        &[
            "node, reference",
            "endpoints / classes / class entries",
            "layout (insns)",
            "packets (also vs the reference)",
            "generate ms",
            "static verify + ELF ms",
            "equivalence ms",
            "classifier total ms",
            "`node::verified_node` ms",
        ],
    );
    measure(&mut t, &format!("{busiest}, plan only"), &w, plan, runs, Reference::PlanOnly)?;
    measure(&mut t, &format!("{busiest}, reference on 32 packets"), &w, plan, runs, Reference::Limit(32))?;
    measure(&mut t, &format!("{busiest}, reference on every packet (default)"), &w, plan, runs, Reference::Every)?;
    add_stress_pods(&mut b);
    let w = World::new(&b, &ResolveOptions { service_cidrs: vec![v4(10, 96, 0, 0, 12)] });
    let plan = Planner::new().plan_node(&w, "node-00000").map_err(|e| anyhow::anyhow!("{e}"))?;
    let stress = runs.clamp(1, 3);
    measure(&mut t, "stress node-00000, plan only", &w, &plan, stress, Reference::PlanOnly)?;
    measure(&mut t, "stress node-00000, reference on every packet (default)", &w, &plan, stress, Reference::Every)?;
    Ok(vec![t])
}
