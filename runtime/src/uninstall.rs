//! `egret-agent uninstall`: removes everything egret installed on the node
//! (in the calling thread's network namespace), so that the node is as it
//! was before egret.
//!
//! Contract:
//! - the floating egress IPs this node's agent added (its ownership status
//!   file says which, [`crate::ha::ownership::status_file`]) are removed from
//!   whichever interface holds them, and the status file too;
//! - the floating IPs' nftables guard table (`ip egret_floating`) is deleted;
//! - the loader releases every tcx link egret pinned, deletes every
//!   generation and state map, and the bpffs root directory goes;
//! - `egret0` (the tunnel device) is deleted if egret owns it (a device of
//!   that name egret did not create stays);
//! - with `--cni-bin-dir`/`--cni-conf-dir`, `egret-cni` leaves the CNI
//!   configuration and bin directory, and the selection summary and socket
//!   under `/run/egret` are removed;
//! - idempotent: on a clean node it changes nothing and succeeds;
//! - it refuses while an agent holds the loader's lock (stop the agent
//!   first): [`egret_loader::LoaderError`] says the root is busy.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use egret_loader::netlink::Netlink;
use egret_loader::{Loader, LoaderConfig, LoaderError, tunnel};

use crate::ha::announce;
use crate::ha::ownership::{OwnershipStatus, status_file};

/// What to remove.
#[derive(Debug, Clone)]
pub struct UninstallConfig {
    /// The loader's bpffs root (`--bpffs`).
    pub bpffs_root: PathBuf,
    /// The tunnel device's name.
    pub tunnel: String,
    /// `egret-cni`'s bin and configuration directories, if it was installed.
    pub cni: Option<(PathBuf, PathBuf)>,
    /// Files the agent wrote for `egret-cni` (its socket, the selection
    /// summary), removed with `egret-cni` itself.
    pub cni_files: Vec<PathBuf>,
}

/// What [`uninstall`] removed.
#[derive(Debug, Default)]
pub struct Uninstalled {
    /// Floating IPs removed from an interface.
    pub addresses: Vec<Ipv4Addr>,
    /// Whether the nftables guard table was there (and is gone).
    pub guard_table: bool,
    /// Whether the bpffs root was there (links, generations and state maps gone with it).
    pub pins: bool,
    /// Whether egret's tunnel device was there.
    pub tunnel: bool,
    /// What `egret-cni`'s uninstall did.
    pub cni: Option<egret_cni::install::Uninstalled>,
    /// Files removed.
    pub files: Vec<PathBuf>,
}

impl std::fmt::Display for Uninstalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "removed" } else { "none" };
        writeln!(f, "floating IP addresses: {}", self.addresses.len())?;
        writeln!(f, "nftables table ip {}: {}", announce::GUARD_TABLE, yes(self.guard_table))?;
        writeln!(f, "pins (links, generations, state maps): {}", yes(self.pins))?;
        writeln!(f, "tunnel device: {}", yes(self.tunnel))?;
        if let Some(c) = &self.cni {
            writeln!(f, "egret-cni: binary {}, {} conflist(s) edited", yes(c.binary), c.conflists.len())?;
        }
        writeln!(f, "files: {}", self.files.len())
    }
}

/// Why [`uninstall`] stopped (what was removed before stays removed; run
/// it again once the cause is gone).
#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    /// The loader's pins.
    #[error("pins under {root}: {source}")]
    Loader {
        /// The bpffs root.
        root: PathBuf,
        /// The error (`Busy` while an agent runs: stop it first).
        source: LoaderError,
    },
    /// The tunnel device.
    #[error("the tunnel device: {source}")]
    Tunnel {
        /// The error.
        source: LoaderError,
    },
    /// A floating IP or the guard table.
    #[error("floating IPs: {source}")]
    Floating {
        /// The error.
        source: announce::AnnounceError,
    },
    /// `egret-cni`'s files.
    #[error("egret-cni: {source}")]
    Cni {
        /// The error.
        source: egret_cni::install::InstallError,
    },
    /// A file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Removes `path` (a file); whether it was there.
fn remove_file(path: &Path) -> Result<bool, UninstallError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(UninstallError::Io { path: path.to_path_buf(), source }),
    }
}

/// The floating IPs the status file says this node added.
fn added_addresses(file: &Path) -> BTreeSet<Ipv4Addr> {
    let Ok(text) = std::fs::read_to_string(file) else { return BTreeSet::new() };
    let Ok(status) = serde_json::from_str::<OwnershipStatus>(&text) else { return BTreeSet::new() };
    status.floating.iter().filter(|f| f.address_added).filter_map(|f| f.ip.parse().ok()).collect()
}

/// Whether `nft` knows the guard table (no `nft` program: it cannot exist).
fn guard_table_exists() -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "ip", announce::GUARD_TABLE])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes what egret installed; see the module doc.
///
/// # Errors
/// The first removal that failed (see [`UninstallError`]).
pub fn uninstall(config: &UninstallConfig) -> Result<Uninstalled, UninstallError> {
    let mut done = Uninstalled::default();
    // the floating IPs first: while the address is here the node answers for it
    let status = status_file(&config.bpffs_root);
    let ips = added_addresses(&status);
    if !ips.is_empty() {
        let addresses = Netlink::open()
            .and_then(|mut nl| nl.addresses())
            .map_err(|source| UninstallError::Io { path: "netlink (addresses)".into(), source })?;
        for a in addresses {
            if let IpAddr::V4(ip) = a.ip
                && ips.contains(&ip)
                && announce::remove_address(a.ifindex, ip).map_err(|source| UninstallError::Floating { source })?
            {
                done.addresses.push(ip);
            }
        }
    }
    if guard_table_exists() {
        announce::guard(&BTreeSet::new()).map_err(|source| UninstallError::Floating { source })?;
        done.guard_table = true;
    }
    if remove_file(&status)? {
        done.files.push(status);
    }
    // the pins: links released (the programs leave the interfaces), then
    // generations and state maps, then the root itself
    let root = &config.bpffs_root;
    if root.exists() {
        let loader_error = |source| UninstallError::Loader { root: root.clone(), source };
        let (loader, _) = Loader::open(LoaderConfig::new(root)).map_err(loader_error)?;
        loader.uninstall().map_err(loader_error)?;
        std::fs::remove_dir_all(root).map_err(|source| UninstallError::Io { path: root.clone(), source })?;
        done.pins = true;
    }
    done.tunnel = tunnel::remove(&config.tunnel).map_err(|source| UninstallError::Tunnel { source })?;
    // the plugin's files only with the plugin: a fail-closed egret-cni left
    // installed reads the selection summary while no agent runs
    if let Some((bin, conf)) = &config.cni {
        done.cni = Some(egret_cni::install::uninstall(bin, conf).map_err(|source| UninstallError::Cni { source })?);
        for f in &config.cni_files {
            if remove_file(f)? {
                done.files.push(f.clone());
            }
        }
    }
    // /run/egret, if nothing else is in it
    let _ = std::fs::remove_dir(crate::ha::ownership::STATUS_DIR);
    Ok(done)
}
