//! `egret fmt`: the canonical text, its idempotence, and comments.

use egret_lang::ast::{GatewaySpec, LabelSelector, Operator, Policy, Requirement, SelectorItem};
use egret_lang::egret;
use egret_lang::source::{FileId, Span, Spanned};

fn parse_ok(text: &str) -> Vec<Policy> {
    let (p, d) = egret::parse(FileId(0), text);
    assert!(d.is_empty(), "{:?}", d.iter().map(|d| &d.message).collect::<Vec<_>>());
    p
}

fn fmt(text: &str) -> String {
    match egret::format(FileId(0), text) {
        Ok(s) => s,
        Err(d) => panic!("format failed: {:?}", d.iter().map(|d| &d.message).collect::<Vec<_>>()),
    }
}

/// `print(parse(print(parse(x)))) == print(parse(x))`, and the same with comments.
fn assert_idempotent(text: &str) {
    let once = egret::print(&parse_ok(text));
    let twice = egret::print(&parse_ok(&once));
    assert_eq!(once, twice, "print is not idempotent for {text:?}");
    let once = fmt(text);
    assert_eq!(fmt(&once), once, "format is not idempotent for {text:?}");
}

#[test]
fn canonical_form_of_the_example() {
    let text = r#"# Payments leave through the address the processor allow-lists.
policy egress-payments {
  select pods(app = payment-service) in namespaces(kubernetes.io/metadata.name = production)
  select namespaces(team in (a, b)) on nodes(topology.kubernetes.io/zone = us-east-1a)
  to 0.0.0.0/0, ::/0
  except 10.0.0.0/8, 192.168.0.0/16
  via nodes(cilium.io/egress-gateway = "true") ip 192.168.1.100
}
"#;
    let expected = "policy egress-payments {
  select pods(app = payment-service) in namespaces(kubernetes.io/metadata.name = production)
  select namespaces(team in (a, b)) on nodes(topology.kubernetes.io/zone = us-east-1a)
  to 0.0.0.0/0, ::/0
  except 10.0.0.0/8, 192.168.0.0/16
  via nodes(cilium.io/egress-gateway = true) ip 192.168.1.100
}
";
    assert_eq!(egret::print(&parse_ok(text)), expected);
    assert_eq!(fmt(text), format!("# Payments leave through the address the processor allow-lists.\n{expected}"));
    assert_idempotent(text);
}

#[test]
fn messy_input_becomes_canonical() {
    let text = "policy   b{via nodes( zone==\"a\" )interface \"eth 0\" ; to 10.0.0.0/8
      except 10.1.0.0/16 ;select pods( k notin (x) , !gone , has, \"Weird Key\" = \"\" ,tier in(a,b) ) on nodes(*)
      to 2001:DB8::/32 via nodes(zone = b) ip 2001:0DB8::1}
    policy \"Upper\" {}";
    let expected = r#"policy b {
  select pods("Weird Key" = "", k != x, !gone, has, tier in (a, b)) on nodes(*)
  to 10.0.0.0/8, 2001:db8::/32
  except 10.1.0.0/16
  via nodes(zone = a) interface "eth 0"
  via nodes(zone = b) ip 2001:db8::1
}

policy "Upper" {}
"#;
    assert_eq!(egret::print(&parse_ok(text)), expected);
    assert_idempotent(text);
}

#[test]
fn idempotent_on_a_corpus() {
    for text in [
        "",
        "policy a {}",
        "policy a { select pods(*) }",
        "policy a { select namespaces(x in (\"1\", \"a b\", in)) on nodes(!y) via nodes(*) }",
        "policy a { to ::/0 } policy b { except 0.0.0.0/0 }",
        "policy a { select pods(\"\\u0001\\t\\\\\" = \"é\") }",
        "# only\n\n# comments\n",
        "policy a { # h\n # l\n to 1.0.0.0/8 # t\n to 2.0.0.0/8 # t2\n # e\n} # c\n# f\n",
    ] {
        assert_idempotent(text);
    }
}

#[test]
fn comments_are_kept_where_they_belong() {
    let text = "# file header

# about a
policy a {   # on the header line
  via nodes(*)    # trailing via
  # leading select
  select pods(app = web)
  to 10.0.0.0/8,     # inside the statement
     11.0.0.0/8      # after to
  # before the end
}    # after the brace
# about b

policy b {} # b's brace
# end of file
";
    let expected = "# file header

# about a
policy a { # on the header line
  # leading select
  select pods(app = web)
  # inside the statement
  to 10.0.0.0/8, 11.0.0.0/8 # after to
  via nodes(*) # trailing via
  # before the end
} # after the brace

# about b

policy b {} # b's brace

# end of file
";
    assert_eq!(fmt(text), expected);
    assert_eq!(fmt(expected), expected);
    let parsed = egret::parse_with_comments(FileId(0), text);
    assert_eq!(parsed.comments.len(), 12);
}

#[test]
fn merged_statements_keep_all_their_comments() {
    let text = "policy a {\n  # one\n  to 1.0.0.0/8 # t1\n  # two\n  to 2.0.0.0/8 # t2\n}\n";
    let expected = "policy a {\n  # one\n  # two\n  # t2\n  to 1.0.0.0/8, 2.0.0.0/8 # t1\n}\n";
    assert_eq!(fmt(text), expected);
    assert_eq!(fmt(expected), expected);
}

#[test]
fn format_refuses_files_with_errors() {
    let Err(diags) = egret::format(FileId(0), "policy a { to 10.0.0.0/33 }") else {
        panic!("a file with errors must not be formatted");
    };
    assert_eq!(diags.iter().map(|d| d.code.id).collect::<Vec<_>>(), ["E0105"]);
}

fn sp() -> Span {
    Span::default()
}

fn s(v: &str) -> Spanned<String> {
    Spanned::new(v.to_string(), sp())
}

fn labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        span: sp(),
        match_labels: pairs.iter().map(|(k, v)| (s(k), s(v))).collect(),
        match_expressions: vec![],
    }
}

fn gw(zone: &str) -> GatewaySpec {
    GatewaySpec {
        span: sp(),
        node_selector: labels(&[("zone", zone)]),
        egress_ip: None,
        interface: None,
        floating: None,
    }
}

fn base() -> Policy {
    let (mut ps, _) = egret::parse(FileId(0), "policy p { select pods(app = web) to 0.0.0.0/0 via nodes(zone = a) }");
    ps.remove(0)
}

#[test]
fn what_egret_cannot_express_is_rejected_by_try_print_and_commented_by_print() {
    use egret::Unprintable;
    let mut ns = base();
    ns.namespace = Some(s("prod"));
    let mut no_pods = base();
    no_pods.selectors.push(SelectorItem {
        span: sp(),
        pod_selector: None,
        namespace_selector: None,
        node_selector: Some(labels(&[("n", "1")])),
    });
    let mut no_values = base();
    if let Some(sel) = no_values.selectors[0].pod_selector.as_mut() {
        sel.match_expressions.push(Requirement {
            span: sp(),
            key: s("tier"),
            operator: Spanned::new(Operator::In, sp()),
            values: vec![],
        });
    }
    let mut both = base();
    both.egress_gateways = vec![gw("b"), gw("c")];

    let cases = [
        (ns, Unprintable::Namespace { policy: "p".into(), namespace: "prod".into() }),
        (no_pods, Unprintable::ItemWithoutPodsOrNamespaces { policy: "p".into(), item: 1 }),
        (
            no_values,
            Unprintable::RequirementValues { policy: "p".into(), key: "tier".into(), operator: "In", values: 0 },
        ),
        (both, Unprintable::IgnoredEgressGateway { policy: "p".into() }),
    ];
    for (p, err) in cases {
        assert_eq!(egret::try_print(std::slice::from_ref(&p)), Err(err));
        let text = egret::print(std::slice::from_ref(&p));
        assert_eq!(text.matches("# egret fmt: ").count(), 1, "{text}");
        // What print leaves is still valid `.egret`: the inexpressible part became a comment.
        let (_, diags) = egret::parse(FileId(0), &text);
        assert!(diags.is_empty(), "{text}");
    }
    assert_eq!(
        egret::print(&[{
            let mut p = base();
            p.namespace = Some(s("prod"));
            p
        }]),
        "policy p {\n  # egret fmt: cluster-scoped policies have no namespace; dropped: metadata.namespace \"prod\"\n  select pods(app = web)\n  to 0.0.0.0/0\n  via nodes(zone = a)\n}\n"
    );
}

#[test]
fn single_egress_gateways_entry_prints_as_one_via_and_reads_back_equal() {
    let mut p = base();
    let g = p.egress_gateway.take().expect("gateway");
    p.egress_gateways = vec![g];
    let text = egret::try_print(std::slice::from_ref(&p)).expect("expressible");
    let back = parse_ok(&text);
    assert!(back[0].egress_gateway.is_some() && back[0].egress_gateways.is_empty());
    assert!(egret::semantically_equal(&p, &back[0]));
}

#[test]
fn semantic_equality_ignores_spans_origin_uid_and_label_order_only() {
    let a = parse_ok("policy p { select pods(a = 1, b = 2) to 0.0.0.0/0 via nodes(*) }").remove(0);
    let mut b = parse_ok("\n\npolicy p {\n select pods(b = 2, a = 1)\n to 0.0.0.0/0\n via nodes(*)\n}").remove(0);
    b.origin = egret_lang::ast::Origin::Crd;
    b.uid = Some("1234".into());
    assert!(egret::semantically_equal(&a, &b));
    for other in [
        "policy q { select pods(a = 1, b = 2) to 0.0.0.0/0 via nodes(*) }",
        "policy p { select pods(a = 1, b = 3) to 0.0.0.0/0 via nodes(*) }",
        "policy p { select pods(a = 1, b in (2)) to 0.0.0.0/0 via nodes(*) }",
        "policy p { select pods(a = 1, b = 2) to 0.0.0.0/1 via nodes(*) }",
        "policy p { select pods(a = 1, b = 2) to 0.0.0.0/0 via nodes(*) ip 192.0.2.1 }",
        "policy p { select pods(a = 1, b = 2) to 0.0.0.0/0 via nodes(*) via nodes(*) }",
        "policy p { select pods(a = 1, b = 2) in namespaces(*) to 0.0.0.0/0 via nodes(*) }",
    ] {
        assert!(!egret::semantically_equal(&a, &parse_ok(other)[0]), "{other}");
    }
}
