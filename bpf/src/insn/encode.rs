//! Encoding: instructions to slots.

use super::ops::{ALU_END, ALU_NEG};
use super::{CallTarget, EndOp, Insn, Instruction, Operand, SignExt, Size, Width, class, mode, pseudo, size, source};

/// An instruction that cannot be encoded because its fields are inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode {what}: {reason}")]
pub struct EncodeError {
    /// The instruction, as `Debug` text.
    pub what: String,
    /// Why it cannot be encoded.
    pub reason: &'static str,
}

impl Instruction {
    // ----- encoding --------------------------------------------------------------

    /// Encodes into one or two slots appended to `out`.
    ///
    /// # Errors
    /// Inconsistent combinations: 32-bit `movsx` from 32 bits, atomics other than
    /// W/DW, legacy loads or sign-extending loads of DW, an unknown pseudo source.
    pub fn encode_into(&self, out: &mut Vec<Insn>) -> Result<(), EncodeError> {
        let err = |reason| EncodeError { what: format!("{self:?}"), reason };
        let slot = match *self {
            Instruction::Alu { width, op, dst, src } => {
                let (bits, off) = op.code_off();
                let cls = alu_class(width);
                match src {
                    Operand::Imm(imm) => Insn { code: cls | bits | source::K, dst: dst.num(), src: 0, off, imm },
                    Operand::Reg(s) => Insn { code: cls | bits | source::X, dst: dst.num(), src: s.num(), off, imm: 0 },
                }
            }
            Instruction::MovSx { width, ext, dst, src } => {
                if width == Width::W32 && ext == SignExt::S32 {
                    return Err(err("32-bit movsx cannot extend from 32 bits"));
                }
                Insn {
                    code: alu_class(width) | 0xb0 | source::X,
                    dst: dst.num(),
                    src: src.num(),
                    off: ext.bits() as i16,
                    imm: 0,
                }
            }
            Instruction::Neg { width, dst } => {
                Insn { code: alu_class(width) | ALU_NEG, dst: dst.num(), ..Insn::default() }
            }
            Instruction::End { op, bits, dst } => {
                let code = match op {
                    EndOp::ToLe => class::ALU | ALU_END | source::K,
                    EndOp::ToBe => class::ALU | ALU_END | source::X,
                    EndOp::Swap => class::ALU64 | ALU_END | source::K,
                };
                Insn { code, dst: dst.num(), imm: bits.bits() as i32, ..Insn::default() }
            }
            Instruction::Ja { off } => Insn { code: class::JMP, off, ..Insn::default() },
            Instruction::JaLong { imm } => Insn { code: class::JMP32, imm, ..Insn::default() },
            Instruction::Jmp { width, cond, dst, src, off } => {
                let cls = match width {
                    Width::W32 => class::JMP32,
                    Width::W64 => class::JMP,
                };
                match src {
                    Operand::Imm(imm) => Insn { code: cls | cond.code() | source::K, dst: dst.num(), src: 0, off, imm },
                    Operand::Reg(s) => {
                        Insn { code: cls | cond.code() | source::X, dst: dst.num(), src: s.num(), off, imm: 0 }
                    }
                }
            }
            Instruction::Call(target) => {
                let (src, imm) = match target {
                    CallTarget::Helper(id) => (0, id),
                    CallTarget::Local(rel) => (1, rel),
                    CallTarget::Kfunc(id) => (2, id),
                };
                Insn { code: class::JMP | 0x80, src, imm, ..Insn::default() }
            }
            Instruction::Exit => Insn { code: class::JMP | 0x90, ..Insn::default() },
            Instruction::LdImm64 { dst, pseudo, imm } => {
                if pseudo > pseudo::MAX {
                    return Err(err("unknown ld_imm64 pseudo source"));
                }
                out.push(Insn {
                    code: class::LD | size::DW | mode::IMM,
                    dst: dst.num(),
                    src: pseudo,
                    off: 0,
                    imm: imm as i32,
                });
                Insn { imm: (imm >> 32) as i32, ..Insn::default() }
            }
            Instruction::LdAbs { size, imm } => {
                if size == Size::DW {
                    return Err(err("legacy packet loads have no DW size"));
                }
                Insn { code: class::LD | mode::ABS | size.code(), imm, ..Insn::default() }
            }
            Instruction::LdInd { size, src, imm } => {
                if size == Size::DW {
                    return Err(err("legacy packet loads have no DW size"));
                }
                Insn { code: class::LD | mode::IND | size.code(), src: src.num(), imm, ..Insn::default() }
            }
            Instruction::Load { size, dst, src, off } => {
                Insn { code: class::LDX | mode::MEM | size.code(), dst: dst.num(), src: src.num(), off, imm: 0 }
            }
            Instruction::LoadSx { size, dst, src, off } => {
                if size == Size::DW {
                    return Err(err("sign-extending loads have no DW size"));
                }
                Insn { code: class::LDX | mode::MEMSX | size.code(), dst: dst.num(), src: src.num(), off, imm: 0 }
            }
            Instruction::Store { size, dst, off, imm } => {
                Insn { code: class::ST | mode::MEM | size.code(), dst: dst.num(), src: 0, off, imm }
            }
            Instruction::StoreReg { size, dst, src, off } => {
                Insn { code: class::STX | mode::MEM | size.code(), dst: dst.num(), src: src.num(), off, imm: 0 }
            }
            Instruction::Atomic { size, op, dst, src, off } => {
                if !matches!(size, Size::W | Size::DW) {
                    return Err(err("atomics are W or DW only"));
                }
                Insn {
                    code: class::STX | mode::ATOMIC | size.code(),
                    dst: dst.num(),
                    src: src.num(),
                    off,
                    imm: op.imm(),
                }
            }
        };
        out.push(slot);
        Ok(())
    }

    /// Encodes into a fresh vector of one or two slots.
    ///
    /// # Errors
    /// See [`Instruction::encode_into`].
    pub fn encode(&self) -> Result<Vec<Insn>, EncodeError> {
        let mut v = Vec::with_capacity(2);
        self.encode_into(&mut v)?;
        Ok(v)
    }
}

const fn alu_class(width: Width) -> u8 {
    match width {
        Width::W32 => class::ALU,
        Width::W64 => class::ALU64,
    }
}

/// Encodes a sequence of instructions into slots.
///
/// # Errors
/// The first [`EncodeError`].
pub fn encode_all(insns: &[Instruction]) -> Result<Vec<Insn>, EncodeError> {
    let mut out = Vec::with_capacity(insns.len());
    for i in insns {
        i.encode_into(&mut out)?;
    }
    Ok(out)
}
