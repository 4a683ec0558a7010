//! `egret compile -o DIR`, `egret verify DIR`, `egret inspect NODE.o` and
//! `--emit asm`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLUSTER: &str = "../examples/cluster";
const POLICIES: &str = "../examples/policies";

fn egret(args: &[&str]) -> Output {
    crate::messages::run(
        Command::new(env!("CARGO_BIN_EXE_egret")).args(args).current_dir(Path::new(env!("CARGO_MANIFEST_DIR"))),
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("egret-codegen-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmp dir");
        TempDir(d)
    }
    fn s(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn compile_writes_verified_artifacts_that_verify_and_inspect() {
    let dir = TempDir::new("artifacts");
    let out = egret(&["compile", "--cluster", CLUSTER, POLICIES, "--all-nodes", "-o", dir.s()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("packets equivalent"), "{}", text(&out));
    for node in ["gateway-1", "worker-1", "worker-2"] {
        for ext in ["o", "artifact.json", "plan.txt"] {
            assert!(dir.0.join(format!("{node}.{ext}")).is_file(), "{node}.{ext} missing");
        }
        let a = egret_bpf::artifact::read_dir(&dir.0, node).expect("artifact reads back");
        assert_eq!(a.manifest.programs[0].name, "egret_src");
        // the node's complete artifact, as the agent builds it: every node hosts
        // endpoints or serves slots here, so the gateway templates are in it
        let programs: Vec<&str> = a.manifest.programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(programs, ["egret_src", "egret_tunnel_in", "egret_gw_reply", "egret_gw_local"], "{node}");
        assert_eq!(a.manifest.holes[0].name, "tunnel_ifindex");
        assert!(a.manifest.counters.iter().any(|c| c.map == "egret_reasons" && c.labels.len() == 10));
    }
    // rules name the policies they count
    let w1 = egret_bpf::artifact::read_dir(&dir.0, "worker-1").expect("reads");
    let stats = w1.manifest.counters.iter().find(|c| c.map == "egret_policy_stats").expect("policy stats labels");
    assert!(stats.labels.iter().any(|l| l.policies.iter().any(|p| p == "egress-gateway-policy")), "{stats:?}");
    // the plan text beside it is the plan
    let plan = egret(&["compile", "--cluster", CLUSTER, POLICIES, "--node", "worker-1"]);
    assert_eq!(
        std::fs::read_to_string(dir.0.join("worker-1.plan.txt")).expect("plan"),
        String::from_utf8_lossy(&plan.stdout)
    );

    let v = egret(&["verify", dir.s()]);
    assert_eq!(code(&v), 0, "{}", text(&v));
    assert_eq!(text(&v).lines().filter(|l| l.starts_with("ok ")).count(), 3, "{}", text(&v));
    assert!(text(&v).contains("equivalent to the stored plan text"), "{}", text(&v));
    assert_eq!(text(&v).matches("equal to what egret generates for its plan (4 programs, ").count(), 3, "{}", text(&v));
    let v = egret(&["verify", dir.s(), "--cluster", CLUSTER, POLICIES]);
    assert_eq!(code(&v), 0, "{}", text(&v));
    assert!(text(&v).contains("the fresh plan and the reference evaluator"), "{}", text(&v));

    let obj = dir.0.join("worker-1.o");
    let i = egret(&["inspect", obj.to_str().expect("utf-8")]);
    assert_eq!(code(&i), 0, "{}", text(&i));
    let listing = text(&i);
    for want in [
        "annotated from the plan of node worker-1",
        "map[egret_reasons]",
        "%tunnel_ifindex",
        "class 0 v4: dst >= ",
        "src == 10.244.1.10",
        "egret_gw_progs: prog_array",
        "finish:",
        "; program egret_tunnel_in (classifier)",
        "; program egret_gw_reply (classifier)",
        "; program egret_gw_local (classifier)",
    ] {
        assert!(listing.contains(want), "`{want}` missing from\n{listing}");
    }
}

#[test]
fn verify_catches_tampering_and_stale_artifacts() {
    let dir = TempDir::new("tamper");
    let article = "tests/in/article";
    let out = egret(&[
        "compile",
        "--cluster",
        &format!("{article}/cluster.yaml"),
        &format!("{article}/policy.yaml"),
        "--service-cidr",
        "10.96.0.0/12",
        "--all-nodes",
        "--layout",
        "maps",
        "-o",
        dir.s(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // the article's v2 policies change worker-1's behaviour: its artifact is stale
    let stale = egret(&[
        "verify",
        dir.s(),
        "--cluster",
        &format!("{article}/cluster.yaml"),
        &format!("{article}/policy-v2.yaml"),
        "--service-cidr",
        "10.96.0.0/12",
    ]);
    assert_eq!(code(&stale), 1, "{}", text(&stale));
    assert!(
        text(&stale).contains("FAILED worker-1: the stored plan text differs from the fresh plan at line "),
        "{}",
        text(&stale)
    );
    // an edited map image breaks the digest
    let manifest = dir.0.join("worker-1.artifact.json");
    let json = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(&manifest, json.replacen("\"value\": \"0", "\"value\": \"1", 1)).expect("write");
    let v = egret(&["verify", dir.s()]);
    assert_eq!(code(&v), 1, "{}", text(&v));
    assert!(text(&v).contains("FAILED worker-1") && text(&v).contains("digest mismatch"), "{}", text(&v));
}

/// The example's artifacts, compiled once per test into `dir`.
fn example_artifacts(dir: &TempDir) {
    let out =
        egret(&["compile", "--cluster", CLUSTER, POLICIES, "--all-nodes", "--reference-limit", "64", "-o", dir.s()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

/// `egret verify DIR`: its exit code and output.
fn verify(dir: &TempDir, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["verify", dir.s(), "--reference-limit", "64"];
    args.extend_from_slice(extra);
    let v = egret(&args);
    (code(&v), text(&v))
}

#[test]
fn verify_rejects_changed_gateway_code_with_a_recomputed_digest() {
    let dir = TempDir::new("gateway-code");
    example_artifacts(&dir);
    // egret_tunnel_in's common drop exit made a pass: r0 = 2 (TC_ACT_SHOT) -> r0 = 0
    let a = egret_bpf::artifact::read_dir(&dir.0, "worker-1").expect("reads");
    let parsed = egret_bpf::elf::read_object(&a.object).expect("parses");
    let tunnel = parsed.program("egret_tunnel_in").expect("tunnel_in");
    let exit = (0..tunnel.insns.len())
        .rev()
        .find(|&i| tunnel.insns[i].code == 0xb7 && tunnel.insns[i].dst == 0 && tunnel.insns[i].imm == 2)
        .expect("r0 = 2");
    let bytes = egret_bpf::insn::insns_to_bytes(&tunnel.insns);
    let at = a.object.windows(bytes.len()).position(|w| w == bytes.as_slice()).expect("text");
    let mut t = a.clone();
    t.object[at + exit * 8 + 4] = 0;
    egret_bpf::artifact::write_dir(&dir.0, &t.resealed()).expect("write");
    let (c, out) = verify(&dir, &[]);
    assert_eq!(c, 1, "{out}");
    assert!(
        out.contains(&format!(
            "FAILED worker-1: the artifact differs from what egret generates for its plan (1 difference)\n  - program `egret_tunnel_in`, instruction {exit}: expected `r0 = 2"
        )),
        "{out}"
    );
    assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), 2, "{out}");
}

#[test]
fn verify_rejects_copied_nodes_orphans_and_a_different_plan_text() {
    let dir = TempDir::new("files");
    example_artifacts(&dir);
    // worker-2's files over worker-1's
    for ext in ["o", "artifact.json", "plan.txt"] {
        std::fs::copy(dir.0.join(format!("worker-2.{ext}")), dir.0.join(format!("worker-1.{ext}"))).expect("copy");
    }
    let (c, out) = verify(&dir, &[]);
    assert_eq!(c, 1, "{out}");
    assert!(
        out.contains("FAILED worker-1: `") && out.contains("is the artifact of node `worker-2`, not of `worker-1`"),
        "{out}"
    );
    // a removed manifest leaves an orphan object and plan text: an error, not "nothing to check"
    std::fs::remove_file(dir.0.join("worker-1.artifact.json")).expect("rm");
    let (c, out) = verify(&dir, &[]);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("FAILED worker-1: `") && out.contains("worker-1.artifact.json` is missing"), "{out}");
    std::fs::remove_file(dir.0.join("worker-1.o")).expect("rm");
    std::fs::remove_file(dir.0.join("worker-1.plan.txt")).expect("rm");
    // a plan text that is not the fresh plan fails against the cluster, even if the artifact matches it
    let plan = dir.0.join("worker-2.plan.txt");
    let text = std::fs::read_to_string(&plan).expect("plan");
    std::fs::write(&plan, format!("{text}\n")).expect("write");
    let (c, out) = verify(&dir, &[]);
    assert_eq!(c, 0, "the stored plan still reads the same: {out}");
    let (c, out) = verify(&dir, &["--cluster", CLUSTER, POLICIES]);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("FAILED worker-2: the stored plan text differs from the fresh plan at line "), "{out}");
    // an empty directory: nothing to verify is an input error
    let empty = TempDir::new("empty");
    let (c, out) = verify(&empty, &[]);
    assert_eq!(c, 3, "{out}");
}

#[test]
fn emit_asm_prints_reassemblable_assembly() {
    let out = egret(&["compile", "--cluster", CLUSTER, POLICIES, "--node", "worker-2", "--emit", "asm"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let asm = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(asm.contains(".map egret_reasons, percpu_array"), "{asm}");
    let a = egret_bpf::asm::assemble("egret_src", &asm).expect("the printed assembly assembles");
    egret_bpf::verifier::verify(&a.program, &a.maps).expect("and verifies");
    let maps =
        egret(&["compile", "--cluster", CLUSTER, POLICIES, "--node", "worker-2", "--emit", "asm", "--layout", "maps"]);
    assert!(String::from_utf8_lossy(&maps.stdout).contains("map[egret_dst_v4]"));
    // with -o, the view is written beside the artifact
    let dir = TempDir::new("asm");
    let out = egret(&["compile", "--cluster", CLUSTER, POLICIES, "--node", "worker-2", "--emit", "asm", "-o", dir.s()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(std::fs::read_to_string(dir.0.join("worker-2.s")).expect("asm file"), asm);
    assert!(dir.0.join("worker-2.o").is_file());
}
