//! The node's complete artifact (`codegen::node`): the classifier plus the
//! gateway templates, wired through one object. A packet that worker-1's
//! `egret_src` redirects — its tunnel key and gateway-1's tables, as the
//! manifest images (late fields filled as a loader would) — is SNATed by
//! gateway-1's `egret_tunnel_in`; a spoofed source is dropped. Every example
//! node's artifact passes the equivalence checker.

use crate::codegen_common;

use codegen_common as common;
use egret_bpf::artifact::{AttachPoint, FieldEncoding, HoleSource, LateField, LateValue, TailCallSlot};
use egret_bpf::elf::{fill_holes, read_object};
use egret_bpf::interp::{MapStore, RedirectKind, RunInput, TunnelKey, run};
use egret_bpf::templates::{self, Stat, Template};
use egret_compiler::codegen::equiv::ip_frame;
use egret_compiler::codegen::{Options, node, tables};
use egret_compiler::resolve::InterfaceBinding;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

const TUNNEL_IFINDEX: i64 = 5;
const ETH0_IFINDEX: u32 = 2;
use egret_bpf::interp::{TC_ACT_REDIRECT, TC_ACT_SHOT};

/// A program of a node artifact with its maps filled as the loader would.
struct Node {
    parsed: egret_bpf::elf::ParsedObject,
    maps: MapStore,
}

impl Node {
    /// `interface` resolves to [`ETH0_IFINDEX`].
    fn load(a: &egret_bpf::artifact::Artifact, interface: &str) -> Node {
        let holes = egret_compiler::codegen::equiv::hole_values(&a.manifest.holes, TUNNEL_IFINDEX);
        let parsed = read_object(&fill_holes(&a.object, &holes).expect("fill")).expect("parse");
        let mut maps = MapStore::new(&parsed.maps);
        for img in &a.manifest.maps {
            for (e, (k, mut v)) in img.entries.iter().zip(img.decoded().expect("hex")) {
                for f in &e.late {
                    let value = match &f.source {
                        HoleSource::Ifindex { link } if link == interface => ETH0_IFINDEX,
                        other => panic!("unexpected late source {other:?}"),
                    };
                    let at = f.offset as usize;
                    v[at..at + 4].copy_from_slice(&f.encoding.encode(LateValue::Word(value)).expect("a word field"));
                }
                maps.update(&img.name, &k, &v, 0).expect("image entry");
            }
        }
        Node { parsed, maps }
    }

    fn run(&mut self, program: &str, input: &RunInput) -> egret_bpf::interp::RunOutcome {
        let p = self.parsed.program(program).expect("program").clone();
        run(&p, &mut self.maps, input).expect("runs")
    }
}

fn tunnelled(frame: &[u8], key: &egret_bpf::interp::TunnelKeySet, sender: IpAddr) -> RunInput {
    let mut input = RunInput::for_frame(frame);
    // the gateway sees the sender's outer source as the tunnel remote
    input.tunnel = Some(TunnelKey { remote: sender, local: None, ..key.key.clone() });
    input
}

/// The example's gateway plan, a served IPv4 slot with a known egress
/// address, a remote source allowed on it, and that source's node plan.
struct Scenario {
    gateway: egret_compiler::plan::Verified<egret_compiler::plan::Plan>,
    worker: egret_compiler::plan::Verified<egret_compiler::plan::Plan>,
    slot: u32,
    egress_ip: Ipv4Addr,
    interface: String,
    pod: IpAddr,
}

fn scenario(w: &egret_compiler::resolve::World) -> Scenario {
    let plans = common::plans(w);
    for gateway in plans.values() {
        for s in &gateway.slots {
            let Some(IpAddr::V4(egress_ip)) = s.v4.as_ref().and_then(|e| e.known()) else { continue };
            let InterfaceBinding::Known { name, .. } = &s.interface else { continue };
            let Some(t) = gateway.gateway_tables.iter().find(|t| t.slot == s.id) else { continue };
            for pod in &t.sources {
                if let Some(worker) = plans.values().find(|p| p.node != gateway.node && p.class_of(*pod).is_some()) {
                    return Scenario {
                        gateway: gateway.clone(),
                        worker: worker.clone(),
                        slot: s.id.0,
                        egress_ip,
                        interface: name.clone(),
                        pod: *pod,
                    };
                }
            }
        }
    }
    panic!("the example has a gateway serving a remote pod");
}

#[test]
fn a_redirected_packet_is_snatted_by_the_gateway_and_a_spoofed_one_dropped() {
    let w = common::example_world();
    let sc = scenario(&w);
    let worker = node::verified_node(&sc.worker, &Options::default(), Some(&w)).expect("worker").into_artifact();
    let gateway = node::verified_node(&sc.gateway, &Options::default(), Some(&w)).expect("gateway").into_artifact();
    let worker_ip = sc.worker.node_ip.expect("worker node ip");
    let gateway_ip = sc.gateway.node_ip.expect("gateway node ip");
    let server: IpAddr = "8.8.8.8".parse().expect("ip");

    // the worker's classifier redirects its pod's packet into egret0 with the slot as VNI
    let frame = ip_frame(sc.pod, server, false);
    let mut wn = Node::load(&worker, &sc.interface);
    let out = wn.run("egret_src", &RunInput::for_frame(&frame));
    assert_eq!(out.r0, TC_ACT_REDIRECT);
    let key = out.effects.tunnel_key.clone().expect("tunnel key set");
    assert_eq!((key.key.tunnel_id, key.key.remote), (sc.slot, gateway_ip));
    assert_eq!(out.effects.redirect.as_ref().map(|r| (r.ifindex, r.flags)), Some((TUNNEL_IFINDEX as u32, 0)));

    // the gateway's tunnel program translates it to the slot's egress address
    let mut gn = Node::load(&gateway, &sc.interface);
    let out = gn.run(Template::TunnelIn.name(), &tunnelled(&out.packet, &key, worker_ip));
    assert_eq!(out.r0, TC_ACT_REDIRECT, "snat");
    let r = out.effects.redirect.as_ref().expect("redirected");
    assert_eq!((r.ifindex, &r.kind), (ETH0_IFINDEX, &RedirectKind::Neigh { nexthop: None }));
    assert_eq!(&out.packet[26..30], &sc.egress_ip.octets(), "source is the egress IP");
    assert_eq!(&out.packet[30..34], &[8, 8, 8, 8], "destination unchanged");

    // a source the slot does not allow, and a gateway-local pod through the tunnel
    let mut spoofed = vec!["192.0.2.99".parse::<IpAddr>().expect("ip")];
    spoofed.extend(
        sc.gateway
            .endpoints
            .iter()
            .map(|e| e.ip)
            .filter(|ip| sc.gateway.gateway_allows(egret_compiler::resolve::SlotId(sc.slot), *ip)),
    );
    for src in &spoofed {
        let f = ip_frame(*src, server, false);
        let out = gn.run(Template::TunnelIn.name(), &tunnelled(&f, &key, worker_ip));
        assert_eq!(out.r0, TC_ACT_SHOT, "{src} dropped");
        assert!(out.effects.redirect.is_none(), "{src}");
    }
    let stats = gn.maps.lookup_percpu(templates::map::GW_STATS, &Stat::SpoofedSource.index().to_le_bytes());
    let packets: u64 = stats
        .expect("stats")
        .expect("entry")
        .iter()
        .map(|v| u64::from_le_bytes(v[0..8].try_into().expect("8 bytes")))
        .sum();
    assert_eq!(packets, spoofed.len() as u64, "every one counted spoofed-source");
}

#[test]
fn the_manifest_wires_programs_slots_and_late_fields() {
    let w = common::example_world();
    let sc = scenario(&w);
    let a = node::verified_node(&sc.gateway, &Options::default(), Some(&w)).expect("gateway").into_artifact();
    let roles: BTreeMap<&str, (Option<AttachPoint>, Option<TailCallSlot>)> =
        a.manifest.programs.iter().map(|p| (p.name.as_str(), (p.attach, p.tail_call.clone()))).collect();
    assert_eq!(roles["egret_src"], (Some(AttachPoint::PodVethIngress), None));
    assert_eq!(roles["egret_tunnel_in"], (Some(AttachPoint::TunnelIngress), None));
    assert_eq!(roles["egret_gw_reply"], (Some(AttachPoint::EgressIngress), None));
    assert_eq!(roles["egret_gw_local"], (None, Some(TailCallSlot { map: tables::GW_PROGS.into(), index: 0 })));
    let image = |name: &str| a.manifest.maps.iter().find(|m| m.name == name).expect(name);
    assert!(image(tables::GW_PROGS).entries.is_empty(), "prog_array slots are the loader's");
    assert!(image(templates::map::LOCAL_EPS).entries.is_empty(), "veth ifindexes are node-local");
    let slots = image(templates::map::GW_SLOTS);
    assert_eq!(slots.entries.len(), sc.gateway.slots.len());
    let key = egret_bpf::artifact::hex(&sc.slot.to_le_bytes());
    let entry = slots.entries.iter().find(|e| e.key == key).expect("the slot's entry");
    assert_eq!(
        entry.late,
        vec![LateField {
            offset: 4,
            source: HoleSource::Ifindex { link: sc.interface.clone() },
            encoding: FieldEncoding::Le32
        }]
    );
    let allowed: usize =
        sc.gateway.gateway_tables.iter().map(|t| t.sources.iter().filter(|s| s.is_ipv4()).count()).sum();
    assert_eq!(image(templates::map::GW_ALLOWED).entries.len(), allowed);
    let holes: Vec<&str> = a.manifest.holes.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(holes, ["tunnel_ifindex", "mss_v4", "mss_v6"], "one %tunnel_ifindex source for both programs");
    assert_eq!(
        egret_compiler::codegen::mss::from_holes(&a.manifest.holes),
        Some(Ok(egret_compiler::codegen::mss::MssClamp::DEFAULT))
    );
}

#[test]
fn every_example_node_artifact_passes_the_equivalence_checker() {
    let w = common::example_world();
    let plans = common::plans(&w);
    assert!(plans.len() >= 3);
    for (name, plan) in &plans {
        let a = node::verified_node(plan, &Options::default(), Some(&w)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let programs = a.artifact().manifest.programs.len();
        assert_eq!(programs, if node::needs_gateway(plan) { 4 } else { 1 }, "{name}");
    }
}
