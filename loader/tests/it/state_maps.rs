//! State maps survive generation swaps (privileged): NAT mappings that
//! generation A's `egret_tunnel_in` creates under `BPF_PROG_TEST_RUN` (one
//! IPv4, one IPv6: `egret_nat_v6` / `egret_rnat_v6` are state maps too) are
//! found by generation B's `egret_gw_reply` after a swap, and the per-CPU
//! counters go on counting in the same map; a changed definition gives a new,
//! empty map (reported), and the reply is no longer translated; a build that
//! fails after the state maps were prepared leaks no pin and leaves them as
//! they were; a loader restarted after a crash before `state/` was updated
//! re-pins it; `uninstall` removes the state maps too.

use egret_testkit::netns as common;

use egret_testkit::gateway as gateway_common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use common::*;
use egret_bpf::MapDef;
use egret_bpf::artifact::{
    Artifact, AttachPoint, Decision, DecisionRow, DecisionTable, HoleSource, HoleSpec, MapImage, ProgramSpec,
};
use egret_bpf::elf::{DEFAULT_LICENSE, ObjectWriter, verify_and_write};
use egret_bpf::templates::{self, AllowedSource, GatewaySlot, NatKey, ReverseNat, SourceNode, Stat, Template, map};
use egret_loader::{ApplyReport, Generation, Loader, LoaderConfig, LoaderError, StateFate, inspect, view};
use gateway_common::{ACK, NODE_A, POD_A, POD_A6, Pkt, SERVER, SERVER6, SLOT, SYN, TCP};
use std::process::Command;

const EGRESS_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const EGRESS_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
/// `TC_ACT_REDIRECT`: what the redirect helpers make a program return under `BPF_PROG_TEST_RUN`.
const TC_ACT_REDIRECT: u32 = 7;
/// `TC_ACT_UNSPEC` (-1) as the kernel reports a 32-bit return value.
const TC_ACT_UNSPEC: u32 = u32::MAX;

/// The gateway datapath with `egret_tunnel_in` keyed for ([`SLOT`], [`NODE_A`])
/// (test runs carry no tunnel metadata), `egret_gw_reply`, `maps` as the
/// object's maps, and `extra` more allowed pods (so artifacts differ).
fn gateway(maps: &[MapDef], extra: u8) -> Artifact {
    let keyed = templates::with_test_tunnel_key(Template::TunnelIn, SLOT, NODE_A.into());
    let tunnel_in = egret_bpf::asm::assemble(Template::TunnelIn.name(), &keyed).expect("assembles").program;
    let reply = Template::GwReply.assemble().expect("assembles").program;
    let object = verify_and_write(&[tunnel_in, reply], maps, DEFAULT_LICENSE).expect("object");
    let mut images: Vec<MapImage> = maps.iter().map(MapImage::of).collect();
    let image = |images: &mut Vec<MapImage>, name: &str| images.iter().position(|m| m.name == name).expect("image");
    let slots = image(&mut images, map::GW_SLOTS);
    let s =
        GatewaySlot { slot: SLOT, egress_ip: EGRESS_IP, egress_ip6: EGRESS_IP6, egress_ifindex: 1, floating: false };
    images[slots].push(&s.key(), &s.value());
    let allowed = image(&mut images, map::GW_ALLOWED);
    for src in std::iter::once(POD_A).chain((1..=extra).map(|i| Ipv4Addr::new(10, 0, 9, i))) {
        let a = AllowedSource { slot: SLOT, src: src.into(), from: SourceNode::AnyNode };
        images[allowed].push(&a.key(), &a.value());
    }
    let allowed6 = image(&mut images, map::GW_ALLOWED6);
    let a = AllowedSource { slot: SLOT, src: POD_A6.into(), from: SourceNode::AnyNode };
    images[allowed6].push(&a.key(), &a.value());
    Artifact::new(
        "gw",
        object,
        vec![
            ProgramSpec::attached(Template::TunnelIn.name(), AttachPoint::TunnelIngress),
            ProgramSpec::attached(Template::GwReply.name(), AttachPoint::EgressIngress),
        ],
        vec![HoleSpec {
            name: templates::HOLE_TUNNEL_IFINDEX.into(),
            source: HoleSource::Ifindex { link: "egret0".into() },
        }],
        images,
    )
}

fn test_run(loader: &Loader, program: &str, frame: &[u8]) -> u32 {
    let (g, _) = loader.running().expect("running");
    let prog = SchedClassifier::from_pin(loader.layout().program(g, program)).expect("pinned program");
    let mut out = vec![0u8; frame.len() + 64];
    prog.test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::default() })
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

fn dump(root: &std::path::Path, g: Generation, name: &str) -> inspect::MapDump {
    inspect::dump_map(&egret_loader::PinLayout::new(root).map(g, name), name).expect("dump")
}

fn bytes(h: &str) -> Vec<u8> {
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex")).collect()
}

/// Packets (the first little-endian `u64`, summed over CPUs) of an `egret_gw_stats` index.
fn stat(root: &std::path::Path, g: Generation, s: Stat) -> u64 {
    let d = dump(root, g, map::GW_STATS);
    let e = d.entries.iter().find(|e| e.key == egret_bpf::artifact::hex(&s.index().to_le_bytes())).expect("index");
    e.values.iter().map(|v| u64::from_le_bytes(bytes(v)[..8].try_into().expect("8 bytes"))).sum()
}

/// The reverse NAT entries of generation `g`, decoded.
fn connections(root: &std::path::Path, g: Generation) -> Vec<(NatKey, ReverseNat)> {
    connections_of(root, g)
}

/// The reverse NAT entries of one family (`egret_rnat_v4` / `_v6`) of generation `g`, decoded.
fn connections_of<A: templates::GwAddr>(root: &std::path::Path, g: Generation) -> Vec<(NatKey<A>, ReverseNat<A>)> {
    let d = dump(root, g, A::RNAT_MAP);
    d.entries
        .iter()
        .map(|e| {
            (
                NatKey::from_bytes(&bytes(&e.key)).expect("key"),
                ReverseNat::from_bytes(&bytes(&e.values[0])).expect("value"),
            )
        })
        .collect()
}

fn fates(report: &ApplyReport) -> Vec<(String, StateFate)> {
    let ApplyReport::Swapped { state, .. } = report else { panic!("not a swap: {report:?}") };
    state.iter().map(|s| (s.map.clone(), s.fate.clone())).collect()
}

/// Pins a running gateway generation holds: its maps, programs and marker,
/// its links, and its state maps under `state/`.
fn expected_pins(a: &Artifact, links: usize) -> usize {
    let info = usize::from(a.manifest.decisions.is_some() || !a.manifest.counters.is_empty());
    a.manifest.maps.len() + a.manifest.programs.len() + 1 + info + links + a.manifest.state.len()
}

/// A recorded decision table (what an inline-layout classifier would carry).
fn recorded() -> DecisionTable {
    DecisionTable {
        layout: "inline".into(),
        internal: vec!["10.0.0.0/8".into()],
        rows: vec![
            DecisionRow {
                source: POD_A.into(),
                destination: "0.0.0.0/0".into(),
                decision: Decision::Redirect { gateway: Ipv4Addr::new(192, 0, 2, 13).into(), slot: SLOT },
                failover: Vec::new(),
                rule: Some(0),
            },
            DecisionRow {
                source: POD_A.into(),
                destination: "192.168.0.0/16".into(),
                decision: Decision::Pass,
                failover: Vec::new(),
                rule: None,
            },
        ],
        classes: [(POD_A.into(), 0)].into(),
        egress: [(SLOT, Ipv4Addr::new(192, 0, 2, 99).into())].into(),
        egress6: Default::default(),
    }
}

#[test]
fn nat_tables_and_counters_survive_swaps() {
    if !privileged("nat_tables_and_counters_survive_swaps") {
        return;
    }
    let fs = Bpffs::new("stat");
    let ns = Netns::new("stat");
    add_tunnel(&ns.name);
    let entered = ns.enter();
    let mut config = LoaderConfig::new(fs.root());
    config.egress_interfaces = vec!["lo".into()];
    let (mut loader, _) = Loader::open(config.clone()).expect("open");
    let maps = templates::maps();
    let a = gateway(&maps, 0);
    assert_eq!(
        a.manifest.state,
        [
            map::FLOAT_OWNER,
            map::FLOW_EVENTS,
            map::GW_STATS,
            map::NAT_V4,
            map::NAT_V6,
            map::PROBE_RX,
            map::RNAT_V4,
            map::RNAT_V6
        ],
        "the templates' maps the compiler does not fill"
    );

    // generation A: created; a SYN from a pod gets a NAT mapping
    let r = loader.apply(&a).expect("apply A");
    assert!(fates(&r).iter().all(|(_, f)| *f == StateFate::Created), "{r:?}");
    assert_eq!(fs.pins(), expected_pins(&a, 2));
    let (ga, _) = loader.running().expect("running");
    let syn = Pkt::tcp(POD_A, 40_000, SERVER, 443, SYN).frame();
    assert_eq!(test_run(&loader, Template::TunnelIn.name(), &syn), TC_ACT_REDIRECT, "SNATed out");
    let conns = connections(&fs.root(), ga);
    assert_eq!(conns.len(), 1, "{conns:?}");
    let (key, conn) = conns[0];
    assert_eq!((key.src, key.dst, key.dport, key.proto), (EGRESS_IP, SERVER, 443, TCP));
    assert_eq!((conn.orig_src, conn.orig_sport, conn.slot), (POD_A, 40_000, SLOT));
    let nat_port = key.sport;
    // and an IPv6 one
    let syn6 = Pkt::tcp(POD_A6, 40_001, SERVER6, 443, SYN).frame();
    assert_eq!(test_run(&loader, Template::TunnelIn.name(), &syn6), TC_ACT_REDIRECT, "SNATed out over IPv6");
    let conns6 = connections_of::<Ipv6Addr>(&fs.root(), ga);
    assert_eq!(conns6.len(), 1, "{conns6:?}");
    let (key6, conn6) = conns6[0];
    assert_eq!(
        (key6.src, key6.dst, key6.dport, conn6.orig_src, conn6.orig_sport),
        (EGRESS_IP6, SERVER6, 443, POD_A6, 40_001)
    );
    let nat_port6 = key6.sport;
    let state_ids = |root: &std::path::Path| inspect::status(root).expect("status").state;
    assert!(state_ids(&fs.root()).iter().all(|p| p.running), "state/ names A's maps");

    // generation B (an unrelated change): every state map is reused; B's reply
    // program translates the reply of A's connection, counters go on
    let b = gateway(&maps, 3).with_decisions(recorded());
    let r = loader.apply(&b).expect("swap to B");
    assert!(fates(&r).iter().all(|(_, f)| *f == StateFate::Reused), "{r:?}");
    let (gb, _) = loader.running().expect("running");
    assert_ne!(ga, gb);
    assert_eq!(connections(&fs.root(), gb), conns, "the connection table carried over");
    assert_eq!(connections_of::<Ipv6Addr>(&fs.root(), gb), conns6, "the IPv6 connection table carried over");
    let synack = Pkt::tcp(SERVER, 443, EGRESS_IP, nat_port, SYN | ACK).frame();
    assert_eq!(test_run(&loader, Template::GwReply.name(), &synack), TC_ACT_REDIRECT, "reply tunnelled back");
    let synack6 = Pkt::tcp(SERVER6, 443, EGRESS_IP6, nat_port6, SYN | ACK).frame();
    assert_eq!(test_run(&loader, Template::GwReply.name(), &synack6), TC_ACT_REDIRECT, "IPv6 reply tunnelled back");
    assert_eq!((stat(&fs.root(), gb, Stat::Snat), stat(&fs.root(), gb, Stat::ReplyTunnelled)), (2, 2));
    assert_eq!(fs.pins(), expected_pins(&b, 2), "A deleted, nothing leaked");

    // the decoded views of B: its NAT use, counters and connection, and the
    // decision table it recorded, egress IP from the live egret_gw_slots
    let gw = view::gateway(&fs.root()).expect("gateway view");
    assert_eq!((gw.nat, gw.rnat), (Some((1, templates::NAT_MAX)), Some((1, templates::NAT_MAX))));
    assert_eq!((gw.nat6, gw.rnat6), (Some((1, templates::NAT_MAX)), Some((1, templates::NAT_MAX))));
    let count = |name: &str| gw.stats.iter().find(|s| s.name == name).map(|s| s.packets);
    assert_eq!((count("snat"), count("reply-tunnelled"), count("spoofed-source")), (Some(2), Some(2), Some(0)));
    let c = &gw.connections[..];
    assert_eq!(c.len(), 2, "IPv4, then IPv6");
    assert_eq!(
        (c[0].pod, c[0].pod_port, c[0].node, c[0].egress, c[0].nat_port),
        (IpAddr::from(POD_A), 40_000, IpAddr::from(NODE_A), IpAddr::from(EGRESS_IP), nat_port)
    );
    assert_eq!(
        (c[1].pod, c[1].pod_port, c[1].node, c[1].egress, c[1].nat_port),
        (IpAddr::from(POD_A6), 40_001, IpAddr::from(NODE_A), IpAddr::from(EGRESS_IP6), nat_port6)
    );
    let text = gw.to_string();
    assert!(text.contains("NAT table use 1/65536 mappings, 1/65536 connections"), "{text}");
    assert!(text.contains("IPv6 NAT table use 1/65536 mappings, 1/65536 connections"), "{text}");
    assert!(
        text.contains(&format!("tcp  {POD_A}:40000 (node {NODE_A}) -> {SERVER}:443 as {EGRESS_IP}:{nat_port}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tcp  [{POD_A6}]:40001 (node {NODE_A}) -> [{SERVER6}]:443 as [{EGRESS_IP6}]:{nat_port6}"
        )),
        "{text}"
    );
    assert!(text.contains("drops by reason: none"), "{text}");
    let d = view::decisions(&fs.root()).expect("decisions");
    assert_eq!(d.source, view::DecisionSource::Recorded);
    assert_eq!(d.rows, recorded().rows);
    let lines: Vec<Vec<String>> =
        d.to_string().lines().skip(1).map(|l| l.split_whitespace().map(String::from).collect()).collect();
    assert_eq!(lines[0], ["Source", "IP", "Destination", "CIDR", "Egress", "IP", "Gateway", "IP"]);
    assert_eq!(lines[1], [POD_A.to_string(), "0.0.0.0/0".into(), EGRESS_IP.to_string(), "192.0.2.13".into()]);
    assert_eq!(lines[2], [POD_A.to_string(), "192.168.0.0/16".into(), "-".into(), "Excluded".into(), "CIDR".into()]);
    assert_eq!(lines[3].join(" "), "cluster-internal (always pass): 10.0.0.0/8");
    // the record is read-only: frozen for user space too
    let info = egret_loader::PinLayout::new(fs.root()).info(gb);
    let frozen = Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(&info)
        .args(["key", "0", "0", "0", "0", "value"])
        .args(std::iter::repeat_n("0", 4096))
        .output();
    if let Ok(out) = frozen {
        assert!(!out.status.success(), "a frozen map refuses updates");
    }
    assert!(state_ids(&fs.root()).iter().all(|p| p.running), "state/ names B's maps");

    // a build that fails in the kernel after the state maps were prepared:
    // no pin leaks, state/ and B stay as they were
    let before = state_ids(&fs.root());
    let bad = {
        let prog = egret_bpf::asm::assemble("unchecked", "r2 = *(u32 *)(r1 + 76)\nr0 = *(u8 *)(r2 + 0)\nexit")
            .expect("assembles")
            .program;
        let mut w = ObjectWriter::new(maps.clone(), DEFAULT_LICENSE).expect("writer");
        w.add_unverified_program(prog).expect("add");
        let images = maps.iter().map(MapImage::of).collect();
        Artifact::new(
            "gw",
            w.write().expect("object"),
            vec![ProgramSpec::attached("unchecked", AttachPoint::EgressIngress)],
            vec![],
            images,
        )
    };
    assert!(matches!(loader.apply(&bad), Err(LoaderError::VerifierRejected { .. })));
    assert_eq!(loader.running().map(|(g, _)| g), Some(gb));
    assert_eq!(state_ids(&fs.root()), before);
    assert_eq!(fs.pins(), expected_pins(&b, 2));

    // generation C resizes the reverse table: recreated (empty, reported), the
    // others reused; the old connection is gone, so its reply passes untouched
    let mut resized = maps.clone();
    resized.iter_mut().find(|m| m.name == map::RNAT_V4).expect("rnat").max_entries = 4096;
    let c = gateway(&resized, 3);
    let r = loader.apply(&c).expect("swap to C");
    let f = fates(&r);
    for (name, fate) in &f {
        match (name.as_str(), fate) {
            (map::RNAT_V4, StateFate::Recreated { reason }) => assert_eq!(reason, "max_entries 65536 -> 4096"),
            (
                map::NAT_V4
                | map::NAT_V6
                | map::RNAT_V6
                | map::GW_STATS
                | map::PROBE_RX
                | map::FLOAT_OWNER
                | map::FLOW_EVENTS,
                StateFate::Reused,
            ) => {}
            other => panic!("unexpected fate {other:?}"),
        }
    }
    assert_eq!(f.len(), 8);
    let (gc, _) = loader.running().expect("running");
    assert!(connections(&fs.root(), gc).is_empty());
    assert_eq!(dump(&fs.root(), gc, map::NAT_V4).entries.len(), 1, "the forward table was kept");
    assert_eq!(test_run(&loader, Template::GwReply.name(), &synack), TC_ACT_UNSPEC);
    let kept6: Vec<_> =
        connections_of::<Ipv6Addr>(&fs.root(), gc).iter().map(|(k, r)| (*k, r.orig_src, r.orig_sport)).collect();
    assert_eq!(kept6, [(key6, POD_A6, 40_001)], "the IPv6 table was kept");
    assert_eq!(stat(&fs.root(), gc, Stat::Snat), 2, "counters kept");
    assert_eq!(fs.pins(), expected_pins(&c, 2));

    // a crash after the swap, before state/ was updated: the next start re-pins it
    drop(loader);
    let layout = egret_loader::PinLayout::new(fs.root());
    std::fs::remove_file(layout.state_map(map::RNAT_V4)).expect("unpin");
    let (loader, _) = Loader::open(config).expect("reopen");
    let after = state_ids(&fs.root());
    assert_eq!(after.len(), 8, "every state map of the running generation");
    assert!(after.iter().all(|p| p.running), "{after:?}");
    assert_eq!(fs.pins(), expected_pins(&c, 2));

    loader.uninstall().expect("uninstall");
    assert!(!layout.state_dir().exists(), "state/ removed");
    finish_namespace(entered, ns, fs);
}
