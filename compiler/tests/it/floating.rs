//! Floating egress IPs in the compiler: resolution (every matching node a
//! candidate, one shared slot, the interface per candidate, the owner's /32
//! ignored), the claims refused (E0310, E0311), the lint (W0312 and what it
//! must not report), the plan (text, JSON, read back), the node artifact's
//! `egret_gw_slots` flag and `egret_gw_peers` image, the reference evaluator
//! and the equivalence checker.

use crate::core_common as common;

use common::{docs, ip, node, pod, world};
use egret_bpf::templates::{self, GatewayPeer, GatewaySlot};
use egret_compiler::codegen::{self, node as node_gen};
use egret_compiler::eval::{self, Source, Verdict};
use egret_compiler::ir::{Effect, Health};
use egret_compiler::resolve::{EgressIp, EgressSpec, FloatingSlot, InterfaceBinding, SlotId, World, fnv1a_32};
use egret_lang::codes;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

const FLOATING: &str = "198.51.100.50";

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("ipv4")
}

/// A node's underlay address.
fn underlay(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn floating_policy(name: &str, dest: &str, selector: &str, egress_ip: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata:\n  name: {name}\n  annotations: {{egret.dev/floating-egress-ip: \"true\"}}\nspec:\n  selectors: [{{podSelector: {{matchLabels: {{app: web}}}}}}]\n  destinationCIDRs: [\"{dest}\"]\n  egressGateway: {{nodeSelector: {{matchLabels: {{{selector}}}}}, egressIP: \"{egress_ip}\"}}\n"
    )
}

fn node_network(node: &str, default: &str, interfaces: &[(&str, u32, &str)]) -> String {
    let ifs: Vec<String> = interfaces
        .iter()
        .map(|(name, index, addrs)| format!("  - {{name: {name}, index: {index}, addresses: [{addrs}]}}\n"))
        .collect();
    format!(
        "apiVersion: egret.dev/v1alpha1\nkind: NodeNetwork\nmetadata: {{name: {node}}}\nspec:\n  defaultRouteInterface: {default}\n  interfaces:\n{}",
        ifs.concat()
    )
}

/// Three candidates: gw-a has the floating IP's subnet on eth1; gw-b holds
/// the IP as a /32 on eth2 (it owns it now), its default route on eth0;
/// gw-c has no node facts. worker-1 runs two pods. A fixed policy beside.
fn cluster(extra: &[String]) -> String {
    let mut d = vec![
        floating_policy("float", "203.0.113.0/24", "egress: \"true\"", FLOATING),
        common::policy(
            "fixed",
            "[{podSelector: {matchLabels: {app: web}}}]",
            &["192.0.2.0/24"],
            &[],
            "egressGateway: {nodeSelector: {matchLabels: {zone: a}}, egressIP: \"198.51.100.10\"}",
        ),
        node("gw-a", "10.0.0.11", "egress: \"true\", zone: a", true, "\"10.244.1.0/24\""),
        node("gw-b", "10.0.0.12", "egress: \"true\"", true, "\"10.244.2.0/24\""),
        node("gw-c", "10.0.0.13", "egress: \"true\"", true, "\"10.244.3.0/24\""),
        node("worker-1", "10.0.0.21", "", true, "\"10.244.4.0/24\""),
        node_network("gw-a", "eth0", &[("eth0", 2, "\"10.0.0.11/24\""), ("eth1", 3, "\"198.51.100.10/24\"")]),
        node_network("gw-b", "eth0", &[("eth0", 2, "\"10.0.0.12/24\""), ("eth2", 4, "\"198.51.100.50/32\"")]),
        common::namespace("default", ""),
        pod("default", "web-1", "uid-a", "worker-1", "10.244.4.5", "app: web"),
        pod("default", "web-2", "uid-b", "worker-1", "10.244.4.6", "app: web"),
        pod("default", "web-3", "uid-c", "gw-a", "10.244.1.7", "app: web"),
    ];
    d.extend_from_slice(extra);
    docs(&d)
}

fn plans_of(
    w: &World,
) -> std::collections::BTreeMap<String, egret_compiler::plan::Verified<egret_compiler::plan::Plan>> {
    egret_compiler::planner::Planner::new().plan_all(w).expect("compiles")
}

fn floating_slots(w: &World) -> Vec<&egret_compiler::resolve::EgressSlot> {
    w.slots().iter().filter(|s| s.floating.is_some()).collect()
}

#[test]
fn every_matching_node_is_a_candidate_serving_one_shared_slot() {
    let w = world(&cluster(&[]));
    assert!(w.diagnostics().is_empty(), "{:?}", w.diagnostics());
    assert!(w.validation_errors().is_empty());
    let p = w.policy_by_name("float").expect("policy");
    let gws: Vec<(&str, IpAddr)> = p.gateways.iter().map(|g| (g.node_name.as_str(), g.ip)).collect();
    assert_eq!(
        gws,
        [("gw-a", underlay("10.0.0.11")), ("gw-b", underlay("10.0.0.12")), ("gw-c", underlay("10.0.0.13"))]
    );
    assert!(p.gateways.iter().all(|g| g.spec == EgressSpec::Floating(v4(FLOATING))));

    let slots = floating_slots(&w);
    assert_eq!(slots.len(), 3, "one slot per candidate");
    let ids: BTreeSet<SlotId> = slots.iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), 1, "one shared id");
    let id = slots[0].id;
    // the documented scheme: derived from the IP alone (no collision here)
    assert_eq!(id.0, fnv1a_32(format!("floating\0{FLOATING}").as_bytes()) & 0x00ff_ffff);
    let fixed = w.policy_by_name("fixed").expect("policy");
    assert_eq!(fixed.gateways.len(), 1, "a fixed entry still resolves to one node");
    assert!(w.slots().iter().filter(|s| s.floating.is_none()).all(|s| s.id != id));

    let want = FloatingSlot {
        ip: v4(FLOATING),
        candidates: vec![
            ("gw-a".into(), underlay("10.0.0.11")),
            ("gw-b".into(), underlay("10.0.0.12")),
            ("gw-c".into(), underlay("10.0.0.13")),
        ],
    };
    for s in &slots {
        assert_eq!(s.floating.as_ref(), Some(&want), "{}", s.gateway_name);
        // the floating IP on every candidate, though no node has it configured
        assert_eq!(s.v4, Some(EgressIp::Known(IpAddr::V4(v4(FLOATING)))), "{}", s.gateway_name);
    }
    let iface = |n: &str| slots.iter().find(|s| s.gateway_name == n).map(|s| s.interface.clone());
    // gw-a: the interface on the IP's subnet
    assert_eq!(iface("gw-a"), Some(InterfaceBinding::Known { name: "eth1".into(), index: Some(3) }));
    // gw-b: the owner's /32 on eth2 is ignored: the default route's interface
    assert_eq!(iface("gw-b"), Some(InterfaceBinding::Known { name: "eth0".into(), index: Some(2) }));
    // gw-c: no facts, found on the node
    assert_eq!(iface("gw-c"), Some(InterfaceBinding::LateBound { spec: EgressSpec::Floating(v4(FLOATING)) }));
    let peers: Vec<IpAddr> = want.peers_of(Some(underlay("10.0.0.12"))).map(|(_, ip)| *ip).collect();
    assert_eq!(peers, [underlay("10.0.0.11"), underlay("10.0.0.13")]);
}

#[test]
fn the_plan_carries_the_floating_slot_and_every_candidate_serves_every_endpoint() {
    let w = world(&cluster(&[]));
    let plans = plans_of(&w);
    let id = floating_slots(&w)[0].id;
    let sources: BTreeSet<IpAddr> = ["10.244.4.5", "10.244.4.6", "10.244.1.7"].iter().map(|s| ip(s)).collect();
    for gw in ["gw-a", "gw-b", "gw-c"] {
        let plan = &plans[gw];
        let slot = plan.slots.iter().find(|s| s.id == id).expect("the shared slot");
        assert_eq!(slot.floating.as_ref().map(|f| f.candidates.len()), Some(3), "{gw}");
        let table = plan.gateway_tables.iter().find(|t| t.slot == id).expect("served");
        assert_eq!(table.sources.iter().copied().collect::<BTreeSet<_>>(), sources, "{gw}");
        // a pod's packets come from its own node (or a candidate forwarding them)
        for (src, from) in table.sources.iter().zip(&table.from) {
            let expect = if *src == ip("10.244.1.7") {
                (gw != "gw-a").then(|| underlay("10.0.0.11"))
            } else {
                Some(underlay("10.0.0.21"))
            };
            assert_eq!(*from, expect, "{gw} {src}");
        }
        // text and JSON show it
        let text = plan.to_text();
        let line = text.lines().find(|l| l.contains(&id.to_string()) && l.contains(" on ")).expect("slot line");
        assert!(line.ends_with("floating among gw-a 10.0.0.11, gw-b 10.0.0.12, gw-c 10.0.0.13"), "{gw}: {line}");
        assert!(line.contains(&format!("floating-ip {FLOATING}: ipv4 {FLOATING}")), "{line}");
        let json = plan.to_json();
        let s = json["slots"].as_array().expect("slots").iter().find(|s| s["id"] == id.0).expect("slot");
        assert_eq!(s["floating"]["ip"], FLOATING);
        assert_eq!(s["floating"]["candidates"][1]["node"], "gw-b");
        assert_eq!(s["floating"]["candidates"][1]["ip"], "10.0.0.12");
        // read back from the text: the same floating slot
        let back = codegen::plan_text::parse(&text).expect("parses");
        let b = back.slots.iter().find(|s| s.id == id).expect("slot");
        assert_eq!(b.floating, slot.floating, "{gw}");
    }
    // a fixed slot's JSON says so
    let fixed = &plans["gw-a"].to_json()["slots"];
    assert!(fixed.as_array().expect("slots").iter().any(|s| s["floating"].is_null()));
    // the source side: the worker's choices name all three candidates with the shared slot
    let worker = &plans["worker-1"];
    let action = worker.lookup(ip("10.244.4.5"), ip("203.0.113.9"));
    let egret_compiler::ir::Action::Egress(choice) = action else { panic!("{action}") };
    let targets: BTreeSet<IpAddr> = choice.targets().iter().map(|t| t.gateway).collect();
    assert_eq!(targets, [underlay("10.0.0.11"), underlay("10.0.0.12"), underlay("10.0.0.13")].into());
    assert!(choice.targets().iter().all(|t| t.slot == id));
}

#[test]
fn gateway_images_flag_the_slot_and_list_the_other_candidates() {
    let w = world(&cluster(&[]));
    let plans = plans_of(&w);
    let id = floating_slots(&w)[0].id;
    for (gw, others) in [
        ("gw-a", ["10.0.0.12", "10.0.0.13"]),
        ("gw-b", ["10.0.0.11", "10.0.0.13"]),
        ("gw-c", ["10.0.0.11", "10.0.0.12"]),
    ] {
        let images = node_gen::gateway_images(&plans[gw]).expect("images");
        let entries = |name: &str| images.iter().find(|m| m.name == name).expect("image").decoded().expect("hex");
        let slots: Vec<GatewaySlot> =
            entries(templates::map::GW_SLOTS).iter().filter_map(|(k, v)| GatewaySlot::from_bytes(k, v)).collect();
        let floating: Vec<&GatewaySlot> = slots.iter().filter(|s| s.floating).collect();
        assert_eq!(floating.len(), 1, "{gw}");
        assert_eq!((floating[0].slot, floating[0].egress_ip), (id.0, v4(FLOATING)), "{gw}");
        assert!(slots.iter().filter(|s| s.slot != id.0).all(|s| !s.floating), "{gw}: fixed slots stay fixed");
        let peers: BTreeSet<(u32, IpAddr)> = entries(templates::map::GW_PEERS)
            .iter()
            .filter_map(|(k, v)| GatewayPeer::from_bytes(k, v))
            .map(|p| (p.slot, p.peer))
            .collect();
        let want: BTreeSet<(u32, IpAddr)> = others.iter().map(|p| (id.0, v4(p).into())).collect();
        assert_eq!(peers, want, "{gw}");
        // the plan read back from its text gives the same peers
        let back = codegen::plan_text::parse(&plans[gw].to_text()).expect("parses");
        let again = node_gen::gateway_images(&back).expect("images");
        let find = |imgs: &[egret_bpf::artifact::MapImage]| {
            imgs.iter().find(|m| m.name == templates::map::GW_PEERS).map(|m| m.entries.clone())
        };
        assert_eq!(find(&again), find(&images), "{gw}");
    }
    // a node that is no candidate has no peers
    let worker = node_gen::gateway_images(&plans["worker-1"]).expect("images");
    let p = worker.iter().find(|m| m.name == templates::map::GW_PEERS).expect("image");
    assert!(p.entries.is_empty());
}

#[test]
fn the_egress_ip_is_the_floating_ip_whichever_candidate_is_in_effect() {
    let w = world(&cluster(&[]));
    let id = floating_slots(&w)[0].id;
    let mut health = Health::all_up();
    let mut seen = BTreeSet::new();
    loop {
        let d = eval::decide_with(&w, Source::Ip(ip("10.244.4.5")), ip("203.0.113.9"), &health);
        match d.verdict {
            Verdict::Redirect { gateway, slot, egress_ip } => {
                assert_eq!(slot, id);
                assert_eq!(egress_ip, Some(EgressIp::Known(IpAddr::V4(v4(FLOATING)))));
                seen.insert(gateway.ip);
                health.down.insert(gateway.ip);
            }
            other => {
                assert_eq!(other.effect(), Effect::Drop(egret_compiler::ir::DropReason::NoGateway));
                break;
            }
        }
    }
    assert_eq!(seen.len(), 3, "every candidate is in the failover order");
}

#[test]
fn equivalence_checker_passes_on_floating_plans() {
    let w = world(&cluster(&[]));
    assert!(common::check_equivalence(&w) > 0);
    let plans = plans_of(&w);
    for name in ["gw-a", "gw-b", "worker-1"] {
        let v = node_gen::verified_node(&plans[name], &codegen::Options::default(), Some(&w));
        let v = v.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(v.report().cases > 0, "{name}");
    }
}

#[test]
fn different_candidate_sets_for_one_ip_fail_both_policies_closed() {
    let other = floating_policy("other", "198.18.0.0/15", "zone: a", FLOATING);
    let w = world(&cluster(&[other]));
    let d: Vec<_> = w.diagnostics().iter().filter(|d| d.code.id == codes::FLOATING_CANDIDATES_DIFFER.id).collect();
    assert_eq!(d.len(), 1, "{:?}", w.diagnostics());
    for part in ["`float` (candidates gw-a, gw-b, gw-c)", "`other` (candidates gw-a)"] {
        assert!(d[0].message.contains(part), "{}", d[0].message);
    }
    assert_eq!(d[0].labels.len(), 2, "both policies' egressIP");
    assert!(w.policy_by_name("float").expect("p").gateways.is_empty());
    assert!(w.policy_by_name("other").expect("p").gateways.is_empty());
    assert!(floating_slots(&w).is_empty());
    // fail closed: dropped, not sent from the IP
    let v = eval::decide(&w, Source::Ip(ip("10.244.4.5")), ip("203.0.113.9")).verdict;
    assert_eq!(v.effect(), Effect::Drop(egret_compiler::ir::DropReason::NoGateway));
    // the other policy is untouched
    assert_eq!(w.policy_by_name("fixed").expect("p").gateways.len(), 1);
    // the same candidates for the same IP are fine: one shared slot
    let same = floating_policy("same", "198.18.0.0/15", "egress: \"true\"", FLOATING);
    let w = world(&cluster(&[same]));
    assert!(w.diagnostics().is_empty(), "{:?}", w.diagnostics());
    assert_eq!(floating_slots(&w).len(), 3);
}

#[test]
fn a_floating_ip_that_is_a_fixed_node_address_is_refused() {
    let held = node_network("gw-c", "eth0", &[("eth0", 2, &format!("\"10.0.0.13/24\", \"{FLOATING}/24\""))]);
    let w = world(&cluster(&[held]));
    let d: Vec<_> = w.diagnostics().iter().filter(|d| d.code.id == codes::FLOATING_IP_IS_NODE_ADDRESS.id).collect();
    assert_eq!(d.len(), 1, "{:?}", w.diagnostics());
    assert!(d[0].message.contains("node `gw-c`"), "{}", d[0].message);
    assert!(w.policy_by_name("float").expect("p").gateways.is_empty());
    // a /32 is the current owner holding it (gw-b in the cluster): no diagnostic
    assert!(world(&cluster(&[])).diagnostics().is_empty());
}

fn lint_codes(yaml: &str) -> Vec<&'static str> {
    let opts = egret_compiler::lint::Options { snapshot: true, service_cidrs: Vec::new() };
    egret_compiler::lint::lint(&common::bundle(yaml), &opts).iter().map(|d| d.code.id).collect()
}

#[test]
fn lint_warns_about_an_egress_ip_on_one_node_but_not_about_floating_or_interfaces() {
    let fixed = |gateways: &str| {
        common::policy("p", "[{podSelector: {matchLabels: {app: web}}}]", &["203.0.113.0/24"], &[], gateways)
    };
    let nodes = [
        node("gw-a", "10.0.0.11", "egress: \"true\", zone: a", true, "\"10.244.1.0/24\""),
        node("gw-b", "10.0.0.12", "egress: \"true\", zone: b", true, "\"10.244.2.0/24\""),
        common::namespace("default", ""),
        pod("default", "web-1", "uid-a", "gw-a", "10.244.1.5", "app: web"),
    ];
    let with = |p: String| docs(&[&[p][..], &nodes[..]].concat());
    let two = "egressGateways: [{nodeSelector: {matchLabels: {zone: a}}, egressIP: \"198.51.100.50\"}, {nodeSelector: {matchLabels: {zone: b}}, egressIP: \"198.51.100.51\"}]";
    assert_eq!(lint_codes(&with(fixed(two))).iter().filter(|c| **c == codes::EGRESS_IP_ON_ONE_NODE.id).count(), 2);
    // one IP on both gateway nodes (a VIP each entry names): it can move
    let shared = two.replace("198.51.100.51", "198.51.100.50");
    assert!(!lint_codes(&with(fixed(&shared))).contains(&codes::EGRESS_IP_ON_ONE_NODE.id));
    // interface-based: no explicit IP to move
    let iface = "egressGateways: [{nodeSelector: {matchLabels: {zone: a}}, interface: eth1}, {nodeSelector: {matchLabels: {zone: b}}, interface: eth1}]";
    assert!(!lint_codes(&with(fixed(iface))).contains(&codes::EGRESS_IP_ON_ONE_NODE.id));
    // floating: neither W0312, nor W0303 (several nodes) nor E0306 (IP not on the node)
    let float = lint_codes(&with(floating_policy("p", "203.0.113.0/24", "egress: \"true\"", FLOATING)));
    assert!(float.is_empty(), "{float:?}");
    // the same fixed IP over a selector matching both nodes does warn (and W0303)
    let one_entry = "egressGateway: {nodeSelector: {matchLabels: {egress: \"true\"}}, egressIP: \"198.51.100.50\"}";
    let c = lint_codes(&with(fixed(one_entry)));
    assert!(c.contains(&codes::EGRESS_IP_ON_ONE_NODE.id) && c.contains(&codes::SEVERAL_GATEWAY_NODES.id), "{c:?}");
}

#[test]
fn explain_names_the_floating_ip_and_its_candidates() {
    let w = world(&cluster(&[]));
    let e = egret_compiler::explain::explain(&w, "default/web-1", "203.0.113.9").expect("explains");
    let f = e.floating.as_ref().expect("floating");
    assert_eq!(f.ip, v4(FLOATING));
    let text = egret_compiler::explain::render(&e, egret_compiler::explain::Format::Human);
    assert!(
        text.contains(&format!(
            "floating: {FLOATING} moves between its candidates gw-a (10.0.0.11), gw-b (10.0.0.12), gw-c (10.0.0.13)"
        )),
        "{text}"
    );
    let json = egret_compiler::explain::to_json(&e);
    assert_eq!(json["floating"]["candidates"][2]["node"], "gw-c");
    // a fixed policy's verdict has none
    let fixed = egret_compiler::explain::explain(&w, "default/web-1", "192.0.2.9").expect("explains");
    assert!(fixed.floating.is_none() && egret_compiler::explain::to_json(&fixed)["floating"].is_null());
}
