//! The node's own facts, read from the network namespace the agent serves:
//! its interfaces, their addresses and the default route, as an egret
//! `NodeNetwork` object.
//!
//! Contract: [`discover`] lists every interface that is not a loopback and
//! has at least one IPv4/IPv6 address, in ifindex order, addresses in the
//! kernel's order (IPv4 first), and the default route's interface
//! ([`default_route`]: the IPv4 default route of lowest metric in the main
//! table, else the IPv6 one; else, from the other routing tables, the
//! IPv4 one of lowest metric, then the IPv6 one; only unicast routes count
//! — not unreachable, prohibit or blackhole defaults — and a loopback
//! interface does not), all read over rtnetlink ([`egret_loader::netlink`],
//! every routing table) in the calling *thread's* namespace, as the agent
//! enters the node's namespace with `setns`.
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
//! The only unsafe code of this module: registering the notification
//! socket with tokio ([`NetlinkChanges::open_async`]).
#![expect(unsafe_code, reason = "AsyncFd::register of the netlink socket; see the module doc")]

use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

use egret_lang::ast::{Interface, NodeNetwork};
use egret_lang::net::Cidr;
use egret_lang::source::{Span, Spanned};
use egret_loader::netlink::{Address, Link, MAIN_TABLE, Netlink, Route, RouteType, Subscription};

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

/// The facts of the calling thread's network namespace (see the module doc).
///
/// # Errors
/// Listing links or addresses fails. (An unreadable route table is no
/// default route.)
pub fn discover() -> std::io::Result<Facts> {
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    let interfaces = interfaces_of(&links, &nl.addresses()?);
    Ok(Facts { interfaces, default_route: nl.routes().ok().and_then(|r| default_route_of(&r, &links)) })
}

/// The interfaces of the calling thread's network namespace.
///
/// # Errors
/// Listing links or addresses fails.
pub fn interfaces() -> std::io::Result<Vec<NodeInterface>> {
    let mut nl = Netlink::open()?;
    Ok(interfaces_of(&nl.links()?, &nl.addresses()?))
}

/// The default route's interface in the calling thread's namespace.
#[must_use]
pub fn default_route() -> Option<String> {
    let mut nl = Netlink::open().ok()?;
    default_route_of(&nl.routes().ok()?, &nl.links().ok()?)
}

/// The MTU of the default route's interface in the calling thread's namespace
/// (the underlay on a typical node), if it fits 16 bits.
#[must_use]
pub fn default_route_mtu() -> Option<u16> {
    let mut nl = Netlink::open().ok()?;
    let links = nl.links().ok()?;
    let name = default_route_of(&nl.routes().ok()?, &links)?;
    links.iter().find(|l| l.name == name)?.mtu.and_then(|m| u16::try_from(m).ok())
}

/// The links that are not loopbacks and have addresses, with them, in
/// ifindex order.
fn interfaces_of(links: &[Link], addresses: &[Address]) -> Vec<NodeInterface> {
    let mut out: Vec<NodeInterface> = links
        .iter()
        .filter(|l| !l.is_loopback())
        .map(|l| NodeInterface {
            name: l.name.clone(),
            index: l.ifindex,
            addresses: addresses.iter().filter(|a| a.ifindex == l.ifindex).map(|a| (a.ip, a.prefix_len)).collect(),
        })
        .filter(|i| !i.addresses.is_empty())
        .collect();
    out.sort_by_key(|i| i.index);
    out
}

/// The default route's interface among `routes` (see the module doc).
fn default_route_of(routes: &[Route], links: &[Link]) -> Option<String> {
    routes
        .iter()
        .filter(|r| r.prefix_len == 0 && r.kind == RouteType::Unicast)
        .filter_map(|r| {
            let link = links.iter().find(|l| Some(l.ifindex) == r.oif && !l.is_loopback())?;
            Some(((r.table != MAIN_TABLE, r.destination.is_ipv6(), r.metric, r.table, &link.name), link))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, link)| link.name.clone())
}

/// An `rtnetlink` socket subscribed to link, address and route changes:
/// see the module doc.
#[derive(Debug)]
pub struct NetlinkChanges {
    socket: Subscription,
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
        Ok(NetlinkChanges { socket: Subscription::open(groups as u32)? })
    }

    /// [`NetlinkChanges::open`], registered with the current tokio runtime
    /// (must be called inside one).
    ///
    /// # Errors
    /// Opening or registering fails.
    pub fn open_async() -> std::io::Result<tokio::io::unix::AsyncFd<NetlinkChanges>> {
        let changes = NetlinkChanges::open()?;
        // SAFETY: `as_raw_fd` returns the descriptor of the socket the
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
        self.socket.drain()
    }
}

impl AsRawFd for NetlinkChanges {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
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

    fn link(ifindex: u32, name: &str, flags: u32) -> Link {
        Link { ifindex, name: name.into(), flags, ..Link::default() }
    }

    fn default_via(oif: u32, table: u32, metric: u32, v6: bool, kind: RouteType) -> Route {
        let destination = if v6 { IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(0.into()) };
        Route { destination, prefix_len: 0, kind, table, oif: Some(oif), gateway: None, metric }
    }

    #[test]
    fn the_default_route_prefers_main_then_ipv4_then_the_lowest_metric() {
        let links = [link(1, "lo", 8 | 1), link(2, "eth0", 1), link(3, "eth1", 1), link(4, "eth2", 1)];
        let (u, v4, v6) = (RouteType::Unicast, false, true);
        let subnet = Route { prefix_len: 24, ..default_via(2, MAIN_TABLE, 0, v4, u) };
        let main = [subnet.clone(), default_via(3, MAIN_TABLE, 200, v4, u), default_via(4, MAIN_TABLE, 100, v4, u)];
        assert_eq!(default_route_of(&main, &links).as_deref(), Some("eth2"), "the lowest metric wins");
        assert_eq!(default_route_of(std::slice::from_ref(&subnet), &links), None);
        let not_usable = [
            default_via(1, MAIN_TABLE, 0, v4, u),
            default_via(2, MAIN_TABLE, 0, v4, RouteType::Unreachable),
            default_via(2, MAIN_TABLE, 0, v4, RouteType::BlackHole),
            default_via(9, MAIN_TABLE, 0, v4, u),
        ];
        assert_eq!(default_route_of(&not_usable, &links), None, "loopback, reject types, unknown links");
        let v6_main =
            [default_via(1, MAIN_TABLE, 0, v6, RouteType::Unreachable), default_via(3, MAIN_TABLE, 1024, v6, u)];
        assert_eq!(default_route_of(&v6_main, &links).as_deref(), Some("eth1"), "IPv6 when main has no IPv4 default");
        let other_table = [default_via(4, 1000, 5, v4, u), v6_main[1].clone()];
        assert_eq!(default_route_of(&other_table, &links).as_deref(), Some("eth1"), "main first, either family");
        let only_other =
            [default_via(2, 1001, 9, v6, u), default_via(4, 1000, 50, v4, u), default_via(3, 1002, 5, v4, u)];
        assert_eq!(default_route_of(&only_other, &links).as_deref(), Some("eth1"), "other tables: IPv4, lowest metric");
    }

    #[test]
    fn interfaces_are_the_addressed_non_loopback_links_in_ifindex_order() {
        let links = [link(3, "eth1", 1), link(1, "lo", 8 | 1), link(2, "eth0", 1), link(4, "down0", 0)];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let addresses = [
            Address { ifindex: 1, ip: ip("127.0.0.1"), prefix_len: 8 },
            Address { ifindex: 3, ip: ip("198.51.100.100"), prefix_len: 32 },
            Address { ifindex: 2, ip: ip("192.0.2.13"), prefix_len: 24 },
            Address { ifindex: 3, ip: ip("2001:db8::1"), prefix_len: 64 },
        ];
        let ifs = interfaces_of(&links, &addresses);
        assert_eq!(ifs.iter().map(|i| (i.name.as_str(), i.index)).collect::<Vec<_>>(), [("eth0", 2), ("eth1", 3)]);
        assert_eq!(ifs[1].addresses, [(ip("198.51.100.100"), 32), (ip("2001:db8::1"), 64)], "the kernel's order");
    }

    #[test]
    fn discovery_lists_no_loopback_and_only_addressed_interfaces() {
        let ifs = discover().expect("discover").interfaces;
        assert!(ifs.iter().all(|i| i.name != "lo" && !i.addresses.is_empty() && i.index > 0), "{ifs:?}");
    }
}
