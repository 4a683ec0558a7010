//! `egret-agent --snapshot DIR --node NAME [--bpffs ROOT] [--tunnel-port N] [--underlay-mtu N] [--netns NAME] [--metrics ADDR] [--once]`
//! `egret-agent --kube --node NAME [--bpffs ROOT] [--tunnel-port N] [--underlay-mtu N] [--netns NAME] [--metrics ADDR] [--debounce QUIET_MS,MAX_MS] [--cni-socket PATH [--cni-selection-file PATH]]`
//!
//! Compiles the node from the snapshot directory, applies it, attaches the
//! node's pods, and (without `--once`) re-applies whenever the directory's
//! files or the node's interfaces change (polled every 500 ms).
//!
//! `--kube` takes the cluster from the Kubernetes API server instead
//! (`egret_runtime::kube_agent`): the API server is found as
//! `kube::Config::infer` finds it (`KUBECONFIG`, `~/.kube/config`, else the
//! in-cluster environment), over HTTPS or HTTP. The Kubernetes Events the
//! node publishes are printed too, and each swap's delay from the first
//! watch event it covers. `--debounce` sets the watch's quiet period and
//! upper bound (default `100,300`: a change to a quiet cluster is compiled
//! at once, others 100 ms after the cluster goes quiet, 300 ms after them at
//! most). `--netns`
//! enters `/run/netns/NAME` with `setns` first (`ip netns exec` would hide
//! bpffs). `--metrics ADDR` serves `/metrics`, `/healthz` and `/readyz`
//! (`egret_runtime::metrics`). One line per sync on stdout; errors on stderr.
//! `--underlay-mtu N` is the MTU between nodes, for the MSS clamp of TCP SYNs
//! egret redirects into its tunnel (N − 90 for IPv4, N − 110 for IPv6); without
//! it, the MTU of the default route's interface.
//!
//! The node probes the gateways its failover choices name
//! (`egret_runtime::ha`): every `--probe-interval` (100 ms) over the
//! underlay, answered by the gateway's own datapath; `--probe-misses` (3)
//! unanswered probes make a gateway down, `--probe-hold-down` (1000 ms) of
//! answers up again; the classifier reads the result from `egret_gw_live`.
//! `--no-probes` leaves every gateway up.
//!
//! With `--kube`, a node that is a candidate of floating egress IPs takes
//! part in their ownership (`egret_runtime::ha::ownership`): one Lease per
//! IP in `--lease-namespace` (egret-system), `--lease-duration` (2000 ms);
//! the owner adds the address and announces it, and streams its NAT state
//! to the other candidates on `--replication-port` (4800).
//!
//! With `--cni-socket PATH` (`--kube` only), the agent serves `egret-cni`
//! (`egret_runtime::cni`): a new pod is put under its decision at CNI `ADD`,
//! before its first packet; after each reconcile the agent writes the
//! selection summary the plugin reads when the agent is down
//! (`--cni-selection-file`, default `/run/egret/cni-selection.json`).
//!
//! `egret-agent status|maps` show the node's pinned state (`egret_runtime::show`).
//! The mini-cluster demo is `egret-demo` (crate `egret-testkit`).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use egret_kube::watch::WatchConfig;
use egret_loader::ApplyReport;
use egret_loader::tunnel::TunnelConfig;
use egret_runtime::{Agent, AgentConfig, AgentError, Synced, kube_agent};

const USAGE: &str = "usage: egret-agent --snapshot DIR --node NAME [--bpffs ROOT] [--tunnel-port N] [--underlay-mtu N] [--netns NAME] [--metrics ADDR] [PROBES] [--once]
       egret-agent --kube --node NAME [--bpffs ROOT] [--tunnel-port N] [--underlay-mtu N] [--netns NAME] [--metrics ADDR] [PROBES] [--debounce QUIET_MS,MAX_MS] [FLOATING] [CNI]
         (--kube: the API server from KUBECONFIG, ~/.kube/config or the in-cluster environment;
          --debounce: compile QUIET_MS after the latest change, MAX_MS after the first at most, default 100,300;
          PROBES: [--probe-interval MS] [--probe-misses N] [--probe-hold-down MS] | --no-probes
            (gateways are probed every 100 ms over the underlay, answered by their datapath; down after 3
             unanswered probes, up again after 1000 ms of answers; a down gateway's endpoints fail over);
          FLOATING: [--lease-namespace NS] [--lease-duration MS] [--replication-port N]
            (floating egress IPs: one Lease per IP in NS, default egret-system, held for 2000 ms per renewal;
             the owner streams its NAT state to the other candidates on port 4800);
          CNI: --cni-socket PATH [--cni-selection-file PATH]
            (serve egret-cni: admit new pods at CNI ADD before their first packet; the selection summary
             the plugin reads when the agent is down, default /run/egret/cni-selection.json);
          log lines on stderr at EGRET_LOG=error|warn|info|debug|off, default warn)
       egret-agent status|maps [--bpffs ROOT] [--json]";

struct Args {
    config: AgentConfig,
    netns: Option<String>,
    metrics: Option<std::net::SocketAddr>,
    once: bool,
    watch: WatchConfig,
    cni: Option<egret_runtime::cni::CniConfig>,
}

/// `QUIET_MS,MAX_MS` of `--debounce`.
fn debounce(value: &str, watch: &mut WatchConfig) -> Result<(), String> {
    let bad = || format!("--debounce {value}: expected QUIET_MS,MAX_MS with QUIET_MS <= MAX_MS, e.g. 100,300");
    let (quiet, max) = value.split_once(',').ok_or_else(bad)?;
    let (quiet, max): (u64, u64) = (quiet.trim().parse().map_err(|_| bad())?, max.trim().parse().map_err(|_| bad())?);
    if quiet > max || max == 0 {
        return Err(bad());
    }
    watch.quiet = std::time::Duration::from_millis(quiet);
    watch.max_delay = std::time::Duration::from_millis(max);
    Ok(())
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut snapshot, mut node, mut netns, mut metrics, mut once, mut kube) = (None, None, None, None, false, false);
    let mut bpffs = PathBuf::from(egret_loader::pins::DEFAULT_ROOT);
    let mut tunnel = TunnelConfig::default();
    let mut underlay_mtu = None;
    let mut watch = WatchConfig::default();
    let mut debounced = false;
    let mut probes = egret_runtime::ha::liveness::Config::default();
    let mut no_probes = false;
    let mut floating = egret_runtime::FloatingSettings::default();
    let (mut cni_socket, mut cni_selection) = (None, None);
    let millis = |flag: &str, v: String| -> Result<std::time::Duration, String> {
        let ms: u64 = v.parse().map_err(|e| format!("{flag} {v}: {e} (milliseconds)"))?;
        if ms == 0 {
            return Err(format!("{flag} must be at least 1 ms"));
        }
        Ok(std::time::Duration::from_millis(ms))
    };
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--snapshot" => snapshot = Some(PathBuf::from(value()?)),
            "--node" => node = Some(value()?),
            "--bpffs" => bpffs = PathBuf::from(value()?),
            "--netns" => netns = Some(value()?),
            "--tunnel-port" => tunnel.dstport = value()?.parse().map_err(|e| format!("--tunnel-port: {e}"))?,
            "--underlay-mtu" => {
                let mtu: u16 = value()?.parse().map_err(|e| format!("--underlay-mtu: {e}"))?;
                if egret_bpf::layout::tunnel_mss(mtu, true).is_none() {
                    return Err(format!("--underlay-mtu {mtu}: too small for the tunnel (at least 111)"));
                }
                underlay_mtu = Some(mtu);
            }
            "--metrics" => metrics = Some(value()?.parse().map_err(|e| format!("--metrics: {e}"))?),
            "--once" => once = true,
            "--probe-interval" => probes.interval = millis("--probe-interval", value()?)?,
            "--probe-hold-down" => probes.hold_down = millis("--probe-hold-down", value()?)?,
            "--probe-misses" => {
                probes.down_after_misses = value()?.parse().map_err(|e| format!("--probe-misses: {e}"))?;
                if probes.down_after_misses == 0 {
                    return Err("--probe-misses must be at least 1".into());
                }
            }
            "--no-probes" => no_probes = true,
            "--lease-namespace" => floating.lease.namespace = value()?,
            "--lease-duration" => {
                floating.lease.duration = millis("--lease-duration", value()?)?;
                floating.float.lease_duration = floating.lease.duration;
                floating.float.fence_margin = floating.lease.duration / 4;
            }
            "--replication-port" => {
                floating.replication_port = value()?.parse().map_err(|e| format!("--replication-port: {e}"))?;
            }
            "--kube" => kube = true,
            "--cni-socket" => cni_socket = Some(PathBuf::from(value()?)),
            "--cni-selection-file" => cni_selection = Some(PathBuf::from(value()?)),
            "--debounce" => {
                debounce(&value()?, &mut watch)?;
                debounced = true;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    match (&snapshot, kube) {
        (Some(_), true) => return Err("--snapshot and --kube exclude each other".into()),
        (None, false) => return Err("--snapshot or --kube is required".into()),
        _ if kube && once => return Err("--once needs --snapshot".into()),
        _ if !kube && debounced => return Err("--debounce needs --kube".into()),
        _ => {}
    }
    if !kube && (cni_socket.is_some() || cni_selection.is_some()) {
        return Err("--cni-socket needs --kube (admissions learn pods from the API server)".into());
    }
    if cni_socket.is_none() && cni_selection.is_some() {
        return Err("--cni-selection-file needs --cni-socket".into());
    }
    let cni = cni_socket.map(|socket| egret_runtime::cni::CniConfig {
        socket,
        selection_file: cni_selection.unwrap_or_else(|| PathBuf::from(egret_cni::protocol::DEFAULT_SELECTION_FILE)),
    });
    let node = node.ok_or("--node is required")?;
    let probes = (!no_probes).then_some(probes);
    Ok(Args {
        config: AgentConfig { snapshot, node, bpffs_root: bpffs, tunnel, probes, floating, underlay_mtu },
        netns,
        metrics,
        once,
        watch,
        cni,
    })
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
                eprintln!("pod {t:?} not attached: {e}");
            }
            for (name, e) in &s.egress.unresolved {
                eprintln!("egress interface {name} not attached: {e}");
            }
        }
        Err(e) => {
            // the diagnostics' codes, for `egret rule CODE`
            let codes = e.codes();
            let codes = if codes.is_empty() { String::new() } else { format!(" [{}]", codes.join(", ")) };
            eprintln!("sync failed: {e}{codes}");
        }
    }
}

fn main() -> ExitCode {
    if let Some(code) = egret_runtime::show::main(&std::env::args().skip(1).collect::<Vec<_>>()) {
        return code;
    }
    if matches!(std::env::args().nth(1).as_deref(), Some("-h" | "--help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(ns) = &args.netns
        && let Err(e) = enter_netns(ns)
    {
        eprintln!("{e}");
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
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = args.metrics {
        match egret_runtime::metrics::serve(addr, agent.telemetry()) {
            Ok((bound, _)) => println!("metrics on http://{bound}/metrics"),
            Err(e) => {
                eprintln!("--metrics {addr}: {e}");
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
    match agent.run(|| false, report) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines of the watch and of kube's client on stderr, at the level
/// `EGRET_LOG` names (default `warn`).
fn init_log() {
    use tracing_subscriber::filter::LevelFilter;
    let level = match std::env::var("EGRET_LOG").as_deref() {
        Ok("off") => LevelFilter::OFF,
        Ok("error") => LevelFilter::ERROR,
        Ok("info") => LevelFilter::INFO,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("trace") => LevelFilter::TRACE,
        _ => LevelFilter::WARN,
    };
    let _ = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).try_init();
}

/// The async runtime (one thread: the one that entered the node's
/// namespace) and the API client of `--kube`.
fn kube_client() -> Result<(tokio::runtime::Runtime, kube::Client), ExitCode> {
    init_log();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        eprintln!("cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })?;
    let client = rt.block_on(kube_agent::client()).map_err(|e| {
        eprintln!("{e}");
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
        match kube_agent::run(agent, client, watch, cni, std::future::pending(), report).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("--cni-socket: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args, String> {
        parse(line.split_whitespace().map(str::to_string))
    }

    #[test]
    fn debounce_sets_the_watchs_quiet_period_and_bound() {
        let a = args("--kube --node n --debounce 50,400").expect("parses");
        assert_eq!(a.watch.quiet, std::time::Duration::from_millis(50));
        assert_eq!(a.watch.max_delay, std::time::Duration::from_millis(400));
        assert_eq!(args("--kube --node n").expect("parses").watch, WatchConfig::default());
        for bad in
            ["--kube --node n --debounce 500,100", "--kube --node n --debounce 100", "--kube --node n --debounce x,1"]
        {
            assert!(args(bad).is_err_and(|e| e.contains("QUIET_MS,MAX_MS")), "{bad}");
        }
        assert!(args("--snapshot d --node n --debounce 1,2").is_err_and(|e| e.contains("needs --kube")));
    }

    #[test]
    fn the_cni_socket_needs_kube_and_defaults_the_selection_file() {
        let a = args("--kube --node n --cni-socket /run/x/cni.sock").expect("parses");
        let cni = a.cni.expect("cni");
        assert_eq!(cni.socket, PathBuf::from("/run/x/cni.sock"));
        assert_eq!(cni.selection_file, PathBuf::from(egret_cni::protocol::DEFAULT_SELECTION_FILE));
        assert!(args("--kube --node n").expect("parses").cni.is_none());
        assert!(args("--snapshot d --node n --cni-socket /s").is_err_and(|e| e.contains("needs --kube")));
        assert!(args("--kube --node n --cni-selection-file /f").is_err_and(|e| e.contains("needs --cni-socket")));
    }

    #[test]
    fn underlay_mtu_is_optional_and_must_leave_room_for_the_tunnel() {
        assert_eq!(args("--kube --node n").expect("parses").config.underlay_mtu, None, "then: the default route's");
        assert_eq!(args("--kube --node n --underlay-mtu 9000").expect("parses").config.underlay_mtu, Some(9000));
        assert!(args("--kube --node n --underlay-mtu 110").is_err_and(|e| e.contains("too small")));
        assert!(args("--kube --node n --underlay-mtu x").is_err_and(|e| e.contains("--underlay-mtu")));
    }
}
