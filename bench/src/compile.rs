//! `egret-bench compile`: the compiler core on the large synthetic cluster
//! (`egret_compiler::synth::LARGE`: 5,000 nodes (20 of them gateways),
//! 100,000 pods in 50 namespaces, 1,000 policies with 10 destination and 3
//! excluded CIDRs each), one thread:
//! - resolution and per-stage compile times for all nodes (median of `runs`;
//!   target < 5 s);
//! - one pod added → `World::add_pod` + recompile of its node (median of 51;
//!   target < 1 ms);
//! - table entries per node, egret's layout next to Cilium's (pods × CIDRs,
//!   the same on every node).

use crate::report::{Table, median, ms};
use egret_compiler::cilium;
use egret_compiler::planner::{Planner, StageTimes};
use egret_compiler::resolve::{Options, World};
use egret_compiler::synth::{self, sp, v4};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const SHAPE: synth::Shape = synth::LARGE;

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// Runs the benchmark (`runs` full compiles).
///
/// # Errors
/// A compile failure of the synthetic input (a bug).
pub fn run(runs: usize) -> anyhow::Result<Vec<Table>> {
    let b = synth::bundle(&SHAPE);
    let (nodes, pods, policies) = (SHAPE.nodes, SHAPE.pods, SHAPE.policies);
    let mut resolve = Vec::new();
    let mut stages: Vec<StageTimes> = Vec::new();
    let mut totals = Vec::new();
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let w = World::new(&b, &Options { service_cidrs: vec![v4(10, 96, 0, 0, 12)] });
        resolve.push(t.elapsed());
        let mut s = Planner::new();
        let t = Instant::now();
        s.warm(&w);
        let plans = s.plan_all(&w).map_err(|e| anyhow::anyhow!("{e}"))?;
        totals.push(t.elapsed());
        stages.push(s.times);
        last = Some((w, s, plans));
    }
    let Some((mut w, mut session, plans)) = last else { anyhow::bail!("no run") };
    let pick = |f: fn(&StageTimes) -> Duration| median(stages.iter().map(f).collect());
    let mut full = Table::new(
        format!(
            "Compile: {nodes} nodes, {pods} pods, {policies} policies (10 destination + 3 excluded CIDRs each), all nodes, median of {} runs, one thread; {} distinct class rule sets",
            runs.max(1),
            session.distinct_classes()
        ),
        &["stage", "median (ms)"],
    );
    let (resolve_t, total_t) = (median(resolve), median(totals));
    full.row(vec!["resolve (`World::new`)".into(), ms(resolve_t)]);
    full.row(vec!["class tables (memoized)".into(), ms(pick(|s| s.tables))]);
    full.row(vec!["lower (classes, gateway tables)".into(), ms(pick(|s| s.lower))]);
    full.row(vec![
        "verify IR + layout + verify plan".into(),
        ms(pick(|s| s.verify_ir) + pick(|s| s.layout) + pick(|s| s.verify_plan)),
    ]);
    full.row(vec!["compile all nodes".into(), ms(total_t)]);
    full.row(vec!["resolve + compile (target < 5,000)".into(), ms(resolve_t + total_t)]);

    // one pod added → recompile its node
    let target = "node-00042";
    let (mut add, mut inc) = (Vec::new(), Vec::new());
    for k in 0..51 {
        let mut p = synth::pod(&SHAPE, 42 + 5000 * 7);
        p.name = sp(format!("new-pod-{k}"));
        p.uid = format!("new-{k}");
        p.pod_ips = vec![IpAddr::V4(Ipv4Addr::new(10, 0, 42, 100 + k as u8))];
        let t = Instant::now();
        w.add_pod(&p).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t1 = Instant::now();
        let plan = session.plan_node(&w, target).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t2 = Instant::now();
        add.push(t1 - t);
        inc.push(t2 - t);
        anyhow::ensure!(plan.class_of(p.pod_ips[0]).is_some(), "the new pod is an endpoint of {target}");
    }
    let t = Instant::now();
    let gw = session.plan_node(&w, "node-00003").map_err(|e| anyhow::anyhow!("{e}"))?;
    let gw_t = t.elapsed();
    let mut incremental =
        Table::new(format!("One pod added → recompile its node ({target}), median of 51"), &["step", "median (µs)"]);
    incremental.row(vec!["`World::add_pod`".into(), us(median(add))]);
    incremental.row(vec!["`add_pod` + `verified_node` (target < 1,000)".into(), us(median(inc))]);
    incremental.row(vec![
        format!("(its gateway node-00003, {} gateway-table entries)", gw.counts().gateway_entries),
        us(gw_t),
    ]);

    // table sizes
    let cilium_entries = cilium::entry_count(&w);
    let mut per_node: Vec<usize> = plans.values().map(|p| p.counts().total()).collect();
    per_node.sort_unstable();
    let sum: usize = per_node.iter().sum();
    let mut sizes = Table::new(
        "Map entries per node: egret (its own endpoints and gateway duty) vs Cilium (every selected pod × CIDR, on every node; default cap 16,384)",
        &["node", "egret", "Cilium"],
    );
    for (name, v) in [
        ("median node", per_node[per_node.len() / 2]),
        ("busiest node", per_node[per_node.len() - 1]),
        ("smallest", per_node[0]),
    ] {
        sizes.row(vec![name.into(), v.to_string(), cilium_entries.to_string()]);
    }
    sizes.row(vec!["all nodes".into(), sum.to_string(), (cilium_entries * nodes).to_string()]);
    Ok(vec![full, incremental, sizes])
}
