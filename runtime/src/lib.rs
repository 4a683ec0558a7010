//! egret-runtime: the node agent (`egret-agent`).
//!
//! One agent per node, in the node's network namespace. Contract of
//! [`Agent`]:
//! - **Input**: one snapshot directory holding the policies and the cluster
//!   objects (read with `egret_lang::load`, recursively, like `egret compile`);
//!   the node by name.
//! - **Open** ([`Agent::open`]): creates or adopts the tunnel device
//!   (`egret_loader::tunnel::ensure`) and opens the loader on the bpffs root
//!   (adopting what is pinned; the loader refuses artifacts of other nodes).
//! - **Sync** ([`Agent::sync`]): reads the node's own interfaces
//!   ([`facts::discover`]; they join the input as the node's `NodeNetwork`
//!   unless the snapshot has one), compiles the node with the compile
//!   driver (`egret_compiler::driver`: resolve, plan, generate,
//!   equivalence-checked),
//!   applies the artifact (a digest-equal artifact loads nothing), then makes
//!   the attached pods equal the plan's local endpoints, by every address
//!   they have, IPv4 and IPv6 (`PodTarget::Ip`, which also fills
//!   `egret_local_eps_v4` / `_v6`: a dual-stack pod gets both) and the egress
//!   interfaces (`egret_gw_reply`) equal the ones its slots name. An input
//!   that does not compile leaves the running generation serving.
//! - **Watch** ([`Agent::run`]): polls the snapshot's files (path, mtime,
//!   length) and the node's interfaces every [`POLL`] and syncs when either
//!   changes; a failed sync is reported and retried at the next change.
//!
//! In `--kube` mode there is no snapshot: [`kube_agent`] watches the API
//! server, compiles the node from the cluster view through the same
//! driver, and hands the result ([`Compiled::new`]) to the same
//! [`Agent::apply`] the snapshot path uses.
//!
//! Compile errors stay typed ([`AgentError::Input`], [`AgentError::Compile`]
//! hold the driver's `CompileError`): [`AgentError::diagnostics`] and
//! [`AgentError::codes`] give the diagnostics and their codes.

pub mod cni;
pub mod facts;
pub mod flows;
pub mod ha;
pub mod kube_agent;
pub mod metrics;
pub mod show;
pub mod uninstall;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use egret_bpf::artifact::Artifact;
use egret_compiler::driver::{self, CompileError, Driver};
use egret_compiler::plan::{Plan, Verified};
use egret_compiler::resolve::{InterfaceBinding, Options, World};
use egret_lang::diag::Diagnostic;
use egret_lang::source::SourceMap;
use egret_loader::tunnel::{self, TunnelConfig, TunnelState};
use egret_loader::{ApplyReport, EgressSyncReport, Loader, LoaderConfig, LoaderError, PodState, PodTarget, SyncReport};

/// How often [`Agent::run`] looks at the snapshot.
pub const POLL: Duration = Duration::from_millis(500);

/// Why the agent could not do something.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The snapshot has errors (loader or validation errors).
    #[error(
        "snapshot `{dir}` has {} error(s); first: {}",
        source.diagnostics().len(),
        source.diagnostics().first().map_or("", |d| d.message.as_str())
    )]
    Input {
        /// The snapshot directory.
        dir: PathBuf,
        /// The driver's error, with every diagnostic.
        source: CompileError,
    },
    /// The node does not compile (an unknown node, an internal error, code
    /// generation or its checks).
    #[error("{}", compile_message(node, source))]
    Compile {
        /// The node.
        node: String,
        /// The driver's error.
        source: CompileError,
    },
    /// The loader failed.
    #[error("loader: {source}")]
    Loader {
        /// The error.
        #[from]
        source: LoaderError,
    },
    /// The gateway prober could not start.
    #[error("gateway probes: {source}")]
    Probe {
        /// The error.
        source: ha::probe::ProbeError,
    },
    /// The node serves an egress slot and its view holds only its own pods:
    /// nothing is applied until every pod is listed (`kube_agent`).
    #[error(
        "node `{node}` serves egress slots: listing every pod (its allowed sources) before applying; the running \
         generation serves meanwhile"
    )]
    ListingPods {
        /// The node.
        node: String,
    },
    /// [`Agent::sync`] or [`Agent::run`] without a snapshot directory.
    #[error("the agent has no snapshot directory (it is fed by the Kubernetes API)")]
    NoSnapshot,
    /// The snapshot could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn compile_message(node: &str, e: &CompileError) -> String {
    match e {
        // the error names the node and the stage
        CompileError::Codegen { .. } => e.to_string(),
        _ => format!("node `{node}` does not compile: {e}"),
    }
}

impl AgentError {
    /// The diagnostics of a compile that the input failed (empty otherwise).
    #[must_use]
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            AgentError::Input { source, .. } | AgentError::Compile { source, .. } => source.diagnostics(),
            _ => &[],
        }
    }

    /// The codes of those diagnostics' errors, in order.
    #[must_use]
    pub fn codes(&self) -> Vec<&'static str> {
        match self {
            AgentError::Input { source, .. } | AgentError::Compile { source, .. } => source.codes(),
            _ => Vec::new(),
        }
    }
}

/// A node compiled, with what the loader attaches.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The node's complete artifact.
    pub artifact: Artifact,
    /// Its local endpoints' addresses, both families (the pods to attach,
    /// one target per address).
    pub pods: Vec<IpAddr>,
    /// The egress interfaces of the slots it serves (where `egret_gw_reply`
    /// attaches), by name, sorted and deduplicated.
    pub egress_interfaces: Vec<String>,
    /// The plan's sizes.
    pub counts: egret_compiler::plan::NodeCounts,
    /// The node's underlay IPv4 (its first IPv4 InternalIP), the source of its probes.
    pub node_ip: Option<IpAddr>,
    /// The remote gateways the node's failover choices name: what it probes.
    pub gateways: BTreeSet<IpAddr>,
    /// Those of them whose node is not Ready: down whatever the probes say.
    pub not_ready: BTreeSet<IpAddr>,
    /// The floating egress IPs this node is a candidate for.
    pub floating: Vec<ha::ownership::FloatingRole>,
    /// What the flow log names connections with (pods, nodes, policies).
    pub directory: std::sync::Arc<flows::Directory>,
}

/// Compiles `node` from the snapshot directory `dir`.
///
/// # Errors
/// Input errors, an unknown node, code generation failures.
pub fn compile(dir: &Path, node: &str) -> Result<Compiled, AgentError> {
    compile_with_facts(dir, node, None)
}

/// [`compile`] with the node's own facts ([`facts::discover`]): when the
/// snapshot has no `NodeNetwork` for `node`, `facts` join the input as one
/// ([`facts::node_network`]), so egress interfaces and IPs resolve on the node.
///
/// # Errors
/// As [`compile`].
pub fn compile_with_facts(dir: &Path, node: &str, facts: Option<&facts::Facts>) -> Result<Compiled, AgentError> {
    let mut sources = SourceMap::new();
    let mut loaded = egret_lang::load::load(&mut sources, &[dir.to_path_buf()]);
    if let Some(facts) = facts {
        driver::add_node_facts(&mut sources, &mut loaded.bundle, facts::node_network(node, facts));
    }
    let world = driver::resolve(&loaded, &Options::default())
        .map_err(|source| AgentError::Input { dir: dir.to_path_buf(), source })?;
    let compiled = Driver::default()
        .compile(&world, node)
        .map_err(|source| AgentError::Compile { node: node.to_owned(), source })?;
    Ok(Compiled::new(&compiled.plan, compiled.artifact.into_artifact(), &world))
}

impl Compiled {
    /// The node's artifact with what the loader attaches, from its verified
    /// plan and the world it was compiled in: the plan's local endpoints
    /// (every address, both families) and the egress interfaces its slots name. The snapshot
    /// path ([`compile_with_facts`]) and the Kubernetes path ([`kube_agent`])
    /// both end here.
    #[must_use]
    pub fn new(plan: &Verified<Plan>, artifact: Artifact, world: &World) -> Compiled {
        let pods = plan.endpoints.iter().map(|e| e.ip).collect();
        let mut egress_interfaces: Vec<String> = plan
            .slots
            .iter()
            .filter_map(|s| match &s.interface {
                InterfaceBinding::Known { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        egress_interfaces.sort();
        egress_interfaces.dedup();
        let gateways: BTreeSet<IpAddr> = plan.gateways.iter().map(|g| g.ip).collect();
        // the floating slots this node serves: it is one of their candidates
        let floating = plan
            .slots
            .iter()
            .filter_map(|s| {
                let f = s.floating.as_ref()?;
                let InterfaceBinding::Known { name, .. } = &s.interface else { return None };
                Some(ha::ownership::FloatingRole {
                    ip: f.ip,
                    slot: s.id.0,
                    interface: name.clone(),
                    candidates: f.candidates.clone(),
                })
            })
            .collect();
        let not_ready = world.ready_health().down.intersection(&gateways).copied().collect();
        Compiled {
            artifact,
            pods,
            egress_interfaces,
            counts: plan.counts(),
            node_ip: plan.node_ip,
            gateways,
            not_ready,
            floating,
            directory: std::sync::Arc::new(flows::Directory::of_world(world)),
        }
    }
}

/// What identifies the snapshot's content: every file under `dir` with its
/// modification time and length, sorted by path.
///
/// # Errors
/// A directory or file that cannot be read.
pub fn snapshot_stamp(dir: &Path) -> Result<Vec<(PathBuf, SystemTime, u64)>, AgentError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let io = |source| AgentError::Io { path: d.clone(), source };
        for e in std::fs::read_dir(&d).map_err(io)? {
            let e = e.map_err(io)?;
            let path = e.path();
            let meta = e.metadata().map_err(|source| AgentError::Io { path: path.clone(), source })?;
            if meta.is_dir() {
                stack.push(path);
            } else {
                let mtime = meta.modified().map_err(|source| AgentError::Io { path: path.clone(), source })?;
                out.push((path, mtime, meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// How an agent is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The snapshot directory; `None` when the cluster comes from the API
    /// server ([`kube_agent`], which applies through [`Agent::apply`]).
    pub snapshot: Option<PathBuf>,
    /// The node this agent serves.
    pub node: String,
    /// The loader's bpffs root.
    pub bpffs_root: PathBuf,
    /// The tunnel device.
    pub tunnel: TunnelConfig,
    /// Probing the gateways (interval, misses, hold-down); `None`: no
    /// probes, every gateway stays up unless Kubernetes says it is not Ready
    /// (the agent then writes nothing to `egret_gw_live`).
    pub probes: Option<ha::liveness::Config>,
    /// Floating IPs (with `--kube`): where their Leases live and for how
    /// long, the ownership machines' timings, the NAT replication's port.
    pub floating: FloatingSettings,
    /// The node's underlay MTU, for the MSS clamp of redirected TCP SYNs;
    /// `None`: the MTU of the default route's interface
    /// ([`facts::default_route_mtu`]), or the compiled-in clamp without one.
    pub underlay_mtu: Option<u16>,
    /// The flow audit log ([`flows`]): where, how big, how often expiry is
    /// checked; `None`: no flow log (the datapath's events stay in the ring,
    /// which then drops them, counted).
    pub flow_log: Option<FlowLogSettings>,
}

/// [`AgentConfig::flow_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLogSettings {
    /// The log's directory and bound.
    pub log: flows::log::LogConfig,
    /// The expiry sweep's interval.
    pub sweep: Duration,
}

/// [`AgentConfig::floating`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingSettings {
    /// The Leases' namespace and duration.
    pub lease: egret_kube::lease::LeaseConfig,
    /// The ownership machines' timings.
    pub float: ha::float::Config,
    /// The NAT replication's TCP port (on the underlay address).
    pub replication_port: u16,
}

impl Default for FloatingSettings {
    fn default() -> FloatingSettings {
        FloatingSettings {
            lease: egret_kube::lease::LeaseConfig::default(),
            float: ha::float::Config::default(),
            replication_port: ha::replicate::DEFAULT_PORT,
        }
    }
}

/// The result of one [`Agent::sync`].
#[derive(Debug)]
pub struct Synced {
    /// What the loader did.
    pub apply: ApplyReport,
    /// What happened to the pods.
    pub pods: SyncReport,
    /// What happened to the egress interfaces.
    pub egress: EgressSyncReport,
}

/// The node agent. See the module doc for its contract.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    telemetry: std::sync::Arc<metrics::Telemetry>,
    loader: Loader,
    tunnel: TunnelState,
    /// Started at the first apply that knows the node's address.
    prober: Option<ha::probe::Prober>,
    /// The floating IPs' controller: started at the first apply that
    /// makes this node a candidate, with `--kube` only.
    ownership: Option<ha::ownership::Ownership>,
    /// Whether a snapshot-fed agent said it owns no floating IP.
    said_no_leases: bool,
    /// The prober's targets from the last applied plan.
    targets: BTreeSet<IpAddr>,
    /// Gateways probed besides (the policies this node reports, `--kube`).
    watched: BTreeSet<IpAddr>,
    /// The flow log's reader, when configured.
    flows: Option<flows::reader::FlowReader>,
}

impl Agent {
    /// Ensures the tunnel device and opens the loader.
    ///
    /// # Errors
    /// Tunnel or loader failures.
    pub fn open(config: AgentConfig) -> Result<Agent, AgentError> {
        let tunnel = tunnel::ensure(&config.tunnel)?;
        let mut lc = LoaderConfig::new(&config.bpffs_root);
        lc.node = Some(config.node.clone());
        lc.tunnel_device = config.tunnel.name.clone();
        lc.underlay_mtu = config.underlay_mtu.or_else(facts::default_route_mtu);
        let (loader, _) = Loader::open(lc)?;
        let telemetry = metrics::Telemetry::new(&config.bpffs_root);
        let flows = match &config.flow_log {
            Some(f) => {
                let rc = flows::reader::ReaderConfig {
                    root: config.bpffs_root.clone(),
                    node: config.node.clone(),
                    log: f.log.clone(),
                    sweep: f.sweep,
                };
                let reader = flows::reader::FlowReader::start(rc, telemetry.flow_counters())
                    .map_err(|source| AgentError::Io { path: f.log.dir.clone(), source })?;
                Some(reader)
            }
            None => None,
        };
        Ok(Agent {
            config,
            telemetry,
            loader,
            tunnel,
            prober: None,
            ownership: None,
            said_no_leases: false,
            targets: BTreeSet::new(),
            watched: BTreeSet::new(),
            flows,
        })
    }

    /// The node this agent serves.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.config.node
    }

    /// What [`tunnel::ensure`] did when the agent opened.
    #[must_use]
    pub fn tunnel(&self) -> TunnelState {
        self.tunnel
    }

    /// The agent's telemetry (for [`metrics::serve`]).
    #[must_use]
    pub fn telemetry(&self) -> std::sync::Arc<metrics::Telemetry> {
        self.telemetry.clone()
    }

    /// The loader.
    #[must_use]
    pub fn loader(&self) -> &Loader {
        &self.loader
    }

    /// Compiles, applies and syncs pods once.
    ///
    /// # Errors
    /// Compile, apply or pod-attach failures (the running generation stays).
    pub fn sync(&mut self) -> Result<Synced, AgentError> {
        let snapshot = self.config.snapshot.clone().ok_or(AgentError::NoSnapshot)?;
        let facts = facts::discover()
            .map_err(|source| AgentError::Io { path: "the node's interfaces and routes (netlink)".into(), source })?;
        let started = std::time::Instant::now();
        let compiled = compile_with_facts(&snapshot, &self.config.node, Some(&facts));
        self.telemetry.compiled(started.elapsed(), compiled.is_ok());
        self.apply(&compiled?)
    }

    /// Applies a compiled node: the artifact (a digest-equal artifact loads
    /// nothing), then the attached pods and egress interfaces, as the
    /// module doc says; records the outcome in the telemetry (the caller
    /// records the compile, [`metrics::Telemetry::compiled`]).
    ///
    /// # Errors
    /// Apply or attach failures (the running generation stays).
    pub fn apply(&mut self, compiled: &Compiled) -> Result<Synced, AgentError> {
        let applied = self.apply_inner(compiled);
        if applied.is_err() {
            self.telemetry.failed();
        }
        applied
    }

    fn apply_inner(&mut self, compiled: &Compiled) -> Result<Synced, AgentError> {
        let apply = self.loader.apply(&compiled.artifact)?;
        if let Some(f) = &self.flows {
            f.set_directory(compiled.directory.clone());
        }
        let targets: Vec<PodTarget> = compiled.pods.iter().map(|ip| PodTarget::Ip(*ip)).collect();
        let pods = self.loader.sync_pods(&targets)?;
        let egress = self.loader.sync_egress(&compiled.egress_interfaces)?;
        let (generation, swapped) = match &apply {
            ApplyReport::Unchanged { generation } => (generation.0, None),
            ApplyReport::Swapped { to, timings, .. } => (to.0, Some(timings.to_swapped())),
        };
        let unattached = metrics::Unattached { pods: pods.unresolved.len(), egress: egress.unresolved.len() };
        let counters = compiled.artifact.manifest.counters.clone();
        self.telemetry.applied(generation, swapped, compiled.counts, counters, unattached);
        self.probe(compiled)?;
        Ok(Synced { apply, pods, egress })
    }

    /// Puts endpoints admitted at CNI `ADD` under the running generation's
    /// decision, without a new generation (`egret_compiler::codegen::admit`,
    /// which says when a plan allows it): their classes into its
    /// `egret_admitted_*` maps, then its classifier on their veths (and
    /// their `egret_local_eps_*` entries). The next [`Agent::apply`] takes
    /// them into its plan.
    ///
    /// # Errors
    /// No generation runs, or its maps cannot be written (an endpoint whose
    /// veth cannot be attached is reported in the result instead).
    pub fn admit(&mut self, endpoints: &[egret_compiler::plan::EndpointEntry]) -> Result<Synced, AgentError> {
        let entries: Vec<_> = endpoints
            .iter()
            .map(|e| {
                let (map, key, value) = egret_compiler::codegen::admit::entry(e);
                (map, key, Some(value))
            })
            .collect();
        let generation = self.loader.write_running(&entries)?;
        let mut pods = SyncReport::default();
        for e in endpoints {
            let target = PodTarget::Ip(e.ip);
            match self.loader.attach_pod(&target) {
                Ok(a) if a.state == PodState::Attached => pods.attached.push(a.ifindex),
                Ok(_) => {}
                Err(err) => pods.unresolved.push((target, err)),
            }
        }
        Ok(Synced { apply: ApplyReport::Unchanged { generation }, pods, egress: EgressSyncReport::default() })
    }

    /// Takes sources admitted by [`Agent::admit`] out of the running
    /// generation's `egret_admitted_*` maps (a generation that stays while
    /// they left the plan).
    ///
    /// # Errors
    /// The maps cannot be written.
    pub fn unadmit(&mut self, ips: &[IpAddr]) -> Result<(), AgentError> {
        if ips.is_empty() {
            return Ok(());
        }
        let entries: Vec<_> = ips
            .iter()
            .map(|ip| {
                let (map, key) = egret_compiler::codegen::admit::key(*ip);
                (map, key, None)
            })
            .collect();
        self.loader.write_running(&entries)?;
        Ok(())
    }

    /// Points the prober at the gateways this node's choices name (starting
    /// it, on the agent's thread so that it runs in the node's namespace,
    /// once the node's address is known), with those Kubernetes says are
    /// not Ready down. Without probes the agent leaves `egret_gw_live`
    /// alone (every gateway stays up).
    fn probe(&mut self, compiled: &Compiled) -> Result<(), AgentError> {
        let (Some(sender), Some(liveness)) = (compiled.node_ip, self.config.probes) else { return Ok(()) };
        if self.prober.is_none() {
            let mut config = ha::probe::ProberConfig::new(&self.config.bpffs_root, sender);
            config.port = self.config.tunnel.dstport;
            config.liveness = liveness;
            let prober = ha::probe::Prober::start(config).map_err(|source| AgentError::Probe { source })?;
            self.telemetry.gateways(prober.status_handle());
            self.prober = Some(prober);
        }
        if let Some(p) = &self.prober {
            // the gateways the choices name, and for floating IPs every
            // candidate: the peers (whose death makes this node take over)
            // and this node itself (its self-probe: is its datapath healthy)
            let mut targets = compiled.gateways.clone();
            targets.extend(compiled.floating.iter().flat_map(|r| r.candidates.iter().map(|(_, ip)| *ip)));
            p.set_targets(targets.union(&self.watched).copied().collect());
            self.targets = targets;
            p.set_external_down(compiled.not_ready.clone());
        }
        self.own(compiled, sender)
    }

    /// Probes `gateways` too, from now on (besides the plan's): the gateways
    /// of the policies this node reports, whose changes it announces as
    /// Events ([`kube_agent`]).
    pub fn watch_gateways(&mut self, gateways: BTreeSet<IpAddr>) {
        if gateways == self.watched {
            return;
        }
        self.watched = gateways;
        if let Some(p) = &self.prober {
            p.set_targets(self.targets.union(&self.watched).copied().collect());
        }
    }

    /// The prober's status, once it has started.
    #[must_use]
    pub fn prober_status(&self) -> Option<ha::probe::StatusHandle> {
        self.prober.as_ref().map(ha::probe::Prober::status_handle)
    }

    /// Hands the floating IPs this node is a candidate for to the
    /// ownership controller (started on the agent's thread, so in the
    /// node's namespace, the first time there are any). Ownership needs
    /// the API server's Leases: a snapshot-fed agent owns nothing (the
    /// datapath drops the slots' traffic `no-owner`) and says so once.
    fn own(&mut self, compiled: &Compiled, node_ip: IpAddr) -> Result<(), AgentError> {
        if compiled.floating.is_empty() && self.ownership.is_none() {
            return Ok(());
        }
        if self.config.snapshot.is_some() {
            if self.ownership.is_none() && !self.said_no_leases {
                self.said_no_leases = true;
                tracing::warn!(
                    floating = compiled.floating.len(),
                    "floating egress IPs name this node as a candidate, but floating IPs need the API server's Leases (--kube): none is owned here"
                );
            }
            return Ok(());
        }
        if self.ownership.is_none() {
            let Some(prober) = &self.prober else { return Ok(()) };
            let config = ha::ownership::OwnershipConfig {
                node: self.config.node.clone(),
                node_ip,
                root: self.config.bpffs_root.clone(),
                lease: self.config.floating.lease.clone(),
                float: self.config.floating.float.clone(),
                replication_port: self.config.floating.replication_port,
            };
            let o = ha::ownership::Ownership::start(config, prober.status_handle())
                .map_err(|source| AgentError::Io { path: "the floating IPs' thread".into(), source })?;
            self.telemetry.floating(o.status_handle());
            self.ownership = Some(o);
        }
        if let Some(o) = &self.ownership {
            o.set_roles(compiled.floating.clone());
        }
        Ok(())
    }

    /// Syncs now, then whenever the snapshot changes, until `stop` returns
    /// true (checked every [`POLL`]); `report` sees every sync's outcome.
    ///
    /// # Errors
    /// Only if the snapshot directory itself cannot be read (or there is none).
    pub fn run(
        &mut self,
        mut stop: impl FnMut() -> bool,
        mut report: impl FnMut(&Result<Synced, AgentError>),
    ) -> Result<(), AgentError> {
        // what a sync depends on: the snapshot's files and the node's interfaces
        let state = |dir: &Path| -> Result<_, AgentError> { Ok((snapshot_stamp(dir)?, facts::discover().ok())) };
        let snapshot = self.config.snapshot.clone().ok_or(AgentError::NoSnapshot)?;
        let mut stamp = state(&snapshot)?;
        report(&self.sync());
        while !stop() {
            self.telemetry.alive();
            std::thread::sleep(POLL);
            let now = state(&snapshot)?;
            if now != stamp {
                // the newest file that changed: when the input changed
                let changed = now.0.iter().filter(|f| !stamp.0.contains(f)).map(|f| f.1).max();
                stamp = now;
                let r = self.sync();
                if let (Ok(Synced { apply: ApplyReport::Swapped { .. }, .. }), Some(t)) = (&r, changed)
                    && let Ok(d) = SystemTime::now().duration_since(t)
                {
                    self.telemetry.event_to_dataplane(d);
                }
                report(&r);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example policies and cluster in one snapshot directory.
    fn snapshot(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("egret-snapshot-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for sub in ["policies", "cluster"] {
            for e in std::fs::read_dir(examples.join(sub)).expect("examples") {
                let e = e.expect("entry");
                std::fs::copy(e.path(), dir.join(e.file_name())).expect("copy");
            }
        }
        dir
    }

    #[test]
    fn the_example_compiles_with_its_pods() {
        let dir = snapshot("compile");
        let c = compile(&dir, "worker-1").expect("compiles");
        assert_eq!(c.pods, vec![IpAddr::V4(std::net::Ipv4Addr::new(10, 244, 1, 10))]);
        c.artifact.check().expect("a valid artifact");
        assert_eq!(c.artifact.manifest.node, "worker-1");
        assert!(matches!(compile(&dir, "no-such-node"), Err(AgentError::Compile { .. })));
        std::fs::write(dir.join("broken.yaml"), "kind: [").expect("write");
        assert!(matches!(compile(&dir, "worker-1"), Err(AgentError::Input { .. })));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn compile_errors_keep_their_diagnostics_and_codes() {
        let dir = snapshot("codes");
        let unknown = compile(&dir, "no-such-node").expect_err("an unknown node");
        assert_eq!(unknown.codes(), ["E0401"]);
        assert!(unknown.to_string().starts_with("node `no-such-node` does not compile: "), "{unknown}");
        std::fs::write(dir.join("broken.yaml"), "kind: [").expect("write");
        let input = compile(&dir, "worker-1").expect_err("a broken snapshot");
        assert!(matches!(input, AgentError::Input { .. }), "{input:?}");
        assert!(!input.codes().is_empty());
        assert_eq!(input.codes()[0], input.diagnostics()[0].code.id);
        let first = &input.diagnostics()[0].message;
        assert!(input.to_string().ends_with(&format!("error(s); first: {first}")), "{input}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn the_stamp_changes_with_the_files() {
        let dir = std::env::temp_dir().join(format!("egret-stamp-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("dir");
        std::fs::write(dir.join("a.yaml"), "a").expect("write");
        std::fs::write(dir.join("sub/b.yaml"), "b").expect("write");
        let before = snapshot_stamp(&dir).expect("stamp");
        assert_eq!(before.len(), 2);
        std::fs::write(dir.join("sub/b.yaml"), "bb").expect("write");
        assert_ne!(snapshot_stamp(&dir).expect("stamp"), before);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
