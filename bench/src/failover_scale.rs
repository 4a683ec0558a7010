//! `egret-bench failover-scale`: a gateway failure at the agent's scale
//! (issue #14: "at 100,000 pods / 1,000 policies a gateway failure is
//! handled without a resolution or a compile: time from detection to map
//! write reported").
//!
//! The large synthetic cluster (`egret_compiler::synth::LARGE`: 5,000
//! nodes, 20 gateways, 100,000 pods, 1,000 policies) is resolved and one
//! worker node compiled, as the agent does on a node, policy or namespace
//! change — that is the cost a failover does *not* pay. The node's plan
//! names the gateways its failover choices use: they become the targets of
//! the agent's real prober (`egret_runtime::ha::probe::Probing`), run in a
//! network namespace of its own (its probes go nowhere: only loopback is
//! up) against real kernel maps (`egret_gw_live`, `egret_gw_down`,
//! `egret_probe_rx`, pinned in a bpffs directory of the run). The
//! datapath's part is played by this benchmark: before each tick it
//! records a reply in `egret_probe_rx` for every live gateway, as
//! `egret_tunnel_in` does. Each trial stops the replies of one gateway:
//! the third unanswered probe makes the prober decide it is down and write
//! `egret_gw_live` and `egret_gw_down`; the time from that decision to the
//! end of the write is what the prober records
//! (`ProberStatus::decide_to_write`, the agent's
//! `egret_gateway_decide_to_write_seconds`). Then the replies resume and the
//! gateway comes back after the hold-down (also a decision and a write).
//! Ticks run back to back on a synthetic clock (100 ms per tick): the
//! figures are the prober's own work, not waiting. The prober has no path
//! to the resolver or the compiler (its thread holds neither), so no
//! resolution or compile can be part of a failover; the resolve and
//! compile times printed beside are what a change costs instead.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use egret_bpf::templates::probe::ProbeRx;
use egret_bpf::templates::{GatewayLive, GatewaysDown};
use egret_compiler::planner::Planner;
use egret_compiler::resolve::{Options, World};
use egret_compiler::synth::{self, v4};
use egret_loader::{PinLayout, StateMap};
use egret_runtime::ha::probe::{ProberConfig, Probing};
use egret_testkit::minicluster;
use serde::Serialize;

use crate::failover::percentile;
use crate::report::Table;

/// The run's figures (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub nodes: usize,
    pub pods: usize,
    pub policies: usize,
    /// The node whose prober runs, and the gateways its choices name.
    pub node: String,
    pub targets: usize,
    /// What a node, namespace or policy change costs on the agent (not paid by a failover).
    pub resolve_ms: f64,
    pub compile_node_ms: f64,
    /// Down decisions (one per trial) and up decisions measured.
    pub trials: usize,
    pub decide_to_write_us_p50: f64,
    pub decide_to_write_us_p99: f64,
    pub decide_to_write_us_max: f64,
    /// Ticks from the gateway's last answer to the down decision (3 at the defaults).
    pub ticks_to_detect: Vec<u64>,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A bpffs directory of the run, removed on drop.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `trials` failures.
///
/// # Errors
/// No privilege, no bpffs at /sys/fs/bpf, or a set-up failure.
pub fn run(trials: usize) -> anyhow::Result<Report> {
    if let Some(m) = minicluster::missing_tools() {
        anyhow::bail!("the failover-scale benchmark needs root, bpffs and {m}");
    }
    let shape = synth::LARGE;
    let b = synth::bundle(&shape);
    let t = Instant::now();
    let world = World::new(&b, &Options { service_cidrs: vec![v4(10, 96, 0, 0, 12)] });
    let resolve = t.elapsed();
    // the worker whose choices name the most gateways
    let mut session = Planner::new();
    let mut best: Option<(String, BTreeSet<IpAddr>, Duration)> = None;
    for i in 0..shape.nodes.min(200) {
        let node = format!("node-{i:05}");
        let t = Instant::now();
        let Ok(plan) = session.plan_node(&world, &node) else { continue };
        let took = t.elapsed();
        let gws: BTreeSet<IpAddr> = plan.gateways.iter().map(|g| g.ip).collect();
        if best.as_ref().is_none_or(|(_, b, _)| gws.len() > b.len()) {
            best = Some((node, gws, took));
        }
    }
    let Some((node, targets, compile)) = best else { anyhow::bail!("no node compiled") };
    anyhow::ensure!(!targets.is_empty(), "no node of the synthetic cluster uses a gateway");

    // real maps in a bpffs directory of the run
    let root = PathBuf::from(format!("/sys/fs/bpf/egret-bench-scale-{}", std::process::id()));
    let pins = Pins(root.clone());
    let layout = PinLayout::new(&root);
    std::fs::create_dir_all(layout.state_dir())?;
    crate::pinned_maps::create_pinned(
        &layout.state_dir(),
        &[GatewayLive::map_def(), GatewaysDown::map_def(), ProbeRx::map_def()],
    );
    // a network namespace of the run: the probes go nowhere
    let ns = format!("egret-bench-scale-{}", std::process::id());
    minicluster::run("ip", &["netns", "add", &ns], None)?;
    let measured = minicluster::in_netns(&ns, move || measure(&root, targets.clone(), trials));
    let _ = minicluster::run("ip", &["netns", "del", &ns], None);
    drop(pins);
    let (mut samples, ticks_to_detect, targets) = measured.map_err(|e| anyhow::anyhow!("{e}"))?;
    samples.sort_by(f64::total_cmp);
    Ok(Report {
        nodes: shape.nodes,
        pods: shape.pods,
        policies: shape.policies,
        node,
        targets,
        resolve_ms: resolve.as_secs_f64() * 1e3,
        compile_node_ms: compile.as_secs_f64() * 1e3,
        trials,
        decide_to_write_us_p50: percentile(&samples, 0.5),
        decide_to_write_us_p99: percentile(&samples, 0.99),
        decide_to_write_us_max: samples.last().copied().unwrap_or(f64::NAN),
        ticks_to_detect,
    })
}

/// Inside the namespace: the prober against the pinned maps.
fn measure(
    root: &std::path::Path,
    targets: BTreeSet<IpAddr>,
    trials: usize,
) -> Result<(Vec<f64>, Vec<u64>, usize), minicluster::ClusterError> {
    let io = |e: String| minicluster::ClusterError::Io { what: "the prober".into(), source: std::io::Error::other(e) };
    let _ = minicluster::run("ip", &["link", "set", "lo", "up"], None);
    let mut config = ProberConfig::new(root, Ipv4Addr::new(192, 0, 2, 250).into());
    config.port = 4799;
    let interval = config.liveness.interval;
    let step = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    let mut p = Probing::new(config).map_err(|e| io(e.to_string()))?;
    p.set_targets(targets.clone());
    let layout = PinLayout::new(root);
    let rx = StateMap::open(&layout, &ProbeRx::map_def())
        .map_err(|e| io(e.to_string()))?
        .ok_or_else(|| io("no egret_probe_rx".into()))?;
    let live = StateMap::open(&layout, &GatewayLive::map_def())
        .map_err(|e| io(e.to_string()))?
        .ok_or_else(|| io("no egret_gw_live".into()))?;
    let mut now = egret_runtime::ha::probe::monotonic_ns();
    let tick = |p: &mut Probing, now: &mut u64, silent: Option<IpAddr>| -> Result<bool, minicluster::ClusterError> {
        // the datapath's part: a reply to the last probe from every live gateway
        let (seq, sent) = (p.status().seq, p.status().at_ns);
        if p.status().ticks > 0 {
            for gw in &targets {
                if Some(*gw) != silent {
                    let r = ProbeRx { seq, sent_ns: sent, recv_ns: sent + 50_000 };
                    rx.set(&ProbeRx::key(*gw), &r.to_bytes()).map_err(|e| io(e.to_string()))?;
                }
            }
        }
        *now += step;
        let changes = p.tick(*now);
        Ok(!changes.is_empty())
    };
    // every gateway up first
    for _ in 0..20 {
        tick(&mut p, &mut now, None)?;
    }
    let gateways: Vec<IpAddr> = targets.iter().copied().collect();
    let (mut samples, mut detect) = (Vec::new(), Vec::new());
    for i in 0..trials {
        let gw = gateways[i % gateways.len()];
        let mut ticks = 0u64;
        loop {
            ticks += 1;
            if tick(&mut p, &mut now, Some(gw))? {
                break;
            }
            if ticks > 100 {
                return Err(io(format!("{gw} never went down")));
            }
        }
        let key = GatewayLive { gateway: gw, down: true }.key();
        let written = live.get(&key).map_err(|e| io(e.to_string()))?.is_some();
        if !written {
            return Err(io(format!("{gw} decided down but not written")));
        }
        detect.push(ticks);
        samples.extend(p.status().decide_to_write_last.map(us));
        // back up after the hold-down
        let mut ticks = 0u64;
        loop {
            ticks += 1;
            if tick(&mut p, &mut now, None)? {
                break;
            }
            if ticks > 200 {
                return Err(io(format!("{gw} never came back")));
            }
        }
        samples.extend(p.status().decide_to_write_last.map(us));
    }
    Ok((samples, detect, targets.len()))
}

/// The report as a table.
#[must_use]
pub fn render(r: &Report) -> String {
    let mut t = Table::new(
        format!(
            "A gateway failure at {} nodes, {} pods, {} policies: the prober of `{}` ({} gateways probed), {} failures and returns, real kernel maps",
            r.nodes, r.pods, r.policies, r.node, r.targets, r.trials
        ),
        &["step", "time"],
    );
    t.row(vec!["a change: resolve the cluster (not on the failover path)".into(), format!("{:.0} ms", r.resolve_ms)]);
    t.row(vec!["a change: compile the node (not on the failover path)".into(), format!("{:.1} ms", r.compile_node_ms)]);
    t.row(vec![
        "failover: decision → egret_gw_live written, p50".into(),
        format!("{:.1} µs", r.decide_to_write_us_p50),
    ]);
    t.row(vec![
        "failover: decision → egret_gw_live written, p99".into(),
        format!("{:.1} µs", r.decide_to_write_us_p99),
    ]);
    t.row(vec![
        "failover: decision → egret_gw_live written, max".into(),
        format!("{:.1} µs", r.decide_to_write_us_max),
    ]);
    format!(
        "{}\nticks from the last answer to the decision: {:?}\n",
        t.markdown(),
        r.ticks_to_detect.iter().collect::<BTreeSet<_>>()
    )
}
