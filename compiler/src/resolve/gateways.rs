//! Gateways: which nodes a policy's gateway entries resolve to, and which
//! of them serves an endpoint (rendezvous over the healthy ones, SEMANTICS.md
//! "Gateways").

use super::*;

/// FNV-1a, 32 bit.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The failover weight of gateway `gw` for an endpoint identity:
/// `fnv1a_32(identity ‖ 0x00 ‖ octets)`, the octets of the gateway's
/// underlay address in network byte order (4 for IPv4, 16 for IPv6).
pub fn rendezvous_weight(identity: &str, gw: IpAddr) -> u32 {
    let mut bytes = Vec::with_capacity(identity.len() + 17);
    bytes.extend_from_slice(identity.as_bytes());
    bytes.push(0);
    match gw {
        IpAddr::V4(a) => bytes.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => bytes.extend_from_slice(&a.octets()),
    }
    fnv1a_32(&bytes)
}

/// A gateway entry resolved to a node (SEMANTICS.md, "Gateways").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedGateway {
    /// Index of the entry in `Policy::gateways()`.
    pub entry: usize,
    pub node: NodeId,
    pub node_name: String,
    /// The node's underlay address ([`super::NodeInfo::ip`]).
    pub ip: IpAddr,
    pub healthy: bool,
    pub spec: EgressSpec,
}

/// Which of a policy's resolved gateways an endpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// `fnv1a_32(identity) mod N`, when N ≥ 1.
    pub hashed: Option<usize>,
    /// The gateway in effect: `hashed` when healthy, else the healthy one with
    /// the highest rendezvous weight (among the first
    /// [`crate::ir::MAX_FAILOVER`] of the failover order); `None` = no
    /// gateway (drop).
    pub chosen: Option<usize>,
}

impl Assignment {
    pub fn failed_over(&self) -> bool {
        self.hashed.is_some() && self.chosen != self.hashed
    }
}

/// An endpoint's failover order over `gateways` (sorted by IP; indexes into
/// it): the hashed gateway `fnv1a_32(identity) mod N` first, then the others
/// by rendezvous weight, highest first (ties, astronomically rare, to the
/// lower gateway IP, then entry), each node once (its first entry in that
/// order), cut to [`crate::ir::MAX_FAILOVER`] nodes (SEMANTICS.md,
/// "Health"). The gateway in effect is the first live one.
pub fn failover_order(gateways: &[ResolvedGateway], identity: &str) -> Vec<usize> {
    if gateways.is_empty() {
        return Vec::new();
    }
    let hashed = fnv1a_32(identity.as_bytes()) as usize % gateways.len();
    let mut rest: Vec<(u32, usize)> = (0..gateways.len())
        .filter(|i| *i != hashed)
        .map(|i| (rendezvous_weight(identity, gateways[i].ip), i))
        .collect();
    rest.sort_by(|(wa, a), (wb, b)| {
        wb.cmp(wa).then_with(|| (gateways[*a].ip, gateways[*a].entry).cmp(&(gateways[*b].ip, gateways[*b].entry)))
    });
    // liveness is per node: a second entry on a node already in the order
    // could never be taken, so it is left out
    let mut seen = std::collections::HashSet::new();
    std::iter::once(hashed)
        .chain(rest.into_iter().map(|(_, i)| i))
        .filter(|i| seen.insert(gateways[*i].ip))
        .take(crate::ir::MAX_FAILOVER)
        .collect()
}

/// SEMANTICS.md's assignment of an endpoint to one of `gateways` (sorted by
/// IP), with each gateway's health as resolved (`healthy`: its node is Ready).
pub fn assign(gateways: &[ResolvedGateway], identity: &str) -> Assignment {
    assign_with(gateways, identity, |g| g.healthy)
}

/// [`assign`] with liveness given by `live` (the agent's view).
pub fn assign_with(
    gateways: &[ResolvedGateway],
    identity: &str,
    live: impl Fn(&ResolvedGateway) -> bool,
) -> Assignment {
    let order = failover_order(gateways, identity);
    let Some(&hashed) = order.first() else { return Assignment { hashed: None, chosen: None } };
    let chosen = order.into_iter().find(|i| live(&gateways[*i]));
    Assignment { hashed: Some(hashed), chosen }
}

/// What happens to an endpoint's traffic captured by a policy.
#[derive(Debug, Clone, Copy)]
pub enum GatewayOutcome<'w> {
    NoGateway,
    Gateway { gateway: &'w ResolvedGateway, slot: &'w EgressSlot, local: bool },
}

impl World {
    /// A gateway entry's node: the first by name among matching nodes with an IPv4 InternalIP.
    pub fn gateway_node(&self, g: &GatewaySpec) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.ip.is_some() && g.node_selector.matches(&n.labels))
    }

    /// A policy's gateway entries resolved to nodes (entries that resolve to
    /// no node dropped), sorted by gateway IP, then entry index.
    pub fn resolve_gateways(&self, p: &Policy) -> Vec<ResolvedGateway> {
        self.resolve_gateways_cached(p, &mut HashMap::new())
    }

    /// The candidates of a gateway entry with a floating egress IP: every
    /// node it matches that can be a gateway (has an IPv4 InternalIP), by name.
    pub fn floating_candidates(&self, g: &GatewaySpec) -> Vec<&NodeInfo> {
        self.nodes.iter().filter(|n| n.ip.is_some() && g.node_selector.matches(&n.labels)).collect()
    }

    /// Whether a floating egress IP's claims are invalid (E0310, E0311), so
    /// that its gateway entries resolve to no node.
    pub fn is_refused_floating(&self, ip: Ipv4Addr) -> bool {
        self.refused_floating.contains(&ip)
    }

    pub(super) fn resolve_gateways_cached(
        &self,
        p: &Policy,
        cache: &mut HashMap<String, Option<NodeId>>,
    ) -> Vec<ResolvedGateway> {
        let mut out: Vec<ResolvedGateway> = Vec::new();
        for (entry, g) in p.gateways().iter().enumerate() {
            let spec = EgressSpec::of(g);
            let nodes: Vec<&NodeInfo> = match spec {
                // every candidate serves the IP's shared slot
                EgressSpec::Floating(ip) if self.refused_floating.contains(&ip) => Vec::new(),
                EgressSpec::Floating(_) => self.floating_candidates(g),
                _ => {
                    let id = *cache
                        .entry(selector_key(&g.node_selector))
                        .or_insert_with(|| self.gateway_node(g).map(|n| n.id));
                    id.map(|id| &self.nodes[id.index()]).into_iter().collect()
                }
            };
            out.extend(nodes.into_iter().filter_map(|n| {
                Some(ResolvedGateway {
                    entry,
                    node: n.id,
                    node_name: n.name.clone(),
                    ip: n.ip?,
                    healthy: n.ready,
                    spec: spec.clone(),
                })
            }));
        }
        out.sort_by_key(|g| (g.ip, g.entry));
        out
    }

    /// The gateway assignment of an endpoint under a policy of this world.
    pub fn assignment(&self, p: PolicyId, e: EndpointId) -> Assignment {
        assign(&self.policies[p.index()].gateways, &self.endpoints[e.index()].identity)
    }

    /// Where a policy of this world sends an endpoint's captured traffic,
    /// with each gateway's health as resolved (its node's Ready condition).
    pub fn gateway_outcome(&self, p: PolicyId, e: EndpointId) -> GatewayOutcome<'_> {
        self.gateway_outcome_with(p, e, |g| g.healthy)
    }

    /// [`World::gateway_outcome`] with liveness given by `live` (the agent's view).
    pub fn gateway_outcome_with(
        &self,
        p: PolicyId,
        e: EndpointId,
        live: impl Fn(&ResolvedGateway) -> bool,
    ) -> GatewayOutcome<'_> {
        self.failover(p, e)
            .into_iter()
            .find(|o| matches!(o, GatewayOutcome::Gateway { gateway, .. } if live(gateway)))
            .unwrap_or(GatewayOutcome::NoGateway)
    }

    /// An endpoint's gateways under a policy of this world, in failover order
    /// ([`failover_order`]), each as the outcome it gives when it is the first
    /// live one; gateways whose slot is missing are left out.
    pub fn failover(&self, p: PolicyId, e: EndpointId) -> Vec<GatewayOutcome<'_>> {
        let pol = &self.policies[p.index()];
        let ep = &self.endpoints[e.index()];
        failover_order(&pol.gateways, &ep.identity)
            .into_iter()
            .filter_map(|i| {
                let gw = &pol.gateways[i];
                let slot = pol.gateway_slots.get(i).and_then(|s| self.slots.get(*s))?;
                Some(GatewayOutcome::Gateway { gateway: gw, slot, local: ep.node == Some(gw.node) })
            })
            .collect()
    }
}

/// A canonical string of a selector's requirements (spans ignored), for caches.
fn selector_key(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel.match_labels.iter().map(|(k, v)| format!("{}={}", k.value, v.value)).collect();
    parts.extend(sel.match_expressions.iter().map(|r| {
        let vals: Vec<&str> = r.values.iter().map(|v| v.value.as_str()).collect();
        format!("{} {} ({})", r.key.value, r.operator.value.as_str(), vals.join(","))
    }));
    parts.sort();
    parts.join("\0")
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv1a_32(b"uid-a"), 0x80c4a5d3);
        assert_eq!(fnv1a_32(b"uid-b"), 0x81c4a766);
        assert_eq!(fnv1a_32(b"uid-c"), 0x82c4a8f9);
        assert_eq!(fnv1a_32(b"uid-d"), 0x83c4aa8c);
        assert_eq!(fnv1a_32(b"7c22952d-25a0-409d-952c-60895b5c2a90"), 0x4989084b);
        assert_eq!(fnv1a_32(b""), 0x811c9dc5);
    }

    #[test]
    fn rendezvous_weight_encoding() {
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        let mut bytes = b"uid-a".to_vec();
        bytes.extend_from_slice(&[0, 192, 0, 2, 1]);
        assert_eq!(rendezvous_weight("uid-a", ip.into()), fnv1a_32(&bytes), "IPv4: its 4 octets, as before IPv6");
        let ip6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut bytes6 = b"uid-a".to_vec();
        bytes6.push(0);
        bytes6.extend_from_slice(&ip6.octets());
        assert_eq!(rendezvous_weight("uid-a", ip6.into()), fnv1a_32(&bytes6));
    }
}
