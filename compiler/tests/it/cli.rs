//! The `egret` binary: exit codes, output formats, `rule`, `fmt`, `convert`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn egret(args: &[&str]) -> Output {
    crate::messages::run(
        Command::new(env!("CARGO_BIN_EXE_egret")).args(args).current_dir(Path::new(env!("CARGO_MANIFEST_DIR"))),
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("egret-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

#[test]
fn lint_exit_codes() {
    let clean = egret(&["lint", "--cluster", "../examples/cluster", "../examples/policies"]);
    assert_eq!(code(&clean), 0, "{}", stdout(&clean));
    assert_eq!(stdout(&clean).trim(), "no problems found");

    let errors = egret(&["lint", "tests/fixtures/lint/E0105-invalid-cidr.yaml"]);
    assert_eq!(code(&errors), 1);

    let warn = egret(&["lint", "tests/fixtures/lint/W0201-exclusion-without-effect.yaml"]);
    assert_eq!(code(&warn), 0);
    let denied = egret(&["lint", "--deny", "warnings", "tests/fixtures/lint/W0201-exclusion-without-effect.yaml"]);
    assert_eq!(code(&denied), 1);

    assert_eq!(code(&egret(&["lint"])), 2, "missing POLICY is a usage error");
    assert_eq!(code(&egret(&["lint", "--format", "xml", "x.yaml"])), 2);
    assert_eq!(code(&egret(&["frobnicate"])), 2);
}

#[test]
fn lint_formats() {
    let f = "tests/fixtures/lint/E0102-unknown-field.yaml";
    let json = egret(&["lint", "--format", "json", f]);
    assert_eq!(code(&json), 1);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json output");
    let first = v.as_array().expect("array").iter().find(|d| d["code"] == "E0102").expect("E0102 reported");
    assert_eq!(first["code"], "E0102");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["labels"][0]["line"], 10);
    assert_eq!(first["help"], "did you mean `destinationCIDRs`? it is a list of CIDRs");

    let gh = egret(&["lint", "--format", "github", f]);
    let out = stdout(&gh);
    assert!(
        out.contains("::error file=tests/fixtures/lint/E0102-unknown-field.yaml,line=10,col=3,endLine=10,endColumn=18,title=E0102 unknown-field::"),
        "{out}"
    );
}

#[test]
fn rule_documents_every_code() {
    for c in egret_lang::codes::ALL {
        let o = egret(&["rule", c.id]);
        assert_eq!(code(&o), 0);
        let out = stdout(&o);
        assert!(out.starts_with(&format!("{} {}", c.id, c.name)), "{out}");
        assert!(out.contains(c.doc));
        let by_name = egret(&["rule", c.name]);
        assert_eq!(stdout(&by_name), out);
    }
    let list = egret(&["rule"]);
    assert_eq!(stdout(&list).lines().count(), egret_lang::codes::ALL.len());
    assert_eq!(code(&egret(&["rule", "E9999"])), 2);
}

#[test]
fn convert_round_trip_and_fmt() {
    let d = tmp("convert");
    let o = egret(&["convert", "../examples/policies/egress-gateway-policy.yaml"]);
    assert_eq!(code(&o), 0);
    let egret_text = stdout(&o);
    assert!(egret_text.starts_with("policy egress-gateway-policy {"), "{egret_text}");
    let e = d.join("p.egret");
    std::fs::write(&e, &egret_text).expect("write");
    // canonical already
    assert_eq!(code(&egret(&["fmt", "--check", e.to_str().expect("utf8")])), 0);
    let back = egret(&["convert", e.to_str().expect("utf8")]);
    assert_eq!(code(&back), 0);
    let y = d.join("p.yaml");
    std::fs::write(&y, stdout(&back)).expect("write");
    // YAML -> .egret -> YAML keeps the meaning: both lint the same and convert to the same .egret
    let again = egret(&["convert", y.to_str().expect("utf8")]);
    assert_eq!(stdout(&again), egret_text);

    // fmt keeps comments and fixes layout
    let messy = d.join("messy.egret");
    std::fs::write(&messy, "# keep me\npolicy  web{select pods( app=web ) to 52.0.0.0/8 via nodes(gw=\"true\")}\n")
        .expect("write");
    assert_eq!(code(&egret(&["fmt", "--check", messy.to_str().expect("utf8")])), 1);
    let f = egret(&["fmt", messy.to_str().expect("utf8")]);
    assert_eq!(
        stdout(&f),
        "# keep me\npolicy web {\n  select pods(app = web)\n  to 52.0.0.0/8\n  via nodes(gw = true)\n}\n"
    );
    std::fs::remove_dir_all(&d).expect("cleanup");
}

#[test]
fn convert_refuses_what_lint_refuses() {
    // an .egret label value Kubernetes would refuse parses as a quoted string;
    // converting it would write YAML that egret (and the API server) refuses
    let d = tmp("convert-invalid");
    let e = d.join("bad.egret");
    std::fs::write(&e, "policy p {\n  select pods(app = \"a b\") to 0.0.0.0/0 via nodes(gw = y) ip 192.0.2.1\n}\n")
        .expect("write");
    let lint = egret(&["lint", e.to_str().expect("utf8")]);
    assert_eq!(code(&lint), 1);
    let o = egret(&["convert", e.to_str().expect("utf8")]);
    assert_eq!(code(&o), 3, "{}", stdout(&o));
    assert!(stdout(&o).is_empty(), "nothing converted: {}", stdout(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("error[E0112]") && err.contains("bad.egret:2:"), "{err}");
    std::fs::remove_dir_all(&d).expect("cleanup");
}

#[test]
fn verbose_reports_skipped_kinds() {
    let o = egret(&["lint", "-v", "tests/fixtures/article/strict-egress.yaml"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("read 1 files: 1 policies"), "{err}");
}

const CLUSTER: &str = "../examples/cluster";
const POLICIES: &str = "../examples/policies";

#[test]
fn compile_explain_diff_on_the_example() {
    let plan = egret(&["compile", "--cluster", CLUSTER, POLICIES, "--node", "worker-1"]);
    assert_eq!(code(&plan), 0);
    assert!(stdout(&plan).contains("0.0.0.0/0 -> redirect gateway-1 192.0.2.13"), "{}", stdout(&plan));

    let json = egret(&[
        "compile",
        "--cluster",
        CLUSTER,
        POLICIES,
        "--node",
        "gateway-1",
        "--emit",
        "cilium",
        "--format",
        "json",
    ]);
    assert_eq!(code(&json), 0);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 9);
    for r in rows {
        let keys: Vec<&str> = r.as_object().expect("object").keys().map(String::as_str).collect();
        // `cilium-dbg bpf egress list -o json`'s field names (sorted here by serde_json's map)
        assert_eq!(keys, ["DestCIDR", "EgressIP", "GatewayIP", "SourceIP"]);
    }
    assert!(stdout(&json).starts_with("[\n  {\n    \"SourceIP\": "), "printed in the command's struct order");
    assert_eq!(
        code(&egret(&[
            "compile",
            "--cluster",
            CLUSTER,
            POLICIES,
            "--node",
            "worker-1",
            "--emit",
            "ir",
            "--format",
            "json"
        ])),
        2
    );
    let plan = egret(&["compile", "--cluster", CLUSTER, POLICIES, "--node", "worker-1", "--format", "json"]);
    assert_eq!(code(&plan), 0);
    let p: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan json");
    assert_eq!(p["node"], "worker-1");
    assert_eq!(p["endpoints"][0]["ip"], "10.244.1.10");
    let entries = p["classes"][0]["entries"].as_array().expect("entries");
    let default = entries.iter().find(|e| e["prefix"] == "0.0.0.0/0").expect("default route entry");
    assert_eq!(default["action"]["kind"], "redirect");
    assert_eq!(default["action"]["gateway"], "192.0.2.13");
    assert_eq!(p["counts"]["class_entries"], entries.len());

    let ex = egret(&[
        "explain",
        "--cluster",
        CLUSTER,
        POLICIES,
        "--from",
        "production/egress-pod",
        "--to",
        "203.0.113.7:443",
        "--format",
        "json",
    ]);
    assert_eq!(code(&ex), 0);
    let v: serde_json::Value = serde_json::from_slice(&ex.stdout).expect("json");
    assert!(v.to_string().contains("egress-gateway-policy"));

    let same = egret(&["diff", "--cluster", CLUSTER, POLICIES, POLICIES]);
    assert_eq!(code(&same), 0, "{}", stdout(&same));
}

#[test]
fn diff_reports_a_behaviour_change_with_exit_1() {
    let d = tmp("diff");
    for f in ["egress-gateway-policy.yaml", "payments.egret"] {
        std::fs::copy(Path::new(POLICIES).join(f), d.join(f)).expect("copy");
    }
    let p = d.join("payments.egret");
    let text = std::fs::read_to_string(&p).expect("read").replace("198.51.100.101", "198.51.100.100");
    std::fs::write(&p, text).expect("write");
    let o = egret(&["diff", "--cluster", CLUSTER, POLICIES, d.to_str().expect("utf8")]);
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(out.contains("pod payments/payment-service-0"), "{out}");
    assert!(out.contains("before: via gateway-1 (192.0.2.13), egress IP 198.51.100.101"), "{out}");
    assert!(out.contains("after:  via gateway-1 (192.0.2.13), egress IP 198.51.100.100"), "{out}");
    std::fs::remove_dir_all(&d).expect("cleanup");
}

#[test]
fn unknown_node_and_endpoint_are_diagnostics() {
    // invalid input: exit 3, the diagnostics on stderr (stdout is the command's data)
    let o = egret(&["compile", "--cluster", CLUSTER, POLICIES, "--node", "worker-9"]);
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("error[E0401]"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let o = egret(&["explain", "--cluster", CLUSTER, POLICIES, "--from", "production/nope", "--to", "203.0.113.7"]);
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("error[E0402]"), "{}", stderr(&o));
    // inputs with errors are refused before compiling
    let o =
        egret(&["compile", "--cluster", CLUSTER, "tests/fixtures/lint/E0105-invalid-cidr.yaml", "--node", "worker-1"]);
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("error[E0105]"), "{}", stderr(&o));
}
