//! Inputs and outputs of a run: the context, the run input, the recorded
//! effects, the outcome and the faults.

use std::net::IpAddr;

use crate::insn::DecodeError;
use crate::skb::{self, SKB_SIZE};

/// The `__sk_buff` fields a program can see (values as the program reads them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SkbContext {
    /// `pkt_type` (0 host, 1 broadcast, 2 multicast, 3 other host).
    pub pkt_type: u32,
    /// `mark`.
    pub mark: u32,
    /// `queue_mapping`.
    pub queue_mapping: u32,
    /// `protocol`: the ethertype in network byte order, as the program reads
    /// it (IPv4 reads as `0x0008`).
    pub protocol: u32,
    /// `vlan_present`.
    pub vlan_present: u32,
    /// `vlan_tci`.
    pub vlan_tci: u32,
    /// `vlan_proto`.
    pub vlan_proto: u32,
    /// `priority`.
    pub priority: u32,
    /// `ingress_ifindex`.
    pub ingress_ifindex: u32,
    /// `ifindex`.
    pub ifindex: u32,
    /// `tc_index`.
    pub tc_index: u32,
    /// `cb[0..5]`.
    pub cb: [u32; 5],
    /// `hash` (also what `get_hash_recalc` returns).
    pub hash: u32,
    /// `tc_classid`.
    pub tc_classid: u32,
    /// `napi_id`.
    pub napi_id: u32,
    /// `tstamp`.
    pub tstamp: u64,
    /// `wire_len`.
    pub wire_len: u32,
    /// `gso_segs`.
    pub gso_segs: u32,
    /// `gso_size`.
    pub gso_size: u32,
    /// `hwtstamp`.
    pub hwtstamp: u64,
}

impl SkbContext {
    /// The context `BPF_PROG_TEST_RUN` builds for an Ethernet frame on the
    /// loopback device: `protocol` from the ethertype, `ifindex` 1, `pkt_type`
    /// from the destination MAC as `eth_type_trans` sets it (the loopback
    /// address is all zeros).
    #[must_use]
    pub fn for_frame(frame: &[u8]) -> SkbContext {
        let protocol = frame.get(12..14).map_or(0, |b| u32::from(u16::from_le_bytes([b[0], b[1]])));
        let pkt_type = match frame.get(0..6) {
            Some(d) if d.iter().all(|b| *b == 0xff) => 1,
            Some(d) if d[0] & 1 == 1 => 2,
            Some(d) if d.iter().all(|b| *b == 0) => 0,
            Some(_) => 3,
            None => 0,
        };
        SkbContext { pkt_type, protocol, ifindex: 1, wire_len: frame.len() as u32, ..SkbContext::default() }
    }

    pub(super) fn to_bytes(&self, len: u32) -> [u8; SKB_SIZE] {
        let mut b = [0u8; SKB_SIZE];
        let mut put32 = |off: i32, v: u32| {
            let o = off as usize;
            b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        };
        put32(skb::off::LEN, len);
        put32(skb::off::PKT_TYPE, self.pkt_type);
        put32(skb::off::MARK, self.mark);
        put32(skb::off::QUEUE_MAPPING, self.queue_mapping);
        put32(skb::off::PROTOCOL, self.protocol);
        put32(skb::off::VLAN_PRESENT, self.vlan_present);
        put32(skb::off::VLAN_TCI, self.vlan_tci);
        put32(skb::off::VLAN_PROTO, self.vlan_proto);
        put32(skb::off::PRIORITY, self.priority);
        put32(skb::off::INGRESS_IFINDEX, self.ingress_ifindex);
        put32(skb::off::IFINDEX, self.ifindex);
        put32(skb::off::TC_INDEX, self.tc_index);
        for (i, v) in self.cb.iter().enumerate() {
            put32(skb::off::CB + 4 * i as i32, *v);
        }
        put32(skb::off::HASH, self.hash);
        put32(skb::off::TC_CLASSID, self.tc_classid);
        put32(skb::off::NAPI_ID, self.napi_id);
        put32(skb::off::WIRE_LEN, self.wire_len);
        put32(skb::off::GSO_SEGS, self.gso_segs);
        put32(skb::off::GSO_SIZE, self.gso_size);
        b[152..160].copy_from_slice(&self.tstamp.to_le_bytes());
        b[184..192].copy_from_slice(&self.hwtstamp.to_le_bytes());
        b
    }

    pub(super) fn from_bytes(b: &[u8; SKB_SIZE]) -> SkbContext {
        let g = |off: i32| {
            let o = off as usize;
            u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
        };
        let g64 = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        SkbContext {
            pkt_type: g(skb::off::PKT_TYPE),
            mark: g(skb::off::MARK),
            queue_mapping: g(skb::off::QUEUE_MAPPING),
            protocol: g(skb::off::PROTOCOL),
            vlan_present: g(skb::off::VLAN_PRESENT),
            vlan_tci: g(skb::off::VLAN_TCI),
            vlan_proto: g(skb::off::VLAN_PROTO),
            priority: g(skb::off::PRIORITY),
            ingress_ifindex: g(skb::off::INGRESS_IFINDEX),
            ifindex: g(skb::off::IFINDEX),
            tc_index: g(skb::off::TC_INDEX),
            cb: [g(skb::off::CB), g(skb::off::CB + 4), g(skb::off::CB + 8), g(skb::off::CB + 12), g(skb::off::CB + 16)],
            hash: g(skb::off::HASH),
            tc_classid: g(skb::off::TC_CLASSID),
            napi_id: g(skb::off::NAPI_ID),
            tstamp: g64(152),
            wire_len: g(skb::off::WIRE_LEN),
            gso_segs: g(skb::off::GSO_SEGS),
            gso_size: g(skb::off::GSO_SIZE),
            hwtstamp: g64(184),
        }
    }
}

/// Tunnel metadata, as `bpf_skb_set_tunnel_key` receives it or
/// `bpf_skb_get_tunnel_key` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelKey {
    /// VNI / key (`tunnel_id`).
    pub tunnel_id: u32,
    /// Remote endpoint (outer destination when sending).
    pub remote: IpAddr,
    /// Outer TOS.
    pub tos: u8,
    /// Outer TTL.
    pub ttl: u8,
    /// IPv6 flow label.
    pub label: u32,
    /// Local endpoint, if the key's size includes it and it is set.
    pub local: Option<IpAddr>,
}

/// A `bpf_skb_set_tunnel_key` that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelKeySet {
    /// The key.
    pub key: TunnelKey,
    /// The helper's flags (`BPF_F_ZERO_CSUM_TX`, `BPF_F_DONT_FRAGMENT`, ...).
    pub flags: u64,
    /// The `size` argument.
    pub size: u32,
}

/// How a packet was redirected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectKind {
    /// `bpf_redirect`.
    Redirect,
    /// `bpf_redirect_neigh`, with the explicit next hop if one was given.
    Neigh {
        /// Next hop from `struct bpf_redir_neigh`.
        nexthop: Option<IpAddr>,
    },
}

/// A redirect the program requested (the last one wins, as in the kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// Target interface.
    pub ifindex: u32,
    /// Flags (`BPF_F_INGRESS` for `bpf_redirect`).
    pub flags: u64,
    /// Which helper.
    pub kind: RedirectKind,
}

/// Bytes written by `bpf_skb_store_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBytes {
    /// Packet offset.
    pub offset: u32,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The helper's flags.
    pub flags: u64,
}

/// A checksum update by `bpf_l3_csum_replace` / `bpf_l4_csum_replace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsumReplace {
    /// True for the L4 helper.
    pub l4: bool,
    /// Offset of the checksum field.
    pub offset: u32,
    /// `from` argument.
    pub from: u64,
    /// `to` argument.
    pub to: u64,
    /// Flags.
    pub flags: u64,
}

/// A map update made by the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapUpdate {
    /// Map name.
    pub map: String,
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Flags.
    pub flags: u64,
    /// Helper result (0 or `-errno`).
    pub result: i64,
}

/// A map delete made by the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDelete {
    /// Map name.
    pub map: String,
    /// Key bytes.
    pub key: Vec<u8>,
    /// Helper result (0 or `-errno`).
    pub result: i64,
}

/// Everything a run did besides computing R0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effects {
    /// The last tunnel key set.
    pub tunnel_key: Option<TunnelKeySet>,
    /// The last redirect requested.
    pub redirect: Option<Redirect>,
    /// `skb_store_bytes` calls that succeeded.
    pub stores: Vec<StoredBytes>,
    /// Checksum helper calls that succeeded.
    pub csum_replaces: Vec<CsumReplace>,
    /// Map updates (successful or not).
    pub map_updates: Vec<MapUpdate>,
    /// Map deletes (successful or not).
    pub map_deletes: Vec<MapDelete>,
    /// The last successful `skb_change_type`.
    pub change_type: Option<u32>,
    /// Every helper call: (slot index, helper id).
    pub helper_calls: Vec<(usize, i32)>,
    /// The last `bpf_tail_call` attempted.
    pub tail_call: Option<TailCall>,
    /// `bpf_ringbuf_output` calls (successful or not).
    pub ringbuf_outputs: Vec<RingbufOutput>,
}

/// A `bpf_ringbuf_output` the program made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingbufOutput {
    /// The ring buffer.
    pub map: String,
    /// The record.
    pub data: Vec<u8>,
    /// The flags argument.
    pub flags: u64,
    /// Helper result (0, or `-EAGAIN` when the ring was full).
    pub result: i64,
}

/// A `bpf_tail_call` the program made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCall {
    /// The `prog_array` map.
    pub map: String,
    /// The index argument.
    pub index: u32,
    /// The entry found there (the program id user space stored), or `None`
    /// when the slot is empty or out of range and execution continued after
    /// the call (the kernel's fall-through).
    pub target: Option<u32>,
}

/// The input of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInput {
    /// The frame (starting at the Ethernet header, as tc programs see it).
    pub packet: Vec<u8>,
    /// The context.
    pub skb: SkbContext,
    /// Tunnel metadata of the received packet (`None`: `skb_get_tunnel_key` fails).
    pub tunnel: Option<TunnelKey>,
    /// What `ktime_get_ns` returns.
    pub ktime_ns: u64,
    /// What `get_smp_processor_id` returns (and which per-CPU value is used).
    pub cpu: u32,
    /// Seed of `get_prandom_u32`.
    pub prandom_seed: u64,
    /// Maximum instructions executed before [`Fault::Budget`].
    pub budget: u64,
}

impl RunInput {
    /// An input for `frame` with the context [`SkbContext::for_frame`] gives,
    /// CPU 0, time 0 and a budget of 1,000,000 instructions.
    #[must_use]
    pub fn for_frame(frame: &[u8]) -> RunInput {
        RunInput {
            packet: frame.to_vec(),
            skb: SkbContext::for_frame(frame),
            tunnel: None,
            ktime_ns: 0,
            cpu: 0,
            prandom_seed: 0x2545_f491_4f6c_dd1d,
            budget: 1_000_000,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// R0 at exit.
    pub r0: u64,
    /// Effects.
    pub effects: Effects,
    /// Instructions executed.
    pub insns: u64,
    /// The packet after the run.
    pub packet: Vec<u8>,
    /// The context after the run.
    pub skb: SkbContext,
}

/// A run that could not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// A slot that does not decode.
    #[error("insn {insn}: {source}")]
    Decode {
        /// Slot index.
        insn: usize,
        /// Decoder error.
        source: DecodeError,
    },
    /// A hole that was never filled.
    #[error("insn {insn}: hole `%{hole}` is not filled")]
    UnfilledHole {
        /// Slot index.
        insn: usize,
        /// Hole name.
        hole: String,
    },
    /// A map reference to a map the store does not have.
    #[error("insn {insn}: no map `{map}`")]
    UnknownMap {
        /// Slot index.
        insn: usize,
        /// Map name.
        map: String,
    },
    /// A memory access outside every region (or a dead map value).
    #[error("insn {insn}: out-of-bounds {kind} of {size} bytes at {addr:#x}")]
    OutOfBounds {
        /// Slot index.
        insn: usize,
        /// "read" or "write".
        kind: &'static str,
        /// Address.
        addr: u64,
        /// Size.
        size: usize,
    },
    /// A read of uninitialized stack.
    #[error("insn {insn}: read of uninitialized stack at fp{off:+}")]
    UninitStack {
        /// Slot index.
        insn: usize,
        /// Offset from the frame pointer.
        off: i64,
    },
    /// A context access tc programs may not make.
    #[error("insn {insn}: invalid __sk_buff {kind} at offset {off} size {size}")]
    CtxAccess {
        /// Slot index.
        insn: usize,
        /// "read" or "write".
        kind: &'static str,
        /// Offset.
        off: u64,
        /// Size.
        size: usize,
    },
    /// An unknown helper.
    #[error("insn {insn}: unknown helper {id}")]
    BadHelper {
        /// Slot index.
        insn: usize,
        /// Helper id.
        id: i32,
    },
    /// A helper argument the helper cannot use.
    #[error("insn {insn}: helper `{helper}`: {reason}")]
    HelperArg {
        /// Slot index.
        insn: usize,
        /// Helper name.
        helper: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A fall-through past the last slot, or a jump into the second slot of an `ld_imm64`.
    #[error("insn {insn}: control leaves the program")]
    OutOfProgram {
        /// Slot index.
        insn: usize,
    },
    /// A jump (`goto`, `gotol`, conditional) whose target is outside the program.
    #[error("insn {insn}: jump to slot {target}, outside the program's {len} slots")]
    JumpOutOfProgram {
        /// Slot index of the jump.
        insn: usize,
        /// Target slot (may be negative).
        target: i64,
        /// Slots in the program.
        len: usize,
    },
    /// Something the interpreter does not support (BPF-to-BPF calls, kfuncs).
    #[error("insn {insn}: unsupported: {what}")]
    Unsupported {
        /// Slot index.
        insn: usize,
        /// What.
        what: &'static str,
    },
    /// The instruction budget ran out.
    #[error("insn {insn}: instruction budget of {budget} exhausted")]
    Budget {
        /// Slot index.
        insn: usize,
        /// The budget.
        budget: u64,
    },
}
