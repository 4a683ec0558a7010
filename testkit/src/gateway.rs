//! Shared material of the gateway template tests: a small cluster (gateway,
//! two source nodes, pods, an external server), its map entries, and packet
//! builders/checkers that compute every checksum from scratch.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egret_bpf::Program;
use egret_bpf::interp::{MapStore, RunInput, RunOutcome, TunnelKey, inet_checksum, run};
use egret_bpf::templates::{
    AllowedSource, FloatOwner, ForwardNat, GatewayPeer, GatewaySlot, GwAddr, HOLE_TUNNEL_IFINDEX, LocalEndpoint,
    NatKey, ReverseNat, SourceNode, Stat, Template, map,
};

// ----- the cluster ------------------------------------------------------------------

/// The slot (VNI) the gateway serves.
pub const SLOT: u32 = 0x00ab_cdef;
/// A slot the gateway serves without an egress IPv4.
pub const SLOT_NO_IP: u32 = 0x0000_0777;
/// A slot nobody serves.
pub const SLOT_UNKNOWN: u32 = 0x0012_3456;
/// The egress IP of [`SLOT`].
pub const EGRESS_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The egress interface.
pub const EGRESS_IFINDEX: u32 = 7;
/// `egret0` on the gateway (the hole).
pub const TUNNEL_IFINDEX: u32 = 3;
/// Source node A (tunnel remote as the gateway sees it).
pub const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Source node B.
pub const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
/// Pods on node A allowed for [`SLOT`] (from node A only).
pub const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
/// Another pod on node A, allowed.
pub const POD_A2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 11);
/// A pod on node B, allowed from node B only.
pub const POD_B: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 20);
/// A pod allowed from any node.
pub const POD_ANY: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 30);
/// A pod on node A that no policy sends through [`SLOT`].
pub const POD_NOT_ALLOWED: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 99);
/// A pod on the gateway node itself, allowed locally.
pub const POD_LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
/// Its veth (`BPF_PROG_TEST_RUN` runs with skb->ifindex 1, lo).
pub const POD_LOCAL_IFINDEX: u32 = 1;
/// A second local pod whose veth is elsewhere (spoofing tests).
pub const POD_LOCAL2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 6);
/// Its veth.
pub const POD_LOCAL2_IFINDEX: u32 = 12;
/// The external server.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);

/// The egress IPv6 of [`SLOT`].
pub const EGRESS_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
/// [`POD_A`]'s IPv6 (node A, allowed for [`SLOT`] from node A only).
pub const POD_A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 0x10);
/// [`POD_B`]'s IPv6 (node B).
pub const POD_B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 2, 0, 0, 0, 0x20);
/// [`POD_LOCAL`]'s IPv6 (the gateway node, allowed locally).
pub const POD_LOCAL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5);
/// An IPv6 pod on node A that no policy sends through [`SLOT`].
pub const POD_NOT_ALLOWED6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 0x99);
/// The external IPv6 server.
pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0x20);

/// A source node with an IPv6 underlay address (an IPv6-only node: its
/// tunnel packets carry an IPv6 remote).
pub const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 6);
/// A pod on [`NODE6`], allowed for [`SLOT`] from that node only (IPv4 inner).
pub const POD_U: Ipv4Addr = Ipv4Addr::new(10, 0, 6, 10);
/// [`POD_U`]'s IPv6.
pub const POD_U6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 6, 0, 0, 0, 0x10);
/// The gateway's IPv6 underlay address (what nodes with an IPv6 underlay probe).
pub const GATEWAY_UNDERLAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
/// A gateway with an IPv6 underlay address that owns [`FLOAT_SLOT`] in some tests.
pub const OTHER_GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x60);

/// A floating slot the gateway serves as one of its candidates.
pub const FLOAT_SLOT: u32 = 0x0000_f10a;
/// The floating egress IP of [`FLOAT_SLOT`].
pub const FLOAT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
/// Another candidate gateway of [`FLOAT_SLOT`] (a peer in `egret_gw_peers`).
pub const PEER_GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
/// A pod on [`PEER_GW`] (a candidate that may own [`FLOAT_SLOT`]), allowed
/// for [`FLOAT_SLOT`] from its node.
pub const POD_ON_PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 5, 50);
/// A gateway that owns [`FLOAT_SLOT`] in some tests but is no peer here.
pub const OTHER_GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 60);

/// The `egret_float_owner` entry of [`FLOAT_SLOT`]: this node, or `owner`.
pub fn float_owner(owner: Option<impl Into<IpAddr>>) -> (&'static str, Vec<u8>, Vec<u8>) {
    let is_self = owner.is_none();
    let owner = owner.map_or(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), Into::into);
    let o = FloatOwner { slot: FLOAT_SLOT, owner, is_self };
    (map::FLOAT_OWNER, o.key().to_vec(), o.value().to_vec())
}

/// Extra allowed pods on node A for collision tests: 10.0.9.0/24.
pub fn extra_pod(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, i)
}

/// Every map entry of the gateway node (as `(map, key, value)`).
pub fn gateway_entries() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let mut v = Vec::new();
    for s in [
        GatewaySlot {
            slot: SLOT,
            egress_ip: EGRESS_IP,
            egress_ip6: EGRESS_IP6,
            egress_ifindex: EGRESS_IFINDEX,
            floating: false,
        },
        GatewaySlot {
            slot: SLOT_NO_IP,
            egress_ip: Ipv4Addr::UNSPECIFIED,
            egress_ip6: Ipv6Addr::UNSPECIFIED,
            egress_ifindex: EGRESS_IFINDEX,
            floating: false,
        },
    ] {
        v.push((map::GW_SLOTS, s.key().to_vec(), s.value().to_vec()));
    }
    let mut allowed = vec![
        AllowedSource { slot: SLOT, src: POD_A.into(), from: SourceNode::Node(NODE_A.into()) },
        AllowedSource { slot: SLOT, src: POD_A2.into(), from: SourceNode::Node(NODE_A.into()) },
        AllowedSource { slot: SLOT, src: POD_B.into(), from: SourceNode::Node(NODE_B.into()) },
        AllowedSource { slot: SLOT, src: POD_ANY.into(), from: SourceNode::AnyNode },
        AllowedSource { slot: SLOT, src: POD_LOCAL.into(), from: SourceNode::Local },
        AllowedSource { slot: SLOT, src: POD_LOCAL2.into(), from: SourceNode::Local },
        AllowedSource { slot: SLOT_NO_IP, src: POD_A.into(), from: SourceNode::Node(NODE_A.into()) },
        AllowedSource { slot: FLOAT_SLOT, src: POD_A.into(), from: SourceNode::Node(NODE_A.into()) },
        AllowedSource { slot: FLOAT_SLOT, src: POD_B.into(), from: SourceNode::Node(NODE_B.into()) },
        AllowedSource { slot: FLOAT_SLOT, src: POD_ANY.into(), from: SourceNode::AnyNode },
        AllowedSource { slot: FLOAT_SLOT, src: POD_LOCAL.into(), from: SourceNode::Local },
        AllowedSource { slot: FLOAT_SLOT, src: POD_ON_PEER.into(), from: SourceNode::Node(PEER_GW.into()) },
        AllowedSource { slot: SLOT, src: POD_A6.into(), from: SourceNode::Node(NODE_A.into()) },
        AllowedSource { slot: SLOT, src: POD_B6.into(), from: SourceNode::Node(NODE_B.into()) },
        AllowedSource { slot: SLOT, src: POD_LOCAL6.into(), from: SourceNode::Local },
        AllowedSource { slot: SLOT_NO_IP, src: POD_A6.into(), from: SourceNode::Node(NODE_A.into()) },
        AllowedSource { slot: SLOT, src: POD_U.into(), from: SourceNode::Node(NODE6.into()) },
        AllowedSource { slot: SLOT, src: POD_U6.into(), from: SourceNode::Node(NODE6.into()) },
        AllowedSource { slot: FLOAT_SLOT, src: POD_U.into(), from: SourceNode::Node(NODE6.into()) },
    ];
    let floating = GatewaySlot {
        slot: FLOAT_SLOT,
        egress_ip: FLOAT_IP,
        egress_ip6: Ipv6Addr::UNSPECIFIED,
        egress_ifindex: EGRESS_IFINDEX,
        floating: true,
    };
    v.push((map::GW_SLOTS, floating.key().to_vec(), floating.value().to_vec()));
    // peers: the other candidate of the floating slot, and (ignored: the slot
    // is not floating) one for the ordinary slot
    for p in [GatewayPeer { slot: FLOAT_SLOT, peer: PEER_GW.into() }, GatewayPeer { slot: SLOT, peer: PEER_GW.into() }]
    {
        v.push((map::GW_PEERS, p.key().to_vec(), p.value().to_vec()));
    }
    for i in 1..=250 {
        allowed.push(AllowedSource { slot: SLOT, src: extra_pod(i).into(), from: SourceNode::Node(NODE_A.into()) });
    }
    for a in allowed {
        v.push((a.map(), a.key(), a.value().to_vec()));
    }
    for e in [
        LocalEndpoint { pod: POD_LOCAL.into(), ifindex: POD_LOCAL_IFINDEX },
        LocalEndpoint { pod: POD_LOCAL2.into(), ifindex: POD_LOCAL2_IFINDEX },
        LocalEndpoint { pod: POD_LOCAL6.into(), ifindex: POD_LOCAL_IFINDEX },
    ] {
        v.push((e.map(), e.key(), e.value().to_vec()));
    }
    v
}

/// A source node's map entries: its own pods ([`POD_A`] on veth 21).
pub fn source_node_entries() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    [LocalEndpoint { pod: POD_A.into(), ifindex: 21 }, LocalEndpoint { pod: POD_A6.into(), ifindex: 21 }]
        .iter()
        .map(|e| (e.map(), e.key(), e.value().to_vec()))
        .collect()
}

/// The three programs, holes filled.
pub fn programs() -> BTreeMap<Template, Program> {
    Template::ALL.into_iter().map(|t| (t, filled(t.assemble().expect("assembles").program))).collect()
}

/// Fills the templates' holes with the test cluster's values.
pub fn filled(mut p: Program) -> Program {
    let values: BTreeMap<String, i64> =
        [(HOLE_TUNNEL_IFINDEX.to_owned(), i64::from(TUNNEL_IFINDEX))].into_iter().collect();
    p.fill_holes(&values).expect("fills");
    p
}

/// The gateway node: programs and interpreter maps.
#[derive(Debug)]
pub struct Gateway {
    pub programs: BTreeMap<Template, Program>,
    pub maps: MapStore,
    /// `ktime_get_ns` for the next run.
    pub now: u64,
}

impl Default for Gateway {
    fn default() -> Gateway {
        Gateway::new()
    }
}

impl Gateway {
    pub fn new() -> Gateway {
        let mut maps = MapStore::new(&egret_bpf::templates::maps());
        for (m, k, v) in gateway_entries() {
            maps.update(m, &k, &v, 0).expect("fill");
        }
        Gateway { programs: programs(), maps, now: 1_000_000_000 }
    }

    /// A tunnelled packet from `node` (its underlay address, either family)
    /// for `slot`, through egret_tunnel_in.
    pub fn tunnel_in(&mut self, frame: &[u8], slot: u32, node: impl Into<IpAddr>) -> RunOutcome {
        let mut input = RunInput::for_frame(frame);
        input.tunnel = Some(tunnel_key(slot, node));
        input.ktime_ns = self.now;
        self.run(Template::TunnelIn, &input)
    }

    /// A local pod's packet tail-called into egret_gw_local with `slot` in cb[0].
    pub fn local(&mut self, frame: &[u8], slot: u32) -> RunOutcome {
        let mut input = RunInput::for_frame(frame);
        input.skb.cb[0] = slot;
        input.ktime_ns = self.now;
        self.run(Template::GwLocal, &input)
    }

    /// A packet arriving on the egress interface, through egret_gw_reply.
    pub fn reply(&mut self, frame: &[u8]) -> RunOutcome {
        let mut input = RunInput::for_frame(frame);
        input.ktime_ns = self.now;
        self.run(Template::GwReply, &input)
    }

    pub fn run(&mut self, t: Template, input: &RunInput) -> RunOutcome {
        let p = &self.programs[&t];
        run(p, &mut self.maps, input).unwrap_or_else(|e| panic!("{}: {e}", t.name()))
    }

    /// Packets counted under `stat` (summed over CPUs).
    pub fn stat(&self, stat: Stat) -> (u64, u64) {
        stat_of(&self.maps, stat)
    }

    /// The reverse NAT entry for `key` (either family).
    pub fn rnat<A: GwAddr>(&self, key: &NatKey<A>) -> Option<ReverseNat<A>> {
        self.maps.lookup(A::RNAT_MAP, &key.to_bytes()).expect("lookup").and_then(|v| ReverseNat::from_bytes(&v))
    }

    /// The forward NAT entry for `key` (either family).
    pub fn fnat<A: GwAddr>(&self, key: &NatKey<A>) -> Option<ForwardNat<A>> {
        self.maps.lookup(A::NAT_MAP, &key.to_bytes()).expect("lookup").and_then(|v| ForwardNat::from_bytes(&v))
    }
}

/// (packets, bytes) of `stat` in an interpreter map store.
pub fn stat_of(maps: &MapStore, stat: Stat) -> (u64, u64) {
    let per_cpu = maps.lookup_percpu(map::GW_STATS, &stat.index().to_le_bytes()).expect("lookup").expect("array entry");
    per_cpu.iter().fold((0, 0), |(p, b), v| {
        (
            p + u64::from_le_bytes(v[0..8].try_into().expect("8")),
            b + u64::from_le_bytes(v[8..16].try_into().expect("8")),
        )
    })
}

/// Tunnel metadata of a received packet from `remote` (either underlay
/// family; the local end is the gateway's address of that family).
pub fn tunnel_key(slot: u32, remote: impl Into<IpAddr>) -> TunnelKey {
    let remote = remote.into();
    let local = match remote {
        IpAddr::V4(_) => IpAddr::V4(GATEWAY_UNDERLAY),
        IpAddr::V6(_) => IpAddr::V6(GATEWAY_UNDERLAY6),
    };
    TunnelKey { tunnel_id: slot, remote, tos: 0, ttl: 64, label: 0, local: Some(local) }
}

// ----- packets ----------------------------------------------------------------------

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
/// ICMPv6 echo request / reply types.
pub const ICMP6_ECHO: u8 = 128;
pub const ICMP6_ECHO_REPLY: u8 = 129;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// The L4 part of a test packet.
#[derive(Debug, Clone)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    /// `csum: false` sends checksum 0 ("none").
    Udp {
        sport: u16,
        dport: u16,
        csum: bool,
    },
    Icmp {
        ty: u8,
        id: u16,
        seq: u16,
    },
    /// An ICMP / ICMPv6 error (`ty`, `code`, the 4-byte field after the
    /// checksum: IPv4 next-hop MTU in its low half, IPv6 MTU) carrying `inner`,
    /// the start of the datagram it is about.
    IcmpError {
        ty: u8,
        code: u8,
        mtu: u32,
        inner: Vec<u8>,
    },
    /// Another protocol with this payload.
    Other {
        proto: u8,
        payload: Vec<u8>,
    },
}

/// An IPv4 or IPv6 packet description (the family of `src`; `dst` must
/// match). IPv6: `ttl` is the hop limit; `frag` and `options` must be empty
/// (an IPv6 `options` is taken as extension headers' bytes, `frag` ignored).
#[derive(Debug, Clone)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    /// Flags + fragment offset (network order value).
    pub frag: u16,
    /// IP options (a multiple of 4 bytes).
    pub options: Vec<u8>,
    pub l4: L4,
}

impl Pkt {
    pub fn tcp(src: impl Into<IpAddr>, sport: u16, dst: impl Into<IpAddr>, dport: u16, flags: u8) -> Pkt {
        let (src, dst) = (src.into(), dst.into());
        let frag = if src.is_ipv4() { 0x4000 } else { 0 };
        Pkt { src, dst, ttl: 64, frag, options: Vec::new(), l4: L4::Tcp { sport, dport, flags } }
    }

    pub fn udp(src: impl Into<IpAddr>, sport: u16, dst: impl Into<IpAddr>, dport: u16) -> Pkt {
        let (src, dst) = (src.into(), dst.into());
        Pkt { src, dst, ttl: 64, frag: 0, options: Vec::new(), l4: L4::Udp { sport, dport, csum: true } }
    }

    /// ICMP (IPv4) or ICMPv6 (IPv6) of type `ty`.
    pub fn icmp(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, ty: u8, id: u16) -> Pkt {
        let (src, dst) = (src.into(), dst.into());
        Pkt { src, dst, ttl: 64, frag: 0, options: Vec::new(), l4: L4::Icmp { ty, id, seq: 7 } }
    }

    /// The forward NAT key of this packet as sent (`A`: the packet's family;
    /// panics on the other).
    pub fn nat_key<A: GwAddr>(&self) -> NatKey<A> {
        let (proto, sport, dport) = match self.l4 {
            L4::Tcp { sport, dport, .. } => (TCP, sport, dport),
            L4::Udp { sport, dport, .. } => (UDP, sport, dport),
            L4::Icmp { id, .. } => (self.icmp_proto(), id, 0),
            L4::IcmpError { .. } => (self.icmp_proto(), 0, 0),
            L4::Other { proto, .. } => (proto, 0, 0),
        };
        let addr = |a: IpAddr| match a {
            IpAddr::V4(a) => A::from_octets(&a.octets()),
            IpAddr::V6(a) => A::from_octets(&a.octets()),
        };
        let (Some(src), Some(dst)) = (addr(self.src), addr(self.dst)) else { panic!("not this family: {self:?}") };
        NatKey { src, dst, sport, dport, proto }
    }

    fn icmp_proto(&self) -> u8 {
        if self.src.is_ipv6() { ICMPV6 } else { ICMP }
    }

    pub fn ttl(mut self, ttl: u8) -> Pkt {
        self.ttl = ttl;
        self
    }

    /// The Ethernet frame with valid IPv4 and L4 checksums.
    pub fn frame(&self) -> Vec<u8> {
        let payload: &[u8] = b"egret gateway test payload.";
        let (proto, mut l4) = match &self.l4 {
            L4::Tcp { sport, dport, flags } => {
                let mut h = Vec::new();
                h.extend_from_slice(&sport.to_be_bytes());
                h.extend_from_slice(&dport.to_be_bytes());
                h.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
                h.extend_from_slice(&0u32.to_be_bytes()); // ack
                h.push(0x50); // data offset 5
                h.push(*flags);
                h.extend_from_slice(&64240u16.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                h.extend_from_slice(payload);
                (TCP, h)
            }
            L4::Udp { sport, dport, .. } => {
                let mut h = Vec::new();
                h.extend_from_slice(&sport.to_be_bytes());
                h.extend_from_slice(&dport.to_be_bytes());
                h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(payload);
                (UDP, h)
            }
            L4::Icmp { ty, id, seq } => {
                let mut h = vec![*ty, 0, 0, 0];
                h.extend_from_slice(&id.to_be_bytes());
                h.extend_from_slice(&seq.to_be_bytes());
                h.extend_from_slice(payload);
                (self.icmp_proto(), h)
            }
            L4::IcmpError { ty, code, mtu, inner } => {
                let mut h = vec![*ty, *code, 0, 0];
                h.extend_from_slice(&mtu.to_be_bytes());
                h.extend_from_slice(inner);
                (self.icmp_proto(), h)
            }
            L4::Other { proto, payload } => (*proto, payload.clone()),
        };
        // L4 checksum (only for a first fragment with the whole datagram here)
        match &self.l4 {
            L4::Tcp { .. } => {
                let c = pseudo_checksum(self.src, self.dst, TCP, &l4);
                l4[16..18].copy_from_slice(&c.to_be_bytes());
            }
            L4::Udp { csum: true, .. } => {
                let mut c = pseudo_checksum(self.src, self.dst, UDP, &l4);
                if c == 0 {
                    c = 0xffff;
                }
                l4[6..8].copy_from_slice(&c.to_be_bytes());
            }
            L4::Icmp { .. } | L4::IcmpError { .. } if self.src.is_ipv6() => {
                let c = pseudo_checksum(self.src, self.dst, ICMPV6, &l4);
                l4[2..4].copy_from_slice(&c.to_be_bytes());
            }
            L4::Icmp { .. } | L4::IcmpError { .. } => {
                let c = inet_checksum(&l4);
                l4[2..4].copy_from_slice(&c.to_be_bytes());
            }
            _ => {}
        }
        if let (IpAddr::V6(src), IpAddr::V6(dst)) = (self.src, self.dst) {
            // the options' bytes are extension headers: the first names the L4 protocol
            let next = if self.options.is_empty() { proto } else { 0 };
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&((self.options.len() + l4.len()) as u16).to_be_bytes());
            ip.push(next);
            ip.push(self.ttl);
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&dst.octets());
            ip.extend_from_slice(&self.options);
            let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x86, 0xdd];
            f.extend_from_slice(&ip);
            f.extend_from_slice(&l4);
            return f;
        }
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (self.src, self.dst) else { panic!("mixed families") };
        let ihl = 20 + self.options.len();
        let total = ihl + l4.len();
        let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
        ip.extend_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&0x1234u16.to_be_bytes());
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.push(self.ttl);
        ip.push(proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        ip.extend_from_slice(&self.options);
        let c = inet_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

/// The IPv4 or IPv6 pseudo-header followed by `segment`.
fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            buf.extend_from_slice(&s.octets());
            buf.extend_from_slice(&d.octets());
            buf.push(0);
            buf.push(proto);
            buf.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        }
        _ => {
            for a in [src, dst] {
                match a {
                    IpAddr::V6(a) => buf.extend_from_slice(&a.octets()),
                    IpAddr::V4(a) => buf.extend_from_slice(&a.to_ipv6_mapped().octets()),
                }
            }
            buf.extend_from_slice(&(segment.len() as u32).to_be_bytes());
            buf.extend_from_slice(&[0, 0, 0, proto]);
        }
    }
    buf.extend_from_slice(segment);
    buf
}

/// The checksum field value for `segment` (its checksum field zero) under the
/// IPv4 or IPv6 pseudo-header.
pub fn pseudo_checksum(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, proto: u8, segment: &[u8]) -> u16 {
    inet_checksum(&pseudo(src.into(), dst.into(), proto, segment))
}

/// What a frame says, parsed from scratch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub proto: u8,
    /// TCP/UDP source port, ICMP identifier.
    pub sport: u16,
    /// TCP/UDP destination port, ICMP 0.
    pub dport: u16,
    /// The IPv4 header checksum verifies (IPv6: always, it has none).
    pub ip_csum_ok: bool,
    /// The L4 checksum verifies (`None`: UDP without checksum).
    pub l4_csum_ok: Option<bool>,
}

/// Parses an Ethernet + IPv4/IPv6 + TCP/UDP/ICMP/ICMPv6 frame and recomputes
/// the checksums.
pub fn parse(f: &[u8]) -> Parsed {
    if f[12..14] == [0x86, 0xdd] {
        let len = usize::from(u16::from_be_bytes([f[18], f[19]]));
        let l4 = &f[54..54 + len];
        let addr = |o: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&f[o..o + 16]).expect("16")));
        let (src, dst, proto) = (addr(22), addr(38), f[20]);
        let port = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
        let ok = |p| Some(inet_checksum(&pseudo(src, dst, p, l4)) == 0);
        let (sport, dport, l4_csum_ok) = match proto {
            TCP | UDP => (port(0), port(2), ok(proto)),
            ICMPV6 => (port(4), 0, ok(ICMPV6)),
            _ => (0, 0, None),
        };
        return Parsed { src, dst, ttl: f[21], proto, sport, dport, ip_csum_ok: true, l4_csum_ok };
    }
    assert_eq!(&f[12..14], &[0x08, 0x00], "IPv4 frame");
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let ip = &f[14..14 + ihl];
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let l4 = &f[14 + ihl..14 + total];
    let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
    let proto = ip[9];
    let port = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
    let (sport, dport, l4_csum_ok) = match proto {
        TCP => (port(0), port(2), Some(pseudo_sum_ok(src, dst, TCP, l4))),
        UDP if port(6) == 0 => (port(0), port(2), None),
        UDP => (port(0), port(2), Some(pseudo_sum_ok(src, dst, UDP, l4))),
        ICMP => (port(4), 0, Some(inet_checksum(l4) == 0)),
        _ => (0, 0, None),
    };
    Parsed { src, dst, ttl: ip[8], proto, sport, dport, ip_csum_ok: inet_checksum(ip) == 0, l4_csum_ok }
}

fn pseudo_sum_ok(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> bool {
    // the sum over pseudo-header + segment (checksum included) folds to 0xffff
    inet_checksum(&pseudo(src, dst, proto, segment)) == 0
}

/// The ICMP error a router at `router` sends about `frame` (an Ethernet frame
/// as it left the gateway): to its source, carrying its IP header and the
/// first `keep` bytes after it (the whole datagram if shorter).
pub fn icmp_error_about(frame: &[u8], router: IpAddr, ty: u8, code: u8, mtu: u32, keep: usize) -> Pkt {
    let v6 = frame[12..14] == [0x86, 0xdd];
    let hlen = if v6 { 40 } else { usize::from(frame[14] & 0x0f) * 4 };
    let end = (14 + hlen + keep).min(frame.len());
    let inner = frame[14..end].to_vec();
    let src = parse(frame).src;
    Pkt { src: router, dst: src, ttl: 60, frag: 0, options: Vec::new(), l4: L4::IcmpError { ty, code, mtu, inner } }
}

/// What an ICMP error frame says about the datagram it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerOfError {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// TCP/UDP source port, ICMP echo identifier.
    pub sport: u16,
    /// TCP/UDP destination port, ICMP 0.
    pub dport: u16,
    /// The inner IPv4 header checksum verifies (IPv6: always).
    pub ip_csum_ok: bool,
}

/// Parses the datagram inside an ICMP / ICMPv6 error frame.
pub fn inner_of_error(f: &[u8]) -> InnerOfError {
    let v6 = f[12..14] == [0x86, 0xdd];
    let outer = if v6 { 40 } else { usize::from(f[14] & 0x0f) * 4 };
    let ip = &f[14 + outer + 8..];
    let (src, dst, proto, hlen, ip_csum_ok) = if v6 {
        let a = |o: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[o..o + 16]).expect("16")));
        (a(8), a(24), ip[6], 40, true)
    } else {
        let a = |o: usize| IpAddr::V4(Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]));
        let hlen = usize::from(ip[0] & 0x0f) * 4;
        (a(12), a(16), ip[9], hlen, inet_checksum(&ip[..hlen]) == 0)
    };
    let l4 = &ip[hlen..];
    let port = |o: usize| u16::from_be_bytes([l4[o], l4[o + 1]]);
    let (sport, dport) = match proto {
        TCP | UDP => (port(0), port(2)),
        ICMP | ICMPV6 => (port(4), 0),
        _ => (0, 0),
    };
    InnerOfError { src, dst, proto, sport, dport, ip_csum_ok }
}

/// An ARP request (not IPv4), 60 bytes.
pub fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.resize(60, 0);
    f
}

/// `TC_ACT_UNSPEC` as the interpreter returns it (64-bit -1).
pub const UNSPEC: u64 = u64::MAX;
pub const SHOT: u64 = 2;
pub const REDIRECT: u64 = 7;

// ----- gateway probes ---------------------------------------------------------------

/// The gateway's underlay address (where nodes send probes: the tunnel's local).
pub const GATEWAY_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// A probe request as node `sender` sends it.
pub fn probe_request(seq: u32, sender: Ipv4Addr, sent_ns: u64) -> egret_bpf::templates::probe::Probe {
    egret_bpf::templates::probe::Probe { kind: egret_bpf::templates::probe::Kind::Request, seq, sender, sent_ns }
}
