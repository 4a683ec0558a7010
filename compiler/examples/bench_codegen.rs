//! Code generation benchmark (a program, not a timed test): generating and
//! verifying (static verifier + equivalence checker, the latter also against
//! the reference evaluator) the classifier of a busy node of the synthetic
//! 1,000-policy cluster of `bench_compile.rs` (its generator is copied
//! here: 5,000 nodes, 100,000 pods, 1,000 policies with 10 destination and
//! 3 excluded CIDRs each). Target: < 100 ms for the busiest node.
//!
//! Also reported, for scale: a stress node that hosts one pod of each of
//! 1,000 apps, so that all 1,000 policies apply to it (1,000+ classes).
//!
//! Run: `cargo run --release -p egret-compiler --example bench_codegen [runs]`

use egret_compiler::codegen::{self, Options, equiv};
use egret_compiler::compile::Session;
use egret_compiler::plan::{Plan, Verified};
use egret_compiler::resolve::{Options as ResolveOptions, World};
use egret_lang::ast::{Bundle, GatewaySpec, LabelSelector, Labels, Namespace, Node, Origin, Pod, Policy, SelectorItem};
use egret_lang::net::Cidr;
use egret_lang::source::{Span, Spanned};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const NODES: usize = 5_000;
const GATEWAYS: usize = 20;
const PODS: usize = 100_000;
const NAMESPACES: usize = 50;
const POLICIES: usize = 1_000;
const APPS: usize = 2_000;

fn sp<T>(v: T) -> Spanned<T> {
    Spanned::new(v, Span::default())
}

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn selector(pairs: &[(&str, String)]) -> LabelSelector {
    LabelSelector {
        span: Span::default(),
        match_labels: pairs.iter().map(|(k, v)| (sp(k.to_string()), sp(v.clone()))).collect(),
        match_expressions: Vec::new(),
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Cidr {
    Cidr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), len)
}

fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i as u32 + 1)
}

fn pod(i: usize) -> Pod {
    let n = i % NODES;
    let slot = i / NODES + 2;
    Pod {
        span: Span::default(),
        namespace: format!("ns-{:02}", i % NAMESPACES),
        name: sp(format!("app-{:04}-{i:06}", i % APPS)),
        uid: format!("{:08x}-25a0-409d-952c-{:012x}", i.wrapping_mul(2_654_435_761) as u32, i),
        labels: labels(&[
            ("app", format!("app-{:04}", i % APPS)),
            ("tier", if i.is_multiple_of(2) { "web" } else { "db" }.into()),
        ]),
        node_name: Some(format!("node-{n:05}")),
        host_network: false,
        pod_ips: vec![IpAddr::V4(Ipv4Addr::new(10, (n / 256) as u8, (n % 256) as u8, slot as u8))],
        phase: Some("Running".into()),
    }
}

fn bundle() -> Bundle {
    let mut b = Bundle::default();
    for i in 0..NODES {
        let mut l = labels(&[("zone", format!("z{}", i % 3))]);
        if i < GATEWAYS {
            l.insert("egress-gw".into(), format!("g{i:02}"));
        }
        b.cluster.nodes.push(Node {
            span: Span::default(),
            name: sp(format!("node-{i:05}")),
            uid: String::new(),
            labels: l,
            internal_ips: vec![IpAddr::V4(node_ip(i))],
            pod_cidrs: vec![v4(10, (i / 256) as u8, (i % 256) as u8, 0, 24)],
            ready: Some(true),
        });
    }
    for i in 0..NAMESPACES {
        b.cluster.namespaces.push(Namespace {
            span: Span::default(),
            name: sp(format!("ns-{i:02}")),
            labels: labels(&[("team", format!("t{}", i % 10))]),
        });
    }
    for i in 0..PODS {
        b.cluster.pods.push(pod(i));
    }
    for j in 0..POLICIES {
        let broad = j % 50 == 0;
        let selectors = if broad {
            vec![SelectorItem {
                span: Span::default(),
                pod_selector: Some(selector(&[("tier", "web".into())])),
                namespace_selector: Some(selector(&[("team", format!("t{}", (j / 50) % 10))])),
                node_selector: None,
            }]
        } else {
            (0..2)
                .map(|k| SelectorItem {
                    span: Span::default(),
                    pod_selector: Some(selector(&[("app", format!("app-{:04}", (2 * j + k) % APPS))])),
                    namespace_selector: None,
                    node_selector: None,
                })
                .collect()
        };
        // Destination k: a /20 in 11.0.0.0-160.255.255.255; exclusions: a /24
        // inside destinations 1, 2 and 3.
        let first = |k: usize| 11 + ((j * 7 + k * 13) % 150) as u8;
        let mut dests: Vec<Cidr> = (0..10).map(|k| v4(first(k), (j % 256) as u8, (k * 16) as u8, 0, 20)).collect();
        if broad {
            dests[0] = v4(0, 0, 0, 0, 0);
        }
        let excl: Vec<Cidr> = (1..4).map(|k| v4(first(k), (j % 256) as u8, (k * 16 + 1) as u8, 0, 24)).collect();
        let gw = |g: usize| GatewaySpec {
            span: Span::default(),
            node_selector: selector(&[("egress-gw", format!("g{:02}", g % GATEWAYS))]),
            egress_ip: Some(sp(IpAddr::V4(Ipv4Addr::new(198, 18, (g % GATEWAYS) as u8, 1)))),
            interface: None,
        };
        b.policies.push(Policy {
            name: sp(format!("policy-{j:04}")),
            uid: None,
            namespace: None,
            origin: Origin::Crd,
            span: Span::default(),
            spec_span: Span::default(),
            selectors,
            destination_cidrs: dests.into_iter().map(sp).collect(),
            excluded_cidrs: excl.into_iter().map(sp).collect(),
            egress_gateway: if j % 5 == 0 { None } else { Some(gw(j)) },
            egress_gateways: if j % 5 == 0 { vec![gw(j), gw(j + 1)] } else { Vec::new() },
        });
    }
    b
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

fn measure(name: &str, w: &World, plan: &Verified<Plan>, runs: usize, reference: Option<Option<usize>>) {
    let c = plan.counts();
    let (mut generate_t, mut stat, mut eq, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs {
        let t0 = Instant::now();
        let g = codegen::generate(plan, &Options::default()).expect("generates");
        let t1 = Instant::now();
        let a = g.artifact(plan).expect("static verifier");
        let t2 = Instant::now();
        let options = equiv::CheckOptions { reference_limit: reference.flatten() };
        let v = equiv::check_with(a, plan, reference.map(|_| w), &options).expect("equivalent");
        let t3 = Instant::now();
        generate_t.push(t1 - t0);
        stat.push(t2 - t1);
        eq.push(t3 - t2);
        total.push(t3 - t0);
        last = Some((g.layout, g.program.insns.len(), v.report()));
    }
    let Some((layout, insns, r)) = last else { return };
    println!(
        "\n{name}: {} endpoints, {} classes, {} class entries, {} internal prefixes -> {layout} layout, {insns} instructions",
        c.endpoints, c.classes, c.class_entries, c.internal_entries
    );
    println!(
        "  equivalence: {} packets ({} also against eval::decide), {} interpreter instructions; static verifier processed {}",
        r.cases, r.reference_checks, r.insns, r.verifier_insns
    );
    println!("  generate                      {}", ms(median(generate_t)));
    println!("  static verify + ELF write     {}", ms(median(stat)));
    println!("  equivalence check             {}", ms(median(eq)));
    println!("  total (median of {runs})          {}", ms(median(total)));
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
    measure(&format!("busiest node {busiest}, every packet against the plan"), &w, plan, runs, None);
    measure(&format!("busiest node {busiest}, + eval::decide on 32 packets"), &w, plan, runs, Some(Some(32)));
    measure(&format!("busiest node {busiest}, + eval::decide on every packet"), &w, plan, 3, Some(None));

    add_stress_pods(&mut b);
    let w = World::new(&b, &ResolveOptions { service_cidrs: vec![v4(10, 96, 0, 0, 12)] });
    let plan = Session::new().compile_node(&w, "node-00000").expect("compiles");
    measure("stress node node-00000 (all 1,000 policies apply), against the plan", &w, &plan, 3, None);
    measure("stress node node-00000, + eval::decide on 32 packets", &w, &plan, 3, Some(Some(32)));
}
