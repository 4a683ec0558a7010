//! Interpreter tests on small hand-written programs: packet parsing with
//! bounds checks, LPM lookups, counters, tunnel key + redirect, checksums,
//! kernel arithmetic semantics and typed faults.

use crate::common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use egret_bpf::interp::{Fault, MapStore, RedirectKind, RunInput, TC_ACT_REDIRECT, TunnelKey, inet_checksum, run};
use egret_bpf::{MapDef, MapKind, Program};

fn program(src: &str) -> Program {
    common::assemble("p", src).program
}

fn run_frame(p: &Program, maps: &mut MapStore, frame: &[u8]) -> egret_bpf::interp::RunOutcome {
    run(p, maps, &RunInput::for_frame(frame)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn ipv4_filter_parses_with_bounds_checks() {
    let p = program(common::IPV4_FILTER);
    let mut maps = MapStore::new(&[]);
    let drop = common::udp_frame([198, 51, 100, 10], [203, 0, 113, 20], 5000, 64);
    let pass = common::udp_frame([198, 51, 100, 10], [203, 0, 113, 21], 5000, 64);
    assert_eq!(run_frame(&p, &mut maps, &drop).r0, 2);
    assert_eq!(run_frame(&p, &mut maps, &pass).r0, 0);
    assert_eq!(run_frame(&p, &mut maps, &common::arp_frame()).r0, 0);
    // a truncated frame fails the bounds check and passes
    let out = run_frame(&p, &mut maps, &drop[..30]);
    assert_eq!(out.r0, 0);
    assert_eq!(out.insns, 8);
}

#[test]
fn classify_uses_hash_lpm_and_percpu_counters() {
    let p = program(common::CLASSIFY);
    let mut maps = MapStore::with_cpus(&common::sample_maps(), 2);
    maps.update("src_class", &[198, 51, 100, 10], &5u32.to_le_bytes(), 0).expect("ok");
    // class 5: 203.0.113.0/24 -> action 2, 203.0.113.128/25 -> action 7
    maps.update("dst_lpm", &common::lpm_key(32 + 24, 5, [203, 0, 113, 0]), &2u32.to_le_bytes(), 0).expect("ok");
    maps.update("dst_lpm", &common::lpm_key(32 + 25, 5, [203, 0, 113, 128]), &7u32.to_le_bytes(), 0).expect("ok");
    let frame = |src, dst| common::udp_frame(src, dst, 53, 64);
    assert_eq!(run_frame(&p, &mut maps, &frame([198, 51, 100, 10], [203, 0, 113, 20])).r0, 2);
    assert_eq!(run_frame(&p, &mut maps, &frame([198, 51, 100, 10], [203, 0, 113, 200])).r0, 7);
    assert_eq!(run_frame(&p, &mut maps, &frame([198, 51, 100, 10], [192, 0, 2, 1])).r0, 0);
    // unknown source: no class, no counting
    assert_eq!(run_frame(&p, &mut maps, &frame([198, 51, 100, 11], [203, 0, 113, 20])).r0, 0);
    let hits = maps.lookup_percpu("counters", &0u32.to_le_bytes()).expect("ok").expect("array");
    let misses = maps.lookup_percpu("counters", &1u32.to_le_bytes()).expect("ok").expect("array");
    assert_eq!(hits, vec![2u64.to_le_bytes().to_vec(), vec![0; 8]], "CPU 0 counted");
    assert_eq!(misses[0], 1u64.to_le_bytes().to_vec());
    // on CPU 1 the other copy counts
    let mut input = RunInput::for_frame(&frame([198, 51, 100, 10], [203, 0, 113, 20]));
    input.cpu = 1;
    run(&p, &mut maps, &input).expect("runs");
    let hits = maps.lookup_percpu("counters", &0u32.to_le_bytes()).expect("ok").expect("array");
    assert_eq!(hits[1], 1u64.to_le_bytes().to_vec());
}

#[test]
fn tunnel_key_and_redirect_are_recorded() {
    let mut p = program(common::TUNNEL);
    let values: BTreeMap<String, i64> =
        [("remote_ipv4", 0xc000_0202), ("tunnel_ifindex", 9)].into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert!(matches!(
        run(&p, &mut MapStore::new(&[]), &RunInput::for_frame(&common::arp_frame())),
        Err(Fault::UnfilledHole { .. })
    ));
    p.fill_holes(&values).expect("fills");
    let out = run_frame(&p, &mut MapStore::new(&[]), &common::arp_frame());
    assert_eq!(out.r0, TC_ACT_REDIRECT);
    let key = out.effects.tunnel_key.expect("tunnel key set");
    assert_eq!(
        key.key,
        TunnelKey {
            tunnel_id: 7,
            remote: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            tos: 0,
            ttl: 64,
            label: 0,
            local: None,
        }
    );
    assert_eq!((key.flags, key.size), (0, 44));
    let r = out.effects.redirect.expect("redirect");
    assert_eq!((r.ifindex, r.flags, r.kind), (9, 0, RedirectKind::Redirect));
    let ids: Vec<i32> = out.effects.helper_calls.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, [21, 23]);
}

#[test]
fn ttl_decrement_keeps_the_checksum_valid() {
    let p = program(common::TTL_DEC);
    let frame = common::udp_frame([198, 51, 100, 10], [203, 0, 113, 20], 5000, 64);
    let out = run_frame(&p, &mut MapStore::new(&[]), &frame);
    assert_eq!(out.r0, 0);
    assert_eq!(out.packet[22], 63);
    assert_eq!(inet_checksum(&out.packet[14..34]), 0, "IPv4 header checksum still valid");
    assert_eq!(out.effects.stores.len(), 1);
    assert_eq!(out.effects.csum_replaces.len(), 1);
    assert_eq!(&out.packet[34..], &frame[34..]);
}

#[test]
fn variable_length_headers() {
    let p = program(common::UDP_PORT);
    let mut maps = MapStore::new(&[]);
    let f = common::udp_frame([1, 2, 3, 4], [5, 6, 7, 8], 5000, 64);
    assert_eq!(run_frame(&p, &mut maps, &f).r0, 1);
    let f = common::udp_frame([1, 2, 3, 4], [5, 6, 7, 8], 5001, 64);
    assert_eq!(run_frame(&p, &mut maps, &f).r0, 0);
}

#[test]
fn redirect_neigh_and_change_type() {
    let p = program(
        "
        r6 = r1
        r1 = r6
        r2 = 0
        call skb_change_type
        *(u32 *)(r10 - 20) = 2          // AF_INET
        *(u32 *)(r10 - 16) = 0x147100cb // 203.0.113.20 in memory order
        *(u64 *)(r10 - 12) = 0
        *(u32 *)(r10 - 4) = 0
        r1 = 4
        r2 = r10
        r2 += -20
        r3 = 20
        r4 = 0
        call redirect_neigh
        exit
    ",
    );
    let mut input = RunInput::for_frame(&common::arp_frame());
    input.skb.pkt_type = 3;
    let out = run(&p, &mut MapStore::new(&[]), &input).expect("runs");
    assert_eq!(out.r0, TC_ACT_REDIRECT);
    assert_eq!(out.skb.pkt_type, 0);
    assert_eq!(out.effects.change_type, Some(0));
    let r = out.effects.redirect.expect("redirect");
    assert_eq!(r.ifindex, 4);
    assert_eq!(r.kind, RedirectKind::Neigh { nexthop: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 20))) });
}

#[test]
fn kernel_division_semantics() {
    let cases = [
        ("r0 = 7\nr1 = 0\nr0 /= r1", 0),
        ("r0 = 7\nr1 = 0\nr0 %= r1", 7),
        ("r0 = -1 ll\nr1 = 0\nw0 %= w1", 0xffff_ffff),
        ("r0 = -7\nr1 = 2\nr0 s/= r1", (-3i64) as u64),
        ("r0 = -7\nr1 = 2\nr0 s%= r1", (-1i64) as u64),
        ("r0 = -1\nr1 = 65\nr0 >>= r1", u64::MAX >> 1),
        ("r0 = -1\nr0 s>>= 60", u64::MAX),
        ("w0 = -1\nw0 += 1", 0),
        ("r0 = 0x1234\nr0 = be16 r0", 0x3412),
        ("r0 = 0x1234 ll\nr0 = bswap64 r0", 0x3412_0000_0000_0000),
        ("r1 = 0x80\nr0 = (s8)r1", u64::MAX - 127),
        ("r0 = 5\nr0 = -r0", (-5i64) as u64),
    ];
    for (src, want) in cases {
        let p = program(&format!("{src}\nexit"));
        let out = run(&p, &mut MapStore::new(&[]), &RunInput::for_frame(&[0; 60])).expect("runs");
        assert_eq!(out.r0, want, "{src}");
    }
}

#[test]
fn stack_atomics_and_legacy_loads() {
    let p = program(
        "
        r6 = r1
        r1 = 10
        *(u64 *)(r10 - 8) = r1
        r2 = 5
        lock *(u64 *)(r10 - 8) += r2
        r2 = 100
        r2 = atomic_fetch_add((u64 *)(r10 - 8), r2)   // r2 = 15
        r0 = 115
        r3 = 1
        r0 = cmpxchg_64(r10 - 8, r0, r3)              // swaps: memory = 1, r0 = 115
        r7 = *(u64 *)(r10 - 8)
        r7 += r2
        r0 = *(u16 *)skb[12]                          // ethertype, network order
        r0 += r7
        exit
    ",
    );
    let f = common::udp_frame([1, 2, 3, 4], [5, 6, 7, 8], 1, 64);
    let out = run_frame(&p, &mut MapStore::new(&[]), &f);
    assert_eq!(out.r0, 0x0800 + 1 + 15);
    // a legacy load past the end ends the program with 0
    let p = program("r6 = r1\nr0 = *(u32 *)skb[1000]\nr0 = 5\nexit");
    assert_eq!(run_frame(&p, &mut MapStore::new(&[]), &f).r0, 0);
}

#[test]
fn faults_name_the_instruction() {
    let f = common::udp_frame([1, 2, 3, 4], [5, 6, 7, 8], 1, 64);
    let mut maps = MapStore::new(&[]);
    let e = run(&program("r2 = *(u32 *)(r1 + 76)\nr0 = *(u8 *)(r2 + 5000)\nexit"), &mut maps, &RunInput::for_frame(&f))
        .expect_err("faults");
    assert!(matches!(e, Fault::OutOfBounds { insn: 1, kind: "read", size: 1, .. }), "{e}");
    let e = run(&program("r0 = *(u64 *)(r10 - 8)\nexit"), &mut maps, &RunInput::for_frame(&f)).expect_err("faults");
    assert_eq!(e, Fault::UninitStack { insn: 0, off: -8 });
    let e = run(&program("r0 = 0\ncall 4242\nexit"), &mut maps, &RunInput::for_frame(&f)).expect_err("faults");
    assert_eq!(e, Fault::BadHelper { insn: 1, id: 4242 });
    let e =
        run(&program("r0 = 1\n*(u32 *)(r1 + 0) = r0\nexit"), &mut maps, &RunInput::for_frame(&f)).expect_err("faults");
    assert!(matches!(e, Fault::CtxAccess { insn: 1, kind: "write", .. }));
    let mut input = RunInput::for_frame(&f);
    input.budget = 3;
    let e = run(&program("r0 = 0\nr0 = 1\nr0 = 2\nr0 = 3\nexit"), &mut maps, &input).expect_err("faults");
    assert_eq!(e, Fault::Budget { insn: 3, budget: 3 });
    let e = run(&program("r1 = map[nope] ll\nr0 = 0\nexit"), &mut maps, &RunInput::for_frame(&f)).expect_err("faults");
    assert!(matches!(e, Fault::UnknownMap { insn: 0, .. }));
}

#[test]
fn map_update_semantics_follow_the_kernel() {
    let defs = [
        MapDef::new("h", MapKind::Hash, 4, 4, 2).expect("valid"),
        MapDef::new("lru", MapKind::LruHash, 4, 4, 2).expect("valid"),
        MapDef::new("a", MapKind::Array, 4, 4, 2).expect("valid"),
    ];
    let mut m = MapStore::new(&defs);
    let k = |n: u32| n.to_le_bytes();
    m.update("h", &k(1), &k(10), 0).expect("ok");
    m.update("h", &k(2), &k(20), 0).expect("ok");
    assert!(m.update("h", &k(3), &k(30), 0).is_err(), "full");
    assert!(m.update("h", &k(1), &k(11), 1).is_err(), "NOEXIST on existing");
    assert!(m.update("h", &k(9), &k(11), 2).is_err(), "EXIST on missing");
    m.update("lru", &k(1), &k(10), 0).expect("ok");
    m.update("lru", &k(2), &k(20), 0).expect("ok");
    m.update("lru", &k(1), &k(11), 0).expect("ok"); // 1 is now most recent
    m.update("lru", &k(3), &k(30), 0).expect("evicts 2");
    assert_eq!(m.keys("lru").expect("ok"), vec![k(1).to_vec(), k(3).to_vec()]);
    assert!(m.update("a", &k(2), &k(1), 0).is_err(), "index out of range");
    assert!(m.delete("a", &k(0)).is_err(), "arrays cannot delete");
    assert_eq!(m.lookup("a", &k(1)).expect("ok"), Some(vec![0; 4]));
    assert!(m.delete("h", &k(1)).expect("ok"));
    assert!(!m.delete("h", &k(1)).expect("ok"));
}

#[test]
fn programs_update_maps_and_effects_record_it() {
    let defs = [MapDef::new("conn", MapKind::LruHash, 4, 8, 16).expect("valid")];
    let p = program(
        "
        r1 = 7
        *(u32 *)(r10 - 4) = r1
        r1 = 99
        *(u64 *)(r10 - 16) = r1
        r2 = r10
        r2 += -4
        r3 = r10
        r3 += -16
        r4 = 0
        r1 = map[conn] ll
        call map_update_elem
        r2 = r10
        r2 += -4
        r1 = map[conn] ll
        call map_lookup_elem
        if r0 == 0 goto out
        r0 = *(u64 *)(r0 + 0)
    out:
        exit
    ",
    );
    let mut maps = MapStore::new(&defs);
    let out = run_frame(&p, &mut maps, &common::arp_frame());
    assert_eq!(out.r0, 99);
    assert_eq!(out.effects.map_updates.len(), 1);
    assert_eq!(out.effects.map_updates[0].result, 0);
    assert_eq!(maps.lookup("conn", &7u32.to_le_bytes()).expect("ok"), Some(99u64.to_le_bytes().to_vec()));
}
