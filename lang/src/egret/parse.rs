//! The `.egret` parser: tokens to a concrete syntax tree (nom over [`Toks`]),
//! then lowering to [`ast::Policy`] with diagnostics, and comment attachment.
//!
//! Recovery: a statement that fails to parse is reported once (E0003) and
//! skipped up to the next synchronisation point — `}`, `;`, a `policy NAME {`
//! header, or a statement keyword that starts a line or follows `;`, `)`,
//! `{` or `}`. A policy whose header is broken is reported and skipped up to
//! the next `policy` header. Every loop consumes at least one token per
//! iteration, so parsing terminates on any input.

use super::lex::{self, Kind, Lexed, Token};
use super::trivia::{Anchor, Comment, Comments, anchor};
use crate::ast::{GatewaySpec, LabelSelector, Operator, Origin, Policy, Requirement, SelectorItem};
use crate::codes;
use crate::diag::{self, Diagnostic};
use crate::net::Cidr;
use crate::source::{FileId, Span, Spanned};
use nom::branch::alt;
use nom::combinator::{cut, map, opt, success};
use nom::error::{ErrorKind, ParseError};
use nom::multi::many0;
use nom::sequence::preceded;
use nom::{IResult, Input, Needed, Parser};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Words that start a statement or a policy; never read as addresses.
const RESERVED: [&str; 5] = ["select", "to", "except", "via", "policy"];
const STATEMENT_KEYWORDS: [&str; 4] = ["select", "to", "except", "via"];

const HELP_FILE: &str = "a `.egret` file is a list of `policy NAME { … }` blocks";
const HELP_NAME: &str = "name the policy like a Kubernetes object: `policy egress-payments {`";
const HELP_STMT: &str =
    "a policy body holds statements: `select …`, `to CIDR, …`, `except CIDR, …` and `via nodes(…)`, one per line";
const HELP_ITEM: &str = "select pods with `select pods(app = web)`, optionally followed by `in namespaces(…)` and `on nodes(…)`, or whole namespaces with `select namespaces(…)`";
const HELP_SEL: &str =
    "a selector is `(*)` for everything, or requirements in parentheses: `(app = web, tier in (a, b))`";
const HELP_STAR: &str = "`*` stands alone: write `(*)` for everything, or list requirements without it";
const HELP_REQ: &str = "requirements are `key = value`, `key != value`, `key in (v, …)`, `key notin (v, …)`, `key` (exists) or `!key` (does not exist), separated by `,`";
const HELP_VALUE: &str =
    "a label value is a bare word like `payment-service` or a double-quoted string like `\"true\"`";
const HELP_VALUES: &str =
    "`in` and `notin` take a parenthesised list of at least one value, separated by `,`: `tier in (a, b)`";
const HELP_CIDR: &str = "write CIDRs as `address/length`, separated by `,`: `to 0.0.0.0/0, ::/0`";
const HELP_GW: &str =
    "a gateway is `via nodes(…)`, optionally followed by `ip ADDRESS` (or `floating ip ADDRESS`) or `interface NAME`";
const HELP_FLOATING: &str = "`floating` makes an explicit egress IP floating: write `floating ip ADDRESS` (any node the selector matches may hold it)";
const HELP_IP: &str = "write one IPv4 or IPv6 address: `ip 192.0.2.10`";
const HELP_IFACE: &str = "write the interface name as a word or a string: `interface eth0`";

/// The token stream as nom input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Toks<'t> {
    toks: &'t [Token],
    eof: Span,
}

impl<'t> Input for Toks<'t> {
    type Item = &'t Token;
    type Iter = std::slice::Iter<'t, Token>;
    type IterIndices = std::iter::Enumerate<std::slice::Iter<'t, Token>>;

    fn input_len(&self) -> usize {
        self.toks.len()
    }
    fn take(&self, index: usize) -> Self {
        Toks { toks: &self.toks[..index], eof: self.eof }
    }
    fn take_from(&self, index: usize) -> Self {
        Toks { toks: &self.toks[index..], eof: self.eof }
    }
    fn take_split(&self, index: usize) -> (Self, Self) {
        let (prefix, suffix) = self.toks.split_at(index);
        (Toks { toks: suffix, eof: self.eof }, Toks { toks: prefix, eof: self.eof })
    }
    fn position<P>(&self, predicate: P) -> Option<usize>
    where
        P: Fn(Self::Item) -> bool,
    {
        self.toks.iter().position(predicate)
    }
    fn iter_elements(&self) -> Self::Iter {
        self.toks.iter()
    }
    fn iter_indices(&self) -> Self::IterIndices {
        self.toks.iter().enumerate()
    }
    fn slice_index(&self, count: usize) -> Result<usize, Needed> {
        if self.toks.len() >= count { Ok(count) } else { Err(Needed::new(count - self.toks.len())) }
    }
}

/// Why the grammar stopped: at which token, what would have been accepted
/// there. The token itself is looked up by the driver (kept small: nom
/// creates one of these for every failed alternative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// Tokens left at the failing position (fewer = got further).
    remaining: usize,
    expected: Vec<&'static str>,
    help: Option<&'static str>,
    /// A secondary label, e.g. the `(` an expected `)` would close.
    related: Option<(Span, &'static str)>,
}

impl SyntaxError {
    fn at(i: Toks<'_>, expected: &'static str, help: &'static str) -> Self {
        SyntaxError { remaining: i.toks.len(), expected: vec![expected], help: Some(help), related: None }
    }
}

impl<'t> ParseError<Toks<'t>> for SyntaxError {
    fn from_error_kind(input: Toks<'t>, _: ErrorKind) -> Self {
        SyntaxError { remaining: input.toks.len(), expected: Vec::new(), help: None, related: None }
    }
    fn append(_: Toks<'t>, _: ErrorKind, other: Self) -> Self {
        other
    }
    fn or(mut self, other: Self) -> Self {
        match self.remaining.cmp(&other.remaining) {
            std::cmp::Ordering::Less => self,
            std::cmp::Ordering::Greater => other,
            std::cmp::Ordering::Equal => {
                for x in other.expected {
                    if !self.expected.contains(&x) {
                        self.expected.push(x);
                    }
                }
                self.help = self.help.or(other.help);
                self.related = self.related.or(other.related);
                self
            }
        }
    }
}

type PResult<'t, O> = IResult<Toks<'t>, O, SyntaxError>;

fn one_of<'t>(
    what: &'static str,
    help: &'static str,
    ok: impl Fn(&Token) -> bool,
) -> impl Fn(Toks<'t>) -> PResult<'t, &'t Token> {
    move |i: Toks<'t>| match i.toks.first() {
        Some(t) if ok(t) => Ok((i.take_from(1), t)),
        _ => Err(nom::Err::Error(SyntaxError::at(i, what, help))),
    }
}

fn punct<'t>(kind: Kind, what: &'static str, help: &'static str) -> impl Fn(Toks<'t>) -> PResult<'t, &'t Token> {
    one_of(what, help, move |t| t.kind == kind)
}

fn kw<'t>(word: &'static str, what: &'static str, help: &'static str) -> impl Fn(Toks<'t>) -> PResult<'t, &'t Token> {
    one_of(what, help, move |t| t.is_word(word))
}

/// A word or a string.
fn text<'t>(what: &'static str, help: &'static str) -> impl Fn(Toks<'t>) -> PResult<'t, &'t Token> {
    one_of(what, help, |t| matches!(t.kind, Kind::Word | Kind::Str))
}

/// A word or a string that is not a statement keyword (`to a, b,` followed by
/// `except` must not read `except` as an address).
fn address<'t>(what: &'static str, help: &'static str) -> impl Fn(Toks<'t>) -> PResult<'t, &'t Token> {
    one_of(what, help, |t| t.kind == Kind::Str || (t.kind == Kind::Word && !RESERVED.contains(&t.text.as_str())))
}

/// The span from the first to the last token `p` consumed.
fn spanned<'t, O>(
    mut p: impl Parser<Toks<'t>, Output = O, Error = SyntaxError>,
) -> impl FnMut(Toks<'t>) -> PResult<'t, (O, Span)> {
    move |i: Toks<'t>| {
        let (rest, o) = p.parse(i)?;
        let n = i.toks.len().saturating_sub(rest.toks.len());
        let span = match (i.toks.first(), n.checked_sub(1).and_then(|k| i.toks.get(k))) {
            (Some(a), Some(b)) => a.span.to(b.span),
            (Some(a), None) => Span::new(a.span.file, a.span.start as usize, a.span.start as usize),
            _ => i.eof,
        };
        Ok((rest, (o, span)))
    }
}

/// `p (, p)*`: after a `,` the next element is required.
fn list1<'t, O>(
    mut p: impl Parser<Toks<'t>, Output = O, Error = SyntaxError>,
) -> impl FnMut(Toks<'t>) -> PResult<'t, Vec<O>> {
    move |i: Toks<'t>| {
        let (mut i, first) = p.parse(i)?;
        let mut out = vec![first];
        while let Ok((after_comma, _)) = punct(Kind::Comma, "`,`", HELP_REQ)(i) {
            let (rest, o) = match p.parse(after_comma) {
                Err(nom::Err::Error(e)) => return Err(nom::Err::Failure(e)),
                r => r?,
            };
            out.push(o);
            i = rest;
        }
        Ok((i, out))
    }
}

/// `p`, which closes the `(` at `open`: its errors point back at `open`.
fn closing<'t, O>(
    open: Span,
    mut p: impl Parser<Toks<'t>, Output = O, Error = SyntaxError>,
) -> impl FnMut(Toks<'t>) -> PResult<'t, O> {
    move |i: Toks<'t>| {
        p.parse(i).map_err(|e| {
            e.map(|mut e| {
                e.related = e.related.or(Some((open, "to close this `(`")));
                e
            })
        })
    }
}

// ---- concrete syntax ----

#[derive(Debug, Clone)]
enum SelBody<'t> {
    All,
    Empty { parens: Span },
    Reqs(Vec<Req<'t>>),
}

#[derive(Debug, Clone)]
struct Sel<'t> {
    keyword: &'t Token,
    span: Span,
    body: SelBody<'t>,
}

#[derive(Debug, Clone)]
enum Op<'t> {
    Label { value: &'t Token },
    NotEqual { op: &'t Token, value: &'t Token },
    In { op: &'t Token, values: Vec<&'t Token> },
    NotIn { op: &'t Token, values: Vec<&'t Token> },
    Exists,
    DoesNotExist { bang: &'t Token },
}

#[derive(Debug, Clone)]
struct Req<'t> {
    span: Span,
    key: &'t Token,
    op: Op<'t>,
}

#[derive(Debug, Clone)]
struct Item<'t> {
    span: Span,
    pods: Option<Sel<'t>>,
    namespaces: Option<Sel<'t>>,
    nodes: Option<Sel<'t>>,
}

#[derive(Debug, Clone)]
enum Attr<'t> {
    /// `[floating] ip ADDRESS`; `floating` = the keyword's span.
    Ip {
        span: Span,
        value: &'t Token,
        floating: Option<Span>,
    },
    Interface {
        span: Span,
        value: &'t Token,
    },
}

#[derive(Debug, Clone)]
struct Gateway<'t> {
    span: Span,
    nodes: Sel<'t>,
    attrs: Vec<Attr<'t>>,
}

#[derive(Debug, Clone)]
enum Stmt<'t> {
    Select(Item<'t>),
    To(Vec<&'t Token>),
    Except(Vec<&'t Token>),
    Via(Gateway<'t>),
}

// ---- grammar ----

fn sel<'t>(
    keyword: &'static str,
    what: &'static str,
    help: &'static str,
) -> impl Parser<Toks<'t>, Output = Sel<'t>, Error = SyntaxError> {
    map(spanned((kw(keyword, what, help), cut(sel_body))), |((keyword, body), span)| Sel { keyword, span, body })
}

fn sel_body<'t>(i: Toks<'t>) -> PResult<'t, SelBody<'t>> {
    let (i, open) = punct(Kind::LParen, "`(`", HELP_SEL)(i)?;
    alt((
        map(
            (punct(Kind::Star, "`*`", HELP_SEL), closing(open.span, cut(punct(Kind::RParen, "`)`", HELP_STAR)))),
            |_| SelBody::All,
        ),
        map(punct(Kind::RParen, "`)`", HELP_SEL), move |close| SelBody::Empty { parens: open.span.to(close.span) }),
        map((cut(list1(req)), closing(open.span, cut(punct(Kind::RParen, "`,` or `)`", HELP_REQ)))), |(reqs, _)| {
            SelBody::Reqs(reqs)
        }),
    ))
    .parse(i)
}

fn label_key<'t>(i: Toks<'t>) -> PResult<'t, &'t Token> {
    text("a label key", HELP_REQ)(i)
}

fn label_value<'t>(i: Toks<'t>) -> PResult<'t, &'t Token> {
    text("a label value", HELP_VALUE)(i)
}

fn value_list<'t>(i: Toks<'t>) -> PResult<'t, Vec<&'t Token>> {
    let (i, open) = punct(Kind::LParen, "`(`", HELP_VALUES)(i)?;
    let (i, values) = cut(list1(text("a label value", HELP_VALUES))).parse(i)?;
    let (i, _) = closing(open.span, cut(punct(Kind::RParen, "`,` or `)`", HELP_VALUES))).parse(i)?;
    Ok((i, values))
}

fn operator<'t>(i: Toks<'t>) -> PResult<'t, Op<'t>> {
    alt((
        map(
            (alt((punct(Kind::Eq, "`=`", HELP_REQ), punct(Kind::EqEq, "`==`", HELP_REQ))), cut(label_value)),
            |(_, value)| Op::Label { value },
        ),
        map((punct(Kind::NotEq, "`!=`", HELP_REQ), cut(label_value)), |(op, value)| Op::NotEqual { op, value }),
        map((kw("in", "`in`", HELP_REQ), cut(value_list)), |(op, values)| Op::In { op, values }),
        map((kw("notin", "`notin`", HELP_REQ), cut(value_list)), |(op, values)| Op::NotIn { op, values }),
    ))
    .parse(i)
}

fn req<'t>(i: Toks<'t>) -> PResult<'t, Req<'t>> {
    map(
        spanned(alt((
            map((punct(Kind::Bang, "`!`", HELP_REQ), cut(label_key)), |(bang, key)| (key, Op::DoesNotExist { bang })),
            (label_key, map(opt(operator), |op| op.unwrap_or(Op::Exists))),
        ))),
        |((key, op), span)| Req { span, key, op },
    )
    .parse(i)
}

fn on_nodes<'t>(i: Toks<'t>) -> PResult<'t, Option<Sel<'t>>> {
    opt(preceded(kw("on", "`on`", HELP_ITEM), cut(sel("nodes", "`nodes`", HELP_ITEM)))).parse(i)
}

fn item<'t>(i: Toks<'t>) -> PResult<'t, Item<'t>> {
    map(
        spanned(alt((
            (
                map(sel("pods", "`pods`", HELP_ITEM), Some),
                opt(preceded(kw("in", "`in`", HELP_ITEM), cut(sel("namespaces", "`namespaces`", HELP_ITEM)))),
                on_nodes,
            ),
            (success(None), map(sel("namespaces", "`namespaces`", HELP_ITEM), Some), on_nodes),
        ))),
        |((pods, namespaces, nodes), span)| Item { span, pods, namespaces, nodes },
    )
    .parse(i)
}

fn attr<'t>(i: Toks<'t>) -> PResult<'t, Attr<'t>> {
    alt((
        map(
            spanned((
                kw("floating", "`floating`", HELP_GW),
                cut(kw("ip", "`ip` after `floating`", HELP_FLOATING)),
                cut(address("an IP address", HELP_IP)),
            )),
            |((floating, _, value), span)| Attr::Ip { span, value, floating: Some(floating.span) },
        ),
        map(spanned((kw("ip", "`ip`", HELP_GW), cut(address("an IP address", HELP_IP)))), |((_, value), span)| {
            Attr::Ip { span, value, floating: None }
        }),
        map(
            spanned((kw("interface", "`interface`", HELP_GW), cut(text("an interface name", HELP_IFACE)))),
            |((_, value), span)| Attr::Interface { span, value },
        ),
    ))
    .parse(i)
}

fn gateway<'t>(i: Toks<'t>) -> PResult<'t, Gateway<'t>> {
    map(spanned((sel("nodes", "`nodes`", HELP_GW), many0(attr))), |((nodes, attrs), span)| Gateway {
        span,
        nodes,
        attrs,
    })
    .parse(i)
}

fn statement<'t>(i: Toks<'t>) -> PResult<'t, Stmt<'t>> {
    alt((
        map(preceded(kw("select", "`select`", HELP_STMT), cut(item)), Stmt::Select),
        map(preceded(kw("to", "`to`", HELP_STMT), cut(list1(address("a CIDR", HELP_CIDR)))), Stmt::To),
        map(preceded(kw("except", "`except`", HELP_STMT), cut(list1(address("a CIDR", HELP_CIDR)))), Stmt::Except),
        map(preceded(kw("via", "`via`", HELP_STMT), cut(gateway)), Stmt::Via),
    ))
    .parse(i)
}

// ---- driver ----

/// Which unit of the file a token belongs to, for comment attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Skipped after an error.
    Nothing,
    /// `policy NAME {` of the policy anchored here.
    Header(Anchor),
    /// A statement (index into `units`).
    Stmt(usize),
    /// The closing `}` of the policy anchored here.
    Close(Anchor),
}

#[derive(Debug)]
struct Unit {
    /// The statement's first AST node; `None` when nothing of it was kept.
    anchor: Option<Anchor>,
    /// Index of the statement's last token (including `;` after it).
    last: usize,
}

/// What [`parse_file`] produces.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub policies: Vec<Policy>,
    pub comments: Comments,
    /// Sorted by position ([`diag::sort_dedup`]).
    pub diagnostics: Vec<Diagnostic>,
}

struct Driver<'t> {
    toks: &'t [Token],
    eof: Span,
    pos: usize,
    diags: Vec<Diagnostic>,
    owner: Vec<Owner>,
    units: Vec<Unit>,
    policies: Vec<Policy>,
}

#[derive(Default)]
struct Body {
    selectors: Vec<SelectorItem>,
    destination_cidrs: Vec<Spanned<Cidr>>,
    excluded_cidrs: Vec<Spanned<Cidr>>,
    gateways: Vec<GatewaySpec>,
}

/// Parses one `.egret` file. Never panics; see the module docs for recovery.
pub fn parse_file(file: FileId, text: &str) -> Parsed {
    let lexed = lex::lex(file, text);
    let mut d = Driver {
        toks: &lexed.tokens,
        eof: Span::new(file, text.len(), text.len()),
        pos: 0,
        diags: Vec::new(),
        owner: vec![Owner::Nothing; lexed.tokens.len()],
        units: Vec::new(),
        policies: Vec::new(),
    };
    d.file();
    let comments = attach_comments(&lexed, &d.owner, &d.units);
    let mut diagnostics = lexed.diagnostics.clone();
    diagnostics.append(&mut d.diags);
    diag::sort_dedup(&mut diagnostics);
    Parsed { policies: d.policies, comments, diagnostics }
}

fn list_expected(items: &[&str]) -> String {
    match items {
        [] => "something else".to_string(),
        [one] => one.to_string(),
        [a, b] => format!("{a} or {b}"),
        [init @ .., last] => format!("one of {}, or {last}", init.join(", ")),
    }
}

/// A keyword among `expected` (written with backticks) that the word `t` is
/// probably a misspelling of.
fn did_you_mean(t: &Token, expected: &[&str]) -> Option<String> {
    if t.kind != Kind::Word {
        return None;
    }
    let words: Vec<&str> = expected
        .iter()
        .filter_map(|e| e.strip_prefix('`').and_then(|e| e.strip_suffix('`')))
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        .collect();
    crate::k8s::did_you_mean(&t.text, &words).filter(|w| *w != t.text).map(str::to_string)
}

impl<'t> Driver<'t> {
    fn tok(&self, j: usize) -> Option<&'t Token> {
        self.toks.get(j)
    }

    fn first_on_line(&self, j: usize) -> bool {
        match (j.checked_sub(1).and_then(|k| self.toks.get(k)), self.toks.get(j)) {
            (Some(prev), Some(t)) => prev.line != t.line,
            _ => true,
        }
    }

    /// `policy` at the start of a line, or `policy NAME {`.
    fn at_policy_header(&self, j: usize) -> bool {
        let Some(t) = self.tok(j) else { return false };
        if !t.is_word("policy") {
            return false;
        }
        self.first_on_line(j)
            || (self.tok(j + 1).is_some_and(|n| matches!(n.kind, Kind::Word | Kind::Str))
                && self.tok(j + 2).is_some_and(|b| b.kind == Kind::LBrace))
    }

    fn at_statement_sync(&self, j: usize) -> bool {
        let Some(t) = self.tok(j) else { return true };
        if matches!(t.kind, Kind::RBrace | Kind::Semi) || self.at_policy_header(j) {
            return true;
        }
        t.kind == Kind::Word
            && STATEMENT_KEYWORDS.contains(&t.text.as_str())
            && (self.first_on_line(j)
                || j.checked_sub(1)
                    .and_then(|k| self.tok(k))
                    .is_some_and(|p| matches!(p.kind, Kind::Semi | Kind::RParen | Kind::LBrace | Kind::RBrace)))
    }

    fn input(&self, from: usize) -> Toks<'t> {
        Toks { toks: self.toks.get(from..).unwrap_or(&[]), eof: self.eof }
    }

    fn found(&self, j: usize) -> (Span, String) {
        match self.tok(j) {
            Some(t) => (t.span, t.describe()),
            None => (self.eof, "end of file".to_string()),
        }
    }

    fn file(&mut self) {
        while self.pos < self.toks.len() {
            if self.tok(self.pos).is_some_and(|t| t.is_word("policy")) {
                self.policy();
                continue;
            }
            if let Some(t) = self.tok(self.pos).filter(|t| t.kind != Kind::Invalid) {
                let (span, found) = self.found(self.pos);
                let d = Diagnostic::new(&codes::EGRET_SYNTAX, format!("expected `policy`, found {found}"))
                    .primary(span, "expected `policy`");
                self.diags.push(match did_you_mean(t, &["`policy`"]) {
                    Some(s) => d.help(format!("did you mean `{s}`?")).note(HELP_FILE),
                    None => d.help(HELP_FILE),
                });
            }
            self.pos += 1;
            while self.pos < self.toks.len() && !self.at_policy_header(self.pos) {
                self.pos += 1;
            }
        }
    }

    fn policy(&mut self) {
        let Some(kw_tok) = self.tok(self.pos) else {
            return;
        };
        let pa = anchor(kw_tok.span);
        self.owner[self.pos] = Owner::Header(pa);
        self.pos += 1;

        let name = match self.tok(self.pos) {
            Some(t) if matches!(t.kind, Kind::Word | Kind::Str) => {
                self.owner[self.pos] = Owner::Header(pa);
                self.pos += 1;
                Some(Spanned::new(t.text.clone(), t.span))
            }
            other => {
                if other.is_none_or(|t| t.kind != Kind::Invalid) {
                    let (span, found) = self.found(self.pos);
                    self.diags.push(
                        Diagnostic::new(&codes::EGRET_SYNTAX, format!("expected a policy name, found {found}"))
                            .primary(span, "expected a policy name")
                            .secondary(kw_tok.span, "policy starts here")
                            .help(HELP_NAME),
                    );
                }
                if other.is_some_and(|t| t.kind == Kind::Invalid) {
                    self.pos += 1;
                }
                None
            }
        };

        let open = match self.tok(self.pos) {
            Some(t) if t.kind == Kind::LBrace => {
                self.owner[self.pos] = Owner::Header(pa);
                self.pos += 1;
                Some(t.span)
            }
            other => {
                if name.is_some() && other.is_none_or(|t| t.kind != Kind::Invalid) {
                    let (span, found) = self.found(self.pos);
                    self.diags.push(
                        Diagnostic::new(&codes::EGRET_SYNTAX, format!("expected `{{`, found {found}"))
                            .primary(span, "expected `{`")
                            .help("the statements of a policy go in braces: `policy NAME { … }`"),
                    );
                }
                let statement_follows =
                    other.is_some_and(|t| t.kind == Kind::Word && STATEMENT_KEYWORDS.contains(&t.text.as_str()));
                if !statement_follows {
                    while self.pos < self.toks.len() && !self.at_policy_header(self.pos) {
                        self.pos += 1;
                    }
                    return;
                }
                None
            }
        };

        let mut body = Body::default();
        let mut last_unit: Option<usize> = None;
        let close = loop {
            let Some(t) = self.tok(self.pos) else {
                self.unclosed(open, name.as_ref(), self.eof);
                break None;
            };
            match t.kind {
                Kind::RBrace => {
                    self.owner[self.pos] = Owner::Close(pa);
                    self.pos += 1;
                    break Some(t.span);
                }
                Kind::Semi => {
                    match last_unit {
                        Some(u) => {
                            self.owner[self.pos] = Owner::Stmt(u);
                            self.units[u].last = self.pos;
                        }
                        None => self.owner[self.pos] = Owner::Header(pa),
                    }
                    self.pos += 1;
                }
                _ if self.at_policy_header(self.pos) => {
                    self.unclosed(open, name.as_ref(), t.span);
                    break None;
                }
                _ => last_unit = self.statement(&mut body).or(last_unit),
            }
        };

        let Some(name) = name else { return };
        let end =
            close.or_else(|| self.pos.checked_sub(1).and_then(|k| self.tok(k)).map(|t| t.span)).unwrap_or(kw_tok.span);
        let gateways = body.gateways;
        let (egress_gateway, egress_gateways) =
            if gateways.len() == 1 { (gateways.into_iter().next(), Vec::new()) } else { (None, gateways) };
        self.policies.push(Policy {
            name,
            uid: None,
            namespace: None,
            origin: Origin::Egret,
            span: kw_tok.span.to(end),
            spec_span: open.unwrap_or(kw_tok.span).to(end),
            selectors: body.selectors,
            destination_cidrs: body.destination_cidrs,
            excluded_cidrs: body.excluded_cidrs,
            egress_gateway,
            egress_gateways,
        });
    }

    fn unclosed(&mut self, open: Option<Span>, name: Option<&Spanned<String>>, stop: Span) {
        // Without `{` the missing brace was reported already.
        let Some(open) = open else { return };
        let what = name.map_or_else(|| "policy".to_string(), |n| format!("policy `{}`", n.value));
        let stop_label = if stop == self.eof { "the file ends here" } else { "the next policy starts here" };
        self.diags.push(
            Diagnostic::new(&codes::EGRET_SYNTAX, format!("unclosed block of {what}"))
                .primary(open, "this `{` is never closed")
                .secondary(stop, stop_label)
                .help("add `}` after the last statement of the policy"),
        );
    }

    /// Parses one statement at `self.pos` into `body`; returns its unit.
    fn statement(&mut self, body: &mut Body) -> Option<usize> {
        let start = self.pos;
        let n = self.toks.len();
        match statement(self.input(start)) {
            Ok((rest, stmt)) => {
                let end = n.saturating_sub(rest.toks.len()).max(start + 1);
                let anchor = self.lower(stmt, body);
                let unit = self.units.len();
                self.units.push(Unit { anchor, last: end - 1 });
                for o in self.owner.iter_mut().take(end).skip(start) {
                    *o = Owner::Stmt(unit);
                }
                self.pos = end;
                Some(unit)
            }
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
                let at = n.saturating_sub(e.remaining).clamp(start, n);
                let (span, found) = self.found(at);
                if self.tok(at).is_none_or(|t| t.kind != Kind::Invalid) {
                    let mut expected = e.expected;
                    let mut help = e.help.unwrap_or(HELP_STMT);
                    if at == start {
                        expected.push("`}`");
                        help = HELP_STMT;
                    }
                    let suggestion = self.tok(at).and_then(|t| did_you_mean(t, &expected));
                    let expected = list_expected(&expected);
                    let mut d = Diagnostic::new(&codes::EGRET_SYNTAX, format!("expected {expected}, found {found}"))
                        .primary(span, format!("expected {expected}"));
                    if let Some((span, label)) = e.related {
                        d = d.secondary(span, label);
                    }
                    d = match suggestion {
                        Some(s) => d.help(format!("did you mean `{s}`?")).note(help),
                        None => d.help(help),
                    };
                    self.diags.push(d);
                }
                self.pos = at.max(start + 1);
                while self.pos < n && !self.at_statement_sync(self.pos) {
                    self.pos += 1;
                }
                None
            }
            Err(nom::Err::Incomplete(_)) => {
                // The grammar is complete-input only; kept for totality.
                let (span, found) = self.found(start);
                self.diags.push(
                    Diagnostic::new(&codes::EGRET_SYNTAX, format!("unexpected {found}"))
                        .primary(span, "unexpected")
                        .help(HELP_STMT),
                );
                self.pos = start + 1;
                None
            }
        }
    }

    // ---- lowering ----

    fn lower(&mut self, stmt: Stmt<'t>, body: &mut Body) -> Option<Anchor> {
        match stmt {
            Stmt::Select(item) => {
                let it = SelectorItem {
                    span: item.span,
                    pod_selector: item.pods.map(|s| self.selector(s)),
                    namespace_selector: item.namespaces.map(|s| self.selector(s)),
                    node_selector: item.nodes.map(|s| self.selector(s)),
                };
                body.selectors.push(it);
                Some(anchor(item.span))
            }
            Stmt::To(toks) => {
                let first = body.destination_cidrs.len();
                self.cidrs(&toks, &mut body.destination_cidrs);
                body.destination_cidrs.get(first).map(|c| anchor(c.span))
            }
            Stmt::Except(toks) => {
                let first = body.excluded_cidrs.len();
                self.cidrs(&toks, &mut body.excluded_cidrs);
                body.excluded_cidrs.get(first).map(|c| anchor(c.span))
            }
            Stmt::Via(gw) => {
                let mut spec = GatewaySpec {
                    span: gw.span,
                    node_selector: self.selector(gw.nodes),
                    egress_ip: None,
                    interface: None,
                    floating: None,
                };
                let mut ip_seen: Option<Span> = None;
                let mut iface_seen: Option<Span> = None;
                for a in gw.attrs {
                    match a {
                        Attr::Ip { span, value, floating } => {
                            if self.duplicate_attr(&mut ip_seen, span, "ip") {
                                continue;
                            }
                            spec.egress_ip = self.ip(value);
                            spec.floating = floating.filter(|_| spec.egress_ip.is_some());
                        }
                        Attr::Interface { span, value } => {
                            if self.duplicate_attr(&mut iface_seen, span, "interface") {
                                continue;
                            }
                            spec.interface = Some(Spanned::new(value.text.clone(), value.span));
                        }
                    }
                }
                body.gateways.push(spec);
                Some(anchor(gw.span))
            }
        }
    }

    fn duplicate_attr(&mut self, seen: &mut Option<Span>, span: Span, what: &str) -> bool {
        match *seen {
            Some(first) => {
                self.diags.push(
                    Diagnostic::new(&codes::EGRET_SYNTAX, format!("`{what}` given twice for one gateway"))
                        .primary(span, "second one")
                        .secondary(first, "first one")
                        .help(format!(
                            "a gateway has at most one `{what}`; for several gateways write several `via` lines"
                        )),
                );
                true
            }
            None => {
                *seen = Some(span);
                false
            }
        }
    }

    fn selector(&mut self, sel: Sel<'t>) -> LabelSelector {
        let mut out = LabelSelector::empty(sel.span);
        let kind = sel.keyword.text.as_str();
        match sel.body {
            SelBody::All => {}
            SelBody::Empty { parens } => {
                let things = match kind {
                    "pods" => "pod",
                    "namespaces" => "namespace",
                    _ => "node",
                };
                self.diags.push(
                    Diagnostic::new(&codes::EGRET_SYNTAX, format!("empty selector `{kind}()`"))
                        .primary(parens, "nothing between the parentheses")
                        .help(format!("an empty selector matches every {things}; write {kind}(*) to say so")),
                );
            }
            SelBody::Reqs(reqs) => {
                for r in reqs {
                    let key = Spanned::new(r.key.text.clone(), r.key.span);
                    let val = |t: &Token| Spanned::new(t.text.clone(), t.span);
                    let (operator, values) = match r.op {
                        Op::Label { value } => {
                            if let Some((first, _)) = out.match_labels.iter().find(|(k, _)| k.value == key.value) {
                                self.diags.push(
                                    Diagnostic::new(
                                        &codes::EGRET_SYNTAX,
                                        format!("label key `{}` is required twice with `=`", key.value),
                                    )
                                    .primary(key.span, "second requirement")
                                    .secondary(first.span, "first requirement")
                                    .help(format!(
                                        "a label has one value, so both cannot hold; to allow either value write `{} in (a, b)`",
                                        key.value
                                    )),
                                );
                            } else {
                                out.match_labels.push((key, val(value)));
                            }
                            continue;
                        }
                        Op::NotEqual { op, value } => (Spanned::new(Operator::NotIn, op.span), vec![val(value)]),
                        Op::In { op, values } => {
                            (Spanned::new(Operator::In, op.span), values.into_iter().map(val).collect())
                        }
                        Op::NotIn { op, values } => {
                            (Spanned::new(Operator::NotIn, op.span), values.into_iter().map(val).collect())
                        }
                        Op::Exists => (Spanned::new(Operator::Exists, key.span), Vec::new()),
                        Op::DoesNotExist { bang } => (Spanned::new(Operator::DoesNotExist, bang.span), Vec::new()),
                    };
                    out.match_expressions.push(Requirement { span: r.span, key, operator, values });
                }
            }
        }
        out
    }

    fn cidrs(&mut self, toks: &[&Token], out: &mut Vec<Spanned<Cidr>>) {
        for t in toks {
            match t.text.parse::<Cidr>() {
                Ok(c) => out.push(Spanned::new(c, t.span)),
                Err(e) => {
                    let help = match e {
                        crate::net::CidrError::MissingLength if t.text.parse::<IpAddr>().is_ok() => {
                            let bits = if t.text.contains(':') { 128 } else { 32 };
                            format!("add a prefix length; one address is `{}/{bits}`", t.text)
                        }
                        _ => "write an address, a slash and a prefix length valid for its family, e.g. `10.0.0.0/8`"
                            .to_string(),
                    };
                    self.diags.push(
                        Diagnostic::new(&codes::INVALID_CIDR, format!("invalid CIDR `{}`: {e}", t.text))
                            .primary(t.span, "not an IPv4 or IPv6 prefix")
                            .help(help),
                    );
                }
            }
        }
    }

    fn ip(&mut self, t: &Token) -> Option<Spanned<IpAddr>> {
        match t.text.parse::<IpAddr>() {
            Ok(ip) => Some(Spanned::new(ip, t.span)),
            Err(_) => {
                let help = match t.text.parse::<Cidr>() {
                    Ok(c) => format!("an egress IP is one address: write `{}` without `/{}`", c.addr, c.len),
                    Err(_) => "write one IPv4 or IPv6 address, e.g. `192.0.2.10`".to_string(),
                };
                self.diags.push(
                    Diagnostic::new(&codes::INVALID_IP, format!("invalid IP address `{}`", t.text))
                        .primary(t.span, "not an IPv4 or IPv6 address")
                        .help(help),
                );
                None
            }
        }
    }
}

// ---- comments ----

fn attach_comments(lexed: &Lexed, owner: &[Owner], units: &[Unit]) -> Comments {
    let toks = &lexed.tokens;
    let blank: BTreeSet<u32> = lexed.blank_lines.iter().copied().collect();
    let mut out = Comments::default();
    let mut next = 0usize;
    for c in &lexed.comments {
        while next < toks.len() && toks[next].span.start < c.span.start {
            next += 1;
        }
        let comment = Comment { text: c.text.clone(), blank_after: blank.contains(&(c.line + 1)) };
        let prev = next.checked_sub(1);
        if let Some(p) = prev
            && toks[p].line == c.line
        {
            match owner[p] {
                Owner::Stmt(u) => {
                    if let Some(a) = units[u].anchor {
                        let map = if units[u].last == p { &mut out.trailing } else { &mut out.leading };
                        map.entry(a).or_default().push(comment);
                    }
                }
                Owner::Header(a) => out.trailing.entry(a).or_default().push(comment),
                Owner::Close(a) => out.close_trailing.entry(a).or_default().push(comment),
                Owner::Nothing => {}
            }
            continue;
        }
        match owner.get(next) {
            Some(Owner::Header(a)) => out.leading.entry(*a).or_default().push(comment),
            Some(Owner::Stmt(u)) => {
                if let Some(a) = units[*u].anchor {
                    out.leading.entry(a).or_default().push(comment);
                }
            }
            Some(Owner::Close(a)) => out.body_end.entry(*a).or_default().push(comment),
            Some(Owner::Nothing) => {}
            None => out.file_end.push(comment),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Token> {
        lex::lex(FileId(0), text).tokens
    }

    #[test]
    fn errors_keep_the_furthest_position_and_merge_ties() {
        let t = toks("a b c");
        let eof = Span::new(FileId(0), 5, 5);
        let at = |k: usize, what: &'static str| SyntaxError::at(Toks { toks: &t[k..], eof }, what, HELP_REQ);
        let merged = at(1, "`x`").or(at(1, "`y`")).or(at(1, "`x`"));
        assert_eq!(merged.expected, ["`x`", "`y`"]);
        assert_eq!(merged.remaining, 2);
        assert_eq!(at(0, "`p`").or(at(2, "`q`")).expected, ["`q`"]);
        assert_eq!(at(2, "`q`").or(at(0, "`p`")).expected, ["`q`"]);
    }

    #[test]
    fn expected_lists_read_as_english() {
        assert_eq!(list_expected(&["`(`"]), "`(`");
        assert_eq!(list_expected(&["`pods`", "`namespaces`"]), "`pods` or `namespaces`");
        assert_eq!(list_expected(&["`a`", "`b`", "`c`"]), "one of `a`, `b`, or `c`");
    }

    #[test]
    fn grammar_consumes_exactly_one_statement() {
        let t = toks("via nodes(a = b) ip 10.0.0.1 interface eth0 to 10.0.0.0/8");
        let eof = Span::new(FileId(0), 0, 0);
        let (rest, stmt) =
            statement(Toks { toks: &t, eof }).map_err(|e| format!("{e:?}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rest.toks.first().map(|t| t.text.as_str()), Some("to"));
        let Stmt::Via(g) = stmt else { panic!("not a via statement") };
        assert_eq!(g.attrs.len(), 2);
    }

    #[test]
    fn misspelled_keywords_get_a_suggestion() {
        let expected = ["`select`", "`to`", "`}`"];
        let t = toks("selcet slect frobnicate");
        assert_eq!(did_you_mean(&t[0], &expected).as_deref(), Some("select"));
        assert_eq!(did_you_mean(&t[1], &expected).as_deref(), Some("select"));
        assert_eq!(did_you_mean(&t[2], &expected), None);
    }
}
