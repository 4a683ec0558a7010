//! Kernel tests of the gateway templates (privileged): every program loads
//! through the kernel verifier (aya 0.14, and libbpf via `bpftool prog
//! loadall`), and `BPF_PROG_TEST_RUN` on crafted packets gives the same
//! return code, output packet, counters and NAT tables as egret's
//! interpreter, step by step through one shared map state.
//!
//! Differences of `BPF_PROG_TEST_RUN` and how the tests bridge them:
//! - packets carry no tunnel metadata, so `egret_tunnel_in` is run with
//!   [`templates::with_test_tunnel_key`] (a prelude that sets the key; the
//!   kernel then reports `local_ipv4` as the remote), while the interpreter runs
//!   the shipped program with the same metadata as [`RunInput::tunnel`];
//! - redirects are not performed (R0 = `TC_ACT_REDIRECT` only), and R0 is 32
//!   bits (`TC_ACT_UNSPEC` reads 0xffffffff);
//! - `ktime_get_ns` is the machine's, so NAT values are compared without
//!   their timestamps and expiry is exercised with entries that expired at 1 ns
//!   or never expire.
//!
//! One test runs the probe loop for real: two network namespaces, a
//! collect-metadata VXLAN `egret0` on each, `egret_tunnel_in` attached with
//! `tc` on both; a UDP socket (python3) on the node sends the request, the
//! gateway's program answers, the node's program records the reply. Another
//! forwards a floating slot's packet for real: the gateway does not own the
//! slot, and the owner (a UDP socket on the VXLAN port) receives the
//! datagram with the slot's VNI and the inner frame unchanged.
//!
//! Without root or bpf these tests print one line and return; with
//! `EGRET_REQUIRE_PRIVILEGED=1` they fail instead (TESTING.md). Nothing is
//! pinned except in the bpftool test, whose private bpffs mount is removed by
//! an RAII guard and checked.

use egret_testkit::gateway as gateway_common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use aya::maps::{HashMap as AyaHashMap, PerCpuArray};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use egret_bpf::Program;
use egret_bpf::elf::verify_and_write;
use egret_bpf::interp::{MapStore, RunInput, run};
use egret_bpf::layout as l;
use egret_bpf::templates::probe::{self, Kind, Probe, ProbeRx};
use egret_bpf::templates::{self, GatewaySlot, NatKey, ReverseNat, Stat, Template, map, nat_hash, nat_port_candidates};
use gateway_common::*;

// ----- privileges (TESTING.md) -------------------------------------------------------

use egret_testkit::netns::Bpffs;
use egret_testkit::privileged as privileged_gate;
use privileged_gate::{privileged, skip_or_fail};

// ----- the kernel side ---------------------------------------------------------------

/// Name of the keyed `egret_tunnel_in` variant for (slot, sending node).
fn keyed_name(slot: u32, node: IpAddr) -> String {
    let node: String = node.to_string().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("keyed_{slot:x}_{node}")
}

/// The tunnel metadata combinations the test sequence uses.
const KEYED: [(u32, IpAddr); 14] = [
    (SLOT, IpAddr::V4(NODE_A)),
    (SLOT, IpAddr::V4(NODE_B)),
    (SLOT_UNKNOWN, IpAddr::V4(NODE_A)),
    (SLOT_NO_IP, IpAddr::V4(NODE_A)),
    (probe::VNI, IpAddr::V4(NODE_A)),
    (probe::VNI, IpAddr::V4(NODE_B)),
    (1, IpAddr::V4(NODE_A)),
    (FLOAT_SLOT, IpAddr::V4(NODE_A)),
    (FLOAT_SLOT, IpAddr::V4(PEER_GW)),
    (FLOAT_SLOT, IpAddr::V4(OTHER_GW)),
    (SLOT, IpAddr::V4(PEER_GW)),
    // a node with an IPv6 underlay address
    (SLOT, IpAddr::V6(NODE6)),
    (probe::VNI, IpAddr::V6(NODE6)),
    (FLOAT_SLOT, IpAddr::V6(NODE6)),
];

/// The object under test: the three templates as shipped, plus keyed
/// variants of `egret_tunnel_in`.
fn test_programs() -> Vec<Program> {
    let mut v: Vec<Program> = programs().into_values().collect();
    for (slot, node) in KEYED {
        let src = templates::with_test_tunnel_key(Template::TunnelIn, slot, node);
        let a = egret_bpf::asm::assemble(&keyed_name(slot, node), &src).expect("keyed variant assembles");
        v.push(filled(a.program));
    }
    v
}

fn object() -> Vec<u8> {
    verify_and_write(&test_programs(), &templates::maps(), "GPL").expect("verifies and writes")
}

fn put<const K: usize, const V: usize>(bpf: &mut aya::Ebpf, name: &str, key: &[u8], value: &[u8]) {
    let mut m: AyaHashMap<_, [u8; K], [u8; V]> =
        AyaHashMap::try_from(bpf.map_mut(name).unwrap_or_else(|| panic!("map {name}"))).expect("hash map");
    let k: [u8; K] = key.try_into().expect("key size");
    let v: [u8; V] = value.try_into().expect("value size");
    m.insert(k, v, 0).unwrap_or_else(|e| panic!("{name}: insert: {e}"));
}

fn kernel_update(bpf: &mut aya::Ebpf, name: &str, key: &[u8], value: &[u8]) {
    // every (key, value) layout of a map the tests fill
    macro_rules! sized {
        ($(($k:path, $v:path)),* $(,)?) => {
            $( if (key.len(), value.len()) == ($k, $v) {
                return put::<{ $k }, { $v }>(bpf, name, key, value);
            } )*
        };
    }

    sized!(
        (l::slot::SIZE, l::gw_slot::SIZE),
        (l::slot::SIZE, l::float_owner::SIZE),
        (l::allowed_key::SIZE, l::allowed::SIZE),
        (l::allowed_key6::SIZE, l::allowed::SIZE),
        (l::peer_key::SIZE, l::peer::SIZE),
        (l::pod_addr::SIZE, l::local_ep::SIZE),
        (l::pod_addr6::SIZE, l::local_ep::SIZE),
        (l::nat_key::SIZE, l::forward_nat::SIZE),
        (l::nat_key::SIZE, l::reverse_nat::SIZE),
        (l::nat_key6::SIZE, l::forward_nat6::SIZE),
        (l::nat_key6::SIZE, l::reverse_nat6::SIZE),
        (l::node_addr::SIZE, l::probe_rx::SIZE),
    );
    panic!("{name}: no entry layout {}+{}", key.len(), value.len());
}

fn kernel_entries<const K: usize, const V: usize>(bpf: &aya::Ebpf, name: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let m: AyaHashMap<_, [u8; K], [u8; V]> =
        AyaHashMap::try_from(bpf.map(name).unwrap_or_else(|| panic!("map {name}"))).expect("hash map");
    m.iter().map(|r| r.expect("entry")).map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fn kernel_stat(bpf: &aya::Ebpf, s: Stat) -> (u64, u64) {
    let a: PerCpuArray<_, [u8; 16]> = PerCpuArray::try_from(bpf.map(map::GW_STATS).expect("stats")).expect("per-cpu");
    a.get(&s.index(), 0).expect("get").iter().fold((0, 0), |(p, b), v| {
        (
            p + u64::from_le_bytes(v[0..8].try_into().expect("8")),
            b + u64::from_le_bytes(v[8..16].try_into().expect("8")),
        )
    })
}

/// One step of a test sequence.
#[derive(Debug, Clone)]
enum Via {
    /// egret0 ingress with this tunnel metadata.
    Tunnel(u32, IpAddr),
    /// egret_gw_local with this slot in cb[0].
    Local(u32),
    /// egress interface ingress.
    Reply,
    /// egret0 ingress without tunnel metadata (the shipped `egret_tunnel_in`).
    NoKey,
}

struct Bench {
    bpf: aya::Ebpf,
    interp: MapStore,
    programs: BTreeMap<Template, Program>,
    steps: usize,
}

impl Bench {
    fn new(entries: &[(&'static str, Vec<u8>, Vec<u8>)]) -> Bench {
        let mut bpf = aya::Ebpf::load(&object()).unwrap_or_else(|e| panic!("aya loads the gateway object: {e}"));
        let names: Vec<String> = bpf.programs().map(|(n, _)| n.to_owned()).collect();
        for n in &names {
            let p: &mut SchedClassifier = bpf.program_mut(n).expect("program").try_into().expect("classifier");
            p.load().unwrap_or_else(|e| panic!("the kernel verifier accepts {n}: {e:?}"));
        }
        let mut interp = MapStore::new(&templates::maps());
        for (m, k, v) in entries {
            kernel_update(&mut bpf, m, k, v);
            interp.update(m, k, v, 0).expect("fill");
        }
        Bench { bpf, interp, programs: programs(), steps: 0 }
    }

    fn update_both(&mut self, m: &str, k: &[u8], v: &[u8]) {
        kernel_update(&mut self.bpf, m, k, v);
        self.interp.update(m, k, v, 0).expect("update");
    }

    /// Runs `frame` in the kernel and in the interpreter; asserts the same
    /// verdict and packet; returns (R0 as 32 bits, output packet).
    fn step(&mut self, via: &Via, frame: &[u8]) -> (u32, Vec<u8>) {
        let (prog_name, template) = match via {
            Via::Tunnel(slot, node) => (keyed_name(*slot, *node), Template::TunnelIn),
            Via::Local(_) => (Template::GwLocal.name().to_owned(), Template::GwLocal),
            Via::Reply => (Template::GwReply.name().to_owned(), Template::GwReply),
            Via::NoKey => (Template::TunnelIn.name().to_owned(), Template::TunnelIn),
        };
        let mut input = RunInput::for_frame(frame);
        input.ktime_ns = 1_000_000_000;
        let mut ctx = [0u8; 192];
        match via {
            Via::Tunnel(slot, node) => input.tunnel = Some(tunnel_key(*slot, *node)),
            Via::Local(slot) => {
                input.skb.cb[0] = *slot;
                ctx[48..52].copy_from_slice(&slot.to_le_bytes());
            }
            Via::Reply | Via::NoKey => {}
        }
        let prog: &mut SchedClassifier =
            self.bpf.program_mut(&prog_name).expect("program").try_into().expect("classifier");
        let mut out = vec![0u8; frame.len() + 64];
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: matches!(via, Via::Local(_)).then_some(&ctx[..]),
                ..TestRunOptions::default()
            })
            .unwrap_or_else(|e| panic!("{prog_name}: test_run: {e:?}"));
        out.truncate(res.data_size_out as usize);
        let ours = run(&self.programs[&template], &mut self.interp, &input)
            .unwrap_or_else(|e| panic!("{prog_name}: interpreter: {e}"));
        assert_eq!(
            u64::from(res.return_value),
            ours.r0 & 0xffff_ffff,
            "step {}: {prog_name}: R0 differs on {frame:02x?}",
            self.steps
        );
        assert_eq!(out, ours.packet, "step {}: {prog_name}: packet differs", self.steps);
        self.steps += 1;
        (res.return_value, out)
    }

    /// Counters and NAT tables agree (NAT values without timestamps).
    fn assert_same_state(&self) {
        for s in Stat::ALL {
            assert_eq!(kernel_stat(&self.bpf, s), stat_of(&self.interp, s), "counter {}", s.name());
        }
        let ours = |m: &str| -> BTreeMap<Vec<u8>, Vec<u8>> {
            self.interp
                .keys(m)
                .expect("keys")
                .into_iter()
                .map(|k| {
                    let v = self.interp.lookup(m, &k).expect("lookup").expect("present");
                    (k, v)
                })
                .collect()
        };
        // the kernel's and the interpreter's clocks differ: compare without the
        // times (the fields both families share)
        use egret_bpf::layout::{forward_nat, reverse_nat};
        let without_times = |forward: bool, v: &[u8]| {
            let mut v = v.to_vec();
            let times = if forward {
                [forward_nat::CREATED, forward_nat::LAST_SEEN]
            } else {
                [reverse_nat::LAST_SEEN, reverse_nat::EXPIRES]
            };
            for f in times {
                f.put(&mut v, 0);
            }
            v
        };
        let tables = [
            (
                map::NAT_V4,
                true,
                kernel_entries::<{ l::nat_key::SIZE }, { l::forward_nat::SIZE }>(&self.bpf, map::NAT_V4),
            ),
            (
                map::RNAT_V4,
                false,
                kernel_entries::<{ l::nat_key::SIZE }, { l::reverse_nat::SIZE }>(&self.bpf, map::RNAT_V4),
            ),
            (
                map::NAT_V6,
                true,
                kernel_entries::<{ l::nat_key6::SIZE }, { l::forward_nat6::SIZE }>(&self.bpf, map::NAT_V6),
            ),
            (
                map::RNAT_V6,
                false,
                kernel_entries::<{ l::nat_key6::SIZE }, { l::reverse_nat6::SIZE }>(&self.bpf, map::RNAT_V6),
            ),
        ];
        for (name, forward, kernel) in &tables {
            let strip = |m: &BTreeMap<Vec<u8>, Vec<u8>>| {
                m.iter().map(|(k, v)| (k.clone(), without_times(*forward, v))).collect::<Vec<_>>()
            };
            assert_eq!(strip(kernel), strip(&ours(name)), "{name}");
        }
        let mappings: usize = tables.iter().map(|(_, _, k)| k.len()).sum();
        assert!(mappings > 0, "the sequence created mappings");
    }
}

fn key_of(p: &Pkt) -> NatKey {
    p.nat_key()
}

fn from_server(dst_port: u16, l4: impl Fn(u16) -> L4) -> Pkt {
    Pkt { src: SERVER.into(), dst: EGRESS_IP.into(), ttl: 50, frag: 0, options: Vec::new(), l4: l4(dst_port) }
}

#[test]
fn every_template_loads_through_the_kernel_verifier() {
    if !privileged("every_template_loads_through_the_kernel_verifier") {
        return;
    }
    let bytes = verify_and_write(&programs().into_values().collect::<Vec<_>>(), &templates::maps(), "GPL")
        .expect("verifies and writes");
    let mut bpf = aya::Ebpf::load(&bytes).unwrap_or_else(|e| panic!("aya loads the gateway object: {e}"));
    let mut loaded = Vec::new();
    for t in Template::ALL {
        let p: &mut SchedClassifier = bpf.program_mut(t.name()).expect("program").try_into().expect("classifier");
        p.load().unwrap_or_else(|e| panic!("the kernel verifier accepts {}: {e:?}", t.name()));
        loaded.push(t.name());
    }
    assert_eq!(loaded, ["egret_tunnel_in", "egret_gw_local", "egret_gw_reply"]);
}

#[test]
fn test_run_agrees_with_the_interpreter_through_a_session() {
    if !privileged("test_run_agrees_with_the_interpreter_through_a_session") {
        return;
    }
    let mut b = Bench::new(&gateway_entries());
    let tun_a = Via::Tunnel(SLOT, NODE_A.into());

    // TCP: SYN out, SYN-ACK back through the tunnel, data, FIN both ways
    let syn = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN);
    let (r0, out) = b.step(&tun_a, &syn.frame());
    assert_eq!(u64::from(r0), REDIRECT);
    let port = parse(&out).sport;
    assert_eq!(port, nat_port_candidates(&key_of(&syn))[0]);
    let tcp_back = |flags| from_server(port, move |p| L4::Tcp { sport: 443, dport: p, flags });
    let (r0, back) = b.step(&Via::Reply, &tcp_back(SYN | ACK).frame());
    assert_eq!(u64::from(r0), REDIRECT);
    let back = parse(&back);
    assert_eq!(
        (back.dst, back.dport, back.ip_csum_ok, back.l4_csum_ok),
        (IpAddr::from(POD_A), 40000, true, Some(true))
    );
    // a router's fragmentation-needed about the SYN: translated back the same way
    let router = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 254));
    let (r0, err) = b.step(&Via::Reply, &icmp_error_about(&out, router, 3, 4, 1300, 28).frame());
    assert_eq!(u64::from(r0), REDIRECT);
    assert_eq!((inner_of_error(&err).src, inner_of_error(&err).sport), (IpAddr::from(POD_A), 40000));
    assert!(inner_of_error(&err).ip_csum_ok && parse(&err).ip_csum_ok && parse(&err).l4_csum_ok == Some(true));
    b.step(&tun_a, &Pkt::tcp(POD_A, 40000, SERVER, 443, ACK | PSH).frame());
    b.step(&Via::Reply, &tcp_back(ACK).frame());
    b.step(&tun_a, &Pkt::tcp(POD_A, 40000, SERVER, 443, FIN | ACK).frame());
    b.step(&Via::Reply, &tcp_back(FIN | ACK).frame());

    // UDP with and without checksum, ICMP echo, from both nodes
    for (via, p) in [
        (tun_a.clone(), Pkt::udp(POD_A2, 5353, SERVER, 53)),
        (Via::Tunnel(SLOT, NODE_B.into()), Pkt::udp(POD_B, 5353, SERVER, 53)),
        (
            tun_a.clone(),
            Pkt { l4: L4::Udp { sport: 6000, dport: 53, csum: false }, ..Pkt::udp(POD_A, 6000, SERVER, 53) },
        ),
        (Via::Tunnel(SLOT, NODE_B.into()), Pkt::icmp(POD_B, SERVER, 8, 0x4242)),
        (Via::Local(SLOT), Pkt::tcp(POD_LOCAL, 40000, SERVER, 443, SYN)),
        (Via::Local(SLOT), Pkt::icmp(POD_LOCAL, SERVER, 8, 77)),
        (Via::Tunnel(SLOT, NODE_B.into()), Pkt::udp(POD_ANY, 1, SERVER, 53)),
        (tun_a.clone(), Pkt { frag: 0x2000, ..Pkt::udp(POD_A, 7000, SERVER, 53) }),
        (
            tun_a.clone(),
            Pkt { options: vec![0x94, 0x04, 0, 0, 1, 1, 1, 0], ..Pkt::tcp(POD_A, 40003, SERVER, 443, SYN) },
        ),
    ] {
        let (r0, out) = b.step(&via, &p.frame());
        assert_eq!(u64::from(r0), REDIRECT, "{p:?}");
        let got = parse(&out);
        assert!(got.ip_csum_ok && got.l4_csum_ok != Some(false), "{p:?}");
        let l4 = match p.l4 {
            L4::Tcp { dport, .. } => L4::Tcp { sport: dport, dport: got.sport, flags: SYN | ACK },
            L4::Udp { dport, csum, .. } => L4::Udp { sport: dport, dport: got.sport, csum },
            L4::Icmp { .. } => L4::Icmp { ty: 0, id: got.sport, seq: 7 },
            L4::Other { .. } | L4::IcmpError { .. } => unreachable!("only translated protocols here"),
        };
        let (r0, back) = b.step(&Via::Reply, &from_server(got.sport, |_| l4.clone()).frame());
        assert_eq!(u64::from(r0), REDIRECT);
        assert_eq!(parse(&back).dst, p.src);
    }

    // drops: spoofing, slots, TTL, fail-closed protocols, no metadata
    for (via, f, want) in [
        (tun_a.clone(), Pkt::udp(POD_NOT_ALLOWED, 1, SERVER, 53).frame(), Stat::SpoofedSource),
        (Via::Tunnel(SLOT, NODE_B.into()), Pkt::udp(POD_A, 1, SERVER, 53).frame(), Stat::SpoofedSource),
        (tun_a.clone(), Pkt::udp(POD_LOCAL, 1, SERVER, 53).frame(), Stat::SpoofedSource),
        (Via::Local(SLOT), Pkt::udp(POD_A, 1, SERVER, 53).frame(), Stat::SpoofedSource),
        (Via::Local(SLOT), Pkt::udp(POD_LOCAL2, 1, SERVER, 53).frame(), Stat::SpoofedSource),
        (Via::Tunnel(SLOT_UNKNOWN, NODE_A.into()), Pkt::udp(POD_A, 1, SERVER, 53).frame(), Stat::NoEgressIp),
        (Via::Tunnel(SLOT_NO_IP, NODE_A.into()), Pkt::udp(POD_A, 1, SERVER, 53).frame(), Stat::NoEgressIp),
        (tun_a.clone(), Pkt::tcp(POD_A, 40009, SERVER, 443, SYN).ttl(1).frame(), Stat::TtlExceeded),
        (tun_a.clone(), arp_frame(), Stat::NotIp),
        (tun_a.clone(), Pkt::icmp(POD_A, SERVER, 3, 0).frame(), Stat::UnsupportedProto),
        (
            tun_a.clone(),
            Pkt { l4: L4::Other { proto: 47, payload: vec![0; 24] }, ..Pkt::udp(POD_A, 1, SERVER, 53) }.frame(),
            Stat::UnsupportedProto,
        ),
        (tun_a.clone(), Pkt { frag: 0x00b9, ..Pkt::udp(POD_A, 1, SERVER, 53) }.frame(), Stat::Fragment),
    ] {
        let before = kernel_stat(&b.bpf, want).0;
        let (r0, out) = b.step(&via, &f);
        assert_eq!((u64::from(r0), out), (SHOT, f), "{}", want.name());
        assert_eq!(kernel_stat(&b.bpf, want).0, before + 1, "{}", want.name());
    }

    // a reply for a pod of this node that arrives through the tunnel: delivery
    let delivery = Pkt {
        src: SERVER.into(),
        dst: POD_LOCAL.into(),
        ttl: 49,
        frag: 0,
        options: Vec::new(),
        l4: L4::Udp { sport: 53, dport: 5353, csum: true },
    };
    let (r0, out) = b.step(&tun_a, &delivery.frame());
    assert_eq!((u64::from(r0), out), (REDIRECT, delivery.frame()));

    // the host's own traffic on the egress interface
    for f in [
        arp_frame(),
        from_server(22, |p| L4::Tcp { sport: 50000, dport: p, flags: SYN }).frame(),
        from_server(port, |p| L4::Udp { sport: 443, dport: p, csum: true }).frame(),
        from_server(port, |p| L4::Icmp { ty: 8, id: p, seq: 1 }).frame(),
        from_server(0, |_| L4::Icmp { ty: 3, id: 0, seq: 0 }).frame(),
        Pkt { frag: 0x0010, ..tcp_back(ACK) }.frame(),
    ] {
        let (r0, out) = b.step(&Via::Reply, &f);
        assert_eq!((r0, out), (u32::MAX, f), "TC_ACT_UNSPEC, untouched");
    }
    b.assert_same_state();
    println!("{} steps identical in the kernel and the interpreter", b.steps);
}

#[test]
fn test_run_agrees_with_the_interpreter_on_an_ipv6_underlay() {
    if !privileged("test_run_agrees_with_the_interpreter_on_an_ipv6_underlay") {
        return;
    }
    let mut b = Bench::new(&gateway_entries());
    let tun6 = Via::Tunnel(SLOT, NODE6.into());
    // both inner families from a node whose tunnel remote is IPv6: the kernel's
    // bpf_skb_get_tunnel_key refuses the IPv4 call, the IPv6 one names the node
    for (p, egress) in [
        (Pkt::tcp(POD_U, 40000, SERVER, 443, SYN), IpAddr::from(EGRESS_IP)),
        (Pkt::udp(POD_U6, 5353, SERVER6, 53), IpAddr::from(EGRESS_IP6)),
    ] {
        let (r0, out) = b.step(&tun6, &p.frame());
        assert_eq!(u64::from(r0), REDIRECT, "{p:?}");
        let got = parse(&out);
        assert_eq!((got.src, got.l4_csum_ok), (egress, Some(true)), "{p:?}");
        let l4 = match p.l4 {
            L4::Tcp { dport, .. } => L4::Tcp { sport: dport, dport: got.sport, flags: SYN | ACK },
            L4::Udp { dport, csum, .. } => L4::Udp { sport: dport, dport: got.sport, csum },
            _ => unreachable!("TCP and UDP here"),
        };
        let reply = Pkt { src: got.dst, dst: got.src, ttl: 50, frag: 0, options: Vec::new(), l4 };
        let (r0, back) = b.step(&Via::Reply, &reply.frame());
        assert_eq!(u64::from(r0), REDIRECT, "tunnelled back: {p:?}");
        assert_eq!(parse(&back).dst, p.src);
    }
    // the node is one address: an IPv4 node's pod from it, and its pod from an IPv4 node, are spoofed
    for (via, f) in [
        (tun6.clone(), Pkt::udp(POD_A, 1, SERVER, 53).frame()),
        (Via::Tunnel(SLOT, NODE_A.into()), Pkt::udp(POD_U, 1, SERVER, 53).frame()),
    ] {
        assert_eq!(u64::from(b.step(&via, &f).0), SHOT);
    }
    // a probe over the IPv6 underlay is answered; a floating slot owned by a
    // gateway with an IPv6 underlay is forwarded
    let (r0, _) = b.step(&Via::Tunnel(probe::VNI, NODE6.into()), &probe_request(3, NODE_A, 1).frame());
    assert_eq!(u64::from(r0), REDIRECT);
    let (m, k, v) = float_owner(Some(OTHER_GW6));
    b.update_both(m, &k, &v);
    let f = Pkt::tcp(POD_U, 40000, SERVER, 443, SYN).frame();
    assert_eq!(b.step(&Via::Tunnel(FLOAT_SLOT, NODE6.into()), &f), (REDIRECT as u32, f));
    // the reverse entries (the node's 16 bytes included) are the same in both
    b.assert_same_state();
    assert_eq!(
        (kernel_stat(&b.bpf, Stat::SpoofedSource).0, kernel_stat(&b.bpf, Stat::Forwarded).0),
        (2, 1),
        "counted as the interpreter counts"
    );
}

#[test]
fn test_run_agrees_with_the_interpreter_on_ipv6() {
    if !privileged("test_run_agrees_with_the_interpreter_on_ipv6") {
        return;
    }
    let mut b = Bench::new(&gateway_entries());
    let tun_a = Via::Tunnel(SLOT, NODE_A.into());
    let from_server6 =
        |l4: L4| Pkt { src: SERVER6.into(), dst: EGRESS_IP6.into(), ttl: 50, frag: 0, options: Vec::new(), l4 };

    // TCP: SYN out, SYN-ACK back through the tunnel, data, FIN both ways
    let syn = Pkt::tcp(POD_A6, 40000, SERVER6, 443, SYN);
    let (r0, out) = b.step(&tun_a, &syn.frame());
    assert_eq!(u64::from(r0), REDIRECT);
    let got = parse(&out);
    assert_eq!((got.src, got.ttl, got.l4_csum_ok), (IpAddr::from(EGRESS_IP6), 63, Some(true)));
    let port = got.sport;
    assert_eq!(port, nat_port_candidates(&syn.nat_key::<std::net::Ipv6Addr>())[0]);
    let tcp_back = |flags| from_server6(L4::Tcp { sport: 443, dport: port, flags });
    let (r0, back) = b.step(&Via::Reply, &tcp_back(SYN | ACK).frame());
    assert_eq!(u64::from(r0), REDIRECT);
    let back = parse(&back);
    assert_eq!((back.dst, back.dport, back.l4_csum_ok), (IpAddr::from(POD_A6), 40000, Some(true)));
    // packet too big, time exceeded about it: translated back
    let router6: IpAddr = "2001:db8:113::fe".parse().expect("v6");
    for (ty, code) in [(2, 0), (3, 0)] {
        let (r0, err) = b.step(&Via::Reply, &icmp_error_about(&out, router6, ty, code, 1280, 48).frame());
        assert_eq!(u64::from(r0), REDIRECT);
        assert_eq!(parse(&err).l4_csum_ok, Some(true));
        assert_eq!(inner_of_error(&err).src, IpAddr::from(POD_A6));
    }
    b.step(&tun_a, &Pkt::tcp(POD_A6, 40000, SERVER6, 443, ACK | PSH).frame());
    b.step(&Via::Reply, &tcp_back(ACK).frame());
    b.step(&tun_a, &Pkt::tcp(POD_A6, 40000, SERVER6, 443, FIN | ACK).frame());
    b.step(&Via::Reply, &tcp_back(FIN | ACK).frame());

    // UDP, ICMPv6 echo, from both nodes and from a pod of the gateway itself
    for (via, p) in [
        (tun_a.clone(), Pkt::udp(POD_A6, 5353, SERVER6, 53)),
        (Via::Tunnel(SLOT, NODE_B.into()), Pkt::udp(POD_B6, 5353, SERVER6, 53)),
        (Via::Tunnel(SLOT, NODE_B.into()), Pkt::icmp(POD_B6, SERVER6, ICMP6_ECHO, 0x4242)),
        (Via::Local(SLOT), Pkt::tcp(POD_LOCAL6, 40000, SERVER6, 443, SYN)),
        (Via::Local(SLOT), Pkt::icmp(POD_LOCAL6, SERVER6, ICMP6_ECHO, 77)),
    ] {
        let (r0, out) = b.step(&via, &p.frame());
        assert_eq!(u64::from(r0), REDIRECT, "{p:?}");
        let got = parse(&out);
        assert_eq!((got.src, got.l4_csum_ok), (IpAddr::from(EGRESS_IP6), Some(true)), "{p:?}");
        let l4 = match p.l4 {
            L4::Tcp { dport, .. } => L4::Tcp { sport: dport, dport: got.sport, flags: SYN | ACK },
            L4::Udp { dport, csum, .. } => L4::Udp { sport: dport, dport: got.sport, csum },
            L4::Icmp { .. } => L4::Icmp { ty: ICMP6_ECHO_REPLY, id: got.sport, seq: 7 },
            L4::Other { .. } | L4::IcmpError { .. } => unreachable!("only translated protocols here"),
        };
        let (r0, back) = b.step(&Via::Reply, &from_server6(l4).frame());
        assert_eq!(u64::from(r0), REDIRECT);
        let back = parse(&back);
        assert_eq!((back.dst, back.l4_csum_ok), (p.src, Some(true)), "{p:?}");
    }

    // drops
    let ext = |next: u8| {
        let mut p = Pkt::udp(POD_A6, 1, SERVER6, 53);
        p.options = vec![17, 0, 0, 0, 0, 0, 0, 0];
        let mut f = p.frame();
        f[20] = next;
        f
    };
    for (via, f, want) in [
        (tun_a.clone(), Pkt::udp(POD_NOT_ALLOWED6, 1, SERVER6, 53).frame(), Stat::SpoofedSource),
        (Via::Tunnel(SLOT, NODE_B.into()), Pkt::udp(POD_A6, 1, SERVER6, 53).frame(), Stat::SpoofedSource),
        (Via::Local(SLOT), Pkt::udp(POD_A6, 1, SERVER6, 53).frame(), Stat::SpoofedSource),
        (Via::Tunnel(SLOT_NO_IP, NODE_A.into()), Pkt::udp(POD_A6, 1, SERVER6, 53).frame(), Stat::NoEgressIp),
        (tun_a.clone(), Pkt::tcp(POD_A6, 40009, SERVER6, 443, SYN).ttl(1).frame(), Stat::TtlExceeded),
        (tun_a.clone(), Pkt::icmp(POD_A6, SERVER6, 1, 0).frame(), Stat::UnsupportedProto),
        (tun_a.clone(), ext(0), Stat::UnsupportedProto),
        (tun_a.clone(), ext(44), Stat::Fragment),
    ] {
        let before = kernel_stat(&b.bpf, want).0;
        let (r0, out) = b.step(&via, &f);
        assert_eq!((u64::from(r0), out), (SHOT, f), "{}", want.name());
        assert_eq!(kernel_stat(&b.bpf, want).0, before + 1, "{}", want.name());
    }

    // a reply for an IPv6 pod of this node through the tunnel: delivery
    let delivery = Pkt::udp(SERVER6, 53, POD_LOCAL6, 5353);
    let (r0, out) = b.step(&tun_a, &delivery.frame());
    assert_eq!((u64::from(r0), out), (REDIRECT, delivery.frame()));

    // the host's own IPv6 traffic on the egress interface
    for f in [
        from_server6(L4::Tcp { sport: 50000, dport: 22, flags: SYN }).frame(),
        from_server6(L4::Icmp { ty: 135, id: 0, seq: 0 }).frame(),
        from_server6(L4::Icmp { ty: ICMP6_ECHO, id: port, seq: 1 }).frame(),
    ] {
        let (r0, out) = b.step(&Via::Reply, &f);
        assert_eq!((r0, out), (u32::MAX, f), "TC_ACT_UNSPEC, untouched");
    }
    b.assert_same_state();
    println!("{} IPv6 steps identical in the kernel and the interpreter", b.steps);
}

#[test]
fn test_run_agrees_on_port_allocation_collisions_expiry_and_exhaustion() {
    if !privileged("test_run_agrees_on_port_allocation_collisions_expiry_and_exhaustion") {
        return;
    }
    let mut b = Bench::new(&gateway_entries());
    let tun_a = Via::Tunnel(SLOT, NODE_A.into());
    // 17 flows of one hash bucket
    let mut bucket: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
    let flows: Vec<Pkt> = (1024..=u16::MAX)
        .find_map(|sport| {
            let k = NatKey { src: POD_A, dst: SERVER, sport, dport: 443, proto: TCP };
            let v = bucket.entry(nat_hash(&k) % templates::NAT_PORT_COUNT).or_default();
            v.push(sport);
            (v.len() == templates::NAT_PROBES + 1)
                .then(|| v.iter().map(|p| Pkt::tcp(POD_A, *p, SERVER, 443, SYN)).collect())
        })
        .expect("a full bucket");
    let candidates = nat_port_candidates(&key_of(&flows[0]));
    // candidate 0 holds an entry that expired long ago (1 ns): free;
    // candidate 1 one that never expires: busy
    let stale = |orig: Ipv4Addr, expires_ns| ReverseNat {
        orig_src: orig,
        node: NODE_B.into(),
        slot: SLOT,
        orig_sport: 1,
        flags: 0,
        last_seen_ns: 0,
        expires_ns,
    };
    let rkey = |port| NatKey { src: EGRESS_IP, dst: SERVER, sport: port, dport: 443, proto: TCP }.to_bytes();
    b.update_both(map::RNAT_V4, &rkey(candidates[0]), &stale(POD_B, 1).to_bytes());
    b.update_both(map::RNAT_V4, &rkey(candidates[1]), &stale(POD_B, u64::MAX).to_bytes());
    let mut ports = Vec::new();
    for f in &flows[..templates::NAT_PROBES - 1] {
        let (r0, out) = b.step(&tun_a, &f.frame());
        assert_eq!(u64::from(r0), REDIRECT);
        ports.push(parse(&out).sport);
    }
    let mut want: Vec<u16> = candidates.iter().copied().filter(|p| *p != candidates[1]).collect();
    assert_eq!(ports, want, "expired candidate reused, busy one skipped, the rest in order");
    want.sort_unstable();
    want.dedup();
    assert_eq!(want.len(), templates::NAT_PROBES - 1, "distinct");
    // the bucket is full now
    for f in &flows[templates::NAT_PROBES - 1..] {
        let (r0, _) = b.step(&tun_a, &f.frame());
        assert_eq!(u64::from(r0), SHOT);
    }
    assert_eq!(kernel_stat(&b.bpf, Stat::NatPortsExhausted).0, 2);
    // each flow keeps its port
    for (f, p) in flows.iter().zip(&ports) {
        assert_eq!(parse(&b.step(&tun_a, &f.frame()).1).sport, *p);
    }
    b.assert_same_state();
}

/// A temporary object file, removed on drop.
struct TempObject(PathBuf);

impl Drop for TempObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn libbpf_loads_the_templates_too() {
    if !privileged("libbpf_loads_the_templates_too") {
        return;
    }
    let Some(bpftool) =
        ["/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool"].into_iter().find(|p| Path::new(p).exists())
    else {
        skip_or_fail("libbpf_loads_the_templates_too", "bpftool is missing (apt-get install -y bpftool)");
        return;
    };
    let fs = Bpffs::new("gw");
    let run = |args: &[&str]| {
        let out = Command::new(bpftool).args(args).output().expect("bpftool runs");
        assert!(out.status.success(), "bpftool {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // each template alone, then all three in one object: plain `prog loadall`,
    // no `type` (libbpf guesses sched_cls from the section name `classifier`)
    let mut objects: Vec<(String, Vec<Program>)> =
        programs().into_iter().map(|(t, p)| (t.name().to_owned(), vec![p])).collect();
    objects.push(("all".to_owned(), programs().into_values().collect()));
    for (name, progs) in &objects {
        let bytes = verify_and_write(progs, &templates::maps(), "GPL").expect("verifies and writes");
        let obj = TempObject(std::env::temp_dir().join(format!("egret-gw-{name}-{}.o", std::process::id())));
        std::fs::write(&obj.0, &bytes).expect("write object");
        let pins = fs.mount_point().join("progs");
        let maps = fs.mount_point().join("maps");
        let (p, m) = (pins.to_string_lossy().into_owned(), maps.to_string_lossy().into_owned());
        run(&["prog", "loadall", &obj.0.to_string_lossy(), &p, "pinmaps", &m]);
        let mut names: Vec<String> = std::fs::read_dir(&pins)
            .expect("pin dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<&str> = progs.iter().map(|p| p.name.as_str()).collect();
        want.sort_unstable();
        assert_eq!(names, want, "{name}");
        let show = run(&["prog", "show", "pinned", &pins.join(&names[0]).to_string_lossy()]);
        assert!(show.contains("sched_cls"), "{name}: {show}");
        // BTF key/value types: bpftool prints an entry's fields by name
        let slots = maps.join(templates::map::GW_SLOTS).to_string_lossy().into_owned();
        let entry = GatewaySlot {
            slot: 7,
            egress_ip: Ipv4Addr::new(198, 51, 100, 9),
            egress_ip6: std::net::Ipv6Addr::UNSPECIFIED,
            egress_ifindex: 3,
            floating: true,
        };
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x}")).collect::<Vec<_>>();
        let mut args = vec!["map".to_owned(), "update".into(), "pinned".into(), slots.clone(), "key".into()];
        args.extend(hex(&entry.key()));
        args.push("value".into());
        args.extend(hex(&entry.value()));
        run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let dump = run(&["-j", "map", "dump", "pinned", &slots]);
        let json: serde_json::Value = serde_json::from_str(&dump).expect("bpftool prints JSON");
        let formatted = &json[0]["formatted"];
        assert_eq!(formatted["key"]["slot"], 7, "{name}: {dump}");
        assert_eq!(formatted["value"]["ifindex"], 3, "{name}: {dump}");
        assert_eq!(formatted["value"]["flags"], 1, "{name}: {dump}");
        assert!(formatted["value"]["egress_ip"].is_number(), "{name}: {dump}");
        let nat = run(&["-j", "map", "show", "pinned", &maps.join(templates::map::NAT_V4).to_string_lossy()]);
        assert!(nat.contains("\"btf_id\""), "{name}: maps carry BTF: {nat}");
        for n in &names {
            std::fs::remove_file(pins.join(n)).expect("unpin");
        }
        std::fs::remove_dir(&pins).expect("remove pin dir");
        for e in std::fs::read_dir(&maps).expect("map pins").filter_map(Result::ok) {
            std::fs::remove_file(e.path()).expect("unpin map");
        }
        std::fs::remove_dir(&maps).expect("remove map pin dir");
    }
    assert!(fs.entries().is_empty(), "{:?}", fs.entries());
    let dir = fs.mount_point().to_path_buf();
    drop(fs);
    assert!(!egret_testkit::netns::mounted(&dir) && !dir.exists(), "{} left behind", dir.display());
}

/// A stand-in for the source classifier's local-egress verdict: puts the slot
/// in `skb->cb[0]` and tail-calls index [`templates::GW_LOCAL_PROG_INDEX`] of
/// its `PROG_ARRAY`; returns `TC_ACT_SHOT` if the slot is empty.
const LOCAL_EGRESS_CALLER: &str = "
.map test_gw_progs, prog_array, key_size=4, value_size=4, max_entries=1
    r6 = r1
    w1 = %slot
    *(u32 *)(r6 + 48) = r1          // skb->cb[0] = slot
    r1 = r6
    r2 = map[test_gw_progs] ll
    r3 = 0                          // GW_LOCAL_PROG_INDEX
    call tail_call
    r0 = 2                          // empty slot: drop
    exit
";

#[test]
fn a_tail_call_with_the_slot_in_cb0_reaches_egret_gw_local() {
    if !privileged("a_tail_call_with_the_slot_in_cb0_reaches_egret_gw_local") {
        return;
    }
    assert_eq!(templates::GW_LOCAL_PROG_INDEX, 0, "the caller below uses index 0");
    let caller = egret_bpf::asm::assemble("local_egress_caller", LOCAL_EGRESS_CALLER).expect("assembles");
    let mut caller_prog = caller.program;
    caller_prog.fill_hole("slot", i64::from(SLOT)).expect("fills");
    let mut maps = templates::maps();
    maps.extend(caller.maps);
    let gw_local = programs().remove(&Template::GwLocal).expect("egret_gw_local");
    let bytes = verify_and_write(&[caller_prog, gw_local.clone()], &maps, "GPL").expect("verifies and writes");
    let mut bpf = aya::Ebpf::load(&bytes).unwrap_or_else(|e| panic!("aya loads: {e}"));
    for n in ["local_egress_caller", "egret_gw_local"] {
        let p: &mut SchedClassifier = bpf.program_mut(n).expect("program").try_into().expect("classifier");
        p.load().unwrap_or_else(|e| panic!("{n}: {e:?}"));
    }
    let mut interp = MapStore::new(&templates::maps());
    for (m, k, v) in gateway_entries() {
        kernel_update(&mut bpf, m, &k, &v);
        interp.update(m, &k, &v, 0).expect("fill");
    }
    let frame = Pkt::tcp(POD_LOCAL, 40000, SERVER, 443, SYN).frame();
    let run_caller = |bpf: &mut aya::Ebpf| {
        let p: &mut SchedClassifier =
            bpf.program_mut("local_egress_caller").expect("program").try_into().expect("classifier");
        let mut out = vec![0u8; frame.len() + 64];
        let res = p
            .test_run(TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..TestRunOptions::default() })
            .expect("test_run");
        out.truncate(res.data_size_out as usize);
        (res.return_value, out)
    };
    // empty PROG_ARRAY: the caller falls through
    assert_eq!(run_caller(&mut bpf), (2, frame.clone()));
    let fd = {
        let p: &mut SchedClassifier =
            bpf.program_mut("egret_gw_local").expect("program").try_into().expect("classifier");
        p.fd().expect("fd").try_clone().expect("dup fd")
    };
    let mut progs =
        aya::maps::ProgramArray::try_from(bpf.map_mut("test_gw_progs").expect("prog array")).expect("prog array");
    progs.set(templates::GW_LOCAL_PROG_INDEX, &fd, 0).expect("set");
    let (r0, out) = run_caller(&mut bpf);
    let mut input = RunInput::for_frame(&frame);
    input.skb.cb[0] = SLOT;
    let ours = run(&gw_local, &mut interp, &input).expect("interpreter");
    assert_eq!((u64::from(r0), &out), (ours.r0, &ours.packet));
    let got = parse(&out);
    assert_eq!((u64::from(r0), got.src, got.ttl), (REDIRECT, IpAddr::from(EGRESS_IP), 63));
    assert_eq!(kernel_stat(&bpf, Stat::Snat), stat_of(&interp, Stat::Snat));
}

/// `CLOCK_MONOTONIC` in ns, what `bpf_ktime_get_ns` reads: the kernel's
/// `ktime_get()` as `/proc/timer_list` (root only, like these tests) prints it
/// in its third line, `now at N nsecs` (no `unsafe` for `clock_gettime`).
fn monotonic_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/timer_list").expect("/proc/timer_list");
    text.lines()
        .find_map(|l| l.strip_prefix("now at ")?.strip_suffix(" nsecs")?.parse().ok())
        .expect("a `now at N nsecs` line")
}

#[test]
fn test_run_agrees_with_the_interpreter_on_probes() {
    if !privileged("test_run_agrees_with_the_interpreter_on_probes") {
        return;
    }
    let mut b = Bench::new(&gateway_entries());
    let answered = |b: &Bench| kernel_stat(&b.bpf, Stat::ProbeAnswered);

    // a request from node A is answered: redirect, kind rewritten; the kernel
    // accepted the reply's tunnel key (else: rewrite-failed, SHOT)
    let req = Probe { kind: Kind::Request, seq: 99, sender: NODE_A, sent_ns: 42 };
    let (r0, out) = b.step(&Via::Tunnel(probe::VNI, NODE_A.into()), &req.frame());
    assert_eq!(u64::from(r0), REDIRECT);
    assert_eq!(Probe::from_frame(&out), Some(Probe { kind: Kind::Reply, ..req }));
    assert_eq!(out.len(), probe::FRAME_LEN);
    assert_eq!(answered(&b), (1, probe::FRAME_LEN as u64));
    assert_eq!(kernel_stat(&b.bpf, Stat::RewriteFailed).0, 0);

    // a reply from node B is recorded under node B and dropped
    let reply = Probe { kind: Kind::Reply, seq: 5, sender: NODE_A, sent_ns: 1_234 };
    let before = monotonic_ns();
    let (r0, out) = b.step(&Via::Tunnel(probe::VNI, NODE_B.into()), &reply.frame());
    let after = monotonic_ns();
    assert_eq!((u64::from(r0), out), (SHOT, reply.frame().to_vec()));
    let k = kernel_entries::<{ l::node_addr::SIZE }, { l::probe_rx::SIZE }>(&b.bpf, map::PROBE_RX);
    assert_eq!(k.keys().cloned().collect::<Vec<_>>(), [ProbeRx::key(NODE_B).to_vec()]);
    let got = ProbeRx::from_bytes(&k[&ProbeRx::key(NODE_B).to_vec()]).expect("value");
    assert_eq!((got.seq, got.sent_ns), (5, 1_234));
    assert!((before..=after).contains(&got.recv_ns), "recv_ns {} is bpf_ktime_get_ns (CLOCK_MONOTONIC)", got.recv_ns);
    let ours = b.interp.lookup(map::PROBE_RX, &ProbeRx::key(NODE_B)).expect("lookup").expect("entry");
    assert_eq!(ours[..16], k[&ProbeRx::key(NODE_B).to_vec()][..16], "same bytes but the arrival time");
    assert_eq!(kernel_stat(&b.bpf, Stat::ProbeReply), (1, probe::FRAME_LEN as u64));

    // bad probes: malformed, untouched, nothing recorded
    let good = req.frame();
    let with = |at: usize, byte: u8| {
        let mut f = good;
        f[at] = byte;
        f.to_vec()
    };
    for (via, f) in [
        (Via::Tunnel(SLOT, NODE_A.into()), good.to_vec()),
        (Via::Tunnel(1, NODE_A.into()), good.to_vec()),
        (Via::Tunnel(probe::VNI, NODE_A.into()), with(probe::OFF_MAGIC, b'X')),
        (Via::Tunnel(probe::VNI, NODE_A.into()), with(probe::OFF_MAGIC + 3, b'Q')),
        (Via::Tunnel(probe::VNI, NODE_A.into()), with(probe::OFF_VERSION, 2)),
        (Via::Tunnel(probe::VNI, NODE_A.into()), with(probe::OFF_KIND, 3)),
        (Via::Tunnel(probe::VNI, NODE_A.into()), good[..probe::PAYLOAD_END - 1].to_vec()),
    ] {
        let n = kernel_stat(&b.bpf, Stat::Malformed).0;
        let (r0, out) = b.step(&via, &f);
        assert_eq!((u64::from(r0), &out), (SHOT, &f), "{via:?} {f:02x?}");
        assert_eq!(kernel_stat(&b.bpf, Stat::Malformed).0, n + 1);
    }
    // no tunnel metadata
    let (r0, _) = b.step(&Via::NoKey, &req.frame());
    assert_eq!(u64::from(r0), SHOT);
    assert_eq!(kernel_stat(&b.bpf, Stat::NoTunnelKey).0, 1);
    assert_eq!(kernel_entries::<{ l::node_addr::SIZE }, { l::probe_rx::SIZE }>(&b.bpf, map::PROBE_RX).len(), 1);
    assert_eq!(answered(&b).0, 1);

    // egress traffic through the same program still works, on top
    let (r0, _) = b.step(&Via::Tunnel(SLOT, NODE_A.into()), &Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).frame());
    assert_eq!(u64::from(r0), REDIRECT);
    b.assert_same_state();
}

#[test]
fn test_run_agrees_with_the_interpreter_on_floating_slots() {
    if !privileged("test_run_agrees_with_the_interpreter_on_floating_slots") {
        return;
    }
    let mut b = Bench::new(&gateway_entries());
    let owner = |b: &mut Bench, who: Option<Ipv4Addr>| {
        let (m, k, v) = float_owner(who);
        b.update_both(m, &k, &v);
    };
    let count = |b: &Bench, s: Stat| kernel_stat(&b.bpf, s).0;
    let from_a = Via::Tunnel(FLOAT_SLOT, NODE_A.into());
    let from_peer = Via::Tunnel(FLOAT_SLOT, PEER_GW.into());
    let syn = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).frame();

    // no owner known: dropped
    assert_eq!(b.step(&from_a, &syn), (SHOT as u32, syn.clone()));
    assert_eq!(b.step(&Via::Local(FLOAT_SLOT), &Pkt::udp(POD_LOCAL, 5353, SERVER, 53).frame()).0, SHOT as u32);
    assert_eq!(count(&b, Stat::NoOwner), 2);

    // owned elsewhere: forwarded unchanged (the kernel accepted the tunnel key:
    // a refused one would be rewrite-failed), from the tunnel and from gw_local
    owner(&mut b, Some(OTHER_GW));
    assert_eq!(b.step(&from_a, &syn), (REDIRECT as u32, syn.clone()));
    let local = Pkt::udp(POD_LOCAL, 5353, SERVER, 53).frame();
    assert_eq!(b.step(&Via::Local(FLOAT_SLOT), &local), (REDIRECT as u32, local.clone()));
    assert_eq!(count(&b, Stat::Forwarded), 2);
    // a peer's packet is never forwarded again
    assert_eq!(b.step(&from_peer, &syn).0, SHOT as u32);
    assert_eq!(count(&b, Stat::NoOwner), 3);
    // neither the pod's node nor a peer; a peer on an ordinary slot
    assert_eq!(b.step(&Via::Tunnel(FLOAT_SLOT, OTHER_GW.into()), &syn).0, SHOT as u32);
    assert_eq!(b.step(&Via::Tunnel(SLOT, PEER_GW.into()), &syn).0, SHOT as u32);
    assert_eq!(count(&b, Stat::SpoofedSource), 2);

    // owned here: translated, from the pod's node and through the peer
    owner(&mut b, None);
    let (r0, out) = b.step(&from_a, &syn);
    assert_eq!(u64::from(r0), REDIRECT);
    let got = parse(&out);
    assert_eq!((got.src, got.ip_csum_ok, got.l4_csum_ok), (IpAddr::from(FLOAT_IP), true, Some(true)));
    let via_peer = Pkt::tcp(POD_B, 41000, SERVER, 443, SYN);
    let (r0, out) = b.step(&from_peer, &via_peer.frame());
    assert_eq!(u64::from(r0), REDIRECT);
    let got_b = parse(&out);
    assert_eq!(got_b.src, FLOAT_IP);
    // replies: back to the pods' nodes (node B's pod straight to node B)
    for g in [&got, &got_b] {
        let reply = from_server(g.sport, |p| L4::Tcp { sport: 443, dport: p, flags: SYN | ACK });
        let reply = Pkt { dst: FLOAT_IP.into(), ..reply };
        assert_eq!(u64::from(b.step(&Via::Reply, &reply.frame()).0), REDIRECT);
    }
    let rkey = NatKey { src: FLOAT_IP, dst: SERVER, sport: got_b.sport, dport: 443, proto: TCP };
    let k_rev = kernel_entries::<{ l::nat_key::SIZE }, { l::reverse_nat::SIZE }>(&b.bpf, map::RNAT_V4);
    let state = ReverseNat::<Ipv4Addr>::from_bytes(&k_rev[&rkey.to_bytes().to_vec()]).expect("reverse entry");
    assert_eq!((state.node, state.slot), (NODE_B.into(), FLOAT_SLOT), "the allowed entry's node, not the peer");
    assert_eq!(count(&b, Stat::ReplyTunnelled), 2);
    b.assert_same_state();
}

/// Two network namespaces joined by a veth pair on 192.0.2.0/24 (underlay):
/// a gateway (192.0.2.1) with a collect-metadata VXLAN device `egret0` on
/// port 8472, and a node (192.0.2.2) with none; deleted on drop.
struct UnderlayPair {
    gw: String,
    node: String,
}

impl UnderlayPair {
    /// `tag` (one letter) keeps the names of concurrent tests apart; the
    /// node's veth is `eg<tag>n<pid>`.
    fn new(tag: char) -> UnderlayPair {
        let id = std::process::id();
        let pair = UnderlayPair { gw: format!("egp-{tag}-gw-{id}"), node: format!("egp-{tag}-node-{id}") };
        let (veth_gw, veth_node) = (format!("eg{tag}g{id}"), format!("eg{tag}n{id}"));
        let ns = |n: &str, args: &str| {
            let mut v: Vec<String> = vec!["-n".into(), n.into()];
            v.extend(args.split_whitespace().map(str::to_owned));
            v
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), pair.gw.clone()],
            vec!["netns".into(), "add".into(), pair.node.clone()],
            format!("link add {veth_gw} type veth peer name {veth_node}").split(' ').map(str::to_owned).collect(),
            format!("link set {veth_gw} netns {}", pair.gw).split(' ').map(str::to_owned).collect(),
            format!("link set {veth_node} netns {}", pair.node).split(' ').map(str::to_owned).collect(),
            ns(&pair.gw, &format!("addr add 192.0.2.1/24 dev {veth_gw}")),
            ns(&pair.node, &format!("addr add 192.0.2.2/24 dev {veth_node}")),
            ns(&pair.gw, &format!("link set {veth_gw} up")),
            ns(&pair.node, &format!("link set {veth_node} up")),
            ns(&pair.gw, "link set lo up"),
            ns(&pair.node, "link set lo up"),
            ns(&pair.gw, "link add egret0 address 02:00:00:00:0e:01 type vxlan external dstport 8472"),
            ns(&pair.gw, "link set egret0 up"),
        ];
        for args in steps {
            let out = Command::new("ip").args(&args).output().expect("ip runs");
            assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        pair
    }

    /// Runs `cmd args` in namespace `ns`.
    fn exec(ns: &str, cmd: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip").args(["netns", "exec", ns, cmd]).args(args).output().expect("ip netns exec runs")
    }
}

impl Drop for UnderlayPair {
    fn drop(&mut self) {
        for n in [&self.gw, &self.node] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// The node side of a probe: binds the VXLAN port 8472, sends the datagram
/// (hex in argv[1]) to the gateway, prints the first datagram that comes back
/// as `<source address> <hex>`, or nothing after 3 s.
const PROBE_NODE_PY: &str = "
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 8472))
s.settimeout(3)
s.sendto(bytes.fromhex(sys.argv[1]), ('192.0.2.1', 8472))
try:
    data, addr = s.recvfrom(2048)
    print(addr[0], data.hex())
except socket.timeout:
    pass
";

#[test]
fn a_real_vxlan_gateway_answers_a_probe_from_its_program() {
    if !privileged("a_real_vxlan_gateway_answers_a_probe_from_its_program") {
        return;
    }
    if Command::new("tc").arg("-V").output().map(|o| !o.status.success()).unwrap_or(true)
        || Command::new("python3").arg("-V").output().map(|o| !o.status.success()).unwrap_or(true)
        || !["/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool"].into_iter().any(|p| Path::new(p).exists())
    {
        skip_or_fail(
            "a_real_vxlan_gateway_answers_a_probe_from_its_program",
            "tc (iproute2), python3 or bpftool is missing",
        );
        return;
    }
    let pair = UnderlayPair::new('p');
    let tunnel_in = programs().remove(&Template::TunnelIn).expect("egret_tunnel_in");
    let bytes = verify_and_write(&[tunnel_in], &templates::maps(), "GPL").expect("verifies and writes");
    let obj = TempObject(std::env::temp_dir().join(format!("egret-probe-{}.o", std::process::id())));
    std::fs::write(&obj.0, &bytes).expect("write object");
    let section = egret_bpf::elf::PROGRAM_SECTION.to_owned();
    let send = |seq: u32| {
        let req = Probe { kind: Kind::Request, seq, sender: Ipv4Addr::new(192, 0, 2, 2), sent_ns: 77 };
        let hex: String = req.datagram().iter().map(|b| format!("{b:02x}")).collect();
        let out = UnderlayPair::exec(&pair.node, "python3", &["-c", PROBE_NODE_PY, &hex]);
        assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (req, text)
    };

    // without egret's program nothing on the gateway answers
    let (_, nothing) = send(1);
    assert_eq!(nothing, "", "no answer without the program");

    for args in [
        vec!["qdisc", "add", "dev", "egret0", "clsact"],
        vec!["filter", "add", "dev", "egret0", "ingress", "bpf", "direct-action", "object-file"],
    ] {
        let mut a: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        if a[0] == "filter" {
            a.extend([obj.0.to_string_lossy().into_owned(), "section".into(), section.clone()]);
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = UnderlayPair::exec(&pair.gw, "tc", &a);
        assert!(out.status.success(), "tc {}: {}", a.join(" "), String::from_utf8_lossy(&out.stderr));
    }

    let (req, text) = send(2);
    let (from, hex) = text.split_once(' ').unwrap_or_else(|| panic!("an answer, got {text:?}"));
    assert_eq!(from, "192.0.2.1", "from the address the node probed");
    let datagram: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
    assert_eq!(Probe::from_datagram(&datagram), Some(Probe { kind: Kind::Reply, ..req }), "{datagram:02x?}");
    assert_eq!(&datagram[4..7], &[0, 0, 0], "VNI 0");

    // the whole loop: the node runs egret_tunnel_in on its own egret0, so the
    // reply is decapsulated there and recorded in its egret_probe_rx
    for args in ["link add egret0 address 02:00:00:00:0e:02 type vxlan external dstport 8472", "link set egret0 up"] {
        let out = Command::new("ip").args(["-n", &pair.node]).args(args.split(' ')).output().expect("ip runs");
        assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = UnderlayPair::exec(&pair.node, "tc", &["qdisc", "add", "dev", "egret0", "clsact"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let obj_path = obj.0.to_string_lossy().into_owned();
    let out = UnderlayPair::exec(
        &pair.node,
        "tc",
        &[
            "filter",
            "add",
            "dev",
            "egret0",
            "ingress",
            "bpf",
            "direct-action",
            "object-file",
            &obj_path,
            "section",
            &section,
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let req = Probe { kind: Kind::Request, seq: 3, sender: Ipv4Addr::new(192, 0, 2, 2), sent_ns: 4242 };
    let hex: String = req.datagram().iter().map(|b| format!("{b:02x}")).collect();
    let send_only = "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                     s.sendto(bytes.fromhex(sys.argv[1]), ('192.0.2.1', 8472))\n";
    let want_key = ProbeRx::key(Ipv4Addr::new(192, 0, 2, 1));
    let mut found = None;
    for _ in 0..30 {
        let out = UnderlayPair::exec(&pair.node, "python3", &["-c", send_only, &hex]);
        assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(100));
        found = probe_rx_entries().into_iter().find(|(k, _)| k[..] == want_key[..]).map(|(_, v)| v);
        if found.is_some() {
            break;
        }
    }
    let value = found.expect("the node recorded the gateway's reply in egret_probe_rx");
    let rx = ProbeRx::from_bytes(&value).expect("24 bytes");
    assert_eq!((rx.seq, rx.sent_ns), (3, 4242));
    assert!(rx.recv_ns > 0 && rx.recv_ns <= monotonic_ns());
}

/// Every entry of every loaded map named `egret_probe_rx` (`bpftool map dump`).
fn probe_rx_entries() -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(bpftool) =
        ["/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool"].into_iter().find(|p| Path::new(p).exists())
    else {
        panic!("bpftool is missing (apt-get install -y bpftool)");
    };
    let out = Command::new(bpftool).args(["-j", "map", "dump", "name", map::PROBE_RX]).output().expect("bpftool");
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes = |v: &serde_json::Value| -> Vec<u8> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| b.as_str())
                    .filter_map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut entries = Vec::new();
    let mut collect = |v: &serde_json::Value| {
        if let (Some(k), Some(val)) = (v.get("key"), v.get("value")) {
            entries.push((bytes(k), bytes(val)));
        }
    };
    // one map: a list of entries; several: a list of {"elements": [...]} per map
    for item in
        serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
    {
        match item.get("elements").and_then(|e| e.as_array()) {
            Some(elements) => elements.iter().for_each(&mut collect),
            None => collect(&item),
        }
    }
    entries
}

/// The owner side of a forwarded packet: binds 192.0.2.3:8472, sends the
/// datagram (hex in argv[1]) from 192.0.2.2 to the gateway, prints the first
/// datagram that reaches the owner as `<source address> <hex>`.
const FORWARD_NODE_PY: &str = "
import socket, sys
owner = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
owner.bind(('192.0.2.3', 8472))
owner.settimeout(3)
node = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
node.bind(('192.0.2.2', 0))
node.sendto(bytes.fromhex(sys.argv[1]), ('192.0.2.1', 8472))
try:
    data, addr = owner.recvfrom(2048)
    print(addr[0], data.hex())
except socket.timeout:
    pass
";

#[test]
fn a_real_vxlan_gateway_forwards_a_floating_slot_to_its_owner() {
    let test = "a_real_vxlan_gateway_forwards_a_floating_slot_to_its_owner";
    if !privileged(test) {
        return;
    }
    if Command::new("tc").arg("-V").output().map(|o| !o.status.success()).unwrap_or(true)
        || Command::new("python3").arg("-V").output().map(|o| !o.status.success()).unwrap_or(true)
    {
        skip_or_fail(test, "tc (iproute2) or python3 is missing");
        return;
    }
    let pair = UnderlayPair::new('f');
    let veth_node = format!("egfn{}", std::process::id());
    let out = Command::new("ip")
        .args(["-n", &pair.node, "addr", "add", "192.0.2.3/24", "dev", &veth_node])
        .output()
        .expect("ip runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("ip").args(["-n", &pair.gw, "-o", "link", "show", "egret0"]).output().expect("ip runs");
    let egret0: u32 = String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("egret0's ifindex");

    // egret_tunnel_in with %tunnel_ifindex = the gateway's egret0, loaded by aya
    // (so the test fills its maps), pinned, attached by tc inside the namespace
    let mut tunnel_in = Template::TunnelIn.assemble().expect("assembles").program;
    tunnel_in.fill_hole(templates::HOLE_TUNNEL_IFINDEX, i64::from(egret0)).expect("fills");
    let bytes = verify_and_write(&[tunnel_in], &templates::maps(), "GPL").expect("verifies and writes");
    let mut bpf = aya::Ebpf::load(&bytes).unwrap_or_else(|e| panic!("aya loads: {e}"));
    let (node, owner) = (Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3));
    let slot = templates::GatewaySlot {
        slot: FLOAT_SLOT,
        egress_ip: FLOAT_IP,
        egress_ip6: std::net::Ipv6Addr::UNSPECIFIED,
        egress_ifindex: 1,
        floating: true,
    };
    let allowed = templates::AllowedSource {
        slot: FLOAT_SLOT,
        src: POD_A.into(),
        from: templates::SourceNode::Node(node.into()),
    };
    let o = templates::FloatOwner { slot: FLOAT_SLOT, owner: owner.into(), is_self: false };
    kernel_update(&mut bpf, map::GW_SLOTS, &slot.key(), &slot.value());
    kernel_update(&mut bpf, map::GW_ALLOWED, &allowed.key(), &allowed.value());
    kernel_update(&mut bpf, map::FLOAT_OWNER, &o.key(), &o.value());
    let fs = Bpffs::new("gw");
    let pinned = fs.mount_point().join("tunnel_in");
    {
        let p: &mut SchedClassifier =
            bpf.program_mut(Template::TunnelIn.name()).expect("program").try_into().expect("classifier");
        p.load().unwrap_or_else(|e| panic!("the kernel verifier accepts egret_tunnel_in: {e:?}"));
        p.pin(&pinned).expect("pin");
    }
    let pinned_s = pinned.to_string_lossy().into_owned();
    for args in [
        vec!["qdisc", "add", "dev", "egret0", "clsact"],
        vec!["filter", "add", "dev", "egret0", "ingress", "bpf", "direct-action", "object-pinned", &pinned_s],
    ] {
        let out = UnderlayPair::exec(&pair.gw, "tc", &args);
        assert!(out.status.success(), "tc {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }

    // node A's pod sends through the gateway, which does not own the slot
    let frame = Pkt::udp(POD_A, 5353, SERVER, 53).frame();
    let mut datagram = vec![0x08, 0, 0, 0];
    datagram.extend_from_slice(&(FLOAT_SLOT << 8).to_be_bytes());
    datagram.extend_from_slice(&frame);
    let hex: String = datagram.iter().map(|b| format!("{b:02x}")).collect();
    let out = UnderlayPair::exec(&pair.node, "python3", &["-c", FORWARD_NODE_PY, &hex]);
    assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (from, hex) = text.split_once(' ').unwrap_or_else(|| panic!("the owner got nothing: {text:?}"));
    assert_eq!(from, "192.0.2.1", "from the gateway");
    let got: Vec<u8> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
    assert_eq!(&got[..8], &datagram[..8], "VXLAN header: the slot's VNI");
    assert_eq!(&got[8..], &frame[..], "the inner frame unchanged: the owner translates it");
    assert_eq!(kernel_stat(&bpf, Stat::Forwarded).0, 1);
    assert_eq!(kernel_stat(&bpf, Stat::Snat).0, 0);
    std::fs::remove_file(&pinned).expect("unpin");
}
