//! `egret diff`: the change in *effective behaviour* between two worlds
//! (old and new policy sets, same or different snapshots).
//!
//! For every endpoint (matched by `namespace/name`), the decision is
//! compared over the exact interval partition of destinations: every
//! boundary of both sides' decision tables and cluster-internal ranges, in
//! both families. Between boundaries both decisions are constant, so
//! comparing one representative per interval is exact. Behaviour is where
//! traffic goes — direct, dropped (no-gateway), or through gateway G with
//! egress IP X — not how the tables spell it (a slot renumbering or a
//! redirect that became local egress on the same gateway is no change).
//!
//! Endpoints are compared in groups with identical rule sets on both sides
//! (one computation per group). Endpoints present on one side only are
//! reported where the present side sends traffic to a gateway or drops it
//! (a new pod that only takes the normal route is not a behaviour change).
//!
//! Endpoints whose changes are identical are grouped for display: a whole
//! namespace, else a whole workload (by template labels), else pods.
//!
//! Also: per-node table sizes before and after (informational;
//! [`BehaviourDiff::is_empty`] looks at behaviour only).

use crate::ir::lower::ClassMemo;
use crate::ir::passes::{minimize_table, prune_table};
use crate::ir::prefix::{Range, prefix_order, segments};
use crate::ir::{Action, DropReason, Effect, Entry};
use crate::plan::NodeCounts;
use crate::planner::Planner;
use crate::resolve::{EgressIp, World};
use egret_lang::net::{Cidr, Family, ip_to_u128, u128_to_ip};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

/// Where an endpoint's traffic to a destination goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Behaviour {
    /// The endpoint does not exist on this side.
    Absent,
    /// Normal routing, no gateway.
    Direct,
    /// Dropped at the source (no-gateway).
    Dropped,
    /// Through a gateway node, sent from an egress IP.
    Gateway { node: String, ip: IpAddr, egress: Option<EgressIp> },
}

impl std::fmt::Display for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Behaviour::Absent => f.write_str("(endpoint absent)"),
            Behaviour::Direct => f.write_str("direct (no gateway)"),
            Behaviour::Dropped => f.write_str("dropped (no-gateway)"),
            Behaviour::Gateway { node, ip, egress } => {
                write!(f, "via {node} ({ip}), egress IP ")?;
                match egress {
                    Some(e) => write!(f, "{e}"),
                    None => f.write_str("none"),
                }
            }
        }
    }
}

/// A set of destination ranges whose behaviour changed the same way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RangeChange {
    /// Sorted, merged.
    pub destinations: Vec<Range>,
    pub before: Behaviour,
    pub after: Behaviour,
}

/// Who a change group is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// Every endpoint of the namespace.
    Namespace {
        name: String,
        endpoints: usize,
    },
    /// Every endpoint of a workload (`Kind namespace/name`).
    Workload {
        name: String,
        endpoints: usize,
    },
    Pod {
        key: String,
    },
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Namespace { name, endpoints } => write!(f, "namespace {name} ({endpoints} endpoints)"),
            Subject::Workload { name, endpoints } => write!(f, "{name} ({endpoints} pods)"),
            Subject::Pod { key } => write!(f, "pod {key}"),
        }
    }
}

/// Endpoints that change identically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeGroup {
    pub subjects: Vec<Subject>,
    /// `namespace/name`, sorted.
    pub endpoints: Vec<String>,
    pub changes: Vec<RangeChange>,
}

/// Table sizes of a node before and after (`None`: node absent or not compiled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDelta {
    pub node: String,
    pub before: Option<NodeCounts>,
    pub after: Option<NodeCounts>,
}

impl NodeDelta {
    pub fn delta(&self) -> i64 {
        self.after.map_or(0, |c| c.total() as i64) - self.before.map_or(0, |c| c.total() as i64)
    }
}

/// The behaviour diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BehaviourDiff {
    pub groups: Vec<ChangeGroup>,
    /// Nodes whose table sizes differ.
    pub nodes: Vec<NodeDelta>,
    /// Why table sizes could not be compared, if so.
    pub size_note: Option<String>,
}

impl BehaviourDiff {
    /// No endpoint's behaviour changed.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Behaviour of a decided (disjoint, sorted) table at an address.
fn behaviour(world: &World, table: Option<&[Entry]>, addr: IpAddr) -> Behaviour {
    let Some(table) = table else { return Behaviour::Absent };
    if world.is_internal(addr) {
        return Behaviour::Direct;
    }
    let fam = Family::of(&addr);
    let v = ip_to_u128(addr);
    let i = table.partition_point(|e| (e.prefix.family(), e.prefix.range().0) <= (fam, v));
    let action =
        i.checked_sub(1).map(|j| table[j]).filter(|e| e.prefix.contains_ip(addr)).map_or(Action::Pass, |e| e.action);
    match action.resolve(world.ready_health()) {
        Effect::Pass => Behaviour::Direct,
        Effect::Drop(DropReason::NoGateway) => Behaviour::Dropped,
        Effect::Redirect { slot, .. } | Effect::LocalEgress { slot } => match world.slot_by_id(slot) {
            Some(s) => Behaviour::Gateway {
                node: s.gateway_name.clone(),
                ip: world.node(s.gateway).ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                egress: s.egress(fam).cloned(),
            },
            None => Behaviour::Dropped,
        },
    }
}

fn changes(old: &World, new: &World, a: Option<&[Entry]>, b: Option<&[Entry]>) -> Vec<RangeChange> {
    let mut cuts: Vec<Cidr> = Vec::new();
    for t in [a, b].into_iter().flatten() {
        cuts.extend(t.iter().map(|e| e.prefix));
    }
    cuts.extend(old.internal_ranges().prefixes.iter().copied());
    cuts.extend(new.internal_ranges().prefixes.iter().copied());
    let mut out: BTreeMap<(Behaviour, Behaviour), Vec<Range>> = BTreeMap::new();
    for fam in [Family::V4, Family::V6] {
        for seg in segments(fam, &cuts) {
            let at = u128_to_ip(fam, seg.lo);
            let (x, y) = (behaviour(old, a, at), behaviour(new, b, at));
            let trivial =
                matches!((&x, &y), (Behaviour::Absent, Behaviour::Direct) | (Behaviour::Direct, Behaviour::Absent));
            if x != y && !trivial {
                let v = out.entry((x, y)).or_default();
                match v.last_mut() {
                    Some(last) if last.family == seg.family && last.hi + 1 == seg.lo => last.hi = seg.hi,
                    _ => v.push(seg),
                }
            }
        }
    }
    out.into_iter().map(|((before, after), destinations)| RangeChange { destinations, before, after }).collect()
}

/// Computes the behaviour diff of two worlds.
pub fn compute(old: &World, new: &World) -> BehaviourDiff {
    let mut om = ClassMemo::new();
    let mut nm = ClassMemo::new();
    let keys: BTreeSet<String> = old.endpoints().chain(new.endpoints()).map(|e| e.key.clone()).collect();
    // endpoint → change list, computed once per (old rules, new rules).
    type Sig = (Option<crate::ir::lower::ClassKey>, Option<crate::ir::lower::ClassKey>);
    let mut by_sig: BTreeMap<Sig, Vec<RangeChange>> = BTreeMap::new();
    let mut per_endpoint: BTreeMap<Vec<RangeChange>, Vec<String>> = BTreeMap::new();
    for key in &keys {
        let ta = old.endpoint_by_key(key).map(|e| om.for_endpoint(old, e.id));
        let tb = new.endpoint_by_key(key).map(|e| nm.for_endpoint(new, e.id));
        let sig: Sig = (ta.as_ref().map(|t| t.key.clone()), tb.as_ref().map(|t| t.key.clone()));
        let ch = by_sig
            .entry(sig)
            .or_insert_with(|| {
                changes(old, new, ta.as_ref().map(|t| t.decided.as_slice()), tb.as_ref().map(|t| t.decided.as_slice()))
            })
            .clone();
        if !ch.is_empty() {
            per_endpoint.entry(ch).or_default().push(key.clone());
        }
    }
    // Membership for grouping, over both sides.
    let mut ns_members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wl_members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for w in [old, new] {
        for e in w.endpoints() {
            ns_members.entry(e.namespace.clone()).or_default().insert(e.key.clone());
            if let Some(wl) = e.workload {
                let name = w.workload(wl).display();
                wl_members.entry(name).or_default().insert(e.key.clone());
            }
        }
    }
    let mut groups: Vec<ChangeGroup> = per_endpoint
        .into_iter()
        .map(|(changes, mut endpoints)| {
            endpoints.sort();
            let set: BTreeSet<&String> = endpoints.iter().collect();
            let mut covered: BTreeSet<&String> = BTreeSet::new();
            let mut subjects = Vec::new();
            for (ns, members) in &ns_members {
                if members.len() >= 2 && members.iter().all(|m| set.contains(m)) {
                    subjects.push(Subject::Namespace { name: ns.clone(), endpoints: members.len() });
                    covered.extend(members.iter());
                }
            }
            for (wl, members) in &wl_members {
                if members.len() >= 2 && members.iter().all(|m| set.contains(m) && !covered.contains(m)) {
                    subjects.push(Subject::Workload { name: wl.clone(), endpoints: members.len() });
                    covered.extend(members.iter());
                }
            }
            for e in &endpoints {
                if !covered.contains(e) {
                    subjects.push(Subject::Pod { key: e.clone() });
                }
            }
            ChangeGroup { subjects, endpoints, changes }
        })
        .collect();
    groups.sort_by(|a, b| a.endpoints.cmp(&b.endpoints));

    // Table sizes.
    let mut size_note = None;
    let mut nodes = Vec::new();
    match (Planner::new().plan_all(old), Planner::new().plan_all(new)) {
        (Ok(a), Ok(b)) => {
            let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for n in names {
                let before = a.get(n).map(|p| p.counts());
                let after = b.get(n).map(|p| p.counts());
                if before != after {
                    nodes.push(NodeDelta { node: n.clone(), before, after });
                }
            }
        }
        (a, b) => {
            let which = if a.is_err() { "old" } else { "new" };
            let err = a.err().or(b.err()).map(|e| e.to_string()).unwrap_or_default();
            size_note = Some(format!("table sizes not compared: the {which} side does not compile: {err}"));
        }
    }
    BehaviourDiff { groups, nodes, size_note }
}

/// A destination set as "prefix except holes" items: the smallest
/// longest-prefix-match description of the ranges.
pub fn describe(ranges: &[Range]) -> Vec<(Cidr, Vec<Cidr>)> {
    let inside = Action::Drop(DropReason::NoGateway);
    let mut t: Vec<Entry> =
        ranges.iter().flat_map(|r| r.prefixes()).map(|prefix| Entry { prefix, action: inside }).collect();
    prune_table(&mut t);
    minimize_table(&mut t);
    t.sort_by(|a, b| prefix_order(&a.prefix, &b.prefix));
    let mut items: Vec<(Cidr, Vec<Cidr>)> = Vec::new();
    let mut stack: Vec<(Cidr, Action, Option<usize>)> = Vec::new();
    for e in &t {
        while stack.last().is_some_and(|(p, _, _)| !p.contains(&e.prefix)) {
            stack.pop();
        }
        if e.action == inside {
            items.push((e.prefix, Vec::new()));
            stack.push((e.prefix, e.action, Some(items.len() - 1)));
        } else {
            if let Some((_, a, Some(i))) = stack.last()
                && *a == inside
            {
                items[*i].1.push(e.prefix);
            }
            stack.push((e.prefix, e.action, None));
        }
    }
    items
}

fn describe_text(ranges: &[Range], code: bool) -> String {
    let q = |c: &Cidr| if code { format!("`{c}`") } else { c.to_string() };
    describe(ranges)
        .iter()
        .map(|(p, ex)| {
            if ex.is_empty() {
                q(p)
            } else {
                format!("{} except {}", q(p), ex.iter().map(q).collect::<Vec<_>>().join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    /// For a pull-request comment.
    Markdown,
}

/// Renders a diff.
pub fn render(d: &BehaviourDiff, format: Format) -> String {
    match format {
        Format::Human => human(d),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&to_json(d)).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Markdown => markdown(d),
    }
}

fn counts_total(c: &Option<NodeCounts>) -> String {
    c.map_or_else(|| "-".to_string(), |c| c.total().to_string())
}

fn human(d: &BehaviourDiff) -> String {
    let mut out = String::new();
    if d.groups.is_empty() {
        out.push_str("no change in effective egress behaviour\n");
    } else {
        let _ = writeln!(out, "effective egress behaviour changes for {} group(s) of endpoints:", d.groups.len());
        for g in &d.groups {
            let _ = writeln!(out);
            let subjects: Vec<String> = g.subjects.iter().map(|s| s.to_string()).collect();
            let _ = writeln!(out, "{}", subjects.join(", "));
            for c in &g.changes {
                let _ = writeln!(out, "  to {}", describe_text(&c.destinations, false));
                let _ = writeln!(out, "    before: {}", c.before);
                let _ = writeln!(out, "    after:  {}", c.after);
            }
        }
    }
    if !d.nodes.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "table entries per node (before → after):");
        let w = d.nodes.iter().map(|n| n.node.len()).max().unwrap_or(0);
        for n in &d.nodes {
            let _ = writeln!(
                out,
                "  {:w$}  {} → {} ({:+})",
                n.node,
                counts_total(&n.before),
                counts_total(&n.after),
                n.delta()
            );
        }
    }
    if let Some(note) = &d.size_note {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

fn markdown(d: &BehaviourDiff) -> String {
    let mut out = String::new();
    out.push_str("### egret: effective egress changes\n\n");
    if d.groups.is_empty() {
        out.push_str("No change in effective egress behaviour.\n");
    } else {
        out.push_str("| Endpoints | Destinations | Before | After |\n|---|---|---|---|\n");
        for g in &d.groups {
            let subjects: Vec<String> = g.subjects.iter().map(|s| s.to_string()).collect();
            for c in &g.changes {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    subjects.join(", ").replace('|', "\\|"),
                    describe_text(&c.destinations, true),
                    c.before,
                    c.after
                );
            }
        }
    }
    if !d.nodes.is_empty() {
        out.push_str("\n<details><summary>Table entries per node</summary>\n\n| Node | Before | After | Δ |\n|---|---:|---:|---:|\n");
        for n in &d.nodes {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:+} |",
                n.node,
                counts_total(&n.before),
                counts_total(&n.after),
                n.delta()
            );
        }
        out.push_str("\n</details>\n");
    }
    if let Some(note) = &d.size_note {
        let _ = writeln!(out, "\n_Note: {note}_");
    }
    out
}

fn behaviour_json(b: &Behaviour) -> Value {
    match b {
        Behaviour::Absent => json!({"kind": "absent"}),
        Behaviour::Direct => json!({"kind": "direct"}),
        Behaviour::Dropped => json!({"kind": "dropped", "reason": "no-gateway"}),
        Behaviour::Gateway { node, ip, egress } => json!({
            "kind": "gateway", "node": node, "ip": ip.to_string(),
            "egress_ip": egress.as_ref().map(|e| e.to_string()),
        }),
    }
}

/// The JSON form of a diff.
pub fn to_json(d: &BehaviourDiff) -> Value {
    let changes: Vec<Value> = d
        .groups
        .iter()
        .flat_map(|g| {
            g.changes.iter().map(move |c| {
                json!({
                    "subjects": g.subjects.iter().map(|s| match s {
                        Subject::Namespace { name, endpoints } => json!({"kind": "namespace", "name": name, "endpoints": endpoints}),
                        Subject::Workload { name, endpoints } => json!({"kind": "workload", "name": name, "endpoints": endpoints}),
                        Subject::Pod { key } => json!({"kind": "pod", "name": key}),
                    }).collect::<Vec<_>>(),
                    "endpoints": g.endpoints,
                    "destinations": describe(&c.destinations).iter().map(|(p, ex)| json!({
                        "prefix": p.to_string(),
                        "except": ex.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "before": behaviour_json(&c.before),
                    "after": behaviour_json(&c.after),
                })
            })
        })
        .collect();
    let nodes: Vec<Value> = d
        .nodes
        .iter()
        .map(|n| json!({"node": n.node, "before": n.before.map(|c| c.total()), "after": n.after.map(|c| c.total()), "delta": n.delta()}))
        .collect();
    json!({"changed": !d.is_empty(), "changes": changes, "nodes": nodes, "note": d.size_note})
}

/// How a policy differs between the two sides of a diff without a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyChangeKind {
    Added,
    Removed,
    Modified,
}

impl PolicyChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyChangeKind::Added => "added",
            PolicyChangeKind::Removed => "removed",
            PolicyChangeKind::Modified => "modified",
        }
    }
}

/// The diff of two policy sets without a cluster snapshot: which policies
/// differ in meaning (their canonical YAML, spans and formatting aside).
/// Without pods egret cannot say whose traffic moves, so any difference is
/// reported as a possible behaviour change, never as "no change".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDiff {
    /// Sorted by policy name.
    pub changes: Vec<(String, PolicyChangeKind)>,
}

impl PolicyDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Compares two policy sets by name and canonical form.
pub fn policy_diff(old: &[egret_lang::ast::Policy], new: &[egret_lang::ast::Policy]) -> PolicyDiff {
    let canon = |ps: &[egret_lang::ast::Policy]| -> BTreeMap<String, String> {
        ps.iter().map(|p| (p.name.value.clone(), egret_lang::emit::policies_to_yaml(std::slice::from_ref(p)))).collect()
    };
    let (a, b) = (canon(old), canon(new));
    let mut changes = Vec::new();
    for name in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        let kind = match (a.get(name), b.get(name)) {
            (Some(_), None) => PolicyChangeKind::Removed,
            (None, Some(_)) => PolicyChangeKind::Added,
            (Some(x), Some(y)) if x != y => PolicyChangeKind::Modified,
            _ => continue,
        };
        changes.push((name.clone(), kind));
    }
    PolicyDiff { changes }
}

/// Why a policy-level diff says nothing about pods, and what to do.
pub const NO_SNAPSHOT_NOTE: &str = "without --cluster egret cannot tell which pods' traffic moves: every pod these policies select (now or in the future) may change";
pub const NO_SNAPSHOT_HELP: &str = "give --cluster SNAPSHOT (`kubectl get nodes,namespaces,pods,nodenetworks -A -o yaml`) for the change per pod and destination";

/// Renders a policy-level diff.
pub fn render_policy_diff(d: &PolicyDiff, format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Json => {
            let v = json!({
                "changed": !d.is_empty(),
                "pods_compared": false,
                "policies": d.changes.iter().map(|(n, k)| json!({"name": n, "change": k.as_str()})).collect::<Vec<_>>(),
                "note": if d.is_empty() { Value::Null } else { Value::from(NO_SNAPSHOT_NOTE) },
            });
            out = serde_json::to_string_pretty(&v).unwrap_or_default();
            out.push('\n');
        }
        Format::Human if d.is_empty() => {
            out.push_str("no change: both sides define the same policies, so no pod's egress changes\n");
        }
        Format::Human => {
            let _ = writeln!(out, "{} policies change; egress behaviour may change:", d.changes.len());
            for (n, k) in &d.changes {
                let _ = writeln!(out, "  {:<8} {n}", k.as_str());
            }
            let _ = writeln!(out, "note: {NO_SNAPSHOT_NOTE}");
            let _ = writeln!(out, "help: {NO_SNAPSHOT_HELP}");
        }
        Format::Markdown => {
            out.push_str("### egret: effective egress changes\n\n");
            if d.is_empty() {
                out.push_str("No change: both sides define the same policies.\n");
            } else {
                out.push_str("| Policy | Change |\n|---|---|\n");
                for (n, k) in &d.changes {
                    let _ = writeln!(out, "| `{n}` | {} |", k.as_str());
                }
                let _ = writeln!(out, "\n_Egress behaviour may change: {NO_SNAPSHOT_NOTE}._");
            }
        }
    }
    out
}
