//! Snapshot tests of every text form on the article's example
//! (`tests/in/article/`): IR, optimized IR, plans, the Cilium view, explain
//! and diff. Outputs live in `tests/out/`; a change is reviewed as a diff
//! (`cargo insta review`).
#![expect(clippy::unwrap_used, reason = "tests unwrap literal inputs")]

use crate::core_common as common;

use egret_compiler::resolve::{Options, World};
use egret_compiler::{cilium, diff, explain, ir, planner};
use egret_lang::ast::Bundle;
use egret_lang::source::SourceMap;

fn load(files: &[&str]) -> World {
    let mut sm = SourceMap::new();
    let mut b = Bundle::default();
    for f in files {
        let path = format!("{}/tests/in/article/{f}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let l = egret_lang::load::parse_text(&mut sm, f, text);
        assert!(l.diagnostics.is_empty(), "{f}: {:?}", l.diagnostics);
        b.extend(l.bundle);
    }
    let w = World::new(&b, &Options { service_cidrs: vec!["10.96.0.0/12".parse().unwrap()] });
    assert!(w.diagnostics().is_empty(), "{:?}", w.diagnostics());
    w
}

fn article() -> World {
    load(&["policy.yaml", "cluster.yaml"])
}

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({snapshot_path => "../out", prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

#[test]
fn ir_text() {
    let w = article();
    for node in ["worker-1", "gateway-1"] {
        let m = planner::emit_ir(&w, node, ir::Stage::Lowered).unwrap();
        snap!(format!("ir-{node}"), ir::text::emit(&m));
        let m = planner::emit_ir(&w, node, ir::Stage::Minimized).unwrap();
        snap!(format!("ir-opt-{node}"), ir::text::emit(&m));
    }
}

#[test]
fn plan_text() {
    let w = article();
    let plans = planner::Planner::new().plan_all(&w).unwrap();
    for (node, p) in &plans {
        snap!(format!("plan-{node}"), p.to_text());
    }
    assert_eq!(plans.len(), 3);
    assert!(common::check_equivalence(&w) > 100);
}

#[test]
fn cilium_view() {
    let w = article();
    snap!("cilium-worker-1", cilium::render(&w, "worker-1", cilium::Format::Text).unwrap());
    snap!("cilium-gateway-1", cilium::render(&w, "gateway-1", cilium::Format::Text).unwrap());
    snap!("cilium-gateway-1-json", cilium::render(&w, "gateway-1", cilium::Format::Json).unwrap());
    assert_eq!(cilium::entry_count(&w), 12);
}

#[test]
fn explain_text() {
    let w = article();
    let cases = [
        ("explain-api-external", "production/api-7d9c-abcde", "8.8.8.8:443"),
        ("explain-api-private", "production/api-7d9c-abcde", "172.20.1.1"),
        ("explain-api-internal", "production/api-7d9c-abcde", "10.96.0.10:53"),
        ("explain-web-unselected", "production/web-0", "8.8.8.8"),
        ("explain-staging-unselected", "staging/api-0", "8.8.8.8"),
        ("explain-batch-local", "10.244.0.10", "1.1.1.1"),
        ("explain-not-an-endpoint", "192.0.2.99", "1.1.1.1"),
    ];
    for (name, from, to) in cases {
        let e = explain::explain(&w, from, to).unwrap();
        snap!(name, explain::render(&e, explain::Format::Human));
    }
    let e = explain::explain(&w, "production/api-7d9c-abcde", "8.8.8.8:443").unwrap();
    snap!("explain-api-external-json", explain::render(&e, explain::Format::Json));
}

#[test]
fn diff_text() {
    let old = article();
    let new = load(&["policy-v2.yaml", "cluster.yaml"]);
    let d = diff::compute(&old, &new);
    assert!(!d.is_empty());
    snap!("diff-human", diff::render(&d, diff::Format::Human));
    snap!("diff-json", diff::render(&d, diff::Format::Json));
    snap!("diff-markdown", diff::render(&d, diff::Format::Markdown));
    let same = diff::compute(&old, &article());
    assert!(same.is_empty());
    snap!("diff-none", diff::render(&same, diff::Format::Human));
}
