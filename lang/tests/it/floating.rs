//! Floating egress IPs at the front end: the CRD annotation, the `.egret`
//! syntax, the conversions between them, and the field checks.

use egret_lang::ast::{FLOATING_ANNOTATION, Policy};
use egret_lang::diag::Diagnostic;
use egret_lang::source::{FileId, Span};
use egret_lang::{codes, egret, emit, k8s, validate};

const FILE: FileId = FileId(3);

fn at(text: &str, span: Span) -> &str {
    assert_eq!(span.file, FILE);
    &text[span.range()]
}

fn yaml(annotation: &str, gateways: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata:\n  name: pay\n  annotations:\n    {FLOATING_ANNOTATION}: {annotation}\n    other.example/x: \"y\"\nspec:\n  selectors:\n  - podSelector: {{matchLabels: {{app: pay}}}}\n  destinationCIDRs: [\"0.0.0.0/0\"]\n{gateways}"
    )
}

const TWO_GATEWAYS: &str = "  egressGateways:\n  - nodeSelector: {matchLabels: {zone: a}}\n    egressIP: \"198.51.100.50\"\n  - nodeSelector: {matchLabels: {zone: b}}\n    interface: eth1\n";

fn read(text: &str) -> (Vec<Policy>, Vec<Diagnostic>) {
    let (bundle, diags) = k8s::parse_yaml(FILE, text);
    (bundle.policies, diags)
}

fn codes_of(d: &[Diagnostic]) -> Vec<&'static str> {
    d.iter().map(|d| d.code.id).collect()
}

#[test]
fn the_annotation_floats_every_egress_ip_and_only_those() {
    let text = yaml("\"true\"", TWO_GATEWAYS);
    let (ps, diags) = read(&text);
    assert!(diags.is_empty(), "{:?}", codes_of(&diags));
    let gws = ps[0].gateways();
    let opt_in = gws[0].floating.expect("the egressIP entry floats");
    assert_eq!(at(&text, opt_in), "\"true\"");
    assert_eq!(gws[0].floating_ip(), Some("198.51.100.50".parse().expect("ip")));
    // an entry without egressIP has nothing to float
    assert_eq!(gws[1].floating, None);
    assert_eq!(gws[1].floating_ip(), None);
    // the single `egressGateway` form too
    let single = yaml("\"true\"", "  egressGateway:\n    nodeSelector: {}\n    egressIP: \"198.51.100.50\"\n");
    assert!(read(&single).0[0].gateways()[0].floating.is_some());
}

#[test]
fn without_the_annotation_nothing_floats() {
    let text = yaml("\"true\"", TWO_GATEWAYS).replace(FLOATING_ANNOTATION, "example.com/unrelated");
    let (ps, diags) = read(&text);
    assert!(diags.is_empty());
    assert!(ps[0].gateways().iter().all(|g| g.floating.is_none()));
}

#[test]
fn any_other_annotation_value_is_an_error_on_the_value() {
    for (value, note) in [("\"yes\"", "not \"true\""), ("\"false\"", "not \"true\""), ("true", "YAML reads this")] {
        let text = yaml(value, TWO_GATEWAYS);
        let (ps, diags) = read(&text);
        assert_eq!(codes_of(&diags), [codes::INVALID_FLOATING_ANNOTATION.id], "{value}");
        let d = &diags[0];
        let span = d.primary_span().expect("span");
        assert_eq!(at(&text, span), value);
        assert!(d.labels[0].message.starts_with(note), "{value}: {}", d.labels[0].message);
        assert!(d.help.is_some());
        // not floating: the mistake is not guessed at
        assert!(ps[0].gateways().iter().all(|g| g.floating.is_none()), "{value}");
    }
}

#[test]
fn egret_syntax_floating_ip() {
    let text = "policy pay {\n  select pods(app = pay)\n  to 0.0.0.0/0\n  via nodes(egress = true) floating ip 198.51.100.50\n}\n";
    let (ps, diags) = egret::parse(FILE, text);
    assert!(diags.is_empty(), "{:?}", codes_of(&diags));
    let g = &ps[0].gateways()[0];
    assert_eq!(at(text, g.floating.expect("floating")), "floating");
    assert_eq!(at(text, g.egress_ip.as_ref().expect("ip").span), "198.51.100.50");
    // canonical form keeps it, and it is a fixed point
    assert_eq!(egret::print(&ps), text);
    // `ip` alone is not floating
    let (fixed, _) = egret::parse(FILE, &text.replace("floating ip", "ip"));
    assert_eq!(fixed[0].gateways()[0].floating, None);
}

#[test]
fn floating_needs_an_explicit_ip() {
    for text in [
        "policy p { select pods(a = b) to 0.0.0.0/0 via nodes(x = y) floating }",
        "policy p { select pods(a = b) to 0.0.0.0/0 via nodes(x = y) floating interface eth0 }",
    ] {
        let (_, diags) = egret::parse(FILE, text);
        assert_eq!(codes_of(&diags), [codes::EGRET_SYNTAX.id], "{text}");
        assert!(diags[0].message.contains("`ip` after `floating`"), "{}", diags[0].message);
    }
}

#[test]
fn conversion_writes_the_annotation_and_reads_it_back() {
    let text = "policy pay {\n  select pods(app = pay)\n  to 0.0.0.0/0\n  via nodes(zone = a) floating ip 198.51.100.50\n  via nodes(zone = b) floating ip 198.51.100.50\n}\n";
    let (ps, _) = egret::parse(FILE, text);
    let out = emit::policies_to_yaml(&ps);
    assert!(
        out.contains(&format!("metadata:\n  name: pay\n  annotations:\n    {FLOATING_ANNOTATION}: \"true\"\n")),
        "{out}"
    );
    let (back, diags) = read(&out);
    assert!(diags.is_empty());
    assert!(egret::semantically_equal(&ps[0], &back[0]));
    assert_eq!(egret::print(&back), text);
    // a fixed policy gets no annotation
    let (fixed, _) = egret::parse(FILE, &text.replace("floating ip", "ip"));
    assert!(!emit::policies_to_yaml(&fixed).contains("annotations"));
    assert!(!egret::semantically_equal(&ps[0], &fixed[0]));
}

#[test]
fn field_checks_floating_ipv6_and_mixed() {
    let v6 = "policy p { select pods(a = b) to ::/0 via nodes(x = y) floating ip 2001:db8::50 }";
    let (ps, _) = egret::parse(FILE, v6);
    let d = validate::policy(&ps[0]);
    assert_eq!(codes_of(&d), [codes::FLOATING_IPV6.id]);
    assert_eq!(at(v6, d[0].primary_span().expect("span")), "2001:db8::50");

    let mixed = "policy p { select pods(a = b) to 0.0.0.0/0 via nodes(x = a) floating ip 198.51.100.50 via nodes(x = b) ip 198.51.100.51 }";
    let (ps, _) = egret::parse(FILE, mixed);
    let d = validate::policy(&ps[0]);
    assert_eq!(codes_of(&d), [codes::FLOATING_MIXED.id]);
    assert_eq!(at(mixed, d[0].primary_span().expect("span")), "198.51.100.51");
    assert_eq!(at(mixed, d[0].labels[1].span), "floating");

    // all floating (and an entry without ip beside them) is fine
    let ok = "policy p { select pods(a = b) to 0.0.0.0/0 via nodes(x = a) floating ip 198.51.100.50 via nodes(x = b) interface eth1 }";
    let (ps, _) = egret::parse(FILE, ok);
    assert!(validate::policy(&ps[0]).is_empty());
}
