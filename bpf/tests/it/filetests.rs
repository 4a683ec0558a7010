//! Verifier filetests: every `.s` file in `bpf/tests/verifier/` is a program
//! in egret's assembler syntax whose comments say what the static verifier
//! must conclude (`; expect: accepted` or `; expect: rejected`, and
//! `; error: KIND [FIELD=VALUE]...` on each offending line; the syntax is in
//! that directory's README.md). The runner checks that exactly the annotated
//! violations occur, each at its line, and reports every failure of every
//! file with the file, the line, what was expected and what the verifier said.
//!
//! A violation's line is the source line the assembler gives its slot
//! ([`egret_bpf::asm::Assembly::lines`]): an instruction a macro, `.rept` or
//! `.irp` produced is reported on the line of the outermost invocation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use egret_bpf::verifier::{Violation, verify};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verifier");
/// How files are named in messages (relative to the workspace root).
const SHOWN_DIR: &str = "bpf/tests/verifier";

#[test]
fn verifier_filetests() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .unwrap_or_else(|e| panic!("{DIR}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "s"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .s files in {DIR}: the filetests would pass vacuously");
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().expect("a file name").to_string_lossy();
        let shown = format!("{SHOWN_DIR}/{name}");
        let src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{shown}: {e}"));
        failures.extend(run(&shown, &src));
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) in {} verifier filetest(s):\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// The failures of one file (empty: it passes), each `FILE:LINE: ...`.
fn run(file: &str, src: &str) -> Vec<String> {
    let file_err = |line: usize, msg: String| format!("{file}:{line}: {msg}");
    let lines = match parse(src) {
        Ok(l) => l,
        Err((line, msg)) => return vec![file_err(line, msg)],
    };
    let expect: Vec<(usize, bool)> = lines.iter().filter_map(|l| l.expect.map(|e| (l.number, e))).collect();
    let errors: Vec<(usize, &Spec)> = lines.iter().flat_map(|l| l.errors.iter().map(move |s| (l.number, s))).collect();
    let accepted = match expect.as_slice() {
        [(_, a)] => *a,
        [] => return vec![file_err(1, "no `; expect: accepted` or `; expect: rejected` line".into())],
        [_, (line, _), ..] => return vec![file_err(*line, "a second `expect:` line".into())],
    };
    if accepted && let Some((line, _)) = errors.first() {
        return vec![file_err(*line, "`error:` annotation in a file that expects `accepted`".into())];
    }
    if !accepted && errors.is_empty() {
        return vec![file_err(expect[0].0, "`expect: rejected` but no line carries an `; error:` annotation".into())];
    }
    let asm = match egret_bpf::asm::assemble("filetest", src) {
        Ok(a) => a,
        Err(e) => return e.errors.iter().map(|e| format!("{file}:{e} (assembly error)")).collect(),
    };
    let slots = &asm.lines;
    let violations = match verify(&asm.program, &asm.maps) {
        Ok(_) if accepted => return Vec::new(),
        Ok(_) => {
            let mut out =
                vec![file_err(expect[0].0, "expected `rejected`, but the verifier accepted the program".into())];
            out.extend(errors.iter().map(|(line, s)| file_err(*line, format!("expected error `{s}`, got none"))));
            return out;
        }
        Err(e) => e.violations,
    };
    // pair each violation with an unused matching annotation on its line
    let mut used = vec![false; errors.len()];
    let mut unexpected: Vec<(usize, &Violation)> = Vec::new();
    for v in &violations {
        let line = slots.get(v.insn).copied().unwrap_or(0);
        let hit = errors.iter().enumerate().position(|(i, (l, s))| !used[i] && *l == line && s.matches(v).is_ok());
        match hit {
            Some(i) => used[i] = true,
            None => unexpected.push((line, v)),
        }
    }
    // (line, message), in line order; a violation shown as what a line got
    // instead of its annotation is not listed again as unexpected
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut shown = vec![false; unexpected.len()];
    for (i, (line, spec)) in errors.iter().enumerate() {
        if used[i] {
            continue;
        }
        let mut here = Vec::new();
        for (j, (l, v)) in unexpected.iter().enumerate() {
            if l == line {
                shown[j] = true;
                here.push(match spec.matches(v) {
                    Ok(()) => show(v),
                    Err(why) => format!("{} ({why})", show(v)),
                });
            }
        }
        let got = if here.is_empty() { "no violation on this line".to_string() } else { here.join("; ") };
        out.push((*line, file_err(*line, format!("expected error `{spec}`, got {got}"))));
    }
    for ((line, v), _) in unexpected.iter().zip(&shown).filter(|(_, shown)| !**shown) {
        let at =
            if *line == 0 { format!("{file}: insn {} (no source line)", v.insn) } else { format!("{file}:{line}") };
        out.push((*line, format!("{at}: unexpected violation {}", show(v))));
    }
    out.sort_by_key(|(line, _)| *line);
    out.into_iter().map(|(_, msg)| msg).collect()
}

fn show(v: &Violation) -> String {
    format!("`{v}` [{:?}]", v.kind)
}

/// One source line and its annotations.
struct Line {
    /// 1-based.
    number: usize,
    /// The code before the comment, without leading `label:`s.
    stmt: String,
    /// `Some(true)`: `expect: accepted`; `Some(false)`: `expect: rejected`.
    expect: Option<bool>,
    errors: Vec<Spec>,
}

type Fail = (usize, String);

fn parse(src: &str) -> Result<Vec<Line>, Fail> {
    let mut out = Vec::new();
    for (i, text) in src.lines().enumerate() {
        let number = i + 1;
        let cut = [";", "//", "#"].iter().filter_map(|m| text.find(m).map(|at| (at, m.len()))).min();
        let (code, comment) = match cut {
            Some((at, len)) => (&text[..at], Some(&text[at + len..])),
            None => (text, None),
        };
        let mut line = Line { number, stmt: strip_labels(code).to_string(), expect: None, errors: Vec::new() };
        // `; error: a; error: b`: several annotations in one comment
        for part in comment.map(split_comment).unwrap_or_default() {
            let part = part.trim();
            if let Some(rest) = part.strip_prefix("expect:") {
                line.expect = Some(match rest.trim() {
                    "accepted" => true,
                    "rejected" => false,
                    other => return Err((number, format!("`expect:` takes `accepted` or `rejected`, not `{other}`"))),
                });
            } else if let Some(rest) = part.strip_prefix("error:") {
                line.errors.push(Spec::parse(rest).map_err(|e| (number, format!("bad `error:` annotation: {e}")))?);
            }
        }
        if !line.errors.is_empty() && line.stmt.is_empty() {
            return Err((number, "an `error:` annotation must stand on the line of an instruction".into()));
        }
        out.push(line);
    }
    Ok(out)
}

/// Splits a comment at `;` outside double quotes.
fn split_comment(comment: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in comment.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                parts.push(&comment[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&comment[start..]);
    parts
}

fn strip_labels(code: &str) -> &str {
    let mut rest = code.trim();
    while let Some((label, after)) = rest.split_once(':')
        && !label.trim().is_empty()
        && label.trim().chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'))
    {
        rest = after.trim();
    }
    rest
}

/// One `error:` annotation: a violation kind (`PacketOutOfRange` or
/// `packet_out_of_range`) and fields it must have.
struct Spec {
    /// snake_case.
    kind: String,
    fields: Vec<FieldSpec>,
}

struct FieldSpec {
    name: String,
    /// `=`: equal; `~`: contains.
    contains: bool,
    value: String,
    /// Written in quotes: compared exactly, else case-insensitively (`r7` is `R7`).
    quoted: bool,
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind)?;
        for x in &self.fields {
            let op = if x.contains { "~" } else { "=" };
            if x.quoted { write!(f, " {}{op}{:?}", x.name, x.value)? } else { write!(f, " {}{op}{}", x.name, x.value)? }
        }
        Ok(())
    }
}

impl Spec {
    fn parse(text: &str) -> Result<Spec, String> {
        let mut rest = text.trim();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let kind = snake(&rest[..end]);
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{}` is not a violation kind", &rest[..end]));
        }
        rest = rest[end..].trim_start();
        let mut fields = Vec::new();
        while !rest.is_empty() {
            let Some(op_at) = rest.find(['=', '~']) else {
                return Err(format!("expected `FIELD=VALUE` or `FIELD~VALUE`, found `{rest}`"));
            };
            let name = rest[..op_at].trim().to_string();
            let contains = rest[op_at..].starts_with('~');
            rest = rest[op_at + 1..].trim_start();
            let (value, quoted, after) = if let Some(q) = rest.strip_prefix('"') {
                let (v, after) = unquote(q).ok_or_else(|| format!("unterminated string in `{text}`"))?;
                (v, true, after)
            } else {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                (rest[..end].to_string(), false, &rest[end..])
            };
            if name.is_empty() || (value.is_empty() && !quoted) {
                return Err(format!("expected `FIELD=VALUE` or `FIELD~VALUE` in `{text}`"));
            }
            fields.push(FieldSpec { name, contains, value, quoted });
            rest = after.trim_start();
        }
        Ok(Spec { kind, fields })
    }

    /// `Err`: why `v` is not this.
    fn matches(&self, v: &Violation) -> Result<(), String> {
        let debug = format!("{:?}", v.kind);
        let (name, actual) = debug_fields(&debug);
        if snake(name) != self.kind {
            return Err(format!("kind is {}", snake(name)));
        }
        for f in &self.fields {
            let Some(got) = actual.get(f.name.as_str()) else {
                return Err(format!("{name} has no field `{}`", f.name));
            };
            let ok = match (f.contains, f.quoted) {
                (true, _) => got.contains(&f.value),
                (false, true) => *got == f.value,
                (false, false) => got.eq_ignore_ascii_case(&f.value),
            };
            if !ok {
                return Err(format!("{} is {got:?}", f.name));
            }
        }
        Ok(())
    }
}

/// `PacketOutOfRange` → `packet_out_of_range`; snake_case stays.
fn snake(name: &str) -> String {
    let mut s = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// The text after an opening `"` up to the closing one, unescaped, and what follows.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    None
}

/// A derived `Debug` of an enum variant, `Name { a: 1, b: "x" }`, as its name
/// and its fields (strings unquoted).
fn debug_fields(debug: &str) -> (&str, BTreeMap<&str, String>) {
    let Some((name, body)) = debug.split_once(" { ") else {
        return (debug, BTreeMap::new());
    };
    let mut fields = BTreeMap::new();
    let mut rest = body.strip_suffix(" }").unwrap_or(body);
    while let Some((field, after)) = rest.split_once(": ") {
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            unquote(q).unwrap_or_else(|| (q.to_string(), ""))
        } else {
            // up to the next `, ` outside brackets
            let mut depth = 0i32;
            let mut end = after.len();
            for (i, c) in after.char_indices() {
                match c {
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' => depth -= 1,
                    ',' if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            (after[..end].to_string(), &after[end..])
        };
        fields.insert(field.trim(), value);
        rest = next.trim_start_matches(',').trim_start();
    }
    (name, fields)
}
