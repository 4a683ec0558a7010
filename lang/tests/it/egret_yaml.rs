//! `.egret` → canonical CiliumEgressGatewayPolicy YAML (`egret convert`), and
//! back through the Kubernetes reader.

use egret_lang::ast::Policy;
use egret_lang::source::FileId;
use egret_lang::{egret, emit, k8s};

fn parse_ok(text: &str) -> Vec<Policy> {
    let (p, d) = egret::parse(FileId(0), text);
    assert!(d.is_empty(), "{:?}", d.iter().map(|d| &d.message).collect::<Vec<_>>());
    p
}

const FILE: &str = r#"# Payments leave through the address the processor allow-lists.
policy egress-payments {
  select pods(app = payment-service) in namespaces(kubernetes.io/metadata.name = production)
  select namespaces(team in (a, b)) on nodes(topology.kubernetes.io/zone = us-east-1a)
  to 0.0.0.0/0, ::/0
  except 10.0.0.0/8, 192.168.0.0/16
  via nodes(cilium.io/egress-gateway = "true") ip 192.168.1.100
}

policy ha {
  select pods(tier notin (debug, test), !canary, version, yes = "1.0") on nodes(*)
  to 203.0.113.0/24
  via nodes(gw = a) interface eth1
  via nodes(gw = b)
}
"#;

#[test]
fn snapshot_example_yaml() {
    insta::assert_snapshot!(emit::policies_to_yaml(&parse_ok(FILE)));
}

#[test]
fn quoting_rules() {
    let yaml = emit::policies_to_yaml(&parse_ok(FILE));
    // Values, CIDRs and IPs are always quoted; keys only when YAML would misread them.
    assert!(yaml.contains("        cilium.io/egress-gateway: \"true\"\n"));
    assert!(yaml.contains("        \"yes\": \"1.0\"\n"));
    assert!(yaml.contains("  - \"::/0\"\n"));
    assert!(yaml.contains("    egressIP: \"192.168.1.100\"\n"));
    assert!(yaml.contains("      - key: canary\n        operator: DoesNotExist\n      - key: version\n"));
    assert!(yaml.contains("    interface: eth1\n"));
    assert_eq!(yaml.matches("---\n").count(), 1, "documents are separated by ---");
    assert!(!yaml.contains("namespace:"), "never metadata.namespace");
}

#[test]
fn metadata_uid_is_kept_namespace_is_not_and_empty_parts_are_explicit() {
    let mut p = parse_ok("policy \"123\" { select pods(*) to 0.0.0.0/0 via nodes(*) }").remove(0);
    p.uid = Some("7c22952d-25a0-409d-952c-60895b5c2a90".into());
    p.namespace = Some(egret_lang::Spanned::new("prod".into(), Default::default()));
    assert_eq!(
        emit::policies_to_yaml(&[p]),
        "apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: \"123\"
  uid: \"7c22952d-25a0-409d-952c-60895b5c2a90\"
spec:
  selectors:
  - podSelector: {}
  destinationCIDRs:
  - \"0.0.0.0/0\"
  egressGateway:
    nodeSelector: {}
"
    );
    assert_eq!(emit::policies_to_yaml(&[]), "");
}

#[test]
fn egret_to_yaml_to_ast_to_egret() {
    let policies = parse_ok(FILE);
    let yaml = emit::policies_to_yaml(&policies);
    let (bundle, diags) = k8s::parse_yaml(FileId(1), &yaml);
    assert!(diags.is_empty(), "{:?}", diags.iter().map(|d| &d.message).collect::<Vec<_>>());
    assert_eq!(bundle.policies.len(), policies.len());
    for (a, b) in policies.iter().zip(&bundle.policies) {
        assert!(egret::semantically_equal(a, b), "{}", a.name.value);
    }
    // Spans of the YAML side point into the YAML text.
    let p = &bundle.policies[0];
    assert_eq!(&yaml[p.name.span.range()], "egress-payments");
    let back = egret::try_print(&bundle.policies).expect("expressible");
    assert_eq!(back, egret::print(&policies));
    assert_eq!(
        back,
        egret::format(FileId(2), FILE)
            .expect("formats")
            .replace("# Payments leave through the address the processor allow-lists.\n", "")
    );
}
