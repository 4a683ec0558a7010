//! Kubernetes Events about policies: what a node's agent says about each
//! policy, which agent says it, and how it reaches the API server.
//!
//! Contract:
//! - **What** ([`PolicyEvent::of`]): one Event per policy outcome, from the
//!   node's compilation ([`crate::view::PolicyReport`]): `Normal/Compiled`
//!   (selects N endpoints — cluster-wide from a gateway, which watches
//!   every pod; "on node W" from a worker, which watches its own:
//!   [`crate::view::PodScope`] — gateway X with egress IP Y), or a `Warning`:
//!   `Rejected` (its errors, with codes), `NoGateway` (no gateway node
//!   matches: its traffic is dropped), `EgressIPUnavailable` (a gateway on
//!   this node cannot use the egress address: not on any interface, or the
//!   interface is missing), `GatewayNotReady` (a gateway node is not Ready;
//!   its endpoints fail over).
//! - **Who** ([`events_for`]): not every agent. A policy's cluster-wide
//!   outcome is reported by one node, its *reporter*: rendezvous hashing of
//!   (policy, node) over the Ready nodes ([`reporter`]), so every agent
//!   agrees from the same view without talking to the others, the work is
//!   spread across nodes, and a reporter that goes NotReady is replaced.
//!   Each gateway node of the policy also reports, since only it knows
//!   whether the egress address is on its interfaces. So a policy has at
//!   most 1 + (gateway nodes) reporting agents, not one per node.
//! - **When** ([`EventLog`]): an agent publishes a policy's Event only
//!   when its `(type, reason, note)` differs from what it last published
//!   for that policy (by uid), so a steady cluster creates no Events.
//! - **How** ([`Publisher`]): `events.k8s.io/v1` Events, created (never
//!   patched) in `default` (the namespace of Events about cluster-scoped
//!   objects, where `kubectl describe` finds them), `regarding` the policy
//!   (kind, name, uid),
//!   `reportingController` [`REPORTING_CONTROLLER`], `reportingInstance`
//!   the node. Publishing is best-effort and never blocks a reconcile: a
//!   bounded queue ([`QUEUE`]; the oldest is dropped when full), one retry
//!   after a failure, counted in [`EventStats`].

use crate::view::{ClusterView, PolicyOutcome, PolicyReport, ViewPlan};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// `reportingController` of egret's Events.
pub const REPORTING_CONTROLLER: &str = "egret.dev/agent";
/// The `action` of egret's Events.
pub const ACTION: &str = "Compile";
/// Namespace of Events about cluster-scoped policies.
pub const CLUSTER_EVENTS_NAMESPACE: &str = "default";
/// Events waiting to be published at most; older ones are dropped.
pub const QUEUE: usize = 1024;
/// Longest note (the API server refuses notes over 1 kB).
const NOTE_MAX: usize = 1000;

/// One Event about one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEvent {
    /// The policy's name (policies are cluster-scoped).
    pub policy: String,
    /// Its uid.
    pub uid: String,
    /// `Warning` (else `Normal`).
    pub warning: bool,
    /// `Compiled`, `Rejected`, `NoGateway`, `EgressIPUnavailable`, `GatewayNotReady`.
    pub reason: &'static str,
    /// For people.
    pub note: String,
}

impl PolicyEvent {
    /// The Event for `report` as compiled on `node`.
    pub fn of(report: &PolicyReport, node: &str) -> PolicyEvent {
        let (warning, reason) = match &report.outcome {
            PolicyOutcome::Rejected => (true, "Rejected"),
            PolicyOutcome::Compiled { gateways, .. } if gateways.is_empty() => (true, "NoGateway"),
            PolicyOutcome::Compiled { gateways, .. }
                if gateways.iter().any(|g| g.node == node && !g.unavailable.is_empty()) =>
            {
                (true, "EgressIPUnavailable")
            }
            PolicyOutcome::Compiled { gateways, .. } if gateways.iter().any(|g| !g.healthy) => {
                (true, "GatewayNotReady")
            }
            PolicyOutcome::Compiled { .. } => (false, "Compiled"),
        };
        let mut note = report.summary();
        if let PolicyOutcome::Compiled { gateways, .. } = &report.outcome {
            for g in gateways.iter().filter(|g| g.node == node) {
                for u in &g.unavailable {
                    note.push_str(&format!("; on gateway {}: no egress {u}", g.node));
                }
            }
        }
        PolicyEvent { policy: report.name.clone(), uid: report.uid.clone(), warning, reason, note: truncated(note) }
    }

    /// `Warning` or `Normal`.
    pub fn type_(&self) -> &'static str {
        if self.warning { "Warning" } else { "Normal" }
    }

    /// The `events.k8s.io/v1` Event `node`'s agent creates, named uniquely
    /// by `stamp` (nanoseconds since the epoch).
    pub fn to_event(&self, node: &str, stamp: u128) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{node}.{stamp:x}", self.policy)),
                namespace: Some(CLUSTER_EVENTS_NAMESPACE.to_string()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_nanosecond(stamp as i128)
                    .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
            )),
            action: Some(ACTION.to_string()),
            reason: Some(self.reason.to_string()),
            note: Some(self.note.clone()),
            type_: Some(self.type_().to_string()),
            regarding: Some(ObjectReference {
                api_version: Some(format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION)),
                kind: Some(crate::crd::KIND.to_string()),
                name: Some(self.policy.clone()),
                uid: Some(self.uid.clone()).filter(|u| !u.is_empty()),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
            reporting_instance: Some(format!("{REPORTING_CONTROLLER}-{node}")),
            ..Event::default()
        }
    }
}

/// An Event about a failover, created by the agent that acted or saw it:
/// a floating IP's Lease changing hands ([`Regarding::Lease`]: reasons
/// `FloatingIPAcquired`, `FloatingIPTakeover` — taken from a holder this
/// node's probes saw down —, `FloatingIPLost`), or a floating IP's Lease
/// that is not one egret could have written (`FloatingIPLeaseInvalid`); or
/// a gateway going down or up as its policies' reporter probes it
/// ([`Regarding::Node`], [`gateway_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverEvent {
    /// What it is about.
    pub regarding: Regarding,
    /// `Warning` (else `Normal`).
    pub warning: bool,
    /// The reason (above).
    pub reason: &'static str,
    /// For people.
    pub note: String,
}

/// The object a [`FailoverEvent`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regarding {
    /// A floating IP's `coordination.k8s.io/v1` Lease.
    Lease {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A node (a gateway).
    Node {
        /// Its name.
        name: String,
    },
}

impl FailoverEvent {
    /// The `events.k8s.io/v1` Event `node`'s agent creates, named uniquely
    /// by `stamp` (nanoseconds since the epoch): in the Lease's namespace,
    /// or in [`CLUSTER_EVENTS_NAMESPACE`] for a node.
    pub fn to_event(&self, node: &str, stamp: u128) -> Event {
        let (namespace, name, reference) = match &self.regarding {
            Regarding::Lease { namespace, name } => (
                namespace.clone(),
                name.clone(),
                ObjectReference {
                    api_version: Some("coordination.k8s.io/v1".to_string()),
                    kind: Some("Lease".to_string()),
                    namespace: Some(namespace.clone()),
                    name: Some(name.clone()),
                    ..ObjectReference::default()
                },
            ),
            Regarding::Node { name } => (
                CLUSTER_EVENTS_NAMESPACE.to_string(),
                name.clone(),
                ObjectReference {
                    api_version: Some("v1".to_string()),
                    kind: Some("Node".to_string()),
                    name: Some(name.clone()),
                    ..ObjectReference::default()
                },
            ),
        };
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{node}.{stamp:x}")),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(
                k8s_openapi::jiff::Timestamp::from_nanosecond(stamp as i128)
                    .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
            )),
            action: Some(FAILOVER_ACTION.to_string()),
            reason: Some(self.reason.to_string()),
            note: Some(truncated(self.note.clone())),
            type_: Some(if self.warning { "Warning" } else { "Normal" }.to_string()),
            regarding: Some(reference),
            reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
            reporting_instance: Some(format!("{REPORTING_CONTROLLER}-{node}")),
            ..Event::default()
        }
    }
}

/// The `action` of failover Events.
pub const FAILOVER_ACTION: &str = "Failover";

/// What the publisher's queue holds.
#[derive(Debug, Clone)]
enum Queued {
    Policy(PolicyEvent),
    Failover(FailoverEvent),
}

impl Queued {
    /// What the Event is about, for a log line.
    fn about(&self) -> String {
        match self {
            Queued::Policy(p) => format!("policy {}", p.policy),
            Queued::Failover(FailoverEvent { regarding: Regarding::Lease { name, .. }, .. }) => format!("lease {name}"),
            Queued::Failover(FailoverEvent { regarding: Regarding::Node { name }, .. }) => format!("node {name}"),
        }
    }
}

/// `note` cut to [`NOTE_MAX`] bytes (on a character boundary, with `...`).
fn truncated(mut note: String) -> String {
    if note.len() > NOTE_MAX {
        let mut cut = NOTE_MAX - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}

/// FNV-1a over `policy` and a zero byte: the state [`weight`] continues
/// from, computed once per policy.
fn policy_state(policy: &str) -> u64 {
    policy.bytes().chain([0]).fold(0xcbf2_9ce4_8422_2325, fnv_step)
}

fn fnv_step(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
}

/// The rendezvous weight: FNV-1a over `policy`, a zero byte and `node`
/// (continuing `policy_state(policy)`).
fn weight(state: u64, node: &str) -> u64 {
    let mut h = node.bytes().fold(state, fnv_step);
    // finalise (splitmix64's mixer) so nearby names spread
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The nodes that may report: the Ready ones, or every node if none is.
fn candidates(view: &ClusterView) -> Vec<&str> {
    let ready: Vec<&str> =
        view.nodes.iter().filter(|n| n.ready.as_deref() == Some("True")).map(|n| n.name.as_str()).collect();
    if ready.is_empty() { view.nodes.iter().map(|n| n.name.as_str()).collect() } else { ready }
}

/// The candidate of highest weight for `policy` (ties by name).
fn pick<'a>(candidates: &[&'a str], policy: &str) -> Option<&'a str> {
    let state = policy_state(policy);
    candidates.iter().map(|n| (weight(state, n), *n)).max().map(|(_, n)| n)
}

/// The node that reports `policy`'s cluster-wide outcome: the Ready node
/// of highest rendezvous weight (every node if none is Ready; ties by
/// name); `None` in a cluster without nodes.
pub fn reporter<'a>(view: &'a ClusterView, policy: &str) -> Option<&'a str> {
    pick(&candidates(view), policy)
}

/// The Events `node`'s agent publishes from its compilation `c` of `view`:
/// those of policies it reports (see the module doc), in name order.
pub fn events_for(view: &ClusterView, c: &ViewPlan, node: &str) -> Vec<PolicyEvent> {
    Reporters::default().events_for(view, c, node)
}

/// [`events_for`] across reconciles: each policy's reporter is remembered
/// while the candidate nodes stay the same (at 5,000 nodes and 1,000
/// policies, hashing every pair took ~70 ms a reconcile).
#[derive(Debug, Default)]
pub struct Reporters {
    node: String,
    candidates: Vec<String>,
    /// Per policy name: whether `node` reports it.
    here: HashMap<String, bool>,
}

impl Reporters {
    /// The Events `node` publishes from `c` of `view` (see [`events_for`]).
    pub fn events_for(&mut self, view: &ClusterView, c: &ViewPlan, node: &str) -> Vec<PolicyEvent> {
        let candidates = candidates(view);
        if self.node != node || self.candidates.iter().map(String::as_str).ne(candidates.iter().copied()) {
            self.node = node.to_string();
            self.candidates = candidates.iter().map(|n| (*n).to_string()).collect();
            self.here.clear();
        }
        // only the policies there are now are remembered
        let mut before = std::mem::take(&mut self.here);
        let mut out = Vec::new();
        for r in c.policies.values() {
            let here = before.remove(&r.name).unwrap_or_else(|| pick(&candidates, &r.name) == Some(node));
            self.here.insert(r.name.clone(), here);
            let gateway_here = match &r.outcome {
                PolicyOutcome::Compiled { gateways, .. } => gateways.iter().any(|g| g.node == node),
                PolicyOutcome::Rejected => false,
            };
            if gateway_here || here {
                out.push(PolicyEvent::of(r, node));
            }
        }
        out
    }
}

impl Reporters {
    /// The gateways whose failovers this node announces: for each policy
    /// with two or more gateway nodes (so losing one is a failover), each
    /// gateway is watched by one Ready node other than itself — rendezvous
    /// over the candidates [`Reporters::events_for`] last used, less the
    /// gateway, keyed by policy and gateway — so every failover has one
    /// live reporter, not one per node. Per gateway underlay address: its node and the
    /// policies this node watches it for. The node probes them and publishes
    /// an Event when one goes down or comes back ([`gateway_event`]).
    pub fn watched_gateways(&self, c: &ViewPlan) -> BTreeMap<std::net::IpAddr, (String, Vec<String>)> {
        let mut out: BTreeMap<std::net::IpAddr, (String, Vec<String>)> = BTreeMap::new();
        for r in c.policies.values() {
            let PolicyOutcome::Compiled { gateways, .. } = &r.outcome else { continue };
            let nodes: std::collections::BTreeSet<&str> = gateways.iter().map(|g| g.node.as_str()).collect();
            if nodes.len() < 2 {
                continue;
            }
            for g in gateways {
                let others: Vec<&str> = self.candidates.iter().map(String::as_str).filter(|n| *n != g.node).collect();
                if pick(&others, &format!("{}\u{0}{}", r.name, g.node)) == Some(self.node.as_str()) {
                    out.entry(g.ip).or_insert_with(|| (g.node.clone(), Vec::new())).1.push(r.name.clone());
                }
            }
        }
        out
    }
}

/// The Event a gateway's watcher ([`Reporters::watched_gateways`]) publishes when its probes see the gateway
/// `node` (`ip`) of `policies` go down (`GatewayDown`, a Warning: their
/// endpoints on every node fail over to the next live gateway of their
/// order) or come back (`GatewayUp`: they return to it).
pub fn gateway_event(node: &str, ip: std::net::IpAddr, policies: &[String], down: bool) -> FailoverEvent {
    let list = policies.join(", ");
    let (reason, note) = if down {
        (
            "GatewayDown",
            format!(
                "gateway {node} ({ip}) stopped answering probes; the endpoints of {list} fail over to the next live gateway of their order"
            ),
        )
    } else {
        (
            "GatewayUp",
            format!(
                "gateway {node} ({ip}) answers probes again (after the hold-down); the endpoints of {list} that fail over from it return"
            ),
        )
    };
    FailoverEvent { regarding: Regarding::Node { name: node.to_string() }, warning: down, reason, note }
}

/// What an agent last published per policy, so it publishes only changes.
#[derive(Debug, Default)]
pub struct EventLog {
    last: BTreeMap<String, PolicyEvent>,
}

impl EventLog {
    /// The events of `now` that differ from the last published for their
    /// policy (by uid); remembers them, and forgets policies not in `now`,
    /// so a policy this node stops reporting (deleted, or reported by
    /// another node now) is published again when it comes back.
    pub fn fresh(&mut self, now: Vec<PolicyEvent>) -> Vec<PolicyEvent> {
        let keep: std::collections::BTreeSet<String> = now.iter().map(|e| e.uid.clone()).collect();
        self.last.retain(|uid, _| keep.contains(uid));
        now.into_iter()
            .filter(|e| {
                let same = self.last.get(&e.uid) == Some(e);
                if !same {
                    self.last.insert(e.uid.clone(), e.clone());
                }
                !same
            })
            .collect()
    }
}

/// Publishing counters (for `/metrics`).
#[derive(Debug, Default)]
pub struct EventStats {
    created: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl EventStats {
    /// Events the API server accepted.
    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Acquire)
    }
    /// Events given up after a retry.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Acquire)
    }
    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Acquire)
    }
}

#[derive(Debug, Default)]
struct Queue {
    items: Mutex<VecDeque<Queued>>,
    ready: Notify,
}

/// The publishing side: [`Publisher::queue`] from the reconcile (never
/// blocks), [`Publisher::run`] on the agent's runtime.
#[derive(Clone)]
pub struct Publisher {
    client: kube::Client,
    node: String,
    queue: Arc<Queue>,
    stats: Arc<EventStats>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("node", &self.node).field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl Publisher {
    /// Publishes as `node`'s agent through `client`.
    pub fn new(client: kube::Client, node: &str) -> Publisher {
        Publisher { client, node: node.to_string(), queue: Arc::default(), stats: Arc::default() }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<EventStats> {
        Arc::clone(&self.stats)
    }

    /// Queues events for publishing; drops the oldest beyond [`QUEUE`].
    pub fn queue(&self, events: impl IntoIterator<Item = PolicyEvent>) {
        self.enqueue(events.into_iter().map(Queued::Policy));
    }

    /// Queues failover Events, as [`Publisher::queue`].
    pub fn queue_failover(&self, events: impl IntoIterator<Item = FailoverEvent>) {
        self.enqueue(events.into_iter().map(Queued::Failover));
    }

    fn enqueue(&self, events: impl Iterator<Item = Queued>) {
        let mut q = self.queue.items.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in events {
            if q.len() == QUEUE {
                q.pop_front();
                self.stats.dropped.fetch_add(1, Ordering::AcqRel);
            }
            q.push_back(e);
        }
        drop(q);
        self.queue.ready.notify_one();
    }

    /// Creates one Event; `Err` with the API's error.
    async fn create(&self, e: &Queued) -> Result<(), kube::Error> {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let event = match e {
            Queued::Policy(p) => p.to_event(&self.node, stamp),
            Queued::Failover(f) => f.to_event(&self.node, stamp),
        };
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let api: kube::Api<Event> = kube::Api::namespaced(self.client.clone(), &namespace);
        api.create(&kube::api::PostParams::default(), &event).await.map(|_| ())
    }

    /// Publishes queued events, in order, forever.
    pub async fn run(self) {
        loop {
            let next = self.queue.items.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop_front();
            let Some(e) = next else {
                self.queue.ready.notified().await;
                continue;
            };
            let mut result = self.create(&e).await;
            if result.is_err() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                result = self.create(&e).await;
            }
            match result {
                Ok(()) => self.stats.created.fetch_add(1, Ordering::AcqRel),
                Err(err) => {
                    tracing::warn!(about = %e.about(), error = %err, "cannot create an Event");
                    self.stats.failed.fetch_add(1, Ordering::AcqRel)
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{GatewayReport, NodeFacts};

    fn report(outcome: PolicyOutcome) -> PolicyReport {
        PolicyReport {
            name: "p".into(),
            uid: "uid-p".into(),
            outcome,
            diagnostics: Vec::new(),
            counted: crate::view::PodScope::All,
        }
    }

    fn gw(node: &str, healthy: bool, unavailable: &[&str]) -> GatewayReport {
        GatewayReport {
            node: node.into(),
            ip: "192.0.2.13".parse().expect("ip"),
            healthy,
            egress_v4: Some("198.51.100.100".into()),
            egress_v6: None,
            interface: None,
            unavailable: unavailable.iter().map(|u| (*u).to_string()).collect(),
        }
    }

    #[test]
    fn reasons_follow_the_outcome() {
        let cases = [
            (PolicyOutcome::Rejected, "worker-1", (true, "Rejected")),
            (PolicyOutcome::Compiled { endpoints: 1, gateways: vec![] }, "worker-1", (true, "NoGateway")),
            (
                PolicyOutcome::Compiled { endpoints: 1, gateways: vec![gw("gw-1", true, &["IPv4: x"])] },
                "gw-1",
                (true, "EgressIPUnavailable"),
            ),
            // only the gateway itself can tell; another node says compiled
            (
                PolicyOutcome::Compiled { endpoints: 1, gateways: vec![gw("gw-1", true, &["IPv4: x"])] },
                "worker-1",
                (false, "Compiled"),
            ),
            (
                PolicyOutcome::Compiled { endpoints: 1, gateways: vec![gw("gw-1", false, &[])] },
                "worker-1",
                (true, "GatewayNotReady"),
            ),
            (
                PolicyOutcome::Compiled { endpoints: 2, gateways: vec![gw("gw-1", true, &[])] },
                "gw-1",
                (false, "Compiled"),
            ),
        ];
        for (outcome, node, want) in cases {
            let e = PolicyEvent::of(&report(outcome.clone()), node);
            assert_eq!((e.warning, e.reason), want, "{outcome:?} on {node}");
        }
        let e = PolicyEvent::of(
            &report(PolicyOutcome::Compiled { endpoints: 1, gateways: vec![gw("gw-1", true, &["IPv4: x"])] }),
            "gw-1",
        );
        assert!(e.note.ends_with("; on gateway gw-1: no egress IPv4: x"), "{}", e.note);
    }

    #[test]
    fn a_failover_event_regards_the_lease_or_the_node() {
        let lease = FailoverEvent {
            regarding: Regarding::Lease {
                namespace: "egret-system".into(),
                name: "egret-floating-198-51-100-150".into(),
            },
            warning: true,
            reason: "FloatingIPTakeover",
            note: "x".repeat(2000),
        };
        let ev = serde_json::to_value(lease.to_event("gateway-2", 1_700_000_000_123_456_789)).expect("json");
        assert_eq!(ev["metadata"]["namespace"], "egret-system");
        assert_eq!(ev["metadata"]["name"], "egret-floating-198-51-100-150.gateway-2.17979cfe3d85cd15");
        assert_eq!(ev["regarding"]["kind"], "Lease");
        assert_eq!(ev["regarding"]["namespace"], "egret-system");
        assert_eq!(ev["type"], "Warning");
        assert_eq!(ev["action"], FAILOVER_ACTION);
        assert_eq!(ev["note"].as_str().expect("note").len(), NOTE_MAX, "cut to the API's limit");
        let node = FailoverEvent {
            regarding: Regarding::Node { name: "gateway-1".into() },
            warning: false,
            reason: "GatewayUp",
            note: "up".into(),
        };
        let ev = serde_json::to_value(node.to_event("gateway-2", 1)).expect("json");
        assert_eq!(ev["metadata"]["namespace"], CLUSTER_EVENTS_NAMESPACE);
        assert_eq!(ev["regarding"]["kind"], "Node");
        assert_eq!(ev["regarding"]["apiVersion"], "v1");
        assert_eq!(ev["type"], "Normal");
    }

    #[test]
    fn the_event_is_a_valid_events_k8s_io_v1_event() {
        let e = PolicyEvent::of(&report(PolicyOutcome::Rejected), "worker-1");
        let ev = serde_json::to_value(e.to_event("worker-1", 1_700_000_000_123_456_789)).expect("json");
        assert_eq!(ev["metadata"]["name"], "p.worker-1.17979cfe3d85cd15");
        assert_eq!(ev["metadata"]["namespace"], "default");
        assert_eq!(ev["eventTime"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(ev["regarding"]["kind"], "CiliumEgressGatewayPolicy");
        assert_eq!(ev["regarding"]["apiVersion"], "cilium.io/v2");
        assert_eq!(ev["regarding"]["uid"], "uid-p");
        assert_eq!(ev["reportingInstance"], "egret.dev/agent-worker-1");
        assert_eq!((ev["type"].as_str(), ev["reason"].as_str()), (Some("Warning"), Some("Rejected")));
    }

    #[test]
    fn long_notes_are_cut() {
        // a summary longer than the API allows: many gateways
        let many: Vec<GatewayReport> = (0..80).map(|i| gw(&format!("gateway-node-{i:03}"), true, &[])).collect();
        let e3 = PolicyEvent::of(&report(PolicyOutcome::Compiled { endpoints: 5, gateways: many }), "n");
        assert!(e3.note.len() <= NOTE_MAX && e3.note.ends_with("..."), "{}", e3.note.len());
    }

    fn view(nodes: &[(&str, &str)]) -> ClusterView {
        let mut v = ClusterView::new();
        for (name, ready) in nodes {
            v.nodes.apply(NodeFacts { name: (*name).into(), ready: Some((*ready).into()), ..NodeFacts::default() });
        }
        v
    }

    #[test]
    fn one_ready_node_reports_each_policy_and_the_work_spreads() {
        let names: Vec<String> = (0..20).map(|i| format!("node-{i}")).collect();
        let nodes: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "True")).collect();
        let v = view(&nodes);
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for p in 0..400 {
            let r = reporter(&v, &format!("policy-{p}")).expect("a reporter");
            *per_node.entry(r).or_default() += 1;
        }
        assert_eq!(per_node.len(), 20, "every node reports some policies: {per_node:?}");
        assert!(per_node.values().all(|n| (5..=40).contains(n)), "{per_node:?}");
        // a NotReady reporter is replaced; the others keep theirs
        let before: Vec<&str> = (0..400).map(|p| reporter(&v, &format!("policy-{p}")).expect("r")).collect();
        let down = before[0];
        let nodes2: Vec<(&str, &str)> =
            nodes.iter().map(|(n, r)| (*n, if *n == down { "False" } else { *r })).collect();
        let v2 = view(&nodes2);
        for (p, was) in before.iter().enumerate() {
            let now = reporter(&v2, &format!("policy-{p}")).expect("r");
            if *was == down {
                assert_ne!(now, down);
            } else {
                assert_eq!(now, *was, "policy-{p} moved though its reporter stayed Ready");
            }
        }
        // no Ready node: still someone
        assert!(reporter(&view(&[("a", "False"), ("b", "Unknown")]), "p").is_some());
        assert_eq!(reporter(&ClusterView::new(), "p"), None);
    }

    #[test]
    fn remembered_reporters_give_what_hashing_every_pair_does() {
        let mut v = view(&[("a", "True"), ("b", "True"), ("c", "True"), ("d", "True")]);
        let mut reporters = Reporters::default();
        let mut check = |v: &ClusterView, what: &str| {
            let c = v.plan("a", &egret_compiler::resolve::Options::default(), None);
            for node in ["a", "b", "c", "d", "a"] {
                assert_eq!(reporters.events_for(v, &c, node), events_for(v, &c, node), "{what}, node {node}");
            }
            (0..40).filter(|p| reporter(v, &format!("policy-{p}")) == Some("a")).count()
        };
        for p in 0..40 {
            v.policies.apply(crate::view::PolicyFacts {
                name: format!("policy-{p}"),
                uid: format!("uid-{p}"),
                namespace: None,
                spec: Some(serde_json::json!({"selectors": [{"podSelector": {}}], "destinationCIDRs": ["0.0.0.0/0"]})),
                annotations: std::collections::BTreeMap::new(),
            });
        }
        let before = check(&v, "all Ready");
        assert!(before > 0 && before < 40, "a reports some policies: {before}");
        // a node not Ready, then a policy gone: the remembered reporters follow
        v.nodes.apply(crate::view::NodeFacts { name: "b".into(), ready: Some("False".into()), ..Default::default() });
        check(&v, "b not Ready");
        v.policies.delete("policy-3");
        check(&v, "a policy deleted");
    }

    #[test]
    fn the_log_publishes_changes_only() {
        let mut log = EventLog::default();
        let ev = |reason: &'static str, note: &str| PolicyEvent {
            policy: "p".into(),
            uid: "u".into(),
            warning: false,
            reason,
            note: note.into(),
        };
        assert_eq!(log.fresh(vec![ev("Compiled", "a")]).len(), 1);
        assert_eq!(log.fresh(vec![ev("Compiled", "a")]).len(), 0);
        assert_eq!(log.fresh(vec![ev("Compiled", "b")]).len(), 1);
        assert_eq!(log.fresh(vec![]).len(), 0);
        assert_eq!(log.fresh(vec![ev("Compiled", "b")]).len(), 1, "reported again after a pause");
    }
}
