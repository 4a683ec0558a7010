//! `.egret` errors: codes, exact spans, help lines, recovery, and the rendered
//! human diagnostics (insta snapshots).

use egret_lang::diag::{Diagnostic, render};
use egret_lang::egret;
use egret_lang::source::SourceMap;

fn parse_in_map(name: &str, text: &str) -> (Vec<egret_lang::ast::Policy>, Vec<Diagnostic>, SourceMap) {
    let mut sources = SourceMap::new();
    let file = sources.add(name, text);
    let (p, d) = egret::parse(file, text);
    (p, d, sources)
}

/// `(code, text under the primary span)` of every diagnostic, in order.
fn problems(text: &str) -> Vec<(&'static str, String)> {
    let (_, diags, _) = parse_in_map("t.egret", text);
    for d in &diags {
        assert!(d.help.as_deref().is_some_and(|h| !h.is_empty()), "no help on {:?}", d.message);
        assert_eq!(d.labels.iter().filter(|l| l.primary).count(), 1, "one primary label on {:?}", d.message);
    }
    diags.iter().map(|d| (d.code.id, text[d.primary_span().unwrap_or_default().range()].to_string())).collect()
}

fn one_problem(text: &str) -> (&'static str, String) {
    let mut p = problems(text);
    assert_eq!(p.len(), 1, "expected one diagnostic for {text:?}, got {p:?}");
    p.remove(0)
}

fn help_of(text: &str) -> String {
    let (_, diags, _) = parse_in_map("t.egret", text);
    diags.first().and_then(|d| d.help.clone()).unwrap_or_default()
}

#[test]
fn empty_selectors_say_how_to_select_everything() {
    for (kind, things) in [("pods", "pod"), ("namespaces", "namespace"), ("nodes", "node")] {
        let text = match kind {
            "nodes" => "policy a { select pods(*) to 0.0.0.0/0 via nodes( ) }".to_string(),
            _ => format!("policy a {{ select {kind}() to 0.0.0.0/0 via nodes(*) }}"),
        };
        let (code, under) = one_problem(&text);
        assert_eq!(code, "E0003");
        assert!(under.starts_with('(') && under.ends_with(')'), "{under}");
        assert_eq!(help_of(&text), format!("an empty selector matches every {things}; write {kind}(*) to say so"));
    }
    // The selector is still read (as `{}`), so nothing else is reported.
    let (ps, _, _) = parse_in_map("t.egret", "policy a { select pods() to 0.0.0.0/0 }");
    assert_eq!(ps.len(), 1);
    assert!(ps[0].selectors[0].pod_selector.as_ref().is_some_and(|s| s.is_empty()));
}

#[test]
fn invalid_cidrs_and_ips_are_reported_and_left_out() {
    let text = "policy a {
      to 10.0.0.0/33, 10.0.0.0, 1.2.3.4/8, 999.0.0.0/8, \"fe80::/129\"
      except ::/0, 10.0.0.0/08
      via nodes(*) ip 192.168.1.300
      via nodes(*) ip 10.0.0.1/32
    }";
    assert_eq!(
        problems(text),
        [
            ("E0105", "10.0.0.0/33".to_string()),
            ("E0105", "10.0.0.0".to_string()),
            ("E0105", "999.0.0.0/8".to_string()),
            ("E0105", "\"fe80::/129\"".to_string()),
            ("E0105", "10.0.0.0/08".to_string()),
            ("E0107", "192.168.1.300".to_string()),
            ("E0107", "10.0.0.1/32".to_string()),
        ]
    );
    let (ps, _, _) = parse_in_map("t.egret", text);
    let dst: Vec<String> = ps[0].destination_cidrs.iter().map(|c| c.value.to_string()).collect();
    assert_eq!(dst, ["1.2.3.4/8"], "host bits are the validator's, invalid values are left out");
    assert_eq!(ps[0].excluded_cidrs.len(), 1);
    assert!(ps[0].egress_gateways.iter().all(|g| g.egress_ip.is_none()));
    assert_eq!(help_of("policy a { to 10.0.0.1 }"), "add a prefix length; one address is `10.0.0.1/32`");
    assert_eq!(
        help_of("policy a { via nodes(*) ip 10.0.0.1/32 }"),
        "an egress IP is one address: write `10.0.0.1` without `/32`"
    );
}

#[test]
fn syntax_errors_point_at_the_offending_token() {
    let cases: &[(&str, &str)] = &[
        ("policy a { select pods(app = web to 0.0.0.0/0 }", "to"),
        ("policy a { select pods(app = ) }", ")"),
        ("policy a { select pods(app web) }", "web"),
        ("policy a { select pods(app in ()) }", ")"),
        ("policy a { select pods(app in x) }", "x"),
        ("policy a { select pods(*, app) }", ","),
        ("policy a { select pods(app, ) }", ")"),
        ("policy a { select pods(!) }", ")"),
        ("policy a { select pod(app = web) }", "pod"),
        ("policy a { select pods(a) in nodes(b) }", "nodes"),
        ("policy a { select pods(a) on namespaces(b) }", "namespaces"),
        ("policy a { select pods(a) namespaces(b) }", "namespaces"),
        ("policy a { select pods app }", "app"),
        ("policy a { to }", "}"),
        ("policy a { to 10.0.0.0/8,\n except 10.1.0.0/16 }", "except"),
        ("policy a { to 10.0.0.0/8 10.1.0.0/16 }", "10.1.0.0/16"),
        ("policy a { via pods(*) }", "pods"),
        ("policy a { via nodes(*) ip }", "}"),
        ("policy a { via nodes(*) interface }", "}"),
        ("policy a { from pods(*) }", "from"),
        ("policy a { select pods(app = web) } }", "}"),
        ("policy a select pods(*) }", "select"),
        ("policy { }", "{"),
        ("policy", ""),
        ("polcy a { }", "polcy"),
        ("policy a { select pods(x = \"unterminated) }", "\""),
        ("policy a { select pods(x = \"bad \\q escape\") }", "\\q"),
        ("policy a { select pods(x = 'single') }", "'single'"),
        ("policy a { select pods(x = caf\u{e9}) }", "\u{e9}"),
        ("policy a { via nodes(*) ip 10.0.0.1 ip 10.0.0.2 }", "ip 10.0.0.2"),
        ("policy a { via nodes(*) interface a interface b }", "interface b"),
        ("policy a { select pods(app = a, app = b) }", "app"),
    ];
    for (text, under) in cases {
        let p = problems(text);
        assert!(!p.is_empty(), "no diagnostic for {text:?}");
        assert!(p.contains(&("E0003", under.to_string())), "diagnostics for {text:?}: {p:?}");
    }
}

#[test]
fn an_unclosed_block_points_at_its_brace_and_the_next_policy_still_parses() {
    let text = "policy a {\n  select pods(*)\npolicy b { select pods(*) }\n";
    let (ps, diags, _) = parse_in_map("t.egret", text);
    assert_eq!(diags.len(), 1);
    let d = &diags[0];
    assert_eq!(d.code.id, "E0003");
    assert_eq!(&text[d.primary_span().unwrap_or_default().range()], "{");
    let secondary: Vec<&str> = d.labels.iter().filter(|l| !l.primary).map(|l| &text[l.span.range()]).collect();
    assert_eq!(secondary, ["policy"]);
    let names: Vec<&str> = ps.iter().map(|p| p.name.value.as_str()).collect();
    assert_eq!(names, ["a", "b"], "the unclosed policy keeps what it had");
}

#[test]
fn recovery_reports_every_error_in_one_pass() {
    let text = "policy a {
  select pods(app = web      # missing )
  to 10.0.0.0/33             # bad CIDR
  select pods() in namespaces(*)
  frobnicate everything
  via nodes(*) ip 1.2.3.400
}
garbage here
policy b {
  select pods(ok = yes)
  to 0.0.0.0/0
}
";
    let p = problems(text);
    let codes: Vec<&str> = p.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, ["E0003", "E0105", "E0003", "E0003", "E0107", "E0003"]);
    let under: Vec<&str> = p.iter().map(|(_, u)| u.as_str()).collect();
    assert_eq!(under, ["to", "10.0.0.0/33", "()", "frobnicate", "1.2.3.400", "garbage"]);
    let (ps, _, _) = parse_in_map("t.egret", text);
    let names: Vec<&str> = ps.iter().map(|p| p.name.value.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(ps[1].selectors.len(), 1);
    assert_eq!(ps[1].destination_cidrs.len(), 1);
}

#[test]
fn policy_without_a_name_is_left_out_but_its_body_is_checked() {
    let text = "policy { to 10.0.0.0/99 }\npolicy ok { }";
    let p = problems(text);
    assert_eq!(p, [("E0003", "{".to_string()), ("E0105", "10.0.0.0/99".to_string())]);
    let (ps, _, _) = parse_in_map("t.egret", text);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].name.value, "ok");
}

#[test]
fn unreadable_text_is_reported_once() {
    // The lexer reports `@@`; the parser does not add a second error for it.
    let p = problems("policy a { select pods(x = @@) }\npolicy b { to \"\\u12\" }");
    assert_eq!(p, [("E0003", "@@".to_string()), ("E0003", "\\u12".to_string())]);
}

fn rendered(name: &str, text: &str) -> String {
    let (_, diags, sources) = parse_in_map(name, text);
    render::human(&diags, &sources)
}

#[test]
fn snapshot_missing_paren_and_bad_values() {
    insta::assert_snapshot!(rendered(
        "payments.egret",
        "policy egress-payments {
  select pods(app = payment-service
  to 0.0.0.0/0, 10.0.0.0/33
  via nodes(cilium.io/egress-gateway = \"true\") ip 192.168.1.300
}
"
    ));
}

#[test]
fn snapshot_empty_selector() {
    insta::assert_snapshot!(rendered(
        "empty.egret",
        "policy all-pods {\n  select pods() in namespaces(team = a)\n  to 0.0.0.0/0\n  via nodes(*)\n}\n"
    ));
}

#[test]
fn snapshot_unknown_statement_and_unclosed_block() {
    insta::assert_snapshot!(rendered(
        "unknown.egret",
        "policy a {\n  selector pods(app = web)\n  to 0.0.0.0/0\n\npolicy b {\n  to ::/0\n}\n"
    ));
}

#[test]
fn snapshot_lexical_errors() {
    insta::assert_snapshot!(rendered(
        "lex.egret",
        "policy a {\n  select pods(app = 'web', tier = \"back\\xend\")\n  to 0.0.0.0/0 # ok\n}\n"
    ));
}

#[test]
fn snapshot_gateway_errors() {
    insta::assert_snapshot!(rendered(
        "gw.egret",
        "policy a {\n  select pods(*)\n  to 0.0.0.0/0\n  via nodes(*) ip 10.0.0.1 ip 10.0.0.2\n  via nodes() interface\n}\n"
    ));
}
