//! The gateway datapath templates: the three IPv4 tc classifiers in
//! `bpf-templates/` (egret's assembly), embedded, assembled, and the exact
//! byte layouts of the maps they share with the loader and the code generator.
//!
//! # Programs
//!
//! | program | attach | what it does |
//! |---|---|---|
//! | `egret_tunnel_in` | tcx ingress of `egret0` ([`AttachPoint::TunnelIngress`]), every node | first, a gateway probe (inner ethertype 0x88b5, see [`probe`]): a request is answered from here, a reply recorded in `egret_probe_rx`; then inner destination in `egret_local_eps` → *reply delivery*: `bpf_redirect_neigh(veth, {AF_INET, pod}, 20, 0)`; otherwise *egress*: `tunnel_id & 0xffffff` is the slot, the tunnel remote the sending node, then the SNAT path |
//! | `egret_gw_local` | none: tail-call target, index [`GW_LOCAL_PROG_INDEX`] of the source classifier's `PROG_ARRAY` | the SNAT path for the gateway node's own pods; the slot is in `skb->cb[0]` (low 24 bits) |
//! | `egret_gw_reply` | tcx ingress of each egress interface ([`AttachPoint::EgressIngress`]) | reverse NAT; a reply to a pod on another node gets the tunnel key `{tunnel_id = slot, remote_ipv4 = node (host order), tunnel_ttl = 64}` and `bpf_redirect(%tunnel_ifindex, 0)`; one to a local pod goes to its veth like reply delivery; anything that is not a live NAT mapping returns `TC_ACT_UNSPEC` (-1) untouched |
//!
//! **SNAT path** (both egress programs), in this order: Ethernet + IPv4 header
//! (IHL 5..15) else drop `malformed`/`not-ipv4`; slot in `egret_gw_slots` with
//! a non-zero egress IPv4 else `no-egress-ip`; source allowed
//! (`egret_gw_allowed`, see below) else `spoofed-source`; for a *floating
//! slot* ([`GS_F_FLOATING`]) the owner in `egret_float_owner`
//! ([`FloatOwner`]): none → `no-owner`, this node → go on, another node →
//! forward the packet unchanged with the tunnel key `{tunnel_id = slot,
//! remote_ipv4 = owner, tunnel_ttl = 64}` and `bpf_redirect(%tunnel_ifindex,
//! 0)` (`forwarded`) — unless a peer of the slot forwarded it here (it was
//! allowed through `egret_gw_peers`, [`GatewayPeer`], not as from its pod's
//! own node), which is dropped `no-owner` instead of bounced; non-first fragment
//! → `fragment`; not TCP, UDP or ICMP echo request → `unsupported-proto`;
//! TTL ≤ 1 → `ttl-exceeded`; then the NAT mapping (existing, or a new port
//! by hashed probing, else `nat-ports-exhausted`); then the rewrite — source
//! address and port (ICMP: identifier), `bpf_l4_csum_replace` with
//! `BPF_F_PSEUDO_HDR` for the address (not for ICMP, whose checksum has no
//! pseudo-header), UDP with `BPF_F_MARK_MANGLED_0` so a zero checksum stays
//! zero, `bpf_l3_csum_replace` for the address and the TTL decrement (because
//! `bpf_redirect_neigh` does not decrement it, EBPF-FACTS.md) — and
//! `bpf_redirect_neigh(egress_ifindex, NULL, 0, 0)`. A helper that fails
//! during the rewrite drops the packet (`rewrite-failed`). The reply path
//! decrements the TTL too (drop `ttl-exceeded` at ≤ 1), but only for packets
//! that match a live mapping.
//!
//! Source assembly: each program is `defs.s` + `macros.s` (the shared steps,
//! as assembler macros) + its entry file (`tunnel_in.s`, `gw_local.s`,
//! `gw_reply.s`) + `snat_v4.s` for the two egress programs + `count.s`
//! ([`Template::source`]). Holes:
//! `%tunnel_ifindex` (the ifindex of `egret0`) in all three programs.
//!
//! # Maps
//!
//! The byte layouts (field offsets, byte order, sizes) are defined once in
//! [`crate::layout`] ([`crate::layout::MAPS`]); the templates get them as
//! `.equ`s from [`prelude`], the objects' BTF as key/value types, and the
//! types below encode and decode entries with them. Who writes what:
//!
//! - `egret_local_eps` (every node, [`LocalEndpoint`]): the node's pods →
//!   their host-side veth.
//! - `egret_gw_slots` (gateways, [`GatewaySlot`]): the slots served here →
//!   egress IPv4 (0.0.0.0 = none resolved: drop `no-egress-ip`), egress
//!   ifindex, flags ([`GS_F_FLOATING`], compiled by the code generator).
//! - `egret_gw_allowed` (gateways, [`AllowedSource`]): (slot, pod IPv4) →
//!   the host-order IPv4 of the node the pod runs on — the address that
//!   node's tunnel packets come from, as `bpf_skb_get_tunnel_key` reports it;
//!   0 = accept from any node — and flags ([`GA_F_LOCAL`]: the pod runs on
//!   this gateway node).
//!
//!   A tunnelled packet passes only if the entry exists, is not local, and its
//!   node is 0 or equals the tunnel's remote: a node cannot send another
//!   node's pods' traffic. A packet handed to `egret_gw_local` passes only if
//!   the entry is local and the pod's `egret_local_eps` ifindex equals
//!   `skb->ifindex` (the veth it came in on): a local pod cannot use another
//!   pod's address. For a floating slot a tunnelled packet also passes when
//!   the tunnel remote is a peer of the slot in `egret_gw_peers` (a candidate
//!   forwarding another node's pod), and so does a tunnelled packet of a
//!   *local* pod from a peer (the pod's first live candidate was that peer,
//!   which forwarded it back to this owner; its reverse entry is local, its
//!   replies go to its veth). Either way the packet counts as forwarded: it is
//!   never forwarded again. A new reverse entry's node (where replies are
//!   tunnelled) is the entry's node when non-zero, else the tunnel remote.
//! - `egret_nat_v4` (programs only): forward mappings, [`NatKey`] →
//!   [`ForwardNat`]. ICMP echo: sport = identifier, dport = 0.
//! - `egret_rnat_v4` (programs only): the connection's state, keyed by the
//!   *translated* packet's 5-tuple (egress IPv4, remote IPv4, NAT port,
//!   remote port, protocol: a reply's tuple, swapped) → [`ReverseNat`]
//!   (flags [`RV_F_LOCAL`], [`RV_F_SEEN_REPLY`], [`RV_F_CLOSING`]).
//! - `egret_gw_stats` (programs only): per-CPU `{packets, bytes}` by
//!   [`Stat`] (one list for the source and the gateway side; index 0
//!   `no-gateway` is the source classifier's, these templates never write it).
//! - `egret_float_owner` (the agent, state map): [`FloatOwner`].
//! - `egret_gw_peers` (compiled): [`GatewayPeer`].
//! - `egret_probe_rx` (written by `egret_tunnel_in` for each probe reply,
//!   state map): [`probe::ProbeRx`], frame layout in [`probe`].
//!
//! # Connection tracking and port allocation
//!
//! The reverse entry holds the state; the forward entry only points at it.
//! A forward packet uses its forward entry if the egress IP is still the
//! slot's, the reverse entry under that port still names this flow (original
//! source and port) and has not expired; it then refreshes the state.
//! Otherwise it takes a new port: bucket = [`nat_hash`] of the forward key
//! modulo [`NAT_PORT_COUNT`], candidates `NAT_PORT_MIN + (bucket + i) %
//! NAT_PORT_COUNT` for `i` in `0..NAT_PROBES` ([`nat_port_candidates`]). The
//! first candidate whose reverse entry is missing (claimed with
//! `BPF_NOEXIST`, so two CPUs cannot both take it), expired, or already this
//! flow's (claimed with `BPF_ANY`) wins; a failed claim tries the next one;
//! none → drop `nat-ports-exhausted`. Ports are 61000–65535, disjoint from
//! Linux's default `ip_local_port_range` (32768–60999), so the host's own
//! connections from the egress IP do not collide with NAT ports; a host that
//! widens its range should reserve these (`ip_local_reserved_ports`).
//!
//! Timeouts ([`Timeouts`]): an entry expires `timeout` after its last packet
//! (either direction), `expires = now + timeout` written at each packet. TCP:
//! 60 s until a reply is seen, 6 h once one was (`RV_F_SEEN_REPLY`), 10 s once
//! a FIN or RST went either way (`RV_F_CLOSING`); a bare SYN (SYN without ACK)
//! on an existing mapping restarts its state. UDP 60 s, ICMP 30 s. An expired
//! entry is free for any flow, and a reply matching only an expired entry is
//! not translated.
//!
//! # Behaviour worth knowing
//!
//! - **Fragments**: the first fragment (offset 0) carries the L4 header and is
//!   translated like any packet (the incremental checksum update is right for
//!   the whole datagram). Non-first fragments have no ports: the egress path
//!   drops them (`fragment`), the reply path passes them untouched. So
//!   datagrams larger than the path MTU do not cross the gateway.
//! - **ICMP errors** (destination unreachable, fragmentation needed, time
//!   exceeded) about translated connections are not translated back: they
//!   pass to the gateway's stack. Path MTU discovery through the gateway
//!   therefore relies on the source side's MSS clamping.
//! - Only ICMP echo request (out) / echo reply (back) are translated; other
//!   ICMP types from pods are dropped as `unsupported-proto`.
//! - IP options are allowed (IHL up to 15); the L4 header is found after them.
//! - A TTL that would reach 0 is dropped (`ttl-exceeded`) without an ICMP
//!   time-exceeded message.
//! - Races: two CPUs may both take an *expired* port for different flows; the
//!   loser notices on its next packet (the reverse entry names another flow)
//!   and re-probes. A failed forward-entry update costs only a re-probe on the
//!   next packet, which finds the same port.
//! - Checksums go through the kernel helpers, which handle `CHECKSUM_PARTIAL`
//!   (pods on veth) and `CHECKSUM_COMPLETE` (`skb->csum` adjusted for the
//!   pseudo-header change).
//!
//! # Under `BPF_PROG_TEST_RUN`
//!
//! The kernel builds a packet without tunnel metadata, so
//! `bpf_skb_get_tunnel_key` fails there (egret_tunnel_in then drops
//! `no-tunnel-key`). The kernel tests prepend [`TEST_TUNNEL_KEY_PRELUDE`],
//! which sets a key first: `bpf_skb_set_tunnel_key` stores `local_ipv4` as the
//! tunnel source, which `bpf_skb_get_tunnel_key` then reports as
//! `remote_ipv4`. Redirect helpers only return `TC_ACT_REDIRECT` there.

use std::net::Ipv4Addr;

use crate::artifact::AttachPoint;
use crate::asm::{self, AsmErrors, Assembly};
use crate::layout::{
    self, allowed, allowed_key, float_owner, forward_nat, gw_down, gw_live, gw_slot, local_ep, nat_key, peer_key,
    reverse_nat,
};
use crate::maps::MapDef;

const DEFS: &str = include_str!("../../bpf-templates/defs.s");
const MACROS: &str = include_str!("../../bpf-templates/macros.s");
const TUNNEL_IN: &str = include_str!("../../bpf-templates/tunnel_in.s");
const GW_LOCAL: &str = include_str!("../../bpf-templates/gw_local.s");
const GW_REPLY: &str = include_str!("../../bpf-templates/gw_reply.s");
const SNAT_V4: &str = include_str!("../../bpf-templates/snat_v4.s");
const COUNT: &str = include_str!("../../bpf-templates/count.s");

/// The template source files, by file name (for tools and tests).
pub const FILES: [(&str, &str); 7] = [
    ("defs.s", DEFS),
    ("macros.s", MACROS),
    ("tunnel_in.s", TUNNEL_IN),
    ("gw_local.s", GW_LOCAL),
    ("gw_reply.s", GW_REPLY),
    ("snat_v4.s", SNAT_V4),
    ("count.s", COUNT),
];

/// Index of `egret_gw_local` in the source classifier's `PROG_ARRAY`.
pub const GW_LOCAL_PROG_INDEX: u32 = 0;
/// The hole of every template: ifindex of the tunnel device `egret0`
/// (`egret_gw_reply` tunnels replies out of it, the SNAT path of
/// `egret_tunnel_in` and `egret_gw_local` forwards floating-slot packets).
pub const HOLE_TUNNEL_IFINDEX: &str = "tunnel_ifindex";

/// Map names (all of egret's, defined in [`crate::layout::map`]).
pub use crate::layout::map;
pub use crate::layout::{
    FO_F_SELF, GA_F_LOCAL, GL_F_DOWN, GS_F_FLOATING, NAT_PORT_COUNT, NAT_PORT_MIN, NAT_PROBES, RV_F_CLOSING,
    RV_F_LOCAL, RV_F_SEEN_REPLY,
};

/// `max_entries` of `egret_local_eps`.
pub const LOCAL_EPS_MAX: u32 = layout::max_entries(map::LOCAL_EPS);
/// `max_entries` of `egret_gw_slots`.
pub const GW_SLOTS_MAX: u32 = layout::max_entries(map::GW_SLOTS);
/// `max_entries` of `egret_gw_allowed`.
pub const GW_ALLOWED_MAX: u32 = layout::max_entries(map::GW_ALLOWED);
/// `max_entries` of `egret_nat_v4` and `egret_rnat_v4`.
pub const NAT_MAX: u32 = layout::max_entries(map::NAT_V4);
/// `max_entries` of `egret_gw_stats`.
pub const STATS_MAX: u32 = layout::max_entries(map::GW_STATS);
/// `max_entries` of `egret_gw_live`.
pub const GW_LIVE_MAX: u32 = layout::max_entries(map::GW_LIVE);
/// `max_entries` of `egret_probe_rx`.
pub const PROBE_RX_MAX: u32 = layout::max_entries(map::PROBE_RX);
/// `max_entries` of `egret_float_owner`.
pub const FLOAT_OWNER_MAX: u32 = layout::max_entries(map::FLOAT_OWNER);
/// `max_entries` of `egret_gw_peers`.
pub const GW_PEERS_MAX: u32 = layout::max_entries(map::GW_PEERS);

/// Connection timeouts in nanoseconds (`ktime_get_ns`), as [`crate::layout`] defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts;

impl Timeouts {
    /// TCP until a reply is seen.
    pub const TCP_SYN_NS: u64 = layout::TCP_SYN_TIMEOUT_NS;
    /// TCP once a reply was seen, idle.
    pub const TCP_ESTABLISHED_NS: u64 = layout::TCP_ESTABLISHED_TIMEOUT_NS;
    /// TCP after FIN or RST.
    pub const TCP_CLOSING_NS: u64 = layout::TCP_CLOSING_TIMEOUT_NS;
    /// UDP, idle.
    pub const UDP_NS: u64 = layout::UDP_TIMEOUT_NS;
    /// ICMP echo, idle.
    pub const ICMP_NS: u64 = layout::ICMP_TIMEOUT_NS;
}

/// A gateway datapath program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Template {
    /// `egret_tunnel_in`.
    TunnelIn,
    /// `egret_gw_local`.
    GwLocal,
    /// `egret_gw_reply`.
    GwReply,
}

impl Template {
    /// All templates.
    pub const ALL: [Template; 3] = [Template::TunnelIn, Template::GwLocal, Template::GwReply];

    /// Program name (its section is named `classifier`, [`crate::elf::PROGRAM_SECTION`]).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Template::TunnelIn => "egret_tunnel_in",
            Template::GwLocal => "egret_gw_local",
            Template::GwReply => "egret_gw_reply",
        }
    }

    /// Where the loader attaches it; `None` for the tail-call target
    /// `egret_gw_local` (index [`GW_LOCAL_PROG_INDEX`] of the source
    /// classifier's `PROG_ARRAY`).
    #[must_use]
    pub const fn attach(self) -> Option<AttachPoint> {
        match self {
            Template::TunnelIn => Some(AttachPoint::TunnelIngress),
            Template::GwLocal => None,
            Template::GwReply => Some(AttachPoint::EgressIngress),
        }
    }

    /// The holes the loader fills.
    #[must_use]
    pub const fn holes(self) -> &'static [&'static str] {
        match self {
            Template::TunnelIn | Template::GwLocal | Template::GwReply => &[HOLE_TUNNEL_IFINDEX],
        }
    }

    /// The files the program is assembled from, in order.
    #[must_use]
    pub const fn parts(self) -> &'static [&'static str] {
        match self {
            Template::TunnelIn => &["defs.s", "macros.s", "tunnel_in.s", "snat_v4.s", "count.s"],
            Template::GwLocal => &["defs.s", "macros.s", "gw_local.s", "snat_v4.s", "count.s"],
            Template::GwReply => &["defs.s", "macros.s", "gw_reply.s", "count.s"],
        }
    }

    /// The complete assembly source: the prelude generated from
    /// [`crate::layout`] ([`prelude`]), then the files.
    #[must_use]
    pub fn source(self) -> String {
        let mut s = prelude();
        for p in self.parts() {
            if let Some((_, text)) = FILES.iter().find(|(n, _)| n == p) {
                s.push('\n');
                s.push_str(text);
            }
        }
        s
    }

    /// Assembles the program (holes unfilled).
    ///
    /// # Errors
    /// The assembler's errors (a bug in the templates: tests assemble them all).
    pub fn assemble(self) -> Result<Assembly, AsmErrors> {
        asm::assemble(self.name(), &self.source())
    }
}

/// A source that sets a tunnel key and then runs `template` — the way the
/// kernel tests give `egret_tunnel_in` tunnel metadata under
/// `BPF_PROG_TEST_RUN`. `local_ipv4` is what the program then reads as the
/// tunnel remote.
#[must_use]
pub fn with_test_tunnel_key(template: Template, tunnel_id: u32, local_ipv4: Ipv4Addr) -> String {
    let test_prelude = TEST_TUNNEL_KEY_PRELUDE
        .replace("TEST_TUNNEL_ID", &tunnel_id.to_string())
        .replace("TEST_LOCAL_IPV4", &u32::from(local_ipv4).to_string());
    let prelude_text = prelude();
    let mut parts: Vec<&str> = vec![&prelude_text];
    for p in template.parts() {
        if let Some((_, text)) = FILES.iter().find(|(n, _)| n == p) {
            parts.push(text);
            if *p == "defs.s" {
                parts.push(&test_prelude);
            }
        }
    }
    parts.join("\n")
}

/// Test-only code put in front of a program: sets a tunnel key with
/// `tunnel_id` and `local_ipv4` (placeholders `TEST_TUNNEL_ID`,
/// `TEST_LOCAL_IPV4`), then restores R1 = ctx and falls into the program.
pub const TEST_TUNNEL_KEY_PRELUDE: &str = "
    r6 = r1
    r1 = 0
    *(u64 *)(r10 + TUNKEY) = r1
    *(u64 *)(r10 + TUNKEY + 8) = r1
    *(u64 *)(r10 + TUNKEY + 16) = r1
    *(u64 *)(r10 + TUNKEY + 24) = r1
    *(u64 *)(r10 + TUNKEY + 32) = r1
    *(u32 *)(r10 + TUNKEY + 40) = r1
    *(u32 *)(r10 + TUNKEY + TK_ID) = TEST_TUNNEL_ID
    *(u32 *)(r10 + TUNKEY + TK_REMOTE) = 0x0a0b0c0d
    *(u32 *)(r10 + TUNKEY + 28) = TEST_LOCAL_IPV4
    r1 = r6
    r2 = r10
    r2 += TUNKEY
    r3 = TUNNEL_KEY_SIZE
    r4 = 0
    call skb_set_tunnel_key
    r1 = r6
";

/// The assembler prelude every template starts with: the `.equ`s and `.map`s
/// of [`crate::layout::asm_prelude`] and the counter indexes ([`Stat`]).
#[must_use]
pub fn prelude() -> String {
    let stats: Vec<(String, i64)> = Stat::ALL.iter().map(|s| (s.asm_constant(), i64::from(s.index()))).collect();
    layout::asm_prelude(&stats)
}

/// The map definitions every template declares (identical in all of them).
#[must_use]
pub fn maps() -> Vec<MapDef> {
    layout::template_maps()
}

/// The indexes of `egret_gw_stats`: drop reasons, then what went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stat {
    /// 0, drop: no gateway (the source classifier's; never written here).
    NoGateway,
    /// 1, drop: the slot is not served here or has no egress IPv4.
    NoEgressIp,
    /// 2, drop: the source is not allowed for the slot from this sender.
    SpoofedSource,
    /// 3, drop: all [`NAT_PROBES`] candidate ports are taken.
    NatPortsExhausted,
    /// 4, drop: TTL ≤ 1 on a packet egret forwards.
    TtlExceeded,
    /// 5, drop: IPv4 but not TCP, UDP or ICMP echo request (egress path).
    UnsupportedProto,
    /// 6, drop: not IPv4 (egress path, tunnel).
    NotIpv4,
    /// 7, drop: truncated frame or bad IPv4 header (egress path).
    Malformed,
    /// 8, drop: non-first IPv4 fragment (egress path).
    Fragment,
    /// 9, drop: no tunnel metadata on `egret0`.
    NoTunnelKey,
    /// 10, drop: a reply for a local pod that is gone.
    NoLocalEndpoint,
    /// 11, drop: a checksum/store/tunnel-key helper failed.
    RewriteFailed,
    /// 12, passed: packets SNATed out of an egress interface.
    Snat,
    /// 13, event: NAT mappings created (packets = mappings).
    NatCreated,
    /// 14, passed: replies tunnelled back to the source node.
    ReplyTunnelled,
    /// 15, passed: replies handed to a pod of the gateway node.
    ReplyLocal,
    /// 16, passed: tunnelled replies delivered to a pod (source node).
    ReplyDelivered,
    /// 17, passed: probe requests answered by `egret_tunnel_in` ([`probe`]).
    ProbeAnswered,
    /// 18, consumed: probe replies recorded in `egret_probe_rx` (then dropped:
    /// nothing else sees them).
    ProbeReply,
    /// 19, drop: a floating slot with no owner known here, or a packet a peer
    /// forwarded to this node although it does not own the slot.
    NoOwner,
    /// 20, passed: floating-slot packets forwarded to the slot's owner.
    Forwarded,
}

impl Stat {
    /// All indexes, in order.
    pub const ALL: [Stat; 21] = [
        Stat::NoGateway,
        Stat::NoEgressIp,
        Stat::SpoofedSource,
        Stat::NatPortsExhausted,
        Stat::TtlExceeded,
        Stat::UnsupportedProto,
        Stat::NotIpv4,
        Stat::Malformed,
        Stat::Fragment,
        Stat::NoTunnelKey,
        Stat::NoLocalEndpoint,
        Stat::RewriteFailed,
        Stat::Snat,
        Stat::NatCreated,
        Stat::ReplyTunnelled,
        Stat::ReplyLocal,
        Stat::ReplyDelivered,
        Stat::ProbeAnswered,
        Stat::ProbeReply,
        Stat::NoOwner,
        Stat::Forwarded,
    ];

    /// The key in `egret_gw_stats`.
    #[must_use]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The stable label (metrics, manifests).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Stat::NoGateway => "no-gateway",
            Stat::NoEgressIp => "no-egress-ip",
            Stat::SpoofedSource => "spoofed-source",
            Stat::NatPortsExhausted => "nat-ports-exhausted",
            Stat::TtlExceeded => "ttl-exceeded",
            Stat::UnsupportedProto => "unsupported-proto",
            Stat::NotIpv4 => "not-ipv4",
            Stat::Malformed => "malformed",
            Stat::Fragment => "fragment",
            Stat::NoTunnelKey => "no-tunnel-key",
            Stat::NoLocalEndpoint => "no-local-endpoint",
            Stat::RewriteFailed => "rewrite-failed",
            Stat::Snat => "snat",
            Stat::NatCreated => "nat-created",
            Stat::ReplyTunnelled => "reply-tunnelled",
            Stat::ReplyLocal => "reply-local",
            Stat::ReplyDelivered => "reply-delivered",
            Stat::ProbeAnswered => "probe-answered",
            Stat::ProbeReply => "probe-reply",
            Stat::NoOwner => "no-owner",
            Stat::Forwarded => "forwarded",
        }
    }

    /// True for drop reasons.
    #[must_use]
    pub const fn is_drop(self) -> bool {
        (self as u32) <= Stat::RewriteFailed as u32 || matches!(self, Stat::NoOwner)
    }

    /// The name of its `.equ` constant in the templates' prelude.
    #[must_use]
    pub fn asm_constant(self) -> String {
        format!("STAT_{}", self.name().to_uppercase().replace('-', "_"))
    }
}

/// An `egret_local_eps` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The pod's IPv4.
    pub pod: Ipv4Addr,
    /// Its host-side veth.
    pub ifindex: u32,
}

impl LocalEndpoint {
    /// Value size.
    pub const SIZE: usize = local_ep::SIZE;

    /// Key bytes.
    #[must_use]
    pub fn key(&self) -> [u8; 4] {
        self.pod.octets()
    }

    /// Value bytes.
    #[must_use]
    pub fn value(&self) -> [u8; Self::SIZE] {
        let mut v = [0u8; Self::SIZE];
        local_ep::IFINDEX.put(&mut v, u64::from(self.ifindex));
        v
    }
}

/// An `egret_gw_slots` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewaySlot {
    /// The slot (24-bit VNI).
    pub slot: u32,
    /// Its egress IPv4 (`0.0.0.0`: none resolved).
    pub egress_ip: Ipv4Addr,
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
            egress_ifindex: gw_slot::IFINDEX.get_u32(value)?,
            floating: gw_slot::FLAGS.get_u32(value)? & GS_F_FLOATING != 0,
        })
    }
}

/// An entry of `egret_float_owner` — hash, key 4, value 8,
/// [`FLOAT_OWNER_MAX`] entries, a state map (empty image, kept across
/// swaps) written by the node's agent and read by the gateway templates'
/// SNAT path and by the source classifier:
/// - key: `u32` host floating slot id;
/// - value: `u32` host IPv4 of the slot's current owner @0 (its underlay
///   address, the tunnel remote other nodes see), `u32` host flags @4: bit 0
///   [`FO_F_SELF`] = this node owns the slot.
///
/// A slot with no entry has no owner known: its packets are dropped
/// (`no-owner`). An entry without [`FO_F_SELF`] whose owner is `0.0.0.0` is
/// treated the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatOwner {
    /// The floating slot.
    pub slot: u32,
    /// Its current owner's underlay IPv4.
    pub owner: Ipv4Addr,
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
        float_owner::OWNER.put_ipv4(&mut v, self.owner);
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
            owner: float_owner::OWNER.ipv4(value)?,
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
fn def(name: &str) -> MapDef {
    layout::find(name).map(layout::MapLayout::def).unwrap_or_else(|| unreachable!("{name} is in layout::MAPS"))
}

/// An entry of `egret_gw_peers` — hash, key 8, value 4, [`GW_PEERS_MAX`]
/// entries, compiled from the plan on a gateway: for each floating slot this
/// node serves, its other candidate gateways:
/// - key: `u32` host slot @0, `u32` host IPv4 of the peer @4 (its underlay
///   address, as `bpf_skb_get_tunnel_key` reports it);
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
    /// Another candidate gateway of it.
    pub peer: Ipv4Addr,
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
        peer_key::PEER.put_ipv4(&mut k, self.peer);
        k
    }

    /// The value bytes (zero).
    #[must_use]
    pub fn value(&self) -> [u8; Self::SIZE] {
        [0; Self::SIZE]
    }

    /// Decodes an entry; `None` unless an 8-byte key and a 4-byte value.
    #[must_use]
    pub fn from_bytes(key: &[u8], value: &[u8]) -> Option<GatewayPeer> {
        if !peer_key::LAYOUT.fits(key) || value.len() != Self::SIZE {
            return None;
        }
        Some(GatewayPeer { slot: peer_key::SLOT.get_u32(key)?, peer: peer_key::PEER.ipv4(key)? })
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
    /// Through the tunnel from this node (its tunnel source address).
    Node(Ipv4Addr),
    /// Through the tunnel from any node.
    AnyNode,
    /// The pod runs on this gateway node (`egret_gw_local` only).
    Local,
}

/// An `egret_gw_allowed` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedSource {
    /// The slot.
    pub slot: u32,
    /// The pod's IPv4.
    pub src: Ipv4Addr,
    /// Where it may come from.
    pub from: SourceNode,
}

impl AllowedSource {
    /// Value size.
    pub const SIZE: usize = allowed::SIZE;

    /// Key bytes.
    #[must_use]
    pub fn key(&self) -> [u8; allowed_key::SIZE] {
        let mut k = [0u8; allowed_key::SIZE];
        allowed_key::SLOT.put(&mut k, u64::from(self.slot));
        allowed_key::SRC.put_ipv4(&mut k, self.src);
        k
    }

    /// Value bytes.
    #[must_use]
    pub fn value(&self) -> [u8; Self::SIZE] {
        let (node, flags) = match self.from {
            SourceNode::Node(ip) => (u32::from(ip), 0),
            SourceNode::AnyNode => (0, 0),
            SourceNode::Local => (0, GA_F_LOCAL),
        };
        let mut v = [0u8; Self::SIZE];
        allowed::NODE.put(&mut v, u64::from(node));
        allowed::FLAGS.put(&mut v, u64::from(flags));
        v
    }
}

/// A 5-tuple key of `egret_nat_v4` / `egret_rnat_v4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatKey {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port (ICMP echo: identifier).
    pub sport: u16,
    /// Destination port (ICMP echo: 0).
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

impl NatKey {
    /// Key size.
    pub const SIZE: usize = nat_key::SIZE;

    /// Key bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut k = [0u8; Self::SIZE];
        nat_key::SRC.put_ipv4(&mut k, self.src);
        nat_key::DST.put_ipv4(&mut k, self.dst);
        nat_key::SPORT.put(&mut k, u64::from(self.sport));
        nat_key::DPORT.put(&mut k, u64::from(self.dport));
        nat_key::PROTO.put(&mut k, u64::from(self.proto));
        k
    }

    /// Parses key bytes; `None` unless exactly [`NatKey::SIZE`] bytes.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<NatKey> {
        if !nat_key::LAYOUT.fits(b) {
            return None;
        }
        Some(NatKey {
            src: nat_key::SRC.ipv4(b)?,
            dst: nat_key::DST.ipv4(b)?,
            sport: nat_key::SPORT.get(b)? as u16,
            dport: nat_key::DPORT.get(b)? as u16,
            proto: nat_key::PROTO.get(b)? as u8,
        })
    }
}

/// An `egret_nat_v4` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardNat {
    /// The egress IPv4 the flow is translated to.
    pub egress_ip: Ipv4Addr,
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
    /// Value size.
    pub const SIZE: usize = forward_nat::SIZE;

    /// Value bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut v = [0u8; Self::SIZE];
        forward_nat::EGRESS_IP.put_ipv4(&mut v, self.egress_ip);
        forward_nat::NAT_PORT.put(&mut v, u64::from(self.nat_port));
        forward_nat::SLOT.put(&mut v, u64::from(self.slot));
        forward_nat::CREATED.put(&mut v, self.created_ns);
        forward_nat::LAST_SEEN.put(&mut v, self.last_seen_ns);
        v
    }

    /// Parses value bytes; `None` unless exactly [`ForwardNat::SIZE`] bytes.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<ForwardNat> {
        if !forward_nat::LAYOUT.fits(b) {
            return None;
        }
        Some(ForwardNat {
            egress_ip: forward_nat::EGRESS_IP.ipv4(b)?,
            nat_port: forward_nat::NAT_PORT.get(b)? as u16,
            slot: forward_nat::SLOT.get_u32(b)?,
            created_ns: forward_nat::CREATED.get(b)?,
            last_seen_ns: forward_nat::LAST_SEEN.get(b)?,
        })
    }
}

/// An `egret_rnat_v4` value: the connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReverseNat {
    /// The pod's address.
    pub orig_src: Ipv4Addr,
    /// The pod's node (tunnel remote); `0.0.0.0` for local pods.
    pub node: Ipv4Addr,
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
    /// Value size.
    pub const SIZE: usize = reverse_nat::SIZE;

    /// Value bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut v = [0u8; Self::SIZE];
        reverse_nat::ORIG_SRC.put_ipv4(&mut v, self.orig_src);
        reverse_nat::NODE.put_ipv4(&mut v, self.node);
        reverse_nat::SLOT.put(&mut v, u64::from(self.slot));
        reverse_nat::ORIG_SPORT.put(&mut v, u64::from(self.orig_sport));
        reverse_nat::FLAGS.put(&mut v, u64::from(self.flags));
        reverse_nat::LAST_SEEN.put(&mut v, self.last_seen_ns);
        reverse_nat::EXPIRES.put(&mut v, self.expires_ns);
        v
    }

    /// Parses value bytes; `None` unless exactly [`ReverseNat::SIZE`] bytes.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<ReverseNat> {
        if !reverse_nat::LAYOUT.fits(b) {
            return None;
        }
        Some(ReverseNat {
            orig_src: reverse_nat::ORIG_SRC.ipv4(b)?,
            node: reverse_nat::NODE.ipv4(b)?,
            slot: reverse_nat::SLOT.get_u32(b)?,
            orig_sport: reverse_nat::ORIG_SPORT.get(b)? as u16,
            flags: reverse_nat::FLAGS.get(b)? as u8,
            last_seen_ns: reverse_nat::LAST_SEEN.get(b)?,
            expires_ns: reverse_nat::EXPIRES.get(b)?,
        })
    }
}

/// An entry of `egret_gw_live` — hash, key 4, value 4, [`GW_LIVE_MAX`]
/// entries, a state map (kept across swaps) written by the node's agent and
/// read by the source classifier (`egret_compiler::codegen`):
/// - key: `u32` host IPv4 of a gateway node (its InternalIP, the tunnel remote);
/// - value: `u32` host flags @0: bit 0 [`GL_F_DOWN`] = the gateway is down.
///
/// A gateway with no entry is up: an agent that probes nothing (or a map
/// just created) leaves every gateway in service, as before failover existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayLive {
    /// The gateway node's IPv4 address.
    pub gateway: Ipv4Addr,
    /// Whether it is down.
    pub down: bool,
}

impl GatewayLive {
    /// Value size.
    pub const SIZE: usize = gw_live::SIZE;

    /// The key bytes.
    #[must_use]
    pub fn key(&self) -> [u8; 4] {
        u32::from(self.gateway).to_le_bytes()
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
        let gateway = layout::gw_addr::GATEWAY.ipv4(key)?;
        Some(GatewayLive { gateway, down: gw_live::FLAGS.get_u32(value)? & GL_F_DOWN != 0 })
    }

    /// The map's definition.
    #[must_use]
    pub fn map_def() -> MapDef {
        def(map::GW_LIVE)
    }
}

pub mod probe {
    //! Gateway probes: frames that nodes send to a gateway's `egret0` and that
    //! the gateway's own `egret_tunnel_in` answers, so that a gateway whose
    //! datapath is gone stops answering even while its agent runs.
    //!
    //! A probe travels in egret's VXLAN tunnel with VNI [`VNI`] (0; egress slots
    //! are never 0). The UDP payload ([`Probe::datagram`]) is the 8-byte VXLAN
    //! header — flags `0x08` @0, 3 zero bytes, `be24` VNI @4, 1 zero byte @7 —
    //! followed by the inner Ethernet frame ([`Probe::frame`], [`FRAME_LEN`] = 60
    //! bytes, the Ethernet minimum without FCS):
    //!
    //! | bytes | field |
    //! |---|---|
    //! | 0..6 | destination MAC `02:65:67:72:65:01` ([`DST_MAC`]) |
    //! | 6..12 | source MAC `02:65:67:72:65:02` ([`SRC_MAC`]; locally administered and never a device's MAC, or the kernel's vxlan drops the frame as `LOCAL_MAC`) |
    //! | 12..14 | `be16` ethertype `0x88b5` ([`ETHERTYPE`], IEEE 802 local experimental 1) |
    //! | 14..18 | magic, the bytes `E G R P` ([`MAGIC`]) |
    //! | 18 | `u8` kind: 1 request, 2 reply |
    //! | 19 | `u8` version, 1 ([`VERSION`]) |
    //! | 20..22 | `u16` 0 |
    //! | 22..26 | `host u32` sequence number (little-endian) |
    //! | 26..30 | `be32` the sender's underlay IPv4 (informational; the program uses the tunnel remote) |
    //! | 30..38 | `host u64` the sender's `CLOCK_MONOTONIC` in ns when it sent the request (what `bpf_ktime_get_ns` reads) |
    //! | 38..60 | zero padding |
    //!
    //! The 4- and 8-byte fields sit at offsets ≡ 2 mod 4 / mod 8, so they are
    //! aligned for the kernel verifier's strict-alignment model (which assumes
    //! the packet starts 2 bytes past an aligned address, `NET_IP_ALIGN`).
    //!
    //! `egret_tunnel_in` checks the inner ethertype before anything else. A
    //! probe must have tunnel metadata (else drop `no-tunnel-key`), VNI 0, at
    //! least [`PAYLOAD_END`] bytes, the magic and version 1 (else drop
    //! `malformed`). A **request** is turned into a reply in place (kind byte
    //! rewritten, everything else unchanged — seq, sender and `sent_ns` are the
    //! requester's) and sent back with the tunnel key `{tunnel_id = 0,
    //! remote_ipv4 = the request's tunnel remote, tunnel_ttl = 64}` and
    //! `bpf_redirect(skb->ifindex, 0)` (egress of `egret0`), counted
    //! `probe-answered`. A **reply** is recorded in `egret_probe_rx` under the
    //! tunnel remote (the node that answered) and dropped, counted `probe-reply`.
    //! Any other kind is `malformed`.

    use std::net::Ipv4Addr;

    use crate::layout::{self, probe_frame, probe_rx};
    use crate::maps::MapDef;

    /// VNI of probe frames (egress slots are never 0).
    pub const VNI: u32 = layout::PROBE_VNI;
    /// Inner ethertype of probe frames (IEEE 802 local experimental 1).
    pub const ETHERTYPE: u16 = layout::PROBE_ETHERTYPE;
    /// Length of a probe frame (Ethernet header + payload, zero-padded).
    pub const FRAME_LEN: usize = 60;
    /// Destination MAC of probe frames.
    pub const DST_MAC: [u8; 6] = [0x02, 0x65, 0x67, 0x72, 0x65, 0x01];
    /// Source MAC of probe frames (never a device's MAC).
    pub const SRC_MAC: [u8; 6] = [0x02, 0x65, 0x67, 0x72, 0x65, 0x02];
    /// The magic at [`OFF_MAGIC`].
    pub const MAGIC: [u8; 4] = layout::PROBE_MAGIC_LE.to_le_bytes();
    /// The format version at [`OFF_VERSION`].
    pub const VERSION: u8 = layout::PROBE_VERSION;
    /// Kind byte of a request.
    pub const KIND_REQUEST: u8 = layout::PROBE_KIND_REQUEST;
    /// Kind byte of a reply.
    pub const KIND_REPLY: u8 = layout::PROBE_KIND_REPLY;
    /// Frame offset of the magic.
    pub const OFF_MAGIC: usize = probe_frame::MAGIC.offset;
    /// Frame offset of the kind byte.
    pub const OFF_KIND: usize = probe_frame::KIND.offset;
    /// Frame offset of the version byte.
    pub const OFF_VERSION: usize = probe_frame::VERSION.offset;
    /// Frame offset of the sequence number (`host u32`).
    pub const OFF_SEQ: usize = probe_frame::SEQ.offset;
    /// Frame offset of the sender's IPv4 (`be32`).
    pub const OFF_SENDER: usize = probe_frame::SENDER.offset;
    /// Frame offset of the send time (`host u64` ns).
    pub const OFF_SENT_NS: usize = probe_frame::SENT_NS.offset;
    /// End of the payload: the shortest frame the program accepts.
    pub const PAYLOAD_END: usize = probe_frame::SIZE;
    /// Length of the VXLAN header in front of the frame in a datagram.
    pub const VXLAN_HLEN: usize = 8;

    /// Request or reply.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        /// Sent by a node to a gateway.
        Request,
        /// The gateway's program's answer.
        Reply,
    }

    impl Kind {
        /// The kind byte.
        #[must_use]
        pub const fn byte(self) -> u8 {
            match self {
                Kind::Request => KIND_REQUEST,
                Kind::Reply => KIND_REPLY,
            }
        }
    }

    /// A probe frame's content.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Probe {
        /// Request or reply.
        pub kind: Kind,
        /// Sequence number chosen by the sender.
        pub seq: u32,
        /// The sender's underlay IPv4.
        pub sender: Ipv4Addr,
        /// The sender's `CLOCK_MONOTONIC` in ns when it sent the request.
        pub sent_ns: u64,
    }

    impl Probe {
        /// The inner Ethernet frame.
        #[must_use]
        pub fn frame(&self) -> [u8; FRAME_LEN] {
            let mut f = [0u8; FRAME_LEN];
            f[0..6].copy_from_slice(&DST_MAC);
            f[6..12].copy_from_slice(&SRC_MAC);
            f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
            f[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&MAGIC);
            f[OFF_KIND] = self.kind.byte();
            f[OFF_VERSION] = VERSION;
            f[OFF_SEQ..OFF_SEQ + 4].copy_from_slice(&self.seq.to_le_bytes());
            f[OFF_SENDER..OFF_SENDER + 4].copy_from_slice(&self.sender.octets());
            f[OFF_SENT_NS..OFF_SENT_NS + 8].copy_from_slice(&self.sent_ns.to_le_bytes());
            f
        }

        /// Decodes a frame (at least [`PAYLOAD_END`] bytes, as the program
        /// requires): `None` unless the ethertype, magic, version and kind
        /// are a probe's. The MACs are not checked.
        #[must_use]
        pub fn from_frame(frame: &[u8]) -> Option<Probe> {
            let f = frame.get(..PAYLOAD_END)?;
            if f[12..14] != ETHERTYPE.to_be_bytes() || f[OFF_MAGIC..OFF_MAGIC + 4] != MAGIC || f[OFF_VERSION] != VERSION
            {
                return None;
            }
            let kind = match f[OFF_KIND] {
                KIND_REQUEST => Kind::Request,
                KIND_REPLY => Kind::Reply,
                _ => return None,
            };
            Some(Probe {
                kind,
                seq: u32::from_le_bytes(f[OFF_SEQ..OFF_SEQ + 4].try_into().ok()?),
                sender: Ipv4Addr::new(f[OFF_SENDER], f[OFF_SENDER + 1], f[OFF_SENDER + 2], f[OFF_SENDER + 3]),
                sent_ns: u64::from_le_bytes(f[OFF_SENT_NS..OFF_SENT_NS + 8].try_into().ok()?),
            })
        }

        /// The UDP payload to send to a node's tunnel port: the VXLAN header
        /// (flags `0x08`, VNI [`VNI`]) and [`Probe::frame`].
        #[must_use]
        pub fn datagram(&self) -> Vec<u8> {
            let mut d = Vec::with_capacity(VXLAN_HLEN + FRAME_LEN);
            d.extend_from_slice(&[0x08, 0, 0, 0]);
            d.extend_from_slice(&(VNI << 8).to_be_bytes());
            d.extend_from_slice(&self.frame());
            d
        }

        /// Decodes a datagram received on the tunnel port (VXLAN header with
        /// the I flag and VNI [`VNI`], then a probe frame).
        #[must_use]
        pub fn from_datagram(datagram: &[u8]) -> Option<Probe> {
            let h = datagram.get(..VXLAN_HLEN)?;
            if h[0] & 0x08 == 0 || u32::from_be_bytes([h[4], h[5], h[6], h[7]]) >> 8 != VNI {
                return None;
            }
            Probe::from_frame(&datagram[VXLAN_HLEN..])
        }
    }

    /// Value of `egret_probe_rx` (key: `u32` host IPv4 of the node that
    /// answered, i.e. the reply's tunnel remote).
    ///
    /// `egret_probe_rx` — hash, key 4, value 24, [`super::PROBE_RX_MAX`]
    /// entries, a state map (empty image, kept across generation swaps),
    /// written by `egret_tunnel_in` (`BPF_ANY`) when a reply arrives:
    /// - key: `host u32` IPv4 of the answering node (tunnel remote);
    /// - value: `host u32` seq @0 (copied from the reply), 4 zero bytes @4,
    ///   `host u64` `sent_ns` @8 (copied from the reply), `host u64`
    ///   `recv_ns` @16 (`bpf_ktime_get_ns()` at arrival).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ProbeRx {
        /// The reply's sequence number.
        pub seq: u32,
        /// When its request was sent (the requester's clock).
        pub sent_ns: u64,
        /// When the reply arrived (`bpf_ktime_get_ns`).
        pub recv_ns: u64,
    }

    impl ProbeRx {
        /// Value size.
        pub const SIZE: usize = probe_rx::SIZE;

        /// The key of `node`'s entry.
        #[must_use]
        pub fn key(node: Ipv4Addr) -> [u8; 4] {
            u32::from(node).to_le_bytes()
        }

        /// Decodes a value; `None` unless exactly [`ProbeRx::SIZE`] bytes.
        #[must_use]
        pub fn from_bytes(value: &[u8]) -> Option<ProbeRx> {
            if !probe_rx::LAYOUT.fits(value) {
                return None;
            }
            Some(ProbeRx {
                seq: probe_rx::SEQ.get_u32(value)?,
                sent_ns: probe_rx::SENT_NS.get(value)?,
                recv_ns: probe_rx::RECV_NS.get(value)?,
            })
        }

        /// The value bytes.
        #[must_use]
        pub fn to_bytes(&self) -> [u8; Self::SIZE] {
            let mut v = [0u8; Self::SIZE];
            probe_rx::SEQ.put(&mut v, u64::from(self.seq));
            probe_rx::SENT_NS.put(&mut v, self.sent_ns);
            probe_rx::RECV_NS.put(&mut v, self.recv_ns);
            v
        }

        /// The map's definition.
        #[must_use]
        pub fn map_def() -> MapDef {
            super::def(super::map::PROBE_RX)
        }
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

/// The flow hash of the port allocator, exactly as the templates compute it:
/// over the little-endian `u32` loads of the forward key's words `a` = src,
/// `b` = dst, `c` = sport | dport << 16 (memory order), `d` = protocol,
/// `fmix32(((((a * C1) ^ b) * C2 ^ c) * C3) ^ d)` with murmur3's `fmix32`
/// and constants (wrapping 32-bit arithmetic).
#[must_use]
pub fn nat_hash(key: &NatKey) -> u32 {
    use layout::{HASH_C1, HASH_C2, HASH_C3};
    let b = key.to_bytes();
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let mut h = u32_at(&b, 0).wrapping_mul(HASH_C1);
    h = (h ^ u32_at(&b, 4)).wrapping_mul(HASH_C2);
    h = (h ^ u32_at(&b, 8)).wrapping_mul(HASH_C3);
    h ^= u32_at(&b, 12);
    h ^= h >> 16;
    h = h.wrapping_mul(HASH_C2);
    h ^= h >> 13;
    h = h.wrapping_mul(HASH_C3);
    h ^ (h >> 16)
}

/// The ports a new mapping of `key` tries, in order.
#[must_use]
pub fn nat_port_candidates(key: &NatKey) -> [u16; NAT_PROBES] {
    let bucket = nat_hash(key) % NAT_PORT_COUNT;
    let mut ports = [0u16; NAT_PROBES];
    for (i, p) in ports.iter_mut().enumerate() {
        // < 61000 + 4536 = 65536: always fits
        *p = NAT_PORT_MIN + ((bucket + i as u32) % NAT_PORT_COUNT) as u16;
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::MapKind;

    #[test]
    fn layouts_round_trip() {
        let k = NatKey {
            src: Ipv4Addr::new(10, 1, 2, 3),
            dst: Ipv4Addr::new(203, 0, 113, 9),
            sport: 40000,
            dport: 443,
            proto: 6,
        };
        assert_eq!(NatKey::from_bytes(&k.to_bytes()), Some(k));
        assert_eq!(&k.to_bytes()[8..13], &[0x9c, 0x40, 0x01, 0xbb, 6]);
        let r = ReverseNat {
            orig_src: k.src,
            node: Ipv4Addr::new(192, 0, 2, 7),
            slot: 0x00ab_cdef,
            orig_sport: 40000,
            flags: RV_F_SEEN_REPLY,
            last_seen_ns: 5,
            expires_ns: 9,
        };
        assert_eq!(ReverseNat::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(&r.to_bytes()[4..8], &[7, 2, 0, 192], "node in host (little-endian) order");
        let f = ForwardNat {
            egress_ip: Ipv4Addr::new(198, 51, 100, 1),
            nat_port: 61001,
            slot: 3,
            created_ns: 1,
            last_seen_ns: 2,
        };
        assert_eq!(ForwardNat::from_bytes(&f.to_bytes()), Some(f));
        let candidates = nat_port_candidates(&k);
        assert!(candidates.iter().all(|p| *p >= NAT_PORT_MIN));
        let mut sorted = candidates.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), NAT_PROBES, "candidates are distinct");
    }

    #[test]
    fn floating_slot_layouts_round_trip() {
        let slot =
            GatewaySlot { slot: 0xf10a, egress_ip: Ipv4Addr::new(198, 51, 100, 9), egress_ifindex: 7, floating: true };
        assert_eq!(&slot.value()[8..12], &[1, 0, 0, 0], "GS_F_FLOATING @8");
        assert_eq!(GatewaySlot::from_bytes(&slot.key(), &slot.value()), Some(slot));
        let fixed = GatewaySlot { floating: false, ..slot };
        assert_eq!(&fixed.value()[8..12], &[0; 4]);
        assert_eq!(GatewaySlot::from_bytes(&fixed.key(), &fixed.value()), Some(fixed));
        assert_eq!(GatewaySlot::from_bytes(&slot.key(), &slot.value()[..11]), None);

        let o = FloatOwner { slot: 0xf10a, owner: Ipv4Addr::new(192, 0, 2, 50), is_self: false };
        assert_eq!(o.key(), [0x0a, 0xf1, 0, 0]);
        assert_eq!(o.value(), [50, 2, 0, 192, 0, 0, 0, 0], "owner in host order, flags 0");
        assert_eq!(FloatOwner::from_bytes(&o.key(), &o.value()), Some(o));
        let me = FloatOwner { is_self: true, ..o };
        assert_eq!(&me.value()[4..8], &[1, 0, 0, 0], "FO_F_SELF @4");
        assert_eq!(FloatOwner::from_bytes(&me.key(), &me.value()), Some(me));
        assert_eq!(FloatOwner::from_bytes(&o.key()[..3], &o.value()), None);
        assert_eq!(FloatOwner::from_bytes(&o.key(), &[0; 9]), None);
        let d = FloatOwner::map_def();
        assert_eq!(
            (d.name.as_str(), d.kind, d.key_size, d.value_size, d.max_entries),
            ("egret_float_owner", MapKind::Hash, 4, 8, 256)
        );

        let p = GatewayPeer { slot: 0xf10a, peer: Ipv4Addr::new(192, 0, 2, 50) };
        assert_eq!(p.key(), [0x0a, 0xf1, 0, 0, 50, 2, 0, 192]);
        assert_eq!(p.value(), [0; 4]);
        assert_eq!(GatewayPeer::from_bytes(&p.key(), &p.value()), Some(p));
        assert_eq!(GatewayPeer::from_bytes(&p.key(), &[0; 8]), None);
        let d = GatewayPeer::map_def();
        assert_eq!(
            (d.name.as_str(), d.kind, d.key_size, d.value_size, d.max_entries),
            ("egret_gw_peers", MapKind::Hash, 8, 4, 1024)
        );
        assert!(maps().contains(&FloatOwner::map_def()) && maps().contains(&GatewayPeer::map_def()));
        assert!(Stat::NoOwner.is_drop() && !Stat::Forwarded.is_drop() && !Stat::ProbeReply.is_drop());
        assert_eq!((Stat::NoOwner.index(), Stat::Forwarded.index()), (19, 20));
    }

    #[test]
    fn probes_round_trip_and_garbage_is_rejected() {
        use probe::{Kind, Probe, ProbeRx};
        let p = Probe {
            kind: Kind::Request,
            seq: 0xdead_beef,
            sender: Ipv4Addr::new(192, 0, 2, 7),
            sent_ns: 0x0102_0304_0506_0708,
        };
        let f = p.frame();
        assert_eq!(Probe::from_frame(&f), Some(p));
        assert_eq!(&f[0..14], &[2, 0x65, 0x67, 0x72, 0x65, 1, 2, 0x65, 0x67, 0x72, 0x65, 2, 0x88, 0xb5]);
        assert_eq!(&f[14..22], b"EGRP\x01\x01\0\0");
        assert_eq!(&f[22..26], &[0xef, 0xbe, 0xad, 0xde], "seq little-endian");
        assert_eq!(&f[26..30], &[192, 0, 2, 7], "sender in network order");
        assert_eq!(&f[30..38], &[8, 7, 6, 5, 4, 3, 2, 1], "sent_ns little-endian");
        assert!(f[38..].iter().all(|b| *b == 0), "zero padding");
        let r = Probe { kind: Kind::Reply, ..p };
        assert_eq!(r.frame()[18], 2);
        assert_eq!(Probe::from_frame(&r.frame()), Some(r));
        // the program accepts the payload without padding; so does the decoder
        assert_eq!(Probe::from_frame(&f[..probe::PAYLOAD_END]), Some(p));
        assert_eq!(Probe::from_frame(&f[..probe::PAYLOAD_END - 1]), None, "short");
        for (at, byte) in [(12, 0x08), (13, 0x00), (14, b'X'), (17, b'Q'), (18, 0), (18, 3), (19, 2)] {
            let mut g = f;
            g[at] = byte;
            assert_eq!(Probe::from_frame(&g), None, "byte {at} = {byte:#x}");
        }
        assert_eq!(Probe::from_frame(&[]), None);
        assert_eq!(Probe::from_frame(&[0xff; 60]), None);

        let d = p.datagram();
        assert_eq!(d.len(), probe::VXLAN_HLEN + probe::FRAME_LEN);
        assert_eq!(&d[..8], &[0x08, 0, 0, 0, 0, 0, 0, 0], "VXLAN header, VNI 0");
        assert_eq!(&d[8..], &f[..]);
        assert_eq!(Probe::from_datagram(&d), Some(p));
        let mut bad = d.clone();
        bad[6] = 1; // VNI 256
        assert_eq!(Probe::from_datagram(&bad), None);
        assert_eq!(Probe::from_datagram(&d[..7]), None);

        let rx = ProbeRx { seq: 7, sent_ns: 1_000, recv_ns: 2_000 };
        let b = rx.to_bytes();
        assert_eq!(ProbeRx::from_bytes(&b), Some(rx));
        assert_eq!(&b[0..8], &[7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[8..10], &[0xe8, 0x03]);
        assert_eq!(ProbeRx::from_bytes(&b[..23]), None);
        assert_eq!(ProbeRx::from_bytes(&[0; 25]), None);
        assert_eq!(ProbeRx::key(Ipv4Addr::new(192, 0, 2, 7)), [7, 2, 0, 192], "host order");
        let def = ProbeRx::map_def();
        assert_eq!((def.name.as_str(), def.key_size, def.value_size, def.max_entries), ("egret_probe_rx", 4, 24, 1024));
        assert_eq!(def.kind, MapKind::Hash);
    }
}
