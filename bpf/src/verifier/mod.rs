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
use std::fmt;

use crate::disasm::{Dialect, alu_op_text, slot_text};
use crate::helpers::{self, ArgType, RetType};
use crate::insn::{
    AluOp, AtomicOp, CallTarget, EndBits, EndOp, Instruction, JmpCond, Operand, Reg, Size, Width, decode, eval_alu,
    eval_end, eval_movsx, eval_neg, imm_value, pseudo,
};
use crate::maps::{MapDef, MapKind};
use crate::program::{HoleKind, Program};
use crate::skb::{self, CtxRefusal, FieldKind};

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

// ----- abstract values --------------------------------------------------------------

/// An unsigned range of a scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Range {
    umin: u64,
    umax: u64,
}

impl Range {
    const UNKNOWN: Range = Range { umin: 0, umax: u64::MAX };
    const U32: Range = Range { umin: 0, umax: u32::MAX as u64 };

    const fn konst(v: u64) -> Range {
        Range { umin: v, umax: v }
    }

    fn bits(n: usize) -> Range {
        if n >= 64 { Range::UNKNOWN } else { Range { umin: 0, umax: (1u64 << n) - 1 } }
    }

    fn as_const(self) -> Option<u64> {
        (self.umin == self.umax).then_some(self.umin)
    }

    fn covers(self, other: Range) -> bool {
        self.umin <= other.umin && other.umax <= self.umax
    }

    fn trunc32(self) -> Range {
        if self.umax <= u64::from(u32::MAX) { self } else { Range::U32 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Ty {
    Uninit,
    Scalar(Range),
    Ctx,
    Pkt { id: u32, off: i32, range: u32, vmax: u32 },
    PktEnd,
    InvalidPkt { call: usize },
    Stack { off: i32 },
    MapPtr { map: usize },
    MapValueOrNull { map: usize, id: u32 },
    MapValue { map: usize, off: i32, vmax: u32 },
}

impl Ty {
    fn is_pointer(self) -> bool {
        !matches!(self, Ty::Uninit | Ty::Scalar(_))
    }

    fn describe(self, maps: &[MapDef]) -> String {
        let map_name = |m: usize| maps.get(m).map_or("?", |d| d.name.as_str()).to_owned();
        match self {
            Ty::Uninit => "uninit".into(),
            Ty::Scalar(r) => match r.as_const() {
                Some(v) => format!("scalar {v}"),
                None if r == Range::UNKNOWN => "scalar".into(),
                None => format!("scalar [{}, {}]", r.umin, r.umax),
            },
            Ty::Ctx => "ctx".into(),
            Ty::Pkt { off, range, .. } => format!("pkt(off={off}, range={range})"),
            Ty::PktEnd => "pkt_end".into(),
            Ty::InvalidPkt { .. } => "invalidated pkt".into(),
            Ty::Stack { off } => format!("fp{off:+}"),
            Ty::MapPtr { map } => format!("map_ptr({})", map_name(map)),
            Ty::MapValueOrNull { map, .. } => format!("map_value_or_null({})", map_name(map)),
            Ty::MapValue { map, off, .. } => format!("map_value({}, off={off})", map_name(map)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Byte {
    Uninit,
    Misc,
    Spill,
}

#[derive(Clone, Debug)]
struct State {
    pc: usize,
    regs: [Ty; 11],
    bytes: Vec<Byte>,
    spills: Vec<Option<Ty>>,
    next_id: u32,
}

impl State {
    fn entry() -> State {
        let mut regs = [Ty::Uninit; 11];
        regs[1] = Ty::Ctx;
        regs[10] = Ty::Stack { off: 0 };
        State {
            pc: 0,
            regs,
            bytes: vec![Byte::Uninit; STACK_SIZE as usize],
            spills: vec![None; STACK_SIZE as usize / 8],
            next_id: 1,
        }
    }

    fn fresh_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Applies `f` to every register and spilled value.
    fn map_values(&mut self, mut f: impl FnMut(Ty) -> Ty) {
        for r in &mut self.regs {
            *r = f(*r);
        }
        for s in self.spills.iter_mut().flatten() {
            *s = f(*s);
        }
    }
}

/// `old` subsumes `new`: everything safe from `old` is safe from `new`.
fn covers(old: &State, new: &State) -> bool {
    // a consistent mapping of old ids to new ids (few entries: a linear list)
    let mut ids: Vec<(u32, u32)> = Vec::new();
    let mut id_ok = |a: u32, b: u32| match ids.iter().find(|(x, _)| *x == a) {
        Some((_, y)) => *y == b,
        None => {
            ids.push((a, b));
            true
        }
    };
    let mut ty_covers = |o: Ty, n: Ty| -> bool {
        match (o, n) {
            (Ty::Uninit, _) => true,
            (Ty::Scalar(a), Ty::Scalar(b)) => a.covers(b),
            (Ty::Pkt { id: i1, off: o1, range: r1, vmax: v1 }, Ty::Pkt { id: i2, off: o2, range: r2, vmax: v2 }) => {
                o1 == o2 && r1 <= r2 && v1 >= v2 && id_ok(i1, i2)
            }
            (Ty::MapValueOrNull { map: m1, id: i1 }, Ty::MapValueOrNull { map: m2, id: i2 }) => {
                m1 == m2 && id_ok(i1 + 0x8000_0000, i2)
            }
            (Ty::MapValue { map: m1, off: o1, vmax: v1 }, Ty::MapValue { map: m2, off: o2, vmax: v2 }) => {
                m1 == m2 && o1 == o2 && v1 >= v2
            }
            (a, b) => a == b,
        }
    };
    for (o, n) in old.regs.iter().zip(&new.regs) {
        if !ty_covers(*o, *n) {
            return false;
        }
    }
    for (o, n) in old.bytes.iter().zip(&new.bytes) {
        match (o, n) {
            (Byte::Uninit, _) | (Byte::Misc, Byte::Misc) => {}
            (Byte::Spill, Byte::Spill) => {}
            (Byte::Misc, Byte::Spill) => {}
            _ => return false,
        }
    }
    for (i, (o, n)) in old.spills.iter().zip(&new.spills).enumerate() {
        if let Some(o) = o {
            let old_bytes_spill = old.bytes[i * 8] == Byte::Spill;
            if !old_bytes_spill {
                continue;
            }
            match n {
                Some(n) if ty_covers(*o, *n) => {}
                _ => return false,
            }
        } else if let Some(n) = n {
            // old had misc bytes here: new must be a scalar spill
            if n.is_pointer() && old.bytes[i * 8] != Byte::Uninit {
                return false;
            }
        }
    }
    true
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

    /// Invariants 1–6. Returns whether the CFG is sound enough to explore.
    fn structural(&mut self) -> bool {
        let n = self.program.insns.len();
        let mut explore = true;
        if n == 0 {
            self.report(0, ViolationKind::FallsOffEnd);
            return false;
        }
        if n > MAX_INSNS {
            self.report(0, ViolationKind::TooManyInsns { count: n, limit: MAX_INSNS });
            return false;
        }
        self.decoded = vec![None; n];
        let mut second_slot = vec![false; n];
        let mut pc = 0;
        while pc < n {
            match decode(&self.program.insns, pc) {
                Ok((insn, len)) => {
                    self.decoded[pc] = Some((insn, len));
                    if len == 2 && pc + 1 < n {
                        second_slot[pc + 1] = true;
                    }
                    pc += len;
                }
                Err(e) => {
                    self.report(pc, ViolationKind::Decode { reason: e.to_string() });
                    explore = false;
                    pc += 1;
                }
            }
        }
        // relocations
        for r in &self.program.map_relocs {
            let ok =
                matches!(self.decoded.get(r.insn), Some(Some((Instruction::LdImm64 { pseudo: 0 | 1, imm: 0, .. }, _))));
            if !ok {
                self.report(r.insn, ViolationKind::UnresolvedMap { map: r.map.clone() });
                explore = false;
                continue;
            }
            let idx = self.maps.iter().position(|m| m.name == r.map);
            if idx.is_none() {
                self.report(r.insn, ViolationKind::UnresolvedMap { map: r.map.clone() });
            }
            self.reloc_map.insert(r.insn, idx);
        }
        // per-instruction checks and successors
        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
        #[expect(
            clippy::needless_range_loop,
            reason = "the body reports through &mut self, which an iterator over self.decoded would borrow"
        )]
        for pc in 0..n {
            let Some((insn, len)) = self.decoded[pc] else {
                continue;
            };
            self.check_static(pc, &insn);
            let mut targets = Vec::new();
            if let Some(off) = insn.jump_offset() {
                let t = pc as i64 + 1 + off;
                if t < 0 || t >= n as i64 {
                    self.report(pc, ViolationKind::JumpOutOfRange { target: t });
                    explore = false;
                } else if second_slot[t as usize] {
                    self.report(pc, ViolationKind::JumpIntoLdImm64 { target: t as usize });
                    explore = false;
                } else {
                    targets.push(t as usize);
                    self.prune_points.insert(t as usize);
                }
            }
            if !insn.is_terminator() {
                if pc + len >= n {
                    self.report(pc, ViolationKind::FallsOffEnd);
                    explore = false;
                } else {
                    targets.push(pc + len);
                }
            }
            succ[pc] = targets;
        }
        if !explore {
            return false;
        }
        // DFS for back-edges and reachability
        let mut color = vec![0u8; n]; // 0 white, 1 grey, 2 black
        let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
        color[0] = 1;
        let mut back = Vec::new();
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&t) = succ[node].get(*next) {
                *next += 1;
                match color[t] {
                    0 => {
                        color[t] = 1;
                        stack.push((t, 0));
                    }
                    1 => back.push((node, t)),
                    _ => {}
                }
            } else {
                color[node] = 2;
                stack.pop();
            }
        }
        for (from, to) in &back {
            self.report(*from, ViolationKind::BackEdge { target: *to });
        }
        let mut prev_unreachable = false;
        for (pc, c) in color.iter().enumerate() {
            if self.decoded[pc].is_none() {
                continue;
            }
            let unreachable = *c == 0;
            if unreachable && !prev_unreachable {
                self.report(pc, ViolationKind::Unreachable);
            }
            prev_unreachable = unreachable;
        }
        back.is_empty()
    }

    fn check_static(&mut self, pc: usize, insn: &Instruction) {
        match *insn {
            Instruction::Alu { width, op, src: Operand::Imm(imm), .. } => {
                let bits = if width == Width::W64 { 64 } else { 32 };
                if matches!(op, AluOp::Lsh | AluOp::Rsh | AluOp::Arsh)
                    && !self.holes.contains_key(&pc)
                    && (imm < 0 || imm >= bits)
                {
                    self.report(pc, ViolationKind::InvalidShift { amount: imm });
                }
                if matches!(op, AluOp::Div | AluOp::SDiv | AluOp::Mod | AluOp::SMod)
                    && imm == 0
                    && !self.holes.contains_key(&pc)
                {
                    self.report(pc, ViolationKind::DivByZero);
                }
            }
            Instruction::Call(CallTarget::Helper(id)) if helpers::by_id(id).is_none() => {
                self.report(pc, ViolationKind::UnknownHelper { id });
            }
            Instruction::Call(CallTarget::Local(_)) => {
                self.report(pc, ViolationKind::UnsupportedCall { what: "BPF-to-BPF call" })
            }
            Instruction::Call(CallTarget::Kfunc(_)) => {
                self.report(pc, ViolationKind::UnsupportedCall { what: "kfunc" });
            }
            Instruction::LdImm64 { pseudo: p, .. } if p != pseudo::NONE && !self.reloc_map.contains_key(&pc) => {
                self.report(pc, ViolationKind::UnsupportedPseudo { pseudo: p });
            }
            _ => {}
        }
        if writes_r10(insn) {
            self.report(pc, ViolationKind::FramePointerWrite);
        }
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

    fn step(&self, st: &mut State, pc: usize, insn: &Instruction) -> VResult<Step> {
        let hole = self.holes.get(&pc).copied();
        match *insn {
            Instruction::Alu { width, op, dst, src } => {
                let s = match src {
                    Operand::Reg(r) => self.read(st, r)?,
                    Operand::Imm(_) if hole.is_some() => Ty::Scalar(match width {
                        Width::W64 => Range::UNKNOWN,
                        Width::W32 => Range::U32,
                    }),
                    Operand::Imm(i) => Ty::Scalar(Range::konst(imm_value(width, i))),
                };
                let result = if op == AluOp::Mov {
                    match (width, s) {
                        (Width::W64, t) => t,
                        (Width::W32, Ty::Scalar(r)) => Ty::Scalar(trunc(Width::W32, r)),
                        (Width::W32, t) => {
                            return Err(ViolationKind::PointerArithmetic {
                                detail: format!("32-bit move of a pointer ({})", self.describe(t)),
                            });
                        }
                    }
                } else {
                    let d = self.read(st, dst)?;
                    self.alu(st, width, op, d, s)?
                };
                st.regs[dst.index()] = result;
                Ok(Step::Next(1))
            }
            Instruction::MovSx { width, ext, dst, src, .. } => {
                let s = self.scalar_operand(st, src, "movsx")?;
                st.regs[dst.index()] = Ty::Scalar(match s.as_const() {
                    Some(v) => Range::konst(eval_movsx(width, ext, v)),
                    None => trunc(width, Range::UNKNOWN),
                });
                Ok(Step::Next(1))
            }
            Instruction::Neg { width, dst } => {
                let s = self.scalar_operand(st, dst, "neg")?;
                st.regs[dst.index()] = Ty::Scalar(match s.as_const() {
                    Some(v) => Range::konst(eval_neg(width, v)),
                    None => trunc(width, Range::UNKNOWN),
                });
                Ok(Step::Next(1))
            }
            Instruction::End { op, bits, dst } => {
                let s = self.scalar_operand(st, dst, "byte swap")?;
                st.regs[dst.index()] = Ty::Scalar(match s.as_const() {
                    Some(v) => Range::konst(eval_end(op, bits, v)),
                    None => match (op, bits) {
                        (EndOp::ToLe, EndBits::B16) => Range { umin: 0, umax: s.umax.min(0xffff) },
                        (EndOp::ToLe, EndBits::B32) => Range { umin: 0, umax: s.umax.min(u64::from(u32::MAX)) },
                        (EndOp::ToLe, EndBits::B64) => s,
                        (_, EndBits::B16) => Range::bits(16),
                        (_, EndBits::B32) => Range::bits(32),
                        (_, EndBits::B64) => Range::UNKNOWN,
                    },
                });
                Ok(Step::Next(1))
            }
            Instruction::Ja { off } => Ok(Step::Jump((pc as i64 + 1 + i64::from(off)) as usize)),
            Instruction::JaLong { imm } => Ok(Step::Jump((pc as i64 + 1 + i64::from(imm)) as usize)),
            Instruction::Jmp { width, cond, dst, src, off } => {
                let target = (pc as i64 + 1 + i64::from(off)) as usize;
                self.branch(st, target, width, cond, dst, src, hole.is_some())
            }
            Instruction::Call(CallTarget::Helper(id)) => {
                self.call(st, pc, id)?;
                Ok(Step::Next(1))
            }
            Instruction::Call(_) => Err(ViolationKind::UnsupportedCall { what: "non-helper call" }),
            Instruction::Exit => match st.regs[0] {
                Ty::Scalar(_) => Ok(Step::Exit),
                t => Err(ViolationKind::BadReturn { found: self.describe(t) }),
            },
            Instruction::LdImm64 { dst, pseudo: p, imm } => {
                let t = if let Some(m) = self.reloc_map.get(&pc) {
                    match m {
                        Some(map) => Ty::MapPtr { map: *map },
                        None => {
                            return Err(ViolationKind::UnresolvedMap {
                                map: self.program.map_at(pc).unwrap_or("?").to_owned(),
                            });
                        }
                    }
                } else if p != pseudo::NONE {
                    return Err(ViolationKind::UnsupportedPseudo { pseudo: p });
                } else if hole == Some(HoleKind::Imm64) {
                    Ty::Scalar(Range::UNKNOWN)
                } else {
                    Ty::Scalar(Range::konst(imm as u64))
                };
                st.regs[dst.index()] = t;
                Ok(Step::Next(2))
            }
            Instruction::LdAbs { size, .. } | Instruction::LdInd { size, .. } => {
                if st.regs[6] != Ty::Ctx {
                    return Err(ViolationKind::LdAbsWithoutCtx { found: self.describe(st.regs[6]) });
                }
                if let Instruction::LdInd { src, .. } = *insn {
                    self.scalar_operand(st, src, "legacy packet load index")?;
                }
                for r in 1..=5 {
                    st.regs[r] = Ty::Uninit;
                }
                st.regs[0] = Ty::Scalar(Range::bits(size.bytes() * 8));
                Ok(Step::Next(1))
            }
            Instruction::Load { size, dst, src, off } => {
                let base = self.read(st, src)?;
                let v = self.load(st, src, base, i64::from(off), size)?;
                st.regs[dst.index()] = v;
                Ok(Step::Next(1))
            }
            Instruction::LoadSx { size, dst, src, off } => {
                let base = self.read(st, src)?;
                let v = self.load(st, src, base, i64::from(off), size)?;
                if v.is_pointer() {
                    return Err(ViolationKind::BadSpill { detail: "sign-extending load of a spilled pointer".into() });
                }
                st.regs[dst.index()] = Ty::Scalar(Range::UNKNOWN);
                Ok(Step::Next(1))
            }
            Instruction::Store { size, dst, off, imm } => {
                let base = self.read(st, dst)?;
                if base == Ty::Ctx {
                    return Err(ViolationKind::CtxAccess {
                        off: i64::from(off),
                        size: size.bytes() as u64,
                        reason: "immediate stores into the context are not allowed",
                    });
                }
                let v = if hole.is_some() {
                    Ty::Scalar(Range::UNKNOWN)
                } else {
                    Ty::Scalar(Range::konst(i64::from(imm) as u64))
                };
                self.store(st, dst, base, i64::from(off), size, v, None)?;
                Ok(Step::Next(1))
            }
            Instruction::StoreReg { size, dst, src, off } => {
                let base = self.read(st, dst)?;
                let v = self.read(st, src)?;
                self.store(st, dst, base, i64::from(off), size, v, Some(src))?;
                Ok(Step::Next(1))
            }
            Instruction::Atomic { size, op, dst, src, off } => {
                let base = self.read(st, dst)?;
                let v = self.read(st, src)?;
                if v.is_pointer() {
                    return Err(ViolationKind::PointerLeak {
                        reg: src,
                        found: self.describe(v),
                        target: "memory (atomic)",
                    });
                }
                match base {
                    Ty::Stack { .. } | Ty::MapValue { .. } => {}
                    Ty::MapValueOrNull { .. } => return Err(ViolationKind::NullableDeref { reg: dst }),
                    other => {
                        return Err(ViolationKind::BadAtomic { found: self.describe(other) });
                    }
                }
                let old = self.load(st, dst, base, i64::from(off), size)?;
                if old.is_pointer() {
                    return Err(ViolationKind::BadSpill { detail: "atomic operation on a spilled pointer".into() });
                }
                if op == AtomicOp::CmpXchg {
                    self.scalar_operand(st, Reg::R0, "cmpxchg")?;
                }
                self.store(st, dst, base, i64::from(off), size, Ty::Scalar(Range::UNKNOWN), None)?;
                let fetched = Ty::Scalar(Range::bits(size.bytes() * 8));
                if op == AtomicOp::CmpXchg {
                    st.regs[0] = fetched;
                } else if op.fetches() {
                    st.regs[src.index()] = fetched;
                }
                Ok(Step::Next(1))
            }
        }
    }

    fn scalar_operand(&self, st: &State, r: Reg, what: &str) -> VResult<Range> {
        match self.read(st, r)? {
            Ty::Scalar(s) => Ok(s),
            t => {
                Err(ViolationKind::PointerArithmetic { detail: format!("{what} on {r} holding {}", self.describe(t)) })
            }
        }
    }

    fn alu(&self, st: &mut State, width: Width, op: AluOp, d: Ty, s: Ty) -> VResult<Ty> {
        let refuse = |d: Ty, s: Ty| ViolationKind::PointerArithmetic {
            detail: format!(
                "{} {} {} ({}-bit)",
                self.describe(d),
                alu_op_text(op),
                self.describe(s),
                if width == Width::W64 { 64 } else { 32 }
            ),
        };
        match (d, s) {
            (Ty::Scalar(a), Ty::Scalar(b)) => Ok(Ty::Scalar(scalar_alu(width, op, a, b))),
            (p, Ty::Scalar(b)) if p.is_pointer() => {
                if width != Width::W64 || !matches!(op, AluOp::Add | AluOp::Sub) {
                    return Err(refuse(d, s));
                }
                self.ptr_add(st, p, b, op == AluOp::Sub).ok_or_else(|| refuse(d, s))?
            }
            (Ty::Scalar(b), p) if p.is_pointer() => {
                if width != Width::W64 || op != AluOp::Add {
                    return Err(refuse(d, s));
                }
                self.ptr_add(st, p, b, false).ok_or_else(|| refuse(d, s))?
            }
            (Ty::Pkt { .. }, Ty::Pkt { .. }) | (Ty::Stack { .. }, Ty::Stack { .. })
                if width == Width::W64 && op == AluOp::Sub =>
            {
                Ok(Ty::Scalar(Range::UNKNOWN))
            }
            _ => Err(refuse(d, s)),
        }
    }

    /// `p ± b`; `None` if the pointer kind allows no arithmetic.
    fn ptr_add(&self, st: &mut State, p: Ty, b: Range, neg: bool) -> Option<VResult<Ty>> {
        let konst = b.as_const().map(|v| if neg { (v as i64).wrapping_neg() } else { v as i64 });
        let too_far = |detail: String| Err(ViolationKind::PointerArithmetic { detail });
        Some(match p {
            Ty::Pkt { id, off, range, vmax } => match konst {
                Some(c) => {
                    let new = i64::from(off) + c;
                    if new.unsigned_abs() > MAX_PACKET_OFF {
                        too_far(format!("packet pointer offset {new} out of range"))
                    } else {
                        Ok(Ty::Pkt { id, off: new as i32, range, vmax })
                    }
                }
                None if neg => too_far("subtracting a variable from a packet pointer".into()),
                None => {
                    let total = u64::from(vmax).saturating_add(b.umax);
                    if b.umax > MAX_PACKET_OFF || total > MAX_PACKET_OFF {
                        too_far(format!(
                            "variable offset up to {} added to a packet pointer (bound it to {MAX_PACKET_OFF})",
                            b.umax
                        ))
                    } else {
                        Ok(Ty::Pkt { id: st.fresh_id(), off, range: 0, vmax: total as u32 })
                    }
                }
            },
            Ty::Stack { off } => match konst {
                Some(c) if (i64::from(off) + c).unsigned_abs() < MAX_VAR_SIZE => {
                    Ok(Ty::Stack { off: (i64::from(off) + c) as i32 })
                }
                Some(c) => too_far(format!("stack pointer offset {} out of range", i64::from(off) + c)),
                None => too_far("variable offset added to a stack pointer".into()),
            },
            Ty::MapValue { map, off, vmax } => {
                let value_size = u64::from(self.maps.get(map).map_or(0, |m| m.value_size));
                match konst {
                    Some(c) if (i64::from(off) + c).unsigned_abs() < MAX_VAR_SIZE => {
                        Ok(Ty::MapValue { map, off: (i64::from(off) + c) as i32, vmax })
                    }
                    Some(c) => too_far(format!("map value offset {} out of range", i64::from(off) + c)),
                    None if neg => too_far("subtracting a variable from a map value pointer".into()),
                    None => {
                        let total = u64::from(vmax).saturating_add(b.umax);
                        if total > value_size {
                            too_far(format!("variable offset up to {} beyond value_size {value_size}", b.umax))
                        } else {
                            Ok(Ty::MapValue { map, off, vmax: total as u32 })
                        }
                    }
                }
            }
            _ => return None,
        })
    }

    #[expect(clippy::too_many_arguments, reason = "one jump's operands")]
    fn branch(
        &self,
        st: &mut State,
        target: usize,
        width: Width,
        cond: JmpCond,
        dst: Reg,
        src: Operand,
        hole: bool,
    ) -> VResult<Step> {
        let d = self.read(st, dst)?;
        let s = match src {
            Operand::Reg(r) => self.read(st, r)?,
            Operand::Imm(_) if hole => Ty::Scalar(match width {
                Width::W64 => Range::UNKNOWN,
                Width::W32 => Range::U32,
            }),
            Operand::Imm(i) => Ty::Scalar(Range::konst(imm_value(width, i))),
        };
        let src_reg = match src {
            Operand::Reg(r) => Some(r),
            Operand::Imm(_) => None,
        };
        let mut taken = st.clone();
        taken.pc = target;
        let fall = st;
        if (d.is_pointer() || s.is_pointer()) && width == Width::W32 {
            return Err(ViolationKind::PointerComparison {
                detail: format!("32-bit comparison of {} and {}", self.describe(d), self.describe(s)),
            });
        }
        let (tk, ft) = match (d, s) {
            (Ty::Scalar(a), Ty::Scalar(b)) => {
                let (a32, b32) = (width == Width::W32, width == Width::W32);
                let _ = b32;
                let fits = !a32 || (a.umax <= u64::from(u32::MAX) && b.umax <= u64::from(u32::MAX));
                let outcome = scalar_outcome(width, cond, a, b);
                let mut t_ok = outcome != Some(false);
                let mut f_ok = outcome != Some(true);
                if fits {
                    if t_ok {
                        match refine(cond, a, b) {
                            Some((na, nb)) => {
                                taken.regs[dst.index()] = Ty::Scalar(na);
                                if let Some(r) = src_reg {
                                    taken.regs[r.index()] = Ty::Scalar(nb);
                                }
                            }
                            None => t_ok = false,
                        }
                    }
                    if f_ok && let Some(neg) = cond.negate() {
                        match refine(neg, a, b) {
                            Some((na, nb)) => {
                                fall.regs[dst.index()] = Ty::Scalar(na);
                                if let Some(r) = src_reg {
                                    fall.regs[r.index()] = Ty::Scalar(nb);
                                }
                            }
                            None => f_ok = false,
                        }
                    }
                }
                (t_ok, f_ok)
            }
            (Ty::MapValueOrNull { id, map }, Ty::Scalar(b)) | (Ty::Scalar(b), Ty::MapValueOrNull { id, map })
                if b.as_const() == Some(0) && matches!(cond, JmpCond::Eq | JmpCond::Ne) =>
            {
                let (null_state, value_state) =
                    if cond == JmpCond::Eq { (&mut taken, &mut *fall) } else { (&mut *fall, &mut taken) };
                mark_null_check(null_state, id, None);
                mark_null_check(value_state, id, Some(map));
                (true, true)
            }
            (Ty::MapValueOrNull { .. }, _) | (_, Ty::MapValueOrNull { .. }) => {
                return Err(ViolationKind::PointerComparison {
                    detail: format!(
                        "{} compared with {}: check a lookup result with `== 0` or `!= 0` first",
                        self.describe(d),
                        self.describe(s)
                    ),
                });
            }
            (Ty::Pkt { .. }, Ty::PktEnd) | (Ty::PktEnd, Ty::Pkt { .. }) => {
                // normalise to "pkt REL end"
                let (pkt, c) = match d {
                    Ty::Pkt { .. } => (d, cond),
                    _ => (s, cond.swap()),
                };
                if let Ty::Pkt { id, off, vmax, .. } = pkt {
                    for (state, rel) in [(&mut taken, Some(c)), (&mut *fall, c.negate())] {
                        let Some(rel) = rel else { continue };
                        let new_range = match rel {
                            JmpCond::Lt if off > 0 => Some(off + 1),
                            JmpCond::Le if off > 0 => Some(off),
                            _ => None,
                        };
                        if let Some(r) = new_range
                            && u64::from(vmax) + off as u64 <= MAX_PACKET_OFF
                        {
                            mark_pkt_range(state, id, r as u32);
                        }
                    }
                }
                (true, true)
            }
            (p, Ty::Scalar(b)) | (Ty::Scalar(b), p)
                if p.is_pointer()
                    && !matches!(p, Ty::InvalidPkt { .. })
                    && b.as_const() == Some(0)
                    && matches!(cond, JmpCond::Eq | JmpCond::Ne) =>
            {
                // a non-NULL pointer is never 0
                (cond == JmpCond::Ne, cond == JmpCond::Eq)
            }
            (Ty::InvalidPkt { call }, _) => {
                return Err(ViolationKind::PacketPointerInvalidated { reg: dst, call });
            }
            (_, Ty::InvalidPkt { call }) => {
                return Err(ViolationKind::PacketPointerInvalidated { reg: src_reg.unwrap_or(dst), call });
            }
            _ => (true, true),
        };
        if !tk && !ft {
            return Ok(Step::Exit);
        }
        Ok(Step::Branch(tk.then(|| Box::new(taken)), ft))
    }

    fn call(&self, st: &mut State, pc: usize, id: i32) -> VResult<()> {
        let Some(spec) = helpers::by_id(id) else {
            return Err(ViolationKind::UnknownHelper { id });
        };
        let mut map: Option<usize> = None;
        for (i, arg) in spec.args.iter().enumerate() {
            let reg = Reg::ALL[i + 1];
            let t = st.regs[reg.index()];
            let bad = |expected: &str, found: String| ViolationKind::HelperArg {
                helper: spec.name,
                reg,
                expected: expected.to_owned(),
                found,
            };
            if t == Ty::Uninit {
                return Err(bad("an initialized value", "uninit".into()));
            }
            if let Ty::InvalidPkt { call } = t {
                return Err(ViolationKind::PacketPointerInvalidated { reg, call });
            }
            match arg {
                ArgType::Anything => {}
                ArgType::Ctx => {
                    if t != Ty::Ctx {
                        return Err(bad("ctx", self.describe(t)));
                    }
                }
                ArgType::MapPtr => match t {
                    Ty::MapPtr { map: m } => {
                        // `check_map_func_compatibility`: prog arrays go with
                        // bpf_tail_call only, and bpf_tail_call with nothing else
                        let prog_array = self.maps.get(m).is_some_and(|d| d.kind == MapKind::ProgArray);
                        let tail_call = spec.id == helpers::id::TAIL_CALL;
                        if tail_call && !prog_array {
                            return Err(bad("a prog_array map", self.describe(t)));
                        }
                        if !tail_call && prog_array {
                            return Err(bad("a map other than a prog_array (use tail_call)", self.describe(t)));
                        }
                        map = Some(m);
                    }
                    _ => return Err(bad("map_ptr", self.describe(t))),
                },
                ArgType::MapKey | ArgType::MapValue => {
                    let Some(m) = map.and_then(|m| self.maps.get(m)) else {
                        return Err(bad("a map in r1", "none".into()));
                    };
                    let size = if *arg == ArgType::MapKey { m.key_size } else { m.value_size };
                    self.helper_mem(st, reg, t, u64::from(size), false)
                        .map_err(|e| bad(&format!("a pointer to {size} readable bytes"), e))?;
                }
                ArgType::MemRead | ArgType::MemReadOrNull | ArgType::MemWrite => {
                    let size_reg = Reg::ALL[i + 2];
                    let size = match st.regs[size_reg.index()] {
                        Ty::Scalar(r) => r.umax,
                        other => {
                            return Err(ViolationKind::HelperArg {
                                helper: spec.name,
                                reg: size_reg,
                                expected: "a size".into(),
                                found: self.describe(other),
                            });
                        }
                    };
                    if *arg == ArgType::MemReadOrNull
                        && let Ty::Scalar(r) = t
                        && r.as_const() == Some(0)
                        && size == 0
                    {
                        continue;
                    }
                    let write = *arg == ArgType::MemWrite;
                    let what = if write { "writable" } else { "readable" };
                    self.helper_mem(st, reg, t, size, write)
                        .map_err(|e| bad(&format!("a pointer to {size} {what} bytes"), e))?;
                }
                ArgType::ConstSize | ArgType::ConstSizeOrZero => match t {
                    Ty::Scalar(r) => {
                        if *arg == ArgType::ConstSize && r.umin == 0 {
                            return Err(bad("a positive size", self.describe(t)));
                        }
                        if r.umax >= MAX_VAR_SIZE {
                            return Err(bad("a bounded size", self.describe(t)));
                        }
                    }
                    _ => return Err(bad("a size", self.describe(t))),
                },
            }
        }
        for r in 1..=5 {
            st.regs[r] = Ty::Uninit;
        }
        st.regs[0] = match spec.ret {
            RetType::Void => Ty::Uninit,
            RetType::Integer => Ty::Scalar(Range::UNKNOWN),
            RetType::MapValueOrNull => match map {
                Some(m) => Ty::MapValueOrNull { map: m, id: st.fresh_id() },
                None => Ty::Scalar(Range::UNKNOWN),
            },
        };
        if spec.changes_pkt_data {
            st.map_values(|t| match t {
                Ty::Pkt { .. } | Ty::PktEnd => Ty::InvalidPkt { call: pc },
                other => other,
            });
        }
        Ok(())
    }

    /// Checks a helper memory argument; on a write, marks stack bytes initialized.
    fn helper_mem(&self, st: &mut State, reg: Reg, t: Ty, size: u64, write: bool) -> Result<(), String> {
        match t {
            Ty::Stack { off } => {
                let start = i64::from(off);
                let end = start + size as i64;
                if start < -i64::from(STACK_SIZE) || end > 0 {
                    return Err(format!("fp{start:+} with {size} bytes is outside the stack"));
                }
                for a in start..end {
                    let i = (a + i64::from(STACK_SIZE)) as usize;
                    if write {
                        st.bytes[i] = Byte::Misc;
                        st.spills[i / 8] = None;
                    } else if st.bytes[i] == Byte::Uninit {
                        return Err(format!("uninitialized stack at fp{a:+}"));
                    }
                }
                if write {
                    // bytes of partially overwritten spill slots become misc
                    for a in (start..end).step_by(1) {
                        let slot = ((a + i64::from(STACK_SIZE)) / 8) as usize;
                        for b in 0..8 {
                            if st.bytes[slot * 8 + b] == Byte::Spill {
                                st.bytes[slot * 8 + b] = Byte::Misc;
                            }
                        }
                    }
                }
                Ok(())
            }
            Ty::Pkt { off, range, .. } => {
                let end = i64::from(off) + size as i64;
                if off < 0 || end > i64::from(range) {
                    Err(format!("packet bytes [{off}, {end}) beyond the verified range {range}"))
                } else {
                    Ok(())
                }
            }
            Ty::MapValue { map, off, vmax } => {
                let vs = self.maps.get(map).map_or(0, |m| m.value_size);
                let end = i64::from(off) + i64::from(vmax) + size as i64;
                if off < 0 || end > i64::from(vs) {
                    Err(format!("map value bytes beyond value_size {vs}"))
                } else {
                    Ok(())
                }
            }
            Ty::MapValueOrNull { .. } => Err(format!("{reg} may be NULL")),
            other => Err(self.describe(other)),
        }
    }

    fn load(&self, st: &State, base_reg: Reg, base: Ty, off: i64, size: Size) -> VResult<Ty> {
        let n = size.bytes() as i64;
        match base {
            Ty::Stack { off: so } => {
                let a = i64::from(so) + off;
                check_stack(a, n)?;
                let i = (a + i64::from(STACK_SIZE)) as usize;
                let bytes = &st.bytes[i..i + n as usize];
                if bytes.contains(&Byte::Uninit) {
                    return Err(ViolationKind::StackUninitRead { off: a, size: n as u64 });
                }
                let slot = i / 8;
                if n == 8
                    && bytes.iter().all(|b| *b == Byte::Spill)
                    && let Some(t) = st.spills[slot]
                {
                    return Ok(t);
                }
                if bytes.contains(&Byte::Spill)
                    && let Some(t) = st.spills[slot]
                    && t.is_pointer()
                {
                    return Err(ViolationKind::BadSpill {
                        detail: format!("partial read of a spilled pointer ({})", self.describe(t)),
                    });
                }
                Ok(Ty::Scalar(Range::bits(size.bytes() * 8)))
            }
            Ty::Pkt { off: po, range, .. } => {
                let a = i64::from(po) + off;
                if a < 0 || a + n > i64::from(range) {
                    return Err(ViolationKind::PacketOutOfRange { off: a, end: a + n, range });
                }
                Ok(Ty::Scalar(Range::bits(size.bytes() * 8)))
            }
            Ty::Ctx => {
                let field = skb::check_access(off as i32, n as i32, false).map_err(|r| ctx_err(off, n, r))?;
                Ok(match field.kind {
                    FieldKind::Scalar => Ty::Scalar(Range::bits(size.bytes() * 8)),
                    FieldKind::PktData => Ty::Pkt { id: 0, off: 0, range: 0, vmax: 0 },
                    FieldKind::PktEnd => Ty::PktEnd,
                })
            }
            Ty::MapValue { map, off: mo, vmax } => {
                self.check_map_value(map, i64::from(mo) + off, i64::from(vmax), n)?;
                Ok(Ty::Scalar(Range::bits(size.bytes() * 8)))
            }
            Ty::MapValueOrNull { .. } => Err(ViolationKind::NullableDeref { reg: base_reg }),
            Ty::InvalidPkt { call } => Err(ViolationKind::PacketPointerInvalidated { reg: base_reg, call }),
            other => Err(ViolationKind::InvalidMemAccess { reg: base_reg, found: self.describe(other) }),
        }
    }

    fn check_map_value(&self, map: usize, a: i64, vmax: i64, n: i64) -> VResult<()> {
        let m = self.maps.get(map);
        let vs = m.map_or(0, |m| m.value_size);
        if a < 0 || a + vmax + n > i64::from(vs) {
            return Err(ViolationKind::MapValueOutOfBounds {
                map: m.map_or_else(String::new, |m| m.name.clone()),
                off: a,
                end: a + vmax + n,
                value_size: vs,
            });
        }
        Ok(())
    }

    #[expect(clippy::too_many_arguments, reason = "one store's operands")]
    fn store(
        &self,
        st: &mut State,
        base_reg: Reg,
        base: Ty,
        off: i64,
        size: Size,
        v: Ty,
        src: Option<Reg>,
    ) -> VResult<()> {
        let n = size.bytes() as i64;
        let leak =
            |target| ViolationKind::PointerLeak { reg: src.unwrap_or(base_reg), found: self.describe(v), target };
        match base {
            Ty::Stack { off: so } => {
                let a = i64::from(so) + off;
                check_stack(a, n)?;
                let i = (a + i64::from(STACK_SIZE)) as usize;
                let slot = i / 8;
                if n == 8 {
                    st.spills[slot] = Some(v);
                    for b in &mut st.bytes[i..i + 8] {
                        *b = Byte::Spill;
                    }
                } else {
                    if v.is_pointer() {
                        return Err(ViolationKind::BadSpill {
                            detail: format!(
                                "a pointer ({}) can be spilled only as an aligned 8-byte store",
                                self.describe(v)
                            ),
                        });
                    }
                    // what remains of a partially overwritten spill is plain data
                    for b in &mut st.bytes[slot * 8..slot * 8 + 8] {
                        if *b == Byte::Spill {
                            *b = Byte::Misc;
                        }
                    }
                    st.spills[slot] = None;
                    for b in &mut st.bytes[i..i + n as usize] {
                        *b = Byte::Misc;
                    }
                }
                Ok(())
            }
            Ty::Pkt { off: po, range, .. } => {
                let a = i64::from(po) + off;
                if a < 0 || a + n > i64::from(range) {
                    return Err(ViolationKind::PacketOutOfRange { off: a, end: a + n, range });
                }
                if v.is_pointer() {
                    return Err(leak("the packet"));
                }
                Ok(())
            }
            Ty::Ctx => {
                skb::check_access(off as i32, n as i32, true).map_err(|r| ctx_err(off, n, r))?;
                if v.is_pointer() {
                    return Err(leak("the context"));
                }
                Ok(())
            }
            Ty::MapValue { map, off: mo, vmax } => {
                self.check_map_value(map, i64::from(mo) + off, i64::from(vmax), n)?;
                if v.is_pointer() {
                    return Err(leak("a map value"));
                }
                Ok(())
            }
            Ty::MapValueOrNull { .. } => Err(ViolationKind::NullableDeref { reg: base_reg }),
            Ty::InvalidPkt { call } => Err(ViolationKind::PacketPointerInvalidated { reg: base_reg, call }),
            other => Err(ViolationKind::InvalidMemAccess { reg: base_reg, found: self.describe(other) }),
        }
    }
}

fn ctx_err(off: i64, n: i64, r: CtxRefusal) -> ViolationKind {
    ViolationKind::CtxAccess {
        off,
        size: n as u64,
        reason: match r {
            CtxRefusal::NoField => "no such field for tc programs",
            CtxRefusal::Misaligned => "misaligned",
            CtxRefusal::BadSize => "wrong size for the field",
            CtxRefusal::ReadOnly => "field is read-only",
        },
    }
}

fn check_stack(a: i64, n: i64) -> VResult<()> {
    if a < -i64::from(STACK_SIZE) || a + n > 0 {
        return Err(ViolationKind::StackOutOfBounds { off: a, size: n as u64 });
    }
    if a.rem_euclid(n) != 0 {
        return Err(ViolationKind::StackMisaligned { off: a, size: n as u64 });
    }
    Ok(())
}

fn mark_null_check(st: &mut State, id: u32, map: Option<usize>) {
    st.map_values(|t| match t {
        Ty::MapValueOrNull { id: i, map: m } if i == id => match map {
            Some(_) => Ty::MapValue { map: m, off: 0, vmax: 0 },
            None => Ty::Scalar(Range::konst(0)),
        },
        other => other,
    });
}

fn mark_pkt_range(st: &mut State, id: u32, range: u32) {
    st.map_values(|t| match t {
        Ty::Pkt { id: i, off, range: r, vmax } if i == id => Ty::Pkt { id: i, off, range: r.max(range), vmax },
        other => other,
    });
}

fn writes_r10(insn: &Instruction) -> bool {
    match *insn {
        Instruction::Alu { dst, .. }
        | Instruction::MovSx { dst, .. }
        | Instruction::Neg { dst, .. }
        | Instruction::End { dst, .. }
        | Instruction::LdImm64 { dst, .. }
        | Instruction::Load { dst, .. }
        | Instruction::LoadSx { dst, .. } => dst == Reg::R10,
        Instruction::Atomic { op, src, .. } => op.fetches() && op != AtomicOp::CmpXchg && src == Reg::R10,
        _ => false,
    }
}

fn trunc(width: Width, r: Range) -> Range {
    match width {
        Width::W64 => r,
        Width::W32 => r.trunc32(),
    }
}

/// Smallest all-ones mask covering `v`.
fn mask_of(v: u64) -> u64 {
    if v == 0 { 0 } else { u64::MAX >> v.leading_zeros() }
}

fn scalar_alu(width: Width, op: AluOp, a: Range, b: Range) -> Range {
    if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
        return Range::konst(eval_alu(width, op, x, y));
    }
    let (a, b) = match width {
        Width::W64 => (a, b),
        Width::W32 => (a.trunc32(), b.trunc32()),
    };
    let limit = match width {
        Width::W64 => u64::MAX,
        Width::W32 => u64::from(u32::MAX),
    };
    let bits = if width == Width::W64 { 64 } else { 32 };
    let r = match op {
        AluOp::Add => match (a.umin.checked_add(b.umin), a.umax.checked_add(b.umax)) {
            (Some(lo), Some(hi)) if hi <= limit => Range { umin: lo, umax: hi },
            _ => Range::UNKNOWN,
        },
        AluOp::Sub => {
            if a.umin >= b.umax {
                Range { umin: a.umin - b.umax, umax: a.umax - b.umin }
            } else {
                Range::UNKNOWN
            }
        }
        AluOp::Mul => match (a.umin.checked_mul(b.umin), a.umax.checked_mul(b.umax)) {
            (Some(lo), Some(hi)) if hi <= limit => Range { umin: lo, umax: hi },
            _ => Range::UNKNOWN,
        },
        AluOp::Div => match a.umax.checked_div(b.umin) {
            Some(hi) => Range { umin: a.umin / b.umax.max(1), umax: hi },
            // a zero divisor is possible: the result may be 0
            None => Range { umin: 0, umax: a.umax },
        },
        AluOp::Mod => {
            if b.umin > 0 {
                Range { umin: 0, umax: a.umax.min(b.umax - 1) }
            } else {
                Range { umin: 0, umax: a.umax }
            }
        }
        AluOp::And => Range { umin: 0, umax: a.umax.min(b.umax) },
        AluOp::Or => Range { umin: a.umin.max(b.umin), umax: mask_of(a.umax | b.umax) },
        AluOp::Xor => Range { umin: 0, umax: mask_of(a.umax | b.umax) },
        AluOp::Lsh => match b.as_const() {
            Some(k) if k < bits && a.umax.leading_zeros() as u64 >= k + (64 - bits) => {
                Range { umin: a.umin << k, umax: a.umax << k }
            }
            _ => Range::UNKNOWN,
        },
        AluOp::Rsh => match b.as_const() {
            Some(k) if k < bits => Range { umin: a.umin >> k, umax: a.umax >> k },
            _ => Range { umin: 0, umax: a.umax },
        },
        AluOp::Arsh => {
            let sign_clear = a.umax < (1u64 << (bits - 1));
            match b.as_const() {
                Some(k) if k < bits && sign_clear => Range { umin: a.umin >> k, umax: a.umax >> k },
                _ if sign_clear => Range { umin: 0, umax: a.umax },
                _ => Range::UNKNOWN,
            }
        }
        AluOp::SDiv | AluOp::SMod | AluOp::Mov => Range::UNKNOWN,
    };
    trunc(width, r)
}

/// `Some(true)` if the branch is always taken, `Some(false)` if never.
fn scalar_outcome(width: Width, cond: JmpCond, a: Range, b: Range) -> Option<bool> {
    if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
        return Some(cond.eval(width, x, y));
    }
    let (a, b) = match width {
        Width::W64 => (a, b),
        Width::W32 => {
            if a.umax > u64::from(u32::MAX) || b.umax > u64::from(u32::MAX) {
                return None;
            }
            (a, b)
        }
    };
    match cond {
        JmpCond::Eq => (a.umax < b.umin || b.umax < a.umin).then_some(false),
        JmpCond::Ne => (a.umax < b.umin || b.umax < a.umin).then_some(true),
        JmpCond::Gt => {
            if a.umin > b.umax {
                Some(true)
            } else if a.umax <= b.umin {
                Some(false)
            } else {
                None
            }
        }
        JmpCond::Ge => {
            if a.umin >= b.umax {
                Some(true)
            } else if a.umax < b.umin {
                Some(false)
            } else {
                None
            }
        }
        JmpCond::Lt => scalar_outcome(width, JmpCond::Gt, b, a),
        JmpCond::Le => scalar_outcome(width, JmpCond::Ge, b, a),
        _ => None,
    }
}

/// Narrows `(a, b)` under `a cond b`; `None` if impossible.
fn refine(cond: JmpCond, a: Range, b: Range) -> Option<(Range, Range)> {
    let mk = |lo: u64, hi: u64| (lo <= hi).then_some(Range { umin: lo, umax: hi });
    Some(match cond {
        JmpCond::Eq => {
            let lo = a.umin.max(b.umin);
            let hi = a.umax.min(b.umax);
            let r = mk(lo, hi)?;
            (r, r)
        }
        JmpCond::Ne => {
            let mut a2 = a;
            let mut b2 = b;
            if let Some(c) = b.as_const() {
                if a.umin == c {
                    a2.umin = a.umin.checked_add(1)?;
                }
                if a.umax == c {
                    a2.umax = a.umax.checked_sub(1)?;
                }
                if a2.umin > a2.umax {
                    return None;
                }
            }
            if let Some(c) = a.as_const() {
                if b.umin == c {
                    b2.umin = b.umin.checked_add(1)?;
                }
                if b.umax == c {
                    b2.umax = b.umax.checked_sub(1)?;
                }
                if b2.umin > b2.umax {
                    return None;
                }
            }
            (a2, b2)
        }
        JmpCond::Gt => {
            (mk(a.umin.max(b.umin.checked_add(1)?), a.umax)?, mk(b.umin, b.umax.min(a.umax.checked_sub(1)?))?)
        }
        JmpCond::Ge => (mk(a.umin.max(b.umin), a.umax)?, mk(b.umin, b.umax.min(a.umax))?),
        JmpCond::Lt => {
            let (nb, na) = refine(JmpCond::Gt, b, a)?;
            (na, nb)
        }
        JmpCond::Le => {
            let (nb, na) = refine(JmpCond::Ge, b, a)?;
            (na, nb)
        }
        // signed and bit tests: no narrowing
        _ => (a, b),
    })
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.umin, self.umax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refine_narrows_unsigned_ranges() {
        let a = Range { umin: 0, umax: 100 };
        let five = Range::konst(5);
        assert_eq!(refine(JmpCond::Gt, a, five), Some((Range { umin: 6, umax: 100 }, five)));
        assert_eq!(refine(JmpCond::Le, a, five), Some((Range { umin: 0, umax: 5 }, five)));
        assert_eq!(refine(JmpCond::Gt, Range::konst(3), five), None);
        assert_eq!(scalar_outcome(Width::W64, JmpCond::Gt, Range { umin: 10, umax: 20 }, five), Some(true));
    }

    #[test]
    fn scalar_ranges_follow_masks_and_shifts() {
        let byte = Range::bits(8);
        let masked = scalar_alu(Width::W64, AluOp::And, byte, Range::konst(15));
        assert_eq!(masked, Range { umin: 0, umax: 15 });
        let shifted = scalar_alu(Width::W64, AluOp::Lsh, masked, Range::konst(2));
        assert_eq!(shifted, Range { umin: 0, umax: 60 });
    }
}
