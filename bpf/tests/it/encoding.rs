//! Encoder/decoder round trips: exhaustive over the opcode table, seeded over
//! every opcode byte, and property-based over all fields.

use crate::common;

use std::collections::BTreeSet;

use egret_bpf::insn::{
    AluOp, AtomicOp, CallTarget, DecodeError, EndBits, EndOp, Insn, Instruction, JmpCond, Operand, Reg, SignExt, Size,
    Width, decode, decode_all, encode_all, insns_from_bytes, insns_to_bytes,
};
use proptest::prelude::*;

/// Every opcode byte the decoder accepts, from the typed instruction table.
fn opcode_table() -> BTreeSet<u8> {
    common::every_instruction().iter().map(|i| i.encode().expect("encodes")[0].code).collect()
}

#[test]
fn every_typed_instruction_roundtrips_through_bytes() {
    let all = common::every_instruction();
    let slots = encode_all(&all).expect("all encode");
    let bytes = insns_to_bytes(&slots);
    let back = decode_all(&insns_from_bytes(&bytes).expect("whole slots")).expect("decodes");
    let decoded: Vec<Instruction> = back.into_iter().map(|(_, i)| i).collect();
    assert_eq!(decoded, all);
}

#[test]
fn the_opcode_table_has_the_kernels_opcode_count() {
    // ALU/ALU64: 13 ops x 2 sources (NEG K only, END 2 in ALU + 1 in ALU64) per class
    // JMP: JA, 11 conditions x 2, CALL, EXIT; JMP32: JA, 11 x 2
    // LD: imm64, 3 ABS, 3 IND; LDX: 4 MEM + 3 MEMSX; ST: 4; STX: 4 MEM + 2 ATOMIC
    let table = opcode_table();
    let alu = 12 * 2 + 1 + 2; // 12 binary ops (add..arsh, mov) x 2 sources; neg; le/be
    let alu64 = 12 * 2 + 1 + 1; // bswap only with K
    let jmp = 1 + 22 + 2;
    let jmp32 = 1 + 22;
    let ld = 1 + 3 + 3;
    let mem = 7 + 4 + 6;
    assert_eq!(table.len(), alu + alu64 + jmp + jmp32 + ld + mem, "{table:x?}");
}

/// Deterministic xorshift generator (seed printed on failure).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn every_opcode_byte_decodes_strictly_and_reencodes_identically() {
    let table = opcode_table();
    let seed = 0x5eed_1234_abcd_0001u64;
    let mut rng = Rng(seed);
    let mut accepted = BTreeSet::new();
    for code in 0..=255u8 {
        for round in 0..3000 {
            let r = rng.next();
            // alternate fully random fields with fields drawn from small sets of
            // plausible values (zero included), so that valid encodings of every
            // opcode are hit
            let slot = if round % 2 == 0 {
                Insn {
                    code,
                    dst: [0, 1, 10][(r & 0xff) as usize % 3],
                    src: [0, 1, 2][((r >> 8) & 0xff) as usize % 3],
                    off: [0, 1, 8, 16, 32, -8][((r >> 16) & 0xff) as usize % 6],
                    imm: [0, 1, 16, 32, 64, 0x41, 0xe1, 0xf1, -1][((r >> 24) & 0xff) as usize % 9],
                }
            } else {
                Insn {
                    code,
                    dst: (r & 0xf) as u8,
                    src: ((r >> 4) & 0xf) as u8,
                    off: (r >> 8) as i16,
                    imm: (r >> 24) as i32,
                }
            };
            let tail = Insn { imm: (r >> 32) as i32, ..Insn::default() };
            let slots = [slot, tail];
            match decode(&slots, 0) {
                Ok((insn, n)) => {
                    accepted.insert(code);
                    let enc = insn.encode().unwrap_or_else(|e| panic!("seed {seed:#x}: {e}"));
                    assert_eq!(enc.as_slice(), &slots[..n], "seed {seed:#x}: {insn:?}");
                }
                Err(DecodeError::UnknownOpcode { .. }) => {
                    assert!(!table.contains(&code), "seed {seed:#x}: {code:#04x} is in the table");
                }
                Err(_) => {}
            }
        }
    }
    assert_eq!(accepted, table, "seed {seed:#x}");
}

fn arb_reg() -> impl Strategy<Value = Reg> {
    (0u8..=10).prop_map(|n| Reg::from_u8(n).expect("0..=10"))
}

fn arb_width() -> impl Strategy<Value = Width> {
    prop_oneof![Just(Width::W32), Just(Width::W64)]
}

fn arb_size() -> impl Strategy<Value = Size> {
    prop::sample::select(Size::ALL.to_vec())
}

fn arb_operand() -> impl Strategy<Value = Operand> {
    prop_oneof![arb_reg().prop_map(Operand::Reg), any::<i32>().prop_map(Operand::Imm)]
}

fn arb_instruction() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        (arb_width(), prop::sample::select(AluOp::ALL.to_vec()), arb_reg(), arb_operand())
            .prop_map(|(width, op, dst, src)| Instruction::Alu { width, op, dst, src }),
        (arb_width(), prop::sample::select(vec![SignExt::S8, SignExt::S16, SignExt::S32]), arb_reg(), arb_reg())
            .prop_filter("32-bit movsx from 32", |(w, e, _, _)| !(*w == Width::W32 && *e == SignExt::S32))
            .prop_map(|(width, ext, dst, src)| Instruction::MovSx { width, ext, dst, src }),
        (arb_width(), arb_reg()).prop_map(|(width, dst)| Instruction::Neg { width, dst }),
        (
            prop::sample::select(vec![EndOp::ToLe, EndOp::ToBe, EndOp::Swap]),
            prop::sample::select(vec![EndBits::B16, EndBits::B32, EndBits::B64]),
            arb_reg()
        )
            .prop_map(|(op, bits, dst)| Instruction::End { op, bits, dst }),
        any::<i16>().prop_map(|off| Instruction::Ja { off }),
        any::<i32>().prop_map(|imm| Instruction::JaLong { imm }),
        (arb_width(), prop::sample::select(JmpCond::ALL.to_vec()), arb_reg(), arb_operand(), any::<i16>())
            .prop_map(|(width, cond, dst, src, off)| Instruction::Jmp { width, cond, dst, src, off }),
        (0..3u8, any::<i32>()).prop_map(|(k, v)| Instruction::Call(match k {
            0 => CallTarget::Helper(v),
            1 => CallTarget::Local(v),
            _ => CallTarget::Kfunc(v),
        })),
        Just(Instruction::Exit),
        (arb_reg(), 0..=6u8, any::<i64>()).prop_map(|(dst, pseudo, imm)| Instruction::LdImm64 { dst, pseudo, imm }),
        (prop::sample::select(vec![Size::B, Size::H, Size::W]), any::<i32>())
            .prop_map(|(size, imm)| Instruction::LdAbs { size, imm }),
        (prop::sample::select(vec![Size::B, Size::H, Size::W]), arb_reg(), any::<i32>())
            .prop_map(|(size, src, imm)| Instruction::LdInd { size, src, imm }),
        (arb_size(), arb_reg(), arb_reg(), any::<i16>()).prop_map(|(size, dst, src, off)| Instruction::Load {
            size,
            dst,
            src,
            off
        }),
        (prop::sample::select(vec![Size::B, Size::H, Size::W]), arb_reg(), arb_reg(), any::<i16>())
            .prop_map(|(size, dst, src, off)| Instruction::LoadSx { size, dst, src, off }),
        (arb_size(), arb_reg(), any::<i16>(), any::<i32>()).prop_map(|(size, dst, off, imm)| Instruction::Store {
            size,
            dst,
            off,
            imm
        }),
        (arb_size(), arb_reg(), arb_reg(), any::<i16>()).prop_map(|(size, dst, src, off)| Instruction::StoreReg {
            size,
            dst,
            src,
            off
        }),
        (
            prop::sample::select(vec![Size::W, Size::DW]),
            prop::sample::select(AtomicOp::ALL.to_vec()),
            arb_reg(),
            arb_reg(),
            any::<i16>()
        )
            .prop_map(|(size, op, dst, src, off)| Instruction::Atomic { size, op, dst, src, off }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn typed_instructions_roundtrip(insn in arb_instruction()) {
        let slots = insn.encode().expect("valid typed instructions encode");
        prop_assert_eq!(slots.len(), insn.slots());
        let bytes = insns_to_bytes(&slots);
        let back = insns_from_bytes(&bytes).expect("whole slots");
        prop_assert_eq!(decode(&back, 0), Ok((insn, slots.len())));
    }

    #[test]
    fn arbitrary_bytes_decode_canonically(raw in any::<[u8; 16]>()) {
        let slots = insns_from_bytes(&raw).expect("16 bytes");
        if let Ok((insn, n)) = decode(&slots, 0) {
            let enc = insn.encode().expect("decoded instructions encode");
            prop_assert_eq!(insns_to_bytes(&enc), raw[..n * 8].to_vec());
        }
    }
}

#[test]
fn invalid_registers_and_truncation_are_typed_errors() {
    let bad_reg = Insn { code: 0xbf, dst: 11, src: 1, off: 0, imm: 0 };
    assert_eq!(decode(&[bad_reg], 0), Err(DecodeError::InvalidRegister { index: 0, reg: 11 }));
    assert_eq!(insns_from_bytes(&[0; 9]), Err(DecodeError::Length { len: 9 }));
    let ld = Instruction::ld_imm64(Reg::R1, 5).encode().expect("encodes");
    let mut bad_tail = ld.clone();
    bad_tail[1].code = 0x07;
    assert_eq!(decode(&bad_tail, 0), Err(DecodeError::BadLdImm64Tail { index: 0 }));
    let callx = Insn { code: 0x8d, ..Insn::default() };
    assert_eq!(decode(&[callx], 0), Err(DecodeError::UnknownOpcode { index: 0, code: 0x8d }));
}

#[test]
fn inconsistent_typed_instructions_do_not_encode() {
    let bad = [
        Instruction::MovSx { width: Width::W32, ext: SignExt::S32, dst: Reg::R1, src: Reg::R2 },
        Instruction::Atomic { size: Size::B, op: AtomicOp::Add, dst: Reg::R1, src: Reg::R2, off: 0 },
        Instruction::LdAbs { size: Size::DW, imm: 0 },
        Instruction::LdImm64 { dst: Reg::R1, pseudo: 7, imm: 0 },
    ];
    for i in bad {
        assert!(i.encode().is_err(), "{i:?}");
    }
}
