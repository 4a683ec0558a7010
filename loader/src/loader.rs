//! The loader: one per node (per network namespace), owning the pins under
//! its root.
//!
//! Contracts:
//! - **Swap** ([`Loader::apply`]): generation N is built completely (maps
//!   created and filled, programs loaded, all pinned, marker last) before any
//!   link changes. Links to interfaces that had none are created for N first
//!   (a failure there releases them and deletes N); then every existing link's
//!   program is replaced through its pin (`bpf_link_update`, atomic per
//!   packet); then links N has no program for are released and N−1 is
//!   deleted. A failure before the first replacement deletes N and leaves
//!   N−1 serving untouched; a failure during replacements moves the replaced
//!   links back to N−1, then deletes N ([`LoaderError::SwapFailed`]). From
//!   the build to the last replacement N is held by a guard that does this
//!   rollback when dropped without an explicit commit, so no error path
//!   (an early return included) can leave a dataplane half-applied.
//! - **Unchanged**: an artifact whose digest equals the running generation's
//!   is not loaded at all.
//! - **Adoption** ([`Loader::open`]): a (re)started loader adopts the pinned
//!   state ([`crate::scan::plan_recovery`]): it finishes an interrupted swap,
//!   deletes half-built and superseded generations, releases links whose
//!   device is gone, and never detaches a live link to start over.
//! - **Exclusive**: a loader holds an exclusive `flock` on its root for its
//!   lifetime (released by the kernel if the process dies), so two loaders
//!   never interleave swaps on one root; inspection ([`crate::inspect`]) takes
//!   no lock.
//! - **Local endpoints**: a generation that has the maps
//!   `egret_local_eps_v4` / `egret_local_eps_v6` (the gateway templates' pod
//!   IP → host-side veth tables, whose ifindexes only the node knows; their
//!   images are empty) gets one entry per pod address attached by
//!   [`PodTarget::Ip`], in the map of the address's family
//!   ([`LocalEndpoint::map`]; a dual-stack pod is attached by each of its
//!   addresses and gets an entry in both): written into N before any link
//!   moves to N, and into the running generation when a pod is attached
//!   (before its link is created, so its first packet finds them) or
//!   released. Pods attached by interface or ifindex have no known IP and
//!   get no entry. After a restart the caller re-announces its pods
//!   (`attach_pod` / `sync_pods` with IPs), which rewrites them.
//! - **Late-bound egress addresses**: `SlotIpv4` / `SlotIpv6` sources (late
//!   fields of `egret_gw_slots`) take [`LoaderConfig::slot_ipv4`] /
//!   [`LoaderConfig::slot_ipv6`]; a slot missing there fails the apply
//!   ([`LoaderError::UnknownSlot`]).
//! - **State maps** ([`crate::state`]): maps the artifact marks as state
//!   (NAT tables, counters) are reused by N when the running generation has
//!   them with the same definition, else created anew (reported in
//!   `ApplyReport::Swapped::state`); `<root>/state/` names the running
//!   generation's state maps and changes only after a completed swap (or
//!   when `open` adopts a generation), never on a failed build or swap.
//! - **Egress interfaces** ([`Loader::sync_egress`]): the set starts as
//!   `LoaderConfig::egress_interfaces` and follows the compiled plan at run
//!   time: a synced set attaches the running generation's `EgressIngress`
//!   program to new interfaces and releases removed ones at once, and every
//!   `apply` replaces the program of exactly that set (an `EgressIngress`
//!   link of an interface outside it is released by the swap).
//! - **Namespaces**: every interface name and ifindex is resolved in the
//!   network namespace of the calling thread; use one thread, in the node's
//!   namespace, per loader.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egret_bpf::artifact::{Artifact, AttachPoint, HoleSource, LateField, LateValue};
use egret_bpf::templates::LocalEndpoint;

use crate::check::{CheckedArtifact, DecodedImage, check_artifact};
use crate::error::LoaderError;
use crate::generation::{self, LoadedGeneration};
use crate::links::{self, ReplaceError};
use crate::netdev;
use crate::pins::{self, Generation, PinLayout};
use crate::scan::{self, Scan};
use crate::state::StateMapReport;

/// `BPF_FS_MAGIC`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// How a loader is set up on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// The directory on a bpffs mount that holds every pin (default
    /// [`pins::DEFAULT_ROOT`]); created if missing.
    pub root: PathBuf,
    /// If set, artifacts compiled for another node are refused.
    pub node: Option<String>,
    /// egret's tunnel device (`TunnelIngress` programs attach here).
    pub tunnel_device: String,
    /// Egress interfaces (`EgressIngress` programs attach to each).
    pub egress_interfaces: Vec<String>,
    /// IPv4 address of each egress slot this node serves (`SlotIpv4` sources).
    pub slot_ipv4: BTreeMap<u32, Ipv4Addr>,
    /// IPv6 address of each egress slot this node serves (`SlotIpv6` late fields).
    pub slot_ipv6: BTreeMap<u32, Ipv6Addr>,
    /// The node's underlay MTU (`UnderlayMss` holes: the MSS clamp of
    /// redirected SYNs); `None` keeps the value compiled in.
    pub underlay_mtu: Option<u16>,
}

impl LoaderConfig {
    /// Defaults: tunnel device `egret0`, no egress interfaces, no slots, any node.
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> LoaderConfig {
        LoaderConfig {
            root: root.into(),
            node: None,
            tunnel_device: "egret0".into(),
            egress_interfaces: Vec::new(),
            slot_ipv4: BTreeMap::new(),
            slot_ipv6: BTreeMap::new(),
            underlay_mtu: None,
        }
    }
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig::new(pins::DEFAULT_ROOT)
    }
}

/// A pod's interface, as the caller knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodTarget {
    /// One of the pod's IPs (either family): the interface is the one its
    /// route leads to, and the address gets a local-endpoint entry.
    Ip(IpAddr),
    /// The host-side interface by name.
    Interface(String),
    /// The host-side interface by ifindex.
    Ifindex(u32),
}

/// What [`Loader::open`] did with the state it found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// The generation adopted as running.
    pub adopted: Option<Generation>,
    /// Links kept as they were.
    pub kept_links: usize,
    /// Links moved to the adopted generation (an interrupted swap, finished).
    pub rolled_forward: Vec<PathBuf>,
    /// Links released (device gone, or no program for them in the adopted generation).
    pub released: Vec<PathBuf>,
    /// Generations deleted (half-built, superseded or never swapped in).
    pub deleted: Vec<Generation>,
}

/// Where the time of a swap went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwapTimings {
    /// Checks, hole resolution, building and pinning generation N.
    pub build: Duration,
    /// Creating new links and replacing every existing link's program.
    pub swap: Duration,
    /// Releasing links and deleting N−1.
    pub cleanup: Duration,
}

impl SwapTimings {
    /// Artifact in memory → every link runs the new generation.
    #[must_use]
    pub fn to_swapped(&self) -> Duration {
        self.build + self.swap
    }
}

/// The result of [`Loader::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyReport {
    /// The artifact's digest equals the running generation's: nothing was loaded.
    Unchanged {
        /// The running generation.
        generation: Generation,
    },
    /// A new generation serves.
    Swapped {
        /// The previous generation, if any.
        from: Option<Generation>,
        /// The new generation.
        to: Generation,
        /// Links whose program was replaced.
        replaced: usize,
        /// Links created for interfaces that had none.
        attached: usize,
        /// Links released (no program at their attach point, or device gone).
        released: usize,
        /// Pins that could not be removed after the swap (the next
        /// [`Loader::open`] removes them); traffic runs the new generation regardless.
        leftovers: Vec<PathBuf>,
        /// Where the time went.
        timings: SwapTimings,
        /// The new generation's state maps: reused, created or recreated.
        state: Vec<StateMapReport>,
    },
}

/// What happened to a pod's interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// A link was created with the running generation's program.
    Attached,
    /// It already had a live link.
    AlreadyAttached,
    /// Recorded; it is attached when a generation with a pod program runs.
    Pending,
}

/// The result of [`Loader::attach_pod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAttachment {
    /// Host-side interface ifindex.
    pub ifindex: u32,
    /// Host-side interface name.
    pub interface: String,
    /// What happened.
    pub state: PodState,
}

/// One write of [`Loader::write_running`]: map name, key, value (`None`:
/// delete the key).
pub type MapWrite<'a> = (&'a str, Vec<u8>, Option<Vec<u8>>);

/// The result of [`Loader::sync_pods`].
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Pods (ifindex) that got a link.
    pub attached: Vec<u32>,
    /// Pods (ifindex) whose link was released.
    pub released: Vec<u32>,
    /// Targets that could not be resolved, and why.
    pub unresolved: Vec<(PodTarget, LoaderError)>,
}

/// The result of [`Loader::sync_egress`].
#[derive(Debug, Default)]
pub struct EgressSyncReport {
    /// Egress interfaces (ifindex) that got a link with the running generation's program.
    pub attached: Vec<u32>,
    /// Egress interfaces (ifindex) whose link was released.
    pub released: Vec<u32>,
    /// Names that are no interface here, and why (kept in the wanted set: an
    /// `apply` fails until they exist or a later `sync_egress` drops them).
    pub unresolved: Vec<(String, LoaderError)>,
}

/// The node's loader. See the module doc for its contracts.
#[derive(Debug)]
pub struct Loader {
    config: LoaderConfig,
    layout: PinLayout,
    running: Option<LoadedGeneration>,
    next: Generation,
    /// Pod interfaces that should carry the pod program: ifindex → name.
    pods: BTreeMap<u32, String>,
    /// Pods attached by IP: pod IP → host-side ifindex (`egret_local_eps_v4/v6`).
    pod_ips: BTreeMap<IpAddr, u32>,
    ebpf_loader: aya::EbpfLoader<'static>,
    /// The root directory, `flock`ed exclusively while this loader lives.
    _lock: std::fs::File,
}

fn ensure_dir(path: &Path) -> Result<(), LoaderError> {
    std::fs::create_dir_all(path).map_err(|e| LoaderError::bpffs(path, "creating directory", e))
}

/// How long [`lock_root`] waits for a lock that is held (see there).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Locks `root` exclusively. A lock found held is tried again for up to
/// [`LOCK_WAIT`] before the root is reported busy: a loader that was just
/// dropped can leave its lock alive for a moment in a child process that
/// another thread forked and that has not yet exec'd (the child's copy of the
/// descriptor shares the lock until `exec` closes it).
fn lock_root(root: &Path) -> Result<std::fs::File, LoaderError> {
    let dir = std::fs::File::open(root).map_err(|e| LoaderError::bpffs(root, "opening", e))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(dir),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                if std::time::Instant::now() >= deadline {
                    return Err(LoaderError::Busy { root: root.to_path_buf() });
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(LoaderError::bpffs(root, "locking", e.into())),
        }
    }
}

fn check_bpffs(path: &Path) -> Result<(), LoaderError> {
    let st = rustix::fs::statfs(path).map_err(|e| LoaderError::bpffs(path, "statfs", e.into()))?;
    let magic = st.f_type;
    if magic == BPF_FS_MAGIC { Ok(()) } else { Err(LoaderError::NotBpffs { path: path.to_path_buf() }) }
}

impl Loader {
    /// Opens the loader on `config.root` (created if missing; it must be on
    /// bpffs) and adopts whatever is pinned there (see the module doc).
    ///
    /// # Errors
    /// Not on bpffs, unreadable pins, or a failure while finishing an
    /// interrupted swap (in which case nothing was deleted).
    pub fn open(config: LoaderConfig) -> Result<(Loader, Recovery), LoaderError> {
        ensure_dir(&config.root)?;
        check_bpffs(&config.root)?;
        let lock = lock_root(&config.root)?;
        let layout = PinLayout::new(&config.root);
        ensure_dir(&layout.links_dir())?;
        let found = scan::scan(&layout)?;
        let plan = scan::plan_recovery(&found);
        let next = scan::next_generation(&found);
        let mut recovery = Recovery { adopted: plan.running, ..Recovery::default() };
        let running_meta = plan
            .running
            .and_then(|r| found.generations.iter().find(|g| g.generation == r))
            .and_then(|g| g.meta.clone().ok());
        let mut running = match running_meta {
            Some(meta) => Some(generation::open(&layout, meta)?),
            None => None,
        };
        for &i in &plan.roll_forward {
            let l = &found.links[i];
            let Some(p) = running.as_mut().and_then(|g| g.programs.get_mut(&l.attach)) else { continue };
            match links::replace(&l.path, p) {
                Ok(()) => recovery.rolled_forward.push(l.path.clone()),
                Err(ReplaceError::Defunct) => {
                    links::release(&l.path)?;
                    recovery.released.push(l.path.clone());
                }
                Err(ReplaceError::Failed(e)) => return Err(e),
            }
        }
        for &i in &plan.release {
            links::release(&found.links[i].path)?;
            recovery.released.push(found.links[i].path.clone());
        }
        recovery.kept_links = found.links.len().saturating_sub(recovery.rolled_forward.len() + recovery.released.len());
        // delete only what no remaining link runs
        let after = scan::scan(&layout)?;
        for g in plan.delete {
            if !runs_generation(&after, g) {
                generation::delete(&layout, g)?;
                recovery.deleted.push(g);
            }
        }
        // state/ names the adopted generation's state maps (a swap may have
        // stopped between its links and publishing them)
        match &running {
            Some(g) => crate::state::publish(&layout, g.generation(), &g.meta.state)?,
            None => crate::state::remove_all(&layout)?,
        }
        let mut pods = BTreeMap::new();
        for l in after.links.iter().filter(|l| l.attach == AttachPoint::PodVethIngress && !l.is_defunct()) {
            if let Some(name) = netdev::ifname(l.ifindex)? {
                pods.insert(l.ifindex, name);
            }
        }
        let loader = Loader {
            config,
            layout,
            running,
            next,
            pods,
            pod_ips: BTreeMap::new(),
            ebpf_loader: generation::ebpf_loader(),
            _lock: lock,
        };
        Ok((loader, recovery))
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The pin layout.
    #[must_use]
    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    /// The running generation and its artifact digest.
    #[must_use]
    pub fn running(&self) -> Option<(Generation, &str)> {
        self.running.as_ref().map(|g| (g.generation(), g.meta.digest.as_str()))
    }

    /// Kernel program ids of the running generation, per attach point.
    #[must_use]
    pub fn program_ids(&self) -> BTreeMap<AttachPoint, u32> {
        self.running.as_ref().map(|g| g.programs.iter().map(|(a, p)| (*a, p.id)).collect()).unwrap_or_default()
    }

    /// Pod interfaces the loader keeps attached (ifindex → name).
    #[must_use]
    pub fn pods(&self) -> &BTreeMap<u32, String> {
        &self.pods
    }

    /// The value of a hole source on this node; `what` names the hole (or
    /// late field) in errors.
    fn resolve_source(&self, what: &str, source: &HoleSource) -> Result<i64, LoaderError> {
        Ok(match source {
            HoleSource::Ifindex { link } => i64::from(netdev::require_ifindex(link, || what.to_owned())?),
            HoleSource::Constant { value } => *value as i64,
            HoleSource::UnderlayMss { ipv6, default } => i64::from(
                self.config.underlay_mtu.and_then(|mtu| egret_bpf::layout::tunnel_mss(mtu, *ipv6)).unwrap_or(*default),
            ),
            HoleSource::SlotIpv4 { slot } => {
                let ip = self.config.slot_ipv4.get(slot).ok_or_else(|| LoaderError::UnknownSlot {
                    hole: what.to_owned(),
                    slot: *slot,
                    family: "IPv4",
                })?;
                i64::from(u32::from(*ip))
            }
            // 16 bytes: a late field only (Artifact::check refuses it as a hole)
            HoleSource::SlotIpv6 { .. } => {
                return Err(LoaderError::HoleWide { hole: what.to_owned(), from: source.clone() });
            }
        })
    }

    /// The bytes of a late field on this node.
    fn resolve_late(&self, map: &str, f: &LateField) -> Result<Vec<u8>, LoaderError> {
        let what = format!("map `{map}` late field at offset {}", f.offset);
        let value = match &f.source {
            HoleSource::SlotIpv6 { slot } => {
                LateValue::Ipv6(*self.config.slot_ipv6.get(slot).ok_or_else(|| LoaderError::UnknownSlot {
                    hole: what.clone(),
                    slot: *slot,
                    family: "IPv6",
                })?)
            }
            source => {
                let v = self.resolve_source(&what, source)?;
                LateValue::Word(u32::try_from(v).map_err(|_| LoaderError::LateFieldRange {
                    map: map.to_owned(),
                    offset: f.offset,
                    value: v,
                })?)
            }
        };
        // Artifact::check guarantees that the encoding takes its source's values
        f.encoding.encode(value).ok_or_else(|| LoaderError::HoleWide { hole: what, from: f.source.clone() })
    }

    fn resolve_holes(&self, checked: &CheckedArtifact<'_>) -> Result<BTreeMap<String, i64>, LoaderError> {
        let mut values = BTreeMap::new();
        for (hole, source) in checked.holes() {
            values.insert(hole.clone(), self.resolve_source(&format!("hole %{hole}"), source)?);
        }
        Ok(values)
    }

    /// The map images with every late-bound value field filled on this node
    /// (`Entry::late`: the placeholder bytes are overwritten).
    fn resolve_images(&self, checked: &CheckedArtifact<'_>) -> Result<Vec<DecodedImage>, LoaderError> {
        let mut images = checked.images().to_vec();
        for (img, manifest) in images.iter_mut().zip(&checked.artifact().manifest.maps) {
            for ((_, value), entry) in img.entries.iter_mut().zip(&manifest.entries) {
                for f in &entry.late {
                    let bytes = self.resolve_late(&img.name, f)?;
                    let at = f.offset as usize;
                    // Artifact::check guarantees offset + width <= value_size
                    if let Some(dst) = value.get_mut(at..at + bytes.len()) {
                        dst.copy_from_slice(&bytes);
                    }
                }
            }
        }
        Ok(images)
    }

    /// Interfaces each attach point of `programs` should be attached to.
    fn targets(
        &self,
        programs: &BTreeMap<AttachPoint, String>,
    ) -> Result<Vec<(AttachPoint, u32, String)>, LoaderError> {
        let mut out = Vec::new();
        for attach in programs.keys() {
            match attach {
                AttachPoint::PodVethIngress => {
                    out.extend(self.pods.iter().map(|(i, n)| (*attach, *i, n.clone())));
                }
                AttachPoint::TunnelIngress => {
                    let name = &self.config.tunnel_device;
                    out.push((*attach, netdev::require_ifindex(name, || "tunnel device".into())?, name.clone()));
                }
                AttachPoint::EgressIngress => {
                    for name in &self.config.egress_interfaces {
                        out.push((*attach, netdev::require_ifindex(name, || "egress interface".into())?, name.clone()));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Makes `artifact` the running generation (see the module doc).
    ///
    /// # Errors
    /// Any check, resolution, build or swap failure; in every case the
    /// previously running generation still serves, unchanged.
    pub fn apply(&mut self, artifact: &Artifact) -> Result<ApplyReport, LoaderError> {
        let start = Instant::now();
        let checked = check_artifact(artifact, self.config.node.as_deref())?;
        if let Some(r) = &self.running
            && r.meta.digest == artifact.digest()
        {
            return Ok(ApplyReport::Unchanged { generation: r.generation() });
        }
        let values = self.resolve_holes(&checked)?;
        let images = self.resolve_images(&checked)?;
        self.forget_vanished_pods()?;
        let targets = self.targets(checked.programs())?;
        let n = self.next;
        self.next = n.next();
        let (new, state) = generation::build(
            &mut self.ebpf_loader,
            &self.layout,
            n,
            &checked,
            &images,
            &values,
            &artifact.manifest.node,
        )?;
        // from here until `commit`, any return rolls N back (see `Staged`)
        let mut staged =
            Staged { loader: self, generation: n, new: Some(new), created: Vec::new(), replaced: Vec::new() };
        let pods = staged.loader.pod_ips.iter().map(|(ip, i)| (*ip, Some(*i)));
        staged.loader.write_local_eps(n, pods)?;
        let built = start.elapsed();

        let existing = scan::link_pins(&staged.loader.layout)?;
        // 1. links for interfaces that have none, with N's program
        for (attach, ifindex, name) in &targets {
            if existing.iter().any(|l| l.attach == *attach && l.ifindex == *ifindex) {
                continue;
            }
            let Some(p) = staged.new.as_mut().and_then(|g| g.programs.get_mut(attach)) else { continue };
            let path = links::create(&staged.loader.layout, p, *attach, *ifindex, name)?;
            staged.created.push(path);
        }
        // 2. replace the program of every existing link N has a program for
        let mut to_release: Vec<PathBuf> = Vec::new();
        for l in &existing {
            let Some(p) = staged.new.as_mut().and_then(|g| g.programs.get_mut(&l.attach)) else {
                to_release.push(l.path.clone());
                continue;
            };
            if l.attach == AttachPoint::EgressIngress
                && !targets.iter().any(|(a, i, _)| *a == l.attach && *i == l.ifindex)
            {
                // an interface no longer in the egress set
                to_release.push(l.path.clone());
                continue;
            }
            match links::replace(&l.path, p) {
                Ok(()) => staged.replaced.push((l.path.clone(), l.attach)),
                Err(ReplaceError::Defunct) => to_release.push(l.path.clone()),
                Err(ReplaceError::Failed(e)) => {
                    let from = staged.loader.running.as_ref().map(LoadedGeneration::generation);
                    let restored = staged.roll_back();
                    return Err(LoaderError::SwapFailed {
                        to: n,
                        from,
                        path: l.path.clone(),
                        reason: e.to_string(),
                        restored,
                    });
                }
            }
        }
        let (new, created, replaced) = staged.commit();
        let swapped = start.elapsed();
        // 3. release what N does not serve, delete N-1; traffic already runs N,
        //    so a failure here is reported, not fatal (the next open finishes it)
        let mut leftovers = Vec::new();
        for path in &to_release {
            if links::release(path).is_err() {
                leftovers.push(path.clone());
            }
            if let Some((AttachPoint::PodVethIngress, ifindex)) =
                path.file_name().and_then(|f| f.to_str()).and_then(pins::parse_link_name)
            {
                self.pods.remove(&ifindex);
            }
        }
        let from = self.running.take().map(|old| old.generation());
        if crate::state::publish(&self.layout, n, &new.meta.state).is_err() {
            leftovers.push(self.layout.state_dir());
        }
        self.running = Some(new);
        if let Some(g) = from
            && generation::delete(&self.layout, g).is_err()
        {
            leftovers.push(self.layout.generation_dir(g));
        }
        let done = start.elapsed();
        Ok(ApplyReport::Swapped {
            from,
            to: n,
            replaced: replaced.len(),
            attached: created.len(),
            released: to_release.len(),
            leftovers,
            timings: SwapTimings { build: built, swap: swapped - built, cleanup: done - swapped },
            state,
        })
    }

    /// Drops pods whose interface is gone (or was replaced under the same
    /// ifindex by another name) from the wanted set, so a pod that vanished
    /// while pending never blocks a swap. Their links, if any, are released
    /// by the swap (the kernel reports them defunct).
    fn forget_vanished_pods(&mut self) -> Result<(), LoaderError> {
        let mut gone = Vec::new();
        for (ifindex, name) in &self.pods {
            if netdev::ifname(*ifindex)?.as_deref() != Some(name.as_str()) {
                gone.push(*ifindex);
            }
        }
        for i in gone {
            self.pods.remove(&i);
            self.pod_ips.retain(|_, ifindex| *ifindex != i);
        }
        Ok(())
    }

    /// Writes (`Some(ifindex)`) or deletes (`None`) local-endpoint entries
    /// of generation `g`, each in the map of its address's family
    /// (`egret_local_eps_v4` / `_v6`), if `g` has that map.
    fn write_local_eps(
        &self,
        g: Generation,
        entries: impl IntoIterator<Item = (IpAddr, Option<u32>)>,
    ) -> Result<(), LoaderError> {
        // one open pin per family, opened when first needed (`None`: no such map)
        let mut handles: BTreeMap<&'static str, Option<crate::sys::MapHandle>> = BTreeMap::new();
        for (pod, ifindex) in entries {
            let entry = LocalEndpoint { pod, ifindex: ifindex.unwrap_or(0) };
            let map = entry.map();
            let map_error = |operation, source| LoaderError::Map { map: map.into(), operation, source };
            let handle = match handles.entry(map) {
                std::collections::btree_map::Entry::Occupied(h) => h.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let path = self.layout.map(g, map);
                    let h = if path.exists() {
                        Some(crate::sys::MapHandle::open(&path).map_err(|e| map_error("opening its pin", e))?)
                    } else {
                        None
                    };
                    v.insert(h)
                }
            };
            let Some(handle) = handle else { continue };
            match ifindex {
                Some(_) => handle
                    .update(&entry.key(), &entry.value(), crate::sys::BPF_ANY)
                    .map_err(|e| map_error("writing a local endpoint", e))?,
                None => handle.delete(&entry.key()).map_err(|e| map_error("deleting a local endpoint", e))?,
            }
        }
        Ok(())
    }

    /// Writes `entries` (map name, key, value; no value: delete the key, if
    /// there) into the running generation's maps, in order: entries its
    /// program reads that its images did not hold (the sources admitted at
    /// CNI `ADD`, `egret_compiler::codegen::admit`). Returns that
    /// generation. A new generation starts from its own images.
    ///
    /// # Errors
    /// No generation runs, it has no such map, or a write fails.
    pub fn write_running(&self, entries: &[MapWrite<'_>]) -> Result<Generation, LoaderError> {
        let map_error = |map: &str, operation, source| LoaderError::Map { map: map.to_owned(), operation, source };
        let Some(g) = self.running.as_ref().map(LoadedGeneration::generation) else {
            let map = entries.first().map_or("", |e| e.0);
            let none = std::io::Error::new(std::io::ErrorKind::NotFound, "no generation runs");
            return Err(map_error(map, "writing", none));
        };
        let mut handles: BTreeMap<&str, crate::sys::MapHandle> = BTreeMap::new();
        for (map, key, value) in entries {
            let handle = match handles.entry(map) {
                std::collections::btree_map::Entry::Occupied(h) => h.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(
                    crate::sys::MapHandle::open(&self.layout.map(g, map))
                        .map_err(|e| map_error(map, "opening its pin in the running generation", e))?,
                ),
            };
            match value {
                Some(value) => {
                    handle
                        .update(key, value, crate::sys::BPF_ANY)
                        .map_err(|e| map_error(map, "writing an entry", e))?;
                }
                None => handle.delete(key).map_err(|e| map_error(map, "deleting an entry", e))?,
            }
        }
        Ok(g)
    }

    /// Local endpoints (`egret_local_eps_v4` / `_v6`) the loader keeps: pod
    /// IP → host-side ifindex.
    #[must_use]
    pub fn local_endpoints(&self) -> &BTreeMap<IpAddr, u32> {
        &self.pod_ips
    }

    /// Moves links back to the running generation's programs; returns how many.
    fn undo_swap(&mut self, replaced: &[(PathBuf, AttachPoint)]) -> usize {
        let Some(old) = self.running.as_mut() else { return 0 };
        let mut restored = 0;
        for (path, attach) in replaced {
            if let Some(p) = old.programs.get_mut(attach)
                && links::replace(path, p).is_ok()
            {
                restored += 1;
            }
        }
        restored
    }

    fn resolve_pod(target: &PodTarget) -> Result<(u32, String), LoaderError> {
        match target {
            PodTarget::Ip(ip) => netdev::pod_interface(*ip),
            PodTarget::Interface(name) => Ok((netdev::require_ifindex(name, || "pod interface".into())?, name.clone())),
            PodTarget::Ifindex(i) => Ok((*i, netdev::ifname(*i)?.ok_or(LoaderError::MissingIfindex { ifindex: *i })?)),
        }
    }

    /// Attaches the running generation's pod program to a pod's interface (a
    /// veth that appeared), or records it for the first generation that has one.
    ///
    /// # Errors
    /// The interface cannot be resolved, or attaching fails.
    pub fn attach_pod(&mut self, target: &PodTarget) -> Result<PodAttachment, LoaderError> {
        let (ifindex, interface) = Loader::resolve_pod(target)?;
        self.pods.insert(ifindex, interface.clone());
        if let PodTarget::Ip(ip) = target {
            self.pod_ips.insert(*ip, ifindex);
            if let Some(g) = self.running.as_ref().map(LoadedGeneration::generation) {
                self.write_local_eps(g, [(*ip, Some(ifindex))])?;
            }
        }
        let path = self.layout.link(AttachPoint::PodVethIngress, ifindex);
        if path.exists() {
            match links::info(&path) {
                Ok(i) if i.ifindex == ifindex => {
                    return Ok(PodAttachment { ifindex, interface, state: PodState::AlreadyAttached });
                }
                // a defunct link for a reused ifindex, or something unreadable: replace it
                _ => links::release(&path)?,
            }
        }
        let Some(p) = self.running.as_mut().and_then(|g| g.programs.get_mut(&AttachPoint::PodVethIngress)) else {
            return Ok(PodAttachment { ifindex, interface, state: PodState::Pending });
        };
        links::create(&self.layout, p, AttachPoint::PodVethIngress, ifindex, &interface)?;
        Ok(PodAttachment { ifindex, interface, state: PodState::Attached })
    }

    /// Forgets a pod interface and releases its link (a veth that disappeared,
    /// or a pod that no longer needs the program). Returns whether a link was released.
    ///
    /// # Errors
    /// The unpin failure.
    pub fn release_pod(&mut self, ifindex: u32) -> Result<bool, LoaderError> {
        self.pods.remove(&ifindex);
        let ips: Vec<IpAddr> = self.pod_ips.iter().filter(|(_, i)| **i == ifindex).map(|(ip, _)| *ip).collect();
        for ip in &ips {
            self.pod_ips.remove(ip);
        }
        if let Some(g) = self.running.as_ref().map(LoadedGeneration::generation) {
            self.write_local_eps(g, ips.iter().map(|ip| (*ip, None)))?;
        }
        let path = self.layout.link(AttachPoint::PodVethIngress, ifindex);
        let existed = path.exists();
        links::release(&path)?;
        Ok(existed)
    }

    /// Makes the set of attached pod interfaces equal `targets`.
    ///
    /// # Errors
    /// Attach or release failures (unresolvable targets are reported in the result instead).
    pub fn sync_pods(&mut self, targets: &[PodTarget]) -> Result<SyncReport, LoaderError> {
        let mut report = SyncReport::default();
        // ifindex → the IPs targeting it (kept for `egret_local_eps_v4/v6`)
        let mut wanted: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
        for t in targets {
            match Loader::resolve_pod(t) {
                Ok((i, _)) => {
                    let ips = wanted.entry(i).or_default();
                    if let PodTarget::Ip(ip) = t {
                        ips.push(*ip);
                    }
                }
                Err(e) => report.unresolved.push((t.clone(), e)),
            }
        }
        // IPs no longer targeted lose their entry even if their veth stays
        let dropped: Vec<IpAddr> = self
            .pod_ips
            .iter()
            .filter(|(ip, i)| !wanted.get(i).is_some_and(|ips| ips.contains(ip)))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &dropped {
            self.pod_ips.remove(ip);
        }
        if let Some(g) = self.running.as_ref().map(LoadedGeneration::generation) {
            self.write_local_eps(g, dropped.iter().map(|ip| (*ip, None)))?;
        }
        let stale: Vec<u32> = self.pods.keys().filter(|i| !wanted.contains_key(i)).copied().collect();
        for i in stale {
            if self.release_pod(i)? {
                report.released.push(i);
            }
        }
        for (i, ips) in wanted {
            // the pod's local endpoints before its link: its first packet
            // (egret_gw_local's source check, reply delivery) finds them
            for ip in &ips {
                self.pod_ips.insert(*ip, i);
            }
            if let Some(g) = self.running.as_ref().map(LoadedGeneration::generation) {
                self.write_local_eps(g, ips.iter().map(|ip| (*ip, Some(i))))?;
            }
            if self.attach_pod(&PodTarget::Ifindex(i))?.state == PodState::Attached {
                report.attached.push(i);
            }
        }
        Ok(report)
    }

    /// Makes `interfaces` the egress interfaces (`EgressIngress` programs
    /// attach to each): the running generation's program, if it has one, is
    /// attached to those without a link, and links of interfaces not in the
    /// set are released; a later [`Loader::apply`] swaps exactly this set.
    /// Without a running `EgressIngress` program the set is only recorded.
    ///
    /// # Errors
    /// Attach or release failures (names that are no interface are reported
    /// in the result instead).
    pub fn sync_egress(&mut self, interfaces: &[String]) -> Result<EgressSyncReport, LoaderError> {
        let mut report = EgressSyncReport::default();
        let mut wanted: BTreeMap<u32, String> = BTreeMap::new();
        for name in interfaces {
            match netdev::require_ifindex(name, || "egress interface".into()) {
                Ok(i) => {
                    wanted.insert(i, name.clone());
                }
                Err(e) => report.unresolved.push((name.clone(), e)),
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        self.config.egress_interfaces = interfaces.iter().filter(|n| seen.insert(n.as_str())).cloned().collect();
        for l in scan::link_pins(&self.layout)?.into_iter().filter(|l| l.attach == AttachPoint::EgressIngress) {
            let stale = match links::info(&l.path) {
                Ok(i) => i.ifindex == 0 || !wanted.contains_key(&l.ifindex),
                Err(_) => true,
            };
            if stale {
                links::release(&l.path)?;
                report.released.push(l.ifindex);
            }
        }
        let Some(p) = self.running.as_mut().and_then(|g| g.programs.get_mut(&AttachPoint::EgressIngress)) else {
            return Ok(report);
        };
        for (ifindex, name) in &wanted {
            if self.layout.link(AttachPoint::EgressIngress, *ifindex).exists() {
                continue;
            }
            links::create(&self.layout, p, AttachPoint::EgressIngress, *ifindex, name)?;
            report.attached.push(*ifindex);
        }
        Ok(report)
    }

    /// Releases every link whose device is gone (the kernel already stopped
    /// running it) and forgets such pods. Returns the released pins.
    ///
    /// # Errors
    /// Scan or unpin failures.
    pub fn prune(&mut self) -> Result<Vec<PathBuf>, LoaderError> {
        let mut released = Vec::new();
        for l in scan::scan(&self.layout)?.links {
            if l.is_defunct() {
                links::release(&l.path)?;
                if l.attach == AttachPoint::PodVethIngress {
                    self.pods.remove(&l.ifindex);
                }
                released.push(l.path);
            }
        }
        Ok(released)
    }

    /// The pinned state right now.
    ///
    /// # Errors
    /// See [`crate::inspect::status`].
    pub fn status(&self) -> Result<crate::inspect::Status, LoaderError> {
        crate::inspect::status(self.layout.root())
    }

    /// Removes egret from the node: releases every link (detaching the
    /// programs), deletes every generation and the state maps. The root
    /// directory stays.
    ///
    /// # Errors
    /// Unpin failures (what was removed stays removed).
    pub fn uninstall(mut self) -> Result<(), LoaderError> {
        self.running = None;
        let found = scan::scan(&self.layout)?;
        for l in &found.links {
            links::release(&l.path)?;
        }
        for g in &found.generations {
            generation::delete(&self.layout, g.generation)?;
        }
        crate::state::remove_all(&self.layout)?;
        let links_dir = self.layout.links_dir();
        match std::fs::remove_dir(&links_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LoaderError::bpffs(links_dir, "removing", e)),
        }
    }
}

/// Generation N while [`Loader::apply`] moves links to it. Dropped without
/// [`Staged::commit`] (an error, an early return, a panic), it rolls back:
/// the links moved to N go back to the running generation's programs, the
/// links created for N are released, and N is deleted, so the running
/// generation serves as before and nothing is half-applied.
struct Staged<'l> {
    loader: &'l mut Loader,
    generation: Generation,
    /// N; `None` once committed or rolled back.
    new: Option<LoadedGeneration>,
    /// Links created for N (interfaces that had none).
    created: Vec<PathBuf>,
    /// Links moved to N's programs, with their attach points.
    replaced: Vec<(PathBuf, AttachPoint)>,
}

impl Staged<'_> {
    /// Rolls back now; returns how many moved links went back.
    fn roll_back(mut self) -> usize {
        self.undo()
    }

    fn undo(&mut self) -> usize {
        let Some(new) = self.new.take() else { return 0 };
        let restored = self.loader.undo_swap(&self.replaced);
        for path in &self.created {
            let _ = links::release(path);
        }
        drop(new);
        let _ = generation::delete(&self.loader.layout, self.generation);
        restored
    }

    /// Keeps N: returns it with the links created for it and those moved to it.
    fn commit(mut self) -> (LoadedGeneration, Vec<PathBuf>, Vec<(PathBuf, AttachPoint)>) {
        let new = self.new.take().expect("staged until committed");
        (new, std::mem::take(&mut self.created), std::mem::take(&mut self.replaced))
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        self.undo();
    }
}

fn runs_generation(scan: &Scan, g: Generation) -> bool {
    scan.links
        .iter()
        .filter(|l| !l.is_defunct())
        .filter_map(|l| l.info.as_ref().ok())
        .any(|i| scan::generation_of(scan, i.prog_id) == Some(g))
}
