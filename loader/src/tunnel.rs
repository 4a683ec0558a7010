//! egret's tunnel device `egret0`: a VXLAN device in collect-metadata mode
//! (`ip link add egret0 type vxlan external dstport PORT`), created if
//! missing and owned by egret (EBPF-FACTS.md, "VXLAN in collect-metadata
//! mode").
//!
//! Contract ([`ensure`]):
//! - a missing device is created over rtnetlink
//!   ([`Netlink::create_vxlan`]: kind `vxlan`, `IFLA_VXLAN_COLLECT_METADATA`
//!   = 1, `IFLA_VXLAN_PORT` = [`TunnelConfig::dstport`]), up, with the
//!   interface alias [`OWNER_ALIAS`], which marks it as egret's;
//! - an existing device is adopted only if it carries [`OWNER_ALIAS`]; it is
//!   brought up, and if it is not a collect-metadata VXLAN on the configured
//!   port (egret's own, from another configuration) it is replaced;
//! - a device of that name without the alias is **never** modified or
//!   deleted ([`LoaderError::TunnelForeign`]);
//! - then `net.ipv4.conf.<dev>.rp_filter` = 2 (loose: replies are delivered
//!   by the tc program, EBPF-FACTS S4), set over rtnetlink
//!   ([`Netlink::set_rp_filter`]) so that it works with `/proc/sys` mounted
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
//! namespace (netlink sockets and `/proc/sys/net` resolve there).

use std::io;
use std::path::PathBuf;

use crate::error::LoaderError;
use crate::netlink::{Link, LinkRef, Netlink};

/// The alias that marks a device as created (owned) by egret.
pub const OWNER_ALIAS: &str = "egret:owned";
/// The default VXLAN UDP port (see the module doc).
pub const DEFAULT_DSTPORT: u16 = 4799;

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

/// egret's reading of a link (tunnel ownership and configuration).
impl Link {
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

/// One netlink session of [`ensure`] or [`remove`]: each request's failure
/// names what it was doing.
struct Session(Netlink);

impl Session {
    fn open(name: &str) -> Result<Session, LoaderError> {
        Netlink::open()
            .map(Session)
            .map_err(|source| LoaderError::Netlink { request: format!("opening rtnetlink for `{name}`"), source })
    }

    fn run<T>(
        &mut self,
        what: impl FnOnce() -> String,
        op: impl FnOnce(&mut Netlink) -> io::Result<T>,
    ) -> Result<T, LoaderError> {
        op(&mut self.0).map_err(|source| LoaderError::Netlink { request: what(), source })
    }

    fn get(&mut self, name: &str) -> Result<Option<Link>, LoaderError> {
        self.run(|| format!("looking up link `{name}`"), |n| n.link(LinkRef::Name(name)))
    }
}

/// The link named `name`, if any.
///
/// # Errors
/// Netlink failures.
pub fn get(name: &str) -> Result<Option<Link>, LoaderError> {
    Session::open(name)?.get(name)
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
    let mut nl = Session::open(name)?;
    let create = |nl: &mut Session| -> Result<u32, LoaderError> {
        nl.run(|| format!("creating vxlan device `{name}`"), |n| n.create_vxlan(name, config.dstport))?;
        let link = nl.get(name)?.ok_or_else(|| LoaderError::MissingInterface {
            interface: name.clone(),
            purpose: "tunnel device just created".into(),
        })?;
        nl.run(|| format!("marking `{name}` as egret's"), |n| n.set_alias(link.ifindex, OWNER_ALIAS))?;
        Ok(link.ifindex)
    };
    let state = match nl.get(name)? {
        None => TunnelState::Created { ifindex: create(&mut nl)? },
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
            nl.run(|| format!("replacing egret's `{name}`"), |n| n.delete_link(link.ifindex))?;
            TunnelState::Replaced { ifindex: create(&mut nl)? }
        }
        Some(link) => {
            if !link.is_up() {
                nl.run(|| format!("bringing `{name}` up"), |n| n.set_up(link.ifindex))?;
            }
            TunnelState::Adopted { ifindex: link.ifindex }
        }
    };
    // loose reverse-path filtering over netlink, not /proc/sys: the agent's
    // container has /proc/sys read-only (no `privileged: true`)
    nl.run(|| format!("setting rp_filter=2 on `{name}`"), |n| n.set_rp_filter(state.ifindex(), 2))?;
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
    let mut nl = Session::open(name)?;
    match nl.get(name)? {
        Some(link) if link.is_owned() => {
            nl.run(|| format!("deleting `{name}`"), |n| n.delete_link(link.ifindex))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vxlan(alias: Option<&str>, port: u16, collect_metadata: bool) -> Link {
        Link {
            ifindex: 12,
            name: "egret0".into(),
            alias: alias.map(str::to_owned),
            kind: Some("vxlan".into()),
            vxlan_port: Some(port),
            collect_metadata: Some(collect_metadata),
            ..Link::default()
        }
    }

    #[test]
    fn links_are_judged_by_ownership_and_configuration() {
        let config = TunnelConfig::default();
        let owned = vxlan(Some(OWNER_ALIAS), DEFAULT_DSTPORT, true);
        assert!(owned.is_owned() && owned.matches(&config));
        assert!(!vxlan(None, DEFAULT_DSTPORT, true).is_owned());
        assert!(!vxlan(Some("someone's"), DEFAULT_DSTPORT, true).is_owned());
        assert!(!vxlan(Some(OWNER_ALIAS), 8472, true).matches(&config));
        assert!(!vxlan(Some(OWNER_ALIAS), DEFAULT_DSTPORT, false).matches(&config));
        let veth = Link { kind: Some("veth".into()), ..owned };
        assert!(!veth.matches(&config));
        assert_ne!(DEFAULT_DSTPORT, 4789);
        assert_ne!(DEFAULT_DSTPORT, 8472);
    }
}
