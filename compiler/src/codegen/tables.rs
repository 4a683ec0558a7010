//! The maps of the `egret_src` classifier: definitions, key and value
//! encodings, and the images (initial content) the loader writes.
//!
//! | map | kind | key | value | layouts |
//! |---|---|---|---|---|
//! | `egret_reasons` | `PERCPU_ARRAY` | `u32` [`Reason`] index | `{u64 packets, u64 bytes}` | both |
//! | `egret_policy_stats` | `PERCPU_ARRAY` | `u32` rule index | `{u64 packets, u64 bytes}` | both |
//! | `egret_gw_progs` | `PROG_ARRAY`, 1 entry | `u32` 0 | gateway program (the loader) | both |
//! | `egret_dst_v4` | `LPM_TRIE` | `{u32 prefixlen = 32 + len, u32 class (big endian), u8 addr[4]}` | [`ActionRecord`] | maps, IPv4 endpoints |
//! | `egret_dst_v6` | `LPM_TRIE` | `{u32 prefixlen = 32 + len, u32 class (big endian), u8 addr[16]}` | [`ActionRecord`] | maps, IPv6 endpoints |
//! | `egret_choices` | `ARRAY` | `u32` choice index ([`choices`]) | [`choice_value`] ([`egret_bpf::choices`]) | both, when the plan has egress |
//! | `egret_gw_live` | `HASH`, state | `u32` gateway IPv4 (host order) | `u32` flags, bit 0 down ([`egret_bpf::templates::GatewayLive`]) | both, when the plan has egress |
//! | `egret_gw_down` | `ARRAY`, state, 1 entry | `u32` 0 | `u32` gateways marked down ([`egret_bpf::templates::GatewaysDown`]) | both, when the plan has egress |
//! | `egret_admitted_v4` | `HASH`, 1,024 entries, empty | pod IPv4 (network order) | `u32` class | both, IPv4 endpoints |
//! | `egret_admitted_v6` | `HASH`, 1,024 entries, empty | pod IPv6 | `u32` class | both, IPv6 endpoints |
//!
//! An egress outcome names a *choice* (the endpoint's gateways in failover
//! order): its verdict is [`Reason::Choose`] with the choice's index in
//! place of the slot, and `finish` resolves it through `egret_choices` and
//! `egret_gw_live` (the first target whose gateway has no down flag) into a
//! redirect, a local egress or a `no-gateway` drop; while `egret_gw_down`
//! says no gateway is down, the first target is taken without the
//! `egret_gw_live` lookups. The targets' verdicts
//! are those the resolved outcome stores (`reason | slot << 8`, the gateway
//! in host order — this node's own address for local egress).
//!
//! The maps layout finds the source's class with a compare-and-branch tree
//! (as the inline layout does); a source the tree does not know is looked
//! up in `egret_admitted_*` (empty in the image: the agent writes pods it
//! admits into the running generation there, [`super::admit`]). The LPM value is
//! the outcome itself, so it has no action array: one lookup per packet
//! decides (docs/PERFORMANCE.md, "classification").
//!
//! Cluster-internal prefixes (SEMANTICS.md step 1, which overrides every
//! policy) are entries of **every** class that has endpoints of their
//! family (whether or not it has entries of that family), with the pass-internal record; a class entry inside (or equal to)
//! an internal prefix is left out, since step 1 decides all of it. Prefixes
//! nest or are disjoint, so the longest match is then the internal entry
//! wherever one contains the destination, and the class's own longest
//! match elsewhere. The class field is always fully matched, so its byte
//! order only makes the images readable. Rule indexes are those of
//! [`super::partition::rules`]; [`NO_RULE`] means none. Integers in values
//! are little endian (host order), as the program reads them. Every map is
//! sized exactly (at least one entry): a new generation gets new maps.

use super::Layout;
use super::partition::Rules;
use super::reasons::Reason;
use crate::ir::{Action, Choice, DropReason};
use crate::plan::{ClassId, Plan};
use egret_bpf::MapDef;
use egret_bpf::artifact::{CounterLabel, CounterMap, MapImage};
use egret_bpf::choices::ChoiceTarget;
use egret_bpf::layout::{self, VERDICT_REASON_MASK, VERDICT_SLOT_SHIFT, action_record, dst_v4_key, dst_v6_key};
use egret_bpf::maps::MapDefError;
use egret_lang::net::{Cidr, Family};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

/// An [`ActionRecord`] without a gateway.
const NO_GATEWAY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

pub use egret_bpf::layout::NO_RULE;
pub use egret_bpf::layout::map::{
    ADMITTED_V4, ADMITTED_V6, CHOICES, DST_V4, DST_V6, GW_DOWN, GW_LIVE, GW_PROGS, POLICY_STATS, REASONS,
};

/// The distinct choices of a plan's egress actions, sorted: the index of a
/// choice here is its `egret_choices` key.
pub fn choices(plan: &Plan) -> Vec<Choice> {
    let set: BTreeSet<Choice> = plan
        .classes
        .iter()
        .flat_map(|c| c.entries.iter())
        .filter_map(|e| match e.action {
            Action::Egress(c) => Some(c),
            _ => None,
        })
        .collect();
    set.into_iter().collect()
}

/// The `egret_choices` key of a choice in [`choices`]' list.
pub fn choice_index(choices: &[Choice], c: &Choice) -> u32 {
    choices.binary_search(c).map_or(u32::MAX, |i| i as u32)
}

/// The `egret_choices` value of a choice ([`egret_bpf::choices`]): each
/// target's verdict is the outcome it resolves to.
pub fn choice_value(c: &Choice) -> Vec<u8> {
    let targets: Vec<ChoiceTarget> = c
        .targets()
        .iter()
        .map(|t| {
            let reason = if t.local { Reason::LocalEgress } else { Reason::Redirect };
            ChoiceTarget { verdict: reason.index() | (t.slot.0 << 8), gateway: t.gateway }
        })
        .collect();
    egret_bpf::choices::encode(&targets)
}

/// Whether the plan has egress actions (and so the choice maps).
pub fn has_egress(plan: &Plan) -> bool {
    plan.classes.iter().flat_map(|c| c.entries.iter()).any(|e| matches!(e.action, Action::Egress(_)))
}

/// The layout of an object, from its map names: the maps layout is the one
/// with `egret_dst_*` maps ([`map_defs`] defines an empty `egret_dst_v4` for
/// a plan without endpoints, whose program is the same in both layouts).
pub fn layout_of<'a>(maps: impl IntoIterator<Item = &'a str>) -> Layout {
    if maps.into_iter().any(|m| m == DST_V4 || m == DST_V6) { Layout::Maps } else { Layout::Inline }
}

/// The `egret_dst_*` key of a prefix for a class ([`dst_v4_key`], [`dst_v6_key`]).
pub fn dst_key(class: u32, prefix: &Cidr) -> Vec<u8> {
    let net = prefix.network();
    let (mut k, addr) = match net.addr {
        IpAddr::V4(a) => (dst_v4_key::LAYOUT.zeroed(), a.octets().to_vec()),
        IpAddr::V6(a) => (dst_v6_key::LAYOUT.zeroed(), a.octets().to_vec()),
    };
    dst_v4_key::PREFIXLEN.put(&mut k, 32 + u64::from(net.len));
    dst_v4_key::CLASS.put(&mut k, u64::from(class));
    k[dst_v4_key::ADDR.offset..].copy_from_slice(&addr);
    k
}

/// Decodes an `egret_dst_*` key into (class, prefix).
pub fn parse_dst_key(key: &[u8]) -> Option<(u32, Cidr)> {
    let plen = dst_v4_key::PREFIXLEN.get_u32(key)?;
    let class = dst_v4_key::CLASS.get_u32(key)?;
    let len = u8::try_from(plen.checked_sub(32)?).ok()?;
    let addr = if dst_v4_key::LAYOUT.fits(key) {
        IpAddr::from(<[u8; 4]>::try_from(dst_v4_key::ADDR.bytes(key)?).ok()?)
    } else if dst_v6_key::LAYOUT.fits(key) {
        IpAddr::from(<[u8; 16]>::try_from(dst_v6_key::ADDR.bytes(key)?).ok()?)
    } else {
        return None;
    };
    (len <= egret_lang::net::Family::of(&addr).bits()).then(|| (class, Cidr::new(addr, len)))
}

/// An action record: the value of an `egret_dst_*` entry, laid out as the
/// classifier keeps its outcome on the stack, `{u32 verdict = reason | slot
/// << 8, u32 rule, u32 gateway_ipv4 (host order)}`, little endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionRecord {
    pub reason: Reason,
    /// 24 bits (the VNI).
    pub slot: u32,
    /// The gateway's node address (unspecified: none; the maps layout
    /// stores choices, whose targets carry the gateways).
    pub gateway: IpAddr,
    pub rule: u32,
}

impl ActionRecord {
    /// Size of an encoded record.
    pub const SIZE: u32 = action_record::SIZE as u32;

    /// Cluster-internal destinations.
    pub const INTERNAL: ActionRecord =
        ActionRecord { reason: Reason::PassInternal, slot: 0, gateway: NO_GATEWAY, rule: NO_RULE };

    /// The record of an action; an egress action names its index in
    /// `choices` ([`choices`]).
    pub fn of(action: Action, rule: Option<u32>, choices: &[Choice]) -> ActionRecord {
        let rule = rule.unwrap_or(NO_RULE);
        match action {
            Action::Pass => ActionRecord { reason: Reason::PassNoMatch, slot: 0, gateway: NO_GATEWAY, rule: NO_RULE },
            Action::Drop(DropReason::NoGateway) => {
                ActionRecord { reason: Reason::DropNoGateway, slot: 0, gateway: NO_GATEWAY, rule }
            }
            Action::Egress(c) => {
                ActionRecord { reason: Reason::Choose, slot: choice_index(choices, &c), gateway: NO_GATEWAY, rule }
            }
        }
    }

    pub fn to_bytes(self) -> [u8; action_record::SIZE] {
        let mut b = [0u8; action_record::SIZE];
        action_record::VERDICT.put(&mut b, u64::from(self.reason.index() | (self.slot << VERDICT_SLOT_SHIFT)));
        action_record::RULE.put(&mut b, u64::from(self.rule));
        action_record::NODE.put_node(&mut b, self.gateway);
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<ActionRecord> {
        action_record::LAYOUT.fits(b).then_some(())?;
        let verdict = action_record::VERDICT.get_u32(b)?;
        Some(ActionRecord {
            reason: Reason::from_index(verdict & VERDICT_REASON_MASK)?,
            slot: verdict >> VERDICT_SLOT_SHIFT,
            rule: action_record::RULE.get_u32(b)?,
            gateway: action_record::NODE.node(b)?,
        })
    }
}

fn has_family(plan: &Plan, f: Family) -> bool {
    plan.endpoints.iter().any(|e| Family::of(&e.ip) == f)
}

/// The `egret_dst_*` entries of a family (see the module documentation).
fn dst_entries(plan: &Plan, rules: &Rules, f: Family) -> Vec<(Vec<u8>, ActionRecord)> {
    let choices = choices(plan);
    let internal: Vec<&Cidr> = plan.internal.iter().filter(|c| c.family() == f).collect();
    // the classes a source of this family can have
    let classes: BTreeSet<ClassId> =
        plan.endpoints.iter().filter(|e| Family::of(&e.ip) == f).map(|e| e.class).collect();
    let mut v = Vec::new();
    for c in plan.classes.iter().filter(|c| classes.contains(&c.id)) {
        v.extend(internal.iter().map(|p| (dst_key(c.id.0, p), ActionRecord::INTERNAL)));
        for (i, e) in c.entries.iter().enumerate() {
            if e.prefix.family() != f || internal.iter().any(|p| p.contains(&e.prefix)) {
                continue;
            }
            let rule = rules.by_entry.get(c.id.0 as usize).and_then(|r| r.get(i).copied().flatten());
            let record = match rule.and_then(|k| rules.rules.get(k as usize)) {
                Some(r) => ActionRecord::of(r.action, Some(r.index), &choices),
                None => ActionRecord::of(Action::Pass, None, &choices),
            };
            v.push((dst_key(c.id.0, &e.prefix), record));
        }
    }
    v
}

/// The maps of the program, in `.maps` order.
pub fn map_defs(plan: &Plan, rules: &Rules, layout: Layout) -> Result<Vec<MapDef>, MapDefError> {
    let n = |x: usize| u32::try_from(x.max(1)).unwrap_or(u32::MAX);
    let def = |name: &str, entries: u32| -> Result<MapDef, MapDefError> {
        let l = layout::find(name).ok_or_else(|| MapDefError::InvalidName { name: name.to_owned() })?;
        let d = l.def_with(entries);
        d.validate()?;
        Ok(d)
    };
    let fixed = |name: &str| def(name, layout::max_entries(name));
    let mut v =
        vec![def(REASONS, n(Reason::COUNTED.len()))?, def(POLICY_STATS, n(rules.rules.len()))?, fixed(GW_PROGS)?];
    if has_egress(plan) {
        v.push(def(CHOICES, n(choices(plan).len()))?);
        v.push(fixed(GW_LIVE)?);
        v.push(fixed(GW_DOWN)?);
    }
    for (f, name) in [(Family::V4, ADMITTED_V4), (Family::V6, ADMITTED_V6)] {
        if has_family(plan, f) {
            v.push(fixed(name)?);
        }
    }
    if layout == Layout::Maps {
        // without endpoints the program never looks up: an empty `egret_dst_v4`
        // still marks the object as the maps layout ([`layout_of`])
        let none = plan.endpoints.is_empty();
        for (f, name) in [(Family::V4, DST_V4), (Family::V6, DST_V6)] {
            if has_family(plan, f) || (none && f == Family::V4) {
                v.push(def(name, n(dst_entries(plan, rules, f).len()))?);
            }
        }
    }
    Ok(v)
}

/// The images of `defs` (entries sorted by key, so output is deterministic).
pub fn images(plan: &Plan, rules: &Rules, defs: &[MapDef]) -> Vec<MapImage> {
    defs.iter()
        .map(|d| {
            let mut img = MapImage::of(d);
            let mut entries: Vec<(Vec<u8>, Vec<u8>)> = match d.name.as_str() {
                DST_V4 | DST_V6 => {
                    let f = if d.name == DST_V4 { Family::V4 } else { Family::V6 };
                    dst_entries(plan, rules, f).into_iter().map(|(k, r)| (k, r.to_bytes().to_vec())).collect()
                }
                CHOICES => choices(plan)
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ((i as u32).to_le_bytes().to_vec(), choice_value(c)))
                    .collect(),
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
            format!("class {} {} -> {}", r.class.0, r.prefix, crate::ir::text::action_text(&plan.gateways, &r.action))
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
            labels: Reason::COUNTED
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
        assert_eq!(parse_dst_key(&dst_key(7, &c6)), Some((7, c6)));
        let r =
            ActionRecord { reason: Reason::Redirect, slot: 0x5d1c2a, gateway: "192.0.2.2".parse().unwrap(), rule: 4 };
        assert_eq!(r.to_bytes()[8..24], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 2], "IPv4 mapped");
        let r6 = ActionRecord { gateway: "2001:db8::2".parse().unwrap(), ..r };
        assert_eq!(ActionRecord::from_bytes(&r6.to_bytes()), Some(r6));
        assert_eq!(r.to_bytes()[..4], [5, 0x2a, 0x1c, 0x5d], "verdict = reason | slot << 8");
        assert_eq!(ActionRecord::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(ActionRecord::from_bytes(&[0; 23]), None);
    }
}
