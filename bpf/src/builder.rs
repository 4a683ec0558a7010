//! [`ProgramBuilder`]: emit instructions, create and bind labels, jump to
//! labels, reference maps by name and leave named holes. Both the text
//! assembler and the compiler's code generator build programs through it.
//!
//! Contract: [`ProgramBuilder::finish`] returns a [`Program`] whose jumps all
//! land on bound labels (offsets computed in slots, range-checked for the
//! 16-bit `off` of `goto`/conditional jumps and the 32-bit `imm` of `gotol`),
//! and whose side tables pass [`Program::validate`]. Emission never fails
//! immediately; every problem is collected and reported by `finish`, all at
//! once.

use std::collections::BTreeMap;

use crate::insn::{EncodeError, Insn, Instruction, JmpCond, Operand, Reg, Width};
use crate::program::{Hole, HoleKind, MapReloc, Program, ProgramError};

/// A jump target inside one builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(usize);

#[derive(Debug, Clone)]
struct LabelInfo {
    name: String,
    bound: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum FixupKind {
    Off16,
    Imm32,
}

#[derive(Debug, Clone, Copy)]
struct Fixup {
    at: usize,
    label: Label,
    kind: FixupKind,
}

/// A problem found while building.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A jump to a label that was never bound.
    #[error("label `{label}` is used at insn {insn} but never bound")]
    UnboundLabel {
        /// Label name.
        label: String,
        /// Slot index of the jump.
        insn: usize,
    },
    /// A label bound twice.
    #[error("label `{label}` is bound twice (insns {first} and {second})")]
    LabelBoundTwice {
        /// Label name.
        label: String,
        /// First binding.
        first: usize,
        /// Second binding.
        second: usize,
    },
    /// A jump whose distance does not fit its offset field.
    #[error("jump at insn {insn} to `{label}` spans {distance} slots, beyond the 16-bit offset (use gotol)")]
    JumpOutOfRange {
        /// Slot index of the jump.
        insn: usize,
        /// Label name.
        label: String,
        /// Distance in slots.
        distance: i64,
    },
    /// An instruction with inconsistent fields.
    #[error("insn {insn}: {source}")]
    Encode {
        /// Slot index.
        insn: usize,
        /// The encode failure.
        source: EncodeError,
    },
    /// A hole on an instruction without an immediate of that kind.
    #[error("insn {insn}: hole `%{hole}` needs an instruction with a {kind} immediate")]
    HoleWithoutImmediate {
        /// Slot index.
        insn: usize,
        /// Hole name.
        hole: String,
        /// Expected kind name.
        kind: &'static str,
    },
    /// The finished program is inconsistent (a builder bug if reached).
    #[error(transparent)]
    Program {
        /// The underlying error.
        #[from]
        source: ProgramError,
    },
}

/// All problems found by [`ProgramBuilder::finish`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct BuildErrors {
    /// Every problem, in emission order.
    pub errors: Vec<BuildError>,
}

/// Builds one program.
#[derive(Debug, Clone)]
pub struct ProgramBuilder {
    name: String,
    insns: Vec<Insn>,
    labels: Vec<LabelInfo>,
    label_names: BTreeMap<String, usize>,
    fixups: Vec<Fixup>,
    map_relocs: Vec<MapReloc>,
    holes: Vec<Hole>,
    errors: Vec<BuildError>,
}

impl ProgramBuilder {
    /// An empty builder for a program called `name`.
    #[must_use]
    pub fn new(name: &str) -> ProgramBuilder {
        ProgramBuilder {
            name: name.to_owned(),
            insns: Vec::new(),
            labels: Vec::new(),
            label_names: BTreeMap::new(),
            fixups: Vec::new(),
            map_relocs: Vec::new(),
            holes: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The slot index the next instruction will get.
    #[must_use]
    pub fn pc(&self) -> usize {
        self.insns.len()
    }

    /// Creates an unbound label. Its name is `name`, or `name_N` if `name` is
    /// already taken, so code generators may reuse descriptive names freely.
    pub fn new_label(&mut self, name: &str) -> Label {
        let mut unique = name.to_owned();
        let mut n = 1;
        while self.label_names.contains_key(&unique) {
            unique = format!("{name}_{n}");
            n += 1;
        }
        let id = self.labels.len();
        self.label_names.insert(unique.clone(), id);
        self.labels.push(LabelInfo { name: unique, bound: None });
        Label(id)
    }

    /// The name of a label.
    #[must_use]
    pub fn label_name(&self, label: Label) -> &str {
        self.labels.get(label.0).map_or("<foreign label>", |l| l.name.as_str())
    }

    /// Binds `label` to the next instruction.
    pub fn bind(&mut self, label: Label) {
        let pc = self.pc();
        let Some(info) = self.labels.get_mut(label.0) else {
            return;
        };
        match info.bound {
            Some(first) => {
                self.errors.push(BuildError::LabelBoundTwice { label: info.name.clone(), first, second: pc })
            }
            None => info.bound = Some(pc),
        }
    }

    /// Creates a label bound to the next instruction.
    pub fn here(&mut self, name: &str) -> Label {
        let l = self.new_label(name);
        self.bind(l);
        l
    }

    /// Appends an instruction; returns its slot index.
    pub fn emit(&mut self, insn: Instruction) -> usize {
        let at = self.pc();
        if let Err(source) = insn.encode_into(&mut self.insns) {
            self.errors.push(BuildError::Encode { insn: at, source });
        }
        at
    }

    /// Appends several instructions; returns the slot index of the first.
    pub fn emit_all(&mut self, insns: &[Instruction]) -> usize {
        let at = self.pc();
        for i in insns {
            self.emit(*i);
        }
        at
    }

    /// Appends raw slots (no checks); returns the index of the first.
    pub fn emit_raw(&mut self, slots: &[Insn]) -> usize {
        let at = self.pc();
        self.insns.extend_from_slice(slots);
        at
    }

    /// `goto label`.
    pub fn ja(&mut self, target: Label) -> usize {
        let at = self.emit(Instruction::ja(0));
        self.fixups.push(Fixup { at, label: target, kind: FixupKind::Off16 });
        at
    }

    /// `gotol label` (32-bit range, cpu v4).
    pub fn ja_long(&mut self, target: Label) -> usize {
        let at = self.emit(Instruction::JaLong { imm: 0 });
        self.fixups.push(Fixup { at, label: target, kind: FixupKind::Imm32 });
        at
    }

    /// `if dst cond src goto label`, 32- or 64-bit.
    pub fn jump(&mut self, width: Width, cond: JmpCond, dst: Reg, src: Operand, target: Label) -> usize {
        let at = self.emit(Instruction::Jmp { width, cond, dst, src, off: 0 });
        self.fixups.push(Fixup { at, label: target, kind: FixupKind::Off16 });
        at
    }

    /// `if dst cond imm goto label` (64-bit; imm is sign-extended).
    pub fn jmp_imm(&mut self, cond: JmpCond, dst: Reg, imm: i32, target: Label) -> usize {
        self.jump(Width::W64, cond, dst, Operand::Imm(imm), target)
    }

    /// `if dst cond src goto label` (64-bit).
    pub fn jmp_reg(&mut self, cond: JmpCond, dst: Reg, src: Reg, target: Label) -> usize {
        self.jump(Width::W64, cond, dst, Operand::Reg(src), target)
    }

    /// `if wdst cond imm goto label` (32-bit: use this for IPv4 addresses).
    pub fn jmp32_imm(&mut self, cond: JmpCond, dst: Reg, imm: i32, target: Label) -> usize {
        self.jump(Width::W32, cond, dst, Operand::Imm(imm), target)
    }

    /// `if wdst cond wsrc goto label`.
    pub fn jmp32_reg(&mut self, cond: JmpCond, dst: Reg, src: Reg, target: Label) -> usize {
        self.jump(Width::W32, cond, dst, Operand::Reg(src), target)
    }

    /// `dst = map[name] ll`: an `ld_imm64` of 0 with a map relocation.
    pub fn ld_map(&mut self, dst: Reg, map: &str) -> usize {
        let at = self.emit(Instruction::ld_imm64(dst, 0));
        self.map_relocs.push(MapReloc { insn: at, map: map.to_owned() });
        at
    }

    /// Emits `insn` and records a hole named `name` on its immediate
    /// (`Imm64` for `ld_imm64`, `Imm32` otherwise). The immediate in `insn`
    /// stays in place until the hole is filled.
    pub fn hole(&mut self, insn: Instruction, name: &str) -> usize {
        let at = self.emit(insn);
        self.add_hole_at(at, name);
        at
    }

    /// Records a hole named `name` on the immediate of the already emitted
    /// instruction at slot `at` (e.g. a conditional jump to a label).
    pub fn add_hole_at(&mut self, at: usize, name: &str) {
        let decoded = crate::insn::decode(&self.insns, at).ok().map(|(i, _)| i);
        let (ok, kind) = match decoded {
            Some(Instruction::LdImm64 { pseudo, .. }) => (pseudo == 0, HoleKind::Imm64),
            Some(
                Instruction::Alu { src: Operand::Imm(_), .. }
                | Instruction::Jmp { src: Operand::Imm(_), .. }
                | Instruction::Store { .. },
            ) => (true, HoleKind::Imm32),
            _ => (false, HoleKind::Imm32),
        };
        if ok {
            self.holes.push(Hole { name: name.to_owned(), insn: at, kind });
        } else {
            self.errors.push(BuildError::HoleWithoutImmediate { insn: at, hole: name.to_owned(), kind: kind.name() });
        }
    }

    /// `wdst = %name`: a 32-bit move whose immediate is a hole (any `u32`).
    pub fn mov32_hole(&mut self, dst: Reg, name: &str) -> usize {
        self.hole(Instruction::mov32_imm(dst, 0), name)
    }

    /// `dst = %name ll`: a 64-bit constant hole.
    pub fn ld_imm64_hole(&mut self, dst: Reg, name: &str) -> usize {
        self.hole(Instruction::ld_imm64(dst, 0), name)
    }

    /// Resolves jumps and returns the program.
    ///
    /// # Errors
    /// Every unbound label, out-of-range jump, encode failure and misplaced hole.
    pub fn finish(self) -> Result<Program, BuildErrors> {
        let ProgramBuilder { name, mut insns, labels, fixups, map_relocs, holes, mut errors, .. } = self;
        for f in &fixups {
            let Some(info) = labels.get(f.label.0) else {
                continue;
            };
            let Some(target) = info.bound else {
                errors.push(BuildError::UnboundLabel { label: info.name.clone(), insn: f.at });
                continue;
            };
            let distance = target as i64 - (f.at as i64 + 1);
            let Some(slot) = insns.get_mut(f.at) else {
                continue;
            };
            match f.kind {
                FixupKind::Off16 => match i16::try_from(distance) {
                    Ok(off) => slot.off = off,
                    Err(_) => {
                        errors.push(BuildError::JumpOutOfRange { insn: f.at, label: info.name.clone(), distance })
                    }
                },
                FixupKind::Imm32 => match i32::try_from(distance) {
                    Ok(imm) => slot.imm = imm,
                    Err(_) => {
                        errors.push(BuildError::JumpOutOfRange { insn: f.at, label: info.name.clone(), distance })
                    }
                },
            }
        }
        let mut label_map = BTreeMap::new();
        for l in &labels {
            if let Some(at) = l.bound {
                label_map.entry(at).or_insert_with(|| l.name.clone());
            }
        }
        let mut program = Program { name, insns, map_relocs, holes, labels: label_map };
        program.map_relocs.sort();
        program.holes.sort_by_key(|h| h.insn);
        if errors.is_empty()
            && let Err(e) = program.validate()
        {
            errors.push(e.into());
        }
        if errors.is_empty() { Ok(program) } else { Err(BuildErrors { errors }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::decode;

    #[test]
    fn forward_and_backward_labels_resolve() {
        let mut b = ProgramBuilder::new("p");
        let out = b.new_label("out");
        b.emit(Instruction::mov64_imm(Reg::R0, 0));
        b.jmp_imm(JmpCond::Eq, Reg::R1, 0, out);
        b.ld_map(Reg::R2, "m");
        b.bind(out);
        b.emit(Instruction::exit());
        let p = b.finish().expect("builds");
        assert_eq!(decode(&p.insns, 1).expect("decodes").0, Instruction::jmp_imm(JmpCond::Eq, Reg::R1, 0, 2));
        assert_eq!(p.map_at(2), Some("m"));
        assert_eq!(p.labels.get(&4).map(String::as_str), Some("out"));
    }

    #[test]
    fn all_errors_are_reported() {
        let mut b = ProgramBuilder::new("p");
        let a = b.new_label("a");
        let c = b.new_label("a");
        assert_eq!(b.label_name(c), "a_1");
        b.ja(a);
        b.ja(c);
        b.hole(Instruction::exit(), "h");
        let e = b.finish().expect_err("fails");
        assert_eq!(e.errors.len(), 3, "{e}");
    }
}
