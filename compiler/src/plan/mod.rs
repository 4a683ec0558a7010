//! Per-node plans: ARCHITECTURE.md's "Compact per-node layout".
//!
//! A [`Plan`] is what node N's datapath holds, laid out from an optimized IR
//! module ([`layout`]):
//! - **source side**, for the endpoints N hosts: `endpoint IP → class`
//!   ([`Plan::endpoints`]) and `(class, destination prefix) → action`
//!   ([`Plan::classes`], longest-prefix match, default pass); classes with
//!   identical tables are merged, classes whose table is empty are left out
//!   (their endpoints simply pass);
//! - the cluster-internal prefixes ([`Plan::internal`], always pass, checked
//!   first);
//! - **gateway side**: the egress slots N serves ([`Plan::slots`]) and, per
//!   slot, the source endpoint IPs allowed to use it ([`Plan::gateway_tables`]).
//!
//! Nothing about endpoints N neither hosts nor serves is in N's plan.
//! [`Plan::lookup`] computes a classifier's verdict from the plan alone; it
//! equals [`crate::eval::decide`] for every local endpoint IP and destination
//! of its family (tested by property). Code generation accepts only a
//! [`Verified`] plan, which only [`verify::verify`] constructs.

pub mod json;
pub mod text;
pub mod verify;

pub use verify::{PlanViolation, Verified};

use crate::ir::prefix::prefix_order;
use crate::ir::{Action, Entry, GatewayDecl, Module, SlotDecl, Stage};
use crate::resolve::SlotId;
use egret_lang::net::{Cidr, Family};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A plan's action: pass, drop (no-gateway), redirect to a gateway with an
/// egress slot (the VNI), or local egress through a slot this node serves.
pub type PlanAction = Action;

/// A class id, dense from 0 in canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassId(pub u32);

/// `endpoint IP → class`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointEntry {
    pub ip: IpAddr,
    pub class: ClassId,
    /// `namespace/name`, for people.
    pub endpoint: String,
}

/// `(class, prefix) → action` for one class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassTable {
    pub id: ClassId,
    /// Sorted in prefix order; longest-prefix match, default pass.
    pub entries: Vec<Entry>,
}

/// Sources allowed to use one slot this node serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayTable {
    pub slot: SlotId,
    /// Sorted, unique.
    pub sources: Vec<IpAddr>,
    /// Per source (same length and order): the underlay address of the node it
    /// runs on, whose tunnel packets alone may carry it; `None` for a source
    /// of this node (local egress) or one whose node is unknown.
    pub from: Vec<Option<IpAddr>>,
}

/// One node's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub node: String,
    pub node_ip: Option<IpAddr>,
    /// Cluster-internal prefixes: pass, before any class table.
    pub internal: Vec<Cidr>,
    /// Remote gateways that redirects target.
    pub gateways: Vec<GatewayDecl>,
    /// Egress slots this node serves.
    pub slots: Vec<SlotDecl>,
    /// Sorted by IP.
    pub endpoints: Vec<EndpointEntry>,
    /// `classes[i].id == ClassId(i)`.
    pub classes: Vec<ClassTable>,
    /// Sorted by slot.
    pub gateway_tables: Vec<GatewayTable>,
}

/// Sizes of a plan's tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// `endpoint → class` entries.
    pub endpoints: usize,
    pub classes: usize,
    /// `(class, prefix) → action` entries.
    pub class_entries: usize,
    pub internal_entries: usize,
    pub slots: usize,
    /// Allowed-source entries over all gateway tables.
    pub gateway_entries: usize,
}

impl NodeCounts {
    /// All map entries of the node.
    pub fn total(&self) -> usize {
        self.endpoints + self.class_entries + self.internal_entries + self.slots + self.gateway_entries
    }
}

/// Why a module cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("module of node `{node}` is in stage `{stage}`; layout needs `decided` or later")]
    Undecided { node: String, stage: &'static str },
}

/// Lays out a plan from a module in stage `decided` or later.
pub fn layout(m: &Module) -> Result<Plan, LayoutError> {
    if m.stage < Stage::Decided {
        return Err(LayoutError::Undecided { node: m.node.clone(), stage: m.stage.as_str() });
    }
    let mut ids: BTreeMap<&[Entry], ClassId> = BTreeMap::new();
    let mut classes: Vec<ClassTable> = Vec::new();
    let mut endpoints: Vec<EndpointEntry> = Vec::new();
    for c in &m.classes {
        if c.table.is_empty() {
            continue;
        }
        let id = *ids.entry(c.table.as_slice()).or_insert_with(|| {
            let id = ClassId(classes.len() as u32);
            classes.push(ClassTable { id, entries: c.table.clone() });
            id
        });
        for e in &c.endpoints {
            for ip in &e.ips {
                let fam = Family::of(ip);
                if c.table.iter().any(|t| t.prefix.family() == fam) {
                    endpoints.push(EndpointEntry { ip: *ip, class: id, endpoint: e.key.clone() });
                }
            }
        }
    }
    endpoints.sort_by_key(|e| e.ip);
    Ok(Plan {
        node: m.node.clone(),
        node_ip: m.node_ip,
        internal: m.internal.clone(),
        gateways: m.gateways.clone(),
        slots: m.slots.clone(),
        endpoints,
        classes,
        gateway_tables: m
            .served
            .iter()
            .map(|s| GatewayTable {
                slot: s.slot,
                sources: s.sources.iter().map(|x| x.ip).collect(),
                from: s.sources.iter().map(|x| x.from).collect(),
            })
            .collect(),
    })
}

impl Plan {
    /// The class of a local endpoint IP.
    pub fn class_of(&self, src: IpAddr) -> Option<ClassId> {
        self.endpoints.binary_search_by(|e| e.ip.cmp(&src)).ok().map(|i| self.endpoints[i].class)
    }

    /// What a classifier on this node does with a packet from `src` to
    /// `dst`: pass for cluster-internal destinations, else the longest
    /// matching entry of `src`'s class, else pass (also when `src` is no
    /// local endpoint with rules).
    pub fn lookup(&self, src: IpAddr, dst: IpAddr) -> PlanAction {
        if self.internal.iter().any(|c| c.contains_ip(dst)) {
            return Action::Pass;
        }
        let Some(class) = self.class_of(src) else { return Action::Pass };
        let Some(table) = self.classes.get(class.0 as usize) else { return Action::Pass };
        table
            .entries
            .iter()
            .filter(|e| e.prefix.contains_ip(dst))
            .max_by_key(|e| e.prefix.len)
            .map_or(Action::Pass, |e| e.action)
    }

    /// Whether the gateway side of this node accepts `src` on `slot`.
    pub fn gateway_allows(&self, slot: SlotId, src: IpAddr) -> bool {
        self.gateway_tables.iter().any(|t| t.slot == slot && t.sources.binary_search(&src).is_ok())
    }

    /// Every prefix the plan's decision depends on (internal and class
    /// tables), sorted: the decision is constant between their boundaries.
    pub fn prefixes(&self) -> Vec<Cidr> {
        let mut v: Vec<Cidr> = self
            .internal
            .iter()
            .copied()
            .chain(self.classes.iter().flat_map(|c| c.entries.iter().map(|e| e.prefix)))
            .collect();
        v.sort_by(prefix_order);
        v.dedup();
        v
    }

    pub fn counts(&self) -> NodeCounts {
        NodeCounts {
            endpoints: self.endpoints.len(),
            classes: self.classes.len(),
            class_entries: self.classes.iter().map(|c| c.entries.len()).sum(),
            internal_entries: self.internal.len(),
            slots: self.slots.len(),
            gateway_entries: self.gateway_tables.iter().map(|t| t.sources.len()).sum(),
        }
    }
}
