//! The node's decision table for people ([`DecisionTable`]), recorded in
//! every node artifact (`Artifact::with_decisions`) so that `egret-agent
//! maps` can show it from what is pinned: with the `inline` layout the
//! decisions are code and no map holds them; with `maps` the loader decodes
//! the live tables and uses the record for what the maps do not say (each
//! source's class, egress addresses of remote slots). No program reads it.

use std::net::{IpAddr, Ipv6Addr};

use egret_bpf::artifact::{Decision, DecisionRow, DecisionTable};

use super::partition;
use crate::ir::{Action, Effect, Target};
use crate::plan::Plan;
use crate::resolve::{EgressIp, World};

/// The decision table of `plan` for an artifact of layout `layout` (`inline`
/// or `maps`): one row per (local endpoint, entry of its class), the
/// cluster-internal prefixes, and the egress addresses (IPv4, IPv6) of every
/// slot the rows name that are known at compile time (from `world`, else
/// from the slots the node serves).
#[must_use]
pub fn decision_table(plan: &Plan, world: Option<&World>, layout: &str) -> DecisionTable {
    let rules = partition::rules(plan);
    let mut rows = Vec::new();
    for e in &plan.endpoints {
        let Some(class) = plan.classes.get(e.class.0 as usize) else { continue };
        for (i, entry) in class.entries.iter().enumerate() {
            let target = |t: &Target| match t.effect() {
                Effect::Redirect { gateway, slot } => Decision::Redirect { gateway, slot: slot.0 },
                Effect::LocalEgress { slot } => Decision::LocalEgress { slot: slot.0 },
                Effect::Pass => Decision::Pass,
                Effect::Drop(_) => Decision::Drop,
            };
            let (decision, failover) = match entry.action {
                Action::Pass => (Decision::Pass, Vec::new()),
                Action::Drop(_) => (Decision::Drop, Vec::new()),
                Action::Egress(c) => (target(&c.primary()), c.targets()[1..].iter().map(target).collect()),
            };
            let rule = rules.by_entry.get(e.class.0 as usize).and_then(|r| r.get(i).copied().flatten());
            let destination = entry.prefix.network().to_string();
            rows.push(DecisionRow { source: e.ip, destination, decision, failover, rule });
        }
    }
    rows.sort_by(|a, b| (a.source, &a.destination).cmp(&(b.source, &b.destination)));
    let mut internal: Vec<String> = plan.internal.iter().map(|c| c.network().to_string()).collect();
    internal.sort();
    let known = |ip: Option<&EgressIp>| ip.and_then(EgressIp::known);
    let mut egress: std::collections::BTreeMap<u32, IpAddr> =
        plan.slots.iter().filter_map(|s| Some((s.id.0, known(s.v4.as_ref())?))).collect();
    let known6 = |ip: Option<&EgressIp>| match known(ip) {
        Some(IpAddr::V6(a)) => Some(a),
        _ => None,
    };
    let mut egress6: std::collections::BTreeMap<u32, Ipv6Addr> =
        plan.slots.iter().filter_map(|s| Some((s.id.0, known6(s.v6.as_ref())?))).collect();
    if let Some(w) = world {
        egress.extend(w.slots().iter().filter_map(|s| Some((s.id.0, known(s.v4.as_ref())?))));
        egress6.extend(w.slots().iter().filter_map(|s| Some((s.id.0, known6(s.v6.as_ref())?))));
    }
    let named: std::collections::BTreeSet<u32> = rows
        .iter()
        .flat_map(|r| std::iter::once(&r.decision).chain(&r.failover))
        .filter_map(|d| match d {
            Decision::Redirect { slot, .. } | Decision::LocalEgress { slot } => Some(*slot),
            Decision::Pass | Decision::Drop => None,
        })
        .collect();
    egress.retain(|slot, _| named.contains(slot));
    egress6.retain(|slot, _| named.contains(slot));
    let classes = plan.endpoints.iter().map(|e| (e.ip, e.class.0)).collect();
    DecisionTable { layout: layout.to_owned(), internal, rows, classes, egress, egress6 }
}
