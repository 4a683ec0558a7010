//! Who holds one floating egress IP, as a pure state machine for one node:
//! no clock, no I/O. The caller feeds it what it sees ([`Float::tick`]: the
//! IP's Lease as last seen, the candidates its prober says are down,
//! whether its own datapath is healthy) and the results of the Lease calls
//! it asked for ([`Float::call_done`]); it answers with [`Action`]s, in the
//! order they must be carried out. Time is an input (`now`, nanoseconds of
//! a monotonic clock; only differences matter).
//!
//! Ownership is the IP's `coordination.k8s.io/v1` Lease
//! (`egret_kube::lease`): the API server's optimistic concurrency picks one
//! winner among concurrent writers; this machine decides when to write and
//! what to do with the address.
//!
//! # Rules (normative)
//!
//! Terms: the *view* is the Lease as last seen ([`LeaseView`]), corrected
//! by what a call's result taught since (a result supersedes the view the
//! call was decided on until the view changes). *Down* means this node's
//! prober says the node is down ([`super::liveness::State::Down`]); a node
//! it has not judged yet, or does not probe, is live. *Healthy* means this
//! node's own datapath answers its self-probe. A *candidate* is a node of
//! the list given to [`Float::new`].
//!
//! 1. **One call at a time**: at most one Lease call is outstanding; the
//!    caller reports each exactly once ([`Float::call_done`]; a timeout is
//!    [`Outcome::Unreachable`]). A call that found nothing out is retried
//!    after [`Config::retry_interval`], as is a lost acquisition.
//! 2. **Free lease → acquire**: when the view has no holder (no Lease,
//!    released, or a Lease that is a `LeaseProblem`), or its holder is not
//!    a candidate and the Lease is expired, every healthy candidate asks
//!    for [`Acquire::IfFree`]; the API server picks one.
//! 3. **Re-adoption**: a healthy node that is not the owner but sees
//!    itself as the holder (an agent restarted after `kill -9` or an
//!    update, expired or not) asks for [`Acquire::IfFree`], which renews a
//!    Lease already its own; the address it may have left on the
//!    interface is kept meanwhile and added again (idempotently) on `Won`.
//! 4. **Takeover only from a down holder**: a Lease held by another
//!    candidate `X` is taken ([`Acquire::Preempt`]) only when this node's
//!    probes say `X` is down, this node is healthy, and rule 5 allows it,
//!    whether or not the Lease is expired. Expiry alone never frees a
//!    candidate's Lease: a holder whose agent died (`kill -9`, a DaemonSet
//!    update) still has its datapath and its address, answers probes, and
//!    keeps the IP; its restarted agent re-adopts (rule 3). The price: a
//!    live holder whose agent cannot reach the API server has fenced
//!    itself (rule 9) and nobody takes over until it reaches it again.
//! 5. **Stagger**: the candidates rank themselves for the IP by
//!    rendezvous hashing ([`weight`] of the IP and the node name, highest
//!    first) over the candidates that are neither the holder nor down;
//!    rank `r` preempts only once `X` has been down (continuously, and
//!    the holder) for `r ×` [`Config::stagger`]. Someone else taking the
//!    Lease meanwhile (a live holder) ends the wait: nothing is preempted.
//!    With three or more candidates, a node that does not see a strict
//!    majority of them live (itself included) is probably the one cut
//!    off: it preempts only an expired Lease (a dead holder's expires
//!    within the duration; a live one's never does).
//! 6. **Deposed**: a node that lost the Lease (a renewal `Lost`, or a view
//!    showing another holder) to `X` while it saw `X` down may not preempt
//!    `X` until it has seen `X` live again. So a partition between
//!    candidates that all reach the API server ends with one owner: the
//!    side that took the Lease keeps it; the deposed side waits.
//! 7. **Sticky**: nothing takes the IP from a live holder: a returning
//!    candidate (or a former owner, healthy again) only acquires under
//!    rules 2–4.
//! 8. **Owner**: this node owns the IP from a `Won` until it removes the
//!    address for one of the reasons below. It adds the address
//!    ([`Action::AddAddress`]) after `Won` — at once, except after
//!    preempting a holder whose Lease was not expired: then only
//!    [`Config::settle`] later — the time a deposed holder that reaches the
//!    API server needs to learn it lost (its watch delivers the takeover;
//!    rule 10), and one that does not needs to have fenced itself (rule
//!    9a, decided by probes as fast as the takeover was) — so two nodes
//!    never answer for the IP at once. Once added, it announces
//!    ([`Action::Announce`]) at each offset of [`Config::announce_at`]
//!    after the add (several due at one tick are one announcement). It
//!    renews every [`Config::renew_interval`] (from the sending of the
//!    previous successful write; after an unanswered one, after
//!    [`Config::retry_interval`]).
//! 9. **Self-fence**: the owner keeps the address only until its last
//!    successful write (taken at the time the call was sent, which is
//!    before the API server stamped it) plus [`Config::fence_after`]
//!    (`lease_duration − fence_margin`): then it removes it, before other
//!    nodes may judge the Lease expired. A later successful renewal adds it
//!    again (the Lease stayed its own: nobody wrote in between).
//!
//!    **9a. Cut-off owner**: an owner that loses quorum (sees a majority
//!    of the candidates down, as rule 5 counts; never with two candidates
//!    or fewer) removes the address at once and renews at once; it adds
//!    the address again only after a renewal *sent after* it lost quorum
//!    has succeeded — it still reaches the API server, so it is not the
//!    node cut off (the others died, or a partition keeps them from it
//!    only). An owner whose underlay failed thus withdraws as soon as its
//!    probes tell it (3 misses), not a lease duration later, while the
//!    candidate that takes over waits [`Config::settle`] before adding the
//!    address.
//! 10. **Deposed owner**: a renewal `Lost`, or a view showing another
//!     holder once the view has shown this node's own latest write (a watch
//!     delivers in order, so anything after it is newer), removes the
//!     address at once: [`Action::RemoveAddress`] is the first action
//!     returned. (A view that has not caught up is not trusted: the next
//!     renewal finds out.)
//! 11. **Unhealthy owner**: when this node's own datapath is not healthy,
//!     the owner removes the address and releases the Lease (it would
//!     attract traffic it cannot carry); an unhealthy node acquires nothing,
//!     and releases a Lease it sees as its own (retried as rule 1 says).
//! 12. **Stray address**: a node that is not the owner and not re-adopting
//!     removes the address if it may be on the interface (a new machine
//!     assumes it may: a previous agent may have left it).
//! 13. **Owner report**: [`Action::OwnerChanged`] (for `egret_float_owner`
//!     and an Event) whenever the owner as this node believes it changes:
//!     this node while it owns the IP, else the view's holder.
//! 14. **Shutdown** ([`Float::shutdown`]): [`Shutdown::Keep`] (the agent
//!     stops or restarts: the datapath runs on) keeps both the address and
//!     the Lease, so a restart fails nothing over (rules 3, 4);
//!     [`Shutdown::Withdraw`] (the node leaves the candidates) removes the
//!     address and releases. Either way the machine is inert afterwards.
//!
//! # What a deposed owner and a new owner can overlap
//! With the defaults, two nodes have the address at once only when the
//! deposed owner cannot reach the API server *and* still sees a majority of
//! the candidates live (else rule 9a withdrew it), or when its probes
//! judge the others down more than [`Config::settle`] later than the new
//! owner's judge it (probe phases differ by at most one interval): then
//! until its self-fence, at most [`Config::fence_after`] after its last
//! successful write. The simulation test computes these intervals; the
//! mini-cluster measures them from the external segment
//! (`egret-bench failover`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use egret_kube::lease::{Acquire, Acquisition, LeaseConfig, LeaseError, LeaseState};

/// Nanoseconds of the caller's monotonic clock.
pub type Nanos = u64;

fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The timings of the rules (module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The Lease's duration (as `egret_kube::lease::LeaseConfig::duration`,
    /// whose default it takes: 2 s).
    pub lease_duration: Duration,
    /// Between renewals (default 500 ms; well below the duration).
    pub renew_interval: Duration,
    /// How long before the Lease would expire the owner removes the address
    /// when it cannot renew (default 25 % of the duration: 500 ms).
    pub fence_margin: Duration,
    /// The timeout the caller gives each Lease call (default 150 ms).
    pub call_timeout: Duration,
    /// Before retrying a call that learnt nothing or an acquisition that
    /// lost (default 200 ms).
    pub retry_interval: Duration,
    /// Per rank, before preempting a down holder (default 150 ms).
    pub stagger: Duration,
    /// After preempting an unexpired Lease, before adding the address
    /// (default 200 ms: a deposed owner's watch has delivered the
    /// takeover, and a cut-off owner's probes — one interval apart at most
    /// from the taker's — have withdrawn it, rule 9a).
    pub settle: Duration,
    /// When to announce, after adding the address (default 0, 100 ms,
    /// 500 ms, 2 s).
    pub announce_at: Vec<Duration>,
}

impl Default for Config {
    fn default() -> Config {
        let lease_duration = LeaseConfig::default().duration;
        let renew_interval = Duration::from_millis(500);
        let call_timeout = Duration::from_millis(150);
        Config {
            lease_duration,
            renew_interval,
            fence_margin: lease_duration / 4,
            call_timeout,
            retry_interval: Duration::from_millis(200),
            stagger: Duration::from_millis(150),
            settle: Duration::from_millis(200),
            announce_at: [0, 100, 500, 2000].map(Duration::from_millis).to_vec(),
        }
    }
}

impl Config {
    /// How long after its last successful write the owner keeps the
    /// address without renewing: `lease_duration − fence_margin`.
    #[must_use]
    pub fn fence_after(&self) -> Duration {
        self.lease_duration.saturating_sub(self.fence_margin)
    }
}

/// The IP's Lease as last seen (e.g. from `egret_kube::lease::OwnerTable`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// The holder; `None` when there is no Lease, it is released, or it is
    /// a `LeaseProblem`.
    pub holder: Option<String>,
    /// Whether it is expired by the local clock.
    pub expired: bool,
    /// Its `resourceVersion` (compared for equality only).
    pub version: String,
}

impl LeaseView {
    /// The view of `state` (`None`: no Lease, or a problem) at `now`.
    #[must_use]
    pub fn of(state: Option<&LeaseState>, now: SystemTime) -> LeaseView {
        state.map_or_else(LeaseView::default, |s| LeaseView {
            holder: s.holder.clone(),
            expired: s.expired_at(now),
            version: s.resource_version.clone(),
        })
    }
}

/// What this node sees at a tick.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The Lease.
    pub lease: &'a LeaseView,
    /// The candidates this node's prober says are down.
    pub down: &'a BTreeSet<String>,
    /// Whether this node's own datapath answers its self-probe.
    pub healthy: bool,
}

/// The result of a Lease call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acquired or renewed (this node holds the Lease, at `version`); for a
    /// release: released (`version` unknown).
    Won {
        /// The `resourceVersion` written, if known.
        version: Option<String>,
    },
    /// Another node (or nobody) holds the Lease.
    Lost {
        /// The holder now.
        holder: Option<String>,
    },
    /// Nothing was learnt (timeout, unreachable, refused).
    Unreachable,
}

impl Outcome {
    /// The outcome of `FloatingLeases::acquire`.
    #[must_use]
    pub fn of_acquisition(r: &Result<Acquisition, LeaseError>) -> Outcome {
        match r {
            Ok(Acquisition::Won(s)) => Outcome::Won { version: Some(s.resource_version.clone()) },
            Ok(Acquisition::Lost { current }) => {
                Outcome::Lost { holder: current.as_ref().and_then(|c| c.holder.clone()) }
            }
            Err(e) => Outcome::of_error(e),
        }
    }

    /// The outcome of `FloatingLeases::renew`.
    #[must_use]
    pub fn of_renewal(r: &Result<LeaseState, LeaseError>) -> Outcome {
        match r {
            Ok(s) => Outcome::Won { version: Some(s.resource_version.clone()) },
            Err(e) => Outcome::of_error(e),
        }
    }

    /// The outcome of `FloatingLeases::release`.
    #[must_use]
    pub fn of_release(r: &Result<(), LeaseError>) -> Outcome {
        match r {
            Ok(()) => Outcome::Won { version: None },
            Err(e) => Outcome::of_error(e),
        }
    }

    fn of_error(e: &LeaseError) -> Outcome {
        match e {
            LeaseError::Lost { holder, .. } => Outcome::Lost { holder: holder.clone() },
            _ => Outcome::Unreachable,
        }
    }
}

/// A Lease call the machine asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `FloatingLeases::acquire` with this mode.
    Acquire(Acquire),
    /// `FloatingLeases::renew`.
    Renew,
    /// `FloatingLeases::release`.
    Release,
}

/// What the caller must do, in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Acquire the Lease; `over` is the holder a [`Acquire::Preempt`] was
    /// decided against (a caller able to should preempt only that holder).
    Acquire {
        /// The mode.
        how: Acquire,
        /// The down holder being preempted.
        over: Option<String>,
    },
    /// Renew the Lease.
    Renew,
    /// Release the Lease.
    Release,
    /// Add the address to the egress interface (idempotent).
    AddAddress,
    /// Remove the address from the egress interface (idempotent).
    RemoveAddress,
    /// Announce the address (gratuitous ARP).
    Announce,
    /// The owner this node believes in changed (`egret_float_owner`, an Event).
    OwnerChanged(Option<String>),
}

/// What [`Float::shutdown`] does (rule 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Keep the address and the Lease (agent stop or restart).
    Keep,
    /// Remove the address and release the Lease (the node leaves).
    Withdraw,
}

/// The rendezvous weight of `node` for `ip`: FNV-1a over the address's
/// text, a zero byte and the name, finished with splitmix64's mixer.
#[must_use]
pub fn weight(ip: IpAddr, node: &str) -> u64 {
    let step = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    let mut h = ip.to_string().bytes().chain([0]).chain(node.bytes()).fold(0xcbf2_9ce4_8422_2325, step);
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The candidates in rendezvous order for `ip`: highest [`weight`] first,
/// ties by name, duplicates dropped.
#[must_use]
pub fn rendezvous_order(ip: IpAddr, candidates: &[String]) -> Vec<String> {
    let mut v: Vec<(u64, &String)> = candidates.iter().map(|c| (weight(ip, c), c)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    v.dedup_by(|a, b| a.1 == b.1);
    v.into_iter().map(|(_, c)| c.clone()).collect()
}

/// Whether the address may be on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Address {
    Absent,
    /// Unknown (a new machine): a previous agent may have left it.
    Maybe,
    Added,
}

/// This node's hold on the IP (rule 8).
#[derive(Debug, Clone)]
struct Owned {
    /// When the last successful write was sent.
    confirmed: Nanos,
    /// The version it wrote, if known.
    version: Option<String>,
    /// Whether the view has shown `version` (rule 10).
    synced: bool,
    /// Not before this, the address is added.
    add_at: Nanos,
    /// When the address was last added.
    added_at: Option<Nanos>,
    /// Announcements made since.
    announced: usize,
    /// When to renew next.
    next_renew: Nanos,
    /// Since when it has lacked quorum (rule 9a).
    cut_off_since: Option<Nanos>,
    /// The view's version when the last successful write was decided: a
    /// view still at it has merely not caught up.
    decided_on: String,
}

#[derive(Debug, Clone)]
struct Pending {
    call: Call,
    sent: Nanos,
    /// The view's version when the call was decided.
    view_version: String,
    /// A preemption of an unexpired Lease (rule 8's settle).
    settle: bool,
}

/// What a call taught: it supersedes the view of version `stale`.
#[derive(Debug, Clone)]
struct Learnt {
    stale: String,
    holder: Option<String>,
}

/// One floating IP on one node: see the module doc.
#[derive(Debug, Clone)]
pub struct Float {
    node: String,
    /// The candidates, rendezvous order.
    order: Vec<String>,
    config: Config,
    view: Option<LeaseView>,
    down: BTreeSet<String>,
    healthy: bool,
    learnt: Option<Learnt>,
    owned: Option<Owned>,
    call: Option<Pending>,
    address: Address,
    /// The down holder and since when (rule 5).
    down_since: Option<(String, Nanos)>,
    /// Rule 6.
    deposed_by: Option<String>,
    next_attempt: Nanos,
    reported: Option<Option<String>>,
    stopped: bool,
    /// The time of the last input.
    last: Nanos,
}

impl Float {
    /// The machine of `node` for `ip` among `candidates` (which should
    /// include `node`). It decides nothing before the first tick, and
    /// assumes the address may be on the interface (rules 3, 12).
    #[must_use]
    pub fn new(node: &str, ip: IpAddr, candidates: &[String], config: Config) -> Float {
        Float {
            node: node.to_string(),
            order: rendezvous_order(ip, candidates),
            config,
            view: None,
            down: BTreeSet::new(),
            healthy: false,
            learnt: None,
            owned: None,
            call: None,
            address: Address::Maybe,
            down_since: None,
            deposed_by: None,
            next_attempt: 0,
            reported: None,
            stopped: false,
            last: 0,
        }
    }

    /// Whether this node owns the IP (rule 8), address added or not.
    #[must_use]
    pub fn is_owner(&self) -> bool {
        self.owned.is_some()
    }

    /// Whether this machine last asked for the address to be added (and
    /// not removed since).
    #[must_use]
    pub fn address_added(&self) -> bool {
        self.address == Address::Added
    }

    /// The call outstanding, if any.
    #[must_use]
    pub fn outstanding(&self) -> Option<Call> {
        self.call.as_ref().map(|p| p.call)
    }

    /// The holder this node may not preempt (rule 6).
    #[must_use]
    pub fn deposed_by(&self) -> Option<&str> {
        self.deposed_by.as_deref()
    }

    /// This node's rank for preempting `holder` (rule 5): its position in
    /// rendezvous order among the candidates that are neither `holder`
    /// nor down; the number of candidates if it is not one.
    #[must_use]
    pub fn rank(&self, holder: &str) -> usize {
        self.order
            .iter()
            .filter(|n| *n != holder && !self.down.contains(*n))
            .position(|n| *n == self.node)
            .unwrap_or(self.order.len())
    }

    /// The next time after the last input at which a tick would act even
    /// if nothing it sees changes (a renewal, an add, an announcement, the self-fence, a
    /// retry, the end of a stagger); `None` when only a change can.
    #[must_use]
    pub fn next_wakeup(&self) -> Option<Nanos> {
        if self.stopped {
            return None;
        }
        let c = &self.config;
        let mut times: Vec<Nanos> = Vec::new();
        if let Some(o) = &self.owned {
            if self.call.is_none() {
                times.push(o.next_renew);
            }
            match o.added_at {
                Some(at) if self.address == Address::Added => {
                    times.push(o.confirmed.saturating_add(nanos(c.fence_after())));
                    if let Some(d) = c.announce_at.get(o.announced) {
                        times.push(at.saturating_add(nanos(*d)));
                    }
                }
                _ => times.push(o.add_at),
            }
        } else if self.call.is_none() {
            times.push(self.next_attempt);
            if let Some((h, since)) = &self.down_since {
                times.push(since.saturating_add(self.stagger_of(h)));
            }
        }
        times.into_iter().filter(|t| *t > self.last).min()
    }

    /// What this node sees now; the actions to carry out.
    pub fn tick(&mut self, now: Nanos, inputs: Inputs<'_>) -> Vec<Action> {
        if self.stopped {
            return Vec::new();
        }
        if self.learnt.as_ref().is_some_and(|l| l.stale != inputs.lease.version) {
            self.learnt = None;
        }
        self.view = Some(inputs.lease.clone());
        self.down.clone_from(inputs.down);
        self.healthy = inputs.healthy;
        self.last = now;
        let mut out = Vec::new();
        self.decide(now, &mut out);
        out
    }

    /// The call asked for last came to `outcome`; the actions to carry out.
    /// A result when no call is outstanding is ignored.
    pub fn call_done(&mut self, now: Nanos, outcome: Outcome) -> Vec<Action> {
        let Some(p) = self.call.take() else { return Vec::new() };
        if self.stopped {
            return Vec::new();
        }
        self.last = now;
        let mut out = Vec::new();
        let retry = now.saturating_add(nanos(self.config.retry_interval));
        match outcome {
            Outcome::Unreachable => match &mut self.owned {
                Some(o) if p.call == Call::Renew => o.next_renew = retry,
                _ => self.next_attempt = retry,
            },
            Outcome::Won { .. } if p.call == Call::Release => self.learn(&p, None),
            Outcome::Won { version } => {
                self.learn(&p, Some(self.node.clone()));
                let synced = version.is_some() && self.view.as_ref().map(|v| &v.version) == version.as_ref();
                let next_renew = p.sent.saturating_add(nanos(self.config.renew_interval));
                match &mut self.owned {
                    Some(o) => {
                        o.confirmed = p.sent;
                        o.synced = synced;
                        o.version = version;
                        o.decided_on.clone_from(&p.view_version);
                        // a renewal sent before the owner lost quorum proves
                        // nothing about now: renew again at once (rule 9a)
                        o.next_renew = if o.cut_off_since.is_some_and(|t| p.sent < t) { now } else { next_renew };
                    }
                    None => {
                        let settle = if p.settle { nanos(self.config.settle) } else { 0 };
                        self.owned = Some(Owned {
                            confirmed: p.sent,
                            version,
                            synced,
                            add_at: now.saturating_add(settle),
                            added_at: None,
                            announced: 0,
                            next_renew,
                            cut_off_since: None,
                            decided_on: p.view_version.clone(),
                        });
                    }
                }
            }
            Outcome::Lost { holder } => {
                self.learn(&p, holder.clone());
                if self.owned.is_some() {
                    self.depose(holder.as_deref(), &mut out);
                }
                self.next_attempt = retry;
            }
        }
        self.decide(now, &mut out);
        out
    }

    /// The agent stops (rule 14); the machine is inert afterwards.
    pub fn shutdown(&mut self, how: Shutdown) -> Vec<Action> {
        if self.stopped {
            return Vec::new();
        }
        self.stopped = true;
        let mut out = Vec::new();
        if how == Shutdown::Withdraw {
            if self.address != Address::Absent {
                out.push(Action::RemoveAddress);
                self.address = Address::Absent;
            }
            if self.owned.take().is_some() || self.holder().as_deref() == Some(&self.node) {
                out.push(Action::Release);
            }
        }
        out
    }

    /// Records what call `p` taught (rule terms: the view corrected).
    fn learn(&mut self, p: &Pending, holder: Option<String>) {
        if self.view.as_ref().is_some_and(|v| v.version == p.view_version) {
            self.learnt = Some(Learnt { stale: p.view_version.clone(), holder });
        }
    }

    /// The holder of the view, corrected by what calls taught.
    fn holder(&self) -> Option<String> {
        match &self.learnt {
            Some(l) => l.holder.clone(),
            None => self.view.as_ref().and_then(|v| v.holder.clone()),
        }
    }

    /// Whether the (corrected) view's Lease is expired.
    fn expired(&self) -> bool {
        self.learnt.is_none() && self.view.as_ref().is_some_and(|v| v.expired)
    }

    /// Whether this node sees a strict majority of the candidates live
    /// (itself included), or there are at most two (rule 5).
    fn quorum(&self) -> bool {
        let n = self.order.len();
        let down = self.order.iter().filter(|c| **c != self.node && self.down.contains(*c)).count();
        n <= 2 || (n - down) * 2 > n
    }

    fn stagger_of(&self, holder: &str) -> Nanos {
        let r = u64::try_from(self.rank(holder)).unwrap_or(u64::MAX);
        nanos(self.config.stagger).saturating_mul(r)
    }

    /// Rules 6 and 10: the owner lost the Lease to `holder`.
    fn depose(&mut self, holder: Option<&str>, out: &mut Vec<Action>) {
        self.owned = None;
        if self.address != Address::Absent {
            out.push(Action::RemoveAddress);
            self.address = Address::Absent;
        }
        if let Some(x) = holder
            && self.down.contains(x)
        {
            self.deposed_by = Some(x.to_string());
        }
    }

    fn send(&mut self, now: Nanos, call: Call, settle: bool, out: &mut Vec<Action>, action: Action) {
        let view_version = self.view.as_ref().map(|v| v.version.clone()).unwrap_or_default();
        self.call = Some(Pending { call, sent: now, view_version, settle });
        out.push(action);
    }

    fn decide(&mut self, now: Nanos, out: &mut Vec<Action>) {
        if self.view.is_none() {
            return;
        }
        let holder = self.holder();
        let other = holder.clone().filter(|h| *h != self.node);
        if self.deposed_by.as_ref().is_some_and(|x| !self.down.contains(x)) {
            self.deposed_by = None;
        }
        match &other {
            Some(x) if self.down.contains(x) => {
                if self.down_since.as_ref().is_none_or(|(h, _)| h != x) {
                    self.down_since = Some((x.clone(), now));
                }
            }
            _ => self.down_since = None,
        }
        self.decide_owner(now, out);
        if self.owned.is_none() {
            self.decide_other(now, holder, other, out);
        }
        let believed = if self.owned.is_some() { Some(self.node.clone()) } else { self.holder() };
        if self.reported.as_ref() != Some(&believed) {
            self.reported = Some(believed.clone());
            out.push(Action::OwnerChanged(believed));
        }
    }

    /// Rules 8–11, while this node owns the IP.
    fn decide_owner(&mut self, now: Nanos, out: &mut Vec<Action>) {
        let quorum = self.quorum();
        let Some(o) = &mut self.owned else { return };
        let Some(view) = &self.view else { return };
        if o.version.as_ref() == Some(&view.version) {
            o.synced = true;
        }
        let usurper = view.holder.clone().filter(|h| *h != self.node && o.synced);
        if let Some(x) = usurper {
            self.depose(Some(&x), out);
            return;
        }
        // another holder in a view that has not shown this node's own write
        // (the watch moved past it between two ticks): ask now rather than
        // at the next renewal — a `Lost` deposes at once (rule 10)
        if view.holder.as_ref().is_some_and(|h| *h != self.node) && !o.synced && view.version != o.decided_on {
            o.next_renew = o.next_renew.min(now);
        }
        if !self.healthy {
            self.depose(None, out);
            return;
        }
        let c = &self.config;
        match (quorum, o.cut_off_since) {
            (false, None) => {
                o.cut_off_since = Some(now);
                o.next_renew = now;
            }
            (true, Some(_)) => o.cut_off_since = None,
            _ => {}
        }
        let cut_off = o.cut_off_since.is_some_and(|t| o.confirmed < t);
        let fence = o.confirmed.saturating_add(nanos(c.fence_after()));
        if now >= fence || cut_off {
            if self.address != Address::Absent {
                out.push(Action::RemoveAddress);
                self.address = Address::Absent;
            }
        } else if now >= o.add_at && self.address != Address::Added {
            out.push(Action::AddAddress);
            self.address = Address::Added;
            o.added_at = Some(now);
            o.announced = 0;
        }
        if let Some(at) = o.added_at
            && self.address == Address::Added
        {
            let due = c.announce_at.iter().filter(|d| now >= at.saturating_add(nanos(**d))).count();
            if due > o.announced {
                o.announced = due;
                out.push(Action::Announce);
            }
        }
        if self.call.is_none() && now >= o.next_renew {
            self.send(now, Call::Renew, false, out, Action::Renew);
        }
    }

    /// Rules 2–7, 11 and 12, while this node does not own the IP.
    fn decide_other(&mut self, now: Nanos, holder: Option<String>, other: Option<String>, out: &mut Vec<Action>) {
        let mine = holder.as_deref() == Some(&self.node);
        if self.address != Address::Absent && !(mine && self.healthy) {
            out.push(Action::RemoveAddress);
            self.address = Address::Absent;
        }
        if self.call.is_some() || now < self.next_attempt {
            return;
        }
        if !self.healthy {
            if mine {
                self.send(now, Call::Release, false, out, Action::Release);
            }
            return;
        }
        let if_free = Action::Acquire { how: Acquire::IfFree, over: None };
        match other {
            None => self.send(now, Call::Acquire(Acquire::IfFree), false, out, if_free),
            Some(x) if !self.order.contains(&x) => {
                if self.expired() {
                    self.send(now, Call::Acquire(Acquire::IfFree), false, out, if_free);
                }
            }
            Some(x)
                if self.down.contains(&x)
                    && self.deposed_by.as_ref() != Some(&x)
                    && (self.quorum() || self.expired()) =>
            {
                let since = self.down_since.as_ref().map_or(now, |(_, t)| *t);
                if now >= since.saturating_add(self.stagger_of(&x)) {
                    let settle = !self.expired();
                    let action = Action::Acquire { how: Acquire::Preempt, over: Some(x) };
                    self.send(now, Call::Acquire(Acquire::Preempt), settle, out, action);
                }
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    const NODES: [&str; 3] = ["gw-a", "gw-b", "gw-c"];

    fn ms(n: u64) -> Nanos {
        n * 1_000_000
    }

    fn candidates() -> Vec<String> {
        NODES.iter().map(|n| (*n).to_string()).collect()
    }

    fn machine(node: &str) -> Float {
        Float::new(node, IP, &candidates(), Config::default())
    }

    fn view(holder: Option<&str>, expired: bool, version: &str) -> LeaseView {
        LeaseView { holder: holder.map(str::to_string), expired, version: version.into() }
    }

    fn down(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| (*n).to_string()).collect()
    }

    fn tick(m: &mut Float, now: Nanos, v: &LeaseView, d: &[&str], healthy: bool) -> Vec<Action> {
        m.tick(now, Inputs { lease: v, down: &down(d), healthy })
    }

    fn won(version: &str) -> Outcome {
        Outcome::Won { version: Some(version.into()) }
    }

    fn if_free() -> Action {
        Action::Acquire { how: Acquire::IfFree, over: None }
    }

    fn preempt(x: &str) -> Action {
        Action::Acquire { how: Acquire::Preempt, over: Some(x.into()) }
    }

    fn owner(x: Option<&str>) -> Action {
        Action::OwnerChanged(x.map(str::to_string))
    }

    /// `node`'s machine owning the IP since `now` (won over a free Lease,
    /// address added, first announcement made), the view at version "2".
    fn owning(node: &str, now: Nanos) -> (Float, LeaseView) {
        let mut m = machine(node);
        let free = view(None, false, "1");
        assert_eq!(tick(&mut m, now, &free, &[], true), [Action::RemoveAddress, if_free(), owner(None)]);
        let acts = m.call_done(now, won("2"));
        assert_eq!(acts, [Action::AddAddress, Action::Announce, owner(Some(node))]);
        let mine = view(Some(node), false, "2");
        assert_eq!(tick(&mut m, now, &mine, &[], true), []);
        (m, mine)
    }

    /// The candidate of rank 0 when `holder` holds the IP and is down.
    fn rank0_against(holder: &str) -> String {
        rendezvous_order(IP, &candidates()).into_iter().find(|n| n != holder).expect("another candidate")
    }

    #[test]
    fn defaults_follow_the_lease_and_keep_renewals_well_inside_it() {
        let c = Config::default();
        assert_eq!(c.lease_duration, LeaseConfig::default().duration);
        assert!(c.renew_interval * 3 <= c.fence_after(), "three renewals before the self-fence");
        assert_eq!(c.fence_margin, c.lease_duration / 4);
        assert_eq!(c.fence_after(), c.lease_duration - c.lease_duration / 4);
        // the settle covers the probe phases of two nodes (one interval
        // apart at most) and a watch delivery
        assert_eq!(c.settle, Duration::from_millis(200));
        assert!(c.settle >= super::super::liveness::Config::default().interval * 2);
        assert_eq!(c.announce_at.first(), Some(&Duration::ZERO), "the first announcement at once");
        assert!(c.announce_at.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn nothing_is_decided_before_the_first_tick() {
        let mut m = machine("gw-a");
        assert_eq!(m.call_done(0, won("1")), [], "no call outstanding: ignored");
        assert_eq!(m.next_wakeup(), None, "only a tick starts it");
        assert!(!m.is_owner() && m.outstanding().is_none());
    }

    #[test]
    fn rule_2_a_free_lease_is_acquired_if_free_by_every_healthy_candidate() {
        for node in NODES {
            let mut m = machine(node);
            let acts = tick(&mut m, 0, &view(None, false, "1"), &[], true);
            assert!(acts.contains(&if_free()), "{node}: {acts:?}");
            assert_eq!(m.outstanding(), Some(Call::Acquire(Acquire::IfFree)));
            // one call at a time
            assert!(!tick(&mut m, ms(500), &view(None, false, "1"), &[], true).contains(&if_free()));
        }
        // an unhealthy candidate does not
        let mut m = machine("gw-a");
        assert_eq!(tick(&mut m, 0, &view(None, false, "1"), &[], false), [Action::RemoveAddress, owner(None)]);
        // a Lease of a node that is no candidate is free once expired
        let mut m = machine("gw-a");
        assert!(!tick(&mut m, 0, &view(Some("gone"), false, "1"), &[], true).contains(&if_free()));
        assert_eq!(tick(&mut m, ms(10), &view(Some("gone"), true, "1"), &[], true), [if_free()]);
    }

    #[test]
    fn rule_1_a_lost_or_unanswered_acquisition_is_retried_after_the_retry_interval() {
        let c = Config::default();
        let retry = nanos(c.retry_interval);
        let mut m = machine("gw-a");
        let free = view(None, false, "1");
        tick(&mut m, 0, &free, &[], true);
        assert_eq!(m.call_done(ms(20), Outcome::Unreachable), []);
        assert_eq!(tick(&mut m, ms(20) + retry - 1, &free, &[], true), []);
        assert_eq!(tick(&mut m, ms(20) + retry, &free, &[], true), [if_free()]);
        // lost to gw-b (live): the result corrects the view until it changes
        assert_eq!(m.call_done(ms(300), Outcome::Lost { holder: Some("gw-b".into()) }), [owner(Some("gw-b"))]);
        assert_eq!(tick(&mut m, ms(300) + 2 * retry, &free, &[], true), [], "the stale free view is superseded");
        assert_eq!(tick(&mut m, ms(900), &view(None, false, "4"), &[], true), [if_free(), owner(None)], "a newer view");
    }

    #[test]
    fn rule_8_the_owner_adds_then_announces_on_schedule_and_renews() {
        let c = Config::default();
        let (mut m, mine) = owning("gw-a", 0);
        assert!(m.is_owner() && m.address_added());
        let mut announced = vec![0];
        let mut renewals = Vec::new();
        for t in (10..3000).step_by(10).map(ms) {
            for a in tick(&mut m, t, &mine, &[], true) {
                match a {
                    Action::Announce => announced.push(t),
                    Action::Renew => {
                        renewals.push(t);
                        assert_eq!(m.call_done(t, won("2")), []);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        let want: Vec<Nanos> = c.announce_at.iter().map(|d| nanos(*d)).collect();
        assert_eq!(announced, want);
        let every: Vec<Nanos> = (1..=5).map(|i| i * nanos(c.renew_interval)).collect();
        assert_eq!(renewals, every);
    }

    #[test]
    fn rule_9_an_owner_that_cannot_renew_removes_the_address_before_the_lease_expires() {
        let c = Config::default();
        let (mut m, mine) = owning("gw-a", 0);
        let fence = nanos(c.fence_after());
        let mut removed = None;
        for t in (10..3000).step_by(10).map(ms) {
            for a in tick(&mut m, t, &mine, &[], true) {
                match a {
                    Action::Renew => assert_eq!(m.call_done(t + nanos(c.call_timeout), Outcome::Unreachable), []),
                    Action::RemoveAddress => removed = removed.or(Some(t)),
                    Action::Announce => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(removed, Some(fence), "at the last successful write (the acquisition at 0) + fence_after");
        assert!(m.is_owner() && !m.address_added(), "still renewing");
        assert!(fence < nanos(c.lease_duration));
        // a renewal that succeeds (nobody wrote meanwhile) adds it again
        let t = m.next_wakeup().expect("a renewal is due");
        let acts = tick(&mut m, t, &mine, &[], true);
        assert_eq!(acts, [Action::Renew]);
        assert_eq!(m.call_done(t + ms(5), won("9")), [Action::AddAddress, Action::Announce]);
    }

    #[test]
    fn rule_10_a_lost_renewal_removes_the_address_first() {
        let (mut m, _) = owning("gw-a", 0);
        let t = nanos(Config::default().renew_interval);
        assert!(tick(&mut m, t, &view(Some("gw-a"), false, "2"), &[], true).contains(&Action::Renew));
        let acts = m.call_done(t + ms(5), Outcome::Lost { holder: Some("gw-b".into()) });
        assert_eq!(acts, [Action::RemoveAddress, owner(Some("gw-b"))]);
        assert!(!m.is_owner() && !m.address_added());
        assert_eq!(m.deposed_by(), None, "gw-b was live: no deposed rule");
    }

    #[test]
    fn rule_10_a_view_with_another_holder_deposes_only_once_it_has_shown_the_own_write() {
        let mut m = machine("gw-a");
        tick(&mut m, 0, &view(None, false, "1"), &[], true);
        m.call_done(ms(5), won("2"));
        // the watch has not caught up: an older write by gw-b is not
        // trusted, but the owner asks at once instead of at its next renewal
        assert_eq!(tick(&mut m, ms(10), &view(Some("gw-b"), false, "1b"), &[], true), [Action::Renew]);
        assert!(m.address_added());
        // it catches up; then gw-b's write is newer
        assert_eq!(tick(&mut m, ms(20), &view(Some("gw-a"), false, "2"), &[], true), []);
        let acts = tick(&mut m, ms(30), &view(Some("gw-b"), false, "3"), &["gw-b"], true);
        assert_eq!(acts, [Action::RemoveAddress, owner(Some("gw-b"))]);
        assert_eq!(m.deposed_by(), Some("gw-b"), "lost to a node it saw down");
    }

    #[test]
    fn rule_4_and_7_a_live_holder_keeps_the_ip_even_expired() {
        let mut m = machine("gw-b");
        for (t, expired) in [(0, false), (ms(5000), true)] {
            let acts = tick(&mut m, t, &view(Some("gw-a"), expired, "5"), &[], true);
            assert!(acts.iter().all(|a| !matches!(a, Action::Acquire { .. })), "{acts:?}");
        }
        // down, but this node is unhealthy
        assert!(tick(&mut m, ms(6000), &view(Some("gw-a"), true, "5"), &["gw-a"], false).is_empty());
    }

    #[test]
    fn rule_5_ranks_wait_their_stagger_and_give_up_when_someone_took_it() {
        let c = Config::default();
        let order = rendezvous_order(IP, &candidates());
        let others: Vec<&String> = order.iter().filter(|n| *n != "gw-a").collect();
        let (first, second) = (others[0].as_str(), others[1].as_str());
        let held = view(Some("gw-a"), false, "5");
        let mut m0 = machine(first);
        let mut m1 = machine(second);
        assert_eq!((m0.rank("gw-a"), m1.rank("gw-a")), (0, 1));
        tick(&mut m0, 0, &held, &[], true);
        tick(&mut m1, 0, &held, &[], true);
        let t = ms(1000);
        assert_eq!(tick(&mut m0, t, &held, &["gw-a"], true), [preempt("gw-a")], "rank 0 at once");
        assert_eq!(tick(&mut m1, t, &held, &["gw-a"], true), []);
        let stagger = nanos(c.stagger);
        assert_eq!(m1.next_wakeup(), Some(t + stagger));
        assert_eq!(tick(&mut m1, t + stagger - 1, &held, &["gw-a"], true), []);
        assert_eq!(tick(&mut m1, t + stagger, &held, &["gw-a"], true), [preempt("gw-a")]);
        // rank 1 again, but rank 0 took it meanwhile: nothing
        let mut m1 = machine(second);
        tick(&mut m1, t, &held, &["gw-a"], true);
        let taken = view(Some(first), false, "6");
        assert_eq!(tick(&mut m1, t + stagger, &taken, &["gw-a"], true), [owner(Some(first))]);
        // a down node does not count in the ranks
        let m = machine(second);
        let mut m = m;
        tick(&mut m, 0, &held, &["gw-a", first], true);
        assert_eq!(m.rank("gw-a"), 0);
    }

    #[test]
    fn rule_5_a_node_in_the_minority_preempts_only_an_expired_lease() {
        let mut m = machine("gw-b");
        let alone = ["gw-a", "gw-c"];
        let acts = tick(&mut m, 0, &view(Some("gw-a"), false, "5"), &alone, true);
        assert!(!acts.contains(&preempt("gw-a")), "{acts:?}");
        assert_eq!(tick(&mut m, ms(2000), &view(Some("gw-a"), true, "5"), &alone, true), [preempt("gw-a")]);
        // in the minority it owns only after a renewal sent since (rule 9a)
        assert_eq!(m.call_done(ms(2005), won("6"))[0], Action::Renew, "a fresh renewal first");
        assert_eq!(m.call_done(ms(2010), won("7"))[0], Action::AddAddress, "expired: no settling");
        // two candidates: no majority to be had, the probes decide
        let two: Vec<String> = candidates()[..2].to_vec();
        let mut m = Float::new("gw-b", IP, &two, Config::default());
        let acts = tick(&mut m, 0, &view(Some("gw-a"), false, "5"), &["gw-a"], true);
        assert!(acts.contains(&preempt("gw-a")), "{acts:?}");
    }

    #[test]
    fn rule_6_a_deposed_node_waits_to_see_the_new_holder_live_again() {
        let (mut m, _) = owning("gw-a", 0);
        let t = nanos(Config::default().renew_interval);
        tick(&mut m, t, &view(Some("gw-a"), false, "2"), &["gw-b"], true);
        let acts = m.call_done(t + ms(5), Outcome::Lost { holder: Some("gw-b".into()) });
        assert_eq!(acts[0], Action::RemoveAddress);
        assert_eq!(m.deposed_by(), Some("gw-b"));
        let theirs = view(Some("gw-b"), false, "3");
        for s in 1..100 {
            let acts = tick(&mut m, t + ms(10 * s), &theirs, &["gw-b"], true);
            assert!(!acts.contains(&preempt("gw-b")), "{acts:?}");
        }
        // seen live once: the rule ends; down again, it may preempt
        tick(&mut m, ms(5000), &theirs, &[], true);
        assert_eq!(m.deposed_by(), None);
        let mut acts = tick(&mut m, ms(6000), &theirs, &["gw-b"], true);
        if let Some(t) = m.next_wakeup() {
            acts.extend(tick(&mut m, t, &theirs, &["gw-b"], true)); // its stagger
        }
        assert_eq!(acts, [preempt("gw-b")]);
    }

    #[test]
    fn rule_8_after_preempting_an_unexpired_lease_the_address_waits_to_settle() {
        let c = Config::default();
        let me = rank0_against("gw-a");
        let mut m = machine(&me);
        let held = view(Some("gw-a"), false, "5");
        let first = [Action::RemoveAddress, preempt("gw-a"), owner(Some("gw-a"))];
        assert_eq!(tick(&mut m, 0, &held, &["gw-a"], true), first);
        assert_eq!(m.call_done(ms(5), won("6")), [owner(Some(&me))], "no address yet");
        let add_at = ms(5) + nanos(c.settle);
        assert!(add_at < nanos(c.renew_interval), "the address comes before the first renewal");
        assert_eq!(m.next_wakeup(), Some(add_at));
        let mine = view(Some(&me), false, "6");
        assert_eq!(tick(&mut m, add_at - 1, &mine, &["gw-a"], true), [], "still no address");
        assert_eq!(tick(&mut m, add_at, &mine, &["gw-a"], true)[..2], [Action::AddAddress, Action::Announce]);
        // an expired Lease needs no settling: its holder has fenced itself
        let mut m = machine(&me);
        assert_eq!(tick(&mut m, 0, &view(Some("gw-a"), true, "5"), &["gw-a"], true), first);
        assert_eq!(m.call_done(ms(5), won("6")), [Action::AddAddress, Action::Announce, owner(Some(&me))]);
    }

    #[test]
    fn rule_11_an_unhealthy_owner_removes_the_address_and_releases() {
        let (mut m, mine) = owning("gw-a", 0);
        let acts = tick(&mut m, ms(100), &mine, &[], false);
        assert_eq!(acts, [Action::RemoveAddress, Action::Release]);
        assert!(!m.is_owner());
        // unanswered: retried after the retry interval
        assert_eq!(m.call_done(ms(150), Outcome::Unreachable), []);
        let retry = ms(150) + nanos(Config::default().retry_interval);
        assert_eq!(tick(&mut m, retry - 1, &mine, &[], false), []);
        assert_eq!(tick(&mut m, retry, &mine, &[], false), [Action::Release]);
        assert_eq!(m.call_done(retry + ms(5), Outcome::Won { version: None }), [owner(None)]);
        // healthy again, the Lease free: a candidate like any other
        assert_eq!(tick(&mut m, ms(2000), &view(None, false, "7"), &[], true), [if_free()]);
    }

    #[test]
    fn rule_11_a_win_while_unhealthy_is_released_at_once() {
        let mut m = machine("gw-a");
        tick(&mut m, 0, &view(None, false, "1"), &[], true);
        assert_eq!(
            tick(&mut m, ms(5), &view(None, false, "1"), &[], false),
            [],
            "the stray address went at the first tick"
        );
        assert_eq!(m.call_done(ms(10), won("2")), [Action::Release, owner(Some("gw-a"))]);
        assert!(!m.address_added());
    }

    #[test]
    fn rule_3_a_restarted_agent_re_adopts_its_lease_and_keeps_the_address() {
        let mut m = machine("gw-a");
        let mine = view(Some("gw-a"), true, "5");
        assert_eq!(tick(&mut m, 0, &mine, &[], true), [if_free(), owner(Some("gw-a"))], "no RemoveAddress");
        assert_eq!(m.call_done(ms(5), won("6")), [Action::AddAddress, Action::Announce]);
        assert!(m.is_owner());
    }

    #[test]
    fn rule_12_a_new_machine_removes_a_stray_address() {
        let mut m = machine("gw-a");
        assert_eq!(
            tick(&mut m, 0, &view(Some("gw-b"), false, "5"), &[], true),
            [Action::RemoveAddress, owner(Some("gw-b"))]
        );
        assert_eq!(tick(&mut m, ms(10), &view(Some("gw-b"), false, "5"), &[], true), [], "once");
    }

    #[test]
    fn rule_14_shutdown_keeps_or_withdraws_then_the_machine_is_inert() {
        let (mut m, mine) = owning("gw-a", 0);
        assert_eq!(m.shutdown(Shutdown::Keep), []);
        assert_eq!(tick(&mut m, ms(5000), &mine, &["gw-b"], false), []);
        assert_eq!(m.shutdown(Shutdown::Withdraw), [], "already stopped");
        assert_eq!(m.next_wakeup(), None);
        let (mut m, _) = owning("gw-a", 0);
        assert_eq!(m.shutdown(Shutdown::Withdraw), [Action::RemoveAddress, Action::Release]);
        assert_eq!(m.call_done(ms(5), won("3")), []);
    }

    #[test]
    fn outcomes_of_lease_calls() {
        let lost = LeaseError::Lost {
            namespace: "ns".into(),
            lease: "l".into(),
            node: "gw-a".into(),
            holder: Some("gw-b".into()),
        };
        assert_eq!(Outcome::of_renewal(&Err(lost)), Outcome::Lost { holder: Some("gw-b".into()) });
        let timed_out =
            LeaseError::TimedOut { namespace: "ns".into(), lease: "l".into(), after: Duration::from_millis(1) };
        assert_eq!(Outcome::of_release(&Err(timed_out)), Outcome::Unreachable);
        assert_eq!(Outcome::of_release(&Ok(())), Outcome::Won { version: None });
        assert_eq!(Outcome::of_acquisition(&Ok(Acquisition::Lost { current: None })), Outcome::Lost { holder: None });
    }

    #[test]
    fn rendezvous_order_is_deterministic_and_per_ip() {
        let a = rendezvous_order(IP, &candidates());
        let mut shuffled = candidates();
        shuffled.reverse();
        shuffled.push("gw-a".into());
        assert_eq!(rendezvous_order(IP, &shuffled), a, "input order and duplicates do not matter");
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, candidates());
        // some other IP puts another node first (the load spreads)
        let firsts: BTreeSet<String> = (1..=50u8)
            .map(|i| rendezvous_order(IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)), &candidates())[0].clone())
            .collect();
        assert_eq!(firsts.len(), NODES.len());
    }

    /// A deterministic simulation: three candidates, a Lease store with
    /// optimistic concurrency, a link matrix for probes, and a 10 ms clock.
    mod sim {
        use super::*;
        use crate::ha::liveness::{self, Liveness, Reply};

        pub const DT: Nanos = 10_000_000;
        /// Every Lease call's round trip.
        pub const LATENCY: Nanos = 20_000_000;

        #[derive(Debug, Clone)]
        struct Stored {
            holder: Option<String>,
            /// When the holder last wrote it.
            renewed: Nanos,
            version: u64,
        }

        #[derive(Debug)]
        struct InFlight {
            node: usize,
            /// The agent's incarnation that sent it.
            generation: u32,
            call: Call,
            /// What the call read when sent.
            read: Option<Stored>,
            done_at: Nanos,
            reachable: bool,
        }

        pub struct Node {
            pub name: String,
            pub machine: Option<Float>,
            generation: u32,
            pub datapath: bool,
            pub reach_store: bool,
            pub address: bool,
            probes: Vec<(Liveness, u32, Option<Reply>)>,
            pub adds: Vec<Nanos>,
            pub removes: Vec<Nanos>,
        }

        pub struct World {
            pub config: Config,
            pub probe: liveness::Config,
            pub nodes: Vec<Node>,
            /// `links[a][b]`: a's probes to b are answered (if b's datapath runs).
            pub links: Vec<Vec<bool>>,
            lease: Option<Stored>,
            next_version: u64,
            calls: Vec<InFlight>,
            pub now: Nanos,
            /// Holder changes in the store: (when, new holder).
            pub changes: Vec<(Nanos, Option<String>)>,
            /// Time with two or more nodes having the address, and the
            /// intervals of it.
            pub dual: Vec<(Nanos, Nanos)>,
            dual_since: Option<Nanos>,
        }

        impl World {
            pub fn new(config: Config) -> World {
                let probe = liveness::Config::default();
                let nodes: Vec<Node> = NODES
                    .iter()
                    .map(|n| Node {
                        name: (*n).to_string(),
                        machine: None,
                        generation: 0,
                        datapath: true,
                        reach_store: true,
                        address: false,
                        probes: Vec::new(),
                        adds: Vec::new(),
                        removes: Vec::new(),
                    })
                    .collect();
                let n = nodes.len();
                let mut w = World {
                    config,
                    probe,
                    nodes,
                    links: vec![vec![true; n]; n],
                    lease: None,
                    next_version: 1,
                    calls: Vec::new(),
                    now: 0,
                    changes: Vec::new(),
                    dual: Vec::new(),
                    dual_since: None,
                };
                for i in 0..n {
                    w.start_agent(i);
                }
                w
            }

            /// A new agent (machine and prober) on node `i`.
            pub fn start_agent(&mut self, i: usize) {
                let node = &mut self.nodes[i];
                node.generation += 1;
                node.machine = Some(Float::new(&node.name, IP, &candidates(), self.config.clone()));
                let fresh = Liveness::new(&self.probe);
                node.probes = (0..NODES.len()).map(|_| (fresh.clone(), 0, None)).collect();
                for p in &mut node.probes {
                    p.0.sent(0);
                }
            }

            /// `kill -9` of node `i`'s agent: the datapath and the address stay.
            pub fn kill_agent(&mut self, i: usize) {
                self.nodes[i].machine = None;
            }

            /// Node `i` crashes: agent, datapath, address and links gone.
            pub fn crash(&mut self, i: usize) {
                self.kill_agent(i);
                self.nodes[i].datapath = false;
                self.set_address(i, false);
                for j in 0..self.nodes.len() {
                    self.links[i][j] = false;
                    self.links[j][i] = false;
                }
            }

            /// Cuts (or heals) probes between the sets `a` and `b`, both ways.
            pub fn partition(&mut self, a: &[usize], b: &[usize], cut: bool) {
                for &i in a {
                    for &j in b {
                        self.links[i][j] = !cut;
                        self.links[j][i] = !cut;
                    }
                }
            }

            pub fn holder(&self) -> Option<String> {
                self.lease.as_ref().and_then(|l| l.holder.clone())
            }

            pub fn with_address(&self) -> Vec<usize> {
                (0..self.nodes.len()).filter(|i| self.nodes[*i].address).collect()
            }

            fn set_address(&mut self, i: usize, on: bool) {
                let node = &mut self.nodes[i];
                if node.address != on {
                    if on { node.adds.push(self.now) } else { node.removes.push(self.now) }
                }
                node.address = on;
            }

            fn view(&self) -> LeaseView {
                let duration = nanos(self.config.lease_duration);
                self.lease.as_ref().map_or_else(LeaseView::default, |l| LeaseView {
                    holder: l.holder.clone(),
                    expired: l.renewed + duration <= self.now,
                    version: l.version.to_string(),
                })
            }

            fn write(&mut self, node: &str, holder: Option<String>) -> String {
                if self.holder() != holder {
                    self.changes.push((self.now, holder.clone()));
                }
                let version = self.next_version;
                self.next_version += 1;
                let _ = node;
                self.lease = Some(Stored { holder, renewed: self.now, version });
                version.to_string()
            }

            /// The store completes a call as `egret_kube::lease` does: the
            /// read when sent, the write (carrying the version read) now.
            fn complete(&mut self, c: &InFlight) -> Outcome {
                if !c.reachable {
                    return Outcome::Unreachable;
                }
                let me = self.nodes[c.node].name.clone();
                let current = self.lease.clone();
                let unchanged = current.as_ref().map(|l| l.version) == c.read.as_ref().map(|l| l.version);
                let lost = |cur: &Option<Stored>| Outcome::Lost { holder: cur.as_ref().and_then(|l| l.holder.clone()) };
                let mine = |cur: &Option<Stored>| cur.as_ref().is_some_and(|l| l.holder.as_deref() == Some(&me));
                match c.call {
                    Call::Acquire(how) => {
                        let free = c.read.as_ref().is_none_or(|l| {
                            l.holder.is_none() || l.renewed + nanos(self.config.lease_duration) <= self.now
                        });
                        if how == Acquire::IfFree && !free && !mine(&c.read) {
                            return lost(&current);
                        }
                        if unchanged || mine(&current) {
                            Outcome::Won { version: Some(self.write(&me, Some(me.clone()))) }
                        } else {
                            lost(&current)
                        }
                    }
                    Call::Renew if mine(&current) => Outcome::Won { version: Some(self.write(&me, Some(me.clone()))) },
                    Call::Release if mine(&current) => {
                        self.write(&me, None);
                        Outcome::Won { version: None }
                    }
                    Call::Renew | Call::Release => lost(&current),
                }
            }

            fn apply(&mut self, i: usize, actions: Vec<Action>) {
                for a in actions {
                    match a {
                        Action::AddAddress => self.set_address(i, true),
                        Action::RemoveAddress => self.set_address(i, false),
                        Action::Announce | Action::OwnerChanged(_) => {}
                        Action::Acquire { how, .. } => self.send(i, Call::Acquire(how)),
                        Action::Renew => self.send(i, Call::Renew),
                        Action::Release => self.send(i, Call::Release),
                    }
                }
            }

            fn send(&mut self, i: usize, call: Call) {
                let reachable = self.nodes[i].reach_store;
                let after = if reachable { LATENCY } else { nanos(self.config.call_timeout) };
                self.calls.push(InFlight {
                    node: i,
                    generation: self.nodes[i].generation,
                    call,
                    read: self.lease.clone(),
                    done_at: self.now + after,
                    reachable,
                });
            }

            fn probe_round(&mut self) {
                let n = self.nodes.len();
                for a in 0..n {
                    for b in 0..n {
                        let answered = a != b && self.links[a][b] && self.nodes[b].datapath;
                        let (l, seq, newest) = &mut self.nodes[a].probes[b];
                        if answered {
                            *newest = Some(Reply { seq: *seq, rtt: None });
                        }
                        l.tick(*newest);
                        *seq = seq.wrapping_add(1);
                        l.sent(*seq);
                    }
                }
            }

            fn down_of(&self, i: usize) -> BTreeSet<String> {
                let node = &self.nodes[i];
                (0..self.nodes.len())
                    .filter(|j| *j != i && node.probes[*j].0.state().is_down())
                    .map(|j| self.nodes[j].name.clone())
                    .collect()
            }

            /// One step of the clock.
            pub fn step(&mut self) {
                let (due, later): (Vec<InFlight>, Vec<InFlight>) =
                    std::mem::take(&mut self.calls).into_iter().partition(|c| c.done_at <= self.now);
                self.calls = later;
                for c in due {
                    if self.nodes[c.node].generation != c.generation || self.nodes[c.node].machine.is_none() {
                        continue;
                    }
                    let outcome = self.complete(&c);
                    let now = self.now;
                    let acts =
                        self.nodes[c.node].machine.as_mut().map(|m| m.call_done(now, outcome)).unwrap_or_default();
                    self.apply(c.node, acts);
                }
                if self.now.is_multiple_of(nanos(self.probe.interval)) {
                    self.probe_round();
                }
                for i in 0..self.nodes.len() {
                    let view = self.view();
                    let down = self.down_of(i);
                    let healthy = self.nodes[i].datapath;
                    let now = self.now;
                    let Some(m) = self.nodes[i].machine.as_mut() else { continue };
                    let acts = m.tick(now, Inputs { lease: &view, down: &down, healthy });
                    self.apply(i, acts);
                }
                let two = self.with_address().len() >= 2;
                match (two, self.dual_since) {
                    (true, None) => self.dual_since = Some(self.now),
                    (false, Some(s)) => {
                        self.dual.push((s, self.now));
                        self.dual_since = None;
                    }
                    _ => {}
                }
                self.now += DT;
            }

            pub fn run_until(&mut self, t: Nanos) {
                while self.now < t {
                    self.step();
                }
            }

            /// Total time with two nodes having the address, up to now.
            pub fn dual_time(&self) -> Nanos {
                let open = self.dual_since.map_or(0, |s| self.now - s);
                self.dual.iter().map(|(a, b)| b - a).sum::<Nanos>() + open
            }

            /// The one node with the address, which must also hold the Lease.
            pub fn sole_owner(&self) -> usize {
                let with = self.with_address();
                assert_eq!(with.len(), 1, "exactly one node has the address at {} ms: {with:?}", self.now / 1_000_000);
                let o = with[0];
                assert_eq!(self.holder().as_deref(), Some(self.nodes[o].name.as_str()), "and holds the Lease");
                assert!(self.nodes[o].machine.as_ref().is_none_or(Float::is_owner));
                o
            }

            pub fn changes_since(&self, t: Nanos) -> Vec<(Nanos, Option<String>)> {
                self.changes.iter().filter(|(at, _)| *at >= t).cloned().collect()
            }
        }
    }

    use sim::{DT, LATENCY, World};

    /// A world whose IP has settled on one owner; that owner's index.
    fn settled(config: Config) -> (World, usize) {
        let mut w = World::new(config);
        w.run_until(ms(5000));
        let o = w.sole_owner();
        assert_eq!(w.changes.len(), 1, "one acquisition: {:?}", w.changes);
        (w, o)
    }

    /// Probes: the longest from a failure to "down" (the probe in flight
    /// when it happened may still have been answered, plus one tick).
    fn detection(w: &World) -> Nanos {
        (u64::from(w.probe.down_after_misses) + 1) * nanos(w.probe.interval) + DT
    }

    #[test]
    fn sim_owner_dies_and_exactly_one_new_owner_takes_over_in_time() {
        let (mut w, o) = settled(Config::default());
        let t0 = w.now;
        w.crash(o);
        w.run_until(t0 + ms(15_000));
        let n = w.sole_owner();
        assert_ne!(n, o);
        let changes = w.changes_since(t0);
        assert_eq!(changes.len(), 1, "one takeover, no race or ping-pong: {changes:?}");
        // rank 0 preempts when it sees the owner down: detection + one call
        let took = changes[0].0;
        assert!(took <= t0 + detection(&w) + LATENCY + DT, "took at +{} ms", (took - t0) / 1_000_000);
        // and adds the address once settled (the Lease was not expired)
        let added = *w.nodes[n].adds.last().expect("added");
        assert!(added <= took + nanos(w.config.settle) + DT);
        assert_eq!(w.dual_time(), 0);
    }

    #[test]
    fn sim_owner_and_another_die_and_the_survivor_takes_over_after_expiry() {
        let (mut w, o) = settled(Config::default());
        let other = (o + 1) % NODES.len();
        let t0 = w.now;
        w.crash(o);
        w.crash(other);
        w.run_until(t0 + ms(15_000));
        let n = w.sole_owner();
        assert!(n != o && n != other);
        let changes = w.changes_since(t0);
        assert_eq!(changes.len(), 1, "{changes:?}");
        // the owner's last renewal was at most a renew interval before the crash
        let expiry = t0 + nanos(w.config.lease_duration);
        let took = changes[0].0;
        assert!(took >= expiry - nanos(w.config.renew_interval), "not before the Lease could expire");
        assert!(took <= expiry + LATENCY + DT, "took at +{} ms", (took - t0) / 1_000_000);
    }

    #[test]
    fn sim_owner_datapath_detached_releases_and_another_takes_over() {
        let (mut w, o) = settled(Config::default());
        let t0 = w.now;
        w.nodes[o].datapath = false; // the agent runs on
        w.run_until(t0 + ms(10_000));
        let n = w.sole_owner();
        assert_ne!(n, o);
        assert_eq!(w.nodes[o].removes.last(), Some(&t0), "removed at the first tick after");
        let changes = w.changes_since(t0);
        assert_eq!(changes.len(), 2, "released, then taken once: {changes:?}");
        assert_eq!(changes[0].1, None);
        assert!(changes[1].0 <= t0 + 2 * (LATENCY + DT), "a released Lease is taken without waiting for probes");
        assert_eq!(w.dual_time(), 0);
        // the datapath back: sticky, nothing moves
        w.nodes[o].datapath = true;
        let t1 = w.now;
        w.run_until(t1 + ms(10_000));
        assert_eq!(w.sole_owner(), n);
        assert!(w.changes_since(t1).is_empty());
    }

    /// The partition {isolated} | {the others}, everyone reaching the
    /// store, for 60 s, then healed for 10 s.
    fn partition(config: Config, isolate_owner: bool) -> World {
        let (mut w, o) = settled(config);
        let isolated = if isolate_owner { o } else { (o + 1) % NODES.len() };
        let others: Vec<usize> = (0..NODES.len()).filter(|i| *i != isolated).collect();
        let t0 = w.now;
        w.partition(&[isolated], &others, true);
        w.run_until(t0 + ms(60_000));
        let owner = w.sole_owner();
        let changes = w.changes_since(t0);
        // the isolated owner loses it once; an isolated candidate, in the
        // minority, takes nothing from a live owner (rule 5)
        assert_eq!(changes.len(), usize::from(isolate_owner), "no ping-pong: {changes:?}");
        w.partition(&[isolated], &others, false);
        let t1 = w.now;
        w.run_until(t1 + ms(10_000));
        assert_eq!(w.sole_owner(), owner, "healed: the owner stays (sticky)");
        assert!(w.changes_since(t1).is_empty());
        w
    }

    /// What the rules promise for a deposed owner that reaches the store:
    /// it learns within a renewal (plus its call and a tick); the new owner
    /// adds the address `settle` after its win.
    fn promised_dual(c: &Config) -> Nanos {
        (nanos(c.renew_interval) + LATENCY + DT).saturating_sub(nanos(c.settle))
    }

    #[test]
    fn sim_partition_isolating_the_owner_ends_with_one_owner() {
        for config in [Config::default(), Config { settle: Duration::ZERO, ..Config::default() }] {
            let w = partition(config.clone(), true);
            assert!(w.dual_time() <= promised_dual(&config), "dual {:?} with settle {:?}", w.dual, config.settle);
        }
    }

    #[test]
    fn sim_partition_isolating_a_candidate_ends_with_one_owner() {
        for config in [Config::default(), Config { settle: Duration::ZERO, ..Config::default() }] {
            let w = partition(config.clone(), false);
            assert!(w.dual_time() <= promised_dual(&config), "dual {:?} with settle {:?}", w.dual, config.settle);
        }
    }

    #[test]
    fn sim_owner_cut_from_everything_but_the_segment_overlaps_at_most_until_its_self_fence() {
        let (mut w, o) = settled(Config::default());
        let others: Vec<usize> = (0..NODES.len()).filter(|i| *i != o).collect();
        let t0 = w.now;
        w.partition(&[o], &others, true);
        w.nodes[o].reach_store = false;
        w.run_until(t0 + ms(10_000));
        let n = w.sole_owner();
        assert_ne!(n, o);
        assert_eq!(w.changes_since(t0).len(), 1);
        // the old owner's last write was before the takeover, so its fence
        // is at most fence_after after it; the new one adds settle after
        let c = &w.config;
        let promised = nanos(c.fence_after()).saturating_sub(nanos(c.settle));
        assert!(w.dual_time() <= promised, "dual {:?}", w.dual);
    }

    #[test]
    fn sim_agent_restart_of_the_owner_fails_nothing_over() {
        let (mut w, o) = settled(Config::default());
        let t0 = w.now;
        let removes = w.nodes[o].removes.len();
        w.kill_agent(o);
        // long enough for the Lease to expire
        w.run_until(t0 + 2 * nanos(w.config.lease_duration) + ms(1000));
        assert_eq!(w.sole_owner(), o, "nobody took the expired Lease of a live holder");
        w.start_agent(o);
        let t1 = w.now;
        w.run_until(t1 + ms(10_000));
        assert_eq!(w.sole_owner(), o);
        assert!(w.changes_since(t0).is_empty(), "the Lease never changed holder");
        assert_eq!(w.nodes[o].removes.len(), removes, "the address was never removed");
        assert!(w.nodes.iter().enumerate().all(|(i, n)| i == o || n.adds.is_empty()), "nobody else added it");
        assert!(w.nodes[o].machine.as_ref().is_some_and(Float::is_owner), "re-adopted");
    }

    #[test]
    fn sim_owner_cut_from_the_store_fences_itself_and_nobody_takes_over() {
        let (mut w, o) = settled(Config::default());
        let t0 = w.now;
        w.nodes[o].reach_store = false;
        w.run_until(t0 + ms(5000));
        assert!(w.with_address().is_empty(), "fenced: rule 9");
        let removed = *w.nodes[o].removes.last().expect("removed");
        assert!(removed < t0 + nanos(w.config.lease_duration), "before the Lease could expire");
        assert!(w.changes_since(t0).is_empty(), "a live holder keeps the Lease: rule 4");
        w.nodes[o].reach_store = true;
        w.run_until(t0 + ms(8000));
        assert_eq!(w.sole_owner(), o, "renewed and added again");
        assert_eq!(w.dual_time(), 0);
    }
}
