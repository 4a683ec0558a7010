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
//!
//! Long jumps ([`ProgramBuilder::long_jumps`], off by default): a jump whose
//! distance does not fit the 16-bit `off` is rewritten instead of refused
//! (branch relaxation, as assemblers do for short/long branches):
//! - `goto L` becomes `gotol L` (same slot; `BPF_JMP32 | BPF_JA` with the
//!   offset in `imm`, kernel ≥ 6.4, commit 4cd58e9af8b9 "bpf: Support new
//!   32bit offset jmp instruction");
//! - `if a cond b goto L` becomes `if a !cond b goto +1; gotol L` (one slot
//!   more), or for `&` (no negation) `if a & b goto +1; goto +1; gotol L`
//!   (two more).
//!
//! Inserted slots move everything after them: labels, map references, holes
//! and relative jumps and calls emitted without a label are moved with their
//! instructions (a jump keeps its target instruction), and
//! [`ProgramBuilder::finish_mapped`] returns the [`SlotMap`] from emitted to
//! final slot indices for annotations kept outside the builder. Relaxation
//! repeats until every jump fits (a long jump only grows distances, so it
//! ends); the result is the same for the same emission.

use std::collections::BTreeMap;

use crate::insn::{CallTarget, EncodeError, Insn, Instruction, JmpCond, Operand, Reg, Width, decode};
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

/// Where a jump goes while long jumps are laid out.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// A bound label (a slot of the emitted program).
    Label(usize),
    /// A relative jump emitted without a label: its target slot.
    Slot(usize),
}

/// A jump being laid out: its emitted slot, target and extra slots.
#[derive(Debug, Clone, Copy)]
struct Jump {
    at: usize,
    target: Target,
    kind: FixupKind,
    /// A conditional jump's width, condition and operands (`None` for `goto`/`gotol`).
    cond: Option<(Width, JmpCond, Reg, Operand)>,
    /// Slots inserted after it (0 while it is short; 0 also for `goto` made `gotol`).
    long: bool,
}

impl Jump {
    fn extra(&self) -> usize {
        match (self.long, self.cond) {
            (false, _) | (true, None) => 0,
            (true, Some((_, cond, _, _))) if cond.negate().is_some() => 1,
            (true, Some(_)) => 2,
        }
    }
}

/// Emitted slot index → final slot index, after long jumps were inserted
/// ([`ProgramBuilder::finish_mapped`]). The identity when nothing moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// `(emitted slot of a relaxed conditional jump, slots inserted after it
    /// and every earlier one)`, sorted by slot.
    inserted: Vec<(usize, usize)>,
}

impl SlotMap {
    fn new(jumps: &[Jump]) -> SlotMap {
        let mut v: Vec<(usize, usize)> = jumps.iter().filter(|j| j.extra() > 0).map(|j| (j.at, j.extra())).collect();
        v.sort_unstable();
        let mut total = 0;
        for (_, n) in &mut v {
            total += *n;
            *n = total;
        }
        SlotMap { inserted: v }
    }

    /// The final index of the instruction emitted at `emitted` (or of the
    /// position a label bound there refers to).
    #[must_use]
    pub fn map(&self, emitted: usize) -> usize {
        let before = self.inserted.partition_point(|(at, _)| *at < emitted);
        emitted + before.checked_sub(1).map_or(0, |i| self.inserted[i].1)
    }

    /// Slots inserted in total.
    #[must_use]
    pub fn inserted(&self) -> usize {
        self.inserted.last().map_or(0, |(_, n)| *n)
    }

    /// Number of conditional jumps that got a `gotol` trampoline.
    #[must_use]
    pub fn trampolines(&self) -> usize {
        self.inserted.len()
    }
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
    long_jumps: bool,
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
            long_jumps: false,
        }
    }

    /// Whether jumps beyond the 16-bit offset are rewritten with `gotol`
    /// (see the module documentation) instead of refused. Needs a kernel
    /// ≥ 6.4 for programs that end up containing a `gotol`.
    #[must_use]
    pub fn long_jumps(mut self, on: bool) -> ProgramBuilder {
        self.long_jumps = on;
        self
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
        self.finish_mapped().map(|(p, _)| p)
    }

    /// [`ProgramBuilder::finish`], with the map from emitted to final slot
    /// indices (which differ only where long jumps inserted slots).
    ///
    /// # Errors
    /// As [`ProgramBuilder::finish`].
    pub fn finish_mapped(self) -> Result<(Program, SlotMap), BuildErrors> {
        let ProgramBuilder { name, insns, labels, fixups, map_relocs, holes, mut errors, long_jumps, .. } = self;
        let mut jumps = Vec::with_capacity(fixups.len());
        for f in &fixups {
            let Some(info) = labels.get(f.label.0) else {
                continue;
            };
            let Some(target) = info.bound else {
                errors.push(BuildError::UnboundLabel { label: info.name.clone(), insn: f.at });
                continue;
            };
            jumps.push(Jump { at: f.at, target: Target::Label(target), kind: f.kind, cond: None, long: false });
        }
        if long_jumps {
            add_relative_jumps(&insns, &mut jumps);
            for j in &mut jumps {
                j.cond = match decode(&insns, j.at) {
                    Ok((Instruction::Jmp { width, cond, dst, src, .. }, _)) => Some((width, cond, dst, src)),
                    _ => None,
                };
            }
            relax(&mut jumps);
        }
        let map = SlotMap::new(&jumps);
        let mut out = Vec::with_capacity(insns.len() + map.inserted());
        let by_at: BTreeMap<usize, &Jump> = jumps.iter().map(|j| (j.at, j)).collect();
        let name_of = |j: &Jump| match j.target {
            Target::Label(t) => labels.iter().find(|l| l.bound == Some(t)).map_or_else(String::new, |l| l.name.clone()),
            Target::Slot(t) => format!("+{t}"),
        };
        for (old, slot) in insns.iter().enumerate() {
            let Some(j) = by_at.get(&old) else {
                out.push(*slot);
                continue;
            };
            let at = out.len();
            let target = match j.target {
                Target::Label(t) | Target::Slot(t) => map.map(t) as i64,
            };
            let far = |from: usize| target - (from as i64 + 1);
            let out_of_range = |distance| BuildError::JumpOutOfRange { insn: old, label: name_of(j), distance };
            match (j.kind, j.long, j.cond) {
                (FixupKind::Off16, false, _) => match i16::try_from(far(at)) {
                    Ok(off) => out.push(Insn { off, ..*slot }),
                    Err(_) => {
                        errors.push(out_of_range(far(at)));
                        out.push(*slot);
                    }
                },
                (FixupKind::Imm32, _, _) | (FixupKind::Off16, true, None) => match i32::try_from(far(at)) {
                    Ok(imm) => out.push(match j.kind {
                        FixupKind::Imm32 => Insn { imm, ..*slot },
                        FixupKind::Off16 => long_ja(imm),
                    }),
                    Err(_) => {
                        errors.push(out_of_range(far(at)));
                        out.push(*slot);
                    }
                },
                (FixupKind::Off16, true, Some((width, cond, dst, src))) => {
                    // the trampoline: skip the gotol when the condition fails
                    let short = match cond.negate() {
                        Some(neg) => vec![Instruction::Jmp { width, cond: neg, dst, src, off: 1 }],
                        None => vec![Instruction::Jmp { width, cond, dst, src, off: 1 }, Instruction::ja(1)],
                    };
                    for i in short {
                        if let Err(source) = i.encode_into(&mut out) {
                            errors.push(BuildError::Encode { insn: old, source });
                        }
                    }
                    let from = out.len();
                    match i32::try_from(far(from)) {
                        Ok(imm) => out.push(long_ja(imm)),
                        Err(_) => errors.push(out_of_range(far(from))),
                    }
                }
            }
        }
        let mut label_map = BTreeMap::new();
        for l in &labels {
            if let Some(at) = l.bound {
                label_map.entry(map.map(at)).or_insert_with(|| l.name.clone());
            }
        }
        let map_relocs = map_relocs.into_iter().map(|r| MapReloc { insn: map.map(r.insn), ..r }).collect();
        let holes = holes.into_iter().map(|h| Hole { insn: map.map(h.insn), ..h }).collect();
        let mut program = Program { name, insns: out, map_relocs, holes, labels: label_map };
        program.map_relocs.sort();
        program.holes.sort_by_key(|h| h.insn);
        if errors.is_empty()
            && let Err(e) = program.validate()
        {
            errors.push(e.into());
        }
        if errors.is_empty() { Ok((program, map)) } else { Err(BuildErrors { errors }) }
    }
}

/// `gotol +imm` as a slot.
fn long_ja(imm: i32) -> Insn {
    Instruction::JaLong { imm }.encode().map_or_else(|_| Insn::default(), |v| v[0])
}

/// Adds the relative jumps and BPF-to-BPF calls emitted without a label
/// (`emit(Instruction::ja(3))`)
/// whose target is inside the program, so that they keep their target when
/// slots are inserted.
fn add_relative_jumps(insns: &[Insn], jumps: &mut Vec<Jump>) {
    let fixed: std::collections::BTreeSet<usize> = jumps.iter().map(|j| j.at).collect();
    let mut pc = 0;
    while pc < insns.len() {
        let Ok((insn, n)) = decode(insns, pc) else {
            pc += 1;
            continue;
        };
        let off = match insn {
            Instruction::Call(CallTarget::Local(imm)) => Some(i64::from(imm)),
            _ => insn.jump_offset(),
        };
        if let Some(off) = off.filter(|_| !fixed.contains(&pc)) {
            let t = pc as i64 + 1 + off;
            if let Ok(t) = usize::try_from(t)
                && t <= insns.len()
            {
                let kind = if matches!(insn, Instruction::JaLong { .. } | Instruction::Call(_)) {
                    FixupKind::Imm32
                } else {
                    FixupKind::Off16
                };
                jumps.push(Jump { at: pc, target: Target::Slot(t), kind, cond: None, long: false });
            }
        }
        pc += n;
    }
}

/// Marks every 16-bit jump whose distance, with the slots the jumps already
/// marked insert, does not fit; repeats until nothing changes.
fn relax(jumps: &mut [Jump]) {
    loop {
        let map = SlotMap::new(jumps);
        let mut changed = false;
        for j in jumps.iter_mut().filter(|j| !j.long && matches!(j.kind, FixupKind::Off16)) {
            let target = match j.target {
                Target::Label(t) | Target::Slot(t) => map.map(t) as i64,
            };
            if i16::try_from(target - (map.map(j.at) as i64 + 1)).is_err() {
                j.long = true;
                changed = true;
            }
        }
        if !changed {
            return;
        }
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
