//! The kernel helpers egret knows: ids, names, argument and return types.
//!
//! This one table is used by the assembler (helper names in `call`), the
//! verifier (argument checks, clobbers, packet-pointer invalidation) and the
//! interpreter (which helpers it implements). Ids are the kernel's
//! `enum bpf_func_id` values (`include/uapi/linux/bpf.h`); the argument types
//! follow each helper's `bpf_func_proto` in `net/core/filter.c` and
//! `kernel/bpf/helpers.c`.

/// Helper ids.
pub mod id {
    /// `bpf_map_lookup_elem`.
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    /// `bpf_map_update_elem`.
    pub const MAP_UPDATE_ELEM: i32 = 2;
    /// `bpf_map_delete_elem`.
    pub const MAP_DELETE_ELEM: i32 = 3;
    /// `bpf_ktime_get_ns`.
    pub const KTIME_GET_NS: i32 = 5;
    /// `bpf_get_prandom_u32`.
    pub const GET_PRANDOM_U32: i32 = 7;
    /// `bpf_get_smp_processor_id`.
    pub const GET_SMP_PROCESSOR_ID: i32 = 8;
    /// `bpf_skb_store_bytes`.
    pub const SKB_STORE_BYTES: i32 = 9;
    /// `bpf_tail_call`.
    pub const TAIL_CALL: i32 = 12;
    /// `bpf_l3_csum_replace`.
    pub const L3_CSUM_REPLACE: i32 = 10;
    /// `bpf_l4_csum_replace`.
    pub const L4_CSUM_REPLACE: i32 = 11;
    /// `bpf_skb_get_tunnel_key`.
    pub const SKB_GET_TUNNEL_KEY: i32 = 20;
    /// `bpf_skb_set_tunnel_key`.
    pub const SKB_SET_TUNNEL_KEY: i32 = 21;
    /// `bpf_redirect`.
    pub const REDIRECT: i32 = 23;
    /// `bpf_skb_load_bytes`.
    pub const SKB_LOAD_BYTES: i32 = 26;
    /// `bpf_csum_diff`.
    pub const CSUM_DIFF: i32 = 28;
    /// `bpf_skb_change_type`.
    pub const SKB_CHANGE_TYPE: i32 = 32;
    /// `bpf_get_hash_recalc`.
    pub const GET_HASH_RECALC: i32 = 34;
    /// `bpf_csum_update`.
    pub const CSUM_UPDATE: i32 = 40;
    /// `bpf_ringbuf_output`.
    pub const RINGBUF_OUTPUT: i32 = 130;
    /// `bpf_redirect_neigh`.
    pub const REDIRECT_NEIGH: i32 = 152;
}

/// What a helper argument register must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgType {
    /// Any initialized value.
    Anything,
    /// The program context (`struct __sk_buff *`).
    Ctx,
    /// A map pointer from `ld_imm64` of a map.
    MapPtr,
    /// A pointer to `key_size` initialized bytes of the map in R1.
    MapKey,
    /// A pointer to `value_size` initialized bytes of the map in R1.
    MapValue,
    /// A pointer to initialized memory, sized by the next argument.
    MemRead,
    /// Like [`ArgType::MemRead`], or NULL when the size is 0.
    MemReadOrNull,
    /// A pointer to writable memory (may be uninitialized), sized by the next argument.
    MemWrite,
    /// A known positive size.
    ConstSize,
    /// A known size, possibly zero.
    ConstSizeOrZero,
}

/// What a helper returns in R0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetType {
    /// A scalar.
    Integer,
    /// A pointer to a value of the map in R1, or NULL.
    MapValueOrNull,
    /// Nothing: R0 is uninitialized after the call (`RET_VOID`).
    Void,
}

/// A helper's prototype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelperSpec {
    /// `enum bpf_func_id` value.
    pub id: i32,
    /// Name without the `bpf_` prefix.
    pub name: &'static str,
    /// Types of R1.. in order; registers past the list are not read.
    pub args: &'static [ArgType],
    /// Return type.
    pub ret: RetType,
    /// True if the helper may move packet data (`bpf_helper_changes_pkt_data`):
    /// every packet pointer is invalid after the call.
    pub changes_pkt_data: bool,
}

use ArgType as A;

/// Every helper egret knows, by id.
pub const HELPERS: &[HelperSpec] = &[
    HelperSpec {
        id: id::MAP_LOOKUP_ELEM,
        name: "map_lookup_elem",
        args: &[A::MapPtr, A::MapKey],
        ret: RetType::MapValueOrNull,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::MAP_UPDATE_ELEM,
        name: "map_update_elem",
        args: &[A::MapPtr, A::MapKey, A::MapValue, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::MAP_DELETE_ELEM,
        name: "map_delete_elem",
        args: &[A::MapPtr, A::MapKey],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::KTIME_GET_NS,
        name: "ktime_get_ns",
        args: &[],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::GET_PRANDOM_U32,
        name: "get_prandom_u32",
        args: &[],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::GET_SMP_PROCESSOR_ID,
        name: "get_smp_processor_id",
        args: &[],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::SKB_STORE_BYTES,
        name: "skb_store_bytes",
        args: &[A::Ctx, A::Anything, A::MemRead, A::ConstSize, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: true,
    },
    HelperSpec {
        id: id::TAIL_CALL,
        name: "tail_call",
        // R2 must be a `prog_array` map (and only this helper may use one);
        // when the call succeeds it does not return, when it fails
        // execution continues with R0 uninitialized.
        args: &[A::Ctx, A::MapPtr, A::Anything],
        ret: RetType::Void,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::L3_CSUM_REPLACE,
        name: "l3_csum_replace",
        args: &[A::Ctx, A::Anything, A::Anything, A::Anything, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: true,
    },
    HelperSpec {
        id: id::L4_CSUM_REPLACE,
        name: "l4_csum_replace",
        args: &[A::Ctx, A::Anything, A::Anything, A::Anything, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: true,
    },
    HelperSpec {
        id: id::SKB_GET_TUNNEL_KEY,
        name: "skb_get_tunnel_key",
        args: &[A::Ctx, A::MemWrite, A::ConstSize, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::SKB_SET_TUNNEL_KEY,
        name: "skb_set_tunnel_key",
        args: &[A::Ctx, A::MemRead, A::ConstSize, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::REDIRECT,
        name: "redirect",
        args: &[A::Anything, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::SKB_LOAD_BYTES,
        name: "skb_load_bytes",
        args: &[A::Ctx, A::Anything, A::MemWrite, A::ConstSize],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::CSUM_DIFF,
        name: "csum_diff",
        args: &[A::MemReadOrNull, A::ConstSizeOrZero, A::MemReadOrNull, A::ConstSizeOrZero, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::SKB_CHANGE_TYPE,
        name: "skb_change_type",
        args: &[A::Ctx, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::GET_HASH_RECALC,
        name: "get_hash_recalc",
        args: &[A::Ctx],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::CSUM_UPDATE,
        name: "csum_update",
        args: &[A::Ctx, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::RINGBUF_OUTPUT,
        name: "ringbuf_output",
        // R1 must be a `ringbuf` map (and only this helper may use one,
        // `check_map_func_compatibility`); copies R3 bytes into a new record,
        // or fails with -EAGAIN/-ENOSPC when the ring is full (it never waits)
        args: &[A::MapPtr, A::MemRead, A::ConstSize, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
    HelperSpec {
        id: id::REDIRECT_NEIGH,
        name: "redirect_neigh",
        args: &[A::Anything, A::MemReadOrNull, A::ConstSizeOrZero, A::Anything],
        ret: RetType::Integer,
        changes_pkt_data: false,
    },
];

/// The helper with this id.
#[must_use]
pub fn by_id(id: i32) -> Option<&'static HelperSpec> {
    HELPERS.iter().find(|h| h.id == id)
}

/// The helper with this name, with or without the `bpf_` prefix.
#[must_use]
pub fn by_name(name: &str) -> Option<&'static HelperSpec> {
    let name = name.strip_prefix("bpf_").unwrap_or(name);
    HELPERS.iter().find(|h| h.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_names_resolve() {
        for (i, h) in HELPERS.iter().enumerate() {
            assert!(HELPERS[i + 1..].iter().all(|o| o.id != h.id), "{}", h.name);
            assert_eq!(by_name(h.name).map(|x| x.id), Some(h.id));
            assert!(h.args.len() <= 5);
        }
        assert_eq!(by_name("bpf_redirect_neigh").map(|h| h.id), Some(152));
    }
}
