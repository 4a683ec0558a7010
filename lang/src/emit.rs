//! Policies as canonical `CiliumEgressGatewayPolicy` YAML (`egret convert`).
//!
//! Contract of [`policies_to_yaml`]:
//! - one YAML document per policy, in the given order, separated by `---`;
//!   `apiVersion: cilium.io/v2`, `kind: CiliumEgressGatewayPolicy`,
//!   `metadata` with `name` (and `uid` when set; never `namespace`, which a
//!   cluster-scoped object cannot have; the annotation
//!   `egret.dev/floating-egress-ip: "true"` when a gateway entry has a
//!   floating egress IP), then `spec`;
//! - `spec` fields in CRD order: `selectors` (`podSelector`,
//!   `namespaceSelector`, `nodeSelector`, each with `matchLabels` then
//!   `matchExpressions` as `{key, operator, values}`; `{}` when empty),
//!   `destinationCIDRs`, `excludedCIDRs` (omitted when empty), `egressGateway`
//!   and/or `egressGateways` (each `nodeSelector`, `egressIP`, `interface`),
//!   exactly as the AST has them — an ignored `egressGateway` is kept, the
//!   validator reports it;
//! - label values, CIDRs and IPs are always double-quoted (YAML reads bare
//!   `true`, `yes`, `1.0` as non-strings); keys, names and interface names are
//!   quoted only when a YAML 1.1 or 1.2 reader could take them for anything but
//!   a plain string;
//! - the output depends only on the AST values (not on spans) and is
//!   deterministic; block style with list items at their parent key's indent,
//!   as `kubectl get -o yaml` prints them.

use crate::ast::{FLOATING_ANNOTATION, GatewaySpec, LabelSelector, Policy, SelectorItem};
use std::fmt::Write as _;

/// All policies as one multi-document YAML stream.
pub fn policies_to_yaml(policies: &[Policy]) -> String {
    let docs: Vec<String> = policies.iter().map(policy_to_yaml).collect();
    docs.join("---\n")
}

/// One policy as a YAML document (no `---`).
pub fn policy_to_yaml(p: &Policy) -> String {
    let mut out = String::new();
    out.push_str("apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata:\n");
    let _ = writeln!(out, "  name: {}", plain_or_quoted(&p.name.value));
    if let Some(uid) = &p.uid {
        let _ = writeln!(out, "  uid: {}", plain_or_quoted(uid));
    }
    if p.egress_gateway.iter().chain(&p.egress_gateways).any(|g| g.floating.is_some()) {
        let _ = writeln!(out, "  annotations:\n    {FLOATING_ANNOTATION}: \"true\"");
    }
    out.push_str("spec:\n");
    if p.selectors.is_empty() {
        out.push_str("  selectors: []\n");
    } else {
        out.push_str("  selectors:\n");
        for item in &p.selectors {
            list_item(&mut out, "  ", &selector_item(item));
        }
    }
    if p.destination_cidrs.is_empty() {
        out.push_str("  destinationCIDRs: []\n");
    } else {
        out.push_str("  destinationCIDRs:\n");
        for c in &p.destination_cidrs {
            let _ = writeln!(out, "  - {}", quoted(&c.value.to_string()));
        }
    }
    if !p.excluded_cidrs.is_empty() {
        out.push_str("  excludedCIDRs:\n");
        for c in &p.excluded_cidrs {
            let _ = writeln!(out, "  - {}", quoted(&c.value.to_string()));
        }
    }
    if let Some(g) = &p.egress_gateway {
        out.push_str("  egressGateway:\n");
        for line in gateway(g) {
            let _ = writeln!(out, "    {line}");
        }
    }
    if !p.egress_gateways.is_empty() {
        out.push_str("  egressGateways:\n");
        for g in &p.egress_gateways {
            list_item(&mut out, "  ", &gateway(g));
        }
    }
    out
}

/// Writes `lines` (relative to the item) as one block-sequence item at `indent`.
fn list_item(out: &mut String, indent: &str, lines: &[String]) {
    if lines.is_empty() {
        let _ = writeln!(out, "{indent}- {{}}");
        return;
    }
    for (i, line) in lines.iter().enumerate() {
        let lead = if i == 0 { "- " } else { "  " };
        let _ = writeln!(out, "{indent}{lead}{line}");
    }
}

fn selector_item(item: &SelectorItem) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, sel) in [
        ("podSelector", &item.pod_selector),
        ("namespaceSelector", &item.namespace_selector),
        ("nodeSelector", &item.node_selector),
    ] {
        if let Some(s) = sel {
            label_selector(&mut lines, key, s);
        }
    }
    lines
}

fn gateway(g: &GatewaySpec) -> Vec<String> {
    let mut lines = Vec::new();
    label_selector(&mut lines, "nodeSelector", &g.node_selector);
    if let Some(ip) = &g.egress_ip {
        lines.push(format!("egressIP: {}", quoted(&ip.value.to_string())));
    }
    if let Some(iface) = &g.interface {
        lines.push(format!("interface: {}", plain_or_quoted(&iface.value)));
    }
    lines
}

/// `key:` and the selector below it, as lines relative to `key`'s indent.
fn label_selector(lines: &mut Vec<String>, key: &str, s: &LabelSelector) {
    if s.is_empty() {
        lines.push(format!("{key}: {{}}"));
        return;
    }
    lines.push(format!("{key}:"));
    if !s.match_labels.is_empty() {
        lines.push("  matchLabels:".to_string());
        for (k, v) in &s.match_labels {
            lines.push(format!("    {}: {}", plain_or_quoted(k), quoted(v)));
        }
    }
    if !s.match_expressions.is_empty() {
        lines.push("  matchExpressions:".to_string());
        for r in &s.match_expressions {
            lines.push(format!("  - key: {}", plain_or_quoted(&r.key.value)));
            lines.push(format!("    operator: {}", r.operator.value.as_str()));
            if !r.values.is_empty() {
                lines.push("    values:".to_string());
                for v in &r.values {
                    lines.push(format!("    - {}", quoted(v)));
                }
            }
        }
    }
}

/// Words a YAML 1.1 reader takes for booleans or null.
const YAML_SPECIAL: &[&str] = &["y", "n", "yes", "no", "true", "false", "on", "off", "null"];

/// Whether `s` reads back as the same plain string in YAML 1.1 and 1.2: a
/// letter, then letters, digits and `. _ / -`, and not a boolean or null word.
fn is_plain(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'/' | b'-'))
        && !YAML_SPECIAL.contains(&s.to_ascii_lowercase().as_str())
}

fn plain_or_quoted(s: &str) -> String {
    if is_plain(s) { s.to_string() } else { quoted(s) }
}

/// A YAML double-quoted scalar. Escapes `"`, `\`, and everything outside
/// YAML's printable set or that YAML 1.1 folds as a line break.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn needs_escape(c: char) -> bool {
    let u = c as u32;
    u < 0x20 || (0x7F..=0x9F).contains(&u) || matches!(u, 0x2028 | 0x2029 | 0xFEFF | 0xFFFE | 0xFFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_quoted_scalars() {
        assert!(is_plain("kubernetes.io/metadata.name"));
        assert!(is_plain("egress-payments"));
        for s in ["", "true", "Yes", "null", "1.0", "123", "-x", "a b", "a:b", "#x", "~"] {
            assert!(!is_plain(s), "{s:?} must be quoted");
        }
        assert_eq!(quoted("a\"\\\n\u{85}\u{2028}é"), "\"a\\\"\\\\\\n\\u0085\\u2028é\"");
    }
}
