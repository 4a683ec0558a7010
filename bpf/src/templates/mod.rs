//! The gateway datapath templates: the three tc classifiers (IPv4 and IPv6) in
//! `bpf-templates/` (egret's assembly), embedded, assembled, and the exact
//! byte layouts of the maps they share with the loader and the code generator.
//!
//! # Programs
//!
//! | program | attach | what it does |
//! |---|---|---|
//! | `egret_tunnel_in` | tcx ingress of `egret0` ([`AttachPoint::TunnelIngress`]), every node | first, a gateway probe (inner ethertype 0x88b5, see [`probe`]): a request is answered from here, a reply recorded in `egret_probe_rx`; then inner destination in `egret_local_eps_v4`/`_v6` → *reply delivery*: `bpf_redirect_neigh(veth, {AF_INET or AF_INET6, pod}, 20, 0)`; otherwise *egress*: `tunnel_id & 0xffffff` is the slot, the tunnel remote the sending node, then the SNAT path |
//! | `egret_gw_local` | none: tail-call target, index [`GW_LOCAL_PROG_INDEX`] of the source classifier's `PROG_ARRAY` | the SNAT path for the gateway node's own pods; the slot is in `skb->cb[0]` (low 24 bits) |
//! | `egret_gw_reply` | tcx ingress of each egress interface ([`AttachPoint::EgressIngress`]) | reverse NAT; a reply to a pod on another node gets the tunnel key `{tunnel_id = slot, remote = node (its family: [`crate::layout::NODE_ADDR`]), tunnel_ttl = 64}` and `bpf_redirect(%tunnel_ifindex, 0)`; one to a local pod goes to its veth like reply delivery; anything that is not a live NAT mapping returns `TC_ACT_UNSPEC` (-1) untouched |
//!
//! **SNAT path** (both egress programs, each family; bpf-templates/README.md
//! says where IPv6 differs), in this order: Ethernet + IPv4 header
//! (IHL 5..15) else drop `malformed`/`not-ip`; slot in `egret_gw_slots` with
//! a non-zero egress IPv4 else `no-egress-ip`; source allowed
//! (`egret_gw_allowed_v4`, see below) else `spoofed-source`; for a *floating
//! slot* ([`GS_F_FLOATING`]) the owner in `egret_float_owner`
//! ([`FloatOwner`]): none → `no-owner`, this node → go on, another node →
//! forward the packet unchanged with the tunnel key `{tunnel_id = slot,
//! remote = owner, tunnel_ttl = 64}` and `bpf_redirect(%tunnel_ifindex,
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
//! `gw_reply.s`) + `snat.s` for the two egress programs + `count.s`
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
//! - `egret_flow_events` (programs only, a ring buffer, state map): one
//!   [`FlowEvent`] per translation created and per connection closed (see
//!   [`flow`] for exactly what the datapath observes); a record that does
//!   not fit counts [`Stat::FlowEventDropped`] and the packet goes on.
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

use std::net::IpAddr;

use crate::artifact::AttachPoint;
use crate::asm::{self, AsmErrors, Assembly};
use crate::layout;
use crate::maps::MapDef;

const DEFS: &str = include_str!("../../../bpf-templates/defs.s");
const MACROS: &str = include_str!("../../../bpf-templates/macros.s");
const TUNNEL_IN: &str = include_str!("../../../bpf-templates/tunnel_in.s");
const GW_LOCAL: &str = include_str!("../../../bpf-templates/gw_local.s");
const GW_REPLY: &str = include_str!("../../../bpf-templates/gw_reply.s");
const SNAT: &str = include_str!("../../../bpf-templates/snat.s");
const COUNT: &str = include_str!("../../../bpf-templates/count.s");

/// The template source files, by file name (for tools and tests).
pub const FILES: [(&str, &str); 7] = [
    ("defs.s", DEFS),
    ("macros.s", MACROS),
    ("tunnel_in.s", TUNNEL_IN),
    ("gw_local.s", GW_LOCAL),
    ("gw_reply.s", GW_REPLY),
    ("snat.s", SNAT),
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
            Template::TunnelIn => &["defs.s", "macros.s", "tunnel_in.s", "snat.s", "count.s"],
            Template::GwLocal => &["defs.s", "macros.s", "gw_local.s", "snat.s", "count.s"],
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
/// `BPF_PROG_TEST_RUN`. `local` (either underlay family) is what the program
/// then reads as the tunnel remote.
#[must_use]
pub fn with_test_tunnel_key(template: Template, tunnel_id: u32, local: IpAddr) -> String {
    use std::fmt::Write as _;
    let (flags, mut set_local) = match local {
        IpAddr::V4(a) => (0, format!("    *(u32 *)(r10 + TUNKEY + TK_LOCAL) = {}\n", u32::from(a))),
        IpAddr::V6(_) => (layout::BPF_F_TUNINFO_IPV6, String::new()),
    };
    if let IpAddr::V6(a) = local {
        for (i, w) in a.octets().chunks_exact(4).enumerate() {
            let w = i32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            let _ = writeln!(set_local, "    *(u32 *)(r10 + TUNKEY + TK_LOCAL + {}) = {w}", 4 * i);
        }
    }
    let test_prelude = TEST_TUNNEL_KEY_PRELUDE
        .replace("TEST_TUNNEL_ID", &tunnel_id.to_string())
        .replace("    TEST_SET_LOCAL\n", &set_local)
        .replace("TEST_FLAGS", &flags.to_string());
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
/// `tunnel_id` and a local address (placeholders `TEST_TUNNEL_ID`,
/// `TEST_SET_LOCAL`: the stores of the address, `TEST_FLAGS`: the family's
/// flags), then restores R1 = ctx and falls into the program.
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
    TEST_SET_LOCAL
    r1 = r6
    r2 = r10
    r2 += TUNKEY
    r3 = TUNNEL_KEY_SIZE
    r4 = TEST_FLAGS
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
    /// 1, drop: the slot is not served here or has no egress address of the packet's family.
    NoEgressIp,
    /// 2, drop: the source is not allowed for the slot from this sender.
    SpoofedSource,
    /// 3, drop: all [`NAT_PROBES`] candidate ports are taken.
    NatPortsExhausted,
    /// 4, drop: TTL ≤ 1 on a packet egret forwards.
    TtlExceeded,
    /// 5, drop: not TCP, UDP or ICMP/ICMPv6 echo request (egress path; IPv6
    /// extension headers included).
    UnsupportedProto,
    /// 6, drop: neither IPv4 nor IPv6 (egress path, tunnel).
    NotIp,
    /// 7, drop: truncated frame or bad IPv4/IPv6 header (egress path).
    Malformed,
    /// 8, drop: non-first IPv4 fragment, or IPv6 with a fragment header (egress path).
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
    /// 21, event: ICMP / ICMPv6 errors about a translated connection (an
    /// unreachable, fragmentation needed / packet too big, time exceeded)
    /// translated back to the pod (also counted `reply-tunnelled` or
    /// `reply-local` as they leave).
    IcmpError,
    /// 22, event lost: a flow event (`egret_flow_events`) that did not fit
    /// in the ring buffer (the reader is behind); the packet went on.
    FlowEventDropped,
}

impl Stat {
    /// All indexes, in order.
    pub const ALL: [Stat; 23] = [
        Stat::NoGateway,
        Stat::NoEgressIp,
        Stat::SpoofedSource,
        Stat::NatPortsExhausted,
        Stat::TtlExceeded,
        Stat::UnsupportedProto,
        Stat::NotIp,
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
        Stat::IcmpError,
        Stat::FlowEventDropped,
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
            Stat::NotIp => "not-ip",
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
            Stat::IcmpError => "icmp-error",
            Stat::FlowEventDropped => "flow-event-dropped",
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

mod entries;
mod flow;
mod nat;
pub mod probe;
pub use entries::*;
pub use flow::*;
pub use nat::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::MapKind;
    use std::net::Ipv4Addr;

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
        assert_eq!(&k.to_bytes()[0..5], &[0x9c, 0x40, 0x01, 0xbb, 6], "ports and protocol first");
        assert_eq!(&k.to_bytes()[8..12], &[10, 1, 2, 3]);
        let k6 = NatKey {
            src: "fd00::1:0:0:10".parse::<std::net::Ipv6Addr>().expect("v6"),
            dst: "2001:db8::9".parse().expect("v6"),
            sport: 40000,
            dport: 443,
            proto: 17,
        };
        let b6 = k6.to_bytes();
        assert_eq!(b6.len(), 40);
        assert_eq!(&b6[0..5], &[0x9c, 0x40, 0x01, 0xbb, 17], "the IPv4 key's offsets");
        assert_eq!(NatKey::from_bytes(&b6), Some(k6));
        assert_eq!(NatKey::<Ipv4Addr>::from_bytes(&b6), None, "a family's key is not the other's");
        let r6 = ReverseNat {
            orig_src: k6.src,
            node: "2001:db8:ffff::7".parse().expect("v6"),
            slot: 9,
            orig_sport: 1,
            flags: 1,
            last_seen_ns: 2,
            expires_ns: 3,
        };
        assert_eq!(ReverseNat::from_bytes(&r6.to_bytes()), Some(r6));
        let f6 = ForwardNat { egress_ip: k6.dst, nat_port: 61001, slot: 9, created_ns: 1, last_seen_ns: 2 };
        assert_eq!(ForwardNat::from_bytes(&f6.to_bytes()), Some(f6));
        let r = ReverseNat {
            orig_src: k.src,
            node: Ipv4Addr::new(192, 0, 2, 7).into(),
            slot: 0x00ab_cdef,
            orig_sport: 40000,
            flags: RV_F_SEEN_REPLY,
            last_seen_ns: 5,
            expires_ns: 9,
        };
        assert_eq!(ReverseNat::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(
            &r.to_bytes()[0..16],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7],
            "a mapped IPv4 node"
        );
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
        let slot = GatewaySlot {
            slot: 0xf10a,
            egress_ip: Ipv4Addr::new(198, 51, 100, 9),
            egress_ip6: std::net::Ipv6Addr::LOCALHOST,
            egress_ifindex: 7,
            floating: true,
        };
        assert_eq!(&slot.value()[8..12], &[1, 0, 0, 0], "GS_F_FLOATING @8");
        assert_eq!(GatewaySlot::from_bytes(&slot.key(), &slot.value()), Some(slot));
        let fixed = GatewaySlot { floating: false, ..slot };
        assert_eq!(&fixed.value()[8..12], &[0; 4]);
        assert_eq!(GatewaySlot::from_bytes(&fixed.key(), &fixed.value()), Some(fixed));
        assert_eq!(GatewaySlot::from_bytes(&slot.key(), &slot.value()[..11]), None);

        let o = FloatOwner { slot: 0xf10a, owner: Ipv4Addr::new(192, 0, 2, 50).into(), is_self: false };
        assert_eq!(o.key(), [0x0a, 0xf1, 0, 0]);
        assert_eq!(
            o.value(),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 50, 0, 0, 0, 0],
            "owner mapped, flags 0"
        );
        assert_eq!(FloatOwner::from_bytes(&o.key(), &o.value()), Some(o));
        let me = FloatOwner { is_self: true, ..o };
        assert_eq!(&me.value()[16..20], &[1, 0, 0, 0], "FO_F_SELF @16");
        let o6 = FloatOwner { owner: "2001:db8::50".parse().expect("v6"), ..o };
        assert_eq!(FloatOwner::from_bytes(&o6.key(), &o6.value()), Some(o6));
        assert_eq!(FloatOwner::from_bytes(&me.key(), &me.value()), Some(me));
        assert_eq!(FloatOwner::from_bytes(&o.key()[..3], &o.value()), None);
        assert_eq!(FloatOwner::from_bytes(&o.key(), &[0; 9]), None);
        let d = FloatOwner::map_def();
        assert_eq!(
            (d.name.as_str(), d.kind, d.key_size, d.value_size, d.max_entries),
            ("egret_float_owner", MapKind::Hash, 4, 20, 256)
        );

        let p = GatewayPeer { slot: 0xf10a, peer: Ipv4Addr::new(192, 0, 2, 50).into() };
        assert_eq!(p.key(), [0x0a, 0xf1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 50]);
        assert_eq!(p.value(), [0; 4]);
        assert_eq!(GatewayPeer::from_bytes(&p.key(), &p.value()), Some(p));
        assert_eq!(GatewayPeer::from_bytes(&p.key(), &[0; 8]), None);
        let d = GatewayPeer::map_def();
        assert_eq!(
            (d.name.as_str(), d.kind, d.key_size, d.value_size, d.max_entries),
            ("egret_gw_peers", MapKind::Hash, 20, 4, 1024)
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
        assert_eq!(
            ProbeRx::key(Ipv4Addr::new(192, 0, 2, 7)),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7],
            "a mapped IPv4 node"
        );
        let def = ProbeRx::map_def();
        assert_eq!(
            (def.name.as_str(), def.key_size, def.value_size, def.max_entries),
            ("egret_probe_rx", 16, 24, 1024)
        );
        assert_eq!(def.kind, MapKind::Hash);
    }
}
