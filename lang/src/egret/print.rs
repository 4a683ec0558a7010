//! The canonical `.egret` text of policies (`egret fmt`, `egret convert`).
//!
//! Layout: one statement per line, two-space indent, statements in the order
//! `select`*, `to`, `except`, `via`*; lists separated by `, `; a blank line
//! between policies; a body with nothing in it prints as `policy NAME {}`.
//! Words are bare when they match the bare pattern of their position
//! (values and interfaces `[A-Za-z0-9._-]+`, label keys
//! `[A-Za-z0-9][A-Za-z0-9._/-]*`, names `[a-z0-9][a-z0-9.-]*`), else a JSON
//! string. Requirements print `=` for `matchLabels` first, then
//! `matchExpressions` in order; `NotIn` with one value prints as `!=`.
//!
//! Guarantees: the output is a function of the AST and comments only (spans
//! are used only to find comments); for every AST that [`try_print`] accepts,
//! parsing the output gives a [`super::semantically_equal`] AST with no
//! diagnostics, and printing that again gives the same text. ASTs that `.egret`
//! cannot express (see [`Unprintable`]) are printed with the inexpressible
//! statement turned into a `# egret fmt: …` comment by [`print`], and
//! rejected by [`try_print`]. `metadata.uid` is not part of `.egret` and is
//! dropped.

use super::trivia::{Comment, Comments};
use crate::ast::{GatewaySpec, LabelSelector, Operator, Policy, Requirement, SelectorItem};
use std::fmt::Write as _;

/// An AST that `.egret` cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unprintable {
    #[error("policy `{policy}`: selector item {item} has neither a pod nor a namespace selector")]
    ItemWithoutPodsOrNamespaces { policy: String, item: usize },
    #[error("policy `{policy}`: requirement `{key}` {operator} has {values} value(s)")]
    RequirementValues { policy: String, key: String, operator: &'static str, values: usize },
    #[error("policy `{policy}`: `egressGateway` is set besides `egressGateways`, which makes it ignored")]
    IgnoredEgressGateway { policy: String },
    #[error("policy `{policy}`: `metadata.namespace` `{namespace}` on a cluster-scoped policy")]
    Namespace { policy: String, namespace: String },
}

/// The canonical text, without comments. Never fails; see the module docs.
pub fn print(policies: &[Policy]) -> String {
    print_with_comments(policies, &Comments::default())
}

/// The canonical text, or the first thing `.egret` cannot express.
pub fn try_print(policies: &[Policy]) -> Result<String, Unprintable> {
    let mut issues = Vec::new();
    let text = render(policies, &Comments::default(), &mut issues);
    match issues.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(text),
    }
}

/// The canonical text with the comments recorded by the parser.
pub fn print_with_comments(policies: &[Policy], comments: &Comments) -> String {
    render(policies, comments, &mut Vec::new())
}

fn render(policies: &[Policy], comments: &Comments, issues: &mut Vec<Unprintable>) -> String {
    let mut out = String::new();
    for (i, p) in policies.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        policy(&mut out, p, comments, issues);
    }
    let end = comments.file_end();
    if !end.is_empty() {
        if !policies.is_empty() {
            out.push('\n');
        }
        for (i, c) in end.iter().enumerate() {
            out.push_str(&c.text);
            out.push('\n');
            if c.blank_after && i + 1 < end.len() {
                out.push('\n');
            }
        }
    }
    out
}

/// One line of a policy body with its comments.
struct Line<'a> {
    leading: Vec<&'a Comment>,
    text: String,
    trailing: Vec<&'a Comment>,
}

impl<'a> Line<'a> {
    fn new(text: String) -> Self {
        Line { leading: Vec::new(), text, trailing: Vec::new() }
    }
    fn with(mut self, leading: &'a [Comment], trailing: &'a [Comment]) -> Self {
        self.leading.extend(leading);
        self.trailing.extend(trailing);
        self
    }
}

/// Writes `text` with its trailing comments: the first stays on the line, the
/// others (possible only when statements were merged) go above it.
fn write_line(out: &mut String, indent: &str, line: &Line<'_>) {
    for c in line.leading.iter().chain(line.trailing.iter().skip(1)) {
        let _ = writeln!(out, "{indent}{}", c.text);
    }
    out.push_str(indent);
    out.push_str(&line.text);
    if let Some(c) = line.trailing.first() {
        out.push(' ');
        out.push_str(&c.text);
    }
    out.push('\n');
}

fn inexpressible(reason: &str, dropped: &str) -> String {
    format!("# egret fmt: {reason}; dropped: {dropped}")
}

fn policy(out: &mut String, p: &Policy, comments: &Comments, issues: &mut Vec<Unprintable>) {
    let name = &p.name.value;
    for c in comments.leading(p.span) {
        out.push_str(&c.text);
        out.push('\n');
        if c.blank_after {
            out.push('\n');
        }
    }
    let mut lines: Vec<Line<'_>> = Vec::new();
    if let Some(ns) = &p.namespace {
        issues.push(Unprintable::Namespace { policy: name.clone(), namespace: ns.value.clone() });
        lines.push(Line::new(inexpressible(
            "cluster-scoped policies have no namespace",
            &format!("metadata.namespace {}", quote(&ns.value)),
        )));
    }
    for (k, it) in p.selectors.iter().enumerate() {
        let text = match item(it, name, k, issues) {
            Ok(t) => format!("select {t}"),
            Err((reason, t)) => inexpressible(&reason, &format!("select {t}")),
        };
        lines.push(Line::new(text).with(comments.leading(it.span), comments.trailing(it.span)));
    }
    for (word, cidrs) in [("to", &p.destination_cidrs), ("except", &p.excluded_cidrs)] {
        if cidrs.is_empty() {
            continue;
        }
        let list: Vec<String> = cidrs.iter().map(|c| c.value.to_string()).collect();
        let mut line = Line::new(format!("{word} {}", list.join(", ")));
        for c in cidrs.iter() {
            line = line.with(comments.leading(c.span), comments.trailing(c.span));
        }
        lines.push(line);
    }
    let mut via = |g: &GatewaySpec, ignored: bool, issues: &mut Vec<Unprintable>| {
        let text = match gateway(g, name, issues) {
            Ok(t) if !ignored => format!("via {t}"),
            Ok(t) => inexpressible("`egressGateway` is ignored when `egressGateways` is set", &format!("via {t}")),
            Err((reason, t)) => inexpressible(&reason, &format!("via {t}")),
        };
        lines.push(Line::new(text).with(comments.leading(g.span), comments.trailing(g.span)));
    };
    if p.egress_gateways.is_empty() {
        if let Some(g) = &p.egress_gateway {
            via(g, false, issues);
        }
    } else {
        if let Some(g) = &p.egress_gateway {
            issues.push(Unprintable::IgnoredEgressGateway { policy: name.clone() });
            via(g, true, issues);
        }
        for g in &p.egress_gateways {
            via(g, false, issues);
        }
    }

    let header = comments.trailing(p.span);
    let close = comments.close_trailing(p.span);
    let mut body_end: Vec<&Comment> = comments.body_end(p.span).iter().collect();
    body_end.extend(close.iter().skip(1));
    for c in header.iter().skip(1) {
        let _ = writeln!(out, "{}", c.text);
    }
    let _ = write!(out, "policy {} {{", name_text(name));
    if lines.is_empty() && body_end.is_empty() && header.is_empty() {
        out.push('}');
    } else {
        if let Some(c) = header.first() {
            out.push(' ');
            out.push_str(&c.text);
        }
        out.push('\n');
        for l in &lines {
            write_line(out, "  ", l);
        }
        for c in body_end {
            let _ = writeln!(out, "  {}", c.text);
        }
        out.push('}');
    }
    if let Some(c) = close.first() {
        out.push(' ');
        out.push_str(&c.text);
    }
    out.push('\n');
}

type Printed = Result<String, (String, String)>;

fn item(it: &SelectorItem, policy: &str, k: usize, issues: &mut Vec<Unprintable>) -> Printed {
    let mut errs = Vec::new();
    let mut text = match (&it.pod_selector, &it.namespace_selector) {
        (Some(pods), ns) => {
            let mut t = selector("pods", pods, policy, &mut errs, issues);
            if let Some(ns) = ns {
                t.push_str(" in ");
                t.push_str(&selector("namespaces", ns, policy, &mut errs, issues));
            }
            t
        }
        (None, Some(ns)) => selector("namespaces", ns, policy, &mut errs, issues),
        (None, None) => {
            issues.push(Unprintable::ItemWithoutPodsOrNamespaces { policy: policy.to_string(), item: k });
            errs.push("a selector item needs `pods(…)` or `namespaces(…)`".to_string());
            String::new()
        }
    };
    if let Some(nodes) = &it.node_selector {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str("on ");
        text.push_str(&selector("nodes", nodes, policy, &mut errs, issues));
    }
    match errs.into_iter().next() {
        None => Ok(text),
        Some(reason) => Err((reason, text)),
    }
}

fn gateway(g: &GatewaySpec, policy: &str, issues: &mut Vec<Unprintable>) -> Printed {
    let mut errs = Vec::new();
    let mut text = selector("nodes", &g.node_selector, policy, &mut errs, issues);
    if let Some(ip) = &g.egress_ip {
        let floating = if g.floating.is_some() { " floating" } else { "" };
        let _ = write!(text, "{floating} ip {}", ip.value);
    }
    if let Some(iface) = &g.interface {
        let _ = write!(text, " interface {}", bare_or_quoted(&iface.value, is_bare_value));
    }
    match errs.into_iter().next() {
        None => Ok(text),
        Some(reason) => Err((reason, text)),
    }
}

fn selector(
    keyword: &str,
    s: &LabelSelector,
    policy: &str,
    errs: &mut Vec<String>,
    issues: &mut Vec<Unprintable>,
) -> String {
    if s.is_empty() {
        return format!("{keyword}(*)");
    }
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .map(|(k, v)| format!("{} = {}", bare_or_quoted(k, is_bare_key), bare_or_quoted(v, is_bare_value)))
        .collect();
    for r in &s.match_expressions {
        parts.push(requirement(r, policy, errs, issues));
    }
    format!("{keyword}({})", parts.join(", "))
}

fn requirement(r: &Requirement, policy: &str, errs: &mut Vec<String>, issues: &mut Vec<Unprintable>) -> String {
    let key = bare_or_quoted(&r.key.value, is_bare_key);
    let values: Vec<String> = r.values.iter().map(|v| bare_or_quoted(v, is_bare_value)).collect();
    let op = r.operator.value;
    let ok = match op {
        Operator::In | Operator::NotIn => !values.is_empty(),
        Operator::Exists | Operator::DoesNotExist => values.is_empty(),
    };
    if !ok {
        issues.push(Unprintable::RequirementValues {
            policy: policy.to_string(),
            key: r.key.value.clone(),
            operator: op.as_str(),
            values: values.len(),
        });
        errs.push(format!("`{}` on `{}` with {} value(s)", op.as_str(), r.key.value, values.len()));
    }
    match (op, values.as_slice()) {
        (Operator::In, vs) => format!("{key} in ({})", vs.join(", ")),
        (Operator::NotIn, [v]) => format!("{key} != {v}"),
        (Operator::NotIn, vs) => format!("{key} notin ({})", vs.join(", ")),
        (Operator::Exists, []) => key,
        (Operator::DoesNotExist, []) => format!("!{key}"),
        (Operator::Exists, vs) => format!("{key} exists ({})", vs.join(", ")),
        (Operator::DoesNotExist, vs) => format!("!{key} ({})", vs.join(", ")),
    }
}

fn name_text(name: &str) -> String {
    bare_or_quoted(name, is_bare_name)
}

/// `[A-Za-z0-9._-]+`: label values and interface names.
pub(crate) fn is_bare_value(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `[A-Za-z0-9][A-Za-z0-9._/-]*`: label keys.
pub(crate) fn is_bare_key(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'/' | b'-'))
}

/// `[a-z0-9][a-z0-9.-]*`: policy names.
pub(crate) fn is_bare_name(s: &str) -> bool {
    let lower = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut b = s.bytes();
    b.next().is_some_and(lower) && b.all(|c| lower(c) || matches!(c, b'.' | b'-'))
}

fn bare_or_quoted(s: &str, bare: fn(&str) -> bool) -> String {
    if bare(s) { s.to_string() } else { quote(s) }
}

/// A JSON string literal, the form the lexer reads back.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_patterns() {
        assert!(is_bare_value("true") && is_bare_value("-x.") && !is_bare_value("") && !is_bare_value("a/b"));
        assert!(is_bare_key("cilium.io/egress-gateway") && !is_bare_key("-a") && !is_bare_key(""));
        assert!(is_bare_name("egress-payments") && !is_bare_name("Web") && !is_bare_name("a_b"));
        assert_eq!(quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
