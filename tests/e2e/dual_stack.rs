//! The dual-stack mini-cluster (`minicluster::Stack::Dual`, issue #16 item
//! 5): pods, the gateways' `eth1`, the underlay segment and the server have
//! IPv6 addresses too, the tunnel stays IPv4. Real sockets in the pods'
//! namespaces, assertions on what the server sees: IPv6 TCP, UDP and ICMPv6
//! echo leave through gateway-1's IPv6 egress address with their replies
//! back, excluded IPv6 destinations take the workers' normal path, IPv4
//! keeps working beside it, a pod on the gateway node itself is translated
//! there in both families, the no-gateway drop is counted for IPv6, and
//! 1,000 concurrent IPv6 connections get distinct NAT ports. The last test
//! feeds the same cluster to `egret-agent --kube` through the API server:
//! pods are attached by both their `podIPs`.

use std::net::IpAddr;
use std::path::Path;

use egret_bpf::templates::{self, LocalEndpoint, Stat};
use egret_compiler::codegen::reasons::Reason;
use egret_loader::inspect;
use egret_testkit::minicluster::{
    EGRESS_IP, EGRESS_IP6, EXCLUDED_SERVER, EXCLUDED_SERVER6, GATEWAY_POD, MiniCluster, SERVER, SERVER6, Source, Stack,
    node, pod,
};

use super::{
    AGENT, Leftovers, all_seen_from, no_gateway_drops_counted, privileged, reason, stat, thousand_connections,
    with_cluster_of,
};

/// The entries of a node's running `egret_local_eps_v4` / `_v6`: pod
/// address (key) → host-side ifindex.
pub(super) fn local_endpoints(c: &MiniCluster, node: &str, map: &str) -> Vec<(String, u32)> {
    let (_, dumps) = inspect::maps(&c.bpffs_root(node)).expect("the node's maps");
    let d = dumps.iter().find(|d| d.name == map).unwrap_or_else(|| panic!("{node} has no {map}"));
    d.entries
        .iter()
        .map(|e| {
            let v = e.values.first().expect("a value");
            let ifindex = u32::from_str_radix(&v[..8], 16).expect("hex").swap_bytes();
            (e.key.clone(), ifindex)
        })
        .collect()
}

/// Entries of a node's running map `map`.
pub(super) fn entries(c: &MiniCluster, node: &str, map: &str) -> usize {
    let (_, dumps) = inspect::maps(&c.bpffs_root(node)).expect("the node's maps");
    dumps.iter().find(|d| d.name == map).map_or(0, |d| d.entries.len())
}

/// Every drop counter of gateway-1 is 0 (the failure names those that are not).
pub(super) fn assert_no_gateway_drops(c: &MiniCluster) {
    let drops: Vec<(&str, u64)> =
        Stat::ALL.into_iter().filter(|s| s.is_drop()).map(|s| (s.name(), stat(c, s))).filter(|d| d.1 > 0).collect();
    assert!(drops.is_empty(), "gateway-1 dropped packets: {drops:?}");
}

/// The local-endpoint entry of `ip` as the maps' hex key, and its map.
pub(super) fn endpoint_key(ip: IpAddr) -> (String, &'static str) {
    let e = LocalEndpoint { pod: ip, ifindex: 0 };
    (egret_bpf::artifact::hex(&e.key()), e.map())
}

#[test]
fn dual_stack_pods_leave_through_the_ipv6_egress_ip_and_ipv4_keeps_working() {
    if !privileged("dual_stack_pods_leave_through_the_ipv6_egress_ip_and_ipv4_keeps_working") {
        return;
    }
    with_cluster_of("e2e6", Stack::Dual, |c| {
        for (p, node_name) in [("egress-1", "worker-1"), ("egress-2", "worker-2")] {
            let n = node(node_name);
            // IPv6 through the gateway: TCP, UDP and ICMPv6 echo answered, the
            // server sees the egress IPv6
            all_seen_from(c, p, SERVER6.into(), EGRESS_IP6.into(), true);
            // an excluded IPv6 destination: the node's normal path (its masquerade)
            let excluded = c.tcp_request(p, EXCLUDED_SERVER6).expect("IPv6 TCP to the excluded destination");
            assert_eq!(excluded.ip, n.address6, "{p} to an excluded IPv6 destination");
            // IPv4 keeps working on the same cluster
            all_seen_from(c, p, SERVER.into(), EGRESS_IP.into(), true);
            assert_eq!(c.tcp_request(p, EXCLUDED_SERVER).expect("IPv4 excluded").ip, n.address);
            // the dual-stack pod is a local endpoint of its node in both families, one veth
            let eps: Vec<(String, u32)> = [pod(p).ip.into(), pod(p).ip6.into()]
                .into_iter()
                .map(|ip: IpAddr| {
                    let (key, map) = endpoint_key(ip);
                    let found = local_endpoints(c, node_name, map);
                    let e = found.iter().find(|(k, _)| *k == key).unwrap_or_else(|| panic!("{ip} not in {map}"));
                    e.clone()
                })
                .collect();
            assert_eq!(eps[0].1, eps[1].1, "{p}: both addresses name the same host-side veth");
            assert!(eps[0].1 > 0);
        }
        // unselected pods: the normal path in both families
        for (p, node_name) in [("plain-1", "worker-1"), ("plain-2", "worker-2")] {
            let n = node(node_name);
            all_seen_from(c, p, SERVER6.into(), n.address6.into(), false);
            assert_eq!(c.tcp_request(p, SERVER).expect("IPv4 TCP").ip, n.address, "{p} over IPv4 TCP");
        }
        // 2 pods × 2 families × (TCP, UDP, ICMP) mappings, replies tunnelled back, no drops
        assert_eq!(stat(c, Stat::NatCreated), 12, "one mapping per flow");
        assert!(stat(c, Stat::ReplyTunnelled) >= 12);
        assert_eq!(entries(c, "gateway-1", templates::map::RNAT_V6), 6, "egret_rnat_v6: the IPv6 connections");
        assert_eq!(entries(c, "gateway-1", templates::map::RNAT_V4), 6, "egret_rnat_v4: the IPv4 connections");
        assert_no_gateway_drops(c);
        assert!(reason(c, "worker-1", Reason::Redirect) > 0, "worker-1 counted no tunnelled packet");
    });
}

#[test]
fn a_pod_on_the_gateway_node_leaves_through_the_egress_ips_in_both_families() {
    if !privileged("a_pod_on_the_gateway_node_leaves_through_the_egress_ips_in_both_families") {
        return;
    }
    with_cluster_of("e2e6g", Stack::Dual, |c| {
        let p = GATEWAY_POD.name;
        let replies_before = stat(c, Stat::ReplyLocal);
        all_seen_from(c, p, SERVER.into(), EGRESS_IP.into(), true);
        all_seen_from(c, p, SERVER6.into(), EGRESS_IP6.into(), true);
        // translated on the gateway itself: replies handed to the local pod, nothing tunnelled
        assert!(stat(c, Stat::ReplyLocal) >= replies_before + 6, "reply-local = {}", stat(c, Stat::ReplyLocal));
        assert_eq!(stat(c, Stat::ReplyTunnelled), 0);
        assert_eq!(stat(c, Stat::NatCreated), 6, "2 families × TCP, UDP, ICMP");
        for ip in [IpAddr::from(GATEWAY_POD.ip), GATEWAY_POD.ip6.into()] {
            let (key, map) = endpoint_key(ip);
            assert!(
                local_endpoints(c, "gateway-1", map).iter().any(|(k, i)| *k == key && *i > 0),
                "{ip} in gateway-1's {map}"
            );
        }
        assert_no_gateway_drops(c);
    });
}

/// worker-2's unlabelled pod (`app: plain, lane: b`) to the server's IPv6
/// range through a gateway no node is labelled for.
pub(super) fn no_gateway_policy6() -> String {
    "apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: lane-b-nowhere-v6
spec:
  selectors:
  - podSelector:
      matchLabels: {app: plain, lane: b}
  destinationCIDRs: [\"2001:db8:cafe::/48\"]
  egressGateway:
    nodeSelector:
      matchLabels: {egret.dev/no-such-gateway: \"true\"}
"
    .to_owned()
}

#[test]
fn an_ipv6_policy_whose_gateway_matches_no_node_drops_and_counts_no_gateway() {
    if !privileged("an_ipv6_policy_whose_gateway_matches_no_node_drops_and_counts_no_gateway") {
        return;
    }
    with_cluster_of("e2e6n", Stack::Dual, |c| {
        let w2 = node("worker-2");
        assert_eq!(c.udp_request("plain-2", SERVER6).expect("before the policy").ip, w2.address6);
        no_gateway_drops_counted(c, "nowhere6.yaml", &no_gateway_policy6(), SERVER6.into());
        // its IPv4 traffic, which the policy does not capture, is unaffected
        assert_eq!(c.udp_request("plain-2", SERVER).expect("plain-2 over IPv4").ip, w2.address);
        assert_eq!(c.udp_request("egress-2", SERVER6).expect("egress-2").ip, EGRESS_IP6);
        let before = c.generation("worker-2");
        c.remove_snapshot_file("nowhere6.yaml").expect("remove policy");
        c.wait_swap("worker-2", before).expect("worker-2 swaps back");
        assert_eq!(c.udp_request("plain-2", SERVER6).expect("after removal").ip, w2.address6);
    });
}

#[test]
fn a_thousand_concurrent_ipv6_connections_get_distinct_ports_and_complete() {
    if !privileged("a_thousand_concurrent_ipv6_connections_get_distinct_ports_and_complete") {
        return;
    }
    with_cluster_of("e2e6k", Stack::Dual, |c| {
        thousand_connections(c, SERVER6.into(), EGRESS_IP6.into());
        assert_eq!(entries(c, "gateway-1", templates::map::RNAT_V6), 1000, "one egret_rnat_v6 entry per connection");
        assert_eq!(entries(c, "gateway-1", templates::map::RNAT_V4), 0);
    });
}

#[test]
fn through_the_api_server_dual_stack_pods_are_attached_by_both_addresses() {
    if !privileged("through_the_api_server_dual_stack_pods_are_attached_by_both_addresses") {
        return;
    }
    let mut c = MiniCluster::prepare_with("e2e6a", Stack::Dual).expect("the dual-stack mini-cluster's network");
    let leftovers = Leftovers::of(&c);
    // the pods' `podIPs` (both families) and everything else come from the API server
    let served = crate::kubecluster::serve(&c, "e2e6a").expect("the API server");
    let kubeconfig = served.kubeconfig.clone();
    c.start_agents(Path::new(AGENT), Source::Kube { kubeconfig: &kubeconfig })
        .expect("every agent serves its node from the API server");
    for (p, node_name) in [("egress-1", "worker-1"), (GATEWAY_POD.name, "gateway-1")] {
        for ip in [IpAddr::from(pod(p).ip), pod(p).ip6.into()] {
            let (key, map) = endpoint_key(ip);
            assert!(local_endpoints(&c, node_name, map).iter().any(|(k, _)| *k == key), "{ip} in {node_name}'s {map}");
        }
        // the agents serve their first generations; the gateway's slot and
        // allowed sources may settle a moment later (a fresh CI run once lost
        // two SYNs here): wait, bounded, for one IPv6 datagram through the
        // egress IP, then every protocol must work at once
        c.wait_until(node_name, &format!("{p}'s first IPv6 datagram through the egress IP"), |c| {
            c.udp_request(p, SERVER6).is_ok_and(|seen| seen.ip == EGRESS_IP6)
        })
        .expect("the IPv6 path settles");
        assert_eq!(c.tcp_request(p, SERVER6).expect("IPv6 TCP").ip, EGRESS_IP6, "{p} over IPv6");
        assert_eq!(c.ping(p, SERVER6).expect("ICMPv6 echo").ip, EGRESS_IP6, "{p} ICMPv6 echo");
        assert_eq!(c.udp_request(p, SERVER).expect("IPv4 UDP").ip, EGRESS_IP, "{p} over IPv4");
    }
    assert_no_gateway_drops(&c);
    drop(c);
    drop(served);
    leftovers.assert_gone();
    assert!(!kubeconfig.exists());
}
