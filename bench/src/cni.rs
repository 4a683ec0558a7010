//! `egret-bench cni`: the leak window of a new pod and the `ADD` latency of
//! `egret-cni` (issue #17), on the mini-cluster through the API server
//! (`egret_testkit::cni::CniCluster`, its module doc says how pods are
//! created). Each run builds a fresh cluster and creates `--pods` selected
//! pods on worker-1 with the watch alone, then as many with the plugin;
//! each pod sends one UDP datagram the moment its creation returns, and a
//! second one after the trial; with the plugin, a third once worker-1's
//! next generation (the full reconcile that takes the admitted pods into
//! its plan) serves. Reported per run: where the first datagrams arrived
//! from (the egress IP, another address: leaked, or nowhere), what
//! gateway-1 dropped as an unknown source, the second and third datagrams,
//! and the `ADD` latency (the plugin process from spawn to exit, as a
//! runtime sees it) p50/p99/max.

use std::path::PathBuf;

use egret_testkit::cni::{CniCluster, LeakReport, quantile};
use serde::Serialize;

use crate::report::{Table, ms};

/// How the benchmark runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `egret-agent` binary.
    pub agent: PathBuf,
    /// The `egret-cni` binary.
    pub plugin: PathBuf,
    /// Pods per trial (at most 120: two trials share worker-1's /24).
    pub pods: usize,
    /// Runs (a fresh cluster each).
    pub runs: usize,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Pods per trial.
    pub pods: usize,
    /// The watch alone: first datagrams from the egress IP, leaked, lost.
    pub watch_via_egress: usize,
    /// The watch alone: first datagrams from another address.
    pub watch_leaked: usize,
    /// The watch alone: first datagrams that did not arrive.
    pub watch_lost: usize,
    /// With the plugin: first datagrams from the egress IP.
    pub cni_via_egress: usize,
    /// With the plugin: first datagrams from another address.
    pub cni_leaked: usize,
    /// With the plugin: first datagrams that did not arrive.
    pub cni_lost: usize,
    /// With the plugin: of those, dropped by gateway-1 as from an unknown source.
    pub cni_dropped_at_gateway: u64,
    /// Second datagrams from the egress IP (watch alone, with the plugin).
    pub later_via_egress: (usize, usize),
    /// `ADD` latency, ms: p50, p99, max.
    pub add_ms: (f64, f64, f64),
    /// worker-1's generation after the last `ADD` and the next one (the
    /// admitted pods in its plan), if it came.
    pub generations: (Option<u64>, Option<u64>),
    /// Third datagrams from the egress IP, once that next generation served.
    pub consolidated_via_egress: usize,
}

fn run_once(opts: &Options, i: usize) -> anyhow::Result<Run> {
    let cc = CniCluster::start(&format!("bcni{i}"), &opts.agent)?;
    let (without, with): (LeakReport, LeakReport) = cc.side_by_side(&opts.plugin, opts.pods)?;
    let q = |p| quantile(&with.add, p).as_secs_f64() * 1e3;
    Ok(Run {
        pods: opts.pods,
        watch_via_egress: without.via_egress,
        watch_leaked: without.leaked.len(),
        watch_lost: without.lost,
        cni_via_egress: with.via_egress,
        cni_leaked: with.leaked.len(),
        cni_lost: with.lost,
        cni_dropped_at_gateway: with.dropped_at_gateway,
        later_via_egress: (without.later_via_egress, with.later_via_egress),
        add_ms: (q(0.5), q(0.99), q(1.0)),
        generations: with.generations.unwrap_or_default(),
        consolidated_via_egress: with.consolidated_via_egress,
    })
}

/// Runs the benchmark: every run's figures.
///
/// # Errors
/// Missing tools or binaries, or a set-up failure.
pub fn run(opts: &Options) -> anyhow::Result<Vec<Run>> {
    if let Some(m) = egret_testkit::minicluster::missing_tools() {
        anyhow::bail!("the cni benchmark needs root, bpffs and {m}");
    }
    for (what, path, pkg) in [("egret-agent", &opts.agent, "egret-runtime"), ("egret-cni", &opts.plugin, "egret-cni")] {
        anyhow::ensure!(path.exists(), "no {what} at {} (build it: cargo build --release -p {pkg})", path.display());
    }
    anyhow::ensure!((1..=120).contains(&opts.pods), "--pods: 1 to 120 (two trials share worker-1's /24)");
    (0..opts.runs.max(1)).map(|i| run_once(opts, i)).collect()
}

/// The runs as the tables docs/PERFORMANCE.md quotes.
#[must_use]
pub fn tables(runs: &[Run]) -> Vec<Table> {
    let mut leak = Table::new(
        "The leak window: one UDP datagram per new selected pod, sent the moment its creation returns",
        &[
            "run",
            "path",
            "pods",
            "first from egress IP",
            "first leaked (other source)",
            "first lost",
            "of which dropped by the gateway",
            "second from egress IP",
        ],
    );
    let mut add = Table::new(
        "`ADD` with egret-cni (plugin process, spawn to exit)",
        &["run", "pods", "p50 ms", "p99 ms", "max ms", "generation after the ADDs", "next", "third from egress IP"],
    );
    for (i, r) in runs.iter().enumerate() {
        let n = (i + 1).to_string();
        let rows = [
            ("watch alone", r.watch_via_egress, r.watch_leaked, r.watch_lost, "-".to_owned(), r.later_via_egress.0),
            (
                "egret-cni",
                r.cni_via_egress,
                r.cni_leaked,
                r.cni_lost,
                r.cni_dropped_at_gateway.to_string(),
                r.later_via_egress.1,
            ),
        ];
        for (path, egress, leaked, lost, dropped, later) in rows {
            let cells = [egress, leaked, lost].map(|v| v.to_string());
            leak.row(
                [vec![n.clone(), path.into(), r.pods.to_string()], cells.to_vec(), vec![dropped, later.to_string()]]
                    .concat(),
            );
        }
        let f = |v: f64| ms(std::time::Duration::from_secs_f64(v / 1e3));
        let g = |g: Option<u64>| g.map_or_else(|| "-".to_owned(), |g| g.to_string());
        add.row(vec![
            n,
            r.pods.to_string(),
            f(r.add_ms.0),
            f(r.add_ms.1),
            f(r.add_ms.2),
            g(r.generations.0),
            g(r.generations.1),
            r.consolidated_via_egress.to_string(),
        ]);
    }
    vec![leak, add]
}
