//! The static verifier accepts the sample programs and rejects broken ones
//! with a violation naming the instruction and its disassembly. Programs
//! rejected with one violation at one place are files in `tests/verifier/`
//! (run by `filetests.rs`); here are the checks that need Rust.

use crate::common;

use egret_bpf::verifier::{COMPLEXITY_LIMIT, Violation, ViolationKind, verify};

fn rejected(src: &str) -> Vec<Violation> {
    let p = common::assemble("p", src).program;
    match verify(&p, &[]) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(e) => e.violations,
    }
}

#[test]
fn accepts_the_sample_programs() {
    let maps = common::sample_maps();
    for (name, src) in [
        ("ipv4_filter", common::IPV4_FILTER),
        ("classify", common::CLASSIFY),
        ("tunnel", common::TUNNEL),
        ("ttl_dec", common::TTL_DEC),
        ("udp_port", common::UDP_PORT),
    ] {
        let p = common::assemble(name, src).program;
        match verify(&p, &maps) {
            Ok(v) => {
                assert!(v.stats().processed_insns > 0);
                assert!(v.stats().exits > 0);
            }
            Err(e) => panic!("{name} rejected:\n{e}"),
        }
    }
}

#[test]
fn verified_programs_carry_the_maps_they_use() {
    let p = common::assemble("classify", common::CLASSIFY).program;
    let v = verify(&p, &common::sample_maps()).expect("verifies");
    let names: Vec<&str> = v.maps().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["src_class", "dst_lpm", "counters"]);
    assert_eq!(v.program(), &p);
}

#[test]
fn violations_print_the_instruction_and_its_disassembly() {
    // kinds and places of single violations: the files in tests/verifier
    let src = common::IPV4_FILTER.replace("if r4 > r3 goto pass", "r4 = r4");
    let v = rejected(&src);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].disasm, "r5 = *(u16 *)(r2 + 12)");
    let msg = v[0].to_string();
    assert!(msg.starts_with("insn 6 `r5 = *(u16 *)(r2 + 12)`: packet access [12, 14)"), "{msg}");
    let v = rejected("r0 = 0\nr0 += r7\nexit");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].to_string(), "insn 1 `r0 += r7`: r7 is read before it is initialized");
}

#[test]
fn every_violation_is_collected() {
    // three independent problems on three paths
    let src = "
        r2 = *(u32 *)(r1 + 76)
        r3 = *(u32 *)(r1 + 4)
        if r3 == 0 goto a
        if r3 == 1 goto b
        r0 = *(u8 *)(r2 + 0)      // no bounds check
        exit
    a:
        r0 = r9                   // uninitialized
        exit
    b:
        r0 = *(u64 *)(r10 - 16)   // uninitialized stack
        exit
    ";
    let v = rejected(src);
    let got: Vec<usize> = v.iter().map(|x| x.insn).collect();
    assert_eq!(got, vec![4, 6, 8], "{v:?}");
}

#[test]
fn path_explosion_hits_the_complexity_limit() {
    // 24 diamonds, each setting or not setting one bit of r0: 2^24 distinct states
    let mut src = String::from("r2 = *(u32 *)(r1 + 0)\nr0 = 0\n");
    for i in 0..24 {
        src.push_str(&format!(
            "if r2 & {bit} goto s{i}\nr0 |= {bit}\ngoto j{i}\ns{i}: r4 = 0\nj{i}:\n",
            bit = 1u32 << i
        ));
    }
    src.push_str("exit\n");
    let v = rejected(&src);
    assert!(v.iter().any(|x| x.kind == ViolationKind::ComplexityLimit { limit: COMPLEXITY_LIMIT }), "{v:?}");
}

#[test]
fn equivalent_states_are_pruned() {
    // the same 24 diamonds, but both sides leave identical states
    let mut src = String::from("r2 = *(u32 *)(r1 + 0)\nr0 = 0\n");
    for i in 0..24 {
        src.push_str(&format!("if r2 & {bit} goto s{i}\nr3 = 1\ngoto j{i}\ns{i}: r3 = 1\nj{i}:\n", bit = 1u32 << i));
    }
    src.push_str("exit\n");
    let p = common::assemble("p", &src).program;
    let v = verify(&p, &[]).expect("verifies");
    assert!(v.stats().processed_insns < 1000, "{:?}", v.stats());
    assert!(v.stats().pruned_states >= 24, "{:?}", v.stats());
}
