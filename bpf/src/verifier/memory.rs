//! Memory accesses: stack, packet, context and map value loads and stores.

use super::values::{Byte, Range, State, Ty};
use super::{Checker, STACK_SIZE, VResult, ViolationKind};
use crate::insn::{Reg, Size};
use crate::skb::{self, CtxRefusal, FieldKind};

impl Checker<'_> {
    pub(super) fn load(&self, st: &State, base_reg: Reg, base: Ty, off: i64, size: Size) -> VResult<Ty> {
        let n = size.bytes() as i64;
        match base {
            Ty::Stack { off: so } => {
                let a = i64::from(so) + off;
                check_stack(a, n)?;
                let i = (a + i64::from(STACK_SIZE)) as usize;
                let bytes = &st.bytes[i..i + n as usize];
                if bytes.contains(&Byte::Uninit) {
                    return Err(ViolationKind::StackUninitRead { off: a, size: n as u64 });
                }
                let slot = i / 8;
                if n == 8
                    && bytes.iter().all(|b| *b == Byte::Spill)
                    && let Some(t) = st.spills[slot]
                {
                    return Ok(t);
                }
                if bytes.contains(&Byte::Spill)
                    && let Some(t) = st.spills[slot]
                    && t.is_pointer()
                {
                    return Err(ViolationKind::BadSpill {
                        detail: format!("partial read of a spilled pointer ({})", self.describe(t)),
                    });
                }
                Ok(Ty::Scalar(Range::bits(size.bytes() * 8)))
            }
            Ty::Pkt { off: po, range, .. } => {
                let a = i64::from(po) + off;
                if a < 0 || a + n > i64::from(range) {
                    return Err(ViolationKind::PacketOutOfRange { off: a, end: a + n, range });
                }
                Ok(Ty::Scalar(Range::bits(size.bytes() * 8)))
            }
            Ty::Ctx => {
                let field = skb::check_access(off as i32, n as i32, false).map_err(|r| ctx_err(off, n, r))?;
                Ok(match field.kind {
                    FieldKind::Scalar => Ty::Scalar(Range::bits(size.bytes() * 8)),
                    FieldKind::PktData => Ty::Pkt { id: 0, off: 0, range: 0, vmax: 0 },
                    FieldKind::PktEnd => Ty::PktEnd,
                })
            }
            Ty::MapValue { map, off: mo, vmax } => {
                self.check_map_value(map, i64::from(mo) + off, i64::from(vmax), n)?;
                Ok(Ty::Scalar(Range::bits(size.bytes() * 8)))
            }
            Ty::MapValueOrNull { .. } => Err(ViolationKind::NullableDeref { reg: base_reg }),
            Ty::InvalidPkt { call } => Err(ViolationKind::PacketPointerInvalidated { reg: base_reg, call }),
            other => Err(ViolationKind::InvalidMemAccess { reg: base_reg, found: self.describe(other) }),
        }
    }

    fn check_map_value(&self, map: usize, a: i64, vmax: i64, n: i64) -> VResult<()> {
        let m = self.maps.get(map);
        let vs = m.map_or(0, |m| m.value_size);
        if a < 0 || a + vmax + n > i64::from(vs) {
            return Err(ViolationKind::MapValueOutOfBounds {
                map: m.map_or_else(String::new, |m| m.name.clone()),
                off: a,
                end: a + vmax + n,
                value_size: vs,
            });
        }
        Ok(())
    }

    #[expect(clippy::too_many_arguments, reason = "one store's operands")]
    pub(super) fn store(
        &self,
        st: &mut State,
        base_reg: Reg,
        base: Ty,
        off: i64,
        size: Size,
        v: Ty,
        src: Option<Reg>,
    ) -> VResult<()> {
        let n = size.bytes() as i64;
        let leak =
            |target| ViolationKind::PointerLeak { reg: src.unwrap_or(base_reg), found: self.describe(v), target };
        match base {
            Ty::Stack { off: so } => {
                let a = i64::from(so) + off;
                check_stack(a, n)?;
                let i = (a + i64::from(STACK_SIZE)) as usize;
                let slot = i / 8;
                if n == 8 {
                    st.spills[slot] = Some(v);
                    for b in &mut st.bytes[i..i + 8] {
                        *b = Byte::Spill;
                    }
                } else {
                    if v.is_pointer() {
                        return Err(ViolationKind::BadSpill {
                            detail: format!(
                                "a pointer ({}) can be spilled only as an aligned 8-byte store",
                                self.describe(v)
                            ),
                        });
                    }
                    // what remains of a partially overwritten spill is plain data
                    for b in &mut st.bytes[slot * 8..slot * 8 + 8] {
                        if *b == Byte::Spill {
                            *b = Byte::Misc;
                        }
                    }
                    st.spills[slot] = None;
                    for b in &mut st.bytes[i..i + n as usize] {
                        *b = Byte::Misc;
                    }
                }
                Ok(())
            }
            Ty::Pkt { off: po, range, .. } => {
                let a = i64::from(po) + off;
                if a < 0 || a + n > i64::from(range) {
                    return Err(ViolationKind::PacketOutOfRange { off: a, end: a + n, range });
                }
                if v.is_pointer() {
                    return Err(leak("the packet"));
                }
                Ok(())
            }
            Ty::Ctx => {
                skb::check_access(off as i32, n as i32, true).map_err(|r| ctx_err(off, n, r))?;
                if v.is_pointer() {
                    return Err(leak("the context"));
                }
                Ok(())
            }
            Ty::MapValue { map, off: mo, vmax } => {
                self.check_map_value(map, i64::from(mo) + off, i64::from(vmax), n)?;
                if v.is_pointer() {
                    return Err(leak("a map value"));
                }
                Ok(())
            }
            Ty::MapValueOrNull { .. } => Err(ViolationKind::NullableDeref { reg: base_reg }),
            Ty::InvalidPkt { call } => Err(ViolationKind::PacketPointerInvalidated { reg: base_reg, call }),
            other => Err(ViolationKind::InvalidMemAccess { reg: base_reg, found: self.describe(other) }),
        }
    }
}

fn ctx_err(off: i64, n: i64, r: CtxRefusal) -> ViolationKind {
    ViolationKind::CtxAccess {
        off,
        size: n as u64,
        reason: match r {
            CtxRefusal::NoField => "no such field for tc programs",
            CtxRefusal::Misaligned => "misaligned",
            CtxRefusal::BadSize => "wrong size for the field",
            CtxRefusal::ReadOnly => "field is read-only",
        },
    }
}

fn check_stack(a: i64, n: i64) -> VResult<()> {
    if a < -i64::from(STACK_SIZE) || a + n > 0 {
        return Err(ViolationKind::StackOutOfBounds { off: a, size: n as u64 });
    }
    if a.rem_euclid(n) != 0 {
        return Err(ViolationKind::StackMisaligned { off: a, size: n as u64 });
    }
    Ok(())
}
