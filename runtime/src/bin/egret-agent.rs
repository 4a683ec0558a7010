//! `egret-agent`: the node agent.
//!
//! ```text
//! egret-agent --snapshot DIR --node NAME [OPTIONS] [--once]
//! egret-agent --kube --node NAME [OPTIONS]
//! egret-agent status|maps [--bpffs ROOT] [--netns NAME] [--json]
//! egret-agent uninstall [--bpffs ROOT] [--netns NAME] [--cni-bin-dir DIR --cni-conf-dir DIR]
//! egret-agent flows who EGRESS_IP:PORT [--at TIME] [--dir DIR] [--json]
//! egret-agent flows list [--pod NS/NAME|IP] [--policy NAME] [--dst IP[:PORT]] [--since TIME] [--until TIME] [--dir DIR] [--json]
//! ```
//!
//! `egret-agent --help` (and `egret-agent SUBCOMMAND --help`) describe every
//! option. With `--snapshot` the agent compiles the node from the snapshot
//! directory, applies it, attaches the node's pods, and (without `--once`)
//! re-applies whenever the directory's files or the node's interfaces
//! change (polled every 500 ms). `--kube` takes the cluster from the
//! Kubernetes API server instead (`egret_runtime::kube_agent`), found as
//! `kube::Config::infer` finds it (`KUBECONFIG`, `~/.kube/config`, else the
//! in-cluster environment). `--netns` enters `/run/netns/NAME` with `setns`
//! first (`ip netns exec` would hide bpffs). `--metrics ADDR` serves
//! `/metrics`, `/healthz` and `/readyz` (`egret_runtime::metrics`).
//!
//! Output: one line per sync on stdout (`applied generation N`, `swapped
//! generation N -> M`, `unchanged generation N`; with `--kube` each policy
//! Event and each swap's delay from the first watch event it covers), the
//! progress scripts and the test kit read; everything else is a log event
//! (`tracing`) on stderr, with a timestamp, as text or JSON lines
//! (`--log-format`), at the level `EGRET_LOG` names (default `warn`).
//!
//! The node probes the gateways its failover choices name
//! (`egret_runtime::ha`); with `--kube`, a node that is a candidate of
//! floating egress IPs takes part in their ownership
//! (`egret_runtime::ha::ownership`); with `--cni-socket` the agent serves
//! `egret-cni` (`egret_runtime::cni`). `egret-agent status|maps` show the
//! node's pinned state (`egret_runtime::show`); `egret-agent uninstall`
//! removes everything egret installed on the node
//! (`egret_runtime::uninstall`).
//!
//! SIGTERM (the kubelet stopping the pod) or SIGINT ends a running agent
//! between two passes, with exit status 0; the pinned generation stays and
//! the next agent adopts it. A handler is needed: as a container's PID 1
//! the agent would never see a SIGTERM it does not handle (pid_namespaces(7):
//! the kernel delivers to a namespace's init only the signals it has a
//! handler for), and the kubelet would wait out the grace period and SIGKILL.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use egret_kube::watch::WatchConfig;
use egret_loader::ApplyReport;
use egret_loader::tunnel::TunnelConfig;
use egret_runtime::{Agent, AgentConfig, AgentError, Synced, kube_agent};

#[derive(Parser, Debug)]
#[command(
    name = "egret-agent",
    version,
    about = "egret's node agent: compiles the node's egress-gateway policies into eBPF and keeps them applied",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generations, attachments, map fill levels, state maps, gateways and floating IPs.
    Status(ShowArgs),
    /// The live decision table (Cilium's columns), NAT table use, drops by reason, NAT connections.
    Maps(ShowArgs),
    /// Remove everything egret installed on this node (links, pins, egret0, nft tables,
    /// floating IPs, egret-cni); idempotent. Stop the agent first.
    Uninstall(UninstallArgs),
    /// The flow audit log (written by an agent run with --flow-log): who was behind a translation.
    #[command(subcommand)]
    Flows(FlowsCmd),
}

#[derive(Subcommand, Debug)]
enum FlowsCmd {
    /// The pod, destination, policy and lifetime of the connections translated to EGRESS_IP:PORT.
    Who(WhoArgs),
    /// The connections of the log, filtered.
    List(ListArgs),
}

#[derive(Args, Debug)]
struct FlowLogDir {
    /// The flow log's directory.
    #[arg(long, value_name = "DIR", default_value = egret_runtime::flows::log::DEFAULT_DIR)]
    dir: PathBuf,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct WhoArgs {
    /// The translated source: egress IP and port (IPv6: [ADDR]:PORT).
    #[arg(value_name = "EGRESS_IP:PORT")]
    egress: std::net::SocketAddr,
    /// Only the connections alive at this time (RFC 3339, or YYYY-MM-DDTHH:MM[:SS] in UTC).
    #[arg(long, value_name = "TIME", value_parser = egret_runtime::flows::query::parse_time)]
    at: Option<jiff::Timestamp>,
    #[command(flatten)]
    log: FlowLogDir,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// The pod: NAMESPACE/NAME or its IP.
    #[arg(long, value_name = "POD")]
    pod: Option<String>,
    /// The policy's name.
    #[arg(long, value_name = "NAME")]
    policy: Option<String>,
    /// The destination: IP or IP:PORT.
    #[arg(long, value_name = "DST")]
    dst: Option<String>,
    /// Alive at or after this time.
    #[arg(long, value_name = "TIME", value_parser = egret_runtime::flows::query::parse_time)]
    since: Option<jiff::Timestamp>,
    /// Alive at or before this time.
    #[arg(long, value_name = "TIME", value_parser = egret_runtime::flows::query::parse_time)]
    until: Option<jiff::Timestamp>,
    #[command(flatten)]
    log: FlowLogDir,
}

/// Where the node's state is.
#[derive(Args, Debug, Clone)]
struct NodeArgs {
    /// The loader's directory on bpffs.
    #[arg(long, value_name = "ROOT", default_value = egret_loader::pins::DEFAULT_ROOT)]
    bpffs: PathBuf,
    /// Work in the network namespace /run/netns/NAME (entered with setns).
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
}

#[derive(Args, Debug)]
struct ShowArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct UninstallArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The tunnel device's name.
    #[arg(long, value_name = "NAME", default_value = "egret0")]
    tunnel: String,
    /// Also remove egret-cni from this CNI bin directory (with --cni-conf-dir).
    #[arg(long, value_name = "DIR", requires = "cni_conf_dir")]
    cni_bin_dir: Option<PathBuf>,
    /// Also remove egret-cni from the conflists of this directory (with --cni-bin-dir).
    #[arg(long, value_name = "DIR", requires = "cni_bin_dir")]
    cni_conf_dir: Option<PathBuf>,
    /// The agent's CNI socket and selection summary, removed with egret-cni.
    #[arg(long, value_name = "PATH", default_values = [egret_cni::protocol::DEFAULT_SOCKET, egret_cni::protocol::DEFAULT_SELECTION_FILE])]
    cni_file: Vec<PathBuf>,
    /// After uninstalling, stay idle until terminated (the chart's uninstall DaemonSet: Ready = done on this node).
    #[arg(long)]
    then_idle: bool,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Args, Debug)]
struct LogArgs {
    /// Log events on stderr as text or JSON lines (level: EGRET_LOG=error|warn|info|debug|trace|off, default warn).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Compile the node from this directory of policies and cluster objects.
    #[arg(long, value_name = "DIR", required_unless_present = "kube", conflicts_with = "kube")]
    snapshot: Option<PathBuf>,
    /// Compile the node from the Kubernetes API server (KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long)]
    kube: bool,
    /// The node this agent serves.
    #[arg(long, value_name = "NAME", required = true)]
    node: Option<String>,
    #[command(flatten)]
    at: NodeArgs,
    /// egret0's VXLAN UDP port.
    #[arg(long, value_name = "N", default_value_t = TunnelConfig::default().dstport)]
    tunnel_port: u16,
    /// The MTU between nodes, for the MSS clamp of redirected TCP SYNs (default: the default route's).
    #[arg(long, value_name = "N", value_parser = underlay_mtu)]
    underlay_mtu: Option<u16>,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Apply once and exit (--snapshot only).
    #[arg(long, conflicts_with = "kube")]
    once: bool,
    /// Compile QUIET_MS after the latest change, MAX_MS after the first at most (--kube only).
    #[arg(long, value_name = "QUIET_MS,MAX_MS", value_parser = debounce, conflicts_with = "snapshot")]
    debounce: Option<(Duration, Duration)>,
    /// Watch every pod of the cluster even while this node serves no egress slot
    /// (by default a worker watches its own pods: `spec.nodeName`) (--kube only).
    #[arg(long, conflicts_with = "snapshot")]
    watch_all_pods: bool,
    /// Probe the gateways every MS milliseconds.
    #[arg(long, value_name = "MS", value_parser = millis, default_value = "100", help_heading = "Gateway probes")]
    probe_interval: Duration,
    /// Unanswered probes that make a gateway down.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), default_value_t = 3, help_heading = "Gateway probes")]
    probe_misses: u32,
    /// Milliseconds of answers that make a down gateway up again.
    #[arg(long, value_name = "MS", value_parser = millis, default_value = "1000", help_heading = "Gateway probes")]
    probe_hold_down: Duration,
    /// Do not probe: every gateway stays up.
    #[arg(long, help_heading = "Gateway probes")]
    no_probes: bool,
    /// The namespace of the floating IPs' Leases.
    #[arg(long, value_name = "NS", help_heading = "Floating egress IPs")]
    lease_namespace: Option<String>,
    /// How long a Lease renewal holds, in milliseconds.
    #[arg(long, value_name = "MS", value_parser = millis, help_heading = "Floating egress IPs")]
    lease_duration: Option<Duration>,
    /// The TCP port the owner streams its NAT state to the other candidates on.
    #[arg(long, value_name = "N", help_heading = "Floating egress IPs")]
    replication_port: Option<u16>,
    /// Serve egret-cni on this Unix socket: new pods are admitted before their first packet (--kube only).
    #[arg(long, value_name = "PATH", conflicts_with = "snapshot", help_heading = "egret-cni")]
    cni_socket: Option<PathBuf>,
    /// The selection summary egret-cni reads while the agent is down.
    #[arg(long, value_name = "PATH", requires = "cni_socket", help_heading = "egret-cni")]
    cni_selection_file: Option<PathBuf>,
    /// Write the flow audit log (`egret-agent flows`) to this directory.
    #[arg(long, value_name = "DIR", help_heading = "Flow log")]
    flow_log: Option<PathBuf>,
    /// The most bytes the flow log keeps (its oldest segment files are deleted beyond).
    #[arg(long, value_name = "BYTES", default_value_t = egret_runtime::flows::log::DEFAULT_MAX_BYTES, requires = "flow_log", help_heading = "Flow log")]
    flow_log_max_bytes: u64,
    /// How many segment files the flow log's bytes are spread over.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..), default_value_t = egret_runtime::flows::log::DEFAULT_FILES, requires = "flow_log", help_heading = "Flow log")]
    flow_log_files: u32,
    /// How often connections are checked for expiry, in milliseconds.
    #[arg(long, value_name = "MS", value_parser = millis, default_value = "2000", requires = "flow_log", help_heading = "Flow log")]
    flow_log_sweep: Duration,
    #[command(flatten)]
    log: LogArgs,
}

/// `--underlay-mtu`: room for the tunnel.
fn underlay_mtu(v: &str) -> Result<u16, String> {
    let mtu: u16 = v.parse().map_err(|e| format!("{e}"))?;
    if egret_bpf::layout::tunnel_mss(mtu, true).is_none() {
        return Err(format!("{mtu} is too small for the tunnel (at least 111)"));
    }
    Ok(mtu)
}

/// A positive number of milliseconds.
fn millis(v: &str) -> Result<Duration, String> {
    let ms: u64 = v.parse().map_err(|e| format!("{e} (milliseconds)"))?;
    if ms == 0 {
        return Err("must be at least 1 ms".into());
    }
    Ok(Duration::from_millis(ms))
}

/// `QUIET_MS,MAX_MS` of `--debounce`.
fn debounce(value: &str) -> Result<(Duration, Duration), String> {
    let bad = || "expected QUIET_MS,MAX_MS with QUIET_MS <= MAX_MS, e.g. 100,300".to_owned();
    let (quiet, max) = value.split_once(',').ok_or_else(bad)?;
    let (quiet, max): (u64, u64) = (quiet.trim().parse().map_err(|_| bad())?, max.trim().parse().map_err(|_| bad())?);
    if quiet > max || max == 0 {
        return Err(bad());
    }
    Ok((Duration::from_millis(quiet), Duration::from_millis(max)))
}

/// What the agent runs with.
struct Run {
    config: AgentConfig,
    netns: Option<String>,
    metrics: Option<std::net::SocketAddr>,
    once: bool,
    watch: WatchConfig,
    cni: Option<egret_runtime::cni::CniConfig>,
}

impl RunArgs {
    fn into_run(self) -> Run {
        let mut watch = WatchConfig::default();
        if let Some((quiet, max)) = self.debounce {
            (watch.quiet, watch.max_delay) = (quiet, max);
        }
        watch.all_pods = self.watch_all_pods;
        let probes = egret_runtime::ha::liveness::Config {
            interval: self.probe_interval,
            hold_down: self.probe_hold_down,
            down_after_misses: self.probe_misses,
        };
        let mut floating = egret_runtime::FloatingSettings::default();
        if let Some(ns) = self.lease_namespace {
            floating.lease.namespace = ns;
        }
        if let Some(d) = self.lease_duration {
            floating.lease.duration = d;
            floating.float.lease_duration = d;
            floating.float.fence_margin = d / 4;
        }
        if let Some(p) = self.replication_port {
            floating.replication_port = p;
        }
        let cni = self.cni_socket.map(|socket| egret_runtime::cni::CniConfig {
            socket,
            selection_file: self
                .cni_selection_file
                .unwrap_or_else(|| PathBuf::from(egret_cni::protocol::DEFAULT_SELECTION_FILE)),
        });
        let tunnel = TunnelConfig { dstport: self.tunnel_port, ..TunnelConfig::default() };
        Run {
            config: AgentConfig {
                snapshot: self.snapshot,
                node: self.node.unwrap_or_default(),
                bpffs_root: self.at.bpffs,
                tunnel,
                probes: (!self.no_probes).then_some(probes),
                floating,
                underlay_mtu: self.underlay_mtu,
                flow_log: self.flow_log.map(|dir| egret_runtime::FlowLogSettings {
                    log: egret_runtime::flows::log::LogConfig {
                        dir,
                        max_bytes: self.flow_log_max_bytes,
                        files: self.flow_log_files,
                    },
                    sweep: self.flow_log_sweep,
                }),
            },
            netns: self.at.netns,
            metrics: self.metrics,
            once: self.once,
            watch,
            cni,
        }
    }
}

fn enter_netns(name: &str) -> Result<(), String> {
    let path = Path::new("/run/netns").join(name);
    let f = File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    rustix::thread::move_into_link_name_space(f.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .map_err(|e| format!("setns into {name}: {e}"))
}

fn report(r: &Result<Synced, AgentError>) {
    match r {
        Ok(s) => {
            match &s.apply {
                ApplyReport::Unchanged { generation } => println!("unchanged generation {generation}"),
                ApplyReport::Swapped { from, to, .. } => match from {
                    Some(f) => println!("swapped generation {f} -> {to}"),
                    None => println!("applied generation {to}"),
                },
            }
            for (t, e) in &s.pods.unresolved {
                tracing::warn!(pod = ?t, error = %e, "pod not attached");
            }
            for (name, e) in &s.egress.unresolved {
                tracing::warn!(interface = %name, error = %e, "egress interface not attached");
            }
        }
        Err(e @ AgentError::ListingPods { .. }) => tracing::info!(reason = %e, "nothing applied yet"),
        Err(e) => {
            // the diagnostics' codes, for `egret rule CODE`
            tracing::error!(codes = ?e.codes(), error = %e, "sync failed");
        }
    }
}

/// Log events on stderr, timestamped, at the level `EGRET_LOG` names.
fn init_log(format: LogFormat) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match std::env::var("EGRET_LOG").as_deref() {
        Ok("off") => LevelFilter::OFF,
        Ok("error") => LevelFilter::ERROR,
        Ok("info") => LevelFilter::INFO,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("trace") => LevelFilter::TRACE,
        _ => LevelFilter::WARN,
    };
    let builder = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Status(a)) => show(&a, egret_runtime::show::status),
        Some(Cmd::Maps(a)) => show(&a, egret_runtime::show::maps),
        Some(Cmd::Uninstall(a)) => uninstall(a),
        Some(Cmd::Flows(c)) => flows(c),
        None => {
            init_log(cli.run.log.log_format);
            run(cli.run.into_run())
        }
    }
}

/// `flows who` and `flows list`.
fn flows(c: FlowsCmd) -> ExitCode {
    use egret_runtime::flows::query;
    let (found, log) = match c {
        FlowsCmd::Who(a) => (query::who(&a.log.dir, a.egress, a.at), a.log),
        FlowsCmd::List(a) => {
            let filter = query::Filter { pod: a.pod, policy: a.policy, dst: a.dst, since: a.since, until: a.until };
            (query::list(&a.log.dir, &filter), a.log)
        }
    };
    match found {
        Ok(conns) if log.json => match serde_json::to_string_pretty(&conns) {
            Ok(j) => {
                println!("{j}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Ok(conns) => {
            print!("{}", query::text(&conns));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("reading the flow log in {}: {e}", log.dir.display());
            ExitCode::FAILURE
        }
    }
}

/// `status` and `maps`.
fn show(a: &ShowArgs, render: fn(&Path, bool) -> Result<String, egret_loader::LoaderError>) -> ExitCode {
    if let Some(ns) = &a.node.netns
        && let Err(e) = enter_netns(ns)
    {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    match render(&a.node.bpffs, a.json) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A flag set once SIGTERM or SIGINT arrives (module doc), from a thread
/// of its own that waits for them; `None` (after saying why) if they
/// cannot be caught.
fn terminated() -> Option<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build();
    // the handlers are registered before this returns, on this thread
    let caught = rt.and_then(|rt| {
        let _in = rt.enter();
        Ok((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?, rt))
    });
    let (mut term, mut int, rt) = match caught {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "SIGTERM cannot be caught: a container's stop will wait for SIGKILL");
            return None;
        }
    };
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    std::thread::spawn(move || {
        rt.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        set.store(true, Ordering::SeqCst);
    });
    Some(flag)
}

/// How often `uninstall --then-idle` looks at the flag.
const STOP_POLL: Duration = Duration::from_millis(200);

fn is_set(flag: Option<&Arc<AtomicBool>>) -> bool {
    flag.is_some_and(|f| f.load(Ordering::SeqCst))
}

fn uninstall(a: UninstallArgs) -> ExitCode {
    init_log(a.log.log_format);
    if let Some(ns) = &a.node.netns
        && let Err(e) = enter_netns(ns)
    {
        tracing::error!(netns = %ns, error = %e, "cannot enter the network namespace");
        return ExitCode::FAILURE;
    }
    let config = egret_runtime::uninstall::UninstallConfig {
        bpffs_root: a.node.bpffs,
        tunnel: a.tunnel,
        cni: a.cni_bin_dir.zip(a.cni_conf_dir),
        cni_files: a.cni_file,
    };
    match egret_runtime::uninstall::uninstall(&config) {
        Ok(done) => {
            print!("{done}");
            if a.then_idle {
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
                let stop = terminated();
                while !is_set(stop.as_ref()) {
                    std::thread::park_timeout(STOP_POLL);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "uninstall stopped (run it again once the cause is gone)");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Run) -> ExitCode {
    if let Some(ns) = &args.netns
        && let Err(e) = enter_netns(ns)
    {
        tracing::error!(netns = %ns, error = %e, "cannot enter the network namespace");
        return ExitCode::FAILURE;
    }
    // --kube: the API client first, so a bad kubeconfig fails before the
    // loader touches the node (no egret0, no pins)
    let kube = match args.config.snapshot {
        Some(_) => None,
        None => match kube_client() {
            Ok(k) => Some(k),
            Err(code) => return code,
        },
    };
    let mut agent = match Agent::open(args.config) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the node");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = args.metrics {
        match egret_runtime::metrics::serve(addr, agent.telemetry()) {
            Ok((bound, _)) => println!("metrics on http://{bound}/metrics"),
            Err(e) => {
                tracing::error!(address = %addr, error = %e, "cannot serve the metrics");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some((rt, client)) = kube {
        return run_kube(&mut agent, &rt, client, args.watch, args.cni);
    }
    if args.once {
        let r = agent.sync();
        report(&r);
        return if r.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let stop = terminated();
    match agent.run(|| is_set(stop.as_ref()), report) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the agent stopped");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime (one thread: the one that entered the node's
/// namespace) and the API client of `--kube`.
fn kube_client() -> Result<(tokio::runtime::Runtime, kube::Client), ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        tracing::error!(error = %e, "cannot start the async runtime");
        ExitCode::FAILURE
    })?;
    let client = rt.block_on(kube_agent::client()).map_err(|e| {
        tracing::error!(error = %e, "no API server client");
        ExitCode::FAILURE
    })?;
    Ok((rt, client))
}

/// `--kube`: the agent from the API server, until killed.
fn run_kube(
    agent: &mut Agent,
    rt: &tokio::runtime::Runtime,
    client: kube::Client,
    watch: WatchConfig,
    cni: Option<egret_runtime::cni::CniConfig>,
) -> ExitCode {
    rt.block_on(async {
        let report = |r: &kube_agent::Reconciled| {
            for e in &r.events {
                println!("policy {}: {} {}: {}", e.policy, e.type_(), e.reason, e.note);
            }
            report(&r.result);
            if let Ok(Synced { apply: ApplyReport::Swapped { .. }, .. }) = &r.result {
                println!("event to dataplane {:.1} ms", r.latency.as_secs_f64() * 1e3);
            }
        };
        // SIGTERM or SIGINT ends the watch (module doc)
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "SIGTERM cannot be caught: a container's stop will wait for SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        };
        match kube_agent::run(agent, client, watch, cni, shutdown, report).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve egret-cni (--cni-socket)");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("egret-agent").chain(line.split_whitespace()))
    }

    fn run(line: &str) -> Run {
        args(line).expect("parses").run.into_run()
    }

    /// The error's text, if `line` does not parse.
    fn error(line: &str) -> String {
        args(line).map(|_| String::new()).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn debounce_sets_the_watchs_quiet_period_and_bound() {
        let a = run("--kube --node n --debounce 50,400");
        assert_eq!(a.watch.quiet, Duration::from_millis(50));
        assert_eq!(a.watch.max_delay, Duration::from_millis(400));
        assert_eq!(run("--kube --node n").watch, WatchConfig::default());
        for bad in
            ["--kube --node n --debounce 500,100", "--kube --node n --debounce 100", "--kube --node n --debounce x,1"]
        {
            assert!(error(bad).contains("QUIET_MS,MAX_MS"), "{bad}: {}", error(bad));
        }
        assert!(error("--snapshot d --node n --debounce 1,2").contains("cannot be used with"));
    }

    #[test]
    fn the_cni_socket_needs_kube_and_defaults_the_selection_file() {
        let cni = run("--kube --node n --cni-socket /run/x/cni.sock").cni.expect("cni");
        assert_eq!(cni.socket, PathBuf::from("/run/x/cni.sock"));
        assert_eq!(cni.selection_file, PathBuf::from(egret_cni::protocol::DEFAULT_SELECTION_FILE));
        assert!(run("--kube --node n").cni.is_none());
        assert!(error("--snapshot d --node n --cni-socket /s").contains("cannot be used with"));
        assert!(error("--kube --node n --cni-selection-file /f").contains("--cni-socket"));
    }

    #[test]
    fn underlay_mtu_is_optional_and_must_leave_room_for_the_tunnel() {
        assert_eq!(run("--kube --node n").config.underlay_mtu, None, "then: the default route's");
        assert_eq!(run("--kube --node n --underlay-mtu 9000").config.underlay_mtu, Some(9000));
        assert!(error("--kube --node n --underlay-mtu 110").contains("too small"));
        assert!(error("--kube --node n --underlay-mtu x").contains("--underlay-mtu"));
    }

    #[test]
    fn modes_exclude_each_other_and_subcommands_need_no_node() {
        assert!(error("--snapshot d --kube --node n").contains("cannot be used with"));
        assert!(error("--node n").contains("--snapshot"));
        assert!(error("--kube").contains("--node"));
        assert!(error("--kube --node n --once").contains("cannot be used with"));
        assert!(error("--kube --node n --probe-misses 0").contains("--probe-misses"));
        assert!(error("--kube --node n --probe-interval 0").contains("at least 1 ms"));
        let probes = run("--snapshot d --node n --probe-interval 50").config.probes.expect("probes");
        assert_eq!((probes.interval, probes.down_after_misses), (Duration::from_millis(50), 3));
        assert!(run("--snapshot d --node n --no-probes").config.probes.is_none());
        let Some(Cmd::Status(s)) = args("status --bpffs /x --netns ns --json").expect("parses").command else {
            panic!("status")
        };
        assert_eq!((s.node.bpffs.as_path(), s.node.netns.as_deref(), s.json), (Path::new("/x"), Some("ns"), true));
        let Some(Cmd::Uninstall(u)) = args("uninstall").expect("parses").command else { panic!("uninstall") };
        assert_eq!(u.cni_file.len(), 2, "the socket and the selection summary by default");
        assert!(error("uninstall --cni-bin-dir /opt/cni/bin").contains("--cni-conf-dir"));
        // a misspelt subcommand or flag gets a suggestion
        assert!(error("staus").contains("status"), "{}", error("staus"));
        assert!(error("--kube --node n --metrcs :9963").contains("--metrics"));
    }

    #[test]
    fn the_flow_log_options_and_commands_parse() {
        let r = run("--snapshot /s --node n --flow-log /var/log/f --flow-log-max-bytes 65536 --flow-log-files 4");
        let f = r.config.flow_log.expect("a flow log");
        assert_eq!((f.log.dir.as_path(), f.log.max_bytes, f.log.files), (Path::new("/var/log/f"), 65536, 4));
        assert_eq!(f.sweep, Duration::from_secs(2));
        assert_eq!(run("--snapshot /s --node n").config.flow_log, None);
        assert!(error("--snapshot /s --node n --flow-log-files 4").contains("--flow-log"), "needs --flow-log");
        assert!(error("--snapshot /s --node n --flow-log /f --flow-log-files 1").contains("1"));
        let Some(Cmd::Flows(FlowsCmd::Who(w))) =
            args("flows who 198.51.100.100:61234 --at 2026-12-08T10:32 --json").expect("parses").command
        else {
            panic!("flows who")
        };
        assert_eq!(w.egress, "198.51.100.100:61234".parse().expect("addr"));
        assert_eq!(w.at, Some("2026-12-08T10:32:00Z".parse().expect("time")), "no offset: UTC");
        assert!(w.log.json);
        assert_eq!(w.log.dir, Path::new(egret_runtime::flows::log::DEFAULT_DIR));
        assert!(error("flows who 198.51.100.100:61234 --at yesterday").contains("is not a time"));
        let Some(Cmd::Flows(FlowsCmd::List(l))) =
            args("flows list --pod production/egress-1 --since 2026-12-08T10:00:00+01:00 --dir /d")
                .expect("parses")
                .command
        else {
            panic!("flows list")
        };
        assert_eq!(l.pod.as_deref(), Some("production/egress-1"));
        assert_eq!(l.since, Some("2026-12-08T09:00:00Z".parse().expect("time")));
        assert_eq!(l.log.dir, Path::new("/d"));
    }
}
