//! One instruction on one path: the dispatch over instruction kinds, ALU
//! operations on scalar ranges, and pointer arithmetic.

use super::values::{Range, State, Ty, scalar_alu, trunc};
use super::{Checker, MAX_PACKET_OFF, MAX_VAR_SIZE, Step, VResult, ViolationKind};
use crate::disasm::alu_op_text;
use crate::insn::{
    AluOp, AtomicOp, CallTarget, EndBits, EndOp, Instruction, Operand, Reg, Width, eval_end, eval_movsx, eval_neg,
    imm_value, pseudo,
};
use crate::program::HoleKind;

impl Checker<'_> {
    pub(super) fn step(&self, st: &mut State, pc: usize, insn: &Instruction) -> VResult<Step> {
        let hole = self.holes.get(&pc).copied();
        match *insn {
            Instruction::Alu { width, op, dst, src } => {
                let s = match src {
                    Operand::Reg(r) => self.read(st, r)?,
                    Operand::Imm(_) if hole.is_some() => Ty::Scalar(match width {
                        Width::W64 => Range::UNKNOWN,
                        Width::W32 => Range::U32,
                    }),
                    Operand::Imm(i) => Ty::Scalar(Range::konst(imm_value(width, i))),
                };
                let result = if op == AluOp::Mov {
                    match (width, s) {
                        (Width::W64, t) => t,
                        (Width::W32, Ty::Scalar(r)) => Ty::Scalar(trunc(Width::W32, r)),
                        (Width::W32, t) => {
                            return Err(ViolationKind::PointerArithmetic {
                                detail: format!("32-bit move of a pointer ({})", self.describe(t)),
                            });
                        }
                    }
                } else {
                    let d = self.read(st, dst)?;
                    self.alu(st, width, op, d, s)?
                };
                st.regs[dst.index()] = result;
                Ok(Step::Next(1))
            }
            Instruction::MovSx { width, ext, dst, src, .. } => {
                let s = self.scalar_operand(st, src, "movsx")?;
                st.regs[dst.index()] = Ty::Scalar(match s.as_const() {
                    Some(v) => Range::konst(eval_movsx(width, ext, v)),
                    None => trunc(width, Range::UNKNOWN),
                });
                Ok(Step::Next(1))
            }
            Instruction::Neg { width, dst } => {
                let s = self.scalar_operand(st, dst, "neg")?;
                st.regs[dst.index()] = Ty::Scalar(match s.as_const() {
                    Some(v) => Range::konst(eval_neg(width, v)),
                    None => trunc(width, Range::UNKNOWN),
                });
                Ok(Step::Next(1))
            }
            Instruction::End { op, bits, dst } => {
                let s = self.scalar_operand(st, dst, "byte swap")?;
                st.regs[dst.index()] = Ty::Scalar(match s.as_const() {
                    Some(v) => Range::konst(eval_end(op, bits, v)),
                    None => match (op, bits) {
                        (EndOp::ToLe, EndBits::B16) => Range { umin: 0, umax: s.umax.min(0xffff) },
                        (EndOp::ToLe, EndBits::B32) => Range { umin: 0, umax: s.umax.min(u64::from(u32::MAX)) },
                        (EndOp::ToLe, EndBits::B64) => s,
                        (_, EndBits::B16) => Range::bits(16),
                        (_, EndBits::B32) => Range::bits(32),
                        (_, EndBits::B64) => Range::UNKNOWN,
                    },
                });
                Ok(Step::Next(1))
            }
            Instruction::Ja { off } => Ok(Step::Jump((pc as i64 + 1 + i64::from(off)) as usize)),
            Instruction::JaLong { imm } => Ok(Step::Jump((pc as i64 + 1 + i64::from(imm)) as usize)),
            Instruction::Jmp { width, cond, dst, src, off } => {
                let target = (pc as i64 + 1 + i64::from(off)) as usize;
                self.branch(st, target, width, cond, dst, src, hole.is_some())
            }
            Instruction::Call(CallTarget::Helper(id)) => {
                self.call(st, pc, id)?;
                Ok(Step::Next(1))
            }
            Instruction::Call(_) => Err(ViolationKind::UnsupportedCall { what: "non-helper call" }),
            Instruction::Exit => match st.regs[0] {
                Ty::Scalar(_) => Ok(Step::Exit),
                t => Err(ViolationKind::BadReturn { found: self.describe(t) }),
            },
            Instruction::LdImm64 { dst, pseudo: p, imm } => {
                let t = if let Some(m) = self.reloc_map.get(&pc) {
                    match m {
                        Some(map) => Ty::MapPtr { map: *map },
                        None => {
                            return Err(ViolationKind::UnresolvedMap {
                                map: self.program.map_at(pc).unwrap_or("?").to_owned(),
                            });
                        }
                    }
                } else if p != pseudo::NONE {
                    return Err(ViolationKind::UnsupportedPseudo { pseudo: p });
                } else if hole == Some(HoleKind::Imm64) {
                    Ty::Scalar(Range::UNKNOWN)
                } else {
                    Ty::Scalar(Range::konst(imm as u64))
                };
                st.regs[dst.index()] = t;
                Ok(Step::Next(2))
            }
            Instruction::LdAbs { size, .. } | Instruction::LdInd { size, .. } => {
                if st.regs[6] != Ty::Ctx {
                    return Err(ViolationKind::LdAbsWithoutCtx { found: self.describe(st.regs[6]) });
                }
                if let Instruction::LdInd { src, .. } = *insn {
                    self.scalar_operand(st, src, "legacy packet load index")?;
                }
                for r in 1..=5 {
                    st.regs[r] = Ty::Uninit;
                }
                st.regs[0] = Ty::Scalar(Range::bits(size.bytes() * 8));
                Ok(Step::Next(1))
            }
            Instruction::Load { size, dst, src, off } => {
                let base = self.read(st, src)?;
                let v = self.load(st, src, base, i64::from(off), size)?;
                st.regs[dst.index()] = v;
                Ok(Step::Next(1))
            }
            Instruction::LoadSx { size, dst, src, off } => {
                let base = self.read(st, src)?;
                let v = self.load(st, src, base, i64::from(off), size)?;
                if v.is_pointer() {
                    return Err(ViolationKind::BadSpill { detail: "sign-extending load of a spilled pointer".into() });
                }
                st.regs[dst.index()] = Ty::Scalar(Range::UNKNOWN);
                Ok(Step::Next(1))
            }
            Instruction::Store { size, dst, off, imm } => {
                let base = self.read(st, dst)?;
                if base == Ty::Ctx {
                    return Err(ViolationKind::CtxAccess {
                        off: i64::from(off),
                        size: size.bytes() as u64,
                        reason: "immediate stores into the context are not allowed",
                    });
                }
                let v = if hole.is_some() {
                    Ty::Scalar(Range::UNKNOWN)
                } else {
                    Ty::Scalar(Range::konst(i64::from(imm) as u64))
                };
                self.store(st, dst, base, i64::from(off), size, v, None)?;
                Ok(Step::Next(1))
            }
            Instruction::StoreReg { size, dst, src, off } => {
                let base = self.read(st, dst)?;
                let v = self.read(st, src)?;
                self.store(st, dst, base, i64::from(off), size, v, Some(src))?;
                Ok(Step::Next(1))
            }
            Instruction::Atomic { size, op, dst, src, off } => {
                let base = self.read(st, dst)?;
                let v = self.read(st, src)?;
                if v.is_pointer() {
                    return Err(ViolationKind::PointerLeak {
                        reg: src,
                        found: self.describe(v),
                        target: "memory (atomic)",
                    });
                }
                match base {
                    Ty::Stack { .. } | Ty::MapValue { .. } => {}
                    Ty::MapValueOrNull { .. } => return Err(ViolationKind::NullableDeref { reg: dst }),
                    other => {
                        return Err(ViolationKind::BadAtomic { found: self.describe(other) });
                    }
                }
                let old = self.load(st, dst, base, i64::from(off), size)?;
                if old.is_pointer() {
                    return Err(ViolationKind::BadSpill { detail: "atomic operation on a spilled pointer".into() });
                }
                if op == AtomicOp::CmpXchg {
                    self.scalar_operand(st, Reg::R0, "cmpxchg")?;
                }
                self.store(st, dst, base, i64::from(off), size, Ty::Scalar(Range::UNKNOWN), None)?;
                let fetched = Ty::Scalar(Range::bits(size.bytes() * 8));
                if op == AtomicOp::CmpXchg {
                    st.regs[0] = fetched;
                } else if op.fetches() {
                    st.regs[src.index()] = fetched;
                }
                Ok(Step::Next(1))
            }
        }
    }

    fn scalar_operand(&self, st: &State, r: Reg, what: &str) -> VResult<Range> {
        match self.read(st, r)? {
            Ty::Scalar(s) => Ok(s),
            t => {
                Err(ViolationKind::PointerArithmetic { detail: format!("{what} on {r} holding {}", self.describe(t)) })
            }
        }
    }

    fn alu(&self, st: &mut State, width: Width, op: AluOp, d: Ty, s: Ty) -> VResult<Ty> {
        let refuse = |d: Ty, s: Ty| ViolationKind::PointerArithmetic {
            detail: format!(
                "{} {} {} ({}-bit)",
                self.describe(d),
                alu_op_text(op),
                self.describe(s),
                if width == Width::W64 { 64 } else { 32 }
            ),
        };
        match (d, s) {
            (Ty::Scalar(a), Ty::Scalar(b)) => Ok(Ty::Scalar(scalar_alu(width, op, a, b))),
            (p, Ty::Scalar(b)) if p.is_pointer() => {
                if width != Width::W64 || !matches!(op, AluOp::Add | AluOp::Sub) {
                    return Err(refuse(d, s));
                }
                self.ptr_add(st, p, b, op == AluOp::Sub).ok_or_else(|| refuse(d, s))?
            }
            (Ty::Scalar(b), p) if p.is_pointer() => {
                if width != Width::W64 || op != AluOp::Add {
                    return Err(refuse(d, s));
                }
                self.ptr_add(st, p, b, false).ok_or_else(|| refuse(d, s))?
            }
            (Ty::Pkt { .. }, Ty::Pkt { .. }) | (Ty::Stack { .. }, Ty::Stack { .. })
                if width == Width::W64 && op == AluOp::Sub =>
            {
                Ok(Ty::Scalar(Range::UNKNOWN))
            }
            _ => Err(refuse(d, s)),
        }
    }

    /// `p ± b`; `None` if the pointer kind allows no arithmetic.
    fn ptr_add(&self, st: &mut State, p: Ty, b: Range, neg: bool) -> Option<VResult<Ty>> {
        let konst = b.as_const().map(|v| if neg { (v as i64).wrapping_neg() } else { v as i64 });
        let too_far = |detail: String| Err(ViolationKind::PointerArithmetic { detail });
        Some(match p {
            Ty::Pkt { id, off, range, vmax } => match konst {
                Some(c) => {
                    let new = i64::from(off) + c;
                    if new.unsigned_abs() > MAX_PACKET_OFF {
                        too_far(format!("packet pointer offset {new} out of range"))
                    } else {
                        Ok(Ty::Pkt { id, off: new as i32, range, vmax })
                    }
                }
                None if neg => too_far("subtracting a variable from a packet pointer".into()),
                None => {
                    let total = u64::from(vmax).saturating_add(b.umax);
                    if b.umax > MAX_PACKET_OFF || total > MAX_PACKET_OFF {
                        too_far(format!(
                            "variable offset up to {} added to a packet pointer (bound it to {MAX_PACKET_OFF})",
                            b.umax
                        ))
                    } else {
                        Ok(Ty::Pkt { id: st.fresh_id(), off, range: 0, vmax: total as u32 })
                    }
                }
            },
            Ty::Stack { off } => match konst {
                Some(c) if (i64::from(off) + c).unsigned_abs() < MAX_VAR_SIZE => {
                    Ok(Ty::Stack { off: (i64::from(off) + c) as i32 })
                }
                Some(c) => too_far(format!("stack pointer offset {} out of range", i64::from(off) + c)),
                None => too_far("variable offset added to a stack pointer".into()),
            },
            Ty::MapValue { map, off, vmax } => {
                let value_size = u64::from(self.maps.get(map).map_or(0, |m| m.value_size));
                match konst {
                    Some(c) if (i64::from(off) + c).unsigned_abs() < MAX_VAR_SIZE => {
                        Ok(Ty::MapValue { map, off: (i64::from(off) + c) as i32, vmax })
                    }
                    Some(c) => too_far(format!("map value offset {} out of range", i64::from(off) + c)),
                    None if neg => too_far("subtracting a variable from a map value pointer".into()),
                    None => {
                        let total = u64::from(vmax).saturating_add(b.umax);
                        if total > value_size {
                            too_far(format!("variable offset up to {} beyond value_size {value_size}", b.umax))
                        } else {
                            Ok(Ty::MapValue { map, off, vmax: total as u32 })
                        }
                    }
                }
            }
            _ => return None,
        })
    }
}
