//! The entries of the maps the loader and the agent write for the gateway
//! templates (and the failover maps the source classifier reads).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::nat::{GwAddr, get_addr, put_addr};
use super::{FO_F_SELF, GA_F_LOCAL, GL_F_DOWN, GS_F_FLOATING, map};
use crate::layout::{self, allowed, allowed_key, float_owner, gw_down, gw_live, gw_slot, local_ep, peer_key};
use crate::maps::MapDef;

/// `v4` or `v6` by the family of `ip`.
fn of_family(ip: IpAddr, v4: &'static str, v6: &'static str) -> &'static str {
    if ip.is_ipv4() { v4 } else { v6 }
}

/// An `egret_local_eps_v4` or `egret_local_eps_v6` entry ([`LocalEndpoint::map`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The pod's address.
    pub pod: IpAddr,
    /// Its host-side veth.
    pub ifindex: u32,
}

impl LocalEndpoint {
    /// Value size.
    pub const SIZE: usize = local_ep::SIZE;

    /// The map of the pod's family.
    #[must_use]
    pub fn map(&self) -> &'static str {
        of_family(self.pod, <Ipv4Addr as GwAddr>::LOCAL_EPS_MAP, <Ipv6Addr as GwAddr>::LOCAL_EPS_MAP)
    }

    /// Key bytes (the pod's address, network order).
    #[must_use]
    pub fn key(&self) -> Vec<u8> {
        match self.pod {
            IpAddr::V4(a) => a.to_octets(),
            IpAddr::V6(a) => a.to_octets(),
        }
    }

    /// Value bytes.
    #[must_use]
    pub fn value(&self) -> [u8; Self::SIZE] {
        let mut v = [0u8; Self::SIZE];
        local_ep::IFINDEX.put(&mut v, u64::from(self.ifindex));
        v
    }
}

/// An `egret_gw_slots` entry: one slot serves both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewaySlot {
    /// The slot (24-bit VNI).
    pub slot: u32,
    /// Its egress IPv4 (`0.0.0.0`: none resolved; IPv4 packets drop `no-egress-ip`).
    pub egress_ip: Ipv4Addr,
    /// Its egress IPv6 (`::`: none resolved; IPv6 packets drop `no-egress-ip`).
    pub egress_ip6: Ipv6Addr,
    /// The egress interface.
    pub egress_ifindex: u32,
    /// A floating slot ([`GS_F_FLOATING`]): served by every candidate
    /// gateway of a floating egress IP, SNATed only by the current owner
    /// (`egret_float_owner`), forwarded to it by the others.
    pub floating: bool,
}

impl GatewaySlot {
    /// Value size.
    pub const SIZE: usize = gw_slot::SIZE;

    /// Key bytes.
    #[must_use]
    pub fn key(&self) -> [u8; 4] {
        self.slot.to_le_bytes()
    }

    /// Value bytes.
    #[must_use]
    pub fn value(&self) -> [u8; Self::SIZE] {
        let mut v = [0u8; Self::SIZE];
        gw_slot::EGRESS_IP.put_ipv4(&mut v, self.egress_ip);
        put_addr(gw_slot::EGRESS_IP6, &mut v, self.egress_ip6);
        gw_slot::IFINDEX.put(&mut v, u64::from(self.egress_ifindex));
        gw_slot::FLAGS.put(&mut v, u64::from(if self.floating { GS_F_FLOATING } else { 0 }));
        v
    }

    /// Decodes an entry; `None` unless a 4-byte key and a [`GatewaySlot::SIZE`] value.
    #[must_use]
    pub fn from_bytes(key: &[u8], value: &[u8]) -> Option<GatewaySlot> {
        if !layout::slot::LAYOUT.fits(key) || !gw_slot::LAYOUT.fits(value) {
            return None;
        }
        Some(GatewaySlot {
            slot: layout::slot::SLOT.get_u32(key)?,
            egress_ip: gw_slot::EGRESS_IP.ipv4(value)?,
            egress_ip6: get_addr(gw_slot::EGRESS_IP6, value)?,
            egress_ifindex: gw_slot::IFINDEX.get_u32(value)?,
            floating: gw_slot::FLAGS.get_u32(value)? & GS_F_FLOATING != 0,
        })
    }
}

/// An entry of `egret_float_owner` — hash, key 4, value 20,
/// [`FLOAT_OWNER_MAX`] entries, a state map (empty image, kept across
/// swaps) written by the node's agent and read by the gateway templates'
/// SNAT path and by the source classifier:
/// - key: `u32` host floating slot id;
/// - value: the slot's current owner @0 (its underlay address, the tunnel
///   remote other nodes see; [`crate::layout::NODE_ADDR`]), `u32` host
///   flags @16: bit 0 [`FO_F_SELF`] = this node owns the slot.
///
/// A slot with no entry has no owner known: its packets are dropped
/// (`no-owner`). An entry without [`FO_F_SELF`] whose owner is `0.0.0.0` is
/// treated the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatOwner {
    /// The floating slot.
    pub slot: u32,
    /// Its current owner's underlay address.
    pub owner: IpAddr,
    /// Whether this node is the owner ([`FO_F_SELF`]).
    pub is_self: bool,
}

impl FloatOwner {
    /// Value size.
    pub const SIZE: usize = float_owner::SIZE;

    /// The key bytes.
    #[must_use]
    pub fn key(&self) -> [u8; 4] {
        self.slot.to_le_bytes()
    }

    /// The value bytes.
    #[must_use]
    pub fn value(&self) -> [u8; Self::SIZE] {
        let mut v = [0u8; Self::SIZE];
        float_owner::OWNER.put_node(&mut v, self.owner);
        float_owner::FLAGS.put(&mut v, u64::from(if self.is_self { FO_F_SELF } else { 0 }));
        v
    }

    /// Decodes an entry; `None` unless a 4-byte key and a [`FloatOwner::SIZE`] value.
    #[must_use]
    pub fn from_bytes(key: &[u8], value: &[u8]) -> Option<FloatOwner> {
        if !layout::slot::LAYOUT.fits(key) || !float_owner::LAYOUT.fits(value) {
            return None;
        }
        Some(FloatOwner {
            slot: layout::slot::SLOT.get_u32(key)?,
            owner: float_owner::OWNER.node(value)?,
            is_self: float_owner::FLAGS.get_u32(value)? & FO_F_SELF != 0,
        })
    }

    /// The map's definition.
    #[must_use]
    pub fn map_def() -> MapDef {
        def(map::FLOAT_OWNER)
    }
}

/// The definition of a map of [`crate::layout::MAPS`] with a fixed size.
pub(crate) fn def(name: &str) -> MapDef {
    layout::find(name).map(layout::MapLayout::def).unwrap_or_else(|| unreachable!("{name} is in layout::MAPS"))
}

/// An entry of `egret_gw_peers` — hash, key 20, value 4, [`GW_PEERS_MAX`]
/// entries, compiled from the plan on a gateway: for each floating slot this
/// node serves, its other candidate gateways:
/// - key: `u32` host slot @0, the peer's underlay address @4
///   ([`crate::layout::NODE_ADDR`], the tunnel remote its packets arrive from);
/// - value: `u32` 0.
///
/// A peer may send the slot's packets of any allowed pod (it forwards them
/// to the owner), and a packet from a peer is never forwarded again (the
/// peer thought this node owns the slot: drop `no-owner` rather than
/// ping-pong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayPeer {
    /// The floating slot.
    pub slot: u32,
    /// Another candidate gateway of it (its underlay address).
    pub peer: IpAddr,
}

impl GatewayPeer {
    /// Key size.
    pub const KEY_SIZE: usize = peer_key::SIZE;
    /// Value size.
    pub const SIZE: usize = layout::peer::SIZE;

    /// The key bytes.
    #[must_use]
    pub fn key(&self) -> [u8; Self::KEY_SIZE] {
        let mut k = [0u8; Self::KEY_SIZE];
        peer_key::SLOT.put(&mut k, u64::from(self.slot));
        peer_key::PEER.put_node(&mut k, self.peer);
        k
    }

    /// The value bytes (zero).
    #[must_use]
    pub fn value(&self) -> [u8; Self::SIZE] {
        [0; Self::SIZE]
    }

    /// Decodes an entry; `None` unless a 20-byte key and a 4-byte value.
    #[must_use]
    pub fn from_bytes(key: &[u8], value: &[u8]) -> Option<GatewayPeer> {
        if !peer_key::LAYOUT.fits(key) || value.len() != Self::SIZE {
            return None;
        }
        Some(GatewayPeer { slot: peer_key::SLOT.get_u32(key)?, peer: peer_key::PEER.node(key)? })
    }

    /// The map's definition.
    #[must_use]
    pub fn map_def() -> MapDef {
        def(map::GW_PEERS)
    }
}

/// Where an allowed source may send from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceNode {
    /// Through the tunnel from this node (its underlay address, the tunnel
    /// remote of its packets).
    Node(IpAddr),
    /// Through the tunnel from any node.
    AnyNode,
    /// The pod runs on this gateway node (`egret_gw_local` only).
    Local,
}

/// An `egret_gw_allowed_v4` or `egret_gw_allowed_v6` entry ([`AllowedSource::map`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedSource {
    /// The slot.
    pub slot: u32,
    /// The pod's address.
    pub src: IpAddr,
    /// Where it may come from.
    pub from: SourceNode,
}

impl AllowedSource {
    /// Value size.
    pub const SIZE: usize = allowed::SIZE;

    /// The map of the pod's family.
    #[must_use]
    pub fn map(&self) -> &'static str {
        of_family(self.src, <Ipv4Addr as GwAddr>::ALLOWED_MAP, <Ipv6Addr as GwAddr>::ALLOWED_MAP)
    }

    /// Key bytes.
    #[must_use]
    pub fn key(&self) -> Vec<u8> {
        fn key<A: GwAddr>(slot: u32, src: A) -> Vec<u8> {
            let mut k = A::ALLOWED_KEY.zeroed();
            allowed_key::SLOT.put(&mut k, u64::from(slot));
            put_addr(A::ALLOWED_SRC, &mut k, src);
            k
        }
        match self.src {
            IpAddr::V4(a) => key(self.slot, a),
            IpAddr::V6(a) => key(self.slot, a),
        }
    }

    /// Value bytes.
    #[must_use]
    pub fn value(&self) -> [u8; Self::SIZE] {
        let (node, flags) = match self.from {
            SourceNode::Node(ip) => (ip, 0),
            SourceNode::AnyNode => (Ipv4Addr::UNSPECIFIED.into(), 0),
            SourceNode::Local => (Ipv4Addr::UNSPECIFIED.into(), GA_F_LOCAL),
        };
        let mut v = [0u8; Self::SIZE];
        allowed::NODE.put_node(&mut v, node);
        allowed::FLAGS.put(&mut v, u64::from(flags));
        v
    }
}

/// An entry of `egret_gw_live` — hash, key 16, value 4, [`GW_LIVE_MAX`]
/// entries, a state map (kept across swaps) written by the node's agent and
/// read by the source classifier (`egret_compiler::codegen`):
/// - key: the gateway node's underlay address (its InternalIP, the tunnel
///   remote), a [`layout::NODE_ADDR`] ([`layout::node_addr`]);
/// - value: `u32` host flags @0: bit 0 [`GL_F_DOWN`] = the gateway is down.
///
/// A gateway with no entry is up: an agent that probes nothing (or a map
/// just created) leaves every gateway in service, as before failover existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLive {
    /// The gateway node's underlay address.
    pub gateway: IpAddr,
    /// Whether it is down.
    pub down: bool,
}

impl GatewayLive {
    /// Value size.
    pub const SIZE: usize = gw_live::SIZE;

    /// The key bytes.
    #[must_use]
    pub fn key(&self) -> [u8; layout::node_addr::SIZE] {
        let mut k = [0u8; layout::node_addr::SIZE];
        layout::node_addr::NODE.put_node(&mut k, self.gateway);
        k
    }

    /// The value bytes.
    #[must_use]
    pub fn value(&self) -> [u8; Self::SIZE] {
        let mut v = [0u8; Self::SIZE];
        gw_live::FLAGS.put(&mut v, u64::from(if self.down { GL_F_DOWN } else { 0 }));
        v
    }

    /// Decodes an entry.
    #[must_use]
    pub fn from_bytes(key: &[u8], value: &[u8]) -> Option<GatewayLive> {
        let gateway = layout::node_addr::NODE.node(key)?;
        Some(GatewayLive { gateway, down: gw_live::FLAGS.get_u32(value)? & GL_F_DOWN != 0 })
    }

    /// The map's definition.
    #[must_use]
    pub fn map_def() -> MapDef {
        def(map::GW_LIVE)
    }
}

/// The one entry of `egret_gw_down` — array, key `u32` 0, value 4, one
/// entry, a state map written by the node's agent with `egret_gw_live`:
/// `u32` host count @0 of the gateways `egret_gw_live` marks down. The source
/// classifier reads it first: 0 means no gateway is down, so the first target
/// of a failover choice is taken without looking its gateway up in
/// `egret_gw_live` (an array lookup the kernel inlines instead of a hash
/// lookup per packet). The agent writes a down entry before raising the count
/// and lowers the count only after deleting entries; a count that is
/// transiently non-zero just takes the per-gateway path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewaysDown {
    /// Gateways marked down.
    pub count: u32,
}

impl GatewaysDown {
    /// Value size.
    pub const SIZE: usize = gw_down::SIZE;
    /// The only key.
    pub const KEY: [u8; 4] = [0; 4];

    /// The value bytes.
    #[must_use]
    pub fn value(&self) -> [u8; Self::SIZE] {
        let mut v = [0u8; Self::SIZE];
        gw_down::COUNT.put(&mut v, u64::from(self.count));
        v
    }

    /// Decodes a value.
    #[must_use]
    pub fn from_bytes(value: &[u8]) -> Option<GatewaysDown> {
        Some(GatewaysDown { count: gw_down::COUNT.get_u32(value)? })
    }

    /// The map's definition.
    #[must_use]
    pub fn map_def() -> MapDef {
        def(map::GW_DOWN)
    }
}
