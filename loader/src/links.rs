//! tcx links: create-and-pin, replace the program inside a pinned link, release.
//!
//! Invariant: the loader never keeps a link fd after an operation returns.
//! aya files every link it creates or updates in the program's link set
//! (`attach_with_options`, `attach_to_link`); each function here takes it back
//! out and drops it (which for an fd link only closes the fd), so a link lives
//! exactly as long as its pin, and nothing the loader holds can keep a
//! released link attached. [`release`] detaches (`BPF_LINK_DETACH`) before
//! unpinning, so the program is off the device when it returns.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, ProgramError, TcAttachType};
use egret_bpf::artifact::AttachPoint;

use crate::error::LoaderError;
use crate::generation::LoadedProgram;
use crate::pins::{PinLayout, attach_point_name};
use crate::sys;

fn link_err(path: &Path, operation: &'static str, e: impl std::fmt::Display) -> LoaderError {
    LoaderError::Link { path: path.to_path_buf(), operation, source: io::Error::other(e.to_string()) }
}

/// Attaches `p` at tcx ingress of `interface` (ifindex `ifindex`), before every
/// program already there, and pins the
/// link at its path in `layout`.
///
/// # Errors
/// [`LoaderError::PinConflict`] if the pin exists, [`LoaderError::Attach`] if
/// the kernel refuses, [`LoaderError::Link`] if the interface was renamed or
/// replaced between lookup and attach (the new link is released).
pub(crate) fn create(
    layout: &PinLayout,
    p: &mut LoadedProgram,
    attach: AttachPoint,
    ifindex: u32,
    interface: &str,
) -> Result<PathBuf, LoaderError> {
    let path = layout.link(attach, ifindex);
    if path.exists() {
        return Err(LoaderError::PinConflict { path });
    }
    let attach_err = |e: ProgramError| LoaderError::Attach {
        program: p.name.clone(),
        attach: attach_point_name(attach),
        interface: interface.to_owned(),
        source: Box::new(e),
    };
    // first on the device: a CNI's own tcx program (Cilium, Calico in eBPF
    // mode) may redirect a pod's packets, and egret's decision must come
    // before it; egret's pass verdict (TC_ACT_UNSPEC = TCX_NEXT) hands the
    // packet on to it, and after the tcx programs to legacy tc (`cls_bpf`)
    let id = p
        .prog
        .attach_with_options(interface, TcAttachType::Ingress, TcAttachOptions::TcxOrder(LinkOrder::first()))
        .map_err(attach_err)?;
    let link = p.prog.take_link(id).map_err(|e| LoaderError::Attach {
        program: p.name.clone(),
        attach: attach_point_name(attach),
        interface: interface.to_owned(),
        source: Box::new(e),
    })?;
    let fd_link: FdLink = link.try_into().map_err(|e: LinkError| link_err(&path, "taking the new link", e))?;
    // on failure the FdLink is dropped here, which closes the only reference: the link detaches
    let pinned = fd_link.pin(&path).map_err(|e| match e {
        aya::pin::PinError::SyscallError(s) if s.io_error.kind() == io::ErrorKind::AlreadyExists => {
            LoaderError::PinConflict { path: path.clone() }
        }
        other => link_err(&path, "pinning", other),
    })?;
    drop(pinned);
    // the name was resolved before the attach: make sure it still meant `ifindex`
    match info(&path) {
        Ok(i) if i.ifindex == ifindex => Ok(path),
        Ok(i) => {
            let _ = release(&path);
            Err(LoaderError::Link {
                path,
                operation: "checking the attached device",
                source: io::Error::other(format!("`{interface}` is ifindex {}, expected {ifindex}", i.ifindex)),
            })
        }
        Err(e) => {
            let _ = release(&path);
            Err(e)
        }
    }
}

/// Why a replace did not happen.
#[derive(Debug)]
pub(crate) enum ReplaceError {
    /// The link's device is gone (`ENOLINK`): the link only waits to be released.
    Defunct,
    /// Anything else.
    Failed(LoaderError),
}

/// Replaces the program of the pinned link at `path` with `p`
/// (`bpf_link_update`: atomic for every packet).
pub(crate) fn replace(path: &Path, p: &mut LoadedProgram) -> Result<(), ReplaceError> {
    let pinned = PinnedLink::from_pin(path).map_err(|e| ReplaceError::Failed(link_err(path, "opening", e)))?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
        .map_err(|e| ReplaceError::Failed(link_err(path, "opening as a tcx link", e)))?;
    let id = match p.prog.attach_to_link(link) {
        Ok(id) => id,
        Err(ProgramError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOLINK) => {
            return Err(ReplaceError::Defunct);
        }
        Err(e) => return Err(ReplaceError::Failed(link_err(path, "bpf_link_update", e))),
    };
    // take the link back out of aya's set so no fd outlives this call
    drop(p.prog.take_link(id));
    Ok(())
}

/// Detaches a pinned link and unpins it. Releasing a missing pin is a no-op.
///
/// Unpinning alone is not enough: the kernel drops the pin's reference from
/// an RCU callback and frees the link from a workqueue (`bpf_link_put`
/// defers), so the program may stay attached for a moment after the unlink
/// returns — long enough for a re-attach of the same program to fail with
/// `EEXIST` (`bpf_mprog_attach`) and for packets to be classified by a
/// released link (both seen under load). `BPF_LINK_DETACH` first makes the
/// release take effect before this returns; a link whose device is gone
/// detaches with an error that is ignored.
///
/// # Errors
/// The unlink failure.
pub(crate) fn release(path: &Path) -> Result<(), LoaderError> {
    if let Ok(fd) = sys::obj_get(path) {
        let _ = sys::link_detach(fd.as_fd());
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LoaderError::Link { path: path.to_path_buf(), operation: "unpinning", source: e }),
    }
}

/// The kernel's view of a pinned link.
///
/// # Errors
/// [`LoaderError::Link`] if the pin cannot be opened or is not a link.
pub(crate) fn info(path: &Path) -> Result<sys::LinkInfo, LoaderError> {
    let fd = sys::obj_get(path).map_err(|e| LoaderError::Link {
        path: path.to_path_buf(),
        operation: "opening",
        source: e,
    })?;
    sys::link_info(fd.as_fd()).map_err(|e| LoaderError::Link {
        path: path.to_path_buf(),
        operation: "reading info",
        source: e,
    })
}
