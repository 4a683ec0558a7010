//! Policy-set checks that need no cluster snapshot.
//!
//! Candidate pairs are found through indexes, not by comparing every policy
//! with every other: ties need an identical destination prefix (a hash index),
//! exclusion differences an enclosing one (at most 129 ancestor look-ups), and
//! within a group, items pinned to different values of the group's most common
//! pod label (typically `app`) can never select the same pod.

use super::constraints::{ItemConstraints, implies, satisfiable};
use super::intervals::{RangeSet, first_address};
use egret_lang::ast::{GatewaySpec, Policy};
use egret_lang::codes;
use egret_lang::diag::Diagnostic;
use egret_lang::net::{Cidr, prefix_mask};
use egret_lang::source::Spanned;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A policy prepared for set reasoning.
struct Prepared<'a> {
    p: &'a Policy,
    items: Vec<ItemConstraints>,
    dests: Vec<Spanned<Cidr>>,
    excl: Vec<Cidr>,
}

impl<'a> Prepared<'a> {
    fn new(p: &'a Policy) -> Prepared<'a> {
        Prepared {
            p,
            items: p
                .selectors
                .iter()
                .filter(|i| i.pod_selector.is_some() || i.namespace_selector.is_some())
                .map(ItemConstraints::of)
                .filter(ItemConstraints::satisfiable)
                .collect(),
            dests: p.destination_cidrs.iter().map(|c| Spanned::new(c.value.network(), c.span)).collect(),
            excl: p.excluded_cidrs.iter().map(|c| c.value.network()).collect(),
        }
    }

    fn name(&self) -> &str {
        &self.p.name.value
    }

    /// Some pod could be selected by both.
    fn overlaps(&self, other: &Prepared<'_>) -> bool {
        self.items.iter().any(|a| other.items.iter().any(|b| satisfiable(a, b)))
    }

    /// Every pod `self` selects, `other` selects too.
    fn covered_by(&self, other: &Prepared<'_>) -> bool {
        !self.items.is_empty() && self.items.iter().all(|a| other.items.iter().any(|b| implies(a, b)))
    }

    /// Addresses of `c` where this policy's rank is exactly `c`: not excluded and
    /// not inside a longer destination of the same policy.
    fn own_region(&self, c: &Cidr) -> RangeSet {
        let mut r = RangeSet::of(c);
        for x in &self.excl {
            r.subtract(x);
        }
        for d in &self.dests {
            if d.value.len > c.len && c.contains(&d.value) {
                r.subtract(&d.value);
            }
        }
        r
    }
}

pub fn check(policies: &[Policy]) -> Vec<Diagnostic> {
    let prepared: Vec<Prepared<'_>> = policies.iter().map(Prepared::new).collect();
    let mut out = Vec::new();
    for p in &prepared {
        exclusion_without_effect(p, &mut out);
        cilium_node_selector(p, &mut out);
    }
    let mut by_dest: HashMap<Cidr, Vec<usize>> = HashMap::new();
    for (i, p) in prepared.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for d in &p.dests {
            if seen.insert(d.value) {
                by_dest.entry(d.value).or_default().push(i);
            }
        }
    }
    ties(&prepared, &by_dest, &mut out);
    shadowed(&prepared, &by_dest, &mut out);
    cilium_exclusions(&prepared, &by_dest, &mut out);
    out
}

fn exclusion_without_effect(p: &Prepared<'_>, out: &mut Vec<Diagnostic>) {
    for x in &p.p.excluded_cidrs {
        let n = x.value.network();
        if !p.dests.iter().any(|d| d.value.overlaps(&n)) {
            let mut d = Diagnostic::new(
                &codes::EXCLUSION_NO_EFFECT,
                format!("excluded CIDR `{}` is outside every destination of policy `{}`", x.value, p.name()),
            )
            .primary(x.span, "excludes nothing");
            for dest in &p.dests {
                d = d.secondary(dest.span, "destination");
            }
            out.push(d.note("egret's exclusions only carve holes in their own policy's destinations").help(
                "remove it, or add the destination it was meant to carve",
            ));
        }
    }
}

fn cilium_node_selector(p: &Prepared<'_>, out: &mut Vec<Diagnostic>) {
    let items = &p.p.selectors;
    if items.len() < 2 {
        return;
    }
    let with: Vec<_> = items.iter().filter(|i| i.node_selector.is_some()).collect();
    if with.is_empty() {
        return;
    }
    let distinct: BTreeSet<String> =
        with.iter().map(|i| format!("{:?}", ItemConstraints::of(i).node)).collect();
    if with.len() == items.len() && distinct.len() == 1 {
        return;
    }
    let mut d = Diagnostic::new(
        &codes::CILIUM_NODE_SELECTOR,
        format!("Cilium and egret select different pods for policy `{}`", p.name()),
    );
    for i in items {
        d = match &i.node_selector {
            Some(ns) => d.primary(ns.span, "egret applies this nodeSelector to its own item only"),
            None => d.secondary(i.span, "no nodeSelector: in Cilium the other items' nodeSelectors apply here too"),
        };
    }
    out.push(
        d.note("Cilium ORs the nodeSelectors of all items and applies them to every item; egret pairs each with its own item")
            .help("give every item the same nodeSelector, or split the policy so both read it the same way"),
    );
}

/// Groups of candidate pairs that might select a common pod.
fn candidate_pairs(prepared: &[Prepared<'_>], group: &[usize]) -> Vec<(usize, usize)> {
    // The most common pinned pod key in the group.
    let mut freq: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in group {
        for it in &prepared[i].items {
            for (k, _) in it.pod.pinned_keys() {
                *freq.entry(k).or_default() += 1;
            }
        }
    }
    let key = freq.iter().max_by_key(|(_, n)| **n).map(|(k, _)| *k);
    let mut buckets: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
    let mut unpinned = BTreeSet::new();
    for &i in group {
        for it in &prepared[i].items {
            match key.and_then(|k| it.pod.pinned(k)) {
                Some(v) => {
                    buckets.entry(v).or_default().insert(i);
                }
                None => {
                    unpinned.insert(i);
                }
            }
        }
    }
    let mut pairs = BTreeSet::new();
    let mut add = |a: usize, b: usize| {
        if a != b {
            pairs.insert((a.min(b), a.max(b)));
        }
    };
    for b in buckets.values() {
        let v: Vec<_> = b.iter().copied().collect();
        for (x, &a) in v.iter().enumerate() {
            for &c in &v[x + 1..] {
                add(a, c);
            }
            for &u in &unpinned {
                add(a, u);
            }
        }
    }
    let u: Vec<_> = unpinned.iter().copied().collect();
    for (x, &a) in u.iter().enumerate() {
        for &c in &u[x + 1..] {
            add(a, c);
        }
    }
    pairs.into_iter().collect()
}

fn gateway_key(g: &GatewaySpec) -> String {
    format!(
        "{:?}|{:?}|{:?}",
        ItemConstraints::of(&egret_lang::ast::SelectorItem {
            span: g.span,
            pod_selector: None,
            namespace_selector: None,
            node_selector: Some(g.node_selector.clone()),
        })
        .node,
        g.egress_ip.as_ref().map(|i| i.value),
        g.interface.as_ref().map(|i| i.value.clone())
    )
}

fn same_gateways(a: &Policy, b: &Policy) -> bool {
    let ka: Vec<String> = a.gateways().iter().map(gateway_key).collect();
    let kb: Vec<String> = b.gateways().iter().map(gateway_key).collect();
    ka == kb
}

fn ties(prepared: &[Prepared<'_>], by_dest: &HashMap<Cidr, Vec<usize>>, out: &mut Vec<Diagnostic>) {
    let mut groups: Vec<(&Cidr, &Vec<usize>)> = by_dest.iter().filter(|(_, v)| v.len() > 1).collect();
    groups.sort();
    for (c, group) in groups {
        for (a, b) in candidate_pairs(prepared, group) {
            let (p, q) = if prepared[a].name() <= prepared[b].name() { (&prepared[a], &prepared[b]) } else { (&prepared[b], &prepared[a]) };
            if !p.overlaps(q) {
                continue;
            }
            let mut region = p.own_region(c);
            for x in &q.excl {
                region.subtract(x);
            }
            for d in &q.dests {
                if d.value.len > c.len && c.contains(&d.value) {
                    region.subtract(&d.value);
                }
            }
            if region.is_empty() {
                continue;
            }
            let (Some(pd), Some(qd)) = (p.dests.iter().find(|d| d.value == *c), q.dests.iter().find(|d| d.value == *c)) else {
                continue;
            };
            let example = first_address(&region, c.family()).map(|a| a.to_string()).unwrap_or_default();
            let same = same_gateways(p.p, q.p);
            let code = if same { &codes::TIE } else { &codes::CONFLICT };
            let what = if same { "with the same gateway and egress IP" } else { "with different gateways or egress IPs" };
            out.push(
                Diagnostic::new(code, format!("policies `{}` and `{}` tie for destination `{c}` {what}", p.name(), q.name()))
                    .primary(qd.span, format!("`{}` captures `{c}`…", q.name()))
                    .secondary(pd.span, format!("…and so does `{}`, for pods both select", p.name()))
                    .note(format!(
                        "for a pod both select, traffic to e.g. {example} matches both with a /{} prefix; egret picks `{}` (smallest name), Cilium picks either",
                        c.len,
                        p.name()
                    ))
                    .help(if same {
                        "merge the policies, or make their selectors disjoint"
                    } else {
                        "make the selectors disjoint, give the policy that should win a more specific destination, or use the same gateway and egress IP"
                    }),
            );
        }
    }
}

fn shadowed(prepared: &[Prepared<'_>], by_dest: &HashMap<Cidr, Vec<usize>>, out: &mut Vec<Diagnostic>) {
    // Sorted destination index for "entries inside d" queries.
    let mut sorted: Vec<(u128, u128, u8, usize)> = Vec::new();
    for (c, ps) in by_dest {
        let (lo, hi) = c.range();
        for &i in ps {
            sorted.push((lo, hi, c.len, i));
        }
    }
    sorted.sort();
    for (pi, p) in prepared.iter().enumerate() {
        if p.items.is_empty() || p.dests.is_empty() {
            continue;
        }
        let mut all_covered = true;
        'dests: for d in &p.dests {
            let c = d.value;
            let mut region = p.own_region(&c);
            if region.is_empty() {
                continue;
            }
            // Policies with an entry containing d (ancestors, incl. d itself) or inside d.
            let mut cands: BTreeSet<usize> = BTreeSet::new();
            for len in 0..=c.len {
                let anc = Cidr::new(egret_lang::net::u128_to_ip(c.family(), c.bits() & prefix_mask(c.family(), len)), len);
                if let Some(v) = by_dest.get(&anc) {
                    cands.extend(v.iter().copied());
                }
            }
            let (lo, hi) = c.range();
            let start = sorted.partition_point(|e| e.0 < lo);
            for e in &sorted[start..] {
                if e.0 > hi {
                    break;
                }
                if e.1 <= hi {
                    cands.insert(e.3);
                }
            }
            cands.remove(&pi);
            for qi in cands {
                let q = &prepared[qi];
                if q.p.name.value == p.p.name.value || !p.covered_by(q) {
                    continue;
                }
                for e in &q.dests {
                    let e = e.value;
                    if e.family() != c.family() || !e.overlaps(&c) {
                        continue;
                    }
                    let better = e.len > c.len || (e.len == c.len && q.name() < p.name());
                    if !better {
                        continue;
                    }
                    // addresses of e ∩ c that Q captures
                    let mut won = RangeSet::of(&e);
                    won.intersect(&c);
                    for x in &q.excl {
                        won.subtract(x);
                    }
                    for &(a, b) in won.ranges() {
                        subtract_range(&mut region, a, b);
                    }
                    if region.is_empty() {
                        continue 'dests;
                    }
                }
            }
            all_covered = false;
            break;
        }
        if all_covered {
            out.push(
                Diagnostic::new(&codes::SHADOWED, format!("policy `{}` never takes effect", p.name()))
                    .primary(p.p.name.span, "shadowed")
                    .note("for every pod it selects and every destination it captures, another policy selecting the same pods has a longer destination prefix or a smaller name")
                    .help("delete it, or narrow the policies that shadow it"),
            );
        }
    }
}

fn subtract_range(set: &mut RangeSet, lo: u128, hi: u128) {
    *set = std::mem::take(set).without(lo, hi);
}

impl RangeSet {
    /// The set minus `[lo, hi]`.
    pub fn without(self, lo: u128, hi: u128) -> RangeSet {
        let mut out = RangeSet::default();
        for &(a, b) in self.ranges() {
            if b < lo || a > hi {
                out.push_raw(a, b);
                continue;
            }
            if a < lo {
                out.push_raw(a, lo - 1);
            }
            if b > hi {
                out.push_raw(hi + 1, b);
            }
        }
        out
    }
}

fn cilium_exclusions(prepared: &[Prepared<'_>], by_dest: &HashMap<Cidr, Vec<usize>>, out: &mut Vec<Diagnostic>) {
    for p in prepared {
        for x in &p.p.excluded_cidrs {
            let xn = x.value.network();
            let mut others: BTreeSet<(String, usize)> = BTreeSet::new();
            for len in 0..xn.len {
                let anc = Cidr::new(egret_lang::net::u128_to_ip(xn.family(), xn.bits() & prefix_mask(xn.family(), len)), len);
                for &qi in by_dest.get(&anc).into_iter().flatten() {
                    let q = &prepared[qi];
                    if q.name() == p.name() || !p.overlaps(q) {
                        continue;
                    }
                    let mut r = RangeSet::of(&xn);
                    for y in &q.excl {
                        r.subtract(y);
                    }
                    if !r.is_empty() {
                        others.insert((q.name().to_string(), qi));
                    }
                }
            }
            if let Some((qname, qi)) = others.iter().next() {
                let q = &prepared[*qi];
                let qd = q.dests.iter().find(|d| d.value.contains(&xn)).map(|d| d.span).unwrap_or(q.p.name.span);
                let more = if others.len() > 1 { format!(" (and {} more)", others.len() - 1) } else { String::new() };
                out.push(
                    Diagnostic::new(
                        &codes::CILIUM_EXCLUSION,
                        format!("excluded CIDR `{}` of `{}` overlaps the destinations of `{qname}`{more}", x.value, p.name()),
                    )
                    .primary(x.span, "excluded here")
                    .secondary(qd, format!("`{qname}` captures it"))
                    .note(format!(
                        "for pods both policies select, Cilium sends `{}` the normal way (its exclusion entry shadows `{qname}`'s wider entry); egret sends it through `{qname}`'s gateway",
                        xn
                    ))
                    .help(format!("if that traffic must not use a gateway, exclude `{xn}` in `{qname}` too")),
                );
            }
        }
    }
}
