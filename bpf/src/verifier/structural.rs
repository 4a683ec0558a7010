//! Invariants 1–6: decoding, relocations, jump targets, per-instruction
//! static checks and the shape of the control-flow graph.

use super::{Checker, MAX_INSNS, ViolationKind};
use crate::helpers;
use crate::insn::{AluOp, AtomicOp, CallTarget, Instruction, Operand, Reg, Width, decode, pseudo};

impl Checker<'_> {
    /// Invariants 1–6. Returns whether the CFG is sound enough to explore.
    pub(super) fn structural(&mut self) -> bool {
        let n = self.program.insns.len();
        let mut explore = true;
        if n == 0 {
            self.report(0, ViolationKind::FallsOffEnd);
            return false;
        }
        if n > MAX_INSNS {
            self.report(0, ViolationKind::TooManyInsns { count: n, limit: MAX_INSNS });
            return false;
        }
        self.decoded = vec![None; n];
        let mut second_slot = vec![false; n];
        let mut pc = 0;
        while pc < n {
            match decode(&self.program.insns, pc) {
                Ok((insn, len)) => {
                    self.decoded[pc] = Some((insn, len));
                    if len == 2 && pc + 1 < n {
                        second_slot[pc + 1] = true;
                    }
                    pc += len;
                }
                Err(e) => {
                    self.report(pc, ViolationKind::Decode { reason: e.to_string() });
                    explore = false;
                    pc += 1;
                }
            }
        }
        // relocations
        for r in &self.program.map_relocs {
            let ok =
                matches!(self.decoded.get(r.insn), Some(Some((Instruction::LdImm64 { pseudo: 0 | 1, imm: 0, .. }, _))));
            if !ok {
                self.report(r.insn, ViolationKind::UnresolvedMap { map: r.map.clone() });
                explore = false;
                continue;
            }
            let idx = self.maps.iter().position(|m| m.name == r.map);
            if idx.is_none() {
                self.report(r.insn, ViolationKind::UnresolvedMap { map: r.map.clone() });
            }
            self.reloc_map.insert(r.insn, idx);
        }
        // per-instruction checks and successors
        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
        #[expect(
            clippy::needless_range_loop,
            reason = "the body reports through &mut self, which an iterator over self.decoded would borrow"
        )]
        for pc in 0..n {
            let Some((insn, len)) = self.decoded[pc] else {
                continue;
            };
            self.check_static(pc, &insn);
            let mut targets = Vec::new();
            if let Some(off) = insn.jump_offset() {
                let t = pc as i64 + 1 + off;
                if t < 0 || t >= n as i64 {
                    self.report(pc, ViolationKind::JumpOutOfRange { target: t });
                    explore = false;
                } else if second_slot[t as usize] {
                    self.report(pc, ViolationKind::JumpIntoLdImm64 { target: t as usize });
                    explore = false;
                } else {
                    targets.push(t as usize);
                    self.prune_points.insert(t as usize);
                }
            }
            if !insn.is_terminator() {
                if pc + len >= n {
                    self.report(pc, ViolationKind::FallsOffEnd);
                    explore = false;
                } else {
                    targets.push(pc + len);
                }
            }
            succ[pc] = targets;
        }
        if !explore {
            return false;
        }
        // DFS for back-edges and reachability
        let mut color = vec![0u8; n]; // 0 white, 1 grey, 2 black
        let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
        color[0] = 1;
        let mut back = Vec::new();
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&t) = succ[node].get(*next) {
                *next += 1;
                match color[t] {
                    0 => {
                        color[t] = 1;
                        stack.push((t, 0));
                    }
                    1 => back.push((node, t)),
                    _ => {}
                }
            } else {
                color[node] = 2;
                stack.pop();
            }
        }
        for (from, to) in &back {
            self.report(*from, ViolationKind::BackEdge { target: *to });
        }
        let mut prev_unreachable = false;
        for (pc, c) in color.iter().enumerate() {
            if self.decoded[pc].is_none() {
                continue;
            }
            let unreachable = *c == 0;
            if unreachable && !prev_unreachable {
                self.report(pc, ViolationKind::Unreachable);
            }
            prev_unreachable = unreachable;
        }
        back.is_empty()
    }

    fn check_static(&mut self, pc: usize, insn: &Instruction) {
        match *insn {
            Instruction::Alu { width, op, src: Operand::Imm(imm), .. } => {
                let bits = if width == Width::W64 { 64 } else { 32 };
                if matches!(op, AluOp::Lsh | AluOp::Rsh | AluOp::Arsh)
                    && !self.holes.contains_key(&pc)
                    && (imm < 0 || imm >= bits)
                {
                    self.report(pc, ViolationKind::InvalidShift { amount: imm });
                }
                if matches!(op, AluOp::Div | AluOp::SDiv | AluOp::Mod | AluOp::SMod)
                    && imm == 0
                    && !self.holes.contains_key(&pc)
                {
                    self.report(pc, ViolationKind::DivByZero);
                }
            }
            Instruction::Call(CallTarget::Helper(id)) if helpers::by_id(id).is_none() => {
                self.report(pc, ViolationKind::UnknownHelper { id });
            }
            Instruction::Call(CallTarget::Local(_)) => {
                self.report(pc, ViolationKind::UnsupportedCall { what: "BPF-to-BPF call" })
            }
            Instruction::Call(CallTarget::Kfunc(_)) => {
                self.report(pc, ViolationKind::UnsupportedCall { what: "kfunc" });
            }
            Instruction::LdImm64 { pseudo: p, .. } if p != pseudo::NONE && !self.reloc_map.contains_key(&pc) => {
                self.report(pc, ViolationKind::UnsupportedPseudo { pseudo: p });
            }
            _ => {}
        }
        if writes_r10(insn) {
            self.report(pc, ViolationKind::FramePointerWrite);
        }
    }
}

fn writes_r10(insn: &Instruction) -> bool {
    match *insn {
        Instruction::Alu { dst, .. }
        | Instruction::MovSx { dst, .. }
        | Instruction::Neg { dst, .. }
        | Instruction::End { dst, .. }
        | Instruction::LdImm64 { dst, .. }
        | Instruction::Load { dst, .. }
        | Instruction::LoadSx { dst, .. } => dst == Reg::R10,
        Instruction::Atomic { op, src, .. } => op.fetches() && op != AtomicOp::CmpXchg && src == Reg::R10,
        _ => false,
    }
}
