//! The node's own facts, read from the network namespace the agent serves:
//! its interfaces, their addresses and the default route, as an egret
//! `NodeNetwork` object.
//!
//! Contract: [`discover`] lists every interface that is not a loopback and
//! has at least one IPv4/IPv6 address (`getifaddrs(3)`, in the calling
//! thread's namespace), in ifindex order, addresses in the kernel's order,
//! and the default route's interface ([`default_route`]: the IPv4 default
//! route of lowest metric, else the IPv6 one; unreachable/blackhole
//! defaults and `lo` do not count), read from
//! `/proc/thread-self/net/{route,ipv6_route}` — the calling *thread's*
//! namespace, as the agent enters the node's namespace with `setns`.
//! [`node_network`] makes them an `egret.dev/v1alpha1` `NodeNetwork` (as
//! egret's AST), which the agent adds to its input when the
//! snapshot has no `NodeNetwork` for its node — so a gateway's egress
//! interface (also "the default route's interface") and egress IPs resolve
//! at compile time on the node itself (what `egret compile` without node
//! facts leaves late-bound). The facts are part of what the agent watches:
//! an address, link or route change re-triggers compilation.
//!
//! **Changes** ([`NetlinkChanges`]): an `rtnetlink` socket subscribed to
//! link, address and route notifications (IPv4 and IPv6) of the namespace
//! it was opened in; readable when something changed. The kube agent
//! waits on it (and still re-reads every [`crate::POLL`], in case a
//! notification was lost to a full socket buffer), so a new egress IP is
//! compiled in without waiting for the next poll.
//!
//! The only unsafe code of the agent is here: `getifaddrs(3)` returns a C
//! list whose nodes are read once and freed once, in [`discover`]; the
//! netlink socket is created, bound and read with libc calls.
#![expect(unsafe_code, reason = "getifaddrs(3) and a netlink socket; see the module doc")]

use egret_lang::ast::{Interface, NodeNetwork};
use egret_lang::net::Cidr;
use egret_lang::source::{Span, Spanned};
use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What the agent reads of its node: see the module doc.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Interfaces with addresses, in ifindex order.
    pub interfaces: Vec<NodeInterface>,
    /// The default route's interface.
    pub default_route: Option<String>,
}

/// One interface of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInterface {
    /// Name.
    pub name: String,
    /// Ifindex.
    pub index: u32,
    /// Addresses with prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
}

fn prefix_len(mask: &[u8]) -> u8 {
    mask.iter().map(|b| b.count_ones() as u8).sum()
}

/// # Safety
/// `sa` must be null or point to a socket address of the family it names.
unsafe fn address(sa: *const libc::sockaddr) -> Option<(IpAddr, Vec<u8>)> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null; the family field is valid for every sockaddr
    match i32::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: AF_INET addresses are sockaddr_in
            let a = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            let o = a.sin_addr.s_addr.to_ne_bytes();
            Some((IpAddr::V4(Ipv4Addr::from(o)), o.to_vec()))
        }
        libc::AF_INET6 => {
            // SAFETY: AF_INET6 addresses are sockaddr_in6
            let a = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            Some((IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)), a.sin6_addr.s6_addr.to_vec()))
        }
        _ => None,
    }
}

/// The facts of the calling thread's network namespace (see the module doc).
///
/// # Errors
/// `getifaddrs` fails. (An unreadable route table is no default route.)
pub fn discover() -> std::io::Result<Facts> {
    Ok(Facts { interfaces: interfaces()?, default_route: default_route() })
}

/// The interfaces of the calling thread's network namespace.
///
/// # Errors
/// `getifaddrs` fails.
pub fn interfaces() -> std::io::Result<Vec<NodeInterface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out: Vec<NodeInterface> = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0 || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr / ifa_netmask are null or addresses of their family
        let (Some((ip, _)), Some((_, mask))) = (unsafe { address(ifa.ifa_addr) }, unsafe { address(ifa.ifa_netmask) })
        else {
            continue;
        };
        // SAFETY: a NUL-terminated interface name
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        // SAFETY: the same NUL-terminated name
        let index = unsafe { libc::if_nametoindex(ifa.ifa_name) };
        let entry = match out.iter_mut().position(|i| i.name == name) {
            Some(i) => &mut out[i],
            None => {
                out.push(NodeInterface { name, index, addresses: Vec::new() });
                out.last_mut().expect("just pushed")
            }
        };
        entry.addresses.push((ip, prefix_len(&mask)));
    }
    // SAFETY: the list getifaddrs allocated, freed once
    unsafe { libc::freeifaddrs(head) };
    out.sort_by_key(|i| i.index);
    Ok(out)
}

/// The default route's interface in the calling thread's namespace.
#[must_use]
pub fn default_route() -> Option<String> {
    let v4 = std::fs::read_to_string("/proc/thread-self/net/route").ok().and_then(|t| default_v4(&t));
    v4.or_else(|| std::fs::read_to_string("/proc/thread-self/net/ipv6_route").ok().and_then(|t| default_v6(&t)))
}

const RTF_UP: u32 = 0x1;
const RTF_REJECT: u32 = 0x200;

/// The interface of the usable IPv4 default route of lowest metric in
/// `/proc/net/route` text.
fn default_v4(text: &str) -> Option<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, dst, flags, metric, mask) = (f.first()?, f.get(1)?, f.get(3)?, f.get(6)?, f.get(7)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let usable = *dst == "00000000" && *mask == "00000000" && flags & RTF_UP != 0 && flags & RTF_REJECT == 0;
            (usable && *iface != "lo").then(|| (metric.parse::<u32>().unwrap_or(u32::MAX), (*iface).to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The interface of the usable IPv6 default route of lowest metric in
/// `/proc/net/ipv6_route` text.
fn default_v6(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dst, plen, metric, flags, iface) = (f.first()?, f.get(1)?, f.get(5)?, f.get(8)?, f.get(9)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let default = dst.bytes().all(|b| b == b'0') && *plen == "00";
            let usable = default && flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && *iface != "lo";
            usable.then(|| (u32::from_str_radix(metric, 16).unwrap_or(u32::MAX), (*iface).to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// An `rtnetlink` socket subscribed to link, address and route changes:
/// see the module doc.
#[derive(Debug)]
pub struct NetlinkChanges {
    fd: OwnedFd,
}

impl NetlinkChanges {
    /// Opens the socket (non-blocking) in the calling thread's namespace.
    ///
    /// # Errors
    /// `socket` or `bind` fail.
    pub fn open() -> std::io::Result<NetlinkChanges> {
        let groups = libc::RTMGRP_LINK
            | libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_ROUTE;
        // SAFETY: plain socket(2); the descriptor is owned below
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nobody else owns
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is valid
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups as u32;
        // SAFETY: a valid sockaddr_nl of the size given
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(NetlinkChanges { fd })
    }

    /// [`NetlinkChanges::open`], registered with the current tokio runtime
    /// (must be called inside one).
    ///
    /// # Errors
    /// Opening or registering fails.
    pub fn open_async() -> std::io::Result<tokio::io::unix::AsyncFd<NetlinkChanges>> {
        let changes = NetlinkChanges::open()?;
        // SAFETY: `as_raw_fd` returns the descriptor of the `OwnedFd` the
        // value owns; it stays open and the same until the value, moved
        // into the `AsyncFd`, is dropped with it
        unsafe { tokio::io::unix::AsyncFd::register(changes) }.map_err(std::io::Error::from)
    }

    /// Reads every pending notification; how many datagrams there were
    /// (`ENOBUFS`, notifications lost, counts as one: something changed).
    ///
    /// # Errors
    /// A read error other than "nothing more" or `ENOBUFS`.
    pub fn drain(&self) -> std::io::Result<usize> {
        let mut buf = [0u8; 16384];
        let mut n = 0;
        loop {
            // SAFETY: reads into a buffer of the length given
            let r = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if r >= 0 {
                n += 1;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(n),
                Some(libc::EINTR) => {}
                Some(libc::ENOBUFS) => n += 1,
                _ => return Err(e),
            }
        }
    }
}

impl AsRawFd for NetlinkChanges {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// `facts` as the `NodeNetwork` of `node`, in egret's AST: the compile
/// driver adds it to the input (`egret_compiler::driver::add_node_facts`,
/// which gives it its source and spans).
#[must_use]
pub fn node_network(node: &str, facts: &Facts) -> NodeNetwork {
    let interfaces = facts
        .interfaces
        .iter()
        .map(|i| Interface {
            name: i.name.clone(),
            index: Some(i.index),
            addresses: i.addresses.iter().map(|(ip, len)| Cidr::new(*ip, *len)).collect(),
            alt_names: Vec::new(),
        })
        .collect();
    NodeNetwork {
        span: Span::default(),
        node: Spanned::new(node.to_owned(), Span::default()),
        interfaces,
        default_route_interface: facts.default_route.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_facts_are_the_node_network_egret_reads() {
        let ifs = vec![
            NodeInterface { name: "eth0".into(), index: 2, addresses: vec![("192.0.2.13".parse().unwrap(), 24)] },
            NodeInterface {
                name: "eth1".into(),
                index: 3,
                addresses: vec![("198.51.100.100".parse().unwrap(), 32), ("2001:db8::1".parse().unwrap(), 64)],
            },
        ];
        let nn = [node_network("gateway-1", &Facts { interfaces: ifs, default_route: Some("eth1".into()) })];
        assert_eq!(nn[0].node.value, "gateway-1");
        assert_eq!(nn[0].interfaces.len(), 2);
        assert_eq!(nn[0].interfaces[1].name, "eth1");
        assert_eq!(nn[0].interfaces[1].index, Some(3));
        assert_eq!(nn[0].interfaces[1].addresses.len(), 2);
        assert_eq!(nn[0].interfaces[1].addresses[0].to_string(), "198.51.100.100/32");
        assert_eq!(nn[0].default_route_interface.as_deref(), Some("eth1"));
    }

    #[test]
    fn default_routes_are_read_from_proc_tables() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  eth1\t00000000\t0102000A\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
                  eth2\t00000000\t0102000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  lo\t00000000\t00000000\t0201\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_v4(v4).as_deref(), Some("eth2"), "the lowest metric wins");
        let header_only = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        assert_eq!(default_v4(header_only), None);
        let z = "00000000000000000000000000000000";
        let v6 = format!(
            "{z} 00 {z} 00 {z} ffffffff 00000001 00000000 00200200       lo\n\
             20010db8000000000000000000000000 40 {z} 00 {z} 00000100 00000001 00000000 00000001     eth0\n\
             {z} 00 {z} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth1\n"
        );
        assert_eq!(default_v6(&v6).as_deref(), Some("eth1"), "the unreachable default on lo does not count");
    }

    #[test]
    fn discovery_lists_no_loopback_and_only_addressed_interfaces() {
        let ifs = discover().expect("getifaddrs").interfaces;
        assert!(ifs.iter().all(|i| i.name != "lo" && !i.addresses.is_empty() && i.index > 0), "{ifs:?}");
    }

    #[test]
    fn prefix_lengths_count_mask_bits() {
        assert_eq!(prefix_len(&[255, 255, 255, 0]), 24);
        assert_eq!(prefix_len(&[255; 16]), 128);
        assert_eq!(prefix_len(&[0; 4]), 0);
    }
}
