//! The IPv6-only mini-cluster (`minicluster::Stack::V6Only`, issue #16 items
//! 3 and 5): the dual-stack topology without one IPv4 address on a node, a
//! pod or a gateway's `eth1`, so the tunnel between nodes, the gateway
//! probes and everything else run over IPv6. Real sockets in the pods'
//! namespaces, assertions on what the server sees: TCP, UDP and ICMPv6 echo
//! leave through gateway-1's IPv6 egress IP with their replies back, the
//! gateway's connections name the workers by their IPv6 underlay addresses,
//! excluded destinations and unselected pods take the normal path, a pod on
//! the gateway node is translated there, the no-gateway drop is counted,
//! 1,000 concurrent connections get distinct NAT ports, and a gateway whose
//! underlay fails is seen down by the workers' probes over IPv6 and its
//! pods' traffic moves to the other gateway of the policy, and back.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use egret_bpf::templates::{self, ReverseNat, Stat};
use egret_compiler::codegen::reasons::Reason;
use egret_loader::inspect;
use egret_testkit::minicluster::{
    EGRESS_IP6, EXCLUDED_CIDR6, EXCLUDED_SERVER6, GATEWAY_POD, MiniCluster, NodeSpec, POD_RANGE6, POLICY_FILE, SERVER6,
    Stack, node,
};

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

/// The IPv6-only cluster's policy with two gateways (`egressGateways`, each
/// egressing from the first IPv6 of its `eth1`): each endpoint hashed to one,
/// failing over to the other.
fn failover_policy6() -> String {
    let gw = |name: &str| {
        format!("  - nodeSelector:\n      matchLabels:\n        kubernetes.io/hostname: {name}\n    interface: eth1\n")
    };
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumEgressGatewayPolicy\nmetadata:\n  name: egress-gateway-policy\nspec:\n  selectors:\n  - podSelector:\n      matchLabels:\n        use-egress-gateway: \"true\"\n  destinationCIDRs:\n  - \"::/0\"\n  excludedCIDRs:\n  - \"{POD_RANGE6}\"\n  - \"{EXCLUDED_CIDR6}\"\n  egressGateways:\n{}{}",
        gw("gateway-1"),
        gw("gateway-2"),
    )
}

/// Polls `done` every 20 ms for at most 15 s.
fn within(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < Duration::from_secs(15), "{what}: not within 15 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

#[test]
fn a_gateway_failure_over_an_ipv6_underlay_is_seen_by_the_probes_and_traffic_moves() {
    if !privileged("a_gateway_failure_over_an_ipv6_underlay_is_seen_by_the_probes_and_traffic_moves") {
        return;
    }
    with_cluster_of("e2e6of", Stack::V6Only, |c| {
        let before = c.generation("worker-1");
        c.write_snapshot_file(POLICY_FILE, &failover_policy6()).expect("the two-gateway policy");
        c.wait_swap("worker-1", before).expect("worker-1 applies it");
        let gateways = [node("gateway-1"), node("gateway-2")];
        let egress = |g: &NodeSpec| IpAddr::from(g.external6.expect("a gateway's IPv6 on eth1"));
        let via = |c: &MiniCluster| c.udp_request("egress-1", SERVER6).map(|seen| seen.ip).ok();
        let mut first = None;
        within("egress-1 through one of the two gateways", || {
            first = via(c).filter(|ip| gateways.iter().any(|g| egress(g) == *ip));
            first.is_some()
        });
        let first = first.expect("seen");
        let gw = *gateways.iter().find(|g| egress(g) == first).expect("its gateway");
        let other = *gateways.iter().find(|g| g.name != gw.name).expect("the other gateway");
        assert!(!c.sees_down("worker-1", gw.address6).expect("egret_gw_live"), "{} down before the failure", gw.name);

        // the gateway's underlay goes: worker-1's probes (over IPv6: no node
        // has an IPv4 address) mark it down, and egress-1 leaves via the other
        // (Linux drops a link's IPv6 addresses when it goes down unless told
        // to keep them, as a node's network configuration would put them back)
        let ns = c.ns(gw.short);
        egret_testkit::netns::run(
            "ip",
            &["netns", "exec", &ns, "sysctl", "-qw", "net.ipv6.conf.eth0.keep_addr_on_down=1"],
        );
        egret_testkit::netns::ip_in(&ns, &["link", "set", "eth0", "down"]);
        let detect = within("worker-1 marks the failed gateway down", || {
            c.sees_down("worker-1", gw.address6).expect("egret_gw_live")
        });
        let moved = within("egress-1 through the other gateway", || via(c) == Some(egress(&other)));
        println!("{} failed: seen down after {detect:?}, traffic via {} after {moved:?}", gw.name, other.name);

        // restored: seen up again, and the endpoint hashes back to its gateway
        egret_testkit::netns::ip_in(&ns, &["link", "set", "eth0", "up"]);
        within("worker-1 sees the gateway up again", || !c.sees_down("worker-1", gw.address6).expect("egret_gw_live"));
        within("egress-1 back through its own gateway", || via(c) == Some(first));
    });
}
