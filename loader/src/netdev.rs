//! Interfaces of the network namespace the calling thread is in: name ↔
//! ifindex, and the interface a pod IP is routed to (what `ip route get IP`
//! asks, over an rtnetlink socket).
//!
//! Everything here resolves in the *calling thread's* network namespace at
//! the time of the call (sockets are bound to the namespace they are created
//! in), so a loader that serves a namespace must run in it.
//!
//! The rtnetlink messages are encoded and parsed by pure functions
//! ([`encode_route_get`], [`parse_route_reply`]) tested without privileges.

use std::io;
use std::net::Ipv4Addr;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};

use crate::error::LoaderError;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 1;
const AF_INET: u8 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;

/// `RTN_UNICAST`: a gateway or direct route.
pub const RTN_UNICAST: u8 = 1;
/// `RTN_LOCAL`: an address of this host.
pub const RTN_LOCAL: u8 = 2;

/// The ifindex of an interface, `None` if there is none of that name.
///
/// # Errors
/// [`LoaderError::Netlink`] if the lookup itself fails.
pub fn ifindex(name: &str) -> Result<Option<u32>, LoaderError> {
    let request = || format!("looking up interface `{name}`");
    let sock = rustix::net::socket_with(AddressFamily::INET, SocketType::DGRAM, SocketFlags::CLOEXEC, None)
        .map_err(|e| LoaderError::Netlink { request: request(), source: e.into() })?;
    match rustix::net::netdevice::name_to_index(&sock, name) {
        Ok(i) => Ok(Some(i)),
        Err(e) if e == rustix::io::Errno::NODEV => Ok(None),
        Err(e) => Err(LoaderError::Netlink { request: request(), source: e.into() }),
    }
}

/// The ifindex of an interface that must exist.
///
/// # Errors
/// [`LoaderError::MissingInterface`] naming `purpose`, or a lookup failure.
pub fn require_ifindex(name: &str, purpose: impl FnOnce() -> String) -> Result<u32, LoaderError> {
    ifindex(name)?.ok_or_else(|| LoaderError::MissingInterface { interface: name.to_owned(), purpose: purpose() })
}

/// The name of the interface with this ifindex, `None` if there is none.
///
/// # Errors
/// [`LoaderError::Netlink`] if the lookup itself fails.
pub fn ifname(ifindex: u32) -> Result<Option<String>, LoaderError> {
    let request = || format!("looking up ifindex {ifindex}");
    let sock = rustix::net::socket_with(AddressFamily::INET, SocketType::DGRAM, SocketFlags::CLOEXEC, None)
        .map_err(|e| LoaderError::Netlink { request: request(), source: e.into() })?;
    match rustix::net::netdevice::index_to_name(&sock, ifindex) {
        Ok(n) => Ok(Some(n)),
        Err(e) if e == rustix::io::Errno::NODEV => Ok(None),
        Err(e) => Err(LoaderError::Netlink { request: request(), source: e.into() }),
    }
}

/// What the kernel's route lookup for one address returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `rtm_type` (`RTN_UNICAST`, `RTN_LOCAL`, ...).
    pub kind: u8,
    /// Output interface.
    pub oif: Option<u32>,
    /// Next hop, if the route goes through a gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Routing table.
    pub table: Option<u32>,
}

/// Why an rtnetlink reply cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The kernel answered with an error (positive errno).
    #[error("kernel error {errno}")]
    Errno {
        /// The errno.
        errno: i32,
    },
    /// The bytes are not a well-formed reply to our request.
    #[error("malformed reply: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
}

/// An `RTM_GETROUTE` request for `dst`/32 (what `ip route get DST` sends).
#[must_use]
pub fn encode_route_get(seq: u32, dst: Ipv4Addr) -> Vec<u8> {
    let mut m = Vec::with_capacity(36);
    let len: u32 = (NLMSG_HDRLEN + 12 + 8) as u32;
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
    m.extend_from_slice(&[AF_INET, 32, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    // RTA_DST
    m.extend_from_slice(&8u16.to_ne_bytes());
    m.extend_from_slice(&RTA_DST.to_ne_bytes());
    m.extend_from_slice(&dst.octets());
    m
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses the reply to [`encode_route_get`] with sequence number `seq`.
///
/// # Errors
/// [`ReplyError::Errno`] for an `NLMSG_ERROR` with a non-zero code (e.g.
/// `ENETUNREACH`), [`ReplyError::Malformed`] for anything else unexpected.
pub fn parse_route_reply(buf: &[u8], seq: u32) -> Result<Route, ReplyError> {
    let bad = |reason| ReplyError::Malformed { reason };
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at).ok_or(bad("short header"))? as usize;
        let kind = u16_at(buf, at + 4).ok_or(bad("short header"))?;
        let msg_seq = u32_at(buf, at + 8).ok_or(bad("short header"))?;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(bad("message length out of range"));
        }
        let body = &buf[at + NLMSG_HDRLEN..at + len];
        if msg_seq == seq {
            match kind {
                NLMSG_ERROR => {
                    let code = u32_at(body, 0).ok_or(bad("short error message"))? as i32;
                    if code == 0 {
                        return Err(bad("acknowledgement instead of a route"));
                    }
                    return Err(ReplyError::Errno { errno: -code });
                }
                RTM_NEWROUTE => return parse_route(body),
                _ => {}
            }
        }
        at += len.div_ceil(4) * 4;
    }
    Err(bad("no reply for our request"))
}

fn parse_route(body: &[u8]) -> Result<Route, ReplyError> {
    let bad = |reason| ReplyError::Malformed { reason };
    if body.len() < 12 {
        return Err(bad("short rtmsg"));
    }
    let mut route = Route { kind: body[7], oif: None, gateway: None, table: Some(u32::from(body[4])) };
    let mut at = 12;
    while at + 4 <= body.len() {
        let len = usize::from(u16_at(body, at).ok_or(bad("short attribute"))?);
        let kind = u16_at(body, at + 2).ok_or(bad("short attribute"))?;
        if len < 4 || at + len > body.len() {
            return Err(bad("attribute length out of range"));
        }
        let data = &body[at + 4..at + len];
        match kind {
            RTA_OIF => route.oif = Some(u32_at(data, 0).ok_or(bad("short RTA_OIF"))?),
            RTA_TABLE => route.table = Some(u32_at(data, 0).ok_or(bad("short RTA_TABLE"))?),
            RTA_GATEWAY => {
                let o: [u8; 4] = data.get(..4).and_then(|d| d.try_into().ok()).ok_or(bad("short RTA_GATEWAY"))?;
                route.gateway = Some(Ipv4Addr::from(o));
            }
            _ => {}
        }
        at += len.div_ceil(4) * 4;
    }
    Ok(route)
}

/// Asks the kernel how `dst` is routed (`ip route get DST`).
///
/// # Errors
/// [`LoaderError::Netlink`] for socket failures and kernel errors (e.g. no route).
pub fn route_get(dst: Ipv4Addr) -> Result<Route, LoaderError> {
    let request = || format!("route lookup for {dst}");
    let io_err = |e: io::Error| LoaderError::Netlink { request: request(), source: e };
    let sock = rustix::net::socket_with(AddressFamily::NETLINK, SocketType::RAW, SocketFlags::CLOEXEC, None)
        .map_err(|e| io_err(e.into()))?;
    let seq = 1;
    let msg = encode_route_get(seq, dst);
    rustix::net::sendto(&sock, &msg, SendFlags::empty(), &netlink::SocketAddrNetlink::new(0, 0))
        .map_err(|e| io_err(e.into()))?;
    let mut buf = vec![0u8; 8192];
    let (n, _) = rustix::net::recv(&sock, &mut buf[..], RecvFlags::empty()).map_err(|e| io_err(e.into()))?;
    parse_route_reply(&buf[..n], seq).map_err(|e| match e {
        ReplyError::Errno { errno } => io_err(io::Error::from_raw_os_error(errno)),
        other => io_err(io::Error::new(io::ErrorKind::InvalidData, other.to_string())),
    })
}

/// The local interface a pod IP is directly routed to (the host side of the
/// pod's veth, for CNIs that route each pod IP to its veth): a unicast route
/// with an output interface and no gateway.
///
/// # Errors
/// [`LoaderError::PodNotLocal`] if the route is local, via a gateway or has no
/// interface; lookup failures otherwise.
pub fn pod_interface(ip: Ipv4Addr) -> Result<(u32, String), LoaderError> {
    let route = route_get(ip)?;
    let not_local = |reason: String| LoaderError::PodNotLocal { ip, reason };
    if route.kind != RTN_UNICAST {
        return Err(not_local(format!("route type {} is not unicast", route.kind)));
    }
    if let Some(gw) = route.gateway {
        return Err(not_local(format!("routed via gateway {gw}")));
    }
    let Some(oif) = route.oif else {
        return Err(not_local("route has no output interface".into()));
    };
    let name = ifname(oif)?.ok_or(LoaderError::MissingIfindex { ifindex: oif })?;
    Ok((oif, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, kind: u16, seq: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&len.to_ne_bytes());
        h.extend_from_slice(&kind.to_ne_bytes());
        h.extend_from_slice(&0u16.to_ne_bytes());
        h.extend_from_slice(&seq.to_ne_bytes());
        h.extend_from_slice(&0u32.to_ne_bytes());
        h
    }

    fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(data);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn route_msg(seq: u32, kind: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![AF_INET, 32, 0, 0, 254, 0, 0, kind, 0, 0, 0, 0];
        for a in attrs {
            body.extend_from_slice(a);
        }
        let mut m = header((NLMSG_HDRLEN + body.len()) as u32, RTM_NEWROUTE, seq);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn request_bytes() {
        let m = encode_route_get(7, Ipv4Addr::new(198, 51, 100, 10));
        assert_eq!(m.len(), 36);
        assert_eq!(u32_at(&m, 0), Some(36));
        assert_eq!(u16_at(&m, 4), Some(RTM_GETROUTE));
        assert_eq!(u16_at(&m, 6), Some(NLM_F_REQUEST));
        assert_eq!(u32_at(&m, 8), Some(7));
        assert_eq!(&m[16..18], &[AF_INET, 32]);
        assert_eq!(u16_at(&m, 28), Some(8));
        assert_eq!(u16_at(&m, 30), Some(RTA_DST));
        assert_eq!(&m[32..36], &[198, 51, 100, 10]);
    }

    #[test]
    fn parses_a_direct_route() {
        let m = route_msg(3, RTN_UNICAST, &[attr(RTA_DST, &[198, 51, 100, 10]), attr(RTA_OIF, &17u32.to_ne_bytes())]);
        let r = parse_route_reply(&m, 3).expect("parses");
        assert_eq!(r, Route { kind: RTN_UNICAST, oif: Some(17), gateway: None, table: Some(254) });
    }

    #[test]
    fn parses_a_gateway_route_and_skips_other_sequences() {
        let mut buf = route_msg(2, RTN_LOCAL, &[attr(RTA_OIF, &1u32.to_ne_bytes())]);
        buf.extend(route_msg(
            3,
            RTN_UNICAST,
            &[
                attr(RTA_GATEWAY, &[192, 0, 2, 1]),
                attr(RTA_OIF, &2u32.to_ne_bytes()),
                attr(RTA_TABLE, &1000u32.to_ne_bytes()),
            ],
        ));
        let r = parse_route_reply(&buf, 3).expect("parses");
        assert_eq!(r.gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(r.oif, Some(2));
        assert_eq!(r.table, Some(1000));
    }

    #[test]
    fn errors_and_garbage() {
        let mut e = header(36, NLMSG_ERROR, 3);
        e.extend_from_slice(&(-101i32).to_ne_bytes()); // -ENETUNREACH
        e.extend_from_slice(&[0u8; 16]);
        assert_eq!(parse_route_reply(&e, 3), Err(ReplyError::Errno { errno: 101 }));
        let mut ack = header(36, NLMSG_ERROR, 3);
        ack.extend_from_slice(&0i32.to_ne_bytes());
        ack.extend_from_slice(&[0u8; 16]);
        assert!(matches!(parse_route_reply(&ack, 3), Err(ReplyError::Malformed { .. })));
        assert!(matches!(parse_route_reply(&[1, 2, 3], 3), Err(ReplyError::Malformed { .. })));
        let mut long = route_msg(3, RTN_UNICAST, &[]);
        long[0] = 200;
        assert!(matches!(parse_route_reply(&long, 3), Err(ReplyError::Malformed { .. })));
        let mut bad_attr = route_msg(3, RTN_UNICAST, &[attr(RTA_OIF, &1u32.to_ne_bytes())]);
        let n = bad_attr.len();
        bad_attr[n - 8] = 60;
        assert!(matches!(parse_route_reply(&bad_attr, 3), Err(ReplyError::Malformed { .. })));
        assert!(matches!(parse_route_reply(&route_msg(4, RTN_UNICAST, &[]), 3), Err(ReplyError::Malformed { .. })));
    }
}
