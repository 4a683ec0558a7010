//! The IR passes. Each module-level pass maps a per-class function over the
//! classes and raises the module's stage; each is idempotent (applying it
//! twice changes nothing — tested) and preserves the meaning of every class
//! (the decision for every (endpoint, destination) outside the
//! cluster-internal ranges).
//!
//! The memoized path runs the same passes on one class at a time
//! ([`run_on_class`]), once per distinct rule set.

use super::prefix::{self, Range, prefix_order, segments};
use super::{Action, AppliedPolicy, Capture, Class, Entry, Module, Stage};
use egret_lang::net::{Cidr, Family, family_max, u128_to_ip};
use std::collections::{BTreeMap, BTreeSet};

/// A named pass.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub name: &'static str,
    /// The stage the module is in after the pass.
    pub stage: Stage,
    pub run: fn(&mut Module),
}

/// The optimization pipeline, in order (after lowering): the one list of
/// the passes. `emit_ir` runs it pass by pass, and the memoized path runs
/// it on one class at a time ([`run_on_class`]).
pub const PIPELINE: &[Pass] = &[
    Pass { name: "subtract-exclusions", stage: Stage::Subtracted, run: subtract_exclusions },
    Pass { name: "form-classes", stage: Stage::Classed, run: form_classes },
    Pass { name: "decide", stage: Stage::Decided, run: decide },
    Pass { name: "merge-siblings", stage: Stage::Merged, run: merge_siblings },
    Pass { name: "remove-shadowed", stage: Stage::Pruned, run: remove_shadowed },
    Pass { name: "minimize", stage: Stage::Minimized, run: minimize },
];

/// The passes that bring a module from `after` up to and including `until`.
pub fn between(after: Stage, until: Stage) -> impl Iterator<Item = &'static Pass> {
    PIPELINE.iter().filter(move |p| p.stage > after && p.stage <= until)
}

/// The passes up to and including `stage`.
pub fn until(stage: Stage) -> impl Iterator<Item = &'static Pass> {
    between(Stage::Lowered, stage)
}

/// Runs the pipeline up to and including `stage`.
pub fn run_until(m: &mut Module, stage: Stage) {
    for p in until(stage) {
        (p.run)(m);
    }
}

/// Runs the passes from `after` to `until` on one class alone (its
/// policies and table; a module of that one class), as the memoized path
/// does per distinct rule set.
pub fn run_on_class(class: Class, after: Stage, until: Stage) -> Class {
    let mut m = Module {
        node: String::new(),
        node_ip: None,
        stage: after,
        internal: Vec::new(),
        gateways: Vec::new(),
        slots: Vec::new(),
        classes: vec![class],
        served: Vec::new(),
    };
    for p in between(after, until) {
        (p.run)(&mut m);
    }
    m.classes.pop().expect("the passes keep a lone class")
}

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

// ---- subtract-exclusions ----

/// Replaces a policy's captures and excludes with `D(P)` as disjoint
/// prefixes, each ranked by the longest capture containing it.
pub fn subtract_policy(p: &mut AppliedPolicy) {
    let mut out: Vec<Capture> = Vec::new();
    for fam in FAMILIES {
        let caps: Vec<&Capture> = p.captures.iter().filter(|c| c.prefix.family() == fam).collect();
        if caps.is_empty() {
            continue;
        }
        let excl = prefix::merge_ranges(p.excludes.iter().filter(|c| c.family() == fam).map(Range::of).collect());
        let cuts: Vec<Cidr> = caps.iter().map(|c| c.prefix).chain(p.excludes.iter().copied()).collect();
        // Runs of equal rank over the elementary segments.
        let mut run: Option<(u128, u128, u8)> = None;
        let flush = |run: Option<(u128, u128, u8)>, out: &mut Vec<Capture>| {
            if let Some((lo, hi, rank)) = run {
                out.extend(prefix::range_to_prefixes(fam, lo, hi).into_iter().map(|prefix| Capture { prefix, rank }));
            }
        };
        for seg in segments(fam, &cuts) {
            let excluded = prefix::ranges_cover(&excl, &seg);
            let rank = if excluded {
                None
            } else {
                caps.iter().filter(|c| Range::of(&c.prefix).covers(&seg)).map(|c| c.rank).max()
            };
            match (run, rank) {
                (Some((lo, hi, r)), Some(nr)) if r == nr && hi + 1 == seg.lo => run = Some((lo, seg.hi, r)),
                (_, Some(nr)) => {
                    flush(run, &mut out);
                    run = Some((seg.lo, seg.hi, nr));
                }
                (_, None) => {
                    flush(run, &mut out);
                    run = None;
                }
            }
        }
        flush(run, &mut out);
    }
    out.sort_by(|a, b| prefix_order(&a.prefix, &b.prefix));
    p.captures = out;
    p.excludes.clear();
}

/// Pass: exclusion subtraction into disjoint prefixes per policy. A policy
/// left capturing nothing can never win and is removed from the class.
pub fn subtract_exclusions(m: &mut Module) {
    for c in &mut m.classes {
        for p in &mut c.policies {
            subtract_policy(p);
        }
        c.policies.retain(|p| !p.captures.is_empty());
    }
    m.stage = m.stage.max(Stage::Subtracted);
}

// ---- form-classes ----

/// Pass: endpoints whose applicable rules (policies and table) are identical
/// share one class; classes sorted by their first endpoint key.
pub fn form_classes(m: &mut Module) {
    let mut groups: Vec<Class> = Vec::new();
    for c in std::mem::take(&mut m.classes) {
        match groups.iter_mut().find(|g| g.policies == c.policies && g.table == c.table) {
            Some(g) => g.endpoints.extend(c.endpoints),
            None => groups.push(c),
        }
    }
    for g in &mut groups {
        g.endpoints.sort();
    }
    groups.sort_by(|a, b| a.endpoints.first().map(|e| &e.key).cmp(&b.endpoints.first().map(|e| &e.key)));
    m.classes = groups;
    m.stage = m.stage.max(Stage::Classed);
}

// ---- decide ----

/// The decision table of a set of subtracted policies (sorted by name):
/// disjoint prefixes → the action of the policy whose capture has the
/// highest rank, ties to the smallest name. Uncovered space is left out
/// (default pass).
pub fn decide_class(policies: &[AppliedPolicy]) -> Vec<Entry> {
    let mut out = Vec::new();
    for fam in FAMILIES {
        // (range, rank, policy index) sorted by lo
        let mut pieces: Vec<(Range, u8, usize)> = policies
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                p.captures.iter().filter(|c| c.prefix.family() == fam).map(move |c| (Range::of(&c.prefix), c.rank, i))
            })
            .collect();
        if pieces.is_empty() {
            continue;
        }
        pieces.sort_by_key(|(r, _, _)| r.lo);
        let cuts: Vec<Cidr> = policies
            .iter()
            .flat_map(|p| p.captures.iter().filter(|c| c.prefix.family() == fam).map(|c| c.prefix))
            .collect();
        let mut next = 0;
        let mut active: Vec<(Range, u8, usize)> = Vec::new();
        let mut run: Option<(u128, u128, Action)> = None;
        let flush = |run: Option<(u128, u128, Action)>, out: &mut Vec<Entry>| {
            if let Some((lo, hi, action)) = run {
                out.extend(prefix::range_to_prefixes(fam, lo, hi).into_iter().map(|prefix| Entry { prefix, action }));
            }
        };
        for seg in segments(fam, &cuts) {
            active.retain(|(r, _, _)| r.hi >= seg.lo);
            while next < pieces.len() && pieces[next].0.lo <= seg.lo {
                if pieces[next].0.hi >= seg.lo {
                    active.push(pieces[next]);
                }
                next += 1;
            }
            let winner = active
                .iter()
                .filter(|(r, _, _)| r.covers(&seg))
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.2.cmp(&a.2)))
                .map(|(_, _, i)| policies[*i].action);
            match (run, winner) {
                (Some((lo, _, a)), Some(w)) if a == w => run = Some((lo, seg.hi, a)),
                (_, Some(w)) => {
                    flush(run, &mut out);
                    run = Some((seg.lo, seg.hi, w));
                }
                (_, None) => {
                    flush(run, &mut out);
                    run = None;
                }
            }
        }
        flush(run, &mut out);
    }
    out.sort_by(|a, b| prefix_order(&a.prefix, &b.prefix));
    out
}

/// Pass: decide each class's table from its policies.
pub fn decide(m: &mut Module) {
    for c in &mut m.classes {
        if !c.policies.is_empty() {
            c.table = decide_class(&c.policies);
            c.policies.clear();
        }
    }
    m.stage = m.stage.max(Stage::Decided);
}

// ---- merge-siblings ----

/// Merges sibling prefixes (`p/l+1` and its sibling) with the same action
/// into their parent `p/l`, bottom up, until no such pair is left. A parent
/// entry already present is replaced: its two halves covered it, so it was
/// never reached.
pub fn merge_table(table: &mut Vec<Entry>) {
    let mut out = Vec::new();
    for fam in FAMILIES {
        let width = fam.bits();
        let mut levels: Vec<BTreeMap<u128, Action>> = vec![BTreeMap::new(); width as usize + 1];
        for e in table.iter().filter(|e| e.prefix.family() == fam) {
            levels[e.prefix.len as usize].insert(e.prefix.bits(), e.action);
        }
        for len in (1..=width as usize).rev() {
            let bit = 1u128 << (width as usize - len);
            let keys: Vec<u128> = levels[len].keys().copied().filter(|a| a & bit == 0).collect();
            for lo in keys {
                let (Some(a), Some(b)) = (levels[len].get(&lo), levels[len].get(&(lo | bit))) else { continue };
                if a != b {
                    continue;
                }
                let action = *a;
                levels[len].remove(&lo);
                levels[len].remove(&(lo | bit));
                levels[len - 1].insert(lo, action);
            }
        }
        for (len, level) in levels.iter().enumerate() {
            for (addr, action) in level {
                out.push(Entry { prefix: Cidr::new(u128_to_ip(fam, *addr), len as u8), action: *action });
            }
        }
    }
    out.sort_by(|a, b| prefix_order(&a.prefix, &b.prefix));
    *table = out;
}

/// Pass: merge sibling prefixes with the same action.
pub fn merge_siblings(m: &mut Module) {
    for c in &mut m.classes {
        merge_table(&mut c.table);
    }
    m.stage = m.stage.max(Stage::Merged);
}

// ---- remove-shadowed ----

/// Size of a prefix as a count of addresses; `None` for 2^128 (`::/0`).
fn size(c: &Cidr) -> Option<u128> {
    let host = u32::from(c.family().bits() - c.len);
    if host >= 128 { None } else { Some(1u128 << host) }
}

/// For each entry of a sorted table, the index of its nearest enclosing entry.
fn parents(table: &[Entry]) -> Vec<Option<usize>> {
    let mut stack: Vec<usize> = Vec::new();
    let mut out = Vec::with_capacity(table.len());
    for (i, e) in table.iter().enumerate() {
        while let Some(&top) = stack.last() {
            if table[top].prefix.contains(&e.prefix) && table[top].prefix != e.prefix {
                break;
            }
            stack.pop();
        }
        out.push(stack.last().copied());
        stack.push(i);
    }
    out
}

/// Removes entries that longest-prefix match never returns (their whole
/// range is covered by longer entries) and entries that change nothing
/// (same action as their nearest enclosing entry, or `Pass` with none).
pub fn prune_table(table: &mut Vec<Entry>) {
    table.sort_by(|a, b| prefix_order(&a.prefix, &b.prefix));
    table.dedup_by(|b, a| a.prefix == b.prefix);
    // 1. never reached: children cover the entry entirely.
    let par = parents(table);
    let mut covered: Vec<Option<u128>> = vec![Some(0); table.len()];
    for (i, p) in par.iter().enumerate() {
        if let Some(p) = p {
            covered[*p] = match (covered[*p], size(&table[i].prefix)) {
                (Some(a), Some(b)) => a.checked_add(b),
                _ => None,
            };
        }
    }
    // `covered` starts at 0 and a prefix has at least one address, so an entry
    // without children is never "covered".
    let unreachable: Vec<bool> = table.iter().zip(&covered).map(|(e, cov)| *cov == size(&e.prefix)).collect();
    let mut kept: Vec<Entry> = table.iter().zip(&unreachable).filter(|(_, u)| !**u).map(|(e, _)| *e).collect();
    // 2. redundant: same action as the nearest enclosing entry (or Pass at top level).
    let par = parents(&kept);
    let redundant: Vec<bool> = kept
        .iter()
        .zip(&par)
        .map(|(e, p)| match p {
            Some(p) => kept[*p].action == e.action,
            None => e.action == Action::Pass,
        })
        .collect();
    let mut i = 0;
    kept.retain(|_| {
        i += 1;
        !redundant[i - 1]
    });
    *table = kept;
}

/// Pass: remove shadowed entries.
pub fn remove_shadowed(m: &mut Module) {
    for c in &mut m.classes {
        prune_table(&mut c.table);
    }
    m.stage = m.stage.max(Stage::Pruned);
}

// ---- minimize (ORTC) ----

#[derive(Debug, Clone, Default)]
struct TrieNode {
    child: [Option<u32>; 2],
    value: Option<u16>,
    set: Vec<u16>,
}

/// The smallest longest-prefix-match table with the same meaning (default
/// pass), by ORTC (Draves, King, Venkatachary, Zill: "Constructing Optimal
/// IP Routing Tables", INFOCOM 1999). Choices are canonical (the smallest
/// action), so the result depends only on the table's meaning: applying it
/// twice changes nothing.
pub fn minimize_table(table: &mut Vec<Entry>) {
    let mut actions: BTreeSet<Action> = table.iter().map(|e| e.action).collect();
    actions.insert(Action::Pass);
    let actions: Vec<Action> = actions.into_iter().collect();
    let idx = |a: &Action| actions.binary_search(a).unwrap_or(0) as u16;
    let pass = idx(&Action::Pass);
    let mut out = Vec::new();
    for fam in FAMILIES {
        let width = fam.bits() as u32;
        let entries: Vec<&Entry> = table.iter().filter(|e| e.prefix.family() == fam).collect();
        if entries.is_empty() {
            continue;
        }
        let mut nodes: Vec<TrieNode> = vec![TrieNode::default()];
        for e in &entries {
            let bits = e.prefix.network().bits();
            let mut n = 0usize;
            for d in 0..u32::from(e.prefix.len) {
                let b = ((bits >> (width - 1 - d)) & 1) as usize;
                n = match nodes[n].child[b] {
                    Some(c) => c as usize,
                    None => {
                        nodes.push(TrieNode::default());
                        let c = nodes.len() - 1;
                        nodes[n].child[b] = Some(c as u32);
                        c
                    }
                };
            }
            nodes[n].value = Some(idx(&e.action));
        }
        // Pass 1 and 2: complete the trie (leaf pushing) and compute sets bottom up.
        fn fill(nodes: &mut Vec<TrieNode>, n: usize, inherited: u16) {
            let inh = nodes[n].value.unwrap_or(inherited);
            match nodes[n].child {
                [None, None] => {
                    nodes[n].set = vec![inh];
                    return;
                }
                [Some(_), None] | [None, Some(_)] => {
                    nodes.push(TrieNode { value: Some(inh), ..TrieNode::default() });
                    let c = (nodes.len() - 1) as u32;
                    let slot = if nodes[n].child[0].is_none() { 0 } else { 1 };
                    nodes[n].child[slot] = Some(c);
                }
                _ => {}
            }
            let [Some(a), Some(b)] = nodes[n].child else { return };
            fill(nodes, a as usize, inh);
            fill(nodes, b as usize, inh);
            let (sa, sb) = (&nodes[a as usize].set, &nodes[b as usize].set);
            let inter: Vec<u16> = sa.iter().copied().filter(|x| sb.contains(x)).collect();
            let set = if inter.is_empty() {
                let mut u: Vec<u16> = sa.iter().chain(sb.iter()).copied().collect();
                u.sort_unstable();
                u.dedup();
                u
            } else {
                inter
            };
            nodes[n].set = set;
        }
        fill(&mut nodes, 0, pass);
        // Pass 3: top down, emit an entry where the inherited action is not in the set.
        fn emit(
            nodes: &[TrieNode],
            n: usize,
            depth: u32,
            addr: u128,
            inherited: u16,
            width: u32,
            out: &mut Vec<(u128, u8, u16)>,
        ) {
            let node = &nodes[n];
            let choice = if node.set.contains(&inherited) {
                inherited
            } else {
                let c = node.set.first().copied().unwrap_or(inherited);
                out.push((addr, depth as u8, c));
                c
            };
            for (b, child) in node.child.iter().enumerate() {
                if let Some(c) = child {
                    let a = addr | ((b as u128) << (width - 1 - depth));
                    emit(nodes, *c as usize, depth + 1, a, choice, width, out);
                }
            }
        }
        let mut raw = Vec::new();
        emit(&nodes, 0, 0, 0, pass, width, &mut raw);
        out.extend(raw.into_iter().map(|(a, l, c)| Entry {
            prefix: Cidr::new(u128_to_ip(fam, a & family_max(fam)), l),
            action: actions[c as usize],
        }));
    }
    out.sort_by(|a, b| prefix_order(&a.prefix, &b.prefix));
    *table = out;
}

/// Pass: minimize each table.
pub fn minimize(m: &mut Module) {
    for c in &mut m.classes {
        minimize_table(&mut c.table);
    }
    m.stage = m.stage.max(Stage::Minimized);
}

// ---- queries on tables ----

/// Longest-prefix-match lookup in a table (default pass).
pub fn lookup(table: &[Entry], dst: std::net::IpAddr) -> Action {
    table.iter().filter(|e| e.prefix.contains_ip(dst)).max_by_key(|e| e.prefix.len).map_or(Action::Pass, |e| e.action)
}

/// The actions a disjoint (`decided`) table yields for some destination
/// outside the internal ranges, with their families.
pub fn reachable_actions(decided: &[Entry], internal: &[Range]) -> BTreeSet<(Family, Action)> {
    decided
        .iter()
        .filter(|e| !prefix::ranges_cover(internal, &Range::of(&e.prefix)))
        .map(|e| (e.prefix.family(), e.action))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::SlotId;
    use std::net::Ipv4Addr;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }
    fn gw(n: u8) -> Action {
        Action::redirect(Ipv4Addr::new(192, 0, 2, n).into(), SlotId(u32::from(n)))
    }
    fn pol(name: &str, action: Action, dest: &[&str], excl: &[&str]) -> AppliedPolicy {
        AppliedPolicy {
            name: name.to_string(),
            action,
            captures: dest.iter().map(|d| Capture { prefix: c(d), rank: c(d).len }).collect(),
            excludes: excl.iter().map(|d| c(d)).collect(),
        }
    }

    #[test]
    fn subtraction_ranks_by_longest_containing_entry() {
        let mut p = pol("a", gw(1), &["10.0.0.0/8", "10.1.0.0/16"], &["10.1.2.0/24"]);
        subtract_policy(&mut p);
        assert!(p.excludes.is_empty());
        let r = |ip: &str| p.captures.iter().find(|c| c.prefix.contains_ip(ip.parse().unwrap())).map(|c| c.rank);
        assert_eq!(r("10.2.0.1"), Some(8));
        assert_eq!(r("10.1.3.1"), Some(16));
        assert_eq!(r("10.1.2.1"), None);
        let again = {
            let mut q = p.clone();
            subtract_policy(&mut q);
            q
        };
        assert_eq!(again, p);
    }

    #[test]
    fn minimize_finds_the_nested_form() {
        let mut p = pol("a", gw(1), &["0.0.0.0/0"], &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]);
        subtract_policy(&mut p);
        let mut t = decide_class(&[p]);
        assert!(t.len() > 20);
        let before = t.clone();
        minimize_table(&mut t);
        assert_eq!(t.len(), 4, "{t:?}");
        for ip in ["8.8.8.8", "10.1.1.1", "172.20.0.1", "172.32.0.1", "192.168.5.5", "255.255.255.255", "0.0.0.0"] {
            let ip = ip.parse().unwrap();
            assert_eq!(lookup(&t, ip), lookup(&before, ip), "{ip}");
        }
        let mut again = t.clone();
        minimize_table(&mut again);
        assert_eq!(again, t);
    }

    #[test]
    fn merge_and_prune() {
        let mut t = vec![
            Entry { prefix: c("10.0.0.0/9"), action: gw(1) },
            Entry { prefix: c("10.128.0.0/9"), action: gw(1) },
            Entry { prefix: c("10.0.0.0/8"), action: gw(2) },
        ];
        merge_table(&mut t);
        assert_eq!(t, vec![Entry { prefix: c("10.0.0.0/8"), action: gw(1) }]);
        let mut t = vec![
            Entry { prefix: c("10.0.0.0/8"), action: gw(1) },
            Entry { prefix: c("10.1.0.0/16"), action: gw(1) },
            Entry { prefix: c("11.0.0.0/8"), action: Action::Pass },
            Entry { prefix: c("12.0.0.0/8"), action: gw(2) },
            Entry { prefix: c("12.0.0.0/9"), action: gw(1) },
            Entry { prefix: c("12.128.0.0/9"), action: gw(3) },
        ];
        prune_table(&mut t);
        let s: Vec<String> = t.iter().map(|e| e.prefix.to_string()).collect();
        assert_eq!(s, ["10.0.0.0/8", "12.0.0.0/9", "12.128.0.0/9"]);
    }

    #[test]
    fn decide_prefers_rank_then_name() {
        let mut a = pol("a", gw(1), &["0.0.0.0/0"], &[]);
        let mut b = pol("b", gw(2), &["8.0.0.0/8"], &[]);
        let mut z = pol("z", gw(3), &["8.0.0.0/8", "9.0.0.0/8"], &[]);
        for p in [&mut a, &mut b, &mut z] {
            subtract_policy(p);
        }
        let t = decide_class(&[a, b, z]);
        assert_eq!(lookup(&t, "8.1.1.1".parse().unwrap()), gw(2));
        assert_eq!(lookup(&t, "9.1.1.1".parse().unwrap()), gw(3));
        assert_eq!(lookup(&t, "7.1.1.1".parse().unwrap()), gw(1));
    }
}
