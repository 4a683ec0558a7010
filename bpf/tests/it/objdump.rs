//! ELF output cross-checked with LLVM: `llvm-objdump -d` / `-dr` (with and
//! without `+alu32`) must print exactly what egret's disassembler prints, line
//! by line; the object must parse back (egret's reader and `object`) with the
//! sections, symbols, relocations and BTF of EBPF-FACTS.md.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use egret_bpf::disasm::{Dialect, objdump_listing};
use egret_bpf::elf::{HOLES_HEADER, HOLES_SECTION, ObjectWriter, PROGRAM_SECTION, WriteOptions, read_object};
use egret_bpf::insn::{AtomicOp, CallTarget, EndOp, Instruction, JmpCond, Size, Width, decode, insns_from_bytes};
use egret_bpf::{AluOp, Program};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

const OBJDUMP: &str = "/usr/bin/llvm-objdump";

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> TempFile {
        let p = std::env::temp_dir().join(format!("egret-bpf-{tag}-{}.o", std::process::id()));
        std::fs::write(&p, bytes).expect("write temp object");
        TempFile(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn objdump(args: &[&str], path: &std::path::Path) -> String {
    let out =
        Command::new(OBJDUMP).args(args).arg(path).output().expect("llvm-objdump runs (it is on every CI image here)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Whether llvm-objdump-14 prints this instruction correctly in a dialect.
fn llvm14_prints(i: &Instruction, dialect: Dialect) -> bool {
    let alu32 = dialect == Dialect::Llvm14Alu32;
    match *i {
        Instruction::Alu { width, op, .. } => {
            !matches!(op, AluOp::Mod | AluOp::SMod | AluOp::SDiv) && (width == Width::W64 || alu32)
        }
        Instruction::Neg { width, .. } => width == Width::W64 || alu32,
        Instruction::MovSx { .. } | Instruction::LoadSx { .. } | Instruction::Store { .. } => false,
        Instruction::End { op, .. } => op != EndOp::Swap,
        Instruction::JaLong { .. } => false,
        Instruction::Jmp { width, cond, .. } => cond != JmpCond::Set && (width == Width::W64 || alu32),
        Instruction::Call(CallTarget::Helper(_)) | Instruction::Exit | Instruction::Ja { .. } => true,
        Instruction::Call(_) => false,
        Instruction::LdImm64 { pseudo, imm, .. } => pseudo == 0 || (imm >> 32) == 0,
        Instruction::LdAbs { .. } | Instruction::Load { .. } | Instruction::StoreReg { .. } => true,
        Instruction::LdInd { imm, .. } => imm == 0,
        Instruction::Atomic { size, op, .. } => size == Size::DW || alu32 || op == AtomicOp::Add,
    }
}

fn sample_object(opts: WriteOptions) -> (Vec<u8>, Vec<Program>) {
    let mut programs = vec![common::opcode_program("opcodes")];
    for (name, src) in [
        ("ipv4_filter", common::IPV4_FILTER),
        ("classify", common::CLASSIFY),
        ("tunnel", common::TUNNEL),
        ("ttl_dec", common::TTL_DEC),
        ("udp_port", common::UDP_PORT),
    ] {
        programs.push(common::assemble(name, src).program);
    }
    let mut w = ObjectWriter::new(common::sample_maps(), "Dual MIT/GPL").expect("maps valid").with_options(opts);
    for p in &programs {
        w.add_unverified_program(p.clone()).expect("adds");
    }
    (w.write().expect("writes"), programs)
}

/// Compares llvm-objdump's listing with egret's, line by line. Returns the
/// number of instruction lines whose text matched exactly.
fn compare(ours: &str, theirs: &str, dialect: Dialect) -> usize {
    let a: Vec<&str> = ours.lines().collect();
    let b: Vec<&str> = theirs.lines().collect();
    assert_eq!(a.len(), b.len(), "line counts differ\n--- egret\n{ours}\n--- llvm-objdump\n{theirs}");
    let mut matched = 0;
    for (n, (x, y)) in a.iter().zip(&b).enumerate() {
        let is_insn = x.contains(":\t") && !x.starts_with('\t');
        if x == y {
            if is_insn {
                matched += 1;
            }
            continue;
        }
        // a difference is allowed only where LLVM 14 cannot print the instruction
        let (prefix_x, _) = x.rsplit_once('\t').unwrap_or_else(|| panic!("line {n}: `{x}` vs `{y}`"));
        let (prefix_y, _) = y.rsplit_once('\t').unwrap_or_else(|| panic!("line {n}: `{x}` vs `{y}`"));
        assert_eq!(prefix_x, prefix_y, "line {n}: addresses/bytes differ");
        let hex: Vec<u8> = prefix_x
            .split('\t')
            .nth(1)
            .unwrap_or_default()
            .split(' ')
            .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
            .collect();
        let slots = insns_from_bytes(&hex).expect("whole slots");
        let (insn, _) = decode(&slots, 0).expect("our bytes decode");
        assert!(
            !llvm14_prints(&insn, dialect),
            "line {n}: LLVM 14 prints {insn:?}, but\n  egret: `{x}`\n  llvm:  `{y}`"
        );
    }
    matched
}

fn expected_listing(path: &std::path::Path, programs: &[Program], dialect: Dialect, relocs: bool) -> String {
    let mut s = format!("\n{}:\tfile format elf64-bpf\n", path.display());
    for p in programs {
        s.push_str(&objdump_listing(p, PROGRAM_SECTION, dialect, relocs));
    }
    s
}

#[test]
fn disassembly_matches_llvm_objdump_line_by_line() {
    let (bytes, programs) = sample_object(WriteOptions::default());
    let file = TempFile::new("objdump", &bytes);
    let mut total = 0;
    for (dialect, args) in [
        (Dialect::Llvm14, vec!["-d"]),
        (Dialect::Llvm14Alu32, vec!["-d", "--mattr=+alu32"]),
        (Dialect::Llvm14, vec!["-dr"]),
        (Dialect::Llvm14Alu32, vec!["-dr", "--mattr=+alu32"]),
    ] {
        let relocs = args[0] == "-dr";
        let theirs = objdump(&args, &file.0);
        let ours = expected_listing(&file.0, &programs, dialect, relocs);
        let matched = compare(&ours, &theirs, dialect);
        assert!(matched > 150, "only {matched} lines compared for {args:?}");
        total += matched;
    }
    println!("{total} instruction lines identical to llvm-objdump");
}

#[test]
fn without_label_symbols_objdump_annotates_function_offsets() {
    let (bytes, mut programs) = sample_object(WriteOptions { label_symbols: false });
    for p in &mut programs {
        p.labels.clear();
    }
    let file = TempFile::new("nolabels", &bytes);
    let theirs = objdump(&["-d", "--mattr=+alu32"], &file.0);
    assert!(theirs.contains("<ipv4_filter+0x"), "{theirs}");
    let ours = expected_listing(&file.0, &programs, Dialect::Llvm14Alu32, false);
    assert!(compare(&ours, &theirs, Dialect::Llvm14Alu32) > 150);
}

#[test]
fn object_layout_follows_the_facts() {
    let (bytes, programs) = sample_object(WriteOptions::default());
    let file = object::File::parse(&*bytes).expect("object parses");
    assert_eq!(file.architecture(), object::Architecture::Bpf);
    assert_eq!(file.kind(), object::ObjectKind::Relocatable);
    let maps = file.section_by_name(".maps").expect(".maps");
    assert_eq!(maps.size(), 3 * 40);
    assert_eq!(maps.align(), 8);
    for (i, name) in ["src_class", "dst_lpm", "counters"].iter().enumerate() {
        let sym = file.symbols().find(|s| s.name() == Ok(name)).expect("map symbol");
        assert_eq!(sym.address(), 40 * i as u64);
        assert_eq!(sym.size(), 40);
        assert_eq!(sym.kind(), SymbolKind::Data);
        assert!(sym.is_global());
        assert_eq!(sym.section_index(), Some(maps.index()));
    }
    for p in &programs {
        let sym = file.symbols().find(|s| s.name() == Ok(&p.name)).expect("function symbol");
        let sec = file.section_by_index(sym.section_index().expect("in a section")).expect("program section");
        assert_eq!(sec.name(), Ok(PROGRAM_SECTION), "{}: a section libbpf recognises", p.name);
        match sec.flags() {
            object::SectionFlags::Elf { sh_flags, .. } => {
                assert_eq!(sh_flags.0, 0x6, "AX flags")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sym.kind(), SymbolKind::Text);
        assert!(sym.is_global());
        assert_eq!(sym.size(), 8 * p.insns.len() as u64);
        let relocs: Vec<(u64, u32)> = sec
            .relocations()
            .map(|(off, r)| match r.flags() {
                object::RelocationFlags::Elf { r_type } => (off, r_type.0),
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<(u64, u32)> = p.map_relocs.iter().map(|r| (r.insn as u64 * 8, 1)).collect();
        assert_eq!(relocs, want, "{}", p.name);
        for (off, _) in relocs {
            assert_eq!(sec.data().expect("data")[off as usize], 0x18, "reloc on ld_imm64");
        }
    }
    let lic = file.section_by_name("license").expect("license");
    assert_eq!(lic.data().expect("data"), b"Dual MIT/GPL\0");
    let holes = file.section_by_name(HOLES_SECTION).expect("holes section");
    let text = String::from_utf8(holes.data().expect("data").to_vec()).expect("utf-8");
    assert!(text.starts_with(HOLES_HEADER));
    assert!(text.contains("\ntunnel\t"), "holes name their program: {text}");
    let btf = file.section_by_name(".BTF").expect(".BTF");
    let data = btf.data().expect("data");
    assert_eq!(&data[..4], &[0x9f, 0xeb, 1, 0]);
}

#[test]
fn egret_reads_its_objects_back() {
    let (bytes, programs) = sample_object(WriteOptions::default());
    let parsed = read_object(&bytes).expect("reads");
    assert_eq!(parsed.license, "Dual MIT/GPL");
    assert_eq!(parsed.maps, common::sample_maps());
    assert_eq!(parsed.programs.len(), programs.len());
    for (got, want) in parsed.programs.iter().zip(&programs) {
        assert_eq!(got.section, PROGRAM_SECTION);
        let mut want = want.clone();
        // label symbols at slot 0 are not written (the function symbol is there)
        want.labels = want.label_symbols().into_iter().map(|(k, v)| (k, v.to_owned())).collect();
        assert_eq!(got.program, want);
    }
    // the re-written object is byte-identical (deterministic writer)
    assert_eq!(parsed.write_unverified().expect("rewrites"), bytes);
}

#[test]
fn writer_output_is_deterministic() {
    let (a, _) = sample_object(WriteOptions::default());
    let (b, _) = sample_object(WriteOptions::default());
    assert_eq!(a, b);
}

#[test]
fn filling_holes_in_an_object_removes_the_hole_section() {
    let (bytes, _) = sample_object(WriteOptions::default());
    let values = [
        ("remote_ipv4", 0xc000_0202i64),
        ("tunnel_ifindex", 42),
        ("vni", 7),
        ("node_ip", 0x0102_0304_0506),
        ("slot", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let filled = egret_bpf::elf::fill_holes(&bytes, &values).expect("fills");
    let parsed = read_object(&filled).expect("reads");
    assert!(parsed.programs.iter().all(|p| p.program.holes.is_empty()));
    let file = object::File::parse(&*filled).expect("parses");
    assert!(file.section_by_name(HOLES_SECTION).is_none());
    let tunnel = parsed.program("tunnel").expect("tunnel");
    let text = egret_bpf::disasm::to_asm(tunnel, Dialect::Llvm14Alu32);
    assert!(text.contains("w1 = -1073741310"), "{text}");
    assert!(text.contains("w1 = 42"), "{text}");
    let missing = egret_bpf::elf::fill_holes(&bytes, &Default::default());
    assert!(missing.is_err());
}
