//! The Cilium view: what `cilium-dbg bpf egress list` would print on a node
//! for the same policies and cluster, for migration and comparison.
//!
//! # Which Cilium
//! The view mirrors **Cilium v1.20** by default ([`Release::V1_20`]), the
//! first release whose `egressIP` may be IPv6 (cilium/cilium#44524). IPv6
//! egress gateway arrived in v1.18 (datapath #37713, control plane #38452,
//! the IPv6 rows of `bpf egress list` #38691); for policies without an
//! `egressIP`, v1.18 and v1.19 program the same rows (Cilium's own v1.18
//! dual-stack tests below give the same expectations). `--cilium-version 1.17`
//! ([`Release::V1_17`]) keeps the reading of the IPv4-only releases.
//!
//! Read from Cilium's sources and checked against its tests:
//! - `pkg/egressgateway/manager.go` (`updateEgressRules4`, `updateEgressRules6`:
//!   one entry per selected endpoint IP and destination or excluded CIDR of
//!   the *same family*; excluded CIDRs get gateway `ExcludedCIDRIPv4`,
//!   `0.0.0.1`, in both maps);
//! - `pkg/egressgateway/policy.go` (`regenerateGatewayConfig`,
//!   `deriveFromPolicyGatewayConfig`, `ParseCEGP`: gateway entries sorted
//!   by gateway IP, `gateways[fnv1a_32(uid) mod N]`; the egress IPs derived
//!   only on the gateway node itself; an `egressIP` whose family no
//!   destination CIDR has is refused: "IPv4 egress IP … cannot be used with
//!   only IPv6 destination CIDRs");
//! - `pkg/maps/egressmap/policy.go` (`EgressPolicyVal6`: an IPv6 egress IP
//!   and an **IPv4** gateway IP — the tunnel underlay stays IPv4, #40209);
//! - `cilium-dbg/cmd/bpf_egress_list.go` (the IPv4 map's entries, then the
//!   IPv6 map's, in one table; `-o json` prints the same list with the
//!   fields `SourceIP`, `DestCIDR`, `EgressIP`, `GatewayIP`, the gateway as
//!   printed: `Not Found`, `Excluded CIDR` or the address);
//! - the tests `pkg/egressgateway/manager_privileged_test.go`
//!   (`TestEgressGatewayManager`, `TestMultigatewayPolicy`, dual-stack),
//!   `pkg/egressgateway/testdata/test.txtar` (`interface`),
//!   `testdata/test_egressip.txtar` (`egressIP` of either family with
//!   dual-stack destinations) and `pkg/egressgateway/policy_derive_test.go`
//!   (`TestDeriveFromPolicyGatewayConfigDualStack`: a family the gateway
//!   cannot serve is "not found" on its own, the other keeps its address).
//!   They are transcribed as egret fixtures in `compiler/tests/fixtures/cilium/`.
//!
//! # The rows
//! Cilium's readings, not egret's (SEMANTICS.md, deliberate differences 1
//! and 2): nodeSelectors are pooled across a policy's items and ORed;
//! excluded CIDRs are entries of their own (gateway `0.0.0.1`, printed
//! "Excluded CIDR"); the floating-IP annotation (an egret extension) is
//! ignored, so a floating entry is a fixed `egressIP` on its first node.
//! Cilium programs the same entries on every node: one per (selected
//! endpoint IP anywhere in the cluster, destination or excluded CIDR of the
//! IP's family). A gateway entry resolves to the first node by name that it
//! selects and that has an IPv4 InternalIP; the entries are sorted by that
//! gateway IP and the endpoint's is `gateways[fnv1a_32(uid) mod N]`, without
//! egret's health extension (`0.0.0.0`, printed "Not Found", when none
//! resolves). In both maps the gateway is the gateway node's IPv4 address.
//! The egress IP is filled only on that gateway node itself, and only for a
//! family the policy has destination CIDRs of; elsewhere it is `0.0.0.0`
//! (IPv4 rows) or `::` (IPv6 rows), as it is when the gateway has no address
//! for the family ([`crate::resolve::World::egress_for_spec`], SEMANTICS.md
//! "Egress IP": an `egressIP` for its own family, the first non-link-local
//! address of the other family on its interface; the first of each family
//! of `interface` or of the default-route interface). An egress IP egret
//! cannot know offline (late-bound) prints as `late:<spec>`, where the agent
//! would print the address it found on the node.
//!
//! A policy Cilium refuses (an `egressIP` of a family none of its
//! destination CIDRs has; with v1.17, any IPv6 `egressIP`, which that CRD
//! does not accept) has no entries; it is listed in [`View::refused`].
//! When two policies produce the same (source IP, CIDR) key, Cilium keeps
//! whichever it wrote last (map order, not deterministic); this view keeps
//! the policy with the smallest name. Within each map, Cilium prints in the
//! LPM trie's iteration order; this view sorts by source IP, then CIDR.
//!
//! With [`Release::V1_17`] there is no IPv6 map: rows with IPv6 sources and
//! CIDRs are left out and counted in [`View::omitted_ipv6`].
//!
//! Text output is Go's `text/tabwriter` with `minwidth 5, tabwidth 0,
//! padding 3, padchar ' '` as the command uses it: every column but the last
//! padded to its widest cell plus three spaces. JSON is Go's
//! `json.MarshalIndent(list, "", "  ")`.

use crate::resolve::{EgressIp, EgressSpec, NodeId, PolicyInfo, World, fnv1a_32};
use egret_lang::ast::GatewaySpec;
use egret_lang::diag::Diagnostic;
use egret_lang::net::{Cidr, Family};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Cilium's gateway IP for "no gateway found".
pub const GATEWAY_NOT_FOUND: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 0);
/// Cilium's gateway IP marking an excluded-CIDR entry (in both maps).
pub const EXCLUDED_CIDR: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 1);

/// The Cilium release whose reading the view mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Release {
    /// Cilium ≤ 1.17: one IPv4 map; IPv6 rows are left out; an IPv6
    /// `egressIP` is refused by the CRD.
    V1_17,
    /// Cilium 1.20: an IPv4 and an IPv6 map; `egressIP` of either family.
    #[default]
    V1_20,
}

impl Release {
    pub const ALL: [Release; 2] = [Release::V1_17, Release::V1_20];

    /// `1.17`, `1.20`.
    pub fn as_str(self) -> &'static str {
        match self {
            Release::V1_17 => "1.17",
            Release::V1_20 => "1.20",
        }
    }

    fn has_ipv6_map(self) -> bool {
        self == Release::V1_20
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// As `cilium-dbg bpf egress list` prints it.
    Text,
    /// As `cilium-dbg bpf egress list -o json` prints it: an array of
    /// `{SourceIP, DestCIDR, EgressIP, GatewayIP}`.
    Json,
}

/// An address family's map address: [`Ipv4Addr`] or [`Ipv6Addr`].
pub trait MapAddr: Copy + Ord + fmt::Display {
    const FAMILY: Family;
    /// The "not found" egress IP (`0.0.0.0`, `::`).
    const UNSPECIFIED: Self;
    fn from_ip(ip: IpAddr) -> Option<Self>;
}

impl MapAddr for Ipv4Addr {
    const FAMILY: Family = Family::V4;
    const UNSPECIFIED: Self = Ipv4Addr::UNSPECIFIED;
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }
}

impl MapAddr for Ipv6Addr {
    const FAMILY: Family = Family::V6;
    const UNSPECIFIED: Self = Ipv6Addr::UNSPECIFIED;
    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }
    }
}

/// The egress IP column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressCell<A = Ipv4Addr> {
    Addr(A),
    /// Known only on the node; the text says how the agent finds it.
    LateBound(String),
}

impl<A: fmt::Display> fmt::Display for EgressCell<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EgressCell::Addr(a) => write!(f, "{a}"),
            EgressCell::LateBound(s) => write!(f, "late:{s}"),
        }
    }
}

/// One map entry: of the IPv4 map (`Row`) or the IPv6 map (`Row<Ipv6Addr>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<A = Ipv4Addr> {
    pub source_ip: A,
    pub destination: Cidr,
    pub egress_ip: EgressCell<A>,
    /// The gateway node's IPv4 address, also in the IPv6 map.
    pub gateway_ip: Ipv4Addr,
    /// The policy that produced the entry.
    pub policy: String,
}

/// A policy Cilium refuses (no entries), and why, as its agent logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub policy: String,
    pub reason: String,
}

/// The entries of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub node: String,
    pub release: Release,
    /// The IPv4 map, sorted by source IP, then destination CIDR.
    pub rows: Vec<Row>,
    /// The IPv6 map (empty with [`Release::V1_17`]), sorted likewise.
    pub rows6: Vec<Row<Ipv6Addr>>,
    /// Entries left out because the release has no IPv6 map ([`Release::V1_17`]).
    pub omitted_ipv6: usize,
    /// Policies Cilium refuses, in name order.
    pub refused: Vec<Refusal>,
}

/// Why Cilium refuses a policy, if it does (see the module doc).
pub fn refusal(pol: &PolicyInfo, release: Release) -> Option<String> {
    for g in pol.ast.gateways() {
        let Some(ip) = &g.egress_ip else { continue };
        let family = Family::of(&ip.value);
        match release {
            Release::V1_17 if family == Family::V6 => {
                return Some(format!(
                    "egressIP {} is not an IPv4 address (the CRD of Cilium 1.17 accepts only IPv4)",
                    ip.value
                ));
            }
            Release::V1_20 if !pol.has_family(family) => {
                let (this, other) = match family {
                    Family::V4 => ("IPv4", "IPv6"),
                    Family::V6 => ("IPv6", "IPv4"),
                };
                return Some(format!(
                    "{this} egress IP {} cannot be used with only {other} destination CIDRs",
                    ip.value
                ));
            }
            _ => {}
        }
    }
    None
}

/// A gateway entry as Cilium resolves it.
struct Gateway {
    ip: Ipv4Addr,
    node: NodeId,
    spec: EgressSpec,
}

/// The entry's egress configuration without egret's floating extension.
fn fixed_spec(g: &GatewaySpec) -> EgressSpec {
    match (&g.egress_ip, &g.interface) {
        (Some(ip), _) => EgressSpec::EgressIp(ip.value),
        (None, Some(i)) => EgressSpec::Interface(i.value.clone()),
        (None, None) => EgressSpec::DefaultRoute,
    }
}

/// A policy's gateway entries as Cilium resolves them: each to the first
/// node by name it selects with an IPv4 InternalIP (entries resolving to
/// none left out), sorted by gateway IP, then entry.
fn gateways(world: &World, pol: &PolicyInfo) -> Vec<Gateway> {
    let mut v: Vec<(Ipv4Addr, usize, Gateway)> = pol
        .ast
        .gateways()
        .iter()
        .enumerate()
        .filter_map(|(i, g)| {
            // Cilium's tunnel is IPv4 (cilium#40209): a node without an IPv4
            // InternalIP is no gateway there, where egret tunnels over IPv6
            let (n, ip) = world.nodes().iter().find_map(|n| {
                let ip = n.internal_ips.iter().find_map(|ip| Ipv4Addr::from_ip(*ip))?;
                g.node_selector.matches(&n.labels).then_some((n, ip))
            })?;
            Some((ip, i, Gateway { ip, node: n.id, spec: fixed_spec(g) }))
        })
        .collect();
    v.sort_by_key(|(ip, i, _)| (*ip, *i));
    v.into_iter().map(|(_, _, g)| g).collect()
}

/// The egress IP column of one family for an endpoint whose gateway is `gw`, on node `me`.
fn egress_cell<A: MapAddr>(world: &World, pol: &PolicyInfo, gw: Option<&Gateway>, me: NodeId) -> EgressCell<A> {
    let Some(g) = gw.filter(|g| g.node == me && pol.has_family(A::FAMILY)) else {
        return EgressCell::Addr(A::UNSPECIFIED);
    };
    match world.egress_for_spec(&g.spec, me, A::FAMILY) {
        EgressIp::Known(ip) => EgressCell::Addr(A::from_ip(ip).unwrap_or(A::UNSPECIFIED)),
        EgressIp::LateBound { spec, .. } => EgressCell::LateBound(spec.to_string().replace(' ', "=")),
        EgressIp::Unavailable { .. } => EgressCell::Addr(A::UNSPECIFIED),
    }
}

/// The view for a node in the default release's reading (E0401 for an unknown node).
pub fn view(world: &World, node: &str) -> Result<View, Diagnostic> {
    view_for(world, node, Release::default())
}

/// The view for a node in a release's reading (E0401 for an unknown node).
pub fn view_for(world: &World, node: &str, release: Release) -> Result<View, Diagnostic> {
    let me = world.node_by_name(node).ok_or_else(|| crate::planner::unknown_node(world, node))?.id;
    let mut rows: BTreeMap<(Ipv4Addr, Cidr), Row> = BTreeMap::new();
    let mut rows6: BTreeMap<(Ipv6Addr, Cidr), Row<Ipv6Addr>> = BTreeMap::new();
    let mut omitted = 0;
    let mut refused = Vec::new();
    for pol in world.policies() {
        if let Some(reason) = refusal(pol, release) {
            refused.push(Refusal { policy: pol.name.clone(), reason });
            continue;
        }
        let gws = gateways(world, pol);
        let cidrs: Vec<(Cidr, bool)> =
            pol.destinations.iter().map(|c| (*c, false)).chain(pol.excluded.iter().map(|c| (*c, true))).collect();
        for &e in world.cilium_selection(pol.id) {
            let ep = world.endpoint(e);
            let gw = (!gws.is_empty()).then(|| &gws[fnv1a_32(ep.identity.as_bytes()) as usize % gws.len()]);
            let gateway = gw.map_or(GATEWAY_NOT_FOUND, |g| g.ip);
            let egress4 = egress_cell::<Ipv4Addr>(world, pol, gw, me);
            let egress6 = egress_cell::<Ipv6Addr>(world, pol, gw, me);
            for ip in &ep.ips {
                for &(cidr, excluded) in cidrs.iter().filter(|(c, _)| c.family() == Family::of(ip)) {
                    let gateway_ip = if excluded { EXCLUDED_CIDR } else { gateway };
                    match *ip {
                        IpAddr::V4(src) => {
                            rows.entry((src, cidr)).or_insert_with(|| Row {
                                source_ip: src,
                                destination: cidr,
                                egress_ip: egress4.clone(),
                                gateway_ip,
                                policy: pol.name.clone(),
                            });
                        }
                        IpAddr::V6(_) if !release.has_ipv6_map() => omitted += 1,
                        IpAddr::V6(src) => {
                            rows6.entry((src, cidr)).or_insert_with(|| Row {
                                source_ip: src,
                                destination: cidr,
                                egress_ip: egress6.clone(),
                                gateway_ip,
                                policy: pol.name.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(View {
        node: node.to_string(),
        release,
        rows: rows.into_values().collect(),
        rows6: rows6.into_values().collect(),
        omitted_ipv6: omitted,
        refused,
    })
}

/// Cilium's IPv4 egress map size: the same on every node.
pub fn entry_count(world: &World) -> usize {
    let mut keys: HashSet<(Ipv4Addr, Cidr)> = HashSet::new();
    for pol in world.policies() {
        let cidrs: Vec<Cidr> =
            pol.destinations.iter().chain(&pol.excluded).filter(|c| c.family() == Family::V4).copied().collect();
        for &e in world.cilium_selection(pol.id) {
            for src in world.endpoint(e).ips.iter().filter_map(|ip| Ipv4Addr::from_ip(*ip)) {
                for c in &cidrs {
                    keys.insert((src, *c));
                }
            }
        }
    }
    keys.len()
}

/// The gateway column as `cilium-dbg` prints it (`mapGatewayIP`).
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

/// One entry of `cilium-dbg bpf egress list -o json` (the command's
/// `egressPolicy` struct, whose fields have no JSON tags).
#[derive(serde::Serialize)]
struct JsonEntry {
    #[serde(rename = "SourceIP")]
    source_ip: String,
    #[serde(rename = "DestCIDR")]
    dest_cidr: String,
    #[serde(rename = "EgressIP")]
    egress_ip: String,
    #[serde(rename = "GatewayIP")]
    gateway_ip: String,
}

/// The printed cells of every entry: the IPv4 map's, then the IPv6 map's.
fn cells(v: &View) -> Vec<[String; 4]> {
    fn line<A: fmt::Display>(r: &Row<A>) -> [String; 4] {
        [r.source_ip.to_string(), r.destination.to_string(), r.egress_ip.to_string(), gateway_text(r.gateway_ip)]
    }
    v.rows.iter().map(line).chain(v.rows6.iter().map(line)).collect()
}

/// Renders a view.
pub fn render_view(v: &View, format: Format) -> String {
    let entries = cells(v);
    match format {
        Format::Text => {
            if entries.is_empty() {
                return "No entries found.\n".to_string();
            }
            let mut lines = vec![[
                "Source IP".to_string(),
                "Destination CIDR".to_string(),
                "Egress IP".to_string(),
                "Gateway IP".to_string(),
            ]];
            lines.extend(entries);
            tabwrite(&lines)
        }
        Format::Json => {
            let list: Vec<JsonEntry> = entries
                .into_iter()
                .map(|[source_ip, dest_cidr, egress_ip, gateway_ip]| JsonEntry {
                    source_ip,
                    dest_cidr,
                    egress_ip,
                    gateway_ip,
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".to_string());
            s.push('\n');
            s
        }
    }
}

/// The view of a node in the default release's reading, rendered.
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

    #[test]
    fn json_has_the_command_field_names_in_struct_order() {
        let v = View {
            node: "n".into(),
            release: Release::V1_20,
            rows: Vec::new(),
            rows6: vec![Row {
                source_ip: "fd00::1".parse().unwrap(),
                destination: "2001:db8::22/128".parse().unwrap(),
                egress_ip: EgressCell::Addr(Ipv6Addr::UNSPECIFIED),
                gateway_ip: EXCLUDED_CIDR,
                policy: "p".into(),
            }],
            omitted_ipv6: 0,
            refused: Vec::new(),
        };
        assert_eq!(
            render_view(&v, Format::Json),
            "[\n  {\n    \"SourceIP\": \"fd00::1\",\n    \"DestCIDR\": \"2001:db8::22/128\",\n    \"EgressIP\": \"::\",\n    \"GatewayIP\": \"Excluded CIDR\"\n  }\n]\n"
        );
    }
}
