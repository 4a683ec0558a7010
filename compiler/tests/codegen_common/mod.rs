//! Helpers shared by the `codegen_*` tests: the example worlds, the core
//! tests' inputs, random scenarios (the generator of `core_property.rs`,
//! copied so these tests do not rerun its properties), plans of every node.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![expect(clippy::unwrap_used, reason = "the shared core test helpers unwrap literal inputs")]

#[path = "../core_common/mod.rs"]
mod core_common;

pub use core_common::{bundle, docs, namespace, node, pod, policy};
use egret_compiler::compile::Session;
use egret_compiler::plan::{Plan, Verified};
use egret_compiler::resolve::{Options, World};
use egret_lang::source::SourceMap;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The repository's example (`examples/policies` + `examples/cluster`).
pub fn example_world() -> World {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut sm = SourceMap::new();
    let mut l = egret_lang::load::load(&mut sm, &[root.join("examples/policies")]);
    l.extend(egret_lang::load::load(&mut sm, &[root.join("examples/cluster")]));
    assert!(l.diagnostics.iter().all(|d| !d.is_error()), "{:?}", l.diagnostics);
    World::new(&l.bundle, &Options::default())
}

/// The core tests' inputs (`tests/in/article`, both policy versions).
pub fn article_worlds() -> Vec<(String, World)> {
    let mut out = Vec::new();
    for pol in ["policy.yaml", "policy-v2.yaml"] {
        let mut sm = SourceMap::new();
        let mut b = egret_lang::ast::Bundle::default();
        for f in [pol, "cluster.yaml"] {
            let path = format!("{}/tests/in/article/{f}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).expect("test input");
            let l = egret_lang::load::parse_text(&mut sm, f, text);
            assert!(l.diagnostics.is_empty(), "{f}: {:?}", l.diagnostics);
            b.extend(l.bundle);
        }
        let w = World::new(&b, &Options { service_cidrs: vec!["10.96.0.0/12".parse().expect("cidr")] });
        out.push((format!("article/{pol}"), w));
    }
    out
}

/// Every node's plan.
pub fn plans(w: &World) -> BTreeMap<String, Verified<Plan>> {
    Session::new().compile_all(w).expect("compiles")
}

/// The world of a random scenario.
pub fn random_world(seed: u64) -> World {
    let (yaml, svc) = scenario(seed);
    let w =
        World::new(&bundle(&yaml), &Options { service_cidrs: svc.iter().map(|s| s.parse().expect("cidr")).collect() });
    assert!(w.validation_errors().is_empty(), "seed {seed}: {:?}", w.validation_errors());
    w
}

/// Random worlds from consecutive seeds until `n` node plans with at least
/// one endpoint are collected: (seed, world, node).
pub fn random_plans(n: usize, first_seed: u64) -> Vec<(u64, World, String)> {
    let mut out = Vec::new();
    let mut seed = first_seed;
    while out.len() < n {
        let w = random_world(seed);
        let names: Vec<String> =
            plans(&w).into_iter().filter(|(_, p)| !p.endpoints.is_empty()).map(|(name, _)| name).collect();
        for name in names {
            if out.len() < n {
                out.push((seed, w.clone(), name));
            }
        }
        seed += 1;
    }
    out
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
}

const DESTS: &[&str] = &[
    "0.0.0.0/0",
    "8.0.0.0/6",
    "8.8.0.0/16",
    "8.8.8.0/24",
    "10.0.0.0/8",
    "203.0.113.0/24",
    "203.0.113.128/25",
    "192.0.2.0/24",
    "::/0",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "fd00::/8",
];
const EXCL: &[&str] =
    &["8.8.8.0/24", "10.1.0.0/16", "203.0.113.0/26", "2001:db8:1::/48", "8.0.0.0/8", "2001:db8:0:1::/64"];

fn selector(r: &mut Rng) -> String {
    let pod = match r.below(5) {
        0 => Some("{}".to_string()),
        1 => Some(format!("{{matchLabels: {{app: {}}}}}", r.pick(&["a", "b", "c"]))),
        2 => Some(format!(
            "{{matchExpressions: [{{key: tier, operator: {}, values: [web]}}]}}",
            r.pick(&["In", "NotIn"])
        )),
        3 => Some(format!("{{matchLabels: {{io.kubernetes.pod.namespace: ns{}}}}}", r.below(3))),
        _ => None,
    };
    let ns = match r.below(4) {
        0 => Some("{}".to_string()),
        1 => Some(format!("{{matchLabels: {{team: {}}}}}", r.pick(&["tx", "ty"]))),
        _ => None,
    };
    let (pod, ns) = match (pod, ns) {
        (None, None) => (Some("{}".to_string()), None),
        x => x,
    };
    let node = if r.chance(30) { Some(format!("{{matchLabels: {{zone: {}}}}}", r.pick(&["a", "b"]))) } else { None };
    let mut parts = Vec::new();
    if let Some(p) = pod {
        parts.push(format!("podSelector: {p}"));
    }
    if let Some(n) = ns {
        parts.push(format!("namespaceSelector: {n}"));
    }
    if let Some(n) = node {
        parts.push(format!("nodeSelector: {n}"));
    }
    format!("{{{}}}", parts.join(", "))
}

fn gateway_entry(r: &mut Rng) -> String {
    let sel = format!("nodeSelector: {{matchLabels: {{gw: {}}}}}", r.pick(&["g1", "g2", "g3", "nowhere"]));
    match r.below(4) {
        0 => format!("{{{sel}, egressIP: \"198.51.100.{}\"}}", r.below(3) + 1),
        1 => format!("{{{sel}, interface: {}}}", r.pick(&["eth0", "eth1", "up"])),
        _ => format!("{{{sel}}}"),
    }
}

/// A random scenario.
fn scenario(seed: u64) -> (String, Vec<&'static str>) {
    let mut r = Rng(seed);
    let mut d = Vec::new();
    let nodes = 2 + r.below(4);
    for i in 0..nodes {
        let mut labels = vec![format!("zone: {}", r.pick(&["a", "b"]))];
        if r.chance(60) {
            labels.push(format!("gw: {}", r.pick(&["g1", "g2", "g3"])));
        }
        let mut n = node(
            &format!("n{i}"),
            &format!("192.0.2.{}", 10 + i),
            &labels.join(", "),
            r.chance(80),
            &format!("10.{}.0.0/24", i + 1),
        );
        if r.chance(50) {
            n = n.replace(
                &format!("podCIDRs: [10.{}.0.0/24]", i + 1),
                &format!("podCIDRs: [10.{}.0.0/24, \"fd00:{i}::/64\"]", i + 1),
            );
        }
        d.push(n);
        if r.chance(40) {
            d.push(format!(
                "apiVersion: egret.dev/v1alpha1\nkind: NodeNetwork\nmetadata: {{name: n{i}}}\nspec:\n  defaultRouteInterface: eth0\n  interfaces:\n  - {{name: eth0, addresses: [fe80::1/64, 192.0.2.{}/24, 198.51.100.1/24, 2001:db8:ff::{i}/64]}}\n  - {{name: eth1, altNames: [up], addresses: [198.51.100.2/24]}}\n",
                10 + i
            ));
        }
    }
    for i in 0..3 {
        if r.chance(80) {
            d.push(namespace(&format!("ns{i}"), &format!("team: {}", r.pick(&["tx", "ty"]))));
        }
    }
    let pods = 2 + r.below(9);
    for i in 0..pods {
        let node_i = r.below(nodes + 1); // nodes = an unknown node
        let node_name = if node_i == nodes { "ghost".to_string() } else { format!("n{node_i}") };
        let subnet = if node_i == nodes { 99 } else { node_i + 1 };
        let mut ips = format!("10.{subnet}.0.{}", i + 2);
        if r.chance(50) {
            ips.push_str(&format!(",fd00:{}::{}", node_i, i + 2));
        }
        let mut labels = vec![format!("app: {}", r.pick(&["a", "b", "c"]))];
        if r.chance(50) {
            labels.push(format!("tier: {}", r.pick(&["web", "db"])));
        }
        let uid = if r.chance(20) { String::new() } else { format!("uid-{}", r.next() % 1000) };
        d.push(pod(&format!("ns{}", r.below(3)), &format!("p{i}"), &uid, &node_name, &ips, &labels.join(", ")));
    }
    let names = ["alpha", "beta", "gamma", "delta", "eps"];
    let npol = 1 + r.below(5);
    for name in names.iter().take(npol) {
        let items: Vec<String> = (0..1 + r.below(2)).map(|_| selector(&mut r)).collect();
        let dests: Vec<&str> = (0..1 + r.below(3)).map(|_| r.pick(DESTS)).collect();
        let excl: Vec<&str> = (0..r.below(3)).map(|_| r.pick(EXCL)).collect();
        let gw = if r.chance(70) {
            format!("egressGateway: {}", gateway_entry(&mut r))
        } else {
            let n = 1 + r.below(3);
            let entries: Vec<String> = (0..n).map(|_| gateway_entry(&mut r)).collect();
            format!("egressGateways: [{}]", entries.join(", "))
        };
        d.push(policy(name, &format!("[{}]", items.join(", ")), &dests, &excl, &gw));
    }
    let svc = if r.chance(50) { vec!["10.96.0.0/12"] } else { vec![] };
    (docs(&d), svc)
}
