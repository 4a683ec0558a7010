//! `egret-bench lint`: lint N policies (default 10,000; parse + validate +
//! policy-set checks) on one core, 5 runs, median per stage. Target: under 2 s.
//!
//! The synthetic set is shaped like a large platform's: every policy selects one
//! app in one team namespace (some by namespace only, some with a shared
//! `use-egress-gateway` label), captures 2–6 destination prefixes drawn from a
//! pool where partners overlap (so ties and shadowing must really be checked),
//! 10% capture `0.0.0.0/0` minus private ranges, and gateways come from 20 pools.
//!
//! `egret-bench lint --worst` runs the inputs that were once quadratic
//! (issue #22) instead, each parsed, linted and rendered as `egret lint`
//! prints it: 2,000 identical policies, one policy with 2,000 destinations
//! and an exclusion outside all of them, 2,000 policies that differ only in
//! their egress IP, and ~10 MB of the synthetic set; with the bytes of output
//! and the process's peak resident memory. Targets: under 2 s each, output
//! bounded, 10 MB of YAML under 200 MB.

use crate::report::{Table, median, ms};
use egret_compiler::lint;
use egret_lang::source::SourceMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// The synthetic policy set, as YAML.
pub fn synth(n: usize) -> String {
    let mut s = String::with_capacity(n * 600);
    let mut x: u64 = 0x1234_5678;
    let mut rnd = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    for i in 0..n {
        let team = i % 200;
        let _ = write!(
            s,
            "---\napiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata:\n  name: egress-{i:05}\nspec:\n  selectors:\n"
        );
        match i % 10 {
            0 => {
                let _ = write!(
                    s,
                    "  - namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: team-{team}\n"
                );
            }
            1 => {
                let _ = write!(
                    s,
                    "  - podSelector:\n      matchLabels:\n        use-egress-gateway: \"true\"\n        app: svc-{i}\n"
                );
            }
            _ => {
                let _ = write!(
                    s,
                    "  - podSelector:\n      matchLabels:\n        app: svc-{i}\n      matchExpressions:\n      - {{key: tier, operator: In, values: [web, api]}}\n    namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: team-{team}\n"
                );
            }
        }
        s.push_str("  destinationCIDRs:\n");
        if i % 10 == 3 {
            s.push_str("  - \"0.0.0.0/0\"\n");
        } else {
            for _ in 0..2 + rnd(5) {
                let a = 1 + rnd(220);
                let b = rnd(256);
                let len = [8, 16, 24][rnd(3) as usize];
                let net = match len {
                    8 => format!("{a}.0.0.0/8"),
                    16 => format!("{a}.{b}.0.0/16"),
                    _ => format!("{a}.{b}.{}.0/24", rnd(256)),
                };
                let _ = writeln!(s, "  - \"{net}\"");
            }
        }
        if i % 10 == 3 {
            let _ = write!(s, "  excludedCIDRs:\n  - \"10.0.0.0/8\"\n  - \"192.168.0.0/16\"\n");
        }
        let _ = write!(
            s,
            "  egressGateway:\n    nodeSelector:\n      matchLabels:\n        egress-pool: pool-{}\n    egressIP: \"198.51.100.{}\"\n",
            i % 20,
            i % 250
        );
    }
    s
}

/// Runs the benchmark on `n` policies.
#[must_use]
pub fn run(n: usize) -> Vec<Table> {
    let text = synth(n);
    let (mut parse, mut check, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = (0usize, 0usize);
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut sources = SourceMap::new();
        let id = sources.add("synthetic.yaml", text.clone());
        let (bundle, parse_diags) = egret_lang::k8s::parse_yaml(id, sources.text(id));
        let t1 = Instant::now();
        let diags = lint::lint(&bundle, &lint::Options::default());
        let t2 = Instant::now();
        assert_eq!(bundle.policies.len(), n);
        last = (parse_diags.len(), diags.len());
        parse.push(t1 - t0);
        check.push(t2 - t1);
        total.push(t2 - t0);
    }
    let (min, max) = (total.iter().min().copied(), total.iter().max().copied());
    let mut t = Table::new(
        format!(
            "Lint: {n} policies, {} bytes of YAML, one thread; {} diagnostics from parsing, {} from lint",
            text.len(),
            last.0,
            last.1
        ),
        &["stage", "median of 5 (ms)"],
    );
    t.row(vec!["parse (YAML → AST)".into(), ms(median(parse))]);
    t.row(vec!["lint (validation + policy-set checks)".into(), ms(median(check))]);
    t.row(vec![
        "total".into(),
        format!(
            "{} (min {}, max {}) — target < 2,000",
            ms(median(total)),
            ms(min.unwrap_or(Duration::ZERO)),
            ms(max.unwrap_or(Duration::ZERO))
        ),
    ]);
    vec![t]
}

/// One policy document (selecting `app: web`) with `dests` and `extra` lines.
fn policy(name: &str, dests: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata:\n  name: {name}\nspec:\n  selectors:\n  - podSelector:\n      matchLabels:\n        app: web\n  destinationCIDRs:\n{dests}  egressGateway:\n    nodeSelector:\n      matchLabels:\n        egress: \"true\"\n{extra}"
    )
}

/// The worst-case inputs of `--worst`: (what, YAML).
#[must_use]
pub fn worst_inputs() -> Vec<(String, String)> {
    let identical: String = (0..2000).map(|i| policy(&format!("same-{i:04}"), "  - \"0.0.0.0/0\"\n", "")).collect();
    let dests: String = (0..2000).map(|i| format!("  - \"10.{}.{}.0/24\"\n", i / 250, i % 250)).collect();
    let many = policy("many", &format!("{dests}  excludedCIDRs:\n  - \"192.0.2.0/24\"\n"), "");
    let conflicts: String = (0..2000)
        .map(|i| {
            policy(
                &format!("gw-{i:04}"),
                "  - \"0.0.0.0/0\"\n",
                &format!("    egressIP: \"10.{}.{}.1\"\n", i / 250, i % 250),
            )
        })
        .collect();
    let ten_mb = synth(17_000);
    vec![
        ("2,000 identical policies".into(), identical),
        ("1 policy, 2,000 destinations, 1 exclusion outside them".into(), many),
        ("2,000 policies differing only in egress IP".into(), conflicts),
        (format!("17,000 synthetic policies ({} MB)", ten_mb.len() >> 20), ten_mb),
    ]
}

/// The process's peak resident memory (`VmHWM`), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches(" kB").trim().parse().ok()?;
    Some(kb >> 10)
}

/// `--worst`: each input parsed, linted and rendered, median of 5.
#[must_use]
pub fn run_worst() -> Vec<Table> {
    let mut t = Table::new(
        "Lint worst cases: parse + lint + human rendering, one thread",
        &[
            "input",
            "YAML bytes",
            "diagnostics",
            "output bytes",
            "median of 5 (ms)",
            "max (ms)",
            "peak RSS so far (MiB)",
        ],
    );
    for (what, text) in worst_inputs() {
        let mut times = Vec::new();
        let mut last = (0usize, 0usize);
        for _ in 0..5 {
            let t0 = Instant::now();
            let mut sources = SourceMap::new();
            let id = sources.add("worst.yaml", text.clone());
            let (bundle, mut diags) = egret_lang::k8s::parse_yaml(id, sources.text(id));
            diags.extend(lint::lint(&bundle, &lint::Options::default()));
            let out = egret_lang::diag::render::human(&diags, &sources);
            times.push(t0.elapsed());
            last = (diags.len(), out.len());
        }
        let max = times.iter().max().copied().unwrap_or(Duration::ZERO);
        t.row(vec![
            what,
            text.len().to_string(),
            last.0.to_string(),
            last.1.to_string(),
            ms(median(times)),
            ms(max),
            peak_rss_mib().map_or_else(|| "?".into(), |m| m.to_string()),
        ]);
    }
    vec![t]
}
