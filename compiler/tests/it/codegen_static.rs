//! Deliberately broken classifiers are rejected by egret-bpf's static
//! verifier (and so never written), with a message naming the instruction.

use crate::codegen_common as common;

use egret_bpf::Reg;
use egret_bpf::asm::assemble;
use egret_bpf::elf::{ElfError, verify_and_write};
use egret_bpf::verifier::{ViolationKind, verify};
use egret_compiler::codegen::{self, Generated, Layout, Options};

fn generated(layout: Layout) -> Generated {
    let w = common::example_world();
    let plan = common::plans(&w).remove("worker-2").expect("worker-2");
    codegen::generate(&plan, &Options { layout: Some(layout), ..Options::default() }).expect("generates")
}

/// Edits the first line of the program's assembly text whose instruction
/// starts with `line` (annotations aside) and assembles it again.
fn edited(g: &Generated, line: &str, edit: impl Fn(&str) -> Vec<String>) -> egret_bpf::asm::Assembly {
    let mut done = false;
    let mut out: Vec<String> = Vec::new();
    for l in g.asm().lines() {
        if !done && l.trim_start().starts_with(line) {
            out.extend(edit(l));
            done = true;
        } else {
            out.push(l.to_string());
        }
    }
    assert!(done, "no line `{line}`");
    assemble(&g.program.name, &(out.join("\n") + "\n")).expect("edited text assembles")
}

#[test]
fn the_generated_programs_verify() {
    for layout in [Layout::Inline, Layout::Maps] {
        let g = generated(layout);
        verify(&g.program, &g.maps).expect("verifies");
    }
}

#[test]
fn a_missing_bounds_check_is_rejected_naming_the_load() {
    let g = generated(Layout::Inline);
    // drop the first IPv4 header bounds check
    let a = edited(&g, "if r4 > r3 goto malformed", |_| Vec::new());
    let err = verify(&a.program, &a.maps).expect_err("rejected");
    let v = err
        .violations
        .iter()
        .find(|v| matches!(v.kind, ViolationKind::PacketOutOfRange { .. }))
        .unwrap_or_else(|| panic!("no packet range violation: {err}"));
    assert_eq!(v.disasm, "r8 = *(u32 *)(r2 + 26)", "{err}");
    assert!(
        err.to_string().contains(&format!("insn {} `r8 = *(u32 *)(r2 + 26)`: packet access [26, 30)", v.insn)),
        "{err}"
    );
    // and the object writer refuses it
    assert!(matches!(verify_and_write(&[a.program], &a.maps, codegen::LICENSE), Err(ElfError::Verify { .. })));
    println!("{err}");
}

#[test]
fn an_uninitialized_register_is_rejected_naming_the_instruction() {
    let g = generated(Layout::Inline);
    // read r7 before anything wrote it
    let a = edited(&g, "r6 = r1", |l| vec![l.to_string(), "\tr6 += r7".to_string()]);
    let err = verify(&a.program, &a.maps).expect_err("rejected");
    let v = &err.violations[0];
    assert_eq!((v.insn, v.disasm.as_str()), (1, "r6 += r7"), "{err}");
    assert_eq!(v.kind, ViolationKind::UninitRegister { reg: Reg::R7 });
    assert!(err.to_string().starts_with("insn 1 `r6 += r7`: r7 is read before it is initialized"), "{err}");
    println!("{err}");
}

#[test]
fn a_missing_null_check_is_rejected_naming_the_dereference() {
    let g = generated(Layout::Maps);
    // the check after the destination lookup
    let a = edited(&g, "if r0 == 0 goto pass_no_match", |_| Vec::new());
    let err = verify(&a.program, &a.maps).expect_err("rejected");
    let v = err
        .violations
        .iter()
        .find(|v| matches!(v.kind, ViolationKind::NullableDeref { .. }))
        .unwrap_or_else(|| panic!("no NULL violation: {err}"));
    assert_eq!(v.disasm, "r1 = *(u32 *)(r0 + 0)", "{err}");
    println!("{err}");
}
