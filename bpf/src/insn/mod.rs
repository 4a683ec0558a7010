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

mod decode;
mod encode;
mod eval;
mod instruction;
mod ops;
mod slot;

pub use decode::{DecodeError, decode, decode_all};
pub use encode::{EncodeError, encode_all};
pub use eval::{eval_alu, eval_end, eval_movsx, eval_neg, imm_value};
pub use instruction::Instruction;
pub use ops::{AluOp, AtomicOp, CallTarget, EndBits, EndOp, JmpCond, Operand, SignExt, Size, Width};
pub use slot::{Insn, Reg, insns_from_bytes, insns_to_bytes};

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
