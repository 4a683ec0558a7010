//! One or more tests per rule of SEMANTICS.md, through the reference
//! evaluator, and every world also through the plans (`check_equivalence`).
#![expect(clippy::unwrap_used, reason = "tests unwrap literal inputs")]

use crate::core_common as common;

use common::*;
use egret_compiler::cilium;
use egret_compiler::eval::{self, DestinationMatch, Outcome, PassReason, Selection, Source, Verdict, WinReason};
use egret_compiler::ir::{DropReason, Effect, Health};
use egret_compiler::resolve::{EgressIp, EgressSpec, NoEgressIp, Reading, World, fnv1a_32};
use egret_lang::net::Family;

const GW: &str = r#"egressGateway: {nodeSelector: {matchLabels: {egress: "true"}}, egressIP: "198.51.100.1"}"#;

fn base_nodes() -> Vec<String> {
    vec![
        node("gw-a", "192.0.2.30", r#"egress: "true", zone: a"#, true, "10.1.30.0/24"),
        node("w-1", "192.0.2.11", "zone: a", true, "10.1.1.0/24"),
        node("w-2", "192.0.2.12", "zone: b", true, "10.1.2.0/24"),
        namespace("prod", "team: payments"),
        namespace("dev", ""),
    ]
}

fn selected(w: &World, policy: &str, reading: Reading) -> Vec<String> {
    let p = &w.policy_by_name(policy).unwrap().ast;
    w.selected_endpoints_in(p, reading).iter().map(|e| e.key.clone()).collect()
}

fn verdict(w: &World, src: &str, dst: &str) -> Verdict {
    eval::decide(w, Source::Ip(ip(src)), ip(dst)).verdict
}

fn gateway_node(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::Redirect { gateway, .. } | Verdict::LocalEgress { gateway, .. } => Some(gateway.node.as_str()),
        _ => None,
    }
}

// ---- Endpoints ----

#[test]
fn endpoints_are_running_or_pending_pods_with_an_ip_not_host_network() {
    let mut d = base_nodes();
    d.push(pod("prod", "ok", "u1", "w-1", "10.1.1.5", "app: x"));
    d.push(pod("prod", "noip", "u2", "w-1", "", "app: x"));
    d.push(
        pod("prod", "hostnet", "u3", "w-1", "192.0.2.11", "app: x")
            .replace("spec: {nodeName: w-1}", "spec: {nodeName: w-1, hostNetwork: true}"),
    );
    d.push(pod("prod", "done", "u4", "w-1", "10.1.1.6", "app: x").replace("phase: Running", "phase: Succeeded"));
    d.push(pod("prod", "pending", "u5", "w-1", "10.1.1.7", "app: x").replace("phase: Running", "phase: Pending"));
    d.push(pod("prod", "nouid", "", "w-1", "10.1.1.8", "app: x"));
    let w = world(&docs(&d));
    let keys: Vec<&str> = w.endpoints().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["prod/nouid", "prod/ok", "prod/pending"]);
    assert_eq!(w.endpoint_by_key("prod/nouid").unwrap().identity, "prod/nouid");
    assert_eq!(w.endpoint_by_key("prod/ok").unwrap().identity, "u1");
    assert_eq!(w.non_endpoint_reason("prod/hostnet"), Some("it uses the host network"));
    assert_eq!(w.non_endpoint_reason("prod/noip"), Some("it has no IP"));
    assert_eq!(w.non_endpoint_reason("prod/done"), Some("it is not Pending or Running"));
}

// ---- Selection ----

#[test]
fn selection_items_are_ored_and_each_is_a_conjunction() {
    let mut d = base_nodes();
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a, tier: web"));
    d.push(pod("prod", "b", "u2", "w-1", "10.1.1.2", "app: b"));
    d.push(pod("dev", "a", "u3", "w-2", "10.1.2.1", "app: a, tier: web"));
    d.push(pod("dev", "c", "u4", "w-2", "10.1.2.2", "app: c, tier: db"));
    d.push(policy(
        "p",
        r#"[{podSelector: {matchLabels: {app: a}, matchExpressions: [{key: tier, operator: In, values: [web]}]}, namespaceSelector: {matchLabels: {team: payments}}}, {podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [a, b]}, {key: tier, operator: Exists}]}}]"#,
        &["0.0.0.0/0"],
        &[],
        GW,
    ));
    d.push(policy("all", "[{podSelector: {}}]", &["203.0.113.0/24"], &[], GW));
    d.push(policy(
        "none-with-tier",
        r#"[{podSelector: {matchExpressions: [{key: tier, operator: DoesNotExist}]}}]"#,
        &["203.0.113.0/24"],
        &[],
        GW,
    ));
    let w = world(&docs(&d));
    assert_eq!(selected(&w, "p", Reading::Egret), ["dev/c", "prod/a"]);
    assert_eq!(selected(&w, "all", Reading::Egret).len(), 4);
    assert_eq!(selected(&w, "none-with-tier", Reading::Egret), ["prod/b"]);
    // The trail says which item selects, or why none does.
    let d = eval::decide(&w, Source::Ip(ip("10.1.2.1")), ip("8.8.8.8"));
    let c = d.trail.iter().find(|c| c.policy == "p").unwrap();
    let Selection::NotSelected { misses } = &c.selection else { panic!("{c:?}") };
    assert!(misses[0].reason.starts_with("namespaceSelector"), "{misses:?}");
    assert!(misses[1].reason.contains("`app` is `a`"), "{misses:?}");
    let d = eval::decide(&w, Source::Ip(ip("10.1.2.2")), ip("8.8.8.8"));
    assert_eq!(d.trail.iter().find(|c| c.policy == "p").unwrap().selection, Selection::Selected { item: 1 });
    check_equivalence(&w);
}

#[test]
fn pseudo_label_matches_the_pods_namespace() {
    let mut d = base_nodes();
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    d.push(pod("dev", "a", "u2", "w-1", "10.1.1.2", "app: a"));
    d.push(policy(
        "p",
        r#"[{podSelector: {matchLabels: {io.kubernetes.pod.namespace: prod}}}]"#,
        &["0.0.0.0/0"],
        &[],
        GW,
    ));
    let w = world(&docs(&d));
    assert_eq!(selected(&w, "p", Reading::Egret), ["prod/a"]);
    check_equivalence(&w);
}

#[test]
fn namespace_selector_absent_or_empty_is_any_namespace() {
    let mut d = base_nodes();
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    d.push(pod("dev", "a", "u2", "w-1", "10.1.1.2", "app: a"));
    d.push(pod("ghost", "a", "u3", "w-1", "10.1.1.3", "app: a")); // namespace not in the snapshot
    d.push(policy("absent", "[{podSelector: {matchLabels: {app: a}}}]", &["0.0.0.0/0"], &[], GW));
    d.push(policy("empty", "[{podSelector: {matchLabels: {app: a}}, namespaceSelector: {}}]", &["0.0.0.0/0"], &[], GW));
    d.push(policy("ns-only", "[{namespaceSelector: {}}]", &["0.0.0.0/0"], &[], GW));
    d.push(policy(
        "by-name",
        "[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ghost}}}]",
        &["0.0.0.0/0"],
        &[],
        GW,
    ));
    d.push(policy("by-label", "[{namespaceSelector: {matchLabels: {team: payments}}}]", &["0.0.0.0/0"], &[], GW));
    let w = world(&docs(&d));
    let all = ["dev/a", "ghost/a", "prod/a"];
    assert_eq!(selected(&w, "absent", Reading::Egret), all);
    assert_eq!(selected(&w, "empty", Reading::Egret), all);
    assert_eq!(selected(&w, "ns-only", Reading::Egret), all);
    // `kubernetes.io/metadata.name` is always there, also for a namespace the snapshot lacks.
    assert_eq!(selected(&w, "by-name", Reading::Egret), ["ghost/a"]);
    assert_eq!(selected(&w, "by-label", Reading::Egret), ["prod/a"]);
    assert_eq!(w.diagnostics().len(), 1, "{:?}", w.diagnostics());
    assert_eq!(w.diagnostics()[0].code.id, "W0308");
    check_equivalence(&w);
}

#[test]
fn node_selector_pairs_with_its_item_while_cilium_pools_them() {
    let mut d = base_nodes();
    d.push(pod("prod", "a-on-1", "u1", "w-1", "10.1.1.1", "app: a")); // zone a
    d.push(pod("prod", "a-on-2", "u2", "w-2", "10.1.2.1", "app: a")); // zone b
    d.push(pod("prod", "b-on-1", "u3", "w-1", "10.1.1.2", "app: b"));
    d.push(pod("prod", "b-on-2", "u4", "w-2", "10.1.2.2", "app: b"));
    // Some items with a nodeSelector, some without.
    d.push(policy(
        "mixed",
        "[{podSelector: {matchLabels: {app: a}}, nodeSelector: {matchLabels: {zone: a}}}, {podSelector: {matchLabels: {app: b}}}]",
        &["0.0.0.0/0"],
        &[],
        GW,
    ));
    // Every item with its own nodeSelector.
    d.push(policy(
        "crossed",
        "[{podSelector: {matchLabels: {app: a}}, nodeSelector: {matchLabels: {zone: a}}}, {podSelector: {matchLabels: {app: b}}, nodeSelector: {matchLabels: {zone: b}}}]",
        &["203.0.113.0/24"],
        &[],
        GW,
    ));
    let w = world(&docs(&d));
    assert_eq!(selected(&w, "mixed", Reading::Egret), ["prod/a-on-1", "prod/b-on-1", "prod/b-on-2"]);
    assert_eq!(selected(&w, "mixed", Reading::Cilium), ["prod/a-on-1", "prod/b-on-1"]);
    assert_eq!(selected(&w, "crossed", Reading::Egret), ["prod/a-on-1", "prod/b-on-2"]);
    assert_eq!(selected(&w, "crossed", Reading::Cilium), ["prod/a-on-1", "prod/a-on-2", "prod/b-on-1", "prod/b-on-2"]);
    // The trail records Cilium's reading too.
    let d = eval::decide(&w, Source::Ip(ip("10.1.2.2")), ip("8.8.8.8"));
    let c = d.trail.iter().find(|c| c.policy == "mixed").unwrap();
    assert!(matches!(c.selection, Selection::Selected { item: 1 }) && c.cilium_selected == Some(false));
    // The Cilium view follows Cilium's reading.
    let v = cilium::view(&w, "w-1").unwrap();
    assert!(v.rows.iter().any(|r| r.source_ip.to_string() == "10.1.2.1" && r.policy == "crossed"));
    assert!(!v.rows.iter().any(|r| r.source_ip.to_string() == "10.1.2.2" && r.policy == "mixed"));
    check_equivalence(&w);
}

// ---- Destinations ----

#[test]
fn exclusions_carve_only_their_own_policy() {
    let mut d = base_nodes();
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    d.push(node("gw-b", "192.0.2.31", r#"egress2: "true""#, true, "10.1.31.0/24"));
    d.push(policy("wide", "[{podSelector: {}}]", &["0.0.0.0/0"], &["203.0.113.0/24"], GW));
    d.push(policy(
        "narrow",
        "[{podSelector: {}}]",
        &["203.0.0.0/8"],
        &["203.0.113.128/25"],
        r#"egressGateway: {nodeSelector: {matchLabels: {egress2: "true"}}}"#,
    ));
    let w = world(&docs(&d));
    // 203.0.113.1: `wide` excludes it, `narrow` captures it.
    assert_eq!(gateway_node(&verdict(&w, "10.1.1.1", "203.0.113.1")), Some("gw-b"));
    // 203.0.113.200: excluded by `narrow` (its own) but `wide` excludes the /24 too → pass.
    assert!(matches!(verdict(&w, "10.1.1.1", "203.0.113.200"), Verdict::Pass { reason: PassReason::NoPolicyMatches }));
    // 203.0.114.1: `narrow` (/8) beats `wide` (/0).
    assert_eq!(gateway_node(&verdict(&w, "10.1.1.1", "203.0.114.1")), Some("gw-b"));
    let dd = eval::decide(&w, Source::Ip(ip("10.1.1.1")), ip("203.0.113.1"));
    let wide = dd.trail.iter().find(|c| c.policy == "wide").unwrap();
    assert_eq!(wide.destination, DestinationMatch::Excluded { entry: cidr("0.0.0.0/0"), by: cidr("203.0.113.0/24") });
    assert_eq!(wide.outcome, Outcome::NoMatchingDestination);
    // Cilium lays the exclusions out as entries of their own.
    let v = cilium::view(&w, "w-1").unwrap();
    let ex = v.rows.iter().find(|r| r.destination == cidr("203.0.113.0/24")).unwrap();
    assert_eq!(ex.gateway_ip.to_string(), "0.0.0.1");
    check_equivalence(&w);
}

#[test]
fn longest_destination_entry_wins_across_policies() {
    let mut d = base_nodes();
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    d.push(node("gw-b", "192.0.2.31", r#"egress2: "true""#, true, "10.1.31.0/24"));
    let gw_b = r#"egressGateway: {nodeSelector: {matchLabels: {egress2: "true"}}}"#;
    // `all` excludes 10/8, which splits its space into pieces such as 8.0.0.0/7;
    // ranking is by the destinationCIDRs entry (/0), not by those pieces.
    d.push(policy("all", "[{podSelector: {}}]", &["0.0.0.0/0"], &["10.0.0.0/8"], GW));
    d.push(policy("six", "[{podSelector: {}}]", &["8.0.0.0/6"], &[], gw_b));
    let w = world(&docs(&d));
    assert_eq!(gateway_node(&verdict(&w, "10.1.1.1", "9.1.1.1")), Some("gw-b"));
    assert_eq!(gateway_node(&verdict(&w, "10.1.1.1", "12.1.1.1")), Some("gw-a"));
    let dd = eval::decide(&w, Source::Ip(ip("10.1.1.1")), ip("9.1.1.1"));
    let win = dd.winner.unwrap();
    assert_eq!(win.policy, "six");
    assert_eq!(win.reason, WinReason::LongestPrefix { runner_up: "all".into(), runner_up_len: 0 });
    assert_eq!(
        dd.trail.iter().find(|c| c.policy == "all").unwrap().outcome,
        Outcome::LostToLongerPrefix { winner: "six".into(), winner_len: 6 }
    );
    check_equivalence(&w);
}

#[test]
fn overlapping_entries_of_one_policy_rank_by_the_longest() {
    let mut d = base_nodes();
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    d.push(node("gw-b", "192.0.2.31", r#"egress2: "true""#, true, "10.1.31.0/24"));
    d.push(policy("x", "[{podSelector: {}}]", &["100.0.0.0/8", "100.64.0.0/16"], &["100.64.1.0/24"], GW));
    // not `y`: YAML 1.1 (the API server's reader) reads a plain `y` as a boolean, refused as a name (E0103)
    d.push(policy(
        "yy",
        "[{podSelector: {}}]",
        &["100.64.0.0/12"],
        &[],
        r#"egressGateway: {nodeSelector: {matchLabels: {egress2: "true"}}}"#,
    ));
    let w = world(&docs(&d));
    assert_eq!(gateway_node(&verdict(&w, "10.1.1.1", "100.64.2.1")), Some("gw-a")); // x via /16 beats y /12
    assert_eq!(gateway_node(&verdict(&w, "10.1.1.1", "100.64.1.1")), Some("gw-b")); // x excludes it
    assert_eq!(gateway_node(&verdict(&w, "10.1.1.1", "100.65.0.1")), Some("gw-b")); // y /12 beats x /8
    check_equivalence(&w);
}

#[test]
fn ties_go_to_the_smallest_name() {
    let mut d = base_nodes();
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    d.push(node("gw-b", "192.0.2.31", r#"egress2: "true""#, true, "10.1.31.0/24"));
    d.push(policy("zeta", "[{podSelector: {}}]", &["0.0.0.0/0"], &[], GW));
    d.push(policy(
        "alpha",
        "[{podSelector: {}}]",
        &["0.0.0.0/0"],
        &[],
        r#"egressGateway: {nodeSelector: {matchLabels: {egress2: "true"}}}"#,
    ));
    let w = world(&docs(&d));
    let dd = eval::decide(&w, Source::Ip(ip("10.1.1.1")), ip("8.8.8.8"));
    let win = dd.winner.clone().unwrap();
    assert_eq!(win.policy, "alpha");
    assert_eq!(win.reason, WinReason::TieBreakByName { tied_with: vec!["zeta".into()] });
    assert_eq!(gateway_node(&dd.verdict), Some("gw-b"));
    assert_eq!(
        dd.trail.iter().find(|c| c.policy == "zeta").unwrap().outcome,
        Outcome::LostTieBreak { winner: "alpha".into() }
    );
    check_equivalence(&w);
}

#[test]
fn cluster_internal_destinations_always_pass() {
    let mut d = base_nodes();
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    d.push(policy("all", "[{podSelector: {}}]", &["0.0.0.0/0"], &[], GW));
    let w = world_svc(&docs(&d), &["10.96.0.0/12"]);
    for (dst, what) in [("10.1.2.7", "pod CIDR"), ("192.0.2.12", "IP of node"), ("10.100.0.1", "service CIDR")] {
        let dd = eval::decide(&w, Source::Ip(ip("10.1.1.1")), ip(dst));
        let Verdict::Pass { reason: PassReason::ClusterInternal { source, .. } } = &dd.verdict else {
            panic!("{dst}: {:?}", dd.verdict)
        };
        assert!(source.to_string().starts_with(what), "{dst}: {source}");
        assert_eq!(dd.trail[0].outcome, Outcome::OverriddenByClusterInternal);
    }
    // Just outside the node's /32.
    assert!(matches!(verdict(&w, "10.1.1.1", "192.0.2.13"), Verdict::Redirect { .. }));
    check_equivalence(&w);
}

// ---- Gateways ----

#[test]
fn no_gateway_drops_and_cilium_says_not_found() {
    let mut d = base_nodes();
    d.push(node("v6only", "2001:db8::9", r#"egress3: "true""#, true, "10.1.9.0/24"));
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    d.push(policy(
        "nowhere",
        "[{podSelector: {}}]",
        &["203.0.113.0/24"],
        &[],
        r#"egressGateway: {nodeSelector: {matchLabels: {nope: "true"}}}"#,
    ));
    // Matches a node without an IPv4 InternalIP: egret tunnels to it over
    // IPv6; Cilium (IPv4 tunnel only) has no gateway for it.
    d.push(policy(
        "v6-node",
        "[{podSelector: {}}]",
        &["198.51.100.0/24"],
        &[],
        r#"egressGateway: {nodeSelector: {matchLabels: {egress3: "true"}}}"#,
    ));
    let w = world(&docs(&d));
    assert_eq!(verdict(&w, "10.1.1.1", "203.0.113.5"), Verdict::Drop { reason: DropReason::NoGateway });
    let Verdict::Redirect { gateway, .. } = verdict(&w, "10.1.1.1", "198.51.100.5") else { panic!("a redirect") };
    assert_eq!((gateway.node.as_str(), gateway.ip), ("v6only", ip("2001:db8::9")));
    assert_eq!(w.policy_by_name("v6-node").unwrap().gateways[0].ip, ip("2001:db8::9"));
    let text = cilium::render(&w, "w-1", cilium::Format::Text).unwrap();
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("Not Found")).collect();
    assert!(rows.iter().any(|l| l.contains("203.0.113.0/24")), "{text}");
    assert!(rows.iter().any(|l| l.contains("198.51.100.0/24")), "Cilium has no IPv6 tunnel: {text}");
    check_equivalence(&w);
}

#[test]
fn gateway_entry_resolves_to_the_first_matching_node_by_name() {
    let mut d = base_nodes();
    d.push(node("gw-0", "192.0.2.99", r#"egress: "true""#, true, "10.1.99.0/24"));
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    d.push(policy("p", "[{podSelector: {}}]", &["0.0.0.0/0"], &[], GW));
    let w = world(&docs(&d));
    let gws = &w.policy_by_name("p").unwrap().gateways;
    assert_eq!(gws.len(), 1);
    assert_eq!(gws[0].node_name, "gw-0");
    check_equivalence(&w);
}

fn multi_gateway_world(ready: [bool; 3], pods: usize) -> World {
    let mut d = vec![
        // Names in the opposite order of IPs: gateways sort by IP.
        node("gw-x", "192.0.2.3", r#"gw: gx"#, ready[0], "10.2.3.0/24"),
        node("gw-y", "192.0.2.2", r#"gw: gy"#, ready[1], "10.2.2.0/24"),
        node("gw-z", "192.0.2.1", r#"gw: gz"#, ready[2], "10.2.1.0/24"),
        node("w-1", "192.0.2.11", "", true, "10.1.1.0/24"),
        namespace("prod", ""),
    ];
    for (i, uid) in ["uid-a", "uid-b", "uid-c", "uid-d"].iter().enumerate() {
        d.push(pod("prod", &format!("p{i}"), uid, "w-1", &format!("10.1.1.{}", i + 1), ""));
    }
    for i in 4..pods {
        d.push(pod("prod", &format!("p{i}"), &format!("uid-{i:03}"), "w-1", &format!("10.1.1.{}", i + 1), ""));
    }
    d.push(policy(
        "ha",
        "[{podSelector: {}}]",
        &["0.0.0.0/0"],
        &[],
        r#"egressGateways: [{nodeSelector: {matchLabels: {gw: gx}}}, {nodeSelector: {matchLabels: {gw: gy}}}, {nodeSelector: {matchLabels: {gw: gz}}}, {nodeSelector: {matchLabels: {gw: gnone}}}]"#,
    ));
    world(&docs(&d))
}

#[test]
fn several_gateways_hash_the_uid_over_gateways_sorted_by_ip() {
    let w = multi_gateway_world([true; 3], 4);
    let gws: Vec<&str> = w.policy_by_name("ha").unwrap().gateways.iter().map(|g| g.node_name.as_str()).collect();
    assert_eq!(gws, ["gw-z", "gw-y", "gw-x"]); // by IP; the entry resolving to no node is dropped
    let sorted = ["gw-z", "gw-y", "gw-x"];
    for (i, (uid, h)) in [("uid-a", 0x80c4a5d3u32), ("uid-b", 0x81c4a766), ("uid-c", 0x82c4a8f9), ("uid-d", 0x83c4aa8c)]
        .iter()
        .enumerate()
    {
        assert_eq!(fnv1a_32(uid.as_bytes()), *h);
        let v = verdict(&w, &format!("10.1.1.{}", i + 1), "8.8.8.8");
        assert_eq!(gateway_node(&v), Some(sorted[(*h % 3) as usize]), "{uid}");
    }
    // uid-a → 1 (gw-y), uid-b → 0 (gw-z), uid-c → 2 (gw-x), uid-d → 0 (gw-z)
    assert_eq!(gateway_node(&verdict(&w, "10.1.1.1", "8.8.8.8")), Some("gw-y"));
    assert_eq!(gateway_node(&verdict(&w, "10.1.1.3", "8.8.8.8")), Some("gw-x"));
    // Cilium's view agrees while all are healthy.
    let v = cilium::view(&w, "w-1").unwrap();
    assert_eq!(
        v.rows.iter().find(|r| r.source_ip.to_string() == "10.1.1.1").unwrap().gateway_ip.to_string(),
        "192.0.2.2"
    );
    check_equivalence(&w);
}

#[test]
fn failover_moves_only_the_failed_gateways_endpoints() {
    let healthy = multi_gateway_world([true; 3], 40);
    let failed = multi_gateway_world([true, false, true], 40); // gw-y not Ready
    let mut moved = 0;
    for e in healthy.endpoints() {
        let src = e.ips[0].to_string();
        let before = verdict(&healthy, &src, "8.8.8.8");
        let after = verdict(&failed, &src, "8.8.8.8");
        let d = eval::decide(&failed, Source::Ip(e.ips[0]), ip("8.8.8.8"));
        let g = d.gateway.unwrap();
        if gateway_node(&before) == Some("gw-y") {
            moved += 1;
            assert!(g.assignment.failed_over());
            assert_ne!(gateway_node(&after), Some("gw-y"));
            // The highest rendezvous weight among the healthy ones.
            let best = g
                .candidates
                .iter()
                .filter(|(_, h)| *h)
                .max_by_key(|(c, _)| egret_compiler::resolve::rendezvous_weight(&e.identity, c.ip))
                .unwrap();
            assert_eq!(gateway_node(&after), Some(best.0.node.as_str()));
        } else {
            assert_eq!(before, after, "{} moved although its gateway is healthy", e.key);
        }
    }
    assert!(moved >= 5, "too few endpoints on gw-y to mean anything: {moved}");
    check_equivalence(&failed);
    // Cilium has no health: its view is unchanged.
    assert_eq!(cilium::view(&healthy, "w-1").unwrap().rows, cilium::view(&failed, "w-1").unwrap().rows);
    // None healthy: drop.
    let none = multi_gateway_world([false; 3], 4);
    assert_eq!(verdict(&none, "10.1.1.1", "8.8.8.8"), Verdict::Drop { reason: DropReason::NoGateway });
    check_equivalence(&none);
}

#[test]
fn local_egress_on_the_gateway_node_itself() {
    let mut d = base_nodes();
    d.push(pod("prod", "on-gw", "u1", "gw-a", "10.1.30.5", ""));
    d.push(pod("prod", "on-w", "u2", "w-1", "10.1.1.5", ""));
    d.push(policy("p", "[{podSelector: {}}]", &["0.0.0.0/0"], &[], GW));
    let w = world(&docs(&d));
    assert!(matches!(verdict(&w, "10.1.30.5", "8.8.8.8"), Verdict::LocalEgress { .. }));
    assert!(matches!(verdict(&w, "10.1.1.5", "8.8.8.8"), Verdict::Redirect { .. }));
    let p = egret_compiler::planner::plan_node(&w, "gw-a").unwrap();
    assert_eq!(p.gateway_tables[0].sources, vec![ip("10.1.1.5"), ip("10.1.30.5")]);
    check_equivalence(&w);
}

// ---- Egress IP ----

fn egress_world(network: bool) -> World {
    let mut d = base_nodes();
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1,fd00::1", ""));
    if network {
        d.push(
            r#"apiVersion: egret.dev/v1alpha1
kind: NodeNetwork
metadata: {name: gw-a}
spec:
  defaultRouteInterface: eth0
  interfaces:
  - {name: eth0, index: 2, addresses: [fe80::1/64, 192.0.2.30/24, 2001:db8::30/64, 2001:db8::31/64]}
  - {name: ens5, index: 3, altNames: [uplink], addresses: [169.254.0.9/16, 198.51.100.7/24, 2001:db8:1::7/64]}
"#
            .to_string(),
        );
    }
    let sel = r#"nodeSelector: {matchLabels: {egress: "true"}}"#;
    let both = ["203.0.113.0/24", "2001:db8:f::/48"];
    d.push(policy(
        "by-ip",
        "[{podSelector: {}}]",
        &["203.0.113.0/26", "2001:db8:f:1::/64"],
        &[],
        &format!(r#"egressGateway: {{{sel}, egressIP: "198.51.100.7"}}"#),
    ));
    d.push(policy(
        "by-iface",
        "[{podSelector: {}}]",
        &["203.0.113.64/26", "2001:db8:f:2::/64"],
        &[],
        &format!("egressGateway: {{{sel}, interface: uplink}}"),
    ));
    d.push(policy(
        "by-default",
        "[{podSelector: {}}]",
        &["203.0.113.128/26", "2001:db8:f:3::/64"],
        &[],
        &format!("egressGateway: {{{sel}}}"),
    ));
    d.push(policy(
        "missing-ip",
        "[{podSelector: {}}]",
        &["203.0.113.192/26"],
        &[],
        &format!(r#"egressGateway: {{{sel}, egressIP: "198.51.100.99"}}"#),
    ));
    let _ = both;
    world(&docs(&d))
}

fn egress_of(w: &World, dst: &str) -> Option<EgressIp> {
    match verdict(w, "10.1.1.1", dst) {
        Verdict::Redirect { egress_ip, .. } => egress_ip,
        v => panic!("{v:?}"),
    }
}

fn egress6_of(w: &World, dst: &str) -> Option<EgressIp> {
    match eval::decide(w, Source::Ip(ip("fd00::1")), ip(dst)).verdict {
        Verdict::Redirect { egress_ip, gateway, .. } => {
            assert_eq!(gateway.ip.to_string(), "192.0.2.30", "IPv6 traffic also tunnels to the IPv4 node IP");
            egress_ip
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn egress_ip_from_node_network_facts() {
    let w = egress_world(true);
    let known = |s: &str| Some(EgressIp::Known(ip(s)));
    assert_eq!(egress_of(&w, "203.0.113.1"), known("198.51.100.7"));
    assert_eq!(egress6_of(&w, "2001:db8:f:1::1"), known("2001:db8:1::7")); // interface holding egressIP
    assert_eq!(egress_of(&w, "203.0.113.65"), known("198.51.100.7")); // by altName, link-local skipped
    assert_eq!(egress6_of(&w, "2001:db8:f:2::1"), known("2001:db8:1::7"));
    assert_eq!(egress_of(&w, "203.0.113.129"), known("192.0.2.30")); // default route: eth0
    assert_eq!(egress6_of(&w, "2001:db8:f:3::1"), known("2001:db8::30")); // first non-link-local
    assert_eq!(
        egress_of(&w, "203.0.113.193"),
        Some(EgressIp::Unavailable { reason: NoEgressIp::EgressIpNotOnNode { ip: ip("198.51.100.99") } })
    );
    check_equivalence(&w);
}

#[test]
fn egress_ip_is_late_bound_without_node_facts() {
    let w = egress_world(false);
    assert_eq!(egress_of(&w, "203.0.113.1"), Some(EgressIp::Known(ip("198.51.100.7"))));
    assert_eq!(
        egress6_of(&w, "2001:db8:f:1::1"),
        Some(EgressIp::LateBound { spec: EgressSpec::EgressIp(ip("198.51.100.7")), family: Family::V6 })
    );
    assert_eq!(
        egress_of(&w, "203.0.113.65"),
        Some(EgressIp::LateBound { spec: EgressSpec::Interface("uplink".into()), family: Family::V4 })
    );
    assert_eq!(
        egress_of(&w, "203.0.113.129"),
        Some(EgressIp::LateBound { spec: EgressSpec::DefaultRoute, family: Family::V4 })
    );
    let p = egret_compiler::planner::plan_node(&w, "gw-a").unwrap();
    let text = p.to_text();
    assert!(text.contains("ipv4 late(default-route, ipv4)"), "{text}");
    assert!(text.contains("interface late(interface uplink)"), "{text}");
    // The Cilium view on the gateway shows where the agent would find it.
    let c = cilium::render(&w, "gw-a", cilium::Format::Text).unwrap();
    assert!(c.contains("late:default-route"), "{c}");
    // the artifact carries every late-bound egress address as a late field of
    // `egret_gw_slots` for the loader: IPv4 as a be32, IPv6 as 16 bytes
    let verified = egret_compiler::planner::Planner::new().plan_all(&w).expect("compiles");
    let a = egret_compiler::codegen::node::verified_node(&verified["gw-a"], &Default::default(), Some(&w))
        .expect("gw-a compiles")
        .into_artifact();
    a.check().expect("a valid artifact");
    let slots = a.manifest.maps.iter().find(|m| m.name == egret_bpf::templates::map::GW_SLOTS).expect("slots");
    use egret_bpf::artifact::{FieldEncoding, HoleSource};
    let late: Vec<_> = slots.entries.iter().flat_map(|e| &e.late).collect();
    let v6: Vec<_> = late.iter().filter(|f| matches!(f.source, HoleSource::SlotIpv6 { .. })).collect();
    let v4: Vec<_> = late.iter().filter(|f| matches!(f.source, HoleSource::SlotIpv4 { .. })).collect();
    assert!(!v4.is_empty() && !v6.is_empty(), "{late:?}");
    for f in v6 {
        assert_eq!(f.offset as usize, egret_bpf::layout::gw_slot::EGRESS_IP6.offset);
        assert_eq!(f.encoding, FieldEncoding::Ipv6);
    }
    for f in v4 {
        assert_eq!(f.offset as usize, egret_bpf::layout::gw_slot::EGRESS_IP.offset);
        assert_eq!(f.encoding, FieldEncoding::Be32);
    }
    check_equivalence(&w);
}

// ---- IPv6 ----

#[test]
fn ipv6_is_decided_and_compiled_like_ipv4() {
    let mut d = base_nodes();
    d.push(
        node("w-6", "192.0.2.16", "", true, "10.1.6.0/24")
            .replace("podCIDRs: [10.1.6.0/24]", "podCIDRs: [10.1.6.0/24, \"fd00:6::/64\"]"),
    );
    d.push(pod("prod", "dual", "u1", "w-6", "10.1.6.1,fd00:6::1", "app: a"));
    d.push(pod("prod", "v4only", "u2", "w-6", "10.1.6.2", "app: a"));
    d.push(policy("v6", "[{podSelector: {}}]", &["::/0", "203.0.113.0/24"], &["2001:db8:1::/48", "fd00::/8"], GW));
    let w = world(&docs(&d));
    assert!(matches!(
        eval::decide(&w, Source::Ip(ip("fd00:6::1")), ip("2001:db8::1")).verdict,
        Verdict::Redirect { .. }
    ));
    assert!(matches!(
        eval::decide(&w, Source::Ip(ip("fd00:6::1")), ip("2001:db8:1::1")).verdict,
        Verdict::Pass { reason: PassReason::NoPolicyMatches }
    ));
    assert!(matches!(
        eval::decide(&w, Source::Ip(ip("fd00:6::1")), ip("fd00:6::9")).verdict,
        Verdict::Pass { reason: PassReason::ClusterInternal { .. } }
    ));
    let p = egret_compiler::planner::plan_node(&w, "w-6").unwrap();
    assert_eq!(p.lookup(ip("fd00:6::1"), ip("2001:db8::1")), p.lookup(ip("10.1.6.1"), ip("203.0.113.1")));
    assert!(matches!(p.lookup(ip("fd00:6::1"), ip("2001:db8::1")).resolve(&Health::all_up()), Effect::Redirect { .. }));
    // The v4-only endpoint's class holds no IPv6 entries.
    let c = p.class_of(ip("10.1.6.2")).unwrap();
    assert!(p.classes[c.0 as usize].entries.iter().all(|e| e.prefix.family() == Family::V4));
    // Cilium (1.20) has an IPv6 map: the dual-stack endpoint's IPv6 address
    // with each IPv6 CIDR, the gateway's IPv4 address (or "Excluded CIDR"),
    // and `::` as egress IP on a node that is not the gateway.
    let v = cilium::view(&w, "w-6").unwrap();
    assert!(v.rows.iter().all(|r| r.destination.family() == Family::V4));
    let six: Vec<(String, String, String, String)> = v
        .rows6
        .iter()
        .map(|r| {
            (r.source_ip.to_string(), r.destination.to_string(), r.egress_ip.to_string(), r.gateway_ip.to_string())
        })
        .collect();
    let gw = w.node_by_name("gw-a").and_then(|n| n.ip).unwrap().to_string();
    let row = |d: &str, g: &str| ("fd00:6::1".to_string(), d.to_string(), "::".to_string(), g.to_string());
    assert_eq!(six, [row("::/0", &gw), row("2001:db8:1::/48", "0.0.0.1"), row("fd00::/8", "0.0.0.1")]);
    assert_eq!(v.omitted_ipv6, 0);
    // Cilium 1.17 had none: the same three entries are left out.
    let v17 = cilium::view_for(&w, "w-6", cilium::Release::V1_17).unwrap();
    assert_eq!((v17.rows, v17.rows6.len(), v17.omitted_ipv6), (v.rows, 0, 3));
    check_equivalence(&w);
}

// ---- Incremental updates ----

#[test]
fn adding_and_removing_a_pod_equals_resolving_from_scratch() {
    let mut d = base_nodes();
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    d.push(policy("p", "[{podSelector: {matchLabels: {app: b}}}]", &["0.0.0.0/0"], &["10.0.0.0/8"], GW));
    let newpod = pod("prod", "b", "u2", "w-1", "10.1.1.2", "app: b");
    let mut w = world(&docs(&d));
    let mut session = egret_compiler::planner::Planner::new();
    let before = session.plan_node(&w, "w-1").unwrap();
    let before_gw = session.plan_node(&w, "gw-a").unwrap();
    let b = bundle(&newpod);
    let id = w.add_pod(&b.cluster.pods[0]).unwrap().unwrap();
    let after = session.plan_node(&w, "w-1").unwrap();
    d.push(newpod.clone());
    let fresh = world(&docs(&d));
    assert_eq!(after.to_text(), egret_compiler::planner::plan_node(&fresh, "w-1").unwrap().to_text());
    assert_eq!(
        session.plan_node(&w, "gw-a").unwrap().to_text(),
        egret_compiler::planner::plan_node(&fresh, "gw-a").unwrap().to_text()
    );
    assert_ne!(before.to_text(), after.to_text());
    check_equivalence(&w);
    // Duplicate key and duplicate IP are refused.
    assert!(w.add_pod(&b.cluster.pods[0]).is_err());
    let dup_ip = bundle(&pod("prod", "c", "u3", "w-1", "10.1.1.2", ""));
    assert!(matches!(w.add_pod(&dup_ip.cluster.pods[0]), Err(egret_compiler::resolve::WorldError::DuplicateIp { .. })));
    // Remove it again.
    w.remove_pod("prod/b").unwrap();
    session.forget_endpoint(id);
    assert_eq!(session.plan_node(&w, "w-1").unwrap().to_text(), before.to_text());
    assert_eq!(session.plan_node(&w, "gw-a").unwrap().to_text(), before_gw.to_text());
    assert!(w.remove_pod("prod/b").is_err());
}
