//! rtnetlink, the one way egret talks to the kernel's network configuration:
//! links, addresses and routes of the network namespace the *calling
//! thread* is in, through the `netlink-packet-route` message types and a
//! synchronous `netlink-sys` socket.
//!
//! Contract:
//! - [`Netlink::open`] opens a socket in the calling thread's namespace; it
//!   stays bound to that namespace whatever the thread does afterwards, so
//!   a caller that serves another namespace enters it (`setns`) first and
//!   opens the socket there. Every receive waits at most [`TIMEOUT`].
//! - Every request carries a fresh sequence number; replies of other
//!   sequences are skipped. A request that changes something (and a lookup
//!   of one object) asks for an acknowledgement and returns after it; a
//!   dump returns after its `NLMSG_DONE`. The kernel's refusal is an
//!   [`io::Error`] with its errno ([`io::Error::raw_os_error`]).
//! - Lookups answer `Ok(None)` for an object that does not exist (`ENODEV`);
//!   [`Netlink::add_address`] answers `Ok(false)` for an address already
//!   there (`EEXIST`) and [`Netlink::remove_address`] `Ok(false)` for one
//!   that is not (`EADDRNOTAVAIL`).
//! - [`Netlink::routes`] lists the routes of **every** routing table
//!   (`RTM_GETROUTE` dump with table 0), IPv4 then IPv6, each with its
//!   table; `/proc/net/route` shows the main table only.
//! - [`Subscription`]: a non-blocking socket joined to notification groups,
//!   readable when something changed.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

pub use netlink_packet_route::route::RouteType;

/// The longest one receive waits for the kernel.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// `RT_TABLE_MAIN`.
pub const MAIN_TABLE: u32 = 254;

/// `IFNAMSIZ`: interface names are shorter.
const IFNAMSIZ: usize = 16;

/// The receive buffer: the kernel sends dump datagrams of at most 32 KiB.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// A link as `RTM_GETLINK` reports it (the fields egret looks at).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    /// Ifindex.
    pub ifindex: u32,
    /// `IFLA_IFNAME`.
    pub name: String,
    /// `ifi_flags` (`IFF_UP` = 1, `IFF_LOOPBACK` = 8, ...).
    pub flags: u32,
    /// `IFLA_IFALIAS`.
    pub alias: Option<String>,
    /// `IFLA_INFO_KIND` (`vxlan`, `veth`, ...).
    pub kind: Option<String>,
    /// `IFLA_VXLAN_PORT` (host order).
    pub vxlan_port: Option<u16>,
    /// `IFLA_VXLAN_COLLECT_METADATA`.
    pub collect_metadata: Option<bool>,
    /// `IFLA_MTU`.
    pub mtu: Option<u32>,
}

impl Link {
    /// `IFF_UP`.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.flags & LinkFlags::Up.bits() != 0
    }

    /// `IFF_LOOPBACK`.
    #[must_use]
    pub fn is_loopback(&self) -> bool {
        self.flags & LinkFlags::Loopback.bits() != 0
    }
}

/// An address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The interface's ifindex.
    pub ifindex: u32,
    /// The address (`IFA_LOCAL`, else `IFA_ADDRESS`).
    pub ip: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
}

/// Whether [`Netlink::add_address`] lets the kernel add the prefix route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixRoute {
    /// The kernel adds the route to the address's prefix (the default).
    Add,
    /// `IFA_F_NOPREFIXROUTE`: no prefix route (a /32 needs none).
    Omit,
}

/// A route, from a dump or a route lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (the unspecified address for a default route).
    pub destination: IpAddr,
    /// Its length (0: a default route).
    pub prefix_len: u8,
    /// `rtm_type`.
    pub kind: RouteType,
    /// Routing table (`RTA_TABLE`, else `rtm_table`).
    pub table: u32,
    /// Output interface (`RTA_OIF`, else the first next hop's).
    pub oif: Option<u32>,
    /// Next hop, if the route goes through a gateway.
    pub gateway: Option<IpAddr>,
    /// `RTA_PRIORITY` (0 when absent).
    pub metric: u32,
}

/// A link to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRef<'a> {
    /// By name.
    Name(&'a str),
    /// By ifindex.
    Index(u32),
}

/// An rtnetlink socket of the calling thread's network namespace (see the
/// module doc).
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buffer: Vec<u8>,
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("rtnetlink: {what}"))
}

/// The bytes of one request.
fn encode(message: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// Takes the messages of request `seq` out of one datagram into `out`;
/// `Some` once the request is answered (`NLMSG_DONE` or `NLMSG_ERROR`: the
/// acknowledgement, or the kernel's errno).
fn collect(datagram: &[u8], seq: u32, out: &mut Vec<RouteNetlinkMessage>) -> io::Result<Option<()>> {
    let mut at = 0;
    while at < datagram.len() {
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[at..]).map_err(invalid)?;
        let len = message.header.length as usize;
        if len == 0 {
            return Err(invalid("a message of length 0"));
        }
        if message.header.sequence_number == seq {
            match message.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                // a dump that failed half-way ends with the errno in its NLMSG_DONE
                NetlinkPayload::Done(d) if d.code < 0 => return Err(io::Error::from_raw_os_error(-d.code)),
                NetlinkPayload::Done(_) => return Ok(Some(())),
                NetlinkPayload::Error(e) => {
                    return if e.code.is_none() { Ok(Some(())) } else { Err(e.to_io()) };
                }
                _ => {}
            }
        }
        at += len.next_multiple_of(4);
    }
    Ok(None)
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// `socket`, `bind` or `setsockopt` fail.
    pub fn open() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        rustix::net::sockopt::set_socket_timeout(&socket, rustix::net::sockopt::Timeout::Recv, Some(TIMEOUT))?;
        Ok(Netlink { socket, seq: 0, buffer: Vec::with_capacity(RECEIVE_BUFFER) })
    }

    /// Sends one request and returns the messages of its answer.
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        // a dump ends with NLMSG_DONE; anything else is asked to end with an acknowledgement
        let flags = if flags & NLM_F_DUMP == NLM_F_DUMP { flags } else { flags | NLM_F_ACK };
        self.socket.send(&encode(message, flags, seq), 0)?;
        let mut out = Vec::new();
        loop {
            self.buffer.clear();
            // MSG_TRUNC: the datagram's real length, to notice a truncation
            let n = match self.socket.recv(&mut self.buffer, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "rtnetlink: no answer from the kernel"));
                }
                Err(e) => return Err(e),
            };
            if n > self.buffer.len() {
                return Err(invalid(format!("a datagram of {n} bytes was truncated")));
            }
            if collect(&self.buffer, seq, &mut out)?.is_some() {
                return Ok(out);
            }
        }
    }

    /// The link `which`, `None` if there is none.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn link(&mut self, which: LinkRef<'_>) -> io::Result<Option<Link>> {
        let mut m = LinkMessage::default();
        match which {
            LinkRef::Index(0) => return Ok(None),
            LinkRef::Index(i) => m.header.index = i,
            LinkRef::Name(n) if n.is_empty() || n.len() >= IFNAMSIZ => return Ok(None),
            LinkRef::Name(n) => m.attributes.push(LinkAttribute::IfName(n.to_owned())),
        }
        match self.request(RouteNetlinkMessage::GetLink(m), 0) {
            Ok(replies) => Ok(links_in(replies).next()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let replies = self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(links_in(replies).collect())
    }

    /// Sends `RTM_NEWLINK` with `flags` and waits for the acknowledgement.
    fn new_link(&mut self, m: LinkMessage, flags: u16) -> io::Result<()> {
        self.request(RouteNetlinkMessage::NewLink(m), flags).map(drop)
    }

    /// Creates `name`, up, as a VXLAN device in collect-metadata mode
    /// (`ip link add NAME up type vxlan external dstport PORT`).
    ///
    /// # Errors
    /// The kernel refuses (`EEXIST` if the name is taken).
    pub fn create_vxlan(&mut self, name: &str, dstport: u16) -> io::Result<()> {
        self.new_link(vxlan_message(name, dstport), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Brings link `ifindex` up.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn set_up(&mut self, ifindex: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.new_link(m, 0)
    }

    /// Sets the alias (`IFLA_IFALIAS`) of link `ifindex`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn set_alias(&mut self, ifindex: u32, alias: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        m.attributes.push(LinkAttribute::IfAlias(alias.to_owned()));
        self.new_link(m, 0)
    }

    /// Sets `net.ipv4.conf.<link>.rp_filter` of link `ifindex` to `value`
    /// (1 strict, 2 loose) without `/proc/sys`, which containers mount
    /// read-only: `IFLA_AF_SPEC` → `AF_INET` → `IFLA_INET_CONF`; needs only
    /// `CAP_NET_ADMIN`.
    ///
    /// # Errors
    /// `value` 0 (the message carries non-zero values only), or the kernel
    /// refuses.
    pub fn set_rp_filter(&mut self, ifindex: u32, value: u8) -> io::Result<()> {
        if value == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "rp_filter 0 cannot be set over rtnetlink here"));
        }
        self.new_link(rp_filter_message(ifindex, value), 0)
    }

    /// Deletes link `ifindex`.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn delete_link(&mut self, ifindex: u32) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        self.request(RouteNetlinkMessage::DelLink(m), 0).map(drop)
    }

    /// Every address of every interface, IPv4 then IPv6, each interface's
    /// in the kernel's order.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn addresses(&mut self) -> io::Result<Vec<Address>> {
        let replies = self.request(RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(a) => address(&a),
                _ => None,
            })
            .collect())
    }

    /// Adds `ip`/`prefix_len`, scope global, to link `ifindex`; `Ok(false)`
    /// if the address was there already.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn add_address(&mut self, ifindex: u32, ip: IpAddr, prefix_len: u8, route: PrefixRoute) -> io::Result<bool> {
        let mut m = address_message(ifindex, ip, prefix_len);
        if route == PrefixRoute::Omit {
            m.attributes.push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        }
        match self.request(RouteNetlinkMessage::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `ip`/`prefix_len` from link `ifindex`; `Ok(false)` if it was
    /// not there.
    ///
    /// # Errors
    /// The kernel refuses.
    pub fn remove_address(&mut self, ifindex: u32, ip: IpAddr, prefix_len: u8) -> io::Result<bool> {
        let m = address_message(ifindex, ip, prefix_len);
        match self.request(RouteNetlinkMessage::DelAddress(m), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The routes of every routing table, IPv4 then IPv6.
    ///
    /// # Errors
    /// Netlink failures.
    pub fn routes(&mut self) -> io::Result<Vec<Route>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            for r in self.request(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)? {
                if let RouteNetlinkMessage::NewRoute(r) = r {
                    out.extend(route(&r));
                }
            }
        }
        Ok(out)
    }

    /// How the kernel routes `dst` (`ip route get DST`).
    ///
    /// # Errors
    /// Netlink failures and the kernel's errors (e.g. `ENETUNREACH`).
    pub fn route_get(&mut self, dst: IpAddr) -> io::Result<Route> {
        let mut m = RouteMessage::default();
        m.header.address_family = family(dst);
        m.header.destination_prefix_length = full_length(dst);
        m.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
        self.request(RouteNetlinkMessage::GetRoute(m), 0)?
            .iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewRoute(r) => route(r),
                _ => None,
            })
            .ok_or_else(|| invalid(format!("no route in the answer to a lookup of {dst}")))
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
}

fn full_length(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn links_in(replies: Vec<RouteNetlinkMessage>) -> impl Iterator<Item = Link> {
    replies.into_iter().filter_map(|r| match r {
        RouteNetlinkMessage::NewLink(l) => Some(link(l)),
        _ => None,
    })
}

fn link(m: LinkMessage) -> Link {
    let mut out = Link { ifindex: m.header.index, flags: m.header.flags.bits(), ..Link::default() };
    for a in m.attributes {
        match a {
            LinkAttribute::IfName(n) => out.name = n,
            LinkAttribute::IfAlias(a) => out.alias = Some(a),
            LinkAttribute::Mtu(mtu) => out.mtu = Some(mtu),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => out.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(vx)) => {
                            for v in vx {
                                match v {
                                    InfoVxlan::Port(p) => out.vxlan_port = Some(p),
                                    InfoVxlan::CollectMetadata(c) => out.collect_metadata = Some(c),
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
    out
}

/// `RTM_NEWLINK` body creating `name`, up, as a collect-metadata VXLAN on `dstport`.
fn vxlan_message(name: &str, dstport: u16) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes.push(LinkAttribute::IfName(name.to_owned()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(vec![InfoVxlan::CollectMetadata(true), InfoVxlan::Port(dstport)])),
    ]));
    m
}

/// `RTM_NEWLINK` body setting link `ifindex`'s IPv4 `rp_filter` (only that
/// devconf value: the crate sends the non-zero ones).
fn rp_filter_message(ifindex: u32, value: u8) -> LinkMessage {
    let mut conf = InetDevConf::default();
    conf.rp_filter = i32::from(value);
    let mut m = LinkMessage::default();
    m.header.index = ifindex;
    m.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![AfSpecInet::DevConfRequest(conf)])]));
    m
}

fn address_message(ifindex: u32, ip: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(ip);
    m.header.prefix_len = prefix_len;
    m.header.scope = AddressScope::Universe;
    m.header.index = ifindex;
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    m
}

fn address(m: &AddressMessage) -> Option<Address> {
    let (mut local, mut addr) = (None, None);
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => addr = Some(*ip),
            _ => {}
        }
    }
    Some(Address { ifindex: m.header.index, ip: local.or(addr)?, prefix_len: m.header.prefix_len })
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route(m: &RouteMessage) -> Option<Route> {
    let unspecified = match m.header.address_family {
        AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let mut out = Route {
        destination: unspecified,
        prefix_len: m.header.destination_prefix_length,
        kind: m.header.kind,
        table: u32::from(m.header.table),
        oif: None,
        gateway: None,
        metric: 0,
    };
    let mut first_hop = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => out.destination = ip_of(d).unwrap_or(unspecified),
            RouteAttribute::Oif(i) => out.oif = Some(*i),
            RouteAttribute::Gateway(g) => out.gateway = ip_of(g),
            RouteAttribute::Table(t) => out.table = *t,
            RouteAttribute::Priority(p) => out.metric = *p,
            RouteAttribute::MultiPath(hops) => first_hop = hops.first().map(|h| h.interface_index),
            _ => {}
        }
    }
    out.oif = out.oif.or(first_hop);
    Some(out)
}

/// A non-blocking rtnetlink socket of the calling thread's namespace,
/// joined to notification groups (`RTMGRP_*`): readable when something
/// of theirs changed.
#[derive(Debug)]
pub struct Subscription {
    socket: Socket,
}

impl Subscription {
    /// Opens the socket and joins `groups` (a mask of `RTMGRP_*`).
    ///
    /// # Errors
    /// `socket`, `bind` or `fcntl` fail.
    pub fn open(groups: u32) -> io::Result<Subscription> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, groups))?;
        socket.set_non_blocking(true)?;
        Ok(Subscription { socket })
    }

    /// Reads every pending notification; how many datagrams there were
    /// (`ENOBUFS`, notifications lost, counts as one: something changed).
    ///
    /// # Errors
    /// A read error other than "nothing more" or `ENOBUFS`.
    pub fn drain(&self) -> io::Result<usize> {
        let mut buf = Vec::with_capacity(RECEIVE_BUFFER);
        let mut n = 0;
        loop {
            buf.clear();
            match self.socket.recv(&mut buf, 0) {
                Ok(_) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => n += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for Subscription {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for Subscription {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use netlink_packet_core::{DoneMessage, ErrorMessage};
    use netlink_packet_route::link::LinkAttribute as A;

    use super::*;

    /// The bytes of a message the kernel would send for request `seq`.
    fn reply(payload: NetlinkPayload<RouteNetlinkMessage>, seq: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, payload);
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        bytes
    }

    fn vxlan_link(ifindex: u32, port: u16) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        m.header.flags = LinkFlags::Up | LinkFlags::Running;
        m.attributes = vec![
            A::IfName("egret0".into()),
            A::IfAlias("egret:owned".into()),
            A::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![InfoVxlan::Port(port), InfoVxlan::CollectMetadata(true)])),
            ]),
        ];
        RouteNetlinkMessage::NewLink(m)
    }

    #[test]
    fn answers_are_collected_for_our_sequence_until_done_or_error() {
        let mut datagram = reply(NetlinkPayload::InnerMessage(vxlan_link(3, 4799)), 6);
        datagram.extend(reply(NetlinkPayload::InnerMessage(vxlan_link(12, 4799)), 7));
        let mut out = Vec::new();
        assert_eq!(collect(&datagram, 7, &mut out).expect("parses"), None, "not answered yet");
        let [RouteNetlinkMessage::NewLink(l)] = &out[..] else { panic!("one link of seq 7: {out:?}") };
        let l = link(l.clone());
        assert_eq!((l.ifindex, l.name.as_str(), l.alias.as_deref()), (12, "egret0", Some("egret:owned")));
        assert_eq!((l.kind.as_deref(), l.vxlan_port, l.collect_metadata), (Some("vxlan"), Some(4799), Some(true)));
        assert!(l.is_up() && !l.is_loopback());

        let done = reply(NetlinkPayload::Done(DoneMessage::default()), 7);
        assert_eq!(collect(&done, 7, &mut out).expect("parses"), Some(()));
        let mut failed = DoneMessage::default();
        failed.code = -libc::EBUSY;
        let failed = reply(NetlinkPayload::Done(failed), 7);
        assert_eq!(collect(&failed, 7, &mut out).expect_err("a failed dump").raw_os_error(), Some(libc::EBUSY));
        let ack = reply(NetlinkPayload::Error(ErrorMessage::default()), 7);
        assert_eq!(collect(&ack, 7, &mut out).expect("parses"), Some(()));
        assert_eq!(collect(&ack, 8, &mut out).expect("parses"), None, "another request's");
        let mut refused = ErrorMessage::default();
        refused.code = std::num::NonZeroI32::new(-libc::EEXIST);
        let refused = reply(NetlinkPayload::Error(refused), 7);
        let e = collect(&refused, 7, &mut out).expect_err("refused");
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let mut truncated = reply(NetlinkPayload::InnerMessage(vxlan_link(3, 4799)), 7);
        truncated.truncate(30);
        assert_eq!(collect(&truncated, 7, &mut out).expect_err("malformed").kind(), io::ErrorKind::InvalidData);
    }

    /// The request bytes, decoded again by the crate.
    fn sent(message: RouteNetlinkMessage, flags: u16) -> (NetlinkHeader, RouteNetlinkMessage) {
        let bytes = encode(message, flags, 5);
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).expect("decodes");
        assert_eq!(m.header.length as usize, bytes.len());
        let NetlinkPayload::InnerMessage(inner) = m.payload else { panic!("not a request") };
        (m.header, inner)
    }

    #[test]
    fn the_rp_filter_request_carries_only_rp_filter() {
        let bytes = encode(RouteNetlinkMessage::NewLink(rp_filter_message(7, 2)), NLM_F_ACK, 5);
        // header (16) + ifinfomsg (16) + IFLA_AF_SPEC (4) + AF_INET (4) +
        // IFLA_INET_CONF (4) + IPV4_DEVCONF_RP_FILTER (4 + 4): one value
        assert_eq!(bytes.len(), 16 + 16 + 4 + 4 + 4 + 8);
        assert_eq!(bytes[20..24], 7u32.to_ne_bytes(), "ifi_index");
        assert_eq!(bytes[bytes.len() - 6..bytes.len() - 4], 8u16.to_ne_bytes(), "IPV4_DEVCONF_RP_FILTER");
        assert_eq!(bytes[bytes.len() - 4..], 2u32.to_ne_bytes());
        let (h, _) = sent(RouteNetlinkMessage::NewLink(rp_filter_message(7, 2)), NLM_F_ACK);
        assert_eq!(h.flags, NLM_F_REQUEST | NLM_F_ACK, "no create, no flags changed");
    }

    #[test]
    fn the_vxlan_request_creates_an_external_device_up() {
        let (h, m) = sent(RouteNetlinkMessage::NewLink(vxlan_message("egret0", 4799)), NLM_F_CREATE | NLM_F_EXCL);
        assert_eq!((h.flags, h.sequence_number), (NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, 5));
        let RouteNetlinkMessage::NewLink(m) = m else { panic!("{m:?}") };
        assert_eq!((m.header.flags, m.header.change_mask), (LinkFlags::Up, LinkFlags::Up), "created up");
        let l = link(m);
        assert_eq!((l.name.as_str(), l.kind.as_deref()), ("egret0", Some("vxlan")));
        assert_eq!((l.vxlan_port, l.collect_metadata), (Some(4799), Some(true)));
    }

    #[test]
    fn routes_and_addresses_decode_with_their_table_and_interface() {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.kind = RouteType::Unicast;
        m.header.table = 252;
        m.attributes = vec![
            RouteAttribute::Table(1000),
            RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 1))),
            RouteAttribute::Oif(4),
            RouteAttribute::Priority(100),
        ];
        let (_, RouteNetlinkMessage::GetRoute(m)) = sent(RouteNetlinkMessage::GetRoute(m), 0) else { panic!() };
        let r = route(&m).expect("an IPv4 route");
        assert_eq!((r.prefix_len, r.destination), (0, IpAddr::V4(Ipv4Addr::UNSPECIFIED)), "a default route");
        assert_eq!((r.table, r.oif, r.metric, r.kind), (1000, Some(4), 100, RouteType::Unicast));
        assert_eq!(r.gateway, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));

        let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
        let mut a = address_message(3, ip, 32);
        a.attributes.push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        let (_, RouteNetlinkMessage::NewAddress(a)) = sent(RouteNetlinkMessage::NewAddress(a), 0) else { panic!() };
        assert_eq!(address(&a), Some(Address { ifindex: 3, ip, prefix_len: 32 }));
        assert!(a.attributes.contains(&AddressAttribute::Flags(AddressFlags::Noprefixroute)));
    }
}
