//! Every lint code has a fixture whose rendered diagnostics are snapshotted,
//! and the article's wrong YAML is snapshotted too. The corrected examples in
//! `examples/` lint clean.

use egret_compiler::lint;
use egret_lang::diag::{self, Diagnostic};
use egret_lang::load;
use egret_lang::source::SourceMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Lints paths the way `egret lint` does; snapshot mode when any cluster object is present
/// (or `cluster` paths are given).
fn lint_paths(policies: &[PathBuf], cluster: &[PathBuf]) -> (SourceMap, Vec<Diagnostic>) {
    lint_with(policies, cluster, false)
}

/// `auto_snapshot`: fixtures that carry cluster objects are linted as if they were a snapshot.
fn lint_with(policies: &[PathBuf], cluster: &[PathBuf], auto_snapshot: bool) -> (SourceMap, Vec<Diagnostic>) {
    let mut sources = SourceMap::new();
    let mut loaded = load::load(&mut sources, policies);
    loaded.extend(load::load(&mut sources, cluster));
    let snapshot = !cluster.is_empty() || (auto_snapshot && !loaded.bundle.cluster.is_empty());
    let mut diags = loaded.diagnostics;
    diags.extend(lint::lint(&loaded.bundle, &lint::Options { snapshot, service_cidrs: Vec::new() }));
    diag::sort_dedup(&mut diags);
    (sources, diags)
}

/// Renders with file names relative to the crate, so snapshots do not depend on the checkout path.
fn render(sources: &SourceMap, diags: &[Diagnostic]) -> String {
    let base = format!("{}/", root().display());
    diag::render::human(diags, sources).replace(&base, "")
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures").join(dir))
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| load::is_input_file(p))
        .collect();
    v.sort();
    v
}

#[test]
fn every_lint_fixture_reports_its_code() {
    let mut failures = Vec::new();
    for f in fixtures("lint") {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let code = &name[..5];
        let (sources, diags) = lint_with(std::slice::from_ref(&f), &[], true);
        if !diags.iter().any(|d| d.code.id == code) {
            failures.push(format!(
                "{name}: expected {code}, got {:?}",
                diags.iter().map(|d| d.code.id).collect::<Vec<_>>()
            ));
        }
        for d in &diags {
            assert!(d.primary_span().is_some(), "{name}: {} has no span", d.code.id);
            assert!(d.help.is_some(), "{name}: {} has no help line", d.code.id);
        }
        insta::assert_snapshot!(format!("lint__{}", name.replace('.', "_")), render(&sources, &diags));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_code_has_a_fixture() {
    // Codes of `compile`/`explain` inputs are tested with those commands.
    // E0006 (the config file) is tested with `egret lint --config` (ci_tools.rs);
    // E0104 is retired: the API server drops the namespace, W0123 says so.
    // E0007, E0008 and W0009 (size limits, special files) need files a fixture
    // cannot hold: `egret_lang::load`'s tests make them.
    const ELSEWHERE: &[&str] = &["E0006", "E0007", "E0008", "W0009", "E0104", "E0401", "E0402"];
    let have: Vec<String> = fixtures("lint")
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(|n| n[..5].to_string()))
        .collect();
    let missing: Vec<&str> = egret_lang::codes::ALL
        .iter()
        .map(|c| c.id)
        .filter(|id| !ELSEWHERE.contains(id) && !have.iter().any(|h| h == id))
        .collect();
    assert!(missing.is_empty(), "codes without a lint fixture: {missing:?}");
}

#[test]
fn article_mistakes_are_reported() {
    let expect: &[(&str, &[&str])] = &[
        ("option1-static-egress-ip.yaml", &["E0102"]),
        ("step4-egress-gateway-policy.yaml", &["W0123", "E0102", "E0101"]),
        ("strict-egress.yaml", &["W0123", "E0102", "E0101"]),
        ("restricted-gateway.yaml", &["W0123", "E0102", "E0101"]),
        ("multiple-egress-ips-with-step4.yaml", &["E0202"]),
    ];
    for f in fixtures("article") {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let (sources, diags) = lint_paths(std::slice::from_ref(&f), &[]);
        let want = expect
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("no expectation for {name}"));
        for code in want {
            assert!(
                diags.iter().any(|d| d.code.id == *code),
                "{name}: expected {code}, got {:?}",
                diags.iter().map(|d| d.code.id).collect::<Vec<_>>()
            );
        }
        insta::assert_snapshot!(format!("article__{}", name.replace('.', "_")), render(&sources, &diags));
    }
}

#[test]
fn corrected_examples_lint_clean() {
    let ex = root().join("../examples");
    let (sources, diags) = lint_paths(&[ex.join("policies")], &[ex.join("cluster")]);
    assert!(diags.is_empty(), "{}", render(&sources, &diags));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(ex.join("article"))
        .expect("dir")
        .map(|e| e.expect("e").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 9);
    for d in dirs {
        let (sources, diags) = lint_paths(std::slice::from_ref(&d), &[]);
        assert!(diags.is_empty(), "{}: {}", d.display(), render(&sources, &diags));
    }
}
