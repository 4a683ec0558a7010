//! The IR verifier.
//!
//! Checks the invariants listed in the [`super`] module doc, numbered the
//! same way, and collects *every* violation rather than stopping at the
//! first:
//! 1. canonical prefixes;
//! 2. internal sorted and disjoint;
//! 3. gateways sorted, unique, not this node;
//! 4. slots sorted, unique, served by this node;
//! 5. actions reference declared gateways/slots, no redirect to self;
//! 6. classes non-empty, endpoints sorted, keys and IPs unique, classes in
//!    canonical order;
//! 7. policies sorted and unique, prefixes of the class's families;
//! 8. (from `subtracted`) no excludes, captures disjoint;
//! 9. (in `classed`) classes distinct;
//! 10. (from `decided`) no policies, tables sorted and unique, disjoint and
//!     pass-free in `decided`/`merged`;
//! 11. served slots declared, sources sorted and unique.
//!
//! Tests run it after every pass.

use super::prefix::prefix_order;
use super::{Action, Module, Stage};
use egret_lang::net::{Cidr, Family};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("{place}: prefix {prefix} has host bits set")]
    NonCanonical { place: String, prefix: Cidr },
    #[error("{place}: `{item}` is out of order")]
    Unsorted { place: String, item: String },
    #[error("{place}: {a} overlaps {b}")]
    Overlap { place: String, a: Cidr, b: Cidr },
    #[error("{place}: duplicate {what} `{item}`")]
    Duplicate { place: String, what: &'static str, item: String },
    #[error("{place}: `{action}` references an undeclared {what}")]
    Dangling { place: String, action: String, what: &'static str },
    #[error("{place}: redirect to this node's own IP {ip}")]
    RedirectToSelf { place: String, ip: std::net::IpAddr },
    #[error("gateway {node} ({ip}) is this node")]
    SelfGateway { node: String, ip: std::net::IpAddr },
    #[error("slot {slot} belongs to gateway `{gateway}`, not this node")]
    ForeignSlot { slot: String, gateway: String },
    #[error("{place}: class has no endpoints")]
    EmptyClass { place: String },
    #[error("{place}: prefix {prefix} is of a family no endpoint of the class has")]
    FamilyMismatch { place: String, prefix: Cidr },
    #[error("classes c{first} and c{second} have identical rules")]
    DuplicateClass { first: usize, second: usize },
    #[error("{place}: not allowed in stage {stage}: {detail}")]
    Stage { place: String, stage: &'static str, detail: String },
}

/// Verifies a module; `Err` holds every violation found.
pub fn verify(m: &Module) -> Result<(), Vec<Violation>> {
    let mut v = Vec::new();
    let stage = m.stage.as_str();

    let canon = |place: &dyn Fn() -> String, c: &Cidr, v: &mut Vec<Violation>| {
        if c.has_host_bits() {
            v.push(Violation::NonCanonical { place: place(), prefix: *c });
        }
    };
    let sorted_disjoint = |place: &str, list: &[Cidr], disjoint: bool, v: &mut Vec<Violation>| {
        for w in list.windows(2) {
            match prefix_order(&w[0], &w[1]) {
                Ordering::Less => {}
                Ordering::Equal => {
                    v.push(Violation::Duplicate { place: place.to_string(), what: "prefix", item: w[1].to_string() })
                }
                Ordering::Greater => v.push(Violation::Unsorted { place: place.to_string(), item: w[1].to_string() }),
            }
            if disjoint && w[0].overlaps(&w[1]) && w[0] != w[1] {
                v.push(Violation::Overlap { place: place.to_string(), a: w[0], b: w[1] });
            }
        }
    };

    // 1, 2
    for c in &m.internal {
        canon(&|| "internal".into(), c, &mut v);
    }
    sorted_disjoint("internal", &m.internal, true, &mut v);

    // 3
    for w in m.gateways.windows(2) {
        match w[0].ip.cmp(&w[1].ip) {
            Ordering::Less => {}
            Ordering::Equal => {
                v.push(Violation::Duplicate { place: "gateways".into(), what: "gateway", item: w[1].ip.to_string() })
            }
            Ordering::Greater => v.push(Violation::Unsorted { place: "gateways".into(), item: w[1].ip.to_string() }),
        }
    }
    let mut gw_names = BTreeSet::new();
    for g in &m.gateways {
        if !gw_names.insert(&g.node) {
            v.push(Violation::Duplicate { place: "gateways".into(), what: "gateway node", item: g.node.clone() });
        }
        if Some(g.ip) == m.node_ip {
            v.push(Violation::SelfGateway { node: g.node.clone(), ip: g.ip });
        }
    }

    // 4
    for w in m.slots.windows(2) {
        match w[0].id.cmp(&w[1].id) {
            Ordering::Less => {}
            Ordering::Equal => {
                v.push(Violation::Duplicate { place: "slots".into(), what: "slot", item: w[1].id.to_string() })
            }
            Ordering::Greater => v.push(Violation::Unsorted { place: "slots".into(), item: w[1].id.to_string() }),
        }
    }
    for s in &m.slots {
        if s.gateway != m.node {
            v.push(Violation::ForeignSlot { slot: s.id.to_string(), gateway: s.gateway.clone() });
        }
    }

    // 5
    let check_action = |place: &dyn Fn() -> String, a: &Action, v: &mut Vec<Violation>| {
        let Action::Egress(choice) = a else { return };
        for t in choice.targets() {
            if t.local {
                if Some(t.gateway) != m.node_ip || !m.slots.iter().any(|s| s.id == t.slot) {
                    v.push(Violation::Dangling { place: place(), action: a.to_string(), what: "slot" });
                }
                continue;
            }
            if Some(t.gateway) == m.node_ip {
                v.push(Violation::RedirectToSelf { place: place(), ip: t.gateway });
            }
            if !m.gateways.iter().any(|g| g.ip == t.gateway) {
                v.push(Violation::Dangling { place: place(), action: a.to_string(), what: "gateway" });
            }
        }
    };

    // 6, 7, 8, 10
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
    for (i, c) in m.classes.iter().enumerate() {
        let place = format!("class c{i}");
        if c.endpoints.is_empty() {
            v.push(Violation::EmptyClass { place: place.clone() });
        }
        for w in c.endpoints.windows(2) {
            if w[0] > w[1] {
                v.push(Violation::Unsorted { place: place.clone(), item: w[1].key.clone() });
            }
        }
        let mut fams: BTreeSet<Family> = BTreeSet::new();
        for e in &c.endpoints {
            if !keys.insert(&e.key) {
                v.push(Violation::Duplicate { place: place.clone(), what: "endpoint", item: e.key.clone() });
            }
            for ip in &e.ips {
                fams.insert(Family::of(ip));
                if !ips.insert(*ip) {
                    v.push(Violation::Duplicate { place: place.clone(), what: "endpoint IP", item: ip.to_string() });
                }
            }
        }
        if i > 0 {
            let prev = m.classes[i - 1].endpoints.first().map(|e| &e.key);
            if prev > c.endpoints.first().map(|e| &e.key) {
                v.push(Violation::Unsorted { place: "classes".into(), item: format!("c{i}") });
            }
        }
        for w in c.policies.windows(2) {
            match w[0].name.cmp(&w[1].name) {
                Ordering::Less => {}
                Ordering::Equal => {
                    v.push(Violation::Duplicate { place: place.clone(), what: "policy", item: w[1].name.clone() })
                }
                Ordering::Greater => v.push(Violation::Unsorted { place: place.clone(), item: w[1].name.clone() }),
            }
        }
        for p in &c.policies {
            let pplace = format!("{place} policy {}", p.name);
            check_action(&|| pplace.clone(), &p.action, &mut v);
            for pre in p.captures.iter().map(|c| &c.prefix).chain(&p.excludes) {
                canon(&|| pplace.clone(), pre, &mut v);
                if !fams.contains(&pre.family()) {
                    v.push(Violation::FamilyMismatch { place: pplace.clone(), prefix: *pre });
                }
            }
            if m.stage >= Stage::Subtracted {
                if let Some(x) = p.excludes.first() {
                    v.push(Violation::Stage { place: pplace.clone(), stage, detail: format!("exclude {x}") });
                }
                let caps: Vec<Cidr> = p.captures.iter().map(|c| c.prefix).collect();
                sorted_disjoint(&pplace, &caps, true, &mut v);
            }
        }
        if m.stage >= Stage::Decided {
            if let Some(p) = c.policies.first() {
                v.push(Violation::Stage { place: place.clone(), stage, detail: format!("policy {}", p.name) });
            }
        } else if !c.table.is_empty() {
            v.push(Violation::Stage { place: place.clone(), stage, detail: "a table before `decided`".into() });
        }
        let strict = matches!(m.stage, Stage::Decided | Stage::Merged);
        let prefixes: Vec<Cidr> = c.table.iter().map(|e| e.prefix).collect();
        sorted_disjoint(&format!("{place} table"), &prefixes, strict, &mut v);
        for e in &c.table {
            let tplace = || format!("{place} table {}", e.prefix);
            canon(&tplace, &e.prefix, &mut v);
            if !fams.contains(&e.prefix.family()) {
                v.push(Violation::FamilyMismatch { place: tplace(), prefix: e.prefix });
            }
            check_action(&tplace, &e.action, &mut v);
            if strict && e.action == Action::Pass {
                v.push(Violation::Stage { place: tplace(), stage, detail: "a pass entry".into() });
            }
        }
    }

    // 9
    if m.stage == Stage::Classed {
        for i in 0..m.classes.len() {
            for j in i + 1..m.classes.len() {
                let (a, b) = (&m.classes[i], &m.classes[j]);
                if a.policies == b.policies {
                    v.push(Violation::DuplicateClass { first: i, second: j });
                }
            }
        }
    }

    // 11
    for w in m.served.windows(2) {
        if w[0].slot >= w[1].slot {
            v.push(Violation::Unsorted { place: "serve".into(), item: w[1].slot.to_string() });
        }
    }
    for s in &m.served {
        let place = format!("serve slot {}", s.slot);
        if !m.slots.iter().any(|d| d.id == s.slot) {
            v.push(Violation::Dangling { place: place.clone(), action: "serve".into(), what: "slot" });
        }
        for w in s.sources.windows(2) {
            match w[0].ip.cmp(&w[1].ip) {
                Ordering::Less => {}
                Ordering::Equal => {
                    v.push(Violation::Duplicate { place: place.clone(), what: "source", item: w[1].ip.to_string() })
                }
                Ordering::Greater => v.push(Violation::Unsorted { place: place.clone(), item: w[1].ip.to_string() }),
            }
        }
    }

    if v.is_empty() { Ok(()) } else { Err(v) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Class, EndpointRef, Entry, GatewayDecl};
    use crate::resolve::SlotId;
    use std::net::Ipv4Addr;

    #[test]
    fn collects_every_violation() {
        let me = Ipv4Addr::new(192, 0, 2, 1).into();
        let m = Module {
            node: "n".into(),
            node_ip: Some(me),
            stage: Stage::Decided,
            internal: vec!["10.0.0.1/8".parse().unwrap(), "10.0.0.0/16".parse().unwrap()],
            gateways: vec![GatewayDecl { node: "n".into(), ip: me }],
            slots: vec![],
            classes: vec![Class {
                endpoints: vec![],
                policies: vec![],
                table: vec![
                    Entry { prefix: "8.0.0.0/8".parse().unwrap(), action: Action::local_egress(me, SlotId(7)) },
                    Entry { prefix: "8.0.0.0/9".parse().unwrap(), action: Action::Pass },
                ],
            }],
            served: vec![],
        };
        let errs = verify(&m).unwrap_err();
        let has = |f: &dyn Fn(&Violation) -> bool| errs.iter().any(f);
        assert!(has(&|v| matches!(v, Violation::NonCanonical { .. })));
        assert!(has(&|v| matches!(v, Violation::Overlap { .. })));
        assert!(has(&|v| matches!(v, Violation::SelfGateway { .. })));
        assert!(has(&|v| matches!(v, Violation::EmptyClass { .. })));
        assert!(has(&|v| matches!(v, Violation::Dangling { what: "slot", .. })));
        assert!(has(&|v| matches!(v, Violation::FamilyMismatch { .. })));
        assert!(has(&|v| matches!(v, Violation::Stage { .. })));
        assert!(errs.len() >= 7, "{errs:?}");
        let _ = EndpointRef { key: String::new(), ips: vec![] };
    }
}
