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
//! 5. Every action references a declared gateway (`Redirect`) or a declared
//!    slot (`LocalEgress`); `Redirect` never targets this node's own IP.
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

use crate::resolve::{EgressIp, EgressSpec, InterfaceBinding, SlotId};
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
    /// The winning policy has no (healthy) gateway.
    NoGateway,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoGateway => "no-gateway",
        }
    }
}

/// What the source node does with a packet. Also the plan's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Normal routing.
    Pass,
    Drop(DropReason),
    /// Tunnel to the gateway node (remote = `gateway`, VNI = `slot`).
    Redirect {
        gateway: Ipv4Addr,
        slot: SlotId,
    },
    /// This node is the gateway: SNAT with the slot's egress IP here.
    LocalEgress {
        slot: SlotId,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Pass => f.write_str("pass"),
            Action::Drop(r) => write!(f, "drop {}", r.as_str()),
            Action::Redirect { gateway, slot } => write!(f, "redirect {gateway} slot {slot}"),
            Action::LocalEgress { slot } => write!(f, "local-egress slot {slot}"),
        }
    }
}

/// One node's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub node: String,
    pub node_ip: Option<Ipv4Addr>,
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
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDecl {
    pub id: SlotId,
    pub gateway: String,
    pub spec: EgressSpec,
    pub v4: Option<EgressIp>,
    pub v6: Option<EgressIp>,
    pub interface: InterfaceBinding,
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
    /// The IPv4 address of the endpoint's node (its tunnel packets' outer
    /// source) when the endpoint runs on another node; `None` for an
    /// endpoint of the gateway node itself (local egress).
    pub from: Option<std::net::Ipv4Addr>,
}

impl Module {
    /// Total table entries over all classes.
    pub fn table_entries(&self) -> usize {
        self.classes.iter().map(|c| c.table.len()).sum()
    }
}
