//! The Cilium-equivalent classifier: the anchor egret's classifier is measured against.
//!
//! One LPM trie keyed by (source IP, destination prefix) with Cilium's key and
//! value layout (`struct egress_gw_policy_key { struct bpf_lpm_trie_key lpm_key;
//! __be32 saddr; __be32 daddr; }`, prefix length `32 + cidr`; `struct
//! egress_gw_policy_entry { __be32 egress_ip; __be32 gateway_ip; }`, 16,384
//! entries, `BPF_F_NO_PREALLOC`), filled from the Cilium view of a node
//! ([`egret_compiler::cilium::view`]). The program does what egret's does
//! around its decision, so the two differ only in how they decide: parse
//! Ethernet + IPv4, look the key up, then pass (miss, or gateway 0.0.0.1 =
//! excluded), drop (gateway 0.0.0.0 = not found), or set the tunnel key and
//! redirect to the tunnel device (hole `tunnel_ifindex`); one per-CPU counter
//! per outcome. Cilium's real datapath does far more per packet (conntrack,
//! policy, NAT); this is the lower bound of its egress-gateway decision.

use egret_bpf::artifact::MapImage;
use egret_bpf::{MapDef, MapKind, Program};
use egret_compiler::cilium::View;

pub const POLICY_MAP: &str = "cilium_egress_gw_policy_v4";
pub const COUNTERS: &str = "cilium_equiv_counters";
/// Cilium's default size of the egress policy map.
pub const CILIUM_MAP_SIZE: u32 = 16_384;

pub const SOURCE: &str = r"
// Cilium-equivalent egress-gateway decision (see cilium_dp.rs).
.equ TC_ACT_UNSPEC, -1
.equ TC_ACT_SHOT, 2
entry:
    r6 = r1
    r2 = *(u32 *)(r6 + 76)          // data
    r3 = *(u32 *)(r6 + 80)          // data_end
    r4 = r2
    r4 += 34                        // Ethernet + IPv4 header
    r8 = 0                          // counter index: 0 pass
    if r4 > r3 goto count
    r5 = *(u16 *)(r2 + 12)
    if r5 != 8 goto count           // ethertype 0x0800 read little-endian
    r7 = *(u32 *)(r2 + 26)          // saddr, network order
    r9 = *(u32 *)(r2 + 30)          // daddr, network order
    *(u32 *)(r10 - 16) = 64         // lpm prefixlen: 32 (saddr) + 32
    *(u32 *)(r10 - 12) = r7
    *(u32 *)(r10 - 8) = r9
    r2 = r10
    r2 += -16
    r1 = map[cilium_egress_gw_policy_v4] ll
    call map_lookup_elem
    if r0 == 0 goto count
    r7 = *(u32 *)(r0 + 4)           // gateway_ip, network order
    r8 = 1                          // 1: drop, not found
    if w7 == 0 goto count
    r8 = 2                          // 2: excluded CIDR, pass
    if w7 == 0x01000000 goto count  // 0.0.0.1 in network order, read little-endian
    r8 = 3                          // 3: redirect
    r7 = be32 r7                    // host order for the tunnel key
    r1 = 0
    *(u64 *)(r10 - 64) = r1         // struct bpf_tunnel_key (44 bytes) at fp-64
    *(u64 *)(r10 - 56) = r1
    *(u64 *)(r10 - 48) = r1
    *(u64 *)(r10 - 40) = r1
    *(u64 *)(r10 - 32) = r1
    *(u32 *)(r10 - 24) = r1
    *(u32 *)(r10 - 60) = r7         // remote_ipv4
    *(u8 *)(r10 - 43) = 64          // tunnel_ttl
    r1 = r6
    r2 = r10
    r2 += -64
    r3 = 44
    r4 = 0
    call skb_set_tunnel_key
count:
    *(u32 *)(r10 - 4) = r8
    r2 = r10
    r2 += -4
    r1 = map[cilium_equiv_counters] ll
    call map_lookup_elem
    if r0 == 0 goto verdict
    r1 = 1
    lock *(u64 *)(r0 + 0) += r1
verdict:
    r0 = TC_ACT_UNSPEC
    if r8 == 0 goto out
    if r8 == 2 goto out
    r0 = TC_ACT_SHOT
    if r8 == 1 goto out
    w1 = %tunnel_ifindex
    r2 = 0
    call redirect
out:
    exit
";

/// The program and its maps (policy map of Cilium's default size).
pub fn program() -> Result<(Program, Vec<MapDef>), String> {
    program_sized(CILIUM_MAP_SIZE)
}

/// The program with a policy map of `max_entries` (benchmarks beyond Cilium's cap).
pub fn program_sized(max_entries: u32) -> Result<(Program, Vec<MapDef>), String> {
    let program = egret_bpf::asm::assemble("cilium_equiv", SOURCE).map_err(|e| e.to_string())?.program;
    let maps = vec![
        MapDef::new(POLICY_MAP, MapKind::LpmTrie, 12, 8, max_entries).map_err(|e| e.to_string())?,
        MapDef::new(COUNTERS, MapKind::PercpuArray, 4, 8, 4).map_err(|e| e.to_string())?,
    ];
    Ok((program, maps))
}

/// Cilium's map content for a node's view. Rows beyond `max_entries` do not fit
/// (Cilium fails to install them); the caller decides how to report that.
pub fn policy_map_image(view: &View, max_entries: u32) -> MapImage {
    let mut img = MapImage {
        name: POLICY_MAP.to_string(),
        kind: "lpm_trie".to_string(),
        key_size: 12,
        value_size: 8,
        max_entries,
        flags: 1,
        entries: Vec::new(),
    };
    for r in &view.rows {
        let mut key = Vec::with_capacity(12);
        key.extend_from_slice(&(32 + u32::from(r.destination.len)).to_le_bytes());
        key.extend_from_slice(&r.source_ip.octets());
        match r.destination.network().addr {
            std::net::IpAddr::V4(a) => key.extend_from_slice(&a.octets()),
            std::net::IpAddr::V6(_) => continue,
        }
        let egress = match &r.egress_ip {
            egret_compiler::cilium::EgressCell::Addr(a) => a.octets(),
            egret_compiler::cilium::EgressCell::LateBound(_) => [0; 4],
        };
        let mut value = Vec::with_capacity(8);
        value.extend_from_slice(&egress);
        value.extend_from_slice(&r.gateway_ip.octets());
        img.push(&key, &value);
    }
    img
}

/// Bytes of key + value per entry in Cilium's map.
pub const ENTRY_BYTES: usize = 12 + 8;
