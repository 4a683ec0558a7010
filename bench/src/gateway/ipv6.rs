//! The IPv6 layer `egret-bench gateway --family v6` puts on the mini-cluster
//! (`egret_testkit::minicluster`, IPv4 only so far): IPv6 addresses for the
//! pods, the gateways' external side and the server, the snapshot's IPv6
//! pod addresses and an IPv6 policy for egret, and for the kernel NAT
//! gateway the IPv6 routes and the `ip6` `snat` with conntrack. The
//! underlay (and the tunnel over it) stays IPv4, as egret's datapath has it;
//! only the routed reference gets IPv6 on the underlay, since it has no
//! tunnel to carry IPv6 over IPv4.
//!
//! Addresses (documentation range only, inside the cluster's namespaces):
//! every IPv4 address `a.b.c.d` of the mini-cluster maps to an IPv6 one in
//! the same role whose last group reads as `d` (written in hex digits):
//!
//! | role | IPv4 | IPv6 |
//! |---|---|---|
//! | pod `10.244.c.d` | 10.244.1.10 | `2001:db8:244:c::d`, pod CIDR `2001:db8:244:c::/64` |
//! | external segment `198.51.100.d` | gateway-1 .13, server .1 | `2001:db8:100::d` |
//! | egress IP | 198.51.100.100 | [`EGRESS_IP6`] `2001:db8:100::100` (on the same gateway) |
//! | server | 203.0.113.10 | [`SERVER6`] `2001:db8:113::10`, policy destination `2001:db8:113::/64` |
//! | kernel NAT tunnel `10.99.i.1/.2` | | `2001:db8:99:i::1/::2` |
//! | underlay `192.0.2.d` (routed reference only) | | `2001:db8:2::d` |
//!
//! Pods reach their node through `fe80::1` (a static neighbour: the
//! host-side veth), as they reach `169.254.1.1` over IPv4.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use egret_testkit::minicluster::{
    self, ClusterError, Datapath, EGRESS_IP, MiniCluster, NODES, NodeSpec, PODS, PodSpec, REQUEST_TIMEOUT, SINK_PORT,
    Source,
};

/// The server's IPv6 service address (on its `lo`).
pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0x10);
/// The IPv6 egress IP (on the `eth1` of the gateway holding [`EGRESS_IP`]).
pub const EGRESS_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x100);
/// The IPv6 policy's destination.
pub const DESTINATION6: &str = "2001:db8:113::/64";
/// Every pod's IPv6 address is in here.
const POD_RANGE6: &str = "2001:db8:244::/48";
/// The pods' next hop (a static neighbour: the host-side veth).
const POD_GATEWAY6: &str = "fe80::1";
/// The IPv6 policy's file in the snapshot.
pub const POLICY_FILE6: &str = "policy-v6.yaml";
/// The routing table the kernel NAT workers send the labelled pods' traffic by
/// (the mini-cluster's, for IPv4).
const NAT_TABLE: &str = "100";

/// `d` written in hex digits: `13` → `0x13`, so that `…::13` reads as `.13`.
fn hexlike(d: u8) -> u16 {
    u16::from_str_radix(&d.to_string(), 16).unwrap_or_else(|_| unreachable!("decimal digits are hex digits"))
}

fn six(prefix: [u16; 4], v4: Ipv4Addr) -> Ipv6Addr {
    let [a, b, c, d] = prefix;
    Ipv6Addr::new(a, b, c, d, 0, 0, 0, hexlike(v4.octets()[3]))
}

/// A pod's IPv6 address: `10.244.c.d` → `2001:db8:244:c::d`.
#[must_use]
pub fn pod_ip6(p: &PodSpec) -> Ipv6Addr {
    six([0x2001, 0xdb8, 0x244, hexlike(p.ip.octets()[2])], p.ip)
}

/// A node's IPv6 pod CIDR: `10.244.c.0/24` → `2001:db8:244:c::/64`.
fn pod_cidr6(n: &NodeSpec) -> String {
    let c = n.pod_cidr.split('.').nth(2).and_then(|c| c.parse().ok()).unwrap_or(0);
    format!("{}/64", Ipv6Addr::new(0x2001, 0xdb8, 0x244, hexlike(c), 0, 0, 0, 0))
}

/// An address on the external segment: `198.51.100.d` → `2001:db8:100::d`.
fn external6(v4: Ipv4Addr) -> Ipv6Addr {
    six([0x2001, 0xdb8, 0x100, 0], v4)
}

/// An underlay address, for the routed reference only: `192.0.2.d` → `2001:db8:2::d`.
fn underlay6(v4: Ipv4Addr) -> Ipv6Addr {
    six([0x2001, 0xdb8, 0x2, 0], v4)
}

/// `ip -n NS args…`.
fn ip(ns: &str, args: &[&str]) -> Result<String, ClusterError> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    minicluster::run("ip", &all, None)
}

/// `ip netns exec NS program args…` (`sysctl`, `nft`).
fn exec(ns: &str, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ClusterError> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    minicluster::run("ip", &all, stdin)
}

/// An IPv6 address on `dev`, usable at once (no duplicate address detection:
/// nothing else on these links can hold it).
fn addr6(ns: &str, addr: &str, dev: &str) -> Result<(), ClusterError> {
    ip(ns, &["-6", "addr", "add", addr, "dev", dev, "nodad"]).map(drop)
}

/// The field `key` of the first object of `ip -j …`'s output.
fn json_field(out: &str, key: &str) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_str(out).with_context(|| format!("ip -j printed {out:?}"))?;
    v.get(0)
        .and_then(|o| o.get(key))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no `{key}` in {out:?}"))
}

/// The node that holds [`EGRESS_IP`] (and gets [`EGRESS_IP6`]).
fn egress_gateway() -> NodeSpec {
    NODES.iter().find(|n| n.egress_ips.contains(&EGRESS_IP)).copied().unwrap_or(NODES[2])
}

/// Builds a mini-cluster with the IPv6 layer for `datapath`: for egret,
/// the topology, the IPv6 addresses and the snapshot come before the agents
/// start; for the kernel NAT, the IPv6 routes and `snat` go on top of the
/// mini-cluster's own IPv4 configuration.
///
/// # Errors
/// Any set-up step (the cluster is removed).
pub fn start(tag: &str, datapath: Datapath<'_>) -> anyhow::Result<MiniCluster> {
    match datapath {
        Datapath::Egret(agent) => {
            let mut c = MiniCluster::prepare(tag)?;
            addresses(&c)?;
            snapshot(&c)?;
            c.start_agents(agent, Source::Snapshot)?;
            Ok(c)
        }
        Datapath::KernelNat { tunnel } => {
            let c = MiniCluster::start_with(tag, datapath)?;
            addresses(&c)?;
            kernel_nat(&c, tunnel)?;
            Ok(c)
        }
    }
}

/// IPv6 on the pods, the gateways' `eth1`, the external segment and the server.
fn addresses(c: &MiniCluster) -> anyhow::Result<()> {
    let srv = c.ns("srv");
    addr6(&srv, &format!("{SERVER6}/128"), "lo")?;
    addr6(&srv, &format!("{}/64", external6(minicluster::ROUTER_EXTERNAL)), "eth1")?;
    let gw = egress_gateway();
    for n in NODES.iter().filter(|n| n.gateway) {
        let ns = c.ns(n.short);
        let Some(external) = n.external else { continue };
        addr6(&ns, &format!("{}/64", external6(external)), "eth1")?;
        if n.name == gw.name {
            addr6(&ns, &format!("{EGRESS_IP6}/128"), "eth1")?;
        }
        let via = external6(minicluster::ROUTER_EXTERNAL).to_string();
        ip(&ns, &["-6", "route", "add", DESTINATION6, "via", &via, "dev", "eth1"])?;
    }
    for p in PODS {
        let (pns, nns) = (c.ns(p.name), c.node_ns(p.node));
        // the host-side veth: where the node routes the pod's IPv4 address
        let route = ip(&nns, &["-j", "route", "get", &p.ip.to_string()])?;
        let veth = json_field(&route, "dev")?;
        let host_mac = json_field(&ip(&nns, &["-j", "link", "show", "dev", &veth])?, "address")?;
        let pod_mac = json_field(&ip(&pns, &["-j", "link", "show", "dev", "eth0"])?, "address")?;
        let pod6 = pod_ip6(&p).to_string();
        addr6(&pns, &format!("{pod6}/128"), "eth0")?;
        ip(&pns, &["-6", "neigh", "replace", POD_GATEWAY6, "lladdr", &host_mac, "dev", "eth0", "nud", "permanent"])?;
        ip(&pns, &["-6", "route", "add", "default", "via", POD_GATEWAY6, "dev", "eth0"])?;
        ip(&nns, &["-6", "route", "add", &format!("{pod6}/128"), "dev", &veth])?;
        ip(&nns, &["-6", "neigh", "replace", &pod6, "lladdr", &pod_mac, "dev", &veth, "nud", "permanent"])?;
    }
    Ok(())
}

/// egret's inputs: the pods' IPv6 addresses and the nodes' IPv6 pod CIDRs
/// in the snapshot, and a second policy — the article's selectors and
/// gateway, destination [`DESTINATION6`], egress IP [`EGRESS_IP6`]. The
/// agents compile it: the source classifier redirects the pods' IPv6
/// packets to the gateway; the gateway's maps get the slot's egress IPv6
/// (`egret_gw_slots`) and the pods' IPv6 addresses (`egret_gw_allowed_v6`).
fn snapshot(c: &MiniCluster) -> anyhow::Result<()> {
    let dir = c.snapshot_dir();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).with_context(|| format!("reading {name}"));
    let mut pods = read("pods.yaml")?;
    for p in PODS {
        let old = format!("podIPs: [{{ip: {}}}]", p.ip);
        anyhow::ensure!(pods.contains(&old), "pods.yaml has no `{old}`");
        pods = pods.replace(&old, &format!("podIPs: [{{ip: {}}}, {{ip: \"{}\"}}]", p.ip, pod_ip6(&p)));
    }
    let mut nodes = read("nodes.yaml")?;
    for n in NODES {
        let old = format!("podCIDRs: [\"{}\"]", n.pod_cidr);
        anyhow::ensure!(nodes.contains(&old), "nodes.yaml has no `{old}`");
        nodes = nodes.replace(&old, &format!("podCIDRs: [\"{}\", \"{}\"]", n.pod_cidr, pod_cidr6(&n)));
    }
    c.write_snapshot_file("pods.yaml", &pods)?;
    c.write_snapshot_file("nodes.yaml", &nodes)?;
    c.write_snapshot_file(POLICY_FILE6, &policy6())?;
    Ok(())
}

/// The IPv6 policy (see [`snapshot`]).
#[must_use]
pub fn policy6() -> String {
    format!(
        "apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: egress-gateway-policy-v6
spec:
  selectors:
  - podSelector:
      matchLabels:
        use-egress-gateway: \"true\"
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: production
  destinationCIDRs:
  - \"{DESTINATION6}\"
  egressGateway:
    nodeSelector:
      matchLabels:
        cilium.io/egress-gateway: \"true\"
    egressIP: \"{EGRESS_IP6}\"
"
    )
}

/// The kernel NAT gateway for IPv6, as the mini-cluster configures it for
/// IPv4 (`Datapath::KernelNat`): the workers route the labelled pods'
/// IPv6 traffic (source rule, table 100) through the same VXLAN devices
/// (`vx0` on a worker, `vxI` on the gateway, I = 1, 2 for the workers in
/// order) — or, routed, over the underlay — to the gateway, which forwards
/// it and rewrites the source with `nft` `ip6` `snat to` [`EGRESS_IP6`]
/// (conntrack).
fn kernel_nat(c: &MiniCluster, tunnel: bool) -> anyhow::Result<()> {
    let gw = egress_gateway();
    let gw_ns = c.ns(gw.short);
    if !tunnel {
        addr6(&gw_ns, &format!("{}/64", underlay6(gw.address)), "eth0")?;
    }
    for (i, node) in NODES.iter().filter(|n| !n.gateway).enumerate() {
        let ns = c.ns(node.short);
        let ((via, via_dev), (back, back_dev)) = if tunnel {
            let id = i + 1;
            let (local, remote) = (format!("2001:db8:99:{id}::1"), format!("2001:db8:99:{id}::2"));
            let dev = format!("vx{id}");
            addr6(&ns, &format!("{local}/64"), "vx0")?;
            addr6(&gw_ns, &format!("{remote}/64"), &dev)?;
            ((remote, "vx0".to_owned()), (local, dev))
        } else {
            let local = underlay6(node.address).to_string();
            addr6(&ns, &format!("{local}/64"), "eth0")?;
            ((underlay6(gw.address).to_string(), "eth0".to_owned()), (local, "eth0".to_owned()))
        };
        exec(&ns, "sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"], None)?;
        ip(&ns, &["-6", "route", "add", DESTINATION6, "via", &via, "dev", &via_dev, "table", NAT_TABLE])?;
        ip(&gw_ns, &["-6", "route", "add", &pod_cidr6(node), "via", &back, "dev", &back_dev])?;
        for p in PODS.iter().filter(|p| p.node == node.name && p.egress) {
            let from = pod_ip6(p).to_string();
            ip(&ns, &["-6", "rule", "add", "from", &from, "lookup", NAT_TABLE, "priority", "100"])?;
        }
    }
    exec(&gw_ns, "sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"], None)?;
    let nat = format!(
        "table ip6 egret_kernel_nat6 {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip6 saddr {POD_RANGE6} oifname \"eth1\" snat to {EGRESS_IP6}\n  }}\n}}\n"
    );
    exec(&gw_ns, "nft", &["-f", "-"], Some(&nat))?;
    Ok(())
}

/// Datagrams the IPv6 sink received, by source address, and the probes.
#[derive(Debug, Default)]
struct SinkLog {
    by_source: BTreeMap<IpAddr, u64>,
    /// Probe datagrams (payload starting with [`PROBE`]) and their source.
    probes: Vec<(SocketAddr, Vec<u8>)>,
}

const PROBE: &[u8] = b"egret-bench-probe-";

/// The server's IPv6 UDP sink on [`SERVER6`]:[`SINK_PORT`], the twin of the
/// mini-cluster's IPv4 sink (it counts and answers nothing; an 8 MiB
/// receive buffer), which also logs the sources it sees. Stopped and joined
/// on drop.
pub struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    log: Arc<Mutex<SinkLog>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("log", &self.log).finish_non_exhaustive()
    }
}

impl Sink {
    /// Binds the sink in the cluster's server namespace.
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn start(c: &MiniCluster) -> anyhow::Result<Sink> {
        let socket = minicluster::in_netns(&c.ns("srv"), || {
            let io = |what: &str| {
                let what = what.to_owned();
                move |source| ClusterError::Io { what, source }
            };
            let s = UdpSocket::bind((SERVER6, SINK_PORT)).map_err(io("binding the IPv6 sink"))?;
            s.set_read_timeout(Some(Duration::from_millis(50))).map_err(io("IPv6 sink"))?;
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&s, 8 << 20);
            Ok(s)
        })?;
        let (stop, log) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(SinkLog::default())));
        let (s, l) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf)
                    && let Ok(mut log) = l.lock()
                {
                    *log.by_source.entry(from.ip()).or_default() += 1;
                    if buf[..n].starts_with(PROBE) {
                        log.probes.push((from, buf[..n].to_vec()));
                    }
                }
            }
        });
        Ok(Sink { stop, thread: Some(thread), log })
    }

    /// Sends one datagram from a pod to the sink and returns the source
    /// address the sink saw it from.
    ///
    /// # Errors
    /// A socket failure, or the sink did not receive it within [`REQUEST_TIMEOUT`].
    pub fn probe(&self, c: &MiniCluster, pod: &str) -> anyhow::Result<SocketAddr> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let token = [PROBE, format!("{}", N.fetch_add(1, Ordering::Relaxed)).as_bytes()].concat();
        let s = minicluster::in_netns(&c.ns(minicluster::pod(pod).name), || {
            UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))
                .map_err(|source| ClusterError::Io { what: "a pod's IPv6 UDP socket".into(), source })
        })?;
        let start = Instant::now();
        // ND on the way may drop the first datagram: send again every 200 ms
        let mut last_send: Option<Instant> = None;
        loop {
            if last_send.is_none_or(|t| t.elapsed() > Duration::from_millis(200)) {
                s.send_to(&token, (SERVER6, SINK_PORT)).context("IPv6 UDP send to the sink")?;
                last_send = Some(Instant::now());
            }
            let seen = self.log.lock().ok().and_then(|l| l.probes.iter().find(|(_, p)| *p == token).map(|(a, _)| *a));
            if let Some(a) = seen {
                return Ok(a);
            }
            anyhow::ensure!(
                start.elapsed() < REQUEST_TIMEOUT,
                "no datagram from {pod} reached the server's IPv6 sink in {REQUEST_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Datagrams received so far, by source address.
    #[must_use]
    pub fn by_source(&self) -> BTreeMap<IpAddr, u64> {
        self.log.lock().map(|l| l.by_source.clone()).unwrap_or_default()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
