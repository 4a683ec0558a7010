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
//! remote = the request's tunnel remote (either family), tunnel_ttl = 64}` and
//! `bpf_redirect(skb->ifindex, 0)` (egress of `egret0`), counted
//! `probe-answered`. A **reply** is recorded in `egret_probe_rx` under the
//! tunnel remote (the node that answered) and dropped, counted `probe-reply`.
//! Any other kind is `malformed`.

use std::net::{IpAddr, Ipv4Addr};

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
        if f[12..14] != ETHERTYPE.to_be_bytes() || f[OFF_MAGIC..OFF_MAGIC + 4] != MAGIC || f[OFF_VERSION] != VERSION {
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

/// Value of `egret_probe_rx` (key: the node address ([`layout::NODE_ADDR`]) of the node that
/// answered, i.e. the reply's tunnel remote).
///
/// `egret_probe_rx` — hash, key 16, value 24, [`super::PROBE_RX_MAX`]
/// entries, a state map (empty image, kept across generation swaps),
/// written by `egret_tunnel_in` (`BPF_ANY`) when a reply arrives:
/// - key: the answering node's address (tunnel remote, [`layout::NODE_ADDR`]);
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

    /// The key of `node`'s entry (its underlay address, [`layout::NODE_ADDR`]).
    #[must_use]
    pub fn key(node: impl Into<IpAddr>) -> [u8; layout::node_addr::SIZE] {
        let mut k = [0; layout::node_addr::SIZE];
        layout::node_addr::NODE.put_node(&mut k, node.into());
        k
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
