//! Static verifier for tc classifier programs, run on every artifact before it
//! is written. It collects *all* violations it finds (each names the
//! instruction index and its disassembly), not only the first.
//!
//! Invariants checked:
//! 1. Every slot decodes (strict decoding, reserved fields zero); the program
//!    has at most 1,000,000 instructions (`BPF_COMPLEXITY_LIMIT_INSNS`).
//! 2. Jump targets are inside the program and never the second slot of an
//!    `ld_imm64`.
//! 3. The control-flow graph is a DAG (no back-edges), every instruction is
//!    reachable from slot 0, and no path falls off the end: every path ends in
//!    `exit`.
//! 4. `call` targets are known helpers (the [`crate::helpers`] table);
//!    BPF-to-BPF calls and kfuncs are refused.
//! 5. Every map relocation is on an `ld_imm64` and names a map of the object;
//!    no `ld_imm64` carries a raw map fd.
//! 6. Immediate shifts are below the operand width; no division or modulo by
//!    an immediate 0; R10 (the frame pointer) is never written.
//! 7. Along every path (abstract interpretation over the DAG, with register
//!    types `uninit`, `scalar` (with an unsigned range, exact when constant),
//!    `ctx`, `pkt(off, range)`, `pkt_end`, `fp(off)`, `map_ptr`,
//!    `map_value_or_null`, `map_value`):
//!    - registers are initialized before they are read (R1 = ctx and R10 =
//!      frame pointer at entry), and R0 holds a scalar at `exit`;
//!    - stack accesses are within `[-512, 0)`, aligned to their size, and read
//!      only initialized bytes; pointers are spilled only as aligned 8-byte
//!      stores and read back whole;
//!    - every packet access lies inside the range established by a comparison
//!      of a packet pointer with `data_end` on that path, as the kernel tracks
//!      it (`find_good_pkt_pointers`); helpers that move packet data
//!      invalidate every packet pointer;
//!    - context accesses follow `__sk_buff`'s rules for tc ([`crate::skb`]);
//!    - map values are accessed only after a NULL check of the lookup result,
//!      and within `value_size`;
//!    - pointer arithmetic is limited to adding/subtracting scalars to packet,
//!      stack and map-value pointers (variable parts bounded), 32-bit ALU and
//!      comparisons are never applied to pointers, pointers are never stored
//!      into packets, map values or the context;
//!    - helper arguments R1..R5 have the types the helper's prototype demands
//!      (memory arguments sized by the following size argument), and R1..R5
//!      are unreadable after every call;
//!    - legacy packet loads (`LD_ABS`/`LD_IND`) need R6 = ctx.
//! 8. Path exploration stops at 1,000,000 processed instructions (the kernel's
//!    complexity limit), which is reported as a violation. States are pruned
//!    at jump targets when an already explored state subsumes them.
//!
//! Contract: [`verify`] returns a [`Verified`] only when no violation was
//! found; [`Verified`] cannot be constructed any other way, and the ELF writer
//! accepts only it.

use std::collections::{BTreeMap, BTreeSet};

use crate::disasm::{Dialect, slot_text};
use crate::insn::{Instruction, Reg};
use crate::maps::MapDef;
use crate::program::{HoleKind, Program};

mod branch;
mod calls;
mod memory;
mod prune;
mod step;
mod structural;
mod values;

use prune::covers;
use values::{State, Ty};

/// Largest program, in slots.
pub const MAX_INSNS: usize = 1_000_000;
/// Largest number of instructions processed over all paths.
pub const COMPLEXITY_LIMIT: u64 = 1_000_000;
/// Largest packet offset the kernel tracks (`MAX_PACKET_OFF`).
pub const MAX_PACKET_OFF: u64 = 0xffff;
/// Stack size in bytes.
pub const STACK_SIZE: i32 = 512;
const MAX_STATES_PER_INSN: usize = 16;
const MAX_VAR_SIZE: u64 = 1 << 29;

/// One violation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
#[error("insn {insn} `{disasm}`: {kind}")]
pub struct Violation {
    /// Slot index.
    pub insn: usize,
    /// The instruction's text (re-assemblable form).
    pub disasm: String,
    /// What is wrong.
    pub kind: ViolationKind,
}

/// What is wrong at an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum ViolationKind {
    /// The slot does not decode.
    #[error("cannot decode: {reason}")]
    Decode {
        /// Decoder message.
        reason: String,
    },
    /// More slots than the kernel loads.
    #[error("program has {count} instructions, more than {limit}")]
    TooManyInsns {
        /// Slots.
        count: usize,
        /// Limit.
        limit: usize,
    },
    /// A jump outside the program.
    #[error("jump target {target} is outside the program")]
    JumpOutOfRange {
        /// Target slot.
        target: i64,
    },
    /// A jump to the second slot of an `ld_imm64`.
    #[error("jump target {target} is the middle of an ld_imm64")]
    JumpIntoLdImm64 {
        /// Target slot.
        target: usize,
    },
    /// A cycle in the control-flow graph.
    #[error("back-edge to insn {target}: programs must be loop-free")]
    BackEdge {
        /// Target slot.
        target: usize,
    },
    /// Dead code (the kernel refuses it).
    #[error("unreachable instruction")]
    Unreachable,
    /// Execution can run past the last instruction.
    #[error("execution falls off the end of the program (missing exit)")]
    FallsOffEnd,
    /// An unknown helper id.
    #[error("unknown helper id {id}")]
    UnknownHelper {
        /// The id.
        id: i32,
    },
    /// BPF-to-BPF calls, kfuncs.
    #[error("unsupported call: {what}")]
    UnsupportedCall {
        /// Which kind.
        what: &'static str,
    },
    /// A map reference to a map the object does not define.
    #[error("map `{map}` is not defined")]
    UnresolvedMap {
        /// Map name.
        map: String,
    },
    /// An `ld_imm64` with a pseudo source but no relocation.
    #[error("ld_imm64 with pseudo source {pseudo} and no map relocation")]
    UnsupportedPseudo {
        /// The pseudo source.
        pseudo: u8,
    },
    /// A shift by an immediate at least as wide as the operand.
    #[error("invalid shift by {amount}")]
    InvalidShift {
        /// The shift amount.
        amount: i32,
    },
    /// Division or modulo by an immediate 0.
    #[error("division by zero immediate")]
    DivByZero,
    /// A write to R10.
    #[error("frame pointer r10 is read only")]
    FramePointerWrite,
    /// Exploration exceeded the kernel's limit.
    #[error("program too complex: more than {limit} instructions processed")]
    ComplexityLimit {
        /// The limit.
        limit: u64,
    },
    /// A read of an uninitialized register.
    #[error("{reg} is read before it is initialized")]
    UninitRegister {
        /// The register.
        reg: Reg,
    },
    /// `exit` without a scalar in R0.
    #[error("r0 must hold a scalar at exit, found {found}")]
    BadReturn {
        /// R0's type.
        found: String,
    },
    /// A memory access through something that is not a valid pointer.
    #[error("invalid memory access through {reg} ({found})")]
    InvalidMemAccess {
        /// Base register.
        reg: Reg,
        /// Its type.
        found: String,
    },
    /// A dereference of a possibly-NULL map value.
    #[error("{reg} may be NULL (map lookup result): compare it with 0 before use")]
    NullableDeref {
        /// The register.
        reg: Reg,
    },
    /// Stack access outside `[-512, 0)`.
    #[error("stack access at fp{off:+} of {size} bytes is outside [-512, 0)")]
    StackOutOfBounds {
        /// Offset from the frame pointer.
        off: i64,
        /// Size.
        size: u64,
    },
    /// Misaligned stack access.
    #[error("misaligned stack access at fp{off:+} of {size} bytes")]
    StackMisaligned {
        /// Offset.
        off: i64,
        /// Size.
        size: u64,
    },
    /// Read of uninitialized stack bytes.
    #[error("read of uninitialized stack at fp{off:+} ({size} bytes)")]
    StackUninitRead {
        /// Offset.
        off: i64,
        /// Size.
        size: u64,
    },
    /// A pointer spill that is not an aligned 8-byte store, or a partial read of one.
    #[error("{detail}")]
    BadSpill {
        /// Explanation.
        detail: String,
    },
    /// A packet access not dominated by a sufficient bounds check.
    #[error(
        "packet access [{off}, {end}) is not covered by a bounds check on this path (verified range: {range} bytes)"
    )]
    PacketOutOfRange {
        /// Start offset (from the checked base).
        off: i64,
        /// End offset.
        end: i64,
        /// Verified range.
        range: u32,
    },
    /// Use of a packet pointer after a helper moved the packet.
    #[error("packet pointer in {reg} was invalidated by the helper call at insn {call}")]
    PacketPointerInvalidated {
        /// The register.
        reg: Reg,
        /// The call.
        call: usize,
    },
    /// A refused context access.
    #[error("invalid __sk_buff access at offset {off} size {size} ({reason})")]
    CtxAccess {
        /// Offset.
        off: i64,
        /// Size.
        size: u64,
        /// Why.
        reason: &'static str,
    },
    /// A map value access outside the value.
    #[error("map value access [{off}, {end}) outside value_size {value_size} of `{map}`")]
    MapValueOutOfBounds {
        /// Map name.
        map: String,
        /// Start.
        off: i64,
        /// End.
        end: i64,
        /// Value size.
        value_size: u32,
    },
    /// Pointer arithmetic the kernel refuses.
    #[error("pointer arithmetic refused: {detail}")]
    PointerArithmetic {
        /// Explanation.
        detail: String,
    },
    /// A pointer comparison the kernel refuses.
    #[error("pointer comparison refused: {detail}")]
    PointerComparison {
        /// Explanation.
        detail: String,
    },
    /// A pointer stored where it would leak.
    #[error("{reg} holds a pointer ({found}) and would leak into {target}")]
    PointerLeak {
        /// Source register.
        reg: Reg,
        /// Its type.
        found: String,
        /// Where.
        target: &'static str,
    },
    /// A helper argument of the wrong type.
    #[error("helper `{helper}` argument {reg}: expected {expected}, found {found}")]
    HelperArg {
        /// Helper name.
        helper: &'static str,
        /// Argument register.
        reg: Reg,
        /// Expected type.
        expected: String,
        /// Found type (or the problem).
        found: String,
    },
    /// `LD_ABS`/`LD_IND` without the context in R6.
    #[error("legacy packet load needs r6 = ctx, found {found}")]
    LdAbsWithoutCtx {
        /// R6's type.
        found: String,
    },
    /// An atomic operation on memory that does not allow it.
    #[error("atomic operation on {found} is not allowed (stack or map value only)")]
    BadAtomic {
        /// The base type.
        found: String,
    },
}

/// All violations of one verification, sorted by instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct VerifyErrors {
    /// The violations.
    pub violations: Vec<Violation>,
}

/// Counters of one successful verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifyStats {
    /// Instructions processed over all paths.
    pub processed_insns: u64,
    /// States pruned because an explored state subsumed them.
    pub pruned_states: u64,
    /// Paths that reached `exit`.
    pub exits: u64,
}

/// Proof that a program passed [`verify`] against the maps it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    program: Program,
    maps: Vec<MapDef>,
    stats: VerifyStats,
}

impl Verified {
    /// The program.
    #[must_use]
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The definitions of the maps the program references, as verified.
    #[must_use]
    pub fn maps(&self) -> &[MapDef] {
        &self.maps
    }

    /// Exploration counters.
    #[must_use]
    pub fn stats(&self) -> VerifyStats {
        self.stats
    }

    /// Gives the program back.
    #[must_use]
    pub fn into_program(self) -> Program {
        self.program
    }
}

enum Step {
    Next(usize),
    Jump(usize),
    /// The taken state (if feasible) and whether the fall-through (the
    /// current state, refined in place) is feasible.
    Branch(Option<Box<State>>, bool),
    Exit,
}

type VResult<T> = Result<T, ViolationKind>;

struct Checker<'a> {
    program: &'a Program,
    maps: &'a [MapDef],
    decoded: Vec<Option<(Instruction, usize)>>,
    reloc_map: BTreeMap<usize, Option<usize>>,
    holes: BTreeMap<usize, HoleKind>,
    violations: BTreeSet<Violation>,
    prune_points: BTreeSet<usize>,
    explored: BTreeMap<usize, Vec<State>>,
    stats: VerifyStats,
}

/// Verifies `program` against the map definitions `maps`.
///
/// # Errors
/// Every violation found (see the module documentation).
pub fn verify(program: &Program, maps: &[MapDef]) -> Result<Verified, VerifyErrors> {
    let mut c = Checker {
        program,
        maps,
        decoded: Vec::new(),
        reloc_map: BTreeMap::new(),
        holes: program.holes.iter().map(|h| (h.insn, h.kind)).collect(),
        violations: BTreeSet::new(),
        prune_points: BTreeSet::new(),
        explored: BTreeMap::new(),
        stats: VerifyStats::default(),
    };
    if c.structural() {
        c.explore();
    }
    if c.violations.is_empty() {
        let used = program.referenced_maps();
        Ok(Verified {
            program: program.clone(),
            maps: maps.iter().filter(|m| used.contains(m.name.as_str())).cloned().collect(),
            stats: c.stats,
        })
    } else {
        Err(VerifyErrors { violations: c.violations.into_iter().collect() })
    }
}

impl Checker<'_> {
    fn report(&mut self, insn: usize, kind: ViolationKind) {
        let disasm = slot_text(self.program, insn, Dialect::Llvm14).unwrap_or_else(|| {
            self.program.insns.get(insn).map_or_else(String::new, |i| {
                format!(".insn {:#04x}, {}, {}, {}, {}", i.code, i.dst, i.src, i.off, i.imm)
            })
        });
        self.violations.insert(Violation { insn, disasm, kind });
    }

    fn explore(&mut self) {
        let mut work: Vec<State> = vec![State::entry()];
        'paths: while let Some(mut st) = work.pop() {
            loop {
                let pc = st.pc;
                if self.stats.processed_insns >= COMPLEXITY_LIMIT {
                    self.report(pc, ViolationKind::ComplexityLimit { limit: COMPLEXITY_LIMIT });
                    return;
                }
                self.stats.processed_insns += 1;
                if self.prune_points.contains(&pc) {
                    let seen = self.explored.entry(pc).or_default();
                    if seen.iter().any(|old| covers(old, &st)) {
                        self.stats.pruned_states += 1;
                        continue 'paths;
                    }
                    if seen.len() < MAX_STATES_PER_INSN {
                        seen.push(st.clone());
                    }
                }
                let Some((insn, _)) = self.decoded.get(pc).copied().flatten() else {
                    continue 'paths;
                };
                match self.step(&mut st, pc, &insn) {
                    Ok(Step::Next(len)) => st.pc = pc + len,
                    Ok(Step::Jump(t)) => st.pc = t,
                    Ok(Step::Branch(taken, fall)) => {
                        if let Some(t) = taken {
                            work.push(*t);
                        }
                        if fall {
                            st.pc = pc + 1;
                        } else {
                            continue 'paths;
                        }
                    }
                    Ok(Step::Exit) => {
                        self.stats.exits += 1;
                        continue 'paths;
                    }
                    Err(kind) => {
                        self.report(pc, kind);
                        continue 'paths;
                    }
                }
            }
        }
    }

    fn read(&self, st: &State, r: Reg) -> VResult<Ty> {
        match st.regs[r.index()] {
            Ty::Uninit => Err(ViolationKind::UninitRegister { reg: r }),
            t => Ok(t),
        }
    }

    fn describe(&self, t: Ty) -> String {
        t.describe(self.maps)
    }
}
