//! `egret-agent --kube`: the node agent fed by the Kubernetes API server
//! instead of a snapshot directory.
//!
//! Contract of [`run`]:
//! - **Input**: policies, pods, namespaces and nodes through
//!   `egret_kube::watch::ClusterWatch` (list+watch, synced gate, debounced
//!   callback; see its module doc), plus the node's own interfaces
//!   ([`facts::discover`]), which join every compilation as the node's
//!   `NodeNetwork`, as AST ([`facts::node_network`]; compiles use the
//!   node's own facts, never another node's).
//! - **Published facts**: the same `NodeNetwork` is written to the API
//!   server ([`publish_node_network`], `egret_kube::node_network`) and kept
//!   current, so `kubectl get nodes,namespaces,pods,nodenetworks -A -o yaml`
//!   is a complete snapshot for `egret lint --cluster`.
//! - **Pods watched**: the node's own (field selector `spec.nodeName`)
//!   while the node serves no egress slot, every pod while it does (a
//!   gateway or a floating-IP candidate: other nodes' pods are its allowed
//!   sources). A reconcile whose plan serves a slot from a view of the
//!   node's own pods widens the scope and applies nothing
//!   ([`AgentError::ListingPods`]): the running generation serves until
//!   every pod is listed. What a worker no longer sees: see
//!   `egret_kube::view::PodScope` and docs/ARCHITECTURE.md.
//! - **Reconcile** (the watch's callback, never before every kind has
//!   listed): compiles the node from the view ([`compile_view`]: egret's
//!   loader and resolver through a `ViewPlanner` kept across reconciles, which
//!   updates the last resolution when only pods changed and plans the node
//!   with the compile driver, then the driver's code generation,
//!   equivalence-checked, and [`Compiled::new`]) and
//!   applies the result with [`Agent::apply`] — the same functions, loader
//!   calls and telemetry as the snapshot path. A view that does not compile
//!   (an unknown node, a code generation failure) leaves the running
//!   generation serving; the error is reported and the next change retries.
//! - **Facts**: the node's interfaces and default route are re-read when
//!   netlink reports a link, address or route change
//!   ([`facts::NetlinkChanges`]) and every [`POLL`]; a change nudges the
//!   watch, which recompiles (debounced like object changes).
//! - **Events**: each reconcile publishes the Kubernetes Events this node
//!   owes (`egret_kube::events`: the policies it reports — by rendezvous
//!   over the Ready nodes — and those it is a gateway of; only outcomes
//!   that changed), through a queue drained by a task beside the watch,
//!   so a slow API server never delays the dataplane. The gateways of the
//!   policies it reports that have an alternative are probed too, and a
//!   task announces each change of one (`GatewayDown`, `GatewayUp`: one
//!   Event per failover, from the reporter, not from every node).
//! - **Reports**: every reconcile is reported ([`Reconciled`]): the sync's
//!   outcome and the Events it queued.
//! - **Latency**: a reconcile that swaps records the delay from the first
//!   watch event (or node fact change) it covers to the swap
//!   (`egret_event_to_dataplane_seconds`).
//! - **Health**: `/readyz` needs a generation applied by this loop and the
//!   last sync to have succeeded, so it implies the watch's synced gate
//!   (the callback never runs before it). `/healthz` ticks with the facts
//!   poll, which shares the thread with the callback on a current-thread
//!   runtime: a stuck reconcile stops it.
//!
//! Runs on the calling thread's network namespace: everything (the API
//! client's sockets, [`facts::discover`], the loader) is on the runtime's
//! thread, which must be inside the node's namespace.
//!
//! The API client speaks HTTPS (rustls with ring; the cluster's CA from
//! the kubeconfig or the in-cluster service account) and plain HTTP.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use egret_compiler::codegen::admit;
use egret_compiler::driver::Driver;
use egret_compiler::plan::{ClassId, EndpointEntry, Plan, Verified};
use egret_compiler::resolve::Options;
use egret_kube::events::{EventLog, PolicyEvent, Publisher, Reporters};
use egret_kube::view::{ClusterView, PodScope, ViewPlan, ViewPlanner, ViewPlannerStats};
use egret_kube::watch::{Batch, ClusterWatch, Nudge, PodScopeHandle, WatchConfig, WatchStatus};
use egret_loader::ApplyReport;

use crate::metrics::{KubeStats, Telemetry};
use crate::{Agent, AgentError, Compiled, POLL, Synced, facts};

/// What one reconcile did.
#[derive(Debug)]
pub struct Reconciled {
    /// The sync: compile, code generation, apply.
    pub result: Result<Synced, AgentError>,
    /// The Events queued (policies whose outcome, as this node reports it,
    /// changed), in name order.
    pub events: Vec<PolicyEvent>,
    /// From the first change this reconcile covers to its end.
    pub latency: std::time::Duration,
}

/// Why the API client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Neither a kubeconfig nor the in-cluster environment.
    #[error("cannot find the API server: {source}")]
    Infer {
        /// The error.
        source: kube::config::InferConfigError,
    },
    /// The configuration found cannot be used.
    #[error("cannot build the API client for {server}: {source}")]
    Build {
        /// The API server's URL.
        server: String,
        /// The error.
        source: kube::Error,
    },
}

/// The API client, configured as `kube::Config::infer` finds it
/// (`KUBECONFIG` or `~/.kube/config`, else the in-cluster environment).
///
/// # Errors
/// No configuration, or one that cannot be used.
pub async fn client() -> Result<kube::Client, ClientError> {
    let config = kube::Config::infer().await.map_err(|source| ClientError::Infer { source })?;
    let server = config.cluster_url.to_string();
    let _ = API_SERVER.set(server.clone());
    kube::Client::try_from(config).map_err(|source| ClientError::Build { server, source })
}

/// The API server [`client`] talks to, for log events about it.
static API_SERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn api_server() -> &'static str {
    API_SERVER.get().map_or("the API server", String::as_str)
}

/// What the `--kube` loop keeps between compiles: the resolution
/// ([`ViewPlanner`]), the compile driver, and the last plan with its artifact,
/// reused while the plan stays the same in the same resolution (a change
/// elsewhere in the cluster that does not reach this node costs no code
/// generation).
#[derive(Debug, Default)]
pub struct ViewCompiler {
    planner: ViewPlanner,
    driver: Driver,
    last: Option<(u64, Verified<Plan>, Compiled)>,
    reused: u64,
}

impl ViewCompiler {
    /// Nothing resolved or generated yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the view planner did so far.
    pub fn stats(&self) -> ViewPlannerStats {
        self.planner.stats()
    }

    /// Compiles whose artifact was reused.
    pub fn reused(&self) -> u64 {
        self.reused
    }
}

/// Compiles `node` from the cluster view and the node's own interfaces
/// `facts` with `compiler` (which keeps the last resolution: drop the
/// returned compilation before the next call, or it re-resolves): the
/// view's compilation (per-policy reports, diagnostics) and the node
/// compiled for the loader, or why not.
pub fn compile_view(
    compiler: &mut ViewCompiler,
    view: &ClusterView,
    node: &str,
    facts: &facts::Facts,
) -> (ViewPlan, Result<Compiled, AgentError>) {
    let c = plan_view(compiler, view, node, facts);
    let compiled = generate_view(compiler, &c, node);
    (c, compiled)
}

/// The planning half of [`compile_view`]: the view's compilation, the
/// node's plan in it.
fn plan_view(compiler: &mut ViewCompiler, view: &ClusterView, node: &str, facts: &facts::Facts) -> ViewPlan {
    let node_network = facts::node_network(node, facts);
    compiler.planner.plan(view, node, &Options::default(), Some(&node_network))
}

/// The code generation half of [`compile_view`] (reused while the plan and
/// the resolution stay the same).
fn generate_view(compiler: &mut ViewCompiler, c: &ViewPlan, node: &str) -> Result<Compiled, AgentError> {
    let epoch = compiler.planner.stats().resolutions;
    match &c.plan {
        Ok(plan) => match &compiler.last {
            // the artifact (its decision table, its equivalence check) is
            // a function of the plan and of what a resolution fixes
            // (gateway nodes, egress IPs): reuse it
            Some((e, p, compiled)) if *e == epoch && p == plan => {
                compiler.reused += 1;
                Ok(compiled.clone())
            }
            _ => {
                compiler.last = None;
                let compiled = compiler
                    .driver
                    .generate(&c.world, plan)
                    .map(|artifact| Compiled::new(plan, artifact.into_artifact(), &c.world))
                    .map_err(|source| AgentError::Compile { node: node.to_owned(), source });
                if let Ok(done) = &compiled {
                    compiler.last = Some((epoch, plan.clone(), done.clone()));
                }
                compiled
            }
        },
        Err(e) => Err(AgentError::Compile { node: node.to_owned(), source: e.clone() }),
    }
}

/// How long after the last admission the full reconcile that takes
/// admitted pods into a new generation's plan waits (admissions meanwhile
/// need no generation, and would wait behind its build).
pub const CONSOLIDATE_QUIET: Duration = Duration::from_secs(1);
/// It never waits longer than this after the first admission it owes.
pub const CONSOLIDATE_MAX: Duration = Duration::from_secs(10);

/// What runs: the plan of the generation the last full apply left serving
/// and the endpoints admitted into it since (`codegen::admit`).
#[derive(Debug, Default)]
struct Running {
    plan: Option<Plan>,
    /// Address → class, in the generation's `egret_admitted_*` maps.
    admitted: BTreeMap<IpAddr, ClassId>,
    /// (first, last) admission no generation's plan has yet; shared with
    /// [`consolidate`], which nudges the watch when one is due.
    owed: Arc<std::sync::Mutex<Option<(Instant, Instant)>>>,
}

impl Running {
    fn owed(&self) -> Option<(Instant, Instant)> {
        *self.owed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_owed(&self, owed: Option<(Instant, Instant)>) {
        *self.owed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = owed;
    }

    /// The endpoints of `plan` the running generation can take by
    /// admission, when it can (every one admitted so far among them, with
    /// its class: one that left needs a generation without it).
    fn admissible(&self, plan: &Plan) -> Option<Vec<EndpointEntry>> {
        let extra = admit::admissions(self.plan.as_ref()?, plan)?;
        let kept = self.admitted.iter().all(|(ip, class)| extra.iter().any(|e| e.ip == *ip && e.class == *class));
        kept.then_some(extra)
    }
}

/// Whether the admissions owed since `owed` are due to be taken into a
/// generation's plan.
fn consolidation_due(owed: Option<(Instant, Instant)>, admitted: usize) -> bool {
    owed.is_some_and(|(first, last)| {
        last.elapsed() >= CONSOLIDATE_QUIET || first.elapsed() >= CONSOLIDATE_MAX || admitted >= admit::CAPACITY / 2
    })
}

/// Nudges the watch while admissions owed are due (the full reconcile
/// clears them). Never returns.
async fn consolidate(nudge: Nudge, owed: Arc<std::sync::Mutex<Option<(Instant, Instant)>>>) {
    loop {
        tokio::time::sleep(CONSOLIDATE_QUIET / 4).await;
        let now = *owed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if consolidation_due(now, 0) {
            nudge.nudge();
        }
    }
}

/// One reconcile: see the module doc. `events` holds the Events published
/// so far and who reports which policy.
#[expect(clippy::too_many_arguments, reason = "the loop's state, each piece owned by run")]
fn reconcile(
    agent: &mut Agent,
    compiler: &mut ViewCompiler,
    view: &ClusterView,
    batch: &Batch,
    (log, reporters): &mut (EventLog, Reporters),
    publisher: &Publisher,
    watched: &std::sync::Mutex<Watched>,
    cni: Option<&crate::cni::Shared>,
    running: &mut Running,
    pod_scope: Option<&PodScopeHandle>,
) -> Reconciled {
    let node = agent.node().to_owned();
    let facts = match facts::discover() {
        Ok(f) => f,
        Err(source) => {
            let result = Err(AgentError::Io { path: "the node's interfaces and routes (netlink)".into(), source });
            return Reconciled { result, events: Vec::new(), latency: batch.first_change.elapsed() };
        }
    };
    let started = Instant::now();
    let c = plan_view(compiler, view, &node, &facts);
    // the pods this node's plan reads: every pod while it serves an egress
    // slot (other nodes' pods are its allowed sources), else its own
    let wanted = if c.world.serves_slots(&node) { PodScope::All } else { PodScope::Node(node.clone()) };
    if let Some(scope) = pod_scope {
        scope.set(wanted.clone());
    }
    if wanted == PodScope::All && view.pod_scope != PodScope::All {
        // a plan from the node's own pods would drop other nodes' traffic as
        // spoofed: the running generation serves until every pod is listed
        let result = Err(AgentError::ListingPods { node });
        return Reconciled { result, events: Vec::new(), latency: batch.first_change.elapsed() };
    }
    // an admission the running generation can take by its maps, and, while
    // admissions keep coming, a change that adds nothing to them
    let admissible = c.plan.as_ref().ok().and_then(|p| running.admissible(p));
    let fast = admissible.filter(|extra| {
        let owed = running.owed();
        batch.admissions > 0
            || (owed.is_some()
                && extra.len() == running.admitted.len()
                && !consolidation_due(owed, running.admitted.len()))
    });
    let endpoints: Option<Vec<IpAddr>>;
    let result = if let Some(extra) = fast {
        endpoints = c.plan.as_ref().ok().map(|p| p.endpoints.iter().map(|e| e.ip).collect());
        let new: Vec<EndpointEntry> = extra.into_iter().filter(|e| !running.admitted.contains_key(&e.ip)).collect();
        let result = agent.admit(&new);
        if result.is_ok() && !new.is_empty() {
            running.admitted.extend(new.iter().map(|e| (e.ip, e.class)));
            let now = Instant::now();
            running.set_owed(Some(running.owed().map_or((now, now), |(first, _)| (first, now))));
        }
        result
    } else {
        let compiled = generate_view(compiler, &c, &node);
        agent.telemetry().compiled(started.elapsed(), compiled.is_ok());
        agent.telemetry().resolved(compiler.stats(), compiler.reused());
        endpoints = compiled.as_ref().ok().map(|c| c.pods.clone());
        let result = compiled.and_then(|compiled| agent.apply(&compiled));
        if let Ok(synced) = &result {
            // a generation that is not new keeps what was admitted into it
            let stale: Vec<IpAddr> = match synced.apply {
                ApplyReport::Unchanged { .. } => running.admitted.keys().copied().collect(),
                ApplyReport::Swapped { .. } => Vec::new(),
            };
            match agent.unadmit(&stale) {
                Ok(()) => {
                    running.plan = c.plan.as_ref().ok().map(|p| (**p).clone());
                    running.admitted.clear();
                    running.set_owed(None);
                }
                Err(e) => tracing::warn!(error = %e, "cannot remove admitted pods from the running generation"),
            }
        }
        result
    };
    if let Some(cni) = cni {
        cni.reconciled(&c.world, endpoints.as_deref(), &result);
    }
    let latency = batch.first_change.elapsed();
    if let Ok(Synced { apply: ApplyReport::Swapped { .. }, .. }) = &result {
        agent.telemetry().event_to_dataplane(latency);
    }
    // after the dataplane: Events wait for no one
    let events = log.fresh(reporters.events_for(view, &c, &node));
    publisher.queue(events.iter().cloned());
    // the reported policies' gateways: probed here, their changes announced
    let gateways = reporters.watched_gateways(&c);
    agent.watch_gateways(gateways.keys().copied().collect());
    let mut w = watched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    w.gateways = gateways;
    w.status = agent.prober_status();
    drop(w);
    Reconciled { result, events, latency }
}

/// The gateways whose changes this node announces, and the prober that sees them.
#[derive(Debug, Default)]
struct Watched {
    gateways: std::collections::BTreeMap<std::net::IpAddr, (String, Vec<String>)>,
    status: Option<crate::ha::probe::StatusHandle>,
}

/// How often the watched gateways' states are looked at.
const GATEWAY_EVENTS_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Publishes `GatewayDown`/`GatewayUp` (`egret_kube::events::gateway_event`)
/// whenever the prober's count of a watched gateway's transitions grows (a
/// gateway first seen, or first seen down, is a baseline, not an Event).
/// Never returns.
async fn gateway_events(watched: Arc<std::sync::Mutex<Watched>>, publisher: Publisher) {
    let mut seen: std::collections::BTreeMap<std::net::IpAddr, (u64, u64)> = std::collections::BTreeMap::new();
    loop {
        tokio::time::sleep(GATEWAY_EVENTS_EVERY).await;
        let (gateways, status) = {
            let w = watched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (w.gateways.clone(), w.status.clone())
        };
        let Some(status) = status else { continue };
        let now = status.snapshot();
        seen.retain(|ip, _| gateways.contains_key(ip));
        for (ip, (node, policies)) in &gateways {
            let Some(g) = now.gateways.get(ip) else { continue };
            let counts = (g.went_down, g.went_up);
            if let Some((down, up)) = seen.insert(*ip, counts) {
                if counts.0 > down {
                    publisher.queue_failover([egret_kube::events::gateway_event(node, *ip, policies, true)]);
                }
                if counts.1 > up {
                    publisher.queue_failover([egret_kube::events::gateway_event(node, *ip, policies, false)]);
                }
            }
        }
    }
}

/// How often at most the agent repeats that the watch meets errors.
const ERRORS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Publishes the node's `NodeNetwork` (`egret_kube::node_network`) and keeps
/// it current: the facts are read every [`POLL`] and written when they
/// differ from what was last published (a failed write is retried on the
/// next tick, and said on stderr once per change of error). Never returns.
async fn publish_node_network(client: kube::Client, node: String) {
    let mut published: Option<egret_lang::ast::NodeNetwork> = None;
    let mut last_error: Option<String> = None;
    loop {
        if let Ok(f) = facts::discover() {
            let now = facts::node_network(&node, &f);
            if published.as_ref() != Some(&now) {
                match egret_kube::node_network::publish(&client, &now).await {
                    Ok(_) => {
                        published = Some(now);
                        last_error = None;
                    }
                    Err(e) => {
                        let e = e.to_string();
                        if last_error.as_deref() != Some(e.as_str()) {
                            tracing::warn!(server = api_server(), node = %node, error = %e, "cannot publish the node's NodeNetwork");
                            last_error = Some(e);
                        }
                    }
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Re-reads the node's facts when netlink says something changed (and
/// every [`POLL`] regardless) and nudges the watch when they did; marks the
/// loop alive for `/healthz`; says on stderr when the watch has synced and
/// whenever it has met new errors (an unreachable API server would
/// otherwise be silent). Never returns.
async fn watch_facts(nudge: Nudge, telemetry: Arc<Telemetry>, status: Arc<WatchStatus>) {
    let changes = match facts::NetlinkChanges::open_async() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, every = ?POLL, "no netlink notifications: reading the node's interfaces periodically");
            None
        }
    };
    let mut last = facts::discover().ok();
    let (mut errors, mut synced, mut said) = (0, false, None::<Instant>);
    loop {
        telemetry.alive();
        let notified = async {
            match &changes {
                Some(c) => match c.readable().await {
                    Ok(mut guard) => {
                        let _ = guard.get_inner().drain();
                        guard.clear_ready();
                    }
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = notified => {}
        }
        let now = facts::discover().ok();
        if now != last {
            last = now;
            nudge.nudge();
        }
        // at most one line per ERRORS_EVERY while errors keep coming
        if status.errors() > errors && said.is_none_or(|t| t.elapsed() >= ERRORS_EVERY) {
            errors = status.errors();
            said = Some(Instant::now());
            let state = if status.synced() { "synced" } else { "not synced yet: nothing compiled from the API" };
            let last = status.last_error().unwrap_or_default();
            tracing::warn!(
                server = api_server(),
                errors,
                state,
                last = %last,
                "watch errors so far (list/watch failures, 410 Gone, undecodable objects)"
            );
        }
        if status.synced() && !synced {
            synced = true;
            tracing::info!("every watched kind has listed; compiling from the API server's view");
        }
    }
}

/// Runs the agent from the API server until `shutdown` completes; `report`
/// sees every reconcile. With `cni`, the agent serves `egret-cni` on its
/// socket ([`crate::cni`]). See the module doc.
///
/// # Errors
/// The CNI socket cannot be bound.
pub async fn run(
    agent: &mut Agent,
    client: kube::Client,
    config: WatchConfig,
    cni: Option<crate::cni::CniConfig>,
    shutdown: impl Future<Output = ()>,
    mut report: impl FnMut(&Reconciled),
) -> std::io::Result<()> {
    let publisher = Publisher::new(client.clone(), agent.node());
    let all_pods = config.all_pods;
    let watch = ClusterWatch::new(client.clone(), config);
    // a worker lists its own pods; the first reconcile widens the scope if
    // the node serves egress slots (see reconcile)
    let pod_scope = watch.pod_scope();
    let pod_scope = (!all_pods).then(|| {
        pod_scope.set(PodScope::Node(agent.node().to_owned()));
        pod_scope
    });
    let (admissions, cni_shared, serving) = match cni {
        Some(config) => {
            let listener = crate::cni::bind(&config)?;
            let shared = crate::cni::Shared::new(config, agent.node());
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let server = crate::cni::Server {
                shared: Arc::clone(&shared),
                admissions: tx,
                client: client.clone(),
                status: watch.status(),
            };
            (Some(rx), Some(shared), Some(crate::cni::serve(listener, server)))
        }
        None => (None, None, None),
    };
    let serving = async {
        match serving {
            Some(s) => s.await,
            None => std::future::pending().await,
        }
    };
    agent.telemetry().kube(KubeStats { watch: watch.status(), events: publisher.stats() });
    let facts = watch_facts(watch.nudge(), agent.telemetry(), watch.status());
    let node_network = publish_node_network(client.clone(), agent.node().to_owned());
    let mut events = (EventLog::default(), Reporters::default());
    let mut compiler = ViewCompiler::new();
    let publishing = publisher.clone().run();
    let watched = Arc::new(std::sync::Mutex::new(Watched::default()));
    let announcing = gateway_events(Arc::clone(&watched), publisher.clone());
    let mut running = Running::default();
    let consolidating = consolidate(watch.nudge(), Arc::clone(&running.owed));
    let watching = watch.run_admitting(shutdown, admissions, |view, batch| {
        let cni = cni_shared.as_deref();
        report(&reconcile(
            agent,
            &mut compiler,
            view,
            batch,
            &mut events,
            &publisher,
            &watched,
            cni,
            &mut running,
            pod_scope.as_ref(),
        ));
    });
    tokio::select! {
        () = watching => {}
        () = facts => {}
        () = node_network => {}
        () = publishing => {}
        () = announcing => {}
        () = serving => {}
        () = consolidating => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_kube::view::{NamespaceFacts, NodeFacts, PodFacts, PolicyFacts};
    use std::net::{IpAddr, Ipv4Addr};

    fn labels(kv: &[(&str, &str)]) -> egret_kube::view::Labels {
        kv.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    /// worker-1 with one selected pod, gateway-1, one policy.
    fn view() -> ClusterView {
        let mut v = ClusterView::new();
        for (name, ip, cidr, l) in [
            ("worker-1", "192.0.2.11", "10.244.1.0/24", labels(&[])),
            ("gateway-1", "192.0.2.13", "10.244.3.0/24", labels(&[("egress", "true")])),
        ] {
            v.nodes.apply(NodeFacts {
                name: name.into(),
                uid: format!("uid-{name}"),
                labels: l,
                internal_ips: vec![ip.into()],
                pod_cidrs: vec![cidr.into()],
                ready: Some("True".into()),
            });
        }
        v.namespaces.apply(NamespaceFacts { name: "prod".into(), labels: labels(&[]) });
        v.pods.apply(PodFacts {
            namespace: "prod".into(),
            name: "web".into(),
            uid: "uid-web".into(),
            labels: labels(&[("app", "web")]),
            node_name: Some("worker-1".into()),
            host_network: false,
            phase: Some("Running".into()),
            ips: vec!["10.244.1.10".into()],
        });
        let spec = serde_json::json!({"selectors": [{"podSelector": {"matchLabels": {"app": "web"}}}],
            "destinationCIDRs": ["0.0.0.0/0"],
            "egressGateway": {"nodeSelector": {"matchLabels": {"egress": "true"}}, "egressIP": "198.51.100.1"}});
        v.policies.apply(PolicyFacts {
            name: "web-out".into(),
            uid: "uid-p".into(),
            namespace: None,
            spec: Some(spec),
            annotations: std::collections::BTreeMap::new(),
        });
        v
    }

    #[test]
    fn an_unchanged_plan_reuses_its_artifact_and_a_changed_one_does_not() {
        let facts = facts::Facts::default();
        let mut compiler = ViewCompiler::new();
        let mut v = view();
        let artifact = |c: Result<Compiled, AgentError>| format!("{:?}", c.expect("compiles").artifact);
        let first = artifact(compile_view(&mut compiler, &v, "worker-1", &facts).1);
        // a pod on another node, selected by nothing: worker-1's plan stays
        let mut elsewhere = v.pods.get("prod/web").cloned().expect("web");
        elsewhere.name = "batch".into();
        elsewhere.labels = labels(&[("app", "batch")]);
        elsewhere.node_name = Some("gateway-1".into());
        elsewhere.ips = vec!["10.244.3.20".into()];
        v.pods.apply(elsewhere);
        let second = artifact(compile_view(&mut compiler, &v, "worker-1", &facts).1);
        assert_eq!((compiler.reused(), compiler.stats().updates), (1, 1));
        assert_eq!(second, first);
        // web relabelled out of the policy: a new plan, generated
        let mut web = v.pods.get("prod/web").cloned().expect("web");
        web.labels = labels(&[("app", "other")]);
        v.pods.apply(web);
        let third = artifact(compile_view(&mut compiler, &v, "worker-1", &facts).1);
        assert_eq!((compiler.reused(), compiler.stats().updates), (1, 2));
        assert_ne!(third, first);
        // and the result is what a fresh compile makes
        assert_eq!(third, artifact(compile_view(&mut ViewCompiler::new(), &v, "worker-1", &facts).1));
    }

    #[test]
    fn a_view_compiles_to_what_the_loader_applies() {
        let facts = facts::Facts {
            interfaces: vec![facts::NodeInterface {
                name: "eth0".into(),
                index: 2,
                addresses: vec![("192.0.2.11".parse().expect("ip"), 24)],
            }],
            default_route: Some("eth0".into()),
        };
        let (c, compiled) = compile_view(&mut ViewCompiler::new(), &view(), "worker-1", &facts);
        let compiled = compiled.expect("worker-1 compiles");
        assert_eq!(compiled.pods, [IpAddr::V4(Ipv4Addr::new(10, 244, 1, 10))]);
        assert_eq!(compiled.artifact.manifest.node, "worker-1");
        compiled.artifact.check().expect("a valid artifact");
        assert!(c.policies["web-out"].compiled());
        let network = c.world.node_by_name("worker-1").and_then(|n| n.network.as_ref());
        assert!(network.is_some_and(|n| n.interfaces[0].name == "eth0"), "the node's facts are in the world");
    }

    #[test]
    fn a_dual_stack_pod_is_attached_by_both_its_addresses() {
        let mut v = view();
        let mut web = v.pods.get("prod/web").cloned().expect("web");
        web.ips = vec!["10.244.1.10".into(), "2001:db8:244:1::10".into()];
        v.pods.apply(web);
        let mut policy = v.policies.get("web-out").cloned().expect("policy");
        if let Some(spec) = policy.spec.as_mut() {
            spec["destinationCIDRs"] = serde_json::json!(["0.0.0.0/0", "::/0"]);
        }
        v.policies.apply(policy);
        let (_, compiled) = compile_view(&mut ViewCompiler::new(), &v, "worker-1", &facts::Facts::default());
        let compiled = compiled.expect("worker-1 compiles");
        let want: [IpAddr; 2] = ["10.244.1.10".parse().expect("ip"), "2001:db8:244:1::10".parse().expect("ip")];
        assert_eq!(compiled.pods, want, "one loader target per address: egret_local_eps_v4 and _v6");
    }

    #[test]
    fn an_unknown_node_is_an_error_not_an_artifact() {
        let (_, compiled) = compile_view(&mut ViewCompiler::new(), &view(), "worker-9", &facts::Facts::default());
        assert!(matches!(compiled, Err(AgentError::Compile { ref node, .. }) if node == "worker-9"), "{compiled:?}");
    }
}
