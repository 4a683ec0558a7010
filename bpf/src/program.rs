//! A program: raw instruction slots plus the side tables that later stages
//! need — map relocations, named holes and label names.
//!
//! Contract (checked by [`Program::validate`]):
//! - every map relocation names the first slot of an `ld_imm64` whose value is
//!   0 and pseudo source is 0 or `BPF_PSEUDO_MAP_FD`; at most one per slot;
//! - every hole names a slot whose instruction has an immediate of the hole's
//!   kind (`Imm32` for ALU/JMP/ST immediates, `Imm64` for `ld_imm64`);
//! - labels name slot indexes inside the program.
//!
//! Filling holes ([`Program::fill_holes`]) checks that each value is
//! representable where it lands: a 64-bit ALU/JMP immediate or a DW store is
//! sign-extended, so it must fit `i32`; a 32-bit one may be any `u32` too.

use std::collections::{BTreeMap, BTreeSet};

use crate::insn::{DecodeError, Insn, Instruction, Operand, Size, Width, decode, decode_all, insns_to_bytes, pseudo};

/// A reference to a map by name at an `ld_imm64`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapReloc {
    /// Slot index of the `ld_imm64`.
    pub insn: usize,
    /// Map name.
    pub map: String,
}

/// Which immediate a hole fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HoleKind {
    /// The 32-bit `imm` of one slot.
    Imm32,
    /// The 64-bit value of an `ld_imm64`.
    Imm64,
}

impl HoleKind {
    /// Name used in the `.egret.holes` section.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            HoleKind::Imm32 => "imm32",
            HoleKind::Imm64 => "imm64",
        }
    }

    /// Parses [`HoleKind::name`].
    #[must_use]
    pub fn from_name(s: &str) -> Option<HoleKind> {
        match s {
            "imm32" => Some(HoleKind::Imm32),
            "imm64" => Some(HoleKind::Imm64),
            _ => None,
        }
    }
}

/// A named immediate left for code generation or the loader to fill.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hole {
    /// Hole name (e.g. `tunnel_ifindex`).
    pub name: String,
    /// Slot index of the instruction.
    pub insn: usize,
    /// Which immediate.
    pub kind: HoleKind,
}

/// A program with its side tables.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Program {
    /// Program (and ELF function symbol) name.
    pub name: String,
    /// Instruction slots.
    pub insns: Vec<Insn>,
    /// Map references, sorted by slot.
    pub map_relocs: Vec<MapReloc>,
    /// Holes, sorted by slot.
    pub holes: Vec<Hole>,
    /// Label names by slot index (used by the disassembler and as ELF symbols).
    pub labels: BTreeMap<usize, String>,
}

/// A program whose side tables do not match its instructions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// A map relocation that does not point at a suitable `ld_imm64`.
    #[error("program `{program}`: map reference `{map}` at insn {insn} is not on an ld_imm64 of 0")]
    BadMapReloc {
        /// Program name.
        program: String,
        /// Slot index.
        insn: usize,
        /// Map name.
        map: String,
    },
    /// Two map relocations on one slot.
    #[error("program `{program}`: two map references at insn {insn}")]
    DuplicateMapReloc {
        /// Program name.
        program: String,
        /// Slot index.
        insn: usize,
    },
    /// A hole on an instruction without a matching immediate.
    #[error("program `{program}`: hole `%{hole}` at insn {insn} is not on an instruction with a {kind} immediate")]
    BadHole {
        /// Program name.
        program: String,
        /// Hole name.
        hole: String,
        /// Slot index.
        insn: usize,
        /// Expected kind name.
        kind: &'static str,
    },
    /// A label outside the program.
    #[error("program `{program}`: label `{label}` at insn {insn} is outside the program")]
    BadLabel {
        /// Program name.
        program: String,
        /// Label name.
        label: String,
        /// Slot index.
        insn: usize,
    },
}

/// Failure to fill holes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoleError {
    /// A hole without a value.
    #[error("program `{program}`: no value for hole `%{hole}`")]
    Missing {
        /// Program name.
        program: String,
        /// Hole name.
        hole: String,
    },
    /// A value that does not fit where the hole lands.
    #[error("program `{program}`: value {value} does not fit hole `%{hole}` at insn {insn} ({range})")]
    OutOfRange {
        /// Program name.
        program: String,
        /// Hole name.
        hole: String,
        /// Slot index.
        insn: usize,
        /// The value.
        value: i64,
        /// The accepted range, as text.
        range: &'static str,
    },
    /// The hole's slot does not decode (the program was corrupted).
    #[error("program `{program}`: {source}")]
    Decode {
        /// Program name.
        program: String,
        /// The decode failure.
        source: DecodeError,
    },
}

impl Program {
    /// A program with no side tables.
    #[must_use]
    pub fn new(name: &str, insns: Vec<Insn>) -> Program {
        Program { name: name.to_owned(), insns, ..Program::default() }
    }

    /// Decodes all instructions.
    ///
    /// # Errors
    /// The first undecodable slot.
    pub fn instructions(&self) -> Result<Vec<(usize, Instruction)>, DecodeError> {
        decode_all(&self.insns)
    }

    /// The byte encoding of the slots.
    #[must_use]
    pub fn bytes(&self) -> Vec<u8> {
        insns_to_bytes(&self.insns)
    }

    /// The map referenced at slot `insn`, if any.
    #[must_use]
    pub fn map_at(&self, insn: usize) -> Option<&str> {
        self.map_relocs.iter().find(|r| r.insn == insn).map(|r| r.map.as_str())
    }

    /// The hole at slot `insn`, if any.
    #[must_use]
    pub fn hole_at(&self, insn: usize) -> Option<&Hole> {
        self.holes.iter().find(|h| h.insn == insn)
    }

    /// Names of all maps referenced, sorted and deduplicated.
    #[must_use]
    pub fn referenced_maps(&self) -> BTreeSet<&str> {
        self.map_relocs.iter().map(|r| r.map.as_str()).collect()
    }

    /// Label names the ELF writer emits as local symbols and the disassembler
    /// prints: labels at slot 0 (where the function symbol is) are dropped, as
    /// are labels on the second slot of `ld_imm64`.
    #[must_use]
    pub fn label_symbols(&self) -> BTreeMap<usize, &str> {
        let second_slots: BTreeSet<usize> =
            self.insns.iter().enumerate().filter(|(_, i)| i.is_ld_imm64()).map(|(n, _)| n + 1).collect();
        self.labels
            .iter()
            .filter(|(at, _)| **at != 0 && **at < self.insns.len() && !second_slots.contains(at))
            .map(|(at, name)| (*at, name.as_str()))
            .collect()
    }

    /// Checks the side tables against the instructions.
    ///
    /// # Errors
    /// The first [`ProgramError`].
    pub fn validate(&self) -> Result<(), ProgramError> {
        // undecodable slots are the verifier's business; only the slots the
        // side tables point at must decode
        let mut at: BTreeMap<usize, Instruction> = BTreeMap::new();
        let mut pc = 0;
        while pc < self.insns.len() {
            match decode(&self.insns, pc) {
                Ok((i, n)) => {
                    at.insert(pc, i);
                    pc += n;
                }
                Err(_) => pc += 1,
            }
        }
        let mut seen = BTreeSet::new();
        for r in &self.map_relocs {
            if !seen.insert(r.insn) {
                return Err(ProgramError::DuplicateMapReloc { program: self.name.clone(), insn: r.insn });
            }
            match at.get(&r.insn) {
                Some(Instruction::LdImm64 { pseudo: pseudo::NONE | pseudo::MAP_FD, .. }) => {}
                _ => {
                    return Err(ProgramError::BadMapReloc {
                        program: self.name.clone(),
                        insn: r.insn,
                        map: r.map.clone(),
                    });
                }
            }
        }
        for h in &self.holes {
            let ok = match (h.kind, at.get(&h.insn)) {
                (HoleKind::Imm64, Some(Instruction::LdImm64 { pseudo: 0, .. })) => true,
                (HoleKind::Imm32, Some(i)) => imm32_range(i).is_some(),
                _ => false,
            };
            if !ok {
                return Err(ProgramError::BadHole {
                    program: self.name.clone(),
                    hole: h.name.clone(),
                    insn: h.insn,
                    kind: h.kind.name(),
                });
            }
        }
        for (insn, label) in &self.labels {
            if *insn > self.insns.len() {
                return Err(ProgramError::BadLabel { program: self.name.clone(), label: label.clone(), insn: *insn });
            }
        }
        Ok(())
    }

    /// Fills every hole from `values` (extra names are ignored) and removes the
    /// hole records.
    ///
    /// # Errors
    /// A hole without a value, or a value that does not fit its immediate. On
    /// error the program is unchanged.
    pub fn fill_holes(&mut self, values: &BTreeMap<String, i64>) -> Result<(), HoleError> {
        let mut patched = self.insns.clone();
        for h in &self.holes {
            let Some(&value) = values.get(&h.name) else {
                return Err(HoleError::Missing { program: self.name.clone(), hole: h.name.clone() });
            };
            patch(&self.name, &mut patched, h, value)?;
        }
        self.insns = patched;
        self.holes.clear();
        Ok(())
    }

    /// Fills the holes named `name` with `value`; returns how many were filled.
    ///
    /// # Errors
    /// A value that does not fit. On error the program is unchanged.
    pub fn fill_hole(&mut self, name: &str, value: i64) -> Result<usize, HoleError> {
        let mut patched = self.insns.clone();
        let mut n = 0;
        for h in self.holes.iter().filter(|h| h.name == name) {
            patch(&self.name, &mut patched, h, value)?;
            n += 1;
        }
        self.insns = patched;
        self.holes.retain(|h| h.name != name);
        Ok(n)
    }
}

/// The value range an `Imm32` hole on this instruction accepts, or `None` if
/// the instruction has no 32-bit immediate operand.
fn imm32_range(i: &Instruction) -> Option<(i64, i64, &'static str)> {
    const SIGNED: (i64, i64, &str) = (i32::MIN as i64, i32::MAX as i64, "i32: sign-extended");
    const ANY32: (i64, i64, &str) = (i32::MIN as i64, u32::MAX as i64, "i32 or u32");
    match i {
        Instruction::Alu { width, src: Operand::Imm(_), .. } | Instruction::Jmp { width, src: Operand::Imm(_), .. } => {
            Some(if *width == Width::W64 { SIGNED } else { ANY32 })
        }
        Instruction::Store { size, .. } => Some(match size {
            Size::B => (-128, 255, "i8 or u8"),
            Size::H => (-32768, 65535, "i16 or u16"),
            Size::W => ANY32,
            Size::DW => SIGNED,
        }),
        _ => None,
    }
}

fn patch(program: &str, slots: &mut [Insn], h: &Hole, value: i64) -> Result<(), HoleError> {
    let (insn, _) =
        decode(slots, h.insn).map_err(|source| HoleError::Decode { program: program.to_owned(), source })?;
    let out_of_range =
        |range| HoleError::OutOfRange { program: program.to_owned(), hole: h.name.clone(), insn: h.insn, value, range };
    match h.kind {
        HoleKind::Imm64 => {
            slots[h.insn].imm = value as i32;
            if let Some(hi) = slots.get_mut(h.insn + 1) {
                hi.imm = (value >> 32) as i32;
            }
        }
        HoleKind::Imm32 => {
            let Some((lo, hi, range)) = imm32_range(&insn) else {
                return Err(out_of_range("no 32-bit immediate"));
            };
            if value < lo || value > hi {
                return Err(out_of_range(range));
            }
            slots[h.insn].imm = value as u32 as i32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::Reg;

    fn prog_with_hole(i: Instruction, kind: HoleKind) -> Program {
        let mut p = Program::new("p", i.encode().expect("encodes"));
        p.holes.push(Hole { name: "x".into(), insn: 0, kind });
        p
    }

    #[test]
    fn hole_ranges_follow_sign_extension() {
        let mut p = prog_with_hole(Instruction::mov64_imm(Reg::R1, 0), HoleKind::Imm32);
        assert!(matches!(p.fill_hole("x", 0xc000_0202), Err(HoleError::OutOfRange { .. })));
        let mut p = prog_with_hole(Instruction::mov32_imm(Reg::R1, 0), HoleKind::Imm32);
        assert_eq!(p.fill_hole("x", 0xc000_0202), Ok(1));
        assert_eq!(p.insns[0].imm as u32, 0xc000_0202);
        assert!(p.holes.is_empty());
        let mut p = prog_with_hole(Instruction::ld_imm64(Reg::R1, 0), HoleKind::Imm64);
        let values = BTreeMap::from([("x".to_owned(), -2i64)]);
        p.fill_holes(&values).expect("fills");
        assert_eq!(p.instructions().expect("decodes")[0].1, Instruction::ld_imm64(Reg::R1, -2));
    }
}
