//! An in-process interpreter for tc classifier programs
//! (`BPF_PROG_TYPE_SCHED_CLS` semantics), with in-memory maps and the helpers
//! of [`crate::helpers`].
//!
//! Contract:
//! - [`run`] executes a program whose holes are filled and whose map
//!   references name maps of the [`MapStore`]; it returns R0, the packet and
//!   context after the run, the instruction count and a record of effects
//!   (tunnel key set, redirects, bytes stored, checksum updates, map updates
//!   and deletes, packet-type changes, helper calls, tail calls).
//! - `bpf_tail_call` looks the index up in the `prog_array` map of the
//!   [`MapStore`] (user space stores a program id there with
//!   [`MapStore::update`]). An empty slot falls through, as in the kernel; a
//!   filled one ends the run with R0 = 0 (the interpreter cannot run the
//!   target), and either way [`Effects::tail_call`] records the attempt.
//! - Arithmetic follows the kernel ([`crate::insn::eval_alu`]): division by
//!   zero gives 0, modulo by zero leaves the dividend. Legacy `LD_ABS`/`LD_IND`
//!   loads outside the packet end the program with R0 = 0, as in the kernel.
//! - Every other problem is a typed [`Fault`] naming the instruction:
//!   out-of-bounds or uninitialized-stack accesses, refused context accesses,
//!   unknown helpers, bad helper arguments, an exhausted instruction budget.
//!   (Programs that pass [`crate::verifier::verify`] never fault, except on the
//!   budget.)
//! - Memory is a flat 64-bit address space: context, packet, stack and each
//!   map value live at fixed, distinct addresses, so pointer arithmetic and
//!   comparisons behave as on the kernel. Helper results that depend on the
//!   machine (time, CPU, random numbers, the packet hash, tunnel metadata of
//!   received packets) come from [`RunInput`].
//! - Checksum helpers model a packet with `ip_summed == CHECKSUM_NONE`, as
//!   `BPF_PROG_TEST_RUN` builds it: the checksum fields are updated in place.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::helpers::{self, id};
use crate::insn::{
    AtomicOp, CallTarget, DecodeError, Instruction, Operand, Reg, Size, Width, decode, eval_alu, eval_end, eval_movsx,
    eval_neg, imm_value,
};
use crate::layout::{self, tunnel_key};
use crate::maps::{MapDef, MapKind};
use crate::program::Program;
use crate::skb::{self, FieldKind, SKB_SIZE};

const CTX_BASE: u64 = 0x0000_1000_0000_0000;
const PKT_BASE: u64 = 0x0000_2000_0000_0000;
const STACK_BASE: u64 = 0x0000_3000_0000_0000;
const MAP_BASE: u64 = 0x0000_4000_0000_0000;
const MAP_WINDOW_SHIFT: u32 = 36;
const MAP_PTR_BASE: u64 = 0x0000_5000_0000_0000;
const STACK_SIZE: usize = 512;

// kernel constants, as the helpers take and return them (defined in [`crate::layout`])
pub const TC_ACT_SHOT: u64 = layout::TC_ACT_SHOT as u64;
pub const TC_ACT_REDIRECT: u64 = layout::TC_ACT_REDIRECT as u64;
const BPF_F_INGRESS: u64 = layout::BPF_F_INGRESS as u64;
const BPF_F_TUNINFO_IPV6: u64 = layout::BPF_F_TUNINFO_IPV6 as u64;
const BPF_F_TUNINFO_FLAGS: u64 = layout::BPF_F_TUNINFO_FLAGS as u64;
const BPF_F_ZERO_CSUM_TX: u64 = layout::BPF_F_ZERO_CSUM_TX as u64;
const BPF_F_DONT_FRAGMENT: u64 = layout::BPF_F_DONT_FRAGMENT as u64;
const BPF_F_SEQ_NUMBER: u64 = layout::BPF_F_SEQ_NUMBER as u64;
const BPF_F_NO_TUNNEL_KEY: u64 = layout::BPF_F_NO_TUNNEL_KEY as u64;

const ENOENT: i64 = 2;
const E2BIG: i64 = 7;
const EFAULT: i64 = 14;
const EEXIST: i64 = 17;
const EINVAL: i64 = 22;
const ENOSPC: i64 = 28;
const EPROTO: i64 = 71;
const ENOTSUPP: i64 = 524;

// ----- maps -------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Slot {
    /// Value bytes for every CPU (one copy unless per-CPU).
    data: Vec<u8>,
    /// For LRU eviction.
    last_use: u64,
}

#[derive(Debug, Clone)]
struct MapInstance {
    def: MapDef,
    /// Key → slot index (hash kinds: the key; LPM: the key with masked data;
    /// arrays: the little-endian index).
    index: BTreeMap<Vec<u8>, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    clock: u64,
    /// LPM tries: how many keys have each prefix length.
    lpm_lens: BTreeMap<u32, usize>,
}

/// Failure of a map operation from user space.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// No map of that name.
    #[error("no map `{map}`")]
    UnknownMap {
        /// Map name.
        map: String,
    },
    /// Key or value of the wrong length.
    #[error("map `{map}`: {what} has {found} bytes, expected {expected}")]
    BadSize {
        /// Map name.
        map: String,
        /// "key" or "value".
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Given length.
        found: usize,
    },
    /// The kernel-style error code the operation returned.
    #[error("map `{map}`: operation failed with errno {errno}")]
    Errno {
        /// Map name.
        map: String,
        /// Positive errno.
        errno: i64,
    },
}

/// The maps of one program run (or of many runs sharing state), by name.
#[derive(Debug, Clone)]
pub struct MapStore {
    maps: Vec<MapInstance>,
    ncpus: usize,
}

impl MapStore {
    /// Empty maps for these definitions, one CPU.
    #[must_use]
    pub fn new(defs: &[MapDef]) -> MapStore {
        MapStore::with_cpus(defs, 1)
    }

    /// Empty maps with `ncpus` copies of per-CPU values.
    #[must_use]
    pub fn with_cpus(defs: &[MapDef], ncpus: usize) -> MapStore {
        let ncpus = ncpus.max(1);
        let maps = defs
            .iter()
            .map(|d| {
                let mut m = MapInstance {
                    def: d.clone(),
                    index: BTreeMap::new(),
                    slots: Vec::new(),
                    free: Vec::new(),
                    clock: 0,
                    lpm_lens: BTreeMap::new(),
                };
                if d.kind.is_array() {
                    let copies = if d.kind.is_percpu() { ncpus } else { 1 };
                    for i in 0..d.max_entries {
                        m.index.insert(i.to_le_bytes().to_vec(), i as usize);
                        m.slots.push(Some(Slot { data: vec![0; d.value_size as usize * copies], last_use: 0 }));
                    }
                }
                m
            })
            .collect();
        MapStore { maps, ncpus }
    }

    /// The definition of map `name`.
    #[must_use]
    pub fn def(&self, name: &str) -> Option<&MapDef> {
        self.maps.iter().map(|m| &m.def).find(|d| d.name == name)
    }

    fn index(&self, name: &str) -> Result<usize, MapError> {
        self.maps.iter().position(|m| m.def.name == name).ok_or_else(|| MapError::UnknownMap { map: name.to_owned() })
    }

    fn copies(&self, m: usize) -> usize {
        if self.maps[m].def.kind.is_percpu() { self.ncpus } else { 1 }
    }

    fn check_key(&self, m: usize, key: &[u8]) -> Result<(), MapError> {
        let d = &self.maps[m].def;
        if key.len() != d.key_size as usize {
            return Err(MapError::BadSize {
                map: d.name.clone(),
                what: "key",
                expected: d.key_size as usize,
                found: key.len(),
            });
        }
        Ok(())
    }

    /// Inserts or replaces an entry (`flags`: 0 any, 1 no-exist, 2 exist). For
    /// per-CPU maps, `value` is either one value (copied to every CPU) or one
    /// value per CPU, concatenated. LPM keys are `u32` prefix length (host
    /// order) followed by the data.
    ///
    /// # Errors
    /// Unknown map, wrong sizes, or the errno the kernel would return.
    pub fn update(&mut self, map: &str, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        let m = self.index(map)?;
        self.check_key(m, key)?;
        let vs = self.maps[m].def.value_size as usize;
        let copies = self.copies(m);
        let data = if value.len() == vs {
            value.repeat(copies)
        } else if value.len() == vs * copies {
            value.to_vec()
        } else {
            return Err(MapError::BadSize { map: map.to_owned(), what: "value", expected: vs, found: value.len() });
        };
        match self.update_raw(m, key, &data, flags, None) {
            0 => Ok(()),
            e => Err(MapError::Errno { map: map.to_owned(), errno: -e }),
        }
    }

    /// The value for `key` (CPU 0's for per-CPU maps); LPM maps do a
    /// longest-prefix lookup.
    ///
    /// # Errors
    /// Unknown map or wrong key size.
    pub fn lookup(&self, map: &str, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        Ok(self.lookup_percpu(map, key)?.and_then(|v| v.into_iter().next()))
    }

    /// The per-CPU values for `key` (one element for other maps).
    ///
    /// # Errors
    /// Unknown map or wrong key size.
    pub fn lookup_percpu(&self, map: &str, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, MapError> {
        let m = self.index(map)?;
        self.check_key(m, key)?;
        let vs = self.maps[m].def.value_size as usize;
        Ok(self.find(m, key).and_then(|s| {
            self.maps[m].slots[s].as_ref().map(|slot| slot.data.chunks(vs.max(1)).map(<[u8]>::to_vec).collect())
        }))
    }

    /// Deletes `key`; returns whether it existed.
    ///
    /// # Errors
    /// Unknown map, wrong key size, or arrays (which cannot delete).
    pub fn delete(&mut self, map: &str, key: &[u8]) -> Result<bool, MapError> {
        let m = self.index(map)?;
        self.check_key(m, key)?;
        match self.delete_raw(m, key) {
            0 => Ok(true),
            e if e == -ENOENT => Ok(false),
            e => Err(MapError::Errno { map: map.to_owned(), errno: -e }),
        }
    }

    /// All keys, sorted (LPM keys with masked data).
    ///
    /// # Errors
    /// Unknown map.
    pub fn keys(&self, map: &str) -> Result<Vec<Vec<u8>>, MapError> {
        let m = self.index(map)?;
        Ok(self.maps[m].index.keys().cloned().collect())
    }

    fn lpm_canonical(def: &MapDef, key: &[u8]) -> Option<Vec<u8>> {
        let prefixlen = u32::from_le_bytes([key[0], key[1], key[2], key[3]]);
        let data_bits = (def.key_size - 4) * 8;
        if prefixlen > data_bits {
            return None;
        }
        let mut out = key.to_vec();
        for (i, b) in out[4..].iter_mut().enumerate() {
            let bit = i as u32 * 8;
            if bit >= prefixlen {
                *b = 0;
            } else if prefixlen - bit < 8 {
                *b &= 0xffu8 << (8 - (prefixlen - bit));
            }
        }
        Some(out)
    }

    fn find(&self, m: usize, key: &[u8]) -> Option<usize> {
        let inst = &self.maps[m];
        if inst.def.kind != MapKind::LpmTrie {
            return inst.index.get(key).copied();
        }
        let max = u32::from_le_bytes([key[0], key[1], key[2], key[3]]);
        let data = &key[4..];
        let data_bits = (inst.def.key_size - 4) * 8;
        if inst.index.len() <= 64 {
            let mut best: Option<(u32, usize)> = None;
            for (k, slot) in &inst.index {
                let plen = u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
                if plen > max || best.is_some_and(|(b, _)| b >= plen) {
                    continue;
                }
                if prefix_matches(&k[4..], data, plen) {
                    best = Some((plen, *slot));
                }
            }
            return best.map(|(_, s)| s);
        }
        // larger tries: stored keys are canonical (data masked to the prefix),
        // so probe each prefix length present, longest first, by exact key
        let mut probe = key.to_vec();
        for plen in inst.lpm_lens.range(..=max.min(data_bits)).rev().map(|(l, _)| *l) {
            probe[..4].copy_from_slice(&plen.to_le_bytes());
            probe[4..].copy_from_slice(data);
            let full = (plen / 8) as usize;
            let rem = plen % 8;
            for (i, b) in probe[4..].iter_mut().enumerate() {
                if i > full || (i == full && rem == 0) {
                    *b = 0;
                } else if i == full {
                    *b &= 0xffu8 << (8 - rem);
                }
            }
            if let Some(s) = inst.index.get(&probe) {
                return Some(*s);
            }
        }
        None
    }

    /// Update with kernel errno semantics; returns 0 or `-errno`.
    fn update_raw(&mut self, m: usize, key: &[u8], data: &[u8], flags: u64, _cpu: Option<usize>) -> i64 {
        if flags > 2 {
            return -EINVAL;
        }
        let def = self.maps[m].def.clone();
        let inst = &mut self.maps[m];
        inst.clock += 1;
        let clock = inst.clock;
        if def.kind.is_array() {
            let idx = u32::from_le_bytes([key[0], key[1], key[2], key[3]]);
            if idx >= def.max_entries {
                return -E2BIG;
            }
            if flags == 1 {
                return -EEXIST;
            }
            if let Some(Some(slot)) = inst.slots.get_mut(idx as usize) {
                slot.data.copy_from_slice(data);
            }
            return 0;
        }
        if def.kind == MapKind::ProgArray && u32::from_le_bytes([key[0], key[1], key[2], key[3]]) >= def.max_entries {
            return -E2BIG;
        }
        let canonical = if def.kind == MapKind::LpmTrie {
            match MapStore::lpm_canonical(&def, key) {
                Some(k) => k,
                None => return -EINVAL,
            }
        } else {
            key.to_vec()
        };
        if let Some(&s) = inst.index.get(&canonical) {
            if flags == 1 {
                return -EEXIST;
            }
            if let Some(slot) = inst.slots[s].as_mut() {
                slot.data.copy_from_slice(data);
                slot.last_use = clock;
            }
            return 0;
        }
        if flags == 2 {
            return -ENOENT;
        }
        if inst.index.len() >= def.max_entries as usize {
            match def.kind {
                MapKind::LruHash => {
                    let victim = inst
                        .index
                        .iter()
                        .min_by_key(|(_, s)| inst.slots[**s].as_ref().map_or(0, |x| x.last_use))
                        .map(|(k, s)| (k.clone(), *s));
                    if let Some((k, s)) = victim {
                        inst.index.remove(&k);
                        inst.slots[s] = None;
                        inst.free.push(s);
                    }
                }
                MapKind::LpmTrie => return -ENOSPC,
                _ => return -E2BIG,
            }
        }
        let slot = Slot { data: data.to_vec(), last_use: clock };
        let s = match inst.free.pop() {
            Some(s) => {
                inst.slots[s] = Some(slot);
                s
            }
            None => {
                inst.slots.push(Some(slot));
                inst.slots.len() - 1
            }
        };
        if def.kind == MapKind::LpmTrie {
            *inst
                .lpm_lens
                .entry(u32::from_le_bytes([canonical[0], canonical[1], canonical[2], canonical[3]]))
                .or_default() += 1;
        }
        inst.index.insert(canonical, s);
        0
    }

    fn delete_raw(&mut self, m: usize, key: &[u8]) -> i64 {
        let def = self.maps[m].def.clone();
        if def.kind.is_array() {
            return -EINVAL;
        }
        let canonical = if def.kind == MapKind::LpmTrie {
            match MapStore::lpm_canonical(&def, key) {
                Some(k) => k,
                None => return -EINVAL,
            }
        } else {
            key.to_vec()
        };
        let inst = &mut self.maps[m];
        match inst.index.remove(&canonical) {
            Some(s) => {
                if def.kind == MapKind::LpmTrie {
                    let plen = u32::from_le_bytes([canonical[0], canonical[1], canonical[2], canonical[3]]);
                    if let Some(n) = inst.lpm_lens.get_mut(&plen) {
                        *n -= 1;
                        if *n == 0 {
                            inst.lpm_lens.remove(&plen);
                        }
                    }
                }
                inst.slots[s] = None;
                inst.free.push(s);
                0
            }
            None => -ENOENT,
        }
    }

    fn stride(&self, m: usize) -> u64 {
        let vs = u64::from(self.maps[m].def.value_size) * self.copies(m) as u64;
        vs.div_ceil(8) * 8
    }

    fn value_addr(&self, m: usize, slot: usize, cpu: usize) -> u64 {
        let cpu = if self.maps[m].def.kind.is_percpu() { cpu.min(self.ncpus - 1) } else { 0 };
        MAP_BASE
            + ((m as u64) << MAP_WINDOW_SHIFT)
            + slot as u64 * self.stride(m)
            + cpu as u64 * u64::from(self.maps[m].def.value_size)
    }

    /// Resolves an address inside a live map value to (map, slot, byte offset
    /// in the slot's data).
    fn resolve(&self, addr: u64, len: usize) -> Option<(usize, usize, usize)> {
        let rel = addr.checked_sub(MAP_BASE)?;
        let m = (rel >> MAP_WINDOW_SHIFT) as usize;
        let inst = self.maps.get(m)?;
        let within = rel & ((1u64 << MAP_WINDOW_SHIFT) - 1);
        let stride = self.stride(m);
        if stride == 0 {
            return None;
        }
        let slot = (within / stride) as usize;
        let off = (within % stride) as usize;
        let data = inst.slots.get(slot)?.as_ref()?;
        (off + len <= data.data.len()).then_some((m, slot, off))
    }
}

fn prefix_matches(a: &[u8], b: &[u8], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rem = bits % 8;
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    (a[full] & mask) == (b[full] & mask)
}

// ----- inputs and outputs -------------------------------------------------------------

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

    fn to_bytes(&self, len: u32) -> [u8; SKB_SIZE] {
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

    fn from_bytes(b: &[u8; SKB_SIZE]) -> SkbContext {
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
    /// A jump or fall-through outside the program.
    #[error("insn {insn}: control leaves the program")]
    OutOfProgram {
        /// Slot index.
        insn: usize,
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

// ----- the machine --------------------------------------------------------------------

struct Machine<'a> {
    pc: usize,
    regs: [u64; 11],
    ctx: [u8; SKB_SIZE],
    packet: Vec<u8>,
    stack: [u8; STACK_SIZE],
    stack_init: [bool; STACK_SIZE],
    maps: &'a mut MapStore,
    map_ids: &'a BTreeMap<usize, usize>,
    input: &'a RunInput,
    effects: Effects,
    rng: u64,
}

enum Region {
    Ctx(usize),
    Pkt(usize),
    Stack(usize),
    Map(usize, usize, usize),
}

/// Runs `program` on `input` with `maps`.
///
/// # Errors
/// A [`Fault`] naming the instruction.
pub fn run(program: &Program, maps: &mut MapStore, input: &RunInput) -> Result<RunOutcome, Fault> {
    prepare(program, maps)?.run(maps, input)
}

/// A program decoded once for many runs ([`prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    decoded: Vec<Option<(Instruction, usize)>>,
    map_ids: BTreeMap<usize, usize>,
    /// Map names in store order, to check a store matches.
    maps: Vec<String>,
}

/// Decodes `program` and resolves its map references against `maps`, for
/// repeated [`Prepared::run`]s on stores with the same map definitions.
///
/// # Errors
/// An unfilled hole, an unknown map or an undecodable slot.
pub fn prepare(program: &Program, maps: &MapStore) -> Result<Prepared, Fault> {
    if let Some(h) = program.holes.first() {
        return Err(Fault::UnfilledHole { insn: h.insn, hole: h.name.clone() });
    }
    let mut map_ids = BTreeMap::new();
    for r in &program.map_relocs {
        let idx = maps.index(&r.map).map_err(|_| Fault::UnknownMap { insn: r.insn, map: r.map.clone() })?;
        map_ids.insert(r.insn, idx);
    }
    let mut decoded = Vec::with_capacity(program.insns.len());
    let mut pc = 0;
    while pc < program.insns.len() {
        match decode(&program.insns, pc) {
            Ok((i, n)) => {
                decoded.push(Some((i, n)));
                if n == 2 {
                    decoded.push(None);
                }
                pc += n;
            }
            Err(source) => return Err(Fault::Decode { insn: pc, source }),
        }
    }
    Ok(Prepared { decoded, map_ids, maps: maps.maps.iter().map(|m| m.def.name.clone()).collect() })
}

impl Prepared {
    /// Runs the prepared program, as [`run`] does.
    ///
    /// # Errors
    /// A [`Fault`] naming the instruction; [`Fault::UnknownMap`] if `maps`
    /// does not have the maps the program was prepared with.
    pub fn run(&self, maps: &mut MapStore, input: &RunInput) -> Result<RunOutcome, Fault> {
        let same =
            maps.maps.len() == self.maps.len() && maps.maps.iter().zip(&self.maps).all(|(m, n)| m.def.name == *n);
        if !same {
            let (insn, map) = self
                .map_ids
                .iter()
                .next()
                .map_or((0, String::new()), |(i, m)| (*i, self.maps.get(*m).cloned().unwrap_or_default()));
            return Err(Fault::UnknownMap { insn, map });
        }
        let decoded = &self.decoded;
        let map_ids = &self.map_ids;
        let len = input.packet.len() as u32;
        let mut m = Machine {
            pc: 0,
            regs: [0; 11],
            ctx: input.skb.to_bytes(len),
            packet: input.packet.clone(),
            stack: [0; STACK_SIZE],
            stack_init: [false; STACK_SIZE],
            maps,
            map_ids,
            input,
            effects: Effects::default(),
            rng: input.prandom_seed | 1,
        };
        m.regs[1] = CTX_BASE;
        m.regs[10] = STACK_BASE + STACK_SIZE as u64;
        let mut count = 0u64;
        loop {
            let pc = m.pc;
            if count >= input.budget {
                return Err(Fault::Budget { insn: pc, budget: input.budget });
            }
            count += 1;
            let Some(Some((insn, n))) = decoded.get(pc).copied() else {
                return Err(Fault::OutOfProgram { insn: pc });
            };
            match m.step(&insn, n)? {
                Flow::Continue => {}
                Flow::Exit(r0) => {
                    let skb = SkbContext::from_bytes(&m.ctx);
                    return Ok(RunOutcome { r0, effects: m.effects, insns: count, packet: m.packet, skb });
                }
            }
        }
    }
}

enum Flow {
    Continue,
    Exit(u64),
}

impl Machine<'_> {
    fn region(&self, addr: u64, len: usize, kind: &'static str) -> Result<Region, Fault> {
        let oob = || Fault::OutOfBounds { insn: self.pc, kind, addr, size: len };
        let in_range = |base: u64, size: usize| {
            addr.checked_sub(base)
                .filter(|o| o.checked_add(len as u64).is_some_and(|e| e <= size as u64))
                .map(|o| o as usize)
        };
        if let Some(o) = in_range(CTX_BASE, SKB_SIZE) {
            return Ok(Region::Ctx(o));
        }
        if let Some(o) = in_range(PKT_BASE, self.packet.len()) {
            return Ok(Region::Pkt(o));
        }
        if let Some(o) = in_range(STACK_BASE, STACK_SIZE) {
            return Ok(Region::Stack(o));
        }
        if let Some((m, s, o)) = self.maps.resolve(addr, len) {
            return Ok(Region::Map(m, s, o));
        }
        Err(oob())
    }

    fn read_bytes(&self, addr: u64, len: usize) -> Result<Vec<u8>, Fault> {
        if len == 0 {
            return Ok(Vec::new());
        }
        match self.region(addr, len, "read")? {
            Region::Ctx(o) => Ok(self.ctx[o..o + len].to_vec()),
            Region::Pkt(o) => Ok(self.packet[o..o + len].to_vec()),
            Region::Stack(o) => {
                if let Some(i) = (o..o + len).find(|i| !self.stack_init[*i]) {
                    return Err(Fault::UninitStack { insn: self.pc, off: i as i64 - STACK_SIZE as i64 });
                }
                Ok(self.stack[o..o + len].to_vec())
            }
            Region::Map(m, s, o) => {
                Ok(self.maps.maps[m].slots[s].as_ref().map_or_else(Vec::new, |slot| slot.data[o..o + len].to_vec()))
            }
        }
    }

    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> Result<(), Fault> {
        let len = bytes.len();
        if len == 0 {
            return Ok(());
        }
        match self.region(addr, len, "write")? {
            Region::Ctx(o) => self.ctx[o..o + len].copy_from_slice(bytes),
            Region::Pkt(o) => self.packet[o..o + len].copy_from_slice(bytes),
            Region::Stack(o) => {
                self.stack[o..o + len].copy_from_slice(bytes);
                for b in &mut self.stack_init[o..o + len] {
                    *b = true;
                }
            }
            Region::Map(m, s, o) => {
                if let Some(slot) = self.maps.maps[m].slots[s].as_mut() {
                    slot.data[o..o + len].copy_from_slice(bytes);
                }
            }
        }
        Ok(())
    }

    fn load(&self, addr: u64, size: Size) -> Result<u64, Fault> {
        let n = size.bytes();
        if let Some(off) = addr.checked_sub(CTX_BASE).filter(|o| *o < SKB_SIZE as u64) {
            let field = skb::check_access(off as i32, n as i32, false).map_err(|_| Fault::CtxAccess {
                insn: self.pc,
                kind: "read",
                off,
                size: n,
            })?;
            match field.kind {
                FieldKind::PktData => return Ok(PKT_BASE),
                FieldKind::PktEnd => return Ok(PKT_BASE + self.packet.len() as u64),
                FieldKind::Scalar => {}
            }
        }
        let b = self.read_bytes(addr, n)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&b);
        Ok(u64::from_le_bytes(v))
    }

    fn store(&mut self, addr: u64, size: Size, value: u64) -> Result<(), Fault> {
        let n = size.bytes();
        if let Some(off) = addr.checked_sub(CTX_BASE).filter(|o| *o < SKB_SIZE as u64) {
            skb::check_access(off as i32, n as i32, true).map_err(|_| Fault::CtxAccess {
                insn: self.pc,
                kind: "write",
                off,
                size: n,
            })?;
        }
        self.write_bytes(addr, &value.to_le_bytes()[..n])
    }

    fn operand(&self, width: Width, src: Operand) -> u64 {
        match src {
            Operand::Reg(r) => self.regs[r.index()],
            Operand::Imm(i) => imm_value(width, i),
        }
    }

    fn step(&mut self, insn: &Instruction, n: usize) -> Result<Flow, Fault> {
        let pc = self.pc;
        let mut next = pc + n;
        match *insn {
            Instruction::Alu { width, op, dst, src } => {
                let s = self.operand(width, src);
                self.regs[dst.index()] = eval_alu(width, op, self.regs[dst.index()], s);
            }
            Instruction::MovSx { width, ext, dst, src } => {
                self.regs[dst.index()] = eval_movsx(width, ext, self.regs[src.index()])
            }
            Instruction::Neg { width, dst } => {
                self.regs[dst.index()] = eval_neg(width, self.regs[dst.index()]);
            }
            Instruction::End { op, bits, dst } => {
                self.regs[dst.index()] = eval_end(op, bits, self.regs[dst.index()]);
            }
            Instruction::Ja { off } => next = jump(pc, i64::from(off)),
            Instruction::JaLong { imm } => next = jump(pc, i64::from(imm)),
            Instruction::Jmp { width, cond, dst, src, off } => {
                if cond.eval(width, self.regs[dst.index()], self.operand(width, src)) {
                    next = jump(pc, i64::from(off));
                }
            }
            Instruction::Call(CallTarget::Helper(id::TAIL_CALL)) => {
                self.effects.helper_calls.push((pc, id::TAIL_CALL));
                if self.tail_call()? {
                    return Ok(Flow::Exit(0));
                }
                for r in 0..=5 {
                    self.regs[r] = 0;
                }
            }
            Instruction::Call(CallTarget::Helper(hid)) => {
                self.effects.helper_calls.push((pc, hid));
                let r0 = self.call(hid)?;
                self.regs[0] = r0;
                for r in 1..=5 {
                    self.regs[r] = 0;
                }
            }
            Instruction::Call(CallTarget::Local(_)) => {
                return Err(Fault::Unsupported { insn: pc, what: "BPF-to-BPF calls" });
            }
            Instruction::Call(CallTarget::Kfunc(_)) => {
                return Err(Fault::Unsupported { insn: pc, what: "kfunc calls" });
            }
            Instruction::Exit => return Ok(Flow::Exit(self.regs[0])),
            Instruction::LdImm64 { dst, imm, .. } => {
                self.regs[dst.index()] = match self.map_ids.get(&pc) {
                    Some(m) => MAP_PTR_BASE + *m as u64,
                    None => imm as u64,
                };
            }
            Instruction::LdAbs { size, imm } => return Ok(self.ld_legacy(size, i64::from(imm), next)),
            Instruction::LdInd { size, src, imm } => {
                let off = (self.regs[src.index()] as u32 as i32 as i64).wrapping_add(i64::from(imm));
                return Ok(self.ld_legacy(size, off, next));
            }
            Instruction::Load { size, dst, src, off } => {
                let addr = self.regs[src.index()].wrapping_add(i64::from(off) as u64);
                self.regs[dst.index()] = self.load(addr, size)?;
            }
            Instruction::LoadSx { size, dst, src, off } => {
                let addr = self.regs[src.index()].wrapping_add(i64::from(off) as u64);
                let v = self.load(addr, size)?;
                self.regs[dst.index()] = match size {
                    Size::B => i64::from(v as u8 as i8) as u64,
                    Size::H => i64::from(v as u16 as i16) as u64,
                    Size::W => i64::from(v as u32 as i32) as u64,
                    Size::DW => v,
                };
            }
            Instruction::Store { size, dst, off, imm } => {
                let addr = self.regs[dst.index()].wrapping_add(i64::from(off) as u64);
                self.store(addr, size, i64::from(imm) as u64)?;
            }
            Instruction::StoreReg { size, dst, src, off } => {
                let addr = self.regs[dst.index()].wrapping_add(i64::from(off) as u64);
                self.store(addr, size, self.regs[src.index()])?;
            }
            Instruction::Atomic { size, op, dst, src, off } => {
                let addr = self.regs[dst.index()].wrapping_add(i64::from(off) as u64);
                let old = self.load(addr, size)?;
                let s = self.regs[src.index()];
                let width = if size == Size::DW { Width::W64 } else { Width::W32 };
                let mask = if size == Size::DW { u64::MAX } else { u64::from(u32::MAX) };
                let new = match op {
                    AtomicOp::Add | AtomicOp::FetchAdd => old.wrapping_add(s) & mask,
                    AtomicOp::Or | AtomicOp::FetchOr => (old | s) & mask,
                    AtomicOp::And | AtomicOp::FetchAnd => old & s & mask,
                    AtomicOp::Xor | AtomicOp::FetchXor => (old ^ s) & mask,
                    AtomicOp::Xchg => s & mask,
                    AtomicOp::CmpXchg => {
                        if crate::insn::JmpCond::Eq.eval(width, old, self.regs[0]) {
                            s & mask
                        } else {
                            old
                        }
                    }
                };
                self.store(addr, size, new)?;
                if op == AtomicOp::CmpXchg {
                    self.regs[0] = old;
                } else if op.fetches() {
                    self.regs[src.index()] = old;
                }
            }
        }
        self.pc = next;
        Ok(Flow::Continue)
    }

    fn ld_legacy(&mut self, size: Size, off: i64, next: usize) -> Flow {
        let n = size.bytes();
        for r in 1..=5 {
            self.regs[r] = 0;
        }
        let ok = usize::try_from(off).ok().filter(|o| o + n <= self.packet.len());
        let Some(o) = ok else {
            return Flow::Exit(0);
        };
        let b = &self.packet[o..o + n];
        self.regs[0] = match size {
            Size::B => u64::from(b[0]),
            Size::H => u64::from(u16::from_be_bytes([b[0], b[1]])),
            _ => u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        };
        self.pc = next;
        Flow::Continue
    }

    /// `bpf_tail_call(ctx, prog_array, index)`: records the attempt; true
    /// when the slot holds a program (the run ends there).
    fn tail_call(&mut self) -> Result<bool, Fault> {
        let m = self.map_arg(Reg::R2, "tail_call")?;
        let def = &self.maps.maps[m].def;
        if def.kind != MapKind::ProgArray {
            return Err(Fault::HelperArg {
                insn: self.pc,
                helper: "tail_call",
                reason: format!("map `{}` is not a prog_array", def.name),
            });
        }
        let map = def.name.clone();
        let index = self.regs[3] as u32;
        let target = self.maps.find(m, &index.to_le_bytes()).and_then(|s| {
            self.maps.maps[m].slots[s]
                .as_ref()
                .map(|x| u32::from_le_bytes([x.data[0], x.data[1], x.data[2], x.data[3]]))
        });
        let taken = target.is_some();
        self.effects.tail_call = Some(TailCall { map, index, target });
        Ok(taken)
    }

    fn map_arg(&self, reg: Reg, helper: &'static str) -> Result<usize, Fault> {
        let v = self.regs[reg.index()];
        v.checked_sub(MAP_PTR_BASE)
            .map(|i| i as usize)
            .filter(|i| *i < self.maps.maps.len())
            .ok_or_else(|| Fault::HelperArg { insn: self.pc, helper, reason: format!("{reg} is not a map pointer") })
    }

    fn call(&mut self, hid: i32) -> Result<u64, Fault> {
        let Some(spec) = helpers::by_id(hid) else {
            return Err(Fault::BadHelper { insn: self.pc, id: hid });
        };
        let r = |i: usize| self.regs[i];
        let neg = |e: i64| (-e) as u64;
        Ok(match hid {
            id::MAP_LOOKUP_ELEM => {
                let m = self.map_arg(Reg::R1, spec.name)?;
                if self.maps.maps[m].def.kind == MapKind::ProgArray {
                    return Err(Fault::HelperArg {
                        insn: self.pc,
                        helper: spec.name,
                        reason: "prog arrays cannot be looked up from a program".into(),
                    });
                }
                let key = self.read_bytes(r(2), self.maps.maps[m].def.key_size as usize)?;
                match self.maps.find(m, &key) {
                    Some(slot) => {
                        let inst = &mut self.maps.maps[m];
                        inst.clock += 1;
                        let clock = inst.clock;
                        if let Some(s) = inst.slots[slot].as_mut() {
                            s.last_use = clock;
                        }
                        self.maps.value_addr(m, slot, self.input.cpu as usize)
                    }
                    None => 0,
                }
            }
            id::MAP_UPDATE_ELEM => {
                let m = self.map_arg(Reg::R1, spec.name)?;
                let def = self.maps.maps[m].def.clone();
                let key = self.read_bytes(r(2), def.key_size as usize)?;
                let value = self.read_bytes(r(3), def.value_size as usize)?;
                let flags = r(4);
                let copies = self.maps.copies(m);
                let result = if copies > 1 {
                    // per-CPU update from a program writes this CPU's copy only
                    let existing = self
                        .maps
                        .find(m, &key)
                        .and_then(|s| self.maps.maps[m].slots[s].as_ref().map(|x| x.data.clone()));
                    let mut data = existing.unwrap_or_else(|| vec![0; value.len() * copies]);
                    let cpu = (self.input.cpu as usize).min(copies - 1);
                    data[cpu * value.len()..(cpu + 1) * value.len()].copy_from_slice(&value);
                    self.maps.update_raw(m, &key, &data, flags, Some(cpu))
                } else {
                    self.maps.update_raw(m, &key, &value, flags, None)
                };
                self.effects.map_updates.push(MapUpdate { map: def.name.clone(), key, value, flags, result });
                result as u64
            }
            id::MAP_DELETE_ELEM => {
                let m = self.map_arg(Reg::R1, spec.name)?;
                let def = self.maps.maps[m].def.clone();
                let key = self.read_bytes(r(2), def.key_size as usize)?;
                let result = self.maps.delete_raw(m, &key);
                self.effects.map_deletes.push(MapDelete { map: def.name, key, result });
                result as u64
            }
            id::KTIME_GET_NS => self.input.ktime_ns,
            id::GET_PRANDOM_U32 => {
                // xorshift64*
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                u64::from((self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32)
            }
            id::GET_SMP_PROCESSOR_ID => u64::from(self.input.cpu),
            id::SKB_STORE_BYTES => {
                let (offset, from, len, flags) = (r(2), r(3), r(4) as usize, r(5));
                if flags & !3 != 0 {
                    neg(EINVAL)
                } else if offset > i32::MAX as u64 || offset as usize + len > self.packet.len() {
                    neg(EFAULT)
                } else {
                    let bytes = self.read_bytes(from, len)?;
                    let o = offset as usize;
                    self.packet[o..o + len].copy_from_slice(&bytes);
                    self.effects.stores.push(StoredBytes { offset: offset as u32, bytes, flags });
                    0
                }
            }
            id::SKB_LOAD_BYTES => {
                let (offset, to, len) = (r(2), r(3), r(4) as usize);
                if offset > i32::MAX as u64 || offset as usize + len > self.packet.len() {
                    self.write_bytes(to, &vec![0; len])?;
                    neg(EFAULT)
                } else {
                    let o = offset as usize;
                    let bytes = self.packet[o..o + len].to_vec();
                    self.write_bytes(to, &bytes)?;
                    0
                }
            }
            id::L3_CSUM_REPLACE | id::L4_CSUM_REPLACE => {
                let l4 = hid == id::L4_CSUM_REPLACE;
                let (offset, from, to, flags) = (r(2), r(3), r(4), r(5));
                self.csum_replace(l4, offset, from, to, flags)
            }
            id::SKB_GET_TUNNEL_KEY => {
                let (to, size, flags) = (r(2), r(3), r(4));
                let res = self.get_tunnel_key(size, flags);
                match res {
                    Ok(bytes) => {
                        self.write_bytes(to, &bytes)?;
                        0
                    }
                    Err(e) => {
                        self.write_bytes(to, &vec![0; size as usize])?;
                        neg(e)
                    }
                }
            }
            id::SKB_SET_TUNNEL_KEY => {
                let (from, size, flags) = (r(2), r(3), r(4));
                let raw = self.read_bytes(from, size as usize)?;
                match parse_tunnel_key(&raw, flags) {
                    Ok(key) => {
                        self.effects.tunnel_key = Some(TunnelKeySet { key, flags, size: size as u32 });
                        0
                    }
                    Err(e) => neg(e),
                }
            }
            id::REDIRECT => {
                let (ifindex, flags) = (r(1), r(2));
                if flags & !BPF_F_INGRESS != 0 {
                    TC_ACT_SHOT
                } else {
                    self.effects.redirect =
                        Some(Redirect { ifindex: ifindex as u32, flags, kind: RedirectKind::Redirect });
                    TC_ACT_REDIRECT
                }
            }
            id::REDIRECT_NEIGH => {
                let (ifindex, params, plen, flags) = (r(1), r(2), r(3), r(4));
                if (plen != 0 && plen < 20) || flags != 0 {
                    TC_ACT_SHOT
                } else {
                    let nexthop = if plen == 0 {
                        None
                    } else {
                        let p = self.read_bytes(params, 20)?;
                        let family = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                        match family {
                            2 => Some(IpAddr::V4(Ipv4Addr::new(p[4], p[5], p[6], p[7]))),
                            10 => {
                                let mut a = [0u8; 16];
                                a.copy_from_slice(&p[4..20]);
                                Some(IpAddr::V6(Ipv6Addr::from(a)))
                            }
                            _ => None,
                        }
                    };
                    self.effects.redirect =
                        Some(Redirect { ifindex: ifindex as u32, flags, kind: RedirectKind::Neigh { nexthop } });
                    TC_ACT_REDIRECT
                }
            }
            id::CSUM_DIFF => {
                let (from, from_size, to, to_size, seed) = (r(1), r(2), r(3), r(4), r(5));
                if (from_size | to_size) & 3 != 0 || from_size + to_size > 512 {
                    neg(EINVAL)
                } else {
                    let a = self.read_bytes(from, from_size as usize)?;
                    let b = self.read_bytes(to, to_size as usize)?;
                    let mut words: Vec<u32> =
                        a.chunks_exact(4).map(|c| !u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                    words.extend(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                    u64::from(csum_partial_words(&words, seed as u32))
                }
            }
            id::SKB_CHANGE_TYPE => {
                let t = r(2);
                let cur = u32::from_le_bytes([self.ctx[4], self.ctx[5], self.ctx[6], self.ctx[7]]);
                if t > 3 || cur > 3 {
                    neg(EINVAL)
                } else {
                    self.ctx[4..8].copy_from_slice(&(t as u32).to_le_bytes());
                    self.effects.change_type = Some(t as u32);
                    0
                }
            }
            id::GET_HASH_RECALC => u64::from(self.input.skb.hash),
            id::CSUM_UPDATE => neg(ENOTSUPP),
            _ => return Err(Fault::BadHelper { insn: self.pc, id: hid }),
        })
    }

    fn csum_replace(&mut self, l4: bool, offset: u64, from: u64, to: u64, flags: u64) -> u64 {
        let neg = |e: i64| (-e) as u64;
        const HDR_FIELD_MASK: u64 = layout::BPF_F_HDR_FIELD_MASK as u64;
        const PSEUDO_HDR: u64 = layout::BPF_F_PSEUDO_HDR as u64;
        const MARK_MANGLED_0: u64 = layout::BPF_F_MARK_MANGLED_0 as u64;
        const MARK_ENFORCE: u64 = layout::BPF_F_MARK_ENFORCE as u64;
        const IPV6: u64 = layout::BPF_F_IPV6 as u64;
        let allowed =
            if l4 { HDR_FIELD_MASK | PSEUDO_HDR | MARK_MANGLED_0 | MARK_ENFORCE | IPV6 } else { HDR_FIELD_MASK };
        if flags & !allowed != 0 {
            return neg(EINVAL);
        }
        if offset > 0xffff || offset & 1 != 0 {
            return neg(EFAULT);
        }
        let o = offset as usize;
        if o + 2 > self.packet.len() {
            return neg(EFAULT);
        }
        let mut sum = u16::from_le_bytes([self.packet[o], self.packet[o + 1]]);
        let mmzero = l4 && flags & MARK_MANGLED_0 != 0;
        if mmzero && flags & MARK_ENFORCE == 0 && sum == 0 {
            return 0;
        }
        match flags & HDR_FIELD_MASK {
            0 => {
                if from != 0 {
                    return neg(EINVAL);
                }
                sum = csum_fold(csum_add(to as u32, !u32::from(sum)));
            }
            2 => {
                let (f, t) = (from as u16, to as u16);
                if l4 {
                    sum = csum_replace4(sum, u32::from(f), u32::from(t));
                } else {
                    sum = !csum16_add(csum16_add(!sum, !f), t);
                }
            }
            4 => sum = csum_replace4(sum, from as u32, to as u32),
            _ => return neg(EINVAL),
        }
        if mmzero && sum == 0 {
            sum = 0xffff;
        }
        self.packet[o..o + 2].copy_from_slice(&sum.to_le_bytes());
        self.effects.csum_replaces.push(CsumReplace { l4, offset: offset as u32, from, to, flags });
        0
    }

    fn get_tunnel_key(&self, size: u64, flags: u64) -> Result<Vec<u8>, i64> {
        let Some(info) = &self.input.tunnel else {
            return Err(EINVAL);
        };
        if flags & !(BPF_F_TUNINFO_IPV6 | BPF_F_TUNINFO_FLAGS) != 0 {
            return Err(EINVAL);
        }
        let v6 = flags & BPF_F_TUNINFO_IPV6 != 0;
        if v6 != info.remote.is_ipv6() {
            return Err(EPROTO);
        }
        if !matches!(size, 44 | 28 | 24 | 22) {
            if size == 8 && !v6 {
                // offsetof(remote_ipv6[1]): legacy IPv4-only layout
            } else {
                return Err(EINVAL);
            }
        }
        let mut b = tunnel_key::LAYOUT.zeroed();
        tunnel_key::TUNNEL_ID.put(&mut b, u64::from(info.tunnel_id));
        match info.remote {
            IpAddr::V4(a) => layout::TUNNEL_KEY_REMOTE_IPV4.put_ipv4(&mut b, a),
            IpAddr::V6(a) => b[tunnel_key::REMOTE.offset..tunnel_key::REMOTE.end()].copy_from_slice(&a.octets()),
        }
        tunnel_key::TOS.put(&mut b, u64::from(info.tos));
        tunnel_key::TTL.put(&mut b, u64::from(info.ttl));
        tunnel_key::LABEL.put(&mut b, u64::from(info.label));
        match info.local {
            Some(IpAddr::V4(a)) => layout::TUNNEL_KEY_LOCAL_IPV4.put_ipv4(&mut b, a),
            Some(IpAddr::V6(a)) => b[tunnel_key::LOCAL.offset..tunnel_key::LOCAL.end()].copy_from_slice(&a.octets()),
            None => {}
        }
        b.truncate(size as usize);
        Ok(b)
    }
}

fn jump(pc: usize, off: i64) -> usize {
    let t = pc as i64 + 1 + off;
    usize::try_from(t).unwrap_or(usize::MAX)
}

fn parse_tunnel_key(raw: &[u8], flags: u64) -> Result<TunnelKey, i64> {
    let known = BPF_F_TUNINFO_IPV6 | BPF_F_ZERO_CSUM_TX | BPF_F_DONT_FRAGMENT | BPF_F_SEQ_NUMBER | BPF_F_NO_TUNNEL_KEY;
    if flags & !known != 0 {
        return Err(EINVAL);
    }
    if !matches!(raw.len(), 44 | 28 | 24 | 22 | 8) {
        return Err(EINVAL);
    }
    let mut b = raw.to_vec();
    b.resize(tunnel_key::SIZE, 0);
    let v6 = flags & BPF_F_TUNINFO_IPV6 != 0;
    let get = |f: layout::Field| f.get_u32(&b).unwrap_or(0);
    let label = get(tunnel_key::LABEL);
    if (!v6 && label != 0) || get(tunnel_key::EXT) != 0 {
        return Err(EINVAL);
    }
    let v6_at = |f: layout::Field| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[f.offset..f.end()]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let remote =
        if v6 { v6_at(tunnel_key::REMOTE) } else { IpAddr::V4(Ipv4Addr::from(get(layout::TUNNEL_KEY_REMOTE_IPV4))) };
    let local = if raw.len() == tunnel_key::SIZE {
        Some(if v6 { v6_at(tunnel_key::LOCAL) } else { IpAddr::V4(Ipv4Addr::from(get(layout::TUNNEL_KEY_LOCAL_IPV4))) })
            .filter(|a| !a.is_unspecified())
    } else {
        None
    };
    Ok(TunnelKey {
        tunnel_id: get(tunnel_key::TUNNEL_ID),
        remote,
        tos: get(tunnel_key::TOS) as u8,
        ttl: get(tunnel_key::TTL) as u8,
        label,
        local,
    })
}

// ----- checksums (the kernel's one's-complement helpers, on memory-order words) -------

fn csum_add(a: u32, b: u32) -> u32 {
    let (s, c) = a.overflowing_add(b);
    s.wrapping_add(u32::from(c))
}

fn csum_fold(csum: u32) -> u16 {
    let mut s = (csum & 0xffff) + (csum >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

fn csum16_add(csum: u16, addend: u16) -> u16 {
    let (s, c) = csum.overflowing_add(addend);
    s.wrapping_add(u16::from(c))
}

fn csum_replace4(sum: u16, from: u32, to: u32) -> u16 {
    let tmp = csum_add(!u32::from(sum), !from);
    csum_fold(csum_add(tmp, to))
}

/// x86-64 `csum_partial` over 32-bit words (little-endian loads), with seed.
fn csum_partial_words(words: &[u32], seed: u32) -> u32 {
    let mut acc: u64 = u64::from(seed);
    for w in words {
        let (s, c) = acc.overflowing_add(u64::from(*w));
        acc = s.wrapping_add(u64::from(c));
    }
    csum_add((acc >> 32) as u32, acc as u32)
}

/// The Internet checksum of `data` (RFC 1071), as stored in a header field:
/// use it to build test packets with valid checksums.
#[must_use]
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], 0]) };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csum_replace_matches_recomputation() {
        // an IPv4 header with a valid checksum; change the TTL/protocol word
        let mut hdr: Vec<u8> =
            vec![0x45, 0, 0, 0x54, 0, 0, 0x40, 0, 0x40, 0x01, 0, 0, 198, 51, 100, 10, 203, 0, 113, 20];
        let c = inet_checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        let old = u16::from_le_bytes([hdr[8], hdr[9]]);
        hdr[8] = 0x3f;
        let new = u16::from_le_bytes([hdr[8], hdr[9]]);
        let sum = u16::from_le_bytes([hdr[10], hdr[11]]);
        let updated = !csum16_add(csum16_add(!sum, !old), new);
        hdr[10..12].copy_from_slice(&updated.to_le_bytes());
        assert_eq!(inet_checksum(&hdr), 0);
    }

    #[test]
    fn tail_calls_fall_through_on_empty_slots_and_end_the_run_otherwise() {
        let src = ".map progs, prog_array, key_size=4, value_size=4, max_entries=2
            r6 = r1
            r2 = map[progs] ll
            r3 = 1
            call tail_call
            r0 = 5
            exit";
        let a = crate::asm::assemble("tc", src).expect("assembles");
        crate::verifier::verify(&a.program, &a.maps).expect("verifies");
        let frame = [0u8; 14];
        let mut maps = MapStore::new(&a.maps);
        let out = run(&a.program, &mut maps, &RunInput::for_frame(&frame)).expect("runs");
        assert_eq!(out.r0, 5);
        assert_eq!(out.effects.tail_call, Some(TailCall { map: "progs".into(), index: 1, target: None }));
        maps.update("progs", &1u32.to_le_bytes(), &42u32.to_le_bytes(), 0).expect("ok");
        assert!(maps.update("progs", &2u32.to_le_bytes(), &42u32.to_le_bytes(), 0).is_err());
        let out = run(&a.program, &mut maps, &RunInput::for_frame(&frame)).expect("runs");
        assert_eq!(out.r0, 0);
        assert_eq!(out.effects.tail_call.and_then(|t| t.target), Some(42));
        // R0 is not readable after a tail call that fell through
        let bad = crate::asm::assemble("tc", &src.replace("r0 = 5", "r0 += 5")).expect("assembles");
        let err = crate::verifier::verify(&bad.program, &bad.maps).expect_err("r0 uninit");
        assert!(err.to_string().contains("r0 is read before it is initialized"), "{err}");
        // prog arrays are for tail calls only, and tail calls need one
        let lookup = ".map progs, prog_array, key_size=4, value_size=4, max_entries=2
            *(u32 *)(r10 - 4) = 0
            r2 = r10
            r2 += -4
            r1 = map[progs] ll
            call map_lookup_elem
            r0 = 0
            exit";
        let l = crate::asm::assemble("tc", lookup).expect("assembles");
        let err = crate::verifier::verify(&l.program, &l.maps).expect_err("refused");
        assert!(err.to_string().contains("prog_array"), "{err}");
        let wrong = crate::asm::assemble("tc", &src.replace("prog_array", "array")).expect("assembles");
        let err = crate::verifier::verify(&wrong.program, &wrong.maps).expect_err("refused");
        assert!(err.to_string().contains("a prog_array map"), "{err}");
    }

    #[test]
    fn large_lpm_tries_probe_by_prefix_length() {
        let def = MapDef::new("lpm", MapKind::LpmTrie, 8, 4, 1024).expect("valid");
        let mut s = MapStore::new(&[def]);
        let key = |plen: u32, a: [u8; 4]| {
            let mut k = plen.to_le_bytes().to_vec();
            k.extend_from_slice(&a);
            k
        };
        for i in 0..200u32 {
            s.update("lpm", &key(24, [10, 0, i as u8, 0]), &i.to_le_bytes(), 0).expect("ok");
        }
        s.update("lpm", &key(8, [10, 0, 0, 0]), &1000u32.to_le_bytes(), 0).expect("ok");
        s.update("lpm", &key(27, [10, 0, 7, 32]), &2000u32.to_le_bytes(), 0).expect("ok");
        let get = |s: &MapStore, a| s.lookup("lpm", &key(32, a)).expect("ok").map(|v| v[0] as u32 | (v[1] as u32) << 8);
        assert_eq!(get(&s, [10, 0, 7, 33]), Some(2000));
        assert_eq!(get(&s, [10, 0, 7, 64]), Some(7));
        assert_eq!(get(&s, [10, 0, 250, 1]), Some(1000));
        assert_eq!(get(&s, [11, 0, 0, 1]), None);
        assert_eq!(s.delete("lpm", &key(27, [10, 0, 7, 32])), Ok(true));
        assert_eq!(get(&s, [10, 0, 7, 33]), Some(7));
    }

    #[test]
    fn lpm_is_longest_prefix() {
        let def = MapDef::new("lpm", MapKind::LpmTrie, 8, 4, 16).expect("valid");
        let mut s = MapStore::new(&[def]);
        let key = |plen: u32, a: [u8; 4]| {
            let mut k = plen.to_le_bytes().to_vec();
            k.extend_from_slice(&a);
            k
        };
        s.update("lpm", &key(8, [10, 0, 0, 0]), &1u32.to_le_bytes(), 0).expect("ok");
        s.update("lpm", &key(24, [10, 1, 2, 99]), &2u32.to_le_bytes(), 0).expect("ok");
        let get = |s: &MapStore, a| s.lookup("lpm", &key(32, a)).expect("ok");
        assert_eq!(get(&s, [10, 1, 2, 3]), Some(2u32.to_le_bytes().to_vec()));
        assert_eq!(get(&s, [10, 1, 3, 3]), Some(1u32.to_le_bytes().to_vec()));
        assert_eq!(get(&s, [11, 1, 2, 3]), None);
        assert_eq!(s.keys("lpm").expect("ok")[1], key(24, [10, 1, 2, 0]));
    }
}
