//! The Cilium view: what `cilium-dbg bpf egress list` would print on a node
//! for the same policies and cluster, for migration and comparison.
//!
//! Cilium's readings, not egret's (SEMANTICS.md, deliberate differences 1
//! and 2): nodeSelectors are pooled across a policy's items and ORed;
//! excluded CIDRs are entries of their own (gateway `0.0.0.1`, printed
//! "Excluded CIDR"). Cilium programs the same entries on every node: one per
//! (selected endpoint IP anywhere in the cluster, destination or excluded
//! CIDR). The gateway IP is the endpoint's gateway (`gateways[fnv1a_32(uid)
//! mod N]`, without egret's health extension; `0.0.0.0`, printed "Not
//! Found", when none resolves); the egress IP is filled only on that gateway
//! node itself, else `0.0.0.0`. An egress IP egret cannot know offline
//! (late-bound) prints as `late:<spec>`, where the agent would print the
//! address it found on the node.
//!
//! When two policies produce the same (source IP, CIDR) key, Cilium keeps
//! whichever it wrote last (map order, not deterministic); this view keeps
//! the policy with the smallest name.
//!
//! IPv6: the Cilium versions whose `bpf egress list` this mirrors program an
//! IPv4 map only, so rows with IPv6 sources or CIDRs are left out; their
//! number is reported in [`View::omitted_ipv6`].
//!
//! Text output is Go's `text/tabwriter` with `minwidth 5, tabwidth 0,
//! padding 3, padchar ' '` as the command uses it: every column but the last
//! padded to its widest cell plus three spaces.

use crate::resolve::{EgressIp, EndpointId, PolicyId, World, fnv1a_32};
use egret_lang::diag::Diagnostic;
use egret_lang::net::{Cidr, Family};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

/// Cilium's gateway IP for "no gateway found".
pub const GATEWAY_NOT_FOUND: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 0);
/// Cilium's gateway IP marking an excluded-CIDR entry.
pub const EXCLUDED_CIDR: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 1);

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// As `cilium-dbg bpf egress list` prints it.
    Text,
    /// Array of `{source_ip, destination_cidr, egress_ip, gateway_ip}`.
    Json,
}

/// The egress IP column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressCell {
    Addr(Ipv4Addr),
    /// Known only on the node; the text says how the agent finds it.
    LateBound(String),
}

impl std::fmt::Display for EgressCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EgressCell::Addr(a) => write!(f, "{a}"),
            EgressCell::LateBound(s) => write!(f, "late:{s}"),
        }
    }
}

/// One map entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub source_ip: Ipv4Addr,
    pub destination: Cidr,
    pub egress_ip: EgressCell,
    pub gateway_ip: Ipv4Addr,
    /// The policy that produced the entry.
    pub policy: String,
}

/// The entries of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub node: String,
    /// Sorted by source IP, then destination CIDR.
    pub rows: Vec<Row>,
    /// Entries left out because they are IPv6.
    pub omitted_ipv6: usize,
}

fn v4(ip: &IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    }
}

/// Cilium's gateway for an endpoint under a policy: (gateway IP, index in
/// the policy's resolved gateways). No health: `gateways[fnv1a_32(uid) mod N]`.
fn cilium_gateway(world: &World, p: PolicyId, e: EndpointId) -> Option<(Ipv4Addr, usize)> {
    let gws = &world.policy(p).gateways;
    if gws.is_empty() {
        return None;
    }
    let i = fnv1a_32(world.endpoint(e).identity.as_bytes()) as usize % gws.len();
    Some((gws[i].ip, i))
}

/// The view for a node (E0401 for an unknown node).
pub fn view(world: &World, node: &str) -> Result<View, Diagnostic> {
    let me = world.node_by_name(node).ok_or_else(|| crate::planner::unknown_node(world, node))?.id;
    let mut rows: BTreeMap<(Ipv4Addr, Cidr), Row> = BTreeMap::new();
    let mut omitted = 0;
    for pol in world.policies() {
        let dests: Vec<Cidr> = pol.destinations.iter().filter(|c| c.family() == Family::V4).copied().collect();
        let excl: Vec<Cidr> = pol.excluded.iter().filter(|c| c.family() == Family::V4).copied().collect();
        let v6_cidrs = pol.destinations.iter().chain(&pol.excluded).filter(|c| c.family() == Family::V6).count();
        for &e in world.cilium_selection(pol.id) {
            let ep = world.endpoint(e);
            let v6_ips = ep.ips.iter().filter(|ip| ip.is_ipv6()).count();
            omitted += v6_ips * v6_cidrs;
            let gw = cilium_gateway(world, pol.id, e);
            let egress = match gw {
                Some((_, i)) if pol.gateways[i].node == me => {
                    match world.slot_of(me, &pol.gateways[i].spec).and_then(|s| s.v4.clone()) {
                        Some(EgressIp::Known(IpAddr::V4(a))) => EgressCell::Addr(a),
                        Some(EgressIp::LateBound { spec, .. }) => {
                            EgressCell::LateBound(spec.to_string().replace(' ', "="))
                        }
                        _ => EgressCell::Addr(Ipv4Addr::UNSPECIFIED),
                    }
                }
                _ => EgressCell::Addr(Ipv4Addr::UNSPECIFIED),
            };
            let gateway_ip = gw.map_or(GATEWAY_NOT_FOUND, |(ip, _)| ip);
            for src in ep.ips.iter().filter_map(v4) {
                for (cidrs, gip) in [(&dests, gateway_ip), (&excl, EXCLUDED_CIDR)] {
                    for c in cidrs.iter() {
                        rows.entry((src, *c)).or_insert_with(|| Row {
                            source_ip: src,
                            destination: *c,
                            egress_ip: egress.clone(),
                            gateway_ip: gip,
                            policy: pol.name.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(View { node: node.to_string(), rows: rows.into_values().collect(), omitted_ipv6: omitted })
}

/// Cilium's IPv4 egress map size: the same on every node.
pub fn entry_count(world: &World) -> usize {
    let mut keys: HashSet<(Ipv4Addr, Cidr)> = HashSet::new();
    for pol in world.policies() {
        let cidrs: Vec<Cidr> =
            pol.destinations.iter().chain(&pol.excluded).filter(|c| c.family() == Family::V4).copied().collect();
        for &e in world.cilium_selection(pol.id) {
            for src in world.endpoint(e).ips.iter().filter_map(v4) {
                for c in &cidrs {
                    keys.insert((src, *c));
                }
            }
        }
    }
    keys.len()
}

fn gateway_text(ip: Ipv4Addr) -> String {
    match ip {
        GATEWAY_NOT_FOUND => "Not Found".to_string(),
        EXCLUDED_CIDR => "Excluded CIDR".to_string(),
        other => other.to_string(),
    }
}

/// Go `text/tabwriter` (minwidth 5, tabwidth 0, padding 3, ' ', flags 0).
fn tabwrite(lines: &[[String; 4]]) -> String {
    let mut widths = [5usize; 3];
    for l in lines {
        for (i, w) in widths.iter_mut().enumerate() {
            *w = (*w).max(l[i].chars().count() + 3);
        }
    }
    let mut out = String::new();
    for l in lines {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&l[i]);
            out.push_str(&" ".repeat(w - l[i].chars().count()));
        }
        out.push_str(&l[3]);
        out.push('\n');
    }
    out
}

/// Renders a view.
pub fn render_view(v: &View, format: Format) -> String {
    match format {
        Format::Text => {
            if v.rows.is_empty() {
                return "No entries found.\n".to_string();
            }
            let mut lines = vec![[
                "Source IP".to_string(),
                "Destination CIDR".to_string(),
                "Egress IP".to_string(),
                "Gateway IP".to_string(),
            ]];
            for r in &v.rows {
                lines.push([
                    r.source_ip.to_string(),
                    r.destination.to_string(),
                    r.egress_ip.to_string(),
                    gateway_text(r.gateway_ip),
                ]);
            }
            tabwrite(&lines)
        }
        Format::Json => {
            let rows: Vec<serde_json::Value> = v
                .rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "source_ip": r.source_ip.to_string(),
                        "destination_cidr": r.destination.to_string(),
                        "egress_ip": r.egress_ip.to_string(),
                        "gateway_ip": r.gateway_ip.to_string(),
                    })
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_string());
            s.push('\n');
            s
        }
    }
}

/// The view of a node, rendered.
pub fn render(world: &World, node: &str, format: Format) -> Result<String, Diagnostic> {
    Ok(render_view(&view(world, node)?, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_matches_go() {
        let lines = vec![
            ["Source IP".to_string(), "Destination CIDR".into(), "Egress IP".into(), "Gateway IP".into()],
            ["10.244.1.5".to_string(), "0.0.0.0/0".into(), "0.0.0.0".into(), "192.168.1.10".into()],
        ];
        let s = tabwrite(&lines);
        assert_eq!(
            s,
            "Source IP    Destination CIDR   Egress IP   Gateway IP\n10.244.1.5   0.0.0.0/0          0.0.0.0     192.168.1.10\n"
        );
    }
}
