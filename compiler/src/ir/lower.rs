//! Lowering: a resolved [`World`] and a node → an IR [`Module`].
//!
//! [`lower`] produces the `lowered` stage: one class per endpoint hosted by
//! the node that some policy selects (egret's reading), each listing the
//! policies that apply with their action for that endpoint, their
//! destinationCIDRs as captures and their excludedCIDRs — restricted to the
//! address families of the endpoint's IPs (an endpoint only sends packets of
//! its own families). [`lower_optimized`] produces the `minimized` stage
//! directly, through a [`ClassMemo`] shared across nodes; it equals running
//! [`super::passes::PIPELINE`] on [`lower`]'s output (tested).
//!
//! Both compute the gateway side exactly: for each slot the node serves, the
//! IPs of every endpoint in the cluster for which some destination of that
//! IP's family (outside the cluster-internal ranges) is decided as a
//! redirect to this node with that slot (or local egress, for endpoints the
//! node hosts).

use super::passes::{self, reachable_actions};
use super::prefix::prefix_order;
use super::{
    Action, AppliedPolicy, Capture, Choice, Class, DropReason, EndpointRef, Entry, GatewayDecl, Module, Served,
    ServedSource, SlotDecl, Stage, Target,
};
use crate::resolve::{EndpointId, GatewayOutcome, NodeId, PolicyId, World};
use egret_lang::net::{Cidr, Family};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

/// An endpoint's applicable rules, as data: per selecting policy (name
/// order) its action for the endpoint and the families (bit 0 IPv4, bit 1
/// IPv6) in which the policy captures something (`D(P)` non-empty) and the
/// endpoint has IPs; policies with none are left out. Endpoints with equal
/// keys have identical lowered classes, and endpoints whose classes are
/// identical after subtraction have equal keys.
pub type ClassKey = Vec<(PolicyId, Action, u8)>;

fn fam_bit(f: Family) -> u8 {
    match f {
        Family::V4 => 1,
        Family::V6 => 2,
    }
}

/// The action a policy of the world takes for an endpoint's captured
/// traffic: its gateways in failover order, or a `no-gateway` drop when the
/// policy has none. Liveness is not an input: the classifier applies it.
pub fn action_for(world: &World, p: PolicyId, e: EndpointId) -> Action {
    let targets = world.failover(p, e).into_iter().filter_map(|o| match o {
        GatewayOutcome::Gateway { gateway, slot, local } => Some(Target { gateway: gateway.ip, slot: slot.id, local }),
        GatewayOutcome::NoGateway => None,
    });
    Choice::new(targets).map_or(Action::Drop(DropReason::NoGateway), Action::Egress)
}

/// The class key of an endpoint.
pub fn class_key(world: &World, e: EndpointId) -> ClassKey {
    let ep = world.endpoint(e);
    let ep_fams = ep.ips.iter().fold(0u8, |m, ip| m | fam_bit(Family::of(ip)));
    world
        .selecting(e)
        .iter()
        .filter_map(|&p| {
            let pol = world.policy(p);
            let fams = [Family::V4, Family::V6]
                .into_iter()
                .filter(|f| pol.captures_family(*f))
                .fold(0u8, |m, f| m | fam_bit(f))
                & ep_fams;
            (fams != 0).then(|| (p, action_for(world, p, e), fams))
        })
        .collect()
}

/// The lowered policies of a class key.
pub fn applied_policies(world: &World, key: &ClassKey) -> Vec<AppliedPolicy> {
    key.iter()
        .map(|&(p, action, fams)| {
            let pol = world.policy(p);
            let keep = |c: &&Cidr| fam_bit(c.family()) & fams != 0;
            let mut captures: Vec<Capture> =
                pol.destinations.iter().filter(keep).map(|c| Capture { prefix: *c, rank: c.len }).collect();
            captures.sort_by(|a, b| prefix_order(&a.prefix, &b.prefix));
            captures.dedup();
            let mut excludes: Vec<Cidr> = pol.excluded.iter().filter(keep).copied().collect();
            excludes.sort_by(prefix_order);
            excludes.dedup();
            AppliedPolicy { name: pol.name.clone(), action, captures, excludes }
        })
        .collect()
}

/// The compiled tables of one class key.
#[derive(Debug)]
pub struct ClassTables {
    pub key: ClassKey,
    /// The `decided` table (disjoint).
    pub decided: Vec<Entry>,
    /// Actions reachable outside the cluster-internal ranges, per family.
    pub reach: BTreeSet<(Family, Action)>,
    optimized: OnceLock<Vec<Entry>>,
}

impl ClassTables {
    /// The `minimized` table (computed on first use).
    pub fn optimized(&self) -> &[Entry] {
        self.optimized.get_or_init(|| {
            let class = Class { endpoints: Vec::new(), policies: Vec::new(), table: self.decided.clone() };
            passes::run_on_class(class, Stage::Decided, Stage::Minimized).table
        })
    }
}

/// Memoized class tables for one world (and its incremental updates):
/// by class key, and by endpoint. A memo used with another world clears itself.
#[derive(Debug, Default)]
pub struct ClassMemo {
    generation: u64,
    by_key: HashMap<ClassKey, Arc<ClassTables>>,
    by_endpoint: HashMap<EndpointId, Arc<ClassTables>>,
}

impl ClassMemo {
    pub fn new() -> Self {
        Self::default()
    }

    fn check(&mut self, world: &World) {
        if self.generation != world.generation() {
            self.by_key.clear();
            self.by_endpoint.clear();
            self.generation = world.generation();
        }
    }

    /// Number of distinct class keys compiled so far.
    pub fn distinct_classes(&self) -> usize {
        self.by_key.len()
    }

    /// The tables for a class key.
    pub fn tables(&mut self, world: &World, key: ClassKey) -> Arc<ClassTables> {
        self.check(world);
        if let Some(t) = self.by_key.get(&key) {
            return t.clone();
        }
        let class = Class { endpoints: Vec::new(), policies: applied_policies(world, &key), table: Vec::new() };
        let decided = passes::run_on_class(class, Stage::Lowered, Stage::Decided).table;
        let reach = reachable_actions(&decided, &world.internal_ranges().ranges);
        let t = Arc::new(ClassTables { key: key.clone(), decided, reach, optimized: OnceLock::new() });
        self.by_key.insert(key, t.clone());
        t
    }

    /// The tables for an endpoint.
    pub fn for_endpoint(&mut self, world: &World, e: EndpointId) -> Arc<ClassTables> {
        self.check(world);
        if let Some(t) = self.by_endpoint.get(&e) {
            return t.clone();
        }
        let t = self.tables(world, class_key(world, e));
        self.by_endpoint.insert(e, t.clone());
        t
    }

    /// Forgets an endpoint (call after it changed or left the world).
    pub fn forget_endpoint(&mut self, e: EndpointId) {
        self.by_endpoint.remove(&e);
    }
}

fn header(world: &World, node: NodeId, stage: Stage) -> Module {
    let n = world.node(node);
    Module {
        node: n.name.clone(),
        node_ip: n.ip,
        stage,
        internal: world.internal_ranges().prefixes.clone(),
        gateways: Vec::new(),
        slots: world
            .slots()
            .iter()
            .filter(|s| s.gateway == node)
            .map(|s| {
                let d = SlotDecl {
                    id: s.id,
                    gateway: s.gateway_name.clone(),
                    spec: s.spec.clone(),
                    v4: s.v4.clone(),
                    v6: s.v6.clone(),
                    interface: s.interface.clone(),
                    floating: s.floating.clone(),
                };
                (s.id, d)
            })
            .collect::<BTreeMap<_, _>>()
            .into_values()
            .collect(),
        classes: Vec::new(),
        served: Vec::new(),
    }
}

fn endpoint_ref(world: &World, e: EndpointId) -> EndpointRef {
    let ep = world.endpoint(e);
    EndpointRef { key: ep.key.clone(), ips: ep.ips.clone() }
}

fn declare_gateways(world: &World, m: &mut Module, keys: &[&ClassKey]) {
    let mut gws: BTreeMap<std::net::IpAddr, String> = BTreeMap::new();
    for key in keys {
        for (_, a, _) in key.iter() {
            let Action::Egress(choice) = a else { continue };
            for t in choice.targets().iter().filter(|t| !t.local) {
                let name = world.node_with_ip(t.gateway).map_or_else(|| t.gateway.to_string(), |n| n.name.clone());
                gws.entry(t.gateway).or_insert(name);
            }
        }
    }
    m.gateways = gws.into_iter().map(|(ip, node)| GatewayDecl { node, ip }).collect();
}

/// The gateway side of a node: per slot it serves, the allowed sources —
/// every endpoint that can fail over to it (the slot is among the targets
/// of its action) for a family in which that action is reachable.
fn served(world: &World, node: NodeId, memo: &mut ClassMemo) -> Vec<Served> {
    let mut out: BTreeMap<crate::resolve::SlotId, BTreeSet<ServedSource>> = BTreeMap::new();
    let policies: BTreeSet<PolicyId> = world.gateway_entries_on(node).iter().map(|(p, _)| *p).collect();
    let mine: BTreeSet<crate::resolve::SlotId> =
        world.slots().iter().filter(|s| s.gateway == node).map(|s| s.id).collect();
    for p in policies {
        let pol = world.policy(p);
        for &e in world.selection(p) {
            let action = action_for(world, p, e);
            let Action::Egress(choice) = action else { continue };
            let t = memo.for_endpoint(world, e);
            let ep = world.endpoint(e);
            // a remote endpoint's packets arrive through the tunnel from its
            // node (or, for a floating slot, from a candidate forwarding them)
            let from = if ep.node == Some(node) { None } else { ep.node.and_then(|n| world.node(n).ip) };
            for target in choice.targets().iter().filter(|t| mine.contains(&t.slot)) {
                for ip in &ep.ips {
                    let fam = Family::of(ip);
                    if pol.has_family(fam) && t.reach.contains(&(fam, action)) {
                        out.entry(target.slot).or_default().insert(ServedSource {
                            ip: *ip,
                            endpoint: ep.key.clone(),
                            from,
                        });
                    }
                }
            }
        }
    }
    out.into_iter()
        .map(|(slot, s)| {
            let mut sources: Vec<ServedSource> = s.into_iter().collect();
            sources.sort_by(|a, b| (a.ip, &a.endpoint).cmp(&(b.ip, &b.endpoint)));
            Served { slot, sources }
        })
        .collect()
}

/// Lowers the world for one node (stage `lowered`).
pub fn lower(world: &World, node: NodeId, memo: &mut ClassMemo) -> Module {
    let mut m = header(world, node, Stage::Lowered);
    let mut keys: Vec<ClassKey> = Vec::new();
    let mut classes: Vec<Class> = Vec::new();
    for ep in world.endpoints_on(node) {
        let key = class_key(world, ep.id);
        if key.is_empty() {
            continue;
        }
        classes.push(Class {
            endpoints: vec![endpoint_ref(world, ep.id)],
            policies: applied_policies(world, &key),
            table: Vec::new(),
        });
        keys.push(key);
    }
    classes.sort_by(|a, b| a.endpoints[0].key.cmp(&b.endpoints[0].key));
    m.classes = classes;
    declare_gateways(world, &mut m, &keys.iter().collect::<Vec<_>>());
    m.served = served(world, node, memo);
    m
}

/// Lowers and optimizes in one step, with memoized class tables (stage
/// `minimized`). Equal to `lower` followed by the whole pipeline.
pub fn lower_optimized(world: &World, node: NodeId, memo: &mut ClassMemo) -> Module {
    let mut m = header(world, node, Stage::Minimized);
    let mut groups: BTreeMap<ClassKey, (Arc<ClassTables>, Vec<EndpointRef>)> = BTreeMap::new();
    for ep in world.endpoints_on(node) {
        let t = memo.for_endpoint(world, ep.id);
        if t.key.is_empty() {
            continue;
        }
        groups.entry(t.key.clone()).or_insert_with(|| (t.clone(), Vec::new())).1.push(endpoint_ref(world, ep.id));
    }
    let keys: Vec<&ClassKey> = groups.keys().collect();
    declare_gateways(world, &mut m, &keys);
    let mut classes: Vec<Class> = groups
        .into_values()
        .map(|(t, mut endpoints)| {
            endpoints.sort();
            Class { endpoints, policies: Vec::new(), table: t.optimized().to_vec() }
        })
        .collect();
    classes.sort_by(|a, b| a.endpoints[0].key.cmp(&b.endpoints[0].key));
    m.classes = classes;
    m.served = served(world, node, memo);
    m
}
