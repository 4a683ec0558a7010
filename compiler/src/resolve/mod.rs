//! Resolution: an AST [`Bundle`] and [`Options`] → a resolved [`World`].
//!
//! The world is SEMANTICS.md's "Inputs", "Endpoints" and "Gateways" made
//! concrete: nodes (labels, first IPv4 InternalIP, Ready), namespaces (labels,
//! always with `kubernetes.io/metadata.name`), endpoints (pods with an IP, not
//! hostNetwork, phase Pending/Running), workload templates, cluster-internal
//! ranges, and per policy: its selection (egret's reading and Cilium's), its
//! resolved gateways and the egress slots they lead to.
//!
//! # Contract
//! - Total: any bundle resolves, never panics. Problems with snapshot objects
//!   are diagnostics in [`World::diagnostics`] with a documented fallback
//!   (below). Policy field errors (`egret_lang::validate`) are collected in
//!   [`World::validation_errors`]; resolution still proceeds (a selector item
//!   with neither pod- nor namespaceSelector selects nothing), and the
//!   planner (so the compile driver) refuses such a world.
//! - Deterministic: ids are assigned in name order (nodes, policies) or
//!   `namespace/name` order (endpoints, at construction); everything that
//!   reaches output is sorted.
//! - Incremental: [`World::add_pod`] / [`World::remove_pod`] update the
//!   per-policy selection index for one pod (O(policies)), so one node can be
//!   recompiled without re-resolving the cluster. Policies, nodes and
//!   namespaces are fixed for the life of a world.
//!
//! # Fallbacks for bad snapshots
//! - Duplicate names (nodes, namespaces, pods, NodeNetworks, policies): the
//!   first in input order is used; `egret_lang::validate::bundle` reports E0114.
//! - A pod whose `spec.nodeName` names no Node (W0308): an endpoint on no known
//!   node. Its node labels are empty, no plan hosts it, but its decisions are
//!   computed and gateways accept its traffic.
//! - A pod in a namespace with no Namespace object (W0308): the namespace is
//!   taken to exist with the one label the API server always sets,
//!   `kubernetes.io/metadata.name`.
//! - A NodeNetwork for no known node (W0308): ignored.
//! - Two endpoints claiming the same IP (W0309): the first by
//!   `namespace/name` keeps it; the other endpoint loses that IP.
//! - A pod without IP, hostNetwork, or in phase Succeeded/Failed: not an
//!   endpoint (SEMANTICS.md, "Endpoints"); no diagnostic.
//!
//! # Layout
//! This module holds the world's objects and accessors; by responsibility:
//! `build` ([`World::new`], step by step), `endpoints` (endpoints and the
//! incremental updates), `selection` (selectors, the label index),
//! `gateways` (gateway resolution, rendezvous failover), `egress` (egress
//! IPs, interfaces, slots, floating IPs), `internal` (cluster-internal
//! ranges). Their public items are re-exported here.
//!
//! # Byte encoding of the rendezvous weight
//! SEMANTICS.md's failover weight `fnv1a_32(uid ‖ 0x00 ‖ gwIP)` is computed
//! over the identity's UTF-8 bytes, one zero byte, then the gateway IPv4
//! address as its 4 bytes in network order (`192.0.2.1` → `c0 00 02 01`).
//! See [`rendezvous_weight`].

mod build;
mod egress;
mod endpoints;
mod gateways;
mod internal;
mod selection;

pub use egress::*;
pub use endpoints::*;
pub use gateways::*;
pub use internal::*;
pub use selection::*;

use crate::ir::prefix::{self, Range};
use egret_lang::ast::{
    Bundle, GatewaySpec, Interface, LabelSelector, Labels, NodeNetwork, Operator, Pod, Policy, Requirement,
    SelectorItem, WorkloadKind,
};
use egret_lang::codes;
use egret_lang::diag::Diagnostic;
use egret_lang::net::{Cidr, Family};
use egret_lang::source::Span;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// The pseudo-label carrying a pod's namespace name (Cilium convention).
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// The label the API server sets on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What resolution needs besides the bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Service CIDRs (`--service-cidr`): cluster-internal like pod CIDRs and node IPs.
    pub service_cidrs: Vec<Cidr>,
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u32);
        impl $name {
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

id_type!(
    /// A node, by position in name order.
    NodeId
);
id_type!(
    /// An endpoint; stable for the life of the world (removed ones are not reused).
    EndpointId
);
id_type!(
    /// A policy, by position in name order.
    PolicyId
);
id_type!(
    /// A workload template.
    WorkloadId
);

/// A resolved node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: NodeId,
    pub name: String,
    pub span: Span,
    pub labels: Labels,
    /// The node's underlay address, its address as a gateway and tunnel
    /// endpoint: the first IPv4 InternalIP, else the first IPv6 one
    /// (SEMANTICS.md, "Nodes"; [`build::underlay_address`]).
    pub ip: Option<IpAddr>,
    pub internal_ips: Vec<IpAddr>,
    pub pod_cidrs: Vec<Cidr>,
    /// `Ready` condition (a snapshot without conditions counts as Ready).
    pub ready: bool,
    /// Node facts from a NodeNetwork object, when the snapshot has one.
    pub network: Option<NodeNetwork>,
}

/// A resolved namespace.
#[derive(Debug, Clone)]
pub struct NamespaceInfo {
    pub name: String,
    /// Labels, always including `kubernetes.io/metadata.name`.
    pub labels: Labels,
    /// Whether the snapshot had the Namespace object (else it is implied by a pod).
    pub in_snapshot: bool,
}

/// A workload template (Deployment, StatefulSet, …).
#[derive(Debug, Clone)]
pub struct WorkloadInfo {
    pub id: WorkloadId,
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    /// Template labels plus the pseudo-label `io.kubernetes.pod.namespace`.
    pub labels: Labels,
    pub span: Span,
}

impl WorkloadInfo {
    /// `Kind namespace/name`.
    pub fn display(&self) -> String {
        format!("{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// A policy with its normalized fields.
#[derive(Debug, Clone)]
pub struct PolicyInfo {
    pub id: PolicyId,
    pub name: String,
    pub ast: Policy,
    /// `destinationCIDRs` with host bits cleared, in written order.
    pub destinations: Vec<Cidr>,
    /// `excludedCIDRs` with host bits cleared, in written order.
    pub excluded: Vec<Cidr>,
    /// Resolved gateways, sorted by gateway IP (then entry index).
    pub gateways: Vec<ResolvedGateway>,
    /// For each of `gateways`, its slot's index in [`World::slots`].
    gateway_slots: Vec<usize>,
    /// Whether `D(P)` (destinations minus exclusions) is non-empty, per family (IPv4, IPv6).
    captures: [bool; 2],
}

impl PolicyInfo {
    /// Whether the policy has destinationCIDRs of a family.
    pub fn has_family(&self, family: Family) -> bool {
        self.destinations.iter().any(|c| c.family() == family)
    }
    /// Whether `D(P)` has any address of a family (an exclusion may remove all).
    pub fn captures_family(&self, family: Family) -> bool {
        self.captures[usize::from(family == Family::V6)]
    }
}

/// The resolved cluster and policies.
#[derive(Debug, Clone)]
pub struct World {
    generation: u64,
    options: Options,
    nodes: Vec<NodeInfo>,
    node_by_name: BTreeMap<String, NodeId>,
    node_by_ip: HashMap<IpAddr, NodeId>,
    /// Per node, the (policy, index into its gateways) that resolve to it.
    gateway_entries: Vec<Vec<(PolicyId, usize)>>,
    namespaces: BTreeMap<String, NamespaceInfo>,
    endpoints: Vec<Endpoint>,
    endpoint_by_key: BTreeMap<String, EndpointId>,
    endpoint_by_ip: HashMap<IpAddr, EndpointId>,
    by_node: Vec<BTreeSet<EndpointId>>,
    unplaced: BTreeSet<EndpointId>,
    by_namespace: HashMap<String, BTreeSet<EndpointId>>,
    label_index: HashMap<String, HashMap<String, BTreeSet<EndpointId>>>,
    workloads: Vec<WorkloadInfo>,
    policies: Vec<PolicyInfo>,
    policy_by_name: BTreeMap<String, PolicyId>,
    slots: Vec<EgressSlot>,
    slot_index: BTreeMap<(NodeId, EgressSpec), usize>,
    /// Floating egress IPs whose claims are invalid (E0310, E0311): their
    /// gateway entries resolve to no node (fail closed).
    refused_floating: BTreeSet<Ipv4Addr>,
    internal: InternalRanges,
    selection: Vec<BTreeSet<EndpointId>>,
    cilium_selection: Vec<BTreeSet<EndpointId>>,
    selected_by: Vec<Vec<PolicyId>>,
    /// Pods of the snapshot that are not endpoints, with why.
    non_endpoints: BTreeMap<String, &'static str>,
    /// Whether construction gave an IP claimed by two endpoints to one of
    /// them (so removing that one would hand the IP to the other).
    contested_ips: bool,
    /// Gateways of nodes that are not Ready: the snapshot's liveness.
    ready_health: crate::ir::Health,
    diagnostics: Vec<Diagnostic>,
    validation_errors: Vec<Diagnostic>,
}

impl World {
    // ---- accessors ----

    /// Identifies this world and its incremental updates (for caches).
    pub fn generation(&self) -> u64 {
        self.generation
    }
    pub fn options(&self) -> &Options {
        &self.options
    }
    /// Problems with snapshot objects and how they were handled.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }
    /// Error-level field validation diagnostics of the policies (and duplicate names).
    pub fn validation_errors(&self) -> &[Diagnostic] {
        &self.validation_errors
    }
    /// Nodes in name order.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }
    pub fn node(&self, id: NodeId) -> &NodeInfo {
        &self.nodes[id.index()]
    }
    pub fn node_by_name(&self, name: &str) -> Option<&NodeInfo> {
        self.node_by_name.get(name).map(|id| &self.nodes[id.index()])
    }
    /// The node whose underlay address is `ip` (the first by name if several).
    pub fn node_with_ip(&self, ip: IpAddr) -> Option<&NodeInfo> {
        self.node_by_ip.get(&ip).map(|id| &self.nodes[id.index()])
    }
    /// The (policy, index into its resolved gateways) pairs that resolve to a node.
    pub fn gateway_entries_on(&self, node: NodeId) -> &[(PolicyId, usize)] {
        self.gateway_entries.get(node.index()).map_or(&[], Vec::as_slice)
    }
    pub fn namespaces(&self) -> impl Iterator<Item = &NamespaceInfo> {
        self.namespaces.values()
    }
    pub fn namespace(&self, name: &str) -> Option<&NamespaceInfo> {
        self.namespaces.get(name)
    }
    /// Live endpoints, in id order.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.alive)
    }
    pub fn endpoint(&self, id: EndpointId) -> &Endpoint {
        &self.endpoints[id.index()]
    }
    /// Whether two endpoints claimed one IP at construction (W0309): then
    /// [`World::remove_pod`] of the one that kept it does not give it to
    /// the other, as a new world would; re-resolve instead.
    pub fn has_contested_ips(&self) -> bool {
        self.contested_ips
    }
    /// Why a pod of the snapshot is not an endpoint (`None` for endpoints and unknown pods).
    pub fn non_endpoint_reason(&self, key: &str) -> Option<&'static str> {
        self.non_endpoints.get(key).copied()
    }
    /// An endpoint that has not been removed.
    pub fn live_endpoint(&self, id: EndpointId) -> Option<&Endpoint> {
        self.endpoints.get(id.index()).filter(|e| e.alive)
    }
    pub fn endpoint_by_key(&self, key: &str) -> Option<&Endpoint> {
        self.endpoint_by_key.get(key).map(|id| &self.endpoints[id.index()])
    }
    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.endpoint_by_ip.get(&ip).map(|id| &self.endpoints[id.index()])
    }
    /// Endpoints hosted by a node, in id order.
    pub fn endpoints_on(&self, node: NodeId) -> impl Iterator<Item = &Endpoint> {
        self.by_node.get(node.index()).into_iter().flatten().map(|id| &self.endpoints[id.index()])
    }
    /// Endpoints whose node is missing or unknown.
    pub fn unplaced_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.unplaced.iter().map(|id| &self.endpoints[id.index()])
    }
    pub fn workloads(&self) -> &[WorkloadInfo] {
        &self.workloads
    }
    pub fn workload(&self, id: WorkloadId) -> &WorkloadInfo {
        &self.workloads[id.index()]
    }
    /// Policies in name order.
    pub fn policies(&self) -> &[PolicyInfo] {
        &self.policies
    }
    pub fn policy(&self, id: PolicyId) -> &PolicyInfo {
        &self.policies[id.index()]
    }
    pub fn policy_by_name(&self, name: &str) -> Option<&PolicyInfo> {
        self.policy_by_name.get(name).map(|id| &self.policies[id.index()])
    }
    /// All egress slots, sorted by (gateway node name, spec).
    /// Whether `node` serves an egress slot (a gateway, or a candidate of a
    /// floating egress IP): only then does its plan read other nodes' pods
    /// (their addresses are its allowed sources).
    pub fn serves_slots(&self, node: &str) -> bool {
        self.slots.iter().any(|s| s.gateway_name == node)
    }
    pub fn slots(&self) -> &[EgressSlot] {
        &self.slots
    }
    pub fn slot_of(&self, node: NodeId, spec: &EgressSpec) -> Option<&EgressSlot> {
        self.slot_index.get(&(node, spec.clone())).map(|i| &self.slots[*i])
    }
    pub fn slot_by_id(&self, id: SlotId) -> Option<&EgressSlot> {
        self.slots.iter().find(|s| s.id == id)
    }
    /// Cluster-internal ranges.
    pub fn internal_ranges(&self) -> &InternalRanges {
        &self.internal
    }
    /// The snapshot's liveness: every gateway whose node is not Ready is
    /// down (what `egret explain`, `diff` and the Cilium view assume; the
    /// agent's probes replace it on a node).
    pub fn ready_health(&self) -> &crate::ir::Health {
        &self.ready_health
    }

    pub fn is_internal(&self, ip: IpAddr) -> bool {
        self.internal.contains(ip)
    }

    /// Endpoints a policy of this world selects (egret's reading), in id order.
    pub fn selection(&self, p: PolicyId) -> &BTreeSet<EndpointId> {
        &self.selection[p.index()]
    }
    /// Endpoints a policy of this world selects in Cilium's reading.
    pub fn cilium_selection(&self, p: PolicyId) -> &BTreeSet<EndpointId> {
        &self.cilium_selection[p.index()]
    }
    /// Policies selecting an endpoint (egret's reading), in name order.
    pub fn selecting(&self, e: EndpointId) -> &[PolicyId] {
        self.selected_by.get(e.index()).map_or(&[], Vec::as_slice)
    }
}
