//! Parser: the tokens of one statement into an [`Instruction`] (with its
//! label target, hole or map reference), range-checked.

use std::collections::BTreeMap;

use super::lexer::{Tok, Token};
use super::{AsmError, AsmErrorKind};
use crate::helpers;
use crate::insn::{
    AluOp, AtomicOp, CallTarget, EndBits, EndOp, Insn, Instruction, JmpCond, Operand, Reg, SignExt, Size, Width,
};

/// An immediate: a number or a hole.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Num(i128),
    Hole(String),
}

#[derive(Debug, Clone)]
pub(super) enum Target {
    Label(String, usize),
    Rel(i128),
}

pub(super) struct Cursor<'a> {
    pub(super) toks: &'a [Token],
    pub(super) pos: usize,
    pub(super) line: usize,
    pub(super) end_col: usize,
    pub(super) consts: &'a BTreeMap<String, i64>,
}

pub(super) type PResult<T> = Result<T, AsmError>;

impl Cursor<'_> {
    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    pub(super) fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|t| &t.tok)
    }

    pub(super) fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end_col, |t| t.col + 1)
    }

    pub(super) fn err_here(&self, kind: AsmErrorKind) -> AsmError {
        AsmError { line: self.line, column: self.col(), kind, expansion: Vec::new() }
    }

    pub(super) fn unexpected(&self, expected: &str) -> AsmError {
        match self.peek() {
            Some(t) => self.err_here(AsmErrorKind::Unexpected { expected: expected.to_owned(), found: t.text() }),
            None => self.err_here(AsmErrorKind::UnexpectedEnd { expected: expected.to_owned() }),
        }
    }

    pub(super) fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.tok.clone());
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    pub(super) fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }

    pub(super) fn eat_op(&mut self, op: &str) -> bool {
        if self.is_op(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn expect_op(&mut self, op: &str) -> PResult<()> {
        if self.eat_op(op) { Ok(()) } else { Err(self.unexpected(&format!("`{op}`"))) }
    }

    pub(super) fn is_ident(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(i)) if i == s)
    }

    pub(super) fn eat_ident(&mut self, s: &str) -> bool {
        if self.is_ident(s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn expect_ident(&mut self, s: &str) -> PResult<()> {
        if self.eat_ident(s) { Ok(()) } else { Err(self.unexpected(&format!("`{s}`"))) }
    }

    pub(super) fn ident(&mut self, what: &str) -> PResult<String> {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    pub(super) fn expect_end(&self) -> PResult<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.unexpected("end of line")),
        }
    }

    /// A register token at the cursor, without consuming it.
    pub(super) fn peek_reg(&self) -> Option<(Reg, bool)> {
        match self.peek() {
            Some(Tok::Ident(s)) => parse_reg_name(s),
            _ => None,
        }
    }

    pub(super) fn reg(&mut self) -> PResult<(Reg, bool)> {
        match self.peek_reg() {
            Some(r) => {
                self.pos += 1;
                Ok(r)
            }
            None => Err(self.unexpected("a register")),
        }
    }

    pub(super) fn reg64(&mut self, what: &str) -> PResult<Reg> {
        let col = self.col();
        let (r, w) = self.reg()?;
        if w {
            return Err(AsmError {
                line: self.line,
                column: col,
                kind: AsmErrorKind::WidthMismatch { detail: format!("{what} must be a 64-bit `r` register") },
                expansion: Vec::new(),
            });
        }
        Ok(r)
    }

    /// A constant expression: terms joined by `+`/`-`, with unary minus.
    pub(super) fn expr(&mut self) -> PResult<i128> {
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

    pub(super) fn next_is_reg(&self, n: usize) -> bool {
        matches!(self.peek_at(n), Some(Tok::Ident(s)) if parse_reg_name(s).is_some())
    }

    pub(super) fn term(&mut self) -> PResult<i128> {
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
    pub(super) fn value(&mut self) -> PResult<Value> {
        if let Some(Tok::Hole(h)) = self.peek().cloned() {
            self.pos += 1;
            return Ok(Value::Hole(h));
        }
        self.expr().map(Value::Num)
    }

    /// `*(u32 *)` or `(u32 *)` after the leading `*` was consumed; returns the
    /// size and whether it was signed (`s8`...).
    pub(super) fn size_cast(&mut self) -> PResult<(Size, bool)> {
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
    pub(super) fn mem_inner(&mut self) -> PResult<(Reg, i16)> {
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
            expansion: Vec::new(),
        })?;
        Ok((base, off))
    }

    /// `(rN + off)`.
    pub(super) fn mem(&mut self) -> PResult<(Reg, i16)> {
        self.expect_op("(")?;
        let m = self.mem_inner()?;
        self.expect_op(")")?;
        Ok(m)
    }

    /// A jump target, then an optional ignored `<annotation>`.
    pub(super) fn target(&mut self) -> PResult<Target> {
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

pub(super) fn parse_reg_name(s: &str) -> Option<(Reg, bool)> {
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
pub(super) enum Stmt {
    Insn { insn: Instruction, hole: Option<String>, target: Option<Target>, map: Option<String> },
    Raw(Insn),
}

impl Stmt {
    pub(super) fn plain(insn: Instruction) -> Stmt {
        Stmt::Insn { insn, hole: None, target: None, map: None }
    }
}

pub(super) const RANGE_I32: (i128, i128, &str) =
    (i32::MIN as i128, i32::MAX as i128, "i32; 64-bit operations sign-extend it");
const RANGE_32: (i128, i128, &str) = (i32::MIN as i128, u32::MAX as i128, "i32 or u32");

pub(super) fn check_range(
    c: &Cursor<'_>,
    col: usize,
    v: i128,
    what: &'static str,
    r: (i128, i128, &'static str),
) -> PResult<i32> {
    if v < r.0 || v > r.1 {
        return Err(AsmError {
            line: c.line,
            column: col,
            kind: AsmErrorKind::OutOfRange { value: v, what, range: r.2 },
            expansion: Vec::new(),
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
    AsmError {
        line: c.line,
        column: col,
        kind: AsmErrorKind::WidthMismatch { detail: detail.to_owned() },
        expansion: Vec::new(),
    }
}

pub(super) fn parse_stmt(c: &mut Cursor<'_>) -> PResult<Stmt> {
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
                    expansion: Vec::new(),
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
                    expansion: Vec::new(),
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
                expansion: Vec::new(),
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
                expansion: Vec::new(),
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
            None => Err(AsmError {
                line: c.line,
                column: col,
                kind: AsmErrorKind::UnknownHelper { name },
                expansion: Vec::new(),
            }),
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
                expansion: Vec::new(),
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
                    expansion: Vec::new(),
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
                        expansion: Vec::new(),
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
                expansion: Vec::new(),
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
                expansion: Vec::new(),
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
            expansion: Vec::new(),
        });
    }
    c.expect_op(")")?;
    Ok(Some(Stmt::plain(Instruction::Atomic { size, op, dst: mem_reg, src, off })))
}
