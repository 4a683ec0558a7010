//! Abstract values: scalar ranges, register and stack-byte types, the
//! state of one path, and the scalar arithmetic and comparisons on ranges.

use std::fmt;

use super::STACK_SIZE;
use crate::insn::{AluOp, JmpCond, Width, eval_alu};
use crate::maps::MapDef;

/// An unsigned range of a scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Range {
    pub(super) umin: u64,
    pub(super) umax: u64,
}

impl Range {
    pub(super) const UNKNOWN: Range = Range { umin: 0, umax: u64::MAX };
    pub(super) const U32: Range = Range { umin: 0, umax: u32::MAX as u64 };

    pub(super) const fn konst(v: u64) -> Range {
        Range { umin: v, umax: v }
    }

    pub(super) fn bits(n: usize) -> Range {
        if n >= 64 { Range::UNKNOWN } else { Range { umin: 0, umax: (1u64 << n) - 1 } }
    }

    pub(super) fn as_const(self) -> Option<u64> {
        (self.umin == self.umax).then_some(self.umin)
    }

    pub(super) fn covers(self, other: Range) -> bool {
        self.umin <= other.umin && other.umax <= self.umax
    }

    fn trunc32(self) -> Range {
        if self.umax <= u64::from(u32::MAX) { self } else { Range::U32 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Ty {
    Uninit,
    Scalar(Range),
    Ctx,
    Pkt { id: u32, off: i32, range: u32, vmax: u32 },
    PktEnd,
    InvalidPkt { call: usize },
    Stack { off: i32 },
    MapPtr { map: usize },
    MapValueOrNull { map: usize, id: u32 },
    MapValue { map: usize, off: i32, vmax: u32 },
}

impl Ty {
    pub(super) fn is_pointer(self) -> bool {
        !matches!(self, Ty::Uninit | Ty::Scalar(_))
    }

    pub(super) fn describe(self, maps: &[MapDef]) -> String {
        let map_name = |m: usize| maps.get(m).map_or("?", |d| d.name.as_str()).to_owned();
        match self {
            Ty::Uninit => "uninit".into(),
            Ty::Scalar(r) => match r.as_const() {
                Some(v) => format!("scalar {v}"),
                None if r == Range::UNKNOWN => "scalar".into(),
                None => format!("scalar [{}, {}]", r.umin, r.umax),
            },
            Ty::Ctx => "ctx".into(),
            Ty::Pkt { off, range, .. } => format!("pkt(off={off}, range={range})"),
            Ty::PktEnd => "pkt_end".into(),
            Ty::InvalidPkt { .. } => "invalidated pkt".into(),
            Ty::Stack { off } => format!("fp{off:+}"),
            Ty::MapPtr { map } => format!("map_ptr({})", map_name(map)),
            Ty::MapValueOrNull { map, .. } => format!("map_value_or_null({})", map_name(map)),
            Ty::MapValue { map, off, .. } => format!("map_value({}, off={off})", map_name(map)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Byte {
    Uninit,
    Misc,
    Spill,
}

#[derive(Clone, Debug)]
pub(super) struct State {
    pub(super) pc: usize,
    pub(super) regs: [Ty; 11],
    pub(super) bytes: Vec<Byte>,
    pub(super) spills: Vec<Option<Ty>>,
    next_id: u32,
}

impl State {
    pub(super) fn entry() -> State {
        let mut regs = [Ty::Uninit; 11];
        regs[1] = Ty::Ctx;
        regs[10] = Ty::Stack { off: 0 };
        State {
            pc: 0,
            regs,
            bytes: vec![Byte::Uninit; STACK_SIZE as usize],
            spills: vec![None; STACK_SIZE as usize / 8],
            next_id: 1,
        }
    }

    pub(super) fn fresh_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Applies `f` to every register and spilled value.
    pub(super) fn map_values(&mut self, mut f: impl FnMut(Ty) -> Ty) {
        for r in &mut self.regs {
            *r = f(*r);
        }
        for s in self.spills.iter_mut().flatten() {
            *s = f(*s);
        }
    }
}

pub(super) fn trunc(width: Width, r: Range) -> Range {
    match width {
        Width::W64 => r,
        Width::W32 => r.trunc32(),
    }
}

/// Smallest all-ones mask covering `v`.
fn mask_of(v: u64) -> u64 {
    if v == 0 { 0 } else { u64::MAX >> v.leading_zeros() }
}

pub(super) fn scalar_alu(width: Width, op: AluOp, a: Range, b: Range) -> Range {
    if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
        return Range::konst(eval_alu(width, op, x, y));
    }
    let (a, b) = match width {
        Width::W64 => (a, b),
        Width::W32 => (a.trunc32(), b.trunc32()),
    };
    let limit = match width {
        Width::W64 => u64::MAX,
        Width::W32 => u64::from(u32::MAX),
    };
    let bits = if width == Width::W64 { 64 } else { 32 };
    let r = match op {
        AluOp::Add => match (a.umin.checked_add(b.umin), a.umax.checked_add(b.umax)) {
            (Some(lo), Some(hi)) if hi <= limit => Range { umin: lo, umax: hi },
            _ => Range::UNKNOWN,
        },
        AluOp::Sub => {
            if a.umin >= b.umax {
                Range { umin: a.umin - b.umax, umax: a.umax - b.umin }
            } else {
                Range::UNKNOWN
            }
        }
        AluOp::Mul => match (a.umin.checked_mul(b.umin), a.umax.checked_mul(b.umax)) {
            (Some(lo), Some(hi)) if hi <= limit => Range { umin: lo, umax: hi },
            _ => Range::UNKNOWN,
        },
        AluOp::Div => match a.umax.checked_div(b.umin) {
            Some(hi) => Range { umin: a.umin / b.umax.max(1), umax: hi },
            // a zero divisor is possible: the result may be 0
            None => Range { umin: 0, umax: a.umax },
        },
        AluOp::Mod => {
            if b.umin > 0 {
                Range { umin: 0, umax: a.umax.min(b.umax - 1) }
            } else {
                Range { umin: 0, umax: a.umax }
            }
        }
        AluOp::And => Range { umin: 0, umax: a.umax.min(b.umax) },
        AluOp::Or => Range { umin: a.umin.max(b.umin), umax: mask_of(a.umax | b.umax) },
        AluOp::Xor => Range { umin: 0, umax: mask_of(a.umax | b.umax) },
        AluOp::Lsh => match b.as_const() {
            Some(k) if k < bits && a.umax.leading_zeros() as u64 >= k + (64 - bits) => {
                Range { umin: a.umin << k, umax: a.umax << k }
            }
            _ => Range::UNKNOWN,
        },
        AluOp::Rsh => match b.as_const() {
            Some(k) if k < bits => Range { umin: a.umin >> k, umax: a.umax >> k },
            _ => Range { umin: 0, umax: a.umax },
        },
        AluOp::Arsh => {
            let sign_clear = a.umax < (1u64 << (bits - 1));
            match b.as_const() {
                Some(k) if k < bits && sign_clear => Range { umin: a.umin >> k, umax: a.umax >> k },
                _ if sign_clear => Range { umin: 0, umax: a.umax },
                _ => Range::UNKNOWN,
            }
        }
        AluOp::SDiv | AluOp::SMod | AluOp::Mov => Range::UNKNOWN,
    };
    trunc(width, r)
}

/// `Some(true)` if the branch is always taken, `Some(false)` if never.
pub(super) fn scalar_outcome(width: Width, cond: JmpCond, a: Range, b: Range) -> Option<bool> {
    if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
        return Some(cond.eval(width, x, y));
    }
    let (a, b) = match width {
        Width::W64 => (a, b),
        Width::W32 => {
            if a.umax > u64::from(u32::MAX) || b.umax > u64::from(u32::MAX) {
                return None;
            }
            (a, b)
        }
    };
    match cond {
        JmpCond::Eq => (a.umax < b.umin || b.umax < a.umin).then_some(false),
        JmpCond::Ne => (a.umax < b.umin || b.umax < a.umin).then_some(true),
        JmpCond::Gt => {
            if a.umin > b.umax {
                Some(true)
            } else if a.umax <= b.umin {
                Some(false)
            } else {
                None
            }
        }
        JmpCond::Ge => {
            if a.umin >= b.umax {
                Some(true)
            } else if a.umax < b.umin {
                Some(false)
            } else {
                None
            }
        }
        JmpCond::Lt => scalar_outcome(width, JmpCond::Gt, b, a),
        JmpCond::Le => scalar_outcome(width, JmpCond::Ge, b, a),
        _ => None,
    }
}

/// Narrows `(a, b)` under `a cond b`; `None` if impossible.
pub(super) fn refine(cond: JmpCond, a: Range, b: Range) -> Option<(Range, Range)> {
    let mk = |lo: u64, hi: u64| (lo <= hi).then_some(Range { umin: lo, umax: hi });
    Some(match cond {
        JmpCond::Eq => {
            let lo = a.umin.max(b.umin);
            let hi = a.umax.min(b.umax);
            let r = mk(lo, hi)?;
            (r, r)
        }
        JmpCond::Ne => {
            let mut a2 = a;
            let mut b2 = b;
            if let Some(c) = b.as_const() {
                if a.umin == c {
                    a2.umin = a.umin.checked_add(1)?;
                }
                if a.umax == c {
                    a2.umax = a.umax.checked_sub(1)?;
                }
                if a2.umin > a2.umax {
                    return None;
                }
            }
            if let Some(c) = a.as_const() {
                if b.umin == c {
                    b2.umin = b.umin.checked_add(1)?;
                }
                if b.umax == c {
                    b2.umax = b.umax.checked_sub(1)?;
                }
                if b2.umin > b2.umax {
                    return None;
                }
            }
            (a2, b2)
        }
        JmpCond::Gt => {
            (mk(a.umin.max(b.umin.checked_add(1)?), a.umax)?, mk(b.umin, b.umax.min(a.umax.checked_sub(1)?))?)
        }
        JmpCond::Ge => (mk(a.umin.max(b.umin), a.umax)?, mk(b.umin, b.umax.min(a.umax))?),
        JmpCond::Lt => {
            let (nb, na) = refine(JmpCond::Gt, b, a)?;
            (na, nb)
        }
        JmpCond::Le => {
            let (nb, na) = refine(JmpCond::Ge, b, a)?;
            (na, nb)
        }
        // signed and bit tests: no narrowing
        _ => (a, b),
    })
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.umin, self.umax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refine_narrows_unsigned_ranges() {
        let a = Range { umin: 0, umax: 100 };
        let five = Range::konst(5);
        assert_eq!(refine(JmpCond::Gt, a, five), Some((Range { umin: 6, umax: 100 }, five)));
        assert_eq!(refine(JmpCond::Le, a, five), Some((Range { umin: 0, umax: 5 }, five)));
        assert_eq!(refine(JmpCond::Gt, Range::konst(3), five), None);
        assert_eq!(scalar_outcome(Width::W64, JmpCond::Gt, Range { umin: 10, umax: 20 }, five), Some(true));
    }

    #[test]
    fn scalar_ranges_follow_masks_and_shifts() {
        let byte = Range::bits(8);
        let masked = scalar_alu(Width::W64, AluOp::And, byte, Range::konst(15));
        assert_eq!(masked, Range { umin: 0, umax: 15 });
        let shifted = scalar_alu(Width::W64, AluOp::Lsh, masked, Range::konst(2));
        assert_eq!(shifted, Range { umin: 0, umax: 60 });
    }
}
