//! Helpers shared by the `core_*` tests: worlds from YAML, and the
//! plan-vs-reference equivalence check.
#![allow(dead_code)]

use egret_compiler::compile::{self, Session};
use egret_compiler::eval::{self, Source};
use egret_compiler::ir::Action;
use egret_compiler::ir::prefix::segments;
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
    let mut session = Session::new();
    let plans = session.compile_all(w).expect("compiles");
    let mut checks = 0;
    let reps = [representatives(w, Family::V4), representatives(w, Family::V6)];
    // expected gateway tables: (gateway node, slot) → sources
    let mut expected: std::collections::BTreeSet<(String, u32, IpAddr)> = Default::default();
    for e in w.endpoints() {
        for src in &e.ips {
            let fam = Family::of(src);
            let reps = &reps[if fam == Family::V4 { 0 } else { 1 }];
            for dst in reps {
                let d = eval::decide(w, Source::Ip(*src), *dst);
                let want = d.verdict.action();
                // the trail-light evaluator the code generator's checker uses decides the same
                let quick = eval::decide_verdict(w, Source::Ip(*src), *dst);
                assert_eq!(quick.verdict, d.verdict, "{src} -> {dst}: decide_verdict differs from decide");
                assert_eq!(quick.winner, d.winner, "{src} -> {dst}: winner differs");
                if let Some(n) = e.node {
                    let name = &w.node(n).name;
                    let plan = &plans[name];
                    let got = plan.lookup(*src, *dst);
                    assert_eq!(got, want, "node {name}: {src} -> {dst}: plan {got:?} vs eval {:#?}", d.verdict);
                    checks += 1;
                }
                match want {
                    Action::Redirect { gateway, slot } => {
                        let gw = w.node_with_ip(gateway).expect("gateway node").name.clone();
                        expected.insert((gw, slot.0, *src));
                    }
                    Action::LocalEgress { slot } => {
                        let gw = w.node(e.node.expect("local egress has a node")).name.clone();
                        expected.insert((gw, slot.0, *src));
                    }
                    _ => {}
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
        let single = compile::compile_node(w, name).expect("compiles");
        assert_eq!(single.to_text(), p.to_text(), "fresh and session plans differ for {name}");
    }
    assert_eq!(actual, expected, "gateway tables differ from the decisions");
    checks
}
