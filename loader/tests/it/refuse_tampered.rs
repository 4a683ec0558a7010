//! `egret-loader apply` refuses an artifact directory that is not what egret
//! generates for its plan, before it opens the loader (so before anything
//! reaches the kernel): the same check as `egret verify`
//! (`egret_compiler::codegen::rederive::check_node`).

use std::path::{Path, PathBuf};
use std::process::Command;

use egret_compiler::codegen::{self, rederive};
use egret_compiler::driver::Driver;
use egret_compiler::resolve::{Options, World};
use egret_lang::source::SourceMap;

/// A temporary directory, removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn example_world() -> World {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut sm = SourceMap::new();
    let mut l = egret_lang::load::load(&mut sm, &[root.join("examples/policies")]);
    l.extend(egret_lang::load::load(&mut sm, &[root.join("examples/cluster")]));
    World::new(&l.bundle, &Options::default())
}

/// The example's artifacts of worker-1 and worker-2 in a fresh directory.
fn artifacts(name: &str) -> Dir {
    let dir = Dir(std::env::temp_dir().join(format!("egret-loader-refuse-{}-{name}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).expect("dir");
    let w = example_world();
    let mut driver = Driver::new(codegen::Options { reference_limit: Some(64), ..codegen::Options::default() });
    for node in ["worker-1", "worker-2"] {
        let c = driver.compile(&w, node).expect("compiles");
        codegen::write(&dir.0, &c.artifact, &c.plan).expect("writes");
    }
    dir
}

/// `egret-loader apply` of worker-1 from `dir`, with a loader root that is
/// not bpffs (the run must end at the check, before the loader opens).
fn apply(dir: &Dir) -> (bool, String) {
    let root = dir.0.join("no-bpffs");
    let out = Command::new(env!("CARGO_BIN_EXE_egret-loader"))
        .arg("--root")
        .arg(&root)
        .args(["apply", "--node", "worker-1", "--artifact"])
        .arg(&dir.0)
        .output()
        .expect("run egret-loader");
    assert!(!root.exists(), "the loader was opened");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn apply_refuses_changed_copied_and_orphaned_artifacts() {
    let dir = artifacts("tampered");
    rederive::check_node(&dir.0, "worker-1", &rederive::CheckOptions::default())
        .expect("the untouched artifact passes");

    // one instruction changed, digest recomputed: the first, a middle and the
    // last instruction of every program (every instruction of every program
    // is flipped against the same check in compiler/tests/it/verify_rederive.rs)
    let a = egret_bpf::artifact::read_dir(&dir.0, "worker-1").expect("reads");
    let parsed = egret_bpf::elf::read_object(&a.object).expect("parses");
    let mut refused = 0;
    for p in parsed.programs.iter().map(|p| &p.program) {
        let bytes = egret_bpf::insn::insns_to_bytes(&p.insns);
        let at = a.object.windows(bytes.len()).position(|w| w == bytes.as_slice()).expect("text");
        let last = p.insns.len() - 1;
        for i in [0, last / 2, last] {
            let mut t = a.clone();
            t.object[at + 8 * i + 1] ^= 0x01;
            egret_bpf::artifact::write_dir(&dir.0, &t.resealed()).expect("write");
            let (ok, err) = apply(&dir);
            assert!(!ok, "{} instruction {i}: {err}", p.name);
            assert!(
                err.contains("error: refusing the artifact of node `worker-1` in `")
                    && err.contains(&format!("program `{}`, instruction {i}: expected", p.name)),
                "{} instruction {i}: {err}",
                p.name
            );
            refused += 1;
        }
    }
    assert_eq!(refused, 3 * 4, "three flips in each of the four programs");
    egret_bpf::artifact::write_dir(&dir.0, &a).expect("restore");

    // worker-2's files over worker-1's
    for ext in rederive::NODE_FILES {
        std::fs::copy(dir.0.join(format!("worker-2.{ext}")), dir.0.join(format!("worker-1.{ext}"))).expect("copy");
    }
    let (ok, err) = apply(&dir);
    assert!(!ok && err.contains("is the artifact of node `worker-2`, not of `worker-1`"), "{err}");

    // the manifest removed
    std::fs::remove_file(dir.0.join("worker-1.artifact.json")).expect("rm");
    let (ok, err) = apply(&dir);
    assert!(!ok && err.contains("worker-1.artifact.json` is missing"), "{err}");
}
