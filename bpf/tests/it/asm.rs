//! Assembler ↔ disassembler round trips (disassemble → assemble → identical
//! program) over every opcode and the sample programs, objdump text as input,
//! and typed errors with positions.

use crate::common;

use egret_bpf::asm::{AsmErrorKind, assemble};
use egret_bpf::disasm::{Dialect, disassemble, to_asm};
use egret_bpf::insn::{Insn, Instruction, Reg};
use egret_bpf::{MapKind, Program};

fn samples() -> Vec<Program> {
    let mut v = vec![common::opcode_program("opcodes")];
    for (name, src) in [
        ("ipv4_filter", common::IPV4_FILTER),
        ("classify", common::CLASSIFY),
        ("tunnel", common::TUNNEL),
        ("ttl_dec", common::TTL_DEC),
        ("udp_port", common::UDP_PORT),
    ] {
        v.push(common::assemble(name, src).program);
    }
    v
}

#[test]
fn disassemble_then_assemble_gives_identical_programs() {
    for dialect in [Dialect::Llvm14, Dialect::Llvm14Alu32] {
        for p in samples() {
            let text = to_asm(&p, dialect);
            let back = assemble(&p.name, &text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.name)).program;
            assert_eq!(back.bytes(), p.bytes(), "{}: bytes differ\n{text}", p.name);
            assert_eq!(back, p, "{}: side tables differ\n{text}", p.name);
        }
    }
}

#[test]
fn objdump_style_text_assembles_to_the_same_bytes() {
    // llvm-objdump's instruction text, with `<label>` annotations, is valid input
    for dialect in [Dialect::Llvm14, Dialect::Llvm14Alu32] {
        for p in samples() {
            let text: String = disassemble(&p, dialect).into_iter().map(|l| format!("{}\n", l.text)).collect();
            let back = assemble(&p.name, &text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.name)).program;
            // map loads and holes print as plain values here, so compare bytes
            assert_eq!(back.bytes(), p.bytes(), "{}\n{text}", p.name);
        }
    }
}

#[test]
fn raw_slots_survive_as_insn_directives() {
    let mut p = Program::new("raw", vec![Insn { code: 0xff, dst: 1, src: 2, off: -3, imm: 9 }]);
    p.insns.extend(Instruction::exit().encode().expect("encodes"));
    let text = to_asm(&p, Dialect::Llvm14);
    assert!(text.contains(".insn 0xff, 1, 2, -3, 9"), "{text}");
    assert_eq!(assemble("raw", &text).expect("assembles").program, p);
}

#[test]
fn syntax_features_assemble() {
    let src = "
        .equ ETH_HLEN, 14
        .equ IP_DST, ETH_HLEN + 16   # constants may use constants
        .map lpm, lpm_trie, key_size=8, value_size=4, max_entries=64
        start: r2 = *(u32 *)(r1 + 76) ; label and instruction on one line
        r3 = *(u32 *)(r1 + IP_DST)
        r4 = 0xffffffff ll
        r5 = -1 ll
        r0 = 18446744073709551615 ll
        w6 = 0xc0000202
        call bpf_redirect
        call 152
        gotol start_end
        start_end:
        r0 = 0
        exit
    ";
    let a = assemble("p", src).expect("assembles");
    assert_eq!(a.constants["IP_DST"], 30);
    assert_eq!(a.maps[0].kind, MapKind::LpmTrie);
    assert_eq!(a.maps[0].flags, 1, "LPM tries get BPF_F_NO_PREALLOC by default");
    let insns = a.program.instructions().expect("decodes");
    assert_eq!(insns[1].1, Instruction::load(egret_bpf::Size::W, Reg::R3, Reg::R1, 30));
    assert_eq!(insns[2].1, Instruction::ld_imm64(Reg::R4, 0xffff_ffff));
    assert_eq!(insns[4].1, Instruction::ld_imm64(Reg::R0, -1));
    assert_eq!(insns[6].1, Instruction::call(23));
    assert_eq!(a.program.labels.get(&0).map(String::as_str), Some("start"));
}

fn first_error(src: &str) -> (usize, usize, AsmErrorKind) {
    let e = assemble("p", src).expect_err("must fail");
    let f = &e.errors[0];
    (f.line, f.column, f.kind.clone())
}

#[test]
fn errors_are_typed_with_line_and_column() {
    let (l, c, k) = first_error("r0 = 0\nexit\n  r1 = map[x]\n");
    assert_eq!((l, c), (3, 14));
    assert!(matches!(k, AsmErrorKind::Unexpected { .. } | AsmErrorKind::UnexpectedEnd { .. }), "{k:?}");

    let (l, c, k) = first_error("w1 += r2\nexit");
    assert_eq!((l, c), (1, 7));
    assert!(matches!(k, AsmErrorKind::WidthMismatch { .. }));

    let (l, _, k) = first_error("r1 = 0x80000000\nexit");
    assert_eq!(l, 1);
    assert!(matches!(k, AsmErrorKind::OutOfRange { .. }), "64-bit mov sign-extends: {k:?}");

    let (l, c, k) = first_error("a:\na:\nexit");
    assert_eq!((l, c), (2, 1));
    assert!(matches!(k, AsmErrorKind::DuplicateLabel { first_line: 1, .. }));

    let (_, _, k) = first_error("call no_such_helper\nexit");
    assert!(matches!(k, AsmErrorKind::UnknownHelper { .. }));

    let (_, _, k) = first_error("r1 = NOPE\nexit");
    assert!(matches!(k, AsmErrorKind::UndefinedConstant { .. }));

    let (_, _, k) = first_error(".map m, hash, key_size=0, value_size=4, max_entries=1\nexit");
    assert!(matches!(k, AsmErrorKind::BadMap { .. }));

    let (_, c, k) = first_error("r1 = 1 $ 2");
    assert_eq!(c, 8);
    assert!(matches!(k, AsmErrorKind::BadChar { ch: '$' }));

    let (_, _, k) = first_error("frobnicate r1");
    assert!(matches!(k, AsmErrorKind::UnknownMnemonic { .. }));
}

#[test]
fn long_jumps_are_reported_at_their_line() {
    let mut src = String::from("goto far\n");
    for _ in 0..40_000 {
        src.push_str("r0 = 0\n");
    }
    src.push_str("far:\nexit\n");
    let e = assemble("p", &src).expect_err("too far for goto");
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].line, 1);
    assert!(matches!(e.errors[0].kind, AsmErrorKind::JumpOutOfRange { .. }));
    let ok = src.replacen("goto far", "gotol far", 1);
    assert!(assemble("p", &ok).is_ok());
}

#[test]
fn all_errors_of_a_source_are_reported() {
    let src = "r1 = 1 2\nw1 = r1\ngoto nowhere\nr1 <<= w2\nexit\n";
    let e = assemble("p", src).expect_err("fails");
    let lines: Vec<usize> = e.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![1, 2, 3, 4], "{e}");
}

#[test]
fn the_readme_macro_example_assembles() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("### Macros and repetition").expect("section")..];
    let start = section.find("```\n").expect("code block") + 4;
    let example = &section[start..start + section[start..].find("```").expect("end of block")];
    let a = assemble("readme", example).unwrap_or_else(|e| panic!("{e}\n{example}"));
    let insns = a.program.instructions().expect("decodes");
    assert_eq!(insns.iter().filter(|(_, i)| matches!(i, Instruction::Exit)).count(), 1);
    let labels: Vec<&str> = a.program.labels.values().map(String::as_str).collect();
    assert_eq!(labels, ["done0", "done1"], "one label per expansion");
    assert_eq!(a.constants["i"], 4);
    assert_eq!(a.program.map_relocs.iter().map(|r| r.map.as_str()).collect::<Vec<_>>(), ["egret_gw_stats", "other"]);
}
