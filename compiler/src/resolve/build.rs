//! Construction: [`World::new`] as its steps, in order — nodes (with their
//! NodeNetworks), the world of snapshot objects, policies (internal ranges,
//! floating-IP claims, gateways, slots), endpoints, selection.

use super::endpoints::non_endpoint_reason;
use super::*;
use egret_lang::ast::Cluster;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

static NEXT_WORLD: AtomicU64 = AtomicU64::new(1);

impl World {
    /// Resolves a bundle. Never fails; see the module doc for fallbacks.
    pub fn new(bundle: &Bundle, options: &Options) -> World {
        let mut diags = Vec::new();
        let c = &bundle.cluster;
        let nodes = nodes(c, &mut diags);
        let mut world = World::of_objects(bundle, options, nodes);
        world.resolve_policies(&policies_by_name(bundle), &mut diags);
        world.add_endpoints(&c.pods, &mut diags);
        world.select_all();
        egret_lang::diag::sort_dedup(&mut diags);
        world.diagnostics = diags;
        world
    }

    /// The world of the snapshot's nodes, namespaces and workloads, with no
    /// policies and no endpoints yet.
    fn of_objects(bundle: &Bundle, options: &Options, nodes: Vec<NodeInfo>) -> World {
        let c = &bundle.cluster;
        let node_by_name: BTreeMap<String, NodeId> = nodes.iter().map(|n| (n.name.clone(), n.id)).collect();
        World {
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
            namespaces: namespaces(c),
            endpoints: Vec::new(),
            endpoint_by_key: BTreeMap::new(),
            endpoint_by_ip: HashMap::new(),
            unplaced: BTreeSet::new(),
            by_namespace: HashMap::new(),
            label_index: HashMap::new(),
            workloads: workloads(c),
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
        }
    }

    /// The internal ranges and the nodes' readiness, then the policies in
    /// name order: floating-IP claims checked, gateways resolved, slots
    /// assigned.
    fn resolve_policies(&mut self, pol_src: &[&Policy], diags: &mut Vec<Diagnostic>) {
        self.internal = self.compute_internal();
        self.ready_health = crate::ir::Health::with_down(self.nodes.iter().filter(|n| !n.ready).filter_map(|n| n.ip));
        self.refused_floating = self.check_floating(pol_src, diags);
        // Many policies share gateway selectors: resolve each distinct one once.
        let mut gw_cache: HashMap<String, Option<NodeId>> = HashMap::new();
        for (i, p) in pol_src.iter().enumerate() {
            let gateways = self.resolve_gateways_cached(p, &mut gw_cache);
            let destinations: Vec<Cidr> = p.destination_cidrs.iter().map(|c| c.value.network()).collect();
            let excluded: Vec<Cidr> = p.excluded_cidrs.iter().map(|c| c.value.network()).collect();
            self.policies.push(PolicyInfo {
                id: PolicyId(i as u32),
                name: p.name.value.clone(),
                ast: (*p).clone(),
                captures: captures(&destinations, &excluded),
                destinations,
                excluded,
                gateways,
                gateway_slots: Vec::new(),
            });
            self.policy_by_name.insert(p.name.value.clone(), PolicyId(i as u32));
        }
        self.assign_slots();
        self.selection = vec![BTreeSet::new(); self.policies.len()];
        self.cilium_selection = vec![BTreeSet::new(); self.policies.len()];
    }

    /// The endpoints, by `namespace/name` (the first of duplicates wins),
    /// with the dangling references and contested IPs reported.
    fn add_endpoints(&mut self, pods: &[Pod], diags: &mut Vec<Diagnostic>) {
        let mut pods: Vec<(String, &Pod)> = pods.iter().filter(|p| p.is_endpoint()).map(|p| (p.key(), p)).collect();
        pods.sort_by(|a, b| a.0.cmp(&b.0));
        pods.dedup_by(|b, a| a.0 == b.0);
        let mut missing_ns: BTreeSet<String> = BTreeSet::new();
        for (_, pod) in pods {
            if !self.namespaces.contains_key(&pod.namespace) && missing_ns.insert(pod.namespace.clone()) {
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
                && !self.node_by_name.contains_key(n)
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
                match self.endpoint_by_ip.get(&ip) {
                    Some(owner) => {
                        self.contested_ips = true;
                        let owner = self.endpoints[owner.index()].key.clone();
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
                self.non_endpoints.insert(pod.key(), "its IPs belong to other pods");
                continue;
            }
            let id = self.insert_endpoint(pod, kept);
            self.index_endpoint(id);
        }
    }

    /// Selection, per policy, through the label index.
    fn select_all(&mut self) {
        for pid in 0..self.policies.len() {
            let (egret, cilium) = self.select_indexed(PolicyId(pid as u32));
            for e in &egret {
                self.selected_by[e.index()].push(PolicyId(pid as u32));
            }
            self.selection[pid] = egret;
            self.cilium_selection[pid] = cilium;
        }
    }
}

/// Nodes, by name (the first of duplicates wins), each with its
/// NodeNetwork (the first for it); a NodeNetwork for no known node is
/// reported and ignored.
/// A node's underlay address (SEMANTICS.md, "Nodes"): its first IPv4
/// InternalIP, else its first IPv6 one; dual-stack clusters keep the IPv4
/// underlay, an IPv6-only node tunnels over IPv6.
pub fn underlay_address(internal_ips: &[IpAddr]) -> Option<IpAddr> {
    internal_ips.iter().find(|ip| ip.is_ipv4()).or_else(|| internal_ips.first()).copied()
}

fn nodes(c: &Cluster, diags: &mut Vec<Diagnostic>) -> Vec<NodeInfo> {
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
            ip: underlay_address(&n.internal_ips),
            internal_ips: n.internal_ips.clone(),
            pod_cidrs: n.pod_cidrs.iter().map(Cidr::network).collect(),
            ready: n.ready.unwrap_or(true),
            network: None,
        })
        .collect();
    let node_by_name: BTreeMap<&str, NodeId> = nodes.iter().map(|n| (n.name.as_str(), n.id)).collect();
    let mut networks: Vec<(NodeId, &NodeNetwork)> = Vec::new();
    for nn in &c.node_networks {
        match node_by_name.get(nn.node.value.as_str()) {
            Some(id) => networks.push((*id, nn)),
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
    for (id, nn) in networks {
        let slot = &mut nodes[id.index()].network;
        if slot.is_none() {
            *slot = Some(nn.clone());
        }
    }
    nodes
}

/// Namespaces from the snapshot (the first of duplicates wins), each with
/// the label the API server always sets.
fn namespaces(c: &Cluster) -> BTreeMap<String, NamespaceInfo> {
    let mut namespaces: BTreeMap<String, NamespaceInfo> = BTreeMap::new();
    for ns in &c.namespaces {
        namespaces.entry(ns.name.value.clone()).or_insert_with(|| {
            let mut labels = ns.labels.clone();
            labels.entry(NAMESPACE_NAME_LABEL.to_string()).or_insert_with(|| ns.name.value.clone());
            NamespaceInfo { name: ns.name.value.clone(), labels, in_snapshot: true }
        });
    }
    namespaces
}

/// Workload templates, by (kind, namespace, name); the first of duplicates wins.
fn workloads(c: &Cluster) -> Vec<WorkloadInfo> {
    let mut wl_src: Vec<&egret_lang::ast::Workload> = c.workloads.iter().collect();
    wl_src.sort_by(|a, b| (a.kind, &a.namespace, &a.name.value).cmp(&(b.kind, &b.namespace, &b.name.value)));
    wl_src.dedup_by(|b, a| (a.kind, &a.namespace, &a.name.value) == (b.kind, &b.namespace, &b.name.value));
    wl_src
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
        .collect()
}

/// Policies, by name; the first of duplicates wins.
fn policies_by_name(bundle: &Bundle) -> Vec<&Policy> {
    let mut pol_src: Vec<&Policy> = bundle.policies.iter().collect();
    pol_src.sort_by(|a, b| a.name.value.cmp(&b.name.value));
    pol_src.dedup_by(|b, a| a.name.value == b.name.value);
    pol_src
}

/// Whether `⋃ dests ∖ ⋃ excl` is non-empty, per family.
fn captures(dests: &[Cidr], excl: &[Cidr]) -> [bool; 2] {
    let d = prefix::merge_ranges(dests.iter().map(Range::of).collect());
    let x = prefix::merge_ranges(excl.iter().map(Range::of).collect());
    let rest = prefix::subtract(&d, &x);
    [rest.iter().any(|r| r.family == Family::V4), rest.iter().any(|r| r.family == Family::V6)]
}
