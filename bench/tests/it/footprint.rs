//! The footprint measurement counts what the layouts really hold.

use egret_bench::footprint;
use egret_compiler::resolve::{Options, World};
use egret_compiler::{cilium, synth};

#[test]
fn small_cluster_counts_match_the_views() {
    let row = footprint::measure("small", &synth::SMALL).expect("measures");
    let world = World::new(&synth::bundle(&synth::SMALL), &Options::default());
    // Cilium's per-node entries are the rows its view prints on a node.
    let view = cilium::view(&world, "node-00000").expect("view");
    assert_eq!(row.cilium_entries_per_node, view.rows.len() + view.omitted_ipv6);
    assert_eq!(row.cilium_bytes_per_node, row.cilium_entries_per_node * 20);
    assert!(!row.cilium_overflows_default_map);
    assert!(row.egret_entries_median <= row.egret_entries_max);
    assert!(row.egret_bytes_median > 0 && row.egret_bytes_median <= row.egret_bytes_max);
    assert!(row.ratio_median >= row.ratio_max);
}
