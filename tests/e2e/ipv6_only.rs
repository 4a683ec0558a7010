//! The IPv6-only mini-cluster (`minicluster::Stack::V6Only`, issue #16 items
//! 3 and 5): the dual-stack topology without one IPv4 address on a node, a
//! pod or a gateway's `eth1`, so the tunnel between nodes, the gateway
//! probes and everything else run over IPv6. Real sockets in the pods'
//! namespaces, assertions on what the server sees: TCP, UDP and ICMPv6 echo
//! leave through gateway-1's IPv6 egress IP with their replies back, the
//! gateway's connections name the workers by their IPv6 underlay addresses,
//! excluded destinations and unselected pods take the normal path, a pod on
//! the gateway node is translated there, the no-gateway drop is counted,
//! and 1,000 concurrent connections get distinct NAT ports.

use std::collections::BTreeSet;
use std::net::IpAddr;

use egret_bpf::templates::{self, ReverseNat, Stat};
use egret_compiler::codegen::reasons::Reason;
use egret_loader::inspect;
use egret_testkit::minicluster::{EGRESS_IP6, EXCLUDED_SERVER6, GATEWAY_POD, MiniCluster, SERVER6, Stack, node};

use super::dual_stack::{assert_no_gateway_drops, endpoint_key, entries, local_endpoints, no_gateway_policy6};
use super::{all_seen_from, no_gateway_drops_counted, privileged, reason, stat, thousand_connections, with_cluster_of};

/// The source nodes of gateway-1's running IPv6 connections
/// (`egret_rnat_v6`'s `node`; unspecified: a pod of gateway-1 itself).
fn connection_nodes(c: &MiniCluster) -> BTreeSet<IpAddr> {
    let (_, dumps) = inspect::maps(&c.bpffs_root("gateway-1")).expect("gateway-1's maps");
    let d = dumps.iter().find(|d| d.name == templates::map::RNAT_V6).expect("egret_rnat_v6");
    d.entries
        .iter()
        .map(|e| {
            let h = e.values.first().expect("a value");
            let v: Vec<u8> =
                (0..h.len() / 2).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).expect("hex")).collect();
            ReverseNat::<std::net::Ipv6Addr>::from_bytes(&v).expect("a reverse entry").node
        })
        .collect()
}

#[test]
fn ipv6_only_pods_leave_through_the_egress_ip_over_an_ipv6_underlay() {
    if !privileged("ipv6_only_pods_leave_through_the_egress_ip_over_an_ipv6_underlay") {
        return;
    }
    with_cluster_of("e2e6o", Stack::V6Only, |c| {
        for (p, node_name) in [("egress-1", "worker-1"), ("egress-2", "worker-2")] {
            let n = node(node_name);
            // TCP, UDP and ICMPv6 echo through the gateway, replies back
            all_seen_from(c, p, SERVER6.into(), EGRESS_IP6.into(), true);
            // an excluded destination: the node's normal path (its masquerade)
            let excluded = c.tcp_request(p, EXCLUDED_SERVER6).expect("TCP to the excluded destination");
            assert_eq!(excluded.ip, n.address6, "{p} to an excluded destination");
            // its one address is a local endpoint of its node
            let (key, map) = endpoint_key(node_name_pod_ip(p));
            assert!(local_endpoints(c, node_name, map).iter().any(|(k, i)| *k == key && *i > 0), "{p} in {map}");
            assert!(reason(c, node_name, Reason::Redirect) > 0, "{node_name} counted no tunnelled packet");
        }
        // unselected pods: the normal path
        for (p, node_name) in [("plain-1", "worker-1"), ("plain-2", "worker-2")] {
            all_seen_from(c, p, SERVER6.into(), node(node_name).address6.into(), false);
        }
        // the gateway's own pod: translated there, replies handed to it
        all_seen_from(c, GATEWAY_POD.name, SERVER6.into(), EGRESS_IP6.into(), true);
        assert!(stat(c, Stat::ReplyLocal) >= 3, "reply-local = {}", stat(c, Stat::ReplyLocal));
        // 3 pods × (TCP, UDP, ICMPv6): the tunnel ran over IPv6, from each
        // worker's IPv6 underlay address (no node has an IPv4 address)
        assert_eq!(stat(c, Stat::NatCreated), 9, "one mapping per flow");
        assert!(stat(c, Stat::ReplyTunnelled) >= 6);
        assert_eq!(entries(c, "gateway-1", templates::map::RNAT_V4), 0);
        let want: BTreeSet<IpAddr> =
            [node("worker-1").address6.into(), node("worker-2").address6.into(), IpAddr::from([0, 0, 0, 0])].into();
        assert_eq!(connection_nodes(c), want, "the connections' source nodes");
        assert_no_gateway_drops(c);
        // the no-gateway drop of an IPv6 policy, counted
        assert_eq!(c.udp_request("plain-2", SERVER6).expect("before the policy").ip, node("worker-2").address6);
        no_gateway_drops_counted(c, "nowhere6.yaml", &no_gateway_policy6(), SERVER6.into());
        assert_eq!(c.udp_request("egress-2", SERVER6).expect("egress-2").ip, EGRESS_IP6);
    });
}

/// A pod's one (IPv6) address.
fn node_name_pod_ip(p: &str) -> IpAddr {
    egret_testkit::minicluster::pod(p).ip6.into()
}

#[test]
fn a_thousand_concurrent_connections_over_an_ipv6_underlay_get_distinct_ports() {
    if !privileged("a_thousand_concurrent_connections_over_an_ipv6_underlay_get_distinct_ports") {
        return;
    }
    with_cluster_of("e2e6ok", Stack::V6Only, |c| {
        thousand_connections(c, SERVER6.into(), EGRESS_IP6.into());
        assert_eq!(entries(c, "gateway-1", templates::map::RNAT_V6), 1000, "one egret_rnat_v6 entry per connection");
    });
}
