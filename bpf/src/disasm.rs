//! Disassembler: instruction text in LLVM's BPF syntax, exactly as
//! `llvm-objdump-14 -d` prints it, plus a re-assemblable form.
//!
//! Contract:
//! - [`Dialect::Llvm14`] matches plain `llvm-objdump -d` (narrow loads and
//!   stores print 64-bit register names: `r2 = *(u32 *)(r1 + 76)`);
//!   [`Dialect::Llvm14Alu32`] matches `llvm-objdump -d --mattr=+alu32`
//!   (`w2 = *(u32 *)(r1 + 76)`, `*(u32 *)(r10 - 4) = w1`, 32-bit atomics with
//!   `w` registers). Immediates and offsets are decimal, as LLVM prints them.
//! - For instructions LLVM 14 cannot print (it shows `<unknown>`: ALU32/JMP32
//!   without `+alu32`, `%=`, `if .. & .. goto`, `*(..) = imm`, and everything
//!   from cpu v4), the text is what newer LLVM prints (`r1 s/= r2`,
//!   `r1 = (s8)r2`, `r1 = *(s8 *)(r2 + 0)`, `r1 = bswap16 r1`, `gotol +N`).
//!   egret extensions, not LLVM: `call pc+N` (BPF-to-BPF), `call kfunc N`,
//!   `skb[rN + imm]` for legacy indirect loads with an offset, and a fourth
//!   `ld_pseudo` operand for a non-zero upper half.
//! - [`objdump_listing`] reproduces llvm-objdump's whole listing of one
//!   program section (symbol headers, bytes, `<label>` annotations and, with
//!   relocations, the `R_BPF_64_64` lines), so tests compare it line by line.
//! - [`to_asm`] prints text that [`crate::asm::assemble`] turns back into the
//!   identical program: labels, `map[name]` references and `%hole` immediates.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::insn::{
    AluOp, AtomicOp, CallTarget, EndBits, EndOp, Instruction, JmpCond, Operand, Reg, SignExt, Size, Width, decode,
    pseudo,
};
use crate::program::Program;

/// Which `llvm-objdump` configuration to match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Dialect {
    /// `llvm-objdump -d` (no `+alu32`).
    #[default]
    Llvm14,
    /// `llvm-objdump -d --mattr=+alu32`.
    Llvm14Alu32,
}

/// Overrides used when formatting one instruction.
#[derive(Clone, Debug, Default)]
struct Annot {
    /// Replaces the immediate (a `%hole`).
    imm: Option<String>,
    /// Replaces `+N` of a jump (a label name).
    target: Option<String>,
    /// Replaces the value of an `ld_imm64` (a `map[name]`).
    ld_value: Option<String>,
}

fn reg(r: Reg, w: bool) -> String {
    if w { format!("w{}", r.num()) } else { format!("r{}", r.num()) }
}

fn mem(base: Reg, off: i16) -> String {
    if off < 0 { format!("{base} - {}", -i32::from(off)) } else { format!("{base} + {off}") }
}

/// The C type name LLVM prints for a size.
#[must_use]
pub const fn size_name(size: Size) -> &'static str {
    match size {
        Size::B => "u8",
        Size::H => "u16",
        Size::W => "u32",
        Size::DW => "u64",
    }
}

const fn signed_size_name(size: Size) -> &'static str {
    match size {
        Size::B => "s8",
        Size::H => "s16",
        Size::W => "s32",
        Size::DW => "s64",
    }
}

/// The compound-assignment operator LLVM prints for an ALU operation.
#[must_use]
pub const fn alu_op_text(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "+=",
        AluOp::Sub => "-=",
        AluOp::Mul => "*=",
        AluOp::Div => "/=",
        AluOp::SDiv => "s/=",
        AluOp::Or => "|=",
        AluOp::And => "&=",
        AluOp::Lsh => "<<=",
        AluOp::Rsh => ">>=",
        AluOp::Mod => "%=",
        AluOp::SMod => "s%=",
        AluOp::Xor => "^=",
        AluOp::Mov => "=",
        AluOp::Arsh => "s>>=",
    }
}

/// The comparison operator LLVM prints for a jump condition.
#[must_use]
pub const fn cond_text(c: JmpCond) -> &'static str {
    match c {
        JmpCond::Eq => "==",
        JmpCond::Gt => ">",
        JmpCond::Ge => ">=",
        JmpCond::Set => "&",
        JmpCond::Ne => "!=",
        JmpCond::SGt => "s>",
        JmpCond::SGe => "s>=",
        JmpCond::Lt => "<",
        JmpCond::Le => "<=",
        JmpCond::SLt => "s<",
        JmpCond::SLe => "s<=",
    }
}

const fn end_name(op: EndOp, bits: EndBits) -> &'static str {
    match (op, bits) {
        (EndOp::ToLe, EndBits::B16) => "le16",
        (EndOp::ToLe, EndBits::B32) => "le32",
        (EndOp::ToLe, EndBits::B64) => "le64",
        (EndOp::ToBe, EndBits::B16) => "be16",
        (EndOp::ToBe, EndBits::B32) => "be32",
        (EndOp::ToBe, EndBits::B64) => "be64",
        (EndOp::Swap, EndBits::B16) => "bswap16",
        (EndOp::Swap, EndBits::B32) => "bswap32",
        (EndOp::Swap, EndBits::B64) => "bswap64",
    }
}

const fn sext_name(e: SignExt) -> &'static str {
    match e {
        SignExt::S8 => "s8",
        SignExt::S16 => "s16",
        SignExt::S32 => "s32",
    }
}

/// The text of one instruction, with no annotation.
#[must_use]
pub fn format_instruction(insn: &Instruction, dialect: Dialect) -> String {
    format_annotated(insn, dialect, &Annot::default())
}

fn format_annotated(insn: &Instruction, dialect: Dialect, a: &Annot) -> String {
    let alu32 = dialect == Dialect::Llvm14Alu32;
    let imm_text = |v: i64| a.imm.clone().unwrap_or_else(|| v.to_string());
    let target = |off: i64| a.target.clone().unwrap_or_else(|| format!("{off:+}"));
    match *insn {
        Instruction::Alu { width, op, dst, src } => {
            let w = width == Width::W32;
            let s = match src {
                Operand::Reg(r) => reg(r, w),
                Operand::Imm(v) => imm_text(i64::from(v)),
            };
            format!("{} {} {}", reg(dst, w), alu_op_text(op), s)
        }
        Instruction::MovSx { width, ext, dst, src } => {
            let w = width == Width::W32;
            format!("{} = ({}){}", reg(dst, w), sext_name(ext), reg(src, w))
        }
        Instruction::Neg { width, dst } => {
            let d = reg(dst, width == Width::W32);
            format!("{d} = -{d}")
        }
        Instruction::End { op, bits, dst } => {
            format!("{dst} = {} {dst}", end_name(op, bits))
        }
        Instruction::Ja { off } => format!("goto {}", target(i64::from(off))),
        Instruction::JaLong { imm } => format!("gotol {}", target(i64::from(imm))),
        Instruction::Jmp { width, cond, dst, src, off } => {
            let w = width == Width::W32;
            let s = match src {
                Operand::Reg(r) => reg(r, w),
                Operand::Imm(v) => imm_text(i64::from(v)),
            };
            format!("if {} {} {} goto {}", reg(dst, w), cond_text(cond), s, target(i64::from(off)))
        }
        Instruction::Call(CallTarget::Helper(id)) => format!("call {id}"),
        Instruction::Call(CallTarget::Local(rel)) => format!("call pc{rel:+}"),
        Instruction::Call(CallTarget::Kfunc(id)) => format!("call kfunc {id}"),
        Instruction::Exit => "exit".to_owned(),
        Instruction::LdImm64 { dst, pseudo, imm } => {
            if let Some(v) = &a.ld_value {
                format!("{dst} = {v} ll")
            } else if pseudo == pseudo::NONE {
                format!("{dst} = {} ll", imm_text(imm))
            } else {
                let lo = imm as i32;
                let hi = (imm >> 32) as i32;
                if hi == 0 {
                    format!("ld_pseudo\t{dst}, {pseudo}, {lo}")
                } else {
                    format!("ld_pseudo\t{dst}, {pseudo}, {lo}, {hi}")
                }
            }
        }
        Instruction::LdAbs { size, imm } => {
            format!("r0 = *({} *)skb[{imm}]", size_name(size))
        }
        Instruction::LdInd { size, src, imm } => {
            if imm == 0 {
                format!("r0 = *({} *)skb[{src}]", size_name(size))
            } else if imm < 0 {
                format!("r0 = *({} *)skb[{src} - {}]", size_name(size), -i64::from(imm))
            } else {
                format!("r0 = *({} *)skb[{src} + {imm}]", size_name(size))
            }
        }
        Instruction::Load { size, dst, src, off } => {
            let w = alu32 && size != Size::DW;
            format!("{} = *({} *)({})", reg(dst, w), size_name(size), mem(src, off))
        }
        Instruction::LoadSx { size, dst, src, off } => {
            format!("{dst} = *({} *)({})", signed_size_name(size), mem(src, off))
        }
        Instruction::Store { size, dst, off, imm } => {
            format!("*({} *)({}) = {}", size_name(size), mem(dst, off), imm_text(i64::from(imm)))
        }
        Instruction::StoreReg { size, dst, src, off } => {
            let w = alu32 && size != Size::DW;
            format!("*({} *)({}) = {}", size_name(size), mem(dst, off), reg(src, w))
        }
        Instruction::Atomic { size, op, dst, src, off } => {
            let is32 = size != Size::DW;
            let sz = size_name(size);
            let m = mem(dst, off);
            let plain = |sym: &str| {
                let w = is32 && alu32;
                format!("lock *({sz} *)({m}) {sym} {}", reg(src, w))
            };
            let fetch = |name: &str| {
                let s = reg(src, is32);
                format!("{s} = atomic_fetch_{name}(({sz} *)({m}), {s})")
            };
            match op {
                AtomicOp::Add => plain("+="),
                AtomicOp::Or => plain("|="),
                AtomicOp::And => plain("&="),
                AtomicOp::Xor => plain("^="),
                AtomicOp::FetchAdd => fetch("add"),
                AtomicOp::FetchOr => fetch("or"),
                AtomicOp::FetchAnd => fetch("and"),
                AtomicOp::FetchXor => fetch("xor"),
                AtomicOp::Xchg => {
                    let s = reg(src, is32);
                    let f = if is32 { "xchg32_32" } else { "xchg_64" };
                    format!("{s} = {f}({m}, {s})")
                }
                AtomicOp::CmpXchg => {
                    let s = reg(src, is32);
                    let r0 = reg(Reg::R0, is32);
                    let f = if is32 { "cmpxchg32_32" } else { "cmpxchg_64" };
                    format!("{r0} = {f}({m}, {r0}, {s})")
                }
            }
        }
    }
}

/// One line of a disassembly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Slot index.
    pub index: usize,
    /// The instruction's bytes (8 or 16).
    pub bytes: Vec<u8>,
    /// The instruction text (`<unknown>` for undecodable slots), with jump
    /// annotations when requested.
    pub text: String,
    /// The map referenced by this slot's relocation, if any.
    pub map: Option<String>,
}

/// Disassembles a program into lines, one per instruction, with llvm-objdump's
/// jump annotations (`<label>` or `<func+0xOFF>`). Undecodable slots print as
/// `<unknown>` and take one slot.
#[must_use]
pub fn disassemble(program: &Program, dialect: Dialect) -> Vec<Line> {
    let symbols = program.label_symbols();
    let mut out = Vec::new();
    let mut pc = 0;
    while pc < program.insns.len() {
        let (text, n) = match decode(&program.insns, pc) {
            Ok((insn, n)) => {
                let mut t = format_instruction(&insn, dialect);
                if let Some(off) = insn.jump_offset() {
                    let target = pc as i64 + 1 + off;
                    t.push(' ');
                    t.push_str(&objdump_target(&program.name, &symbols, target));
                }
                (t, n)
            }
            Err(_) => ("<unknown>".to_owned(), 1),
        };
        let bytes = program.insns[pc..pc + n].iter().flat_map(|i| i.to_bytes()).collect();
        out.push(Line { index: pc, bytes, text, map: program.map_at(pc).map(str::to_owned) });
        pc += n;
    }
    out
}

/// llvm-objdump's `<sym>` / `<sym+0xOFF>` annotation for a jump target slot.
fn objdump_target(func: &str, symbols: &BTreeMap<usize, &str>, target: i64) -> String {
    let Ok(t) = usize::try_from(target) else {
        return format!("<{func}-{:#x}>", -target * 8);
    };
    let (base, name) = symbols.range(..=t).next_back().map_or((0, func), |(at, name)| (*at, *name));
    if base == t { format!("<{name}>") } else { format!("<{name}+{:#x}>", (t - base) * 8) }
}

/// llvm-objdump's listing of one program section (without the file header):
/// a blank line, `Disassembly of section NAME:`, then the function and label
/// blocks. With `relocs`, each map `ld_imm64` is followed by its
/// `R_BPF_64_64` line, as `llvm-objdump -dr` prints it.
#[must_use]
pub fn objdump_listing(program: &Program, section: &str, dialect: Dialect, relocs: bool) -> String {
    let symbols = program.label_symbols();
    let mut s = String::new();
    let _ = writeln!(s, "\nDisassembly of section {section}:");
    let _ = writeln!(s, "\n{:016x} <{}>:", 0, program.name);
    for line in disassemble(program, dialect) {
        if let Some(label) = symbols.get(&line.index) {
            let _ = writeln!(s, "\n{:016x} <{label}>:", line.index * 8);
        }
        let hex: Vec<String> = line.bytes.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(s, "{:>8}:\t{}\t{}", line.index, hex.join(" "), line.text);
        if relocs && let Some(map) = &line.map {
            let _ = writeln!(s, "\t\t{:016x}:  R_BPF_64_64\t{map}", line.index * 8);
        }
    }
    s
}

/// The re-assemblable text of the instruction at slot `pc` (no indentation):
/// jumps to labels by name, `map[name]` for map loads, `%name` for holes.
/// `None` if the slot does not start a decodable instruction.
#[must_use]
pub fn slot_text(program: &Program, pc: usize, dialect: Dialect) -> Option<String> {
    let (insn, _) = decode(&program.insns, pc).ok()?;
    let mut a = Annot::default();
    if let Some(off) = insn.jump_offset() {
        let target = pc as i64 + 1 + off;
        a.target = usize::try_from(target).ok().and_then(|t| program.labels.get(&t).cloned());
    }
    if let Some(map) = program.map_at(pc) {
        a.ld_value = Some(format!("map[{map}]"));
    }
    if let Some(h) = program.hole_at(pc) {
        a.imm = Some(format!("%{}", h.name));
    }
    Some(format_annotated(&insn, dialect, &a))
}

/// Re-assemblable text of a program: bound labels as `name:` lines, jumps to
/// labels by name (numeric `+N` where the target has no label), map loads as
/// `rN = map[name] ll`, holes as `%name`, undecodable slots as `.insn`.
/// Assembling it yields the same slots, map references, holes and labels.
#[must_use]
pub fn to_asm(program: &Program, dialect: Dialect) -> String {
    let mut s = String::new();
    let mut pc = 0;
    let emit_label = |s: &mut String, at: usize| {
        if let Some(l) = program.labels.get(&at) {
            let _ = writeln!(s, "{l}:");
        }
    };
    while pc < program.insns.len() {
        emit_label(&mut s, pc);
        match (slot_text(program, pc, dialect), decode(&program.insns, pc)) {
            (Some(text), Ok((_, n))) => {
                let _ = writeln!(s, "\t{text}");
                pc += n;
            }
            _ => {
                let i = program.insns[pc];
                let _ =
                    writeln!(s, "\t.insn {:#04x}, {}, {}, {}, {} // undecodable", i.code, i.dst, i.src, i.off, i.imm);
                pc += 1;
            }
        }
    }
    emit_label(&mut s, program.insns.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::Instruction as I;

    #[test]
    fn loads_follow_the_dialect() {
        let i = I::load(Size::W, Reg::R2, Reg::R1, 76);
        assert_eq!(format_instruction(&i, Dialect::Llvm14), "r2 = *(u32 *)(r1 + 76)");
        assert_eq!(format_instruction(&i, Dialect::Llvm14Alu32), "w2 = *(u32 *)(r1 + 76)");
        let j = I::jmp32_imm(JmpCond::Gt, Reg::R1, 5, 3);
        assert_eq!(format_instruction(&j, Dialect::Llvm14), "if w1 > 5 goto +3");
        let s = I::store_reg(Size::H, Reg::R10, Reg::R1, -4);
        assert_eq!(format_instruction(&s, Dialect::Llvm14), "*(u16 *)(r10 - 4) = r1");
    }
}
