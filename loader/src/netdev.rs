//! Interfaces of the network namespace the calling thread is in: name ↔
//! ifindex, and the interface a pod IP is routed to (what `ip route get IP`
//! asks), through [`crate::netlink`].
//!
//! Everything here resolves in the *calling thread's* network namespace at
//! the time of the call (sockets are bound to the namespace they are created
//! in), so a loader that serves a namespace must run in it.

use std::io;
use std::net::IpAddr;

use crate::error::LoaderError;
use crate::netlink::{Link, LinkRef, Netlink, RouteType};

/// Looks up one link; `request` names it in errors.
fn lookup(which: LinkRef<'_>, request: impl Fn() -> String) -> Result<Option<Link>, LoaderError> {
    let err = |source: io::Error| LoaderError::Netlink { request: request(), source };
    Netlink::open().map_err(err)?.link(which).map_err(err)
}

/// The ifindex of an interface, `None` if there is none of that name.
///
/// # Errors
/// [`LoaderError::Netlink`] if the lookup itself fails.
pub fn ifindex(name: &str) -> Result<Option<u32>, LoaderError> {
    Ok(lookup(LinkRef::Name(name), || format!("looking up interface `{name}`"))?.map(|l| l.ifindex))
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
    Ok(lookup(LinkRef::Index(ifindex), || format!("looking up ifindex {ifindex}"))?.map(|l| l.name))
}

/// The local interface a pod IP (either family) is directly routed to (the
/// host side of the pod's veth, for CNIs that route each pod IP to its
/// veth): a unicast route with an output interface and no gateway.
///
/// # Errors
/// [`LoaderError::PodNotLocal`] if the route is local, via a gateway or has no
/// interface; lookup failures otherwise.
pub fn pod_interface(ip: IpAddr) -> Result<(u32, String), LoaderError> {
    let err = |source| LoaderError::Netlink { request: format!("route lookup for {ip}"), source };
    let route = Netlink::open().map_err(err)?.route_get(ip).map_err(err)?;
    let not_local = |reason: String| LoaderError::PodNotLocal { ip, reason };
    if route.kind != RouteType::Unicast {
        return Err(not_local(format!("route type {} is not unicast", u8::from(route.kind))));
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
