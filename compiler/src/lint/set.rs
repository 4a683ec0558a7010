//! Policy-set checks that need no cluster snapshot.
//!
//! Candidate pairs are found through indexes, not by comparing every policy
//! with every other: ties need an identical destination prefix (a hash index),
//! exclusion differences an enclosing one (at most 129 ancestor look-ups), and
//! within a group, items pinned to different values of the group's most common
//! pod label (typically `app`) can never select the same pod.
//!
//! Work and output stay linear where a policy set repeats itself: policies
//! identical in everything the set checks read (selectors, destinations,
//! exclusions, gateways) form one [`Twins`] class, checked once through its
//! first member by name and reported as one finding with a count; and per
//! destination at most [`LISTED_TIES`] ties or conflicts are listed, the
//! rest counted in a note.

use super::constraints::{ItemConstraints, implies, satisfiable};
use super::intervals::{RangeSet, first_address};
use egret_lang::ast::{GatewaySpec, Policy};
use egret_lang::codes;
use egret_lang::diag::Diagnostic;
use egret_lang::net::{Cidr, Family, prefix_mask};
use egret_lang::source::Spanned;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A policy prepared for set reasoning.
struct Prepared<'a> {
    p: &'a Policy,
    items: Vec<ItemConstraints>,
    dests: Vec<Spanned<Cidr>>,
    excl: Vec<Cidr>,
    /// Each gateway as text ([`gateway_key`]), in order: compared per pair.
    gateways: Vec<String>,
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
            gateways: p.gateways().iter().map(gateway_key).collect(),
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

/// Pinned values per policy in two dimensions: the most commonly pinned pod
/// label (typically `app`) and the namespace name. For each dimension a
/// policy's value set is `None` when some item does not pin it (and so may
/// select pods with any value). Two policies can share a pod only if, in every
/// dimension, either is `None` or their sets intersect; P's pods can all be Q's
/// only if, in every dimension, Q is `None` or P's set is inside Q's.
struct Pins {
    of: Vec<[Option<BTreeSet<String>>; 2]>,
    by_pod: HashMap<String, Vec<usize>>,
    /// Pod-unpinned policies by namespace value, and those unpinned in both.
    pod_free_by_ns: HashMap<String, Vec<usize>>,
    free: Vec<usize>,
}

fn dim_values(p: &Prepared<'_>, f: impl Fn(&ItemConstraints) -> Option<String>) -> Option<BTreeSet<String>> {
    if p.items.is_empty() {
        return None;
    }
    p.items.iter().map(f).collect()
}

fn subset(a: &Option<BTreeSet<String>>, b: &Option<BTreeSet<String>>) -> bool {
    match (a, b) {
        (_, None) => true,
        (Some(x), Some(y)) => x.is_subset(y),
        (None, Some(_)) => false,
    }
}

fn meet(a: &Option<BTreeSet<String>>, b: &Option<BTreeSet<String>>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => !x.is_disjoint(y),
        _ => true,
    }
}

impl Pins {
    fn new(prepared: &[Prepared<'_>]) -> Pins {
        let mut freq: HashMap<&str, usize> = HashMap::new();
        for p in prepared {
            for it in &p.items {
                for (k, _) in it.pod.pinned_keys() {
                    *freq.entry(k).or_default() += 1;
                }
            }
        }
        let key = freq.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(k, _)| k.to_string());
        let mut pins = Pins {
            of: Vec::with_capacity(prepared.len()),
            by_pod: HashMap::new(),
            pod_free_by_ns: HashMap::new(),
            free: Vec::new(),
        };
        for (i, p) in prepared.iter().enumerate() {
            let pod = match &key {
                Some(k) => dim_values(p, |it| it.pod.pinned(k).map(str::to_string)),
                None => None,
            };
            let ns =
                dim_values(p, |it| it.namespace.pinned(super::constraints::NAMESPACE_NAME_LABEL).map(str::to_string));
            match (&pod, &ns) {
                (Some(vals), _) => {
                    for v in vals {
                        pins.by_pod.entry(v.clone()).or_default().push(i);
                    }
                }
                (None, Some(vals)) => {
                    for v in vals {
                        pins.pod_free_by_ns.entry(v.clone()).or_default().push(i);
                    }
                }
                (None, None) => pins.free.push(i),
            }
            pins.of.push([pod, ns]);
        }
        pins
    }

    fn may_overlap(&self, a: usize, b: usize) -> bool {
        (0..2).all(|d| meet(&self.of[a][d], &self.of[b][d]))
    }

    fn may_cover_pair(&self, p: usize, q: usize) -> bool {
        (0..2).all(|d| subset(&self.of[p][d], &self.of[q][d]))
    }

    /// Policies that might select every pod `p` selects.
    fn may_cover(&self, p: usize) -> Vec<usize> {
        let mut out: BTreeSet<usize> = BTreeSet::new();
        let [pod, ns] = &self.of[p];
        let mut consider = |q: usize| {
            if q != p && self.may_cover_pair(p, q) {
                out.insert(q);
            }
        };
        for v in pod.iter().flatten() {
            self.by_pod.get(v).into_iter().flatten().for_each(|&q| consider(q));
        }
        match ns {
            Some(vals) => {
                for v in vals {
                    self.pod_free_by_ns.get(v).into_iter().flatten().for_each(|&q| consider(q));
                }
            }
            None => self.pod_free_by_ns.values().flatten().for_each(|&q| consider(q)),
        }
        self.free.iter().for_each(|&q| consider(q));
        out.into_iter().collect()
    }
}

/// Ties and conflicts listed per destination; the rest are counted.
pub const LISTED_TIES: usize = 10;
/// Names listed in a finding about many policies; the rest are counted.
const LISTED_NAMES: usize = 5;
/// Secondary labels on one finding; the rest are counted.
const LISTED_LABELS: usize = 3;

/// Classes of policies identical in everything the set checks read (twins),
/// or in everything but their gateways (selection classes: same pods, same
/// destinations, so they tie everywhere and the smallest name wins).
struct Twins {
    /// Each policy's class: the index of its member with the smallest name.
    first: Vec<usize>,
    /// The members of each class of two or more, sorted by name, by first member.
    members: BTreeMap<usize, Vec<usize>>,
}

impl Twins {
    fn new(prepared: &[Prepared<'_>], with_gateways: bool) -> Twins {
        let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in prepared.iter().enumerate() {
            let mut dests: Vec<Cidr> = p.dests.iter().map(|d| d.value).collect();
            let mut excl = p.excl.clone();
            dests.sort_unstable();
            excl.sort_unstable();
            let gateways: &[String] = if with_gateways { &p.gateways } else { &[] };
            by_key.entry(format!("{:?}|{dests:?}|{excl:?}|{gateways:?}", p.items)).or_default().push(i);
        }
        let mut first: Vec<usize> = (0..prepared.len()).collect();
        let mut members = BTreeMap::new();
        for mut class in by_key.into_values().filter(|c| c.len() > 1) {
            class.sort_by(|&a, &b| prepared[a].name().cmp(prepared[b].name()).then(a.cmp(&b)));
            for &m in &class {
                first[m] = class[0];
            }
            members.insert(class[0], class);
        }
        Twins { first, members }
    }

    fn is_first(&self, i: usize) -> bool {
        self.first[i] == i
    }

    /// The other members of `i`'s class (empty for a policy without twins).
    fn others(&self, i: usize) -> &[usize] {
        self.members.get(&self.first[i]).map_or(&[], |m| &m[1..])
    }
}

/// `names` as `` `a`, `b` `` with at most [`LISTED_NAMES`] listed and the rest counted.
fn name_list<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let n = names.len();
    let mut s = names.take(LISTED_NAMES).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    if n > LISTED_NAMES {
        s.push_str(&format!(" and {} more", n - LISTED_NAMES));
    }
    s
}

/// Runs the set checks; with a resolved snapshot, ties also name the endpoints they affect now.
pub fn check(policies: &[Policy], world: Option<&crate::resolve::World>) -> Vec<Diagnostic> {
    let prepared: Vec<Prepared<'_>> = policies.iter().map(Prepared::new).collect();
    let pins = Pins::new(&prepared);
    let twins = Twins::new(&prepared, true);
    let selection = Twins::new(&prepared, false);
    let mut out = Vec::new();
    for p in &prepared {
        exclusion_without_effect(p, &mut out);
        cilium_node_selector(p, &mut out);
        egress_ip_family(p.p, &mut out);
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
    ties(&prepared, &by_dest, (&twins, &selection), world, &mut out);
    shadowed(&prepared, &pins, &selection, &mut out);
    cilium_exclusions(&prepared, &by_dest, &pins, &mut out);
    out
}

/// W0207: an `egressIP` of a family that none of the policy's destination
/// CIDRs has (while it has destinations): egret sends the destinations'
/// family from another address of the interface holding the IP; Cilium 1.20
/// refuses the policy (`ParseCEGP`), so there the traffic leaves the normal way.
fn egress_ip_family(p: &Policy, out: &mut Vec<Diagnostic>) {
    let has = |f: Family| p.destination_cidrs.iter().any(|c| c.value.family() == f);
    let mut seen = BTreeSet::new();
    for g in p.gateways() {
        let Some(ip) = &g.egress_ip else { continue };
        let family = Family::of(&ip.value);
        let other = if family == Family::V4 { Family::V6 } else { Family::V4 };
        if has(family) || !has(other) || !seen.insert(ip.value) {
            continue;
        }
        let (this, that) = (family_name(family), family_name(other));
        out.push(
            Diagnostic::new(
                &codes::EGRESS_IP_FAMILY_WITHOUT_DESTINATIONS,
                format!("egress IP {} is {this}, but policy `{}` has only {that} destinations", ip.value, p.name.value),
            )
            .primary(ip.span, format!("{this}: used for no destination"))
            .note(format!(
                "egret sends the policy's {that} traffic from the gateway's first {that} address on the interface holding {}, or drops it there (no-egress-ip) when the interface has none",
                ip.value
            ))
            .note(format!(
                "Cilium 1.20 refuses the policy (\"{this} egress IP {} cannot be used with only {that} destination CIDRs\"): the pods' traffic leaves the normal way, not through a gateway",
                ip.value
            ))
            .help(format!("write the {that} address to leave from as `egressIP`, or name the interface with `interface`")),
        );
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
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
            for dest in p.dests.iter().take(LISTED_LABELS) {
                d = d.secondary(dest.span, "destination");
            }
            if p.dests.len() > LISTED_LABELS {
                d = d.note(format!("the policy has {} more destinations", p.dests.len() - LISTED_LABELS));
            }
            out.push(
                d.note("egret's exclusions only carve holes in their own policy's destinations")
                    .help("remove it, or add the destination it was meant to carve"),
            );
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
    let distinct: BTreeSet<String> = with.iter().map(|i| format!("{:?}", ItemConstraints::of(i).node)).collect();
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

fn ties(
    prepared: &[Prepared<'_>],
    by_dest: &HashMap<Cidr, Vec<usize>>,
    (twins, selection): (&Twins, &Twins),
    world: Option<&crate::resolve::World>,
    out: &mut Vec<Diagnostic>,
) {
    let mut groups: Vec<(&Cidr, &Vec<usize>)> = by_dest.iter().filter(|(_, v)| v.len() > 1).collect();
    groups.sort();
    for (c, group) in groups {
        // Twins tie with each other (reported once, through the first two) and
        // like their first member with everyone else. Where two policies tie
        // depends only on their selection classes (selectors, destinations,
        // exclusions), so it is computed once per pair of classes, and the
        // pairs of their members are listed up to LISTED_TIES and counted.
        let firsts: Vec<usize> = group.iter().copied().filter(|&i| twins.is_first(i)).collect();
        let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &f in &firsts {
            members.entry(selection.first[f]).or_default().push(f);
        }
        for m in members.values_mut() {
            m.sort_by(|&a, &b| prepared[a].name().cmp(prepared[b].name()).then(a.cmp(&b)));
        }
        let heads: Vec<usize> = members.keys().copied().collect();
        let within_twins = firsts.iter().filter_map(|&f| twins.others(f).first().map(|&second| (f, second)));
        let within_classes = members.iter().filter(|(_, m)| m.len() > 1).map(|(&h, _)| (h, h));
        let mut listed = 0;
        let mut more = 0usize;
        for (a, b) in within_twins {
            let Some(region) = tie_region(&prepared[a], &prepared[b], c) else { continue };
            if listed < LISTED_TIES {
                listed += 1;
                out.extend(tie(prepared, c, (a, b), &region, twins, world));
            } else {
                more += 1;
            }
        }
        for (ha, hb) in within_classes.chain(candidate_pairs(prepared, &heads)) {
            let (ma, mb) = (&members[&ha], &members[&hb]);
            let (x, y) = if ha == hb { (ma[0], ma[1]) } else { (ha, hb) };
            let Some(region) = tie_region(&prepared[x], &prepared[y], c) else { continue };
            // every pair of members ties over the same region: list what fits, count the rest
            let pairs: Box<dyn Iterator<Item = (usize, usize)>> = if ha == hb {
                Box::new(ma.iter().enumerate().flat_map(|(i, &a)| ma[i + 1..].iter().map(move |&b| (a, b))))
            } else {
                Box::new(ma.iter().flat_map(|&a| mb.iter().map(move |&b| (a, b))))
            };
            let total = if ha == hb { ma.len() * (ma.len() - 1) / 2 } else { ma.len() * mb.len() };
            let shown = total.min(LISTED_TIES - listed);
            for (a, b) in pairs.take(shown) {
                let (p, q) = if prepared[a].name() <= prepared[b].name() { (a, b) } else { (b, a) };
                out.extend(tie(prepared, c, (p, q), &region, twins, world));
            }
            listed += shown;
            more += total - shown;
        }
        if more > 0
            && let Some(last) = out.last_mut()
        {
            last.notes.push(format!(
                "{more} more pairs of policies tie for `{c}`: not listed (at most {LISTED_TIES} per destination)"
            ));
        }
    }
}

/// Where `p` and `q` tie for destination `c` (both rank it exactly `c`),
/// if they can select a common pod and that region is not empty.
fn tie_region(p: &Prepared<'_>, q: &Prepared<'_>, c: &Cidr) -> Option<RangeSet> {
    if !p.overlaps(q) {
        return None;
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
    (!region.is_empty()).then_some(region)
}

/// The tie or conflict of policies `pi` (the smaller name) and `qi` (and
/// their twins) for destination `c` over `region` ([`tie_region`]).
fn tie(
    prepared: &[Prepared<'_>],
    c: &Cidr,
    (pi, qi): (usize, usize),
    region: &RangeSet,
    twins: &Twins,
    world: Option<&crate::resolve::World>,
) -> Option<Diagnostic> {
    let (p, q) = (&prepared[pi], &prepared[qi]);
    let (Some(pd), Some(qd)) = (p.dests.iter().find(|d| d.value == *c), q.dests.iter().find(|d| d.value == *c)) else {
        return None;
    };
    let example = first_address(region, c.family()).map(|a| a.to_string()).unwrap_or_default();
    let same = p.gateways == q.gateways;
    let code = if same { &codes::TIE } else { &codes::CONFLICT };
    let what = if same { "with the same gateway and egress IP" } else { "with different gateways or egress IPs" };
    let mut d =
        Diagnostic::new(code, format!("policies `{}` and `{}` tie for destination `{c}` {what}", p.name(), q.name()));
    if let Some(w) = world {
        let theirs: BTreeSet<&str> = w.selected_endpoints(q.p).iter().map(|e| e.key.as_str()).collect();
        let both: Vec<&str> =
            w.selected_endpoints(p.p).iter().map(|e| e.key.as_str()).filter(|k| theirs.contains(k)).collect();
        d = d.note(match both.len() {
            0 => "in the snapshot no endpoint is selected by both yet".to_string(),
            n => format!(
                "in the snapshot {n} endpoint(s) are selected by both: {}{}",
                both[..n.min(5)].join(", "),
                if n > 5 { ", …" } else { "" }
            ),
        });
    }
    // twins of either side tie the same way
    let mut twinned: Vec<&str> = [pi, qi]
        .iter()
        .flat_map(|&i| twins.others(i).iter().copied().filter(move |&t| t != pi && t != qi))
        .map(|t| prepared[t].name())
        .collect();
    twinned.sort_unstable();
    twinned.dedup();
    if !twinned.is_empty() {
        d = d.note(format!(
            "so do {} (identical to one of them: same selectors, destinations, exclusions and gateways)",
            name_list(twinned.into_iter())
        ));
    }
    Some(
        d.primary(qd.span, format!("`{}` captures `{c}`…", q.name()))
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
    )
}

fn shadowed(prepared: &[Prepared<'_>], pins: &Pins, selection: &Twins, out: &mut Vec<Diagnostic>) {
    for (pi, p) in prepared.iter().enumerate() {
        if p.items.is_empty() || p.dests.is_empty() {
            continue;
        }
        if !selection.is_first(pi) {
            // the member of its selection class with the smallest name wins wherever it would
            continue;
        }
        shadowed_twins(prepared, pi, selection.others(pi), out);
        // Only policies that select (at least) every pod P selects can shadow it.
        let coverers: Vec<&Prepared<'_>> =
            pins.may_cover(pi).into_iter().map(|q| &prepared[q]).filter(|q| p.covered_by(q)).collect();
        if coverers.is_empty() {
            continue;
        }
        let mut all_covered = true;
        'dests: for d in &p.dests {
            let c = d.value;
            let mut region = p.own_region(&c);
            if region.is_empty() {
                continue;
            }
            for q in &coverers {
                if q.p.name.value == p.p.name.value {
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

/// W0204 for the other members of `first`'s selection class (same selectors,
/// destinations and exclusions, larger names): one finding for the class,
/// whatever its size.
fn shadowed_twins(prepared: &[Prepared<'_>], first: usize, twins: &[usize], out: &mut Vec<Diagnostic>) {
    let Some((&second, rest)) = twins.split_first() else { return };
    let f = &prepared[first];
    let s = &prepared[second];
    let message = if rest.is_empty() {
        format!("policy `{}` never takes effect", s.name())
    } else {
        format!("policies `{}` and {} more never take effect", s.name(), rest.len())
    };
    let mut d = Diagnostic::new(&codes::SHADOWED, message).primary(s.p.name.span, "shadowed");
    for &t in rest.iter().take(LISTED_LABELS) {
        d = d.secondary(prepared[t].p.name.span, "shadowed too");
    }
    if !rest.is_empty() {
        d = d.note(format!("shadowed: {}", name_list(twins.iter().map(|&t| prepared[t].name()))));
    }
    let identical = twins.iter().all(|&t| prepared[t].gateways == f.gateways);
    out.push(if identical {
        d.secondary(f.p.name.span, "identical, with a smaller name")
            .note(format!(
                "identical to `{}` (same selectors, destinations, exclusions and gateways), which egret picks for its smaller name",
                f.name()
            ))
            .help("delete the duplicates")
    } else {
        d.secondary(f.p.name.span, "same pods and destinations, with a smaller name")
            .note(format!(
                "same selectors, destinations and exclusions as `{}`, which egret picks for its smaller name; their gateways or egress IPs differ (E0202 lists the conflicts)",
                f.name()
            ))
            .help("delete all but the one policy whose gateway should serve these pods")
    });
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

fn cilium_exclusions(
    prepared: &[Prepared<'_>],
    by_dest: &HashMap<Cidr, Vec<usize>>,
    pins: &Pins,
    out: &mut Vec<Diagnostic>,
) {
    for (pi, p) in prepared.iter().enumerate() {
        for x in &p.p.excluded_cidrs {
            let xn = x.value.network();
            let mut others: BTreeSet<(String, usize)> = BTreeSet::new();
            for len in 0..xn.len {
                let anc =
                    Cidr::new(egret_lang::net::u128_to_ip(xn.family(), xn.bits() & prefix_mask(xn.family(), len)), len);
                capturers(prepared, by_dest, pins, (pi, &xn), &anc, &mut others);
            }
            exact_overlap(prepared, by_dest, pins, pi, x, out);
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

/// Into `into`, the policies (name, index) with the destination `dest` (the
/// excluded prefix `within` of policy `pi`, or an ancestor of it) that still
/// capture part of `within` after their own exclusions, for pods both may select.
fn capturers(
    prepared: &[Prepared<'_>],
    by_dest: &HashMap<Cidr, Vec<usize>>,
    pins: &Pins,
    (pi, within): (usize, &Cidr),
    dest: &Cidr,
    into: &mut BTreeSet<(String, usize)>,
) {
    let p = &prepared[pi];
    for &qi in by_dest.get(dest).into_iter().flatten() {
        let q = &prepared[qi];
        if q.name() == p.name() || !pins.may_overlap(pi, qi) || !p.overlaps(q) {
            continue;
        }
        let mut r = RangeSet::of(within);
        for y in &q.excl {
            r.subtract(y);
        }
        if !r.is_empty() {
            into.insert((q.name().to_string(), qi));
        }
    }
}

/// W0208: policy `p` excludes exactly a prefix another policy captures for
/// pods both may select. Cilium keys both entries by (source, prefix): one
/// map key written twice, the last writer wins.
fn exact_overlap(
    prepared: &[Prepared<'_>],
    by_dest: &HashMap<Cidr, Vec<usize>>,
    pins: &Pins,
    pi: usize,
    x: &egret_lang::source::Spanned<Cidr>,
    out: &mut Vec<Diagnostic>,
) {
    let p = &prepared[pi];
    let xn = x.value.network();
    let mut others: BTreeSet<(String, usize)> = BTreeSet::new();
    capturers(prepared, by_dest, pins, (pi, &xn), &xn, &mut others);
    let Some((qname, qi)) = others.iter().next() else { return };
    let q = &prepared[*qi];
    let qd = q.dests.iter().find(|d| d.value.network() == xn).map(|d| d.span).unwrap_or(q.p.name.span);
    let more = if others.len() > 1 { format!(" (and {} more)", others.len() - 1) } else { String::new() };
    out.push(
        Diagnostic::new(
            &codes::EXACT_OVERLAP,
            format!("`{}` excludes exactly `{xn}`, which `{qname}`{more} captures, for the same pods", p.name()),
        )
        .primary(x.span, "excluded here")
        .secondary(qd, format!("`{qname}` captures exactly this prefix"))
        .note(format!(
            "Cilium writes both as the same map key (source IP, {xn}): the last policy it processes wins, so pods both select may or may not use `{qname}`'s gateway, and a restart may change it; egret sends the traffic through `{qname}`'s gateway"
        ))
        .help(format!("decide which is meant: remove the exclusion from `{}` (use `{qname}`'s gateway), or the destination from `{qname}` (the normal route)", p.name())),
    );
}
