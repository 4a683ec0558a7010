//! Bad artifacts and failed swaps leave the running generation untouched and
//! say why (privileged). Each test runs generation A on a node with one pod and
//! the tunnel device, tries something that must fail, checks the typed error,
//! then checks that A still serves exactly as before: same generation, same
//! links running the same programs, the same pins (nothing of the failed
//! generation left), and the pod's traffic still classified by A.

use egret_testkit::netns as common;

use std::path::PathBuf;

use common::*;
use egret_bpf::artifact::{Artifact, AttachPoint, HoleSource, HoleSpec, MapImage, ProgramSpec};
use egret_bpf::elf::{DEFAULT_LICENSE, ObjectWriter};
use egret_bpf::{MapDef, MapKind};
use egret_loader::demo::{DemoSpec, demo_artifact};
use egret_loader::{Generation, Loader, LoaderConfig, LoaderError, PodTarget, inspect};

/// Fields drop in order: loader, namespace entry, topology, bpffs.
struct Node {
    loader: Option<Loader>,
    rx: std::net::UdpSocket,
    entered: Option<Entered>,
    topo: Topology,
    fs: Bpffs,
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    running: Option<Generation>,
    links: Vec<(PathBuf, Option<u32>, Option<u32>)>,
    generations: Vec<Generation>,
    pins: usize,
}

impl Node {
    fn new(tag: &str) -> Node {
        let fs = Bpffs::new(tag);
        let topo = Topology::new(tag, 1);
        add_tunnel(&topo.node.name);
        let entered = Some(topo.node.enter());
        let (mut loader, _) = Loader::open(LoaderConfig::new(fs.root())).expect("open");
        loader.attach_pod(&PodTarget::Interface(topo.veths[0].clone())).expect("pod");
        loader.apply(&demo("n1", TAG_A)).expect("apply A");
        let rx = receiver(DESTS[1]);
        let n = Node { loader: Some(loader), rx, entered, topo, fs };
        n.assert_a_serves();
        n
    }

    fn snapshot(&self) -> Snapshot {
        let st = inspect::status(&self.fs.root()).expect("status");
        Snapshot {
            running: st.running,
            links: st.attachments.iter().map(|a| (a.pin.clone(), a.link_id, a.prog_id)).collect(),
            generations: st.generations.iter().map(|g| g.generation).collect(),
            pins: self.fs.pins(),
        }
    }

    fn loader(&mut self) -> &mut Loader {
        self.loader.as_mut().expect("a loader is open")
    }

    /// Closes the loader and opens another on the same root with `config`
    /// (`Loader::open` waits out a lock a forked child still shares for a moment).
    fn reopen(&mut self, config: LoaderConfig) {
        self.loader = None;
        self.loader = Some(Loader::open(config).expect("reopen").0);
    }

    /// D1 passes under A (and drops under B), stamped with A's tags.
    fn assert_a_serves(&self) {
        send_from(&self.topo.pods[0].name, DESTS[1], 0..3);
        let seen = drain(&self.rx);
        assert_eq!(seen.len(), 3, "A passes D1: {seen:?}");
        assert!(seen.iter().all(|s| (s.code_tag, s.map_tag) == (TAG_A, TAG_A)), "{seen:?}");
    }

    /// Applies `bad`, returns the error, and checks that nothing changed.
    fn refuse(&mut self, bad: &Artifact) -> LoaderError {
        let before = self.snapshot();
        let err = self.loader().apply(bad).expect_err("a bad artifact must fail");
        assert_eq!(self.snapshot(), before, "after {err}");
        assert_eq!(self.loader().running().map(|(g, _)| g), before.running);
        self.assert_a_serves();
        err
    }

    fn finish(self) {
        let Node { loader, rx, entered, topo, fs } = self;
        loader.expect("a loader is open").uninstall().expect("uninstall");
        assert_eq!(fs.pins(), 0, "uninstall leaves no pin");
        drop((rx, entered));
        let names: Vec<String> =
            std::iter::once(topo.node.name.clone()).chain(topo.pods.iter().map(|p| p.name.clone())).collect();
        let mount = fs.mount_point().to_path_buf();
        drop(topo);
        drop(fs);
        assert!(names.iter().all(|n| !netns_exists(n)), "namespaces left");
        assert!(!mounted(&mount), "bpffs left mounted");
    }
}

fn remade(a: &Artifact, f: impl FnOnce(&mut Vec<ProgramSpec>, &mut Vec<HoleSpec>, &mut Vec<MapImage>)) -> Artifact {
    let mut p = a.manifest.programs.clone();
    let mut h = a.manifest.holes.clone();
    let mut m = a.manifest.maps.clone();
    f(&mut p, &mut h, &mut m);
    Artifact::new(&a.manifest.node, a.object.clone(), p, h, m)
}

#[test]
fn corrupt_elf_is_refused() {
    if !privileged("corrupt_elf_is_refused") {
        return;
    }
    let mut n = Node::new("elf");
    let good = demo("n1", TAG_B);
    let garbage = Artifact::new("n1", b"\x7fELF not really".to_vec(), good.manifest.programs.clone(), vec![], vec![]);
    assert!(matches!(n.refuse(&garbage), LoaderError::CorruptObject { .. }));
    let truncated = Artifact::new(
        "n1",
        good.object[..good.object.len() / 2].to_vec(),
        good.manifest.programs.clone(),
        good.manifest.holes.clone(),
        good.manifest.maps.clone(),
    );
    assert!(matches!(n.refuse(&truncated), LoaderError::CorruptObject { .. }));
    // bytes changed after the digest was computed
    let mut tampered = good.clone();
    let at = tampered.object.len() - 9;
    tampered.object[at] ^= 0x40;
    assert!(matches!(n.refuse(&tampered), LoaderError::InvalidArtifact { .. }));
    n.finish();
}

#[test]
fn map_image_for_another_plan_is_refused() {
    if !privileged("map_image_for_another_plan_is_refused") {
        return;
    }
    let mut n = Node::new("img");
    let b = demo("n1", TAG_B);
    // images of another plan's layout
    let other = MapDef::new("src_class", MapKind::Hash, 4, 4, 1024).expect("map");
    let err = n.refuse(&remade(&b, |_, _, m| m[0] = MapImage::of(&other)));
    assert!(matches!(&err, LoaderError::MapImageUnknown { map } if map == "src_class"), "{err}");
    // the right name with another geometry
    let err = n.refuse(&remade(&b, |_, _, m| m[1].max_entries = 16));
    assert!(
        matches!(&err, LoaderError::MapImageMismatch { map, field: "max_entries", .. } if map == "counters"),
        "{err}"
    );
    let err = n.refuse(&remade(&b, |_, _, m| {
        m.pop();
    }));
    assert!(matches!(&err, LoaderError::MapImageMissing { map } if map == "counters"), "{err}");
    // and for another node
    let mut c = LoaderConfig::new(n.fs.root());
    c.node = Some("n1".into());
    n.reopen(c);
    let err = n.refuse(&demo("n2", TAG_B));
    assert!(matches!(&err, LoaderError::WrongNode { artifact, .. } if artifact == "n2"), "{err}");
    n.assert_a_serves();
    n.finish();
}

#[test]
fn verifier_rejection_reports_the_kernel_log() {
    if !privileged("verifier_rejection_reports_the_kernel_log") {
        return;
    }
    let mut n = Node::new("vrf");
    // reads a packet byte without a bounds check: egret's static verifier would
    // refuse it, so write it unverified to reach the kernel's
    let prog = egret_bpf::asm::assemble("unchecked", "r2 = *(u32 *)(r1 + 76)\nr0 = *(u8 *)(r2 + 0)\nexit")
        .expect("assembles")
        .program;
    let mut w = ObjectWriter::new(vec![], DEFAULT_LICENSE).expect("writer");
    w.add_unverified_program(prog).expect("add");
    let object = w.write().expect("object");
    let bad = Artifact::new(
        "n1",
        object,
        vec![ProgramSpec::attached("unchecked", AttachPoint::PodVethIngress)],
        vec![],
        vec![],
    );
    let err = n.refuse(&bad);
    let LoaderError::VerifierRejected { program, log, .. } = &err else {
        panic!("expected a verifier rejection, got {err}")
    };
    assert_eq!(program, "unchecked");
    assert!(log.contains("invalid access to packet"), "kernel log: {log}");
    assert!(err.to_string().contains("invalid access to packet"));
    n.finish();
}

#[test]
fn missing_interfaces_are_refused() {
    if !privileged("missing_interfaces_are_refused") {
        return;
    }
    let mut n = Node::new("ifc");
    // a hole whose source is an interface the node lacks
    let mut spec = DemoSpec::new("n1", TAG_B);
    spec.marker_interface = "egret-nope0".into();
    let err = n.refuse(&demo_artifact(&spec).expect("demo"));
    assert!(
        matches!(&err, LoaderError::MissingInterface { interface, purpose } if interface == "egret-nope0" && purpose == "hole %marker_ifindex"),
        "{err}"
    );
    // a hole for an egress slot the node has no address for
    let err = n.refuse(&remade(&demo("n1", TAG_B), |_, h, _| h[0].source = HoleSource::SlotIpv4 { slot: 3 }));
    assert!(matches!(&err, LoaderError::UnknownSlot { slot: 3, .. }), "{err}");
    // an egress program with an egress interface that does not exist
    let mut c = LoaderConfig::new(n.fs.root());
    c.egress_interfaces = vec!["egret-out9".into()];
    n.reopen(c);
    let egress = remade(&demo("n1", TAG_B), |p, _, _| p[1].attach = Some(AttachPoint::EgressIngress));
    let err = n.refuse(&egress);
    assert!(matches!(&err, LoaderError::MissingInterface { interface, .. } if interface == "egret-out9"), "{err}");
    // a pod whose veth is gone before it is attached
    let err = n.loader().attach_pod(&PodTarget::Interface("egret-gone0".into())).expect_err("no such pod veth");
    assert!(matches!(&err, LoaderError::MissingInterface { .. }), "{err}");
    let err = n
        .loader()
        .attach_pod(&PodTarget::Ip(std::net::Ipv4Addr::new(203, 0, 113, 1).into()))
        .expect_err("local address");
    assert!(matches!(&err, LoaderError::PodNotLocal { .. }), "{err}");
    n.assert_a_serves();
    n.finish();
}

#[test]
fn pin_conflict_and_failed_swap_roll_back() {
    if !privileged("pin_conflict_and_failed_swap_roll_back") {
        return;
    }
    let mut n = Node::new("pin");
    // someone else's directory where the next generation would go
    let (running, _) = n.loader().running().expect("running");
    let squatter = n.loader().layout().generation_dir(running.next());
    std::fs::create_dir(&squatter).expect("squat");
    let before = n.snapshot();
    let err = n.loader().apply(&demo("n1", TAG_B)).expect_err("pin conflict");
    assert!(matches!(&err, LoaderError::PinConflict { path } if *path == squatter), "{err}");
    assert_eq!(n.snapshot(), before);
    n.assert_a_serves();
    std::fs::remove_dir(&squatter).expect("unsquat");

    // a pinned object that is not a tcx link, under a link name that sorts
    // between the pod link and the tunnel link: the swap replaces the pod
    // link, fails there, and must put the pod link back on A
    let foreign = n.loader().layout().link(AttachPoint::PodVethIngress, 99_999);
    let obj = demo_artifact(&DemoSpec::new("x", 1)).expect("demo").object;
    let filled = egret_bpf::elf::fill_holes(
        &obj,
        &[("gen_tag".to_owned(), 1), ("marker_ifindex".to_owned(), 1)].into_iter().collect(),
    )
    .expect("fill");
    let ebpf = aya::Ebpf::load(&filled).expect("aya loads the object");
    ebpf.map("counters").expect("map").pin(&foreign).expect("pin a map under a link name");
    drop(ebpf);
    let before = n.snapshot();
    let err = n.loader().apply(&demo("n1", TAG_B)).expect_err("swap fails at the foreign pin");
    let LoaderError::SwapFailed { from, path, restored, .. } = &err else { panic!("expected SwapFailed, got {err}") };
    assert_eq!(*from, Some(running));
    assert_eq!(*path, foreign);
    assert_eq!(*restored, 1, "the pod link was replaced, then restored: {err}");
    assert_eq!(n.snapshot(), before, "{err}");
    n.assert_a_serves();
    std::fs::remove_file(&foreign).expect("remove foreign pin");

    // with the obstacle gone the same artifact swaps in
    n.loader().apply(&demo("n1", TAG_B)).expect("apply B");
    send_from(&n.topo.pods[0].name, DESTS[1], 0..3);
    assert!(drain(&n.rx).is_empty(), "B drops D1");
    n.finish();
}
