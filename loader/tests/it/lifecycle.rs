//! The loader's life on one node, privileged: first apply with pending pods,
//! traffic through the attached classifier, a pod veth that appears later, a
//! digest-equal artifact that is not loaded, a swap, a restart that adopts
//! (same links, same programs, nothing detached), a veth that disappears,
//! reconciling the pod set, inspection, uninstall — and nothing left behind.

use egret_testkit::netns as common;

use std::collections::BTreeSet;

use common::*;
use egret_bpf::artifact::AttachPoint;
use egret_loader::demo::Verdict;
use egret_loader::demo::verdict_value;
use egret_loader::{ApplyReport, Loader, LoaderConfig, PodState, PodTarget, inspect};

fn link_ids(status: &inspect::Status) -> BTreeSet<u32> {
    status.attachments.iter().filter_map(|a| a.link_id).collect()
}

#[test]
fn apply_attach_swap_adopt_prune_uninstall() {
    if !privileged("apply_attach_swap_adopt_prune_uninstall") {
        return;
    }
    let fs = Bpffs::new("life");
    let mut topo = Topology::new("life", 2);
    add_tunnel(&topo.node.name);
    let node_ns = topo.node.name.clone();
    let pod0 = topo.pods[0].name.clone();
    {
        let _in = topo.node.enter();
        let (mut loader, recovery) = Loader::open(LoaderConfig::new(fs.root())).expect("open");
        assert_eq!(recovery, egret_loader::Recovery::default());
        // one loader per root
        let busy = Loader::open(LoaderConfig::new(fs.root())).expect_err("a second loader on the root");
        assert!(matches!(busy, egret_loader::LoaderError::Busy { .. }), "{busy}");

        // a pod known before any generation: recorded, attached at the first apply
        let a = loader.attach_pod(&PodTarget::Ip(pod_ip(0).into())).expect("resolve pod 0 by its route");
        assert_eq!(a.state, PodState::Pending);
        assert_eq!(a.interface, topo.veths[0]);
        // a pending pod whose veth vanishes before the first apply does not block it
        let gone = loader.attach_pod(&PodTarget::Ip(pod_ip(1).into())).expect("resolve pod 1");
        assert_eq!(gone.state, PodState::Pending);
        topo.remove_pod_veth(1);

        let gen_a = demo("n1", TAG_A);
        let r = loader.apply(&gen_a).expect("apply A");
        let ApplyReport::Swapped { from: None, to, replaced: 0, attached: 2, released: 0, leftovers, .. } = r else {
            panic!("unexpected report {r:?}");
        };
        assert_eq!(to.0, 1);
        assert!(leftovers.is_empty());
        assert_eq!(loader.pods().keys().copied().collect::<Vec<_>>(), vec![a.ifindex], "pod 1 was forgotten");
        // pins: 2 maps + 2 programs + marker + 2 links
        assert_eq!(fs.pins(), 7);

        // traffic from pod 0: D0 and D1 pass stamped with A's tags, D2 drops
        let rx: Vec<_> = DESTS.iter().map(|d| receiver(*d)).collect();
        for d in DESTS {
            send_from(&pod0, d, 0..5);
        }
        let seen: Vec<Vec<Seen>> = rx.iter().map(drain).collect();
        assert_eq!(seen[0].len(), 5, "D0 passes under A: {seen:?}");
        assert_eq!(seen[1].len(), 5, "D1 passes under A");
        assert!(seen[2].is_empty(), "D2 drops under A");
        for s in seen[0].iter().chain(&seen[1]) {
            assert_eq!(
                (s.code_tag, s.map_tag, s.ifindex_byte),
                (TAG_A, TAG_A, 1),
                "stamped by A, %marker_ifindex = lo"
            );
        }

        // a veth that appears later gets the running generation
        let i = topo.add_pod();
        let b = loader.attach_pod(&PodTarget::Interface(topo.veths[i].clone())).expect("attach pod 1");
        assert_eq!(b.state, PodState::Attached);
        let again = loader.attach_pod(&PodTarget::Ip(pod_ip(i).into())).expect("attach pod 1 again");
        assert_eq!(again.state, PodState::AlreadyAttached);
        send_from(&topo.pods[i].name, DESTS[1], 100..103);
        assert_eq!(drain(&rx[1]).len(), 3, "pod 1's traffic is classified by A");

        // the same artifact again is not loaded
        let before = inspect::status(&fs.root()).expect("status");
        assert_eq!(loader.apply(&gen_a).expect("apply A again"), ApplyReport::Unchanged { generation: to });
        assert_eq!(inspect::status(&fs.root()).expect("status"), before);

        // swap to B: every link now runs B, generation 1 is gone
        let r = loader.apply(&demo("n1", TAG_B)).expect("apply B");
        let ApplyReport::Swapped { from: Some(from), to: to_b, replaced: 3, attached: 0, released: 0, .. } = r else {
            panic!("unexpected report {r:?}");
        };
        assert_eq!((from.0, to_b.0), (1, 2));
        let st = inspect::status(&fs.root()).expect("status");
        assert_eq!(st.running, Some(to_b));
        assert_eq!(st.generations.len(), 1);
        assert_eq!(st.attachments.len(), 3);
        assert!(st.attachments.iter().all(|a| a.generation == Some(to_b) && !a.defunct), "{st}");
        assert_eq!(link_ids(&st), link_ids(&before), "a swap never re-creates links");
        let fills: Vec<(&str, usize, u32)> =
            st.maps.iter().map(|m| (m.name.as_str(), m.entries, m.max_entries)).collect();
        assert_eq!(fills, vec![("verdicts", 3, 256), ("counters", 4, 4)]);
        send_from(&pod0, DESTS[1], 10..13);
        send_from(&pod0, DESTS[2], 10..13);
        assert!(drain(&rx[1]).is_empty(), "D1 drops under B");
        let d2 = drain(&rx[2]);
        assert_eq!(d2.len(), 3);
        assert!(d2.iter().all(|s| (s.code_tag, s.map_tag) == (TAG_B, TAG_B)));

        // the live decision table, from the pins
        let (g, dumps) = inspect::maps(&fs.root()).expect("maps");
        assert_eq!(g, Some(to_b));
        let verdicts = dumps.iter().find(|d| d.name == "verdicts").expect("verdicts dump");
        assert_eq!(
            verdicts.value(&DESTS[1]),
            Some(egret_bpf::artifact::hex(&verdict_value(Verdict::Drop, TAG_B)).as_str())
        );
        let counters = dumps.iter().find(|d| d.name == "counters").expect("counters dump");
        assert!(counters.entries.iter().all(|e| !e.values.is_empty()));
        let text = st.to_string();
        assert!(text.contains("running: generation 2"), "{text}");

        // restart: the new loader adopts generation 2 with the same links and programs
        let programs = loader.program_ids();
        drop(loader);
        let (mut loader, recovery) = Loader::open(LoaderConfig::new(fs.root())).expect("reopen");
        assert_eq!(recovery.adopted, Some(to_b));
        assert_eq!(recovery.kept_links, 3);
        assert!(recovery.rolled_forward.is_empty() && recovery.released.is_empty() && recovery.deleted.is_empty());
        assert_eq!(loader.program_ids(), programs);
        assert_eq!(loader.pods().len(), 2);
        let after = inspect::status(&fs.root()).expect("status");
        assert_eq!(link_ids(&after), link_ids(&st), "adoption detaches nothing");
        assert_eq!(loader.apply(&demo("n1", TAG_B)).expect("apply B"), ApplyReport::Unchanged { generation: to_b });

        // a veth that disappears: its link is released
        topo.remove_pod_veth(i);
        let released = loader.prune().expect("prune");
        assert_eq!(released.len(), 1, "{released:?}");
        assert_eq!(loader.pods().len(), 1);
        let st = inspect::status(&fs.root()).expect("status");
        assert_eq!(st.attachments.len(), 2);
        assert!(st.attachments.iter().all(|a| !a.defunct));

        // reconcile the pod set: a new pod's veth appears, an unknown IP cannot be resolved
        let j = topo.add_pod();
        let veth_j = loader.attach_pod(&PodTarget::Interface(topo.veths[j].clone()));
        let ifindex_j = veth_j.expect("resolve").ifindex;
        loader.release_pod(ifindex_j).expect("release");
        let report = loader
            .sync_pods(&[
                PodTarget::Ip(pod_ip(0).into()),
                PodTarget::Interface(topo.veths[j].clone()),
                PodTarget::Ip(std::net::Ipv4Addr::new(198, 51, 100, 99).into()),
            ])
            .expect("sync");
        assert_eq!(report.attached, vec![ifindex_j]);
        assert!(report.released.is_empty());
        assert_eq!(report.unresolved.len(), 1, "{report:?}");
        let pod0_ifindex = *loader.pods().iter().find(|(_, n)| **n == topo.veths[0]).expect("pod 0 kept").0;
        let report = loader.sync_pods(&[PodTarget::Ip(pod_ip(j).into())]).expect("sync");
        assert_eq!(report.released, vec![pod0_ifindex]);
        assert!(report.attached.is_empty() && report.unresolved.is_empty());
        // pod 0 has no classifier any more: D1 (which B drops) passes unstamped
        send_from(&pod0, DESTS[1], 30..32);
        let plain = drain(&rx[1]);
        assert_eq!(plain.len(), 2);
        assert!(plain.iter().all(|s| (s.code_tag, s.map_tag) == (0, 0)), "{plain:?}");
        send_from(&topo.pods[j].name, DESTS[1], 40..42);
        assert!(drain(&rx[1]).is_empty(), "the new pod's traffic is classified by B");
        let st = inspect::status(&fs.root()).expect("status");

        // the tunnel link exists and runs B's tunnel program
        let tun = st.attachments.iter().find(|a| a.attach == AttachPoint::TunnelIngress).expect("tunnel link");
        assert_eq!(tun.interface.as_deref(), Some("egret0"));
        assert_eq!(tun.prog_id, loader.program_ids().get(&AttachPoint::TunnelIngress).copied());

        loader.uninstall().expect("uninstall");
        assert_eq!(fs.pins(), 0, "uninstall leaves no pin");
        send_from(&pod0, DESTS[2], 20..21);
        send_from(&pod0, DESTS[1], 20..21);
        assert_eq!(drain(&rx[2]).len() + drain(&rx[1]).len(), 2, "no classifier left on the veth");
    }
    let mount = fs.mount_point().to_path_buf();
    let names: Vec<String> = std::iter::once(node_ns).chain(topo.pods.iter().map(|p| p.name.clone())).collect();
    drop(topo);
    drop(fs);
    assert!(names.iter().all(|n| !netns_exists(n)), "namespaces left: {names:?}");
    assert!(!mounted(&mount) && !mount.exists(), "bpffs mount left");
}
