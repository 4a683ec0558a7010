//! Assembler for LLVM's BPF assembly syntax (the syntax [`crate::disasm`]
//! prints), with labels, named constants, named holes and map references.
//!
//! Syntax (one statement per line; see `bpf/README.md` for the full list):
//! - comments: `//`, `;` or `#` to the end of the line;
//! - labels: `name:` on its own line or before an instruction;
//! - constants: `.equ NAME, EXPR` (also `.set`); `EXPR` is a sum of numbers
//!   (decimal or `0x` hex) and earlier constants, e.g. `.equ ETH_HLEN, 14`;
//! - holes: `%name` wherever an immediate may stand (`w1 = %tunnel_ifindex`,
//!   `r2 = %node_ip ll`, `if w1 == %vni goto L`, `*(u32 *)(r10 - 4) = %x`);
//! - maps: `r1 = map[src_class] ll` references a map by name (an `ld_imm64` of
//!   0 with a relocation); `.map NAME, KIND, key_size=K, value_size=V,
//!   max_entries=N[, flags=F]` declares one (KIND: `hash`, `array`,
//!   `lpm_trie`, `percpu_array`, `percpu_hash`, `lru_hash`);
//! - jumps: `goto LABEL`, `goto +N`, `if r1 > 5 goto LABEL`, `gotol LABEL`; a
//!   trailing llvm-objdump annotation `<...>` is ignored, so objdump output
//!   assembles as is;
//! - `call N`, `call map_lookup_elem` / `call bpf_map_lookup_elem`;
//! - `.insn CODE, DST, SRC, OFF, IMM` emits one raw slot.
//!
//! Contract: every error carries its 1-based line and column; all errors of a
//! source are reported, not only the first. Immediates are range-checked
//! against how the instruction uses them: 64-bit ALU and JMP immediates are
//! sign-extended, so they must fit `i32`; 32-bit ones may also be any `u32`.

use std::collections::BTreeMap;

use crate::builder::{BuildError, Label, ProgramBuilder};
use crate::helpers;
use crate::insn::{
    AluOp, AtomicOp, CallTarget, EndBits, EndOp, Insn, Instruction, JmpCond, Operand, Reg, SignExt, Size, Width,
};
use crate::maps::{MapDef, MapDefError, MapKind, is_identifier};
use crate::program::Program;

/// The result of assembling one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembly {
    /// The program.
    pub program: Program,
    /// Maps declared with `.map`, in declaration order.
    pub maps: Vec<MapDef>,
    /// Constants defined with `.equ`.
    pub constants: BTreeMap<String, i64>,
}

/// What went wrong at one place in the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsmErrorKind {
    /// A token that does not fit the statement.
    #[error("expected {expected}, found `{found}`")]
    Unexpected {
        /// What the grammar wanted.
        expected: String,
        /// What was there.
        found: String,
    },
    /// The line ended early.
    #[error("expected {expected} at end of line")]
    UnexpectedEnd {
        /// What the grammar wanted.
        expected: String,
    },
    /// A character that starts no token.
    #[error("unexpected character `{ch}`")]
    BadChar {
        /// The character.
        ch: char,
    },
    /// A statement that matches no instruction form.
    #[error("unknown instruction starting with `{found}`")]
    UnknownMnemonic {
        /// First token.
        found: String,
    },
    /// `w` and `r` registers mixed, or a `w` register where only 64-bit works.
    #[error("register width mismatch: {detail}")]
    WidthMismatch {
        /// Explanation.
        detail: String,
    },
    /// An immediate that does not fit.
    #[error("value {value} out of range for {what} ({range})")]
    OutOfRange {
        /// The value.
        value: i128,
        /// Which operand.
        what: &'static str,
        /// The accepted range.
        range: &'static str,
    },
    /// A jump to a label that is never defined.
    #[error("undefined label `{name}`")]
    UndefinedLabel {
        /// Label name.
        name: String,
    },
    /// A label defined twice.
    #[error("label `{name}` already defined on line {first_line}")]
    DuplicateLabel {
        /// Label name.
        name: String,
        /// Line of the first definition.
        first_line: usize,
    },
    /// A name that is neither a constant nor a helper.
    #[error("undefined constant `{name}`")]
    UndefinedConstant {
        /// The name.
        name: String,
    },
    /// A constant defined twice.
    #[error("constant `{name}` already defined")]
    DuplicateConstant {
        /// The name.
        name: String,
    },
    /// `call NAME` with an unknown helper.
    #[error("unknown helper `{name}`")]
    UnknownHelper {
        /// The name.
        name: String,
    },
    /// A jump too far for its offset field.
    #[error("jump to `{label}` spans {distance} slots, beyond the 16-bit offset (use gotol)")]
    JumpOutOfRange {
        /// Label name.
        label: String,
        /// Distance.
        distance: i64,
    },
    /// A bad `.map` directive.
    #[error("invalid map declaration: {source}")]
    BadMap {
        /// The reason.
        source: MapDefError,
    },
    /// A map declared twice.
    #[error("map `{name}` already declared")]
    DuplicateMap {
        /// Map name.
        name: String,
    },
    /// Anything else the builder rejected.
    #[error("{reason}")]
    Invalid {
        /// Explanation.
        reason: String,
    },
}

/// One assembly error with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {kind}")]
pub struct AsmError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What went wrong.
    pub kind: AsmErrorKind,
}

/// All errors of one source, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct AsmErrors {
    /// The errors.
    pub errors: Vec<AsmError>,
}

// ----- lexer ----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Num(i128),
    Hole(String),
    Op(&'static str),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) => s.clone(),
            Tok::Num(n) => n.to_string(),
            Tok::Hole(h) => format!("%{h}"),
            Tok::Op(o) => (*o).to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    col: usize,
}

const OPS: &[&str] = &[
    "s>>=", "s>=", "s<=", "s/=", "s%=", "<<=", ">>=", "s>", "s<", "==", "!=", ">=", "<=", "+=", "-=", "*=", "/=", "|=",
    "&=", "%=", "^=", "=", ">", "<", "&", "+", "-", "*", "(", ")", "[", "]", ",", ":",
];

fn strip_comment(line: &str) -> &str {
    let mut end = line.len();
    for pat in ["//", ";", "#"] {
        if let Some(i) = line.find(pat) {
            end = end.min(i);
        }
    }
    &line[..end]
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '.'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

fn lex(line: &str, lineno: usize) -> Result<Vec<Token>, AsmError> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |col: usize, kind| AsmError { line: lineno, column: col + 1, kind };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == 's' && chars.get(i + 1).is_some_and(|n| matches!(n, '>' | '<' | '/' | '%')) {
            let rest: String = chars[i..].iter().take(4).collect();
            if let Some(op) = OPS.iter().filter(|o| o.starts_with('s')).find(|o| rest.starts_with(**o)) {
                out.push(Token { tok: Tok::Op(op), col: start });
                i += op.len();
                continue;
            }
        }
        if is_ident_start(c) {
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            out.push(Token { tok: Tok::Ident(chars[start..i].iter().collect()), col: start });
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let parsed = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                i128::from_str_radix(hex, 16)
            } else if let Some(bin) = text.strip_prefix("0b") {
                i128::from_str_radix(bin, 2)
            } else {
                text.parse::<i128>()
            };
            match parsed {
                Ok(n) => out.push(Token { tok: Tok::Num(n), col: start }),
                Err(_) => {
                    return Err(err(start, AsmErrorKind::Unexpected { expected: "a number".into(), found: text }));
                }
            }
            continue;
        }
        if c == '%' && chars.get(i + 1).is_some_and(|n| is_ident_start(*n)) {
            i += 1;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            out.push(Token { tok: Tok::Hole(chars[start + 1..i].iter().collect()), col: start });
            continue;
        }
        let rest: String = chars[i..].iter().take(4).collect();
        if let Some(op) = OPS.iter().filter(|o| !o.starts_with('s')).find(|o| rest.starts_with(**o)) {
            out.push(Token { tok: Tok::Op(op), col: start });
            i += op.len();
            continue;
        }
        return Err(err(start, AsmErrorKind::BadChar { ch: c }));
    }
    Ok(out)
}

// ----- parser ---------------------------------------------------------------------

/// An immediate: a number or a hole.
#[derive(Debug, Clone)]
enum Value {
    Num(i128),
    Hole(String),
}

#[derive(Debug, Clone)]
enum Target {
    Label(String, usize),
    Rel(i128),
}

struct Cursor<'a> {
    toks: &'a [Token],
    pos: usize,
    line: usize,
    end_col: usize,
    consts: &'a BTreeMap<String, i64>,
}

type PResult<T> = Result<T, AsmError>;

impl Cursor<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|t| &t.tok)
    }

    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end_col, |t| t.col + 1)
    }

    fn err_here(&self, kind: AsmErrorKind) -> AsmError {
        AsmError { line: self.line, column: self.col(), kind }
    }

    fn unexpected(&self, expected: &str) -> AsmError {
        match self.peek() {
            Some(t) => self.err_here(AsmErrorKind::Unexpected { expected: expected.to_owned(), found: t.text() }),
            None => self.err_here(AsmErrorKind::UnexpectedEnd { expected: expected.to_owned() }),
        }
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.tok.clone());
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if self.is_op(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> PResult<()> {
        if self.eat_op(op) { Ok(()) } else { Err(self.unexpected(&format!("`{op}`"))) }
    }

    fn is_ident(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(i)) if i == s)
    }

    fn eat_ident(&mut self, s: &str) -> bool {
        if self.is_ident(s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_ident(&mut self, s: &str) -> PResult<()> {
        if self.eat_ident(s) { Ok(()) } else { Err(self.unexpected(&format!("`{s}`"))) }
    }

    fn ident(&mut self, what: &str) -> PResult<String> {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn expect_end(&self) -> PResult<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.unexpected("end of line")),
        }
    }

    /// A register token at the cursor, without consuming it.
    fn peek_reg(&self) -> Option<(Reg, bool)> {
        match self.peek() {
            Some(Tok::Ident(s)) => parse_reg_name(s),
            _ => None,
        }
    }

    fn reg(&mut self) -> PResult<(Reg, bool)> {
        match self.peek_reg() {
            Some(r) => {
                self.pos += 1;
                Ok(r)
            }
            None => Err(self.unexpected("a register")),
        }
    }

    fn reg64(&mut self, what: &str) -> PResult<Reg> {
        let col = self.col();
        let (r, w) = self.reg()?;
        if w {
            return Err(AsmError {
                line: self.line,
                column: col,
                kind: AsmErrorKind::WidthMismatch { detail: format!("{what} must be a 64-bit `r` register") },
            });
        }
        Ok(r)
    }

    /// A constant expression: terms joined by `+`/`-`, with unary minus.
    fn expr(&mut self) -> PResult<i128> {
        let mut v = self.term()?;
        loop {
            if self.is_op("+") && !self.next_is_reg(1) {
                self.pos += 1;
                v += self.term()?;
            } else if self.is_op("-") && !self.next_is_reg(1) {
                self.pos += 1;
                v -= self.term()?;
            } else {
                return Ok(v);
            }
        }
    }

    fn next_is_reg(&self, n: usize) -> bool {
        matches!(self.peek_at(n), Some(Tok::Ident(s)) if parse_reg_name(s).is_some())
    }

    fn term(&mut self) -> PResult<i128> {
        if self.eat_op("-") {
            return Ok(-self.term()?);
        }
        if self.eat_op("+") {
            return self.term();
        }
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(n)
            }
            Some(Tok::Ident(name)) if parse_reg_name(&name).is_none() => match self.consts.get(&name) {
                Some(v) => {
                    self.pos += 1;
                    Ok(i128::from(*v))
                }
                None => Err(self.err_here(AsmErrorKind::UndefinedConstant { name })),
            },
            _ => Err(self.unexpected("a number or constant")),
        }
    }

    /// A number, constant expression or `%hole`.
    fn value(&mut self) -> PResult<Value> {
        if let Some(Tok::Hole(h)) = self.peek().cloned() {
            self.pos += 1;
            return Ok(Value::Hole(h));
        }
        self.expr().map(Value::Num)
    }

    /// `*(u32 *)` or `(u32 *)` after the leading `*` was consumed; returns the
    /// size and whether it was signed (`s8`...).
    fn size_cast(&mut self) -> PResult<(Size, bool)> {
        self.expect_op("(")?;
        let name = self.ident("a size (`u8`, `u16`, `u32`, `u64`)")?;
        let r = match name.as_str() {
            "u8" => (Size::B, false),
            "u16" => (Size::H, false),
            "u32" => (Size::W, false),
            "u64" => (Size::DW, false),
            "s8" => (Size::B, true),
            "s16" => (Size::H, true),
            "s32" => (Size::W, true),
            _ => {
                self.pos -= 1;
                return Err(self.unexpected("a size (`u8`, `u16`, `u32`, `u64`)"));
            }
        };
        self.expect_op("*")?;
        self.expect_op(")")?;
        Ok(r)
    }

    /// `rN + off` / `rN - off` / `rN` (no parentheses).
    fn mem_inner(&mut self) -> PResult<(Reg, i16)> {
        let base = self.reg64("a base register")?;
        let col = self.col();
        let off = if self.eat_op("+") {
            self.expr()?
        } else if self.eat_op("-") {
            -self.expr()?
        } else {
            0
        };
        let off = i16::try_from(off).map_err(|_| AsmError {
            line: self.line,
            column: col,
            kind: AsmErrorKind::OutOfRange { value: off, what: "memory offset", range: "i16" },
        })?;
        Ok((base, off))
    }

    /// `(rN + off)`.
    fn mem(&mut self) -> PResult<(Reg, i16)> {
        self.expect_op("(")?;
        let m = self.mem_inner()?;
        self.expect_op(")")?;
        Ok(m)
    }

    /// A jump target, then an optional ignored `<annotation>`.
    fn target(&mut self) -> PResult<Target> {
        let col = self.col();
        let t = if self.is_op("+") || self.is_op("-") {
            let neg = self.is_op("-");
            self.pos += 1;
            let n = match self.next() {
                Some(Tok::Num(n)) => n,
                _ => {
                    self.pos = self.pos.saturating_sub(1);
                    return Err(self.unexpected("a jump offset"));
                }
            };
            Target::Rel(if neg { -n } else { n })
        } else {
            Target::Label(self.ident("a label or `+N`")?, col)
        };
        if self.eat_op("<") {
            while let Some(t) = self.next() {
                if t == Tok::Op(">") {
                    break;
                }
            }
        }
        Ok(t)
    }
}

fn parse_reg_name(s: &str) -> Option<(Reg, bool)> {
    let (w, num) = if let Some(n) = s.strip_prefix('r') {
        (false, n)
    } else if let Some(n) = s.strip_prefix('w') {
        (true, n)
    } else {
        return None;
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || (num.len() > 1 && num.starts_with('0')) {
        return None;
    }
    let n: u8 = num.parse().ok()?;
    Reg::from_u8(n).map(|r| (r, w))
}

fn alu_op_from(op: &str) -> Option<AluOp> {
    Some(match op {
        "+=" => AluOp::Add,
        "-=" => AluOp::Sub,
        "*=" => AluOp::Mul,
        "/=" => AluOp::Div,
        "s/=" => AluOp::SDiv,
        "|=" => AluOp::Or,
        "&=" => AluOp::And,
        "<<=" => AluOp::Lsh,
        ">>=" => AluOp::Rsh,
        "%=" => AluOp::Mod,
        "s%=" => AluOp::SMod,
        "^=" => AluOp::Xor,
        "s>>=" => AluOp::Arsh,
        _ => return None,
    })
}

fn cond_from(op: &str) -> Option<JmpCond> {
    Some(match op {
        "==" => JmpCond::Eq,
        "!=" => JmpCond::Ne,
        ">" => JmpCond::Gt,
        ">=" => JmpCond::Ge,
        "<" => JmpCond::Lt,
        "<=" => JmpCond::Le,
        "s>" => JmpCond::SGt,
        "s>=" => JmpCond::SGe,
        "s<" => JmpCond::SLt,
        "s<=" => JmpCond::SLe,
        "&" => JmpCond::Set,
        _ => return None,
    })
}

fn end_from(name: &str) -> Option<(EndOp, EndBits)> {
    Some(match name {
        "le16" => (EndOp::ToLe, EndBits::B16),
        "le32" => (EndOp::ToLe, EndBits::B32),
        "le64" => (EndOp::ToLe, EndBits::B64),
        "be16" => (EndOp::ToBe, EndBits::B16),
        "be32" => (EndOp::ToBe, EndBits::B32),
        "be64" => (EndOp::ToBe, EndBits::B64),
        "bswap16" => (EndOp::Swap, EndBits::B16),
        "bswap32" => (EndOp::Swap, EndBits::B32),
        "bswap64" => (EndOp::Swap, EndBits::B64),
        _ => return None,
    })
}

/// What one statement produces.
enum Stmt {
    Insn { insn: Instruction, hole: Option<String>, target: Option<Target>, map: Option<String> },
    Raw(Insn),
}

impl Stmt {
    fn plain(insn: Instruction) -> Stmt {
        Stmt::Insn { insn, hole: None, target: None, map: None }
    }
}

const RANGE_I32: (i128, i128, &str) = (i32::MIN as i128, i32::MAX as i128, "i32; 64-bit operations sign-extend it");
const RANGE_32: (i128, i128, &str) = (i32::MIN as i128, u32::MAX as i128, "i32 or u32");

fn check_range(c: &Cursor<'_>, col: usize, v: i128, what: &'static str, r: (i128, i128, &'static str)) -> PResult<i32> {
    if v < r.0 || v > r.1 {
        return Err(AsmError {
            line: c.line,
            column: col,
            kind: AsmErrorKind::OutOfRange { value: v, what, range: r.2 },
        });
    }
    Ok(v as u32 as i32)
}

fn width_of(w: bool) -> Width {
    if w { Width::W32 } else { Width::W64 }
}

fn imm_range(width: Width) -> (i128, i128, &'static str) {
    match width {
        Width::W32 => RANGE_32,
        Width::W64 => RANGE_I32,
    }
}

fn store_range(size: Size) -> (i128, i128, &'static str) {
    match size {
        Size::B => (-128, 255, "i8 or u8"),
        Size::H => (-32768, 65535, "i16 or u16"),
        Size::W => RANGE_32,
        Size::DW => RANGE_I32,
    }
}

fn mismatch(c: &Cursor<'_>, col: usize, detail: &str) -> AsmError {
    AsmError { line: c.line, column: col, kind: AsmErrorKind::WidthMismatch { detail: detail.to_owned() } }
}

fn parse_stmt(c: &mut Cursor<'_>) -> PResult<Stmt> {
    let first_col = c.col();
    let Some(first) = c.peek().cloned() else {
        return Err(c.unexpected("an instruction"));
    };
    let stmt = match first {
        Tok::Ident(ref s) if s == "exit" => {
            c.pos += 1;
            Stmt::plain(Instruction::Exit)
        }
        Tok::Ident(ref s) if s == "call" => {
            c.pos += 1;
            parse_call(c)?
        }
        Tok::Ident(ref s) if s == "goto" || s == "gotol" => {
            c.pos += 1;
            let long = s == "gotol";
            let target = c.target()?;
            let insn = if long { Instruction::JaLong { imm: 0 } } else { Instruction::Ja { off: 0 } };
            Stmt::Insn { insn, hole: None, target: Some(target), map: None }
        }
        Tok::Ident(ref s) if s == "if" => {
            c.pos += 1;
            parse_if(c)?
        }
        Tok::Ident(ref s) if s == "lock" => {
            c.pos += 1;
            c.expect_op("*")?;
            let col = c.col();
            let (size, signed) = c.size_cast()?;
            if signed || !matches!(size, Size::W | Size::DW) {
                return Err(AsmError {
                    line: c.line,
                    column: col,
                    kind: AsmErrorKind::Invalid { reason: "atomic operations are u32 or u64 only".into() },
                });
            }
            let (dst, off) = c.mem()?;
            let op = match c.next() {
                Some(Tok::Op("+=")) => AtomicOp::Add,
                Some(Tok::Op("|=")) => AtomicOp::Or,
                Some(Tok::Op("&=")) => AtomicOp::And,
                Some(Tok::Op("^=")) => AtomicOp::Xor,
                _ => {
                    c.pos -= 1;
                    return Err(c.unexpected("`+=`, `|=`, `&=` or `^=`"));
                }
            };
            let col = c.col();
            let (src, w) = c.reg()?;
            if w && size == Size::DW {
                return Err(mismatch(c, col, "a u64 atomic needs an `r` register"));
            }
            Stmt::plain(Instruction::Atomic { size, op, dst, src, off })
        }
        Tok::Ident(ref s) if s == "ld_pseudo" => {
            c.pos += 1;
            let dst = c.reg64("the destination")?;
            c.expect_op(",")?;
            let col = c.col();
            let p = c.expr()?;
            let pseudo = u8::try_from(p).ok().filter(|p| (1..=crate::insn::pseudo::MAX).contains(p)).ok_or({
                AsmError {
                    line: c.line,
                    column: col,
                    kind: AsmErrorKind::OutOfRange { value: p, what: "pseudo source", range: "1..=6" },
                }
            })?;
            c.expect_op(",")?;
            let col = c.col();
            let lo = c.expr()?;
            let lo = check_range(c, col, lo, "ld_pseudo immediate", RANGE_32)?;
            let hi = if c.eat_op(",") {
                let col = c.col();
                let hi = c.expr()?;
                check_range(c, col, hi, "ld_pseudo upper immediate", RANGE_32)?
            } else {
                0
            };
            Stmt::plain(Instruction::LdImm64 { dst, pseudo, imm: (i64::from(hi) << 32) | i64::from(lo as u32) })
        }
        Tok::Ident(ref s) if s == ".insn" => {
            c.pos += 1;
            let mut f = [0i128; 5];
            for (n, v) in f.iter_mut().enumerate() {
                if n > 0 {
                    c.expect_op(",")?;
                }
                *v = c.expr()?;
            }
            let col = c.col();
            let bad = |what, value, range| AsmError {
                line: c.line,
                column: col,
                kind: AsmErrorKind::OutOfRange { value, what, range },
            };
            Stmt::Raw(Insn {
                code: u8::try_from(f[0]).map_err(|_| bad("code", f[0], "u8"))?,
                dst: u8::try_from(f[1]).ok().filter(|v| *v < 16).ok_or_else(|| bad("dst", f[1], "0..=15"))?,
                src: u8::try_from(f[2]).ok().filter(|v| *v < 16).ok_or_else(|| bad("src", f[2], "0..=15"))?,
                off: i16::try_from(f[3]).map_err(|_| bad("off", f[3], "i16"))?,
                imm: i32::try_from(f[4])
                    .or_else(|_| u32::try_from(f[4]).map(|v| v as i32))
                    .map_err(|_| bad("imm", f[4], "i32 or u32"))?,
            })
        }
        Tok::Op("*") => {
            c.pos += 1;
            let (size, signed) = c.size_cast()?;
            if signed {
                return Err(c.unexpected("an unsigned size"));
            }
            let (dst, off) = c.mem()?;
            c.expect_op("=")?;
            let col = c.col();
            if let Some((src, w)) = c.peek_reg() {
                c.pos += 1;
                if w && size == Size::DW {
                    return Err(mismatch(c, col, "a u64 store needs an `r` register"));
                }
                Stmt::plain(Instruction::StoreReg { size, dst, src, off })
            } else {
                match c.value()? {
                    Value::Num(v) => Stmt::plain(Instruction::Store {
                        size,
                        dst,
                        off,
                        imm: check_range(c, col, v, "store immediate", store_range(size))?,
                    }),
                    Value::Hole(h) => Stmt::Insn {
                        insn: Instruction::Store { size, dst, off, imm: 0 },
                        hole: Some(h),
                        target: None,
                        map: None,
                    },
                }
            }
        }
        Tok::Ident(ref s) if parse_reg_name(s).is_some() => parse_assign(c)?,
        other => {
            return Err(AsmError {
                line: c.line,
                column: first_col,
                kind: AsmErrorKind::UnknownMnemonic { found: other.text() },
            });
        }
    };
    c.expect_end()?;
    Ok(stmt)
}

fn parse_call(c: &mut Cursor<'_>) -> PResult<Stmt> {
    let col = c.col();
    if c.eat_ident("pc") {
        let neg = if c.eat_op("-") {
            true
        } else {
            c.expect_op("+")?;
            false
        };
        let n = c.expr()?;
        let n = check_range(c, col, if neg { -n } else { n }, "call offset", RANGE_I32)?;
        return Ok(Stmt::plain(Instruction::Call(CallTarget::Local(n))));
    }
    if c.eat_ident("kfunc") {
        let col = c.col();
        let n = c.expr()?;
        let n = check_range(c, col, n, "kfunc id", RANGE_I32)?;
        return Ok(Stmt::plain(Instruction::Call(CallTarget::Kfunc(n))));
    }
    if let Some(Tok::Ident(name)) = c.peek().cloned()
        && !c.consts.contains_key(&name)
    {
        c.pos += 1;
        return match helpers::by_name(&name) {
            Some(h) => Ok(Stmt::plain(Instruction::call(h.id))),
            None => Err(AsmError { line: c.line, column: col, kind: AsmErrorKind::UnknownHelper { name } }),
        };
    }
    let n = c.expr()?;
    let n = check_range(c, col, n, "helper id", RANGE_I32)?;
    Ok(Stmt::plain(Instruction::call(n)))
}

fn parse_if(c: &mut Cursor<'_>) -> PResult<Stmt> {
    let (dst, w) = c.reg()?;
    let width = width_of(w);
    let cond = match c.peek() {
        Some(Tok::Op(o)) => cond_from(o),
        _ => None,
    };
    let Some(cond) = cond else {
        return Err(c.unexpected("a comparison operator"));
    };
    c.pos += 1;
    let col = c.col();
    let (src, hole) = if let Some((r, rw)) = c.peek_reg() {
        c.pos += 1;
        if rw != w {
            return Err(mismatch(c, col, "both operands of a comparison must be `r` or both `w`"));
        }
        (Operand::Reg(r), None)
    } else {
        match c.value()? {
            Value::Num(v) => (Operand::Imm(check_range(c, col, v, "comparison immediate", imm_range(width))?), None),
            Value::Hole(h) => (Operand::Imm(0), Some(h)),
        }
    };
    c.expect_ident("goto")?;
    let target = c.target()?;
    Ok(Stmt::Insn { insn: Instruction::Jmp { width, cond, dst, src, off: 0 }, hole, target: Some(target), map: None })
}

fn parse_assign(c: &mut Cursor<'_>) -> PResult<Stmt> {
    let dst_col = c.col();
    let (dst, w) = c.reg()?;
    let width = width_of(w);
    let op = match c.next() {
        Some(Tok::Op(o)) => o,
        _ => {
            c.pos -= 1;
            return Err(c.unexpected("`=` or an assignment operator"));
        }
    };
    if let Some(alu) = alu_op_from(op) {
        let col = c.col();
        if let Some((src, sw)) = c.peek_reg() {
            c.pos += 1;
            if sw != w {
                return Err(mismatch(c, col, "both operands must be `r` or both `w`"));
            }
            return Ok(Stmt::plain(Instruction::Alu { width, op: alu, dst, src: Operand::Reg(src) }));
        }
        return Ok(match c.value()? {
            Value::Num(v) => Stmt::plain(Instruction::Alu {
                width,
                op: alu,
                dst,
                src: Operand::Imm(check_range(c, col, v, "ALU immediate", imm_range(width))?),
            }),
            Value::Hole(h) => Stmt::Insn {
                insn: Instruction::Alu { width, op: alu, dst, src: Operand::Imm(0) },
                hole: Some(h),
                target: None,
                map: None,
            },
        });
    }
    if op != "=" {
        c.pos -= 1;
        return Err(c.unexpected("`=` or an assignment operator"));
    }
    let col = c.col();
    // dst = -dst
    if c.is_op("-") && c.next_is_reg(1) {
        c.pos += 1;
        let ncol = c.col();
        let (src, sw) = c.reg()?;
        if src != dst || sw != w {
            return Err(AsmError {
                line: c.line,
                column: ncol,
                kind: AsmErrorKind::Invalid { reason: "negation is in place: write `rN = -rN`".into() },
            });
        }
        return Ok(Stmt::plain(Instruction::Neg { width, dst }));
    }
    // loads
    if c.eat_op("*") {
        let scol = c.col();
        let (size, signed) = c.size_cast()?;
        if c.eat_ident("skb") {
            if w || dst != Reg::R0 || signed || size == Size::DW {
                return Err(AsmError {
                    line: c.line,
                    column: dst_col,
                    kind: AsmErrorKind::Invalid {
                        reason: "legacy packet loads are `r0 = *(u8|u16|u32 *)skb[...]`".into(),
                    },
                });
            }
            c.expect_op("[")?;
            let icol = c.col();
            let insn = if let Some((src, sw)) = c.peek_reg() {
                c.pos += 1;
                if sw {
                    return Err(mismatch(c, icol, "the index must be an `r` register"));
                }
                let imm = if c.eat_op("+") {
                    c.expr()?
                } else if c.eat_op("-") {
                    -c.expr()?
                } else {
                    0
                };
                Instruction::LdInd { size, src, imm: check_range(c, icol, imm, "packet offset", RANGE_I32)? }
            } else {
                let imm = c.expr()?;
                Instruction::LdAbs { size, imm: check_range(c, icol, imm, "packet offset", RANGE_I32)? }
            };
            c.expect_op("]")?;
            return Ok(Stmt::plain(insn));
        }
        let (src, off) = c.mem()?;
        if signed {
            if w {
                return Err(mismatch(c, dst_col, "sign-extending loads write an `r` register"));
            }
            return Ok(Stmt::plain(Instruction::LoadSx { size, dst, src, off }));
        }
        if w && size == Size::DW {
            return Err(mismatch(c, scol, "a u64 load needs an `r` register"));
        }
        return Ok(Stmt::plain(Instruction::Load { size, dst, src, off }));
    }
    // movsx: (s8)src
    if c.is_op("(") && matches!(c.peek_at(1), Some(Tok::Ident(s)) if s == "s8" || s == "s16" || s == "s32") {
        c.pos += 1;
        let ext = match c.ident("`s8`, `s16` or `s32`")?.as_str() {
            "s8" => SignExt::S8,
            "s16" => SignExt::S16,
            _ => SignExt::S32,
        };
        c.expect_op(")")?;
        let scol = c.col();
        let (src, sw) = c.reg()?;
        if sw != w {
            return Err(mismatch(c, scol, "both operands must be `r` or both `w`"));
        }
        if w && ext == SignExt::S32 {
            return Err(mismatch(c, scol, "32-bit movsx extends from s8 or s16 only"));
        }
        return Ok(Stmt::plain(Instruction::MovSx { width, ext, dst, src }));
    }
    if let Some(Tok::Ident(name)) = c.peek().cloned() {
        if let Some((op, bits)) = end_from(&name) {
            c.pos += 1;
            let scol = c.col();
            let (src, sw) = c.reg()?;
            if w || sw || src != dst {
                return Err(mismatch(c, scol, "byte swaps are in place on `r` registers: `rN = be16 rN`"));
            }
            return Ok(Stmt::plain(Instruction::End { op, bits, dst }));
        }
        if let Some(stmt) = parse_atomic_call(c, &name, dst, w, dst_col)? {
            return Ok(stmt);
        }
        if name == "map" && c.peek_at(1) == Some(&Tok::Op("[")) {
            c.pos += 2;
            let map = c.ident("a map name")?;
            c.expect_op("]")?;
            c.expect_ident("ll")?;
            if w {
                return Err(mismatch(c, dst_col, "`ll` loads need an `r` register"));
            }
            return Ok(Stmt::Insn { insn: Instruction::ld_imm64(dst, 0), hole: None, target: None, map: Some(map) });
        }
    }
    if let Some((src, sw)) = c.peek_reg() {
        c.pos += 1;
        if sw != w {
            return Err(mismatch(c, col, "both operands must be `r` or both `w`"));
        }
        return Ok(Stmt::plain(Instruction::Alu { width, op: AluOp::Mov, dst, src: Operand::Reg(src) }));
    }
    let v = c.value()?;
    if c.eat_ident("ll") {
        if w {
            return Err(mismatch(c, dst_col, "`ll` loads need an `r` register"));
        }
        return Ok(match v {
            Value::Num(n) => {
                if n < i128::from(i64::MIN) || n > i128::from(u64::MAX) {
                    return Err(AsmError {
                        line: c.line,
                        column: col,
                        kind: AsmErrorKind::OutOfRange { value: n, what: "64-bit immediate", range: "i64 or u64" },
                    });
                }
                Stmt::plain(Instruction::ld_imm64(dst, n as u64 as i64))
            }
            Value::Hole(h) => {
                Stmt::Insn { insn: Instruction::ld_imm64(dst, 0), hole: Some(h), target: None, map: None }
            }
        });
    }
    Ok(match v {
        Value::Num(n) => Stmt::plain(Instruction::Alu {
            width,
            op: AluOp::Mov,
            dst,
            src: Operand::Imm(check_range(c, col, n, "move immediate", imm_range(width))?),
        }),
        Value::Hole(h) => Stmt::Insn {
            insn: Instruction::Alu { width, op: AluOp::Mov, dst, src: Operand::Imm(0) },
            hole: Some(h),
            target: None,
            map: None,
        },
    })
}

/// `atomic_fetch_*((uN *)(rX + off), src)`, `xchg_64(rX + off, src)`,
/// `cmpxchg_64(rX + off, r0, src)` and their 32-bit forms.
fn parse_atomic_call(c: &mut Cursor<'_>, name: &str, dst: Reg, w: bool, dst_col: usize) -> PResult<Option<Stmt>> {
    let fetch = match name {
        "atomic_fetch_add" => Some(AtomicOp::FetchAdd),
        "atomic_fetch_or" => Some(AtomicOp::FetchOr),
        "atomic_fetch_and" => Some(AtomicOp::FetchAnd),
        "atomic_fetch_xor" => Some(AtomicOp::FetchXor),
        _ => None,
    };
    let (op, size, mem_reg, off) = if let Some(op) = fetch {
        c.pos += 1;
        c.expect_op("(")?;
        let scol = c.col();
        let (size, signed) = c.size_cast()?;
        if signed || !matches!(size, Size::W | Size::DW) {
            return Err(AsmError {
                line: c.line,
                column: scol,
                kind: AsmErrorKind::Invalid { reason: "atomic operations are u32 or u64 only".into() },
            });
        }
        let (base, off) = c.mem()?;
        (op, size, base, off)
    } else {
        let (op, size) = match name {
            "xchg_64" => (AtomicOp::Xchg, Size::DW),
            "xchg32_32" => (AtomicOp::Xchg, Size::W),
            "cmpxchg_64" => (AtomicOp::CmpXchg, Size::DW),
            "cmpxchg32_32" => (AtomicOp::CmpXchg, Size::W),
            _ => return Ok(None),
        };
        c.pos += 1;
        c.expect_op("(")?;
        let (base, off) = c.mem_inner()?;
        (op, size, base, off)
    };
    let want_w = size == Size::W;
    if w != want_w {
        return Err(mismatch(c, dst_col, "u32 atomics use `w` registers, u64 atomics `r` registers"));
    }
    if op == AtomicOp::CmpXchg {
        c.expect_op(",")?;
        let col = c.col();
        let (r0, r0w) = c.reg()?;
        if r0 != Reg::R0 || r0w != want_w || dst != Reg::R0 {
            return Err(AsmError {
                line: c.line,
                column: col,
                kind: AsmErrorKind::Invalid {
                    reason: "cmpxchg compares and returns in r0: `r0 = cmpxchg_64(rX + off, r0, rY)`".into(),
                },
            });
        }
    }
    c.expect_op(",")?;
    let col = c.col();
    let (src, sw) = c.reg()?;
    if sw != want_w {
        return Err(mismatch(c, col, "u32 atomics use `w` registers, u64 atomics `r` registers"));
    }
    if op != AtomicOp::CmpXchg && src != dst {
        return Err(AsmError {
            line: c.line,
            column: col,
            kind: AsmErrorKind::Invalid {
                reason: "fetching atomics return into their source register: `r2 = xchg_64(r1 + 0, r2)`".into(),
            },
        });
    }
    c.expect_op(")")?;
    Ok(Some(Stmt::plain(Instruction::Atomic { size, op, dst: mem_reg, src, off })))
}

// ----- directives and driver ------------------------------------------------------

fn parse_equ(c: &mut Cursor<'_>) -> PResult<(String, i64, usize)> {
    let col = c.col();
    let name = c.ident("a constant name")?;
    if parse_reg_name(&name).is_some() {
        return Err(AsmError {
            line: c.line,
            column: col,
            kind: AsmErrorKind::Invalid { reason: format!("`{name}` is a register name") },
        });
    }
    c.expect_op(",")?;
    let vcol = c.col();
    let v = c.expr()?;
    c.expect_end()?;
    let v = i64::try_from(v).or_else(|_| u64::try_from(v).map(|u| u as i64)).map_err(|_| AsmError {
        line: c.line,
        column: vcol,
        kind: AsmErrorKind::OutOfRange { value: v, what: "constant", range: "i64 or u64" },
    })?;
    Ok((name, v, col))
}

fn parse_map(c: &mut Cursor<'_>) -> PResult<MapDef> {
    let name = c.ident("a map name")?;
    c.expect_op(",")?;
    let kcol = c.col();
    let kind_name = c.ident("a map kind")?;
    let Some(kind) = MapKind::from_name(&kind_name) else {
        return Err(AsmError {
            line: c.line,
            column: kcol,
            kind: AsmErrorKind::Unexpected {
                expected: "a map kind (hash, array, lpm_trie, percpu_array, percpu_hash, lru_hash)".into(),
                found: kind_name,
            },
        });
    };
    let mut fields: BTreeMap<String, u32> = BTreeMap::new();
    while c.eat_op(",") {
        let fcol = c.col();
        let key = c.ident("`key_size`, `value_size`, `max_entries` or `flags`")?;
        if !matches!(key.as_str(), "key_size" | "value_size" | "max_entries" | "flags") {
            return Err(AsmError {
                line: c.line,
                column: fcol,
                kind: AsmErrorKind::Unexpected {
                    expected: "`key_size`, `value_size`, `max_entries` or `flags`".into(),
                    found: key,
                },
            });
        }
        c.expect_op("=")?;
        let vcol = c.col();
        let v = c.expr()?;
        let v = u32::try_from(v).map_err(|_| AsmError {
            line: c.line,
            column: vcol,
            kind: AsmErrorKind::OutOfRange { value: v, what: "map attribute", range: "u32" },
        })?;
        fields.insert(key, v);
    }
    c.expect_end()?;
    let get = |k: &str| fields.get(k).copied().unwrap_or(0);
    let mut def = MapDef {
        name,
        kind,
        key_size: get("key_size"),
        value_size: get("value_size"),
        max_entries: get("max_entries"),
        flags: get("flags"),
    };
    if kind == MapKind::LpmTrie && !fields.contains_key("flags") {
        def.flags = crate::maps::BPF_F_NO_PREALLOC;
    }
    def.validate().map_err(|source| AsmError { line: c.line, column: 1, kind: AsmErrorKind::BadMap { source } })?;
    Ok(def)
}

struct LabelUse {
    label: Label,
    defined: Option<usize>,
    first_use: Option<(usize, usize)>,
}

/// Assembles `source` into a program called `name`.
///
/// # Errors
/// Every error found, each with line and column.
pub fn assemble(name: &str, source: &str) -> Result<Assembly, AsmErrors> {
    let mut b = ProgramBuilder::new(name);
    let mut errors = Vec::new();
    let mut consts: BTreeMap<String, i64> = BTreeMap::new();
    let mut maps: Vec<MapDef> = Vec::new();
    let mut labels: BTreeMap<String, LabelUse> = BTreeMap::new();
    let mut insn_pos: BTreeMap<usize, (usize, usize)> = BTreeMap::new();

    for (n, raw_line) in source.lines().enumerate() {
        let lineno = n + 1;
        let text = strip_comment(raw_line);
        let toks = match lex(text, lineno) {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let end_col = text.chars().count() + 1;
        let mut start = 0;
        // leading `label:` definitions
        while let (Some(Token { tok: Tok::Ident(l), col }), Some(Token { tok: Tok::Op(":"), .. })) =
            (toks.get(start), toks.get(start + 1))
        {
            if !is_identifier(l) || parse_reg_name(l).is_some() {
                errors.push(AsmError {
                    line: lineno,
                    column: col + 1,
                    kind: AsmErrorKind::Invalid { reason: format!("`{l}` cannot be a label") },
                });
            } else {
                let entry = labels.entry(l.clone()).or_insert_with(|| LabelUse {
                    label: b.new_label(l),
                    defined: None,
                    first_use: None,
                });
                if let Some(first_line) = entry.defined {
                    errors.push(AsmError {
                        line: lineno,
                        column: col + 1,
                        kind: AsmErrorKind::DuplicateLabel { name: l.clone(), first_line },
                    });
                } else {
                    entry.defined = Some(lineno);
                    b.bind(entry.label);
                }
            }
            start += 2;
        }
        let toks = &toks[start..];
        if toks.is_empty() {
            continue;
        }
        let mut c = Cursor { toks, pos: 0, line: lineno, end_col, consts: &consts };
        let result: PResult<Option<(String, i64)>> = (|| {
            if c.eat_ident(".equ") || c.eat_ident(".set") {
                let (k, v, col) = parse_equ(&mut c)?;
                if c.consts.contains_key(&k) {
                    return Err(AsmError {
                        line: lineno,
                        column: col,
                        kind: AsmErrorKind::DuplicateConstant { name: k },
                    });
                }
                return Ok(Some((k, v)));
            }
            if c.eat_ident(".map") {
                let def = parse_map(&mut c)?;
                if maps.iter().any(|m| m.name == def.name) {
                    return Err(AsmError {
                        line: lineno,
                        column: 1,
                        kind: AsmErrorKind::DuplicateMap { name: def.name },
                    });
                }
                maps.push(def);
                return Ok(None);
            }
            let col = c.col();
            let stmt = parse_stmt(&mut c)?;
            let at = b.pc();
            insn_pos.insert(at, (lineno, col));
            match stmt {
                Stmt::Raw(slot) => {
                    b.emit_raw(&[slot]);
                }
                Stmt::Insn { insn, hole, target, map } => match (target, hole, map) {
                    (Some(Target::Label(l, lcol)), hole, _) => {
                        let entry = labels.entry(l.clone()).or_insert_with(|| LabelUse {
                            label: b.new_label(&l),
                            defined: None,
                            first_use: None,
                        });
                        entry.first_use.get_or_insert((lineno, lcol));
                        let label = entry.label;
                        match insn {
                            Instruction::JaLong { .. } => {
                                b.ja_long(label);
                            }
                            Instruction::Ja { .. } => {
                                b.ja(label);
                            }
                            Instruction::Jmp { width, cond, dst, src, .. } => {
                                b.jump(width, cond, dst, src, label);
                            }
                            other => {
                                b.emit(other);
                            }
                        }
                        if let Some(h) = hole {
                            add_hole(&mut b, at, &h);
                        }
                    }
                    (Some(Target::Rel(rel)), hole, _) => {
                        let insn = match insn {
                            Instruction::JaLong { .. } => {
                                Instruction::JaLong { imm: check_range(&c, col, rel, "jump offset", RANGE_I32)? }
                            }
                            Instruction::Ja { .. } => Instruction::Ja { off: check_off(&c, col, rel)? },
                            Instruction::Jmp { width, cond, dst, src, .. } => {
                                Instruction::Jmp { width, cond, dst, src, off: check_off(&c, col, rel)? }
                            }
                            other => other,
                        };
                        b.emit(insn);
                        if let Some(h) = hole {
                            add_hole(&mut b, at, &h);
                        }
                    }
                    (None, Some(h), _) => {
                        b.hole(insn, &h);
                    }
                    (None, None, Some(m)) => {
                        if let Instruction::LdImm64 { dst, .. } = insn {
                            b.ld_map(dst, &m);
                        }
                    }
                    (None, None, None) => {
                        b.emit(insn);
                    }
                },
            }
            Ok(None)
        })();
        match result {
            Ok(Some((k, v))) => {
                consts.insert(k, v);
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    for (name, l) in &labels {
        if l.defined.is_none() {
            let (line, column) = l.first_use.unwrap_or((0, 0));
            errors.push(AsmError { line, column, kind: AsmErrorKind::UndefinedLabel { name: name.clone() } });
            // bind it at the end so the builder does not report it again
            b.bind(l.label);
        }
    }
    let undefined_reported = !errors.is_empty();
    let program = match b.finish() {
        Ok(p) => Some(p),
        Err(be) => {
            for e in be.errors {
                let (line, column) = match &e {
                    BuildError::JumpOutOfRange { insn, .. }
                    | BuildError::Encode { insn, .. }
                    | BuildError::HoleWithoutImmediate { insn, .. }
                    | BuildError::UnboundLabel { insn, .. } => insn_pos.get(insn).copied().unwrap_or((0, 0)),
                    _ => (0, 0),
                };
                let kind = match e {
                    BuildError::JumpOutOfRange { label, distance, .. } => {
                        AsmErrorKind::JumpOutOfRange { label, distance }
                    }
                    other => AsmErrorKind::Invalid { reason: other.to_string() },
                };
                errors.push(AsmError { line, column, kind });
            }
            None
        }
    };
    match program {
        Some(program) if !undefined_reported && errors.is_empty() => Ok(Assembly { program, maps, constants: consts }),
        _ => {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(AsmErrors { errors })
        }
    }
}

fn check_off(c: &Cursor<'_>, col: usize, rel: i128) -> PResult<i16> {
    i16::try_from(rel).map_err(|_| AsmError {
        line: c.line,
        column: col,
        kind: AsmErrorKind::OutOfRange { value: rel, what: "jump offset", range: "i16" },
    })
}

/// Records a hole on an already emitted jump (the builder's `hole` emits).
fn add_hole(b: &mut ProgramBuilder, at: usize, name: &str) {
    b.add_hole_at(at, name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::decode_all;

    #[test]
    fn assembles_a_small_program() {
        let src = "
            .equ ETH_HLEN, 14   // ethernet header
            r2 = *(u32 *)(r1 + 76)
            r3 = *(u32 *)(r1 + 80)
            r4 = r2
            r4 += ETH_HLEN + 20
            if r4 > r3 goto out   ; bounds
            w1 = %tunnel_ifindex
            r1 = map[src_class] ll
          out:
            r0 = 0
            exit
        ";
        let a = assemble("p", src).expect("assembles");
        let insns = decode_all(&a.program.insns).expect("decodes");
        assert_eq!(insns.len(), 9);
        assert_eq!(insns[4].1, Instruction::jmp_reg(JmpCond::Gt, Reg::R4, Reg::R3, 3));
        assert_eq!(a.program.holes[0].name, "tunnel_ifindex");
        assert_eq!(a.program.map_relocs[0].map, "src_class");
        assert_eq!(a.constants.get("ETH_HLEN"), Some(&14));
    }

    #[test]
    fn reports_every_error_with_position() {
        let src = "r0 = 0\n r1 = r2 +\nif r1 > 5 goto nowhere\nw1 += r2\nr11 = 1\n";
        let e = assemble("p", src).expect_err("fails");
        let lines: Vec<usize> = e.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5], "{e}");
        assert!(matches!(e.errors[1].kind, AsmErrorKind::UndefinedLabel { .. }));
        assert_eq!(e.errors[1].column, 16);
    }

    #[test]
    fn sixty_four_bit_immediates_must_fit_i32() {
        let e = assemble("p", "if r1 == 0xc0000202 goto +0\nexit").expect_err("fails");
        assert!(matches!(e.errors[0].kind, AsmErrorKind::OutOfRange { .. }));
        assert!(assemble("p", "if w1 == 0xc0000202 goto +0\nexit").is_ok());
    }
}
