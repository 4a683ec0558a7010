//! Privileged: every example plan and 200 random plans per layout load
//! through the kernel verifier (aya 0.14 `Ebpf::load` + `SchedClassifier::load`),
//! and `BPF_PROG_TEST_RUN` on the equivalence checker's packets (IPv4 and
//! IPv6, tagged and untagged) gives the verdict of the reference evaluator,
//! with the same counters, and leaves the frame the checker expects:
//! redirected TCP SYNs with their MSS clamped (`codegen::mss::clamped`) and
//! a TCP checksum that is right when computed from scratch, every other
//! frame untouched; a broken program is refused by the kernel too.
//!
//! Without root or bpf these tests print one line and return; with
//! `EGRET_REQUIRE_PRIVILEGED=1` they fail instead (TESTING.md).

use crate::codegen_common as common;
use crate::codegen_common::kernel;

use egret_compiler::codegen::reasons::{Counter, Reason};
use egret_compiler::codegen::{self, Layout, Options, equiv, tables};
use egret_compiler::eval::{self, Source};
use egret_compiler::ir::Effect;
use egret_compiler::plan::{Plan, Verified};
use egret_compiler::resolve::World;

/// What the kernel must return for a reference effect (no gateway program
/// is loaded, so local egress ends in a drop after setting `cb[0]`).
fn return_code(a: &Effect) -> i32 {
    match a {
        Effect::Pass => -1,
        Effect::Drop(_) | Effect::LocalEgress { .. } => 2,
        Effect::Redirect { .. } => 7,
    }
}

#[derive(Default)]
struct Tally {
    cases: usize,
    skipped_short: usize,
    v4: usize,
    v6: usize,
    clamped_v4: usize,
    clamped_v6: usize,
    /// Redirects to a gateway with an IPv6 underlay address (IPv6 tunnel key).
    underlay_v6: usize,
    /// Liveness patterns written into the kernel's `egret_gw_live`.
    liveness: usize,
}

fn run_plan(name: &str, w: Option<&World>, plan: &Verified<Plan>, layout: Layout, t: &mut Tally) {
    let g = codegen::generate(plan, &Options { layout: Some(layout), ..Options::default() }).expect("generates");
    let a = g.artifact(plan).expect("static verifier");
    let mut k = kernel::load(&a).unwrap_or_else(|e| panic!("{name} {layout}: {e}"));
    let cases = equiv::artifact_cases(&a, plan, w).expect("cases");
    let mut reasons = vec![Counter::default(); Reason::ALL.len()];
    let mut rules = vec![Counter::default(); g.rules.rules.len()];
    let mut down_now: Vec<std::net::IpAddr> = Vec::new();
    for c in &cases {
        if c.down != down_now {
            k.set_down(&down_now, &c.down).unwrap_or_else(|e| panic!("{name} {layout}: egret_gw_live: {e}"));
            down_now = c.down.clone();
            t.liveness += 1;
        }
        let r = match k.run(&c.frame, 1) {
            Ok(r) => r,
            Err(_) if c.frame.len() < 14 + 20 || c.expected.reason == Reason::PassMalformed => {
                // BPF_PROG_TEST_RUN refuses (EINVAL) frames shorter than
                // Ethernet + IPv4, and IP frames shorter than their header
                t.skipped_short += 1;
                continue;
            }
            Err(e) => panic!("{name} {layout}: frame of {} bytes {}: {e}", c.frame.len(), equiv::hex(&c.frame)),
        };
        let flow = format!("{name} {layout}: packet {} ({:?} -> {:?})", equiv::hex(&c.frame), c.src, c.dst);
        assert_eq!(r.retval, c.expected.return_code(), "{flow}: kernel vs plan");
        let underlay_v6 = matches!(c.expected.effect, Effect::Redirect { gateway, .. } if gateway.is_ipv6());
        t.underlay_v6 += usize::from(underlay_v6);
        let want = match (c.expected.effect, g.mss_clamp) {
            (Effect::Redirect { .. }, Some(clamp)) => codegen::mss::clamped(&c.frame, clamp, underlay_v6),
            _ => c.frame.clone(),
        };
        assert_eq!(equiv::hex(&r.frame), equiv::hex(&want), "{flow} {:?}: the frame the kernel leaves", c.what);
        if want != c.frame {
            assert_eq!(codegen::mss::tcp_checksum_ok(&r.frame), Some(true), "{flow}: TCP checksum from scratch");
            let limit = g.mss_clamp.and_then(|m| m.of(c.src.expect("an IP packet"), underlay_v6));
            assert_eq!(codegen::mss::mss_of(&r.frame), limit, "{flow}: the clamped MSS");
            if c.src.is_some_and(|s| s.is_ipv4()) { t.clamped_v4 += 1 } else { t.clamped_v6 += 1 }
        }
        if let (Some(s), Some(d)) = (c.src, c.dst) {
            // without a world, the plan (c.expected, checked above) is the reference
            if let (true, Some(w)) = (c.reference, w) {
                let want = eval::decide_with(w, Source::Ip(s), d, &c.health()).verdict.effect();
                assert_eq!(r.retval, return_code(&want), "{flow}: kernel vs reference evaluator ({want})");
                if let Effect::LocalEgress { slot } = want {
                    assert_eq!(r.cb0, slot.0, "{flow}: cb[0] must carry the slot");
                }
            }
            if s.is_ipv4() { t.v4 += 1 } else { t.v6 += 1 }
        }
        let len = c.frame.len() as u64;
        let i = c.expected.reason.index() as usize;
        reasons[i].packets += 1;
        reasons[i].bytes += len;
        if let Some(k) = c.expected.rule {
            rules[k as usize].packets += 1;
            rules[k as usize].bytes += len;
        }
        t.cases += 1;
    }
    for r in Reason::COUNTED {
        let got = k.counter(tables::REASONS, r.index()).expect("counter");
        assert_eq!(got, reasons[r.index() as usize], "{name} {layout}: egret_reasons[{}]", r.name());
    }
    for (i, want) in rules.iter().enumerate() {
        let got = k.counter(tables::POLICY_STATS, i as u32).expect("counter");
        assert_eq!(got, *want, "{name} {layout}: egret_policy_stats[{i}]");
    }
}

#[test]
fn example_plans_load_and_agree_with_the_reference_in_the_kernel() {
    if !kernel::privileged("example_plans_load_and_agree_with_the_reference_in_the_kernel") {
        return;
    }
    let mut t = Tally::default();
    let mut plans = 0;
    let mut worlds = vec![("examples".to_string(), common::example_world())];
    worlds.extend(common::article_worlds());
    for (name, w) in &worlds {
        for (node, plan) in common::plans(w) {
            for layout in [Layout::Inline, Layout::Maps] {
                run_plan(&format!("{name} {node}"), Some(w), &plan, layout, &mut t);
                plans += 1;
            }
        }
    }
    println!(
        "{plans} programs loaded, {} packets agree ({} IPv4, {} IPv6, {} runts test_run refuses), MSS clamped in {} IPv4 and {} IPv6 SYNs",
        t.cases, t.v4, t.v6, t.skipped_short, t.clamped_v4, t.clamped_v6
    );
    assert!(t.v4 > 0 && t.cases > 100);
    assert!(t.clamped_v4 >= 10, "the IPv4 battery ran on a redirect: {}", t.clamped_v4);
}

#[test]
fn random_plans_load_and_agree_with_the_reference_in_the_kernel() {
    if !kernel::privileged("random_plans_load_and_agree_with_the_reference_in_the_kernel") {
        return;
    }
    let mut t = Tally::default();
    let plans = common::random_plans(200, 1);
    for (seed, w, node) in &plans {
        let plan = common::plans(w).remove(node).expect("plan");
        for layout in [Layout::Inline, Layout::Maps] {
            run_plan(&format!("seed {seed} {node}"), Some(w), &plan, layout, &mut t);
        }
    }
    println!(
        "400 programs loaded (200 per layout), {} packets agree ({} IPv4, {} IPv6), MSS clamped in {} IPv4 and {} IPv6 SYNs, {} redirects over an IPv6 underlay",
        t.cases, t.v4, t.v6, t.clamped_v4, t.clamped_v6, t.underlay_v6
    );
    assert!(t.underlay_v6 > 100, "gateways with an IPv6 underlay address exercised: {}", t.underlay_v6);
    assert!(t.v4 > 1000 && t.v6 > 1000, "both families exercised: {} / {}", t.v4, t.v6);
    assert!(t.clamped_v4 > 100 && t.clamped_v6 > 100, "clamps in both families: {} / {}", t.clamped_v4, t.clamped_v6);
}

#[test]
fn a_ten_thousand_prefix_inline_classifier_loads_and_agrees_in_the_kernel() {
    if !kernel::privileged("a_ten_thousand_prefix_inline_classifier_loads_and_agrees_in_the_kernel") {
        return;
    }
    let plan = common::wide_plan(10_000);
    // beyond the 16-bit jump range: the tree's jumps to the shared tail are long
    let g =
        codegen::generate(&plan, &Options { layout: Some(Layout::Inline), ..Options::default() }).expect("generates");
    let insns = egret_bpf::insn::decode_all(&g.program.insns).expect("decodes");
    let long = insns.iter().filter(|(_, i)| matches!(i, egret_bpf::insn::Instruction::JaLong { .. })).count();
    assert!(
        g.program.insns.len() > usize::from(i16::MAX.unsigned_abs()) && long > 0,
        "{} slots, {long} gotol",
        g.program.insns.len()
    );
    let mut t = Tally::default();
    run_plan("10,000 prefixes", None, &plan, Layout::Inline, &mut t);
    println!(
        "{} slots, {long} gotol: {} packets agree with the reference in the kernel",
        g.program.insns.len(),
        t.cases
    );
    assert!(t.cases > 20_000, "every interval's edges were run: {}", t.cases);
}

#[test]
fn the_kernel_refuses_a_program_without_its_bounds_check() {
    if !kernel::privileged("the_kernel_refuses_a_program_without_its_bounds_check") {
        return;
    }
    let w = common::example_world();
    let plan = common::plans(&w).remove("worker-2").expect("plan");
    let g =
        codegen::generate(&plan, &Options { layout: Some(Layout::Inline), ..Options::default() }).expect("generates");
    let mut dropped = false;
    let text: String = g
        .asm()
        .lines()
        .filter(|l| {
            let drop = !dropped && l.trim_start().starts_with("if r4 > r3 goto malformed");
            dropped |= drop;
            !drop
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(dropped);
    let mut a = egret_bpf::asm::assemble(&g.program.name, &text).expect("assembles");
    a.program.fill_hole(codegen::HOLE_TUNNEL_IFINDEX, 1).expect("fills");
    let mut w = egret_bpf::elf::ObjectWriter::new(a.maps.clone(), codegen::LICENSE).expect("maps");
    w.add_unverified_program(a.program).expect("adds");
    let bytes = w.write().expect("writes");
    let mut bpf = aya::Ebpf::load(&bytes).expect("object loads");
    let prog: &mut aya::programs::SchedClassifier =
        bpf.program_mut(codegen::PROGRAM).expect("program").try_into().expect("classifier");
    let err = prog.load().expect_err("the kernel verifier refuses it");
    let text = format!("{err:?}");
    assert!(text.contains("invalid access to packet"), "{text}");
    println!("kernel: refused ({} bytes of verifier log)", text.len());
}
