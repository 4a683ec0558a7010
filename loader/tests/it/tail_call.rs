//! Tail calls stay inside a generation (privileged): a pod classifier that
//! tail-calls slot 0 of its `prog_array` reaches the target loaded with it —
//! under `BPF_PROG_TEST_RUN` the frame carries the generation's tag and
//! passes (an empty slot would drop it) — and after a swap the new
//! generation's classifier reaches the new target, the old one is gone, and
//! status lists the target with its slot.

use egret_testkit::netns as common;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use common::*;
use egret_bpf::artifact::TailCallSlot;
use egret_loader::demo::{
    MIN_FRAME, STAMP_CODE_TAG, TAIL_ENTRY_PROGRAM, TAIL_MAP, TAIL_TARGET_PROGRAM, tail_call_artifact,
};
use egret_loader::{ApplyReport, Loader, LoaderConfig};

/// Runs the running generation's entry program on a frame: (return value, stamp).
fn run_entry(loader: &Loader) -> (u32, u8) {
    let (g, _) = loader.running().expect("running");
    let prog = SchedClassifier::from_pin(loader.layout().program(g, TAIL_ENTRY_PROGRAM)).expect("pinned entry");
    let mut input = vec![0u8; MIN_FRAME];
    input[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    input[14] = 0x45;
    let mut out = vec![0u8; input.len()];
    let r = prog
        .test_run(TestRunOptions { data_in: Some(&input), data_out: Some(&mut out), ..TestRunOptions::default() })
        .expect("BPF_PROG_TEST_RUN");
    (r.return_value, out[STAMP_CODE_TAG])
}

#[test]
fn a_classifier_tail_calls_the_target_of_its_own_generation() {
    if !privileged("a_classifier_tail_calls_the_target_of_its_own_generation") {
        return;
    }
    let fs = Bpffs::new("tail");
    let ns = Netns::new("tail");
    let entered = ns.enter();
    let (mut loader, _) = Loader::open(LoaderConfig::new(fs.root())).expect("open");

    loader.apply(&tail_call_artifact("n1", 0xa1).expect("artifact")).expect("apply A");
    assert_eq!(run_entry(&loader), (0, 0xa1), "reached generation A's target");

    let report = loader.apply(&tail_call_artifact("n1", 0xb2).expect("artifact")).expect("apply B");
    let ApplyReport::Swapped { from: Some(from), to, .. } = report else { panic!("not a swap: {report:?}") };
    assert_eq!(run_entry(&loader), (0, 0xb2), "reached generation B's target");
    assert!(!loader.layout().generation_dir(from).exists(), "generation A deleted");

    let status = loader.status().expect("status");
    let gen_b = status.generations.iter().find(|g| g.generation == to).expect("generation B listed");
    let target = gen_b.programs.iter().find(|p| p.name == TAIL_TARGET_PROGRAM).expect("target listed");
    assert_eq!(
        (target.attach, target.tail_call.clone()),
        (None, Some(TailCallSlot { map: TAIL_MAP.into(), index: 0 }))
    );
    assert!(target.id.is_some(), "target pinned");

    loader.uninstall().expect("uninstall");
    assert_eq!(fs.pins(), 0);
    drop(entered);
    let (name, mount) = (ns.name.clone(), fs.mount_point().to_path_buf());
    drop(ns);
    drop(fs);
    assert!(!netns_exists(&name) && !mounted(&mount), "namespace or mount left");
}
