//! The IR: one node's egress rules, from lowering to optimized LPM tables.
//!
//! A [`Module`] describes what node N must do for the endpoints it hosts
//! (source side) and for the egress slots it serves (gateway side). It goes
//! through these stages, each produced by one pass of [`passes`]:
//!
//! | stage | produced by | class content |
//! |---|---|---|
//! | `lowered` | [`lower::lower`] | one class per local endpoint that some policy selects; per policy its action for that endpoint, `capture` prefixes (its destinationCIDRs, rank = own length) and `exclude` prefixes |
//! | `subtracted` | [`passes::subtract_exclusions`] | captures are `D(P)` as disjoint prefixes; each piece's rank is the length of the longest destinationCIDRs entry containing it; no excludes |
//! | `classed` | [`passes::form_classes`] | endpoints with identical applicable rules share one class |
//! | `decided` | [`passes::decide`] | per class a `table`: disjoint prefixes → the winning policy's action (longest rank, then smallest name); no policies |
//! | `merged` | [`passes::merge_siblings`] | sibling prefixes with the same action merged |
//! | `pruned` | [`passes::remove_shadowed`] | entries never reached or redundant under longest-prefix match removed |
//! | `minimized` | [`passes::minimize`] | the smallest longest-prefix-match table with the same meaning (ORTC) |
//!
//! # Meaning of a table
//! From `decided` on, a class's table is read as a longest-prefix-match
//! table: the action for destination `A` is that of the longest entry
//! containing `A`, or [`Action::Pass`] when none does. Cluster-internal ranges
//! (`internal`) take precedence over every table (SEMANTICS.md step 1).
//!
//! # Invariants (checked by [`verify::verify`], which collects all violations)
//! 1. Every prefix in the module is canonical (no host bits set).
//! 2. `internal` is sorted in prefix order and pairwise disjoint.
//! 3. `gateways` is sorted by IP; IPs and node names are unique; none is this node.
//! 4. `slots` is sorted by id; ids are unique; every slot's gateway is this node.
//! 5. Every `Egress` target references a declared gateway (remote) or a
//!    declared slot (local, with this node's IP); a remote target never has
//!    this node's own IP.
//! 6. Classes are non-empty, their endpoints sorted by key; no endpoint key
//!    and no endpoint IP appears twice in the module; classes are sorted by
//!    their first endpoint key (canonical numbering `c0, c1, …`).
//! 7. Within a class, policies are sorted by name and unique, and every
//!    prefix of a policy has a family of one of the class's endpoints' IPs.
//! 8. From `subtracted` on: no excludes, and each policy's captures are
//!    sorted and pairwise disjoint.
//! 9. In `classed`: no two classes have identical policies (from `decided`
//!    on two classes may share a table; the plan deduplicates them).
//! 10. From `decided` on: no policies; each table is sorted, without duplicate
//!     prefixes. In `decided` and `merged`, table entries are pairwise
//!     disjoint and none is `Pass`.
//! 11. Served slots are declared, sorted by slot, their sources sorted by IP
//!     and unique.

pub mod lower;
pub mod passes;
pub mod prefix;
pub mod text;
pub mod verify;

use crate::resolve::{EgressIp, EgressSpec, FloatingSlot, InterfaceBinding, SlotId};
use egret_lang::net::Cidr;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// The stages of a module, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Lowered,
    Subtracted,
    Classed,
    Decided,
    Merged,
    Pruned,
    Minimized,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Lowered,
        Stage::Subtracted,
        Stage::Classed,
        Stage::Decided,
        Stage::Merged,
        Stage::Pruned,
        Stage::Minimized,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Lowered => "lowered",
            Stage::Subtracted => "subtracted",
            Stage::Classed => "classed",
            Stage::Decided => "decided",
            Stage::Merged => "merged",
            Stage::Pruned => "pruned",
            Stage::Minimized => "minimized",
        }
    }
    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Why a packet is dropped at the source node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The winning policy has no gateway, or none of the endpoint's is live.
    NoGateway,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoGateway => "no-gateway",
        }
    }
}

/// The most gateways an endpoint fails over through: the first
/// `MAX_FAILOVER` of its failover order (SEMANTICS.md, "Health"). The
/// classifier walks them unrolled (`egret_choices` holds this many targets).
pub const MAX_FAILOVER: usize = egret_bpf::choices::MAX_TARGETS;

/// One gateway a [`Choice`] may send to: the gateway node's IPv4 address
/// (the tunnel remote, and the key of its liveness) and the egress slot
/// (the VNI). `local` = the gateway is the node evaluating the packet
/// (local egress through the slot; `gateway` is then this node's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub gateway: IpAddr,
    pub slot: SlotId,
    pub local: bool,
}

impl Target {
    const NONE: Target = Target { gateway: IpAddr::V4(Ipv4Addr::UNSPECIFIED), slot: SlotId(0), local: false };

    /// What a packet gets from this target.
    pub fn effect(&self) -> Effect {
        if self.local {
            Effect::LocalEgress { slot: self.slot }
        } else {
            Effect::Redirect { gateway: self.gateway, slot: self.slot }
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.effect().fmt(f)
    }
}

/// An endpoint's gateways for one policy, in failover order (at most
/// [`MAX_FAILOVER`], at least one): the packet goes to the first whose
/// gateway is live ([`Health`]), and is dropped (`no-gateway`) when none
/// is. Fixed size so that [`Action`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Choice {
    len: u8,
    targets: [Target; MAX_FAILOVER],
}

impl Choice {
    /// The choice of `targets` in order (the first [`MAX_FAILOVER`]); `None`
    /// when there is none.
    pub fn new(targets: impl IntoIterator<Item = Target>) -> Option<Choice> {
        let mut c = Choice { len: 0, targets: [Target::NONE; MAX_FAILOVER] };
        for t in targets.into_iter().take(MAX_FAILOVER) {
            c.targets[usize::from(c.len)] = t;
            c.len += 1;
        }
        (c.len > 0).then_some(c)
    }

    /// One target.
    pub fn single(target: Target) -> Choice {
        let mut c = Choice { len: 1, targets: [Target::NONE; MAX_FAILOVER] };
        c.targets[0] = target;
        c
    }

    /// The targets, in failover order.
    pub fn targets(&self) -> &[Target] {
        &self.targets[..usize::from(self.len)]
    }

    /// The first target: where the packet goes while every gateway is live.
    pub fn primary(&self) -> Target {
        self.targets[0]
    }

    /// What a packet gets under `health`: the first target whose gateway is
    /// live, else a `no-gateway` drop.
    pub fn resolve(&self, health: &Health) -> Effect {
        self.targets()
            .iter()
            .find(|t| health.is_up(t.gateway))
            .map_or(Effect::Drop(DropReason::NoGateway), Target::effect)
    }
}

impl fmt::Debug for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.targets()).finish()
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.targets().iter().enumerate() {
            if i > 0 {
                f.write_str(" else ")?;
            }
            t.fmt(f)?;
        }
        Ok(())
    }
}

/// Which gateways are down, as a node's agent sees them (SEMANTICS.md,
/// "Health"): an input of the decision, never of the plan. Every gateway
/// not named is up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub down: std::collections::BTreeSet<IpAddr>,
}

impl Health {
    /// Every gateway up.
    pub fn all_up() -> Health {
        Health::default()
    }

    /// These gateways down, the rest up.
    pub fn with_down(down: impl IntoIterator<Item = IpAddr>) -> Health {
        Health { down: down.into_iter().collect() }
    }

    pub fn is_up(&self, gateway: IpAddr) -> bool {
        !self.down.contains(&gateway)
    }
}

/// What the source node does with a packet (the plan's action, before
/// liveness is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Normal routing.
    Pass,
    Drop(DropReason),
    /// To the first live gateway of the choice (tunnel to a remote gateway
    /// node, or local egress when it is this node); drop `no-gateway` when
    /// none is live.
    Egress(Choice),
}

impl Action {
    /// What a packet gets under `health`.
    pub fn resolve(&self, health: &Health) -> Effect {
        match self {
            Action::Pass => Effect::Pass,
            Action::Drop(r) => Effect::Drop(*r),
            Action::Egress(c) => c.resolve(health),
        }
    }

    /// A redirect to one remote gateway (no failover).
    pub fn redirect(gateway: IpAddr, slot: SlotId) -> Action {
        Action::Egress(Choice::single(Target { gateway, slot, local: false }))
    }

    /// Local egress through a slot of this node (`node` = its address; no failover).
    pub fn local_egress(node: IpAddr, slot: SlotId) -> Action {
        Action::Egress(Choice::single(Target { gateway: node, slot, local: true }))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Pass => f.write_str("pass"),
            Action::Drop(r) => write!(f, "drop {}", r.as_str()),
            Action::Egress(c) => c.fmt(f),
        }
    }
}

/// What happens to one packet once liveness is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    /// Normal routing.
    Pass,
    Drop(DropReason),
    /// Tunnel to the gateway node (remote = `gateway`, VNI = `slot`).
    Redirect {
        gateway: IpAddr,
        slot: SlotId,
    },
    /// This node is the gateway: SNAT with the slot's egress IP here.
    LocalEgress {
        slot: SlotId,
    },
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Pass => f.write_str("pass"),
            Effect::Drop(r) => write!(f, "drop {}", r.as_str()),
            Effect::Redirect { gateway, slot } => write!(f, "redirect {gateway} slot {slot}"),
            Effect::LocalEgress { slot } => write!(f, "local-egress slot {slot}"),
        }
    }
}

/// One node's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub node: String,
    pub node_ip: Option<IpAddr>,
    pub stage: Stage,
    /// Cluster-internal prefixes (always pass), minimal and sorted.
    pub internal: Vec<Cidr>,
    /// Remote gateways that `Redirect` actions target.
    pub gateways: Vec<GatewayDecl>,
    /// Egress slots this node serves.
    pub slots: Vec<SlotDecl>,
    pub classes: Vec<Class>,
    /// Gateway side: per served slot, the sources allowed to use it.
    pub served: Vec<Served>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayDecl {
    pub node: String,
    pub ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDecl {
    pub id: SlotId,
    pub gateway: String,
    pub spec: EgressSpec,
    pub v4: Option<EgressIp>,
    pub v6: Option<EgressIp>,
    pub interface: InterfaceBinding,
    /// The slot of a floating egress IP: the IP and every candidate gateway
    /// (this node among them), each serving this same slot id.
    pub floating: Option<FloatingSlot>,
}

/// Endpoints sharing rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub endpoints: Vec<EndpointRef>,
    /// Before `decided`: the policies that apply, with their actions for these endpoints.
    pub policies: Vec<AppliedPolicy>,
    /// From `decided` on: the longest-prefix-match table.
    pub table: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointRef {
    /// `namespace/name`.
    pub key: String,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedPolicy {
    pub name: String,
    pub action: Action,
    pub captures: Vec<Capture>,
    pub excludes: Vec<Cidr>,
}

/// A destination prefix a policy captures, with its ranking length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    pub prefix: Cidr,
    /// Length of the longest `destinationCIDRs` entry containing the prefix.
    pub rank: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub prefix: Cidr,
    pub action: Action,
}

/// Gateway side of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub slot: SlotId,
    pub sources: Vec<ServedSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServedSource {
    pub ip: IpAddr,
    /// `namespace/name` of the endpoint.
    pub endpoint: String,
    /// The underlay address of the endpoint's node (its tunnel packets' outer
    /// source) when the endpoint runs on another node; `None` for an
    /// endpoint of the gateway node itself (local egress).
    pub from: Option<IpAddr>,
}

impl Module {
    /// Total table entries over all classes.
    pub fn table_entries(&self) -> usize {
        self.classes.iter().map(|c| c.table.len()).sum()
    }
}
