//! The `struct __sk_buff` context of tc classifier programs
//! (`include/uapi/linux/bpf.h`) and which fields a `BPF_PROG_TYPE_SCHED_CLS`
//! program may read or write (`tc_cls_act_is_valid_access` and
//! `bpf_skb_is_valid_access` in `net/core/filter.c`).
//!
//! Contract: [`field_at`] and [`check_access`] encode exactly the accesses the
//! kernel allows for tc programs, with one deliberate narrowing: the `sk`,
//! `flow_keys` and `data_meta` pointers are refused (egret never uses them).

/// Offsets of the fields egret uses.
pub mod off {
    /// `len`.
    pub const LEN: i32 = 0;
    /// `pkt_type`.
    pub const PKT_TYPE: i32 = 4;
    /// `mark`.
    pub const MARK: i32 = 8;
    /// `queue_mapping`.
    pub const QUEUE_MAPPING: i32 = 12;
    /// `protocol` (network byte order in the low 16 bits).
    pub const PROTOCOL: i32 = 16;
    /// `vlan_present`.
    pub const VLAN_PRESENT: i32 = 20;
    /// `vlan_tci`.
    pub const VLAN_TCI: i32 = 24;
    /// `vlan_proto`.
    pub const VLAN_PROTO: i32 = 28;
    /// `priority`.
    pub const PRIORITY: i32 = 32;
    /// `ingress_ifindex`.
    pub const INGRESS_IFINDEX: i32 = 36;
    /// `ifindex`.
    pub const IFINDEX: i32 = 40;
    /// `tc_index`.
    pub const TC_INDEX: i32 = 44;
    /// `cb[0]`; `cb[i]` is at `CB + 4 * i`, `i < 5`.
    pub const CB: i32 = 48;
    /// `hash`.
    pub const HASH: i32 = 68;
    /// `tc_classid`.
    pub const TC_CLASSID: i32 = 72;
    /// `data` (a packet pointer).
    pub const DATA: i32 = 76;
    /// `data_end` (the packet end pointer).
    pub const DATA_END: i32 = 80;
    /// `napi_id`.
    pub const NAPI_ID: i32 = 84;
    /// `data_meta`.
    pub const DATA_META: i32 = 140;
    /// `tstamp` (u64).
    pub const TSTAMP: i32 = 152;
    /// `wire_len`.
    pub const WIRE_LEN: i32 = 160;
    /// `gso_segs`.
    pub const GSO_SEGS: i32 = 164;
    /// `gso_size`.
    pub const GSO_SIZE: i32 = 176;
    /// `hwtstamp` (u64).
    pub const HWTSTAMP: i32 = 184;
}

/// `sizeof(struct __sk_buff)`.
pub const SKB_SIZE: usize = 192;

/// What a context field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A number.
    Scalar,
    /// `data`: loads give a packet pointer.
    PktData,
    /// `data_end`: loads give the packet end pointer.
    PktEnd,
}

/// One `__sk_buff` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Name.
    pub name: &'static str,
    /// Offset.
    pub off: i32,
    /// Size in bytes.
    pub size: i32,
    /// Writable by tc programs.
    pub writable: bool,
    /// What loads produce.
    pub kind: FieldKind,
}

const fn f(name: &'static str, off: i32, size: i32, writable: bool) -> Field {
    Field { name, off, size, writable, kind: FieldKind::Scalar }
}

/// The fields tc programs may access.
pub const FIELDS: &[Field] = &[
    f("len", off::LEN, 4, false),
    f("pkt_type", off::PKT_TYPE, 4, false),
    f("mark", off::MARK, 4, true),
    f("queue_mapping", off::QUEUE_MAPPING, 4, true),
    f("protocol", off::PROTOCOL, 4, false),
    f("vlan_present", off::VLAN_PRESENT, 4, false),
    f("vlan_tci", off::VLAN_TCI, 4, false),
    f("vlan_proto", off::VLAN_PROTO, 4, false),
    f("priority", off::PRIORITY, 4, true),
    f("ingress_ifindex", off::INGRESS_IFINDEX, 4, false),
    f("ifindex", off::IFINDEX, 4, false),
    f("tc_index", off::TC_INDEX, 4, true),
    f("cb[0]", off::CB, 4, true),
    f("cb[1]", off::CB + 4, 4, true),
    f("cb[2]", off::CB + 8, 4, true),
    f("cb[3]", off::CB + 12, 4, true),
    f("cb[4]", off::CB + 16, 4, true),
    f("hash", off::HASH, 4, false),
    f("tc_classid", off::TC_CLASSID, 4, true),
    Field { name: "data", off: off::DATA, size: 4, writable: false, kind: FieldKind::PktData },
    Field { name: "data_end", off: off::DATA_END, size: 4, writable: false, kind: FieldKind::PktEnd },
    f("napi_id", off::NAPI_ID, 4, false),
    f("tstamp", off::TSTAMP, 8, true),
    f("wire_len", off::WIRE_LEN, 4, false),
    f("gso_segs", off::GSO_SEGS, 4, false),
    f("gso_size", off::GSO_SIZE, 4, false),
    f("hwtstamp", off::HWTSTAMP, 8, false),
];

/// The field containing byte `off`.
#[must_use]
pub fn field_at(off: i32) -> Option<&'static Field> {
    FIELDS.iter().find(|f| off >= f.off && off < f.off + f.size)
}

/// Why a context access is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtxRefusal {
    /// No field there (or one tc programs cannot see).
    NoField,
    /// Not aligned to its size.
    Misaligned,
    /// Wider than the field, or a narrow access where the kernel wants the full field.
    BadSize,
    /// A write to a read-only field.
    ReadOnly,
}

/// Checks one context access of `size` bytes at `off`; returns the field.
///
/// # Errors
/// The kernel's reason to refuse it.
pub fn check_access(off: i32, size: i32, write: bool) -> Result<&'static Field, CtxRefusal> {
    let field = field_at(off).ok_or(CtxRefusal::NoField)?;
    if off % size != 0 {
        return Err(CtxRefusal::Misaligned);
    }
    if off + size > field.off + field.size {
        return Err(CtxRefusal::BadSize);
    }
    if write {
        if !field.writable {
            return Err(CtxRefusal::ReadOnly);
        }
        if size != field.size {
            return Err(CtxRefusal::BadSize);
        }
    } else if field.kind != FieldKind::Scalar && size != field.size {
        return Err(CtxRefusal::BadSize);
    }
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_offsets_and_rules() {
        assert_eq!(field_at(76).map(|f| f.name), Some("data"));
        assert_eq!(field_at(50).map(|f| f.name), Some("cb[0]"));
        assert!(check_access(off::PROTOCOL, 2, false).is_ok());
        assert_eq!(check_access(off::DATA, 2, false), Err(CtxRefusal::BadSize));
        assert_eq!(check_access(off::LEN, 4, true), Err(CtxRefusal::ReadOnly));
        assert_eq!(check_access(off::MARK, 2, true), Err(CtxRefusal::BadSize));
        assert_eq!(check_access(92, 4, false), Err(CtxRefusal::NoField));
        assert_eq!(check_access(off::MARK + 1, 2, false), Err(CtxRefusal::Misaligned));
    }
}
