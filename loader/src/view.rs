//! Decoded, read-only views of the running generation (what `egret-agent
//! maps` and `egret-loader maps` print), from the pins alone:
//! - [`decisions`]: the live decision table with Cilium's columns (Source
//!   IP, Destination CIDR, Egress IP, Gateway IP). With the `maps` layout it
//!   is decoded from the live `egret_dst_v4` / `egret_dst_v6` (class,
//!   prefix → action record), joined with the sources' classes from the
//!   table the artifact recorded (byte layouts: `egret_bpf::layout`, each
//!   map decoded by its own layout). With the
//!   `inline` layout the decisions are code, so it is the table the artifact
//!   recorded (`gen-N/info`, see [`crate::meta::GenerationInfo`]); an
//!   artifact that recorded none says so.
//!   Egress IPs are known on the node only for slots it serves (from
//!   `egret_gw_slots`, late fields resolved); other slots show their VNI.
//! - [`gateway`]: NAT table use, `egret_gw_stats` by [`Stat`], and the NAT
//!   connections of both families (`egret_rnat_v4`, `egret_rnat_v6`)
//!   decoded with [`NatKey`] / [`ReverseNat`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use egret_bpf::artifact::{Decision, DecisionRow};
use egret_bpf::choices::ChoiceTarget;
use egret_bpf::layout::{self, Counter, NO_RULE, VERDICT_REASON_MASK, VERDICT_SLOT_SHIFT, action_record};
use egret_bpf::templates::{GatewaySlot, GwAddr, NatKey, ReverseNat, Stat, map};
use serde::Serialize;

use crate::error::LoaderError;
use crate::meta::{self, GenerationInfo};
use crate::pins::{Generation, PinLayout};
use crate::scan;
use crate::sys::MapHandle;

/// Where a decision table came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionSource {
    /// Decoded from the classifier's tables (`maps` layout).
    Maps,
    /// Recorded by the artifact (`inline` layout, or any layout that records it).
    Recorded,
    /// Neither: no classifier tables and no recorded table.
    Unavailable,
}

/// The running generation's decision table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionView {
    /// The running generation.
    pub generation: Option<Generation>,
    /// Where the rows come from.
    pub source: DecisionSource,
    /// Cluster-internal prefixes (always pass).
    pub internal: Vec<String>,
    /// The rows, sorted by source then destination.
    pub rows: Vec<DecisionRow>,
    /// IPv4 egress address per slot: as the artifact recorded it, overridden
    /// by `egret_gw_slots` for the slots this node serves (resolved on the node).
    pub egress: BTreeMap<u32, IpAddr>,
    /// The same for IPv6 (the rows of IPv6 sources show these).
    pub egress6: BTreeMap<u32, Ipv6Addr>,
}

fn map_err<'a>(map: &'a str, operation: &'static str) -> impl Fn(std::io::Error) -> LoaderError + 'a {
    move |source| LoaderError::Map { map: map.to_owned(), operation, source }
}

/// A map's entries: key, then one value per CPU (one for other maps), sorted by key.
type Entries = Vec<(Vec<u8>, Vec<Vec<u8>>)>;

/// Every entry of a pinned map, or `None` if it is not pinned.
fn percpu_entries(path: &Path, name: &str) -> Result<Option<Entries>, LoaderError> {
    let h = match MapHandle::open(path) {
        Ok(h) => h,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(map_err(name, "opening its pin")(e)),
    };
    let mut out = Vec::new();
    for k in h.keys().map_err(map_err(name, "iterating"))? {
        if let Some(v) = h.lookup(&k).map_err(map_err(name, "reading"))? {
            out.push((k, v));
        }
    }
    out.sort();
    Ok(Some(out))
}

/// A map's entries with one value each (the first CPU's for per-CPU maps).
type FirstEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// [`percpu_entries`] with the first value of each entry.
fn entries(path: &Path, name: &str) -> Result<Option<FirstEntries>, LoaderError> {
    Ok(percpu_entries(path, name)?.map(|e| e.into_iter().map(|(k, mut v)| (k, v.swap_remove(0))).collect()))
}

/// The generation's informational record, if it has one.
///
/// # Errors
/// A record that exists but cannot be read or decoded.
pub fn info(layout: &PinLayout, g: Generation) -> Result<Option<GenerationInfo>, LoaderError> {
    let path = layout.info(g);
    let Some(chunks) = entries(&path, meta::INFO_MAP_NAME)? else { return Ok(None) };
    let chunks: Vec<Vec<u8>> = chunks.into_iter().map(|(_, v)| v).collect();
    meta::decode_info(&chunks).map(Some).map_err(|source| LoaderError::Meta { path, source })
}

/// Decodes a key of `map` (`egret_dst_v4` or `egret_dst_v6`): (class, prefix text).
fn dst_key(map: &str, k: &[u8]) -> Option<(u32, String)> {
    let (key, addr): (&layout::Struct, IpAddr) = match map {
        map::DST_V4 => {
            (&layout::dst_v4_key::LAYOUT, <[u8; 4]>::try_from(layout::dst_v4_key::ADDR.bytes(k)?).ok()?.into())
        }
        map::DST_V6 => {
            (&layout::dst_v6_key::LAYOUT, <[u8; 16]>::try_from(layout::dst_v6_key::ADDR.bytes(k)?).ok()?.into())
        }
        _ => return None,
    };
    key.fits(k).then_some(())?;
    let len = layout::dst_v4_key::PREFIXLEN.get_u32(k)?.checked_sub(32)?;
    Some((layout::dst_v4_key::CLASS.get_u32(k)?, format!("{addr}/{len}")))
}

/// An action record ([`action_record`]): (reason, slot, gateway node address, rule).
fn record(b: &[u8]) -> Option<(u32, u32, IpAddr, u32)> {
    action_record::LAYOUT.fits(b).then_some(())?;
    let verdict = action_record::VERDICT.get_u32(b)?;
    Some((
        verdict & VERDICT_REASON_MASK,
        verdict >> VERDICT_SLOT_SHIFT,
        action_record::NODE.node(b)?,
        action_record::RULE.get_u32(b)?,
    ))
}

/// A target's or record's decision from its reason's label (`egret_reasons`);
/// `None` for cluster-internal and unlabelled reasons.
fn decision(reason: u32, slot: u32, gateway: IpAddr, reasons: &BTreeMap<u32, String>) -> Option<Decision> {
    Some(match reasons.get(&reason).map(String::as_str)? {
        "redirect" => Decision::Redirect { gateway, slot },
        "local-egress" => Decision::LocalEgress { slot },
        "pass-internal" => return None,
        r if r.starts_with("drop") => Decision::Drop,
        _ => Decision::Pass,
    })
}

/// What a record decides (its decision while every gateway is live, and
/// the failover targets after it), from its reason's label (`egret_reasons`)
/// or, for a failover choice (a reason no counter has), from the choice in
/// `egret_choices`. `None` for cluster-internal records and unknown reasons.
fn action(
    rec: (u32, u32, IpAddr, u32),
    reasons: &BTreeMap<u32, String>,
    choices: &BTreeMap<u32, Vec<ChoiceTarget>>,
) -> Option<(Decision, Vec<Decision>, Option<u32>)> {
    let (reason, slot, gateway, rule) = rec;
    let rule = (rule != NO_RULE).then_some(rule);
    if !reasons.contains_key(&reason) {
        let targets = choices.get(&slot)?;
        let mut decisions = targets.iter().filter_map(|t| {
            decision(t.verdict & VERDICT_REASON_MASK, t.verdict >> VERDICT_SLOT_SHIFT, t.gateway, reasons)
        });
        let first = decisions.next()?;
        return Some((first, decisions.collect(), rule));
    }
    Some((decision(reason, slot, gateway, reasons)?, Vec::new(), rule))
}

/// Cluster-internal prefixes and rows.
type Tables = (Vec<String>, Vec<DecisionRow>);

/// Decodes the `maps` layout's tables; `None` if the generation has none, or
/// if nothing says which sources have which class.
fn decode_tables(
    layout: &PinLayout,
    g: Generation,
    info: Option<&GenerationInfo>,
) -> Result<Option<Tables>, LoaderError> {
    let reasons: BTreeMap<u32, String> = info
        .into_iter()
        .flat_map(|i| &i.counters)
        .filter(|c| c.map == map::REASONS)
        .flat_map(|c| c.labels.iter().map(|l| (l.index, l.name.clone())))
        .collect();
    let mut dst = Vec::new();
    for name in [map::DST_V4, map::DST_V6] {
        dst.extend(entries(&layout.map(g, name), name)?.into_iter().flatten().map(|(k, v)| (name, k, v)));
    }
    if dst.is_empty() {
        return Ok(None);
    }
    // the maps layout finds sources by code: which has which class is recorded
    let sources: Vec<(IpAddr, u32)> = match info.and_then(|i| i.decisions.as_ref()) {
        Some(t) if !t.classes.is_empty() => t.classes.iter().map(|(ip, c)| (*ip, *c)).collect(),
        _ => return Ok(None),
    };
    let choices: BTreeMap<u32, Vec<ChoiceTarget>> = entries(&layout.map(g, map::CHOICES), map::CHOICES)?
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((layout::index::INDEX.get_u32(&k)?, egret_bpf::choices::decode(&v)?)))
        .collect();
    let mut internal = std::collections::BTreeSet::new();
    // per class: (destination, decision, its failover targets, choice index)
    type Rows = Vec<(String, Decision, Vec<Decision>, Option<u32>)>;
    let mut by_class: BTreeMap<u32, Rows> = BTreeMap::new();
    for (name, k, v) in dst {
        let Some((class, prefix)) = dst_key(name, &k) else { continue };
        let rec = record(&v);
        if rec.is_some_and(|r| reasons.get(&r.0).is_some_and(|n| n == "pass-internal")) {
            internal.insert(prefix);
            continue;
        }
        let (decision, failover, rule) =
            rec.and_then(|r| action(r, &reasons, &choices)).unwrap_or((Decision::Pass, Vec::new(), None));
        by_class.entry(class).or_default().push((prefix, decision, failover, rule));
    }
    let mut rows = Vec::new();
    for (source, class) in sources {
        for (destination, decision, failover, rule) in by_class.get(&class).into_iter().flatten() {
            rows.push(DecisionRow {
                source,
                destination: destination.clone(),
                decision: *decision,
                failover: failover.clone(),
                rule: *rule,
            });
        }
    }
    Ok(Some((internal.into_iter().collect(), rows)))
}

/// The running generation's decision table (see the module doc).
///
/// # Errors
/// Scan or map read failures.
pub fn decisions(root: &Path) -> Result<DecisionView, LoaderError> {
    let layout = PinLayout::new(root);
    let found = scan::scan(&layout)?;
    let generation = scan::running_generation(&found);
    let mut view = DecisionView {
        generation,
        source: DecisionSource::Unavailable,
        internal: Vec::new(),
        rows: Vec::new(),
        egress: BTreeMap::new(),
        egress6: BTreeMap::new(),
    };
    let Some(g) = generation else { return Ok(view) };
    let info = info(&layout, g)?;
    let recorded = info.as_ref().and_then(|i| i.decisions.clone());
    if let Some(t) = &recorded {
        view.egress.clone_from(&t.egress);
        view.egress6.clone_from(&t.egress6);
    }
    for (k, v) in entries(&layout.map(g, map::GW_SLOTS), map::GW_SLOTS)?.into_iter().flatten() {
        let Some(s) = GatewaySlot::from_bytes(&k, &v) else { continue };
        if !s.egress_ip.is_unspecified() {
            view.egress.insert(s.slot, s.egress_ip.into());
        }
        if !s.egress_ip6.is_unspecified() {
            view.egress6.insert(s.slot, s.egress_ip6);
        }
    }
    if let Some((internal, rows)) = decode_tables(&layout, g, info.as_ref())? {
        (view.source, view.internal, view.rows) = (DecisionSource::Maps, internal, rows);
    } else if let Some(t) = recorded {
        (view.source, view.internal, view.rows) = (DecisionSource::Recorded, t.internal, t.rows);
    }
    view.rows.sort_by(|a, b| (a.source, &a.destination).cmp(&(b.source, &b.destination)));
    view.internal.sort();
    Ok(view)
}

impl DecisionView {
    /// The four Cilium columns of a row: Source IP, Destination CIDR, Egress IP, Gateway IP.
    #[must_use]
    pub fn columns(&self, r: &DecisionRow) -> [String; 4] {
        let egress = |slot: u32| {
            let known = match r.source {
                IpAddr::V4(_) => self.egress.get(&slot).copied(),
                IpAddr::V6(_) => self.egress6.get(&slot).map(|a| IpAddr::V6(*a)),
            };
            known.map_or_else(|| format!("slot {slot}"), |a| a.to_string())
        };
        let (egress, gateway) = match r.decision {
            Decision::Redirect { gateway, slot } => (egress(slot), gateway.to_string()),
            Decision::LocalEgress { slot } => (egress(slot), "this node".to_owned()),
            Decision::Pass => ("-".to_owned(), "Excluded CIDR".to_owned()),
            Decision::Drop => ("-".to_owned(), "0.0.0.0 (no gateway)".to_owned()),
        };
        [r.source.to_string(), r.destination.clone(), egress, gateway]
    }
}

impl fmt::Display for DecisionView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(g) = self.generation else { return writeln!(f, "no running generation") };
        let source = match self.source {
            DecisionSource::Maps => "decoded from the classifier's maps",
            DecisionSource::Recorded => "as recorded by the artifact (decisions compiled into code)",
            DecisionSource::Unavailable => {
                return writeln!(
                    f,
                    "generation {g}: no decision table (no classifier tables, and the artifact recorded none)"
                );
            }
        };
        writeln!(f, "generation {g}: decision table, {source}")?;
        let header = ["Source IP", "Destination CIDR", "Egress IP", "Gateway IP"].map(String::from);
        let rows: Vec<[String; 4]> = std::iter::once(header).chain(self.rows.iter().map(|r| self.columns(r))).collect();
        let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
        let (w0, w1, w2) = (width(0), width(1), width(2));
        for r in &rows {
            writeln!(f, "{:<w0$}   {:<w1$}   {:<w2$}   {}", r[0], r[1], r[2], r[3])?;
        }
        if !self.internal.is_empty() {
            writeln!(f, "cluster-internal (always pass): {}", self.internal.join(", "))?;
        }
        Ok(())
    }
}

/// What `maps` prints: the decision table and the gateway side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapsReport {
    /// [`decisions`].
    pub decisions: DecisionView,
    /// [`gateway`].
    pub gateway: GatewayView,
}

impl MapsReport {
    /// Reads both views of the running generation under `root`.
    ///
    /// # Errors
    /// See [`decisions`] and [`gateway`].
    pub fn read(root: &Path) -> Result<MapsReport, LoaderError> {
        Ok(MapsReport { decisions: decisions(root)?, gateway: gateway(root)? })
    }

    /// Pretty JSON, newline-terminated.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

impl fmt::Display for MapsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n{}", self.decisions, self.gateway)
    }
}

/// A counter of `egret_gw_stats`, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatCount {
    /// Its label ([`Stat::name`]).
    pub name: &'static str,
    /// True for drop reasons.
    pub drop: bool,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// A gateway NAT connection (an `egret_rnat_v4` or `egret_rnat_v6` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Connection {
    /// IP protocol (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub proto: u8,
    /// The pod and its port (ICMP: identifier).
    pub pod: IpAddr,
    /// Its port.
    pub pod_port: u16,
    /// The pod's node, its underlay address of either family (`0.0.0.0`: this node).
    pub node: IpAddr,
    /// The egress address and NAT port.
    pub egress: IpAddr,
    /// The NAT port.
    pub nat_port: u16,
    /// The remote end.
    pub remote: IpAddr,
    /// Its port.
    pub remote_port: u16,
    /// The slot.
    pub slot: u32,
    /// `RV_F_*` flags.
    pub flags: u8,
    /// `ktime_get_ns` after which the entry is free.
    pub expires_ns: u64,
}

/// The gateway side of the running generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayView {
    /// The running generation.
    pub generation: Option<Generation>,
    /// `egret_nat_v4` (entries, capacity), if present.
    pub nat: Option<(usize, u32)>,
    /// `egret_rnat_v4` (entries, capacity), if present.
    pub rnat: Option<(usize, u32)>,
    /// `egret_nat_v6` (entries, capacity), if present.
    pub nat6: Option<(usize, u32)>,
    /// `egret_rnat_v6` (entries, capacity), if present.
    pub rnat6: Option<(usize, u32)>,
    /// `egret_gw_stats` by [`Stat`], if present.
    pub stats: Vec<StatCount>,
    /// The connections (`egret_rnat_v4`, then `egret_rnat_v6`), each sorted by key.
    pub connections: Vec<Connection>,
}

/// The connections of one family's `egret_rnat_v*` map, appended to `out`.
fn connections<A: GwAddr>(path: &Path, out: &mut Vec<Connection>) -> Result<(), LoaderError> {
    for (k, v) in entries(path, A::RNAT_MAP)?.into_iter().flatten() {
        let (Some(key), Some(r)) = (NatKey::<A>::from_bytes(&k), ReverseNat::<A>::from_bytes(&v)) else { continue };
        out.push(Connection {
            proto: key.proto,
            pod: r.orig_src.into(),
            pod_port: r.orig_sport,
            node: r.node,
            egress: key.src.into(),
            nat_port: key.sport,
            remote: key.dst.into(),
            remote_port: key.dport,
            slot: r.slot,
            flags: r.flags,
            expires_ns: r.expires_ns,
        });
    }
    Ok(())
}

/// The running generation's gateway state (see the module doc).
///
/// # Errors
/// Scan or map read failures.
pub fn gateway(root: &Path) -> Result<GatewayView, LoaderError> {
    let layout = PinLayout::new(root);
    let found = scan::scan(&layout)?;
    let generation = scan::running_generation(&found);
    let mut view = GatewayView {
        generation,
        nat: None,
        rnat: None,
        nat6: None,
        rnat6: None,
        stats: Vec::new(),
        connections: Vec::new(),
    };
    let Some(g) = generation else { return Ok(view) };
    let fill = |name: &str| -> Result<Option<(usize, u32)>, LoaderError> {
        match MapHandle::open(&layout.map(g, name)) {
            Ok(h) => Ok(Some((h.keys().map_err(map_err(name, "iterating"))?.len(), h.info().max_entries))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(map_err(name, "opening its pin")(e)),
        }
    };
    view.nat = fill(map::NAT_V4)?;
    view.rnat = fill(map::RNAT_V4)?;
    view.nat6 = fill(map::NAT_V6)?;
    view.rnat6 = fill(map::RNAT_V6)?;
    if let Some(stats) = percpu_entries(&layout.map(g, map::GW_STATS), map::GW_STATS)? {
        for s in Stat::ALL {
            let values = stats
                .iter()
                .find(|(k, _)| layout::index::INDEX.get_u32(k) == Some(s.index()))
                .map(|(_, v)| v.as_slice());
            let counters = values.unwrap_or_default().iter().filter_map(|v| Counter::from_bytes(v));
            let (packets, bytes) = counters.fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
            view.stats.push(StatCount { name: s.name(), drop: s.is_drop(), packets, bytes });
        }
    }
    connections::<Ipv4Addr>(&layout.map(g, map::RNAT_V4), &mut view.connections)?;
    connections::<Ipv6Addr>(&layout.map(g, map::RNAT_V6), &mut view.connections)?;
    Ok(view)
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmp6".into(),
        p => format!("proto {p}"),
    }
}

impl fmt::Display for GatewayView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(g) = self.generation else { return writeln!(f, "no running generation") };
        let (Some(nat), Some(rnat)) = (self.nat, self.rnat) else {
            return writeln!(f, "generation {g}: no gateway datapath (no NAT tables)");
        };
        writeln!(f, "generation {g}: NAT table use {}/{} mappings, {}/{} connections", nat.0, nat.1, rnat.0, rnat.1)?;
        if let (Some(nat6), Some(rnat6)) = (self.nat6, self.rnat6) {
            writeln!(f, "IPv6 NAT table use {}/{} mappings, {}/{} connections", nat6.0, nat6.1, rnat6.0, rnat6.1)?;
        }
        let drops: Vec<&StatCount> = self.stats.iter().filter(|s| s.drop && s.packets > 0).collect();
        writeln!(f, "drops by reason:{}", if drops.is_empty() { " none" } else { "" })?;
        for s in drops {
            writeln!(f, "  {:<20} {:>10} packets {:>12} bytes", s.name, s.packets, s.bytes)?;
        }
        writeln!(f, "passed:")?;
        for s in self.stats.iter().filter(|s| !s.drop) {
            writeln!(f, "  {:<20} {:>10} packets {:>12} bytes", s.name, s.packets, s.bytes)?;
        }
        writeln!(f, "connections:{}", if self.connections.is_empty() { " none" } else { "" })?;
        let now = crate::sys::monotonic_ns();
        for c in &self.connections {
            let node = if c.node.is_unspecified() { "this node".to_owned() } else { c.node.to_string() };
            let left = if c.expires_ns > now {
                format!("expires in {}s", (c.expires_ns - now) / 1_000_000_000)
            } else {
                "expired".to_owned()
            };
            writeln!(
                f,
                "  {:<4} {} (node {node}) -> {} as {}  slot {}  flags {:#x}  {left}",
                proto_name(c.proto),
                std::net::SocketAddr::new(c.pod, c.pod_port),
                std::net::SocketAddr::new(c.remote, c.remote_port),
                std::net::SocketAddr::new(c.egress, c.nat_port),
                c.slot,
                c.flags
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_keys_and_records_decode() {
        // the compiler's `tables::dst_key(3, 10.1.0.0/16)`
        let k = [48, 0, 0, 0, 0, 0, 0, 3, 10, 1, 0, 0];
        assert_eq!(dst_key(map::DST_V4, &k), Some((3, "10.1.0.0/16".to_owned())));
        assert_eq!(dst_key(map::DST_V6, &k), None, "decoded by the map's own layout");
        let reasons = BTreeMap::from([
            (3, "pass-internal".to_owned()),
            (5, "redirect".to_owned()),
            (7, "drop-no-gateway".to_owned()),
        ]);
        let none = BTreeMap::new();
        let redirect =
            Some((Decision::Redirect { gateway: Ipv4Addr::new(192, 0, 2, 13).into(), slot: 9 }, vec![], None));
        // the record: {reason | slot << 8, rule, gateway node address (IPv4 mapped)}
        let mut r12 = [0u8; 24];
        r12[0..4].copy_from_slice(&(5u32 | (9 << 8)).to_le_bytes());
        r12[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        r12[18..24].copy_from_slice(&[0xff, 0xff, 192, 0, 2, 13]);
        assert_eq!(record(&r12).and_then(|r| action(r, &reasons, &none)), redirect);
        let mut drop = r12;
        drop[0] = 7;
        drop[4..8].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(record(&drop).and_then(|r| action(r, &reasons, &none)).map(|(d, _, _)| d), Some(Decision::Drop));
        drop[0] = 3;
        assert_eq!(record(&drop).and_then(|r| action(r, &reasons, &none)), None, "internal");
        assert_eq!(record(&r12[..20]), None);
        // a failover choice (reason 10, no counter): its targets from `egret_choices`
        let choices = BTreeMap::from([(
            2,
            vec![
                ChoiceTarget { verdict: 5 | (9 << 8), gateway: Ipv4Addr::new(192, 0, 2, 13).into() },
                ChoiceTarget { verdict: 5 | (11 << 8), gateway: Ipv4Addr::new(192, 0, 2, 14).into() },
            ],
        )]);
        r12[0..4].copy_from_slice(&(10u32 | (2 << 8)).to_le_bytes());
        r12[4..8].copy_from_slice(&4u32.to_le_bytes());
        let failover = vec![Decision::Redirect { gateway: Ipv4Addr::new(192, 0, 2, 14).into(), slot: 11 }];
        assert_eq!(
            record(&r12).and_then(|r| action(r, &reasons, &choices)),
            Some((Decision::Redirect { gateway: Ipv4Addr::new(192, 0, 2, 13).into(), slot: 9 }, failover, Some(4)))
        );
        assert_eq!(record(&r12).and_then(|r| action(r, &reasons, &none)), None, "a choice the map lacks");
    }
}
