//! The Cilium-equivalent anchor decides exactly what Cilium's table says.

use egret_bench::cilium_dp;
use egret_bpf::interp::{self, MapStore, RunInput};
use egret_compiler::cilium;
use egret_compiler::resolve::{Options, World};
use egret_lang::source::SourceMap;
use std::net::Ipv4Addr;
use std::path::Path;

fn world() -> World {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut sources = SourceMap::new();
    let loaded = egret_lang::load::load(&mut sources, &[root.join("policies"), root.join("cluster")]);
    assert!(loaded.diagnostics.is_empty());
    World::new(&loaded.bundle, &Options::default())
}

fn frame(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&(28u16).to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    f
}

#[test]
fn anchor_follows_cilium_table_on_every_row() {
    let w = world();
    let (program, maps) = cilium_dp::program().expect("assemble");
    egret_bpf::verifier::verify(&program, &maps).expect("verifies");
    let mut program = program;
    program.fill_hole("tunnel_ifindex", 42).expect("hole");
    let mut checked = 0;
    for node in ["worker-1", "worker-2", "gateway-1"] {
        let view = cilium::view(&w, node).expect("view");
        let img = cilium_dp::policy_map_image(&view, cilium_dp::CILIUM_MAP_SIZE);
        let mut store = MapStore::new(&maps);
        for (k, v) in img.decoded().expect("decode") {
            store.update(cilium_dp::POLICY_MAP, &k, &v, 0).expect("update");
        }
        for row in &view.rows {
            // first address of the row's CIDR, and the longest matching row for it
            let dst = match row.destination.network().addr {
                std::net::IpAddr::V4(a) => a,
                std::net::IpAddr::V6(_) => continue,
            };
            let best = view
                .rows
                .iter()
                .filter(|r| r.source_ip == row.source_ip && r.destination.contains_ip(dst.into()))
                .max_by_key(|r| r.destination.len)
                .expect("the row itself matches");
            let out =
                interp::run(&program, &mut store, &RunInput::for_frame(&frame(row.source_ip, dst))).expect("runs");
            let gw = best.gateway_ip;
            if gw == Ipv4Addr::UNSPECIFIED {
                assert_eq!(out.r0 as i64, 2, "{node} {row:?}: not found drops");
            } else if gw == Ipv4Addr::new(0, 0, 0, 1) {
                assert_eq!(out.r0 as i64 as i32, -1, "{node} {row:?}: excluded passes");
            } else {
                assert_eq!(out.r0, 7, "{node} {row:?}: redirect");
                let key = out.effects.tunnel_key.expect("tunnel key set").key;
                assert_eq!(key.remote, std::net::IpAddr::V4(gw));
                assert_eq!(out.effects.redirect.expect("redirect").ifindex, 42);
            }
            checked += 1;
        }
        // a source Cilium has no row for passes
        let out = interp::run(
            &program,
            &mut store,
            &RunInput::for_frame(&frame(Ipv4Addr::new(10, 9, 9, 9), Ipv4Addr::new(8, 8, 8, 8))),
        )
        .expect("runs");
        assert_eq!(out.r0 as i64 as i32, -1);
    }
    assert!(checked >= 27, "checked {checked} rows");
}
