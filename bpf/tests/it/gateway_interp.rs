//! Behaviour of the gateway templates in egret's interpreter (unprivileged):
//! SNAT with valid checksums, reverse NAT back through the tunnel or to a
//! local pod, drops by reason, port allocation, expiry, and untouched host
//! traffic. Every checksum is recomputed from scratch by the test.

use egret_testkit::gateway as gateway_common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egret_bpf::interp::{Redirect, RedirectKind, RunInput, RunOutcome};
use egret_bpf::templates::{
    FlowEvent, FlowEventKind, NAT_PORT_COUNT, NAT_PORT_MIN, NAT_PROBES, NatKey, RV_F_CLOSING, RV_F_LOCAL,
    RV_F_SEEN_REPLY, Stat, Template, Timeouts, nat_hash, nat_port_candidates,
};
use gateway_common::*;

fn key_of(p: &Pkt) -> NatKey {
    p.nat_key()
}

fn assert_snat(out: &RunOutcome, sent: &Pkt, want_port: u16) -> Parsed {
    assert_snat_to(out, sent, want_port, EGRESS_IP.into())
}

/// `sent` left translated to `egress` (either family) with `want_port`.
fn assert_snat_to(out: &RunOutcome, sent: &Pkt, want_port: u16, egress: IpAddr) -> Parsed {
    assert_eq!(out.r0, REDIRECT, "redirected");
    assert_eq!(
        out.effects.redirect,
        Some(Redirect { ifindex: EGRESS_IFINDEX, flags: 0, kind: RedirectKind::Neigh { nexthop: None } }),
        "out of the egress interface, next hop by FIB"
    );
    let got = parse(&out.packet);
    let before = parse(&sent.frame());
    assert_eq!(got.src, egress);
    assert_eq!(got.dst, before.dst);
    assert_eq!(got.sport, want_port);
    assert!((NAT_PORT_MIN..=65535).contains(&got.sport));
    assert_eq!(got.dport, before.dport);
    assert_eq!(got.ttl, before.ttl - 1, "TTL decremented");
    assert!(got.ip_csum_ok, "IPv4 header checksum");
    assert_eq!(got.l4_csum_ok, before.l4_csum_ok.map(|_| true), "L4 checksum");
    assert_eq!(out.packet.len(), sent.frame().len());
    got
}

/// The reply a server sends to a translated packet.
fn reply_to(got: &Parsed, l4: L4) -> Pkt {
    Pkt { src: got.dst, dst: got.src, ttl: 50, frag: 0, options: Vec::new(), l4 }
}

/// The tunnel key flags for a node of `node`'s underlay family.
fn family_flags(node: IpAddr) -> u64 {
    if node.is_ipv6() { egret_bpf::layout::BPF_F_TUNINFO_IPV6 as u64 } else { 0 }
}

fn assert_tunnelled_back(
    out: &RunOutcome,
    reply: &Pkt,
    pod: impl Into<IpAddr>,
    pod_port: u16,
    node: impl Into<IpAddr>,
) {
    let (pod, node) = (pod.into(), node.into());
    assert_eq!(out.r0, REDIRECT);
    assert_eq!(
        out.effects.redirect,
        Some(Redirect { ifindex: TUNNEL_IFINDEX, flags: 0, kind: RedirectKind::Redirect }),
        "egress of egret0, flags 0"
    );
    let key = out.effects.tunnel_key.as_ref().expect("tunnel key set");
    assert_eq!(key.key.tunnel_id, SLOT);
    assert_eq!(key.key.remote, node);
    assert_eq!(key.key.ttl, 64);
    assert_eq!(key.flags, family_flags(node), "the node's family, no DONT_FRAGMENT (EBPF-FACTS S8)");
    let got = parse(&out.packet);
    let before = parse(&reply.frame());
    assert_eq!(got.src, before.src);
    assert_eq!(got.dst, pod);
    if got.proto == ICMP || got.proto == ICMPV6 {
        assert_eq!(got.sport, pod_port, "identifier restored");
    } else {
        assert_eq!((got.sport, got.dport), (before.sport, pod_port));
    }
    assert_eq!(got.ttl, before.ttl - 1);
    assert!(got.ip_csum_ok);
    assert_eq!(got.l4_csum_ok, before.l4_csum_ok.map(|_| true));
}

#[test]
fn tcp_syn_through_the_tunnel_is_snatted_and_the_reply_tunnelled_back() {
    let mut gw = Gateway::new();
    let syn = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN);
    let port = nat_port_candidates(&key_of(&syn))[0];
    let out = gw.tunnel_in(&syn.frame(), SLOT, NODE_A);
    let got = assert_snat(&out, &syn, port);
    assert_eq!(gw.stat(Stat::Snat), (1, syn.frame().len() as u64));
    assert_eq!(gw.stat(Stat::NatCreated).0, 1);
    let rkey = NatKey { src: EGRESS_IP, dst: SERVER, sport: port, dport: 443, proto: TCP };
    let state = gw.rnat(&rkey).expect("reverse entry");
    assert_eq!((state.orig_src, state.orig_sport, state.node, state.slot), (POD_A, 40000, NODE_A.into(), SLOT));
    assert_eq!(state.flags, 0);
    assert_eq!(state.expires_ns, gw.now + Timeouts::TCP_SYN_NS);
    let fwd = gw.fnat(&key_of(&syn)).expect("forward entry");
    assert_eq!((fwd.egress_ip, fwd.nat_port, fwd.slot, fwd.created_ns), (EGRESS_IP, port, SLOT, gw.now));

    gw.now += 1_000_000;
    let synack = reply_to(&got, L4::Tcp { sport: 443, dport: port, flags: SYN | ACK });
    let out = gw.reply(&synack.frame());
    assert_tunnelled_back(&out, &synack, POD_A, 40000, NODE_A);
    assert_eq!(gw.stat(Stat::ReplyTunnelled).0, 1);
    let state = gw.rnat(&rkey).expect("reverse entry");
    assert_eq!(state.flags, RV_F_SEEN_REPLY);
    assert_eq!(state.expires_ns, gw.now + Timeouts::TCP_ESTABLISHED_NS, "established: long timeout");
}

#[test]
fn udp_through_the_tunnel_and_back() {
    let mut gw = Gateway::new();
    let q = Pkt::udp(POD_A2, 5353, SERVER, 53);
    let port = nat_port_candidates(&key_of(&q))[0];
    let out = gw.tunnel_in(&q.frame(), SLOT, NODE_A);
    let got = assert_snat(&out, &q, port);
    let answer = reply_to(&got, L4::Udp { sport: 53, dport: port, csum: true });
    let out = gw.reply(&answer.frame());
    assert_tunnelled_back(&out, &answer, POD_A2, 5353, NODE_A);
}

#[test]
fn udp_without_checksum_keeps_checksum_zero_both_ways() {
    let mut gw = Gateway::new();
    let mut q = Pkt::udp(POD_A, 5353, SERVER, 53);
    q.l4 = L4::Udp { sport: 5353, dport: 53, csum: false };
    let port = nat_port_candidates(&key_of(&q))[0];
    let out = gw.tunnel_in(&q.frame(), SLOT, NODE_A);
    let got = assert_snat(&out, &q, port);
    assert_eq!(got.l4_csum_ok, None, "checksum field still 0");
    let answer = reply_to(&got, L4::Udp { sport: 53, dport: port, csum: false });
    let out = gw.reply(&answer.frame());
    assert_tunnelled_back(&out, &answer, POD_A, 5353, NODE_A);
    assert_eq!(parse(&out.packet).l4_csum_ok, None);
}

#[test]
fn icmp_echo_is_translated_by_identifier() {
    let mut gw = Gateway::new();
    let ping = Pkt::icmp(POD_B, SERVER, 8, 0x4242);
    let id = nat_port_candidates(&key_of(&ping))[0];
    let out = gw.tunnel_in(&ping.frame(), SLOT, NODE_B);
    let got = assert_snat(&out, &ping, id);
    assert_eq!(
        gw.rnat(&NatKey { src: EGRESS_IP, dst: SERVER, sport: id, dport: 0, proto: ICMP }).map(|r| r.orig_sport),
        Some(0x4242)
    );
    let pong = reply_to(&got, L4::Icmp { ty: 0, id, seq: 7 });
    let out = gw.reply(&pong.frame());
    assert_tunnelled_back(&out, &pong, POD_B, 0x4242, NODE_B);
}

#[test]
fn the_same_flow_keeps_its_port() {
    let mut gw = Gateway::new();
    let syn = Pkt::tcp(POD_A, 40001, SERVER, 443, SYN);
    let first = parse(&gw.tunnel_in(&syn.frame(), SLOT, NODE_A).packet).sport;
    gw.now += 5_000_000_000;
    let data = Pkt::tcp(POD_A, 40001, SERVER, 443, ACK | PSH);
    let again = parse(&gw.tunnel_in(&data.frame(), SLOT, NODE_A).packet).sport;
    assert_eq!(first, again);
    assert_eq!(gw.stat(Stat::NatCreated).0, 1, "one mapping");
    assert_eq!(gw.stat(Stat::Snat).0, 2);
    let fwd = gw.fnat(&key_of(&syn)).expect("forward entry");
    assert_eq!(fwd.last_seen_ns, gw.now);
}

#[test]
fn spoofed_sources_are_dropped_and_counted() {
    let mut gw = Gateway::new();
    // (what, source pod, sending node or None for egret_gw_local)
    let cases: [(&str, Ipv4Addr, Option<Ipv4Addr>); 6] = [
        ("pod not allowed for the slot", POD_NOT_ALLOWED, Some(NODE_A)),
        ("node B sends node A's pod", POD_A, Some(NODE_B)),
        ("node A sends node B's pod", POD_B, Some(NODE_A)),
        ("a node sends the gateway's own pod", POD_LOCAL, Some(NODE_A)),
        ("a remote pod's address from a local veth", POD_A, None),
        ("a local pod using another local pod's address", POD_LOCAL2, None),
    ];
    let n = cases.len() as u64;
    for (what, pod, node) in cases {
        let f = Pkt::udp(pod, 1, SERVER, 53).frame();
        let out = match node {
            Some(node) => gw.tunnel_in(&f, SLOT, node),
            None => gw.local(&f, SLOT),
        };
        assert_eq!(out.r0, SHOT, "{what}");
        assert!(out.effects.redirect.is_none() && out.effects.stores.is_empty(), "{what}: untouched");
    }
    assert_eq!(gw.stat(Stat::SpoofedSource).0, n);
    assert_eq!(gw.stat(Stat::Snat).0, 0);
    // a pod allowed from any node may come from either
    let out = gw.tunnel_in(&Pkt::udp(POD_ANY, 1, SERVER, 53).frame(), SLOT, NODE_B);
    assert_eq!(out.r0, REDIRECT);
}

#[test]
fn unknown_slots_and_slots_without_egress_ip_drop() {
    let mut gw = Gateway::new();
    let f = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).frame();
    for slot in [SLOT_UNKNOWN, SLOT_NO_IP, SLOT | 0x0100_0000 | SLOT_UNKNOWN] {
        let out = gw.tunnel_in(&f, slot, NODE_A);
        assert_eq!(out.r0, SHOT, "slot {slot:#x}");
        assert_eq!(out.packet, f);
    }
    assert_eq!(gw.stat(Stat::NoEgressIp), (3, 3 * f.len() as u64));
    let out = gw.local(&Pkt::tcp(POD_LOCAL, 40000, SERVER, 443, SYN).frame(), SLOT_UNKNOWN);
    assert_eq!(out.r0, SHOT);
    assert_eq!(gw.stat(Stat::NoEgressIp).0, 4);
    // only the low 24 bits of the VNI name the slot
    let out = gw.tunnel_in(&f, SLOT | 0xff00_0000, NODE_A);
    assert_eq!(out.r0, REDIRECT);
}

/// `n` TCP flows from [`POD_A`] to the server whose hash lands in one bucket.
fn colliding_flows(n: usize) -> Vec<Pkt> {
    let mut by_bucket: std::collections::BTreeMap<u32, Vec<u16>> = std::collections::BTreeMap::new();
    for sport in 1024..=u16::MAX {
        let k = NatKey { src: POD_A, dst: SERVER, sport, dport: 443, proto: TCP };
        let ports = by_bucket.entry(nat_hash(&k) % NAT_PORT_COUNT).or_default();
        ports.push(sport);
        if ports.len() == n {
            return ports.iter().map(|p| Pkt::tcp(POD_A, *p, SERVER, 443, SYN)).collect();
        }
    }
    panic!("no bucket with {n} flows");
}

#[test]
fn colliding_flows_get_distinct_ports_until_the_candidates_run_out() {
    let mut gw = Gateway::new();
    let flows = colliding_flows(NAT_PROBES + 1);
    let candidates = nat_port_candidates(&key_of(&flows[0]));
    let mut ports = Vec::new();
    for f in &flows[..NAT_PROBES] {
        assert_eq!(nat_port_candidates(&key_of(f)), candidates, "same bucket");
        let out = gw.tunnel_in(&f.frame(), SLOT, NODE_A);
        ports.push(assert_snat(&out, f, candidates[ports.len()]).sport);
    }
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), NAT_PROBES, "{ports:?}");
    // all candidates busy: the 17th flow is dropped
    let last = &flows[NAT_PROBES];
    let out = gw.tunnel_in(&last.frame(), SLOT, NODE_A);
    assert_eq!(out.r0, SHOT);
    assert_eq!(out.packet, last.frame());
    assert_eq!(gw.stat(Stat::NatPortsExhausted).0, 1);
    assert_eq!(gw.stat(Stat::NatCreated).0, NAT_PROBES as u64);
    // the same 17th flow towards another server port collides with nothing
    let other = Pkt::tcp(POD_A, key_of(last).sport, SERVER, 8443, SYN);
    assert_eq!(gw.tunnel_in(&other.frame(), SLOT, NODE_A).r0, REDIRECT);
}

/// A UDP flow from [`POD_A`] to the server's port 53 in the same bucket as `of`.
fn udp_collision(of: &NatKey) -> Pkt {
    let bucket = nat_hash(of) % NAT_PORT_COUNT;
    (1024..=u16::MAX)
        .filter(|p| *p != of.sport)
        .map(|p| Pkt::udp(POD_A, p, SERVER, 53))
        .find(|p| nat_hash(&key_of(p)) % NAT_PORT_COUNT == bucket)
        .expect("a colliding flow")
}

#[test]
fn an_idle_expired_udp_mapping_is_reused_and_its_old_flow_moves_on() {
    let mut gw = Gateway::new();
    let a = Pkt::udp(POD_A, 5000, SERVER, 53);
    let c = nat_port_candidates(&key_of(&a));
    assert_eq!(parse(&gw.tunnel_in(&a.frame(), SLOT, NODE_A).packet).sport, c[0]);
    let b = udp_collision(&key_of(&a));
    // while a's mapping lives, b gets the next candidate
    gw.now += Timeouts::UDP_NS - 1;
    let out = gw.tunnel_in(&b.frame(), SLOT, NODE_A);
    assert_eq!(parse(&out.packet).sport, c[1]);
    // b's mapping idles out as well; a third flow in the bucket takes c[0] and
    // c[1] back once both expired
    gw.now += Timeouts::UDP_NS + 1;
    let b2 = Pkt::udp(POD_A, key_of(&b).sport, SERVER, 53);
    let a_expired =
        gw.rnat(&NatKey { src: EGRESS_IP, dst: SERVER, sport: c[0], dport: 53, proto: UDP }).expect("entry");
    assert!(a_expired.expires_ns < gw.now);
    let out = gw.tunnel_in(&b2.frame(), SLOT, NODE_A);
    assert_eq!(parse(&out.packet).sport, c[0], "the expired port is free again");
    let state = gw.rnat(&NatKey { src: EGRESS_IP, dst: SERVER, sport: c[0], dport: 53, proto: UDP }).expect("entry");
    assert_eq!(state.orig_sport, key_of(&b).sport, "now b's");
    // a comes back: its old port belongs to b now, so it gets another one
    let out = gw.tunnel_in(&a.frame(), SLOT, NODE_A);
    let a_port = parse(&out.packet).sport;
    assert_ne!(a_port, c[0]);
    // and a reply to c[0] reaches b, not a
    let answer = Pkt {
        src: SERVER.into(),
        dst: EGRESS_IP.into(),
        ttl: 50,
        frag: 0,
        options: Vec::new(),
        l4: L4::Udp { sport: 53, dport: c[0], csum: true },
    };
    let out = gw.reply(&answer.frame());
    assert_eq!(parse(&out.packet).dport, key_of(&b).sport);
    assert_eq!(gw.stat(Stat::NatCreated).0, 4);
}

#[test]
fn tcp_timeouts_follow_the_connection_state() {
    let mut gw = Gateway::new();
    let syn = Pkt::tcp(POD_A, 41000, SERVER, 443, SYN);
    let port = parse(&gw.tunnel_in(&syn.frame(), SLOT, NODE_A).packet).sport;
    let rkey = NatKey { src: EGRESS_IP, dst: SERVER, sport: port, dport: 443, proto: TCP };
    let synack = Pkt {
        src: SERVER.into(),
        dst: EGRESS_IP.into(),
        ttl: 50,
        frag: 0,
        options: Vec::new(),
        l4: L4::Tcp { sport: 443, dport: port, flags: SYN | ACK },
    };
    gw.reply(&synack.frame());
    // established: still alive long after the SYN timeout
    gw.now += 2 * Timeouts::TCP_SYN_NS;
    let ack = Pkt::tcp(POD_A, 41000, SERVER, 443, ACK);
    assert_eq!(parse(&gw.tunnel_in(&ack.frame(), SLOT, NODE_A).packet).sport, port);
    assert_eq!(gw.rnat(&rkey).map(|r| r.expires_ns), Some(gw.now + Timeouts::TCP_ESTABLISHED_NS));
    // the pod closes: short timeout
    let fin = Pkt::tcp(POD_A, 41000, SERVER, 443, FIN | ACK);
    gw.tunnel_in(&fin.frame(), SLOT, NODE_A);
    let state = gw.rnat(&rkey).expect("entry");
    assert_eq!(state.flags, RV_F_SEEN_REPLY | RV_F_CLOSING);
    assert_eq!(state.expires_ns, gw.now + Timeouts::TCP_CLOSING_NS);
    // the server's FIN/ACK keeps it closing
    gw.now += 1_000_000_000;
    let finack = Pkt { l4: L4::Tcp { sport: 443, dport: port, flags: FIN | ACK }, ..synack.clone() };
    assert_eq!(gw.reply(&finack.frame()).r0, REDIRECT);
    assert_eq!(gw.rnat(&rkey).map(|r| r.expires_ns), Some(gw.now + Timeouts::TCP_CLOSING_NS));
    // after it, a late reply is no longer ours
    gw.now += Timeouts::TCP_CLOSING_NS + 1;
    let late = Pkt { l4: L4::Tcp { sport: 443, dport: port, flags: ACK }, ..synack.clone() };
    let out = gw.reply(&late.frame());
    assert_eq!(out.r0, UNSPEC);
    assert_eq!(out.packet, late.frame());
    // a SYN without reply expires after the SYN timeout: a new SYN of the same
    // flow then starts over (same port, fresh state)
    let syn2 = Pkt::tcp(POD_A, 41001, SERVER, 443, SYN);
    let p2 = parse(&gw.tunnel_in(&syn2.frame(), SLOT, NODE_A).packet).sport;
    let k2 = NatKey { sport: p2, ..rkey };
    assert_eq!(gw.rnat(&k2).map(|r| r.expires_ns), Some(gw.now + Timeouts::TCP_SYN_NS));
    gw.now += Timeouts::TCP_SYN_NS + 1;
    assert_eq!(parse(&gw.tunnel_in(&syn2.frame(), SLOT, NODE_A).packet).sport, p2);
    assert_eq!(gw.stat(Stat::NatCreated).0, 3);
}

#[test]
fn a_bare_syn_restarts_an_established_mapping() {
    let mut gw = Gateway::new();
    let syn = Pkt::tcp(POD_A, 42000, SERVER, 443, SYN);
    let port = parse(&gw.tunnel_in(&syn.frame(), SLOT, NODE_A).packet).sport;
    let rkey = NatKey { src: EGRESS_IP, dst: SERVER, sport: port, dport: 443, proto: TCP };
    let synack = Pkt {
        src: SERVER.into(),
        dst: EGRESS_IP.into(),
        ttl: 50,
        frag: 0,
        options: Vec::new(),
        l4: L4::Tcp { sport: 443, dport: port, flags: SYN | ACK },
    };
    gw.reply(&synack.frame());
    assert_eq!(gw.rnat(&rkey).map(|r| r.flags), Some(RV_F_SEEN_REPLY));
    gw.tunnel_in(&syn.frame(), SLOT, NODE_A);
    let state = gw.rnat(&rkey).expect("entry");
    assert_eq!((state.flags, state.expires_ns), (0, gw.now + Timeouts::TCP_SYN_NS));
}

#[test]
fn unrelated_traffic_on_the_egress_interface_passes_untouched() {
    let mut gw = Gateway::new();
    // one live mapping, so that near misses are near
    let syn = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN);
    let port = parse(&gw.tunnel_in(&syn.frame(), SLOT, NODE_A).packet).sport;
    let to_gw = |l4: L4| Pkt { src: SERVER.into(), dst: EGRESS_IP.into(), ttl: 50, frag: 0, options: Vec::new(), l4 };
    let mut frames = vec![
        arp_frame(),
        to_gw(L4::Tcp { sport: 443, dport: 22, flags: SYN }).frame(), // ssh to the host
        to_gw(L4::Tcp { sport: 444, dport: port, flags: ACK }).frame(), // other remote port
        to_gw(L4::Udp { sport: 443, dport: port, csum: true }).frame(), // other protocol
        Pkt { src: Ipv4Addr::new(203, 0, 113, 21).into(), ..to_gw(L4::Tcp { sport: 443, dport: port, flags: ACK }) }
            .frame(),
        to_gw(L4::Icmp { ty: 8, id: port, seq: 1 }).frame(), // a ping to the host
        to_gw(L4::Icmp { ty: 3, id: 0, seq: 0 }).frame(),    // an ICMP error
        to_gw(L4::Other { proto: 47, payload: vec![0; 24] }).frame(), // GRE
        Pkt { frag: 0x0010, ..to_gw(L4::Tcp { sport: 443, dport: port, flags: ACK }) }.frame(), // non-first fragment
    ];
    let mut runt = to_gw(L4::Tcp { sport: 443, dport: port, flags: ACK }).frame();
    runt.truncate(40); // TCP header cut short
    frames.push(runt);
    for f in &frames {
        let out = gw.reply(f);
        assert_eq!(out.r0, UNSPEC, "{f:02x?}");
        assert_eq!(&out.packet, f);
        assert!(out.effects.redirect.is_none() && out.effects.stores.is_empty() && out.effects.tunnel_key.is_none());
    }
    // and the real reply still works
    let ok = to_gw(L4::Tcp { sport: 443, dport: port, flags: SYN | ACK });
    assert_eq!(gw.reply(&ok.frame()).r0, REDIRECT);
    for s in Stat::ALL {
        if s.is_drop() {
            assert_eq!(gw.stat(s).0, 0, "{}", s.name());
        }
    }
}

#[test]
fn local_pods_egress_and_get_replies_on_their_veth() {
    let mut gw = Gateway::new();
    let syn = Pkt::tcp(POD_LOCAL, 40000, SERVER, 443, SYN);
    let port = nat_port_candidates(&key_of(&syn))[0];
    let out = gw.local(&syn.frame(), SLOT);
    let got = assert_snat(&out, &syn, port);
    let rkey = NatKey { src: EGRESS_IP, dst: SERVER, sport: port, dport: 443, proto: TCP };
    let state = gw.rnat(&rkey).expect("entry");
    assert_eq!((state.flags, state.node), (RV_F_LOCAL, Ipv4Addr::UNSPECIFIED.into()));
    let synack = reply_to(&got, L4::Tcp { sport: 443, dport: port, flags: SYN | ACK });
    let out = gw.reply(&synack.frame());
    assert_eq!(out.r0, REDIRECT);
    assert_eq!(
        out.effects.redirect,
        Some(Redirect {
            ifindex: POD_LOCAL_IFINDEX,
            flags: 0,
            kind: RedirectKind::Neigh { nexthop: Some(IpAddr::V4(POD_LOCAL)) }
        })
    );
    assert!(out.effects.tunnel_key.is_none());
    let back = parse(&out.packet);
    assert_eq!((back.dst, back.dport, back.ttl), (IpAddr::from(POD_LOCAL), 40000, 49));
    assert!(back.ip_csum_ok && back.l4_csum_ok == Some(true));
    assert_eq!(gw.stat(Stat::ReplyLocal).0, 1);
    assert_eq!(gw.rnat(&rkey).map(|r| r.flags), Some(RV_F_LOCAL | RV_F_SEEN_REPLY));
    // the pod is deleted: its replies are dropped, not sent anywhere
    gw.maps.delete(egret_bpf::templates::map::LOCAL_EPS, &POD_LOCAL.octets()).expect("delete");
    let out = gw.reply(&synack.frame());
    assert_eq!(out.r0, SHOT);
    assert_eq!(gw.stat(Stat::NoLocalEndpoint).0, 1);
}

/// A source node: the programs and its maps ([`source_node_entries`]).
fn source_node() -> (std::collections::BTreeMap<Template, egret_bpf::Program>, egret_bpf::interp::MapStore) {
    let mut maps = egret_bpf::interp::MapStore::new(&egret_bpf::templates::maps());
    for (m, k, v) in source_node_entries() {
        maps.update(m, &k, &v, 0).expect("fill");
    }
    (programs(), maps)
}

#[test]
fn a_source_node_delivers_tunnelled_replies_to_its_pod() {
    let (programs, mut maps) = source_node();
    let reply = Pkt {
        src: SERVER.into(),
        dst: POD_A.into(),
        ttl: 49,
        frag: 0,
        options: Vec::new(),
        l4: L4::Tcp { sport: 443, dport: 40000, flags: SYN | ACK },
    };
    let mut input = RunInput::for_frame(&reply.frame());
    input.tunnel = Some(tunnel_key(SLOT, Ipv4Addr::new(192, 0, 2, 1)));
    let out = egret_bpf::interp::run(&programs[&Template::TunnelIn], &mut maps, &input).expect("runs");
    assert_eq!(out.r0, REDIRECT);
    assert_eq!(
        out.effects.redirect,
        Some(Redirect { ifindex: 21, flags: 0, kind: RedirectKind::Neigh { nexthop: Some(IpAddr::V4(POD_A)) } })
    );
    assert_eq!(out.packet, reply.frame(), "delivered as is");
    assert_eq!(stat_of(&maps, Stat::ReplyDelivered), (1, reply.frame().len() as u64));
    // a packet for no local pod is egress, and this node serves no slot
    let other = Pkt { dst: POD_B.into(), ..reply.clone() };
    let mut input = RunInput::for_frame(&other.frame());
    input.tunnel = Some(tunnel_key(SLOT, Ipv4Addr::new(192, 0, 2, 1)));
    let out = egret_bpf::interp::run(&programs[&Template::TunnelIn], &mut maps, &input).expect("runs");
    assert_eq!(out.r0, SHOT);
    assert_eq!(stat_of(&maps, Stat::NoEgressIp).0, 1);
}

#[test]
fn the_egress_path_fails_closed() {
    let mut gw = Gateway::new();
    let cases: Vec<(Vec<u8>, Stat)> = vec![
        (arp_frame(), Stat::NotIp),
        (
            Pkt { l4: L4::Other { proto: 47, payload: vec![0; 24] }, ..Pkt::udp(POD_A, 1, SERVER, 53) }.frame(),
            Stat::UnsupportedProto,
        ),
        (Pkt::icmp(POD_A, SERVER, 3, 0).frame(), Stat::UnsupportedProto),
        (Pkt::icmp(POD_A, SERVER, 0, 5).frame(), Stat::UnsupportedProto),
        (Pkt { frag: 0x00b9, ..Pkt::udp(POD_A, 1, SERVER, 53) }.frame(), Stat::Fragment),
        (Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).ttl(1).frame(), Stat::TtlExceeded),
        (Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).ttl(0).frame(), Stat::TtlExceeded),
        (
            {
                let mut f = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).frame();
                f.truncate(50);
                f
            },
            Stat::Malformed,
        ),
        (
            {
                let mut f = Pkt::udp(POD_A, 1, SERVER, 53).frame();
                f[14] = 0x44; // IHL 4
                f
            },
            Stat::Malformed,
        ),
        (
            {
                let mut f = Pkt::udp(POD_A, 1, SERVER, 53).frame();
                f[14] = 0x65; // version 6 in an IPv4 frame
                f
            },
            Stat::Malformed,
        ),
    ];
    for (f, reason) in &cases {
        let out = gw.tunnel_in(f, SLOT, NODE_A);
        assert_eq!(out.r0, SHOT, "{}", reason.name());
        assert_eq!(&out.packet, f);
    }
    for (_, reason) in &cases {
        let n = cases.iter().filter(|(_, r)| r == reason).count() as u64;
        assert_eq!(gw.stat(*reason).0, n, "{}", reason.name());
    }
    assert_eq!(gw.stat(Stat::Snat).0, 0);
    // no tunnel metadata at all
    let mut input = RunInput::for_frame(&Pkt::udp(POD_A, 1, SERVER, 53).frame());
    input.ktime_ns = gw.now;
    assert_eq!(gw.run(Template::TunnelIn, &input).r0, SHOT);
    assert_eq!(gw.stat(Stat::NoTunnelKey).0, 1);
}

#[test]
fn first_fragments_options_and_ttl_two_are_translated() {
    let mut gw = Gateway::new();
    let first_fragment = Pkt { frag: 0x2000, ..Pkt::udp(POD_A, 7000, SERVER, 53) };
    let p = nat_port_candidates(&key_of(&first_fragment))[0];
    assert_snat(&gw.tunnel_in(&first_fragment.frame(), SLOT, NODE_A), &first_fragment, p);
    // IP options (a NOP-padded router alert): the L4 header is found after them
    let with_options = Pkt { options: vec![0x94, 0x04, 0, 0, 1, 1, 1, 0], ..Pkt::tcp(POD_A, 40000, SERVER, 443, SYN) };
    let p = nat_port_candidates(&key_of(&with_options))[0];
    let got = assert_snat(&gw.tunnel_in(&with_options.frame(), SLOT, NODE_A), &with_options, p);
    assert_eq!(got.ttl, 63);
    let last_hop = Pkt::tcp(POD_A, 40002, SERVER, 443, SYN).ttl(2);
    let p = nat_port_candidates(&key_of(&last_hop))[0];
    assert_eq!(assert_snat(&gw.tunnel_in(&last_hop.frame(), SLOT, NODE_A), &last_hop, p).ttl, 1);
}

#[test]
fn replies_with_ttl_one_are_dropped() {
    let mut gw = Gateway::new();
    let syn = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN);
    let got = parse(&gw.tunnel_in(&syn.frame(), SLOT, NODE_A).packet);
    let synack = reply_to(&got, L4::Tcp { sport: 443, dport: got.sport, flags: SYN | ACK }).ttl(1);
    assert_eq!(gw.reply(&synack.frame()).r0, SHOT);
    assert_eq!(gw.stat(Stat::TtlExceeded).0, 1);
}

#[test]
fn a_new_egress_ip_for_the_slot_makes_a_new_mapping() {
    let mut gw = Gateway::new();
    let syn = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN);
    gw.tunnel_in(&syn.frame(), SLOT, NODE_A);
    let new_ip = Ipv4Addr::new(198, 51, 100, 2);
    let s = egret_bpf::templates::GatewaySlot {
        slot: SLOT,
        egress_ip: new_ip,
        egress_ip6: EGRESS_IP6,
        egress_ifindex: EGRESS_IFINDEX,
        floating: false,
    };
    gw.maps.update(egret_bpf::templates::map::GW_SLOTS, &s.key(), &s.value(), 0).expect("update");
    let out = gw.tunnel_in(&syn.frame(), SLOT, NODE_A);
    assert_eq!(parse(&out.packet).src, new_ip);
    assert_eq!(gw.fnat(&key_of(&syn)).map(|f| f.egress_ip), Some(new_ip));
    assert_eq!(gw.stat(Stat::NatCreated).0, 2);
}

// ----- gateway probes ---------------------------------------------------------------

use egret_bpf::templates::map as maps_of;
use egret_bpf::templates::probe::{self, Kind, Probe, ProbeRx};

#[test]
fn a_probe_request_is_answered_back_through_the_tunnel() {
    let mut gw = Gateway::new();
    let req = probe_request(41, NODE_A, 123_456_789);
    let frame = req.frame();
    let out = gw.tunnel_in(&frame, probe::VNI, NODE_A);
    assert_eq!(out.r0, REDIRECT);
    assert_eq!(
        out.effects.redirect,
        Some(Redirect { ifindex: 1, flags: 0, kind: RedirectKind::Redirect }),
        "egress of the device it came in on (skb->ifindex), flags 0"
    );
    let key = out.effects.tunnel_key.as_ref().expect("tunnel key set");
    assert_eq!(key.key.tunnel_id, probe::VNI);
    assert_eq!(key.key.remote, IpAddr::V4(NODE_A), "back to the requester");
    assert_eq!(key.key.local, Some(IpAddr::V4(GATEWAY_UNDERLAY)), "from the address it probed");
    assert_eq!((key.key.ttl, key.key.tos, key.flags, key.size), (64, 0, 0, 44));
    // the frame is the request with kind = reply, nothing else changed
    let mut want = frame;
    want[probe::OFF_KIND] = probe::KIND_REPLY;
    assert_eq!(out.packet, want);
    assert_eq!(Probe::from_frame(&out.packet), Some(Probe { kind: Kind::Reply, ..req }));
    assert_eq!(gw.stat(Stat::ProbeAnswered), (1, frame.len() as u64));
    assert!(gw.maps.keys(maps_of::PROBE_RX).expect("keys").is_empty(), "a request records nothing");
    assert_eq!(gw.stat(Stat::Snat).0 + gw.stat(Stat::ReplyDelivered).0, 0);
}

#[test]
fn a_probe_reply_is_recorded_and_dropped() {
    let mut gw = Gateway::new();
    gw.now = 5_000_000_000;
    let reply = Probe { kind: Kind::Reply, ..probe_request(7, GATEWAY_UNDERLAY, 4_999_000_000) };
    let out = gw.tunnel_in(&reply.frame(), probe::VNI, NODE_B);
    assert_eq!(out.r0, SHOT, "nobody else sees it");
    assert!(out.effects.redirect.is_none() && out.effects.stores.is_empty() && out.effects.tunnel_key.is_none());
    let got = gw.maps.lookup(maps_of::PROBE_RX, &ProbeRx::key(NODE_B)).expect("lookup").expect("entry");
    assert_eq!(ProbeRx::from_bytes(&got), Some(ProbeRx { seq: 7, sent_ns: 4_999_000_000, recv_ns: 5_000_000_000 }));
    assert_eq!(&got[4..8], &[0; 4], "padding");
    assert_eq!(gw.stat(Stat::ProbeReply), (1, probe::FRAME_LEN as u64));
    // a later reply of the same node replaces it
    gw.now += 1_000;
    let newer = Probe { seq: 8, ..reply };
    assert_eq!(gw.tunnel_in(&newer.frame(), probe::VNI, NODE_B).r0, SHOT);
    let got = gw.maps.lookup(maps_of::PROBE_RX, &ProbeRx::key(NODE_B)).expect("lookup").expect("entry");
    assert_eq!(ProbeRx::from_bytes(&got).map(|r| (r.seq, r.recv_ns)), Some((8, gw.now)));
    assert_eq!(gw.maps.keys(maps_of::PROBE_RX).expect("keys").len(), 1);
    for s in Stat::ALL {
        if s.is_drop() {
            assert_eq!(gw.stat(s).0, 0, "{}", s.name());
        }
    }
}

/// Probe frames the program must refuse, with the reason.
fn bad_probes() -> Vec<(&'static str, Vec<u8>, u32, Stat)> {
    let good = probe_request(1, NODE_A, 2).frame();
    let with = |at: usize, byte: u8| {
        let mut f = good;
        f[at] = byte;
        f.to_vec()
    };
    vec![
        ("VNI of an egress slot", good.to_vec(), SLOT, Stat::Malformed),
        ("VNI 1", good.to_vec(), 1, Stat::Malformed),
        ("wrong magic", with(probe::OFF_MAGIC, b'X'), probe::VNI, Stat::Malformed),
        ("wrong magic, last byte", with(probe::OFF_MAGIC + 3, b'Q'), probe::VNI, Stat::Malformed),
        ("version 2", with(probe::OFF_VERSION, 2), probe::VNI, Stat::Malformed),
        ("kind 0", with(probe::OFF_KIND, 0), probe::VNI, Stat::Malformed),
        ("kind 3", with(probe::OFF_KIND, 3), probe::VNI, Stat::Malformed),
        ("short", good[..probe::PAYLOAD_END - 1].to_vec(), probe::VNI, Stat::Malformed),
        ("ethertype only", good[..14].to_vec(), probe::VNI, Stat::Malformed),
    ]
}

#[test]
fn bad_probes_are_malformed_and_untouched() {
    let mut gw = Gateway::new();
    let cases = bad_probes();
    for (what, f, vni, reason) in &cases {
        let out = gw.tunnel_in(f, *vni, NODE_A);
        assert_eq!(out.r0, SHOT, "{what}");
        assert_eq!(&out.packet, f, "{what}");
        assert!(out.effects.redirect.is_none() && out.effects.tunnel_key.is_none(), "{what}");
        assert_eq!(*reason, Stat::Malformed);
    }
    assert_eq!(gw.stat(Stat::Malformed).0, cases.len() as u64);
    assert!(gw.maps.keys(maps_of::PROBE_RX).expect("keys").is_empty());
    // without tunnel metadata: no-tunnel-key, as for any egret0 packet
    let mut input = RunInput::for_frame(&probe_request(1, NODE_A, 2).frame());
    input.ktime_ns = gw.now;
    assert_eq!(gw.run(Template::TunnelIn, &input).r0, SHOT);
    assert_eq!(gw.stat(Stat::NoTunnelKey).0, 1);
    // a frame too short for an Ethernet header
    assert_eq!(gw.tunnel_in(&[0u8; 13], probe::VNI, NODE_A).r0, SHOT);
    assert_eq!(gw.stat(Stat::Malformed).0, cases.len() as u64 + 1);
    assert_eq!(gw.stat(Stat::ProbeAnswered).0 + gw.stat(Stat::ProbeReply).0, 0);
}

#[test]
fn non_probe_traffic_on_the_tunnel_is_unchanged_by_the_probe_path() {
    let mut gw = Gateway::new();
    // egress through the gateway: exactly as before
    let syn = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN);
    let port = nat_port_candidates(&key_of(&syn))[0];
    assert_snat(&gw.tunnel_in(&syn.frame(), SLOT, NODE_A), &syn, port);
    // neither IPv4 nor IPv6: not-ip, whatever its length; a truncated IPv4 or
    // IPv6 header: malformed
    assert_eq!(gw.tunnel_in(&arp_frame()[..20], SLOT, NODE_A).r0, SHOT);
    assert_eq!(gw.tunnel_in(&arp_frame(), SLOT, NODE_A).r0, SHOT);
    assert_eq!(gw.stat(Stat::NotIp).0, 2);
    assert_eq!(gw.tunnel_in(&syn.frame()[..30], SLOT, NODE_A).r0, SHOT);
    let syn6 = Pkt::tcp(POD_A6, 40000, SERVER6, 443, SYN);
    assert_eq!(gw.tunnel_in(&syn6.frame()[..50], SLOT, NODE_A).r0, SHOT);
    assert_eq!(gw.stat(Stat::Malformed).0, 2);
    // the probe ethertype with VNI 0 but an IPv4-looking payload is still a (bad) probe
    let mut f = Pkt::udp(POD_A, 1, SERVER, 53).frame();
    f[12..14].copy_from_slice(&probe::ETHERTYPE.to_be_bytes());
    assert_eq!(gw.tunnel_in(&f, probe::VNI, NODE_A).r0, SHOT);
    assert_eq!(gw.stat(Stat::Malformed).0, 3);
    assert_eq!(gw.stat(Stat::ProbeAnswered).0 + gw.stat(Stat::ProbeReply).0, 0);
    assert_eq!(gw.stat(Stat::Snat).0, 1);
}

// ----- floating slots ---------------------------------------------------------------

fn set_owner(gw: &mut Gateway, owner: Option<IpAddr>) {
    let (m, k, v) = float_owner(owner);
    gw.maps.update(m, &k, &v, 0).expect("owner");
}

fn assert_forwarded(out: &RunOutcome, sent: &[u8], owner: impl Into<IpAddr>) {
    let owner = owner.into();
    assert_eq!(out.r0, REDIRECT);
    assert_eq!(
        out.effects.redirect,
        Some(Redirect { ifindex: TUNNEL_IFINDEX, flags: 0, kind: RedirectKind::Redirect }),
        "egress of egret0 (%tunnel_ifindex), flags 0"
    );
    let key = out.effects.tunnel_key.as_ref().expect("tunnel key set");
    assert_eq!(key.key.tunnel_id, FLOAT_SLOT);
    assert_eq!(key.key.remote, owner, "to the owner");
    assert_eq!((key.key.ttl, key.key.local, key.flags), (64, None, family_flags(owner)));
    assert_eq!(out.packet, sent, "forwarded unchanged: the owner translates it");
    assert!(out.effects.stores.is_empty() && out.effects.map_updates.is_empty(), "no NAT state here");
}

/// The reply a server sends to `got` (translated to [`FLOAT_IP`]).
fn float_reply_to(got: &Parsed) -> Pkt {
    reply_to(got, L4::Tcp { sport: got.dport, dport: got.sport, flags: SYN | ACK })
}

#[test]
fn the_owner_of_a_floating_slot_snats_like_any_gateway() {
    let mut gw = Gateway::new();
    set_owner(&mut gw, None);
    let syn = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN);
    let out = gw.tunnel_in(&syn.frame(), FLOAT_SLOT, NODE_A);
    assert_eq!(out.r0, REDIRECT);
    let got = parse(&out.packet);
    assert_eq!((got.src, got.ttl, got.ip_csum_ok, got.l4_csum_ok), (IpAddr::from(FLOAT_IP), 63, true, Some(true)));
    let rkey = NatKey { src: FLOAT_IP, dst: SERVER, sport: got.sport, dport: 443, proto: TCP };
    let state = gw.rnat(&rkey).expect("reverse entry");
    assert_eq!((state.node, state.slot), (NODE_A.into(), FLOAT_SLOT));
    let back = gw.reply(&float_reply_to(&got).frame());
    assert_eq!(back.r0, REDIRECT);
    let key = back.effects.tunnel_key.expect("tunnelled back");
    assert_eq!((key.key.tunnel_id, key.key.remote), (FLOAT_SLOT, IpAddr::V4(NODE_A)));
    // a local pod too
    let out = gw.local(&Pkt::udp(POD_LOCAL, 5353, SERVER, 53).frame(), FLOAT_SLOT);
    assert_eq!((out.r0, parse(&out.packet).src), (REDIRECT, IpAddr::from(FLOAT_IP)));
    assert_eq!(gw.stat(Stat::Snat).0, 2);
    assert_eq!(gw.stat(Stat::Forwarded).0 + gw.stat(Stat::NoOwner).0, 0);
}

#[test]
fn a_floating_slot_owned_elsewhere_is_forwarded_to_the_owner() {
    let mut gw = Gateway::new();
    set_owner(&mut gw, Some(OTHER_GW.into()));
    // from a pod's node through the tunnel
    let f = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).frame();
    assert_forwarded(&gw.tunnel_in(&f, FLOAT_SLOT, NODE_A), &f, OTHER_GW);
    // from a pod of this node (egret_gw_local)
    let f = Pkt::udp(POD_LOCAL, 5353, SERVER, 53).frame();
    assert_forwarded(&gw.local(&f, FLOAT_SLOT), &f, OTHER_GW);
    // forwarding comes after the source checks: a spoofed source is still dropped
    let out = gw.tunnel_in(&Pkt::udp(POD_A, 1, SERVER, 53).frame(), FLOAT_SLOT, NODE_B);
    assert_eq!(out.r0, SHOT);
    assert_eq!(gw.stat(Stat::SpoofedSource).0, 1);
    // and before the L4 checks: the owner decides about those
    let f = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).ttl(1).frame();
    assert_forwarded(&gw.tunnel_in(&f, FLOAT_SLOT, NODE_A), &f, OTHER_GW);
    assert_eq!(
        gw.stat(Stat::Forwarded),
        (
            3,
            2 * Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).frame().len() as u64
                + Pkt::udp(POD_LOCAL, 5353, SERVER, 53).frame().len() as u64
        )
    );
    assert_eq!(gw.stat(Stat::Snat).0 + gw.stat(Stat::NatCreated).0, 0);
    // the owner moves here: the same flow is translated
    set_owner(&mut gw, None);
    let out = gw.tunnel_in(&Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).frame(), FLOAT_SLOT, NODE_A);
    assert_eq!((out.r0, parse(&out.packet).src), (REDIRECT, IpAddr::from(FLOAT_IP)));
}

#[test]
fn a_floating_slot_without_an_owner_drops() {
    let mut gw = Gateway::new();
    let f = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).frame();
    let out = gw.tunnel_in(&f, FLOAT_SLOT, NODE_A);
    assert_eq!((out.r0, &out.packet), (SHOT, &f));
    assert!(out.effects.redirect.is_none() && out.effects.tunnel_key.is_none());
    let out = gw.local(&Pkt::udp(POD_LOCAL, 5353, SERVER, 53).frame(), FLOAT_SLOT);
    assert_eq!(out.r0, SHOT);
    // an entry that names nobody and is not ours: the same
    let nobody =
        egret_bpf::templates::FloatOwner { slot: FLOAT_SLOT, owner: Ipv4Addr::UNSPECIFIED.into(), is_self: false };
    gw.maps.update(maps_of::FLOAT_OWNER, &nobody.key(), &nobody.value(), 0).expect("owner");
    assert_eq!(gw.tunnel_in(&f, FLOAT_SLOT, NODE_A).r0, SHOT);
    assert_eq!(gw.stat(Stat::NoOwner).0, 3);
    assert_eq!(gw.stat(Stat::Forwarded).0 + gw.stat(Stat::Snat).0, 0);
}

#[test]
fn a_peer_forwards_other_nodes_pods_but_is_never_forwarded_to() {
    let mut gw = Gateway::new();
    set_owner(&mut gw, None);
    // the peer forwards node A's pod: allowed, translated, replies straight to node A
    let syn = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN);
    let out = gw.tunnel_in(&syn.frame(), FLOAT_SLOT, PEER_GW);
    assert_eq!(out.r0, REDIRECT);
    let got = parse(&out.packet);
    assert_eq!(got.src, FLOAT_IP);
    let rkey = NatKey { src: FLOAT_IP, dst: SERVER, sport: got.sport, dport: 443, proto: TCP };
    assert_eq!(gw.rnat(&rkey).map(|r| r.node), Some(NODE_A.into()), "the allowed entry's node, not the forwarder");
    let back = gw.reply(&float_reply_to(&got).frame());
    assert_eq!(back.effects.tunnel_key.map(|k| k.key.remote), Some(IpAddr::V4(NODE_A)));
    // a pod allowed from any node: replies go to the tunnel remote (the forwarder)
    let out = gw.tunnel_in(&Pkt::udp(POD_ANY, 7, SERVER, 53).frame(), FLOAT_SLOT, PEER_GW);
    let got = parse(&out.packet);
    let rkey = NatKey { src: FLOAT_IP, dst: SERVER, sport: got.sport, dport: 53, proto: UDP };
    assert_eq!(gw.rnat(&rkey).map(|r| r.node), Some(PEER_GW.into()));
    // a node that is neither the pod's nor a peer
    assert_eq!(gw.tunnel_in(&syn.frame(), FLOAT_SLOT, OTHER_GW).r0, SHOT);
    assert_eq!(gw.stat(Stat::SpoofedSource).0, 1);
    // an ordinary slot ignores peers (even with an egret_gw_peers entry for it)
    assert_eq!(gw.tunnel_in(&syn.frame(), SLOT, PEER_GW).r0, SHOT);
    assert_eq!(gw.stat(Stat::SpoofedSource).0, 2);

    // the owner is elsewhere now: what the peer sends is dropped, never bounced
    for owner in [OTHER_GW, PEER_GW] {
        set_owner(&mut gw, Some(owner.into()));
        let out = gw.tunnel_in(&syn.frame(), FLOAT_SLOT, PEER_GW);
        assert_eq!((out.r0, out.effects.redirect), (SHOT, None), "owner {owner}");
    }
    assert_eq!(gw.stat(Stat::NoOwner).0, 2);
    // while the pod's own node is still forwarded
    let f = syn.frame();
    assert_forwarded(&gw.tunnel_in(&f, FLOAT_SLOT, NODE_A), &f, PEER_GW);
}

#[test]
fn a_pod_on_the_owner_whose_first_candidate_is_here_goes_back_to_the_owner() {
    let mut gw = Gateway::new();
    set_owner(&mut gw, Some(PEER_GW.into()));
    // straight from its node (the owner, a peer): forwarded back, not dropped
    let f = Pkt::tcp(POD_ON_PEER, 40000, SERVER, 443, SYN).frame();
    assert_forwarded(&gw.tunnel_in(&f, FLOAT_SLOT, PEER_GW), &f, PEER_GW);
    assert_eq!((gw.stat(Stat::Forwarded).0, gw.stat(Stat::NoOwner).0), (1, 0));
    // the same pod's packet arriving from anyone else is spoofed
    assert_eq!(gw.tunnel_in(&f, FLOAT_SLOT, NODE_A).r0, SHOT);
    assert_eq!(gw.stat(Stat::SpoofedSource).0, 1);
}

#[test]
fn the_owner_translates_its_own_pod_forwarded_back_by_a_peer() {
    let mut gw = Gateway::new();
    set_owner(&mut gw, None);
    let syn = Pkt::tcp(POD_LOCAL, 40000, SERVER, 443, SYN);
    let out = gw.tunnel_in(&syn.frame(), FLOAT_SLOT, PEER_GW);
    assert_eq!(out.r0, REDIRECT);
    let got = parse(&out.packet);
    assert_eq!(got.src, FLOAT_IP);
    let rkey = NatKey { src: FLOAT_IP, dst: SERVER, sport: got.sport, dport: 443, proto: TCP };
    let state = gw.rnat(&rkey).expect("reverse entry");
    assert_eq!((state.flags, state.node), (RV_F_LOCAL, Ipv4Addr::UNSPECIFIED.into()), "a local pod's state");
    // its replies go to its veth, as for any local pod
    let back = gw.reply(&float_reply_to(&got).frame());
    assert_eq!(back.r0, REDIRECT);
    assert_eq!(
        back.effects.redirect,
        Some(Redirect {
            ifindex: POD_LOCAL_IFINDEX,
            flags: 0,
            kind: RedirectKind::Neigh { nexthop: Some(IpAddr::V4(POD_LOCAL)) }
        })
    );
    // only a peer of the floating slot may send it: another node, or an ordinary slot, is spoofing
    assert_eq!(gw.tunnel_in(&syn.frame(), FLOAT_SLOT, OTHER_GW).r0, SHOT);
    assert_eq!(gw.tunnel_in(&syn.frame(), SLOT, PEER_GW).r0, SHOT);
    assert_eq!(gw.stat(Stat::SpoofedSource).0, 2);
    // owned elsewhere now: the peer forwarded it here, so it is not bounced on
    set_owner(&mut gw, Some(OTHER_GW.into()));
    let out = gw.tunnel_in(&syn.frame(), FLOAT_SLOT, PEER_GW);
    assert_eq!((out.r0, out.effects.redirect), (SHOT, None));
    assert_eq!(gw.stat(Stat::NoOwner).0, 1);
}

#[test]
fn ordinary_slots_ignore_the_owner_map() {
    let mut gw = Gateway::new();
    // an owner entry for the ordinary slot's id changes nothing
    let o = egret_bpf::templates::FloatOwner { slot: SLOT, owner: OTHER_GW.into(), is_self: false };
    gw.maps.update(maps_of::FLOAT_OWNER, &o.key(), &o.value(), 0).expect("owner");
    let syn = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN);
    let port = nat_port_candidates(&key_of(&syn))[0];
    assert_snat(&gw.tunnel_in(&syn.frame(), SLOT, NODE_A), &syn, port);
    let rkey = NatKey { src: EGRESS_IP, dst: SERVER, sport: port, dport: 443, proto: TCP };
    assert_eq!(gw.rnat(&rkey).map(|r| r.node), Some(NODE_A.into()));
    // any-node pods keep the tunnel remote as their reply node
    let q = Pkt::udp(POD_ANY, 9, SERVER, 53);
    let out = gw.tunnel_in(&q.frame(), SLOT, NODE_B);
    let got = parse(&out.packet);
    let rkey = NatKey { src: EGRESS_IP, dst: SERVER, sport: got.sport, dport: 53, proto: UDP };
    assert_eq!(gw.rnat(&rkey).map(|r| r.node), Some(NODE_B.into()));
    assert_eq!(gw.stat(Stat::Forwarded).0 + gw.stat(Stat::NoOwner).0, 0);
}

// ----- IPv6 -------------------------------------------------------------------------
// The same SNAT path and reply path, expanded for IPv6 (snat.s, gw_reply.s):
// egress IPv6 from the slot, keys and state in egret_nat_v6 / egret_rnat_v6,
// checksums over the IPv6 pseudo-header (ICMPv6 too), the hop limit decremented.

fn key6(p: &Pkt) -> NatKey<Ipv6Addr> {
    p.nat_key()
}

#[test]
fn ipv6_tcp_udp_and_icmpv6_echo_are_snatted_and_tunnelled_back() {
    let mut gw = Gateway::new();
    let flows = [
        (Pkt::tcp(POD_A6, 40000, SERVER6, 443, SYN), L4::Tcp { sport: 443, dport: 0, flags: SYN | ACK }, 40000),
        (Pkt::udp(POD_A6, 5353, SERVER6, 53), L4::Udp { sport: 53, dport: 0, csum: true }, 5353),
        (Pkt::icmp(POD_A6, SERVER6, ICMP6_ECHO, 0x4242), L4::Icmp { ty: ICMP6_ECHO_REPLY, id: 0, seq: 7 }, 0x4242),
    ];
    for (i, (sent, answer, pod_port)) in flows.into_iter().enumerate() {
        let port = nat_port_candidates(&key6(&sent))[0];
        let out = gw.tunnel_in(&sent.frame(), SLOT, NODE_A);
        let got = assert_snat_to(&out, &sent, port, EGRESS_IP6.into());
        assert_eq!(gw.stat(Stat::Snat).0, i as u64 + 1);
        let k = key6(&sent);
        let rkey = NatKey { src: EGRESS_IP6, dst: SERVER6, sport: port, dport: k.dport, proto: k.proto };
        let state = gw.rnat(&rkey).expect("reverse entry in egret_rnat_v6");
        assert_eq!((state.orig_src, state.orig_sport, state.node, state.slot), (POD_A6, pod_port, NODE_A.into(), SLOT));
        let fwd = gw.fnat(&k).expect("forward entry in egret_nat_v6");
        assert_eq!((fwd.egress_ip, fwd.nat_port, fwd.slot), (EGRESS_IP6, port, SLOT));
        // nothing of it in the IPv4 tables
        assert!(gw.maps.keys(egret_bpf::templates::map::NAT_V4).expect("keys").is_empty());
        let answer = match answer {
            L4::Tcp { sport, flags, .. } => L4::Tcp { sport, dport: port, flags },
            L4::Udp { sport, csum, .. } => L4::Udp { sport, dport: port, csum },
            L4::Icmp { ty, seq, .. } => L4::Icmp { ty, id: port, seq },
            other => other,
        };
        let reply = reply_to(&got, answer);
        let out = gw.reply(&reply.frame());
        assert_tunnelled_back(&out, &reply, POD_A6, pod_port, NODE_A);
        assert_eq!(gw.rnat(&rkey).map(|r| r.flags & RV_F_SEEN_REPLY), Some(RV_F_SEEN_REPLY));
    }
    assert_eq!(gw.stat(Stat::ReplyTunnelled).0, 3);
    assert_eq!(gw.stat(Stat::NatCreated).0, 3);
}

#[test]
fn ipv6_local_pods_egress_and_get_replies_on_their_veth() {
    let mut gw = Gateway::new();
    let syn = Pkt::tcp(POD_LOCAL6, 40000, SERVER6, 443, SYN);
    let port = nat_port_candidates(&key6(&syn))[0];
    let got = assert_snat_to(&gw.local(&syn.frame(), SLOT), &syn, port, EGRESS_IP6.into());
    let synack = reply_to(&got, L4::Tcp { sport: 443, dport: port, flags: SYN | ACK });
    let out = gw.reply(&synack.frame());
    assert_eq!(
        out.effects.redirect,
        Some(Redirect {
            ifindex: POD_LOCAL_IFINDEX,
            flags: 0,
            kind: RedirectKind::Neigh { nexthop: Some(IpAddr::V6(POD_LOCAL6)) }
        }),
        "to the pod's veth, the pod (AF_INET6) as next hop"
    );
    let back = parse(&out.packet);
    assert_eq!((back.dst, back.dport, back.ttl, back.l4_csum_ok), (IpAddr::from(POD_LOCAL6), 40000, 49, Some(true)));
    assert_eq!(gw.stat(Stat::ReplyLocal).0, 1);
    // a remote pod's IPv6 from a local veth is spoofed
    assert_eq!(gw.local(&Pkt::tcp(POD_A6, 1, SERVER6, 443, SYN).frame(), SLOT).r0, SHOT);
    assert_eq!(gw.stat(Stat::SpoofedSource).0, 1);
}

#[test]
fn a_source_node_delivers_tunnelled_ipv6_replies_to_its_pod() {
    let (programs, mut maps) = source_node();
    let reply = Pkt::tcp(SERVER6, 443, POD_A6, 40000, SYN | ACK);
    let mut input = RunInput::for_frame(&reply.frame());
    input.tunnel = Some(tunnel_key(SLOT, Ipv4Addr::new(192, 0, 2, 1)));
    let out = egret_bpf::interp::run(&programs[&Template::TunnelIn], &mut maps, &input).expect("runs");
    assert_eq!(
        out.effects.redirect,
        Some(Redirect { ifindex: 21, flags: 0, kind: RedirectKind::Neigh { nexthop: Some(IpAddr::V6(POD_A6)) } })
    );
    assert_eq!(out.packet, reply.frame(), "delivered as is");
    assert_eq!(stat_of(&maps, Stat::ReplyDelivered).0, 1);
}

#[test]
fn ipv6_drops_by_reason_and_fails_closed() {
    let mut gw = Gateway::new();
    let udp = Pkt::udp(POD_A6, 1, SERVER6, 53);
    let with_ext = |next: u8| {
        // one 8-byte extension header (hop-by-hop layout) naming UDP after it
        let mut p = udp.clone();
        p.options = vec![17, 0, 0, 0, 0, 0, 0, 0];
        let mut f = p.frame();
        f[20] = next;
        f
    };
    let cases: Vec<(&str, Vec<u8>, u32, Ipv4Addr, Stat)> = vec![
        ("not allowed", Pkt::udp(POD_NOT_ALLOWED6, 1, SERVER6, 53).frame(), SLOT, NODE_A, Stat::SpoofedSource),
        ("another node's pod", udp.frame(), SLOT, NODE_B, Stat::SpoofedSource),
        ("slot without an IPv6 egress IP", udp.frame(), SLOT_NO_IP, NODE_A, Stat::NoEgressIp),
        ("floating slot (IPv4 only)", udp.frame(), FLOAT_SLOT, NODE_A, Stat::NoEgressIp),
        ("unknown slot", udp.frame(), SLOT_UNKNOWN, NODE_A, Stat::NoEgressIp),
        ("hop-by-hop header", with_ext(0), SLOT, NODE_A, Stat::UnsupportedProto),
        ("fragment header", with_ext(44), SLOT, NODE_A, Stat::Fragment),
        (
            "ICMPv6 other than echo request",
            Pkt::icmp(POD_A6, SERVER6, 2, 0).frame(),
            SLOT,
            NODE_A,
            Stat::UnsupportedProto,
        ),
        ("hop limit 1", udp.clone().ttl(1).frame(), SLOT, NODE_A, Stat::TtlExceeded),
        ("truncated L4", udp.frame()[..58].to_vec(), SLOT, NODE_A, Stat::Malformed),
        (
            "version 4 in an IPv6 frame",
            {
                let mut f = udp.frame();
                f[14] = 0x40;
                f
            },
            SLOT,
            NODE_A,
            Stat::Malformed,
        ),
    ];
    for (what, f, slot, node, reason) in &cases {
        let before = gw.stat(*reason).0;
        let out = gw.tunnel_in(f, *slot, *node);
        assert_eq!(out.r0, SHOT, "{what}");
        assert_eq!(&out.packet, f, "{what}: untouched");
        assert_eq!(gw.stat(*reason).0, before + 1, "{what}: counted {}", reason.name());
    }
    assert_eq!(gw.stat(Stat::Snat).0, 0);
    // replies that match nothing, fragments and other ICMPv6 pass untouched
    for f in [
        Pkt::tcp(SERVER6, 443, EGRESS_IP6, 61000, ACK).frame(),
        Pkt::icmp(SERVER6, EGRESS_IP6, 135, 0).frame(), // neighbour solicitation
        {
            let mut p = Pkt::udp(SERVER6, 53, EGRESS_IP6, 61000);
            p.options = vec![17, 0, 0, 0, 0, 0, 0, 0];
            let mut f = p.frame();
            f[20] = 44;
            f
        },
    ] {
        let out = gw.reply(&f);
        assert_eq!((out.r0, &out.packet), (UNSPEC, &f));
    }
}

#[test]
fn a_thousand_ipv6_connections_get_distinct_ports() {
    let mut gw = Gateway::new();
    let mut ports = std::collections::BTreeSet::new();
    for i in 0..1000u16 {
        let syn = Pkt::tcp(POD_A6, 20000 + i, SERVER6, 443, SYN);
        let out = gw.tunnel_in(&syn.frame(), SLOT, NODE_A);
        assert_eq!(out.r0, REDIRECT, "connection {i}");
        ports.insert(parse(&out.packet).sport);
    }
    assert_eq!(ports.len(), 1000, "every connection its own port");
    assert_eq!(gw.stat(Stat::NatCreated).0, 1000);
    assert_eq!(gw.maps.keys(egret_bpf::templates::map::RNAT_V6).expect("keys").len(), 1000);
}

#[test]
fn the_ipv6_flow_hash_is_the_one_rust_computes() {
    // the bucket the program probes first is `nat_port_candidates`' first
    let mut gw = Gateway::new();
    for i in 0..50u16 {
        let q = Pkt::udp(POD_B6, 1000 + i * 7, SERVER6, 53 + i);
        let out = gw.tunnel_in(&q.frame(), SLOT, NODE_B);
        assert_eq!(parse(&out.packet).sport, nat_port_candidates(&key6(&q))[0]);
    }
}

// ----- ICMP errors about translated connections (PMTUD through the gateway) ---------

/// A router beyond the gateway.
const ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
/// Its IPv6.
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0xfe);

/// `err` (an ICMP error about a translated packet) came back translated to
/// `pod`/`pod_port`, every checksum right, counted.
fn assert_error_translated(out: &RunOutcome, err: &Pkt, pod: IpAddr, pod_port: u16) -> InnerOfError {
    assert_eq!(out.r0, REDIRECT, "translated and sent on");
    let got = parse(&out.packet);
    let before = parse(&err.frame());
    assert_eq!((got.src, got.dst, got.ttl), (before.src, pod, before.ttl - 1));
    assert!(got.ip_csum_ok, "outer IPv4 header checksum");
    assert_eq!(got.l4_csum_ok, Some(true), "ICMP checksum (IPv6: with the pseudo-header)");
    let inner = inner_of_error(&out.packet);
    assert_eq!((inner.src, inner.sport), (pod, pod_port), "the datagram as the pod sent it");
    assert!(inner.ip_csum_ok, "inner IPv4 header checksum");
    assert_eq!(out.packet.len(), err.frame().len());
    inner
}

#[test]
fn fragmentation_needed_about_a_tcp_connection_reaches_the_pod_translated() {
    let mut gw = Gateway::new();
    let syn = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN | ACK);
    let out = gw.tunnel_in(&syn.frame(), SLOT, NODE_A);
    let port = parse(&out.packet).sport;
    let rkey = NatKey { src: EGRESS_IP, dst: SERVER, sport: port, dport: 443, proto: TCP };
    let expires = gw.rnat(&rkey).expect("mapping").expires_ns;
    // a router with a smaller MTU answers the full-size segment with type 3 code 4
    let err = icmp_error_about(&out.packet, ROUTER.into(), 3, 4, 1300, 28);
    gw.now += 5_000;
    let back = gw.reply(&err.frame());
    assert_tunnelled_back_raw(&back, NODE_A);
    let inner = assert_error_translated(&back, &err, POD_A.into(), 40000);
    assert_eq!((inner.dst, inner.dport, inner.proto), (IpAddr::from(SERVER), 443, TCP));
    assert_eq!(u32::from_be_bytes(back.packet[38..42].try_into().expect("4")), 1300, "the MTU is kept");
    assert_eq!(gw.stat(Stat::IcmpError).0, 1);
    assert_eq!(gw.stat(Stat::ReplyTunnelled).0, 1);
    assert_eq!(gw.rnat(&rkey).expect("mapping").expires_ns, expires, "an error does not refresh the state");
}

/// The tunnel part of [`assert_tunnelled_back`] alone.
fn assert_tunnelled_back_raw(out: &RunOutcome, node: Ipv4Addr) {
    assert_eq!(
        out.effects.redirect,
        Some(Redirect { ifindex: TUNNEL_IFINDEX, flags: 0, kind: RedirectKind::Redirect })
    );
    let key = out.effects.tunnel_key.as_ref().expect("tunnel key set");
    assert_eq!((key.key.tunnel_id, key.key.remote), (SLOT, IpAddr::V4(node)));
}

#[test]
fn icmp_errors_about_udp_and_echo_and_for_local_pods_are_translated() {
    let mut gw = Gateway::new();
    // UDP from a pod on another node: time exceeded
    let q = Pkt::udp(POD_B, 5353, SERVER, 53);
    let out = gw.tunnel_in(&q.frame(), SLOT, NODE_B);
    let back = gw.reply(&icmp_error_about(&out.packet, ROUTER.into(), 11, 0, 0, 8).frame());
    assert_tunnelled_back_raw(&back, NODE_B);
    assert_error_translated(&back, &icmp_error_about(&out.packet, ROUTER.into(), 11, 0, 0, 8), POD_B.into(), 5353);
    // an echo request with DF from the gateway's own pod: fragmentation needed
    let ping = Pkt { frag: 0x4000, ..Pkt::icmp(POD_LOCAL, SERVER, 8, 0x4242) };
    let out = gw.local(&ping.frame(), SLOT);
    let err = icmp_error_about(&out.packet, ROUTER.into(), 3, 4, 1280, 8);
    let back = gw.reply(&err.frame());
    assert_eq!(
        back.effects.redirect,
        Some(Redirect {
            ifindex: POD_LOCAL_IFINDEX,
            flags: 0,
            kind: RedirectKind::Neigh { nexthop: Some(IpAddr::V4(POD_LOCAL)) }
        })
    );
    let inner = assert_error_translated(&back, &err, POD_LOCAL.into(), 0x4242);
    assert_eq!(inner.proto, ICMP);
    assert_eq!(gw.stat(Stat::IcmpError).0, 2);
    assert_eq!(gw.stat(Stat::ReplyLocal).0, 1);
}

#[test]
fn packet_too_big_about_an_ipv6_connection_reaches_the_pod_translated() {
    let mut gw = Gateway::new();
    for (sent, node) in [
        (Pkt::tcp(POD_A6, 40000, SERVER6, 443, ACK), NODE_A),
        (Pkt::udp(POD_B6, 5353, SERVER6, 53), NODE_B),
        (Pkt::icmp(POD_A6, SERVER6, ICMP6_ECHO, 9), NODE_A),
    ] {
        let out = gw.tunnel_in(&sent.frame(), SLOT, node);
        assert_eq!(out.r0, REDIRECT);
        let err = icmp_error_about(&out.packet, ROUTER6.into(), 2, 0, 1280, 48);
        let back = gw.reply(&err.frame());
        assert_tunnelled_back_raw(&back, node);
        let pod_port = match sent.l4 {
            L4::Tcp { sport, .. } | L4::Udp { sport, .. } => sport,
            L4::Icmp { id, .. } => id,
            _ => unreachable!(),
        };
        let inner = assert_error_translated(&back, &err, sent.src, pod_port);
        assert_eq!(inner.dst, IpAddr::from(SERVER6));
    }
    // time exceeded and unreachable too; a local pod gets it on its veth
    let out = gw.local(&Pkt::udp(POD_LOCAL6, 7, SERVER6, 53).frame(), SLOT);
    for (ty, code) in [(3, 0), (1, 4)] {
        let err = icmp_error_about(&out.packet, ROUTER6.into(), ty, code, 0, 8);
        let back = gw.reply(&err.frame());
        assert_error_translated(&back, &err, POD_LOCAL6.into(), 7);
    }
    assert_eq!(gw.stat(Stat::IcmpError).0, 5);
}

#[test]
fn icmp_errors_that_match_no_connection_pass_untouched() {
    let mut gw = Gateway::new();
    let out = gw.tunnel_in(&Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).frame(), SLOT, NODE_A);
    let sent = out.packet;
    let out6 = gw.tunnel_in(&Pkt::tcp(POD_A6, 40000, SERVER6, 443, SYN).frame(), SLOT, NODE_A);
    let sent6 = out6.packet;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // about a tuple nobody translated (another port)
    let mut other = sent.clone();
    other[34..36].copy_from_slice(&1u16.to_be_bytes());
    cases.push(("unknown tuple", icmp_error_about(&other, ROUTER.into(), 3, 4, 1300, 28).frame()));
    // addressed elsewhere than the datagram's source
    let mut f = icmp_error_about(&sent, ROUTER.into(), 3, 4, 1300, 28);
    f.dst = Ipv4Addr::new(198, 51, 100, 77).into();
    cases.push(("outer destination is not the inner source", f.frame()));
    // a redirect (type 5) is no error egret translates
    cases.push(("redirect", icmp_error_about(&sent, ROUTER.into(), 5, 1, 0, 28).frame()));
    // too little of the datagram to read its ports
    cases.push(("truncated", icmp_error_about(&sent, ROUTER.into(), 3, 4, 1300, 4).frame()));
    // about a non-first fragment
    let mut frag = sent.clone();
    frag[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
    cases.push(("non-first fragment", icmp_error_about(&frag, ROUTER.into(), 11, 1, 0, 28).frame()));
    // IPv6: unknown tuple, and an ICMPv6 type egret leaves alone (parameter problem)
    let mut other6 = sent6.clone();
    other6[54..56].copy_from_slice(&1u16.to_be_bytes());
    cases.push(("unknown IPv6 tuple", icmp_error_about(&other6, ROUTER6.into(), 2, 0, 1280, 48).frame()));
    cases.push(("parameter problem", icmp_error_about(&sent6, ROUTER6.into(), 4, 0, 0, 48).frame()));
    for (what, f) in &cases {
        let out = gw.reply(f);
        assert_eq!((out.r0, &out.packet), (UNSPEC, f), "{what}: passed untouched");
    }
    assert_eq!(gw.stat(Stat::IcmpError).0, 0);
}

// ----- IPv6 underlay ----------------------------------------------------------------
// A node whose underlay address is IPv6 (NODE6): its tunnel packets carry an IPv6
// remote, the gateway names it by that address in every map and tunnels replies back
// with an IPv6 key, whatever the inner family.

#[test]
fn pods_of_a_node_with_an_ipv6_underlay_are_snatted_and_tunnelled_back_over_ipv6() {
    let mut gw = Gateway::new();
    // an IPv4 pod
    let syn = Pkt::tcp(POD_U, 40000, SERVER, 443, SYN);
    let port = nat_port_candidates(&key_of(&syn))[0];
    let got = assert_snat(&gw.tunnel_in(&syn.frame(), SLOT, NODE6), &syn, port);
    let rkey = NatKey { src: EGRESS_IP, dst: SERVER, sport: port, dport: 443, proto: TCP };
    assert_eq!(gw.rnat(&rkey).map(|r| r.node), Some(IpAddr::V6(NODE6)), "the node by its IPv6 underlay address");
    let synack = reply_to(&got, L4::Tcp { sport: 443, dport: port, flags: SYN | ACK });
    assert_tunnelled_back(&gw.reply(&synack.frame()), &synack, POD_U, 40000, NODE6);
    // an IPv6 pod
    let q = Pkt::udp(POD_U6, 5353, SERVER6, 53);
    let port = nat_port_candidates(&key6(&q))[0];
    let got = assert_snat_to(&gw.tunnel_in(&q.frame(), SLOT, NODE6), &q, port, EGRESS_IP6.into());
    let rkey = NatKey { src: EGRESS_IP6, dst: SERVER6, sport: port, dport: 53, proto: UDP };
    assert_eq!(gw.rnat(&rkey).map(|r| r.node), Some(IpAddr::V6(NODE6)));
    let answer = reply_to(&got, L4::Udp { sport: 53, dport: port, csum: true });
    assert_tunnelled_back(&gw.reply(&answer.frame()), &answer, POD_U6, 5353, NODE6);
    assert_eq!((gw.stat(Stat::Snat).0, gw.stat(Stat::ReplyTunnelled).0), (2, 2));
}

#[test]
fn a_node_is_one_address_whatever_its_family() {
    let mut gw = Gateway::new();
    // POD_U is allowed from NODE6 only: from an IPv4 node, or another IPv6 one, it is spoofed
    let f = Pkt::udp(POD_U, 5353, SERVER, 53).frame();
    assert_eq!(gw.tunnel_in(&f, SLOT, NODE_A).r0, SHOT);
    assert_eq!(gw.tunnel_in(&f, SLOT, Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 7)).r0, SHOT);
    // NODE_A's IPv4 pod through an IPv6 tunnel remote whose low word is NODE_A's address
    let mapped_lookalike = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0xc000, 0x0202);
    assert_eq!(gw.tunnel_in(&Pkt::udp(POD_A, 5353, SERVER, 53).frame(), SLOT, mapped_lookalike).r0, SHOT);
    assert_eq!(gw.stat(Stat::SpoofedSource).0, 3);
    // and the real ones pass
    assert_eq!(gw.tunnel_in(&f, SLOT, NODE6).r0, REDIRECT);
    assert_eq!(gw.tunnel_in(&Pkt::udp(POD_A, 5353, SERVER, 53).frame(), SLOT, NODE_A).r0, REDIRECT);
}

#[test]
fn a_floating_slot_owned_by_a_gateway_with_an_ipv6_underlay_is_forwarded_over_ipv6() {
    let mut gw = Gateway::new();
    set_owner(&mut gw, Some(OTHER_GW6.into()));
    let f = Pkt::tcp(POD_A, 40000, SERVER, 443, SYN).frame();
    assert_forwarded(&gw.tunnel_in(&f, FLOAT_SLOT, NODE_A), &f, OTHER_GW6);
    let f = Pkt::tcp(POD_U, 40000, SERVER, 443, SYN).frame();
    assert_forwarded(&gw.tunnel_in(&f, FLOAT_SLOT, NODE6), &f, OTHER_GW6);
    assert_eq!(gw.stat(Stat::Forwarded).0, 2);
}

#[test]
fn probes_over_an_ipv6_underlay_are_answered_and_recorded_by_address() {
    let mut gw = Gateway::new();
    let req = probe_request(9, Ipv4Addr::UNSPECIFIED, 77);
    let out = gw.tunnel_in(&req.frame(), probe::VNI, NODE6);
    assert_eq!(out.r0, REDIRECT);
    let key = out.effects.tunnel_key.as_ref().expect("tunnel key set");
    assert_eq!((key.key.remote, key.key.local), (IpAddr::V6(NODE6), Some(IpAddr::V6(GATEWAY_UNDERLAY6))));
    assert_eq!(
        (key.key.tunnel_id, key.key.ttl, key.key.label, key.flags),
        (probe::VNI, 64, 0, family_flags(NODE6.into()))
    );
    gw.now = 5_000;
    let reply = Probe { kind: Kind::Reply, ..req };
    assert_eq!(gw.tunnel_in(&reply.frame(), probe::VNI, NODE6).r0, SHOT);
    let got = gw.maps.lookup(maps_of::PROBE_RX, &ProbeRx::key(NODE6)).expect("lookup").expect("entry");
    assert_eq!(ProbeRx::from_bytes(&got), Some(ProbeRx { seq: 9, sent_ns: 77, recv_ns: 5_000 }));
}

/// The flow events written since the last call.
fn flow_events(gw: &mut Gateway) -> Vec<FlowEvent> {
    let records = gw.maps.ringbuf_drain(egret_bpf::templates::map::FLOW_EVENTS).expect("ring buffer");
    records.iter().map(|r| FlowEvent::from_bytes(r).expect("a well-formed record")).collect()
}

#[test]
fn a_connection_reports_created_once_and_closed_at_its_first_fin() {
    let mut gw = Gateway::new();
    let syn = Pkt::tcp(POD_A, 42000, SERVER, 443, SYN);
    let got = parse(&gw.tunnel_in(&syn.frame(), SLOT, NODE_A).packet);
    let port = got.sport;
    let created = FlowEvent {
        kind: FlowEventKind::Created,
        proto: TCP,
        flags: 0,
        slot: SLOT,
        time_ns: gw.now,
        src: POD_A.into(),
        sport: 42000,
        dst: SERVER.into(),
        dport: 443,
        egress_ip: EGRESS_IP.into(),
        nat_port: port,
        node: NODE_A.into(),
    };
    assert_eq!(flow_events(&mut gw), [created]);
    // the rest of the connection: no events until a FIN
    gw.now += 1_000;
    gw.reply(&reply_to(&got, L4::Tcp { sport: 443, dport: port, flags: SYN | ACK }).frame());
    gw.tunnel_in(&Pkt::tcp(POD_A, 42000, SERVER, 443, ACK).frame(), SLOT, NODE_A);
    assert_eq!(flow_events(&mut gw), []);
    // the server closes: one closed event from the reply path
    gw.now += 1_000;
    gw.reply(&reply_to(&got, L4::Tcp { sport: 443, dport: port, flags: FIN | ACK }).frame());
    let closed =
        FlowEvent { kind: FlowEventKind::Closed, flags: RV_F_SEEN_REPLY | RV_F_CLOSING, time_ns: gw.now, ..created };
    assert_eq!(flow_events(&mut gw), [closed]);
    // the pod's FIN and RST: already closing, no second event
    gw.tunnel_in(&Pkt::tcp(POD_A, 42000, SERVER, 443, FIN | ACK).frame(), SLOT, NODE_A);
    gw.tunnel_in(&Pkt::tcp(POD_A, 42000, SERVER, 443, RST).frame(), SLOT, NODE_A);
    assert_eq!(flow_events(&mut gw), []);
    // a bare SYN on the closing mapping: a new connection on the same tuple
    gw.now += 1_000;
    gw.tunnel_in(&syn.frame(), SLOT, NODE_A);
    assert_eq!(flow_events(&mut gw), [FlowEvent { time_ns: gw.now, ..created }]);
    // a pod's RST closes from the forward path
    gw.tunnel_in(&Pkt::tcp(POD_A, 42000, SERVER, 443, RST).frame(), SLOT, NODE_A);
    let closed = FlowEvent { kind: FlowEventKind::Closed, flags: RV_F_CLOSING, time_ns: gw.now, ..created };
    assert_eq!(flow_events(&mut gw), [closed]);
    assert_eq!(gw.stat(Stat::FlowEventDropped), (0, 0));
}

#[test]
fn a_full_ring_buffer_drops_events_never_packets() {
    let mut gw = Gateway::new();
    let per_mib = (1usize << 20) / (FlowEvent::SIZE + 8).next_multiple_of(8);
    let n = per_mib + 100;
    for i in 0..n {
        let q = Pkt::udp(POD_A, 1000 + (i % 50_000) as u16, SERVER, 1 + i as u16);
        let out = gw.tunnel_in(&q.frame(), SLOT, NODE_A);
        assert_eq!(out.r0, egret_bpf::interp::TC_ACT_REDIRECT, "connection {i} is translated");
    }
    assert_eq!(gw.stat(Stat::NatCreated).0, n as u64);
    assert_eq!(gw.stat(Stat::Snat).0, n as u64);
    assert_eq!(gw.stat(Stat::FlowEventDropped).0, 100, "what did not fit is counted");
    let events = flow_events(&mut gw);
    assert_eq!(events.len(), per_mib);
    assert!(events.iter().all(|e| e.kind == FlowEventKind::Created));
    // drained: room again
    gw.tunnel_in(&Pkt::udp(POD_A, 9, SERVER, 9).frame(), SLOT, NODE_A);
    assert_eq!(flow_events(&mut gw).len(), 1);
}
