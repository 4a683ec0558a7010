//! The loaded generation is what the artifact says (privileged): programs
//! opened from their pins run under `BPF_PROG_TEST_RUN` on synthetic frames
//! and agree with egret's interpreter on the same filled object and map
//! images (verdicts, stamps, the hole filled with `lo`'s ifindex); the
//! per-CPU counters read back through the pinned maps count what ran.

use egret_testkit::netns as common;

use std::collections::BTreeMap;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use common::*;
use egret_bpf::interp::{MapStore, RunInput, run};
use egret_loader::demo::{
    CLASSIFY_PROGRAM, COUNTER_DROPPED, COUNTER_PASSED, COUNTER_UNCLASSIFIED, DemoSpec, MIN_FRAME, PAYLOAD,
    STAMP_CODE_TAG, STAMP_IFINDEX, STAMP_MAP_TAG, Verdict, demo_artifact,
};
use egret_loader::{Loader, LoaderConfig, inspect};

fn frame(dst: [u8; 4], seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; MIN_FRAME];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((MIN_FRAME - 14) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 51, 100, 10]);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&5000u16.to_be_bytes());
    f[36..38].copy_from_slice(&PORT.to_be_bytes());
    f[38..40].copy_from_slice(&((MIN_FRAME - 34) as u16).to_be_bytes());
    f[PAYLOAD..PAYLOAD + 4].copy_from_slice(&seq.to_le_bytes());
    f
}

fn counter(dump: &inspect::MapDump, index: u32) -> u64 {
    let key = egret_bpf::artifact::hex(&index.to_le_bytes());
    let e = dump.entries.iter().find(|e| e.key == key).expect("array entry");
    e.values
        .iter()
        .map(|v| {
            let b: Vec<u8> =
                (0..v.len()).step_by(2).map(|i| u8::from_str_radix(&v[i..i + 2], 16).expect("hex")).collect();
            u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
        })
        .sum()
}

#[test]
fn pinned_programs_agree_with_the_interpreter() {
    if !privileged("pinned_programs_agree_with_the_interpreter") {
        return;
    }
    let fs = Bpffs::new("trun");
    let ns = Netns::new("trun");
    let entered = ns.enter();
    let mut spec =
        DemoSpec::new("n1", TAG_A).verdict(DESTS[0].into(), Verdict::Pass).verdict(DESTS[1].into(), Verdict::Drop);
    spec.tunnel_program = false;
    let artifact = demo_artifact(&spec).expect("demo");
    let (mut loader, _) = Loader::open(LoaderConfig::new(fs.root())).expect("open");
    loader.apply(&artifact).expect("apply");
    let (g, _) = loader.running().expect("running");

    // egret's interpreter on the same object, holes filled as on this node (lo = 1)
    let values = BTreeMap::from([("gen_tag".to_owned(), i64::from(TAG_A)), ("marker_ifindex".to_owned(), 1)]);
    let parsed = egret_bpf::elf::read_object(&egret_bpf::elf::fill_holes(&artifact.object, &values).expect("fill"))
        .expect("read");
    let program = parsed.program(CLASSIFY_PROGRAM).expect("program");
    let mut maps = MapStore::new(&parsed.maps);
    for (k, v) in artifact.manifest.maps[0].decoded().expect("image") {
        maps.update("verdicts", &k, &v, 0).expect("update");
    }

    let prog = SchedClassifier::from_pin(loader.layout().program(g, CLASSIFY_PROGRAM)).expect("open pinned program");
    let cases = [(DESTS[0], 0, TAG_A), (DESTS[1], 2, TAG_A), (DESTS[2], 2, 0)];
    for (i, (dst, r0, map_tag)) in cases.into_iter().enumerate() {
        let input = frame(dst, i as u32);
        let mut out = vec![0u8; input.len()];
        let r = prog
            .test_run(TestRunOptions { data_in: Some(&input), data_out: Some(&mut out), ..TestRunOptions::default() })
            .expect("BPF_PROG_TEST_RUN");
        let want = run(program, &mut maps, &RunInput::for_frame(&input)).expect("interpreter");
        assert_eq!(u64::from(r.return_value), want.r0, "{dst:?}");
        assert_eq!(r.return_value, r0, "{dst:?}");
        assert_eq!(out, want.packet, "{dst:?}: kernel and interpreter leave the same frame");
        assert_eq!((out[STAMP_CODE_TAG], out[STAMP_MAP_TAG], out[STAMP_IFINDEX]), (TAG_A, map_tag, 1));
    }
    // a frame too short to classify passes untouched
    let short = frame(DESTS[1], 9)[..40].to_vec();
    let r = prog.test_run(TestRunOptions { data_in: Some(&short), ..TestRunOptions::default() }).expect("test_run");
    assert_eq!(r.return_value, Verdict::Pass.action());

    let (_, dumps) = inspect::maps(&fs.root()).expect("maps");
    let counters = dumps.iter().find(|d| d.name == "counters").expect("counters");
    assert_eq!(
        (
            counter(counters, COUNTER_PASSED),
            counter(counters, COUNTER_DROPPED),
            counter(counters, COUNTER_UNCLASSIFIED)
        ),
        (1, 2, 1)
    );
    drop(prog);
    loader.uninstall().expect("uninstall");
    assert_eq!(fs.pins(), 0);
    drop(entered);
    let (name, mount) = (ns.name.clone(), fs.mount_point().to_path_buf());
    drop(ns);
    drop(fs);
    assert!(!netns_exists(&name) && !mounted(&mount), "namespace or mount left");
}
