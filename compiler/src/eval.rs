//! The reference evaluator: SEMANTICS.md, "The decision for one packet",
//! written as directly as possible and independent of the IR machinery.
//! Generated code and plans are checked against it.
//!
//! [`decide`] takes a resolved [`World`], a source (an endpoint, or a source
//! IP looked up among endpoint IPs) and a destination address, and returns
//! the [`Decision`]: the verdict, the winning policy, the gateway and egress
//! IP, and a trail with one [`Consideration`] per policy of the world (in
//! name order) saying whether it selects the endpoint (and through which
//! item, or why not), whether its destinations contain the address (or
//! which exclusion removes it), and how it fared.
//!
//! [`Reference`] is the same decision prepared for many packets (selection
//! computed once per endpoint, internal prefixes indexed): what the code
//! generator's equivalence checker asks for every packet it runs.
//!
//! "Local egress" is relative to the node evaluating the packet, which is
//! the endpoint's own node. A source IP that belongs to no endpoint is
//! passed (no policy can select it), as the datapath does. Never panics.

use crate::ir::{Effect, Health};
use crate::resolve::{
    Assignment, EgressIp, Endpoint, EndpointId, GatewayOutcome, InternalSource, PolicyInfo, Reading, ResolvedGateway,
    SlotId, World, assign_with, first_selector_miss, fnv1a_32, selector_miss,
};
use egret_lang::net::{Cidr, Family, ip_to_u128, prefix_mask};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

pub use crate::ir::DropReason;

/// Where a packet comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Endpoint(EndpointId),
    /// A source address; the endpoint holding it, if any.
    Ip(IpAddr),
}

/// The resolved source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// The source address: as given, or the endpoint's IP of the destination's family.
    pub ip: Option<IpAddr>,
    pub endpoint: Option<EndpointId>,
    /// `namespace/name`.
    pub key: Option<String>,
    /// The node evaluating the packet (the endpoint's node).
    pub node: Option<String>,
}

/// A gateway node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRef {
    pub node: String,
    pub ip: IpAddr,
}

/// Why a packet takes the normal route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassReason {
    /// The source is no endpoint's IP.
    NotAnEndpoint,
    /// The destination is cluster-internal (step 1).
    ClusterInternal { range: Cidr, source: InternalSource },
    /// No policy selects the endpoint and captures the destination (step 2).
    NoPolicyMatches,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass {
        reason: PassReason,
    },
    Drop {
        reason: DropReason,
    },
    /// Tunnel to the gateway, which SNATs to `egress_ip`.
    Redirect {
        gateway: GatewayRef,
        slot: SlotId,
        egress_ip: Option<EgressIp>,
    },
    /// This node is the gateway: SNAT to `egress_ip` here.
    LocalEgress {
        gateway: GatewayRef,
        slot: SlotId,
        egress_ip: Option<EgressIp>,
    },
}

impl Verdict {
    /// What the datapath does with the packet under this verdict.
    pub fn effect(&self) -> Effect {
        match self {
            Verdict::Pass { .. } => Effect::Pass,
            Verdict::Drop { reason } => Effect::Drop(*reason),
            Verdict::Redirect { gateway, slot, .. } => Effect::Redirect { gateway: gateway.ip, slot: *slot },
            Verdict::LocalEgress { slot, .. } => Effect::LocalEgress { slot: *slot },
        }
    }
}

/// Why the winner won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WinReason {
    /// It was the only policy matching.
    OnlyMatch,
    /// Its matching destination prefix is the longest; `runner_up` is the next best.
    LongestPrefix { runner_up: String, runner_up_len: u8 },
    /// Tied on prefix length with `tied_with`; the smallest name wins.
    TieBreakByName { tied_with: Vec<String> },
}

/// The winning policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Winner {
    pub policy: String,
    /// Its longest `destinationCIDRs` entry containing the destination.
    pub prefix: Cidr,
    pub reason: WinReason,
}

/// How the winner's gateway was chosen for the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayChoice {
    /// The resolved gateways, sorted by IP, with liveness (as the decision took it).
    pub candidates: Vec<(GatewayRef, bool)>,
    /// The endpoint's failover order (indexes into `candidates`): the first live one is used.
    pub order: Vec<usize>,
    /// `fnv1a_32(identity)`.
    pub hash: u32,
    pub assignment: Assignment,
}

/// Why a selector item does not select the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemMiss {
    /// 0-based index in `spec.selectors`.
    pub item: usize,
    pub reason: String,
}

/// Whether a policy selects the endpoint (egret's reading).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Through this item (0-based, the first that matches).
    Selected {
        item: usize,
    },
    NotSelected {
        misses: Vec<ItemMiss>,
    },
}

/// Whether a policy's destinations contain the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationMatch {
    /// `entry` is the longest destinationCIDRs entry containing it.
    Contains {
        entry: Cidr,
    },
    /// `entry` contains it, but excluded CIDR `by` removes it.
    Excluded {
        entry: Cidr,
        by: Cidr,
    },
    NoEntryContains,
}

/// How a policy fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Won,
    LostToLongerPrefix {
        winner: String,
        winner_len: u8,
    },
    LostTieBreak {
        winner: String,
    },
    NotSelected,
    NoMatchingDestination,
    /// It matched, but the destination is cluster-internal.
    OverriddenByClusterInternal,
}

/// One policy's part in the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consideration {
    pub policy: String,
    pub selection: Selection,
    /// Whether Cilium's reading (pooled nodeSelectors) selects the endpoint;
    /// `None` in [`Reference::decide`]'s trail, which does not compute it.
    pub cilium_selected: Option<bool>,
    pub destination: DestinationMatch,
    pub outcome: Outcome,
}

/// Everything about one packet's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub source: SourceInfo,
    pub destination: IpAddr,
    pub verdict: Verdict,
    pub winner: Option<Winner>,
    pub gateway: Option<GatewayChoice>,
    pub trail: Vec<Consideration>,
}

/// The part of a selector item that misses an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingPart {
    /// Neither podSelector nor namespaceSelector.
    Invalid,
    Pod,
    Namespace,
    Node,
}

/// The first part of an item that misses an endpoint (`None` when it
/// selects it), without putting the reason in words.
fn missing_part(world: &World, item: &egret_lang::ast::SelectorItem, ep: &Endpoint) -> Option<MissingPart> {
    if item.pod_selector.is_none() && item.namespace_selector.is_none() {
        return Some(MissingPart::Invalid);
    }
    if let Some(s) = &item.pod_selector
        && first_selector_miss(s, &ep.labels).is_some()
    {
        return Some(MissingPart::Pod);
    }
    if let Some(s) = &item.namespace_selector
        && first_selector_miss(s, &world.namespace_labels(&ep.namespace)).is_some()
    {
        return Some(MissingPart::Namespace);
    }
    if let Some(s) = &item.node_selector
        && first_selector_miss(s, &node_labels(world, ep)).is_some()
    {
        return Some(MissingPart::Node);
    }
    None
}

fn node_labels(world: &World, ep: &Endpoint) -> egret_lang::ast::Labels {
    ep.node.map(|n| world.node(n).labels.clone()).unwrap_or_default()
}

/// Why an item misses an endpoint, or `None` when it selects it.
pub fn item_miss(world: &World, item: &egret_lang::ast::SelectorItem, ep: &Endpoint) -> Option<String> {
    let why = |s: &Option<egret_lang::ast::LabelSelector>, labels: &egret_lang::ast::Labels| {
        s.as_ref().and_then(|s| selector_miss(s, labels)).unwrap_or_default()
    };
    Some(match missing_part(world, item, ep)? {
        MissingPart::Invalid => "has neither podSelector nor namespaceSelector (invalid, selects nothing)".to_string(),
        MissingPart::Pod => format!("podSelector: {}", why(&item.pod_selector, &ep.labels)),
        MissingPart::Namespace => format!(
            "namespaceSelector: namespace `{}`: {}",
            ep.namespace,
            why(&item.namespace_selector, &world.namespace_labels(&ep.namespace))
        ),
        MissingPart::Node => {
            let node = ep.node_name.as_deref().unwrap_or("(none)");
            format!("nodeSelector: node `{node}`: {}", why(&item.node_selector, &node_labels(world, ep)))
        }
    })
}

/// The first item of a policy that selects the endpoint (what [`selection`]
/// finds, without the reasons of the items before it).
fn selecting_item(world: &World, p: &PolicyInfo, ep: &Endpoint) -> Option<usize> {
    p.ast.selectors.iter().position(|item| missing_part(world, item, ep).is_none())
}

fn selection(world: &World, p: &PolicyInfo, ep: &Endpoint) -> Selection {
    let mut misses = Vec::new();
    for (i, item) in p.ast.selectors.iter().enumerate() {
        match item_miss(world, item, ep) {
            None => return Selection::Selected { item: i },
            Some(reason) => misses.push(ItemMiss { item: i, reason }),
        }
    }
    Selection::NotSelected { misses }
}

/// Step 2's test for one policy: the longest destination entry containing
/// `a`, unless an excluded CIDR removes `a`.
pub fn destination_match(p: &PolicyInfo, a: IpAddr) -> DestinationMatch {
    let Some(entry) = p.destinations.iter().filter(|c| c.contains_ip(a)).max_by_key(|c| c.len).copied() else {
        return DestinationMatch::NoEntryContains;
    };
    match p.excluded.iter().filter(|c| c.contains_ip(a)).max_by_key(|c| c.len) {
        Some(by) => DestinationMatch::Excluded { entry, by: *by },
        None => DestinationMatch::Contains { entry },
    }
}

/// Decides the fate of a packet from `source` to `destination`, with a trail
/// entry for every policy of the world (what `egret explain` shows); a
/// gateway is live when its node is Ready (the snapshot's view).
pub fn decide(world: &World, source: Source, destination: IpAddr) -> Decision {
    decide_in(world, source, destination, None)
}

/// [`decide`] with the gateways' liveness given: `health` is then the whole
/// truth (the agent folds Ready into it), as the datapath sees it.
pub fn decide_with(world: &World, source: Source, destination: IpAddr, health: &Health) -> Decision {
    decide_in(world, source, destination, Some(health))
}

fn decide_in(world: &World, source: Source, destination: IpAddr, health: Option<&Health>) -> Decision {
    let (src, ep) = source_info(world, source, destination);
    let Some(ep) = ep else { return not_an_endpoint(src, destination) };
    let trail = world
        .policies()
        .iter()
        .map(|p| {
            consideration(
                p,
                selection(world, p, ep),
                Some(world.selects(&p.ast, ep, Reading::Cilium)),
                destination_match(p, destination),
            )
        })
        .collect();
    let internal = world.internal_ranges().source_of(destination).cloned();
    conclude(world, src, ep, destination, trail, internal, health)
}

/// The reference evaluator prepared for many packets: the same decision as
/// [`decide`] (same steps, same functions), for checkers that ask for
/// thousands of packets from a few endpoints.
///
/// What it saves, and why the verdict cannot change:
/// - Selection (step 2, "the policies that select E") is computed once per
///   endpoint, over every policy, with the per-item test [`decide`]'s
///   trail uses (without putting the misses in words), and remembered; a
///   packet then tests the destinations of those policies only. A policy
///   that does not select E is never in M.
/// - The trail holds only the policies in M's candidate set: selecting E and
///   with a destination entry containing the address (its outcome says
///   whether an exclusion removed it); `cilium_selected` is `None`.
/// - Step 1 looks the destination up in an index of the world's contributing
///   internal prefixes by (family, length) and network address, built here;
///   it returns what [`crate::resolve::InternalRanges::source_of`] returns
///   (the first contributing prefix, in sorted order, containing it).
///
/// Not a re-use of plans or of the IR: the index holds only what SEMANTICS.md
/// names (selection per endpoint, the contributing internal prefixes).
#[derive(Debug)]
pub struct Reference<'w> {
    world: &'w World,
    /// Endpoint → the policies (indexes into `world.policies()`, name order)
    /// that select it, with the first selecting item.
    selecting: HashMap<EndpointId, Vec<(usize, usize)>>,
    /// (family, prefix length) → network address → the smallest index in
    /// `world.internal_ranges().sources` with that prefix.
    internal: BTreeMap<(Family, u8), HashMap<u128, usize>>,
}

impl<'w> Reference<'w> {
    pub fn new(world: &'w World) -> Reference<'w> {
        let mut internal: BTreeMap<(Family, u8), HashMap<u128, usize>> = BTreeMap::new();
        for (i, (c, _)) in world.internal_ranges().sources.iter().enumerate() {
            let net = c.network();
            internal.entry((c.family(), c.len)).or_default().entry(net.bits()).or_insert(i);
        }
        Reference { world, selecting: HashMap::new(), internal }
    }

    /// The decision for one packet (trail: see the type's documentation),
    /// gateways live when Ready, as [`decide`].
    pub fn decide(&mut self, source: Source, destination: IpAddr) -> Decision {
        self.decide_in(source, destination, None)
    }

    /// The decision under `health`, as [`decide_with`].
    pub fn decide_with(&mut self, source: Source, destination: IpAddr, health: &Health) -> Decision {
        self.decide_in(source, destination, Some(health))
    }

    fn decide_in(&mut self, source: Source, destination: IpAddr, health: Option<&Health>) -> Decision {
        let world = self.world;
        let (src, ep) = source_info(world, source, destination);
        let Some(ep) = ep else { return not_an_endpoint(src, destination) };
        let selecting = self.selecting.entry(ep.id).or_insert_with(|| {
            world
                .policies()
                .iter()
                .enumerate()
                .filter_map(|(i, p)| selecting_item(world, p, ep).map(|item| (i, item)))
                .collect()
        });
        let trail = selecting
            .iter()
            .filter_map(|(i, item)| {
                let p = &world.policies()[*i];
                let d = destination_match(p, destination);
                (d != DestinationMatch::NoEntryContains)
                    .then(|| consideration(p, Selection::Selected { item: *item }, None, d))
            })
            .collect();
        let sources = &world.internal_ranges().sources;
        let fam = Family::of(&destination);
        let a = ip_to_u128(destination);
        let internal = self
            .internal
            .range((fam, 0)..=(fam, u8::MAX))
            .filter_map(|((_, len), nets)| nets.get(&(a & prefix_mask(fam, *len))))
            .min()
            .and_then(|i| sources.get(*i))
            .cloned();
        conclude(world, src, ep, destination, trail, internal, health)
    }
}

/// The source of a packet, resolved, and its endpoint.
fn source_info(world: &World, source: Source, destination: IpAddr) -> (SourceInfo, Option<&Endpoint>) {
    let fam = Family::of(&destination);
    let ep = match source {
        Source::Endpoint(id) => world.live_endpoint(id),
        Source::Ip(ip) => world.endpoint_by_ip(ip),
    };
    let src = SourceInfo {
        ip: match source {
            Source::Ip(ip) => Some(ip),
            Source::Endpoint(_) => ep.and_then(|e| e.ip(fam)),
        },
        endpoint: ep.map(|e| e.id),
        key: ep.map(|e| e.key.clone()),
        node: ep.and_then(|e| e.node).map(|n| world.node(n).name.clone()),
    };
    (src, ep)
}

fn not_an_endpoint(source: SourceInfo, destination: IpAddr) -> Decision {
    Decision {
        source,
        destination,
        verdict: Verdict::Pass { reason: PassReason::NotAnEndpoint },
        winner: None,
        gateway: None,
        trail: Vec::new(),
    }
}

/// One policy's trail entry, with a provisional outcome (`Won` for every member of M).
fn consideration(
    p: &PolicyInfo,
    selection: Selection,
    cilium_selected: Option<bool>,
    destination: DestinationMatch,
) -> Consideration {
    Consideration {
        policy: p.name.clone(),
        cilium_selected,
        outcome: match (&selection, &destination) {
            (Selection::NotSelected { .. }, _) => Outcome::NotSelected,
            (_, DestinationMatch::Contains { .. }) => Outcome::Won, // provisional
            _ => Outcome::NoMatchingDestination,
        },
        selection,
        destination,
    }
}

/// Steps 1–4 from a trail in name order that holds at least every member of
/// M, and the internal prefix containing the destination, if any.
fn conclude(
    world: &World,
    src: SourceInfo,
    ep: &Endpoint,
    destination: IpAddr,
    mut trail: Vec<Consideration>,
    internal: Option<(Cidr, InternalSource)>,
    health: Option<&Health>,
) -> Decision {
    let fam = Family::of(&destination);
    // M: (index in trail, rank)
    let m: Vec<(usize, u8)> = trail
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match (&c.outcome, &c.destination) {
            (Outcome::Won, DestinationMatch::Contains { entry }) => Some((i, entry.len)),
            _ => None,
        })
        .collect();

    // Step 1: cluster-internal.
    if let Some((range, source)) = internal {
        for (i, _) in &m {
            trail[*i].outcome = Outcome::OverriddenByClusterInternal;
        }
        return Decision {
            source: src,
            destination,
            verdict: Verdict::Pass { reason: PassReason::ClusterInternal { range, source } },
            winner: None,
            gateway: None,
            trail,
        };
    }
    // Step 2: M empty.
    if m.is_empty() {
        return Decision {
            source: src,
            destination,
            verdict: Verdict::Pass { reason: PassReason::NoPolicyMatches },
            winner: None,
            gateway: None,
            trail,
        };
    }
    // Step 3: longest prefix, then smallest name (the trail is in name order,
    // so the first of the longest).
    let best = m.iter().map(|(_, r)| *r).max().unwrap_or(0);
    let w = m.iter().find(|(_, r)| *r == best).map_or(0, |(i, _)| *i);
    let winner_name = trail[w].policy.clone();
    let tied: Vec<String> =
        m.iter().filter(|(i, r)| *r == best && *i != w).map(|(i, _)| trail[*i].policy.clone()).collect();
    let reason = if m.len() == 1 {
        WinReason::OnlyMatch
    } else if !tied.is_empty() {
        WinReason::TieBreakByName { tied_with: tied }
    } else {
        let (ri, rl) = m
            .iter()
            .filter(|(i, _)| *i != w)
            .max_by_key(|(i, r)| (*r, std::cmp::Reverse(*i)))
            .copied()
            .unwrap_or((w, 0));
        WinReason::LongestPrefix { runner_up: trail[ri].policy.clone(), runner_up_len: rl }
    };
    for (i, r) in &m {
        if *i == w {
            continue;
        }
        trail[*i].outcome = if *r < best {
            Outcome::LostToLongerPrefix { winner: winner_name.clone(), winner_len: best }
        } else {
            Outcome::LostTieBreak { winner: winner_name.clone() }
        };
    }
    let prefix = match trail[w].destination {
        DestinationMatch::Contains { entry } => entry,
        _ => Cidr::new(destination, 0),
    };
    let winner = Winner { policy: winner_name.clone(), prefix, reason };

    // Step 4: the winner's gateway for E.
    let Some(pol) = world.policy_by_name(&winner_name) else {
        return Decision {
            source: src,
            destination,
            verdict: Verdict::Drop { reason: DropReason::NoGateway },
            winner: Some(winner),
            gateway: None,
            trail,
        };
    };
    // Health: the given liveness, else each gateway's Ready condition.
    let live = |g: &ResolvedGateway| health.map_or(g.healthy, |h| h.is_up(g.ip));
    let gateway = GatewayChoice {
        candidates: pol
            .gateways
            .iter()
            .map(|g| (GatewayRef { node: g.node_name.clone(), ip: g.ip }, live(g)))
            .collect(),
        order: crate::resolve::failover_order(&pol.gateways, &ep.identity),
        hash: fnv1a_32(ep.identity.as_bytes()),
        assignment: assign_with(&pol.gateways, &ep.identity, live),
    };
    let verdict = match world.gateway_outcome_with(pol.id, ep.id, live) {
        GatewayOutcome::NoGateway => Verdict::Drop { reason: DropReason::NoGateway },
        GatewayOutcome::Gateway { gateway: g, slot, local } => {
            let gateway = GatewayRef { node: g.node_name.clone(), ip: g.ip };
            let egress_ip = slot.egress(fam).cloned();
            if local {
                Verdict::LocalEgress { gateway, slot: slot.id, egress_ip }
            } else {
                Verdict::Redirect { gateway, slot: slot.id, egress_ip }
            }
        }
    };
    Decision { source: src, destination, verdict, winner: Some(winner), gateway: Some(gateway), trail }
}
