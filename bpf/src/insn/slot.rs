//! Registers and raw 8-byte slots, and their byte encoding.

use std::fmt;

use super::{DecodeError, INSN_SIZE, class, mode, size};

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
}
