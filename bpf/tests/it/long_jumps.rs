//! Long jumps: `gotol` (`BPF_JMP32 | BPF_JA`, 32-bit offset in `imm`) through
//! the builder's branch relaxation, the text syntax, the disassembler, the
//! interpreter, the static verifier, the ELF writer/reader and (privileged)
//! the kernel verifier and `BPF_PROG_TEST_RUN`.

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use egret_bpf::asm::assemble;
use egret_bpf::builder::BuildError;
use egret_bpf::disasm::{Dialect, to_asm};
use egret_bpf::elf::{read_object, verify_and_write};
use egret_bpf::insn::{CallTarget, Instruction as I, JmpCond, Reg, Size, decode, decode_all};
use egret_bpf::interp::{Fault, MapStore, RunInput, run};
use egret_bpf::verifier::{ViolationKind, verify};
use egret_bpf::{Program, ProgramBuilder};
use egret_testkit::privileged::privileged;

/// Filler instructions between the jumps and their targets: beyond `i16::MAX`.
const FILLER: usize = 40_000;

/// Branches on `skb->len` (r2) across `FILLER` slots:
/// - len 70: a far `goto` → 70;
/// - len 64: a raw relative jump (emitted without a label) over the far
///   conditional jumps → the filler's count;
/// - len > 100: a far `if >` → 2; odd: a far `if &` (no negation) → 1;
/// - else the filler's count.
///
/// The filler holds a hole and a label, which must move with it.
fn far_program(long_jumps: bool) -> Result<Program, egret_bpf::BuildErrors> {
    let mut b = ProgramBuilder::new("far").long_jumps(long_jumps);
    let (gt, odd, seventy, done, mid) =
        (b.new_label("gt"), b.new_label("odd"), b.new_label("seventy"), b.new_label("done"), b.new_label("mid"));
    b.emit(I::load(Size::W, Reg::R2, Reg::R1, 0));
    b.emit(I::mov64_imm(Reg::R0, 0));
    b.emit(I::jmp_imm(JmpCond::Ne, Reg::R2, 70, 1));
    b.ja(seventy);
    b.emit(I::jmp_imm(JmpCond::Eq, Reg::R2, 64, 2));
    b.jmp_imm(JmpCond::Gt, Reg::R2, 100, gt);
    b.jump(egret_bpf::Width::W64, JmpCond::Set, Reg::R2, egret_bpf::Operand::Imm(1), odd);
    b.mov32_hole(Reg::R4, "h");
    for i in 0..FILLER {
        if i == FILLER / 2 {
            b.bind(mid);
        }
        b.emit(I::alu64_imm(egret_bpf::AluOp::Add, Reg::R0, 1));
    }
    b.ja(done);
    b.bind(odd);
    b.emit(I::mov64_imm(Reg::R0, 1));
    b.emit(I::exit());
    b.bind(gt);
    b.emit(I::mov64_imm(Reg::R0, 2));
    b.emit(I::exit());
    b.bind(seventy);
    b.emit(I::mov64_imm(Reg::R0, 70));
    b.bind(done);
    b.emit(I::exit());
    b.finish()
}

fn filled(mut p: Program) -> Program {
    p.fill_holes(&[("h".to_owned(), 9)].into_iter().collect()).expect("fills");
    p
}

/// `(frame length, expected r0)`.
fn cases() -> Vec<(usize, u64)> {
    let n = FILLER as u64;
    vec![(70, 70), (64, n), (101, 2), (102, 2), (71, 1), (73, 1), (72, n), (100, n)]
}

#[test]
fn without_long_jumps_far_jumps_are_refused() {
    let e = far_program(false).expect_err("the jumps are beyond 16 bits");
    let far: Vec<&str> = e
        .errors
        .iter()
        .map(|e| match e {
            BuildError::JumpOutOfRange { label, .. } => label.as_str(),
            other => panic!("unexpected error {other}"),
        })
        .collect();
    assert_eq!(far, ["seventy", "gt", "odd"], "{e}");
    assert!(e.to_string().contains("use gotol"), "{e}");
}

#[test]
fn far_jumps_become_gotol_and_trampolines() {
    let p = far_program(true).expect("long jumps build");
    let insns = decode_all(&p.insns).expect("decodes");
    let at = |pc: usize| insns.iter().find(|(i, _)| *i == pc).map(|(_, i)| *i).expect("an instruction there");
    let target = |pc: usize| pc as i64 + 1 + at(pc).jump_offset().expect("a jump");
    let label = |name: &str| *p.labels.iter().find(|(_, l)| *l == name).expect("label").0 as i64;
    // goto seventy (slot 3) is a gotol in place
    assert!(matches!(at(3), I::JaLong { .. }), "{:?}", at(3));
    assert_eq!(target(3), label("seventy"));
    // the raw relative jump at 4 still lands on the hole's instruction, behind both trampolines
    assert_eq!(at(4), I::jmp_imm(JmpCond::Eq, Reg::R2, 64, 5));
    // if r2 > 100 goto gt: `if r2 <= 100 goto +1; gotol gt`
    assert_eq!(at(5), I::jmp_imm(JmpCond::Le, Reg::R2, 100, 1));
    assert!(matches!(at(6), I::JaLong { .. }));
    assert_eq!(target(6), label("gt"));
    // if r2 & 1 goto odd: `if r2 & 1 goto +1; goto +1; gotol odd`
    assert_eq!(
        at(7),
        I::Jmp {
            width: egret_bpf::Width::W64,
            cond: JmpCond::Set,
            dst: Reg::R2,
            src: egret_bpf::Operand::Imm(1),
            off: 1
        }
    );
    assert_eq!(at(8), I::ja(1));
    assert!(matches!(at(9), I::JaLong { .. }));
    assert_eq!(target(9), label("odd"));
    // the hole, and the labels, moved by the three inserted slots
    assert_eq!(p.holes.len(), 1);
    assert_eq!(p.holes[0].insn, 10);
    assert_eq!(label("mid"), 10 + 1 + FILLER as i64 / 2);
    // the short jump over the end of the filler stayed a goto
    let done_jump = 11 + FILLER;
    assert!(matches!(at(done_jump), I::Ja { .. }), "{:?}", at(done_jump));
    assert_eq!(target(done_jump), label("done"));
}

#[test]
fn a_raw_local_call_keeps_its_callee_when_slots_are_inserted() {
    let mut b = ProgramBuilder::new("call").long_jumps(true);
    let far = b.new_label("far");
    b.emit(I::mov64_imm(Reg::R0, 0));
    // calls the `r0 = 7` below, across the trampoline of the next jump
    b.emit(I::Call(CallTarget::Local(FILLER as i32 + 2)));
    b.jmp_imm(JmpCond::Gt, Reg::R1, 100, far);
    for _ in 0..FILLER {
        b.emit(I::alu64_imm(egret_bpf::AluOp::Add, Reg::R0, 1));
    }
    b.emit(I::exit());
    b.emit(I::mov64_imm(Reg::R0, 7));
    b.emit(I::exit());
    b.bind(far);
    b.emit(I::exit());
    let p = b.finish().expect("builds");
    let (call, _) = decode(&p.insns, 1).expect("decodes");
    assert_eq!(call, I::Call(CallTarget::Local(FILLER as i32 + 3)), "one slot inserted between call and callee");
    assert_eq!(decode(&p.insns, 2 + FILLER + 3).expect("decodes").0, I::mov64_imm(Reg::R0, 7));
}

#[test]
fn far_program_verifies_and_runs_in_the_interpreter() {
    let p = filled(far_program(true).expect("builds"));
    let v = verify(&p, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(v.stats().processed_insns > FILLER as u64, "the filler paths were explored");
    let mut maps = MapStore::new(&[]);
    for (len, want) in cases() {
        let out = run(&p, &mut maps, &RunInput::for_frame(&vec![0u8; len])).unwrap_or_else(|e| panic!("{len}: {e}"));
        assert_eq!(out.r0, want, "frame of {len} bytes");
    }
}

#[test]
fn gotol_text_and_elf_round_trip() {
    let p = far_program(true).expect("builds");
    let text = to_asm(&p, Dialect::Llvm14);
    assert!(text.contains("\tgotol seventy\n") && text.contains("\tgotol gt\n") && text.contains("\tgotol odd\n"));
    let a = assemble("far", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.program, p, "to_asm → assemble is the identity");
    // a numeric gotol assembles to the same slot as the label form
    let numeric = assemble("n", "r0 = 0\ngotol +1\nr0 = 1\nexit\n").expect("assembles");
    assert_eq!(decode(&numeric.program.insns, 1).expect("decodes").0, I::JaLong { imm: 1 });
    assert_eq!(numeric.program.insns[1].to_bytes(), [0x06, 0, 0, 0, 1, 0, 0, 0], "JMP32|JA, imm = 1");
    let bytes = verify_and_write(&[filled(p.clone())], &[], "GPL").expect("verifies and writes");
    let read = read_object(&bytes).expect("reads back");
    assert_eq!(read.program("far").map(|r| &r.insns), Some(&filled(p).insns));
}

#[test]
fn gotol_out_of_the_program_is_refused_clearly() {
    for (imm, target) in [(5, 7), (-3, -1), (i32::MAX, i64::from(i32::MAX) + 2)] {
        let p = Program::new(
            "oob",
            [I::mov64_imm(Reg::R0, 0), I::JaLong { imm }, I::exit()]
                .iter()
                .flat_map(|i| i.encode().expect("encodes"))
                .collect(),
        );
        let e = verify(&p, &[]).expect_err("out of bounds");
        assert!(e.violations.iter().any(|v| v.insn == 1 && v.kind == ViolationKind::JumpOutOfRange { target }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("jump target {target} is outside the program")), "{msg}");
        let fault = run(&p, &mut MapStore::new(&[]), &RunInput::for_frame(&[0; 60])).expect_err("faults");
        assert_eq!(fault, Fault::JumpOutOfProgram { insn: 1, target, len: 3 });
        assert_eq!(fault.to_string(), format!("insn 1: jump to slot {target}, outside the program's 3 slots"));
    }
    // a gotol with a non-zero `off` (reserved) does not decode
    let mut slots = I::JaLong { imm: 0 }.encode().expect("encodes");
    slots[0].off = 1;
    assert!(decode(&slots, 0).is_err_and(|e| e.to_string().contains("reserved field `off`")));
}

#[test]
fn kernel_runs_gotol_as_the_interpreter_does() {
    if !privileged("kernel_runs_gotol_as_the_interpreter_does") {
        return;
    }
    let p = filled(far_program(true).expect("builds"));
    let bytes = verify_and_write(std::slice::from_ref(&p), &[], "GPL").expect("verifies and writes");
    let mut bpf = aya::Ebpf::load(&bytes).unwrap_or_else(|e| panic!("aya loads: {e}"));
    let prog: &mut SchedClassifier = bpf.program_mut("far").expect("program").try_into().expect("a classifier");
    prog.load().unwrap_or_else(|e| panic!("the kernel verifier accepts gotol: {e:?}"));
    let mut maps = MapStore::new(&[]);
    for (len, want) in cases() {
        let frame = vec![0u8; len];
        let res = prog
            .test_run(TestRunOptions { data_in: Some(&frame), ..TestRunOptions::default() })
            .unwrap_or_else(|e| panic!("test_run: {e:?}"));
        let ours = run(&p, &mut maps, &RunInput::for_frame(&frame)).expect("interpreter");
        assert_eq!(u64::from(res.return_value), want, "kernel, frame of {len} bytes");
        assert_eq!(ours.r0, want, "interpreter, frame of {len} bytes");
    }
}
