//! Node-local map values (privileged): late fields of map images are
//! resolved on the node (a slot's egress address from the configuration, an
//! interface's ifindex), and `egret_local_eps` follows the pods attached by
//! IP — written into the running generation on attach, deleted on release,
//! rewritten into a new generation before it serves, restored by `sync_pods`.

use egret_testkit::netns as common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::*;
use egret_bpf::artifact::{Artifact, FieldEncoding, HoleSource, LateField};
use egret_bpf::templates::{self, GatewaySlot, LocalEndpoint};
use egret_loader::{Loader, LoaderConfig, PodTarget, inspect};

const SLOT: u32 = 7;
const EGRESS_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// `egret_gw_reply` alone, with one late-bound `egret_gw_slots` entry; `tag`
/// makes artifacts differ.
fn artifact(tag: u8) -> Artifact {
    gw_reply_artifact(|images| {
        let slots = images.iter_mut().find(|m| m.name == templates::map::GW_SLOTS).expect("slots");
        let entry = GatewaySlot {
            slot: SLOT,
            egress_ip: Ipv4Addr::UNSPECIFIED,
            egress_ip6: std::net::Ipv6Addr::UNSPECIFIED,
            egress_ifindex: 0,
            floating: false,
        };
        let mut value = entry.value();
        value[8] = tag;
        slots.push_late(
            &entry.key(),
            &value,
            vec![
                LateField { offset: 0, source: HoleSource::SlotIpv4 { slot: SLOT }, encoding: FieldEncoding::Be32 },
                LateField {
                    offset: 4,
                    source: HoleSource::Ifindex { link: "lo".into() },
                    encoding: FieldEncoding::Le32,
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
    let mut config = LoaderConfig::new(fs.root());
    config.slot_ipv4.insert(SLOT, EGRESS_IP);
    let (mut loader, _) = Loader::open(config).expect("open");
    loader.apply(&artifact(1)).expect("apply");

    let hex = egret_bpf::artifact::hex;
    let want_slot = GatewaySlot {
        slot: SLOT,
        egress_ip: EGRESS_IP,
        egress_ip6: std::net::Ipv6Addr::UNSPECIFIED,
        egress_ifindex: 1,
        floating: false,
    };
    let mut want_value = want_slot.value();
    want_value[8] = 1;
    assert_eq!(
        entries(&fs.root(), templates::map::GW_SLOTS),
        BTreeMap::from([(hex(&want_slot.key()), hex(&want_value))]),
        "egress address (network order) and lo's ifindex filled in"
    );

    // a pod attached by IP gets its veth into egret_local_eps (no pod program: pending)
    let pod = pod_ip(0);
    let a = loader.attach_pod(&PodTarget::Ip(pod)).expect("attach");
    let ep = LocalEndpoint { pod: pod.into(), ifindex: a.ifindex };
    let want_eps = BTreeMap::from([(hex(&ep.key()), hex(&ep.value()))]);
    assert_eq!(entries(&fs.root(), templates::map::LOCAL_EPS), want_eps);
    assert_eq!(loader.local_endpoints(), &BTreeMap::from([(pod, a.ifindex)]));

    // a new generation has it before it serves
    loader.apply(&artifact(2)).expect("swap");
    assert_eq!(entries(&fs.root(), templates::map::LOCAL_EPS), want_eps);

    // released: gone; synced by IP: back
    assert!(!loader.release_pod(a.ifindex).expect("release"), "no link existed");
    assert!(entries(&fs.root(), templates::map::LOCAL_EPS).is_empty());
    let report = loader.sync_pods(&[PodTarget::Ip(pod)]).expect("sync");
    assert!(report.unresolved.is_empty());
    assert_eq!(entries(&fs.root(), templates::map::LOCAL_EPS), want_eps);
    assert!(loader.sync_pods(&[]).expect("sync to none").unresolved.is_empty());
    assert!(entries(&fs.root(), templates::map::LOCAL_EPS).is_empty());

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
