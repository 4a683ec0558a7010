//! Code generation benchmark (a program, not a timed test): generating and
//! verifying (static verifier + equivalence checker, the latter also against
//! the reference evaluator) the classifier of a busy node of the synthetic
//! 1,000-policy cluster of `bench_compile.rs` (`egret_compiler::synth`:
//! 5,000 nodes, 100,000 pods, 1,000 policies with 10 destination and 3
//! excluded CIDRs each). Target: < 100 ms for the busiest node on the
//! default path, `codegen::node::compile_node` with the world (what
//! `egret compile -o`, `egret verify --cluster` and the agent run: every
//! packet compared with the plan and with the reference evaluator).
//!
//! Also reported, for scale: a stress node that hosts one pod of each of
//! 1,000 apps, so that all 1,000 policies apply to it (1,000+ classes).
//!
//! Run: `cargo run --release -p egret-compiler --example bench_codegen [runs]`

use egret_compiler::codegen::{self, Options, equiv};
use egret_compiler::compile::Session;
use egret_compiler::plan::{Plan, Verified};
use egret_compiler::resolve::{Options as ResolveOptions, World};
use egret_lang::ast::Bundle;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use egret_compiler::synth::{self, labels, sp, v4};

const SHAPE: synth::Shape = synth::LARGE;
const POLICIES: usize = SHAPE.policies;

fn bundle() -> egret_lang::ast::Bundle {
    synth::bundle(&SHAPE)
}

fn pod(i: usize) -> egret_lang::ast::Pod {
    synth::pod(&SHAPE, i)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:8.1} ms", d.as_secs_f64() * 1e3)
}

/// One pod of each of 1,000 apps on `node-00000` (apps 0, 2, 4, …: policy j
/// selects apps 2j and 2j+1, so every policy applies to this node).
fn add_stress_pods(b: &mut Bundle) {
    for k in 0..POLICIES {
        let mut p = pod(k);
        p.name = sp(format!("stress-{k:04}"));
        p.uid = format!("stress-{k}");
        p.node_name = Some("node-00000".into());
        p.labels = labels(&[("app", format!("app-{:04}", 2 * k)), ("tier", "db".into())]);
        p.pod_ips = vec![IpAddr::V4(Ipv4Addr::new(10, 200, (k / 250) as u8, (k % 250 + 2) as u8))];
        b.cluster.pods.push(p);
    }
}

/// What the equivalence checker compares with the reference evaluator.
#[derive(Clone, Copy)]
enum Reference {
    /// Against the plan only (no world).
    PlanOnly,
    /// The plan, and the reference evaluator on at most this many packets.
    Limit(usize),
    /// The default: the plan and the reference evaluator on every packet.
    Every,
}

fn measure(name: &str, w: &World, plan: &Verified<Plan>, runs: usize, reference: Reference) {
    let c = plan.counts();
    let (mut generate_t, mut stat, mut eq, mut total, mut default_path) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    let (world, reference_limit) = match reference {
        Reference::PlanOnly => (None, None),
        Reference::Limit(n) => (Some(w), Some(n)),
        Reference::Every => (Some(w), None),
    };
    let options = Options { reference_limit, ..Options::default() };
    for _ in 0..runs {
        // the steps, classifier only
        let t0 = Instant::now();
        let g = codegen::generate(plan, &options).expect("generates");
        let t1 = Instant::now();
        let a = g.artifact(plan).expect("static verifier");
        let t2 = Instant::now();
        let check = equiv::CheckOptions { reference_limit };
        let v = equiv::check_with(a, plan, world, &check).expect("equivalent");
        let t3 = Instant::now();
        // what `egret compile -o`, `egret verify` and the agent run: the node's complete artifact
        let n = codegen::node::compile_node(plan, &options, world).expect("node artifact");
        let t4 = Instant::now();
        assert_eq!(n.report().reference_checks, v.report().reference_checks);
        generate_t.push(t1 - t0);
        stat.push(t2 - t1);
        eq.push(t3 - t2);
        total.push(t3 - t0);
        default_path.push(t4 - t3);
        last = Some((g.layout, g.program.insns.len(), v.report()));
    }
    let Some((layout, insns, r)) = last else { return };
    println!(
        "\n{name}: {} endpoints, {} classes, {} class entries, {} internal prefixes -> {layout} layout, {insns} instructions",
        c.endpoints, c.classes, c.class_entries, c.internal_entries
    );
    println!(
        "  equivalence: {} packets ({} also against the reference evaluator), {} interpreter instructions; static verifier processed {}",
        r.cases, r.reference_checks, r.insns, r.verifier_insns
    );
    println!("  generate                      {}", ms(median(generate_t)));
    println!("  static verify + ELF write     {}", ms(median(stat)));
    println!("  equivalence check             {}", ms(median(eq)));
    println!("  total, classifier (median of {runs})  {}", ms(median(total)));
    println!("  node::compile_node (median of {runs}) {}", ms(median(default_path)));
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(11);
    let t = Instant::now();
    let mut b = bundle();
    let w = World::new(&b, &ResolveOptions { service_cidrs: vec![v4(10, 96, 0, 0, 12)] });
    let plans = Session::new().compile_all(&w).expect("compiles");
    println!("synthetic cluster resolved and compiled in {:.1} s", t.elapsed().as_secs_f64());
    let (busiest, plan) =
        plans.iter().max_by_key(|(n, p)| (p.counts().class_entries, std::cmp::Reverse((*n).clone()))).expect("nodes");
    measure(
        &format!("busiest node {busiest}, every packet against the plan only"),
        &w,
        plan,
        runs,
        Reference::PlanOnly,
    );
    measure(&format!("busiest node {busiest}, + the reference on 32 packets"), &w, plan, runs, Reference::Limit(32));
    measure(
        &format!("busiest node {busiest}, + the reference on every packet (the default)"),
        &w,
        plan,
        runs,
        Reference::Every,
    );

    add_stress_pods(&mut b);
    let w = World::new(&b, &ResolveOptions { service_cidrs: vec![v4(10, 96, 0, 0, 12)] });
    let plan = Session::new().compile_node(&w, "node-00000").expect("compiles");
    let stress_runs = runs.min(3);
    measure(
        "stress node node-00000 (all 1,000 policies apply), against the plan only",
        &w,
        &plan,
        stress_runs,
        Reference::PlanOnly,
    );
    measure(
        "stress node node-00000, + the reference on every packet (the default)",
        &w,
        &plan,
        stress_runs,
        Reference::Every,
    );
}
