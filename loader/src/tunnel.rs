//! egret's tunnel device `egret0`: a VXLAN device in collect-metadata mode
//! (`ip link add egret0 type vxlan external dstport PORT`), created if
//! missing and owned by egret (EBPF-FACTS.md, "VXLAN in collect-metadata
//! mode").
//!
//! Contract ([`ensure`]):
//! - a missing device is created over rtnetlink (`RTM_NEWLINK`, kind
//!   `vxlan`, `IFLA_VXLAN_COLLECT_METADATA` = 1, `IFLA_VXLAN_PORT` =
//!   [`TunnelConfig::dstport`]) with the interface alias [`OWNER_ALIAS`],
//!   which marks it as egret's, and brought up;
//! - an existing device is adopted only if it carries [`OWNER_ALIAS`]; it is
//!   brought up, and if it is not a collect-metadata VXLAN on the configured
//!   port (egret's own, from another configuration) it is replaced;
//! - a device of that name without the alias is **never** modified or
//!   deleted ([`LoaderError::TunnelForeign`]);
//! - then `net.ipv4.conf.<dev>.rp_filter` = 2 (loose: replies are delivered
//!   by the tc program, EBPF-FACTS S4), set over rtnetlink
//!   ([`encode_set_rp_filter`]) so that it works with `/proc/sys` mounted
//!   read-only, as in an unprivileged container; and, when IPv6 is enabled
//!   in the kernel and `/proc/sys` is writable,
//!   `net.ipv6.conf.<dev>.disable_ipv6` = 1 (the device drops
//!   metadata-less ND/MLD anyway; skipped where `/proc/sys` is read-only).
//!
//! [`remove`] deletes the device only if it carries [`OWNER_ALIAS`].
//!
//! Default port [`DEFAULT_DSTPORT`] = 4799: not 4789 (IANA VXLAN, used by
//! most CNIs' overlays), not 8472 (the Linux and flannel default), not 4790
//! (VXLAN-GPE), and below the ephemeral port range (32768–60999), so no
//! outgoing socket takes it. Every node of a cluster must use the same port.
//!
//! Like everything in the loader, it works in the calling thread's network
//! namespace (netlink sockets and `/proc/sys/net` resolve there). Messages
//! are built and parsed by pure functions, tested without privileges.

use std::io;
use std::path::PathBuf;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};

use crate::error::LoaderError;
use crate::netdev::ReplyError;

/// The alias that marks a device as created (owned) by egret.
pub const OWNER_ALIAS: &str = "egret:owned";
/// The default VXLAN UDP port (see the module doc).
pub const DEFAULT_DSTPORT: u16 = 4799;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_COLLECT_METADATA: u16 = 25;
const IFF_UP: u32 = 1;

/// The tunnel device egret wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Device name (default `egret0`).
    pub name: String,
    /// VXLAN UDP destination port (default [`DEFAULT_DSTPORT`]).
    pub dstport: u16,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig { name: "egret0".into(), dstport: DEFAULT_DSTPORT }
    }
}

/// A link as `RTM_GETLINK` reports it (the fields egret looks at).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkAttrs {
    /// Ifindex.
    pub ifindex: u32,
    /// `ifi_flags`.
    pub flags: u32,
    /// `IFLA_IFALIAS`.
    pub alias: Option<String>,
    /// `IFLA_INFO_KIND` (`vxlan`, `veth`, ...).
    pub kind: Option<String>,
    /// `IFLA_VXLAN_PORT` (host order).
    pub vxlan_port: Option<u16>,
    /// `IFLA_VXLAN_COLLECT_METADATA`.
    pub collect_metadata: Option<bool>,
}

impl LinkAttrs {
    /// Whether egret created it.
    #[must_use]
    pub fn is_owned(&self) -> bool {
        self.alias.as_deref() == Some(OWNER_ALIAS)
    }

    /// Whether it is the device `config` describes (kind, mode and port).
    #[must_use]
    pub fn matches(&self, config: &TunnelConfig) -> bool {
        self.kind.as_deref() == Some("vxlan")
            && self.collect_metadata == Some(true)
            && self.vxlan_port == Some(config.dstport)
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelState {
    /// Created now.
    Created {
        /// Its ifindex.
        ifindex: u32,
    },
    /// egret's device was there (and is up).
    Adopted {
        /// Its ifindex.
        ifindex: u32,
    },
    /// egret's device had another configuration and was replaced.
    Replaced {
        /// The new ifindex.
        ifindex: u32,
    },
}

impl TunnelState {
    /// The device's ifindex.
    #[must_use]
    pub fn ifindex(self) -> u32 {
        match self {
            TunnelState::Created { ifindex } | TunnelState::Adopted { ifindex } | TunnelState::Replaced { ifindex } => {
                ifindex
            }
        }
    }
}

fn header(m: &mut Vec<u8>, kind: u16, flags: u16, seq: u32) {
    m.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by `finish`
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
}

/// `struct ifinfomsg`: family, pad, type, index, flags, change.
fn ifinfomsg(m: &mut Vec<u8>, ifindex: u32, flags: u32, change: u32) {
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&ifindex.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&change.to_ne_bytes());
}

fn attr(m: &mut Vec<u8>, kind: u16, data: &[u8]) {
    m.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(data);
    while !m.len().is_multiple_of(4) {
        m.push(0);
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn finish(mut m: Vec<u8>) -> Vec<u8> {
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// `RTM_NEWLINK` creating `config`'s device, up, with [`OWNER_ALIAS`].
#[must_use]
pub fn encode_create(seq: u32, config: &TunnelConfig) -> Vec<u8> {
    let mut m = Vec::new();
    header(&mut m, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq);
    ifinfomsg(&mut m, 0, IFF_UP, IFF_UP);
    attr(&mut m, IFLA_IFNAME, &cstr(&config.name));
    let mut data = Vec::new();
    attr(&mut data, IFLA_VXLAN_COLLECT_METADATA, &[1]);
    attr(&mut data, IFLA_VXLAN_PORT, &config.dstport.to_be_bytes());
    let mut info = Vec::new();
    attr(&mut info, IFLA_INFO_KIND, &cstr("vxlan"));
    attr(&mut info, IFLA_INFO_DATA | NLA_F_NESTED, &data);
    attr(&mut m, IFLA_LINKINFO | NLA_F_NESTED, &info);
    finish(m)
}

/// `RTM_NEWLINK` on an existing ifindex: set the alias and bring it up.
#[must_use]
pub fn encode_set_up(seq: u32, ifindex: u32, alias: &str) -> Vec<u8> {
    let mut m = Vec::new();
    header(&mut m, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    ifinfomsg(&mut m, ifindex, IFF_UP, IFF_UP);
    attr(&mut m, IFLA_IFALIAS, alias.as_bytes());
    finish(m)
}

/// `IFLA_AF_SPEC` (nested per address family).
const IFLA_AF_SPEC: u16 = 26;
/// `AF_INET`, the family attribute inside `IFLA_AF_SPEC`.
const AF_INET: u16 = 2;
/// `IFLA_INET_CONF`: the IPv4 devconf values, one attribute per index.
const IFLA_INET_CONF: u16 = 1;
/// `IPV4_DEVCONF_RP_FILTER` (`include/uapi/linux/ip.h`).
const IPV4_DEVCONF_RP_FILTER: u16 = 8;

/// `RTM_NEWLINK` on an existing ifindex setting its IPv4 `rp_filter`
/// (`IFLA_AF_SPEC` → `AF_INET` → `IFLA_INET_CONF` → `RP_FILTER`): the
/// sysctl without `/proc/sys`, which containers mount read-only; needs
/// only `CAP_NET_ADMIN`.
#[must_use]
pub fn encode_set_rp_filter(seq: u32, ifindex: u32, value: u32) -> Vec<u8> {
    let mut m = Vec::new();
    header(&mut m, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    ifinfomsg(&mut m, ifindex, 0, 0);
    let mut conf = Vec::new();
    attr(&mut conf, IPV4_DEVCONF_RP_FILTER, &value.to_ne_bytes());
    let mut inet = Vec::new();
    attr(&mut inet, IFLA_INET_CONF | NLA_F_NESTED, &conf);
    let mut spec = Vec::new();
    attr(&mut spec, AF_INET | NLA_F_NESTED, &inet);
    attr(&mut m, IFLA_AF_SPEC | NLA_F_NESTED, &spec);
    finish(m)
}

/// `RTM_GETLINK` by name.
#[must_use]
pub fn encode_get(seq: u32, name: &str) -> Vec<u8> {
    let mut m = Vec::new();
    header(&mut m, RTM_GETLINK, NLM_F_REQUEST, seq);
    ifinfomsg(&mut m, 0, 0, 0);
    attr(&mut m, IFLA_IFNAME, &cstr(name));
    finish(m)
}

/// `RTM_DELLINK` by ifindex.
#[must_use]
pub fn encode_delete(seq: u32, ifindex: u32) -> Vec<u8> {
    let mut m = Vec::new();
    header(&mut m, RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    ifinfomsg(&mut m, ifindex, 0, 0);
    finish(m)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Attributes in `b`: (type without flags, data).
fn attrs(b: &[u8]) -> Result<Vec<(u16, &[u8])>, ReplyError> {
    let bad = |reason| ReplyError::Malformed { reason };
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= b.len() {
        let len = usize::from(u16_at(b, at).ok_or(bad("short attribute"))?);
        let kind = u16_at(b, at + 2).ok_or(bad("short attribute"))? & NLA_TYPE_MASK;
        if len < 4 || at + len > b.len() {
            return Err(bad("attribute length out of range"));
        }
        out.push((kind, &b[at + 4..at + len]));
        at += len.div_ceil(4) * 4;
    }
    Ok(out)
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// The messages of a reply to request `seq`: (type, body).
fn messages(buf: &[u8], seq: u32) -> Result<Vec<(u16, &[u8])>, ReplyError> {
    let bad = |reason| ReplyError::Malformed { reason };
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at).ok_or(bad("short header"))? as usize;
        let kind = u16_at(buf, at + 4).ok_or(bad("short header"))?;
        let msg_seq = u32_at(buf, at + 8).ok_or(bad("short header"))?;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(bad("message length out of range"));
        }
        if msg_seq == seq {
            out.push((kind, &buf[at + NLMSG_HDRLEN..at + len]));
        }
        at += len.div_ceil(4) * 4;
    }
    Ok(out)
}

/// Parses the acknowledgement of request `seq`.
///
/// # Errors
/// The kernel's error, or a malformed reply.
pub fn parse_ack(buf: &[u8], seq: u32) -> Result<(), ReplyError> {
    for (kind, body) in messages(buf, seq)? {
        if kind == NLMSG_ERROR {
            let code = u32_at(body, 0).ok_or(ReplyError::Malformed { reason: "short error message" })? as i32;
            return if code == 0 { Ok(()) } else { Err(ReplyError::Errno { errno: -code }) };
        }
    }
    Err(ReplyError::Malformed { reason: "no acknowledgement for our request" })
}

/// Parses the reply to an [`encode_get`] request; `Ok(None)` if there is no such link.
///
/// # Errors
/// Another kernel error, or a malformed reply.
pub fn parse_link(buf: &[u8], seq: u32) -> Result<Option<LinkAttrs>, ReplyError> {
    let bad = |reason| ReplyError::Malformed { reason };
    for (kind, body) in messages(buf, seq)? {
        match kind {
            NLMSG_ERROR => {
                let code = u32_at(body, 0).ok_or(bad("short error message"))? as i32;
                return match -code {
                    0 => Err(bad("acknowledgement instead of a link")),
                    libc::ENODEV => Ok(None),
                    errno => Err(ReplyError::Errno { errno }),
                };
            }
            RTM_NEWLINK => {
                if body.len() < 16 {
                    return Err(bad("short ifinfomsg"));
                }
                let mut link = LinkAttrs {
                    ifindex: u32_at(body, 4).ok_or(bad("short ifinfomsg"))?,
                    flags: u32_at(body, 8).ok_or(bad("short ifinfomsg"))?,
                    ..LinkAttrs::default()
                };
                for (t, data) in attrs(&body[16..])? {
                    match t {
                        IFLA_IFALIAS => link.alias = Some(text(data)),
                        IFLA_LINKINFO => {
                            for (it, idata) in attrs(data)? {
                                match it {
                                    IFLA_INFO_KIND => link.kind = Some(text(idata)),
                                    IFLA_INFO_DATA => {
                                        for (vt, vdata) in attrs(idata)? {
                                            match (vt, vdata) {
                                                (IFLA_VXLAN_PORT, [a, b, ..]) => {
                                                    link.vxlan_port = Some(u16::from_be_bytes([*a, *b]));
                                                }
                                                (IFLA_VXLAN_COLLECT_METADATA, [v, ..]) => {
                                                    link.collect_metadata = Some(*v != 0);
                                                }
                                                _ => {}
                                            }
                                        }
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                return Ok(Some(link));
            }
            _ => {}
        }
    }
    Err(bad("no reply for our request"))
}

/// Sends one request and returns the reply bytes.
fn transact(msg: &[u8], what: &str) -> Result<Vec<u8>, LoaderError> {
    let io_err = |e: io::Error| LoaderError::Netlink { request: what.to_owned(), source: e };
    let sock = rustix::net::socket_with(AddressFamily::NETLINK, SocketType::RAW, SocketFlags::CLOEXEC, None)
        .map_err(|e| io_err(e.into()))?;
    rustix::net::sendto(&sock, msg, SendFlags::empty(), &netlink::SocketAddrNetlink::new(0, 0))
        .map_err(|e| io_err(e.into()))?;
    let mut buf = vec![0u8; 16384];
    let (n, _) = rustix::net::recv(&sock, &mut buf[..], RecvFlags::empty()).map_err(|e| io_err(e.into()))?;
    buf.truncate(n);
    Ok(buf)
}

fn reply_error(what: &str, e: ReplyError) -> LoaderError {
    let source = match e {
        ReplyError::Errno { errno } => io::Error::from_raw_os_error(errno),
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    };
    LoaderError::Netlink { request: what.to_owned(), source }
}

/// The link named `name`, if any.
///
/// # Errors
/// Netlink failures.
pub fn get(name: &str) -> Result<Option<LinkAttrs>, LoaderError> {
    let what = format!("looking up link `{name}`");
    let reply = transact(&encode_get(1, name), &what)?;
    parse_link(&reply, 1).map_err(|e| reply_error(&what, e))
}

fn acked(msg: &[u8], what: &str) -> Result<(), LoaderError> {
    let reply = transact(msg, what)?;
    parse_ack(&reply, 1).map_err(|e| reply_error(what, e))
}

fn write_sysctl(path: PathBuf, value: &str) -> Result<(), LoaderError> {
    std::fs::write(&path, value).map_err(|source| LoaderError::Sysctl { path, source })
}

/// Creates or adopts the tunnel device (see the module doc for the contract).
///
/// # Errors
/// [`LoaderError::TunnelForeign`] for a device egret does not own; netlink
/// or sysctl failures.
pub fn ensure(config: &TunnelConfig) -> Result<TunnelState, LoaderError> {
    let name = &config.name;
    let create = || -> Result<u32, LoaderError> {
        acked(&encode_create(1, config), &format!("creating vxlan device `{name}`"))?;
        let link = get(name)?.ok_or_else(|| LoaderError::MissingInterface {
            interface: name.clone(),
            purpose: "tunnel device just created".into(),
        })?;
        acked(&encode_set_up(1, link.ifindex, OWNER_ALIAS), &format!("marking `{name}` as egret's"))?;
        Ok(link.ifindex)
    };
    let state = match get(name)? {
        None => TunnelState::Created { ifindex: create()? },
        Some(link) if !link.is_owned() => {
            return Err(LoaderError::TunnelForeign {
                device: name.clone(),
                reason: format!(
                    "it exists without the alias `{OWNER_ALIAS}` (kind {}), so egret did not create it",
                    link.kind.as_deref().unwrap_or("unknown")
                ),
            });
        }
        Some(link) if !link.matches(config) => {
            acked(&encode_delete(1, link.ifindex), &format!("replacing egret's `{name}`"))?;
            TunnelState::Replaced { ifindex: create()? }
        }
        Some(link) => {
            if link.flags & IFF_UP == 0 {
                acked(&encode_set_up(1, link.ifindex, OWNER_ALIAS), &format!("bringing `{name}` up"))?;
            }
            TunnelState::Adopted { ifindex: link.ifindex }
        }
    };
    // loose reverse-path filtering over netlink, not /proc/sys: the agent's
    // container has /proc/sys read-only (no `privileged: true`)
    acked(&encode_set_rp_filter(1, state.ifindex(), 2), &format!("setting rp_filter=2 on `{name}`"))?;
    // IPv6 has no netlink devconf setter: /proc/sys where it is writable;
    // where it is not (a container), the device keeps IPv6, which only
    // means it may send a few metadata-less ND/MLD packets that the VXLAN
    // device drops (EBPF-FACTS S4)
    let v6 = PathBuf::from(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"));
    if v6.exists() {
        match write_sysctl(v6, "1") {
            Err(LoaderError::Sysctl { source, .. })
                if matches!(
                    rustix::io::Errno::from_io_error(&source),
                    Some(rustix::io::Errno::ROFS | rustix::io::Errno::ACCESS)
                ) => {}
            r => r?,
        }
    }
    Ok(state)
}

/// Deletes the tunnel device if egret owns it; returns whether it did.
///
/// # Errors
/// Netlink failures.
pub fn remove(name: &str) -> Result<bool, LoaderError> {
    match get(name)? {
        Some(link) if link.is_owned() => {
            acked(&encode_delete(1, link.ifindex), &format!("deleting `{name}`"))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rp_filter_request_bytes() {
        let m = encode_set_rp_filter(5, 7, 2);
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        assert_eq!(u16_at(&m, 4), Some(RTM_NEWLINK));
        assert_eq!(u16_at(&m, 6), Some(NLM_F_REQUEST | NLM_F_ACK), "no create, no flags changed");
        assert_eq!(u32_at(&m, 20), Some(7), "ifindex");
        let top = attrs(&m[32..]).expect("attributes");
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, IFLA_AF_SPEC);
        assert_eq!(u16_at(&m, 34), Some(IFLA_AF_SPEC | NLA_F_NESTED), "marked nested");
        let spec = attrs(top[0].1).expect("af spec");
        assert_eq!(spec[0].0, AF_INET);
        let inet = attrs(spec[0].1).expect("inet");
        assert_eq!(inet[0].0, IFLA_INET_CONF);
        let conf = attrs(inet[0].1).expect("conf");
        assert_eq!(conf, vec![(IPV4_DEVCONF_RP_FILTER, &2u32.to_ne_bytes()[..])]);
    }

    #[test]
    fn create_request_bytes() {
        let m = encode_create(9, &TunnelConfig::default());
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        assert_eq!(u16_at(&m, 4), Some(RTM_NEWLINK));
        assert_eq!(u16_at(&m, 6), Some(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL));
        assert_eq!(u32_at(&m, 8), Some(9));
        assert_eq!((u32_at(&m, 24), u32_at(&m, 28)), (Some(IFF_UP), Some(IFF_UP)), "created up");
        let top = attrs(&m[32..]).expect("attributes");
        assert_eq!(top[0], (IFLA_IFNAME, &b"egret0\0"[..]));
        assert_eq!(top[1].0, IFLA_LINKINFO);
        let info = attrs(top[1].1).expect("linkinfo");
        assert_eq!(info[0], (IFLA_INFO_KIND, &b"vxlan\0"[..]));
        let data = attrs(info[1].1).expect("vxlan data");
        assert_eq!(data, vec![(IFLA_VXLAN_COLLECT_METADATA, &[1u8][..]), (IFLA_VXLAN_PORT, &[0x12, 0xbf][..])]);
        assert_ne!(DEFAULT_DSTPORT, 4789);
        assert_ne!(DEFAULT_DSTPORT, 8472);
    }

    /// A reply to `encode_get`, the way the kernel builds it.
    fn link_reply(seq: u32, ifindex: u32, alias: Option<&str>, port: u16, md: u8) -> Vec<u8> {
        let mut m = Vec::new();
        header(&mut m, RTM_NEWLINK, 0, seq);
        ifinfomsg(&mut m, ifindex, IFF_UP | 0x40, 0);
        attr(&mut m, IFLA_IFNAME, b"egret0\0");
        if let Some(a) = alias {
            attr(&mut m, IFLA_IFALIAS, &cstr(a));
        }
        let mut data = Vec::new();
        attr(&mut data, IFLA_VXLAN_PORT, &port.to_be_bytes());
        attr(&mut data, IFLA_VXLAN_COLLECT_METADATA, &[md]);
        let mut info = Vec::new();
        attr(&mut info, IFLA_INFO_KIND, b"vxlan\0");
        attr(&mut info, IFLA_INFO_DATA | NLA_F_NESTED, &data);
        attr(&mut m, IFLA_LINKINFO | NLA_F_NESTED, &info);
        finish(m)
    }

    fn error_reply(seq: u32, errno: i32) -> Vec<u8> {
        let mut m = Vec::new();
        header(&mut m, NLMSG_ERROR, 0, seq);
        m.extend_from_slice(&(-errno).to_ne_bytes());
        m.extend_from_slice(&[0u8; 16]);
        finish(m)
    }

    #[test]
    fn links_parse_with_ownership_and_configuration() {
        let config = TunnelConfig::default();
        let owned = parse_link(&link_reply(3, 12, Some(OWNER_ALIAS), DEFAULT_DSTPORT, 1), 3).expect("parses");
        let owned = owned.expect("a link");
        assert_eq!((owned.ifindex, owned.kind.as_deref()), (12, Some("vxlan")));
        assert!(owned.is_owned() && owned.matches(&config));
        let foreign = parse_link(&link_reply(3, 12, None, DEFAULT_DSTPORT, 1), 3).expect("parses").expect("a link");
        assert!(!foreign.is_owned());
        let other_port = parse_link(&link_reply(3, 12, Some(OWNER_ALIAS), 8472, 1), 3).expect("parses");
        assert!(!other_port.expect("a link").matches(&config));
        let not_md = parse_link(&link_reply(3, 12, Some(OWNER_ALIAS), DEFAULT_DSTPORT, 0), 3).expect("parses");
        assert!(!not_md.expect("a link").matches(&config));
        // other requests' messages are skipped
        assert!(parse_link(&link_reply(4, 12, None, 1, 1), 3).is_err());
        assert_eq!(parse_link(&error_reply(3, libc::ENODEV), 3), Ok(None));
        assert_eq!(parse_link(&error_reply(3, libc::EPERM), 3), Err(ReplyError::Errno { errno: libc::EPERM }));
        assert_eq!(parse_ack(&error_reply(5, 0), 5), Ok(()));
        assert_eq!(parse_ack(&error_reply(5, libc::EEXIST), 5), Err(ReplyError::Errno { errno: libc::EEXIST }));
        let mut truncated = link_reply(3, 12, None, 1, 1);
        truncated.truncate(30);
        assert!(parse_link(&truncated, 3).is_err());
    }
}
