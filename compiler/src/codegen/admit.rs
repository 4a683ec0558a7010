//! Admissions into a running classifier: which new endpoints a generation
//! built from one plan can take without being rebuilt, and the map entries
//! that put them under their decision.
//!
//! The classifier knows its plan's endpoints by a compare-and-branch tree
//! (both layouts); a source the tree does not know is looked up in
//! `egret_admitted_v4`/`_v6` (pod address → class, empty in the image), and
//! a hit enters that class's destination tree (inline) or `egret_dst_*`
//! lookup (maps) exactly as a tree match does ([`super::emit`]). So a plan
//! `wanted` that differs from the generation's plan `built` only by new
//! endpoints of classes `built` already has for their family is decided by
//! `built`'s program once those endpoints are in `egret_admitted_*`
//! ([`admissions`], [`entry`]).
//!
//! Contract: when [`admissions`] returns `Some(extra)`, the program and
//! images generated for `built`, with [`entry`] of every endpoint of
//! `extra` added to the `egret_admitted_*` images, decide every packet as
//! `wanted` does (the equivalence checker accepts them against `wanted`:
//! `compiler/tests/it/codegen_admit.rs`); `None` means a new generation is
//! needed (anything but endpoints changed, an endpoint left or changed class,
//! a class new to its family, more than [`CAPACITY`] admissions).

use super::tables::{ADMITTED_V4, ADMITTED_V6};
use crate::plan::{ClassId, EndpointEntry, Plan};
use egret_bpf::layout::{self, admitted, pod_addr, pod_addr6};
use egret_lang::net::Family;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// How many sources `egret_admitted_v4` (and `_v6`) hold.
pub const CAPACITY: usize = layout::max_entries(ADMITTED_V4) as usize;

/// The endpoints of `wanted` to admit into a generation built from
/// `built` (see the module doc), or `None` when one must be built.
#[must_use]
pub fn admissions(built: &Plan, wanted: &Plan) -> Option<Vec<EndpointEntry>> {
    let same_but_endpoints =
        Plan { endpoints: Vec::new(), ..built.clone() } == Plan { endpoints: Vec::new(), ..wanted.clone() };
    if !same_but_endpoints {
        return None;
    }
    let known: BTreeSet<(Family, ClassId)> = built.endpoints.iter().map(|e| (Family::of(&e.ip), e.class)).collect();
    let mut extra = Vec::new();
    let mut wanted_eps = wanted.endpoints.iter().peekable();
    // both sorted by IP: every endpoint of `built` must be in `wanted`, unchanged
    for e in &built.endpoints {
        loop {
            let w = wanted_eps.next()?;
            if w.ip == e.ip {
                if w.class != e.class {
                    return None;
                }
                break;
            }
            if w.ip > e.ip {
                return None;
            }
            extra.push(w.clone());
        }
    }
    extra.extend(wanted_eps.cloned());
    let fits = |f: Family| extra.iter().filter(|e| Family::of(&e.ip) == f).count() <= CAPACITY;
    let classes_known = extra.iter().all(|e| known.contains(&(Family::of(&e.ip), e.class)));
    (classes_known && fits(Family::V4) && fits(Family::V6)).then_some(extra)
}

/// The `egret_admitted_*` entry of an admitted endpoint: (map, key, value).
#[must_use]
pub fn entry(e: &EndpointEntry) -> (&'static str, Vec<u8>, Vec<u8>) {
    let mut value = admitted::LAYOUT.zeroed();
    admitted::CLASS.put(&mut value, u64::from(e.class.0));
    let (map, key) = key(e.ip);
    (map, key, value)
}

/// The `egret_admitted_*` map and key of a source address.
#[must_use]
pub fn key(ip: IpAddr) -> (&'static str, Vec<u8>) {
    match ip {
        IpAddr::V4(a) => {
            let mut key = pod_addr::LAYOUT.zeroed();
            key.copy_from_slice(&a.octets());
            (ADMITTED_V4, key)
        }
        IpAddr::V6(a) => {
            let mut key = pod_addr6::LAYOUT.zeroed();
            key.copy_from_slice(&a.octets());
            (ADMITTED_V6, key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str, class: u32) -> EndpointEntry {
        EndpointEntry { ip: ip.parse().unwrap(), class: ClassId(class), endpoint: format!("prod/{ip}") }
    }

    fn plan(eps: Vec<EndpointEntry>) -> Plan {
        Plan {
            node: "w1".into(),
            node_ip: None,
            internal: Vec::new(),
            gateways: Vec::new(),
            slots: Vec::new(),
            endpoints: eps,
            classes: Vec::new(),
            gateway_tables: Vec::new(),
        }
    }

    #[test]
    fn only_new_endpoints_of_known_classes_are_admitted() {
        let built = plan(vec![ep("10.0.0.5", 0), ep("10.0.0.9", 1), ep("2001:db8::5", 0)]);
        let wanted = plan(vec![ep("10.0.0.1", 1), ep("10.0.0.5", 0), ep("10.0.0.7", 0), ep("10.0.0.9", 1)]);
        assert_eq!(admissions(&built, &wanted), None, "an IPv6 endpoint left");
        let wanted = plan(vec![
            ep("10.0.0.1", 1),
            ep("10.0.0.5", 0),
            ep("10.0.0.7", 0),
            ep("10.0.0.9", 1),
            ep("2001:db8::1", 0),
            ep("2001:db8::5", 0),
        ]);
        let got: Vec<IpAddr> = admissions(&built, &wanted).expect("admitted").iter().map(|e| e.ip).collect();
        assert_eq!(got, ["10.0.0.1", "10.0.0.7", "2001:db8::1"].map(|s| s.parse::<IpAddr>().unwrap()));
        assert_eq!(admissions(&built, &built), Some(Vec::new()));
        let moved = plan(vec![ep("10.0.0.5", 1), ep("10.0.0.9", 1), ep("2001:db8::5", 0)]);
        assert_eq!(admissions(&built, &moved), None, "an endpoint changed class");
        let new_class = plan(vec![ep("10.0.0.5", 0), ep("10.0.0.9", 1), ep("2001:db8::1", 1), ep("2001:db8::5", 0)]);
        assert_eq!(admissions(&built, &new_class), None, "class 1 has no IPv6 endpoint in the generation");
        let other_node = Plan { node_ip: Some("192.0.2.1".parse().unwrap()), ..built.clone() };
        assert_eq!(admissions(&built, &other_node), None, "not only endpoints changed");
    }

    #[test]
    fn entries_are_keyed_by_address_in_network_order() {
        let (map, key, value) = entry(&ep("10.1.2.3", 7));
        assert_eq!((map, key, value), (ADMITTED_V4, vec![10, 1, 2, 3], vec![7, 0, 0, 0]));
        let (map, key, _) = entry(&ep("2001:db8::1", 2));
        assert_eq!((map, key.len(), key[0], key[15]), (ADMITTED_V6, 16, 0x20, 1));
    }
}
