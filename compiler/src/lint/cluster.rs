//! Checks of policies against a cluster snapshot.
//!
//! Selection here follows SEMANTICS.md ("Policy fields", "Endpoints"): an item
//! matches a pod when its podSelector matches the pod's labels (plus the
//! pseudo-label `io.kubernetes.pod.namespace`), its namespaceSelector the
//! namespace's labels (plus `kubernetes.io/metadata.name`), and its own
//! nodeSelector the labels of the pod's node. Workloads count as selected when
//! their pod template would be (their pods' node is not known yet, so a
//! nodeSelector is assumed satisfiable).

use super::Options;
use super::constraints::{NAMESPACE_NAME_LABEL, POD_NAMESPACE_LABEL};
use egret_lang::ast::{Bundle, GatewaySpec, LabelSelector, Labels, Node, NodeNetwork, Policy, SelectorItem};
use egret_lang::codes;
use egret_lang::diag::Diagnostic;
use egret_lang::net::Cidr;
use std::collections::{BTreeMap, BTreeSet};

struct Index<'a> {
    nodes: BTreeMap<&'a str, &'a Node>,
    namespaces: BTreeMap<&'a str, Labels>,
    networks: BTreeMap<&'a str, &'a NodeNetwork>,
}

impl<'a> Index<'a> {
    fn new(b: &'a Bundle) -> Index<'a> {
        let mut namespaces: BTreeMap<&str, Labels> = BTreeMap::new();
        for ns in &b.cluster.namespaces {
            let mut l = ns.labels.clone();
            l.entry(NAMESPACE_NAME_LABEL.to_string()).or_insert_with(|| ns.name.value.clone());
            namespaces.insert(&ns.name.value, l);
        }
        Index {
            nodes: b.cluster.nodes.iter().map(|n| (n.name.value.as_str(), n)).collect(),
            namespaces,
            networks: b.cluster.node_networks.iter().map(|n| (n.node.value.as_str(), n)).collect(),
        }
    }

    fn namespace_labels(&self, ns: &str) -> Labels {
        self.namespaces.get(ns).cloned().unwrap_or_else(|| {
            let mut l = Labels::new();
            l.insert(NAMESPACE_NAME_LABEL.to_string(), ns.to_string());
            l
        })
    }

    /// Nodes matching a gateway selector that can serve (have an IPv4 InternalIP), by name.
    fn gateway_nodes(&self, sel: &LabelSelector) -> Vec<&'a Node> {
        self.nodes.values().copied().filter(|n| sel.matches(&n.labels) && n.internal_ips.iter().any(|i| i.is_ipv4())).collect()
    }
}

fn item_matches(item: &SelectorItem, ns: &str, pod_labels: &Labels, ns_labels: &Labels, node_labels: Option<&Labels>) -> bool {
    if item.pod_selector.is_none() && item.namespace_selector.is_none() {
        return false;
    }
    if let Some(ps) = &item.pod_selector {
        let mut l = pod_labels.clone();
        l.insert(POD_NAMESPACE_LABEL.to_string(), ns.to_string());
        if !ps.matches(&l) {
            return false;
        }
    }
    if let Some(nss) = &item.namespace_selector
        && !nss.matches(ns_labels)
    {
        return false;
    }
    match (&item.node_selector, node_labels) {
        (Some(sel), Some(l)) => sel.matches(l),
        (Some(sel), None) => sel.is_empty() || true,
        (None, _) => true,
    }
}

pub fn check(b: &Bundle, opts: &Options) -> Vec<Diagnostic> {
    let ix = Index::new(b);
    let mut out = Vec::new();
    dangling(b, &ix, &mut out);
    let internal = internal_ranges(b, opts);
    for p in &b.policies {
        selects_nothing(b, &ix, p, &mut out);
        gateways(&ix, p, &mut out);
        namespace_labels(b, &ix, p, &mut out);
        cluster_internal(p, &internal, &mut out);
    }
    out
}

fn dangling(b: &Bundle, ix: &Index<'_>, out: &mut Vec<Diagnostic>) {
    for pod in &b.cluster.pods {
        if let Some(n) = &pod.node_name
            && !ix.nodes.is_empty()
            && !ix.nodes.contains_key(n.as_str())
        {
            out.push(
                Diagnostic::new(&codes::DANGLING_REFERENCE, format!("pod `{}` runs on node `{n}`, which the snapshot does not contain", pod.key()))
                    .primary(pod.name.span, "this pod")
                    .help("include the node (`kubectl get nodes -o yaml`); its labels are taken as empty"),
            );
        }
        if !ix.namespaces.is_empty() && !ix.namespaces.contains_key(pod.namespace.as_str()) {
            out.push(
                Diagnostic::new(&codes::DANGLING_REFERENCE, format!("pod `{}` is in namespace `{}`, which the snapshot does not contain", pod.key(), pod.namespace))
                    .primary(pod.name.span, "this pod")
                    .help("include the namespace (`kubectl get namespaces -o yaml`); its labels are taken as only `kubernetes.io/metadata.name`"),
            );
        }
    }
    for nn in &b.cluster.node_networks {
        if !ix.nodes.contains_key(nn.node.value.as_str()) {
            out.push(
                Diagnostic::new(&codes::DANGLING_REFERENCE, format!("NodeNetwork `{}` names no node of the snapshot", nn.node.value))
                    .primary(nn.node.span, "unknown node")
                    .help("NodeNetwork's `metadata.name` must be a node name"),
            );
        }
    }
}

fn selects_nothing(b: &Bundle, ix: &Index<'_>, p: &Policy, out: &mut Vec<Diagnostic>) {
    if p.selectors.is_empty() {
        return;
    }
    let any_pod = b.cluster.pods.iter().filter(|pod| pod.is_endpoint()).any(|pod| {
        let nsl = ix.namespace_labels(&pod.namespace);
        let nl = pod.node_name.as_deref().and_then(|n| ix.nodes.get(n)).map(|n| &n.labels);
        let empty = Labels::new();
        p.selectors.iter().any(|i| item_matches(i, &pod.namespace, &pod.labels, &nsl, Some(nl.unwrap_or(&empty))))
    });
    if any_pod {
        return;
    }
    let any_workload = b.cluster.workloads.iter().any(|w| {
        let nsl = ix.namespace_labels(&w.namespace);
        p.selectors.iter().any(|i| item_matches(i, &w.namespace, &w.template_labels, &nsl, None))
    });
    if any_workload {
        return;
    }
    out.push(
        Diagnostic::new(&codes::SELECTS_NOTHING, format!("policy `{}` selects no pod or workload in the snapshot", p.name.value))
            .primary(p.selectors[0].span, "matches nothing")
            .note(format!("the snapshot has {} pods and {} workloads", b.cluster.pods.len(), b.cluster.workloads.len()))
            .help("check the labels; `egret explain --from NAMESPACE/POD --to IP` shows why a pod is not selected"),
    );
}

fn gateways(ix: &Index<'_>, p: &Policy, out: &mut Vec<Diagnostic>) {
    let gws = p.gateways();
    if gws.is_empty() {
        return;
    }
    let resolved: Vec<Vec<&Node>> = gws.iter().map(|g| ix.gateway_nodes(&g.node_selector)).collect();
    if resolved.iter().all(Vec::is_empty) {
        let mut d = Diagnostic::new(&codes::NO_GATEWAY_NODE, format!("no node can be the gateway of policy `{}`", p.name.value));
        for g in gws {
            d = d.primary(g.node_selector.span, "matches no node with an IPv4 InternalIP");
        }
        out.push(
            d.note("the selected pods' traffic to this policy's destinations will be dropped (no-gateway)")
                .help("label the gateway node, e.g. `kubectl label node NAME cilium.io/egress-gateway=true`"),
        );
        return;
    }
    for (g, nodes) in gws.iter().zip(&resolved) {
        if nodes.len() > 1 {
            let names: Vec<&str> = nodes.iter().map(|n| n.name.value.as_str()).collect();
            out.push(
                Diagnostic::new(
                    &codes::SEVERAL_GATEWAY_NODES,
                    format!("gateway selector matches {} nodes; only `{}` is used", nodes.len(), names[0]),
                )
                .primary(g.node_selector.span, format!("matches {}", names.join(", ")))
                .note("a gateway entry resolves to the first matching node by name; the others stay idle")
                .help("list each gateway node under `egressGateways` to spread endpoints and fail over"),
            );
        }
        if let Some(node) = nodes.first() {
            egress_ip_on_node(ix, g, node, out);
        }
    }
}

fn egress_ip_on_node(ix: &Index<'_>, g: &GatewaySpec, node: &Node, out: &mut Vec<Diagnostic>) {
    let Some(net) = ix.networks.get(node.name.value.as_str()) else { return };
    if let Some(ip) = &g.egress_ip
        && !net.interfaces.iter().any(|i| i.addresses.iter().any(|a| a.addr == ip.value))
    {
        out.push(
            Diagnostic::new(&codes::EGRESS_IP_NOT_ON_NODE, format!("egress IP {} is not on any interface of gateway node `{}`", ip.value, node.name.value))
                .primary(ip.span, "not configured on the node")
                .note(format!(
                    "`{}` has: {}",
                    node.name.value,
                    net.interfaces
                        .iter()
                        .map(|i| format!("{} [{}]", i.name, i.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")))
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
                .help(format!("on the node: `ip addr add {}/{} dev IFACE` (and make it persistent)", ip.value, if ip.value.is_ipv4() { 32 } else { 128 })),
        );
    }
    if let Some(iface) = &g.interface
        && !net.interfaces.iter().any(|i| i.name == iface.value || i.alt_names.contains(&iface.value))
    {
        out.push(
            Diagnostic::new(&codes::INTERFACE_NOT_ON_NODE, format!("gateway node `{}` has no interface `{}`", node.name.value, iface.value))
                .primary(iface.span, "no such interface")
                .note(format!("`{}` has: {}", node.name.value, net.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")))
                .help("name an interface the node has (by name or altName)"),
        );
    }
}

fn namespace_labels(b: &Bundle, ix: &Index<'_>, p: &Policy, out: &mut Vec<Diagnostic>) {
    if b.cluster.namespaces.is_empty() {
        return;
    }
    let known: BTreeSet<&str> = ix.namespaces.values().flat_map(|l| l.keys().map(String::as_str)).collect();
    for item in &p.selectors {
        let Some(ns) = &item.namespace_selector else { continue };
        let positive = ns.match_labels.iter().map(|(k, v)| (k, Some(v))).chain(
            ns.match_expressions
                .iter()
                .filter(|r| matches!(r.operator.value, egret_lang::ast::Operator::In | egret_lang::ast::Operator::Exists))
                .map(|r| (&r.key, r.values.first())),
        );
        for (k, v) in positive {
            if known.contains(k.value.as_str()) {
                continue;
            }
            let help = match v {
                Some(v) if ix.namespaces.contains_key(v.value.as_str()) => format!(
                    "namespace `{}` exists: select it by name with `{NAMESPACE_NAME_LABEL}: {}` (the API server sets this label on every namespace)",
                    v.value, v.value
                ),
                _ => format!("select namespaces by name with `{NAMESPACE_NAME_LABEL}`, or label the namespace first"),
            };
            out.push(
                Diagnostic::new(&codes::NAMESPACE_LABEL_UNKNOWN, format!("no namespace in the snapshot has a `{}` label", k.value))
                    .primary(k.span, "no namespace carries this label")
                    .help(help),
            );
        }
    }
}

fn internal_ranges(b: &Bundle, opts: &Options) -> Vec<(Cidr, String)> {
    let mut out = Vec::new();
    for n in &b.cluster.nodes {
        for c in &n.pod_cidrs {
            out.push((*c, format!("pod CIDR of node `{}`", n.name.value)));
        }
        for ip in &n.internal_ips {
            out.push((Cidr::new(*ip, if ip.is_ipv4() { 32 } else { 128 }), format!("InternalIP of node `{}`", n.name.value)));
        }
    }
    for c in &opts.service_cidrs {
        out.push((c.network(), "service CIDR".to_string()));
    }
    out
}

fn cluster_internal(p: &Policy, internal: &[(Cidr, String)], out: &mut Vec<Diagnostic>) {
    for d in &p.destination_cidrs {
        let dn = d.value.network();
        // A default route means "everything outside the cluster"; only a destination
        // written more specifically reveals an intent to capture cluster ranges.
        if dn.len == 0 {
            continue;
        }
        let hits: Vec<&(Cidr, String)> = internal
            .iter()
            .filter(|(c, _)| dn.overlaps(c) && !p.excluded_cidrs.iter().any(|x| x.value.network().contains(c)))
            .collect();
        if hits.is_empty() {
            continue;
        }
        let shown: Vec<String> = hits.iter().take(3).map(|(c, why)| format!("{c} ({why})")).collect();
        let more = if hits.len() > 3 { format!(" and {} more", hits.len() - 3) } else { String::new() };
        out.push(
            Diagnostic::new(&codes::DESTINATION_CLUSTER_INTERNAL, format!("destination `{}` includes cluster-internal addresses", d.value))
                .primary(d.span, "partly cluster-internal")
                .note(format!("never sent to a gateway: {}{more}", shown.join(", ")))
                .help("traffic inside the cluster stays on the normal path; add the ranges to excludedCIDRs to make that explicit"),
        );
    }
}
