//! The eBPF instruction model: raw 8-byte slots, a typed instruction enum, and
//! the strict encoder/decoder between them.
//!
//! Contract:
//! - [`Insn`] is one 8-byte slot exactly as the kernel sees it
//!   (`code`, `dst:4`, `src:4`, `off:i16`, `imm:i32`, little endian).
//! - [`Instruction`] covers every opcode the kernel (6.x, cpu v4) accepts for
//!   the classes LD, LDX, ST, STX, ALU, JMP, JMP32 and ALU64, including the
//!   signed division/modulo, `movsx`, sign-extending loads, `bswap`, `gotol`
//!   and the atomic operations. `ld_imm64` occupies two slots.
//! - [`decode`] is *strict*: reserved fields must be zero (as the kernel's
//!   `check_*` functions demand), so for every slot sequence it accepts,
//!   `encode(decode(x)) == x` byte for byte. Unknown opcodes are typed errors.
//! - Values (shift amounts, division by a zero immediate, helper ids) are not
//!   judged here: that is the verifier's job.

use std::fmt;

/// Size of one instruction slot in bytes.
pub const INSN_SIZE: usize = 8;

/// Instruction classes (low 3 bits of `code`).
pub mod class {
    /// Non-standard loads (`ld_imm64`, legacy packet loads).
    pub const LD: u8 = 0x00;
    /// Loads from memory into a register.
    pub const LDX: u8 = 0x01;
    /// Stores of an immediate.
    pub const ST: u8 = 0x02;
    /// Stores of a register, atomics.
    pub const STX: u8 = 0x03;
    /// 32-bit arithmetic.
    pub const ALU: u8 = 0x04;
    /// 64-bit jumps, calls, exit.
    pub const JMP: u8 = 0x05;
    /// 32-bit jumps.
    pub const JMP32: u8 = 0x06;
    /// 64-bit arithmetic.
    pub const ALU64: u8 = 0x07;
}

/// Memory access sizes (bits 3-4 of load/store opcodes).
pub mod size {
    /// 4 bytes.
    pub const W: u8 = 0x00;
    /// 2 bytes.
    pub const H: u8 = 0x08;
    /// 1 byte.
    pub const B: u8 = 0x10;
    /// 8 bytes.
    pub const DW: u8 = 0x18;
}

/// Load/store modes (bits 5-7 of load/store opcodes).
pub mod mode {
    /// `ld_imm64`.
    pub const IMM: u8 = 0x00;
    /// Legacy absolute packet load.
    pub const ABS: u8 = 0x20;
    /// Legacy indirect packet load.
    pub const IND: u8 = 0x40;
    /// Regular memory access.
    pub const MEM: u8 = 0x60;
    /// Sign-extending load.
    pub const MEMSX: u8 = 0x80;
    /// Atomic read-modify-write.
    pub const ATOMIC: u8 = 0xc0;
}

/// Operand source bit: immediate (`K`) or register (`X`).
pub mod source {
    /// Immediate operand.
    pub const K: u8 = 0x00;
    /// Register operand.
    pub const X: u8 = 0x08;
}

/// `ld_imm64` pseudo source values (the `src` field of the first slot).
pub mod pseudo {
    /// A plain 64-bit immediate.
    pub const NONE: u8 = 0;
    /// `imm` is a map file descriptor (set by the loader from a relocation).
    pub const MAP_FD: u8 = 1;
    /// `imm` is a map fd and the second `imm` an offset into its value.
    pub const MAP_VALUE: u8 = 2;
    /// `imm` is a kernel BTF id.
    pub const BTF_ID: u8 = 3;
    /// `imm` is a relative instruction offset of a function.
    pub const FUNC: u8 = 4;
    /// `imm` is an index into the fd array.
    pub const MAP_IDX: u8 = 5;
    /// `imm` is an fd-array index and the second `imm` an offset into its value.
    pub const MAP_IDX_VALUE: u8 = 6;
    /// Largest pseudo value the kernel knows.
    pub const MAX: u8 = 6;
}

/// A register. `R10` is the read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

impl Reg {
    /// All eleven registers in order.
    pub const ALL: [Reg; 11] =
        [Reg::R0, Reg::R1, Reg::R2, Reg::R3, Reg::R4, Reg::R5, Reg::R6, Reg::R7, Reg::R8, Reg::R9, Reg::R10];

    /// The register with number `n`, if `n <= 10`.
    #[must_use]
    pub fn from_u8(n: u8) -> Option<Reg> {
        Reg::ALL.get(usize::from(n)).copied()
    }

    /// The register number.
    #[must_use]
    pub const fn num(self) -> u8 {
        self as u8
    }

    /// The register number as an index.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.num())
    }
}

/// One raw 8-byte instruction slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Insn {
    /// Opcode byte.
    pub code: u8,
    /// Destination register field (4 bits).
    pub dst: u8,
    /// Source register field (4 bits).
    pub src: u8,
    /// Signed 16-bit offset.
    pub off: i16,
    /// Signed 32-bit immediate.
    pub imm: i32,
}

impl Insn {
    /// Little-endian encoding of the slot. Register fields are masked to 4 bits.
    #[must_use]
    pub fn to_bytes(self) -> [u8; INSN_SIZE] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [self.code, (self.dst & 0x0f) | ((self.src & 0x0f) << 4), off[0], off[1], imm[0], imm[1], imm[2], imm[3]]
    }

    /// Parses one little-endian slot. Never fails: every byte pattern is a slot.
    #[must_use]
    pub fn from_bytes(b: [u8; INSN_SIZE]) -> Insn {
        Insn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// The instruction class (low 3 bits of the opcode).
    #[must_use]
    pub const fn class(self) -> u8 {
        self.code & 0x07
    }

    /// True if this slot is the first slot of an `ld_imm64`.
    #[must_use]
    pub const fn is_ld_imm64(self) -> bool {
        self.code == class::LD | size::DW | mode::IMM
    }
}

/// Converts slots to their byte encoding.
#[must_use]
pub fn insns_to_bytes(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.to_bytes()).collect()
}

/// Splits bytes into slots.
///
/// # Errors
/// [`DecodeError::Length`] if the length is not a multiple of 8.
pub fn insns_from_bytes(bytes: &[u8]) -> Result<Vec<Insn>, DecodeError> {
    if !bytes.len().is_multiple_of(INSN_SIZE) {
        return Err(DecodeError::Length { len: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(INSN_SIZE)
        .map(|c| {
            let mut b = [0u8; INSN_SIZE];
            b.copy_from_slice(c);
            Insn::from_bytes(b)
        })
        .collect())
}

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
    const fn code_off(self) -> (u8, i16) {
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
const ALU_NEG: u8 = 0x80;
/// ALU opcode bits for byte swaps.
const ALU_END: u8 = 0xd0;

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

    const fn code(self) -> u8 {
        match self {
            Size::B => size::B,
            Size::H => size::H,
            Size::W => size::W,
            Size::DW => size::DW,
        }
    }

    const fn from_code(code: u8) -> Size {
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

    const fn code(self) -> u8 {
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

/// An instruction that cannot be encoded because its fields are inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode {what}: {reason}")]
pub struct EncodeError {
    /// The instruction, as `Debug` text.
    pub what: String,
    /// Why it cannot be encoded.
    pub reason: &'static str,
}

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

/// Evaluates an ALU operation with the kernel's semantics: 32-bit operations
/// work on the low halves and zero-extend; register shift amounts are masked
/// (`& 31` / `& 63`); division by zero gives 0; modulo by zero leaves the
/// dividend (truncated to 32 bits for 32-bit operations); `INT_MIN s/ -1`
/// wraps.
#[must_use]
pub fn eval_alu(width: Width, op: AluOp, dst: u64, src: u64) -> u64 {
    match width {
        Width::W64 => {
            let (sd, ss) = (dst as i64, src as i64);
            match op {
                AluOp::Add => dst.wrapping_add(src),
                AluOp::Sub => dst.wrapping_sub(src),
                AluOp::Mul => dst.wrapping_mul(src),
                AluOp::Div => dst.checked_div(src).unwrap_or(0),
                AluOp::SDiv => {
                    if ss == 0 {
                        0
                    } else {
                        sd.wrapping_div(ss) as u64
                    }
                }
                AluOp::Mod => dst.checked_rem(src).unwrap_or(dst),
                AluOp::SMod => {
                    if ss == 0 {
                        dst
                    } else {
                        sd.wrapping_rem(ss) as u64
                    }
                }
                AluOp::Or => dst | src,
                AluOp::And => dst & src,
                AluOp::Xor => dst ^ src,
                AluOp::Lsh => dst << (src & 63),
                AluOp::Rsh => dst >> (src & 63),
                AluOp::Arsh => (sd >> (src & 63)) as u64,
                AluOp::Mov => src,
            }
        }
        Width::W32 => {
            let (d, s) = (dst as u32, src as u32);
            let (sd, ss) = (d as i32, s as i32);
            let r: u32 = match op {
                AluOp::Add => d.wrapping_add(s),
                AluOp::Sub => d.wrapping_sub(s),
                AluOp::Mul => d.wrapping_mul(s),
                AluOp::Div => d.checked_div(s).unwrap_or(0),
                AluOp::SDiv => {
                    if ss == 0 {
                        0
                    } else {
                        sd.wrapping_div(ss) as u32
                    }
                }
                AluOp::Mod => d.checked_rem(s).unwrap_or(d),
                AluOp::SMod => {
                    if ss == 0 {
                        d
                    } else {
                        sd.wrapping_rem(ss) as u32
                    }
                }
                AluOp::Or => d | s,
                AluOp::And => d & s,
                AluOp::Xor => d ^ s,
                AluOp::Lsh => d << (s & 31),
                AluOp::Rsh => d >> (s & 31),
                AluOp::Arsh => (sd >> (s & 31)) as u32,
                AluOp::Mov => s,
            };
            u64::from(r)
        }
    }
}

/// Evaluates `neg` (32-bit results zero-extended).
#[must_use]
pub fn eval_neg(width: Width, v: u64) -> u64 {
    match width {
        Width::W64 => v.wrapping_neg(),
        Width::W32 => u64::from((v as u32).wrapping_neg()),
    }
}

/// Evaluates a byte-order operation on a little-endian machine.
#[must_use]
pub fn eval_end(op: EndOp, bits: EndBits, v: u64) -> u64 {
    match (op, bits) {
        (EndOp::ToLe, EndBits::B16) => v & 0xffff,
        (EndOp::ToLe, EndBits::B32) => v & 0xffff_ffff,
        (EndOp::ToLe, EndBits::B64) => v,
        (_, EndBits::B16) => u64::from((v as u16).swap_bytes()),
        (_, EndBits::B32) => u64::from((v as u32).swap_bytes()),
        (_, EndBits::B64) => v.swap_bytes(),
    }
}

/// Evaluates `movsx` (32-bit results zero-extended).
#[must_use]
pub fn eval_movsx(width: Width, ext: SignExt, v: u64) -> u64 {
    let x: i64 = match ext {
        SignExt::S8 => i64::from(v as u8 as i8),
        SignExt::S16 => i64::from(v as u16 as i16),
        SignExt::S32 => i64::from(v as u32 as i32),
    };
    match width {
        Width::W64 => x as u64,
        Width::W32 => u64::from(x as u32),
    }
}

/// Sign- or zero-extends a raw immediate as the instruction uses it: 64-bit
/// operations sign-extend, 32-bit ones keep the low 32 bits.
#[must_use]
pub fn imm_value(width: Width, imm: i32) -> u64 {
    match width {
        Width::W64 => i64::from(imm) as u64,
        Width::W32 => u64::from(imm as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_roundtrip_of_a_slot() {
        let i = Insn { code: 0x61, dst: 2, src: 1, off: 76, imm: 0 };
        let b = i.to_bytes();
        assert_eq!(b, [0x61, 0x12, 76, 0, 0, 0, 0, 0]);
        assert_eq!(Insn::from_bytes(b), i);
    }

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
