//! Floating egress IPs owned through Leases: one `coordination.k8s.io/v1`
//! Lease per IP, and the API server's optimistic concurrency as the
//! consensus on who holds it.
//!
//! What this module guarantees and assumes:
//! - **Naming**: the Lease of `ip` is [`lease_name`] (`egret-floating-`
//!   and the address with `.` and `:` replaced by `-`) in
//!   [`LeaseConfig::namespace`], labelled [`MANAGED_BY`]`=egret` and
//!   [`IP_KEY`]`=<dashed address>`, and annotated [`IP_KEY`]`=<address>`
//!   (the exact address is read back from the annotation; the name must be
//!   the annotation's, else the Lease is a [`LeaseProblem`]).
//! - **Fields**: `spec.holderIdentity` is the holder's node name (absent
//!   when released), `leaseDurationSeconds` [`LeaseConfig::duration`],
//!   `acquireTime` when the holder took it, `renewTime` its latest renewal,
//!   `leaseTransitions` how many times a node took it from another holder
//!   or from none (as client-go's leader election counts; a release is not
//!   a transition).
//! - **At most one winner**: every write is a create (`409 AlreadyExists`
//!   when the Lease exists) or a replace carrying the `resourceVersion` read
//!   just before (`409 Conflict` when anyone wrote in between). Of
//!   concurrent writers exactly one succeeds; the others read the Lease
//!   again and learn the winner ([`Acquisition::Lost`],
//!   [`LeaseError::Lost`]). Nothing retries over another holder's write.
//! - **Expiry is judged by the local clock**: a Lease is expired when its
//!   `renewTime` (else `acquireTime`) plus its duration is before this
//!   node's `SystemTime::now()`, so the nodes' clocks are assumed to agree
//!   to well within a lease duration (NTP). [`Acquire::Preempt`] ignores
//!   expiry: the caller has decided from probes that the holder is dead.
//! - **Bounded calls**: every operation (its reads, write and the read
//!   after a lost race) completes within the timeout the caller gives, or
//!   fails with [`LeaseError::TimedOut`].
//! - **Hand edits never panic**: a Lease of egret's whose address does not
//!   decode, or whose spec is nonsense (no spec, an empty holder, a
//!   duration that is missing, zero or negative, negative transitions), is
//!   a [`LeaseProblem`] (for an Event); [`FloatingLeases::acquire`] treats
//!   it as free and writes it whole again. A holder this node does not know
//!   is just another holder.
//! - **Owner table**: [`OwnerWatch`] keeps [`OwnerTable`] (IP → state, and
//!   the problems) current from a watch of the namespace's Leases labelled
//!   [`MANAGED_BY`]`=egret`; a relist replaces the table at once; every
//!   change is published on a `tokio::sync::watch` channel.
//!
//! RBAC: [`api_calls`], granted in the namespace only
//! (`deploy/base/role.yaml`; a test keeps the two equal).
//!
//! How the agent uses it (the decision to preempt comes from its probes):
//!
//! ```no_run
//! # async fn agent(client: kube::Client, node: &str, vip: std::net::IpAddr) {
//! use egret_kube::lease::{Acquire, Acquisition, FloatingLeases, LeaseConfig, OwnerWatch};
//! use std::time::Duration;
//! let config = LeaseConfig::default();
//! let owners = OwnerWatch::new(client.clone(), &config);
//! let mut table = owners.subscribe(); // `table.changed().await`, then `table.borrow().holder(vip)`
//! tokio::spawn(owners.run(std::future::pending()));
//! let leases = FloatingLeases::new(client, config);
//! let call = Duration::from_millis(150);
//! match leases.acquire(vip, node, Acquire::IfFree, call).await {
//!     Ok(Acquisition::Won(_)) => loop {
//!         tokio::time::sleep(Duration::from_millis(500)).await;
//!         match leases.renew(vip, node, call).await {
//!             Ok(_) => {}
//!             Err(e) if e.is_lost() => break,         // another node holds it: withdraw the IP
//!             // unanswered: keep the IP only until the last renewal plus the
//!             // duration, then withdraw it (another node may take it after that)
//!             Err(e) if e.is_unreachable() => continue,
//!             Err(_) => break,
//!         }
//!     },
//!     Ok(Acquisition::Lost { current }) => { /* held by current's holder */ }
//!     Err(_) => { /* not learnt: try again */ }
//! }
//! # }
//! ```

use crate::watch::{ApiCall, Backoff};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch as channel;

/// The namespace of the Leases unless configured.
pub const DEFAULT_NAMESPACE: &str = "egret-system";
/// The label that marks egret's Leases (value [`MANAGED_BY_EGRET`]).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY`] on egret's Leases.
pub const MANAGED_BY_EGRET: &str = "egret";
/// The label (dashed address) and annotation (the address as text) that
/// name a Lease's floating IP.
pub const IP_KEY: &str = "egret.dev/floating-ip";
/// The prefix of every floating IP's Lease name.
pub const NAME_PREFIX: &str = "egret-floating-";

/// `ip` as a DNS label fragment: `.` and `:` replaced by `-`
/// (`2001:db8::1` → `2001-db8--1`).
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The name of `ip`'s Lease: `egret-floating-<dashed address>`.
pub fn lease_name(ip: IpAddr) -> String {
    format!("{NAME_PREFIX}{}", dashed(ip))
}

/// Every API call this module makes, all in [`LeaseConfig::namespace`]:
/// `get`, `create`, `update` of Leases ([`FloatingLeases`]) and `list`,
/// `watch` ([`OwnerWatch`]).
pub fn api_calls() -> Vec<ApiCall> {
    let mut v: Vec<ApiCall> = ["create", "get", "list", "update", "watch"]
        .into_iter()
        .map(|verb| ApiCall { group: "coordination.k8s.io", resource: "leases", verb })
        .collect();
    v.sort();
    v
}

/// Where the Leases live and how long a holder's claim lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The namespace of the Leases ([`DEFAULT_NAMESPACE`]).
    pub namespace: String,
    /// `leaseDurationSeconds` written: rounded up to whole seconds, at
    /// least one (default 2 s).
    pub duration: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig { namespace: DEFAULT_NAMESPACE.to_string(), duration: Duration::from_secs(2) }
    }
}

impl LeaseConfig {
    /// [`LeaseConfig::duration`] as `leaseDurationSeconds`.
    fn duration_seconds(&self) -> i32 {
        let mut s = self.duration.as_secs();
        if self.duration.subsec_nanos() > 0 {
            s += 1;
        }
        i32::try_from(s.max(1)).unwrap_or(i32::MAX)
    }
}

/// What one Lease says, decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The floating IP (from the annotation).
    pub ip: IpAddr,
    /// The Lease's name.
    pub name: String,
    /// The holder's node name; `None` when released.
    pub holder: Option<String>,
    /// When the holder took it.
    pub acquire_time: Option<SystemTime>,
    /// The holder's latest renewal.
    pub renew_time: Option<SystemTime>,
    /// `leaseDurationSeconds`.
    pub duration: Duration,
    /// `leaseTransitions` (0 when absent).
    pub transitions: i32,
    /// `metadata.resourceVersion`: the version a replace must carry.
    pub resource_version: String,
}

impl LeaseState {
    /// Decodes a Lease of egret's; a [`LeaseProblem`] when it is not one
    /// this module could have written (see the module doc).
    pub fn of(lease: &Lease) -> Result<LeaseState, LeaseProblem> {
        let ip = lease_ip(lease)?;
        let problem =
            |what: Nonsense| LeaseProblem::Nonsense { namespace: ns_of(lease), lease: name_of(lease), ip, what };
        let Some(spec) = &lease.spec else { return Err(problem(Nonsense::NoSpec)) };
        if spec.holder_identity.as_deref() == Some("") {
            return Err(problem(Nonsense::EmptyHolder));
        }
        let duration = match spec.lease_duration_seconds {
            None => return Err(problem(Nonsense::NoDuration)),
            Some(d) if d <= 0 => return Err(problem(Nonsense::Duration { seconds: d })),
            Some(d) => Duration::from_secs(d.unsigned_abs().into()),
        };
        let transitions = spec.lease_transitions.unwrap_or(0);
        if transitions < 0 {
            return Err(problem(Nonsense::Transitions { count: transitions }));
        }
        Ok(LeaseState {
            ip,
            name: name_of(lease),
            holder: spec.holder_identity.clone(),
            acquire_time: spec.acquire_time.as_ref().map(system_time),
            renew_time: spec.renew_time.as_ref().map(system_time),
            duration,
            transitions,
            resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        })
    }

    /// When the holder's claim ends: the renewal (else the acquisition)
    /// plus the duration; `None` when neither time is set.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.renew_time.or(self.acquire_time).map(|t| t + self.duration)
    }

    /// Whether the claim has ended by `now` (a Lease without times has).
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.expires_at().is_none_or(|e| e <= now)
    }

    /// Whether the claim has ended by the local clock.
    pub fn expired(&self) -> bool {
        self.expired_at(SystemTime::now())
    }

    /// Whether `node` holds it (expired or not).
    pub fn held_by(&self, node: &str) -> bool {
        self.holder.as_deref() == Some(node)
    }

    /// Whether anyone may take it without preempting at `now`: released,
    /// or expired.
    pub fn free_at(&self, now: SystemTime) -> bool {
        self.holder.is_none() || self.expired_at(now)
    }
}

/// What is wrong with a Lease's spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nonsense {
    /// No `spec`.
    NoSpec,
    /// `holderIdentity` is the empty string.
    EmptyHolder,
    /// No `leaseDurationSeconds`.
    NoDuration,
    /// `leaseDurationSeconds` zero or negative.
    Duration {
        /// The value found.
        seconds: i32,
    },
    /// `leaseTransitions` negative.
    Transitions {
        /// The value found.
        count: i32,
    },
}

impl std::fmt::Display for Nonsense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Nonsense::NoSpec => f.write_str("it has no spec"),
            Nonsense::EmptyHolder => f.write_str("its holderIdentity is empty"),
            Nonsense::NoDuration => f.write_str("it has no leaseDurationSeconds"),
            Nonsense::Duration { seconds } => write!(f, "its leaseDurationSeconds {seconds} is not positive"),
            Nonsense::Transitions { count } => write!(f, "its leaseTransitions {count} is negative"),
        }
    }
}

/// A Lease of egret's (by label) that this module cannot read: what the
/// agent reports in an Event. (Owner-table entries of other Leases are
/// unaffected.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseProblem {
    /// The `egret.dev/floating-ip` annotation is missing or no address.
    #[error("lease {namespace}/{lease}: annotation {IP_KEY} {}", shown(.value.as_deref()))]
    NoAddress {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        lease: String,
        /// The annotation's value, if any.
        value: Option<String>,
    },
    /// The name is not the annotation's address's ([`lease_name`]).
    #[error("lease {namespace}/{lease}: annotation {IP_KEY} says {ip}, whose lease is {expected}")]
    WrongName {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        lease: String,
        /// The annotation's address.
        ip: IpAddr,
        /// The name that address's Lease has.
        expected: String,
    },
    /// The spec is not one a holder could have written.
    #[error("lease {namespace}/{lease} of {ip}: {what}")]
    Nonsense {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        lease: String,
        /// Its floating IP.
        ip: IpAddr,
        /// What is wrong.
        what: Nonsense,
    },
}

impl LeaseProblem {
    /// The floating IP concerned, when the Lease names one rightly.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            LeaseProblem::Nonsense { ip, .. } => Some(*ip),
            _ => None,
        }
    }

    /// The Lease's name.
    pub fn lease(&self) -> &str {
        match self {
            LeaseProblem::NoAddress { lease, .. }
            | LeaseProblem::WrongName { lease, .. }
            | LeaseProblem::Nonsense { lease, .. } => lease,
        }
    }
}

fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "is missing".to_string(), |v| format!("\"{v}\" is not an IP address"))
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// No answer within the caller's timeout.
    #[error("lease {namespace}/{lease}: no answer from the API server within {} ms", .after.as_millis())]
    TimedOut {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        lease: String,
        /// The timeout.
        after: Duration,
    },
    /// The API server could not be reached (connection refused or reset,
    /// TLS): no answer about the Lease at all.
    #[error("lease {namespace}/{lease}: the API server cannot be reached: {source}")]
    Unreachable {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        lease: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The Lease is not (or no longer) held by the caller: another node
    /// took it, it was released, or it does not exist.
    #[error("lease {namespace}/{lease} is not held by {node}: {}", held(.holder.as_deref()))]
    Lost {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        lease: String,
        /// The caller.
        node: String,
        /// The holder now (`None`: released or absent).
        holder: Option<String>,
    },
    /// The API server answered with an error (forbidden, invalid, a
    /// server error).
    #[error("lease {namespace}/{lease}: the API server answered {code} {reason}: {message}")]
    Refused {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        lease: String,
        /// HTTP status code.
        code: u16,
        /// The Status reason (`Forbidden`, `Invalid`, …).
        reason: String,
        /// The Status message.
        message: String,
    },
    /// The Lease read back is not one this module can use.
    #[error(transparent)]
    Problem(#[from] LeaseProblem),
}

fn held(holder: Option<&str>) -> String {
    holder.map_or_else(|| "it is held by nobody".to_string(), |h| format!("it is held by {h}"))
}

impl LeaseError {
    /// Whether the API server could not be reached or could not answer
    /// (timeout, transport failure, `429` or a `5xx`): nothing was learnt
    /// about the Lease.
    pub fn is_unreachable(&self) -> bool {
        match self {
            LeaseError::TimedOut { .. } | LeaseError::Unreachable { .. } => true,
            LeaseError::Refused { code, .. } => *code == 429 || *code >= 500,
            LeaseError::Lost { .. } | LeaseError::Problem(_) => false,
        }
    }

    /// Whether the Lease is held by someone else (or nobody).
    pub fn is_lost(&self) -> bool {
        matches!(self, LeaseError::Lost { .. })
    }
}

/// How [`FloatingLeases::acquire`] takes a Lease that is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// Only if released or expired (by the local clock).
    IfFree,
    /// Whoever holds it: the caller has decided that the holder is dead.
    /// Still loses to any write since its read (a renewal, say).
    Preempt,
}

/// What [`FloatingLeases::acquire`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    /// The caller holds the Lease now (created, taken, or already its own).
    Won(LeaseState),
    /// Someone else holds it: it was held and unexpired
    /// ([`Acquire::IfFree`]), or another writer won the race. `current` is
    /// the Lease as read after losing; `None` when it was deleted meanwhile
    /// or is a [`LeaseProblem`].
    Lost {
        /// The Lease now.
        current: Option<LeaseState>,
    },
}

/// MicroTime to SystemTime.
fn system_time(t: &MicroTime) -> SystemTime {
    let us = t.0.as_microsecond();
    let d = Duration::from_micros(us.unsigned_abs());
    if us >= 0 { UNIX_EPOCH + d } else { UNIX_EPOCH - d }
}

/// SystemTime to MicroTime (microseconds, as the API keeps it).
fn micro_time(t: SystemTime) -> MicroTime {
    let us = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    };
    MicroTime(k8s_openapi::jiff::Timestamp::from_microsecond(us).unwrap_or_default())
}

fn name_of(lease: &Lease) -> String {
    lease.metadata.name.clone().unwrap_or_default()
}

fn ns_of(lease: &Lease) -> String {
    lease.metadata.namespace.clone().unwrap_or_default()
}

/// The floating IP a Lease names (annotation, checked against the name).
fn lease_ip(lease: &Lease) -> Result<IpAddr, LeaseProblem> {
    let value = lease.metadata.annotations.as_ref().and_then(|a| a.get(IP_KEY));
    let Some(ip) = value.and_then(|v| v.parse::<IpAddr>().ok()) else {
        return Err(LeaseProblem::NoAddress { namespace: ns_of(lease), lease: name_of(lease), value: value.cloned() });
    };
    let expected = lease_name(ip);
    if name_of(lease) != expected {
        return Err(LeaseProblem::WrongName { namespace: ns_of(lease), lease: name_of(lease), ip, expected });
    }
    Ok(ip)
}

/// The Leases of floating IPs in one namespace: read, acquire, renew,
/// release (see the module doc).
#[derive(Clone)]
pub struct FloatingLeases {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl std::fmt::Debug for FloatingLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloatingLeases").field("config", &self.config).finish_non_exhaustive()
    }
}

impl FloatingLeases {
    /// The Leases in `config.namespace`, through `client`.
    pub fn new(client: Client, config: LeaseConfig) -> FloatingLeases {
        FloatingLeases { api: Api::namespaced(client, &config.namespace), config }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// `ip`'s Lease now; `None` when there is none.
    pub async fn read(&self, ip: IpAddr, timeout: Duration) -> Result<Option<LeaseState>, LeaseError> {
        let name = lease_name(ip);
        self.bounded(&name, timeout, async {
            match self.get(&name).await? {
                Some(l) => Ok(Some(LeaseState::of(&l)?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// Takes `ip`'s Lease for `node`, as `how` says: creates it when
    /// absent; otherwise replaces it (holder, times, duration,
    /// transitions + 1 when the holder changes) with the version read. A
    /// Lease already `node`'s is renewed. Of concurrent acquirers exactly
    /// one wins; the others get [`Acquisition::Lost`] with the winner.
    pub async fn acquire(
        &self,
        ip: IpAddr,
        node: &str,
        how: Acquire,
        timeout: Duration,
    ) -> Result<Acquisition, LeaseError> {
        let name = lease_name(ip);
        self.bounded(&name, timeout, async {
            let now = SystemTime::now();
            let Some(old) = self.get(&name).await? else {
                return match self.api.create(&PostParams::default(), &self.fresh(ip, node, now)).await {
                    Ok(l) => Ok(Acquisition::Won(LeaseState::of(&l)?)),
                    Err(e) if status_is(&e, 409) => self.after_race(&name, node).await,
                    Err(e) => Err(self.error(&name, e)),
                };
            };
            let state = LeaseState::of(&old);
            let transitions = match &state {
                Ok(s) if s.held_by(node) => s.transitions,
                Ok(s) if how == Acquire::IfFree && !s.free_at(now) => {
                    return Ok(Acquisition::Lost { current: Some(s.clone()) });
                }
                Ok(s) => s.transitions.saturating_add(1),
                // a hand-edited Lease is free to be written whole again
                Err(_) => old.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0).max(0).saturating_add(1),
            };
            // the old object with egret's labels, annotation and a new spec:
            // its version for the replace, and what others put in its
            // metadata (labels, finalizers, owners) kept
            let fresh = self.fresh(ip, node, now);
            let mut new = old.clone();
            let meta = &mut new.metadata;
            meta.labels.get_or_insert_default().extend(fresh.metadata.labels.unwrap_or_default());
            meta.annotations.get_or_insert_default().extend(fresh.metadata.annotations.unwrap_or_default());
            let mut spec = fresh.spec.unwrap_or_default();
            if let Ok(s) = &state
                && s.held_by(node)
            {
                spec.acquire_time = old.spec.as_ref().and_then(|s| s.acquire_time.clone());
            }
            spec.lease_transitions = Some(transitions);
            new.spec = Some(spec);
            match self.api.replace(&name, &PostParams::default(), &new).await {
                Ok(l) => Ok(Acquisition::Won(LeaseState::of(&l)?)),
                Err(e) if status_is(&e, 409) || status_is(&e, 404) => self.after_race(&name, node).await,
                Err(e) => Err(self.error(&name, e)),
            }
        })
        .await
    }

    /// Renews `node`'s hold on `ip`'s Lease (`renewTime` now, the
    /// configured duration). [`LeaseError::Lost`] when the Lease is not
    /// `node`'s (taken, released, deleted), also when a write since the
    /// read made it another's; a write since the read that left it
    /// `node`'s is retried. An expired Lease still `node`'s is renewed.
    pub async fn renew(&self, ip: IpAddr, node: &str, timeout: Duration) -> Result<LeaseState, LeaseError> {
        let name = lease_name(ip);
        self.bounded(&name, timeout, async {
            loop {
                let lease = self.own(&name, node).await?;
                let mut new = lease;
                let spec = new.spec.get_or_insert_default();
                spec.renew_time = Some(micro_time(SystemTime::now()));
                spec.lease_duration_seconds = Some(self.config.duration_seconds());
                if spec.lease_transitions.is_some_and(|t| t < 0) {
                    spec.lease_transitions = Some(0);
                }
                match self.api.replace(&name, &PostParams::default(), &new).await {
                    Ok(l) => return Ok(LeaseState::of(&l)?),
                    // written since the read: read again (bounded by the timeout)
                    Err(e) if status_is(&e, 409) => continue,
                    Err(e) if status_is(&e, 404) => return Err(self.lost(&name, node, None)),
                    Err(e) => return Err(self.error(&name, e)),
                }
            }
        })
        .await
    }

    /// Releases `node`'s hold on `ip`'s Lease: clears the holder, keeps
    /// the rest, so another node may [`Acquire::IfFree`] at once.
    /// [`LeaseError::Lost`] when it is not `node`'s.
    pub async fn release(&self, ip: IpAddr, node: &str, timeout: Duration) -> Result<(), LeaseError> {
        let name = lease_name(ip);
        self.bounded(&name, timeout, async {
            loop {
                let mut new = self.own(&name, node).await?;
                new.spec.get_or_insert_default().holder_identity = None;
                match self.api.replace(&name, &PostParams::default(), &new).await {
                    Ok(_) => return Ok(()),
                    Err(e) if status_is(&e, 409) => continue,
                    Err(e) if status_is(&e, 404) => return Err(self.lost(&name, node, None)),
                    Err(e) => return Err(self.error(&name, e)),
                }
            }
        })
        .await
    }

    /// The Lease, if its holder is `node` (whatever else is wrong with it).
    async fn own(&self, name: &str, node: &str) -> Result<Lease, LeaseError> {
        let lease = self.get(name).await?;
        let holder = lease.as_ref().and_then(|l| l.spec.as_ref()).and_then(|s| s.holder_identity.clone());
        match lease {
            Some(l) if holder.as_deref() == Some(node) => Ok(l),
            _ => Err(self.lost(name, node, holder.filter(|h| !h.is_empty()))),
        }
    }

    /// After a lost write: who holds the Lease now.
    async fn after_race(&self, name: &str, node: &str) -> Result<Acquisition, LeaseError> {
        let current = self.get(name).await?.and_then(|l| LeaseState::of(&l).ok());
        Ok(match current {
            Some(s) if s.held_by(node) => Acquisition::Won(s),
            current => Acquisition::Lost { current },
        })
    }

    /// A new Lease of `ip` held by `node` since `now`.
    fn fresh(&self, ip: IpAddr, node: &str, now: SystemTime) -> Lease {
        let name = lease_name(ip);
        let labels =
            BTreeMap::from([(MANAGED_BY.to_string(), MANAGED_BY_EGRET.to_string()), (IP_KEY.to_string(), dashed(ip))]);
        Lease {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(self.config.namespace.clone()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(IP_KEY.to_string(), ip.to_string())])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(node.to_string()),
                lease_duration_seconds: Some(self.config.duration_seconds()),
                acquire_time: Some(micro_time(now)),
                renew_time: Some(micro_time(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    async fn get(&self, name: &str) -> Result<Option<Lease>, LeaseError> {
        self.api.get_opt(name).await.map_err(|e| self.error(name, e))
    }

    /// Runs `op` within `timeout`.
    async fn bounded<T>(
        &self,
        name: &str,
        timeout: Duration,
        op: impl Future<Output = Result<T, LeaseError>>,
    ) -> Result<T, LeaseError> {
        tokio::time::timeout(timeout, op).await.unwrap_or_else(|_| {
            Err(LeaseError::TimedOut {
                namespace: self.config.namespace.clone(),
                lease: name.to_string(),
                after: timeout,
            })
        })
    }

    fn lost(&self, name: &str, node: &str, holder: Option<String>) -> LeaseError {
        LeaseError::Lost {
            namespace: self.config.namespace.clone(),
            lease: name.to_string(),
            node: node.to_string(),
            holder,
        }
    }

    fn error(&self, name: &str, e: kube::Error) -> LeaseError {
        let (namespace, lease) = (self.config.namespace.clone(), name.to_string());
        match e {
            kube::Error::Api(s) => {
                LeaseError::Refused { namespace, lease, code: s.code, reason: s.reason, message: s.message }
            }
            source => LeaseError::Unreachable { namespace, lease, source },
        }
    }
}

fn status_is(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Who holds each floating IP, as the watch last saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerTable {
    /// Per floating IP: its Lease.
    pub owners: BTreeMap<IpAddr, LeaseState>,
    /// egret's Leases that cannot be read, by Lease name.
    pub problems: BTreeMap<String, LeaseProblem>,
    /// Whether the first list has completed.
    pub synced: bool,
}

impl OwnerTable {
    /// The holder of `ip`'s Lease, if any (expired or not).
    pub fn holder(&self, ip: IpAddr) -> Option<&str> {
        self.owners.get(&ip).and_then(|s| s.holder.as_deref())
    }

    fn rebuild(leases: &BTreeMap<String, Result<LeaseState, LeaseProblem>>, synced: bool) -> OwnerTable {
        let mut t = OwnerTable { synced, ..OwnerTable::default() };
        for (name, l) in leases {
            match l {
                Ok(s) => drop(t.owners.insert(s.ip, s.clone())),
                Err(p) => drop(t.problems.insert(name.clone(), p.clone())),
            }
        }
        t
    }
}

/// Keeps an [`OwnerTable`] current (see the module doc).
pub struct OwnerWatch {
    api: Api<Lease>,
    tx: channel::Sender<OwnerTable>,
    /// First and longest delay between retries after an error.
    backoff: (Duration, Duration),
    errors: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for OwnerWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerWatch").field("backoff", &self.backoff).finish_non_exhaustive()
    }
}

impl OwnerWatch {
    /// A watch of `config.namespace`'s egret Leases through `client`;
    /// retries back off from 100 ms to 2 s.
    pub fn new(client: Client, config: &LeaseConfig) -> OwnerWatch {
        OwnerWatch {
            api: Api::namespaced(client, &config.namespace),
            tx: channel::Sender::new(OwnerTable::default()),
            backoff: (Duration::from_millis(100), Duration::from_secs(2)),
            errors: std::sync::Arc::default(),
        }
    }

    /// The table, and its changes (`changed().await`).
    pub fn subscribe(&self) -> channel::Receiver<OwnerTable> {
        self.tx.subscribe()
    }

    /// Watch errors so far (shared).
    pub fn errors(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        std::sync::Arc::clone(&self.errors)
    }

    /// Watches until `shutdown` completes; errors are logged, counted and
    /// retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let selector = format!("{MANAGED_BY}={MANAGED_BY_EGRET}");
        let config = watcher::Config::default().any_semantic().labels(&selector);
        let (min, max) = self.backoff;
        let mut events = watcher::watcher(self.api.clone(), config).backoff(Backoff { min, max, next: min }).boxed();
        let mut leases: BTreeMap<String, Result<LeaseState, LeaseProblem>> = BTreeMap::new();
        let mut relist: Option<BTreeMap<String, Result<LeaseState, LeaseProblem>>> = None;
        let mut synced = false;
        tokio::pin!(shutdown);
        loop {
            let event = tokio::select! {
                () = &mut shutdown => return,
                e = events.next() => e,
            };
            let Some(event) = event else { return };
            let changed = match event {
                Ok(Event::Init) => {
                    relist = Some(BTreeMap::new());
                    false
                }
                Ok(Event::InitApply(l)) => {
                    relist.get_or_insert_default().insert(name_of(&l), LeaseState::of(&l));
                    false
                }
                Ok(Event::InitDone) => {
                    leases = relist.take().unwrap_or_default();
                    synced = true;
                    true
                }
                Ok(Event::Apply(l)) => {
                    leases.insert(name_of(&l), LeaseState::of(&l));
                    true
                }
                Ok(Event::Delete(l)) => leases.remove(&name_of(&l)).is_some(),
                Err(e) => {
                    self.errors.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    tracing::warn!(error = %e, "floating IP lease watch");
                    false
                }
            };
            if changed {
                let table = OwnerTable::rebuild(&leases, synced);
                self.tx.send_if_modified(|t| {
                    let differs = *t != table;
                    if differs {
                        *t = table;
                    }
                    differs
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn names_are_the_dashed_address() {
        assert_eq!(lease_name(ip("2001:db8::1")), "egret-floating-2001-db8--1");
        assert_eq!(lease_name(ip("192.0.2.10")), "egret-floating-192-0-2-10");
        assert_eq!(dashed(ip("::ffff:192.0.2.1")), "--ffff-192-0-2-1");
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        let secs =
            |ms| LeaseConfig { duration: Duration::from_millis(ms), ..LeaseConfig::default() }.duration_seconds();
        assert_eq!([secs(0), secs(1), secs(1000), secs(1500), secs(2000)], [1, 1, 1, 2, 2]);
        assert_eq!(LeaseConfig::default().duration_seconds(), 2);
    }

    fn lease(name: &str, annotation: Option<&str>, spec: Option<LeaseSpec>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("egret-system".into()),
                annotations: annotation.map(|a| BTreeMap::from([(IP_KEY.to_string(), a.to_string())])),
                ..ObjectMeta::default()
            },
            spec,
        }
    }

    fn spec(holder: Option<&str>, duration: Option<i32>, renewed: Option<SystemTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: duration,
            renew_time: renewed.map(micro_time),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn leases_decode_or_say_what_is_wrong() {
        let name = "egret-floating-192-0-2-10";
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = LeaseState::of(&lease(name, Some("192.0.2.10"), Some(spec(Some("gw-1"), Some(2), Some(t)))))
            .expect("a good lease");
        assert_eq!(
            (s.ip, s.holder.as_deref(), s.duration, s.transitions),
            (ip("192.0.2.10"), Some("gw-1"), Duration::from_secs(2), 0)
        );
        assert_eq!(s.renew_time, Some(t));
        assert!(!s.expired_at(t + Duration::from_millis(1999)) && s.expired_at(t + Duration::from_secs(2)));
        assert!(!s.free_at(t) && s.free_at(t + Duration::from_secs(3)));

        let problem = |l: Lease| LeaseState::of(&l).expect_err("a problem");
        let p = problem(lease(name, None, None));
        assert!(matches!(p, LeaseProblem::NoAddress { value: None, .. }), "{p}");
        assert_eq!(
            p.to_string(),
            "lease egret-system/egret-floating-192-0-2-10: annotation egret.dev/floating-ip is missing"
        );
        let p = problem(lease(name, Some("192.0.2.11"), None));
        assert_eq!(
            p.to_string(),
            "lease egret-system/egret-floating-192-0-2-10: annotation egret.dev/floating-ip says 192.0.2.11, whose lease is egret-floating-192-0-2-11"
        );
        let what = |l: Lease| match problem(l) {
            LeaseProblem::Nonsense { what, .. } => what,
            other => panic!("{other}"),
        };
        let good = |s: LeaseSpec| lease(name, Some("192.0.2.10"), Some(s));
        assert_eq!(what(lease(name, Some("192.0.2.10"), None)), Nonsense::NoSpec);
        assert_eq!(what(good(spec(Some(""), Some(2), None))), Nonsense::EmptyHolder);
        assert_eq!(what(good(spec(Some("gw"), None, None))), Nonsense::NoDuration);
        assert_eq!(what(good(spec(Some("gw"), Some(-3), None))), Nonsense::Duration { seconds: -3 });
        let negative = LeaseSpec { lease_transitions: Some(-1), ..spec(None, Some(2), None) };
        assert_eq!(what(good(negative)), Nonsense::Transitions { count: -1 });
        // released: free, not a problem
        let released = LeaseState::of(&good(spec(None, Some(2), Some(t)))).expect("released");
        assert!(released.holder.is_none() && released.free_at(t));
    }

    #[test]
    fn micro_times_round_trip() {
        let t = UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456);
        assert_eq!(system_time(&micro_time(t)), t);
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(system_time(&micro_time(before)), before);
    }
}
