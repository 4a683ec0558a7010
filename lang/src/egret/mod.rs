//! egret's own policy language, `.egret`: parser, canonical printer, comments.
//!
//! ```text
//! file    := policy*
//! policy  := "policy" NAME "{" stmt* "}"
//! stmt    := "select" item | "to" cidr ("," cidr)* | "except" cidr ("," cidr)* | "via" gateway
//! item    := "pods" sel ["in" "namespaces" sel] ["on" "nodes" sel]
//!          | "namespaces" sel ["on" "nodes" sel]
//! gateway := "nodes" sel ( "ip" IP | "interface" NAME )*    -- each at most once
//! sel     := "(" "*" ")" | "(" req ("," req)* ")"
//! req     := key ("=" | "==") value | key "!=" value
//!          | key "in" "(" value ("," value)* ")" | key "notin" "(" value ("," value)* ")"
//!          | key | "!" key
//! NAME, key, value, IP, cidr := WORD | STRING
//! WORD    := [A-Za-z0-9._/:-]+        STRING := JSON string literal
//! ```
//!
//! Whitespace and newlines are insignificant, `;` may separate statements,
//! `#` starts a comment to the end of the line. Keywords are reserved only
//! where they are expected (a label may be called `in`), except that
//! `select`, `to`, `except`, `via` and `policy` are never read as addresses.
//!
//! Contract of [`parse`]:
//! - never panics, on any input; every problem is a [`Diagnostic`] with a code
//!   (E0003 syntax, E0105 invalid CIDR, E0107 invalid IP), a primary label on
//!   the exact token and a help line; several problems are reported at once;
//! - policies come out in file order with `origin: Egret` and a span on every
//!   node: `span` is `policy` … `}`, `spec_span` is `{` … `}`, a selector item
//!   spans `pods`/`namespaces` … `)`, a selector `pods`/`namespaces`/`nodes`
//!   … `)`, a gateway `nodes` … its last attribute; tokens keep their own
//!   spans (strings with their quotes). `Exists` has the key's span as its
//!   operator span, `=` requirements have no operator;
//! - one `via` lowers to `egress_gateway`, several to `egress_gateways`;
//!   `key != v` lowers to `NotIn [v]`;
//! - values that fail to parse (CIDRs, IPs) are reported and left out;
//!   statements with syntax errors are left out; a policy without a name is
//!   left out. Label keys, values and names are kept as written: their
//!   Kubernetes syntax is the validator's (E0111, E0112, E0115), as for YAML.
//!
//! [`print`] / [`print_with_comments`] give the canonical text (`egret fmt`);
//! [`format`] is parse-then-print for a whole file, keeping comments.

mod lex;
mod normal;
mod parse;
mod print;
mod trivia;

pub use normal::{NormalGateway, NormalItem, NormalPolicy, NormalSelector, normalize, semantically_equal};
pub use parse::Parsed;
pub use print::{Unprintable, print, print_with_comments, try_print};
pub use trivia::{Anchor, Comment, Comments};

use crate::ast::Policy;
use crate::diag::Diagnostic;
use crate::source::FileId;

/// Parses a `.egret` file. See the module docs for the contract.
pub fn parse(file: FileId, text: &str) -> (Vec<Policy>, Vec<Diagnostic>) {
    let p = parse::parse_file(file, text);
    (p.policies, p.diagnostics)
}

/// Parses a `.egret` file and keeps its comments, for [`print_with_comments`].
pub fn parse_with_comments(file: FileId, text: &str) -> Parsed {
    parse::parse_file(file, text)
}

/// `egret fmt`: the canonical text of a file, comments kept. A file with any
/// diagnostic is not formatted; its diagnostics are returned instead.
pub fn format(file: FileId, text: &str) -> Result<String, Vec<Diagnostic>> {
    let p = parse::parse_file(file, text);
    if p.diagnostics.is_empty() { Ok(print_with_comments(&p.policies, &p.comments)) } else { Err(p.diagnostics) }
}
