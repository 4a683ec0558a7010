//! The NAT tables' entries, both families: one Rust type per table, generic
//! over the address ([`GwAddr`]: [`Ipv4Addr`] for `egret_nat_v4` /
//! `egret_rnat_v4`, [`Ipv6Addr`] for `egret_nat_v6` / `egret_rnat_v6`), and
//! the port allocator's flow hash as the templates compute it.

use std::fmt::Debug;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::layout::{
    self, Field, NAT_PORT_COUNT, NAT_PORT_MIN, NAT_PROBES, Struct, allowed_key, allowed_key6, forward_nat,
    forward_nat6, map, nat_key, nat_key6, pod_addr, pod_addr6, reverse_nat, reverse_nat6,
};

/// An address family of the gateway datapath: which layouts and maps its
/// entries use. The shared fields (ports, protocol, slot, times, flags) sit
/// at the same offsets in both families (checked in [`crate::layout`]), so
/// only the address fields differ.
pub trait GwAddr: Copy + Eq + Ord + Hash + Debug + Into<IpAddr> + Send + Sync + 'static {
    /// Address length in bytes.
    const LEN: usize;
    /// The NAT key layout.
    const NAT_KEY: &'static Struct;
    /// Its source address.
    const K_SRC: Field;
    /// Its destination address.
    const K_DST: Field;
    /// The forward value layout.
    const FORWARD: &'static Struct;
    /// Its egress address.
    const FV_EGRESS_IP: Field;
    /// The reverse value layout.
    const REVERSE: &'static Struct;
    /// Its pod address.
    const RV_ORIG_SRC: Field;
    /// The key layout of `egret_local_eps_v*`.
    const POD_ADDR: &'static Struct;
    /// The key layout of `egret_gw_allowed_v*`, and its source address.
    const ALLOWED_KEY: &'static Struct;
    /// The source address of [`GwAddr::ALLOWED_KEY`].
    const ALLOWED_SRC: Field;
    /// `egret_nat_v*`.
    const NAT_MAP: &'static str;
    /// `egret_rnat_v*`.
    const RNAT_MAP: &'static str;
    /// `egret_local_eps_v*`.
    const LOCAL_EPS_MAP: &'static str;
    /// `egret_gw_allowed_v*`.
    const ALLOWED_MAP: &'static str;
    /// The address from exactly [`GwAddr::LEN`] network-order bytes.
    fn from_octets(b: &[u8]) -> Option<Self>;
    /// The network-order bytes.
    fn to_octets(self) -> Vec<u8>;
}

impl GwAddr for Ipv4Addr {
    const LEN: usize = 4;
    const NAT_KEY: &'static Struct = &nat_key::LAYOUT;
    const K_SRC: Field = nat_key::SRC;
    const K_DST: Field = nat_key::DST;
    const FORWARD: &'static Struct = &forward_nat::LAYOUT;
    const FV_EGRESS_IP: Field = forward_nat::EGRESS_IP;
    const REVERSE: &'static Struct = &reverse_nat::LAYOUT;
    const RV_ORIG_SRC: Field = reverse_nat::ORIG_SRC;
    const POD_ADDR: &'static Struct = &pod_addr::LAYOUT;
    const ALLOWED_KEY: &'static Struct = &allowed_key::LAYOUT;
    const ALLOWED_SRC: Field = allowed_key::SRC;
    const NAT_MAP: &'static str = map::NAT_V4;
    const RNAT_MAP: &'static str = map::RNAT_V4;
    const LOCAL_EPS_MAP: &'static str = map::LOCAL_EPS;
    const ALLOWED_MAP: &'static str = map::GW_ALLOWED;
    fn from_octets(b: &[u8]) -> Option<Self> {
        <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from)
    }
    fn to_octets(self) -> Vec<u8> {
        self.octets().to_vec()
    }
}

impl GwAddr for Ipv6Addr {
    const LEN: usize = 16;
    const NAT_KEY: &'static Struct = &nat_key6::LAYOUT;
    const K_SRC: Field = nat_key6::SRC;
    const K_DST: Field = nat_key6::DST;
    const FORWARD: &'static Struct = &forward_nat6::LAYOUT;
    const FV_EGRESS_IP: Field = forward_nat6::EGRESS_IP;
    const REVERSE: &'static Struct = &reverse_nat6::LAYOUT;
    const RV_ORIG_SRC: Field = reverse_nat6::ORIG_SRC;
    const POD_ADDR: &'static Struct = &pod_addr6::LAYOUT;
    const ALLOWED_KEY: &'static Struct = &allowed_key6::LAYOUT;
    const ALLOWED_SRC: Field = allowed_key6::SRC;
    const NAT_MAP: &'static str = map::NAT_V6;
    const RNAT_MAP: &'static str = map::RNAT_V6;
    const LOCAL_EPS_MAP: &'static str = map::LOCAL_EPS6;
    const ALLOWED_MAP: &'static str = map::GW_ALLOWED6;
    fn from_octets(b: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from)
    }
    fn to_octets(self) -> Vec<u8> {
        self.octets().to_vec()
    }
}

/// Writes an address field (network order).
pub(crate) fn put_addr<A: GwAddr>(f: Field, b: &mut [u8], a: A) {
    b[f.offset..f.end()].copy_from_slice(&a.to_octets());
}

/// Reads an address field.
pub(crate) fn get_addr<A: GwAddr>(f: Field, b: &[u8]) -> Option<A> {
    A::from_octets(f.bytes(b)?)
}

/// A 5-tuple key of `egret_nat_v4` / `egret_rnat_v4` (`A` = [`Ipv4Addr`],
/// the default) or `egret_nat_v6` / `egret_rnat_v6` ([`Ipv6Addr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatKey<A = Ipv4Addr> {
    /// Source address.
    pub src: A,
    /// Destination address.
    pub dst: A,
    /// Source port (ICMP echo: identifier).
    pub sport: u16,
    /// Destination port (ICMP echo: 0).
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

impl NatKey {
    /// Key size (IPv4).
    pub const SIZE: usize = nat_key::SIZE;
}

impl<A: GwAddr> NatKey<A> {
    /// Key bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut k = A::NAT_KEY.zeroed();
        put_addr(A::K_SRC, &mut k, self.src);
        put_addr(A::K_DST, &mut k, self.dst);
        nat_key::SPORT.put(&mut k, u64::from(self.sport));
        nat_key::DPORT.put(&mut k, u64::from(self.dport));
        nat_key::PROTO.put(&mut k, u64::from(self.proto));
        k
    }

    /// Parses key bytes; `None` unless exactly the key's size.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if !A::NAT_KEY.fits(b) {
            return None;
        }
        Some(NatKey {
            src: get_addr(A::K_SRC, b)?,
            dst: get_addr(A::K_DST, b)?,
            sport: nat_key::SPORT.get(b)? as u16,
            dport: nat_key::DPORT.get(b)? as u16,
            proto: nat_key::PROTO.get(b)? as u8,
        })
    }
}

/// An `egret_nat_v4` / `egret_nat_v6` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardNat<A = Ipv4Addr> {
    /// The egress address the flow is translated to.
    pub egress_ip: A,
    /// Its NAT port (ICMP: identifier).
    pub nat_port: u16,
    /// The slot.
    pub slot: u32,
    /// `ktime_get_ns` at creation.
    pub created_ns: u64,
    /// `ktime_get_ns` of the last forward packet.
    pub last_seen_ns: u64,
}

impl ForwardNat {
    /// Value size (IPv4).
    pub const SIZE: usize = forward_nat::SIZE;
}

impl<A: GwAddr> ForwardNat<A> {
    /// Value bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = A::FORWARD.zeroed();
        put_addr(A::FV_EGRESS_IP, &mut v, self.egress_ip);
        forward_nat::NAT_PORT.put(&mut v, u64::from(self.nat_port));
        forward_nat::SLOT.put(&mut v, u64::from(self.slot));
        forward_nat::CREATED.put(&mut v, self.created_ns);
        forward_nat::LAST_SEEN.put(&mut v, self.last_seen_ns);
        v
    }

    /// Parses value bytes; `None` unless exactly the value's size.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if !A::FORWARD.fits(b) {
            return None;
        }
        Some(ForwardNat {
            egress_ip: get_addr(A::FV_EGRESS_IP, b)?,
            nat_port: forward_nat::NAT_PORT.get(b)? as u16,
            slot: forward_nat::SLOT.get_u32(b)?,
            created_ns: forward_nat::CREATED.get(b)?,
            last_seen_ns: forward_nat::LAST_SEEN.get(b)?,
        })
    }
}

/// An `egret_rnat_v4` / `egret_rnat_v6` value: the connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReverseNat<A = Ipv4Addr> {
    /// The pod's address.
    pub orig_src: A,
    /// The pod's node (the tunnel remote, an underlay address of either
    /// family, [`crate::layout::NODE_ADDR`]); `0.0.0.0` for local pods.
    pub node: IpAddr,
    /// The slot.
    pub slot: u32,
    /// The pod's port (ICMP: identifier).
    pub orig_sport: u16,
    /// `RV_F_*`.
    pub flags: u8,
    /// `ktime_get_ns` of the last packet, either direction.
    pub last_seen_ns: u64,
    /// `ktime_get_ns` after which the entry is free.
    pub expires_ns: u64,
}

impl ReverseNat {
    /// Value size (IPv4).
    pub const SIZE: usize = reverse_nat::SIZE;
}

impl<A: GwAddr> ReverseNat<A> {
    /// Value bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = A::REVERSE.zeroed();
        put_addr(A::RV_ORIG_SRC, &mut v, self.orig_src);
        reverse_nat::NODE.put_node(&mut v, self.node);
        reverse_nat::SLOT.put(&mut v, u64::from(self.slot));
        reverse_nat::ORIG_SPORT.put(&mut v, u64::from(self.orig_sport));
        reverse_nat::FLAGS.put(&mut v, u64::from(self.flags));
        reverse_nat::LAST_SEEN.put(&mut v, self.last_seen_ns);
        reverse_nat::EXPIRES.put(&mut v, self.expires_ns);
        v
    }

    /// Parses value bytes; `None` unless exactly the value's size.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if !A::REVERSE.fits(b) {
            return None;
        }
        Some(ReverseNat {
            orig_src: get_addr(A::RV_ORIG_SRC, b)?,
            node: reverse_nat::NODE.node(b)?,
            slot: reverse_nat::SLOT.get_u32(b)?,
            orig_sport: reverse_nat::ORIG_SPORT.get(b)? as u16,
            flags: reverse_nat::FLAGS.get(b)? as u8,
            last_seen_ns: reverse_nat::LAST_SEEN.get(b)?,
            expires_ns: reverse_nat::EXPIRES.get(b)?,
        })
    }
}

/// An address folded to 32 bits for the flow hash: the XOR of the
/// little-endian `u32` loads of its 4-byte words (IPv4: the one word).
fn fold<A: GwAddr>(a: A) -> u32 {
    a.to_octets().chunks_exact(4).fold(0, |h, w| h ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// The flow hash of the port allocator, exactly as the templates compute it,
/// both families alike: `a` = the source address folded to 32 bits (the XOR
/// of its little-endian `u32` words), `b` = the destination folded likewise,
/// `c` = the little-endian `u32` load of the key's ports (`sport | dport <<
/// 16` in memory order), `d` = the protocol;
/// `fmix32(((((a * C1) ^ b) * C2 ^ c) * C3) ^ d)` with murmur3's `fmix32` and
/// constants (wrapping 32-bit arithmetic).
#[must_use]
pub fn nat_hash<A: GwAddr>(key: &NatKey<A>) -> u32 {
    use layout::{HASH_C1, HASH_C2, HASH_C3};
    let ports = u32::from_le_bytes([
        key.sport.to_be_bytes()[0],
        key.sport.to_be_bytes()[1],
        key.dport.to_be_bytes()[0],
        key.dport.to_be_bytes()[1],
    ]);
    let mut h = fold(key.src).wrapping_mul(HASH_C1);
    h = (h ^ fold(key.dst)).wrapping_mul(HASH_C2);
    h = (h ^ ports).wrapping_mul(HASH_C3);
    h ^= u32::from(key.proto);
    h ^= h >> 16;
    h = h.wrapping_mul(HASH_C2);
    h ^= h >> 13;
    h = h.wrapping_mul(HASH_C3);
    h ^ (h >> 16)
}

/// The ports a new mapping of `key` tries, in order.
#[must_use]
pub fn nat_port_candidates<A: GwAddr>(key: &NatKey<A>) -> [u16; NAT_PROBES] {
    let bucket = nat_hash(key) % NAT_PORT_COUNT;
    let mut ports = [0u16; NAT_PROBES];
    for (i, p) in ports.iter_mut().enumerate() {
        // < 61000 + 4536 = 65536: always fits
        *p = NAT_PORT_MIN + ((bucket + i as u32) % NAT_PORT_COUNT) as u16;
    }
    ports
}
