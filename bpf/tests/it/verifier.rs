//! The static verifier accepts the sample programs and rejects broken ones
//! with a violation naming the instruction and its disassembly.

use crate::common;

use egret_bpf::verifier::{COMPLEXITY_LIMIT, Violation, ViolationKind, verify};
use egret_bpf::{MapDef, Reg};

fn check(src: &str, maps: &[MapDef]) -> Result<(), Vec<Violation>> {
    let p = common::assemble("p", src).program;
    verify(&p, maps).map(|_| ()).map_err(|e| e.violations)
}

fn rejected(src: &str, maps: &[MapDef]) -> Vec<Violation> {
    match check(src, maps) {
        Ok(()) => panic!("accepted:\n{src}"),
        Err(v) => v,
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
fn missing_bounds_check_is_rejected_at_the_load() {
    let src = common::IPV4_FILTER.replace("if r4 > r3 goto pass", "r4 = r4");
    let v = rejected(&src, &[]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].insn, 6);
    assert_eq!(v[0].disasm, "r5 = *(u16 *)(r2 + 12)");
    assert!(matches!(v[0].kind, ViolationKind::PacketOutOfRange { off: 12, end: 14, range: 0 }), "{:?}", v[0].kind);
    let msg = v[0].to_string();
    assert!(msg.starts_with("insn 6 `r5 = *(u16 *)(r2 + 12)`: packet access [12, 14)"), "{msg}");
}

#[test]
fn too_short_bounds_check_is_rejected() {
    // checks 14 bytes, then reads the IPv4 destination at 30..34
    let src = common::IPV4_FILTER.replace("r4 += 34", "r4 += 14");
    let v = rejected(&src, &[]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].insn, 8);
    assert!(matches!(v[0].kind, ViolationKind::PacketOutOfRange { off: 30, end: 34, range: 14 }));
}

#[test]
fn bounds_check_on_the_wrong_branch_is_rejected() {
    // `>=` taken means pkt+34 >= end: the fall-through path has the range, the
    // jump target does not; reading at the target must fail
    let src = "
        r2 = *(u32 *)(r1 + 76)
        r3 = *(u32 *)(r1 + 80)
        r4 = r2
        r4 += 34
        if r4 < r3 goto ok
        r0 = *(u8 *)(r2 + 0)
        exit
    ok:
        r0 = *(u8 *)(r2 + 33)
        exit
    ";
    let v = rejected(src, &[]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].insn, 5);
    // `pkt + 34 < end` gives 35 bytes on the taken branch (the kernel's right-open range)
    let ok = src.replace("*(u8 *)(r2 + 33)", "*(u8 *)(r2 + 34)");
    let v = rejected(&ok, &[]);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].insn, 5);
}

#[test]
fn uninitialized_register_is_rejected() {
    let src = "
        r0 = 0
        r0 += r7
        exit
    ";
    let v = rejected(src, &[]);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].insn, 1);
    assert_eq!(v[0].disasm, "r0 += r7");
    assert_eq!(v[0].kind, ViolationKind::UninitRegister { reg: Reg::R7 });
    assert_eq!(v[0].to_string(), "insn 1 `r0 += r7`: r7 is read before it is initialized");
}

#[test]
fn caller_saved_registers_are_unreadable_after_calls() {
    let src = "
        r6 = r1
        call ktime_get_ns
        r0 = r1
        exit
    ";
    let v = rejected(src, &[]);
    assert_eq!(v[0].insn, 2);
    assert_eq!(v[0].kind, ViolationKind::UninitRegister { reg: Reg::R1 });
}

#[test]
fn r0_must_be_set_before_exit() {
    let v = rejected("r1 = 0\nexit", &[]);
    assert_eq!(v[0].insn, 1);
    assert!(matches!(v[0].kind, ViolationKind::BadReturn { .. }));
    let v = rejected("r0 = r1\nexit", &[]);
    assert!(matches!(&v[0].kind, ViolationKind::BadReturn { found } if found == "ctx"));
}

#[test]
fn stack_rules() {
    let v = rejected("r0 = *(u64 *)(r10 - 8)\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::StackUninitRead { off: -8, size: 8 }));
    let v = rejected("*(u64 *)(r10 - 520) = 0\nr0 = 0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::StackOutOfBounds { off: -520, .. }));
    let v = rejected("*(u32 *)(r10 - 6) = 0\nr0 = 0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::StackMisaligned { off: -6, size: 4 }));
    let v = rejected("*(u64 *)(r10 + 0) = 0\nr0 = 0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::StackOutOfBounds { off: 0, .. }));
    // spill and fill of the context pointer works; a partial read does not
    assert!(check("*(u64 *)(r10 - 8) = r1\nr1 = 0\nr1 = *(u64 *)(r10 - 8)\nr0 = *(u32 *)(r1 + 0)\nexit", &[]).is_ok());
    let v = rejected("*(u64 *)(r10 - 8) = r1\nr0 = *(u32 *)(r10 - 8)\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::BadSpill { .. }));
    let v = rejected("*(u32 *)(r10 - 8) = r1\nr0 = 0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::BadSpill { .. }));
}

#[test]
fn lookup_results_need_a_null_check() {
    let maps = common::sample_maps();
    let src = "
        r1 = 0
        *(u32 *)(r10 - 4) = r1
        r2 = r10
        r2 += -4
        r1 = map[src_class] ll
        call map_lookup_elem
        r0 = *(u32 *)(r0 + 0)
        exit
    ";
    let v = rejected(src, &maps);
    assert_eq!(v[0].insn, 7);
    assert_eq!(v[0].kind, ViolationKind::NullableDeref { reg: Reg::R0 });
    // with the check, and through a copy of the pointer
    let ok = src.replace("r0 = *(u32 *)(r0 + 0)", "r6 = r0\nif r0 == 0 goto out\nr0 = *(u32 *)(r6 + 0)\nout:");
    assert!(check(&ok, &maps).is_ok(), "{:?}", check(&ok, &maps));
    // and within value_size
    let oob = ok.replace("*(u32 *)(r6 + 0)", "*(u32 *)(r6 + 2)");
    let v = rejected(&oob, &maps);
    assert!(matches!(v[0].kind, ViolationKind::MapValueOutOfBounds { off: 2, end: 6, value_size: 4, .. }));
}

#[test]
fn control_flow_rules() {
    let v = rejected("l: r0 = 0\ngoto l", &[]);
    assert!(v.iter().any(|x| matches!(x.kind, ViolationKind::BackEdge { target: 0 }) && x.insn == 1), "{v:?}");
    let v = rejected("r0 = 0\nexit\nr0 = 1\nexit", &[]);
    assert_eq!(v[0].insn, 2);
    assert_eq!(v[0].kind, ViolationKind::Unreachable);
    let v = rejected("r0 = 0", &[]);
    assert_eq!(v[0].kind, ViolationKind::FallsOffEnd);
    let v = rejected("r0 = 0\ngoto +5\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::JumpOutOfRange { target: 7 }));
    let v = rejected("r0 = 0\ngoto +1\nr1 = 5 ll\nexit", &[]);
    assert!(v.iter().any(|x| matches!(x.kind, ViolationKind::JumpIntoLdImm64 { target: 3 })), "{v:?}");
    let v = rejected(".insn 0xff, 0, 0, 0, 0\nr0 = 0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::Decode { .. }));
}

#[test]
fn instruction_rules() {
    let v = rejected("r0 = 0\nr10 = 5\nexit", &[]);
    assert_eq!(v[0].kind, ViolationKind::FramePointerWrite);
    let v = rejected("r0 = 1\nr0 /= 0\nexit", &[]);
    assert_eq!(v[0].kind, ViolationKind::DivByZero);
    let v = rejected("r0 = 1\nw0 <<= 32\nexit", &[]);
    assert_eq!(v[0].kind, ViolationKind::InvalidShift { amount: 32 });
    let v = rejected("r0 = 0\ncall 9999\nexit", &[]);
    assert_eq!(v[0].kind, ViolationKind::UnknownHelper { id: 9999 });
    let v = rejected("r1 = map[nope] ll\nr0 = 0\nexit", &common::sample_maps());
    assert_eq!(v[0].kind, ViolationKind::UnresolvedMap { map: "nope".into() });
    let v = rejected("ld_pseudo r1, 1, 3\nr0 = 0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::UnsupportedPseudo { pseudo: 1 }));
    let v = rejected("r0 = 0\ncall pc+0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::UnsupportedCall { .. }));
}

#[test]
fn context_rules() {
    let v = rejected("r0 = 1\n*(u32 *)(r1 + 0) = r0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::CtxAccess { off: 0, reason: "field is read-only", .. }));
    let v = rejected("r0 = *(u16 *)(r1 + 76)\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::CtxAccess { off: 76, .. }));
    let v = rejected("*(u32 *)(r1 + 8) = 1\nr0 = 0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::CtxAccess { off: 8, .. }), "no BPF_ST into ctx");
    assert!(check("r2 = 7\n*(u32 *)(r1 + 8) = r2\nr0 = *(u16 *)(r1 + 16)\nexit", &[]).is_ok());
    let v = rejected("r1 += 4\nr0 = *(u32 *)(r1 + 0)\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::PointerArithmetic { .. }));
}

#[test]
fn helper_argument_rules() {
    // skb_store_bytes needs ctx in r1
    let v = rejected("r1 = 0\nr2 = 0\nr3 = r10\nr4 = 4\nr5 = 0\ncall skb_store_bytes\nr0 = 0\nexit", &[]);
    assert!(matches!(&v[0].kind, ViolationKind::HelperArg { reg: Reg::R1, expected, .. } if expected == "ctx"));
    // memory argument from uninitialized stack
    let src = "r2 = 0\nr3 = r10\nr3 += -4\nr4 = 4\nr5 = 0\ncall skb_store_bytes\nr0 = 0\nexit";
    let v = rejected(src, &[]);
    assert!(
        matches!(&v[0].kind, ViolationKind::HelperArg { reg: Reg::R3, found, .. } if found.contains("uninitialized")),
        "{v:?}"
    );
    // map key must be initialized key_size bytes
    let v = rejected(
        "r2 = r10\nr2 += -4\nr1 = map[src_class] ll\ncall map_lookup_elem\nr0 = 0\nexit",
        &common::sample_maps(),
    );
    assert!(matches!(v[0].kind, ViolationKind::HelperArg { reg: Reg::R2, .. }));
    // a size argument must be a positive constant
    let v = rejected("r2 = r10\nr2 += -8\nr3 = 0\nr4 = 0\ncall skb_get_tunnel_key\nr0 = 0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::HelperArg { reg: Reg::R3, .. }), "{v:?}");
}

#[test]
fn helpers_that_move_packet_data_invalidate_packet_pointers() {
    let src = "
        r6 = r1
        r7 = *(u32 *)(r6 + 76)
        r3 = *(u32 *)(r6 + 80)
        r4 = r7
        r4 += 14
        if r4 > r3 goto out
        r1 = r6
        r2 = 24
        r3 = 0
        r4 = 0
        r5 = 2
        call l3_csum_replace
        r0 = *(u8 *)(r7 + 0)
        exit
    out:
        r0 = 0
        exit
    ";
    let v = rejected(src, &[]);
    assert_eq!(v[0].insn, 12);
    assert_eq!(v[0].kind, ViolationKind::PacketPointerInvalidated { reg: Reg::R7, call: 11 });
}

#[test]
fn pointer_rules() {
    let v = rejected("r2 = *(u32 *)(r1 + 76)\nw2 += 1\nr0 = 0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::PointerArithmetic { .. }));
    let v = rejected("r2 = *(u32 *)(r1 + 76)\nr3 = *(u32 *)(r1 + 80)\nif w2 > w3 goto +0\nr0 = 0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::PointerComparison { .. }));
    // unbounded variable offset into the packet
    let v = rejected("r2 = *(u32 *)(r1 + 76)\nr3 = *(u32 *)(r1 + 0)\nr2 += r3\nr0 = 0\nexit", &[]);
    assert!(matches!(v[0].kind, ViolationKind::PointerArithmetic { .. }), "{v:?}");
    // a pointer stored into a map value leaks
    let maps = common::sample_maps();
    let v = rejected(
        "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nr1 = map[counters] ll\ncall map_lookup_elem\nif r0 == 0 goto out\n*(u64 *)(r0 + 0) = r10\nout:\nr0 = 0\nexit",
        &maps,
    );
    assert!(matches!(v[0].kind, ViolationKind::PointerLeak { .. }), "{v:?}");
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
    let v = rejected(src, &[]);
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
    let v = rejected(&src, &[]);
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
