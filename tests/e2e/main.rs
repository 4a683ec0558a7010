//! End-to-end tests on the mini-cluster (`egret_testkit::minicluster`):
//! five nodes (three of them gateways), four pods, an underlay and an external server in network
//! namespaces, one real `egret-agent --snapshot` process per node, real
//! TCP/UDP/ICMP traffic, assertions on what the server sees (TESTING.md
//! tier 4). Each test builds its own cluster (unique names) and checks that
//! nothing is left after it is torn down. `kube` drives the same cluster
//! through an API server instead of the snapshot directory; `floating`
//! moves a floating egress IP between the three gateways through it;
//! `dual_stack` runs IPv6 (and IPv4) on the dual-stack variant.

use egret_testkit::apiserver;
mod cni;
mod dual_stack;
mod floating;
mod flows;
mod ipv6_only;
mod kube;
mod pmtud;
use egret_testkit::kubecluster;

use egret_testkit::privileged as privileged_gate;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use egret_bpf::templates::{self, Stat};
use egret_compiler::codegen::reasons::Reason;
use egret_compiler::codegen::tables;
use egret_testkit::minicluster::{
    self, Datapath, EGRESS_IP, EGRESS_IP_2, EXCLUDED_SERVER, MiniCluster, POLICY_FILE, SERVER, Stack, article_policy,
    node,
};

fn privileged(test: &str) -> bool {
    let missing = privileged_gate::missing_bpf_privilege().or_else(minicluster::missing_tools);
    privileged_gate::gate(test, missing)
}

const AGENT: &str = env!("CARGO_BIN_EXE_egret-agent");

/// Starts a cluster; the closure runs the test; afterwards every namespace,
/// pin and file of the cluster must be gone.
fn with_cluster(tag: &str, test: impl FnOnce(&mut MiniCluster)) {
    with_cluster_of(tag, Stack::V4, test);
}

/// [`with_cluster`] on a cluster of `stack`.
fn with_cluster_of(tag: &str, stack: Stack, test: impl FnOnce(&mut MiniCluster)) {
    let mut c =
        MiniCluster::start_with_stack(tag, stack, Datapath::Egret(Path::new(AGENT))).expect("the mini-cluster starts");
    let leftovers = Leftovers::of(&c);
    assert_eq!(leftovers.namespaces.len(), 2 + 5 + c.pods().len(), "ul, srv, 5 nodes, the pods");
    test(&mut c);
    drop(c);
    leftovers.assert_gone();
}

/// What a cluster must not leave behind: its namespaces, its bpffs mount,
/// its snapshot directory.
struct Leftovers {
    namespaces: Vec<String>,
    bpffs: std::path::PathBuf,
    snapshot: std::path::PathBuf,
}

impl Leftovers {
    fn of(c: &MiniCluster) -> Leftovers {
        Leftovers {
            namespaces: c.namespace_names(),
            bpffs: c.bpffs_root("worker-1").parent().expect("mount point").to_path_buf(),
            snapshot: c.snapshot_dir().to_path_buf(),
        }
    }

    /// After the cluster was dropped: none of it exists any more.
    fn assert_gone(&self) {
        for ns in &self.namespaces {
            assert!(!Path::new("/run/netns").join(ns).exists(), "namespace {ns} left behind");
        }
        assert!(!self.bpffs.exists(), "bpffs mount {} left behind", self.bpffs.display());
        assert!(!self.snapshot.exists(), "snapshot {} left behind", self.snapshot.display());
    }
}

/// 1,000 connections from egress-1 to `server`, all open at once: each
/// leaves from `egress` with its own NAT port and keeps it for a second
/// exchange; 1,000 mappings, no port exhausted.
fn thousand_connections(c: &MiniCluster, server: std::net::IpAddr, egress: std::net::IpAddr) {
    let mut open = Vec::with_capacity(1000);
    for i in 0..1000 {
        let conn = c.tcp_connect("egress-1", server).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        open.push(conn);
    }
    let ports: BTreeSet<u16> = open.iter().map(|k| k.seen.port).collect();
    assert!(open.iter().all(|k| k.seen.ip == egress), "every connection leaves with {egress}");
    assert_eq!(ports.len(), 1000, "1,000 open connections, 1,000 distinct NAT ports");
    let locals: BTreeSet<u16> = open.iter().map(|k| k.local.port()).collect();
    assert_eq!(locals.len(), 1000);
    for (i, k) in open.iter_mut().enumerate() {
        let seen = k.exchange(&format!("request {i}")).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(seen, k.seen, "connection {i} kept its NAT port");
    }
    assert_eq!(stat(c, Stat::NatCreated), 1000);
    assert_eq!(stat(c, Stat::NatPortsExhausted), 0);
}

fn node_ip(name: &str) -> Ipv4Addr {
    node(name).address
}

fn stat(c: &MiniCluster, s: Stat) -> u64 {
    c.counter("gateway-1", templates::map::GW_STATS, s.index()).expect("gateway stats").0
}

/// `pod`'s TCP request, UDP datagram and ICMP (ICMPv6) echo to `server`
/// are answered, and the server saw each from `source`; `translated`: the
/// TCP connection came from a NAT port (61000–65535).
fn all_seen_from(c: &MiniCluster, pod: &str, server: std::net::IpAddr, source: std::net::IpAddr, translated: bool) {
    let tcp = c.tcp_request(pod, server).unwrap_or_else(|e| panic!("{pod}: TCP to {server}: {e}"));
    assert_eq!(tcp.ip, source, "{pod}: TCP to {server}");
    if translated {
        let ports = templates::NAT_PORT_MIN..=u16::MAX;
        assert!(ports.contains(&tcp.port), "{pod}: NAT port {} outside 61000–65535", tcp.port);
    }
    let udp = c.udp_request(pod, server).unwrap_or_else(|e| panic!("{pod}: UDP to {server}: {e}"));
    assert_eq!(udp.ip, source, "{pod}: UDP to {server}");
    let echo = c.ping(pod, server).unwrap_or_else(|e| panic!("{pod}: echo to {server}: {e}"));
    assert_eq!(echo.ip, source, "{pod}: echo to {server}");
}

fn reason(c: &MiniCluster, node: &str, r: Reason) -> u64 {
    c.counter(node, tables::REASONS, r.index()).expect("classifier reasons").0
}

#[test]
fn labelled_pods_leave_through_the_egress_ip_and_others_take_the_normal_path() {
    if !privileged("labelled_pods_leave_through_the_egress_ip_and_others_take_the_normal_path") {
        return;
    }
    with_cluster("e2ep", |c| {
        for (pod, node) in [("egress-1", "worker-1"), ("egress-2", "worker-2")] {
            // TCP, UDP and ICMP echo through the gateway, with their replies
            all_seen_from(c, pod, SERVER.into(), EGRESS_IP.into(), true);
            // the excluded destination goes the normal path: the node's masquerade
            let excluded = c.tcp_request(pod, EXCLUDED_SERVER).expect("TCP to the excluded destination");
            assert_eq!(excluded.ip, node_ip(node), "{pod} to an excluded destination");
            let redirected = reason(c, node, Reason::Redirect);
            assert!(redirected > 0, "{node} counted no tunnelled packet");
        }
        for (pod, node) in [("plain-1", "worker-1"), ("plain-2", "worker-2")] {
            all_seen_from(c, pod, SERVER.into(), node_ip(node).into(), false);
        }
        // 2 pods × (TCP: SYN, ACK, data, FIN… ≥ 3; UDP 1; ICMP 1) translated,
        // replies tunnelled back, one NAT mapping per flow, no drops
        assert!(stat(c, Stat::Snat) >= 10, "snat = {}", stat(c, Stat::Snat));
        assert_eq!(stat(c, Stat::NatCreated), 6, "one mapping per flow (2 pods × TCP, UDP, ICMP)");
        assert!(stat(c, Stat::ReplyTunnelled) >= 6);
        for s in Stat::ALL.into_iter().filter(|s| s.is_drop()) {
            assert_eq!(stat(c, s), 0, "gateway dropped packets as {}", s.name());
        }
        // the agents' metrics say the same
        let value = |body: &str, series: &str| -> f64 {
            let line = body.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{body}"));
            line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number")
        };
        let (code, gw) = c.agent_http("gateway-1", "/metrics").expect("gateway metrics");
        assert_eq!(code, 200);
        let nat_created = r#"egret_gateway_packets_total{counter="nat-created",kind="pass"}"#;
        assert_eq!(value(&gw, nat_created), stat(c, Stat::NatCreated) as f64);
        assert_eq!(value(&gw, "egret_nat_entries "), 6.0);
        assert!(value(&gw, "egret_nat_capacity ") >= 6.0, "the chart's NAT pressure alert divides by it");
        assert_eq!(value(&gw, "egret_generation "), 1.0);
        let (_, w1) = c.agent_http("worker-1", "/metrics").expect("worker metrics");
        let redirected = r#"egret_classifier_packets_total{reason="redirect"}"#;
        assert_eq!(value(&w1, redirected), reason(c, "worker-1", Reason::Redirect) as f64);
        let policy = r#"egret_policy_packets_total{policy="egress-gateway-policy"}"#;
        assert!(value(&w1, policy) >= 3.0, "the policy's packets on worker-1");
        assert_eq!(c.agent_http("worker-1", "/readyz").expect("readyz").0, 200);
        assert_eq!(c.agent_http("worker-1", "/healthz").expect("healthz").0, 200);
    });
}

/// A second policy: the unlabelled pod of worker-2 (`app: plain, lane: b`)
/// to the server's /24 through a gateway no node is labelled for.
fn no_gateway_policy() -> String {
    "apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: lane-b-nowhere
spec:
  selectors:
  - podSelector:
      matchLabels: {app: plain, lane: b}
  destinationCIDRs: [\"203.0.113.0/24\"]
  egressGateway:
    nodeSelector:
      matchLabels: {egret.dev/no-such-gateway: \"true\"}
    egressIP: \"198.51.100.100\"
"
    .to_owned()
}

/// Writes `policy` (one whose gateway matches no node, selecting worker-2's
/// `plain-2`) as `file`, waits until worker-2 serves it with plain-2
/// attached (an endpoint of the plan), and checks that plain-2's UDP and
/// echo to `server` do not leave and are counted `no-gateway`.
fn no_gateway_drops_counted(c: &mut MiniCluster, file: &str, policy: &str, server: std::net::IpAddr) {
    let before = c.generation("worker-2");
    c.write_snapshot_file(file, policy).expect("write policy");
    c.wait_swap("worker-2", before).expect("worker-2 applies the policy");
    let root = c.bpffs_root("worker-2");
    c.wait_until("worker-2", "plain-2 attached", |_| {
        egret_loader::inspect::status(&root).is_ok_and(|s| s.attachments.len() >= 3)
    })
    .expect("attached");
    let dropped_before = reason(c, "worker-2", Reason::DropNoGateway);
    assert!(c.udp_request("plain-2", server).is_err(), "traffic of a policy without gateway must not leave");
    assert!(c.ping("plain-2", server).is_err());
    let dropped = reason(c, "worker-2", Reason::DropNoGateway) - dropped_before;
    assert!(dropped >= 2, "no-gateway drops to {server} counted: {dropped}");
}

#[test]
fn a_policy_whose_gateway_matches_no_node_drops_and_counts_no_gateway() {
    if !privileged("a_policy_whose_gateway_matches_no_node_drops_and_counts_no_gateway") {
        return;
    }
    with_cluster("e2en", |c| {
        assert_eq!(c.udp_request("plain-2", SERVER).expect("before the policy").ip, node_ip("worker-2"));
        no_gateway_drops_counted(c, "nowhere.yaml", &no_gateway_policy(), SERVER.into());
        // what the policy does not capture is unaffected
        assert_eq!(c.udp_request("plain-1", SERVER).expect("plain-1").ip, node_ip("worker-1"));
        assert_eq!(c.udp_request("egress-2", SERVER).expect("egress-2").ip, EGRESS_IP);
        // removing the policy restores the normal path
        let before = c.generation("worker-2");
        c.remove_snapshot_file("nowhere.yaml").expect("remove policy");
        c.wait_swap("worker-2", before).expect("worker-2 swaps back");
        assert_eq!(c.udp_request("plain-2", SERVER).expect("after removal").ip, node_ip("worker-2"));
    });
}

#[test]
fn policy_changes_move_new_connections_and_keep_unchanged_ones() {
    if !privileged("policy_changes_move_new_connections_and_keep_unchanged_ones") {
        return;
    }
    with_cluster("e2ec", |c| {
        let mut kept = c.tcp_connect("egress-1", SERVER).expect("a long connection");
        assert_eq!(kept.seen.ip, EGRESS_IP);
        assert_eq!(kept.exchange("before").expect("exchange"), kept.seen);

        // an unrelated change: every node gets a new generation (the gateway
        // now also serves worker-2's unlabelled pod), egress-1's decision stays
        let (gateway_before, worker_before) = (c.generation("gateway-1"), c.generation("worker-2"));
        let unrelated = no_gateway_policy()
            .replace("lane-b-nowhere", "lane-b-via-gateway")
            .replace("egret.dev/no-such-gateway", "cilium.io/egress-gateway");
        c.write_snapshot_file("unrelated.yaml", &unrelated).expect("write policy");
        c.wait_swap("gateway-1", gateway_before).expect("the gateway swaps");
        c.wait_swap("worker-2", worker_before).expect("worker-2 swaps");
        assert_eq!(kept.exchange("after an unrelated change").expect("the connection survives the swap"), kept.seen);
        assert_eq!(c.tcp_request("plain-2", SERVER).expect("plain-2 now via the gateway").ip, EGRESS_IP);

        // the egress IP changes: new connections use the new one
        let gateway_before = c.generation("gateway-1");
        c.write_snapshot_file(POLICY_FILE, &article_policy(EGRESS_IP_2)).expect("write policy");
        c.wait_swap("gateway-1", gateway_before).expect("the gateway swaps");
        for pod in ["egress-1", "egress-2"] {
            assert_eq!(c.tcp_request(pod, SERVER).expect("TCP after the change").ip, EGRESS_IP_2, "{pod}");
            assert_eq!(c.udp_request(pod, SERVER).expect("UDP after the change").ip, EGRESS_IP_2, "{pod}");
            assert_eq!(c.ping(pod, SERVER).expect("ICMP after the change").ip, EGRESS_IP_2, "{pod}");
        }
    });
}

#[test]
fn a_thousand_concurrent_connections_get_distinct_ports_and_complete() {
    if !privileged("a_thousand_concurrent_connections_get_distinct_ports_and_complete") {
        return;
    }
    with_cluster("e2ek", |c| thousand_connections(c, SERVER.into(), EGRESS_IP.into()));
}

#[test]
fn an_egress_ip_added_to_the_gateway_later_is_picked_up_from_its_interfaces() {
    if !privileged("an_egress_ip_added_to_the_gateway_later_is_picked_up_from_its_interfaces") {
        return;
    }
    with_cluster("e2ef", |c| {
        // the snapshot has no NodeNetwork: the gateway's agent reads its own
        // interfaces; an egress IP no interface holds yet cannot be used
        let later = Ipv4Addr::new(198, 51, 100, 102);
        let before = c.generation("gateway-1");
        c.write_snapshot_file(POLICY_FILE, &article_policy(later)).expect("write policy");
        c.wait_swap("gateway-1", before).expect("the gateway swaps");
        let dropped = stat(c, Stat::NoEgressIp);
        assert!(c.udp_request("egress-1", SERVER).is_err(), "no egress IP on the gateway yet");
        assert!(stat(c, Stat::NoEgressIp) > dropped, "counted as no-egress-ip");
        // the address appears on eth1: the agent sees it and recompiles
        let before = c.generation("gateway-1");
        let gw = c.node_ns("gateway-1");
        let out = std::process::Command::new("ip")
            .args(["-n", &gw, "addr", "add", &format!("{later}/32"), "dev", "eth1"])
            .output()
            .expect("ip runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        c.wait_swap("gateway-1", before).expect("the gateway swaps when its addresses change");
        assert_eq!(c.udp_request("egress-1", SERVER).expect("UDP with the new address").ip, later);
        assert_eq!(c.tcp_request("egress-2", SERVER).expect("TCP with the new address").ip, later);
    });
}

/// A VXLAN datagram (as a node's `egret0` would send it) carrying an
/// Ethernet/IPv4/UDP frame from `src` to the server's UDP port, with a zero
/// (absent) UDP checksum and a correct IPv4 header checksum.
fn vxlan_udp(vni: u32, src: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x08, 0, 0, 0];
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&SERVER.octets());
    let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p.extend_from_slice(&ip);
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&minicluster::UDP_PORT.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

#[test]
fn a_node_cannot_tunnel_another_nodes_pod_through_the_gateway() {
    if !privileged("a_node_cannot_tunnel_another_nodes_pod_through_the_gateway") {
        return;
    }
    with_cluster("e2es", |c| {
        // the slot the policy uses, from the gateway's own table
        let (_, dumps) = egret_loader::inspect::maps(&c.bpffs_root("gateway-1")).expect("gateway maps");
        let slots = dumps.iter().find(|d| d.name == templates::map::GW_SLOTS).expect("egret_gw_slots");
        assert_eq!(slots.entries.len(), 1, "one slot: the article's policy on gateway-1");
        let key = &slots.entries[0].key;
        let vni = u32::from_le_bytes(
            (0..4).map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).expect("hex")).collect::<Vec<_>>()[..]
                .try_into()
                .expect("4 bytes"),
        );
        // worker-2 sends tunnel packets itself, as a compromised node could
        let w2 = c.node_ns("worker-2");
        let sock = minicluster::in_netns(&w2, || {
            std::net::UdpSocket::bind(("192.0.2.12", 0))
                .map_err(|e| minicluster::ClusterError::Io { what: "bind".into(), source: e })
        })
        .expect("socket on worker-2");
        let gateway = (node_ip("gateway-1"), minicluster::TUNNEL_PORT);
        let spoofed = stat(c, Stat::SpoofedSource);
        let snat = stat(c, Stat::Snat);
        // worker-1's pod, sent by worker-2: refused
        sock.send_to(&vxlan_udp(vni, minicluster::pod("egress-1").ip, b"spoofed"), gateway).expect("send");
        // worker-2's own pod: translated and sent on (the control)
        sock.send_to(&vxlan_udp(vni, minicluster::pod("egress-2").ip, b"genuine"), gateway).expect("send");
        c.wait_until("gateway-1", "both datagrams counted", |c| {
            stat(c, Stat::SpoofedSource) > spoofed && stat(c, Stat::Snat) > snat
        })
        .expect("counted");
        assert_eq!(stat(c, Stat::SpoofedSource), spoofed + 1, "exactly the spoofed datagram dropped");
        assert_eq!(stat(c, Stat::Snat), snat + 1, "exactly the genuine datagram translated");
    });
}

#[test]
fn the_mss_clamp_follows_the_nodes_own_underlay_mtu() {
    if !privileged("the_mss_clamp_follows_the_nodes_own_underlay_mtu") {
        return;
    }
    // worker-1's underlay is 1400 bytes (its default route's interface, which
    // its agent reads at start); worker-2 keeps 1500 and no default route
    let mut c = MiniCluster::prepare("e2emtu").expect("the mini-cluster's network");
    let leftovers = Leftovers::of(&c);
    let w1 = c.node_ns("worker-1");
    egret_testkit::netns::ip_in(&w1, &["link", "set", "eth0", "mtu", "1400"]);
    egret_testkit::netns::ip_in(&w1, &["route", "add", "default", "via", "192.0.2.1", "dev", "eth0"]);
    c.start_agents(Path::new(AGENT), minicluster::Source::Snapshot).expect("agents start");
    for pod in ["egress-1", "egress-2"] {
        c.set_pod_mtu(pod, 1500).expect("pod MTU");
    }
    let on_w1 = c.tcp_request("egress-1", SERVER).expect("through the gateway from worker-1");
    assert_eq!(on_w1.ip, EGRESS_IP);
    assert_eq!(c.syn_mss(on_w1), Some(Some(1310)), "1400 - 50 (tunnel) - 40: worker-1's own underlay");
    let on_w2 = c.tcp_request("egress-2", SERVER).expect("through the gateway from worker-2");
    assert_eq!(c.syn_mss(on_w2), Some(Some(1410)), "no underlay MTU found: the compiled-in 1500");
    drop(c);
    leftovers.assert_gone();
}

#[test]
fn syns_into_the_tunnel_get_their_mss_clamped_and_full_size_segments_cross() {
    if !privileged("syns_into_the_tunnel_get_their_mss_clamped_and_full_size_segments_cross") {
        return;
    }
    with_cluster("e2em", |c| {
        // pods whose CNI gives them the underlay's full MTU: their SYNs
        // advertise 1460, which the 50-byte tunnel cannot carry
        for pod in ["egress-1", "plain-1"] {
            c.set_pod_mtu(pod, 1500).expect("pod MTU");
        }
        let mut tunnelled = c.tcp_connect("egress-1", SERVER).expect("connect through the gateway");
        assert_eq!(tunnelled.seen.ip, EGRESS_IP);
        assert_eq!(c.syn_mss(tunnelled.seen), Some(Some(1410)), "the SYN leaving through the tunnel is clamped");
        let normal = c.tcp_request("plain-1", SERVER).expect("normal path");
        assert_eq!(c.syn_mss(normal), Some(Some(1460)), "a SYN on the normal path is left alone");
        // full-size segments both ways through tunnel and gateway
        let big = "x".repeat(64 * 1024);
        assert_eq!(tunnelled.exchange(&big).expect("64 KiB each way"), tunnelled.seen);
    });
}

#[test]
fn a_failed_gateway_hands_its_endpoints_to_the_other_without_a_leak() {
    use egret_testkit::failover::Failure;
    if !privileged("a_failed_gateway_hands_its_endpoints_to_the_other_without_a_leak") {
        return;
    }
    with_cluster("e2efo", |c| {
        c.apply_failover_policy().expect("the workers and gateway-2 swap to the failover policy");
        let egress = [EGRESS_IP, minicluster::EGRESS_IP_3];
        for failure in Failure::ALL {
            let t = c.failover_trial("egress-1", failure).expect("the trial runs");
            println!(
                "{}: {} failed ({} before), detect {:?}, first packet after {:?} via {:?}, {} received, {} leaked",
                failure.name(),
                t.gateway,
                t.before,
                t.detect,
                t.recover,
                t.after,
                t.received,
                t.leaked
            );
            assert!(egress.contains(&t.before), "{failure:?}: the stream left through a gateway: {t:?}");
            assert!(t.detect.is_some(), "{failure:?}: worker-1 never marked {} down: {t:?}", t.gateway);
            let after = t.after.unwrap_or_else(|| panic!("{failure:?}: no packet via the other gateway: {t:?}"));
            assert!(egress.contains(&after) && after != t.before, "{failure:?}: failed over to the other: {t:?}");
            assert_eq!(t.leaked, 0, "{failure:?}: datagrams reached the server from no egress IP: {t:?}");
        }
        // the gateway's agent killed (kill -9) and started again: its datapath answers on
        let k = c.agent_kill_trial("egress-1", std::time::Duration::from_millis(1500)).expect("the trial runs");
        println!(
            "agent killed on {}: {} sent, {} received, {} via another address",
            k.gateway, k.sent, k.received, k.moved
        );
        assert!(!k.marked_down, "killing {}'s agent made worker-1 mark it down: {k:?}", k.gateway);
        assert_eq!((k.moved, k.received), (0, k.sent), "no datagram lost or moved while the agent was down: {k:?}");
    });
}
