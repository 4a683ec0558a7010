//! Gateway failover on the mini-cluster (`egret_runtime::failover`): a pod
//! streams UDP to the server through one gateway of a two-gateway policy;
//! that gateway is failed for real, `--trials` times per kind of failure
//! (underlay link down; every link of the node down; egret's programs
//! detached while the agent runs), and restored between trials.
//!
//! Per trial: **detect** = failure → the pod's node marks the gateway down
//! in `egret_gw_live` (the agent's probes: 100 ms interval, down after 3
//! misses, by default); **recover** = failure → the first datagram the
//! server receives through the other gateway (the server's receive time);
//! **leaked** = datagrams the server received from no egress IP. Reported
//! per kind and over all trials: p50, p99, max. Then the gateway's agent is
//! killed (`SIGKILL`, its datapath stays) and started again, `--trials`
//! times: failovers and lost datagrams are counted (none expected).
//!
//! Not measured here (floating egress IPs, issue #14's later parts, are not
//! implemented yet): connections surviving a failover (`tcp_survived`,
//! `tcp_total`) and two owners of one IP (`dual_owner_events`). The JSON
//! says so with `null` and a note rather than a number: with per-gateway
//! egress IPs, a failover changes the egress IP, so an established
//! connection cannot survive it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use egret_runtime::failover::{Failure, Trial};
use egret_runtime::minicluster::{self, MiniCluster};
use serde::Serialize;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `egret-agent` binary.
    pub agent: PathBuf,
    /// Trials per kind of failure.
    pub trials: usize,
    /// The streaming pod.
    pub pod: String,
}

/// Percentiles of a set of durations, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Trials with a value (the others never got there).
    pub n: usize,
}

/// The nearest-rank percentile `q` (0..=1) of sorted `v`.
fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn spread(d: impl Iterator<Item = Option<Duration>>) -> Spread {
    let mut v: Vec<f64> = d.flatten().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    Spread {
        p50: percentile(&v, 0.5),
        p99: percentile(&v, 0.99),
        max: v.last().copied().unwrap_or(f64::NAN),
        n: v.len(),
    }
}

/// One kind of failure over its trials.
#[derive(Debug, Clone, Serialize)]
pub struct KindRow {
    pub failure: &'static str,
    pub trials: usize,
    pub detect_ms: Spread,
    pub recover_ms: Spread,
    /// Trials in which no datagram came through the other gateway.
    pub not_recovered: usize,
    pub leaked: u64,
}

/// The whole run (the JSON written with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub detect_ms_p50: f64,
    pub detect_ms_p99: f64,
    pub recover_ms_p50: f64,
    pub recover_ms_p99: f64,
    pub recover_ms_max: f64,
    pub trials: usize,
    pub not_recovered: usize,
    pub leaked: u64,
    /// Not measured (see `not_measured`).
    pub tcp_survived: Option<u64>,
    pub tcp_total: Option<u64>,
    pub dual_owner_events: Option<u64>,
    pub not_measured: &'static str,
    pub kinds: Vec<KindRow>,
    /// The gateway's agent killed (`SIGKILL`) and started again, `trials` times.
    pub agent_kill: AgentKillRow,
    /// Every trial: kind, gateway, egress IP before and after, ms.
    pub raw: Vec<RawTrial>,
}

/// Killing the gateway's agent (its datapath stays): no failover, no loss expected.
#[derive(Debug, Clone, Serialize)]
pub struct AgentKillRow {
    pub trials: usize,
    /// Trials in which the pod's node marked the gateway down.
    pub failovers: usize,
    pub sent: u64,
    /// Sent but not received.
    pub lost: u64,
    /// Received through another egress IP.
    pub moved: u64,
}

/// One trial as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RawTrial {
    pub failure: &'static str,
    pub gateway: String,
    pub before: String,
    pub after: Option<String>,
    pub detect_ms: Option<f64>,
    pub recover_ms: Option<f64>,
    pub received: u64,
    pub leaked: u64,
}

const NOT_MEASURED: &str = "tcp_survived, tcp_total and dual_owner_events need floating egress IPs (one IP moving between gateways with its NAT state), which egret does not implement yet; with an egress IP per gateway a failover changes the egress IP, so established connections are not expected to survive";

/// Runs the trials.
///
/// # Errors
/// Missing tools or privilege, or a set-up failure.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    if let Some(m) = minicluster::missing_tools() {
        anyhow::bail!("the failover benchmark needs root, bpffs and {m}");
    }
    anyhow::ensure!(
        opts.agent.exists(),
        "no egret-agent at {} (build it: cargo build --release -p egret-runtime)",
        opts.agent.display()
    );
    let mut c = MiniCluster::start("bfo", Path::new(&opts.agent))?;
    c.apply_failover_policy()?;
    let mut all: Vec<Trial> = Vec::new();
    for failure in Failure::ALL {
        for i in 0..opts.trials {
            let t = c.failover_trial(&opts.pod, failure)?;
            eprintln!(
                "{} {}/{}: {} down, detect {:?}, recover {:?} via {:?}, leaked {}",
                failure.name(),
                i + 1,
                opts.trials,
                t.gateway,
                t.detect,
                t.recover,
                t.after,
                t.leaked
            );
            all.push(t);
        }
    }
    let mut kill = AgentKillRow { trials: 0, failovers: 0, sent: 0, lost: 0, moved: 0 };
    for i in 0..opts.trials {
        let k = c.agent_kill_trial(&opts.pod, Duration::from_millis(1500))?;
        eprintln!(
            "agent-kill {}/{}: {} sent, {} received, {} moved, marked down: {}",
            i + 1,
            opts.trials,
            k.sent,
            k.received,
            k.moved,
            k.marked_down
        );
        kill.trials += 1;
        kill.failovers += usize::from(k.marked_down);
        kill.sent += k.sent;
        kill.lost += k.sent.saturating_sub(k.received);
        kill.moved += k.moved;
    }
    let kinds: Vec<KindRow> = Failure::ALL
        .iter()
        .map(|f| {
            let of = || all.iter().filter(|t| t.failure == *f);
            KindRow {
                failure: f.name(),
                trials: of().count(),
                detect_ms: spread(of().map(|t| t.detect)),
                recover_ms: spread(of().map(|t| t.recover)),
                not_recovered: of().filter(|t| t.recover.is_none()).count(),
                leaked: of().map(|t| t.leaked).sum(),
            }
        })
        .collect();
    let detect = spread(all.iter().map(|t| t.detect));
    let recover = spread(all.iter().map(|t| t.recover));
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    Ok(Report {
        detect_ms_p50: detect.p50,
        detect_ms_p99: detect.p99,
        recover_ms_p50: recover.p50,
        recover_ms_p99: recover.p99,
        recover_ms_max: recover.max,
        trials: all.len(),
        not_recovered: all.iter().filter(|t| t.recover.is_none()).count(),
        leaked: all.iter().map(|t| t.leaked).sum(),
        tcp_survived: None,
        tcp_total: None,
        dual_owner_events: None,
        not_measured: NOT_MEASURED,
        kinds,
        agent_kill: kill,
        raw: all
            .iter()
            .map(|t| RawTrial {
                failure: t.failure.name(),
                gateway: t.gateway.clone(),
                before: t.before.to_string(),
                after: t.after.map(|a| a.to_string()),
                detect_ms: ms(t.detect),
                recover_ms: ms(t.recover),
                received: t.received,
                leaked: t.leaked,
            })
            .collect(),
    })
}

/// The report as markdown.
#[must_use]
pub fn render(r: &Report) -> String {
    let mut t = crate::report::Table::new(
        format!("Gateway failover, {} trials (ms from the failure; p50 / p99 / max)", r.trials),
        &["failure", "trials", "detect", "first packet via the other gateway", "not recovered", "leaked"],
    );
    let cell = |s: &Spread| format!("{:.0} / {:.0} / {:.0}", s.p50, s.p99, s.max);
    for k in &r.kinds {
        t.row(vec![
            k.failure.to_string(),
            k.trials.to_string(),
            cell(&k.detect_ms),
            cell(&k.recover_ms),
            k.not_recovered.to_string(),
            k.leaked.to_string(),
        ]);
    }
    t.row(vec![
        "all".into(),
        r.trials.to_string(),
        format!("{:.0} / {:.0}", r.detect_ms_p50, r.detect_ms_p99),
        format!("{:.0} / {:.0} / {:.0}", r.recover_ms_p50, r.recover_ms_p99, r.recover_ms_max),
        r.not_recovered.to_string(),
        r.leaked.to_string(),
    ]);
    let k = &r.agent_kill;
    format!(
        "{}\nthe gateway's agent killed (kill -9) and restarted, {} trials: {} failovers, {} of {} datagrams lost, {} moved\n\nnot measured: {}\n",
        t.markdown(),
        k.trials,
        k.failovers,
        k.lost,
        k.sent,
        k.moved,
        r.not_measured
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((percentile(&v, 0.5), percentile(&v, 0.99), percentile(&v, 1.0)), (50.0, 99.0, 100.0));
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
        let s = spread([Some(Duration::from_millis(3)), None, Some(Duration::from_millis(1))].into_iter());
        assert_eq!((s.p50, s.max, s.n), (1.0, 3.0, 2));
    }
}
