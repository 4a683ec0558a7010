//! Assembler for LLVM's BPF assembly syntax (the syntax [`crate::disasm`]
//! prints), with labels, named constants, named holes and map references.
//!
//! Syntax (one statement per line; see `bpf/README.md` for the full list):
//! - comments: `//`, `;` or `#` to the end of the line;
//! - labels: `name:` on its own line or before an instruction;
//! - constants: `.equ NAME, EXPR` (`.set` may set a name again); `EXPR` is a sum of numbers
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
//! - `.insn CODE, DST, SRC, OFF, IMM` emits one raw slot;
//! - macros, as GNU as and LLVM's integrated assembler read them:
//!   `.macro NAME p1, p2=default, p3:req, p4:vararg` … `.endm` with `\p1`
//!   substituted, `\@` (the number of the expansion: unique labels) and `\()`
//!   (a separator); invoked as `NAME a, b` or `NAME p2=b`; `.rept EXPR` …
//!   `.endr`; `.irp P, a, b, c` … `.endr`. They nest, and a macro may invoke
//!   others. See `macros.rs` for the limits.
//!
//! Layout: `lexer.rs` (a line into tokens), `macros.rs` (expansion, between
//! the source and the parser), `parser.rs` (a statement into an instruction),
//! and the directives and driver here.
//!
//! Contract: every error carries its 1-based line and column in the source as
//! written (inside an expansion: in the body, with the invocation sites in
//! [`AsmError::expansion`]); all errors of a source are reported, not only the
//! first; no input panics or hangs. Immediates are range-checked
//! against how the instruction uses them: 64-bit ALU and JMP immediates are
//! sign-extended, so they must fit `i32`; 32-bit ones may also be any `u32`.

use std::collections::{BTreeMap, BTreeSet};

use crate::builder::{BuildError, Label, ProgramBuilder};
use crate::insn::Instruction;
use crate::maps::{MapDef, MapDefError, MapKind, is_identifier};
use crate::program::Program;

mod lexer;
mod macros;
mod parser;

use lexer::{Tok, Token, lex};
use parser::{Cursor, PResult, RANGE_I32, Stmt, Target, check_range, parse_reg_name, parse_stmt};

/// The result of assembling one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembly {
    /// The program.
    pub program: Program,
    /// Maps declared with `.map`, in declaration order.
    pub maps: Vec<MapDef>,
    /// Constants defined with `.equ`.
    pub constants: BTreeMap<String, i64>,
    /// The 1-based source line of each instruction slot of `program` (both
    /// slots of an `ld_imm64`): the statement's line, or for an instruction a
    /// macro, `.rept` or `.irp` produced, the line of the outermost
    /// invocation or directive in the source as written.
    pub lines: Vec<usize>,
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
    /// `\\name` that names no parameter of an enclosing `.macro` or `.irp`
    /// (or `\\@` outside a macro).
    #[error("`\\{name}` is not a parameter of an enclosing `.macro` or `.irp`")]
    UnknownMacroParameter {
        /// The name after the backslash.
        name: String,
    },
    /// A malformed `.macro` or `.irp` header.
    #[error("invalid macro: {reason}")]
    BadMacro {
        /// Explanation.
        reason: String,
    },
    /// A macro defined twice.
    #[error("macro `{name}` already defined on line {first_line}")]
    DuplicateMacro {
        /// Macro name.
        name: String,
        /// Line of the first definition.
        first_line: usize,
    },
    /// Arguments that do not fit the macro's parameters.
    #[error("macro `{name}`: {reason}")]
    MacroArguments {
        /// Macro name.
        name: String,
        /// Explanation.
        reason: String,
    },
    /// A `.macro`, `.rept` or `.irp` whose end never comes.
    #[error("`{directive}` without `{end}`")]
    Unterminated {
        /// The opening directive.
        directive: &'static str,
        /// The directive that should close it.
        end: &'static str,
    },
    /// An `.endm` or `.endr` with nothing open.
    #[error("`{directive}` without `{opener}`")]
    UnmatchedEnd {
        /// The closing directive.
        directive: String,
        /// What should have opened it.
        opener: &'static str,
    },
    /// Expansions nested deeper than the limit (a macro that invokes itself).
    #[error("expansions nest deeper than {limit} levels (does a macro invoke itself?)")]
    ExpansionTooDeep {
        /// The limit.
        limit: usize,
    },
    /// Expansions produced more lines than the limit.
    #[error("expansions produce more than {limit} lines")]
    ExpansionTooLarge {
        /// The limit.
        limit: usize,
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
#[error("{line}:{column}: {kind}{}", sites(.expansion))]
pub struct AsmError {
    /// 1-based line in the source as written (for a line produced by a
    /// macro, `.rept` or `.irp`: the line of its body).
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What went wrong.
    pub kind: AsmErrorKind,
    /// The expansions the line is inside, innermost first (empty outside
    /// any): where each macro was invoked, each `.rept`/`.irp` written.
    pub expansion: Vec<Expansion>,
}

/// One expansion an error happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// What was expanded: ``macro `NAME` ``, `` `.rept` (round 3 of 16) ``,
    /// `` `.irp` (\i = `5`) ``.
    pub what: String,
    /// 1-based line of the invocation or directive.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// ` (in macro `m` at 3:5, in `.rept` (round 2 of 4) at 1:1)`: the innermost
/// four sites.
fn sites(expansion: &[Expansion]) -> String {
    if expansion.is_empty() {
        return String::new();
    }
    let mut parts: Vec<String> =
        expansion.iter().take(4).map(|e| format!("in {} at {}:{}", e.what, e.line, e.column)).collect();
    if expansion.len() > 4 {
        parts.push(format!("{} more", expansion.len() - 4));
    }
    format!(" ({})", parts.join(", "))
}

/// All errors of one source, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct AsmErrors {
    /// The errors.
    pub errors: Vec<AsmError>,
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
            expansion: Vec::new(),
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
        expansion: Vec::new(),
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
            expansion: Vec::new(),
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
                expansion: Vec::new(),
            });
        }
        c.expect_op("=")?;
        let vcol = c.col();
        let v = c.expr()?;
        let v = u32::try_from(v).map_err(|_| AsmError {
            line: c.line,
            column: vcol,
            kind: AsmErrorKind::OutOfRange { value: v, what: "map attribute", range: "u32" },
            expansion: Vec::new(),
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
    def.validate().map_err(|source| AsmError {
        line: c.line,
        column: 1,
        kind: AsmErrorKind::BadMap { source },
        expansion: Vec::new(),
    })?;
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
    // constants defined with `.set` (which may set them again)
    let mut variables: BTreeSet<String> = BTreeSet::new();
    // errors the expander found, already placed in the source; `errors`
    // count lines as the expander hands them out (`lines[n - 1]` is line n)
    let mut placed = Vec::new();
    let mut lines = Vec::new();
    let mut expander = macros::Expander::new(source);

    let mut found = Vec::new();
    while let Some(line) = expander.next_line(&consts, &mut found) {
        // the expander's errors sort before the line it hands out next
        placed.extend(found.drain(..).map(|e| ((lines.len() + 1, 0), e)));
        lines.push(line);
        let lineno = lines.len();
        let text = lines[lineno - 1].text.as_str();
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
                    expansion: Vec::new(),
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
                        expansion: Vec::new(),
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
        let is_set = matches!(toks.first(), Some(Token { tok: Tok::Ident(d), .. }) if d == ".set");
        let mut c = Cursor { toks, pos: 0, line: lineno, end_col, consts: &consts };
        let result: PResult<Option<(String, i64)>> = (|| {
            if c.eat_ident(".equ") || c.eat_ident(".set") {
                let (k, v, col) = parse_equ(&mut c)?;
                let again = is_set && variables.contains(&k);
                if c.consts.contains_key(&k) && !again {
                    return Err(AsmError {
                        line: lineno,
                        column: col,
                        kind: AsmErrorKind::DuplicateConstant { name: k },
                        expansion: Vec::new(),
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
                        expansion: Vec::new(),
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
                if is_set {
                    variables.insert(k.clone());
                }
                consts.insert(k, v);
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    placed.extend(found.into_iter().map(|e| ((lines.len() + 1, 0), e)));
    if expander.halted() {
        // the rest of the source was never read: its labels would only add noise
        errors.retain(|e| !matches!(e.kind, AsmErrorKind::UndefinedLabel { .. }));
        return Err(AsmErrors { errors: place(errors, placed, &lines) });
    }
    for (name, l) in &labels {
        if l.defined.is_none() {
            let (line, column) = l.first_use.unwrap_or((0, 0));
            errors.push(AsmError {
                line,
                column,
                kind: AsmErrorKind::UndefinedLabel { name: name.clone() },
                expansion: Vec::new(),
            });
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
                errors.push(AsmError { line, column, kind, expansion: Vec::new() });
            }
            None
        }
    };
    match program {
        Some(program) if !undefined_reported && errors.is_empty() && placed.is_empty() => {
            let slot_lines = source_lines(&insn_pos, &lines, program.insns.len());
            Ok(Assembly { program, maps, constants: consts, lines: slot_lines })
        }
        _ => Err(AsmErrors { errors: place(errors, placed, &lines) }),
    }
}

/// The source line of each of `slots` slots ([`Assembly::lines`]): a slot no
/// statement starts (an `ld_imm64`'s second) takes the line before it.
fn source_lines(insn_pos: &BTreeMap<usize, (usize, usize)>, lines: &[macros::SrcLine], slots: usize) -> Vec<usize> {
    let top = |n: usize| lines.get(n.wrapping_sub(1)).map_or(n, |l| l.ctx.last().map_or(l.line, |e| e.line));
    let mut at = 0;
    (0..slots)
        .map(|i| {
            if let Some((n, _)) = insn_pos.get(&i) {
                at = top(*n);
            }
            at
        })
        .collect()
}

/// The driver's `errors` (whose lines count the lines the expander handed
/// out) placed in the source as written, merged with the expander's, in the
/// order of the expanded text.
fn place(
    errors: Vec<AsmError>,
    mut placed: Vec<((usize, usize), AsmError)>,
    lines: &[macros::SrcLine],
) -> Vec<AsmError> {
    let source_line = |n: usize| lines.get(n.wrapping_sub(1)).map_or(n, |l| l.line);
    for mut e in errors {
        let key = (e.line, 1);
        if let AsmErrorKind::DuplicateLabel { first_line, .. } = &mut e.kind {
            *first_line = source_line(*first_line);
        }
        let e = match lines.get(e.line.wrapping_sub(1)) {
            Some(l) => l.place(e),
            None => e,
        };
        placed.push((key, e));
    }
    placed.sort_by_key(|(key, e)| (*key, e.column));
    placed.into_iter().map(|(_, e)| e).collect()
}

fn check_off(c: &Cursor<'_>, col: usize, rel: i128) -> PResult<i16> {
    i16::try_from(rel).map_err(|_| AsmError {
        line: c.line,
        column: col,
        kind: AsmErrorKind::OutOfRange { value: rel, what: "jump offset", range: "i16" },
        expansion: Vec::new(),
    })
}

/// Records a hole on an already emitted jump (the builder's `hole` emits).
fn add_hole(b: &mut ProgramBuilder, at: usize, name: &str) {
    b.add_hole_at(at, name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::{JmpCond, Reg, decode_all};

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
