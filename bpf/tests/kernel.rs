//! Kernel tests (privileged): egret-written objects load with aya 0.14 and with
//! `bpftool prog loadall ... type classifier`, and `BPF_PROG_TEST_RUN` gives
//! the same R0, packet and map contents as egret's interpreter.
//!
//! Without root or bpf these tests print one line saying why and return; with
//! `EGRET_REQUIRE_PRIVILEGED=1` they fail instead (TESTING.md). Every pin and
//! mount a test creates is removed by an RAII guard, and the test asserts that
//! nothing is left.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as AyaHashMap, PerCpuArray};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use egret_bpf::elf::{ObjectWriter, verify_and_write};
use egret_bpf::interp::{MapStore, RunInput, run};
use egret_bpf::{MapDef, Program};

/// Why privileged tests cannot run here, if they cannot.
fn missing_privilege() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_owned);
    if euid.as_deref() != Some("0") {
        return Some(format!("not root (euid {})", euid.unwrap_or_else(|| "?".into())));
    }
    if !Path::new("/sys/fs/bpf").exists() {
        return Some("no /sys/fs/bpf (kernel without bpf?)".into());
    }
    None
}

/// Returns true if the test should go on; prints a line or panics otherwise.
fn privileged(test: &str) -> bool {
    let Some(reason) = missing_privilege() else {
        return true;
    };
    if std::env::var("EGRET_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: privileged test cannot run: {reason} (EGRET_REQUIRE_PRIVILEGED=1)");
    }
    println!("skipping {test}: {reason}");
    false
}

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("egret-bpf-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A private bpffs mount on a fresh directory; unmounted and removed on drop.
struct BpffsMount {
    dir: PathBuf,
    /// What a fresh bpffs already holds (`maps.debug`, `progs.debug` with bpf_preload).
    baseline: Vec<String>,
}

impl BpffsMount {
    fn new(tag: &str) -> BpffsMount {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir(&dir).expect("create mount point");
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .expect("mount runs");
        if !st.success() {
            let _ = std::fs::remove_dir(&dir);
            panic!("mount -t bpf failed: {st}");
        }
        let mut m = BpffsMount {
            dir,
            baseline: Vec::new(),
        };
        m.baseline = m.all_entries();
        m
    }

    /// Entries created since the mount.
    fn entries(&self) -> Vec<String> {
        self.all_entries()
            .into_iter()
            .filter(|e| !self.baseline.contains(e))
            .collect()
    }

    fn all_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        for e in self.entries() {
            let _ = std::fs::remove_file(self.dir.join(e));
        }
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*dir.to_string_lossy()))
}

/// A temporary object file, removed on drop.
struct TempObject(PathBuf);

impl TempObject {
    fn new(bytes: &[u8]) -> TempObject {
        let p = std::env::temp_dir().join(format!("{}.o", unique("obj")));
        std::fs::write(&p, bytes).expect("write object");
        TempObject(p)
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn bpftool() -> String {
    for p in ["/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool"] {
        if Path::new(p).exists() {
            return p.to_owned();
        }
    }
    panic!("bpftool is missing: install the Debian package `bpftool`");
}

fn filled(name: &str, src: &str) -> Program {
    let mut p = common::assemble(name, src).program;
    let values: BTreeMap<String, i64> = [("remote_ipv4", 0xc000_0202), ("tunnel_ifindex", 1)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    p.fill_holes(&values).expect("fills");
    p
}

fn sample_programs() -> Vec<Program> {
    vec![
        filled("ipv4_filter", common::IPV4_FILTER),
        filled("classify", common::CLASSIFY),
        filled("tunnel", common::TUNNEL),
        filled("ttl_dec", common::TTL_DEC),
        filled("udp_port", common::UDP_PORT),
    ]
}

fn frames() -> Vec<Vec<u8>> {
    vec![
        common::udp_frame([198, 51, 100, 10], [203, 0, 113, 20], 5000, 64),
        common::udp_frame([198, 51, 100, 10], [203, 0, 113, 200], 53, 64),
        common::udp_frame([198, 51, 100, 10], [192, 0, 2, 1], 5000, 17),
        common::udp_frame([198, 51, 100, 11], [203, 0, 113, 20], 5001, 1),
        common::arp_frame(),
    ]
}

fn fill_interp_maps(maps: &mut MapStore) {
    maps.update("src_class", &[198, 51, 100, 10], &5u32.to_le_bytes(), 0).expect("ok");
    maps.update("dst_lpm", &common::lpm_key(56, 5, [203, 0, 113, 0]), &2u32.to_le_bytes(), 0)
        .expect("ok");
    maps.update("dst_lpm", &common::lpm_key(57, 5, [203, 0, 113, 128]), &7u32.to_le_bytes(), 0)
        .expect("ok");
}

fn fill_kernel_maps(bpf: &mut aya::Ebpf) {
    let mut src: AyaHashMap<_, u32, u32> =
        AyaHashMap::try_from(bpf.map_mut("src_class").expect("src_class")).expect("hash map");
    src.insert(u32::from_le_bytes([198, 51, 100, 10]), 5, 0).expect("insert");
    let mut lpm: LpmTrie<_, [u8; 8], u32> =
        LpmTrie::try_from(bpf.map_mut("dst_lpm").expect("dst_lpm")).expect("lpm trie");
    let data = |class: u32, addr: [u8; 4]| {
        let mut d = [0u8; 8];
        d[..4].copy_from_slice(&class.to_le_bytes());
        d[4..].copy_from_slice(&addr);
        d
    };
    lpm.insert(&Key::new(56, data(5, [203, 0, 113, 0])), 2, 0).expect("insert");
    lpm.insert(&Key::new(57, data(5, [203, 0, 113, 128])), 7, 0).expect("insert");
}

#[test]
fn aya_test_run_agrees_with_the_interpreter() {
    if !privileged("aya_test_run_agrees_with_the_interpreter") {
        return;
    }
    let maps: Vec<MapDef> = common::sample_maps();
    let programs = sample_programs();
    let bytes = verify_and_write(&programs, &maps, "Dual MIT/GPL").expect("verifies and writes");
    let mut bpf = aya::Ebpf::load(&bytes).unwrap_or_else(|e| panic!("aya loads egret's object: {e}"));
    fill_kernel_maps(&mut bpf);
    let mut interp_maps = MapStore::new(&maps);
    fill_interp_maps(&mut interp_maps);
    let mut compared = 0;
    for p in &programs {
        let prog: &mut SchedClassifier = bpf
            .program_mut(&p.name)
            .unwrap_or_else(|| panic!("aya found program {}", p.name))
            .try_into()
            .expect("a classifier");
        prog.load().unwrap_or_else(|e| panic!("kernel verifier accepts {}: {e:?}", p.name));
        for frame in frames() {
            let mut out = vec![0u8; frame.len() + 64];
            let res = prog
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    data_out: Some(&mut out),
                    ..TestRunOptions::default()
                })
                .unwrap_or_else(|e| panic!("{}: test_run: {e:?}", p.name));
            out.truncate(res.data_size_out as usize);
            let ours = run(p, &mut interp_maps, &RunInput::for_frame(&frame))
                .unwrap_or_else(|e| panic!("{}: interpreter: {e}", p.name));
            assert_eq!(u64::from(res.return_value), ours.r0, "{}: R0 differs", p.name);
            assert_eq!(out, ours.packet, "{}: packet differs", p.name);
            compared += 1;
        }
    }
    // the counters the classifier kept agree (summed over CPUs)
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(bpf.map("counters").expect("counters")).expect("per-cpu array");
    for idx in 0..4u32 {
        let kernel: u64 = counters.get(&idx, 0).expect("get").iter().sum();
        let ours: u64 = interp_maps
            .lookup_percpu("counters", &idx.to_le_bytes())
            .expect("ok")
            .expect("array entry")
            .iter()
            .map(|v| u64::from_le_bytes(v.as_slice().try_into().expect("8 bytes")))
            .sum();
        assert_eq!(kernel, ours, "counter {idx}");
    }
    assert_eq!(compared, programs.len() * frames().len());
    println!("{compared} kernel runs identical to the interpreter");
}

#[test]
fn bpftool_loads_and_pins_egret_objects() {
    if !privileged("bpftool_loads_and_pins_egret_objects") {
        return;
    }
    let bytes = verify_and_write(&sample_programs(), &common::sample_maps(), "Dual MIT/GPL")
        .expect("verifies and writes");
    let obj = TempObject::new(&bytes);
    let fs = BpffsMount::new("bpftool");
    let pins = fs.dir.join("progs");
    let out = Command::new(bpftool())
        .args(["prog", "loadall"])
        .arg(&obj.0)
        .arg(&pins)
        .args(["type", "classifier"])
        .output()
        .expect("bpftool runs");
    assert!(
        out.status.success(),
        "bpftool prog loadall failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&pins)
        .expect("pin dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["classify", "ipv4_filter", "ttl_dec", "tunnel", "udp_port"]);
    let show = Command::new(bpftool())
        .args(["prog", "show", "pinned"])
        .arg(pins.join("classify"))
        .output()
        .expect("bpftool runs");
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("sched_cls") && text.contains("classify"), "{text}");
    // clean up the pins, then the mount, and check nothing is left
    for n in &names {
        std::fs::remove_file(pins.join(n)).expect("unpin");
    }
    std::fs::remove_dir(&pins).expect("remove pin dir");
    let dir = fs.dir.clone();
    drop(fs);
    assert!(!mounted(&dir), "bpffs still mounted at {}", dir.display());
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn objects_with_unfilled_holes_load_in_both_loaders() {
    if !privileged("objects_with_unfilled_holes_load_in_both_loaders") {
        return;
    }
    // the `.egret.holes` section must not disturb aya or libbpf
    let tunnel = common::assemble("tunnel", common::TUNNEL).program;
    assert!(!tunnel.holes.is_empty());
    let bytes = verify_and_write(std::slice::from_ref(&tunnel), &[], "GPL").expect("writes");
    let mut bpf = aya::Ebpf::load(&bytes).expect("aya loads an object with holes");
    let prog: &mut SchedClassifier = bpf
        .program_mut("tunnel")
        .expect("program")
        .try_into()
        .expect("classifier");
    prog.load().expect("kernel accepts it");
    let obj = TempObject::new(&bytes);
    let fs = BpffsMount::new("holes");
    let pins = fs.dir.join("p");
    let out = Command::new(bpftool())
        .args(["prog", "loadall"])
        .arg(&obj.0)
        .arg(&pins)
        .args(["type", "classifier"])
        .output()
        .expect("bpftool runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(pins.join("tunnel")).expect("unpin");
    std::fs::remove_dir(&pins).expect("remove pin dir");
    assert!(fs.entries().is_empty(), "{:?}", fs.entries());
}

#[test]
fn kernel_and_egret_verifiers_both_reject_a_missing_bounds_check() {
    if !privileged("kernel_and_egret_verifiers_both_reject_a_missing_bounds_check") {
        return;
    }
    let src = common::IPV4_FILTER.replace("if r4 > r3 goto pass", "r4 = r4");
    let p = common::assemble("broken", &src).program;
    assert!(egret_bpf::verifier::verify(&p, &[]).is_err());
    let mut w = ObjectWriter::new(Vec::new(), "GPL").expect("writer");
    w.add_unverified_program(p).expect("adds");
    let bytes = w.write().expect("writes");
    let mut bpf = aya::Ebpf::load(&bytes).expect("object parses");
    let prog: &mut SchedClassifier = bpf
        .program_mut("broken")
        .expect("program")
        .try_into()
        .expect("classifier");
    let err = prog.load().expect_err("the kernel verifier rejects it too");
    let text = format!("{err:?}");
    assert!(text.contains("invalid access to packet"), "{text}");
}
