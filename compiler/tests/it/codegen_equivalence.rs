//! The equivalence checker over the example, the core tests' inputs and
//! random plans (both layouts), and evidence that it catches wrong programs
//! and wrong map images.

use crate::codegen_common as common;

use egret_compiler::codegen::{self, Layout, Options};

fn check_world(name: &str, w: &egret_compiler::resolve::World) -> usize {
    let mut cases = 0;
    for (node, plan) in common::plans(w) {
        for layout in [Layout::Inline, Layout::Maps] {
            let v =
                codegen::verified_classifier(&plan, &Options { layout: Some(layout), ..Options::default() }, Some(w))
                    .unwrap_or_else(|e| panic!("{name}: node {node}, {layout} layout: {e}"));
            assert_eq!(v.layout(), layout);
            let r = v.report();
            assert!(r.cases > 0 && r.insns > 0, "{name} {node}: {r:?}");
            if !plan.endpoints.is_empty() {
                assert!(r.reference_checks > 0, "{name} {node}: {r:?}");
            }
            cases += r.cases;
        }
    }
    cases
}

#[test]
fn example_and_article_inputs_are_equivalent_in_both_layouts() {
    let mut total = check_world("examples", &common::example_world());
    for (name, w) in common::article_worlds() {
        total += check_world(&name, &w);
    }
    println!("{total} packets checked");
    assert!(total > 500, "{total}");
}

#[test]
fn random_plans_are_equivalent_in_both_layouts() {
    let plans = common::random_plans(200, 1);
    let mut layouts = std::collections::BTreeMap::new();
    let mut cases = 0;
    for (seed, w, node) in &plans {
        let all = common::plans(w);
        let plan = &all[node];
        for layout in [Layout::Inline, Layout::Maps] {
            let v =
                codegen::verified_classifier(plan, &Options { layout: Some(layout), ..Options::default() }, Some(w))
                    .unwrap_or_else(|e| panic!("seed {seed}: node {node}, {layout} layout: {e}"));
            cases += v.report().cases;
            *layouts.entry(layout).or_insert(0) += 1;
        }
    }
    assert_eq!(layouts.get(&Layout::Inline), Some(&200));
    assert_eq!(layouts.get(&Layout::Maps), Some(&200));
    println!("200 random plans per layout, {cases} packets");
}

mod broken {
    use super::*;
    use egret_bpf::artifact::Artifact;
    use egret_bpf::choices::ChoiceTarget;
    use egret_bpf::insn::{Instruction, JmpCond, Operand, Reg, Width, decode};
    use egret_compiler::codegen::equiv::{self, EquivError};
    use egret_compiler::codegen::reasons::Reason;
    use egret_compiler::codegen::tables::{self, ActionRecord};

    fn rebuild(a: &Artifact, object: Vec<u8>, maps: Vec<egret_bpf::artifact::MapImage>) -> Artifact {
        let m = &a.manifest;
        Artifact::new(&m.node, object, m.programs.clone(), m.holes.clone(), maps).with_counters(m.counters.clone())
    }

    fn unhex(v: &str) -> Vec<u8> {
        (0..v.len() / 2).map(|i| u8::from_str_radix(&v[2 * i..2 * i + 2], 16).expect("hex")).collect()
    }

    /// Changes the first egress record (a failover choice) of the `egret_dst_v4` image.
    fn tamper_redirect_record(maps: &mut [egret_bpf::artifact::MapImage], change: impl Fn(&mut ActionRecord)) {
        let dst = maps.iter_mut().find(|m| m.name == tables::DST_V4).expect("destination map");
        let e = dst
            .entries
            .iter_mut()
            .find(|e| ActionRecord::from_bytes(&unhex(&e.value)).is_some_and(|r| r.reason == Reason::Choose))
            .expect("an egress record");
        let mut rec = ActionRecord::from_bytes(&unhex(&e.value)).expect("record");
        change(&mut rec);
        e.value = equiv::hex(&rec.to_bytes());
    }

    /// Changes the first target of the first choice of the `egret_choices` image.
    fn tamper_choice(maps: &mut [egret_bpf::artifact::MapImage], change: impl Fn(&mut ChoiceTarget)) {
        let choices = maps.iter_mut().find(|m| m.name == tables::CHOICES).expect("choices map");
        let e = choices.entries.first_mut().expect("a choice");
        let mut targets = egret_bpf::choices::decode(&unhex(&e.value)).expect("a choice value");
        change(&mut targets[0]);
        e.value = equiv::hex(&egret_bpf::choices::encode(&targets));
    }

    fn worker1() -> (egret_compiler::resolve::World, egret_compiler::plan::Verified<egret_compiler::plan::Plan>) {
        let w = common::example_world();
        let p = common::plans(&w).remove("worker-1").expect("worker-1");
        (w, p)
    }

    #[test]
    fn a_wrong_action_record_is_a_mismatch_with_the_packet() {
        let (w, plan) = worker1();
        let g =
            codegen::generate(&plan, &Options { layout: Some(Layout::Maps), ..Options::default() }).expect("generates");
        let a = g.artifact(&plan).expect("artifact");
        let mut maps = a.manifest.maps.clone();
        tamper_choice(&mut maps, |t| t.verdict ^= 1 << 8);
        let err = equiv::check(rebuild(&a, a.object.clone(), maps), &plan, Some(&w)).expect_err("caught");
        match &err {
            EquivError::Mismatch { at, program, plan } => {
                assert!(at.packet.len() > 100 && at.packet.chars().all(|c| c.is_ascii_hexdigit()), "{at}");
                assert!(program.contains("redirect") && plan.contains("redirect"), "{err}");
            }
            other => panic!("expected a mismatch, got {other}"),
        }
        println!("{err}");
    }

    #[test]
    fn mss_holes_must_be_recorded_constants_and_an_unclamped_program_is_held_to_it() {
        use egret_bpf::artifact::HoleSource;
        use egret_compiler::codegen::mss::{self, MssClamp};
        let (w, plan) = worker1();
        for layout in [Layout::Inline, Layout::Maps] {
            let g =
                codegen::generate(&plan, &Options { layout: Some(layout), ..Options::default() }).expect("generates");
            let a = g.artifact(&plan).expect("artifact");
            let ok = equiv::check(a.clone(), &plan, Some(&w)).expect("the program as generated");
            assert_eq!(ok.report().mss_clamp, Some(MssClamp::DEFAULT));
            assert!(ok.report().mss_clamped >= 10, "{:?}", ok.report());
            // a recorded clamp that does not fit 16 bits
            let mut m = a.manifest.clone();
            for h in &mut m.holes {
                if h.name == mss::HOLE_MSS_V4 {
                    h.source = HoleSource::Constant { value: 70_000 };
                }
            }
            let bad = Artifact::new(&m.node, a.object.clone(), m.programs, m.holes, m.maps).with_counters(m.counters);
            let err = equiv::check(bad, &plan, Some(&w)).expect_err("a clamp that is no 16-bit constant");
            assert!(matches!(err, EquivError::MssHoles { .. }), "{err}");
        }
        // without the clamp, SYNs leave untouched, and the checker holds it to that
        let g = codegen::generate(&plan, &Options { mss_clamp: None, ..Options::default() }).expect("generates");
        let v = equiv::check(g.artifact(&plan).expect("artifact"), &plan, Some(&w)).expect("equivalent");
        assert_eq!((v.report().mss_clamp, v.report().mss_clamped), (None, 0));
        // a program that clamps, with a manifest that says it does not: every clamped SYN is a frame error
        let g = codegen::generate(&plan, &Options::default()).expect("generates");
        let a = g.artifact(&plan).expect("artifact");
        let m = &a.manifest;
        let holes: Vec<_> = m.holes.iter().filter(|h| !h.name.starts_with("mss_")).cloned().collect();
        let unrecorded = Artifact::new(&m.node, a.object.clone(), m.programs.clone(), holes, m.maps.clone())
            .with_counters(m.counters.clone());
        let err = equiv::check(unrecorded, &plan, Some(&w)).expect_err("holes without values");
        assert!(matches!(&err, EquivError::MssHoles { detail } if detail.contains("%mss_v4")), "{err}");
    }

    #[test]
    fn a_wrong_checksum_update_is_caught_by_recomputing_it() {
        // the parity test of the MSS field's offset always says "even": an MSS
        // behind one NOP gets the unswapped update, a wrong TCP checksum
        let (w, plan) = worker1();
        let a = patched(&plan, Layout::Inline, |i| match *i {
            Instruction::Alu {
                width: Width::W64,
                op: egret_bpf::insn::AluOp::And,
                dst: Reg::R0,
                src: Operand::Imm(1),
            } => Some(Instruction::alu64_imm(egret_bpf::insn::AluOp::And, Reg::R0, 0)),
            _ => None,
        });
        let err = equiv::check(a, &plan, Some(&w)).expect_err("caught");
        assert!(matches!(err, EquivError::Frame { .. } | EquivError::Checksum { .. }), "{err}");
        println!("{err}");
    }

    #[test]
    fn a_wrong_rule_index_is_a_counter_error() {
        let (w, plan) = worker1();
        let g =
            codegen::generate(&plan, &Options { layout: Some(Layout::Maps), ..Options::default() }).expect("generates");
        let a = g.artifact(&plan).expect("artifact");
        let mut maps = a.manifest.maps.clone();
        tamper_redirect_record(&mut maps, |rec| rec.rule = 5);
        let err = equiv::check(rebuild(&a, a.object.clone(), maps), &plan, Some(&w)).expect_err("caught");
        assert!(matches!(err, EquivError::Counter { .. }), "{err}");
        println!("{err}");
    }

    /// Rewrites the program's first instruction matching `pick` and re-writes the object.
    fn patched(
        plan: &egret_compiler::plan::Verified<egret_compiler::plan::Plan>,
        layout: Layout,
        pick: impl Fn(&Instruction) -> Option<Instruction>,
    ) -> Artifact {
        let g = codegen::generate(plan, &Options { layout: Some(layout), ..Options::default() }).expect("generates");
        let a = g.artifact(plan).expect("artifact");
        let mut p = g.program.clone();
        let mut pc = 0;
        let mut done = false;
        while pc < p.insns.len() {
            let (i, n) = decode(&p.insns, pc).expect("decodes");
            if let Some(new) = pick(&i) {
                let slots = new.encode().expect("encodes");
                p.insns[pc..pc + slots.len()].copy_from_slice(&slots);
                done = true;
                break;
            }
            pc += n;
        }
        assert!(done, "no instruction to patch");
        let object = egret_bpf::elf::verify_and_write(&[p], &g.maps, codegen::LICENSE).expect("still verifies");
        rebuild(&a, object, a.manifest.maps.clone())
    }

    #[test]
    fn an_off_by_one_interval_bound_is_caught_at_the_boundary() {
        let (w, plan) = worker1();
        let a = patched(&plan, Layout::Inline, |i| match *i {
            Instruction::Jmp { width: Width::W32, cond: JmpCond::Ge, dst: Reg::R9, src: Operand::Imm(k), off } => {
                Some(Instruction::Jmp {
                    width: Width::W32,
                    cond: JmpCond::Ge,
                    dst: Reg::R9,
                    src: Operand::Imm(k + 1),
                    off,
                })
            }
            _ => None,
        });
        let err = equiv::check(a, &plan, Some(&w)).expect_err("caught");
        assert!(matches!(err, EquivError::Mismatch { .. }), "{err}");
        println!("{err}");
    }

    #[test]
    fn redirect_with_bpf_f_ingress_is_caught() {
        let (w, plan) = worker1();
        // `r2 = 0` right before `call redirect` becomes `r2 = 1` (BPF_F_INGRESS):
        // EBPF-FACTS.md, the frame would be injected into our own egret0
        let g = codegen::generate(&plan, &Options { layout: Some(Layout::Inline), ..Options::default() })
            .expect("generates");
        let calls: Vec<usize> = (0..g.program.insns.len())
            .filter(|pc| {
                matches!(decode(&g.program.insns, *pc), Ok((Instruction::Call(egret_bpf::CallTarget::Helper(23)), _)))
            })
            .collect();
        assert_eq!(calls.len(), 1);
        let target = calls[0] - 1;
        let mut p = g.program.clone();
        assert_eq!(decode(&p.insns, target).expect("decodes").0, Instruction::mov64_imm(Reg::R2, 0));
        p.insns[target] = Instruction::mov64_imm(Reg::R2, 1).encode().expect("encodes")[0];
        let a = g.artifact(&plan).expect("artifact");
        let object = egret_bpf::elf::verify_and_write(&[p], &g.maps, codegen::LICENSE).expect("still verifies");
        let err = equiv::check(rebuild(&a, object, a.manifest.maps.clone()), &plan, Some(&w)).expect_err("caught");
        assert!(err.to_string().contains("unexpected outcome"), "{err}");
        println!("{err}");
    }
}

#[test]
fn plan_texts_read_back_for_verify() {
    let mut worlds = vec![common::example_world()];
    worlds.extend(common::article_worlds().into_iter().map(|(_, w)| w));
    worlds.extend(common::random_plans(50, 500).into_iter().map(|(_, w, _)| w));
    let mut n = 0;
    for w in &worlds {
        for (node, p) in common::plans(w) {
            let back = codegen::plan_text::parse(&p.to_text()).unwrap_or_else(|e| panic!("{node}: {e}"));
            assert_eq!(
                (
                    &back.node,
                    back.node_ip,
                    &back.internal,
                    &back.gateways,
                    &back.endpoints,
                    &back.classes,
                    &back.gateway_tables
                ),
                (&p.node, p.node_ip, &p.internal, &p.gateways, &p.endpoints, &p.classes, &p.gateway_tables),
                "{node}"
            );
            // slots whole: the gateway templates' images are made from them
            assert_eq!(back.slots, p.slots, "{node}");
            let verified = egret_compiler::plan::verify::verify(back).expect("the read-back plan verifies");
            // and the artifact checks against it exactly as against the plan
            let g = codegen::generate(&p, &Options::default()).expect("generates");
            codegen::equiv::check(g.artifact(&p).expect("artifact"), &verified, None).expect("equivalent");
            n += 1;
        }
    }
    assert!(n > 50);
    let err = codegen::plan_text::parse(
        "; egret plan for node n (10.0.0.1)\nclasses (1)\n  class 0 (1 entries)\n    10.0.0.0/8 -> teleport\n",
    )
    .expect_err("bad action");
    assert_eq!(err.line, 4);
}

#[test]
fn the_layout_follows_the_measured_threshold() {
    for (_, p) in common::plans(&common::example_world()) {
        assert_eq!(codegen::choose_layout(&p), Layout::Inline);
    }
    let small = common::wide_plan(100);
    assert_eq!(codegen::choose_layout(&small), Layout::Inline);
    // n disjoint /24s are about 2n + 1 intervals (plus the internal 10/8's and the endpoint)
    let big = common::wide_plan(codegen::INLINE_MAX_LEAVES as u32 / 2);
    let rules = codegen::partition::rules(&big);
    assert!(codegen::partition::inline_size(&big, &rules) > codegen::INLINE_MAX_LEAVES);
    assert_eq!(codegen::choose_layout(&big), Layout::Maps);
    let v = codegen::verified_classifier(&big, &Options::default(), None).expect("compiles");
    assert_eq!(v.layout(), Layout::Maps);
    // forced inline still works at this size (long jumps), and agrees
    let v = codegen::verified_classifier(&big, &Options { layout: Some(Layout::Inline), ..Options::default() }, None)
        .expect("compiles");
    assert_eq!(v.layout(), Layout::Inline);
}

#[test]
fn output_is_deterministic_and_the_reference_limit_is_respected() {
    let w = common::example_world();
    for (node, plan) in common::plans(&w) {
        let a = codegen::verified_classifier(&plan, &Options::default(), Some(&w)).expect("compiles");
        let b = codegen::verified_classifier(&plan, &Options::default(), Some(&w)).expect("compiles");
        assert_eq!(a.artifact(), b.artifact(), "{node}: two compilations differ");
        let limited =
            codegen::verified_classifier(&plan, &Options { reference_limit: Some(5), ..Options::default() }, Some(&w))
                .expect("compiles");
        assert_eq!(limited.report().cases, a.report().cases, "{node}");
        assert_eq!(limited.report().reference_checks, a.report().reference_checks.min(5), "{node}");
        // the object and images do not depend on the reference
        assert_eq!(limited.artifact().object, a.artifact().object);
        assert_eq!(limited.artifact().manifest.maps, a.artifact().manifest.maps);
    }
}
