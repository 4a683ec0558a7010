//! TCP MSS clamping on redirected SYNs (ARCHITECTURE.md, "MTU"): the tunnel
//! adds 50 bytes (VXLAN over IPv4) and egret cannot set pod MTUs, so the
//! classifier lowers the MSS option of every TCP SYN (with or without ACK)
//! it redirects into `egret0` to at most the clamp of the packet's family.
//! Outer packets may still fragment; `BPF_F_DONT_FRAGMENT` is never set.
//!
//! The clamp is carried as two holes, `%mss_v4` and `%mss_v6`, with the
//! source `UnderlayMss` ([`hole_specs`]): the loader fills them from the
//! node's underlay MTU (`egret_bpf::layout::tunnel_mss`), or with the value
//! compiled in ([`super::Options::mss_clamp`], default [`MssClamp::DEFAULT`]:
//! 1500 − 50 − 20 − 20 = 1410 for IPv4, 1390 for IPv6) where it is not told
//! one. The program is the same for every underlay MTU; `egret verify` and the
//! equivalence check use the compiled-in value.
//!
//! What the emitted code does (after the verdict is redirect, before the
//! tunnel key): Ethernet, one optional 802.1Q tag; IPv4 with protocol TCP,
//! fragment offset 0 and IHL ≥ 5 (options allowed), or IPv6 whose next
//! header is TCP; the TCP header inside the frame, SYN set, a data offset
//! above 5; then a loop-free walk over at most [`OPTION_STEPS`] options from
//! the start of the options (NOP advances one byte, EOL ends, other kinds
//! advance by their length, which must be ≥ 2 and stay in the header). An
//! MSS option (kind 2, length 4) inside the header whose value is above the
//! clamp is rewritten with `bpf_skb_store_bytes`, then the TCP checksum is
//! updated with `bpf_l4_csum_replace` (size 2, no pseudo-header flag: the
//! MSS is not in the pseudo-header; the values are byte-swapped when the
//! field sits at an odd offset of the segment, since the checksum sums
//! 16-bit words from the header's start). Under `CHECKSUM_PARTIAL` (veth:
//! pods' packets) the kernel leaves the field alone and the offload
//! computes the sum over the new bytes; under `CHECKSUM_NONE` (as
//! `BPF_PROG_TEST_RUN` builds packets) the field is updated in place; under
//! `CHECKSUM_COMPLETE` the two changes cancel in `skb->csum`. Storing first
//! makes the head writable up to the MSS field, past the checksum field, so
//! the checksum helper cannot fail afterwards; should it fail anyway the
//! packet is dropped as `drop-tunnel-error`. A failed store leaves the
//! packet unchanged and it is redirected unclamped.
//!
//! Not clamped: an MSS option behind more than [`OPTION_STEPS`] − 1 other
//! options or NOPs (every common stack sends it first), IPv6 with extension
//! headers before TCP, IPv4 non-first fragments, truncated TCP headers,
//! malformed option lists (a length below 2 or past the header ends the
//! walk), packets that are not redirected (pass, drop, local egress: the
//! gateway is this node, no tunnel), and more than one 802.1Q tag.
//!
//! [`clamped`] is the same rule written for the equivalence checker, on a
//! frame, independently of the emitter.

use egret_bpf::artifact::{HoleSource, HoleSpec};
use std::net::IpAddr;

/// The hole with the IPv4 clamp.
pub const HOLE_MSS_V4: &str = "mss_v4";
/// The hole with the IPv6 clamp.
pub const HOLE_MSS_V6: &str = "mss_v6";
/// TCP options (NOPs included) examined from the start of the options.
pub const OPTION_STEPS: usize = 4;
/// Bytes the VXLAN tunnel adds (outer IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14).
pub const TUNNEL_OVERHEAD: u16 = egret_bpf::layout::TUNNEL_OVERHEAD as u16;

/// The largest MSS a redirected SYN may announce, per inner family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MssClamp {
    pub v4: u16,
    pub v6: u16,
}

impl MssClamp {
    /// For a 1500-byte underlay: 1410 (IPv4), 1390 (IPv6).
    pub const DEFAULT: MssClamp = match MssClamp::for_underlay_mtu(1500) {
        Some(c) => c,
        None => MssClamp { v4: 1410, v6: 1390 },
    };

    /// The clamp for an underlay MTU ([`egret_bpf::layout::tunnel_mss`]: MTU −
    /// 50 (tunnel) − IP header − 20 (TCP)). `None` when that leaves nothing
    /// (MTU below 111).
    #[must_use]
    pub const fn for_underlay_mtu(mtu: u16) -> Option<MssClamp> {
        match (egret_bpf::layout::tunnel_mss(mtu, false), egret_bpf::layout::tunnel_mss(mtu, true)) {
            (Some(v4), Some(v6)) => Some(MssClamp { v4, v6 }),
            _ => None,
        }
    }

    /// The clamp for a packet of this family, tunnelled over an IPv6
    /// underlay when `underlay_v6` (the gateway's address is IPv6: 20 bytes
    /// less, [`egret_bpf::layout::UNDERLAY_V6_EXTRA`]).
    #[must_use]
    /// `None` when the clamp is below those 20 bytes: the program's 32-bit
    /// subtraction wraps and nothing is clamped (no real MTU gets there: an
    /// IPv6 underlay has at least 1280).
    pub fn of(self, ip: IpAddr, underlay_v6: bool) -> Option<u16> {
        let clamp = if ip.is_ipv4() { self.v4 } else { self.v6 };
        if underlay_v6 { clamp.checked_sub(egret_bpf::layout::UNDERLAY_V6_EXTRA as u16) } else { Some(clamp) }
    }
}

impl Default for MssClamp {
    fn default() -> MssClamp {
        MssClamp::DEFAULT
    }
}

impl std::fmt::Display for MssClamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (IPv4) / {} (IPv6)", self.v4, self.v6)
    }
}

/// The manifest's hole specs for a clamp.
#[must_use]
pub fn hole_specs(clamp: MssClamp) -> Vec<HoleSpec> {
    vec![
        HoleSpec { name: HOLE_MSS_V4.into(), source: HoleSource::UnderlayMss { ipv6: false, default: clamp.v4 } },
        HoleSpec { name: HOLE_MSS_V6.into(), source: HoleSource::UnderlayMss { ipv6: true, default: clamp.v6 } },
    ]
}

/// The clamp a manifest records (`None`: no clamp holes, the program does
/// not clamp; `Some(Err)`: the holes are there but not constants that fit).
#[must_use]
pub fn from_holes(holes: &[HoleSpec]) -> Option<Result<MssClamp, String>> {
    let find = |name: &str| holes.iter().find(|h| h.name == name).map(|h| &h.source);
    let value = |name: &str| match find(name) {
        Some(HoleSource::UnderlayMss { default, .. }) => Ok(*default),
        Some(HoleSource::Constant { value }) if *value <= u64::from(u16::MAX) => Ok(*value as u16),
        Some(other) => Err(format!("hole %{name} is {other}, expected a 16-bit constant")),
        None => Err(format!("hole %{name} is missing")),
    };
    match (find(HOLE_MSS_V4), find(HOLE_MSS_V6)) {
        (None, None) => None,
        _ => Some(value(HOLE_MSS_V4).and_then(|v4| Ok(MssClamp { v4, v6: value(HOLE_MSS_V6)? }))),
    }
}

// The rule below reads the headers with literal offsets on purpose: it is the
// equivalence checker's oracle, written independently of the emitter (which
// takes its offsets from `egret_bpf::layout`), so one wrong constant cannot make
// both agree.

/// Where a frame's TCP header is, when the classifier's clamp looks at it:
/// (offset of the TCP header, source address).
fn tcp_header(frame: &[u8]) -> Option<(usize, IpAddr)> {
    let mut l3 = 14;
    let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if ethertype == 0x8100 {
        ethertype = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
        l3 = 18;
    }
    let ip = frame.get(l3..)?;
    match ethertype {
        0x0800 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0xf) * 4;
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            let src: [u8; 4] = ip[12..16].try_into().ok()?;
            (ip[9] == 6 && frag == 0 && ihl >= 20).then_some((l3 + ihl, IpAddr::from(src)))
        }
        0x86dd if ip.len() >= 40 => {
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            (ip[6] == 6).then_some((l3 + 40, IpAddr::from(src)))
        }
        _ => None,
    }
}

/// The frame a redirected packet leaves with: `frame` with the MSS option
/// clamped and the TCP checksum updated incrementally, when the rule of the
/// module documentation applies; otherwise `frame` itself. `underlay_v6`:
/// the gateway is reached over IPv6.
#[must_use]
pub fn clamped(frame: &[u8], clamp: MssClamp, underlay_v6: bool) -> Vec<u8> {
    let mut out = frame.to_vec();
    let Some((l4, src)) = tcp_header(frame) else { return out };
    let Some(tcp) = frame.get(l4..l4 + 20) else { return out };
    let hlen = usize::from(tcp[12] >> 4) * 4;
    if tcp[13] & 0x02 == 0 || hlen <= 20 {
        return out;
    }
    let end = l4 + hlen;
    let mut p = l4 + 20;
    for _ in 0..OPTION_STEPS {
        let Some(&kind) = frame.get(p).filter(|_| p < end) else { return out };
        match kind {
            0 => return out,
            1 => p += 1,
            _ => {
                let Some(&len) = frame.get(p + 1).filter(|_| p + 2 <= end) else { return out };
                if kind == 2 {
                    if len != 4 || p + 4 > end || p + 4 > frame.len() {
                        return out;
                    }
                    let mss = u16::from_be_bytes([frame[p + 2], frame[p + 3]]);
                    let Some(limit) = clamp.of(src, underlay_v6) else { return out };
                    if mss > limit {
                        out[p + 2..p + 4].copy_from_slice(&limit.to_be_bytes());
                        // RFC 1624 incremental update, 16-bit words from the segment's start
                        let (old, new) =
                            if (p + 2 - l4) % 2 == 0 { (mss, limit) } else { (mss.swap_bytes(), limit.swap_bytes()) };
                        let sum = u16::from_be_bytes([out[l4 + 16], out[l4 + 17]]);
                        let updated = !ones_add(ones_add(!sum, !old), new);
                        out[l4 + 16..l4 + 18].copy_from_slice(&updated.to_be_bytes());
                    }
                    return out;
                }
                if len < 2 {
                    return out;
                }
                p += usize::from(len);
            }
        }
    }
    out
}

fn ones_add(a: u16, b: u16) -> u16 {
    let (s, c) = a.overflowing_add(b);
    s + u16::from(c)
}

/// The MSS option value of a frame's TCP header among the first
/// [`OPTION_STEPS`] options, as [`clamped`] finds it (for reports and tests).
#[must_use]
pub fn mss_of(frame: &[u8]) -> Option<u16> {
    let (l4, _) = tcp_header(frame)?;
    let hlen = usize::from(frame.get(l4 + 12)? >> 4) * 4;
    let end = (l4 + hlen).min(frame.len());
    let mut p = l4 + 20;
    for _ in 0..OPTION_STEPS {
        match *frame.get(p).filter(|_| p < end)? {
            0 => return None,
            1 => p += 1,
            2 => return (p + 4 <= end).then(|| u16::from_be_bytes([frame[p + 2], frame[p + 3]])),
            _ => p += usize::from((*frame.get(p + 1)?).max(2)),
        }
    }
    None
}

/// Whether the TCP checksum of a frame is right, computed from scratch over
/// the pseudo-header and the whole segment (`None`: not a TCP frame).
#[must_use]
pub fn tcp_checksum_ok(frame: &[u8]) -> Option<bool> {
    let (l4, _) = tcp_header(frame)?;
    Some(tcp_checksum(frame, l4)? == 0)
}

/// The ones' complement sum over the pseudo-header and the segment
/// (0 when the checksum field is right; the field's value when it is 0).
fn tcp_checksum(frame: &[u8], l4: usize) -> Option<u16> {
    let l3 = if u16::from_be_bytes([frame[12], frame[13]]) == 0x8100 { 18 } else { 14 };
    let mut pseudo = Vec::new();
    let seg_len = if frame[l3] >> 4 == 4 {
        let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
        pseudo.extend_from_slice(frame.get(l3 + 12..l3 + 20)?);
        total.checked_sub(l4 - l3)?
    } else {
        let payload = usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
        pseudo.extend_from_slice(frame.get(l3 + 8..l3 + 40)?);
        payload
    };
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(seg_len as u16).to_be_bytes());
    let seg = frame.get(l4..l4 + seg_len)?;
    let mut sum: u32 = 0;
    for chunk in pseudo.chunks(2).chain(seg.chunks(2)) {
        let w = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    Some(!(sum as u16))
}

/// A TCP segment's shape for [`tcp_frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// TCP flags byte (`0x02` SYN, `0x12` SYN+ACK, `0x10` ACK).
    pub flags: u8,
    /// The options, padded with EOL to a multiple of 4 bytes.
    pub options: Vec<u8>,
    /// IPv4 header options (a multiple of 4 bytes; ignored for IPv6).
    pub ip_options: Vec<u8>,
    /// IPv4 fragment offset in 8-byte units (ignored for IPv6).
    pub fragment_offset: u16,
    /// Bytes of the TCP header kept (`None`: all, plus a small payload).
    pub truncate_tcp: Option<usize>,
}

impl Segment {
    /// A SYN with these options.
    #[must_use]
    pub fn syn(flags: u8, options: &[u8]) -> Segment {
        Segment { flags, options: options.to_vec(), ip_options: Vec::new(), fragment_offset: 0, truncate_tcp: None }
    }
}

/// MSS option bytes.
#[must_use]
pub fn mss_option(mss: u16) -> [u8; 4] {
    let b = mss.to_be_bytes();
    [2, 4, b[0], b[1]]
}

/// An Ethernet frame (optionally with one 802.1Q tag) carrying a TCP
/// segment from `src` port 40000 to `dst` port 443 with valid IPv4 and TCP
/// checksums.
#[must_use]
pub fn tcp_frame(src: IpAddr, dst: IpAddr, vlan: bool, seg: &Segment) -> Vec<u8> {
    let mut options = seg.options.clone();
    while !options.len().is_multiple_of(4) {
        options.push(0);
    }
    let payload = b"egret";
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&40000u16.to_be_bytes());
    tcp.extend_from_slice(&443u16.to_be_bytes());
    tcp.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    tcp.extend_from_slice(&(if seg.flags & 0x10 != 0 { 0x0a0b_0c0du32 } else { 0 }).to_be_bytes());
    tcp.push((((20 + options.len()) / 4) as u8) << 4);
    tcp.push(seg.flags);
    tcp.extend_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(&options);
    tcp.extend_from_slice(payload);
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    if vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    }
    let l4 = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let ihl = 20 + seg.ip_options.len();
            let mut h = vec![0x40 | (ihl / 4) as u8, 0, 0, 0, 0, 1];
            h.extend_from_slice(&(0x4000 | (seg.fragment_offset & 0x1fff)).to_be_bytes());
            h.extend_from_slice(&[64, 6, 0, 0]);
            h[2..4].copy_from_slice(&((ihl + tcp.len()) as u16).to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(&seg.ip_options);
            let c = egret_bpf::interp::inet_checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&h);
            f.len()
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(x) => x.octets(),
                IpAddr::V4(x) => x.to_ipv6_mapped().octets(),
            };
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[6, 64]);
            f.extend_from_slice(&v6(s));
            f.extend_from_slice(&v6(d));
            f.len()
        }
    };
    f.extend_from_slice(&tcp);
    if let Some(sum) = tcp_checksum(&f, l4) {
        f[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
    }
    if let Some(keep) = seg.truncate_tcp {
        f.truncate(l4 + keep);
    }
    f
}

/// A TCP frame of the checker's battery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What it is.
    pub what: &'static str,
    pub frame: Vec<u8>,
    /// Whether a redirect clamps it (the battery's own statement, which
    /// the unit tests hold [`clamped`] to).
    pub clamps: bool,
}

/// The TCP frames the equivalence checker adds for one redirected flow:
/// every shape of the module documentation, clamped or not.
#[must_use]
pub fn battery(src: IpAddr, dst: IpAddr) -> Vec<Probe> {
    let m1460 = mss_option(1460);
    let nop_mss: Vec<u8> = [&[1u8][..], &m1460].concat();
    let linux: Vec<u8> = [&m1460[..], &[4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]].concat();
    let late: Vec<u8> = [&[1u8, 1, 1][..], &[8, 10, 0, 0, 0, 1, 0, 0, 0, 0], &m1460].concat();
    let third: Vec<u8> = [&[1u8, 1][..], &m1460].concat();
    let fourth: Vec<u8> = [&[1u8, 3, 3, 7][..], &[4, 2], &m1460].concat();
    let syn = Segment::syn;
    let mut shapes: Vec<(&'static str, bool, bool, Segment)> = vec![
        ("syn mss 1460", true, false, syn(0x02, &m1460)),
        ("syn-ack mss 1460", true, false, syn(0x12, &m1460)),
        ("syn mss 65535", true, false, syn(0x02, &mss_option(65535))),
        ("syn mss 536 (below the clamp)", false, false, syn(0x02, &mss_option(536))),
        ("syn, linux options", true, false, syn(0x02, &linux)),
        ("syn nop mss (odd offset)", true, false, syn(0x02, &nop_mss)),
        ("syn nop nop mss (third option)", true, false, syn(0x02, &third)),
        ("syn nop wscale sackok mss (fourth option)", true, false, syn(0x02, &fourth)),
        ("syn mss after 4 options", false, false, syn(0x02, &late)),
        ("syn without options", false, false, syn(0x02, &[])),
        ("syn with a zero-length option", false, false, syn(0x02, &[3, 0, 2, 4, 5, 0xb4])),
        ("syn with an mss of length 3", false, false, syn(0x02, &[2, 3, 5, 0xb4])),
        ("syn with an option past the header", false, false, syn(0x02, &[1, 1, 8, 40])),
        ("ack with an mss option", false, false, syn(0x10, &m1460)),
        ("syn, tcp header truncated", false, false, Segment { truncate_tcp: Some(14), ..syn(0x02, &m1460) }),
        ("syn, options truncated", false, false, Segment { truncate_tcp: Some(22), ..syn(0x02, &m1460) }),
        ("syn mss 1460 behind an 802.1Q tag", true, true, syn(0x02, &m1460)),
        ("syn nop mss behind an 802.1Q tag", true, true, syn(0x02, &nop_mss)),
    ];
    if src.is_ipv4() {
        shapes.push((
            "syn behind ipv4 options",
            true,
            false,
            Segment { ip_options: vec![1, 1, 1, 0], ..syn(0x02, &m1460) },
        ));
        shapes.push(("ipv4 non-first fragment", false, false, Segment { fragment_offset: 8, ..syn(0x02, &m1460) }));
    }
    shapes
        .into_iter()
        .map(|(what, clamps, vlan, seg)| Probe { what, frame: tcp_frame(src, dst, vlan, &seg), clamps })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const S4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 244, 1, 10));
    const D4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    const S6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10));
    const D6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));

    #[test]
    fn default_clamp_is_the_tunnel_arithmetic() {
        assert_eq!(MssClamp::DEFAULT, MssClamp { v4: 1500 - 50 - 20 - 20, v6: 1500 - 50 - 40 - 20 });
        assert_eq!(MssClamp::for_underlay_mtu(9000), Some(MssClamp { v4: 8910, v6: 8890 }));
        assert_eq!(MssClamp::for_underlay_mtu(110), None);
        assert_eq!(from_holes(&hole_specs(MssClamp::DEFAULT)), Some(Ok(MssClamp::DEFAULT)));
        assert_eq!(from_holes(&[]), None);
    }

    #[test]
    fn the_model_clamps_what_the_battery_says_with_valid_checksums() {
        for (src, dst, limit) in [(S4, D4, 1410), (S6, D6, 1390)] {
            let mut clamped_count = 0;
            for p in battery(src, dst) {
                let out = clamped(&p.frame, MssClamp::DEFAULT, false);
                assert_eq!(out != p.frame, p.clamps, "{}: mss {:?}", p.what, mss_of(&p.frame));
                // over an IPv6 underlay the clamp is 20 bytes lower
                let out6 = clamped(&p.frame, MssClamp::DEFAULT, true);
                if p.clamps {
                    assert_eq!(mss_of(&out6), Some(limit - 20), "{}", p.what);
                    assert_eq!(tcp_checksum_ok(&out6), Some(true), "{}: checksum (IPv6 underlay)", p.what);
                }
                assert_eq!(out.len(), p.frame.len());
                if p.clamps {
                    clamped_count += 1;
                    assert_eq!(mss_of(&out), Some(limit), "{}", p.what);
                    assert_eq!(tcp_checksum_ok(&p.frame), Some(true), "{}: the input's checksum", p.what);
                    assert_eq!(tcp_checksum_ok(&out), Some(true), "{}: checksum after the update", p.what);
                }
            }
            assert_eq!(clamped_count, if src.is_ipv4() { 10 } else { 9 });
        }
        // a bigger clamp leaves 1460 alone
        let p = &battery(S4, D4)[0];
        assert_eq!(clamped(&p.frame, MssClamp { v4: 1460, v6: 1440 }, false), p.frame);
        // a clamp below the IPv6 underlay's extra bytes wraps in the program: no clamp
        assert_eq!(MssClamp { v4: 10, v6: 10 }.of(S4, true), None);
        assert_eq!(clamped(&p.frame, MssClamp { v4: 10, v6: 10 }, true), p.frame);
    }
}
