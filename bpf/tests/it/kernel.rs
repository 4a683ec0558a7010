//! Kernel tests (privileged): egret-written objects load with aya 0.14 and with
//! plain `bpftool prog loadall OBJ DIR` (no `type`), and `BPF_PROG_TEST_RUN` gives
//! the same R0, packet and map contents as egret's interpreter.
//!
//! Without root or bpf these tests print one line saying why and return; with
//! `EGRET_REQUIRE_PRIVILEGED=1` they fail instead (TESTING.md). Every pin and
//! mount a test creates is removed by an RAII guard, and the test asserts that
//! nothing is left.

use crate::common;

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

use egret_testkit::netns::Bpffs;
use egret_testkit::privileged as privileged_gate;
use privileged_gate::{privileged, skip_or_fail};

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("egret-bpf-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
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

fn bpftool() -> Option<String> {
    ["/usr/sbin/bpftool", "/usr/bin/bpftool", "/sbin/bpftool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(str::to_owned)
}

/// bpftool's path, or `None` after printing (or panicking) why the test stops.
fn require_bpftool(test: &str) -> Option<String> {
    let found = bpftool();
    if found.is_none() {
        skip_or_fail(test, "bpftool is missing (apt-get install -y bpftool)");
    }
    found
}

fn filled(name: &str, src: &str) -> Program {
    let mut p = common::assemble(name, src).program;
    let values: BTreeMap<String, i64> =
        [("remote_ipv4", 0xc000_0202), ("tunnel_ifindex", 1)].into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
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
    maps.update("dst_lpm", &common::lpm_key(56, 5, [203, 0, 113, 0]), &2u32.to_le_bytes(), 0).expect("ok");
    maps.update("dst_lpm", &common::lpm_key(57, 5, [203, 0, 113, 128]), &7u32.to_le_bytes(), 0).expect("ok");
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
    let Some(bpftool) = require_bpftool("bpftool_loads_and_pins_egret_objects") else {
        return;
    };
    let bytes =
        verify_and_write(&sample_programs(), &common::sample_maps(), "Dual MIT/GPL").expect("verifies and writes");
    let obj = TempObject::new(&bytes);
    let fs = Bpffs::new("bpftool");
    let pins = fs.mount_point().join("progs");
    let out = Command::new(&bpftool).args(["prog", "loadall"]).arg(&obj.0).arg(&pins).output().expect("bpftool runs");
    assert!(out.status.success(), "bpftool prog loadall failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&pins)
        .expect("pin dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["classify", "ipv4_filter", "ttl_dec", "tunnel", "udp_port"]);
    let show = Command::new(&bpftool)
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
    let dir = fs.mount_point().to_path_buf();
    drop(fs);
    assert!(!egret_testkit::netns::mounted(&dir), "bpffs still mounted at {}", dir.display());
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn objects_with_unfilled_holes_load_in_both_loaders() {
    if !privileged("objects_with_unfilled_holes_load_in_both_loaders") {
        return;
    }
    let Some(bpftool) = require_bpftool("objects_with_unfilled_holes_load_in_both_loaders") else {
        return;
    };
    // the `.egret.holes` section must not disturb aya or libbpf
    let tunnel = common::assemble("tunnel", common::TUNNEL).program;
    assert!(!tunnel.holes.is_empty());
    let bytes = verify_and_write(std::slice::from_ref(&tunnel), &[], "GPL").expect("writes");
    let mut bpf = aya::Ebpf::load(&bytes).expect("aya loads an object with holes");
    let prog: &mut SchedClassifier = bpf.program_mut("tunnel").expect("program").try_into().expect("classifier");
    prog.load().expect("kernel accepts it");
    let obj = TempObject::new(&bytes);
    let fs = Bpffs::new("holes");
    let pins = fs.mount_point().join("p");
    let out = Command::new(&bpftool).args(["prog", "loadall"]).arg(&obj.0).arg(&pins).output().expect("bpftool runs");
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
    let prog: &mut SchedClassifier = bpf.program_mut("broken").expect("program").try_into().expect("classifier");
    let err = prog.load().expect_err("the kernel verifier rejects it too");
    let text = format!("{err:?}");
    assert!(text.contains("invalid access to packet"), "{text}");
}

/// Deterministic xorshift generator; the seed is printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A random loop-free program over scalars: every ALU/JMP form, sign
/// extensions, byte swaps, stack round trips and stack atomics, folding all
/// registers into R0 at the end.
fn random_program(rng: &mut Rng, name: &str) -> Program {
    use egret_bpf::insn::{
        AluOp, AtomicOp, EndBits, EndOp, Instruction as I, JmpCond, Operand, Reg, SignExt, Size, Width,
    };
    let work = [Reg::R0, Reg::R1, Reg::R3, Reg::R4, Reg::R5, Reg::R7, Reg::R8, Reg::R9];
    let mut b = egret_bpf::ProgramBuilder::new(name);
    let bail = b.new_label("bail");
    b.emit(I::load(Size::W, Reg::R2, Reg::R1, 76));
    b.emit(I::load(Size::W, Reg::R3, Reg::R1, 80));
    b.emit(I::mov64_reg(Reg::R4, Reg::R2));
    b.emit(I::alu64_imm(AluOp::Add, Reg::R4, 64));
    b.jmp_reg(JmpCond::Gt, Reg::R4, Reg::R3, bail);
    for (n, r) in work.iter().enumerate() {
        let size = rng.pick(&Size::ALL);
        b.emit(I::load(size, *r, Reg::R2, (n * 7) as i16));
    }
    let blocks = 4 + rng.below(4);
    for blk in 0..blocks {
        let join = b.new_label(&format!("j{blk}"));
        for _ in 0..(6 + rng.below(10)) {
            let dst = rng.pick(&work);
            let src = rng.pick(&work);
            let width = rng.pick(&[Width::W32, Width::W64]);
            let bits: i32 = if width == Width::W64 { 64 } else { 32 };
            match rng.below(10) {
                0..=4 => {
                    let op = rng.pick(&AluOp::ALL);
                    let operand = if rng.below(2) == 0 {
                        Operand::Reg(src)
                    } else {
                        let imm = match op {
                            AluOp::Lsh | AluOp::Rsh | AluOp::Arsh => rng.below(bits as u64) as i32,
                            AluOp::Div | AluOp::SDiv | AluOp::Mod | AluOp::SMod => {
                                (rng.next() as i32 | 1).rotate_left(rng.below(32) as u32) | 1
                            }
                            _ => rng.next() as i32 >> rng.below(31),
                        };
                        Operand::Imm(imm)
                    };
                    b.emit(I::Alu { width, op, dst, src: operand });
                }
                5 => {
                    b.emit(I::Neg { width, dst });
                }
                6 => {
                    let op = rng.pick(&[EndOp::ToLe, EndOp::ToBe, EndOp::Swap]);
                    let bits = rng.pick(&[EndBits::B16, EndBits::B32, EndBits::B64]);
                    b.emit(I::End { op, bits, dst });
                }
                7 => {
                    let ext = if width == Width::W64 {
                        rng.pick(&[SignExt::S8, SignExt::S16, SignExt::S32])
                    } else {
                        rng.pick(&[SignExt::S8, SignExt::S16])
                    };
                    b.emit(I::MovSx { width, ext, dst, src });
                }
                8 => {
                    let cond = rng.pick(&JmpCond::ALL);
                    let operand = if rng.below(2) == 0 {
                        Operand::Reg(src)
                    } else {
                        Operand::Imm(rng.next() as i32 >> rng.below(31))
                    };
                    b.jump(width, cond, dst, operand, join);
                }
                _ => {
                    // stack round trip, sometimes through an atomic
                    let slot = -8 * (1 + rng.below(8) as i16);
                    b.emit(I::store_reg(Size::DW, Reg::R10, src, slot));
                    if rng.below(2) == 0 {
                        let op =
                            rng.pick(&[AtomicOp::Add, AtomicOp::Or, AtomicOp::Xor, AtomicOp::FetchAdd, AtomicOp::Xchg]);
                        b.emit(I::atomic(Size::DW, op, Reg::R10, dst, slot));
                    }
                    b.emit(I::load(Size::DW, dst, Reg::R10, slot));
                }
            }
        }
        b.bind(join);
    }
    for r in &work[1..] {
        b.emit(I::alu64_reg(AluOp::Xor, Reg::R0, *r));
    }
    b.emit(I::mov64_reg(Reg::R1, Reg::R0));
    b.emit(I::alu64_imm(AluOp::Rsh, Reg::R1, 32));
    b.emit(I::alu64_reg(AluOp::Xor, Reg::R0, Reg::R1));
    b.emit(I::exit());
    b.bind(bail);
    b.emit(I::mov64_imm(Reg::R0, 0));
    b.emit(I::exit());
    b.finish().expect("random program builds")
}

#[test]
fn random_scalar_programs_agree_with_the_kernel() {
    if !privileged("random_scalar_programs_agree_with_the_kernel") {
        return;
    }
    let seed = std::env::var("EGRET_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x00e9_2e7b_9f00_0001_u64);
    let mut rng = Rng(seed);
    let mut frame = common::udp_frame([10, 1, 2, 3], [10, 4, 5, 6], 4242, 64);
    let mut runs = 0;
    for n in 0..60 {
        let name = format!("rnd{n}");
        let p = random_program(&mut rng, &name);
        let bytes = verify_and_write(std::slice::from_ref(&p), &[], "GPL")
            .unwrap_or_else(|e| panic!("seed {seed}: program {n} rejected by egret: {e}"));
        let mut bpf = aya::Ebpf::load(&bytes).expect("aya loads");
        let prog: &mut SchedClassifier = bpf.program_mut(&name).expect("program").try_into().expect("classifier");
        prog.load().unwrap_or_else(|e| panic!("seed {seed}: program {n} rejected by the kernel: {e:?}"));
        for _ in 0..4 {
            for b in &mut frame[14..] {
                *b = rng.next() as u8;
            }
            let res =
                prog.test_run(TestRunOptions { data_in: Some(&frame), ..TestRunOptions::default() }).expect("test_run");
            let ours = run(&p, &mut MapStore::new(&[]), &RunInput::for_frame(&frame))
                .unwrap_or_else(|e| panic!("seed {seed}: program {n}: {e}"));
            assert_eq!(
                u64::from(res.return_value),
                ours.r0 & 0xffff_ffff,
                "seed {seed}: program {n} differs on {frame:02x?}\n{}",
                egret_bpf::disasm::to_asm(&p, egret_bpf::disasm::Dialect::Llvm14Alu32)
            );
            runs += 1;
        }
    }
    println!("{runs} random runs identical (seed {seed})");
}
