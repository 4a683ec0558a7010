//! Field validation shared by both policy syntaxes.
//!
//! Checks what a single policy (or a bundle's names) can get wrong on its own,
//! independent of other policies and of the cluster: label keys and values,
//! operators, host bits in CIDRs, gateway fields, names. Cross-policy and
//! cluster checks are the linter's (in `egret-compiler`).

use crate::ast::*;
use crate::codes;
use crate::diag::Diagnostic;
use crate::source::Spanned;
use std::collections::BTreeMap;

/// Keys that are object fields, not labels: a pod selector on them matches nothing.
pub const NOT_POD_LABEL_KEYS: &[(&str, &str)] = &[
    ("namespace", "io.kubernetes.pod.namespace"),
    ("metadata.namespace", "io.kubernetes.pod.namespace"),
    ("kubernetes.io/metadata.name", "io.kubernetes.pod.namespace"),
    ("name", "app.kubernetes.io/name"),
    ("metadata.name", "app.kubernetes.io/name"),
    ("nodeName", "a nodeSelector"),
    ("spec.nodeName", "a nodeSelector"),
];

/// Validates one policy's fields.
pub fn policy(p: &Policy) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if !is_dns_subdomain(&p.name.value) {
        out.push(
            Diagnostic::new(&codes::INVALID_NAME, format!("`{}` is not a valid policy name", p.name.value))
                .primary(p.name.span, "not a DNS subdomain")
                .help("use lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit"),
        );
    }
    if let Some(ns) = &p.namespace {
        out.push(
            Diagnostic::new(
                &codes::CLUSTER_SCOPED_NAMESPACE,
                format!("CiliumEgressGatewayPolicy is cluster-scoped; `metadata.namespace: {}` does not restrict it", ns.value),
            )
            .primary(ns.span, "remove this")
            .help(format!(
                "to select pods in `{}` only, add `namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {}}}}}` to each selector item",
                ns.value, ns.value
            )),
        );
    }
    for item in &p.selectors {
        if item.pod_selector.is_none() && item.namespace_selector.is_none() {
            out.push(
                Diagnostic::new(
                    &codes::EMPTY_SELECTOR_ITEM,
                    "selector item has neither `podSelector` nor `namespaceSelector`",
                )
                .primary(item.span, "this item selects nothing")
                .help("add `podSelector: {}` to select every pod, or a `namespaceSelector`"),
            );
        }
        if let Some(s) = &item.pod_selector {
            selector(s, p.origin, &mut out);
            for k in s.keys() {
                if let Some((_, instead)) = NOT_POD_LABEL_KEYS.iter().find(|(bad, _)| *bad == k.value) {
                    out.push(
                        Diagnostic::new(
                            &codes::LABEL_KEY_NOT_ON_PODS,
                            format!("pods do not carry a `{}` label", k.value),
                        )
                        .primary(k.span, "no pod has this label")
                        .note("pod selectors match pod labels, not object fields")
                        .help(format!("use `{instead}` instead")),
                    );
                }
            }
        }
        for s in [&item.namespace_selector, &item.node_selector].into_iter().flatten() {
            selector(s, p.origin, &mut out);
        }
    }
    for c in p.destination_cidrs.iter().chain(&p.excluded_cidrs) {
        if c.value.has_host_bits() {
            let n = c.value.network();
            out.push(
                Diagnostic::new(&codes::CIDR_HOST_BITS, format!("`{}` has host bits set", c.value))
                    .primary(c.span, format!("bits after /{} are not zero", c.value.len))
                    .help(format!(
                        "did you mean `{n}`? (or `{}/{}` for the single address)",
                        c.value.addr,
                        c.value.family().bits()
                    )),
            );
        }
    }
    if p.egress_gateway.is_some() && !p.egress_gateways.is_empty() {
        let g = p.egress_gateway.as_ref().map(|g| g.span).unwrap_or(p.spec_span);
        out.push(
            Diagnostic::new(&codes::GATEWAY_IGNORED, "`egressGateway` is ignored because `egressGateways` is set")
                .primary(g, "has no effect")
                .help("move this gateway into `egressGateways`, or delete it"),
        );
    }
    if p.egress_gateways.len() > 64 {
        out.push(
            Diagnostic::new(
                &codes::TOO_MANY_GATEWAYS,
                format!("{} egressGateways; at most 64 are allowed", p.egress_gateways.len()),
            )
            .primary(p.egress_gateways[64].span, "the 65th gateway")
            .help("split the policy into several policies"),
        );
    }
    for g in p.egress_gateway.iter().chain(&p.egress_gateways) {
        selector(&g.node_selector, p.origin, &mut out);
        if let (Some(ip), Some(iface)) = (&g.egress_ip, &g.interface) {
            out.push(
                Diagnostic::new(&codes::EGRESS_IP_AND_INTERFACE, "a gateway sets both `egressIP` and `interface`")
                    .primary(iface.span, "`interface` here")
                    .secondary(ip.span, "`egressIP` here")
                    .help("keep one: `egressIP` to name the address, or `interface` to use that interface's first address"),
            );
        }
    }
    floating(p, &mut out);
    out
}

/// The floating opt-in: IPv4 only, and all or none of a policy's egress IPs
/// (the CRD annotation is per policy).
fn floating(p: &Policy, out: &mut Vec<Diagnostic>) {
    let with_ip: Vec<&GatewaySpec> =
        p.egress_gateway.iter().chain(&p.egress_gateways).filter(|g| g.egress_ip.is_some()).collect();
    for g in &with_ip {
        if let (Some(opt_in), Some(ip)) = (g.floating, &g.egress_ip)
            && ip.value.is_ipv6()
        {
            out.push(
                Diagnostic::new(
                    &codes::FLOATING_IPV6,
                    format!("floating egress IP {} is IPv6; floating IPv6 is not supported yet", ip.value),
                )
                .primary(ip.span, "an IPv6 address")
                .secondary(opt_in, "made floating here")
                .note(
                    "only an IPv4 address can move between gateways: egret announces a moved address with gratuitous ARP, and sends no unsolicited IPv6 neighbour advertisements yet",
                )
                .help("float an IPv4 address, or make this egress IP fixed (remove `floating` / the annotation)"),
            );
        }
    }
    let (floating, fixed): (Vec<&GatewaySpec>, Vec<&GatewaySpec>) = with_ip.iter().partition(|g| g.floating.is_some());
    if let (Some(f), Some(x)) = (floating.first(), fixed.first())
        && let (Some(opt_in), Some(ip)) = (f.floating, &x.egress_ip)
    {
        out.push(
            Diagnostic::new(
                &codes::FLOATING_MIXED,
                format!("policy `{}` floats some of its egress IPs but not {}", p.name.value, ip.value),
            )
            .primary(ip.span, "not floating")
            .secondary(opt_in, "floating")
            .note("the CRD's opt-in is one annotation that floats every `egressIP` of the policy")
            .help("write `floating` on every `via … ip` line of this policy, or on none; or split the policy"),
        );
    }
}

/// Label keys, values and operators. A CRD's selectors are checked as
/// Cilium's API server checks them (the values of `matchLabels`, by the CRD's
/// pattern); what it lets through but Cilium's agent cannot build is W0125,
/// reported (and read as Cilium reads it) by the YAML front end.
fn selector(s: &LabelSelector, origin: Origin, out: &mut Vec<Diagnostic>) {
    if origin == Origin::Crd {
        for (_, v) in &s.match_labels {
            value(v, out);
        }
        return;
    }
    for (k, v) in &s.match_labels {
        key(k, out);
        value(v, out);
    }
    for r in &s.match_expressions {
        key(&r.key, out);
        for v in &r.values {
            value(v, out);
        }
        match r.operator.value {
            Operator::In | Operator::NotIn if r.values.is_empty() => out.push(
                Diagnostic::new(
                    &codes::INVALID_OPERATOR,
                    format!("operator `{}` needs at least one value", r.operator.value.as_str()),
                )
                .primary(r.operator.span, "no values")
                .help("add `values: [...]`, or use `Exists` / `DoesNotExist`"),
            ),
            Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => out.push(
                Diagnostic::new(
                    &codes::INVALID_OPERATOR,
                    format!("operator `{}` takes no values", r.operator.value.as_str()),
                )
                .primary(r.values[0].span, "unexpected values")
                .help("remove `values`, or use `In` / `NotIn`"),
            ),
            _ => {}
        }
    }
}

fn key(k: &Spanned<String>, out: &mut Vec<Diagnostic>) {
    if let Err(why) = check_label_key(&k.value) {
        out.push(
            Diagnostic::new(&codes::INVALID_LABEL_KEY, format!("`{}` is not a valid label key: {why}", k.value))
                .primary(k.span, "invalid label key")
                .help("a key is `[prefix/]name`: name ≤63 chars of [A-Za-z0-9._-] starting and ending alphanumeric; prefix a DNS subdomain"),
        );
    }
}

fn value(v: &Spanned<String>, out: &mut Vec<Diagnostic>) {
    if !is_label_value(&v.value) {
        out.push(
            Diagnostic::new(&codes::INVALID_LABEL_VALUE, format!("`{}` is not a valid label value", v.value))
                .primary(v.span, "invalid label value")
                .help("a value is empty or ≤63 chars of [A-Za-z0-9._-] starting and ending alphanumeric"),
        );
    }
}

/// Kubernetes label key validation; the error says what is wrong.
pub fn check_label_key(k: &str) -> Result<(), &'static str> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err("empty prefix before `/`");
        }
        if !is_dns_subdomain(p) {
            return Err("the prefix is not a DNS subdomain");
        }
    }
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 63 {
        return Err("the name is longer than 63 characters");
    }
    if !is_qualified_name_part(name) {
        return Err("the name must be [A-Za-z0-9._-], starting and ending alphanumeric");
    }
    Ok(())
}

pub fn is_label_value(v: &str) -> bool {
    v.is_empty() || (v.len() <= 63 && is_qualified_name_part(v))
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && l.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Per-policy validation plus duplicate names across the bundle.
pub fn bundle(b: &Bundle) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = b.policies.iter().flat_map(policy).collect();
    let mut seen: BTreeMap<&str, &Policy> = BTreeMap::new();
    for p in &b.policies {
        if let Some(first) = seen.get(p.name.value.as_str()) {
            out.push(
                Diagnostic::new(&codes::DUPLICATE_NAME, format!("two policies are named `{}`", p.name.value))
                    .primary(p.name.span, "second definition")
                    .secondary(first.name.span, "first defined here")
                    .help("rename one; a cluster holds one object per name"),
            );
        } else {
            seen.insert(&p.name.value, p);
        }
    }
    let c = &b.cluster;
    dup(c.nodes.iter().map(|n| (n.name.value.clone(), &n.name)), "nodes", &mut out);
    dup(c.namespaces.iter().map(|n| (n.name.value.clone(), &n.name)), "namespaces", &mut out);
    dup(c.pods.iter().map(|p| (p.key(), &p.name)), "pods", &mut out);
    dup(c.node_networks.iter().map(|n| (n.node.value.clone(), &n.node)), "NodeNetworks", &mut out);
    dup(
        c.workloads.iter().map(|w| (format!("{}/{}/{}", w.kind.as_str(), w.namespace, w.name.value), &w.name)),
        "workloads",
        &mut out,
    );
    out
}

fn dup<'a>(items: impl Iterator<Item = (String, &'a Spanned<String>)>, what: &str, out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<String, &Spanned<String>> = BTreeMap::new();
    for (key, name) in items {
        if let Some(first) = seen.get(&key) {
            out.push(
                Diagnostic::new(&codes::DUPLICATE_NAME, format!("two {what} are named `{key}`"))
                    .primary(name.span, "second definition")
                    .secondary(first.span, "first defined here")
                    .help("remove the duplicate from the snapshot"),
            );
        } else {
            seen.insert(key, name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys() {
        assert!(check_label_key("app").is_ok());
        assert!(check_label_key("cilium.io/egress-gateway").is_ok());
        assert!(check_label_key("io.kubernetes.pod.namespace").is_ok());
        assert!(check_label_key("-app").is_err());
        assert!(check_label_key("Foo.io/x").is_err());
        assert!(check_label_key("a/b/c").is_err());
        assert!(check_label_key(&"x".repeat(64)).is_err());
        // Kubernetes limits the prefix as a whole to 253 characters and each of
        // its DNS labels to 63
        let prefix = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(prefix.len(), 253);
        assert!(check_label_key(&format!("{prefix}/app")).is_ok());
        assert_eq!(check_label_key(&format!("{prefix}d/app")), Err("the prefix is not a DNS subdomain"));
        assert!(check_label_key(&format!("{}.io/app", "a".repeat(64))).is_err());
        assert!(is_label_value(""));
        assert!(is_label_value("true"));
        assert!(!is_label_value("a b"));
        assert!(is_dns_subdomain("egress-gateway-policy"));
        assert!(!is_dns_subdomain("Egress"));
    }
}
