//! The `.egret` lexer: text to tokens and comments, with byte spans.
//!
//! Contract:
//! - never fails and never panics: every byte of the input ends up in a token,
//!   a comment, whitespace, or an [`Kind::Invalid`] token that carries a
//!   diagnostic (E0003);
//! - tokens are in text order and do not overlap; every span lies on `char`
//!   boundaries of the input;
//! - a bare word is `[A-Za-z0-9._/:-]+`: wide enough for label keys with
//!   prefixes, values, names, IPv4/IPv6 addresses and CIDRs. Which words are
//!   valid *where* is the parser's (positions) and the validator's (label and
//!   name syntax) business;
//! - strings are JSON strings (`"…"` with JSON escapes, no raw control
//!   characters); [`Token::text`] holds the decoded value.
//!
//! The lexer is written with nom over [`Src`], an input that carries its byte
//! offset into the file, so every token knows its [`Span`].

use crate::codes;
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};
use nom::branch::alt;
use nom::bytes::complete::{tag, take_till, take_while1};
use nom::character::complete::{anychar, char};
use nom::combinator::{map, opt, value};
use nom::error::{ErrorKind, ParseError};
use nom::{Compare, CompareResult, IResult, Input, Needed, Offset, Parser};

/// Span-tracking nom input: the rest of the text and its byte offset in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Src<'a> {
    rest: &'a str,
    offset: usize,
}

impl<'a> Src<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Src { rest: text, offset: 0 }
    }
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }
}

impl<'a> Input for Src<'a> {
    type Item = char;
    type Iter = std::str::Chars<'a>;
    type IterIndices = std::str::CharIndices<'a>;

    fn input_len(&self) -> usize {
        self.rest.len()
    }
    fn take(&self, index: usize) -> Self {
        Src { rest: &self.rest[..index], offset: self.offset }
    }
    fn take_from(&self, index: usize) -> Self {
        Src { rest: &self.rest[index..], offset: self.offset + index }
    }
    fn take_split(&self, index: usize) -> (Self, Self) {
        (self.take_from(index), self.take(index))
    }
    fn position<P>(&self, predicate: P) -> Option<usize>
    where
        P: Fn(Self::Item) -> bool,
    {
        self.rest.find(predicate)
    }
    fn iter_elements(&self) -> Self::Iter {
        self.rest.chars()
    }
    fn iter_indices(&self) -> Self::IterIndices {
        self.rest.char_indices()
    }
    fn slice_index(&self, count: usize) -> Result<usize, Needed> {
        self.rest.slice_index(count)
    }
}

impl<'b> Compare<&'b str> for Src<'_> {
    fn compare(&self, t: &'b str) -> CompareResult {
        self.rest.compare(t)
    }
    fn compare_no_case(&self, t: &'b str) -> CompareResult {
        self.rest.compare_no_case(t)
    }
}

impl Offset for Src<'_> {
    fn offset(&self, second: &Self) -> usize {
        second.offset.saturating_sub(self.offset)
    }
}

/// Token kinds. Keywords are words; the parser gives them meaning by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Word,
    Str,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Semi,
    /// `=`
    Eq,
    /// `==`
    EqEq,
    /// `!=`
    NotEq,
    /// `!`
    Bang,
    /// `*`
    Star,
    /// Text the lexer could not read; already reported.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub span: Span,
    /// The word, the decoded string, or the punctuation as written.
    pub text: String,
    /// 0-based line of the token's first byte.
    pub line: u32,
}

impl Token {
    pub(crate) fn is_word(&self, w: &str) -> bool {
        self.kind == Kind::Word && self.text == w
    }

    /// How the token is named in "found …" messages.
    pub(crate) fn describe(&self) -> String {
        match self.kind {
            Kind::Word => format!("`{}`", clip(&self.text)),
            Kind::Str => format!("string {}", clip(&serde_json::to_string(&self.text).unwrap_or_default())),
            Kind::Invalid => "unreadable text".to_string(),
            _ => format!("`{}`", self.text),
        }
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX { s.to_string() } else { format!("{}…", s.chars().take(MAX).collect::<String>()) }
}

/// A `#` comment, without the `#`'s line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawComment {
    pub span: Span,
    /// From `#` to the end of the line, trailing whitespace removed.
    pub text: String,
    pub line: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Lexed {
    pub tokens: Vec<Token>,
    pub comments: Vec<RawComment>,
    pub diagnostics: Vec<Diagnostic>,
    /// 0-based line numbers of lines that are blank (only whitespace).
    pub blank_lines: Vec<u32>,
}

/// Characters of a bare word.
pub(crate) fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | ':' | '-')
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{feff}')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lexeme {
    Space,
    Comment,
    Word,
    Str,
    /// A `"` that opens a string that never closes on its line.
    Unterminated,
    /// `'…'`: a string in the wrong quotes.
    SingleQuoted,
    Punct(Kind),
    Other,
}

/// Never-failing nom error for the lexer: positions are tracked by [`Src`].
#[derive(Debug)]
struct LexError;

impl<I> ParseError<I> for LexError {
    fn from_error_kind(_: I, _: ErrorKind) -> Self {
        LexError
    }
    fn append(_: I, _: ErrorKind, other: Self) -> Self {
        other
    }
}

type LResult<'a, O> = IResult<Src<'a>, O, LexError>;

/// A complete string: `"`, then characters other than `"`, `\` and line
/// breaks, or `\` and any character, then `"`. Escapes are checked when decoding.
fn string(i: Src<'_>) -> LResult<'_, ()> {
    let (mut i, _) = char('"').parse(i)?;
    loop {
        let (rest, c) = anychar(i)?;
        match c {
            '"' => return Ok((rest, ())),
            '\n' => return Err(nom::Err::Error(LexError)),
            '\\' => {
                let (rest, c) = anychar(rest)?;
                if c == '\n' {
                    return Err(nom::Err::Error(LexError));
                }
                i = rest;
            }
            _ => i = rest,
        }
    }
}

fn lexeme(i: Src<'_>) -> LResult<'_, Lexeme> {
    alt((
        value(Lexeme::Space, take_while1(is_space)),
        value(Lexeme::Comment, (char('#'), take_till(|c| c == '\n'))),
        value(Lexeme::Word, take_while1(is_word_char)),
        value(Lexeme::Str, string),
        value(Lexeme::Unterminated, (char('"'), take_till(|c| c == '\n'))),
        value(Lexeme::SingleQuoted, (char('\''), take_till(|c| c == '\'' || c == '\n'), opt(char('\'')))),
        map(
            alt((
                value(Kind::EqEq, tag("==")),
                value(Kind::NotEq, tag("!=")),
                value(Kind::Eq, tag("=")),
                value(Kind::Bang, tag("!")),
                value(Kind::LParen, tag("(")),
                value(Kind::RParen, tag(")")),
                value(Kind::LBrace, tag("{")),
                value(Kind::RBrace, tag("}")),
                value(Kind::Comma, tag(",")),
                value(Kind::Semi, tag(";")),
                value(Kind::Star, tag("*")),
            )),
            Lexeme::Punct,
        ),
        value(Lexeme::Other, anychar),
    ))
    .parse(i)
}

/// Splits `text` into tokens and comments. Never fails; problems are diagnostics.
pub(crate) fn lex(file: FileId, text: &str) -> Lexed {
    let mut out = Lexed::default();
    let mut src = Src::new(text);
    let mut line: u32 = 0;
    // A run of unreadable characters (start, end, line), reported as one diagnostic.
    let mut other_run: Option<(usize, usize, u32)> = None;
    while src.input_len() > 0 {
        let start = src.offset();
        let (rest, lx) = match lexeme(src) {
            Ok(r) => r,
            // `lexeme` ends in `anychar`, which only fails on empty input.
            Err(_) => break,
        };
        let end = rest.offset();
        let raw = text.get(start..end).unwrap_or("");
        if lx == Lexeme::Other {
            other_run = Some(match other_run {
                Some((s, _, l)) => (s, end, l),
                None => (start, end, line),
            });
        } else if let Some((s, e, l)) = other_run.take() {
            push_invalid_chars(&mut out, file, text, s, e, l);
        }
        let span = Span::new(file, start, end);
        match lx {
            Lexeme::Space => {}
            Lexeme::Comment => out.comments.push(RawComment { span, text: raw.trim_end().to_string(), line }),
            Lexeme::Word => out.tokens.push(Token { kind: Kind::Word, span, text: raw.to_string(), line }),
            Lexeme::Str => match decode_string(file, raw, start) {
                Ok(s) => out.tokens.push(Token { kind: Kind::Str, span, text: s, line }),
                Err(d) => {
                    out.diagnostics.push(*d);
                    out.tokens.push(Token { kind: Kind::Invalid, span, text: raw.to_string(), line });
                }
            },
            Lexeme::Unterminated => {
                out.diagnostics.push(
                    Diagnostic::new(&codes::EGRET_SYNTAX, "unterminated string")
                        .primary(Span::new(file, start, start + 1), "this `\"` is never closed on its line")
                        .help("close the string with `\"` before the end of the line; write a line break as `\\n`"),
                );
                out.tokens.push(Token { kind: Kind::Invalid, span, text: raw.to_string(), line });
            }
            Lexeme::SingleQuoted => {
                let inner = raw.trim_start_matches('\'').trim_end_matches('\'');
                out.diagnostics.push(
                    Diagnostic::new(&codes::EGRET_SYNTAX, format!("single-quoted string `{}`", visible(raw)))
                        .primary(span, "strings use double quotes")
                        .help(format!("write {}", super::print::quote(inner))),
                );
                out.tokens.push(Token { kind: Kind::Invalid, span, text: raw.to_string(), line });
            }
            Lexeme::Punct(kind) => out.tokens.push(Token { kind, span, text: raw.to_string(), line }),
            Lexeme::Other => {}
        }
        line += raw.matches('\n').count() as u32;
        src = rest;
    }
    if let Some((s, e, l)) = other_run.take() {
        push_invalid_chars(&mut out, file, text, s, e, l);
    }
    // A line is blank when it holds only whitespace and ends in a newline
    // (the empty text after a final newline is not a line).
    let lines: Vec<&str> = text.split('\n').collect();
    let complete = lines.len().saturating_sub(1);
    out.blank_lines = lines
        .iter()
        .take(complete)
        .enumerate()
        .filter(|(_, l)| l.chars().all(is_space))
        .map(|(n, _)| n as u32)
        .collect();
    out
}

fn push_invalid_chars(out: &mut Lexed, file: FileId, text: &str, start: usize, end: usize, line: u32) {
    let raw = text.get(start..end).unwrap_or("");
    let span = Span::new(file, start, end);
    let what = if raw.chars().count() == 1 { "character" } else { "characters" };
    let help = "bare words use letters, digits and `. _ / : -`; write other text as a double-quoted string";
    out.diagnostics.push(
        Diagnostic::new(&codes::EGRET_SYNTAX, format!("unexpected {what} `{}`", visible(raw)))
            .primary(span, "not part of any `.egret` token")
            .help(help),
    );
    out.tokens.push(Token { kind: Kind::Invalid, span, text: raw.to_string(), line });
}

/// `s` as written, or escaped when it holds control or invisible characters.
fn visible(s: &str) -> String {
    if s.chars().all(|c| !c.is_control() && !c.is_whitespace() || c == ' ') {
        s.to_string()
    } else {
        s.escape_debug().to_string()
    }
}

/// Decodes a complete JSON string literal (`raw` includes the quotes) that
/// starts at byte `base` of the file.
fn decode_string(file: FileId, raw: &str, base: usize) -> Result<String, Box<Diagnostic>> {
    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.char_indices().peekable();
    let at = |s: usize, e: usize| Span::new(file, base + 1 + s, base + 1 + e);
    let bad = |span: Span, msg: String, help: &str| {
        Box::new(Diagnostic::new(&codes::EGRET_SYNTAX, msg).primary(span, "here").help(help.to_string()))
    };
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            if (c as u32) < 0x20 {
                return Err(bad(
                    at(i, i + c.len_utf8()),
                    format!("control character `{}` in a string", c.escape_debug()),
                    "write control characters as JSON escapes, e.g. `\\t` or `\\u0001`",
                ));
            }
            out.push(c);
            continue;
        }
        let Some((j, e)) = chars.next() else {
            return Err(bad(at(i, i + 1), "unfinished escape".into(), "write a backslash as `\\\\`"));
        };
        let simple = match e {
            '"' => Some('"'),
            '\\' => Some('\\'),
            '/' => Some('/'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            _ => None,
        };
        if let Some(s) = simple {
            out.push(s);
            continue;
        }
        if e != 'u' {
            return Err(bad(
                at(i, j + e.len_utf8()),
                format!("unknown escape `\\{}`", e.escape_debug()),
                "strings use JSON escapes: `\\\"`, `\\\\`, `\\/`, `\\b`, `\\f`, `\\n`, `\\r`, `\\t`, `\\uXXXX`",
            ));
        }
        let hex = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| -> Option<u32> {
            let mut v = 0u32;
            for _ in 0..4 {
                let (_, h) = chars.next()?;
                v = v * 16 + h.to_digit(16)?;
            }
            Some(v)
        };
        let bad_u = |end: usize| {
            bad(
                at(i, end),
                "invalid `\\u` escape".into(),
                "`\\u` takes four hex digits; characters above U+FFFF are a surrogate pair `\\uD83D\\uDE00`",
            )
        };
        let end_of =
            |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| chars.peek().map_or(inner.len(), |&(k, _)| k);
        let Some(hi) = hex(&mut chars) else {
            let end = end_of(&mut chars);
            return Err(bad_u(end));
        };
        let cp = if (0xD800..0xDC00).contains(&hi) {
            let ok = chars.next().map(|(_, c)| c) == Some('\\') && chars.next().map(|(_, c)| c) == Some('u');
            let lo = if ok { hex(&mut chars) } else { None };
            match lo {
                Some(lo) if (0xDC00..0xE000).contains(&lo) => 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00),
                _ => {
                    let end = end_of(&mut chars);
                    return Err(bad_u(end));
                }
            }
        } else {
            hi
        };
        match char::from_u32(cp) {
            Some(ch) => out.push(ch),
            None => {
                let end = end_of(&mut chars);
                return Err(bad_u(end));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, String)> {
        lex(FileId(0), text).tokens.into_iter().map(|t| (t.kind, t.text)).collect()
    }

    #[test]
    fn words_punctuation_and_strings() {
        let toks = kinds("a!=b c==\"x\\ty\" !k (*) ::/0, 10.0.0.0/8;");
        let expected = vec![
            (Kind::Word, "a"),
            (Kind::NotEq, "!="),
            (Kind::Word, "b"),
            (Kind::Word, "c"),
            (Kind::EqEq, "=="),
            (Kind::Str, "x\ty"),
            (Kind::Bang, "!"),
            (Kind::Word, "k"),
            (Kind::LParen, "("),
            (Kind::Star, "*"),
            (Kind::RParen, ")"),
            (Kind::Word, "::/0"),
            (Kind::Comma, ","),
            (Kind::Word, "10.0.0.0/8"),
            (Kind::Semi, ";"),
        ];
        let expected: Vec<(Kind, String)> = expected.into_iter().map(|(k, s)| (k, s.to_string())).collect();
        assert_eq!(toks, expected);
    }

    #[test]
    fn comments_and_lines() {
        let l = lex(FileId(0), "# one  \n\nword # two\n");
        assert_eq!(l.comments.len(), 2);
        assert_eq!(l.comments[0].text, "# one");
        assert_eq!(l.comments[0].line, 0);
        assert_eq!(l.comments[1].text, "# two");
        assert_eq!(l.comments[1].line, 2);
        assert_eq!(l.tokens[0].line, 2);
        assert_eq!(l.blank_lines, vec![1]);
    }

    #[test]
    fn unicode_escapes_and_surrogates() {
        assert_eq!(kinds(r#""\u00e9\ud83d\ude00\/""#), vec![(Kind::Str, "é😀/".to_string())]);
        for bad in [r#""\x""#, r#""\u12""#, r#""\ud83d""#, r#""\ud83dx""#, "\"a\u{1}\""] {
            let l = lex(FileId(0), bad);
            assert_eq!(l.diagnostics.len(), 1, "{bad}");
            assert_eq!(l.diagnostics[0].code.id, "E0003");
            assert_eq!(l.tokens[0].kind, Kind::Invalid);
        }
    }

    #[test]
    fn invalid_characters_are_one_diagnostic_per_run() {
        let text = "a @@é b \"open\nc";
        let l = lex(FileId(0), text);
        assert_eq!(l.diagnostics.len(), 2);
        let span = l.diagnostics[0].primary_span().unwrap_or_default();
        assert_eq!(&text[span.range()], "@@é");
        let span = l.diagnostics[1].primary_span().unwrap_or_default();
        assert_eq!(&text[span.range()], "\"");
        assert_eq!(l.tokens.last().map(|t| t.text.as_str()), Some("c"));
    }
}
