//! Helper calls: argument types against the helper prototypes, memory
//! arguments, return values, and packet pointers a helper invalidates.

use super::values::{Byte, Range, State, Ty};
use super::{Checker, MAX_VAR_SIZE, STACK_SIZE, VResult, ViolationKind};
use crate::helpers::{self, ArgType, RetType};
use crate::insn::Reg;
use crate::maps::MapKind;

impl Checker<'_> {
    pub(super) fn call(&self, st: &mut State, pc: usize, id: i32) -> VResult<()> {
        let Some(spec) = helpers::by_id(id) else {
            return Err(ViolationKind::UnknownHelper { id });
        };
        let mut map: Option<usize> = None;
        for (i, arg) in spec.args.iter().enumerate() {
            let reg = Reg::ALL[i + 1];
            let t = st.regs[reg.index()];
            let bad = |expected: &str, found: String| ViolationKind::HelperArg {
                helper: spec.name,
                reg,
                expected: expected.to_owned(),
                found,
            };
            if t == Ty::Uninit {
                return Err(bad("an initialized value", "uninit".into()));
            }
            if let Ty::InvalidPkt { call } = t {
                return Err(ViolationKind::PacketPointerInvalidated { reg, call });
            }
            match arg {
                ArgType::Anything => {}
                ArgType::Ctx => {
                    if t != Ty::Ctx {
                        return Err(bad("ctx", self.describe(t)));
                    }
                }
                ArgType::MapPtr => match t {
                    Ty::MapPtr { map: m } => {
                        // `check_map_func_compatibility`: prog arrays go with
                        // bpf_tail_call only, and bpf_tail_call with nothing else
                        let prog_array = self.maps.get(m).is_some_and(|d| d.kind == MapKind::ProgArray);
                        let tail_call = spec.id == helpers::id::TAIL_CALL;
                        if tail_call && !prog_array {
                            return Err(bad("a prog_array map", self.describe(t)));
                        }
                        if !tail_call && prog_array {
                            return Err(bad("a map other than a prog_array (use tail_call)", self.describe(t)));
                        }
                        // ring buffers go with bpf_ringbuf_output only, and it with nothing else
                        let ringbuf = self.maps.get(m).is_some_and(|d| d.kind == MapKind::RingBuf);
                        let output = spec.id == helpers::id::RINGBUF_OUTPUT;
                        if output && !ringbuf {
                            return Err(bad("a ringbuf map", self.describe(t)));
                        }
                        if !output && ringbuf {
                            return Err(bad("a map other than a ringbuf (use ringbuf_output)", self.describe(t)));
                        }
                        map = Some(m);
                    }
                    _ => return Err(bad("map_ptr", self.describe(t))),
                },
                ArgType::MapKey | ArgType::MapValue => {
                    let Some(m) = map.and_then(|m| self.maps.get(m)) else {
                        return Err(bad("a map in r1", "none".into()));
                    };
                    let size = if *arg == ArgType::MapKey { m.key_size } else { m.value_size };
                    self.helper_mem(st, reg, t, u64::from(size), false)
                        .map_err(|e| bad(&format!("a pointer to {size} readable bytes"), e))?;
                }
                ArgType::MemRead | ArgType::MemReadOrNull | ArgType::MemWrite => {
                    let size_reg = Reg::ALL[i + 2];
                    let size = match st.regs[size_reg.index()] {
                        Ty::Scalar(r) => r.umax,
                        other => {
                            return Err(ViolationKind::HelperArg {
                                helper: spec.name,
                                reg: size_reg,
                                expected: "a size".into(),
                                found: self.describe(other),
                            });
                        }
                    };
                    if *arg == ArgType::MemReadOrNull
                        && let Ty::Scalar(r) = t
                        && r.as_const() == Some(0)
                        && size == 0
                    {
                        continue;
                    }
                    let write = *arg == ArgType::MemWrite;
                    let what = if write { "writable" } else { "readable" };
                    self.helper_mem(st, reg, t, size, write)
                        .map_err(|e| bad(&format!("a pointer to {size} {what} bytes"), e))?;
                }
                ArgType::ConstSize | ArgType::ConstSizeOrZero => match t {
                    Ty::Scalar(r) => {
                        if *arg == ArgType::ConstSize && r.umin == 0 {
                            return Err(bad("a positive size", self.describe(t)));
                        }
                        if r.umax >= MAX_VAR_SIZE {
                            return Err(bad("a bounded size", self.describe(t)));
                        }
                    }
                    _ => return Err(bad("a size", self.describe(t))),
                },
            }
        }
        for r in 1..=5 {
            st.regs[r] = Ty::Uninit;
        }
        st.regs[0] = match spec.ret {
            RetType::Void => Ty::Uninit,
            RetType::Integer => Ty::Scalar(Range::UNKNOWN),
            RetType::MapValueOrNull => match map {
                Some(m) => Ty::MapValueOrNull { map: m, id: st.fresh_id() },
                None => Ty::Scalar(Range::UNKNOWN),
            },
        };
        if spec.changes_pkt_data {
            st.map_values(|t| match t {
                Ty::Pkt { .. } | Ty::PktEnd => Ty::InvalidPkt { call: pc },
                other => other,
            });
        }
        Ok(())
    }

    /// Checks a helper memory argument; on a write, marks stack bytes initialized.
    fn helper_mem(&self, st: &mut State, reg: Reg, t: Ty, size: u64, write: bool) -> Result<(), String> {
        match t {
            Ty::Stack { off } => {
                let start = i64::from(off);
                let end = start + size as i64;
                if start < -i64::from(STACK_SIZE) || end > 0 {
                    return Err(format!("fp{start:+} with {size} bytes is outside the stack"));
                }
                for a in start..end {
                    let i = (a + i64::from(STACK_SIZE)) as usize;
                    if write {
                        st.bytes[i] = Byte::Misc;
                        st.spills[i / 8] = None;
                    } else if st.bytes[i] == Byte::Uninit {
                        return Err(format!("uninitialized stack at fp{a:+}"));
                    }
                }
                if write {
                    // bytes of partially overwritten spill slots become misc
                    for a in (start..end).step_by(1) {
                        let slot = ((a + i64::from(STACK_SIZE)) / 8) as usize;
                        for b in 0..8 {
                            if st.bytes[slot * 8 + b] == Byte::Spill {
                                st.bytes[slot * 8 + b] = Byte::Misc;
                            }
                        }
                    }
                }
                Ok(())
            }
            Ty::Pkt { off, range, .. } => {
                let end = i64::from(off) + size as i64;
                if off < 0 || end > i64::from(range) {
                    Err(format!("packet bytes [{off}, {end}) beyond the verified range {range}"))
                } else {
                    Ok(())
                }
            }
            Ty::MapValue { map, off, vmax } => {
                let vs = self.maps.get(map).map_or(0, |m| m.value_size);
                let end = i64::from(off) + i64::from(vmax) + size as i64;
                if off < 0 || end > i64::from(vs) {
                    Err(format!("map value bytes beyond value_size {vs}"))
                } else {
                    Ok(())
                }
            }
            Ty::MapValueOrNull { .. } => Err(format!("{reg} may be NULL")),
            other => Err(self.describe(other)),
        }
    }
}
