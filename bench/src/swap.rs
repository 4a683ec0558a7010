//! `egret-bench swap` (root): swap latency — artifact in memory → every
//! link runs the new generation, for 1, 10 and 100 attachments (pod veths
//! in a network namespace of its own).
//!
//! For each size it creates a namespace with that many veth pairs, mounts a
//! private bpffs, attaches the demo classifier (`egret_loader::demo`) to
//! every veth, then times `Loader::apply` alternating two artifacts
//! (different map contents and code), and reports the median and 90th
//! percentile of:
//! - `to swapped` — checks, hole filling, ELF load, map creation and
//!   filling, program loads (kernel verifier), pins, marker, and replacing
//!   the program of every link;
//! - its parts `build` and `swap` (link replacements alone);
//! - `cleanup` — releasing links and deleting the previous generation, which
//!   happens after traffic already runs the new one.
//!
//! Everything it creates is removed at the end, also on failure (RAII).

use crate::report::Table;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use egret_loader::demo::{DemoSpec, Verdict, demo_artifact};
use egret_loader::{ApplyReport, Loader, LoaderConfig, PodTarget};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

struct Entered(File);

impl Entered {
    fn new(ns: &str) -> Result<Entered, String> {
        let own = File::open("/proc/thread-self/ns/net").map_err(|e| e.to_string())?;
        let target = File::open(format!("/run/netns/{ns}")).map_err(|e| e.to_string())?;
        rustix::thread::move_into_link_name_space(target.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .map_err(|e| e.to_string())?;
        Ok(Entered(own))
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ =
            rustix::thread::move_into_link_name_space(self.0.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network));
    }
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr))) }
}

#[derive(Default)]
struct Samples {
    to_swapped: Vec<Duration>,
    build: Vec<Duration>,
    swap: Vec<Duration>,
    cleanup: Vec<Duration>,
}

/// Median and 90th percentile, ms with two decimals.
fn stats(v: &mut [Duration]) -> [String; 2] {
    v.sort();
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    let p = |q: f64| v.get(((v.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or_default();
    [ms(p(0.5)), ms(p(0.9))]
}

fn bench(attachments: usize, swaps: usize) -> Result<Samples, String> {
    let tag = format!("egret-bench-{}-{attachments}", std::process::id());
    sh(Command::new("ip").args(["netns", "add", &tag]))?;
    let ns = Netns(tag.clone());
    let mut batch = String::new();
    for i in 0..attachments {
        batch.push_str(&format!("link add bv{i} type veth peer name bp{i}\nlink set bv{i} up\nlink set bp{i} up\n"));
    }
    let mut child = Command::new("ip")
        .args(["-n", &ns.0, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    {
        use std::io::Write as _;
        let stdin = child.stdin.as_mut().ok_or("no stdin")?;
        stdin.write_all(batch.as_bytes()).map_err(|e| e.to_string())?;
    }
    let st = child.wait().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("ip -batch failed: {st}"));
    }
    let dir = std::env::temp_dir().join(format!("{tag}-bpffs"));
    std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
    let mount = Mount(dir.clone());
    sh(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&dir))?;

    let artifact = |tag: u8, d1: Verdict| {
        let mut s = DemoSpec::new("bench", tag)
            .verdict([203, 0, 113, 1].into(), Verdict::Pass)
            .verdict([203, 0, 113, 2].into(), d1);
        s.tunnel_program = false;
        s.filler_entries = 100;
        demo_artifact(&s).map_err(|e| e.to_string())
    };
    let (a, b) = (artifact(0x0a, Verdict::Pass)?, artifact(0x0b, Verdict::Drop)?);

    let entered = Entered::new(&ns.0)?;
    let root = dir.join("egret");
    let (mut loader, _) = Loader::open(LoaderConfig::new(&root)).map_err(|e| e.to_string())?;
    for i in 0..attachments {
        loader.attach_pod(&PodTarget::Interface(format!("bv{i}"))).map_err(|e| e.to_string())?;
    }
    loader.apply(&a).map_err(|e| e.to_string())?;
    let mut s = Samples::default();
    for i in 0..swaps {
        let next = if i % 2 == 0 { &b } else { &a };
        match loader.apply(next).map_err(|e| e.to_string())? {
            ApplyReport::Swapped { replaced, timings, .. } => {
                if replaced != attachments {
                    return Err(format!("replaced {replaced} links, expected {attachments}"));
                }
                s.to_swapped.push(timings.to_swapped());
                s.build.push(timings.build);
                s.swap.push(timings.swap);
                s.cleanup.push(timings.cleanup);
            }
            ApplyReport::Unchanged { .. } => return Err("alternating artifacts never repeat".into()),
        }
    }
    loader.uninstall().map_err(|e| e.to_string())?;
    drop(entered);
    drop(mount);
    drop(ns);
    Ok(s)
}

/// Runs the benchmark with `swaps` swaps per size.
///
/// # Errors
/// Not root, or any step of the set-up or of a swap failed.
pub fn run(swaps: usize) -> anyhow::Result<Vec<Table>> {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").map(|r| r.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    anyhow::ensure!(root, "needs root (bpf, netns, veth)");
    let mut t = Table::new(
        format!("Swap latency, {swaps} swaps per size, alternating two artifacts (102 map entries each), ms"),
        &[
            "attachments",
            "to swapped (median)",
            "p90",
            "build (median)",
            "link updates (median)",
            "cleanup, after (median)",
        ],
    );
    for n in [1, 10, 100] {
        let mut s = bench(n, swaps).map_err(|e| anyhow::anyhow!("{n} attachments: {e}"))?;
        let [sw, sw90] = stats(&mut s.to_swapped);
        let [build, _] = stats(&mut s.build);
        let [links, _] = stats(&mut s.swap);
        let [cleanup, _] = stats(&mut s.cleanup);
        t.row(vec![n.to_string(), sw, sw90, build, links, cleanup]);
    }
    Ok(vec![t])
}
