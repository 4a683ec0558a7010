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

    /// An index that answers [`Plan::lookup`]'s longest-prefix questions in
    /// time proportional to the number of distinct prefix lengths, not
    /// entries (checking every interval of a large plan stays linear).
    pub fn lookup_index(&self) -> LookupIndex<'_> {
        LookupIndex::new(self)
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

/// Prefixes by family and length, each masked prefix with a value: a
/// longest-prefix match by one hash probe per length present, longest first.
#[derive(Debug, Clone, Default)]
struct PrefixTable {
    /// `(family, length)` → masked address → value; lengths in descending order per family.
    by_len: BTreeMap<(Family, std::cmp::Reverse<u8>), std::collections::HashMap<u128, usize>>,
}

impl PrefixTable {
    fn insert(&mut self, prefix: &Cidr, value: usize) {
        let (lo, _) = prefix.range();
        self.by_len.entry((prefix.family(), std::cmp::Reverse(prefix.len))).or_default().insert(lo, value);
    }

    /// The value of the longest prefix containing `ip` (the last inserted of equal prefixes).
    fn longest(&self, ip: IpAddr) -> Option<usize> {
        let f = Family::of(&ip);
        let a = egret_lang::net::ip_to_u128(ip);
        self.by_len
            .range((f, std::cmp::Reverse(u8::MAX))..=(f, std::cmp::Reverse(0)))
            .find_map(|((_, len), m)| m.get(&(a & egret_lang::net::prefix_mask(f, len.0))).copied())
    }
}

/// [`Plan::lookup`] with the plan's prefixes hashed by length
/// ([`Plan::lookup_index`]); the same answers.
#[derive(Debug, Clone)]
pub struct LookupIndex<'a> {
    plan: &'a Plan,
    internal: PrefixTable,
    classes: Vec<PrefixTable>,
}

impl<'a> LookupIndex<'a> {
    fn new(plan: &'a Plan) -> LookupIndex<'a> {
        let mut internal = PrefixTable::default();
        for (i, c) in plan.internal.iter().enumerate() {
            internal.insert(c, i);
        }
        let classes = plan
            .classes
            .iter()
            .map(|t| {
                let mut table = PrefixTable::default();
                for (i, e) in t.entries.iter().enumerate() {
                    table.insert(&e.prefix, i);
                }
                table
            })
            .collect();
        LookupIndex { plan, internal, classes }
    }

    /// The plan indexed.
    pub fn plan(&self) -> &'a Plan {
        self.plan
    }

    /// Whether `dst` is cluster-internal.
    pub fn internal(&self, dst: IpAddr) -> bool {
        self.internal.longest(dst).is_some()
    }

    /// The index of the longest entry of `class`'s table that contains `dst`.
    pub fn entry(&self, class: ClassId, dst: IpAddr) -> Option<usize> {
        self.classes.get(class.0 as usize)?.longest(dst)
    }

    /// What [`Plan::lookup`] answers.
    pub fn lookup(&self, src: IpAddr, dst: IpAddr) -> PlanAction {
        if self.internal(dst) {
            return Action::Pass;
        }
        let Some(class) = self.plan.class_of(src) else { return Action::Pass };
        let entries = self.plan.classes.get(class.0 as usize).map_or(&[][..], |t| &t.entries[..]);
        self.entry(class, dst).and_then(|i| entries.get(i)).map_or(Action::Pass, |e| e.action)
    }
}

#[cfg(test)]
mod lookup_index_tests {
    use super::*;
    use crate::ir::DropReason;

    #[test]
    fn the_index_answers_as_the_linear_lookup() {
        let c = |s: &str| -> Cidr { s.parse().expect("cidr") };
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let drop = Action::Drop(DropReason::NoGateway);
        let entries = [("0.0.0.0/0", Action::Pass), ("11.0.0.0/8", drop), ("11.2.0.0/16", Action::Pass)]
            .into_iter()
            .chain([("11.2.3.0/24", drop), ("2001:db8::/32", drop), ("2001:db8:1::/48", Action::Pass)])
            .map(|(p, action)| Entry { prefix: c(p), action })
            .collect();
        let plan = Plan {
            node: "n".into(),
            node_ip: None,
            internal: vec![c("10.0.0.0/8"), c("fd00::/8")],
            gateways: vec![],
            slots: vec![],
            endpoints: vec![
                EndpointEntry { ip: ip("10.0.0.5"), class: ClassId(0), endpoint: "a/b".into() },
                EndpointEntry { ip: ip("fd00::5"), class: ClassId(0), endpoint: "a/b".into() },
            ],
            classes: vec![ClassTable { id: ClassId(0), entries }],
            gateway_tables: vec![],
        };
        let index = plan.lookup_index();
        let mut checked = 0;
        for src in ["10.0.0.5", "10.0.0.6", "fd00::5"] {
            for dst in [
                "11.2.3.4",
                "11.2.4.4",
                "11.3.0.0",
                "12.0.0.0",
                "10.1.1.1",
                "0.0.0.0",
                "255.255.255.255",
                "2001:db8:1::1",
                "2001:db8:2::",
                "fd00::1",
                "::",
                "2001:db9::",
            ] {
                assert_eq!(index.lookup(ip(src), ip(dst)), plan.lookup(ip(src), ip(dst)), "{src} -> {dst}");
                checked += 1;
            }
        }
        assert_eq!(index.lookup(ip("10.0.0.5"), ip("11.2.3.4")), drop, "the longest prefix wins");
        assert_eq!(index.lookup(ip("10.0.0.5"), ip("11.2.4.4")), Action::Pass);
        assert_eq!(checked, 36);
    }
}
