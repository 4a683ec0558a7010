//! The maps of the `egret_src` classifier: definitions, key and value
//! encodings, and the images (initial content) the loader writes.
//!
//! | map | kind | key | value | layouts |
//! |---|---|---|---|---|
//! | `egret_reasons` | `PERCPU_ARRAY` | `u32` [`Reason`] index | `{u64 packets, u64 bytes}` | both |
//! | `egret_policy_stats` | `PERCPU_ARRAY` | `u32` rule index | `{u64 packets, u64 bytes}` | both |
//! | `egret_gw_progs` | `PROG_ARRAY`, 1 entry | `u32` 0 | gateway program (the loader) | both |
//! | `egret_src_class` | `HASH` | `{u8 addr[16], u32 family}` (network-order address, IPv4 in the first 4 bytes, rest 0; family 4 or 6) | `u32` class | maps |
//! | `egret_dst_v4` | `LPM_TRIE` | `{u32 prefixlen = 32 + len, u32 class (big endian), u8 addr[4]}` | `u32` action index | maps, IPv4 endpoints |
//! | `egret_dst_v6` | `LPM_TRIE` | `{u32 prefixlen = 32 + len, u32 class (big endian), u8 addr[16]}` | `u32` action index | maps, IPv6 endpoints |
//! | `egret_actions` | `ARRAY` | `u32` action index | `{u32 reason, u32 slot, u32 gateway_ipv4 (host order), u32 rule}` | maps |
//!
//! Cluster-internal prefixes are `egret_dst_*` entries of class
//! [`INTERNAL_CLASS`] (looked up first); the class field is always fully
//! matched, so its byte order only makes the images readable. Action records:
//! index [`ACTION_INTERNAL`] (pass-internal), [`ACTION_NO_MATCH`]
//! (pass-no-match, also for `pass` entries), then rule `k` at `2 + k`.
//! Rule indexes are those of [`super::partition::rules`]; [`NO_RULE`] means
//! none. Integers in values are little endian (host order), as the program
//! reads them. Every map is sized exactly (at least one entry): a new
//! generation gets new maps.

use super::Layout;
use super::partition::Rules;
use super::reasons::{Counter, Reason};
use crate::ir::{Action, DropReason};
use crate::plan::Plan;
use egret_bpf::artifact::{CounterLabel, CounterMap, MapImage};
use egret_bpf::maps::MapDefError;
use egret_bpf::{MapDef, MapKind};
use egret_lang::net::{Cidr, Family};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub const REASONS: &str = "egret_reasons";
pub const POLICY_STATS: &str = "egret_policy_stats";
pub const GW_PROGS: &str = "egret_gw_progs";
pub const SRC_CLASS: &str = "egret_src_class";
pub const DST_V4: &str = "egret_dst_v4";
pub const DST_V6: &str = "egret_dst_v6";
pub const ACTIONS: &str = "egret_actions";

/// The class id of cluster-internal entries in `egret_dst_*`.
pub const INTERNAL_CLASS: u32 = u32::MAX;
/// "No rule" in the verdict registers and action records.
pub const NO_RULE: u32 = u32::MAX;
/// Action record of cluster-internal destinations.
pub const ACTION_INTERNAL: u32 = 0;
/// Action record of destinations no policy captures.
pub const ACTION_NO_MATCH: u32 = 1;

/// Size of an action record.
pub const ACTION_SIZE: u32 = 16;

/// The `egret_src_class` key of an address.
pub fn src_key(ip: IpAddr) -> [u8; 20] {
    let mut k = [0u8; 20];
    match ip {
        IpAddr::V4(a) => {
            k[..4].copy_from_slice(&a.octets());
            k[16..].copy_from_slice(&4u32.to_le_bytes());
        }
        IpAddr::V6(a) => {
            k[..16].copy_from_slice(&a.octets());
            k[16..].copy_from_slice(&6u32.to_le_bytes());
        }
    }
    k
}

/// The `egret_dst_*` key of a prefix for a class.
pub fn dst_key(class: u32, prefix: &Cidr) -> Vec<u8> {
    let net = prefix.network();
    let mut k = (32 + u32::from(net.len)).to_le_bytes().to_vec();
    k.extend_from_slice(&class.to_be_bytes());
    match net.addr {
        IpAddr::V4(a) => k.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => k.extend_from_slice(&a.octets()),
    }
    k
}

/// Decodes an `egret_dst_*` key into (class, prefix).
pub fn parse_dst_key(key: &[u8]) -> Option<(u32, Cidr)> {
    let plen = u32::from_le_bytes(key.get(0..4)?.try_into().ok()?);
    let class = u32::from_be_bytes(key.get(4..8)?.try_into().ok()?);
    let len = u8::try_from(plen.checked_sub(32)?).ok()?;
    let addr = match key.len() {
        12 => IpAddr::from(<[u8; 4]>::try_from(&key[8..12]).ok()?),
        24 => IpAddr::from(<[u8; 16]>::try_from(&key[8..24]).ok()?),
        _ => return None,
    };
    (len <= egret_lang::net::Family::of(&addr).bits()).then(|| (class, Cidr::new(addr, len)))
}

/// An action record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionRecord {
    pub reason: Reason,
    pub slot: u32,
    pub gateway: u32,
    pub rule: u32,
}

impl ActionRecord {
    pub fn of(action: Action, rule: Option<u32>) -> ActionRecord {
        let rule = rule.unwrap_or(NO_RULE);
        match action {
            Action::Pass => ActionRecord { reason: Reason::PassNoMatch, slot: 0, gateway: 0, rule: NO_RULE },
            Action::Drop(DropReason::NoGateway) => {
                ActionRecord { reason: Reason::DropNoGateway, slot: 0, gateway: 0, rule }
            }
            Action::Redirect { gateway, slot } => {
                ActionRecord { reason: Reason::Redirect, slot: slot.0, gateway: u32::from(gateway), rule }
            }
            Action::LocalEgress { slot } => {
                ActionRecord { reason: Reason::LocalEgress, slot: slot.0, gateway: 0, rule }
            }
        }
    }

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.reason.index().to_le_bytes());
        b[4..8].copy_from_slice(&self.slot.to_le_bytes());
        b[8..12].copy_from_slice(&self.gateway.to_le_bytes());
        b[12..16].copy_from_slice(&self.rule.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<ActionRecord> {
        let w = |i: usize| b.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes);
        (b.len() == 16).then_some(())?;
        Some(ActionRecord { reason: Reason::from_index(w(0)?)?, slot: w(4)?, gateway: w(8)?, rule: w(12)? })
    }
}

fn has_family(plan: &Plan, f: Family) -> bool {
    plan.endpoints.iter().any(|e| Family::of(&e.ip) == f)
}

fn dst_entries(plan: &Plan, rules: &Rules, f: Family) -> Vec<(Vec<u8>, u32)> {
    let mut v: Vec<(Vec<u8>, u32)> = plan
        .internal
        .iter()
        .filter(|c| c.family() == f)
        .map(|c| (dst_key(INTERNAL_CLASS, c), ACTION_INTERNAL))
        .collect();
    for c in &plan.classes {
        for (i, e) in c.entries.iter().enumerate() {
            if e.prefix.family() != f {
                continue;
            }
            let rule = rules.by_entry.get(c.id.0 as usize).and_then(|r| r.get(i).copied().flatten());
            let action = rule.map_or(ACTION_NO_MATCH, |k| 2 + k);
            v.push((dst_key(c.id.0, &e.prefix), action));
        }
    }
    v
}

/// The maps of the program, in `.maps` order.
pub fn map_defs(plan: &Plan, rules: &Rules, layout: Layout) -> Result<Vec<MapDef>, MapDefError> {
    let n = |x: usize| u32::try_from(x.max(1)).unwrap_or(u32::MAX);
    let mut v = vec![
        MapDef::new(REASONS, MapKind::PercpuArray, 4, Counter::SIZE, n(Reason::ALL.len()))?,
        MapDef::new(POLICY_STATS, MapKind::PercpuArray, 4, Counter::SIZE, n(rules.rules.len()))?,
        MapDef::new(GW_PROGS, MapKind::ProgArray, 4, 4, 1)?,
    ];
    if layout == Layout::Maps {
        v.push(MapDef::new(SRC_CLASS, MapKind::Hash, 20, 4, n(plan.endpoints.len()))?);
        if has_family(plan, Family::V4) {
            v.push(MapDef::new(DST_V4, MapKind::LpmTrie, 12, 4, n(dst_entries(plan, rules, Family::V4).len()))?);
        }
        if has_family(plan, Family::V6) {
            v.push(MapDef::new(DST_V6, MapKind::LpmTrie, 24, 4, n(dst_entries(plan, rules, Family::V6).len()))?);
        }
        v.push(MapDef::new(ACTIONS, MapKind::Array, 4, ACTION_SIZE, n(2 + rules.rules.len()))?);
    }
    Ok(v)
}

/// The images of `defs` (entries sorted by key, so output is deterministic).
pub fn images(plan: &Plan, rules: &Rules, defs: &[MapDef]) -> Vec<MapImage> {
    defs.iter()
        .map(|d| {
            let mut img = MapImage::of(d);
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = match d.name.as_str() {
                SRC_CLASS => {
                    plan.endpoints.iter().map(|e| (src_key(e.ip).to_vec(), e.class.0.to_le_bytes().to_vec())).collect()
                }
                DST_V4 | DST_V6 => {
                    let f = if d.name == DST_V4 { Family::V4 } else { Family::V6 };
                    dst_entries(plan, rules, f).into_iter().map(|(k, a)| (k, a.to_le_bytes().to_vec())).collect()
                }
                ACTIONS => {
                    let mut v = vec![
                        ActionRecord { reason: Reason::PassInternal, slot: 0, gateway: 0, rule: NO_RULE },
                        ActionRecord { reason: Reason::PassNoMatch, slot: 0, gateway: 0, rule: NO_RULE },
                    ];
                    v.extend(rules.rules.iter().map(|r| ActionRecord::of(r.action, Some(r.index))));
                    v.into_iter()
                        .enumerate()
                        .map(|(i, r)| ((i as u32).to_le_bytes().to_vec(), r.to_bytes().to_vec()))
                        .collect()
                }
                _ => Vec::new(),
            };
            entries.sort();
            for (k, v) in entries {
                img.push(&k, &v);
            }
            img
        })
        .collect()
}

/// The text of a rule's counter label.
pub fn rule_label(plan: &Plan, rules: &Rules, k: u32) -> String {
    match rules.rules.get(k as usize) {
        Some(r) => {
            let action = match r.action {
                Action::Redirect { gateway, slot } => match plan.gateways.iter().find(|g| g.ip == gateway) {
                    Some(g) => format!("redirect {} {} slot {slot}", g.node, g.ip),
                    None => r.action.to_string(),
                },
                a => a.to_string(),
            };
            format!("class {} {} -> {action}", r.class.0, r.prefix)
        }
        None => format!("rule {k}"),
    }
}

/// The counter labels of the manifest; `policies[k]`: the policies whose
/// traffic rule `k` counts, when known.
pub fn counter_labels(plan: &Plan, rules: &Rules, policies: &BTreeMap<u32, BTreeSet<String>>) -> Vec<CounterMap> {
    vec![
        CounterMap {
            map: REASONS.into(),
            labels: Reason::ALL
                .iter()
                .map(|r| CounterLabel { index: r.index(), name: r.name().into(), policies: Vec::new() })
                .collect(),
        },
        CounterMap {
            map: POLICY_STATS.into(),
            labels: rules
                .rules
                .iter()
                .map(|r| CounterLabel {
                    index: r.index,
                    name: rule_label(plan, rules, r.index),
                    policies: policies.get(&r.index).map(|s| s.iter().cloned().collect()).unwrap_or_default(),
                })
                .collect(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        let k = dst_key(3, &c);
        assert_eq!(k, [48, 0, 0, 0, 0, 0, 0, 3, 10, 1, 0, 0]);
        assert_eq!(parse_dst_key(&k), Some((3, c)));
        let c6: Cidr = "2001:db8::/32".parse().unwrap();
        assert_eq!(parse_dst_key(&dst_key(INTERNAL_CLASS, &c6)), Some((INTERNAL_CLASS, c6)));
        let s = src_key("10.0.0.1".parse().unwrap());
        assert_eq!(&s[..4], &[10, 0, 0, 1]);
        assert_eq!(&s[16..], &[4, 0, 0, 0]);
        let r = ActionRecord { reason: Reason::Redirect, slot: 0x5d1c2a, gateway: 0xc000_0202, rule: 4 };
        assert_eq!(ActionRecord::from_bytes(&r.to_bytes()), Some(r));
    }
}
