//! A floating egress IP on the wire: add or remove it on an interface and
//! announce it, in the calling *thread's* network namespace (the agent
//! enters the node's namespace with `setns`). What [`super::float`]'s
//! [`Action::AddAddress`](super::float::Action::AddAddress),
//! [`Action::RemoveAddress`](super::float::Action::RemoveAddress) and
//! [`Action::Announce`](super::float::Action::Announce) do.
//!
//! Contract:
//! - **Addresses** ([`add_address`], [`remove_address`]): an IPv4 `/32`,
//!   scope global, flag `IFA_F_NOPREFIXROUTE` (a /32 needs no prefix
//!   route), through one rtnetlink request ([`egret_loader::netlink`]:
//!   `RTM_NEWADDR` with `NLM_F_CREATE | NLM_F_EXCL`, `RTM_DELADDR`)
//!   acknowledged by the kernel before returning. Idempotent: adding an
//!   address already there answers `Ok(false)` (`EEXIST`), removing one
//!   that is not there `Ok(false)` (`EADDRNOTAVAIL`). An address already
//!   on the interface with another prefix length is another address to
//!   the kernel: both stay.
//! - **Gratuitous ARP** ([`gratuitous_arp`]): one ARP packet broadcast on
//!   the interface (`ff:ff:ff:ff:ff:ff`) through an `AF_PACKET` datagram
//!   socket, sender and target protocol address both the IP, sender
//!   hardware address the interface's own (`SIOCGIFHWADDR`); as a request
//!   (opcode 1, target hardware address zero: RFC 5227's announcement) or
//!   a reply (opcode 2, target hardware address the sender's: what some
//!   routers only accept). Peers update the IP's neighbour entry if they
//!   have one, and create one if configured to (`arp_accept`).
//! - **Local delivery guard** ([`guard`]): the owner's kernel holds the
//!   address, so a packet for it that egret's programs do not take — a
//!   partner's segment of a translated connection while the owner's
//!   datapath is gone, say — would reach the local stack, find no socket
//!   and be answered with a TCP reset (or an ICMP port unreachable), which
//!   kills the connection although the next owner has its translation.
//!   One nftables table (`ip egret_floating`, chain `input` at priority
//!   −300) drops TCP and UDP to the floating IPs this node is a candidate
//!   of instead: silence, so the partner retransmits until the new owner's
//!   announcement reroutes it. Rewritten whole (`nft -f`, atomic) when the
//!   set changes; removed when it is empty. Needs the `nft` program.
//! - **IPv6** is not handled: floating IPs are IPv4 until the datapath
//!   translates IPv6; then the unsolicited neighbour advertisement
//!   (RFC 4861 §7.2.6) belongs here.
//! - Every call is bounded: netlink answers within [`NETLINK_TIMEOUT`] or
//!   the call fails.
//!
//! The only unsafe code of this module: the packet socket is created,
//! bound and written with libc calls, and the interface's hardware address
//! is read with an `ioctl`; each call's buffers are sized and owned here
//! (see the `SAFETY` notes).
#![expect(unsafe_code, reason = "AF_PACKET sockets through libc; see the module doc")]

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use egret_loader::netlink::{LinkRef, Netlink, PrefixRoute};

/// The nftables table of [`guard`].
pub const GUARD_TABLE: &str = "egret_floating";

/// The `nft -f` script that makes the guard table drop TCP and UDP to
/// `ips` at the input hook (an empty set: the table deleted).
#[must_use]
pub fn guard_script(ips: &std::collections::BTreeSet<Ipv4Addr>) -> String {
    // `add` then `delete` never fails on a missing table: the script is
    // the same whatever was there before
    let mut s = format!("add table ip {GUARD_TABLE}\ndelete table ip {GUARD_TABLE}\n");
    if !ips.is_empty() {
        let set = ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        s.push_str(&format!(
            "table ip {GUARD_TABLE} {{\n  chain input {{\n    type filter hook input priority -300; policy accept;\n    ip daddr {{ {set} }} meta l4proto {{ tcp, udp }} drop\n  }}\n}}\n"
        ));
    }
    s
}

/// Installs the local-delivery guard for `ips` (see the module doc), in
/// the calling thread's namespace.
///
/// # Errors
/// `nft` cannot be run or refuses the script.
pub fn guard(ips: &std::collections::BTreeSet<Ipv4Addr>) -> Result<(), AnnounceError> {
    use std::io::Write as _;
    let script = guard_script(ips);
    let fail = |source: io::Error| AnnounceError::Guard { source };
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(fail)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(fail)?;
    }
    let out = child.wait_with_output().map_err(fail)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string())))
    }
}

/// The longest a netlink request waits for the kernel's acknowledgement.
pub const NETLINK_TIMEOUT: Duration = egret_loader::netlink::TIMEOUT;

/// An interface of the calling thread's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface<'a> {
    /// By name.
    Name(&'a str),
    /// By ifindex.
    Index(u32),
}

impl<'a> From<&'a str> for Interface<'a> {
    fn from(name: &'a str) -> Interface<'a> {
        Interface::Name(name)
    }
}

impl From<u32> for Interface<'_> {
    fn from(index: u32) -> Self {
        Interface::Index(index)
    }
}

/// The form of a gratuitous ARP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Garp {
    /// An ARP request for the address itself (RFC 5227 announcement).
    Request,
    /// An ARP reply nobody asked for.
    Reply,
}

impl Garp {
    /// The ARP opcode.
    #[must_use]
    pub const fn opcode(self) -> u16 {
        match self {
            Garp::Request => 1,
            Garp::Reply => 2,
        }
    }
}

/// Why an address could not be added, removed or announced.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// No interface of that name in this namespace.
    #[error("no interface `{name}` in this network namespace")]
    NoInterface {
        /// The name.
        name: String,
    },
    /// A netlink request failed (socket, send, the kernel's answer, no answer).
    #[error("{what} {ip}/32 on ifindex {ifindex}: {source}")]
    Netlink {
        /// `adding` or `removing`.
        what: &'static str,
        /// The address.
        ip: Ipv4Addr,
        /// The interface.
        ifindex: u32,
        /// The error (the kernel's errno when it refused).
        #[source]
        source: io::Error,
    },
    /// The local-delivery guard could not be installed.
    #[error("the floating IPs' local-delivery guard (nft): {source}")]
    Guard {
        /// The error (`nft`'s message when it refused).
        #[source]
        source: io::Error,
    },
    /// The gratuitous ARP could not be sent.
    #[error("gratuitous ARP for {ip} on ifindex {ifindex}: {what}: {source}")]
    Arp {
        /// The address.
        ip: Ipv4Addr,
        /// The interface.
        ifindex: u32,
        /// The step that failed.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The ifindex of `iface` in the calling thread's namespace.
///
/// # Errors
/// [`AnnounceError::NoInterface`] when no interface has that name (or the
/// lookup fails).
pub fn ifindex(iface: Interface<'_>) -> Result<u32, AnnounceError> {
    let name = match iface {
        Interface::Index(i) => return Ok(i),
        Interface::Name(n) => n,
    };
    let link = Netlink::open().and_then(|mut nl| nl.link(LinkRef::Name(name)));
    match link {
        Ok(Some(link)) => Ok(link.ifindex),
        _ => Err(AnnounceError::NoInterface { name: name.to_string() }),
    }
}

/// Adds `ip`/32 to `iface`; `Ok(true)` if added, `Ok(false)` if it was
/// there already.
///
/// # Errors
/// No such interface, or the kernel refused (or did not answer).
pub fn add_address<'a>(iface: impl Into<Interface<'a>>, ip: Ipv4Addr) -> Result<bool, AnnounceError> {
    let ifindex = ifindex(iface.into())?;
    Netlink::open()
        .and_then(|mut nl| nl.add_address(ifindex, IpAddr::V4(ip), 32, PrefixRoute::Omit))
        .map_err(|source| AnnounceError::Netlink { what: "adding", ip, ifindex, source })
}

/// Removes `ip`/32 from `iface`; `Ok(true)` if removed, `Ok(false)` if it
/// was not there.
///
/// # Errors
/// No such interface, or the kernel refused (or did not answer).
pub fn remove_address<'a>(iface: impl Into<Interface<'a>>, ip: Ipv4Addr) -> Result<bool, AnnounceError> {
    let ifindex = ifindex(iface.into())?;
    Netlink::open()
        .and_then(|mut nl| nl.remove_address(ifindex, IpAddr::V4(ip), 32))
        .map_err(|source| AnnounceError::Netlink { what: "removing", ip, ifindex, source })
}

/// Broadcasts one gratuitous ARP for `ip` on `iface` (see the module doc).
///
/// # Errors
/// No such interface, no hardware address, or the send fails (e.g. the
/// interface is down).
pub fn gratuitous_arp<'a>(iface: impl Into<Interface<'a>>, ip: Ipv4Addr, form: Garp) -> Result<(), AnnounceError> {
    let ifindex = ifindex(iface.into())?;
    let err = |what, source| AnnounceError::Arp { ip, ifindex, what, source };
    let fd = packet_socket().map_err(|e| err("socket", e))?;
    let mac = hardware_address(&fd, ifindex).map_err(|e| err("reading the hardware address", e))?;
    let packet = arp_packet(mac, ip, form);
    let mut to = arp_link_address(ifindex).map_err(|e| err("ifindex", e))?;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    send_to(&fd, &packet, &to).map_err(|e| err("sendto", e))
}

/// The 28-byte ARP payload of a gratuitous ARP from `mac` for `ip`.
#[must_use]
pub fn arp_packet(mac: [u8; 6], ip: Ipv4Addr, form: Garp) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&(libc::ETH_P_IP as u16).to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&form.opcode().to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    if form == Garp::Reply {
        p[18..24].copy_from_slice(&mac);
    }
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// A new socket of `domain`/`kind`/`protocol`, owned.
fn socket(domain: i32, kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned below
    let raw = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `sendto(2)` of `bytes` on `fd` to the link-layer address `to`.
fn send_to(fd: &OwnedFd, bytes: &[u8], to: &libc::sockaddr_ll) -> io::Result<()> {
    // SAFETY: sends the bytes of a slice to a sockaddr_ll of the size given
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            std::ptr::from_ref(to).cast::<libc::sockaddr>(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(libc::socklen_t::MAX),
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `AF_PACKET`, ARP, on `ifindex`; no link-layer address.
fn arp_link_address(ifindex: u32) -> io::Result<libc::sockaddr_ll> {
    // SAFETY: sockaddr_ll is plain data; all-zero is valid
    let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    a.sll_family = libc::AF_PACKET as libc::c_ushort;
    a.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
    a.sll_ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(a)
}

fn packet_socket() -> io::Result<OwnedFd> {
    socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from((libc::ETH_P_ARP as u16).to_be()))
}

/// The hardware address of interface `ifindex`, asked through any socket `fd`
/// of the calling thread's namespace (`SIOCGIFNAME`, `SIOCGIFHWADDR`).
pub fn hardware_address(fd: &OwnedFd, ifindex: u32) -> io::Result<[u8; 6]> {
    // SAFETY: ifreq is plain data; all-zero is valid
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_ifru.ifru_ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: SIOCGIFNAME reads ifru_ifindex and writes ifr_name of the ifreq given
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFNAME, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifru_hwaddr of the ifreq given
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled the union's hwaddr member
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(hw.sa_data) {
        *m = b as u8;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_testkit::netns::{Netns, ip_in, privileged, run, unique};

    const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
    const MAC: [u8; 6] = [0x02, 0xe9, 0x00, 0x00, 0x00, 0x01];

    #[test]
    fn the_arp_packets_say_the_address_is_at_the_mac() {
        let request = arp_packet(MAC, IP, Garp::Request);
        assert_eq!(request[..8], [0, 1, 8, 0, 6, 4, 0, 1], "Ethernet/IPv4, request");
        assert_eq!((&request[8..14], &request[14..18]), (&MAC[..], &IP.octets()[..]), "sender");
        assert_eq!((&request[18..24], &request[24..28]), (&[0u8; 6][..], &IP.octets()[..]), "target: the same IP");
        let reply = arp_packet(MAC, IP, Garp::Reply);
        assert_eq!(reply[6..8], [0, 2]);
        assert_eq!(&reply[18..24], &MAC[..], "the reply's target is the sender");
    }

    #[test]
    fn the_guard_script_drops_tcp_and_udp_to_the_floating_ips_or_removes_the_table() {
        let ips: std::collections::BTreeSet<Ipv4Addr> = [IP, Ipv4Addr::new(198, 51, 100, 9)].into();
        let s = guard_script(&ips);
        assert!(s.starts_with("add table ip egret_floating\ndelete table ip egret_floating\n"), "{s}");
        assert!(s.contains("type filter hook input priority -300; policy accept;"), "{s}");
        assert!(s.contains("ip daddr { 192.0.2.77, 198.51.100.9 }"), "{s}");
        assert!(s.contains("meta l4proto { tcp, udp } drop"), "{s}");
        assert_eq!(
            guard_script(&std::collections::BTreeSet::new()),
            "add table ip egret_floating\ndelete table ip egret_floating\n"
        );
    }

    #[test]
    fn no_such_interface() {
        let name = unique("none");
        assert!(matches!(add_address(name.as_str(), IP), Err(AnnounceError::NoInterface { .. })));
    }

    /// Reads on `fd` fail after `timeout` without data (`SO_RCVTIMEO`).
    fn receive_timeout(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
        };
        // SAFETY: a timeval of the size given
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A capture of ARP frames on `ifindex`, in the calling thread's namespace.
    fn capture(ifindex: u32) -> OwnedFd {
        let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from((libc::ETH_P_ARP as u16).to_be())).expect("socket");
        let at = arp_link_address(ifindex).expect("ifindex");
        // SAFETY: a valid sockaddr_ll of the size given
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const at).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
        receive_timeout(&fd, Duration::from_secs(2)).expect("SO_RCVTIMEO");
        fd
    }

    /// The ARP frames received (bounded: at most 16, 2 s each).
    fn frames(fd: &OwnedFd, want: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        for _ in 0..16 {
            // SAFETY: reads into a buffer of the length given
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { break };
            out.push(buf[..n].to_vec());
            if out.len() == want {
                break;
            }
        }
        out
    }

    fn addresses(ns: &str, dev: &str) -> String {
        ip_in(ns, &["-4", "-o", "addr", "show", "dev", dev])
    }

    #[test]
    fn adds_announces_and_removes_an_address_between_two_namespaces() {
        if !privileged("adds_announces_and_removes_an_address_between_two_namespaces") {
            return;
        }
        let names;
        {
            let (gw, peer) = (Netns::new("fg"), Netns::new("fp"));
            names = [gw.name.clone(), peer.name.clone()];
            let mac = "02:e9:00:00:00:01";
            ip_in(
                &gw.name,
                &["link", "add", "eg0", "address", mac, "type", "veth", "peer", "name", "ext0", "netns", &peer.name],
            );
            ip_in(&gw.name, &["link", "set", "eg0", "up"]);
            ip_in(&peer.name, &["link", "set", "ext0", "up"]);
            run("ip", &["netns", "exec", &peer.name, "sysctl", "-qw", "net.ipv4.conf.ext0.arp_accept=1"]);

            let cap = {
                let _in = peer.enter();
                capture(ifindex(Interface::Name("ext0")).expect("ext0"))
            };
            {
                let _in = gw.enter();
                assert!(add_address("eg0", IP).expect("add"), "added");
                assert!(!add_address("eg0", IP).expect("add again"), "idempotent: already there");
                let index = ifindex("eg0".into()).expect("eg0");
                gratuitous_arp(index, IP, Garp::Request).expect("GARP request");
                gratuitous_arp("eg0", IP, Garp::Reply).expect("GARP reply");
            }
            let shown = addresses(&gw.name, "eg0");
            assert!(shown.contains(&format!("inet {IP}/32")), "{shown}");
            assert!(
                !ip_in(&gw.name, &["-4", "route", "show", "dev", "eg0"]).contains(&IP.to_string()),
                "no prefix route"
            );

            let got = frames(&cap, 2);
            let garps: Vec<&Vec<u8>> = got
                .iter()
                .filter(|f| {
                    f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[28..32] == IP.octets() && f[38..42] == IP.octets()
                })
                .collect();
            assert_eq!(garps.len(), 2, "both GARPs arrived: {got:02x?}");
            for (f, form) in garps.iter().zip([Garp::Request, Garp::Reply]) {
                assert_eq!(f[0..6], [0xff; 6], "broadcast");
                assert_eq!((&f[6..12], &f[22..28]), (&MAC[..], &MAC[..]), "from the interface's MAC");
                assert_eq!(f[14..42], arp_packet(MAC, IP, form));
            }
            let neigh = ip_in(&peer.name, &["neigh", "show", "dev", "ext0"]);
            assert!(neigh.contains(&format!("{IP} lladdr {mac}")), "the peer learnt it: {neigh}");

            {
                let _in = gw.enter();
                assert!(remove_address("eg0", IP).expect("remove"), "removed");
                assert!(!remove_address("eg0", IP).expect("remove again"), "idempotent: already gone");
                assert!(add_address("eg0", IP).expect("add after remove"), "added again");
                assert!(remove_address("eg0", IP).expect("remove"));
            }
            assert!(!addresses(&gw.name, "eg0").contains(&IP.to_string()));
        }
        for ns in names {
            assert!(!std::path::Path::new("/run/netns").join(&ns).exists(), "{ns} left behind");
        }
    }
}
