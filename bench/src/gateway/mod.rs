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
//! - **egret with the flow log**: egret's cluster again, its agents writing
//!   the flow audit log (`--flow-log`, issue #21): the same datapath (the
//!   programs write their events either way; without a reader the ring
//!   stays full and each event costs a failed `bpf_ringbuf_output`), plus
//!   the agent's reader draining the ring and writing JSON lines on the
//!   same CPUs. `flow log cost` is 1 − its median / egret's median.
//!
//! A second figure compares the two egret clusters on new connections: the
//! pod sends one datagram to each of [`NEW_CONNECTIONS`] destination ports
//! (each a new translation, so each a flow event), and the figure is new
//! connections arrived per second, plus how many of the flow-log cluster's
//! events its reader did not keep up with (dropped by the datapath).
//!
//! Both send from the same pod (`egress-1` on `worker-1`) to the same server
//! with the same UDP payload size; one thread sends as fast as it can for a
//! fixed time (count-bounded), and the figure is frames **arrived at the
//! server's external interface** per second of sending. Trials alternate
//! between the two datapaths; medians and the ratio egret / kernel NAT are
//! reported. On veth, the whole path of a packet runs in the sender's
//! softirq, so this measures the per-packet cost of the complete path
//! (pod → node → gateway → server), not a NIC.
//!
//! `--family v6` runs the same benchmark over IPv6 end to end, on the
//! dual-stack mini-cluster (`Stack::Dual`): the pod sends to the server's
//! IPv6 address; egret's agents compile the dual-stack policy (the
//! gateway's maps get the slot's egress IPv6 and the pods' IPv6 sources);
//! the kernel NAT gateway translates with `nft` `ip6` `snat` and conntrack,
//! behind the same IPv4 VXLAN tunnel (or, routed, over the underlay's IPv6).
//! Everything else — the four datapaths, the alternating trials, the
//! flood, the figures — is the same code for both families.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use egret_bpf::templates::{Stat, map};
use egret_lang::net::Family;
use egret_testkit::minicluster::{
    self, Datapath, EGRESS_IP, EGRESS_IP6, Flood, MiniCluster, SERVER, SERVER6, SINK_PORT, Source, Stack,
};
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
    /// The pod's, the server's and the egress addresses' family (the
    /// underlay is IPv4 either way).
    pub family: Family,
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
    /// egret, its agents writing the flow log.
    pub egret_flow_log: Side,
    /// 1 − egret with the flow log / egret, of the medians (the flow log's
    /// cost in packets per second).
    pub flow_log_cost: f64,
    /// Kernel NAT behind the same VXLAN tunnel.
    pub kernel_nat: Side,
    /// Kernel NAT reached by plain routing (no tunnel).
    pub kernel_nat_routed: Side,
    /// egret / kernel NAT (tunnelled) of the medians.
    pub ratio: f64,
    /// egret / kernel NAT (routed) of the medians.
    pub ratio_routed: f64,
}

/// New connections per trial of the new-connection figure.
pub const NEW_CONNECTIONS: u16 = 20_000;

/// The new-connection figure: egret with and without the flow log.
#[derive(Debug, Clone, Serialize)]
pub struct NewConnections {
    /// egret.
    pub egret: Side,
    /// egret, its agents writing the flow log.
    pub egret_flow_log: Side,
    /// 1 − with / without the flow log, of the medians.
    pub flow_log_cost: f64,
    /// Flow events the flow-log cluster's gateway created over the trials.
    pub events: u64,
    /// Of those, dropped because the ring was full (the reader behind).
    pub events_dropped: u64,
}

/// Everything the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One row per flow count.
    pub rows: Vec<Row>,
    /// New connections.
    pub new_connections: NewConnections,
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

/// The pod that sends.
const POD: &str = "egress-1";
/// The policy's gateway node (its `eth1` holds the egress IPs).
const GATEWAY: &str = "gateway-1";

/// One datapath's mini-cluster for a family.
struct Cluster {
    name: &'static str,
    family: Family,
    c: MiniCluster,
}

impl Cluster {
    /// IPv4: the mini-cluster; IPv6: the dual-stack mini-cluster.
    fn start(name: &'static str, tag: &str, family: Family, datapath: Datapath<'_>) -> anyhow::Result<Cluster> {
        let stack = match family {
            Family::V4 => Stack::V4,
            Family::V6 => Stack::Dual,
        };
        Ok(Cluster { name, family, c: MiniCluster::start_with_stack(tag, stack, datapath)? })
    }

    /// egret's cluster with the agents writing the flow log.
    fn start_flow_log(name: &'static str, tag: &str, family: Family, agent: &Path) -> anyhow::Result<Cluster> {
        let stack = match family {
            Family::V4 => Stack::V4,
            Family::V6 => Stack::Dual,
        };
        let mut c = MiniCluster::prepare_with(tag, stack)?;
        c.enable_flow_log(egret_runtime::flows::log::DEFAULT_MAX_BYTES);
        c.start_agents(agent, Source::Snapshot)?;
        Ok(Cluster { name, family, c })
    }

    /// The server's address of the family.
    fn server(&self) -> IpAddr {
        match self.family {
            Family::V4 => SERVER.into(),
            Family::V6 => SERVER6.into(),
        }
    }

    /// The source address the server must see.
    fn egress(&self) -> IpAddr {
        match self.family {
            Family::V4 => EGRESS_IP.into(),
            Family::V6 => EGRESS_IP6.into(),
        }
    }

    fn flood(&self, flows: usize, opts: &Options) -> anyhow::Result<Flood> {
        let sink = SocketAddr::new(self.server(), SINK_PORT);
        Ok(self.c.udp_flood_to(POD, sink, flows, opts.payload, opts.duration, opts.max_packets)?)
    }

    /// Packets egret's gateway translated so far (`egret_gw_stats` `snat`).
    fn snat(&self) -> anyhow::Result<u64> {
        self.stat(Stat::Snat)
    }

    /// A gateway counter's packets.
    fn stat(&self, s: Stat) -> anyhow::Result<u64> {
        Ok(self.c.counter(GATEWAY, map::GW_STATS, s.index())?.0)
    }

    /// One datagram to each of [`NEW_CONNECTIONS`] ports of the server.
    fn new_connections(&self) -> anyhow::Result<Flood> {
        Ok(self.c.udp_to_ports(POD, self.server(), 1..=NEW_CONNECTIONS)?)
    }
}

/// Runs the benchmark.
///
/// # Errors
/// Missing tools or privilege, set-up failures, or a datapath that does not
/// translate to the egress IP (the comparison would be meaningless).
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    if let Some(m) = minicluster::missing_tools() {
        anyhow::bail!("the gateway benchmark needs root, bpffs and {m}");
    }
    anyhow::ensure!(
        opts.agent.exists(),
        "no egret-agent at {} (build it: cargo build --release -p egret-runtime)",
        opts.agent.display()
    );
    let f = opts.family;
    let egret = Cluster::start("egret", "bge", f, Datapath::Egret(Path::new(&opts.agent)))?;
    let kernel = Cluster::start("kernel NAT", "bgk", f, Datapath::KernelNat { tunnel: true })?;
    let routed = Cluster::start("kernel NAT, routed", "bgr", f, Datapath::KernelNat { tunnel: false })?;
    let logged = Cluster::start_flow_log("egret with the flow log", "bgf", f, &opts.agent)?;
    for c in [&egret, &kernel, &routed, &logged] {
        let seen = c.c.udp_request(POD, c.server())?;
        anyhow::ensure!(seen.ip == c.egress(), "{}: the server saw {} instead of the egress IP", c.name, seen.ip);
    }
    let snat_before = egret.snat()?;
    let mut rows = Vec::new();
    for &flows in &opts.flows {
        let (mut e, mut k, mut r, mut l) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..opts.trials {
            e.push(egret.flood(flows, opts)?);
            k.push(kernel.flood(flows, opts)?);
            r.push(routed.flood(flows, opts)?);
            l.push(logged.flood(flows, opts)?);
        }
        let (egret_side, kernel_side, routed_side, logged_side) = (side(&e), side(&k), side(&r), side(&l));
        let ratio = egret_side.median_pps / kernel_side.median_pps.max(1e-9);
        let ratio_routed = egret_side.median_pps / routed_side.median_pps.max(1e-9);
        let flow_log_cost = 1.0 - logged_side.median_pps / egret_side.median_pps.max(1e-9);
        rows.push(Row {
            flows,
            egret: egret_side,
            egret_flow_log: logged_side,
            flow_log_cost,
            kernel_nat: kernel_side,
            kernel_nat_routed: routed_side,
            ratio,
            ratio_routed,
        });
    }
    // what arrived from egret's cluster went through egret's SNAT (the
    // frames counted at the server also include a few ARP/ND frames)
    let (snat, arrived) =
        (egret.snat()?.saturating_sub(snat_before), rows.iter().map(|r| r.egret.arrived).sum::<u64>());
    anyhow::ensure!(
        snat * 100 >= arrived * 99,
        "egret: {arrived} frames arrived at the server but the gateway translated only {snat} packets"
    );
    let (created0, dropped0) = (logged.stat(Stat::NatCreated)?, logged.stat(Stat::FlowEventDropped)?);
    let (mut e, mut l) = (Vec::new(), Vec::new());
    for _ in 0..opts.trials {
        e.push(egret.new_connections()?);
        l.push(logged.new_connections()?);
    }
    let (egret_side, logged_side) = (side(&e), side(&l));
    let new_connections = NewConnections {
        flow_log_cost: 1.0 - logged_side.median_pps / egret_side.median_pps.max(1e-9),
        egret: egret_side,
        egret_flow_log: logged_side,
        events: logged.stat(Stat::NatCreated)? - created0,
        events_dropped: logged.stat(Stat::FlowEventDropped)? - dropped0,
    };
    Ok(Report { rows, new_connections })
}

/// The rows as a table.
#[must_use]
pub fn render(opts: &Options, report: &Report) -> String {
    let rows = &report.rows;
    let mut out = format!(
        "gateway throughput, {}UDP payload {} B, {} trial(s) of {:.1} s per datapath, frames/s arrived at the server (median)\n",
        if opts.family == Family::V6 { "IPv6, " } else { "" },
        opts.payload,
        opts.trials,
        opts.duration.as_secs_f64()
    );
    out.push_str(&format!(
        "{:>6} {:>12} {:>12} {:>8} {:>14} {:>8} {:>14} {:>14} {:>11}\n",
        "flows",
        "egret",
        "kernel NAT",
        "ratio",
        "routed k. NAT",
        "ratio",
        "egret+flow log",
        "flow log cost",
        "max loss"
    ));
    for r in rows {
        let loss = |s: &Side| {
            if s.sent == 0 { 0.0 } else { 100.0 * (s.sent.saturating_sub(s.arrived)) as f64 / s.sent as f64 }
        };
        let max_loss =
            loss(&r.egret).max(loss(&r.kernel_nat)).max(loss(&r.kernel_nat_routed)).max(loss(&r.egret_flow_log));
        out.push_str(&format!(
            "{:>6} {:>12.0} {:>12.0} {:>7.2}× {:>14.0} {:>7.2}× {:>14.0} {:>13.1}% {:>10.2}%\n",
            r.flows,
            r.egret.median_pps,
            r.kernel_nat.median_pps,
            r.ratio,
            r.kernel_nat_routed.median_pps,
            r.ratio_routed,
            r.egret_flow_log.median_pps,
            100.0 * r.flow_log_cost,
            max_loss
        ));
    }
    let n = &report.new_connections;
    out.push_str(&format!(
        "new connections ({} per trial), arrived/s (median): egret {:.0}, egret+flow log {:.0}, flow log cost {:.1}%; flow events {}, dropped {}\n",
        NEW_CONNECTIONS,
        n.egret.median_pps,
        n.egret_flow_log.median_pps,
        100.0 * n.flow_log_cost,
        n.events,
        n.events_dropped
    ));
    out
}
