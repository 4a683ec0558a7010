//! The kernel's semantics of ALU, byte-order and sign-extension operations.

use super::{AluOp, EndBits, EndOp, SignExt, Width};

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
