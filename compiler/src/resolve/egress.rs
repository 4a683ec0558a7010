//! Egress slots: what a gateway node sends a policy's traffic from (egress
//! IPs, interfaces, floating IPs) and the slots' cluster-unique ids.

use super::*;

/// An egress slot id: the VXLAN VNI a source node puts on packets it
/// redirects, and the key of the gateway's tables. 24 bits, never 0, unique
/// in the cluster, derived from the slot's (gateway node, egress spec) so it
/// does not change when unrelated policies come and go.
///
/// Scheme ([`World::slots`]): a floating egress IP's slot, shared by all its
/// candidates, is `fnv1a_32("floating" ‖ 0x00 ‖ IP as text) & 0xffffff`;
/// any other slot's is `fnv1a_32(node name ‖ 0x00 ‖ spec as text) &
/// 0xffffff`. Floating IPs are numbered first, in IP order, then the other
/// slots in (node name, spec) order; a 0 or taken id moves to the next
/// free one (+1, wrapping in 24 bits). Every node compiles from the same
/// world, so sources and all candidates agree on the id; an id changes only
/// when a colliding slot appears before it in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(pub u32);

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:06x}", self.0)
    }
}

/// How a gateway entry obtains its egress IP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EgressSpec {
    /// `egressIP` set.
    EgressIp(IpAddr),
    /// `egressIP` set and floating (an IPv4 address; [`GatewaySpec::floating`]):
    /// every matching node is a candidate to hold it.
    Floating(Ipv4Addr),
    /// `interface` set.
    Interface(String),
    /// Neither: the interface holding the default route.
    DefaultRoute,
}

impl EgressSpec {
    pub fn of(g: &GatewaySpec) -> EgressSpec {
        match (&g.egress_ip, &g.interface) {
            // a floating IPv6 address is refused by validation (E0119)
            (Some(ip), _) => match (g.floating, ip.value) {
                (Some(_), IpAddr::V4(v4)) => EgressSpec::Floating(v4),
                _ => EgressSpec::EgressIp(ip.value),
            },
            (None, Some(i)) => EgressSpec::Interface(i.value.clone()),
            (None, None) => EgressSpec::DefaultRoute,
        }
    }
}

impl fmt::Display for EgressSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressSpec::EgressIp(ip) => write!(f, "egress-ip {ip}"),
            EgressSpec::Floating(ip) => write!(f, "floating-ip {ip}"),
            EgressSpec::Interface(i) => write!(f, "interface {i}"),
            EgressSpec::DefaultRoute => f.write_str("default-route"),
        }
    }
}

/// Why a family has no egress IP on a gateway (the gateway drops that
/// family's traffic, drop reason `no-egress-ip`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoEgressIp {
    /// `egressIP` is on no interface of the node (E0306).
    EgressIpNotOnNode { ip: IpAddr },
    /// The interface is not on the node, by name or altName (E0307).
    InterfaceNotOnNode { interface: String },
    /// The NodeNetwork names no default-route interface.
    NoDefaultRoute,
    /// The interface has no non-link-local address of the family.
    NoAddress { interface: String, family: Family },
}

impl fmt::Display for NoEgressIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoEgressIp::EgressIpNotOnNode { ip } => write!(f, "{ip} is on no interface of the node"),
            NoEgressIp::InterfaceNotOnNode { interface } => write!(f, "interface {interface} is not on the node"),
            NoEgressIp::NoDefaultRoute => f.write_str("the node reports no default-route interface"),
            NoEgressIp::NoAddress { interface, family } => {
                write!(f, "interface {interface} has no non-link-local {} address", family.as_str())
            }
        }
    }
}

/// An egress IP for one family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EgressIp {
    /// Known at compile time.
    Known(IpAddr),
    /// A node fact the loader fills in on the gateway node.
    LateBound { spec: EgressSpec, family: Family },
    /// Cannot be resolved: the gateway drops this family (`no-egress-ip`).
    Unavailable { reason: NoEgressIp },
}

impl EgressIp {
    pub fn known(&self) -> Option<IpAddr> {
        match self {
            EgressIp::Known(ip) => Some(*ip),
            _ => None,
        }
    }
}

impl fmt::Display for EgressIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressIp::Known(ip) => write!(f, "{ip}"),
            EgressIp::LateBound { spec, family } => write!(f, "late({spec}, {})", family.as_str()),
            EgressIp::Unavailable { reason } => write!(f, "none({reason})"),
        }
    }
}

/// The interface a slot sends from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InterfaceBinding {
    Known {
        name: String,
        index: Option<u32>,
    },
    /// Found by the loader on the node.
    LateBound {
        spec: EgressSpec,
    },
    Unavailable {
        reason: NoEgressIp,
    },
}

impl fmt::Display for InterfaceBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceBinding::Known { name, index: Some(i) } => write!(f, "{name}#{i}"),
            InterfaceBinding::Known { name, index: None } => f.write_str(name),
            InterfaceBinding::LateBound { spec } => write!(f, "late({spec})"),
            InterfaceBinding::Unavailable { reason } => write!(f, "none({reason})"),
        }
    }
}

/// An egress slot: one egress configuration on one gateway node. The
/// candidates of a floating egress IP each have one, all with the same id
/// (see [`World::slots`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSlot {
    pub id: SlotId,
    pub gateway: NodeId,
    pub gateway_name: String,
    pub spec: EgressSpec,
    /// Egress IPv4, when some policy using the slot has IPv4 destinations.
    pub v4: Option<EgressIp>,
    /// Egress IPv6, when some policy using the slot has IPv6 destinations.
    pub v6: Option<EgressIp>,
    pub interface: InterfaceBinding,
    /// For the slot of a floating egress IP (spec [`EgressSpec::Floating`]):
    /// the IP and all its candidates.
    pub floating: Option<FloatingSlot>,
}

/// A floating egress IP's shared slot, as each candidate serves it: only
/// the current owner (a run-time fact: `egret_float_owner`, kept by the
/// agents through a Lease per IP) SNATs; the others forward to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FloatingSlot {
    /// The floating egress IP (the slot's egress IPv4 on every candidate).
    pub ip: Ipv4Addr,
    /// Every candidate gateway (this node included): node name and
    /// underlay address ([`super::NodeInfo::ip`], the tunnel remote), sorted
    /// by IP.
    pub candidates: Vec<(String, IpAddr)>,
}

impl FloatingSlot {
    /// The candidates other than the node with underlay address `node`
    /// (what that node's `egret_gw_peers` holds for the slot).
    pub fn peers_of(&self, node: Option<IpAddr>) -> impl Iterator<Item = &(String, IpAddr)> {
        self.candidates.iter().filter(move |(_, ip)| Some(*ip) != node)
    }
}

impl EgressSlot {
    pub fn egress(&self, family: Family) -> Option<&EgressIp> {
        match family {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }
    }
}

impl World {
    /// The egress IP of a gateway entry on a node, for one family
    /// (SEMANTICS.md, "Egress IP"): from the node's NodeNetwork when the
    /// snapshot has one, else late-bound (an `egressIP` is known for its own
    /// family without one).
    pub fn egress_ip(&self, g: &GatewaySpec, node: NodeId, family: Family) -> EgressIp {
        self.egress_for_spec(&EgressSpec::of(g), node, family)
    }

    /// [`World::egress_ip`] for an egress spec rather than a gateway entry
    /// (the Cilium view reads a floating entry as a fixed `egressIP`).
    pub fn egress_for_spec(&self, spec: &EgressSpec, node: NodeId, family: Family) -> EgressIp {
        if let EgressSpec::Floating(ip) = spec
            && family == Family::V4
        {
            // the floating IP itself, on every candidate: it need not be on the node
            return EgressIp::Known(IpAddr::V4(*ip));
        }
        match self.egress_interface(spec, node) {
            Ok(Some(iface)) => match spec {
                EgressSpec::EgressIp(ip) if Family::of(ip) == family => EgressIp::Known(*ip),
                _ => match first_address(iface, family) {
                    Some(ip) => EgressIp::Known(ip),
                    None => EgressIp::Unavailable {
                        reason: NoEgressIp::NoAddress { interface: iface.name.clone(), family },
                    },
                },
            },
            Ok(None) => match spec {
                // No NodeNetwork: a written egressIP is known for its own family.
                EgressSpec::EgressIp(ip) if Family::of(ip) == family => EgressIp::Known(*ip),
                _ => EgressIp::LateBound { spec: spec.clone(), family },
            },
            Err(reason) => EgressIp::Unavailable { reason },
        }
    }

    /// The interface a spec names on a node: `Ok(None)` when the snapshot has
    /// no NodeNetwork for it (late-bound).
    fn egress_interface(&self, spec: &EgressSpec, node: NodeId) -> Result<Option<&Interface>, NoEgressIp> {
        let Some(net) = self.nodes.get(node.index()).and_then(|n| n.network.as_ref()) else {
            return Ok(None);
        };
        let by_name = |name: &str| {
            net.interfaces
                .iter()
                .find(|i| i.name == name)
                .or_else(|| net.interfaces.iter().find(|i| i.alt_names.iter().any(|a| a == name)))
        };
        match spec {
            EgressSpec::EgressIp(ip) => net
                .interfaces
                .iter()
                .find(|i| i.addresses.iter().any(|a| a.addr == *ip))
                .map(Some)
                .ok_or(NoEgressIp::EgressIpNotOnNode { ip: *ip }),
            // the interface on the IP's subnet, else the default route's; the
            // /32 its current owner holds is ignored (the plan must not
            // change when the IP moves)
            EgressSpec::Floating(ip) => match net.interfaces.iter().find(|i| {
                i.addresses.iter().any(|a| a.len < 32 && a.addr != IpAddr::V4(*ip) && a.contains_ip(IpAddr::V4(*ip)))
            }) {
                Some(i) => Ok(Some(i)),
                None => self.egress_interface(&EgressSpec::DefaultRoute, node),
            },
            EgressSpec::Interface(name) => {
                by_name(name).map(Some).ok_or_else(|| NoEgressIp::InterfaceNotOnNode { interface: name.clone() })
            }
            EgressSpec::DefaultRoute => {
                let name = net.default_route_interface.as_deref().ok_or(NoEgressIp::NoDefaultRoute)?;
                by_name(name).map(Some).ok_or_else(|| NoEgressIp::InterfaceNotOnNode { interface: name.to_string() })
            }
        }
    }

    /// Checks the claims on floating egress IPs (E0310: policies floating one
    /// IP over different candidate nodes; E0311: a node holds the IP as a
    /// fixed address, with a prefix shorter than /32) and returns the IPs
    /// refused: their gateway entries resolve to no node, so the policies'
    /// traffic through them is dropped (`no-gateway`) rather than sent from
    /// the IP by a node that should not hold it.
    pub(super) fn check_floating(&self, policies: &[&Policy], diags: &mut Vec<Diagnostic>) -> BTreeSet<Ipv4Addr> {
        type Claim<'p> = (&'p Policy, Span, BTreeSet<NodeId>);
        let mut claims: BTreeMap<Ipv4Addr, Vec<Claim<'_>>> = BTreeMap::new();
        for p in policies {
            // per policy, the union of its entries' candidates for each IP
            let mut mine: BTreeMap<Ipv4Addr, (Span, BTreeSet<NodeId>)> = BTreeMap::new();
            for g in p.gateways() {
                let (EgressSpec::Floating(ip), Some(written)) = (EgressSpec::of(g), &g.egress_ip) else { continue };
                let e = mine.entry(ip).or_insert_with(|| (written.span, BTreeSet::new()));
                e.1.extend(self.floating_candidates(g).iter().map(|n| n.id));
            }
            for (ip, (span, set)) in mine {
                claims.entry(ip).or_default().push((p, span, set));
            }
        }
        let names = |set: &BTreeSet<NodeId>| {
            let v: Vec<&str> = set.iter().map(|n| self.nodes[n.index()].name.as_str()).collect();
            if v.is_empty() { "no node".to_string() } else { v.join(", ") }
        };
        let mut refused = BTreeSet::new();
        for (ip, claims) in &claims {
            let (first, first_span, first_set) = &claims[0];
            for (p, span, set) in claims.iter().skip(1).filter(|(_, _, set)| set != first_set) {
                refused.insert(*ip);
                diags.push(
                    Diagnostic::new(
                        &codes::FLOATING_CANDIDATES_DIFFER,
                        format!(
                            "floating egress IP {ip} is claimed by policies `{}` (candidates {}) and `{}` (candidates {})",
                            first.name.value,
                            names(first_set),
                            p.name.value,
                            names(set)
                        ),
                    )
                    .primary(*span, format!("policy `{}`: candidates {}", p.name.value, names(set)))
                    .secondary(*first_span, format!("policy `{}`: candidates {}", first.name.value, names(first_set)))
                    .note(format!(
                        "every policy floating {ip} gets no gateway from it: their traffic through it is dropped (no-gateway)"
                    ))
                    .help("give the policies the same gateway nodeSelector, or float different IPs"),
                );
            }
            for n in &self.nodes {
                let Some(net) = &n.network else { continue };
                for (iface, a) in net.interfaces.iter().flat_map(|i| i.addresses.iter().map(move |a| (i, a))) {
                    if a.addr != IpAddr::V4(*ip) || a.len >= 32 {
                        continue;
                    }
                    refused.insert(*ip);
                    for (p, span, _) in claims {
                        diags.push(
                            Diagnostic::new(
                                &codes::FLOATING_IP_IS_NODE_ADDRESS,
                                format!(
                                    "floating egress IP {ip} of policy `{}` is a fixed address of node `{}` ({a} on {})",
                                    p.name.value, n.name, iface.name
                                ),
                            )
                            .primary(*span, format!("node `{}` has this address as its own", n.name))
                            .note(format!(
                                "every policy floating {ip} gets no gateway from it: their traffic through it is dropped (no-gateway)"
                            ))
                            .help(format!(
                                "remove {a} from `{}` (egret adds {ip}/32 on whichever candidate owns it), or float another address",
                                n.name
                            )),
                        );
                    }
                }
            }
        }
        refused
    }

    /// Creates one slot per distinct (gateway node, egress spec) used by any
    /// policy, with cluster-unique 24-bit ids from a hash of the pair; the
    /// candidates of a floating egress IP share one id (see [`SlotId`]).
    pub(super) fn assign_slots(&mut self) {
        let mut keys: BTreeMap<(String, EgressSpec), (NodeId, [bool; 2])> = BTreeMap::new();
        for p in &self.policies {
            let fams = [p.has_family(Family::V4), p.has_family(Family::V6)];
            for g in &p.gateways {
                let e = keys.entry((g.node_name.clone(), g.spec.clone())).or_insert((g.node, [false, false]));
                e.1[0] |= fams[0];
                e.1[1] |= fams[1];
            }
        }
        let mut taken: BTreeSet<u32> = BTreeSet::new();
        let mut probe = |seed: String| {
            let mut id = fnv1a_32(seed.as_bytes()) & 0x00ff_ffff;
            while id == 0 || taken.contains(&id) {
                id = (id + 1) & 0x00ff_ffff;
            }
            taken.insert(id);
            id
        };
        // floating IPs first, in IP order: one id each, shared by the candidates
        let mut floating: BTreeMap<Ipv4Addr, (u32, Vec<(String, IpAddr)>)> = BTreeMap::new();
        for ((name, spec), (node, _)) in &keys {
            if let EgressSpec::Floating(ip) = spec
                && let Some(underlay) = self.nodes[node.index()].ip
            {
                floating.entry(*ip).or_insert_with(|| (0, Vec::new())).1.push((name.clone(), underlay));
            }
        }
        for (ip, (id, candidates)) in &mut floating {
            *id = probe(format!("floating\0{ip}"));
            candidates.sort_by_key(|(name, underlay)| (*underlay, name.clone()));
        }
        for ((name, spec), (node, fams)) in keys {
            let (id, floating) = match &spec {
                EgressSpec::Floating(ip) => match floating.get(ip) {
                    Some((id, candidates)) => (*id, Some(FloatingSlot { ip: *ip, candidates: candidates.clone() })),
                    None => (probe(format!("{name}\0{spec}")), None),
                },
                _ => (probe(format!("{name}\0{spec}")), None),
            };
            let interface = match self.egress_interface(&spec, node) {
                Ok(Some(i)) => InterfaceBinding::Known { name: i.name.clone(), index: i.index },
                Ok(None) => InterfaceBinding::LateBound { spec: spec.clone() },
                Err(reason) => InterfaceBinding::Unavailable { reason },
            };
            let slot = EgressSlot {
                id: SlotId(id),
                gateway: node,
                gateway_name: name,
                v4: fams[0].then(|| self.egress_for_spec(&spec, node, Family::V4)),
                v6: fams[1].then(|| self.egress_for_spec(&spec, node, Family::V6)),
                spec,
                interface,
                floating,
            };
            self.slot_index.insert((node, slot.spec.clone()), self.slots.len());
            self.slots.push(slot);
        }
        for pi in 0..self.policies.len() {
            let slots: Vec<usize> = self.policies[pi]
                .gateways
                .iter()
                .map(|g| self.slot_index.get(&(g.node, g.spec.clone())).copied().unwrap_or(usize::MAX))
                .collect();
            for (gi, g) in self.policies[pi].gateways.iter().enumerate() {
                self.gateway_entries[g.node.index()].push((PolicyId(pi as u32), gi));
            }
            self.policies[pi].gateway_slots = slots;
        }
    }
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The first non-link-local address of a family on an interface, in the order the node reports.
fn first_address(iface: &Interface, family: Family) -> Option<IpAddr> {
    iface.addresses.iter().map(|c| c.addr).find(|a| Family::of(a) == family && !is_link_local(a))
}
