//! Operations and operands: widths, ALU operations, byte-order operations,
//! memory sizes, jump conditions, atomic operations and call targets.

use super::{Reg, size};

/// Operation width: `ALU`/`JMP32` (32 bits) or `ALU64`/`JMP` (64 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Width {
    /// 32-bit (sub-register) operation.
    W32,
    /// 64-bit operation.
    W64,
}

/// Binary arithmetic operations (and `mov`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AluOp {
    /// `+=`
    Add,
    /// `-=`
    Sub,
    /// `*=`
    Mul,
    /// unsigned `/=`
    Div,
    /// signed `s/=` (cpu v4, `off = 1`)
    SDiv,
    /// `|=`
    Or,
    /// `&=`
    And,
    /// `<<=`
    Lsh,
    /// logical `>>=`
    Rsh,
    /// unsigned `%=`
    Mod,
    /// signed `s%=` (cpu v4, `off = 1`)
    SMod,
    /// `^=`
    Xor,
    /// `=`
    Mov,
    /// arithmetic `s>>=`
    Arsh,
}

impl AluOp {
    /// All operations.
    pub const ALL: [AluOp; 14] = [
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::Div,
        AluOp::SDiv,
        AluOp::Or,
        AluOp::And,
        AluOp::Lsh,
        AluOp::Rsh,
        AluOp::Mod,
        AluOp::SMod,
        AluOp::Xor,
        AluOp::Mov,
        AluOp::Arsh,
    ];

    /// `(opcode bits, off field)`.
    pub(super) const fn code_off(self) -> (u8, i16) {
        match self {
            AluOp::Add => (0x00, 0),
            AluOp::Sub => (0x10, 0),
            AluOp::Mul => (0x20, 0),
            AluOp::Div => (0x30, 0),
            AluOp::SDiv => (0x30, 1),
            AluOp::Or => (0x40, 0),
            AluOp::And => (0x50, 0),
            AluOp::Lsh => (0x60, 0),
            AluOp::Rsh => (0x70, 0),
            AluOp::Mod => (0x90, 0),
            AluOp::SMod => (0x90, 1),
            AluOp::Xor => (0xa0, 0),
            AluOp::Mov => (0xb0, 0),
            AluOp::Arsh => (0xc0, 0),
        }
    }
}

/// ALU opcode bits for `neg`.
pub(super) const ALU_NEG: u8 = 0x80;
/// ALU opcode bits for byte swaps.
pub(super) const ALU_END: u8 = 0xd0;

/// Second operand of an ALU or conditional jump instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A register (`X` source).
    Reg(Reg),
    /// A 32-bit immediate (`K` source), sign-extended for 64-bit operations.
    Imm(i32),
}

/// Sign-extension width of `movsx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignExt {
    /// From 8 bits.
    S8,
    /// From 16 bits.
    S16,
    /// From 32 bits (64-bit `movsx` only).
    S32,
}

impl SignExt {
    /// Number of source bits.
    #[must_use]
    pub const fn bits(self) -> u32 {
        match self {
            SignExt::S8 => 8,
            SignExt::S16 => 16,
            SignExt::S32 => 32,
        }
    }
}

/// Byte-order operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndOp {
    /// `leN`: convert to little endian (ALU class, source K).
    ToLe,
    /// `beN`: convert to big endian (ALU class, source X).
    ToBe,
    /// `bswapN`: unconditional swap (ALU64 class, cpu v4).
    Swap,
}

/// Width of a byte-order operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndBits {
    /// 16 bits.
    B16,
    /// 32 bits.
    B32,
    /// 64 bits.
    B64,
}

impl EndBits {
    /// The bit count (the `imm` field).
    #[must_use]
    pub const fn bits(self) -> u32 {
        match self {
            EndBits::B16 => 16,
            EndBits::B32 => 32,
            EndBits::B64 => 64,
        }
    }
}

/// Memory access size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Size {
    /// 1 byte (`u8`).
    B,
    /// 2 bytes (`u16`).
    H,
    /// 4 bytes (`u32`).
    W,
    /// 8 bytes (`u64`).
    DW,
}

impl Size {
    /// All sizes.
    pub const ALL: [Size; 4] = [Size::B, Size::H, Size::W, Size::DW];

    /// Size in bytes.
    #[must_use]
    pub const fn bytes(self) -> usize {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }

    /// The size for a byte count, if it is 1, 2, 4 or 8.
    #[must_use]
    pub const fn from_bytes(n: usize) -> Option<Size> {
        match n {
            1 => Some(Size::B),
            2 => Some(Size::H),
            4 => Some(Size::W),
            8 => Some(Size::DW),
            _ => None,
        }
    }

    pub(super) const fn code(self) -> u8 {
        match self {
            Size::B => size::B,
            Size::H => size::H,
            Size::W => size::W,
            Size::DW => size::DW,
        }
    }

    pub(super) const fn from_code(code: u8) -> Size {
        match code & 0x18 {
            size::B => Size::B,
            size::H => Size::H,
            size::W => Size::W,
            _ => Size::DW,
        }
    }
}

/// Condition of a conditional jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JmpCond {
    /// `==`
    Eq,
    /// unsigned `>`
    Gt,
    /// unsigned `>=`
    Ge,
    /// `&` (jump if `dst & src != 0`)
    Set,
    /// `!=`
    Ne,
    /// signed `s>`
    SGt,
    /// signed `s>=`
    SGe,
    /// unsigned `<`
    Lt,
    /// unsigned `<=`
    Le,
    /// signed `s<`
    SLt,
    /// signed `s<=`
    SLe,
}

impl JmpCond {
    /// All conditions.
    pub const ALL: [JmpCond; 11] = [
        JmpCond::Eq,
        JmpCond::Gt,
        JmpCond::Ge,
        JmpCond::Set,
        JmpCond::Ne,
        JmpCond::SGt,
        JmpCond::SGe,
        JmpCond::Lt,
        JmpCond::Le,
        JmpCond::SLt,
        JmpCond::SLe,
    ];

    pub(super) const fn code(self) -> u8 {
        match self {
            JmpCond::Eq => 0x10,
            JmpCond::Gt => 0x20,
            JmpCond::Ge => 0x30,
            JmpCond::Set => 0x40,
            JmpCond::Ne => 0x50,
            JmpCond::SGt => 0x60,
            JmpCond::SGe => 0x70,
            JmpCond::Lt => 0xa0,
            JmpCond::Le => 0xb0,
            JmpCond::SLt => 0xc0,
            JmpCond::SLe => 0xd0,
        }
    }

    /// The condition that holds exactly when `self` does not.
    #[must_use]
    pub const fn negate(self) -> Option<JmpCond> {
        Some(match self {
            JmpCond::Eq => JmpCond::Ne,
            JmpCond::Ne => JmpCond::Eq,
            JmpCond::Gt => JmpCond::Le,
            JmpCond::Le => JmpCond::Gt,
            JmpCond::Ge => JmpCond::Lt,
            JmpCond::Lt => JmpCond::Ge,
            JmpCond::SGt => JmpCond::SLe,
            JmpCond::SLe => JmpCond::SGt,
            JmpCond::SGe => JmpCond::SLt,
            JmpCond::SLt => JmpCond::SGe,
            JmpCond::Set => return None,
        })
    }

    /// The condition with the operands exchanged (`a < b` ⇔ `b > a`).
    #[must_use]
    pub const fn swap(self) -> JmpCond {
        match self {
            JmpCond::Gt => JmpCond::Lt,
            JmpCond::Lt => JmpCond::Gt,
            JmpCond::Ge => JmpCond::Le,
            JmpCond::Le => JmpCond::Ge,
            JmpCond::SGt => JmpCond::SLt,
            JmpCond::SLt => JmpCond::SGt,
            JmpCond::SGe => JmpCond::SLe,
            JmpCond::SLe => JmpCond::SGe,
            other => other,
        }
    }

    /// Evaluates the condition on two values of the given width.
    #[must_use]
    pub fn eval(self, width: Width, a: u64, b: u64) -> bool {
        let (a, b, sa, sb) = match width {
            Width::W64 => (a, b, a as i64, b as i64),
            Width::W32 => (a & 0xffff_ffff, b & 0xffff_ffff, i64::from(a as u32 as i32), i64::from(b as u32 as i32)),
        };
        match self {
            JmpCond::Eq => a == b,
            JmpCond::Ne => a != b,
            JmpCond::Gt => a > b,
            JmpCond::Ge => a >= b,
            JmpCond::Lt => a < b,
            JmpCond::Le => a <= b,
            JmpCond::Set => a & b != 0,
            JmpCond::SGt => sa > sb,
            JmpCond::SGe => sa >= sb,
            JmpCond::SLt => sa < sb,
            JmpCond::SLe => sa <= sb,
        }
    }
}

/// Atomic read-modify-write operation (`STX | ATOMIC`, `imm` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AtomicOp {
    /// `lock *(..) += src`
    Add,
    /// `lock *(..) |= src`
    Or,
    /// `lock *(..) &= src`
    And,
    /// `lock *(..) ^= src`
    Xor,
    /// `src = atomic_fetch_add(..)`
    FetchAdd,
    /// `src = atomic_fetch_or(..)`
    FetchOr,
    /// `src = atomic_fetch_and(..)`
    FetchAnd,
    /// `src = atomic_fetch_xor(..)`
    FetchXor,
    /// `src = xchg(..)`
    Xchg,
    /// `r0 = cmpxchg(.., r0, src)`
    CmpXchg,
}

impl AtomicOp {
    /// All atomic operations.
    pub const ALL: [AtomicOp; 10] = [
        AtomicOp::Add,
        AtomicOp::Or,
        AtomicOp::And,
        AtomicOp::Xor,
        AtomicOp::FetchAdd,
        AtomicOp::FetchOr,
        AtomicOp::FetchAnd,
        AtomicOp::FetchXor,
        AtomicOp::Xchg,
        AtomicOp::CmpXchg,
    ];

    /// The `imm` encoding.
    #[must_use]
    pub const fn imm(self) -> i32 {
        match self {
            AtomicOp::Add => 0x00,
            AtomicOp::Or => 0x40,
            AtomicOp::And => 0x50,
            AtomicOp::Xor => 0xa0,
            AtomicOp::FetchAdd => 0x01,
            AtomicOp::FetchOr => 0x41,
            AtomicOp::FetchAnd => 0x51,
            AtomicOp::FetchXor => 0xa1,
            AtomicOp::Xchg => 0xe1,
            AtomicOp::CmpXchg => 0xf1,
        }
    }

    /// Decodes the `imm` field.
    #[must_use]
    pub fn from_imm(imm: i32) -> Option<AtomicOp> {
        AtomicOp::ALL.into_iter().find(|op| op.imm() == imm)
    }

    /// True if the operation writes the old value back to a register.
    #[must_use]
    pub const fn fetches(self) -> bool {
        !matches!(self, AtomicOp::Add | AtomicOp::Or | AtomicOp::And | AtomicOp::Xor)
    }
}

/// What a `call` instruction calls (its `src` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallTarget {
    /// A kernel helper by id (`src = 0`).
    Helper(i32),
    /// A BPF-to-BPF call, `imm` = relative slot offset (`src = 1`).
    Local(i32),
    /// A kernel function by BTF id (`src = 2`).
    Kfunc(i32),
}
