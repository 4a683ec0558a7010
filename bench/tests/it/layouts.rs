//! `egret-bench layouts` and `parts`, short: for both families, the synthetic plans'
//! classifier loads into the kernel in both layouts (its map images through
//! the bench's own loader, whose key and value sizes must match the layout)
//! and runs under `BPF_PROG_TEST_RUN`. Needs root and bpf.

use egret_bench::layouts;
use egret_lang::net::Family;
use egret_testkit::privileged;

#[test]
fn both_layouts_load_and_run_in_both_families() {
    let test = "both_layouts_load_and_run_in_both_families";
    if !privileged::privileged(test) {
        return;
    }
    for family in [Family::V4, Family::V6] {
        let tables = layouts::run_sizes(family, 1, 10, &[1, 16]).expect("the layouts benchmark runs");
        let rows = &tables[0].rows;
        assert_eq!(rows.len(), 2, "{family:?}: one row per size");
        for row in rows {
            // columns: leaves, class entries, inline ns, maps ns, inline insns, maps insns, load ms ×2
            for (col, what) in [(2, "inline ns/packet"), (3, "maps ns/packet")] {
                let ns: f64 =
                    row[col].parse().unwrap_or_else(|_| panic!("{family:?} {what}: {:?} is not a time", row[col]));
                assert!(ns > 0.0, "{family:?} {what}: {ns}");
            }
        }
    }
}

/// `egret-bench parts`: every part program loads (its trie carries the
/// classifier's action record) and runs.
#[test]
fn every_part_of_the_classifier_loads_and_runs() {
    let test = "every_part_of_the_classifier_loads_and_runs";
    if !privileged::privileged(test) {
        return;
    }
    let parts = egret_bench::parts::measure(1, 16, 1, 10).expect("the parts benchmark runs");
    assert_eq!(parts.len(), 8, "one figure per part: {:?}", parts.iter().map(|p| &p.name).collect::<Vec<_>>());
    for p in &parts {
        assert!(p.ns > 0.0, "{}: {} ns", p.name, p.ns);
    }
}
