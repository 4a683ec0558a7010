//! Admissions into a running classifier (`codegen::admit`): the program of a
//! plan without some endpoints, with those endpoints written into
//! `egret_admitted_*` as the agent writes them at CNI `ADD`, decides every
//! packet as the full plan's program does — the equivalence checker (the
//! plan's lookup and the reference evaluator) accepts it against the full
//! plan, in both layouts. And a wrong admission is caught.

use crate::codegen_common as common;

use egret_bpf::artifact::Artifact;
use egret_compiler::codegen::{self, Layout, Options, admit, equiv};
use egret_compiler::plan::{EndpointEntry, Plan, Verified, verify};
use egret_lang::net::Family;
use std::collections::BTreeSet;

/// `plan` with only the last endpoint of each (class, family): the
/// generation built before the others were admitted. The first endpoint of
/// a class is the source of the checker's whole battery for that class
/// (every destination interval), so it is one of those admitted.
fn with_last_endpoints(plan: &Plan) -> Verified<Plan> {
    let mut seen = BTreeSet::new();
    let mut endpoints: Vec<EndpointEntry> =
        plan.endpoints.iter().rev().filter(|e| seen.insert((Family::of(&e.ip), e.class))).cloned().collect();
    endpoints.reverse();
    verify::verify(Plan { endpoints, ..plan.clone() }).expect("a plan with fewer endpoints verifies")
}

/// The artifact of `built` with `admitted` written into its `egret_admitted_*` images.
fn with_admitted(built: &Verified<Plan>, layout: Layout, admitted: &[EndpointEntry]) -> Artifact {
    let g = codegen::generate(built, &Options { layout: Some(layout), ..Options::default() }).expect("generates");
    let a = g.artifact(built).expect("artifact");
    let mut maps = a.manifest.maps.clone();
    for e in admitted {
        let (map, key, value) = admit::entry(e);
        maps.iter_mut().find(|m| m.name == map).expect("the admitted map of the family").push(&key, &value);
    }
    let m = &a.manifest;
    Artifact::new(&m.node, a.object.clone(), m.programs.clone(), m.holes.clone(), maps)
        .with_counters(m.counters.clone())
}

#[test]
fn admitted_endpoints_are_decided_as_a_full_compile_decides_them() {
    let (mut admitted_total, mut plans) = (0, 0);
    for (seed, w, node) in common::random_plans(120, 1) {
        let all = common::plans(&w);
        let full = &all[&node];
        let built = with_last_endpoints(full);
        let admitted = admit::admissions(&built, full).unwrap_or_else(|| panic!("seed {seed} {node}: not admissible"));
        assert_eq!(admitted.len() + built.endpoints.len(), full.endpoints.len());
        if admitted.is_empty() {
            continue;
        }
        plans += 1;
        admitted_total += admitted.len();
        for layout in [Layout::Inline, Layout::Maps] {
            let a = with_admitted(&built, layout, &admitted);
            let v = equiv::check(a, full, Some(&w))
                .unwrap_or_else(|e| panic!("seed {seed}: node {node}, {layout} layout, admitted {admitted:?}: {e}"));
            assert!(v.report().reference_checks > 0);
        }
    }
    println!("{plans} plans, {admitted_total} admitted endpoints, both layouts");
    assert!(plans >= 20 && admitted_total >= 40, "{plans} plans, {admitted_total} admitted");
}

#[test]
fn an_admission_under_the_wrong_class_or_not_written_is_caught() {
    let (w, full) = common::random_plans(60, 1)
        .into_iter()
        .find_map(|(_, w, node)| {
            let full = common::plans(&w).remove(&node).expect("the node");
            let v4: BTreeSet<_> = full.endpoints.iter().filter(|e| e.ip.is_ipv4()).map(|e| e.class).collect();
            let admissible =
                v4.iter().any(|c| full.endpoints.iter().filter(|e| e.ip.is_ipv4() && e.class == *c).count() > 1);
            (v4.len() >= 2 && admissible).then_some((w, full))
        })
        .expect("a random plan with two IPv4 classes and an IPv4 endpoint to admit");
    let built = with_last_endpoints(&full);
    let admitted = admit::admissions(&built, &full).expect("admissible");
    // the first IPv4 endpoint of its class: the source of that class's battery
    let i = admitted
        .iter()
        .position(|e| e.ip.is_ipv4() && full.endpoints.iter().find(|f| f.ip.is_ipv4() && f.class == e.class) == Some(e))
        .expect("an admitted first endpoint");
    for layout in [Layout::Inline, Layout::Maps] {
        let mut missing = admitted.clone();
        missing.remove(i);
        let a = with_admitted(&built, layout, &missing);
        assert!(equiv::check(a, &full, Some(&w)).is_err(), "{layout}: an admission not written");
    }
    // inline: the checker cuts at every prefix of the plan, so two classes
    // (whose tables differ, or they would be one) differ at a case
    let other = built.endpoints.iter().find(|o| o.ip.is_ipv4() && o.class != admitted[i].class).expect("a class").class;
    let mut wrong = admitted.clone();
    wrong[i].class = other;
    let a = with_admitted(&built, Layout::Inline, &wrong);
    assert!(equiv::check(a, &full, Some(&w)).is_err(), "an admission under class {}", other.0);
}
