//! Every byte contract egret's programs share with the loader, the agent and
//! the kernel, defined once: each map's key and value layout, each map's
//! kind and size, and the kernel constants (tc verdicts, helper flags,
//! ethertypes, header offsets, `struct bpf_tunnel_key`…).
//!
//! From these tables come:
//! - the Rust offsets and sizes ([`Field`], each struct module's `SIZE`) the
//!   code generator emits and the encoders/decoders use ([`Field::get`],
//!   [`Field::put`]);
//! - the gateway templates' assembler constants and `.map` declarations
//!   ([`asm_prelude`], prepended to every template by
//!   [`crate::templates::Template::source`]): the `.equ` names the `.s`
//!   files use are the `asm` names below;
//! - the BTF key and value types of every map ([`MapLayout`], used by
//!   [`crate::btf::maps_btf`]), so `bpftool map dump` prints field names;
//! - the [`MapDef`]s of the templates and of the classifier's maps.
//!
//! `__sk_buff` offsets live in [`crate::skb`] (their own table, with the
//! verifier's access rules); [`asm_prelude`] names them `SKB_<FIELD>`.
//!
//! Byte order: `U*` fields are little-endian (host order on every target
//! egret supports), `Be*` fields network order (as in the packet). Padding is
//! zero.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::maps::{BPF_F_NO_PREALLOC, MapDef, MapKind};

/// The wire type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `u8`.
    U8,
    /// `u16`, host order.
    U16,
    /// `u32`, host order.
    U32,
    /// `u64`, host order.
    U64,
    /// `u16`, network order.
    Be16,
    /// `u32`, network order.
    Be32,
    /// `u8[N]`.
    Bytes(usize),
    /// `N` records of a struct.
    Records(&'static Struct, usize),
}

impl Ty {
    /// Size in bytes.
    #[must_use]
    pub const fn size(self) -> usize {
        match self {
            Ty::U8 => 1,
            Ty::U16 | Ty::Be16 => 2,
            Ty::U32 | Ty::Be32 => 4,
            Ty::U64 => 8,
            Ty::Bytes(n) => n,
            Ty::Records(s, n) => s.size * n,
        }
    }
}

/// One field of a struct layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Name (a C identifier: the BTF member name).
    pub name: &'static str,
    /// Offset in bytes.
    pub offset: usize,
    /// Wire type.
    pub ty: Ty,
    /// The `.equ` name of the offset in the gateway templates, if they use it.
    pub asm: Option<&'static str>,
}

impl Field {
    /// One past the last byte.
    #[must_use]
    pub const fn end(self) -> usize {
        self.offset + self.ty.size()
    }

    /// The field's bytes in `b`.
    #[must_use]
    pub fn bytes(self, b: &[u8]) -> Option<&[u8]> {
        b.get(self.offset..self.end())
    }

    /// The number in `b` (integer types, in the field's byte order).
    #[must_use]
    pub fn get(self, b: &[u8]) -> Option<u64> {
        let s = self.bytes(b)?;
        let mut le = [0u8; 8];
        match self.ty {
            Ty::U8 | Ty::U16 | Ty::U32 | Ty::U64 => le[..s.len()].copy_from_slice(s),
            Ty::Be16 | Ty::Be32 => {
                for (d, x) in le.iter_mut().zip(s.iter().rev()) {
                    *d = *x;
                }
            }
            Ty::Bytes(_) | Ty::Records(..) => return None,
        }
        Some(u64::from_le_bytes(le))
    }

    /// [`Field::get`] of a field of at most 32 bits.
    #[must_use]
    pub fn get_u32(self, b: &[u8]) -> Option<u32> {
        self.get(b).and_then(|v| u32::try_from(v).ok())
    }

    /// An IPv4 address: network order for `Be32`, host order for `U32`.
    #[must_use]
    pub fn ipv4(self, b: &[u8]) -> Option<Ipv4Addr> {
        self.get_u32(b).map(Ipv4Addr::from)
    }

    /// Writes `v` (truncated to the field) into `b` in the field's byte order.
    ///
    /// # Panics
    /// If `b` is shorter than the field's end (a caller bug: buffers come from
    /// [`Struct::zeroed`]).
    pub fn put(self, b: &mut [u8], v: u64) {
        let n = self.ty.size();
        let le = v.to_le_bytes();
        let dst = &mut b[self.offset..self.offset + n];
        match self.ty {
            Ty::Be16 | Ty::Be32 => {
                for (d, x) in dst.iter_mut().zip(le[..n].iter().rev()) {
                    *d = *x;
                }
            }
            _ => dst.copy_from_slice(&le[..n.min(8)]),
        }
    }

    /// Writes an IPv4 address ([`Field::ipv4`]'s byte order).
    pub fn put_ipv4(self, b: &mut [u8], ip: Ipv4Addr) {
        self.put(b, u64::from(u32::from(ip)));
    }

    /// A node address ([`NODE_ADDR`]): IPv6, or IPv4 when stored as
    /// `::ffff:a.b.c.d`; all zero reads as `0.0.0.0` (no node: this one, or any).
    #[must_use]
    pub fn node(self, b: &[u8]) -> Option<IpAddr> {
        let a: [u8; 16] = self.bytes(b)?.try_into().ok()?;
        let a = Ipv6Addr::from(a);
        Some(if a.is_unspecified() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { a.to_canonical() })
    }

    /// Writes a node address ([`Field::node`]'s encoding; an unspecified
    /// address of either family is all zero).
    pub fn put_node(self, b: &mut [u8], ip: IpAddr) {
        let a = match ip {
            _ if ip.is_unspecified() => Ipv6Addr::UNSPECIFIED,
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        b[self.offset..self.end()].copy_from_slice(&a.octets());
    }

    /// The same bytes read as a narrower type (a union's IPv4 member).
    #[must_use]
    pub const fn as_ty(self, ty: Ty) -> Field {
        Field { ty, asm: None, ..self }
    }

    /// The field of record `i` of a `Records` field (offsets of the record's
    /// own field `f`).
    #[must_use]
    pub const fn record(self, i: usize, f: Field) -> Field {
        let size = match self.ty {
            Ty::Records(s, _) => s.size,
            _ => 0,
        };
        Field { offset: self.offset + i * size + f.offset, asm: None, ..f }
    }
}

/// A struct layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Struct {
    /// BTF name (a C identifier).
    pub name: &'static str,
    /// Size in bytes.
    pub size: usize,
    /// The `.equ` name of the size in the gateway templates, if they use it.
    pub asm_size: Option<&'static str>,
    /// Written to BTF as `unsigned int` rather than a struct (the key of an
    /// array must be an INT for the kernel).
    pub scalar: bool,
    /// Fields by offset.
    pub fields: &'static [Field],
}

impl Struct {
    /// A zeroed buffer of the struct's size.
    #[must_use]
    pub fn zeroed(&self) -> Vec<u8> {
        vec![0; self.size]
    }

    /// Whether `b` has exactly the struct's size.
    #[must_use]
    pub fn fits(&self, b: &[u8]) -> bool {
        b.len() == self.size
    }

    /// Compile-time check: fields in order, inside the struct, not overlapping.
    const fn check(&self) {
        let mut at = 0;
        let mut i = 0;
        while i < self.fields.len() {
            let f = self.fields[i];
            assert!(f.offset >= at, "fields overlap or are out of order");
            at = f.end();
            i += 1;
        }
        assert!(at <= self.size, "a field ends past the struct");
        assert!(!self.scalar || (self.size == 4 && self.fields.len() == 1));
    }
}

macro_rules! opt {
    () => {
        None
    };
    ($x:literal) => {
        Some($x)
    };
}

/// A node's underlay address in a map: 16 bytes, network order, an IPv6
/// address or an IPv4 one mapped (`::ffff:a.b.c.d`, [`NODE_V4_PREFIX_LE`] in
/// its third word); all zero for "no node" ([`Field::node`],
/// [`Field::put_node`]). The gateway templates turn it into a tunnel key of
/// its family and back (`bpf-templates/macros.s`: `node_from_key`,
/// `key_from_node`).
pub const NODE_ADDR: Ty = Ty::Bytes(16);

/// Defines struct layouts: a module per struct with a [`Field`] constant per
/// field, `SIZE` and `LAYOUT`, checked at compile time.
macro_rules! structs {
    ($(
        $(#[$m:meta])*
        mod $module:ident = $btf:literal, size($size:expr) $(, asm $asm_size:literal)? $(, scalar $scalar:literal)? {
            $( $(#[$fm:meta])* $fconst:ident = $fname:literal @ $off:expr, $ty:expr $(, $fasm:literal)?; )*
        }
    )*) => {
        $(
            $(#[$m])*
            pub mod $module {
                #[allow(unused_imports)]
                use super::*;
                $( $(#[$fm])* pub const $fconst: Field = Field { name: $fname, offset: $off, ty: $ty, asm: opt!($($fasm)?) }; )*
                /// Size in bytes.
                pub const SIZE: usize = $size;
                /// The layout.
                pub const LAYOUT: Struct = Struct {
                    name: $btf,
                    size: SIZE,
                    asm_size: opt!($($asm_size)?),
                    scalar: structs!(@scalar $($scalar)?),
                    fields: &[$($fconst),*],
                };
                const _: () = LAYOUT.check();
            }
        )*
        /// Every struct layout above.
        pub const STRUCTS: &[&Struct] = &[$(&$module::LAYOUT),*];
    };
    (@scalar) => { false };
    (@scalar $x:literal) => { $x };
}

structs! {
    /// A `u32` array index (the key of every array map).
    mod index = "egret_index", size(4), scalar true {
        INDEX = "index" @ 0, Ty::U32;
    }

    /// `{u64 packets, u64 bytes}`: the per-CPU counters of `egret_reasons`,
    /// `egret_policy_stats` and `egret_gw_stats` (bytes = `skb->len`).
    mod counter = "egret_counter", size(16), asm "ST_SIZE" {
        PACKETS = "packets" @ 0, Ty::U64, "ST_PACKETS";
        BYTES = "bytes" @ 8, Ty::U64, "ST_BYTES";
    }

    /// A program in a `PROG_ARRAY` (written by the loader; no BTF types).
    mod prog_fd = "egret_prog_fd", size(4), scalar true {
        FD = "fd" @ 0, Ty::U32;
    }

    /// The key of `egret_dst_v4`: `{u32 prefixlen = 32 + len, be32 class, u8 addr[4]}`.
    mod dst_v4_key = "egret_dst_v4_key", size(12) {
        PREFIXLEN = "prefixlen" @ 0, Ty::U32;
        CLASS = "class" @ 4, Ty::Be32;
        ADDR = "addr" @ 8, Ty::Bytes(4);
    }

    /// The key of `egret_dst_v6`: `{u32 prefixlen = 32 + len, be32 class, u8 addr[16]}`.
    mod dst_v6_key = "egret_dst_v6_key", size(24) {
        PREFIXLEN = "prefixlen" @ 0, Ty::U32;
        CLASS = "class" @ 4, Ty::Be32;
        ADDR = "addr" @ 8, Ty::Bytes(16);
    }

    /// The classifier's outcome (the value of `egret_dst_*`, and its stack
    /// copy): `verdict = reason | slot << 8` ([`VERDICT_REASON_MASK`],
    /// [`VERDICT_SLOT_SHIFT`]), the rule index ([`NO_RULE`]: none), the
    /// gateway node's underlay address ([`NODE_ADDR`]: IPv4 mapped, or IPv6).
    mod action_record = "egret_action", size(24) {
        VERDICT = "verdict" @ 0, Ty::U32;
        RULE = "rule" @ 4, Ty::U32;
        NODE = "gateway" @ 8, NODE_ADDR;
    }

    /// One target of an `egret_choices` value.
    mod choice_target = "egret_choice_target", size(24) {
        VERDICT = "verdict" @ 0, Ty::U32;
        RESERVED = "reserved" @ 4, Ty::U32;
        /// The gateway node's underlay address ([`NODE_ADDR`]), 8-byte
        /// aligned in the value (and so the classifier's `egret_gw_live` key in place).
        NODE = "gateway" @ 8, NODE_ADDR;
    }

    /// The value of `egret_choices` ([`crate::choices`]).
    mod choice = "egret_choice", size(8 + 24 * MAX_TARGETS) {
        COUNT = "count" @ 0, Ty::U32;
        RESERVED = "reserved" @ 4, Ty::U32;
        TARGETS = "targets" @ 8, Ty::Records(&choice_target::LAYOUT, MAX_TARGETS);
    }

    /// The value of `egret_gw_live`: flags ([`GL_F_DOWN`]).
    mod gw_live = "egret_gw_live_value", size(4) {
        FLAGS = "flags" @ 0, Ty::U32;
    }

    /// The value of `egret_gw_down`: gateways marked down.
    mod gw_down = "egret_gw_down_value", size(4) {
        COUNT = "count" @ 0, Ty::U32;
    }

    /// A pod IPv4, network order (the key of `egret_local_eps_v4`).
    mod pod_addr = "egret_pod_addr", size(4) {
        POD = "pod" @ 0, Ty::Be32;
    }

    /// A pod IPv6 (the key of `egret_local_eps_v6`).
    mod pod_addr6 = "egret_pod_addr6", size(16) {
        POD = "pod" @ 0, Ty::Bytes(16);
    }

    /// The value of `egret_admitted_v4` and `egret_admitted_v6` (keyed by
    /// [`pod_addr`] / [`pod_addr6`]): the class of a source admitted into a
    /// running generation (CNI `ADD`), as the plan numbers classes.
    mod admitted = "egret_admitted", size(4) {
        CLASS = "class" @ 0, Ty::U32;
    }

    /// The value of `egret_local_eps_v4` and `egret_local_eps_v6`.
    mod local_ep = "egret_local_ep", size(8), asm "LE_SIZE" {
        /// The pod's host-side veth.
        IFINDEX = "ifindex" @ 0, Ty::U32, "LE_IFINDEX";
        /// Reserved, 0.
        FLAGS = "flags" @ 4, Ty::U32, "LE_FLAGS";
    }

    /// A slot id, the 24-bit VNI (the key of `egret_gw_slots` and
    /// `egret_float_owner`).
    mod slot = "egret_slot", size(4) {
        SLOT = "slot" @ 0, Ty::U32;
    }

    /// The value of `egret_gw_slots`: one slot serves both families.
    mod gw_slot = "egret_gw_slot", size(28), asm "GS_SIZE" {
        /// Egress IPv4 (0: none resolved → `no-egress-ip` for IPv4).
        EGRESS_IP = "egress_ip" @ 0, Ty::Be32, "GS_EGRESS_IP4";
        /// Egress interface.
        IFINDEX = "ifindex" @ 4, Ty::U32, "GS_IFINDEX";
        /// [`GS_F_FLOATING`].
        FLAGS = "flags" @ 8, Ty::U32, "GS_FLAGS";
        /// Egress IPv6 (`::`: none resolved → `no-egress-ip` for IPv6).
        EGRESS_IP6 = "egress_ip6" @ 12, Ty::Bytes(16), "GS_EGRESS_IP6";
    }

    /// The key of `egret_gw_allowed_v4`.
    mod allowed_key = "egret_allowed_key", size(8) {
        SLOT = "slot" @ 0, Ty::U32, "GA_KEY_SLOT";
        SRC = "src" @ 4, Ty::Be32, "GA_KEY_SRC4";
    }

    /// The key of `egret_gw_allowed_v6` (the slot where the IPv4 key has it).
    mod allowed_key6 = "egret_allowed_key6", size(20) {
        SLOT = "slot" @ 0, Ty::U32;
        SRC = "src" @ 4, Ty::Bytes(16), "GA_KEY_SRC6";
    }

    /// The value of `egret_gw_allowed_v4` and `egret_gw_allowed_v6`.
    mod allowed = "egret_allowed", size(20), asm "GA_SIZE" {
        /// The pod's node ([`NODE_ADDR`]; zero: any node).
        NODE = "node" @ 0, NODE_ADDR, "GA_NODE";
        /// [`GA_F_LOCAL`].
        FLAGS = "flags" @ 16, Ty::U32, "GA_FLAGS";
    }

    /// The 5-tuple key of `egret_nat_v4` and `egret_rnat_v4` (ICMP echo:
    /// sport = identifier, dport = 0). Ports and protocol come first, so the
    /// IPv6 key has them at the same offsets (the templates share one name).
    mod nat_key = "egret_nat_key", size(16), asm "NAT_KEY_SIZE4" {
        SPORT = "sport" @ 0, Ty::Be16, "K_SPORT";
        DPORT = "dport" @ 2, Ty::Be16, "K_DPORT";
        PROTO = "proto" @ 4, Ty::U8, "K_PROTO";
        SRC = "src" @ 8, Ty::Be32, "K_SRC4";
        DST = "dst" @ 12, Ty::Be32, "K_DST4";
    }

    /// The 5-tuple key of `egret_nat_v6` and `egret_rnat_v6` (ICMPv6 echo as
    /// ICMP echo).
    mod nat_key6 = "egret_nat_key6", size(40), asm "NAT_KEY_SIZE6" {
        SPORT = "sport" @ 0, Ty::Be16;
        DPORT = "dport" @ 2, Ty::Be16;
        PROTO = "proto" @ 4, Ty::U8;
        SRC = "src" @ 8, Ty::Bytes(16), "K_SRC6";
        DST = "dst" @ 24, Ty::Bytes(16), "K_DST6";
    }

    /// The value of `egret_nat_v4` (forward).
    mod forward_nat = "egret_forward_nat", size(32), asm "FV_SIZE4" {
        /// NAT port / ICMP identifier.
        NAT_PORT = "nat_port" @ 0, Ty::Be16, "FV_NAT_PORT";
        SLOT = "slot" @ 4, Ty::U32, "FV_SLOT";
        /// `ktime_get_ns()` when the mapping was made.
        CREATED = "created_ns" @ 8, Ty::U64, "FV_CREATED";
        /// `ktime_get_ns()` of the last forward packet.
        LAST_SEEN = "last_seen_ns" @ 16, Ty::U64, "FV_LAST_SEEN";
        EGRESS_IP = "egress_ip" @ 24, Ty::Be32, "FV_EGRESS_IP4";
    }

    /// The value of `egret_nat_v6` (forward): as IPv4, a 16-byte egress IP.
    mod forward_nat6 = "egret_forward_nat6", size(40), asm "FV_SIZE6" {
        NAT_PORT = "nat_port" @ 0, Ty::Be16;
        SLOT = "slot" @ 4, Ty::U32;
        CREATED = "created_ns" @ 8, Ty::U64;
        LAST_SEEN = "last_seen_ns" @ 16, Ty::U64;
        EGRESS_IP = "egress_ip" @ 24, Ty::Bytes(16), "FV_EGRESS_IP6";
    }

    /// The value of `egret_rnat_v4` (reverse): the connection's state.
    mod reverse_nat = "egret_reverse_nat", size(48), asm "RV_SIZE4" {
        /// The pod's node ([`NODE_ADDR`]; zero: local).
        NODE = "node" @ 0, NODE_ADDR, "RV_NODE";
        /// Egress slot (the VNI for the way back).
        SLOT = "slot" @ 16, Ty::U32, "RV_SLOT";
        /// The pod's port / ICMP identifier.
        ORIG_SPORT = "orig_sport" @ 20, Ty::Be16, "RV_ORIG_SPORT";
        /// `RV_F_*`.
        FLAGS = "flags" @ 22, Ty::U8, "RV_FLAGS";
        /// The pod.
        ORIG_SRC = "orig_src" @ 24, Ty::Be32, "RV_ORIG_SRC4";
        /// `ktime_get_ns()` of the last packet, either way.
        LAST_SEEN = "last_seen_ns" @ 32, Ty::U64, "RV_LAST_SEEN";
        /// `ktime_get_ns()` after which the entry is free.
        EXPIRES = "expires_ns" @ 40, Ty::U64, "RV_EXPIRES";
    }

    /// The value of `egret_rnat_v6` (reverse): as IPv4, the pod's 16-byte
    /// address at the end.
    mod reverse_nat6 = "egret_reverse_nat6", size(64), asm "RV_SIZE6" {
        NODE = "node" @ 0, NODE_ADDR;
        SLOT = "slot" @ 16, Ty::U32;
        ORIG_SPORT = "orig_sport" @ 20, Ty::Be16;
        FLAGS = "flags" @ 22, Ty::U8;
        LAST_SEEN = "last_seen_ns" @ 32, Ty::U64;
        EXPIRES = "expires_ns" @ 40, Ty::U64;
        ORIG_SRC = "orig_src" @ 48, Ty::Bytes(16), "RV_ORIG_SRC6";
    }

    /// The value of `egret_float_owner`.
    mod float_owner = "egret_float_owner_value", size(20), asm "FO_SIZE" {
        /// The owner's underlay address ([`NODE_ADDR`]).
        OWNER = "owner" @ 0, NODE_ADDR, "FO_OWNER";
        /// [`FO_F_SELF`].
        FLAGS = "flags" @ 16, Ty::U32, "FO_FLAGS";
    }

    /// The key of `egret_gw_peers`.
    mod peer_key = "egret_peer_key", size(20), asm "GP_KEY_SIZE" {
        SLOT = "slot" @ 0, Ty::U32, "GP_KEY_SLOT";
        /// The peer's underlay address ([`NODE_ADDR`]).
        PEER = "peer" @ 4, NODE_ADDR, "GP_KEY_PEER";
    }

    /// The value of `egret_gw_peers` (0).
    mod peer = "egret_peer", size(4), asm "GP_SIZE" {
        RESERVED = "reserved" @ 0, Ty::U32;
    }

    /// A node's underlay address ([`NODE_ADDR`]; the key of `egret_probe_rx`
    /// and of `egret_gw_live`).
    mod node_addr = "egret_node_addr", size(16) {
        NODE = "node" @ 0, NODE_ADDR;
    }

    /// The value of `egret_probe_rx`.
    mod probe_rx = "egret_probe_rx_value", size(24), asm "PROBE_RX_SIZE" {
        /// The reply's seq.
        SEQ = "seq" @ 0, Ty::U32, "PR_SEQ";
        /// `sent_ns` copied from the reply.
        SENT_NS = "sent_ns" @ 8, Ty::U64, "PR_SENT_NS";
        /// `ktime_get_ns()` when it arrived.
        RECV_NS = "recv_ns" @ 16, Ty::U64, "PR_RECV_NS";
    }

    /// A gateway probe frame up to its payload's end (the shortest frame
    /// accepted; frames are zero-padded to 60 bytes). The 4- and 8-byte
    /// fields sit at 2 mod 4 / 2 mod 8: aligned for the kernel (NET_IP_ALIGN).
    mod probe_frame = "egret_probe_frame", size(38), asm "PROBE_END" {
        DST_MAC = "dst_mac" @ 0, Ty::Bytes(6);
        SRC_MAC = "src_mac" @ 6, Ty::Bytes(6);
        ETHERTYPE = "ethertype" @ 12, Ty::Be16;
        /// `"EGRP"`.
        MAGIC = "magic" @ 14, Ty::Bytes(4), "PROBE_MAGIC";
        KIND = "kind" @ 18, Ty::U8, "PROBE_KIND";
        VERSION = "version" @ 19, Ty::U8, "PROBE_VER";
        SEQ = "seq" @ 22, Ty::U32, "PROBE_SEQ";
        /// Network order.
        SENDER = "sender" @ 26, Ty::Be32, "PROBE_SENDER";
        SENT_NS = "sent_ns" @ 30, Ty::U64, "PROBE_SENT_NS";
    }

    /// `struct bpf_tunnel_key` (with `local_ipv4/6`, Linux ≥ 6.3). IPv4
    /// addresses are `u32` host order in the first 4 bytes of `remote` /
    /// `local` ([`TUNNEL_KEY_REMOTE_IPV4`], [`TUNNEL_KEY_LOCAL_IPV4`]).
    mod tunnel_key = "bpf_tunnel_key", size(44), asm "TUNNEL_KEY_SIZE" {
        TUNNEL_ID = "tunnel_id" @ 0, Ty::U32, "TK_ID";
        /// `remote_ipv4` (host order) or `remote_ipv6`.
        REMOTE = "remote" @ 4, Ty::Bytes(16), "TK_REMOTE";
        /// `tunnel_tos`, then `tunnel_ttl` and `tunnel_ext` (a `u32` store of 0 at
        /// `TK_TOS` clears all three).
        TOS = "tunnel_tos" @ 20, Ty::U8, "TK_TOS";
        TTL = "tunnel_ttl" @ 21, Ty::U8, "TK_TTL";
        /// `tunnel_ext`: must be 0.
        EXT = "tunnel_ext" @ 22, Ty::U16;
        LABEL = "tunnel_label" @ 24, Ty::U32, "TK_LABEL";
        /// `local_ipv4` (host order) or `local_ipv6`.
        LOCAL = "local" @ 28, Ty::Bytes(16), "TK_LOCAL";
    }

    /// Nothing: the key and value of a map that has neither (a ring buffer).
    mod none = "egret_none", size(0) {}

    /// A flow event: one record of `egret_flow_events` (the gateway's flow
    /// audit log, written with `bpf_ringbuf_output`). Addresses are 16 bytes:
    /// an IPv4 one in the first 4 (network order), the rest zero; the node is
    /// a [`NODE_ADDR`]. Ports network order, as in the packet.
    mod flow_event = "egret_flow_event", size(88), asm "EV_SIZE" {
        /// [`FLOW_CREATED`] or [`FLOW_CLOSED`].
        KIND = "kind" @ 0, Ty::U8, "EV_KIND";
        /// IP protocol (6, 17, 1, 58).
        PROTO = "proto" @ 1, Ty::U8, "EV_PROTO";
        /// 4 or 6.
        FAMILY = "family" @ 2, Ty::U8, "EV_FAMILY";
        /// The connection's `RV_F_*` flags after this packet.
        FLAGS = "flags" @ 3, Ty::U8, "EV_FLAGS";
        /// The egress slot.
        SLOT = "slot" @ 4, Ty::U32, "EV_SLOT";
        /// `ktime_get_ns()` of the packet (CLOCK_MONOTONIC).
        TIME = "time_ns" @ 8, Ty::U64, "EV_TIME";
        /// The pod's port / ICMP identifier.
        SPORT = "sport" @ 16, Ty::Be16, "EV_SPORT";
        /// The remote port (0 for ICMP).
        DPORT = "dport" @ 18, Ty::Be16, "EV_DPORT";
        /// The NAT port / identifier (the translated source port).
        NAT_PORT = "nat_port" @ 20, Ty::Be16, "EV_NAT_PORT";
        /// The pod.
        SRC = "src" @ 24, Ty::Bytes(16), "EV_SRC";
        /// The remote end.
        DST = "dst" @ 40, Ty::Bytes(16), "EV_DST";
        /// The egress IP (the translated source).
        EGRESS_IP = "egress_ip" @ 56, Ty::Bytes(16), "EV_EGRESS_IP";
        /// The pod's node ([`NODE_ADDR`]; zero: the gateway itself).
        NODE = "node" @ 72, NODE_ADDR, "EV_NODE";
    }

    /// `struct bpf_redir_neigh`.
    mod redir_neigh = "bpf_redir_neigh", size(20), asm "REDIR_NEIGH_SIZE" {
        FAMILY = "nh_family" @ 0, Ty::U32;
        IPV4_NH = "ipv4_nh" @ 4, Ty::Be32;
    }
}

// The templates name the fields both families share once: the IPv6 layouts
// must have them where the IPv4 ones do.
const _: () = {
    const fn same(a: Field, b: Field) {
        assert!(a.offset == b.offset && a.ty.size() == b.ty.size(), "a shared field moved");
    }
    same(nat_key::SPORT, nat_key6::SPORT);
    same(nat_key::DPORT, nat_key6::DPORT);
    same(nat_key::PROTO, nat_key6::PROTO);
    same(forward_nat::NAT_PORT, forward_nat6::NAT_PORT);
    same(forward_nat::SLOT, forward_nat6::SLOT);
    same(forward_nat::CREATED, forward_nat6::CREATED);
    same(forward_nat::LAST_SEEN, forward_nat6::LAST_SEEN);
    same(reverse_nat::NODE, reverse_nat6::NODE);
    same(reverse_nat::SLOT, reverse_nat6::SLOT);
    same(reverse_nat::ORIG_SPORT, reverse_nat6::ORIG_SPORT);
    same(reverse_nat::FLAGS, reverse_nat6::FLAGS);
    same(reverse_nat::LAST_SEEN, reverse_nat6::LAST_SEEN);
    same(reverse_nat::EXPIRES, reverse_nat6::EXPIRES);
    same(allowed_key::SLOT, allowed_key6::SLOT);
};

/// `bpf_tunnel_key.remote_ipv4` (host order).
pub const TUNNEL_KEY_REMOTE_IPV4: Field = tunnel_key::REMOTE.as_ty(Ty::U32);
/// `bpf_tunnel_key.local_ipv4` (host order).
pub const TUNNEL_KEY_LOCAL_IPV4: Field = tunnel_key::LOCAL.as_ty(Ty::U32);
/// `sizeof(struct bpf_tunnel_key)` up to `tunnel_label` (no local address).
pub const TUNNEL_KEY_SIZE_NO_LOCAL: usize = tunnel_key::LOCAL.offset;

/// Defines constants once, each also named (by its identifier) in the
/// gateway templates' assembler prelude.
macro_rules! constants {
    ($( $(#[$m:meta])* $name:ident : $ty:ty = $val:expr; )*) => {
        $( $(#[$m])* pub const $name: $ty = $val; )*
        /// Every constant above: (`.equ` name, value).
        pub const CONSTANTS: &[(&str, i64)] = &[$((stringify!($name), $name as i64)),*];
    };
}

constants! {
    // ----- tc verdicts
    /// `TC_ACT_UNSPEC` (`TCX_NEXT` under tcx): let the next program / the stack decide.
    TC_ACT_UNSPEC: i32 = -1;
    /// `TC_ACT_SHOT`.
    TC_ACT_SHOT: i32 = 2;
    /// `TC_ACT_REDIRECT`.
    TC_ACT_REDIRECT: i32 = 7;

    // ----- Ethernet / IPv4 / L4 (offsets from the start of the frame)
    /// Ethernet header length.
    ETH_HLEN: i32 = 14;
    /// 802.1Q tag length.
    VLAN_HLEN: i32 = 4;
    /// Offset of the ethertype.
    ETH_PROTO: i32 = 12;
    /// Ethertype 0x0800 as a little-endian `u16` load of the network-order field reads it.
    ETH_P_IP_LE: i32 = 0x0008;
    /// Ethertype 0x86dd, likewise.
    ETH_P_IPV6_LE: i32 = 0xdd86;
    /// Ethertype 0x8100, likewise.
    ETH_P_8021Q_LE: i32 = 0x0081;
    /// IPv4 version (high nibble) and IHL (low nibble).
    IP_VIHL: i32 = 14;
    /// IPv4 flags + fragment offset, network order.
    IP_FRAG: i32 = 20;
    /// The fragment offset's bits.
    IP_OFFMASK: i32 = 0x1fff;
    /// IPv4 TTL; a `u16` load here gives TTL (low) | protocol << 8.
    IP_TTL: i32 = 22;
    /// IPv4 protocol.
    IP_PROTO: i32 = 23;
    /// IPv4 header checksum.
    IP_CSUM: i32 = 24;
    /// IPv4 source.
    IP_SADDR: i32 = 26;
    /// IPv4 destination.
    IP_DADDR: i32 = 30;
    /// `ETH_HLEN` + [`IPV4_HLEN`]: Ethernet + option-less IPv4 header.
    IPV4_END: i32 = ETH_HLEN + IPV4_HLEN;
    /// Option-less IPv4 header.
    IPV4_HLEN: i32 = 20;
    /// IPv6 header.
    IPV6_HLEN: i32 = 40;
    /// IPv6 next header.
    IP6_NEXTHDR: i32 = 20;
    /// IPv6 hop limit; a `u16` load at [`IP6_NEXTHDR`] gives next header
    /// (low) | hop limit << 8.
    IP6_HOPLIMIT: i32 = 21;
    /// IPv6 source.
    IP6_SADDR: i32 = 22;
    /// IPv6 destination.
    IP6_DADDR: i32 = 38;
    /// `ETH_HLEN` + [`IPV6_HLEN`]: Ethernet + IPv6 header (egret's gateway
    /// takes no extension headers).
    IPV6_END: i32 = ETH_HLEN + IPV6_HLEN;
    /// IPv6 next header: fragment header.
    IPPROTO_FRAGMENT: i32 = 44;
    /// `IPPROTO_ICMPV6`.
    IPPROTO_ICMPV6: i32 = 58;
    /// `IPPROTO_ICMP`.
    IPPROTO_ICMP: i32 = 1;
    /// `IPPROTO_TCP`.
    IPPROTO_TCP: i32 = 6;
    /// `IPPROTO_UDP`.
    IPPROTO_UDP: i32 = 17;
    /// L4 source port (TCP, UDP).
    L4_SPORT: i32 = 0;
    /// L4 destination port (TCP, UDP).
    L4_DPORT: i32 = 2;
    /// Option-less TCP header.
    TCP_HLEN: i32 = 20;
    /// TCP data offset (high nibble, in 32-bit words).
    TCP_DOFF_OFF: i32 = 12;
    /// TCP flags byte.
    TCP_FLAGS_OFF: i32 = 13;
    /// TCP checksum.
    TCP_CSUM_OFF: i32 = 16;
    /// UDP header.
    UDP_HLEN: i32 = 8;
    /// UDP checksum.
    UDP_CSUM_OFF: i32 = 6;
    /// ICMP echo header.
    ICMP_HLEN: i32 = 8;
    /// ICMP checksum.
    ICMP_CSUM_OFF: i32 = 2;
    /// ICMP echo identifier.
    ICMP_ID_OFF: i32 = 4;
    /// ICMP echo reply type.
    ICMP_ECHO_REPLY: i32 = 0;
    /// ICMP echo request type.
    ICMP_ECHO: i32 = 8;
    /// ICMP destination unreachable (fragmentation needed: code 4).
    ICMP_DEST_UNREACH: i32 = 3;
    /// ICMP time exceeded.
    ICMP_TIME_EXCEEDED: i32 = 11;
    /// ICMPv6 destination unreachable.
    ICMP6_DEST_UNREACH: i32 = 1;
    /// ICMPv6 packet too big.
    ICMP6_PACKET_TOO_BIG: i32 = 2;
    /// ICMPv6 time exceeded.
    ICMP6_TIME_EXCEEDED: i32 = 3;
    /// ICMPv6 echo request type.
    ICMP6_ECHO: i32 = 128;
    /// ICMPv6 echo reply type.
    ICMP6_ECHO_REPLY: i32 = 129;
    /// TCP FIN.
    TH_FIN: i32 = 0x01;
    /// TCP SYN.
    TH_SYN: i32 = 0x02;
    /// TCP RST.
    TH_RST: i32 = 0x04;
    /// TCP ACK.
    TH_ACK: i32 = 0x10;

    // ----- helper arguments
    /// `bpf_map_update_elem`: create or replace.
    BPF_ANY: i32 = 0;
    /// `bpf_map_update_elem`: create only.
    BPF_NOEXIST: i32 = 1;
    /// `bpf_l3/l4_csum_replace`: the field is 2 bytes.
    CSUM_SIZE2: i32 = 2;
    /// ... 4 bytes.
    CSUM_SIZE4: i32 = 4;
    /// `bpf_l4_csum_replace`: the field is part of the pseudo-header.
    BPF_F_PSEUDO_HDR: i32 = 0x10;
    /// `bpf_l4_csum_replace`, UDP: checksum 0 means "none" and stays 0.
    BPF_F_MARK_MANGLED_0: i32 = 0x20;
    /// `bpf_l4_csum_replace`: the size bits of the flags.
    BPF_F_HDR_FIELD_MASK: i32 = 0xf;
    /// `bpf_l4_csum_replace`: `BPF_F_MARK_ENFORCE`.
    BPF_F_MARK_ENFORCE: i32 = 0x40;
    /// `bpf_l4_csum_replace`: `BPF_F_IPV6`.
    BPF_F_IPV6: i32 = 0x80;
    /// `bpf_redirect`: to the device's ingress (egret always redirects to egress: 0).
    BPF_F_INGRESS: i32 = 1;
    /// Tunnel key helpers: IPv6 addresses.
    BPF_F_TUNINFO_IPV6: i32 = 1;
    /// `bpf_skb_get_tunnel_key`: also the tunnel flags.
    BPF_F_TUNINFO_FLAGS: i32 = 16;
    /// `bpf_skb_set_tunnel_key`: no outer UDP checksum.
    BPF_F_ZERO_CSUM_TX: i32 = 2;
    /// `bpf_skb_set_tunnel_key`: set DF on the outer header.
    BPF_F_DONT_FRAGMENT: i32 = 4;
    /// `bpf_skb_set_tunnel_key`: `BPF_F_SEQ_NUMBER`.
    BPF_F_SEQ_NUMBER: i32 = 8;
    /// `bpf_skb_set_tunnel_key`: `BPF_F_NO_TUNNEL_KEY`.
    BPF_F_NO_TUNNEL_KEY: i32 = 16;
    /// `AF_INET` (`struct bpf_redir_neigh` family).
    AF_INET: i32 = 2;
    /// `AF_INET6`.
    AF_INET6: i32 = 10;
    /// Bytes egret's tunnel adds to an inner frame: outer IPv4 20, UDP 8,
    /// VXLAN 8, inner Ethernet 14.
    TUNNEL_OVERHEAD: i32 = 50;
    /// What an IPv6 underlay adds to [`TUNNEL_OVERHEAD`] (outer IPv6 40
    /// instead of IPv4 20): the classifier lowers its MSS clamp by this much
    /// for a gateway it reaches over IPv6.
    UNDERLAY_V6_EXTRA: i32 = IPV6_HLEN - IPV4_HLEN;
    /// The third word of an IPv4 [`NODE_ADDR`] (`::ffff:a.b.c.d`) as a
    /// little-endian `u32` load reads it.
    NODE_V4_PREFIX_LE: i32 = i32::from_le_bytes([0, 0, 0xff, 0xff]);
    /// The outer TTL egret's tunnel keys set.
    TUNNEL_TTL: i32 = 64;
    /// Egress slots are 24-bit VXLAN VNIs.
    SLOT_MASK: i32 = 0x00ff_ffff;

    // ----- classifier outcome word (`verdict`)
    /// The reason's bits of a verdict.
    VERDICT_REASON_MASK: u32 = 0xff;
    /// The slot's shift in a verdict.
    VERDICT_SLOT_SHIFT: u32 = 8;
    /// "No rule" in the verdict registers and action records.
    NO_RULE: u32 = u32::MAX;
    /// Targets per `egret_choices` value: the most gateways an endpoint fails over through.
    MAX_TARGETS: usize = 8;

    // ----- map value flags
    /// `egret_gw_slots` flags: a floating slot (only the owner SNATs, the others forward).
    GS_F_FLOATING: u32 = 1;
    /// `egret_float_owner` flags: this node owns the slot.
    FO_F_SELF: u32 = 1;
    /// `egret_gw_allowed` flags: the pod runs on this gateway (`egret_gw_local` only).
    GA_F_LOCAL: u32 = 1;
    /// `egret_rnat_v4` flags: the pod runs on this gateway node.
    RV_F_LOCAL: u8 = 1;
    /// `egret_rnat_v4` flags: a reply went through (TCP: established).
    RV_F_SEEN_REPLY: u8 = 2;
    /// `egret_rnat_v4` flags: TCP FIN or RST seen.
    RV_F_CLOSING: u8 = 4;
    /// `egret_gw_live` flags: the gateway is down.
    GL_F_DOWN: u32 = 1;

    // ----- gateway probes (VNI 0, inner ethertype 0x88b5; frame: [`probe_frame`])
    /// The probes' VNI.
    PROBE_VNI: u32 = 0;
    /// The probes' inner ethertype.
    PROBE_ETHERTYPE: u16 = 0x88b5;
    /// [`PROBE_ETHERTYPE`] as a little-endian `u16` load reads it.
    PROBE_ETH_P_LE: u16 = PROBE_ETHERTYPE.swap_bytes();
    /// `"EGRP"` as a little-endian `u32` load reads it.
    PROBE_MAGIC_LE: u32 = u32::from_le_bytes(*b"EGRP");
    /// The probe format's version.
    PROBE_VERSION: u8 = 1;
    /// Probe kind: request.
    PROBE_KIND_REQUEST: u8 = 1;
    /// Probe kind: reply.
    PROBE_KIND_REPLY: u8 = 2;

    // ----- NAT port allocation: ports 61000..=65535, disjoint from Linux's
    // default ip_local_port_range (32768-60999)
    /// First NAT port.
    NAT_PORT_MIN: u16 = 61000;
    /// Number of NAT ports.
    NAT_PORT_COUNT: u32 = 4536;
    /// Candidates tried per new mapping.
    NAT_PROBES: usize = 16;
    /// Flow hash constant (murmur3).
    HASH_C1: u32 = 0x9e37_79b1;
    /// Flow hash constant (murmur3 `fmix32`).
    HASH_C2: u32 = 0x85eb_ca6b;
    /// Flow hash constant (murmur3 `fmix32`).
    HASH_C3: u32 = 0xc2b2_ae35;

    // ----- flow events (`flow_event::KIND`)
    /// The first packet of a new translation (a new NAT mapping).
    FLOW_CREATED: u8 = 1;
    /// The first TCP FIN or RST of a translated connection, either way.
    FLOW_CLOSED: u8 = 2;
    /// `max_entries` of `egret_flow_events`: the ring's bytes (2,048 events of
    /// 96 bytes with their headers per MiB).
    FLOW_EVENTS_BYTES: u32 = 1 << 20;
    /// A flow event's size in 64-bit words (the templates zero it word by word).
    EV_WORDS: usize = flow_event::SIZE / 8;

    // ----- connection timeouts (ns, `ktime_get_ns`)
    /// TCP until a reply is seen.
    TCP_SYN_TIMEOUT_NS: u64 = 60_000_000_000;
    /// TCP once established, idle.
    TCP_ESTABLISHED_TIMEOUT_NS: u64 = 21_600_000_000_000;
    /// TCP after FIN or RST.
    TCP_CLOSING_TIMEOUT_NS: u64 = 10_000_000_000;
    /// UDP, idle.
    UDP_TIMEOUT_NS: u64 = 60_000_000_000;
    /// ICMP echo, idle.
    ICMP_TIMEOUT_NS: u64 = 30_000_000_000;
}

/// The largest TCP MSS of inner `family` (IPv6 when `ipv6`) through egret's
/// tunnel over an IPv4 underlay of `mtu` bytes: `mtu` − [`TUNNEL_OVERHEAD`] −
/// the IP header (20 / 40) − 20 (TCP); `None` when nothing is left. Over an
/// IPv6 underlay the classifier takes [`UNDERLAY_V6_EXTRA`] more off.
#[must_use]
pub const fn tunnel_mss(mtu: u16, ipv6: bool) -> Option<u16> {
    let ip = if ipv6 { IPV6_HLEN } else { IPV4_HLEN };
    let overhead = (TUNNEL_OVERHEAD + ip + TCP_HLEN) as u16;
    match mtu.checked_sub(overhead) {
        Some(0) | None => None,
        Some(mss) => Some(mss),
    }
}

/// The value of one [`counter`] entry (per CPU).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (`skb->len`).
    pub bytes: u64,
}

impl Counter {
    /// Size of the value in bytes.
    pub const SIZE: u32 = counter::SIZE as u32;

    /// Decodes one value; `None` for a wrong length.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<Counter> {
        counter::LAYOUT
            .fits(b)
            .then(|| Some(Counter { packets: counter::PACKETS.get(b)?, bytes: counter::BYTES.get(b)? }))
            .flatten()
    }
}

/// A map: name, kind, key and value layouts, and (when fixed) its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLayout {
    /// Map (and symbol) name.
    pub name: &'static str,
    /// Kind.
    pub kind: MapKind,
    /// Key layout.
    pub key: &'static Struct,
    /// Value layout.
    pub value: &'static Struct,
    /// `max_entries` when the map has a fixed size, with its `.equ` name for
    /// template maps.
    pub max_entries: Option<(u32, Option<&'static str>)>,
    /// Declared by the gateway templates (`.map` in the prelude).
    pub template: bool,
}

impl MapLayout {
    /// The definition with `max_entries` entries (flags as the kind requires).
    #[must_use]
    pub fn def_with(&self, max_entries: u32) -> MapDef {
        MapDef {
            name: self.name.to_owned(),
            kind: self.kind,
            key_size: self.key.size as u32,
            value_size: self.value.size as u32,
            max_entries,
            flags: if self.kind == MapKind::LpmTrie { BPF_F_NO_PREALLOC } else { 0 },
        }
    }

    /// The definition of a fixed-size map (`max_entries` 1 for one sized by
    /// its user: call [`MapLayout::def_with`] for those).
    #[must_use]
    pub fn def(&self) -> MapDef {
        self.def_with(self.max_entries.map_or(1, |(n, _)| n))
    }

    /// Whether BTF carries key/value types for this map (not for
    /// `PROG_ARRAY`, whose kernel check refuses BTF types, nor for a ring
    /// buffer, which has no key or value).
    #[must_use]
    pub fn typed(&self) -> bool {
        !matches!(self.kind, MapKind::ProgArray | MapKind::RingBuf)
    }
}

/// Map names.
pub mod map {
    /// Per-CPU counters by classifier reason.
    pub const REASONS: &str = "egret_reasons";
    /// Per-CPU counters by rule.
    pub const POLICY_STATS: &str = "egret_policy_stats";
    /// The source classifier's `PROG_ARRAY` (the local gateway program).
    pub const GW_PROGS: &str = "egret_gw_progs";
    /// IPv4 destinations by class.
    pub const DST_V4: &str = "egret_dst_v4";
    /// IPv6 destinations by class.
    pub const DST_V6: &str = "egret_dst_v6";
    /// Failover choices.
    pub const CHOICES: &str = "egret_choices";
    /// Gateway liveness as this node's agent sees it.
    pub const GW_LIVE: &str = "egret_gw_live";
    /// How many gateways `egret_gw_live` marks down.
    pub const GW_DOWN: &str = "egret_gw_down";
    /// IPv4 sources admitted into the running generation (CNI `ADD`): pod → class.
    pub const ADMITTED_V4: &str = "egret_admitted_v4";
    /// IPv6 sources admitted into the running generation (CNI `ADD`): pod → class.
    pub const ADMITTED_V6: &str = "egret_admitted_v6";
    /// Local IPv4 endpoints (every node).
    pub const LOCAL_EPS: &str = "egret_local_eps_v4";
    /// Local IPv6 endpoints (every node).
    pub const LOCAL_EPS6: &str = "egret_local_eps_v6";
    /// Slots served by this gateway.
    pub const GW_SLOTS: &str = "egret_gw_slots";
    /// IPv4 sources allowed per slot.
    pub const GW_ALLOWED: &str = "egret_gw_allowed_v4";
    /// IPv6 sources allowed per slot.
    pub const GW_ALLOWED6: &str = "egret_gw_allowed_v6";
    /// Forward NAT mappings.
    pub const NAT_V4: &str = "egret_nat_v4";
    /// Reverse NAT mappings (connection state).
    pub const RNAT_V4: &str = "egret_rnat_v4";
    /// Forward IPv6 NAT mappings.
    pub const NAT_V6: &str = "egret_nat_v6";
    /// Reverse IPv6 NAT mappings (connection state).
    pub const RNAT_V6: &str = "egret_rnat_v6";
    /// Per-CPU gateway counters.
    pub const GW_STATS: &str = "egret_gw_stats";
    /// The last probe reply from each node.
    pub const PROBE_RX: &str = "egret_probe_rx";
    /// The owner of each floating slot.
    pub const FLOAT_OWNER: &str = "egret_float_owner";
    /// The other candidate gateways of each floating slot served here.
    pub const GW_PEERS: &str = "egret_gw_peers";
    /// Flow events (ring buffer of [`super::flow_event`] records).
    pub const FLOW_EVENTS: &str = "egret_flow_events";
}

const fn m(
    name: &'static str,
    kind: MapKind,
    key: &'static Struct,
    value: &'static Struct,
    max_entries: Option<(u32, Option<&'static str>)>,
    template: bool,
) -> MapLayout {
    MapLayout { name, kind, key, value, max_entries, template }
}

/// Every map egret's programs declare. The classifier's `egret_reasons`,
/// `egret_policy_stats`, `egret_dst_*` and `egret_choices` are sized by the
/// plan; the others are fixed.
pub const MAPS: &[MapLayout] = &[
    m(map::REASONS, MapKind::PercpuArray, &index::LAYOUT, &counter::LAYOUT, None, false),
    m(map::POLICY_STATS, MapKind::PercpuArray, &index::LAYOUT, &counter::LAYOUT, None, false),
    m(map::GW_PROGS, MapKind::ProgArray, &index::LAYOUT, &prog_fd::LAYOUT, Some((1, None)), false),
    m(map::DST_V4, MapKind::LpmTrie, &dst_v4_key::LAYOUT, &action_record::LAYOUT, None, false),
    m(map::DST_V6, MapKind::LpmTrie, &dst_v6_key::LAYOUT, &action_record::LAYOUT, None, false),
    m(map::CHOICES, MapKind::Array, &index::LAYOUT, &choice::LAYOUT, None, false),
    m(map::GW_LIVE, MapKind::Hash, &node_addr::LAYOUT, &gw_live::LAYOUT, Some((1024, None)), false),
    m(map::GW_DOWN, MapKind::Array, &index::LAYOUT, &gw_down::LAYOUT, Some((1, None)), false),
    m(map::ADMITTED_V4, MapKind::Hash, &pod_addr::LAYOUT, &admitted::LAYOUT, Some((1024, None)), false),
    m(map::ADMITTED_V6, MapKind::Hash, &pod_addr6::LAYOUT, &admitted::LAYOUT, Some((1024, None)), false),
    m(map::LOCAL_EPS, MapKind::Hash, &pod_addr::LAYOUT, &local_ep::LAYOUT, Some((1024, Some("LOCAL_EPS_MAX"))), true),
    m(map::LOCAL_EPS6, MapKind::Hash, &pod_addr6::LAYOUT, &local_ep::LAYOUT, Some((1024, Some("LOCAL_EPS_MAX"))), true),
    m(map::GW_SLOTS, MapKind::Hash, &slot::LAYOUT, &gw_slot::LAYOUT, Some((256, Some("GW_SLOTS_MAX"))), true),
    m(
        map::GW_ALLOWED,
        MapKind::Hash,
        &allowed_key::LAYOUT,
        &allowed::LAYOUT,
        Some((65536, Some("GW_ALLOWED_MAX"))),
        true,
    ),
    m(
        map::GW_ALLOWED6,
        MapKind::Hash,
        &allowed_key6::LAYOUT,
        &allowed::LAYOUT,
        Some((65536, Some("GW_ALLOWED_MAX"))),
        true,
    ),
    m(map::NAT_V4, MapKind::LruHash, &nat_key::LAYOUT, &forward_nat::LAYOUT, Some((65536, Some("NAT_MAX"))), true),
    m(map::RNAT_V4, MapKind::LruHash, &nat_key::LAYOUT, &reverse_nat::LAYOUT, Some((65536, Some("NAT_MAX"))), true),
    m(map::NAT_V6, MapKind::LruHash, &nat_key6::LAYOUT, &forward_nat6::LAYOUT, Some((65536, Some("NAT_MAX"))), true),
    m(map::RNAT_V6, MapKind::LruHash, &nat_key6::LAYOUT, &reverse_nat6::LAYOUT, Some((65536, Some("NAT_MAX"))), true),
    m(map::GW_STATS, MapKind::PercpuArray, &index::LAYOUT, &counter::LAYOUT, Some((32, Some("STATS_MAX"))), true),
    m(map::PROBE_RX, MapKind::Hash, &node_addr::LAYOUT, &probe_rx::LAYOUT, Some((1024, Some("PROBE_RX_MAX"))), true),
    m(map::FLOAT_OWNER, MapKind::Hash, &slot::LAYOUT, &float_owner::LAYOUT, Some((256, Some("FLOAT_OWNER_MAX"))), true),
    m(map::GW_PEERS, MapKind::Hash, &peer_key::LAYOUT, &peer::LAYOUT, Some((1024, Some("GW_PEERS_MAX"))), true),
    m(map::FLOW_EVENTS, MapKind::RingBuf, &none::LAYOUT, &none::LAYOUT, Some((FLOW_EVENTS_BYTES, None)), true),
];

/// The layout of the map named `name`.
#[must_use]
pub fn find(name: &str) -> Option<&'static MapLayout> {
    MAPS.iter().find(|l| l.name == name)
}

/// The layout of a map if `def` is that map (name, kind and sizes agree):
/// what BTF types a definition gets.
#[must_use]
pub fn of(def: &MapDef) -> Option<&'static MapLayout> {
    find(&def.name).filter(|l| {
        l.kind == def.kind && l.key.size == def.key_size as usize && l.value.size == def.value_size as usize
    })
}

/// `max_entries` of the fixed-size map `name` (0 for an unknown or plan-sized map).
#[must_use]
pub const fn max_entries(name: &str) -> u32 {
    let mut i = 0;
    while i < MAPS.len() {
        if const_str_eq(MAPS[i].name, name)
            && let Some((n, _)) = MAPS[i].max_entries
        {
            return n;
        }
        i += 1;
    }
    0
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The definitions of the maps the gateway templates declare, in `.maps` order.
#[must_use]
pub fn template_maps() -> Vec<MapDef> {
    MAPS.iter().filter(|l| l.template).map(MapLayout::def).collect()
}

/// Every `.equ` the gateway templates get from Rust, by name, with
/// `extra` (their counter indexes) appended: constants, `__sk_buff`
/// offsets, field offsets and sizes, map sizes.
#[must_use]
pub fn asm_constants(extra: &[(String, i64)]) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = CONSTANTS.iter().map(|(n, x)| ((*n).to_owned(), *x)).collect();
    for f in crate::skb::FIELDS {
        let name: String = f.name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let name = format!("SKB_{}", name.to_uppercase());
        if !v.iter().any(|(n, _)| *n == name) {
            v.push((name, i64::from(f.off)));
        }
    }
    for s in STRUCTS {
        v.extend(s.fields.iter().filter_map(|f| Some((f.asm?.to_owned(), f.offset as i64))));
        v.extend(s.asm_size.map(|n| (n.to_owned(), s.size as i64)));
    }
    for l in MAPS {
        if let Some((n, Some(name))) = l.max_entries
            && !v.iter().any(|(x, _)| x == name)
        {
            v.push((name.to_owned(), i64::from(n)));
        }
    }
    v.extend(extra.iter().cloned());
    v
}

/// The assembler prelude of the gateway templates: one `.equ` per
/// [`asm_constants`] entry and one `.map` per template map. No instructions.
#[must_use]
pub fn asm_prelude(extra: &[(String, i64)]) -> String {
    let mut s = String::from("// generated from egret_bpf::layout: constants, field offsets, map declarations\n");
    for (name, v) in asm_constants(extra) {
        let _ = writeln!(s, ".equ {name}, {v}");
    }
    for l in MAPS.iter().filter(|l| l.template) {
        let d = l.def();
        let _ = writeln!(
            s,
            ".map {}, {}, key_size={}, value_size={}, max_entries={}",
            d.name, d.kind, d.key_size, d.value_size, d.max_entries
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_encode_in_their_byte_order() {
        let mut b = nat_key::LAYOUT.zeroed();
        nat_key::SPORT.put(&mut b, 40000);
        nat_key::SRC.put_ipv4(&mut b, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(&b[8..12], &[10, 1, 2, 3], "be32: network order");
        assert_eq!(&b[0..2], &[0x9c, 0x40], "be16: network order");
        assert_eq!(nat_key::SPORT.get(&b), Some(40000));
        let mut r = reverse_nat::LAYOUT.zeroed();
        reverse_nat::SLOT.put(&mut r, 0xc000_0207);
        assert_eq!(&r[16..20], &[7, 2, 0, 192], "u32: host order");
        let node = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        reverse_nat::NODE.put_node(&mut r, node);
        assert_eq!(&r[..16], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7], "an IPv4 node, mapped");
        assert_eq!(u32::from_le_bytes([r[8], r[9], r[10], r[11]]) as i32, NODE_V4_PREFIX_LE);
        assert_eq!(reverse_nat::NODE.node(&r), Some(node));
        let node6: IpAddr = "2001:db8::7".parse().unwrap();
        reverse_nat::NODE.put_node(&mut r, node6);
        assert_eq!(reverse_nat::NODE.node(&r), Some(node6));
        reverse_nat::NODE.put_node(&mut r, Ipv6Addr::UNSPECIFIED.into());
        assert_eq!((&r[..16], reverse_nat::NODE.node(&r)), (&[0u8; 16][..], Some(Ipv4Addr::UNSPECIFIED.into())));
        let t = choice::TARGETS.record(2, choice_target::NODE);
        assert_eq!(t.offset, 8 + 2 * 24 + 8);
        assert_eq!(t.offset % 8, 0, "aligned in the value");
        assert_eq!(choice::SIZE, 200);
        assert_eq!((action_record::SIZE, action_record::NODE.offset), (24, 8));
    }

    #[test]
    fn the_tunnel_mss_leaves_room_for_tunnel_ip_and_tcp() {
        assert_eq!((tunnel_mss(1500, false), tunnel_mss(1500, true)), (Some(1410), Some(1390)));
        assert_eq!((tunnel_mss(1400, false), tunnel_mss(9000, true)), (Some(1310), Some(8890)));
        assert_eq!((tunnel_mss(111, true), tunnel_mss(110, true), tunnel_mss(20, false)), (Some(1), None, None));
    }

    #[test]
    fn every_map_is_kernel_valid_and_named_once() {
        let mut names: Vec<&str> = MAPS.iter().map(|l| l.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MAPS.len());
        for l in MAPS {
            let n = if l.kind == MapKind::RingBuf { crate::maps::RINGBUF_PAGE } else { 16 };
            l.def_with(n).validate().expect("kernel-valid");
            l.def().validate().expect("kernel-valid at its size");
            if l.kind.is_array() {
                assert!(l.key.scalar, "{}: an array's key is an INT for the kernel", l.name);
            }
        }
        let consts = asm_constants(&[]);
        let mut seen: Vec<&str> = consts.iter().map(|(n, _)| n.as_str()).collect();
        seen.sort_unstable();
        let before = seen.len();
        seen.dedup();
        assert_eq!(seen.len(), before, "each .equ name once");
        assert_eq!(max_entries(map::GW_LIVE), 1024);
    }
}
