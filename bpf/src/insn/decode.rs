//! Strict decoding: slots to instructions, reserved fields zero.

use super::ops::{ALU_END, ALU_NEG};
use super::{
    AluOp, AtomicOp, CallTarget, EndBits, EndOp, Insn, Instruction, JmpCond, Operand, Reg, SignExt, Size, Width, class,
    mode, pseudo, source,
};

/// Failure to decode slots into instructions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The byte length is not a multiple of 8.
    #[error("instruction bytes have length {len}, not a multiple of 8")]
    Length {
        /// Byte length.
        len: usize,
    },
    /// The opcode byte is not a known instruction.
    #[error("insn {index}: unknown opcode {code:#04x}")]
    UnknownOpcode {
        /// Slot index.
        index: usize,
        /// Opcode byte.
        code: u8,
    },
    /// A field that must be zero for this opcode is not.
    #[error("insn {index}: opcode {code:#04x} uses reserved field `{field}`")]
    ReservedField {
        /// Slot index.
        index: usize,
        /// Opcode byte.
        code: u8,
        /// Name of the field.
        field: &'static str,
    },
    /// A register field is above 10.
    #[error("insn {index}: invalid register number {reg}")]
    InvalidRegister {
        /// Slot index.
        index: usize,
        /// Register field value.
        reg: u8,
    },
    /// An `imm` or `off` value outside what the opcode defines.
    #[error("insn {index}: opcode {code:#04x} has invalid {field} {value}")]
    InvalidField {
        /// Slot index.
        index: usize,
        /// Opcode byte.
        code: u8,
        /// Name of the field.
        field: &'static str,
        /// The value.
        value: i64,
    },
    /// `ld_imm64` in the last slot.
    #[error("insn {index}: ld_imm64 is missing its second slot")]
    TruncatedLdImm64 {
        /// Slot index.
        index: usize,
    },
    /// The second slot of `ld_imm64` has a non-zero code, register or offset.
    #[error("insn {index}: invalid second slot of ld_imm64")]
    BadLdImm64Tail {
        /// Slot index of the first slot.
        index: usize,
    },
}

/// Decodes the instruction starting at slot `index`. Returns it and its slot count.
///
/// # Errors
/// Any [`DecodeError`] other than `Length`.
pub fn decode(slots: &[Insn], index: usize) -> Result<(Instruction, usize), DecodeError> {
    let Some(&i) = slots.get(index) else {
        return Err(DecodeError::TruncatedLdImm64 { index });
    };
    let code = i.code;
    let unknown = || DecodeError::UnknownOpcode { index, code };
    let reserved = |field| DecodeError::ReservedField { index, code, field };
    let reg = |n: u8| Reg::from_u8(n).ok_or(DecodeError::InvalidRegister { index, reg: n });
    let need_zero = |cond: bool, field| if cond { Ok(()) } else { Err(reserved(field)) };
    let x = code & source::X != 0;
    let insn = match code & 0x07 {
        class::ALU | class::ALU64 => {
            let width = if code & 0x07 == class::ALU64 { Width::W64 } else { Width::W32 };
            let opbits = code & 0xf0;
            let dst = reg(i.dst)?;
            match opbits {
                ALU_NEG => {
                    if x {
                        return Err(unknown());
                    }
                    need_zero(i.src == 0, "src")?;
                    need_zero(i.off == 0, "off")?;
                    need_zero(i.imm == 0, "imm")?;
                    Instruction::Neg { width, dst }
                }
                ALU_END => {
                    let op = match (width, x) {
                        (Width::W32, false) => EndOp::ToLe,
                        (Width::W32, true) => EndOp::ToBe,
                        (Width::W64, false) => EndOp::Swap,
                        (Width::W64, true) => return Err(unknown()),
                    };
                    need_zero(i.src == 0, "src")?;
                    need_zero(i.off == 0, "off")?;
                    let bits = match i.imm {
                        16 => EndBits::B16,
                        32 => EndBits::B32,
                        64 => EndBits::B64,
                        v => {
                            return Err(DecodeError::InvalidField { index, code, field: "imm", value: i64::from(v) });
                        }
                    };
                    Instruction::End { op, bits, dst }
                }
                0xe0 | 0xf0 => return Err(unknown()),
                _ => {
                    let op = match (opbits, i.off) {
                        (0x30, 1) => AluOp::SDiv,
                        (0x90, 1) => AluOp::SMod,
                        (0xb0, 8 | 16 | 32) if x => {
                            let ext = match i.off {
                                8 => SignExt::S8,
                                16 => SignExt::S16,
                                _ if width == Width::W64 => SignExt::S32,
                                v => {
                                    return Err(DecodeError::InvalidField {
                                        index,
                                        code,
                                        field: "off",
                                        value: i64::from(v),
                                    });
                                }
                            };
                            need_zero(i.imm == 0, "imm")?;
                            let src = reg(i.src)?;
                            return Ok((Instruction::MovSx { width, ext, dst, src }, 1));
                        }
                        (_, 0) => match AluOp::ALL.into_iter().find(|o| o.code_off() == (opbits, 0)) {
                            Some(op) => op,
                            None => return Err(unknown()),
                        },
                        _ => return Err(reserved("off")),
                    };
                    let src = if x {
                        need_zero(i.imm == 0, "imm")?;
                        Operand::Reg(reg(i.src)?)
                    } else {
                        need_zero(i.src == 0, "src")?;
                        Operand::Imm(i.imm)
                    };
                    Instruction::Alu { width, op, dst, src }
                }
            }
        }
        class::JMP | class::JMP32 => {
            let is32 = code & 0x07 == class::JMP32;
            let opbits = code & 0xf0;
            match opbits {
                0x00 => {
                    if x {
                        return Err(unknown());
                    }
                    need_zero(i.dst == 0, "dst")?;
                    need_zero(i.src == 0, "src")?;
                    if is32 {
                        need_zero(i.off == 0, "off")?;
                        Instruction::JaLong { imm: i.imm }
                    } else {
                        need_zero(i.imm == 0, "imm")?;
                        Instruction::Ja { off: i.off }
                    }
                }
                0x80 => {
                    if is32 || x {
                        return Err(unknown());
                    }
                    need_zero(i.dst == 0, "dst")?;
                    need_zero(i.off == 0, "off")?;
                    let target = match i.src {
                        0 => CallTarget::Helper(i.imm),
                        1 => CallTarget::Local(i.imm),
                        2 => CallTarget::Kfunc(i.imm),
                        _ => return Err(reserved("src")),
                    };
                    Instruction::Call(target)
                }
                0x90 => {
                    if is32 || x {
                        return Err(unknown());
                    }
                    need_zero(i.dst == 0, "dst")?;
                    need_zero(i.src == 0, "src")?;
                    need_zero(i.off == 0, "off")?;
                    need_zero(i.imm == 0, "imm")?;
                    Instruction::Exit
                }
                0xe0 | 0xf0 => return Err(unknown()),
                _ => {
                    let Some(cond) = JmpCond::ALL.into_iter().find(|c| c.code() == opbits) else {
                        return Err(unknown());
                    };
                    let dst = reg(i.dst)?;
                    let src = if x {
                        need_zero(i.imm == 0, "imm")?;
                        Operand::Reg(reg(i.src)?)
                    } else {
                        need_zero(i.src == 0, "src")?;
                        Operand::Imm(i.imm)
                    };
                    Instruction::Jmp { width: if is32 { Width::W32 } else { Width::W64 }, cond, dst, src, off: i.off }
                }
            }
        }
        class::LD => {
            let sz = Size::from_code(code);
            match code & 0xe0 {
                mode::IMM if sz == Size::DW => {
                    let dst = reg(i.dst)?;
                    need_zero(i.off == 0, "off")?;
                    if i.src > pseudo::MAX {
                        return Err(reserved("src"));
                    }
                    let Some(&hi) = slots.get(index + 1) else {
                        return Err(DecodeError::TruncatedLdImm64 { index });
                    };
                    if hi.code != 0 || hi.dst != 0 || hi.src != 0 || hi.off != 0 {
                        return Err(DecodeError::BadLdImm64Tail { index });
                    }
                    let imm = (i64::from(hi.imm) << 32) | i64::from(i.imm as u32);
                    return Ok((Instruction::LdImm64 { dst, pseudo: i.src, imm }, 2));
                }
                mode::ABS if sz != Size::DW => {
                    need_zero(i.dst == 0, "dst")?;
                    need_zero(i.src == 0, "src")?;
                    need_zero(i.off == 0, "off")?;
                    Instruction::LdAbs { size: sz, imm: i.imm }
                }
                mode::IND if sz != Size::DW => {
                    need_zero(i.dst == 0, "dst")?;
                    need_zero(i.off == 0, "off")?;
                    Instruction::LdInd { size: sz, src: reg(i.src)?, imm: i.imm }
                }
                _ => return Err(unknown()),
            }
        }
        class::LDX => {
            let sz = Size::from_code(code);
            let dst = reg(i.dst)?;
            let src = reg(i.src)?;
            match code & 0xe0 {
                mode::MEM => {
                    need_zero(i.imm == 0, "imm")?;
                    Instruction::Load { size: sz, dst, src, off: i.off }
                }
                mode::MEMSX if sz != Size::DW => {
                    need_zero(i.imm == 0, "imm")?;
                    Instruction::LoadSx { size: sz, dst, src, off: i.off }
                }
                _ => return Err(unknown()),
            }
        }
        class::ST => {
            if code & 0xe0 != mode::MEM {
                return Err(unknown());
            }
            need_zero(i.src == 0, "src")?;
            Instruction::Store { size: Size::from_code(code), dst: reg(i.dst)?, off: i.off, imm: i.imm }
        }
        _ => {
            // STX
            let sz = Size::from_code(code);
            let dst = reg(i.dst)?;
            let src = reg(i.src)?;
            match code & 0xe0 {
                mode::MEM => {
                    need_zero(i.imm == 0, "imm")?;
                    Instruction::StoreReg { size: sz, dst, src, off: i.off }
                }
                mode::ATOMIC if matches!(sz, Size::W | Size::DW) => {
                    let Some(op) = AtomicOp::from_imm(i.imm) else {
                        return Err(DecodeError::InvalidField { index, code, field: "imm", value: i64::from(i.imm) });
                    };
                    Instruction::Atomic { size: sz, op, dst, src, off: i.off }
                }
                _ => return Err(unknown()),
            }
        }
    };
    Ok((insn, 1))
}

/// Decodes a whole slot sequence into `(slot index, instruction)` pairs.
///
/// # Errors
/// The first [`DecodeError`] encountered.
pub fn decode_all(slots: &[Insn]) -> Result<Vec<(usize, Instruction)>, DecodeError> {
    let mut out = Vec::with_capacity(slots.len());
    let mut pc = 0;
    while pc < slots.len() {
        let (insn, n) = decode(slots, pc)?;
        out.push((pc, insn));
        pc += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_imm64_spans_two_slots() {
        let i = Instruction::ld_imm64(Reg::R1, 0x1234_5678_9abc_def0);
        let s = i.encode().expect("encodes");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].imm as u32, 0x9abc_def0);
        assert_eq!(s[1].imm as u32, 0x1234_5678);
        assert_eq!(decode(&s, 0), Ok((i, 2)));
        assert_eq!(decode(&s[..1], 0), Err(DecodeError::TruncatedLdImm64 { index: 0 }));
    }

    #[test]
    fn reserved_fields_are_rejected() {
        let bad = Insn { code: 0x07, dst: 1, src: 2, off: 0, imm: 5 };
        assert!(matches!(decode(&[bad], 0), Err(DecodeError::ReservedField { field: "src", .. })));
    }
}
