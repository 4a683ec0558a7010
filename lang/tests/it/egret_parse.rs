//! `.egret` parsing: every construct lowers to the right AST, with spans on
//! the exact tokens.

use egret_lang::ast::{Operator, Origin, Policy};
use egret_lang::source::{FileId, Span};
use egret_lang::{egret, validate};

const FILE: FileId = FileId(7);

fn parse_ok(text: &str) -> Vec<Policy> {
    let (policies, diags) = egret::parse(FILE, text);
    let codes: Vec<(&str, &str)> = diags.iter().map(|d| (d.code.id, d.message.as_str())).collect();
    assert!(diags.is_empty(), "unexpected diagnostics: {codes:?}");
    policies
}

fn one(text: &str) -> Policy {
    let mut ps = parse_ok(text);
    assert_eq!(ps.len(), 1);
    ps.remove(0)
}

/// The text a span covers; also checks the span's file.
fn at(text: &str, span: Span) -> &str {
    assert_eq!(span.file, FILE);
    &text[span.range()]
}

const EXAMPLE: &str = r#"# Payments leave through the address the processor allow-lists.
policy egress-payments {
  select pods(app = payment-service) in namespaces(kubernetes.io/metadata.name = production)
  select namespaces(team in (a, b)) on nodes(topology.kubernetes.io/zone = us-east-1a)
  to 0.0.0.0/0, ::/0
  except 10.0.0.0/8, 192.168.0.0/16
  via nodes(cilium.io/egress-gateway = "true") ip 192.168.1.100
}
"#;

#[test]
fn example_lowers_with_exact_spans() {
    let t = EXAMPLE;
    let p = one(t);
    assert_eq!(p.origin, Origin::Egret);
    assert_eq!(p.uid, None);
    assert_eq!(p.namespace, None);
    assert_eq!(p.name.value, "egress-payments");
    assert_eq!(at(t, p.name.span), "egress-payments");
    assert!(at(t, p.span).starts_with("policy egress-payments {"));
    assert!(at(t, p.span).ends_with("192.168.1.100\n}"));
    assert!(at(t, p.spec_span).starts_with("{\n  select"));
    assert!(at(t, p.spec_span).ends_with('}'));

    assert_eq!(p.selectors.len(), 2);
    let s0 = &p.selectors[0];
    assert_eq!(at(t, s0.span), "pods(app = payment-service) in namespaces(kubernetes.io/metadata.name = production)");
    let pods = s0.pod_selector.as_ref().expect("pod selector");
    assert_eq!(at(t, pods.span), "pods(app = payment-service)");
    assert_eq!(pods.match_labels.len(), 1);
    let (k, v) = &pods.match_labels[0];
    assert_eq!((k.value.as_str(), at(t, k.span)), ("app", "app"));
    assert_eq!((v.value.as_str(), at(t, v.span)), ("payment-service", "payment-service"));
    let ns = s0.namespace_selector.as_ref().expect("namespace selector");
    assert_eq!(at(t, ns.span), "namespaces(kubernetes.io/metadata.name = production)");
    assert_eq!(at(t, ns.match_labels[0].0.span), "kubernetes.io/metadata.name");
    assert!(s0.node_selector.is_none());

    let s1 = &p.selectors[1];
    assert!(s1.pod_selector.is_none());
    assert_eq!(at(t, s1.span), "namespaces(team in (a, b)) on nodes(topology.kubernetes.io/zone = us-east-1a)");
    let ns = s1.namespace_selector.as_ref().expect("namespace selector");
    let r = &ns.match_expressions[0];
    assert_eq!(at(t, r.span), "team in (a, b)");
    assert_eq!(at(t, r.key.span), "team");
    assert_eq!(r.operator.value, Operator::In);
    assert_eq!(at(t, r.operator.span), "in");
    let vals: Vec<&str> = r.values.iter().map(|v| at(t, v.span)).collect();
    assert_eq!(vals, ["a", "b"]);
    let nodes = s1.node_selector.as_ref().expect("node selector");
    assert_eq!(at(t, nodes.span), "nodes(topology.kubernetes.io/zone = us-east-1a)");
    assert_eq!(nodes.match_labels[0].1.value, "us-east-1a");

    let dst: Vec<(String, &str)> = p.destination_cidrs.iter().map(|c| (c.value.to_string(), at(t, c.span))).collect();
    assert_eq!(dst, [("0.0.0.0/0".to_string(), "0.0.0.0/0"), ("::/0".to_string(), "::/0")]);
    let exc: Vec<&str> = p.excluded_cidrs.iter().map(|c| at(t, c.span)).collect();
    assert_eq!(exc, ["10.0.0.0/8", "192.168.0.0/16"]);

    assert!(p.egress_gateways.is_empty());
    let g = p.egress_gateway.as_ref().expect("one via is egress_gateway");
    assert_eq!(at(t, g.span), "nodes(cilium.io/egress-gateway = \"true\") ip 192.168.1.100");
    assert_eq!(at(t, g.node_selector.span), "nodes(cilium.io/egress-gateway = \"true\")");
    let (k, v) = &g.node_selector.match_labels[0];
    assert_eq!(k.value, "cilium.io/egress-gateway");
    assert_eq!(v.value, "true");
    assert_eq!(at(t, v.span), "\"true\"");
    let ip = g.egress_ip.as_ref().expect("egress ip");
    assert_eq!(ip.value.to_string(), "192.168.1.100");
    assert_eq!(at(t, ip.span), "192.168.1.100");
    assert!(g.interface.is_none());
    assert!(validate::policy(&p).is_empty(), "the example is a valid policy");
}

#[test]
fn every_requirement_form() {
    let t = r#"policy r { select pods(a = 1, b == 2, c != 3, d in (x, y), e notin (z), f, !g, "h i" = "j k") }"#;
    let p = one(t);
    let s = p.selectors[0].pod_selector.as_ref().expect("pods");
    let labels: Vec<(&str, &str, &str, &str)> = s
        .match_labels
        .iter()
        .map(|(k, v)| (k.value.as_str(), v.value.as_str(), at(t, k.span), at(t, v.span)))
        .collect();
    assert_eq!(labels, [("a", "1", "a", "1"), ("b", "2", "b", "2"), ("h i", "j k", "\"h i\"", "\"j k\"")]);
    let exprs: Vec<(&str, Operator, Vec<&str>, &str, &str)> = s
        .match_expressions
        .iter()
        .map(|r| {
            (
                r.key.value.as_str(),
                r.operator.value,
                r.values.iter().map(|v| v.value.as_str()).collect(),
                at(t, r.operator.span),
                at(t, r.span),
            )
        })
        .collect();
    assert_eq!(
        exprs,
        [
            ("c", Operator::NotIn, vec!["3"], "!=", "c != 3"),
            ("d", Operator::In, vec!["x", "y"], "in", "d in (x, y)"),
            ("e", Operator::NotIn, vec!["z"], "notin", "e notin (z)"),
            ("f", Operator::Exists, vec![], "f", "f"),
            ("g", Operator::DoesNotExist, vec![], "!", "!g"),
        ]
    );
}

#[test]
fn item_forms_and_star_selectors() {
    let t = "policy i {
      select pods(*)
      select pods(a) in namespaces(*)
      select pods(a) on nodes(n)
      select pods(*) in namespaces(b) on nodes(*)
      select namespaces(*)
      select namespaces(c) on nodes(d)
    }";
    let p = one(t);
    let shape: Vec<(bool, bool, bool)> = p
        .selectors
        .iter()
        .map(|i| (i.pod_selector.is_some(), i.namespace_selector.is_some(), i.node_selector.is_some()))
        .collect();
    assert_eq!(
        shape,
        [
            (true, false, false),
            (true, true, false),
            (true, false, true),
            (true, true, true),
            (false, true, false),
            (false, true, true)
        ]
    );
    let first = p.selectors[0].pod_selector.as_ref().expect("pods");
    assert!(first.is_empty());
    assert_eq!(at(t, first.span), "pods(*)");
    let all_ns = p.selectors[4].namespace_selector.as_ref().expect("namespaces");
    assert!(all_ns.is_empty());
}

#[test]
fn one_via_is_egress_gateway_several_are_egress_gateways_in_order() {
    let none = one("policy a { select pods(*) to 1.0.0.0/8 }");
    assert!(none.egress_gateway.is_none() && none.egress_gateways.is_empty());

    let t = "policy a { via nodes(g = one) via nodes(g = two) interface eth1 via nodes(g = three) ip 2001:db8::7 }";
    let p = one(t);
    assert!(p.egress_gateway.is_none());
    let names: Vec<&str> = p.egress_gateways.iter().map(|g| g.node_selector.match_labels[0].1.value.as_str()).collect();
    assert_eq!(names, ["one", "two", "three"]);
    let iface = p.egress_gateways[1].interface.as_ref().expect("interface");
    assert_eq!((iface.value.as_str(), at(t, iface.span)), ("eth1", "eth1"));
    let ip = p.egress_gateways[2].egress_ip.as_ref().expect("ip");
    assert_eq!(ip.value.to_string(), "2001:db8::7");
    assert_eq!(at(t, p.egress_gateways[2].span), "nodes(g = three) ip 2001:db8::7");
}

#[test]
fn ip_and_interface_parse_and_the_validator_reports_both() {
    let t = "policy a { select pods(*) to 0.0.0.0/0 via nodes(*) interface \"bond0.100\" ip 192.0.2.1 }";
    let p = one(t);
    let g = p.egress_gateway.as_ref().expect("gateway");
    assert_eq!(g.interface.as_ref().map(|i| i.value.as_str()), Some("bond0.100"));
    assert_eq!(g.egress_ip.as_ref().map(|i| i.value.to_string()), Some("192.0.2.1".to_string()));
    let codes: Vec<&str> = validate::policy(&p).iter().map(|d| d.code.id).collect();
    assert_eq!(codes, ["E0108"]);
}

#[test]
fn statements_accumulate_and_keep_host_bits() {
    let t = "policy a {
      to 10.0.0.1/8
      except 10.1.0.0/16
      to 2001:db8::1/32, 192.0.2.0/24
      except 10.2.0.0/16
    }";
    let p = one(t);
    let dst: Vec<String> = p.destination_cidrs.iter().map(|c| c.value.to_string()).collect();
    assert_eq!(dst, ["10.0.0.1/8", "2001:db8::1/32", "192.0.2.0/24"]);
    assert!(p.destination_cidrs[0].value.has_host_bits(), "kept as written for the validator");
    let exc: Vec<String> = p.excluded_cidrs.iter().map(|c| c.value.to_string()).collect();
    assert_eq!(exc, ["10.1.0.0/16", "10.2.0.0/16"]);
    let codes: Vec<&str> = validate::policy(&p).iter().map(|d| d.code.id).collect();
    assert!(codes.contains(&"E0106"), "validator reports host bits: {codes:?}");
}

#[test]
fn whitespace_semicolons_and_comments_are_insignificant() {
    let spread = "policy   a\n{\nselect\npods(\napp\n=\nweb\n)\n;;\nto\n0.0.0.0/0\n,\n::/0\nvia nodes(*)\n}";
    let dense = "policy a{select pods(app=web);to 0.0.0.0/0,::/0;via nodes(*)}";
    let commented =
        "# c\npolicy a { # c\n select pods(app = web) # c\n # c\n to 0.0.0.0/0, # c\n ::/0\n via nodes(*) # c\n} # c";
    let a = one(spread);
    for other in [dense, commented] {
        let b = one(other);
        assert!(egret::semantically_equal(&a, &b), "{other}");
        assert_eq!(egret::normalize(&a), egret::normalize(&b));
    }
}

#[test]
fn keywords_are_ordinary_words_where_a_label_or_value_is_expected() {
    let t = r#"policy policy { select pods(in = to, select in (via, except), notin, !on, pods != namespaces) via nodes(ip = interface) interface ip }"#;
    let p = one(t);
    assert_eq!(p.name.value, "policy");
    let s = p.selectors[0].pod_selector.as_ref().expect("pods");
    assert_eq!((s.match_labels[0].0.value.as_str(), s.match_labels[0].1.value.as_str()), ("in", "to"));
    let keys: Vec<&str> = s.match_expressions.iter().map(|r| r.key.value.as_str()).collect();
    assert_eq!(keys, ["select", "notin", "on", "pods"]);
    let g = p.egress_gateway.as_ref().expect("gateway");
    assert_eq!(g.interface.as_ref().map(|i| i.value.as_str()), Some("ip"));
}

#[test]
fn strings_decode_json_escapes_and_hash_inside_is_not_a_comment() {
    let t = r#"policy "quoted.name" { select pods("k/#x" = "a\"b\\c\u00e9\ud83d\ude00 # not a comment") }"#;
    let p = one(t);
    assert_eq!(p.name.value, "quoted.name");
    assert_eq!(at(t, p.name.span), "\"quoted.name\"");
    let (k, v) = &p.selectors[0].pod_selector.as_ref().expect("pods").match_labels[0];
    assert_eq!(k.value, "k/#x");
    assert_eq!(v.value, "a\"b\\cé😀 # not a comment");
}

#[test]
fn several_policies_in_file_order_and_empty_inputs() {
    let ps = parse_ok("policy b {}\npolicy a {}\npolicy c { }");
    let names: Vec<&str> = ps.iter().map(|p| p.name.value.as_str()).collect();
    assert_eq!(names, ["b", "a", "c"]);
    assert!(ps[0].selectors.is_empty() && ps[0].destination_cidrs.is_empty());
    for empty in ["", "   \n\n", "# only a comment\n# and another", "\u{feff}"] {
        assert!(parse_ok(empty).is_empty());
    }
}

#[test]
fn names_and_labels_are_kept_as_written_for_the_validator() {
    // Lexically fine, but not a DNS subdomain / label key / label value: the
    // validator reports them, with the same codes as for YAML.
    let t = "policy Web_1 { select pods(-bad = a/b) to 0.0.0.0/0 via nodes(*) }";
    let p = one(t);
    assert_eq!(p.name.value, "Web_1");
    let codes: Vec<&str> = validate::policy(&p).iter().map(|d| d.code.id).collect();
    for c in ["E0115", "E0111", "E0112"] {
        assert!(codes.contains(&c), "{c} missing from {codes:?}");
    }
}
