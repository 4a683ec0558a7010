//! Compile benchmark (a program, not a timed test).
//!
//! Synthetic cluster: 5,000 nodes (20 of them gateways), 100,000 pods in 50
//! namespaces, 1,000 policies with 10 destination and 3 excluded CIDRs each
//! (980 select two apps; 20 broad ones select a team's web tier, ~5,000
//! pods each; every 5th uses two gateways). Reports, as medians over
//! repeated runs:
//! - resolution and per-stage compile times for all nodes (target < 5 s on one core);
//! - one pod added → `World::add_pod` + recompile of its node (target < 1 ms);
//! - table entries per node, egret's layout next to Cilium's (pods × CIDRs,
//!   the same on every node).
//!
//! Run: `cargo run --release -p egret-compiler --example bench_compile [runs [NODE]]`
//! (with NODE, also prints that node's plan).

use egret_compiler::cilium;
use egret_compiler::compile::{Session, StageTimes};
use egret_compiler::resolve::{Options, World};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use egret_compiler::synth::{self, sp, v4};

const SHAPE: synth::Shape = synth::LARGE;
const NODES: usize = SHAPE.nodes;
const PODS: usize = SHAPE.pods;
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
    format!("{:9.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let t = Instant::now();
    let b = bundle();
    println!(
        "synthetic input: {NODES} nodes, {PODS} pods, {POLICIES} policies × (10 destination + 3 excluded CIDRs); built in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let mut resolve = Vec::new();
    let mut stages: Vec<StageTimes> = Vec::new();
    let mut totals = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let w = World::new(&b, &Options { service_cidrs: vec![v4(10, 96, 0, 0, 12)] });
        resolve.push(t.elapsed());
        let mut s = Session::new();
        let t = Instant::now();
        s.warm(&w);
        let plans = s.compile_all(&w).expect("compiles");
        totals.push(t.elapsed());
        stages.push(s.times);
        last = Some((w, s, plans));
    }
    let Some((mut w, mut session, plans)) = last else { return };
    if let Some(show) = std::env::args().nth(2) {
        match plans.get(&show) {
            Some(p) => print!("{}", p.to_text()),
            None => println!("no node {show}"),
        }
    }
    let pick = |f: fn(&StageTimes) -> Duration| median(stages.iter().map(f).collect());
    println!("\nfull compile, all {NODES} nodes (median of {runs} runs, one thread):");
    println!("  resolve (World::new)        {}", ms(median(resolve.clone())));
    println!("  class tables (memoized)     {}", ms(pick(|s| s.tables)));
    println!("  lower (classes, gateways)   {}", ms(pick(|s| s.lower)));
    println!("  verify IR                   {}", ms(pick(|s| s.verify_ir)));
    println!("  layout                      {}", ms(pick(|s| s.layout)));
    println!("  verify plan                 {}", ms(pick(|s| s.verify_plan)));
    println!("  compile total               {}", ms(median(totals.clone())));
    println!("  resolve + compile           {}", ms(median(resolve) + median(totals)));
    println!("  distinct class rule sets: {}", session.distinct_classes());

    // One pod added → recompile its node.
    let target = "node-00042";
    let mut inc = Vec::new();
    let mut add = Vec::new();
    for k in 0..51 {
        let mut p = pod(42 + 5000 * 7);
        p.name = sp(format!("new-pod-{k}"));
        p.uid = format!("new-{k}");
        p.pod_ips = vec![IpAddr::V4(Ipv4Addr::new(10, 0, 42, 100 + k as u8))];
        let t = Instant::now();
        w.add_pod(&p).expect("adds").expect("is an endpoint");
        let t1 = Instant::now();
        let plan = session.compile_node(&w, target).expect("compiles");
        let t2 = Instant::now();
        add.push(t1 - t);
        inc.push(t2 - t);
        assert!(plan.class_of(p.pod_ips[0]).is_some());
    }
    println!("\none pod added → recompile its node ({target}), median of 51:");
    println!("  World::add_pod              {:9.1} µs", median(add).as_secs_f64() * 1e6);
    println!("  add_pod + compile_node      {:9.1} µs", median(inc).as_secs_f64() * 1e6);
    let t = Instant::now();
    let gw = session.compile_node(&w, "node-00003").expect("compiles");
    println!(
        "  (its gateway node-00003, recompiled: {:.1} ms, {} gateway-table entries)",
        t.elapsed().as_secs_f64() * 1e3,
        gw.counts().gateway_entries
    );

    // Table sizes.
    let t = Instant::now();
    let cilium_entries = cilium::entry_count(&w);
    let cilium_time = t.elapsed();
    let mut totals: Vec<usize> = plans.values().map(|p| p.counts().total()).collect();
    totals.sort_unstable();
    let sum: usize = totals.iter().sum();
    println!(
        "\nmap entries per node: egret (its own endpoints and gateway duty) vs Cilium (every selected pod × CIDR, on every node; default cap 16,384):"
    );
    println!(
        "  {:<12} {:>9} {:>8} {:>13} {:>9} {:>9} {:>11} {:>14}",
        "node", "endpoints", "classes", "class entries", "internal", "gateway", "egret total", "Cilium (each)"
    );
    for n in ["node-00000", "node-00003", "node-00042", "node-02500", "node-04999"] {
        let c = plans[n].counts();
        println!(
            "  {n:<12} {:>9} {:>8} {:>13} {:>9} {:>9} {:>11} {:>14}",
            c.endpoints,
            c.classes,
            c.class_entries,
            c.internal_entries,
            c.gateway_entries,
            c.total(),
            cilium_entries
        );
    }
    println!(
        "  all nodes: egret min {} / median {} / max {} per node, {} in total; Cilium {} per node, {} in total ({:.0}× per node at the median)",
        totals[0],
        totals[totals.len() / 2],
        totals[totals.len() - 1],
        sum,
        cilium_entries,
        cilium_entries * NODES,
        cilium_entries as f64 / totals[totals.len() / 2] as f64
    );
    println!(
        "  (cluster-internal prefixes: {} per node, after merging {} pod CIDRs, node IPs and the service CIDR)",
        plans["node-00000"].internal.len(),
        NODES * 2 + 1
    );
    println!("  Cilium entry count computed in {:.1} ms", cilium_time.as_secs_f64() * 1e3);
}
