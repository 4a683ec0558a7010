//! Helpers shared by the `codegen_*` tests: the example worlds, the core
//! tests' inputs, random scenarios (the generator shared with `core_property.rs`,
//! in `core_common`), plans of every node.

pub mod kernel;

use crate::core_common;

pub use core_common::{bundle, scenario};
use egret_compiler::plan::{Plan, Verified};
use egret_compiler::planner::Planner;
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
    Planner::new().plan_all(w).expect("compiles")
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

/// One class, one endpoint, `n` disjoint /24s redirected (plus the internal 10/8).
pub fn wide_plan(n: u32) -> egret_compiler::plan::Verified<egret_compiler::plan::Plan> {
    use egret_compiler::ir::{Action, Entry, GatewayDecl};
    use egret_compiler::plan::{ClassId, ClassTable, EndpointEntry, Plan};
    use egret_compiler::resolve::SlotId;
    use std::net::{IpAddr, Ipv4Addr};
    let gw = Ipv4Addr::new(192, 0, 2, 100);
    let entries = (0..n)
        .map(|i| Entry {
            prefix: egret_lang::net::Cidr::new(IpAddr::V4(Ipv4Addr::from(0x2000_0000 + (i << 9))), 24),
            action: Action::redirect(gw.into(), SlotId(7)),
        })
        .collect();
    egret_compiler::plan::verify::verify(Plan {
        node: "n".into(),
        node_ip: Some(Ipv4Addr::new(192, 0, 2, 1).into()),
        internal: vec!["10.0.0.0/8".parse().expect("cidr")],
        gateways: vec![GatewayDecl { node: "g".into(), ip: gw.into() }],
        slots: vec![],
        endpoints: vec![EndpointEntry {
            ip: "10.0.0.2".parse().expect("ip"),
            class: ClassId(0),
            endpoint: "a/b".into(),
        }],
        classes: vec![ClassTable { id: ClassId(0), entries }],
        gateway_tables: vec![],
    })
    .expect("valid plan")
}
