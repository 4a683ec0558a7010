//! State pruning: when an explored state subsumes a new one at a jump target.

use super::values::{Byte, State, Ty};

/// `old` subsumes `new`: everything safe from `old` is safe from `new`.
pub(super) fn covers(old: &State, new: &State) -> bool {
    // a consistent mapping of old ids to new ids (few entries: a linear list)
    let mut ids: Vec<(u32, u32)> = Vec::new();
    let mut id_ok = |a: u32, b: u32| match ids.iter().find(|(x, _)| *x == a) {
        Some((_, y)) => *y == b,
        None => {
            ids.push((a, b));
            true
        }
    };
    let mut ty_covers = |o: Ty, n: Ty| -> bool {
        match (o, n) {
            (Ty::Uninit, _) => true,
            (Ty::Scalar(a), Ty::Scalar(b)) => a.covers(b),
            (Ty::Pkt { id: i1, off: o1, range: r1, vmax: v1 }, Ty::Pkt { id: i2, off: o2, range: r2, vmax: v2 }) => {
                o1 == o2 && r1 <= r2 && v1 >= v2 && id_ok(i1, i2)
            }
            (Ty::MapValueOrNull { map: m1, id: i1 }, Ty::MapValueOrNull { map: m2, id: i2 }) => {
                m1 == m2 && id_ok(i1 + 0x8000_0000, i2)
            }
            (Ty::MapValue { map: m1, off: o1, vmax: v1 }, Ty::MapValue { map: m2, off: o2, vmax: v2 }) => {
                m1 == m2 && o1 == o2 && v1 >= v2
            }
            (a, b) => a == b,
        }
    };
    for (o, n) in old.regs.iter().zip(&new.regs) {
        if !ty_covers(*o, *n) {
            return false;
        }
    }
    for (o, n) in old.bytes.iter().zip(&new.bytes) {
        match (o, n) {
            (Byte::Uninit, _) | (Byte::Misc, Byte::Misc) => {}
            (Byte::Spill, Byte::Spill) => {}
            (Byte::Misc, Byte::Spill) => {}
            _ => return false,
        }
    }
    for (i, (o, n)) in old.spills.iter().zip(&new.spills).enumerate() {
        if let Some(o) = o {
            let old_bytes_spill = old.bytes[i * 8] == Byte::Spill;
            if !old_bytes_spill {
                continue;
            }
            match n {
                Some(n) if ty_covers(*o, *n) => {}
                _ => return false,
            }
        } else if let Some(n) = n {
            // old had misc bytes here: new must be a scalar spill
            if n.is_pointer() && old.bytes[i * 8] != Byte::Uninit {
                return false;
            }
        }
    }
    true
}
