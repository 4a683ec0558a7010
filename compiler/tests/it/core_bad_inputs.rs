//! Bad inputs give diagnostics or documented handling, never panics.

use crate::core_common as common;

use common::*;
use egret_compiler::driver::CompileError;
use egret_compiler::eval::{self, PassReason, Source, Verdict};
use egret_compiler::ir::{DropReason, Stage};
use egret_compiler::planner;
use egret_compiler::resolve::{Options, World};
use egret_compiler::{cilium, diff, explain};
use egret_lang::source::FileId;

const GW: &str = r#"egressGateway: {nodeSelector: {matchLabels: {egress: "true"}}, egressIP: "198.51.100.1"}"#;

fn nodes() -> Vec<String> {
    vec![
        node("gw", "192.0.2.30", r#"egress: "true""#, true, "10.1.30.0/24"),
        node("w-1", "192.0.2.11", "", true, "10.1.1.0/24"),
        namespace("prod", ""),
    ]
}

fn codes(d: &[egret_lang::Diagnostic]) -> Vec<&'static str> {
    d.iter().map(|d| d.code.id).collect()
}

#[test]
fn unknown_node_is_e0401_everywhere() {
    let w = world(&docs(&nodes()));
    let err = planner::plan_node(&w, "w-9").unwrap_err();
    assert_eq!(codes(err.diagnostics()), ["E0401"]);
    assert_eq!(err.diagnostics()[0].help.as_deref(), Some("did you mean `w-1`?"));
    assert_eq!(codes(planner::emit_ir(&w, "nope", Stage::Lowered).unwrap_err().diagnostics()), ["E0401"]);
    assert_eq!(cilium::render(&w, "nope", cilium::Format::Text).unwrap_err().code.id, "E0401");
    let empty = World::new(&Default::default(), &Options::default());
    assert_eq!(codes(planner::plan_node(&empty, "x").unwrap_err().diagnostics()), ["E0401"]);
    assert!(planner::Planner::new().plan_all(&empty).unwrap().is_empty());
}

#[test]
fn pods_without_ip_or_on_unknown_nodes() {
    let mut d = nodes();
    d.push(pod("prod", "noip", "u1", "w-1", "", "app: a"));
    d.push(pod("prod", "lost", "u2", "w-9", "10.9.0.1", "app: a"));
    d.push(policy("p", "[{podSelector: {}}]", &["0.0.0.0/0"], &[], GW));
    let w = world(&docs(&d));
    assert_eq!(codes(w.diagnostics()), ["W0308"]);
    assert!(w.endpoint_by_key("prod/noip").is_none());
    let lost = w.endpoint_by_key("prod/lost").unwrap();
    assert!(lost.node.is_none());
    assert_eq!(w.unplaced_endpoints().count(), 1);
    // Its decision is still computed (redirect to the gateway); the gateway accepts it,
    // and no plan hosts it.
    assert!(matches!(eval::decide(&w, Source::Ip(ip("10.9.0.1")), ip("8.8.8.8")).verdict, Verdict::Redirect { .. }));
    let plans = planner::Planner::new().plan_all(&w).unwrap();
    assert!(plans["gw"].gateway_allows(plans["gw"].gateway_tables[0].slot, ip("10.9.0.1")));
    assert!(plans.values().all(|p| p.class_of(ip("10.9.0.1")).is_none()));
    check_equivalence(&w);
    // explain: a pod without IP is E0402 with the reason.
    let e = explain::explain(&w, "prod/noip", "8.8.8.8").unwrap_err();
    assert_eq!(e.code.id, "E0402");
    assert!(e.notes[0].contains("no IP"), "{:?}", e.notes);
}

#[test]
fn duplicate_names_keep_the_first_and_compile_refuses_duplicate_policies() {
    let mut d = nodes();
    d.push(node("w-1", "192.0.2.99", "dup: x", true, "10.1.99.0/24"));
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    d.push(pod("prod", "a", "u9", "w-1", "10.1.1.9", "app: b"));
    d.push(policy("p", "[{podSelector: {matchLabels: {app: a}}}]", &["0.0.0.0/0"], &[], GW));
    d.push(policy("p", "[{podSelector: {matchLabels: {app: b}}}]", &["1.0.0.0/8"], &[], GW));
    let w = world(&docs(&d));
    assert_eq!(w.node_by_name("w-1").unwrap().ip.unwrap().to_string(), "192.0.2.11");
    assert_eq!(w.endpoint_by_key("prod/a").unwrap().ips, vec![ip("10.1.1.1")]);
    assert_eq!(w.policies().len(), 1);
    assert_eq!(w.policies()[0].destinations, vec![cidr("0.0.0.0/0")]);
    assert!(codes(w.validation_errors()).iter().all(|c| *c == "E0114"));
    assert!(matches!(planner::plan_node(&w, "w-1"), Err(CompileError::Input { .. })));
    assert!(planner::Planner::new().plan_all(&w).is_err());
    // Evaluation still works on what resolved.
    assert!(matches!(eval::decide(&w, Source::Ip(ip("10.1.1.1")), ip("8.8.8.8")).verdict, Verdict::Redirect { .. }));
    // diff notes that sizes cannot be compared.
    let dd = diff::compute(&w, &w);
    assert!(dd.is_empty());
    assert!(dd.size_note.is_some());
}

#[test]
fn dangling_references_are_w0308() {
    let mut d = nodes();
    d.push(pod("ghost-ns", "a", "u1", "w-1", "10.1.1.1", ""));
    d.push(pod("ghost-ns", "b", "u2", "w-1", "10.1.1.2", ""));
    d.push(
        "apiVersion: egret.dev/v1alpha1\nkind: NodeNetwork\nmetadata: {name: w-7}\nspec: {interfaces: []}\n"
            .to_string(),
    );
    let w = world(&docs(&d));
    assert_eq!(codes(w.diagnostics()), ["W0308", "W0308"]);
    assert_eq!(w.namespace_labels("ghost-ns").get("kubernetes.io/metadata.name").map(String::as_str), Some("ghost-ns"));
    check_equivalence(&w);
}

#[test]
fn duplicate_pod_ips_are_w0309_and_the_first_keeps_the_ip() {
    let mut d = nodes();
    d.push(pod("prod", "b", "u2", "w-1", "10.1.1.1", "app: b"));
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1,10.1.1.7", "app: a"));
    d.push(pod("prod", "c", "u3", "w-1", "10.1.1.1", "app: c"));
    d.push(policy("p", "[{podSelector: {}}]", &["0.0.0.0/0"], &[], GW));
    let w = world(&docs(&d));
    assert_eq!(codes(w.diagnostics()), ["W0309", "W0309"]);
    assert_eq!(w.endpoint_by_ip(ip("10.1.1.1")).unwrap().key, "prod/a");
    assert_eq!(w.endpoint_by_key("prod/b").map(|e| e.ips.clone()), None);
    assert_eq!(w.non_endpoint_reason("prod/c"), Some("its IPs belong to other pods"));
    check_equivalence(&w);
}

#[test]
fn policies_with_field_errors_are_refused_by_compile_but_evaluated_safely() {
    let mut d = nodes();
    d.push(pod("prod", "a", "u1", "w-1", "10.1.1.1", "app: a"));
    // An item with neither pod- nor namespaceSelector (Cilium refuses it), and
    // a CIDR with host bits (Cilium reads it as 10.0.0.0/8: a warning only).
    d.push(policy("bad", "[{nodeSelector: {}}]", &["10.0.0.1/8"], &[], GW));
    let (b, diags) = egret_lang::k8s::parse_yaml(FileId(0), &docs(&d));
    assert_eq!(codes(&diags), ["W0122"]);
    let w = World::new(&b, &Options::default());
    let c = codes(w.validation_errors());
    assert_eq!(c, ["E0109"]);
    let err = planner::plan_node(&w, "w-1").unwrap_err();
    assert_eq!(err.diagnostics().len(), 1);
    assert!(matches!(
        eval::decide(&w, Source::Ip(ip("10.1.1.1")), ip("8.8.8.8")).verdict,
        Verdict::Pass { reason: PassReason::NoPolicyMatches }
    ));
    let e = explain::explain(&w, "prod/a", "8.8.8.8").unwrap();
    assert!(explain::render(&e, explain::Format::Human).contains("invalid, selects nothing"));
}

#[test]
fn policies_missing_parts_still_resolve() {
    // Parse errors (missing gateway, missing destinations) are the caller's to
    // report; what the parser kept must not break resolution or evaluation.
    let text = docs(&[
        nodes().join("---\n"),
        "apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata: {name: nogw}\nspec:\n  selectors: [{podSelector: {}}]\n  destinationCIDRs: [\"0.0.0.0/0\"]\n".to_string(),
        "apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata: {name: nodest}\nspec:\n  selectors: [{podSelector: {}}]\n".to_string(),
        "apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata: {name: nospec}\n".to_string(),
        pod("prod", "a", "u1", "w-1", "10.1.1.1", ""),
    ]);
    let (b, diags) = egret_lang::k8s::parse_yaml(FileId(0), &text);
    assert!(!diags.is_empty());
    let w = World::new(&b, &Options::default());
    assert_eq!(
        eval::decide(&w, Source::Ip(ip("10.1.1.1")), ip("8.8.8.8")).verdict,
        Verdict::Drop { reason: DropReason::NoGateway }
    );
    check_equivalence(&w);
    for n in ["gw", "w-1"] {
        assert!(cilium::render(&w, n, cilium::Format::Json).is_ok());
    }
}

#[test]
fn explain_rejects_unknown_pods_and_bad_addresses() {
    let mut d = nodes();
    d.push(pod("prod", "api", "u1", "w-1", "10.1.1.1", ""));
    let w = world(&docs(&d));
    let e = explain::explain(&w, "prod/apj", "8.8.8.8").unwrap_err();
    assert_eq!(e.code.id, "E0402");
    assert_eq!(e.help.as_deref(), Some("did you mean `prod/api`?"));
    assert_eq!(explain::explain(&w, "api", "8.8.8.8").unwrap_err().code.id, "E0402"); // default/api
    assert_eq!(explain::explain(&w, "prod/api", "8.8.8.800").unwrap_err().code.id, "E0107");
    assert_eq!(explain::explain(&w, "prod/api", "8.8.8.8:http").unwrap_err().code.id, "E0107");
    let ok = explain::explain(&w, "prod/api", "[2001:db8::1]:443").unwrap();
    assert_eq!(ok.port, Some(443));
    // An IPv6 destination for an endpoint without IPv6: still explained.
    assert!(explain::render(&ok, explain::Format::Human).contains("no IP of the destination's family"));
}

#[test]
fn nodes_without_ipv4_compile() {
    let mut d = nodes();
    d.push(node("v6", "2001:db8::5", "", true, "10.1.5.0/24"));
    d.push("apiVersion: v1\nkind: Node\nmetadata: {name: bare}\nspec: {podCIDRs: [10.1.6.0/24]}\n".to_string());
    d.push(pod("prod", "a", "u1", "v6", "10.1.5.1", ""));
    d.push(policy("p", "[{podSelector: {}}]", &["0.0.0.0/0"], &[], GW));
    let w = world(&docs(&d));
    // an IPv6-only node's underlay address is its IPv6 InternalIP
    let p = planner::plan_node(&w, "v6").unwrap();
    assert!(p.to_text().starts_with("; egret plan for node v6 (2001:db8::5)"), "{}", p.to_text());
    // a node with no InternalIP at all
    let p = planner::plan_node(&w, "bare").unwrap();
    assert!(p.to_text().contains("(no InternalIP)"), "{}", p.to_text());
    assert_eq!(egret_compiler::codegen::plan_text::parse(&p.to_text()).expect("reads back").node_ip, None);
    check_equivalence(&w);
}

#[test]
fn ipv6_bad_inputs_compile_and_lint_says_what_happens() {
    // The inputs of W0207, E0306 (an IPv6 egress IP), E0313 and W0314: lint
    // reports them, and everything else still works on them: every node
    // compiles to a verified artifact, the plans agree with the reference
    // evaluator, and both Cilium readings render.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lint");
    let cases = [
        ("W0207-egress-ip-family-without-destinations.yaml", "W0207"),
        ("E0306-ipv6-egress-ip-not-on-node.yaml", "E0306"),
        ("E0313-no-egress-address-for-family.yaml", "E0313"),
        ("W0314-floating-candidates-mixed-families.yaml", "W0314"),
    ];
    for (file, code) in cases {
        let text = std::fs::read_to_string(dir.join(file)).expect("fixture");
        let (mut b, diags) = egret_lang::k8s::parse_yaml(FileId(0), &text);
        assert!(diags.is_empty(), "{file}: {diags:?}");
        if b.cluster.is_empty() {
            // W0207 needs no cluster; compile it against one
            let (c, _) = egret_lang::k8s::parse_yaml(
                FileId(1),
                &docs(&[
                    node("gw", "192.0.2.30", r#"egress: "true""#, true, "10.1.30.0/24"),
                    node("w-1", "192.0.2.11", "", true, "10.1.1.0/24"),
                    "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: prod, uid: u1, labels: {app: web}}\nspec: {nodeName: w-1}\nstatus: {podIPs: [{ip: 10.1.1.5}, {ip: \"fd00::5\"}]}\n".to_string(),
                ]),
            );
            b.extend(c);
        }
        let lint = egret_compiler::lint::lint(
            &b,
            &egret_compiler::lint::Options { snapshot: true, service_cidrs: Vec::new() },
        );
        assert!(codes(&lint).contains(&code), "{file}: {:?}", codes(&lint));
        let w = World::new(&b, &Options::default());
        assert!(w.validation_errors().is_empty(), "{file}");
        check_equivalence(&w);
        let mut driver = egret_compiler::driver::Driver::new(Default::default());
        for n in w.nodes() {
            driver
                .compile(&w, &n.name)
                .unwrap_or_else(|e| panic!("{file}: node {}: {:?}", n.name, codes(e.diagnostics())));
            for release in cilium::Release::ALL {
                let v = cilium::view_for(&w, &n.name, release).expect("view");
                let _ = cilium::render_view(&v, cilium::Format::Json);
            }
        }
        // Cilium 1.20 refuses the W0207 policy; egret sends its IPv6 traffic through the gateway.
        let refused =
            !cilium::view_for(&w, &w.nodes()[0].name, cilium::Release::V1_20).expect("view").refused.is_empty();
        assert_eq!(refused, code == "W0207", "{file}");
    }
}

/// Policies repeated many times are one finding each kind, with a count;
/// ties per destination are capped with the rest counted; a long list of
/// destinations is a few labels and a count (issue #22: 2,000 identical
/// policies used to build millions of warnings).
#[test]
fn repeated_policies_and_many_pairs_give_bounded_findings() {
    let lint = |yaml: &str| egret_compiler::lint::lint(&bundle(yaml), &Default::default());
    let sel = "[{podSelector: {matchLabels: {app: web}}}]";
    let identical: Vec<String> =
        (0..300).map(|i| policy(&format!("same-{i:03}"), sel, &["0.0.0.0/0"], &[], GW)).collect();
    let d = lint(&docs(&identical));
    assert_eq!(codes(&d), ["W0204", "W0203"], "{d:#?}");
    assert_eq!(d[0].message, "policies `same-001` and 298 more never take effect");
    assert!(d[0].notes.iter().any(|n| n.contains("`same-005` and 294 more")), "{:?}", d[0].notes);
    assert_eq!(
        d[1].message,
        "policies `same-000` and `same-001` tie for destination `0.0.0.0/0` with the same gateway and egress IP"
    );
    assert!(
        d[1].notes.iter().any(|n| n.starts_with("so do `same-002`") && n.contains("and 293 more")),
        "{:?}",
        d[1].notes
    );
    // the same policies with distinct egress IPs: conflicts, at most LISTED_TIES listed
    let distinct: Vec<String> = (0..40)
        .map(|i| {
            let gw = format!(
                r#"egressGateway: {{nodeSelector: {{matchLabels: {{egress: "true"}}}}, egressIP: "198.51.100.{i}"}}"#
            );
            policy(&format!("gw-{i:02}"), sel, &["0.0.0.0/0"], &[], &gw)
        })
        .collect();
    let d = lint(&docs(&distinct));
    let conflicts: Vec<_> = d.iter().filter(|d| d.code.id == "E0202").collect();
    const LISTED: usize = egret_compiler::lint::set::LISTED_TIES;
    assert_eq!(conflicts.len(), LISTED);
    let pairs = 40 * 39 / 2;
    let more = format!("{} more pairs of policies tie for `0.0.0.0/0`", pairs - conflicts.len());
    assert!(d.iter().flat_map(|d| &d.notes).any(|n| n.starts_with(&more)), "{more}: {d:#?}");
    // policies that differ only in their egress IP are one selection class:
    // one W0204 for all but the smallest name, saying the gateways differ
    let shadowed: Vec<_> = d.iter().filter(|d| d.code.id == "W0204").collect();
    assert_eq!(shadowed.len(), 1, "{d:#?}");
    assert_eq!(shadowed[0].message, "policies `gw-01` and 38 more never take effect");
    assert!(shadowed[0].notes.iter().any(|n| n.contains("as `gw-00`") && n.contains("egress IPs differ")));
    // a second class of twins (same gateway among themselves, another
    // destination set) still ties with the first class's members
    let mut mixed = distinct.clone();
    mixed.extend((0..3).map(|i| policy(&format!("twin-{i}"), sel, &["0.0.0.0/0", "10.0.0.0/8"], &[], GW)));
    let d = lint(&docs(&mixed));
    // pairs counted: twin-0/twin-1 (twins count through their first member),
    // the 40 gw policies among themselves, and each of them with twin-0
    let more = format!("{} more pairs of policies tie for `0.0.0.0/0`", 1 + 40 * 39 / 2 + 40 - LISTED);
    assert!(d.iter().flat_map(|d| &d.notes).any(|n| n.starts_with(&more)), "{more}: {d:#?}");
    // one policy, 200 destinations, one exclusion outside them all: three labels and a count
    let dests: Vec<String> = (0..200).map(|i| format!("10.0.{i}.0/24")).collect();
    let dests: Vec<&str> = dests.iter().map(String::as_str).collect();
    let d = lint(&policy("many", sel, &dests, &["192.0.2.0/24"], GW));
    assert_eq!(codes(&d), ["W0201"]);
    assert_eq!(d[0].labels.len(), 4, "the exclusion and three destinations");
    assert!(d[0].notes.iter().any(|n| n == "the policy has 197 more destinations"), "{:?}", d[0].notes);
}
