//! Checks of policies against a cluster snapshot.
//!
//! Everything about what a policy *means* in the cluster — which pods and
//! workloads it selects, which nodes its gateways resolve to, the
//! cluster-internal ranges, the snapshot's own problems (dangling references,
//! unusable objects) — comes from [`crate::resolve::World`], the same
//! resolution the compiler uses. This module only decides what is worth
//! telling the user and how.

use crate::resolve::{EgressSpec, NodeInfo, World};
use egret_lang::ast::{FLOATING_ANNOTATION, GatewaySpec, Operator, Policy};
use egret_lang::codes;
use egret_lang::diag::Diagnostic;
use std::collections::BTreeSet;
use std::net::IpAddr;

const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub fn check(world: &World, policies: &[Policy]) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = world.diagnostics().to_vec();
    for p in policies {
        selects_nothing(world, p, &mut out);
        gateways(world, p, &mut out);
        namespace_labels(world, p, &mut out);
        cluster_internal(world, p, &mut out);
    }
    out
}

fn selects_nothing(w: &World, p: &Policy, out: &mut Vec<Diagnostic>) {
    if p.selectors.is_empty() || !w.selected_endpoints(p).is_empty() || !w.selected_workloads(p).is_empty() {
        return;
    }
    out.push(
        Diagnostic::new(
            &codes::SELECTS_NOTHING,
            format!("policy `{}` selects no pod or workload in the snapshot", p.name.value),
        )
        .primary(p.selectors[0].span, "matches nothing")
        .note(format!("the snapshot has {} endpoints and {} workloads", w.endpoints().count(), w.workloads().len()))
        .help("check the labels; `egret explain --from NAMESPACE/POD --to IP` shows why a pod is not selected"),
    );
}

/// Nodes that can serve a gateway entry (match, and have an IPv4 InternalIP), by name.
fn gateway_candidates<'w>(w: &'w World, g: &GatewaySpec) -> Vec<&'w NodeInfo> {
    w.matching_nodes(&g.node_selector).into_iter().filter(|n| n.ip.is_some()).collect()
}

fn gateways(w: &World, p: &Policy, out: &mut Vec<Diagnostic>) {
    let gws = p.gateways();
    if gws.is_empty() {
        return;
    }
    // a refused floating IP (E0310, E0311) already says why its entries have no node
    let refused = |g: &GatewaySpec| matches!(g.floating_ip(), Some(IpAddr::V4(ip)) if w.is_refused_floating(ip));
    if w.resolve_gateways(p).is_empty() && !gws.iter().all(refused) {
        let mut d = Diagnostic::new(
            &codes::NO_GATEWAY_NODE,
            format!("no node can be the gateway of policy `{}`", p.name.value),
        );
        for g in gws.iter().filter(|g| !refused(g)) {
            d = d.primary(g.node_selector.span, "matches no node with an IPv4 InternalIP");
        }
        out.push(
            d.note("the selected pods' traffic to this policy's destinations will be dropped (no-gateway)")
                .help("label the gateway node, e.g. `kubectl label node NAME cilium.io/egress-gateway=true`"),
        );
        return;
    }
    for g in gws {
        let nodes = gateway_candidates(w, g);
        if g.floating_ip().is_some() {
            // every matching node is a candidate (E0310/E0311 come from resolution)
            continue;
        }
        if nodes.len() > 1 {
            let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
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
            egress_ip_on_node(g, node, out);
        }
    }
    egress_ip_on_one_node(w, p, out);
}

/// W0312: an explicit (fixed) egress IP that can live on at most one of the
/// nodes the policy's gateway entries select, while they select two or
/// more: when its node fails, its endpoints fail over and leave from
/// another IP. "Can live on" a node: an entry resolving to that node names
/// the IP, or the node's facts hold the IP (any prefix). Floating IPs and
/// entries without `egressIP` (interface, default route) are not reported.
fn egress_ip_on_one_node(w: &World, p: &Policy, out: &mut Vec<Diagnostic>) {
    let selected: BTreeSet<&str> =
        p.gateways().iter().flat_map(|g| gateway_candidates(w, g)).map(|n| n.name.as_str()).collect();
    if selected.len() < 2 {
        return;
    }
    let resolved = w.resolve_gateways(p);
    let mut seen = BTreeSet::new();
    for g in p.gateways() {
        let Some(ip) = g.egress_ip.as_ref().filter(|_| g.floating.is_none()) else { continue };
        if !seen.insert(ip.value) {
            continue;
        }
        let holders: BTreeSet<&str> = selected
            .iter()
            .copied()
            .filter(|name| {
                resolved.iter().any(|r| r.node_name == *name && r.spec == EgressSpec::EgressIp(ip.value))
                    || w.node_by_name(name).and_then(|n| n.network.as_ref()).is_some_and(|net| {
                        net.interfaces.iter().any(|i| i.addresses.iter().any(|a| a.addr == ip.value))
                    })
            })
            .collect();
        if holders.len() > 1 {
            continue;
        }
        let on = holders.first().map_or_else(|| "no node".to_string(), |n| format!("`{n}`"));
        out.push(
            Diagnostic::new(
                &codes::EGRESS_IP_ON_ONE_NODE,
                format!(
                    "egress IP {} of policy `{}` can only live on {on}, of its {} gateway nodes",
                    ip.value,
                    p.name.value,
                    selected.len()
                ),
            )
            .primary(ip.span, format!("only on {on}"))
            .note("when that node fails, its endpoints move to another gateway and leave from another IP")
            .help(format!(
                "make it floating: add the annotation `{FLOATING_ANNOTATION}: \"true\"` to the policy (`floating ip {}` in .egret)",
                ip.value
            )),
        );
    }
}

fn egress_ip_on_node(g: &GatewaySpec, node: &NodeInfo, out: &mut Vec<Diagnostic>) {
    let Some(net) = &node.network else { return };
    let has = || {
        net.interfaces
            .iter()
            .map(|i| {
                format!("{} [{}]", i.name, i.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if let Some(ip) = &g.egress_ip
        && !net.interfaces.iter().any(|i| i.addresses.iter().any(|a| a.addr == ip.value))
    {
        out.push(
            Diagnostic::new(
                &codes::EGRESS_IP_NOT_ON_NODE,
                format!("egress IP {} is not on any interface of gateway node `{}`", ip.value, node.name),
            )
            .primary(ip.span, "not configured on the node")
            .note(format!("`{}` has: {}", node.name, has()))
            .help(format!(
                "on the node: `ip addr add {}/{} dev IFACE` (and make it persistent)",
                ip.value,
                if ip.value.is_ipv4() { 32 } else { 128 }
            )),
        );
    }
    if let Some(iface) = &g.interface
        && !net.interfaces.iter().any(|i| i.name == iface.value || i.alt_names.contains(&iface.value))
    {
        out.push(
            Diagnostic::new(
                &codes::INTERFACE_NOT_ON_NODE,
                format!("gateway node `{}` has no interface `{}`", node.name, iface.value),
            )
            .primary(iface.span, "no such interface")
            .note(format!("`{}` has: {}", node.name, has()))
            .help("name an interface the node has (by name or altName)"),
        );
    }
}

fn namespace_labels(w: &World, p: &Policy, out: &mut Vec<Diagnostic>) {
    if !w.namespaces().any(|n| n.in_snapshot) {
        return;
    }
    let known: BTreeSet<&str> = w.namespaces().flat_map(|n| n.labels.keys().map(String::as_str)).collect();
    for item in &p.selectors {
        let Some(ns) = &item.namespace_selector else { continue };
        let positive = ns.match_labels.iter().map(|(k, v)| (k, Some(v))).chain(
            ns.match_expressions
                .iter()
                .filter(|r| matches!(r.operator.value, Operator::In | Operator::Exists))
                .map(|r| (&r.key, r.values.first())),
        );
        for (k, v) in positive {
            if known.contains(k.value.as_str()) {
                continue;
            }
            let help = match v {
                Some(v) if w.namespace(&v.value).is_some() => format!(
                    "namespace `{}` exists: select it by name with `{NAMESPACE_NAME_LABEL}: {}` (the API server sets this label on every namespace)",
                    v.value, v.value
                ),
                _ => format!("select namespaces by name with `{NAMESPACE_NAME_LABEL}`, or label the namespace first"),
            };
            out.push(
                Diagnostic::new(
                    &codes::NAMESPACE_LABEL_UNKNOWN,
                    format!("no namespace in the snapshot has a `{}` label", k.value),
                )
                .primary(k.span, "no namespace carries this label")
                .help(help),
            );
        }
    }
}

fn cluster_internal(w: &World, p: &Policy, out: &mut Vec<Diagnostic>) {
    for d in &p.destination_cidrs {
        let dn = d.value.network();
        // A default route means "everything outside the cluster"; only a destination
        // written more specifically reveals an intent to capture cluster ranges.
        if dn.len == 0 {
            continue;
        }
        let hits: Vec<String> = w
            .internal_ranges()
            .sources
            .iter()
            .filter(|(c, _)| dn.overlaps(c) && !p.excluded_cidrs.iter().any(|x| x.value.network().contains(c)))
            .map(|(c, why)| format!("{c} ({why})"))
            .collect();
        if hits.is_empty() {
            continue;
        }
        let more = if hits.len() > 3 { format!(" and {} more", hits.len() - 3) } else { String::new() };
        out.push(
            Diagnostic::new(&codes::DESTINATION_CLUSTER_INTERNAL, format!("destination `{}` includes cluster-internal addresses", d.value))
                .primary(d.span, "partly cluster-internal")
                .note(format!("never sent to a gateway: {}{more}", hits[..hits.len().min(3)].join(", ")))
                .help("traffic inside the cluster stays on the normal path; add the ranges to excludedCIDRs to make that explicit"),
        );
    }
}
