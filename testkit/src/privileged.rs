//! The one privileged-test gate (TESTING.md), shared by every crate's kernel
//! and netns tests: when the process cannot do what a test
//! needs it prints one line and the test returns; with
//! `EGRET_REQUIRE_PRIVILEGED=1` (set by `.ci/run`) it panics instead, so CI can
//! never pass by skipping.

use std::path::Path;

/// Why this process cannot load BPF programs, if it cannot: not root, no
/// bpffs, or a trivial classifier is refused by `BPF_PROG_LOAD`.
pub fn missing_bpf_privilege() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some(format!("not root (euid {})", euid.unwrap_or("?")));
    }
    if !Path::new("/sys/fs/bpf").exists() {
        return Some("no /sys/fs/bpf (kernel without bpf?)".into());
    }
    let probe = egret_bpf::asm::assemble("probe", "r0 = 0\nexit").map_err(|e| e.to_string());
    let bytes = match probe
        .and_then(|a| egret_bpf::elf::verify_and_write(&[a.program], &[], "GPL").map_err(|e| e.to_string()))
    {
        Ok(b) => b,
        Err(e) => return Some(format!("cannot build the probe object: {e}")),
    };
    let mut bpf = match aya::Ebpf::load(&bytes) {
        Ok(b) => b,
        Err(e) => return Some(format!("cannot load a BPF object: {e}")),
    };
    let loaded = bpf
        .program_mut("probe")
        .and_then(|p| <&mut aya::programs::SchedClassifier>::try_from(p).ok())
        .map(aya::programs::SchedClassifier::load);
    match loaded {
        Some(Ok(())) => None,
        Some(Err(e)) => Some(format!("BPF_PROG_LOAD is not permitted: {e}")),
        None => Some("the probe program is missing".into()),
    }
}

/// True if `test` may go on given `missing` (the reason it cannot, if any);
/// prints one line and returns false, or panics under `EGRET_REQUIRE_PRIVILEGED=1`.
pub fn gate(test: &str, missing: Option<String>) -> bool {
    match missing {
        None => true,
        Some(reason) => {
            if std::env::var("EGRET_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("{test}: privileged test cannot run: {reason} (EGRET_REQUIRE_PRIVILEGED=1)");
            }
            println!("skipping {test}: {reason}");
            false
        }
    }
}

/// The gate for a test that cannot run for `reason` (a missing tool): false
/// with a printed line, or a panic under `EGRET_REQUIRE_PRIVILEGED=1`.
pub fn skip_or_fail(test: &str, reason: &str) -> bool {
    gate(test, Some(reason.to_owned()))
}

/// The gate for tests that load BPF programs.
pub fn privileged(test: &str) -> bool {
    gate(test, missing_bpf_privilege())
}
