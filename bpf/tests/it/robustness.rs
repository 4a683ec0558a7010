//! Bad input never panics: corrupted objects, random assembly text, random
//! instruction slots through the verifier and the interpreter. Seeds are fixed
//! and printed in every failure message.

use crate::common;

use egret_bpf::elf::{ObjectWriter, read_object};
use egret_bpf::insn::{Insn, insns_from_bytes};
use egret_bpf::interp::{MapStore, RunInput, run};
use egret_bpf::verifier::verify;
use egret_bpf::{Instruction, Program, Reg};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn sample_object() -> Vec<u8> {
    let mut w = ObjectWriter::new(common::sample_maps(), "GPL").expect("writer");
    for (name, src) in [("classify", common::CLASSIFY), ("tunnel", common::TUNNEL)] {
        w.add_unverified_program(common::assemble(name, src).program).expect("adds");
    }
    w.write().expect("writes")
}

#[test]
fn corrupted_objects_are_errors_not_panics() {
    let seed = 0xc0ff_ee00_1234_5678;
    let mut rng = Rng(seed);
    let good = sample_object();
    assert!(read_object(&good).is_ok());
    let mut errors = 0;
    for round in 0..3000 {
        let mut bad = good.clone();
        let flips = 1 + rng.next() % 8;
        for _ in 0..flips {
            let at = (rng.next() % bad.len() as u64) as usize;
            bad[at] = rng.next() as u8;
        }
        if round % 10 == 0 {
            bad.truncate((rng.next() % good.len() as u64) as usize);
        }
        let parsed = std::panic::catch_unwind(|| read_object(&bad).is_err());
        match parsed {
            Ok(true) => errors += 1,
            Ok(false) => {}
            Err(_) => panic!("seed {seed:#x}: read_object panicked in round {round}"),
        }
    }
    assert!(errors > 100, "seed {seed:#x}: corruption should usually be detected ({errors})");
}

#[test]
fn random_text_is_an_error_not_a_panic() {
    let seed = 0x7e57_0000_0000_0001;
    let mut rng = Rng(seed);
    let words = [
        "r0",
        "r1",
        "w2",
        "r10",
        "r11",
        "=",
        "+=",
        "s>>=",
        "*",
        "(",
        ")",
        "u32",
        "s8",
        "skb",
        "[",
        "]",
        "goto",
        "if",
        ">",
        "s<=",
        "&",
        "+",
        "-",
        "1",
        "0x7fffffff",
        "99999999999999999999",
        "%hole",
        "map",
        "ll",
        "lock",
        "call",
        "exit",
        "label:",
        "label",
        ",",
        ".equ",
        ".map",
        "hash",
        "key_size=4",
        "be16",
        "bswap64",
        "atomic_fetch_add",
        "cmpxchg_64",
        "xchg32_32",
        "ld_pseudo",
        ".insn",
        "<",
        "//",
        ";",
        "#",
        "\t",
        "gotol",
    ];
    for round in 0..5000 {
        let mut src = String::new();
        for _ in 0..(1 + rng.next() % 6) {
            for _ in 0..(1 + rng.next() % 9) {
                src.push_str(words[(rng.next() % words.len() as u64) as usize]);
                src.push(' ');
            }
            src.push('\n');
        }
        let r = std::panic::catch_unwind(|| egret_bpf::asm::assemble("p", &src).map(|_| ()));
        match r {
            Ok(Ok(())) | Ok(Err(_)) => {}
            Err(_) => panic!("seed {seed:#x}: assemble panicked in round {round} on:\n{src}"),
        }
    }
}

#[test]
fn random_slots_through_verifier_and_interpreter() {
    let seed = 0x0b5e_55ed_0000_0042;
    let mut rng = Rng(seed);
    let maps = common::sample_maps();
    let frame = common::udp_frame([1, 2, 3, 4], [5, 6, 7, 8], 9, 64);
    let mut accepted = 0;
    for round in 0..3000 {
        // mostly valid opcodes from the instruction table with random fields,
        // some fully random slots, and an exit at the end
        let table = common::every_instruction();
        let n = 1 + rng.next() % 24;
        let mut slots: Vec<Insn> = Vec::new();
        // initialized registers make a fair share of the programs verifiable
        for r in [Reg::R0, Reg::R2, Reg::R3, Reg::R4, Reg::R5, Reg::R7, Reg::R8, Reg::R9] {
            slots.extend(Instruction::mov64_imm(r, (rng.next() % 64) as i32).encode().expect("encodes"));
        }
        slots.extend(Instruction::mov64_reg(Reg::R6, Reg::R1).encode().expect("encodes"));
        for _ in 0..n {
            let r = rng.next();
            if r.is_multiple_of(10) {
                let raw = rng.next().to_le_bytes();
                slots.extend(insns_from_bytes(&raw).expect("8 bytes"));
            } else {
                let base = table[(r % table.len() as u64) as usize].encode().expect("encodes");
                let mut s = base.clone();
                s[0].dst = [0, 2, 3, 4, 5, 7, 8, 9, 10][(rng.next() % 9) as usize];
                if rng.next().is_multiple_of(2) {
                    s[0].off = (rng.next() % 8) as i16 - 2;
                }
                slots.extend(s);
            }
        }
        slots.extend(Instruction::mov64_imm(Reg::R0, 0).encode().expect("encodes"));
        slots.extend(Instruction::exit().encode().expect("encodes"));
        let p = Program::new("p", slots);
        let verdict = std::panic::catch_unwind(|| verify(&p, &maps).is_ok())
            .unwrap_or_else(|_| panic!("seed {seed:#x}: verifier panicked in round {round}"));
        let mut store = MapStore::new(&maps);
        let mut input = RunInput::for_frame(&frame);
        input.budget = 10_000;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&p, &mut store, &input)))
            .unwrap_or_else(|_| panic!("seed {seed:#x}: interpreter panicked in round {round}"));
        if verdict {
            accepted += 1;
            // a verified program never faults in the interpreter
            if let Err(f) = outcome {
                panic!("seed {seed:#x}: round {round}: verified program faulted: {f}");
            }
        }
    }
    println!("{accepted} of 3000 random programs verified and ran without a fault");
    assert!(accepted > 40, "seed {seed:#x}: only {accepted} random programs verified");
}
