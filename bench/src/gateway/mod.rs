//! Gateway throughput: egret's datapath against a kernel NAT gateway, in the
//! mini-cluster (`egret_testkit::minicluster`), side by side in one run.
//!
//! Three mini-clusters with identical topology run at once:
//! - **egret**: one `egret-agent` per node; the labelled pod's packets are
//!   classified at its veth, tunnelled over VXLAN to the gateway node,
//!   SNATed by `egret_tunnel_in` and sent out of `eth1` with
//!   `bpf_redirect_neigh` — no netfilter, no IP forwarding on the gateway;
//! - **kernel NAT** (the comparison): no egret; the worker routes the
//!   labelled pod's traffic through a plain VXLAN device to the gateway node
//!   (the same encapsulation), the gateway decapsulates, forwards, and
//!   netfilter (`nft` `snat to` the egress IP, with conntrack) translates —
//!   the classic MASQUERADE gateway behind a tunnel;
//! - **routed kernel NAT** (a reference): the same without the tunnel
//!   (plain IP over the underlay), which no overlay cluster can do but shows
//!   what the encapsulation costs.
//!
//! Both send from the same pod (`egress-1` on `worker-1`) to the same server
//! with the same UDP payload size; one thread sends as fast as it can for a
//! fixed time (count-bounded), and the figure is frames **arrived at the
//! server's external interface** per second of sending. Trials alternate
//! between the two datapaths; medians and the ratio egret / kernel NAT are
//! reported. On veth, the whole path of a packet runs in the sender's
//! softirq, so this measures the per-packet cost of the complete path
//! (pod → node → gateway → server), not a NIC.

use std::path::Path;
use std::time::Duration;

use egret_testkit::minicluster::{self, Datapath, EGRESS_IP, Flood, MiniCluster, SERVER};
use serde::Serialize;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `egret-agent` binary.
    pub agent: std::path::PathBuf,
    /// Flow counts (distinct UDP source ports, round robin).
    pub flows: Vec<usize>,
    /// UDP payload bytes.
    pub payload: usize,
    /// Sending time per trial.
    pub duration: Duration,
    /// Upper bound on packets per trial.
    pub max_packets: u64,
    /// Trials per datapath and flow count.
    pub trials: usize,
}

/// One datapath's figures for one flow count.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Median frames/s arrived at the server.
    pub median_pps: f64,
    /// Every trial's frames/s.
    pub trials_pps: Vec<f64>,
    /// Sent, arrived and failed packets summed over the trials.
    pub sent: u64,
    /// Arrived at the server's interface, summed.
    pub arrived: u64,
    /// Failed sends, summed.
    pub failed: u64,
}

/// One row: a flow count, both datapaths.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Flows.
    pub flows: usize,
    /// egret.
    pub egret: Side,
    /// Kernel NAT behind the same VXLAN tunnel.
    pub kernel_nat: Side,
    /// Kernel NAT reached by plain routing (no tunnel).
    pub kernel_nat_routed: Side,
    /// egret / kernel NAT (tunnelled) of the medians.
    pub ratio: f64,
    /// egret / kernel NAT (routed) of the medians.
    pub ratio_routed: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() { 0.0 } else { s[s.len() / 2] }
}

fn side(floods: &[Flood]) -> Side {
    let pps: Vec<f64> = floods.iter().map(Flood::arrived_pps).collect();
    Side {
        median_pps: median(&pps),
        trials_pps: pps,
        sent: floods.iter().map(|f| f.sent).sum(),
        arrived: floods.iter().map(|f| f.arrived).sum(),
        failed: floods.iter().map(|f| f.failed).sum(),
    }
}

/// Runs the benchmark.
///
/// # Errors
/// Missing tools or privilege, set-up failures, or a datapath that does not
/// translate to the egress IP (the comparison would be meaningless).
pub fn run(opts: &Options) -> anyhow::Result<Vec<Row>> {
    if let Some(m) = minicluster::missing_tools() {
        anyhow::bail!("the gateway benchmark needs root, bpffs and {m}");
    }
    anyhow::ensure!(
        opts.agent.exists(),
        "no egret-agent at {} (build it: cargo build --release -p egret-runtime)",
        opts.agent.display()
    );
    let egret = MiniCluster::start_with("bge", Datapath::Egret(Path::new(&opts.agent)))?;
    let kernel = MiniCluster::start_with("bgk", Datapath::KernelNat { tunnel: true })?;
    let routed = MiniCluster::start_with("bgr", Datapath::KernelNat { tunnel: false })?;
    for (name, c) in [("egret", &egret), ("kernel NAT", &kernel), ("kernel NAT, routed", &routed)] {
        let seen = c.udp_request("egress-1", SERVER)?;
        anyhow::ensure!(seen.ip == EGRESS_IP, "{name}: the server saw {} instead of the egress IP", seen.ip);
    }
    let mut rows = Vec::new();
    for &flows in &opts.flows {
        let (mut e, mut k, mut r) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..opts.trials {
            e.push(egret.udp_flood("egress-1", flows, opts.payload, opts.duration, opts.max_packets)?);
            k.push(kernel.udp_flood("egress-1", flows, opts.payload, opts.duration, opts.max_packets)?);
            r.push(routed.udp_flood("egress-1", flows, opts.payload, opts.duration, opts.max_packets)?);
        }
        let (egret_side, kernel_side, routed_side) = (side(&e), side(&k), side(&r));
        let ratio = egret_side.median_pps / kernel_side.median_pps.max(1e-9);
        let ratio_routed = egret_side.median_pps / routed_side.median_pps.max(1e-9);
        rows.push(Row {
            flows,
            egret: egret_side,
            kernel_nat: kernel_side,
            kernel_nat_routed: routed_side,
            ratio,
            ratio_routed,
        });
    }
    Ok(rows)
}

/// The rows as a table.
#[must_use]
pub fn render(opts: &Options, rows: &[Row]) -> String {
    let mut out = format!(
        "gateway throughput, UDP payload {} B, {} trial(s) of {:.1} s per datapath, frames/s arrived at the server (median)\n",
        opts.payload,
        opts.trials,
        opts.duration.as_secs_f64()
    );
    out.push_str(&format!(
        "{:>6} {:>12} {:>12} {:>8} {:>14} {:>8} {:>11}\n",
        "flows", "egret", "kernel NAT", "ratio", "routed k. NAT", "ratio", "max loss"
    ));
    for r in rows {
        let loss = |s: &Side| {
            if s.sent == 0 { 0.0 } else { 100.0 * (s.sent.saturating_sub(s.arrived)) as f64 / s.sent as f64 }
        };
        let max_loss = loss(&r.egret).max(loss(&r.kernel_nat)).max(loss(&r.kernel_nat_routed));
        out.push_str(&format!(
            "{:>6} {:>12.0} {:>12.0} {:>7.2}× {:>14.0} {:>7.2}× {:>10.2}%\n",
            r.flows,
            r.egret.median_pps,
            r.kernel_nat.median_pps,
            r.ratio,
            r.kernel_nat_routed.median_pps,
            r.ratio_routed,
            max_loss
        ));
    }
    out
}
