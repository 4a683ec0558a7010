//! Helpers shared by the `core_*` tests: worlds from YAML, and the
//! plan-vs-reference equivalence check.
#![expect(clippy::unwrap_used, reason = "the shared core test helpers unwrap literal inputs")]

use egret_compiler::eval::{self, Source};
use egret_compiler::ir::prefix::segments;
use egret_compiler::ir::{Effect, Health};
use egret_compiler::planner::{self, Planner};
use egret_compiler::resolve::{Options, World};
use egret_lang::ast::Bundle;
use egret_lang::net::{Cidr, Family, u128_to_ip};
use egret_lang::source::FileId;
use std::net::IpAddr;

/// Parses YAML documents into a bundle; panics on parse diagnostics.
pub fn bundle(yaml: &str) -> Bundle {
    let (b, d) = egret_lang::k8s::parse_yaml(FileId(0), yaml);
    assert!(d.is_empty(), "parse diagnostics: {d:#?}");
    b
}

pub fn world(yaml: &str) -> World {
    World::new(&bundle(yaml), &Options::default())
}

pub fn world_svc(yaml: &str, svc: &[&str]) -> World {
    World::new(&bundle(yaml), &Options { service_cidrs: svc.iter().map(|s| s.parse().unwrap()).collect() })
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

/// A Node document.
pub fn node(name: &str, ip: &str, labels: &str, ready: bool, pod_cidr: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec: {{podCIDRs: [{pod_cidr}]}}\nstatus:\n  addresses: [{{type: InternalIP, address: \"{ip}\"}}]\n  conditions: [{{type: Ready, status: \"{}\"}}]\n",
        if ready { "True" } else { "False" }
    )
}

/// A Pod document (IPs comma-separated).
pub fn pod(ns: &str, name: &str, uid: &str, node: &str, ips: &str, labels: &str) -> String {
    let ips: Vec<String> =
        ips.split(',').filter(|s| !s.is_empty()).map(|i| format!("{{ip: \"{}\"}}", i.trim())).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, uid: \"{uid}\", labels: {{{labels}}}}}\nspec: {{nodeName: {node}}}\nstatus: {{phase: Running, podIPs: [{}]}}\n",
        ips.join(", ")
    )
}

pub fn namespace(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n")
}

/// A policy: `selectors` and `gateway` are YAML flow text.
pub fn policy(name: &str, selectors: &str, dests: &[&str], excl: &[&str], gateway: &str) -> String {
    let q = |v: &[&str]| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata: {{name: {name}}}\nspec:\n  selectors: {selectors}\n  destinationCIDRs: [{}]\n  excludedCIDRs: [{}]\n  {gateway}\n",
        q(dests),
        q(excl)
    )
}

pub fn docs(d: &[String]) -> String {
    d.join("---\n")
}

/// Representative destinations of every interval of a family: both ends of
/// every elementary segment cut by all prefixes of the world's policies and
/// internal ranges.
pub fn representatives(w: &World, fam: Family) -> Vec<IpAddr> {
    let mut cuts: Vec<Cidr> = w.internal_ranges().prefixes.clone();
    for p in w.policies() {
        cuts.extend(p.destinations.iter().chain(&p.excluded).copied());
    }
    let mut out = Vec::new();
    for s in segments(fam, &cuts) {
        out.push(u128_to_ip(fam, s.lo));
        if s.hi != s.lo {
            out.push(u128_to_ip(fam, s.hi));
        }
    }
    out
}

/// For every node: compiles the plan (fresh and through one shared session,
/// which must agree) and checks `plan.lookup == eval::decide` for every local
/// endpoint IP and every representative destination of its family; checks
/// that gateway tables hold exactly the sources that some decision
/// redirects to the node with that slot. Returns the number of checks.
pub fn check_equivalence(w: &World) -> usize {
    let mut session = Planner::new();
    let plans = session.plan_all(w).expect("compiles");
    let mut checks = 0;
    let reps = [representatives(w, Family::V4), representatives(w, Family::V6)];
    // one prepared reference evaluator for the whole world (its per-endpoint memo is exercised)
    let mut reference = eval::Reference::new(w);
    // expected gateway tables: (gateway node, slot) → sources
    let mut expected: std::collections::BTreeSet<(String, u32, IpAddr)> = Default::default();
    for e in w.endpoints() {
        for src in &e.ips {
            let fam = Family::of(src);
            let reps = &reps[if fam == Family::V4 { 0 } else { 1 }];
            for dst in reps {
                let d = eval::decide(w, Source::Ip(*src), *dst);
                // the prepared evaluator the code generator's checker uses decides the same
                let quick = reference.decide(Source::Ip(*src), *dst);
                assert_eq!(quick.verdict, d.verdict, "{src} -> {dst}: eval::Reference differs from decide");
                assert_eq!(quick.winner, d.winner, "{src} -> {dst}: winner differs");
                assert_eq!(quick.gateway, d.gateway, "{src} -> {dst}: gateway choice differs");
                // its trail: exactly decide's entries that select the endpoint and have a containing entry
                let relevant: Vec<_> = d
                    .trail
                    .iter()
                    .filter(|c| {
                        matches!(c.selection, eval::Selection::Selected { .. })
                            && c.destination != eval::DestinationMatch::NoEntryContains
                    })
                    .map(|c| (&c.policy, &c.selection, &c.destination, &c.outcome))
                    .collect();
                let quick_trail: Vec<_> =
                    quick.trail.iter().map(|c| (&c.policy, &c.selection, &c.destination, &c.outcome)).collect();
                assert_eq!(quick_trail, relevant, "{src} -> {dst}: trail differs");
                let plan = e.node.map(|n| &plans[&w.node(n).name]);
                if let Some(plan) = plan {
                    // with the snapshot's liveness (Ready), as `egret explain` decides
                    let got = plan.lookup(*src, *dst).resolve(w.ready_health());
                    assert_eq!(
                        got,
                        d.verdict.effect(),
                        "node {}: {src} -> {dst}: plan vs eval {:#?}",
                        plan.node,
                        d.verdict
                    );
                    checks += 1;
                }
                // every step of the failover order: take the gateway in effect
                // down, decide again, until the traffic is dropped
                let mut health = Health::all_up();
                loop {
                    let d = reference.decide_with(Source::Ip(*src), *dst, &health);
                    let want = d.verdict.effect();
                    if let Some(plan) = plan {
                        let got = plan.lookup(*src, *dst).resolve(&health);
                        assert_eq!(got, want, "node {}: {src} -> {dst} with {health:?}: plan vs eval", plan.node);
                        checks += 1;
                    }
                    let gateway = match want {
                        Effect::Redirect { gateway, slot } => {
                            let gw = w.node_with_ip(gateway).expect("gateway node").name.clone();
                            expected.insert((gw, slot.0, *src));
                            gateway
                        }
                        Effect::LocalEgress { slot } => {
                            let node = w.node(e.node.expect("local egress has a node"));
                            expected.insert((node.name.clone(), slot.0, *src));
                            node.ip.expect("a gateway has an IPv4 address")
                        }
                        _ => break,
                    };
                    assert!(health.down.insert(gateway), "{src} -> {dst}: a down gateway was chosen");
                }
            }
        }
    }
    let mut actual: std::collections::BTreeSet<(String, u32, IpAddr)> = Default::default();
    for (name, p) in &plans {
        for t in &p.gateway_tables {
            for s in &t.sources {
                actual.insert((name.clone(), t.slot.0, *s));
            }
        }
        let single = planner::plan_node(w, name).expect("compiles");
        assert_eq!(single.to_text(), p.to_text(), "fresh and session plans differ for {name}");
    }
    assert_eq!(actual, expected, "gateway tables differ from the decisions");
    checks
}

// ---- random policy sets and snapshots (shared by core_property and the codegen tests) ----

/// splitmix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
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

pub fn selector(r: &mut Rng) -> String {
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

pub fn gateway_entry(r: &mut Rng) -> String {
    let sel = format!("nodeSelector: {{matchLabels: {{gw: {}}}}}", r.pick(&["g1", "g2", "g3", "nowhere"]));
    match r.below(4) {
        0 => format!("{{{sel}, egressIP: \"198.51.100.{}\"}}", r.below(3) + 1),
        1 => format!("{{{sel}, interface: {}}}", r.pick(&["eth0", "eth1", "up"])),
        _ => format!("{{{sel}}}"),
    }
}

/// A random scenario.
pub fn scenario(seed: u64) -> (String, Vec<&'static str>) {
    let mut r = Rng(seed);
    let mut d = Vec::new();
    let nodes = 2 + r.below(4);
    for i in 0..nodes {
        let mut labels = vec![format!("zone: {}", r.pick(&["a", "b"]))];
        if r.chance(60) {
            labels.push(format!("gw: {}", r.pick(&["g1", "g2", "g3"])));
        }
        // every fifth node (by seed, not drawn: the rest of the scenario stays
        // as it was) has only an IPv6 InternalIP: an IPv6 underlay
        let address = if (seed + i as u64).is_multiple_of(5) {
            format!("2001:db8:1::{}", 10 + i)
        } else {
            format!("192.0.2.{}", 10 + i)
        };
        let mut n = node(&format!("n{i}"), &address, &labels.join(", "), r.chance(80), &format!("10.{}.0.0/24", i + 1));
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
