//! Conditional jumps: feasibility of each side, range refinement, NULL checks
//! of map lookups and packet bounds checks.

use super::values::{Range, State, Ty, refine, scalar_outcome};
use super::{Checker, MAX_PACKET_OFF, Step, VResult, ViolationKind};
use crate::insn::{JmpCond, Operand, Reg, Width, imm_value};

impl Checker<'_> {
    #[expect(clippy::too_many_arguments, reason = "one jump's operands")]
    pub(super) fn branch(
        &self,
        st: &mut State,
        target: usize,
        width: Width,
        cond: JmpCond,
        dst: Reg,
        src: Operand,
        hole: bool,
    ) -> VResult<Step> {
        let d = self.read(st, dst)?;
        let s = match src {
            Operand::Reg(r) => self.read(st, r)?,
            Operand::Imm(_) if hole => Ty::Scalar(match width {
                Width::W64 => Range::UNKNOWN,
                Width::W32 => Range::U32,
            }),
            Operand::Imm(i) => Ty::Scalar(Range::konst(imm_value(width, i))),
        };
        let src_reg = match src {
            Operand::Reg(r) => Some(r),
            Operand::Imm(_) => None,
        };
        let mut taken = st.clone();
        taken.pc = target;
        let fall = st;
        if (d.is_pointer() || s.is_pointer()) && width == Width::W32 {
            return Err(ViolationKind::PointerComparison {
                detail: format!("32-bit comparison of {} and {}", self.describe(d), self.describe(s)),
            });
        }
        let (tk, ft) = match (d, s) {
            (Ty::Scalar(a), Ty::Scalar(b)) => {
                let (a32, b32) = (width == Width::W32, width == Width::W32);
                let _ = b32;
                let fits = !a32 || (a.umax <= u64::from(u32::MAX) && b.umax <= u64::from(u32::MAX));
                let outcome = scalar_outcome(width, cond, a, b);
                let mut t_ok = outcome != Some(false);
                let mut f_ok = outcome != Some(true);
                if fits {
                    if t_ok {
                        match refine(cond, a, b) {
                            Some((na, nb)) => {
                                taken.regs[dst.index()] = Ty::Scalar(na);
                                if let Some(r) = src_reg {
                                    taken.regs[r.index()] = Ty::Scalar(nb);
                                }
                            }
                            None => t_ok = false,
                        }
                    }
                    if f_ok && let Some(neg) = cond.negate() {
                        match refine(neg, a, b) {
                            Some((na, nb)) => {
                                fall.regs[dst.index()] = Ty::Scalar(na);
                                if let Some(r) = src_reg {
                                    fall.regs[r.index()] = Ty::Scalar(nb);
                                }
                            }
                            None => f_ok = false,
                        }
                    }
                }
                (t_ok, f_ok)
            }
            (Ty::MapValueOrNull { id, map }, Ty::Scalar(b)) | (Ty::Scalar(b), Ty::MapValueOrNull { id, map })
                if b.as_const() == Some(0) && matches!(cond, JmpCond::Eq | JmpCond::Ne) =>
            {
                let (null_state, value_state) =
                    if cond == JmpCond::Eq { (&mut taken, &mut *fall) } else { (&mut *fall, &mut taken) };
                mark_null_check(null_state, id, None);
                mark_null_check(value_state, id, Some(map));
                (true, true)
            }
            (Ty::MapValueOrNull { .. }, _) | (_, Ty::MapValueOrNull { .. }) => {
                return Err(ViolationKind::PointerComparison {
                    detail: format!(
                        "{} compared with {}: check a lookup result with `== 0` or `!= 0` first",
                        self.describe(d),
                        self.describe(s)
                    ),
                });
            }
            (Ty::Pkt { .. }, Ty::PktEnd) | (Ty::PktEnd, Ty::Pkt { .. }) => {
                // normalise to "pkt REL end"
                let (pkt, c) = match d {
                    Ty::Pkt { .. } => (d, cond),
                    _ => (s, cond.swap()),
                };
                if let Ty::Pkt { id, off, vmax, .. } = pkt {
                    for (state, rel) in [(&mut taken, Some(c)), (&mut *fall, c.negate())] {
                        let Some(rel) = rel else { continue };
                        let new_range = match rel {
                            JmpCond::Lt if off > 0 => Some(off + 1),
                            JmpCond::Le if off > 0 => Some(off),
                            _ => None,
                        };
                        if let Some(r) = new_range
                            && u64::from(vmax) + off as u64 <= MAX_PACKET_OFF
                        {
                            mark_pkt_range(state, id, r as u32);
                        }
                    }
                }
                (true, true)
            }
            (p, Ty::Scalar(b)) | (Ty::Scalar(b), p)
                if p.is_pointer()
                    && !matches!(p, Ty::InvalidPkt { .. })
                    && b.as_const() == Some(0)
                    && matches!(cond, JmpCond::Eq | JmpCond::Ne) =>
            {
                // a non-NULL pointer is never 0
                (cond == JmpCond::Ne, cond == JmpCond::Eq)
            }
            (Ty::InvalidPkt { call }, _) => {
                return Err(ViolationKind::PacketPointerInvalidated { reg: dst, call });
            }
            (_, Ty::InvalidPkt { call }) => {
                return Err(ViolationKind::PacketPointerInvalidated { reg: src_reg.unwrap_or(dst), call });
            }
            _ => (true, true),
        };
        if !tk && !ft {
            return Ok(Step::Exit);
        }
        Ok(Step::Branch(tk.then(|| Box::new(taken)), ft))
    }
}

fn mark_null_check(st: &mut State, id: u32, map: Option<usize>) {
    st.map_values(|t| match t {
        Ty::MapValueOrNull { id: i, map: m } if i == id => match map {
            Some(_) => Ty::MapValue { map: m, off: 0, vmax: 0 },
            None => Ty::Scalar(Range::konst(0)),
        },
        other => other,
    });
}

fn mark_pkt_range(st: &mut State, id: u32, range: u32) {
    st.map_values(|t| match t {
        Ty::Pkt { id: i, off, range: r, vmax } if i == id => Ty::Pkt { id: i, off, range: r.max(range), vmax },
        other => other,
    });
}
