//! Cilium's acceptance, exactly: every rule in
//! `tests/fixtures/cilium-acceptance/` (one file per rule, its README lists
//! them and their sources in Cilium 1.20) is run through `egret lint` and
//! `egret compile`. A `rejected/CODE-…` fixture is one Cilium's API server
//! or agent refuses: lint reports error CODE and compile refuses (exit 3).
//! An `accepted/…` fixture is one both accept: lint reports no error (and
//! warning CODE for `accepted/Wxxxx-…`) and compile succeeds with Cilium's
//! meaning (checked on the Cilium view for the rules that change it).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cilium-acceptance")
}

fn egret(args: &[&str]) -> Output {
    crate::messages::run(Command::new(env!("CARGO_BIN_EXE_egret")).args(args).current_dir(dir()))
}

fn fixtures(kind: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir().join(kind))
        .expect("fixture dir")
        .map(|e| format!("{kind}/{}", e.expect("entry").file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    v.sort();
    v
}

/// The codes `egret lint --format json` reports for a fixture, by severity.
fn lint_codes(fixture: &str) -> (i32, Vec<String>, Vec<String>) {
    let o = egret(&["lint", "--format", "json", fixture]);
    let diags: Vec<Value> = serde_json::from_slice(&o.stdout).expect("lint json");
    let codes = |sev: &str| -> Vec<String> {
        diags.iter().filter(|d| d["severity"] == sev).map(|d| d["code"].as_str().unwrap_or("").to_string()).collect()
    };
    (o.status.code().unwrap_or(-1), codes("error"), codes("warning"))
}

/// `egret compile --emit cilium --format json` on worker-1 (where the pod runs).
fn cilium_rows(fixture: &str) -> (i32, Value, String) {
    let o = egret(&[
        "compile",
        "--cluster",
        "cluster.yaml",
        fixture,
        "--node",
        "worker-1",
        "--emit",
        "cilium",
        "--format",
        "json",
    ]);
    let v = if o.status.success() { serde_json::from_slice(&o.stdout).expect("cilium json") } else { Value::Null };
    (o.status.code().unwrap_or(-1), v, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn every_rejected_rule_is_an_error_naming_the_rule_and_compile_refuses() {
    let fixtures = fixtures("rejected");
    assert!(fixtures.len() >= 17, "{fixtures:?}");
    for f in &fixtures {
        let code = &f["rejected/".len()..][..5];
        let (exit, errors, _) = lint_codes(f);
        assert_eq!(exit, 1, "{f}: lint exit");
        assert!(errors.iter().any(|e| e == code), "{f}: want error {code}, got {errors:?}");
        let (exit, _, stderr) = cilium_rows(f);
        assert_eq!(exit, 3, "{f}: compile must refuse it: {stderr}");
        assert!(stderr.contains(code), "{f}: compile names {code}: {stderr}");
    }
}

#[test]
fn every_accepted_rule_compiles_and_warns_when_suspicious() {
    let fixtures = fixtures("accepted");
    assert!(fixtures.len() >= 16, "{fixtures:?}");
    for f in &fixtures {
        let name = &f["accepted/".len()..];
        let (exit, errors, warnings) = lint_codes(f);
        assert!(errors.is_empty(), "{f}: Cilium accepts it, egret reports {errors:?}");
        assert_eq!(exit, 0, "{f}");
        if name.starts_with('W') {
            assert!(warnings.iter().any(|w| w == &name[..5]), "{f}: want warning {}, got {warnings:?}", &name[..5]);
        } else {
            assert!(warnings.is_empty(), "{f}: {warnings:?}");
        }
        let (exit, rows, stderr) = cilium_rows(f);
        assert_eq!(exit, 0, "{f}: compile: {stderr}");
        assert!(rows.is_array(), "{f}");
    }
}

fn dests(rows: &Value) -> Vec<(String, String)> {
    rows.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["DestCIDR"].as_str().unwrap_or("").to_string(),
                        r["GatewayIP"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn accepted_policies_are_compiled_with_ciliums_meaning() {
    // the control: the pod is selected, 52.0.0.0/8 through gateway-1
    let (_, ok, _) = cilium_rows("accepted/ok-minimal.yaml");
    assert_eq!(dests(&ok), vec![("52.0.0.0/8".to_string(), "192.0.2.13".to_string())]);
    // "52.1.2.3/8": Cilium reads 52.0.0.0/8
    let (_, masked, _) = cilium_rows("accepted/W0122-destination-host-bits.yaml");
    assert_eq!(dests(&masked), dests(&ok));
    let (_, excl, _) = cilium_rows("accepted/W0122-excluded-host-bits.yaml");
    assert!(dests(&excl).contains(&("52.1.0.0/16".to_string(), "Excluded CIDR".to_string())), "{excl}");
    // the namespace is dropped: the policy still selects the pod
    let (_, ns, _) = cilium_rows("accepted/W0123-namespace-on-cluster-scoped.yaml");
    assert_eq!(dests(&ns), dests(&ok));
    // unbuildable selectors match nothing, NotIn included (which would otherwise match the pod)
    for f in [
        "accepted/W0125-notin-without-values.yaml",
        "accepted/W0125-in-without-values.yaml",
        "accepted/W0125-exists-with-values.yaml",
        "accepted/W0125-invalid-label-key.yaml",
        "accepted/W0125-invalid-expression-value.yaml",
        "accepted/W0124-empty-selectors.yaml",
    ] {
        let (_, rows, _) = cilium_rows(f);
        assert_eq!(rows, Value::Array(Vec::new()), "{f}");
    }
    // an unbuildable nodeSelector selects no gateway: Cilium's "Not Found"
    let (_, gw, _) = cilium_rows("accepted/W0125-node-selector-unbuildable.yaml");
    assert_eq!(dests(&gw), vec![("52.0.0.0/8".to_string(), "Not Found".to_string())]);
}

#[test]
fn the_readme_of_the_fixtures_lists_every_rule() {
    let readme = std::fs::read_to_string(dir().join("README.md")).expect("README");
    for f in fixtures("rejected").iter().chain(&fixtures("accepted")) {
        assert!(readme.contains(f.as_str()), "README.md does not list {f}");
    }
}
