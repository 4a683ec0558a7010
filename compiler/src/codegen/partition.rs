//! From a plan's longest-prefix-match tables to what the classifier
//! branches on: counted rules, and per (class, family) a partition of the
//! whole address space into disjoint intervals with one outcome each.
//!
//! Guarantees:
//! - [`rules`] numbers the plan's non-`pass` entries `0, 1, …` in plan order
//!   (classes by id, entries in table order); that number is the rule's
//!   index in `egret_policy_stats`. `pass` entries (holes that minimization
//!   cuts into wider entries) count as [`Outcome::NoMatch`] and have no rule.
//! - [`partition`] returns intervals sorted by address that cover the whole
//!   family space `[0, max]` without gaps or overlaps, adjacent intervals
//!   with different outcomes; the outcome of every address in an interval is
//!   what [`crate::plan::Plan::lookup`] decides for a source of that class
//!   (cluster-internal first, then the longest matching entry, else pass).
//!   It runs in `O(n log n)` in the number of prefixes.

use crate::ir::Action;
use crate::ir::prefix::segment_starts;
use crate::plan::{ClassId, Plan};
use egret_lang::net::{Cidr, Family, family_max};

/// A counted plan entry (non-`pass`): index `index` of `egret_policy_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub index: u32,
    pub class: ClassId,
    /// Position of the entry in its class table.
    pub entry: usize,
    pub prefix: Cidr,
    pub action: Action,
}

/// What the classifier does for an address of an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Cluster-internal destination: pass.
    Internal,
    /// No entry, or a `pass` entry: pass.
    NoMatch,
    /// A counted rule (index into [`rules`]).
    Rule(u32),
}

/// An inclusive address interval of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub lo: u128,
    pub hi: u128,
    pub outcome: Outcome,
}

/// The counted rules of a plan, and for each class and entry its rule index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub rules: Vec<Rule>,
    /// `by_entry[class][entry]`: the rule index of a non-`pass` entry.
    pub by_entry: Vec<Vec<Option<u32>>>,
}

/// Numbers the plan's non-`pass` entries.
pub fn rules(plan: &Plan) -> Rules {
    let mut rules = Vec::new();
    let mut by_entry = Vec::with_capacity(plan.classes.len());
    for c in &plan.classes {
        let mut v = Vec::with_capacity(c.entries.len());
        for (i, e) in c.entries.iter().enumerate() {
            if e.action == Action::Pass {
                v.push(None);
            } else {
                let index = rules.len() as u32;
                rules.push(Rule { index, class: c.id, entry: i, prefix: e.prefix, action: e.action });
                v.push(Some(index));
            }
        }
        by_entry.push(v);
    }
    Rules { rules, by_entry }
}

/// The families a class has entries of (its endpoints' IPs of other
/// families are not in the plan).
pub fn class_families(plan: &Plan, class: ClassId) -> Vec<Family> {
    let Some(t) = plan.classes.get(class.0 as usize) else { return Vec::new() };
    [Family::V4, Family::V6].into_iter().filter(|f| t.entries.iter().any(|e| e.prefix.family() == *f)).collect()
}

#[derive(Clone, Copy)]
struct Item {
    lo: u128,
    hi: u128,
    len: u8,
    /// `None` for internal prefixes.
    outcome: Option<Outcome>,
}

/// The interval partition of `family`'s address space for sources of `class`.
pub fn partition(plan: &Plan, rules: &Rules, class: ClassId, family: Family) -> Vec<Interval> {
    let mut items: Vec<Item> = Vec::new();
    for c in plan.internal.iter().filter(|c| c.family() == family) {
        let (lo, hi) = c.range();
        items.push(Item { lo, hi, len: c.len, outcome: None });
    }
    if let Some(t) = plan.classes.get(class.0 as usize) {
        for (i, e) in t.entries.iter().enumerate() {
            if e.prefix.family() != family {
                continue;
            }
            let (lo, hi) = e.prefix.range();
            let rule = rules.by_entry.get(class.0 as usize).and_then(|v| v.get(i).copied().flatten());
            let outcome = match rule {
                Some(r) => Outcome::Rule(r),
                None => Outcome::NoMatch,
            };
            items.push(Item { lo, hi, len: e.prefix.len, outcome: Some(outcome) });
        }
    }
    items.sort_by_key(|i| (i.lo, i.len));
    let prefixes: Vec<Cidr> = plan
        .internal
        .iter()
        .copied()
        .chain(plan.classes.get(class.0 as usize).into_iter().flat_map(|t| t.entries.iter().map(|e| e.prefix)))
        .collect();
    let starts = segment_starts(family, &prefixes);
    let max = family_max(family);
    // prefixes are laminar (nested or disjoint): one stack per kind
    let mut internal: Vec<Item> = Vec::new();
    let mut entries: Vec<Item> = Vec::new();
    let mut next = 0;
    let mut out: Vec<Interval> = Vec::new();
    for (k, &p) in starts.iter().enumerate() {
        internal.retain(|i| i.hi >= p);
        entries.retain(|i| i.hi >= p);
        while let Some(it) = items.get(next).filter(|i| i.lo <= p) {
            if it.hi >= p {
                if it.outcome.is_none() {
                    internal.push(*it);
                } else {
                    entries.push(*it);
                }
            }
            next += 1;
        }
        let outcome = if !internal.is_empty() {
            Outcome::Internal
        } else {
            // the innermost containing entry: the longest of those on the stack
            entries.iter().max_by_key(|i| i.len).and_then(|i| i.outcome).unwrap_or(Outcome::NoMatch)
        };
        let hi = starts.get(k + 1).map_or(max, |n| n - 1);
        match out.last_mut() {
            Some(last) if last.outcome == outcome => last.hi = hi,
            _ => out.push(Interval { lo: p, hi, outcome }),
        }
    }
    out
}

/// Total leaves of the inline layout's trees: every partition interval of
/// every (class, family) plus every endpoint IP. The layout threshold is on
/// this number.
pub fn inline_size(plan: &Plan, rules: &Rules) -> usize {
    inline_size_up_to(plan, rules, usize::MAX)
}

/// [`inline_size`], but stops counting once it exceeds `limit`.
pub fn inline_size_up_to(plan: &Plan, rules: &Rules, limit: usize) -> usize {
    let mut n = plan.endpoints.len();
    for c in &plan.classes {
        for f in class_families(plan, c.id) {
            if n > limit {
                return n;
            }
            n += partition(plan, rules, c.id, f).len();
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DropReason, Entry, GatewayDecl};
    use crate::plan::{ClassTable, EndpointEntry};
    use crate::resolve::SlotId;
    use egret_lang::net::u128_to_ip;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn partition_agrees_with_lookup() {
        let gw: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let plan = Plan {
            node: "n".into(),
            node_ip: None,
            internal: vec![c("10.0.0.0/16"), c("10.3.0.0/16")],
            gateways: vec![GatewayDecl { node: "g".into(), ip: gw }],
            slots: vec![],
            endpoints: vec![EndpointEntry {
                ip: "10.0.0.5".parse().unwrap(),
                class: ClassId(0),
                endpoint: "a/b".into(),
            }],
            classes: vec![ClassTable {
                id: ClassId(0),
                entries: vec![
                    Entry { prefix: c("0.0.0.0/0"), action: Action::redirect(gw, SlotId(7)) },
                    Entry { prefix: c("10.0.0.0/8"), action: Action::Pass },
                    Entry { prefix: c("10.3.0.0/24"), action: Action::Drop(DropReason::NoGateway) },
                    Entry { prefix: c("192.168.0.0/16"), action: Action::Drop(DropReason::NoGateway) },
                ],
            }],
            gateway_tables: vec![],
        };
        let r = rules(&plan);
        assert_eq!(r.rules.len(), 3);
        let p = partition(&plan, &r, ClassId(0), Family::V4);
        assert_eq!(p.first().map(|i| i.lo), Some(0));
        assert_eq!(p.last().map(|i| i.hi), Some(u32::MAX as u128));
        for w in p.windows(2) {
            assert_eq!(w[0].hi + 1, w[1].lo);
            assert_ne!(w[0].outcome, w[1].outcome);
        }
        let src = plan.endpoints[0].ip;
        for iv in &p {
            for a in [iv.lo, iv.hi] {
                let dst = u128_to_ip(Family::V4, a);
                let want = plan.lookup(src, dst);
                let got = match iv.outcome {
                    Outcome::Internal | Outcome::NoMatch => Action::Pass,
                    Outcome::Rule(k) => r.rules[k as usize].action,
                };
                assert_eq!(got, want, "{dst}");
            }
        }
        assert!(p.iter().any(|i| i.outcome == Outcome::Internal));
        assert_eq!(inline_size(&plan, &r), 1 + p.len());
    }
}
