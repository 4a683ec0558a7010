//! The typed instruction, its ergonomic constructors and queries.

use super::{AluOp, AtomicOp, CallTarget, EndBits, EndOp, JmpCond, Operand, Reg, SignExt, Size, Width, pseudo};

/// A decoded instruction. `LdImm64` spans two slots, every other variant one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// `dst op= src` (also `dst = src` for [`AluOp::Mov`]).
    Alu {
        /// 32 or 64 bit.
        width: Width,
        /// Operation.
        op: AluOp,
        /// Destination.
        dst: Reg,
        /// Second operand.
        src: Operand,
    },
    /// `dst = (sN)src`: sign-extending move (cpu v4).
    MovSx {
        /// 32 or 64 bit.
        width: Width,
        /// Source width.
        ext: SignExt,
        /// Destination.
        dst: Reg,
        /// Source.
        src: Reg,
    },
    /// `dst = -dst`.
    Neg {
        /// 32 or 64 bit.
        width: Width,
        /// Register negated in place.
        dst: Reg,
    },
    /// `dst = leN/beN/bswapN dst`.
    End {
        /// Which conversion.
        op: EndOp,
        /// Width.
        bits: EndBits,
        /// Register converted in place.
        dst: Reg,
    },
    /// `goto +off`.
    Ja {
        /// Relative target in slots.
        off: i16,
    },
    /// `gotol +imm` (`JMP32 | JA`, cpu v4).
    JaLong {
        /// Relative target in slots.
        imm: i32,
    },
    /// `if dst cond src goto +off`.
    Jmp {
        /// `JMP32` or `JMP`.
        width: Width,
        /// Condition.
        cond: JmpCond,
        /// Left operand.
        dst: Reg,
        /// Right operand.
        src: Operand,
        /// Relative target in slots.
        off: i16,
    },
    /// `call ...`.
    Call(CallTarget),
    /// `exit`.
    Exit,
    /// `dst = imm ll` (two slots).
    LdImm64 {
        /// Destination.
        dst: Reg,
        /// The pseudo source ([`pseudo`]), 0 for a plain constant.
        pseudo: u8,
        /// The 64-bit value (low half in slot 1, high half in slot 2).
        imm: i64,
    },
    /// Legacy `r0 = ntoh(*(size *)skb[imm])`.
    LdAbs {
        /// B, H or W.
        size: Size,
        /// Packet offset.
        imm: i32,
    },
    /// Legacy `r0 = ntoh(*(size *)skb[src + imm])`.
    LdInd {
        /// B, H or W.
        size: Size,
        /// Offset register.
        src: Reg,
        /// Added offset.
        imm: i32,
    },
    /// `dst = *(size *)(src + off)`.
    Load {
        /// Access size.
        size: Size,
        /// Destination.
        dst: Reg,
        /// Base pointer.
        src: Reg,
        /// Offset.
        off: i16,
    },
    /// `dst = *(sN *)(src + off)`: sign-extending load (cpu v4).
    LoadSx {
        /// B, H or W.
        size: Size,
        /// Destination.
        dst: Reg,
        /// Base pointer.
        src: Reg,
        /// Offset.
        off: i16,
    },
    /// `*(size *)(dst + off) = imm`.
    Store {
        /// Access size.
        size: Size,
        /// Base pointer.
        dst: Reg,
        /// Offset.
        off: i16,
        /// Stored value (sign-extended for `u64`).
        imm: i32,
    },
    /// `*(size *)(dst + off) = src`.
    StoreReg {
        /// Access size.
        size: Size,
        /// Base pointer.
        dst: Reg,
        /// Stored register.
        src: Reg,
        /// Offset.
        off: i16,
    },
    /// Atomic read-modify-write on `*(size *)(dst + off)` with `src`.
    Atomic {
        /// W or DW.
        size: Size,
        /// Operation.
        op: AtomicOp,
        /// Base pointer.
        dst: Reg,
        /// Operand (and result register for fetching ops).
        src: Reg,
        /// Offset.
        off: i16,
    },
}

impl Instruction {
    // ----- ergonomic constructors -------------------------------------------------

    /// `dst = imm` (64-bit, imm sign-extended).
    #[must_use]
    pub const fn mov64_imm(dst: Reg, imm: i32) -> Self {
        Self::alu64_imm(AluOp::Mov, dst, imm)
    }
    /// `dst = src` (64-bit).
    #[must_use]
    pub const fn mov64_reg(dst: Reg, src: Reg) -> Self {
        Self::alu64_reg(AluOp::Mov, dst, src)
    }
    /// `wdst = imm` (32-bit, upper half zeroed).
    #[must_use]
    pub const fn mov32_imm(dst: Reg, imm: i32) -> Self {
        Self::alu32_imm(AluOp::Mov, dst, imm)
    }
    /// `wdst = wsrc` (upper half zeroed).
    #[must_use]
    pub const fn mov32_reg(dst: Reg, src: Reg) -> Self {
        Self::alu32_reg(AluOp::Mov, dst, src)
    }
    /// `dst op= imm` (64-bit).
    #[must_use]
    pub const fn alu64_imm(op: AluOp, dst: Reg, imm: i32) -> Self {
        Instruction::Alu { width: Width::W64, op, dst, src: Operand::Imm(imm) }
    }
    /// `dst op= src` (64-bit).
    #[must_use]
    pub const fn alu64_reg(op: AluOp, dst: Reg, src: Reg) -> Self {
        Instruction::Alu { width: Width::W64, op, dst, src: Operand::Reg(src) }
    }
    /// `wdst op= imm` (32-bit).
    #[must_use]
    pub const fn alu32_imm(op: AluOp, dst: Reg, imm: i32) -> Self {
        Instruction::Alu { width: Width::W32, op, dst, src: Operand::Imm(imm) }
    }
    /// `wdst op= wsrc` (32-bit).
    #[must_use]
    pub const fn alu32_reg(op: AluOp, dst: Reg, src: Reg) -> Self {
        Instruction::Alu { width: Width::W32, op, dst, src: Operand::Reg(src) }
    }
    /// `dst = -dst`.
    #[must_use]
    pub const fn neg(width: Width, dst: Reg) -> Self {
        Instruction::Neg { width, dst }
    }
    /// `dst = beN dst` (host to network order on little-endian hosts).
    #[must_use]
    pub const fn be(bits: EndBits, dst: Reg) -> Self {
        Instruction::End { op: EndOp::ToBe, bits, dst }
    }
    /// `dst = leN dst` (truncation on little-endian hosts).
    #[must_use]
    pub const fn le(bits: EndBits, dst: Reg) -> Self {
        Instruction::End { op: EndOp::ToLe, bits, dst }
    }
    /// `dst = bswapN dst` (cpu v4).
    #[must_use]
    pub const fn bswap(bits: EndBits, dst: Reg) -> Self {
        Instruction::End { op: EndOp::Swap, bits, dst }
    }
    /// `dst = *(size *)(src + off)`.
    #[must_use]
    pub const fn load(size: Size, dst: Reg, src: Reg, off: i16) -> Self {
        Instruction::Load { size, dst, src, off }
    }
    /// `*(size *)(dst + off) = imm`.
    #[must_use]
    pub const fn store_imm(size: Size, dst: Reg, off: i16, imm: i32) -> Self {
        Instruction::Store { size, dst, off, imm }
    }
    /// `*(size *)(dst + off) = src`.
    #[must_use]
    pub const fn store_reg(size: Size, dst: Reg, src: Reg, off: i16) -> Self {
        Instruction::StoreReg { size, dst, src, off }
    }
    /// `if dst cond imm goto +off` (64-bit compare, imm sign-extended).
    #[must_use]
    pub const fn jmp_imm(cond: JmpCond, dst: Reg, imm: i32, off: i16) -> Self {
        Instruction::Jmp { width: Width::W64, cond, dst, src: Operand::Imm(imm), off }
    }
    /// `if dst cond src goto +off` (64-bit compare).
    #[must_use]
    pub const fn jmp_reg(cond: JmpCond, dst: Reg, src: Reg, off: i16) -> Self {
        Instruction::Jmp { width: Width::W64, cond, dst, src: Operand::Reg(src), off }
    }
    /// `if wdst cond imm goto +off` (32-bit compare).
    #[must_use]
    pub const fn jmp32_imm(cond: JmpCond, dst: Reg, imm: i32, off: i16) -> Self {
        Instruction::Jmp { width: Width::W32, cond, dst, src: Operand::Imm(imm), off }
    }
    /// `if wdst cond wsrc goto +off` (32-bit compare).
    #[must_use]
    pub const fn jmp32_reg(cond: JmpCond, dst: Reg, src: Reg, off: i16) -> Self {
        Instruction::Jmp { width: Width::W32, cond, dst, src: Operand::Reg(src), off }
    }
    /// `goto +off`.
    #[must_use]
    pub const fn ja(off: i16) -> Self {
        Instruction::Ja { off }
    }
    /// `call helper_id`.
    #[must_use]
    pub const fn call(helper_id: i32) -> Self {
        Instruction::Call(CallTarget::Helper(helper_id))
    }
    /// `exit`.
    #[must_use]
    pub const fn exit() -> Self {
        Instruction::Exit
    }
    /// `dst = imm ll`.
    #[must_use]
    pub const fn ld_imm64(dst: Reg, imm: i64) -> Self {
        Instruction::LdImm64 { dst, pseudo: pseudo::NONE, imm }
    }
    /// `ld_imm64` of a map fd (`src = BPF_PSEUDO_MAP_FD`), as the loader patches it.
    #[must_use]
    pub const fn ld_map_fd(dst: Reg, fd: i32) -> Self {
        Instruction::LdImm64 { dst, pseudo: pseudo::MAP_FD, imm: fd as i64 }
    }
    /// Atomic operation on `*(size *)(dst + off)`.
    #[must_use]
    pub const fn atomic(size: Size, op: AtomicOp, dst: Reg, src: Reg, off: i16) -> Self {
        Instruction::Atomic { size, op, dst, src, off }
    }

    // ----- queries ---------------------------------------------------------------

    /// Number of slots the instruction occupies (2 for `ld_imm64`).
    #[must_use]
    pub const fn slots(&self) -> usize {
        match self {
            Instruction::LdImm64 { .. } => 2,
            _ => 1,
        }
    }

    /// Relative jump offset in slots, for `goto`, `gotol` and conditional jumps.
    #[must_use]
    pub const fn jump_offset(&self) -> Option<i64> {
        match *self {
            Instruction::Ja { off } | Instruction::Jmp { off, .. } => Some(off as i64),
            Instruction::JaLong { imm } => Some(imm as i64),
            _ => None,
        }
    }

    /// True for instructions that never fall through (`goto`, `gotol`, `exit`).
    #[must_use]
    pub const fn is_terminator(&self) -> bool {
        matches!(self, Instruction::Ja { .. } | Instruction::JaLong { .. } | Instruction::Exit)
    }
}
