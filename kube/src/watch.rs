//! Watching the cluster: list+watch of policies, pods, namespaces and nodes
//! into a [`ClusterView`], a synced gate, and debounced recompilation.
//!
//! Contract of [`ClusterWatch::run`]:
//! - **Watchers**: one `kube::runtime::watcher` per kind (list with
//!   pagination, then watch from the list's `resourceVersion` with
//!   bookmarks; a watch that ends is resumed from the last version seen; a
//!   `410 Gone` relists; errors back off exponentially between
//!   [`WatchConfig::backoff_min`] and [`WatchConfig::backoff_max`]). Objects
//!   are decoded trimmed ([`crate::wire`]).
//! - **Relists are atomic**: the objects of a (re)list are buffered and
//!   replace the kind's table only when the list is complete, so the view
//!   never holds half a list.
//! - **Pod scope**: pods are listed and watched cluster-wide or, for an
//!   agent whose node serves no egress slot, with the field selector
//!   `spec.nodeName=NODE` ([`PodScope`], set through [`PodScopeHandle`]).
//!   A new scope is a new list from scratch, atomic like a relist;
//!   [`ClusterView::pod_scope`] names the scope the pods table holds.
//! - **Synced gate**: the callback is never called before every kind has
//!   completed its first list ([`WatchStatus::synced`]).
//! - **Debounce**: a change (an object whose trimmed facts differ, or a
//!   [`Nudge`]) schedules the callback [`WatchConfig::quiet`] after the
//!   latest change, but never later than [`WatchConfig::max_delay`] after
//!   the first change not yet seen by the callback. With
//!   [`WatchConfig::leading`], a change that finds the watch idle (nothing
//!   pending, no change for a quiet period) runs the callback at once;
//!   changes that follow it within a quiet period are debounced as above,
//!   so a burst costs one extra callback at most. Updates that leave the
//!   facts unchanged (a node heartbeat, a pod's container status) schedule
//!   nothing.
//! - **Callback**: `on_change(&view, &batch)` runs on the watch task;
//!   updates that arrive meanwhile wait and are applied after it returns.
//!   [`Batch`] says when the first change it covers arrived (for the
//!   event-to-dataplane figure) and how many changes it covers.
//! - **Errors** never end the loop: they are logged (`tracing`), counted in
//!   [`WatchStatus`], and retried. The loop ends when `shutdown` completes.

use crate::admit::{Admission, Admit, Admitted, Overlay};
use crate::view::{ClusterView, Fact, PodScope, Table};
use crate::wire::{IntoFacts, NamespaceWire, NodeWire, PodWire, PolicyWire};
use futures::stream::{BoxStream, StreamExt, select_all};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How the watch behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Quiet period: the callback runs this long after the latest change.
    pub quiet: Duration,
    /// Upper bound: the callback runs at most this long after the first
    /// change it has not seen, however busy the cluster.
    pub max_delay: Duration,
    /// Leading edge: a change that finds the watch idle runs the callback
    /// at once (see the module doc).
    pub leading: bool,
    /// Objects per list page (`limit`); `None` lists in one response.
    pub page_size: Option<u32>,
    /// First delay after an error.
    pub backoff_min: Duration,
    /// Longest delay between retries.
    pub backoff_max: Duration,
    /// `timeoutSeconds` of watch requests (the server's default when `None`).
    pub watch_timeout: Option<u32>,
    /// Every pod of the cluster, always: for an agent, no narrowing to its
    /// node's pods while it serves no egress slot (`egret-agent
    /// --watch-all-pods`; [`PodScope`]).
    pub all_pods: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            quiet: Duration::from_millis(100),
            // a compile that updates the last resolution takes 7–60 ms at
            // 100,000 pods (docs/PERFORMANCE.md): under constant churn the
            // bound alone allows ~3 of them a second (the leading edge adds
            // one per quiet spell), and a change waits 300 ms at most
            max_delay: Duration::from_millis(300),
            leading: true,
            page_size: Some(500),
            backoff_min: Duration::from_millis(800),
            backoff_max: Duration::from_secs(30),
            watch_timeout: None,
            all_pods: false,
        }
    }
}

/// The watched kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` Pods.
    Pods,
    /// `v1` Namespaces.
    Namespaces,
    /// `v1` Nodes.
    Nodes,
    /// `cilium.io/v2` CiliumEgressGatewayPolicies.
    Policies,
}

impl Kind {
    /// Every watched kind.
    pub const ALL: [Kind; 4] = [Kind::Pods, Kind::Namespaces, Kind::Nodes, Kind::Policies];

    /// The API group and resource (plural) the kind's watcher calls.
    pub fn resource(self) -> (&'static str, &'static str) {
        fn of<R: Resource<DynamicType = ()>>() -> (&'static str, &'static str) {
            match (R::group(&()), R::plural(&())) {
                (std::borrow::Cow::Borrowed(g), std::borrow::Cow::Borrowed(p)) => (g, p),
                // the wire types name their resources with static strings
                _ => ("", ""),
            }
        }
        match self {
            Kind::Pods => of::<PodWire>(),
            Kind::Namespaces => of::<NamespaceWire>(),
            Kind::Nodes => of::<NodeWire>(),
            Kind::Policies => of::<PolicyWire>(),
        }
    }

    /// A bounded label (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pods => "pods",
            Kind::Namespaces => "namespaces",
            Kind::Nodes => "nodes",
            Kind::Policies => "ciliumegressgatewaypolicies",
        }
    }
}

/// One kind of API call the agent makes: what its RBAC must grant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiCall {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource (plural).
    pub resource: &'static str,
    /// Verb.
    pub verb: &'static str,
}

/// Every API call the agent makes: `list` and `watch` (cluster-wide) of
/// each watched kind ([`ClusterWatch`]), `create` of `events.k8s.io`
/// Events ([`crate::events::Publisher`]), `get` of a pod that `egret-cni`
/// admits before the watch delivered it ([`crate::admit::get_pod`]), and
/// `get`/`create`/`update` of the node's `egret.dev` NodeNetwork
/// ([`crate::node_network::publish`]). `deploy/base/clusterrole.yaml` grants
/// exactly these (tested).
pub fn api_calls() -> Vec<ApiCall> {
    let mut v: Vec<ApiCall> = Kind::ALL
        .iter()
        .flat_map(|k| {
            let (group, resource) = k.resource();
            ["list", "watch"].map(|verb| ApiCall { group, resource, verb })
        })
        .collect();
    v.push(ApiCall { group: "events.k8s.io", resource: "events", verb: "create" });
    // egret-cni's admissions: a pod the watch has not delivered yet (crate::admit::get_pod)
    v.push(ApiCall { group: "", resource: "pods", verb: "get" });
    // the node's own NodeNetwork (crate::node_network::publish)
    for verb in ["get", "create", "update"] {
        v.push(ApiCall { group: crate::node_network::GROUP, resource: crate::node_network::PLURAL, verb });
    }
    v.sort();
    v
}

/// What one callback run covers.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// When the first change not yet seen by a callback arrived (an object
    /// update that changed the view, a nudge, or the gate opening).
    pub first_change: std::time::Instant,
    /// Changes since the previous callback.
    pub changes: u64,
    /// Admissions this callback runs for (`0`: a debounced callback), whose
    /// pods' sandboxes wait for it ([`crate::admit`]).
    pub admissions: u64,
}

/// Counters and the synced flag, shared with whoever reports health.
#[derive(Debug, Default)]
pub struct WatchStatus {
    synced: AtomicBool,
    reconciles: AtomicU64,
    changes: AtomicU64,
    errors: AtomicU64,
    relists: AtomicU64,
    last_error: std::sync::Mutex<Option<(Kind, String)>>,
}

impl WatchStatus {
    /// Whether every kind has completed its first list (`/readyz`).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
    /// Callback runs so far (counted as each starts).
    pub fn reconciles(&self) -> u64 {
        self.reconciles.load(Ordering::Acquire)
    }
    /// Updates that changed the view (and nudges).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }
    /// Watch errors so far (list or watch failures, `410 Gone`, undecodable
    /// objects, lost connections).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Acquire)
    }
    /// Lists after a kind's first one (after `410 Gone` or a failed resume).
    pub fn relists(&self) -> u64 {
        self.relists.load(Ordering::Acquire)
    }
    /// The latest error and its kind, for people: with a hint when the
    /// policies cannot be listed because the cluster lacks their CRD.
    pub fn last_error(&self) -> Option<String> {
        let last = self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        last.map(|(kind, e)| {
            let hint = if kind == Kind::Policies && (e.contains("404") || e.contains("NotFound")) {
                " (is the CiliumEgressGatewayPolicy CRD installed? `kubectl apply -f deploy/cilium-crd/crd.yaml`; until \
                 policies can be listed nothing is compiled)"
            } else {
                ""
            };
            format!("{}: {e}{hint}", kind.as_str())
        })
    }
}

/// Asks for a recompilation though no object changed (the node's own
/// facts changed). Debounced like any change.
#[derive(Debug, Clone)]
pub struct Nudge(Arc<Notify>);

impl Nudge {
    /// Schedules the callback.
    pub fn nudge(&self) {
        self.0.notify_one();
    }
}

/// One change to one kind's table.
#[derive(Debug)]
enum Change<F> {
    Init,
    InitApply(F),
    InitDone,
    Apply(F),
    Delete(String),
}

#[derive(Debug)]
enum Update {
    Pods(Change<crate::view::PodFacts>),
    Namespaces(Change<crate::view::NamespaceFacts>),
    Nodes(Change<crate::view::NodeFacts>),
    Policies(Change<crate::view::PolicyFacts>),
    Error(Kind, watcher::Error),
}

/// A kind's list state: whether it has listed once, and the objects of a
/// list in progress.
#[derive(Debug)]
struct ListState<F> {
    synced: bool,
    buffer: Option<Vec<F>>,
}

impl<F> Default for ListState<F> {
    fn default() -> Self {
        ListState { synced: false, buffer: None }
    }
}

impl<F: Fact> ListState<F> {
    /// Applies a change; whether the view changed (a first completed list
    /// counts as a change, so the gate's opening schedules the callback).
    fn step(&mut self, table: &mut Table<F>, change: Change<F>, status: &WatchStatus) -> bool {
        match change {
            Change::Init => {
                if self.synced {
                    status.relists.fetch_add(1, Ordering::AcqRel);
                }
                self.buffer = Some(Vec::new());
                false
            }
            Change::InitApply(f) => match &mut self.buffer {
                Some(b) => {
                    b.push(f);
                    false
                }
                None => table.apply(f),
            },
            Change::InitDone => {
                let first = !self.synced;
                self.synced = true;
                let changed = table.replace(self.buffer.take().unwrap_or_default());
                changed || first
            }
            Change::Apply(f) => table.apply(f),
            Change::Delete(key) => table.delete(&key),
        }
    }
}

/// Exponential backoff, doubling from `min` to `max`; reset by the watcher
/// after every successful event (also the lease watch's, `crate::lease`).
#[derive(Debug)]
pub(crate) struct Backoff {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
    pub(crate) next: Duration,
}

impl Iterator for Backoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for Backoff {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

fn stream<W>(
    client: &Client,
    config: &WatchConfig,
    kind: Kind,
    fields: Option<&str>,
    wrap: fn(Change<W::Facts>) -> Update,
) -> BoxStream<'static, Update>
where
    W: Resource<DynamicType = ()> + IntoFacts + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let api: Api<W> = Api::all(client.clone());
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(f) = fields {
        wc = wc.fields(f);
    }
    wc.page_size = config.page_size;
    if let Some(t) = config.watch_timeout {
        wc = wc.timeout(t);
    }
    let backoff = Backoff { min: config.backoff_min, max: config.backoff_max, next: config.backoff_min };
    watcher::watcher(api, wc)
        .backoff(backoff)
        .map(move |r| match r {
            Ok(Event::Init) => wrap(Change::Init),
            Ok(Event::InitApply(o)) => wrap(Change::InitApply(o.into_facts())),
            Ok(Event::InitDone) => wrap(Change::InitDone),
            Ok(Event::Apply(o)) => wrap(Change::Apply(o.into_facts())),
            Ok(Event::Delete(o)) => wrap(Change::Delete(o.view_key())),
            Err(e) => Update::Error(kind, e),
        })
        .boxed()
}

/// The pods stream of a scope.
fn pod_stream(client: &Client, config: &WatchConfig, scope: &PodScope) -> BoxStream<'static, Update> {
    stream::<PodWire>(client, config, Kind::Pods, scope.field_selector().as_deref(), Update::Pods)
}

/// Sets the pods a [`ClusterWatch`] lists and watches ([`PodScope`]).
#[derive(Debug, Clone)]
pub struct PodScopeHandle(Arc<tokio::sync::watch::Sender<PodScope>>);

impl PodScopeHandle {
    /// Asks for `scope`: a new scope is listed from scratch, and the view's
    /// pods (and [`ClusterView::pod_scope`]) change when that list is
    /// complete, as any relist. The same scope again does nothing.
    pub fn set(&self, scope: PodScope) {
        self.0.send_if_modified(|s| {
            let changed = *s != scope;
            *s = scope;
            changed
        });
    }
}

/// The cluster watch: see the module doc.
pub struct ClusterWatch {
    client: Client,
    config: WatchConfig,
    status: Arc<WatchStatus>,
    nudge: Arc<Notify>,
    pod_scope: Arc<tokio::sync::watch::Sender<PodScope>>,
}

impl Debug for ClusterWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterWatch")
            .field("config", &self.config)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Lists {
    pods: ListState<crate::view::PodFacts>,
    namespaces: ListState<crate::view::NamespaceFacts>,
    nodes: ListState<crate::view::NodeFacts>,
    policies: ListState<crate::view::PolicyFacts>,
}

impl Lists {
    fn synced(&self) -> bool {
        self.pods.synced && self.namespaces.synced && self.nodes.synced && self.policies.synced
    }
}

impl ClusterWatch {
    /// A watch through `client`.
    pub fn new(client: Client, config: WatchConfig) -> Self {
        ClusterWatch {
            client,
            config,
            status: Arc::default(),
            nudge: Arc::default(),
            pod_scope: Arc::new(tokio::sync::watch::channel(PodScope::All).0),
        }
    }

    /// A handle that sets which pods are watched (from the start, if set
    /// before [`ClusterWatch::run`]; [`PodScope::All`] unless set).
    pub fn pod_scope(&self) -> PodScopeHandle {
        PodScopeHandle(Arc::clone(&self.pod_scope))
    }

    /// The shared status (synced, counters).
    pub fn status(&self) -> Arc<WatchStatus> {
        Arc::clone(&self.status)
    }

    /// A handle that schedules the callback (for node facts).
    pub fn nudge(&self) -> Nudge {
        Nudge(Arc::clone(&self.nudge))
    }

    /// Watches until `shutdown` completes, calling `on_change` as the module
    /// doc says.
    pub async fn run(self, shutdown: impl Future<Output = ()>, on_change: impl FnMut(&ClusterView, &Batch)) {
        self.run_admitting(shutdown, None, on_change).await;
    }

    /// [`ClusterWatch::run`], also taking CNI admissions from `admissions`
    /// (see [`crate::admit`]: an admitted pod's callback runs at once,
    /// outside the debounce).
    pub async fn run_admitting(
        self,
        shutdown: impl Future<Output = ()>,
        mut admissions: Option<tokio::sync::mpsc::UnboundedReceiver<Admission>>,
        mut on_change: impl FnMut(&ClusterView, &Batch),
    ) {
        let c = &self.config;
        let mut updates = select_all([
            stream::<NamespaceWire>(&self.client, c, Kind::Namespaces, None, Update::Namespaces),
            stream::<NodeWire>(&self.client, c, Kind::Nodes, None, Update::Nodes),
            stream::<PolicyWire>(&self.client, c, Kind::Policies, None, Update::Policies),
        ]);
        let mut scope_rx = self.pod_scope.subscribe();
        // the scope being listed; the view's is the last one listed completely
        let mut listing = scope_rx.borrow_and_update().clone();
        let mut pods = pod_stream(&self.client, c, &listing);
        let mut view = ClusterView { pod_scope: listing.clone(), ..ClusterView::new() };
        let mut lists = Lists::default();
        // (first change not yet seen by the callback, latest change, whether
        // the first found the watch idle)
        let mut pending: Option<(Instant, Instant, bool)> = None;
        let mut last_change: Option<Instant> = None;
        let mut batched = 0;
        let mut overlay = Overlay::default();
        tokio::pin!(shutdown);
        loop {
            let deadline = pending.filter(|_| lists.synced()).map(|(first, last, leading)| {
                if leading { first } else { (last + self.config.quiet).min(first + self.config.max_delay) }
            });
            let fire = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let changed = tokio::select! {
                () = &mut shutdown => return,
                () = fire => {
                    self.status.reconciles.fetch_add(1, Ordering::AcqRel);
                    let first = pending.map_or_else(std::time::Instant::now, |(first, _, _)| first.into_std());
                    on_change(&view, &Batch { first_change: first, changes: batched, admissions: 0 });
                    pending = None;
                    batched = 0;
                    false
                }
                () = self.nudge.notified() => true,
                a = async {
                    match admissions.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match a {
                    Some(first_admission) => {
                        // this one and every admission queued behind it: one callback for all
                        let mut queued = vec![first_admission];
                        while let Some(rx) = admissions.as_mut()
                            && let Ok(more) = rx.try_recv()
                        {
                            queued.push(more);
                        }
                        let mut answers = Vec::with_capacity(queued.len());
                        let mut changed = false;
                        for Admission { admit, reply } in queued {
                            let (answer, c) = admit_one(&mut view, &mut overlay, admit, lists.synced());
                            changed |= c;
                            answers.push((reply, answer));
                        }
                        let admitted = answers.iter().filter(|(_, a)| *a == Admitted::Reconciled).count() as u64;
                        if admitted > 0 {
                            // at once: the pods' sandboxes wait for this callback
                            self.status.reconciles.fetch_add(1, Ordering::AcqRel);
                            let first = pending.map_or_else(std::time::Instant::now, |(first, _, _)| first.into_std());
                            // the changes pending keep their debounced callback: this one
                            // may only put the pods into the running generation
                            on_change(&view, &Batch { first_change: first, changes: batched + admitted, admissions: admitted });
                        }
                        for (reply, answer) in answers {
                            let _ = reply.send(answer);
                        }
                        changed
                    }
                    None => {
                        admissions = None;
                        false
                    }
                },
                u = updates.next() => match u {
                    Some(u) => self.apply(&mut view, &mut lists, overlay_patch(&mut overlay, u)),
                    // the watchers retry forever; their end means shutdown
                    None => return,
                },
                u = pods.next() => match u {
                    Some(u) => {
                        let complete = matches!(u, Update::Pods(Change::InitDone));
                        let changed = self.apply(&mut view, &mut lists, overlay_patch(&mut overlay, u));
                        if complete && view.pod_scope != listing {
                            // the new scope's list replaced the table: the callback must
                            // see it even when no pod differs
                            tracing::info!(scope = %listing, "pods listed");
                            view.pod_scope = listing.clone();
                            true
                        } else {
                            changed
                        }
                    }
                    None => return,
                },
                Ok(()) = scope_rx.changed() => {
                    let wanted = scope_rx.borrow_and_update().clone();
                    if wanted != listing {
                        // a new list from scratch (its Init starts a relist: the old
                        // table stays until the new list is complete)
                        tracing::info!(from = %listing, to = %wanted, "pod scope changes; listing");
                        listing = wanted;
                        pods = pod_stream(&self.client, &self.config, &listing);
                    }
                    false
                }
            };
            if changed {
                self.status.changes.fetch_add(1, Ordering::AcqRel);
                batched += 1;
                let now = Instant::now();
                let idle = self.config.leading && last_change.is_none_or(|t| now >= t + self.config.quiet);
                last_change = Some(now);
                pending = Some(pending.map_or((now, now, idle), |(first, _, leading)| (first, now, leading)));
            }
            if lists.synced() && !self.status.synced() {
                self.status.synced.store(true, Ordering::Release);
            }
        }
    }

    fn apply(&self, view: &mut ClusterView, lists: &mut Lists, u: Update) -> bool {
        let s = &self.status;
        match u {
            Update::Pods(c) => lists.pods.step(&mut view.pods, c, s),
            Update::Namespaces(c) => lists.namespaces.step(&mut view.namespaces, c, s),
            Update::Nodes(c) => lists.nodes.step(&mut view.nodes, c, s),
            Update::Policies(c) => lists.policies.step(&mut view.policies, c, s),
            Update::Error(kind, e) => {
                s.errors.fetch_add(1, Ordering::AcqRel);
                *s.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((kind, e.to_string()));
                tracing::warn!(kind = kind.as_str(), error = %e, "watch error; retrying");
                false
            }
        }
    }
}

/// A watch update with the CNI's addresses for pods the API has none for
/// yet ([`crate::admit`]); a deleted pod leaves the overlay.
fn overlay_patch(overlay: &mut Overlay, u: Update) -> Update {
    match u {
        Update::Pods(Change::Apply(f)) => Update::Pods(Change::Apply(overlay.patch(f))),
        Update::Pods(Change::InitApply(f)) => Update::Pods(Change::InitApply(overlay.patch(f))),
        Update::Pods(Change::Delete(key)) => {
            overlay.forget_pod(&key);
            Update::Pods(Change::Delete(key))
        }
        other => other,
    }
}

/// Applies one admission to the view ([`crate::admit`]'s contract): the
/// answer, and whether the view changed in a way the debounced callback
/// must still see (a release; an admission answered `Reconciled` is seen
/// by the callback that runs at once).
fn admit_one(view: &mut ClusterView, overlay: &mut Overlay, admit: Admit, synced: bool) -> (Admitted, bool) {
    let release = |view: &mut ClusterView, overlay: &mut Overlay, keep: &dyn Fn(&str) -> bool| {
        let gone = overlay.release(keep);
        let mut changed = false;
        for (key, ips) in &gone {
            if let Some(mut pod) = view.pods.get(key).cloned().filter(|p| p.ips == *ips) {
                pod.ips.clear();
                changed |= view.pods.apply(pod);
            }
        }
        (Admitted::Released(gone.len()), changed)
    };
    match admit {
        Admit::Pod { key, container_id, ips } => {
            overlay.insert(key.clone(), container_id, ips.clone());
            match view.pods.get(&key).cloned() {
                _ if !synced => (Admitted::NotSynced, false),
                Some(mut pod) => {
                    pod.ips = ips;
                    view.pods.apply(pod);
                    (Admitted::Reconciled, false)
                }
                None => (Admitted::NotInView, false),
            }
        }
        Admit::Facts { container_id, pod } => {
            overlay.insert(pod.key(), container_id, pod.ips.clone());
            if !synced {
                return (Admitted::NotSynced, false);
            }
            view.pods.apply(pod);
            (Admitted::Reconciled, false)
        }
        Admit::Release { container_id } => release(view, overlay, &|c| c != container_id),
        Admit::Gc { valid } => release(view, overlay, &|c| valid.contains(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::NamespaceFacts;

    fn ns(name: &str, team: &str) -> NamespaceFacts {
        NamespaceFacts { name: name.into(), labels: [("team".to_string(), team.to_string())].into() }
    }

    #[test]
    fn a_relist_replaces_the_table_only_when_complete() {
        let status = WatchStatus::default();
        let mut table = Table::default();
        let mut st = ListState::default();
        assert!(!st.step(&mut table, Change::Init, &status));
        assert!(!st.step(&mut table, Change::InitApply(ns("a", "1")), &status));
        assert!(table.is_empty(), "nothing is visible before the list completes");
        assert!(st.step(&mut table, Change::InitDone, &status), "the first list opens the gate");
        assert_eq!(table.len(), 1);
        // a relist with the same content changes nothing
        assert!(!st.step(&mut table, Change::Init, &status));
        assert!(!st.step(&mut table, Change::InitApply(ns("a", "1")), &status));
        assert!(!st.step(&mut table, Change::InitDone, &status));
        // a relist that lost an object and changed another
        st.step(&mut table, Change::Init, &status);
        st.step(&mut table, Change::InitApply(ns("b", "2")), &status);
        assert_eq!(table.get("a"), Some(&ns("a", "1")), "the old list stays until the new one is complete");
        assert!(st.step(&mut table, Change::InitDone, &status));
        assert_eq!(table.iter().cloned().collect::<Vec<_>>(), [ns("b", "2")]);
        assert_eq!(status.relists(), 2);
        assert!(!st.step(&mut table, Change::Apply(ns("b", "2")), &status));
        assert!(st.step(&mut table, Change::Delete("b".into()), &status));
    }

    #[test]
    fn the_calls_are_list_and_watch_of_the_four_kinds_creating_events_and_the_node_network() {
        let calls: Vec<String> = api_calls().iter().map(|c| format!("{}/{}:{}", c.group, c.resource, c.verb)).collect();
        assert_eq!(
            calls,
            [
                "/namespaces:list",
                "/namespaces:watch",
                "/nodes:list",
                "/nodes:watch",
                "/pods:get",
                "/pods:list",
                "/pods:watch",
                "cilium.io/ciliumegressgatewaypolicies:list",
                "cilium.io/ciliumegressgatewaypolicies:watch",
                "egret.dev/nodenetworks:create",
                "egret.dev/nodenetworks:get",
                "egret.dev/nodenetworks:update",
                "events.k8s.io/events:create",
            ]
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_bound_and_resets() {
        use kube::runtime::utils::Backoff as _;
        let ms = Duration::from_millis;
        let mut b = Backoff { min: ms(100), max: ms(500), next: ms(100) };
        let v: Vec<Duration> = b.by_ref().take(5).collect();
        assert_eq!(v, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.next(), Some(ms(100)));
    }
}
