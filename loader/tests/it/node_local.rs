//! Node-local map values (privileged): late fields of map images are
//! resolved on the node (a slot's egress IPv4 and IPv6 from the
//! configuration, an interface's ifindex), and `egret_local_eps_v4` /
//! `_v6` follow the pods attached by IP, each address in the map of its
//! family (a dual-stack pod: one entry in each, its veth found by either
//! address's route) — written into the running generation on attach,
//! deleted on release, rewritten into a new generation before it serves,
//! restored by `sync_pods`.

use egret_testkit::netns as common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::*;
use egret_bpf::artifact::{Artifact, FieldEncoding, HoleSource, LateField};
use egret_bpf::templates::{self, GatewaySlot, LocalEndpoint};
use egret_loader::{Loader, LoaderConfig, PodTarget, inspect};

const SLOT: u32 = 7;
const EGRESS_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const EGRESS_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
/// The pod's IPv6 (routed to its veth like its IPv4).
const POD_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x244, 0, 0, 0, 0, 0x10);

/// `egret_gw_reply` alone, with one late-bound `egret_gw_slots` entry; `tag`
/// makes artifacts differ.
fn artifact(tag: u8) -> Artifact {
    gw_reply_artifact(|images| {
        let slots = images.iter_mut().find(|m| m.name == templates::map::GW_SLOTS).expect("slots");
        let entry = GatewaySlot {
            slot: SLOT,
            egress_ip: Ipv4Addr::UNSPECIFIED,
            egress_ip6: Ipv6Addr::UNSPECIFIED,
            egress_ifindex: 0,
            floating: false,
        };
        let mut value = entry.value();
        value[8] = tag;
        let at = |f: egret_bpf::layout::Field| f.offset as u32;
        use egret_bpf::layout::gw_slot;
        slots.push_late(
            &entry.key(),
            &value,
            vec![
                LateField {
                    offset: at(gw_slot::EGRESS_IP),
                    source: HoleSource::SlotIpv4 { slot: SLOT },
                    encoding: FieldEncoding::Be32,
                },
                LateField {
                    offset: at(gw_slot::IFINDEX),
                    source: HoleSource::Ifindex { link: "lo".into() },
                    encoding: FieldEncoding::Le32,
                },
                LateField {
                    offset: at(gw_slot::EGRESS_IP6),
                    source: HoleSource::SlotIpv6 { slot: SLOT },
                    encoding: FieldEncoding::Ipv6,
                },
            ],
        );
    })
}

/// The running generation's entries of `map`: key hex → value hex.
fn entries(root: &std::path::Path, map: &str) -> BTreeMap<String, String> {
    let (_, dumps) = inspect::maps(root).expect("maps");
    let d = dumps.into_iter().find(|d| d.name == map).expect("map dumped");
    d.entries.into_iter().map(|e| (e.key, e.values[0].clone())).collect()
}

#[test]
fn late_fields_and_local_endpoints_are_filled_on_the_node() {
    if !privileged("late_fields_and_local_endpoints_are_filled_on_the_node") {
        return;
    }
    let fs = Bpffs::new("nloc");
    let topo = Topology::new("nloc", 1);
    let entered = topo.node.enter();
    // the pod's IPv6 is routed to its veth as its IPv4 is
    ip_in(&topo.node.name, &["-6", "route", "add", &format!("{POD_IP6}/128"), "dev", &topo.veths[0]]);
    let mut config = LoaderConfig::new(fs.root());
    config.slot_ipv4.insert(SLOT, EGRESS_IP);
    config.slot_ipv6.insert(SLOT, EGRESS_IP6);
    let (mut loader, _) = Loader::open(config).expect("open");
    loader.apply(&artifact(1)).expect("apply");

    let hex = egret_bpf::artifact::hex;
    let want_slot =
        GatewaySlot { slot: SLOT, egress_ip: EGRESS_IP, egress_ip6: EGRESS_IP6, egress_ifindex: 1, floating: false };
    let mut want_value = want_slot.value();
    want_value[8] = 1;
    assert_eq!(
        entries(&fs.root(), templates::map::GW_SLOTS),
        BTreeMap::from([(hex(&want_slot.key()), hex(&want_value))]),
        "egress addresses (network order, IPv4 and IPv6) and lo's ifindex filled in"
    );

    // a pod attached by IP gets its veth into egret_local_eps_v4 (no pod
    // program: pending); by its IPv6, the same veth into egret_local_eps_v6
    let pod = IpAddr::from(pod_ip(0));
    let a = loader.attach_pod(&PodTarget::Ip(pod)).expect("attach");
    let b = loader.attach_pod(&PodTarget::Ip(POD_IP6.into())).expect("attach by IPv6");
    assert_eq!((b.ifindex, &b.interface), (a.ifindex, &topo.veths[0]), "the IPv6 route leads to the same veth");
    let ep = LocalEndpoint { pod, ifindex: a.ifindex };
    let ep6 = LocalEndpoint { pod: POD_IP6.into(), ifindex: a.ifindex };
    assert_eq!((ep.map(), ep6.map()), (templates::map::LOCAL_EPS, templates::map::LOCAL_EPS6));
    let want_eps = BTreeMap::from([(hex(&ep.key()), hex(&ep.value()))]);
    let want_eps6 = BTreeMap::from([(hex(&ep6.key()), hex(&ep6.value()))]);
    let both = || (entries(&fs.root(), templates::map::LOCAL_EPS), entries(&fs.root(), templates::map::LOCAL_EPS6));
    assert_eq!(both(), (want_eps.clone(), want_eps6.clone()));
    assert_eq!(loader.local_endpoints(), &BTreeMap::from([(pod, a.ifindex), (POD_IP6.into(), a.ifindex)]));

    // a new generation has them before it serves
    loader.apply(&artifact(2)).expect("swap");
    assert_eq!(both(), (want_eps.clone(), want_eps6.clone()));

    // released: both gone; synced by IP: back, each family alone too
    assert!(!loader.release_pod(a.ifindex).expect("release"), "no link existed");
    assert_eq!(both(), (BTreeMap::new(), BTreeMap::new()));
    let report = loader.sync_pods(&[PodTarget::Ip(pod), PodTarget::Ip(POD_IP6.into())]).expect("sync");
    assert!(report.unresolved.is_empty());
    assert_eq!(both(), (want_eps.clone(), want_eps6.clone()));
    assert!(loader.sync_pods(&[PodTarget::Ip(POD_IP6.into())]).expect("sync to IPv6").unresolved.is_empty());
    assert_eq!(both(), (BTreeMap::new(), want_eps6), "the IPv4 address is no longer targeted");
    assert!(loader.sync_pods(&[]).expect("sync to none").unresolved.is_empty());
    assert_eq!(both(), (BTreeMap::new(), BTreeMap::new()));
    // an IPv6 of the node itself (a local route, no veth) is reported, not attached
    let own: IpAddr = "2001:db8:ffff::1".parse().expect("ipv6");
    ip_in(&topo.node.name, &["-6", "addr", "add", &format!("{own}/128"), "dev", "lo", "nodad"]);
    let report = loader.sync_pods(&[PodTarget::Ip(own)]).expect("sync");
    assert!(
        matches!(&report.unresolved[..], [(_, egret_loader::LoaderError::PodNotLocal { ip, .. })] if *ip == own),
        "{:?}",
        report.unresolved
    );
    assert!(loader.local_endpoints().is_empty());

    // a slot the node does not know fails the apply, and the running generation stays
    let (running, _) = loader.running().expect("running");
    let mut unknown = artifact(3);
    let m = &mut unknown.manifest.maps.iter_mut().find(|m| m.name == templates::map::GW_SLOTS).expect("slots");
    m.entries[0].late[0].source = HoleSource::SlotIpv4 { slot: SLOT + 1 };
    let unknown =
        Artifact::new("n1", unknown.object, unknown.manifest.programs, unknown.manifest.holes, unknown.manifest.maps);
    assert!(
        matches!(loader.apply(&unknown), Err(egret_loader::LoaderError::UnknownSlot { slot, .. }) if slot == SLOT + 1)
    );
    assert_eq!(loader.running().map(|(g, _)| g), Some(running));
    // likewise a slot without an IPv6 address here
    let mut unknown6 = artifact(4);
    let m = &mut unknown6.manifest.maps.iter_mut().find(|m| m.name == templates::map::GW_SLOTS).expect("slots");
    m.entries[0].late[2].source = HoleSource::SlotIpv6 { slot: SLOT + 1 };
    let unknown6 = Artifact::new(
        "n1",
        unknown6.object,
        unknown6.manifest.programs,
        unknown6.manifest.holes,
        unknown6.manifest.maps,
    );
    let err = loader.apply(&unknown6).expect_err("no IPv6 for the slot");
    assert!(
        matches!(&err, egret_loader::LoaderError::UnknownSlot { slot, family: "IPv6", .. } if *slot == SLOT + 1),
        "{err}"
    );
    assert_eq!(loader.running().map(|(g, _)| g), Some(running));

    loader.uninstall().expect("uninstall");
    assert_eq!(fs.pins(), 0);
    drop(entered);
    let names: Vec<String> =
        std::iter::once(topo.node.name.clone()).chain(topo.pods.iter().map(|p| p.name.clone())).collect();
    let mount = fs.mount_point().to_path_buf();
    drop(topo);
    drop(fs);
    assert!(names.iter().all(|n| !netns_exists(n)) && !mounted(&mount), "namespace or mount left");
}
