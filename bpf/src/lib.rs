//! egret-bpf: the eBPF instruction-set toolkit egret's code generator, static
//! verifier and loader build on. Pure: no syscalls, no aya.
//!
//! - [`insn`]: instruction model, strict encoder/decoder.
//! - [`builder`]: [`ProgramBuilder`] with labels, jump fixups, map references and holes.
//! - [`program`]: [`Program`] (slots + map relocations + holes + labels).
//! - [`maps`]: [`MapDef`] and the kernel's constraints per map kind.
//! - [`helpers`]: the helper table (ids, argument and return types).
//! - [`disasm`]: LLVM 14 `llvm-objdump -d` syntax, and re-assemblable text.
//! - [`asm`]: the assembler for that syntax (labels, constants, holes, map references).
//! - [`btf`]: the minimal BTF that describes BTF-defined maps.
//! - [`elf`]: relocatable EM_BPF object writer and reader.
//! - [`interp`]: an interpreter for tc classifier programs with maps and helpers.
//! - [`artifact`]: a node's artifact on disk (object + manifest with map images).
//! - [`verifier`]: the static verifier run before any artifact is written.
//! - [`templates`]: the gateway datapath templates (`bpf-templates/`) and their map layouts.
//! - [`layout`]: every map key/value layout and kernel constant, defined once.
//! - [`choices`]: the layout of the classifier's failover choices (`egret_choices`).

pub mod artifact;
pub mod asm;
pub mod btf;
pub mod builder;
pub mod choices;
pub mod disasm;
pub mod elf;
pub mod helpers;
pub mod insn;
pub mod interp;
pub mod layout;
pub mod maps;
pub mod program;
pub mod skb;
pub mod templates;
pub mod verifier;

pub use builder::{BuildError, BuildErrors, Label, ProgramBuilder};
pub use insn::{
    AluOp, AtomicOp, CallTarget, EndBits, EndOp, Insn, Instruction, JmpCond, Operand, Reg, SignExt, Size, Width,
};
pub use maps::{MapDef, MapKind};
pub use program::{Hole, HoleKind, MapReloc, Program};
