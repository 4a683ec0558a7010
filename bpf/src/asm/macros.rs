//! Macro expansion: `.macro`/`.endm`, `.rept`/`.endr` and `.irp`/`.endr`,
//! as GNU as and LLVM's integrated assembler read them, between the source
//! and the statement parser.
//!
//! The expander hands the driver one line at a time, so a `.rept` count may
//! use the constants defined above it. Every line it hands out remembers where
//! it was written ([`SrcLine`]: line, a column map through the substitutions,
//! and the expansions it is inside), so an error in an expanded line points at
//! the line of the macro body and names the invocation site.
//!
//! Bounds (errors, never a hang): expansions nest at most [`MAX_DEPTH`] deep
//! (a recursive macro stops there), and at most [`MAX_EXPANDED_LINES`] lines
//! and repetitions are expanded in all.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::lexer::lex;
use super::parser::{Cursor, parse_reg_name};
use super::{AsmError, AsmErrorKind, Expansion};

/// How deep expansions may nest (a macro invoking a macro is two levels).
pub const MAX_DEPTH: usize = 64;
/// How many lines (and `.rept`/`.irp` rounds) all expansions may produce.
pub const MAX_EXPANDED_LINES: usize = 1_000_000;
/// The largest `.rept` count.
const MAX_REPT: i128 = 1_000_000;

/// One line of text as the parser sees it, with where it was written.
#[derive(Debug, Clone)]
pub(super) struct SrcLine {
    /// The text (comments stripped, parameters substituted).
    pub(super) text: String,
    /// 1-based line in the source as written.
    pub(super) line: usize,
    /// 0-based source column of each character of `text`, and one more entry
    /// for the end of the line; `None` when the text is the source as written.
    cols: Option<Rc<[usize]>>,
    /// The expansions this line is inside, innermost first.
    pub(super) ctx: Rc<[Expansion]>,
}

impl SrcLine {
    /// The 0-based source column of character `i` of the text.
    fn col_of(&self, i: usize) -> usize {
        match &self.cols {
            None => i,
            Some(c) => c.get(i).or(c.last()).copied().unwrap_or(0),
        }
    }

    /// 1-based `column` of the text as a 1-based column of the source.
    fn column(&self, column: usize) -> usize {
        self.col_of(column.saturating_sub(1)) + 1
    }

    /// An error at 1-based `column` of the text, placed in the source.
    pub(super) fn error(&self, column: usize, kind: AsmErrorKind) -> AsmError {
        AsmError { line: self.line, column: self.column(column), kind, expansion: self.ctx.to_vec() }
    }

    /// `err` (found in this line's text by the parser) placed in the source.
    pub(super) fn place(&self, err: AsmError) -> AsmError {
        self.error(err.column, err.kind)
    }
}

/// A macro parameter.
#[derive(Debug, Clone)]
struct Param {
    name: String,
    default: String,
    required: bool,
    vararg: bool,
}

/// A macro definition.
#[derive(Debug)]
struct Macro {
    name: String,
    params: Vec<Param>,
    body: Rc<[SrcLine]>,
    line: usize,
}

/// What a frame expands.
enum FrameKind {
    /// A macro invocation: its arguments by parameter and its `\@` number.
    Macro { args: Vec<(String, String)>, number: usize },
    /// `.rept`: no substitution.
    Rept,
    /// `.irp`: the parameter and its values, one per round.
    Irp { param: String, values: Vec<String> },
}

/// A body being expanded.
struct Frame {
    body: Rc<[SrcLine]>,
    pos: usize,
    round: usize,
    rounds: usize,
    kind: FrameKind,
    /// The directive or invocation (its `what` is completed per round).
    site: Expansion,
    outer: Rc<[Expansion]>,
    ctx: Rc<[Expansion]>,
}

impl Frame {
    fn new(body: Rc<[SrcLine]>, rounds: usize, kind: FrameKind, site: Expansion, outer: Rc<[Expansion]>) -> Frame {
        let mut f = Frame { body, pos: 0, round: 0, rounds, kind, site, outer, ctx: Rc::from(Vec::new()) };
        f.ctx = f.round_ctx();
        f
    }

    fn round_ctx(&self) -> Rc<[Expansion]> {
        let mut site = self.site.clone();
        match &self.kind {
            FrameKind::Macro { .. } => {}
            FrameKind::Rept => site.what = format!("{} (round {} of {})", site.what, self.round + 1, self.rounds),
            FrameKind::Irp { param, values } => {
                site.what = format!("{} (\\{param} = `{}`)", site.what, values[self.round]);
            }
        }
        std::iter::once(site).chain(self.outer.iter().cloned()).collect()
    }

    /// Line `pos` of the body with the frame's substitutions.
    fn line(&self) -> SrcLine {
        let l = &self.body[self.pos];
        let mut out = match &self.kind {
            FrameKind::Macro { args, number } => substitute(l, args, Some(*number)),
            FrameKind::Rept => l.clone(),
            FrameKind::Irp { param, values } => substitute(l, &[(param.clone(), values[self.round].clone())], None),
        };
        out.ctx = Rc::clone(&self.ctx);
        out
    }
}

/// Replaces `\param` with its argument, `\@` with `number` and `\()` with
/// nothing; any other `\` stays for the lexer to report.
fn substitute(l: &SrcLine, args: &[(String, String)], number: Option<usize>) -> SrcLine {
    let chars: Vec<char> = l.text.chars().collect();
    let mut text = String::with_capacity(l.text.len());
    let mut cols = Vec::with_capacity(chars.len() + 1);
    let mut push = |s: &str, col: usize, text: &mut String| {
        for ch in s.chars() {
            text.push(ch);
            cols.push(col);
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let here = l.col_of(i);
        if chars[i] == '\\' {
            if let (Some('@'), Some(n)) = (chars.get(i + 1), number) {
                push(&n.to_string(), here, &mut text);
                i += 2;
                continue;
            }
            if chars.get(i + 1) == Some(&'(') && chars.get(i + 2) == Some(&')') {
                i += 3;
                continue;
            }
            let end = (i + 1..chars.len()).find(|&j| !is_param_char(chars[j])).unwrap_or(chars.len());
            let name: String = chars[i + 1..end].iter().collect();
            if let Some((_, value)) = args.iter().find(|(p, _)| *p == name) {
                push(value, here, &mut text);
                i = end;
                continue;
            }
        }
        push(&chars[i].to_string(), here, &mut text);
        i += 1;
    }
    cols.push(l.col_of(chars.len()));
    SrcLine { text, line: l.line, cols: Some(Rc::from(cols)), ctx: Rc::clone(&l.ctx) }
}

fn is_param_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_param_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && s.chars().all(is_param_char)
}

fn is_macro_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '.')
        && s.chars().all(|c| is_param_char(c) || c == '.')
}

/// Words a macro may not be called, because statements start with them.
const RESERVED: &[&str] = &[
    "exit",
    "call",
    "goto",
    "gotol",
    "if",
    "lock",
    ".equ",
    ".set",
    ".map",
    ".insn",
    ".macro",
    ".endm",
    ".endmacro",
    ".rept",
    ".irp",
    ".endr",
];

/// The first word of `text` from char `from`: (start, end) in chars, skipping
/// blanks; a word is a run of identifier characters (`.` included).
fn word_at(chars: &[char], from: usize) -> (usize, usize) {
    let start = (from..chars.len()).find(|&i| !chars[i].is_whitespace()).unwrap_or(chars.len());
    let end = (start..chars.len()).find(|&i| !(is_param_char(chars[i]) || chars[i] == '.')).unwrap_or(chars.len());
    (start, end)
}

/// Splits `s` at top-level commas (not inside parentheses, brackets or
/// quotes); each piece trimmed, with its 0-based char offset in `s`.
fn split_args(s: &[char]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut start = 0;
    let piece = |from: usize, to: usize, out: &mut Vec<(String, usize)>| {
        let first = (from..to).find(|&i| !s[i].is_whitespace()).unwrap_or(to);
        let last = (first..to).rev().find(|&i| !s[i].is_whitespace()).map_or(first, |i| i + 1);
        out.push((s[first..last].iter().collect(), first));
    };
    for (i, &c) in s.iter().enumerate() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' if !quoted => depth += 1,
            ')' | ']' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                piece(start, i, &mut out);
                start = i + 1;
            }
            _ => {}
        }
    }
    piece(start, s.len(), &mut out);
    if out.len() == 1 && out[0].0.is_empty() {
        out.clear();
    }
    out
}

/// `text` without surrounding double quotes.
fn unquote(text: &str) -> String {
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner.to_owned(),
        None => text.to_owned(),
    }
}

/// Which block a body collection looks for the end of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Macro,
    Repeat,
}

/// Expands macros and repetitions, line by line.
pub(super) struct Expander {
    source: Vec<String>,
    next_top: usize,
    frames: Vec<Frame>,
    pending: Option<SrcLine>,
    macros: BTreeMap<String, Rc<Macro>>,
    invocations: usize,
    expanded: usize,
    halted: bool,
}

impl Expander {
    /// An expander over `source` (comments are stripped here).
    pub(super) fn new(source: &str) -> Expander {
        Expander {
            source: source.lines().map(|l| super::lexer::strip_comment(l).to_owned()).collect(),
            next_top: 0,
            frames: Vec::new(),
            pending: None,
            macros: BTreeMap::new(),
            invocations: 0,
            expanded: 0,
            halted: false,
        }
    }

    /// Whether expansion stopped at a limit (the rest of the source was not read).
    pub(super) fn halted(&self) -> bool {
        self.halted
    }

    /// The next line of the current level: the innermost frame (without
    /// leaving it) or, with no frame, the source.
    fn read(&mut self, errors: &mut Vec<AsmError>) -> Option<SrcLine> {
        if self.halted {
            return None;
        }
        let Some(f) = self.frames.last_mut() else {
            let text = self.source.get(self.next_top)?.clone();
            self.next_top += 1;
            return Some(SrcLine { text, line: self.next_top, cols: None, ctx: Rc::from(Vec::new()) });
        };
        self.expanded += 1;
        while f.pos >= f.body.len() {
            if f.round + 1 >= f.rounds {
                return None;
            }
            f.round += 1;
            f.pos = 0;
            f.ctx = f.round_ctx();
            self.expanded += 1;
            if self.expanded > MAX_EXPANDED_LINES {
                break;
            }
        }
        if self.expanded > MAX_EXPANDED_LINES {
            errors.push(AsmError {
                line: f.site.line,
                column: f.site.column,
                kind: AsmErrorKind::ExpansionTooLarge { limit: MAX_EXPANDED_LINES },
                expansion: f.outer.to_vec(),
            });
            self.halt();
            return None;
        }
        let l = f.line();
        f.pos += 1;
        Some(l)
    }

    fn halt(&mut self) {
        self.halted = true;
        self.frames.clear();
        self.pending = None;
    }

    /// The next line for the parser, after expanding every directive and
    /// invocation before it. Errors go to `errors`, already placed.
    pub(super) fn next_line(&mut self, consts: &BTreeMap<String, i64>, errors: &mut Vec<AsmError>) -> Option<SrcLine> {
        loop {
            let l = match self.pending.take() {
                Some(l) => l,
                None => match self.read(errors) {
                    Some(l) => l,
                    None if self.halted => return None,
                    None if self.frames.pop().is_some() => continue,
                    None => return None,
                },
            };
            let chars: Vec<char> = l.text.chars().collect();
            let (mut ws, mut we) = word_at(&chars, 0);
            // `label: invocation`: the labels go on as a line of their own
            let mut label_end = None;
            while chars.get(we) == Some(&':') && we > ws {
                label_end = Some(we + 1);
                (ws, we) = word_at(&chars, we + 1);
            }
            let word: String = chars[ws..we].iter().collect();
            let directive = matches!(word.as_str(), ".macro" | ".endm" | ".endmacro" | ".rept" | ".irp" | ".endr");
            if !directive && !self.macros.contains_key(&word) {
                return Some(l);
            }
            if let Some(end) = label_end {
                let mut labels = l.clone();
                labels.text = chars[..end].iter().collect();
                let mut rest = l;
                rest.text = chars.iter().enumerate().map(|(i, c)| if i < end { ' ' } else { *c }).collect();
                self.pending = Some(rest);
                return Some(labels);
            }
            let args = &chars[we..];
            let col = ws + 1;
            match word.as_str() {
                ".macro" => self.define(&l, args, we, errors),
                ".endm" | ".endmacro" => {
                    errors.push(l.error(col, AsmErrorKind::UnmatchedEnd { directive: word, opener: ".macro" }));
                }
                ".endr" => {
                    errors.push(l.error(col, AsmErrorKind::UnmatchedEnd { directive: word, opener: ".rept` or `.irp" }))
                }
                ".rept" => self.rept(&l, args, we, col, consts, errors),
                ".irp" => self.irp(&l, args, we, col, errors),
                _ => self.invoke(&l, &word, args, we, col, errors),
            }
        }
    }

    /// The lines up to the `.endm`/`.endr` that closes the block `directive`
    /// opened on `open`, from the current level; `None` (and an error) if it
    /// never closes.
    fn collect(
        &mut self,
        open: &SrcLine,
        col: usize,
        directive: &'static str,
        errors: &mut Vec<AsmError>,
    ) -> Option<Vec<SrcLine>> {
        let block = if directive == ".macro" { Block::Macro } else { Block::Repeat };
        let mut depth = 1;
        let mut body = Vec::new();
        loop {
            let Some(l) = self.read(errors) else {
                if !self.halted {
                    let end = if block == Block::Macro { ".endm" } else { ".endr" };
                    errors.push(open.error(col, AsmErrorKind::Unterminated { directive, end }));
                }
                return None;
            };
            let chars: Vec<char> = l.text.chars().collect();
            let (ws, we) = word_at(&chars, 0);
            let word: String = chars[ws..we].iter().collect();
            match (block, word.as_str()) {
                (Block::Macro, ".macro") | (Block::Repeat, ".rept" | ".irp" | ".irpc") => depth += 1,
                (Block::Macro, ".endm" | ".endmacro") | (Block::Repeat, ".endr") => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(body);
                    }
                }
                _ => {}
            }
            body.push(l);
        }
    }

    fn push_frame(&mut self, l: &SrcLine, col: usize, frame: Frame, errors: &mut Vec<AsmError>) {
        if self.frames.len() >= MAX_DEPTH {
            errors.push(l.error(col, AsmErrorKind::ExpansionTooDeep { limit: MAX_DEPTH }));
            self.halt();
            return;
        }
        self.frames.push(frame);
    }

    fn site(l: &SrcLine, col: usize, what: String) -> Expansion {
        Expansion { what, line: l.line, column: l.column(col) }
    }

    /// `.macro NAME [param[=default|:req|:vararg]][, ...]`.
    fn define(&mut self, l: &SrcLine, header: &[char], off: usize, errors: &mut Vec<AsmError>) {
        let (ns, ne) = word_at(header, 0);
        let name: String = header[ns..ne].iter().collect();
        let name_col = off + ns + 1;
        let body = self.collect(l, off - ".macro".len() + 1, ".macro", errors);
        let bad = |reason: String, col: usize| l.error(col, AsmErrorKind::BadMacro { reason });
        if name.is_empty() || !is_macro_name(&name) {
            errors.push(bad("expected a macro name".into(), name_col));
            return;
        }
        if RESERVED.contains(&name.as_str()) || parse_reg_name(&name).is_some() {
            errors.push(bad(format!("`{name}` cannot be a macro name"), name_col));
            return;
        }
        let mut params: Vec<Param> = Vec::new();
        let rest = &header[ne..];
        let mut pieces = split_args(rest);
        // GNU style `.macro m a b`: blank-separated names
        if pieces.len() == 1 && !pieces[0].0.contains('=') && pieces[0].0.contains(char::is_whitespace) {
            let (text, at) = pieces.remove(0);
            let mut skip = 0;
            for w in text.split_whitespace() {
                let i = text[skip..].find(w).map_or(skip, |i| i + skip);
                pieces.push((w.to_owned(), at + text[..i].chars().count()));
                skip = i + w.len();
            }
        }
        for (text, at) in pieces {
            let col = off + ne + at + 1;
            let (head, default) = match text.split_once('=') {
                Some((h, d)) => (h.trim().to_owned(), unquote(d.trim())),
                None => (text.clone(), String::new()),
            };
            let (pname, qualifier) = match head.split_once(':') {
                Some((p, q)) => (p.trim().to_owned(), Some(q.trim().to_owned())),
                None => (head, None),
            };
            if !is_param_name(&pname) {
                errors
                    .push(bad(format!("`{text}` is not a parameter (NAME, NAME=default, NAME:req, NAME:vararg)"), col));
                return;
            }
            if params.iter().any(|p| p.name == pname) {
                errors.push(bad(format!("parameter `{pname}` named twice"), col));
                return;
            }
            if params.last().is_some_and(|p| p.vararg) {
                errors.push(bad("only the last parameter may be `:vararg`".into(), col));
                return;
            }
            let (required, vararg) = match qualifier.as_deref() {
                None => (false, false),
                Some("req") => (true, false),
                Some("vararg") => (false, true),
                Some(q) => {
                    errors.push(bad(format!("unknown qualifier `:{q}` (`:req` or `:vararg`)"), col));
                    return;
                }
            };
            params.push(Param { name: pname, default, required, vararg });
        }
        let Some(body) = body else { return };
        if let Some(first) = self.macros.get(&name) {
            errors.push(l.error(name_col, AsmErrorKind::DuplicateMacro { name, first_line: first.line }));
            return;
        }
        let def = Macro { name: name.clone(), params, body: Rc::from(body), line: l.line };
        self.macros.insert(name, Rc::new(def));
    }

    /// `.rept COUNT` (a constant expression).
    fn rept(
        &mut self,
        l: &SrcLine,
        rest: &[char],
        off: usize,
        col: usize,
        consts: &BTreeMap<String, i64>,
        errors: &mut Vec<AsmError>,
    ) {
        let body = self.collect(l, col, ".rept", errors);
        let text: String = rest.iter().collect();
        let count = lex(&text, l.line).and_then(|toks| {
            let mut c = Cursor { toks: &toks, pos: 0, line: l.line, end_col: text.chars().count() + 1, consts };
            let n = c.expr()?;
            c.expect_end()?;
            Ok(n)
        });
        let count = match count {
            Ok(n) if (0..=MAX_REPT).contains(&n) => n as usize,
            Ok(n) => {
                let kind = AsmErrorKind::OutOfRange { value: n, what: "repeat count", range: "0..=1000000" };
                errors.push(l.error(off + 1, kind));
                return;
            }
            Err(mut e) => {
                e.column += off;
                errors.push(l.place(e));
                return;
            }
        };
        let Some(body) = body else { return };
        if count == 0 || body.is_empty() {
            return;
        }
        let site = Self::site(l, col, "`.rept`".into());
        let frame = Frame::new(Rc::from(body), count, FrameKind::Rept, site, Rc::clone(&l.ctx));
        self.push_frame(l, col, frame, errors);
    }

    /// `.irp PARAM, v1, v2, ...`.
    fn irp(&mut self, l: &SrcLine, rest: &[char], off: usize, col: usize, errors: &mut Vec<AsmError>) {
        let body = self.collect(l, col, ".irp", errors);
        let mut pieces = split_args(rest).into_iter();
        let (param, at) = pieces.next().unwrap_or((String::new(), 0));
        if !is_param_name(&param) {
            let reason = "`.irp` wants a parameter name, then its values: `.irp NAME, a, b, c`".into();
            errors.push(l.error(off + at + 1, AsmErrorKind::BadMacro { reason }));
            return;
        }
        let mut values: Vec<String> = pieces.map(|(v, _)| unquote(&v)).collect();
        if values.is_empty() {
            values.push(String::new());
        }
        let Some(body) = body else { return };
        let rounds = values.len();
        let site = Self::site(l, col, "`.irp`".into());
        let frame = Frame::new(Rc::from(body), rounds, FrameKind::Irp { param, values }, site, Rc::clone(&l.ctx));
        self.push_frame(l, col, frame, errors);
    }

    /// `NAME arg, arg, param=arg`.
    fn invoke(&mut self, l: &SrcLine, name: &str, rest: &[char], off: usize, col: usize, errors: &mut Vec<AsmError>) {
        let Some(m) = self.macros.get(name).cloned() else { return };
        let mut given: Vec<Option<String>> = vec![None; m.params.len()];
        let mut positional = 0;
        let bad = |reason: String, at: usize| {
            l.error(off + at + 1, AsmErrorKind::MacroArguments { name: m.name.clone(), reason })
        };
        for (text, at) in split_args(rest) {
            // `param=value` (not `==`, not quoted)
            let keyword = Some(text.as_str())
                .filter(|t| !t.starts_with('"'))
                .and_then(|t| t.split_once('='))
                .filter(|(k, v)| is_param_name(k.trim()) && !v.starts_with('='));
            if let Some((k, v)) = keyword {
                let k = k.trim();
                match m.params.iter().position(|p| p.name == k) {
                    Some(i) => given[i] = Some(unquote(v.trim())),
                    None => {
                        errors.push(bad(format!("no parameter `{k}`"), at));
                        return;
                    }
                }
                continue;
            }
            match m.params.get(positional) {
                Some(p) if p.vararg => {
                    let slot = given[positional].get_or_insert_with(String::new);
                    if !slot.is_empty() {
                        slot.push_str(", ");
                    }
                    slot.push_str(&text);
                }
                Some(_) => {
                    given[positional] = Some(unquote(&text));
                    positional += 1;
                }
                None => {
                    let reason = format!("more arguments than its {} parameters", m.params.len());
                    errors.push(bad(reason, at));
                    return;
                }
            }
        }
        let mut args = Vec::with_capacity(m.params.len());
        for (p, g) in m.params.iter().zip(given) {
            let value = match g {
                Some(v) if !v.is_empty() => v,
                _ if p.required => {
                    errors.push(bad(format!("missing the required argument `{}`", p.name), 0));
                    return;
                }
                _ => p.default.clone(),
            };
            args.push((p.name.clone(), value));
        }
        let number = self.invocations;
        self.invocations += 1;
        let site = Self::site(l, col, format!("macro `{name}`"));
        let frame = Frame::new(Rc::clone(&m.body), 1, FrameKind::Macro { args, number }, site, Rc::clone(&l.ctx));
        self.push_frame(l, col, frame, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AsmErrorKind, AsmErrors, Assembly, assemble};

    fn ok(src: &str) -> Assembly {
        assemble("p", src).unwrap_or_else(|e| panic!("assembles: {e}\n{src}"))
    }

    fn errs(src: &str) -> AsmErrors {
        assemble("p", src).expect_err("must fail")
    }

    /// `src` and `plain` assemble to the same instructions.
    fn same(src: &str, plain: &str) -> Assembly {
        let a = ok(src);
        assert_eq!(a.program.insns, ok(plain).program.insns, "{src}\n---\n{plain}");
        a
    }

    // The same text through llvm-mc 14 gives these instructions and the label
    // `l2_r4x` (LLVM numbers `\@` the same way).
    const LLVM_SAMPLE: &str = r"
        .equ N, 3
        .macro bump reg, by=1
            \reg += \by
        .endm
        .macro twice reg, by:req
            bump \reg, \by
            bump \reg
        l\@_\reg\()x:
        .endm
        .set i, 0
        .rept N
            r1 = i
            .set i, i + 1
        .endr
        .irp r, r2, r3
            bump \r, by=5
        .endr
            twice r4, 7
            r0 = 0
            exit
    ";

    #[test]
    fn macros_rept_and_irp_expand_as_llvm_mc_does() {
        let plain = "r1 = 0\nr1 = 1\nr1 = 2\nr2 += 5\nr3 += 5\nr4 += 7\nr4 += 1\nr0 = 0\nexit";
        let a = same(LLVM_SAMPLE, plain);
        assert_eq!(a.program.labels.get(&7).map(String::as_str), Some("l2_r4x"));
        assert_eq!(a.constants["i"], 3, "`.set` may set a constant again");
    }

    #[test]
    fn each_slot_knows_the_source_line_that_produced_it() {
        // lines of LLVM_SAMPLE: 12 the .rept, 16 the .irp, 19 twice, 20, 21
        let a = ok(LLVM_SAMPLE);
        assert_eq!(a.lines, [12, 12, 12, 16, 16, 19, 19, 20, 21], "an expansion's slots on its outermost line");
        let a = ok(".map m, hash, key_size=4, value_size=4, max_entries=1\nr1 = map[m] ll\n\nr0 = 0\nexit");
        assert_eq!(a.lines, [2, 2, 4, 5], "both slots of an ld_imm64");
    }

    #[test]
    fn unique_labels_with_the_expansion_number() {
        let src = r"
            .macro skip_if_zero reg
                if \reg == 0 goto skip\@
                \reg += 1
            skip\@:
            .endm
            skip_if_zero r1
            skip_if_zero r2
            exit
        ";
        same(src, "if r1 == 0 goto +1\nr1 += 1\nif r2 == 0 goto +1\nr2 += 1\nexit");
    }

    #[test]
    fn macros_nest_and_take_keyword_quoted_and_variadic_arguments() {
        let src = r#"
            .macro store slot, value
                *(u32 *)(r10 + \slot) = \value
            .endm
            .macro store_all first, rest:vararg
                store -4, \first
                .irp v, \rest
                    store -8, \v
                .endr
            .endm
            .macro emit text
                \text
            .endm
            store value=r1, slot=-4
            store_all 1, 2, 3
            emit "r0 = 0"
            lbl: emit exit
        "#;
        let plain = "*(u32 *)(r10 - 4) = r1\n*(u32 *)(r10 - 4) = 1\n*(u32 *)(r10 - 8) = 2\n\
                     *(u32 *)(r10 - 8) = 3\nr0 = 0\nexit";
        let a = same(src, plain);
        assert_eq!(a.program.labels.get(&5).map(String::as_str), Some("lbl"), "a label before an invocation");
    }

    #[test]
    fn a_macro_may_define_a_macro() {
        let src = r"
            .macro constant_setter name, value
            .macro \name reg
                \reg = \value
            .endm
            .endm
            constant_setter set5, 5
            set5 r3
            exit
        ";
        same(src, "r3 = 5\nexit");
    }

    #[test]
    fn rept_nests_and_counts_with_constants() {
        let src = "
            .equ OUTER, 2
            .rept OUTER
            .rept OUTER + 1
                r0 += 1
            .endr
            .endr
            .rept 0
                this is never read
            .endr
            exit
        ";
        same(src, &format!("{}exit", "r0 += 1\n".repeat(6)));
    }

    #[test]
    fn an_error_in_a_body_points_into_the_body_and_names_the_invocation() {
        let src = "\
.macro load reg, off
    \\reg = *(u32 *)(r1 + \\off + NOPE)
.endm
    r0 = 0
    load r2, 1000
    exit";
        let e = errs(src);
        assert_eq!(e.errors.len(), 1, "{e}");
        let err = &e.errors[0];
        assert_eq!((err.line, err.column), (2, 33), "{e}");
        assert!(matches!(&err.kind, AsmErrorKind::UndefinedConstant { name } if name == "NOPE"));
        assert_eq!(err.expansion.len(), 1);
        assert_eq!((err.expansion[0].line, err.expansion[0].column), (5, 5));
        assert_eq!(err.expansion[0].what, "macro `load`");
        assert!(e.to_string().contains("2:33: undefined constant `NOPE` (in macro `load` at 5:5)"), "{e}");
    }

    #[test]
    fn a_substituted_argument_is_blamed_on_its_parameter() {
        let src = ".macro set reg, value\n  \\reg = \\value\n.endm\nset r1, 0x1_0000_0000_0000\nexit";
        let e = errs(src);
        assert_eq!((e.errors[0].line, e.errors[0].column), (2, 10), "{e}");
        assert!(matches!(e.errors[0].kind, AsmErrorKind::OutOfRange { .. }));
    }

    #[test]
    fn errors_in_rounds_name_the_round_and_all_are_reported() {
        let src = ".irp v, 1, NOPE, 2, NADA\n  r0 = \\v\n.endr\nexit";
        let e = errs(src);
        assert_eq!(e.errors.len(), 2, "{e}");
        for (err, v) in e.errors.iter().zip(["NOPE", "NADA"]) {
            assert_eq!((err.line, err.column), (2, 8));
            assert!(err.expansion[0].what.contains(&format!("= `{v}`")), "{e}");
            assert_eq!((err.expansion[0].line, err.expansion[0].column), (1, 1));
        }
        let e = errs(".rept 3\n  r0 = NOPE\n.endr\nexit");
        assert_eq!(e.errors.len(), 3);
        assert!(e.errors[2].expansion[0].what.contains("round 3 of 3"), "{e}");
    }

    #[test]
    fn unknown_parameters_are_errors() {
        let e = errs(".macro m a\n  r0 = \\b\n.endm\nm 1\nexit");
        assert!(matches!(&e.errors[0].kind, AsmErrorKind::UnknownMacroParameter { name } if name == "b"));
        assert_eq!((e.errors[0].line, e.errors[0].column), (2, 8));
        let e = errs("r0 = \\@\nexit");
        assert!(matches!(&e.errors[0].kind, AsmErrorKind::UnknownMacroParameter { name } if name == "@"), "{e}");
    }

    #[test]
    fn blocks_must_close_and_ends_must_open() {
        let e = errs("r0 = 0\n.macro m\n  r0 = 1\nexit");
        assert!(matches!(e.errors[0].kind, AsmErrorKind::Unterminated { end: ".endm", .. }), "{e}");
        assert_eq!((e.errors[0].line, e.errors[0].column), (2, 1));
        let e = errs("  .rept 2\n  r0 = 1\nexit");
        assert!(matches!(e.errors[0].kind, AsmErrorKind::Unterminated { end: ".endr", .. }), "{e}");
        assert_eq!((e.errors[0].line, e.errors[0].column), (1, 3));
        let e = errs("r0 = 0\n.endm\n.endr\nexit");
        assert_eq!(e.errors.len(), 2);
        assert!(e.errors.iter().all(|e| matches!(e.kind, AsmErrorKind::UnmatchedEnd { .. })));
        // a block opened inside a macro body must close there
        let e = errs(".macro m\n.rept 2\n.endm\nm\nexit");
        assert!(matches!(e.errors[0].kind, AsmErrorKind::Unterminated { .. }), "{e}");
    }

    #[test]
    fn bad_definitions_and_invocations() {
        let kind = |src: &str| errs(src).errors[0].kind.clone();
        assert!(matches!(kind(".macro exit\n.endm\nexit"), AsmErrorKind::BadMacro { .. }));
        assert!(matches!(kind(".macro r1\n.endm\nexit"), AsmErrorKind::BadMacro { .. }));
        assert!(matches!(kind(".macro\n.endm\nexit"), AsmErrorKind::BadMacro { .. }));
        assert!(matches!(kind(".macro m a, a\n.endm\nexit"), AsmErrorKind::BadMacro { .. }));
        assert!(matches!(kind(".macro m a:opt\n.endm\nexit"), AsmErrorKind::BadMacro { .. }));
        assert!(matches!(kind(".macro m a:vararg, b\n.endm\nexit"), AsmErrorKind::BadMacro { .. }));
        assert!(matches!(kind(".macro m 1a\n.endm\nexit"), AsmErrorKind::BadMacro { .. }));
        assert!(matches!(kind(".irp 5, a\n.endr\nexit"), AsmErrorKind::BadMacro { .. }));
        let e = errs(".macro m\n.endm\n.macro m\n.endm\nexit");
        assert!(matches!(e.errors[0].kind, AsmErrorKind::DuplicateMacro { first_line: 1, .. }), "{e}");
        assert_eq!((e.errors[0].line, e.errors[0].column), (3, 8));
        let m = ".macro m a, b:req\n  r0 = \\b\n.endm\n";
        for call in ["m 1, 2, 3", "m 1", "m c=1, b=2"] {
            let e = errs(&format!("{m}{call}\nexit"));
            assert!(matches!(e.errors[0].kind, AsmErrorKind::MacroArguments { .. }), "{call}: {e}");
            assert_eq!(e.errors[0].line, 4);
        }
        assert!(ok(&format!("{m}m , 2\nm b=1\nexit")).program.insns.len() == 3, "empty a takes its default");
    }

    #[test]
    fn repeat_counts_are_checked() {
        let kind = |src: &str| errs(src).errors[0].kind.clone();
        assert!(matches!(kind(".rept -1\n.endr\nexit"), AsmErrorKind::OutOfRange { .. }));
        assert!(matches!(kind(".rept 2000000\n.endr\nexit"), AsmErrorKind::OutOfRange { .. }));
        let e = errs(".rept 2 + NOPE\n.endr\nexit");
        assert!(matches!(e.errors[0].kind, AsmErrorKind::UndefinedConstant { .. }));
        assert_eq!((e.errors[0].line, e.errors[0].column), (1, 11));
    }

    #[test]
    fn recursion_stops_at_the_depth_limit() {
        let e = errs(".macro m\n  r0 = 0\n  m\n.endm\nm\nexit");
        assert_eq!(e.errors.len(), 1, "{e}");
        assert!(matches!(e.errors[0].kind, AsmErrorKind::ExpansionTooDeep { limit: super::MAX_DEPTH }));
        assert_eq!((e.errors[0].line, e.errors[0].column), (3, 3));
        assert_eq!(e.errors[0].expansion.len(), super::MAX_DEPTH);
        assert!(e.to_string().contains("more)"), "the chain is cut short: {e}");
        // two calls a level: without the limits this would never end
        let e = errs(".macro m\n  m\n  m\n.endm\nm\nexit");
        assert!(matches!(e.errors[0].kind, AsmErrorKind::ExpansionTooDeep { .. }), "{e}");
    }

    #[test]
    fn expansion_size_is_bounded() {
        let e = errs(".rept 1000000\n.rept 1000000\n.endr\n.endr\nexit");
        assert_eq!(e.errors.len(), 1, "{e}");
        assert!(matches!(e.errors[0].kind, AsmErrorKind::ExpansionTooLarge { .. }), "{e}");
        assert_eq!((e.errors[0].line, e.errors[0].column), (1, 1));
    }

    #[test]
    fn set_may_repeat_but_equ_may_not() {
        assert_eq!(ok(".set a, 1\n.set a, a + 1\nexit").constants["a"], 2);
        let kind = |src: &str| errs(src).errors[0].kind.clone();
        assert!(matches!(kind(".equ a, 1\n.equ a, 2\nexit"), AsmErrorKind::DuplicateConstant { .. }));
        assert!(matches!(kind(".equ a, 1\n.set a, 2\nexit"), AsmErrorKind::DuplicateConstant { .. }));
        assert!(matches!(kind(".set a, 1\n.equ a, 2\nexit"), AsmErrorKind::DuplicateConstant { .. }));
    }
}
