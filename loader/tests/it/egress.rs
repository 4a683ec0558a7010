//! Egress interfaces follow the plan at run time (privileged):
//! `Loader::sync_egress` records the set before any generation runs, attaches
//! the running generation's `EgressIngress` program to interfaces that join
//! and releases those that leave; `apply` swaps exactly that set (same link
//! ids, new program); names that are no interface are reported.

use egret_testkit::netns as common;

use std::collections::BTreeMap;

use common::*;
use egret_bpf::artifact::{Artifact, AttachPoint};
use egret_bpf::templates;
use egret_loader::{ApplyReport, Loader, LoaderConfig, LoaderError, inspect};

/// `egret_gw_reply` alone at `EgressIngress`; `tag` (in a reserved byte of an
/// `egret_gw_slots` entry) makes artifacts differ.
fn artifact(tag: u8) -> Artifact {
    gw_reply_artifact(|images| {
        let slots = images.iter_mut().find(|m| m.name == templates::map::GW_SLOTS).expect("slots");
        let slot = templates::GatewaySlot {
            slot: 1,
            egress_ip: std::net::Ipv4Addr::new(198, 51, 100, 1),
            egress_ip6: std::net::Ipv6Addr::UNSPECIFIED,
            egress_ifindex: 1,
            floating: false,
        };
        let mut value = slot.value();
        value[8] = tag; // the flags byte: artifacts differ by tag
        slots.push(&slot.key(), &value);
    })
}

/// Egress links now: interface name → (link id, program id).
fn egress_links(loader: &Loader) -> BTreeMap<String, (u32, u32)> {
    let st = loader.status().expect("status");
    st.attachments
        .iter()
        .filter(|a| a.attach == AttachPoint::EgressIngress)
        .map(|a| {
            (a.interface.clone().expect("interface exists"), (a.link_id.expect("link id"), a.prog_id.expect("prog id")))
        })
        .collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn egress_interfaces_follow_sync_egress_and_swaps() {
    if !privileged("egress_interfaces_follow_sync_egress_and_swaps") {
        return;
    }
    let fs = Bpffs::new("egr");
    let ns = Netns::new("egr");
    let outs: Vec<String> = (0..3).map(|_| unique("o")).collect();
    for o in &outs {
        let peer = unique("q");
        ip_in(&ns.name, &["link", "add", o, "type", "veth", "peer", "name", &peer]);
        ip_in(&ns.name, &["link", "set", o, "up"]);
    }
    let entered = ns.enter();
    let (mut loader, _) = Loader::open(LoaderConfig::new(fs.root())).expect("open");

    // before any generation: recorded only
    let r = loader.sync_egress(&names(&[&outs[0]])).expect("sync");
    assert!(r.attached.is_empty() && r.released.is_empty() && r.unresolved.is_empty());
    assert_eq!(loader.config().egress_interfaces, [outs[0].clone()]);
    let ApplyReport::Swapped { attached: 1, .. } = loader.apply(&artifact(1)).expect("apply A") else {
        panic!("A attaches to the recorded interface")
    };
    let prog_a = loader.program_ids()[&AttachPoint::EgressIngress];
    assert_eq!(egress_links(&loader).keys().cloned().collect::<Vec<_>>(), [outs[0].clone()]);

    // joins and leaves take effect at once, with the running program
    let r = loader.sync_egress(&names(&[&outs[1], &outs[2], "egret-nope9"])).expect("sync");
    assert_eq!(r.attached.len(), 2);
    assert_eq!(r.released.len(), 1);
    assert!(matches!(&r.unresolved[..], [(n, LoaderError::MissingInterface { .. })] if n == "egret-nope9"));
    let links = egress_links(&loader);
    assert_eq!(links.keys().cloned().collect::<Vec<_>>(), [outs[1].clone(), outs[2].clone()]);
    assert!(links.values().all(|(_, p)| *p == prog_a));
    // an unresolved name blocks the next swap (A keeps serving) until dropped
    assert!(matches!(loader.apply(&artifact(2)), Err(LoaderError::MissingInterface { .. })));
    assert!(loader.sync_egress(&names(&[&outs[1], &outs[2]])).expect("sync").unresolved.is_empty());

    // a swap replaces the program inside exactly these links
    let ApplyReport::Swapped { replaced: 2, attached: 0, released: 0, .. } = loader.apply(&artifact(2)).expect("B")
    else {
        panic!("B replaces both links")
    };
    let prog_b = loader.program_ids()[&AttachPoint::EgressIngress];
    assert_ne!(prog_a, prog_b);
    let swapped = egress_links(&loader);
    assert_eq!(swapped.keys().collect::<Vec<_>>(), links.keys().collect::<Vec<_>>());
    for (name, (link, prog)) in &swapped {
        assert_eq!((*link, *prog), (links[name].0, prog_b), "{name}: same link, B's program");
    }

    // a restarted loader configured with fewer interfaces adopts both links,
    // and its next swap releases the one outside its set
    let mut config = LoaderConfig::new(fs.root());
    config.egress_interfaces = names(&[&outs[2]]);
    drop(loader);
    let (mut loader, _) = Loader::open(config).expect("reopen");
    assert_eq!(egress_links(&loader).len(), 2, "adoption detaches nothing");
    let ApplyReport::Swapped { replaced: 1, released: 1, .. } = loader.apply(&artifact(3)).expect("C") else {
        panic!("C replaces out2's link and releases out1's")
    };
    assert_eq!(egress_links(&loader).keys().cloned().collect::<Vec<_>>(), [outs[2].clone()]);

    // an empty set releases everything
    let r = loader.sync_egress(&[]).expect("sync none");
    assert_eq!(r.released.len(), 1);
    assert!(egress_links(&loader).is_empty());
    let (g, _) = loader.running().expect("running");
    assert_eq!(inspect::status(&fs.root()).expect("status").running, Some(g), "the generation still runs");

    finish(loader, entered, ns, fs);
}
