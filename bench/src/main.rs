//! `egret-bench`: one entry point for egret's benchmarks (see docs/PERFORMANCE.md).

use clap::{Parser, Subcommand};
use egret_bench::report::{self, Table, write_json};
use std::process::ExitCode;

/// Prints the tables of a subcommand (and writes them as JSON), or its error.
fn tables(result: anyhow::Result<Vec<Table>>, json: Option<&std::path::Path>) -> ExitCode {
    match result.and_then(|t| report::emit(&t, json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "egret-bench", about = "egret's benchmarks, side by side with their anchors")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lint N synthetic policies (parse + validation + policy-set checks), median of 5 runs.
    Lint {
        #[arg(long, default_value_t = 10_000)]
        policies: usize,
        /// Run the worst-case inputs instead, through the `egret` binary
        /// (identical policies, many destinations, conflicts, 10 MB of YAML,
        /// `/dev/zero`, a FIFO, a symbolic-link loop, a 100 MB file): time,
        /// output, memory.
        #[arg(long)]
        worst: bool,
        /// The `egret` binary `--worst` runs (default: next to this one).
        #[arg(long)]
        egret: Option<std::path::PathBuf>,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Compile the large synthetic cluster (5,000 nodes, 100,000 pods, 1,000 policies); one pod added.
    Compile {
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Generate and verify the classifier of the large cluster's busiest node (and a stress node).
    Codegen {
        #[arg(long, default_value_t = 11)]
        runs: usize,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Inline layout vs maps layout per packet (BPF_PROG_TEST_RUN; needs root).
    Layouts {
        /// v4 or v6.
        #[arg(long, default_value = "v4")]
        family: String,
        #[arg(long, default_value_t = 5)]
        trials: usize,
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Entries per class of the plans (4 classes; default: every size of `layouts::SIZES`).
        #[arg(long, value_delimiter = ',')]
        entries: Vec<usize>,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// The loader's swap latency for 1, 10 and 100 attachments (needs root).
    Swap {
        #[arg(long, default_value_t = 51)]
        swaps: usize,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Print the Cilium-equivalent classifier (assembly, as verified) used as the anchor.
    CiliumProgram,
    /// Per-packet classification cost (BPF_PROG_TEST_RUN; needs root): egret vs the Cilium-equivalent vs a floor.
    Classify {
        #[arg(long, value_delimiter = ',', default_values = ["1", "8", "64", "1000", "10000"])]
        prefixes: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_values = ["1", "10", "1000"])]
        endpoints: Vec<usize>,
        /// Force egret's layout (default: its automatic choice).
        #[arg(long)]
        layout: Option<String>,
        /// The packets: udp, tcp-ack, tcp-syn (MSS 1460).
        #[arg(long, default_value = "udp")]
        packet: String,
        /// Compile egret's classifier without the MSS clamp (for the clamp's cost).
        #[arg(long)]
        no_mss_clamp: bool,
        #[arg(long, default_value_t = 5)]
        trials: usize,
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Where a classifier's time goes (BPF_PROG_TEST_RUN; needs root): parse, counters, lookups, tunnel key, redirect.
    Parts {
        /// Entries of the source hash map.
        #[arg(long, default_value_t = 1)]
        endpoints: usize,
        /// Entries of the destination LPM trie.
        #[arg(long, default_value_t = 10_000)]
        prefixes: usize,
        #[arg(long, default_value_t = 5)]
        trials: usize,
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
    },
    /// Gateway packets per second in the mini-cluster (needs root, nft): egret vs a kernel NAT gateway.
    Gateway {
        /// The egret-agent binary (default: next to this program).
        #[arg(long)]
        agent: Option<std::path::PathBuf>,
        #[arg(long, value_delimiter = ',', default_values = ["1", "64"])]
        flows: Vec<usize>,
        /// UDP payload bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Seconds of sending per trial.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        #[arg(long, default_value_t = 5)]
        trials: usize,
        /// Upper bound on packets per trial.
        #[arg(long, default_value_t = 5_000_000)]
        max_packets: u64,
        /// v4 or v6: the pod's, the server's and the egress addresses' family (the underlay is IPv4).
        #[arg(long, default_value = "v4")]
        family: String,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Gateway failover in the mini-cluster (needs root): a floating egress IP's owner failed for real (through an API server, Leases included), then a gateway of an egress-IP-per-gateway policy; time to the first packet after, connections surviving, two owners at once.
    Failover {
        /// The egret-agent binary (default: next to this program).
        #[arg(long)]
        agent: Option<std::path::PathBuf>,
        /// Trials per kind of failure (underlay down, node gone, datapath detached).
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// The streaming pod.
        #[arg(long, default_value = "egress-1")]
        pod: String,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// A gateway failure at the agent's scale (100,000 pods, 1,000 policies; needs root and bpffs): the real prober and kernel maps, time from the decision to the map write, beside what a resolution and a compile cost.
    FailoverScale {
        /// Failures (each followed by the gateway's return).
        #[arg(long, default_value_t = 50)]
        trials: usize,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// The leak window of a new pod in the mini-cluster (needs root): the watch alone vs egret-cni at ADD, and ADD's latency.
    Cni {
        /// The egret-agent binary (default: next to this program).
        #[arg(long)]
        agent: Option<std::path::PathBuf>,
        /// The egret-cni binary (default: next to this program).
        #[arg(long)]
        plugin: Option<std::path::PathBuf>,
        /// Pods per trial (1 to 120).
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// Runs, each on a fresh cluster.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// The agent's metrics server: /healthz latency alone and while idle connections are held (loopback).
    MetricsServer {
        /// Idle connections held in the second phase.
        #[arg(long, default_value_t = 200)]
        idle: usize,
        /// Requests timed per phase.
        #[arg(long, default_value_t = 500)]
        requests: usize,
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Map footprint per node, egret vs Cilium's layout, for small/medium/large synthetic clusters.
    Footprint {
        /// Which shapes to measure.
        #[arg(long, value_delimiter = ',', default_values = ["small", "medium", "large"])]
        shapes: Vec<String>,
        /// Also write the rows as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
}

fn footprint(shapes: &[String], json: Option<&std::path::Path>) -> anyhow::Result<()> {
    use egret_compiler::synth;
    let mut rows = Vec::new();
    for name in shapes {
        let (label, shape) = match name.as_str() {
            "small" => ("small", synth::SMALL),
            "medium" => ("medium", synth::MEDIUM),
            "large" => ("large", synth::LARGE),
            other => anyhow::bail!("unknown shape `{other}` (small, medium, large)"),
        };
        let row = egret_bench::footprint::measure(label, &shape)?;
        eprintln!("{label}: measured in {:.1} s", row.seconds);
        rows.push(row);
    }
    print!("{}", egret_bench::footprint::table(&rows));
    json.map_or(Ok(()), |path| write_json(path, &rows))
}

#[expect(clippy::too_many_arguments, reason = "the subcommand's flags")]
fn classify(
    prefixes: &[usize],
    endpoints: &[usize],
    layout: Option<&str>,
    packet: &str,
    no_mss_clamp: bool,
    trials: usize,
    repeat: u32,
    json: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use egret_bench::classify::{Packet, Setup};
    use egret_compiler::codegen::{Layout, mss::MssClamp};
    let layout = match layout {
        None => None,
        Some("inline") => Some(Layout::Inline),
        Some("maps") => Some(Layout::Maps),
        Some(other) => anyhow::bail!("unknown layout `{other}` (inline, maps)"),
    };
    let packet =
        Packet::parse(packet).ok_or_else(|| anyhow::anyhow!("unknown packet `{packet}` (udp, tcp-ack, tcp-syn)"))?;
    let mss_clamp = (!no_mss_clamp).then_some(MssClamp::DEFAULT);
    let setup = Setup { layout, mss_clamp, packet, trials, repeat };
    let mut rows = Vec::new();
    for &p in prefixes {
        for &e in endpoints {
            let row = egret_bench::classify::measure(p, e, &setup)?;
            eprintln!(
                "{p} prefixes × {e} endpoints: egret {:.1} ns, Cilium-equivalent {:?} ns",
                row.egret_ns, row.cilium_ns
            );
            rows.push(row);
        }
    }
    print!("{}", egret_bench::classify::table(&rows));
    json.map_or(Ok(()), |path| write_json(path, &rows))
}

fn gateway(opts: &egret_bench::gateway::Options, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    let report = egret_bench::gateway::run(opts)?;
    print!("{}", egret_bench::gateway::render(opts, &report));
    json.map_or(Ok(()), |path| write_json(path, &report))
}

/// `--family v4|v6`.
fn parse_family(name: &str) -> Option<egret_lang::net::Family> {
    match name {
        "v4" => Some(egret_lang::net::Family::V4),
        "v6" => Some(egret_lang::net::Family::V6),
        other => {
            eprintln!("error: unknown family `{other}` (v4, v6)");
            None
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::MetricsServer { idle, requests, json } => match egret_bench::metrics_server::run(idle, requests) {
            Ok(phases) => {
                print!("{}", egret_bench::metrics_server::render(&phases));
                match json.map_or(Ok(()), |path| write_json(&path, &phases)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Lint { worst: true, egret, json, .. } => {
            let egret = egret.unwrap_or_else(|| std::env::current_exe().unwrap_or_default().with_file_name("egret"));
            tables(egret_bench::lint::run_worst(&egret), json.as_deref())
        }
        Command::Lint { policies, json, .. } => tables(Ok(egret_bench::lint::run(policies)), json.as_deref()),
        Command::Compile { runs, json } => tables(egret_bench::compile::run(runs), json.as_deref()),
        Command::Codegen { runs, json } => tables(egret_bench::codegen::run(runs), json.as_deref()),
        Command::Layouts { family, trials, repeat, entries, json } => {
            let Some(family) = parse_family(&family) else { return ExitCode::from(2) };
            let sizes = if entries.is_empty() { egret_bench::layouts::SIZES.to_vec() } else { entries };
            tables(egret_bench::layouts::run_sizes(family, trials, repeat, &sizes), json.as_deref())
        }
        Command::Swap { swaps, json } => tables(egret_bench::swap::run(swaps), json.as_deref()),
        Command::Failover { agent, trials, pod, json } => {
            let agent =
                agent.unwrap_or_else(|| std::env::current_exe().unwrap_or_default().with_file_name("egret-agent"));
            let opts = egret_bench::failover::Options { agent, trials, pod };
            let run = egret_bench::failover::run(&opts).and_then(|r| {
                print!("{}", egret_bench::failover::render(&r));
                json.as_deref().map_or(Ok(()), |path| write_json(path, &r))
            });
            match run {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cni { agent, plugin, pods, runs, json } => {
            let next_to = |name| std::env::current_exe().unwrap_or_default().with_file_name(name);
            let opts = egret_bench::cni::Options {
                agent: agent.unwrap_or_else(|| next_to("egret-agent")),
                plugin: plugin.unwrap_or_else(|| next_to("egret-cni")),
                pods,
                runs,
            };
            tables(egret_bench::cni::run(&opts).map(|r| egret_bench::cni::tables(&r)), json.as_deref())
        }
        Command::FailoverScale { trials, json } => {
            let run = egret_bench::failover_scale::run(trials).and_then(|r| {
                print!("{}", egret_bench::failover_scale::render(&r));
                json.as_deref().map_or(Ok(()), |path| write_json(path, &r))
            });
            match run {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Gateway { agent, flows, payload, seconds, trials, max_packets, family: f, json } => {
            let Some(family) = parse_family(&f) else { return ExitCode::from(2) };
            let agent =
                agent.unwrap_or_else(|| std::env::current_exe().unwrap_or_default().with_file_name("egret-agent"));
            let opts = egret_bench::gateway::Options {
                agent,
                flows,
                payload,
                duration: std::time::Duration::from_secs_f64(seconds),
                max_packets,
                trials,
                family,
            };
            match gateway(&opts, json.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Classify { prefixes, endpoints, layout, packet, no_mss_clamp, trials, repeat, json } => {
            match classify(
                &prefixes,
                &endpoints,
                layout.as_deref(),
                &packet,
                no_mss_clamp,
                trials,
                repeat,
                json.as_deref(),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Parts { endpoints, prefixes, trials, repeat } => {
            match egret_bench::parts::measure(endpoints, prefixes, trials, repeat) {
                Ok(parts) => {
                    print!("{}", egret_bench::parts::table(&parts));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Footprint { shapes, json } => match footprint(&shapes, json.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::CiliumProgram => match egret_bench::cilium_dp::program() {
            Ok((p, maps)) => match egret_bpf::verifier::verify(&p, &maps) {
                Ok(_) => {
                    print!("{}", egret_bpf::disasm::to_asm(&p, egret_bpf::disasm::Dialect::Llvm14));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: the anchor program does not verify: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
