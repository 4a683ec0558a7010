//! A span-free, comparable form of a policy, for round-trip tests and for
//! telling whether two spellings of a policy mean the same thing.
//!
//! [`normalize`] forgets spans, [`Origin`](crate::ast::Origin), `metadata.uid`
//! and `metadata.namespace` (cluster-scoped: no effect on meaning), sorts
//! `matchLabels`, and keeps only the gateway entries in effect
//! ([`Policy::gateways`]), so a single `egressGateway` equals a one-entry
//! `egressGateways`, and an `egressGateway` ignored beside `egressGateways`
//! does not count. Everything else keeps its order (selector items,
//! requirements, values, CIDRs, gateways), so two policies can mean the same
//! and still differ here; the converse never holds.

use crate::ast::{GatewaySpec, LabelSelector, Operator, Policy, SelectorItem};
use crate::net::Cidr;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NormalPolicy {
    pub name: String,
    pub selectors: Vec<NormalItem>,
    pub destination_cidrs: Vec<Cidr>,
    pub excluded_cidrs: Vec<Cidr>,
    pub gateways: Vec<NormalGateway>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NormalItem {
    pub pod_selector: Option<NormalSelector>,
    pub namespace_selector: Option<NormalSelector>,
    pub node_selector: Option<NormalSelector>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NormalSelector {
    /// Sorted by key, then value.
    pub match_labels: Vec<(String, String)>,
    pub match_expressions: Vec<(String, Operator, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NormalGateway {
    pub node_selector: NormalSelector,
    pub egress_ip: Option<IpAddr>,
    pub interface: Option<String>,
    /// The egress IP is floating.
    pub floating: bool,
}

pub fn normalize(p: &Policy) -> NormalPolicy {
    NormalPolicy {
        name: p.name.value.clone(),
        selectors: p.selectors.iter().map(item).collect(),
        destination_cidrs: p.destination_cidrs.iter().map(|c| c.value).collect(),
        excluded_cidrs: p.excluded_cidrs.iter().map(|c| c.value).collect(),
        gateways: p.gateways().iter().map(gateway).collect(),
    }
}

/// Whether `a` and `b` are the same policy up to spans, origin, metadata other
/// than the name, `matchLabels` order and `egressGateway` vs one `egressGateways`.
pub fn semantically_equal(a: &Policy, b: &Policy) -> bool {
    normalize(a) == normalize(b)
}

fn item(i: &SelectorItem) -> NormalItem {
    NormalItem {
        pod_selector: i.pod_selector.as_ref().map(selector),
        namespace_selector: i.namespace_selector.as_ref().map(selector),
        node_selector: i.node_selector.as_ref().map(selector),
    }
}

fn selector(s: &LabelSelector) -> NormalSelector {
    let mut match_labels: Vec<(String, String)> =
        s.match_labels.iter().map(|(k, v)| (k.value.clone(), v.value.clone())).collect();
    match_labels.sort();
    NormalSelector {
        match_labels,
        match_expressions: s
            .match_expressions
            .iter()
            .map(|r| (r.key.value.clone(), r.operator.value, r.values.iter().map(|v| v.value.clone()).collect()))
            .collect(),
    }
}

fn gateway(g: &GatewaySpec) -> NormalGateway {
    NormalGateway {
        node_selector: selector(&g.node_selector),
        egress_ip: g.egress_ip.as_ref().map(|i| i.value),
        interface: g.interface.as_ref().map(|i| i.value.clone()),
        floating: g.floating.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileId;

    #[test]
    fn label_order_and_gateway_form_do_not_matter() {
        let (a, _) = crate::egret::parse(FileId(0), "policy p { select pods(a = 1, b = 2) via nodes(*) }");
        let (b, _) = crate::egret::parse(FileId(1), "policy p {\n  select pods(b = 2, a = 1)\n  via nodes(*)\n}");
        let mut b = b;
        let g = b[0].egress_gateway.take();
        b[0].egress_gateways = g.into_iter().collect();
        assert!(semantically_equal(&a[0], &b[0]));
        assert_eq!(normalize(&a[0]).selectors[0].pod_selector.as_ref().map(|s| s.match_labels.len()), Some(2));
        // An egressGateway beside egressGateways is ignored, as in Cilium.
        let mut c = a[0].clone();
        let mut ignored = c.egress_gateway.clone();
        if let Some(g) = ignored.as_mut() {
            g.interface = Some(crate::source::Spanned::new("ignored".into(), g.span));
        }
        c.egress_gateways = c.egress_gateway.take().into_iter().collect();
        c.egress_gateway = ignored;
        assert!(semantically_equal(&a[0], &c));
    }
}
