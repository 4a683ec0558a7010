//! The node's own facts, read from the network namespace the agent serves:
//! its interfaces and their addresses, as an egret `NodeNetwork` object.
//!
//! Contract: [`discover`] lists every interface that is not a loopback and
//! has at least one IPv4/IPv6 address (`getifaddrs(3)`, in the calling
//! thread's namespace), in ifindex order, addresses in the kernel's order.
//! [`node_network_yaml`] renders them as an `egret.dev/v1alpha1`
//! `NodeNetwork` document, which the agent adds to its input when the
//! snapshot has no `NodeNetwork` for its node — so a gateway's egress
//! interface and egress IPs resolve at compile time on the node itself
//! (what `egret compile` without node facts leaves late-bound). The facts
//! are part of what the agent watches: an address added or removed
//! re-triggers compilation.
//!
//! Not read: the default route (`defaultRouteInterface` stays unset, so
//! policies whose egress is "the default route's interface" stay late-bound
//! on the node).
//!
//! The only unsafe code of the agent is here: `getifaddrs(3)` returns a C
//! list whose nodes are read once and freed once, in [`discover`].
#![expect(unsafe_code, reason = "getifaddrs(3); see the module doc")]

use std::ffi::CStr;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// The interfaces of the calling thread's network namespace (see the module doc).
///
/// # Errors
/// `getifaddrs` fails.
pub fn discover() -> std::io::Result<Vec<NodeInterface>> {
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

/// `interfaces` as a `NodeNetwork` document for `node` (YAML).
#[must_use]
pub fn node_network_yaml(node: &str, interfaces: &[NodeInterface]) -> String {
    let mut s = format!(
        "# node facts read by egret-agent from its network namespace\napiVersion: egret.dev/v1alpha1\nkind: NodeNetwork\nmetadata:\n  name: \"{node}\"\nspec:\n  interfaces:\n"
    );
    for i in interfaces {
        let addrs: Vec<String> = i.addresses.iter().map(|(ip, len)| format!("\"{ip}/{len}\"")).collect();
        let _ = writeln!(s, "  - name: \"{}\"\n    index: {}\n    addresses: [{}]", i.name, i.index, addrs.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_yaml_is_a_node_network_egret_reads() {
        let ifs = vec![
            NodeInterface { name: "eth0".into(), index: 2, addresses: vec![("192.0.2.13".parse().unwrap(), 24)] },
            NodeInterface {
                name: "eth1".into(),
                index: 3,
                addresses: vec![("198.51.100.100".parse().unwrap(), 32), ("2001:db8::1".parse().unwrap(), 64)],
            },
        ];
        let text = node_network_yaml("gateway-1", &ifs);
        let mut sources = egret_lang::source::SourceMap::new();
        let loaded = egret_lang::load::parse_text(&mut sources, "facts", text);
        assert!(loaded.diagnostics.iter().all(|d| !d.is_error()), "{:?}", loaded.diagnostics);
        let nn = &loaded.bundle.cluster.node_networks;
        assert_eq!(nn.len(), 1);
        assert_eq!(nn[0].node.value, "gateway-1");
        assert_eq!(nn[0].interfaces.len(), 2);
        assert_eq!(nn[0].interfaces[1].name, "eth1");
        assert_eq!(nn[0].interfaces[1].index, Some(3));
        assert_eq!(nn[0].interfaces[1].addresses.len(), 2);
        assert_eq!(nn[0].interfaces[1].addresses[0].to_string(), "198.51.100.100/32");
    }

    #[test]
    fn discovery_lists_no_loopback_and_only_addressed_interfaces() {
        let ifs = discover().expect("getifaddrs");
        assert!(ifs.iter().all(|i| i.name != "lo" && !i.addresses.is_empty() && i.index > 0), "{ifs:?}");
    }

    #[test]
    fn prefix_lengths_count_mask_bits() {
        assert_eq!(prefix_len(&[255, 255, 255, 0]), 24);
        assert_eq!(prefix_len(&[255; 16]), 128);
        assert_eq!(prefix_len(&[0; 4]), 0);
    }
}
