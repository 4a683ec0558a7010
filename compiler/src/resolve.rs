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
//!   with neither pod- nor namespaceSelector selects nothing), and `compile`
//!   refuses such a world.
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
//! # Byte encoding of the rendezvous weight
//! SEMANTICS.md's failover weight `fnv1a_32(uid ‖ 0x00 ‖ gwIP)` is computed
//! over the identity's UTF-8 bytes, one zero byte, then the gateway IPv4
//! address as its 4 bytes in network order (`192.0.2.1` → `c0 00 02 01`).
//! See [`rendezvous_weight`].

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
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// The pseudo-label carrying a pod's namespace name (Cilium convention).
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// The label the API server sets on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// FNV-1a, 32 bit.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The failover weight of gateway `gw` for an endpoint identity:
/// `fnv1a_32(identity ‖ 0x00 ‖ gw.octets())` (network byte order).
pub fn rendezvous_weight(identity: &str, gw: Ipv4Addr) -> u32 {
    let mut bytes = Vec::with_capacity(identity.len() + 5);
    bytes.extend_from_slice(identity.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&gw.octets());
    fnv1a_32(&bytes)
}

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

/// An egress slot id: the VXLAN VNI a source node puts on packets it
/// redirects, and the key of the gateway's tables. 24 bits, never 0, unique
/// in the cluster, derived from the slot's (gateway node, egress spec) so it
/// does not change when unrelated policies come and go.
///
/// Scheme ([`World::slots`]): a floating egress IP's slot, shared by all its
/// candidates, is `fnv1a_32("floating" ‖ 0x00 ‖ IP as text) & 0xffffff`;
/// any other slot's is `fnv1a_32(node name ‖ 0x00 ‖ spec as text) &
/// 0xffffff`. Floating IPs are numbered first, in IP order, then the other
/// slots in (node name, spec) order; a 0 or taken id moves to the next
/// free one (+1, wrapping in 24 bits). Every node compiles from the same
/// world, so sources and all candidates agree on the id; an id changes only
/// when a colliding slot appears before it in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(pub u32);

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:06x}", self.0)
    }
}

/// A resolved node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: NodeId,
    pub name: String,
    pub span: Span,
    pub labels: Labels,
    /// The first IPv4 InternalIP: the node's address as a gateway and tunnel endpoint.
    pub ip: Option<Ipv4Addr>,
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

/// An endpoint (SEMANTICS.md, "Endpoints").
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: EndpointId,
    pub namespace: String,
    pub name: String,
    /// `namespace/name`.
    pub key: String,
    pub uid: String,
    /// Hashing identity: the uid, or `namespace/name` when the uid is empty.
    pub identity: String,
    /// Its IPs (without any another endpoint claimed first), in the pod's order.
    pub ips: Vec<IpAddr>,
    pub node: Option<NodeId>,
    /// `spec.nodeName` as written (also when it names no known node).
    pub node_name: Option<String>,
    /// Pod labels plus the pseudo-label `io.kubernetes.pod.namespace`.
    pub labels: Labels,
    pub span: Span,
    /// The workload whose template the pod matches, if any (for grouping in `diff`).
    pub workload: Option<WorkloadId>,
    alive: bool,
}

impl Endpoint {
    /// Its first IP of a family.
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| Family::of(ip) == family)
    }
    pub fn has_family(&self, family: Family) -> bool {
        self.ip(family).is_some()
    }
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

/// How a gateway entry obtains its egress IP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EgressSpec {
    /// `egressIP` set.
    EgressIp(IpAddr),
    /// `egressIP` set and floating (an IPv4 address; [`GatewaySpec::floating`]):
    /// every matching node is a candidate to hold it.
    Floating(Ipv4Addr),
    /// `interface` set.
    Interface(String),
    /// Neither: the interface holding the default route.
    DefaultRoute,
}

impl EgressSpec {
    pub fn of(g: &GatewaySpec) -> EgressSpec {
        match (&g.egress_ip, &g.interface) {
            // a floating IPv6 address is refused by validation (E0119)
            (Some(ip), _) => match (g.floating, ip.value) {
                (Some(_), IpAddr::V4(v4)) => EgressSpec::Floating(v4),
                _ => EgressSpec::EgressIp(ip.value),
            },
            (None, Some(i)) => EgressSpec::Interface(i.value.clone()),
            (None, None) => EgressSpec::DefaultRoute,
        }
    }
}

impl fmt::Display for EgressSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressSpec::EgressIp(ip) => write!(f, "egress-ip {ip}"),
            EgressSpec::Floating(ip) => write!(f, "floating-ip {ip}"),
            EgressSpec::Interface(i) => write!(f, "interface {i}"),
            EgressSpec::DefaultRoute => f.write_str("default-route"),
        }
    }
}

/// Why a family has no egress IP on a gateway (the gateway drops that
/// family's traffic, drop reason `no-egress-ip`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoEgressIp {
    /// `egressIP` is on no interface of the node (E0306).
    EgressIpNotOnNode { ip: IpAddr },
    /// The interface is not on the node, by name or altName (E0307).
    InterfaceNotOnNode { interface: String },
    /// The NodeNetwork names no default-route interface.
    NoDefaultRoute,
    /// The interface has no non-link-local address of the family.
    NoAddress { interface: String, family: Family },
}

impl fmt::Display for NoEgressIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoEgressIp::EgressIpNotOnNode { ip } => write!(f, "{ip} is on no interface of the node"),
            NoEgressIp::InterfaceNotOnNode { interface } => write!(f, "interface {interface} is not on the node"),
            NoEgressIp::NoDefaultRoute => f.write_str("the node reports no default-route interface"),
            NoEgressIp::NoAddress { interface, family } => {
                write!(f, "interface {interface} has no non-link-local {} address", family.as_str())
            }
        }
    }
}

/// An egress IP for one family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EgressIp {
    /// Known at compile time.
    Known(IpAddr),
    /// A node fact the loader fills in on the gateway node.
    LateBound { spec: EgressSpec, family: Family },
    /// Cannot be resolved: the gateway drops this family (`no-egress-ip`).
    Unavailable { reason: NoEgressIp },
}

impl EgressIp {
    pub fn known(&self) -> Option<IpAddr> {
        match self {
            EgressIp::Known(ip) => Some(*ip),
            _ => None,
        }
    }
}

impl fmt::Display for EgressIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressIp::Known(ip) => write!(f, "{ip}"),
            EgressIp::LateBound { spec, family } => write!(f, "late({spec}, {})", family.as_str()),
            EgressIp::Unavailable { reason } => write!(f, "none({reason})"),
        }
    }
}

/// The interface a slot sends from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InterfaceBinding {
    Known {
        name: String,
        index: Option<u32>,
    },
    /// Found by the loader on the node.
    LateBound {
        spec: EgressSpec,
    },
    Unavailable {
        reason: NoEgressIp,
    },
}

impl fmt::Display for InterfaceBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceBinding::Known { name, index: Some(i) } => write!(f, "{name}#{i}"),
            InterfaceBinding::Known { name, index: None } => f.write_str(name),
            InterfaceBinding::LateBound { spec } => write!(f, "late({spec})"),
            InterfaceBinding::Unavailable { reason } => write!(f, "none({reason})"),
        }
    }
}

/// An egress slot: one egress configuration on one gateway node. The
/// candidates of a floating egress IP each have one, all with the same id
/// (see [`World::slots`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSlot {
    pub id: SlotId,
    pub gateway: NodeId,
    pub gateway_name: String,
    pub spec: EgressSpec,
    /// Egress IPv4, when some policy using the slot has IPv4 destinations.
    pub v4: Option<EgressIp>,
    /// Egress IPv6, when some policy using the slot has IPv6 destinations.
    pub v6: Option<EgressIp>,
    pub interface: InterfaceBinding,
    /// For the slot of a floating egress IP (spec [`EgressSpec::Floating`]):
    /// the IP and all its candidates.
    pub floating: Option<FloatingSlot>,
}

/// A floating egress IP's shared slot, as each candidate serves it: only
/// the current owner (a run-time fact: `egret_float_owner`, kept by the
/// agents through a Lease per IP) SNATs; the others forward to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FloatingSlot {
    /// The floating egress IP (the slot's egress IPv4 on every candidate).
    pub ip: Ipv4Addr,
    /// Every candidate gateway (this node included): node name and
    /// underlay IPv4 (its first IPv4 InternalIP, the tunnel remote), sorted
    /// by IP.
    pub candidates: Vec<(String, Ipv4Addr)>,
}

impl FloatingSlot {
    /// The candidates other than the node with underlay address `node`
    /// (what that node's `egret_gw_peers` holds for the slot).
    pub fn peers_of(&self, node: Option<Ipv4Addr>) -> impl Iterator<Item = &(String, Ipv4Addr)> {
        self.candidates.iter().filter(move |(_, ip)| Some(*ip) != node)
    }
}

impl EgressSlot {
    pub fn egress(&self, family: Family) -> Option<&EgressIp> {
        match family {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }
    }
}

/// A gateway entry resolved to a node (SEMANTICS.md, "Gateways").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedGateway {
    /// Index of the entry in `Policy::gateways()`.
    pub entry: usize,
    pub node: NodeId,
    pub node_name: String,
    /// The node's first IPv4 InternalIP.
    pub ip: Ipv4Addr,
    pub healthy: bool,
    pub spec: EgressSpec,
}

/// Which of a policy's resolved gateways an endpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// `fnv1a_32(identity) mod N`, when N ≥ 1.
    pub hashed: Option<usize>,
    /// The gateway in effect: `hashed` when healthy, else the healthy one with
    /// the highest rendezvous weight (among the first
    /// [`crate::ir::MAX_FAILOVER`] of the failover order); `None` = no
    /// gateway (drop).
    pub chosen: Option<usize>,
}

impl Assignment {
    pub fn failed_over(&self) -> bool {
        self.hashed.is_some() && self.chosen != self.hashed
    }
}

/// An endpoint's failover order over `gateways` (sorted by IP; indexes into
/// it): the hashed gateway `fnv1a_32(identity) mod N` first, then the others
/// by rendezvous weight, highest first (ties, astronomically rare, to the
/// lower gateway IP, then entry), each node once (its first entry in that
/// order), cut to [`crate::ir::MAX_FAILOVER`] nodes (SEMANTICS.md,
/// "Health"). The gateway in effect is the first live one.
pub fn failover_order(gateways: &[ResolvedGateway], identity: &str) -> Vec<usize> {
    if gateways.is_empty() {
        return Vec::new();
    }
    let hashed = fnv1a_32(identity.as_bytes()) as usize % gateways.len();
    let mut rest: Vec<(u32, usize)> = (0..gateways.len())
        .filter(|i| *i != hashed)
        .map(|i| (rendezvous_weight(identity, gateways[i].ip), i))
        .collect();
    rest.sort_by(|(wa, a), (wb, b)| {
        wb.cmp(wa).then_with(|| (gateways[*a].ip, gateways[*a].entry).cmp(&(gateways[*b].ip, gateways[*b].entry)))
    });
    // liveness is per node: a second entry on a node already in the order
    // could never be taken, so it is left out
    let mut seen = std::collections::HashSet::new();
    std::iter::once(hashed)
        .chain(rest.into_iter().map(|(_, i)| i))
        .filter(|i| seen.insert(gateways[*i].ip))
        .take(crate::ir::MAX_FAILOVER)
        .collect()
}

/// SEMANTICS.md's assignment of an endpoint to one of `gateways` (sorted by
/// IP), with each gateway's health as resolved (`healthy`: its node is Ready).
pub fn assign(gateways: &[ResolvedGateway], identity: &str) -> Assignment {
    assign_with(gateways, identity, |g| g.healthy)
}

/// [`assign`] with liveness given by `live` (the agent's view).
pub fn assign_with(
    gateways: &[ResolvedGateway],
    identity: &str,
    live: impl Fn(&ResolvedGateway) -> bool,
) -> Assignment {
    let order = failover_order(gateways, identity);
    let Some(&hashed) = order.first() else { return Assignment { hashed: None, chosen: None } };
    let chosen = order.into_iter().find(|i| live(&gateways[*i]));
    Assignment { hashed: Some(hashed), chosen }
}

/// Where a cluster-internal range comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum InternalSource {
    PodCidr { node: String },
    NodeIp { node: String },
    ServiceCidr,
}

impl fmt::Display for InternalSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InternalSource::PodCidr { node } => write!(f, "pod CIDR of node {node}"),
            InternalSource::NodeIp { node } => write!(f, "IP of node {node}"),
            InternalSource::ServiceCidr => f.write_str("service CIDR"),
        }
    }
}

/// Cluster-internal ranges: traffic to them is never sent to a gateway.
#[derive(Debug, Clone, Default)]
pub struct InternalRanges {
    /// Every contributing prefix with its origin, sorted.
    pub sources: Vec<(Cidr, InternalSource)>,
    /// Their union, sorted and merged.
    pub ranges: Vec<Range>,
    /// The union as minimal canonical prefixes (what the datapath holds).
    pub prefixes: Vec<Cidr>,
}

impl InternalRanges {
    pub fn contains(&self, ip: IpAddr) -> bool {
        prefix::ranges_contain(&self.ranges, ip).is_some()
    }
    /// The first contributing prefix (in sorted order) that contains `ip`.
    pub fn source_of(&self, ip: IpAddr) -> Option<&(Cidr, InternalSource)> {
        self.sources.iter().find(|(c, _)| c.contains_ip(ip))
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

/// Whether `⋃ dests ∖ ⋃ excl` is non-empty, per family.
fn captures(dests: &[Cidr], excl: &[Cidr]) -> [bool; 2] {
    let d = prefix::merge_ranges(dests.iter().map(Range::of).collect());
    let x = prefix::merge_ranges(excl.iter().map(Range::of).collect());
    let rest = prefix::subtract(&d, &x);
    [rest.iter().any(|r| r.family == Family::V4), rest.iter().any(|r| r.family == Family::V6)]
}

/// Which reading of `nodeSelector` to apply (SEMANTICS.md, deliberate difference 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Each item's nodeSelector constrains its own item.
    Egret,
    /// All items' nodeSelectors are pooled and ORed, detached from their items.
    Cilium,
}

/// What happens to an endpoint's traffic captured by a policy.
#[derive(Debug, Clone, Copy)]
pub enum GatewayOutcome<'w> {
    NoGateway,
    Gateway { gateway: &'w ResolvedGateway, slot: &'w EgressSlot, local: bool },
}

/// Errors of the incremental updates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorldError {
    #[error("pod `{key}` is already in the world")]
    DuplicatePod { key: String },
    #[error("IP {ip} of pod `{key}` already belongs to `{owner}`")]
    DuplicateIp { key: String, ip: IpAddr, owner: String },
    #[error("no pod `{key}` in the world")]
    UnknownPod { key: String },
}

static NEXT_WORLD: AtomicU64 = AtomicU64::new(1);

/// The resolved cluster and policies.
#[derive(Debug, Clone)]
pub struct World {
    generation: u64,
    options: Options,
    nodes: Vec<NodeInfo>,
    node_by_name: BTreeMap<String, NodeId>,
    node_by_ip: HashMap<Ipv4Addr, NodeId>,
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

/// Why a pod is not an endpoint.
fn non_endpoint_reason(p: &Pod) -> Option<&'static str> {
    if p.is_endpoint() {
        None
    } else if p.host_network {
        Some("it uses the host network")
    } else if p.pod_ips.is_empty() {
        Some("it has no IP")
    } else {
        Some("it is not Pending or Running")
    }
}

impl World {
    /// Resolves a bundle. Never fails; see the module doc for fallbacks.
    pub fn new(bundle: &Bundle, options: &Options) -> World {
        let mut diags = Vec::new();
        let c = &bundle.cluster;

        // Nodes, by name; the first of duplicates wins.
        let mut node_src: Vec<&egret_lang::ast::Node> = c.nodes.iter().collect();
        node_src.sort_by(|a, b| a.name.value.cmp(&b.name.value));
        node_src.dedup_by(|b, a| a.name.value == b.name.value);
        let mut nodes: Vec<NodeInfo> = node_src
            .iter()
            .enumerate()
            .map(|(i, n)| NodeInfo {
                id: NodeId(i as u32),
                name: n.name.value.clone(),
                span: n.span,
                labels: n.labels.clone(),
                ip: n.internal_ips.iter().find_map(|ip| match ip {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                }),
                internal_ips: n.internal_ips.clone(),
                pod_cidrs: n.pod_cidrs.iter().map(Cidr::network).collect(),
                ready: n.ready.unwrap_or(true),
                network: None,
            })
            .collect();
        let node_by_name: BTreeMap<String, NodeId> = nodes.iter().map(|n| (n.name.clone(), n.id)).collect();
        for nn in &c.node_networks {
            match node_by_name.get(&nn.node.value) {
                Some(id) => {
                    let slot = &mut nodes[id.index()].network;
                    if slot.is_none() {
                        *slot = Some(nn.clone());
                    }
                }
                None => diags.push(
                    Diagnostic::new(
                        &codes::DANGLING_REFERENCE,
                        format!("NodeNetwork `{}` is for a node the snapshot does not contain", nn.node.value),
                    )
                    .primary(nn.node.span, "no Node with this name")
                    .note("egret ignores this NodeNetwork")
                    .help("include the Node object, or remove the NodeNetwork"),
                ),
            }
        }

        // Namespaces from the snapshot.
        let mut namespaces: BTreeMap<String, NamespaceInfo> = BTreeMap::new();
        for ns in &c.namespaces {
            namespaces.entry(ns.name.value.clone()).or_insert_with(|| {
                let mut labels = ns.labels.clone();
                labels.entry(NAMESPACE_NAME_LABEL.to_string()).or_insert_with(|| ns.name.value.clone());
                NamespaceInfo { name: ns.name.value.clone(), labels, in_snapshot: true }
            });
        }

        // Workloads.
        let mut wl_src: Vec<&egret_lang::ast::Workload> = c.workloads.iter().collect();
        wl_src.sort_by(|a, b| (a.kind, &a.namespace, &a.name.value).cmp(&(b.kind, &b.namespace, &b.name.value)));
        wl_src.dedup_by(|b, a| (a.kind, &a.namespace, &a.name.value) == (b.kind, &b.namespace, &b.name.value));
        let workloads: Vec<WorkloadInfo> = wl_src
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut labels = w.template_labels.clone();
                labels.insert(POD_NAMESPACE_LABEL.to_string(), w.namespace.clone());
                WorkloadInfo {
                    id: WorkloadId(i as u32),
                    kind: w.kind,
                    namespace: w.namespace.clone(),
                    name: w.name.value.clone(),
                    labels,
                    span: w.span,
                }
            })
            .collect();

        // Policies, by name; the first of duplicates wins.
        let mut pol_src: Vec<&Policy> = bundle.policies.iter().collect();
        pol_src.sort_by(|a, b| a.name.value.cmp(&b.name.value));
        pol_src.dedup_by(|b, a| a.name.value == b.name.value);

        let mut world = World {
            generation: NEXT_WORLD.fetch_add(1, AtomicOrdering::Relaxed),
            options: options.clone(),
            by_node: vec![BTreeSet::new(); nodes.len()],
            node_by_ip: {
                let mut m = HashMap::new();
                for n in &nodes {
                    if let Some(ip) = n.ip {
                        m.entry(ip).or_insert(n.id);
                    }
                }
                m
            },
            gateway_entries: vec![Vec::new(); nodes.len()],
            nodes,
            node_by_name,
            namespaces,
            endpoints: Vec::new(),
            endpoint_by_key: BTreeMap::new(),
            endpoint_by_ip: HashMap::new(),
            unplaced: BTreeSet::new(),
            by_namespace: HashMap::new(),
            label_index: HashMap::new(),
            workloads,
            policies: Vec::new(),
            policy_by_name: BTreeMap::new(),
            slots: Vec::new(),
            slot_index: BTreeMap::new(),
            refused_floating: BTreeSet::new(),
            internal: InternalRanges::default(),
            selection: Vec::new(),
            cilium_selection: Vec::new(),
            selected_by: Vec::new(),
            non_endpoints: c.pods.iter().filter_map(|p| non_endpoint_reason(p).map(|r| (p.key(), r))).collect(),
            contested_ips: false,
            ready_health: crate::ir::Health::all_up(),
            diagnostics: Vec::new(),
            validation_errors: egret_lang::validate::bundle(bundle).into_iter().filter(Diagnostic::is_error).collect(),
        };

        world.internal = world.compute_internal();
        world.ready_health = crate::ir::Health::with_down(world.nodes.iter().filter(|n| !n.ready).filter_map(|n| n.ip));
        world.refused_floating = world.check_floating(&pol_src, &mut diags);
        // Many policies share gateway selectors: resolve each distinct one once.
        let mut gw_cache: HashMap<String, Option<NodeId>> = HashMap::new();
        for (i, p) in pol_src.iter().enumerate() {
            let gateways = world.resolve_gateways_cached(p, &mut gw_cache);
            let destinations: Vec<Cidr> = p.destination_cidrs.iter().map(|c| c.value.network()).collect();
            let excluded: Vec<Cidr> = p.excluded_cidrs.iter().map(|c| c.value.network()).collect();
            world.policies.push(PolicyInfo {
                id: PolicyId(i as u32),
                name: p.name.value.clone(),
                ast: (*p).clone(),
                captures: captures(&destinations, &excluded),
                destinations,
                excluded,
                gateways,
                gateway_slots: Vec::new(),
            });
            world.policy_by_name.insert(p.name.value.clone(), PolicyId(i as u32));
        }
        world.assign_slots();
        world.selection = vec![BTreeSet::new(); world.policies.len()];
        world.cilium_selection = vec![BTreeSet::new(); world.policies.len()];

        // Endpoints, by namespace/name; the first of duplicates wins.
        let mut pods: Vec<(String, &Pod)> = c.pods.iter().filter(|p| p.is_endpoint()).map(|p| (p.key(), p)).collect();
        pods.sort_by(|a, b| a.0.cmp(&b.0));
        pods.dedup_by(|b, a| a.0 == b.0);
        let mut missing_ns: BTreeSet<String> = BTreeSet::new();
        for (_, pod) in pods {
            if !world.namespaces.contains_key(&pod.namespace) && missing_ns.insert(pod.namespace.clone()) {
                diags.push(
                    Diagnostic::new(
                        &codes::DANGLING_REFERENCE,
                        format!(
                            "pod `{}` is in namespace `{}`, which the snapshot does not contain",
                            pod.key(),
                            pod.namespace
                        ),
                    )
                    .primary(pod.name.span, "its namespace is missing")
                    .note(format!(
                        "egret assumes the namespace exists with only the label `{NAMESPACE_NAME_LABEL}: {}`",
                        pod.namespace
                    ))
                    .help("include the namespaces: `kubectl get namespaces -o yaml`"),
                );
            }
            if let Some(n) = &pod.node_name
                && !world.node_by_name.contains_key(n)
            {
                diags.push(
                    Diagnostic::new(
                        &codes::DANGLING_REFERENCE,
                        format!("pod `{}` runs on node `{n}`, which the snapshot does not contain", pod.key()),
                    )
                    .primary(pod.name.span, "its node is missing")
                    .note("egret treats the node as having no labels; no plan hosts this pod")
                    .help("include the nodes: `kubectl get nodes -o yaml`"),
                );
            }
            let ips: Vec<IpAddr> = pod.pod_ips.clone();
            let mut kept = Vec::new();
            for ip in ips {
                match world.endpoint_by_ip.get(&ip) {
                    Some(owner) => {
                        world.contested_ips = true;
                        let owner = world.endpoints[owner.index()].key.clone();
                        diags.push(
                            Diagnostic::new(
                                &codes::INVALID_OBJECT,
                                format!("pod `{}` has IP {ip}, which pod `{owner}` already has", pod.key()),
                            )
                            .primary(pod.name.span, "duplicate pod IP")
                            .note(format!("egret gives {ip} to `{owner}` only"))
                            .help("regenerate the snapshot; a pod IP belongs to one running pod"),
                        );
                    }
                    None => kept.push(ip),
                }
            }
            if kept.is_empty() {
                world.non_endpoints.insert(pod.key(), "its IPs belong to other pods");
                continue;
            }
            let id = world.insert_endpoint(pod, kept);
            world.index_endpoint(id);
        }
        // Selection, per policy, through the label index.
        for pid in 0..world.policies.len() {
            let (egret, cilium) = world.select_indexed(PolicyId(pid as u32));
            for e in &egret {
                world.selected_by[e.index()].push(PolicyId(pid as u32));
            }
            world.selection[pid] = egret;
            world.cilium_selection[pid] = cilium;
        }
        egret_lang::diag::sort_dedup(&mut diags);
        world.diagnostics = diags;
        world
    }

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
    /// The node whose first IPv4 InternalIP is `ip` (the first by name if several).
    pub fn node_with_ip(&self, ip: Ipv4Addr) -> Option<&NodeInfo> {
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

    // ---- selection, for any policy (also ones not in this world) ----

    /// Labels of a node by name (empty for an unknown or missing node).
    fn node_labels(&self, node: Option<NodeId>) -> &Labels {
        static EMPTY: Labels = Labels::new();
        node.map_or(&EMPTY, |n| &self.nodes[n.index()].labels)
    }

    /// Labels of a namespace (`kubernetes.io/metadata.name` only, for one not in the snapshot).
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.to_string())]),
        }
    }

    fn namespace_matches(&self, sel: &LabelSelector, ns: &str) -> bool {
        match self.namespaces.get(ns) {
            Some(info) => sel.matches(&info.labels),
            None => sel.matches(&self.namespace_labels(ns)),
        }
    }

    /// Whether an item's pod and namespace parts match (`None` when the item
    /// has neither, which is an error and matches nothing).
    fn item_pod_ns(&self, item: &SelectorItem, labels: &Labels, namespace: &str) -> bool {
        if item.pod_selector.is_none() && item.namespace_selector.is_none() {
            return false;
        }
        item.pod_selector.as_ref().is_none_or(|s| s.matches(labels))
            && item.namespace_selector.as_ref().is_none_or(|s| self.namespace_matches(s, namespace))
    }

    /// Whether one selector item selects an endpoint, egret's reading.
    pub fn item_selects(&self, item: &SelectorItem, e: &Endpoint) -> bool {
        self.item_pod_ns(item, &e.labels, &e.namespace)
            && item.node_selector.as_ref().is_none_or(|s| s.matches(self.node_labels(e.node)))
    }

    /// Whether a policy selects an endpoint in the given reading.
    pub fn selects(&self, p: &Policy, e: &Endpoint, reading: Reading) -> bool {
        match reading {
            Reading::Egret => p.selectors.iter().any(|i| self.item_selects(i, e)),
            Reading::Cilium => {
                let podns = p.selectors.iter().any(|i| self.item_pod_ns(i, &e.labels, &e.namespace));
                let node_sels: Vec<&LabelSelector> =
                    p.selectors.iter().filter_map(|i| i.node_selector.as_ref()).collect();
                podns && (node_sels.is_empty() || node_sels.iter().any(|s| s.matches(self.node_labels(e.node))))
            }
        }
    }

    /// The endpoints a policy selects (egret's reading), sorted by `namespace/name`.
    pub fn selected_endpoints(&self, p: &Policy) -> Vec<&Endpoint> {
        self.selected_endpoints_in(p, Reading::Egret)
    }

    /// The endpoints a policy selects in a reading, sorted by `namespace/name`.
    pub fn selected_endpoints_in(&self, p: &Policy, reading: Reading) -> Vec<&Endpoint> {
        let mut v: Vec<&Endpoint> = match self.policy_by_name.get(&p.name.value) {
            Some(id) if self.policies[id.index()].ast == *p => {
                let set = match reading {
                    Reading::Egret => &self.selection[id.index()],
                    Reading::Cilium => &self.cilium_selection[id.index()],
                };
                set.iter().map(|e| &self.endpoints[e.index()]).collect()
            }
            _ => self.endpoints().filter(|e| self.selects(p, e, reading)).collect(),
        };
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The workload templates a policy would select: pod and namespace parts
    /// of an item against the template labels and the workload's namespace.
    /// An item's nodeSelector is not checked (a workload's pods may land on
    /// any node).
    pub fn selected_workloads(&self, p: &Policy) -> Vec<&WorkloadInfo> {
        self.workloads
            .iter()
            .filter(|w| p.selectors.iter().any(|i| self.item_pod_ns(i, &w.labels, &w.namespace)))
            .collect()
    }

    /// Nodes whose labels match a selector, in name order.
    pub fn matching_nodes(&self, sel: &LabelSelector) -> Vec<&NodeInfo> {
        self.nodes.iter().filter(|n| sel.matches(&n.labels)).collect()
    }

    /// A gateway entry's node: the first by name among matching nodes with an IPv4 InternalIP.
    pub fn gateway_node(&self, g: &GatewaySpec) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.ip.is_some() && g.node_selector.matches(&n.labels))
    }

    /// A policy's gateway entries resolved to nodes (entries that resolve to
    /// no node dropped), sorted by gateway IP, then entry index.
    pub fn resolve_gateways(&self, p: &Policy) -> Vec<ResolvedGateway> {
        self.resolve_gateways_cached(p, &mut HashMap::new())
    }

    /// The candidates of a gateway entry with a floating egress IP: every
    /// node it matches that can be a gateway (has an IPv4 InternalIP), by name.
    pub fn floating_candidates(&self, g: &GatewaySpec) -> Vec<&NodeInfo> {
        self.nodes.iter().filter(|n| n.ip.is_some() && g.node_selector.matches(&n.labels)).collect()
    }

    /// Whether a floating egress IP's claims are invalid (E0310, E0311), so
    /// that its gateway entries resolve to no node.
    pub fn is_refused_floating(&self, ip: Ipv4Addr) -> bool {
        self.refused_floating.contains(&ip)
    }

    fn resolve_gateways_cached(&self, p: &Policy, cache: &mut HashMap<String, Option<NodeId>>) -> Vec<ResolvedGateway> {
        let mut out: Vec<ResolvedGateway> = Vec::new();
        for (entry, g) in p.gateways().iter().enumerate() {
            let spec = EgressSpec::of(g);
            let nodes: Vec<&NodeInfo> = match spec {
                // every candidate serves the IP's shared slot
                EgressSpec::Floating(ip) if self.refused_floating.contains(&ip) => Vec::new(),
                EgressSpec::Floating(_) => self.floating_candidates(g),
                _ => {
                    let id = *cache
                        .entry(selector_key(&g.node_selector))
                        .or_insert_with(|| self.gateway_node(g).map(|n| n.id));
                    id.map(|id| &self.nodes[id.index()]).into_iter().collect()
                }
            };
            out.extend(nodes.into_iter().filter_map(|n| {
                Some(ResolvedGateway {
                    entry,
                    node: n.id,
                    node_name: n.name.clone(),
                    ip: n.ip?,
                    healthy: n.ready,
                    spec: spec.clone(),
                })
            }));
        }
        out.sort_by_key(|g| (g.ip, g.entry));
        out
    }

    /// The gateway assignment of an endpoint under a policy of this world.
    pub fn assignment(&self, p: PolicyId, e: EndpointId) -> Assignment {
        assign(&self.policies[p.index()].gateways, &self.endpoints[e.index()].identity)
    }

    /// Where a policy of this world sends an endpoint's captured traffic,
    /// with each gateway's health as resolved (its node's Ready condition).
    pub fn gateway_outcome(&self, p: PolicyId, e: EndpointId) -> GatewayOutcome<'_> {
        self.gateway_outcome_with(p, e, |g| g.healthy)
    }

    /// [`World::gateway_outcome`] with liveness given by `live` (the agent's view).
    pub fn gateway_outcome_with(
        &self,
        p: PolicyId,
        e: EndpointId,
        live: impl Fn(&ResolvedGateway) -> bool,
    ) -> GatewayOutcome<'_> {
        self.failover(p, e)
            .into_iter()
            .find(|o| matches!(o, GatewayOutcome::Gateway { gateway, .. } if live(gateway)))
            .unwrap_or(GatewayOutcome::NoGateway)
    }

    /// An endpoint's gateways under a policy of this world, in failover order
    /// ([`failover_order`]), each as the outcome it gives when it is the first
    /// live one; gateways whose slot is missing are left out.
    pub fn failover(&self, p: PolicyId, e: EndpointId) -> Vec<GatewayOutcome<'_>> {
        let pol = &self.policies[p.index()];
        let ep = &self.endpoints[e.index()];
        failover_order(&pol.gateways, &ep.identity)
            .into_iter()
            .filter_map(|i| {
                let gw = &pol.gateways[i];
                let slot = pol.gateway_slots.get(i).and_then(|s| self.slots.get(*s))?;
                Some(GatewayOutcome::Gateway { gateway: gw, slot, local: ep.node == Some(gw.node) })
            })
            .collect()
    }

    /// The egress IP of a gateway entry on a node, for one family
    /// (SEMANTICS.md, "Egress IP"): from the node's NodeNetwork when the
    /// snapshot has one, else late-bound (an `egressIP` is known for its own
    /// family without one).
    pub fn egress_ip(&self, g: &GatewaySpec, node: NodeId, family: Family) -> EgressIp {
        self.egress_for(&EgressSpec::of(g), node, family)
    }

    fn egress_for(&self, spec: &EgressSpec, node: NodeId, family: Family) -> EgressIp {
        if let EgressSpec::Floating(ip) = spec
            && family == Family::V4
        {
            // the floating IP itself, on every candidate: it need not be on the node
            return EgressIp::Known(IpAddr::V4(*ip));
        }
        match self.egress_interface(spec, node) {
            Ok(Some(iface)) => match spec {
                EgressSpec::EgressIp(ip) if Family::of(ip) == family => EgressIp::Known(*ip),
                _ => match first_address(iface, family) {
                    Some(ip) => EgressIp::Known(ip),
                    None => EgressIp::Unavailable {
                        reason: NoEgressIp::NoAddress { interface: iface.name.clone(), family },
                    },
                },
            },
            Ok(None) => match spec {
                // No NodeNetwork: a written egressIP is known for its own family.
                EgressSpec::EgressIp(ip) if Family::of(ip) == family => EgressIp::Known(*ip),
                _ => EgressIp::LateBound { spec: spec.clone(), family },
            },
            Err(reason) => EgressIp::Unavailable { reason },
        }
    }

    /// The interface a spec names on a node: `Ok(None)` when the snapshot has
    /// no NodeNetwork for it (late-bound).
    fn egress_interface(&self, spec: &EgressSpec, node: NodeId) -> Result<Option<&Interface>, NoEgressIp> {
        let Some(net) = self.nodes.get(node.index()).and_then(|n| n.network.as_ref()) else {
            return Ok(None);
        };
        let by_name = |name: &str| {
            net.interfaces
                .iter()
                .find(|i| i.name == name)
                .or_else(|| net.interfaces.iter().find(|i| i.alt_names.iter().any(|a| a == name)))
        };
        match spec {
            EgressSpec::EgressIp(ip) => net
                .interfaces
                .iter()
                .find(|i| i.addresses.iter().any(|a| a.addr == *ip))
                .map(Some)
                .ok_or(NoEgressIp::EgressIpNotOnNode { ip: *ip }),
            // the interface on the IP's subnet, else the default route's; the
            // /32 its current owner holds is ignored (the plan must not
            // change when the IP moves)
            EgressSpec::Floating(ip) => match net.interfaces.iter().find(|i| {
                i.addresses.iter().any(|a| a.len < 32 && a.addr != IpAddr::V4(*ip) && a.contains_ip(IpAddr::V4(*ip)))
            }) {
                Some(i) => Ok(Some(i)),
                None => self.egress_interface(&EgressSpec::DefaultRoute, node),
            },
            EgressSpec::Interface(name) => {
                by_name(name).map(Some).ok_or_else(|| NoEgressIp::InterfaceNotOnNode { interface: name.clone() })
            }
            EgressSpec::DefaultRoute => {
                let name = net.default_route_interface.as_deref().ok_or(NoEgressIp::NoDefaultRoute)?;
                by_name(name).map(Some).ok_or_else(|| NoEgressIp::InterfaceNotOnNode { interface: name.to_string() })
            }
        }
    }

    // ---- incremental updates ----

    /// Adds a pod (a pod that is not an endpoint is accepted and only
    /// remembered as such, [`World::non_endpoint_reason`]: `Ok(None)`).
    /// Updates the selection index for it alone.
    pub fn add_pod(&mut self, pod: &Pod) -> Result<Option<EndpointId>, WorldError> {
        if let Some(reason) = non_endpoint_reason(pod) {
            self.non_endpoints.insert(pod.key(), reason);
            return Ok(None);
        }
        let key = pod.key();
        if self.endpoint_by_key.contains_key(&key) {
            return Err(WorldError::DuplicatePod { key });
        }
        for ip in &pod.pod_ips {
            if let Some(owner) = self.endpoint_by_ip.get(ip) {
                return Err(WorldError::DuplicateIp { key, ip: *ip, owner: self.endpoints[owner.index()].key.clone() });
            }
        }
        let id = self.insert_endpoint(pod, pod.pod_ips.clone());
        self.index_endpoint(id);
        let ep = &self.endpoints[id.index()];
        let mut sel = Vec::new();
        let mut csel = Vec::new();
        for p in &self.policies {
            if self.selects(&p.ast, ep, Reading::Egret) {
                sel.push(p.id);
            }
            if self.selects(&p.ast, ep, Reading::Cilium) {
                csel.push(p.id);
            }
        }
        for p in &sel {
            self.selection[p.index()].insert(id);
        }
        for p in csel {
            self.cilium_selection[p.index()].insert(id);
        }
        self.selected_by[id.index()] = sel;
        Ok(Some(id))
    }

    /// Removes a pod by `namespace/name` (an error if it is no endpoint;
    /// either way the world forgets it).
    pub fn remove_pod(&mut self, key: &str) -> Result<EndpointId, WorldError> {
        self.non_endpoints.remove(key);
        let id = self.endpoint_by_key.remove(key).ok_or_else(|| WorldError::UnknownPod { key: key.to_string() })?;
        let ep = &mut self.endpoints[id.index()];
        ep.alive = false;
        let ep = ep.clone();
        for ip in &ep.ips {
            self.endpoint_by_ip.remove(ip);
        }
        match ep.node {
            Some(n) => {
                self.by_node[n.index()].remove(&id);
            }
            None => {
                self.unplaced.remove(&id);
            }
        }
        if let Some(s) = self.by_namespace.get_mut(&ep.namespace) {
            s.remove(&id);
        }
        for (k, v) in &ep.labels {
            if let Some(s) = self.label_index.get_mut(k).and_then(|m| m.get_mut(v)) {
                s.remove(&id);
            }
        }
        for p in std::mem::take(&mut self.selected_by[id.index()]) {
            self.selection[p.index()].remove(&id);
        }
        for s in &mut self.cilium_selection {
            s.remove(&id);
        }
        Ok(id)
    }

    // ---- construction helpers ----

    fn insert_endpoint(&mut self, pod: &Pod, ips: Vec<IpAddr>) -> EndpointId {
        let id = EndpointId(self.endpoints.len() as u32);
        let mut labels = pod.labels.clone();
        labels.insert(POD_NAMESPACE_LABEL.to_string(), pod.namespace.clone());
        let workload = self
            .workloads
            .iter()
            .find(|w| {
                w.namespace == pod.namespace
                    && w.labels.len() > 1
                    && w.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|w| w.id);
        let node = pod.node_name.as_ref().and_then(|n| self.node_by_name.get(n).copied());
        self.endpoints.push(Endpoint {
            id,
            namespace: pod.namespace.clone(),
            name: pod.name.value.clone(),
            key: pod.key(),
            uid: pod.uid.clone(),
            identity: pod.identity(),
            ips,
            node,
            node_name: pod.node_name.clone(),
            labels,
            span: pod.span,
            workload,
            alive: true,
        });
        self.selected_by.push(Vec::new());
        id
    }

    fn index_endpoint(&mut self, id: EndpointId) {
        let ep = &self.endpoints[id.index()];
        self.endpoint_by_key.insert(ep.key.clone(), id);
        for ip in &ep.ips {
            self.endpoint_by_ip.insert(*ip, id);
        }
        match ep.node {
            Some(n) => {
                self.by_node[n.index()].insert(id);
            }
            None => {
                self.unplaced.insert(id);
            }
        }
        self.by_namespace.entry(ep.namespace.clone()).or_default().insert(id);
        for (k, v) in &ep.labels {
            self.label_index.entry(k.clone()).or_default().entry(v.clone()).or_default().insert(id);
        }
    }

    /// Candidate endpoints for an item, from the indexes: the smallest
    /// `matchLabels` (or single-value `In`) posting list, else the namespaces
    /// the namespaceSelector matches, else everything.
    fn candidates(&self, item: &SelectorItem) -> Vec<EndpointId> {
        static NONE: BTreeSet<EndpointId> = BTreeSet::new();
        let mut by_label: Option<&BTreeSet<EndpointId>> = None;
        if let Some(ps) = &item.pod_selector {
            let lists = ps
                .match_labels
                .iter()
                .map(|(k, v)| (k.value.as_str(), v.value.as_str()))
                .chain(ps.match_expressions.iter().filter_map(|r| match (r.operator.value, r.values.as_slice()) {
                    (Operator::In, [v]) => Some((r.key.value.as_str(), v.value.as_str())),
                    _ => None,
                }))
                .map(|(k, v)| self.label_index.get(k).and_then(|m| m.get(v)).unwrap_or(&NONE));
            by_label = lists.min_by_key(|s| s.len());
        }
        if let Some(ns) = &item.namespace_selector
            && !ns.is_empty()
        {
            let sets: Vec<&BTreeSet<EndpointId>> =
                self.by_namespace.iter().filter(|(name, _)| self.namespace_matches(ns, name)).map(|(_, s)| s).collect();
            let n: usize = sets.iter().map(|s| s.len()).sum();
            if by_label.is_none_or(|l| n < l.len()) {
                let mut out: Vec<EndpointId> = sets.into_iter().flatten().copied().collect();
                out.sort_unstable();
                return out;
            }
        }
        match by_label {
            Some(l) => l.iter().copied().collect(),
            None => self.endpoint_by_key.values().copied().collect(),
        }
    }

    fn select_indexed(&self, p: PolicyId) -> (BTreeSet<EndpointId>, BTreeSet<EndpointId>) {
        let pol = &self.policies[p.index()].ast;
        let mut egret = BTreeSet::new();
        let mut cilium = BTreeSet::new();
        let has_node_sel = pol.selectors.iter().any(|i| i.node_selector.is_some());
        for item in &pol.selectors {
            for e in self.candidates(item) {
                let ep = &self.endpoints[e.index()];
                if !self.item_pod_ns(item, &ep.labels, &ep.namespace) {
                    continue;
                }
                if item.node_selector.as_ref().is_none_or(|s| s.matches(self.node_labels(ep.node))) {
                    egret.insert(e);
                }
                if !has_node_sel
                    || cilium.contains(&e)
                    || pol
                        .selectors
                        .iter()
                        .filter_map(|i| i.node_selector.as_ref())
                        .any(|s| s.matches(self.node_labels(ep.node)))
                {
                    cilium.insert(e);
                }
            }
        }
        (egret, cilium)
    }

    fn compute_internal(&self) -> InternalRanges {
        let mut sources: Vec<(Cidr, InternalSource)> = Vec::new();
        for n in &self.nodes {
            for c in &n.pod_cidrs {
                sources.push((c.network(), InternalSource::PodCidr { node: n.name.clone() }));
            }
            for ip in &n.internal_ips {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                sources.push((Cidr::new(*ip, len), InternalSource::NodeIp { node: n.name.clone() }));
            }
        }
        for c in &self.options.service_cidrs {
            sources.push((c.network(), InternalSource::ServiceCidr));
        }
        sources.sort_by(|a, b| prefix::prefix_order(&a.0, &b.0).then_with(|| a.1.cmp(&b.1)));
        sources.dedup();
        let ranges = prefix::merge_ranges(sources.iter().map(|(c, _)| Range::of(c)).collect());
        let prefixes = ranges.iter().flat_map(Range::prefixes).collect();
        InternalRanges { sources, ranges, prefixes }
    }

    /// Checks the claims on floating egress IPs (E0310: policies floating one
    /// IP over different candidate nodes; E0311: a node holds the IP as a
    /// fixed address, with a prefix shorter than /32) and returns the IPs
    /// refused: their gateway entries resolve to no node, so the policies'
    /// traffic through them is dropped (`no-gateway`) rather than sent from
    /// the IP by a node that should not hold it.
    fn check_floating(&self, policies: &[&Policy], diags: &mut Vec<Diagnostic>) -> BTreeSet<Ipv4Addr> {
        type Claim<'p> = (&'p Policy, Span, BTreeSet<NodeId>);
        let mut claims: BTreeMap<Ipv4Addr, Vec<Claim<'_>>> = BTreeMap::new();
        for p in policies {
            // per policy, the union of its entries' candidates for each IP
            let mut mine: BTreeMap<Ipv4Addr, (Span, BTreeSet<NodeId>)> = BTreeMap::new();
            for g in p.gateways() {
                let (EgressSpec::Floating(ip), Some(written)) = (EgressSpec::of(g), &g.egress_ip) else { continue };
                let e = mine.entry(ip).or_insert_with(|| (written.span, BTreeSet::new()));
                e.1.extend(self.floating_candidates(g).iter().map(|n| n.id));
            }
            for (ip, (span, set)) in mine {
                claims.entry(ip).or_default().push((p, span, set));
            }
        }
        let names = |set: &BTreeSet<NodeId>| {
            let v: Vec<&str> = set.iter().map(|n| self.nodes[n.index()].name.as_str()).collect();
            if v.is_empty() { "no node".to_string() } else { v.join(", ") }
        };
        let mut refused = BTreeSet::new();
        for (ip, claims) in &claims {
            let (first, first_span, first_set) = &claims[0];
            for (p, span, set) in claims.iter().skip(1).filter(|(_, _, set)| set != first_set) {
                refused.insert(*ip);
                diags.push(
                    Diagnostic::new(
                        &codes::FLOATING_CANDIDATES_DIFFER,
                        format!(
                            "floating egress IP {ip} is claimed by policies `{}` (candidates {}) and `{}` (candidates {})",
                            first.name.value,
                            names(first_set),
                            p.name.value,
                            names(set)
                        ),
                    )
                    .primary(*span, format!("policy `{}`: candidates {}", p.name.value, names(set)))
                    .secondary(*first_span, format!("policy `{}`: candidates {}", first.name.value, names(first_set)))
                    .note(format!(
                        "every policy floating {ip} gets no gateway from it: their traffic through it is dropped (no-gateway)"
                    ))
                    .help("give the policies the same gateway nodeSelector, or float different IPs"),
                );
            }
            for n in &self.nodes {
                let Some(net) = &n.network else { continue };
                for (iface, a) in net.interfaces.iter().flat_map(|i| i.addresses.iter().map(move |a| (i, a))) {
                    if a.addr != IpAddr::V4(*ip) || a.len >= 32 {
                        continue;
                    }
                    refused.insert(*ip);
                    for (p, span, _) in claims {
                        diags.push(
                            Diagnostic::new(
                                &codes::FLOATING_IP_IS_NODE_ADDRESS,
                                format!(
                                    "floating egress IP {ip} of policy `{}` is a fixed address of node `{}` ({a} on {})",
                                    p.name.value, n.name, iface.name
                                ),
                            )
                            .primary(*span, format!("node `{}` has this address as its own", n.name))
                            .note(format!(
                                "every policy floating {ip} gets no gateway from it: their traffic through it is dropped (no-gateway)"
                            ))
                            .help(format!(
                                "remove {a} from `{}` (egret adds {ip}/32 on whichever candidate owns it), or float another address",
                                n.name
                            )),
                        );
                    }
                }
            }
        }
        refused
    }

    /// Creates one slot per distinct (gateway node, egress spec) used by any
    /// policy, with cluster-unique 24-bit ids from a hash of the pair; the
    /// candidates of a floating egress IP share one id (see [`SlotId`]).
    fn assign_slots(&mut self) {
        let mut keys: BTreeMap<(String, EgressSpec), (NodeId, [bool; 2])> = BTreeMap::new();
        for p in &self.policies {
            let fams = [p.has_family(Family::V4), p.has_family(Family::V6)];
            for g in &p.gateways {
                let e = keys.entry((g.node_name.clone(), g.spec.clone())).or_insert((g.node, [false, false]));
                e.1[0] |= fams[0];
                e.1[1] |= fams[1];
            }
        }
        let mut taken: BTreeSet<u32> = BTreeSet::new();
        let mut probe = |seed: String| {
            let mut id = fnv1a_32(seed.as_bytes()) & 0x00ff_ffff;
            while id == 0 || taken.contains(&id) {
                id = (id + 1) & 0x00ff_ffff;
            }
            taken.insert(id);
            id
        };
        // floating IPs first, in IP order: one id each, shared by the candidates
        let mut floating: BTreeMap<Ipv4Addr, (u32, Vec<(String, Ipv4Addr)>)> = BTreeMap::new();
        for ((name, spec), (node, _)) in &keys {
            if let EgressSpec::Floating(ip) = spec
                && let Some(underlay) = self.nodes[node.index()].ip
            {
                floating.entry(*ip).or_insert_with(|| (0, Vec::new())).1.push((name.clone(), underlay));
            }
        }
        for (ip, (id, candidates)) in &mut floating {
            *id = probe(format!("floating\0{ip}"));
            candidates.sort_by_key(|(name, underlay)| (*underlay, name.clone()));
        }
        for ((name, spec), (node, fams)) in keys {
            let (id, floating) = match &spec {
                EgressSpec::Floating(ip) => match floating.get(ip) {
                    Some((id, candidates)) => (*id, Some(FloatingSlot { ip: *ip, candidates: candidates.clone() })),
                    None => (probe(format!("{name}\0{spec}")), None),
                },
                _ => (probe(format!("{name}\0{spec}")), None),
            };
            let interface = match self.egress_interface(&spec, node) {
                Ok(Some(i)) => InterfaceBinding::Known { name: i.name.clone(), index: i.index },
                Ok(None) => InterfaceBinding::LateBound { spec: spec.clone() },
                Err(reason) => InterfaceBinding::Unavailable { reason },
            };
            let slot = EgressSlot {
                id: SlotId(id),
                gateway: node,
                gateway_name: name,
                v4: fams[0].then(|| self.egress_for(&spec, node, Family::V4)),
                v6: fams[1].then(|| self.egress_for(&spec, node, Family::V6)),
                spec,
                interface,
                floating,
            };
            self.slot_index.insert((node, slot.spec.clone()), self.slots.len());
            self.slots.push(slot);
        }
        for pi in 0..self.policies.len() {
            let slots: Vec<usize> = self.policies[pi]
                .gateways
                .iter()
                .map(|g| self.slot_index.get(&(g.node, g.spec.clone())).copied().unwrap_or(usize::MAX))
                .collect();
            for (gi, g) in self.policies[pi].gateways.iter().enumerate() {
                self.gateway_entries[g.node.index()].push((PolicyId(pi as u32), gi));
            }
            self.policies[pi].gateway_slots = slots;
        }
    }
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The first non-link-local address of a family on an interface, in the order the node reports.
fn first_address(iface: &Interface, family: Family) -> Option<IpAddr> {
    iface.addresses.iter().map(|c| c.addr).find(|a| Family::of(a) == family && !is_link_local(a))
}

/// A canonical string of a selector's requirements (spans ignored), for caches.
fn selector_key(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel.match_labels.iter().map(|(k, v)| format!("{}={}", k.value, v.value)).collect();
    parts.extend(sel.match_expressions.iter().map(|r| {
        let vals: Vec<&str> = r.values.iter().map(|v| v.value.as_str()).collect();
        format!("{} {} ({})", r.key.value, r.operator.value.as_str(), vals.join(","))
    }));
    parts.sort();
    parts.join("\0")
}

/// The first requirement of a selector that labels fail, before it is put
/// in words ([`selector_miss`]); finding it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorMiss<'a> {
    /// A `matchLabels` entry: the label is absent or has another value.
    Label { key: &'a str, want: &'a str, have: Option<&'a str> },
    /// A `matchExpressions` entry; `have` is the label's value, if any.
    Expression { req: &'a Requirement, have: Option<&'a str> },
}

/// The first requirement of `sel` that `labels` fail (`None` when it matches).
pub fn first_selector_miss<'a>(sel: &'a LabelSelector, labels: &'a Labels) -> Option<SelectorMiss<'a>> {
    for (k, v) in &sel.match_labels {
        let have = labels.get(&k.value).map(String::as_str);
        if have != Some(v.value.as_str()) {
            return Some(SelectorMiss::Label { key: &k.value, want: &v.value, have });
        }
    }
    sel.match_expressions
        .iter()
        .find(|r| !r.matches(labels))
        .map(|req| SelectorMiss::Expression { req, have: labels.get(&req.key.value).map(String::as_str) })
}

impl fmt::Display for SelectorMiss<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SelectorMiss::Label { key, want, have: Some(have) } => write!(f, "`{key}` is `{have}`, not `{want}`"),
            SelectorMiss::Label { key, want, have: None } => write!(f, "no label `{key}` (wants `{want}`)"),
            SelectorMiss::Expression { req, have } => {
                let vals: Vec<&str> = req.values.iter().map(|v| v.value.as_str()).collect();
                let (key, vals) = (&req.key.value, vals.join(", "));
                match (req.operator.value, have) {
                    (Operator::In, Some(h)) => write!(f, "`{key}` is `{h}`, not in [{vals}]"),
                    (Operator::In, None) => write!(f, "no label `{key}` (wants one of [{vals}])"),
                    (Operator::NotIn, h) => write!(f, "`{key}` is `{}`, which is in [{vals}]", h.unwrap_or("")),
                    (Operator::Exists, _) => write!(f, "no label `{key}`"),
                    (Operator::DoesNotExist, _) => write!(f, "has label `{key}`"),
                }
            }
        }
    }
}

/// Why a selector does not match labels: the first requirement that fails,
/// in words (`None` when it matches).
pub fn selector_miss(sel: &LabelSelector, labels: &Labels) -> Option<String> {
    first_selector_miss(sel, labels).map(|m| m.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv1a_32(b"uid-a"), 0x80c4a5d3);
        assert_eq!(fnv1a_32(b"uid-b"), 0x81c4a766);
        assert_eq!(fnv1a_32(b"uid-c"), 0x82c4a8f9);
        assert_eq!(fnv1a_32(b"uid-d"), 0x83c4aa8c);
        assert_eq!(fnv1a_32(b"7c22952d-25a0-409d-952c-60895b5c2a90"), 0x4989084b);
        assert_eq!(fnv1a_32(b""), 0x811c9dc5);
    }

    #[test]
    fn rendezvous_weight_encoding() {
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        let mut bytes = b"uid-a".to_vec();
        bytes.extend_from_slice(&[0, 192, 0, 2, 1]);
        assert_eq!(rendezvous_weight("uid-a", ip), fnv1a_32(&bytes));
    }
}
