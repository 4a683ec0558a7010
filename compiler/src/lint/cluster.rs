//! Checks of policies against a cluster snapshot.
//!
//! Everything about what a policy *means* in the cluster — which pods and
//! workloads it selects, which nodes its gateways resolve to, the
//! cluster-internal ranges, the snapshot's own problems (dangling references,
//! unusable objects) — comes from [`crate::resolve::World`], the same
//! resolution the compiler uses. This module only decides what is worth
//! telling the user and how.

use crate::resolve::{EgressIp, EgressSpec, NoEgressIp, NodeInfo, World};
use egret_lang::ast::{FLOATING_ANNOTATION, GatewaySpec, NodeNetwork, Operator, Policy};
use egret_lang::codes;
use egret_lang::diag::Diagnostic;
use egret_lang::net::Family;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

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

/// Nodes that can serve a gateway entry (match, and have an underlay address), by name.
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
            d = d.primary(g.node_selector.span, "matches no node with an InternalIP");
        }
        out.push(
            d.note("the selected pods' traffic to this policy's destinations will be dropped (no-gateway)")
                .help("label the gateway node, e.g. `kubectl label node NAME cilium.io/egress-gateway=true`"),
        );
        return;
    }
    let mut floating_seen = BTreeSet::new();
    for g in gws {
        let nodes = gateway_candidates(w, g);
        if let Some(IpAddr::V4(ip)) = g.floating_ip() {
            // every matching node is a candidate (E0310/E0311 come from resolution)
            if floating_seen.insert(ip) && !w.is_refused_floating(ip) {
                floating_families(w, p, g, ip, out);
            }
            continue;
        }
        if g.floating_ip().is_some() {
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
            egress_ip_on_node(p, g, node, out);
            egress_address_families(w, p, g, node, out);
        }
    }
    egress_ip_on_one_node(w, p, out);
    ipv6_underlay_gateways(w, p, out);
}

/// W0316: a gateway node (of a fixed entry, or a floating IP's candidate)
/// whose underlay address is IPv6: Cilium would not use it, and source nodes
/// of the policy's pods without an IPv6 InternalIP cannot reach it.
fn ipv6_underlay_gateways(w: &World, p: &Policy, out: &mut Vec<Diagnostic>) {
    let Some(info) = w.policy_by_name(&p.name.value) else { return };
    let sources: BTreeSet<&str> = w
        .selection(info.id)
        .iter()
        .filter_map(|e| w.endpoint(*e).node)
        .map(|n| w.node(n))
        .filter(|n| !n.internal_ips.iter().any(IpAddr::is_ipv6))
        .map(|n| n.name.as_str())
        .collect();
    let mut seen = BTreeSet::new();
    for g in p.gateways() {
        let nodes = gateway_candidates(w, g);
        let used: Vec<&NodeInfo> = if g.floating_ip().is_some() { nodes } else { nodes.into_iter().take(1).collect() };
        for n in used {
            let Some(IpAddr::V6(addr)) = n.ip else { continue };
            if !seen.insert(n.name.as_str()) {
                continue;
            }
            let mut d = Diagnostic::new(
                &codes::IPV6_UNDERLAY_GATEWAY,
                format!(
                    "gateway node `{}` of policy `{}` has no IPv4 InternalIP: egret tunnels to it over IPv6 ({addr})",
                    n.name, p.name.value
                ),
            )
            .primary(g.node_selector.span, format!("selects `{}`", n.name))
            .note("Cilium's tunnel is IPv4 only: Cilium does not use this node as a gateway (`egret compile --emit cilium` shows its rows)");
            let cut: Vec<String> = sources.iter().filter(|s| **s != n.name).map(|s| format!("`{s}`")).collect();
            if !cut.is_empty() {
                d = d.note(format!(
                    "{} {} no IPv6 InternalIP: the traffic of the policy's pods there cannot be tunnelled to `{}` and is lost",
                    cut.join(", "),
                    if cut.len() == 1 { "has" } else { "have" },
                    n.name
                ));
            }
            out.push(d.help(if cut.is_empty() {
                "nothing to do in an IPv6-only cluster; to behave as Cilium does, give the node an IPv4 InternalIP"
            } else {
                "give every node whose pods use this gateway an IPv6 address, or give the gateway node an IPv4 InternalIP"
            }));
        }
    }
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
            .help(if ip.value.is_ipv4() {
                format!(
                    "make it floating: add the annotation `{FLOATING_ANNOTATION}: \"true\"` to the policy (`floating ip {}` in .egret)",
                    ip.value
                )
            } else {
                "floating egress IPs are IPv4 only (E0119): give each gateway node its own IPv6 egress IP (an entry each under `egressGateways`) and have the partner allow-list all of them".to_string()
            }),
        );
    }
}

/// How to get a node's facts into a snapshot.
pub const NODE_FACTS_HELP: &str = "each egret-agent publishes its node's NodeNetwork (egret.dev/v1alpha1): take the snapshot with `kubectl get nodes,namespaces,pods,nodenetworks -A -o yaml > snapshot.yaml`; without agents, add a NodeNetwork for the node (see examples/cluster/nodenetwork.yaml)";

/// What a node's facts list: `eth0 [192.0.2.1/24]; eth1 [...]`.
fn addresses(net: &NodeNetwork) -> String {
    net.interfaces
        .iter()
        .map(|i| format!("{} [{}]", i.name, i.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

fn other_family(f: Family) -> Family {
    match f {
        Family::V4 => Family::V6,
        Family::V6 => Family::V4,
    }
}

fn has_destinations(p: &Policy, f: Family) -> bool {
    p.destination_cidrs.iter().any(|c| c.value.family() == f)
}

fn egress_ip_on_node(p: &Policy, g: &GatewaySpec, node: &NodeInfo, out: &mut Vec<Diagnostic>) {
    let Some(net) = &node.network else {
        // the check cannot run: say which, where, and how to get the facts
        let (span, what) = match (&g.egress_ip, &g.interface) {
            (Some(ip), _) => (ip.span, format!("egress IP {} is on", ip.value)),
            (None, Some(i)) => (i.span, format!("interface `{}` exists on", i.value)),
            (None, None) => return,
        };
        out.push(
            Diagnostic::new(
                &codes::NODE_FACTS_MISSING,
                format!("cannot check that {what} gateway node `{}`: the snapshot has no NodeNetwork for it", node.name),
            )
            .primary(span, format!("not checked on `{}`", node.name))
            .note(format!("checks skipped for `{}`: E0306 egress-ip-not-on-node, E0307 interface-not-on-node, E0313 no-egress-address-for-family", node.name))
            .help(NODE_FACTS_HELP),
        );
        return;
    };
    if let Some(ip) = &g.egress_ip
        && !net.interfaces.iter().any(|i| i.addresses.iter().any(|a| a.addr == ip.value))
    {
        let family = Family::of(&ip.value);
        let mut d = Diagnostic::new(
            &codes::EGRESS_IP_NOT_ON_NODE,
            format!("egress IP {} is not on any interface of gateway node `{}`", ip.value, node.name),
        )
        .primary(ip.span, "not configured on the node")
        .note(format!("`{}` has: {}", node.name, addresses(net)));
        if !net.interfaces.iter().flat_map(|i| &i.addresses).any(|a| Family::of(&a.addr) == family) {
            d = d.note(format!("`{}` has no {} address at all", node.name, family_name(family)));
        }
        let other = other_family(family);
        if has_destinations(p, other) {
            d = d.note(format!(
                "the gateway drops the policy's {} traffic too (no-egress-ip): its {} address is taken from the interface holding {}",
                family_name(other),
                family_name(other),
                ip.value
            ));
        }
        out.push(d.help(format!(
            "on the node: `ip addr add {}/{} dev IFACE` (and make it persistent)",
            ip.value,
            if ip.value.is_ipv4() { 32 } else { 128 }
        )));
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
            .note(format!("`{}` has: {}", node.name, addresses(net)))
            .help("name an interface the node has (by name or altName)"),
        );
    }
}

/// E0313: the gateway node's egress interface has no address of a family
/// the policy has destinations of (the egress IP of that family cannot be
/// resolved: the gateway drops that family, `no-egress-ip`). A missing
/// `egressIP` or interface is E0306/E0307 instead.
fn egress_address_families(w: &World, p: &Policy, g: &GatewaySpec, node: &NodeInfo, out: &mut Vec<Diagnostic>) {
    let Some(net) = &node.network else { return };
    for family in [Family::V4, Family::V6] {
        if !has_destinations(p, family) {
            continue;
        }
        let EgressIp::Unavailable { reason: NoEgressIp::NoAddress { interface, .. } } = w.egress_ip(g, node.id, family)
        else {
            continue;
        };
        let fam = family_name(family);
        let (span, via) = match (&g.egress_ip, &g.interface) {
            (Some(ip), _) => (ip.span, format!("the interface holding {}", ip.value)),
            (None, Some(i)) => (i.span, format!("interface `{}`", i.value)),
            (None, None) => (g.node_selector.span, "the default-route interface".to_string()),
        };
        out.push(
            Diagnostic::new(
                &codes::NO_EGRESS_ADDRESS_FOR_FAMILY,
                format!(
                    "gateway node `{}` has no {fam} address on `{interface}` for the {fam} destinations of policy `{}`",
                    node.name, p.name.value
                ),
            )
            .primary(span, format!("{via}: `{interface}` on `{}` has no {fam} address", node.name))
            .note(format!("`{}` has: {}", node.name, addresses(net)))
            .note(format!(
                "the gateway drops the policy's {fam} traffic (no-egress-ip); its {} traffic is not affected by this",
                family_name(other_family(family))
            ))
            .note(format!(
                "Cilium programs the egress IP `{}` for these entries, and its gateway drops them too",
                if family == Family::V4 { "0.0.0.0" } else { "::" }
            ))
            .help(format!(
                "add an {fam} address to `{interface}` on `{}`, or send the {fam} destinations through another interface",
                node.name
            )),
        );
    }
}

/// W0314: the candidates of a floating egress IP (IPv4) differ in what they
/// can do with the policy's IPv6 traffic, which leaves from each
/// candidate's own IPv6 address: some have none (they drop it while they
/// own the IP), or a node the entry selects has no IPv4 InternalIP (it is
/// no candidate at all). Candidates without node facts are not judged.
fn floating_families(w: &World, p: &Policy, g: &GatewaySpec, ip: Ipv4Addr, out: &mut Vec<Diagnostic>) {
    let Some(written) = &g.egress_ip else { return };
    let mut notes = Vec::new();
    let (mut serve, mut drop) = (Vec::new(), Vec::new());
    if has_destinations(p, Family::V6) {
        for n in w.floating_candidates(g).into_iter().filter(|n| n.network.is_some()) {
            match w.egress_for_spec(&EgressSpec::Floating(ip), n.id, Family::V6) {
                EgressIp::Known(a) => serve.push(format!("`{}` from {a}", n.name)),
                EgressIp::Unavailable { reason } => {
                    notes.push(format!(
                        "while `{}` owns {ip}, the policy's IPv6 traffic is dropped there (no-egress-ip): {reason}",
                        n.name
                    ));
                    drop.push(n.name.clone());
                }
                EgressIp::LateBound { .. } => {}
            }
        }
    }
    let ipv6_only: Vec<&NodeInfo> =
        w.matching_nodes(&g.node_selector).into_iter().filter(|n| n.ip.is_some_and(|a| a.is_ipv6())).collect();
    if drop.is_empty() && ipv6_only.is_empty() {
        return;
    }
    if !serve.is_empty() {
        notes.push(format!(
            "the IPv6 traffic leaves {}: that address does not float, so IPv6 connections break when {ip} moves",
            serve.join(", ")
        ));
    }
    for n in &ipv6_only {
        notes.push(format!(
            "candidate `{}` has no IPv4 InternalIP (reached over IPv6, W0316): while it owns {ip}, the policy's IPv4 traffic leaves it only if it routes IPv4",
            n.name
        ));
    }
    let mut d = Diagnostic::new(
        &codes::FLOATING_CANDIDATES_MIXED_FAMILIES,
        format!(
            "the candidates of floating egress IP {ip} of policy `{}` differ in the address families they serve",
            p.name.value
        ),
    )
    .primary(written.span, "floating (IPv4 only)")
    .secondary(g.node_selector.span, "the candidates");
    for n in notes {
        d = d.note(n);
    }
    out.push(d.help(if drop.is_empty() {
        "select only nodes with an IPv4 InternalIP, or give the IPv6-only node an IPv4 address".to_string()
    } else {
        format!(
            "give {} an IPv6 address on the egress interface, or select only dual-stack nodes",
            drop.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        )
    }));
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
