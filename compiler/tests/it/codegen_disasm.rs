//! Every generated program survives disassembly → assembly unchanged, and
//! egret's disassembly of the written objects is, line for line, what
//! `llvm-objdump -d --mattr=+alu32` (and `-dr`) prints.

use crate::codegen_common as common;

use egret_bpf::asm::assemble;
use egret_bpf::disasm::{Dialect, objdump_listing};
use egret_bpf::elf::PROGRAM_SECTION;
use egret_compiler::codegen::{self, Generated, Layout, Options};
use std::path::PathBuf;
use std::process::Command;

const OBJDUMP: &str = "/usr/bin/llvm-objdump";

fn generated_programs(random: usize) -> Vec<(String, Generated, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |name: String, w: &egret_compiler::resolve::World| {
        for (node, plan) in common::plans(w) {
            for layout in [Layout::Inline, Layout::Maps] {
                let g = codegen::generate(&plan, &Options { layout: Some(layout), ..Options::default() })
                    .expect("generates");
                let object = g.artifact(&plan).expect("verifies").object;
                out.push((format!("{name} {node} {layout}"), g, object));
            }
        }
    };
    add("examples".into(), &common::example_world());
    for (name, w) in common::article_worlds() {
        add(name, &w);
    }
    for (seed, w, node) in common::random_plans(random, 1000) {
        let plan = common::plans(&w).remove(&node).expect("plan");
        for layout in [Layout::Inline, Layout::Maps] {
            let g =
                codegen::generate(&plan, &Options { layout: Some(layout), ..Options::default() }).expect("generates");
            let object = g.artifact(&plan).expect("verifies").object;
            out.push((format!("seed {seed} {node} {layout}"), g, object));
        }
    }
    out
}

#[test]
fn disassembly_reassembles_to_identical_programs() {
    let programs = generated_programs(200);
    let mut slots = 0;
    for (name, g, _) in &programs {
        let text = g.asm();
        let a = assemble(&g.program.name, &text).unwrap_or_else(|e| panic!("{name}: does not assemble: {e}\n{text}"));
        assert_eq!(a.program.insns, g.program.insns, "{name}: instructions differ");
        assert_eq!(a.program.map_relocs, g.program.map_relocs, "{name}: map references differ");
        assert_eq!(a.program.holes, g.program.holes, "{name}: holes differ");
        assert_eq!(a.program.labels, g.program.labels, "{name}: labels differ");
        assert_eq!(a.maps, g.maps, "{name}: map definitions differ");
        // and the bytes of the written object are those instructions
        let parsed = egret_bpf::elf::read_object(&programs_object(name, &programs)).expect("reads");
        assert_eq!(parsed.program(codegen::PROGRAM).map(|p| &p.insns), Some(&g.program.insns), "{name}");
        slots += g.program.insns.len();
    }
    println!("{} programs, {slots} slots round-tripped", programs.len());
    assert!(programs.len() >= 400 + 12);
}

fn programs_object(name: &str, all: &[(String, Generated, Vec<u8>)]) -> Vec<u8> {
    all.iter().find(|(n, _, _)| n == name).map(|(_, _, o)| o.clone()).unwrap_or_default()
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn disassembly_matches_llvm_objdump() {
    let programs = generated_programs(20);
    let mut lines = 0;
    for (i, (name, g, object)) in programs.iter().enumerate() {
        let file = TempFile(std::env::temp_dir().join(format!("egret-codegen-objdump-{}-{i}.o", std::process::id())));
        std::fs::write(&file.0, object).expect("write object");
        for (args, relocs) in [(["-d", "--mattr=+alu32"], false), (["-dr", "--mattr=+alu32"], true)] {
            let out = Command::new(OBJDUMP).args(args).arg(&file.0).output().expect("llvm-objdump runs");
            assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
            let theirs = String::from_utf8(out.stdout).expect("utf-8");
            let mut ours = format!("\n{}:\tfile format elf64-bpf\n", file.0.display());
            ours.push_str(&objdump_listing(&g.program, PROGRAM_SECTION, Dialect::Llvm14Alu32, relocs));
            let a: Vec<&str> = ours.lines().collect();
            let b: Vec<&str> = theirs.lines().collect();
            assert_eq!(a.len(), b.len(), "{name}: line counts differ\n--- egret\n{ours}\n--- llvm-objdump\n{theirs}");
            for (n, (x, y)) in a.iter().zip(&b).enumerate() {
                assert_eq!(x, y, "{name} {args:?}: line {n} differs");
            }
            assert!(!theirs.contains("<unknown>"), "{name}: LLVM cannot print an instruction");
            lines += a.len();
        }
    }
    println!("{} objects, {lines} lines identical to llvm-objdump", programs.len());
}
