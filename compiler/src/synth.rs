//! Synthetic clusters for benchmarks (and tests that need size).
//!
//! One generator, parameterized by a [`Shape`]: nodes (the first `gateways`
//! of them labelled `egress-gw: gNN`), pods spread round-robin over nodes and
//! namespaces with `app` and `tier` labels, and policies with 10 destination
//! and 3 excluded CIDRs each: most select two apps; every 50th is broad (a
//! team's web tier, `0.0.0.0/0` first); every 5th uses two gateways.
//! Deterministic: the same shape gives the same bundle.

use egret_lang::ast::{Bundle, GatewaySpec, LabelSelector, Labels, Namespace, Node, Origin, Pod, Policy, SelectorItem};
use egret_lang::net::Cidr;
use egret_lang::source::{Span, Spanned};
use std::net::{IpAddr, Ipv4Addr};

/// The size of a synthetic cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub nodes: usize,
    /// At most 256.
    pub gateways: usize,
    /// At most 253 pods per node.
    pub pods: usize,
    pub namespaces: usize,
    pub policies: usize,
    pub apps: usize,
}

/// 20 nodes, 400 pods, 10 policies.
pub const SMALL: Shape = Shape { nodes: 20, gateways: 2, pods: 400, namespaces: 5, policies: 10, apps: 40 };
/// 500 nodes, 10,000 pods, 100 policies.
pub const MEDIUM: Shape = Shape { nodes: 500, gateways: 5, pods: 10_000, namespaces: 20, policies: 100, apps: 400 };
/// 5,000 nodes, 100,000 pods, 1,000 policies (the compiler-core target).
pub const LARGE: Shape =
    Shape { nodes: 5_000, gateways: 20, pods: 100_000, namespaces: 50, policies: 1_000, apps: 2_000 };

pub fn sp<T>(v: T) -> Spanned<T> {
    Spanned::new(v, Span::default())
}

pub fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

pub fn selector(pairs: &[(&str, String)]) -> LabelSelector {
    LabelSelector {
        span: Span::default(),
        match_labels: pairs.iter().map(|(k, v)| (sp(k.to_string()), sp(v.clone()))).collect(),
        match_expressions: Vec::new(),
    }
}

pub fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Cidr {
    Cidr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), len)
}

pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i as u32 + 1)
}

pub fn pod(shape: &Shape, i: usize) -> Pod {
    let n = i % shape.nodes;
    let slot = i / shape.nodes + 2;
    Pod {
        span: Span::default(),
        namespace: format!("ns-{:02}", i % shape.namespaces),
        name: sp(format!("app-{:04}-{i:06}", i % shape.apps)),
        uid: format!("{:08x}-25a0-409d-952c-{:012x}", i.wrapping_mul(2_654_435_761) as u32, i),
        labels: labels(&[
            ("app", format!("app-{:04}", i % shape.apps)),
            ("tier", if i.is_multiple_of(2) { "web" } else { "db" }.into()),
        ]),
        node_name: Some(format!("node-{n:05}")),
        host_network: false,
        pod_ips: vec![IpAddr::V4(Ipv4Addr::new(10, (n / 256) as u8, (n % 256) as u8, slot as u8))],
        phase: Some("Running".into()),
    }
}

/// The synthetic cluster of a shape.
pub fn bundle(shape: &Shape) -> Bundle {
    let mut b = Bundle::default();
    for i in 0..shape.nodes {
        let mut l = labels(&[("zone", format!("z{}", i % 3))]);
        if i < shape.gateways {
            l.insert("egress-gw".into(), format!("g{i:02}"));
        }
        b.cluster.nodes.push(Node {
            span: Span::default(),
            name: sp(format!("node-{i:05}")),
            uid: String::new(),
            labels: l,
            internal_ips: vec![IpAddr::V4(node_ip(i))],
            pod_cidrs: vec![v4(10, (i / 256) as u8, (i % 256) as u8, 0, 24)],
            ready: Some(true),
        });
    }
    for i in 0..shape.namespaces {
        b.cluster.namespaces.push(Namespace {
            span: Span::default(),
            name: sp(format!("ns-{i:02}")),
            labels: labels(&[("team", format!("t{}", i % 10))]),
        });
    }
    for i in 0..shape.pods {
        b.cluster.pods.push(pod(shape, i));
    }
    for j in 0..shape.policies {
        let broad = j % 50 == 0;
        let selectors = if broad {
            vec![SelectorItem {
                span: Span::default(),
                pod_selector: Some(selector(&[("tier", "web".into())])),
                namespace_selector: Some(selector(&[("team", format!("t{}", (j / 50) % 10))])),
                node_selector: None,
            }]
        } else {
            (0..2)
                .map(|k| SelectorItem {
                    span: Span::default(),
                    pod_selector: Some(selector(&[("app", format!("app-{:04}", (2 * j + k) % shape.apps))])),
                    namespace_selector: None,
                    node_selector: None,
                })
                .collect()
        };
        // Destination k: a /20 in 11.0.0.0-160.255.255.255; exclusions: a /24
        // inside destinations 1, 2 and 3.
        let first = |k: usize| 11 + ((j * 7 + k * 13) % 150) as u8;
        let mut dests: Vec<Cidr> = (0..10).map(|k| v4(first(k), (j % 256) as u8, (k * 16) as u8, 0, 20)).collect();
        if broad {
            dests[0] = v4(0, 0, 0, 0, 0);
        }
        let excl: Vec<Cidr> = (1..4).map(|k| v4(first(k), (j % 256) as u8, (k * 16 + 1) as u8, 0, 24)).collect();
        let gw = |g: usize| GatewaySpec {
            span: Span::default(),
            node_selector: selector(&[("egress-gw", format!("g{:02}", g % shape.gateways))]),
            egress_ip: Some(sp(IpAddr::V4(Ipv4Addr::new(198, 18, (g % shape.gateways) as u8, 1)))),
            interface: None,
            floating: None,
        };
        b.policies.push(Policy {
            name: sp(format!("policy-{j:04}")),
            uid: None,
            namespace: None,
            origin: Origin::Crd,
            span: Span::default(),
            spec_span: Span::default(),
            selectors,
            destination_cidrs: dests.into_iter().map(sp).collect(),
            excluded_cidrs: excl.into_iter().map(sp).collect(),
            egress_gateway: if j % 5 == 0 { None } else { Some(gw(j)) },
            egress_gateways: if j % 5 == 0 { vec![gw(j), gw(j + 1)] } else { Vec::new() },
        });
    }
    b
}
