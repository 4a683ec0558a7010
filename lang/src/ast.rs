//! The one AST that YAML manifests and `.egret` files lower to.
//!
//! Policies keep a span on every key and value a diagnostic may point at.
//! Cluster objects (for offline snapshots) keep the fields the compiler needs
//! (SEMANTICS.md, "Inputs") and a span on the object and its name.
//!
//! Values that failed to parse (an invalid CIDR, an unknown operator) are not
//! in the AST: the parser reported them. Values that parse but are suspect
//! (host bits set, invalid label keys) are kept as written, for the validator
//! and linter to report.

use crate::net::Cidr;
use crate::source::{Span, Spanned};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Labels of a pod, namespace or node.
pub type Labels = BTreeMap<String, String>;

/// Where a policy was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// `CiliumEgressGatewayPolicy` YAML.
    Crd,
    /// egret's own `.egret` language.
    Egret,
}

/// An egress policy (`CiliumEgressGatewayPolicy`, `cilium.io/v2`, cluster-scoped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: Spanned<String>,
    /// `metadata.uid`, when the manifest came from a cluster.
    pub uid: Option<String>,
    /// `metadata.namespace`: invalid on this cluster-scoped kind, kept for the linter.
    pub namespace: Option<Spanned<String>>,
    pub origin: Origin,
    /// The whole object.
    pub span: Span,
    /// Span of `spec` (or of the object when `spec` is missing).
    pub spec_span: Span,
    pub selectors: Vec<SelectorItem>,
    pub destination_cidrs: Vec<Spanned<Cidr>>,
    pub excluded_cidrs: Vec<Spanned<Cidr>>,
    pub egress_gateway: Option<GatewaySpec>,
    pub egress_gateways: Vec<GatewaySpec>,
}

impl Policy {
    /// The gateway entries in effect: `egressGateways` when non-empty, else `egressGateway`.
    pub fn gateways(&self) -> &[GatewaySpec] {
        if !self.egress_gateways.is_empty() { &self.egress_gateways } else { self.egress_gateway.as_slice() }
    }
}

/// One item of `spec.selectors`: the conjunction of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorItem {
    pub span: Span,
    pub pod_selector: Option<LabelSelector>,
    pub namespace_selector: Option<LabelSelector>,
    pub node_selector: Option<LabelSelector>,
}

/// A Kubernetes `LabelSelector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    pub span: Span,
    pub match_labels: Vec<(Spanned<String>, Spanned<String>)>,
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub span: Span,
    pub key: Spanned<String>,
    pub operator: Spanned<Operator>,
    pub values: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    pub fn parse(s: &str) -> Option<Operator> {
        Some(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }
}

impl LabelSelector {
    /// An empty selector (`{}`), which matches everything.
    pub fn empty(span: Span) -> Self {
        LabelSelector { span, match_labels: Vec::new(), match_expressions: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Kubernetes label-selector matching: every `matchLabels` pair and every
    /// requirement must hold.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(&k.value) == Some(&v.value))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// All keys the selector mentions.
    pub fn keys(&self) -> impl Iterator<Item = &Spanned<String>> {
        self.match_labels.iter().map(|(k, _)| k).chain(self.match_expressions.iter().map(|r| &r.key))
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key.value);
        match self.operator.value {
            Operator::In => v.is_some_and(|v| self.values.iter().any(|x| &x.value == v)),
            Operator::NotIn => v.is_none_or(|v| self.values.iter().all(|x| &x.value != v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
        }
    }
}

/// A gateway entry: `egressGateway` or one item of `egressGateways`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    pub span: Span,
    pub node_selector: LabelSelector,
    pub egress_ip: Option<Spanned<IpAddr>>,
    pub interface: Option<Spanned<String>>,
    /// A *floating* egress IP (egret extension, SEMANTICS.md "Gateways"): the
    /// span of the opt-in — the `egret.dev/floating-egress-ip: "true"`
    /// annotation's value in YAML, the `floating` keyword in `.egret`. Set
    /// only on entries with an `egressIP`: every node the entry's
    /// nodeSelector matches is a candidate for holding the address.
    pub floating: Option<Span>,
}

/// The annotation that makes a `CiliumEgressGatewayPolicy`'s egress IPs
/// floating (the only accepted value is `"true"`).
pub const FLOATING_ANNOTATION: &str = "egret.dev/floating-egress-ip";

impl GatewaySpec {
    /// The floating egress IP of this entry, if it has one.
    pub fn floating_ip(&self) -> Option<IpAddr> {
        self.floating.and(self.egress_ip.as_ref()).map(|ip| ip.value)
    }
}

/// A `v1` Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub span: Span,
    pub name: Spanned<String>,
    pub uid: String,
    pub labels: Labels,
    /// `status.addresses` of type InternalIP, in the order given.
    pub internal_ips: Vec<IpAddr>,
    /// `spec.podCIDRs` (or `spec.podCIDR`).
    pub pod_cidrs: Vec<Cidr>,
    /// The `Ready` condition: `Some(true)` when True, `Some(false)` when False or
    /// Unknown, `None` when the snapshot has no conditions (treated as Ready).
    pub ready: Option<bool>,
}

/// A `v1` Namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub span: Span,
    pub name: Spanned<String>,
    pub labels: Labels,
}

/// A `v1` Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub span: Span,
    pub namespace: String,
    pub name: Spanned<String>,
    pub uid: String,
    pub labels: Labels,
    pub node_name: Option<String>,
    pub host_network: bool,
    pub pod_ips: Vec<IpAddr>,
    pub phase: Option<String>,
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name.value)
    }
    /// Identity for gateway hashing: the uid, or `namespace/name` when it is empty.
    pub fn identity(&self) -> String {
        if self.uid.is_empty() { self.key() } else { self.uid.clone() }
    }
    /// An endpoint (SEMANTICS.md): has an IP, not hostNetwork, phase Pending or Running
    /// (a missing phase counts as Running, as in hand-written snapshots).
    pub fn is_endpoint(&self) -> bool {
        !self.pod_ips.is_empty()
            && !self.host_network
            && matches!(self.phase.as_deref(), None | Some("Pending") | Some("Running"))
    }
}

/// egret's `egret.dev/v1alpha1` NodeNetwork: node facts for offline compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetwork {
    pub span: Span,
    /// `metadata.name`: the node's name.
    pub node: Spanned<String>,
    pub interfaces: Vec<Interface>,
    pub default_route_interface: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: Option<u32>,
    /// Addresses with their prefix lengths, in the order the node reports them.
    pub addresses: Vec<Cidr>,
    pub alt_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
}

impl WorkloadKind {
    pub fn parse(kind: &str) -> Option<WorkloadKind> {
        Some(match kind {
            "Deployment" => WorkloadKind::Deployment,
            "StatefulSet" => WorkloadKind::StatefulSet,
            "DaemonSet" => WorkloadKind::DaemonSet,
            "ReplicaSet" => WorkloadKind::ReplicaSet,
            "Job" => WorkloadKind::Job,
            "CronJob" => WorkloadKind::CronJob,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
        }
    }
}

/// A workload: its namespace and the labels its pods will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub span: Span,
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: Spanned<String>,
    pub template_labels: Labels,
}

/// Cluster state from snapshot files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub node_networks: Vec<NodeNetwork>,
    pub workloads: Vec<Workload>,
}

impl Cluster {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.namespaces.is_empty()
            && self.pods.is_empty()
            && self.node_networks.is_empty()
            && self.workloads.is_empty()
    }

    pub fn extend(&mut self, other: Cluster) {
        self.nodes.extend(other.nodes);
        self.namespaces.extend(other.namespaces);
        self.pods.extend(other.pods);
        self.node_networks.extend(other.node_networks);
        self.workloads.extend(other.workloads);
    }
}

/// Everything read from a set of inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    pub policies: Vec<Policy>,
    pub cluster: Cluster,
    /// Kinds that egret does not read, with how many documents of each were skipped.
    pub skipped: BTreeMap<String, usize>,
    /// Objects recognised (with `apiVersion` and `kind`), lists included, read or skipped.
    pub objects: usize,
}

impl Bundle {
    pub fn extend(&mut self, other: Bundle) {
        self.policies.extend(other.policies);
        self.cluster.extend(other.cluster);
        self.objects += other.objects;
        for (k, n) in other.skipped {
            *self.skipped.entry(k).or_default() += n;
        }
    }
}
