//! Cilium's own egress-gateway test cases through `egret compile --emit
//! cilium --format json`: the fixtures in `tests/fixtures/cilium/` (see its
//! README) must give the rows Cilium's tests expect, IPv6 included. Each
//! expectation is transcribed from the Cilium test named above it
//! (cilium/cilium, `pkg/egressgateway/`), written as `cilium-dbg bpf egress
//! list -o json` prints it: the IPv4 map's entries, then the IPv6 map's.

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};

fn egret(args: &[&str]) -> Output {
    crate::messages::run(
        Command::new(env!("CARGO_BIN_EXE_egret"))
            .args(args)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cilium")),
    )
}

/// `egret compile --emit cilium --format json` of a fixture on a node, parsed.
fn cilium_json(dir: &str, policies: &str, node: &str, extra: &[&str]) -> Value {
    let cluster = format!("{dir}/cluster.yaml");
    let policies = format!("{dir}/{policies}.yaml");
    let mut args =
        vec!["compile", "--cluster", &cluster, &policies, "--node", node, "--emit", "cilium", "--format", "json"];
    args.extend_from_slice(extra);
    let o = egret(&args);
    assert!(o.status.success(), "{dir}/{policies}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("json output")
}

/// Entries as `cilium-dbg bpf egress list -o json` prints them.
fn entries(rows: &[[&str; 4]]) -> Value {
    Value::Array(
        rows.iter().map(|[s, d, e, g]| json!({"SourceIP": s, "DestCIDR": d, "EgressIP": e, "GatewayIP": g})).collect(),
    )
}

// manager_privileged_test.go's constants: node1IP 192.168.1.1 (the local
// node), node2IP 192.168.1.2, egressIP1 192.168.101.1, egressIP1v6
// 2001:db8:101::1, gatewayExcludedCIDRValue 0.0.0.1 ("Excluded CIDR"),
// gatewayNotFoundValue 0.0.0.0 ("Not Found"), zeroIP6 / egressIPNotFoundValuev6 "::".

#[test]
fn manager_test_excluded_cidrs_in_both_maps() {
    // TestEgressGatewayManager, "Add a second excluded CIDR to policy-1":
    // assertEgressRules4 and assertEgressRules6.
    let want = entries(&[
        ["10.0.0.1", "1.1.1.0/24", "192.168.101.1", "192.168.1.1"],
        ["10.0.0.1", "1.1.1.22/32", "192.168.101.1", "Excluded CIDR"],
        ["10.0.0.1", "1.1.1.240/30", "192.168.101.1", "Excluded CIDR"],
        ["10.0.0.2", "1.1.1.0/24", "0.0.0.0", "192.168.1.2"],
        ["fd00::1", "2001:db8::/64", "2001:db8:101::1", "192.168.1.1"],
        ["fd00::1", "2001:db8::22/128", "2001:db8:101::1", "Excluded CIDR"],
        ["fd00::1", "2001:db8::f0/126", "2001:db8:101::1", "Excluded CIDR"],
        ["fd00::2", "2001:db8::/64", "::", "192.168.1.2"],
    ]);
    assert_eq!(cilium_json("manager", "excluded", "k8s1", &[]), want);
}

#[test]
fn manager_test_no_gateway_and_no_egress_ip() {
    // TestEgressGatewayManager, "Test a policy without valid egressIP" (after
    // "Test matching no gateway"): policy-1 finds no gateway, policy-3's
    // interface is missing so its egress IPs are not found.
    let want = entries(&[
        ["10.0.0.1", "1.1.1.0/24", "0.0.0.0", "Not Found"],
        ["10.0.0.1", "1.1.3.0/24", "0.0.0.0", "192.168.1.1"],
        ["10.0.0.2", "1.1.1.0/24", "0.0.0.0", "192.168.1.2"],
        ["fd00::1", "2001:db8::/64", "::", "Not Found"],
        ["fd00::1", "2001:db8:3::/64", "::", "192.168.1.1"],
        ["fd00::2", "2001:db8::/64", "::", "192.168.1.2"],
    ]);
    assert_eq!(cilium_json("manager", "no-gateway", "k8s1", &[]), want);
}

#[test]
fn multigateway_test_in_both_maps() {
    // TestMultigatewayPolicy's assignEndpoints: gateways sorted by node IP,
    // gateways[computeEndpointHash(uid) % N]; the egress IP is egressIP1 /
    // egressIP1v6 when that gateway is node1 (the local node), else zero.
    // With the fixtures' UIDs fnv1a_32 gives ep-1 0x143f8b7a, ep-2
    // 0x133f89e7, ep-3 0x123f8854, ep-4 0x113f86c1: mod 2 → 0 1 0 1, mod 3 → 2 0 1 2.
    let two = entries(&[
        ["10.0.0.1", "1.1.1.0/24", "192.168.101.1", "192.168.1.1"],
        ["10.0.0.2", "1.1.1.0/24", "0.0.0.0", "192.168.1.2"],
        ["10.0.0.3", "1.1.1.0/24", "192.168.101.1", "192.168.1.1"],
        ["10.0.0.4", "1.1.1.0/24", "0.0.0.0", "192.168.1.2"],
        ["fd00::1", "2001:db8::/64", "2001:db8:101::1", "192.168.1.1"],
        ["fd00::2", "2001:db8::/64", "::", "192.168.1.2"],
        ["fd00::3", "2001:db8::/64", "2001:db8:101::1", "192.168.1.1"],
        ["fd00::4", "2001:db8::/64", "::", "192.168.1.2"],
    ]);
    assert_eq!(cilium_json("multigateway", "two", "k8s1", &[]), two);
    // "Add a new gateway and check that the endpoints get redistributed."
    let three = entries(&[
        ["10.0.0.1", "1.1.1.0/24", "0.0.0.0", "192.168.1.3"],
        ["10.0.0.2", "1.1.1.0/24", "192.168.101.1", "192.168.1.1"],
        ["10.0.0.3", "1.1.1.0/24", "0.0.0.0", "192.168.1.2"],
        ["10.0.0.4", "1.1.1.0/24", "0.0.0.0", "192.168.1.3"],
        ["fd00::1", "2001:db8::/64", "::", "192.168.1.3"],
        ["fd00::2", "2001:db8::/64", "2001:db8:101::1", "192.168.1.1"],
        ["fd00::3", "2001:db8::/64", "::", "192.168.1.2"],
        ["fd00::4", "2001:db8::/64", "::", "192.168.1.3"],
    ]);
    assert_eq!(cilium_json("multigateway", "three", "k8s1", &[]), three);
    // From a node that is no gateway of the policy (k8s3 with two gateways),
    // every egress IP is zero and the gateways are the same.
    let from_k8s3 = cilium_json("multigateway", "two", "k8s3", &[]);
    let zeroed: Vec<Value> = two
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["EgressIP"] =
                json!(if r["SourceIP"].as_str().is_some_and(|s| s.contains(':')) { "::" } else { "0.0.0.0" });
            r
        })
        .collect();
    assert_eq!(from_k8s3, Value::Array(zeroed));
}

#[test]
fn txtar_interface_by_name_and_altname() {
    // testdata/test.txtar, policymap.expected.1 (interface eth0) and
    // policymap.expected.2 (interface eth1-alt, an altName of eth1); the
    // fe80:: address of eth0 is skipped.
    let eth0 = entries(&[
        ["10.244.3.91", "0.0.0.0/0", "10.10.0.1", "172.18.0.3"],
        ["fd00:10:244:3::9c94", "::/0", "fd00::10:10:0:1", "172.18.0.3"],
    ]);
    assert_eq!(cilium_json("txtar-interface", "eth0", "localnode1", &[]), eth0);
    let eth1 = entries(&[
        ["10.244.3.91", "0.0.0.0/0", "10.10.0.2", "172.18.0.3"],
        ["fd00:10:244:3::9c94", "::/0", "fd00::10:10:0:2", "172.18.0.3"],
    ]);
    assert_eq!(cilium_json("txtar-interface", "eth1-alt", "localnode1", &[]), eth1);
}

#[test]
fn txtar_egress_ip_of_either_family() {
    // testdata/test_egressip.txtar: egressIP 10.10.0.1 gives eth0's first
    // IPv6 address for the IPv6 map (policymap.expected.1); egressIP
    // fd00::10:10:0:2 gives eth1's IPv4 address for the IPv4 map (.2).
    let v4 = entries(&[
        ["10.244.3.91", "0.0.0.0/0", "10.10.0.1", "172.18.0.3"],
        ["fd00:10:244:3::9c94", "::/0", "fd00::10:10:0:1", "172.18.0.3"],
    ]);
    assert_eq!(cilium_json("txtar-egressip", "ipv4", "localnode1", &[]), v4);
    let v6 = entries(&[
        ["10.244.3.91", "0.0.0.0/0", "10.10.0.2", "172.18.0.3"],
        ["fd00:10:244:3::9c94", "::/0", "fd00::10:10:0:2", "172.18.0.3"],
    ]);
    assert_eq!(cilium_json("txtar-egressip", "ipv6", "localnode1", &[]), v6);
}

#[test]
fn cilium_1_17_has_no_ipv6_map_and_refuses_an_ipv6_egress_ip() {
    // The IPv4-only reading is kept behind --cilium-version 1.17.
    let want = entries(&[
        ["10.0.0.1", "1.1.1.0/24", "192.168.101.1", "192.168.1.1"],
        ["10.0.0.1", "1.1.1.22/32", "192.168.101.1", "Excluded CIDR"],
        ["10.0.0.1", "1.1.1.240/30", "192.168.101.1", "Excluded CIDR"],
        ["10.0.0.2", "1.1.1.0/24", "0.0.0.0", "192.168.1.2"],
    ]);
    assert_eq!(cilium_json("manager", "excluded", "k8s1", &["--cilium-version", "1.17"]), want);
    let o = egret(&[
        "compile",
        "--cluster",
        "txtar-egressip/cluster.yaml",
        "txtar-egressip/ipv6.yaml",
        "--node",
        "localnode1",
        "--emit",
        "cilium",
        "--cilium-version",
        "1.17",
    ]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "No entries found.\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Cilium 1.17 refuses policy `policy1`"), "{err}");
    assert_eq!(egret(&["compile", "--cilium-version", "1.18", "x.yaml", "--node", "n"]).status.code(), Some(2));
}

#[test]
fn cilium_refuses_an_egress_ip_whose_family_no_destination_has() {
    // policy_ipv6_test.go, "IPv4 egress IP with IPv6 destination CIDR (should
    // fail)": ParseCEGP errors, so the policy programs no entries.
    let dir = std::env::temp_dir().join(format!("egret-cilium-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let policy = dir.join("p.yaml");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cilium/txtar-egressip/ipv4.yaml"),
    )
    .expect("fixture")
    .replace("[0.0.0.0/0, \"::/0\"]", "[\"::/0\"]");
    std::fs::write(&policy, text).expect("write");
    let policy = policy.to_string_lossy().into_owned();
    let o = egret(&[
        "compile",
        "--cluster",
        "txtar-egressip/cluster.yaml",
        &policy,
        "--node",
        "localnode1",
        "--emit",
        "cilium",
        "--format",
        "json",
    ]);
    assert!(o.status.success());
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).expect("json"), json!([]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("IPv4 egress IP 10.10.0.1 cannot be used with only IPv6 destination CIDRs"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
