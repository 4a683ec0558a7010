//! The floating IPs' controller: runs one [`Float`] machine per floating IP
//! this node is a candidate for and carries out what they decide — the
//! Lease calls (`egret_kube::lease`), the address and its announcement
//! ([`super::announce`]), the owner in `egret_float_owner`, the NAT
//! replication's roles ([`super::replicate`]) and a Kubernetes Event per
//! change of owner.
//!
//! Contract of [`Ownership`]:
//! - **Own thread, own runtime**: a thread with a current-thread tokio
//!   runtime and its own API client, started from the agent's thread (so
//!   in the node's network namespace). A compile or a swap on the agent's
//!   thread never delays a takeover (issue: "a node, namespace or policy
//!   change must not be on the failover path").
//! - **Inputs**: the roles ([`Ownership::set_roles`], from each applied
//!   plan: the floating IPs, their slots, interfaces and candidates), the
//!   Leases (an `OwnerWatch` of egret's Leases), the prober's liveness of
//!   the candidates and of this node itself (its self-probe: *healthy*).
//! - **Every [`TICK`]**: each machine ticks with the Lease as watched, the
//!   candidates the prober says are down and this node's health; each
//!   action is carried out in order. A Lease call runs as a task of its
//!   own (at most one per IP: the machine asks for one at a time), bounded
//!   by the machine's call timeout; its result goes back to the machine.
//!   Address changes and announcements are netlink and packet-socket calls
//!   on this thread (microseconds).
//! - **`egret_float_owner`**: for each slot, the owner this node believes
//!   in (its underlay IPv4; `FO_F_SELF` when this node) — the entry is
//!   removed while there is none — so the datapath forwards the slot's
//!   packets to the owner. Rewritten whole every second (a swap may
//!   recreate the map).
//! - **Replication**: this node replicates its owned slots' NAT state to
//!   the other candidates, and accepts the other candidates' for the slots
//!   it is a standby of.
//! - **Local delivery**: TCP and UDP to the node's floating IPs that
//!   egret's programs do not take are dropped, not reset
//!   ([`super::announce::guard`]).
//! - **Floating IPs no longer in the roles** are withdrawn (address
//!   removed, Lease released); stopping the controller keeps both (rule 14
//!   of [`super::float`]: a restarted agent re-adopts).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use egret_bpf::templates::FloatOwner;
use egret_kube::events::{FailoverEvent, Publisher, Regarding};
use egret_kube::lease::{Acquire, FloatingLeases, LeaseConfig, OwnerTable, OwnerWatch, lease_name};
use egret_loader::{PinLayout, StateMap};
use serde::{Deserialize, Serialize};

use super::float::{self, Action, Call, Float, Inputs, LeaseView, Outcome, Shutdown};
use super::liveness::State;
use super::probe::{StatusHandle as ProbeStatus, monotonic_ns};
use super::replicate::{self, Replicator, ReplicatorConfig};

/// How often the machines tick.
pub const TICK: Duration = Duration::from_millis(20);
/// How often the status file ([`status_file`]) is rewritten.
const STATUS_EVERY: Duration = Duration::from_millis(500);
/// Where agents leave their floating IPs' status for `egret-agent status`.
pub const STATUS_DIR: &str = "/run/egret";

/// The status file of the agent whose bpffs root is `root`:
/// `/run/egret/<root with / as _>.floating.json` (one per root, so agents
/// of several nodes on one machine — the mini-cluster — do not collide).
#[must_use]
pub fn status_file(root: &std::path::Path) -> PathBuf {
    let name: String = root.to_string_lossy().chars().map(|c| if c == '/' { '_' } else { c }).collect();
    PathBuf::from(STATUS_DIR).join(format!("{name}.floating.json"))
}

/// Writes `s` to `path` whole (a temporary file renamed over it).
fn write_status(path: &std::path::Path, s: &OwnershipStatus) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(s).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}
/// How often a failed local-delivery guard is tried again.
const GUARD_RETRY: Duration = Duration::from_secs(5);
/// How often `egret_float_owner` is rewritten whole.
const REWRITE: Duration = Duration::from_secs(1);

/// One floating IP this node is a candidate for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FloatingRole {
    /// The address.
    pub ip: Ipv4Addr,
    /// The shared slot every candidate serves it on.
    pub slot: u32,
    /// The interface the address goes on when this node owns it.
    pub interface: String,
    /// Every candidate (this node included): name and underlay address.
    pub candidates: Vec<(String, IpAddr)>,
}

/// How the controller is set up.
#[derive(Debug, Clone)]
pub struct OwnershipConfig {
    /// This node's name (the Lease holder identity).
    pub node: String,
    /// Its underlay address.
    pub node_ip: IpAddr,
    /// The loader's bpffs root (for `egret_float_owner` and the NAT maps).
    pub root: PathBuf,
    /// Where the Leases live and their duration.
    pub lease: LeaseConfig,
    /// The machines' timings.
    pub float: float::Config,
    /// The NAT replication's port.
    pub replication_port: u16,
}

/// One floating IP as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingStatus {
    /// The address.
    pub ip: String,
    /// Its slot.
    pub slot: u32,
    /// The holder of its Lease as watched (`None`: none or released).
    pub lease_holder: Option<String>,
    /// The owner this node believes in (what `egret_float_owner` says).
    pub owner: Option<String>,
    /// This node owns it.
    pub is_owner: bool,
    /// This node has the address on its interface.
    pub address_added: bool,
    /// A holder this node may not preempt until it sees it live again.
    pub deposed_by: Option<String>,
    /// Changes of owner seen here.
    pub owner_changes: u64,
}

/// The controller's status.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OwnershipStatus {
    /// By address.
    pub floating: Vec<FloatingStatus>,
    /// Lease calls by outcome.
    pub lease_won: u64,
    pub lease_lost: u64,
    pub lease_unreachable: u64,
    /// Address and announcement failures.
    pub address_errors: u64,
    pub announce_errors: u64,
    /// Failures installing the local-delivery guard.
    pub guard_errors: u64,
    /// `egret_float_owner` write failures.
    pub map_errors: u64,
    /// The last error, for people.
    pub last_error: Option<String>,
    /// The API client could not be built (nothing is owned then).
    pub no_client: Option<String>,
    /// The NAT replication.
    pub replication: replicate::ReplicationStatus,
}

/// A handle on the status.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<OwnershipStatus>>);

impl StatusHandle {
    /// The status as of the last tick.
    #[must_use]
    pub fn snapshot(&self) -> OwnershipStatus {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn publish(&self, s: OwnershipStatus) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = s;
    }
}

/// The controller: see the module doc. Stopped (and joined) when dropped.
#[derive(Debug)]
pub struct Ownership {
    roles: Option<mpsc::Sender<Vec<FloatingRole>>>,
    status: StatusHandle,
    thread: Option<JoinHandle<()>>,
}

impl Ownership {
    /// Starts the controller's thread (in the calling thread's network
    /// namespace); `probes` is the prober's status (liveness of the
    /// candidates and of this node).
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(config: OwnershipConfig, probes: ProbeStatus) -> std::io::Result<Ownership> {
        let status = StatusHandle::default();
        let (tx, rx) = mpsc::channel();
        let published = status.clone();
        let thread = std::thread::Builder::new()
            .name("egret-floating".into())
            .spawn(move || run(config, probes, &rx, &published))?;
        Ok(Ownership { roles: Some(tx), status, thread: Some(thread) })
    }

    /// The floating IPs this node is a candidate for, from now on.
    pub fn set_roles(&self, roles: Vec<FloatingRole>) {
        if let Some(tx) = &self.roles {
            let _ = tx.send(roles);
        }
    }

    /// A handle on the status (for `egret-agent status` and the metrics).
    #[must_use]
    pub fn status_handle(&self) -> StatusHandle {
        self.status.clone()
    }
}

impl Drop for Ownership {
    fn drop(&mut self) {
        self.roles = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One floating IP's machine and what the controller knows beside it.
struct Managed {
    role: FloatingRole,
    machine: Float,
    /// The owner last reported by the machine.
    owner: Option<String>,
    owner_changes: u64,
    /// The holder a preemption was decided against (for the Event).
    preempted: Option<String>,
}

/// What a finished Lease call sends back.
struct Done {
    ip: Ipv4Addr,
    outcome: Outcome,
}

fn run(config: OwnershipConfig, probes: ProbeStatus, roles: &mpsc::Receiver<Vec<FloatingRole>>, status: &StatusHandle) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            status.publish(OwnershipStatus { no_client: Some(format!("no runtime: {e}")), ..Default::default() });
            return;
        }
    };
    rt.block_on(control(config, probes, roles, status));
}

async fn control(
    config: OwnershipConfig,
    probes: ProbeStatus,
    roles: &mpsc::Receiver<Vec<FloatingRole>>,
    status: &StatusHandle,
) {
    let client = match crate::kube_agent::client().await {
        Ok(c) => c,
        Err(e) => {
            status.publish(OwnershipStatus { no_client: Some(e.to_string()), ..Default::default() });
            // without an API server nothing may be owned; wait for the hang-up
            while !matches!(roles.recv(), Err(mpsc::RecvError)) {}
            return;
        }
    };
    let watch = OwnerWatch::new(client.clone(), &config.lease);
    let table = watch.subscribe();
    tokio::spawn(watch.run(std::future::pending()));
    let leases = FloatingLeases::new(client.clone(), config.lease.clone());
    let publisher = Publisher::new(client, &config.node);
    tokio::spawn(publisher.clone().run());
    let replicator = {
        let mut rc = ReplicatorConfig::new(&config.root, config.node_ip);
        rc.port = config.replication_port;
        Replicator::start(rc).map_err(|e| e.to_string())
    };
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let mut managed: BTreeMap<Ipv4Addr, Managed> = BTreeMap::new();
    let mut s = OwnershipStatus::default();
    if let Err(e) = &replicator {
        s.last_error = Some(format!("NAT replication not started: {e}"));
    }
    let layout = PinLayout::new(&config.root);
    let mut written: BTreeMap<u32, FloatOwner> = BTreeMap::new();
    let mut last_rewrite = std::time::Instant::now();
    let (file, mut last_file) = (status_file(&config.root), None::<std::time::Instant>);
    let mut last_roles: Option<replicate::Roles> = None;
    let mut reported_problems: BTreeSet<String> = BTreeSet::new();
    let (mut guarded, mut last_guard) = (None::<BTreeSet<Ipv4Addr>>, None::<std::time::Instant>);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(d) = done_rx.recv() => {
                let now = monotonic_ns();
                match &d.outcome {
                    Outcome::Won { .. } => s.lease_won += 1,
                    Outcome::Lost { .. } => s.lease_lost += 1,
                    Outcome::Unreachable => s.lease_unreachable += 1,
                }
                if let Some(m) = managed.get_mut(&d.ip) {
                    let actions = m.machine.call_done(now, d.outcome);
                    carry_out(&config, m, actions, &leases, &done_tx, &publisher, &mut s);
                }
                continue;
            }
        }
        // roles: the latest wins; a hang-up stops the controller (keeping
        // addresses and Leases, rule 14)
        let mut latest = None;
        loop {
            match roles.try_recv() {
                Ok(r) => latest = Some(r),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    for m in managed.values_mut() {
                        let _ = m.machine.shutdown(Shutdown::Keep);
                    }
                    return;
                }
            }
        }
        if let Some(new) = latest {
            let wanted: BTreeMap<Ipv4Addr, FloatingRole> = new.into_iter().map(|r| (r.ip, r)).collect();
            let gone: Vec<Ipv4Addr> = managed.keys().filter(|ip| !wanted.contains_key(ip)).copied().collect();
            for ip in gone {
                if let Some(mut m) = managed.remove(&ip) {
                    let actions = m.machine.shutdown(Shutdown::Withdraw);
                    carry_out(&config, &mut m, actions, &leases, &done_tx, &publisher, &mut s);
                }
            }
            for (ip, role) in wanted {
                let changed = managed.get(&ip).is_none_or(|m| m.role.candidates != role.candidates);
                if changed {
                    let names: Vec<String> = role.candidates.iter().map(|(n, _)| n.clone()).collect();
                    let machine = Float::new(&config.node, IpAddr::V4(ip), &names, config.float.clone());
                    managed.insert(ip, Managed { role, machine, owner: None, owner_changes: 0, preempted: None });
                } else if let Some(m) = managed.get_mut(&ip) {
                    m.role = role;
                }
            }
        }
        // the local-delivery guard for every floating IP of this node
        // (retried every GUARD_RETRY while it fails)
        let ips: BTreeSet<Ipv4Addr> = managed.keys().copied().collect();
        if guarded.as_ref() != Some(&ips) && last_guard.is_none_or(|t| t.elapsed() >= GUARD_RETRY) {
            last_guard = Some(std::time::Instant::now());
            match super::announce::guard(&ips) {
                Ok(()) => guarded = Some(ips),
                Err(e) => {
                    s.guard_errors += 1;
                    s.last_error = Some(e.to_string());
                }
            }
        }
        // inputs
        let now = monotonic_ns();
        let wall = SystemTime::now();
        let seen = probes.snapshot();
        let healthy = seen.gateways.get(&config.node_ip).is_none_or(|g| g.state != State::Down);
        let owners: OwnerTable = table.borrow().clone();
        // Leases edited into nonsense (by hand): a Warning from each candidate
        // that sees the problem (once per problem: the candidate that rewrites
        // the Lease has seen it, however fast it heals); the machine treats
        // the Lease as free and the next holder writes it whole again
        for problem in owners.problems.values() {
            if !managed.values().any(|m| lease_name(IpAddr::V4(m.role.ip)) == problem.lease()) {
                continue;
            }
            let text = problem.to_string();
            if reported_problems.insert(text.clone()) {
                publisher.queue_failover([FailoverEvent {
                    regarding: Regarding::Lease {
                        namespace: config.lease.namespace.clone(),
                        name: problem.lease().to_string(),
                    },
                    warning: true,
                    reason: "FloatingIPLeaseInvalid",
                    note: format!("{text}; egret treats the Lease as free: the next holder writes it whole again"),
                }]);
            }
        }
        reported_problems.retain(|t| owners.problems.values().any(|p| p.to_string() == *t));
        for m in managed.values_mut() {
            let down: BTreeSet<String> = m
                .role
                .candidates
                .iter()
                .filter(|(_, ip)| seen.gateways.get(ip).is_some_and(|g| g.state == State::Down))
                .map(|(n, _)| n.clone())
                .collect();
            let view = LeaseView::of(owners.owners.get(&IpAddr::V4(m.role.ip)), wall);
            let actions = m.machine.tick(now, Inputs { lease: &view, down: &down, healthy });
            carry_out(&config, m, actions, &leases, &done_tx, &publisher, &mut s);
        }
        // the datapath's view of the owners
        let want: BTreeMap<u32, FloatOwner> = managed
            .values()
            .filter_map(|m| {
                let owner = m.owner.as_ref()?;
                let ip = m.role.candidates.iter().find(|(n, _)| n == owner).map(|(_, ip)| *ip)?;
                Some((m.role.slot, FloatOwner { slot: m.role.slot, owner: ip, is_self: *owner == config.node }))
            })
            .collect();
        let full = last_rewrite.elapsed() >= REWRITE;
        if full || want != written {
            match write_owners(&layout, &want, if full { None } else { Some(&written) }) {
                Ok(true) => {
                    written = want;
                    if full {
                        last_rewrite = std::time::Instant::now();
                    }
                }
                // not pinned yet: try again next tick
                Ok(false) => written.clear(),
                Err(e) => {
                    s.map_errors += 1;
                    s.last_error = Some(e);
                    written.clear();
                }
            }
        }
        if let Ok(r) = &replicator {
            let roles = replication_roles(&config, &managed);
            if last_roles.as_ref() != Some(&roles) {
                r.set_roles(roles.owned.clone(), roles.standby_for.clone());
                last_roles = Some(roles);
            }
            s.replication = r.status();
        }
        s.floating = managed
            .values()
            .map(|m| FloatingStatus {
                ip: m.role.ip.to_string(),
                slot: m.role.slot,
                lease_holder: owners.holder(IpAddr::V4(m.role.ip)).map(str::to_owned),
                owner: m.owner.clone(),
                is_owner: m.machine.is_owner(),
                address_added: m.machine.address_added(),
                deposed_by: m.machine.deposed_by().map(str::to_owned),
                owner_changes: m.owner_changes,
            })
            .collect();
        if last_file.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
            last_file = Some(std::time::Instant::now());
            // best effort: `egret-agent status` says how old what it shows is
            let _ = write_status(&file, &s);
        }
        status.publish(s.clone());
    }
}

/// The replication's roles: the slots this node owns go to the other
/// candidates; the others' are accepted from them.
fn replication_roles(config: &OwnershipConfig, managed: &BTreeMap<Ipv4Addr, Managed>) -> replicate::Roles {
    let mut roles = replicate::Roles::default();
    for m in managed.values() {
        let peers: BTreeSet<IpAddr> =
            m.role.candidates.iter().filter(|(n, _)| *n != config.node).map(|(_, ip)| *ip).collect();
        if m.machine.is_owner() {
            roles.owned.insert(m.role.slot, peers);
        } else {
            roles.standby_for.insert(m.role.slot, peers);
        }
    }
    roles
}

/// Writes `want` into `egret_float_owner` (only the differences from
/// `written`, or everything — deleting what is not wanted — when `None`).
/// `Ok(false)` when the map is not pinned.
fn write_owners(
    layout: &PinLayout,
    want: &BTreeMap<u32, FloatOwner>,
    written: Option<&BTreeMap<u32, FloatOwner>>,
) -> Result<bool, String> {
    let Some(map) = StateMap::open(layout, &FloatOwner::map_def()).map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    for (slot, o) in want {
        if written.is_none_or(|w| w.get(slot) != Some(o)) {
            map.set(&o.key(), &o.value()).map_err(|e| e.to_string())?;
        }
    }
    let stale: Vec<Vec<u8>> = match written {
        Some(w) => w.keys().filter(|k| !want.contains_key(k)).map(|k| k.to_le_bytes().to_vec()).collect(),
        None => map
            .keys()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|k| {
                egret_bpf::layout::slot::LAYOUT.fits(k)
                    && egret_bpf::layout::slot::SLOT.get_u32(k).is_some_and(|slot| !want.contains_key(&slot))
            })
            .collect(),
    };
    for k in stale {
        map.remove(&k).map_err(|e| e.to_string())?;
    }
    Ok(true)
}

/// Carries out one machine's actions, in order.
fn carry_out(
    config: &OwnershipConfig,
    m: &mut Managed,
    actions: Vec<Action>,
    leases: &FloatingLeases,
    done: &tokio::sync::mpsc::UnboundedSender<Done>,
    publisher: &Publisher,
    s: &mut OwnershipStatus,
) {
    let ip = m.role.ip;
    for a in actions {
        match a {
            Action::Acquire { how, over } => {
                m.preempted = if how == Acquire::Preempt { over } else { None };
                call(leases, done, ip, config, Call::Acquire(how), config.float.call_timeout);
            }
            Action::Renew => call(leases, done, ip, config, Call::Renew, config.float.call_timeout),
            Action::Release => call(leases, done, ip, config, Call::Release, config.float.call_timeout),
            Action::AddAddress => {
                if let Err(e) = super::announce::add_address(m.role.interface.as_str(), ip) {
                    s.address_errors += 1;
                    s.last_error = Some(format!("adding {ip} to {}: {e}", m.role.interface));
                }
            }
            Action::RemoveAddress => {
                if let Err(e) = super::announce::remove_address(m.role.interface.as_str(), ip) {
                    s.address_errors += 1;
                    s.last_error = Some(format!("removing {ip} from {}: {e}", m.role.interface));
                }
            }
            Action::Announce => {
                if let Err(e) =
                    super::announce::gratuitous_arp(m.role.interface.as_str(), ip, super::announce::Garp::Request)
                {
                    s.announce_errors += 1;
                    s.last_error = Some(format!("announcing {ip} on {}: {e}", m.role.interface));
                }
            }
            Action::OwnerChanged(owner) => {
                if owner != m.owner {
                    m.owner_changes += 1;
                    publisher.queue_failover(owner_event(&config.node, &config.lease, m, owner.as_deref()));
                    m.owner = owner;
                }
            }
        }
    }
}

/// The Event for `m`'s owner becoming `owner`, as this node says it: only
/// the new owner speaks of its own gain, only the old one of its loss, so
/// one change is one or two Events, not one per candidate.
fn owner_event(node: &str, lease: &LeaseConfig, m: &Managed, owner: Option<&str>) -> Option<FailoverEvent> {
    let ip = m.role.ip;
    let regarding = Regarding::Lease { namespace: lease.namespace.clone(), name: lease_name(IpAddr::V4(ip)) };
    let before = m.owner.as_deref();
    let (warning, reason, note) = match (before, owner) {
        (_, Some(o)) if o == node => match &m.preempted {
            Some(from) => {
                (true, "FloatingIPTakeover", format!("{node} took {ip} from {from}, which its probes saw down"))
            }
            None => (false, "FloatingIPAcquired", format!("{node} holds {ip} (was: {})", before.unwrap_or("nobody"))),
        },
        (Some(b), after) if b == node => {
            (true, "FloatingIPLost", format!("{node} no longer holds {ip} (now: {})", after.unwrap_or("nobody")))
        }
        _ => return None,
    };
    Some(FailoverEvent { regarding, warning, reason, note })
}

/// Runs a Lease call as a task; its outcome goes back on `done`.
fn call(
    leases: &FloatingLeases,
    done: &tokio::sync::mpsc::UnboundedSender<Done>,
    ip: Ipv4Addr,
    config: &OwnershipConfig,
    c: Call,
    timeout: Duration,
) {
    let (leases, done, node) = (leases.clone(), done.clone(), config.node.clone());
    tokio::spawn(async move {
        let vip = IpAddr::V4(ip);
        let outcome = match c {
            Call::Acquire(how) => Outcome::of_acquisition(&leases.acquire(vip, &node, how, timeout).await),
            Call::Renew => Outcome::of_renewal(&leases.renew(vip, &node, timeout).await),
            Call::Release => Outcome::of_release(&leases.release(vip, &node, timeout).await),
        };
        let _ = done.send(Done { ip, outcome });
    });
}
