//! `egret-agent status|maps` on real loaded generations (privileged): the
//! example's worker-1 compiled by egret in both classifier layouts and loaded
//! in a network namespace with a private bpffs. The decision table the
//! `maps` layout's kernel maps decode to is the one the plan gives (recorded
//! by the inline artifact), rendered with Cilium's columns; the binary prints
//! what the library renders; `status` names the generation and attachments.

use egret_testkit::netns as common;

use std::path::PathBuf;

use common::*;
use egret_bpf::artifact::Artifact;
use egret_compiler::codegen::{self, Layout};
use egret_compiler::plan::{Plan, Verified};
use egret_compiler::resolve::{Options, World};
use egret_lang::source::SourceMap;
use egret_loader::{Loader, LoaderConfig, view};
use egret_runtime::show;

const NODE: &str = "worker-1";

/// worker-1's plan and its artifact in `layout`, with or without the decision table.
fn compiled(world: &World, plan: &Verified<Plan>, layout: Layout, record: bool) -> Artifact {
    let options = codegen::Options { layout: Some(layout), ..codegen::Options::default() };
    let mut a = codegen::node::verified_node(plan, &options, Some(world)).expect("compiles").into_artifact();
    // the compiler records the table in every node artifact
    assert_eq!(a.manifest.decisions, Some(show::decision_table(plan, Some(world), layout.as_str())));
    if !record {
        // an artifact from before tables were recorded (digest recomputed)
        a.manifest.decisions = None;
        let counters = a.manifest.counters.clone();
        a = a.with_counters(counters);
    }
    a
}

#[test]
fn status_and_maps_show_the_decision_table_of_both_layouts() {
    if !privileged("status_and_maps_show_the_decision_table_of_both_layouts") {
        return;
    }
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut sources = SourceMap::new();
    let loaded = egret_lang::load::load(&mut sources, &[examples.join("policies"), examples.join("cluster")]);
    assert!(loaded.diagnostics.iter().all(|d| !d.is_error()), "the examples load");
    let world = World::new(&loaded.bundle, &Options::default());
    let plan = egret_compiler::planner::plan_node(&world, NODE).expect("plan");
    let expected = show::decision_table(&plan, Some(&world), "inline");
    assert!(!expected.rows.is_empty() && !expected.egress.is_empty(), "{expected:?}");

    let fs = Bpffs::new("show");
    let ns = Netns::new("show");
    add_tunnel(&ns.name);
    let entered = ns.enter();
    let (mut loader, _) = Loader::open(LoaderConfig::new(fs.root())).expect("open");

    // inline: the decisions are code; the table shown is the recorded one
    loader.apply(&compiled(&world, &plan, Layout::Inline, true)).expect("apply inline");
    let inline = view::decisions(&fs.root()).expect("decisions");
    assert_eq!(inline.source, view::DecisionSource::Recorded);
    assert_eq!(inline.rows, expected.rows);
    let inline_text = show::maps(&fs.root(), false).expect("maps");
    let (g, _) = loader.running().expect("running");
    let info = egret_loader::inspect::dump_map(&loader.layout().info(g), "egret_info").expect("info pinned");
    let bytes: usize = info.entries.iter().map(|e| e.values[0].len() / 2).sum();
    eprintln!("{NODE}: {} decision rows in a {bytes}-byte info record", expected.rows.len());

    // maps: decoded from the kernel's egret_src_class / egret_dst_v4 / egret_actions
    loader.apply(&compiled(&world, &plan, Layout::Maps, true)).expect("apply maps");
    let maps = view::decisions(&fs.root()).expect("decisions");
    assert_eq!(maps.source, view::DecisionSource::Maps);
    assert_eq!(maps.rows, expected.rows, "the kernel maps decode to the plan's decisions");
    assert_eq!(maps.internal, expected.internal);
    let maps_text = show::maps(&fs.root(), false).expect("maps");
    let table = |t: &str| t.lines().skip(1).take_while(|l| !l.starts_with("generation")).collect::<Vec<_>>().join("\n");
    assert_eq!(table(&inline_text), table(&maps_text), "both layouts render the same table");

    // the example's documented decision (README, `--emit cilium`): the
    // production pod leaves through gateway-1 (192.0.2.13) as 198.51.100.100
    let row = |src: &str, dst: &str| {
        maps_text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&src) && w.get(1) == Some(&dst))
            .map(|w| w.join(" "))
    };
    assert_eq!(row("10.244.1.10", "0.0.0.0/0").as_deref(), Some("10.244.1.10 0.0.0.0/0 198.51.100.100 192.0.2.13"));
    assert!(maps_text.lines().nth(1).is_some_and(|h| h.split_whitespace().eq([
        "Source",
        "IP",
        "Destination",
        "CIDR",
        "Egress",
        "IP",
        "Gateway",
        "IP"
    ])));
    assert!(maps_text.contains("NAT table use 0/65536 mappings, 0/65536 connections"), "{maps_text}");
    assert!(maps_text.contains("drops by reason: none") && maps_text.contains("connections: none"), "{maps_text}");

    // an inline artifact that recorded no table: nothing to show, and it says so
    loader.apply(&compiled(&world, &plan, Layout::Inline, false)).expect("apply inline, unrecorded");
    let bare = view::decisions(&fs.root()).expect("decisions");
    assert_eq!(bare.source, view::DecisionSource::Unavailable);
    assert!(show::maps(&fs.root(), false).expect("maps").contains("no decision table"));

    // the binary prints what the library renders; status names the generation
    let root = fs.root();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_egret-agent"))
        .args(["maps", "--bpffs", &root.to_string_lossy()])
        .output()
        .expect("egret-agent maps");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), show::maps(&root, false).expect("maps"));
    let (g, _) = loader.running().expect("running");
    let status = show::status(&root, false).expect("status");
    assert!(status.contains(&format!("running: generation {g}")), "{status}");
    assert!(status.lines().any(|l| l.trim_start().starts_with("tunnel-ingress") && l.contains("egret0")), "{status}");
    assert!(status.contains("egret_rnat_v4") && status.contains("state maps (kept across generations):"), "{status}");
    let bad =
        std::process::Command::new(env!("CARGO_BIN_EXE_egret-agent")).args(["maps", "--nope"]).output().expect("runs");
    assert_eq!(bad.status.code(), Some(2));

    finish(loader, entered, ns, fs);
}
