//! The cluster as the agent sees it: trimmed objects, and their conversion to
//! egret's input.
//!
//! A [`ClusterView`] holds, per kind, only what egret reads (SEMANTICS.md,
//! "Inputs"): pods (namespace, name, uid, labels, `spec.nodeName`,
//! `spec.hostNetwork`, `status.phase`, `status.podIPs`), namespaces (name,
//! labels), nodes (name, uid, labels, InternalIP addresses, `spec.podCIDRs`,
//! the Ready condition's status) and policies (name, uid, namespace, the
//! whole `spec` as JSON). Nothing here depends on kube: the watchers
//! ([`crate::watch`]) convert API objects into these facts.
//!
//! **Conversion** ([`ClusterView::plan`]): each policy is rendered as
//! JSON (which is YAML) and read by egret's own loader
//! ([`egret_lang::load::parse_text`]), so its validation and diagnostics are
//! exactly those of `egret lint` and the agent's snapshot mode. Each policy is
//! its own source (`CiliumEgressGatewayPolicy/NAME`, pretty-printed so
//! diagnostics point at lines); a policy with an error (from the loader or
//! [`egret_lang::validate::policy`]) is left out of the world and reported,
//! and the others still compile. Cluster objects — up to 100,000s of pods —
//! are converted directly into the loader's AST, as leniently as the loader
//! reads them from snapshots (a test holds the two equal): a bad field is a
//! diagnostic and the field is ignored. Rendering and re-parsing them took
//! 85% of a reconcile at 100,000 pods (docs/PERFORMANCE.md).
//!
//! Values are kept as the API server sent them (strings stay strings, a
//! label value that is a JSON boolean stays a boolean), so a malformed value
//! reaches the conversion and becomes its diagnostic rather than being lost
//! in a typed decoding.

use egret_compiler::driver::{self, CompileError, Driver};
use egret_compiler::plan::{Plan, Verified};
use egret_compiler::resolve::{EgressIp, Options, World};
use egret_lang::ast::{Bundle, Cluster, Namespace, Node, NodeNetwork, Pod};
use egret_lang::codes;
use egret_lang::diag::{Diagnostic, render};
use egret_lang::net::Cidr;
use egret_lang::source::{SourceMap, Span, Spanned};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

/// Labels of an object, as the API server sent them.
pub type Labels = BTreeMap<String, String>;

/// What egret reads of a Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `status.podIPs[].ip` (or `status.podIP`), as strings.
    pub ips: Vec<String>,
}

/// What egret reads of a Namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Labels,
}

/// What egret reads of a Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `status.addresses[]` of type `InternalIP`, as strings, in order.
    pub internal_ips: Vec<String>,
    /// `spec.podCIDRs` (or `spec.podCIDR`), as strings.
    pub pod_cidrs: Vec<String>,
    /// The `Ready` condition's `status` (`True`, `False`, `Unknown`), if the
    /// node reports one.
    pub ready: Option<String>,
}

/// What egret reads of a CiliumEgressGatewayPolicy: its identity and its
/// spec, verbatim.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace` (a cluster-scoped object has none; egret reports one).
    pub namespace: Option<String>,
    /// `spec`, as JSON.
    pub spec: Option<Value>,
    /// egret's own annotations (`egret.dev/…`, e.g. the floating-IP opt-in);
    /// others are not kept.
    pub annotations: BTreeMap<String, String>,
}

/// A kind of fact, keyed in its table.
pub trait Fact: Clone + PartialEq {
    /// The table key: `namespace/name` for pods, the name otherwise.
    fn key(&self) -> String;
}

impl Fact for PodFacts {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}
impl Fact for NamespaceFacts {
    fn key(&self) -> String {
        self.name.clone()
    }
}
impl Fact for NodeFacts {
    fn key(&self) -> String {
        self.name.clone()
    }
}
impl Fact for PolicyFacts {
    fn key(&self) -> String {
        self.name.clone()
    }
}

/// The objects of one kind, by key. Every mutation says whether the table
/// changed, so callers recompile only when egret's input changed.
///
/// A table also journals the keys of its last [`JOURNAL`] changes, so a
/// consumer that remembers where it was ([`Table::position`]) learns what
/// changed since ([`Table::changed_since`]) without comparing every object.
/// Each table (a clone too) has its own lineage, so a position is never
/// read against a table it was not taken from; a relist ([`Table::replace`])
/// that changed anything restarts the journal.
#[derive(Debug)]
pub struct Table<F> {
    rows: BTreeMap<String, F>,
    lineage: u64,
    /// Changes so far.
    seq: u64,
    /// Keys of the changes after `journal_from`, with each one's `seq`.
    journal: std::collections::VecDeque<(u64, String)>,
    journal_from: u64,
}

/// Changes a [`Table`] journals at most.
pub const JOURNAL: usize = 4096;

/// Where a consumer was in a [`Table`]'s changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    lineage: u64,
    seq: u64,
}

fn next_lineage() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl<F> Default for Table<F> {
    fn default() -> Self {
        Table {
            rows: BTreeMap::new(),
            lineage: next_lineage(),
            seq: 0,
            journal: std::collections::VecDeque::new(),
            journal_from: 0,
        }
    }
}

impl<F: Clone> Clone for Table<F> {
    fn clone(&self) -> Self {
        // a clone changes apart from its original: a new lineage, no journal
        Table {
            rows: self.rows.clone(),
            lineage: next_lineage(),
            seq: self.seq,
            journal: std::collections::VecDeque::new(),
            journal_from: self.seq,
        }
    }
}

/// Tables are equal when their objects are.
impl<F: PartialEq> PartialEq for Table<F> {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows
    }
}

impl<F: Fact> Table<F> {
    /// Adds or replaces an object; whether anything changed.
    pub fn apply(&mut self, fact: F) -> bool {
        let key = fact.key();
        if self.rows.get(&key) == Some(&fact) {
            return false;
        }
        self.record(key.clone());
        self.rows.insert(key, fact);
        true
    }

    /// Removes an object by key; whether it was there.
    pub fn delete(&mut self, key: &str) -> bool {
        let removed = self.rows.remove(key).is_some();
        if removed {
            self.record(key.to_string());
        }
        removed
    }

    /// Replaces the whole table (after a list); whether anything changed.
    pub fn replace(&mut self, facts: impl IntoIterator<Item = F>) -> bool {
        let rows: BTreeMap<String, F> = facts.into_iter().map(|f| (f.key(), f)).collect();
        if rows == self.rows {
            return false;
        }
        self.rows = rows;
        self.seq += 1;
        self.journal.clear();
        self.journal_from = self.seq;
        true
    }

    fn record(&mut self, key: String) {
        self.seq += 1;
        self.journal.push_back((self.seq, key));
        if self.journal.len() > JOURNAL
            && let Some((seq, _)) = self.journal.pop_front()
        {
            self.journal_from = seq;
        }
    }

    /// Where the table's changes are now.
    pub fn position(&self) -> Position {
        Position { lineage: self.lineage, seq: self.seq }
    }

    /// The keys changed (added, replaced or deleted) since `at`, in the
    /// order of their changes (a key once per change); `None` when the
    /// journal cannot say: `at` is of another table, or older than the
    /// journal (more than [`JOURNAL`] changes ago, or before a relist).
    pub fn changed_since(&self, at: Position) -> Option<impl Iterator<Item = &str>> {
        (at.lineage == self.lineage && at.seq >= self.journal_from && at.seq <= self.seq)
            .then(|| self.journal.iter().filter(move |(seq, _)| *seq > at.seq).map(|(_, k)| k.as_str()))
    }

    /// An object by key.
    pub fn get(&self, key: &str) -> Option<&F> {
        self.rows.get(key)
    }

    /// All objects, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &F> {
        self.rows.values()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The trimmed cluster: see the module doc.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// Pods, by `namespace/name`: those of [`ClusterView::pod_scope`].
    pub pods: Table<PodFacts>,
    /// Which pods [`ClusterView::pods`] holds (the scope of its last
    /// complete list; [`PodScope::All`] for a view not from a watch).
    pub pod_scope: PodScope,
    /// Namespaces, by name.
    pub namespaces: Table<NamespaceFacts>,
    /// Nodes, by name.
    pub nodes: Table<NodeFacts>,
    /// Policies, by name.
    pub policies: Table<PolicyFacts>,
}

/// Which pods a watch lists and watches.
///
/// A node's plan reads the pods of other nodes only where the node serves
/// egress slots (a gateway, or a candidate of a floating egress IP: its
/// allowed sources are other nodes' pods); a worker's plan reads its own
/// pods alone (`the_plan_of_a_node_without_slots_reads_only_its_own_pods`).
/// So an agent watches [`PodScope::Node`] while its node serves no slot
/// and [`PodScope::All`] while it does (`egret-agent --kube`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PodScope {
    /// Every pod of the cluster.
    #[default]
    All,
    /// The pods scheduled to this node (`spec.nodeName`).
    Node(String),
}

impl PodScope {
    /// The field selector that lists this scope's pods (`None`: all).
    pub fn field_selector(&self) -> Option<String> {
        match self {
            PodScope::All => None,
            PodScope::Node(n) => Some(format!("spec.nodeName={n}")),
        }
    }

    /// Whether the scope holds `pod`.
    pub fn covers(&self, pod: &PodFacts) -> bool {
        match self {
            PodScope::All => true,
            PodScope::Node(n) => pod.node_name.as_deref() == Some(n.as_str()),
        }
    }
}

impl std::fmt::Display for PodScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PodScope::All => f.write_str("all pods"),
            PodScope::Node(n) => write!(f, "the pods of node {n}"),
        }
    }
}

/// Source name of a policy's rendered text.
pub fn policy_source_name(name: &str) -> String {
    format!("{}/{name}", crate::crd::KIND)
}

/// One gateway of a compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayReport {
    /// The gateway node.
    pub node: String,
    /// Its IPv4 InternalIP (the tunnel endpoint).
    pub ip: std::net::IpAddr,
    /// Whether the node is Ready (an unhealthy gateway's endpoints fail over).
    pub healthy: bool,
    /// The egress IPv4 as the compiler resolved it (`Known`, late-bound on
    /// the gateway, or unavailable with why), in the compiler's text form.
    pub egress_v4: Option<String>,
    /// The egress IPv6, likewise.
    pub egress_v6: Option<String>,
    /// The egress interface (`NAME#IFINDEX`, late-bound, or unavailable),
    /// in the compiler's text form; `None` if the gateway has no slot.
    pub interface: Option<String>,
    /// Why an egress address cannot be resolved, per family that cannot
    /// (`IPv4: 198.51.100.9 is on no interface of the node`): only the
    /// gateway node itself knows its interfaces, so only its agent sees
    /// these. Such a family's traffic is dropped (fail closed).
    pub unavailable: Vec<String>,
}

/// What became of one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// In the world: how many endpoints it selects, and its gateways (sorted
    /// by gateway IP; empty = its traffic is dropped, fail closed).
    Compiled {
        /// Endpoints the policy selects (egret's reading), cluster-wide.
        endpoints: usize,
        /// Its resolved gateways.
        gateways: Vec<GatewayReport>,
    },
    /// Left out of the world because of errors (see the report's diagnostics).
    Rejected,
}

/// One policy's feedback: what became of it, and its diagnostics.
#[derive(Debug, Clone)]
pub struct PolicyReport {
    /// The policy's name.
    pub name: String,
    /// Its uid (for Events' `involvedObject`).
    pub uid: String,
    /// Compiled or rejected.
    pub outcome: PolicyOutcome,
    /// Its own diagnostics (errors and warnings), spans in [`ViewPlan::sources`].
    pub diagnostics: Vec<Diagnostic>,
    /// The pods [`PolicyOutcome::Compiled`]'s `endpoints` counts: those of
    /// the view ([`ClusterView::pod_scope`]; a worker's agent sees its own).
    pub counted: PodScope,
}

impl PolicyReport {
    /// Whether it is in the world.
    pub fn compiled(&self) -> bool {
        matches!(self.outcome, PolicyOutcome::Compiled { .. })
    }

    /// Codes of its error diagnostics, in order.
    pub fn error_codes(&self) -> Vec<&'static str> {
        self.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.code.id).collect()
    }

    /// A one-paragraph summary for people (an Event's message): what it
    /// selects and where its traffic goes, or its first errors.
    pub fn summary(&self) -> String {
        match &self.outcome {
            PolicyOutcome::Compiled { endpoints, gateways } => {
                let mut s = format!("compiled; selects {endpoints} endpoint{}", if *endpoints == 1 { "" } else { "s" });
                if let PodScope::Node(n) = &self.counted {
                    let _ = write!(s, " on node {n}");
                }
                if gateways.is_empty() {
                    s.push_str("; no gateway node matches: its traffic is dropped");
                }
                for g in gateways {
                    let _ = write!(s, "; gateway {} ({})", g.node, g.ip);
                    if !g.healthy {
                        s.push_str(" not Ready");
                    }
                    for (fam, e) in [("IPv4", &g.egress_v4), ("IPv6", &g.egress_v6)] {
                        if let Some(e) = e {
                            let _ = write!(s, " egress {fam} {e}");
                        }
                    }
                }
                s
            }
            PolicyOutcome::Rejected => {
                let errors: Vec<String> = self
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(|d| format!("error[{}]: {}", d.code.id, d.message))
                    .collect();
                format!("not compiled: {}", errors.join("; "))
            }
        }
    }
}

/// The result of planning one node from a view.
#[derive(Debug)]
pub struct ViewPlan {
    /// Every text the loader read and the index sources of cluster objects
    /// (for rendering diagnostics).
    pub sources: SourceMap,
    /// The resolved world (accepted policies and the cluster), shared with
    /// the [`ViewPlanner`] that updates it next time if it is free by then.
    pub world: Arc<World>,
    /// The node's plan, or why it does not compile (an unknown node, an
    /// internal error).
    pub plan: Result<Verified<Plan>, CompileError>,
    /// Per policy, by name.
    pub policies: BTreeMap<String, PolicyReport>,
    /// Problems with cluster objects and node facts (ignored fields,
    /// dangling references), as the loader and resolver report them at the
    /// last full resolution (an incremental update adds none).
    pub cluster_diagnostics: Vec<Diagnostic>,
}

impl ViewPlan {
    /// Renders diagnostics as `egret lint` prints them.
    pub fn render(&self, diagnostics: &[Diagnostic]) -> String {
        render::human(diagnostics, &self.sources)
    }

    /// The policies left out, in name order.
    pub fn rejected(&self) -> impl Iterator<Item = &PolicyReport> {
        self.policies.values().filter(|r| !r.compiled())
    }
}

impl ClusterView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps only the pods of `scope` (what a watch of that scope lists).
    pub fn narrow(&mut self, scope: PodScope) {
        let kept: Vec<PodFacts> = self.pods.iter().filter(|p| scope.covers(p)).cloned().collect();
        self.pods.replace(kept);
        self.pod_scope = scope;
    }

    /// Reads the view (and the node's own facts, its `NodeNetwork` read on
    /// the node, which joins the cluster as AST: [`driver::add_node_facts`])
    /// with egret's loader and plans `node`, resolving the whole cluster.
    /// Never panics on malformed objects: see the module doc. An agent
    /// planning successive views uses a [`ViewPlanner`].
    pub fn plan(&self, node: &str, options: &Options, node_facts: Option<&NodeNetwork>) -> ViewPlan {
        ViewPlanner::new().plan(self, node, options, node_facts)
    }

    /// Where the tables a pod update cannot follow are: namespaces, nodes,
    /// policies.
    fn fixed_positions(&self) -> [Position; 3] {
        [self.namespaces.position(), self.nodes.position(), self.policies.position()]
    }

    /// The cluster objects as egret's loader would read them from their API
    /// JSON, converted directly. Each kind is a source of one line per
    /// object (its key), which spans point into; a value that does not parse
    /// is an `INVALID_OBJECT` diagnostic on its object's line, and ignored.
    fn cluster(&self, sources: &mut SourceMap, diagnostics: &mut Vec<Diagnostic>) -> Cluster {
        let mut cluster = Cluster::default();
        let spans = index_source(sources, "cluster/namespaces", self.namespaces.rows.keys());
        for (n, span) in self.namespaces.iter().zip(spans) {
            cluster.namespaces.push(Namespace {
                span,
                name: Spanned::new(n.name.clone(), span),
                labels: n.labels.clone(),
            });
        }
        let spans = index_source(sources, "cluster/nodes", self.nodes.rows.keys());
        for (n, span) in self.nodes.iter().zip(spans) {
            cluster.nodes.push(Node {
                span,
                name: Spanned::new(n.name.clone(), span),
                uid: n.uid.clone(),
                labels: n.labels.clone(),
                internal_ips: parse_each(&n.internal_ips, span, "node InternalIP is not an IP address", diagnostics),
                pod_cidrs: parse_each::<Cidr>(&n.pod_cidrs, span, "node podCIDR is not a CIDR", diagnostics)
                    .iter()
                    .map(Cidr::network)
                    .collect(),
                ready: n.ready.as_ref().map(|s| s == "True"),
            });
        }
        let spans = index_source(sources, "cluster/pods", self.pods.rows.keys());
        cluster.pods = self.pods.iter().zip(spans).map(|(p, span)| pod_ast(p, span, diagnostics)).collect();
        cluster
    }
}

/// A pod as the loader reads it; `span` is its key's line.
fn pod_ast(p: &PodFacts, span: Span, diagnostics: &mut Vec<Diagnostic>) -> Pod {
    let mut pod_ips: Vec<IpAddr> = Vec::with_capacity(p.ips.len());
    for ip in parse_each(&p.ips, span, "pod IP is not an IP address", diagnostics) {
        if !pod_ips.contains(&ip) {
            pod_ips.push(ip);
        }
    }
    // the name is the key after `namespace/`
    let name_span = Span { start: span.start + p.namespace.len() as u32 + 1, ..span };
    Pod {
        span,
        namespace: p.namespace.clone(),
        name: Spanned::new(p.name.clone(), name_span),
        uid: p.uid.clone(),
        labels: p.labels.clone(),
        node_name: p.node_name.clone(),
        host_network: p.host_network,
        pod_ips,
        phase: p.phase.clone(),
    }
}

/// Pods changed in one update at most for it to be incremental: more are
/// re-resolved (`World::add_pod` costs O(policies): ~0.2 ms at 1,000
/// policies, so 1,000 of them cost about what resolving 100,000 pods does).
const MAX_BATCH: usize = 1_000;

/// Pod updates since the last full resolution at most (removed endpoints
/// keep their ids, and each update adds an index source), as a share of the
/// pods: beyond it the next compile re-resolves.
const MAX_UPDATES_SHARE: usize = 8;

/// Plans one node from successive views of a cluster, re-resolving it
/// ([`World::new`]) only when it must.
///
/// When only pods changed since the last compile — the common case, a pod
/// created, relabelled, deleted — the changed pods are removed from and
/// added to the last world ([`World::add_pod`], [`World::remove_pod`]), and
/// the node is planned from it. Everything else re-resolves: a namespace,
/// node or policy table that changed (by its journal position), node facts
/// or options that changed; more than
/// [`MAX_BATCH`] pods in one update or more than one in
/// [`MAX_UPDATES_SHARE`] since the last resolution; a world whose
/// construction gave a contested IP to one of two pods, or an update that
/// would contest one ([`World::has_contested_ips`]); a world still held by
/// the previous [`ViewPlan`]. An update compiles to the plan a full
/// resolution would (a test holds them equal over random changes); only
/// [`ViewPlan::cluster_diagnostics`] stay those of the last resolution.
///
/// The pods that changed come from the pod table's journal
/// ([`Table::changed_since`]); a view whose journal cannot say (another
/// table, a relist, more than [`JOURNAL`] changes) re-resolves.
#[derive(Debug, Default)]
pub struct ViewPlanner {
    resolved: Option<Resolved>,
    stats: ViewPlannerStats,
}

/// What a [`ViewPlanner`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewPlannerStats {
    /// Full resolutions ([`World::new`]).
    pub resolutions: u64,
    /// Compiles that updated the last world instead.
    pub updates: u64,
    /// Pods those updates removed or added.
    pub pods_updated: u64,
}

/// The inputs of the last resolution and the world they resolve to.
#[derive(Debug)]
struct Resolved {
    options: Options,
    node_facts: Option<NodeNetwork>,
    /// Where the namespaces, nodes and policies were: any change since
    /// re-resolves.
    fixed: [Position; 3],
    /// Where the pods were (their changes since are the update).
    pods: Position,
    sources: SourceMap,
    world: Arc<World>,
    /// Per policy: its loader diagnostics; the outcome is filled per compile.
    reports: BTreeMap<String, PolicyReport>,
    cluster_diagnostics: Vec<Diagnostic>,
    /// Pods removed or added since the resolution.
    updated: usize,
}

impl ViewPlanner {
    /// A compiler that has resolved nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What it did so far.
    pub fn stats(&self) -> ViewPlannerStats {
        self.stats
    }

    /// Plans `node` from `view` (see [`ClusterView::plan`]), updating
    /// the last world when only pods changed (see the type's doc).
    pub fn plan(
        &mut self,
        view: &ClusterView,
        node: &str,
        options: &Options,
        node_facts: Option<&NodeNetwork>,
    ) -> ViewPlan {
        if self.update(view, options, node_facts) {
            self.stats.updates += 1;
        } else {
            // the old world goes first, so two never live at once
            self.resolved = None;
            self.resolved = Some(resolve(view, options, node_facts));
            self.stats.resolutions += 1;
        }
        let r = self.resolved.as_ref().expect("resolved above");
        let mut policies = r.reports.clone();
        report_outcomes(&r.world, &mut policies, &view.pod_scope);
        ViewPlan {
            sources: r.sources.clone(),
            world: Arc::clone(&r.world),
            // a fresh planner: the world may have been updated in place
            plan: Driver::default().plan(&r.world, node),
            policies,
            cluster_diagnostics: r.cluster_diagnostics.clone(),
        }
    }

    /// Brings the last world up to `view` by pod updates, if it can (see the
    /// type's doc). `false`: the caller must re-resolve (the world may be
    /// half-updated).
    fn update(&mut self, view: &ClusterView, options: &Options, node_facts: Option<&NodeNetwork>) -> bool {
        let Some(r) = self.resolved.as_mut() else { return false };
        if r.options != *options
            || r.node_facts.as_ref() != node_facts
            || r.fixed != view.fixed_positions()
            || r.world.has_contested_ips()
        {
            return false;
        }
        let Some(changed) = view.pods.changed_since(r.pods) else { return false };
        let changed: Vec<String> =
            changed.collect::<std::collections::BTreeSet<&str>>().into_iter().map(str::to_string).collect();
        r.pods = view.pods.position();
        if changed.is_empty() {
            return true;
        }
        if changed.len() > MAX_BATCH || (r.updated + changed.len()) * MAX_UPDATES_SHARE > view.pods.len().max(MAX_BATCH)
        {
            return false;
        }
        let Some(world) = Arc::get_mut(&mut r.world) else { return false };
        for key in &changed {
            // a pod that was no endpoint is only forgotten
            let _ = world.remove_pod(key);
        }
        let added: Vec<(&String, &PodFacts)> = changed.iter().filter_map(|k| Some((k, view.pods.get(k)?))).collect();
        let spans = index_source(&mut r.sources, "cluster/pods (updated)", added.iter().map(|(k, _)| *k));
        for ((_, p), span) in added.iter().zip(spans) {
            // (diagnostics of an update are not kept: see the type's doc)
            if world.add_pod(&pod_ast(p, span, &mut Vec::new())).is_err() {
                return false;
            }
        }
        r.updated += changed.len();
        self.stats.pods_updated += changed.len() as u64;
        true
    }
}

/// Resolves the whole view: every policy through egret's loader, the cluster
/// objects converted directly, the node's facts as AST, then [`World::new`].
fn resolve(view: &ClusterView, options: &Options, node_facts: Option<&NodeNetwork>) -> Resolved {
    let mut sources = SourceMap::new();
    let mut bundle = Bundle::default();
    let mut cluster_diagnostics = Vec::new();
    let mut reports = BTreeMap::new();

    for p in view.policies.iter() {
        let text = serde_json::to_string_pretty(&render_policy(p)).unwrap_or_default();
        let loaded = egret_lang::load::parse_text(&mut sources, &policy_source_name(&p.name), text);
        let mut diagnostics = loaded.diagnostics;
        for pol in &loaded.bundle.policies {
            diagnostics.extend(egret_lang::validate::policy(pol));
        }
        egret_lang::diag::sort_dedup(&mut diagnostics);
        let ok = loaded.bundle.policies.len() == 1 && !diagnostics.iter().any(Diagnostic::is_error);
        if ok {
            bundle.policies.extend(loaded.bundle.policies);
        }
        let outcome = PolicyOutcome::Rejected;
        reports.insert(
            p.name.clone(),
            PolicyReport { name: p.name.clone(), uid: p.uid.clone(), outcome, diagnostics, counted: PodScope::All },
        );
    }

    bundle.cluster = view.cluster(&mut sources, &mut cluster_diagnostics);
    bundle.objects += bundle.cluster.pods.len() + bundle.cluster.nodes.len() + bundle.cluster.namespaces.len();
    if let Some(facts) = node_facts {
        driver::add_node_facts(&mut sources, &mut bundle, facts.clone());
    }

    let world = World::new(&bundle, options);
    drop(bundle);
    cluster_diagnostics.extend(world.diagnostics().iter().cloned());
    Resolved {
        options: options.clone(),
        node_facts: node_facts.cloned(),
        fixed: view.fixed_positions(),
        pods: view.pods.position(),
        sources,
        world: Arc::new(world),
        reports,
        cluster_diagnostics,
        updated: 0,
    }
}

/// Fills in each accepted policy's outcome from the world: what it selects,
/// its gateways and their egress IPs.
fn report_outcomes(world: &World, reports: &mut BTreeMap<String, PolicyReport>, scope: &PodScope) {
    for info in world.policies() {
        if let Some(r) = reports.get_mut(&info.name) {
            r.counted = scope.clone();
            let gateways = info
                .gateways
                .iter()
                .map(|g| {
                    let slot = world.slot_of(g.node, &g.spec);
                    GatewayReport {
                        node: g.node_name.clone(),
                        ip: g.ip,
                        healthy: g.healthy,
                        egress_v4: slot.and_then(|s| s.v4.as_ref()).map(ToString::to_string),
                        egress_v6: slot.and_then(|s| s.v6.as_ref()).map(ToString::to_string),
                        interface: slot.map(|s| s.interface.to_string()),
                        unavailable: slot.map_or_else(Vec::new, |s| {
                            [("IPv4", &s.v4), ("IPv6", &s.v6)]
                                .into_iter()
                                .filter_map(|(fam, e)| match e {
                                    Some(EgressIp::Unavailable { reason }) => Some(format!("{fam}: {reason}")),
                                    _ => None,
                                })
                                .collect()
                        }),
                    }
                })
                .collect();
            r.outcome = PolicyOutcome::Compiled { endpoints: world.selection(info.id).len(), gateways };
        }
    }
}

/// Adds a source of one line per key (`name`, e.g. `cluster/pods`); the
/// span of each line, in order.
fn index_source<'a>(sources: &mut SourceMap, name: &str, keys: impl Iterator<Item = &'a String>) -> Vec<Span> {
    let mut text = String::new();
    let mut ranges = Vec::new();
    for k in keys {
        ranges.push((text.len(), text.len() + k.len()));
        text.push_str(k);
        text.push('\n');
    }
    let file = sources.add(name, text);
    ranges.into_iter().map(|(start, end)| Span::new(file, start, end)).collect()
}

/// The values of `raw` that parse; a diagnostic on `span` for each that does not.
fn parse_each<T: std::str::FromStr>(
    raw: &[String],
    span: Span,
    what: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<T> {
    raw.iter()
        .filter_map(|v| match v.parse() {
            Ok(x) => Some(x),
            Err(_) => {
                diagnostics.push(
                    Diagnostic::new(&codes::INVALID_OBJECT, format!("{what}: `{v}`"))
                        .primary(span, "ignored")
                        .help("the API server sent this value; egret ignores it"),
                );
                None
            }
        })
        .collect()
}

fn render_policy(p: &PolicyFacts) -> Value {
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(p.name.clone()));
    if !p.uid.is_empty() {
        meta.insert("uid".into(), Value::String(p.uid.clone()));
    }
    if let Some(ns) = &p.namespace {
        meta.insert("namespace".into(), Value::String(ns.clone()));
    }
    if !p.annotations.is_empty() {
        let a: Map<String, Value> = p.annotations.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        meta.insert("annotations".into(), Value::Object(a));
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String(format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION)));
    obj.insert("kind".into(), Value::String(crate::crd::KIND.into()));
    obj.insert("metadata".into(), Value::Object(meta));
    if let Some(spec) = &p.spec {
        obj.insert("spec".into(), spec.clone());
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_compiler::ir::Action;
    use serde_json::json;

    // ---- the API JSON the loader reads, for the equivalence test ----

    fn labels_json(labels: &Labels) -> Value {
        Value::Object(labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
    }

    fn list(items: impl Iterator<Item = Value>) -> String {
        // one item per line, so diagnostics show the object they are about
        let mut s = String::from("{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [\n");
        for (i, it) in items.enumerate() {
            if i > 0 {
                s.push_str(",\n");
            }
            s.push_str(&it.to_string());
        }
        s.push_str("\n]}\n");
        s
    }

    fn render_namespace(n: &NamespaceFacts) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n.name, "labels": labels_json(&n.labels)}})
    }

    fn render_node(n: &NodeFacts) -> Value {
        let addresses: Vec<Value> =
            n.internal_ips.iter().map(|a| json!({"type": "InternalIP", "address": a})).collect();
        let conditions: Vec<Value> = n.ready.iter().map(|s| json!({"type": "Ready", "status": s})).collect();
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n.name, "uid": n.uid, "labels": labels_json(&n.labels)},
            "spec": {"podCIDRs": n.pod_cidrs},
            "status": {"addresses": addresses, "conditions": conditions},
        })
    }

    fn render_pod(p: &PodFacts) -> Value {
        let ips: Vec<Value> = p.ips.iter().map(|ip| json!({"ip": ip})).collect();
        let mut spec = Map::new();
        if let Some(n) = &p.node_name {
            spec.insert("nodeName".into(), Value::String(n.clone()));
        }
        spec.insert("hostNetwork".into(), Value::Bool(p.host_network));
        let mut status = Map::new();
        if let Some(ph) = &p.phase {
            status.insert("phase".into(), Value::String(ph.clone()));
        }
        status.insert("podIPs".into(), Value::Array(ips));
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": p.namespace, "uid": p.uid, "labels": labels_json(&p.labels)},
            "spec": spec, "status": status,
        })
    }

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    fn node(name: &str, ip: &str, cidr: &str, l: &[(&str, &str)], ready: &str) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: labels(l),
            internal_ips: vec![ip.into()],
            pod_cidrs: vec![cidr.into()],
            ready: Some(ready.into()),
        }
    }

    fn pod(ns: &str, name: &str, node: &str, ip: &str, l: &[(&str, &str)]) -> PodFacts {
        PodFacts {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{ns}-{name}"),
            labels: labels(l),
            node_name: Some(node.into()),
            host_network: false,
            phase: Some("Running".into()),
            ips: vec![ip.into()],
        }
    }

    fn policy(name: &str, spec: Value) -> PolicyFacts {
        PolicyFacts {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: None,
            spec: Some(spec),
            annotations: BTreeMap::new(),
        }
    }

    /// The example cluster (two workers, one gateway) with one policy.
    fn example() -> ClusterView {
        let mut v = ClusterView::new();
        v.nodes.apply(node("worker-1", "192.0.2.11", "10.244.1.0/24", &[], "True"));
        v.nodes.apply(node("gateway-1", "192.0.2.13", "10.244.3.0/24", &[("egress", "true")], "True"));
        v.namespaces.apply(NamespaceFacts { name: "prod".into(), labels: labels(&[("team", "a")]) });
        v.pods.apply(pod("prod", "web", "worker-1", "10.244.1.10", &[("app", "web")]));
        v.pods.apply(pod("prod", "db", "worker-1", "10.244.1.11", &[("app", "db")]));
        v.policies.apply(policy(
            "web-out",
            json!({"selectors": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                   "destinationCIDRs": ["0.0.0.0/0"],
                   "egressGateway": {"nodeSelector": {"matchLabels": {"egress": "true"}}, "egressIP": "198.51.100.1"}}),
        ));
        v
    }

    #[test]
    fn the_view_compiles_through_egrets_loader() {
        let v = example();
        let c = v.plan("worker-1", &Options::default(), None);
        let plan = c.plan.as_ref().expect("worker-1 compiles");
        let ips: Vec<String> = plan.endpoints.iter().map(|e| e.ip.to_string()).collect();
        // web's class redirects to the gateway; db is selected by nothing, so
        // it has no class (its traffic passes)
        assert_eq!(ips, ["10.244.1.10"]);
        assert!(c.world.endpoint_by_key("prod/db").is_some());
        let web = plan.endpoints.iter().find(|e| e.endpoint == "prod/web").expect("web");
        let actions: Vec<&Action> = plan.classes[web.class.0 as usize].entries.iter().map(|e| &e.action).collect();
        assert!(
            actions.iter().any(|a| matches!(a, Action::Egress(c) if c.primary().gateway.to_string() == "192.0.2.13"))
        );
        let r = &c.policies["web-out"];
        assert!(r.diagnostics.is_empty(), "{}", c.render(&r.diagnostics));
        match &r.outcome {
            PolicyOutcome::Compiled { endpoints, gateways } => {
                assert_eq!(*endpoints, 1);
                assert_eq!(gateways.len(), 1);
                assert_eq!(gateways[0].node, "gateway-1");
            }
            PolicyOutcome::Rejected => panic!("rejected"),
        }
        assert!(r.summary().contains("selects 1 endpoint; gateway gateway-1 (192.0.2.13)"), "{}", r.summary());
        assert!(c.cluster_diagnostics.is_empty(), "{}", c.render(&c.cluster_diagnostics));
    }

    #[test]
    fn a_malformed_policy_is_reported_and_the_others_compile() {
        let mut v = example();
        v.policies.apply(policy(
            "broken",
            json!({"selectors": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                   "destinationCIDRs": ["10.0.0.0/33"],
                   "egressGateway": {"nodeSelector": {}}}),
        ));
        v.policies.apply(policy("typo", json!({"selector": [], "destinationCIDRs": ["0.0.0.0/0"]})));
        let c = v.plan("worker-1", &Options::default(), None);
        assert!(c.plan.is_ok(), "{:?}", c.plan.err());
        assert!(c.policies["web-out"].compiled());
        let broken = &c.policies["broken"];
        assert!(!broken.compiled());
        assert_eq!(broken.error_codes(), [egret_lang::codes::INVALID_CIDR.id]);
        let typo = &c.policies["typo"];
        assert!(typo.error_codes().contains(&egret_lang::codes::UNKNOWN_FIELD.id), "{:?}", typo.error_codes());
        assert!(typo.summary().starts_with("not compiled: error["), "{}", typo.summary());
        // the rendered diagnostic points into the policy's own source
        let text = c.render(&broken.diagnostics);
        assert!(text.contains("CiliumEgressGatewayPolicy/broken"), "{text}");
        assert_eq!(c.rejected().count(), 2);
    }

    #[test]
    fn malformed_cluster_objects_are_diagnostics_not_failures() {
        let mut v = example();
        v.nodes.apply(NodeFacts { internal_ips: vec!["not-an-ip".into()], ..node("w9", "x", "y", &[], "True") });
        let mut p = pod("prod", "odd", "worker-1", "10.244.1.99", &[("app", "web")]);
        p.ips = vec!["10.244.1.300".into()];
        v.pods.apply(p);
        let c = v.plan("worker-1", &Options::default(), None);
        assert!(c.plan.is_ok());
        let codes: Vec<&str> = c.cluster_diagnostics.iter().map(|d| d.code.id).collect();
        assert!(codes.iter().filter(|c| **c == egret_lang::codes::INVALID_OBJECT.id).count() >= 3, "{codes:?}");
        // the pod with a bad IP is no endpoint; the node with a bad IP has none
        assert!(c.world.endpoint_by_key("prod/odd").is_none());
        assert_eq!(c.world.node_by_name("w9").map(|n| n.ip), Some(None));
        assert_eq!(c.plan.as_ref().map(|p| p.endpoints.len()).ok(), Some(1));
    }

    #[test]
    fn the_direct_conversion_reads_what_the_loader_reads_from_api_json() {
        let mut v = example();
        v.namespaces.apply(NamespaceFacts { name: "odd".into(), labels: labels(&[("team", "x"), ("k", "true")]) });
        v.nodes.apply(NodeFacts {
            internal_ips: vec!["not-an-ip".into(), "192.0.2.50".into(), "2001:db8::50".into()],
            pod_cidrs: vec!["10.244.9.0/24".into(), "10.244.10.7/24".into(), "y".into()],
            ..node("w9", "x", "z", &[("zone", "a")], "Unknown")
        });
        v.nodes.apply(NodeFacts { ready: None, ..node("w10", "192.0.2.51", "10.244.11.0/24", &[], "True") });
        v.nodes.apply(node("w11", "192.0.2.52", "10.244.12.0/24", &[], "False"));
        let mut p = pod("odd", "multi", "w9", "10.244.9.5", &[("app", "web"), ("empty", "")]);
        p.ips = vec!["10.244.9.5".into(), "fd00::5".into(), "10.244.9.5".into(), "10.244.1.300".into()];
        v.pods.apply(p);
        let mut p = pod("odd", "host", "w9", "192.0.2.50", &[]);
        p.host_network = true;
        v.pods.apply(p);
        let mut p = pod("odd", "done", "w9", "10.244.9.6", &[]);
        p.phase = Some("Succeeded".into());
        v.pods.apply(p);
        let mut p = pod("odd", "pending", "w9", "10.244.9.7", &[]);
        p.node_name = None;
        p.phase = None;
        p.uid = String::new();
        p.ips.clear();
        v.pods.apply(p);

        let mut direct_sources = SourceMap::new();
        let mut direct_diags = Vec::new();
        let direct = v.cluster(&mut direct_sources, &mut direct_diags);
        let mut sources = SourceMap::new();
        let mut loaded = Cluster::default();
        let mut loaded_diags = Vec::new();
        for (name, text) in [
            ("namespaces", list(v.namespaces.iter().map(render_namespace))),
            ("nodes", list(v.nodes.iter().map(render_node))),
            ("pods", list(v.pods.iter().map(render_pod))),
        ] {
            let l = egret_lang::load::parse_text(&mut sources, name, text);
            loaded.extend(l.bundle.cluster);
            loaded_diags.extend(l.diagnostics);
        }
        // the same objects, field by field (spans aside)
        let pods = |c: &Cluster| -> Vec<String> {
            c.pods
                .iter()
                .map(|p| {
                    format!(
                        "{} {} {} {:?} {:?} {} {:?} {:?}",
                        p.namespace, p.name.value, p.uid, p.labels, p.node_name, p.host_network, p.pod_ips, p.phase
                    )
                })
                .collect()
        };
        let nodes = |c: &Cluster| -> Vec<String> {
            c.nodes
                .iter()
                .map(|n| {
                    format!(
                        "{} {} {:?} {:?} {:?} {:?}",
                        n.name.value, n.uid, n.labels, n.internal_ips, n.pod_cidrs, n.ready
                    )
                })
                .collect()
        };
        let namespaces = |c: &Cluster| -> Vec<String> {
            c.namespaces.iter().map(|n| format!("{} {:?}", n.name.value, n.labels)).collect()
        };
        assert_eq!(pods(&direct), pods(&loaded));
        assert_eq!(nodes(&direct), nodes(&loaded));
        assert_eq!(namespaces(&direct), namespaces(&loaded));
        assert_eq!(direct.pods.len(), 6);
        // the same problems: three bad values, each ignored
        let codes = |d: &[Diagnostic]| d.iter().map(|d| d.code.id).collect::<Vec<_>>();
        assert_eq!(codes(&direct_diags), codes(&loaded_diags));
        assert_eq!(codes(&direct_diags), [egret_lang::codes::INVALID_OBJECT.id; 3]);
        // and a diagnostic names the object it is about
        let text = render::human(&direct_diags[2..], &direct_sources);
        assert!(text.contains("cluster/pods") && text.contains("odd/multi") && text.contains("10.244.1.300"), "{text}");
    }

    /// A view to change at random: two workers, two gateways, three
    /// namespaces, policies selecting by pod and namespace labels, and pods.
    fn random_cluster(rng: &mut u64) -> ClusterView {
        let mut v = ClusterView::new();
        v.nodes.apply(node("worker-1", "192.0.2.11", "10.244.1.0/24", &[("zone", "a")], "True"));
        v.nodes.apply(node("worker-2", "192.0.2.12", "10.244.2.0/24", &[("zone", "b")], "True"));
        v.nodes.apply(node("gateway-1", "192.0.2.13", "10.244.3.0/24", &[("egress", "true")], "True"));
        v.nodes.apply(node("gateway-2", "192.0.2.14", "10.244.4.0/24", &[("egress", "true")], "True"));
        for (ns, team) in [("prod", "a"), ("dev", "b"), ("ops", "a")] {
            v.namespaces.apply(NamespaceFacts { name: ns.into(), labels: labels(&[("team", team)]) });
        }
        let gw = json!({"nodeSelector": {"matchLabels": {"egress": "true"}}});
        v.policies.apply(policy(
            "web",
            json!({"selectors": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                   "destinationCIDRs": ["0.0.0.0/0"], "egressGateway": gw}),
        ));
        v.policies.apply(policy(
            "team-a-api",
            json!({"selectors": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["api", "db"]}]},
                                  "namespaceSelector": {"matchLabels": {"team": "a"}}}],
                   "destinationCIDRs": ["203.0.113.0/24", "198.51.100.0/24"], "excludedCIDRs": ["203.0.113.128/25"],
                   "egressGateways": [gw, {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "gateway-2"}}}]}),
        ));
        v.policies.apply(policy(
            "dev-all",
            json!({"selectors": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev"}}}],
                   "destinationCIDRs": ["203.0.113.0/24"], "egressGateway": gw}),
        ));
        for i in 0..30 {
            v.pods.apply(random_pod(rng, i));
        }
        v
    }

    fn next(rng: &mut u64) -> u64 {
        // xorshift64*
        *rng ^= *rng >> 12;
        *rng ^= *rng << 25;
        *rng ^= *rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(rng: &mut u64, from: &[&'a str]) -> &'a str {
        from[(next(rng) % from.len() as u64) as usize]
    }

    /// Pod `i` (of 40 names) with random labels, node, IPs (its own, or
    /// now and then another's), phase and network.
    fn random_pod(rng: &mut u64, i: u64) -> PodFacts {
        let n = next(rng) % 4;
        let ns = ["prod", "dev", "ops", "gone"][n as usize];
        let node = pick(rng, &["worker-1", "worker-2", "gateway-1", "nowhere"]);
        let app = pick(rng, &["web", "api", "db", "batch"]);
        let ip = if next(rng).is_multiple_of(50) { (next(rng) % 4, next(rng) % 40) } else { (n, i % 40) };
        let ip = format!("10.244.{}.{}", 10 + ip.0, 100 + ip.1);
        let mut p = pod(ns, &format!("p{}", i % 40), node, &ip, &[("app", app)]);
        match next(rng) % 12 {
            0 => p.phase = Some("Succeeded".into()),
            1 => p.host_network = true,
            2 => p.ips.clear(),
            3 => p.ips.push(format!("fd00::{}", next(rng) % 60)),
            4 => p.node_name = None,
            _ => {}
        }
        p
    }

    #[test]
    fn a_compiler_updating_its_world_plans_what_a_full_resolution_does() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut v = random_cluster(&mut rng);
        let nodes = ["worker-1", "gateway-1"];
        let mut compilers: Vec<ViewPlanner> = nodes.iter().map(|_| ViewPlanner::new()).collect();
        let options = Options::default();
        for step in 0..300 {
            // change 1 to 3 pods: replace, relabel or delete
            for _ in 0..1 + next(&mut rng) % 3 {
                let i = next(&mut rng) % 40;
                match next(&mut rng) % 4 {
                    0 => {
                        let key = v.pods.iter().nth((i % v.pods.len().max(1) as u64) as usize).map(Fact::key);
                        if let Some(k) = key {
                            v.pods.delete(&k);
                        }
                    }
                    1 => {
                        let p = v.pods.iter().nth((i % v.pods.len().max(1) as u64) as usize).cloned();
                        if let Some(mut p) = p {
                            p.labels.insert("app".into(), pick(&mut rng, &["web", "api", "db", "batch"]).into());
                            v.pods.apply(p);
                        }
                    }
                    _ => {
                        v.pods.apply(random_pod(&mut rng, i));
                    }
                }
            }
            // now and then more than pods: a namespace relabelled, a node not Ready
            if step % 40 == 39 {
                let team = pick(&mut rng, &["a", "b"]);
                v.namespaces.apply(NamespaceFacts { name: "dev".into(), labels: labels(&[("team", team)]) });
            }
            if step % 60 == 59 {
                let ready = pick(&mut rng, &["True", "False"]);
                v.nodes.apply(node("gateway-2", "192.0.2.14", "10.244.4.0/24", &[("egress", "true")], ready));
            }
            for (node, compiler) in nodes.iter().zip(&mut compilers) {
                let updated = compiler.plan(&v, node, &options, None);
                let fresh = v.plan(node, &options, None);
                let plan = |c: &ViewPlan| c.plan.as_ref().map_err(ToString::to_string).cloned();
                assert_eq!(plan(&updated), plan(&fresh), "step {step}, node {node}");
                let outcomes =
                    |c: &ViewPlan| -> Vec<PolicyOutcome> { c.policies.values().map(|r| r.outcome.clone()).collect() };
                assert_eq!(outcomes(&updated), outcomes(&fresh), "step {step}, node {node}");
                for p in v.pods.iter() {
                    let key = p.key();
                    let (a, b) = (&updated.world, &fresh.world);
                    assert_eq!(a.non_endpoint_reason(&key), b.non_endpoint_reason(&key), "{key} at step {step}");
                    assert_eq!(
                        a.endpoint_by_key(&key).map(|e| (&e.ips, e.node, &e.labels)),
                        b.endpoint_by_key(&key).map(|e| (&e.ips, e.node, &e.labels)),
                        "{key} at step {step}"
                    );
                }
                assert_eq!(updated.world.endpoints().count(), fresh.world.endpoints().count(), "step {step}");
            }
        }
        for c in &compilers {
            let s = c.stats();
            println!("{s:?}");
            assert_eq!(s.resolutions + s.updates, 300, "{s:?}");
            // most compiles were updates; namespace and node changes, and
            // contested IPs, re-resolved
            assert!(s.updates >= 150 && s.resolutions >= 7, "{s:?}");
        }
    }

    #[test]
    fn the_plan_of_a_node_without_slots_reads_only_its_own_pods() {
        // what lets a worker's agent watch its own pods (PodScope::Node)
        let options = Options::default();
        let (mut checked, mut contested) = (0, 0);
        for seed in 1..=40_u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut full = random_cluster(&mut rng);
            if seed % 3 == 0 {
                // gateway-2 not Ready: a failover changes the slots
                full.nodes.apply(node("gateway-2", "192.0.2.14", "10.244.4.0/24", &[("egress", "true")], "False"));
            }
            for name in ["worker-1", "worker-2", "gateway-1", "gateway-2"] {
                let whole = full.plan(name, &options, None);
                let serves = whole.world.serves_slots(name);
                // gateway-1 is the first node the gateway selectors match;
                // gateway-2 matches them too but is never chosen
                assert_eq!(serves, name == "gateway-1", "{name}, seed {seed}");
                if serves {
                    continue;
                }
                if whole.world.has_contested_ips() {
                    // an IP claimed by pods on two nodes: only a view of every pod
                    // sees the claim (a gateway's agent reports it)
                    contested += 1;
                    continue;
                }
                let mut own = full.clone();
                own.narrow(PodScope::Node(name.to_string()));
                assert!(own.pods.len() < full.pods.len(), "other nodes' pods left out");
                let scoped = own.plan(name, &options, None);
                let plan = |c: &ViewPlan| c.plan.as_ref().map_err(ToString::to_string).cloned();
                assert_eq!(plan(&scoped), plan(&whole), "{name}, seed {seed}");
                // the policies' reports count what the view holds, and say so
                let r = scoped.policies.values().next().expect("policies");
                assert_eq!(r.counted, PodScope::Node(name.to_string()));
                if matches!(r.outcome, PolicyOutcome::Compiled { .. }) {
                    assert!(r.summary().contains(&format!(" on node {name}")), "{}", r.summary());
                }
                checked += 1;
            }
        }
        println!("{checked} worker plans compared, {contested} skipped for contested IPs");
        assert!(checked >= 60, "{checked} compared");
    }

    #[test]
    fn a_tables_journal_says_what_changed_or_that_it_cannot() {
        let mut v = example();
        let at = v.pods.position();
        assert_eq!(v.pods.changed_since(at).map(Iterator::count), Some(0));
        assert!(!v.pods.apply(pod("prod", "web", "worker-1", "10.244.1.10", &[("app", "web")])), "no change");
        v.pods.apply(pod("prod", "web", "worker-1", "10.244.1.10", &[("app", "other")]));
        v.pods.apply(pod("prod", "new", "worker-1", "10.244.1.12", &[]));
        v.pods.delete("prod/db");
        v.pods.delete("prod/db");
        let keys: Vec<&str> = v.pods.changed_since(at).expect("journaled").collect();
        assert_eq!(keys, ["prod/web", "prod/new", "prod/db"]);
        let later = v.pods.position();
        assert_eq!(v.pods.changed_since(later).map(Iterator::count), Some(0));
        // another table (a clone too) cannot answer for this one's positions
        let copy = v.pods.clone();
        assert_eq!(copy, v.pods);
        assert!(copy.changed_since(later).is_none() && example().pods.changed_since(at).is_none());
        // a relist that changed something restarts the journal; one that did not, does not
        assert!(!v.pods.replace(v.pods.iter().cloned().collect::<Vec<_>>()));
        assert_eq!(v.pods.changed_since(later).map(Iterator::count), Some(0));
        assert!(v.pods.replace(example().pods.iter().cloned().collect::<Vec<_>>()));
        assert!(v.pods.changed_since(later).is_none());
        // more changes than the journal holds
        let at = v.pods.position();
        for i in 0..=JOURNAL {
            v.pods.apply(pod("prod", "web", "worker-1", "10.244.1.10", &[("n", &i.to_string())]));
        }
        assert!(v.pods.changed_since(at).is_none());
        let recent = v.pods.position();
        v.pods.delete("prod/web");
        assert_eq!(v.pods.changed_since(recent).map(Iterator::collect::<Vec<_>>), Some(vec!["prod/web"]));
    }

    #[test]
    fn tables_report_changes_only() {
        let mut v = example();
        let before = v.clone();
        assert!(!v.pods.apply(pod("prod", "web", "worker-1", "10.244.1.10", &[("app", "web")])));
        assert!(!v.pods.replace(before.pods.iter().cloned()));
        assert!(v.pods.apply(pod("prod", "web", "worker-1", "10.244.1.10", &[("app", "other")])));
        assert!(v.pods.delete("prod/web"));
        assert!(!v.pods.delete("prod/web"));
        assert!(v.pods.replace(before.pods.iter().cloned()));
        assert_eq!(v, before);
    }

    #[test]
    fn node_facts_supply_the_nodes_own_interfaces() {
        let v = example();
        let egress = |c: &ViewPlan| match &c.policies["web-out"].outcome {
            PolicyOutcome::Compiled { gateways, .. } => gateways[0].interface.clone(),
            PolicyOutcome::Rejected => None,
        };
        let without = v.plan("gateway-1", &Options::default(), None);
        assert!(egress(&without).is_some_and(|e| e.starts_with("late(")), "{:?}", egress(&without));
        let facts = NodeNetwork {
            span: Span::default(),
            node: Spanned::new("gateway-1".into(), Span::default()),
            interfaces: vec![egret_lang::ast::Interface {
                name: "eth1".into(),
                index: Some(3),
                addresses: vec!["198.51.100.1/32".parse().expect("cidr")],
                alt_names: Vec::new(),
            }],
            default_route_interface: None,
        };
        let with = v.plan("gateway-1", &Options::default(), Some(&facts));
        assert_eq!(egress(&with).as_deref(), Some("eth1#3"));
        let plan = with.plan.as_ref().expect("compiles");
        assert_eq!(plan.slots.len(), 1);
        assert_eq!(plan.gateway_tables[0].sources.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.244.1.10"]);
    }

    #[test]
    fn an_unknown_node_is_a_compile_error_not_a_panic() {
        let c = example().plan("nope", &Options::default(), None);
        let e = c.plan.expect_err("no such node");
        assert_eq!(e.diagnostics()[0].code.id, egret_lang::codes::UNKNOWN_NODE.id);
    }
}
