//! Lexer: one line of source (comments already stripped) into tokens with
//! their 0-based columns.

use super::{AsmError, AsmErrorKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    Ident(String),
    Num(i128),
    Hole(String),
    Op(&'static str),
}

impl Tok {
    pub(super) fn text(&self) -> String {
        match self {
            Tok::Ident(s) => s.clone(),
            Tok::Num(n) => n.to_string(),
            Tok::Hole(h) => format!("%{h}"),
            Tok::Op(o) => (*o).to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) col: usize,
}

const OPS: &[&str] = &[
    "s>>=", "s>=", "s<=", "s/=", "s%=", "<<=", ">>=", "s>", "s<", "==", "!=", ">=", "<=", "+=", "-=", "*=", "/=", "|=",
    "&=", "%=", "^=", "=", ">", "<", "&", "+", "-", "*", "(", ")", "[", "]", ",", ":",
];

pub(super) fn strip_comment(line: &str) -> &str {
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

pub(super) fn lex(line: &str, lineno: usize) -> Result<Vec<Token>, AsmError> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |col: usize, kind| AsmError { line: lineno, column: col + 1, kind, expansion: Vec::new() };
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
        if c == '\\' && chars.get(i + 1).is_some_and(|n| n.is_ascii_alphanumeric() || matches!(n, '_' | '@')) {
            let end = (i + 2..chars.len()).find(|&j| !(chars[j].is_ascii_alphanumeric() || chars[j] == '_'));
            let name = chars[i + 1..end.unwrap_or(chars.len())].iter().collect();
            return Err(err(start, AsmErrorKind::UnknownMacroParameter { name }));
        }
        return Err(err(start, AsmErrorKind::BadChar { ch: c }));
    }
    Ok(out)
}
