//! Swap latency: artifact in memory → every link runs the new generation, for
//! 1, 10 and 100 attachments (pod veths in a network namespace of its own).
//!
//! ```text
//! cargo run --release -p egret-loader --example bench_swap [-- --swaps N]
//! ```
//!
//! Needs root (bpf, netns, veth); prints one line and exits otherwise. For
//! each size it creates a namespace with that many veth pairs, mounts a
//! private bpffs, attaches the demo classifier to every veth, then times
//! `Loader::apply` alternating two artifacts (different map contents and
//! code), and reports the median, 90th percentile and extremes of:
//! - `to swapped` — what the target is about: checks, hole filling, ELF
//!   load, map creation and filling, program loads (kernel verifier), pins,
//!   marker, and replacing the program of every link;
//! - its parts `build` and `swap` (link replacements alone);
//! - `cleanup` — releasing links and deleting the previous generation, which
//!   happens after traffic already runs the new one.
//!
//! Everything it creates is removed at the end, also on failure (RAII).

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

fn run(cmd: &mut Command) -> Result<(), String> {
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

fn stats(v: &mut [Duration]) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("{:8.3} {:8.3} {:8.3} {:8.3}", ms(p(0.5)), ms(p(0.9)), ms(v[0]), ms(v[v.len() - 1]))
}

fn bench(attachments: usize, swaps: usize) -> Result<Samples, String> {
    let tag = format!("egret-bench-{}-{attachments}", std::process::id());
    run(Command::new("ip").args(["netns", "add", &tag]))?;
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
    run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&dir))?;

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

fn main() {
    let mut swaps = 51;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--swaps" {
            swaps = args.next().and_then(|v| v.parse().ok()).unwrap_or(swaps);
        }
    }
    let euid = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:").map(|r| r.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    if !euid {
        println!("bench_swap: needs root (bpf, netns, veth); not run");
        return;
    }
    println!("swap latency, {swaps} swaps per size, alternating two artifacts (102 map entries each), ms:");
    println!(
        "{:>11}  {:<36}  {:<36}  {:<36}  {:<36}",
        "", "to swapped", "  build", "  swap (link updates)", "  cleanup"
    );
    println!("{:>11}  {}", "attachments", "  median      p90      min      max  ".repeat(4));
    for n in [1, 10, 100] {
        match bench(n, swaps) {
            Ok(mut s) => println!(
                "{n:>11}  {}  {}  {}  {}",
                stats(&mut s.to_swapped),
                stats(&mut s.build),
                stats(&mut s.swap),
                stats(&mut s.cleanup)
            ),
            Err(e) => {
                eprintln!("bench_swap: {n} attachments: {e}");
                std::process::exit(1);
            }
        }
    }
}
