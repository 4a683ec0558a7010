//! `egret-bench lint`: lint N policies (default 10,000; parse + validate +
//! policy-set checks) on one core, 5 runs, median per stage. Target: under 2 s.
//!
//! The synthetic set is shaped like a large platform's: every policy selects one
//! app in one team namespace (some by namespace only, some with a shared
//! `use-egress-gateway` label), captures 2–6 destination prefixes drawn from a
//! pool where partners overlap (so ties and shadowing must really be checked),
//! 10% capture `0.0.0.0/0` minus private ranges, and gateways come from 20 pools.
//!
//! `egret-bench lint --worst` runs the inputs that were once quadratic or
//! unbounded (issue #22) instead, each through the `egret` binary as a user
//! runs it (`egret lint INPUT`, human output; its own process, so the peak
//! resident memory is that run's): 2,000 identical policies, one policy with
//! 2,000 destinations and an exclusion outside all of them, 2,000 policies
//! that differ only in their egress IP, ~10 MB of the synthetic set,
//! `/dev/zero`, a directory holding a FIFO, one holding symbolic-link loops,
//! and a 100 MB file. Targets: under 2 s each for the policy sets and under
//! 1 s for the hostile inputs, output bounded, 10 MB of YAML under 200 MB.

use crate::report::{Table, median, ms};
use egret_compiler::lint;
use egret_lang::source::SourceMap;
use std::fmt::Write;
use std::path::Path;
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
    let n = 19_300;
    let ten_mb = synth(n);
    vec![
        ("2,000 identical policies".into(), identical),
        ("1 policy, 2,000 destinations, 1 exclusion outside them".into(), many),
        ("2,000 policies differing only in egress IP".into(), conflicts),
        (format!("{n} synthetic policies ({:.1} MB)", ten_mb.len() as f64 / 1e6), ten_mb),
    ]
}

/// One run of the `egret` binary: wall time, peak resident memory of that
/// process (`wait4`'s `ru_maxrss`), exit code and the bytes it printed.
struct Run {
    wall: Duration,
    peak_rss_kib: u64,
    code: i32,
    output: Vec<u8>,
}

/// Runs `egret ARGS` with stdout and stderr into a file (so nothing it prints
/// can block it) and measures that one process.
#[expect(unsafe_code, reason = "wait4(2): the only call that gives one child's own peak memory")]
fn run_egret(egret: &Path, args: &[&std::ffi::OsStr], out: &Path) -> anyhow::Result<Run> {
    use anyhow::Context as _;
    let sink = std::fs::File::create(out)?;
    let t0 = Instant::now();
    let child = std::process::Command::new(egret)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(sink.try_clone()?)
        .stderr(sink)
        .spawn()
        .with_context(|| format!("running {}", egret.display()))?;
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child (never waited through `child`), with
    // valid pointers to the two out-values.
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let wall = t0.elapsed();
    anyhow::ensure!(r == pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    Ok(Run { wall, peak_rss_kib: u64::try_from(usage.ru_maxrss)?, code, output: std::fs::read(out)? })
}

/// The first diagnostic code (`E0007`, `W0009`, …) `egret` printed, if any.
fn first_code(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| {
            w.len() == 5 && (w.starts_with('E') || w.starts_with('W')) && w[1..].bytes().all(|b| b.is_ascii_digit())
        })
        .unwrap_or("—")
        .to_owned()
}

/// What one `--worst` row runs: a name and the arguments after `egret lint`,
/// prepared in `dir`.
type Case = (String, Vec<std::ffi::OsString>);

/// The inputs of `--worst`, written into `dir`: the once-quadratic policy
/// sets, ~10 MB of YAML, and the hostile inputs (`/dev/zero`, a FIFO and a
/// symbolic-link loop inside a policy directory, a 100 MB file).
fn worst_cases(dir: &Path) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for (i, (what, text)) in worst_inputs().into_iter().enumerate() {
        let f = dir.join(format!("worst-{i}.yaml"));
        std::fs::write(&f, text)?;
        cases.push((what, vec![f.into_os_string()]));
    }
    cases.push(("`/dev/zero` named as a policy file".into(), vec!["/dev/zero".into()]));
    let one = policy("one", "  - \"0.0.0.0/0\"\n", "");
    let fifo_dir = dir.join("with-fifo");
    std::fs::create_dir(&fifo_dir)?;
    std::fs::write(fifo_dir.join("policy.yaml"), &one)?;
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fifo_dir.join("pipe.yaml"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )?;
    cases.push(("a directory with a policy and a FIFO `pipe.yaml`".into(), vec![fifo_dir.into_os_string()]));
    let loop_dir = dir.join("with-loop");
    std::fs::create_dir_all(loop_dir.join("sub"))?;
    std::fs::write(loop_dir.join("sub/policy.yaml"), &one)?;
    std::os::unix::fs::symlink("..", loop_dir.join("sub/up"))?;
    std::os::unix::fs::symlink(&loop_dir, loop_dir.join("sub/top"))?;
    cases.push(("a directory with a policy and two symbolic-link loops".into(), vec![loop_dir.into_os_string()]));
    let big = dir.join("100mb.yaml");
    {
        use std::io::Write as _;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&big)?);
        let line = format!("# {}\n", "x".repeat(97));
        for _ in 0..(100 << 20) / line.len() {
            w.write_all(line.as_bytes())?;
        }
        w.flush()?;
    }
    cases.push(("a 100 MB file".into(), vec![big.into_os_string()]));
    Ok(cases)
}

/// `--worst`: each input linted by the `egret` binary at `egret`, as a user
/// runs it (human output), five times; wall time and that process's peak
/// resident memory.
///
/// # Errors
/// The binary cannot be run, or the inputs cannot be written.
pub fn run_worst(egret: &Path) -> anyhow::Result<Vec<Table>> {
    let mut t = Table::new(
        "Lint worst cases: `egret lint INPUT` as a process (parse + lint + human rendering)",
        &[
            "input",
            "input bytes",
            "exit",
            "first code",
            "output bytes",
            "median of 5 (ms)",
            "max (ms)",
            "peak RSS, max of 5 (MiB)",
        ],
    );
    let dir = std::env::temp_dir().join(format!("egret-bench-worst-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir)?;
    let result = (|| {
        for (what, args) in worst_cases(&dir)? {
            let bytes: u64 = args
                .iter()
                .filter_map(|a| std::fs::metadata(a).ok())
                .map(|m| if m.is_file() { m.len() } else { 0 })
                .sum();
            let mut lint_args: Vec<&std::ffi::OsStr> = vec!["lint".as_ref()];
            lint_args.extend(args.iter().map(std::ffi::OsString::as_os_str));
            let runs =
                (0..5).map(|_| run_egret(egret, &lint_args, &dir.join("out"))).collect::<anyhow::Result<Vec<_>>>()?;
            let last = runs.last().expect("five runs");
            t.row(vec![
                what,
                bytes.to_string(),
                last.code.to_string(),
                first_code(&last.output),
                last.output.len().to_string(),
                ms(median(runs.iter().map(|r| r.wall).collect())),
                ms(runs.iter().map(|r| r.wall).max().unwrap_or(Duration::ZERO)),
                (runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) >> 10).to_string(),
            ]);
        }
        anyhow::Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(vec![t])
}
