//! The plan verifier and [`Verified`], the proof code generation requires.
//!
//! Invariants checked (all violations are collected):
//! 1. Every prefix is canonical; `internal` is sorted and pairwise disjoint.
//! 2. `endpoints` is sorted by IP without duplicates; every class id exists;
//!    every class is used by at least one endpoint.
//! 3. `classes[i].id == i`; each table is non-empty, sorted in prefix order,
//!    without duplicate prefixes, and holds only prefixes of families that
//!    some endpoint of the class has.
//! 4. Every `Redirect` targets a declared gateway that is not this node;
//!    every `LocalEgress` uses a slot this node serves.
//! 5. `slots` is sorted by id, unique, every one served by this node.
//! 6. `gateway_tables` is sorted by slot, each slot declared, sources sorted
//!    and unique, one source node (`from`) per source.

use super::{ClassId, Plan};
use crate::ir::Action;
use crate::ir::prefix::prefix_order;
use egret_lang::net::{Cidr, Family};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Deref;

/// A value that passed its verifier. Only [`verify`] constructs a
/// `Verified<Plan>`; the field is private, so code generation can rely on
/// the invariants above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Verified<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// One broken plan invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanViolation {
    #[error("{place}: prefix {prefix} has host bits set")]
    NonCanonical { place: String, prefix: Cidr },
    #[error("{place}: `{item}` is out of order or duplicated")]
    Order { place: String, item: String },
    #[error("{place}: {a} overlaps {b}")]
    Overlap { place: String, a: Cidr, b: Cidr },
    #[error("endpoint {ip} refers to missing class {class}")]
    MissingClass { ip: std::net::IpAddr, class: u32 },
    #[error("class {class} is used by no endpoint")]
    UnusedClass { class: u32 },
    #[error("class at position {position} has id {id}")]
    ClassId { position: usize, id: u32 },
    #[error("class {class} has an empty table")]
    EmptyClass { class: u32 },
    #[error("class {class}: prefix {prefix} is of a family none of its endpoints has")]
    Family { class: u32, prefix: Cidr },
    #[error("{place}: `{action}` references an undeclared {what}")]
    Dangling { place: String, action: String, what: &'static str },
    #[error("{place}: redirect to this node's own IP")]
    RedirectToSelf { place: String },
    #[error("slot {slot} belongs to `{gateway}`, not this node")]
    ForeignSlot { slot: String, gateway: String },
    #[error("{place}: {from} source nodes for {sources} sources")]
    SourceNodes { place: String, sources: usize, from: usize },
}

/// Verifies a plan, returning the proof or every violation.
pub fn verify(plan: Plan) -> Result<Verified<Plan>, Vec<PlanViolation>> {
    let mut v = Vec::new();
    for c in &plan.internal {
        if c.has_host_bits() {
            v.push(PlanViolation::NonCanonical { place: "internal".into(), prefix: *c });
        }
    }
    for w in plan.internal.windows(2) {
        if prefix_order(&w[0], &w[1]) != Ordering::Less {
            v.push(PlanViolation::Order { place: "internal".into(), item: w[1].to_string() });
        }
        if w[0].overlaps(&w[1]) {
            v.push(PlanViolation::Overlap { place: "internal".into(), a: w[0], b: w[1] });
        }
    }
    // 2
    for w in plan.endpoints.windows(2) {
        if w[0].ip >= w[1].ip {
            v.push(PlanViolation::Order { place: "endpoints".into(), item: w[1].ip.to_string() });
        }
    }
    let mut used: BTreeSet<ClassId> = BTreeSet::new();
    let mut fams: Vec<BTreeSet<Family>> = vec![BTreeSet::new(); plan.classes.len()];
    for e in &plan.endpoints {
        match fams.get_mut(e.class.0 as usize) {
            Some(f) => {
                f.insert(Family::of(&e.ip));
                used.insert(e.class);
            }
            None => v.push(PlanViolation::MissingClass { ip: e.ip, class: e.class.0 }),
        }
    }
    // 3, 4
    for (i, c) in plan.classes.iter().enumerate() {
        if c.id.0 as usize != i {
            v.push(PlanViolation::ClassId { position: i, id: c.id.0 });
        }
        if !used.contains(&c.id) {
            v.push(PlanViolation::UnusedClass { class: c.id.0 });
        }
        if c.entries.is_empty() {
            v.push(PlanViolation::EmptyClass { class: c.id.0 });
        }
        let place = format!("class {}", c.id.0);
        for w in c.entries.windows(2) {
            if prefix_order(&w[0].prefix, &w[1].prefix) != Ordering::Less {
                v.push(PlanViolation::Order { place: place.clone(), item: w[1].prefix.to_string() });
            }
        }
        for e in &c.entries {
            if e.prefix.has_host_bits() {
                v.push(PlanViolation::NonCanonical { place: place.clone(), prefix: e.prefix });
            }
            if fams.get(i).is_some_and(|f| !f.contains(&e.prefix.family())) {
                v.push(PlanViolation::Family { class: c.id.0, prefix: e.prefix });
            }
            let eplace = || format!("{place} {}", e.prefix);
            let Action::Egress(choice) = e.action else { continue };
            for t in choice.targets() {
                if t.local {
                    if Some(t.gateway) != plan.node_ip || !plan.slots.iter().any(|s| s.id == t.slot) {
                        v.push(PlanViolation::Dangling { place: eplace(), action: e.action.to_string(), what: "slot" });
                    }
                    continue;
                }
                if Some(t.gateway) == plan.node_ip {
                    v.push(PlanViolation::RedirectToSelf { place: eplace() });
                }
                if !plan.gateways.iter().any(|g| g.ip == t.gateway) {
                    v.push(PlanViolation::Dangling { place: eplace(), action: e.action.to_string(), what: "gateway" });
                }
            }
        }
    }
    // 5
    for w in plan.slots.windows(2) {
        if w[0].id >= w[1].id {
            v.push(PlanViolation::Order { place: "slots".into(), item: w[1].id.to_string() });
        }
    }
    for s in &plan.slots {
        if s.gateway != plan.node {
            v.push(PlanViolation::ForeignSlot { slot: s.id.to_string(), gateway: s.gateway.clone() });
        }
    }
    // 6
    for w in plan.gateway_tables.windows(2) {
        if w[0].slot >= w[1].slot {
            v.push(PlanViolation::Order { place: "gateway tables".into(), item: w[1].slot.to_string() });
        }
    }
    for t in &plan.gateway_tables {
        let place = format!("gateway table {}", t.slot);
        if !plan.slots.iter().any(|s| s.id == t.slot) {
            v.push(PlanViolation::Dangling { place: place.clone(), action: "allow".into(), what: "slot" });
        }
        for w in t.sources.windows(2) {
            if w[0] >= w[1] {
                v.push(PlanViolation::Order { place: place.clone(), item: w[1].to_string() });
            }
        }
        if t.from.len() != t.sources.len() {
            v.push(PlanViolation::SourceNodes { place: place.clone(), sources: t.sources.len(), from: t.from.len() });
        }
    }
    if v.is_empty() { Ok(Verified(plan)) } else { Err(v) }
}
