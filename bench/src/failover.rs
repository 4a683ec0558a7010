//! Gateway failover on the mini-cluster (`egret_testkit::failover`), in
//! two parts, side by side in one run:
//!
//! 1. **Floating egress IP** (the headline figures): the three gateways are
//!    candidates of one floating IP; every node runs `egret-agent --kube`
//!    against egret-kube's in-process API server (Leases included). A pod
//!    streams UDP and writes on an established TCP connection to the server
//!    through the IP; its owner is failed for real, `--trials` times per
//!    kind of failure (underlay link down; every link of the node down;
//!    egret's programs detached while the agent runs), and restored between
//!    trials. Per trial: **detect** = failure → another candidate marks the
//!    owner down (its probes); **recover** = failure → the first datagram
//!    sent after the failure that the server receives (the old owner
//!    carries nothing, so it came through the new one); the longest UDP and
//!    TCP stalls at the server; whether the TCP connection survived (data
//!    after the failover, never reset); **leaked** = datagrams from another
//!    source than the floating IP; **dual-owner events** = ARP rounds (a
//!    request every 10 ms from the server's side of the external segment)
//!    in which two MACs answered for the IP. Then the owner's agent is
//!    killed (`SIGKILL`, its datapath stays) for 3 s — longer than the
//!    Lease — and started again, `--trials` times; then the owner is
//!    partitioned from the other candidates (all still reach the API
//!    server) for 4 s, `--trials` times: one owner at the end expected.
//! 2. **Egress IP per gateway** (the earlier design, still supported): a
//!    two-gateway policy through the snapshot directory; the pod's endpoint
//!    moves to the other gateway, whose egress IP differs (so connections
//!    cannot survive), same failures and figures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use egret_testkit::arpwatch::{ArpWatch, Overlap};
use egret_testkit::failover::{Failure, FloatingTrial, Trial};
use egret_testkit::minicluster::{self, FLOATING_IP, MiniCluster, Source};
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
pub(crate) fn percentile(v: &[f64], q: f64) -> f64 {
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

/// The whole run (the JSON written with `--json`): the floating-IP
/// figures at the top, both parts in full below.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub detect_ms_p50: f64,
    pub detect_ms_p99: f64,
    pub recover_ms_p50: f64,
    pub recover_ms_p99: f64,
    pub tcp_survived: u64,
    pub tcp_total: u64,
    pub dual_owner_events: u64,
    pub floating: FloatingReport,
    pub fixed_ip: FixedReport,
}

/// One kind of failure of the floating IP's owner over its trials.
#[derive(Debug, Clone, Serialize)]
pub struct FloatingKindRow {
    pub failure: &'static str,
    pub trials: usize,
    pub detect_ms: Spread,
    pub recover_ms: Spread,
    pub udp_stall_ms: Spread,
    pub tcp_stall_ms: Spread,
    pub tcp_survived: u64,
    pub not_recovered: usize,
    pub leaked: u64,
    /// ARP rounds with two MACs answering, as events (runs of rounds).
    pub dual_owner_events: u64,
    pub dual_owner_longest_ms: f64,
}

/// The floating-IP part.
#[derive(Debug, Clone, Serialize)]
pub struct FloatingReport {
    pub trials: usize,
    pub detect_ms: Spread,
    pub recover_ms: Spread,
    pub udp_stall_ms: Spread,
    pub tcp_stall_ms: Spread,
    pub tcp_survived: u64,
    pub tcp_total: u64,
    pub not_recovered: usize,
    pub leaked: u64,
    pub dual_owner_events: u64,
    pub dual_owner_longest_ms: f64,
    /// NAT replication lag (scan → the standby's acknowledgement), over the
    /// owners' streams to their standbys at the end of the run, ms: the
    /// largest p50, p99 and max any stream reported, and the rounds behind them.
    pub replication_lag_ms_p50: f64,
    pub replication_lag_ms_p99: f64,
    pub replication_lag_ms_max: f64,
    pub replication_rounds: u64,
    pub kinds: Vec<FloatingKindRow>,
    /// The owner's agent killed for 3 s (longer than the Lease) and started again.
    pub agent_kill: AgentKillRow,
    /// The owner cut off from the other candidates.
    pub partition: PartitionRow,
    pub raw: Vec<RawFloatingTrial>,
}

/// Partitions of the owner from the other candidates.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionRow {
    pub trials: usize,
    /// Trials that ended with exactly one owner.
    pub one_owner_at_end: usize,
    /// Changes of the holder set seen, over all trials.
    pub changes: u64,
    /// The longest time two candidates were seen holding the address at
    /// once (sampled every few ms), ms.
    pub longest_dual_ms: f64,
    /// ARP rounds with two MACs answering, as events.
    pub dual_owner_events: u64,
}

/// One floating-IP trial as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RawFloatingTrial {
    pub failure: &'static str,
    pub owner_before: String,
    pub owner_after: Option<String>,
    pub detect_ms: Option<f64>,
    pub recover_ms: Option<f64>,
    pub udp_stall_ms: Option<f64>,
    pub tcp_stall_ms: Option<f64>,
    pub tcp_survived: bool,
    pub received: u64,
    pub leaked: u64,
    pub dual_owner_events: u64,
}

/// The egress-IP-per-gateway part.
#[derive(Debug, Clone, Serialize)]
pub struct FixedReport {
    pub detect_ms_p50: f64,
    pub detect_ms_p99: f64,
    pub recover_ms_p50: f64,
    pub recover_ms_p99: f64,
    pub recover_ms_max: f64,
    pub trials: usize,
    pub not_recovered: usize,
    pub leaked: u64,
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

/// `opts.trials` agent kills (`SIGKILL` for `dead`, then a restart) of the
/// gateway the pod's stream uses; `tag` starts each progress line.
fn agent_kills(c: &mut MiniCluster, opts: &Options, tag: &str, dead: Duration) -> anyhow::Result<AgentKillRow> {
    let mut kill = AgentKillRow { trials: 0, failovers: 0, sent: 0, lost: 0, moved: 0 };
    for i in 0..opts.trials {
        let k = c.agent_kill_trial(&opts.pod, dead)?;
        eprintln!(
            "{tag}agent-kill {}/{}: {} for {dead:?}: {} sent, {} received, {} moved, marked down: {}",
            i + 1,
            opts.trials,
            k.gateway,
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
    Ok(kill)
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e3)
}

/// Runs both parts.
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
    let floating = run_floating(opts)?;
    let fixed_ip = run_fixed(opts)?;
    Ok(Report {
        detect_ms_p50: floating.detect_ms.p50,
        detect_ms_p99: floating.detect_ms.p99,
        recover_ms_p50: floating.recover_ms.p50,
        recover_ms_p99: floating.recover_ms.p99,
        tcp_survived: floating.tcp_survived,
        tcp_total: floating.tcp_total,
        dual_owner_events: floating.dual_owner_events + floating.partition.dual_owner_events,
        floating,
        fixed_ip,
    })
}

/// The floating-IP part (see the module doc).
///
/// # Errors
/// A set-up failure or a trial that cannot run.
pub fn run_floating(opts: &Options) -> anyhow::Result<FloatingReport> {
    let mut c = MiniCluster::prepare("bfl")?;
    let served = crate::kubecluster::serve(&c, "bfl")?;
    served.apply_yaml(&MiniCluster::floating_policy());
    c.start_agents(Path::new(&opts.agent), Source::Kube { kubeconfig: &served.kubeconfig })?;
    c.floating_settled(&opts.pod)?;
    let arp = c.arp_watch(FLOATING_IP)?;
    let mut all: Vec<(FloatingTrial, Overlap)> = Vec::new();
    for failure in Failure::ALL {
        for i in 0..opts.trials {
            arp.clear();
            let t = c.floating_trial(&opts.pod, failure)?;
            let o = Overlap::of(&arp.answers(), ArpWatch::ROUND);
            eprintln!(
                "floating {} {}/{}: {} failed, {:?} took over; detect {:?}, recover {:?}, UDP stall {:?}, TCP stall {:?} survived {}, leaked {}, dual-owner events {}",
                failure.name(),
                i + 1,
                opts.trials,
                t.owner_before,
                t.owner_after,
                t.detect,
                t.recover,
                t.udp_stall,
                t.tcp_stall,
                t.tcp_survived,
                t.leaked,
                o.events
            );
            all.push((t, o));
        }
    }
    let kill = agent_kills(&mut c, opts, "floating ", Duration::from_millis(3000))?;
    let mut partition =
        PartitionRow { trials: 0, one_owner_at_end: 0, changes: 0, longest_dual_ms: 0.0, dual_owner_events: 0 };
    for i in 0..opts.trials {
        arp.clear();
        let p = c.partition_trial(Duration::from_secs(4))?;
        let o = Overlap::of(&arp.answers(), ArpWatch::ROUND);
        eprintln!(
            "floating partition {}/{}: {} cut off; holders at the end {:?}, {} changes, longest sampled dual {:?}, ARP dual-owner events {}",
            i + 1,
            opts.trials,
            p.owner_before,
            p.holders_at_end,
            p.changes,
            p.longest_dual,
            o.events
        );
        partition.trials += 1;
        partition.one_owner_at_end += usize::from(p.holders_at_end.len() == 1);
        partition.changes += p.changes;
        partition.longest_dual_ms = partition.longest_dual_ms.max(p.longest_dual.as_secs_f64() * 1e3);
        partition.dual_owner_events += o.events;
    }
    // the replication as the candidates' controllers last wrote it
    let (mut lag_p50, mut lag_p99, mut lag_max, mut rounds) = (0.0_f64, 0.0_f64, 0.0_f64, 0u64);
    for n in minicluster::NODES.iter().filter(|n| n.external.is_some()) {
        let file = egret_runtime::ha::ownership::status_file(&c.bpffs_root(n.name));
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let Ok(st) = serde_json::from_str::<egret_runtime::ha::ownership::OwnershipStatus>(&text) else { continue };
        for s in st.replication.standbys.values() {
            lag_p50 = lag_p50.max(s.lag.p50_ns as f64 / 1e6);
            lag_p99 = lag_p99.max(s.lag.p99_ns as f64 / 1e6);
            lag_max = lag_max.max(s.lag.max_ns as f64 / 1e6);
            rounds += s.lag.samples;
        }
    }
    drop(arp);
    drop(c);
    drop(served);
    let kinds: Vec<FloatingKindRow> = Failure::ALL
        .iter()
        .map(|f| {
            let of = || all.iter().filter(|(t, _)| t.failure == *f);
            FloatingKindRow {
                failure: f.name(),
                trials: of().count(),
                detect_ms: spread(of().map(|(t, _)| t.detect)),
                recover_ms: spread(of().map(|(t, _)| t.recover)),
                udp_stall_ms: spread(of().map(|(t, _)| t.udp_stall)),
                tcp_stall_ms: spread(of().map(|(t, _)| t.tcp_stall)),
                tcp_survived: of().filter(|(t, _)| t.tcp_survived).count() as u64,
                not_recovered: of().filter(|(t, _)| t.recover.is_none()).count(),
                leaked: of().map(|(t, _)| t.leaked).sum(),
                dual_owner_events: of().map(|(_, o)| o.events).sum(),
                dual_owner_longest_ms: of().map(|(_, o)| o.longest.as_secs_f64() * 1e3).fold(0.0, f64::max),
            }
        })
        .collect();
    Ok(FloatingReport {
        trials: all.len(),
        detect_ms: spread(all.iter().map(|(t, _)| t.detect)),
        recover_ms: spread(all.iter().map(|(t, _)| t.recover)),
        udp_stall_ms: spread(all.iter().map(|(t, _)| t.udp_stall)),
        tcp_stall_ms: spread(all.iter().map(|(t, _)| t.tcp_stall)),
        tcp_survived: all.iter().filter(|(t, _)| t.tcp_survived).count() as u64,
        tcp_total: all.len() as u64,
        not_recovered: all.iter().filter(|(t, _)| t.recover.is_none()).count(),
        leaked: all.iter().map(|(t, _)| t.leaked).sum(),
        dual_owner_events: all.iter().map(|(_, o)| o.events).sum(),
        dual_owner_longest_ms: all.iter().map(|(_, o)| o.longest.as_secs_f64() * 1e3).fold(0.0, f64::max),
        replication_lag_ms_p50: lag_p50,
        replication_lag_ms_p99: lag_p99,
        replication_lag_ms_max: lag_max,
        replication_rounds: rounds,
        kinds,
        agent_kill: kill,
        partition,
        raw: all
            .iter()
            .map(|(t, o)| RawFloatingTrial {
                failure: t.failure.name(),
                owner_before: t.owner_before.clone(),
                owner_after: t.owner_after.clone(),
                detect_ms: ms(t.detect),
                recover_ms: ms(t.recover),
                udp_stall_ms: ms(t.udp_stall),
                tcp_stall_ms: ms(t.tcp_stall),
                tcp_survived: t.tcp_survived,
                received: t.received,
                leaked: t.leaked,
                dual_owner_events: o.events,
            })
            .collect(),
    })
}

/// The egress-IP-per-gateway part (see the module doc).
///
/// # Errors
/// A set-up failure or a trial that cannot run.
pub fn run_fixed(opts: &Options) -> anyhow::Result<FixedReport> {
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
    let kill = agent_kills(&mut c, opts, "", Duration::from_millis(1500))?;
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
    Ok(FixedReport {
        detect_ms_p50: detect.p50,
        detect_ms_p99: detect.p99,
        recover_ms_p50: recover.p50,
        recover_ms_p99: recover.p99,
        recover_ms_max: recover.max,
        trials: all.len(),
        not_recovered: all.iter().filter(|t| t.recover.is_none()).count(),
        leaked: all.iter().map(|t| t.leaked).sum(),
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
    let cell = |s: &Spread| format!("{:.0} / {:.0} / {:.0}", s.p50, s.p99, s.max);
    let f = &r.floating;
    let mut t = crate::report::Table::new(
        format!("Floating egress IP, owner failed, {} trials (ms from the failure; p50 / p99 / max)", f.trials),
        &[
            "failure",
            "trials",
            "detect",
            "first packet via the new owner",
            "UDP stall",
            "TCP stall",
            "TCP survived",
            "leaked",
            "dual-owner events",
        ],
    );
    let row = |name: &str, trials: usize, s: [&Spread; 4], survived: u64, leaked: u64, dual: u64| {
        let mut cells = vec![name.to_string(), trials.to_string()];
        cells.extend(s.iter().map(|x| cell(x)));
        cells.extend([format!("{survived}/{trials}"), leaked.to_string(), dual.to_string()]);
        cells
    };
    for k in &f.kinds {
        let s = [&k.detect_ms, &k.recover_ms, &k.udp_stall_ms, &k.tcp_stall_ms];
        t.row(row(k.failure, k.trials, s, k.tcp_survived, k.leaked, k.dual_owner_events));
    }
    let s = [&f.detect_ms, &f.recover_ms, &f.udp_stall_ms, &f.tcp_stall_ms];
    t.row(row("all", f.trials, s, f.tcp_survived, f.leaked, f.dual_owner_events));
    let x = &r.fixed_ip;
    let mut u = crate::report::Table::new(
        format!("Egress IP per gateway, gateway failed, {} trials (ms from the failure; p50 / p99 / max)", x.trials),
        &["failure", "trials", "detect", "first packet via the other gateway", "not recovered", "leaked"],
    );
    for k in &x.kinds {
        u.row(vec![
            k.failure.to_string(),
            k.trials.to_string(),
            cell(&k.detect_ms),
            cell(&k.recover_ms),
            k.not_recovered.to_string(),
            k.leaked.to_string(),
        ]);
    }
    u.row(vec![
        "all".into(),
        x.trials.to_string(),
        format!("{:.0} / {:.0}", x.detect_ms_p50, x.detect_ms_p99),
        format!("{:.0} / {:.0} / {:.0}", x.recover_ms_p50, x.recover_ms_p99, x.recover_ms_max),
        x.not_recovered.to_string(),
        x.leaked.to_string(),
    ]);
    let (k, p, kx) = (&f.agent_kill, &f.partition, &x.agent_kill);
    format!(
        "{}\nNAT replication lag (scan → standby's acknowledgement), worst stream: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} rounds\nthe owner's agent killed (kill -9) for 3 s and restarted, {} trials: {} failovers, {} of {} datagrams lost, {} moved\npartition of the owner from the other candidates (4 s), {} trials: one owner at the end in {}, {} holder changes, longest sampled dual ownership {:.0} ms, {} ARP dual-owner events\n\n{}\nthe gateway's agent killed (kill -9) and restarted, {} trials: {} failovers, {} of {} datagrams lost, {} moved\n",
        t.markdown(),
        f.replication_lag_ms_p50,
        f.replication_lag_ms_p99,
        f.replication_lag_ms_max,
        f.replication_rounds,
        k.trials,
        k.failovers,
        k.lost,
        k.sent,
        k.moved,
        p.trials,
        p.one_owner_at_end,
        p.changes,
        p.longest_dual_ms,
        p.dual_owner_events,
        u.markdown(),
        kx.trials,
        kx.failovers,
        kx.lost,
        kx.sent,
        kx.moved,
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
